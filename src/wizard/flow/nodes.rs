//! Page "nodes": how many, and per node its name, host, VMID, role and addresses,
//! with defaults that are free on the networks chosen before.

use super::*;

/// The first address from the `from`-th on that nobody in `taken` holds (discovered
/// hosts on a flat LAN often sit at .20 and up).
fn free_from(net: &Network, from: u32, taken: &[(Ipv4Addr, String)]) -> Ipv4Addr {
    let room = net.subnet.hosts().count() as u32;
    (from..room)
        .map(|k| nth(&net.subnet, k))
        .find(|a| Some(*a) != net.gateway && taken.iter().all(|(t, _)| t != a))
        .unwrap_or_else(|| nth(&net.subnet, from))
}

/// Hosts that carry two or more control planes while another host could take one:
/// losing that host loses etcd quorum with them.
fn shared_control_plane_hosts(nodes: &[Node], host_count: usize) -> Vec<String> {
    if host_count < 2 {
        return Vec::new();
    }
    let mut by_host: std::collections::BTreeMap<&str, Vec<&str>> = Default::default();
    for n in nodes.iter().filter(|n| n.role == Role::Controlplane) {
        by_host.entry(&n.host).or_default().push(&n.name);
    }
    by_host
        .into_iter()
        .filter(|(_, cps)| cps.len() > 1)
        .map(|(host, cps)| {
            format!(
                "control planes {} share host {host}: losing it loses etcd quorum with them; spread them over hosts",
                cps.join(" and ")
            )
        })
        .collect()
}

