//! The plan: everything talos-pve derives from a profile before touching any system.
//!
//! Pure and deterministic: the same profile always gives the same plan (MACs, pod
//! CIDRs, schematic ID, routes), so re-runs and rebuilds reproduce identities.
//! Building a plan assumes `lint` found no errors; what it cannot derive is a
//! `PlanError`, never a panic.
//!
//! It must not do I/O or re-check what `lint` reports.

mod mac;
mod schematic;
mod view;

use std::net::Ipv4Addr;

use ipnet::Ipv4Net;
use serde::Serialize;
use thiserror::Error;

use crate::profile::{AddrRange, LinkRole, Network, NetworkRole, NodeLink, Profile, Role};

pub use mac::{derive_mac, normalize_mac};
pub use schematic::{schematic_id, schematic_yaml};
pub use view::render_text;

#[derive(Debug, Error, PartialEq)]
pub enum PlanError {
    #[error(
        "the profile has no network with `role: {0}`\n  fix: add one to `networks` (see profiles/homelab.yaml)"
    )]
    MissingNetwork(&'static str),
    #[error(
        "node `{0}` has no `workload` link, but the profile has a workload network\n  fix: add `workload: {{address: …}}` to the node, or remove the workload network for a one-network cluster"
    )]
    MissingWorkloadLink(String),
    #[error(
        "`kubernetes.podSubnet` {subnet} has room for {room} node pod CIDRs of /{prefix}, but {nodes} nodes need one\n  fix: widen podSubnet or lower `kubernetes.nodePodPrefix`"
    )]
    PodSubnetTooSmall {
        subnet: Ipv4Net,
        prefix: u8,
        room: u64,
        nodes: usize,
    },
    #[error("`kubernetes.nodePodPrefix` /{prefix} does not fit in podSubnet {subnet}\n  fix: use a prefix longer than /{}", .subnet.prefix_len())]
    BadNodePrefix { subnet: Ipv4Net, prefix: u8 },
    #[error(
        "`nodes[{index}].{link}.mac` = `{mac}` is not a MAC address\n  fix: write six hex pairs, e.g. BC:24:11:00:16:20"
    )]
    BadMac {
        index: usize,
        link: &'static str,
        mac: String,
    },
    #[error(
        "`{field}` = `{value}` {why}; it is interpolated into names, URLs, image references or paths\n  fix: correct it (`talos-pve lint` reports the NET5xx finding with an example)"
    )]
    Value {
        field: String,
        value: String,
        why: &'static str,
    },
}

/// The values the plan interpolates into URL paths, image references, file names
/// and Kubernetes API paths, in the formats lint's NET5xx asks for. Checked here as
/// well so that a skipped lint cannot turn them into extra path segments or tags.
fn interpolated_values(p: &Profile) -> Result<(), PlanError> {
    use crate::formats::{is_device_path, is_dns_label, semver};
    let bad = |field: String, value: &str, why| PlanError::Value {
        field,
        value: value.escape_debug().to_string(),
        why,
    };
    if !is_dns_label(&p.metadata.name) {
        return Err(bad(
            "metadata.name".into(),
            &p.metadata.name,
            "is not a DNS label",
        ));
    }
    if let Some((i, n)) = p
        .nodes
        .iter()
        .enumerate()
        .find(|(_, n)| !is_dns_label(&n.name))
    {
        return Err(bad(
            format!("nodes[{i}].name"),
            &n.name,
            "is not a DNS label",
        ));
    }
    if semver(&p.kubernetes.version).is_none() {
        let why = "is not a version X.Y.Z";
        return Err(bad("kubernetes.version".into(), &p.kubernetes.version, why));
    }
    let t = &p.talos;
    if t.version.strip_prefix('v').and_then(semver).is_none() {
        return Err(bad(
            "talos.version".into(),
            &t.version,
            "is not a release tag vX.Y.Z",
        ));
    }
    if let Err(why) = crate::formats::factory_origin(&t.image_factory) {
        return Err(bad("talos.imageFactory".into(), &t.image_factory, why));
    }
    if !is_device_path(&t.install_disk) {
        let why = "is not a device path under /dev/";
        return Err(bad("talos.installDisk".into(), &t.install_disk, why));
    }
    Ok(())
}

