//! `talos-pve init`: the guided wizard that writes a profile.

use std::path::PathBuf;
use std::process::ExitCode;

use super::args::Global;
use crate::net::AddressBook;
use crate::proxmox::discovery::LiveConnect;
use crate::proxmox::settings::env_insecure;
use crate::wizard::{self, Connect, Inventory};

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

/// Discovery from the Proxmox API, trusting what `PROXMOX_VE_INSECURE` says when the
/// wizard gets no fingerprint.
pub(super) fn live_discovery() -> LiveConnect {
    let insecure = env_insecure(&|k| std::env::var(k).ok());
    LiveConnect::new(AddressBook::direct(), insecure)
}

pub fn run(_g: &Global, a: Args) -> anyhow::Result<ExitCode> {
    let inventory = match &a.discovery_file {
        Some(f) => Some(Inventory::load(f)?),
        None => None,
    };
    let live = live_discovery();
    let connect: &dyn Connect = match &inventory {
        Some(i) => i,
        None => &live,
    };
    match wizard::guided(&a.out, connect, &|p| crate::lint::lint(p).error_lines())? {
        Some(_) => Ok(ExitCode::SUCCESS),
        None => {
            eprintln!("nothing written: {} was kept", a.out.display());
            Ok(ExitCode::from(1))
        }
    }
}
