//! Request handling of the lab PVE: authentication, routing, validation and the
//! state changes each endpoint makes. Transport-free: `server` feeds it.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::schema::{self, Param};
use super::{
    Fault, FaultEffect, LabAcl, LabIface, LabNode, LabProxmoxConfig, LabPveState, LabStorage,
    LabTask, LabVmState, TaskEffect,
};
use crate::lab::{Fabric, LabEvent, LabNic, LabVm};
use crate::profile::Proxmox;
use crate::proxmox::propstr::{NetDevice, PropString, split_tags};
use crate::proxmox::upid::Upid;

/// One request as the lab saw it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RecordedRequest {
    pub method: String,
    /// API path below `/api2/json` (decoded), e.g. `/nodes/pve-ms01-01/qemu`.
    pub path: String,
    /// Query and form parameters, decoded.
    pub params: Vec<(String, String)>,
    pub status: u16,
}

pub struct Request {
    pub method: String,
    pub path: String,
    pub params: Vec<(String, String)>,
    pub authorization: Option<String>,
    pub cookie: Option<String>,
    pub csrf: Option<String>,
    /// The body was `multipart/form-data` (only `upload` takes one).
    pub multipart: bool,
    /// The file part of a multipart body: `(file name, bytes)`.
    pub upload: Option<(String, Vec<u8>)>,
    pub body: Vec<u8>,
}

pub struct Reply {
    pub status: u16,
    pub reason: Option<String>,
    /// `Null` = an empty body.
    pub body: Value,
}

impl Reply {
    fn data(v: Value) -> Reply {
        Reply {
            status: 200,
            reason: None,
            body: json!({ "data": v }),
        }
    }
    /// PVE's error envelope; proxy errors (595+) come with the reason phrase only.
    fn err(status: u16, msg: impl Into<String>) -> Reply {
        let msg = msg.into();
        let body = if status >= 595 {
            Value::Null
        } else {
            json!({ "data": null, "message": format!("{msg}\n") })
        };
        Reply {
            status,
            reason: Some(msg),
            body,
        }
    }
    fn params(errors: BTreeMap<String, String>) -> Reply {
        Reply {
            status: 400,
            reason: Some("Parameter verification failed.".into()),
            body: json!({ "data": null, "message": "Parameter verification failed.\n", "errors": errors }),
        }
    }
}

pub struct Lab {
    state: Mutex<LabPveState>,
    config: Mutex<LabProxmoxConfig>,
    requests: Mutex<Vec<RecordedRequest>>,
    factory: Mutex<Vec<RecordedRequest>>,
    /// Ticket → CSRF token.
    tickets: Mutex<BTreeMap<String, String>>,
    fabric: Fabric,
    started: Instant,
    clock_base: u64,
    pub(super) listen: Mutex<Option<std::net::SocketAddr>>,
}

fn lock_msg(vmid: u32) -> String {
    format!("can't lock file '/var/lock/qemu-server/lock-{vmid}.conf' - got timeout")
}

/// A fresh datacenter: one online node per host, `local` + `local-lvm`, a VLAN-aware `vmbr0`.
pub fn initial_state(px: &Proxmox) -> anyhow::Result<LabPveState> {
    // The virtual address the profile names; a bare host means PVE's port 8006.
    let endpoint = px
        .endpoint
        .trim_end_matches('/')
        .strip_prefix("https://")
        .and_then(|rest| rest.split('/').next())
        .and_then(|authority| {
            authority
                .parse()
                .or_else(|_| format!("{authority}:8006").parse())
                .ok()
        })
        .ok_or_else(|| {
            anyhow::anyhow!(
                "lab: proxmox.endpoint `{}` must be https://<IPv4>[:port]",
                px.endpoint
            )
        })?;
    let cert =
        rcgen::generate_simple_self_signed(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])?;
    let nodes = px
        .hosts
        .iter()
        .map(|h| {
            let mut network = vec![
                LabIface {
                    iface: h.uplink.clone().unwrap_or_else(|| "eno1".into()),
                    kind: "eth".into(),
                    vlan_aware: false,
                    vids: None,
                    ports: None,
                    slaves: None,
                    mtu: Some(1500),
                    cidr: None,
                },
                LabIface {
                    iface: px.bridge.clone(),
                    kind: "bridge".into(),
                    vlan_aware: true,
                    vids: Some("2-4094".into()),
                    ports: Some(h.uplink.clone().unwrap_or_else(|| "eno1".into())),
                    slaves: None,
                    mtu: Some(1500),
                    cidr: Some(format!("{}/24", h.address)),
                },
            ];
            if let Some(s) = &h.storage {
                network.push(LabIface {
                    iface: s.interface.clone(),
                    kind: "bond".into(),
                    vlan_aware: false,
                    vids: None,
                    ports: None,
                    slaves: Some(s.members.join(" ")),
                    mtu: s.mtu,
                    cidr: Some(format!("{}/24", s.address)),
                });
            }
            let storage = |id: &str, kind: &str, content: &[&str], total: u64| LabStorage {
                id: id.into(),
                kind: kind.into(),
                content: content.iter().map(|s| s.to_string()).collect(),
                shared: false,
                total,
                volumes: BTreeMap::new(),
                files: BTreeMap::new(),
            };
            let node = LabNode {
                name: h.name.clone(),
                online: true,
                storages: vec![
                    storage(
                        &px.iso_storage,
                        "dir",
                        &["iso", "vztmpl", "backup"],
                        100 << 30,
                    ),
                    storage(&px.disk_storage, "lvmthin", &["images", "rootdir"], 1 << 40),
                ],
                network,
            };
            (h.name.clone(), node)
        })
        .collect();
    Ok(LabPveState {
        endpoint,
        token_id: px.token_id.clone(),
        token_secret: random_hex(16),
        cert_pem: cert.cert.pem(),
        key_pem: cert.signing_key.serialize_pem(),
        nodes,
        vms: BTreeMap::new(),
        containers: BTreeMap::new(),
        tasks: Vec::new(),
        next_pid: 0x1000,
        schematics: Default::default(),
        clock_ms: 0,
    })
}

/// The privileges `acls` give on `path`, as PVE evaluates them
/// (pve-access-control `AccessControl.pm` 1788-1895; proxmox-semantics §4.1):
/// walking from `/` down to `path`, the ACLs of a level replace what was collected
/// above; an ACL counts on an intermediate level only with `propagate`, on `path`
/// itself always. Value: the granting ACL's propagate flag.
pub fn effective_privileges(acls: &[LabAcl], path: &str) -> BTreeMap<String, u8> {
    let mut levels = vec!["/".to_owned()];
    let mut cur = String::new();
    for seg in path.split('/').filter(|s| !s.is_empty()) {
        cur.push('/');
        cur.push_str(seg);
        levels.push(cur.clone());
    }
    let mut got = BTreeMap::new();
    let last = levels.len() - 1;
    for (i, level) in levels.iter().enumerate() {
        let here: Vec<&LabAcl> = acls
            .iter()
            .filter(|a| a.path == *level)
            .filter(|a| i == last || a.propagate)
            .collect();
        if !here.is_empty() {
            got.clear();
            for a in here {
                for p in &a.privileges {
                    got.insert(p.clone(), u8::from(a.propagate));
                }
            }
        }
    }
    got
}

/// A VM whose create runs (or was killed): its config is only the lock.
fn create_stub(node: &str, vmid: u32) -> LabVmState {
    LabVmState {
        guest: None,
        vmid,
        node: node.into(),
        config: [("lock".to_owned(), "create".to_owned())].into(),
        running: false,
    }
}

/// PVE's answer for a VMID that has no VM on `node`.
fn no_such_vm(node: &str, vmid: impl std::fmt::Display) -> Reply {
    Reply::err(
        500,
        format!("Configuration file 'nodes/{node}/qemu-server/{vmid}.conf' does not exist"),
    )
}

/// The VM `vmid` on `node`, or PVE's answer for a missing VMID (400) or VM (500).
fn vm_on<'s>(
    st: &'s LabPveState,
    node: &str,
    vmid: Option<u32>,
) -> Result<(u32, &'s LabVmState), Reply> {
    let Some(vmid) = vmid else {
        return Err(Reply::err(400, "bad vmid"));
    };
    match st.vms.get(&vmid).filter(|vm| vm.node == node) {
        Some(vm) => Ok((vmid, vm)),
        None => Err(no_such_vm(node, vmid)),
    }
}

fn random_hex(bytes: usize) -> String {
    let mut b = vec![0u8; bytes];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut b).expect("system RNG");
    hex::encode(b)
}

/// All privileges a token may hold (what `None` grants).
const ALL_PRIVS: &[&str] = &[
    "VM.Allocate",
    "VM.Audit",
    "VM.PowerMgmt",
    "VM.Config.CDROM",
    "VM.Config.CPU",
    "VM.Config.Cloudinit",
    "VM.Config.Disk",
    "VM.Config.HWType",
    "VM.Config.Memory",
    "VM.Config.Network",
    "VM.Config.Options",
    "VM.GuestAgent.Audit",
    "Datastore.Allocate",
    "Datastore.AllocateSpace",
    "Datastore.AllocateTemplate",
    "Datastore.Audit",
    "SDN.Use",
    "Sys.Audit",
    "Sys.Modify",
    "Sys.AccessNetwork",
];

