//! What exists on the Proxmox cluster: VMs (`/cluster/resources`) and who owns them.

use std::collections::BTreeMap;

use serde_json::Value;

use super::client::{Client, int, params, text, vm_path};
use super::error::PveError;
use super::ownership::Marker;
use super::propstr::split_tags;

#[derive(Debug, Clone, PartialEq)]
pub struct VmResource {
    pub vmid: u32,
    pub node: String,
    pub name: String,
    pub running: bool,
    pub tags: Vec<String>,
}

/// Every VM of the cluster (QEMU only).
pub async fn vms(pve: &Client) -> Result<BTreeMap<u32, VmResource>, PveError> {
    let list: Vec<Value> = pve
        .get("/cluster/resources", &params([("type", "vm".into())]))
        .await?;
    Ok(list
        .iter()
        .filter(|v| v.get("type").and_then(Value::as_str) == Some("qemu"))
        .filter_map(|v| {
            let vmid = u32::try_from(int(v.get("vmid")?)?).ok()?;
            Some((
                vmid,
                VmResource {
                    vmid,
                    node: v.get("node")?.as_str()?.to_owned(),
                    name: v.get("name").and_then(text).unwrap_or_default(),
                    running: v.get("status").and_then(Value::as_str) == Some("running"),
                    tags: v
                        .get("tags")
                        .and_then(Value::as_str)
                        .map(split_tags)
                        .unwrap_or_default(),
                },
            ))
        })
        .collect())
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
                    "VM {vmid} on {node} is still locked ({lock}) after {}s; check its running tasks, or `qm unlock {vmid}` if none",
                    deadline.as_secs()
                ),
                errors: Default::default(),
            });
        }
        tokio::time::sleep(wait).await;
        wait = (wait * 2).min(std::time::Duration::from_secs(5));
    }
}

/// The marker in a config's description.
pub fn marker(config: &BTreeMap<String, String>) -> Option<Marker> {
    config.get("description").and_then(|d| Marker::read(d))
}
