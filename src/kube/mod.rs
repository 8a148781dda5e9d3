//! Minimal Kubernetes API client over plain reqwest: kubeconfig loading, server-side
//! apply with the `talos-pve` field manager, merge patches, discovery of plurals, and
//! the readiness waits the add-ons need (CRD `Established`, rollouts, node `Ready`),
//! made through watches (`watch`), and the cordon + drain of a node (`drain`).
//!
//! Every connection resolves the kubeconfig's server through the `AddressBook`, and the
//! server certificate must chain to the kubeconfig's CA and be valid for the
//! kubeconfig's host, whichever address was really dialed.
//!
//! It knows no add-on (that is `addons`) and must not pull in kube/k8s-openapi.

mod client;
mod config;
mod discovery;
pub mod drain;
mod wait;
mod watch;

use thiserror::Error;

pub use client::{Client, FIELD_MANAGER};
pub use config::Kubeconfig;
pub use discovery::{Discovery, Resource};
pub use wait::{Poll, crd_established, daemonset_ready, deployment_ready, node_ready};

#[derive(Debug, Error)]
pub enum KubeError {
    #[error(
        "kubeconfig {where_}: {what}\n  fix: use the kubeconfig talos-pve wrote into the cluster directory (or `talosctl kubeconfig`)"
    )]
    Kubeconfig { where_: String, what: String },
    #[error("kubeconfig server `{server}`: {source}")]
    Net {
        server: String,
        #[source]
        source: crate::net::NetError,
    },
    #[error("Kubernetes API TLS setup for `{server}`: {what}")]
    Tls { server: String, what: String },
    #[error(
        "Kubernetes API {method} {url}: {source}\n  fix: check that the API server is reachable and the kubeconfig matches this cluster"
    )]
    Http {
        method: String,
        url: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("Kubernetes API {method} {path} answered {code}: {message}")]
    Status {
        method: String,
        path: String,
        code: u16,
        message: String,
    },
    #[error(
        "the Kubernetes API serves no resource for {api_version} {kind}\n  fix: is the CRD installed and Established? (discovery is refreshed after CRDs)"
    )]
    UnknownKind { api_version: String, kind: String },
    #[error("object has no {field}: {object}")]
    BadObject { field: &'static str, object: String },
    #[error(
        "drain of {node} did not finish: {pods}\n  fix: `kubectl get pdb -A` shows the PodDisruptionBudget that refuses these evictions (429, the disruption budget has no disruption left); scale the workload up or relax the budget, then run the command again (the node stays cordoned)"
    )]
    Drain { node: String, pods: String },
    #[error("timed out after {secs}s waiting for {what} (last seen: {last})")]
    Timeout {
        what: String,
        secs: u64,
        last: String,
    },
}

/// One URL path segment or query value, percent-encoded (Kubernetes names are DNS
/// labels/subdomains, so the form encoding of a space never arises).
pub fn segment(s: &str) -> String {
    form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

impl KubeError {
    /// The HTTP status the API answered, if this is an API answer.
    pub fn code(&self) -> Option<u16> {
        match self {
            KubeError::Status { code, .. } => Some(*code),
            _ => None,
        }
    }

    pub fn message(&self) -> Option<&str> {
        match self {
            KubeError::Status { message, .. } => Some(message),
            _ => None,
        }
    }
}
