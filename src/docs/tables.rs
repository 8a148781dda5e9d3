//! The Markdown tables of the network document: VLANs, per-VLAN allocations, node
//! interfaces, MetalLB, gateway routes and DNS records.

use std::fmt::Write;
use std::net::Ipv4Addr;

use crate::plan::Plan;
use crate::profile::{LinkRole, Network, NetworkRole, Profile};

/// A Markdown table; cells are escaped so profile text cannot break the layout.
pub fn md_table(header: &[&str], rows: &[Vec<String>]) -> String {
    let esc = |s: &str| s.replace('|', "\\|").replace('\n', " ");
    let mut s = format!(
        "| {} |\n|{}\n",
        header.join(" | "),
        "---|".repeat(header.len())
    );
    for r in rows {
        let cells: Vec<String> = r.iter().map(|c| esc(c)).collect();
        let _ = writeln!(s, "| {} |", cells.join(" | "));
    }
    s
}

pub fn role_name(r: NetworkRole) -> &'static str {
    match r {
        NetworkRole::Infrastructure => "infrastructure",
        NetworkRole::Management => "management",
        NetworkRole::Workload => "workload",
        NetworkRole::Storage => "storage",
        NetworkRole::Other => "other",
    }
}

pub fn vlans(p: &Profile) -> String {
    let rows: Vec<Vec<String>> = p
        .networks
        .iter()
        .map(|n| {
            vec![
                n.vlan.map_or_else(|| "untagged".into(), |v| v.to_string()),
                n.name.clone(),
                role_name(n.role).into(),
                n.subnet.to_string(),
                n.gateway.map_or("-".into(), |g| g.to_string()),
                n.mtu.to_string(),
                if n.routed { "yes" } else { "no (isolated)" }.into(),
            ]
        })
        .collect();
    md_table(
        &["VLAN", "Name", "Role", "Subnet", "Gateway", "MTU", "Routed"],
        &rows,
    )
}

/// One allocation: sort key, address text, holder, kind, notes.
type Alloc = (u32, String, String, String, String);

fn alloc(addr: Ipv4Addr, name: &str, kind: &str, notes: String) -> Alloc {
    (
        u32::from(addr),
        addr.to_string(),
        name.into(),
        kind.into(),
        notes,
    )
}

/// Everything of the profile and plan that lives on `net`, by address.
pub fn allocations(p: &Profile, plan: &Plan, net: &Network) -> String {
    let inside = |a: &Ipv4Addr| net.subnet.contains(a);
    let mut rows: Vec<Alloc> = Vec::new();
    if let Some(gw) = net.gateway {
        rows.push(alloc(gw, "gateway", "router", String::new()));
    }
    for h in &p.proxmox.hosts {
        if inside(&h.address) {
            let notes = h
                .uplink
                .as_deref()
                .map_or(String::new(), |u| format!("uplink {u}"));
            rows.push(alloc(h.address, &h.name, "Proxmox host", notes));
        }
        if let Some(s) = h.storage.as_ref().filter(|s| inside(&s.address)) {
            let mut notes = s.interface.clone();
            if !s.members.is_empty() {
                let _ = write!(notes, " ({})", s.members.join(" + "));
            }
            if let Some(mtu) = s.mtu {
                let _ = write!(notes, ", MTU {mtu}");
            }
            rows.push(alloc(
                s.address,
                &format!("{}-storage", h.name),
                "storage link",
                notes,
            ));
        }
        for d in h.oob.iter().filter(|d| inside(&d.address)) {
            let kind = d.kind.as_deref().unwrap_or("out-of-band");
            rows.push(alloc(
                d.address,
                &d.name,
                kind,
                format!("out-of-band for {}", h.name),
            ));
        }
    }
    for d in &net.devices {
        rows.push(alloc(
            d.address,
            &d.name,
            d.kind.as_deref().unwrap_or("device"),
            String::new(),
        ));
    }
    for n in &plan.nodes {
        for nic in n.nics() {
            let a = nic.address.addr();
            if inside(&a) {
                let notes = format!("{} (net{}), MAC {}", nic.guest_name, nic.index, nic.mac);
                rows.push(alloc(
                    a,
                    &n.name,
                    &format!("Talos VM ({})", n.role.as_str()),
                    notes,
                ));
            }
        }
    }
    for r in &net.reserved {
        let kind = if r.dhcp { "DHCP pool" } else { "reserved" };
        rows.push((
            u32::from(r.range.first),
            r.range.to_string(),
            r.purpose.clone(),
            kind.into(),
            String::new(),
        ));
    }
    if let Some(pool) = plan.metallb_pool.filter(|pool| pool.within(&net.subnet)) {
        let notes = format!("{} addresses", pool.count());
        rows.push((
            u32::from(pool.first),
            pool.to_string(),
            "MetalLB".into(),
            "LoadBalancer pool".into(),
            notes,
        ));
    }
    if net.role == NetworkRole::Workload {
        for r in &plan.gateway_routes {
            let notes = format!("routed via {} (not on-link)", r.via);
            let key = u32::from(r.destination.network());
            rows.push((
                key,
                r.destination.to_string(),
                r.node.clone(),
                "pod CIDR".into(),
                notes,
            ));
        }
    }
    rows.sort_by(|a, b| (a.0, &a.1).cmp(&(b.0, &b.1)));
    let rows: Vec<Vec<String>> = rows
        .into_iter()
        .map(|(_, a, b, c, d)| vec![a, b, c, d])
        .collect();
    md_table(&["Address", "Name", "Kind", "Notes"], &rows)
}

