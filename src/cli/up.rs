//! `talos-pve up`: the whole bring-up. Lint → preflight → plan → confirmation →
//! `up::bring_up` → summary. Without `--profile` on a terminal it starts the wizard.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::bail;

use super::args::{Global, LabArgs, Output};
use super::common::{close_lab, hosts, open_lab};
use super::preflight::{PveArgs, print_preflight, runtime};
use crate::addons::ManifestSource;
use crate::cluster_dir::ClusterDir;
use crate::lab::Datacenter;
use crate::plan::{self, Plan};
use crate::profile::Profile;
use crate::progress::{ProgressMode, Reporter};
use crate::proxmox::preflight::preflight;
use crate::state::State;
use crate::up::{self, Env, Summary};

/// How often `up --lab` saves the simulated datacenter between recorded steps.
const AUTOSAVE: std::time::Duration = std::time::Duration::from_millis(100);

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The cluster profile (YAML). Without it, on a terminal, the wizard writes one.
    #[arg(long, short = 'p', value_name = "FILE")]
    pub profile: Option<PathBuf>,
    /// Cluster directory (secrets, talosconfig, kubeconfig, state).
    /// Default: $XDG_DATA_HOME/talos-pve/<cluster>.
    #[arg(long, env = "TALOS_PVE_DIR", value_name = "DIR")]
    pub dir: Option<PathBuf>,
    /// Without --profile: the wizard takes hosts, bridges, storages and used VMIDs from
    /// this YAML or JSON file (docs/discovery-file.md) instead of asking Proxmox.
    #[arg(long, value_name = "FILE", conflicts_with = "profile")]
    pub discovery_file: Option<PathBuf>,
    #[command(flatten)]
    pub lab: LabArgs,
    #[command(flatten)]
    pub pve: PveArgs,
    /// Do not ask for confirmation (required without a terminal).
    #[arg(long, short = 'y')]
    pub yes: bool,
    /// Delete and re-create VMs whose disks, firmware or NICs differ from the plan.
    #[arg(long)]
    pub recreate: bool,
    /// DANGER: bootstrap a new, empty etcd although this cluster was bootstrapped
    /// before (all its Kubernetes objects are lost). Restore from a backup instead:
    /// `talos-pve rebuild cluster --from BACKUP`.
    #[arg(long)]
    pub bootstrap_empty_etcd: bool,
    /// Remove a control plane from the profile even though etcd is left with two
    /// members, which survive no failure (add a replacement first instead).
    #[arg(long)]
    pub allow_etcd_without_fault_tolerance: bool,
    /// Progress display: bars on a terminal, plain timestamped lines otherwise.
    #[arg(long, value_enum, default_value_t = ProgressMode::Auto)]
    pub progress: ProgressMode,
    /// MetalLB manifest source: `embedded`, or a directory holding
    /// metallb-native-v<version>.yaml (air-gapped). Default: the release URL.
    #[arg(long, value_name = "DIR|embedded")]
    pub manifests: Option<String>,
}

pub fn run(g: &Global, a: Args) -> anyhow::Result<ExitCode> {
    let lab = a.lab.options()?;
    let (profile, source) =
        profile_or_wizard(a.profile.as_deref(), a.discovery_file.as_deref(), a.lab.lab)?;
    let report = super::lint::gate(&profile, &source)?;
    let (plan, dir) = super::common::plan_and_dir(&profile, a.dir.as_deref())?;
    crate::dir_lock::hold(&dir)?;
    eprintln!("cluster directory: {}", dir.root.display());
    let rt = runtime()?;
    rt.block_on(async {
        let dc = open_lab(&dir, &profile, lab.as_ref()).await?;
        let env = hosts(
            dc.as_ref(),
            lab.as_ref(),
            &profile,
            &source,
            &a.pve,
            ManifestSource::from_arg(a.manifests.as_deref()),
        )?;
        let knobs = Converge {
            yes: a.yes,
            recreate: a.recreate,
            progress: a.progress,
            bootstrap_empty_etcd: a.bootstrap_empty_etcd,
            allow_etcd_without_fault_tolerance: a.allow_etcd_without_fault_tolerance,
        };
        let result = autosaving(
            dc.as_ref(),
            interruptible(converge(
                g,
                &knobs,
                &env,
                &profile,
                &plan,
                &dir,
                report.notice(),
            )),
        )
        .await;
        let in_lab = dc.is_some();
        close_lab(dc, &a.lab)?;
        let mut summary = result?;
        if in_lab {
            summary.lab = Some(up::LabHints::new(&source, &dir));
        }
        match g.output {
            Output::Json => println!(
                "{}",
                serde_json::json!({"format": crate::progress::EVENTS_FORMAT,
                    "ts": crate::progress::timestamp(time::OffsetDateTime::now_utc()),
                    "event": "summary", "summary": summary})
            ),
            Output::Text => print!("{}", summary.render()),
        }
        Ok(ExitCode::SUCCESS)
    })
}