impl Lab {
    pub fn new(fabric: Fabric, config: LabProxmoxConfig, state: LabPveState) -> Lab {
        Lab {
            clock_base: state.clock_ms,
            state: Mutex::new(state),
            config: Mutex::new(config),
            requests: Mutex::default(),
            factory: Mutex::default(),
            tickets: Mutex::default(),
            fabric,
            started: Instant::now(),
            listen: Mutex::new(None),
        }
    }

    fn now_ms(&self) -> u64 {
        self.clock_base + self.started.elapsed().as_millis() as u64
    }

    pub fn state(self: &std::sync::Arc<Self>) -> LabPveState {
        self.settle();
        let mut s = self.state.lock().expect("lab state").clone();
        s.clock_ms = self.now_ms();
        s
    }

    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.requests.lock().expect("lab requests").clone()
    }
    pub fn factory_requests(&self) -> Vec<RecordedRequest> {
        self.factory.lock().expect("lab requests").clone()
    }
    pub fn clear_requests(&self) {
        self.requests.lock().expect("lab requests").clear();
        self.factory.lock().expect("lab requests").clear();
    }
    pub fn set_faults(&self, faults: Vec<Fault>) {
        self.config.lock().expect("lab config").faults = faults;
    }
    pub fn with_config(&self, f: impl FnOnce(&mut LabProxmoxConfig)) {
        f(&mut self.config.lock().expect("lab config"));
    }
    pub fn guest_running(&self, vmid: u32, mgmt: std::net::Ipv4Addr, kubelet: std::net::Ipv4Addr) {
        guest_running(
            &mut self.state.lock().expect("lab state"),
            vmid,
            mgmt,
            kubelet,
        );
    }
    pub fn edit_state(&self, f: impl FnOnce(&mut LabPveState)) {
        f(&mut self.state.lock().expect("lab state"));
    }
    pub fn insert_vm(&self, vm: LabVmState) {
        self.state
            .lock()
            .expect("lab state")
            .vms
            .insert(vm.vmid, vm);
    }
    pub fn has_running_tasks(&self) -> bool {
        self.state
            .lock()
            .expect("lab state")
            .tasks
            .iter()
            .any(|t| t.exitstatus.is_none())
    }

    /// Stop every task whose time has come and apply its effect.
    pub fn settle(self: &std::sync::Arc<Self>) {
        let now = self.now_ms();
        let mut events = Vec::new();
        let mut started = Vec::new();
        {
            let mut st = self.state.lock().expect("lab state");
            let due: Vec<usize> = st
                .tasks
                .iter()
                .enumerate()
                .filter(|(_, t)| t.exitstatus.is_none() && t.done_at_ms <= now)
                .map(|(i, _)| i)
                .collect();
            for i in due {
                let task = st.tasks[i].clone();
                let result = match &task.forced_error {
                    Some(e) => Err(e.clone()),
                    None => apply(&mut st, &task, &mut events),
                };
                if let (Err(_), TaskEffect::Create { vmid, .. }) = (&result, &task.effect) {
                    // A failed create leaves nothing behind, as in PVE.
                    if let Some(vm) = st.vms.remove(vmid) {
                        free_volumes(&mut st, &vm);
                    }
                }
                if let (
                    Ok(()),
                    TaskEffect::Create {
                        vmid,
                        start: true,
                        start_error,
                        ..
                    },
                ) = (&result, &task.effect)
                {
                    // Autostart forks its own `qmstart` task; `qmcreate` ends OK
                    // whatever the start does (qemu-server 9.2.6 `API2/Qemu.pm`
                    // 1568-1572, 3676; proxmox-semantics §1.1).
                    st.tasks[i].log.push("Execute autostart".into());
                    let id = vmid.to_string();
                    let effect = TaskEffect::Start { vmid: *vmid };
                    let (node, user) = (task.node.clone(), task.user.clone());
                    let err = start_error.clone();
                    self.new_task(&mut st, &node, "qmstart", &id, &user, effect, err);
                    started.push("qmstart");
                }
                let t = &mut st.tasks[i];
                // The uploaded bytes now live in the storage (or nowhere): a
                // finished task keeps no copy of them (they may hold CA keys).
                if let TaskEffect::Upload { bytes, .. } = &mut t.effect {
                    bytes.clear();
                }
                match result {
                    Ok(()) => {
                        t.log.push("TASK OK".into());
                        t.exitstatus = Some("OK".into());
                    }
                    Err(e) => {
                        t.log.push(format!("TASK ERROR: {e}"));
                        t.exitstatus = Some(e);
                    }
                }
            }
        }
        for e in events {
            self.fabric.emit(e);
        }
        for kind in started {
            self.spawn_settle(kind);
        }
    }

    fn vm_running_task(&self, st: &LabPveState, vmid: u32) -> bool {
        let id = vmid.to_string();
        st.tasks
            .iter()
            .any(|t| t.exitstatus.is_none() && t.id == id && t.kind.starts_with("qm"))
    }

    /// Count a fault match; the effect when this request is to fail.
    fn fault(&self, method: &str, path: &str) -> Option<FaultEffect> {
        let mut cfg = self.config.lock().expect("lab config");
        for f in cfg.faults.iter_mut() {
            if f.method.as_deref().is_some_and(|m| m != method) || !path.contains(&f.path_contains)
            {
                continue;
            }
            f.seen += 1;
            if f.seen > f.skip && f.seen <= f.skip + f.times {
                return Some(f.effect.clone());
            }
        }
        None
    }

    fn latency(&self, kind: &str) -> (Duration, u64) {
        let cfg = self.config.lock().expect("lab config");
        let task = cfg
            .task_ms
            .get(kind)
            .copied()
            .unwrap_or(cfg.default_task_ms);
        (Duration::from_millis(cfg.request_latency_ms), task)
    }

    pub async fn handle(self: &std::sync::Arc<Self>, req: Request) -> Reply {
        let (delay, _) = self.latency("");
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        self.settle();
        let factory = req.path == "/schematics" || req.path.starts_with("/image/");
        let reply = if factory {
            self.factory_call(&req)
        } else {
            self.api_call(&req)
        };
        let rec = RecordedRequest {
            method: req.method.clone(),
            path: req.path.clone(),
            params: req.params.clone(),
            status: reply.status,
        };
        if factory {
            self.factory.lock().expect("lab requests").push(rec);
        } else {
            self.requests.lock().expect("lab requests").push(rec);
        }
        reply
    }

    fn factory_call(&self, req: &Request) -> Reply {
        if req.method == "POST" && req.path == "/schematics" {
            let body = String::from_utf8_lossy(&req.body);
            if !body.starts_with("customization:") {
                return Reply::err(400, "invalid schematic: unknown fields or empty body");
            }
            let id = hex::encode(ring::digest::digest(&ring::digest::SHA256, body.as_bytes()));
            self.state
                .lock()
                .expect("lab state")
                .schematics
                .insert(id.clone());
            return Reply {
                status: 201,
                reason: None,
                body: json!({ "id": id }),
            };
        }
        Reply::err(404, "Not Found")
    }

    fn authenticate(&self, req: &Request) -> Result<String, Reply> {
        let st = self.state.lock().expect("lab state");
        if let Some(a) = &req.authorization
            && let Some(rest) = a.strip_prefix("PVEAPIToken=")
        {
            let (id, secret) = rest
                .split_once(['=', ' '])
                .ok_or_else(|| Reply::err(401, "authentication failure"))?;
            if id == st.token_id && secret == st.token_secret {
                return Ok(id.to_owned());
            }
            return Err(Reply::err(401, "authentication failure"));
        }
        let ticket = req.cookie.as_deref().and_then(|c| {
            c.split(';')
                .filter_map(|kv| kv.trim().strip_prefix("PVEAuthCookie="))
                .next()
        });
        if let Some(t) = ticket {
            let tickets = self.tickets.lock().expect("lab tickets");
            let csrf = tickets
                .get(t)
                .ok_or_else(|| Reply::err(401, "authentication failure"))?;
            if req.method != "GET" && req.csrf.as_deref() != Some(csrf.as_str()) {
                return Err(Reply::err(401, "Permission denied - invalid csrf token"));
            }
            let user = st.token_id.split('!').next().unwrap_or_default().to_owned();
            return Ok(user);
        }
        Err(Reply::err(401, "No ticket"))
    }

    fn api_call(self: &std::sync::Arc<Self>, req: &Request) -> Reply {
        let Some(path) = req.path.strip_prefix("/api2/json") else {
            return Reply::err(
                501,
                format!("Method '{} {}' not implemented", req.method, req.path),
            );
        };
        let seg: Vec<&str> = path.trim_matches('/').split('/').collect();
        let params: BTreeMap<String, String> = req.params.iter().cloned().collect();
        if req.method == "POST" && seg == ["access", "ticket"] {
            return self.ticket(&params);
        }
        let user = match self.authenticate(req) {
            Ok(u) => u,
            Err(r) => return r,
        };
        let m = req.method.as_str();
        let spec: &[&[Param]] = match (m, seg.as_slice()) {
            ("GET", ["version"]) | ("GET", ["nodes"]) | ("GET", ["cluster", "status"]) => {
                &[schema::NONE]
            }
            ("GET", ["access", "permissions"]) => &[schema::PERMISSIONS],
            ("GET", ["cluster", "resources"]) => &[schema::RESOURCES],
            ("GET", ["cluster", "nextid"]) => &[schema::NEXTID],
            ("GET", ["nodes", _, "storage"]) => &[schema::STORAGE_LIST],
            ("GET", ["nodes", _, "storage", _, "content"]) => &[schema::CONTENT_LIST],
            ("POST", ["nodes", _, "storage", _, "download-url"]) => &[schema::DOWNLOAD],
            ("POST", ["nodes", _, "storage", _, "upload"]) => &[schema::UPLOAD],
            ("DELETE", ["nodes", _, "storage", _, "content", ..]) => &[schema::CONTENT_DELETE],
            ("GET", ["nodes", _, "network"]) => &[schema::NETWORK_LIST],
            ("POST", ["nodes", _, "qemu"]) => &[schema::VM_CONFIG, schema::CREATE_EXTRA],
            ("GET", ["nodes", _, "qemu", _, "config"]) => &[schema::CONFIG_GET],
            ("PUT", ["nodes", _, "qemu", _, "config"]) => {
                &[schema::VM_CONFIG, schema::UPDATE_EXTRA]
            }
            ("GET", ["nodes", _, "qemu", _, "status", "current"]) => &[schema::NONE],
            ("GET", ["nodes", _, "qemu", _, "agent", "network-get-interfaces"]) => &[schema::NONE],
            ("POST", ["nodes", _, "qemu", _, "status", "start"]) => &[schema::START],
            ("POST", ["nodes", _, "qemu", _, "status", "stop"]) => &[schema::STOP],
            ("POST", ["nodes", _, "qemu", _, "status", "shutdown"]) => &[schema::SHUTDOWN],
            ("DELETE", ["nodes", _, "qemu", _]) => &[schema::DESTROY],
            ("GET", ["nodes", _, "tasks"]) => &[schema::TASK_LIST],
            ("GET", ["nodes", _, "tasks", _, "status"]) => &[schema::NONE],
            ("GET", ["nodes", _, "tasks", _, "log"]) => &[schema::TASK_LOG],
            _ => {
                return Reply::err(501, format!("Method '{m} {path}' not implemented"));
            }
        };
        let upload = matches!(
            (m, seg.as_slice()),
            ("POST", ["nodes", _, "storage", _, "upload"])
        );
        if req.multipart && !upload {
            // pve-http-server AnyEvent.pm: multipart bodies are for uploads only.
            return Reply::err(506, "Unsupported content type");
        }
        // Checked before the body is read (pve-manager PVE/HTTPServer.pm 115-121).
        let needs = match (m, seg.as_slice()) {
            ("POST", ["nodes", _, "storage", s, "upload"]) => {
                Some(("Datastore.AllocateTemplate", format!("/storage/{s}")))
            }
            ("DELETE", ["nodes", _, "storage", s, "content", ..]) => {
                Some(("Datastore.Allocate", format!("/storage/{s}")))
            }
            _ => None,
        };
        if let Some((privilege, path)) = needs
            && !self.has_privilege(&path, privilege)
        {
            return Reply::err(
                403,
                format!("Permission check failed ({path}, {privilege})"),
            );
        }
        // download-url: AllocateTemplate on the storage and (Sys.Audit + Sys.Modify
        // on / or Sys.AccessNetwork on the node); a failed `or` names no path
        // (pve-storage 9.1.7 `Status.pm` 738-755; proxmox-semantics §3).
        if let ("POST", ["nodes", n, "storage", s, "download-url"]) = (m, seg.as_slice()) {
            let storage = format!("/storage/{s}");
            if !self.has_privilege(&storage, "Datastore.AllocateTemplate") {
                return Reply::err(
                    403,
                    format!("Permission check failed ({storage}, Datastore.AllocateTemplate)"),
                );
            }
            let sys = self.has_privilege("/", "Sys.Audit") && self.has_privilege("/", "Sys.Modify");
            if !sys && !self.has_privilege(&format!("/nodes/{n}"), "Sys.AccessNetwork") {
                return Reply::err(403, "Permission check failed");
            }
        }
        if let Err(e) = schema::validate(&params, spec) {
            return Reply::params(e);
        }
        if let Err(e) = schema::validate_path(&seg) {
            return Reply::params(e);
        }
        // Path parameters: node names, VMIDs.
        if seg.len() >= 2 && seg[0] == "nodes" {
            let st = self.state.lock().expect("lab state");
            match st.nodes.get(seg[1]) {
                None => {
                    return Reply::err(
                        500,
                        format!(
                            "hostname lookup '{}' failed - failed to get address info for: {}: Name or service not known",
                            seg[1], seg[1]
                        ),
                    );
                }
                Some(n) if !n.online => {
                    return Reply::err(
                        595,
                        "Errors during connection establishment, proxy handshake: No route to host",
                    );
                }
                _ => {}
            }
        }
        let mut injected_task_error = None;
        let mut injected_start_error = None;
        match self.fault(m, path) {
            Some(FaultEffect::Status { code, message }) => return Reply::err(code, message),
            Some(FaultEffect::LockTimeout) => {
                let vmid = seg
                    .get(3)
                    .and_then(|v| v.parse().ok())
                    .or_else(|| params.get("vmid").and_then(|v| v.parse().ok()))
                    .unwrap_or(0);
                return Reply::err(500, lock_msg(vmid));
            }
            Some(FaultEffect::NoWorker) => {
                // A create whose worker never forked leaves its `lock: create` stub
                // (pve-common `RESTEnvironment.pm` 698; qemu-server `Qemu.pm` 1626).
                if let ("POST", ["nodes", n, "qemu"]) = (m, seg.as_slice())
                    && let Some(vmid) = params.get("vmid").and_then(|v| v.parse().ok())
                {
                    let mut st = self.state.lock().expect("lab state");
                    st.vms.entry(vmid).or_insert_with(|| create_stub(n, vmid));
                }
                return Reply::err(500, "got no worker upid - start worker failed");
            }
            Some(FaultEffect::TaskError { message }) => injected_task_error = Some(message),
            Some(FaultEffect::StartError { message }) => injected_start_error = Some(message),
            None => {}
        }
        let vmid_of = |s: &str| s.parse::<u32>().ok();
        match (m, seg.as_slice()) {
            ("GET", ["version"]) => {
                Reply::data(json!({"version": "9.1.3", "release": "9.1", "repoid": "lab00000"}))
            }
            ("GET", ["access", "permissions"]) => self.permissions(params.get("path")),
            ("GET", ["nodes"]) => self.nodes(),
            ("GET", ["cluster", "status"]) => self.cluster_status(),
            ("GET", ["cluster", "resources"]) => {
                self.resources(params.get("type").map(String::as_str))
            }
            ("GET", ["cluster", "nextid"]) => self.nextid(params.get("vmid")),
            ("GET", ["nodes", n, "storage"]) => self.storages(n, &params),
            ("GET", ["nodes", n, "storage", s, "content"]) => self.content(n, s, &params),
            ("POST", ["nodes", n, "storage", s, "download-url"]) => {
                self.download(n, s, &params, &user, injected_task_error)
            }
            ("POST", ["nodes", n, "storage", s, "upload"]) => {
                self.upload(n, s, &params, req.upload.as_ref(), &user)
            }
            ("DELETE", ["nodes", n, "storage", s, "content", volume @ ..]) => {
                self.delete_volume(n, s, &volume.join("/"), &user)
            }
            ("GET", ["nodes", n, "network"]) => {
                self.network(n, params.get("type").map(String::as_str))
            }
            ("POST", ["nodes", n, "qemu"]) => {
                self.create(n, params, &user, injected_task_error, injected_start_error)
            }
            ("GET", ["nodes", n, "qemu", v, "config"]) => self.with_vm(n, v, |vm| {
                let mut c: serde_json::Map<String, Value> = vm
                    .config
                    .iter()
                    .map(|(k, v)| (k.clone(), config_value(k, v)))
                    .collect();
                c.insert("digest".into(), json!(digest(&vm.config)));
                Reply::data(Value::Object(c))
            }),
            ("PUT", ["nodes", n, "qemu", v, "config"]) => self.update(n, vmid_of(v), params),
            ("GET", ["nodes", n, "qemu", v, "status", "current"]) => {
                self.with_vm(n, v, status_current)
            }
            ("GET", ["nodes", n, "qemu", v, "agent", "network-get-interfaces"]) => {
                self.with_vm(n, v, agent_interfaces)
            }
            ("POST", ["nodes", n, "qemu", v, "status", op]) => {
                let injected =
                    injected_task_error.or(injected_start_error.filter(|_| *op == "start"));
                self.power(n, vmid_of(v), op, &user, injected)
            }
            ("DELETE", ["nodes", n, "qemu", v]) => {
                self.destroy(n, vmid_of(v), &user, injected_task_error)
            }
            ("GET", ["nodes", n, "tasks"]) => self.task_list(n, &params, &user),
            ("GET", ["nodes", n, "tasks", upid, "status"]) => self.task_status(n, upid),
            ("GET", ["nodes", n, "tasks", upid, "log"]) => self.task_log(n, upid),
            _ => Reply::err(501, format!("Method '{m} {path}' not implemented")),
        }
    }

    fn ticket(&self, params: &BTreeMap<String, String>) -> Reply {
        if let Err(e) = schema::validate(params, &[schema::TICKET]) {
            return Reply::params(e);
        }
        let st = self.state.lock().expect("lab state");
        let user = st.token_id.split('!').next().unwrap_or_default().to_owned();
        let cfg = self.config.lock().expect("lab config");
        let ok = params.get("username") == Some(&user)
            && cfg.password.is_some()
            && params.get("password") == cfg.password.as_ref();
        if !ok {
            return Reply::err(401, "authentication failure");
        }
        let ticket = format!("PVE:{user}:{}", random_hex(16));
        let csrf = random_hex(16);
        self.tickets
            .lock()
            .expect("lab tickets")
            .insert(ticket.clone(), csrf.clone());
        Reply::data(json!({"username": user, "ticket": ticket, "CSRFPreventionToken": csrf}))
    }

    /// The token's privileges on `path` (privilege → propagate flag).
    fn privileges(&self, path: &str) -> BTreeMap<String, u8> {
        let cfg = self.config.lock().expect("lab config");
        if cfg.acls.is_empty() {
            let all = || ALL_PRIVS.iter().map(|s| s.to_string()).collect();
            let privileges = cfg.token_privileges.clone().unwrap_or_else(all);
            let root = LabAcl {
                path: "/".into(),
                privileges,
                propagate: true,
            };
            return effective_privileges(&[root], path);
        }
        effective_privileges(&cfg.acls, path)
    }

    fn has_privilege(&self, path: &str, privilege: &str) -> bool {
        self.privileges(path).contains_key(privilege)
    }

    /// `POST /nodes/{node}/storage/{storage}/upload` (pve-storage 9.1.7
    /// `API2/Storage/Status.pm` 519-734; proxmox-semantics §2): the file part's
    /// name is normalised, ISO content needs `.iso`/`.img`, the checksum is verified
    /// inside the `imgcopy` task, an existing file is overwritten.
    fn upload(
        self: &std::sync::Arc<Self>,
        node: &str,
        storage: &str,
        p: &BTreeMap<String, String>,
        file: Option<&(String, Vec<u8>)>,
        user: &str,
    ) -> Reply {
        let param_err = |k: &str, msg: &str| {
            let mut e = BTreeMap::new();
            e.insert(k.to_owned(), msg.to_owned());
            Reply::params(e)
        };
        let Some((raw_name, bytes)) = file else {
            return param_err("filename", "property is missing and it is not optional");
        };
        if p.contains_key("checksum") != p.contains_key("checksum-algorithm") {
            return param_err(
                "checksum",
                "'checksum' and 'checksum-algorithm' must be set together",
            );
        }
        // pve-storage Storage.pm 2483-2491: path stripped, odd characters become `_`.
        let base = raw_name.rsplit(['/', '\\']).next().unwrap_or_default();
        let filename: String = base
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-') {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        if filename.len() > 255 {
            return param_err("filename", "value may only be 255 characters long");
        }
        let content = &p["content"];
        let lower = filename.to_lowercase();
        if content == "iso" && !(lower.ends_with(".iso") || lower.ends_with(".img")) {
            return param_err("filename", "wrong file extension");
        }
        let mut st = self.state.lock().expect("lab state");
        let Some(s) = st.nodes[node].storages.iter().find(|s| s.id == storage) else {
            return Reply::err(500, format!("storage '{storage}' does not exist"));
        };
        if !s.content.iter().any(|c| c == content) {
            return Reply::err(
                500,
                format!("storage '{storage}' does not support '{content}' content"),
            );
        }
        let mut error = None;
        if let Some(want) = p.get("checksum") {
            let got = match p["checksum-algorithm"].as_str() {
                "sha256" => hex::encode(ring::digest::digest(&ring::digest::SHA256, bytes)),
                other => format!("(lab: {other} not simulated)"),
            };
            if !got.eq_ignore_ascii_case(want) {
                error = Some(format!("checksum mismatch: got '{got}' != expect '{want}'"));
            }
        }
        let volid = format!("{storage}:{content}/{filename}");
        // Uploads are never proxied: the `imgcopy` task runs on the node that
        // received the request (the endpoint's host) and copies the file to `node`
        // (pve-manager `PVE/HTTPServer.pm` 185, pve-storage `Status.pm` 638-666).
        let endpoint_ip = st.endpoint.ip().to_string();
        let receiving = st
            .nodes
            .values()
            .find(|n| {
                n.network.iter().any(|i| {
                    i.cidr.as_deref().and_then(|c| c.split('/').next()) == Some(&endpoint_ip)
                })
            })
            .map_or_else(|| node.to_owned(), |n| n.name.clone());
        let upid = self.new_task(
            &mut st,
            &receiving,
            "imgcopy",
            "",
            user,
            TaskEffect::Upload {
                node: node.into(),
                storage: storage.into(),
                volid,
                bytes: base64::Engine::encode(&base64::engine::general_purpose::STANDARD, bytes),
            },
            error,
        );
        drop(st);
        self.spawn_settle("imgcopy");
        Reply::data(json!(upid))
    }

    /// `DELETE /nodes/{n}/storage/{s}/content/{volume}` (pve-storage
    /// `API2/Storage/Content.pm` 453-540): `volume` is the full volid or the part
    /// after `storage:`; an `imgdel` task frees it. Nothing checks whether a VM
    /// still has it attached. A missing file is only a warning in the task log.
    fn delete_volume(
        self: &std::sync::Arc<Self>,
        node: &str,
        storage: &str,
        volume: &str,
        user: &str,
    ) -> Reply {
        let volid = if volume.contains(':') {
            volume.to_owned()
        } else {
            format!("{storage}:{volume}")
        };
        if volid.split_once(':').map(|(s, _)| s) != Some(storage) {
            return Reply::err(
                400,
                format!("volume '{volid}' is not on storage '{storage}'"),
            );
        }
        let mut st = self.state.lock().expect("lab state");
        if !st.nodes[node].storages.iter().any(|s| s.id == storage) {
            return Reply::err(500, format!("storage '{storage}' does not exist"));
        }
        let upid = self.new_task(
            &mut st,
            node,
            "imgdel",
            storage,
            user,
            TaskEffect::DeleteVolume {
                storage: storage.into(),
                volid,
            },
            None,
        );
        drop(st);
        self.spawn_settle("imgdel");
        Reply::data(json!(upid))
    }

    /// `GET /access/permissions` (pve-access-control `API2/AccessControl.pm`
    /// 510-574): with `path`, that path evaluated; without, `/` and the ACL paths.
    fn permissions(&self, path: Option<&String>) -> Reply {
        let paths: Vec<String> = match path {
            Some(p) => vec![p.clone()],
            None => {
                let cfg = self.config.lock().expect("lab config");
                std::iter::once("/".to_owned())
                    .chain(cfg.acls.iter().map(|a| a.path.clone()))
                    .collect()
            }
        };
        let map: serde_json::Map<String, Value> = paths
            .into_iter()
            .map(|p| {
                let privs = self.privileges(&p);
                (p, json!(privs))
            })
            .collect();
        Reply::data(Value::Object(map))
    }

    fn nodes(&self) -> Reply {
        let fp = self.fingerprint();
        let st = self.state.lock().expect("lab state");
        Reply::data(
            st.nodes
                .values()
                .map(|n| {
                    json!({"node": n.name, "status": if n.online {"online"} else {"offline"}, "type": "node",
                           "id": format!("node/{}", n.name), "maxcpu": 20, "maxmem": 96u64 << 30, "ssl_fingerprint": fp})
                })
                .collect(),
        )
    }

    fn fingerprint(&self) -> String {
        let st = self.state.lock();
        st.ok()
            .and_then(|s| rustls_pemfile_der(&s.cert_pem))
            .map(|der| crate::tls::fingerprint(&der))
            .unwrap_or_default()
    }

    fn cluster_status(&self) -> Reply {
        let st = self.state.lock().expect("lab state");
        let mut out = vec![
            json!({"type": "cluster", "name": "lab", "quorate": 1, "nodes": st.nodes.len(), "version": 3}),
        ];
        for (i, n) in st.nodes.values().enumerate() {
            out.push(json!({"type": "node", "name": n.name, "online": u8::from(n.online), "nodeid": i + 1, "local": u8::from(i == 0)}));
        }
        Reply::data(Value::Array(out))
    }

    fn resources(&self, kind: Option<&str>) -> Reply {
        let st = self.state.lock().expect("lab state");
        if kind.is_some_and(|k| k != "vm") {
            return Reply::data(json!([]));
        }
        // Containers share the VMID space and are listed beside the VMs
        // (pve-manager `API2/Cluster.pm` 263-615).
        let containers = st.containers.iter().map(|(vmid, ct)| {
            json!({"id": format!("lxc/{vmid}"), "type": "lxc", "vmid": vmid, "node": ct.node,
                "name": ct.hostname, "status": if ct.running {"running"} else {"stopped"}, "template": 0})
        });
        Reply::data(
            st.vms
                .values()
                .map(|vm| {
                    let mut o = json!({"id": format!("qemu/{}", vm.vmid), "type": "qemu", "vmid": vm.vmid, "node": vm.node,
                        "status": if vm.running {"running"} else {"stopped"}, "template": 0,
                        "name": vm.config.get("name").cloned().unwrap_or_else(|| format!("VM {}", vm.vmid))});
                    // A VM being created has no pvestatd data yet: no name, status
                    // unknown (pve-manager `API2/Cluster.pm` 554-595, `API2Tools.pm` 81-119).
                    if vm.config.get("lock").is_some_and(|l| l == "create") {
                        o["status"] = json!("unknown");
                        o.as_object_mut().expect("object").remove("name");
                    }
                    if let Some(t) = vm.config.get("tags") {
                        o["tags"] = json!(t);
                    }
                    if let Some(l) = vm.config.get("lock") {
                        o["lock"] = json!(l);
                    }
                    o
                })
                .chain(containers)
                .collect(),
        )
    }

    fn nextid(&self, vmid: Option<&String>) -> Reply {
        let st = self.state.lock().expect("lab state");
        match vmid.and_then(|v| v.parse::<u32>().ok()) {
            Some(v) if st.vms.contains_key(&v) || st.containers.contains_key(&v) => {
                let mut e = BTreeMap::new();
                e.insert("vmid".to_owned(), format!("VM {v} already exists"));
                Reply::params(e)
            }
            Some(v) => Reply::data(json!(v.to_string())),
            None => {
                let free = (100u32..)
                    .find(|v| !st.vms.contains_key(v) && !st.containers.contains_key(v))
                    .unwrap_or(100);
                Reply::data(json!(free.to_string()))
            }
        }
    }

    fn storages(&self, node: &str, params: &BTreeMap<String, String>) -> Reply {
        let st = self.state.lock().expect("lab state");
        let n = &st.nodes[node];
        let want = params.get("content");
        Reply::data(
            n.storages
                .iter()
                .filter(|s| want.is_none_or(|c| c.split(',').all(|c| s.content.iter().any(|x| x == c))))
                .map(|s| {
                    // A shared storage is one pool: what any host allocated on it counts.
                    let used: u64 = if s.shared {
                        st.nodes
                            .values()
                            .flat_map(|n| n.storages.iter().filter(|x| x.id == s.id))
                            .flat_map(|x| x.volumes.values())
                            .sum()
                    } else {
                        s.volumes.values().sum()
                    };
                    json!({"storage": s.id, "type": s.kind, "content": s.content.join(","), "active": 1, "enabled": 1,
                           "shared": u8::from(s.shared), "total": s.total, "used": used, "avail": s.total.saturating_sub(used),
                           "used_fraction": used as f64 / s.total.max(1) as f64})
                })
                .collect(),
        )
    }

    fn content(&self, node: &str, storage: &str, params: &BTreeMap<String, String>) -> Reply {
        let st = self.state.lock().expect("lab state");
        let Some(s) = st.nodes[node].storages.iter().find(|s| s.id == storage) else {
            return Reply::err(500, format!("storage '{storage}' does not exist"));
        };
        let want = params.get("content");
        Reply::data(
            s.volumes
                .iter()
                .filter(|(v, _)| want.is_none_or(|c| volume_content(v) == c))
                .map(|(v, size)| json!({"volid": v, "size": size, "content": volume_content(v), "format": if v.ends_with(".iso") {"iso"} else {"raw"}, "ctime": 1_700_000_000}))
                .collect(),
        )
    }

    fn network(&self, node: &str, kind: Option<&str>) -> Reply {
        let st = self.state.lock().expect("lab state");
        Reply::data(
            st.nodes[node]
                .network
                .iter()
                .filter(|i| match kind {
                    None => true,
                    Some("any_bridge") | Some("any_local_bridge") => i.kind == "bridge",
                    Some(k) => i.kind == k,
                })
                .map(|i| {
                    let mut o = json!({"iface": i.iface, "type": i.kind, "active": 1, "autostart": 1, "families": ["inet"], "method": "static"});
                    if i.vlan_aware {
                        o["bridge_vlan_aware"] = json!(1);
                    }
                    for (k, v) in [("bridge_vids", &i.vids), ("bridge_ports", &i.ports), ("slaves", &i.slaves), ("cidr", &i.cidr)] {
                        if let Some(v) = v {
                            o[k] = json!(v);
                        }
                    }
                    if let Some(m) = i.mtu {
                        o["mtu"] = json!(m.to_string());
                    }
                    o
                })
                .collect(),
        )
    }

    #[allow(clippy::too_many_arguments)] // one call site per task type; a struct would only rename the list
    fn new_task(
        &self,
        st: &mut LabPveState,
        node: &str,
        kind: &str,
        id: &str,
        user: &str,
        effect: TaskEffect,
        forced_error: Option<String>,
    ) -> String {
        st.next_pid += 1;
        let now = self.now_ms();
        let upid = Upid::new(
            node,
            st.next_pid,
            0x35693 + u64::from(st.next_pid),
            0x6900_0000 + (now / 1000) as u32,
            kind,
            id,
            user,
        );
        let (_, dur) = self.latency(kind);
        st.tasks.push(LabTask {
            upid: upid.to_string(),
            node: node.into(),
            kind: kind.into(),
            id: id.into(),
            user: user.into(),
            done_at_ms: now + dur,
            effect,
            forced_error,
            exitstatus: None,
            log: vec![format!("starting task {kind}")],
        });
        upid.to_string()
    }

    fn spawn_settle(self: &std::sync::Arc<Self>, kind: &str) {
        let (_, dur) = self.latency(kind);
        self.spawn_settle_after(dur);
    }

    fn spawn_settle_after(self: &std::sync::Arc<Self>, dur: u64) {
        let lab = self.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(dur + 1)).await;
            lab.settle();
        });
    }

    fn download(
        self: &std::sync::Arc<Self>,
        node: &str,
        storage: &str,
        p: &BTreeMap<String, String>,
        user: &str,
        injected: Option<String>,
    ) -> Reply {
        if p.contains_key("checksum") != p.contains_key("checksum-algorithm") {
            let mut e = BTreeMap::new();
            e.insert(
                "checksum".into(),
                "'checksum' and 'checksum-algorithm' must be set together".into(),
            );
            return Reply::params(e);
        }
        let filename = &p["filename"];
        let content = &p["content"];
        let lower = filename.to_lowercase();
        if content == "iso" && !(lower.ends_with(".iso") || lower.ends_with(".img")) {
            let mut e = BTreeMap::new();
            e.insert("filename".into(), "wrong file extension".into());
            return Reply::params(e);
        }
        let mut st = self.state.lock().expect("lab state");
        let Some(s) = st.nodes[node].storages.iter().find(|s| s.id == storage) else {
            return Reply::err(500, format!("storage '{storage}' does not exist"));
        };
        if s.kind != "dir" {
            return Reply::err(
                500,
                format!(
                    "can't upload to storage type '{}', not a file based storage!",
                    s.kind
                ),
            );
        }
        if !s.content.iter().any(|c| c == content) {
            return Reply::err(
                500,
                format!("storage '{storage}' is not configured for content-type '{content}'"),
            );
        }
        let volid = format!("{storage}:{content}/{filename}");
        let exists = s.volumes.contains_key(&volid);
        let mut error = injected;
        if error.is_none() && exists && !p.contains_key("checksum") {
            error = Some(format!(
                "refusing to override existing file '/var/lib/vz/template/{content}/{filename}'"
            ));
        }
        // An Image Factory URL served by this lab must name a schematic it has seen.
        let own = self
            .listen
            .lock()
            .expect("lab listen")
            .map(|a| format!("https://{a}/image/"));
        if error.is_none()
            && let Some(prefix) = own
            && let Some(rest) = p["url"].strip_prefix(&prefix)
        {
            let id = rest.split('/').next().unwrap_or_default();
            if !st.schematics.contains(id) {
                error = Some(format!(
                    "download failed: 404 Not Found (schematic {id} unknown to the Image Factory)"
                ));
            }
        }
        let upid = self.new_task(
            &mut st,
            node,
            "download",
            filename,
            user,
            TaskEffect::Download {
                storage: storage.into(),
                volid,
            },
            error,
        );
        drop(st);
        self.spawn_settle("download");
        Reply::data(json!(upid))
    }

    fn create(
        self: &std::sync::Arc<Self>,
        node: &str,
        mut p: BTreeMap<String, String>,
        user: &str,
        injected: Option<String>,
        start_error: Option<String>,
    ) -> Reply {
        let Some(vmid) = p.remove("vmid").and_then(|v| v.parse::<u32>().ok()) else {
            return Reply::err(400, "bad vmid");
        };
        let start = p.remove("start").is_some_and(|v| v == "1");
        p.remove("storage");
        p.remove("pool");
        let mut st = self.state.lock().expect("lab state");
        // One VMID space for VMs and containers (pve-cluster `Cluster.pm` 785-797).
        let taken = st
            .vms
            .get(&vmid)
            .map(|vm| ("VM", &vm.node))
            .or_else(|| st.containers.get(&vmid).map(|ct| ("CT", &ct.node)));
        if let Some((kind, on)) = taken {
            return Reply::err(
                500,
                format!("unable to create VM {vmid} - {kind} {vmid} already exists on node '{on}'"),
            );
        }
        let config = match normalise_new(&mut st, node, vmid, p) {
            Ok(c) => c,
            Err(e) => return Reply::err(500, format!("unable to create VM {vmid} - {e}")),
        };
        // Until the task ends the config is only the lock (pve-guest-common
        // `AbstractConfig.pm` 254-269): no name, tags or description yet.
        st.vms.insert(vmid, create_stub(node, vmid));
        let task_error = injected.map(|e| format!("unable to create VM {vmid} - {e}"));
        let effect = TaskEffect::Create {
            vmid,
            start,
            config,
            start_error,
        };
        let upid = self.new_task(
            &mut st,
            node,
            "qmcreate",
            &vmid.to_string(),
            user,
            effect,
            task_error,
        );
        drop(st);
        self.spawn_settle("qmcreate");
        Reply::data(json!(upid))
    }

    fn with_vm(&self, node: &str, vmid: &str, f: impl FnOnce(&LabVmState) -> Reply) -> Reply {
        let st = self.state.lock().expect("lab state");
        match vmid
            .parse::<u32>()
            .ok()
            .and_then(|v| st.vms.get(&v))
            .filter(|vm| vm.node == node)
        {
            Some(vm) => f(vm),
            None => no_such_vm(node, vmid),
        }
    }

    fn update(&self, node: &str, vmid: Option<u32>, mut p: BTreeMap<String, String>) -> Reply {
        let mut st = self.state.lock().expect("lab state");
        let vmid = match vm_on(&st, node, vmid) {
            Ok((vmid, _)) => vmid,
            Err(reply) => return reply,
        };
        if self.vm_running_task(&st, vmid) {
            return Reply::err(500, lock_msg(vmid));
        }
        if let Some(l) = st.vms[&vmid].config.get("lock") {
            return Reply::err(500, format!("VM is locked ({l})"));
        }
        if let Some(d) = p.remove("digest")
            && d != digest(&st.vms[&vmid].config)
        {
            return Reply::err(
                500,
                "detected modified configuration - file changed by other user? Try again.",
            );
        }
        p.remove("skiplock");
        p.remove("force");
        let delete = p.remove("delete").unwrap_or_default();
        for (k, v) in p {
            let base = k.trim_end_matches(|c: char| c.is_ascii_digit());
            let is_drive = base.len() < k.len() && matches!(base, "scsi" | "efidisk" | "ide");
            if is_drive && !v.contains(":iso/") && !v.starts_with("none") {
                return Reply::err(
                    500,
                    format!("lab: changing disk {k} in place is not simulated"),
                );
            }
            let v = normalise_value(&k, &v);
            st.vms.get_mut(&vmid).expect("checked").config.insert(k, v);
        }
        for k in split_tags(&delete) {
            st.vms.get_mut(&vmid).expect("checked").config.remove(&k);
        }
        Reply::data(Value::Null)
    }

    fn power(
        self: &std::sync::Arc<Self>,
        node: &str,
        vmid: Option<u32>,
        op: &str,
        user: &str,
        injected: Option<String>,
    ) -> Reply {
        let mut st = self.state.lock().expect("lab state");
        let (vmid, vm) = match vm_on(&st, node, vmid) {
            Ok(found) => found,
            Err(reply) => return reply,
        };
        let running = vm.running;
        let locked = vm.config.get("lock").cloned();
        if self.vm_running_task(&st, vmid) {
            return Reply::err(500, lock_msg(vmid));
        }
        let (kind, effect, error) = match op {
            "start" => (
                "qmstart",
                TaskEffect::Start { vmid },
                running.then(|| format!("VM {vmid} already running")),
            ),
            "stop" => ("qmstop", TaskEffect::Stop { vmid }, None),
            "shutdown" => (
                "qmshutdown",
                TaskEffect::Stop { vmid },
                (!running).then(|| format!("VM {vmid} not running")),
            ),
            _ => return Reply::err(501, format!("Method 'POST status/{op}' not implemented")),
        };
        let error = injected
            .or(error)
            .or(locked.map(|l| format!("VM is locked ({l})")));
        let upid = self.new_task(&mut st, node, kind, &vmid.to_string(), user, effect, error);
        drop(st);
        self.spawn_settle(kind);
        Reply::data(json!(upid))
    }

    fn destroy(
        self: &std::sync::Arc<Self>,
        node: &str,
        vmid: Option<u32>,
        user: &str,
        injected: Option<String>,
    ) -> Reply {
        let mut st = self.state.lock().expect("lab state");
        let (vmid, vm) = match vm_on(&st, node, vmid) {
            Ok(found) => found,
            Err(reply) => return reply,
        };
        if vm.running {
            return Reply::err(500, format!("VM {vmid} is running - destroy failed"));
        }
        let locked = vm.config.get("lock").map(|l| format!("VM is locked ({l})"));
        if self.vm_running_task(&st, vmid) {
            return Reply::err(500, lock_msg(vmid));
        }
        let upid = self.new_task(
            &mut st,
            node,
            "qmdestroy",
            &vmid.to_string(),
            user,
            TaskEffect::Destroy { vmid },
            injected.or(locked),
        );
        drop(st);
        self.spawn_settle("qmdestroy");
        Reply::data(json!(upid))
    }

    fn find_task(&self, node: &str, upid: &str) -> Result<LabTask, Reply> {
        let st = self.state.lock().expect("lab state");
        match st.tasks.iter().find(|t| t.upid == upid && t.node == node) {
            Some(t) => Ok(t.clone()),
            None => {
                let mut e = BTreeMap::new();
                e.insert(
                    "upid".into(),
                    "unable to parse worker upid / no such task".into(),
                );
                Err(Reply::params(e))
            }
        }
    }

    fn task_status(&self, node: &str, upid: &str) -> Reply {
        match self.find_task(node, upid) {
            Err(r) => r,
            Ok(t) => {
                let (user, tokenid) = match t.user.split_once('!') {
                    Some((u, tk)) => (u.to_owned(), Some(tk.to_owned())),
                    None => (t.user.clone(), None),
                };
                let mut o = json!({"upid": t.upid, "node": t.node, "type": t.kind, "id": t.id, "user": user,
                    "status": if t.exitstatus.is_some() {"stopped"} else {"running"}, "pid": 1, "pstart": 1, "starttime": 1});
                if let Some(tk) = tokenid {
                    o["tokenid"] = json!(tk);
                }
                if let Some(e) = t.exitstatus {
                    o["exitstatus"] = json!(e);
                }
                Reply::data(o)
            }
        }
    }

    /// `GET /nodes/{n}/tasks` (pve-manager `API2/Tasks.pm` 141-260): the caller's
    /// own tasks (the lab token holds `Sys.Audit` only as a whole, so: own ones);
    /// `source` defaults to `archive`, which omits running tasks.
    fn task_list(&self, node: &str, p: &BTreeMap<String, String>, user: &str) -> Reply {
        let st = self.state.lock().expect("lab state");
        let source = p.get("source").map_or("archive", String::as_str);
        Reply::data(
            st.tasks
                .iter()
                .rev()
                .filter(|t| t.node == node && t.user == user)
                .filter(|t| match source {
                    "active" => t.exitstatus.is_none(),
                    "archive" => t.exitstatus.is_some(),
                    _ => true,
                })
                .filter(|t| p.get("vmid").is_none_or(|v| *v == t.id))
                .filter(|t| p.get("typefilter").is_none_or(|k| *k == t.kind))
                .map(|t| {
                    let mut o = json!({"upid": t.upid, "node": t.node, "type": t.kind, "id": t.id,
                        "user": t.user, "pid": 1, "pstart": 1, "starttime": 1});
                    if let Some(e) = &t.exitstatus {
                        o["status"] = json!(e);
                        o["endtime"] = json!(2);
                    }
                    o
                })
                .collect(),
        )
    }

    fn task_log(&self, node: &str, upid: &str) -> Reply {
        match self.find_task(node, upid) {
            Err(r) => r,
            Ok(t) => {
                let mut log = t.log.clone();
                if t.kind == "download" && t.forced_error.is_none() {
                    let (_, dur) = self.latency("download");
                    let left = t.done_at_ms.saturating_sub(self.now_ms());
                    let done = 1.0 - left as f64 / dur.max(1) as f64;
                    log.splice(1..1, wget_lines(done));
                }
                Reply::data(
                    log.iter()
                        .enumerate()
                        .map(|(i, l)| json!({"n": i + 1, "t": l}))
                        .collect(),
                )
            }
        }
    }
}

