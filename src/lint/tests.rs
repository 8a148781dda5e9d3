//! One failing profile per rule: homelab.yaml with one small change, asserting the
//! rule's code at the offending field path.

use std::net::Ipv4Addr;

use ipnet::Ipv4Net;

use super::*;
use crate::profile::{LinkRole, NetworkRole, Profile, Reservation, Role};

fn profile(name: &str) -> Profile {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("profiles")
        .join(name);
    crate::profile::load(&path).expect("shipped profile loads")
}

fn ip(s: &str) -> Ipv4Addr {
    s.parse().expect("test address")
}

fn net(s: &str) -> Ipv4Net {
    s.parse().expect("test net")
}

/// Leaves homelab as it is: for warnings the corrected plan is expected to carry.
fn unchanged(_: &mut Profile) {}

type Case = (&'static str, &'static str, fn(&mut Profile));

const CASES: &[Case] = &[
    ("NET001", "nodes[1].management.address", |p| {
        p.nodes[1].management.address = ip("10.8.17.21")
    }),
    ("NET002", "nodes[1].workload.address", |p| {
        p.nodes[1].workload.as_mut().unwrap().address = ip("10.8.31.255")
    }),
    ("NET003", "nodes[0].workload.address", |p| {
        p.nodes[0].workload.as_mut().unwrap().address = ip("10.8.28.1")
    }),
    ("NET004", "nodes[2].management.address", |p| {
        p.nodes[2].management.address = ip("10.8.16.21")
    }),
    ("NET005", "nodes[0].workload.address", |p| {
        p.networks[2].reserved.push(Reservation {
            range: "10.8.28.100-10.8.28.200".parse().unwrap(),
            purpose: "UDM DHCP".into(),
            dhcp: true,
        });
        p.nodes[0].workload.as_mut().unwrap().address = ip("10.8.28.150");
    }),
    ("NET006", "nodes[0].management.address", |p| {
        p.nodes[0].management.address = ip("10.8.16.150")
    }),
    ("NET007", "networks[1].reserved[0].range", |p| {
        p.networks[1].reserved[0].range = "10.8.17.1-10.8.17.5".parse().unwrap()
    }),
    ("NET008", "proxmox.hosts[0].oob[0].address", |p| {
        p.proxmox.hosts[0].oob[0].address = ip("192.168.5.5")
    }),
    ("NET009", "nodes[0].workload.mac", |p| {
        p.nodes[0].workload.as_mut().unwrap().mac = Some("zz:00".into())
    }),
    ("NET010", "nodes[1].workload.mac", |p| {
        p.nodes[0].management.mac = Some("bc:24:11:00:00:01".into());
        p.nodes[1].workload.as_mut().unwrap().mac = Some("BC-24-11-00-00-01".into());
    }),
    ("NET101", "nodes[0].podCIDR", |p| {
        p.nodes[0].pod_cidr = Some(net("10.8.28.0/24"))
    }),
    ("NET102", "nodes[0].podCIDR", |p| {
        p.kubernetes.service_subnet = net("10.8.32.0/24")
    }),
    ("NET103", "nodes[1].podCIDR", |p| {
        p.nodes[1].pod_cidr = Some(net("10.8.32.0/25"))
    }),
    ("NET104", "nodes[2].podCIDR", |p| {
        p.nodes[2].pod_cidr = Some(net("10.8.40.0/24"))
    }),
    ("NET105", "kubernetes.podSubnet", |p| {
        p.kubernetes.pod_subnet = net("10.8.16.0/20")
    }),
    ("NET106", "addons.cilium.nativeRoutingCIDR", |p| {
        p.addons.cilium.native_routing_cidr = Some(net("10.8.32.0/24"))
    }),
    ("NET107", "kubernetes.podSubnet", |p| {
        p.nodes.iter_mut().for_each(|n| n.pod_cidr = None);
        p.kubernetes.node_pod_prefix = 23;
    }),
    ("NET108", "kubernetes.nodePodPrefix", |p| {
        p.nodes.iter_mut().for_each(|n| n.pod_cidr = None);
        p.kubernetes.node_pod_prefix = 20;
    }),
    ("NET109", "kubernetes.podSubnet", |p| {
        p.kubernetes.pod_subnet = net("10.8.28.0/22")
    }),
    ("NET201", "addons.metallb.pool", |p| {
        set_pool(p, "10.8.40.10-10.8.40.20")
    }),
    ("NET202", "addons.metallb.pool", |p| {
        set_pool(p, "10.8.28.15-10.8.28.25")
    }),
    ("NET203", "addons.metallb.pool", |p| {
        set_pool(p, "10.8.32.10-10.8.32.20")
    }),
    ("NET204", "addons.metallb.pool", |p| {
        set_pool(p, "10.8.31.5-10.8.31.200")
    }),
    ("NET205", "networks[2].reserved", unchanged),
    ("NET206", "addons.metallb.interface", |p| {
        p.addons.metallb.as_mut().unwrap().interface = LinkRole::Management
    }),
    ("NET301", "networks", |p| {
        p.networks[3].role = NetworkRole::Workload
    }),
    ("NET316", "nodes[1]", |p| p.nodes[1].workload = None),
    ("NET302", "networks[1].gateway", |p| {
        p.networks[1].gateway = None
    }),
    ("NET303", "networks[3].vlan", |p| {
        p.networks[3].vlan = Some(4095)
    }),
    ("NET304", "networks[3].vlan", |p| {
        p.networks[3].vlan = Some(16)
    }),
    ("NET305", "networks[3].subnet", |p| {
        p.networks[3].subnet = net("10.8.16.0/23")
    }),
    ("NET306", "networks[3].mtu", |p| p.networks[3].mtu = 9500),
    ("NET307", "networks[2].mtu", |p| p.networks[2].mtu = 9000),
    ("NET308", "nodes[0].name", |p| {
        p.nodes[0].name = "Talos_01".into()
    }),
    ("NET309", "nodes[1].name", |p| {
        p.nodes[1].name = p.nodes[0].name.clone()
    }),
    ("NET310", "nodes[0].vmid", |p| p.nodes[0].vmid = 99),
    ("NET311", "nodes[2].vmid", |p| p.nodes[2].vmid = 120),
    ("NET312", "nodes[2].host", |p| {
        p.nodes[2].host = "pve-nope".into()
    }),
    ("NET313", "networks[3].gateway", |p| {
        p.networks[3].gateway = Some(ip("10.8.49.1"))
    }),
    ("NET314", "nodes", |p| p.nodes.clear()),
    ("NET315", "proxmox.hosts[2].name", |p| {
        p.proxmox.hosts[2].name = p.proxmox.hosts[0].name.clone()
    }),
    ("NET401", "kubernetes.endpoint", |p| {
        p.kubernetes.endpoint = "http://10.8.16.20:6443".into()
    }),
    ("NET402", "kubernetes.endpoint", |p| {
        p.kubernetes.endpoint = "https://10.8.16.99:6443".into()
    }),
    ("NET403", "kubernetes.endpoint", unchanged),
    ("NET404", "kubernetes.allowSchedulingOnControlPlanes", |p| {
        p.kubernetes.allow_scheduling_on_control_planes = Some(false)
    }),
    ("NET405", "talos.version", |p| {
        p.talos.version = "v1.11.5".into()
    }),
    ("NET406", "routing.defaultRoute", |p| {
        p.networks[2].gateway = None
    }),
    ("NET407", "routing.masquerade", unchanged),
    ("NET408", "kubernetes.podSubnet", unchanged),
    ("NET409", "kubernetes.serviceSubnet", |p| {
        p.kubernetes.service_subnet = net("10.8.16.0/24")
    }),
    ("NET410", "talos.version", |p| {
        p.talos.version = "v1.12.4".into()
    }),
    ("NET411", "nodes", |p| {
        p.nodes.iter_mut().for_each(|n| n.role = Role::Worker)
    }),
    (
        "NET412",
        "talos.imageFactory, talos.version, kubernetes.version, addons.cilium.version, addons.cilium.cliImage, addons.metallb.version, timeServers",
        unchanged,
    ),
    ("NET501", "metadata.name", |p| {
        p.metadata.name = "../../escaped".into()
    }),
    ("NET502", "proxmox.endpoint", |p| {
        p.proxmox.endpoint = "https://10.8.16.10:99999".into()
    }),
    ("NET503", "proxmox.tokenId", |p| {
        p.proxmox.token_id = "root@pam".into()
    }),
    ("NET504", "proxmox.fingerprint", |p| {
        p.proxmox.fingerprint = Some("AB:CD".into())
    }),
    ("NET505", "proxmox.bridge", |p| {
        p.proxmox.bridge = "vmbr0,link_down=1".into()
    }),
    ("NET506", "proxmox.diskStorage", |p| {
        p.proxmox.disk_storage = "local-lvm,cache=unsafe".into()
    }),
    ("NET507", "proxmox.hosts[1].name", |p| {
        p.proxmox.hosts[1].name = "pve/../x".into();
        p.nodes[1].host = "pve/../x".into();
    }),
    ("NET508", "nodeDefaults.disk", |p| p.node_defaults.disk = 0),
    ("NET509", "talos.version", |p| {
        p.talos.version = "v1.13.9 ".into()
    }),
    ("NET510", "kubernetes.version", |p| {
        p.kubernetes.version = "latest".into()
    }),
    ("NET511", "kubernetes.version", |p| {
        p.talos.version = "v1.12.11".into()
    }),
    ("NET512", "talos.installDisk", |p| {
        p.talos.install_disk = "/dev/../etc/passwd".into()
    }),
    ("NET513", "talos.schematic.extraKernelArgs[0]", |p| {
        p.talos.schematic.extra_kernel_args = vec!["console=ttyS0 init=/bin/sh".into()]
    }),
    ("NET514", "talos.schematic.extensions[0]", |p| {
        p.talos.schematic.extensions = vec!["siderolabs/../../x".into()]
    }),
    ("NET515", "timeServers[0]", |p| {
        p.time_servers = vec!["".into()]
    }),
    ("NET516", "dns.servers[1]", |p| {
        p.dns.servers[1] = ip("255.255.255.255")
    }),
    ("NET517", "dns.records[0].name", |p| {
        p.dns.records[0].name = "k8s api".into()
    }),
    ("NET518", "kubernetes.serviceSubnet", |p| {
        p.kubernetes.service_subnet = net("127.0.0.0/16")
    }),
    ("NET519", "nodes[0].podCIDR", |p| {
        p.nodes[0].pod_cidr = Some(net("10.8.32.0/32"))
    }),
    ("NET520", "addons.cilium.version", |p| {
        p.addons.cilium.version = "stable".into()
    }),
    ("NET521", "addons.metallb.poolName", |p| {
        p.addons.metallb.as_mut().unwrap().pool_name = "Default Pool".into()
    }),
    ("NET523", "networks[3].subnet", |p| {
        p.networks[3].subnet = net("224.0.48.0/24")
    }),
    ("NET522", "proxmox.hosts[0].uplink", |p| {
        p.proxmox.hosts[0].uplink = Some("enp87s0/../x".into())
    }),
    ("NET525", "talos.imageFactory", |p| {
        p.talos.image_factory = "http://10.8.16.5:8080".into()
    }),
    ("NET524", "proxmox.hosts[2].endpoint", |p| {
        p.proxmox.hosts[0].endpoint = Some("https://10.8.16.10:8006".into());
        p.proxmox.hosts[1].endpoint = Some("https://10.8.16.11:8006".into());
    }),
    ("NET601", "talos.version", |p| {
        p.talos.version = "v1.12.11".into();
        p.kubernetes.version = "1.35.0".into();
    }),
    ("NET602", "routing.defaultRoute", |p| {
        p.routing.default_route = crate::profile::LinkRole::Management
    }),
    ("NET603", "routing", |p| p.networks[1].routed = false),
];

