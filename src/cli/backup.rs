//! `talos-pve backup`: a validated etcd snapshot from a healthy control plane, with
//! the profile, the secrets bundle (optionally age-encrypted), talosconfig,
//! kubeconfig and a manifest, written atomically into
//! `<cluster dir>/backups/<cluster>-<timestamp>/` (or under `--out DIR`).
//! `backup verify DIR` checks a backup offline. The work is `rebuild::backup`;
//! `--keep N` prunes old backups afterwards (`rebuild::retention`).
//!
//! Exit codes: 0 the backup was written (and, with `--keep`, old ones pruned);
//! 1 no backup was written, or it was written but pruning failed (the message says
//! which); 2 bad input (profile, arguments such as `--keep 0`).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, bail};

use super::args::{Global, LabArgs, Output};
use super::common::{close_lab, open_lab};
use super::preflight::runtime;
use crate::net::AddressBook;
use crate::rebuild::backup::{self, Contents};
use crate::rebuild::{health, retention};
use crate::talos::api::{Stages, Talosconfig, Target, Timeouts};
use crate::up::Env;

#[derive(Debug, clap::Args)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
pub struct Args {
    #[command(subcommand)]
    pub verify: Option<Sub>,
    /// The cluster profile (YAML).
    #[arg(long, short = 'p', value_name = "FILE", required = true)]
    pub profile: Option<PathBuf>,
    /// Cluster directory (secrets, talosconfig, kubeconfig, state).
    /// Default: $XDG_DATA_HOME/talos-pve/<cluster>.
    #[arg(long, env = "TALOS_PVE_DIR", value_name = "DIR")]
    pub dir: Option<PathBuf>,
    /// Parent directory for the backup (default: <cluster dir>/backups).
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// Encrypt the secrets bundle to this age X25519 recipient (age1…).
    #[arg(long, value_name = "RECIPIENT")]
    pub age_recipient: Option<String>,
    /// After the new backup is written and verified, delete this cluster's oldest
    /// backups in the same directory so that the newest N remain (N ≥ 1).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub keep: Option<u32>,
    #[command(flatten)]
    pub lab: LabArgs,
}

#[derive(Debug, clap::Subcommand)]
pub enum Sub {
    /// Check a backup without touching the cluster: checksums, the snapshot's hash
    /// trailer, the secrets bundle (or its age encryption).
    Verify {
        /// The backup directory.
        dir: PathBuf,
        /// Decrypt an encrypted secrets bundle with this age identity file and
        /// validate it too.
        #[arg(long, value_name = "FILE")]
        age_identity: Option<PathBuf>,
    },
}

