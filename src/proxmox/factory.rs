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
    /// Whether a Proxmox host can verify the factory's certificate itself: https
    /// and trusted by the system's CAs, as the host's wget checks it.
    host_verifies: bool,
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
            host_verifies: scheme == "https" && *trust == Trust::Verify,
        })
    }

    /// The `download-url` parameters that make the Proxmox host check the ISO at
    /// `iso_url`. A factory the host can verify needs none. Otherwise (plain
    /// http, or a certificate only talos-pve trusts: pinned or its own CA)
    /// talos-pve fetches the ISO itself over its own trust and hands PVE the
    /// SHA-512, which PVE checks after the download; `verify-certificates=0`
    /// then only stops wget from refusing the certificate (PVE has no CA or pin
    /// option: pve-storage 9.1.7 `API2/Storage/Status.pm` 870-874).
    pub async fn download_check(&self, iso_url: &str) -> Result<Vec<(String, String)>, PveError> {
        // Not from this factory (the lab's factory stands in for the public
        // one the plan names): the host verifies it with its own CAs.
        let path = match iso_url.strip_prefix(&self.url) {
            Some(path) if !self.host_verifies => path,
            _ => return Ok(Vec::new()),
        };
        let err = |detail: String| PveError::Factory {
            url: iso_url.into(),
            detail,
        };
        let mut resp = match self
            .http
            .get(format!("{}{path}", self.origin))
            .timeout(Duration::from_secs(900))
            .send()
            .await
        {
            Ok(r) => r,
            Err(e) => return Err(err(self.failure(&e).await)),
        };
        if !resp.status().is_success() {
            return Err(err(format!(
                "HTTP {} while fetching the ISO to compute its checksum",
                resp.status()
            )));
        }
        let mut sha = ring::digest::Context::new(&ring::digest::SHA512);
        while let Some(chunk) = resp
            .chunk()
            .await
            .map_err(|e| err(super::client::root_cause(&e.without_url())))?
        {
            sha.update(&chunk);
        }
        let mut p = vec![
            ("checksum".to_owned(), hex::encode(sha.finish())),
            ("checksum-algorithm".to_owned(), "sha512".to_owned()),
        ];
        if self.is_https() {
            p.push(("verify-certificates".to_owned(), "0".to_owned()));
        }
        Ok(p)
    }

    /// Whether the factory is reached over https (PVE can verify its certificate).
    pub fn is_https(&self) -> bool {
        self.url.starts_with("https://")
    }

    /// What failed, said once; for a refused certificate, the fingerprint it
    /// presents and how to trust it.
    async fn failure(&self, e: &reqwest::Error) -> String {
        let cause = super::client::root_cause(e);
        if !crate::tls::is_certificate_error(e) {
            return cause;
        }
        let addr = self.origin.split_once("://").map_or("", |(_, a)| a);
        match crate::tls::presented_fingerprint(addr).await {
            Some(fp) => format!(
                "its certificate is not trusted ({cause}); it presents SHA-256 fingerprint {fp}: check it on the factory's host, then pin it with --factory-fingerprint or TALOS_PVE_IMAGE_FACTORY_FINGERPRINT"
            ),
            None => cause,
        }
    }

    /// `POST /schematics`; the factory answers with the content-hash id.
    pub async fn register(&self, yaml: &str) -> Result<String, PveError> {
        let url = format!("{}/schematics", self.url);
        let err = |detail: String| PveError::Factory {
            url: url.clone(),
            detail,
        };
        let resp = match self
            .http
            .post(format!("{}/schematics", self.origin))
            .header(reqwest::header::CONTENT_TYPE, "application/yaml")
            .body(yaml.to_owned())
            .send()
            .await
        {
            Ok(r) => r,
            Err(e) => return Err(err(self.failure(&e).await)),
        };
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
