//! `rebuild cluster --from BACKUP`: every control plane lost. The VMs come back
//! with their identities, the configs from the same secrets, etcd is recovered from
//! the snapshot on the endpoint node and the other control planes join it; the
//! Kubernetes objects come back with etcd, and only what is missing is reconciled.

use std::path::Path;

use futures_util::future::try_join_all;

use crate::cluster_dir::ClusterDir;
use crate::proxmox::inventory;
use crate::proxmox::provision::{ProvisionOptions, VmAction, provision};
use crate::state::State;
use crate::talos::api::snapshot::validate_snapshot;
use crate::talos::api::{Credentials, Target, TlsMode};
use crate::up::{Progress, UpError, bootstrap_target, configure_node, remove_cidata};

use super::backup::{self, Manifest};
use super::health;
use super::{Ctx, RebuildError, identity, reconcile_kube};

/// Where the etcd data comes from.
#[derive(Clone)]
pub struct Source {
    pub snapshot: Vec<u8>,
    /// A raw `db` copy: recovered without the hash check.
    pub skip_hash_check: bool,
    /// For the plan text.
    pub origin: String,
    pub manifest: Option<Manifest>,
    /// Things the user must know (a raw db may be inconsistent).
    pub warnings: Vec<String>,
}

// By hand: the snapshot holds every Kubernetes Secret; Debug shows its size only.
impl std::fmt::Debug for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Source")
            .field("origin", &self.origin)
            .field("snapshot_bytes", &self.snapshot.len())
            .field("skip_hash_check", &self.skip_hash_check)
            .field("warnings", &self.warnings)
            .finish_non_exhaustive()
    }
}

/// Read `--from`: a backup directory (verified), or a snapshot file; with
/// `skip_hash_check` also a raw etcd `db` copy.
pub fn load_source(from: &Path, skip_hash_check: bool) -> Result<Source, RebuildError> {
    if from.is_dir() {
        let (m, snapshot) = backup::load_snapshot(from)?;
        return Ok(Source {
            origin: format!(
                "backup {} taken {} from {}",
                from.display(),
                m.taken_at,
                m.node
            ),
            snapshot,
            skip_hash_check: false,
            manifest: Some(m),
            warnings: Vec::new(),
        });
    }
    let snapshot = backup::read_snapshot_file(from)?;
    let mut warnings = Vec::new();
    match validate_snapshot(&snapshot) {
        Ok(()) => {}
        Err(_) if skip_hash_check => warnings.push(format!(
            "{} has no valid snapshot hash trailer: recovering from it as a raw etcd db without the integrity check; it may be inconsistent (copied from a running etcd) and lose or corrupt recent writes",
            from.display()
        )),
        Err(source) => {
            return Err(RebuildError::RawSnapshot {
                path: from.display().to_string(),
                cause: source,
            });
        }
    }
    Ok(Source {
        origin: format!("{} ({} bytes)", from.display(), snapshot.len()),
        snapshot,
        skip_hash_check,
        manifest: None,
        warnings,
    })
}

/// Before anything is rendered from the directory's secrets: the backup is of this
/// cluster, the directory holds a bundle (when it does not and `from` is a backup,
/// say exactly how to put the backup's copy in place), and the backup's bundle
/// (decrypted with `identity` when it is encrypted) is the same one.
pub fn check_backup(
    dir: &ClusterDir,
    cluster: &str,
    src: &Source,
    from: &Path,
    identity: Option<&Path>,
) -> Result<(), RebuildError> {
    let secrets = dir.secrets();
    let Some(m) = &src.manifest else {
        return Ok(());
    };
    if m.cluster != cluster {
        return Err(RebuildError::OtherCluster {
            backup: from.display().to_string(),
            found: m.cluster.clone(),
            want: cluster.to_owned(),
        });
    }
    let (s, f) = (secrets.display(), from.display());
    let ours = match std::fs::read(&secrets) {
        Ok(b) => zeroize::Zeroizing::new(b),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let command = match &m.age_recipient {
                Some(_) => format!(
                    "`age -d -i KEYFILE -o {s} {f}/{}` then `chmod 600 {s}`",
                    backup::SECRETS_AGE
                ),
                None => format!("`install -m 600 {f}/{} {s}`", backup::SECRETS),
            };
            return Err(RebuildError::SecretsInBackup {
                secrets: s.to_string(),
                command,
            });
        }
        Err(source) => {
            return Err(RebuildError::Read {
                path: s.to_string(),
                cause: source,
            });
        }
    };
    match backup::plain_secrets(from, m, identity)? {
        Some(theirs) if *theirs != *ours => Err(RebuildError::SecretsMismatch {
            backup: f.to_string(),
            dir: s.to_string(),
        }),
        Some(_) => Ok(()),
        None => {
            tracing::warn!(
                "the backup's secrets bundle is encrypted and no --age-identity was given: not compared with {s}"
            );
            Ok(())
        }
    }
}

/// The decided recovery.
#[derive(Debug, Clone)]
pub struct ClusterJob {
    /// Control planes whose etcd still runs (only with --force): wiped first.
    pub wipe: Vec<String>,
    pub steps: Vec<String>,
}

