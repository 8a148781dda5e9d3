//! Stage one of argument handling: clap types only. Nothing here reads files or
//! the network; each subcommand's own arguments live beside its implementation.

use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};

use super::{
    backup, destroy, diff, docs, generate, init, lab, lint, man, plan, preflight, provision,
    rebuild, status, up, upgrade,
};

#[derive(Debug, Parser)]
#[command(
    name = "talos-pve",
    version,
    about = "Proxmox VE hosts → a running Talos Linux Kubernetes cluster, rebuilt after a disaster"
)]
pub struct Cli {
    #[command(flatten)]
    pub global: Global,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Clone, clap::Args)]
pub struct Global {
    /// More log output on stderr (-v info, -vv debug, -vvv trace).
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// Output format on stdout.
    #[arg(long, global = true, value_enum, default_value_t = Output::Text)]
    pub output: Output,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Output {
    Text,
    Json,
}

/// `--profile` and the cluster directory, shared by every command that acts on a cluster.
#[derive(Debug, Clone, clap::Args)]
pub struct ProfileArgs {
    /// The cluster profile (YAML).
    #[arg(long, short = 'p', value_name = "FILE")]
    pub profile: PathBuf,
    /// Cluster directory (secrets, talosconfig, kubeconfig, state).
    /// Default: $XDG_DATA_HOME/talos-pve/<cluster>.
    #[arg(long, env = "TALOS_PVE_DIR", value_name = "DIR")]
    pub dir: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Guided set-up: ask, discover and write a profile.
    Init(init::Args),
    /// Check a profile's network plan; errors exit non-zero.
    Lint(lint::Args),
    /// Show what will exist: VMs per host, NICs, MACs, addresses, pod CIDRs, routes.
    Plan(plan::Args),
    /// Generate Markdown network documentation from a profile.
    Docs(docs::Args),
    /// Generate secrets, machine configs, talosconfig and kubeconfig.
    Gen(generate::Args),
    /// Check the Proxmox hosts, token permissions, storages and VMIDs.
    Preflight(preflight::Args),
    /// Create (or adopt) the Talos VMs on Proxmox.
    Provision(provision::Args),
    /// Stop and delete this cluster's VMs (only those carrying its marker).
    Destroy(destroy::Args),
    /// The whole bring-up, from bare Proxmox hosts to a working cluster.
    Up(up::Args),
    /// Show how the live cluster differs from the profile (exit 0 none, 1 differences, 2 error).
    Diff(diff::Args),
    /// Upgrade a running cluster to the profile's Talos and Kubernetes versions.
    Upgrade(upgrade::Args),
    /// Show where a cluster stands.
    Status(status::Args),
    /// The simulated datacenter: `lab serve` keeps it running for kubectl and talosctl.
    Lab(lab::Args),
    /// Take an etcd snapshot and save it with the profile and secrets.
    Backup(backup::Args),
    /// Rebuild one node or the whole cluster after a disaster.
    Rebuild(rebuild::Args),
    /// Print shell completions.
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print the man page (roff), or write every subcommand's page with --out DIR.
    Man(man::Args),
}

/// The profile, the lab and the Proxmox connection: all a read-only command that
/// looks at the live cluster needs (`diff`, `status`).
#[derive(Debug, clap::Args)]
pub struct ClusterArgs {
    #[command(flatten)]
    pub profile: ProfileArgs,
    #[command(flatten)]
    pub lab: LabArgs,
    #[command(flatten)]
    pub pve: preflight::PveArgs,
}

/// `--lab` and its knobs, shared by every command that can act on the simulated datacenter.
#[derive(Debug, Clone, clap::Args)]
pub struct LabArgs {
    /// Act on the lab: a simulated Proxmox, Talos nodes and Kubernetes API on loopback,
    /// kept in the cluster directory between commands.
    #[arg(long)]
    pub lab: bool,
    /// Lab pace: real-world latencies are divided by this.
    #[arg(long, value_name = "N", default_value_t = 60.0, requires = "lab")]
    pub lab_speed: f64,
    /// Faults to inject, e.g. `time-not-in-sync=2,pve-lock=3` (names: slow-install,
    /// reboot-loops, time-not-in-sync, drop-streams, pve-lock, pve-595, pve-500,
    /// pve-task-error, slow-crd, upgrade-fails=NODE, kubelet-stays-down=NODE,
    /// etcd-stays-down=NODE, link-names=predictable; see docs/lab.md). Disasters, applied to the saved
    /// lab when the command starts: destroy-vm=NODE, corrupt-etcd=NODE,
    /// hang-node=NODE, lose-control-planes; impostor=NODE (a foreign machine at the
    /// node's management address) needs no saved lab.
    #[arg(long, value_name = "SPEC", requires = "lab")]
    pub lab_faults: Option<String>,
    /// Dump the lab's final state here: VM configs, applied machine configs, every
    /// Kubernetes object.
    #[arg(long, value_name = "DIR", requires = "lab")]
    pub lab_report: Option<PathBuf>,
}

impl LabArgs {
    pub fn options(&self) -> anyhow::Result<Option<crate::lab::LabOptions>> {
        if !self.lab {
            return Ok(None);
        }
        self.lab_options().map(Some)
    }

    /// The lab's pace and faults, validated (whether or not `--lab` was given).
    pub fn lab_options(&self) -> anyhow::Result<crate::lab::LabOptions> {
        if !(self.lab_speed.is_finite() && self.lab_speed >= 1.0) {
            anyhow::bail!(
                "--lab-speed {} must be a number ≥ 1 (60 = a minute becomes a second)\n  fix: pass e.g. --lab-speed 60, or leave it out",
                self.lab_speed
            );
        }
        let faults = crate::lab::LabFaults::parse(self.lab_faults.as_deref().unwrap_or(""))?;
        Ok(crate::lab::LabOptions {
            speed: self.lab_speed,
            faults,
        })
    }
}
