//! Server-side printing: the `meta.k8s.io/v1` Table that `kubectl get` asks for
//! (`Accept: application/json;as=Table;v=v1;g=meta.k8s.io`). Columns follow the real
//! server: the built-in printers of kubernetes v1.34
//! `pkg/printers/internalversion/printers.go` for the kinds a newcomer looks at first,
//! a CRD's `additionalPrinterColumns` (`apiextensions-apiserver/pkg/registry/
//! customresource/tableconvertor`, default column Age), and for everything else the
//! default convertor's Name and Created At (`apiserver/pkg/registry/rest/table.go`).

use serde_json::{Value, json};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// How much of each object a row carries (`?includeObject=`; the server's default
/// is the object's metadata only).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Include {
    None,
    Metadata,
    Object,
}

impl Include {
    pub fn from_query(v: Option<&str>) -> Self {
        match v {
            Some("None") => Include::None,
            Some("Object") => Include::Object,
            _ => Include::Metadata,
        }
    }
}

/// A CRD printer column: name, type, JSONPath (`.spec.x`), priority.
#[derive(Debug, Clone, PartialEq)]
pub struct CrdColumn {
    pub name: String,
    pub type_: String,
    pub json_path: String,
    pub priority: i64,
}

impl CrdColumn {
    /// The columns of one served version of a CRD (Age when it names none, as the
    /// API server defaults them).
    pub fn of(version: &Value) -> Vec<Self> {
        let cols: Vec<Self> = version["additionalPrinterColumns"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|c| CrdColumn {
                name: c["name"].as_str().unwrap_or_default().into(),
                type_: c["type"].as_str().unwrap_or("string").into(),
                json_path: c["jsonPath"].as_str().unwrap_or_default().into(),
                priority: c["priority"].as_i64().unwrap_or(0),
            })
            .collect();
        if cols.is_empty() {
            vec![CrdColumn {
                name: "Age".into(),
                type_: "date".into(),
                json_path: ".metadata.creationTimestamp".into(),
                priority: 0,
            }]
        } else {
            cols
        }
    }
}

fn col(name: &str, type_: &str, priority: u8) -> Value {
    let format = if name == "Name" { "name" } else { "" };
    json!({"name": name, "type": type_, "format": format, "description": "", "priority": priority})
}

/// `duration.HumanDuration` (apimachinery `pkg/util/duration`): what Age cells show.
pub fn human_duration(secs: i64) -> String {
    if secs < -1 {
        return "<invalid>".into();
    }
    let secs = secs.max(0);
    if secs < 120 {
        return format!("{secs}s");
    }
    let (m, h) = (secs / 60, secs / 3600);
    let with = |big: i64, u1: &str, small: i64, u2: &str| {
        if small == 0 {
            format!("{big}{u1}")
        } else {
            format!("{big}{u1}{small}{u2}")
        }
    };
    match h {
        _ if m < 10 => with(m, "m", secs % 60, "s"),
        _ if m < 180 => format!("{m}m"),
        h if h < 8 => with(h, "h", m % 60, "m"),
        h if h < 48 => format!("{h}h"),
        h if h < 24 * 8 => with(h / 24, "d", h % 24, "h"),
        h if h < 24 * 365 * 2 => format!("{}d", h / 24),
        h if h < 24 * 365 * 8 => with(h / 24 / 365, "y", (h / 24) % 365, "d"),
        h => format!("{}y", h / 24 / 365),
    }
}

fn age(obj: &Value, now: OffsetDateTime) -> String {
    obj["metadata"]["creationTimestamp"]
        .as_str()
        .and_then(|t| OffsetDateTime::parse(t, &Rfc3339).ok())
        .map_or("<unknown>".into(), |t| {
            human_duration((now - t).whole_seconds())
        })
}

fn s(v: &Value) -> String {
    v.as_str().unwrap_or_default().to_owned()
}

fn or_none(v: String) -> String {
    if v.is_empty() { "<none>".into() } else { v }
}

fn node_address(n: &Value, kind: &str) -> String {
    or_none(
        n["status"]["addresses"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|a| a["type"] == kind)
            .map(|a| s(&a["address"]))
            .collect::<Vec<_>>()
            .join(","),
    )
}

