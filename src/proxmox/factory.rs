//! The Image Factory client: registers the schematic so the factory serves the
//! ISO talos-pve asks Proxmox to download. Resolved through the `AddressBook`
//! like every other client (the lab serves a fake factory on loopback).

use std::time::Duration;

use serde_json::Value;

use super::client::{Trust, http_client, resolve_scheme_origin};
use super::error::PveError;
use crate::net::AddressBook;

/// Environment override of `talos.imageFactory`.
pub const FACTORY_ENV: &str = "TALOS_PVE_IMAGE_FACTORY";

#[derive(Debug, Clone)]
pub struct Factory {
    http: reqwest::Client,
    /// Dialable origin.
    origin: String,
    /// As configured (for messages).
    url: String,
}

impl Factory {
    /// A self-hosted factory may serve plain `http://` (accepted with a warning:
    /// nothing then proves where the ISO comes from).
    pub fn new(url: &str, trust: &Trust, book: &AddressBook) -> Result<Factory, PveError> {
        let (scheme, port) = if url.starts_with("http://") {
            tracing::warn!(
                url,
                "the Image Factory is plain http: the ISO and the installer image are not authenticated; serve it over https"
            );
            ("http", 80)
        } else {
            ("https", 443)
        };
        let origin = resolve_scheme_origin(scheme, url, book, port).map_err(|e| match e {
            PveError::BadEndpoint(_) => PveError::Factory {
                url: url.into(),
                detail:
                    "is not a URL like https://factory.talos.dev (http:// for a self-hosted one)"
                        .into(),
            },
            other => other,
        })?;
        Ok(Factory {
            http: http_client(trust, Duration::from_secs(60))?,
            origin,
            url: url.trim_end_matches('/').into(),
        })
    }

    /// Whether the factory is reached over https (PVE can verify its certificate).
    pub fn is_https(&self) -> bool {
        self.url.starts_with("https://")
    }

    /// `POST /schematics`; the factory answers with the content-hash id.
    pub async fn register(&self, yaml: &str) -> Result<String, PveError> {
        let url = format!("{}/schematics", self.url);
        let err = |detail: String| PveError::Factory {
            url: url.clone(),
            detail,
        };
        let resp = self
            .http
            .post(format!("{}/schematics", self.origin))
            .header(reqwest::header::CONTENT_TYPE, "application/yaml")
            .body(yaml.to_owned())
            .send()
            .await
            .map_err(|e| err(super::client::root_cause(&e.without_url())))?;
        let status = resp.status();
        let body: Value = resp
            .json()
            .await
            .map_err(|e| err(format!("HTTP {status}, body not JSON: {e}")))?;
        if !status.is_success() {
            return Err(err(format!("HTTP {status}: {body}")));
        }
        body.get("id")
            .and_then(Value::as_str)
            .map(str::to_owned)
            .ok_or_else(|| err(format!("no `id` in {body}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_plain_http_factory_is_accepted_and_a_bad_url_names_the_factory() {
        let book = AddressBook::lab();
        book.map(
            "10.8.16.5:80".parse().unwrap(),
            "127.0.0.1:4000".parse().unwrap(),
        );
        let f = Factory::new("http://10.8.16.5", &Trust::Verify, &book).unwrap();
        assert_eq!(f.origin, "http://127.0.0.1:4000");
        assert!(!f.is_https());
        let e = Factory::new("ftp://10.8.16.5", &Trust::Verify, &book).unwrap_err();
        let msg = e.to_string();
        assert!(msg.starts_with("Image Factory ftp://10.8.16.5"), "{msg}");
        assert!(!msg.contains("Proxmox endpoint"), "{msg}");
    }
}
