//! Helpers every subcommand shares: logging set-up, loading the profile, exit codes.

use std::path::Path;

use anyhow::Context;

use super::args::Global;
use crate::profile::{self, Profile, ProfileError};

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

/// Marker error: the command ran, but its verdict is negative (lint errors).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Verdict(pub String);

/// 2 for bad input (profile unreadable or invalid), 1 for everything else.
pub fn exit_code(e: &anyhow::Error) -> u8 {
    if e.chain()
        .any(|c| c.is::<ProfileError>() || c.is::<clap::Error>())
    {
        2
    } else {
        1
    }
}

/// Placeholder for subcommands whose capability is still being built.
pub fn not_yet(what: &str) -> anyhow::Result<std::process::ExitCode> {
    Err(anyhow::anyhow!(
        "`talos-pve {what}` is not available in this build yet"
    ))
    .context("unsupported command")
}
