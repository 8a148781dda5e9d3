//! The bring-up pipeline: from a lint-clean profile to a working cluster.
//!
//! secrets + configs (while the VMs are created, powered off) → per node,
//! concurrently: its config on a `cidata` volume uploaded through the Proxmox API
//! and attached → VM booted → installed and answering mutual TLS with this
//! cluster's CA → volume removed; as soon as the endpoint node runs: etcd bootstrap
//! → kubeconfig → pod CIDRs → Cilium → MetalLB, while the other control planes join
//! etcd → summary. Steps overlap only where neither needs the other's result. No
//! machine config is ever sent to a network address: whatever answers there must
//! prove it holds our config before anything else talks to it.
//!
//! Every step is idempotent against the real systems (an identical config is not
//! re-applied, a bootstrapped etcd answers AlreadyExists, an up-to-date VM is not
//! written), and each completed step is recorded in the state file at once, so a
//! killed run simply runs again. Each stage has its own readiness gate and deadline
//! (see `talos::api::Stages`, `kube::Poll`).

mod blame;
pub mod bootstrap_guard;
pub mod changes;
pub mod converge;
mod env;
mod status;
mod summary;

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::sync::Arc;

use futures_util::future::{Either, join_all};
use thiserror::Error;
use tokio::sync::watch;

use crate::addons::{self, AddonError};
use crate::artifacts::{self, SecretsSource};
use crate::cluster_dir::ClusterDir;
use crate::files::{self, SECRET_MODE};
use crate::kube::{self, KubeError, Kubeconfig};
use crate::plan::{NodePlan, Plan};
use crate::profile::Profile;
use crate::progress::Reporter;
use crate::proxmox::PveError;
use crate::proxmox::cidata::{self as pve_cidata, Delivery, Retired, Volume};
use crate::proxmox::ownership::Owner;
use crate::proxmox::provision::{
    ProvisionError, ProvisionOptions, Settled, SettledTx, provision, provision_settling,
};
use crate::state::{State, StateError, Step};
use crate::talos::api::{BootstrapOutcome, Credentials, TalosError, Talosconfig, Target};
use crate::talos::cidata;