/// What a download task has logged once `done` (0..=1) of the file arrived: PVE runs
/// `wget --progress=dot:giga` (pve-common 9.2.1 src/PVE/Tools.pm
/// `download_file_from_url`), one dot per MiB, one line per 32 MiB with the percent.
/// The lab's ISO is a nominal 110 MiB.
fn wget_lines(done: f64) -> Vec<String> {
    const MIB: u64 = 110;
    let got = (MIB as f64 * done.clamp(0.0, 1.0)) as u64;
    let mut lines = vec![format!(
        "Length: {} ({MIB}M) [application/octet-stream]",
        MIB << 20
    )];
    for start in (0..got).step_by(32) {
        let end = (start + 32).min(got);
        let full = end - start == 32 || got == MIB;
        if !full {
            break;
        }
        let dots: Vec<String> = (start..end)
            .collect::<Vec<_>>()
            .chunks(8)
            .map(|c| ".".repeat(c.len()))
            .collect();
        lines.push(format!(
            "{:>6}K {:<35} {:>3}%  100M 1s",
            start * 1024,
            dots.join(" "),
            end * 100 / MIB
        ));
    }
    lines
}

fn rustls_pemfile_der(pem: &str) -> Option<Vec<u8>> {
    let b64: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
    base64::Engine::decode(&base64::engine::general_purpose::STANDARD, b64).ok()
}

