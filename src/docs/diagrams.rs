//! The three Mermaid diagrams: logical VLAN view, per-node NICs, physical uplinks.

use crate::plan::Plan;
use crate::profile::{Host, LinkRole, NetworkRole, Profile};

use super::mermaid::{Graph, id};
use super::tables::role_name;

/// Host ids carry the host's index: names are not validated and could collide once
/// reduced to id characters.
fn host_id(i: usize, h: &Host) -> String {
    id("host", &format!("{i}_{}", h.name))
}

fn stor_id(i: usize, h: &Host) -> String {
    id("stor", &format!("{i}_{}", h.name))
}

fn vlan_id(vlan: Option<u16>) -> String {
    id("vlan", &vlan_key(vlan))
}

/// Diagram key of a network: its tag, or `untagged` (lint allows one untagged network).
fn vlan_key(vlan: Option<u16>) -> String {
    vlan.map_or_else(|| "untagged".into(), |v| v.to_string())
}

/// Each VLAN as a subgraph with what lives on it; the router joins the routed ones;
/// each node's workload address leads to its routed pod CIDR.
pub fn logical(p: &Profile, plan: &Plan) -> String {
    let mut g = Graph::new("TB");
    g.node("router", &["Gateway / router"]);
    for net in &p.networks {
        let title = format!("{} - {} ({})", net.vlan_label(), net.name, net.subnet);
        let sub = id("net", &vlan_key(net.vlan));
        let inside = |a: &std::net::Ipv4Addr| net.subnet.contains(a);
        g.subgraph(&sub, &title, |g| {
            if let Some(gw) = net.gateway {
                g.node(
                    &id("gw", &vlan_key(net.vlan)),
                    &["Gateway", &gw.to_string()],
                );
            }
            for (hi, h) in p.proxmox.hosts.iter().enumerate() {
                if inside(&h.address) {
                    g.node(&host_id(hi, h), &[&h.name, &h.address.to_string()]);
                }
                if let Some(s) = h.storage.as_ref().filter(|s| inside(&s.address)) {
                    let label = format!("{} {}", h.name, s.interface);
                    g.node(&stor_id(hi, h), &[&label, &s.address.to_string()]);
                }
                for (j, d) in h.oob.iter().enumerate().filter(|(_, d)| inside(&d.address)) {
                    g.node(
                        &id("oob", &format!("{hi}_{j}_{}", d.name)),
                        &[&d.name, &d.address.to_string()],
                    );
                }
            }
            for (j, d) in net.devices.iter().enumerate() {
                g.node(
                    &id("dev", &format!("{}_{j}_{}", vlan_key(net.vlan), d.name)),
                    &[&d.name, &d.address.to_string()],
                );
            }
            for n in &plan.nodes {
                for (nic, tag) in n.nics().zip(["m", "w"]) {
                    if inside(&nic.address.addr()) {
                        let a = nic.address.addr().to_string();
                        g.node(
                            &id(&format!("node{tag}"), &n.name),
                            &[&n.name, &nic.guest_name, &a],
                        );
                    }
                }
            }
            if let Some(pool) = plan.metallb_pool.filter(|pool| pool.within(&net.subnet)) {
                g.node("lbpool", &["MetalLB pool", &pool.to_string()]);
            }
        });
    }
    if !plan.gateway_routes.is_empty() {
        let title = format!("Routed pod block {}", plan.pod_subnet);
        g.subgraph("pods", &title, |g| {
            for r in &plan.gateway_routes {
                g.node(
                    &id("pod", &r.node),
                    &[&format!("{} pods", r.node), &r.destination.to_string()],
                );
            }
        });
    }
    for net in p
        .networks
        .iter()
        .filter(|n| n.routed && n.gateway.is_some())
    {
        g.edge("router", "---", &id("gw", &vlan_key(net.vlan)), None);
    }
    let work = p.network(NetworkRole::Workload).map(|n| n.subnet);
    for n in &plan.nodes {
        if work.is_some_and(|w| w.contains(&n.nic(LinkRole::Workload).address.addr())) {
            g.edge(
                &id("nodew", &n.name),
                "-.->",
                &id("pod", &n.name),
                Some("routes"),
            );
        }
    }
    g.style("router", "#e1f5ff");
    g.fenced()
}

