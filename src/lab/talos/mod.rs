//! The lab's simulated Talos nodes (gRPC over TLS on loopback).
//!
//! One node per VM the lab Proxmox starts (it listens to `LabEvent::VmStarted`),
//! going booting (unreachable) → maintenance (self-signed TLS, takes a config) →
//! installing (unreachable) → running (mutual TLS against the applied config's OS
//! CA, roles from the client certificate). Control planes bootstrap etcd once, join
//! each other, serve snapshots of `fabric.etcd` and recover into it. Every node
//! address (both NICs, port 50000) maps to the node's loopback listener in the
//! fabric's address book; nothing else is reachable. Latencies and faults come from
//! `LabTalosConfig`; the node states serialize for persistence across commands.

mod apply;
mod certs;
mod leave;
mod machine;
mod nocloud;
mod server;
mod upgrade;

use std::collections::BTreeMap;
use std::fmt;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use super::{Fabric, LabEvent, LabNodeInfo, LabVm};
use crate::talos::api::APID_PORT;

pub use machine::MachineConfig;

/// Faults to inject; each counter is consumed as the fault fires.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Faults {
    /// Extra time every install takes.
    pub slow_install: Duration,
    /// Install → reboot → install cycles before a node runs (`u32::MAX`: forever).
    pub reboot_loops: u32,
    /// The first N Bootstrap calls fail with "time is not in sync yet".
    pub time_not_in_sync: u32,
    /// The first N snapshot/kubeconfig streams are cut short.
    pub drop_streams: u32,
    /// Hostnames whose next OS upgrade fails in the installer (once each).
    #[serde(default)]
    pub upgrade_fails: Vec<String>,
    /// Hostnames whose kubelet does not start at their next boot (once each).
    #[serde(default)]
    pub kubelet_stays_down: Vec<String>,
    /// Control planes whose etcd does not start at their next boot (once each).
    #[serde(default)]
    pub etcd_stays_down: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LabTalosConfig {
    /// What `Version` reports.
    pub talos_version: String,
    /// VM power-on → maintenance mode (or → running when installed).
    pub boot: Duration,
    /// Config applied → running.
    pub install: Duration,
    /// Running → the etcd stage is reached (Bootstrap available); for a member that
    /// booted again, its etcd runs and answers health checks from then on.
    pub etcd_ready: Duration,
    /// Cluster bootstrapped → another control plane joins.
    pub join: Duration,
    pub faults: Faults,
    /// What the nodes call their NICs.
    #[serde(default)]
    pub link_names: LinkNames,
}

/// How a lab node names its links (LinkStatus IDs). Talos calls `eth<N>` naming
/// unstable with several NICs (talos.md §5), so talos-pve must read the names.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum LinkNames {
    /// The nocloud image boots with `net.ifnames=0`: `eth<N>` in probe order, here NIC order.
    #[default]
    Eth,
    /// Predictable names: Proxmox puts virtio `net<i>` in PCI slot 18+i, hence `ens<18+i>`.
    Predictable,
    /// Names per VMID in NIC order (nodes that disagree); others fall back to `Eth`.
    Given(std::collections::BTreeMap<u32, Vec<String>>),
}

impl LinkNames {
    pub fn names(&self, vm: &LabVm) -> Vec<String> {
        let eth = || vm.nics.iter().map(|n| format!("eth{}", n.index)).collect();
        match self {
            LinkNames::Eth => eth(),
            LinkNames::Predictable => vm
                .nics
                .iter()
                .map(|n| format!("ens{}", 18 + u32::from(n.index)))
                .collect(),
            LinkNames::Given(m) => m.get(&vm.vmid).cloned().unwrap_or_else(eth),
        }
    }
}

impl Default for LabTalosConfig {
    fn default() -> Self {
        Self {
            talos_version: "v1.13.9".into(),
            boot: Duration::from_millis(300),
            install: Duration::from_millis(800),
            etcd_ready: Duration::from_millis(200),
            join: Duration::from_millis(200),
            faults: Faults::default(),
            link_names: LinkNames::default(),
        }
    }
}

