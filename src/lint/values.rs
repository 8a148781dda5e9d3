//! NET5xx: every value checked against the format of the system that receives it:
//! Proxmox VE (IDs, token, endpoint, VM resources), Talos (versions, install disk,
//! kernel arguments, extensions, time and DNS servers) and Kubernetes (names,
//! versions, service and pod ranges). A value that passes here is still encoded, not
//! pasted, where it is used; this rule set is what tells the user *which field* to
//! change before anything reaches a host.

use ipnet::Ipv4Net;

use super::facts::Facts;
use super::{Finding, Rule, Severity};
use crate::formats::{
    https_origin, is_device_path, is_dns_label, is_dns_subdomain, is_extension_name, is_host,
    is_interface_name, is_kernel_arg, is_pve_bridge, is_pve_node, is_pve_storage_id,
    is_pve_token_id, is_time_server, kubernetes_minors, semver, usable_unicast,
};
use crate::profile::Role;

pub const CLUSTER_NAME: Rule =
    Rule::new("NET501", Severity::Error, "cluster name is not a DNS label");
pub const ENDPOINT_FORMAT: Rule = Rule::new(
    "NET502",
    Severity::Error,
    "endpoint is not https://HOST[:PORT] with a port in 1..65535",
);
pub const TOKEN_ID: Rule = Rule::new(
    "NET503",
    Severity::Error,
    "Proxmox token ID is not USER@REALM!TOKENID",
);
pub const FINGERPRINT: Rule = Rule::new(
    "NET504",
    Severity::Error,
    "Proxmox fingerprint is not a SHA-256 (32 hex pairs)",
);
pub const BRIDGE: Rule = Rule::new(
    "NET505",
    Severity::Error,
    "bridge is not a Proxmox bridge ID",
);
pub const STORAGE: Rule = Rule::new(
    "NET506",
    Severity::Error,
    "storage is not a Proxmox storage ID",
);
pub const HOST_NAME: Rule = Rule::new(
    "NET507",
    Severity::Error,
    "Proxmox host is not a valid node name",
);
pub const RESOURCES: Rule = Rule::new(
    "NET508",
    Severity::Error,
    "cores, memory or disk outside what Proxmox and Talos accept",
);
pub const TALOS_TAG: Rule = Rule::new(
    "NET509",
    Severity::Error,
    "Talos version is not a release tag vX.Y.Z",
);
pub const KUBERNETES_VERSION: Rule =
    Rule::new("NET510", Severity::Error, "Kubernetes version is not X.Y.Z");
pub const KUBERNETES_RANGE: Rule = Rule::new(
    "NET511",
    Severity::Error,
    "Kubernetes version outside the range the Talos release supports",
);
pub const INSTALL_DISK: Rule = Rule::new(
    "NET512",
    Severity::Error,
    "install disk is not a device path under /dev/",
);
pub const KERNEL_ARG: Rule = Rule::new(
    "NET513",
    Severity::Error,
    "kernel argument is empty or contains whitespace or quotes",
);
pub const EXTENSION: Rule = Rule::new(
    "NET514",
    Severity::Error,
    "system extension is not an owner/name image path",
);
pub const TIME_SERVER: Rule = Rule::new(
    "NET515",
    Severity::Error,
    "time server is not a host name, unicast address or PTP device",
);
pub const DNS_SERVER: Rule = Rule::new(
    "NET516",
    Severity::Error,
    "DNS server is not a unicast address a node can reach",
);
pub const DNS_NAME: Rule = Rule::new(
    "NET517",
    Severity::Error,
    "domain, record name or certificate SAN is not a DNS name",
);
pub const SERVICE_SUBNET: Rule = Rule::new(
    "NET518",
    Severity::Error,
    "service subnet is a reserved range or not /12../28",
);
pub const POD_RANGE: Rule = Rule::new(
    "NET519",
    Severity::Error,
    "pod range is a reserved range, or a node's pod CIDR is smaller than /28",
);
pub const ADDON_VERSION: Rule = Rule::new("NET520", Severity::Error, "add-on version is not X.Y.Z");
pub const OBJECT_NAME: Rule = Rule::new(
    "NET521",
    Severity::Error,
    "MetalLB pool name is not a Kubernetes object name",
);
pub const INTERFACE: Rule = Rule::new(
    "NET522",
    Severity::Error,
    "host interface is not a Linux interface name",
);
pub const NETWORK_SUBNET: Rule = Rule::new(
    "NET523",
    Severity::Error,
    "network subnet is a loopback, multicast or other special-purpose range",
);
pub const PLAIN_HTTP_FACTORY: Rule = Rule::new(
    "NET525",
    Severity::Warning,
    "Image Factory is reached over plain http",
);
pub const TOPOLOGY: Rule = Rule::new(
    "NET524",
    Severity::Error,
    "Proxmox endpoints or trust settings contradict each other",
);

