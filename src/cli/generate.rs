//! `talos-pve gen`: secrets bundle, machine configs, talosconfig and kubeconfig.
//!
//! Secrets are never lost: an existing bundle is reused; `--force-new-secrets`
//! generates a new one, keeps the old one as `backups/secrets-<UTC timestamp>.yaml`
//! and swaps the new one in atomically; a cluster whose state file
//! exists but whose bundle is missing is an error. Logs name files, never contents.
//!
//! Re-runs are byte-stable: machine configs are a pure function of profile and bundle,
//! and the admin certificates of existing talosconfig/kubeconfig files are kept while
//! the bundle's CA signed them and they have 30+ days left (else re-issued).
//!
//! Refuses (exit 1, nothing written) when lint finds errors in the profile.

use std::path::PathBuf;
use std::process::ExitCode;

use super::args::{Global, Output, ProfileArgs};
use crate::artifacts::{self, SecretsSource};

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub profile: ProfileArgs,
    /// Output directory (same as --dir; default: the cluster directory).
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// Replace the existing secrets bundle with a new one (the old one is kept in
    /// DIR/backups/). Nodes configured with the old bundle stop trusting you.
    #[arg(long, conflicts_with = "import_secrets")]
    pub force_new_secrets: bool,
    /// Adopt a bundle written by `talosctl gen secrets` (validated first).
    #[arg(long, value_name = "FILE")]
    pub import_secrets: Option<PathBuf>,
}

pub fn run(g: &Global, a: Args) -> anyhow::Result<ExitCode> {
    let profile = super::common::load_profile(&a.profile.profile)?;
    // Configs from an unsound plan would boot nodes that cannot reach each other.
    super::lint::gate_warn_on_stderr(&profile, &a.profile.profile)?;
    let explicit = a.out.as_deref().or(a.profile.dir.as_deref());
    let (plan, dir) = super::common::plan_and_dir(&profile, explicit)?;
    crate::dir_lock::hold(&dir)?;
    let source = match (a.import_secrets, a.force_new_secrets) {
        (Some(f), _) => SecretsSource::Import(f),
        (None, true) => SecretsSource::ForceNew,
        (None, false) => SecretsSource::Existing,
    };
    let out = artifacts::generate(&dir, &profile, &plan, &source)?;
    let configs: Vec<String> = out
        .machineconfigs
        .iter()
        .map(|p| p.display().to_string())
        .collect();
    if g.output == Output::Json {
        let summary = serde_json::json!({
            "secrets": dir.secrets().display().to_string(),
            "secretsOrigin": out.origin.as_str(),
            "talosconfig": dir.talosconfig().display().to_string(),
            "kubeconfig": dir.kubeconfig().display().to_string(),
            "machineconfigs": configs,
            "contract": format!("1.{}", out.contract.minor()),
        });
        println!("{summary:#}");
    } else {
        println!(
            "secrets:        {} ({})",
            dir.secrets().display(),
            out.origin.as_str()
        );
        println!("talosconfig:    {}", dir.talosconfig().display());
        println!("kubeconfig:     {}", dir.kubeconfig().display());
        println!(
            "machineconfigs: {} ({} nodes, Talos 1.{} contract)",
            dir.machineconfigs().display(),
            configs.len(),
            out.contract.minor()
        );
    }
    Ok(ExitCode::SUCCESS)
}
