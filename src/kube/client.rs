//! The HTTP side: one reqwest client per kubeconfig, mTLS with the kubeconfig's
//! client certificate, the server pinned to the kubeconfig's CA and host name.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use reqwest::Method;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use secrecy::ExposeSecret;
use serde_json::Value;

use super::{KubeError, Kubeconfig, Resource};
use crate::net::AddressBook;

/// The field manager of every server-side apply talos-pve makes.
pub const FIELD_MANAGER: &str = "talos-pve";

const APPLY: &str = "application/apply-patch+yaml";
const MERGE: &str = "application/merge-patch+json";

#[derive(Debug, Clone)]
pub struct Client {
    http: reqwest::Client,
    /// `https://<address actually dialed>` or the original URL when a name was resolved.
    base: String,
}

fn tls_err(server: &str, what: impl std::fmt::Display) -> KubeError {
    KubeError::Tls {
        server: server.into(),
        what: what.to_string(),
    }
}

/// The client key, which Talos may label `ED25519 PRIVATE KEY`.
fn client_key(pem: &str, server: &str) -> Result<PrivateKeyDer<'static>, KubeError> {
    let pem = crate::pki::pem::relabel_private_key(pem);
    PrivateKeyDer::from_pem_slice(pem.as_bytes()).map_err(|_| {
        tls_err(
            server,
            "the kubeconfig's client-key-data is not a PEM private key",
        )
    })
}

impl Client {
    pub async fn new(kc: &Kubeconfig, book: &AddressBook) -> Result<Self, KubeError> {
        crate::tls::install_provider();
        let server = kc.server.as_str();
        let url = reqwest::Url::parse(server).map_err(|e| KubeError::Kubeconfig {
            where_: "server".into(),
            what: format!("`{server}` is not a URL: {e}"),
        })?;
        let host = url
            .host_str()
            .ok_or_else(|| tls_err(server, "the server URL has no host"))?
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        let port = url.port_or_known_default().unwrap_or(443);
        let ip: Option<IpAddr> = host.parse().ok();
        let target = match ip {
            Some(ip) => SocketAddr::new(ip, port),
            None if book.is_lab() => {
                return Err(tls_err(
                    server,
                    "the lab maps addresses, not names; use an IP server URL",
                ));
            }
            None => tokio::net::lookup_host((host.as_str(), port))
                .await
                .ok()
                .and_then(|mut a| a.next())
                .ok_or_else(|| tls_err(server, format!("cannot resolve `{host}`")))?,
        };
        let dial = book.resolve(target).map_err(|source| KubeError::Net {
            server: server.into(),
            source,
        })?;

        let mut roots = rustls::RootCertStore::empty();
        for c in CertificateDer::pem_slice_iter(kc.ca_pem.as_bytes()) {
            let c = c.map_err(|_| tls_err(server, "certificate-authority-data is not PEM"))?;
            roots
                .add(c)
                .map_err(|e| tls_err(server, format!("bad CA certificate: {e}")))?;
        }
        let name = ServerName::try_from(host.clone())
            .map_err(|_| tls_err(server, format!("`{host}` is not a valid server name")))?;
        let verifier =
            crate::tls::NameOverrideVerifier::new(roots, name).map_err(|e| tls_err(server, e))?;
        let certs: Vec<CertificateDer<'static>> =
            CertificateDer::pem_slice_iter(kc.cert_pem.as_bytes())
                .collect::<Result<_, _>>()
                .map_err(|_| tls_err(server, "client-certificate-data is not PEM"))?;
        let key = client_key(kc.key_pem.expose_secret(), server)?;
        let tls = rustls::ClientConfig::builder_with_provider(crate::tls::provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| tls_err(server, e))?
            .dangerous()
            .with_custom_certificate_verifier(verifier)
            .with_client_auth_cert(certs, key)
            .map_err(|e| tls_err(server, e))?;

        let mut builder = reqwest::Client::builder()
            .tls_backend_preconfigured(tls)
            .connect_timeout(Duration::from_secs(10))
            .timeout(Duration::from_secs(60));
        let base = if ip.is_some() {
            format!("https://{dial}")
        } else {
            builder = builder.resolve(&host, dial);
            format!("https://{host}:{port}")
        };
        let http = builder.build().map_err(|e| tls_err(server, e))?;
        Ok(Self { http, base })
    }