impl Flow<'_> {
    /// Addresses already claimed by something other than node `skip`.
    pub(super) fn taken(&self, skip: usize) -> Vec<(Ipv4Addr, String)> {
        let mut v = Vec::new();
        for n in &self.d.networks {
            v.extend(n.gateway.map(|g| (g, format!("the {} gateway", n.name))));
            v.extend(n.devices.iter().map(|d| (d.address, d.name.clone())));
        }
        for h in &self.d.proxmox.hosts {
            v.push((h.address, h.name.clone()));
            v.extend(h.oob.iter().map(|d| (d.address, d.name.clone())));
        }
        for (_, n) in self.d.nodes.iter().enumerate().filter(|(i, _)| *i != skip) {
            v.push((n.management.address, n.name.clone()));
            v.extend(n.workload.as_ref().map(|w| (w.address, n.name.clone())));
        }
        v
    }

    pub(super) fn nodes(&mut self, discovery: &dyn Discovery) -> Result<(), WizardError> {
        let hosts: Vec<String> = self
            .d
            .proxmox
            .hosts
            .iter()
            .map(|h| h.name.clone())
            .collect();
        let count_default = if self.d.nodes.is_empty() {
            hosts.len()
        } else {
            self.d.nodes.len()
        };
        let count = self.ask("Number of Talos nodes", &count_default.to_string(), |s| {
            let n: usize = parse::number(s, "node count")?;
            if (1..=64).contains(&n) {
                Ok(n)
            } else {
                Err("between 1 and 64 nodes".into())
            }
        })?;
        let free = discovery.next_free_vmids(count)?;
        let in_use = discovery.used_vmids()?;
        let required = |role: NetworkRole, name: &str| {
            self.net(role).cloned().ok_or_else(|| {
                WizardError::Unusable(
                    format!("the draft has no {name} network"),
                    "answer the network questions before the node questions".into(),
                )
            })
        };
        let mgmt = required(NetworkRole::Management, "management")?;
        // None: one network, one NIC per node.
        let work = self.net(NetworkRole::Workload).cloned();
        self.d.nodes.truncate(count);
        let roles = vec!["controlplane".to_owned(), "worker".to_owned()];
        for i in 0..count {
            let prev = self.d.nodes.get(i).cloned();
            let default_name = prev
                .as_ref()
                .map_or_else(|| format!("talos-k8s-{:02}", i + 1), |n| n.name.clone());
            let used_names: Vec<String> =
                self.d.nodes[..i].iter().map(|n| n.name.clone()).collect();
            let name = self.ask(&format!("Node {} name", i + 1), &default_name, |s| {
                let n = parse::dns_label(s)?;
                if used_names.contains(&n) {
                    Err(format!("{n} is already a node"))
                } else {
                    Ok(n)
                }
            })?;
            let host_default = prev
                .as_ref()
                .and_then(|n| hosts.iter().position(|h| *h == n.host))
                .unwrap_or(i % hosts.len());
            let host =
                hosts[self
                    .p
                    .select(&format!("{name}: Proxmox host"), &hosts, host_default)?]
                .clone();
            let used_ids: Vec<u32> = self.d.nodes[..i].iter().map(|n| n.vmid).collect();
            let vmid_default = prev
                .as_ref()
                .map_or(free.get(i).copied().unwrap_or(100 + i as u32), |n| n.vmid);
            let vmid = self.ask(&format!("{name}: VMID"), &vmid_default.to_string(), |s| {
                let id: u32 = parse::number(s, "VMID")?;
                if !(100..=999_999_999).contains(&id) {
                    Err("Proxmox VMIDs run from 100 to 999999999".into())
                } else if used_ids.contains(&id) {
                    Err(format!("VMID {id} is already another node's"))
                } else if let Some((_, guest)) = in_use.iter().find(|(u, _)| *u == id) {
                    Err(format!(
                        "VMID {id} is already used by {guest} in the Proxmox cluster"
                    ))
                } else {
                    Ok(id)
                }
            })?;
            let role_default = usize::from(prev.as_ref().is_some_and(|n| n.role == Role::Worker));
            let role = match self
                .p
                .select(&format!("{name}: role"), &roles, role_default)?
            {
                0 => Role::Controlplane,
                _ => Role::Worker,
            };
            let taken = self.taken(i);
            let addr = |net: &Network, cur: Option<Ipv4Addr>, taken: &[(Ipv4Addr, String)]| {
                // An earlier answer stays the default only while it fits the network
                // (going back and changing the subnet moves the defaults with it).
                let d = cur
                    .filter(|a| net.subnet.contains(a))
                    .unwrap_or_else(|| free_from(net, 20 + i as u32, taken));
                let taken = taken.to_vec();
                let net = net.clone();
                (d.to_string(), move |s: &str| {
                    let ip = parse::host_in(parse::ipv4(s)?, &net.subnet, net.gateway)?;
                    match taken.iter().find(|(a, _)| *a == ip) {
                        Some((_, who)) => Err(format!("{ip} is already used by {who}")),
                        None => Ok(ip),
                    }
                })
            };
            let (def, check) = addr(&mgmt, prev.as_ref().map(|n| n.management.address), &taken);
            let label = if work.is_some() {
                "management address"
            } else {
                "address"
            };
            let m = self.ask(&format!("{name}: {label}"), &def, check)?;
            let w = match &work {
                Some(work) => {
                    let mut taken = taken;
                    taken.push((m, name.clone()));
                    let cur = prev
                        .as_ref()
                        .and_then(|n| n.workload.as_ref())
                        .map(|w| w.address);
                    let (def, check) = addr(work, cur, &taken);
                    Some(NodeLink::new(self.ask(
                        &format!("{name}: workload address"),
                        &def,
                        check,
                    )?))
                }
                None => None,
            };
            let node = Node {
                name,
                host,
                vmid,
                role,
                management: NodeLink::new(m),
                workload: w,
                pod_cidr: None,
                cores: None,
                memory: None,
                disk: None,
            };
            if i < self.d.nodes.len() {
                self.d.nodes[i] = node;
            } else {
                self.d.nodes.push(node);
            }
        }
        for warning in shared_control_plane_hosts(&self.d.nodes, hosts.len()) {
            self.p.note(&format!("  ⚠ {warning}"));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn two_control_planes_on_one_of_several_hosts_are_warned() {
        let node = |name: &str, host: &str| Node {
            name: name.into(),
            host: host.into(),
            vmid: 100,
            role: Role::Controlplane,
            management: NodeLink::new(Ipv4Addr::LOCALHOST),
            workload: None,
            pod_cidr: None,
            cores: None,
            memory: None,
            disk: None,
        };
        let nodes = [node("cp1", "a"), node("cp2", "a"), node("cp3", "b")];
        let w = shared_control_plane_hosts(&nodes, 2);
        assert_eq!(w.len(), 1);
        assert!(w[0].contains("cp1 and cp2 share host a"), "{w:?}");
        assert!(shared_control_plane_hosts(&nodes, 1).is_empty());
        assert!(shared_control_plane_hosts(&nodes[1..], 2).is_empty());
    }
}
