//! What the user needs after a bring-up: where things are and what to do next.

use std::fmt::Write;

use serde::Serialize;

use crate::cluster_dir::ClusterDir;
use crate::plan::{GatewayRoute, Plan};
use crate::profile::Profile;

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Summary {
    pub cluster: String,
    pub endpoint: String,
    pub nodes: Vec<SummaryNode>,
    pub metallb_pool: Option<String>,
    pub talosconfig: String,
    pub kubeconfig: String,
    /// Routes the gateway needs before pods are reachable without NAT (empty with masquerading).
    pub gateway_routes: Vec<GatewayRoute>,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SummaryNode {
    pub name: String,
    pub role: String,
    pub vmid: u32,
    pub host: String,
    pub management: String,
    pub workload: String,
    #[serde(rename = "podCIDR")]
    pub pod_cidr: String,
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
                    workload: n.workload.address.to_string(),
                    pod_cidr: n.pod_cidr.to_string(),
                })
                .collect(),
            metallb_pool: plan.metallb_pool.map(|p| p.to_string()),
            talosconfig: dir.talosconfig().display().to_string(),
            kubeconfig: dir.kubeconfig().display().to_string(),
            gateway_routes: if profile.routing.masquerade {
                Vec::new()
            } else {
                plan.gateway_routes.clone()
            },
        }
    }

    pub fn render(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "\nCluster {} is up. API endpoint: {}",
            self.cluster, self.endpoint
        );
        let _ = writeln!(
            s,
            "\n  {:<14} {:<13} {:>5}  {:<13} {:<16} {:<16} pod CIDR",
            "node", "role", "VMID", "host", "management", "workload"
        );
        for n in &self.nodes {
            let _ = writeln!(
                s,
                "  {:<14} {:<13} {:>5}  {:<13} {:<16} {:<16} {}",
                n.name, n.role, n.vmid, n.host, n.management, n.workload, n.pod_cidr
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
        let _ = writeln!(
            s,
            "\nNext:\n  export KUBECONFIG={}\n  kubectl get nodes -o wide\n  talosctl --talosconfig {} health",
            self.kubeconfig, self.talosconfig
        );
        s
    }
}
