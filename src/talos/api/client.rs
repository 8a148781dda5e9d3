//! One gRPC connection to one Talos node (apid, port 50000). Every dial goes
//! through the `AddressBook`; the TLS server name stays the node's real address.
//! Responses are checked for per-node errors in `metadata.error`, and transport
//! failures are classified (unreachable, our certificate refused, theirs untrusted)
//! so callers can decide what is worth retrying.

use std::io::Read;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use prost::Message as _;
use tonic::codegen::http::uri::PathAndQuery;
use tonic::metadata::MetadataValue;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};
use tonic::{Code, Request, Status};
use tonic_prost::ProstCodec;

use super::creds::TlsMode;
use super::error::TalosError;
use super::messages::*;
use super::snapshot::RECOVER_CHUNK;
use crate::net::AddressBook;
use crate::tls::{Pin, PinnedVerifier};

/// Talos API port (apid).
pub const APID_PORT: u16 = 50000;

/// A node as the operator knows it: its name and its real API address.
#[derive(Debug, Clone, PartialEq)]
pub struct Target {
    pub node: String,
    pub addr: SocketAddr,
}

impl Target {
    pub fn new(node: impl Into<String>, ip: std::net::IpAddr) -> Self {
        Self {
            node: node.into(),
            addr: SocketAddr::new(ip, APID_PORT),
        }
    }

    /// A planned node, reached on its management address.
    pub fn of(n: &crate::plan::NodePlan) -> Self {
        Self::new(&n.name, n.management.address.addr().into())
    }
}

/// Per-connection limits; stage deadlines are separate (see `stages`).
#[derive(Debug, Clone, Copy)]
pub struct RpcLimits {
    pub connect: Duration,
    pub rpc: Duration,
}

impl Default for RpcLimits {
    fn default() -> Self {
        Self {
            connect: Duration::from_secs(5),
            rpc: Duration::from_secs(60),
        }
    }
}

/// Which nodes a call is about, sent as gRPC metadata so the endpoint node proxies.
#[derive(Debug, Clone, Default, PartialEq)]
pub enum Routing {
    /// The endpoint node answers itself.
    #[default]
    Local,
    /// One-to-one proxy (`node`, single value).
    Node(String),
    /// One-to-many fan-out (`nodes`, one header value per node).
    Nodes(Vec<String>),
}

pub struct TalosClient {
    target: Target,
    pub(super) grpc: tonic::client::Grpc<Channel>,
    routing: Routing,
}

impl TalosClient {
    /// A lazily connected client: connection errors surface on the first call.
    pub fn connect(
        book: &AddressBook,
        target: &Target,
        mode: &TlsMode,
        limits: RpcLimits,
    ) -> Result<Self, TalosError> {
        let channel = endpoint(book, target, mode, limits)?.connect_lazy();
        Ok(Self::with_channel(target, channel))
    }

    /// A client whose connection (TCP, TLS, HTTP/2) is already up, for calls that
    /// must know whether anything could have been sent.
    pub async fn open(
        book: &AddressBook,
        target: &Target,
        mode: &TlsMode,
        limits: RpcLimits,
    ) -> Result<Self, TalosError> {
        let channel = endpoint(book, target, mode, limits)?
            .connect()
            .await
            .map_err(|e| classify(target, "connect", Status::from_error(Box::new(e))))?;
        Ok(Self::with_channel(target, channel))
    }

    fn with_channel(target: &Target, channel: Channel) -> Self {
        Self {
            target: target.clone(),
            grpc: tonic::client::Grpc::new(channel),
            routing: Routing::Local,
        }
    }

    pub fn target(&self) -> &Target {
        &self.target
    }

    /// Route the following calls through this endpoint to other node(s).
    pub fn with_routing(mut self, routing: Routing) -> Self {
        self.routing = routing;
        self
    }

    pub(super) fn request<M>(&self, m: M) -> Request<M> {
        let mut r = Request::new(m);
        apply_routing(&self.routing, r.metadata_mut());
        r
    }

