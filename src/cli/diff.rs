//! `talos-pve diff`: how the live cluster differs from the profile (`crate::diff`).
//! Read-only; in the lab the simulated datacenter is not saved either.
//!
//! Exit codes, as diff(1): 0 no differences, 1 differences, 2 the comparison could
//! not be made (bad input, or Proxmox, Talos or Kubernetes could not be read).

use std::process::ExitCode;

use super::args::{Global, Output};
use super::common::cluster_hosts;
use super::preflight::runtime;

pub use super::args::ClusterArgs as Args;

pub fn run(g: &Global, a: Args) -> anyhow::Result<ExitCode> {
    match compare(g, &a) {
        Ok(0) => Ok(ExitCode::SUCCESS),
        Ok(_) => Ok(ExitCode::from(1)),
        Err(e) => {
            eprintln!("error: {}", super::common::error_text(&e));
            Ok(ExitCode::from(2))
        }
    }
}

fn compare(g: &Global, a: &Args) -> anyhow::Result<usize> {
    let lab = a.lab.options()?;
    let profile = super::common::load_profile(&a.profile.profile)?;
    let (plan, dir) = super::common::plan_and_dir(&profile, a.profile.dir.as_deref())?;
    let rt = runtime()?;
    rt.block_on(async {
        let (dc, env) =
            cluster_hosts(&dir, &profile, &a.profile.profile, lab.as_ref(), &a.pve).await?;
        let d = crate::diff::diff(&env, &profile, &plan, &dir).await;
        if let Some(dc) = dc {
            dc.shutdown();
        }
        let d = d?;
        match g.output {
            Output::Json => println!(
                "{}",
                serde_json::json!({"differences": d.count(), "diff": d})
            ),
            Output::Text => print!("{}", d.render()),
        }
        Ok(d.count())
    })
}
