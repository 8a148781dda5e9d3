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

/// `format` of `status --output json`; incompatible changes increase it.
pub const FORMAT: u32 = 1;

/// The overall judgement, and the exit code of `talos-pve status` (documented in
/// docs/architecture.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Verdict {
    /// Every VM runs, every node runs Talos and is Ready, etcd is complete, add-ons ready.
    Healthy,
    /// Built (or being built), but something is missing or not ready.
    Degraded,
    /// Nothing of this cluster exists and no `up` has run in its directory.
    NotBuilt,
    /// Proxmox did not answer, so the VMs cannot be judged.
    Unknown,
}

impl Verdict {
    pub fn exit_code(self) -> u8 {
        match self {
            Verdict::Healthy => 0,
            Verdict::Degraded => 3,
            Verdict::NotBuilt => 4,
            Verdict::Unknown => 5,
        }
    }
}

#[derive(Debug, Serialize)]
pub struct Status {
    pub format: u32,
    pub cluster: String,
    pub verdict: Verdict,
    /// What keeps the cluster from being healthy, one line each.
    pub problems: Vec<String>,
    /// The commands that would fix it (set by the caller, which knows its arguments).
    pub advice: Vec<String>,
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
    /// The Kubernetes Node's Ready condition: `ready`, `not-ready`, `unknown` (the
    /// kubelet stopped reporting), `not-registered`, or `unreachable` (no API answer).
    pub kubernetes: &'static str,
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
    /// The error behind `detail` when `detail` words it for the user (shown at `-v`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cause: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct EtcdStatus {
    /// Member hostnames as the bootstrap node reports them.
    pub members: Vec<String>,
    /// One member per control plane.
    pub expected: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The error behind `error` when `error` words it for the user (shown at `-v`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cause: Option<String>,
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
    let (vms, proxmox_error) = match bounded(inventory::planned_vms(&env.pve, plan)).await {
        Ok(v) => (v, None),
        Err(e) => (Default::default(), Some(e.said)),
    };
    let probes = plan
        .nodes
        .iter()
        .map(|n| talos_stage(env, n, creds.as_ref()));
    let talos = futures_util::future::join_all(probes).await;
    let (etcd, (addons, ready)) =
        tokio::join!(etcd(env, plan, creds.as_ref()), addons(env, plan, dir));
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
                kubelet: ready.as_ref().ok().and_then(|r| r.get(&n.name)?.1.clone()),
                talos,
                kubernetes: match &ready {
                    Err(_) => "unreachable",
                    Ok(r) => r.get(&n.name).map_or("not-registered", |(w, _)| *w),
                },
            }
        })
        .collect();
    Ok(Status::judged(
        plan.cluster.clone(),
        proxmox_error,
        nodes,
        etcd,
        addons,
        steps,
    ))
}

/// One attempt, bounded, its error in words.
async fn bounded<T, E: std::error::Error + 'static>(
    f: impl Future<Output = Result<T, E>>,
) -> Result<T, Failure> {
    match tokio::time::timeout(PROBE, f).await {
        Ok(r) => r.map_err(|e| Failure::of(&e)),
        Err(_) => Err(Failure::no_answer()),
    }
}

/// A probe's error as one line the user can act on, and the error itself when
/// that line rewords it.
#[derive(Debug, PartialEq)]
struct Failure {
    said: String,
    cause: Option<String>,
}

impl Failure {
    fn no_answer() -> Self {
        Failure {
            said: format!("no answer within {}s", PROBE.as_secs()),
            cause: None,
        }
    }

