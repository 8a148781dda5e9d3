//! The etcd snapshot contract a client can check without etcd itself: whole
//! 512-byte database pages followed by a 32-byte SHA-256 trailer of those pages
//! (so `size % 512 == 32`). `backup` refuses to keep a file that fails it; the lab
//! etcd produces and restores snapshots in the same shape.

use ring::digest::{SHA256, digest};
use thiserror::Error;

/// etcd (bbolt) database page size.
pub const PAGE: usize = 512;
/// Length of the SHA-256 hash trailer appended to a snapshot.
pub const TRAILER: usize = 32;
/// EtcdRecover upload chunk size (what talosctl sends).
pub const RECOVER_CHUNK: usize = 4096;

#[derive(Debug, Error, PartialEq)]
pub enum SnapshotError {
    #[error(
        "snapshot is {0} bytes; a valid etcd snapshot is whole 512-byte pages plus a 32-byte hash (size % 512 == 32) — it is truncated or not a snapshot"
    )]
    Size(usize),
    #[error("snapshot hash trailer does not match its contents — the file is corrupted")]
    Hash,
    #[error("snapshot is not a lab etcd database: {0}")]
    Format(String),
}

/// The checks a client can make on any etcd snapshot (real or lab): page-aligned
/// size plus trailer, and the trailer is the SHA-256 of everything before it.
pub fn validate_snapshot(bytes: &[u8]) -> Result<(), SnapshotError> {
    if bytes.len() < PAGE + TRAILER || bytes.len() % PAGE != TRAILER {
        return Err(SnapshotError::Size(bytes.len()));
    }
    let (db, trailer) = bytes.split_at(bytes.len() - TRAILER);
    if digest(&SHA256, db).as_ref() != trailer {
        return Err(SnapshotError::Hash);
    }
    Ok(())
}

/// Append the trailer to a page-aligned database.
pub fn seal(mut db: Vec<u8>) -> Vec<u8> {
    let h = digest(&SHA256, &db);
    db.extend_from_slice(h.as_ref());
    db
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_pages_validate_and_damage_is_named() {
        let snap = seal(vec![7u8; PAGE * 2]);
        assert_eq!(validate_snapshot(&snap), Ok(()));
        assert_eq!(
            validate_snapshot(&snap[..snap.len() - 1]),
            Err(SnapshotError::Size(snap.len() - 1))
        );
        let mut bad = snap.clone();
        bad[3] ^= 1;
        assert_eq!(validate_snapshot(&bad), Err(SnapshotError::Hash));
    }
}
