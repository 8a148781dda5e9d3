//! The lab's Kubernetes API: once etcd is bootstrapped it serves the API over mTLS on
//! loopback, with a server certificate issued by the cluster CA from the nodes'
//! configs, and maps the control-plane endpoint (e.g. 10.8.16.20:6443) to itself in
//! the address book. Objects live in the fabric's etcd under
//! `/registry/<group>/<resource>/[<namespace>/]<name>`, so etcd snapshots capture and
//! restore the API state. Simulated controllers (`sim`) make the cluster converge.

mod api;
mod eviction;
mod openapi;
mod select;
mod sim;
mod store;
mod strategic;
mod table;
mod watch;

use std::collections::{BTreeMap, HashMap};
use std::convert::Infallible;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use serde_json::{Value, json};
use thiserror::Error;

use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::{Fabric, LabEvent, LabNodeInfo};

pub use api::POD_CIDR_FORBIDDEN;

#[derive(Debug, Error)]
pub enum LabKubeError {
    #[error(
        "lab Kubernetes API: no control-plane node reported a cluster CA key before etcd was bootstrapped"
    )]
    NoCa,
    #[error("lab Kubernetes API: cluster CA: {0}")]
    Ca(String),
    #[error("lab Kubernetes API: {0}")]
    Io(#[from] std::io::Error),
}

/// How fast the simulated cluster converges.
#[derive(Debug, Clone)]
pub struct KubeSimConfig {
    pub tick: Duration,
    /// NodeRunning → the kubelet registers its Node.
    pub node_register: Duration,
    /// A node booted again → its kubelet posts status (Ready, the new `bootID`).
    pub kubelet_start: Duration,
    /// A kubelet silent this long → its Node's `Ready` turns `Unknown`
    /// (kube-controller-manager `--node-monitor-grace-period`).
    pub node_monitor_grace: Duration,
    pub crd_established: Duration,
    /// Per-CRD overrides of `crd_established`.
    pub slow_crds: Vec<(String, Duration)>,
    /// The Cilium install Job's run time.
    pub job_run: Duration,
    /// Prerequisites met → a Deployment/DaemonSet is ready.
    pub rollout: Duration,
    /// Backing Deployment ready → its Service has a ready endpoint.
    pub webhook_endpoint: Duration,
    /// Endpoint ready → the webhook server really answers.
    pub webhook_grace: Duration,
    /// Labels every registering Node carries in addition to the kubelet's.
    pub node_labels: BTreeMap<String, String>,
    /// What `/version` and each Node's `status.nodeInfo` report (the profile's).
    pub kubernetes_version: String,
    pub talos_version: String,
    /// Each node's VM size (cores, MiB), reported as the Node's capacity.
    pub node_sizes: BTreeMap<String, (u32, u32)>,
}

impl KubeSimConfig {
    /// Roughly the pace of a real cluster.
    pub fn realistic() -> Self {
        Self {
            tick: Duration::from_millis(500),
            node_register: Duration::from_secs(10),
            // Talos starts the kubelet soon after apid; it posts Ready once the
            // runtime and the node's Cilium agent are up again.
            kubelet_start: Duration::from_secs(15),
            // The default since Kubernetes v1.32, so for 1.35/1.36 (kubernetes/kubernetes
            // `pkg/controller/nodelifecycle/config/v1alpha1/defaults.go`, PR #126287:
            // 40 s → 50 s).
            node_monitor_grace: Duration::from_secs(50),
            crd_established: Duration::from_secs(1),
            slow_crds: Vec::new(),
            job_run: Duration::from_secs(20),
            rollout: Duration::from_secs(30),
            webhook_endpoint: Duration::from_secs(5),
            webhook_grace: Duration::from_secs(5),
            node_labels: BTreeMap::new(),
            ..Self::fast()
        }
    }

    /// For tests: everything within tens of milliseconds.
    pub fn fast() -> Self {
        let ms = Duration::from_millis;
        Self {
            tick: ms(10),
            node_register: ms(30),
            kubelet_start: ms(20),
            node_monitor_grace: ms(80),
            crd_established: ms(20),
            slow_crds: Vec::new(),
            job_run: ms(40),
            rollout: ms(40),
            webhook_endpoint: ms(20),
            webhook_grace: ms(60),
            node_labels: BTreeMap::new(),
            kubernetes_version: crate::profile::default_k8s_version(),
            talos_version: crate::profile::default_talos_version(),
            node_sizes: BTreeMap::new(),
        }
    }
}

