//! The lab's Proxmox VE: a simulated PVE API over real HTTPS on 127.0.0.1,
//! exercised by the real client.
//!
//! It behaves like PVE where talos-pve depends on it: token/ticket auth, schema
//! validation (`schema`), synchronous duplicate-VMID errors, asynchronous tasks
//! with UPIDs, per-VM locks, per-node `local` storage, `download-url` refusing to
//! overwrite, normalised config read-back, power rules, injectable faults and
//! latency. Its whole datacenter (`LabPveState`) is serde-serializable so `--lab`
//! commands can persist it. The same listener serves a fake Image Factory.

mod api;
pub mod schema;
mod server;

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::Fabric;
use crate::profile::Proxmox;

pub use api::RecordedRequest;
pub(crate) use api::free_volumes;

/// Timing and faults of the simulated API.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct LabProxmoxConfig {
    /// Added to every API request.
    pub request_latency_ms: u64,
    /// How long a task runs, by task type (`qmcreate`, `qmstart`, `download`, …).
    pub task_ms: BTreeMap<String, u64>,
    /// Task duration for types not in `task_ms`.
    pub default_task_ms: u64,
    /// Privileges of the token on `/`, propagated; `None` = all. Ignored when
    /// `acls` is not empty.
    pub token_privileges: Option<Vec<String>>,
    /// The token's ACLs, evaluated as PVE does (`api::access::effective_privileges`).
    pub acls: Vec<LabAcl>,
    /// Password accepted for ticket login as the token's user (`None` = ticket login refused).
    pub password: Option<String>,
    pub faults: Vec<Fault>,
}

/// One ACL entry of the token (`pveum acl modify PATH --tokens … --roles …`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LabAcl {
    pub path: String,
    pub privileges: Vec<String>,
    pub propagate: bool,
}

/// One injected failure: applies to requests whose method matches and whose API
/// path contains `path_contains`, after `skip` matches, `times` times.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Fault {
    pub method: Option<String>,
    pub path_contains: String,
    #[serde(default)]
    pub skip: u32,
    pub times: u32,
    pub effect: FaultEffect,
    /// Matches seen so far.
    #[serde(default)]
    pub seen: u32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum FaultEffect {
    /// Answer with this status and message (e.g. 500, 595).
    Status { code: u16, message: String },
    /// The per-VM lock could not be taken in time.
    LockTimeout,
    /// `got no worker upid - start worker failed`.
    NoWorker,
    /// The request succeeds but its task ends with `TASK ERROR: <message>`.
    TaskError { message: String },
    /// The VM fails to start: a create with `start=1` ends OK and its separate
    /// `qmstart` task fails; an explicit start's task fails.
    StartError { message: String },
}

impl Fault {
    pub fn new(method: &str, path_contains: &str, times: u32, effect: FaultEffect) -> Fault {
        Fault {
            method: Some(method.into()),
            path_contains: path_contains.into(),
            skip: 0,
            times,
            effect,
            seen: 0,
        }
    }

    pub fn after(mut self, skip: u32) -> Fault {
        self.skip = skip;
        self
    }
}

/// A storage of one node.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LabStorage {
    pub id: String,
    /// `dir`, `lvmthin`, …
    pub kind: String,
    pub content: Vec<String>,
    pub shared: bool,
    pub total: u64,
    /// Volume id → size in bytes.
    pub volumes: BTreeMap<String, u64>,
    /// Contents of uploaded volumes (volume id → base64), so a VM that boots
    /// with one attached reads what was uploaded.
    #[serde(default)]
    pub files: BTreeMap<String, String>,
}

