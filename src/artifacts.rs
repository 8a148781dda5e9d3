//! The cluster's generated files in its directory: the secrets bundle (never lost,
//! never silently replaced), one machine config per node, talosconfig and kubeconfig.
//! Shared by `talos-pve gen`, `up` and `rebuild`.
//!
//! Secrets are never lost: an existing bundle is reused; `ForceNew` generates the new
//! bundle first, then keeps the old one as `backups/secrets-<UTC timestamp>.yaml` and
//! swaps the new one in atomically (`secrets.yaml` always holds one of the two); a
//! cluster whose state file exists but whose bundle is missing is an error. Logs name
//! files, never contents. A new bundle carries the cluster's identity (`cluster.id`,
//! see `cluster_id`): the pending one when VMs were made before it, the old bundle's
//! on `ForceNew`.
//!
//! Re-runs are byte-stable: machine configs are a pure function of profile and bundle,
//! and the admin certificates of existing talosconfig/kubeconfig files are kept while
//! the bundle's CA signed them and they have 30+ days left (else re-issued).
//!
//! It must not touch the network, and must never overwrite a secrets bundle in place.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use time::OffsetDateTime;
use zeroize::Zeroizing;

use crate::cluster_dir::ClusterDir;
use crate::cluster_id;
use crate::files::{self, SECRET_MODE};
use crate::pki::SecretsBundle;
use crate::plan::Plan;
use crate::profile::Profile;
use crate::talos::config::{self as tc, Contract};

/// Where the secrets bundle should come from.
#[derive(Debug, Clone, PartialEq)]
pub enum SecretsSource {
    /// Reuse the directory's bundle, or generate one for a new cluster.
    Existing,
    /// Adopt a bundle written by `talosctl gen secrets`.
    Import(PathBuf),
    /// Generate a new bundle and swap it in (the old one kept in backups/).
    ForceNew,
}

/// What `generate` wrote.
#[derive(Debug)]
pub struct Generated {
    pub secrets: SecretsBundle,
    pub origin: Origin,
    pub contract: Contract,
    pub machineconfigs: Vec<PathBuf>,
}

/// Make sure every generated file of the cluster exists and matches profile and bundle.
pub fn generate(
    dir: &ClusterDir,
    profile: &Profile,
    plan: &Plan,
    source: &SecretsSource,
) -> anyhow::Result<Generated> {
    let contract = Contract::from_talos_version(&profile.talos.version)?;
    let now = OffsetDateTime::now_utc();
    let (secrets, origin) = secrets(dir, source, now)?;
    tracing::info!(
        contract = contract.minor(),
        nodes = plan.nodes.len(),
        "rendering machine configs"
    );
    let mut machineconfigs = Vec::with_capacity(plan.nodes.len());
    for node in &plan.nodes {
        let text = tc::render_node(profile, plan, node, &secrets, contract);
        let path = machineconfig_path(dir, &node.name);
        write_secret(&path, text.as_bytes())?;
        tracing::debug!(path = %path.display(), node = %node.name, "wrote machine config");
        machineconfigs.push(path);
    }
    let talos_admin = reuse_or_issue(
        &dir.talosconfig(),
        |t| tc::reusable_talos_admin(t, &secrets, now),
        || tc::issue_talos_admin(&secrets, now),
    )?;
    write_secret(
        &dir.talosconfig(),
        tc::talosconfig(plan, &secrets, &talos_admin)?.as_bytes(),
    )?;
    let kube_admin = reuse_or_issue(
        &dir.kubeconfig(),
        |t| tc::reusable_kube_admin(t, plan, &secrets, now),
        || tc::issue_kube_admin(&secrets, now),
    )?;
    write_secret(
        &dir.kubeconfig(),
        tc::kubeconfig(plan, &secrets, &kube_admin)?.as_bytes(),
    )?;
    Ok(Generated {
        secrets,
        origin,
        contract,
        machineconfigs,
    })
}

pub fn machineconfig_path(dir: &ClusterDir, node: &str) -> PathBuf {
    dir.machineconfigs().join(format!("{node}.yaml"))
}

/// Did a run of this cluster already use its secrets? (The state file records the
/// secrets step, or a node got a config.) A state file alone is not enough: `up`
/// provisions VMs while the secrets are being generated, and a run killed then has
/// a state file but never had a bundle. An unreadable state file counts as "used".
fn secrets_were_used(dir: &ClusterDir) -> bool {
    match crate::state::State::read(&dir.state()) {
        Ok(None) => false,
        Ok(Some(rec)) => rec.steps.iter().any(|r| {
            matches!(
                r.step,
                crate::state::Step::Secrets
                    | crate::state::Step::Configs
                    | crate::state::Step::Cidata(_)
            )
        }),
        Err(_) => true,
    }
}

