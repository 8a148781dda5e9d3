//! The cluster's identity, which is not its name: two cluster directories made from
//! one profile share `metadata.name`, never this.
//!
//! Derived from the secrets bundle's random `cluster.id` (Talos's own cluster
//! identity), so it lives as long as the bundle and comes back with it when the
//! bundle is restored from a backup. The ID is 16 hex digits of SHA-256 over that
//! value: short, and valid in a Proxmox tag (`[a-z0-9_][a-z0-9_\-+.]*`).
//!
//! `up` creates VMs while the bundle is still being generated, yet every VM must
//! carry the ID. So before the first VM, a directory without a bundle gets a pending
//! `cluster.id` value in `<dir>/cluster-id` (written once, 0600); the bundle is then
//! generated with exactly that value (`artifacts`), which makes the file redundant.

use std::fmt;

use anyhow::{Context, bail};

use crate::cluster_dir::ClusterDir;
use crate::files::{self, SECRET_MODE};
use crate::pki::SecretsBundle;
use crate::proxmox::ownership::Owner;
use crate::state::State;

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ClusterId(String);

impl ClusterId {
    /// The ID of a Talos `cluster.id` value.
    pub fn of(talos_cluster_id: &str) -> Self {
        let d = ring::digest::digest(
            &ring::digest::SHA256,
            format!("talos-pve cluster id\n{talos_cluster_id}").as_bytes(),
        );
        Self(hex::encode(&d.as_ref()[..8]))
    }

    /// An ID as written in a marker: exactly 16 lowercase hex digits.
    pub fn parse(s: &str) -> Option<Self> {
        (s.len() == 16
            && s.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)))
        .then(|| Self(s.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ClusterId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// `<dir>/cluster-id`: the `cluster.id` a bundle not yet written will have.
fn pending_path(dir: &ClusterDir) -> std::path::PathBuf {
    dir.root.join("cluster-id")
}

/// The pending `cluster.id` value, if the directory has one.
pub fn pending(dir: &ClusterDir) -> anyhow::Result<Option<String>> {
    let path = pending_path(dir);
    match std::fs::read_to_string(&path) {
        Ok(s) if !s.trim().is_empty() => Ok(Some(s.trim().to_owned())),
        Ok(_) => bail!(
            "{} is empty\n  fix: delete it when no VM of this cluster exists yet; otherwise restore it (its VMs carry the ID made from it)",
            path.display()
        ),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

/// Drop the pending value once the bundle carries it.
pub fn settle(dir: &ClusterDir) {
    let _ = std::fs::remove_file(pending_path(dir));
}

/// The ID of this directory's cluster, if it has one yet (bundle, else pending).
pub fn read(dir: &ClusterDir) -> anyhow::Result<Option<ClusterId>> {
    let secrets = dir.secrets();
    if secrets.exists() {
        let text = zeroize::Zeroizing::new(
            std::fs::read_to_string(&secrets)
                .with_context(|| format!("reading {}", secrets.display()))?,
        );
        let b = SecretsBundle::parse(&text)
            .with_context(|| format!("loading {}", secrets.display()))?;
        return Ok(Some(ClusterId::of(b.cluster.id.expose())));
    }
    Ok(pending(dir)?.as_deref().map(ClusterId::of))
}

/// The ID, made (as a pending value) when the directory has none: call before the
/// first VM of the cluster is created.
pub fn establish(dir: &ClusterDir) -> anyhow::Result<ClusterId> {
    if let Some(id) = read(dir)? {
        return Ok(id);
    }
    // The same kind of value `talosctl gen secrets` puts in `cluster.id`.
    let value = SecretsBundle::new_cluster_id()?;
    let path = pending_path(dir);
    match files::write_new(&path, format!("{value}\n").as_bytes(), SECRET_MODE) {
        Ok(()) => Ok(ClusterId::of(&value)),
        // Another process was first: its value counts.
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            read(dir)?.with_context(|| format!("{} vanished while being read", path.display()))
        }
        Err(e) => Err(e).with_context(|| format!("writing {}", path.display())),
    }
}

/// Who a command acts for: the directory's cluster ID, made when `make` and there is
/// none yet, and the VMs its state recorded (see `ownership::Owner`). `None` when
/// the directory has no ID and `make` is false.
pub fn owner(dir: &ClusterDir, cluster: &str, make: bool) -> anyhow::Result<Option<Owner>> {
    let id = match make {
        true => Some(establish(dir)?),
        false => read(dir)?,
    };
    let Some(id) = id else { return Ok(None) };
    let recorded = State::read(&dir.state())?
        .map(|r| r.vms())
        .unwrap_or_default();
    Ok(Some(Owner {
        cluster: cluster.to_owned(),
        id,
        recorded,
    }))
}

/// `owner` for commands that create VMs: the ID is made when missing.
pub fn owner_making(dir: &ClusterDir, cluster: &str) -> anyhow::Result<Owner> {
    owner(dir, cluster, true)?.context("a cluster ID was just established")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_tag_safe_and_stable() {
        let a = ClusterId::of("abc");
        assert_eq!(a, ClusterId::of("abc"));
        assert_ne!(a, ClusterId::of("abd"));
        assert_eq!(ClusterId::parse(a.as_str()), Some(a.clone()));
        assert_eq!(ClusterId::parse("ABCDEF0123456789"), None);
        assert_eq!(ClusterId::parse("abc"), None);
    }

    #[test]
    fn a_pending_id_is_made_once_and_survives() {
        let d = tempfile::tempdir().unwrap();
        let dir = ClusterDir {
            root: d.path().to_owned(),
        };
        assert_eq!(read(&dir).unwrap(), None);
        let id = establish(&dir).unwrap();
        assert_eq!(establish(&dir).unwrap(), id);
        assert_eq!(read(&dir).unwrap(), Some(id));
        settle(&dir);
        assert_eq!(read(&dir).unwrap(), None);
    }
}