/// PVE's `cores` minimum is 1 (qemu-server schema); beyond the host's CPU count
/// the VM does not start. No host has this many: a typo, not a plan.
const MAX_CORES: u32 = 4096;
/// Talos `pkg/minimal/limits.go` (v1.13.9): control planes need 1848 MiB, workers
/// 1 GiB, before the kernel's share; below, etcd and the kubelet are OOM-killed.
const MIN_MEMORY_CONTROL_PLANE: u32 = 1848;
const MIN_MEMORY_WORKER: u32 = 1024;
/// 4 TiB in MiB: beyond any Proxmox host's memory; a unit mistake (GiB vs MiB).
const MAX_MEMORY: u32 = 4 << 20;
/// Talos `minimal.DiskSize()`: 6 GiB for the system partitions and images.
const MIN_DISK: u32 = 6;
/// 64 TiB in GiB: a unit mistake (MiB vs GiB), not a boot disk.
const MAX_DISK: u32 = 64 << 10;
/// kube-apiserver refuses service ranges wider than 20 host bits; Talos puts the
/// cluster DNS service at the 10th address, which a /28 still holds.
const SERVICE_PREFIX: std::ops::RangeInclusive<u8> = 12..=28;
/// Each node's pod CIDR also holds Cilium's router and health addresses; /28 leaves
/// 13 pod addresses, anything smaller cannot run a node's system pods.
const MAX_NODE_POD_PREFIX: u8 = 28;

pub fn check(f: &Facts, out: &mut Vec<Finding>) {
    proxmox(f, out);
    resources(f, out);
    versions(f, out);
    talos(f, out);
    dns(f, out);
    ranges(f, out);
    addons(f, out);
}