impl LabTalosConfig {
    /// Everything in tens of milliseconds (tests).
    pub fn fast() -> Self {
        let ms = Duration::from_millis;
        Self {
            boot: ms(20),
            install: ms(60),
            etcd_ready: ms(20),
            join: ms(20),
            ..Self::default()
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Phase {
    Booting,
    Maintenance,
    Installing,
    Running,
    Stopped,
}

/// A node's persistent state.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeState {
    pub vm: LabVm,
    pub phase: Phase,
    /// The applied machine config (holds CA keys: lab state is written 0600).
    pub config: Option<String>,
    pub config_sha256: Option<String>,
    /// The etcd stage is reached (Bootstrap/Recover accepted).
    pub etcd_ready: bool,
    /// This node's etcd holds data and runs (bootstrapped or joined).
    pub etcd_member: bool,
    /// Why the etcd service failed (a recovery from a bad or missing snapshot).
    #[serde(default)]
    pub etcd_failed: Option<String>,
    pub member_id: u64,
    pub reboot_loops_done: u32,
    /// The Talos release installed on the disk (`Version`'s tag); `None` in states
    /// saved before versions were tracked: the configured release.
    #[serde(default)]
    pub talos_version: Option<String>,
    /// The release an upgrade wrote to disk, booted at the next power-on or reboot.
    #[serde(default)]
    pub staged_version: Option<String>,
    /// Images pulled into the system containerd (`ImageService/Pull`).
    #[serde(default)]
    pub pulled: Vec<String>,
    /// Boots so far: the boot id changes with each.
    #[serde(default)]
    pub boots: u64,
    /// A `LifecycleService/Upgrade` is running (not saved: it ends with the process).
    #[serde(skip)]
    pub installing_upgrade: bool,
    /// A config stored by a STAGED or REBOOT apply: it runs from the next boot.
    #[serde(default)]
    pub staged_config: Option<String>,
    /// While a TRY config runs: the stored one, back after the timeout or a reboot.
    #[serde(default)]
    pub try_rollback: Option<String>,
    /// Bumped by every TRY apply and by any other apply: a rollback timer whose
    /// number is no longer current does nothing (the timer was cancelled).
    #[serde(skip)]
    pub try_serial: u64,
    /// A REBOOT apply was accepted: no more applies until the node has booted.
    #[serde(skip)]
    pub apply_rebooting: bool,
    /// Installed from a cidata config and not yet an etcd member since.
    #[serde(default)]
    pub fresh_install: bool,
    /// Faults `kubelet-stays-down` / `etcd-stays-down` fired at this boot: that
    /// service stays down until the next one.
    #[serde(default)]
    pub kubelet_stuck: bool,
    #[serde(default)]
    pub etcd_stuck: bool,
}

impl fmt::Debug for NodeState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NodeState")
            .field("vmid", &self.vm.vmid)
            .field("phase", &self.phase)
            .field("config_sha256", &self.config_sha256)
            .field("etcd_member", &self.etcd_member)
            .finish_non_exhaustive()
    }
}

impl NodeState {
    /// A machine that has never run a config.
    fn fresh(vm: LabVm, phase: Phase) -> Self {
        Self {
            vm,
            phase,
            config: None,
            config_sha256: None,
            etcd_ready: false,
            etcd_member: false,
            etcd_failed: None,
            member_id: 0,
            reboot_loops_done: 0,
            talos_version: None,
            staged_version: None,
            pulled: Vec::new(),
            boots: 0,
            installing_upgrade: false,
            staged_config: None,
            try_rollback: None,
            try_serial: 0,
            apply_rebooting: false,
            fresh_install: false,
            kubelet_stuck: false,
            etcd_stuck: false,
        }
    }
}

/// An etcd cluster member. Membership is the cluster's view: a node whose data was
/// wiped stays listed until it is removed by ID, and cannot rejoin before that.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Member {
    pub id: u64,
    pub hostname: String,
    pub address: String,
}

/// Everything needed to bring the lab's Talos nodes back in another process.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct LabTalosState {
    pub nodes: Vec<NodeState>,
    #[serde(default)]
    pub members: Vec<Member>,
    pub faults_left: Faults,
    pub counters: Counters,
}

/// What the nodes were asked to do (tests assert idempotency with these).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counters {
    /// Configs accepted (dry runs excluded).
    pub applies: u64,
    pub dry_runs: u64,
    pub bootstrap_calls: u64,
    /// Bootstraps that started etcd (fresh or recovered).
    pub bootstraps: u64,
    pub recover_uploads: u64,
    pub snapshots: u64,
    pub kubeconfigs: u64,
    /// Calls refused for a missing role.
    pub denied: u64,
    /// Configs a node took from its `cidata` volume at boot.
    #[serde(default)]
    pub cidata_configs: u64,
}

