//! The question flow: a draft profile (pre-filled with the seed layout) that each
//! section edits, every answer parsed and checked as it is typed, a final check through
//! a pluggable hook, and a summary from `plan::Plan::build`.
//!
//! Every question's default is the draft's current value, so re-running a section
//! after a failed final check starts from the person's own answers.
//!
//! One page per section, each owning its questions, defaults and checks: `hosts`,
//! `networks`, `nodes`, `kubernetes`, `addons`. This module keeps the order, the
//! final check and the menu that goes back to any page.

use std::net::Ipv4Addr;
use std::path::PathBuf;

use ipnet::Ipv4Net;
use secrecy::{ExposeSecret, SecretString};
use thiserror::Error;

use super::discovery::{Access, Connect, Discovery, DiscoveryError, HostInfo};
use super::parse::{self, Checked};
use super::prompter::{PromptError, Prompter};
use crate::plan::Plan;
use crate::profile::{
    Host, HostStorageLink, LinkRole, MetalLb, Network, NetworkRole, Node, NodeLink, Profile, Role,
};

#[derive(Debug, Error)]
pub enum WizardError {
    #[error(transparent)]
    Prompt(PromptError),
    #[error(transparent)]
    Discovery(#[from] DiscoveryError),
    #[error("{0}\n  fix: {1}")]
    Unusable(String, String),
    #[error("the wizard was stopped; nothing was written")]
    Aborted,
    /// `<` typed at a text question: back to the previous page (never leaves `run`).
    #[error("went back a page")]
    Back,
}

/// What to type at any text question to go back to the previous page (Esc at a choice).
pub const BACK: &str = "<";

impl From<PromptError> for WizardError {
    fn from(e: PromptError) -> Self {
        match e {
            PromptError::Back => Self::Back,
            e => Self::Prompt(e),
        }
    }
}

/// Final validation of the assembled profile; an empty list means "fine".
/// The commands plug `lint` in here (`lint(p).error_lines()`).
pub type Check<'a> = &'a dyn Fn(&Profile) -> Vec<String>;

pub struct Options<'a> {
    /// Starting values; [`super::seed_draft`] is the seed's corrected layout.
    pub draft: Profile,
    /// Directory proposed for the token file.
    pub token_dir: PathBuf,
    pub check: Check<'a>,
}

/// The secret to store next to the profile (mode 0600), as `proxmox.tokenFile` says.
pub struct TokenFile {
    pub path: PathBuf,
    pub secret: SecretString,
}

pub struct Outcome {
    pub profile: Profile,
    pub token_file: Option<TokenFile>,
}

/// Ask everything and return the profile. Pure apart from the prompter and discovery.
pub fn run(
    p: &mut dyn Prompter,
    connect: &dyn Connect,
    opts: Options<'_>,
) -> Result<Outcome, WizardError> {
    let mut f = Flow {
        p,
        d: opts.draft,
        found: Vec::new(),
        parked_workload: None,
    };
    f.p.note(&format!(
        "Enter keeps the [default]; `{BACK}` at a typed answer (Esc at a choice) goes back a page."
    ));
    // Pages in order; `<` at a text question goes back one. Each page starts from
    // the draft, so going back and forth keeps every answer.
    let mut connected: Option<(Box<dyn Discovery>, Option<TokenFile>)> = None;
    let mut page = 0usize;
    while page < 6 {
        let step = match (page, &connected) {
            (0, _) => f.cluster(),
            (1, _) => f.proxmox(connect, &opts.token_dir).and_then(|(d, t)| {
                f.discover(d.as_ref())?;
                connected = Some((d, t));
                Ok(())
            }),
            (2, _) => f.hosts(),
            (3, _) => f.networks().and_then(|()| f.host_details()),
            (4, Some((d, _))) => f.nodes(d.as_ref()),
            (4, None) => Err(WizardError::Back),
            _ => f.settings(),
        };
        match step {
            Ok(()) => page += 1,
            Err(WizardError::Back) => page = page.saturating_sub(1),
            Err(e) => return Err(e),
        }
    }
    let Some((discovery, token_file)) = connected else {
        return Err(WizardError::Aborted);
    };
    loop {
        f.derive();
        let problems = problems(&f.d, opts.check);
        if problems.is_empty() {
            f.summary();
            return Ok(Outcome {
                profile: f.d,
                token_file,
            });
        }
        f.p.note("The profile has problems:");
        for pr in &problems {
            f.p.note(&format!("  ✗ {pr}"));
        }
        let choices = [
            "Change the networks",
            "Change the nodes",
            "Change Kubernetes, DNS and add-ons",
            "Change the hosts",
            "Change the add-ons",
            "Save anyway",
            "Stop without saving",
        ]
        .map(String::from);
        let choice = match f.p.select("What now?", &choices, 0) {
            Err(PromptError::Back) => continue,
            c => c?,
        };
        let step = match choice {
            0 => f.networks().and_then(|()| f.host_details()),
            1 => f.nodes(discovery.as_ref()),
            2 => f.settings(),
            3 => f.hosts().and_then(|()| f.host_details()),
            4 => f.metallb(),
            5 => {
                f.summary();
                return Ok(Outcome {
                    profile: f.d,
                    token_file,
                });
            }
            _ => return Err(WizardError::Aborted),
        };
        // Back from a page reached through this menu returns to the menu.
        match step {
            Ok(()) | Err(WizardError::Back) => {}
            Err(e) => return Err(e),
        }
    }
}

