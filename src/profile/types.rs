//! Serde types of the profile, `apiVersion: talos-pve.dev/v1alpha1`, `kind: Cluster`.
//!
//! Every field that a small profile may omit has a default here, so the seed-sized
//! homelab fits on one screen. Unknown fields are rejected: a typo must never be
//! silently ignored in a file that decides IP addresses.

use std::net::Ipv4Addr;

use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};

pub const API_VERSION: &str = "talos-pve.dev/v1alpha1";
pub const KIND: &str = "Cluster";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Profile {
    pub api_version: String,
    pub kind: String,
    pub metadata: Metadata,
    pub proxmox: Proxmox,
    pub networks: Vec<Network>,
    #[serde(default)]
    pub dns: Dns,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub time_servers: Vec<String>,
    #[serde(default)]
    pub talos: Talos,
    pub kubernetes: Kubernetes,
    #[serde(default)]
    pub routing: Routing,
    #[serde(default)]
    pub node_defaults: NodeResources,
    pub nodes: Vec<Node>,
    #[serde(default)]
    pub addons: Addons,
    /// How the switches are cabled, for the physical view of `docs` (documentation only).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub switches: Vec<Switch>,
    #[serde(default, skip_serializing_if = "LintSettings::is_empty")]
    pub lint: LintSettings,
}

/// One switch's cabling: `name` is a `devices` entry of kind `switch`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Switch {
    pub name: String,
    /// The switch this one's uplink goes to; absent: the gateway.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uplink: Option<String>,
    /// Hosts whose uplink (`proxmox.hosts[].uplink`) is cabled to this switch.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hosts: Vec<String>,
    /// Hosts whose storage bond (`proxmox.hosts[].storage`) is cabled to this switch.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub storage: Vec<String>,
}

/// How `lint` treats this profile's findings.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LintSettings {
    /// Warnings and infos the owner has read and accepted: `lint` lists them with
    /// their reasons, other commands only count them. Errors cannot be acknowledged.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub acknowledge: Vec<Acknowledgement>,
}

impl LintSettings {
    pub fn is_empty(&self) -> bool {
        self.acknowledge.is_empty()
    }
}

