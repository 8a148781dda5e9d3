//! Network-plan lint: every rule of the network review as a finding with severity, stable code, field path, reason and fix.