/// Probe, apply the guards, and decide the steps. Nothing is changed.
pub async fn assess(
    ctx: &Ctx<'_>,
    creds: &Credentials,
    src: &Source,
    force: bool,
) -> Result<ClusterJob, RebuildError> {
    let plan = ctx.plan;
    let h = health::probe(&ctx.env.talos, plan, creds).await;
    if h.cluster_healthy() && !force {
        return Err(RebuildError::Healthy {
            what: format!("cluster {}", plan.cluster),
            health: h.render(),
        });
    }
    let running: Vec<String> = h.etcd_running().into_iter().map(str::to_owned).collect();
    if !running.is_empty() && !force {
        return Err(RebuildError::EtcdStillRunning {
            nodes: running.join(", "),
            health: h.render(),
        });
    }
    let vms = inventory::planned_vms(&ctx.env.pve, plan).await?;
    let owner = super::owner(ctx)?;
    for n in &plan.nodes {
        if let Some(vm) = vms.get(&n.vmid) {
            super::ensure_ours(ctx, &owner, &n.name, vm).await?;
        }
    }
    let boot = bootstrap_target(plan);
    let mut steps = Vec::new();
    if !running.is_empty() {
        steps.push(format!(
            "reset {}: wipe the EPHEMERAL partition (the live etcd data) and reboot",
            running.join(", ")
        ));
    }
    for n in &plan.nodes {
        steps.push(if vms.contains_key(&n.vmid) {
            format!("keep the existing {} ({})", identity(n), n.name)
        } else {
            format!(
                "create {} for {} (same identity as before)",
                identity(n),
                n.name
            )
        });
    }
    steps.push(format!(
        "apply every node's machine config made from the existing secrets bundle {} (not regenerated: the old talosconfig and kubeconfig keep working)",
        ctx.dir.secrets().display()
    ));
    steps.push(format!(
        "wait for etcd `Preparing` on every control plane, upload the snapshot from {} to {} and bootstrap etcd from it{}",
        src.origin,
        boot.node,
        if src.skip_hash_check {
            " (skipping the hash check)"
        } else {
            ""
        }
    ));
    steps.push(
        "wait for the other control planes to join etcd; re-check pod CIDRs and add-ons (creating only what is missing)"
            .into(),
    );
    Ok(ClusterJob {
        wipe: running,
        steps,
    })
}

/// Carry out a decided recovery.
pub async fn run(
    ctx: &Ctx<'_>,
    creds: &Credentials,
    state: &State,
    src: &Source,
    job: &ClusterJob,
) -> Result<(), RebuildError> {
    let (env, plan, rep) = (ctx.env, ctx.plan, ctx.rep);
    for name in &job.wipe {
        if let Some(n) = plan.node(name) {
            rep.started(Some(name), "wipe");
            env.talos
                .wipe_etcd_data(&Target::of(n), creds)
                .await
                .inspect_err(|e| rep.failed(Some(name), "wipe", e))?;
            rep.done(Some(name), "wipe");
        }
    }
    rep.started(None, "provision");
    let report = provision(
        &env.pve,
        &env.factory,
        ctx.profile,
        plan,
        ProvisionOptions {
            recreate: false,
            owner: super::owner(ctx)?,
        },
    )
    .await
    .inspect_err(|e| rep.failed(None, "provision", e))?;
    if let Some(vm) = report.blocked().next() {
        return Err(UpError::NeedsRecreate {
            node: vm.node.clone(),
            differences: vm.differences.join("; "),
        }
        .into());
    }
    for vm in &report.vms {
        let what = if vm.action == VmAction::Created {
            "created"
        } else {
            "kept"
        };
        rep.progress(
            Some(&vm.node),
            "provision",
            format!("VM {}: {what}", vm.vmid),
        );
        rep.done(Some(&vm.node), "provision");
    }
    rep.done(None, "provision");
    let progress = Progress { state, rep };
    try_join_all(plan.nodes.iter().map(|n| async move {
        configure_node(env, ctx.profile, plan, n, ctx.dir, progress, creds).await?;
        remove_cidata(env, ctx.profile, plan, n, progress).await
    }))
    .await?;

    let boot = bootstrap_target(plan);
    rep.started(Some(&boot.node), "recover");
    if etcd_runs(ctx, &boot, creds).await {
        // A re-run after the recovery: never upload over a live etcd.
        rep.progress(
            Some(&boot.node),
            "recover",
            "etcd already runs: recovered before",
        );
    } else {
        let cps: Vec<Target> = plan.control_planes().map(Target::of).collect();
        try_join_all(cps.iter().map(|t| env.talos.wait_etcd_preparing(t, creds)))
            .await
            .inspect_err(|e| rep.failed(Some(&boot.node), "recover", e))?;
        env.talos
            .recover(
                &boot,
                creds,
                &src.snapshot,
                src.skip_hash_check,
                &src.origin,
            )
            .await
            .inspect_err(|e| rep.failed(Some(&boot.node), "recover", e))?;
        rep.progress(
            Some(&boot.node),
            "recover",
            format!("etcd recovered from {}", src.origin),
        );
    }
    rep.done(Some(&boot.node), "recover");
    rep.started(None, "etcd");
    let members: Vec<String> = plan.control_planes().map(|n| n.name.clone()).collect();
    env.talos
        .wait_etcd_members(&boot, creds, &members)
        .await
        .inspect_err(|e| rep.failed(None, "etcd", e))?;
    rep.done(None, "etcd");
    let all: Vec<_> = plan.nodes.iter().collect();
    reconcile_kube(ctx, &all, creds).await
}

/// One quick look: does etcd run on `t` (the recovery already happened)?
async fn etcd_runs(ctx: &Ctx<'_>, t: &Target, creds: &Credentials) -> bool {
    let r = async {
        ctx.env
            .talos
            .client(t, &TlsMode::Mutual(creds.clone()))?
            .service_list()
            .await
    }
    .await;
    r.is_ok_and(|s| s.iter().any(|s| s.id == "etcd" && s.state == "Running"))
}
