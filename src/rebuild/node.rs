//! `rebuild node NAME`: bring one lost or broken node back with its old identity.
//!
//! A node that still answers (broken etcd data) has its EPHEMERAL partition wiped
//! first; then its stale etcd member is removed through a healthy control plane
//! (only when the remaining healthy members keep a majority); its VM is created
//! again from the plan when missing (same VMID, MACs, addresses); its config from
//! the existing secrets is applied; and it must rejoin etcd and be Ready with its
//! pod CIDR.

use crate::plan::NodePlan;
use crate::profile::Role;
use crate::proxmox::inventory;
use crate::proxmox::provision::{ProvisionOptions, VmAction, provision};
use crate::state::State;
use crate::talos::api::{Credentials, Target};
use crate::up::{ProxmoxIdentity, UpError, configure_node};

use super::health::{self, Health, Member};
use super::{Ctx, RebuildError, identity, reconcile_kube};

/// The decided rebuild of one node.
#[derive(Debug, Clone)]
pub struct NodeJob {
    pub node: NodePlan,
    /// The healthy control plane etcd changes go through (control planes only).
    pub via: Option<NodePlan>,
    /// The node answers with our config but is broken: wipe its etcd data first.
    pub wipe: bool,
    /// Its member, still listed by etcd.
    pub stale_member: Option<Member>,
    pub vm_exists: bool,
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
    let vm_exists = inventory::vms(&ctx.env.pve).await?.contains_key(&node.vmid);
    let mut steps = Vec::new();
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
    steps.push(if vm_exists {
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
        stale_member,
        vm_exists,
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
    if job.wipe {
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
    // Only this node's VM: the others are left exactly as they are.
    let mut one = ctx.plan.clone();
    one.nodes.retain(|x| x.name == n.name);
    rep.started(Some(&n.name), "provision");
    let report = provision(
        &env.pve,
        &env.factory,
        ctx.profile,
        &one,
        ProvisionOptions::default(),
    )
    .await
    .inspect_err(|e| rep.failed(Some(&n.name), "provision", e))?;
    if let Some(vm) = report
        .vms
        .iter()
        .find(|v| v.action == VmAction::NeedsRecreate)
    {
        return Err(UpError::NeedsRecreate {
            node: vm.node.clone(),
            differences: vm.differences.join("; "),
        }
        .into());
    }
    rep.done(Some(&n.name), "provision");
    let identity = ProxmoxIdentity {
        pve: &env.pve,
        plan: ctx.plan,
    };
    configure_node(env, n, ctx.dir, state, rep, creds, &identity).await?;
    if let Some(via) = &job.via {
        rep.started(Some(&n.name), "etcd");
        let members: Vec<String> = ctx.plan.control_planes().map(|c| c.name.clone()).collect();
        env.talos
            .wait_etcd_members(&Target::of(via), creds, &members)
            .await
            .inspect_err(|e| rep.failed(Some(&n.name), "etcd", e))?;
        rep.done(Some(&n.name), "etcd");
    }
    reconcile_kube(ctx, &[n]).await
}
