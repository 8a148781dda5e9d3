//! Integration tests: addons.
