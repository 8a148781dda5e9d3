//! Page "networks": one network (management and workload share it, one NIC per VM) or
//! two (management + workload), then storage and infrastructure (optional); each VLAN
//! may be left empty for an untagged network. The management default follows the LAN
//! the discovered hosts sit on; hosts on such a flat LAN default to one network, the
//! seed's VLAN layout (hosts inside it) to two.

use super::*;

fn role_rank(r: NetworkRole) -> u8 {
    match r {
        NetworkRole::Infrastructure => 0,
        NetworkRole::Management => 1,
        NetworkRole::Workload => 2,
        NetworkRole::Storage => 3,
        NetworkRole::Other => 4,
    }
}

/// Whether a bridge looks VLAN-split: `vmbr0.16`, `vmbr0v16` (Proxmox's per-VLAN
/// bridges of a non-VLAN-aware setup), or a port such as `enp1s0.16`.
fn vlan_split<'b>(bridges: impl IntoIterator<Item = &'b crate::wizard::Bridge>) -> bool {
    let tagged = |name: &str| {
        name.rsplit_once('.')
            .is_some_and(|(_, t)| t.parse::<u16>().is_ok())
            || name.rsplit_once('v').is_some_and(|(b, t)| {
                b.starts_with("vmbr") && !t.is_empty() && t.parse::<u16>().is_ok()
            })
    };
    bridges
        .into_iter()
        .any(|b| tagged(&b.name) || b.ports.iter().any(|p| tagged(p)))
}

