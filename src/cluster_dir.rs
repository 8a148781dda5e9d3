//! Where a cluster's files live: secrets, talosconfig, kubeconfig, state, lab state.
//!
//! Default `$XDG_DATA_HOME/talos-pve/<cluster>/` (`~/.local/share/...`), outside any
//! git checkout so key material is never committed by accident; `--dir` or
//! `TALOS_PVE_DIR` override it.
//!
//! Paths only: it creates and writes nothing (callers use `files`).

use std::path::{Component, Path, PathBuf};

#[derive(Debug, Clone, PartialEq)]
pub struct ClusterDir {
    pub root: PathBuf,
}

/// The cluster name becomes one directory below `talos-pve/`: anything but a single
/// plain component (`..`, `/abs`, `a/b`, empty) would put secrets elsewhere. Lint's
/// NET501 asks for a DNS label; this holds even when lint was skipped.
fn plain_component(cluster: &str) -> Result<(), String> {
    let mut parts = Path::new(cluster).components();
    let plain = matches!(
        (parts.next(), parts.next()),
        (Some(Component::Normal(c)), None) if c == cluster
    ) && !cluster.contains(['\\', '\0']);
    if plain {
        return Ok(());
    }
    Err(format!(
        "cluster name `{}` (metadata.name) is not a plain directory name; the cluster directory would leave $XDG_DATA_HOME/talos-pve/\n  fix: set `metadata.name` to a DNS label such as `homelab` (`talos-pve lint` reports NET501), or pass --dir DIR",
        cluster.escape_debug()
    ))
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
        plain_component(cluster)?;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cluster_directory_never_leaves_its_parent() {
        for bad in [
            "",
            "..",
            ".",
            "../../escaped",
            "/tmp/abs",
            "a/b",
            "a/",
            "x\\y",
        ] {
            let e = ClusterDir::resolve(None, bad).unwrap_err();
            assert!(
                e.contains("metadata.name") && e.contains("\n  fix: "),
                "{bad}: {e}"
            );
        }
        let d = ClusterDir::resolve(None, "homelab").unwrap();
        assert!(
            d.root.ends_with("talos-pve/homelab"),
            "{}",
            d.root.display()
        );
        // An explicit directory is the user's choice and needs no name check.
        let d = ClusterDir::resolve(Some(Path::new("/tmp/x")), "..").unwrap();
        assert_eq!(d.root, Path::new("/tmp/x"));
    }
}
