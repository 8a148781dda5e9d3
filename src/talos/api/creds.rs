//! The two ways to talk TLS to a Talos node, and where the client identity comes
//! from. Maintenance mode: server-only TLS, the node's self-issued certificate is
//! not verifiable, no client certificate. Normal mode: mutual TLS with the admin
//! certificate from the talosconfig; the server is verified against the OS CA with
//! the node's real address as the name.

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

use super::error::TalosError;

/// Client identity and trust for normal (mTLS) mode. PEM text throughout.
#[derive(Clone)]
pub struct Credentials {
    /// The OS CA (`machine.ca.crt`), which signs every node's apid certificate.
    pub ca_pem: String,
    pub crt_pem: String,
    pub key_pem: SecretString,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("key_pem", &"<redacted>")
            .finish_non_exhaustive()
    }
}

impl Credentials {
    /// The key as tonic/rustls accept it (Talos writes `ED25519 PRIVATE KEY`).
    pub fn key_for_rustls(&self) -> String {
        crate::pki::pem::relabel_private_key(self.key_pem.expose_secret())
    }
}

/// How to secure a connection to a node.
#[derive(Debug, Clone)]
pub enum TlsMode {
    /// No client certificate; any server certificate (the node has no config yet).
    Maintenance,
    /// Mutual TLS with the admin identity; server verified against the OS CA.
    Mutual(Credentials),
}

/// The parts of a talosconfig talos-pve reads.
#[derive(Debug, Clone)]
pub struct Talosconfig {
    pub context: String,
    pub endpoints: Vec<String>,
    pub nodes: Vec<String>,
    pub credentials: Credentials,
}

#[derive(Deserialize)]
struct RawConfig {
    context: String,
    contexts: BTreeMap<String, RawContext>,
}

#[derive(Deserialize)]
struct RawContext {
    #[serde(default)]
    endpoints: Vec<String>,
    #[serde(default)]
    nodes: Vec<String>,
    ca: String,
    crt: String,
    key: String,
}

impl Talosconfig {
    pub fn load(path: &Path) -> Result<Self, TalosError> {
        let text = std::fs::read_to_string(path).map_err(|e| TalosError::Talosconfig {
            path: path.display().to_string(),
            detail: format!("cannot read it: {e}"),
        })?;
        Self::parse(&text, &path.display().to_string())
    }

    /// Parse talosconfig YAML; `origin` names it in errors.
    pub fn parse(text: &str, origin: &str) -> Result<Self, TalosError> {
        let bad = |detail: String| TalosError::Talosconfig {
            path: origin.to_owned(),
            detail,
        };
        // Errors from the YAML parser may quote the offending line, which can be a
        // key: report only the position.
        let raw: RawConfig = serde_saphyr::from_str(text)
            .map_err(|_| bad("not a talosconfig (YAML with context/contexts)".into()))?;
        let ctx = raw
            .contexts
            .get(&raw.context)
            .ok_or_else(|| bad(format!("context `{}` is not in `contexts`", raw.context)))?;
        let decode = |field: &str, v: &str| -> Result<String, TalosError> {
            let bytes = STANDARD
                .decode(v.trim())
                .map_err(|_| bad(format!("contexts.{}.{field} is not base64", raw.context)))?;
            String::from_utf8(bytes)
                .map_err(|_| bad(format!("contexts.{}.{field} is not PEM text", raw.context)))
        };
        Ok(Self {
            context: raw.context.clone(),
            endpoints: ctx.endpoints.clone(),
            nodes: ctx.nodes.clone(),
            credentials: Credentials {
                ca_pem: decode("ca", &ctx.ca)?,
                crt_pem: decode("crt", &ctx.crt)?,
                key_pem: SecretString::from(decode("key", &ctx.key)?),
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn talosconfig_parses_and_never_shows_the_key() {
        let b = |s: &str| STANDARD.encode(s);
        let text = format!(
            "context: lab\ncontexts:\n  lab:\n    endpoints: [10.8.16.20]\n    ca: {}\n    crt: {}\n    key: {}\n",
            b("CA"),
            b("CRT"),
            b("TOPSECRET")
        );
        let t = Talosconfig::parse(&text, "talosconfig").unwrap();
        assert_eq!(t.endpoints, ["10.8.16.20"]);
        assert_eq!(t.credentials.ca_pem, "CA");
        assert!(!format!("{t:?}").contains("TOPSECRET"));
        let e = Talosconfig::parse("context: x\ncontexts: {}\n", "tc").unwrap_err();
        assert!(e.to_string().contains("context `x`"), "{e}");
    }
}
