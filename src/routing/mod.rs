//! The routing rehearsal: what each node's kernel will do with the packets the seed
//! cares about, before any node exists.
//!
//! Pure. Inputs are what the nodes will really hold: the network documents of the
//! generated machine configs (`talos::config::network_config`), the cloud-init
//! default route (`ipconfig0` carries the management gateway, `proxmox::vm`), and
//! Cilium's native routes. `fib` models the kernel's decision, `node` builds a
//! node's state, `flows` traces requests and replies across nodes, the gateway and
//! hosts. `plan --paths`, `lint` (NET6xx) and `docs` show the result; the
//! namespace test (`tests/it/routing.rs`) replays every decision in a real kernel.

mod fib;
mod flows;
mod node;

use std::net::Ipv4Addr;

use ipnet::Ipv4Net;
use serde::Serialize;
use thiserror::Error;

use crate::plan::Plan;
use crate::profile::{LinkRole, NetworkRole, Profile, vlan_label};
use crate::talos::config::{Contract, network_config};

pub use fib::{
    Decision, Fib, Link, Query, Route, Rule, TABLE_DEFAULT, TABLE_LOCAL, TABLE_MAIN, parse_table,
    table_name,
};
pub use flows::{Expect, FlowKind, FlowPath, Hop, NodeDecision};
pub use node::{CILIUM_HOST, NodeNet, POD_IIF};

use flows::{Segment, Start, World};
use node::{CiliumRoutes, PlatformRoute};

#[derive(Debug, Error)]
pub enum RoutingError {
    #[error(
        "node `{node}`: the network config cannot be read for the routing rehearsal: {what}\n  fix: check the node's LinkConfig/RoutingRuleConfig documents"
    )]
    Config { node: String, what: String },
    #[error(transparent)]
    Contract(#[from] crate::talos::config::ConfigError),
}

/// The rehearsal of one profile: every node's state, every traced flow, and the
/// kernel decisions they rest on.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Rehearsal {
    pub talos_version: String,
    pub masquerade: bool,
    pub flows: Vec<FlowPath>,
    #[serde(skip)]
    pub nodes: Vec<NodeNet>,
    #[serde(skip)]
    pub decisions: Vec<NodeDecision>,
}

impl Rehearsal {
    /// Rehearse the configs talos-pve generates for this profile.
    pub fn of_profile(p: &Profile, plan: &Plan) -> Result<Self, RoutingError> {
        let contract = Contract::from_talos_version(&p.talos.version)?;
        let configs: Vec<String> = plan
            .nodes
            .iter()
            .map(|n| network_config(p, n, contract))
            .collect();
        Self::of_configs(p, plan, &configs)
    }

    /// Rehearse given network configs (one per plan node, in plan order).
    pub fn of_configs(p: &Profile, plan: &Plan, configs: &[String]) -> Result<Self, RoutingError> {
        // Cloud-init gives only the management link a gateway (proxmox::vm, ipconfig0).
        let platform_gw = p.network(NetworkRole::Management).and_then(|n| n.gateway);
        let mut nodes = Vec::new();
        for (n, config) in plan.nodes.iter().zip(configs) {
            let peers = plan
                .nodes
                .iter()
                .filter(|m| m.name != n.name)
                .map(|m| (m.pod_cidr, m.nic(LinkRole::Workload).address.addr()))
                .collect();
            let cilium = CiliumRoutes {
                pod_cidr: n.pod_cidr,
                workload_link: &n.nic(LinkRole::Workload).alias,
                peers,
            };
            let platform = platform_gw.map(|gateway| PlatformRoute {
                link: &n.management.alias,
                gateway,
            });
            nodes.push(NodeNet::build(&n.name, config, platform, &cilium)?);
        }
        let segments: Vec<Segment> = p
            .networks
            .iter()
            .map(|n| Segment {
                name: n.name.clone(),
                vlan: n.vlan,
                subnet: n.subnet,
                gateway: n.gateway.filter(|_| n.routed),
            })
            .collect();
        let gateway_routes: Vec<(Ipv4Net, Ipv4Addr)> = if plan.masquerade {
            Vec::new()
        } else {
            plan.gateway_routes
                .iter()
                .map(|r| (r.destination, r.via))
                .collect()
        };
        // One network: the shared LAN is the cluster's segment, pods talk to it directly.
        let workload = p
            .link_network(LinkRole::Workload)
            .map(|n| n.name.clone())
            .unwrap_or_default();
        let world = World {
            nodes: &nodes,
            segments: &segments,
            gateway_routes: &gateway_routes,
            masquerade: plan.masquerade,
            native_cidr: p
                .addons
                .cilium
                .native_routing_cidr
                .unwrap_or(plan.pod_subnet),
            lb: plan.metallb_pool.as_ref().map(|r| r.first),
            workload: &workload,
        };
        let mut decisions = Vec::new();
        let mut flows = Vec::new();
        for i in 0..nodes.len() {
            flows.extend(node_flows(p, plan, &world, &segments, i, &mut decisions));
        }
        Ok(Self {
            talos_version: p.talos.version.clone(),
            masquerade: plan.masquerade,
            flows,
            nodes,
            decisions,
        })
    }
}