/// profiles/one-network.yaml: one flat LAN, no workload network, one NIC per node.
#[test]
fn a_one_network_profile_lints_without_errors_and_its_pool_is_checked_on_the_lan() {
    let base = profile("one-network.yaml");
    let report = lint(&base);
    assert_eq!(
        report.errors,
        0,
        "{}",
        render_text(&report, "one-network.yaml")
    );
    // The one link is the workload link: MetalLB on `management` is not NET206.
    let mut p = base.clone();
    p.addons.metallb.as_mut().unwrap().interface = LinkRole::Management;
    assert_eq!(lint(&p).with_code("NET206").count(), 0);
    // The pool must be on the LAN, clear of nodes, hosts, the gateway and the DHCP pool.
    let cases: [(&str, &str); 5] = [
        ("192.168.2.10-192.168.2.20", "NET201"),
        ("192.168.1.25-192.168.1.35", "NET202"),
        ("192.168.1.1-192.168.1.5", "NET202"),
        ("192.168.1.8-192.168.1.12", "NET202"),
        ("192.168.1.190-192.168.1.210", "NET204"),
    ];
    for (pool, code) in cases {
        let mut p = base.clone();
        set_pool(&mut p, pool);
        let r = lint(&p);
        assert!(
            has(&r, code, "addons.metallb.pool"),
            "{pool}: {code} expected"
        );
    }
    // No DHCP range declared on the LAN: NET205 names the network, not "untagged".
    let mut p = base.clone();
    p.networks[0].reserved.clear();
    let r = lint(&p);
    let f = r.with_code("NET205").next().expect("NET205");
    assert!(f.fix.contains("DHCP range of network `lan`"), "{}", f.fix);
    // A workload link with no workload network is on no network.
    let mut p = base.clone();
    p.nodes[2].workload = Some(crate::profile::NodeLink::new(ip("192.168.1.40")));
    assert!(has(&lint(&p), "NET316", "nodes[2].workload"));
    // Two management networks are still NET301 (no workload network is fine).
    let mut p = base;
    let mut extra = p.networks[0].clone();
    extra.role = NetworkRole::Management;
    extra.vlan = Some(30);
    extra.subnet = net("192.168.30.0/24");
    extra.gateway = Some(ip("192.168.30.1"));
    extra.reserved.clear();
    p.networks.push(extra);
    assert!(has(&lint(&p), "NET301", "networks"));
}