pub(super) fn cert_der(pem: &str) -> Option<Vec<u8>> {
    rustls_pemfile_der(pem)
}

/// Apply a finished task's effect; `Err` = its `TASK ERROR` message.
fn apply(st: &mut LabPveState, task: &LabTask, events: &mut Vec<LabEvent>) -> Result<(), String> {
    match &task.effect {
        TaskEffect::Create { vmid, config, .. } => {
            for (k, v) in config {
                if k.starts_with("ide") && v.contains(":iso/") {
                    let volid = PropString::parse(v, "file")
                        .and_then(|p| p.get("file").map(str::to_owned))
                        .unwrap_or_default();
                    let (sid, _) = volid.split_once(':').unwrap_or_default();
                    let present = st.nodes[&task.node]
                        .storages
                        .iter()
                        .any(|s| s.id == sid && s.volumes.contains_key(&volid));
                    if !present {
                        return Err(format!(
                            "unable to create VM {vmid} - volume {volid} does not exist"
                        ));
                    }
                }
            }
            let vm = st.vms.get_mut(vmid).ok_or("VM vanished")?;
            vm.config = config.clone();
            Ok(())
        }
        TaskEffect::Start { vmid } => {
            start_vm(st, *vmid, events);
            Ok(())
        }
        TaskEffect::Stop { vmid } => {
            if let Some(vm) = st.vms.get_mut(vmid)
                && vm.running
            {
                vm.running = false;
                vm.guest = None;
                events.push(LabEvent::VmStopped { vmid: *vmid });
            }
            Ok(())
        }
        TaskEffect::Destroy { vmid } => {
            if let Some(vm) = st.vms.remove(vmid) {
                free_volumes(st, &vm);
                events.push(LabEvent::VmDestroyed { vmid: *vmid });
            }
            Ok(())
        }
        TaskEffect::Download { storage, volid } => {
            let node = st.nodes.get_mut(&task.node).ok_or("node vanished")?;
            let s = node
                .storages
                .iter_mut()
                .find(|s| &s.id == storage)
                .ok_or("storage vanished")?;
            s.volumes.entry(volid.clone()).or_insert(104_857_600);
            Ok(())
        }
        TaskEffect::Upload {
            node,
            storage,
            volid,
            bytes,
        } => {
            let s = storage_mut(st, node, storage)?;
            let size = base64::Engine::decode(&base64::engine::general_purpose::STANDARD, bytes)
                .map_err(|e| e.to_string())?
                .len() as u64;
            s.volumes.insert(volid.clone(), size);
            s.files.insert(volid.clone(), bytes.clone());
            Ok(())
        }
        TaskEffect::DeleteVolume { storage, volid } => {
            let s = storage_mut(st, &task.node, storage)?;
            s.files.remove(volid);
            if s.volumes.remove(volid).is_none() {
                tracing::debug!(%volid, "lab: deleting a volume that does not exist (a warning in PVE)");
            }
            Ok(())
        }
    }
}

