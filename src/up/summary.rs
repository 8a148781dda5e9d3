//! What the user needs after a bring-up: where things are and what to do next.

use std::fmt::Write;

use serde::Serialize;

use crate::cluster_dir::ClusterDir;
use crate::plan::{GatewayRoute, Plan};
use crate::profile::{LinkRole, Profile, Role};

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Summary {
    pub cluster: String,
    pub endpoint: String,
    pub nodes: Vec<SummaryNode>,
    pub metallb_pool: Option<String>,
    pub talosconfig: String,
    pub kubeconfig: String,
    /// A `talosctl health` that works on this cluster (see `health_command`).
    pub health: String,
    /// Where the nodes must connect to (the gateway must allow it).
    pub egress: Vec<crate::egress::Need>,
    /// Routes the gateway needs before pods are reachable without NAT (empty with masquerading).
    pub gateway_routes: Vec<GatewayRoute>,
    /// Routes of nodes this run removed, to delete from the gateway.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub removed_routes: Vec<String>,
    /// Set when the run was against the lab: how to reach the simulated cluster.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lab: Option<LabHints>,
}

/// The commands that reach a lab cluster after the run that built it (its
/// addresses exist only inside the lab, which stops with the command).
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct LabHints {
    /// Keeps the lab running and prints `export KUBECONFIG=…` for kubectl.
    pub serve: String,
    pub status: String,
    /// Add to a `--lab` run to dump VMs, machine configs and Kubernetes objects.
    pub report: String,
}

/// `word` as one shell word (quoted when it holds anything but safe characters).
fn shell_word(word: &str) -> String {
    let safe = |c: char| c.is_ascii_alphanumeric() || "-_./=:@+,".contains(c);
    if !word.is_empty() && word.chars().all(safe) {
        word.to_owned()
    } else {
        format!("'{}'", word.replace('\'', "'\\''"))
    }
}

/// `--profile FILE --dir DIR`, as shell words: how advice names the cluster again.
pub fn cluster_args(profile: &std::path::Path, dir: &ClusterDir) -> String {
    format!(
        "--profile {} --dir {}",
        shell_word(&profile.display().to_string()),
        shell_word(&dir.root.display().to_string())
    )
}

impl LabHints {
    /// The "Next" block of every command that acted on the lab.
    pub fn render(&self) -> String {
        format!(
            "\nNext, to poke the lab cluster:\n  {}\n      keeps it running and prints `export KUBECONFIG=…` for kubectl (Ctrl-C stops it)\n  {}\n  {}\n      dumps VMs, machine configs and Kubernetes objects as files\n",
            self.serve, self.status, self.report
        )
    }