pub use env::Env;
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
    #[error(
        "{node}: its cidata volume (machine config) on Proxmox: {source}\n  check: the token's Datastore.AllocateTemplate on the ISO storage and VM.Config.CDROM/VM.PowerMgmt on the VM; then run again"
    )]
    Cidata {
        node: String,
        #[source]
        source: Box<PveError>,
    },
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
    #[error(transparent)]
    SecondBootstrap(#[from] bootstrap_guard::SecondBootstrap),
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
    /// Bootstrap etcd even though this cluster was bootstrapped before (its
    /// Kubernetes objects are lost): only after a loud warning.
    pub bootstrap_empty_etcd: bool,
    /// Control planes leaving the profile that etcd still lists (removed after the
    /// bring-up, `converge::shrink`): until then they are expected members.
    pub leaving_members: Vec<String>,
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
    addons::check(plan, &profile.addons).map_err(|cause| UpError::Addons {
        cause: Box::new(cause),
        kubeconfig: dir.kubeconfig().display().to_string(),
    })?;
    // Before anything is created: a bootstrapped cluster whose control planes are
    // all gone is restored from a backup, never bootstrapped again.
    let bootstrapped = bootstrap_guard::evidence(dir, state);
    if let Some(evidence) = &bootstrapped
        && !opts.bootstrap_empty_etcd
    {
        let vms = crate::proxmox::inventory::planned_vms(&env.pve, plan)
            .await
            .map_err(|e| UpError::Provision(Box::new(e.into())))?;
        bootstrap_guard::check(dir, plan, evidence, &vms).inspect_err(|e| {
            rep.failed(None, "bootstrap", e);
        })?;
    }
    let bootstrap_again = bootstrapped.is_none() || opts.bootstrap_empty_etcd;
    // Every VM carries the cluster's ID, so it exists before the first one does.
    let owner = crate::cluster_id::owner_making(dir, &plan.cluster).map_err(UpError::Artifacts)?;
    // Key generation (CPU, up to seconds) overlaps with creating the VMs, which stay
    // powered off: a VM boots only with its config's cidata volume attached. Each
    // node goes on as soon as its own VM exists and the configs do, not once every
    // VM does. A failed prerequisite drops its sender: the nodes waiting stop, and
    // that failure is the one returned.
    let (creds_tx, creds_rx) = watch::channel::<Option<Credentials>>(None);
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
    let secrets = async move {
        secrets.await?;
        let creds = Talosconfig::load(&dir.talosconfig())?.credentials;
        creds_tx.send_replace(Some(creds.clone()));
        Ok::<Credentials, UpError>(creds)
    };
    let settled = Arc::new(watch::channel(Settled::default()).0);
    let ready = Ready {
        creds: creds_rx,
        settled: settled.subscribe(),
        recreate: opts.recreate,
    };
    let provisioned = provision_vms(env, profile, plan, state, rep, opts, owner.clone(), settled);
    // etcd is bootstrapped as soon as its node runs, while the others still install.
    // Every other node runs to its own end (each failure is reported with its node
    // and stage, and its progress recorded for the next run); then the first failure
    // stops the bring-up.
    let boot = bootstrap_target(plan);
    let progress = Progress { state, rep };
    let others = join_all(
        plan.nodes
            .iter()
            .filter(|n| n.name != boot.node)
            .map(|n| async {
                let Some(creds) = ready.of(&n.name).await else {
                    return Ok(());
                };
                configure_node(env, profile, plan, n, dir, progress, &creds).await?;
                remove_cidata(env, profile, plan, n, progress).await
            }),
    );
    // The bootstrap node's volume goes once it runs, beside (and whatever becomes of)
    // the bootstrap: it is nobody's prerequisite.
    let boot_node = plan.node(&boot.node);
    let (installed, runs) = tokio::sync::oneshot::channel::<()>();
    let cleanup = async {
        match (boot_node, runs.await) {
            (Some(n), Ok(())) => remove_cidata(env, profile, plan, n, progress).await,
            _ => Ok(()),
        }
    };
    let cluster = async {
        let Some(creds) = ready.of(&boot.node).await else {
            return Ok(());
        };
        let creds = &creds;
        if let Some(n) = boot_node {
            configure_node(env, profile, plan, n, dir, progress, creds).await?;
            let _ = installed.send(());
        }
        rec.stage(
            Some(&boot.node),
            "bootstrap",
            Step::Bootstrapped,
            || async {
                if !bootstrap_again {
                    // Recorded: its etcd holds data, and the etcd stage below waits
                    // for it. Bootstrap is never called twice for one cluster.
                    return Ok(
                        "already bootstrapped (recorded in the state); not bootstrapped again"
                            .into(),
                    );
                }
                Ok(match env.talos.bootstrap(&boot, creds).await? {
                    BootstrapOutcome::Bootstrapped => "etcd bootstrapped".to_owned(),
                    BootstrapOutcome::AlreadyBootstrapped => "already bootstrapped".to_owned(),
                })
            },
        )
        .await?;
        let members: Vec<String> = plan
            .control_planes()
            .map(|n| n.name.clone())
            .chain(opts.leaving_members.iter().cloned())
            .collect();
        // The other control planes join etcd while the Kubernetes add-ons install: the
        // API needs only the bootstrapped member, so neither waits for the other.
        let etcd = rec.stage(None, "etcd", Step::EtcdHealthy, || async {
            env.talos.wait_etcd_members(&boot, creds, &members).await?;
            Ok(format!("{} members", members.len()))
        });
        let kube = async {
            fetch_kubeconfig(env, dir, state, rep, &boot, creds).await?;
            install_addons(env, profile, plan, dir, state, rep, creds).await
        };
        tokio::try_join!(etcd, kube)?;
        Ok::<(), UpError>(())
    };
    // A failed prerequisite stops the nodes already under way: the cluster would
    // otherwise wait (for a node whose VM never came) until a deadline.
    let prerequisites = std::pin::pin!(async { tokio::join!(secrets, provisioned) });
    let nodes = std::pin::pin!(async { tokio::join!(others, cluster, cleanup) });
    // VMs only `--recreate` fixes (`rebuild`): rebuilt one at a time once the cluster runs.
    let ((creds, rebuild), (others, cluster, cleanup)) =
        match futures_util::future::select(prerequisites, nodes).await {
            Either::Left(((secrets, provisioned), nodes)) => {
                let ready = (secrets?, provisioned?);
                (ready, nodes.await)
            }
            Either::Right((nodes, prerequisites)) => {
                let (secrets, provisioned) = prerequisites.await;
                ((secrets?, provisioned?), nodes)
            }
        };
    others.into_iter().collect::<Result<Vec<()>, _>>()?;
    cluster?;
    cleanup?;
    for n in &rebuild {
        recreate_node(env, profile, plan, n, dir, progress, &creds, &owner).await?;
    }
    rec.mark(Step::Healthy, None)?;
    Ok(Summary::new(profile, plan, dir))
}

