//! The human-readable form of a plan (`talos-pve plan`): cluster facts, then per
//! Proxmox host its VMs with both NICs, the MetalLB pool and the gateway routes.

use std::fmt::Write;

use super::{NicPlan, NodePlan, Plan};

/// Column-aligned rows; the last column is not padded.
fn table(rows: &[Vec<String>], indent: &str) -> String {
    let cols = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..cols)
        .map(|c| {
            rows.iter()
                .filter_map(|r| r.get(c))
                .map(|s| s.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for r in rows {
        let mut line = String::from(indent);
        for (c, cell) in r.iter().enumerate() {
            if c + 1 == r.len() {
                line.push_str(cell);
            } else {
                let _ = write!(line, "{cell:<w$}  ", w = widths[c]);
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

fn nic_row(n: &NicPlan) -> Vec<String> {
    vec![
        format!("net{}", n.index),
        n.guest_name.clone(),
        n.alias.clone(),
        n.bridge.clone(),
        n.vlan.map_or_else(|| "untagged".into(), |v| v.to_string()),
        n.mac.clone(),
        n.address.to_string(),
        n.gateway.map_or("-".into(), |g| g.to_string()),
        n.mtu.to_string(),
    ]
}

fn vm_block(n: &NodePlan) -> String {
    let mut s = format!(
        "  VMID {}  {}  {}  {} vCPU, {} MiB, {} GiB disk  pod CIDR {}\n",
        n.vmid,
        n.name,
        n.role.as_str(),
        n.cores,
        n.memory_mib,
        n.disk_gib,
        n.pod_cidr
    );
    let header = [
        "NIC", "GUEST", "ALIAS", "BRIDGE", "VLAN", "MAC", "ADDRESS", "GATEWAY", "MTU",
    ];
    let rows: Vec<Vec<String>> = std::iter::once(header.map(String::from).to_vec())
        .chain(n.nics().map(nic_row))
        .collect();
    s.push_str(&table(&rows, "    "));
    s
}

/// The plan as text tables.
pub fn render_text(plan: &Plan) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "Cluster {}", plan.cluster);
    let facts = [
        (
            "endpoint",
            format!(
                "{} (etcd bootstrap on {})",
                plan.endpoint, plan.bootstrap_node
            ),
        ),
        ("talos", plan.talos_version.clone()),
        ("kubernetes", plan.kubernetes_version.clone()),
        ("pod subnet", plan.pod_subnet.to_string()),
        ("service subnet", plan.service_subnet.to_string()),
        (
            "default route",
            format!(
                "via the {} link; pod masquerade {}",
                match plan.default_route {
                    _ if plan.nodes.iter().all(|n| n.workload.is_none()) => "nodes' one",
                    crate::profile::LinkRole::Management => "management",
                    crate::profile::LinkRole::Workload => "workload",
                },
                if plan.masquerade { "on" } else { "off" }
            ),
        ),
        ("schematic", plan.schematic_id.clone()),
        ("installer", plan.installer_image.clone()),
        ("iso", plan.iso_url.clone()),
    ];
    let rows: Vec<Vec<String>> = facts
        .into_iter()
        .map(|(k, v)| vec![format!("{k}:"), v])
        .collect();
    s.push_str(&table(&rows, "  "));

    for h in &plan.hosts {
        let _ = writeln!(s, "\nProxmox host {} ({})", h.name, h.address);
        let vms: Vec<String> = plan
            .nodes
            .iter()
            .filter(|n| n.host == h.name)
            .map(vm_block)
            .collect();
        if vms.is_empty() {
            s.push_str("  (no VMs)\n");
        }
        s.push_str(&vms.join("\n"));
    }

    s.push_str("\nMetalLB pool\n");
    match &plan.metallb_pool {
        Some(pool) => {
            let _ = writeln!(s, "  {pool} ({} addresses)", pool.count());
        }
        None => s.push_str("  (MetalLB not configured)\n"),
    }

    if plan.masquerade {
        s.push_str("\nGateway static routes: none needed (pods are masqueraded)\n");
    } else {
        s.push_str("\nGateway static routes (required: add them on the router)\n");
        let rows: Vec<Vec<String>> = plan
            .gateway_routes
            .iter()
            .map(|r| {
                vec![
                    r.destination.to_string(),
                    format!("via {}", r.via),
                    format!("({})", r.node),
                ]
            })
            .collect();
        s.push_str(&table(&rows, "  "));
    }
    s
}
