//! Talos gRPC API client (apid, port 50000): hand-written prost messages
//! (`messages`), maintenance and mutual-TLS modes (`creds`), one connection per node
//! (`client`), the identity check before a config leaves this machine (`identity`),
//! bring-up and recovery stages with their own readiness gates (`stages`), the etcd
//! snapshot contract (`snapshot`) and snapshot backups on disk (`backup`).
//!
//! A machine config (it carries CA keys) must never reach a maintenance-mode node
//! whose identity was not confirmed, and every dial goes through the `AddressBook`.

pub mod client;
pub mod creds;
pub mod error;
pub mod identity;
pub mod messages;
pub mod snapshot;
pub mod stages;
pub mod upgrade;

pub use client::{APID_PORT, Routing, RpcLimits, TalosClient, Target};
pub use creds::{Credentials, Talosconfig, TlsMode};
pub use error::{Stage, TalosError};
pub use identity::{GuestInterface, IdentityCheck, check_identity};
pub use stages::{
    ApplyOutcome, BootstrapOutcome, FetchedKubeconfig, NodeMode, Stages, Timeouts, config_hash,
};