/// Every planned VM exists and matches the plan; progress per VM as each settles
/// (published to `settled` for the nodes waiting on it). Returns the nodes whose VMs
/// only a re-create fixes (with `--recreate`; else that is an error), control planes
/// first: none is re-created here, where they would all go at once.
#[allow(clippy::too_many_arguments)]
async fn provision_vms(
    env: &Env,
    profile: &Profile,
    plan: &Plan,
    state: &State,
    rep: &Reporter,
    opts: &Options,
    owner: Owner,
    settled: SettledTx,
) -> Result<Vec<NodePlan>, UpError> {
    let rec = Record { env, state, rep };
    rep.started(None, "provision");
    let mut seen = settled.subscribe();
    let report = provision_settling(
        &env.pve,
        &env.factory,
        profile,
        plan,
        ProvisionOptions {
            recreate: false,
            owner,
        },
        settled,
    );
    // Each VM is recorded as it settles: its node goes on at once.
    let each = async {
        let mut recorded = BTreeSet::new();
        loop {
            let ended = seen.changed().await.is_err();
            let s = seen.borrow_and_update().clone();
            if opts.recreate || s.blocked.is_empty() {
                let new: Vec<(Step, Option<String>)> = s
                    .vms
                    .iter()
                    .filter(|(node, _)| recorded.insert((*node).clone()))
                    .map(|(node, action)| (Step::Vm(node.clone()), Some(action.as_str().into())))
                    .collect();
                if !new.is_empty() {
                    rec.mark_all_aside(new).await?;
                }
            }
            if ended {
                return Ok::<(), UpError>(());
            }
        }
    };
    let (report, each) = tokio::join!(rep.in_row(None, "provision", report), each);
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
    each?;
    if let Some(vm) = report.blocked().next()
        && !opts.recreate
    {
        let e = UpError::NeedsRecreate {
            node: vm.node.clone(),
            differences: vm.differences.join("; "),
        };
        rep.failed(Some(&vm.node), "provision", &e);
        return Err(e);
    }
    for vm in &report.vms {
        let what = vm.action.as_str();
        rep.progress(
            Some(&vm.node),
            "provision",
            format!("VM {} on {}: {what}", vm.vmid, vm.host),
        );
        for note in &vm.notes {
            rep.progress(Some(&vm.node), "provision", format!("note: {note}"));
        }
        rep.done(Some(&vm.node), "provision");
    }
    rep.done(None, "provision");
    let blocked: Vec<&str> = report.blocked().map(|v| v.node.as_str()).collect();
    let mut rebuild: Vec<NodePlan> = plan
        .control_planes()
        .chain(
            plan.nodes
                .iter()
                .filter(|n| n.role != crate::profile::Role::Controlplane),
        )
        .filter(|n| blocked.contains(&n.name.as_str()))
        .cloned()
        .collect();
    rebuild.dedup_by(|a, b| a.name == b.name);
    Ok(rebuild)
}