fn set_pool(p: &mut Profile, range: &str) {
    p.addons.metallb.as_mut().unwrap().pool = range.parse().unwrap();
}

fn has(report: &Report, code: &str, path: &str) -> bool {
    report.with_code(code).any(|f| f.path == path)
}

/// homelab.yaml changed by `mutate`, and its report, which must have `code` at `path`.
fn fires(code: &str, path: &str, mutate: fn(&mut Profile)) -> (Profile, Report) {
    let mut p = profile("homelab.yaml");
    mutate(&mut p);
    let report = lint(&p);
    assert!(
        has(&report, code, path),
        "{code} at {path} expected; got:\n{}",
        render_text(&report, "mutated homelab")
    );
    (p, report)
}

#[test]
fn every_rule_fires_on_its_failing_profile() {
    let homelab = profile("homelab.yaml");
    let base = lint(&homelab);
    for &(code, path, mutate) in CASES {
        let (p, report) = fires(code, path, mutate);
        let f = report.with_code(code).next().unwrap();
        assert!(
            !f.message.is_empty() && !f.fix.is_empty(),
            "{code} lacks reason/fix"
        );
        if p != homelab {
            assert!(
                !has(&base, code, path),
                "{code} at {path} already fires on homelab.yaml"
            );
        }
    }
}

