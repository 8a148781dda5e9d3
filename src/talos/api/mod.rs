//! Talos gRPC API client (apid, port 50000): hand-written prost messages
//! (`messages`), maintenance (read-only probes) and mutual-TLS modes (`creds`), one
//! connection per node (`client`), bring-up and recovery stages with their own
//! readiness gates (`stages`), the etcd snapshot contract (`snapshot`) and snapshot
//! backups on disk (`backup`).
//!
//! No machine config is ever sent through this API: a node gets its config from
//! its `cidata` volume (`talos::cidata`), and a node counts as ours only when it
//! answers mutual TLS with a certificate from this cluster's OS CA. Every dial goes
//! through the `AddressBook`.

pub mod client;
pub mod creds;
pub mod error;
pub mod messages;
pub mod snapshot;
pub mod stages;
pub mod upgrade;

pub use client::{APID_PORT, Routing, RpcLimits, TalosClient, Target};
pub use creds::{Credentials, Talosconfig, TlsMode};
pub use error::{Stage, TalosError};
pub use stages::{BootstrapOutcome, FetchedKubeconfig, Stages, Timeouts};