fn node_cells(n: &Value, age: String) -> Vec<Value> {
    let ready = n["status"]["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|c| c["type"] == "Ready");
    let mut status = match ready.map(|c| c["status"].as_str().unwrap_or_default()) {
        Some("True") => "Ready".to_owned(),
        Some(_) => "NotReady".to_owned(),
        None => "Unknown".to_owned(),
    };
    if n["spec"]["unschedulable"] == true {
        status.push_str(",SchedulingDisabled");
    }
    let mut roles: Vec<String> = n["metadata"]["labels"]
        .as_object()
        .into_iter()
        .flatten()
        .filter_map(|(k, _)| k.strip_prefix("node-role.kubernetes.io/"))
        .filter(|r| !r.is_empty())
        .map(str::to_owned)
        .collect();
    roles.sort();
    let info = &n["status"]["nodeInfo"];
    let dash = |v: &Value| {
        let t = s(v);
        if t.is_empty() { "<unknown>".into() } else { t }
    };
    vec![
        json!(s(&n["metadata"]["name"])),
        json!(status),
        json!(or_none(roles.join(","))),
        json!(age),
        json!(s(&info["kubeletVersion"])),
        json!(node_address(n, "InternalIP")),
        json!(node_address(n, "ExternalIP")),
        json!(dash(&info["osImage"])),
        json!(dash(&info["kernelVersion"])),
        json!(dash(&info["containerRuntimeVersion"])),
    ]
}

fn pod_cells(p: &Value, age: String) -> Vec<Value> {
    let statuses: Vec<&Value> = p["status"]["containerStatuses"]
        .as_array()
        .into_iter()
        .flatten()
        .collect();
    let total = p["spec"]["containers"].as_array().map_or(0, Vec::len);
    let ready = statuses.iter().filter(|c| c["ready"] == true).count();
    let restarts: i64 = statuses
        .iter()
        .filter_map(|c| c["restartCount"].as_i64())
        .sum();
    let reason = s(&p["status"]["reason"]);
    let status = if reason.is_empty() {
        s(&p["status"]["phase"])
    } else {
        reason
    };
    vec![
        json!(s(&p["metadata"]["name"])),
        json!(format!("{ready}/{total}")),
        json!(status),
        json!(restarts.to_string()),
        json!(age),
        json!(or_none(s(&p["status"]["podIP"]))),
        json!(or_none(s(&p["spec"]["nodeName"]))),
        json!(or_none(s(&p["status"]["nominatedNodeName"]))),
        json!("<none>"),
    ]
}

/// printers.go `printService`: LoadBalancer ingress (or `<pending>`), ports as
/// `port[:nodePort]/protocol`.
fn service_cells(o: &Value, name: Value, age: String) -> Vec<Value> {
    let spec = &o["spec"];
    let type_ = spec["type"].as_str().unwrap_or("ClusterIP");
    let external = match type_ {
        "LoadBalancer" => {
            let ips: Vec<String> = o["status"]["loadBalancer"]["ingress"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|i| s(&i["ip"]))
                .collect();
            if ips.is_empty() {
                "<pending>".into()
            } else {
                ips.join(",")
            }
        }
        _ => "<none>".into(),
    };
    let ports: Vec<String> = spec["ports"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|p| {
            let proto = p["protocol"].as_str().unwrap_or("TCP");
            match p["nodePort"].as_i64() {
                Some(np) => format!("{}:{np}/{proto}", p["port"]),
                None => format!("{}/{proto}", p["port"]),
            }
        })
        .collect();
    let selector: Vec<String> = spec["selector"]
        .as_object()
        .into_iter()
        .flatten()
        .map(|(k, v)| format!("{k}={}", s(v)))
        .collect();
    vec![
        name,
        json!(type_),
        json!(or_none(s(&spec["clusterIP"]))),
        json!(external),
        json!(or_none(ports.join(","))),
        json!(age),
        json!(or_none(selector.join(","))),
    ]
}

fn int(v: &Value) -> i64 {
    v.as_i64().unwrap_or(0)
}

/// A JSONPath of the simple form CRD columns use (`.a.b`, `.a[0].b`).
fn json_path<'a>(obj: &'a Value, path: &str) -> &'a Value {
    path.trim_start_matches('.')
        .split('.')
        .filter(|k| !k.is_empty())
        .fold(obj, |v, seg| match seg.split_once('[') {
            Some((k, idx)) => {
                let base = if k.is_empty() { v } else { &v[k] };
                match idx.trim_end_matches(']').parse::<usize>() {
                    Ok(i) => &base[i],
                    Err(_) => base,
                }
            }
            None => &v[seg],
        })
}

fn crd_cell(obj: &Value, c: &CrdColumn, now: OffsetDateTime) -> Value {
    let v = json_path(obj, &c.json_path);
    match (c.type_.as_str(), v) {
        (_, Value::Null) => Value::Null,
        ("date", Value::String(_)) => {
            json!(age(&json!({"metadata": {"creationTimestamp": v}}), now))
        }
        ("string", Value::String(t)) => json!(t),
        // jsonpath prints lists and objects as JSON text.
        ("string", other) => json!(other.to_string()),
        ("integer", Value::Number(n)) => json!(n.as_f64().map(|f| f as i64)),
        ("number" | "boolean", other) => other.clone(),
        _ => Value::Null,
    }
}