/// One accepted lint finding: every finding of `code`, or only those about `node`
/// and/or at `path` (a profile field path such as `kubernetes.endpoint`, which also
/// covers the fields below it).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Acknowledgement {
    pub code: String,
    /// Why it is acceptable here, shown by `talos-pve lint`.
    pub reason: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Metadata {
    /// Cluster name: Talos `clusterName`, talosconfig context, directory name.
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Proxmox {
    /// `https://host:8006`; `PROXMOX_VE_ENDPOINT` overrides it.
    pub endpoint: String,
    /// `USER@REALM!TOKENID`. The secret never lives in the profile: it comes from
    /// `PROXMOX_VE_API_TOKEN` or `token_file`.
    pub token_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_file: Option<String>,
    /// SHA-256 fingerprint of the API certificate (`AA:BB:…`) for self-signed hosts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fingerprint: Option<String>,
    /// The cluster's CA (`/etc/pve/pve-root-ca.pem` copied here): trusts every
    /// node's default certificate, unlike a fingerprint that pins one node's leaf.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<String>,
    /// More endpoints of the same joined cluster, tried in order when the ones
    /// before are down.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub fallback_endpoints: Vec<String>,
    #[serde(default = "default_bridge")]
    pub bridge: String,
    #[serde(default = "default_iso_storage")]
    pub iso_storage: String,
    #[serde(default = "default_disk_storage")]
    pub disk_storage: String,
    pub hosts: Vec<Host>,
}

fn default_bridge() -> String {
    "vmbr0".into()
}
fn default_iso_storage() -> String {
    "local".into()
}
fn default_disk_storage() -> String {
    "local-lvm".into()
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Host {
    /// Proxmox node name (`pvesh get /nodes`).
    pub name: String,
    /// Management address of the host.
    pub address: Ipv4Addr,
    /// Physical uplink carrying the management/workload VLANs (documentation only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uplink: Option<String>,
    /// Storage bond of the host, audited by preflight and documented by `docs`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage: Option<HostStorageLink>,
    /// Out-of-band management (vPro/AMT, JetKVM) addresses, for docs and duplicate checks.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub oob: Vec<Device>,
    /// A standalone host (not joined to a PVE cluster) has its own API, users, VMID
    /// space and CA: its endpoint, and optionally its own trust and token. Either
    /// every host has an endpoint (standalone hosts) or none (one joined cluster
    /// behind `proxmox.endpoint`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fingerprint: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<String>,
    /// `USER@REALM!TOKENID=SECRET` of this host (each standalone host has its own
    /// token secret).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_file: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HostStorageLink {
    pub interface: String,
    pub address: Ipv4Addr,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub members: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u32>,
}

/// What a network is for. Exactly one `management` network is required, and at most
/// one `workload` network: without one, the management network carries the workload
/// too (a flat home LAN: one network, one NIC per VM). The others are documented and
/// checked for overlaps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NetworkRole {
    Infrastructure,
    Management,
    Workload,
    Storage,
    Other,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Network {
    pub name: String,
    pub role: NetworkRole,
    /// 802.1Q tag; absent on a flat, untagged LAN (the NIC then carries no `tag=`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vlan: Option<u16>,
    pub subnet: Ipv4Net,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<Ipv4Addr>,
    #[serde(default = "default_mtu")]
    pub mtu: u32,
    /// Routed between VLANs by the gateway (false for isolated storage networks).
    #[serde(default = "yes")]
    pub routed: bool,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub reserved: Vec<Reservation>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub devices: Vec<Device>,
}

fn default_mtu() -> u32 {
    1500
}
fn yes() -> bool {
    true
}

/// A range of addresses set aside (`first-last` or a single address).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Reservation {
    pub range: AddrRange,
    pub purpose: String,
    /// A DHCP pool: no static address of the plan may fall inside it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub dhcp: bool,
}

/// A device with a fixed address that the plan must not collide with.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Device {
    pub name: String,
    pub address: Ipv4Addr,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Dns {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub servers: Vec<Ipv4Addr>,
    /// Local zone, e.g. `lab.local`; nodes get `<name>.<domain>` records and SANs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub domain: Option<String>,
    /// Extra records of the local zone (`k8s-api`, `traefik`, …).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub records: Vec<DnsRecord>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DnsRecord {
    pub name: String,
    pub address: Ipv4Addr,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Talos {
    /// Talos release, e.g. `v1.13.9`; its minor selects the config contract (1.12 or 1.13).
    #[serde(default = "default_talos_version")]
    pub version: String,
    #[serde(default)]
    pub schematic: Schematic,
    #[serde(default = "default_install_disk")]
    pub install_disk: String,
    /// Self-hosted Image Factory; `TALOS_PVE_IMAGE_FACTORY` overrides it.
    #[serde(default = "default_image_factory")]
    pub image_factory: String,
}

impl Default for Talos {
    fn default() -> Self {
        Self {
            version: default_talos_version(),
            schematic: Schematic::default(),
            install_disk: default_install_disk(),
            image_factory: default_image_factory(),
        }
    }
}

pub(crate) fn default_talos_version() -> String {
    "v1.13.9".into()
}
fn default_install_disk() -> String {
    "/dev/sda".into()
}
fn default_image_factory() -> String {
    "https://factory.talos.dev".into()
}

/// Image Factory customization. Its canonical YAML hashes to the schematic ID.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Schematic {
    #[serde(default = "default_extensions")]
    pub extensions: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub extra_kernel_args: Vec<String>,
}

impl Default for Schematic {
    fn default() -> Self {
        Self {
            extensions: default_extensions(),
            extra_kernel_args: Vec::new(),
        }
    }
}

fn default_extensions() -> Vec<String> {
    vec!["siderolabs/qemu-guest-agent".into()]
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Kubernetes {
    #[serde(default = "default_k8s_version")]
    pub version: String,
    /// `https://<control-plane address or name>:6443`.
    pub endpoint: String,
    #[serde(default = "default_service_subnet")]
    pub service_subnet: Ipv4Net,
    /// Cluster pod block (Talos `podSubnets`, one IPv4 prefix); per-node CIDRs are carved from it.
    pub pod_subnet: Ipv4Net,
    /// Prefix length of each node's pod CIDR when not given per node.
    #[serde(default = "default_node_pod_prefix")]
    pub node_pod_prefix: u8,
    #[serde(default = "default_dns_domain")]
    pub dns_domain: String,
    /// Defaults to true when every node is a control plane.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allow_scheduling_on_control_planes: Option<bool>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cert_sans: Vec<String>,
}

pub(crate) fn default_k8s_version() -> String {
    "1.36.3".into()
}
fn default_service_subnet() -> Ipv4Net {
    "10.96.0.0/12".parse().expect("constant")
}
fn default_node_pod_prefix() -> u8 {
    24
}
fn default_dns_domain() -> String {
    "cluster.local".into()
}

/// Which link carries the default route, and whether pods are masqueraded.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Routing {
    #[serde(default = "default_route_via")]
    pub default_route: LinkRole,
    /// Metric of the machine-config default route; lower than nocloud's 1024 so it wins.
    #[serde(default = "default_route_metric")]
    pub default_route_metric: u32,
    /// SNAT pod traffic leaving the pod block (needs no router change); off = routable pods.
    #[serde(default)]
    pub masquerade: bool,
}

impl Default for Routing {
    fn default() -> Self {
        Self {
            default_route: default_route_via(),
            default_route_metric: default_route_metric(),
            masquerade: false,
        }
    }
}

fn default_route_via() -> LinkRole {
    LinkRole::Workload
}
fn default_route_metric() -> u32 {
    512
}

/// What a Talos VM's link carries. With two networks each role has its own NIC; with
/// one network (no `workload` network) one NIC carries both.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LinkRole {
    Management,
    Workload,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NodeResources {
    #[serde(default = "default_cores")]
    pub cores: u32,
    /// MiB.
    #[serde(default = "default_memory")]
    pub memory: u32,
    /// GiB.
    #[serde(default = "default_disk")]
    pub disk: u32,
}

impl Default for NodeResources {
    fn default() -> Self {
        Self {
            cores: default_cores(),
            memory: default_memory(),
            disk: default_disk(),
        }
    }
}

fn default_cores() -> u32 {
    4
}
fn default_memory() -> u32 {
    8192
}
fn default_disk() -> u32 {
    64
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Controlplane,
    Worker,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Controlplane => "controlplane",
            Role::Worker => "worker",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Node {
    pub name: String,
    /// Name of the Proxmox host (`proxmox.hosts[].name`).
    pub host: String,
    pub vmid: u32,
    #[serde(default = "default_role")]
    pub role: Role,
    pub management: NodeLink,
    /// The second NIC, on the `workload` network; absent when the profile has no
    /// workload network (the management link then carries both roles).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workload: Option<NodeLink>,
    /// This node's pod CIDR; derived from `kubernetes.podSubnet` in node order when omitted.
    #[serde(default, rename = "podCIDR", skip_serializing_if = "Option::is_none")]
    pub pod_cidr: Option<Ipv4Net>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cores: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disk: Option<u32>,
}

fn default_role() -> Role {
    Role::Controlplane
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NodeLink {
    pub address: Ipv4Addr,
    /// Pinned MAC; derived deterministically when omitted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Addons {
    #[serde(default)]
    pub cilium: Cilium,
    #[serde(default)]
    pub metallb: Option<MetalLb>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Cilium {
    #[serde(default = "default_cilium_version")]
    pub version: String,
    /// Defaults to the cluster pod subnet.
    #[serde(
        default,
        rename = "nativeRoutingCIDR",
        skip_serializing_if = "Option::is_none"
    )]
    pub native_routing_cidr: Option<Ipv4Net>,
    /// The cilium-cli image the install Job runs; defaults to the built-in pin (a
    /// tag). Set `<image>:<tag>@sha256:<digest>` to pin it by digest.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cli_image: Option<String>,
}

impl Default for Cilium {
    fn default() -> Self {
        Self {
            version: default_cilium_version(),
            native_routing_cidr: None,
            cli_image: None,
        }
    }
}

/// The default of `embedded/cilium.yaml` (a unit test in `addons::cilium` keeps them equal).
pub fn default_cilium_version() -> String {
    "1.18.11".into()
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MetalLb {
    #[serde(default = "default_metallb_version")]
    pub version: String,
    #[serde(default = "default_pool_name")]
    pub pool_name: String,
    /// `first-last`, inside the workload subnet.
    pub pool: AddrRange,
    /// The link the L2Advertisement binds to.
    #[serde(default = "default_route_via")]
    pub interface: LinkRole,
}

fn default_metallb_version() -> String {
    "0.16.1".into()
}
fn default_pool_name() -> String {
    "default".into()
}

/// An inclusive IPv4 range written `10.8.31.10-10.8.31.200` (or one address).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct AddrRange {
    pub first: Ipv4Addr,
    pub last: Ipv4Addr,
}

impl AddrRange {
    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        self.first <= ip && ip <= self.last
    }
    pub fn count(&self) -> u64 {
        u64::from(u32::from(self.last)) - u64::from(u32::from(self.first)) + 1
    }
    pub fn overlaps_net(&self, net: &Ipv4Net) -> bool {
        self.first <= net.broadcast() && net.network() <= self.last
    }
    pub fn overlaps(&self, other: &AddrRange) -> bool {
        self.first <= other.last && other.first <= self.last
    }
    pub fn within(&self, net: &Ipv4Net) -> bool {
        net.contains(&self.first) && net.contains(&self.last)
    }
}

impl std::fmt::Display for AddrRange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.first == self.last {
            write!(f, "{}", self.first)
        } else {
            write!(f, "{}-{}", self.first, self.last)
        }
    }
}

