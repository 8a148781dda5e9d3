//! NET4xx: the cluster around the network: API endpoint, roles and scheduling,
//! Talos version, default route, and what the gateway must do for routable pods.

use super::facts::{Facts, net_label};
use super::pods::overlaps;
use super::{Finding, Rule, Severity};
use crate::plan::{bootstrap_node, endpoint_host};
use crate::profile::{LinkRole, Role};

pub const ENDPOINT_URL: Rule = Rule::new(
    "NET401",
    Severity::Error,
    "API endpoint is not an https URL",
);
pub const ENDPOINT_TARGET: Rule = Rule::new(
    "NET402",
    Severity::Error,
    "API endpoint does not name a control-plane node's management address",
);
pub const ENDPOINT_SPOF: Rule = Rule::new(
    "NET403",
    Severity::Warning,
    "API endpoint is a single node (no VIP)",
);
pub const SCHEDULING: Rule = Rule::new(
    "NET404",
    Severity::Error,
    "all nodes are control planes but scheduling on them is disabled",
);
pub const TALOS_VERSION: Rule = Rule::new(
    "NET405",
    Severity::Error,
    "Talos version is not 1.12.x or 1.13.x",
);
pub const DEFAULT_ROUTE_GATEWAY: Rule = Rule::new(
    "NET406",
    Severity::Error,
    "the default-route link's network has no gateway",
);
pub const STATIC_ROUTES: Rule = Rule::new(
    "NET407",
    Severity::Warning,
    "pods are not masqueraded: the gateway needs static routes",
);
pub const FIREWALL: Rule = Rule::new(
    "NET408",
    Severity::Warning,
    "inter-VLAN firewall must allow the pod ranges",
);
pub const SERVICE_ON_LINK: Rule = Rule::new(
    "NET409",
    Severity::Error,
    "service subnet overlaps a network or the pod subnet",
);
pub const ASYMMETRIC_MANAGEMENT: Rule = Rule::new(
    "NET410",
    Severity::Warning,
    "Talos 1.12 with the default route on workload: management replies are asymmetric",
);
pub const NO_CONTROL_PLANE: Rule = Rule::new("NET411", Severity::Error, "no control-plane node");
pub const EGRESS: Rule = Rule::new(
    "NET412",
    Severity::Info,
    "the nodes need outbound access to these destinations",
);

const ENDPOINT: &str = "kubernetes.endpoint";

pub fn check(f: &Facts, out: &mut Vec<Finding>) {
    endpoint(f, out);
    scheduling(f, out);
    no_control_plane(f, out);
    talos_version(f, out);
    default_route_gateway(f, out);
    routable_pods(f, out);
    service_on_link(f, out);
    asymmetric_management(f, out);
    egress(f, out);
}

/// Which profile fields send the nodes where (`egress`), so the gateway can allow it.
fn egress(f: &Facts, out: &mut Vec<Finding>) {
    let needs = crate::egress::needs(f.p);
    let mut fields: Vec<&str> = needs.iter().flat_map(|n| n.because.clone()).collect();
    fields.dedup();
    let list: Vec<String> = needs
        .iter()
        .map(|n| {
            let why = if n.because.is_empty() {
                "generated config".to_owned()
            } else {
                n.because.join(", ")
            };
            format!("{} {} ({why})", n.host, n.ports)
        })
        .collect();
    out.push(EGRESS.at(
        fields.join(", "),
        format!("the nodes must reach {}", list.join("; ")),
        "allow these on the gateway (`talos-pve docs` lists them with their purpose), or point `talos.imageFactory`, `addons.cilium.cliImage` and `timeServers` at local services",
    ));
}

fn endpoint(f: &Facts, out: &mut Vec<Finding>) {
    let ep = &f.p.kubernetes.endpoint;
    if endpoint_host(ep).is_none() {
        out.push(ENDPOINT_URL.at(
            ENDPOINT,
            format!("`{ep}` is not an https URL with a host"),
            "write `https://<control-plane management address>:6443`",
        ));
        return;
    }
    let suggestion =
        f.p.nodes
            .iter()
            .find(|n| n.role == Role::Controlplane)
            .map_or(
                "a control-plane node's management address".to_string(),
                |n| format!("https://{}:6443", n.management.address),
            );
    match bootstrap_node(f.p) {
        None => out.push(ENDPOINT_TARGET.at(
            ENDPOINT,
            format!(
                "`{ep}` names neither a control-plane node's management address nor a dns.records name that resolves to one"
            ),
            format!("use {suggestion}"),
        )),
        Some(node) => out.push(ENDPOINT_SPOF.at(
            ENDPOINT,
            format!(
                "`{ep}` reaches only node `{node}`: external clients (kubectl, talos-pve) lose the API when it is down (in-cluster clients fail over via KubePrism)"
            ),
            "accept it for a homelab, or put a VIP or load balancer in front of the control planes and use its address",
        )),
    }
}

fn scheduling(f: &Facts, out: &mut Vec<Finding>) {
    let p = f.p;
    if !p.nodes.is_empty()
        && p.all_control_planes()
        && p.kubernetes.allow_scheduling_on_control_planes == Some(false)
    {
        out.push(SCHEDULING.at(
            "kubernetes.allowSchedulingOnControlPlanes",
            "every node is a control plane but workloads may not run on them; control-plane nodes are also excluded from external load balancers, so MetalLB would announce from no node",
            "set `kubernetes.allowSchedulingOnControlPlanes: true` (or omit it), or add worker nodes",
        ));
    }
}