/// Schema version of the JSON form of the plan (`plan --output json`).
pub const PLAN_FORMAT: u32 = 1;

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Plan {
    pub format: u32,
    pub cluster: String,
    pub endpoint: String,
    /// The control-plane node whose address the endpoint names; etcd is bootstrapped there.
    pub bootstrap_node: String,
    pub talos_version: String,
    pub kubernetes_version: String,
    pub pod_subnet: Ipv4Net,
    pub service_subnet: Ipv4Net,
    pub schematic_id: String,
    pub iso_url: String,
    pub iso_file: String,
    pub installer_image: String,
    pub default_route: LinkRole,
    pub masquerade: bool,
    pub hosts: Vec<HostPlan>,
    pub nodes: Vec<NodePlan>,
    pub metallb_pool: Option<AddrRange>,
    /// Routes the gateway needs so pods are reachable without NAT.
    pub gateway_routes: Vec<GatewayRoute>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct HostPlan {
    pub name: String,
    pub address: Ipv4Addr,
    pub vmids: Vec<u32>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct NodePlan {
    pub name: String,
    pub host: String,
    pub vmid: u32,
    pub role: Role,
    pub cores: u32,
    pub memory_mib: u32,
    pub disk_gib: u32,
    pub management: NicPlan,
    /// `net1`/`eth1`; absent in a one-network cluster, where `management` carries both roles.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub workload: Option<NicPlan>,
    #[serde(rename = "podCIDR")]
    pub pod_cidr: Ipv4Net,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct NicPlan {
    /// `net0`/`net1` in Proxmox; `eth0`/`eth1` in the nocloud guest.
    pub index: u8,
    pub guest_name: String,
    /// Talos link alias bound to this NIC's MAC.
    pub alias: String,
    pub bridge: String,
    /// None: untagged (no `tag=` on the Proxmox NIC).
    pub vlan: Option<u16>,
    /// Upper-case, as Proxmox reports it.
    pub mac: String,
    /// Address with the network's prefix length.
    pub address: Ipv4Net,
    /// Set only on the link that carries the default route.
    pub gateway: Option<Ipv4Addr>,
    pub mtu: u32,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct GatewayRoute {
    pub destination: Ipv4Net,
    pub via: Ipv4Addr,
    pub node: String,
}

impl NodePlan {
    /// The NIC carrying `role` (the management NIC carries both with one network).
    pub fn nic(&self, role: LinkRole) -> &NicPlan {
        match role {
            LinkRole::Management => &self.management,
            LinkRole::Workload => self.workload.as_ref().unwrap_or(&self.management),
        }
    }
    /// The node's NICs in `netN` order: one or two.
    pub fn nics(&self) -> impl Iterator<Item = &NicPlan> {
        std::iter::once(&self.management).chain(&self.workload)
    }
}

impl Plan {
    pub fn build(p: &Profile) -> Result<Plan, PlanError> {
        interpolated_values(p)?;
        let mgmt = p
            .network(NetworkRole::Management)
            .ok_or(PlanError::MissingNetwork("management"))?;
        // No workload network: one network, one NIC per node carrying both roles.
        let work = p.network(NetworkRole::Workload);
        let pod_cidrs = pod_cidrs(p)?;
        let via = p.routing.default_route;
        let mut nodes = Vec::with_capacity(p.nodes.len());
        for (i, (n, pod_cidr)) in p.nodes.iter().zip(pod_cidrs).enumerate() {
            let nic =
                |role: LinkRole, net: &Network, link: &NodeLink| -> Result<NicPlan, PlanError> {
                    let (index, alias, label) = match role {
                        LinkRole::Management => (0u8, "mgmt", "management"),
                        LinkRole::Workload => (1u8, "work", "workload"),
                    };
                    let mac = match &link.mac {
                        Some(m) => normalize_mac(m).ok_or_else(|| PlanError::BadMac {
                            index: i,
                            link: label,
                            mac: m.clone(),
                        })?,
                        None => derive_mac(&p.metadata.name, &n.name, index),
                    };
                    Ok(NicPlan {
                        index,
                        guest_name: format!("eth{index}"),
                        alias: alias.into(),
                        bridge: p.proxmox.bridge.clone(),
                        vlan: net.vlan,
                        mac,
                        address: Ipv4Net::new(link.address, net.subnet.prefix_len())
                            .expect("prefix from a parsed net"),
                        gateway: if role == via || work.is_none() {
                            net.gateway
                        } else {
                            None
                        },
                        mtu: net.mtu,
                    })
                };
            let r = p.resources(n);
            nodes.push(NodePlan {
                name: n.name.clone(),
                host: n.host.clone(),
                vmid: n.vmid,
                role: n.role,
                cores: r.cores,
                memory_mib: r.memory,
                disk_gib: r.disk,
                management: nic(LinkRole::Management, mgmt, &n.management)?,
                workload: match (work, &n.workload) {
                    (Some(net), Some(link)) => Some(nic(LinkRole::Workload, net, link)?),
                    (Some(_), None) => return Err(PlanError::MissingWorkloadLink(n.name.clone())),
                    (None, _) => None,
                },
                pod_cidr,
            });
        }
        let hosts = p
            .proxmox
            .hosts
            .iter()
            .map(|h| HostPlan {
                name: h.name.clone(),
                address: h.address,
                vmids: nodes
                    .iter()
                    .filter(|n| n.host == h.name)
                    .map(|n| n.vmid)
                    .collect(),
            })
            .collect();
        let gateway_routes = nodes
            .iter()
            .map(|n| GatewayRoute {
                destination: n.pod_cidr,
                via: n.nic(LinkRole::Workload).address.addr(),
                node: n.name.clone(),
            })
            .collect();
        let schematic_id = schematic_id(&p.talos.schematic);
        let factory = p.talos.image_factory.trim_end_matches('/');
        let factory_host = image_factory_host(p);
        let version = &p.talos.version;
        Ok(Plan {
            format: PLAN_FORMAT,
            cluster: p.metadata.name.clone(),
            endpoint: p.kubernetes.endpoint.clone(),
            bootstrap_node: bootstrap_node(p).unwrap_or_default(),
            talos_version: version.clone(),
            kubernetes_version: p.kubernetes.version.clone(),
            pod_subnet: p.kubernetes.pod_subnet,
            service_subnet: p.kubernetes.service_subnet,
            iso_url: format!("{factory}/image/{schematic_id}/{version}/nocloud-amd64.iso"),
            iso_file: format!("talos-{version}-{}-nocloud-amd64.iso", &schematic_id[..12]),
            installer_image: format!("{factory_host}/nocloud-installer/{schematic_id}:{version}"),
            schematic_id,
            default_route: via,
            masquerade: p.routing.masquerade,
            hosts,
            nodes,
            metallb_pool: p.addons.metallb.as_ref().map(|m| m.pool),
            gateway_routes,
        })
    }

    pub fn node(&self, name: &str) -> Option<&NodePlan> {
        self.nodes.iter().find(|n| n.name == name)
    }

    pub fn control_planes(&self) -> impl Iterator<Item = &NodePlan> {
        self.nodes.iter().filter(|n| n.role == Role::Controlplane)
    }
}

/// The host part of `kubernetes.endpoint` (`https://10.8.16.20:6443` → `10.8.16.20`).
pub fn endpoint_host(endpoint: &str) -> Option<&str> {
    let rest = endpoint.strip_prefix("https://")?;
    let authority = rest.split('/').next()?;
    let host = match authority.rsplit_once(':') {
        Some((h, port)) if port.chars().all(|c| c.is_ascii_digit()) => h,
        _ => authority,
    };
    (!host.is_empty()).then_some(host)
}

/// The control-plane node whose management address (or DNS name) the endpoint names.
/// `talos.imageFactory` without scheme or trailing slash: the installer image's registry.
pub fn image_factory_host(p: &Profile) -> &str {
    let factory = p.talos.image_factory.trim_end_matches('/');
    factory.split_once("://").map_or(factory, |(_, h)| h)
}

pub fn bootstrap_node(p: &Profile) -> Option<String> {
    let host = endpoint_host(&p.kubernetes.endpoint)?;
    let domain = p.dns.domain.as_deref();
    let by_record = p
        .dns
        .records
        .iter()
        .find(|r| {
            Some(r.name.as_str()) == host.split('.').next()
                && domain.is_some_and(|d| host.ends_with(d))
                || r.name == host
        })
        .map(|r| r.address);
    let addr: Option<Ipv4Addr> = host.parse().ok().or(by_record);
    p.nodes
        .iter()
        .filter(|n| n.role == Role::Controlplane)
        .find(|n| {
            Some(n.management.address) == addr
                || n.name == host
                || domain.is_some_and(|d| host == format!("{}.{d}", n.name))
        })
        .map(|n| n.name.clone())
}

/// Each node's pod CIDR: given, or the next free `/nodePodPrefix` of the pod subnet in node order.
pub fn pod_cidrs(p: &Profile) -> Result<Vec<Ipv4Net>, PlanError> {
    let subnet = p.kubernetes.pod_subnet;
    let prefix = p.kubernetes.node_pod_prefix;
    let mut free: Box<dyn Iterator<Item = Ipv4Net>> =
        if p.nodes.iter().all(|n| n.pod_cidr.is_some()) {
            Box::new(std::iter::empty())
        } else {
            let subnets = subnet
                .subnets(prefix)
                .map_err(|_| PlanError::BadNodePrefix { subnet, prefix })?;
            let taken: Vec<Ipv4Net> = p.nodes.iter().filter_map(|n| n.pod_cidr).collect();
            Box::new(subnets.filter(move |s| !taken.iter().any(|t| t.contains(s) || s.contains(t))))
        };
    let mut out = Vec::with_capacity(p.nodes.len());
    for n in &p.nodes {
        match n.pod_cidr {
            Some(c) => out.push(c),
            None => match free.next() {
                Some(c) => out.push(c),
                None => {
                    let room = if prefix >= subnet.prefix_len() {
                        1u64 << (prefix - subnet.prefix_len()).min(63)
                    } else {
                        0
                    };
                    return Err(PlanError::PodSubnetTooSmall {
                        subnet,
                        prefix,
                        room,
                        nodes: p.nodes.len(),
                    });
                }
            },
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::homelab;

    #[test]
    fn homelab_plan_has_the_corrected_layout() {
        let plan = Plan::build(&homelab()).unwrap();
        assert_eq!(plan.bootstrap_node, "talos-k8s-01");
        let n1 = plan.node("talos-k8s-01").unwrap();
        assert_eq!(n1.management.address.to_string(), "10.8.16.20/24");
        assert_eq!(
            n1.workload.as_ref().unwrap().address.to_string(),
            "10.8.28.20/22"
        );
        assert_eq!(
            n1.workload.as_ref().unwrap().gateway,
            Some("10.8.28.1".parse().unwrap())
        );
        assert_eq!(n1.management.gateway, None);
        assert_eq!(
            (n1.management.vlan, n1.workload.as_ref().unwrap().vlan),
            (Some(16), Some(28))
        );
        assert_eq!(n1.pod_cidr.to_string(), "10.8.32.0/24");
        assert_eq!(
            plan.gateway_routes[2].destination.to_string(),
            "10.8.34.0/24"
        );
        assert_eq!(plan.gateway_routes[2].via.to_string(), "10.8.28.22");
        assert_eq!(
            plan.schematic_id,
            "ce4c980550dd2ab1b17bbf2b08801c7eb59418eafe8f279833297925d67c7515"
        );
        assert_eq!(
            plan.installer_image,
            "factory.talos.dev/nocloud-installer/ce4c980550dd2ab1b17bbf2b08801c7eb59418eafe8f279833297925d67c7515:v1.13.9"
        );
    }

    #[test]
    fn a_one_network_plan_has_one_nic_per_node_with_the_gateway() {
        let plan = Plan::build(&crate::test_support::one_network()).unwrap();
        let n = plan.node("talos-2").unwrap();
        assert!(n.workload.is_none());
        assert_eq!(n.nics().count(), 1);
        assert_eq!(n.management.address.to_string(), "192.168.1.31/24");
        assert_eq!(n.management.gateway, Some("192.168.1.1".parse().unwrap()));
        assert_eq!(n.management.vlan, None);
        // The workload role is the same NIC.
        assert_eq!(n.nic(LinkRole::Workload), &n.management);
        let json = serde_json::to_value(&plan).unwrap();
        assert!(json["nodes"][1].get("workload").is_none(), "{json}");
        // A two-network profile whose node lacks its workload link is refused, not guessed.
        let mut p = homelab();
        p.nodes[1].workload = None;
        assert_eq!(
            Plan::build(&p),
            Err(PlanError::MissingWorkloadLink("talos-k8s-02".into()))
        );
    }

    #[test]
    fn pod_cidrs_are_derived_in_node_order_when_omitted() {
        let mut p = homelab();
        for n in &mut p.nodes {
            n.pod_cidr = None;
        }
        p.nodes[1].pod_cidr = Some("10.8.32.0/24".parse().unwrap());
        let got: Vec<String> = pod_cidrs(&p)
            .unwrap()
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(got, ["10.8.33.0/24", "10.8.32.0/24", "10.8.34.0/24"]);
        p.kubernetes.node_pod_prefix = 23;
        p.nodes[1].pod_cidr = None;
        assert!(matches!(
            pod_cidrs(&p),
            Err(PlanError::PodSubnetTooSmall { .. })
        ));
    }

    /// Issue 11 §5/§8 with lint skipped: values interpolated into URLs, image tags
    /// and paths are refused by the plan itself.
    #[test]
    fn interpolated_values_are_refused_without_lint() {
        let cases: [crate::test_support::Mutation; 6] = [
            ("metadata.name", |p| {
                p.metadata.name = "../../escaped".into()
            }),
            ("nodes[1].name", |p| p.nodes[1].name = "a/b".into()),
            ("kubernetes.version", |p| {
                p.kubernetes.version = "1.36.3@sha256:0".into()
            }),
            ("talos.version", |p| p.talos.version = "v1.13.9 ".into()),
            ("talos.imageFactory", |p| {
                p.talos.image_factory = "https://f.example/x?y=".into()
            }),
            ("talos.installDisk", |p| p.talos.install_disk = "/".into()),
        ];
        for (field, mutate) in cases {
            let mut p = crate::test_support::homelab();
            mutate(&mut p);
            let e = Plan::build(&p).unwrap_err();
            assert!(
                matches!(&e, PlanError::Value { field: f, .. } if f == field),
                "{field}: {e}"
            );
        }
    }

    #[test]
    fn endpoint_host_parses_urls() {
        assert_eq!(endpoint_host("https://10.8.16.20:6443"), Some("10.8.16.20"));
        assert_eq!(
            endpoint_host("https://k8s-api.lab.local"),
            Some("k8s-api.lab.local")
        );
        assert_eq!(endpoint_host("http://x:6443"), None);
    }
}
