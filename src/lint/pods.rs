//! NET1xx: per-node pod CIDRs and the cluster pod subnet. Pods live in a routed block
//! that no on-link network, service range or static address may share.

use ipnet::Ipv4Net;

use super::facts::{Facts, net_label};
use super::{Finding, Rule, Severity};
use crate::plan::PlanError;

pub const ON_LINK: Rule = Rule::new(
    "NET101",
    Severity::Error,
    "pod CIDR overlaps an on-link network",
);
pub const SERVICE_OVERLAP: Rule = Rule::new(
    "NET102",
    Severity::Error,
    "pod CIDR overlaps the service subnet",
);
pub const PODS_OVERLAP: Rule = Rule::new("NET103", Severity::Error, "pod CIDRs overlap each other");
pub const OUTSIDE_POD_SUBNET: Rule = Rule::new(
    "NET104",
    Severity::Error,
    "pod CIDR outside the cluster pod subnet",
);
pub const POD_SUBNET_HOLDS_ADDRESS: Rule = Rule::new(
    "NET105",
    Severity::Error,
    "cluster pod subnet contains node, host, gateway or LoadBalancer addresses",
);
pub const NATIVE_ROUTING: Rule = Rule::new(
    "NET106",
    Severity::Error,
    "Cilium nativeRoutingCIDR does not contain every pod CIDR",
);
pub const NO_ROOM: Rule = Rule::new(
    "NET107",
    Severity::Error,
    "more nodes than pod CIDRs fit in the pod subnet",
);
pub const BAD_NODE_PREFIX: Rule = Rule::new(
    "NET108",
    Severity::Error,
    "node pod prefix does not fit the pod subnet",
);
pub const POD_SUBNET_ON_LINK: Rule = Rule::new(
    "NET109",
    Severity::Error,
    "cluster pod subnet overlaps an on-link network",
);

pub fn check(f: &Facts, out: &mut Vec<Finding>) {
    on_link(f, out);
    service_overlap(f, out);
    pods_overlap(f, out);
    outside_pod_subnet(f, out);
    pod_subnet_holds_address(f, out);
    pod_subnet_on_link(f, out);
    native_routing(f, out);
    derivation(f, out);
}

pub fn overlaps(a: &Ipv4Net, b: &Ipv4Net) -> bool {
    a.contains(&b.network()) || b.contains(&a.network())
}

/// A block of the pod subnet's size that no network, the service subnet or the
/// LB pool touches, searched upwards from the workload subnet; for fix texts.
fn free_block(f: &Facts) -> Option<Ipv4Net> {
    let prefix = f.p.kubernetes.pod_subnet.prefix_len();
    let start = f.work_net().map_or(f.p.kubernetes.pod_subnet, |n| n.subnet);
    let size = 1u64 << (32 - u32::from(prefix));
    let mut base = (u64::from(u32::from(start.broadcast())) + 1).div_ceil(size) * size;
    for _ in 0..256 {
        let cand = Ipv4Net::new(u32::try_from(base).ok()?.into(), prefix).ok()?;
        let clear = !f.p.networks.iter().any(|n| overlaps(&n.subnet, &cand))
            && !overlaps(&f.p.kubernetes.service_subnet, &cand)
            && !f
                .p
                .addons
                .metallb
                .as_ref()
                .is_some_and(|m| m.pool.overlaps_net(&cand));
        if clear {
            return Some(cand);
        }
        base += size;
    }
    None
}

fn routed_block_fix(f: &Facts) -> String {
    match free_block(f) {
        Some(b) => format!(
            "move the pods into a routed block outside every network, e.g. `kubernetes.podSubnet: {b}` with each node's podCIDR carved from it"
        ),
        None => "move the pods into a routed block outside every network (kubernetes.podSubnet) and carve each node's podCIDR from it".into(),
    }
}

fn on_link(f: &Facts, out: &mut Vec<Finding>) {
    for pod in &f.pods {
        for net in
            f.p.networks
                .iter()
                .filter(|n| overlaps(&n.subnet, &pod.net))
        {
            out.push(ON_LINK.at(
                &pod.path,
                format!(
                    "pod CIDR {} of node `{}` overlaps {} of {}: the gateway and hosts there treat pod addresses as on-link and ARP for them, and nobody answers",
                    pod.net,
                    f.p.nodes[pod.node].name,
                    net.subnet,
                    net_label(net)
                ),
                routed_block_fix(f),
            ));
        }
    }
}

fn service_overlap(f: &Facts, out: &mut Vec<Finding>) {
    let svc = f.p.kubernetes.service_subnet;
    for pod in f.pods.iter().filter(|p| overlaps(&p.net, &svc)) {
        out.push(SERVICE_OVERLAP.at(
            &pod.path,
            format!("pod CIDR {} overlaps the service subnet {svc}", pod.net),
            "keep pod CIDRs and `kubernetes.serviceSubnet` disjoint",
        ));
    }
}

