//! The bring-up pipeline: from a lint-clean profile to a working cluster.
//!
//! secrets + configs (while the VMs are created and started) → per node,
//! concurrently: maintenance mode → identity check → apply → install; as soon as the
//! endpoint node runs: etcd bootstrap → kubeconfig → pod CIDRs → Cilium → MetalLB,
//! while the other control planes join etcd → summary. Steps overlap only where
//! neither needs the other's result.
//!
//! Every step is idempotent against the real systems (an identical config is not
//! re-applied, a bootstrapped etcd answers AlreadyExists, an up-to-date VM is not
//! written), and each completed step is recorded in the state file at once, so a
//! killed run simply runs again. Each stage has its own readiness gate and deadline
//! (see `talos::api::Stages`, `kube::Poll`).

mod env;
mod identity;
mod summary;

use std::net::IpAddr;

use futures_util::future::try_join_all;
use thiserror::Error;

use crate::addons::{self, AddonError};
use crate::artifacts::{self, SecretsSource};
use crate::cluster_dir::ClusterDir;
use crate::files::{self, SECRET_MODE};
use crate::kube::{self, KubeError, Kubeconfig};
use crate::plan::{NodePlan, Plan};
use crate::profile::Profile;
use crate::progress::Reporter;
use crate::proxmox::provision::{ProvisionError, ProvisionOptions, VmAction, provision};
use crate::state::{State, StateError, Step};
use crate::talos::api::{
    ApplyOutcome, BootstrapOutcome, Credentials, TalosError, Talosconfig, Target,
};

pub use env::Env;
pub use identity::ProxmoxIdentity;
pub use summary::Summary;