/// A network interface of one node (`/nodes/{node}/network`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LabIface {
    pub iface: String,
    pub kind: String,
    pub vlan_aware: bool,
    pub vids: Option<String>,
    pub ports: Option<String>,
    pub slaves: Option<String>,
    pub mtu: Option<u32>,
    pub cidr: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LabNode {
    pub name: String,
    pub online: bool,
    pub storages: Vec<LabStorage>,
    pub network: Vec<LabIface>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LabVmState {
    pub vmid: u32,
    pub node: String,
    /// The config as PVE would return it (normalised), without `digest`.
    pub config: BTreeMap<String, String>,
    pub running: bool,
    /// The guest's addresses (management, kubelet) once Talos runs from disk:
    /// only then does a qemu-guest-agent (a Talos system extension) answer. Real
    /// Talos in maintenance mode runs no agent (siderolabs/talos#11651).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub guest: Option<(std::net::Ipv4Addr, std::net::Ipv4Addr)>,
    /// The `[pending]` section: changes the running VM could not take (`None`: a
    /// pending delete), applied when the VM is started or stopped by Proxmox.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub pending: BTreeMap<String, Option<String>>,
    /// Running but paused (`qm suspend` without a state file): its QEMU process
    /// exists, the guest does not run.
    #[serde(default)]
    pub paused: bool,
}

impl LabVmState {
    /// The `[pending]` section moves into the config (qemu-server `QemuServer.pm`
    /// `vmconfig_apply_pending`, called by `vm_start` and by a host-side stop).
    pub fn apply_pending(&mut self) {
        for (k, v) in std::mem::take(&mut self.pending) {
            match v {
                Some(v) => self.config.insert(k, v),
                None => self.config.remove(&k),
            };
        }
    }
}

/// A container of one node.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LabContainer {
    pub node: String,
    pub hostname: String,
    pub running: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum TaskEffect {
    /// While it runs the VM's config holds only `lock: create`; `config` is
    /// written when it ends (qemu-server 9.2.6 `API2/Qemu.pm` 1374, 1477-1558).
    Create {
        vmid: u32,
        start: bool,
        #[serde(default)]
        config: BTreeMap<String, String>,
        /// How the `qmstart` task forked by `start=1` ends (`None` = OK).
        #[serde(default)]
        start_error: Option<String>,
    },
    Start {
        vmid: u32,
    },
    Stop {
        vmid: u32,
    },
    /// `qmreboot`: stop, then start (pending changes apply).
    Reboot {
        vmid: u32,
    },
    Destroy {
        vmid: u32,
    },
    Download {
        storage: String,
        volid: String,
    },
    /// Stored on `node`'s `storage` (the task itself runs on the node that received
    /// the upload); `bytes`: base64 of the file.
    Upload {
        node: String,
        storage: String,
        volid: String,
        bytes: String,
    },
    DeleteVolume {
        storage: String,
        volid: String,
    },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LabTask {
    pub upid: String,
    pub node: String,
    pub kind: String,
    pub id: String,
    pub user: String,
    /// Lab-clock milliseconds at which it stops.
    pub done_at_ms: u64,
    pub effect: TaskEffect,
    /// Set when injected or decided at dispatch; otherwise decided when it stops.
    pub forced_error: Option<String>,
    /// `None` while running.
    pub exitstatus: Option<String>,
    pub log: Vec<String>,
}

/// The simulated datacenter, persisted between `--lab` commands. It holds the
/// lab's token secret and TLS key: persist it with `files::write_atomic` (0600).
#[derive(Clone, Serialize, Deserialize)]
pub struct LabPveState {
    /// The profile's `proxmox.endpoint` address.
    pub endpoint: SocketAddr,
    pub token_id: String,
    pub token_secret: String,
    /// The CA that signed `cert_pem` (`/etc/pve/pve-root-ca.pem`); empty in a
    /// state saved before the lab had one (its certificate is self-signed).
    #[serde(default)]
    pub ca_pem: String,
    pub cert_pem: String,
    pub key_pem: String,
    pub nodes: BTreeMap<String, LabNode>,
    pub vms: BTreeMap<u32, LabVmState>,
    /// Containers (LXC): only the VMIDs they hold matter to talos-pve.
    #[serde(default)]
    pub containers: BTreeMap<u32, LabContainer>,
    pub tasks: Vec<LabTask>,
    pub next_pid: u32,
    /// Schematic ids the fake Image Factory has seen.
    pub schematics: BTreeSet<String>,
    pub clock_ms: u64,
    /// A standalone host (not joined to a cluster): `/cluster/status` says so.
    #[serde(default)]
    pub standalone: bool,
}

/// Without the token secret and the TLS key.
impl std::fmt::Debug for LabPveState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LabPveState")
            .field("endpoint", &self.endpoint)
            .field("token_id", &self.token_id)
            .field("nodes", &self.nodes)
            .field("vms", &self.vms.keys().collect::<Vec<_>>())
            .field("tasks", &self.tasks.len())
            .finish_non_exhaustive()
    }
}

/// A running lab Proxmox.
pub struct LabProxmoxHandle {
    /// The virtual endpoint (`10.8.16.10:8006`), mapped in the fabric's address book.
    pub endpoint: SocketAddr,
    /// The loopback listener.
    pub listen: SocketAddr,
    /// SHA-256 of the server certificate, `AA:BB:…`.
    pub fingerprint: String,
    pub token_id: String,
    token_secret: secrecy::SecretString,
    lab: Arc<api::Lab>,
    server: tokio::task::JoinHandle<()>,
    fabric: Fabric,
}

impl std::fmt::Debug for LabProxmoxHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LabProxmoxHandle")
            .field("endpoint", &self.endpoint)
            .field("listen", &self.listen)
            .field("token_id", &self.token_id)
            .finish_non_exhaustive()
    }
}

pub struct LabProxmox;

impl LabProxmox {
    /// A fresh datacenter with one PVE node per profile host, served on 127.0.0.1:0.
    pub async fn start(
        fabric: &Fabric,
        config: LabProxmoxConfig,
        proxmox: &Proxmox,
    ) -> anyhow::Result<LabProxmoxHandle> {
        let state = api::initial_state(proxmox)?;
        Self::from_state(fabric, config, state).await
    }