impl std::str::FromStr for AddrRange {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let parse = |p: &str| {
            p.trim().parse::<Ipv4Addr>().map_err(|_| format!("`{p}` is not an IPv4 address (expected `first-last`, e.g. 10.8.31.10-10.8.31.200)"))
        };
        let (first, last) = match s.split_once('-') {
            Some((a, b)) => (parse(a)?, parse(b)?),
            None => {
                let ip = parse(s)?;
                (ip, ip)
            }
        };
        if first > last {
            return Err(format!(
                "range `{s}` runs backwards: {first} is after {last}"
            ));
        }
        Ok(Self { first, last })
    }
}

impl Serialize for AddrRange {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for AddrRange {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

impl Network {
    /// `VLAN 16` or `untagged`, for messages, tables and diagrams.
    pub fn vlan_label(&self) -> String {
        vlan_label(self.vlan)
    }
}

/// `VLAN 16` or `untagged`.
pub fn vlan_label(vlan: Option<u16>) -> String {
    vlan.map_or_else(|| "untagged".into(), |v| format!("VLAN {v}"))
}

impl Profile {
    pub fn network(&self, role: NetworkRole) -> Option<&Network> {
        self.networks.iter().find(|n| n.role == role)
    }
    /// One network for management and workload: the profile declares no `workload` network.
    pub fn one_network(&self) -> bool {
        self.network(NetworkRole::Workload).is_none()
    }
    /// The network the `role` link is on: the workload role falls back to the
    /// management network in a one-network profile.
    pub fn link_network(&self, role: LinkRole) -> Option<&Network> {
        match role {
            LinkRole::Management => self.network(NetworkRole::Management),
            LinkRole::Workload => self
                .network(NetworkRole::Workload)
                .or_else(|| self.network(NetworkRole::Management)),
        }
    }
    pub fn host(&self, name: &str) -> Option<&Host> {
        self.proxmox.hosts.iter().find(|h| h.name == name)
    }
    pub fn all_control_planes(&self) -> bool {
        self.nodes.iter().all(|n| n.role == Role::Controlplane)
    }
    pub fn resources(&self, node: &Node) -> NodeResources {
        NodeResources {
            cores: node.cores.unwrap_or(self.node_defaults.cores),
            memory: node.memory.unwrap_or(self.node_defaults.memory),
            disk: node.disk.unwrap_or(self.node_defaults.disk),
        }
    }
}

impl NodeLink {
    pub fn new(address: Ipv4Addr) -> Self {
        Self { address, mac: None }
    }
}

impl Node {
    /// The link carrying `role`: the management link carries the workload too when the
    /// node has one NIC.
    pub fn link(&self, role: LinkRole) -> &NodeLink {
        match role {
            LinkRole::Management => &self.management,
            LinkRole::Workload => self.workload.as_ref().unwrap_or(&self.management),
        }
    }
}
