//! Integration tests: wizard.