/// Column definitions and cells for objects of `kind` (`crd`: its printer columns).
fn columns(kind: &str, crd: Option<&[CrdColumn]>) -> Vec<Value> {
    let name = col("Name", "string", 0);
    let age = col("Age", "string", 0);
    let wide = |n: &str| col(n, "string", 1);
    match (kind, crd) {
        (_, Some(cols)) => std::iter::once(name)
            .chain(cols.iter().map(|c| {
                let mut d = col(&c.name, &c.type_, 0);
                d["priority"] = json!(c.priority);
                d
            }))
            .collect(),
        ("Node", _) => vec![
            name,
            col("Status", "string", 0),
            col("Roles", "string", 0),
            age,
            col("Version", "string", 0),
            wide("Internal-IP"),
            wide("External-IP"),
            wide("OS-Image"),
            wide("Kernel-Version"),
            wide("Container-Runtime"),
        ],
        ("Pod", _) => vec![
            name,
            col("Ready", "string", 0),
            col("Status", "string", 0),
            col("Restarts", "string", 0),
            age,
            wide("IP"),
            wide("Node"),
            wide("Nominated Node"),
            wide("Readiness Gates"),
        ],
        ("Namespace", _) => vec![name, col("Status", "string", 0), age],
        ("Service", _) => vec![
            name,
            col("Type", "string", 0),
            col("Cluster-IP", "string", 0),
            col("External-IP", "string", 0),
            col("Port(s)", "string", 0),
            age,
            wide("Selector"),
        ],
        ("ConfigMap", _) => vec![name, col("Data", "integer", 0), age],
        ("Deployment", _) => vec![
            name,
            col("Ready", "string", 0),
            col("Up-to-date", "integer", 0),
            col("Available", "integer", 0),
            age,
        ],
        ("DaemonSet", _) => vec![
            name,
            col("Desired", "integer", 0),
            col("Current", "integer", 0),
            col("Ready", "integer", 0),
            col("Up-to-date", "integer", 0),
            col("Available", "integer", 0),
            col("Node Selector", "string", 0),
            age,
        ],
        _ => vec![name, col("Created At", "date", 0)],
    }
}

fn cells(kind: &str, crd: Option<&[CrdColumn]>, o: &Value, now: OffsetDateTime) -> Vec<Value> {
    let name = json!(s(&o["metadata"]["name"]));
    let a = age(o, now);
    let st = &o["status"];
    match (kind, crd) {
        (_, Some(cols)) => std::iter::once(name)
            .chain(cols.iter().map(|c| crd_cell(o, c, now)))
            .collect(),
        ("Node", _) => node_cells(o, a),
        ("Pod", _) => pod_cells(o, a),
        ("Namespace", _) => {
            let phase = s(&st["phase"]);
            vec![
                name,
                json!(if phase.is_empty() {
                    "Active".into()
                } else {
                    phase
                }),
                json!(a),
            ]
        }
        ("Service", _) => service_cells(o, name, a),
        ("ConfigMap", _) => {
            let n = o["data"].as_object().map_or(0, |m| m.len())
                + o["binaryData"].as_object().map_or(0, |m| m.len());
            vec![name, json!(n), json!(a)]
        }
        ("Deployment", _) => vec![
            name,
            json!(format!(
                "{}/{}",
                int(&st["readyReplicas"]),
                o["spec"]["replicas"].as_i64().unwrap_or(1)
            )),
            json!(int(&st["updatedReplicas"])),
            json!(int(&st["availableReplicas"])),
            json!(a),
        ],
        ("DaemonSet", _) => {
            let sel = o["spec"]["template"]["spec"]["nodeSelector"]
                .as_object()
                .into_iter()
                .flatten()
                .map(|(k, v)| format!("{k}={}", s(v)))
                .collect::<Vec<_>>()
                .join(",");
            vec![
                name,
                json!(int(&st["desiredNumberScheduled"])),
                json!(int(&st["currentNumberScheduled"])),
                json!(int(&st["numberReady"])),
                json!(int(&st["updatedNumberScheduled"])),
                json!(int(&st["numberAvailable"])),
                json!(or_none(sel)),
                json!(a),
            ]
        }
        _ => vec![name, o["metadata"]["creationTimestamp"].clone()],
    }
}

fn row_object(o: &Value, include: Include) -> Value {
    match include {
        Include::None => Value::Null,
        Include::Object => o.clone(),
        Include::Metadata => {
            json!({"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1",
            "metadata": o["metadata"]})
        }
    }
}

