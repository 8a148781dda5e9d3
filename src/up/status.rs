//! Where a cluster stands (`talos-pve status`): each node's VM as Proxmox reports
//! it, each node's Talos stage, the etcd members, the add-ons, and the steps the
//! state file recorded. Every probe is one short attempt; a system that does not
//! answer is a state to show ("unreachable"), never a failure of the command.

use std::future::Future;
use std::time::Duration;

use serde::Serialize;

use super::{Env, bootstrap_target};
use crate::addons::metallb::NAMESPACE as METALLB_NS;
use crate::cluster_dir::ClusterDir;
use crate::kube::{self, Kubeconfig, daemonset_ready, deployment_ready};
use crate::plan::{NodePlan, Plan};
use crate::proxmox::inventory;
use crate::state::{Record, State};
use crate::talos::api::{Credentials, TalosClient, TalosError, Talosconfig, Target, TlsMode};

/// One probe never waits longer than this.
const PROBE: Duration = Duration::from_secs(10);

#[derive(Debug, Serialize)]
pub struct Status {
    pub cluster: String,
    /// Why the VM columns are unknown (Proxmox did not answer), if so.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub proxmox_error: Option<String>,
    pub nodes: Vec<NodeStatus>,
    pub etcd: EtcdStatus,
    pub addons: AddonsStatus,
    /// The state file's record, in order.
    pub steps: Vec<Record>,
}

