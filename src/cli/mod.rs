//! The command line: stage one (`args`) only parses what the user typed; stage two
//! (one file per subcommand) loads the profile, touches the system and reports.
//! Errors reach `main` as `anyhow` chains and map to exit codes here.
//!
//! A subcommand file must not hold domain logic: it parses, calls the library, reports.

mod args;
mod common;

mod backup;
mod completions;
mod destroy;
mod diff;
mod docs;

mod generate;
mod init;
mod lab;
mod lint;
mod man;
mod plan;
mod preflight;
mod provision;
mod rebuild;
mod status;
mod up;
mod upgrade;

use std::process::ExitCode;

use clap::Parser;

pub use args::{Cli, Command};

/// Exit codes: 0 success, 1 failure (a step failed, lint found errors), 2 usage/input error.
pub fn main() -> ExitCode {
    crate::tls::install_provider();
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() {
                ExitCode::from(2)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    common::init_tracing(&cli.global);
    match run(cli) {
        Ok(code) => code,
        Err(e) if e.is::<up::Declined>() => {
            eprintln!("{e}");
            ExitCode::SUCCESS
        }
        Err(e) if e.is::<up::Interrupted>() => {
            eprintln!("{e}");
            ExitCode::from(130)
        }
        Err(e) => {
            eprintln!("error: {}", common::error_text(&e));
            ExitCode::from(common::exit_code(&e))
        }
    }
}

pub fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let g = &cli.global;
    match cli.command {
        Command::Init(a) => init::run(g, a),
        Command::Lint(a) => lint::run(g, a),
        Command::Plan(a) => plan::run(g, a),
        Command::Docs(a) => docs::run(g, a),
        Command::Gen(a) => generate::run(g, a),
        Command::Preflight(a) => preflight::run(g, a),
        Command::Provision(a) => provision::run(g, a),
        Command::Destroy(a) => destroy::run(g, a),
        Command::Diff(a) => diff::run(g, a),
        Command::Up(a) => up::run(g, a),
        Command::Upgrade(a) => upgrade::run(g, a),
        Command::Status(a) => status::run(g, a),
        Command::Lab(a) => lab::run(g, a),
        Command::Backup(a) => backup::run(g, a),
        Command::Rebuild(a) => rebuild::run(g, a),
        Command::Completions { shell } => {
            completions::print(shell)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Man(a) => man::run(a),
    }
}