    async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<(&'static str, &Value)>,
    ) -> Result<(u16, Value), KubeError> {
        tracing::debug!(%method, path, "kubernetes request");
        let url = format!("{}{path}", self.base);
        let mut req = self.http.request(method.clone(), &url);
        if let Some((ctype, v)) = body {
            req = req
                .header(reqwest::header::CONTENT_TYPE, ctype)
                .body(serde_json::to_vec(v).expect("JSON values serialize"));
        }
        let http_err = |source| KubeError::Http {
            method: method.to_string(),
            url: url.clone(),
            source,
        };
        let resp = req.send().await.map_err(http_err)?;
        let code = resp.status().as_u16();
        let bytes = resp.bytes().await.map_err(http_err)?;
        let v: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        if (200..300).contains(&code) {
            return Ok((code, v));
        }
        let message = v["message"]
            .as_str()
            .map(str::to_owned)
            .unwrap_or_else(|| String::from_utf8_lossy(&bytes).into_owned());
        Err(KubeError::Status {
            method: method.to_string(),
            path: path.into(),
            code,
            message,
        })
    }

    /// `GET path`; `None` when the object does not exist.
    pub async fn get(&self, path: &str) -> Result<Option<Value>, KubeError> {
        match self.send(Method::GET, path, None).await {
            Ok((_, v)) => Ok(Some(v)),
            Err(e) if e.code() == Some(404) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// The `items` of a list.
    pub async fn list(&self, path: &str) -> Result<Vec<Value>, KubeError> {
        Ok(self.list_at(path).await?.0)
    }

    /// The `items` of a list and the list's `resourceVersion` (where a watch starts).
    pub async fn list_at(&self, path: &str) -> Result<(Vec<Value>, String), KubeError> {
        let (_, v) = self.send(Method::GET, path, None).await?;
        let rv = v["metadata"]["resourceVersion"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        Ok((v["items"].as_array().cloned().unwrap_or_default(), rv))
    }

    /// `GET path` whose body is read as it arrives (a watch), allowed `limit` in all.
    pub(super) async fn stream(
        &self,
        path: &str,
        limit: Duration,
    ) -> Result<reqwest::Response, KubeError> {
        let url = format!("{}{path}", self.base);
        let resp = self
            .http
            .get(&url)
            .timeout(limit)
            .send()
            .await
            .map_err(|source| KubeError::Http {
                method: "GET".into(),
                url: url.clone(),
                source,
            })?;
        let code = resp.status().as_u16();
        if code == 200 {
            return Ok(resp);
        }
        let bytes = resp.bytes().await.unwrap_or_default();
        let v: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        Err(KubeError::Status {
            method: "GET".into(),
            path: path.into(),
            code,
            message: v["message"]
                .as_str()
                .map(str::to_owned)
                .unwrap_or_else(|| String::from_utf8_lossy(&bytes).into_owned()),
        })
    }

    /// Server-side apply `obj` as `talos-pve`, forcing ownership of the fields it sets.
    pub async fn apply(&self, res: &Resource, obj: &Value) -> Result<Value, KubeError> {
        let name = obj["metadata"]["name"]
            .as_str()
            .ok_or_else(|| KubeError::BadObject {
                field: "metadata.name",
                object: format!("{} {}", res.kind, res.plural),
            })?;
        let ns = obj["metadata"]["namespace"].as_str();
        let path = format!(
            "{}?fieldManager={}&force=true",
            res.object_path(ns, name),
            super::FIELD_MANAGER
        );
        Ok(self.send(Method::PATCH, &path, Some((APPLY, obj))).await?.1)
    }

    /// JSON merge patch (RFC 7386) of the object at `path`.
    pub async fn merge_patch(&self, path: &str, patch: &Value) -> Result<Value, KubeError> {
        let path = format!("{path}?fieldManager={}", super::FIELD_MANAGER);
        Ok(self
            .send(Method::PATCH, &path, Some((MERGE, patch)))
            .await?
            .1)
    }

    /// `POST path` with a JSON body (a subresource such as a Pod's `eviction`).
    pub async fn post(&self, path: &str, body: &Value) -> Result<Value, KubeError> {
        Ok(self
            .send(Method::POST, path, Some(("application/json", body)))
            .await?
            .1)
    }

    /// Delete the object at `path`; already gone is fine.
    pub async fn delete(&self, path: &str) -> Result<(), KubeError> {
        match self.send(Method::DELETE, path, None).await {
            Ok(_) => Ok(()),
            Err(e) if e.code() == Some(404) => Ok(()),
            Err(e) => Err(e),
        }
    }
}
