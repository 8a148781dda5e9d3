//! `talos-pve backup`: an etcd snapshot from a healthy control plane, saved with a
//! copy of the profile into `<cluster dir>/backups/<cluster>-<timestamp>/` (or
//! `--out DIR`). The work is `talos::api::backup`; this is the shell around it.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;

use super::args::{Global, Output, ProfileArgs};
use crate::cluster_dir::ClusterDir;
use crate::net::AddressBook;
use crate::plan::Plan;
use crate::talos::api::backup::{BackupRequest, take_backup};
use crate::talos::api::{Stages, Talosconfig, Target, Timeouts};

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub profile: ProfileArgs,
    /// Parent directory for the backup (default: <cluster dir>/backups).
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
}

pub fn run(g: &Global, a: Args) -> anyhow::Result<ExitCode> {
    let profile = super::common::load_profile(&a.profile.profile)?;
    let plan = Plan::build(&profile).context("deriving the plan")?;
    let dir =
        ClusterDir::resolve(a.profile.dir.as_deref(), &plan.cluster).map_err(anyhow::Error::msg)?;
    if !dir.talosconfig().exists() {
        anyhow::bail!(
            "no cluster `{}` at {}: {} does not exist\n  fix: pass the cluster's directory with --dir (or TALOS_PVE_DIR), or create the cluster first (`talos-pve up`; `talos-pve gen` writes just the talosconfig)",
            plan.cluster,
            dir.root.display(),
            dir.talosconfig().display()
        );
    }
    let talosconfig = Talosconfig::load(&dir.talosconfig())?;
    // The bootstrap node first: it is the one most likely to be healthy.
    let mut cps: Vec<Target> = plan.control_planes().map(Target::of).collect();
    cps.sort_by_key(|t| t.node != plan.bootstrap_node);
    let out = a.out.unwrap_or_else(|| dir.backups());
    let req = BackupRequest {
        cluster: &plan.cluster,
        profile: &a.profile.profile,
        secrets: &dir.secrets(),
        control_planes: &cps,
        credentials: &talosconfig.credentials,
        out: &out,
    };
    let stages = Stages::new(AddressBook::direct(), Timeouts::default());
    let rt = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    let (path, manifest) = rt.block_on(take_backup(&stages, &req))?;
    match g.output {
        Output::Json => println!("{}", serde_json::to_string_pretty(&manifest)?),
        Output::Text => println!(
            "backup of {} ({} bytes from {}) written to {}\nkeep {} safe as well: recovery needs it",
            manifest.cluster,
            manifest.snapshot_bytes,
            manifest.node,
            path.display(),
            manifest.secrets.display()
        ),
    }
    Ok(ExitCode::SUCCESS)
}
