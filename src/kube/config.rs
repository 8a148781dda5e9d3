//! The kubeconfig file: the selected context's server, CA and client certificate.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

use super::KubeError;

#[derive(Deserialize)]
#[serde(rename_all = "kebab-case")]
struct File {
    #[serde(default)]
    clusters: Vec<NamedCluster>,
    #[serde(default)]
    users: Vec<NamedUser>,
    #[serde(default)]
    contexts: Vec<NamedContext>,
    #[serde(default)]
    current_context: Option<String>,
}

#[derive(Deserialize)]
struct NamedCluster {
    name: String,
    cluster: ClusterEntry,
}

#[derive(Deserialize)]
struct NamedUser {
    name: String,
    user: UserEntry,
}

#[derive(Deserialize)]
struct NamedContext {
    name: String,
    context: ContextEntry,
}

#[derive(Deserialize)]
#[serde(rename_all = "kebab-case")]
struct ClusterEntry {
    server: String,
    certificate_authority_data: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "kebab-case")]
struct UserEntry {
    client_certificate_data: Option<String>,
    client_key_data: Option<SecretString>,
}

#[derive(Deserialize)]
struct ContextEntry {
    cluster: String,
    user: String,
}

/// What a client needs from a kubeconfig. The key never appears in `Debug`.
pub struct Kubeconfig {
    pub server: String,
    pub ca_pem: String,
    pub cert_pem: String,
    pub key_pem: SecretString,
}

impl std::fmt::Debug for Kubeconfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Kubeconfig")
            .field("server", &self.server)
            .finish_non_exhaustive()
    }
}

fn err(where_: &str, what: impl Into<String>) -> KubeError {
    KubeError::Kubeconfig {
        where_: where_.into(),
        what: what.into(),
    }
}

fn decode(where_: &str, field: &str, b64: Option<&str>) -> Result<String, KubeError> {
    let b64 = b64.ok_or_else(|| {
        err(
            where_,
            format!("`{field}` is missing (only embedded data is supported)"),
        )
    })?;
    let bytes = STANDARD
        .decode(b64.trim())
        .map_err(|_| err(where_, format!("`{field}` is not base64")))?;
    String::from_utf8(bytes).map_err(|_| err(where_, format!("`{field}` is not PEM text")))
}

impl Kubeconfig {
    /// Parse a kubeconfig and select its current context (or its only one).
    /// `origin` names the file in errors.
    pub fn parse(yaml: &str, origin: &str) -> Result<Self, KubeError> {
        let f: File = serde_saphyr::from_str(yaml).map_err(|e| err(origin, e.to_string()))?;
        let ctx = match &f.current_context {
            Some(c) => f.contexts.iter().find(|x| &x.name == c),
            None if f.contexts.len() == 1 => f.contexts.first(),
            None => None,
        }
        .ok_or_else(|| err(origin, "no usable `current-context`"))?;
        let cl = &ctx.context.cluster;
        let us = &ctx.context.user;
        let cluster = f.clusters.iter().find(|c| &c.name == cl).ok_or_else(|| {
            err(
                origin,
                format!("context names cluster `{cl}`, which is not defined"),
            )
        })?;
        let user = f.users.iter().find(|u| &u.name == us).ok_or_else(|| {
            err(
                origin,
                format!("context names user `{us}`, which is not defined"),
            )
        })?;
        let c = &cluster.cluster;
        let u = &user.user;
        let key_b64 = u.client_key_data.as_ref().map(|k| k.expose_secret());
        Ok(Self {
            server: c.server.clone(),
            ca_pem: decode(
                origin,
                "certificate-authority-data",
                c.certificate_authority_data.as_deref(),
            )?,
            cert_pem: decode(
                origin,
                "client-certificate-data",
                u.client_certificate_data.as_deref(),
            )?,
            key_pem: decode(origin, "client-key-data", key_b64)?.into(),
        })
    }

    /// Read and parse a kubeconfig file.
    pub fn load(path: &std::path::Path) -> Result<Self, KubeError> {
        let where_ = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| err(&where_, e.to_string()))?;
        Self::parse(&text, &where_)
    }

    /// An admin kubeconfig in the shape Talos writes (one cluster, user and context).
    pub fn render(&self, cluster: &str) -> String {
        let b = |s: &str| STANDARD.encode(s.as_bytes());
        let user = format!("admin@{cluster}");
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: {cluster}\n  cluster:\n    server: {server}\n    certificate-authority-data: {ca}\nusers:\n- name: {user}\n  user:\n    client-certificate-data: {cert}\n    client-key-data: {key}\ncontexts:\n- name: {user}\n  context:\n    cluster: {cluster}\n    namespace: default\n    user: {user}\ncurrent-context: {user}\n",
            server = self.server,
            ca = b(&self.ca_pem),
            cert = b(&self.cert_pem),
            key = b(self.key_pem.expose_secret()),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn render_and_parse_round_trip() {
        let k = Kubeconfig {
            server: "https://10.8.16.20:6443".into(),
            ca_pem: "CA".into(),
            cert_pem: "CERT".into(),
            key_pem: "KEY".to_string().into(),
        };
        let back = Kubeconfig::parse(&k.render("homelab"), "test").unwrap();
        assert_eq!(back.server, k.server);
        assert_eq!(
            (back.ca_pem.as_str(), back.cert_pem.as_str()),
            ("CA", "CERT")
        );
        assert_eq!(back.key_pem.expose_secret(), "KEY");
        assert!(!format!("{back:?}").contains("KEY"));
    }

    #[test]
    fn missing_user_is_a_clear_error() {
        let y = "clusters: [{name: c, cluster: {server: https://x}}]\ncontexts: [{name: a, context: {cluster: c, user: u}}]\ncurrent-context: a\n";
        let e = Kubeconfig::parse(y, "kc").unwrap_err().to_string();
        assert!(e.contains("user `u`"), "{e}");
    }
}