#[test]
fn every_rule_has_a_case_and_codes_are_unique() {
    let mut codes: Vec<&str> = RULES.iter().map(|r| r.code).collect();
    codes.sort_unstable();
    let n = codes.len();
    codes.dedup();
    assert_eq!(codes.len(), n, "duplicate lint code");
    for r in RULES {
        assert!(
            CASES.iter().any(|c| c.0 == r.code),
            "{} has no failing-profile test",
            r.code
        );
    }
    for c in CASES {
        let rule = RULES
            .iter()
            .find(|r| r.code == c.0)
            .expect("case for a known code");
        let mut p = profile("homelab.yaml");
        (c.2)(&mut p);
        let f = lint(&p).with_code(c.0).next().cloned().unwrap();
        assert_eq!(f.severity, rule.severity, "{}", c.0);
    }
}

#[test]
fn homelab_passes_with_only_the_expected_warnings() {
    let report = lint(&profile("homelab.yaml"));
    assert!(
        !report.has_errors(),
        "{}",
        render_text(&report, "homelab.yaml")
    );
    let mut codes: Vec<&str> = report.findings.iter().map(|f| f.code).collect();
    codes.sort_unstable();
    assert_eq!(codes, ["NET205", "NET403", "NET407", "NET408", "NET412"]);
    let egress = report.with_code("NET412").next().unwrap();
    assert!(
        egress.path.contains("kubernetes.version")
            && egress
                .message
                .contains("quay.io tcp/443 (addons.cilium.version"),
        "{egress:?}"
    );
    let routes = report.with_code("NET407").next().unwrap();
    assert!(
        routes.message.contains("10.8.34.0/24 via 10.8.28.22"),
        "{}",
        routes.message
    );
}