    pub(super) async fn unary<Q, R>(
        &mut self,
        rpc: &'static str,
        path: &'static str,
        q: Q,
    ) -> Result<R, TalosError>
    where
        Q: prost::Message + Send + Sync + 'static,
        R: prost::Message + Default + Send + Sync + 'static,
    {
        tracing::debug!(node = %self.target.node, rpc, "talos request");
        let req = self.request(q);
        self.ready(rpc).await?;
        let resp = self
            .grpc
            .unary(
                req,
                PathAndQuery::from_static(path),
                ProstCodec::<Q, R>::default(),
            )
            .await
            .map_err(|s| classify(&self.target, rpc, s))?;
        Ok(resp.into_inner())
    }

    pub(super) async fn ready(&mut self, rpc: &'static str) -> Result<(), TalosError> {
        self.grpc
            .ready()
            .await
            .map_err(|e| classify(&self.target, rpc, Status::from_error(Box::new(e))))
    }

    /// Every message of a server stream (Talos streams here are short: a snapshot's
    /// chunks, a kubeconfig, one resource list).
    async fn stream_all<Q, R>(
        &mut self,
        rpc: &'static str,
        path: &'static str,
        q: Q,
    ) -> Result<Vec<R>, TalosError>
    where
        Q: prost::Message + Send + Sync + 'static,
        R: prost::Message + Default + Send + 'static,
    {
        let req = self.request(q);
        self.ready(rpc).await?;
        let mut stream = self
            .grpc
            .server_streaming(
                req,
                PathAndQuery::from_static(path),
                ProstCodec::<Q, R>::default(),
            )
            .await
            .map_err(|s| classify(&self.target, rpc, s))?
            .into_inner();
        let mut out = Vec::new();
        while let Some(m) = stream
            .message()
            .await
            .map_err(|s| classify(&self.target, rpc, s))?
        {
            out.push(m);
        }
        Ok(out)
    }

    pub(super) async fn stream_bytes<Q>(
        &mut self,
        rpc: &'static str,
        path: &'static str,
        q: Q,
    ) -> Result<Vec<u8>, TalosError>
    where
        Q: prost::Message + Send + Sync + 'static,
    {
        let mut out = Vec::new();
        for chunk in self.stream_all::<Q, Data>(rpc, path, q).await? {
            node_error(&self.target, rpc, chunk.metadata.as_ref())?;
            out.extend_from_slice(&chunk.bytes);
        }
        Ok(out)
    }

    pub async fn version(&mut self) -> Result<Vec<Version>, TalosError> {
        let r: VersionResponse = self
            .unary("Version", "/machine.MachineService/Version", Empty {})
            .await?;
        check(&self.target, "Version", &r)?;
        Ok(r.messages)
    }

    pub async fn service_list(&mut self) -> Result<Vec<ServiceInfo>, TalosError> {
        let r: ServiceListResponse = self
            .unary(
                "ServiceList",
                "/machine.MachineService/ServiceList",
                Empty {},
            )
            .await?;
        check(&self.target, "ServiceList", &r)?;
        Ok(r.messages.into_iter().flat_map(|m| m.services).collect())
    }

    pub async fn etcd_member_list(&mut self) -> Result<Vec<EtcdMember>, TalosError> {
        let r: EtcdMemberListResponse = self
            .unary(
                "EtcdMemberList",
                "/machine.MachineService/EtcdMemberList",
                EtcdMemberListRequest { query_local: false },
            )
            .await?;
        check(&self.target, "EtcdMemberList", &r)?;
        Ok(r.messages.into_iter().flat_map(|m| m.members).collect())
    }

    /// A running node's config change (day 2: `upgrade`'s Kubernetes step, `diff`'s
    /// dry run). Configs reach new nodes on their cidata volume, never through this.
    pub async fn apply_configuration(
        &mut self,
        data: &[u8],
        mode: ApplyMode,
        dry_run: bool,
    ) -> Result<ApplyConfiguration, TalosError> {
        let q = ApplyConfigurationRequest {
            data: data.to_vec(),
            mode: mode as i32,
            dry_run,
            try_mode_timeout: None,
        };
        let r: ApplyConfigurationResponse = self
            .unary(
                "ApplyConfiguration",
                "/machine.MachineService/ApplyConfiguration",
                q,
            )
            .await?;
        check(&self.target, "ApplyConfiguration", &r)?;
        r.messages
            .into_iter()
            .next()
            .ok_or_else(|| TalosError::BadResponse {
                node: self.target.node.clone(),
                rpc: "ApplyConfiguration",
                detail: "no messages in the response".into(),
            })
    }