fn storage_mut<'a>(
    st: &'a mut LabPveState,
    node: &str,
    storage: &str,
) -> Result<&'a mut super::LabStorage, String> {
    st.nodes
        .get_mut(node)
        .ok_or("node vanished")?
        .storages
        .iter_mut()
        .find(|s| s.id == storage)
        .ok_or_else(|| "storage vanished".to_owned())
}

fn start_vm(st: &mut LabPveState, vmid: u32, events: &mut Vec<LabEvent>) {
    let Some(vm) = st.vms.get_mut(&vmid) else {
        return;
    };
    if vm.running {
        return;
    }
    vm.running = true;
    vm.guest = None;
    let vm = vm.clone();
    events.push(LabEvent::VmStarted(lab_vm(st, &vm)));
}

/// A VM as it boots: its NICs, with the addresses Proxmox's generated cloud-init
/// drive gives them (only when it has one: `ipconfigN` feed nothing else), and
/// the contents of the ISO volumes in its CD-ROM drives.
pub(super) fn lab_vm(st: &LabPveState, vm: &LabVmState) -> LabVm {
    let cloudinit = vm
        .config
        .values()
        .any(|v| v.contains(":cloudinit") || v.contains("-cloudinit"));
    let nics = (0u8..32)
        .filter_map(|i| {
            let net = NetDevice::parse(vm.config.get(&format!("net{i}"))?)?;
            let ip = vm
                .config
                .get(&format!("ipconfig{i}"))
                .filter(|_| cloudinit)
                .and_then(|c| PropString::parse(c, "ip"));
            Some(LabNic {
                index: i,
                mac: net.mac.unwrap_or_default(),
                vlan: net.tag,
                address: ip.as_ref().and_then(|p| p.get("ip")?.parse().ok()),
                gateway: ip.as_ref().and_then(|p| p.get("gw")?.parse().ok()),
            })
        })
        .collect();
    let media = vm
        .config
        .iter()
        .filter(|(k, _)| k.starts_with("ide") || k.starts_with("sata") || k.starts_with("scsi"))
        .filter_map(|(_, v)| {
            let p = PropString::parse(v, "file")?;
            if p.get("media") != Some("cdrom") {
                return None;
            }
            let volid = p.get("file")?;
            let (sid, _) = volid.split_once(':')?;
            let s = st
                .nodes
                .get(&vm.node)?
                .storages
                .iter()
                .find(|s| s.id == sid)?;
            s.files.get(volid).cloned()
        })
        .collect();
    LabVm {
        vmid: vm.vmid,
        host: vm.node.clone(),
        name: vm.config.get("name").cloned().unwrap_or_default(),
        nics,
        media,
    }
}