/// Load and validate the directory's bundle (rebuilds: never generate).
pub fn existing_secrets(dir: &ClusterDir) -> anyhow::Result<SecretsBundle> {
    let path = dir.secrets();
    if !path.exists() {
        bail!(
            "{} is missing; a rebuild needs the cluster's own secrets\n  fix: restore secrets.yaml from a backup (`talos-pve backup` writes one) into {}",
            path.display(),
            dir.root.display()
        );
    }
    load_bundle(&path, OffsetDateTime::now_utc())
}

/// Where this run's secrets bundle came from (reported to the user and in JSON).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    Generated,
    Reused,
    Imported,
    Replaced,
}

impl Origin {
    pub fn as_str(self) -> &'static str {
        match self {
            Origin::Generated => "generated",
            Origin::Reused => "reused",
            Origin::Imported => "imported",
            Origin::Replaced => "replaced (old bundle in backups/)",
        }
    }
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
    source: &SecretsSource,
    now: OffsetDateTime,
) -> anyhow::Result<(SecretsBundle, Origin)> {
    let path = dir.secrets();
    let exists = path.exists();
    if let SecretsSource::Import(src) = source {
        if !src.is_file() {
            bail!(
                "cannot import {}: no such file\n  fix: check the path given to --import-secrets (a secrets.yaml written by `talosctl gen secrets` or talos-pve)",
                src.display()
            );
        }
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
        if let Some(pending) = cluster_id::pending(dir)?
            && pending != imported.cluster.id.expose()
        {
            bail!(
                "VMs of this cluster directory were made with the cluster identity in {}, and {} has another `cluster.id`; importing it would disown them\n  fix: destroy those VMs first (`talos-pve destroy`), then delete {} and import again",
                dir.root.join("cluster-id").display(),
                src.display(),
                dir.root.join("cluster-id").display()
            );
        }
        write_bundle(&path, &imported)?;
        cluster_id::settle(dir);
        tracing::info!(from = %src.display(), to = %path.display(), "imported secrets bundle");
        return Ok((imported, Origin::Imported));
    }
    if exists && !matches!(source, SecretsSource::ForceNew) {
        tracing::info!(path = %path.display(), "reusing the existing secrets bundle");
        return Ok((load_bundle(&path, now)?, Origin::Reused));
    }
    if !exists && secrets_were_used(dir) && !matches!(source, SecretsSource::ForceNew) {
        bail!(
            "{} is missing, but {} says this cluster exists; generating new secrets would lock you out of it\n  fix: restore secrets.yaml from a backup (or --import-secrets FILE); to start over on purpose use --force-new-secrets",
            path.display(),
            dir.state().display()
        );
    }
    // The cluster keeps its identity: the VMs already carry it.
    let id = if exists {
        let text = Zeroizing::new(
            std::fs::read_to_string(&path)
                .with_context(|| format!("reading {}", path.display()))?,
        );
        match SecretsBundle::parse(&text) {
            Ok(old) => Some(old.cluster.id.expose().to_owned()),
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "the old bundle does not parse; the new one gets a new cluster identity");
                None
            }
        }
    } else {
        cluster_id::pending(dir)?
    };
    tracing::info!("generating a new secrets bundle (RSA-4096 takes a moment)");
    let b = match id {
        Some(id) => SecretsBundle::generate_with_id(now, id)?,
        None => SecretsBundle::generate(now)?,
    };
    if exists {
        swap_in(dir, &path, &b, now)?;
    } else {
        write_bundle(&path, &b)?;
        cluster_id::settle(dir);
    }
    tracing::info!(path = %path.display(), "wrote the secrets bundle");
    let origin = if exists {
        Origin::Replaced
    } else {
        Origin::Generated
    };
    Ok((b, origin))
}

/// Replace the bundle at `path` with `new`: the old one is first hard-linked into
/// backups/ (so it is never lost), then the new one replaces it in one rename.
fn swap_in(
    dir: &ClusterDir,
    path: &Path,
    new: &SecretsBundle,
    now: OffsetDateTime,
) -> anyhow::Result<()> {
    let stamp = now
        .format(time::macros::format_description!(
            "[year][month][day]T[hour][minute][second]Z"
        ))
        .unwrap_or_default();
    let backup = dir.backups().join(format!("secrets-{stamp}.yaml"));
    std::fs::create_dir_all(dir.backups())
        .with_context(|| format!("creating {}", dir.backups().display()))?;
    std::fs::hard_link(path, &backup).with_context(|| {
        format!(
            "keeping {} as {} (if it exists: wait a second and retry)",
            path.display(),
            backup.display()
        )
    })?;
    files::write_atomic(path, new.to_yaml().as_bytes(), SECRET_MODE)
        .with_context(|| format!("replacing {}", path.display()))?;
    tracing::warn!(backup = %backup.display(), "the old secrets bundle is kept in backups/");
    Ok(())
}
