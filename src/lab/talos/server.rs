//! The wire side of a lab Talos node: TLS on its loopback listener (which mode
//! depends on the node's phase at accept time), HTTP/2, and the MachineService
//! methods talos-pve uses, dispatched by path through tonic's generic server
//! plumbing with the hand-written messages.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Weak};

use hyper_util::rt::{TokioExecutor, TokioIo};
use ring::digest::{SHA256, digest};
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use rustls::server::WebPkiClientVerifier;
use tokio::net::TcpListener;
use tokio_stream::Stream;
use tonic::body::Body;
use tonic::codegen::http;
use tonic::{Request, Response, Status, Streaming};
use tonic_prost::ProstCodec;

use super::certs::{self, ServerIdentity};
use super::{Phase, Shared, apply, lock, machine};
use crate::lab::LabEvent;
use crate::talos::api::messages::*;
use crate::talos::api::snapshot::RECOVER_CHUNK;

/// A server stream's frames.
pub(super) type Frames<R> = Pin<Box<dyn Stream<Item = Result<R, Status>> + Send>>;
type DataStream = Frames<Data>;

/// A rustls server config speaking h2, with or without client certificates.
fn server_config(
    id: ServerIdentity,
    verifier: Option<Arc<dyn rustls::server::danger::ClientCertVerifier>>,
) -> Result<Arc<rustls::ServerConfig>, String> {
    let builder = rustls::ServerConfig::builder_with_provider(crate::tls::provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?;
    let b = match verifier {
        Some(v) => builder.with_client_cert_verifier(v),
        None => builder.with_no_client_auth(),
    };
    let mut cfg = b
        .with_single_cert(id.chain, id.key)
        .map_err(|e| e.to_string())?;
    cfg.alpn_protocols = vec![b"h2".to_vec()];
    Ok(Arc::new(cfg))
}

/// Server-only TLS: no client certificate is asked for.
pub(super) fn maintenance_tls(id: ServerIdentity) -> Result<Arc<rustls::ServerConfig>, String> {
    server_config(id, None)
}

/// Mutual TLS: the client must present a certificate signed by the OS CA.
pub(super) fn mutual_tls(
    id: ServerIdentity,
    os_ca_pem: &str,
) -> Result<Arc<rustls::ServerConfig>, String> {
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(os_ca_pem.as_bytes()) {
        roots
            .add(c.map_err(|e| e.to_string())?)
            .map_err(|e| e.to_string())?;
    }
    let v = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), crate::tls::provider())
        .build()
        .map_err(|e| e.to_string())?;
    server_config(id, Some(Arc::new(ClientAuthOnly(v))))
}

/// apid's extra check after chain verification: every non-CA certificate of the
/// client's chain must carry exactly the ClientAuth extended key usage (talos v1.13.9
/// `internal/app/apid/service.go` `verifyExtKeyUsage`; Go lists only the usages it
/// knows, so unknown OIDs do not count).
#[derive(Debug)]
struct ClientAuthOnly(Arc<dyn rustls::server::danger::ClientCertVerifier>);

fn exactly_client_auth(der: &[u8]) -> Result<(), String> {
    let (_, x) = x509_parser::parse_x509_certificate(der).map_err(|e| e.to_string())?;
    if x.is_ca() {
        return Ok(());
    }
    let only = x.extended_key_usage().ok().flatten().is_some_and(|e| {
        let u = e.value;
        u.client_auth
            && !(u.any
                || u.server_auth
                || u.code_signing
                || u.email_protection
                || u.time_stamping
                || u.ocsp_signing)
    });
    if only {
        Ok(())
    } else {
        Err(format!(
            "certificate {:?} is missing the client auth extended key usage",
            x.subject().to_string()
        ))
    }
}