#[derive(Debug, Serialize)]
pub struct NodeStatus {
    pub name: String,
    pub vmid: u32,
    pub vm: VmStatus,
    pub talos: TalosStatus,
    /// The kubelet's version as its Node reports it (`status.nodeInfo.kubeletVersion`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kubelet: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct VmStatus {
    pub exists: bool,
    pub running: bool,
    /// The Proxmox host it is on (may differ from the plan's).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct TalosStatus {
    /// `maintenance`, `configured` (answers but not with this talosconfig, or
    /// not fully up), `running`, or `unreachable`.
    pub stage: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct EtcdStatus {
    /// Member hostnames as the bootstrap node reports them.
    pub members: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct AddonsStatus {
    pub cilium: Readiness,
    /// Absent when the profile has no MetalLB.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metallb: Option<MetalLbStatus>,
}

#[derive(Debug, Serialize)]
pub struct Readiness {
    pub ready: bool,
    pub detail: String,
}

#[derive(Debug, Serialize)]
pub struct MetalLbStatus {
    /// The controller Deployment is available.
    pub ready: bool,
    /// An IPAddressPool exists.
    pub pool: bool,
    pub detail: String,
}

/// Probe everything; only a broken state file is an error.
pub async fn status(env: &Env, plan: &Plan, dir: &ClusterDir) -> anyhow::Result<Status> {
    let steps = State::read(&dir.state())?
        .map(|r| r.steps)
        .unwrap_or_default();
    let creds = Talosconfig::load(&dir.talosconfig())
        .ok()
        .map(|t| t.credentials);
    let (vms, proxmox_error) = match bounded(inventory::vms(&env.pve)).await {
        Ok(v) => (v, None),
        Err(e) => (Default::default(), Some(e)),
    };
    let probes = plan
        .nodes
        .iter()
        .map(|n| talos_stage(env, n, creds.as_ref()));
    let (talos, kubelets) =
        tokio::join!(futures_util::future::join_all(probes), kubelets(env, dir));
    let nodes = plan
        .nodes
        .iter()
        .zip(talos)
        .map(|(n, talos)| {
            let vm = vms.get(&n.vmid);
            NodeStatus {
                name: n.name.clone(),
                vmid: n.vmid,
                vm: VmStatus {
                    exists: vm.is_some(),
                    running: vm.is_some_and(|v| v.running),
                    host: vm.map(|v| v.node.clone()),
                },
                kubelet: kubelets.get(&n.name).cloned(),
                talos,
            }
        })
        .collect();
    let (etcd, addons) = tokio::join!(etcd(env, plan, creds.as_ref()), addons(env, plan, dir));
    Ok(Status {
        cluster: plan.cluster.clone(),
        proxmox_error,
        nodes,
        etcd,
        addons,
        steps,
    })
}

/// One attempt, bounded, its error as text.
async fn bounded<T, E: std::fmt::Display>(
    f: impl Future<Output = Result<T, E>>,
) -> Result<T, String> {
    match tokio::time::timeout(PROBE, f).await {
        Ok(r) => r.map_err(|e| first_line(&e.to_string())),
        Err(_) => Err(no_answer()),
    }
}

fn no_answer() -> String {
    format!("no answer within {}s", PROBE.as_secs())
}

fn first_line(s: &str) -> String {
    s.lines().next().unwrap_or_default().to_owned()
}

/// Mutual TLS with the talosconfig first (a running node answers it), then TLS
/// without a client certificate (a node in maintenance answers, a configured one
/// refuses). One attempt each: a rebooting node is simply unreachable now.
async fn talos_stage(env: &Env, n: &NodePlan, creds: Option<&Credentials>) -> TalosStatus {
    let t = Target::of(n);
    let version = |mode: TlsMode| {
        let t = t.clone();
        async move {
            let mut c = env.talos.client(&t, &mode)?;
            c.version().await
        }
    };
    let state = |stage, version, detail| TalosStatus {
        stage,
        version,
        detail,
    };
    let mutual = match creds {
        Some(c) => match bounded(version(TlsMode::Mutual(c.clone()))).await {
            Ok(v) => {
                let tag = v.first().and_then(|v| v.version.as_ref());
                return state("running", tag.map(|i| i.tag.clone()), None);
            }
            Err(e) => e,
        },
        None => "no talosconfig in the cluster directory".to_owned(),
    };
    match tokio::time::timeout(PROBE, version(TlsMode::Maintenance)).await {
        Ok(Ok(_)) => state("maintenance", None, None),
        Ok(Err(TalosError::CertificateRejected { .. })) => state("configured", None, Some(mutual)),
        Ok(Err(e)) => state("unreachable", None, Some(first_line(&e.to_string()))),
        Err(_) => state("unreachable", None, Some(no_answer())),
    }
}

/// Node name → kubelet version; empty when the API does not answer (the add-ons
/// part of the status says why).
async fn kubelets(env: &Env, dir: &ClusterDir) -> std::collections::BTreeMap<String, String> {
    let nodes = async {
        let kc = Kubeconfig::load(&dir.kubeconfig()).map_err(|e| e.to_string())?;
        let c = bounded(kube::Client::new(&kc, &env.book)).await?;
        bounded(c.list("/api/v1/nodes")).await
    };
    nodes
        .await
        .unwrap_or_default()
        .iter()
        .filter_map(|n| {
            Some((
                n["metadata"]["name"].as_str()?.to_owned(),
                n["status"]["nodeInfo"]["kubeletVersion"]
                    .as_str()?
                    .to_owned(),
            ))
        })
        .collect()
}

async fn etcd(env: &Env, plan: &Plan, creds: Option<&Credentials>) -> EtcdStatus {
    let Some(creds) = creds else {
        return EtcdStatus {
            members: Vec::new(),
            error: Some("no talosconfig in the cluster directory".into()),
        };
    };
    let t = bootstrap_target(plan);
    let list = async {
        let mut c: TalosClient = env.talos.client(&t, &TlsMode::Mutual(creds.clone()))?;
        c.etcd_member_list().await
    };
    match bounded(list).await {
        Ok(m) => EtcdStatus {
            members: m.into_iter().map(|m| m.hostname).collect(),
            error: None,
        },
        Err(e) => EtcdStatus {
            members: Vec::new(),
            error: Some(e),
        },
    }
}

async fn addons(env: &Env, plan: &Plan, dir: &ClusterDir) -> AddonsStatus {
    let not = |detail: String| Readiness {
        ready: false,
        detail,
    };
    let client = match Kubeconfig::load(&dir.kubeconfig()) {
        Ok(kc) => bounded(kube::Client::new(&kc, &env.book)).await,
        Err(e) => Err(first_line(&e.to_string())),
    };
    let client = match client {
        Ok(c) => c,
        Err(e) => {
            return AddonsStatus {
                cilium: not(e.clone()),
                metallb: plan.metallb_pool.as_ref().map(|_| MetalLbStatus {
                    ready: false,
                    pool: false,
                    detail: e,
                }),
            };
        }
    };
    let get = |path: String| {
        let c = &client;
        async move { bounded(c.get(&path)).await }
    };
    let ready = |obj: Result<Option<serde_json::Value>, String>,
                 check: fn(&serde_json::Value) -> Result<(), String>| match obj {
        Ok(Some(o)) => match check(&o) {
            Ok(()) => Readiness {
                ready: true,
                detail: "ready".into(),
            },
            Err(e) => not(e),
        },
        Ok(None) => not("not installed".into()),
        Err(e) => not(e),
    };
    let cilium = ready(
        get("/apis/apps/v1/namespaces/kube-system/daemonsets/cilium".into()).await,
        daemonset_ready,
    );
    let metallb = match plan.metallb_pool {
        None => None,
        Some(_) => {
            let ctrl = ready(
                get(format!(
                    "/apis/apps/v1/namespaces/{METALLB_NS}/deployments/controller"
                ))
                .await,
                deployment_ready,
            );
            let pools = bounded(client.list(&format!(
                "/apis/metallb.io/v1beta1/namespaces/{METALLB_NS}/ipaddresspools"
            )))
            .await;
            let pool = pools.as_ref().is_ok_and(|p| !p.is_empty());
            let detail = match (&pools, ctrl.ready) {
                (Err(e), _) => e.clone(),
                (Ok(_), false) => ctrl.detail,
                (Ok(p), true) => format!("controller ready, {} pool(s)", p.len()),
            };
            Some(MetalLbStatus {
                ready: ctrl.ready,
                pool,
                detail,
            })
        }
    };
    AddonsStatus { cilium, metallb }
}

impl Status {
    /// The text view: one line per node, then etcd, add-ons and the recorded steps.
    pub fn render(&self) -> String {
        let mut o = format!("Cluster {}\n", self.cluster);
        if let Some(e) = &self.proxmox_error {
            o += &format!("  Proxmox did not answer: {e}\n");
        }
        o += &format!(
            "\n  {:<14} {:>5}  {:<24} {:<22} {}\n",
            "node", "VMID", "VM", "Talos", "kubelet"
        );
        for n in &self.nodes {
            let vm = match (&n.vm.host, n.vm.running) {
                (None, _) => "absent".to_owned(),
                (Some(h), true) => format!("running on {h}"),
                (Some(h), false) => format!("stopped on {h}"),
            };
            let talos = match (&n.talos.version, &n.talos.detail) {
                (Some(v), _) => format!("{} {v}", n.talos.stage),
                (None, Some(d)) => format!("{} ({d})", n.talos.stage),
                (None, None) => n.talos.stage.to_owned(),
            };
            let kubelet = n.kubelet.as_deref().unwrap_or("-");
            o += &format!(
                "  {:<14} {:>5}  {:<24} {talos:<22} {kubelet}\n",
                n.name, n.vmid, vm
            );
        }
        o += &match &self.etcd.error {
            None => format!(
                "\n  etcd members: {} ({})\n",
                self.etcd.members.len(),
                self.etcd.members.join(", ")
            ),
            Some(e) => format!("\n  etcd members: unknown ({e})\n"),
        };
        let yes = |b: bool| if b { "ready" } else { "not ready" };
        o += &match &self.addons.cilium {
            Readiness { ready: true, .. } => "  cilium:  ready\n".to_owned(),
            Readiness { detail, .. } => format!("  cilium:  not ready ({detail})\n"),
        };
        if let Some(m) = &self.addons.metallb {
            o += &format!(
                "  metallb: {}, pool {} ({})\n",
                yes(m.ready),
                if m.pool { "present" } else { "absent" },
                m.detail
            );
        }
        if self.steps.is_empty() {
            o += "\n  no steps recorded (no `talos-pve up` has run in this directory)\n";
        } else {
            o += &format!("\n  recorded steps ({}):\n", self.steps.len());
            for r in &self.steps {
                let detail = r
                    .detail
                    .as_deref()
                    .map(|d| format!(": {d}"))
                    .unwrap_or_default();
                o += &format!("    {}  {}{detail}\n", r.at, r.step);
            }
        }
        o
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::Step;

    fn node(name: &str, host: Option<&str>, stage: &'static str) -> NodeStatus {
        NodeStatus {
            name: name.into(),
            vmid: 120,
            vm: VmStatus {
                exists: host.is_some(),
                running: host.is_some(),
                host: host.map(str::to_owned),
            },
            talos: TalosStatus {
                stage,
                version: (stage == "running").then(|| "v1.13.9".into()),
                detail: (stage == "unreachable").then(|| "rebooting".into()),
            },
            kubelet: host.map(|_| "v1.36.3".into()),
        }
    }

    #[test]
    fn renders_each_part_and_unknowns_as_states() {
        let s = Status {
            cluster: "homelab".into(),
            proxmox_error: None,
            nodes: vec![
                node("cp-1", Some("pve-1"), "running"),
                node("cp-2", None, "unreachable"),
            ],
            etcd: EtcdStatus {
                members: vec![],
                error: Some("no answer within 10s".into()),
            },
            addons: AddonsStatus {
                cilium: Readiness {
                    ready: true,
                    detail: "ready".into(),
                },
                metallb: Some(MetalLbStatus {
                    ready: false,
                    pool: false,
                    detail: "not installed".into(),
                }),
            },
            steps: vec![Record {
                step: Step::Bootstrapped,
                at: "2026-01-01T00:00:00Z".into(),
                detail: Some("etcd bootstrapped".into()),
            }],
        };
        let text = s.render();
        assert!(text.contains("running on pve-1"), "{text}");
        assert!(text.contains("running v1.13.9"), "{text}");
        assert!(text.contains("v1.36.3"), "{text}");
        assert!(text.contains("absent"), "{text}");
        assert!(text.contains("unreachable (rebooting)"), "{text}");
        assert!(text.contains("etcd members: unknown (no answer"), "{text}");
        assert!(text.contains("cilium:  ready\n"), "{text}");
        assert!(text.contains("metallb: not ready, pool absent"), "{text}");
        assert!(text.contains("bootstrapped: etcd bootstrapped"), "{text}");
        let json = serde_json::to_value(&s).unwrap();
        assert_eq!(json["nodes"][1]["vm"]["exists"], false);
        assert_eq!(json["nodes"][0]["kubelet"], "v1.36.3");
        assert_eq!(json["nodes"][0]["talos"]["version"], "v1.13.9");
        assert!(json.get("proxmox_error").is_none());
    }
}
