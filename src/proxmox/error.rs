//! Errors of the Proxmox client and of the operations built on it.
//!
//! Every message names the request (method and API path) or the VM, and where a
//! user can act, the fix. The token secret never reaches any of them: requests
//! carry it only in a sensitive header, and no variant holds a header.

use std::collections::BTreeMap;

use thiserror::Error;

use crate::net::NetError;

#[derive(Debug, Error)]
pub enum PveError {
    #[error(
        "Proxmox endpoint `{0}` is not a URL like https://10.8.16.10:8006\n  fix: set `proxmox.endpoint` in the profile or PROXMOX_VE_ENDPOINT"
    )]
    BadEndpoint(String),
    #[error(transparent)]
    Value(#[from] super::propstr::PropError),
    #[error(
        "`{segment}` cannot be part of a Proxmox API path: {why}\n  fix: correct the profile value it comes from (`talos-pve lint` names the field: host names NET507, storages NET506)"
    )]
    PathSegment { segment: String, why: &'static str },
    #[error("Proxmox endpoint {endpoint}: {source}")]
    Resolve {
        endpoint: String,
        #[source]
        source: NetError,
    },
    #[error(
        "no Proxmox credentials\n  fix: export PROXMOX_VE_API_TOKEN='USER@REALM!TOKENID=SECRET', set `proxmox.tokenFile`, or PROXMOX_VE_USERNAME and PROXMOX_VE_PASSWORD"
    )]
    NoCredentials,
    #[error(
        "{origin} does not hold an API token of the form USER@REALM!TOKENID=SECRET (or the bare secret in a token file)\n  fix: copy the token id and secret shown by `pveum user token add`"
    )]
    BadToken { origin: String },
    #[error("reading the Proxmox token file {path}: {source}\n  fix: check `proxmox.tokenFile`")]
    TokenFile {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "`{0}` is not a SHA-256 fingerprint\n  fix: copy it from `pvenode cert info` or the web UI (AA:BB:…, 32 bytes)"
    )]
    BadFingerprint(String),
    #[error("building the HTTPS client: {0}")]
    Tls(String),
    /// The request did not get an HTTP answer. `detail` is the innermost cause
    /// only: reqwest and hyper wrap it in layers that each repeat "error sending
    /// request".
    #[error("{method} {path} at {endpoint}: {}: {detail}", .kind.what())]
    Transport {
        method: String,
        path: String,
        endpoint: String,
        kind: TransportKind,
        detail: String,
    },
    #[error(
        "{endpoint}: the Proxmox API certificate is not trusted ({detail}); it presents SHA-256 fingerprint {fingerprint}\n  fix: one of\n    1. check that fingerprint on the host (`pvenode cert info`, or the web UI: node → System → Certificates), then pin it: `proxmox.fingerprint: {fingerprint}` (or --fingerprint / PROXMOX_VE_FINGERPRINT)\n    2. trust the cluster CA: copy /etc/pve/pve-root-ca.pem from a host and set `proxmox.caFile` (or --pve-ca FILE)\n    3. install a certificate from a CA this machine already trusts (ACME: `pvenode acme cert order`)"
    )]
    Certificate {
        endpoint: String,
        fingerprint: String,
        detail: String,
    },
    #[error(
        "host `{host}` has no Proxmox endpoint: the profile lists standalone hosts (`proxmox.hosts[].endpoint`) and this one is not among them\n  fix: give host `{host}` an `endpoint` in `proxmox.hosts[]`"
    )]
    UnknownHost { host: String },
    #[error(
        "standalone host `{host}` does not answer, so its VMs are unknown: {source}\n  fix: bring it back; to go on without it, remove it and its nodes from the profile"
    )]
    HostDown {
        host: String,
        #[source]
        source: Box<PveError>,
    },
    #[error(
        "reading the Proxmox CA file {path}: {detail}\n  fix: copy /etc/pve/pve-root-ca.pem from a Proxmox host and point `caFile` (or --pve-ca) at it"
    )]
    CaFile { path: String, detail: String },
    #[error("{method} {path}: HTTP {status}: {message}{}{}", fmt_errors(.errors), fix_for(*.status))]
    Api {
        method: String,
        path: String,
        status: u16,
        message: String,
        errors: BTreeMap<String, String>,
    },
    #[error("{method} {path}: unexpected response: {detail}")]
    Decode {
        method: String,
        path: String,
        detail: String,
    },
    #[error("Proxmox task {upid} on node {node} failed: {message}")]
    TaskFailed {
        upid: String,
        node: String,
        message: String,
    },
    #[error(
        "Proxmox task {upid} on node {node} did not finish within {secs}s (it may still be running there)\n  fix: check the task log in the Proxmox UI, then re-run: the run resumes"
    )]
    TaskTimeout {
        upid: String,
        node: String,
        secs: u64,
    },
    #[error(
        "Image Factory {url}: {detail}\n  fix: check talos.imageFactory / TALOS_PVE_IMAGE_FACTORY"
    )]
    Factory { url: String, detail: String },
}

