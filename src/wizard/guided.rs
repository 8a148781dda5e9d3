//! The interactive entry point shared by `init` and by `up` without a profile:
//! refuse without a terminal, run the flow on the real terminal, save the result.

use std::path::{Path, PathBuf};

use thiserror::Error;

use super::discovery::Connect;
use super::flow::{self, Check, Options, WizardError};
use super::prompter::{DialoguerPrompter, PromptError};
use super::save::{self, SaveError};
use crate::profile::Profile;

#[derive(Debug, Error)]
pub enum GuidedError {
    #[error(transparent)]
    Prompt(#[from] PromptError),
    #[error(transparent)]
    Wizard(#[from] WizardError),
    #[error(transparent)]
    Save(#[from] SaveError),
}

/// Ask on the terminal and save to `out`. `None` when the person kept an existing file.
pub fn guided(
    out: &Path,
    connect: &dyn Connect,
    check: Check<'_>,
) -> Result<Option<Profile>, GuidedError> {
    // Checked before anything else: without a terminal no prompt can work.
    let mut prompter = DialoguerPrompter::new()?;
    // Asked first: a "no" after all the questions would throw the answers away.
    if !save::may_replace(&mut prompter, out)? {
        return Ok(None);
    }
    let token_dir = std::path::absolute(out)
        .ok()
        .and_then(|p| p.parent().map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from("."));
    let outcome = flow::run(
        &mut prompter,
        connect,
        Options {
            draft: super::seed::seed_draft(),
            token_dir,
            check,
        },
    )?;
    save::write_outcome(&mut prompter, out, &outcome)?;
    Ok(Some(outcome.profile))
}
