//! `talos-pve completions SHELL`: clap_complete's scripts, the bash one repaired.
//!
//! For a binary name with a hyphen, clap_complete 4.6's bash generator spells a
//! subcommand's state `talos__pve__subcmd__up` where its loop sets it and
//! `talos__subcmd__pve__subcmd__up` where its `case` reads it, so nothing below the
//! top level completes and bash falls back to file names (clap-rs/clap issue #6421,
//! open at the time of writing). The repair spells the readers like the loop.

use std::io::Write;

use clap::CommandFactory;
use clap_complete::Shell;

use super::args::Cli;

const BIN: &str = "talos-pve";

/// The completion script for `shell`.
pub fn script(shell: Shell) -> String {
    let mut cmd = Cli::command();
    let mut out = Vec::new();
    clap_complete::generate(shell, &mut cmd, BIN, &mut out);
    let text = String::from_utf8_lossy(&out).into_owned();
    match shell {
        Shell::Bash => text.replace("talos__subcmd__pve", "talos__pve"),
        _ => text,
    }
}

/// Print the script; a closed pipe is an error, not a panic.
pub fn print(shell: Shell) -> anyhow::Result<()> {
    let mut stdout = std::io::stdout().lock();
    stdout.write_all(script(shell).as_bytes())?;
    stdout.flush()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_bash_state_the_loop_sets_has_a_reader() {
        let s = script(Shell::Bash);
        assert!(
            !s.contains("talos__subcmd__pve"),
            "the upstream misspelling is repaired"
        );
        for line in s.lines().map(str::trim) {
            if let Some(state) = line
                .strip_prefix("cmd=\"")
                .and_then(|r| r.strip_suffix('"'))
                .filter(|s| !s.is_empty())
            {
                assert!(
                    s.contains(&format!("        {state})")),
                    "no case arm reads {state}"
                );
            }
        }
    }
}