#[test]
fn seed_fails_on_the_gateway_and_on_link_pods() {
    let report = lint(&profile("seed-as-written.yaml"));
    assert!(report.has_errors());
    let gw = report
        .with_code("NET003")
        .find(|f| f.path == "nodes[0].workload.address")
        .expect("gateway conflict");
    assert!(gw.message.contains("10.8.28.1"), "{}", gw.message);
    for i in 0..3 {
        let f = report
            .with_code("NET101")
            .find(|f| f.path == format!("nodes[{i}].podCIDR"))
            .expect("on-link pod CIDR");
        assert!(
            f.fix.contains("10.8.32.0/22"),
            "fix should propose a free block: {}",
            f.fix
        );
    }
    assert!(has(&report, "NET105", "kubernetes.podSubnet"));
    assert!(has(&report, "NET109", "kubernetes.podSubnet"));
}

#[test]
fn masquerade_and_a_declared_dhcp_range_silence_their_warnings() {
    let mut p = profile("homelab.yaml");
    p.routing.masquerade = true;
    p.networks[2].reserved.push(Reservation {
        range: "10.8.30.100-10.8.30.200".parse().unwrap(),
        purpose: "UDM DHCP".into(),
        dhcp: true,
    });
    let report = lint(&p);
    for code in ["NET205", "NET407", "NET408"] {
        assert_eq!(report.with_code(code).count(), 0, "{code} should be silent");
    }
}

/// Issue 14 §5: VLANs are optional; one untagged network is fine, two share one segment.
#[test]
fn one_untagged_network_is_fine_and_two_are_a_duplicate() {
    let mut p = profile("homelab.yaml");
    let codes = |p: &Profile| -> Vec<(&'static str, String)> {
        lint(p)
            .findings
            .iter()
            .map(|f| (f.code, f.path.clone()))
            .collect()
    };
    let before = codes(&p);
    p.networks[1].vlan = None;
    assert_eq!(before, codes(&p));
    p.networks[2].vlan = None;
    assert!(has(&lint(&p), "NET304", "networks[2].vlan"));
}

