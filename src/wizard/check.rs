//! The wizard's own final check, used until `lint` is plugged in: duplicate addresses,
//! names and VMIDs across the whole profile, which single answers cannot see.

use std::net::Ipv4Addr;

use crate::profile::Profile;

/// Problems found, one sentence each; empty when none.
pub fn basic_check(p: &Profile) -> Vec<String> {
    let mut out = Vec::new();
    let mut seen: Vec<(Ipv4Addr, String)> = Vec::new();
    let mut claim = |ip: Ipv4Addr, who: String, out: &mut Vec<String>| {
        if let Some((_, other)) = seen.iter().find(|(a, _)| *a == ip) {
            out.push(format!("{ip} is used by both {other} and {who}"));
        } else {
            seen.push((ip, who));
        }
    };
    for n in &p.networks {
        if let Some(g) = n.gateway {
            claim(g, format!("the {} gateway", n.name), &mut out);
        }
        for d in &n.devices {
            claim(d.address, d.name.clone(), &mut out);
        }
    }
    for h in &p.proxmox.hosts {
        claim(h.address, h.name.clone(), &mut out);
        for d in &h.oob {
            claim(d.address, d.name.clone(), &mut out);
        }
    }
    for n in &p.nodes {
        claim(
            n.management.address,
            format!("{} (management)", n.name),
            &mut out,
        );
        claim(
            n.workload.address,
            format!("{} (workload)", n.name),
            &mut out,
        );
    }
    for (i, n) in p.nodes.iter().enumerate() {
        if p.nodes[..i].iter().any(|m| m.name == n.name) {
            out.push(format!("node name {} is used twice", n.name));
        }
        if p.nodes[..i].iter().any(|m| m.vmid == n.vmid) {
            out.push(format!("VMID {} is used twice", n.vmid));
        }
    }
    out
}
