//! What exists on the Proxmox cluster: VMs (`/cluster/resources`) and who owns them.

use std::collections::BTreeMap;

use serde_json::Value;

use super::client::{Client, int, params, text, vm_path};
use super::error::PveError;
use super::ownership::Marker;
use super::propstr::split_tags;
use crate::plan::Plan;

#[derive(Debug, Clone, PartialEq)]
pub struct VmResource {
    pub vmid: u32,
    pub node: String,
    pub name: String,
    pub running: bool,
    pub tags: Vec<String>,
}

/// A container (LXC): it holds its VMID in the cluster's one VMID space.
#[derive(Debug, Clone, PartialEq)]
pub struct Container {
    pub vmid: u32,
    pub node: String,
    pub name: String,
}

/// Every guest of the cluster: QEMU VMs and the containers beside them.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Guests {
    pub vms: BTreeMap<u32, VmResource>,
    pub containers: BTreeMap<u32, Container>,
}

/// Every VM of the cluster (QEMU only).
pub async fn vms(pve: &Client) -> Result<BTreeMap<u32, VmResource>, PveError> {
    Ok(guests(pve).await?.vms)
}

/// Every guest of the cluster. Rows of other types (PVE 9 lists more) are ignored.
pub async fn guests(pve: &Client) -> Result<Guests, PveError> {
    guests_where(pve, |_, _| true).await
}

/// The VMs as the plan's nodes see them (`planned_guests`): a planned VMID is
/// looked up on the plan's host, where standalone hosts each count their own.
pub async fn planned_vms(pve: &Client, plan: &Plan) -> Result<BTreeMap<u32, VmResource>, PveError> {
    Ok(planned_guests(pve, plan).await?.vms)
}

/// The guests as the plan's nodes see them. Each standalone host has its own
/// VMID space (proxmox-semantics §6), so a guest holding a planned VMID on
/// another host than the plan's is not in that node's way and is left out.
pub async fn planned_guests(pve: &Client, plan: &Plan) -> Result<Guests, PveError> {
    let standalone = pve.standalone();
    guests_where(pve, |vmid, node| {
        !standalone
            || plan
                .nodes
                .iter()
                .find(|n| n.vmid == vmid)
                .is_none_or(|n| n.host == node)
    })
    .await
}

/// The VMs of every host that answers, and each standalone host that does not
/// (its node name, the error): its guests are unknown, not absent. A joined
/// cluster lists its offline nodes' guests too, so it has none unreachable.
pub async fn reachable_vms(
    pve: &Client,
) -> Result<(Vec<VmResource>, Vec<(String, PveError)>), PveError> {
    let (list, down) = pve
        .gather("/cluster/resources", &params([("type", "vm".into())]))
        .await?;
    Ok((rows(&list, |_, _| true).0, down))
}

async fn guests_where(pve: &Client, keep: impl Fn(u32, &str) -> bool) -> Result<Guests, PveError> {
    let list: Vec<Value> = pve
        .get("/cluster/resources", &params([("type", "vm".into())]))
        .await?;
    let (vms, containers) = rows(&list, keep);
    Ok(Guests {
        vms: vms.into_iter().map(|v| (v.vmid, v)).collect(),
        containers: containers.into_iter().map(|c| (c.vmid, c)).collect(),
    })
}

/// The guest rows of `/cluster/resources` that `keep` accepts: VMs and containers.
/// Rows of other types (PVE 9 lists more) are ignored.
fn rows(list: &[Value], keep: impl Fn(u32, &str) -> bool) -> (Vec<VmResource>, Vec<Container>) {
    let (mut vms, mut containers) = (Vec::new(), Vec::new());
    for v in list {
        let Some(vmid) = v
            .get("vmid")
            .and_then(int)
            .and_then(|i| u32::try_from(i).ok())
        else {
            continue;
        };
        let Some(node) = v.get("node").and_then(Value::as_str).map(str::to_owned) else {
            continue;
        };
        if !keep(vmid, &node) {
            continue;
        }
        let name = v.get("name").and_then(text).unwrap_or_default();
        match v.get("type").and_then(Value::as_str) {
            Some("qemu") => {
                let resource = VmResource {
                    vmid,
                    node,
                    name,
                    running: v.get("status").and_then(Value::as_str) == Some("running"),
                    tags: v
                        .get("tags")
                        .and_then(Value::as_str)
                        .map(split_tags)
                        .unwrap_or_default(),
                };
                vms.push(resource);
            }
            Some("lxc") => containers.push(Container { vmid, node, name }),
            _ => {}
        }
    }
    (vms, containers)
}

