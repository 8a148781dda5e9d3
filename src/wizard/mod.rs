//! The guided wizard (`talos-pve init`, and `up` without a profile on a terminal):
//! questions behind the [`Prompter`] trait, facts from Proxmox behind [`Discovery`],
//! every answer validated as typed, the result a [`Profile`](crate::profile::Profile)
//! saved so the same run can be repeated unattended.
//!
//! `flow::run` is the pure core (answers + discovery → profile); `guided`, `save` and
//! the dialoguer prompter are the shell.
//!
//! It must not overwrite an existing profile without a yes, nor decide validity on
//! its own: the final check is `lint`, plugged in by the caller.

mod discovery;
mod flow;
mod guided;
mod parse;
mod prompter;
mod save;
mod seed;

pub use discovery::{
    Access, Bond, Bridge, Connect, Discovery, DiscoveryError, HostInfo, Inventory, Storage,
};
pub use flow::{Check, Options, Outcome, TokenFile, WizardError, run};
pub use guided::{GuidedError, guided};
pub use prompter::{Answer, DialoguerPrompter, PromptError, Prompter, ScriptedPrompter};
pub use save::{SaveError, render, save};
pub use seed::seed_draft;
