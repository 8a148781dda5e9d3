//! The lab's simulated Proxmox VE API (HTTPS on loopback).
