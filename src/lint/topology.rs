//! NET3xx: the shape of the profile: network roles, VLANs, subnets, MTUs, node
//! names, VMIDs and host references.

use std::collections::HashMap;

use super::facts::{Facts, is_network_or_broadcast, net_label};
use super::pods::overlaps;
use super::{Finding, Rule, Severity};
use crate::formats::is_dns_label;
use crate::profile::NetworkRole;

pub const NETWORK_ROLES: Rule = Rule::new(
    "NET301",
    Severity::Error,
    "not exactly one management network, or more than one workload network",
);
pub const MISSING_GATEWAY: Rule = Rule::new(
    "NET302",
    Severity::Error,
    "management or workload network without a gateway",
);
pub const VLAN_RANGE: Rule = Rule::new("NET303", Severity::Error, "VLAN ID outside 1..4094");
pub const VLAN_DUPLICATE: Rule = Rule::new("NET304", Severity::Error, "VLAN ID used twice");
pub const SUBNET_OVERLAP: Rule = Rule::new("NET305", Severity::Error, "network subnets overlap");
pub const MTU_RANGE: Rule = Rule::new("NET306", Severity::Error, "MTU outside 576..9216");
pub const MTU_ABOVE_UPLINK: Rule = Rule::new(
    "NET307",
    Severity::Warning,
    "management/workload MTU above the uplink's",
);
pub const NODE_NAME: Rule = Rule::new("NET308", Severity::Error, "node name is not a DNS label");
pub const NODE_NAME_DUPLICATE: Rule = Rule::new("NET309", Severity::Error, "node name used twice");
pub const VMID_RANGE: Rule = Rule::new("NET310", Severity::Error, "VMID outside 100..999999999");
pub const VMID_DUPLICATE: Rule = Rule::new("NET311", Severity::Error, "VMID used twice");
pub const UNKNOWN_HOST: Rule = Rule::new(
    "NET312",
    Severity::Error,
    "node's Proxmox host is not in proxmox.hosts",
);
pub const GATEWAY_PLACEMENT: Rule = Rule::new(
    "NET313",
    Severity::Error,
    "gateway outside its subnet, or its network/broadcast address",
);
pub const HOST_DUPLICATE: Rule =
    Rule::new("NET315", Severity::Error, "Proxmox host name used twice");
pub const NODE_LINKS: Rule = Rule::new(
    "NET316",
    Severity::Error,
    "node has a workload link without a workload network, or lacks one with it",
);
pub const NO_NODES: Rule = Rule::new("NET314", Severity::Error, "the profile has no nodes");

const MTU_MIN: u32 = 576;
const MTU_MAX: u32 = 9216;
const VMID_MIN: u32 = 100;
const VMID_MAX: u32 = 999_999_999;
/// Proxmox's bridge MTU when nothing else is known.
const DEFAULT_UPLINK_MTU: u32 = 1500;

pub fn check(f: &Facts, out: &mut Vec<Finding>) {
    network_roles(f, out);
    node_links(f, out);
    missing_gateway(f, out);
    gateway_placement(f, out);
    vlans(f, out);
    subnet_overlap(f, out);
    mtu_range(f, out);
    mtu_above_uplink(f, out);
    node_names(f, out);
    vmids(f, out);
    unknown_host(f, out);
    host_duplicate(f, out);
    no_nodes(f, out);
}

fn network_roles(f: &Facts, out: &mut Vec<Finding>) {
    let count = |role| f.p.networks.iter().filter(|n| n.role == role).count();
    let mgmt = count(NetworkRole::Management);
    if mgmt != 1 {
        out.push(NETWORK_ROLES.at(
            "networks",
            format!("the profile has {mgmt} networks with `role: management`; every node needs exactly one management link"),
            "declare exactly one network with `role: management` (see profiles/homelab.yaml)",
        ));
    }
    let work = count(NetworkRole::Workload);
    if work > 1 {
        out.push(NETWORK_ROLES.at(
            "networks",
            format!("the profile has {work} networks with `role: workload`; a node has at most one workload link"),
            "keep one network with `role: workload`, or none for a one-network cluster (the management network then carries the workload)",
        ));
    }
}

