//! Where the client's settings come from: flags, then `PROXMOX_VE_*` environment
//! (the Terraform provider's names), then the profile. Environment access goes
//! through a closure so tests do not touch the process environment.

use std::path::{Path, PathBuf};

use secrecy::SecretString;

use super::client::{ClientConfig, Credentials, HostApi, Trust};
use super::error::PveError;
use super::factory::FACTORY_ENV;
use crate::profile::Profile;
use crate::tls::parse_fingerprint;

pub const ENV_ENDPOINT: &str = "PROXMOX_VE_ENDPOINT";
pub const ENV_TOKEN: &str = "PROXMOX_VE_API_TOKEN";
pub const ENV_USERNAME: &str = "PROXMOX_VE_USERNAME";
pub const ENV_PASSWORD: &str = "PROXMOX_VE_PASSWORD";
pub const ENV_FINGERPRINT: &str = "PROXMOX_VE_FINGERPRINT";
pub const ENV_INSECURE: &str = "PROXMOX_VE_INSECURE";

/// Command-line choices that beat environment and profile.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    pub fingerprint: Option<String>,
    /// `--pve-ca FILE`: the cluster CA (`pve-root-ca.pem`).
    pub ca_file: Option<PathBuf>,
    pub insecure: bool,
}

/// The client configuration for `profile`. `profile_dir` anchors relative
/// `tokenFile` and `caFile` paths.
///
/// Trust, first match wins: `--fingerprint`, `--pve-ca`, `PROXMOX_VE_FINGERPRINT`,
/// the profile's `fingerprint`, its `caFile`, `--insecure`/`PROXMOX_VE_INSECURE`,
/// else the system's CAs. Standalone hosts (every host has an `endpoint`) each
/// get their own trust and token where the host names one, else the profile's.
pub fn client_config(
    profile: &Profile,
    profile_dir: Option<&Path>,
    o: &Overrides,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<ClientConfig, PveError> {
    let px = &profile.proxmox;
    let endpoint = env(ENV_ENDPOINT)
        .filter(|e| !e.is_empty())
        .unwrap_or_else(|| px.endpoint.clone());
    let credentials = credentials(profile, profile_dir, env)?;
    let insecure = o.insecure || env_insecure(env);
    let flag_trust =
        trust_from(o.fingerprint.as_deref(), None, profile_dir, false)?.or(match &o.ca_file {
            Some(f) => Some(Trust::Ca(read_ca(f)?)),
            None => None,
        });
    let env_fp = env(ENV_FINGERPRINT).filter(|f| !f.is_empty());
    let common = match flag_trust {
        Some(t) => t,
        None => trust_from(
            env_fp.as_deref().or(px.fingerprint.as_deref()),
            px.ca_file.as_deref(),
            profile_dir,
            insecure,
        )?
        .unwrap_or(Trust::Verify),
    };
    let mut standalone = Vec::new();
    for h in &px.hosts {
        let Some(ep) = &h.endpoint else { continue };
        let trust = match (&o.fingerprint, &o.ca_file) {
            (None, None) => trust_from(
                h.fingerprint.as_deref(),
                h.ca_file.as_deref(),
                profile_dir,
                false,
            )?
            .unwrap_or_else(|| common.clone()),
            _ => common.clone(),
        };
        let credentials = match &h.token_file {
            Some(f) => token_file(f, &px.token_id, profile_dir)?,
            None => credentials.clone(),
        };
        standalone.push(HostApi {
            node: h.name.clone(),
            endpoint: ep.clone(),
            credentials,
            trust,
        });
    }
    let mut cfg = match standalone.first() {
        Some(first) => ClientConfig::new(
            &first.endpoint,
            first.credentials.clone(),
            first.trust.clone(),
        ),
        None => ClientConfig::new(&endpoint, credentials, common),
    };
    cfg.fallback_endpoints = if standalone.is_empty() {
        px.fallback_endpoints.clone()
    } else {
        Vec::new()
    };
    cfg.standalone = standalone;
    Ok(cfg)
}

/// A fingerprint pin beats a CA file; `insecure` only when neither is given.
fn trust_from(
    fingerprint: Option<&str>,
    ca_file: Option<&str>,
    profile_dir: Option<&Path>,
    insecure: bool,
) -> Result<Option<Trust>, PveError> {
    Ok(match (fingerprint, ca_file) {
        (Some(f), _) => Some(Trust::Fingerprint(
            parse_fingerprint(f).ok_or_else(|| PveError::BadFingerprint(f.to_owned()))?,
        )),
        (None, Some(ca)) => Some(Trust::Ca(read_ca(&anchored(ca, profile_dir))?)),
        (None, None) if insecure => Some(Trust::Insecure),
        (None, None) => None,
    })
}

fn anchored(file: &str, profile_dir: Option<&Path>) -> PathBuf {
    match profile_dir {
        Some(d) if Path::new(file).is_relative() => d.join(file),
        _ => Path::new(file).to_owned(),
    }
}

/// A CA file, checked to hold at least one usable certificate.
fn read_ca(path: &Path) -> Result<String, PveError> {
    let bad = |detail: String| PveError::CaFile {
        path: path.display().to_string(),
        detail,
    };
    let pem = std::fs::read_to_string(path).map_err(|e| bad(e.to_string()))?;
    crate::tls::roots_from_pem(&pem).map_err(bad)?;
    Ok(pem)
}

/// `PROXMOX_VE_INSECURE` is set to a yes.
pub fn env_insecure(env: &dyn Fn(&str) -> Option<String>) -> bool {
    env(ENV_INSECURE).is_some_and(|v| matches!(v.to_lowercase().as_str(), "1" | "true" | "yes"))
}

fn credentials(
    profile: &Profile,
    profile_dir: Option<&Path>,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Credentials, PveError> {
    if let Some(t) = env(ENV_TOKEN).filter(|t| !t.is_empty()) {
        return Credentials::parse_token(&t, ENV_TOKEN);
    }
    if let Some(file) = &profile.proxmox.token_file {
        return token_file(file, &profile.proxmox.token_id, profile_dir);
    }
    match (env(ENV_USERNAME), env(ENV_PASSWORD)) {
        (Some(user), Some(pw)) if !user.is_empty() => Ok(Credentials::Password {
            user,
            password: SecretString::from(pw),
        }),
        _ => Err(PveError::NoCredentials),
    }
}

/// A token file: `USER@REALM!TOKENID=SECRET`, or the bare secret of `token_id`.
fn token_file(
    file: &str,
    token_id: &str,
    profile_dir: Option<&Path>,
) -> Result<Credentials, PveError> {
    let path = anchored(file, profile_dir);
    let text = std::fs::read_to_string(&path).map_err(|source| PveError::TokenFile {
        path: path.display().to_string(),
        source,
    })?;
    warn_if_readable_by_others(&path);
    let text = text.trim();
    let origin = format!("token file {}", path.display());
    if text.contains('=') {
        Credentials::parse_token(text, &origin)
    } else if text.is_empty() {
        Err(PveError::BadToken { origin })
    } else {
        Ok(Credentials::Token {
            id: token_id.to_owned(),
            secret: SecretString::from(text.to_owned()),
        })
    }
}

/// A token file should be private (0600) like every other secret talos-pve keeps.
fn warn_if_readable_by_others(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    if let Ok(m) = std::fs::metadata(path)
        && m.permissions().mode() & 0o077 != 0
    {
        tracing::warn!(
            path = %path.display(),
            "the Proxmox token file is readable by other users; run `chmod 600` on it"
        );
    }
}

/// Pins a self-hosted Image Factory's certificate (`provision --factory-fingerprint`).
pub const ENV_FACTORY_FINGERPRINT: &str = "TALOS_PVE_IMAGE_FACTORY_FINGERPRINT";

/// Whom to trust for the Image Factory: its pinned certificate, else the system's CAs.
pub fn factory_trust(env: &dyn Fn(&str) -> Option<String>) -> Result<Trust, PveError> {
    match env(ENV_FACTORY_FINGERPRINT).filter(|f| !f.is_empty()) {
        Some(f) => Ok(Trust::Fingerprint(
            parse_fingerprint(&f).ok_or(PveError::BadFingerprint(f))?,
        )),
        None => Ok(Trust::Verify),
    }
}

/// The Image Factory base URL: `TALOS_PVE_IMAGE_FACTORY` or `talos.imageFactory`.
pub fn factory_url(profile: &Profile, env: &dyn Fn(&str) -> Option<String>) -> String {
    env(FACTORY_ENV)
        .filter(|f| !f.is_empty())
        .unwrap_or_else(|| profile.talos.image_factory.clone())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::homelab;

    #[test]
    fn env_beats_profile_and_flags_beat_env() {
        let p = homelab();
        let fp = crate::tls::fingerprint(b"x");
        let env = |k: &str| match k {
            ENV_TOKEN => Some("root@pam!ci=s3cr3t".to_owned()),
            ENV_ENDPOINT => Some("https://127.0.0.1:8006".to_owned()),
            ENV_INSECURE => Some("true".to_owned()),
            _ => None,
        };
        let c = client_config(&p, None, &Overrides::default(), &env).unwrap();
        assert_eq!(c.endpoint, "https://127.0.0.1:8006");
        assert_eq!(c.trust, Trust::Insecure);
        assert_eq!(c.credentials.principal(), "root@pam!ci");
        assert!(!format!("{c:?}").contains("s3cr3t"));
        let o = Overrides {
            fingerprint: Some(fp.replace(':', "")),
            ..Default::default()
        };
        let c = client_config(&p, None, &o, &env).unwrap();
        assert_eq!(c.trust, Trust::Fingerprint(fp));
        let none = |_: &str| None;
        assert!(matches!(
            client_config(&p, None, &Overrides::default(), &none),
            Err(PveError::NoCredentials)
        ));
    }

    #[test]
    fn trust_by_ca_file_and_standalone_hosts_with_their_own_token_and_trust() {
        let dir = tempfile::tempdir().unwrap();
        let ca = rcgen::generate_simple_self_signed(vec!["pve".to_owned()]).unwrap();
        std::fs::write(dir.path().join("pve-root-ca.pem"), ca.cert.pem()).unwrap();
        std::fs::write(dir.path().join("not-a-ca.pem"), "hello").unwrap();
        std::fs::write(dir.path().join("pve2.token"), "root@pam!two=s2\n").unwrap();
        let env = |k: &str| (k == ENV_TOKEN).then(|| "root@pam!one=s1".to_owned());
        let mut p = homelab();
        p.proxmox.ca_file = Some("pve-root-ca.pem".into());
        p.proxmox.fallback_endpoints = vec!["https://10.8.16.11:8006".into()];
        let c = client_config(&p, Some(dir.path()), &Overrides::default(), &env).unwrap();
        assert_eq!(c.trust, Trust::Ca(ca.cert.pem()));
        assert_eq!(c.fallback_endpoints, ["https://10.8.16.11:8006"]);
        assert!(c.standalone.is_empty());
        // --pve-ca beats the profile's fingerprint; a file without a certificate is refused.
        p.proxmox.ca_file = None;
        p.proxmox.fingerprint = Some(crate::tls::fingerprint(b"x"));
        let o = Overrides {
            ca_file: Some(dir.path().join("not-a-ca.pem")),
            ..Default::default()
        };
        let e = client_config(&p, Some(dir.path()), &o, &env).unwrap_err();
        assert!(matches!(e, PveError::CaFile { .. }), "{e}");
        assert!(e.to_string().contains("\n  fix: "), "{e}");
        // Standalone hosts: each its endpoint; a host's own token and CA win.
        for (i, h) in p.proxmox.hosts.iter_mut().enumerate() {
            h.endpoint = Some(format!("https://10.8.16.{}:8006", 10 + i));
        }
        p.proxmox.hosts[1].token_file = Some("pve2.token".into());
        p.proxmox.hosts[1].ca_file = Some("pve-root-ca.pem".into());
        let c = client_config(&p, Some(dir.path()), &Overrides::default(), &env).unwrap();
        assert_eq!(c.standalone.len(), 3);
        assert_eq!(c.endpoint, "https://10.8.16.10:8006");
        assert_eq!(c.standalone[0].credentials.principal(), "root@pam!one");
        assert!(matches!(c.standalone[0].trust, Trust::Fingerprint(_)));
        assert_eq!(c.standalone[1].credentials.principal(), "root@pam!two");
        assert_eq!(c.standalone[1].trust, Trust::Ca(ca.cert.pem()));
        assert!(c.fallback_endpoints.is_empty());
    }

    #[test]
    fn a_self_hosted_factory_may_be_pinned_from_the_environment() {
        assert_eq!(factory_trust(&|_| None).unwrap(), Trust::Verify);
        let fp = crate::tls::fingerprint(b"factory");
        let raw = fp.replace(':', "").to_lowercase();
        let env = |k: &str| (k == ENV_FACTORY_FINGERPRINT).then(|| raw.clone());
        assert_eq!(factory_trust(&env).unwrap(), Trust::Fingerprint(fp));
        let bad = |k: &str| (k == ENV_FACTORY_FINGERPRINT).then(|| "AA".to_owned());
        assert!(matches!(
            factory_trust(&bad),
            Err(PveError::BadFingerprint(_))
        ));
    }

    #[test]
    fn token_file_may_hold_the_bare_secret() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("tok"), "abc-123\n").unwrap();
        let mut p = homelab();
        p.proxmox.token_file = Some("tok".into());
        let c = client_config(&p, Some(dir.path()), &Overrides::default(), &|_| None).unwrap();
        assert_eq!(c.credentials.principal(), "root@pam!talos-pve");
        assert_eq!(c.trust, Trust::Verify);
    }
}