#[derive(Debug, Error)]
pub enum UpError {
    #[error("{0:#}")]
    Artifacts(anyhow::Error),
    #[error(transparent)]
    Provision(#[from] ProvisionError),
    #[error(
        "VM of {node} differs from the plan in ways that need re-creating it: {differences}\n  fix: re-run with --recreate (the VM is deleted and created again), or change the profile to match"
    )]
    NeedsRecreate { node: String, differences: String },
    #[error(transparent)]
    Talos(#[from] TalosError),
    #[error(transparent)]
    Kube(#[from] KubeError),
    #[error(transparent)]
    Addons(#[from] AddonError),
    #[error(transparent)]
    State(#[from] StateError),
    #[error("writing {path}: {source}")]
    Write {
        path: String,
        source: std::io::Error,
    },
}

#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Delete and re-create VMs whose differences cannot be fixed in place.
    pub recreate: bool,
}

/// The whole bring-up. Assumes lint passed and the user confirmed.
pub async fn bring_up(
    env: &Env,
    profile: &Profile,
    plan: &Plan,
    dir: &ClusterDir,
    state: &State,
    rep: &Reporter,
    opts: &Options,
) -> Result<Summary, UpError> {
    // Key generation (CPU, up to seconds) overlaps with creating and booting the VMs:
    // the configs are needed only once the nodes reach maintenance mode.
    let secrets = stage(rep, state, None, "secrets", Step::Secrets, || async {
        let (dir, profile, plan) = (dir.clone(), profile.clone(), plan.clone());
        let g = tokio::task::spawn_blocking(move || {
            artifacts::generate(&dir, &profile, &plan, &SecretsSource::Existing)
        })
        .await
        .map_err(|e| UpError::Artifacts(anyhow::anyhow!("secrets generation stopped: {e}")))?
        .map_err(UpError::Artifacts)?;
        state.mark_done(
            Step::Configs,
            Some(&format!("Talos 1.{} contract", g.contract.minor())),
        )?;
        Ok(g.origin.as_str().to_owned())
    });
    let (secrets, provisioned) =
        tokio::join!(secrets, provision_vms(env, profile, plan, state, rep, opts));
    secrets?;
    provisioned?;
    let creds = Talosconfig::load(&dir.talosconfig())?.credentials;

    let identity = ProxmoxIdentity {
        pve: &env.pve,
        plan,
    };
    // etcd is bootstrapped as soon as its node runs, while the others still install.
    let boot = bootstrap_target(plan);
    let others = try_join_all(
        plan.nodes
            .iter()
            .filter(|n| n.name != boot.node)
            .map(|n| configure_node(env, n, dir, state, rep, &creds, &identity)),
    );
    let cluster = async {
        if let Some(n) = plan.node(&boot.node) {
            configure_node(env, n, dir, state, rep, &creds, &identity).await?;
        }
        stage(
            rep,
            state,
            Some(&boot.node),
            "bootstrap",
            Step::Bootstrapped,
            || async {
                Ok(match env.talos.bootstrap(&boot, &creds).await? {
                    BootstrapOutcome::Bootstrapped => "etcd bootstrapped".to_owned(),
                    BootstrapOutcome::AlreadyBootstrapped => "already bootstrapped".to_owned(),
                })
            },
        )
        .await?;
        let members: Vec<String> = plan.control_planes().map(|n| n.name.clone()).collect();
        // The other control planes join etcd while the Kubernetes add-ons install: the
        // API needs only the bootstrapped member, so neither waits for the other.
        let etcd = stage(rep, state, None, "etcd", Step::EtcdHealthy, || async {
            env.talos.wait_etcd_members(&boot, &creds, &members).await?;
            Ok(format!("{} members", members.len()))
        });
        let kube = async {
            stage(
                rep,
                state,
                Some(&boot.node),
                "kubeconfig",
                Step::Kubeconfig,
                || async {
                    let local = std::fs::read(dir.kubeconfig()).ok();
                    let fetched = env
                        .talos
                        .fetch_kubeconfig(&boot, &creds, local.as_deref())
                        .await?;
                    // The node's kubeconfig is the cluster's word; keep it.
                    files::write_atomic(&dir.kubeconfig(), &fetched.bytes, SECRET_MODE).map_err(
                        |source| UpError::Write {
                            path: dir.kubeconfig().display().to_string(),
                            source,
                        },
                    )?;
                    Ok(if fetched.differences.is_empty() {
                        "matches the generated one".into()
                    } else {
                        format!("kept the node's ({})", fetched.differences.join("; "))
                    })
                },
            )
            .await?;

            let kc = Kubeconfig::load(&dir.kubeconfig())?;
            let client = kube::Client::new(&kc, &env.book).await?;
            let mut aopts = addons::Options::new(plan, env.manifests.clone(), env.book.clone());
            aopts.poll = env.kube_poll;
            aopts.webhook_retry = env.webhook_retry;
            rep.started(None, "addons");
            let r = addons::install(&client, plan, &profile.addons, &aopts).await;
            let r = r.inspect_err(|e| rep.failed(None, "addons", e))?;
            for n in &plan.nodes {
                let patched = r.pod_cidrs_patched.contains(&n.name);
                state.mark_done(
                    Step::PodCidr(n.name.clone()),
                    Some(if patched { "set" } else { "already set" }),
                )?;
            }
            state.mark_done(
                Step::Cilium,
                Some(if r.cilium_job_created {
                    "installed"
                } else {
                    "up to date"
                }),
            )?;
            if profile.addons.metallb.is_some() {
                state.mark_done(
                    Step::Metallb,
                    Some(&format!("{} objects", r.metallb_objects)),
                )?;
            }
            rep.done(None, "addons");
            Ok::<(), UpError>(())
        };
        tokio::try_join!(etcd, kube)?;
        Ok::<(), UpError>(())
    };
    tokio::try_join!(others, cluster)?;
    state.mark_done(Step::Healthy, None)?;
    Ok(Summary::new(profile, plan, dir))
}

/// Every planned VM exists, matches the plan and runs; progress per VM.
async fn provision_vms(
    env: &Env,
    profile: &Profile,
    plan: &Plan,
    state: &State,
    rep: &Reporter,
    opts: &Options,
) -> Result<(), UpError> {
    rep.started(None, "provision");
    let report = provision(
        &env.pve,
        &env.factory,
        profile,
        plan,
        ProvisionOptions {
            recreate: opts.recreate,
        },
    )
    .await;
    let report = report.inspect_err(|e| rep.failed(None, "provision", e))?;
    if let Some(vm) = report.blocked().next() {
        let e = UpError::NeedsRecreate {
            node: vm.node.clone(),
            differences: vm.differences.join("; "),
        };
        rep.failed(Some(&vm.node), "provision", &e);
        return Err(e);
    }
    for vm in &report.vms {
        let what = match vm.action {
            VmAction::Created => "created",
            VmAction::Recreated => "re-created",
            VmAction::UpToDate => "up to date",
            VmAction::Updated => "updated",
            VmAction::NeedsRecreate => "needs --recreate",
        };
        state.mark_done(Step::Vm(vm.node.clone()), Some(what))?;
        rep.progress(
            Some(&vm.node),
            "provision",
            format!("VM {} on {}: {what}", vm.vmid, vm.host),
        );
    }
    rep.done(None, "provision");
    Ok(())
}

/// One node: maintenance mode (or already configured) → apply → installed and answering mTLS.
async fn configure_node(
    env: &Env,
    n: &NodePlan,
    dir: &ClusterDir,
    state: &State,
    rep: &Reporter,
    creds: &Credentials,
    identity: &ProxmoxIdentity<'_>,
) -> Result<(), UpError> {
    let t = Target::new(n.name.clone(), IpAddr::V4(n.management.address.addr()));
    let path = artifacts::machineconfig_path(dir, &n.name);
    let config = std::fs::read(&path).map_err(|source| UpError::Write {
        path: path.display().to_string(),
        source,
    })?;
    stage(
        rep,
        state,
        Some(&n.name),
        "maintenance",
        Step::Maintenance(n.name.clone()),
        || async { Ok(format!("{:?}", env.talos.wait_maintenance(&t).await?).to_lowercase()) },
    )
    .await?;
    stage(
        rep,
        state,
        Some(&n.name),
        "apply",
        Step::Applied(n.name.clone()),
        || async {
            Ok(
                match env.talos.apply_config(&t, &config, identity, creds).await? {
                    ApplyOutcome::Applied => "applied",
                    ApplyOutcome::Unchanged => "unchanged",
                    ApplyOutcome::Updated => "updated",
                }
                .to_owned(),
            )
        },
    )
    .await?;
    stage(
        rep,
        state,
        Some(&n.name),
        "install",
        Step::Installed(n.name.clone()),
        || async {
            Ok(format!(
                "running {}",
                env.talos.wait_installed(&t, creds).await?
            ))
        },
    )
    .await
}

/// Run one stage with progress events, recording it in the state file when done.
async fn stage<F, Fut>(
    rep: &Reporter,
    state: &State,
    node: Option<&str>,
    name: &'static str,
    step: Step,
    f: F,
) -> Result<(), UpError>
where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = Result<String, UpError>>,
{
    rep.started(node, name);
    match f().await {
        Ok(detail) => {
            state.mark_done(step, Some(&detail))?;
            rep.progress(node, name, &detail);
            rep.done(node, name);
            Ok(())
        }
        Err(e) => {
            rep.failed(node, name, &e);
            Err(e)
        }
    }
}

/// etcd is bootstrapped on the control plane the endpoint names.
pub fn bootstrap_target(plan: &Plan) -> Target {
    let n = plan
        .node(&plan.bootstrap_node)
        .or_else(|| plan.control_planes().next())
        .expect("lint guarantees a control plane");
    Target::new(n.name.clone(), IpAddr::V4(n.management.address.addr()))
}