/// A node has a `workload` link exactly when the profile has a workload network.
fn node_links(f: &Facts, out: &mut Vec<Finding>) {
    let two = !f.p.one_network();
    for (i, n) in f.p.nodes.iter().enumerate() {
        match (two, &n.workload) {
            (true, None) => out.push(NODE_LINKS.at(
                format!("nodes[{i}]"),
                format!("node `{}` has no `workload` link, but the profile has a workload network", n.name),
                "add `workload: {address: …}` with an address in the workload subnet, or remove the workload network for a one-network cluster",
            )),
            (false, Some(_)) => out.push(NODE_LINKS.at(
                format!("nodes[{i}].workload"),
                format!("node `{}` has a `workload` link, but the profile has no workload network, so the link would be on no network", n.name),
                "remove `workload` from the node (one network: the management link carries the workload), or declare a network with `role: workload`",
            )),
            _ => {}
        }
    }
}

fn missing_gateway(f: &Facts, out: &mut Vec<Finding>) {
    for i in f.link_networks() {
        let net = f.network(i);
        if net.gateway.is_none() {
            out.push(MISSING_GATEWAY.at(
                format!("networks[{i}].gateway"),
                format!(
                    "{} has no gateway, so its traffic cannot leave the VLAN",
                    net_label(net)
                ),
                format!("add `gateway:` with the router's address in {}", net.subnet),
            ));
        }
    }
}

fn gateway_placement(f: &Facts, out: &mut Vec<Finding>) {
    for (i, net) in f.p.networks.iter().enumerate() {
        let Some(gw) = net.gateway else { continue };
        let why = if !net.subnet.contains(&gw) {
            "is outside its subnet"
        } else if is_network_or_broadcast(&net.subnet, gw) {
            "is the network or broadcast address of its subnet"
        } else {
            continue;
        };
        out.push(GATEWAY_PLACEMENT.at(
            format!("networks[{i}].gateway"),
            format!("gateway {gw} of {} {why} {}", net_label(net), net.subnet),
            format!("use the router's address inside {}", net.subnet),
        ));
    }
}

fn vlans(f: &Facts, out: &mut Vec<Finding>) {
    // Untagged networks share the bridge's one untagged segment, so at most one may be untagged.
    let mut seen: HashMap<Option<u16>, usize> = HashMap::new();
    for (i, net) in f.p.networks.iter().enumerate() {
        let path = format!("networks[{i}].vlan");
        if let Some(vlan) = net.vlan.filter(|v| !(1..=4094).contains(v)) {
            out.push(VLAN_RANGE.at(
                &path,
                format!(
                    "VLAN ID {vlan} of network `{}` is not a valid 802.1Q ID",
                    net.name
                ),
                "use a VLAN ID from 1 to 4094, or omit `vlan` for an untagged network",
            ));
        }
        if let Some(first) = seen.insert(net.vlan, i) {
            out.push(VLAN_DUPLICATE.at(
                &path,
                format!(
                    "{} of network `{}` is also used by `{}` (networks[{first}]): both would share one segment",
                    net.vlan_label(), net.name, f.p.networks[first].name
                ),
                "give every network its own VLAN ID (at most one network may be untagged)",
            ));
        }
    }
}

fn subnet_overlap(f: &Facts, out: &mut Vec<Finding>) {
    for (j, b) in f.p.networks.iter().enumerate() {
        for a in f.p.networks[..j]
            .iter()
            .filter(|a| overlaps(&a.subnet, &b.subnet))
        {
            out.push(SUBNET_OVERLAP.at(
                format!("networks[{j}].subnet"),
                format!(
                    "subnet {} of {} overlaps {} of {}",
                    b.subnet,
                    net_label(b),
                    a.subnet,
                    net_label(a)
                ),
                "give every VLAN a disjoint subnet",
            ));
        }
    }
}

fn mtu_range(f: &Facts, out: &mut Vec<Finding>) {
    let nets = f.p.networks.iter().enumerate();
    let nets = nets.map(|(i, n)| (format!("networks[{i}].mtu"), n.mtu));
    let hosts = f.p.proxmox.hosts.iter().enumerate();
    let hosts = hosts.filter_map(|(i, h)| {
        let mtu = h.storage.as_ref()?.mtu?;
        Some((format!("proxmox.hosts[{i}].storage.mtu"), mtu))
    });
    for (path, mtu) in nets.chain(hosts) {
        if !(MTU_MIN..=MTU_MAX).contains(&mtu) {
            out.push(MTU_RANGE.at(
                path,
                format!("MTU {mtu} is outside what Ethernet NICs and switches accept ({MTU_MIN}..{MTU_MAX})"),
                "use 1500, or 9000 for jumbo frames end to end",
            ));
        }
    }
}

