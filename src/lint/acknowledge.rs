//! Acknowledged findings: warnings and infos the profile's owner read and accepted
//! (`lint.acknowledge`). `lint` lists them with their reasons; other commands only
//! count them. An acknowledgement that matches nothing is reported as stale, and
//! one that would waive an error is refused when the profile is read.

use serde::Serialize;

use super::{Finding, RULES, Severity};
use crate::profile::{Acknowledgement, Profile, Refusal};

/// A finding set aside by an acknowledgement, with the owner's reason.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Acknowledged {
    #[serde(flatten)]
    pub finding: Finding,
    pub reason: String,
}

/// An acknowledgement that matched no finding: the problem is gone or it is mistyped.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Stale {
    /// Its place in the profile, `lint.acknowledge[2]`.
    pub field: String,
    pub code: String,
}

/// The first acknowledgement of `p` that cannot be accepted, if any (the profile
/// loader refuses the file with it).
pub fn refusal(p: &Profile) -> Option<Refusal> {
    p.lint
        .acknowledge
        .iter()
        .enumerate()
        .find_map(|(i, a)| refuse(p, i, a))
}

fn refuse(p: &Profile, i: usize, a: &Acknowledgement) -> Option<Refusal> {
    let at = |field: &str, message: String, fix: String| Refusal {
        field: format!("lint.acknowledge[{i}].{field}"),
        message,
        fix,
    };
    let Some(rule) = RULES.iter().find(|r| r.code == a.code) else {
        return Some(at(
            "code",
            format!("`{}` is not a lint code", a.code),
            "use a code that `talos-pve lint` printed (docs/lint-codes.md lists them all)".into(),
        ));
    };
    if rule.severity == Severity::Error {
        return Some(at(
            "code",
            format!(
                "{} ({}) is an error; errors cannot be acknowledged, only fixed",
                rule.code, rule.title
            ),
            format!(
                "fix what {} reports (`talos-pve lint` shows it) and remove this acknowledgement",
                rule.code
            ),
        ));
    }
    if a.reason.trim().is_empty() {
        return Some(at(
            "reason",
            "an acknowledgement needs a reason".into(),
            "say why the finding is acceptable here, e.g. `reason: one control plane is enough for a homelab`".into(),
        ));
    }
    if let Some(node) = &a.node
        && !p.nodes.iter().any(|n| &n.name == node)
    {
        return Some(at(
            "node",
            format!("no node is named `{node}`"),
            "use a name from `nodes`, or drop `node` to acknowledge the code everywhere".into(),
        ));
    }
    None
}

/// Split `findings` into those still shown, those acknowledged, and the
/// acknowledgements that matched nothing. Errors are never set aside.
pub fn apply(p: &Profile, findings: Vec<Finding>) -> (Vec<Finding>, Vec<Acknowledged>, Vec<Stale>) {
    let acks = &p.lint.acknowledge;
    let mut used = vec![false; acks.len()];
    let mut kept = Vec::new();
    let mut acknowledged = Vec::new();
    for f in findings {
        let mut reason = None;
        if f.severity != Severity::Error {
            for (i, a) in acks.iter().enumerate() {
                if matches(p, a, &f) {
                    used[i] = true;
                    reason.get_or_insert_with(|| a.reason.clone());
                }
            }
        }
        match reason {
            Some(reason) => acknowledged.push(Acknowledged { finding: f, reason }),
            None => kept.push(f),
        }
    }
    let stale = acks
        .iter()
        .zip(used)
        .enumerate()
        .filter(|(_, (_, used))| !used)
        .map(|(i, (a, _))| Stale {
            field: format!("lint.acknowledge[{i}]"),
            code: a.code.clone(),
        })
        .collect();
    (kept, acknowledged, stale)
}

fn matches(p: &Profile, a: &Acknowledgement, f: &Finding) -> bool {
    let node = || match &a.node {
        None => true,
        Some(name) => p
            .nodes
            .iter()
            .position(|n| &n.name == name)
            .is_some_and(|i| covers(&format!("nodes[{i}]"), &f.path)),
    };
    a.code == f.code && node() && a.path.as_deref().is_none_or(|path| covers(path, &f.path))
}

