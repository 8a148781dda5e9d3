//! How real clients reach a running lab: a kubeconfig and a talosconfig whose
//! endpoints are the lab's loopback listeners instead of the simulated addresses
//! (10.8.16.20:6443 exists only inside the lab's address book). Credentials are the
//! cluster's own, copied from its files; the lab's server certificates carry
//! 127.0.0.1, so the clients verify them as usual.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;
use thiserror::Error;

use super::Datacenter;
use crate::cluster_dir::ClusterDir;
use crate::files::{self, SECRET_MODE};
use crate::kube::Kubeconfig;
use crate::plan::Plan;
use crate::talos::api::APID_PORT;

#[derive(Debug, Error)]
pub enum AccessError {
    #[error(
        "lab: the Kubernetes API is not serving (etcd was never bootstrapped in this lab)\n  fix: let `talos-pve up --lab` finish for this cluster directory, then run `lab serve` again"
    )]
    NoApi,
    #[error(
        "lab: control plane {node} ({address}) has no loopback listener (its VM is gone or not running)\n  fix: run `talos-pve up --lab` to rebuild it, or `talos-pve status --lab` to see what is missing"
    )]
    NoTalos { node: String, address: SocketAddr },
    #[error("lab: reading {path}: {detail}\n  fix: {fix}")]
    Read {
        path: PathBuf,
        detail: String,
        fix: &'static str,
    },
    #[error("lab: writing {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// What `lab serve` hands to real clients.
#[derive(Debug, Clone, PartialEq)]
pub struct Access {
    pub kubeconfig: PathBuf,
    pub talosconfig: PathBuf,
    /// The Kubernetes API's loopback listener.
    pub api: SocketAddr,
    /// Each control plane's Talos API listener, in plan order.
    pub talos: Vec<SocketAddr>,
}

/// The cluster's kubeconfig with its server replaced by `api` (same context names).
pub fn kubeconfig(
    text: &str,
    origin: &str,
    cluster: &str,
    api: SocketAddr,
) -> Result<String, String> {
    let mut k = Kubeconfig::parse(text, origin).map_err(|e| e.to_string())?;
    k.server = format!("https://{api}");
    Ok(k.render(cluster))
}

/// The cluster's talosconfig with its current context's endpoints replaced; `nodes`
/// stay the simulated addresses (talosctl sends them as routing metadata, never dials them).
pub fn talosconfig(text: &str, endpoints: &[SocketAddr]) -> Result<String, String> {
    let mut doc: Value = serde_saphyr::from_str(text).map_err(|e| e.to_string())?;
    let ctx = doc["context"]
        .as_str()
        .ok_or("no `context` in the talosconfig")?
        .to_owned();
    let entry = doc["contexts"]
        .get_mut(&ctx)
        .filter(|c| c.is_object())
        .ok_or_else(|| format!("context `{ctx}` is not defined"))?;
    entry["endpoints"] = endpoints
        .iter()
        .map(|e| Value::from(e.to_string()))
        .collect();
    serde_saphyr::to_string(&doc).map_err(|e| e.to_string())
}

/// Write both files into the lab directory (0600: they hold client keys).
pub async fn write(dc: &Datacenter, plan: &Plan, dir: &ClusterDir) -> Result<Access, AccessError> {
    let api = dc
        .kube
        .serving(Duration::from_secs(10))
        .await
        .ok_or(AccessError::NoApi)?;
    let talos = plan
        .control_planes()
        .map(|n| {
            let address = SocketAddr::new(n.management.address.addr().into(), APID_PORT);
            dc.fabric
                .addresses
                .resolve(address)
                .map_err(|_| AccessError::NoTalos {
                    node: n.name.clone(),
                    address,
                })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let fix = "run `talos-pve up --lab` for this cluster directory first; it writes the file";
    let read = |p: &Path| {
        std::fs::read_to_string(p).map_err(|e| AccessError::Read {
            path: p.to_owned(),
            detail: e.to_string(),
            fix,
        })
    };
    let bad = |p: &Path| {
        let path = p.to_owned();
        move |detail| AccessError::Read { path, detail, fix }
    };
    let (kc_in, tc_in) = (dir.kubeconfig(), dir.talosconfig());
    let kc = kubeconfig(
        &read(&kc_in)?,
        &kc_in.display().to_string(),
        &plan.cluster,
        api,
    )
    .map_err(bad(&kc_in))?;
    let tc = talosconfig(&read(&tc_in)?, &talos).map_err(bad(&tc_in))?;
    let out = Access {
        kubeconfig: dir.lab().join("kubeconfig"),
        talosconfig: dir.lab().join("talosconfig"),
        api,
        talos,
    };
    for (path, text) in [(&out.kubeconfig, kc), (&out.talosconfig, tc)] {
        files::write_atomic(path, text.as_bytes(), SECRET_MODE).map_err(|source| {
            AccessError::Write {
                path: path.clone(),
                source,
            }
        })?;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn talosconfig_endpoints_become_the_listeners_and_nodes_stay() {
        let text = "context: homelab\ncontexts:\n  homelab:\n    endpoints: [10.8.16.21]\n    nodes: [10.8.16.21, 10.8.16.22]\n    ca: Q0E=\n    crt: Q1JU\n    key: S0VZ\n";
        let l: SocketAddr = "127.0.0.1:41000".parse().unwrap();
        let out = talosconfig(text, &[l]).unwrap();
        let t = crate::talos::api::Talosconfig::parse(&out, "test").unwrap();
        assert_eq!(t.endpoints, ["127.0.0.1:41000"]);
        assert_eq!(t.nodes, ["10.8.16.21", "10.8.16.22"]);
        assert!(talosconfig("context: other\ncontexts: {}\n", &[l]).is_err());
    }

    #[test]
    fn kubeconfig_server_becomes_the_listener() {
        let k = Kubeconfig {
            server: "https://10.8.16.20:6443".into(),
            ca_pem: "CA".into(),
            cert_pem: "CERT".into(),
            key_pem: "KEY".to_string().into(),
        };
        let api: SocketAddr = "127.0.0.1:40000".parse().unwrap();
        let out = kubeconfig(&k.render("homelab"), "kc", "homelab", api).unwrap();
        let back = Kubeconfig::parse(&out, "kc").unwrap();
        assert_eq!(back.server, "https://127.0.0.1:40000");
        assert_eq!(back.ca_pem, "CA");
    }
}
