//! Disaster recovery: rebuild one lost or broken node, or the whole cluster from a
//! backup, with the cluster's own secrets (never regenerated), the same VMIDs, MACs
//! and addresses, so old talosconfig/kubeconfig files keep working.
//!
//! Each flow (`node`, `cluster`) is split in two: `assess` probes what is alive and
//! decides the destructive steps (refusing when the cluster is healthy, when quorum
//! would be lost, when the secrets are missing), so the caller can show them and
//! ask; `run` carries them out. `backup` writes and verifies backups; `health` is
//! the probe and the quorum arithmetic.
//!
//! Resuming: every step is idempotent against the real systems rather than
//! recorded, because the systems are the truth after a disaster: a member is only
//! removed while it is listed, a VM is only created when missing (provision adopts
//! an existing one), a config is only sent when the node does not already run it
//! (the apply steps are also recorded in the state file, as `up` does), etcd is
//! only recovered while the endpoint node's etcd is not running, and add-ons are
//! reconciled (created only when missing). A wipe (or a power cycle of a hung node)
//! is repeated on a re-run only for a node that is still not a healthy member,
//! which loses nothing. A killed run is
//! simply run again.

pub mod backup;
pub mod cluster;
pub mod health;
pub mod node;
pub mod retention;

use std::fmt::Write as _;

use thiserror::Error;

use crate::addons::{self, AddonError};
use crate::artifacts::{self, SecretsSource};
use crate::cluster_dir::ClusterDir;
use crate::files::{self, SECRET_MODE};
use crate::kube::{self, KubeError, Kubeconfig};
use crate::plan::{NodePlan, Plan};
use crate::profile::Profile;
use crate::progress::Reporter;
use crate::proxmox::PveError;
use crate::proxmox::provision::ProvisionError;
use crate::state::{State, StateError};
use crate::talos::api::snapshot::SnapshotError;
use crate::talos::api::{Credentials, TalosError, Talosconfig};
use crate::up::{Env, UpError};

pub use backup::BackupError;

