//! Errors of the Talos API client. Every variant names the node; stage failures
//! also name the stage and what an operator should check.

use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

use thiserror::Error;

use super::snapshot::SnapshotError;
use crate::net::NetError;

/// A bring-up or recovery stage, each with its own readiness gate and timeout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    Install,
    Bootstrap,
    EtcdMembers,
    Kubeconfig,
    Snapshot,
    Recover,
}

impl Stage {
    pub fn name(self) -> &'static str {
        match self {
            Stage::Install => "wait for install and reboot",
            Stage::Bootstrap => "bootstrap etcd",
            Stage::EtcdMembers => "wait for etcd members",
            Stage::Kubeconfig => "fetch kubeconfig",
            Stage::Snapshot => "etcd snapshot",
            Stage::Recover => "etcd recover",
        }
    }

    /// What to look at when this stage does not finish.
    pub fn check(self) -> &'static str {
        match self {
            Stage::Install => {
                "the VM console for install errors or a reboot loop (the node reads its config from the `cidata` CD-ROM), that the boot order puts the disk before the ISO, that the installer image is reachable, and that the management address answers on port 50000 from here"
            }
            Stage::Bootstrap => {
                "that this is the plan's bootstrap control plane, that its time is synced (NTP reachable), and `etcd` service state (talosctl service etcd)"
            }
            Stage::EtcdMembers => {
                "that every control plane finished installing and can reach the bootstrap node's management address on ports 2379/2380"
            }
            Stage::Kubeconfig => "that the node is a control plane and etcd is bootstrapped",
            Stage::Snapshot => {
                "that the node is a healthy control plane (etcd Running) and the talosconfig in the cluster directory matches the cluster"
            }
            Stage::Recover => {
                "that every control plane shows etcd `Preparing` (freshly installed, not bootstrapped) and the snapshot passes validation"
            }
        }
    }
}

impl fmt::Display for Stage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[derive(Debug, Error)]
pub enum TalosError {
    #[error("node {node} ({addr}): {source}")]
    Address {
        node: String,
        addr: SocketAddr,
        #[source]
        source: NetError,
    },
    #[error("node {node} ({addr}) is not reachable: {detail}")]
    Unreachable {
        node: String,
        addr: SocketAddr,
        detail: String,
    },
    #[error(
        "node {node} refused our client certificate ({detail})\n  fix: use the talosconfig generated from this cluster's secrets (its CA must be the node's machine.ca)"
    )]
    CertificateRejected { node: String, detail: String },
    #[error(
        "node {node} presented a certificate we do not trust ({detail})\n  fix: the node runs a config from other secrets, or the talosconfig CA is stale"
    )]
    ServerUntrusted { node: String, detail: String },
    #[error(
        "node {node} denied {rpc}: {message}\n  fix: this call needs the os:admin role; use the admin talosconfig"
    )]
    PermissionDenied {
        node: String,
        rpc: &'static str,
        message: String,
    },
    #[error("node {node}: {rpc} failed ({code:?}): {message}")]
    Rpc {
        node: String,
        rpc: &'static str,
        code: tonic::Code,
        message: String,
    },
    #[error("node {node}: {rpc} failed on the node: {message}")]
    NodeError {
        node: String,
        rpc: &'static str,
        message: String,
    },
    #[error("node {node}: {rpc} returned an unusable response: {detail}")]
    BadResponse {
        node: String,
        rpc: &'static str,
        detail: String,
    },
    #[error(
        "node {node}: the machine answering at {addr} is not this cluster's node: it presented a certificate that does not chain to the cluster's OS CA ({seen})\n  fix: find the machine that holds {addr} on the management network (ARP/switch tables) and remove it, or fix the profile's address for {node}; if it is {node}'s own VM in maintenance mode, it did not read its cidata volume (see the VM console). No machine config was sent to it (configs travel only on the VM's cidata volume); then run again"
    )]
    NotOurNode {
        node: String,
        addr: SocketAddr,
        seen: String,
    },
    #[error("node {node}: {source}")]
    Snapshot {
        node: String,
        #[source]
        source: SnapshotError,
    },
    #[error(
        "node {node}: etcd did not start from the snapshot {snapshot}: {detail}\n  fix: check the snapshot (`talosctl etcd snapshot` output, or a raw `member/snap/db` copy with --skip-hash-check), then wipe etcd on the control planes and run the recovery again"
    )]
    EtcdRecovery {
        node: String,
        snapshot: String,
        detail: String,
    },
    #[error("talosconfig {path}: {detail}\n  fix: regenerate it with `talos-pve gen`")]
    Talosconfig { path: String, detail: String },
    #[error(
        "node {node}: stage `{stage}` did not finish within {}s; last: {last}\n  check: {}",
        .waited.as_secs_f32().ceil(),
        .stage.check()
    )]
    StageTimeout {
        node: String,
        stage: Stage,
        waited: Duration,
        last: Box<TalosError>,
    },
    #[error("node {node}: stage `{stage}` failed: {source}\n  check: {}", .stage.check())]
    StageFailed {
        node: String,
        stage: Stage,
        #[source]
        source: Box<TalosError>,
    },
}

impl TalosError {
    /// The gRPC code when the node answered with one.
    pub fn code(&self) -> Option<tonic::Code> {
        match self {
            TalosError::Rpc { code, .. } => Some(*code),
            TalosError::PermissionDenied { .. } => Some(tonic::Code::PermissionDenied),
            _ => None,
        }
    }

    /// How a Talos 1.12 node in maintenance answers an API it lacks there (Version
    /// among them): Unimplemented "API is not implemented in maintenance mode"
    /// (talos v1.12.11 `internal/app/maintenance/server.go`). The node is up.
    pub fn is_maintenance_answer(&self) -> bool {
        self.code() == Some(tonic::Code::Unimplemented)
            && self
                .message()
                .is_some_and(|m| m.contains("not implemented in maintenance mode"))
    }

    pub fn message(&self) -> Option<&str> {
        match self {
            TalosError::Rpc { message, .. } | TalosError::NodeError { message, .. } => {
                Some(message)
            }
            _ => None,
        }
    }
}
