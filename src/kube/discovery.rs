//! Discovery: which plural serves a kind, and whether it is namespaced.

use serde_json::Value;

use super::{Client, KubeError};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resource {
    /// Empty for the core group.
    pub group: String,
    pub version: String,
    pub kind: String,
    pub plural: String,
    pub namespaced: bool,
}

impl Resource {
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.clone()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    fn prefix(&self) -> String {
        if self.group.is_empty() {
            format!("/api/{}", self.version)
        } else {
            format!("/apis/{}/{}", self.group, self.version)
        }
    }

    /// The collection: all namespaces when `ns` is `None` (or the kind is cluster-scoped).
    pub fn collection_path(&self, ns: Option<&str>) -> String {
        match ns.filter(|_| self.namespaced) {
            Some(ns) => format!("{}/namespaces/{ns}/{}", self.prefix(), self.plural),
            None => format!("{}/{}", self.prefix(), self.plural),
        }
    }

    pub fn object_path(&self, ns: Option<&str>, name: &str) -> String {
        format!("{}/{name}", self.collection_path(ns))
    }
}

/// Everything the API serves, from `/api/v1`, `/apis` and each group version.
#[derive(Debug, Clone, Default)]
pub struct Discovery {
    resources: Vec<Resource>,
}

/// Split `group/version` (or a bare core `version`).
pub fn split_api_version(api_version: &str) -> (&str, &str) {
    api_version.rsplit_once('/').unwrap_or(("", api_version))
}

fn resources_of(group: &str, version: &str, list: &Value) -> Vec<Resource> {
    list["resources"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|r| {
            let plural = r["name"].as_str()?;
            // `deployments/status` and friends are subresources.
            (!plural.contains('/')).then(|| Resource {
                group: group.into(),
                version: version.into(),
                kind: r["kind"].as_str().unwrap_or_default().into(),
                plural: plural.into(),
                namespaced: r["namespaced"].as_bool().unwrap_or(false),
            })
        })
        .collect()
}

impl Discovery {
    /// The group versions are asked all at once, as kubectl's discovery does: each
    /// answer is small, and a cluster serves a few dozen of them.
    pub async fn run(client: &Client) -> Result<Self, KubeError> {
        let (core, groups) = tokio::try_join!(client.get("/api/v1"), client.get("/apis"))?;
        let mut resources = core.map_or_else(Vec::new, |c| resources_of("", "v1", &c));
        let groups = groups.unwrap_or(Value::Null);
        let versions: Vec<&str> = groups["groups"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|g| g["versions"].as_array().into_iter().flatten())
            .filter_map(|v| v["groupVersion"].as_str())
            .collect();
        let lists = futures_util::future::try_join_all(
            versions
                .iter()
                .map(|gv| async move { client.get(&format!("/apis/{gv}")).await }),
        )
        .await?;
        for (gv, list) in versions.iter().zip(lists) {
            let (group, version) = split_api_version(gv);
            if let Some(list) = list {
                resources.extend(resources_of(group, version, &list));
            }
        }
        Ok(Self { resources })
    }

    pub fn resolve(&self, api_version: &str, kind: &str) -> Result<&Resource, KubeError> {
        let (group, version) = split_api_version(api_version);
        self.resources
            .iter()
            .find(|r| r.group == group && r.version == version && r.kind == kind)
            .ok_or_else(|| KubeError::UnknownKind {
                api_version: api_version.into(),
                kind: kind.into(),
            })
    }

    /// The resource serving `obj` (by its `apiVersion` and `kind`).
    pub fn for_object(&self, obj: &Value) -> Result<&Resource, KubeError> {
        let field = |f: &'static str| {
            obj[f].as_str().ok_or_else(|| KubeError::BadObject {
                field: f,
                object: obj["metadata"]["name"].to_string(),
            })
        };
        self.resolve(field("apiVersion")?, field("kind")?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_follow_the_api_layout() {
        let d = Resource {
            group: "apps".into(),
            version: "v1".into(),
            kind: "Deployment".into(),
            plural: "deployments".into(),
            namespaced: true,
        };
        assert_eq!(
            d.object_path(Some("kube-system"), "cilium-operator"),
            "/apis/apps/v1/namespaces/kube-system/deployments/cilium-operator"
        );
        let n = Resource {
            group: String::new(),
            version: "v1".into(),
            kind: "Node".into(),
            plural: "nodes".into(),
            namespaced: false,
        };
        assert_eq!(n.object_path(Some("ignored"), "a"), "/api/v1/nodes/a");
        assert_eq!(n.api_version(), "v1");
        let list = serde_json::json!({"resources": [
            {"name": "nodes", "kind": "Node", "namespaced": false},
            {"name": "nodes/status", "kind": "Node", "namespaced": false}]});
        assert_eq!(resources_of("", "v1", &list), vec![n]);
    }
}