/// Between recorded steps the simulated hosts keep changing (tasks, installs): save
/// them often while `work` runs, so a killed run leaves them where real hosts would be.
pub(super) async fn autosaving<T>(dc: Option<&Datacenter>, work: impl Future<Output = T>) -> T {
    let autosave = dc.map(|dc| {
        let saver = dc.saver();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(AUTOSAVE).await;
                if let Err(e) = saver.save() {
                    tracing::warn!(error = %e, "lab: could not save the simulated datacenter");
                }
            }
        })
    });
    let out = work.await;
    if let Some(t) = autosave {
        t.abort();
        // Wait for a save in progress, so the caller's final one is the last.
        let _ = t.await;
    }
    out
}

/// Ctrl-C ends the run at its next await; every finished step is recorded (and the
/// lab saved by the caller), so the same command resumes where this one stopped.
pub(super) async fn interruptible<T>(
    work: impl Future<Output = anyhow::Result<T>>,
) -> anyhow::Result<T> {
    tokio::select! {
        r = work => r,
        Ok(()) = tokio::signal::ctrl_c() => Err(Interrupted.into()),
    }
}

/// Ctrl-C during `up` (exit 130, as shells report an interrupted command).
#[derive(Debug, thiserror::Error)]
#[error(
    "interrupted (Ctrl-C); the steps already done are recorded: run the same command again to resume"
)]
pub struct Interrupted;

/// How `converge` asks and shows progress.
pub(super) struct Converge {
    pub yes: bool,
    pub recreate: bool,
    pub progress: ProgressMode,
    /// Bootstrap etcd although the state says this cluster was bootstrapped.
    pub bootstrap_empty_etcd: bool,
    /// Let a removed control plane leave etcd with two members.
    pub allow_etcd_without_fault_tolerance: bool,
}

/// Preflight, plan, confirmation, then the bring-up (idempotent).
pub(super) async fn converge(
    g: &Global,
    a: &Converge,
    env: &Env,
    profile: &Profile,
    plan: &Plan,
    dir: &ClusterDir,
    lint_notice: Option<String>,
) -> anyhow::Result<Summary> {
    let pf = preflight(&env.pve, profile, plan).await.map_err(|e| {
        anyhow::anyhow!(
            "preflight of Proxmox at {}: {e}\n  check: that the API answers for every host (a 595 means the contacted host lost its connection to another one: `pvecm status`), then run again",
            profile.proxmox.endpoint
        )
    })?;
    if !pf.passed() {
        print_preflight(&pf);
        bail!("preflight failed; fix the items marked FAIL and run again");
    }
    let state = State::open(dir, profile, plan)?;
    if g.output == Output::Text {
        eprint!("{}", plan::render_text(plan));
        if let Some(notice) = lint_notice {
            eprintln!("{notice}");
        }
        let done = state.steps();
        if !done.is_empty() {
            eprintln!(
                "already done ({} steps recorded in {}); they are checked again, not repeated",
                done.len(),
                state.path().display()
            );
        }
    }
    let drift = state.drift();
    if !drift.is_empty() {
        eprintln!(
            "the profile changed since the last run: {}",
            drift.identity_changes.join("; ")
        );
    }
    // Nodes the profile no longer lists: refused before anything changes when etcd
    // would lose its fault tolerance, else shown and confirmed with the rest.
    let leaving = up::converge::leaving(env, plan, dir).await?;
    let cps: Vec<&str> = leaving
        .iter()
        .filter(|l| l.control_plane)
        .map(|l| l.node())
        .collect();
    up::converge::etcd_guard(
        plan.control_planes().count(),
        &cps,
        a.allow_etcd_without_fault_tolerance,
    )?;
    let leaving_members = up::converge::members_leaving(env, plan, dir, &leaving).await?;
    for l in &leaving {
        eprintln!("remove {}", l.steps());
    }
    let removing = match leaving.len() {
        0 => String::new(),
        n => format!(", removing {n} node(s) the profile no longer lists"),
    };
    confirm(
        a.yes,
        &format!(
            "Build cluster {} ({} VMs{removing})?",
            plan.cluster,
            plan.nodes.len()
        ),
    )?;
    if !drift.is_empty() {
        state.adopt()?;
    }
    let rep = Reporter::select(g.output == Output::Json, a.progress, g.verbose > 0);
    if a.bootstrap_empty_etcd {
        eprintln!(
            "WARNING: --bootstrap-empty-etcd: if cluster {} was bootstrapped before, a NEW EMPTY etcd is bootstrapped; every Kubernetes object of the old cluster is lost. Restoring a backup (`talos-pve rebuild cluster --from BACKUP`) keeps them.",
            plan.cluster
        );
    }
    let opts = up::Options {
        recreate: a.recreate,
        bootstrap_empty_etcd: a.bootstrap_empty_etcd,
        leaving_members,
    };
    let mut summary = up::bring_up(env, profile, plan, dir, &state, &rep, &opts).await?;
    summary.removed_routes = up::converge::shrink(env, plan, dir, &leaving, &rep).await?;
    reconfigure(a.yes, env, profile, plan, dir, &state, &rep).await?;
    Ok(summary)
}