fn proxmox(f: &Facts, out: &mut Vec<Finding>) {
    let p = f.p;
    let name = &p.metadata.name;
    if !is_dns_label(name) {
        out.push(CLUSTER_NAME.at(
            "metadata.name",
            format!("`{name}` is not a DNS label; it becomes the Talos clusterName, the kubeconfig context and the name of the cluster's directory"),
            "use 1-63 lower-case letters, digits and '-', not starting or ending with '-' (e.g. homelab)",
        ));
    }
    let px = &p.proxmox;
    origin(
        out,
        "proxmox.endpoint",
        &px.endpoint,
        "https://10.8.16.10:8006",
    );
    if !is_pve_token_id(&px.token_id) {
        out.push(TOKEN_ID.at(
            "proxmox.tokenId",
            format!("`{}` is not a Proxmox API token ID (USER@REALM!TOKENID, realm and token name `[A-Za-z][A-Za-z0-9._-]+`)", px.token_id),
            "copy the token ID `pveum user token list` shows, e.g. root@pam!talos-pve (the secret goes in PROXMOX_VE_API_TOKEN)",
        ));
    }
    fingerprint(out, "proxmox.fingerprint", px.fingerprint.as_deref());
    for (i, e) in px.fallback_endpoints.iter().enumerate() {
        origin(
            out,
            &format!("proxmox.fallbackEndpoints[{i}]"),
            e,
            "https://10.8.16.11:8006",
        );
    }
    topology(px, out);
    if !is_pve_bridge(&px.bridge) {
        out.push(BRIDGE.at(
            "proxmox.bridge",
            format!("`{}` is not a Proxmox bridge ID (pve-bridge-id: letters, digits, '-', '_', '.'; at most 15 characters); it is written into every NIC's property string", px.bridge),
            "name the Linux bridge the VLANs trunk through, e.g. vmbr0",
        ));
    }
    for (field, id) in [
        ("proxmox.isoStorage", &px.iso_storage),
        ("proxmox.diskStorage", &px.disk_storage),
    ] {
        if !is_pve_storage_id(id) {
            out.push(STORAGE.at(
                field,
                format!("`{id}` is not a Proxmox storage ID (pve-storage-id: a letter, then letters, digits, '-', '_', '.', ending alphanumeric); it goes into disk definitions and API paths"),
                "use the storage's ID from `pvesm status`, e.g. local or local-lvm",
            ));
        }
    }
    for (i, h) in px.hosts.iter().enumerate() {
        if let Some(e) = &h.endpoint {
            origin(
                out,
                &format!("proxmox.hosts[{i}].endpoint"),
                e,
                "https://10.8.16.11:8006",
            );
        }
        fingerprint(
            out,
            &format!("proxmox.hosts[{i}].fingerprint"),
            h.fingerprint.as_deref(),
        );
        if !is_pve_node(&h.name) {
            out.push(HOST_NAME.at(
                format!("proxmox.hosts[{i}].name"),
                format!("`{}` is not a Proxmox node name (pve-node: a DNS label); it goes into API paths", h.name),
                "use the node name `pvesh get /nodes` lists",
            ));
        }
        let storage = h.storage.iter();
        let names = h
            .uplink
            .iter()
            .map(|u| (format!("proxmox.hosts[{i}].uplink"), u))
            .chain(storage.clone().map(|s| {
                (
                    format!("proxmox.hosts[{i}].storage.interface"),
                    &s.interface,
                )
            }))
            .chain(storage.flat_map(|s| {
                s.members
                    .iter()
                    .enumerate()
                    .map(move |(j, m)| (format!("proxmox.hosts[{i}].storage.members[{j}]"), m))
            }));
        for (path, name) in names {
            if !is_interface_name(name) {
                out.push(INTERFACE.at(
                    path,
                    format!("`{name}` is not a Linux interface name (1-15 printable characters, no '/' or ':')"),
                    "use the name `ip link` shows on the host, e.g. enp87s0 or bond0",
                ));
            }
        }
    }
}

fn fingerprint(out: &mut Vec<Finding>, path: &str, fp: Option<&str>) {
    if let Some(fp) = fp
        && crate::tls::parse_fingerprint(fp).is_none()
    {
        out.push(FINGERPRINT.at(
            path,
            format!("`{fp}` is not a SHA-256 certificate fingerprint"),
            "copy it from `pvenode cert info` (32 hex pairs separated by ':'), or remove the field",
        ));
    }
}