pub fn node_interfaces(plan: &Plan) -> String {
    let mut rows = Vec::new();
    for n in &plan.nodes {
        for nic in n.nics() {
            rows.push(vec![
                n.name.clone(),
                n.host.clone(),
                n.vmid.to_string(),
                format!("net{} / {} ({})", nic.index, nic.guest_name, nic.alias),
                nic.mac.clone(),
                match nic.vlan {
                    Some(tag) => format!("{} tag {tag}", nic.bridge),
                    None => format!("{} untagged", nic.bridge),
                },
                nic.address.to_string(),
                nic.gateway.map_or("-".into(), |g| g.to_string()),
                nic.mtu.to_string(),
            ]);
        }
    }
    md_table(
        &[
            "Node",
            "Host",
            "VMID",
            "NIC",
            "MAC",
            "Bridge/VLAN",
            "Address",
            "Gateway",
            "MTU",
        ],
        &rows,
    )
}

pub fn metallb(p: &Profile) -> String {
    match &p.addons.metallb {
        Some(m) => md_table(
            &["Pool", "Addresses", "Range", "Announced on", "Version"],
            &[vec![
                m.pool_name.clone(),
                m.pool.count().to_string(),
                m.pool.to_string(),
                match m.interface {
                    _ if p.one_network() => "the nodes' one link (L2)",
                    LinkRole::Management => "management link (L2)",
                    LinkRole::Workload => "workload link (L2)",
                }
                .into(),
                m.version.clone(),
            ]],
        ),
        None => "MetalLB is not configured in this profile.\n".into(),
    }
}

pub fn gateway_routes(plan: &Plan) -> String {
    if plan.masquerade {
        return "Pods are masqueraded (`routing.masquerade: true`); the gateway needs no routes.\n"
            .into();
    }
    let rows: Vec<Vec<String>> = plan
        .gateway_routes
        .iter()
        .map(|r| vec![r.destination.to_string(), r.via.to_string(), r.node.clone()])
        .collect();
    let mut s = String::from(
        "Pods keep their addresses beyond the cluster (no NAT). Add one static route per node on the gateway:\n\n",
    );
    s.push_str(&md_table(&["Destination", "Next hop", "Node"], &rows));
    s
}

pub fn dns(p: &Profile, plan: &Plan) -> String {
    let fqdn = |name: &str| match &p.dns.domain {
        Some(d) => format!("{name}.{d}"),
        None => name.to_string(),
    };
    let mut rows = Vec::new();
    for h in &p.proxmox.hosts {
        rows.push(vec![
            fqdn(&h.name),
            h.address.to_string(),
            "Proxmox host".into(),
        ]);
    }
    for n in &plan.nodes {
        rows.push(vec![
            fqdn(&n.name),
            n.management.address.addr().to_string(),
            "Talos node (management)".into(),
        ]);
    }
    for r in &p.dns.records {
        rows.push(vec![
            fqdn(&r.name),
            r.address.to_string(),
            "extra record".into(),
        ]);
    }
    let mut s = match &p.dns.domain {
        Some(d) => format!("Local zone `{d}` (A records):\n\n"),
        None => "No `dns.domain` is set; names below are unqualified:\n\n".into(),
    };
    s.push_str(&md_table(&["Name", "Address", "For"], &rows));
    if !p.dns.servers.is_empty() {
        let servers: Vec<String> = p.dns.servers.iter().map(ToString::to_string).collect();
        let _ = writeln!(s, "\nResolvers: {}", servers.join(", "));
    }
    s
}
