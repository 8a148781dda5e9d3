//! Integration tests: gen.