/// Nodes that already ran get the profile's changes: shown first, applied in place
/// where Talos allows, and a rolling reboot (confirmed) for the rest.
async fn reconfigure(
    yes: bool,
    env: &Env,
    profile: &Profile,
    plan: &Plan,
    dir: &ClusterDir,
    state: &State,
    rep: &Reporter,
) -> anyhow::Result<()> {
    use up::changes;
    let clients = crate::upgrade::Clients::open(env, dir).await?;
    let found = changes::survey(env, plan, dir, &clients).await?;
    if found.is_empty() {
        return Ok(());
    }
    for c in &found {
        eprintln!("{}", c.line());
    }
    let reboots = found.iter().filter(|c| c.reboots()).count();
    if reboots > 0 {
        confirm(
            yes,
            &format!(
                "Reboot {reboots} node(s) one at a time (control planes first, each only while etcd is healthy and every node Ready)?"
            ),
        )?;
    }
    let u = crate::upgrade::Upgrade {
        env,
        profile,
        plan,
        dir,
        state,
        rep,
        clients: &clients,
    };
    changes::apply_in_place(&u, &found).await?;
    changes::rolling_reboot(&u, &found).await?;
    Ok(())
}

/// `--yes`, or a yes on a terminal; never a silent default.
pub(super) fn confirm(yes: bool, question: &str) -> anyhow::Result<()> {
    if yes {
        return Ok(());
    }
    if !std::io::stdin().is_terminal() || !std::io::stderr().is_terminal() {
        bail!(
            "not a terminal, so nobody can confirm\n  fix: re-run with --yes to proceed without asking"
        );
    }
    let ok = dialoguer::Confirm::new()
        .with_prompt(question)
        .default(false)
        .interact()?;
    if !ok {
        return Err(Declined.into());
    }
    Ok(())
}

/// The person answered no: nothing was changed, which is not a failure (exit 0).
#[derive(Debug, thiserror::Error)]
#[error("stopped at the confirmation question; nothing was changed")]
pub struct Declined;

fn profile_or_wizard(
    path: Option<&Path>,
    discovery_file: Option<&Path>,
    lab: bool,
) -> anyhow::Result<(Profile, PathBuf)> {
    if let Some(p) = path {
        return Ok((super::common::load_profile(p)?, p.to_owned()));
    }
    if !std::io::stdin().is_terminal() {
        bail!(
            "no --profile given and no terminal for the wizard\n  fix: pass --profile FILE (e.g. profiles/homelab.yaml), or run `talos-pve init` on a terminal"
        );
    }
    let out = PathBuf::from("talos-pve.yaml");
    // With --lab the wizard discovers the lab, never a real Proxmox.
    let facts = super::init::Source::open(discovery_file, lab)?;
    match crate::wizard::guided(&out, facts.connect(), &|p| {
        crate::lint::lint(p).error_lines()
    })? {
        Some(profile) => Ok((profile, out)),
        None => bail!(
            "stopped: {} was kept and no profile was written",
            out.display()
        ),
    }
}
