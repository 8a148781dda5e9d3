//! Label and field selectors of list requests, as the real API server reads them
//! (kubernetes v1.34 `staging/src/k8s.io/apimachinery/pkg/labels/selector.go` and
//! `pkg/fields/selector.go`): comma-separated requirements, all of which must hold.
//! Field selectors work only on the fields each resource indexes; anything else is
//! refused with the server's "field label not supported" (kubectl sends
//! `metadata.name=` when it waits for a deletion, `spec.nodeName=` and `status.phase!=`
//! from `describe node`, `involvedObject.*` when it looks for events).

use serde_json::Value;

/// One requirement: `key` (a label name or a field path) compared with `value`.
#[derive(Debug, Clone, PartialEq)]
pub struct Requirement {
    pub key: String,
    pub op: Op,
    pub value: String,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Op {
    Equals,
    NotEquals,
    /// Label selectors only: `key` / `!key`.
    Exists,
    NotExists,
}

/// Parse `a=b,c!=d,e==f` (and for labels `k`, `!k`); the text is already
/// percent-decoded. Set-based label syntax (`in (…)`) is refused, not misread.
pub fn parse(text: &str, labels: bool) -> Result<Vec<Requirement>, String> {
    let mut out = Vec::new();
    for item in text.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let (key, op, value) = if let Some((k, v)) = item.split_once("!=") {
            (k, Op::NotEquals, v)
        } else if let Some((k, v)) = item.split_once("==") {
            (k, Op::Equals, v)
        } else if let Some((k, v)) = item.split_once('=') {
            (k, Op::Equals, v)
        } else if labels && let Some(k) = item.strip_prefix('!') {
            (k, Op::NotExists, "")
        } else if labels && !item.contains([' ', '(', ')']) {
            (item, Op::Exists, "")
        } else {
            return Err(format!("unable to parse requirement: {item:?}"));
        };
        out.push(Requirement {
            key: key.trim().to_owned(),
            op,
            value: value.trim().to_owned(),
        });
    }
    Ok(out)
}

/// The field paths the real server indexes for a resource (`GetAttrs` of each
/// registry strategy), beyond `metadata.name` and `metadata.namespace`.
fn indexed_fields(kind: &str) -> &'static [&'static str] {
    match kind {
        "Pod" => &[
            "spec.nodeName",
            "spec.restartPolicy",
            "spec.schedulerName",
            "spec.serviceAccountName",
            "spec.hostNetwork",
            "status.phase",
            "status.podIP",
            "status.nominatedNodeName",
        ],
        "Event" => &[
            "involvedObject.kind",
            "involvedObject.namespace",
            "involvedObject.name",
            "involvedObject.uid",
            "involvedObject.apiVersion",
            "involvedObject.resourceVersion",
            "involvedObject.fieldPath",
            "reason",
            "reportingComponent",
            "source",
            "type",
        ],
        "Node" => &["spec.unschedulable"],
        "Namespace" => &["status.phase"],
        "Secret" => &["type"],
        "Job" => &["status.successful"],
        _ => &[],
    }
}

/// Refuse a field selector the real server would refuse for `kind`.
pub fn check_fields(kind: &str, reqs: &[Requirement]) -> Result<(), String> {
    for r in reqs {
        let ok = matches!(r.key.as_str(), "metadata.name" | "metadata.namespace")
            || indexed_fields(kind).contains(&r.key.as_str());
        if !ok || matches!(r.op, Op::Exists | Op::NotExists) {
            return Err(format!("field label not supported: {}", r.key));
        }
    }
    Ok(())
}

/// A field's value as the server's field set renders it (`source` is the
/// event's reporting component; booleans and numbers as text; missing as "").
fn field(obj: &Value, path: &str) -> String {
    let v = if path == "source" {
        &obj["source"]["component"]
    } else {
        path.split('.').fold(obj, |v, k| &v[k])
    };
    match v {
        Value::String(s) => s.clone(),
        Value::Null => match path {
            "spec.hostNetwork" | "spec.unschedulable" => "false".into(),
            _ => String::new(),
        },
        other => other.to_string(),
    }
}

pub fn fields_match(obj: &Value, reqs: &[Requirement]) -> bool {
    reqs.iter().all(|r| {
        let have = field(obj, &r.key);
        match r.op {
            Op::Equals => have == r.value,
            Op::NotEquals => have != r.value,
            Op::Exists | Op::NotExists => false,
        }
    })
}

pub fn labels_match(obj: &Value, reqs: &[Requirement]) -> bool {
    let labels = &obj["metadata"]["labels"];
    reqs.iter().all(|r| {
        let have = labels[r.key.as_str()].as_str();
        match r.op {
            Op::Equals => have == Some(r.value.as_str()),
            Op::NotEquals => have != Some(r.value.as_str()),
            Op::Exists => have.is_some(),
            Op::NotExists => have.is_none(),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn describe_nodes_pod_selector_filters_by_node_and_phase() {
        let reqs = parse(
            "spec.nodeName=n1,status.phase!=Failed,status.phase!=Succeeded",
            false,
        )
        .unwrap();
        check_fields("Pod", &reqs).unwrap();
        let pod = |node: &str, phase: &str| json!({"spec": {"nodeName": node}, "status": {"phase": phase}});
        assert!(fields_match(&pod("n1", "Running"), &reqs));
        assert!(!fields_match(&pod("n2", "Running"), &reqs));
        assert!(!fields_match(&pod("n1", "Succeeded"), &reqs));
    }

    #[test]
    fn unindexed_fields_are_refused_as_the_server_does() {
        let reqs = parse("spec.nodeName=n1", false).unwrap();
        let e = check_fields("ConfigMap", &reqs).unwrap_err();
        assert_eq!(e, "field label not supported: spec.nodeName");
        check_fields("ConfigMap", &parse("metadata.name==x", false).unwrap()).unwrap();
    }

    #[test]
    fn label_selectors_support_equality_and_existence() {
        let o = json!({"metadata": {"labels": {"app": "x", "tier": "web"}}});
        let m = |s: &str| labels_match(&o, &parse(s, true).unwrap());
        assert!(m("app=x,tier"));
        assert!(m("app==x,!missing"));
        assert!(!m("app!=x"));
        assert!(!m("missing"));
        assert!(parse("app in (x, y)", true).is_err());
    }
}
