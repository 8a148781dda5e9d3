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
/// each node's workload address leads to its routed pod CIDR. Left to right, so the
/// networks stack vertically with their members in a column: top to bottom put every
/// unlinked member of every network into one very wide row.
pub fn logical(p: &Profile, plan: &Plan) -> String {
    let mut g = Graph::new("LR");
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

/// The cabling: switches under the gateway as `switches` describes them, each host's
/// uplink (a trunk carrying the VLANs) and storage bond at its switch. Switches and
/// links the profile does not describe hang off the gateway with dotted lines.
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
    // Ids carry the switch's index: names reduced to id characters could collide.
    let mut switches: Vec<&crate::profile::Device> = Vec::new();
    for d in p.networks.iter().flat_map(|n| &n.devices) {
        if d.kind.as_deref() == Some("switch") && !switches.iter().any(|s| s.name == d.name) {
            switches.push(d);
        }
    }
    let switch_id = |name: &str| {
        let k = switches
            .iter()
            .position(|s| s.name == name)
            .unwrap_or(usize::MAX);
        id("sw", &format!("{k}_{name}"))
    };
    for d in &switches {
        let sw = switch_id(&d.name);
        g.node(&sw, &[&d.name, &d.address.to_string()]);
        match p.switches.iter().find(|s| s.name == d.name) {
            Some(s) => {
                let up = s.uplink.as_deref().map_or("router".into(), switch_id);
                g.edge(&up, "-->", &sw, None);
            }
            None => g.edge("router", "-.-", &sw, Some("cabling not described")),
        }
        g.style(&sw, "#fff4e1");
    }
    let cabled = |host: &str, storage: bool| {
        p.switches
            .iter()
            .find(|s| {
                if storage { &s.storage } else { &s.hosts }
                    .iter()
                    .any(|h| h == host)
            })
            .map(|s| switch_id(&s.name))
    };
    let storage = p.network(NetworkRole::Storage);
    let storage_label = storage.map(|s| format!("Storage {}, MTU {}", s.vlan_label(), s.mtu));
    let mut storage_vlan = false;
    for (hi, h) in p.proxmox.hosts.iter().enumerate() {
        let (host, stor) = (host_id(hi, h), stor_id(hi, h));
        let uplink = h.uplink.as_deref().unwrap_or("uplink");
        g.node(&host, &[&h.name, uplink, &h.address.to_string()]);
        let from = cabled(&h.name, false).unwrap_or_else(|| "router".into());
        g.edge(&from, "-->", &host, Some(&trunk));
        if let Some(link) = &h.storage {
            let members = link.members.join(" + ");
            let head = format!("{} {}", h.name, link.interface);
            g.node(&stor, &[&head, &members, &link.address.to_string()]);
            g.edge(&host, "-.-", &stor, Some("same host"));
            match (cabled(&h.name, true), storage) {
                (Some(sw), _) => g.edge(&sw, "-->", &stor, storage_label.as_deref()),
                (None, Some(s)) => {
                    storage_vlan = true;
                    g.edge(&stor, "-->", &vlan_id(s.vlan), None);
                }
                (None, None) => {}
            }
        }
    }
    if let (true, Some(s)) = (storage_vlan, storage) {
        let head = format!("Storage {}", s.vlan_label());
        g.node(
            &vlan_id(s.vlan),
            &[&head, &s.subnet.to_string(), &format!("MTU {}", s.mtu)],
        );
    }
    g.style("router", "#e1f5ff");
    g.fenced()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The seed's layout: hosts at the server switch, bonds at the storage switch,
    /// both switches under the main one, the main one under the gateway.
    #[test]
    fn the_physical_view_draws_the_cabling() {
        let p = crate::test_support::homelab();
        let d = physical(&p);
        let main = "sw_3_Enterprise_24_PoE_Main";
        assert!(d.contains(&format!("router --> {main}\n")), "{d}");
        assert!(
            d.contains(&format!("{main} --> sw_2_USW_Enterprise_8_PoE_Server\n")),
            "{d}"
        );
        assert!(
            d.contains("sw_2_USW_Enterprise_8_PoE_Server -->|VLANs 1, 16, 28| host_2_pve_aimax_01"),
            "{d}"
        );
        assert!(
            d.contains(
                "sw_1_MikroTik_CRS309_K8s_Storage -->|Storage VLAN 48, MTU 9000| stor_0_pve_ms01_01"
            ),
            "{d}"
        );
        assert!(
            !d.contains("router --> host_"),
            "no host straight from the router:\n{d}"
        );
        // A switch whose cabling the profile does not give is still connected, dotted.
        assert!(
            d.contains("router -.-|cabling not described| sw_0_USW_Flex_2_5G_K8s_Main"),
            "{d}"
        );
    }

    #[test]
    fn without_cabling_hosts_and_bonds_hang_off_the_gateway_and_the_storage_vlan() {
        let mut p = crate::test_support::homelab();
        p.switches.clear();
        let d = physical(&p);
        assert!(
            d.contains("router -->|VLANs 1, 16, 28| host_0_pve_ms01_01"),
            "{d}"
        );
        assert!(d.contains("stor_0_pve_ms01_01 --> vlan_48"), "{d}");
        assert!(d.contains("vlan_48[\"Storage VLAN 48"), "{d}");
    }

    /// Top to bottom, every unlinked member of every network shared one row.
    #[test]
    fn the_logical_view_stacks_the_networks() {
        let p = crate::test_support::homelab();
        let plan = Plan::build(&p).unwrap();
        assert!(logical(&p, &plan).starts_with("```mermaid\ngraph LR\n"));
    }
}