/// A VM's config as flat strings (numbers may arrive as JSON numbers).
pub async fn config(
    pve: &Client,
    node: &str,
    vmid: u32,
) -> Result<BTreeMap<String, String>, PveError> {
    let v: BTreeMap<String, Value> = pve
        .get(&format!("{}/config", vm_path(node, vmid)?), &[])
        .await?;
    Ok(v.iter()
        .filter_map(|(k, v)| Some((k.clone(), text(v)?)))
        .collect())
}

/// The keys of a VM's config that wait for its next start (a change Proxmox could
/// not hot-plug into the running VM): entries of `GET …/pending` with `pending` or
/// `delete` set (pve-guest-common `GuestHelpers.pm` 223-263; proxmox-semantics.md §7.1).
pub async fn pending(pve: &Client, node: &str, vmid: u32) -> Result<Vec<String>, PveError> {
    let entries: Vec<Value> = pve
        .get(&format!("{}/pending", vm_path(node, vmid)?), &[])
        .await?;
    Ok(entries
        .iter()
        .filter(|e| e.get("pending").is_some() || e.get("delete").is_some())
        .filter_map(|e| e.get("key").and_then(Value::as_str).map(str::to_owned))
        .collect())
}

/// The config of a VM whose create has not finished: PVE writes only
/// `lock: create` first and the full config when the `qmcreate` task ends.
pub fn creating(config: &BTreeMap<String, String>) -> bool {
    config.get("lock").is_some_and(|l| l == "create")
}

/// Whether a `qmcreate` task for `vmid` runs on `node` now. Without one, a
/// `lock: create` config is the stub of a create whose worker died.
pub async fn create_running(pve: &Client, node: &str, vmid: u32) -> Result<bool, PveError> {
    let tasks: Vec<Value> = pve
        .get(
            &format!("{}/tasks", super::client::node_path(node)?),
            &params([
                ("source", "active".into()),
                ("typefilter", "qmcreate".into()),
                ("vmid", vmid.to_string()),
            ]),
        )
        .await?;
    Ok(!tasks.is_empty())
}

/// What a create stub is, and what to do about it (only root can clear a
/// create lock).
pub fn stub_remedy(node: &str, vmid: u32) -> (String, String) {
    (
        format!(
            "VM {vmid} on host {node} is what an interrupted create left behind: its config holds only `lock: create` and no create task runs"
        ),
        format!(
            "as root on {node}: `qm unlock {vmid} && qm destroy {vmid}` (only root can clear a create lock), then run again"
        ),
    )
}

/// Wait until `status/current` shows no `lock` (backing off like task polls).
pub async fn wait_unlocked(
    pve: &Client,
    node: &str,
    vmid: u32,
    deadline: std::time::Duration,
) -> Result<(), PveError> {
    let start = std::time::Instant::now();
    let mut wait = std::time::Duration::from_millis(250);
    let path = format!("{}/status/current", vm_path(node, vmid)?);
    loop {
        let st: Value = pve.get(&path, &[]).await?;
        let Some(lock) = st.get("lock").and_then(Value::as_str) else {
            return Ok(());
        };
        if start.elapsed() > deadline {
            return Err(PveError::Api {
                method: "GET".into(),
                path: path.clone(),
                status: 500,
                message: format!(
                    "VM {vmid} on {node} is still locked ({lock}) after {}s; {}",
                    deadline.as_secs(),
                    lock_advice(vmid, lock)
                ),
                errors: Default::default(),
            });
        }
        tokio::time::sleep(wait).await;
        wait = (wait * 2).min(std::time::Duration::from_secs(5));
    }
}

/// What to do about a lock that stays. `suspended` is a hibernated VM: its RAM
/// state is on disk and `qm unlock` would throw it away.
fn lock_advice(vmid: u32, lock: &str) -> String {
    match lock {
        "suspended" => format!(
            "it is hibernated: resume it with `qm start {vmid}` (its saved RAM state is lost by `qm unlock`)"
        ),
        "create" => {
            "its create has not finished; if no create task runs, see `talos-pve preflight`".into()
        }
        _ => format!("check its running tasks, or `qm unlock {vmid}` if none"),
    }
}

/// The marker in a config's description.
pub fn marker(config: &BTreeMap<String, String>) -> Option<Marker> {
    config.get("description").and_then(|d| Marker::read(d))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hibernated_vm_is_resumed_not_unlocked() {
        assert!(lock_advice(120, "suspended").contains("qm start 120"));
        assert!(!lock_advice(120, "suspended").starts_with("check"));
        assert!(lock_advice(120, "backup").contains("qm unlock 120"));
    }
}