struct Node {
    state: NodeState,
    parsed: Option<MachineConfig>,
    listener: SocketAddr,
    accept: JoinHandle<()>,
    /// Bumped on every phase change; timers from older phases do nothing.
    generation: u64,
    maintenance_tls: Arc<rustls::ServerConfig>,
    mutual_tls: Option<Arc<rustls::ServerConfig>>,
    recover_upload: Option<Vec<u8>>,
}

impl Node {
    fn hostname(&self) -> String {
        self.parsed
            .as_ref()
            .and_then(|c| c.hostname.clone())
            .unwrap_or_else(|| self.state.vm.name.clone())
    }

    fn addresses(&self) -> Vec<Ipv4Addr> {
        self.state
            .vm
            .nics
            .iter()
            .filter_map(|n| n.address.map(|a| a.addr()))
            .collect()
    }

    /// The address of NIC `index` (0: management, 1: workload).
    fn nic_address(&self, index: u8) -> Option<Ipv4Addr> {
        self.state
            .vm
            .nics
            .iter()
            .find(|n| n.index == index)
            .and_then(|n| n.address.map(|a| a.addr()))
    }

    fn management(&self) -> Option<Ipv4Addr> {
        self.nic_address(0)
    }

    fn internal_ip(&self, cfg: &MachineConfig) -> Ipv4Addr {
        let mgmt = self.management().unwrap_or(Ipv4Addr::LOCALHOST);
        machine::internal_ip(&cfg.node_ip_subnets, mgmt, self.nic_address(1))
    }

    /// A running etcd member that a joiner can reach at the address the API server
    /// endpoints give for it (its kubelet node IP).
    fn serves_etcd_at_endpoint(&self) -> bool {
        self.state.phase == Phase::Running
            && self.state.etcd_member
            && self.parsed.as_ref().is_some_and(|c| {
                machine::etcd_listens_on(&c.etcd_listen_subnets, self.internal_ip(c))
            })
    }

    fn is_control_plane(&self) -> bool {
        self.parsed
            .as_ref()
            .is_some_and(|c| c.machine_type == "controlplane")
    }
}

struct Shared {
    fabric: Fabric,
    cfg: LabTalosConfig,
    /// Addresses a foreign machine answers at (`impostor=NODE`): the real node
    /// does not get them mapped.
    claimed: Mutex<Vec<SocketAddr>>,
    /// Lock order: `nodes` before `members`.
    nodes: Mutex<BTreeMap<u32, Node>>,
    members: Mutex<Vec<Member>>,
    faults_left: Mutex<Faults>,
    counters: Mutex<Counters>,
    /// API calls served since start (benchmarks; not saved).
    requests: std::sync::atomic::AtomicU64,
}

/// The running simulator. Dropping it does not stop the nodes; call `shutdown`.
#[derive(Clone)]
pub struct LabTalos {
    shared: Arc<Shared>,
    events: Arc<JoinHandle<()>>,
}

impl LabTalos {
    /// Start with no nodes; nodes appear as the lab Proxmox starts VMs.
    pub fn start(fabric: &Fabric, cfg: LabTalosConfig) -> Self {
        let state = LabTalosState {
            faults_left: cfg.faults.clone(),
            ..LabTalosState::default()
        };
        Self::start_from(fabric, cfg, state)
    }

    /// Start from a saved state (another `--lab` command's nodes); the faults still
    /// to fire come from the state, latencies from `cfg`.
    pub fn start_from(fabric: &Fabric, cfg: LabTalosConfig, state: LabTalosState) -> Self {
        let shared = Arc::new(Shared {
            fabric: fabric.clone(),
            cfg,
            claimed: Mutex::default(),
            nodes: Mutex::default(),
            members: Mutex::new(state.members),
            faults_left: Mutex::new(state.faults_left),
            counters: Mutex::new(state.counters),
            requests: Default::default(),
        });
        // Subscribe before anything else so no event emitted after `start` is missed.
        let mut rx = fabric.events.subscribe();
        for n in state.nodes {
            restore_node(&shared, n);
        }
        announce_bootstrapped(&shared);
        let s = shared.clone();
        let events = tokio::spawn(async move {
            loop {
                match rx.recv().await {
                    Ok(LabEvent::VmStarted(vm)) => vm_started(&s, vm),
                    Ok(LabEvent::VmStopped { vmid }) => vm_stopped(&s, vmid, false),
                    Ok(LabEvent::VmDestroyed { vmid }) => vm_stopped(&s, vmid, true),
                    Ok(_) => {}
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                        tracing::warn!(missed = n, "lab talos: event bus lagged");
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => break,
                }
            }
        });
        Self {
            shared,
            events: Arc::new(events),
        }
    }

