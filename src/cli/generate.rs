//! `talos-pve gen`: secrets bundle, machine configs, talosconfig and kubeconfig.
//!
//! Secrets are never lost: an existing bundle is reused; `--force-new-secrets` first
//! moves it to `backups/secrets-<UTC timestamp>.yaml`; a cluster whose state file
//! exists but whose bundle is missing is an error. Logs name files, never contents.
//!
//! Re-runs are byte-stable: machine configs are a pure function of profile and bundle,
//! and the admin certificates of existing talosconfig/kubeconfig files are kept while
//! the bundle's CA signed them and they have 30+ days left (else re-issued).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, bail};
use time::OffsetDateTime;
use zeroize::Zeroizing;

use super::args::{Global, Output, ProfileArgs};
use crate::cluster_dir::ClusterDir;
use crate::files::{self, SECRET_MODE};
use crate::pki::SecretsBundle;
use crate::plan::Plan;
use crate::talos::config::{self as tc, Contract};

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub profile: ProfileArgs,
    /// Output directory (same as --dir; default: the cluster directory).
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// Replace the existing secrets bundle with a new one (the old one is moved to
    /// DIR/backups/ first). Nodes configured with the old bundle stop trusting you.
    #[arg(long, conflicts_with = "import_secrets")]
    pub force_new_secrets: bool,
    /// Adopt a bundle written by `talosctl gen secrets` (validated first).
    #[arg(long, value_name = "FILE")]
    pub import_secrets: Option<PathBuf>,
}

/// Where this run's secrets bundle came from (reported to the user and in JSON).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Origin {
    Generated,
    Reused,
    Imported,
    Replaced,
}

impl Origin {
    fn as_str(self) -> &'static str {
        match self {
            Origin::Generated => "generated",
            Origin::Reused => "reused",
            Origin::Imported => "imported",
            Origin::Replaced => "replaced (old bundle in backups/)",
        }
    }
}

