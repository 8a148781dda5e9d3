//! Rendering Talos machine configs, talosconfig and the admin kubeconfig from a plan and
//! a secrets bundle. Pure: the same inputs give the same bytes.
//!
//! Decision on deprecated fields: `talosctl gen config` still emits `persist: true`
//! (and `machine.network: {}` up to the 1.12 contract), which the JSON schema of the
//! target minor rejects and the parser ignores. talos-pve does NOT emit them, so every
//! document it writes validates against the schema as written — no stripping step.
//!
//! It must not read or write files (that is `artifacts`) nor talk to nodes.

mod clients;
mod machine;
pub mod yaml;

use thiserror::Error;

pub use clients::{
    AdminCert, issue_kube_admin, issue_talos_admin, kubeconfig, reusable_kube_admin,
    reusable_talos_admin, talosconfig,
};
pub use machine::{cert_sans, network_config, render_node};

#[derive(Debug, Error)]
pub enum ConfigError {
    #[error(
        "`talos.version` = `{0}` selects no supported config contract\n  fix: use a v1.12.x or v1.13.x release (e.g. v1.13.9)"
    )]
    UnsupportedVersion(String),
    #[error(transparent)]
    Pki(#[from] crate::pki::PkiError),
}

/// The machine-config contract (Talos minor) the output is written for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Contract {
    V1_12,
    V1_13,
}

impl Contract {
    /// From a Talos release such as `v1.13.9` (the `v` is optional).
    pub fn from_talos_version(v: &str) -> Result<Self, ConfigError> {
        let mut parts = v.trim_start_matches('v').split('.');
        match (parts.next(), parts.next()) {
            (Some("1"), Some("12")) => Ok(Contract::V1_12),
            (Some("1"), Some("13")) => Ok(Contract::V1_13),
            _ => Err(ConfigError::UnsupportedVersion(v.to_owned())),
        }
    }

    pub fn minor(self) -> u32 {
        match self {
            Contract::V1_12 => 12,
            Contract::V1_13 => 13,
        }
    }

    /// `RoutingRuleConfig` exists from 1.13 on.
    pub fn has_routing_rules(self) -> bool {
        self >= Contract::V1_13
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn contract_from_version() {
        assert_eq!(
            Contract::from_talos_version("v1.13.9").unwrap(),
            Contract::V1_13
        );
        assert_eq!(
            Contract::from_talos_version("1.12.11").unwrap(),
            Contract::V1_12
        );
        let e = Contract::from_talos_version("v1.11.0")
            .unwrap_err()
            .to_string();
        assert!(e.contains("v1.11.0") && e.contains("fix:"), "{e}");
    }
}
