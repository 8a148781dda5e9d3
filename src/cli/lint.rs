//! `talos-pve lint`: check a profile's network plan. Exit 0 when there are no
//! errors (warnings allowed), 1 when there are, 2 when the profile cannot be read.

use std::process::ExitCode;

use super::args::{Global, Output, ProfileArgs};
use super::common::{Verdict, load_profile};
use crate::lint::{Report, lint, render_brief, render_text};
use crate::profile::Profile;

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub profile: ProfileArgs,
}

pub fn run(g: &Global, a: Args) -> anyhow::Result<ExitCode> {
    let profile = load_profile(&a.profile.profile)?;
    let report = lint(&profile);
    match g.output {
        Output::Text => print!(
            "{}",
            render_text(&report, &a.profile.profile.display().to_string())
        ),
        Output::Json => println!("{}", serde_json::to_string_pretty(&report)?),
    }
    Ok(if report.has_errors() {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

/// For commands that need a sound plan (`plan`, `docs`, `gen`, `up`): lint, and refuse with
/// exit 1 (findings on stderr) when there are errors. The caller shows warnings.
pub(super) fn gate(profile: &Profile, source: &std::path::Path) -> anyhow::Result<Report> {
    let report = lint(profile);
    if report.has_errors() {
        eprint!("{}", render_brief(&report, &source.display().to_string()));
        return Err(Verdict(format!(
            "{} has {} lint error(s); fix them first (`talos-pve lint --profile {}`)",
            source.display(),
            report.errors,
            source.display()
        ))
        .into());
    }
    Ok(report)
}

/// [`gate`], then the warnings (if any) on stderr, for commands whose stdout is the
/// product (`docs`, `gen`).
pub(super) fn gate_warn_on_stderr(
    profile: &Profile,
    source: &std::path::Path,
) -> anyhow::Result<Report> {
    let report = gate(profile, source)?;
    if !report.is_clean() {
        eprint!("{}", render_brief(&report, &source.display().to_string()));
    }
    Ok(report)
}
