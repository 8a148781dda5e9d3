//! The lab API server's request handling: discovery documents, the REST paths of
//! built-in kinds and of Established CRDs, and the checks the real server makes
//! (namespace exists, podCIDR immutable, CRD schemas, admission webhooks).

use serde_json::{Value, json};

use super::Lab;
use super::store::{self, Conflict};
use super::watch::Watch;
use super::{openapi, select, strategic, table};
use crate::jsonschema;
use crate::kube::Resource;

const BUILTIN: &[(&str, &str, &str, &str, bool)] = &[
    ("", "v1", "Namespace", "namespaces", false),
    ("", "v1", "Node", "nodes", false),
    ("", "v1", "PersistentVolume", "persistentvolumes", false),
    ("", "v1", "ConfigMap", "configmaps", true),
    ("", "v1", "Secret", "secrets", true),
    ("", "v1", "Service", "services", true),
    ("", "v1", "ServiceAccount", "serviceaccounts", true),
    ("", "v1", "Endpoints", "endpoints", true),
    ("", "v1", "Pod", "pods", true),
    ("", "v1", "Event", "events", true),
    (
        "",
        "v1",
        "PersistentVolumeClaim",
        "persistentvolumeclaims",
        true,
    ),
    ("apps", "v1", "Deployment", "deployments", true),
    ("apps", "v1", "DaemonSet", "daemonsets", true),
    ("apps", "v1", "StatefulSet", "statefulsets", true),
    ("batch", "v1", "Job", "jobs", true),
    ("batch", "v1", "CronJob", "cronjobs", true),
    ("rbac.authorization.k8s.io", "v1", "Role", "roles", true),
    (
        "rbac.authorization.k8s.io",
        "v1",
        "RoleBinding",
        "rolebindings",
        true,
    ),
    (
        "rbac.authorization.k8s.io",
        "v1",
        "ClusterRole",
        "clusterroles",
        false,
    ),
    (
        "rbac.authorization.k8s.io",
        "v1",
        "ClusterRoleBinding",
        "clusterrolebindings",
        false,
    ),
    (
        "apiextensions.k8s.io",
        "v1",
        "CustomResourceDefinition",
        "customresourcedefinitions",
        false,
    ),
    (
        "admissionregistration.k8s.io",
        "v1",
        "ValidatingWebhookConfiguration",
        "validatingwebhookconfigurations",
        false,
    ),
    (
        "admissionregistration.k8s.io",
        "v1",
        "MutatingWebhookConfiguration",
        "mutatingwebhookconfigurations",
        false,
    ),
    (
        "discovery.k8s.io",
        "v1",
        "EndpointSlice",
        "endpointslices",
        true,
    ),
    (
        "policy",
        "v1",
        "PodDisruptionBudget",
        "poddisruptionbudgets",
        true,
    ),
    (
        "networking.k8s.io",
        "v1",
        "NetworkPolicy",
        "networkpolicies",
        true,
    ),
    ("networking.k8s.io", "v1", "Ingress", "ingresses", true),
    ("coordination.k8s.io", "v1", "Lease", "leases", true),
];

/// Every resource served now: the built-ins plus each Established CRD's served versions.
pub fn resources(lab: &Lab) -> Vec<Resource> {
    let mut out: Vec<Resource> = BUILTIN
        .iter()
        .map(|(g, v, k, p, n)| Resource {
            group: (*g).into(),
            version: (*v).into(),
            kind: (*k).into(),
            plural: (*p).into(),
            namespaced: *n,
        })
        .collect();
    for crd in lab.store.list(&store::prefix(
        "apiextensions.k8s.io",
        "customresourcedefinitions",
        None,
    )) {
        if crate::kube::crd_established(&crd).is_err() {
            continue;
        }
        let s = &crd["spec"];
        for v in s["versions"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|v| v["served"] == true)
        {
            out.push(Resource {
                group: s["group"].as_str().unwrap_or_default().into(),
                version: v["name"].as_str().unwrap_or_default().into(),
                kind: s["names"]["kind"].as_str().unwrap_or_default().into(),
                plural: s["names"]["plural"].as_str().unwrap_or_default().into(),
                namespaced: s["scope"] == "Namespaced",
            });
        }
    }
    out
}

