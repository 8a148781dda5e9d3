//! Destroy: find the VMs that carry this cluster's marker, and remove exactly those.

use super::client::Client;
use super::error::PveError;
use super::inventory::{self, owner};
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

/// VMs whose description marker names `cluster`. Candidates are VMs tagged
/// `talos-pve` plus the planned VMIDs (in case someone removed the tag).
pub async fn owned_vms(
    pve: &Client,
    cluster: &str,
    planned: &[u32],
) -> Result<Vec<OwnedVm>, PveError> {
    let vms = inventory::vms(pve).await?;
    let mut out = Vec::new();
    for vm in vms.values() {
        let candidate =
            vm.tags.iter().any(|t| t.eq_ignore_ascii_case(OWNER_TAG)) || planned.contains(&vm.vmid);
        if !candidate {
            continue;
        }
        let config = inventory::config(pve, &vm.node, vm.vmid).await?;
        if let Some((c, node)) = owner(&config)
            && c == cluster
        {
            out.push(OwnedVm {
                vmid: vm.vmid,
                host: vm.node.clone(),
                name: vm.name.clone(),
                node,
                running: vm.running,
            });
        }
    }
    Ok(out)
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