/// State shared by the request handlers and the simulated controllers.
#[derive(Debug)]
pub struct Lab {
    store: store::Store,
    cfg: KubeSimConfig,
    nodes: Mutex<Vec<LabNodeInfo>>,
    /// Hostnames whose kubelet posts no status (the machine went down, or its
    /// kubelet did not start), and since when.
    down: Mutex<HashMap<String, Instant>>,
    /// Hostnames in `down` whose kubelet started again (their node booted), and when.
    starting: Mutex<HashMap<String, Instant>>,
    timers: Mutex<HashMap<String, Instant>>,
    /// The earliest pending timer, so the controllers wake exactly when it is due.
    next_due: Mutex<Option<Instant>>,
    /// Requests served since start (a watch counts once; benchmarks).
    requests: std::sync::atomic::AtomicU64,
    /// Machine events not applied yet. Drained before the controllers run, not only
    /// by the listener task: an event emitted before a reply the client acts on (a
    /// Reset's power-off) takes effect before that action (deleting the Node).
    pending: Mutex<tokio::sync::broadcast::Receiver<LabEvent>>,
}

impl Lab {
    fn hostname(&self, vmid: u32) -> Option<String> {
        self.nodes
            .lock()
            .expect("nodes lock")
            .iter()
            .find(|n| n.vmid == vmid)
            .map(|n| n.hostname.clone())
    }

    /// The node's kubelet stops posting now (kept: the first silence counts).
    fn went_silent(&self, name: &str) {
        self.down
            .lock()
            .expect("down lock")
            .entry(name.to_owned())
            .or_insert_with(Instant::now);
        self.starting.lock().expect("starting lock").remove(name);
    }

    /// Apply every machine event emitted so far, in order.
    fn catch_up(&self) {
        let mut rx = self.pending.lock().expect("pending lock");
        loop {
            let ev = match rx.try_recv() {
                Ok(ev) => ev,
                Err(tokio::sync::broadcast::error::TryRecvError::Lagged(_)) => continue,
                Err(_) => return,
            };
            match ev {
                LabEvent::NodeRunning(info) => {
                    // The kubelet starts with the node (unless it is stuck) and posts
                    // `kubelet_start` later; until then its Node shows what it did.
                    let silent = self
                        .down
                        .lock()
                        .expect("down lock")
                        .contains_key(&info.hostname);
                    if silent && !info.kubelet_stuck {
                        self.starting
                            .lock()
                            .expect("starting lock")
                            .insert(info.hostname.clone(), Instant::now());
                    } else if info.kubelet_stuck {
                        self.went_silent(&info.hostname);
                    }
                    sim::containers_started(self, &info.hostname);
                    let mut n = self.nodes.lock().expect("nodes lock");
                    n.retain(|x| x.hostname != info.hostname);
                    n.push(info);
                    self.store.nudge();
                }
                LabEvent::VmStopped { vmid } | LabEvent::VmDestroyed { vmid } => {
                    if let Some(name) = self.hostname(vmid) {
                        self.went_silent(&name);
                    }
                }
                LabEvent::NodeGoingDown { vmid, drains } => {
                    if let Some(name) = self.hostname(vmid) {
                        self.went_silent(&name);
                        sim::going_down(self, &name, drains);
                    }
                }
                _ => {}
            }
        }
    }
}

/// Handle of the running lab API; dropping it stops the server.
#[derive(Debug)]
pub struct LabKube {
    lab: Arc<Lab>,
    addr: tokio::sync::watch::Receiver<Option<SocketAddr>>,
    tasks: Arc<Mutex<Vec<JoinHandle<()>>>>,
}

impl Drop for LabKube {
    fn drop(&mut self) {
        for t in self.tasks.lock().expect("tasks lock").drain(..) {
            t.abort();
        }
    }
}

/// The cluster CA key as Talos writes it (SEC1 `EC PRIVATE KEY` for Kubernetes),
/// decoded by `pki`, which wraps it into the PKCS#8 that rcgen on ring loads.
fn ca_key(pem: &str) -> Result<rcgen::KeyPair, LabKubeError> {
    crate::pki::PrivateKey::from_pem(pem, "Kubernetes CA key")
        .and_then(|k| k.key_pair())
        .map_err(|e| LabKubeError::Ca(e.to_string()))
}