    pub async fn bootstrap(&mut self, q: BootstrapRequest) -> Result<(), TalosError> {
        let r: BootstrapResponse = self
            .unary("Bootstrap", "/machine.MachineService/Bootstrap", q)
            .await?;
        check(&self.target, "Bootstrap", &r)
    }

    pub async fn etcd_remove_member_by_id(&mut self, member_id: u64) -> Result<(), TalosError> {
        let r: EtcdRemoveMemberByIdResponse = self
            .unary(
                "EtcdRemoveMemberByID",
                "/machine.MachineService/EtcdRemoveMemberByID",
                EtcdRemoveMemberByIdRequest { member_id },
            )
            .await?;
        check(&self.target, "EtcdRemoveMemberByID", &r)
    }

    pub async fn reset(&mut self, q: ResetRequest) -> Result<(), TalosError> {
        let r: ResetResponse = self
            .unary("Reset", "/machine.MachineService/Reset", q)
            .await?;
        check(&self.target, "Reset", &r)
    }

    /// The admin kubeconfig: the stream is a gzip'd tar; the file contents are joined.
    pub async fn kubeconfig(&mut self) -> Result<Vec<u8>, TalosError> {
        let tgz = self
            .stream_bytes("Kubeconfig", "/machine.MachineService/Kubeconfig", Empty {})
            .await?;
        untar_all(&tgz).map_err(|detail| TalosError::BadResponse {
            node: self.target.node.clone(),
            rpc: "Kubeconfig",
            detail,
        })
    }

    /// The node's physical links as `(kernel name, MAC)`, MAC in upper-case
    /// `AA:BB:…` form as Proxmox and the plan write it (COSI `LinkStatus`, as
    /// `talosctl get links` reads them).
    pub async fn links(&mut self) -> Result<Vec<(String, String)>, TalosError> {
        let rpc = "COSI List LinkStatuses";
        let q = CosiListRequest {
            namespace: LINK_STATUS_NAMESPACE.into(),
            r#type: LINK_STATUS_TYPE.into(),
        };
        let listed: Vec<CosiListResponse> =
            self.stream_all(rpc, "/cosi.resource.State/List", q).await?;
        let mut out = Vec::new();
        for m in listed {
            let Some(r) = m.resource else { continue };
            let id = r.metadata.map(|m| m.id).unwrap_or_default();
            let spec = r.spec.map(|s| s.proto_spec).unwrap_or_default();
            let spec =
                LinkStatusSpec::decode(spec.as_slice()).map_err(|e| TalosError::BadResponse {
                    node: self.target.node.clone(),
                    rpc,
                    detail: format!("link {id}: {e}"),
                })?;
            if !spec.kind.is_empty() || spec.hardware_addr.len() != 6 {
                continue;
            }
            let mac = spec
                .hardware_addr
                .iter()
                .map(|b| format!("{b:02X}"))
                .collect::<Vec<_>>()
                .join(":");
            out.push((id, mac));
        }
        Ok(out)
    }

    /// Raw snapshot bytes; the caller validates them (`snapshot::validate_snapshot`).
    pub async fn etcd_snapshot(&mut self) -> Result<Vec<u8>, TalosError> {
        self.stream_bytes(
            "EtcdSnapshot",
            "/machine.MachineService/EtcdSnapshot",
            EtcdSnapshotRequest {},
        )
        .await
    }

    /// Upload a snapshot in 4 KiB chunks; the node keeps it for `Bootstrap{recover_etcd}`.
    pub async fn etcd_recover(&mut self, snapshot: &[u8]) -> Result<(), TalosError> {
        let chunks: Vec<Data> = snapshot
            .chunks(RECOVER_CHUNK)
            .map(|c| Data {
                metadata: None,
                bytes: c.to_vec(),
            })
            .collect();
        let req = self.request(tokio_stream::iter(chunks));
        self.ready("EtcdRecover").await?;
        let r: EtcdRecoverResponse = self
            .grpc
            .client_streaming(
                req,
                PathAndQuery::from_static("/machine.MachineService/EtcdRecover"),
                ProstCodec::<Data, EtcdRecoverResponse>::default(),
            )
            .await
            .map_err(|s| classify(&self.target, "EtcdRecover", s))?
            .into_inner();
        check(&self.target, "EtcdRecover", &r)
    }
}