/// One joined cluster (endpoints at `proxmox`) or standalone hosts (an endpoint
/// on every host), never a mix: a standalone host answers only for itself, so a
/// host without its own endpoint could not be reached at all.
fn topology(px: &crate::profile::Proxmox, out: &mut Vec<Finding>) {
    let standalone = px.hosts.iter().filter(|h| h.endpoint.is_some()).count();
    if standalone > 0 && standalone < px.hosts.len() {
        for (i, h) in px.hosts.iter().enumerate() {
            if h.endpoint.is_none() {
                out.push(TOPOLOGY.at(
                    format!("proxmox.hosts[{i}].endpoint"),
                    format!("host `{}` has no endpoint while other hosts have one: standalone hosts each need their own, since a standalone PVE answers only for itself", h.name),
                    "give every host its `endpoint` (standalone hosts), or remove them all (one joined cluster behind `proxmox.endpoint`)",
                ));
            }
        }
    }
    if standalone > 0 && !px.fallback_endpoints.is_empty() {
        out.push(TOPOLOGY.at(
            "proxmox.fallbackEndpoints",
            "fallback endpoints are other nodes of one joined cluster, but the hosts are standalone (each has its own endpoint)".to_owned(),
            "remove `fallbackEndpoints`, or the hosts' endpoints if they are one cluster",
        ));
    }
    let mut both = vec![("proxmox", px.fingerprint.is_some() && px.ca_file.is_some())];
    let host_paths: Vec<String> = (0..px.hosts.len())
        .map(|i| format!("proxmox.hosts[{i}]"))
        .collect();
    for (h, path) in px.hosts.iter().zip(&host_paths) {
        both.push((path, h.fingerprint.is_some() && h.ca_file.is_some()));
        let own = h.fingerprint.is_some() || h.ca_file.is_some() || h.token_file.is_some();
        if own && h.endpoint.is_none() {
            out.push(TOPOLOGY.at(
                path.clone(),
                format!("host `{}` has its own fingerprint, caFile or tokenFile but no endpoint: those belong to a standalone host's API", h.name),
                "add the host's `endpoint`, or move the setting to `proxmox`",
            ));
        }
    }
    for (path, conflict) in both {
        if conflict {
            out.push(TOPOLOGY.at(
                format!("{path}.caFile"),
                "both `fingerprint` and `caFile` are set; only one decides whom to trust".to_owned(),
                "keep `caFile` (survives certificate renewals and covers every node of a cluster) or `fingerprint` (one certificate), not both",
            ));
        }
    }
}

fn origin(out: &mut Vec<Finding>, path: &str, url: &str, example: &str) {
    if let Err(why) = https_origin(url) {
        out.push(ENDPOINT_FORMAT.at(
            path,
            format!("`{url}` {why}"),
            format!("write https://HOST[:PORT] with a port from 1 to 65535, e.g. {example}"),
        ));
    }
}

fn resources(f: &Facts, out: &mut Vec<Finding>) {
    let p = f.p;
    let mut check = |path: String, value: u32, range: (u32, u32), what: &str, why: &str| {
        if !(range.0..=range.1).contains(&value) {
            out.push(RESOURCES.at(
                path,
                format!("{what} {value} is outside {}..{}: {why}", range.0, range.1),
                format!("use a value from {} to {}", range.0, range.1),
            ));
        }
    };
    let d = &p.node_defaults;
    let cores_why = "Proxmox needs at least one core per socket";
    let disk_why = "Talos needs 6 GiB for its partitions and images";
    let memory_why = "Talos needs 1848 MiB on a control plane and 1024 MiB on a worker";
    let any_cp = p.nodes.iter().any(|n| n.role == Role::Controlplane);
    let min_memory = |role| match role {
        Role::Controlplane => MIN_MEMORY_CONTROL_PLANE,
        Role::Worker => MIN_MEMORY_WORKER,
    };
    let default_min = if any_cp || p.nodes.is_empty() {
        MIN_MEMORY_CONTROL_PLANE
    } else {
        MIN_MEMORY_WORKER
    };
    let base = "nodeDefaults";
    check(
        format!("{base}.cores"),
        d.cores,
        (1, MAX_CORES),
        "cores",
        cores_why,
    );
    check(
        format!("{base}.disk"),
        d.disk,
        (MIN_DISK, MAX_DISK),
        "disk (GiB)",
        disk_why,
    );
    // The default only matters for nodes that do not override it.
    if p.nodes.iter().any(|n| n.memory.is_none()) || p.nodes.is_empty() {
        let min = p
            .nodes
            .iter()
            .filter(|n| n.memory.is_none())
            .map(|n| min_memory(n.role))
            .max()
            .unwrap_or(default_min);
        check(
            format!("{base}.memory"),
            d.memory,
            (min, MAX_MEMORY),
            "memory (MiB)",
            memory_why,
        );
    }
    for (i, n) in p.nodes.iter().enumerate() {
        if let Some(c) = n.cores {
            check(
                format!("nodes[{i}].cores"),
                c,
                (1, MAX_CORES),
                "cores",
                cores_why,
            );
        }
        if let Some(m) = n.memory {
            let range = (min_memory(n.role), MAX_MEMORY);
            check(
                format!("nodes[{i}].memory"),
                m,
                range,
                "memory (MiB)",
                memory_why,
            );
        }
        if let Some(g) = n.disk {
            check(
                format!("nodes[{i}].disk"),
                g,
                (MIN_DISK, MAX_DISK),
                "disk (GiB)",
                disk_why,
            );
        }
    }
}

