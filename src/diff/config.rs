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
}
