//! Network-plan lint: every rule of the network review as a finding with severity,
//! stable code, field path, reason and fix.
//!
//! `lint(&Profile)` is pure. Rules are small functions grouped by theme:
//! `addresses` (NET0xx), `pods` (NET1xx), `metallb` (NET2xx), `topology` (NET3xx) and
//! `kubernetes` (NET4xx, endpoint/roles/routing), `values` (NET5xx, each value in
//! the format of the system that receives it) and `routing` (NET6xx, the routing
//! rehearsal of the generated configs). Each rule's code, severity and title
//! live in one `Rule` constant beside the rule; [`RULES`] lists them all and
//! `docs/lint-codes.md` is generated from that list (a test keeps them in sync).
//! Codes are stable: a retired rule's code is never reused.
//!
//! The profile's `lint.acknowledge` sets accepted warnings and infos apart
//! (`acknowledge`): counted, not repeated.
//!
//! Lint must not do I/O, derive plan values (that is `plan`) or change the profile.

mod acknowledge;
mod addresses;
mod facts;
mod kubernetes;
mod metallb;
mod pods;
mod render;
mod routing;
mod topology;
mod values;

#[cfg(test)]
mod tests;

use serde::Serialize;

use crate::profile::Profile;

pub use acknowledge::{Acknowledged, Stale, refusal};
pub use render::{codes_markdown, render_brief, render_text};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Error,
    Warning,
    Info,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Error => "error",
            Severity::Warning => "warning",
            Severity::Info => "info",
        }
    }
}

/// A lint rule's identity: what `docs/lint-codes.md` lists.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rule {
    pub code: &'static str,
    pub severity: Severity,
    pub title: &'static str,
}

impl Rule {
    const fn new(code: &'static str, severity: Severity, title: &'static str) -> Self {
        Self {
            code,
            severity,
            title,
        }
    }

    /// A finding of this rule at `path`.
    fn at(
        &self,
        path: impl Into<String>,
        message: impl Into<String>,
        fix: impl Into<String>,
    ) -> Finding {
        Finding {
            severity: self.severity,
            code: self.code,
            path: path.into(),
            message: message.into(),
            fix: fix.into(),
        }
    }
}

/// One problem found in a profile. The JSON form (`lint --output json`) uses these
/// field names; they are stable.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    pub severity: Severity,
    pub code: &'static str,
    /// Profile path of the offending field, e.g. `nodes[0].workload.address`.
    pub path: String,
    /// Why it is a problem, in one sentence.
    pub message: String,
    /// What to change.
    pub fix: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
pub struct Report {
    pub errors: usize,
    pub warnings: usize,
    pub infos: usize,
    pub findings: Vec<Finding>,
    /// Findings the profile acknowledges (`lint.acknowledge`); not in the counts.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub acknowledged: Vec<Acknowledged>,
    /// Acknowledgements that matched no finding.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub stale: Vec<Stale>,
}

impl Report {
    fn new(mut findings: Vec<Finding>) -> Self {
        // Stable order: severity, then field path (indices numerically), then code.
        findings.sort_by(|a, b| {
            (a.severity, path_key(&a.path), a.code).cmp(&(b.severity, path_key(&b.path), b.code))
        });
        findings.dedup();
        let count = |s| findings.iter().filter(|f| f.severity == s).count();
        Self {
            errors: count(Severity::Error),
            warnings: count(Severity::Warning),
            infos: count(Severity::Info),
            findings,
            acknowledged: Vec::new(),
            stale: Vec::new(),
        }
    }

    /// Set aside what `p` acknowledges; the counts are of what is left.
    fn acknowledge(self, p: &Profile) -> Self {
        let (kept, acknowledged, stale) = acknowledge::apply(p, self.findings);
        Self {
            acknowledged,
            stale,
            ..Self::new(kept)
        }
    }

    /// Nothing to show at all: no finding, acknowledged or not, no stale acknowledgement.
    pub fn is_clean(&self) -> bool {
        self.findings.is_empty() && self.acknowledged.is_empty() && self.stale.is_empty()
    }

    /// The one line commands other than `lint` print about warnings they proceed
    /// with: `lint: 2 warning(s), 2 acknowledged finding(s); `talos-pve lint` shows them`.
    pub fn notice(&self) -> Option<String> {
        let parts: Vec<String> = [
            (self.warnings, "warning(s)"),
            (self.acknowledged.len(), "acknowledged finding(s)"),
            (self.stale.len(), "stale acknowledgement(s)"),
        ]
        .into_iter()
        .filter(|(n, _)| *n > 0)
        .map(|(n, what)| format!("{n} {what}"))
        .collect();
        (!parts.is_empty())
            .then(|| format!("lint: {}; `talos-pve lint` shows them", parts.join(", ")))
    }

    /// One line per error (`NET003 nodes[0].workload.address: … fix: …`), for the
    /// wizard's final check.
    pub fn error_lines(&self) -> Vec<String> {
        self.findings
            .iter()
            .filter(|f| f.severity == Severity::Error)
            .map(|f| format!("{} {}: {} (fix: {})", f.code, f.path, f.message, f.fix))
            .collect()
    }