/// One VM re-created (`--recreate`) while the others run: only when etcd is healthy
/// with every member, then back, installed, and (a control plane) its etcd member
/// rejoined (a same-named stale member is replaced on join) and healthy again, before
/// the caller moves to the next. Never two at a time, so etcd keeps its quorum.
#[allow(clippy::too_many_arguments)]
async fn recreate_node(
    env: &Env,
    profile: &Profile,
    plan: &Plan,
    n: &NodePlan,
    dir: &ClusterDir,
    p: Progress<'_>,
    creds: &Credentials,
    owner: &Owner,
) -> Result<(), UpError> {
    let rec = Record {
        env,
        state: p.state,
        rep: p.rep,
    };
    let boot = bootstrap_target(plan);
    let members: Vec<String> = plan.control_planes().map(|c| c.name.clone()).collect();
    let boot = if boot.node == n.name {
        // Asked through another control plane while this one is rebuilt.
        plan.control_planes()
            .find(|c| c.name != n.name)
            .map(Target::of)
            .unwrap_or(boot)
    } else {
        boot
    };
    env.talos.wait_etcd_members(&boot, creds, &members).await?;
    let one = Plan {
        nodes: vec![n.clone()],
        ..plan.clone()
    };
    rec.stage(
        Some(&n.name),
        "recreate",
        Step::Vm(n.name.clone()),
        || async {
            let report = provision(
                &env.pve,
                &env.factory,
                profile,
                &one,
                ProvisionOptions {
                    recreate: true,
                    owner: owner.clone(),
                },
            )
            .await
            .map_err(|e| UpError::ProvisionOf {
                subject: n.name.clone(),
                cause: Box::new(e),
            })?;
            Ok(report
                .vms
                .first()
                .map_or("re-created", |v| v.action.as_str())
                .to_owned())
        },
    )
    .await?;
    configure_node(env, profile, plan, n, dir, p, creds).await?;
    remove_cidata(env, profile, plan, n, p).await?;
    if n.role == crate::profile::Role::Controlplane {
        rec.stage(None, "etcd", Step::EtcdHealthy, || async {
            env.talos.wait_etcd_members(&boot, creds, &members).await?;
            Ok(format!("{} members, {} rejoined", members.len(), n.name))
        })
        .await?;
    }
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

/// The kernel names of the management and workload links, read from every node
/// (Talos `LinkStatus`) and matched by the plan's MACs: Cilium `devices` and MetalLB
/// `interfaces` take kernel names, and Talos calls `ethN` order unstable.
pub async fn resolve_links(
    env: &Env,
    plan: &Plan,
    creds: &Credentials,
) -> Result<addons::Links, AddonError> {
    let mtls = crate::talos::api::TlsMode::Mutual(creds.clone());
    // Every node at once: each read is a wait of its own (30 nodes in a row cost
    // 30 round trips on the add-ons' path).
    let seen = plan.nodes.iter().map(|n| async {
        let t = Target::of(n);
        // Add-ons start as soon as the API answers, while other nodes (a node added to
        // a running cluster) may still install: wait for each to run its config first.
        let links = async {
            env.talos.wait_installed(&t, creds).await?;
            env.talos.client(&t, &mtls)?.links().await
        }
        .await
        .map_err(|e| AddonError::Links {
            node: n.name.clone(),
            what: format!("reading its links over the Talos API: {e}"),
        })?;
        Ok::<_, AddonError>((n.name.clone(), links))
    });
    let seen = futures_util::future::try_join_all(seen).await?;
    addons::Links::resolve(plan, &seen)
}

/// Pod CIDRs, Cilium, MetalLB through the Kubernetes API.
pub(crate) async fn install_addons(
    env: &Env,
    profile: &Profile,
    plan: &Plan,
    dir: &ClusterDir,
    state: &State,
    rep: &Reporter,
    creds: &Credentials,
) -> Result<(), UpError> {
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
    let r = async {
        aopts.links = resolve_links(env, plan, creds).await?;
        addons::install(&client, plan, &profile.addons, &aopts).await
    };
    let r = rep.in_row(None, "addons", r).await.map_err(|cause| {
        let e = UpError::Addons {
            cause: Box::new(cause),
            kubeconfig: dir.kubeconfig().display().to_string(),
        };
        rep.failed(None, "addons", &e);
        e
    })?;
    let mut done: Vec<(Step, Option<String>)> = plan
        .nodes
        .iter()
        .map(|n| {
            let patched = r.pod_cidrs_patched.contains(&n.name);
            // The CIDR leads the detail: later plans keep it (`converge::keep_pod_cidrs`).
            let detail = format!(
                "{} {}",
                n.pod_cidr,
                if patched { "set" } else { "already set" }
            );
            (Step::PodCidr(n.name.clone()), Some(detail))
        })
        .collect();
    let cilium = if r.cilium_job_created {
        "installed"
    } else {
        "up to date"
    };
    done.push((Step::Cilium, Some(cilium.to_owned())));
    if profile.addons.metallb.is_some() {
        done.push((
            Step::Metallb,
            Some(format!("{} objects", r.metallb_objects)),
        ));
    }
    // Off the thread that drives every node (`mark_aside`).
    Record { env, state, rep }.mark_all_aside(done).await?;
    rep.done(None, "addons");
    Ok(())
}

/// What a node waits for before its cidata stage: its VM as planned and the
/// configs (with the credentials that reach the node).
struct Ready {
    creds: watch::Receiver<Option<Credentials>>,
    settled: watch::Receiver<Settled>,
    recreate: bool,
}

impl Ready {
    /// The credentials once `node` may go on; `None` when a prerequisite failed (its
    /// own stage reports that) or a VM needs `--recreate` that this run does not do.
    async fn of(&self, node: &str) -> Option<Credentials> {
        let s = self
            .settled
            .clone()
            .wait_for(|s| s.vms.contains_key(node))
            .await
            .ok()?
            .clone();
        if !(self.recreate || s.blocked.is_empty()) {
            return None;
        }
        let mut creds = self.creds.clone();
        creds.wait_for(Option::is_some).await.ok()?.clone()
    }
}

/// Where a node's progress goes.
#[derive(Clone, Copy)]
pub struct Progress<'a> {
    pub state: &'a State,
    pub rep: &'a Reporter,
}