pub(crate) fn free_volumes(st: &mut LabPveState, vm: &LabVmState) {
    let prefix = format!("vm-{}-", vm.vmid);
    if let Some(n) = st.nodes.get_mut(&vm.node) {
        for s in &mut n.storages {
            s.volumes.retain(|v, _| {
                !v.split_once(':')
                    .is_some_and(|(_, name)| name.starts_with(&prefix))
            });
        }
    }
}

fn volume_content(volid: &str) -> &'static str {
    if volid.contains(":iso/") {
        "iso"
    } else if volid.contains(":vztmpl/") {
        "vztmpl"
    } else {
        "images"
    }
}

/// Allocate disks and fill defaults the way PVE's create does, returning the stored config.
fn normalise_new(
    st: &mut LabPveState,
    node: &str,
    vmid: u32,
    p: BTreeMap<String, String>,
) -> Result<BTreeMap<String, String>, String> {
    let mut out = BTreeMap::new();
    let mut disk_no = 0;
    let mut allocations: Vec<(String, String, u64)> = Vec::new();
    for (k, v) in p {
        let base = k.trim_end_matches(|c: char| c.is_ascii_digit());
        let value = match base {
            // An empty CD-ROM drive (`none,media=cdrom`) allocates nothing.
            "scsi" | "efidisk" | "ide" if !v.contains(":iso/") && !v.starts_with("none") => {
                let mut ps = PropString::parse(&v, "file").ok_or("bad drive")?;
                let file = ps.get("file").unwrap_or_default().to_owned();
                let (sid, spec) = file.split_once(':').ok_or("bad volume")?;
                let storage = st.nodes[node]
                    .storages
                    .iter()
                    .find(|s| s.id == sid)
                    .ok_or_else(|| format!("storage '{sid}' does not exist"))?;
                if !storage.content.iter().any(|c| c == "images") {
                    return Err(format!("storage '{sid}' does not support vm images"));
                }
                let (name, size, size_text) = if spec == "cloudinit" {
                    ps.0.insert("media".into(), "cdrom".into());
                    (format!("vm-{vmid}-cloudinit"), 4u64 << 20, None)
                } else if base == "efidisk" {
                    let n = format!("vm-{vmid}-disk-{disk_no}");
                    disk_no += 1;
                    (n, 4 << 20, Some("4M".to_owned()))
                } else {
                    let gib: u64 = spec
                        .parse()
                        .map_err(|_| format!("volume {file} does not exist"))?;
                    let n = format!("vm-{vmid}-disk-{disk_no}");
                    disk_no += 1;
                    (n, gib << 30, Some(format!("{gib}G")))
                };
                let volid = format!("{sid}:{name}");
                ps.0.insert("file".into(), volid.clone());
                if let Some(s) = size_text {
                    ps.0.insert("size".into(), s);
                }
                allocations.push((sid.to_owned(), volid, size));
                print_prop(&ps, "file")
            }
            _ => normalise_value(&k, &v),
        };
        out.insert(k, value);
    }
    for (sid, volid, size) in allocations {
        let s = st
            .nodes
            .get_mut(node)
            .and_then(|n| n.storages.iter_mut().find(|s| s.id == sid))
            .ok_or("storage vanished")?;
        let used: u64 = s.volumes.values().sum();
        if used + size > s.total {
            return Err(format!(
                "lvcreate 'pve/{}' error:   Volume group \"pve\" has insufficient free space",
                volid
            ));
        }
        s.volumes.insert(volid, size);
    }
    out.entry("smbios1".into())
        .or_insert_with(|| format!("uuid={}", uuid_like()));
    out.entry("vmgenid".into()).or_insert_with(uuid_like);
    out.insert("meta".into(), "creation-qemu=9.2.0,ctime=1700000000".into());
    Ok(out)
}