/// The uplink trunk's MTU is taken from the untagged `infrastructure` network that
/// shares the trunk; without one, the Proxmox bridge default.
fn mtu_above_uplink(f: &Facts, out: &mut Vec<Finding>) {
    let uplink =
        f.p.network(NetworkRole::Infrastructure)
            .map_or(DEFAULT_UPLINK_MTU, |n| n.mtu);
    for i in f.link_networks() {
        let net = f.network(i);
        if net.mtu > uplink {
            out.push(MTU_ABOVE_UPLINK.at(
                format!("networks[{i}].mtu"),
                format!(
                    "MTU {} of {} exceeds the uplink's {uplink}; larger frames are dropped on the trunk",
                    net.mtu,
                    net_label(net)
                ),
                format!("lower it to {uplink}, or raise the MTU of the uplink, bridge and switch ports first"),
            ));
        }
    }
}

fn node_names(f: &Facts, out: &mut Vec<Finding>) {
    let mut seen: HashMap<&str, usize> = HashMap::new();
    for (i, n) in f.p.nodes.iter().enumerate() {
        let path = format!("nodes[{i}].name");
        if !is_dns_label(&n.name) {
            out.push(NODE_NAME.at(
                &path,
                format!("node name `{}` is not a DNS label; it becomes the hostname, VM name and Kubernetes node name", n.name),
                "use 1-63 lowercase letters, digits and '-', not starting or ending with '-'",
            ));
        }
        if let Some(first) = seen.insert(&n.name, i) {
            out.push(NODE_NAME_DUPLICATE.at(
                &path,
                format!("node name `{}` is also nodes[{first}]", n.name),
                "give every node its own name",
            ));
        }
    }
}

fn vmids(f: &Facts, out: &mut Vec<Finding>) {
    let mut seen: HashMap<u32, usize> = HashMap::new();
    for (i, n) in f.p.nodes.iter().enumerate() {
        let path = format!("nodes[{i}].vmid");
        if !(VMID_MIN..=VMID_MAX).contains(&n.vmid) {
            out.push(VMID_RANGE.at(
                &path,
                format!(
                    "VMID {} of node `{}` is outside the range Proxmox accepts",
                    n.vmid, n.name
                ),
                format!("use a VMID from {VMID_MIN} to {VMID_MAX}"),
            ));
        }
        if let Some(first) = seen.insert(n.vmid, i) {
            out.push(VMID_DUPLICATE.at(
                &path,
                format!(
                    "VMID {} of node `{}` is also used by `{}`; VMIDs are unique across a Proxmox cluster",
                    n.vmid, n.name, f.p.nodes[first].name
                ),
                "give every node its own VMID",
            ));
        }
    }
}

fn unknown_host(f: &Facts, out: &mut Vec<Finding>) {
    for (i, n) in f.p.nodes.iter().enumerate() {
        if f.p.host(&n.host).is_none() {
            let known: Vec<&str> = f.p.proxmox.hosts.iter().map(|h| h.name.as_str()).collect();
            out.push(UNKNOWN_HOST.at(
                format!("nodes[{i}].host"),
                format!(
                    "node `{}` names host `{}`, which is not in proxmox.hosts",
                    n.name, n.host
                ),
                format!("use one of: {}", known.join(", ")),
            ));
        }
    }
}

fn host_duplicate(f: &Facts, out: &mut Vec<Finding>) {
    let mut seen: HashMap<&str, usize> = HashMap::new();
    for (i, h) in f.p.proxmox.hosts.iter().enumerate() {
        if let Some(first) = seen.insert(&h.name, i) {
            out.push(HOST_DUPLICATE.at(
                format!("proxmox.hosts[{i}].name"),
                format!("host `{}` is also proxmox.hosts[{first}], so nodes cannot say which one they mean", h.name),
                "list every Proxmox host once, under its node name from `pvesh get /nodes`",
            ));
        }
    }
}

fn no_nodes(f: &Facts, out: &mut Vec<Finding>) {
    if f.p.nodes.is_empty() {
        out.push(NO_NODES.at(
            "nodes",
            "the profile declares no nodes, so there is no cluster to build",
            "add at least one control-plane node under `nodes`",
        ));
    }
}
