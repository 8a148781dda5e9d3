//! `talos-pve lint`.

use std::process::ExitCode;

use super::args::{Global, ProfileArgs};

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub profile: ProfileArgs,
}

pub fn run(_g: &Global, _a: Args) -> anyhow::Result<ExitCode> {
    super::common::not_yet("lint")
}
