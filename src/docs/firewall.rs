//! Recommended inter-VLAN firewall rules, derived from the profile: keep pods away
//! from the Proxmox UI, SSH and out-of-band interfaces, let them reach the Talos and
//! Kubernetes APIs, keep isolated (storage) networks isolated.

use crate::plan::Plan;
use crate::profile::{NetworkRole, Profile, Role};

use super::tables::md_table;

struct FwRule {
    action: &'static str,
    from: String,
    to: String,
    ports: String,
    why: String,
}

fn rules(p: &Profile, plan: &Plan) -> Vec<FwRule> {
    let mut out = Vec::new();
    let Some(work) = p.network(NetworkRole::Workload) else {
        return out;
    };
    let mut sources = vec![work.subnet.to_string()];
    if !plan.masquerade {
        sources.push(plan.pod_subnet.to_string());
    }
    let from = sources.join(", ");
    let join = |v: Vec<String>| v.join(", ");
    let hosts = join(
        p.proxmox
            .hosts
            .iter()
            .map(|h| h.address.to_string())
            .collect(),
    );
    let mut rule = |action, to: String, ports: &str, why: &str| {
        out.push(FwRule {
            action,
            from: from.clone(),
            to,
            ports: ports.into(),
            why: why.into(),
        })
    };
    if !hosts.is_empty() {
        rule(
            "deny",
            hosts.clone(),
            "tcp/8006",
            "pods must not reach the Proxmox web UI/API",
        );
        rule(
            "deny",
            hosts,
            "tcp/22",
            "pods must not SSH to Proxmox hosts",
        );
    }
    let oob: Vec<String> = p
        .proxmox
        .hosts
        .iter()
        .flat_map(|h| &h.oob)
        .map(|d| format!("{} ({})", d.address, d.name))
        .collect();
    if !oob.is_empty() {
        rule(
            "deny",
            join(oob),
            "any",
            "pods must not reach out-of-band management (vPro/AMT, KVM)",
        );
    }
    let cps = join(
        plan.nodes
            .iter()
            .filter(|n| n.role == Role::Controlplane)
            .map(|n| n.management.address.addr().to_string())
            .collect(),
    );
    if !cps.is_empty() {
        rule(
            "allow",
            cps.clone(),
            "tcp/50000",
            "Talos API on the control planes",
        );
        rule(
            "allow",
            cps,
            "tcp/6443",
            "Kubernetes API on the control planes",
        );
    }
    rule(
        "allow",
        "internet".into(),
        "tcp/80, tcp/443, udp+tcp/53, udp/123",
        "egress: HTTP(S), DNS, NTP",
    );
    let mgmt = p.network(NetworkRole::Management);
    for iso in p.networks.iter().filter(|n| !n.routed) {
        if let Some(m) = mgmt {
            out.push(FwRule {
                action: "allow",
                from: m.subnet.to_string(),
                to: iso.subnet.to_string(),
                ports: "any".into(),
                why: format!(
                    "management reaches the isolated {} ({})",
                    iso.vlan_label(),
                    iso.name
                ),
            });
        }
        out.push(FwRule {
            action: "deny",
            from: "any other VLAN".into(),
            to: iso.subnet.to_string(),
            ports: "any".into(),
            why: format!("{} ({}) stays isolated", iso.vlan_label(), iso.name),
        });
        out.push(FwRule {
            action: "deny",
            from: iso.subnet.to_string(),
            to: "internet, other VLANs".into(),
            ports: "any".into(),
            why: format!("{} ({}) has no route out", iso.vlan_label(), iso.name),
        });
    }
    if let Some(infra) = p.network(NetworkRole::Infrastructure) {
        out.push(FwRule {
            action: "allow",
            from: infra.subnet.to_string(),
            to: "all VLANs".into(),
            ports: "any".into(),
            why: "infrastructure devices manage every VLAN".into(),
        });
    }
    out
}

pub fn section(p: &Profile, plan: &Plan) -> String {
    let rows: Vec<Vec<String>> = rules(p, plan)
        .into_iter()
        .enumerate()
        .map(|(i, r)| {
            vec![
                (i + 1).to_string(),
                r.action.into(),
                r.from,
                r.to,
                r.ports,
                r.why,
            ]
        })
        .collect();
    if rows.is_empty() {
        // A one-network cluster: nodes, pods and clients share one segment.
        return "The cluster's traffic stays on one network, so the gateway filters nothing between VLANs for it; only traffic to the internet crosses it (see \"Egress the nodes need\").\n".into();
    }
    let mut s = String::from(
        "Evaluated top to bottom, first match wins; traffic not listed follows the gateway's default policy.\n\n",
    );
    s.push_str(&md_table(
        &["#", "Action", "From", "To", "Ports", "Why"],
        &rows,
    ));
    s
}