    pub fn new(profile: &std::path::Path, dir: &ClusterDir) -> Self {
        let args = cluster_args(profile, dir);
        Self {
            serve: format!("talos-pve lab serve {args}"),
            status: format!("talos-pve status {args} --lab"),
            report: format!("talos-pve up {args} --lab --yes --lab-report DIR"),
        }
    }
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SummaryNode {
    pub name: String,
    pub role: String,
    pub vmid: u32,
    pub host: String,
    pub management: String,
    /// Absent in a one-network cluster, where `management` carries both roles.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub workload: Option<String>,
    #[serde(rename = "podCIDR")]
    pub pod_cidr: String,
}

/// `talosctl health` for this cluster. The talosconfig lists every node, and the
/// server-side check refuses more than one target (talos v1.13.9
/// `cmd/talosctl/cmd/talos/health.go`: `FailIfMultiNodes`), so it names one control
/// plane. The node lists are given explicitly rather than read from discovery
/// members (absent when discovery is off); the checks match them against each
/// Kubernetes Node's InternalIP, which is the workload address (`nodeIP.validSubnets`).
pub fn health_command(plan: &Plan, talosconfig: &str) -> String {
    let list = |role: Role| {
        plan.nodes
            .iter()
            .filter(|n| n.role == role)
            .map(|n| n.nic(LinkRole::Workload).address.addr().to_string())
            .collect::<Vec<_>>()
            .join(",")
    };
    let target = plan
        .node(&plan.bootstrap_node)
        .or_else(|| plan.control_planes().next())
        .map_or_else(String::new, |n| n.management.address.addr().to_string());
    let mut cmd = format!(
        "talosctl --talosconfig {} --nodes {target} health --control-plane-nodes {}",
        shell_word(talosconfig),
        list(Role::Controlplane)
    );
    let workers = list(Role::Worker);
    if !workers.is_empty() {
        let _ = write!(cmd, " --worker-nodes {workers}");
    }
    cmd
}

impl Summary {
    pub fn new(profile: &Profile, plan: &Plan, dir: &ClusterDir) -> Self {
        Self {
            cluster: plan.cluster.clone(),
            endpoint: plan.endpoint.clone(),
            nodes: plan
                .nodes
                .iter()
                .map(|n| SummaryNode {
                    name: n.name.clone(),
                    role: n.role.as_str().into(),
                    vmid: n.vmid,
                    host: n.host.clone(),
                    management: n.management.address.to_string(),
                    workload: n.workload.as_ref().map(|w| w.address.to_string()),
                    pod_cidr: n.pod_cidr.to_string(),
                })
                .collect(),
            metallb_pool: plan.metallb_pool.map(|p| p.to_string()),
            talosconfig: dir.talosconfig().display().to_string(),
            kubeconfig: dir.kubeconfig().display().to_string(),
            health: health_command(plan, &dir.talosconfig().display().to_string()),
            egress: crate::egress::needs(profile),
            gateway_routes: if profile.routing.masquerade {
                Vec::new()
            } else {
                plan.gateway_routes.clone()
            },
            removed_routes: Vec::new(),
            lab: None,
        }
    }