/// The Table of `items` (all of `kind`), as of `resource_version`.
pub fn table(
    kind: &str,
    crd: Option<&[CrdColumn]>,
    items: &[Value],
    resource_version: &str,
    include: Include,
) -> Value {
    let now = OffsetDateTime::now_utc();
    let rows: Vec<Value> = items
        .iter()
        .map(|o| {
            let mut row = json!({"cells": cells(kind, crd, o, now)});
            if include != Include::None {
                row["object"] = row_object(o, include);
            }
            row
        })
        .collect();
    json!({"kind": "Table", "apiVersion": "meta.k8s.io/v1",
        "metadata": {"resourceVersion": resource_version},
        "columnDefinitions": columns(kind, crd), "rows": rows})
}

/// Does the client's Accept header ask for a Table (kubectl get does, with a plain
/// JSON fallback listed after it)?
pub fn wants_table(accept: &str) -> bool {
    accept
        .split(',')
        .next()
        .is_some_and(|first| first.split(';').any(|p| p.trim() == "as=Table"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn human_durations_match_apimachinery() {
        let cases = [
            (5, "5s"),
            (119, "119s"),
            (120, "2m"),
            (125, "2m5s"),
            (600, "10m"),
            (3 * 3600, "3h"),
            (3 * 3600 + 60, "3h1m"),
            (47 * 3600, "47h"),
            (50 * 3600, "2d2h"),
            (9 * 86400, "9d"),
            (3 * 365 * 86400 + 86400, "3y1d"),
        ];
        for (secs, want) in cases {
            assert_eq!(human_duration(secs), want, "{secs}s");
        }
    }

    #[test]
    fn node_rows_have_status_roles_and_wide_addresses() {
        let n = json!({"metadata": {"name": "cp1", "creationTimestamp": "2026-01-01T00:00:00Z",
            "labels": {"node-role.kubernetes.io/control-plane": ""}},
            "status": {"conditions": [{"type": "Ready", "status": "True"}],
                "addresses": [{"type": "InternalIP", "address": "10.8.32.21"}],
                "nodeInfo": {"kubeletVersion": "v1.34.1"}}});
        let t = table("Node", None, &[n], "7", Include::Metadata);
        let cells = &t["rows"][0]["cells"];
        assert_eq!(cells[1], "Ready");
        assert_eq!(cells[2], "control-plane");
        assert_eq!(cells[4], "v1.34.1");
        assert_eq!(cells[5], "10.8.32.21");
        assert_eq!(cells[6], "<none>");
        assert_eq!(t["columnDefinitions"][5]["priority"], 1);
        assert_eq!(t["rows"][0]["object"]["kind"], "PartialObjectMetadata");
        assert_eq!(
            t["columnDefinitions"].as_array().unwrap().len(),
            cells.as_array().unwrap().len()
        );
    }

    #[test]
    fn service_rows_show_type_ports_and_pending_load_balancers() {
        let svc = json!({"metadata": {"name": "traefik"}, "spec": {"type": "LoadBalancer",
            "clusterIP": "10.96.0.10", "ports": [{"port": 443, "nodePort": 30443, "protocol": "TCP"}],
            "selector": {"app": "traefik"}}});
        let t = table("Service", None, &[svc], "1", Include::None);
        assert_eq!(
            t["rows"][0]["cells"],
            json!([
                "traefik",
                "LoadBalancer",
                "10.96.0.10",
                "<pending>",
                "443:30443/TCP",
                "<unknown>",
                "app=traefik"
            ])
        );
    }

    #[test]
    fn crd_columns_follow_json_paths() {
        let v = json!({"additionalPrinterColumns": [
            {"name": "Addresses", "type": "string", "jsonPath": ".spec.addresses"},
            {"name": "Auto Assign", "type": "boolean", "jsonPath": ".spec.autoAssign"}]});
        let cols = CrdColumn::of(&v);
        let o = json!({"metadata": {"name": "pool"}, "spec": {"addresses": ["10.8.40.0/24"], "autoAssign": true}});
        let t = table("IPAddressPool", Some(&cols), &[o], "1", Include::None);
        assert_eq!(
            t["rows"][0]["cells"],
            json!(["pool", "[\"10.8.40.0/24\"]", true])
        );
        assert!(t["rows"][0].get("object").is_none());
        assert_eq!(CrdColumn::of(&json!({}))[0].name, "Age");
    }

    #[test]
    fn only_a_table_first_accept_header_gets_a_table() {
        assert!(wants_table(
            "application/json;as=Table;v=v1;g=meta.k8s.io,application/json;as=Table;v=v1beta1;g=meta.k8s.io,application/json"
        ));
        assert!(!wants_table("application/json, */*"));
    }
}