fn versions(f: &Facts, out: &mut Vec<Finding>) {
    let p = f.p;
    let talos = &p.talos.version;
    let talos_minor = match talos.strip_prefix('v').and_then(semver) {
        Some(v) => Some(v.1).filter(|_| v.0 == 1),
        None => {
            out.push(TALOS_TAG.at(
                "talos.version",
                format!("`{talos}` is not a Talos release tag; it names the ISO, the installer image and the config contract"),
                "write the tag exactly, e.g. v1.13.9 (leading 'v', no spaces)",
            ));
            None
        }
    };
    let k8s = &p.kubernetes.version;
    let Some((major, minor, _)) = semver(k8s) else {
        out.push(KUBERNETES_VERSION.at(
            "kubernetes.version",
            format!("`{k8s}` is not a Kubernetes release version; it becomes the image tag v<version> of the kubelet and control plane"),
            "write the version without a leading 'v', e.g. 1.36.3 (the Talos release notes list the default)",
        ));
        return;
    };
    let Some((lo, hi)) = talos_minor.and_then(kubernetes_minors) else {
        return; // NET405 or NET509 already names talos.version
    };
    if major != 1 || !(lo..=hi).contains(&minor) {
        out.push(KUBERNETES_RANGE.at(
            "kubernetes.version",
            format!("Talos {talos} runs Kubernetes 1.{lo} to 1.{hi}; {k8s} is refused by the node (\"version of Kubernetes … is too new/old\")"),
            format!("use a Kubernetes 1.{lo}.x..1.{hi}.x release, or a Talos release that supports {k8s}"),
        ));
    }
}

fn talos(f: &Facts, out: &mut Vec<Finding>) {
    let t = &f.p.talos;
    if !is_device_path(&t.install_disk) {
        out.push(INSTALL_DISK.at(
            "talos.installDisk",
            format!("`{}` is not a block device path: it must be an absolute path under /dev/ without '.', '..' or empty components", t.install_disk),
            "use the VM's disk as the guest sees it, e.g. /dev/sda (virtio-scsi)",
        ));
    }
    for (i, a) in t.schematic.extra_kernel_args.iter().enumerate() {
        if !is_kernel_arg(a) {
            out.push(KERNEL_ARG.at(
                format!("talos.schematic.extraKernelArgs[{i}]"),
                format!("`{a}` is not one kernel argument (key or key=value, printable, no whitespace or quotes)"),
                "write one argument per list item, e.g. console=ttyS0",
            ));
        }
    }
    for (i, e) in t.schematic.extensions.iter().enumerate() {
        if !is_extension_name(e) {
            out.push(EXTENSION.at(
                format!("talos.schematic.extensions[{i}]"),
                format!("`{e}` is not an Image Factory extension name (lower-case owner/name, no '.' or '..' components)"),
                "use a name from the Image Factory's extension list, e.g. siderolabs/qemu-guest-agent",
            ));
        }
    }
    if let Err(why) = crate::formats::factory_origin(&t.image_factory) {
        out.push(ENDPOINT_FORMAT.at(
            "talos.imageFactory",
            format!("`{}` {why}", t.image_factory),
            "write https://HOST[:PORT] (http:// for a self-hosted factory), e.g. https://factory.talos.dev",
        ));
    } else if t.image_factory.starts_with("http://") {
        out.push(PLAIN_HTTP_FACTORY.at(
            "talos.imageFactory",
            format!("`{}` is plain http: nothing proves the ISO the Proxmox hosts download, or the installer image, comes from your factory", t.image_factory),
            "serve the factory over https (its own CA works: Proxmox gets the ISO's checksum), or accept the risk on a trusted network",
        ));
    }
    let ep = &f.p.kubernetes.endpoint;
    // Not https at all is NET401's finding.
    if ep.starts_with("https://") {
        origin(out, "kubernetes.endpoint", ep, "https://10.8.16.20:6443");
    }
    for (i, s) in f.p.time_servers.iter().enumerate() {
        if !is_time_server(s) {
            out.push(TIME_SERVER.at(
                format!("timeServers[{i}]"),
                format!("`{s}` is not an NTP server Talos can use (a host name, a unicast IPv4 address or /dev/ptpN)"),
                "use e.g. time.cloudflare.com or your gateway's address; one server per list item",
            ));
        }
    }
}

