//! The one JSON Schema checker of the crate: the subset of keywords that Kubernetes CRD
//! schemas, the Cilium chart's `values.schema.json` and the Talos machine-config
//! schemas use — `type`, `enum`, `minimum`, `maximum`, `pattern`, `anyOf`, `oneOf`,
//! local `$ref` (`#/$defs/…`, `#/definitions/…`), `required`, `properties`,
//! `patternProperties`, `additionalProperties`, `items` and
//! `x-kubernetes-preserve-unknown-fields`. Annotations (`title`, `description`,
//! `format`, …) are ignored.
//!
//! Stricter than JSON Schema on purpose: a property the schema does not list is an
//! issue marked [`Issue::unknown`] (the API server would silently prune it, Helm would
//! silently ignore it), unless the schema allows extra properties or preserves unknown
//! fields. Callers that want plain JSON Schema semantics filter those out.
//!
//! It only reports; it never fetches remote `$ref`s and never panics on a bad schema
//! (an unresolvable `$ref` or invalid `pattern` is itself an issue).

use serde_json::{Map, Value};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Issue {
    /// Dotted path of the offending value (`spec.addresses[0]`), `(root)` for the
    /// document itself.
    pub path: String,
    pub message: String,
    /// The value is well-formed but the schema does not list this property.
    pub unknown: bool,
}

impl std::fmt::Display for Issue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

/// Every issue of `value` against `schema` (empty = valid). `schema` is also the root
/// that `$ref`s resolve against.
pub fn validate(schema: &Value, value: &Value) -> Vec<Issue> {
    let mut out = Vec::new();
    Checker { root: schema }.check(schema, value, "", &mut out);
    out
}

struct Checker<'a> {
    root: &'a Value,
}

fn type_matches(t: &str, v: &Value) -> bool {
    match t {
        "object" => v.is_object(),
        "array" => v.is_array(),
        "string" => v.is_string(),
        "boolean" => v.is_boolean(),
        "null" => v.is_null(),
        "integer" => v.is_i64() || v.is_u64(),
        "number" => v.is_number(),
        _ => true,
    }
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_owned()
    } else {
        format!("{path}.{key}")
    }
}

fn issue(out: &mut Vec<Issue>, path: &str, message: String) {
    out.push(Issue {
        path: if path.is_empty() {
            "(root)".into()
        } else {
            path.into()
        },
        message,
        unknown: false,
    });
}

/// `Ok(matches)`, or the reason the pattern itself is unusable. Kubernetes (Go RE2)
/// and Rust's `regex` accept the same syntax (no look-around, no back-references), so
/// a pattern rejected here would not be accepted in a CRD either.
fn pattern_matches(pattern: &str, text: &str) -> Result<bool, String> {
    regex::Regex::new(pattern)
        .map(|re| re.is_match(text))
        .map_err(|e| format!("the schema's pattern /{pattern}/ is invalid: {e}"))
}

