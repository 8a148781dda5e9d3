//! `talos-pve docs`: Markdown network documentation generated from the profile,
//! to stdout or (atomically) to `--out FILE`. Refuses (exit 1) when lint has errors.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;

use super::args::{Global, ProfileArgs};
use super::common::load_profile;
use crate::files::{PUBLIC_MODE, write_atomic};
use crate::plan::Plan;

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub profile: ProfileArgs,
    /// Write the document here instead of stdout (replaced atomically).
    #[arg(long, short = 'o', value_name = "FILE")]
    pub out: Option<PathBuf>,
}

pub fn run(_g: &Global, a: Args) -> anyhow::Result<ExitCode> {
    let path = &a.profile.profile;
    let profile = load_profile(path)?;
    super::lint::gate_warn_on_stderr(&profile, path)?;
    let plan = Plan::build(&profile)?;
    let source = path.file_name().map_or_else(
        || path.display().to_string(),
        |n| n.to_string_lossy().into_owned(),
    );
    let doc = crate::docs::render(&profile, &plan, &source);
    match &a.out {
        Some(out) => {
            write_atomic(out, doc.as_bytes(), PUBLIC_MODE).with_context(|| {
                format!(
                    "cannot write {}; check the directory exists and is writable",
                    out.display()
                )
            })?;
            eprintln!("wrote {}", out.display());
        }
        None => print!("{doc}"),
    }
    Ok(ExitCode::SUCCESS)
}
