//! Key material: the Talos secrets bundle, CAs, leaf certificates, PEM label handling.
//!
//! Everything secret lives in types whose `Debug` prints `<redacted>` and whose memory
//! is zeroized on drop; errors name the field, never its value.
//!
//! It must not log key material, and uses ring only (no OpenSSL, no aws-lc).

mod bundle;
pub mod cert;
pub mod pem;
mod prime;
mod rng;

use thiserror::Error;
use zeroize::Zeroizing;

pub use bundle::rsa_key;
pub use bundle::{CertPair, KeyOnly, SecretsBundle};
pub use cert::{CertAndKey, CertInfo};
pub use pem::{KeyAlg, PrivateKey};
pub use rng::OsRandom;

#[derive(Debug, Error)]
pub enum PkiError {
    #[error("{what}: {reason}")]
    Pem { what: String, reason: String },
    #[error("the operating system's random number generator failed")]
    Random,
    #[error("issuing a certificate failed: {0}")]
    Issue(String),
    #[error(
        "the secrets bundle is not valid YAML in the `talosctl gen secrets` format ({reason})\n  fix: restore the file from a backup, or use a bundle written by `talosctl gen secrets` or `talos-pve gen`"
    )]
    Parse { reason: String },
    #[error("secrets bundle field `{field}`: {reason}\n  fix: {fix}")]
    Invalid {
        field: String,
        reason: String,
        fix: String,
    },
}

/// A secret string (token, base64 key text): redacted `Debug`, zeroized on drop.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct Sensitive(Zeroizing<String>);

impl Sensitive {
    pub fn new(s: String) -> Self {
        Self(Zeroizing::new(s))
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl std::fmt::Debug for Sensitive {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

impl<'de> serde::Deserialize<'de> for Sensitive {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d).map(Sensitive::new)
    }
}

/// Replace long base64-looking runs in a message (parser errors may quote input).
pub fn redact(msg: &str) -> String {
    let mut out = String::with_capacity(msg.len());
    let mut run = String::new();
    let flush = |run: &mut String, out: &mut String| {
        if run.len() >= 16 {
            out.push_str("<redacted>");
        } else {
            out.push_str(run);
        }
        run.clear();
    };
    for c in msg.chars() {
        if c.is_ascii_alphanumeric() || "+/=-_".contains(c) {
            run.push(c);
        } else {
            flush(&mut run, &mut out);
            out.push(c);
        }
    }
    flush(&mut run, &mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sensitive_never_prints() {
        let s = Sensitive::new("inn7ol.u4ehnti8qyls9ymo".into());
        assert_eq!(format!("{s:?}"), "<redacted>");
    }

    #[test]
    fn redact_hides_long_tokens_only() {
        assert_eq!(
            redact("invalid type: string \"LS0tLS1CRUdJTiBFQyBQUklW\", expected map at line 3"),
            "invalid type: string \"<redacted>\", expected map at line 3"
        );
    }
}