impl Checker<'_> {
    fn resolve(&self, r: &str) -> Option<&Value> {
        let name = r
            .strip_prefix("#/$defs/")
            .map(|n| &self.root["$defs"][n])
            .or_else(|| {
                r.strip_prefix("#/definitions/")
                    .map(|n| &self.root["definitions"][n])
            })?;
        (!name.is_null()).then_some(name)
    }

    fn issues_at(&self, schema: &Value, v: &Value, path: &str) -> Vec<Issue> {
        let mut out = Vec::new();
        self.check(schema, v, path, &mut out);
        out
    }

    fn check(&self, schema: &Value, v: &Value, path: &str, out: &mut Vec<Issue>) {
        let Some(s) = schema.as_object() else { return };
        if let Some(r) = s.get("$ref").and_then(Value::as_str) {
            match self.resolve(r) {
                Some(target) => self.check(target, v, path, out),
                None => issue(out, path, format!("the schema's $ref {r} does not resolve")),
            }
        }
        if let Some(t) = s.get("type") {
            let ok = match t {
                Value::String(t) => type_matches(t, v),
                Value::Array(ts) => ts
                    .iter()
                    .filter_map(Value::as_str)
                    .any(|t| type_matches(t, v)),
                _ => true,
            };
            if !ok {
                issue(out, path, format!("expected type {t}, got {v}"));
                return;
            }
        }
        if let Some(e) = s.get("enum").and_then(Value::as_array)
            && !e.contains(v)
        {
            issue(
                out,
                path,
                format!("{v} is not one of {}", Value::Array(e.clone())),
            );
        }
        for (kw, bound_ok) in [
            ("minimum", (|n: f64, b: f64| n >= b) as fn(f64, f64) -> bool),
            ("maximum", |n, b| n <= b),
        ] {
            if let (Some(b), Some(n)) = (s.get(kw).and_then(Value::as_f64), v.as_f64())
                && !bound_ok(n, b)
            {
                issue(out, path, format!("{n} violates {kw} {b}"));
            }
        }
        if let (Some(p), Some(text)) = (s.get("pattern").and_then(Value::as_str), v.as_str()) {
            match pattern_matches(p, text) {
                Ok(true) => {}
                Ok(false) => issue(out, path, format!("`{text}` does not match /{p}/")),
                Err(e) => issue(out, path, e),
            }
        }
        self.check_alternatives(s, v, path, out);
        if let Some(obj) = v.as_object() {
            self.check_object(s, obj, path, out);
        }
        if let (Some(items), Some(arr)) = (s.get("items"), v.as_array()) {
            for (i, x) in arr.iter().enumerate() {
                self.check(items, x, &format!("{path}[{i}]"), out);
            }
        }
    }

    /// `anyOf` / `oneOf`. When nothing matches, the issues of the closest alternative
    /// follow, so the message points at the field to fix rather than just "no match".
    fn check_alternatives(
        &self,
        s: &Map<String, Value>,
        v: &Value,
        path: &str,
        out: &mut Vec<Issue>,
    ) {
        for (kw, want_one) in [("anyOf", false), ("oneOf", true)] {
            let Some(alts) = s.get(kw).and_then(Value::as_array) else {
                continue;
            };
            let mut matching = 0;
            let mut closest: Option<Vec<Issue>> = None;
            for alt in alts {
                let e = self.issues_at(alt, v, path);
                if e.is_empty() {
                    matching += 1;
                } else if closest.as_ref().is_none_or(|c| e.len() < c.len()) {
                    closest = Some(e);
                }
            }
            let ok = if want_one {
                matching == 1
            } else {
                matching > 0
            };
            if !ok {
                let expected = if want_one { "exactly 1" } else { "at least 1" };
                issue(
                    out,
                    path,
                    format!("matches {matching} of {kw}, expected {expected}"),
                );
                if matching == 0 {
                    out.extend(closest.unwrap_or_default());
                }
            }
        }
    }

    fn check_object(
        &self,
        s: &Map<String, Value>,
        obj: &Map<String, Value>,
        path: &str,
        out: &mut Vec<Issue>,
    ) {
        for r in s
            .get("required")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
        {
            if !obj.contains_key(r) {
                issue(out, &join(path, r), "required but missing".into());
            }
        }
        let props = s.get("properties").and_then(Value::as_object);
        let pattern_props = s.get("patternProperties").and_then(Value::as_object);
        let extra = s.get("additionalProperties");
        let preserve = s
            .get("x-kubernetes-preserve-unknown-fields")
            .and_then(Value::as_bool)
            .unwrap_or(false);
        for (k, x) in obj {
            let p = join(path, k);
            if let Some(ps) = props.and_then(|m| m.get(k)) {
                self.check(ps, x, &p, out);
                continue;
            }
            let mut matched = false;
            for (pat, ps) in pattern_props.into_iter().flatten() {
                match pattern_matches(pat, k) {
                    Ok(true) => {
                        matched = true;
                        self.check(ps, x, &p, out);
                    }
                    Ok(false) => {}
                    Err(e) => issue(out, &p, e),
                }
            }
            if matched {
                continue;
            }
            match extra {
                Some(Value::Bool(false)) => {
                    issue(out, &p, "additional property not allowed".into())
                }
                Some(ap) if ap.is_object() => self.check(ap, x, &p, out),
                _ if (props.is_some() || pattern_props.is_some()) && !preserve => out.push(Issue {
                    path: p,
                    message: "not a property of the schema".into(),
                    unknown: true,
                }),
                _ => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn finds_type_enum_required_and_unknown_issues() {
        let s = json!({"type": "object", "required": ["a"], "properties": {
            "a": {"type": "array", "items": {"type": "string"}},
            "b": {"type": ["string", "integer"], "minimum": 1},
            "c": {"enum": ["x", "y"]},
            "m": {"type": "object", "additionalProperties": {"type": "string"}},
            "o": {"oneOf": [{"type": "string"}, {"type": "boolean"}]}}});
        assert!(
            validate(
                &s,
                &json!({"a": ["1"], "b": 3, "c": "x", "m": {"k": "v"}, "o": true})
            )
            .is_empty()
        );
        let bad = validate(
            &s,
            &json!({"a": [1], "b": 0, "c": "z", "m": {"k": 1}, "zz": 1}),
        );
        let paths: Vec<&str> = bad.iter().map(|i| i.path.as_str()).collect();
        assert_eq!(paths, ["a[0]", "b", "c", "m.k", "zz"], "{bad:?}");
        assert!(bad[4].unknown);
        assert_eq!(validate(&s, &json!({}))[0].path, "a");
    }

    #[test]
    fn follows_refs_patterns_and_pattern_properties() {
        let s = json!({"$defs": {
                "ip": {"type": "string", "pattern": "^[0-9.]+$"},
                "doc": {"type": "object", "additionalProperties": false,
                    "properties": {"gw": {"$ref": "#/$defs/ip"}},
                    "patternProperties": {"^x-": {"type": "integer"}}}},
            "oneOf": [{"$ref": "#/$defs/doc"}]});
        assert!(validate(&s, &json!({"gw": "10.0.0.1", "x-a": 1})).is_empty());
        let bad = validate(&s, &json!({"gw": "nope!", "x-a": "1", "other": 1}));
        let got: Vec<String> = bad.iter().map(ToString::to_string).collect();
        assert_eq!(got[0], "(root): matches 0 of oneOf, expected exactly 1");
        assert!(
            got.contains(&"gw: `nope!` does not match /^[0-9.]+$/".into()),
            "{got:?}"
        );
        assert!(
            got.iter().any(|g| g.starts_with("x-a: expected type")),
            "{got:?}"
        );
        assert!(
            got.contains(&"other: additional property not allowed".into()),
            "{got:?}"
        );
    }

    #[test]
    fn a_broken_schema_is_an_issue_not_a_panic() {
        let s = json!({"properties": {"a": {"$ref": "#/$defs/missing"}, "b": {"pattern": "("}}});
        let bad = validate(&s, &json!({"a": 1, "b": "x"}));
        assert_eq!(bad.len(), 2, "{bad:?}");
        assert!(bad[0].message.contains("does not resolve"));
        assert!(bad[1].message.contains("invalid"));
    }
}