fn dns(f: &Facts, out: &mut Vec<Finding>) {
    let p = f.p;
    for (i, s) in p.dns.servers.iter().enumerate() {
        if !usable_unicast(*s) {
            out.push(DNS_SERVER.at(
                format!("dns.servers[{i}]"),
                format!("{s} is not a unicast address a node can query (0.0.0.0/8, loopback, multicast, broadcast and 240.0.0.0/4 are not)"),
                "use your resolver's address, e.g. the gateway or 1.1.1.1",
            ));
        }
    }
    let mut name = |path: String, value: &str, ok: bool, what: &str| {
        if !ok {
            out.push(DNS_NAME.at(
                path,
                format!("`{value}` is not a valid {what}"),
                "use lower-case DNS labels (letters, digits, inner '-') separated by dots, e.g. lab.local",
            ));
        }
    };
    // The local zone's names are case-insensitive DNS; Kubernetes' domain is not.
    let dns_name = |s: &str| is_dns_subdomain(&s.to_ascii_lowercase());
    if let Some(d) = &p.dns.domain {
        name("dns.domain".into(), d, dns_name(d), "DNS domain");
    }
    for (i, r) in p.dns.records.iter().enumerate() {
        let path = format!("dns.records[{i}].name");
        name(path, &r.name, dns_name(&r.name), "DNS record name");
    }
    let d = &p.kubernetes.dns_domain;
    let what = "Kubernetes cluster domain";
    name("kubernetes.dnsDomain".into(), d, is_dns_subdomain(d), what);
    for (i, s) in p.kubernetes.cert_sans.iter().enumerate() {
        let path = format!("kubernetes.certSans[{i}]");
        name(
            path,
            s,
            is_host(s, true),
            "certificate SAN (DNS name or IPv4 address)",
        );
    }
}

/// Why `net` cannot carry cluster traffic, when it lies in a special-purpose block.
fn reserved(net: &Ipv4Net) -> Option<&'static str> {
    const BLOCKS: &[(&str, &str)] = &[
        ("0.0.0.0/8", "\"this network\" (0.0.0.0/8)"),
        ("127.0.0.0/8", "loopback (127.0.0.0/8)"),
        ("169.254.0.0/16", "link-local (169.254.0.0/16)"),
        ("224.0.0.0/4", "multicast (224.0.0.0/4)"),
        ("240.0.0.0/4", "reserved (240.0.0.0/4)"),
    ];
    BLOCKS.iter().find_map(|(block, what)| {
        let block: Ipv4Net = block.parse().expect("constant");
        (block.contains(&net.network()) || net.contains(&block.network())).then_some(*what)
    })
}

