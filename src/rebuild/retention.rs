//! `backup --keep N`: after a new backup is written and verified, delete this
//! cluster's oldest backups beyond the newest N. Only directories that are
//! unmistakably this cluster's complete backups are candidates: the name
//! `<cluster>-YYYYMMDDTHHMMSSZ` that `backup::write` gives, and a readable manifest
//! naming the cluster. Anything else in the directory (other clusters, a half-built
//! `.NAME.partial-PID`, files the user put there) is never touched.

use std::path::{Path, PathBuf};

use thiserror::Error;

use super::backup::{MANIFEST, Manifest};

#[derive(Debug, Error)]
pub enum RetentionError {
    #[error(
        "the new backup was written, but pruning old backups in {dir} failed: {cause}\n  fix: check the permissions of {dir}; remove old backups by hand or run the backup again"
    )]
    Prune { dir: PathBuf, cause: std::io::Error },
}

/// Whether `name` is `<cluster>-` followed by the timestamp `backup::write` uses.
fn is_backup_name(name: &str, cluster: &str) -> bool {
    let Some(stamp) = name.strip_prefix(cluster).and_then(|r| r.strip_prefix('-')) else {
        return false;
    };
    let b = stamp.as_bytes();
    b.len() == 16
        && b[8] == b'T'
        && b[15] == b'Z'
        && b[..8].iter().chain(&b[9..15]).all(u8::is_ascii_digit)
}

/// The names to delete so that the newest `keep` remain (names sort by time).
pub fn to_prune(names: &[String], cluster: &str, keep: usize) -> Vec<String> {
    let mut ours: Vec<&String> = names
        .iter()
        .filter(|n| is_backup_name(n, cluster))
        .collect();
    ours.sort();
    let excess = ours.len().saturating_sub(keep);
    ours.into_iter().take(excess).cloned().collect()
}

/// Delete the oldest of `cluster`'s backups in `dir` beyond `keep`; the deleted paths.
pub fn prune(dir: &Path, cluster: &str, keep: usize) -> Result<Vec<PathBuf>, RetentionError> {
    let err = |cause| RetentionError::Prune {
        dir: dir.to_owned(),
        cause,
    };
    let mut names = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(err)? {
        let entry = entry.map_err(err)?;
        let Ok(name) = entry.file_name().into_string() else {
            continue;
        };
        if !entry.file_type().map_err(err)?.is_dir() {
            continue;
        }
        let manifest = std::fs::read(entry.path().join(MANIFEST))
            .ok()
            .and_then(|b| serde_json::from_slice::<Manifest>(&b).ok());
        if manifest.is_some_and(|m| m.cluster == cluster) {
            names.push(name);
        }
    }
    let mut gone = Vec::new();
    for name in to_prune(&names, cluster, keep) {
        let p = dir.join(&name);
        std::fs::remove_dir_all(&p).map_err(err)?;
        gone.push(p);
    }
    Ok(gone)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_newest_n_of_this_clusters_backups_only() {
        let names: Vec<String> = [
            "homelab-20260101T000000Z",
            "homelab-20260103T000000Z",
            "homelab-20260102T000000Z",
            "homelab-2-20260101T000000Z",
            ".homelab-20260104T000000Z.partial-42",
            "homelab-latest",
            "other-20250101T000000Z",
        ]
        .map(String::from)
        .to_vec();
        assert_eq!(
            to_prune(&names, "homelab", 1),
            ["homelab-20260101T000000Z", "homelab-20260102T000000Z"]
        );
        assert_eq!(to_prune(&names, "homelab", 3), Vec::<String>::new());
        assert_eq!(to_prune(&names, "homelab-2", 1), Vec::<String>::new());
    }

    #[test]
    fn prune_needs_a_manifest_of_the_same_cluster() {
        let tmp = tempfile::tempdir().unwrap();
        let mk = |name: &str, cluster: Option<&str>| {
            let d = tmp.path().join(name);
            std::fs::create_dir(&d).unwrap();
            if let Some(c) = cluster {
                let m = serde_json::json!({"format": 1, "cluster": c, "takenAt": "", "node": "n",
                    "talosPveVersion": "0", "talosVersion": "v1.13.9", "kubernetesVersion": "1.36.3", "files": []});
                std::fs::write(d.join(MANIFEST), m.to_string()).unwrap();
            }
        };
        mk("homelab-20260101T000000Z", Some("homelab"));
        mk("homelab-20260102T000000Z", None);
        mk("homelab-20260103T000000Z", Some("elsewhere"));
        mk("homelab-20260104T000000Z", Some("homelab"));
        let gone = prune(tmp.path(), "homelab", 1).unwrap();
        assert_eq!(gone, [tmp.path().join("homelab-20260101T000000Z")]);
        for kept in [
            "homelab-20260102T000000Z",
            "homelab-20260103T000000Z",
            "homelab-20260104T000000Z",
        ] {
            assert!(tmp.path().join(kept).exists(), "{kept}");
        }
    }
}
