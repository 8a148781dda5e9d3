//! `talos-pve init`: the guided wizard that writes a profile.

use std::path::PathBuf;
use std::process::ExitCode;

use super::args::Global;
use crate::lab::LabDiscovery;
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
    #[arg(long, value_name = "FILE", conflicts_with = "lab")]
    pub discovery_file: Option<PathBuf>,
    /// Discover from the lab: a simulated Proxmox (the seed's hosts) on loopback.
    #[arg(long)]
    pub lab: bool,
}

/// Discovery from the Proxmox API, trusting what `PROXMOX_VE_INSECURE` says when the
/// wizard gets no fingerprint.
fn live_discovery() -> LiveConnect {
    let insecure = env_insecure(&|k| std::env::var(k).ok());
    LiveConnect::new(AddressBook::direct(), insecure)
}

/// Where the wizard's facts come from: a discovery file, the lab, or the real
/// Proxmox API (in that order of the flags).
pub(super) enum Source {
    File(Inventory),
    Lab(Box<LabDiscovery>),
    Live(LiveConnect),
}

impl Source {
    pub(super) fn open(file: Option<&std::path::Path>, lab: bool) -> anyhow::Result<Self> {
        Ok(match (file, lab) {
            (Some(f), _) => Source::File(Inventory::load(f)?),
            (None, true) => {
                let l = LabDiscovery::start()?;
                eprintln!(
                    "lab: discovery asks a simulated Proxmox at {} (the seed's hosts, on loopback); the token you type is not used",
                    l.endpoint()
                );
                Source::Lab(Box::new(l))
            }
            (None, false) => Source::Live(live_discovery()),
        })
    }

    pub(super) fn connect(&self) -> &dyn Connect {
        match self {
            Source::File(i) => i,
            Source::Lab(l) => l.as_ref(),
            Source::Live(l) => l,
        }
    }
}

pub fn run(_g: &Global, a: Args) -> anyhow::Result<ExitCode> {
    let source = Source::open(a.discovery_file.as_deref(), a.lab)?;
    match wizard::guided(&a.out, source.connect(), &|p| {
        crate::lint::lint(p).error_lines()
    })? {
        Some(_) => Ok(ExitCode::SUCCESS),
        None => {
            eprintln!("nothing written: {} was kept", a.out.display());
            Ok(ExitCode::from(1))
        }
    }
}
