//! Destroy: find the VMs that carry this cluster's marker (its ID, not only its
//! name), and remove exactly those; every other candidate is reported with the
//! reason it is left alone.

use super::client::Client;
use super::error::PveError;
use super::inventory;
use super::ownership::{self, Claim, Owner};
use super::provision::{ProvisionReport, remove};
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
        let config = inventory::config(pve, &vm.node, vm.vmid).await?;
        let description = config.get("description").map(String::as_str);
        let why = match ownership::claim(owner, &vm.tags, description) {
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

/// Stop and delete the given VMs; returns the request count of writes.
pub async fn destroy(pve: &Client, vms: &[OwnedVm]) -> Result<u32, PveError> {
    let mut set = tokio::task::JoinSet::new();
    for vm in vms.iter().cloned() {
        let pve = pve.clone();
        set.spawn(async move {
            let mut r = ProvisionReport::default();
            let res = remove(&pve, &vm.host, vm.vmid, vm.running, &mut r).await;
            (r.writes, res)
        });
    }
    let mut writes = 0;
    let mut first = None;
    while let Some(j) = set.join_next().await {
        let (w, res) = match j {
            Ok(v) => v,
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            Err(_) => continue, // cancelled: only at runtime shutdown
        };
        writes += w;
        if let Err(e) = res {
            first.get_or_insert(e);
        }
    }
    match first {
        Some(e) => Err(e),
        None => Ok(writes),
    }
}
