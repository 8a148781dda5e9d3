//! Writing files so that nothing is ever half-written: temp file in the same
//! directory, fsync, rename. Secrets get mode 0600 from the moment they exist.
//!
//! Every file talos-pve writes should go through here (today only the lab's
//! `--lab-report` Kubernetes dump does not); a secret must never exist, even briefly,
//! with a mode wider than the one asked for.

use std::io::Write;
use std::path::Path;

/// Mode for key material, talosconfig, kubeconfig and state.
pub const SECRET_MODE: u32 = 0o600;
/// Mode for ordinary output (docs, plans, machine configs without keys).
pub const PUBLIC_MODE: u32 = 0o644;

/// How long a written file must survive.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Durability {
    /// A power loss: fsync the data and the directory entry.
    PowerLoss,
    /// Only a killed process: the kernel's page cache survives it, and a rename is
    /// atomic either way.
    ProcessExit,
}

/// Write `bytes` to a fresh temp file beside `path` (creating the directory), then
/// `publish` it; the temp file never outlives the call.
fn via_temp(
    path: &Path,
    bytes: &[u8],
    mode: u32,
    durability: Durability,
    publish: impl FnOnce(&Path, &Path) -> std::io::Result<()>,
) -> std::io::Result<()> {
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let name = path
        .file_name()
        .ok_or_else(|| std::io::Error::other(format!("{} has no file name", path.display())))?;
    let tmp = dir.join(format!(
        ".{}.tmp-{}",
        name.to_string_lossy(),
        std::process::id()
    ));
    let result = (|| {
        let mut f = open_new(&tmp, mode)?;
        f.write_all(bytes)?;
        if durability == Durability::ProcessExit {
            return publish(&tmp, path);
        }
        f.sync_all()?;
        publish(&tmp, path)?;
        // Make the new directory entry itself durable.
        if let Ok(d) = std::fs::File::open(dir) {
            let _ = d.sync_all();
        }
        Ok(())
    })();
    // After a rename the temp name is gone (NotFound, ignored); after a hard link or
    // a failure it is removed here.
    let _ = std::fs::remove_file(&tmp);
    result
}

/// Atomically replace `path` with `bytes`, created with `mode` (never wider).
pub fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> std::io::Result<()> {
    via_temp(path, bytes, mode, Durability::PowerLoss, |tmp, path| {
        std::fs::rename(tmp, path)
    })
}

/// `write_atomic` without the fsyncs: the file is whole or absent after a killed
/// process, not after a power loss. For the lab's simulated datacenter, saved after
/// every recorded step, where two fsyncs per step are an overhead real hosts do not
/// have (they would distort the benchmarks).
pub fn write_atomic_unsynced(path: &Path, bytes: &[u8], mode: u32) -> std::io::Result<()> {
    via_temp(path, bytes, mode, Durability::ProcessExit, |tmp, path| {
        std::fs::rename(tmp, path)
    })
}

/// Write `bytes` to `path` only if nothing exists there (for secrets bundles:
/// never overwrite). Atomic: the file appears complete or not at all.
pub fn write_new(path: &Path, bytes: &[u8], mode: u32) -> std::io::Result<()> {
    // hard_link fails with AlreadyExists instead of replacing, unlike rename.
    via_temp(path, bytes, mode, Durability::PowerLoss, |tmp, path| {
        std::fs::hard_link(tmp, path)
    })
}

#[cfg(unix)]
fn open_new(path: &Path, mode: u32) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
}

#[cfg(not(unix))]
fn open_new(path: &Path, _mode: u32) -> std::io::Result<std::fs::File> {
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atomic_write_sets_mode_and_replaces() {
        for write in [write_atomic, write_atomic_unsynced] {
            let d = tempfile::tempdir().unwrap();
            replaces_with_mode(&d.path().join("a/b/secret"), write);
        }
    }

    fn replaces_with_mode(p: &Path, write: fn(&Path, &[u8], u32) -> std::io::Result<()>) {
        write(p, b"one", SECRET_MODE).unwrap();
        write(p, b"two", SECRET_MODE).unwrap();
        assert_eq!(std::fs::read(p).unwrap(), b"two");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(
                std::fs::metadata(p).unwrap().permissions().mode() & 0o777,
                0o600
            );
        }
        assert_eq!(
            std::fs::read_dir(p.parent().unwrap()).unwrap().count(),
            1,
            "no temp files left"
        );
    }

    #[test]
    fn write_new_never_overwrites() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("secrets.yaml");
        write_new(&p, b"first", SECRET_MODE).unwrap();
        let e = write_new(&p, b"second", SECRET_MODE).unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::AlreadyExists);
        assert_eq!(std::fs::read(&p).unwrap(), b"first");
    }
}
