//! Progress reporting for long runs: per-node stage events rendered as bars, plain lines or JSON.
