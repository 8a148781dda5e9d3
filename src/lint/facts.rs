//! What the rules share: the profile plus facts derived once (every static address
//! with its profile path, the effective pod CIDRs, the management/workload networks).
//! In a one-network profile (no `workload` network) the management network is the
//! workload network too, so the workload rules judge that one network.

use std::net::Ipv4Addr;

use ipnet::Ipv4Net;

use crate::plan::{PlanError, pod_cidrs};
use crate::profile::{Network, NetworkRole, Profile};

/// Who holds a static address. Order matters: when two claims collide, the later
/// kind is the one reported (a node address is the field to change, not the gateway).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Holder {
    Gateway,
    Device,
    Host,
    Node,
}

/// A static address declared somewhere in the profile.
#[derive(Debug, Clone)]
pub struct Claim {
    pub addr: Ipv4Addr,
    pub path: String,
    /// Human description: "the gateway of network `workload` (VLAN 28)".
    pub what: String,
    pub holder: Holder,
    /// Index of the network the address must lie in, when the profile says which.
    pub network: Option<usize>,
}

/// A node's effective pod CIDR (given or derived).
#[derive(Debug, Clone)]
pub struct PodCidr {
    pub node: usize,
    pub net: Ipv4Net,
    pub path: String,
}

impl PodCidr {
    fn new((node, net): (usize, Ipv4Net)) -> Self {
        Self {
            node,
            net,
            path: format!("nodes[{node}].podCIDR"),
        }
    }
}

pub struct Facts<'a> {
    pub p: &'a Profile,
    pub mgmt: Option<usize>,
    /// The workload network, or the management network when there is no workload network.
    pub work: Option<usize>,
    pub claims: Vec<Claim>,
    pub pods: Vec<PodCidr>,
    /// Why the pod CIDRs could not all be derived.
    pub pod_error: Option<PlanError>,
}

impl<'a> Facts<'a> {
    pub fn gather(p: &'a Profile) -> Self {
        let find = |role| {
            let mut it = p
                .networks
                .iter()
                .enumerate()
                .filter(|(_, n)| n.role == role);
            it.next().map(|(i, _)| i)
        };
        let mgmt = find(NetworkRole::Management);
        let work = find(NetworkRole::Workload).or(mgmt);
        let (pods, pod_error) = match pod_cidrs(p) {
            Ok(nets) => (
                nets.into_iter().enumerate().map(PodCidr::new).collect(),
                None,
            ),
            Err(e) => {
                let given = p.nodes.iter().enumerate();
                let given = given.filter_map(|(i, n)| n.pod_cidr.map(|c| PodCidr::new((i, c))));
                (given.collect(), Some(e))
            }
        };
        Self {
            p,
            mgmt,
            work,
            claims: claims(p, mgmt, work),
            pods,
            pod_error,
        }
    }

    pub fn network(&self, i: usize) -> &'a Network {
        &self.p.networks[i]
    }

    pub fn work_net(&self) -> Option<&'a Network> {
        self.work.map(|i| self.network(i))
    }

    /// The management and workload networks, each once (one index with one network).
    pub fn link_networks(&self) -> impl Iterator<Item = usize> {
        let work = self.work.filter(|w| Some(*w) != self.mgmt);
        self.mgmt.into_iter().chain(work)
    }

    /// Index of the declared network whose subnet contains `addr`.
    pub fn network_of(&self, addr: Ipv4Addr) -> Option<usize> {
        self.p
            .networks
            .iter()
            .position(|n| n.subnet.contains(&addr))
    }
}

/// `network \`workload\` (VLAN 28)`, `network \`lan\` (untagged)`
pub fn net_label(n: &Network) -> String {
    format!("network `{}` ({})", n.name, n.vlan_label())
}

fn claims(p: &Profile, mgmt: Option<usize>, work: Option<usize>) -> Vec<Claim> {
    let mut out = Vec::new();
    let mut push = |addr, path: String, what: String, holder, network| {
        out.push(Claim {
            addr,
            path,
            what,
            holder,
            network,
        })
    };
    for (i, n) in p.networks.iter().enumerate() {
        if let Some(gw) = n.gateway {
            push(
                gw,
                format!("networks[{i}].gateway"),
                format!("the gateway of {}", net_label(n)),
                Holder::Gateway,
                Some(i),
            );
        }
        for (j, d) in n.devices.iter().enumerate() {
            push(
                d.address,
                format!("networks[{i}].devices[{j}].address"),
                format!("device `{}`", d.name),
                Holder::Device,
                Some(i),
            );
        }
    }
    for (i, h) in p.proxmox.hosts.iter().enumerate() {
        push(
            h.address,
            format!("proxmox.hosts[{i}].address"),
            format!("Proxmox host `{}`", h.name),
            Holder::Host,
            None,
        );
        for (j, d) in h.oob.iter().enumerate() {
            push(
                d.address,
                format!("proxmox.hosts[{i}].oob[{j}].address"),
                format!("out-of-band device `{}`", d.name),
                Holder::Device,
                None,
            );
        }
        if let Some(s) = &h.storage {
            push(
                s.address,
                format!("proxmox.hosts[{i}].storage.address"),
                format!("the storage link of host `{}`", h.name),
                Holder::Host,
                None,
            );
        }
    }
    for (i, n) in p.nodes.iter().enumerate() {
        push(
            n.management.address,
            format!("nodes[{i}].management.address"),
            format!("the management address of node `{}`", n.name),
            Holder::Node,
            mgmt,
        );
        if let Some(w) = &n.workload {
            push(
                w.address,
                format!("nodes[{i}].workload.address"),
                format!("the workload address of node `{}`", n.name),
                Holder::Node,
                work,
            );
        }
    }
    out
}

/// Whether `addr` is the network or broadcast address of `net` (meaningless for /31, /32).
pub fn is_network_or_broadcast(net: &Ipv4Net, addr: Ipv4Addr) -> bool {
    net.prefix_len() < 31 && (addr == net.network() || addr == net.broadcast())
}
