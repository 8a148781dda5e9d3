//! Bring-up and recovery stages, one library function per stage, each with its own
//! readiness gate and deadline (there is no global timeout). Polling backs off from
//! `poll_min` to `poll_max`; a stage that runs out of time reports the node, the
//! stage, the last thing that went wrong, and what to check.

use std::future::Future;
use std::time::{Duration, Instant};

use tonic::Code;

use super::client::{RpcLimits, TalosClient, Target};
use super::creds::{Credentials, TlsMode};
use super::error::{Stage, TalosError};
use super::messages::{BootstrapRequest, ResetPartitionSpec, ResetRequest, ServiceInfo};
use super::snapshot::validate_snapshot;
use crate::net::AddressBook;

/// Deadlines per stage and polling cadence. `Default` fits real hardware; the lab
/// shrinks everything.
#[derive(Debug, Clone)]
pub struct Timeouts {
    pub limits: RpcLimits,
    pub poll_min: Duration,
    pub poll_max: Duration,
    pub install: Duration,
    pub bootstrap: Duration,
    pub etcd_members: Duration,
    pub kubeconfig: Duration,
    pub snapshot: Duration,
    pub recover: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        let m = |n: u64| Duration::from_secs(60 * n);
        Self {
            limits: RpcLimits::default(),
            poll_min: Duration::from_secs(1),
            poll_max: Duration::from_secs(15),
            // Boot from the ISO, read cidata, install, reboot.
            install: m(30),
            bootstrap: m(10),
            etcd_members: m(15),
            kubeconfig: m(5),
            snapshot: m(5),
            recover: m(10),
        }
    }
}

impl Timeouts {
    /// Every stage deadline set to `d` (tests and the lab).
    pub fn uniform(d: Duration, poll_min: Duration, poll_max: Duration) -> Self {
        Self {
            limits: RpcLimits {
                connect: d.min(Duration::from_secs(5)),
                rpc: d.min(Duration::from_secs(30)),
            },
            poll_min,
            poll_max,
            install: d,
            bootstrap: d,
            etcd_members: d,
            kubeconfig: d,
            snapshot: d,
            recover: d,
        }
    }

