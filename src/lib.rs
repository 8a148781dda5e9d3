//! talos-pve: Proxmox VE hosts → a running Talos Linux Kubernetes cluster.
//!
//! Pure core: `profile` (the YAML model) → `lint` (is the network plan sound?) →
//! `plan` (everything derived: MACs, pod CIDRs, routes) → renderers (`docs`,
//! `talos::config`, `pki`). The imperative shell: `cli`, and thin adapters to
//! Proxmox (`proxmox`), Talos (`talos::api`) and Kubernetes (`kube`, `addons`),
//! which the `lab` simulates on loopback. The one-page map is `docs/architecture.md`.

pub mod addons;
pub mod artifacts;
pub mod cli;
pub mod cluster_dir;
pub mod cluster_id;
pub mod diff;
pub mod dir_lock;
pub mod docs;
pub mod files;
pub mod formats;
pub mod iso9660;
pub mod jsonschema;
pub mod kube;
pub mod lab;
pub mod lint;
pub mod net;
pub mod pki;
pub mod plan;
pub mod profile;
pub mod progress;
pub mod proxmox;
pub mod rebuild;
pub mod routing;
pub mod state;
pub mod talos;
#[cfg(test)]
mod test_support;
pub mod tls;
pub mod up;
pub mod upgrade;
pub mod wizard;
