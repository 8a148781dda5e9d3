//! Never a second bootstrap. Once this cluster's etcd was bootstrapped, control
//! planes without etcd are a disaster to recover from a backup, not a new cluster:
//! bootstrapping again starts an empty etcd, and every Kubernetes object is lost.
//!
//! Evidence that etcd was bootstrapped comes from the cluster directory only (the
//! nodes may be gone): the state records `bootstrapped`, or a step that needs a
//! running etcd (etcd healthy, kubeconfig, add-ons, healthy), or the directory holds
//! a backup (`backup` takes an etcd snapshot, which needs a running etcd). (A
//! damaged state file stops `up` before this is asked.)
//!
//! Pure: the caller reads the inventory and decides what to do with the verdict.

use std::collections::BTreeMap;
use std::path::Path;

use thiserror::Error;

use crate::cluster_dir::ClusterDir;
use crate::plan::Plan;
use crate::proxmox::inventory::VmResource;
use crate::state::{State, Step};

#[derive(Debug, Error)]
#[error(
    "cluster `{cluster}` was bootstrapped before ({evidence}), but every control plane is gone ({lost}): bootstrapping etcd again would start an empty cluster and lose every Kubernetes object\n  fix: restore etcd from a backup with `talos-pve rebuild cluster --from <backup dir>` (this directory's backups: {backups}); when only some nodes are lost, `talos-pve rebuild node NAME`; to start over with an empty etcd on purpose, run `up --bootstrap-empty-etcd`"
)]
pub struct SecondBootstrap {
    pub cluster: String,
    pub evidence: String,
    pub lost: String,
    pub backups: String,
}

/// Why we know etcd of this cluster was bootstrapped; `None` when nothing says so.
pub fn evidence(dir: &ClusterDir, state: &State) -> Option<String> {
    let needs_etcd = |s: &Step| {
        matches!(
            s,
            Step::Bootstrapped
                | Step::EtcdHealthy
                | Step::Kubeconfig
                | Step::PodCidr(_)
                | Step::Cilium
                | Step::Metallb
                | Step::Healthy
                | Step::KubernetesUpgraded(_)
                | Step::Reconfigured(_)
        )
    };
    if let Some(r) = state.steps().iter().find(|r| needs_etcd(&r.step)) {
        return Some(format!(
            "{} records `{}` at {}",
            state.path().display(),
            r.step,
            r.at
        ));
    }
    let backups = backups(&dir.backups());
    (!backups.is_empty()).then(|| {
        format!(
            "{} holds etcd backups of it: {}",
            dir.backups().display(),
            backups.join(", ")
        )
    })
}

/// Backup directories (each has a manifest) under `dir`, sorted by name.
fn backups(dir: &Path) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut out: Vec<String> = entries
        .flatten()
        .filter(|e| e.path().join(crate::rebuild::backup::MANIFEST).is_file())
        .map(|e| e.path().display().to_string())
        .collect();
    out.sort();
    out
}

/// With evidence of a bootstrap: refuse when no planned control plane has a VM left
/// (neither at its VMID nor anywhere else under its name), since none of them can
/// hold etcd data.
pub fn check(
    dir: &ClusterDir,
    plan: &Plan,
    evidence: &str,
    vms: &BTreeMap<u32, VmResource>,
) -> Result<(), SecondBootstrap> {
    let present = |vmid: u32, name: &str| {
        vms.contains_key(&vmid) || vms.values().any(|v| v.name.eq_ignore_ascii_case(name))
    };
    let cps: Vec<_> = plan.control_planes().collect();
    if cps.iter().any(|n| present(n.vmid, &n.name)) {
        return Ok(());
    }
    let lost: Vec<String> = cps
        .iter()
        .map(|n| format!("{} (VM {})", n.name, n.vmid))
        .collect();
    let backups = backups(&dir.backups());
    Err(SecondBootstrap {
        cluster: plan.cluster.clone(),
        evidence: evidence.to_owned(),
        lost: format!("no VM of {}", lost.join(", ")),
        backups: if backups.is_empty() {
            "none; use one taken elsewhere".into()
        } else {
            backups.join(", ")
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vm(vmid: u32, name: &str) -> (u32, VmResource) {
        (
            vmid,
            VmResource {
                vmid,
                node: "pve-ms01-01".into(),
                name: name.into(),
                running: true,
                tags: Vec::new(),
            },
        )
    }

    #[test]
    fn evidence_comes_from_the_state_or_a_backup() {
        let d = tempfile::tempdir().unwrap();
        let dir = ClusterDir {
            root: d.path().to_owned(),
        };
        let p = crate::test_support::homelab();
        let plan = Plan::build(&p).unwrap();
        let state = State::open(&dir, &p, &plan).unwrap();
        assert_eq!(evidence(&dir, &state), None);
        state.mark_done(Step::Secrets, None).unwrap();
        assert_eq!(evidence(&dir, &state), None, "secrets alone prove nothing");
        let b = dir.backups().join("homelab-20260101T000000Z");
        std::fs::create_dir_all(&b).unwrap();
        std::fs::write(b.join(crate::rebuild::backup::MANIFEST), "{}").unwrap();
        assert!(evidence(&dir, &state).unwrap().contains("etcd backups"));
        state.mark_done(Step::Bootstrapped, None).unwrap();
        assert!(evidence(&dir, &state).unwrap().contains("`bootstrapped`"));
    }

    #[test]
    fn refuses_only_when_every_control_plane_is_gone() {
        let dir = ClusterDir {
            root: "/nonexistent".into(),
        };
        let plan = Plan::build(&crate::test_support::homelab()).unwrap();
        let all: BTreeMap<_, _> = [vm(120, "a"), vm(121, "b"), vm(122, "c")].into();
        assert!(check(&dir, &plan, "x", &all).is_ok());
        let one: BTreeMap<_, _> = [vm(122, "c")].into();
        assert!(check(&dir, &plan, "x", &one).is_ok(), "rebuild node's case");
        let moved: BTreeMap<_, _> = [vm(300, "talos-k8s-02")].into();
        assert!(check(&dir, &plan, "x", &moved).is_ok());
        let e = check(&dir, &plan, "x", &BTreeMap::new()).unwrap_err();
        let msg = e.to_string();
        assert!(msg.contains("rebuild cluster --from"), "{msg}");
        assert!(msg.contains("talos-k8s-01 (VM 120)"), "{msg}");
        assert!(msg.contains("--bootstrap-empty-etcd"), "{msg}");
    }
}