    pub fn counters(&self) -> Counters {
        *lock(&self.shared.counters)
    }

    /// gRPC calls served since start, every node together.
    pub fn requests(&self) -> u64 {
        self.shared
            .requests
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    pub fn phase(&self, vmid: u32) -> Option<Phase> {
        lock(&self.shared.nodes).get(&vmid).map(|n| n.state.phase)
    }

    /// Replace the faults still to fire (tests inject them mid-run).
    pub fn inject(&self, faults: Faults) {
        *lock(&self.shared.faults_left) = faults;
    }

    /// Serializable state of every node (impostors are not ours to keep).
    pub fn state(&self) -> LabTalosState {
        LabTalosState {
            nodes: lock(&self.shared.nodes)
                .iter()
                .filter(|(vmid, _)| **vmid < IMPOSTOR_VMIDS)
                .map(|(_, n)| n.state.clone())
                .collect(),
            members: lock(&self.shared.members).clone(),
            faults_left: lock(&self.shared.faults_left).clone(),
            counters: self.counters(),
        }
    }

    /// Stop every node and the event loop; addresses are unmapped.
    pub fn shutdown(&self) {
        self.events.abort();
        let mut nodes = lock(&self.shared.nodes);
        for n in nodes.values() {
            n.accept.abort();
            unmap(&self.shared, n);
        }
        nodes.clear();
    }
}

/// Impostors live above every VMID PVE can assign (≤ 999999999).
const IMPOSTOR_VMIDS: u32 = 1_000_000_000;

impl LabTalos {
    /// Disaster `impostor=NODE`: a foreign machine on the management VLAN answers
    /// at `vm`'s management address (its NIC 0) with `vm`'s MACs, in maintenance
    /// mode: it takes any config it is sent and then runs it, as the reproduced
    /// incident's machine did.
    pub fn impostor(&self, vm: LabVm) {
        let vmid = IMPOSTOR_VMIDS + vm.vmid;
        let state = NodeState::fresh(vm, Phase::Maintenance);
        let Some(n) = new_node(&self.shared, vmid, state) else {
            return;
        };
        for a in n.addresses() {
            let at = SocketAddr::new(a.into(), APID_PORT);
            lock(&self.shared.claimed).push(at);
            self.shared.fabric.addresses.map(at, n.listener);
        }
        lock(&self.shared.nodes).insert(vmid, n);
    }