pub struct Reply {
    pub code: u16,
    pub body: Value,
    /// A watch: the body is its stream of events, not `body`.
    pub watch: Option<Box<Watch>>,
}

pub(super) fn reply(code: u16, body: Value) -> Reply {
    Reply {
        code,
        body,
        watch: None,
    }
}

pub(super) fn status(code: u16, reason: &str, message: String) -> Reply {
    reply(
        code,
        json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": message, "reason": reason, "code": code}),
    )
}

fn not_found(r: &Resource, name: &str) -> Reply {
    let what = if r.group.is_empty() {
        r.plural.clone()
    } else {
        format!("{}.{}", r.plural, r.group)
    };
    status(404, "NotFound", format!("{what} \"{name}\" not found"))
}

/// The short names discovery lists (kubectl resolves `ns`, `ds`, `deploy` with
/// them), from the built-in registries, or a CRD's `spec.names.shortNames`.
fn short_names(lab: &Lab, r: &Resource) -> Value {
    let builtin: &[&str] = match r.plural.as_str() {
        "namespaces" => &["ns"],
        "nodes" => &["no"],
        "persistentvolumes" => &["pv"],
        "persistentvolumeclaims" => &["pvc"],
        "configmaps" => &["cm"],
        "services" => &["svc"],
        "serviceaccounts" => &["sa"],
        "endpoints" => &["ep"],
        "pods" => &["po"],
        "events" => &["ev"],
        "deployments" => &["deploy"],
        "daemonsets" => &["ds"],
        "statefulsets" => &["sts"],
        "cronjobs" => &["cj"],
        "customresourcedefinitions" => &["crd", "crds"],
        "poddisruptionbudgets" => &["pdb"],
        "networkpolicies" => &["netpol"],
        "ingresses" => &["ing"],
        _ => &[],
    };
    if BUILTIN.iter().any(|b| b.0 == r.group) {
        return json!(builtin);
    }
    lab.store
        .get(&store::key(
            "apiextensions.k8s.io",
            "customresourcedefinitions",
            None,
            &format!("{}.{}", r.plural, r.group),
        ))
        .map_or(json!([]), |crd| crd["spec"]["names"]["shortNames"].clone())
}

/// The `all` category (`kubectl get all`), as the built-in registries declare it.
fn categories(r: &Resource) -> Value {
    let all = matches!(
        r.plural.as_str(),
        "pods" | "services" | "deployments" | "daemonsets" | "statefulsets" | "jobs" | "cronjobs"
    ) && BUILTIN.iter().any(|b| b.0 == r.group);
    if all { json!(["all"]) } else { json!([]) }
}

fn resource_list(lab: &Lab, gv: &str, rs: &[&Resource]) -> Value {
    let items: Vec<Value> = rs
        .iter()
        .map(|r| json!({"name": r.plural, "singularName": r.kind.to_lowercase(), "namespaced": r.namespaced,
            "kind": r.kind, "verbs": ["create", "delete", "get", "list", "patch", "update", "watch"],
            "shortNames": short_names(lab, r), "categories": categories(r)}))
        .collect();
    json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv, "resources": items})
}

/// One HTTP request as the handlers see it.
pub struct Request<'a> {
    pub method: &'a str,
    pub path: &'a str,
    /// The raw (percent-encoded) query string.
    pub query: &'a str,
    pub content_type: &'a str,
    pub accept: &'a str,
    pub body: &'a [u8],
}

/// `/version`: what `kubectl version` and client-go's server checks read.
fn version(lab: &Lab) -> Reply {
    let v = lab.cfg.kubernetes_version.trim_start_matches('v');
    let mut parts = v.split('.');
    let (major, minor) = (parts.next().unwrap_or("1"), parts.next().unwrap_or("0"));
    reply(
        200,
        json!({"major": major, "minor": minor, "gitVersion": format!("v{v}"),
            "goVersion": "lab", "compiler": "gc", "platform": "linux/amd64"}),
    )
}

