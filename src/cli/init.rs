//! `talos-pve init`: the guided wizard that writes a profile.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;

use super::args::Global;
use crate::wizard::{self, Access, Connect, Discovery, DiscoveryError, Inventory};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Where to write the profile.
    #[arg(
        long,
        short = 'o',
        value_name = "FILE",
        default_value = "talos-pve.yaml"
    )]
    pub out: PathBuf,
    /// Offline / air-gapped planning: take the hosts, bridges, bonds, storages and used
    /// VMIDs from this YAML or JSON file (docs/discovery-file.md) instead of asking Proxmox.
    #[arg(long, value_name = "FILE")]
    pub discovery_file: Option<PathBuf>,
}

/// Stand-in until the Proxmox client provides discovery: says how to proceed offline.
struct NoLiveDiscovery;

impl Connect for NoLiveDiscovery {
    fn connect(&self, access: &Access) -> Result<Box<dyn Discovery + '_>, DiscoveryError> {
        Err(DiscoveryError::Remote {
            endpoint: access.endpoint.clone(),
            message: "live discovery from Proxmox is not available in this build".into(),
            fix: "describe the hosts in a file and pass --discovery-file FILE (docs/discovery-file.md)".into(),
        })
    }
}

pub fn run(_g: &Global, a: Args) -> anyhow::Result<ExitCode> {
    // Refuse before reading anything: without a terminal no prompt can work.
    let mut prompter = wizard::DialoguerPrompter::new()?;
    let inventory = match &a.discovery_file {
        Some(f) => Some(Inventory::load(f)?),
        None => None,
    };
    let connect: &dyn Connect = match &inventory {
        Some(i) => i,
        None => &NoLiveDiscovery,
    };
    let token_dir = std::path::absolute(&a.out)
        .ok()
        .and_then(|p| p.parent().map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from("."));
    let outcome = wizard::run(
        &mut prompter,
        connect,
        wizard::Options {
            draft: wizard::seed_draft(),
            token_dir,
            check: &wizard::basic_check,
        },
    )?;
    if wizard::save(&mut prompter, &a.out, &outcome).context("saving the profile")? {
        Ok(ExitCode::SUCCESS)
    } else {
        eprintln!("nothing written: {} was kept", a.out.display());
        Ok(ExitCode::from(1))
    }
}
