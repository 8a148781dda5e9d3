//! Integration tests: cli_lint.
