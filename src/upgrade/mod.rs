//! `talos-pve upgrade`: move a running cluster to the Talos and Kubernetes releases
//! the profile names (talos-day2.md). The decision is pure (`plan`); this shell reads
//! the running versions, then acts one node at a time:
//!
//! - Talos OS with the Image Factory installer of the profile's schematic (extensions
//!   survive): on 1.13 nodes `ImageService/Pull` + `LifecycleService/Upgrade`, then a
//!   client cordon, drain (`kube::drain`) and `Reboot` (that API checks no etcd,
//!   drains nothing, reboots nothing); on 1.12 nodes the legacy `MachineService/Upgrade`. Control planes one at
//!   a time with etcd checked by talos-pve before and after; then workers. After each
//!   reboot the boot id must have changed and `Version` must report the target.
//! - Kubernetes as `talosctl upgrade-k8s` does it: the node's whole machine config
//!   (re-rendered from the profile, same secrets) applied with NO_REBOOT, control
//!   planes first, then wait for the kubelet's version and Ready.
//! - Add-ons: the `up` install path again (idempotent).
//!
//! Resumable: decisions come from what the nodes run now, so a run stopped by a
//! failure simply runs again; finished nodes are recorded in the state file.

mod plan;

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;

use thiserror::Error;

pub use plan::{PlanError, Running, Step as NodeStep, UpgradePlan, decide};

use crate::artifacts;
use crate::cluster_dir::ClusterDir;
use crate::files::{self, SECRET_MODE};
use crate::kube::{self, KubeError, Kubeconfig, drain, node_ready};
use crate::plan::{NodePlan, Plan};
use crate::profile::{Profile, Role};
use crate::progress::Reporter;
use crate::state::{State, StateError, Step};
use crate::talos::api::messages::ApplyMode;
use crate::talos::api::{Credentials, TalosClient, TalosError, Talosconfig, Target, TlsMode};
use crate::talos::compat::Version;
use crate::talos::config::{self as tc, Contract};
use crate::up::{Env, UpError};

