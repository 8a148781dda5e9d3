//! Where the client's settings come from: flags, then `PROXMOX_VE_*` environment
//! (the Terraform provider's names), then the profile. Environment access goes
//! through a closure so tests do not touch the process environment.

use std::path::Path;

use secrecy::SecretString;

use super::client::{ClientConfig, Credentials, Trust};
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
    pub insecure: bool,
}

/// The client configuration for `profile`. `profile_dir` anchors a relative `tokenFile`.
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
    let fingerprint = o
        .fingerprint
        .clone()
        .or_else(|| env(ENV_FINGERPRINT).filter(|f| !f.is_empty()))
        .or_else(|| px.fingerprint.clone());
    let insecure = o.insecure || env_insecure(env);
    let trust = match (fingerprint, insecure) {
        (Some(f), _) => {
            Trust::Fingerprint(parse_fingerprint(&f).ok_or(PveError::BadFingerprint(f))?)
        }
        (None, true) => Trust::Insecure,
        (None, false) => Trust::Verify,
    };
    Ok(ClientConfig::new(&endpoint, credentials, trust))
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
        let path = match profile_dir {
            Some(d) if Path::new(file).is_relative() => d.join(file),
            _ => Path::new(file).to_owned(),
        };
        let text = std::fs::read_to_string(&path).map_err(|source| PveError::TokenFile {
            path: path.display().to_string(),
            source,
        })?;
        warn_if_readable_by_others(&path);
        let text = text.trim();
        let origin = format!("token file {}", path.display());
        return if text.contains('=') {
            Credentials::parse_token(text, &origin)
        } else if text.is_empty() {
            Err(PveError::BadToken { origin })
        } else {
            Ok(Credentials::Token {
                id: profile.proxmox.token_id.clone(),
                secret: SecretString::from(text.to_owned()),
            })
        };
    }
    match (env(ENV_USERNAME), env(ENV_PASSWORD)) {
        (Some(user), Some(pw)) if !user.is_empty() => Ok(Credentials::Password {
            user,
            password: SecretString::from(pw),
        }),
        _ => Err(PveError::NoCredentials),
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
            insecure: false,
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
