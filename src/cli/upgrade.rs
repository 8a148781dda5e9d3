//! `talos-pve upgrade`: after the profile's `talos.version` / `kubernetes.version`
//! were raised, move the running cluster there (`crate::upgrade`). `--dry-run`
//! prints the steps and changes nothing (no host, no state file, no saved lab).

use std::process::ExitCode;

use anyhow::bail;

use super::args::{Global, LabArgs, Output, ProfileArgs};
use super::common::{close_lab, cluster_hosts};
use super::preflight::{PveArgs, runtime};
use super::up::confirm;
use crate::progress::{ProgressMode, Reporter};
use crate::state::State;
use crate::upgrade::{self, Clients, Upgrade};

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub profile: ProfileArgs,
    #[command(flatten)]
    pub lab: LabArgs,
    #[command(flatten)]
    pub pve: PveArgs,
    /// Print exactly what would be done, and do nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Do not ask for confirmation (required without a terminal).
    #[arg(long, short = 'y')]
    pub yes: bool,
    /// Progress display: bars on a terminal, plain timestamped lines otherwise.
    #[arg(long, value_enum, default_value_t = ProgressMode::Auto)]
    pub progress: ProgressMode,
}

pub fn run(g: &Global, a: Args) -> anyhow::Result<ExitCode> {
    let lab = a.lab.options()?;
    let profile = super::common::load_profile(&a.profile.profile)?;
    super::lint::gate(&profile, &a.profile.profile)?;
    let (plan, dir) = super::common::plan_and_dir(&profile, a.profile.dir.as_deref())?;
    crate::dir_lock::hold(&dir)?;
    let rt = runtime()?;
    rt.block_on(async {
        let (dc, env) =
            cluster_hosts(&dir, &profile, &a.profile.profile, lab.as_ref(), &a.pve).await?;
        let result = async {
            let state = State::open(&dir, &profile, &plan)?;
            let drift = state.drift();
            if !drift.identity_changes.is_empty() {
                bail!(
                    "the profile's nodes changed since the last run ({}); `upgrade` changes versions only\n  fix: run `talos-pve up` for node changes first, then `talos-pve upgrade`",
                    drift.identity_changes.join("; ")
                );
            }
            let clients = Clients::open(&env, &dir).await?;
            let running = upgrade::observe(&env, &plan, &clients).await;
            let steps = upgrade::decide(&profile, &plan, &running)?;
            match g.output {
                Output::Json if a.dry_run => println!("{}", serde_json::to_string(&steps)?),
                _ => eprint!("{}", steps.render()),
            }
            if a.dry_run {
                return Ok(false);
            }
            confirm(
                a.yes,
                &format!("Upgrade cluster {} as shown?", plan.cluster),
            )?;
            if drift.profile_changed {
                state.adopt()?;
            }
            let rep = Reporter::select(g.output == Output::Json, a.progress, g.verbose > 0);
            let u = Upgrade {
                env: &env,
                profile: &profile,
                plan: &plan,
                dir: &dir,
                state: &state,
                rep: &rep,
                clients: &clients,
            };
            u.execute(&steps).await?;
            Ok(true)
        }
        .await;
        match (dc, &result) {
            // A dry run leaves even the simulated hosts as they were.
            (Some(dc), Ok(false)) => dc.shutdown(),
            (dc, _) => close_lab(dc, &a.lab)?,
        }
        if result? {
            eprintln!(
                "cluster {} runs Talos {} and Kubernetes {}",
                plan.cluster, profile.talos.version, profile.kubernetes.version
            );
        }
        Ok(ExitCode::SUCCESS)
    })
}