fn server_tls(
    ca_pem: &str,
    ca_key_pem: &str,
    ips: &[IpAddr],
) -> Result<rustls::ServerConfig, LabKubeError> {
    let ca = |e: rcgen::Error| LabKubeError::Ca(e.to_string());
    let issuer = rcgen::Issuer::from_ca_cert_pem(ca_pem, ca_key(ca_key_pem)?).map_err(ca)?;
    let mut params = rcgen::CertificateParams::new(vec![
        "kubernetes".to_owned(),
        "kubernetes.default".to_owned(),
        "kubernetes.default.svc".to_owned(),
        "localhost".to_owned(),
    ])
    .map_err(ca)?;
    params
        .subject_alt_names
        .extend(ips.iter().map(|ip| rcgen::SanType::IpAddress(*ip)));
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "kube-apiserver");
    params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now - time::Duration::hours(1);
    params.not_after = now + time::Duration::days(365);
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(ca)?;
    let cert = params.signed_by(&key, &issuer).map_err(ca)?;
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots
            .add(c.map_err(|e| LabKubeError::Ca(e.to_string()))?)
            .map_err(|e| LabKubeError::Ca(e.to_string()))?;
    }
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots),
        crate::tls::provider(),
    )
    .build()
    .map_err(|e| LabKubeError::Ca(e.to_string()))?;
    let key_der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
    let mut cfg = rustls::ServerConfig::builder_with_provider(crate::tls::provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| LabKubeError::Ca(e.to_string()))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(vec![cert.der().clone()], key_der)
        .map_err(|e| LabKubeError::Ca(e.to_string()))?;
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(cfg)
}

async fn respond(
    lab: Arc<Lab>,
    req: hyper::Request<hyper::body::Incoming>,
) -> hyper::Response<axum::body::Body> {
    lab.requests
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let (parts, body) = req.into_parts();
    let bytes = axum::body::to_bytes(axum::body::Body::new(body), 16 << 20)
        .await
        .unwrap_or_default();
    let header = |h: hyper::header::HeaderName| {
        parts
            .headers
            .get(h)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
    };
    let r = api::handle(
        &lab,
        &api::Request {
            method: parts.method.as_str(),
            path: parts.uri.path(),
            query: parts.uri.query().unwrap_or_default(),
            content_type: header(hyper::header::CONTENT_TYPE),
            accept: header(hyper::header::ACCEPT),
            body: &bytes,
        },
    );
    let body = match r.watch {
        Some(w) => watch::stream(lab, *w),
        None => axum::body::Body::from(serde_json::to_vec(&r.body).expect("JSON values serialize")),
    };
    hyper::Response::builder()
        .status(r.code)
        .header(hyper::header::CONTENT_TYPE, "application/json")
        .body(body)
        .expect("valid response parts")
}

fn endpoint_port(endpoint: &str) -> u16 {
    reqwest::Url::parse(endpoint)
        .ok()
        .and_then(|u| u.port())
        .unwrap_or(6443)
}

impl LabKube {
    /// Start listening to the fabric's events; the API comes up on `EtcdBootstrapped`.
    pub fn spawn(fabric: &Fabric, cfg: KubeSimConfig) -> Self {
        let lab = Arc::new(Lab {
            store: store::Store::new(fabric.etcd.clone()),
            cfg,
            nodes: Mutex::default(),
            down: Mutex::default(),
            starting: Mutex::default(),
            timers: Mutex::default(),
            next_due: Mutex::default(),
            requests: Default::default(),
            pending: Mutex::new(fabric.events.subscribe()),
        });
        let (tx, addr) = tokio::sync::watch::channel(None);
        let tasks: Arc<Mutex<Vec<JoinHandle<()>>>> = Arc::default();
        let mut events = fabric.events.subscribe();
        let (lab2, tasks2, book) = (lab.clone(), tasks.clone(), fabric.addresses.clone());
        let listener = tokio::spawn(async move {
            loop {
                let ev = match events.recv().await {
                    Ok(ev) => ev,
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                    Err(_) => return,
                };
                lab2.catch_up();
                match ev {
                    LabEvent::EtcdBootstrapped { endpoint, .. } if tx.borrow().is_none() => {
                        match serve(lab2.clone(), endpoint, &book, &tasks2).await {
                            Ok(a) => {
                                let _ = tx.send(Some(a));
                            }
                            Err(e) => {
                                tracing::error!(error = %e, "lab Kubernetes API did not start")
                            }
                        }
                    }
                    // Recovered from a snapshot while serving: the history is void.
                    LabEvent::EtcdBootstrapped { .. } => lab2.store.forget_history(),
                    _ => {}
                }
            }
        });
        tasks.lock().expect("tasks lock").push(listener);
        Self { lab, addr, tasks }
    }

    /// The loopback address once the API serves (`None` after `timeout`).
    pub async fn serving(&self, timeout: Duration) -> Option<SocketAddr> {
        let mut rx = self.addr.clone();
        tokio::time::timeout(timeout, rx.wait_for(Option::is_some))
            .await
            .ok()?
            .ok()
            .and_then(|a| *a)
    }