#[derive(Debug, Error)]
pub enum UpgradeError {
    #[error(transparent)]
    Plan(#[from] PlanError),
    #[error(
        "etcd is not healthy {when}: {detail}\n  fix: `talos-pve status` shows the members; wait until every control plane runs as a started etcd member, then run the same command (`talos-pve upgrade` or `up`) again (no node is touched while etcd is unhealthy)"
    )]
    Etcd { when: String, detail: String },
    #[error(
        "{node}: the OS upgrade to {target} failed: {detail}; the node runs {running}. No other node was touched after it, so etcd keeps its quorum\n  fix: read the node's console (or `talosctl -n {node} dmesg`) for the installer's error, then run `talos-pve upgrade` again: nodes already upgraded are skipped"
    )]
    NotUpgraded {
        node: String,
        target: String,
        running: String,
        detail: String,
    },
    #[error(
        "{cause}\n  fix: check {node}'s console and `talos-pve status`, then run the same command (`talos-pve upgrade` or `up`) again: finished nodes are skipped"
    )]
    Stalled { node: String, cause: KubeError },
    #[error(
        "Node {node} is not Ready ({detail}), so {next} is not rebooted: a rolling reboot takes one node down only while all others run\n  fix: `kubectl describe node {node}`; once it is Ready, run the same command again (nodes already done are not rebooted again)"
    )]
    NotReady {
        node: String,
        next: String,
        detail: String,
    },
    #[error(transparent)]
    Talos(#[from] TalosError),
    #[error(transparent)]
    Kube(#[from] KubeError),
    #[error(transparent)]
    State(#[from] StateError),
    #[error(transparent)]
    Up(Box<UpError>),
    #[error(transparent)]
    Pve(Box<crate::proxmox::PveError>),
    #[error("{0:#}")]
    Artifacts(anyhow::Error),
}

/// How a rolling reboot restarts a node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Restart<'a> {
    /// Talos `Reboot`: enough for a staged machine config.
    Talos,
    /// The Proxmox VM (on this host) shut down and started: applies pending
    /// hardware changes too.
    Vm(&'a str),
}

/// Longest wait for the Kubernetes API to answer at the start of a command.
const API_WAIT: std::time::Duration = std::time::Duration::from_secs(60);

/// The cluster's clients: Talos with the directory's talosconfig, Kubernetes with its kubeconfig.
pub struct Clients {
    creds: Credentials,
    kube: kube::Client,
}

impl Clients {
    pub async fn open(env: &Env, dir: &ClusterDir) -> Result<Self, UpgradeError> {
        let creds = Talosconfig::load(&dir.talosconfig())?.credentials;
        let kc = Kubeconfig::load(&dir.kubeconfig())?;
        // The API may be coming back (a restarted API server, a lab just reopened):
        // a short wait, not a fifteen-minute one.
        let poll = kube::Poll {
            timeout: env.kube_poll.timeout.min(API_WAIT),
            ..env.kube_poll
        };
        let kube = poll
            .until("the Kubernetes API", || async {
                Ok(kube::Client::new(&kc, &env.book)
                    .await
                    .map_err(|e| e.to_string()))
            })
            .await?;
        Ok(Self { creds, kube })
    }

    pub fn kube(&self) -> &kube::Client {
        &self.kube
    }

    pub fn credentials(&self) -> &Credentials {
        &self.creds
    }

    pub(crate) fn talos(&self, env: &Env, n: &NodePlan) -> Result<TalosClient, TalosError> {
        env.talos
            .client(&Target::of(n), &TlsMode::Mutual(self.creds.clone()))
    }
}

fn node_path(name: &str) -> String {
    format!("/api/v1/nodes/{name}")
}

/// What every node runs now; a node that does not answer is reported, not fatal.
pub async fn observe(env: &Env, plan: &Plan, c: &Clients) -> Vec<Running> {
    let nodes = c.kube.list("/api/v1/nodes").await;
    let kubelet = |name: &str| -> Result<String, String> {
        let nodes = nodes.as_ref().map_err(|e| first_line(&e.to_string()))?;
        let n = nodes
            .iter()
            .find(|n| n["metadata"]["name"] == name)
            .ok_or("no Node object in Kubernetes")?;
        n["status"]["nodeInfo"]["kubeletVersion"]
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| "the Node reports no kubeletVersion".into())
    };
    let talos = plan.nodes.iter().map(|n| async move {
        let mut client = c.talos(env, n).map_err(|e| e.to_string())?;
        let v = client
            .version()
            .await
            .map_err(|e| first_line(&e.to_string()))?;
        v.first()
            .and_then(|v| v.version.as_ref())
            .map(|i| i.tag.clone())
            .ok_or_else(|| "Version carried no tag".to_owned())
    });
    let talos = futures_util::future::join_all(talos).await;
    plan.nodes
        .iter()
        .zip(talos)
        .map(|(n, talos)| Running {
            node: n.name.clone(),
            control_plane: n.role == Role::Controlplane,
            talos,
            kubelet: kubelet(&n.name),
        })
        .collect()
}

/// What applying a node's config did.
enum Applied {
    Unchanged,
    NoReboot,
}

impl Applied {
    fn describe(&self) -> &'static str {
        match self {
            Applied::Unchanged => "config unchanged",
            Applied::NoReboot => "config applied (no reboot)",
        }
    }
}

/// Whether the node already runs `config`: a dry-run apply, whose `mode_details`
/// end with Talos' "No changes." then.
async fn unchanged(c: &mut TalosClient, config: &[u8]) -> Result<bool, UpgradeError> {
    let dry = c
        .apply_configuration(config, ApplyMode::NoReboot, true)
        .await?;
    Ok(dry.mode_details.trim_end().ends_with("No changes."))
}

fn first_line(s: &str) -> String {
    s.lines().next().unwrap_or_default().to_owned()
}

/// Everything `execute` needs.
pub struct Upgrade<'a> {
    pub env: &'a Env,
    pub profile: &'a Profile,
    pub plan: &'a Plan,
    pub dir: &'a ClusterDir,
    pub state: &'a State,
    pub rep: &'a Reporter,
    pub clients: &'a Clients,
}

