//! `talos-pve status`: where a cluster stands (VMs, Talos stages, etcd, add-ons,
//! recorded steps). Read-only: it probes, never changes a host; in the lab it does
//! not save the simulated datacenter either. Its exit code is the verdict's
//! (0 healthy, 3 degraded, 4 not built, 5 unknown; docs/architecture.md).

use std::process::ExitCode;

use super::args::{Global, Output};
use super::common::{hosts, open_lab};
use super::preflight::runtime;
use crate::addons::ManifestSource;
use crate::up;

pub use super::args::ClusterArgs as Args;

pub fn run(g: &Global, a: Args) -> anyhow::Result<ExitCode> {
    let lab = a.lab.options()?;
    let profile = super::common::load_profile(&a.profile.profile)?;
    let (plan, dir) = super::common::plan_and_dir(&profile, a.profile.dir.as_deref())?;
    let rt = runtime()?;
    rt.block_on(async {
        let dc = open_lab(&dir, &profile, lab.as_ref()).await?;
        let env = hosts(
            dc.as_ref(),
            lab.as_ref(),
            &profile,
            &a.profile.profile,
            &a.pve,
            ManifestSource::Embedded,
        )?;
        let status = up::status(&env, &plan, &dir).await;
        if let Some(dc) = dc {
            dc.shutdown();
        }
        let mut status = status?;
        let lab_flag = if a.lab.lab { " --lab" } else { "" };
        status.advise(&(up::cluster_args(&a.profile.profile, &dir) + lab_flag));
        match g.output {
            Output::Json => println!("{}", serde_json::to_string(&status)?),
            Output::Text => print!("{}", status.render(terminal_width(), g.verbose > 0)),
        }
        Ok(ExitCode::from(status.verdict.exit_code()))
    })
}

/// The terminal's width when stdout is one (nothing is cut in pipes and files).
fn terminal_width() -> Option<usize> {
    dialoguer::console::Term::stdout()
        .size_checked()
        .map(|(_, cols)| usize::from(cols))
}