    /// API requests served since start (a watch counts once).
    pub fn requests(&self) -> u64 {
        self.lab.requests.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Object writes that changed something since start (API and controllers).
    pub fn writes(&self) -> u64 {
        self.lab.store.writes()
    }

    /// Every stored object, in key order.
    pub fn objects(&self) -> Vec<Value> {
        self.lab.store.list("/registry/")
    }

    /// Write every object as `<dir>/<group>/<resource>/[<ns>/]<name>.yaml`; returns the count.
    pub fn dump(&self, dir: &Path) -> Result<usize, LabKubeError> {
        let all = self.lab.store.etcd.list("/registry/");
        for (k, v) in &all {
            let p = dir.join(format!("{}.yaml", k.trim_start_matches("/registry/")));
            if let Some(parent) = p.parent() {
                std::fs::create_dir_all(parent)?;
            }
            let yaml =
                serde_saphyr::to_string(v).map_err(|e| std::io::Error::other(e.to_string()))?;
            std::fs::write(p, yaml)?;
        }
        Ok(all.len())
    }
}

async fn serve(
    lab: Arc<Lab>,
    endpoint: Ipv4Addr,
    book: &crate::net::AddressBook,
    tasks: &Mutex<Vec<JoinHandle<()>>>,
) -> Result<SocketAddr, LabKubeError> {
    crate::tls::install_provider();
    let nodes = lab.nodes.lock().expect("nodes lock").clone();
    let ca_node = nodes
        .iter()
        .find(|n| !n.kubernetes_ca_key.is_empty())
        .ok_or(LabKubeError::NoCa)?;
    let mut ips: Vec<IpAddr> = vec![IpAddr::V4(endpoint), IpAddr::V4(Ipv4Addr::LOCALHOST)];
    ips.extend(
        nodes
            .iter()
            .flat_map(|n| [IpAddr::V4(n.management), IpAddr::V4(n.internal_ip)]),
    );
    let tls = server_tls(&ca_node.kubernetes_ca_crt, &ca_node.kubernetes_ca_key, &ips)?;
    let port = endpoint_port(&ca_node.endpoint);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let local = listener.local_addr()?;
    for ns in ["default", "kube-system", "kube-public", "kube-node-lease"] {
        let k = store::key("", "namespaces", None, ns);
        if lab.store.get(&k).is_none() {
            lab.store.put(
                &k,
                json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}),
            );
        }
    }
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls));
    let lab_srv = lab.clone();
    let server = tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            // kube-apiserver is Go: Nagle off by default (Go's
            // `src/net/tcpsock_posix.go` newTCPConn sets TCP_NODELAY).
            let _ = tcp.set_nodelay(true);
            let (acceptor, lab) = (acceptor.clone(), lab_srv.clone());
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let svc = hyper::service::service_fn(move |req| {
                    let lab = lab.clone();
                    async move { Ok::<_, Infallible>(respond(lab, req).await) }
                });
                let _ = hyper_util::server::conn::auto::Builder::new(
                    hyper_util::rt::TokioExecutor::new(),
                )
                .serve_connection(hyper_util::rt::TokioIo::new(tls), svc)
                .await;
            });
        }
    });
    // Controllers step on every change and when a timer is due (at the latest each
    // tick), like informer-driven controllers; 1 ms apart at least, so a controller
    // that rewrites an object cannot spin.
    let controllers = tokio::spawn(async move {
        loop {
            sim::step(&lab);
            let due = lab.next_due.lock().expect("next due lock").take();
            let tick = Instant::now() + lab.cfg.tick;
            let until = due.map_or(tick, |d| d.min(tick));
            tokio::select! {
                () = tokio::time::sleep_until(until) => {}
                () = lab.store.changed() => {}
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    });
    tasks
        .lock()
        .expect("tasks lock")
        .extend([server, controllers]);
    book.map(SocketAddr::new(IpAddr::V4(endpoint), port), local);
    tracing::info!(%endpoint, %local, "lab Kubernetes API serving");
    Ok(local)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sec1_ca_key_loads() {
        let k = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let pkcs8 = k.serialize_der();
        // ring's PKCS#8 ends with the SEC1 ECPrivateKey in an OCTET STRING.
        let sec1 = &pkcs8[pkcs8.len() - 109..];
        assert_eq!(&pkcs8[pkcs8.len() - 111..pkcs8.len() - 109], &[0x04, 109]);
        let pem = crate::pki::pem::encode("EC PRIVATE KEY", sec1);
        assert_eq!(ca_key(&pem).unwrap().public_key_raw(), k.public_key_raw());
    }
}