/// A free address in `subnet` to stand for "a client on this VLAN": the highest
/// one that is no gateway, node, host or device address.
fn client_in(subnet: Ipv4Net, used: &[Ipv4Addr]) -> Option<Ipv4Addr> {
    let (first, last) = (
        u32::from(subnet.network()) + 1,
        u32::from(subnet.broadcast()),
    );
    (first..last)
        .rev()
        .map(Ipv4Addr::from)
        .find(|a| !used.contains(a))
}

fn node_flows(
    p: &Profile,
    plan: &Plan,
    world: &World<'_>,
    segments: &[Segment],
    i: usize,
    log: &mut Vec<NodeDecision>,
) -> Vec<FlowPath> {
    let me = &plan.nodes[i];
    let mgmt = me.management.address.addr();
    let mut used: Vec<Ipv4Addr> = plan
        .nodes
        .iter()
        .flat_map(|n| n.nics().map(|nic| nic.address.addr()))
        .chain(p.proxmox.hosts.iter().map(|h| h.address))
        .chain(
            p.proxmox
                .hosts
                .iter()
                .flat_map(|h| h.oob.iter().map(|d| d.address)),
        )
        .chain(
            p.networks
                .iter()
                .flat_map(|n| n.devices.iter().map(|d| d.address)),
        )
        .chain(p.networks.iter().filter_map(|n| n.gateway))
        .collect();
    if let Some(pool) = &plan.metallb_pool {
        used.extend((u32::from(pool.first)..=u32::from(pool.last)).map(Ipv4Addr::from));
    }
    let clients: Vec<(String, Ipv4Addr)> = segments
        .iter()
        .filter(|s| s.gateway.is_some())
        .filter_map(|s| {
            client_in(s.subnet, &used).map(|a| (format!("{} client {a}", vlan_label(s.vlan)), a))
        })
        .chain([(
            "internet client 1.1.1.1".to_owned(),
            Ipv4Addr::new(1, 1, 1, 1),
        )])
        .collect();
    let mut out = Vec::new();
    let mut flow = |kind, label: String, from, dst| {
        out.push(world.flow(i, kind, label, from, dst, log));
    };
    let api = if me.role == crate::profile::Role::Controlplane {
        "Talos/Kubernetes API"
    } else {
        "Talos API"
    };
    for (name, c) in clients.iter().filter(|(n, _)| !n.starts_with("internet")) {
        flow(
            FlowKind::AdminApi,
            format!("{name} → {api} {mgmt}"),
            Start::Host(*c),
            mgmt,
        );
    }
    flow(
        FlowKind::PodInternet,
        "pod → internet 1.1.1.1".into(),
        Start::Pod(i),
        Ipv4Addr::new(1, 1, 1, 1),
    );
    let mgmt_net = p.network(NetworkRole::Management).map(|n| n.subnet);
    let mut protected: Vec<(String, Ipv4Addr)> = p
        .proxmox
        .hosts
        .iter()
        .flat_map(|h| {
            std::iter::once((h.name.clone(), h.address))
                .chain(h.oob.iter().map(|d| (d.name.clone(), d.address)))
        })
        .chain(
            p.networks
                .iter()
                .flat_map(|n| n.devices.iter().map(|d| (d.name.clone(), d.address))),
        )
        .filter(|(_, a)| mgmt_net.is_some_and(|m| m.contains(a)))
        .collect();
    protected.extend(plan.nodes.iter().map(|m| {
        let whose = if m.name == me.name {
            "own node".to_owned()
        } else {
            m.name.clone()
        };
        (format!("{whose} API"), m.management.address.addr())
    }));
    for (name, a) in protected {
        flow(
            FlowKind::PodManagement,
            format!("pod → {name} {a}"),
            Start::Pod(i),
            a,
        );
    }
    if let Some(lb) = world.lb {
        for (name, c) in &clients {
            flow(
                FlowKind::LbReply,
                format!("{name} → LoadBalancer {lb}"),
                Start::Host(*c),
                lb,
            );
        }
    }
    for (j, m) in plan.nodes.iter().enumerate().filter(|(j, _)| *j != i) {
        flow(
            FlowKind::NodeNode,
            format!(
                "management {mgmt} → {} {}",
                m.name,
                m.management.address.addr()
            ),
            Start::Node(i, mgmt),
            m.management.address.addr(),
        );
        // One network: the management flow above is the workload flow too.
        if let (Some(mine), Some(theirs)) = (&me.workload, &m.workload) {
            let work = mine.address.addr();
            flow(
                FlowKind::NodeNode,
                format!("workload {work} → {} {}", m.name, theirs.address.addr()),
                Start::Node(i, work),
                theirs.address.addr(),
            );
        }
        flow(
            FlowKind::NodeNode,
            format!("pod → pod on {} {}", m.name, world.pod_ip(j)),
            Start::Pod(i),
            world.pod_ip(j),
        );
        flow(
            FlowKind::NodeNode,
            format!(
                "host network (e.g. API server → webhook) → pod on {} {}",
                m.name,
                world.pod_ip(j)
            ),
            Start::NodeAuto(i),
            world.pod_ip(j),
        );
    }
    let work = me.nic(LinkRole::Workload).address.addr();
    flow(
        FlowKind::NodeNode,
        format!("pod → own node workload address {work} (kubelet)"),
        Start::Pod(i),
        work,
    );
    out
}