#[derive(Debug, Error)]
pub enum RebuildError {
    #[error(
        "`{node}` is not a node of the profile (nodes: {known})\n  fix: name one of the profile's nodes"
    )]
    UnknownNode { node: String, known: String },
    #[error(
        "{what} is healthy, so there is nothing to rebuild:\n{health}\n  fix: pass --force to rebuild it anyway"
    )]
    Healthy { what: String, health: String },
    #[error(
        "refusing to rebuild {node}: {detail}\n{health}\n  fix: bring the other control planes back first (`talos-pve rebuild node NAME` for each one that is up but broken), or restore the whole cluster with `talos-pve rebuild cluster --from BACKUP`"
    )]
    Quorum {
        node: String,
        detail: String,
        health: String,
    },
    #[error(
        "refusing to rebuild {node}: no other control plane's etcd answers with its member list (none runs, or quorum is lost), so its member cannot be removed and it cannot rejoin:\n{health}\n  fix: restore the cluster from a backup with `talos-pve rebuild cluster --from BACKUP`"
    )]
    NoHealthyControlPlane { node: String, health: String },
    #[error(
        "refusing to recover etcd from a backup while it still runs on {nodes}:\n{health}\n  fix: if a majority still runs, rebuild the broken nodes with `talos-pve rebuild node NAME`; to replace the live data with the backup, pass --force (their etcd data is wiped)"
    )]
    EtcdStillRunning { nodes: String, health: String },
    #[error(
        "refusing to rebuild {node}: VM {vmid} on {host} does not carry this cluster's marker (it reads {claim}), so it is not power-cycled, wiped or replaced\n  fix: run from the cluster directory whose secrets made it (`--dir`); if that VM is not this cluster's, give {node} another `vmid`"
    )]
    NotOurs {
        node: String,
        vmid: u32,
        host: String,
        claim: String,
    },
    #[error("{0:#}")]
    Secrets(anyhow::Error),
    #[error(
        "{secrets} is missing, and a rebuild never generates secrets: configs from new ones would not match the restored etcd data\n  fix: restore it from the backup first: {command}"
    )]
    SecretsInBackup { secrets: String, command: String },
    #[error(
        "the backup {backup} belongs to cluster `{found}`, the profile describes `{want}`\n  fix: pass a backup of `{want}`, or the matching profile"
    )]
    OtherCluster {
        backup: String,
        found: String,
        want: String,
    },
    #[error(
        "the secrets bundle in {backup} differs from {dir}: configs made from the directory's bundle would not match the restored etcd data (service-account keys, CAs)\n  fix: copy the backup's secrets.yaml into the cluster directory (it is never replaced automatically)"
    )]
    SecretsMismatch { backup: String, dir: String },
    #[error(
        "{path}: {cause}\n  fix: if this is a raw copy of a node's /var/lib/etcd/member/snap/db (no hash trailer), pass --skip-hash-check; otherwise use a backup directory written by `talos-pve backup`"
    )]
    RawSnapshot { path: String, cause: SnapshotError },
    #[error("writing {path}: {cause}")]
    Write { path: String, cause: std::io::Error },
    #[error("reading {path}: {cause}")]
    Read { path: String, cause: std::io::Error },
    #[error(transparent)]
    Backup(#[from] BackupError),
    #[error(transparent)]
    Up(Box<UpError>),
    #[error(transparent)]
    Talos(#[from] TalosError),
    #[error(transparent)]
    Kube(#[from] KubeError),
    #[error(transparent)]
    Addons(#[from] AddonError),
    #[error(transparent)]
    Provision(Box<ProvisionError>),
    #[error(transparent)]
    Pve(#[from] PveError),
    #[error(transparent)]
    State(#[from] StateError),
}

// Boxed: both are large and rare.
impl From<UpError> for RebuildError {
    fn from(e: UpError) -> Self {
        Self::Up(Box::new(e))
    }
}

impl From<ProvisionError> for RebuildError {
    fn from(e: ProvisionError) -> Self {
        Self::Provision(Box::new(e))
    }
}

/// Everything a rebuild acts with.
pub struct Ctx<'a> {
    pub env: &'a Env,
    pub profile: &'a Profile,
    pub plan: &'a Plan,
    pub dir: &'a ClusterDir,
    pub rep: &'a Reporter,
}

/// The cluster's own secrets and the configs, talosconfig and kubeconfig made from
/// them. A missing bundle is a refusal: a rebuild never generates one.
pub fn prepare(ctx: &Ctx<'_>) -> Result<(Credentials, State), RebuildError> {
    artifacts::existing_secrets(ctx.dir).map_err(RebuildError::Secrets)?;
    // `generate` re-issues an admin credential it cannot reuse (such as the node's
    // kubeconfig that `up` keeps); a rebuild leaves the user's files as they are —
    // they stay valid, being signed by the same CAs. Missing ones are issued.
    let keep: Vec<_> = [ctx.dir.talosconfig(), ctx.dir.kubeconfig()]
        .into_iter()
        .filter_map(|p| std::fs::read(&p).ok().map(|b| (p, b)))
        .collect();
    artifacts::generate(ctx.dir, ctx.profile, ctx.plan, &SecretsSource::Existing)
        .map_err(RebuildError::Secrets)?;
    for (path, bytes) in keep {
        files::write_atomic(&path, &bytes, SECRET_MODE).map_err(|source| RebuildError::Write {
            path: path.display().to_string(),
            cause: source,
        })?;
    }
    let creds = Talosconfig::load(&ctx.dir.talosconfig())?.credentials;
    let state = State::open(ctx.dir, ctx.profile, ctx.plan)?;
    Ok((creds, state))
}

/// The cluster a rebuild acts for: the ID of the directory's secrets bundle.
fn owner(ctx: &Ctx<'_>) -> Result<crate::proxmox::ownership::Owner, RebuildError> {
    crate::cluster_id::owner_making(ctx.dir, &ctx.plan.cluster).map_err(RebuildError::Secrets)
}

/// Refuse unless `vm` carries this cluster's marker for `node`.
async fn ensure_ours(
    ctx: &Ctx<'_>,
    owner: &crate::proxmox::ownership::Owner,
    node: &str,
    vm: &crate::proxmox::inventory::VmResource,
) -> Result<(), RebuildError> {
    let claim = crate::proxmox::provision::claim_of(&ctx.env.pve, owner, vm).await?;
    if owner.proves(&claim, node, vm.vmid) {
        return Ok(());
    }
    Err(RebuildError::NotOurs {
        node: node.to_owned(),
        vmid: vm.vmid,
        host: vm.node.clone(),
        claim: claim.to_string(),
    })
}

/// A node as the plan makes it: the identity a rebuilt VM keeps.
fn identity(n: &NodePlan) -> String {
    let nics: Vec<String> = n
        .nics()
        .map(|nic| format!("{} {} ({})", nic.guest_name, nic.mac, nic.address))
        .collect();
    format!("VM {} on {}: {}", n.vmid, n.host, nics.join(", "))
}

/// Numbered steps for the confirmation question.
pub fn render_steps(title: &str, steps: &[String]) -> String {
    let mut s = format!("{title}\n");
    for (i, step) in steps.iter().enumerate() {
        let _ = writeln!(s, "  {}. {step}", i + 1);
    }
    s
}

/// Pod CIDRs and add-ons (idempotent: only what is missing is created), then every
/// node in `nodes` Ready with its planned pod CIDR.
async fn reconcile_kube(
    ctx: &Ctx<'_>,
    nodes: &[&NodePlan],
    creds: &Credentials,
) -> Result<(), RebuildError> {
    let (env, plan) = (ctx.env, ctx.plan);
    let kc = Kubeconfig::load(&ctx.dir.kubeconfig())?;
    let client = kube::Client::new(&kc, &env.book).await?;
    let mut aopts = addons::Options::new(plan, env.manifests.clone(), env.book.clone());
    aopts.poll = env.kube_poll;
    aopts.webhook_retry = env.webhook_retry;
    ctx.rep.started(None, "addons");
    let r = async {
        aopts.links = crate::up::resolve_links(env, plan, creds).await?;
        addons::install(&client, plan, &ctx.profile.addons, &aopts).await
    }
    .await
    .inspect_err(|e| ctx.rep.failed(None, "addons", e))?;
    ctx.rep.progress(
        None,
        "addons",
        format!(
            "pod CIDRs set on {} node(s); Cilium {}",
            r.pod_cidrs_patched.len(),
            if r.cilium_job_created {
                "re-installed"
            } else {
                "present"
            }
        ),
    );
    ctx.rep.done(None, "addons");
    for n in nodes {
        ctx.rep.started(Some(&n.name), "ready");
        let path = format!("/api/v1/nodes/{}", n.name);
        let want = n.pod_cidr.to_string();
        env.kube_poll
            .watch_object::<_, KubeError, _>(
                &client,
                &path,
                &format!("node {} Ready with pod CIDR {want}", n.name),
                |v| {
                    let Some(v) = v else {
                        return Err("not registered".to_owned());
                    };
                    let cidr = v["spec"]["podCIDR"].as_str().unwrap_or_default();
                    if cidr != want {
                        Err(format!("pod CIDR is `{cidr}`"))
                    } else {
                        kube::node_ready(v)
                    }
                },
            )
            .await
            .inspect_err(|e| ctx.rep.failed(Some(&n.name), "ready", e))?;
        ctx.rep.done(Some(&n.name), "ready");
    }
    Ok(())
}
