//! `rebuild node NAME`: bring one lost or broken node back with its old identity.
//!
//! A node that still answers (broken etcd data) has its EPHEMERAL partition wiped
//! first; a hung one (VM running, node silent) is power-cycled through Proxmox and
//! wiped if it comes back with its config. Then its stale etcd member is removed
//! through a healthy control plane (only when the remaining healthy members keep a
//! majority); its VM is created again from the plan when missing (same VMID, MACs,
//! addresses); its config from the existing secrets is applied; and it must rejoin
//! etcd and be Ready with its pod CIDR.

use std::time::Duration;

use reqwest::Method;

use crate::plan::NodePlan;
use crate::profile::Role;
use crate::proxmox::client::vm_path;
use crate::proxmox::inventory;
use crate::proxmox::provision::{ProvisionOptions, provision};
use crate::state::State;
use crate::talos::api::{Credentials, Target};
use crate::up::{Progress, UpError, configure_node, remove_cidata};

use super::health::{self, Health, Member};
use super::{Ctx, RebuildError, identity, reconcile_kube};

/// How long Proxmox may take to stop a hung VM.
const STOP_DEADLINE: Duration = Duration::from_secs(120);

/// The decided rebuild of one node.
#[derive(Debug, Clone)]
pub struct NodeJob {
    pub node: NodePlan,
    /// The healthy control plane etcd changes go through (control planes only).
    pub via: Option<NodePlan>,
    /// The node answers with our config but is broken: wipe its etcd data first.
    pub wipe: bool,
    /// Its VM runs but the node answers nothing: stop it (provision starts it again),
    /// then wipe it if it comes back with its config. Holds the VM's current host.
    pub power_cycle: Option<String>,
    /// Its member, still listed by etcd.
    pub stale_member: Option<Member>,
    /// The destructive steps, in order, for the confirmation question.
    pub steps: Vec<String>,
}

/// Probe, apply the guards, and decide the steps. Nothing is changed.
pub async fn assess(
    ctx: &Ctx<'_>,
    creds: &Credentials,
    name: &str,
    force: bool,
) -> Result<NodeJob, RebuildError> {
    let plan = ctx.plan;
    let node = plan
        .node(name)
        .ok_or_else(|| RebuildError::UnknownNode {
            node: name.to_owned(),
            known: plan
                .nodes
                .iter()
                .map(|n| n.name.as_str())
                .collect::<Vec<_>>()
                .join(", "),
        })?
        .clone();
    let h = health::probe(&ctx.env.talos, plan, creds).await;
    if h.node_healthy(name) && !force {
        return Err(RebuildError::Healthy {
            what: format!("node {name}"),
            health: h.render(),
        });
    }
    let answers = h.node(name).is_some_and(|n| n.answers);
    let (via, stale_member) = if node.role == Role::Controlplane {
        etcd_side(&h, plan, name)?
    } else {
        (None, None)
    };
    let vm = inventory::planned_vms(&ctx.env.pve, plan)
        .await?
        .remove(&node.vmid);
    if let Some(v) = &vm {
        // Power-cycling or re-creating acts on this cluster's VM only.
        super::ensure_ours(ctx, &super::owner(ctx)?, name, v).await?;
    }
    let silent = !answers && !h.node(name).is_some_and(|n| n.maintenance);
    let power_cycle = vm
        .as_ref()
        .filter(|v| v.running && silent)
        .map(|v| v.node.clone());
    let mut steps = Vec::new();
    if let Some(host) = &power_cycle {
        steps.push(format!(
            "power-cycle VM {} on {host} (it runs, but {name} answers neither with its config nor in maintenance mode); if it comes back with its config, wipe its EPHEMERAL partition and reboot it",
            node.vmid
        ));
    }
    if answers {
        steps.push(format!(
            "reset {name}: wipe its EPHEMERAL partition (etcd data, kubelet state) and reboot it"
        ));
    }
    if let (Some(m), Some(via)) = (&stale_member, &via) {
        steps.push(format!(
            "remove etcd member {:x} ({}) through {}",
            m.id, m.hostname, via.name
        ));
    }
    steps.push(if vm.is_some() {
        format!("keep the existing {}", identity(&node))
    } else {
        format!("create {} (same identity as before)", identity(&node))
    });
    steps.push(format!(
        "apply {name}'s machine config made from the existing secrets bundle, wait for the install"
    ));
    steps.push(format!(
        "wait until {name} {}is Ready with pod CIDR {}",
        if via.is_some() {
            "rejoins etcd and "
        } else {
            ""
        },
        node.pod_cidr
    ));
    Ok(NodeJob {
        node,
        via,
        wipe: answers,
        power_cycle,
        stale_member,
        steps,
    })
}