fn uuid_like() -> String {
    crate::lab::uuid_text(&random_hex(16))
}

/// Re-print a value as PVE stores it: NICs re-printed with their MAC (filled in,
/// upper case) first and the other keys sorted; tags lowercased, de-duplicated and
/// sorted (default datacenter `tag-style`: pve-guest-common src/PVE/GuestHelpers.pm
/// 349-378); the description without trailing whitespace, since it is kept as
/// comment lines and read back joined and trimmed (qemu-server src/PVE/QemuServer.pm
/// 1969-1975); both per proxmox-semantics.md §7.3. Everything else as written.
fn normalise_value(k: &str, v: &str) -> String {
    let base = k.trim_end_matches(|c: char| c.is_ascii_digit());
    match base {
        "net" => {
            let Some(mut ps) = PropString::parse(v, "model") else {
                return v.into();
            };
            let Some(nd) = NetDevice::parse(v) else {
                return v.into();
            };
            let mac = nd.mac.unwrap_or_else(|| {
                let r = random_hex(3).to_uppercase();
                format!("BC:24:11:{}:{}:{}", &r[..2], &r[2..4], &r[4..])
            });
            ps.0.retain(|key, _| {
                key != "model"
                    && key != "macaddr"
                    && !crate::proxmox::propstr::NET_MODELS.contains(&key.as_str())
            });
            let rest = print_prop(&ps, "");
            if rest.is_empty() {
                format!("{}={mac}", nd.model)
            } else {
                format!("{}={mac},{rest}", nd.model)
            }
        }
        "tags" => {
            let mut t: Vec<String> = split_tags(v).iter().map(|t| t.to_lowercase()).collect();
            t.sort();
            t.dedup();
            t.join(";")
        }
        "description" => v.trim_end().into(),
        _ => v.into(),
    }
}