    fn of(&self, s: Stage) -> Duration {
        match s {
            Stage::Install => self.install,
            Stage::Bootstrap => self.bootstrap,
            Stage::EtcdMembers => self.etcd_members,
            Stage::Kubeconfig => self.kubeconfig,
            Stage::Snapshot => self.snapshot,
            Stage::Recover => self.recover,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BootstrapOutcome {
    Bootstrapped,
    AlreadyBootstrapped,
}

/// The node's kubeconfig, and how it compares with the one generated locally.
#[derive(Debug, Clone)]
pub struct FetchedKubeconfig {
    pub bytes: Vec<u8>,
    /// Server URL or CA that differ from the local kubeconfig (empty: same cluster).
    pub differences: Vec<String>,
}

/// One attempt's verdict inside a polling loop.
enum Attempt<T> {
    Done(T),
    Retry(TalosError),
    Fail(TalosError),
}

/// Errors that mean "not there yet" rather than "wrong".
fn transient(e: &TalosError) -> bool {
    matches!(
        e,
        TalosError::Unreachable { .. }
            | TalosError::Address { .. }
            | TalosError::CertificateRejected { .. } // Cancelled: the node dropped the connection mid-call (a reboot, apid restarting).
    ) || matches!(
        e.code(),
        Some(Code::Unavailable | Code::DeadlineExceeded | Code::Cancelled)
    )
}

/// What a retried answer says about the node, for the progress row: one phrase per
/// kind of answer, so a row changes only when the node moves on.
fn waiting_on(e: &TalosError) -> String {
    match e {
        TalosError::Unreachable { .. } | TalosError::Address { .. } => {
            "no answer yet (booting or rebooting)".into()
        }
        TalosError::CertificateRejected { .. } => {
            "answers, not yet with this cluster's certificate (maintenance mode or installing)"
                .into()
        }
        TalosError::Rpc { message, .. } => format!("not ready yet: {message}"),
        _ => "answers, not ready yet".into(),
    }
}

/// An error chain's parts without the repeats transport layers add.
fn once_each(chain: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for p in chain.split(": ") {
        if !parts.contains(&p) {
            parts.push(p);
        }
    }
    parts.join(": ")
}

fn sort<T>(r: Result<T, TalosError>) -> Attempt<T> {
    match r {
        Ok(v) => Attempt::Done(v),
        Err(e) if transient(&e) => Attempt::Retry(e),
        Err(e) => Attempt::Fail(e),
    }
}

/// Runs the stages against nodes; holds where to dial and how long to wait.
#[derive(Debug, Clone)]
pub struct Stages {
    pub book: AddressBook,
    pub timeouts: Timeouts,
}

impl Stages {
    pub fn new(book: AddressBook, timeouts: Timeouts) -> Self {
        Self { book, timeouts }
    }

    pub fn client(&self, t: &Target, mode: &TlsMode) -> Result<TalosClient, TalosError> {
        TalosClient::connect(&self.book, t, mode, self.timeouts.limits)
    }

    async fn poll<T, F, Fut>(
        &self,
        t: &Target,
        stage: Stage,
        mut attempt: F,
    ) -> Result<T, TalosError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Attempt<T>>,
    {
        let limit = self.timeouts.of(stage);
        let start = Instant::now();
        let mut delay = self.timeouts.poll_min;
        let mut last: Option<TalosError> = None;
        loop {
            let left = limit.saturating_sub(start.elapsed());
            match tokio::time::timeout(left, attempt()).await {
                Ok(Attempt::Done(v)) => return Ok(v),
                Ok(Attempt::Fail(e)) => {
                    return Err(TalosError::StageFailed {
                        node: t.node.clone(),
                        stage,
                        source: Box::new(e),
                    });
                }
                Ok(Attempt::Retry(e)) => {
                    tracing::debug!(node = %t.node, stage = %stage, error = %e, "not ready yet");
                    crate::progress::note(waiting_on(&e));
                    last = Some(e);
                }
                // The deadline hit mid-attempt: the previous answer says more.
                Err(_) => {}
            }
            if start.elapsed() + delay >= limit {
                return Err(TalosError::StageTimeout {
                    node: t.node.clone(),
                    stage,
                    waited: limit,
                    last: Box::new(last.unwrap_or_else(|| TalosError::Unreachable {
                        node: t.node.clone(),
                        addr: t.addr,
                        detail: "no answer before the deadline".into(),
                    })),
                });
            }
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(self.timeouts.poll_max);
        }
    }

    /// One mutual-TLS `Version` call. Only a machine holding this cluster's config
    /// has a server certificate that chains to our OS CA for its address; a machine
    /// that answers with any other certificate is not our node (`NotOurNode`).
    async fn our_version(&self, t: &Target, creds: &Credentials) -> Result<String, TalosError> {
        let mtls = TlsMode::Mutual(creds.clone());
        let r = async { self.client(t, &mtls)?.version().await }.await;
        match r {
            Ok(v) => Ok(v
                .into_iter()
                .next()
                .and_then(|v| v.version)
                .map(|v| v.tag)
                .unwrap_or_default()),
            Err(TalosError::ServerUntrusted { detail, .. }) => Err(TalosError::NotOurNode {
                node: t.node.clone(),
                addr: t.addr,
                seen: once_each(&detail),
            }),
            Err(e) => Err(e),
        }
    }

    /// One look: the node's Talos version when it runs this cluster's config,
    /// `None` while nothing answers; another machine at its address is an error.
    pub async fn our_node(
        &self,
        t: &Target,
        creds: &Credentials,
    ) -> Result<Option<String>, TalosError> {
        match self.our_version(t, creds).await {
            Ok(v) => Ok(Some(v)),
            Err(e) if transient(&e) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// The node boots its `cidata` config, installs to disk and reboots; done when
    /// it answers mutual TLS with this cluster's CA. Returns the Talos version it
    /// reports. Refuses at once when another machine answers at its address.
    pub async fn wait_installed(
        &self,
        t: &Target,
        creds: &Credentials,
    ) -> Result<String, TalosError> {
        self.poll(t, Stage::Install, || async {
            sort(self.our_version(t, creds).await)
        })
        .await
    }

    /// Stage 4: bootstrap etcd on this (the plan's bootstrap) control plane. Safe to
    /// repeat: a running etcd or AlreadyExists means it was done before.
    pub async fn bootstrap(
        &self,
        t: &Target,
        creds: &Credentials,
    ) -> Result<BootstrapOutcome, TalosError> {
        self.bootstrap_with(t, creds, Stage::Bootstrap, BootstrapRequest::default())
            .await
    }

    async fn bootstrap_with(
        &self,
        t: &Target,
        creds: &Credentials,
        stage: Stage,
        req: BootstrapRequest,
    ) -> Result<BootstrapOutcome, TalosError> {
        let mtls = TlsMode::Mutual(creds.clone());
        self.poll(t, stage, || async {
            let r = async {
                let mut c = self.client(t, &mtls)?;
                if !req.recover_etcd {
                    let running = c
                        .service_list()
                        .await?
                        .iter()
                        .any(|s| s.id == "etcd" && s.state == "Running");
                    if running {
                        return Ok(BootstrapOutcome::AlreadyBootstrapped);
                    }
                }
                c.bootstrap(req)
                    .await
                    .map(|()| BootstrapOutcome::Bootstrapped)
            }
            .await;
            match r {
                Err(e) if e.code() == Some(Code::AlreadyExists) && !req.recover_etcd => {
                    Attempt::Done(BootstrapOutcome::AlreadyBootstrapped)
                }
                Err(e) if e.code() == Some(Code::FailedPrecondition) && retry_bootstrap(&e) => {
                    Attempt::Retry(e)
                }
                r => sort(r),
            }
        })
        .await
    }

    /// Stage 5: wait until etcd on `t` lists exactly the expected control planes.
    pub async fn wait_etcd_members(
        &self,
        t: &Target,
        creds: &Credentials,
        expected: &[String],
    ) -> Result<(), TalosError> {
        let mtls = TlsMode::Mutual(creds.clone());
        let mut want: Vec<&str> = expected.iter().map(String::as_str).collect();
        want.sort_unstable();
        self.poll(t, Stage::EtcdMembers, || async {
            let r = async { self.client(t, &mtls)?.etcd_member_list().await }.await;
            match r {
                Ok(members) => {
                    let mut got: Vec<&str> = members.iter().map(|m| m.hostname.as_str()).collect();
                    got.sort_unstable();
                    if got == want {
                        Attempt::Done(())
                    } else {
                        Attempt::Retry(TalosError::BadResponse {
                            node: t.node.clone(),
                            rpc: "EtcdMemberList",
                            detail: format!("members {got:?}, waiting for {want:?}"),
                        })
                    }
                }
                // etcd not up on this node yet.
                Err(e) if e.code() == Some(Code::FailedPrecondition) => Attempt::Retry(e),
                Err(e) => sort(Err(e)),
            }
        })
        .await
    }

    /// Stage 6: the admin kubeconfig from a control plane. The node's copy wins;
    /// differences from `local` are reported so the caller can warn.
    pub async fn fetch_kubeconfig(
        &self,
        t: &Target,
        creds: &Credentials,
        local: Option<&[u8]>,
    ) -> Result<FetchedKubeconfig, TalosError> {
        let mtls = TlsMode::Mutual(creds.clone());
        let bytes = self
            .poll(t, Stage::Kubeconfig, || async {
                let r = async { self.client(t, &mtls)?.kubeconfig().await }.await;
                match r {
                    Err(e) if e.code() == Some(Code::FailedPrecondition) => Attempt::Retry(e),
                    r => sort(r),
                }
            })
            .await?;
        let differences = local
            .map(|l| kubeconfig_differences(l, &bytes))
            .unwrap_or_default();
        Ok(FetchedKubeconfig { bytes, differences })
    }

    /// Wipe a control plane's EPHEMERAL partition (its etcd data) and reboot it, the
    /// disaster-recovery step for a node that is up but whose etcd is broken.
    pub async fn wipe_etcd_data(&self, t: &Target, creds: &Credentials) -> Result<(), TalosError> {
        let req = ResetRequest {
            graceful: false,
            reboot: true,
            system_partitions_to_wipe: vec![ResetPartitionSpec {
                label: "EPHEMERAL".into(),
                wipe: true,
            }],
            ..Default::default()
        };
        self.client(t, &TlsMode::Mutual(creds.clone()))?
            .reset(req)
            .await
            .map_err(|e| TalosError::StageFailed {
                node: t.node.clone(),
                stage: Stage::Recover,
                source: Box::new(e),
            })
    }

    /// Recovery gate: the node runs its config and its etcd waits in `Preparing`
    /// (installed, not bootstrapped, not joined).
    pub async fn wait_etcd_preparing(
        &self,
        t: &Target,
        creds: &Credentials,
    ) -> Result<(), TalosError> {
        let mtls = TlsMode::Mutual(creds.clone());
        self.poll(t, Stage::Recover, || async {
            let r = async { self.client(t, &mtls)?.service_list().await }.await;
            match r {
                Ok(services) => {
                    let etcd = services
                        .iter()
                        .find(|s| s.id == "etcd")
                        .map(|s| s.state.as_str());
                    match etcd {
                        Some("Preparing") => Attempt::Done(()),
                        other => Attempt::Retry(TalosError::BadResponse {
                            node: t.node.clone(),
                            rpc: "ServiceList",
                            detail: format!(
                                "etcd is {}, waiting for Preparing",
                                other.unwrap_or("absent")
                            ),
                        }),
                    }
                }
                Err(e) => sort(Err(e)),
            }
        })
        .await
    }

    /// Remove a dead control plane's etcd member by hostname, asking `via` (a
    /// healthy control plane). Returns false when no such member exists, so a
    /// rebuild can call it again safely.
    pub async fn remove_etcd_member(
        &self,
        via: &Target,
        creds: &Credentials,
        hostname: &str,
    ) -> Result<bool, TalosError> {
        let mtls = TlsMode::Mutual(creds.clone());
        self.poll(via, Stage::EtcdMembers, || async {
            sort(
                async {
                    let mut c = self.client(via, &mtls)?;
                    let members = c.etcd_member_list().await?;
                    match members.iter().find(|m| m.hostname == hostname) {
                        Some(m) => c.etcd_remove_member_by_id(m.id).await.map(|()| true),
                        None => Ok(false),
                    }
                }
                .await,
            )
        })
        .await
    }

    /// A validated etcd snapshot from a healthy control plane. A dropped or truncated
    /// stream fails validation and is fetched again.
    pub async fn snapshot(&self, t: &Target, creds: &Credentials) -> Result<Vec<u8>, TalosError> {
        let mtls = TlsMode::Mutual(creds.clone());
        self.poll(t, Stage::Snapshot, || async {
            let r = async { self.client(t, &mtls)?.etcd_snapshot().await }.await;
            match r {
                Ok(bytes) => match validate_snapshot(&bytes) {
                    Ok(()) => Attempt::Done(bytes),
                    Err(source) => Attempt::Retry(TalosError::Snapshot {
                        node: t.node.clone(),
                        source,
                    }),
                },
                Err(
                    e @ TalosError::Rpc {
                        code: Code::Internal | Code::Aborted,
                        ..
                    },
                ) => Attempt::Retry(e),
                Err(e) => sort(Err(e)),
            }
        })
        .await
    }

    /// Disaster recovery on one control plane: upload the snapshot (4 KiB chunks),
    /// bootstrap etcd from it, then wait for the etcd service. `skip_hash_check` only
    /// for a raw `db` copy; `origin` names the snapshot in errors.
    pub async fn recover(
        &self,
        t: &Target,
        creds: &Credentials,
        snapshot: &[u8],
        skip_hash_check: bool,
        origin: &str,
    ) -> Result<(), TalosError> {
        if !skip_hash_check {
            validate_snapshot(snapshot).map_err(|source| TalosError::StageFailed {
                node: t.node.clone(),
                stage: Stage::Recover,
                source: Box::new(TalosError::Snapshot {
                    node: t.node.clone(),
                    source,
                }),
            })?;
        }
        let mtls = TlsMode::Mutual(creds.clone());
        // Never overwrite a live etcd: the upload is pointless if it runs.
        self.poll(t, Stage::Recover, || async {
            let r = async { self.client(t, &mtls)?.service_list().await }.await;
            match r {
                Ok(s) if s.iter().any(|s| s.id == "etcd" && s.state == "Running") => {
                    Attempt::Fail(TalosError::BadResponse {
                        node: t.node.clone(),
                        rpc: "ServiceList",
                        detail: "etcd is already running here; recovery needs it in Preparing"
                            .into(),
                    })
                }
                r => sort(r.map(|_| ())),
            }
        })
        .await?;
        self.poll(t, Stage::Recover, || async {
            let r = async { self.client(t, &mtls)?.etcd_recover(snapshot).await }.await;
            match r {
                // EPHEMERAL not mounted yet on a freshly booted node.
                Err(e) if e.code() == Some(Code::FailedPrecondition) => Attempt::Retry(e),
                r => sort(r),
            }
        })
        .await?;
        let req = BootstrapRequest {
            recover_etcd: true,
            recover_skip_hash_check: skip_hash_check,
        };
        self.bootstrap_with(t, creds, Stage::Recover, req).await?;
        // The recovery Bootstrap answers once the etcd service is started; the snapshot
        // is checked and restored later, in that service's pre-start step, and a bad one
        // fails the service, not the RPC (talos v1.13.9
        // `internal/app/machined/pkg/system/services/etcd.go`, talos.md §13).
        self.poll(t, Stage::Recover, || async {
            let r = async { self.client(t, &mtls)?.service_list().await }.await;
            let etcd = |s: Vec<ServiceInfo>| s.into_iter().find(|s| s.id == "etcd");
            match r.map(etcd) {
                Ok(Some(s)) if s.state == "Running" => Attempt::Done(()),
                Ok(Some(s)) if s.state == "Failed" => Attempt::Fail(TalosError::EtcdRecovery {
                    node: t.node.clone(),
                    snapshot: origin.to_owned(),
                    detail: last_event(&s).unwrap_or_else(|| "the etcd service failed".into()),
                }),
                Ok(s) => Attempt::Retry(TalosError::BadResponse {
                    node: t.node.clone(),
                    rpc: "ServiceList",
                    detail: format!(
                        "etcd is {} (restoring the snapshot)",
                        s.map_or("not listed".into(), |s| s.state)
                    ),
                }),
                Err(e) => sort(Err(e)),
            }
        })
        .await
    }
}

/// The newest event message of a service (Talos lists them oldest first).
fn last_event(s: &ServiceInfo) -> Option<String> {
    s.events.as_ref()?.events.last().map(|e| e.msg.clone())
}

/// Bootstrap preconditions that pass by themselves (etcd stage not reached, NTP).
fn retry_bootstrap(e: &TalosError) -> bool {
    e.message().is_some_and(|m| {
        let m = m.to_lowercase();
        m.contains("not available yet") || m.contains("time is not in sync")
    })
}

/// Compare the cluster entries (server URL, CA) of two kubeconfigs. Client
/// credentials always differ (each side signs its own) and are not compared.
fn kubeconfig_differences(local: &[u8], node: &[u8]) -> Vec<String> {
    let parse = |b: &[u8]| -> Option<(String, String)> {
        let v: serde_json::Value = serde_saphyr::from_slice(b).ok()?;
        let c = v.get("clusters")?.get(0)?.get("cluster")?;
        Some((
            c.get("server")?.as_str()?.to_owned(),
            c.get("certificate-authority-data")?.as_str()?.to_owned(),
        ))
    };
    match (parse(local), parse(node)) {
        (Some((ls, lc)), Some((ns, nc))) => {
            let mut d = Vec::new();
            if ls != ns {
                d.push(format!("server: local {ls}, node {ns}"));
            }
            if lc != nc {
                d.push(
                    "certificate-authority-data differs (the node uses another Kubernetes CA)"
                        .into(),
                );
            }
            d
        }
        (None, _) => vec!["the local kubeconfig could not be read".into()],
        (_, None) => vec!["the node's kubeconfig could not be read".into()],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repeated_error_parts_are_said_once() {
        assert_eq!(
            once_each(
                "invalid peer certificate: UnknownIssuer: transport error: invalid peer certificate: UnknownIssuer"
            ),
            "invalid peer certificate: UnknownIssuer: transport error"
        );
    }

    #[test]
    fn kubeconfig_comparison_ignores_credentials() {
        let k = |server: &str, ca: &str, user: &str| {
            format!(
                "apiVersion: v1\nclusters:\n- name: c\n  cluster:\n    server: {server}\n    certificate-authority-data: {ca}\nusers:\n- name: a\n  user:\n    client-certificate-data: {user}\n"
            )
        };
        let a = k("https://10.8.16.20:6443", "Q0E=", "one");
        assert!(
            kubeconfig_differences(
                a.as_bytes(),
                k("https://10.8.16.20:6443", "Q0E=", "two").as_bytes()
            )
            .is_empty()
        );
        let d = kubeconfig_differences(
            a.as_bytes(),
            k("https://10.8.16.21:6443", "Q0I=", "one").as_bytes(),
        );
        assert_eq!(d.len(), 2, "{d:?}");
    }

    #[test]
    fn only_documented_bootstrap_preconditions_are_retried() {
        let e = |m: &str| TalosError::Rpc {
            node: "n".into(),
            rpc: "Bootstrap",
            code: Code::FailedPrecondition,
            message: m.into(),
        };
        assert!(retry_bootstrap(&e("bootstrap is not available yet")));
        assert!(retry_bootstrap(&e("time is not in sync yet")));
        assert!(!retry_bootstrap(&e(
            "bootstrap can only be performed on a control plane node"
        )));
    }
}
