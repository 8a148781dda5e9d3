//! `talos-pve man [--out DIR]`: the manual. The main page lists the subcommands as
//! `talos-pve-<name>(1)`; `--out` writes those pages too, one per subcommand at
//! every depth (`talos-pve-lab-serve.1`), so the references resolve.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::CommandFactory;

use super::args::Cli;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Write every page (talos-pve.1 and talos-pve-<subcommand>.1) into this
    /// directory, e.g. ~/.local/share/man/man1; without it, print the main page.
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
}

/// Write every page into `dir` (created when missing); returns the files written.
pub fn write_all(dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    use anyhow::Context;
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    clap_mangen::generate_to(Cli::command(), dir)
        .with_context(|| format!("writing man pages into {}", dir.display()))?;
    let mut pages: Vec<PathBuf> = std::fs::read_dir(dir)?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("talos-pve") && n.ends_with(".1"))
        })
        .collect();
    pages.sort();
    Ok(pages)
}

pub fn run(a: Args) -> anyhow::Result<ExitCode> {
    match &a.out {
        Some(dir) => {
            let pages = write_all(dir)?;
            eprintln!("{} man pages in {}", pages.len(), dir.display());
        }
        None => {
            let mut page = Vec::new();
            clap_mangen::Man::new(Cli::command()).render(&mut page)?;
            let mut stdout = std::io::stdout().lock();
            stdout.write_all(&page)?;
            stdout.flush()?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every `talos-pve-…(1)` a page refers to is a page that exists.
    #[test]
    fn every_referenced_page_is_written() {
        let dir = tempfile::tempdir().unwrap();
        let pages = write_all(dir.path()).unwrap();
        let names: Vec<String> = pages
            .iter()
            .map(|p| p.file_stem().unwrap().to_string_lossy().into_owned())
            .collect();
        for want in [
            "talos-pve",
            "talos-pve-up",
            "talos-pve-lab-serve",
            "talos-pve-rebuild-node",
        ] {
            assert!(names.contains(&want.to_owned()), "{want}: {names:?}");
        }
        let refs = regex::Regex::new(r"(talos\\-pve(?:\\-[a-z]+)+)\(1\)").unwrap();
        let mut seen = 0;
        for p in &pages {
            let text = std::fs::read_to_string(p).unwrap();
            for c in refs.captures_iter(&text) {
                seen += 1;
                let name = c[1].replace("\\-", "-");
                assert!(
                    names.contains(&name),
                    "{} refers to {name}(1), which is missing",
                    p.display()
                );
            }
        }
        assert!(
            seen > 10,
            "the pages refer to each other ({seen} references)"
        );
    }
}
