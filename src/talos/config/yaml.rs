//! A tiny ordered YAML tree and an emitter with the layout Talos tools write (Go yaml.v3:
//! 4-space indentation, sequences indented under their key, `{}`/`[]` for empty
//! collections). Used for machine configs, talosconfig, kubeconfig and `secrets.yaml`.
//!
//! Why not serde-saphyr's serializer: the byte layout is part of the contract here
//! (`secrets.yaml` must round-trip byte-for-byte with what `talosctl gen secrets` wrote,
//! and re-runs must produce identical files), so the layout is owned by this module.

use std::fmt::Write;

/// An ordered YAML value. Maps keep insertion order (Talos' struct order).
#[derive(Clone, PartialEq)]
pub enum Yaml {
    Map(Vec<(String, Yaml)>),
    Seq(Vec<Yaml>),
    Str(String),
    Bool(bool),
    Int(i64),
}

// Values may hold key material: never print them.
impl std::fmt::Debug for Yaml {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Yaml(<redacted>)")
    }
}

impl Yaml {
    pub fn map() -> Self {
        Yaml::Map(Vec::new())
    }

    /// Append `key: value` to a map (builder style).
    pub fn with(mut self, key: &str, value: impl Into<Yaml>) -> Self {
        self.push(key, value);
        self
    }

    /// Append `key: value` only when `value` is `Some`.
    pub fn with_opt(self, key: &str, value: Option<impl Into<Yaml>>) -> Self {
        match value {
            Some(v) => self.with(key, v),
            None => self,
        }
    }

    pub fn push(&mut self, key: &str, value: impl Into<Yaml>) {
        if let Yaml::Map(entries) = self {
            entries.push((key.to_owned(), value.into()));
        }
    }

    pub fn seq<T: Into<Yaml>>(items: impl IntoIterator<Item = T>) -> Self {
        Yaml::Seq(items.into_iter().map(Into::into).collect())
    }

    /// One YAML document, ending in a newline.
    pub fn to_document(&self) -> String {
        let mut out = String::new();
        match self {
            Yaml::Map(e) if !e.is_empty() => emit_map(&mut out, e, 0, 4),
            Yaml::Seq(s) if !s.is_empty() => emit_seq(&mut out, s, 0),
            other => {
                out.push_str(&inline(other));
                out.push('\n');
            }
        }
        out
    }
}

/// Several documents joined by `---` lines, as Talos reads a machine config.
pub fn multi_document(docs: &[Yaml]) -> String {
    docs.iter()
        .map(Yaml::to_document)
        .collect::<Vec<_>>()
        .join("---\n")
}

impl From<&str> for Yaml {
    fn from(s: &str) -> Self {
        Yaml::Str(s.to_owned())
    }
}
impl From<String> for Yaml {
    fn from(s: String) -> Self {
        Yaml::Str(s)
    }
}
impl From<&String> for Yaml {
    fn from(s: &String) -> Self {
        Yaml::Str(s.clone())
    }
}
impl From<bool> for Yaml {
    fn from(b: bool) -> Self {
        Yaml::Bool(b)
    }
}
impl From<u32> for Yaml {
    fn from(n: u32) -> Self {
        Yaml::Int(i64::from(n))
    }
}
impl From<u16> for Yaml {
    fn from(n: u16) -> Self {
        Yaml::Int(i64::from(n))
    }
}
impl From<Vec<Yaml>> for Yaml {
    fn from(v: Vec<Yaml>) -> Self {
        Yaml::Seq(v)
    }
}

fn is_block(v: &Yaml) -> bool {
    match v {
        Yaml::Map(e) => !e.is_empty(),
        Yaml::Seq(s) => !s.is_empty(),
        _ => false,
    }
}

fn inline(v: &Yaml) -> String {
    match v {
        Yaml::Map(_) => "{}".into(),
        Yaml::Seq(_) => "[]".into(),
        Yaml::Str(s) => scalar(s),
        Yaml::Bool(b) => b.to_string(),
        Yaml::Int(n) => n.to_string(),
    }
}

/// Keys at `indent`; nested blocks at `child` (yaml.v3 nests a sequence item's map
/// blocks relative to the dash, not to the key).
fn emit_map(out: &mut String, entries: &[(String, Yaml)], indent: usize, child: usize) {
    for (i, (k, v)) in entries.iter().enumerate() {
        // The first key of a map inside a sequence item sits after "- ".
        if i > 0 || !out.ends_with("- ") {
            out.push_str(&" ".repeat(indent));
        }
        out.push_str(&scalar(k));
        out.push(':');
        if is_block(v) {
            out.push('\n');
            match v {
                Yaml::Map(e) => emit_map(out, e, child, child + 4),
                Yaml::Seq(s) => emit_seq(out, s, child),
                _ => unreachable!("is_block covers only collections"),
            }
        } else {
            let _ = writeln!(out, " {}", inline(v));
        }
    }
}