/// Default key first without `key=`, the rest sorted.
fn print_prop(p: &PropString, default_key: &str) -> String {
    let mut parts = Vec::new();
    if let Some(d) = p.get(default_key) {
        parts.push(d.to_owned());
    }
    parts.extend(
        p.0.iter()
            .filter(|(k, _)| k.as_str() != default_key)
            .map(|(k, v)| format!("{k}={v}")),
    );
    parts.join(",")
}

/// Numbers come back as numbers, except where PVE keeps strings.
fn config_value(k: &str, v: &str) -> Value {
    match k {
        "cores" | "sockets" | "balloon" | "onboot" => v
            .parse::<u64>()
            .map(Value::from)
            .unwrap_or_else(|_| json!(v)),
        _ => json!(v),
    }
}

fn digest(config: &BTreeMap<String, String>) -> String {
    let text: String = config.iter().map(|(k, v)| format!("{k}: {v}\n")).collect();
    hex::encode(ring::digest::digest(
        &ring::digest::SHA1_FOR_LEGACY_USE_ONLY,
        text.as_bytes(),
    ))
}

fn status_current(vm: &LabVmState) -> Reply {
    let mem = vm
        .config
        .get("memory")
        .and_then(|m| {
            PropString::parse(m, "current")?
                .get("current")?
                .parse::<u64>()
                .ok()
        })
        .unwrap_or(512);
    let mut o = json!({"vmid": vm.vmid, "status": if vm.running {"running"} else {"stopped"},
        "qmpstatus": if vm.running {"running"} else {"stopped"}, "name": vm.config.get("name"),
        "maxmem": mem << 20, "cpus": vm.config.get("cores").and_then(|c| c.parse::<u64>().ok()).unwrap_or(1),
        "agent": u8::from(vm.config.get("agent").and_then(|a| PropString::parse(a, "enabled")?.flag("enabled")).unwrap_or(false)),
        "uptime": 0});
    if let Some(l) = vm.config.get("lock") {
        o["lock"] = json!(l);
    }
    if let Some(t) = vm.config.get("tags") {
        o["tags"] = json!(t);
    }
    Reply::data(o)
}

/// `agent/network-get-interfaces`: answered only by a guest agent that runs, i.e.
/// the VM has `agent` enabled (talos-pve sets it only with the qemu-guest-agent
/// extension) and Talos runs from disk (`LabEvent::NodeRunning`).
fn agent_interfaces(vm: &LabVmState) -> Reply {
    if !vm.running {
        return Reply::err(500, format!("VM {} not running", vm.vmid));
    }
    if !vm
        .config
        .get("agent")
        .and_then(|a| PropString::parse(a, "enabled")?.flag("enabled"))
        .unwrap_or(false)
    {
        return Reply::err(500, "No QEMU guest agent configured");
    }
    let Some((mgmt, kubelet)) = vm.guest else {
        return Reply::err(500, "QEMU guest agent is not running");
    };
    let mut ifaces = vec![
        json!({"name": "lo", "hardware-address": "00:00:00:00:00:00",
        "ip-addresses": [{"ip-address": "127.0.0.1", "ip-address-type": "ipv4", "prefix": 8}]}),
    ];
    for i in 0u8..32 {
        let Some(net) = vm
            .config
            .get(&format!("net{i}"))
            .and_then(|n| NetDevice::parse(n))
        else {
            continue;
        };
        let addr = match i {
            0 => Some(mgmt),
            1 if kubelet != mgmt => Some(kubelet),
            _ => None,
        };
        let addrs: Vec<Value> = addr
            .map(|a| vec![json!({"ip-address": a.to_string(), "ip-address-type": "ipv4"})])
            .unwrap_or_default();
        ifaces.push(json!({"name": format!("eth{i}"), "hardware-address": net.mac.unwrap_or_default().to_lowercase(), "ip-addresses": addrs}));
    }
    Reply::data(json!({ "result": ifaces }))
}

/// A guest reported running: its agent (if any) answers from now on.
pub(super) fn guest_running(
    st: &mut LabPveState,
    vmid: u32,
    mgmt: std::net::Ipv4Addr,
    kubelet: std::net::Ipv4Addr,
) {
    if let Some(vm) = st.vms.get_mut(&vmid)
        && vm.running
    {
        vm.guest = Some((mgmt, kubelet));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_deepest_acl_wins_and_propagate_only_counts_above_the_path() {
        let acl = |path: &str, privs: &[&str], propagate: bool| LabAcl {
            path: path.into(),
            privileges: privs.iter().map(|p| p.to_string()).collect(),
            propagate,
        };
        let acls = [
            acl("/", &["Sys.Audit", "Datastore.Audit"], true),
            acl("/storage/local", &["Datastore.AllocateTemplate"], true),
            acl("/vms", &["VM.Audit"], false),
        ];
        let keys = |p: &str| {
            effective_privileges(&acls, p)
                .into_keys()
                .collect::<Vec<_>>()
        };
        // A role on /storage/local hides the broader one on / for that path.
        assert_eq!(keys("/storage/local"), ["Datastore.AllocateTemplate"]);
        assert_eq!(keys("/storage/local-lvm"), ["Datastore.Audit", "Sys.Audit"]);
        // propagate 0: granted on /vms itself (value 0), not below; / shows through.
        assert_eq!(effective_privileges(&acls, "/vms")["VM.Audit"], 0);
        assert_eq!(keys("/vms/120"), ["Datastore.Audit", "Sys.Audit"]);
    }

    #[test]
    fn read_back_is_normalised_like_pve() {
        assert_eq!(
            normalise_value(
                "net0",
                "virtio=bc:24:11:00:16:20,tag=16,bridge=vmbr0,firewall=0"
            ),
            "virtio=BC:24:11:00:16:20,bridge=vmbr0,firewall=0,tag=16"
        );
        assert!(normalise_value("net1", "virtio,bridge=vmbr0").starts_with("virtio=BC:24:11:"));
        assert_eq!(
            normalise_value("tags", "talos;talos-pve;controlplane"),
            "controlplane;talos;talos-pve"
        );
        assert_eq!(
            normalise_value("ipconfig0", "ip=10.8.16.20/24,gw=10.8.16.1"),
            "ip=10.8.16.20/24,gw=10.8.16.1"
        );
    }
}
