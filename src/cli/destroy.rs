//! `talos-pve destroy`: stop and delete the VMs carrying this cluster's marker,
//! after a confirmation naming them.

use std::io::IsTerminal;
use std::process::ExitCode;

use super::args::{Global, LabArgs, ProfileArgs};
use super::preflight::{PveArgs, Session, runtime, session};
use crate::proxmox::destroy::{destroy, owned_vms};

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
    let result = teardown(&rt, &s, a.yes);
    rt.block_on(async { s.close(&a.lab) })?;
    result
}

fn teardown(rt: &tokio::runtime::Runtime, s: &Session, yes: bool) -> anyhow::Result<ExitCode> {
    let planned: Vec<u32> = s.plan.nodes.iter().map(|n| n.vmid).collect();
    let vms = rt.block_on(owned_vms(&s.client, &s.plan.cluster, &planned))?;
    if vms.is_empty() {
        println!(
            "No VM carries the marker of cluster `{}`; nothing to destroy.",
            s.plan.cluster
        );
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "These VMs of cluster `{}` will be stopped and deleted with their disks:",
        s.plan.cluster
    );
    for v in &vms {
        let state = if v.running { "running" } else { "stopped" };
        println!("  {} {} on {} ({state})", v.vmid, v.name, v.host);
    }
    if !yes {
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
    rt.block_on(destroy(&s.client, &vms))?;
    println!("Destroyed {} VMs.", vms.len());
    Ok(ExitCode::SUCCESS)
}