impl Upgrade<'_> {
    /// Carry out `u`: OS, then Kubernetes and configs, then add-ons. Stops at the
    /// first failure, with the node and what to do.
    pub async fn execute(&self, u: &UpgradePlan) -> Result<(), UpgradeError> {
        let configs = self.configs()?;
        let config = |n: &NodePlan| configs[&n.name].as_bytes();
        // With no kubelet to move, a node's config follows its OS right after its
        // reboot: it needs nothing from the other nodes, and the rolling part does
        // not get a second pass over every node.
        let follow = u.kubernetes_steps.is_empty();
        for s in &u.talos_steps {
            let n = self.node(&s.node);
            self.stage(
                &s.node,
                "talos-upgrade",
                Step::TalosUpgraded(s.node.clone()),
                || self.os(s, &u.installer, follow.then(|| config(n))),
            )
            .await?;
        }
        let kubelet = format!("v{}", u.kubernetes);
        let mut order: Vec<&NodePlan> = self.plan.control_planes().collect();
        order.extend(
            self.plan
                .nodes
                .iter()
                .filter(|n| n.role != Role::Controlplane),
        );
        // Nodes already at the profile's config and kubelet (asked of all at once)
        // are recorded together; only the others go one at a time.
        // Nodes whose config followed their OS above need no second look.
        let followed: BTreeSet<String> = match follow {
            true => u.talos_steps.iter().map(|s| s.node.clone()).collect(),
            false => BTreeSet::new(),
        };
        let rest: Vec<&NodePlan> = order
            .iter()
            .copied()
            .filter(|n| !followed.contains(&n.name))
            .collect();
        let mut settled = self.settled(&rest, &configs, &kubelet).await?;
        let mut done = Vec::new();
        for n in order.iter().filter(|n| settled.contains(&n.name)) {
            self.keep_local_copy(n, config(n))?;
            let detail = format!("config unchanged; kubelet {kubelet}");
            self.rep
                .progress(Some(&n.name), "kubernetes-upgrade", &detail);
            done.push((Step::KubernetesUpgraded(n.name.clone()), Some(detail)));
        }
        for n in &followed {
            let detail = format!("config applied with its OS upgrade; kubelet {kubelet}");
            self.rep.progress(Some(n), "kubernetes-upgrade", &detail);
            done.push((Step::KubernetesUpgraded(n.clone()), Some(detail)));
        }
        settled.extend(followed);
        if !done.is_empty() {
            self.state.mark_all(done)?;
            self.env.checkpoint();
        }
        for n in order.into_iter().filter(|n| !settled.contains(&n.name)) {
            self.stage(
                &n.name,
                "kubernetes-upgrade",
                Step::KubernetesUpgraded(n.name.clone()),
                || self.kubernetes(n, config(n), &kubelet),
            )
            .await?;
        }
        crate::up::install_addons(
            self.env,
            self.profile,
            self.plan,
            self.dir,
            self.state,
            self.rep,
            self.clients.credentials(),
        )
        .await
        .map_err(|e| UpgradeError::Up(Box::new(e)))
    }

    /// Every node's machine config re-rendered from the profile (same secrets).
    fn configs(&self) -> Result<BTreeMap<String, String>, UpgradeError> {
        let secrets = artifacts::existing_secrets(self.dir).map_err(UpgradeError::Artifacts)?;
        let contract = Contract::from_talos_version(&self.profile.talos.version)
            .map_err(|e| UpgradeError::Artifacts(anyhow::anyhow!(e)))?;
        Ok(self
            .plan
            .nodes
            .iter()
            .map(|n| {
                let c = tc::render_node(self.profile, self.plan, n, &secrets, contract);
                (n.name.clone(), c)
            })
            .collect())
    }

    /// The nodes whose config needs no change (a dry-run apply says so) and whose
    /// Node is Ready with `kubelet`: every node asked at once, all read-only.
    async fn settled(
        &self,
        nodes: &[&NodePlan],
        configs: &BTreeMap<String, String>,
        kubelet: &str,
    ) -> Result<BTreeSet<String>, UpgradeError> {
        if nodes.is_empty() {
            return Ok(BTreeSet::new());
        }
        let listed = self.clients.kube.list("/api/v1/nodes").await?;
        let dry_runs = nodes.iter().map(|n| async move {
            let mut c = self.clients.talos(self.env, n)?;
            unchanged(&mut c, configs[&n.name].as_bytes()).await
        });
        let dry_runs = futures_util::future::join_all(dry_runs).await;
        let mut settled = BTreeSet::new();
        for (n, dry) in nodes.iter().zip(dry_runs) {
            let node = listed.iter().find(|o| o["metadata"]["name"] == n.name);
            let at_kubelet = node.is_some_and(|o| {
                o["status"]["nodeInfo"]["kubeletVersion"] == kubelet && node_ready(o).is_ok()
            });
            // A node that does not answer is not settled: its own step says why, in
            // the rolling order.
            if matches!(dry, Ok(true)) && at_kubelet {
                settled.insert(n.name.clone());
            }
        }
        Ok(settled)
    }

    /// The node's config applied without a reboot when it differs, and kept as the
    /// local copy.
    async fn apply_config(&self, n: &NodePlan, config: &[u8]) -> Result<Applied, UpgradeError> {
        let mut c = self.clients.talos(self.env, n)?;
        let applied = if unchanged(&mut c, config).await? {
            Applied::Unchanged
        } else {
            c.apply_configuration(config, ApplyMode::NoReboot, false)
                .await?;
            Applied::NoReboot
        };
        self.keep_local_copy(n, config)?;
        Ok(applied)
    }

    /// The local copy follows what the node runs (written only when it differs).
    fn keep_local_copy(&self, n: &NodePlan, config: &[u8]) -> Result<(), UpgradeError> {
        let path = artifacts::machineconfig_path(self.dir, &n.name);
        if std::fs::read(&path).is_ok_and(|old| old == config) {
            return Ok(());
        }
        files::write_atomic(&path, config, SECRET_MODE).map_err(|e| {
            UpgradeError::Artifacts(anyhow::anyhow!("writing {}: {e}", path.display()))
        })
    }

    async fn stage<F, Fut>(
        &self,
        node: &str,
        name: &'static str,
        step: Step,
        f: F,
    ) -> Result<(), UpgradeError>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<String, UpgradeError>>,
    {
        self.stage_with(node, name, Some(step), f).await
    }

    /// One node's stage with progress events; `step`, when given, is recorded once done.
    pub(crate) async fn stage_with<F, Fut>(
        &self,
        node: &str,
        name: &'static str,
        step: Option<Step>,
        f: F,
    ) -> Result<(), UpgradeError>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<String, UpgradeError>>,
    {
        self.rep.started(Some(node), name);
        match self.rep.in_row(Some(node), name, f()).await {
            Ok(detail) => {
                if let Some(step) = step {
                    self.state.mark_done(step, Some(&detail))?;
                }
                self.env.checkpoint();
                self.rep.progress(Some(node), name, &detail);
                self.rep.done(Some(node), name);
                Ok(())
            }
            Err(e) => {
                self.rep.failed(Some(node), name, &e);
                Err(e)
            }
        }
    }

    pub(crate) fn node(&self, name: &str) -> &NodePlan {
        self.plan
            .node(name)
            .expect("upgrade steps are made from the plan's nodes")
    }

    /// One node's OS upgrade, verified by a new boot id and the running version;
    /// `config`, when given, is applied (NO_REBOOT) as soon as the new boot answers.
    async fn os(
        &self,
        s: &NodeStep,
        installer: &str,
        config: Option<&[u8]>,
    ) -> Result<String, UpgradeError> {
        let n = self.node(&s.node);
        if s.control_plane {
            self.etcd_healthy()
                .await
                .map_err(|detail| UpgradeError::Etcd {
                    when: format!("before upgrading {}", s.node),
                    detail,
                })?;
        }
        let mut c = self.clients.talos(self.env, n)?;
        let running = tag(&mut c).await?;
        if running == s.to {
            // Upgraded since `observe` (another run): the config must follow still.
            let applied = self.follow(n, config).await?;
            return Ok(format!("already runs {running}{applied}"));
        }
        let boot = c.boot_id().await?;
        let failed = |detail: String| UpgradeError::NotUpgraded {
            node: s.node.clone(),
            target: s.to.clone(),
            running: running.clone(),
            detail,
        };
        // 1.13 nodes: the new API writes the image only; the client drains and reboots
        // (talos-day2.md §1.4, §1.6). Older nodes: the node does it all.
        let lifecycle = Version::parse(&running).is_some_and(|v| v >= Version::new(1, 13, 0));
        if lifecycle {
            let name = c.image_pull(installer).await?;
            c.lifecycle_upgrade(&name)
                .await
                .map_err(|e| failed(e.to_string()))?;
            // Cordon and drain as talosctl does (talos-day2.md §1.6): pods leave through
            // Evictions, so PodDisruptionBudgets hold; a drain that cannot finish
            // stops here with the node cordoned and not rebooted.
            let kube = &self.clients.kube;
            drain::cordon(kube, &s.node, true).await?;
            drain::drain(kube, &self.env.drain, &s.node).await?;
            c.reboot().await?;
        } else {
            c.legacy_upgrade(installer).await?;
        }
        let (now, boot) = self.rebooted(n, &boot).await?;
        if now != s.to {
            return Err(failed(format!(
                "it rebooted into {now}, not {} (the installer failed; the bootloader kept the old release)",
                s.to
            )));
        }
        // The config, the kubelet and etcd all start from this boot: none waits
        // for another, and the next node still waits for all three.
        let apply = self.follow(n, config);
        let ready = async {
            self.wait_node(&s.node, None, Some(&boot)).await?;
            if lifecycle {
                // A client cordon is never undone by Talos (talos-day2.md §1.3).
                drain::cordon(&self.clients.kube, &s.node, false).await?;
            }
            Ok(())
        };
        let etcd = async {
            if s.control_plane {
                self.until(&s.node, "etcd healthy again after the reboot", || async {
                    Ok(self.etcd_healthy().await)
                })
                .await?;
            }
            Ok(())
        };
        let (applied, (), ()) = tokio::try_join!(apply, ready, etcd)?;
        Ok(format!("{} → {now}{applied}", s.from))
    }

    /// `config`, when given, applied as `apply_config` does; what it did as a
    /// detail suffix (empty without a config).
    async fn follow(&self, n: &NodePlan, config: Option<&[u8]>) -> Result<String, UpgradeError> {
        Ok(match config {
            Some(c) => format!("; {}", self.apply_config(n, c).await?.describe()),
            None => String::new(),
        })
    }

    /// The node's whole config from the profile, applied without a reboot when it
    /// differs; then its kubelet must report `kubelet` and be Ready.
    async fn kubernetes(
        &self,
        n: &NodePlan,
        config: &[u8],
        kubelet: &str,
    ) -> Result<String, UpgradeError> {
        let applied = self.apply_config(n, config).await?;
        self.wait_node(&n.name, Some(kubelet), None).await?;
        Ok(format!("{}; kubelet {kubelet}", applied.describe()))
    }

    /// One node of a rolling reboot (`up` applying staged configs or pending VM
    /// hardware): only while etcd is healthy with every member and every Node is
    /// Ready; then cordon, drain, reboot, a new boot id, Ready, uncordon, and etcd
    /// healthy again before the caller moves on.
    pub async fn reboot_node(
        &self,
        n: &NodePlan,
        how: Restart<'_>,
    ) -> Result<String, UpgradeError> {
        self.etcd_healthy()
            .await
            .map_err(|detail| UpgradeError::Etcd {
                when: format!("before rebooting {}", n.name),
                detail,
            })?;
        self.all_ready(&n.name).await?;
        let mut c = self.clients.talos(self.env, n)?;
        let boot = c.boot_id().await?;
        drain::cordon(&self.clients.kube, &n.name, true).await?;
        drain::drain(&self.clients.kube, &self.env.drain, &n.name).await?;
        match how {
            Restart::Talos => {
                c.reboot().await?;
            }
            Restart::Vm(host) => {
                // A guest reboot keeps the QEMU process: only the PVE reboot (shutdown
                // + start) applies pending hardware (qemu-server `Qemu.pm` vm_reboot;
                // proxmox-semantics.md §7.2).
                crate::proxmox::provision::reboot(&self.env.pve, host, n.vmid)
                    .await
                    .map_err(|e| UpgradeError::Pve(Box::new(e)))?;
            }
        }
        let (now, boot) = self.rebooted(n, &boot).await?;
        self.wait_node(&n.name, None, Some(&boot)).await?;
        drain::cordon(&self.clients.kube, &n.name, false).await?;
        if n.role == Role::Controlplane {
            self.until(&n.name, "etcd healthy again after the reboot", || async {
                Ok(self.etcd_healthy().await)
            })
            .await?;
        }
        Ok(format!("rebooted, runs {now}, Ready"))
    }

    /// Every planned node's Kubernetes Node is Ready (a rolling step starts only then).
    async fn all_ready(&self, next: &str) -> Result<(), UpgradeError> {
        for n in &self.plan.nodes {
            let node = self.clients.kube.get(&node_path(&n.name)).await?;
            let ready = node
                .as_ref()
                .ok_or_else(|| "no Node object".to_owned())
                .and_then(node_ready);
            if let Err(detail) = ready {
                return Err(UpgradeError::NotReady {
                    node: n.name.clone(),
                    next: next.to_owned(),
                    detail,
                });
            }
        }
        Ok(())
    }

    /// Every control plane answers the member list with all control planes as
    /// started voting members, and runs a healthy etcd service.
    async fn etcd_healthy(&self) -> Result<(), String> {
        let cps: Vec<&NodePlan> = self.plan.control_planes().collect();
        for cp in &cps {
            let mut c = self
                .clients
                .talos(self.env, cp)
                .map_err(|e| first_line(&e.to_string()))?;
            let members = c
                .etcd_member_list()
                .await
                .map_err(|e| first_line(&e.to_string()))?;
            for want in &cps {
                match members.iter().find(|m| m.hostname == want.name) {
                    None => return Err(format!("{} is not an etcd member", want.name)),
                    Some(m) if m.is_learner => {
                        return Err(format!("{} is still an etcd learner", want.name));
                    }
                    Some(_) => {}
                }
            }
            let services = c
                .service_list()
                .await
                .map_err(|e| first_line(&e.to_string()))?;
            let etcd = services.iter().find(|s| s.id == "etcd");
            let healthy = etcd.is_some_and(|s| {
                s.state == "Running" && s.health.as_ref().is_some_and(|h| h.healthy)
            });
            if !healthy {
                return Err(format!(
                    "etcd on {} is {}",
                    cp.name,
                    etcd.map_or("absent", |s| s.state.as_str())
                ));
            }
        }
        Ok(())
    }

    /// Wait until the node answers with another boot id; its running release and
    /// that boot id then.
    async fn rebooted(&self, n: &NodePlan, before: &str) -> Result<(String, String), UpgradeError> {
        self.until(&n.name, "reboot into the upgraded release", || async {
            let mut c = self.clients.talos(self.env, n)?;
            Ok(match c.boot_id().await {
                Ok(id) if id != before => Ok((tag(&mut c).await?, id)),
                Ok(_) => Err("still the same boot".to_owned()),
                Err(e) => Err(first_line(&e.to_string())),
            })
        })
        .await
    }

    /// The Node is Ready (and its kubelet reports `kubelet`, if given). After a
    /// reboot (`boot`: the boot id Talos reports now) Ready counts only once posted
    /// by the kubelet of that boot: a Node keeps its last status — Ready — until the
    /// node lifecycle controller's grace period ends (50 s), so a short reboot never
    /// shows NotReady; the kubelet reports `/proc/sys/kernel/random/boot_id` as
    /// `status.nodeInfo.bootID` (kubernetes `pkg/kubelet/nodestatus/setters.go`
    /// `MachineInfo`), the file Talos `Read` serves.
    async fn wait_node(
        &self,
        node: &str,
        kubelet: Option<&str>,
        boot: Option<&str>,
    ) -> Result<(), UpgradeError> {
        let what = format!(
            "Node {node} Ready{}{}",
            kubelet
                .map(|k| format!(" with kubelet {k}"))
                .unwrap_or_default(),
            boot.map(|b| format!(" from boot {b}")).unwrap_or_default()
        );
        self.env
            .kube_poll
            .watch_object(&self.clients.kube, &node_path(node), &what, |n| {
                let Some(n) = n else {
                    return Err("no Node object".into());
                };
                let info = &n["status"]["nodeInfo"];
                let version = info["kubeletVersion"].as_str().unwrap_or("");
                let posted = info["bootID"].as_str().unwrap_or("");
                match (kubelet, boot) {
                    (Some(k), _) if version != k => Err(format!("kubelet reports {version:?}")),
                    (_, Some(b)) if posted != b => Err(format!(
                        "its kubelet has not posted since the reboot (bootID {posted:?})"
                    )),
                    _ => node_ready(n),
                }
            })
            .await
            .map_err(|e| stalled(node)(UpgradeError::Kube(e)))?;
        Ok(())
    }

    /// Poll `check` (`Ok(Err(state))` = not yet) within the Talos install deadline.
    async fn until<T, F, Fut>(&self, node: &str, what: &str, check: F) -> Result<T, UpgradeError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<Result<T, String>, UpgradeError>>,
    {
        let t = &self.env.talos.timeouts;
        let poll = kube::Poll {
            min: t.poll_min,
            max: t.poll_max,
            timeout: t.install,
        };
        poll.until_with(&format!("{node}: {what}"), check)
            .await
            .map_err(stalled(node))
    }
}

/// A wait that ran out of time names the node and the way on.
fn stalled(node: &str) -> impl FnOnce(UpgradeError) -> UpgradeError + '_ {
    move |e| match e {
        UpgradeError::Kube(cause @ KubeError::Timeout { .. }) => UpgradeError::Stalled {
            node: node.to_owned(),
            cause,
        },
        e => e,
    }
}

async fn tag(c: &mut TalosClient) -> Result<String, TalosError> {
    let v = c.version().await?;
    Ok(v.first()
        .and_then(|v| v.version.as_ref())
        .map(|i| i.tag.clone())
        .unwrap_or_default())
}
