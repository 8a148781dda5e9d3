//! `talos-pve lab serve`: the lab datacenter kept running in the foreground, so real
//! clients (kubectl, talosctl) can poke the simulated cluster until Ctrl-C/SIGTERM.

use std::io::Write;
use std::process::ExitCode;

use clap::Subcommand;

use super::args::{Global, LabArgs, Output, ProfileArgs};
use super::common::close_lab;
use super::preflight::runtime;
use super::up::{Converge, autosaving, converge, interruptible};
use crate::lab::{Access, Datacenter};
use crate::progress::ProgressMode;
use crate::up::Env;

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    pub command: LabCommand,
}

#[derive(Debug, Subcommand)]
pub enum LabCommand {
    /// Bring the lab cluster up (or reopen the saved one) and serve it on loopback
    /// until Ctrl-C; prints `export KUBECONFIG=…` and `export TALOSCONFIG=…` first.
    Serve(ServeArgs),
}

#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    #[command(flatten)]
    pub profile: ProfileArgs,
    /// Lab pace: real-world latencies are divided by this.
    #[arg(long, value_name = "N", default_value_t = 60.0)]
    pub lab_speed: f64,
    /// Progress display of the bring-up: bars on a terminal, plain lines otherwise.
    #[arg(long, value_enum, default_value_t = ProgressMode::Auto)]
    pub progress: ProgressMode,
}

pub fn run(g: &Global, a: Args) -> anyhow::Result<ExitCode> {
    match a.command {
        LabCommand::Serve(s) => serve(g, s),
    }
}

fn serve(g: &Global, a: ServeArgs) -> anyhow::Result<ExitCode> {
    let lab_args = LabArgs {
        lab: true,
        lab_speed: a.lab_speed,
        lab_faults: None,
        lab_report: None,
    };
    let lab = lab_args.lab_options()?;
    let source = &a.profile.profile;
    let profile = super::common::load_profile(source)?;
    let report = super::lint::gate(&profile, source)?;
    let (plan, dir) = super::common::plan_and_dir(&profile, a.profile.dir.as_deref())?;
    // The saved datacenter is shared state: one command at a time, for as long as it serves.
    crate::dir_lock::hold(&dir)?;
    eprintln!("cluster directory: {}", dir.root.display());
    // stdout carries only the exports: the bring-up reports on stderr whatever
    // `--output` says.
    let g = &Global {
        output: Output::Text,
        ..g.clone()
    };
    let knobs = Converge {
        yes: true,
        recreate: false,
        progress: a.progress,
        bootstrap_empty_etcd: false,
        allow_etcd_without_fault_tolerance: false,
    };
    runtime()?.block_on(async {
        let dc = Datacenter::open(&dir.lab(), &profile, &lab).await?;
        let served = async {
            let env = Env::lab(&dc, &profile, &lab)?;
            // A no-op when the saved lab cluster is up already (`up` is idempotent).
            let work = converge(g, &knobs, &env, &profile, &plan, &dir, report.notice());
            autosaving(Some(&dc), interruptible(work)).await?;
            let access = crate::lab::write_access(&dc, &plan, &dir).await?;
            announce(&access, &crate::up::cluster_args(source, &dir))?;
            // Objects kubectl writes live in the lab etcd: keep saving while serving.
            autosaving(Some(&dc), stopped()).await
        }
        .await;
        close_lab(Some(dc), &lab_args)?;
        served?;
        eprintln!(
            "lab stopped; its state is kept in {} (run `lab serve` again to resume)",
            dir.lab().display()
        );
        Ok(ExitCode::SUCCESS)
    })
}

/// The exports first on stdout (scripts read them), the rest on stderr.
fn announce(access: &Access, args: &str) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    writeln!(out, "export KUBECONFIG={}", access.kubeconfig.display())?;
    writeln!(out, "export TALOSCONFIG={}", access.talosconfig.display())?;
    out.flush()?;
    let talos: Vec<String> = access.talos.iter().map(|t| t.to_string()).collect();
    eprintln!(
        "lab serving on loopback: Kubernetes API https://{}, Talos API {}\n  try: kubectl get nodes -o wide; kubectl get pods -A\n  Ctrl-C stops it; `talos-pve status {args} --lab` works while it is stopped",
        access.api,
        talos.join(", "),
    );
    Ok(())
}

/// Ctrl-C or SIGTERM.
async fn stopped() -> anyhow::Result<()> {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        r = tokio::signal::ctrl_c() => r?,
        _ = term.recv() => {}
    }
    Ok(())
}