fn emit_seq(out: &mut String, items: &[Yaml], indent: usize) {
    for item in items {
        out.push_str(&" ".repeat(indent));
        out.push_str("- ");
        match item {
            Yaml::Map(e) if !e.is_empty() => emit_map(out, e, indent + 2, indent + 4),
            Yaml::Seq(s) if !s.is_empty() => {
                out.push('\n');
                emit_seq(out, s, indent + 4);
            }
            other => {
                out.push_str(&inline(other));
                out.push('\n');
            }
        }
    }
}

/// A string scalar: plain when YAML reads it back as the same string, quoted otherwise.
pub fn scalar(s: &str) -> String {
    if needs_quotes(s) {
        if s.contains('"') && !s.contains('\'') && !s.contains('\n') {
            format!("'{s}'")
        } else {
            // JSON string syntax is valid YAML double-quoted syntax.
            serde_json::to_string(s).unwrap_or_else(|_| format!("\"{s}\""))
        }
    } else {
        s.to_owned()
    }
}

fn needs_quotes(s: &str) -> bool {
    let Some(first) = s.chars().next() else {
        return true;
    };
    let lower = s.to_ascii_lowercase();
    let reserved = matches!(
        lower.as_str(),
        "true" | "false" | "yes" | "no" | "on" | "off" | "y" | "n" | "null" | "~"
    );
    let numeric = s.parse::<f64>().is_ok()
        || s.starts_with("0x")
        || s.starts_with("0o")
        || lower == ".inf"
        || lower == ".nan";
    let bad_start = "?:,[]{}#&*!|>'\"%@`".contains(first)
        || (first == '-' && (s.len() == 1 || s[1..].starts_with(' ')))
        || first == ' ';
    reserved
        || numeric
        || bad_start
        || s.ends_with(' ')
        || s.ends_with(':')
        || s.contains(": ")
        || s.contains(" #")
        || s.contains('"')
        || s.chars().any(|c| c.is_control())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_matches_go_yaml_v3() {
        let doc = Yaml::map()
            .with("version", "v1alpha1")
            .with("debug", false)
            .with(
                "machine",
                Yaml::map()
                    .with("certSANs", Yaml::Seq(vec![]))
                    .with("nodeLabels", Yaml::map().with("a/b", ""))
                    .with("podSubnets", Yaml::seq(["10.244.0.0/16"])),
            )
            .with(
                "rules",
                Yaml::seq([Yaml::map().with("name", "PodSecurity").with(
                    "exemptions",
                    Yaml::map().with("namespaces", Yaml::seq(["kube-system"])),
                )]),
            )
            .with("service", Yaml::map());
        assert_eq!(
            doc.to_document(),
            "version: v1alpha1\ndebug: false\nmachine:\n    certSANs: []\n    nodeLabels:\n        a/b: \"\"\n    podSubnets:\n        - 10.244.0.0/16\nrules:\n    - name: PodSecurity\n      exemptions:\n        namespaces:\n            - kube-system\nservice: {}\n"
        );
    }

    #[test]
    fn ambiguous_scalars_are_quoted() {
        assert_eq!(scalar("false"), "\"false\"");
        assert_eq!(scalar("7445"), "\"7445\"");
        assert_eq!(scalar(""), "\"\"");
        assert_eq!(scalar("-abc"), "-abc");
        assert_eq!(scalar("a: b"), "\"a: b\"");
        assert_eq!(
            scalar(r#"mac(link.permanent_addr) == "bc:24:11:00:16:20""#),
            r#"'mac(link.permanent_addr) == "bc:24:11:00:16:20"'"#
        );
        assert_eq!(scalar("https://base:6443"), "https://base:6443");
        assert_eq!(scalar("LS0tLS1CRUdJTi=="), "LS0tLS1CRUdJTi==");
    }

    proptest::proptest! {
        #[test]
        fn any_string_reads_back_unchanged(s in "[\\PC\\t\\n]{0,24}") {
            let y = format!("k: {}\n", scalar(&s));
            let back: std::collections::BTreeMap<String, String> =
                serde_saphyr::from_str(&y).unwrap();
            proptest::prop_assert_eq!(&back["k"], &s);
        }
    }

    #[test]
    fn quoted_scalars_read_back_as_strings() {
        for s in ["false", "1.30", "", "on", "- x", "#x", "a: b", "x\ny"] {
            let y = format!("k: {}\n", scalar(s));
            let back: std::collections::BTreeMap<String, String> =
                serde_saphyr::from_str(&y).unwrap();
            assert_eq!(back["k"], s, "{y}");
        }
    }
}