pub fn run(g: &Global, a: Args) -> anyhow::Result<ExitCode> {
    let profile = super::common::load_profile(&a.profile.profile)?;
    let contract = Contract::from_talos_version(&profile.talos.version)?;
    let plan = Plan::build(&profile).context("deriving the plan from the profile")?;
    let explicit = a.out.as_deref().or(a.profile.dir.as_deref());
    let dir = ClusterDir::resolve(explicit, &profile.metadata.name).map_err(anyhow::Error::msg)?;
    let now = OffsetDateTime::now_utc();

    let (secrets, origin) = secrets(&dir, &a, now)?;
    tracing::info!(
        contract = contract.minor(),
        nodes = plan.nodes.len(),
        "rendering machine configs"
    );
    for node in &plan.nodes {
        let text = tc::render_node(&profile, &plan, node, &secrets, contract);
        let path = dir.machineconfigs().join(format!("{}.yaml", node.name));
        write_secret(&path, text.as_bytes())?;
        tracing::debug!(path = %path.display(), node = %node.name, "wrote machine config");
    }

    let talos_admin = reuse_or_issue(
        &dir.talosconfig(),
        |t| tc::reusable_talos_admin(t, &secrets, now),
        || tc::issue_talos_admin(&secrets, now),
    )?;
    write_secret(
        &dir.talosconfig(),
        tc::talosconfig(&plan, &secrets, &talos_admin)?.as_bytes(),
    )?;
    let kube_admin = reuse_or_issue(
        &dir.kubeconfig(),
        |t| tc::reusable_kube_admin(t, &plan, &secrets, now),
        || tc::issue_kube_admin(&secrets, now),
    )?;
    write_secret(
        &dir.kubeconfig(),
        tc::kubeconfig(&plan, &secrets, &kube_admin)?.as_bytes(),
    )?;

    let configs: Vec<String> = plan
        .nodes
        .iter()
        .map(|n| {
            dir.machineconfigs()
                .join(format!("{}.yaml", n.name))
                .display()
                .to_string()
        })
        .collect();
    if g.output == Output::Json {
        let summary = serde_json::json!({
            "secrets": dir.secrets().display().to_string(),
            "secretsOrigin": origin.as_str(),
            "talosconfig": dir.talosconfig().display().to_string(),
            "kubeconfig": dir.kubeconfig().display().to_string(),
            "machineconfigs": configs,
            "contract": format!("1.{}", contract.minor()),
        });
        println!("{summary:#}");
    } else {
        println!(
            "secrets:        {} ({})",
            dir.secrets().display(),
            origin.as_str()
        );
        println!("talosconfig:    {}", dir.talosconfig().display());
        println!("kubeconfig:     {}", dir.kubeconfig().display());
        println!(
            "machineconfigs: {} ({} nodes, Talos 1.{} contract)",
            dir.machineconfigs().display(),
            configs.len(),
            contract.minor()
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn write_secret(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    files::write_atomic(path, bytes, SECRET_MODE)
        .with_context(|| format!("writing {}", path.display()))
}

/// Keep the admin certificate of an existing file when it is still good.
fn reuse_or_issue(
    path: &Path,
    reuse: impl Fn(&str) -> Option<tc::AdminCert>,
    issue: impl Fn() -> Result<tc::AdminCert, tc::ConfigError>,
) -> anyhow::Result<tc::AdminCert> {
    if let Ok(text) = std::fs::read_to_string(path).map(Zeroizing::new)
        && let Some(c) = reuse(&text)
    {
        tracing::info!(path = %path.display(), "reusing the admin certificate");
        return Ok(c);
    }
    tracing::info!(path = %path.display(), "issuing a new admin certificate");
    issue().with_context(|| format!("issuing the admin certificate for {}", path.display()))
}

fn load_bundle(path: &Path, now: OffsetDateTime) -> anyhow::Result<SecretsBundle> {
    let text = Zeroizing::new(
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?,
    );
    let b = SecretsBundle::parse(&text).with_context(|| format!("loading {}", path.display()))?;
    b.validate(now)
        .with_context(|| format!("validating {}", path.display()))?;
    Ok(b)
}

fn write_bundle(path: &Path, b: &SecretsBundle) -> anyhow::Result<()> {
    files::write_new(path, b.to_yaml().as_bytes(), SECRET_MODE).with_context(|| {
        format!(
            "writing {} (it must not exist yet; secrets are never overwritten)",
            path.display()
        )
    })
}

/// Decide where the bundle comes from (see the module doc) and make sure it is on disk.
fn secrets(
    dir: &ClusterDir,
    a: &Args,
    now: OffsetDateTime,
) -> anyhow::Result<(SecretsBundle, Origin)> {
    let path = dir.secrets();
    let exists = path.exists();
    if let Some(src) = &a.import_secrets {
        let imported = load_bundle(src, now)?;
        if exists {
            let current = load_bundle(&path, now)?;
            if current != imported {
                bail!(
                    "{} already holds a different secrets bundle; refusing to replace it with {}\n  fix: use another --dir, or run `gen --force-new-secrets` first to move the old bundle to backups/",
                    path.display(),
                    src.display()
                );
            }
            tracing::info!(path = %path.display(), "imported bundle equals the existing one");
            return Ok((current, Origin::Reused));
        }
        write_bundle(&path, &imported)?;
        tracing::info!(from = %src.display(), to = %path.display(), "imported secrets bundle");
        return Ok((imported, Origin::Imported));
    }
    if exists && !a.force_new_secrets {
        tracing::info!(path = %path.display(), "reusing the existing secrets bundle");
        return Ok((load_bundle(&path, now)?, Origin::Reused));
    }
    if exists {
        let stamp = now
            .format(time::macros::format_description!(
                "[year][month][day]T[hour][minute][second]Z"
            ))
            .unwrap_or_default();
        let backup = dir.backups().join(format!("secrets-{stamp}.yaml"));
        std::fs::create_dir_all(dir.backups())
            .with_context(|| format!("creating {}", dir.backups().display()))?;
        if backup.exists() {
            bail!(
                "backup {} already exists; wait a second and retry",
                backup.display()
            );
        }
        std::fs::rename(&path, &backup)
            .with_context(|| format!("moving {} to {}", path.display(), backup.display()))?;
        tracing::warn!(backup = %backup.display(), "moved the old secrets bundle aside");
    } else if dir.state().exists() && !a.force_new_secrets {
        bail!(
            "{} is missing, but {} says this cluster exists; generating new secrets would lock you out of it\n  fix: restore secrets.yaml from a backup (or --import-secrets FILE); to start over on purpose use --force-new-secrets",
            path.display(),
            dir.state().display()
        );
    }
    tracing::info!("generating a new secrets bundle (RSA-4096 takes a moment)");
    let b = SecretsBundle::generate(now)?;
    write_bundle(&path, &b)?;
    tracing::info!(path = %path.display(), "wrote the secrets bundle");
    let origin = if exists {
        Origin::Replaced
    } else {
        Origin::Generated
    };
    Ok((b, origin))
}
