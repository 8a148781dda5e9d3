//! A small JSON Schema checker for the keywords Kubernetes CRD schemas and the Cilium
//! chart's `values.schema.json` use (`type`, `properties`, `additionalProperties`,
//! `required`, `items`, `enum`, `anyOf`, `oneOf`, `minimum`, `maximum`).
//!
//! Stricter than JSON Schema on purpose: a property the schema does not list is an
//! issue (the API server would silently prune it, Helm would silently ignore it), unless
//! the schema allows extra properties or preserves unknown fields.

use serde_json::Value;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Issue {
    /// Dotted path of the offending value (`spec.addresses[0]`).
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

/// Every issue of `value` against `schema` (empty = valid).
pub fn validate(schema: &Value, value: &Value) -> Vec<Issue> {
    let mut out = Vec::new();
    check(schema, value, "", &mut out);
    out
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

fn check(schema: &Value, v: &Value, path: &str, out: &mut Vec<Issue>) {
    if let Some(t) = schema.get("type") {
        let ok = match t {
            Value::String(s) => type_matches(s, v),
            Value::Array(ts) => ts
                .iter()
                .filter_map(Value::as_str)
                .any(|s| type_matches(s, v)),
            _ => true,
        };
        if !ok {
            issue(out, path, format!("expected type {t}, got {v}"));
            return;
        }
    }
    if let Some(e) = schema.get("enum").and_then(Value::as_array)
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
        if let (Some(b), Some(n)) = (schema.get(kw).and_then(Value::as_f64), v.as_f64())
            && !bound_ok(n, b)
        {
            issue(out, path, format!("{n} violates {kw} {b}"));
        }
    }
    let passes = |s: &Value| validate_at(s, v, path).is_empty();
    if let Some(any) = schema.get("anyOf").and_then(Value::as_array)
        && !any.iter().any(passes)
    {
        issue(out, path, "matches none of anyOf".into());
    }
    if let Some(one) = schema.get("oneOf").and_then(Value::as_array) {
        let n = one.iter().filter(|s| passes(s)).count();
        if n != 1 {
            issue(
                out,
                path,
                format!("matches {n} of oneOf, expected exactly 1"),
            );
        }
    }
    if let Some(obj) = v.as_object() {
        check_object(schema, obj, path, out);
    }
    if let (Some(items), Some(arr)) = (schema.get("items"), v.as_array()) {
        for (i, x) in arr.iter().enumerate() {
            check(items, x, &format!("{path}[{i}]"), out);
        }
    }
}

fn validate_at(schema: &Value, v: &Value, path: &str) -> Vec<Issue> {
    let mut out = Vec::new();
    check(schema, v, path, &mut out);
    out
}

fn check_object(
    schema: &Value,
    obj: &serde_json::Map<String, Value>,
    path: &str,
    out: &mut Vec<Issue>,
) {
    for r in schema
        .get("required")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        if let Some(r) = r.as_str()
            && !obj.contains_key(r)
        {
            issue(out, &join(path, r), "required but missing".into());
        }
    }
    let props = schema.get("properties").and_then(Value::as_object);
    let extra = schema.get("additionalProperties");
    let preserve = schema
        .get("x-kubernetes-preserve-unknown-fields")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    for (k, x) in obj {
        let p = join(path, k);
        match (props.and_then(|m| m.get(k)), extra) {
            (Some(s), _) => check(s, x, &p, out),
            (None, Some(Value::Bool(false))) => {
                issue(out, &p, "additional property not allowed".into())
            }
            (None, Some(s)) if s.is_object() => check(s, x, &p, out),
            (None, _) if props.is_some() && !preserve => out.push(Issue {
                path: p,
                message: "not a property of the schema".into(),
                unknown: true,
            }),
            (None, _) => {}
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
}
