//! The Image Factory client: registers the schematic so the factory serves the
//! ISO talos-pve asks Proxmox to download. Resolved through the `AddressBook`
//! like every other client (the lab serves a fake factory on loopback).

use std::time::Duration;

use serde_json::Value;

use super::client::{Trust, http_client, resolve_origin};
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
    pub fn new(url: &str, trust: &Trust, book: &AddressBook) -> Result<Factory, PveError> {
        Ok(Factory {
            http: http_client(trust, Duration::from_secs(60))?,
            origin: resolve_origin(url, book, 443)?,
            url: url.trim_end_matches('/').into(),
        })
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
            .map_err(|e| err(chain(&e.without_url())))?;
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

/// An error with its causes (reqwest's top-level message alone says little).
fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}
