//! Integration tests: talos_api.
