//! The wizard's starting point: the seed's corrected layout (profiles/homelab.yaml).

use std::net::Ipv4Addr;

use crate::profile::{
    API_VERSION, Addons, Cilium, Dns, KIND, Kubernetes, LinkRole, Metadata, MetalLb, Network,
    NetworkRole, NodeResources, Profile, Proxmox, Routing, Talos,
};

/// The network the discovered hosts already sit on, when `draft` (the management
/// network proposed so far) does not hold them all: the /24 around the first host,
/// gateway .1, untagged. Hosts on a flat 192.168.1.x LAN get that LAN, not 10.8.16.0/24.
pub fn management_for(draft: &Network, hosts: &[Ipv4Addr]) -> Option<Network> {
    let first = *hosts.first()?;
    if hosts.iter().all(|h| draft.subnet.contains(h)) {
        return None;
    }
    let subnet = ipnet::Ipv4Net::new(first, 24).ok()?.trunc();
    Some(Network {
        name: draft.name.clone(),
        role: NetworkRole::Management,
        vlan: None,
        gateway: Some(Ipv4Addr::from(u32::from(subnet.network()) + 1)),
        subnet,
        mtu: draft.mtu,
        routed: true,
        reserved: vec![],
        devices: vec![],
    })
}

/// The seed's corrected layout (profiles/homelab.yaml) without hosts and nodes, which
/// come from discovery and the node questions.
pub fn seed_draft() -> Profile {
    let net = |name: &str, role, vlan, subnet: &str, gw: &str, mtu, routed| Network {
        name: name.into(),
        role,
        vlan,
        subnet: subnet.parse().expect("constant"),
        gateway: Some(gw.parse().expect("constant")),
        mtu,
        routed,
        reserved: vec![],
        devices: vec![],
    };
    let ip = |s: &str| -> Ipv4Addr { s.parse().expect("constant") };
    Profile {
        api_version: API_VERSION.into(),
        kind: KIND.into(),
        metadata: Metadata {
            name: "homelab".into(),
            description: None,
        },
        proxmox: Proxmox {
            endpoint: "https://10.8.16.10:8006".into(),
            token_id: "root@pam!talos-pve".into(),
            token_file: None,
            fingerprint: None,
            ca_file: None,
            fallback_endpoints: vec![],
            bridge: "vmbr0".into(),
            iso_storage: "local".into(),
            disk_storage: "local-lvm".into(),
            hosts: vec![],
        },
        networks: vec![
            net(
                "infrastructure",
                NetworkRole::Infrastructure,
                Some(1),
                "10.0.1.0/24",
                "10.0.1.1",
                1500,
                true,
            ),
            net(
                "management",
                NetworkRole::Management,
                Some(16),
                "10.8.16.0/24",
                "10.8.16.1",
                1500,
                true,
            ),
            net(
                "workload",
                NetworkRole::Workload,
                Some(28),
                "10.8.28.0/22",
                "10.8.28.1",
                1500,
                true,
            ),
            net(
                "storage",
                NetworkRole::Storage,
                Some(48),
                "10.8.48.0/24",
                "10.8.48.1",
                9000,
                false,
            ),
        ],
        dns: Dns {
            servers: vec![ip("10.0.1.1"), ip("1.1.1.1"), ip("8.8.8.8")],
            domain: Some("lab.local".into()),
            records: vec![],
        },
        time_servers: vec![],
        talos: Talos::default(),
        kubernetes: Kubernetes {
            version: "1.36.3".into(),
            endpoint: String::new(),
            service_subnet: "10.96.0.0/12".parse().expect("constant"),
            pod_subnet: "10.8.32.0/22".parse().expect("constant"),
            node_pod_prefix: 24,
            dns_domain: "cluster.local".into(),
            allow_scheduling_on_control_planes: None,
            cert_sans: vec![],
        },
        routing: Routing::default(),
        node_defaults: NodeResources::default(),
        nodes: vec![],
        addons: Addons {
            cilium: Cilium::default(),
            metallb: Some(MetalLb {
                version: "0.16.1".into(),
                pool_name: "default".into(),
                pool: "10.8.31.10-10.8.31.200".parse().expect("constant"),
                interface: LinkRole::Workload,
            }),
        },
        switches: vec![],
        lint: Default::default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_on_a_flat_lan_propose_that_lan_untagged() {
        let seed = seed_draft();
        let mgmt = seed.network(NetworkRole::Management).unwrap();
        let ip = |s: &str| -> Ipv4Addr { s.parse().unwrap() };
        assert_eq!(
            management_for(mgmt, &[ip("10.8.16.10"), ip("10.8.16.11")]),
            None
        );
        let lan = management_for(mgmt, &[ip("192.168.1.21"), ip("192.168.1.22")]).unwrap();
        assert_eq!(lan.subnet.to_string(), "192.168.1.0/24");
        assert_eq!(lan.gateway, Some(ip("192.168.1.1")));
        assert_eq!(lan.vlan, None);
    }
}