fn ranges(f: &Facts, out: &mut Vec<Finding>) {
    let k = &f.p.kubernetes;
    let svc = k.service_subnet;
    if let Some(what) = reserved(&svc) {
        out.push(SERVICE_SUBNET.at(
            "kubernetes.serviceSubnet",
            format!("service subnet {svc} lies in {what}; packets to those addresses never reach kube-proxy or Cilium"),
            "keep the default 10.96.0.0/12 or another private range",
        ));
    } else if !SERVICE_PREFIX.contains(&svc.prefix_len()) {
        out.push(SERVICE_SUBNET.at(
            "kubernetes.serviceSubnet",
            format!("service subnet {svc} is /{}; kube-apiserver accepts /12 at the widest and the cluster DNS service needs the 10th address", svc.prefix_len()),
            "use a /12../28 range, e.g. the default 10.96.0.0/12",
        ));
    }
    for (i, n) in f.p.networks.iter().enumerate() {
        if let Some(what) = reserved(&n.subnet) {
            out.push(NETWORK_SUBNET.at(
                format!("networks[{i}].subnet"),
                format!("subnet {} of network `{}` lies in {what}; hosts cannot use those addresses on a VLAN", n.subnet, n.name),
                "use the VLAN's real subnet (a private range such as 10.8.16.0/24)",
            ));
        }
    }
    let cilium = f.p.addons.cilium.native_routing_cidr;
    let blocks = [("kubernetes.podSubnet".to_string(), Some(k.pod_subnet))]
        .into_iter()
        .chain([("addons.cilium.nativeRoutingCIDR".to_string(), cilium)])
        .chain(
            f.p.nodes
                .iter()
                .enumerate()
                .map(|(i, n)| (format!("nodes[{i}].podCIDR"), n.pod_cidr)),
        );
    for (path, net) in blocks {
        let Some(net) = net else { continue };
        if let Some(what) = reserved(&net) {
            out.push(POD_RANGE.at(
                &path,
                format!("{net} lies in {what}; pod traffic there is dropped or never routed"),
                "use a private range (10/8, 172.16/12, 192.168/16) no network uses",
            ));
        } else if path.ends_with("podCIDR") && net.prefix_len() > MAX_NODE_POD_PREFIX {
            out.push(POD_RANGE.at(
                &path,
                format!("{net} is smaller than /{MAX_NODE_POD_PREFIX}: too few addresses for Cilium's router and health endpoints and the node's pods"),
                "give each node a /24 (254 pod addresses) or at least a /28",
            ));
        }
    }
    if k.node_pod_prefix > MAX_NODE_POD_PREFIX {
        out.push(POD_RANGE.at(
            "kubernetes.nodePodPrefix",
            format!("a /{} per node holds too few addresses for Cilium's router and health endpoints and the node's pods", k.node_pod_prefix),
            "use 24 (254 pod addresses per node), or at most 28",
        ));
    }
}

fn addons(f: &Facts, out: &mut Vec<Finding>) {
    let a = &f.p.addons;
    let versions = [("addons.cilium.version", Some(&a.cilium.version))]
        .into_iter()
        .chain([(
            "addons.metallb.version",
            a.metallb.as_ref().map(|m| &m.version),
        )]);
    for (path, v) in versions {
        let Some(v) = v else { continue };
        if semver(v.strip_prefix('v').unwrap_or(v)).is_none() {
            out.push(ADDON_VERSION.at(
                path,
                format!("`{v}` is not a release version; it selects the chart and image tags"),
                "write the release version, e.g. 1.19.6",
            ));
        }
    }
    if let Some(m) = &a.metallb
        && !is_dns_subdomain(&m.pool_name)
    {
        out.push(OBJECT_NAME.at(
            "addons.metallb.poolName",
            format!("`{}` is not a Kubernetes object name (DNS-1123 subdomain); the IPAddressPool is named after it", m.pool_name),
            "use lower-case letters, digits, '-' and '.', e.g. default",
        ));
    }
}
