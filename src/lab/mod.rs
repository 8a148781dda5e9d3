//! The lab: a simulated datacenter on loopback — Proxmox VE API, Talos nodes and
//! the Kubernetes API — that the real clients talk to over the real protocols.
//! `talos-pve up --lab` runs the whole flow against it.
//!
//! The simulators are decoupled: they share an `AddressBook` (simulated address →
//! loopback listener, fail-closed), an event bus (`LabEvent`: a VM started, a node
//! runs its config, etcd was bootstrapped) and the simulated etcd (`EtcdStore`),
//! which backs the Kubernetes API and is what snapshots save and recover.

mod access;
mod datacenter;
mod discovery;
mod etcd;
mod faults;
pub mod kube;
pub mod proxmox;
pub mod talos;

use std::net::Ipv4Addr;

use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;

use crate::net::AddressBook;

pub use access::{Access, AccessError, write as write_access};
pub use datacenter::{Datacenter, DatacenterError, LabOptions, LabSaver};
pub use discovery::LabDiscovery;
pub use etcd::{EtcdStore, SnapshotError, validate_snapshot};
pub use faults::{FaultSpecError, LabFaults};

/// 32 hex digits in a UUID's 8-4-4-4-12 groups, so simulated ids look like real ones.
pub(crate) fn uuid_text(hex: &str) -> String {
    let g = |a: usize, b: usize| hex.get(a..b).unwrap_or_default();
    format!(
        "{}-{}-{}-{}-{}",
        g(0, 8),
        g(8, 12),
        g(12, 16),
        g(16, 20),
        g(20, 32)
    )
}

/// What happened in the simulated datacenter; each simulator reacts to the others'.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum LabEvent {
    /// Lab Proxmox powered a VM on (it boots the Talos ISO).
    VmStarted(LabVm),
    /// Lab Proxmox stopped a VM (power off or shutdown).
    VmStopped { vmid: u32 },
    /// Lab Proxmox deleted a VM.
    VmDestroyed { vmid: u32 },
    /// A lab Talos node goes down for a reboot: its containers stop. `drains`: the
    /// node evicts its pods itself first (the legacy upgrade sequence).
    NodeGoingDown { vmid: u32, drains: bool },
    /// A lab Talos node finished installing its applied config and runs it.
    NodeRunning(LabNodeInfo),
    /// etcd was bootstrapped (or recovered) on this control plane; the Kubernetes API
    /// comes up on its endpoint.
    EtcdBootstrapped { node: String, endpoint: Ipv4Addr },
}

/// A VM as the lab Proxmox started it: its NICs and what its drives hold.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
pub struct LabVm {
    pub vmid: u32,
    /// Proxmox host (node) name.
    pub host: String,
    pub name: String,
    pub nics: Vec<LabNic>,
    /// Contents (base64) of the ISO volumes in its CD-ROM drives at power-on. Kept
    /// with the node until it installed a config, so a node still booting when a
    /// command ends reads them when the next one resumes it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub media: Vec<String>,
}

/// Without the CD-ROM contents: a `cidata` volume holds the cluster's CA keys, and
/// lab events are logged.
impl std::fmt::Debug for LabVm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LabVm")
            .field("vmid", &self.vmid)
            .field("host", &self.host)
            .field("name", &self.name)
            .field("nics", &self.nics)
            .field("media", &format_args!("{} volume(s)", self.media.len()))
            .finish()
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LabNic {
    /// `net<index>`.
    pub index: u8,
    /// Upper-case, as Proxmox reports it.
    pub mac: String,
    pub vlan: Option<u16>,
    /// From `ipconfig<index>`.
    pub address: Option<Ipv4Net>,
    pub gateway: Option<Ipv4Addr>,
}

/// What the Kubernetes side needs to know about a running Talos node.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
pub struct LabNodeInfo {
    pub vmid: u32,
    pub hostname: String,
    /// `controlplane` or `worker`.
    pub machine_type: String,
    pub cluster_name: String,
    /// Management address (Talos API, etcd).
    pub management: Ipv4Addr,
    /// The kubelet node IP (`machine.kubelet.nodeIP.validSubnets` picks it).
    pub internal_ip: Ipv4Addr,
    /// `cluster.controlPlane.endpoint`.
    pub endpoint: String,
    /// `cluster.ca.crt` (PEM) from the applied config: the Kubernetes API's CA.
    pub kubernetes_ca_crt: String,
    /// `cluster.ca.key` (PEM); present on control planes only.
    pub kubernetes_ca_key: String,
    /// From `machine.kubelet.image`, as `Node.status.nodeInfo.kubeletVersion` (`v1.36.3`).
    #[serde(default)]
    pub kubelet_version: String,
    /// This boot's id; the kubelet reports it as `Node.status.nodeInfo.bootID`.
    #[serde(default)]
    pub boot_id: String,
    /// The kubelet did not start at this boot (fault `kubelet-stays-down`).
    #[serde(default)]
    pub kubelet_stuck: bool,
}

/// Without the CA key: every `LabEvent` is logged at debug level (`Fabric::emit`).
impl std::fmt::Debug for LabNodeInfo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LabNodeInfo")
            .field("vmid", &self.vmid)
            .field("hostname", &self.hostname)
            .field("machine_type", &self.machine_type)
            .field("cluster_name", &self.cluster_name)
            .field("management", &self.management)
            .field("internal_ip", &self.internal_ip)
            .field("endpoint", &self.endpoint)
            .finish_non_exhaustive()
    }
}

/// The shared fabric of one simulated datacenter.
#[derive(Debug, Clone)]
pub struct Fabric {
    pub addresses: AddressBook,
    pub events: broadcast::Sender<LabEvent>,
    pub etcd: EtcdStore,
}

impl Fabric {
    pub fn new() -> Self {
        let (events, _) = broadcast::channel(1024);
        Self {
            addresses: AddressBook::lab(),
            events,
            etcd: EtcdStore::default(),
        }
    }

    pub fn emit(&self, e: LabEvent) {
        tracing::debug!(event = ?e, "lab event");
        // No subscriber is fine: a simulator may not be running in a focused test.
        let _ = self.events.send(e);
    }
}

impl Default for Fabric {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod uuid_tests {
    #[test]
    fn uuid_text_groups_32_hex_digits() {
        let h = "00112233445566778899aabbccddeeff";
        assert_eq!(super::uuid_text(h), "00112233-4455-6677-8899-aabbccddeeff");
    }
}
