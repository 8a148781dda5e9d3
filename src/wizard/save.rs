//! Writing the wizard's result: the profile (atomically, never over an existing file
//! without a yes) and, when asked for, the token secret in its own 0600 file.

use std::path::{Path, PathBuf};

use secrecy::ExposeSecret;
use thiserror::Error;

use super::flow::Outcome;
use super::prompter::{PromptError, Prompter};
use crate::files;
use crate::profile::Profile;

#[derive(Debug, Error)]
pub enum SaveError {
    #[error(transparent)]
    Prompt(#[from] PromptError),
    #[error("cannot serialize the profile: {0}")]
    Serialize(String),
    #[error("cannot write {path}: {source}\n  fix: choose a writable location with --out FILE")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// The profile as YAML with a header saying how it was made and how to reuse it.
pub fn render(profile: &Profile) -> Result<String, SaveError> {
    let body = serde_saphyr::to_string(profile).map_err(|e| SaveError::Serialize(e.to_string()))?;
    Ok(format!(
        "# talos-pve cluster profile written by `talos-pve init`.\n\
         # Re-run unattended: talos-pve up --profile <this file>\n\
         # The Proxmox token secret is not in here: it comes from PROXMOX_VE_API_TOKEN or proxmox.tokenFile.\n\
         {body}"
    ))
}

/// Save `outcome` to `path`. Returns false when the person declined to overwrite.
pub fn save(p: &mut dyn Prompter, path: &Path, outcome: &Outcome) -> Result<bool, SaveError> {
    if !may_replace(p, path)? {
        return Ok(false);
    }
    write_outcome(p, path, outcome)?;
    Ok(true)
}

/// Whether `path` may be written: it does not exist, or the person said yes. Asked
/// before the questions too, so a "no" never throws answers away.
pub fn may_replace(p: &mut dyn Prompter, path: &Path) -> Result<bool, PromptError> {
    Ok(!path.exists() || p.confirm(&format!("{} exists. Overwrite it?", path.display()), false)?)
}

/// Write the profile (and the token file) once overwriting was agreed to.
pub fn write_outcome(
    p: &mut dyn Prompter,
    path: &Path,
    outcome: &Outcome,
) -> Result<(), SaveError> {
    let write = |path: &Path, bytes: &[u8], mode| {
        files::write_atomic(path, bytes, mode).map_err(|source| SaveError::Write {
            path: path.to_owned(),
            source,
        })
    };
    let text = render(&outcome.profile)?;
    if let Some(t) = &outcome.token_file
        && (!t.path.exists()
            || p.confirm(
                &format!("{} exists. Replace the token in it?", t.path.display()),
                false,
            )?)
    {
        write(
            &t.path,
            t.secret.expose_secret().as_bytes(),
            files::SECRET_MODE,
        )?;
        p.note(&format!(
            "Token secret saved to {} (mode 0600)",
            t.path.display()
        ));
    }
    write(path, text.as_bytes(), files::PUBLIC_MODE)?;
    p.note(&format!(
        "Profile saved to {}. Next: talos-pve up --profile {}",
        path.display(),
        path.display()
    ));
    Ok(())
}