/// The healthy control plane to act through, the stale member, and the quorum guard.
fn etcd_side(
    h: &Health,
    plan: &crate::plan::Plan,
    name: &str,
) -> Result<(Option<NodePlan>, Option<Member>), RebuildError> {
    let no_via = || RebuildError::NoHealthyControlPlane {
        node: name.to_owned(),
        health: h.render(),
    };
    let (via, members) = h.members.as_ref().ok_or_else(no_via)?;
    let via = if via == name {
        // Forced rebuild of the node that answered: act through another one.
        h.healthy_members()
            .into_iter()
            .find(|m| m != name)
            .ok_or_else(no_via)?
    } else {
        via.clone()
    };
    let via = plan.node(&via).cloned().ok_or_else(no_via)?;
    let listed: Vec<String> = members.iter().map(|m| m.hostname.clone()).collect();
    health::check_quorum(&listed, &h.healthy_members(), name).map_err(|detail| {
        RebuildError::Quorum {
            node: name.to_owned(),
            detail,
            health: h.render(),
        }
    })?;
    let stale = members.iter().find(|m| m.hostname == name).cloned();
    Ok((Some(via), stale))
}

/// Carry out a decided job.
pub async fn run(
    ctx: &Ctx<'_>,
    creds: &Credentials,
    state: &State,
    job: &NodeJob,
) -> Result<(), RebuildError> {
    let (env, rep) = (ctx.env, ctx.rep);
    let n = &job.node;
    let t = Target::of(n);
    let mut wipe = job.wipe;
    if let Some(host) = &job.power_cycle {
        rep.started(Some(&n.name), "power cycle");
        env.pve
            .run_task(
                Method::POST,
                &format!("{}/status/stop", vm_path(host, n.vmid)?),
                &[],
                STOP_DEADLINE,
            )
            .await
            .inspect_err(|e| rep.failed(Some(&n.name), "power cycle", e))?;
        provision_one(ctx, n).await?;
        configure_node(
            env,
            ctx.profile,
            ctx.plan,
            n,
            ctx.dir,
            Progress { state, rep },
            creds,
        )
        .await?;
        // It answers with this cluster's CA, so it runs this cluster's config: the
        // one it had before (its etcd data predates the member removal), or a fresh
        // install from cidata, for which the wipe is harmless.
        wipe = true;
        rep.progress(Some(&n.name), "power cycle", "runs its config again");
        rep.done(Some(&n.name), "power cycle");
    }
    if wipe {
        rep.started(Some(&n.name), "wipe");
        env.talos
            .wipe_etcd_data(&t, creds)
            .await
            .inspect_err(|e| rep.failed(Some(&n.name), "wipe", e))?;
        rep.done(Some(&n.name), "wipe");
    }
    if let Some(via) = &job.via {
        rep.started(Some(&n.name), "etcd member");
        let removed = env
            .talos
            .remove_etcd_member(&Target::of(via), creds, &n.name)
            .await
            .inspect_err(|e| rep.failed(Some(&n.name), "etcd member", e))?;
        rep.progress(
            Some(&n.name),
            "etcd member",
            if removed {
                "stale member removed"
            } else {
                "no stale member listed"
            },
        );
        rep.done(Some(&n.name), "etcd member");
    }
    provision_one(ctx, n).await?;
    let progress = Progress { state, rep };
    configure_node(env, ctx.profile, ctx.plan, n, ctx.dir, progress, creds).await?;
    remove_cidata(env, ctx.profile, ctx.plan, n, progress).await?;
    if let Some(via) = &job.via {
        rep.started(Some(&n.name), "etcd");
        let members: Vec<String> = ctx.plan.control_planes().map(|c| c.name.clone()).collect();
        env.talos
            .wait_etcd_members(&Target::of(via), creds, &members)
            .await
            .inspect_err(|e| rep.failed(Some(&n.name), "etcd", e))?;
        rep.done(Some(&n.name), "etcd");
    }
    reconcile_kube(ctx, &[n], creds).await
}

/// Make this node's VM exist as planned (`configure_node` boots it); the other VMs are left exactly
/// as they are.
async fn provision_one(ctx: &Ctx<'_>, n: &NodePlan) -> Result<(), RebuildError> {
    let (env, rep) = (ctx.env, ctx.rep);
    let mut one = ctx.plan.clone();
    one.nodes.retain(|x| x.name == n.name);
    rep.started(Some(&n.name), "provision");
    let report = provision(
        &env.pve,
        &env.factory,
        ctx.profile,
        &one,
        ProvisionOptions {
            recreate: false,
            owner: super::owner(ctx)?,
        },
    )
    .await
    .inspect_err(|e| rep.failed(Some(&n.name), "provision", e))?;
    if let Some(vm) = report.blocked().next() {
        return Err(UpError::NeedsRecreate {
            node: vm.node.clone(),
            differences: vm.differences.join("; "),
        }
        .into());
    }
    rep.done(Some(&n.name), "provision");
    Ok(())
}