    /// Standalone hosts: one PVE per profile host that has an `endpoint`, each
    /// with its own token, CA, VMID space and listener (proxmox-semantics §6).
    pub async fn start_standalone(
        fabric: &Fabric,
        config: LabProxmoxConfig,
        proxmox: &Proxmox,
    ) -> anyhow::Result<Vec<LabProxmoxHandle>> {
        let mut out = Vec::new();
        for h in &proxmox.hosts {
            let Some(endpoint) = &h.endpoint else {
                anyhow::bail!("lab: standalone host {} has no endpoint", h.name);
            };
            let one = Proxmox {
                endpoint: endpoint.clone(),
                hosts: vec![h.clone()],
                ..proxmox.clone()
            };
            let mut state = api::initial_state(&one)?;
            state.standalone = true;
            out.push(Self::from_state(fabric, config.clone(), state).await?);
        }
        Ok(out)
    }

    /// Resume a persisted datacenter.
    pub async fn from_state(
        fabric: &Fabric,
        config: LabProxmoxConfig,
        state: LabPveState,
    ) -> anyhow::Result<LabProxmoxHandle> {
        crate::tls::install_provider();
        let endpoint = state.endpoint;
        let token_id = state.token_id.clone();
        let token_secret = secrecy::SecretString::from(state.token_secret.clone());
        let (listen, fingerprint, lab, server) =
            server::serve(fabric.clone(), config, state).await?;
        fabric.addresses.map(endpoint, listen);
        Ok(LabProxmoxHandle {
            endpoint,
            listen,
            fingerprint,
            token_id,
            token_secret,
            lab,
            server,
            fabric: fabric.clone(),
        })
    }
}

impl LabProxmoxHandle {
    /// `USER@REALM!TOKENID=SECRET`, as PROXMOX_VE_API_TOKEN holds it.
    pub fn api_token(&self) -> secrecy::SecretString {
        use secrecy::ExposeSecret;
        secrecy::SecretString::from(format!(
            "{}={}",
            self.token_id,
            self.token_secret.expose_secret()
        ))
    }

    /// The CA PEM that signed the API certificate (`pve-root-ca.pem`).
    pub fn ca_pem(&self) -> String {
        self.lab.state().ca_pem
    }

    /// The endpoint as the profile writes it.
    pub fn endpoint_url(&self) -> String {
        format!("https://{}", self.endpoint)
    }

    /// Base URL of the fake Image Factory (same listener, loopback).
    pub fn factory_url(&self) -> String {
        format!("https://{}", self.listen)
    }

    pub fn state(&self) -> LabPveState {
        self.lab.state()
    }

    /// A handle that reads the state from any task (the lab's periodic saver).
    pub fn state_reader(&self) -> impl Fn() -> LabPveState + Send + Sync + 'static {
        let lab = self.lab.clone();
        move || lab.state()
    }

    /// The VMs powered on now, as they booted (to bring up their guests after a restore).
    pub fn running_vms(&self) -> Vec<super::LabVm> {
        let st = self.lab.state();
        st.vms
            .values()
            .filter(|vm| vm.running)
            .map(|vm| api::lab_vm(&st, vm))
            .collect()
    }

    /// Every API request served so far (factory requests excluded).
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.lab.requests()
    }

    pub fn factory_requests(&self) -> Vec<RecordedRequest> {
        self.lab.factory_requests()
    }

    pub fn clear_requests(&self) {
        self.lab.clear_requests();
    }

    pub fn set_faults(&self, faults: Vec<Fault>) {
        self.lab.set_faults(faults);
    }

    pub fn set_config(&self, f: impl FnOnce(&mut LabProxmoxConfig)) {
        self.lab.with_config(f);
    }

    /// Change the datacenter directly (fill a storage, take a host offline, …).
    pub fn edit_state(&self, f: impl FnOnce(&mut LabPveState)) {
        self.lab.edit_state(f);
    }

    /// Put a VM on a node directly (a VM someone else made).
    pub fn insert_vm(
        &self,
        node: &str,
        vmid: u32,
        config: BTreeMap<String, String>,
        running: bool,
    ) {
        self.lab.insert_vm(LabVmState {
            guest: None,
            paused: false,
            vmid,
            node: node.into(),
            config,
            running,
            pending: BTreeMap::new(),
        });
    }

    /// Let running tasks finish (events fire) — waits up to `max`.
    pub async fn settle(&self, max: Duration) {
        let end = tokio::time::Instant::now() + max;
        while self.lab.has_running_tasks() && tokio::time::Instant::now() < end {
            tokio::time::sleep(Duration::from_millis(10)).await;
            self.lab.settle();
        }
    }

    pub fn shutdown(self) {
        self.fabric.addresses.unmap(self.endpoint);
        self.server.abort();
    }
}