#[test]
fn findings_are_sorted_and_counted() {
    let report = lint(&profile("seed-as-written.yaml"));
    let sev: Vec<Severity> = report.findings.iter().map(|f| f.severity).collect();
    let mut sorted = sev.clone();
    sorted.sort();
    assert_eq!(sev, sorted);
    assert_eq!(
        report.errors,
        report
            .findings
            .iter()
            .filter(|f| f.severity == Severity::Error)
            .count()
    );
    let json = serde_json::to_value(&report).unwrap();
    let first = &json["findings"][0];
    for key in ["severity", "code", "path", "message", "fix"] {
        assert!(first.get(key).is_some(), "missing {key} in {first}");
    }
}

#[test]
fn codes_doc_matches_the_rule_table() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/lint-codes.md");
    let want = codes_markdown();
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(&path, &want).unwrap();
    }
    let have = std::fs::read_to_string(&path).unwrap_or_default();
    assert_eq!(
        have, want,
        "docs/lint-codes.md is stale; rerun with UPDATE_GOLDEN=1"
    );
}

#[test]
fn findings_sort_indices_numerically() {
    let mut p = profile("homelab.yaml");
    let template = p.nodes[2].clone();
    for i in 3..12u32 {
        let mut n = template.clone();
        n.name = format!("talos-k8s-{i:02}");
        n.vmid = 120 + i;
        n.management.address = Ipv4Addr::from(u32::from(ip("10.8.16.20")) + i);
        n.workload = Some(crate::profile::NodeLink::new(Ipv4Addr::from(
            u32::from(ip("10.8.28.20")) + i,
        )));
        n.pod_cidr = Some(net("10.8.28.0/24"));
        p.nodes.push(n);
    }
    let report = lint(&p);
    let paths: Vec<&str> = report
        .with_code("NET101")
        .map(|f| f.path.as_str())
        .collect();
    assert_eq!(paths.first(), Some(&"nodes[3].podCIDR"));
    assert_eq!(paths.last(), Some(&"nodes[11].podCIDR"));
}

