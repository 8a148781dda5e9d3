//! `up` on a running cluster: changes to nodes that already run.
//!
//! A node answers mutual TLS once it runs any config of this cluster, so the
//! bring-up leaves a changed profile unapplied. Here each node is asked (an
//! `ApplyConfiguration` dry run with AUTO, the node's own decision of talos-day2.md
//! §3.2) whether the config the profile renders differs, and how it applies:
//! - in place: applied at once with NO_REBOOT;
//! - only with a reboot: STAGED, then a rolling reboot;
//! - a VM with pending Proxmox hardware changes (proxmox-semantics.md §7.2) joins
//!   the rolling reboot, rebooted through Proxmox, which applies them.
//!
//! The rolling reboot goes one node at a time, control planes first, each only while
//! etcd is healthy with every member and every Node is Ready (`Upgrade::reboot_node`).
//! Decisions come from what the nodes and VMs report now (a staged config still
//! differs from the running one until the reboot, pending hardware stays pending
//! until it), so an interrupted run simply runs again; each finished node is
//! recorded in the state file.

use crate::artifacts;
use crate::cluster_dir::ClusterDir;
use crate::diff::config::Apply;
use crate::plan::{NodePlan, Plan};
use crate::profile::Role;
use crate::proxmox::inventory;
use crate::state::Step;
use crate::talos::api::messages::{ApplyConfiguration, ApplyMode};
use crate::talos::api::{Target, TlsMode};
use crate::upgrade::{Clients, Restart, Upgrade, UpgradeError};

use super::Env;

/// What one running node needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeChange {
    pub node: String,
    /// The Proxmox host its VM runs on now.
    pub host: String,
    /// The machine config the profile renders, as the node resolves it.
    pub config: Apply,
    /// VM config keys Proxmox holds as pending until a reboot of the VM.
    pub pending: Vec<String>,
}

impl NodeChange {
    /// Whether this node takes part in the rolling reboot.
    pub fn reboots(&self) -> bool {
        self.config == Apply::RebootNeeded || !self.pending.is_empty()
    }

    /// One line of the plan shown before anything is applied.
    pub fn line(&self) -> String {
        let config = match self.config {
            Apply::Unchanged => None,
            Apply::NoReboot => Some("machine config applied without reboot".to_owned()),
            Apply::RebootNeeded => Some("machine config staged, rolling reboot".to_owned()),
        };
        let vm = (!self.pending.is_empty()).then(|| {
            format!(
                "VM config pending until reboot ({}), rebooted through Proxmox",
                self.pending.join(", ")
            )
        });
        let parts: Vec<String> = config.into_iter().chain(vm).collect();
        format!("node {}: {}", self.node, parts.join("; "))
    }
}

/// How the node resolved a dry run (pure): "No changes.", or AUTO's choice.
pub fn resolved(reply: &ApplyConfiguration) -> Apply {
    if reply.mode_details.trim_end().ends_with("No changes.") {
        Apply::Unchanged
    } else if reply.mode == ApplyMode::NoReboot as i32 {
        Apply::NoReboot
    } else {
        Apply::RebootNeeded
    }
}

/// The rolling order (pure): control planes first, then workers, each in plan order.
pub fn order<'a>(plan: &'a Plan, changes: &'a [NodeChange]) -> Vec<&'a NodeChange> {
    let cp = |c: &NodeChange| {
        plan.node(&c.node)
            .is_some_and(|n| n.role == Role::Controlplane)
    };
    let mut out: Vec<&NodeChange> = changes.iter().filter(|c| cp(c)).collect();
    out.extend(changes.iter().filter(|c| !cp(c)));
    out
}

/// Every node that differs from the profile, and how.
pub async fn survey(
    env: &Env,
    plan: &Plan,
    dir: &ClusterDir,
    clients: &Clients,
) -> Result<Vec<NodeChange>, UpgradeError> {
    let pve = |e| UpgradeError::Pve(Box::new(e));
    // Where each VM runs now: a migrated one is asked (and rebooted) there.
    let vms = inventory::planned_vms(&env.pve, plan).await.map_err(pve)?;
    // Read-only questions, asked of every node at once (a re-run that finds
    // nothing costs one round trip, not one per node).
    let asked = futures_util::future::join_all(plan.nodes.iter().map(|n| {
        let vms = &vms;
        async move {
            let host = vms.get(&n.vmid).map_or(n.host.clone(), |v| v.node.clone());
            let (config, pending) = tokio::join!(
                config_change(env, dir, clients, n),
                inventory::pending(&env.pve, &host, n.vmid)
            );
            Ok::<_, UpgradeError>(NodeChange {
                node: n.name.clone(),
                host,
                config: config?,
                pending: pending.map_err(pve)?,
            })
        }
    }))
    .await;
    let mut out = Vec::new();
    for c in asked {
        let c = c?;
        if c.config != Apply::Unchanged || !c.pending.is_empty() {
            out.push(c);
        }
    }
    Ok(out)
}