/// The fix line for statuses whose cause the message does not name.
fn fix_for(status: u16) -> &'static str {
    match status {
        401 => {
            "\n  fix: check the credentials: a token is USER@REALM!TOKENID=SECRET with the realm (`root@pam`, `talos@pve`), must exist and not be expired (`pveum user token list USER`); a privilege-separated token (the default) has only the ACLs granted to the token itself (`pveum acl modify / --tokens USER@REALM!TOKENID --roles …`); a password login cannot pass a second factor (TOTP/WebAuthn): use a token"
        }
        _ => "",
    }
}

fn fmt_errors(errors: &BTreeMap<String, String>) -> String {
    errors
        .iter()
        .map(|(k, v)| format!("\n  {k}: {}", v.trim_end()))
        .collect()
}

impl PveError {
    pub fn status(&self) -> Option<u16> {
        match self {
            PveError::Api { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// The server's message (API errors) or the task's exit status.
    pub fn message(&self) -> Option<&str> {
        match self {
            PveError::Api { message, .. } | PveError::TaskFailed { message, .. } => Some(message),
            _ => None,
        }
    }

    /// The per-VM lock timeout — not the bare "got timeout" that also ends a
    /// failed powerdown.
    pub fn is_lock_timeout(&self) -> bool {
        self.message()
            .is_some_and(|m| m.contains("can't lock file") && m.contains("got timeout"))
    }

    /// `got no worker upid - start worker failed`: the task never ran.
    pub fn is_no_worker(&self) -> bool {
        self.message()
            .is_some_and(|m| m.contains("got no worker upid"))
    }

    /// Transient per the reference: lock timeouts, a worker that did not start
    /// (except for a VM create, which leaves its `lock: create` stub behind:
    /// proxmox-semantics §1.3), and proxy errors or dropped connections on reads.
    pub fn is_transient(&self, method: &str) -> bool {
        let read = method == "GET";
        match self {
            PveError::Api { status, path, .. } => {
                let create = method == "POST" && path.ends_with("/qemu");
                self.is_lock_timeout()
                    || (self.is_no_worker() && !create)
                    || (read && matches!(status, 595 | 596))
            }
            PveError::Transport { kind, .. } => read || *kind == TransportKind::Connect,
            _ => false,
        }
    }

    /// Safe to send again to another endpoint of the same cluster: a read, or a
    /// request that never reached the API (no connection; 595 is PVE's own
    /// "connection establishment failed"). A write that may have been applied
    /// (timeout, 596/597) is not replayed blindly (proxmox-semantics §5).
    pub fn may_fail_over(&self, method: &str) -> bool {
        let read = method == "GET";
        match self {
            PveError::Transport { kind, .. } => read || *kind == TransportKind::Connect,
            PveError::Api { status, .. } => *status == 595 || (read && *status == 596),
            _ => false,
        }
    }
}

/// How a request without an HTTP answer failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransportKind {
    /// No connection: the request never reached the server.
    Connect,
    /// No answer in time: a write may have been applied.
    Timeout,
    /// The connection broke during the exchange.
    Other,
}

impl TransportKind {
    fn what(self) -> &'static str {
        match self {
            TransportKind::Connect => "cannot connect",
            TransportKind::Timeout => "no answer in time",
            TransportKind::Other => "the connection failed",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_reads_and_requests_that_never_arrived_fail_over() {
        let api = |status| PveError::Api {
            method: "POST".into(),
            path: "/nodes/pve-1/qemu".into(),
            status,
            message: String::new(),
            errors: BTreeMap::new(),
        };
        let transport = |kind| PveError::Transport {
            method: "POST".into(),
            path: "/nodes/pve-1/qemu".into(),
            endpoint: "https://10.8.16.10:8006".into(),
            kind,
            detail: "x".into(),
        };
        for (e, read, write) in [
            (api(595), true, true),
            (api(596), true, false),
            (api(500), false, false),
            (transport(TransportKind::Connect), true, true),
            (transport(TransportKind::Timeout), true, false),
            (transport(TransportKind::Other), true, false),
        ] {
            assert_eq!(e.may_fail_over("GET"), read, "{e}");
            assert_eq!(e.may_fail_over("POST"), write, "{e}");
        }
    }

    #[test]
    fn an_authentication_failure_says_what_to_check() {
        let e = PveError::Api {
            method: "GET".into(),
            path: "/version".into(),
            status: 401,
            message: "authentication failure".into(),
            errors: BTreeMap::new(),
        };
        let msg = e.to_string();
        assert!(
            msg.starts_with("GET /version: HTTP 401: authentication failure\n  fix: "),
            "{msg}"
        );
        assert!(msg.contains("USER@REALM!TOKENID=SECRET"), "{msg}");
        assert!(msg.contains("privilege-separated"), "{msg}");
        assert!(msg.contains("second factor"), "{msg}");
    }
}
