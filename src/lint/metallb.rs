//! NET2xx: the MetalLB L2 pool. It must be on-link on the workload network (L2
//! announcements only work there) and shared with nothing else.

use super::facts::{Facts, is_network_or_broadcast, net_label};
use super::{Finding, Rule, Severity};
use crate::profile::{AddrRange, LinkRole, MetalLb};

pub const OUTSIDE_WORKLOAD: Rule = Rule::new(
    "NET201",
    Severity::Error,
    "MetalLB pool outside the workload subnet",
);
pub const HOLDS_ADDRESS: Rule = Rule::new(
    "NET202",
    Severity::Error,
    "MetalLB pool contains a gateway, node, host, device, network or broadcast address",
);
pub const OVERLAPS_PODS: Rule = Rule::new(
    "NET203",
    Severity::Error,
    "MetalLB pool overlaps pod CIDRs or the pod subnet",
);
pub const OVERLAPS_RESERVED: Rule = Rule::new(
    "NET204",
    Severity::Warning,
    "MetalLB pool overlaps a reserved range",
);
pub const DHCP_UNDECLARED: Rule = Rule::new(
    "NET205",
    Severity::Warning,
    "gateway DHCP range on the workload network must exclude pool and node addresses",
);
pub const WRONG_INTERFACE: Rule = Rule::new(
    "NET206",
    Severity::Error,
    "MetalLB announces on a link other than the workload link",
);

const POOL: &str = "addons.metallb.pool";

pub fn check(f: &Facts, out: &mut Vec<Finding>) {
    dhcp_undeclared(f, out);
    let Some(m) = &f.p.addons.metallb else { return };
    outside_workload(f, m, out);
    holds_address(f, m.pool, out);
    overlaps_pods(f, m.pool, out);
    overlaps_reserved(f, m.pool, out);
    wrong_interface(f, m, out);
}

fn outside_workload(f: &Facts, m: &MetalLb, out: &mut Vec<Finding>) {
    let Some(net) = f.work_net() else { return };
    if !m.pool.within(&net.subnet) {
        out.push(OUTSIDE_WORKLOAD.at(
            POOL,
            format!(
                "pool {} is not inside {} of {}; L2 announcements only reach addresses on-link there",
                m.pool,
                net.subnet,
                net_label(net)
            ),
            format!("pick a range inside {} that no host uses", net.subnet),
        ));
    }
}

fn holds_address(f: &Facts, pool: AddrRange, out: &mut Vec<Finding>) {
    let mut hits: Vec<String> = f
        .claims
        .iter()
        .filter(|c| pool.contains(c.addr))
        .map(|c| format!("{} ({})", c.addr, c.what))
        .collect();
    for net in &f.p.networks {
        for addr in [net.subnet.network(), net.subnet.broadcast()] {
            if pool.contains(addr) && is_network_or_broadcast(&net.subnet, addr) {
                hits.push(format!("{addr} (network/broadcast of {})", net.subnet));
            }
        }
    }
    if !hits.is_empty() {
        out.push(HOLDS_ADDRESS.at(
            POOL,
            format!(
                "pool {pool} contains {}, which MetalLB would hand to a Service",
                hits.join(", ")
            ),
            "shrink the pool so it covers only free addresses",
        ));
    }
}

fn overlaps_pods(f: &Facts, pool: AddrRange, out: &mut Vec<Finding>) {
    let mut hits: Vec<String> = f
        .pods
        .iter()
        .filter(|p| pool.overlaps_net(&p.net))
        .map(|p| format!("{} (`{}`)", p.net, p.path))
        .collect();
    let block = f.p.kubernetes.pod_subnet;
    if pool.overlaps_net(&block) {
        hits.push(format!("the pod subnet {block}"));
    }
    if !hits.is_empty() {
        out.push(OVERLAPS_PODS.at(
            POOL,
            format!(
                "pool {pool} overlaps {}; a Service IP would shadow pod addresses",
                hits.join(", ")
            ),
            "keep the pool on the workload L2 subnet and the pods in their routed block, disjoint",
        ));
    }
}

fn overlaps_reserved(f: &Facts, pool: AddrRange, out: &mut Vec<Finding>) {
    for (i, net) in f.p.networks.iter().enumerate() {
        for (j, r) in net
            .reserved
            .iter()
            .enumerate()
            .filter(|(_, r)| r.range.overlaps(&pool))
        {
            let kind = if r.dhcp {
                "DHCP pool"
            } else {
                "reserved range"
            };
            out.push(OVERLAPS_RESERVED.at(
                POOL,
                format!(
                    "pool {pool} overlaps the {kind} {} (\"{}\", networks[{i}].reserved[{j}])",
                    r.range, r.purpose
                ),
                "make the pool and the reservation disjoint, or drop the reservation if the pool is what it reserves",
            ));
        }
    }
}

fn dhcp_undeclared(f: &Facts, out: &mut Vec<Finding>) {
    let Some(i) = f.work else { return };
    let net = f.network(i);
    if net.reserved.iter().any(|r| r.dhcp) {
        return;
    }
    let what = if f.p.addons.metallb.is_some() {
        "the MetalLB pool and the node addresses"
    } else {
        "the node addresses"
    };
    out.push(DHCP_UNDECLARED.at(
        format!("networks[{i}].reserved"),
        format!(
            "no `dhcp: true` reservation is declared on {}, so lint cannot check that the gateway's DHCP range excludes {what}",
            net_label(net)
        ),
        format!(
            "check the DHCP range of {} on the gateway and declare it here with `dhcp: true` (or turn DHCP off there)",
            // `VLAN 28`; an untagged network by its name (a home LAN's router).
            net.vlan
                .map_or_else(|| format!("network `{}`", net.name), |_| net.vlan_label())
        ),
    ));
}

fn wrong_interface(f: &Facts, m: &MetalLb, out: &mut Vec<Finding>) {
    // One network: the management link is the workload link.
    if m.interface != LinkRole::Workload && !f.p.one_network() {
        out.push(WRONG_INTERFACE.at(
            "addons.metallb.interface",
            "the pool lives on the workload subnet, but the L2Advertisement is bound to the management link, so ARP for pool addresses goes unanswered",
            "set `addons.metallb.interface: workload`",
        ));
    }
}
