//! `talos-pve preflight`: read-only checks of the Proxmox side before provisioning.
//! Also home of the connection flags and set-up shared by `provision` and `destroy`.

use std::process::ExitCode;

use anyhow::Context;

use super::args::{Global, Output, ProfileArgs};
use crate::net::AddressBook;
use crate::plan::Plan;
use crate::profile::Profile;
use crate::proxmox::preflight::{Level, PreflightReport, preflight};
use crate::proxmox::settings::{self, Overrides};
use crate::proxmox::{Client, Trust};

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub profile: ProfileArgs,
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
    /// Accept any API certificate (dangerous; PROXMOX_VE_INSECURE=true does the same).
    #[arg(long)]
    pub insecure: bool,
}

/// Everything a Proxmox subcommand works with.
pub(super) struct Session {
    pub profile: Profile,
    pub plan: Plan,
    pub client: Client,
}

pub(super) fn session(p: &ProfileArgs, a: &PveArgs) -> anyhow::Result<Session> {
    let mut profile = super::common::load_profile(&p.profile)?;
    let env = |k: &str| std::env::var(k).ok();
    profile.talos.image_factory = settings::factory_url(&profile, &env);
    let plan =
        Plan::build(&profile).with_context(|| format!("planning {}", p.profile.display()))?;
    let overrides = Overrides {
        fingerprint: a.fingerprint.clone(),
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
    let s = session(&a.profile, &a.pve)?;
    let report = runtime()?.block_on(preflight(&s.client, &s.profile, &s.plan))?;
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
