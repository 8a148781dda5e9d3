//! Proxmox VE REST API client, preflight checks and VM provisioning.
//!
//! `client` speaks the wire protocol; `propstr`/`upid` parse what PVE returns;
//! `vm` derives the VM configuration a node needs and compares read-backs;
//! `inventory` reads what exists; `pace` times the polls of a download; `ownership` says which VMs are ours (cluster ID
//! markers); `cidata` carries a node's machine config to its VM; `discovery` feeds
//! the wizard; `preflight`, `provision` and `destroy` are the
//! operations the CLI exposes; `settings` turns profile + environment + flags
//! into a client.
//!
//! It must never modify a VM that does not carry this cluster's marker (its ID, not
//! only its name), and the API
//! token never appears in logs, errors or process arguments.

pub mod cidata;
pub mod client;
pub mod destroy;
pub mod discovery;
pub mod error;
pub mod factory;
pub mod inventory;
pub mod ownership;
pub mod pace;
pub mod preflight;
pub mod propstr;
pub mod provision;
pub mod settings;
pub mod upid;
pub mod vm;

pub use client::{Client, ClientConfig, Credentials, PollPolicy, RetryPolicy, Trust};
pub use error::PveError;
