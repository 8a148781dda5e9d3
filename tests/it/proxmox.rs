//! Integration tests: proxmox.
