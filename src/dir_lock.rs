//! One command at a time per cluster directory: an exclusive lock on
//! `<dir>/.lock`, held until the process exits, and the clean-up that is only
//! safe under it.
//!
//! A second command waits briefly for the holder, then refuses naming the holder's
//! PID and command (written into the lock file by whoever holds it). The lock is
//! the kernel's (`File::try_lock`), so a killed holder releases it.
//!
//! Under the lock: temporary files of `files::write_atomic` left by a killed run
//! (`.NAME.tmp-PID`, possibly holding key material) and half-built backups
//! (`.NAME.partial-PID/`, `rebuild::backup`) are removed when their PID is not a
//! live process.

use std::collections::BTreeMap;
use std::fs::{File, TryLockError};
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use thiserror::Error;

use crate::cluster_dir::ClusterDir;

/// How long a second command waits for the holder before refusing.
const WAIT: Duration = Duration::from_secs(3);
const POLL: Duration = Duration::from_millis(100);

#[derive(Debug, Error)]
pub enum LockError {
    #[error(
        "cluster directory {dir} is in use by {holder}\n  fix: wait until that command finishes and run again; if it hangs, stop it (`kill PID`): the lock is released when it exits"
    )]
    Busy { dir: String, holder: String },
    #[error("locking cluster directory {dir}: {source}\n  fix: check its permissions")]
    Io {
        dir: String,
        #[source]
        source: std::io::Error,
    },
}

/// Locks this process holds, by directory (a command may resolve its directory twice).
fn held() -> &'static Mutex<BTreeMap<PathBuf, File>> {
    static HELD: OnceLock<Mutex<BTreeMap<PathBuf, File>>> = OnceLock::new();
    HELD.get_or_init(Mutex::default)
}

/// Take the directory's lock for the rest of the process (creating the directory),
/// then remove stale temporary files in it.
pub fn hold(dir: &ClusterDir) -> Result<(), LockError> {
    let mut held = held().lock().unwrap_or_else(|p| p.into_inner());
    if held.contains_key(&dir.root) {
        return Ok(());
    }
    let io = |source| LockError::Io {
        dir: dir.root.display().to_string(),
        source,
    };
    std::fs::create_dir_all(&dir.root).map_err(io)?;
    let mut f = open(&dir.root.join(".lock")).map_err(io)?;
    let start = Instant::now();
    loop {
        match f.try_lock() {
            Ok(()) => break,
            Err(TryLockError::WouldBlock) if start.elapsed() < WAIT => std::thread::sleep(POLL),
            Err(TryLockError::WouldBlock) => {
                let mut holder = String::new();
                let _ = f.read_to_string(&mut holder);
                return Err(LockError::Busy {
                    dir: dir.root.display().to_string(),
                    holder: match holder.trim() {
                        "" => "another talos-pve command".to_owned(),
                        h => h.to_owned(),
                    },
                });
            }
            Err(TryLockError::Error(e)) => return Err(io(e)),
        }
    }
    let command: Vec<String> = std::env::args().skip(1).take(2).collect();
    let me = format!(
        "talos-pve PID {} (`talos-pve {}`)\n",
        std::process::id(),
        command.join(" ")
    );
    f.set_len(0).map_err(io)?;
    f.rewind().map_err(io)?;
    f.write_all(me.as_bytes()).map_err(io)?;
    remove_stale_temps(&dir.root, 3);
    held.insert(dir.root.clone(), f);
    Ok(())
}

/// The lock file, created 0600 when missing, never truncated (it names the holder).
fn open(path: &Path) -> std::io::Result<File> {
    let mut o = std::fs::OpenOptions::new();
    o.read(true).write(true).create(true).truncate(false);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut o, crate::files::SECRET_MODE);
    o.open(path)
}

/// The PID in a temporary name: `.NAME.tmp-PID` for files, `.NAME.partial-PID`
/// for directories.
fn temp_pid(name: &str, dir: bool) -> Option<u32> {
    if !name.starts_with('.') {
        return None;
    }
    let (_, pid) = name.rsplit_once(if dir { ".partial-" } else { ".tmp-" })?;
    pid.parse().ok()
}

/// Whether `pid` is a live process. Without `/proc` nobody can tell: alive (kept).
fn alive(pid: u32) -> bool {
    let proc = Path::new("/proc");
    !proc.is_dir() || proc.join(pid.to_string()).exists()
}

/// Remove dead processes' temporary files under `dir` (not following symlinks).
fn remove_stale_temps(dir: &Path, depth: u32) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        // `file_type` does not follow symlinks: a link is neither a file nor a dir here.
        let Ok(t) = e.file_type() else { continue };
        let path = e.path();
        let stale = temp_pid(&e.file_name().to_string_lossy(), t.is_dir())
            .is_some_and(|pid| pid != std::process::id() && !alive(pid));
        let removed = match (stale, t.is_dir(), t.is_file()) {
            (true, true, _) => std::fs::remove_dir_all(&path),
            (true, _, true) => std::fs::remove_file(&path),
            (false, true, _) if depth > 0 => {
                remove_stale_temps(&path, depth - 1);
                continue;
            }
            _ => continue,
        };
        match removed {
            Ok(()) => {
                tracing::info!(path = %path.display(), "removed what a killed run left half-written")
            }
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "could not remove a stale temporary file")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn temp_names_are_recognised() {
        assert_eq!(temp_pid(".secrets.yaml.tmp-4242", false), Some(4242));
        assert_eq!(temp_pid("secrets.yaml.tmp-4242", false), None);
        assert_eq!(temp_pid(".a.tmp-x", false), None);
        assert_eq!(temp_pid(".homelab-1Z.partial-7", true), Some(7));
        assert_eq!(temp_pid(".homelab-1Z.partial-7", false), None);
        assert!(alive(std::process::id()));
    }

    #[test]
    fn stale_temps_go_and_live_ones_stay() {
        let d = tempfile::tempdir().unwrap();
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let dead = child.id();
        child.wait().unwrap();
        let sub = d.path().join("machineconfigs");
        std::fs::create_dir_all(&sub).unwrap();
        let stale = sub.join(format!(".n1.yaml.tmp-{dead}"));
        let live = d
            .path()
            .join(format!(".secrets.yaml.tmp-{}", std::process::id()));
        let other = d.path().join("notes.tmp-1");
        for p in [&stale, &live, &other] {
            std::fs::write(p, "x").unwrap();
        }
        let backup = d.path().join(format!("backups/.homelab-1Z.partial-{dead}"));
        std::fs::create_dir_all(&backup).unwrap();
        std::fs::write(backup.join("secrets.yaml"), "x").unwrap();
        remove_stale_temps(d.path(), 3);
        assert!(!stale.exists() && !backup.exists());
        assert!(live.exists() && other.exists());
    }
}
