//! `talos-pve plan`: what will exist, as tables or as the JSON of `plan::Plan`
//! (fields documented in docs/plan-json.md); with `--paths`, the routing rehearsal's
//! flow table instead (docs/routing.md). Refuses (exit 1) when lint has errors.

use std::process::ExitCode;

use super::args::{Global, Output, ProfileArgs};
use super::common::load_profile;
use crate::lint::render_brief as render_findings;
use crate::plan::{Plan, render_text};
use crate::routing::{self, Rehearsal};

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub profile: ProfileArgs,
    /// Print, per node, the path each flow takes (request and reply) and whether it
    /// is symmetric and crosses the gateway, instead of the plan.
    #[arg(long)]
    pub paths: bool,
}

pub fn run(g: &Global, a: Args) -> anyhow::Result<ExitCode> {
    let path = &a.profile.profile;
    let profile = load_profile(path)?;
    let report = super::lint::gate(&profile, path)?;
    let plan = Plan::build(&profile)?;
    let paths = if a.paths {
        Some(Rehearsal::of_profile(&profile, &plan)?)
    } else {
        None
    };
    match g.output {
        Output::Text => {
            match &paths {
                Some(r) => print!("{}", routing::render_text(r)),
                None => print!("{}", render_text(&plan)),
            }
            if !report.is_clean() {
                println!("\nLint");
                print!("{}", render_findings(&report, &path.display().to_string()));
            }
        }
        Output::Json => {
            // Keep stdout pure JSON; warnings go to stderr.
            if !report.is_clean() {
                eprint!("{}", render_findings(&report, &path.display().to_string()));
            }
            match &paths {
                Some(r) => println!("{}", serde_json::to_string_pretty(r)?),
                None => println!("{}", serde_json::to_string_pretty(&plan)?),
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