fn no_control_plane(f: &Facts, out: &mut Vec<Finding>) {
    if !f.p.nodes.is_empty() && !f.p.nodes.iter().any(|n| n.role == Role::Controlplane) {
        out.push(NO_CONTROL_PLANE.at(
            "nodes",
            "no node has `role: controlplane`, so there is no API server or etcd",
            "make at least one node (the one the endpoint names) a control plane",
        ));
    }
}

/// `v1.13.9` / `1.13.9` → (1, 13).
fn major_minor(v: &str) -> Option<(u32, u32)> {
    let mut it = v.strip_prefix('v').unwrap_or(v).split('.');
    Some((it.next()?.parse().ok()?, it.next()?.parse().ok()?))
}

fn talos_version(f: &Facts, out: &mut Vec<Finding>) {
    let v = &f.p.talos.version;
    if !matches!(major_minor(v), Some((1, 12 | 13))) {
        out.push(TALOS_VERSION.at(
            "talos.version",
            format!(
                "Talos `{v}` is not a release talos-pve generates configs for (1.12.x, 1.13.x)"
            ),
            "use a v1.13.x (or v1.12.x) release, e.g. v1.13.9",
        ));
    }
}

fn default_route_gateway(f: &Facts, out: &mut Vec<Finding>) {
    let (idx, label) = match f.p.routing.default_route {
        LinkRole::Management => (f.mgmt, "management"),
        LinkRole::Workload => (f.work, "workload"),
    };
    let Some(i) = idx else { return };
    let net = f.network(i);
    if net.gateway.is_none() {
        out.push(DEFAULT_ROUTE_GATEWAY.at(
            "routing.defaultRoute",
            format!(
                "the default route leaves via the {label} link, but {} has no gateway",
                net_label(net)
            ),
            format!("add `networks[{i}].gateway`, or route by default via the other link"),
        ));
    }
}

fn routable_pods(f: &Facts, out: &mut Vec<Finding>) {
    if f.p.routing.masquerade || f.pods.is_empty() {
        return;
    }
    let gateway = f
        .work_net()
        .and_then(|n| n.gateway)
        .map_or("the workload gateway".to_string(), |g| {
            format!("the gateway {g}")
        });
    let routes: Vec<String> = f
        .pods
        .iter()
        .map(|p| {
            let via = f.p.nodes[p.node].link(LinkRole::Workload).address;
            format!("{} via {via}", p.net)
        })
        .collect();
    out.push(STATIC_ROUTES.at(
        "routing.masquerade",
        format!(
            "pods keep their addresses beyond the cluster, so {gateway} needs these static routes before pods reach other VLANs or the internet: {}",
            routes.join("; ")
        ),
        "add the routes on the gateway (`talos-pve plan` lists them), or set `routing.masquerade: true`",
    ));
    let others: Vec<&crate::profile::Network> =
        f.p.networks
            .iter()
            .enumerate()
            .filter(|(i, n)| n.routed && Some(*i) != f.work)
            .map(|(_, n)| n)
            .collect();
    // A one-network cluster has no other VLAN whose firewall rules could miss the pods.
    if others.is_empty() {
        return;
    }
    let tags: Option<Vec<String>> = others
        .iter()
        .map(|n| n.vlan.map(|v| v.to_string()))
        .collect();
    out.push(FIREWALL.at(
        "kubernetes.podSubnet",
        format!(
            "pods send from {}, not from the workload subnet, so inter-VLAN firewall rules that let the workload VLAN reach {} must allow that range too",
            f.p.kubernetes.pod_subnet,
            match (others.as_slice(), tags) {
                ([], _) => "other VLANs".into(),
                ([one], _) => one.vlan_label(),
                (_, Some(tags)) => format!("VLANs {}", tags.join(", ")),
                (_, None) => others.iter().map(|n| n.vlan_label()).collect::<Vec<_>>().join(", "),
            }
        ),
        "add the pod subnet to the firewall rules that cover the workload VLAN (`talos-pve docs` lists recommended rules)",
    ));
}

fn service_on_link(f: &Facts, out: &mut Vec<Finding>) {
    let svc = f.p.kubernetes.service_subnet;
    let mut hits: Vec<String> =
        f.p.networks
            .iter()
            .filter(|n| overlaps(&n.subnet, &svc))
            .map(|n| format!("{} of {}", n.subnet, net_label(n)))
            .collect();
    if overlaps(&f.p.kubernetes.pod_subnet, &svc) {
        hits.push(format!("the pod subnet {}", f.p.kubernetes.pod_subnet));
    }
    if !hits.is_empty() {
        out.push(SERVICE_ON_LINK.at(
            "kubernetes.serviceSubnet",
            format!("the service subnet {svc} overlaps {}", hits.join(", ")),
            "keep the default 10.96.0.0/12 unless it collides, and pick a range no network or pod uses",
        ));
    }
}

fn asymmetric_management(f: &Facts, out: &mut Vec<Finding>) {
    if major_minor(&f.p.talos.version) == Some((1, 12))
        && f.p.routing.default_route == LinkRole::Workload
    {
        out.push(ASYMMETRIC_MANAGEMENT.at(
            "talos.version",
            "Talos 1.12 has no routing-rule document, so replies to management clients outside the management VLAN leave via the workload default route",
            "use Talos 1.13, or reach the nodes' management addresses only from inside the management VLAN",
        ));
    }
}