async fn config_change(
    env: &Env,
    dir: &ClusterDir,
    clients: &Clients,
    n: &NodePlan,
) -> Result<Apply, UpgradeError> {
    let config = rendered(dir, n)?;
    let mut c = env.talos.client(
        &Target::of(n),
        &TlsMode::Mutual(clients.credentials().clone()),
    )?;
    let dry = c
        .apply_configuration(&config, ApplyMode::Auto, true)
        .await?;
    Ok(resolved(&dry))
}

fn rendered(dir: &ClusterDir, n: &NodePlan) -> Result<Vec<u8>, UpgradeError> {
    let path = artifacts::machineconfig_path(dir, &n.name);
    std::fs::read(&path)
        .map_err(|e| UpgradeError::Artifacts(anyhow::anyhow!("reading {}: {e}", path.display())))
}

/// Changes that need no reboot, applied now (NO_REBOOT), one node after the other.
pub async fn apply_in_place(u: &Upgrade<'_>, changes: &[NodeChange]) -> Result<(), UpgradeError> {
    for c in changes.iter().filter(|c| c.config == Apply::NoReboot) {
        let n = u.node(&c.node);
        let config = rendered(u.dir, n)?;
        u.stage_with(&c.node, "reconfigure", None, || async {
            let mut t = u.clients.talos(u.env, n)?;
            t.apply_configuration(&config, ApplyMode::NoReboot, false)
                .await?;
            Ok("machine config applied without reboot".to_owned())
        })
        .await?;
        if !c.reboots() {
            u.state.mark_done(
                Step::Reconfigured(c.node.clone()),
                Some("applied without reboot"),
            )?;
        }
    }
    Ok(())
}

/// The rolling reboot: each node's config STAGED (when it needs one), then rebooted,
/// one at a time, control planes first.
pub async fn rolling_reboot(u: &Upgrade<'_>, changes: &[NodeChange]) -> Result<(), UpgradeError> {
    for c in order(u.plan, changes).into_iter().filter(|c| c.reboots()) {
        let n = u.node(&c.node);
        let step = Step::Reconfigured(c.node.clone());
        u.stage_with(&c.node, "rolling-reboot", Some(step), || async {
            if c.config == Apply::RebootNeeded {
                let config = rendered(u.dir, n)?;
                let mut t = u.clients.talos(u.env, n)?;
                t.apply_configuration(&config, ApplyMode::Staged, false)
                    .await?;
            }
            let how = if c.pending.is_empty() {
                Restart::Talos
            } else {
                Restart::Vm(&c.host)
            };
            let done = u.reboot_node(n, how).await?;
            Ok(
                match (c.config == Apply::RebootNeeded, c.pending.is_empty()) {
                    (true, false) => format!("config staged, VM rebooted: {done}"),
                    (true, true) => format!("config staged, {done}"),
                    (false, _) => format!("VM rebooted for its pending config: {done}"),
                },
            )
        })
        .await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reply(mode: ApplyMode, details: &str) -> ApplyConfiguration {
        ApplyConfiguration {
            metadata: None,
            warnings: vec![],
            mode: mode as i32,
            mode_details: details.into(),
        }
    }

    #[test]
    fn the_dry_run_answer_decides_the_mode() {
        let no = "Dry run summary:\nApplied configuration with a reboot (skipped in dry-run).\nConfig diff:\n\nNo changes.";
        assert_eq!(resolved(&reply(ApplyMode::Reboot, no)), Apply::Unchanged);
        let d = "Dry run summary:\nApplied configuration without a reboot (skipped in dry-run).\nConfig diff:\n\n--- a\n+++ b\n";
        assert_eq!(resolved(&reply(ApplyMode::NoReboot, d)), Apply::NoReboot);
        assert_eq!(resolved(&reply(ApplyMode::Reboot, d)), Apply::RebootNeeded);
    }

    #[test]
    fn control_planes_reboot_first_and_the_plan_says_how() {
        let p = crate::test_support::homelab();
        let mut plan = Plan::build(&p).unwrap();
        plan.nodes[0].role = Role::Worker;
        let (worker, cp) = (&plan.nodes[0], &plan.nodes[2]);
        let changes = vec![
            NodeChange {
                node: worker.name.clone(),
                host: worker.host.clone(),
                config: Apply::RebootNeeded,
                pending: vec![],
            },
            NodeChange {
                node: cp.name.clone(),
                host: cp.host.clone(),
                config: Apply::NoReboot,
                pending: vec!["cores".into()],
            },
        ];
        let o: Vec<&str> = order(&plan, &changes)
            .iter()
            .map(|c| c.node.as_str())
            .collect();
        assert_eq!(o, [cp.name.as_str(), worker.name.as_str()]);
        assert_eq!(
            changes[0].line(),
            format!(
                "node {}: machine config staged, rolling reboot",
                worker.name
            )
        );
        assert!(
            changes[1]
                .line()
                .contains("applied without reboot; VM config pending until reboot (cores)")
        );
    }
}
