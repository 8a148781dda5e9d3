//! The Talos secrets bundle (`secrets.yaml`, the `talosctl gen secrets` format):
//! generating, parsing, validating and writing it back byte-for-byte.
//!
//! `crt`/`key` fields hold standard base64 of the whole PEM text. Parsing keeps the
//! encoded strings as read, so a bundle written by talosctl serialises back to the
//! same bytes (keys stay in the upstream PEM labels).

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use rsa::pkcs1::EncodeRsaPrivateKey;
use serde::Deserialize;
use time::OffsetDateTime;
use zeroize::Zeroizing;

use super::cert::{self, CertInfo};
use super::pem::{KeyAlg, PrivateKey, rsa_pkcs1_to_private_key};
use super::{PkiError, Sensitive, redact, rng};
use crate::talos::config::yaml::Yaml;

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecretsBundle {
    pub cluster: ClusterSecrets,
    pub secrets: Secrets,
    pub trustdinfo: TrustdInfo,
    pub certs: Certs,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterSecrets {
    pub id: Sensitive,
    pub secret: Sensitive,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Secrets {
    pub bootstraptoken: Sensitive,
    #[serde(default)]
    pub aescbcencryptionsecret: Option<Sensitive>,
    #[serde(default)]
    pub secretboxencryptionsecret: Option<Sensitive>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrustdInfo {
    pub token: Sensitive,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Certs {
    pub etcd: CertPair,
    pub k8s: CertPair,
    pub k8saggregator: CertPair,
    pub k8sserviceaccount: KeyOnly,
    pub os: CertPair,
}

/// `{crt, key}`, both base64 of PEM text.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CertPair {
    pub crt: String,
    pub key: Sensitive,
}

/// `{key}` (the service-account key has no certificate).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyOnly {
    pub key: Sensitive,
}

fn b64_pem(pem: &str) -> String {
    STANDARD.encode(pem.as_bytes())
}

impl CertPair {
    fn from_issued(c: &cert::CertAndKey) -> Self {
        Self {
            crt: b64_pem(&c.cert_pem),
            key: Sensitive::new(b64_pem(&c.key.to_talos_pem())),
        }
    }

    /// The certificate PEM text.
    pub fn cert_pem(&self, field: &str) -> Result<String, PkiError> {
        decode_text(&self.crt, &format!("{field}.crt")).map(|z| z.to_string())
    }

    /// The private key PEM text (zeroized on drop).
    pub fn key_pem(&self, field: &str) -> Result<Zeroizing<String>, PkiError> {
        decode_text(self.key.expose(), &format!("{field}.key"))
    }

    pub fn private_key(&self, field: &str) -> Result<PrivateKey, PkiError> {
        PrivateKey::from_pem(&self.key_pem(field)?, &format!("{field}.key"))
    }

    fn to_yaml(&self, with_key: bool) -> Yaml {
        Yaml::map()
            .with("crt", &self.crt)
            .with("key", if with_key { self.key.expose() } else { "" })
    }
}

fn decode_text(b64: &str, field: &str) -> Result<Zeroizing<String>, PkiError> {
    let invalid = |reason: &str| PkiError::Invalid {
        field: field.to_owned(),
        reason: reason.to_owned(),
        fix: "restore secrets.yaml from a backup; the value must be base64 of PEM text".into(),
    };
    let bytes = Zeroizing::new(STANDARD.decode(b64).map_err(|_| invalid("is not base64"))?);
    let text = std::str::from_utf8(&bytes).map_err(|_| invalid("is not PEM text"))?;
    Ok(Zeroizing::new(text.to_owned()))
}

/// Service-account key size for contracts ≥ 1.7 (`UseRSAServiceAccountKey`).
pub const SERVICE_ACCOUNT_RSA_BITS: usize = 4096;

impl SecretsBundle {
    /// A new bundle as `talosctl gen secrets` makes it for contracts ≥ 1.7.
    pub fn generate(now: OffsetDateTime) -> Result<Self, PkiError> {
        // One timestamp for every CA, whole seconds (X.509 has no sub-second time).
        let now = now.replace_nanosecond(0).unwrap_or(now);
        let etcd = cert::new_ca(KeyAlg::EcdsaP256, Some("etcd"), now)?;
        let k8s = cert::new_ca(KeyAlg::EcdsaP256, Some("kubernetes"), now)?;
        let aggregator = cert::new_ca(KeyAlg::EcdsaP256, None, now)?;
        let os = cert::new_ca(KeyAlg::Ed25519, Some("talos"), now)?;
        let sa = rsa_key(SERVICE_ACCOUNT_RSA_BITS)?;
        Ok(Self {
            cluster: ClusterSecrets {
                id: Sensitive::new(rng::b64_secret(true)?),
                secret: Sensitive::new(rng::b64_secret(false)?),
            },
            secrets: Secrets {
                bootstraptoken: Sensitive::new(rng::token()?),
                aescbcencryptionsecret: None,
                secretboxencryptionsecret: Some(Sensitive::new(rng::b64_secret(false)?)),
            },
            trustdinfo: TrustdInfo {
                token: Sensitive::new(rng::token()?),
            },
            certs: Certs {
                etcd: CertPair::from_issued(&etcd),
                k8s: CertPair::from_issued(&k8s),
                k8saggregator: CertPair::from_issued(&aggregator),
                k8sserviceaccount: KeyOnly {
                    key: Sensitive::new(b64_pem(&sa.to_talos_pem())),
                },
                os: CertPair::from_issued(&os),
            },
        })
    }

    /// A fresh `cluster.id` value, as `generate` makes one.
    pub fn new_cluster_id() -> Result<String, PkiError> {
        rng::b64_secret(true)
    }

    /// `generate`, keeping `cluster_id`: the cluster's identity outlives its keys.
    pub fn generate_with_id(now: OffsetDateTime, cluster_id: String) -> Result<Self, PkiError> {
        let mut b = Self::generate(now)?;
        b.cluster.id = Sensitive::new(cluster_id);
        Ok(b)
    }

    /// Parse `secrets.yaml` text. Errors never quote key material.
    pub fn parse(text: &str) -> Result<Self, PkiError> {
        serde_saphyr::from_str::<SecretsBundle>(text).map_err(|e| {
            let msg = redact(&e.without_snippet().to_string());
            let at = match e.location() {
                Some(l) if !msg.contains("line") => {
                    format!(" at line {} column {}", l.line(), l.column())
                }
                _ => String::new(),
            };
            PkiError::Parse {
                reason: format!("{msg}{at}"),
            }
        })
    }

    /// The file text, in the layout talosctl writes (4-space indent, struct order).
    pub fn to_yaml(&self) -> Zeroizing<String> {
        let s = &self.secrets;
        let c = &self.certs;
        let doc = Yaml::map()
            .with(
                "cluster",
                Yaml::map()
                    .with("id", self.cluster.id.expose())
                    .with("secret", self.cluster.secret.expose()),
            )
            .with(
                "secrets",
                Yaml::map()
                    .with("bootstraptoken", s.bootstraptoken.expose())
                    .with_opt(
                        "aescbcencryptionsecret",
                        s.aescbcencryptionsecret.as_ref().map(Sensitive::expose),
                    )
                    .with_opt(
                        "secretboxencryptionsecret",
                        s.secretboxencryptionsecret.as_ref().map(Sensitive::expose),
                    ),
            )
            .with(
                "trustdinfo",
                Yaml::map().with("token", self.trustdinfo.token.expose()),
            )
            .with(
                "certs",
                Yaml::map()
                    .with("etcd", c.etcd.to_yaml(true))
                    .with("k8s", c.k8s.to_yaml(true))
                    .with("k8saggregator", c.k8saggregator.to_yaml(true))
                    .with(
                        "k8sserviceaccount",
                        Yaml::map().with("key", c.k8sserviceaccount.key.expose()),
                    )
                    .with("os", c.os.to_yaml(true)),
            );
        Zeroizing::new(doc.to_document())
    }

    /// Check what Talos would trip over later: token shapes, exactly one encryption
    /// secret, every CA a CA with its own key, nothing expired.
    pub fn validate(&self, now: OffsetDateTime) -> Result<(), PkiError> {
        let invalid = |field: &str, reason: String, fix: &str| PkiError::Invalid {
            field: field.into(),
            reason,
            fix: fix.into(),
        };
        let token_fix =
            "tokens look like `abcdef.0123456789abcdef`; restore the file from a backup";
        if !rng::is_token(self.secrets.bootstraptoken.expose()) {
            return Err(invalid(
                "secrets.bootstraptoken",
                "is not a `[0-9a-z]{6}.[0-9a-z]{16}` token".into(),
                token_fix,
            ));
        }
        if !rng::is_token(self.trustdinfo.token.expose()) {
            return Err(invalid(
                "trustdinfo.token",
                "is not a `[0-9a-z]{6}.[0-9a-z]{16}` token".into(),
                token_fix,
            ));
        }
        let set = |o: &Option<Sensitive>| o.as_ref().is_some_and(|s| !s.is_empty());
        if set(&self.secrets.aescbcencryptionsecret) == set(&self.secrets.secretboxencryptionsecret)
        {
            return Err(invalid(
                "secrets.secretboxencryptionsecret",
                "exactly one of secretboxencryptionsecret and aescbcencryptionsecret must be set"
                    .into(),
                "restore the file from a backup",
            ));
        }
        if self.cluster.id.is_empty() || self.cluster.secret.is_empty() {
            return Err(invalid(
                "cluster",
                "id and secret must not be empty".into(),
                "restore the file from a backup",
            ));
        }
        for (field, pair) in self.cas() {
            let info = self.ca_info(field, pair)?;
            if !info.is_ca {
                return Err(invalid(
                    &format!("{field}.crt"),
                    "is not a CA certificate".into(),
                    "this is not a Talos bundle; regenerate with --force-new-secrets",
                ));
            }
            if !cert::key_matches(&info, &pair.private_key(field)?) {
                return Err(invalid(
                    &format!("{field}.key"),
                    "does not belong to the certificate in the same entry".into(),
                    "restore the file from a backup",
                ));
            }
            if info.not_after <= now {
                return Err(invalid(
                    &format!("{field}.crt"),
                    format!("expired on {}", info.not_after.date()),
                    "rotate the CA (talosctl rotate-ca) or create a new cluster with --force-new-secrets",
                ));
            }
        }
        let sa = decode_text(
            self.certs.k8sserviceaccount.key.expose(),
            "certs.k8sserviceaccount.key",
        )?;
        let sa = PrivateKey::from_pem(&sa, "certs.k8sserviceaccount.key")?;
        sa.key_pair()?;
        Ok(())
    }

    fn cas(&self) -> [(&'static str, &CertPair); 4] {
        [
            ("certs.etcd", &self.certs.etcd),
            ("certs.k8s", &self.certs.k8s),
            ("certs.k8saggregator", &self.certs.k8saggregator),
            ("certs.os", &self.certs.os),
        ]
    }

    fn ca_info(&self, field: &str, pair: &CertPair) -> Result<CertInfo, PkiError> {
        cert::inspect(&pair.cert_pem(field)?, &format!("{field}.crt"))
    }

    /// The Talos API (OS) CA: certificate PEM and key.
    pub fn os_ca(&self) -> Result<(String, PrivateKey), PkiError> {
        let f = "certs.os";
        Ok((self.certs.os.cert_pem(f)?, self.certs.os.private_key(f)?))
    }

    /// The Kubernetes CA: certificate PEM and key.
    pub fn k8s_ca(&self) -> Result<(String, PrivateKey), PkiError> {
        let f = "certs.k8s";
        Ok((self.certs.k8s.cert_pem(f)?, self.certs.k8s.private_key(f)?))
    }

    /// `{crt, key}` of a CA for a machine config; `key: ""` for workers.
    pub fn ca_yaml(pair: &CertPair, with_key: bool) -> Yaml {
        pair.to_yaml(with_key)
    }
}

/// An RSA key as the bundle stores it (PKCS#1 under `RSA PRIVATE KEY`).
pub fn rsa_key(bits: usize) -> Result<PrivateKey, PkiError> {
    let key = super::prime::rsa_private_key(bits)?;
    let der = key
        .to_pkcs1_der()
        .map_err(|e| PkiError::Issue(format!("RSA key encoding: {e}")))?;
    Ok(rsa_pkcs1_to_private_key(der.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Option<String> {
        crate::test_support::reference("data/talos/secrets.sample.yaml")
    }

    #[test]
    fn talosctl_sample_loads_validates_and_round_trips() {
        let Some(text) = sample() else { return };
        let b = SecretsBundle::parse(&text).unwrap();
        b.validate(OffsetDateTime::now_utc()).unwrap();
        assert_eq!(b.to_yaml().as_str(), text, "byte-stable round trip");
        // The older contract's EC service-account key loads.
        let sa = decode_text(b.certs.k8sserviceaccount.key.expose(), "sa").unwrap();
        assert!(sa.starts_with(&crate::pki::pem::tests::begin("EC PRIVATE KEY")));
        let debug = format!("{b:?}");
        for secret in [
            b.certs.os.key.expose(),
            b.certs.k8sserviceaccount.key.expose(),
            b.secrets.bootstraptoken.expose(),
            b.cluster.secret.expose(),
        ] {
            assert!(!debug.contains(secret), "Debug must not leak secrets");
        }
    }

    #[test]
    fn tampered_bundles_are_rejected_with_the_field() {
        let Some(text) = sample() else { return };
        let good = SecretsBundle::parse(&text).unwrap();
        let mut swapped = good.clone();
        swapped.certs.k8s.key = good.certs.etcd.key.clone();
        let e = swapped
            .validate(OffsetDateTime::now_utc())
            .unwrap_err()
            .to_string();
        assert!(e.contains("certs.k8s.key"), "{e}");
        assert!(!e.contains("LS0t"));
        let late = OffsetDateTime::now_utc() + time::Duration::days(365 * 12);
        let e = good.validate(late).unwrap_err().to_string();
        assert!(e.contains("expired"), "{e}");
        let e = SecretsBundle::parse(&text.replace("trustdinfo:", "trustd:"))
            .unwrap_err()
            .to_string();
        assert!(!e.contains("LS0t"), "{e}");
    }
}