/// Issue 11 §8: values that pass the network rules but that the receiving system
/// refuses, or that make it do something else.
#[test]
fn values_the_receiving_system_refuses_are_errors() {
    let cases: &[Case] = &[
        ("NET501", "metadata.name", |p| {
            p.metadata.name = String::new()
        }),
        ("NET501", "metadata.name", |p| {
            p.metadata.name = "/tmp/abs".into()
        }),
        ("NET508", "nodeDefaults.cores", |p| {
            p.node_defaults.cores = 0
        }),
        ("NET508", "nodeDefaults.memory", |p| {
            p.node_defaults.memory = 0
        }),
        ("NET508", "nodes[2].disk", |p| p.nodes[2].disk = Some(0)),
        ("NET508", "nodes[1].memory", |p| {
            p.nodes[1].memory = Some(1024)
        }),
        ("NET512", "talos.installDisk", |p| {
            p.talos.install_disk = "/".into()
        }),
        ("NET510", "kubernetes.version", |p| {
            p.kubernetes.version = String::new()
        }),
        ("NET510", "kubernetes.version", |p| {
            p.kubernetes.version = "v1.36.3".into()
        }),
        ("NET511", "kubernetes.version", |p| {
            p.kubernetes.version = "1.30.2".into()
        }),
        ("NET518", "kubernetes.serviceSubnet", |p| {
            p.kubernetes.service_subnet = net("224.0.0.0/4")
        }),
        ("NET518", "kubernetes.serviceSubnet", |p| {
            p.kubernetes.service_subnet = net("10.96.0.0/30")
        }),
        ("NET519", "kubernetes.nodePodPrefix", |p| {
            p.nodes.iter_mut().for_each(|n| n.pod_cidr = None);
            p.kubernetes.node_pod_prefix = 32;
        }),
        ("NET519", "kubernetes.podSubnet", |p| {
            p.kubernetes.pod_subnet = net("127.8.32.0/22")
        }),
        ("NET502", "kubernetes.endpoint", |p| {
            p.kubernetes.endpoint = "https://10.8.16.20:0".into()
        }),
        ("NET502", "talos.imageFactory", |p| {
            p.talos.image_factory = "factory.talos.dev".into()
        }),
        ("NET502", "proxmox.fallbackEndpoints[0]", |p| {
            p.proxmox.fallback_endpoints = vec!["10.8.16.11".into()]
        }),
        ("NET502", "proxmox.hosts[1].endpoint", |p| {
            for h in &mut p.proxmox.hosts {
                h.endpoint = Some("https://[fd00::1]".into());
            }
            p.proxmox.hosts[1].endpoint = Some("https://10.8.16.11:0".into());
        }),
        ("NET504", "proxmox.hosts[0].fingerprint", |p| {
            p.proxmox.hosts[0].fingerprint = Some("AA:BB".into())
        }),
        ("NET524", "proxmox.fallbackEndpoints", |p| {
            for h in &mut p.proxmox.hosts {
                h.endpoint = Some("https://10.8.16.10".into());
            }
            p.proxmox.fallback_endpoints = vec!["https://10.8.16.11".into()];
        }),
        ("NET524", "proxmox.caFile", |p| {
            p.proxmox.fingerprint = Some(crate::tls::fingerprint(b"x"));
            p.proxmox.ca_file = Some("pve-root-ca.pem".into());
        }),
        ("NET524", "proxmox.hosts[1]", |p| {
            p.proxmox.hosts[1].token_file = Some("pve2.token".into());
        }),
        ("NET516", "dns.servers[0]", |p| {
            p.dns.servers[0] = ip("0.0.0.0")
        }),
        ("NET515", "timeServers[1]", |p| {
            p.time_servers = vec!["time.cloudflare.com".into(), "pool.ntp.org ".into()]
        }),
        ("NET513", "talos.schematic.extraKernelArgs[1]", |p| {
            p.talos.schematic.extra_kernel_args = vec!["console=ttyS0".into(), String::new()]
        }),
        ("NET514", "talos.schematic.extensions[0]", |p| {
            p.talos.schematic.extensions = vec!["../qemu-guest-agent".into()]
        }),
        ("NET503", "proxmox.tokenId", |p| {
            p.proxmox.token_id = "root@pam!talos pve".into()
        }),
        ("NET506", "proxmox.isoStorage", |p| {
            p.proxmox.iso_storage = "local/../../x".into()
        }),
        ("NET506", "proxmox.isoStorage", |p| {
            p.proxmox.iso_storage = "local;rm".into()
        }),
        ("NET517", "kubernetes.certSans[0]", |p| {
            p.kubernetes.cert_sans = vec!["api example".into()]
        }),
        ("NET509", "talos.version", |p| {
            p.talos.version = "1.13.9".into()
        }),
    ];
    for &(code, path, mutate) in cases {
        fires(code, path, mutate);
    }
    // A well-formed value of every kind stays silent.
    let mut p = profile("homelab.yaml");
    p.time_servers = vec!["time.cloudflare.com".into(), "10.0.1.1".into()];
    p.talos.schematic.extra_kernel_args = vec!["console=ttyS0,115200".into()];
    p.kubernetes.cert_sans = vec!["*.lab.local".into(), "10.8.16.20".into()];
    p.proxmox.fingerprint = Some(["AB"; 32].join(":"));
    let report = lint(&p);
    let codes: Vec<&str> = report.findings.iter().map(|f| f.code).collect();
    assert!(!codes.iter().any(|c| c.starts_with("NET5")), "{codes:?}");
}
