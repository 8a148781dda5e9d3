//! Proxmox VE REST API client, preflight checks and VM provisioning.
