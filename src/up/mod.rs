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

mod blame;
mod env;
mod identity;
mod status;
mod summary;

use std::net::IpAddr;

use futures_util::future::join_all;
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
pub use status::{Status, status};
pub use summary::{LabHints, Summary, cluster_args};

#[derive(Debug, Error)]
pub enum UpError {
    #[error("{0:#}")]
    Artifacts(anyhow::Error),
    #[error(transparent)]
    Provision(Box<ProvisionError>),
    #[error(
        "provision of {subject}: {cause}\n  check: the task log of that Proxmox host (node → Task History) and its storage; then run again: VMs already made are adopted, not made twice"
    )]
    ProvisionOf {
        subject: String,
        /// Not `#[source]`: the message already carries it (no repeat in chains).
        cause: Box<ProvisionError>,
    },
    #[error(
        "VM of {node} differs from the plan in ways that need re-creating it: {differences}\n  fix: re-run with --recreate (the VM is deleted and created again), or change the profile to match"
    )]
    NeedsRecreate { node: String, differences: String },
    #[error(transparent)]
    Talos(#[from] TalosError),
    #[error(transparent)]
    Kube(#[from] KubeError),
    #[error("addons: {cause}{}", remedy(&cause.to_string(), kubeconfig))]
    Addons {
        cause: Box<AddonError>,
        kubeconfig: String,
    },
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
    let rec = Record { env, state, rep };
    // Key generation (CPU, up to seconds) overlaps with creating and booting the VMs:
    // the configs are needed only once the nodes reach maintenance mode.
    let secrets = rec.stage(None, "secrets", Step::Secrets, || async {
        let (dir, profile, plan) = (dir.clone(), profile.clone(), plan.clone());
        let g = tokio::task::spawn_blocking(move || {
            artifacts::generate(&dir, &profile, &plan, &SecretsSource::Existing)
        })
        .await
        .map_err(|e| UpError::Artifacts(anyhow::anyhow!("secrets generation stopped: {e}")))?
        .map_err(UpError::Artifacts)?;
        rec.mark(
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
    // Every other node runs to its own end (each failure is reported with its node
    // and stage, and its progress recorded for the next run); then the first failure
    // stops the bring-up.
    let boot = bootstrap_target(plan);
    let others = join_all(
        plan.nodes
            .iter()
            .filter(|n| n.name != boot.node)
            .map(|n| configure_node(env, n, dir, state, rep, &creds, &identity)),
    );
    let cluster = async {
        if let Some(n) = plan.node(&boot.node) {
            configure_node(env, n, dir, state, rep, &creds, &identity).await?;
        }
        rec.stage(
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
        let etcd = rec.stage(None, "etcd", Step::EtcdHealthy, || async {
            env.talos.wait_etcd_members(&boot, &creds, &members).await?;
            Ok(format!("{} members", members.len()))
        });
        let kube = async {
            fetch_kubeconfig(env, dir, state, rep, &boot, &creds).await?;
            install_addons(env, profile, plan, dir, state, rep).await
        };
        tokio::try_join!(etcd, kube)?;
        Ok::<(), UpError>(())
    };
    let (others, cluster) = tokio::join!(others, cluster);
    others.into_iter().collect::<Result<Vec<()>, _>>()?;
    cluster?;
    rec.mark(Step::Healthy, None)?;
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
    let rec = Record { env, state, rep };
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
    let report = report.map_err(|source| {
        let e = match blame::subject(plan, &source) {
            Some(subject) => UpError::ProvisionOf {
                subject,
                cause: Box::new(source),
            },
            None => UpError::Provision(Box::new(source)),
        };
        rep.failed(None, "provision", &e);
        e
    })?;
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
        rec.mark(Step::Vm(vm.node.clone()), Some(what))?;
        rep.progress(
            Some(&vm.node),
            "provision",
            format!("VM {} on {}: {what}", vm.vmid, vm.host),
        );
    }
    rep.done(None, "provision");
    Ok(())
}

/// The node's kubeconfig replaces the generated one: it is the cluster's word.
async fn fetch_kubeconfig(
    env: &Env,
    dir: &ClusterDir,
    state: &State,
    rep: &Reporter,
    boot: &Target,
    creds: &Credentials,
) -> Result<(), UpError> {
    let rec = Record { env, state, rep };
    rec.stage(Some(&boot.node), "kubeconfig", Step::Kubeconfig, || async {
        let local = std::fs::read(dir.kubeconfig()).ok();
        let fetched = env
            .talos
            .fetch_kubeconfig(boot, creds, local.as_deref())
            .await?;
        files::write_atomic(&dir.kubeconfig(), &fetched.bytes, SECRET_MODE).map_err(|source| {
            UpError::Write {
                path: dir.kubeconfig().display().to_string(),
                source,
            }
        })?;
        Ok(if fetched.differences.is_empty() {
            "matches the generated one".into()
        } else {
            format!("kept the node's ({})", fetched.differences.join("; "))
        })
    })
    .await
}

/// Pod CIDRs, Cilium, MetalLB through the Kubernetes API.
async fn install_addons(
    env: &Env,
    profile: &Profile,
    plan: &Plan,
    dir: &ClusterDir,
    state: &State,
    rep: &Reporter,
) -> Result<(), UpError> {
    let rec = Record { env, state, rep };
    rep.started(None, "addons");
    let client = async {
        let kc = Kubeconfig::load(&dir.kubeconfig())?;
        kube::Client::new(&kc, &env.book).await
    };
    let client = client.await.map_err(|e| {
        let e = UpError::Kube(e);
        rep.failed(None, "addons", &e);
        e
    })?;
    let mut aopts = addons::Options::new(plan, env.manifests.clone(), env.book.clone());
    aopts.poll = env.kube_poll;
    aopts.webhook_retry = env.webhook_retry;
    let r = addons::install(&client, plan, &profile.addons, &aopts).await;
    let r = r.map_err(|cause| {
        let e = UpError::Addons {
            cause: Box::new(cause),
            kubeconfig: dir.kubeconfig().display().to_string(),
        };
        rep.failed(None, "addons", &e);
        e
    })?;
    for n in &plan.nodes {
        let patched = r.pod_cidrs_patched.contains(&n.name);
        rec.mark(
            Step::PodCidr(n.name.clone()),
            Some(if patched { "set" } else { "already set" }),
        )?;
    }
    rec.mark(
        Step::Cilium,
        Some(if r.cilium_job_created {
            "installed"
        } else {
            "up to date"
        }),
    )?;
    if profile.addons.metallb.is_some() {
        rec.mark(
            Step::Metallb,
            Some(&format!("{} objects", r.metallb_objects)),
        )?;
    }
    rep.done(None, "addons");
    Ok(())
}

/// One node: maintenance mode (or already configured) → apply → installed and answering mTLS.
pub async fn configure_node(
    env: &Env,
    n: &NodePlan,
    dir: &ClusterDir,
    state: &State,
    rep: &Reporter,
    creds: &Credentials,
    identity: &ProxmoxIdentity<'_>,
) -> Result<(), UpError> {
    let rec = Record { env, state, rep };
    let t = Target::new(n.name.clone(), IpAddr::V4(n.management.address.addr()));
    let path = artifacts::machineconfig_path(dir, &n.name);
    let config = std::fs::read(&path).map_err(|source| UpError::Write {
        path: path.display().to_string(),
        source,
    })?;
    rec.stage(
        Some(&n.name),
        "maintenance",
        Step::Maintenance(n.name.clone()),
        || async { Ok(format!("{:?}", env.talos.wait_maintenance(&t).await?).to_lowercase()) },
    )
    .await?;
    rec.stage(
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
    rec.stage(
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

/// The generic next step for an add-on failure that does not name its own.
fn remedy(message: &str, kubeconfig: &str) -> String {
    if message.contains("\n  fix:") || message.contains("\n  check:") {
        return String::new();
    }
    format!(
        "\n  check: `kubectl --kubeconfig {kubeconfig} get crd,pods -A` for what is not ready; then run again: what was applied stays applied"
    )
}

/// Where progress goes: the state file (then a lab checkpoint) and the reporter.
#[derive(Clone, Copy)]
struct Record<'a> {
    env: &'a Env,
    state: &'a State,
    rep: &'a Reporter,
}

impl Record<'_> {
    /// Record `step` in the state file, then let the lab save its hosts to match.
    fn mark(&self, step: Step, detail: Option<&str>) -> Result<(), UpError> {
        self.state.mark_done(step, detail)?;
        self.env.checkpoint();
        Ok(())
    }

    /// Run one stage with progress events, recording it in the state file when done.
    async fn stage<F, Fut>(
        &self,
        node: Option<&str>,
        name: &'static str,
        step: Step,
        f: F,
    ) -> Result<(), UpError>
    where
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = Result<String, UpError>>,
    {
        let rep = self.rep;
        rep.started(node, name);
        match f().await {
            Ok(detail) => {
                self.mark(step, Some(&detail))?;
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
}

/// etcd is bootstrapped on the control plane the endpoint names.
pub fn bootstrap_target(plan: &Plan) -> Target {
    let n = plan
        .node(&plan.bootstrap_node)
        .or_else(|| plan.control_planes().next())
        .expect("lint guarantees a control plane");
    Target::new(n.name.clone(), IpAddr::V4(n.management.address.addr()))
}
