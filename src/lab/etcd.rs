//! The lab's etcd: a key/value store that backs the lab Kubernetes API, and its
//! snapshot format. A snapshot follows the real contract the client checks: a
//! database of whole 512-byte pages followed by a 32-byte SHA-256 trailer, so
//! `len % 512 == 32`.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use crate::talos::api::snapshot::{PAGE, TRAILER, seal};
pub use crate::talos::api::snapshot::{SnapshotError, validate_snapshot};

const MAGIC: &[u8; 8] = b"LABETCD1";

/// Keys are `/registry/<resource>/<namespace>/<name>`-like strings; values JSON.
#[derive(Debug, Clone, Default)]
pub struct EtcdStore {
    inner: Arc<Mutex<BTreeMap<String, serde_json::Value>>>,
}

impl EtcdStore {
    pub fn get(&self, key: &str) -> Option<serde_json::Value> {
        self.inner.lock().expect("etcd lock").get(key).cloned()
    }

    pub fn put(&self, key: &str, value: serde_json::Value) {
        self.inner
            .lock()
            .expect("etcd lock")
            .insert(key.to_owned(), value);
    }

    pub fn delete(&self, key: &str) -> Option<serde_json::Value> {
        self.inner.lock().expect("etcd lock").remove(key)
    }

    /// All entries whose key starts with `prefix`, in key order.
    pub fn list(&self, prefix: &str) -> Vec<(String, serde_json::Value)> {
        let m = self.inner.lock().expect("etcd lock");
        m.range(prefix.to_owned()..)
            .take_while(|(k, _)| k.starts_with(prefix))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }

    pub fn len(&self) -> usize {
        self.inner.lock().expect("etcd lock").len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn clear(&self) {
        self.inner.lock().expect("etcd lock").clear();
    }

    /// A snapshot: magic, length-prefixed JSON, zero padding to whole pages, SHA-256 of the pages.
    pub fn snapshot(&self) -> Vec<u8> {
        let json = serde_json::to_vec(&*self.inner.lock().expect("etcd lock"))
            .expect("JSON values serialize");
        let mut db = Vec::with_capacity(json.len() + PAGE + TRAILER);
        db.extend_from_slice(MAGIC);
        db.extend_from_slice(&(json.len() as u64).to_le_bytes());
        db.extend_from_slice(&json);
        db.resize(db.len().div_ceil(PAGE) * PAGE, 0);
        seal(db)
    }

    /// Replace the contents with a snapshot's (etcd recover). `skip_hash` accepts a raw db.
    pub fn restore(&self, bytes: &[u8], skip_hash: bool) -> Result<(), SnapshotError> {
        let db = if skip_hash && bytes.len().is_multiple_of(PAGE) {
            bytes
        } else {
            validate_snapshot(bytes)?;
            &bytes[..bytes.len() - TRAILER]
        };
        if db.len() < 16 || &db[..8] != MAGIC {
            return Err(SnapshotError::Format("missing lab etcd header".into()));
        }
        let n = u64::from_le_bytes(db[8..16].try_into().expect("8 bytes")) as usize;
        let json = db
            .get(16..16 + n)
            .ok_or_else(|| SnapshotError::Format("length past end".into()))?;
        let map = serde_json::from_slice(json).map_err(|e| SnapshotError::Format(e.to_string()))?;
        *self.inner.lock().expect("etcd lock") = map;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshot_round_trips_and_truncation_is_rejected() {
        let s = EtcdStore::default();
        s.put(
            "/registry/namespaces/default",
            serde_json::json!({"kind": "Namespace"}),
        );
        let snap = s.snapshot();
        assert_eq!(snap.len() % 512, 32);
        let t = EtcdStore::default();
        t.restore(&snap, false).unwrap();
        assert_eq!(
            t.get("/registry/namespaces/default"),
            s.get("/registry/namespaces/default")
        );
        assert_eq!(
            t.restore(&snap[..snap.len() - 1], false),
            Err(SnapshotError::Size(snap.len() - 1))
        );
        let mut bad = snap.clone();
        bad[20] ^= 1;
        assert_eq!(t.restore(&bad, false), Err(SnapshotError::Hash));
    }
}