pub fn run(g: &Global, a: Args) -> anyhow::Result<ExitCode> {
    if let Some(Sub::Verify { dir, age_identity }) = &a.verify {
        return verify(g, dir, age_identity.as_deref());
    }
    let Some(profile_path) = a.profile.clone() else {
        bail!("backup needs --profile FILE");
    };
    if let Some(r) = &a.age_recipient {
        backup::parse_recipient(r)?;
    }
    let lab = a.lab.options()?;
    let profile = super::common::load_profile(&profile_path)?;
    let (plan, dir) = super::common::plan_and_dir(&profile, a.dir.as_deref())?;
    crate::dir_lock::hold(&dir)?;
    let read = |p: PathBuf, fix: &str| {
        std::fs::read(&p).with_context(|| format!("reading {}\n  fix: {fix}", p.display()))
    };
    let regen =
        "run `talos-pve gen --profile FILE --dir DIR` (it reuses the directory's secrets.yaml)";
    let talosconfig = read(dir.talosconfig(), regen)?;
    let kubeconfig = read(dir.kubeconfig(), regen)?;
    let secrets = zeroize::Zeroizing::new(read(
        dir.secrets(),
        "a backup without the secrets bundle cannot rebuild the cluster; restore it into the cluster directory first",
    )?);
    let profile_bytes = read(profile_path.clone(), "check --profile")?;
    let creds = Talosconfig::load(&dir.talosconfig())?.credentials;
    let out = a.out.clone().unwrap_or_else(|| dir.backups());
    runtime()?.block_on(async {
        let dc = open_lab(&dir, &profile, lab.as_ref()).await?;
        let result = async {
            let stages = match (&dc, &lab) {
                (Some(dc), Some(o)) => Env::lab(dc, &profile, o)?.talos,
                _ => Stages::new(AddressBook::direct(), Timeouts::default()),
            };
            // Only control planes whose etcd runs are asked (the endpoint node first).
            let h = health::probe(&stages, &plan, &creds).await;
            let mut errors = Vec::new();
            let mut got = None;
            let mut running = h.etcd_running();
            running.sort_by_key(|n| *n != plan.bootstrap_node);
            for name in running {
                let Some(n) = plan.node(name) else { continue };
                match stages.snapshot(&Target::of(n), &creds).await {
                    Ok(s) => {
                        got = Some((name.to_owned(), s));
                        break;
                    }
                    Err(e) => errors.push(format!("  - {e}")),
                }
            }
            let Some((node, snapshot)) = got else {
                bail!(
                    "no control plane gave an etcd snapshot:\n{}\n{}\n  fix: a backup needs one healthy control plane; see `talos-pve rebuild --help`",
                    h.render(),
                    errors.join("\n")
                );
            };
            let c = Contents {
                cluster: &plan.cluster,
                node: &node,
                talos_version: &plan.talos_version,
                kubernetes_version: &plan.kubernetes_version,
                snapshot: &snapshot,
                profile: &profile_bytes,
                secrets: &secrets,
                talosconfig: &talosconfig,
                kubeconfig: &kubeconfig,
                age_recipient: a.age_recipient.as_deref(),
            };
            Ok(backup::write(&out, &c)?)
        }
        .await;
        close_lab(dc, &a.lab)?;
        let (path, manifest) = result?;
        // Old backups go only once the new one checks out.
        let pruned = match a.keep {
            Some(keep) => {
                backup::verify(&path, None)?;
                retention::prune(&out, &manifest.cluster, keep as usize)?
            }
            None => Vec::new(),
        };
        match g.output {
            Output::Json => println!(
                "{}",
                serde_json::json!({"path": path, "manifest": manifest, "pruned": pruned})
            ),
            Output::Text => {
                println!(
                    "backup of {} (etcd snapshot from {}) written to {}",
                    manifest.cluster,
                    manifest.node,
                    path.display()
                );
                for p in &pruned {
                    println!("removed old backup {} (--keep)", p.display());
                }
                match &manifest.age_recipient {
                    Some(r) => println!("secrets bundle encrypted to {r}"),
                    None => println!(
                        "it holds the cluster's secrets in plain text: keep it somewhere safe, or use --age-recipient"
                    ),
                }
            }
        }
        Ok(ExitCode::SUCCESS)
    })
}

fn verify(g: &Global, dir: &Path, identity: Option<&Path>) -> anyhow::Result<ExitCode> {
    let v = backup::verify(dir, identity)?;
    match g.output {
        Output::Json => println!(
            "{}",
            serde_json::json!({"ok": true, "secretsChecked": v.secrets_checked, "manifest": v.manifest})
        ),
        Output::Text => {
            println!(
                "backup {} is intact: {} files match their checksums, the etcd snapshot's hash trailer is valid",
                dir.display(),
                v.manifest.files.len()
            );
            println!(
                "cluster {}, taken {} from {}, Talos {}, Kubernetes {}",
                v.manifest.cluster,
                v.manifest.taken_at,
                v.manifest.node,
                v.manifest.talos_version,
                v.manifest.kubernetes_version
            );
            println!(
                "{}",
                if v.secrets_checked {
                    "secrets bundle: parsed and validated"
                } else {
                    "secrets bundle: a well-formed age file (pass --age-identity to decrypt and validate it)"
                }
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}