/// The endpoint to dial: the address book's answer for the node, with TLS naming
/// the node's real address (not the loopback listener the lab routes it to).
fn endpoint(
    book: &AddressBook,
    target: &Target,
    mode: &TlsMode,
    limits: RpcLimits,
) -> Result<Endpoint, TalosError> {
    let dial = book
        .resolve(target.addr)
        .map_err(|source| TalosError::Address {
            node: target.node.clone(),
            addr: target.addr,
            source,
        })?;
    let bad = |detail: String| TalosError::Unreachable {
        node: target.node.clone(),
        addr: target.addr,
        detail,
    };
    let endpoint = Endpoint::from_shared(format!("https://{dial}"))
        .map_err(|e| bad(format!("bad endpoint: {e}")))?
        .connect_timeout(limits.connect)
        .timeout(limits.rpc);
    let tls = ClientTlsConfig::new()
        .domain_name(target.addr.ip().to_string())
        .assume_http2(true);
    match mode {
        TlsMode::Maintenance => endpoint
            .tls_config_with_verifier(tls, PinnedVerifier::new(Pin::Any) as Arc<_>)
            .map_err(|e| bad(format!("TLS setup: {e}"))),
        TlsMode::Mutual(c) => endpoint
            .tls_config(
                tls.ca_certificate(Certificate::from_pem(&c.ca_pem))
                    .identity(Identity::from_pem(&c.crt_pem, c.key_for_rustls())),
            )
            .map_err(|e| bad(format!("TLS setup: {e}"))),
    }
}

fn apply_routing(routing: &Routing, md: &mut tonic::metadata::MetadataMap) {
    let value = |s: &str| MetadataValue::try_from(s).ok();
    match routing {
        Routing::Local => {}
        Routing::Node(n) => {
            if let Some(v) = value(n) {
                md.insert("node", v);
            }
        }
        Routing::Nodes(ns) => {
            // One header value per node: apid does not split comma-joined values.
            for n in ns {
                if let Some(v) = value(n) {
                    md.append("nodes", v);
                }
            }
        }
    }
}

fn node_error(target: &Target, rpc: &'static str, md: Option<&Metadata>) -> Result<(), TalosError> {
    match md {
        Some(m) if !m.error.is_empty() => Err(TalosError::NodeError {
            node: if m.hostname.is_empty() {
                target.node.clone()
            } else {
                m.hostname.clone()
            },
            rpc,
            message: m.error.clone(),
        }),
        _ => Ok(()),
    }
}

/// A response is a failure if any node reported an error in its metadata.
pub fn check(target: &Target, rpc: &'static str, r: &impl NodeMessages) -> Result<(), TalosError> {
    r.metadata()
        .into_iter()
        .try_for_each(|md| node_error(target, rpc, md))
}

/// Turn a gRPC status (including transport failures tonic wraps as Unavailable /
/// Unknown) into an error that says what happened.
pub fn classify(target: &Target, rpc: &'static str, s: Status) -> TalosError {
    let node = target.node.clone();
    let mut detail = s.message().to_owned();
    let mut src: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(&s);
    while let Some(e) = src {
        detail.push_str(": ");
        detail.push_str(&e.to_string());
        src = e.source();
    }
    let lower = detail.to_lowercase();
    match s.code() {
        Code::PermissionDenied => TalosError::PermissionDenied {
            node,
            rpc,
            message: s.message().to_owned(),
        },
        _ if lower.contains("invalid peer certificate") => {
            TalosError::ServerUntrusted { node, detail }
        }
        // In mutual TLS the server answers a certificate it does not accept with a
        // fatal alert (BadCertificate, UnknownCA, DecryptError, CertificateRequired…).
        _ if lower.contains("received fatal alert") || lower.contains("certificate required") => {
            TalosError::CertificateRejected { node, detail }
        }
        Code::Unavailable | Code::Unknown
            if s.metadata().is_empty() || lower.contains("transport") =>
        {
            TalosError::Unreachable {
                node,
                addr: target.addr,
                detail,
            }
        }
        code => TalosError::Rpc {
            node,
            rpc,
            code,
            message: s.message().to_owned(),
        },
    }
}

