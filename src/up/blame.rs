//! Which planned node (or Proxmox host) a provisioning failure concerns, read from
//! the failed request's API path or task UPID, so the error names it.

use crate::plan::Plan;
use crate::proxmox::error::PveError;
use crate::proxmox::provision::ProvisionError;
use crate::proxmox::upid::Upid;

/// What failed, for the user: `talos-k8s-02 (VM 121 on pve-ms01-02)`, or the host
/// with the nodes it carries when the request names no VM (a create, an ISO
/// download). `None` when the error names no host (e.g. the cluster-wide listing).
pub fn subject(plan: &Plan, e: &ProvisionError) -> Option<String> {
    let ProvisionError::Pve(pve) = e.cause() else {
        return None;
    };
    let (host, vmid) = match pve {
        PveError::TaskFailed { upid, node, .. } => {
            let vmid = Upid::parse(upid).and_then(|u| u.id.parse().ok());
            (node.clone(), vmid)
        }
        PveError::Api { path, message, .. } => {
            let (host, vmid) = from_path(path)?;
            (host, vmid.or_else(|| locked_vmid(message)))
        }
        PveError::Transport { path, .. } | PveError::Decode { path, .. } => from_path(path)?,
        _ => return None,
    };
    let node = vmid.and_then(|v| plan.nodes.iter().find(|n| n.vmid == v && n.host == host));
    Some(match node {
        Some(n) => format!("{} (VM {} on {host})", n.name, n.vmid),
        None => {
            let on: Vec<&str> = plan
                .nodes
                .iter()
                .filter(|n| n.host == host)
                .map(|n| n.name.as_str())
                .collect();
            format!("Proxmox host {host} (nodes {})", on.join(", "))
        }
    })
}

/// `/nodes/{host}/qemu/{vmid}/…` → host and VMID; `/nodes/{host}/…` → host.
fn from_path(path: &str) -> Option<(String, Option<u32>)> {
    let mut parts = path.trim_start_matches('/').split('/');
    if parts.next()? != "nodes" {
        return None;
    }
    let host = parts.next()?.to_owned();
    let vmid = match (parts.next(), parts.next()) {
        (Some("qemu"), Some(id)) => id.parse().ok(),
        _ => None,
    };
    Some((host, vmid))
}

/// PVE names the VM whose lock it could not take: `…/lock-120.conf' - got timeout`.
fn locked_vmid(message: &str) -> Option<u32> {
    let rest = &message[message.find("/lock-")? + "/lock-".len()..];
    rest.split('.').next()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_host_and_vmid_from_api_paths() {
        assert_eq!(
            from_path("/nodes/pve-1/qemu/121/status/start"),
            Some(("pve-1".into(), Some(121)))
        );
        assert_eq!(from_path("/nodes/pve-1/qemu"), Some(("pve-1".into(), None)));
        assert_eq!(
            from_path("/nodes/pve-1/storage/local/download-url"),
            Some(("pve-1".into(), None))
        );
        assert_eq!(from_path("/cluster/resources"), None);
        assert_eq!(
            locked_vmid("can't lock file '/var/lock/qemu-server/lock-121.conf' - got timeout"),
            Some(121)
        );
        assert_eq!(locked_vmid("HTTP 500: injected"), None);
    }
}