/// Whether `field`, or a field below it, is one of a finding's paths (a finding
/// about several fields lists them comma-separated).
fn covers(field: &str, paths: &str) -> bool {
    paths.split(", ").any(|p| {
        p.strip_prefix(field)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with('.') || rest.starts_with('['))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lint::lint;

    fn ack(code: &str, node: Option<&str>, path: Option<&str>) -> Acknowledgement {
        Acknowledgement {
            code: code.into(),
            reason: "accepted for a homelab".into(),
            node: node.map(Into::into),
            path: path.map(Into::into),
        }
    }

    #[test]
    fn a_field_covers_itself_and_what_is_below_it_only() {
        assert!(covers("kubernetes.endpoint", "kubernetes.endpoint"));
        assert!(covers("nodes[1]", "nodes[1].workload.address"));
        assert!(covers("timeServers", "talos.version, timeServers"));
        assert!(!covers("nodes[1]", "nodes[10].name"));
        assert!(!covers("kubernetes.pod", "kubernetes.podSubnet"));
    }

    #[test]
    fn acknowledged_warnings_leave_the_findings_and_keep_their_reason() {
        let mut p = crate::test_support::homelab();
        let before = lint(&p);
        p.lint.acknowledge = vec![
            ack("NET403", None, None),
            ack("NET412", None, Some("timeServers")),
        ];
        let r = lint(&p);
        assert_eq!(r.warnings, before.warnings - 1);
        assert_eq!(r.infos, before.infos - 1);
        assert_eq!(r.with_code("NET403").count(), 0);
        let codes: Vec<_> = r.acknowledged.iter().map(|a| a.finding.code).collect();
        assert_eq!(codes, ["NET403", "NET412"]);
        assert_eq!(r.acknowledged[0].reason, "accepted for a homelab");
        assert!(r.stale.is_empty());
    }

    #[test]
    fn an_acknowledgement_that_matches_nothing_is_stale() {
        let mut p = crate::test_support::homelab();
        p.lint.acknowledge = vec![
            ack("NET403", None, None),
            ack("NET407", Some("talos-k8s-02"), None),
            ack("NET205", None, Some("networks[0]")),
        ];
        let r = lint(&p);
        let stale: Vec<_> = r
            .stale
            .iter()
            .map(|s| (s.field.as_str(), s.code.as_str()))
            .collect();
        assert_eq!(
            stale,
            [
                ("lint.acknowledge[1]", "NET407"),
                ("lint.acknowledge[2]", "NET205")
            ]
        );
        assert_eq!(r.with_code("NET205").count(), 1, "still shown");
    }

    #[test]
    fn errors_unknown_codes_empty_reasons_and_unknown_nodes_are_refused() {
        let mut p = crate::test_support::homelab();
        assert_eq!(refusal(&p), None);
        let refused = |p: &mut Profile, a: Acknowledgement| {
            p.lint.acknowledge = vec![ack("NET403", None, None), a];
            refusal(p).map(|r| (r.field, r.message))
        };
        let (field, message) = refused(&mut p, ack("NET003", None, None)).unwrap();
        assert_eq!(field, "lint.acknowledge[1].code");
        assert!(
            message.contains("errors cannot be acknowledged"),
            "{message}"
        );
        let (field, _) = refused(&mut p, ack("NET999", None, None)).unwrap();
        assert_eq!(field, "lint.acknowledge[1].code");
        let mut empty = ack("NET205", None, None);
        empty.reason = " ".into();
        assert_eq!(
            refused(&mut p, empty).unwrap().0,
            "lint.acknowledge[1].reason"
        );
        assert_eq!(
            refused(&mut p, ack("NET205", Some("nope"), None))
                .unwrap()
                .0,
            "lint.acknowledge[1].node"
        );
    }

    /// Even a profile built in code (no loader) cannot waive an error.
    #[test]
    fn errors_are_never_set_aside() {
        let mut p = crate::test_support::homelab();
        p.nodes[1].management.address = p.nodes[0].management.address;
        let code = lint(&p).findings[0].code;
        p.lint.acknowledge = vec![ack(code, None, None)];
        let r = lint(&p);
        assert!(r.has_errors());
        assert!(r.acknowledged.is_empty());
    }
}
