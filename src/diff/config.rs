//! A semantic diff of two machine configs (multi-document YAML): documents are
//! matched by kind and name, values compared as data (key order, quoting and
//! comments do not count), and every change is one line with its path. Secret
//! material (keys, tokens, secrets, certificates) is never shown: only that it changed.

use serde::Serialize;
use serde_json::Value;

/// One changed value; `from`/`to` are compact JSON, `None` when absent on that side.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Change {
    /// `v1alpha1 machine.kubelet.image`, `LinkAliasConfig/mgmt selector.match`.
    pub path: String,
    pub from: Option<String>,
    pub to: Option<String>,
}

impl std::fmt::Display for Change {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let side = |v: &Option<String>| v.clone().unwrap_or_else(|| "(absent)".into());
        write!(
            f,
            "{}: {} → {}",
            self.path,
            side(&self.from),
            side(&self.to)
        )
    }
}

const REDACTED: &str = "<redacted>";

/// Field names whose values are key material or credentials (Talos v1alpha1:
/// `machine.ca.key`, `machine.token`, `cluster.secret`, `cluster.token`,
/// `cluster.secretboxEncryptionSecret`, …). Certificates are public but long and
/// tied to the keys: shown as changed, not printed.
fn secret(field: &str) -> bool {
    let f = field.to_ascii_lowercase();
    matches!(f.as_str(), "key" | "crt" | "token" | "secret")
        || f.ends_with("secret")
        || f.ends_with("token")
        || f.ends_with("key")
}

fn documents(text: &str) -> Result<Vec<(String, Value)>, String> {
    let docs: Vec<Value> = serde_saphyr::from_str_multiple(text).map_err(|e| e.to_string())?;
    Ok(docs
        .into_iter()
        .filter(|d| !d.is_null())
        .map(|d| {
            let key = match (
                d.get("kind").and_then(Value::as_str),
                d.get("name").and_then(Value::as_str),
            ) {
                (Some(k), Some(n)) => format!("{k}/{n}"),
                (Some(k), None) => k.to_owned(),
                // The v1alpha1 document has `version`, no `kind`.
                (None, _) => d
                    .get("version")
                    .and_then(Value::as_str)
                    .unwrap_or("?")
                    .to_owned(),
            };
            (key, d)
        })
        .collect())
}

/// What changes from `old` to `new`, secrets redacted. Errors name the side that
/// does not parse.
pub fn diff(old: &str, new: &str) -> Result<Vec<Change>, String> {
    let old = documents(old).map_err(|e| format!("the current config is not YAML: {e}"))?;
    let new = documents(new).map_err(|e| format!("the profile's config is not YAML: {e}"))?;
    let mut out = Vec::new();
    for (key, o) in &old {
        let n = new.iter().find(|(k, _)| k == key).map(|(_, v)| v);
        walk(key, "", Some(o), n, false, &mut out);
    }
    for (key, n) in new.iter().filter(|(k, _)| !old.iter().any(|(o, _)| o == k)) {
        walk(key, "", None, Some(n), false, &mut out);
    }
    Ok(out)
}

fn walk(
    doc: &str,
    path: &str,
    old: Option<&Value>,
    new: Option<&Value>,
    hidden: bool,
    out: &mut Vec<Change>,
) {
    if old == new {
        return;
    }
    if let (Some(Value::Object(o)), Some(Value::Object(n))) = (old, new) {
        let mut keys: Vec<&String> = o.keys().chain(n.keys()).collect();
        keys.sort();
        keys.dedup();
        for k in keys {
            let p = if path.is_empty() {
                k.clone()
            } else {
                format!("{path}.{k}")
            };
            walk(doc, &p, o.get(k), n.get(k), hidden || secret(k), out);
        }
        return;
    }
    let show = |v: Option<&Value>| {
        v.map(|v| {
            if hidden || contains_secret(v) {
                REDACTED.to_owned()
            } else {
                v.to_string()
            }
        })
    };
    let path = if path.is_empty() {
        doc.to_owned()
    } else {
        format!("{doc} {path}")
    };
    out.push(Change {
        path,
        from: show(old),
        to: show(new),
    });
}

/// How a changed machine config reaches a running node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Apply {
    /// Nothing differs.
    Unchanged,
    /// Talos applies it in place (NO_REBOOT; kubelet or static pods may restart).
    NoReboot,
    /// Only a reboot applies it (STAGED, then a reboot).
    RebootNeeded,
}

/// The `v1alpha1` paths Talos applies in place (`CanApplyImmediate`, talos v1.13.9
/// `internal/app/machined/pkg/runtime/v1alpha1/v1alpha1_runtime.go` L130-217; same in
/// v1.12): everything else in that document needs a reboot, other documents never do.
const IMMEDIATE: &[&str] = &[
    "debug",
    "cluster",
    "machine.ca",
    "machine.acceptedCAs",
    "machine.time",
    "machine.certSANs",
    "machine.install",
    "machine.network",
    "machine.sysfs",
    "machine.sysctls",
    "machine.logging",
    "machine.controlPlane",
    "machine.kubelet",
    "machine.kernel",
    "machine.registries",
    "machine.pods",
    "machine.seccompProfiles",
    "machine.nodeAnnotations",
    "machine.nodeLabels",
    "machine.nodeTaints",
    // Only when `machine.features` exists on both sides: `walk` then reports the
    // leaves; adding or removing `machine.features` itself is one change at that path.
    "machine.features.kubernetesTalosAPIAccess",
    "machine.features.kubePrism",
    "machine.features.hostDNS",
    "machine.features.imageCache",
    "machine.features.nodeAddressSortAlgorithm",
];

