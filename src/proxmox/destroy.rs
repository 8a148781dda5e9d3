//! Destroy: find the VMs that carry this cluster's marker (its ID, not only its
//! name), and remove exactly those; every other candidate is reported with the
//! reason it is left alone.

use super::client::Client;
use super::error::PveError;
use super::inventory;
use super::ownership::{Claim, Owner};
use super::provision::{ProvisionReport, claim_of, remove};
use super::vm::OWNER_TAG;

#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct OwnedVm {
    pub vmid: u32,
    pub host: String,
    pub name: String,
    pub node: String,
    pub running: bool,
}

/// A VM that looked like a candidate but is not provably ours.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Skipped {
    pub vmid: u32,
    pub host: String,
    pub name: String,
    pub why: String,
}

/// VMs whose marker carries `owner`'s ID, and the candidates left alone. Candidates
/// are VMs tagged `talos-pve` (or with any marker tag) plus the planned VMIDs (in
/// case someone removed the tags).
pub async fn owned_vms(
    pve: &Client,
    owner: &Owner,
    planned: &[u32],
) -> Result<(Vec<OwnedVm>, Vec<Skipped>), PveError> {
    let vms = inventory::vms(pve).await?;
    let (mut out, mut skipped) = (Vec::new(), Vec::new());
    for vm in vms.values() {
        let candidate = vm
            .tags
            .iter()
            .any(|t| t.to_lowercase().starts_with(OWNER_TAG))
            || planned.contains(&vm.vmid);
        if !candidate {
            continue;
        }
        // Tags alone while its host is unreachable: the cluster still lists them.
        let why = match claim_of(pve, owner, vm).await? {
            Claim::Ours { node } => {
                out.push(OwnedVm {
                    vmid: vm.vmid,
                    host: vm.node.clone(),
                    name: vm.name.clone(),
                    node,
                    running: vm.running,
                });
                continue;
            }
            Claim::Legacy { cluster, .. } if cluster == owner.cluster => format!(
                "it carries the old name-only marker of `{cluster}`, which another cluster directory made from the same profile would carry too; `talos-pve provision` from the directory that created it re-marks it with its cluster ID"
            ),
            Claim::Other { what } if what.contains(&format!("`{}`", owner.cluster)) => {
                format!("it belongs to another cluster of the same name: {what}")
            }
            _ if planned.contains(&vm.vmid) => {
                "it is at a planned VMID but carries no marker of this cluster".to_owned()
            }
            // Another cluster's VM under another name: not worth a line.
            _ => continue,
        };
        skipped.push(Skipped {
            vmid: vm.vmid,
            host: vm.node.clone(),
            name: vm.name.clone(),
            why,
        });
    }
    Ok((out, skipped))
}

/// What `destroy` did: the VMs removed, and those left with why (an offline
/// host answers 595; the rest of the cluster is not held up by it).
#[derive(Debug, Default)]
pub struct DestroyReport {
    /// Write requests sent.
    pub writes: u32,
    pub removed: Vec<OwnedVm>,
    pub left: Vec<(OwnedVm, PveError)>,
}

/// Stop and delete the given VMs, each on its own: one failing (its host down)
/// does not keep the others.
pub async fn destroy(pve: &Client, vms: &[OwnedVm]) -> DestroyReport {
    let mut set = tokio::task::JoinSet::new();
    for vm in vms.iter().cloned() {
        let pve = pve.clone();
        set.spawn(async move {
            let mut r = ProvisionReport::default();
            let res = remove(&pve, &vm.host, vm.vmid, vm.running, &mut r).await;
            (vm, r.writes, res)
        });
    }
    let mut report = DestroyReport::default();
    while let Some(j) = set.join_next().await {
        let (vm, w, res) = match j {
            Ok(v) => v,
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            Err(_) => continue, // cancelled: only at runtime shutdown
        };
        report.writes += w;
        match res {
            Ok(()) => report.removed.push(vm),
            Err(e) => report.left.push((vm, e)),
        }
    }
    report.removed.sort_by_key(|v| v.vmid);
    report.left.sort_by_key(|(v, _)| v.vmid);
    report
}