    /// What each impostor was sent: `(node it impersonates, machine config)`.
    pub fn impostor_configs(&self) -> Vec<(String, String)> {
        lock(&self.shared.nodes)
            .range(IMPOSTOR_VMIDS..)
            .filter_map(|(_, n)| Some((n.state.vm.name.clone(), n.state.config.clone()?)))
            .collect()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panicked holder leaves plain data behind; keep serving.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn map(shared: &Shared, n: &Node) {
    let claimed = lock(&shared.claimed);
    for a in n.addresses() {
        let at = SocketAddr::new(a.into(), APID_PORT);
        if !claimed.contains(&at) {
            shared.fabric.addresses.map(at, n.listener);
        }
    }
}

fn unmap(shared: &Shared, n: &Node) {
    let claimed = lock(&shared.claimed);
    for a in n.addresses() {
        let at = SocketAddr::new(a.into(), APID_PORT);
        if !claimed.contains(&at) {
            shared.fabric.addresses.unmap(at);
        }
    }
}

fn names(vm: &LabVm, extra: &[String]) -> Vec<String> {
    let mut v: Vec<String> = vm
        .nics
        .iter()
        .filter_map(|n| n.address.map(|a| a.addr().to_string()))
        .collect();
    v.push(vm.name.clone());
    // Lab only: `lab serve` hands talosctl the loopback listener as the endpoint.
    v.push("127.0.0.1".into());
    v.extend(extra.iter().cloned());
    v
}

/// A node served under `key` (its VMID, or an impostor's).
fn new_node(shared: &Arc<Shared>, key: u32, state: NodeState) -> Option<Node> {
    let maintenance = certs::maintenance(&names(&state.vm, &[]))
        .and_then(server::maintenance_tls)
        .map_err(|e| tracing::error!(vmid = state.vm.vmid, error = %e, "lab talos: no maintenance certificate"))
        .ok()?;
    let std_listener = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.set_nonblocking(true).map(|()| l))
        .map_err(|e| tracing::error!(error = %e, "lab talos: cannot bind loopback"))
        .ok()?;
    let listener = std_listener.local_addr().ok()?;
    let tcp = TcpListener::from_std(std_listener).ok()?;
    let accept = tokio::spawn(server::accept_loop(Arc::downgrade(shared), key, tcp));
    let parsed = state
        .config
        .as_deref()
        .and_then(|c| machine::parse(c, &state.vm.nics).ok());
    let mut n = Node {
        state,
        parsed,
        listener,
        accept,
        generation: 0,
        maintenance_tls: maintenance,
        mutual_tls: None,
        recover_upload: None,
    };
    configure_links(&mut n);
    Some(n)
}

fn vm_started(shared: &Arc<Shared>, vm: LabVm) {
    let mut nodes = lock(&shared.nodes);
    let vmid = vm.vmid;
    if let Some(n) = nodes.get_mut(&vmid) {
        // A power-on of a known VM: it boots from disk if Talos was installed. Its
        // addresses stayed mapped while it was off; its NICs may have changed since.
        unmap(shared, n);
        n.state.vm = vm;
        configure_links(n);
        map(shared, n);
    } else {
        let state = NodeState::fresh(vm, Phase::Booting);
        let Some(n) = new_node(shared, vmid, state) else {
            return;
        };
        map(shared, &n);
        nodes.insert(vmid, n);
    }
    drop(nodes);
    boot(shared, vmid);
}

fn vm_stopped(shared: &Arc<Shared>, vmid: u32, destroyed: bool) {
    let mut nodes = lock(&shared.nodes);
    if let Some(n) = nodes.get_mut(&vmid) {
        set_phase(n, Phase::Stopped);
        n.state.etcd_ready = false;
        // A stopped VM's address still routes somewhere that does not answer (its
        // listener drops every connection while stopped), as a powered-off host does:
        // a client waiting through a PVE reboot sees "not answering", not the lab's
        // fail-closed "no loopback mapping". Only a destroyed VM frees its address.
        if destroyed {
            unmap(shared, n);
            n.accept.abort();
            nodes.remove(&vmid);
        }
    }
}

fn restore_node(shared: &Arc<Shared>, mut state: NodeState) {
    let vmid = state.vm.vmid;
    let resume = state.phase;
    if resume != Phase::Stopped {
        state.phase = Phase::Booting;
    }
    let Some(n) = new_node(shared, vmid, state) else {
        return;
    };
    if resume != Phase::Stopped {
        map(shared, &n);
    }
    lock(&shared.nodes).insert(vmid, n);
    match resume {
        // The VM kept running between two `--lab` commands: no reboot.
        Phase::Running => enter_running(shared, vmid),
        Phase::Stopped => {}
        _ => boot(shared, vmid),
    }
}

/// After a restore, a cluster whose etcd was bootstrapped still serves its API: tell
/// the other simulators, as the original bootstrap did.
fn announce_bootstrapped(shared: &Arc<Shared>) {
    let nodes = lock(&shared.nodes);
    let member = nodes
        .values()
        .filter(|n| n.state.phase == Phase::Running && n.state.etcd_member)
        .min_by_key(|n| n.state.vm.vmid);
    if let Some(n) = member {
        let event = LabEvent::EtcdBootstrapped {
            node: n.hostname(),
            endpoint: n.management().unwrap_or(Ipv4Addr::LOCALHOST),
        };
        drop(nodes);
        shared.fabric.emit(event);
    }
}

fn set_phase(n: &mut Node, p: Phase) -> u64 {
    n.state.phase = p;
    n.generation += 1;
    n.generation
}

/// Run `f` on the node after `delay`, unless its phase changed meanwhile.
fn after(
    shared: &Arc<Shared>,
    vmid: u32,
    generation: u64,
    delay: Duration,
    f: fn(&Arc<Shared>, u32),
) {
    let weak = Arc::downgrade(shared);
    tokio::spawn(async move {
        tokio::time::sleep(delay).await;
        let Some(s) = weak.upgrade() else { return };
        let current = lock(&s.nodes).get(&vmid).map(|n| n.generation);
        if current == Some(generation) {
            f(&s, vmid);
        }
    });
}

/// `text` becomes the running config. Returns what the kubelet reports when its
/// image changed: image fields apply at once (talos-day2.md §3.2), a new kubelet
/// image restarts the kubelet, which reports its new version to the API server.
fn run_config(
    n: &mut Node,
    text: String,
    sha256: String,
    parsed: MachineConfig,
) -> Option<LabNodeInfo> {
    let restart = n
        .parsed
        .as_ref()
        .is_some_and(|old| old.kubelet_version() != parsed.kubelet_version())
        .then(|| node_info(n, &parsed));
    n.state.config = Some(text);
    n.state.config_sha256 = Some(sha256);
    n.parsed = Some(parsed);
    configure_links(n);
    restart
}

/// At boot: the stored config (it validated when it was applied).
fn load_stored(shared: &Shared, n: &mut Node, text: String) {
    let release = running_version(shared, n);
    match machine::parse_on(&text, &n.state.vm.nics, &release) {
        Ok(parsed) => {
            let sha = hex::encode(ring::digest::digest(&ring::digest::SHA256, text.as_bytes()));
            run_config(n, text, sha, parsed);
        }
        Err(e) => {
            tracing::warn!(vmid = n.state.vm.vmid, error = %e, "lab talos: the stored config does not load; the old one runs");
        }
    }
}

/// TRY mode: the stored config comes back after `timeout` unless a later apply
/// (or a reboot) came first.
fn rollback_after(shared: &Arc<Shared>, vmid: u32, serial: u64, timeout: Duration) {
    let weak = Arc::downgrade(shared);
    tokio::spawn(async move {
        tokio::time::sleep(timeout).await;
        let Some(s) = weak.upgrade() else { return };
        let mut nodes = lock(&s.nodes);
        let Some(n) = nodes.get_mut(&vmid) else {
            return;
        };
        if n.state.try_serial != serial {
            return;
        }
        if let Some(text) = n.state.try_rollback.take() {
            load_stored(&s, n, text);
            map(&s, n);
        }
    });
}

/// Give each NIC the static addresses the running config assigns to its MAC.
fn configure_links(n: &mut Node) {
    let Some(cfg) = &n.parsed else { return };
    for nic in &mut n.state.vm.nics {
        let mac = nic.mac.to_ascii_lowercase();
        if let Some((_, net)) = cfg.link_addresses.iter().find(|(m, _)| *m == mac) {
            nic.address = Some(*net);
        }
    }
}

/// The nocloud platform at first boot (talos v1.13.9 `platform/nocloud/metadata.go`
/// `configFromCD`): the first CD-ROM volume labelled `cidata`/`CIDATA` whose
/// `user-data` is a machine config (a `#cloud-config` one is no config source).
fn cidata_config(vm: &LabVm) -> Option<String> {
    vm.media
        .iter()
        .filter_map(|b64| {
            base64::Engine::decode(&base64::engine::general_purpose::STANDARD, b64).ok()
        })
        .filter_map(|img| nocloud::read(&img).ok())
        .filter(|v| v.label == "cidata" || v.label == "CIDATA")
        .find_map(|v| v.files.get("user-data").cloned())
        .filter(|u| !u.starts_with(b"#cloud-config"))
        .and_then(|u| String::from_utf8(u).ok())
}

/// Take a config read from `cidata`, as the node would: validate, configure its
/// links, install. An invalid one leaves the node in maintenance mode.
fn take_cidata(shared: &Arc<Shared>, vmid: u32, text: String) {
    {
        let mut nodes = lock(&shared.nodes);
        let Some(n) = nodes.get_mut(&vmid) else {
            return;
        };
        match machine::parse(&text, &n.state.vm.nics) {
            Ok(parsed) => {
                n.state.config_sha256 = Some(hex::encode(ring::digest::digest(
                    &ring::digest::SHA256,
                    text.as_bytes(),
                )));
                n.state.config = Some(text);
                n.parsed = Some(parsed);
                // Installed configs win on every later boot (acquire.go `stateDisk`).
                n.state.vm.media.clear();
                configure_links(n);
                map(shared, n);
            }
            Err(e) => {
                tracing::warn!(vmid, error = %e, "lab talos: the cidata machine config does not validate; staying in maintenance mode");
                set_phase(n, Phase::Maintenance);
                return;
            }
        }
    }
    lock(&shared.counters).cidata_configs += 1;
    install(shared, vmid);
}

/// Power-on: an installed config runs from disk; else the `cidata` volume's
/// config is installed; else maintenance mode.
fn boot(shared: &Arc<Shared>, vmid: u32) {
    let generation = {
        let mut nodes = lock(&shared.nodes);
        let Some(n) = nodes.get_mut(&vmid) else {
            return;
        };
        // etcd stops with the machine; a member starts it again `etcd_ready` after
        // it runs (talos v1.13.9 `internal/app/machined/pkg/system/services/etcd.go`).
        n.state.etcd_ready = false;
        set_phase(n, Phase::Booting)
    };
    after(shared, vmid, generation, shared.cfg.boot, |s, vmid| {
        let (installed, cidata) = match lock(&s.nodes).get_mut(&vmid) {
            Some(n) => {
                n.state.boots += 1;
                let hostname = n.hostname();
                let mut f = lock(&s.faults_left);
                n.state.kubelet_stuck = take(&mut f.kubelet_stays_down, &hostname);
                n.state.etcd_stuck = take(&mut f.etcd_stays_down, &hostname);
                drop(f);
                n.state.apply_rebooting = false;
                // The bootloader boots what an upgrade wrote (docs `upgrading-talos.mdx`).
                if let Some(v) = n.state.staged_version.take() {
                    n.state.talos_version = Some(v);
                }
                // The stored config runs: a staged one, or the one a TRY replaced.
                if let Some(text) = n.state.staged_config.take().or(n.state.try_rollback.take()) {
                    load_stored(s, n, text);
                }
                (n.state.config.is_some(), cidata_config(&n.state.vm))
            }
            None => return,
        };
        if installed {
            enter_running(s, vmid);
        } else if let Some(text) = cidata {
            take_cidata(s, vmid, text);
        } else if let Some(n) = lock(&s.nodes).get_mut(&vmid) {
            set_phase(n, Phase::Maintenance);
        }
    });
}

/// A config was accepted in maintenance mode: install, maybe reboot-loop, then run.
fn install(shared: &Arc<Shared>, vmid: u32) {
    let generation = {
        let mut nodes = lock(&shared.nodes);
        let Some(n) = nodes.get_mut(&vmid) else {
            return;
        };
        // The ISO's release is what gets installed.
        n.state.talos_version = Some(running_version(shared, n));
        n.state.fresh_install = true;
        set_phase(n, Phase::Installing)
    };
    let delay = shared.cfg.install + lock(&shared.faults_left).slow_install;
    after(shared, vmid, generation, delay, |s, vmid| {
        let loops = lock(&s.faults_left).reboot_loops;
        let again = {
            let mut nodes = lock(&s.nodes);
            let Some(n) = nodes.get_mut(&vmid) else {
                return;
            };
            if n.state.reboot_loops_done < loops {
                n.state.reboot_loops_done += 1;
                true
            } else {
                false
            }
        };
        if again {
            install(s, vmid);
        } else {
            enter_running(s, vmid);
        }
    });
}

fn enter_running(shared: &Arc<Shared>, vmid: u32) {
    let generation = {
        let mut all = lock(&shared.nodes);
        // A worker's config has no OS CA key: like trustd, borrow a control plane's.
        let ca_key_elsewhere = |crt: &str| {
            all.values()
                .filter_map(|o| o.parsed.as_ref())
                .find(|c| c.os_ca_crt == crt && !c.os_ca_key.is_empty())
                .map(|c| c.os_ca_key.clone())
        };
        let Some(cfg) = all.get(&vmid).and_then(|n| n.parsed.clone()) else {
            return;
        };
        let key = if cfg.os_ca_key.is_empty() {
            ca_key_elsewhere(&cfg.os_ca_crt)
        } else {
            Some(cfg.os_ca_key.clone())
        };
        let Some(n) = all.get_mut(&vmid) else { return };
        let hostname = n.hostname();
        let tls = key
            .ok_or_else(|| {
                "no OS CA key to sign the apid certificate (trustd unavailable)".to_owned()
            })
            .and_then(|key| {
                certs::apid(
                    &cfg.os_ca_crt,
                    &key,
                    &hostname,
                    // SANs as apid makes them: certSANs, every address, the hostname.
                    &names(
                        &n.state.vm,
                        &[cfg.cert_sans.clone(), vec![hostname.clone()]].concat(),
                    ),
                )
            })
            .and_then(|id| server::mutual_tls(id, &cfg.os_ca_crt));
        match tls {
            Ok(t) => n.mutual_tls = Some(t),
            Err(e) => {
                tracing::error!(vmid, error = %e, "lab talos: node cannot serve mTLS");
                return;
            }
        }
        let generation = set_phase(n, Phase::Running);
        // Announced before the lock goes: no client sees Running while the other
        // simulators (guest agent, kubelet) could still miss the event.
        shared
            .fabric
            .emit(LabEvent::NodeRunning(node_info(n, &cfg)));
        generation
    };
    after(
        shared,
        vmid,
        generation,
        shared.cfg.etcd_ready,
        |s, vmid| {
            let generation = {
                let mut nodes = lock(&s.nodes);
                let Some(n) = nodes.get_mut(&vmid) else {
                    return;
                };
                if n.state.etcd_stuck {
                    return;
                }
                n.state.etcd_ready = true;
                n.generation
            };
            try_join(s, vmid, generation);
        },
    );
}

/// Remove `hostname` from a fault's list: did the fault fire?
fn take(list: &mut Vec<String>, hostname: &str) -> bool {
    let i = list.iter().position(|n| n == hostname);
    i.map(|i| list.remove(i)).is_some()
}

/// `/proc/sys/kernel/random/boot_id` of the node's `boots`-th boot: what `Read`
/// serves and what its kubelet reports as `Node.status.nodeInfo.bootID`.
pub(super) fn boot_id(vmid: u32, boots: u64) -> String {
    format!("0000{vmid:04x}-1ab0-4000-8000-{boots:012x}")
}

/// The release a node runs: what it installed, or (older saved states) the configured one.
fn running_version(shared: &Shared, n: &Node) -> String {
    n.state
        .talos_version
        .clone()
        .unwrap_or_else(|| shared.cfg.talos_version.clone())
}

/// What the Kubernetes side learns when the node (or its kubelet) starts.
fn node_info(n: &Node, cfg: &MachineConfig) -> LabNodeInfo {
    LabNodeInfo {
        vmid: n.state.vm.vmid,
        hostname: n.hostname(),
        machine_type: cfg.machine_type.clone(),
        cluster_name: cfg.cluster_name.clone(),
        management: n.management().unwrap_or(Ipv4Addr::LOCALHOST),
        internal_ip: n.internal_ip(cfg),
        endpoint: cfg.endpoint.clone(),
        kubernetes_ca_crt: cfg.k8s_ca_crt.clone(),
        kubernetes_ca_key: cfg.k8s_ca_key.clone(),
        kubelet_version: cfg.kubelet_version(),
        boot_id: boot_id(n.state.vm.vmid, n.state.boots),
        kubelet_stuck: n.state.kubelet_stuck,
    }
}

/// A control plane whose etcd is ready joins once the cluster is bootstrapped, a
/// member's etcd is reachable, and no stale member holds its name.
///
/// The lab has no discovery service (nothing beyond the datacenter is reachable), so
/// a joiner finds etcd only through the API server endpoints, which are the
/// members' kubelet node IPs (Talos v1.13.9 `internal/pkg/etcd/endpoints.go`
/// `GetEndpoints`; the API server advertises `$(POD_IP)`,
/// `internal/app/machined/pkg/controllers/k8s/control_plane.go`). A member whose etcd
/// listens only on another subnet is never reached: the join retries forever.
fn try_join(shared: &Arc<Shared>, vmid: u32, generation: u64) {
    after(shared, vmid, generation, shared.cfg.join, |s, vmid| {
        let mut nodes = lock(&s.nodes);
        let reachable = nodes.values().any(Node::serves_etcd_at_endpoint);
        let Some(n) = nodes.get_mut(&vmid) else {
            return;
        };
        if n.state.etcd_member || !n.is_control_plane() {
            return;
        }
        let mut members = lock(&s.members);
        let hostname = n.hostname();
        let stale = members.iter().any(|m| m.hostname == hostname);
        // A freshly installed node (a re-created VM) replaces the member of its name
        // (talos v1.13.9 `internal/app/machined/pkg/system/services/etcd.go`
        // L286-325). A node whose etcd data went bad while its member stays listed
        // is the lab's model of a corrupt etcd: it waits until that member is removed.
        if reachable && !members.is_empty() && (!stale || n.state.fresh_install) {
            members.retain(|m| m.hostname != hostname);
            add_member(&mut members, n);
        } else {
            let g = n.generation;
            drop(members);
            drop(nodes);
            try_join(s, vmid, g);
        }
    });
}

/// Record `n` as a running member with a fresh, distinct, non-zero id.
fn add_member(members: &mut Vec<Member>, n: &mut Node) {
    let id = members.iter().map(|m| m.id).max().unwrap_or(0).max(0x1000) + 0x1111;
    members.push(Member {
        id,
        hostname: n.hostname(),
        address: n.management().map(|a| a.to_string()).unwrap_or_default(),
    });
    n.state.etcd_member = true;
    n.state.fresh_install = false;
    n.state.member_id = id;
}

/// `../shared/reference/data/talos/golden/<name>`, or `None` (skip) outside CI.
#[cfg(test)]
fn golden(name: &str) -> Option<String> {
    crate::test_support::reference(&format!("data/talos/golden/{name}"))
}