/// Whether this change alone needs a reboot (talos-day2.md §3.2).
pub fn needs_reboot(c: &Change) -> bool {
    let Some(path) = c.path.strip_prefix("v1alpha1") else {
        return false;
    };
    let Some(path) = path.strip_prefix(' ') else {
        // The whole v1alpha1 document added or removed.
        return path.is_empty();
    };
    !IMMEDIATE.iter().any(|p| {
        path == *p
            || path
                .strip_prefix(p)
                .is_some_and(|rest| rest.starts_with('.'))
    })
}

/// The least disruptive way to apply `changes` (the decision Talos' AUTO mode makes).
pub fn classify(changes: &[Change]) -> Apply {
    if changes.is_empty() {
        Apply::Unchanged
    } else if changes.iter().any(needs_reboot) {
        Apply::RebootNeeded
    } else {
        Apply::NoReboot
    }
}

/// A whole subtree shown as one value: hidden if any field inside is secret.
fn contains_secret(v: &Value) -> bool {
    match v {
        Value::Object(m) => m.iter().any(|(k, v)| secret(k) || contains_secret(v)),
        Value::Array(a) => a.iter().any(contains_secret),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const OLD: &str = "version: v1alpha1\nmachine:\n  token: abc.123\n  ca: {crt: AAA, key: BBB}\n  kubelet:\n    image: ghcr.io/siderolabs/kubelet:v1.35.4\ncluster:\n  secret: s1\n---\napiVersion: v1alpha1\nkind: HostnameConfig\nhostname: n1\n";

    #[test]
    fn values_are_compared_as_data_with_secrets_redacted() {
        // Reordered and re-quoted, same data: no change.
        let same = "machine:\n  kubelet: {image: \"ghcr.io/siderolabs/kubelet:v1.35.4\"}\n  ca: {key: BBB, crt: AAA}\n  token: abc.123\nversion: v1alpha1\ncluster: {secret: s1}\n---\nkind: HostnameConfig\napiVersion: v1alpha1\nhostname: n1\n";
        assert_eq!(diff(OLD, same).unwrap(), []);
        let new = OLD
            .replace("v1.35.4", "v1.36.3")
            .replace("key: BBB", "key: CCC")
            .replace("secret: s1", "secret: s2")
            .replace("hostname: n1", "hostname: n2");
        let d = diff(OLD, &new).unwrap();
        let lines: Vec<String> = d.iter().map(ToString::to_string).collect();
        assert_eq!(
            lines,
            [
                "v1alpha1 cluster.secret: <redacted> → <redacted>",
                "v1alpha1 machine.ca.key: <redacted> → <redacted>",
                "v1alpha1 machine.kubelet.image: \"ghcr.io/siderolabs/kubelet:v1.35.4\" → \"ghcr.io/siderolabs/kubelet:v1.36.3\"",
                "HostnameConfig hostname: \"n1\" → \"n2\"",
            ]
        );
        let all = format!("{d:?}");
        for s in ["BBB", "CCC", "s1", "s2", "abc.123"] {
            assert!(!all.contains(s), "{s} leaked: {all}");
        }
    }

    #[test]
    fn added_and_removed_documents_and_subtrees_hide_secrets_inside() {
        let new = format!(
            "{OLD}---\napiVersion: v1alpha1\nkind: LinkAliasConfig\nname: mgmt\nselector: {{match: x}}\n"
        )
        .replace("  ca: {crt: AAA, key: BBB}\n", "");
        let d = diff(OLD, &new).unwrap();
        let lines: Vec<String> = d.iter().map(ToString::to_string).collect();
        assert!(
            lines.contains(&"v1alpha1 machine.ca: <redacted> → (absent)".to_owned()),
            "{lines:?}"
        );
        assert!(
            lines.contains(&"LinkAliasConfig/mgmt: (absent) → {\"apiVersion\":\"v1alpha1\",\"kind\":\"LinkAliasConfig\",\"name\":\"mgmt\",\"selector\":{\"match\":\"x\"}}".to_owned()),
            "{lines:?}"
        );
        assert!(diff("a: [", OLD).unwrap_err().contains("current config"));
    }

    #[test]
    fn reboot_is_needed_exactly_outside_the_immediate_paths() {
        let base = "version: v1alpha1\nmachine:\n  type: worker\n  nodeLabels: {a: b}\n  sysctls: {x: '1'}\n  features: {rbac: true, kubePrism: {enabled: true, port: 7445}}\n  install: {disk: /dev/sda}\ncluster: {clusterName: c}\n---\napiVersion: v1alpha1\nkind: HostnameConfig\nhostname: n1\n";
        let class = |from: &str, to: &str| classify(&diff(base, &base.replace(from, to)).unwrap());
        assert_eq!(classify(&diff(base, base).unwrap()), Apply::Unchanged);
        for (from, to) in [
            ("{a: b}", "{a: c}"),
            ("x: '1'", "x: '2'"),
            ("port: 7445", "port: 7446"),
            ("/dev/sda", "/dev/vda"),
            ("clusterName: c", "clusterName: d"),
            ("hostname: n1", "hostname: n2"),
            (
                "  type: worker\n",
                "  type: worker\n  certSANs: [a.example]\n",
            ),
        ] {
            assert_eq!(class(from, to), Apply::NoReboot, "{from} → {to}");
        }
        for (from, to) in [
            ("rbac: true", "rbac: false"),
            ("type: worker", "type: controlplane"),
            (
                "  type: worker\n",
                "  type: worker\n  files: [{path: /var/f, content: x, op: create}]\n",
            ),
            (
                "  features: {rbac: true, kubePrism: {enabled: true, port: 7445}}\n",
                "",
            ),
            ("  type: worker\n", "  type: worker\n  env: {A: b}\n"),
        ] {
            assert_eq!(class(from, to), Apply::RebootNeeded, "{from} → {to}");
        }
    }
}
