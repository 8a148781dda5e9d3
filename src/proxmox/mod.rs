//! Proxmox VE REST API client, preflight checks and VM provisioning.
//!
//! `client` speaks the wire protocol; `propstr`/`upid` parse what PVE returns;
//! `vm` derives the VM configuration a node needs and compares read-backs;
//! `preflight`, `provision` and `destroy` are the operations the CLI exposes.

pub mod client;
pub mod error;
pub mod propstr;
pub mod upid;
pub mod vm;

pub use client::{Client, ClientConfig, Credentials, PollPolicy, RetryPolicy, Trust};
pub use error::PveError;
