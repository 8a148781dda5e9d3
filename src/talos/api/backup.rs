//! Backups: an etcd snapshot taken over the API from a healthy control plane,
//! validated, and written atomically into a timestamped directory beside a copy of
//! the profile and a reference to (not a copy of) the secrets bundle. A manifest
//! written last marks the backup complete. Loading a backup re-validates it.

use std::path::{Path, PathBuf};

use ring::digest::{SHA256, digest};
use serde::{Deserialize, Serialize};
use thiserror::Error;

use super::client::Target;
use super::creds::Credentials;
use super::error::TalosError;
use super::snapshot::{SnapshotError, validate_snapshot};
use super::stages::Stages;
use crate::files::{SECRET_MODE, write_atomic};

pub const SNAPSHOT_FILE: &str = "etcd.snapshot";
pub const PROFILE_FILE: &str = "profile.yaml";
pub const MANIFEST_FILE: &str = "backup.json";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Manifest {
    pub cluster: String,
    /// UTC, RFC 3339.
    pub taken_at: String,
    /// The control plane the snapshot came from.
    pub node: String,
    pub snapshot_file: String,
    pub snapshot_bytes: u64,
    pub snapshot_sha256: String,
    /// Where the profile was read from; a copy is `profile.yaml` beside this file.
    pub profile_source: PathBuf,
    /// The secrets bundle this cluster's configs come from. Not copied: keep it safe
    /// separately; recovery regenerates configs from it.
    pub secrets: PathBuf,
}

#[derive(Debug, Error)]
pub enum BackupError {
    #[error("{path}: {source}\n  fix: check the directory exists and is writable")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "no control plane gave a snapshot:\n{}",
        .attempts.iter().map(|e| format!("  - {e}")).collect::<Vec<_>>().join("\n")
    )]
    NoHealthyControlPlane { attempts: Vec<TalosError> },
    #[error("the profile lists no control planes to take a snapshot from")]
    NoControlPlanes,
    #[error("backup {dir}: {detail}\n  fix: pick another backup directory")]
    Invalid { dir: PathBuf, detail: String },
    #[error("backup {dir}: {source}")]
    Snapshot {
        dir: PathBuf,
        #[source]
        source: SnapshotError,
    },
}

/// What to back up and where.
#[derive(Debug, Clone)]
pub struct BackupRequest<'a> {
    pub cluster: &'a str,
    pub profile: &'a Path,
    pub secrets: &'a Path,
    /// Control planes in preference order.
    pub control_planes: &'a [Target],
    pub credentials: &'a Credentials,
    /// The parent directory; the backup goes into `<cluster>-<timestamp>/` inside it.
    pub out: &'a Path,
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> BackupError + '_ {
    move |source| BackupError::Io {
        path: path.to_owned(),
        source,
    }
}

/// Take a snapshot from the first healthy control plane and write the backup.
/// Returns the backup directory and its manifest.
pub async fn take_backup(
    stages: &Stages,
    req: &BackupRequest<'_>,
) -> Result<(PathBuf, Manifest), BackupError> {
    if req.control_planes.is_empty() {
        return Err(BackupError::NoControlPlanes);
    }
    let profile = std::fs::read(req.profile).map_err(io(req.profile))?;
    let mut attempts = Vec::new();
    let mut got = None;
    for t in req.control_planes {
        match stages.snapshot(t, req.credentials).await {
            Ok(s) => {
                got = Some((t, s));
                break;
            }
            Err(e) => attempts.push(e),
        }
    }
    let (node, snapshot) = got.ok_or(BackupError::NoHealthyControlPlane { attempts })?;
    let now = time::OffsetDateTime::now_utc();
    let stamp = now
        .format(time::macros::format_description!(
            "[year][month][day]T[hour][minute][second]Z"
        ))
        .unwrap_or_default();
    let dir = req.out.join(format!("{}-{stamp}", req.cluster));
    std::fs::create_dir_all(req.out).map_err(io(req.out))?;
    // A fresh directory: never mix two backups.
    std::fs::create_dir(&dir).map_err(io(&dir))?;
    let snap_path = dir.join(SNAPSHOT_FILE);
    write_atomic(&snap_path, &snapshot, SECRET_MODE).map_err(io(&snap_path))?;
    let prof_path = dir.join(PROFILE_FILE);
    write_atomic(&prof_path, &profile, SECRET_MODE).map_err(io(&prof_path))?;
    let manifest = Manifest {
        cluster: req.cluster.to_owned(),
        taken_at: now
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_default(),
        node: node.node.clone(),
        snapshot_file: SNAPSHOT_FILE.into(),
        snapshot_bytes: snapshot.len() as u64,
        snapshot_sha256: hex::encode(digest(&SHA256, &snapshot)),
        profile_source: req.profile.to_owned(),
        secrets: req.secrets.to_owned(),
    };
    let man_path = dir.join(MANIFEST_FILE);
    let json = serde_json::to_vec_pretty(&manifest).map_err(|e| BackupError::Invalid {
        dir: dir.clone(),
        detail: e.to_string(),
    })?;
    write_atomic(&man_path, &json, SECRET_MODE).map_err(io(&man_path))?;
    Ok((dir, manifest))
}

/// Read a backup for recovery: the manifest, and the snapshot after checking its
/// recorded hash and the snapshot contract.
pub fn load_backup(dir: &Path) -> Result<(Manifest, Vec<u8>), BackupError> {
    let man_path = dir.join(MANIFEST_FILE);
    let text = std::fs::read(&man_path).map_err(io(&man_path))?;
    let manifest: Manifest = serde_json::from_slice(&text).map_err(|e| BackupError::Invalid {
        dir: dir.to_owned(),
        detail: format!("{MANIFEST_FILE} is unreadable: {e}"),
    })?;
    let snap_path = dir.join(&manifest.snapshot_file);
    let snapshot = std::fs::read(&snap_path).map_err(io(&snap_path))?;
    if hex::encode(digest(&SHA256, &snapshot)) != manifest.snapshot_sha256 {
        return Err(BackupError::Invalid {
            dir: dir.to_owned(),
            detail: format!(
                "{} does not match the hash in {MANIFEST_FILE}",
                manifest.snapshot_file
            ),
        });
    }
    validate_snapshot(&snapshot).map_err(|source| BackupError::Snapshot {
        dir: dir.to_owned(),
        source,
    })?;
    Ok((manifest, snapshot))
}