/// One node: its config delivered on its `cidata` volume (unless it already runs
/// it) → installed and answering mutual TLS with this cluster's CA. Then
/// `remove_cidata`, which nothing else waits for.
pub async fn configure_node(
    env: &Env,
    profile: &Profile,
    plan: &Plan,
    n: &NodePlan,
    dir: &ClusterDir,
    p: Progress<'_>,
    creds: &Credentials,
) -> Result<(), UpError> {
    let rec = Record {
        env,
        state: p.state,
        rep: p.rep,
    };
    let t = Target::of(n);
    let (vol, instance) = volume(profile, plan, n);
    rec.stage(
        Some(&n.name),
        "cidata",
        Step::Cidata(n.name.clone()),
        || async {
            // Only a machine holding this cluster's config answers mutual TLS with
            // our CA: such a node needs nothing; any other answer is refused here.
            if let Some(version) = env.talos.our_node(&t, creds).await? {
                return Ok(format!("already runs its config ({version})"));
            }
            let path = artifacts::machineconfig_path(dir, &n.name);
            let config = std::fs::read(&path).map_err(|source| UpError::Write {
                path: path.display().to_string(),
                source,
            })?;
            let image = cidata::image(&n.name, &instance, &config).map_err(iso_err)?;
            Ok(
                match pve_cidata::deliver(&env.pve, &vol, &image)
                    .await
                    .map_err(|e| pve_err(n, e))?
                {
                    Delivery::Booted => format!("{} attached, VM booted", vol.volid()),
                    Delivery::AlreadyBooting => {
                        format!("{} attached before, VM booting", vol.volid())
                    }
                },
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

/// A running node's `cidata` volume out of its drive and off the storage (or, when
/// deleting is not allowed, overwritten without key material, with a warning).
pub async fn remove_cidata(
    env: &Env,
    profile: &Profile,
    plan: &Plan,
    n: &NodePlan,
    p: Progress<'_>,
) -> Result<(), UpError> {
    let rec = Record {
        env,
        state: p.state,
        rep: p.rep,
    };
    let (vol, instance) = volume(profile, plan, n);
    rec.stage(
        Some(&n.name),
        "cidata removed",
        Step::CidataRemoved(n.name.clone()),
        || async {
            let scrubbed = cidata::scrubbed(&n.name, &instance).map_err(iso_err)?;
            Ok(
                match pve_cidata::retire(&env.pve, &vol, &scrubbed)
                    .await
                    .map_err(|e| pve_err(n, e))?
                {
                    Retired::Deleted => "detached and deleted".to_owned(),
                    Retired::Gone => "nothing left on Proxmox".to_owned(),
                    Retired::Scrubbed => {
                        tracing::warn!(
                            node = %n.name,
                            volume = %vol.volid(),
                            "the token may not delete volumes (Datastore.Allocate): the cidata volume was overwritten with one without key material; delete it by hand"
                        );
                        format!(
                            "detached; deleting {} was refused (Datastore.Allocate), overwritten without keys",
                            vol.volid()
                        )
                    }
                },
            )
        },
    )
    .await
}

/// A node's volume on Proxmox and the instance id in its `meta-data`.
fn volume(profile: &Profile, plan: &Plan, n: &NodePlan) -> (Volume, String) {
    (
        Volume::of(&plan.cluster, &profile.proxmox.iso_storage, n),
        format!("{}-{}", plan.cluster, n.vmid),
    )
}

fn pve_err(n: &NodePlan, e: PveError) -> UpError {
    UpError::Cidata {
        node: n.name.clone(),
        source: Box::new(e),
    }
}

fn iso_err(e: crate::iso9660::IsoError) -> UpError {
    UpError::Artifacts(anyhow::Error::new(e))
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

    /// `mark` on a blocking thread: its file writes (fsync) would otherwise stall
    /// every node's future (one task drives them all), one node's step after another.
    async fn mark_aside(&self, step: Step, detail: Option<String>) -> Result<(), UpError> {
        self.mark_all_aside(vec![(step, detail)]).await
    }

    /// `mark_aside` for several steps, written at once.
    async fn mark_all_aside(&self, steps: Vec<(Step, Option<String>)>) -> Result<(), UpError> {
        // One at a time, queued without holding a thread: the writes take the state's
        // lock anyway, and a thread each would each keep its own heap (the lab's
        // snapshots are megabytes).
        static ONE_WRITER: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
        let _turn = ONE_WRITER.lock().await;
        let (state, lab) = (self.state.clone(), self.env.lab.clone());
        tokio::task::spawn_blocking(move || {
            state.mark_all(steps)?;
            env::checkpoint(lab.as_ref());
            Ok(())
        })
        .await
        .map_err(|e| UpError::Artifacts(anyhow::anyhow!("recording a step stopped: {e}")))?
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
        match rep.in_row(node, name, f()).await {
            Ok(detail) => {
                self.mark_aside(step, Some(detail.clone())).await?;
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