fn pods_overlap(f: &Facts, out: &mut Vec<Finding>) {
    for (j, b) in f.pods.iter().enumerate() {
        for a in f.pods[..j].iter().filter(|a| overlaps(&a.net, &b.net)) {
            out.push(PODS_OVERLAP.at(
                &b.path,
                format!(
                    "pod CIDR {} of node `{}` overlaps {} of node `{}`",
                    b.net, f.p.nodes[b.node].name, a.net, f.p.nodes[a.node].name
                ),
                "give every node its own pod CIDR (or omit podCIDR to derive them)",
            ));
        }
    }
}

fn outside_pod_subnet(f: &Facts, out: &mut Vec<Finding>) {
    let block = f.p.kubernetes.pod_subnet;
    for pod in f.pods.iter().filter(|p| !block.contains(&p.net)) {
        out.push(OUTSIDE_POD_SUBNET.at(
            &pod.path,
            format!(
                "pod CIDR {} is not inside `kubernetes.podSubnet` {block}, so Talos and Cilium do not treat it as pod space",
                pod.net
            ),
            format!("pick a pod CIDR inside {block}, or widen kubernetes.podSubnet"),
        ));
    }
}

fn pod_subnet_holds_address(f: &Facts, out: &mut Vec<Finding>) {
    let block = f.p.kubernetes.pod_subnet;
    let mut inside: Vec<String> = f
        .claims
        .iter()
        .filter(|c| block.contains(&c.addr))
        .map(|c| format!("{} ({})", c.addr, c.what))
        .collect();
    if let Some(m) =
        f.p.addons
            .metallb
            .as_ref()
            .filter(|m| m.pool.overlaps_net(&block))
    {
        inside.push(format!("the MetalLB pool {}", m.pool));
    }
    if inside.is_empty() {
        return;
    }
    let shown = inside.len().min(4);
    let more = if inside.len() > shown {
        format!(" and {} more", inside.len() - shown)
    } else {
        String::new()
    };
    out.push(POD_SUBNET_HOLDS_ADDRESS.at(
        "kubernetes.podSubnet",
        format!(
            "the pod subnet {block} contains {}{more}; Talos hides addresses inside pod ranges when choosing node IPs, and pods could be given them",
            inside[..shown].join(", ")
        ),
        routed_block_fix(f),
    ));
}

fn pod_subnet_on_link(f: &Facts, out: &mut Vec<Finding>) {
    let block = f.p.kubernetes.pod_subnet;
    for net in f.p.networks.iter().filter(|n| overlaps(&n.subnet, &block)) {
        out.push(POD_SUBNET_ON_LINK.at(
            "kubernetes.podSubnet",
            format!(
                "the pod subnet {block} overlaps {} of {}; a node added later would get an on-link pod CIDR",
                net.subnet,
                net_label(net)
            ),
            routed_block_fix(f),
        ));
    }
}

fn native_routing(f: &Facts, out: &mut Vec<Finding>) {
    let Some(cidr) = f.p.addons.cilium.native_routing_cidr else {
        return;
    };
    let missing: Vec<String> = f
        .pods
        .iter()
        .filter(|p| !cidr.contains(&p.net))
        .map(|p| p.net.to_string())
        .collect();
    if !missing.is_empty() {
        out.push(NATIVE_ROUTING.at(
            "addons.cilium.nativeRoutingCIDR",
            format!(
                "nativeRoutingCIDR {cidr} does not contain pod CIDR(s) {}, so Cilium would masquerade or tunnel that pod traffic",
                missing.join(", ")
            ),
            format!(
                "set nativeRoutingCIDR to the pod subnet {} (or a prefix containing it), or omit it",
                f.p.kubernetes.pod_subnet
            ),
        ));
    }
}

fn derivation(f: &Facts, out: &mut Vec<Finding>) {
    match &f.pod_error {
        Some(e @ PlanError::PodSubnetTooSmall { .. }) => out.push(NO_ROOM.at(
            "kubernetes.podSubnet",
            first_line(e),
            "widen kubernetes.podSubnet or lower kubernetes.nodePodPrefix (a larger prefix number gives smaller, more numerous pod CIDRs)",
        )),
        Some(e @ PlanError::BadNodePrefix { .. }) => out.push(BAD_NODE_PREFIX.at(
            "kubernetes.nodePodPrefix",
            first_line(e),
            format!(
                "use a prefix between /{} and /30",
                f.p.kubernetes.pod_subnet.prefix_len()
            ),
        )),
        _ => {}
    }
}

/// A `PlanError` message without its own "fix:" line (the finding carries the fix).
fn first_line(e: &PlanError) -> String {
    let s = e.to_string();
    s.lines().next().unwrap_or_default().to_string()
}