fn untar_all(tgz: &[u8]) -> Result<Vec<u8>, String> {
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(tgz));
    let mut out = Vec::new();
    let entries = archive
        .entries()
        .map_err(|e| format!("not a gzip'd tar: {e}"))?;
    for entry in entries {
        let mut entry = entry.map_err(|e| format!("bad tar entry: {e}"))?;
        entry
            .read_to_end(&mut out)
            .map_err(|e| format!("bad tar entry: {e}"))?;
    }
    if out.is_empty() {
        return Err("the archive holds no kubeconfig".into());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nodes_metadata_is_one_value_per_node() {
        let mut md = tonic::metadata::MetadataMap::new();
        apply_routing(
            &Routing::Nodes(vec!["10.8.16.20".into(), "10.8.16.21".into()]),
            &mut md,
        );
        let got: Vec<_> = md
            .get_all("nodes")
            .iter()
            .map(|v| v.to_str().unwrap().to_owned())
            .collect();
        assert_eq!(got, ["10.8.16.20", "10.8.16.21"]);
        let mut md = tonic::metadata::MetadataMap::new();
        apply_routing(&Routing::Node("10.8.16.21".into()), &mut md);
        assert_eq!(md.get_all("node").iter().count(), 1);
    }

    #[test]
    fn per_node_error_in_metadata_names_that_node() {
        let t = Target::new("talos-k8s-01", "10.8.16.20".parse().unwrap());
        let r = VersionResponse {
            messages: vec![
                Version {
                    metadata: Some(Metadata {
                        hostname: "talos-k8s-01".into(),
                        ..Default::default()
                    }),
                    ..Default::default()
                },
                Version {
                    metadata: Some(Metadata {
                        hostname: "talos-k8s-02".into(),
                        error: "connection refused".into(),
                        status: None,
                    }),
                    ..Default::default()
                },
            ],
        };
        let e = check(&t, "Version", &r).unwrap_err();
        assert!(
            matches!(&e, TalosError::NodeError { node, .. } if node == "talos-k8s-02"),
            "{e}"
        );
        assert!(
            e.to_string()
                .contains("talos-k8s-02: Version failed on the node: connection refused"),
            "{e}"
        );
    }

    #[test]
    fn transport_failures_are_classified() {
        let t = Target::new("n1", "10.8.16.20".parse().unwrap());
        let c = |s: Status| classify(&t, "Version", s);
        assert!(matches!(
            c(Status::unavailable(
                "transport error: received fatal alert: CertificateRequired"
            )),
            TalosError::CertificateRejected { .. }
        ));
        assert!(matches!(
            c(Status::unavailable(
                "transport error: invalid peer certificate: UnknownIssuer"
            )),
            TalosError::ServerUntrusted { .. }
        ));
        assert!(matches!(
            c(Status::unavailable("transport error: Connection refused")),
            TalosError::Unreachable { .. }
        ));
        let e = c(Status::failed_precondition(
            "bootstrap is not available yet",
        ));
        assert_eq!(e.code(), Some(Code::FailedPrecondition));
        assert_eq!(e.message(), Some("bootstrap is not available yet"));
    }

    #[test]
    fn tar_gz_entries_are_joined() {
        let mut tgz = Vec::new();
        {
            let gz = flate2::write::GzEncoder::new(&mut tgz, flate2::Compression::default());
            let mut b = tar::Builder::new(gz);
            let mut h = tar::Header::new_gnu();
            h.set_size(5);
            h.set_mode(0o600);
            h.set_cksum();
            b.append_data(&mut h, "kubeconfig", &b"hello"[..]).unwrap();
            b.into_inner().unwrap().finish().unwrap();
        }
        assert_eq!(untar_all(&tgz).unwrap(), b"hello");
        assert!(untar_all(b"nope").is_err());
    }
}
