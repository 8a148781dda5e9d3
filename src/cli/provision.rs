//! `talos-pve provision`: preflight, then create (or adopt) and start the VMs.

use std::process::ExitCode;

use super::args::{Global, LabArgs, Output, ProfileArgs};
use super::preflight::{PveArgs, Session, print_preflight, runtime, session};
use crate::cluster_dir::ClusterDir;
use crate::cluster_id;
use crate::net::AddressBook;
use crate::proxmox::Trust;
use crate::proxmox::factory::Factory;
use crate::proxmox::preflight::preflight;
use crate::proxmox::provision::{ProvisionOptions, VmAction, provision};

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub profile: ProfileArgs,
    #[command(flatten)]
    pub lab: LabArgs,
    #[command(flatten)]
    pub pve: PveArgs,
    /// Delete and re-create this cluster's VMs whose disks, firmware or NICs differ from the plan.
    #[arg(long)]
    pub recreate: bool,
    /// Pin the certificate of a self-hosted Image Factory (SHA-256, AA:BB:…).
    #[arg(
        long,
        env = "TALOS_PVE_IMAGE_FACTORY_FINGERPRINT",
        value_name = "SHA256"
    )]
    pub factory_fingerprint: Option<String>,
}

pub fn run(g: &Global, a: Args) -> anyhow::Result<ExitCode> {
    let lab = a.lab.options()?;
    let rt = runtime()?;
    let s = rt.block_on(session(&a.profile, &a.pve, lab.as_ref()))?;
    let result = create(g, &a, &rt, &s);
    rt.block_on(async { s.close(&a.lab) })?;
    result
}

fn create(
    g: &Global,
    a: &Args,
    rt: &tokio::runtime::Runtime,
    s: &Session,
) -> anyhow::Result<ExitCode> {
    let real_factory;
    let factory = match &s.lab {
        Some((_, f)) => f,
        None => {
            // The public factory has a CA-signed certificate; a self-hosted one may be pinned.
            let trust = match &a.factory_fingerprint {
                Some(f) => Trust::Fingerprint(f.clone()),
                None => Trust::Verify,
            };
            real_factory = Factory::new(
                &s.profile.talos.image_factory,
                &trust,
                &AddressBook::direct(),
            )?;
            &real_factory
        }
    };
    let pf = rt.block_on(preflight(&s.client, &s.profile, &s.plan))?;
    if !pf.passed() {
        print_preflight(&pf);
        anyhow::bail!("preflight failed; fix the items marked FAIL and run again");
    }
    // The VMs carry the cluster directory's ID (made now for a new cluster).
    let dir = ClusterDir::resolve(a.profile.dir.as_deref(), &s.plan.cluster)
        .map_err(anyhow::Error::msg)?;
    crate::dir_lock::hold(&dir)?;
    let opts = ProvisionOptions {
        recreate: a.recreate,
        owner: cluster_id::owner_making(&dir, &s.plan.cluster)?,
    };
    let report = rt.block_on(provision(&s.client, factory, &s.profile, &s.plan, opts))?;
    if g.output == Output::Json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        for i in &report.isos {
            let what = if i.downloaded {
                "downloaded"
            } else {
                "present"
            };
            println!("ISO {} on {}: {what}", i.volid, i.host);
        }
        for v in &report.vms {
            let action = match v.action {
                VmAction::PendingReboot => "pending until reboot (`talos-pve up` reboots it)",
                other => other.as_str(),
            };
            println!("VM {} {} on {}: {action}", v.vmid, v.node, v.host);
            for d in &v.differences {
                println!("    {d}");
            }
        }
        if let Some(line) = report.unchanged_line() {
            println!("{line}");
        }
    }
    let blocked: Vec<String> = report
        .blocked()
        .map(|v| format!("{} ({})", v.node, v.vmid))
        .collect();
    if !blocked.is_empty() && a.recreate {
        anyhow::bail!(
            "{} also need a new VM, but at most one control plane is re-created per run (etcd must get its member back first)\n  fix: run `talos-pve up --recreate`, which re-creates them one after the other and waits for etcd in between",
            blocked.join(", ")
        );
    }
    if !blocked.is_empty() {
        anyhow::bail!(
            "{} differ from the plan in ways that need a new VM\n  fix: run `talos-pve provision --recreate` (their disks are wiped)",
            blocked.join(", ")
        );
    }
    Ok(ExitCode::SUCCESS)
}