impl rustls::server::danger::ClientCertVerifier for ClientAuthOnly {
    fn root_hint_subjects(&self) -> &[rustls::DistinguishedName] {
        self.0.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::server::danger::ClientCertVerified, rustls::Error> {
        let ok = self.0.verify_client_cert(end_entity, intermediates, now)?;
        for c in std::iter::once(end_entity).chain(intermediates) {
            exactly_client_auth(c).map_err(|e| {
                rustls::Error::InvalidCertificate(rustls::CertificateError::Other(
                    rustls::OtherError(Arc::new(std::io::Error::other(e))),
                ))
            })?;
        }
        Ok(ok)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

/// Who is calling, as far as the node can tell.
#[derive(Clone)]
pub(super) struct Peer {
    /// Talos roles (`os:admin`, …) from the client certificate; empty in maintenance.
    pub(super) roles: Vec<String>,
    pub(super) maintenance: bool,
}

pub(super) async fn accept_loop(shared: Weak<Shared>, vmid: u32, listener: TcpListener) {
    loop {
        let tcp = match listener.accept().await {
            Ok((tcp, _)) => tcp,
            Err(_) => {
                // Out of file descriptors or similar: back off instead of spinning.
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        let Some(s) = shared.upgrade() else { return };
        // machined is Go: its TCP connections have Nagle off (Go's
        // `src/net/tcpsock_posix.go` newTCPConn sets TCP_NODELAY on every
        // connection). With it on, small gRPC replies wait for the client's
        // delayed ACK (~40 ms), a delay real nodes do not have.
        let _ = tcp.set_nodelay(true);
        let tls = {
            let nodes = lock(&s.nodes);
            match nodes.get(&vmid).map(|n| (n.state.phase, n)) {
                Some((Phase::Maintenance, n)) => Some((n.maintenance_tls.clone(), true)),
                Some((Phase::Running, n)) => n.mutual_tls.clone().map(|t| (t, false)),
                // Booting, installing or stopped: nobody answers.
                _ => None,
            }
        };
        let Some((tls, maintenance)) = tls else {
            drop(tcp);
            continue;
        };
        tokio::spawn(async move {
            let Ok(stream) = tokio_rustls::TlsAcceptor::from(tls).accept(tcp).await else {
                return;
            };
            let roles = stream
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|c| c.first())
                .map(certs::roles)
                .unwrap_or_default();
            let peer = Peer { roles, maintenance };
            let svc = hyper::service::service_fn(move |req| {
                let ctx = Ctx {
                    shared: s.clone(),
                    vmid,
                    peer: peer.clone(),
                };
                async move { Ok::<_, Infallible>(dispatch(ctx, req).await) }
            });
            let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
}

#[derive(Clone)]
pub(super) struct Ctx {
    pub(super) shared: Arc<Shared>,
    pub(super) vmid: u32,
    pub(super) peer: Peer,
}

pub(super) async fn unary<Q, R, F, Fut>(
    req: http::Request<hyper::body::Incoming>,
    f: F,
) -> http::Response<Body>
where
    Q: prost::Message + Default + Send + 'static,
    R: prost::Message + Send + 'static,
    F: Fn(Request<Q>) -> Fut + Clone + Send + 'static,
    Fut: Future<Output = Result<Response<R>, Status>> + Send + 'static,
{
    tonic::server::Grpc::new(ProstCodec::<R, Q>::default())
        .unary(tower::service_fn(f), req)
        .await
}

pub(super) async fn server_stream<Q, R, F, Fut>(
    req: http::Request<hyper::body::Incoming>,
    f: F,
) -> http::Response<Body>
where
    Q: prost::Message + Default + Send + 'static,
    R: prost::Message + Send + 'static,
    F: Fn(Request<Q>) -> Fut + Clone + Send + 'static,
    Fut: Future<Output = Result<Response<Frames<R>>, Status>> + Send + 'static,
{
    tonic::server::Grpc::new(ProstCodec::<R, Q>::default())
        .server_streaming(tower::service_fn(f), req)
        .await
}

async fn dispatch(ctx: Ctx, req: http::Request<hyper::body::Incoming>) -> http::Response<Body> {
    ctx.shared
        .requests
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let path = req.uri().path().to_owned();
    let c = ctx.clone();
    match path.as_str() {
        "/machine.MachineService/Version" => {
            unary(req, move |r: Request<Empty>| {
                std::future::ready(c.version(r.metadata()))
            })
            .await
        }
        "/machine.MachineService/ServiceList" => {
            unary(req, move |_: Request<Empty>| {
                std::future::ready(c.service_list())
            })
            .await
        }
        "/machine.MachineService/ApplyConfiguration" => {
            unary(req, move |r: Request<ApplyConfigurationRequest>| {
                std::future::ready(c.apply(r.into_inner()))
            })
            .await
        }
        "/machine.MachineService/Bootstrap" => {
            unary(req, move |r: Request<BootstrapRequest>| {
                std::future::ready(c.bootstrap(r.into_inner()))
            })
            .await
        }
        "/machine.MachineService/EtcdMemberList" => {
            unary(req, move |_: Request<EtcdMemberListRequest>| {
                std::future::ready(c.member_list())
            })
            .await
        }
        "/machine.MachineService/EtcdRemoveMemberByID" => {
            unary(req, move |r: Request<EtcdRemoveMemberByIdRequest>| {
                std::future::ready(c.remove_member(r.into_inner().member_id))
            })
            .await
        }
        "/machine.MachineService/Reset" => {
            unary(req, move |r: Request<ResetRequest>| {
                std::future::ready(c.reset(r.into_inner()))
            })
            .await
        }
        "/cosi.resource.State/List" => {
            server_stream(req, move |r: Request<CosiListRequest>| {
                std::future::ready(c.cosi_list(r.into_inner()))
            })
            .await
        }
        "/machine.MachineService/Kubeconfig" => {
            server_stream(req, move |_: Request<Empty>| {
                std::future::ready(c.kubeconfig())
            })
            .await
        }
        "/machine.MachineService/EtcdSnapshot" => {
            server_stream(req, move |_: Request<EtcdSnapshotRequest>| {
                std::future::ready(c.snapshot())
            })
            .await
        }
        "/machine.MachineService/EtcdRecover" => {
            let svc = tower::service_fn(move |r: Request<Streaming<Data>>| {
                let c = c.clone();
                async move { c.recover(r.into_inner()).await }
            });
            tonic::server::Grpc::new(ProstCodec::<EtcdRecoverResponse, Data>::default())
                .client_streaming(svc, req)
                .await
        }
        other => match super::upgrade::dispatch(ctx, other, req).await {
            Some(resp) => resp,
            None => {
                Status::unimplemented(format!("lab Talos does not implement {other}")).into_http()
            }
        },
    }
}

pub(super) const ADMIN: &[&str] = &["os:admin"];
/// `constants.ConfigTryTimeout` (talos v1.13.9 `pkg/machinery/constants/constants.go` L473).
const TRY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);
const READ: &[&str] = &["os:admin", "os:operator", "os:reader", "os:etcd:backup"];
const BACKUP: &[&str] = &["os:admin", "os:operator", "os:etcd:backup"];

pub(super) fn respond<T>(m: T) -> Result<Response<T>, Status> {
    Ok(Response::new(m))
}

pub(super) fn stream(chunks: Vec<Result<Data, Status>>) -> Result<Response<DataStream>, Status> {
    Ok(Response::new(Box::pin(tokio_stream::iter(chunks))))
}

pub(super) fn md(hostname: &str, error: Option<String>) -> Option<Metadata> {
    Some(Metadata {
        hostname: hostname.to_owned(),
        error: error.unwrap_or_default(),
        status: None,
    })
}

impl Ctx {
    pub(super) fn allow(&self, rpc: &str, roles: &[&str]) -> Result<(), Status> {
        if self.peer.maintenance {
            return Err(Status::permission_denied(format!(
                "{rpc}: not authorized in maintenance mode"
            )));
        }
        if self.peer.roles.iter().any(|r| roles.contains(&r.as_str())) {
            return Ok(());
        }
        lock(&self.shared.counters).denied += 1;
        Err(Status::permission_denied(format!(
            "not authorized: {rpc} needs one of {roles:?}, the client certificate has {:?}",
            self.peer.roles
        )))
    }

    fn control_plane(&self, what: &str) -> Result<(), Status> {
        let nodes = lock(&self.shared.nodes);
        match nodes.get(&self.vmid) {
            Some(n) if n.is_control_plane() => Ok(()),
            _ => Err(Status::unimplemented(format!(
                "{what} is only available on control plane nodes"
            ))),
        }
    }

    /// `Version`, answering for other nodes when asked through `nodes` metadata.
    fn version(
        &self,
        meta: &tonic::metadata::MetadataMap,
    ) -> Result<Response<VersionResponse>, Status> {
        if !self.peer.maintenance {
            self.allow("Version", READ)?;
        } else if self.shared.cfg.talos_version.starts_with("v1.12.") {
            // Before 1.13 the maintenance service had no Version.
            return Err(Status::unimplemented(
                "API is not implemented in maintenance mode",
            ));
        }
        // In maintenance routing is off: `node`/`nodes` metadata is ignored and the node
        // answers itself (talos v1.13.9 `internal/app/apid/pkg/director/director.go`,
        // `NodeRoutingDisabled`; 1.12's maintenance server has no director at all).
        let targets: Vec<String> = if self.peer.maintenance {
            Vec::new()
        } else {
            meta.get_all("nodes")
                .iter()
                .chain(meta.get_all("node").iter())
                .filter_map(|v| v.to_str().ok().map(str::to_owned))
                .collect()
        };
        let nodes = lock(&self.shared.nodes);
        // Each node reports the release it booted (talos-day2.md §5).
        let tag_of = |n: Option<&super::Node>| {
            n.map_or_else(
                || self.shared.cfg.talos_version.clone(),
                |n| super::running_version(&self.shared, n),
            )
        };
        let version = |hostname: &str, tag: String, error: Option<String>| Version {
            metadata: md(hostname, error.clone()),
            version: error.is_none().then(|| VersionInfo {
                tag,
                os: "Talos (lab)".into(),
                arch: "amd64".into(),
                ..Default::default()
            }),
            platform: Some(PlatformInfo {
                name: "nocloud".into(),
                mode: "cloud".into(),
            }),
            features: None,
        };
        if targets.is_empty() {
            return respond(VersionResponse {
                messages: vec![version("", tag_of(nodes.get(&self.vmid)), None)],
            });
        }
        let messages = targets
            .iter()
            .map(|t| {
                let found = nodes.values().find(|n| {
                    n.hostname() == *t || n.addresses().iter().any(|a| a.to_string() == *t)
                });
                match found {
                    Some(n) if n.state.phase == Phase::Running => {
                        version(&n.hostname(), tag_of(Some(n)), None)
                    }
                    Some(n) => version(
                        &n.hostname(),
                        String::new(),
                        Some(format!(
                            "rpc error: code = Unavailable desc = node is {:?}",
                            n.state.phase
                        )),
                    ),
                    None => version(
                        t,
                        String::new(),
                        Some(format!(
                            "rpc error: code = Unavailable desc = no node {t} in this cluster"
                        )),
                    ),
                }
            })
            .collect();
        respond(VersionResponse { messages })
    }

    fn service_list(&self) -> Result<Response<ServiceListResponse>, Status> {
        self.allow("ServiceList", READ)?;
        let nodes = lock(&self.shared.nodes);
        let n = nodes
            .get(&self.vmid)
            .ok_or_else(|| Status::unavailable("node gone"))?;
        let svc = |id: &str, state: &str| ServiceInfo {
            id: id.into(),
            state: state.into(),
            events: None,
            health: Some(ServiceHealth {
                healthy: state == "Running",
                ..Default::default()
            }),
        };
        let kubelet = if n.state.kubelet_stuck {
            "Waiting"
        } else {
            "Running"
        };
        let mut services = vec![svc("apid", "Running"), svc("kubelet", kubelet)];
        if n.is_control_plane() {
            // A member's etcd runs again only `etcd_ready` after a boot: until then
            // the service is not Running, though the member stays listed.
            let mut etcd = svc(
                "etcd",
                match (
                    &n.state.etcd_failed,
                    n.state.etcd_member && n.state.etcd_ready,
                ) {
                    (Some(_), _) => "Failed",
                    (None, true) => "Running",
                    (None, false) => "Preparing",
                },
            );
            if let Some(why) = &n.state.etcd_failed {
                etcd.events = Some(ServiceEvents {
                    events: vec![ServiceEvent {
                        msg: format!("Failed to run pre stage: {why}"),
                        state: "Failed".into(),
                        ts: None,
                    }],
                });
            }
            services.push(etcd);
        }
        respond(ServiceListResponse {
            messages: vec![ServiceList {
                metadata: None,
                services,
            }],
        })
    }

    fn apply(
        &self,
        q: ApplyConfigurationRequest,
    ) -> Result<Response<ApplyConfigurationResponse>, Status> {
        let mode = ApplyMode::try_from(q.mode).unwrap_or(ApplyMode::Reboot);
        let text = String::from_utf8(q.data.clone())
            .map_err(|_| Status::invalid_argument("failed to parse config: not UTF-8 text"))?;
        let hash = hex::encode(digest(&SHA256, &q.data));
        let mut nodes = lock(&self.shared.nodes);
        let n = nodes
            .get_mut(&self.vmid)
            .ok_or_else(|| Status::unavailable("node gone"))?;
        // Checked before the caller's role (v1alpha1_server.go @v1.13.9 L188-190).
        if n.state.apply_rebooting {
            return Err(Status::failed_precondition(
                "configuration was already applied and node is rebooting, cannot apply more configuration changes until next reboot",
            ));
        }
        if !self.peer.maintenance {
            self.allow("ApplyConfiguration", ADMIN)?;
            if mode != ApplyMode::Try {
                // Any other apply cancels a pending TRY rollback timer (L202-204).
                n.state.try_serial += 1;
            }
        }
        let reply = |details: String, mode: ApplyMode| {
            respond(ApplyConfigurationResponse {
                messages: vec![ApplyConfiguration {
                    metadata: None,
                    warnings: vec![],
                    mode: mode as i32,
                    mode_details: details,
                }],
            })
        };
        // Maintenance differs by minor (talos.md §12): 1.12's maintenance service takes
        // REBOOT/AUTO/TRY only; 1.13's apid takes every mode, applies in place
        // (REBOOT/AUTO answer NO_REBOOT) and refuses the unauthenticated client once a
        // complete config is there (talos v1.13.9 `v1alpha1_server.go` ApplyConfiguration).
        let v1_12 = self.shared.cfg.talos_version.starts_with("v1.12.");
        if self.peer.maintenance {
            if v1_12 && !matches!(mode, ApplyMode::Reboot | ApplyMode::Auto | ApplyMode::Try) {
                return Err(Status::unimplemented(format!(
                    "apply configuration --mode='{}' is not supported in maintenance mode",
                    format!("{mode:?}").to_lowercase().replace('_', "-")
                )));
            }
            if !v1_12 && n.state.config.is_some() {
                return Err(Status::permission_denied(
                    "the node already has a configuration; use an authenticated client",
                ));
            }
            if v1_12 && q.dry_run {
                return reply(
                    "Dry run summary:\nNode is running in maintenance mode and does not have a config yet.".into(),
                    mode,
                );
            }
        }
        if !self.peer.maintenance && !text.lines().any(|l| l.trim_end() == "version: v1alpha1") {
            return Err(Status::invalid_argument(
                "the applied machine configuration doesn't contain v1alpha1 config, did you mean to patch the machine config instead?",
            ));
        }
        // The release this node runs decides what it accepts (an upgraded node more).
        let release = super::running_version(&self.shared, n);
        let parsed = machine::parse_on(&text, &n.state.vm.nics, &release)
            .and_then(|c| machine::check_kubernetes_images(&c, &release).map(|()| c))
            .map_err(|e| {
                Status::invalid_argument(format!("configuration validation failed: {e}"))
            })?;
        if let Some(old) = &n.parsed
            && old.machine_type != parsed.machine_type
        {
            return Err(Status::invalid_argument(format!(
                "configuration validation failed: machine type cannot change from {} to {}",
                old.machine_type, parsed.machine_type
            )));
        }
        if self.peer.maintenance {
            if q.dry_run {
                lock(&self.shared.counters).dry_runs += 1;
                // Compared with no config at all (`generateDiff`, L351-362).
                let d = apply::Decision {
                    mode: ApplyMode::NoReboot,
                    details: "Applied configuration without a reboot".into(),
                    reason: String::new(),
                };
                return reply(apply::dry_run_details(&d, "", &text), d.mode);
            }
            lock(&self.shared.counters).applies += 1;
            let restart = super::run_config(n, text, hash, parsed);
            super::map(&self.shared, n);
            drop(nodes);
            if let Some(info) = restart {
                self.shared.fabric.emit(LabEvent::NodeRunning(info));
            }
            super::install(&self.shared, self.vmid);
            // 1.12 answers mode 0 with no details; 1.13 applies in place.
            return if v1_12 {
                reply(String::new(), ApplyMode::Reboot)
            } else {
                reply(
                    "Applied configuration without a reboot".into(),
                    ApplyMode::NoReboot,
                )
            };
        }
        let running = n.state.config.clone().unwrap_or_default();
        let decision = apply::decide(mode, &running, &text)?;
        if q.dry_run {
            lock(&self.shared.counters).dry_runs += 1;
            return reply(
                apply::dry_run_details(&decision, &running, &text),
                decision.mode,
            );
        }
        lock(&self.shared.counters).applies += 1;
        let mut details = decision.details.clone();
        let mut restart = None;
        match decision.mode {
            ApplyMode::NoReboot => {
                // Persisted and running: no rollback and nothing staged is left.
                n.state.try_rollback = None;
                n.state.staged_config = None;
                restart = super::run_config(n, text, hash, parsed);
            }
            ApplyMode::Try => {
                let timeout = q
                    .try_mode_timeout
                    .map(|d| {
                        std::time::Duration::new(d.seconds.max(0) as u64, d.nanos.max(0) as u32)
                    })
                    .unwrap_or(TRY_TIMEOUT);
                details = apply::try_details(&decision, timeout);
                // Not persisted: the timer or the next boot returns to the stored config.
                if n.state.try_rollback.is_none() {
                    n.state.try_rollback = Some(running);
                }
                n.state.try_serial += 1;
                super::rollback_after(&self.shared, self.vmid, n.state.try_serial, timeout);
                restart = super::run_config(n, text, hash, parsed);
            }
            ApplyMode::Staged => {
                n.state.staged_config = Some(text);
            }
            _ => {
                n.state.staged_config = Some(text);
                n.state.apply_rebooting = true;
                details += &decision.reason;
            }
        }
        super::map(&self.shared, n);
        let reboot = n.state.apply_rebooting;
        drop(nodes);
        if let Some(info) = restart {
            self.shared.fabric.emit(LabEvent::NodeRunning(info));
        }
        if reboot {
            // The reboot sequence starts after the reply (L327-337).
            let shared = self.shared.clone();
            let vmid = self.vmid;
            tokio::spawn(async move {
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                super::boot(&shared, vmid);
            });
        }
        reply(details, decision.mode)
    }

    /// COSI `List`, for the one resource type talos-pve reads: the node's links, named
    /// as `LabTalosConfig::link_names` says (reader role; served in maintenance too).
    fn cosi_list(&self, q: CosiListRequest) -> Result<Response<Frames<CosiListResponse>>, Status> {
        if !self.peer.maintenance {
            self.allow("List", READ)?;
        }
        if q.namespace != LINK_STATUS_NAMESPACE || q.r#type != LINK_STATUS_TYPE {
            return Err(Status::not_found(format!(
                "resource type {:?} in namespace {:?} is not served by the lab",
                q.r#type, q.namespace
            )));
        }
        let nodes = lock(&self.shared.nodes);
        let n = nodes
            .get(&self.vmid)
            .ok_or_else(|| Status::unavailable("node gone"))?;
        let names = self.shared.cfg.link_names.names(&n.state.vm);
        let items: Vec<Result<CosiListResponse, Status>> = n
            .state
            .vm
            .nics
            .iter()
            .zip(names)
            .map(|(nic, name)| {
                let mac: Vec<u8> = nic
                    .mac
                    .split(':')
                    .filter_map(|b| u8::from_str_radix(b, 16).ok())
                    .collect();
                let spec = LinkStatusSpec {
                    r#type: 1,
                    hardware_addr: mac.clone(),
                    kind: String::new(),
                    permanent_addr: mac,
                };
                Ok(CosiListResponse {
                    resource: Some(CosiResource {
                        metadata: Some(CosiMetadata {
                            namespace: LINK_STATUS_NAMESPACE.into(),
                            r#type: LINK_STATUS_TYPE.into(),
                            id: name,
                        }),
                        spec: Some(CosiSpec {
                            proto_spec: prost::Message::encode_to_vec(&spec),
                            yaml_spec: String::new(),
                        }),
                    }),
                })
            })
            .collect();
        let stream: Frames<CosiListResponse> = Box::pin(tokio_stream::iter(items));
        Ok(Response::new(stream))
    }

    fn bootstrap(&self, q: BootstrapRequest) -> Result<Response<BootstrapResponse>, Status> {
        self.allow("Bootstrap", ADMIN)?;
        lock(&self.shared.counters).bootstrap_calls += 1;
        self.control_plane("bootstrap")?;
        let mut nodes = lock(&self.shared.nodes);
        let n = nodes
            .get_mut(&self.vmid)
            .ok_or_else(|| Status::unavailable("node gone"))?;
        if !n.state.etcd_ready {
            return Err(Status::failed_precondition(
                "bootstrap is not available yet",
            ));
        }
        {
            let mut f = lock(&self.shared.faults_left);
            if f.time_not_in_sync > 0 {
                f.time_not_in_sync -= 1;
                return Err(Status::failed_precondition("time is not in sync yet"));
            }
        }
        let mut members = lock(&self.shared.members);
        if n.state.etcd_member || (!members.is_empty() && !q.recover_etcd) {
            return Err(Status::already_exists("etcd data directory is not empty"));
        }
        if q.recover_etcd {
            // The RPC only starts the etcd service; its pre-start step restores the
            // snapshot, so a missing or bad one fails the service, not the call
            // (talos v1.13.9 `internal/app/machined/pkg/system/services/etcd.go`).
            let restored = match n.recover_upload.take() {
                // `constants.EtcdRecoverySnapshotPath`
                None => Err("open /var/lib/etcd.snapshot: no such file or directory".into()),
                Some(upload) => self
                    .shared
                    .fabric
                    .etcd
                    .restore(&upload, q.recover_skip_hash_check)
                    .map_err(|e| format!("failed to restore etcd from snapshot: {e}")),
            };
            if let Err(why) = restored {
                n.state.etcd_failed = Some(why);
                return respond(BootstrapResponse {
                    messages: vec![Bootstrap { metadata: None }],
                });
            }
            n.state.etcd_failed = None;
            // A recovered etcd starts as a new one-member cluster.
            members.clear();
        }
        super::add_member(&mut members, n);
        drop(members);
        let hostname = n.hostname();
        let endpoint = n.management().unwrap_or(std::net::Ipv4Addr::LOCALHOST);
        drop(nodes);
        lock(&self.shared.counters).bootstraps += 1;
        self.shared.fabric.emit(LabEvent::EtcdBootstrapped {
            node: hostname,
            endpoint,
        });
        respond(BootstrapResponse {
            messages: vec![Bootstrap { metadata: None }],
        })
    }

    fn member_list(&self) -> Result<Response<EtcdMemberListResponse>, Status> {
        self.allow("EtcdMemberList", READ)?;
        let nodes = lock(&self.shared.nodes);
        let me = nodes
            .get(&self.vmid)
            .ok_or_else(|| Status::unavailable("node gone"))?;
        if !me.state.etcd_member {
            return Err(Status::failed_precondition(
                "etcd is not running on this node",
            ));
        }
        let members = lock(&self.shared.members)
            .iter()
            .map(|m| EtcdMember {
                id: m.id,
                hostname: m.hostname.clone(),
                peer_urls: vec![format!("https://{}:2380", m.address)],
                client_urls: vec![format!("https://{}:2379", m.address)],
                is_learner: false,
            })
            .collect();
        respond(EtcdMemberListResponse {
            messages: vec![EtcdMembers {
                metadata: None,
                legacy_members: vec![],
                members,
            }],
        })
    }

    fn remove_member(&self, id: u64) -> Result<Response<EtcdRemoveMemberByIdResponse>, Status> {
        self.allow("EtcdRemoveMemberByID", ADMIN)?;
        let mut nodes = lock(&self.shared.nodes);
        let mut members = lock(&self.shared.members);
        let before = members.len();
        members.retain(|m| m.id != id);
        if members.len() == before {
            // talos v1.13.9 internal/app/machined/internal/server/v1alpha1/v1alpha1_server.go
            // EtcdRemoveMemberByID: NotFound, the id in decimal.
            return Err(Status::not_found(format!(
                "failed to remove member {id}: etcdserver: member not found"
            )));
        }
        // If that node still runs, it is cut off from the cluster.
        for n in nodes.values_mut().filter(|n| n.state.member_id == id) {
            n.state.etcd_member = false;
        }
        respond(EtcdRemoveMemberByIdResponse {
            messages: vec![EtcdRemoveMemberById { metadata: None }],
        })
    }

    /// Wiping EPHEMERAL drops this node's etcd data; wiping everything (no partition
    /// list) also drops the config, so the node comes back in maintenance mode.
    fn reset(&self, q: ResetRequest) -> Result<Response<ResetResponse>, Status> {
        self.allow("Reset", ADMIN)?;
        let ack = respond(ResetResponse {
            messages: vec![Reset {
                metadata: None,
                actor_id: format!("reset-{}", self.vmid),
            }],
        });
        // Graceful on a control plane: it leaves etcd first. The sequence runs after
        // the reply (talos-day2.md §4.1–4.2), so a failed leave aborts it without an
        // RPC error: nothing is wiped and the node keeps running.
        if q.graceful
            && self.control_plane("etcd leave").is_ok()
            && let Err(e) = super::leave::leave_etcd(&self.shared, self.vmid)
        {
            tracing::warn!(vmid = self.vmid, error = %e.message(), "lab: reset sequence aborted");
            return ack;
        }
        let everything = q.system_partitions_to_wipe.is_empty();
        let wipe = |label: &str| {
            everything
                || q.system_partitions_to_wipe
                    .iter()
                    .any(|p| p.wipe && p.label == label)
        };
        {
            let mut nodes = lock(&self.shared.nodes);
            let n = nodes
                .get_mut(&self.vmid)
                .ok_or_else(|| Status::unavailable("node gone"))?;
            if wipe("EPHEMERAL") {
                n.state.etcd_member = false;
                n.state.etcd_ready = false;
                n.state.etcd_failed = None;
            }
            if wipe("STATE") {
                n.state.config = None;
                n.state.config_sha256 = None;
                n.parsed = None;
                n.mutual_tls = None;
            }
        }
        if q.reboot {
            super::boot(&self.shared, self.vmid);
        } else if let Some(n) = lock(&self.shared.nodes).get_mut(&self.vmid) {
            super::set_phase(n, Phase::Stopped);
            // Powered off: its kubelet stops with it.
            self.shared
                .fabric
                .emit(LabEvent::VmStopped { vmid: self.vmid });
        }
        ack
    }

    /// Whether this stream is one the fault plan cuts short.
    fn drop_stream(&self) -> bool {
        let mut f = lock(&self.shared.faults_left);
        let cut = f.drop_streams > 0;
        f.drop_streams = f.drop_streams.saturating_sub(1);
        cut
    }

    fn kubeconfig(&self) -> Result<Response<DataStream>, Status> {
        self.allow("Kubeconfig", ADMIN)?;
        self.control_plane("kubeconfig")?;
        let cfg = {
            let nodes = lock(&self.shared.nodes);
            let n = nodes
                .get(&self.vmid)
                .ok_or_else(|| Status::unavailable("node gone"))?;
            if lock(&self.shared.members).is_empty() {
                return Err(Status::failed_precondition(
                    "kubeconfig is not available: etcd is not bootstrapped",
                ));
            }
            n.parsed
                .clone()
                .ok_or_else(|| Status::failed_precondition("no config"))?
        };
        let text = certs::admin_kubeconfig(
            &cfg.cluster_name,
            &cfg.endpoint,
            &cfg.k8s_ca_crt,
            &cfg.k8s_ca_key,
        )
        .map_err(|e| Status::internal(format!("signing the admin certificate: {e}")))?;
        let tgz = certs::tar_gz("kubeconfig", text.as_bytes()).map_err(Status::internal)?;
        lock(&self.shared.counters).kubeconfigs += 1;
        let mut chunks: Vec<Result<Data, Status>> = chunks(&tgz);
        if self.drop_stream() {
            chunks.truncate(chunks.len() / 2);
            chunks.push(Err(Status::unavailable(
                "stream reset by the node (injected fault)",
            )));
        }
        stream(chunks)
    }

    fn snapshot(&self) -> Result<Response<DataStream>, Status> {
        self.allow("EtcdSnapshot", BACKUP)?;
        self.control_plane("etcd snapshot")?;
        {
            let nodes = lock(&self.shared.nodes);
            if !nodes.get(&self.vmid).is_some_and(|n| n.state.etcd_member) {
                return Err(Status::failed_precondition(
                    "etcd is not running on this node",
                ));
            }
        }
        let snap = self.shared.fabric.etcd.snapshot();
        lock(&self.shared.counters).snapshots += 1;
        let mut chunks = chunks(&snap);
        if self.drop_stream() {
            // The connection ends early without an error: only the size check notices.
            chunks.truncate(
                chunks
                    .len()
                    .div_ceil(2)
                    .min(chunks.len().saturating_sub(1))
                    .max(1),
            );
            if let Some(Ok(last)) = chunks.last_mut() {
                last.bytes.truncate(last.bytes.len() / 2);
            }
        }
        stream(chunks)
    }

    async fn recover(
        &self,
        mut upload: Streaming<Data>,
    ) -> Result<Response<EtcdRecoverResponse>, Status> {
        self.allow("EtcdRecover", ADMIN)?;
        self.control_plane("etcd recover")?;
        {
            let nodes = lock(&self.shared.nodes);
            let n = nodes
                .get(&self.vmid)
                .ok_or_else(|| Status::unavailable("node gone"))?;
            if !n.state.etcd_ready {
                return Err(Status::failed_precondition(
                    "etcd service is not ready for recovery yet",
                ));
            }
        }
        let mut bytes = Vec::new();
        while let Some(chunk) = upload.message().await? {
            bytes.extend_from_slice(&chunk.bytes);
        }
        let mut nodes = lock(&self.shared.nodes);
        let n = nodes
            .get_mut(&self.vmid)
            .ok_or_else(|| Status::unavailable("node gone"))?;
        n.recover_upload = Some(bytes);
        lock(&self.shared.counters).recover_uploads += 1;
        respond(EtcdRecoverResponse {
            messages: vec![EtcdRecover { metadata: None }],
        })
    }
}

pub(super) fn chunks(bytes: &[u8]) -> Vec<Result<Data, Status>> {
    bytes
        .chunks(RECOVER_CHUNK)
        .map(|c| {
            Ok(Data {
                metadata: None,
                bytes: c.to_vec(),
            })
        })
        .collect()
}