    pub fn render(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "\nCluster {} is up. API endpoint: {}",
            self.cluster, self.endpoint
        );
        if self.lab.is_some() {
            let _ = writeln!(
                s,
                "This was the lab: a simulated datacenter on loopback. Its addresses exist only\ninside it, and it stopped with this command (its state is kept for the next one)."
            );
        }
        // A one-network cluster has no workload column: it would repeat `management`.
        let two_networks = self.nodes.iter().any(|n| n.workload.is_some());
        let workload = |w: &str| {
            if two_networks {
                format!("{w:<16} ")
            } else {
                String::new()
            }
        };
        let _ = writeln!(
            s,
            "\n  {:<14} {:<13} {:>5}  {:<13} {:<16} {}pod CIDR",
            "node",
            "role",
            "VMID",
            "host",
            "management",
            workload("workload")
        );
        for n in &self.nodes {
            let _ = writeln!(
                s,
                "  {:<14} {:<13} {:>5}  {:<13} {:<16} {}{}",
                n.name,
                n.role,
                n.vmid,
                n.host,
                n.management,
                workload(n.workload.as_deref().unwrap_or_default()),
                n.pod_cidr
            );
        }
        if let Some(p) = &self.metallb_pool {
            let _ = writeln!(s, "\n  MetalLB pool: {p}");
        }
        let _ = writeln!(
            s,
            "\n  talosconfig: {}\n  kubeconfig:  {}",
            self.talosconfig, self.kubeconfig
        );
        if !self.gateway_routes.is_empty() {
            let _ = writeln!(
                s,
                "\nAdd these static routes on the gateway so pods are reachable without NAT:"
            );
            for r in &self.gateway_routes {
                let _ = writeln!(s, "  {} via {}   ({})", r.destination, r.via, r.node);
            }
        }
        if !self.removed_routes.is_empty() {
            let _ = writeln!(
                s,
                "\nDelete these static routes from the gateway (their nodes were removed):"
            );
            for r in &self.removed_routes {
                let _ = writeln!(s, "  {r}");
            }
        }
        if self.lab.is_none() {
            let _ = write!(
                s,
                "\nThe nodes reach out to these (keep them allowed on the gateway):\n{}",
                crate::egress::lines(&self.egress, "  ")
            );
        }
        match &self.lab {
            Some(l) => s.push_str(&l.render()),
            None => {
                let _ = writeln!(
                    s,
                    "\nNext:\n  export KUBECONFIG={}\n  kubectl get nodes -o wide\n  {}",
                    self.kubeconfig, self.health
                );
            }
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lab_summary_says_so_and_how_to_poke_it() {
        let profile = crate::test_support::homelab();
        let plan = Plan::build(&profile).unwrap();
        let dir = ClusterDir {
            root: "/tmp/my lab".into(),
        };
        let mut s = Summary::new(&profile, &plan, &dir);
        assert!(!s.render().contains("This was the lab"), "{}", s.render());
        s.lab = Some(LabHints::new(
            std::path::Path::new("profiles/homelab.yaml"),
            &dir,
        ));
        let text = s.render();
        assert!(text.contains("This was the lab"), "{text}");
        assert!(
            text.contains(
                "talos-pve lab serve --profile profiles/homelab.yaml --dir '/tmp/my lab'"
            ),
            "{text}"
        );
        assert!(text.contains("status --profile"), "{text}");
        assert!(text.contains("--lab-report DIR"), "{text}");
        assert!(!text.contains("export KUBECONFIG=/"), "{text}");
    }

    #[test]
    fn a_one_network_summary_has_no_workload_column() {
        let dir = ClusterDir {
            root: "/tmp/c".into(),
        };
        let flat = crate::test_support::one_network();
        let s = Summary::new(&flat, &Plan::build(&flat).unwrap(), &dir);
        let text = s.render();
        let header = text.lines().find(|l| l.contains("management")).unwrap();
        assert!(!header.contains("workload"), "{text}");
        let json = serde_json::to_value(&s).unwrap();
        assert!(json["nodes"][0].get("workload").is_none(), "{json}");
        assert!(json["nodes"][0]["management"].is_string(), "{json}");

        let two = crate::test_support::homelab();
        let s = Summary::new(&two, &Plan::build(&two).unwrap(), &dir);
        assert!(s.render().contains(" workload "), "{}", s.render());
        let json = serde_json::to_value(&s).unwrap();
        assert!(json["nodes"][0]["workload"].is_string(), "{json}");
    }

    #[test]
    fn the_health_command_targets_one_node_and_lists_the_cluster() {
        let profile = crate::test_support::homelab();
        let plan = Plan::build(&profile).unwrap();
        let dir = ClusterDir {
            root: "/tmp/c".into(),
        };
        let text = Summary::new(&profile, &plan, &dir).render();
        let line = text
            .lines()
            .find(|l| l.contains("talosctl"))
            .unwrap()
            .trim();
        let words: Vec<&str> = line.split(' ').collect();
        // `health` refuses several targets: exactly one `--nodes` with one address.
        let at = words.iter().position(|w| *w == "--nodes").unwrap();
        assert!(
            words[at + 1].parse::<std::net::Ipv4Addr>().is_ok(),
            "{line}"
        );
        assert_eq!(words.iter().filter(|w| w.starts_with("--nodes")).count(), 1);
        let cps = words[words
            .iter()
            .position(|w| *w == "--control-plane-nodes")
            .unwrap()
            + 1];
        let want: Vec<String> = plan
            .control_planes()
            .map(|n| n.nic(LinkRole::Workload).address.addr().to_string())
            .collect();
        assert_eq!(cps, want.join(","), "{line}");
        // What the nodes reach out to is listed too.
        assert!(
            text.contains("The nodes reach out to these") && text.contains("discovery.talos.dev"),
            "{text}"
        );
    }
}