/// `a ─[VLAN, table]→ b …`, or `local` for a flow that never leaves the node.
fn path_text(hops: &[Hop]) -> String {
    let Some(first) = hops.first() else {
        return "local".into();
    };
    let mut t = first.from.clone();
    for h in hops {
        let table = h
            .table
            .as_ref()
            .map(|t| format!(", table {t}"))
            .unwrap_or_default();
        t.push_str(&format!(" ─[{}{table}]→ {}", h.segment, h.to));
    }
    t
}

fn header(r: &Rehearsal) -> String {
    format!(
        "Routing rehearsal (Talos {}, pods {}): machine-config routes and rules, the cloud-init\ndefault route and Cilium's native routes, traced through each node's kernel model and the gateway.\n",
        r.talos_version,
        if r.masquerade {
            "masqueraded"
        } else {
            "routed, not masqueraded"
        }
    )
}

/// The flow table, grouped by node: `heading` opens a node, `row` prints a flow
/// (label, request, reply, verdict).
fn render(
    r: &Rehearsal,
    heading: impl Fn(&str) -> String,
    row: impl Fn([&str; 4]) -> String,
) -> String {
    let mut s = header(r);
    let mut node = "";
    for f in &r.flows {
        if f.node != node {
            node = &f.node;
            s.push_str(&heading(node));
        }
        let (req, rep, verdict) = (path_text(&f.request), path_text(&f.reply), f.verdict());
        s.push_str(&row([&f.label, &req, &rep, &verdict]));
    }
    s
}

