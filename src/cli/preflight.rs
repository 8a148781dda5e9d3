//! `talos-pve preflight`: read-only checks of the Proxmox side before provisioning.
//! Also home of the connection flags and set-up shared by `provision` and `destroy`.

use std::process::ExitCode;

use anyhow::Context;

use super::args::{Global, LabArgs, Output, ProfileArgs};
use super::common::close_lab;
use crate::lab::{Datacenter, LabOptions};
use crate::net::AddressBook;
use crate::plan::Plan;
use crate::profile::Profile;
use crate::proxmox::factory::Factory;
use crate::proxmox::preflight::{Level, PreflightReport, preflight};
use crate::proxmox::settings::{self, Overrides};
use crate::proxmox::{Client, Trust};
use crate::up::Env;

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub profile: ProfileArgs,
    #[command(flatten)]
    pub lab: LabArgs,
    #[command(flatten)]
    pub pve: PveArgs,
}

/// How to reach and trust the Proxmox API (credentials come from the environment).
#[derive(Debug, Clone, clap::Args)]
pub struct PveArgs {
    /// Pin the API certificate's SHA-256 fingerprint (AA:BB:…); beats
    /// PROXMOX_VE_FINGERPRINT and `proxmox.fingerprint`.
    #[arg(long, value_name = "SHA256")]
    pub fingerprint: Option<String>,
    /// Trust the Proxmox cluster's CA (a copy of /etc/pve/pve-root-ca.pem); beats
    /// the profile's `proxmox.caFile` and `proxmox.fingerprint`.
    #[arg(long, value_name = "FILE")]
    pub pve_ca: Option<std::path::PathBuf>,
    /// Accept any API certificate (dangerous; PROXMOX_VE_INSECURE=true does the same).
    #[arg(long)]
    pub insecure: bool,
}

/// Everything a Proxmox subcommand works with.
pub(super) struct Session {
    pub profile: Profile,
    pub plan: Plan,
    pub client: Client,
    /// With `--lab`: the simulated datacenter (saved by `close`) and its Image Factory.
    pub lab: Option<(Datacenter, Factory)>,
}

impl Session {
    /// Persist the lab (with `--lab`) for the next command; call after success and failure.
    pub fn close(self, a: &LabArgs) -> anyhow::Result<()> {
        close_lab(self.lab.map(|(dc, _)| dc), a)
    }
}

/// The Proxmox side a command acts on: the lab's (with `--lab`, reopened from the
/// cluster directory) or the real API the profile names.
pub(super) async fn session(
    p: &ProfileArgs,
    a: &PveArgs,
    lab: Option<&LabOptions>,
) -> anyhow::Result<Session> {
    let Some(o) = lab else {
        return real_session(p, a);
    };
    let profile = super::common::load_profile(&p.profile)?;
    let (plan, dir) = super::common::plan_and_dir(&profile, p.dir.as_deref())?;
    // The saved datacenter is shared state: one command at a time.
    crate::dir_lock::hold(&dir)?;
    let dc = Datacenter::open(&dir.lab(), &profile, o).await?;
    let env = Env::lab(&dc, &profile, o)?;
    Ok(Session {
        profile,
        plan,
        client: env.pve,
        lab: Some((dc, env.factory)),
    })
}

fn real_session(p: &ProfileArgs, a: &PveArgs) -> anyhow::Result<Session> {
    let mut profile = super::common::load_profile(&p.profile)?;
    let env = |k: &str| std::env::var(k).ok();
    profile.talos.image_factory = settings::factory_url(&profile, &env);
    let plan =
        Plan::build(&profile).with_context(|| format!("planning {}", p.profile.display()))?;
    let overrides = Overrides {
        fingerprint: a.fingerprint.clone(),
        ca_file: a.pve_ca.clone(),
        insecure: a.insecure,
    };
    let cfg = settings::client_config(&profile, p.profile.parent(), &overrides, &env)?;
    if cfg.trust == Trust::Insecure {
        eprintln!(
            "WARNING: TLS verification of {} is disabled (--insecure / PROXMOX_VE_INSECURE). \
             Anyone on the network path can read the API token. Pin the certificate instead: \
             --fingerprint or `proxmox.fingerprint`.",
            cfg.endpoint
        );
    }
    let client = Client::new(cfg, &AddressBook::direct())?;
    Ok(Session {
        profile,
        plan,
        client,
        lab: None,
    })
}

pub(super) fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the async runtime")
}

pub(super) fn print_preflight(r: &PreflightReport) {
    println!(
        "Proxmox {} ({})",
        r.endpoint,
        r.version.as_deref().unwrap_or("version unknown")
    );
    for c in &r.checks {
        let mark = match c.level {
            Level::Ok => "ok  ",
            Level::Warn => "WARN",
            Level::Fail => "FAIL",
        };
        println!("  [{mark}] {}: {}", c.what, c.detail);
        if c.level != Level::Ok
            && let Some(f) = &c.fix
        {
            for line in f.lines() {
                println!("         fix: {line}");
            }
        }
    }
}

pub fn run(g: &Global, a: Args) -> anyhow::Result<ExitCode> {
    let lab = a.lab.options()?;
    let rt = runtime()?;
    let s = rt.block_on(session(&a.profile, &a.pve, lab.as_ref()))?;
    let report = rt.block_on(preflight(&s.client, &s.profile, &s.plan));
    rt.block_on(async { s.close(&a.lab) })?;
    let report = report?;
    match g.output {
        Output::Json => println!("{}", serde_json::to_string_pretty(&report)?),
        Output::Text => print_preflight(&report),
    }
    Ok(if report.passed() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}
