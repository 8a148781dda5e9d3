//! Request handling of the lab PVE: authentication, routing, validation and the
//! state changes each endpoint makes. Transport-free: `server` feeds it. This
//! module routes; each resource family's endpoints live in a submodule.

mod access;
mod cluster;
mod guests;
mod storage;
mod tasks;

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::schema::{self, Param};
use super::{Fault, FaultEffect, LabProxmoxConfig, LabPveState, LabVmState};
use crate::lab::Fabric;
use guests::{
    agent_interfaces, config_value, create_stub, digest, guest_running, pending_list,
    status_current,
};

pub(super) use cluster::initial_state;
pub(super) use guests::lab_vm;
pub(crate) use storage::free_volumes;

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
    /// Machine events not applied yet: drained whenever the lab settles, so a guest
    /// whose Talos reported running answers its agent from that moment on, however
    /// late the listener task gets scheduled.
    pending: Mutex<tokio::sync::broadcast::Receiver<crate::lab::LabEvent>>,
}

fn lock_msg(vmid: u32) -> String {
    format!("can't lock file '/var/lock/qemu-server/lock-{vmid}.conf' - got timeout")
}

fn random_hex(bytes: usize) -> String {
    let mut b = vec![0u8; bytes];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut b).expect("system RNG");
    hex::encode(b)
}

impl Lab {
    pub fn new(fabric: Fabric, config: LabProxmoxConfig, state: LabPveState) -> Lab {
        Lab {
            clock_base: state.clock_ms,
            state: Mutex::new(state),
            config: Mutex::new(config),
            requests: Mutex::default(),
            factory: Mutex::default(),
            tickets: Mutex::default(),
            pending: Mutex::new(fabric.events.subscribe()),
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
    /// Apply every machine event emitted so far, in order.
    pub fn catch_up(&self) {
        let mut rx = self.pending.lock().expect("lab pending");
        loop {
            match rx.try_recv() {
                Ok(crate::lab::LabEvent::NodeRunning(i)) => guest_running(
                    &mut self.state.lock().expect("lab state"),
                    i.vmid,
                    i.management,
                    i.internal_ip,
                ),
                Ok(_) | Err(tokio::sync::broadcast::error::TryRecvError::Lagged(_)) => {}
                Err(_) => return,
            }
        }
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

    /// `GET /image/{schematic}/{version}/nocloud-amd64.iso`: the bytes, for a
    /// schematic the factory has seen; `None` otherwise (recorded either way).
    pub fn factory_image(&self, path: &str) -> Option<Vec<u8>> {
        let mut parts = path.strip_prefix("/image/")?.split('/');
        let (id, version) = (parts.next()?, parts.next()?);
        let known = self
            .state
            .lock()
            .expect("lab state")
            .schematics
            .contains(id);
        self.factory
            .lock()
            .expect("lab requests")
            .push(RecordedRequest {
                method: "GET".into(),
                path: path.into(),
                params: Vec::new(),
                status: if known { 200 } else { 404 },
            });
        known.then(|| factory_iso(id, version))
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
            ("POST", ["nodes", _, "qemu", _, "status", "reboot"]) => &[schema::REBOOT],
            ("GET", ["nodes", _, "qemu", _, "pending"]) => &[schema::NONE],
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
                // `current=1`: the running config; by default pending values are
                // merged in (pve-guest-common `AbstractConfig.pm` 229-252).
                let current = params.get("current").is_some_and(|c| c == "1");
                let mut merged = vm.config.clone();
                if !current {
                    let mut with = vm.clone();
                    with.apply_pending();
                    merged = with.config;
                }
                let mut c: serde_json::Map<String, Value> = merged
                    .iter()
                    .map(|(k, v)| (k.clone(), config_value(k, v)))
                    .collect();
                c.insert("digest".into(), json!(digest(&vm.config)));
                Reply::data(Value::Object(c))
            }),
            ("PUT", ["nodes", n, "qemu", v, "config"]) => self.update(n, vmid_of(v), params),
            ("GET", ["nodes", n, "qemu", v, "pending"]) => self.with_vm(n, v, pending_list),
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
}

/// The lab factory's ISO for a schematic and version: small, and different per
/// schematic and version, so a checksum of the wrong image does not match.
pub(super) fn factory_iso(schematic: &str, version: &str) -> Vec<u8> {
    format!("talos-pve lab ISO: schematic {schematic}, Talos {version}\n").into_bytes()
}

fn rustls_pemfile_der(pem: &str) -> Option<Vec<u8>> {
    let b64: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
    base64::Engine::decode(&base64::engine::general_purpose::STANDARD, b64).ok()
}

pub(super) fn cert_der(pem: &str) -> Option<Vec<u8>> {
    rustls_pemfile_der(pem)
}
