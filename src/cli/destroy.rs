//! `talos-pve destroy`: stop and delete the VMs carrying this cluster's marker (the
//! ID of the cluster directory's secrets), after a confirmation naming them; the
//! candidates left alone are named with the reason.

use std::io::IsTerminal;
use std::process::ExitCode;

use super::args::{Global, LabArgs, ProfileArgs};
use super::preflight::{PveArgs, Session, runtime, session};
use crate::cluster_dir::ClusterDir;
use crate::cluster_id;
use crate::proxmox::destroy::{DestroyReport, Survey, destroy, survey, unfinished};

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub profile: ProfileArgs,
    #[command(flatten)]
    pub lab: LabArgs,
    #[command(flatten)]
    pub pve: PveArgs,
    /// Do not ask for confirmation (for scripts).
    #[arg(long)]
    pub yes: bool,
}

pub fn run(_g: &Global, a: Args) -> anyhow::Result<ExitCode> {
    let lab = a.lab.options()?;
    let rt = runtime()?;
    let s = rt.block_on(session(&a.profile, &a.pve, lab.as_ref()))?;
    let result = teardown(&rt, &s, &a);
    rt.block_on(async { s.close(&a.lab) })?;
    result
}

fn teardown(rt: &tokio::runtime::Runtime, s: &Session, a: &Args) -> anyhow::Result<ExitCode> {
    let dir = ClusterDir::resolve(a.profile.dir.as_deref(), &s.plan.cluster)
        .map_err(anyhow::Error::msg)?;
    crate::dir_lock::hold(&dir)?;
    let Some(owner) = cluster_id::owner(&dir, &s.plan.cluster, false)? else {
        anyhow::bail!(
            "{} holds no cluster ID (no secrets.yaml, no cluster-id), so no VM is provably this cluster's; nothing was destroyed\n  fix: pass the cluster's directory with --dir (or TALOS_PVE_DIR)",
            dir.root.display()
        );
    };
    let planned: Vec<u32> = s.plan.nodes.iter().map(|n| n.vmid).collect();
    let Survey {
        owned: vms,
        skipped,
        unreachable,
    } = rt.block_on(survey(&s.client, &owner, &planned))?;
    for v in &skipped {
        println!(
            "Skipping VM {} {} on {}: {}.",
            v.vmid, v.name, v.host, v.why
        );
    }
    let report = if vms.is_empty() {
        let there = if unreachable.is_empty() {
            ""
        } else {
            " on the hosts that answer"
        };
        println!(
            "No VM carries the marker of cluster `{}` (ID {}){there}; nothing to destroy.",
            s.plan.cluster, owner.id
        );
        DestroyReport::default()
    } else {
        println!(
            "These VMs of cluster `{}` (ID {}) will be stopped and deleted with their disks:",
            s.plan.cluster, owner.id
        );
        for v in &vms {
            let state = if v.running { "running" } else { "stopped" };
            println!("  {} {} on {} ({state})", v.vmid, v.name, v.host);
        }
        for (host, _) in &unreachable {
            println!("  (standalone host {host} does not answer: its VMs are left for later)");
        }
        if !a.yes {
            if !std::io::stdin().is_terminal() {
                anyhow::bail!(
                    "refusing to destroy without confirmation: no terminal to ask on\n  fix: pass --yes to confirm non-interactively"
                );
            }
            let ok = dialoguer::Confirm::new()
                .with_prompt(format!("Destroy these {} VMs?", vms.len()))
                .default(false)
                .interact()?;
            if !ok {
                return Err(super::up::Declined.into());
            }
        }
        let report = rt.block_on(destroy(&s.client, &vms));
        println!("Destroyed {} VMs.", report.removed.len());
        report
    };
    match unfinished(&report, &unreachable, &s.plan) {
        None => Ok(ExitCode::SUCCESS),
        Some(what) => Err(anyhow::Error::msg(what)),
    }
}
