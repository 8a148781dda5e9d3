//! `talos-pve init`: the guided wizard that writes a profile.

use std::path::PathBuf;
use std::process::ExitCode;

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
pub(super) struct NoLiveDiscovery;

/// Discovery from the Proxmox API.
pub(super) fn live_discovery() -> NoLiveDiscovery {
    NoLiveDiscovery
}

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
    let inventory = match &a.discovery_file {
        Some(f) => Some(Inventory::load(f)?),
        None => None,
    };
    let connect: &dyn Connect = match &inventory {
        Some(i) => i,
        None => &NoLiveDiscovery,
    };
    match wizard::guided(&a.out, connect, &|p| crate::lint::lint(p).error_lines())? {
        Some(_) => Ok(ExitCode::SUCCESS),
        None => {
            eprintln!("nothing written: {} was kept", a.out.display());
            Ok(ExitCode::from(1))
        }
    }
}