    fn of(e: &(dyn std::error::Error + 'static)) -> Self {
        let full = e.to_string();
        // The lab's address book has no listener for a machine whose VM is gone or
        // stopped: for the user, that machine simply does not answer.
        let mut source = Some(e);
        while let Some(s) = source {
            if let Some(crate::net::NetError::NoMapping(addr)) = s.downcast_ref() {
                return Failure {
                    said: format!("nothing answers at {addr} (its VM is gone or stopped)"),
                    cause: Some(full),
                };
            }
            source = s.source();
        }
        let said = first_line(&full);
        let cause = (said != full).then_some(full);
        Failure { said, cause }
    }
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
    let state = |stage, version, failure: Option<Failure>| {
        let (detail, cause) = failure.map_or((None, None), |f| (Some(f.said), f.cause));
        TalosStatus {
            stage,
            version,
            detail,
            cause,
        }
    };
    let mutual = match creds {
        Some(c) => match bounded(version(TlsMode::Mutual(c.clone()))).await {
            Ok(v) => {
                let tag = v.first().and_then(|v| v.version.as_ref());
                return state("running", tag.map(|i| i.tag.clone()), None);
            }
            Err(e) => e,
        },
        None => Failure {
            said: "no talosconfig in the cluster directory".to_owned(),
            cause: None,
        },
    };
    match tokio::time::timeout(PROBE, version(TlsMode::Maintenance)).await {
        Ok(Ok(_)) => state("maintenance", None, None),
        // Talos 1.12's maintenance service has no Version (talos.md §12: Unimplemented
        // "API is not implemented in maintenance mode"); a configured node refuses TLS.
        Ok(Err(e)) if e.is_maintenance_answer() => state("maintenance", None, None),
        Ok(Err(TalosError::CertificateRejected { .. })) => state("configured", None, Some(mutual)),
        Ok(Err(e)) => state("unreachable", None, Some(Failure::of(&e))),
        Err(_) => state("unreachable", None, Some(Failure::no_answer())),
    }
}

async fn etcd(env: &Env, plan: &Plan, creds: Option<&Credentials>) -> EtcdStatus {
    let Some(creds) = creds else {
        return EtcdStatus {
            members: Vec::new(),
            expected: plan.control_planes().count(),
            error: Some("no talosconfig in the cluster directory".into()),
            cause: None,
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
            expected: plan.control_planes().count(),
            error: None,
            cause: None,
        },
        Err(e) => EtcdStatus {
            members: Vec::new(),
            expected: plan.control_planes().count(),
            error: Some(e.said),
            cause: e.cause,
        },
    }
}

/// Each Node's Ready condition by name, as `NodeStatus::kubernetes` words it.
/// Node name → (Ready condition word, kubelet version), or why the API did not answer.
type NodeReadiness =
    Result<std::collections::BTreeMap<String, (&'static str, Option<String>)>, String>;

fn node_readiness(
    nodes: &[serde_json::Value],
) -> std::collections::BTreeMap<String, (&'static str, Option<String>)> {
    nodes
        .iter()
        .map(|n| {
            let ready = n["status"]["conditions"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|c| c["type"] == "Ready")
                .and_then(|c| c["status"].as_str());
            let word = match ready {
                Some("True") => "ready",
                Some("False") => "not-ready",
                _ => "unknown",
            };
            (
                n["metadata"]["name"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
                (
                    word,
                    n["status"]["nodeInfo"]["kubeletVersion"]
                        .as_str()
                        .map(str::to_owned),
                ),
            )
        })
        .collect()
}

/// The add-ons, and the Nodes' readiness from the same API connection.
async fn addons(env: &Env, plan: &Plan, dir: &ClusterDir) -> (AddonsStatus, NodeReadiness) {
    let not = |detail: String| Readiness {
        ready: false,
        detail,
    };
    let client = match Kubeconfig::load(&dir.kubeconfig()) {
        Ok(kc) => bounded(kube::Client::new(&kc, &env.book))
            .await
            .map_err(|f| f.said),
        Err(e) => Err(first_line(&e.to_string())),
    };
    let client = match client {
        Ok(c) => c,
        Err(e) => {
            let addons = AddonsStatus {
                cilium: not(e.clone()),
                metallb: plan.metallb_pool.as_ref().map(|_| MetalLbStatus {
                    ready: false,
                    pool: false,
                    detail: e.clone(),
                }),
            };
            return (addons, Err(e));
        }
    };
    let nodes = bounded(client.list("/api/v1/nodes"))
        .await
        .map(|n| node_readiness(&n))
        .map_err(|f| f.said);
    let get = |path: String| {
        let c = &client;
        async move { bounded(c.get(&path)).await.map_err(|f| f.said) }
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
            .await
            .map_err(|f| f.said);
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
    (AddonsStatus { cilium, metallb }, nodes)
}

impl Status {
    /// The status of these parts, with its verdict and problems (no advice yet).
    pub fn judged(
        cluster: String,
        proxmox_error: Option<String>,
        nodes: Vec<NodeStatus>,
        etcd: EtcdStatus,
        addons: AddonsStatus,
        steps: Vec<Record>,
    ) -> Self {
        let mut s = Status {
            format: FORMAT,
            cluster,
            verdict: Verdict::Healthy,
            problems: Vec::new(),
            advice: Vec::new(),
            proxmox_error,
            nodes,
            etcd,
            addons,
            steps,
        };
        (s.verdict, s.problems) = s.judge();
        s
    }

    fn judge(&self) -> (Verdict, Vec<String>) {
        if let Some(e) = &self.proxmox_error {
            return (
                Verdict::Unknown,
                vec![format!("Proxmox did not answer: {e}")],
            );
        }
        if self.steps.is_empty() && !self.nodes.iter().any(|n| n.vm.exists) {
            let why = "no VM of this cluster exists and no `talos-pve up` has run in its directory";
            return (Verdict::NotBuilt, vec![why.into()]);
        }
        let mut p = Vec::new();
        for n in &self.nodes {
            let (name, vmid) = (&n.name, n.vmid);
            if !n.vm.exists {
                p.push(format!("{name}: VM {vmid} is gone"));
            } else if !n.vm.running {
                p.push(format!("{name}: VM {vmid} is stopped"));
            } else if n.talos.stage != "running" {
                p.push(format!("{name}: Talos is {}", n.talos.stage));
            } else if n.kubernetes != "ready" {
                p.push(format!("{name}: Kubernetes node is {}", n.kubernetes));
            }
        }
        match &self.etcd.error {
            Some(e) => p.push(format!("etcd: {e}")),
            None if self.etcd.members.len() < self.etcd.expected => p.push(format!(
                "etcd: {} of {} members",
                self.etcd.members.len(),
                self.etcd.expected
            )),
            None => {}
        }
        if !self.addons.cilium.ready {
            p.push(format!("cilium: {}", self.addons.cilium.detail));
        }
        if let Some(m) = &self.addons.metallb
            && !(m.ready && m.pool)
        {
            p.push(format!("metallb: {}", m.detail));
        }
        let verdict = if p.is_empty() {
            Verdict::Healthy
        } else {
            Verdict::Degraded
        };
        (verdict, p)
    }

    /// What to run next; `args` are the command's own (`--profile … --dir … [--lab]`).
    pub fn advise(&mut self, args: &str) {
        let gone: Vec<&NodeStatus> = self.nodes.iter().filter(|n| !n.vm.exists).collect();
        self.advice = match self.verdict {
            Verdict::Healthy => Vec::new(),
            Verdict::NotBuilt => vec![format!("talos-pve up {args}")],
            Verdict::Unknown => vec![format!(
                "check the Proxmox endpoint, token and fingerprint, then `talos-pve status {args}` again"
            )],
            Verdict::Degraded if !gone.is_empty() && gone.len() == self.nodes.len() => vec![
                format!("talos-pve rebuild cluster --from BACKUP {args}   (every VM is gone)"),
                format!("talos-pve up {args}   (if it was never built: starts from scratch)"),
            ],
            Verdict::Degraded if !gone.is_empty() => gone
                .iter()
                .map(|n| format!("talos-pve rebuild node {} {args}", n.name))
                .collect(),
            Verdict::Degraded => vec![format!(
                "talos-pve up {args}   (resumes an unfinished bring-up; a no-op for what is done)"
            )],
        };
    }

    /// The text view: verdict, one line per node, etcd, add-ons, recorded steps and
    /// what to run next; lines longer than `width` (a terminal's) are cut with `…`.
    /// `verbose` adds, under a line, the error it words for the user.
    pub fn render(&self, width: Option<usize>, verbose: bool) -> String {
        let cause = |c: &Option<String>| match c {
            Some(c) if verbose => format!("      ↳ {}\n", c.replace('\n', " ")),
            _ => String::new(),
        };
        let mut o = format!("Cluster {}: {}\n", self.cluster, self.verdict_text());
        for p in &self.problems {
            o += &format!("  ✗ {p}\n");
        }
        o += &format!(
            "\n  {:<14} {:>5}  {:<24} {:<14} {:<22} kubelet\n",
            "node", "VMID", "VM", "Kubernetes", "Talos"
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
                "  {:<14} {:>5}  {:<24} {:<14} {talos:<22} {kubelet}\n",
                n.name, n.vmid, vm, n.kubernetes
            );
            o += &cause(&n.talos.cause);
        }
        o += &match &self.etcd.error {
            None => format!(
                "\n  etcd members: {} ({})\n",
                self.etcd.members.len(),
                self.etcd.members.join(", ")
            ),
            Some(e) => format!("\n  etcd members: unknown ({e})\n") + &cause(&self.etcd.cause),
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
        if !self.advice.is_empty() {
            o += "\nNext:\n";
            for a in &self.advice {
                o += &format!("  {a}\n");
            }
        }
        match width {
            Some(w) => o.lines().map(|l| clip(l, w) + "\n").collect(),
            None => o,
        }
    }

    fn verdict_text(&self) -> String {
        let code = self.verdict.exit_code();
        match self.verdict {
            Verdict::Healthy => "healthy".into(),
            Verdict::Degraded => format!("DEGRADED (exit {code})"),
            Verdict::NotBuilt => format!("not built yet (exit {code})"),
            Verdict::Unknown => format!("UNKNOWN: Proxmox did not answer (exit {code})"),
        }
    }
}

/// `line` cut to `width` characters, the last one `…` when something was cut.
fn clip(line: &str, width: usize) -> String {
    if line.chars().count() <= width {
        return line.to_owned();
    }
    let mut s: String = line.chars().take(width.saturating_sub(1)).collect();
    s.push('…');
    s
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
                cause: None,
            },
            kubelet: host.map(|_| "v1.36.3".into()),
            kubernetes: if stage == "running" {
                "ready"
            } else {
                "unreachable"
            },
        }
    }

    fn parts(nodes: Vec<NodeStatus>, steps: Vec<Record>) -> Status {
        Status::judged(
            "homelab".into(),
            None,
            nodes,
            EtcdStatus {
                members: vec!["cp-1".into()],
                expected: 1,
                error: None,
                cause: None,
            },
            AddonsStatus {
                cilium: Readiness {
                    ready: true,
                    detail: "ready".into(),
                },
                metallb: None,
            },
            steps,
        )
    }

    fn step() -> Record {
        Record {
            step: Step::Bootstrapped,
            at: "2026-01-01T00:00:00Z".into(),
            detail: Some("etcd bootstrapped".into()),
        }
    }

    #[test]
    fn renders_each_part_and_unknowns_as_states() {
        let mut s = Status::judged(
            "homelab".into(),
            None,
            vec![
                node("cp-1", Some("pve-1"), "running"),
                node("cp-2", None, "unreachable"),
            ],
            EtcdStatus {
                members: vec![],
                expected: 2,
                error: Some("no answer within 10s".into()),
                cause: None,
            },
            AddonsStatus {
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
            vec![step()],
        );
        s.advise("--profile p.yaml --lab");
        let text = s.render(None, false);
        assert!(
            text.starts_with("Cluster homelab: DEGRADED (exit 3)"),
            "{text}"
        );
        assert!(text.contains("✗ cp-2: VM 120 is gone"), "{text}");
        assert!(text.contains("running on pve-1"), "{text}");
        assert!(text.contains("running v1.13.9"), "{text}");
        assert!(text.contains("v1.36.3"), "{text}");
        assert!(text.contains("absent"), "{text}");
        assert!(text.contains("unreachable (rebooting)"), "{text}");
        assert!(text.contains("etcd members: unknown (no answer"), "{text}");
        assert!(text.contains("cilium:  ready\n"), "{text}");
        assert!(text.contains("metallb: not ready, pool absent"), "{text}");
        assert!(text.contains("bootstrapped: etcd bootstrapped"), "{text}");
        assert!(
            text.contains("Next:\n  talos-pve rebuild node cp-2 --profile p.yaml --lab"),
            "{text}"
        );
        let json = serde_json::to_value(&s).unwrap();
        assert_eq!(json["format"], FORMAT);
        assert_eq!(json["verdict"], "degraded");
        assert_eq!(json["nodes"][0]["kubernetes"], "ready");
        assert_eq!(json["nodes"][1]["vm"]["exists"], false);
        assert_eq!(json["nodes"][0]["kubelet"], "v1.36.3");
        assert_eq!(json["nodes"][0]["talos"]["version"], "v1.13.9");
        assert!(json.get("proxmox_error").is_none());
    }

    #[test]
    fn verdicts_and_their_exit_codes() {
        let healthy = parts(vec![node("cp-1", Some("pve-1"), "running")], vec![step()]);
        assert_eq!(healthy.verdict, Verdict::Healthy, "{:?}", healthy.problems);
        assert_eq!(healthy.verdict.exit_code(), 0);
        let mut not_ready = node("cp-1", Some("pve-1"), "running");
        not_ready.kubernetes = "not-ready";
        let mut s = parts(vec![not_ready], vec![step()]);
        assert_eq!(s.verdict, Verdict::Degraded);
        s.advise("-p x");
        assert_eq!(s.advice.len(), 1);
        assert!(
            s.advice[0].starts_with("talos-pve up -p x"),
            "{:?}",
            s.advice
        );
        let none = parts(vec![node("cp-1", None, "unreachable")], vec![]);
        assert_eq!(none.verdict, Verdict::NotBuilt);
        assert_eq!(none.verdict.exit_code(), 4);
        let mut unknown = parts(vec![], vec![]);
        unknown.proxmox_error = Some("595".into());
        assert_eq!(unknown.judge().0, Verdict::Unknown);
        assert_eq!(Verdict::Unknown.exit_code(), 5);
    }

    #[test]
    fn long_lines_are_cut_to_the_terminal_width() {
        let mut n = node("cp-1", Some("pve-1"), "unreachable");
        n.talos.detail = Some("x".repeat(300));
        let text = parts(vec![n], vec![step()]).render(Some(80), false);
        assert!(text.lines().all(|l| l.chars().count() <= 80), "{text}");
        assert!(text.contains('…'), "{text}");
    }

    #[test]
    fn a_machine_without_a_listener_does_not_answer_and_the_lab_text_waits_for_v() {
        let addr: std::net::SocketAddr = "10.8.16.21:50000".parse().unwrap();
        let e = TalosError::Address {
            node: "talos-k8s-02".into(),
            addr,
            source: crate::net::NetError::NoMapping(addr),
        };
        let f = Failure::of(&e);
        assert_eq!(
            f.said,
            "nothing answers at 10.8.16.21:50000 (its VM is gone or stopped)"
        );
        assert!(f.cause.as_deref().unwrap().contains("no loopback mapping"));

        let mut n = node("talos-k8s-02", None, "unreachable");
        (n.talos.detail, n.talos.cause) = (Some(f.said), f.cause);
        let st = parts(vec![n], vec![step()]);
        let plain = st.render(None, false);
        assert!(!plain.contains("loopback"), "{plain}");
        assert!(plain.contains("unreachable (nothing answers at"), "{plain}");
        let verbose = st.render(None, true);
        assert!(verbose.contains("↳ node talos-k8s-02"), "{verbose}");
        assert!(verbose.contains("no loopback mapping"), "{verbose}");
    }
}