impl Flow<'_> {
    pub(super) fn networks(&mut self) -> Result<(), WizardError> {
        let hosts: Vec<Ipv4Addr> = self.d.proxmox.hosts.iter().map(|h| h.address).collect();
        let flat_lan = self
            .net(NetworkRole::Management)
            .and_then(|m| crate::wizard::seed::management_for(m, &hosts));
        if let Some(lan) = flat_lan.clone() {
            self.p.note(&format!(
                "The hosts sit on {}: proposing it (untagged) for the Talos VMs (the management network with two).",
                lan.subnet
            ));
            // The seed's VLAN networks and resolver describe another site: drop them,
            // and resolve through the LAN's router.
            self.d
                .networks
                .retain(|n| matches!(n.role, NetworkRole::Workload | NetworkRole::Other));
            if let Some(gw) = lan.gateway {
                self.d.dns.servers = vec![gw];
            }
            // A home router knows no routes to the pod block: masquerade the pods
            // (otherwise LAN hosts answer pods through the router, asymmetrically).
            self.d.routing.masquerade = true;
            self.d.networks.push(lan);
            self.d.networks.sort_by_key(|n| role_rank(n.role));
        }
        let one_default = self.d.one_network() || (flat_lan.is_some() && !self.vlans_found());
        let choices = [
            "One network: management and workload share it (one NIC per VM)",
            "Two networks: management + workload (two NICs per VM)",
        ]
        .map(String::from);
        let one = self.p.select(
            "Networks for the Talos VMs",
            &choices,
            usize::from(!one_default),
        )? == 0;
        if one {
            if let Some(w) = self.net(NetworkRole::Workload).cloned() {
                self.parked_workload = Some(w);
            }
            self.d.networks.retain(|n| n.role != NetworkRole::Workload);
            for n in &mut self.d.nodes {
                n.workload = None;
            }
        } else if let Some(w) = self.parked_workload.take().filter(|_| self.d.one_network()) {
            self.d.networks.push(w);
            self.d.networks.sort_by_key(|n| role_rank(n.role));
        }
        self.network(NetworkRole::Management, true)?;
        if !one {
            self.network(NetworkRole::Workload, true)?;
        }
        self.network(NetworkRole::Storage, false)?;
        self.network(NetworkRole::Infrastructure, false)?;
        Ok(())
    }

    fn vlans_found(&self) -> bool {
        vlan_split(self.found.iter().flat_map(|h| &h.bridges))
    }

    /// One network; `required` ones have a gateway and cannot be skipped.
    pub(super) fn network(&mut self, role: NetworkRole, required: bool) -> Result<(), WizardError> {
        let (label, question) = match role {
            NetworkRole::Management if self.d.one_network() => ("network", ""),
            NetworkRole::Management => ("management", ""),
            NetworkRole::Workload => ("workload", ""),
            NetworkRole::Storage => (
                "storage",
                "Is there a storage network (Ceph, jumbo frames)?",
            ),
            _ => (
                "infrastructure",
                "Document an infrastructure network (switches, APs) for overlap checks?",
            ),
        };
        let current = self.net(role).cloned();
        if !required && !self.p.confirm(question, current.is_some())? {
            self.d.networks.retain(|n| n.role != role);
            return Ok(());
        }
        let cur = current.unwrap_or_else(|| Network {
            name: format!("{role:?}").to_lowercase(),
            role,
            vlan: None,
            subnet: "10.0.0.0/24".parse().expect("constant"),
            gateway: None,
            mtu: 1500,
            routed: true,
            reserved: vec![],
            devices: vec![],
        });
        let others: Vec<Network> = self
            .d
            .networks
            .iter()
            .filter(|n| n.role != role)
            .cloned()
            .collect();
        let vlan_default = cur.vlan.map(|v| v.to_string()).unwrap_or_default();
        let vlan = self.ask(
            &format!("{label} VLAN (empty: untagged)"),
            &vlan_default,
            |s| {
                let v = match s.trim() {
                    "" => None,
                    s => Some(parse::vlan(s)?),
                };
                match others.iter().find(|o| o.vlan == v) {
                    Some(o) => Err(format!(
                        "{} is already the {} network (at most one network is untagged)",
                        crate::profile::vlan_label(v),
                        o.name
                    )),
                    None => Ok(v),
                }
            },
        )?;
        let subnet = self.ask(&format!("{label} subnet"), &cur.subnet.to_string(), |s| {
            no_overlap(parse::subnet(s)?, &others)
        })?;
        let gw_default = cur
            .gateway
            .filter(|g| subnet.contains(g))
            .unwrap_or_else(|| nth(&subnet, 1))
            .to_string();
        let gw_prompt = if required {
            format!("{label} gateway")
        } else {
            format!("{label} gateway (empty: none)")
        };
        let gateway = self.ask(&gw_prompt, &gw_default, |s| {
            if s.trim().is_empty() && !required {
                return Ok(None);
            }
            parse::host_in(parse::ipv4(s)?, &subnet, None).map(Some)
        })?;
        let (mtu, routed) = if role == NetworkRole::Storage {
            let mtu = self.ask("storage MTU", &cur.mtu.to_string(), |s| {
                let m: u32 = parse::number(s, "MTU")?;
                if (576..=9216).contains(&m) {
                    Ok(m)
                } else {
                    Err(format!("MTU {m} is outside 576-9216"))
                }
            })?;
            let routed = self
                .p
                .confirm("Is the storage network routed to other VLANs?", cur.routed)?;
            (mtu, routed)
        } else {
            (cur.mtu, cur.routed)
        };
        let reserved = self.ask(
            &format!("{label}: reserved ranges (first-last=purpose, ending in `dhcp` for a DHCP pool; …; empty: none)"),
            &parse::reservations_text(&cur.reserved),
            |s| {
                let r = parse::reservations(s)?;
                match r.iter().find(|r| !r.range.within(&subnet)) {
                    Some(bad) => Err(format!("{} is not inside {subnet}", bad.range)),
                    None => Ok(r),
                }
            },
        )?;
        let devices = self.ask(
            &format!("{label}: devices with fixed addresses (name=address, then a kind if you like; …; empty: none)"),
            &parse::devices_text(&cur.devices),
            |s| {
                let d = parse::devices(s)?;
                for dev in &d {
                    parse::host_in(dev.address, &subnet, gateway)
                        .map_err(|e| format!("{}: {e}", dev.name))?;
                }
                Ok(d)
            },
        )?;
        let net = Network {
            name: cur.name,
            role,
            vlan,
            subnet,
            gateway,
            mtu,
            routed,
            reserved,
            devices,
        };
        self.d.networks.retain(|n| n.role != role);
        let at = self
            .d
            .networks
            .iter()
            .position(|n| role_rank(n.role) > role_rank(role))
            .unwrap_or(self.d.networks.len());
        self.d.networks.insert(at, net);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wizard::Bridge;

    #[test]
    fn vlan_split_bridges_are_recognised() {
        let b = |name: &str, port: &str| Bridge {
            name: name.into(),
            ports: vec![port.into()],
        };
        assert!(!vlan_split(&[b("vmbr0", "enp87s0"), b("vmbr1", "eno1")]));
        assert!(vlan_split(&[
            b("vmbr0", "enp87s0"),
            b("vmbr0v16", "enp87s0.16")
        ]));
        assert!(vlan_split(&[b("vmbr16", "bond0.16")]));
        assert!(!vlan_split(&[b("vmbr10", "eth0")]));
    }
}