/// One request.
pub fn handle(lab: &Lab, req: &Request) -> Reply {
    let (method, path, ctype, body) = (req.method, req.path, req.content_type, req.body);
    let query: Vec<(String, String)> = form_urlencoded::parse(req.query.as_bytes())
        .into_owned()
        .collect();
    let q = |k: &str| query.iter().find(|(a, _)| a == k).map(|(_, v)| v.clone());
    let segs: Vec<&str> = path
        .trim_matches('/')
        .split('/')
        .filter(|s| !s.is_empty())
        .collect();
    let all = resources(lab);
    let (group, version, rest) = match segs.as_slice() {
        ["version"] => return version(lab),
        ["openapi", "v3"] => return reply(200, openapi::index(&all, &lab.store.current_rv())),
        ["openapi", "v3", gv @ ..] => {
            return match openapi::group_version(&all, &gv.join("/")) {
                Some(doc) => reply(200, doc),
                None => status(
                    404,
                    "NotFound",
                    format!("the server could not find the requested resource ({path})"),
                ),
            };
        }
        // The legacy discovery documents: kubectl asks for the aggregated form
        // (apidiscovery.k8s.io/v2) first and falls back to these, as it does with
        // servers older than 1.26, when the answer is plain `application/json`.
        ["api"] => {
            return reply(
                200,
                json!({"kind": "APIVersions", "versions": ["v1"],
                    "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": "127.0.0.1:6443"}]}),
            );
        }
        ["apis"] => {
            let mut groups: Vec<(String, Vec<String>)> = Vec::new();
            for r in all.iter().filter(|r| !r.group.is_empty()) {
                match groups.iter_mut().find(|(g, _)| g == &r.group) {
                    Some((_, vs)) if !vs.contains(&r.version) => vs.push(r.version.clone()),
                    Some(_) => {}
                    None => groups.push((r.group.clone(), vec![r.version.clone()])),
                }
            }
            let gs: Vec<Value> = groups
                .iter()
                .map(|(g, vs)| {
                    let versions: Vec<Value> = vs
                        .iter()
                        .map(|v| json!({"groupVersion": format!("{g}/{v}"), "version": v}))
                        .collect();
                    json!({"name": g, "versions": versions, "preferredVersion": versions[0]})
                })
                .collect();
            return reply(
                200,
                json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": gs}),
            );
        }
        ["api", v, rest @ ..] => ("", *v, rest),
        ["apis", g, v, rest @ ..] => (*g, *v, rest),
        _ => {
            return status(
                404,
                "NotFound",
                format!("the server could not find the requested resource ({path})"),
            );
        }
    };
    let in_gv: Vec<&Resource> = all
        .iter()
        .filter(|r| r.group == group && r.version == version)
        .collect();
    if rest.is_empty() {
        if in_gv.is_empty() {
            return status(
                404,
                "NotFound",
                format!("the server could not find the requested resource ({path})"),
            );
        }
        let gv = if group.is_empty() {
            version.to_owned()
        } else {
            format!("{group}/{version}")
        };
        return reply(200, resource_list(lab, &gv, &in_gv));
    }
    if let (("", "v1"), ["namespaces", ns, "pods", pod, "eviction"]) = ((group, version), rest) {
        return match (method, parse_body(body)) {
            ("POST", Some(b)) => super::eviction::evict(lab, ns, pod, &b),
            ("POST", None) => status(
                400,
                "BadRequest",
                "the request body is not valid JSON or YAML".into(),
            ),
            _ => status(
                405,
                "MethodNotAllowed",
                format!("the server does not allow this method on the requested resource ({path})"),
            ),
        };
    }
    let (ns, plural, name) = match rest {
        ["namespaces", ns, plural, tail @ ..] if tail.len() <= 1 => {
            (Some(*ns), *plural, tail.first().copied())
        }
        [plural, tail @ ..] if tail.len() <= 1 => (None, *plural, tail.first().copied()),
        _ => {
            return status(
                404,
                "NotFound",
                format!("subresource not served by the lab ({path})"),
            );
        }
    };
    let Some(res) = in_gv.iter().find(|r| r.plural == plural) else {
        return status(
            404,
            "NotFound",
            format!("the server could not find the requested resource ({path})"),
        );
    };
    let ns = ns.filter(|_| res.namespaced);
    let strict = q("fieldValidation").as_deref() == Some("Strict");
    if matches!(q("watch").as_deref(), Some("true" | "1")) {
        if method != "GET" {
            return status(
                405,
                "MethodNotAllowed",
                format!("the server does not allow this method on the requested resource ({path})"),
            );
        }
        let bad = |m: String| status(400, "BadRequest", m);
        let parsed = (|| {
            let labels = select::parse(&q("labelSelector").unwrap_or_default(), true)?;
            let mut fields = select::parse(&q("fieldSelector").unwrap_or_default(), false)?;
            select::check_fields(&res.kind, &fields)?;
            // The deprecated watch of one object: the collection filtered by name.
            if let Some(n) = name {
                fields.extend(select::parse(&format!("metadata.name={n}"), false)?);
            }
            let (from, timeout) = Watch::versions(
                q("resourceVersion").as_deref(),
                q("timeoutSeconds").as_deref(),
            )?;
            Ok::<_, String>((labels, fields, from, timeout))
        })();
        let (labels, fields, from, timeout) = match parsed {
            Ok(p) => p,
            Err(m) => return bad(m),
        };
        let mut r = reply(200, Value::Null);
        r.watch = Some(Box::new(Watch {
            prefix: store::prefix(group, plural, ns),
            kind: res.kind.clone(),
            api_version: res.api_version(),
            labels,
            fields,
            from,
            bookmarks: q("allowWatchBookmarks").as_deref() == Some("true"),
            timeout,
            table: table::wants_table(req.accept).then(|| {
                (
                    printer_columns(lab, res),
                    table::Include::from_query(q("includeObject").as_deref()),
                )
            }),
        }));
        return r;
    }
    match (method, name) {
        ("GET", None) => {
            let selectors = (
                q("labelSelector").unwrap_or_default(),
                q("fieldSelector").unwrap_or_default(),
            );
            match list(lab, res, ns, &selectors) {
                Ok(items) if table::wants_table(req.accept) => reply(
                    200,
                    table::table(
                        &res.kind,
                        printer_columns(lab, res).as_deref(),
                        &items,
                        &lab.store.current_rv(),
                        table::Include::from_query(q("includeObject").as_deref()),
                    ),
                ),
                Ok(items) => reply(
                    200,
                    json!({"apiVersion": res.api_version(), "kind": format!("{}List", res.kind),
                        "metadata": {"resourceVersion": lab.store.current_rv()}, "items": items}),
                ),
                Err(r) => r,
            }
        }
        ("GET", Some(n)) => match lab.store.get(&store::key(group, plural, ns, n)) {
            Some(o) if table::wants_table(req.accept) => {
                let rv = o["metadata"]["resourceVersion"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned();
                reply(
                    200,
                    table::table(
                        &res.kind,
                        printer_columns(lab, res).as_deref(),
                        &[o],
                        &rv,
                        table::Include::from_query(q("includeObject").as_deref()),
                    ),
                )
            }
            Some(o) => reply(200, o),
            None => not_found(res, n),
        },
        ("DELETE", Some(n)) => match lab.store.delete(&store::key(group, plural, ns, n)) {
            Some(_) => reply(
                200,
                json!({"kind": "Status", "apiVersion": "v1", "status": "Success", "details": {"name": n, "kind": plural}}),
            ),
            None => not_found(res, n),
        },
        ("PATCH", Some(n)) => {
            let Some(patch) = parse_body(body) else {
                return status(
                    400,
                    "BadRequest",
                    "the request body is not valid JSON or YAML".into(),
                );
            };
            if strict && let Err(r) = strict_fields(lab, res, n, &patch) {
                return r;
            }
            if ctype.starts_with("application/apply-patch+yaml") {
                let Some(manager) = q("fieldManager") else {
                    return status(
                        400,
                        "BadRequest",
                        "PATCH, fieldManager is required for apply requests".into(),
                    );
                };
                server_side_apply(
                    lab,
                    res,
                    ns,
                    n,
                    &patch,
                    &manager,
                    q("force").as_deref() == Some("true"),
                )
            } else if ctype.starts_with("application/merge-patch+json") {
                merge(
                    lab,
                    res,
                    ns,
                    n,
                    &patch,
                    &q("fieldManager").unwrap_or_else(|| "unknown".into()),
                    Merge::Json,
                )
            } else if ctype.starts_with("application/strategic-merge-patch+json") {
                // Custom resources carry no patch strategies, so the real server refuses
                // this patch type for them with 415 (kubernetes/kubernetes PR #53558;
                // apiextensions-apiserver `pkg/apiserver/customresource_handler.go`).
                if crd_version(lab, res).is_some() {
                    return status(
                        415,
                        "UnsupportedMediaType",
                        format!(
                            "the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml (strategic merge patch is not supported for the custom resource {}.{})",
                            res.plural, res.group
                        ),
                    );
                }
                merge(
                    lab,
                    res,
                    ns,
                    n,
                    &patch,
                    &q("fieldManager").unwrap_or_else(|| "unknown".into()),
                    Merge::Strategic,
                )
            } else {
                status(
                    415,
                    "UnsupportedMediaType",
                    format!("the lab does not support patch type {ctype}"),
                )
            }
        }
        ("POST", None) => {
            let Some(obj) = parse_body(body) else {
                return status(
                    400,
                    "BadRequest",
                    "the request body is not valid JSON or YAML".into(),
                );
            };
            let n = obj["metadata"]["name"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            if strict && let Err(r) = strict_fields(lab, res, &n, &obj) {
                return r;
            }
            if lab.store.get(&store::key(group, plural, ns, &n)).is_some() {
                return status(
                    409,
                    "AlreadyExists",
                    format!("{plural} \"{n}\" already exists"),
                );
            }
            server_side_apply(
                lab,
                res,
                ns,
                &n,
                &obj,
                &q("fieldManager").unwrap_or_else(|| "unknown".into()),
                true,
            )
        }
        _ => status(
            405,
            "MethodNotAllowed",
            format!("{method} is not supported on {path}"),
        ),
    }
}

fn parse_body(body: &[u8]) -> Option<Value> {
    serde_json::from_slice(body)
        .ok()
        .or_else(|| serde_saphyr::from_str(std::str::from_utf8(body).ok()?).ok())
        .filter(Value::is_object)
}

/// The objects a list request selects (`labelSelector`, `fieldSelector`); a
/// selector the real server cannot parse or does not index is a 400.
fn list(
    lab: &Lab,
    res: &Resource,
    ns: Option<&str>,
    (labels, fields): &(String, String),
) -> Result<Vec<Value>, Reply> {
    let bad = |m: String| status(400, "BadRequest", m);
    let labels = select::parse(labels, true).map_err(bad)?;
    let fields = select::parse(fields, false).map_err(bad)?;
    select::check_fields(&res.kind, &fields).map_err(bad)?;
    Ok(lab
        .store
        .list(&store::prefix(&res.group, &res.plural, ns))
        .into_iter()
        .filter(|o| select::labels_match(o, &labels) && select::fields_match(o, &fields))
        .collect())
}

/// A custom resource's printer columns (from its CRD's served version).
fn printer_columns(lab: &Lab, res: &Resource) -> Option<Vec<table::CrdColumn>> {
    if BUILTIN.iter().any(|b| b.0 == res.group) {
        return None;
    }
    let crd = crd_version(lab, res)?;
    Some(table::CrdColumn::of(&crd))
}

/// The real message for a podCIDR change.
pub const POD_CIDR_FORBIDDEN: &str =
    "spec.podCIDRs: Forbidden: node updates may not change podCIDR except from \"\" to valid";

fn validate(
    lab: &Lab,
    res: &Resource,
    ns: Option<&str>,
    name: &str,
    old: Option<&Value>,
    new: &Value,
) -> Result<(), Reply> {
    if let Some(ns) = ns
        && lab
            .store
            .get(&store::key("", "namespaces", None, ns))
            .is_none()
    {
        return Err(status(
            404,
            "NotFound",
            format!("namespaces \"{ns}\" not found"),
        ));
    }
    if res.kind == "Node"
        && let Some(old) = old
    {
        let before = old["spec"]["podCIDR"].as_str().unwrap_or_default();
        let after = new["spec"]["podCIDR"].as_str().unwrap_or_default();
        let list_changed = !old["spec"]["podCIDRs"].is_null()
            && old["spec"]["podCIDRs"] != new["spec"]["podCIDRs"];
        if !before.is_empty() && (before != after || list_changed) {
            let mut r = status(
                422,
                "Invalid",
                format!("Node \"{name}\" is invalid: {POD_CIDR_FORBIDDEN}"),
            );
            r.body["details"] = json!({"name": name, "kind": "Node", "causes": [{"reason": "FieldValueForbidden",
                "message": "Forbidden: node updates may not change podCIDR except from \"\" to valid", "field": "spec.podCIDRs"}]});
            return Err(r);
        }
    }
    if res.kind == "Job"
        && let Some(old) = old
        && old["spec"]["template"] != new["spec"]["template"]
    {
        return Err(status(
            422,
            "Invalid",
            format!(
                "Job.batch \"{name}\" is invalid: spec.template: Invalid value: ...: field is immutable"
            ),
        ));
    }
    if !res.group.is_empty() && !BUILTIN.iter().any(|b| b.0 == res.group) {
        webhook(lab, res)?;
        if let Some(schema) = crd_schema(lab, res) {
            // The real server prunes unknown fields instead of refusing them, and
            // checks metadata itself (managedFields are not in CRD schemas).
            let issues: Vec<String> = jsonschema::validate(&schema, new)
                .into_iter()
                .filter(|i| !i.unknown && !i.path.starts_with("metadata"))
                .map(|i| i.to_string())
                .collect();
            if !issues.is_empty() {
                return Err(status(
                    422,
                    "Invalid",
                    format!("{} \"{name}\" is invalid: {}", res.kind, issues.join(", ")),
                ));
            }
        }
    }
    Ok(())
}

/// `fieldValidation=Strict` (kubectl apply and create send it): a field the CRD
/// schema does not declare is refused with 400 instead of pruned (KEP-2885
/// server-side field validation; the message as the apply path words it).
fn strict_fields(lab: &Lab, res: &Resource, name: &str, body: &Value) -> Result<(), Reply> {
    if BUILTIN.iter().any(|b| b.0 == res.group) {
        return Ok(());
    }
    let Some(schema) = crd_schema(lab, res) else {
        return Ok(());
    };
    let unknown: Vec<String> = jsonschema::validate(&schema, body)
        .into_iter()
        .filter(|i| i.unknown && !i.path.starts_with("metadata"))
        .map(|i| format!(".{}: field not declared in schema", i.path))
        .collect();
    if unknown.is_empty() {
        return Ok(());
    }
    Err(status(
        400,
        "BadRequest",
        format!(
            "failed to create typed patch object ({}, Kind={}) /{name}: {}",
            res.api_version(),
            res.kind,
            unknown.join(", ")
        ),
    ))
}

/// A custom resource gets its schema's `default`s for absent fields on every write,
/// as the API server defaults structural schemas (apiextensions-apiserver
/// `pkg/apiserver/schema/defaulting`): recursively, into objects that are present.
fn default_fields(lab: &Lab, res: &Resource, obj: &mut Value) {
    fn walk(schema: &Value, v: &mut Value) {
        let Some(props) = schema["properties"].as_object() else {
            return;
        };
        let Some(map) = v.as_object_mut() else {
            return;
        };
        for (k, sub) in props {
            if !map.contains_key(k)
                && let Some(d) = sub.get("default")
            {
                map.insert(k.clone(), d.clone());
            }
            if let Some(child) = map.get_mut(k) {
                walk(sub, child);
            }
        }
    }
    if BUILTIN.iter().any(|b| b.0 == res.group) {
        return;
    }
    if let Some(schema) = crd_schema(lab, res) {
        // metadata is the server's, never defaulted from a CRD schema.
        if let Some(spec) = obj.get_mut("spec") {
            walk(&schema["properties"]["spec"], spec);
        }
    }
}

fn crd_schema(lab: &Lab, res: &Resource) -> Option<Value> {
    crd_version(lab, res).map(|v| v["schema"]["openAPIV3Schema"].clone())
}

/// The CRD's entry for the version `res` is served at.
fn crd_version(lab: &Lab, res: &Resource) -> Option<Value> {
    let crd = lab.store.get(&store::key(
        "apiextensions.k8s.io",
        "customresourcedefinitions",
        None,
        &format!("{}.{}", res.plural, res.group),
    ))?;
    crd["spec"]["versions"]
        .as_array()?
        .iter()
        .find(|v| v["name"] == res.version.as_str())
        .cloned()
}

/// Validating webhooks matching this resource must be reachable (`failurePolicy: Fail`).
fn webhook(lab: &Lab, res: &Resource) -> Result<(), Reply> {
    for cfg in lab.store.list(&store::prefix(
        "admissionregistration.k8s.io",
        "validatingwebhookconfigurations",
        None,
    )) {
        for w in cfg["webhooks"].as_array().into_iter().flatten() {
            let matches = w["rules"].as_array().into_iter().flatten().any(|r| {
                let has = |f: &str, v: &str| {
                    r[f].as_array()
                        .is_some_and(|a| a.iter().any(|x| x == v || x == "*"))
                };
                has("apiGroups", &res.group) && has("resources", &res.plural)
            });
            if !matches {
                continue;
            }
            let svc = &w["clientConfig"]["service"];
            let (sns, sname) = (
                svc["namespace"].as_str().unwrap_or_default(),
                svc["name"].as_str().unwrap_or_default(),
            );
            if !super::sim::webhook_serving(lab, sns, sname) {
                let hook = w["name"].as_str().unwrap_or_default();
                let url = format!(
                    "https://{sname}.{sns}.svc:443{}?timeout=10s",
                    svc["path"].as_str().unwrap_or("/")
                );
                return Err(status(
                    500,
                    "InternalError",
                    format!(
                        "Internal error occurred: failed calling webhook \"{hook}\": failed to call webhook: Post \"{url}\": dial tcp 10.96.0.123:443: connect: connection refused"
                    ),
                ));
            }
        }
    }
    Ok(())
}

fn conflict_reply(res: &Resource, name: &str, c: &[Conflict]) -> Reply {
    let fields: Vec<String> = c
        .iter()
        .map(|c| format!("conflict with \"{}\": {}", c.manager, c.field))
        .collect();
    let mut r = status(
        409,
        "Conflict",
        format!(
            "Apply failed with {} conflict(s): {}",
            c.len(),
            fields.join("; ")
        ),
    );
    r.body["details"] = json!({"name": name, "kind": res.plural});
    r
}

fn server_side_apply(
    lab: &Lab,
    res: &Resource,
    ns: Option<&str>,
    name: &str,
    patch: &Value,
    manager: &str,
    force: bool,
) -> Reply {
    if patch["metadata"]["name"]
        .as_str()
        .is_some_and(|n| n != name)
    {
        return status(
            400,
            "BadRequest",
            "the name of the object does not match the name on the URL".into(),
        );
    }
    if patch["kind"] != res.kind.as_str() {
        return status(
            400,
            "BadRequest",
            format!(
                "apply body has kind {} on a {} path",
                patch["kind"], res.kind
            ),
        );
    }
    let k = store::key(&res.group, &res.plural, ns, name);
    let old = lab.store.get(&k);
    let mut obj = match store::apply(old.as_ref(), patch, manager, force) {
        Ok(o) => o,
        Err(c) => return conflict_reply(res, name, &c),
    };
    if let Some(ns) = ns {
        obj["metadata"]["namespace"] = json!(ns);
    }
    default_fields(lab, res, &mut obj);
    if let Err(r) = validate(lab, res, ns, name, old.as_ref(), &obj) {
        return r;
    }
    let created = old.is_none();
    let stored = lab.store.put(&k, obj);
    reply(if created { 201 } else { 200 }, stored)
}

/// The merging patch types: RFC 7386, or Kubernetes' strategic merge patch.
enum Merge {
    Json,
    Strategic,
}

fn merge(
    lab: &Lab,
    res: &Resource,
    ns: Option<&str>,
    name: &str,
    patch: &Value,
    manager: &str,
    how: Merge,
) -> Reply {
    let k = store::key(&res.group, &res.plural, ns, name);
    let Some(old) = lab.store.get(&k) else {
        return not_found(res, name);
    };
    let mut obj = old.clone();
    match how {
        Merge::Json => store::merge_patch(&mut obj, patch),
        Merge::Strategic => {
            if let Err(strategic::Refused(why)) = strategic::apply(&res.kind, &mut obj, patch) {
                return status(
                    422,
                    "Invalid",
                    format!(
                        "{why}\n  fix: send a merge patch (`kubectl patch --type merge`, which replaces lists) or apply the whole object (`kubectl apply --server-side`)"
                    ),
                );
            }
        }
    }
    store::record_update(&mut obj, patch, manager);
    default_fields(lab, res, &mut obj);
    if let Err(r) = validate(lab, res, ns, name, Some(&old), &obj) {
        return r;
    }
    let stored = lab.store.put(&k, obj);
    reply(200, stored)
}