fn problems(d: &Profile, check: Check<'_>) -> Vec<String> {
    let mut v = check(d);
    if let Err(e) = Plan::build(d) {
        v.push(e.to_string());
    }
    v
}

mod addons;
mod hosts;
mod kubernetes;
mod networks;
mod nodes;

struct Flow<'a> {
    p: &'a mut dyn Prompter,
    d: Profile,
    /// Discovered hosts with their bridges, bonds and storages filled in.
    found: Vec<HostInfo>,
    /// The workload network set aside by answering "one network", restored by "two".
    parked_workload: Option<Network>,
}

/// The `i`-th address after the network address (`10.8.16.0/24`, 20 → 10.8.16.20).
fn nth(net: &Ipv4Net, i: u32) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(net.network()).saturating_add(i))
}

impl Flow<'_> {
    /// Ask until `check` accepts the answer, showing each rejection's reason.
    fn ask<T>(
        &mut self,
        prompt: &str,
        default: &str,
        check: impl Fn(&str) -> Checked<T>,
    ) -> Result<T, WizardError> {
        loop {
            let answer = self.p.input(prompt, Some(default))?;
            if answer.trim() == BACK {
                return Err(WizardError::Back);
            }
            match check(&answer) {
                Ok(v) => return Ok(v),
                Err(why) => self.p.note(&format!("  ✗ {why}")),
            }
        }
    }

    fn net(&self, role: NetworkRole) -> Option<&Network> {
        self.d.network(role)
    }

    fn summary(&mut self) {
        let plan = match Plan::build(&self.d) {
            Ok(p) => p,
            Err(e) => {
                self.p.note(&format!("(no plan: {e})"));
                return;
            }
        };
        let mut out = format!(
            "\nPlan for cluster {} — endpoint {}, Talos {}, Kubernetes {}\n",
            plan.cluster, plan.endpoint, plan.talos_version, plan.kubernetes_version
        );
        for n in &plan.nodes {
            let nics: Vec<String> = match &n.workload {
                Some(w) => [("mgmt", &n.management), ("workload", w)]
                    .iter()
                    .map(|(label, nic)| format!("{label} {} ({})", nic.address, nic.mac))
                    .collect(),
                None => vec![format!("{} ({})", n.management.address, n.management.mac)],
            };
            out.push_str(&format!(
                "  {:<14} on {:<14} VMID {:<5} {:<12} {}  pods {}\n",
                n.name,
                n.host,
                n.vmid,
                n.role.as_str(),
                nics.join("  "),
                n.pod_cidr
            ));
        }
        if let Some(pool) = plan.metallb_pool {
            out.push_str(&format!("  MetalLB pool {pool}\n"));
        }
        if !plan.masquerade {
            out.push_str("  Static routes the gateway needs (pods are not NATed):\n");
            for r in &plan.gateway_routes {
                out.push_str(&format!(
                    "    {} via {}  ({})\n",
                    r.destination, r.via, r.node
                ));
            }
        }
        self.p.note(&out);
    }
}

/// `net` unless it overlaps one of `nets`.
fn no_overlap(net: Ipv4Net, nets: &[Network]) -> Checked<Ipv4Net> {
    match nets
        .iter()
        .find(|o| o.subnet.contains(&net) || net.contains(&o.subnet))
    {
        Some(o) => Err(format!(
            "{net} overlaps the {} network {}",
            o.name, o.subnet
        )),
        None => Ok(net),
    }
}

fn positive(s: &str, what: &str) -> Checked<u32> {
    match parse::number::<u32>(s, what)? {
        0 => Err(format!("the {what} must be above 0")),
        n => Ok(n),
    }
}

fn endpoint_ip(ep: &str) -> Option<Ipv4Addr> {
    crate::plan::endpoint_host(ep)?.parse().ok()
}