/// The flow table as text: per node, each flow with its request and reply path.
pub fn render_text(r: &Rehearsal) -> String {
    render(
        r,
        |node| format!("\n{node}\n"),
        |[label, req, rep, verdict]| {
            format!("  {label}\n    request: {req}\n    reply:   {rep}\n    verdict: {verdict}\n")
        },
    )
}

/// The flow table as Markdown (`talos-pve docs`): one table per node.
pub fn render_markdown(r: &Rehearsal) -> String {
    render(
        r,
        |node| {
            format!("\n#### {node}\n\n| flow | request | reply | verdict |\n|---|---|---|---|\n")
        },
        |[label, req, rep, verdict]| format!("| {label} | {req} | {rep} | {verdict} |\n"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::homelab;

    fn rehearse(p: &Profile) -> Rehearsal {
        Rehearsal::of_profile(p, &Plan::build(p).unwrap()).unwrap()
    }

    fn find<'a>(r: &'a Rehearsal, node: &str, label: &str) -> &'a FlowPath {
        r.flows
            .iter()
            .find(|f| f.node == node && f.label.contains(label))
            .unwrap_or_else(|| panic!("no flow {label} on {node}"))
    }

    #[test]
    fn homelab_crosses_the_gateway_between_vlan16_and_the_cluster_and_stays_on_link_inside() {
        let r = rehearse(&homelab());
        for f in &r.flows {
            assert!(f.unreachable.is_none(), "{}: {}", f.label, f.verdict());
            assert!(f.symmetric, "{} {}: {}", f.node, f.label, f.verdict());
            assert!(
                !f.bypasses_gateway() && !f.detours(),
                "{} {}: {}",
                f.node,
                f.label,
                f.verdict()
            );
        }
        let f = find(&r, "talos-k8s-01", "pod → pve-ms01-01 ");
        assert_eq!(f.request[0].table.as_deref(), Some("101"), "{f:?}");
        assert!(f.request_via_gateway && f.reply_via_gateway);
        let f = find(&r, "talos-k8s-01", "management 10.8.16.20 → talos-k8s-02");
        assert!(!f.request_via_gateway && !f.reply_via_gateway, "{f:?}");
        let f = find(
            &r,
            "talos-k8s-02",
            "VLAN 16 client 10.8.16.254 → LoadBalancer",
        );
        assert!(f.request_via_gateway && f.reply_via_gateway, "{f:?}");
    }

    #[test]
    fn talos_1_12_breaks_management_isolation_and_symmetry() {
        let mut p = homelab();
        p.talos.version = "v1.12.11".into();
        let r = rehearse(&p);
        let f = find(&r, "talos-k8s-01", "pod → pve-ms01-01 ");
        assert!(f.bypasses_gateway() && f.asymmetric(), "{f:?}");
        let f = find(&r, "talos-k8s-01", "VLAN 1 client");
        assert!(f.asymmetric(), "{}", f.verdict());
    }

    #[test]
    fn masquerade_keeps_pod_egress_symmetric() {
        let mut p = homelab();
        p.routing.masquerade = true;
        let r = rehearse(&p);
        let f = find(&r, "talos-k8s-03", "pod → internet");
        assert!(f.symmetric && f.unreachable.is_none(), "{}", f.verdict());
        assert_eq!(f.reply.last().unwrap().to, "talos-k8s-03");
        assert!(render_text(&r).contains("pods masqueraded"));
    }

    #[test]
    fn clients_avoid_used_addresses() {
        let n: Ipv4Net = "10.8.16.0/24".parse().unwrap();
        assert_eq!(
            client_in(n, &["10.8.16.254".parse().unwrap()]),
            Some("10.8.16.253".parse().unwrap())
        );
    }
}
