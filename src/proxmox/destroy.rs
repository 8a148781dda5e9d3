//! Destroy: find the VMs that carry this cluster's marker (its ID, not only its
//! name), and remove exactly those; every other candidate is reported with the
//! reason it is left alone.

use super::client::Client;
use super::error::PveError;
use super::inventory;
use super::ownership::{Claim, Owner};
use super::provision::{ProvisionReport, claim_of, remove};
use super::vm::OWNER_TAG;
use crate::plan::{NodePlan, Plan};

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

/// What `destroy` finds: this cluster's VMs on the hosts that answer, the
/// candidates left alone, and the standalone hosts that do not answer (node
/// name, error): their guests are unknown.
#[derive(Debug, Default)]
pub struct Survey {
    pub owned: Vec<OwnedVm>,
    pub skipped: Vec<Skipped>,
    pub unreachable: Vec<(String, PveError)>,
}

/// VMs whose marker carries `owner`'s ID, and the candidates left alone; a
/// standalone host that does not answer is an error (`PveError::HostDown`).
pub async fn owned_vms(
    pve: &Client,
    owner: &Owner,
    planned: &[u32],
) -> Result<(Vec<OwnedVm>, Vec<Skipped>), PveError> {
    let s = survey(pve, owner, planned).await?;
    if let Some((host, e)) = s.unreachable.into_iter().next() {
        return Err(PveError::HostDown {
            host,
            source: Box::new(e),
        });
    }
    Ok((s.owned, s.skipped))
}

/// VMs whose marker carries `owner`'s ID on every host that answers, and the
/// candidates left alone. Candidates are VMs tagged `talos-pve` (or with any
/// marker tag) plus the planned VMIDs (in case someone removed the tags).
pub async fn survey(pve: &Client, owner: &Owner, planned: &[u32]) -> Result<Survey, PveError> {
    let (vms, unreachable) = inventory::reachable_vms(pve).await?;
    let (mut out, mut skipped) = (Vec::new(), Vec::new());
    for vm in &vms {
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
    // Standalone hosts each have their own VMID space: (VMID, host) is the key.
    out.sort_by(|a, b| (a.vmid, &a.host).cmp(&(b.vmid, &b.host)));
    skipped.sort_by(|a, b| (a.vmid, &a.host).cmp(&(b.vmid, &b.host)));
    Ok(Survey {
        owned: out,
        skipped,
        unreachable,
    })
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
    report
        .removed
        .sort_by(|a, b| (a.vmid, &a.host).cmp(&(b.vmid, &b.host)));
    report
        .left
        .sort_by(|(a, _), (b, _)| (a.vmid, &a.host).cmp(&(b.vmid, &b.host)));
    report
}

/// What `destroy` could not do, with what is left to do, or `None` when it is
/// done: each VM left (its host failed the call) and each standalone host that
/// did not answer, with the VMs the plan puts on it.
pub fn unfinished(
    report: &DestroyReport,
    unreachable: &[(String, PveError)],
    plan: &Plan,
) -> Option<String> {
    if report.left.is_empty() && unreachable.is_empty() {
        return None;
    }
    let mut out = String::new();
    if !report.left.is_empty() {
        out.push_str(&format!(
            "{} of {} VMs were not destroyed:",
            report.left.len(),
            report.left.len() + report.removed.len()
        ));
        for (v, e) in &report.left {
            out.push_str(&format!(
                "\n  VM {} {} on {}: {e}\n    left to do: {}",
                v.vmid,
                v.name,
                v.host,
                left_to_do(&v.host, &[v.vmid])
            ));
        }
    }
    for (host, e) in unreachable {
        if !out.is_empty() {
            out.push('\n');
        }
        let there: Vec<&NodePlan> = plan.nodes.iter().filter(|n| &n.host == host).collect();
        let vms = if there.is_empty() {
            "none".to_owned()
        } else {
            there
                .iter()
                .map(|n| format!("VM {} {}", n.vmid, n.name))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let vmids: Vec<u32> = there.iter().map(|n| n.vmid).collect();
        out.push_str(&format!(
            "standalone host {host} does not answer, so its VMs are unknown and none of them was destroyed: {e}\n  the plan puts there: {vms}\n    left to do: {}",
            left_to_do(host, &vmids)
        ));
    }
    out.push_str("\n  fix: bring the hosts back (`pvecm status` on a cluster, the host's console when standalone), then run `talos-pve destroy` again");
    Some(out)
}

/// Finishing by hand is per host: `qm` on that host, as root.
fn left_to_do(host: &str, vmids: &[u32]) -> String {
    let by_hand: Vec<String> = vmids
        .iter()
        .map(|id| format!("qm stop {id}; qm destroy {id} --purge"))
        .collect();
    let by_hand = if by_hand.is_empty() {
        String::new()
    } else {
        format!(" (or as root on {host}: `{}`)", by_hand.join("; "))
    };
    format!("when {host} answers again, run `talos-pve destroy` again{by_hand}")
}