    pub fn has_errors(&self) -> bool {
        self.errors > 0
    }

    pub fn with_code<'a>(&'a self, code: &'a str) -> impl Iterator<Item = &'a Finding> + 'a {
        self.findings.iter().filter(move |f| f.code == code)
    }
}

#[derive(Debug, PartialEq, Eq, PartialOrd, Ord)]
enum PathPart<'a> {
    Text(&'a str),
    Index(u64),
}

/// `nodes[10].podCIDR` → [Text("nodes["), Index(10), Text("].podCIDR")], so that
/// `nodes[2]` sorts before `nodes[10]`.
fn path_key(path: &str) -> Vec<PathPart<'_>> {
    let mut parts = Vec::new();
    let mut rest = path;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        if digits > 0 {
            parts.push(PathPart::Index(rest[..digits].parse().unwrap_or(u64::MAX)));
            rest = &rest[digits..];
        } else {
            let text = rest
                .find(|c: char| c.is_ascii_digit())
                .unwrap_or(rest.len());
            parts.push(PathPart::Text(&rest[..text]));
            rest = &rest[text..];
        }
    }
    parts
}

/// Every rule, in code order.
pub const RULES: &[Rule] = &[
    addresses::OUTSIDE_SUBNET,
    addresses::NETWORK_OR_BROADCAST,
    addresses::GATEWAY_CONFLICT,
    addresses::DUPLICATE,
    addresses::IN_DHCP_RANGE,
    addresses::IN_RESERVED_RANGE,
    addresses::RESERVATION_OUTSIDE,
    addresses::UNKNOWN_NETWORK,
    addresses::BAD_MAC,
    addresses::DUPLICATE_MAC,
    pods::ON_LINK,
    pods::SERVICE_OVERLAP,
    pods::PODS_OVERLAP,
    pods::OUTSIDE_POD_SUBNET,
    pods::POD_SUBNET_HOLDS_ADDRESS,
    pods::NATIVE_ROUTING,
    pods::NO_ROOM,
    pods::BAD_NODE_PREFIX,
    pods::POD_SUBNET_ON_LINK,
    metallb::OUTSIDE_WORKLOAD,
    metallb::HOLDS_ADDRESS,
    metallb::OVERLAPS_PODS,
    metallb::OVERLAPS_RESERVED,
    metallb::DHCP_UNDECLARED,
    metallb::WRONG_INTERFACE,
    topology::NETWORK_ROLES,
    topology::MISSING_GATEWAY,
    topology::VLAN_RANGE,
    topology::VLAN_DUPLICATE,
    topology::SUBNET_OVERLAP,
    topology::MTU_RANGE,
    topology::MTU_ABOVE_UPLINK,
    topology::NODE_NAME,
    topology::NODE_NAME_DUPLICATE,
    topology::VMID_RANGE,
    topology::VMID_DUPLICATE,
    topology::UNKNOWN_HOST,
    topology::GATEWAY_PLACEMENT,
    topology::NO_NODES,
    topology::HOST_DUPLICATE,
    topology::NODE_LINKS,
    kubernetes::ENDPOINT_URL,
    kubernetes::ENDPOINT_TARGET,
    kubernetes::ENDPOINT_SPOF,
    kubernetes::SCHEDULING,
    kubernetes::TALOS_VERSION,
    kubernetes::DEFAULT_ROUTE_GATEWAY,
    kubernetes::STATIC_ROUTES,
    kubernetes::FIREWALL,
    kubernetes::SERVICE_ON_LINK,
    kubernetes::ASYMMETRIC_MANAGEMENT,
    kubernetes::NO_CONTROL_PLANE,
    kubernetes::EGRESS,
    values::CLUSTER_NAME,
    values::ENDPOINT_FORMAT,
    values::TOKEN_ID,
    values::FINGERPRINT,
    values::BRIDGE,
    values::STORAGE,
    values::HOST_NAME,
    values::RESOURCES,
    values::TALOS_TAG,
    values::KUBERNETES_VERSION,
    values::KUBERNETES_RANGE,
    values::INSTALL_DISK,
    values::KERNEL_ARG,
    values::EXTENSION,
    values::TIME_SERVER,
    values::DNS_SERVER,
    values::DNS_NAME,
    values::SERVICE_SUBNET,
    values::POD_RANGE,
    values::ADDON_VERSION,
    values::OBJECT_NAME,
    values::INTERFACE,
    values::NETWORK_SUBNET,
    values::TOPOLOGY,
    values::PLAIN_HTTP_FACTORY,
    routing::ASYMMETRIC,
    routing::BYPASSES_GATEWAY,
    routing::UNREACHABLE,
];

/// Check a profile's network plan against every rule.
pub fn lint(p: &Profile) -> Report {
    let facts = facts::Facts::gather(p);
    let mut out = Vec::new();
    addresses::check(&facts, &mut out);
    pods::check(&facts, &mut out);
    metallb::check(&facts, &mut out);
    topology::check(&facts, &mut out);
    kubernetes::check(&facts, &mut out);
    values::check(&facts, &mut out);
    if !out.iter().any(|f| f.severity == Severity::Error) {
        routing::check(p, &mut out);
    }
    Report::new(out).acknowledge(p)
}
