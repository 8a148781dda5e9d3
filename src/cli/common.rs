//! Helpers every subcommand shares: logging set-up, loading the profile, opening
//! the lab or the real hosts and saving the lab afterwards, exit codes.

use std::path::Path;

use super::args::{Global, LabArgs};
use super::preflight::PveArgs;
use crate::addons::ManifestSource;
use crate::cluster_dir::ClusterDir;
use crate::lab::{Datacenter, LabOptions};
use crate::plan::Plan;
use crate::profile::{self, Profile, ProfileError};
use crate::proxmox::settings::Overrides;
use crate::up::Env;

pub fn init_tracing(g: &Global) {
    let level = match g.verbose {
        0 => "warn",
        1 => "info",
        2 => "debug",
        _ => "trace",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("TALOS_PVE_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(format!("talos_pve={level}")));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(
            std::env::var_os("NO_COLOR").is_none()
                && std::io::IsTerminal::is_terminal(&std::io::stderr()),
        )
        .try_init();
}

pub fn load_profile(path: &Path) -> anyhow::Result<Profile> {
    profile::load(path).map_err(anyhow::Error::new)
}

/// The plan of a loaded profile and the cluster directory it lives in (`--dir`,
/// `TALOS_PVE_DIR`, else the XDG default): what every cluster command starts from.
pub fn plan_and_dir(profile: &Profile, dir: Option<&Path>) -> anyhow::Result<(Plan, ClusterDir)> {
    use anyhow::Context;
    let plan = Plan::build(profile).context("deriving the plan from the profile")?;
    let dir = ClusterDir::resolve(dir, &plan.cluster).map_err(anyhow::Error::msg)?;
    // Nodes without a pod CIDR in the profile keep the one they were given. A damaged
    // state file is reported by the commands that need it, not here.
    let recorded = crate::state::State::read(&dir.state()).ok().flatten();
    let plan = match recorded.and_then(|r| crate::up::converge::keep_pod_cidrs(profile, &r.steps)) {
        Some(kept) => Plan::build(&kept).context("deriving the plan from the profile")?,
        None => plan,
    };
    Ok((plan, dir))
}

/// The saved lab datacenter (with `--lab`), disasters applied.
pub async fn open_lab(
    dir: &ClusterDir,
    profile: &Profile,
    lab: Option<&LabOptions>,
) -> anyhow::Result<Option<Datacenter>> {
    Ok(match lab {
        Some(o) => {
            // The saved datacenter is shared state: one command at a time.
            crate::dir_lock::hold(dir)?;
            Some(Datacenter::open(&dir.lab(), profile, o).await?)
        }
        None => None,
    })
}

/// Persist the lab for the next command (also after a failure), write the report.
pub fn close_lab(dc: Option<Datacenter>, a: &LabArgs) -> anyhow::Result<()> {
    if let Some(dc) = dc {
        dc.save()?;
        if let Some(out) = &a.lab_report {
            let n = dc.report(out)?;
            eprintln!("lab report: {n} files in {}", out.display());
        }
        dc.shutdown();
    }
    Ok(())
}

/// The hosts a command acts on: the lab's simulated ones in `dc` (with `--lab`),
/// or the real ones the profile names, reached and trusted as `pve` says.
pub fn hosts(
    dc: Option<&Datacenter>,
    lab: Option<&LabOptions>,
    profile: &Profile,
    profile_path: &Path,
    pve: &PveArgs,
    manifests: ManifestSource,
) -> anyhow::Result<Env> {
    Ok(match (dc, lab) {
        (Some(dc), Some(o)) => Env::lab(dc, profile, o)?,
        _ => Env::real(
            profile,
            profile_path.parent(),
            &Overrides {
                fingerprint: pve.fingerprint.clone(),
                ca_file: pve.pve_ca.clone(),
                insecure: pve.insecure,
            },
            manifests,
        )?,
    })
}

/// `open_lab` then `hosts`, for commands that act on a built cluster (the add-on
/// manifests come from the binary).
pub async fn cluster_hosts(
    dir: &ClusterDir,
    profile: &Profile,
    profile_path: &Path,
    lab: Option<&LabOptions>,
    pve: &PveArgs,
) -> anyhow::Result<(Option<Datacenter>, Env)> {
    let dc = open_lab(dir, profile, lab).await?;
    let env = hosts(
        dc.as_ref(),
        lab,
        profile,
        profile_path,
        pve,
        ManifestSource::Embedded,
    )?;
    Ok((dc, env))
}

/// Marker error: the command ran, but its verdict is negative (lint errors).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Verdict(pub String);

/// 2 for bad input (profile or discovery file unreadable or invalid, a bad
/// `--lab-faults` spec), 1 for everything else.
pub fn exit_code(e: &anyhow::Error) -> u8 {
    let bad_input = |c: &(dyn std::error::Error + 'static)| {
        c.is::<ProfileError>()
            || c.is::<clap::Error>()
            || c.is::<crate::lab::FaultSpecError>()
            || c.downcast_ref::<crate::wizard::DiscoveryError>()
                .is_some_and(|d| d.is_bad_input())
    };
    if e.chain().any(bad_input) { 2 } else { 1 }
}

/// The error with its causes (what `{:#}` shows), each said once: a message that
/// already embeds its cause (`"…: {source}"` with `#[source]`) is not followed by it
/// again, and a fix line stays the last line whenever the causes are in the message.
pub fn error_text(e: &anyhow::Error) -> String {
    let mut text = e.to_string();
    for cause in e.chain().skip(1) {
        let c = cause.to_string();
        if !text.contains(&c) {
            text.push_str(": ");
            text.push_str(&c);
        }
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wizard::DiscoveryError;

    #[derive(Debug, thiserror::Error)]
    #[error("writing {path}: {source}\n  fix: check its permissions")]
    struct Embeds {
        path: String,
        source: std::io::Error,
    }

    #[test]
    fn a_cause_the_message_already_says_is_not_repeated() {
        let io = std::io::Error::other("disk full");
        let e = anyhow::Error::new(Embeds {
            path: "x".into(),
            source: io,
        });
        assert_eq!(
            format!("{e:#}").matches("disk full").count(),
            2,
            "anyhow repeats it"
        );
        assert_eq!(
            error_text(&e),
            "writing x: disk full\n  fix: check its permissions"
        );
        let outer = anyhow::Error::new(std::io::Error::other("refused")).context("preflight");
        assert_eq!(error_text(&outer), "preflight: refused");
    }

    #[test]
    fn bad_input_exits_2_and_failures_exit_1() {
        let faults = crate::lab::LabFaults::parse("nonsense=1").unwrap_err();
        assert_eq!(exit_code(&anyhow::Error::new(faults)), 2);
        let file = DiscoveryError::Parse {
            path: "d.json".into(),
            message: "missing field `hosts`".into(),
        };
        assert_eq!(exit_code(&anyhow::Error::new(file).context("init")), 2);
        let remote = DiscoveryError::Remote {
            endpoint: "https://10.8.16.10:8006".into(),
            message: "401".into(),
            fix: "check the token".into(),
        };
        assert_eq!(exit_code(&anyhow::Error::new(remote)), 1);
        assert_eq!(exit_code(&anyhow::anyhow!("a step failed")), 1);
    }
}