/// Per Proxmox host its VMs, each VM's two NICs, and the VLAN each NIC is tagged into.
pub fn node_nics(p: &Profile, plan: &Plan) -> String {
    let mut g = Graph::new("LR");
    for (hi, h) in p.proxmox.hosts.iter().enumerate() {
        let vms: Vec<_> = plan.nodes.iter().filter(|n| n.host == h.name).collect();
        if vms.is_empty() {
            continue;
        }
        g.subgraph(
            &host_id(hi, h),
            &format!("{} (Proxmox host)", h.name),
            |g| {
                for n in &vms {
                    let title = format!("{} (VMID {})", n.name, n.vmid);
                    g.subgraph(&id("vm", &n.name), &title, |g| {
                        for nic in n.nics() {
                            let head = format!("{} / net{}", nic.guest_name, nic.index);
                            let addr = nic.address.to_string();
                            g.node(
                                &id(&format!("nic{}", nic.index), &n.name),
                                &[&head, &nic.mac, &addr],
                            );
                        }
                    });
                }
            },
        );
    }
    for net in p
        .networks
        .iter()
        .filter(|n| matches!(n.role, NetworkRole::Management | NetworkRole::Workload))
    {
        let head = net.vlan_label();
        g.node(
            &vlan_id(net.vlan),
            &[&head, role_name(net.role), &net.subnet.to_string()],
        );
    }
    for n in &plan.nodes {
        for nic in n.nics() {
            g.edge(
                &id(&format!("nic{}", nic.index), &n.name),
                "-->",
                &vlan_id(nic.vlan),
                None,
            );
        }
    }
    g.fenced()
}

/// Hosts' uplinks (trunks carrying the routed VLANs) and storage links.
pub fn physical(p: &Profile) -> String {
    let mut g = Graph::new("TB");
    g.node("router", &["Gateway / router"]);
    let trunk: Vec<String> = p
        .networks
        .iter()
        .filter(|n| n.role != NetworkRole::Storage)
        .filter_map(|n| n.vlan.map(|v| v.to_string()))
        .collect();
    let trunk = if trunk.is_empty() {
        "untagged".to_string()
    } else {
        format!("VLANs {}", trunk.join(", "))
    };
    let switches: Vec<_> = p
        .networks
        .iter()
        .flat_map(|n| {
            n.devices
                .iter()
                .enumerate()
                .map(move |(j, d)| (vlan_key(n.vlan), j, d))
        })
        .filter(|(_, _, d)| d.kind.as_deref() == Some("switch"))
        .collect();
    if !switches.is_empty() {
        g.subgraph("switches", "Switches", |g| {
            for (vlan, j, d) in &switches {
                g.node(
                    &id("dev", &format!("{vlan}_{j}_{}", d.name)),
                    &[&d.name, &d.address.to_string()],
                );
            }
        });
        g.edge("router", "---", "switches", None);
    }
    let storage = p.network(NetworkRole::Storage);
    if let Some(s) = storage {
        let head = format!("Storage {}", s.vlan_label());
        g.node(
            &vlan_id(s.vlan),
            &[&head, &s.subnet.to_string(), &format!("MTU {}", s.mtu)],
        );
    }
    for (hi, h) in p.proxmox.hosts.iter().enumerate() {
        let (host, stor) = (host_id(hi, h), stor_id(hi, h));
        let uplink = h.uplink.as_deref().unwrap_or("uplink");
        g.node(&host, &[&h.name, uplink, &h.address.to_string()]);
        g.edge("router", "-->", &host, Some(&trunk));
        if let Some(link) = &h.storage {
            let members = link.members.join(" + ");
            let head = format!("{} {}", h.name, link.interface);
            g.node(&stor, &[&head, &members, &link.address.to_string()]);
            g.edge(&host, "-.-", &stor, Some("same host"));
            if let Some(s) = storage {
                g.edge(&stor, "-->", &vlan_id(s.vlan), None);
            }
        }
    }
    g.style("router", "#e1f5ff");
    g.fenced()
}
