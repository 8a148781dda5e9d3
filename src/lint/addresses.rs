//! NET0xx: static addresses (nodes, hosts, devices, gateways) against their subnets,
//! each other and the reserved ranges.

use super::facts::{Claim, Facts, Holder, is_network_or_broadcast, net_label};
use super::{Finding, Rule, Severity};
use crate::plan::{derive_mac, normalize_mac};
use crate::profile::LinkRole;

pub const OUTSIDE_SUBNET: Rule = Rule::new(
    "NET001",
    Severity::Error,
    "address outside the subnet of its network",
);
pub const NETWORK_OR_BROADCAST: Rule = Rule::new(
    "NET002",
    Severity::Error,
    "address is the network or broadcast address of its subnet",
);
pub const GATEWAY_CONFLICT: Rule = Rule::new(
    "NET003",
    Severity::Error,
    "address equals a network's gateway",
);
pub const DUPLICATE: Rule = Rule::new(
    "NET004",
    Severity::Error,
    "address used twice (nodes, hosts, devices, out-of-band, storage)",
);
pub const IN_DHCP_RANGE: Rule = Rule::new(
    "NET005",
    Severity::Error,
    "static address inside a `dhcp: true` reservation",
);
pub const IN_RESERVED_RANGE: Rule = Rule::new(
    "NET006",
    Severity::Info,
    "node address inside a reserved range",
);
pub const RESERVATION_OUTSIDE: Rule = Rule::new(
    "NET007",
    Severity::Error,
    "reserved range outside the subnet of its network",
);
pub const UNKNOWN_NETWORK: Rule = Rule::new(
    "NET008",
    Severity::Warning,
    "host/out-of-band/storage address in no declared network",
);
pub const BAD_MAC: Rule = Rule::new(
    "NET009",
    Severity::Error,
    "pinned MAC is not a unicast MAC address",
);
pub const DUPLICATE_MAC: Rule =
    Rule::new("NET010", Severity::Error, "MAC address used by two NICs");

pub fn check(f: &Facts, out: &mut Vec<Finding>) {
    outside_subnet(f, out);
    network_or_broadcast(f, out);
    collisions(f, out);
    in_reserved(f, out);
    reservation_outside(f, out);
    unknown_network(f, out);
    bad_mac(f, out);
    duplicate_mac(f, out);
}

fn outside_subnet(f: &Facts, out: &mut Vec<Finding>) {
    for c in f.claims.iter().filter(|c| c.holder != Holder::Gateway) {
        let Some(i) = c.network else { continue };
        let net = f.network(i);
        if !net.subnet.contains(&c.addr) {
            out.push(OUTSIDE_SUBNET.at(
                &c.path,
                format!(
                    "{} ({}) is outside {} of {}, so it is not on-link there",
                    c.what,
                    c.addr,
                    net.subnet,
                    net_label(net)
                ),
                format!("pick a free address inside {}", net.subnet),
            ));
        }
    }
}

fn network_or_broadcast(f: &Facts, out: &mut Vec<Finding>) {
    for c in f.claims.iter().filter(|c| c.holder != Holder::Gateway) {
        let Some(i) = c.network.or_else(|| f.network_of(c.addr)) else {
            continue;
        };
        let net = f.network(i);
        if is_network_or_broadcast(&net.subnet, c.addr) {
            out.push(NETWORK_OR_BROADCAST.at(
                &c.path,
                format!(
                    "{} ({}) is the network or broadcast address of {}, which no host may use",
                    c.what, c.addr, net.subnet
                ),
                format!("pick a host address strictly inside {}", net.subnet),
            ));
        }
    }
}

/// Two claims on one address: reported at the claim that is most likely the mistake
/// (a node over a host over a device over a gateway; otherwise the later one).
fn collisions(f: &Facts, out: &mut Vec<Finding>) {
    for (j, b) in f.claims.iter().enumerate() {
        for a in f.claims[..j].iter().filter(|a| a.addr == b.addr) {
            let (keep, blame): (&Claim, &Claim) = if a.holder > b.holder { (b, a) } else { (a, b) };
            let finding = if keep.holder == Holder::Gateway {
                GATEWAY_CONFLICT.at(
                    &blame.path,
                    format!(
                        "{} ({}) is {}: two hosts answering ARP for one address break the segment",
                        blame.what, blame.addr, keep.what
                    ),
                    format!(
                        "give it a free address that is not the gateway ({} stays the gateway)",
                        keep.addr
                    ),
                )
            } else {
                DUPLICATE.at(
                    &blame.path,
                    format!(
                        "{} ({}) is also {} (`{}`)",
                        blame.what, blame.addr, keep.what, keep.path
                    ),
                    "give each host, node and device its own address",
                )
            };
            out.push(finding);
        }
    }
}

