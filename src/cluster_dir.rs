//! Where a cluster's files live: secrets, talosconfig, kubeconfig, state, lab state.
//!
//! Default `$XDG_DATA_HOME/talos-pve/<cluster>/` (`~/.local/share/...`), outside any
//! git checkout so key material is never committed by accident; `--dir` or
//! `TALOS_PVE_DIR` override it.
//!
//! Paths only: it creates and writes nothing (callers use `files`).

use std::path::{Path, PathBuf};

#[derive(Debug, Clone, PartialEq)]
pub struct ClusterDir {
    pub root: PathBuf,
}

impl ClusterDir {
    /// Resolve from an explicit `--dir`/`TALOS_PVE_DIR` or the XDG default.
    pub fn resolve(explicit: Option<&Path>, cluster: &str) -> Result<Self, String> {
        if let Some(d) = explicit {
            if d.exists() && !d.is_dir() {
                return Err(format!(
                    "{} is a file, not a directory\n  fix: pass --dir (or --out) a directory; it is created when missing",
                    d.display()
                ));
            }
            return Ok(Self { root: d.to_owned() });
        }
        let base = match std::env::var_os("XDG_DATA_HOME").filter(|v| !v.is_empty()) {
            Some(x) => PathBuf::from(x),
            None => {
                let home = std::env::var_os("HOME").filter(|v| !v.is_empty()).ok_or(
                    "neither XDG_DATA_HOME nor HOME is set; pass --dir DIR (or TALOS_PVE_DIR)",
                )?;
                PathBuf::from(home).join(".local/share")
            }
        };
        Ok(Self {
            root: base.join("talos-pve").join(cluster),
        })
    }

    pub fn secrets(&self) -> PathBuf {
        self.root.join("secrets.yaml")
    }
    pub fn talosconfig(&self) -> PathBuf {
        self.root.join("talosconfig")
    }
    pub fn kubeconfig(&self) -> PathBuf {
        self.root.join("kubeconfig")
    }
    pub fn machineconfigs(&self) -> PathBuf {
        self.root.join("machineconfigs")
    }
    pub fn state(&self) -> PathBuf {
        self.root.join("state.json")
    }
    pub fn lab(&self) -> PathBuf {
        self.root.join("lab")
    }
    pub fn backups(&self) -> PathBuf {
        self.root.join("backups")
    }
}
