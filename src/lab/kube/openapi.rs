//! The OpenAPI v3 documents kubectl reads before `apply --server-side`: it checks
//! that the PATCH operation of the object's group-version-kind takes the
//! `fieldValidation` query parameter (kubernetes v1.34
//! `staging/src/k8s.io/cli-runtime/pkg/resource/query_param_verifier_v3.go`) and
//! otherwise falls back to client-side validation against `/openapi/v2`. The lab
//! serves the discovery index (`/openapi/v3`) and, per group version, each
//! resource's paths with their operations' parameters and GVK extension; no schemas.

use serde_json::{Map, Value, json};

use crate::kube::Resource;

/// `api/v1` or `apis/<group>/<version>`: the key of a group version in the index.
fn gv_path(group: &str, version: &str) -> String {
    if group.is_empty() {
        format!("api/{version}")
    } else {
        format!("apis/{group}/{version}")
    }
}

/// `/openapi/v3`: every served group version and where its document is.
/// `hash` changes whenever the served resources change (client-go caches by it).
pub fn index(resources: &[Resource], hash: &str) -> Value {
    let mut paths = Map::new();
    for r in resources {
        let p = gv_path(&r.group, &r.version);
        paths.insert(
            p.clone(),
            json!({"serverRelativeURL": format!("/openapi/v3/{p}?hash={hash}")}),
        );
    }
    json!({"paths": paths})
}

fn query(name: &str) -> Value {
    json!({"name": name, "in": "query", "schema": {"type": "string", "uniqueItems": true}})
}

fn path_param(name: &str) -> Value {
    json!({"name": name, "in": "path", "required": true, "schema": {"type": "string", "uniqueItems": true}})
}

/// The document of one group version (`gv` as in the index), if it is served.
pub fn group_version(resources: &[Resource], gv: &str) -> Option<Value> {
    let served: Vec<&Resource> = resources
        .iter()
        .filter(|r| gv_path(&r.group, &r.version) == gv)
        .collect();
    if served.is_empty() {
        return None;
    }
    let mut paths = Map::new();
    for r in served {
        let gvk = json!({"group": r.group, "version": r.version, "kind": r.kind});
        let op = |verb: &str, params: Vec<Value>| {
            json!({"operationId": format!("{verb}{}", r.kind), "parameters": params,
                "x-kubernetes-action": verb, "x-kubernetes-group-version-kind": gvk,
                "responses": {"200": {"description": "OK"}}})
        };
        let write = || {
            vec![
                query("dryRun"),
                query("fieldManager"),
                query("fieldValidation"),
            ]
        };
        let mut patch_params = write();
        patch_params.push(query("force"));
        let mut scope = vec![path_param("name")];
        if r.namespaced {
            scope.push(path_param("namespace"));
        }
        let object = json!({
            "get": op("get", vec![]),
            "put": op("put", write()),
            "patch": op("patch", patch_params),
            "delete": op("delete", vec![query("dryRun")]),
            "parameters": scope,
        });
        paths.insert(r.object_path(Some("{namespace}"), "{name}"), object);
    }
    Some(
        json!({"openapi": "3.0.0", "info": {"title": "Kubernetes (talos-pve lab)", "version": "lab"},
        "paths": paths, "components": {"schemas": {}}}),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cm() -> Resource {
        Resource {
            group: String::new(),
            version: "v1".into(),
            kind: "ConfigMap".into(),
            plural: "configmaps".into(),
            namespaced: true,
        }
    }

    #[test]
    fn index_points_at_each_group_version() {
        let i = index(&[cm()], "h1");
        assert_eq!(
            i["paths"]["api/v1"]["serverRelativeURL"],
            "/openapi/v3/api/v1?hash=h1"
        );
    }

    #[test]
    fn patch_of_a_kind_takes_field_validation() {
        let d = group_version(&[cm()], "api/v1").unwrap();
        let p = &d["paths"]["/api/v1/namespaces/{namespace}/configmaps/{name}"]["patch"];
        assert_eq!(p["x-kubernetes-group-version-kind"]["kind"], "ConfigMap");
        let names: Vec<&str> = p["parameters"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|q| q["name"].as_str())
            .collect();
        assert!(names.contains(&"fieldValidation"), "{names:?}");
        assert!(group_version(&[cm()], "apis/apps/v1").is_none());
    }
}