fn in_reserved(f: &Facts, out: &mut Vec<Finding>) {
    for c in f.claims.iter().filter(|c| c.holder != Holder::Gateway) {
        for (i, net) in f.p.networks.iter().enumerate() {
            for (j, r) in net.reserved.iter().enumerate() {
                if !r.range.contains(c.addr) {
                    continue;
                }
                let where_ = format!(
                    "networks[{i}].reserved[{j}] ({}, \"{}\")",
                    r.range, r.purpose
                );
                if r.dhcp {
                    out.push(IN_DHCP_RANGE.at(
                        &c.path,
                        format!(
                            "{} ({}) lies in the DHCP pool {where_}; the DHCP server may lease it to another client",
                            c.what, c.addr
                        ),
                        "move the address out of the DHCP pool, or shrink the pool on the DHCP server and in the profile",
                    ));
                } else if c.holder == Holder::Node {
                    out.push(IN_RESERVED_RANGE.at(
                        &c.path,
                        format!("{} ({}) lies in the reserved range {where_}", c.what, c.addr),
                        "fine if the reservation is meant for these VMs; otherwise pick an address outside it",
                    ));
                }
            }
        }
    }
}

fn reservation_outside(f: &Facts, out: &mut Vec<Finding>) {
    for (i, net) in f.p.networks.iter().enumerate() {
        for (j, r) in net.reserved.iter().enumerate() {
            if !r.range.within(&net.subnet) {
                out.push(RESERVATION_OUTSIDE.at(
                    format!("networks[{i}].reserved[{j}].range"),
                    format!(
                        "reserved range {} is not inside {} of {}",
                        r.range,
                        net.subnet,
                        net_label(net)
                    ),
                    format!("write a range inside {}", net.subnet),
                ));
            }
        }
    }
}

fn unknown_network(f: &Facts, out: &mut Vec<Finding>) {
    for c in &f.claims {
        if c.network.is_none() && f.network_of(c.addr).is_none() {
            out.push(UNKNOWN_NETWORK.at(
                &c.path,
                format!(
                    "{} ({}) is in no network of the profile, so overlaps with it cannot be checked",
                    c.what, c.addr
                ),
                "add the network it lives on to `networks`, or correct the address",
            ));
        }
    }
}

/// Every NIC of every node: (profile path of its `mac`, pinned MAC, MAC it will have).
/// The effective MAC is `None` when the pinned value does not parse.
fn nic_macs<'a>(
    f: &'a Facts,
) -> impl Iterator<Item = (String, Option<&'a String>, Option<String>)> + 'a {
    f.p.nodes.iter().enumerate().flat_map(move |(i, n)| {
        [
            (LinkRole::Management, "management", 0u8),
            (LinkRole::Workload, "workload", 1u8),
        ]
        .into_iter()
        // A one-NIC node has no workload MAC of its own.
        .filter(|(role, ..)| *role == LinkRole::Management || n.workload.is_some())
        .map(move |(role, label, index)| {
            let pinned = n.link(role).mac.as_ref();
            let effective = match pinned {
                Some(m) => normalize_mac(m),
                None => Some(derive_mac(&f.p.metadata.name, &n.name, index)),
            };
            (format!("nodes[{i}].{label}.mac"), pinned, effective)
        })
    })
}

fn bad_mac(f: &Facts, out: &mut Vec<Finding>) {
    for (path, pinned, effective) in nic_macs(f) {
        let Some(mac) = pinned else { continue };
        let unicast = effective
            .and_then(|m| u8::from_str_radix(&m[..2], 16).ok())
            .is_some_and(|first| first & 1 == 0);
        if !unicast {
            out.push(BAD_MAC.at(
                path,
                format!("`{mac}` is not a unicast MAC address"),
                "write six hex pairs such as BC:24:11:00:16:20, or drop the field to derive one",
            ));
        }
    }
}

/// Pinned and derived MACs together: two NICs with one MAC break the bridge's forwarding.
fn duplicate_mac(f: &Facts, out: &mut Vec<Finding>) {
    let mut seen: Vec<(String, String)> = Vec::new();
    for (path, _, effective) in nic_macs(f) {
        let Some(mac) = effective else { continue };
        if let Some((_, first)) = seen.iter().find(|(m, _)| *m == mac) {
            out.push(DUPLICATE_MAC.at(
                &path,
                format!("MAC {mac} is also the MAC of `{first}`"),
                "give every NIC its own MAC, or drop the pinned value to derive one",
            ));
        }
        seen.push((mac, path));
    }
}
