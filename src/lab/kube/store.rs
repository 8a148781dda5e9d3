//! Kubernetes objects in the lab etcd: keys, resource versions, and the write
//! semantics the real API server has (server-side apply with managed fields and
//! conflicts, JSON merge patch, no-op writes that change nothing), and the history of
//! changes that watches are served from: every write and delete takes the next
//! resource version and is recorded, in order, as an ADDED / MODIFIED / DELETED
//! event; the oldest are dropped past `HISTORY` (etcd compaction: a watch from a
//! version no longer held is refused with 410 Gone).

use std::collections::VecDeque;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use serde_json::{Map, Value, json};

use crate::lab::EtcdStore;

/// The resource version counter lives in etcd too, so a restored snapshot continues it.
const RV_KEY: &str = "/_lab/resourceVersion";

pub fn key(group: &str, plural: &str, ns: Option<&str>, name: &str) -> String {
    let g = if group.is_empty() { "core" } else { group };
    match ns {
        Some(ns) => format!("/registry/{g}/{plural}/{ns}/{name}"),
        None => format!("/registry/{g}/{plural}/{name}"),
    }
}

pub fn prefix(group: &str, plural: &str, ns: Option<&str>) -> String {
    let g = if group.is_empty() { "core" } else { group };
    match ns {
        Some(ns) => format!("/registry/{g}/{plural}/{ns}/"),
        None => format!("/registry/{g}/{plural}/"),
    }
}

/// Changes kept for watches.
const HISTORY: usize = 1024;

/// One change: what a watch event carries.
#[derive(Debug, Clone)]
pub struct Change {
    pub rv: u64,
    pub key: String,
    /// `ADDED`, `MODIFIED` or `DELETED`.
    pub kind: &'static str,
    /// The object as of `rv` (for a deletion: its last state, with `rv`).
    pub object: Value,
}

#[derive(Debug)]
pub struct Store {
    pub etcd: EtcdStore,
    writes: AtomicU64,
    /// Signalled on every change, so the controllers react at once, as informers do.
    changed: tokio::sync::Notify,
    /// Held across a write, so versions and the history stay in one order.
    history: Mutex<VecDeque<Change>>,
    /// The latest resource version, for watchers.
    latest: tokio::sync::watch::Sender<u64>,
}

/// A watch asked for changes after a version the history no longer holds.
#[derive(Debug, PartialEq)]
pub struct Expired {
    pub oldest: u64,
}

pub fn now() -> String {
    time::OffsetDateTime::now_utc()
        .replace_nanosecond(0)
        .expect("zero nanoseconds")
        .format(&time::format_description::well_known::Rfc3339)
        .expect("RFC 3339 formats")
}

impl Store {
    pub fn new(etcd: EtcdStore) -> Self {
        Self {
            etcd,
            writes: AtomicU64::new(0),
            changed: tokio::sync::Notify::new(),
            history: Mutex::default(),
            latest: tokio::sync::watch::Sender::new(0),
        }
    }

    /// Wakes on every recorded change.
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<u64> {
        self.latest.subscribe()
    }

    /// The changes after `rv`, in order, or `Expired` when some of them are no
    /// longer held (older than the history, or before this lab API started).
    pub fn changes_since(&self, rv: u64) -> Result<Vec<Change>, Expired> {
        let h = self.history.lock().expect("history lock");
        let oldest = h.front().map_or_else(|| self.rv_now(), |c| c.rv - 1);
        if rv < oldest {
            return Err(Expired { oldest });
        }
        // In version order: skip to the first newer one.
        let first = h.partition_point(|c| c.rv <= rv);
        Ok(h.range(first..).cloned().collect())
    }

    /// etcd was restored from a snapshot: no change before now can be served (a
    /// watch from an older version gets 410 and lists again).
    pub fn forget_history(&self) {
        self.history.lock().expect("history lock").clear();
        self.latest.send_replace(self.rv_now());
    }

    /// The objects under `prefix` and the version they are the state of.
    pub fn list_at(&self, prefix: &str) -> (u64, Vec<(String, Value)>) {
        let _h = self.history.lock().expect("history lock");
        (self.rv_now(), self.etcd.list(prefix))
    }

    fn record(&self, h: &mut VecDeque<Change>, change: Change) {
        let rv = change.rv;
        if h.len() == HISTORY {
            h.pop_front();
        }
        h.push_back(change);
        self.latest.send_replace(rv);
    }

    /// Completes after the next change (or at once if one happened since the last wait).
    pub async fn changed(&self) {
        self.changed.notified().await;
    }

    /// Wake the controllers without a write (e.g. a kubelet came up).
    pub fn nudge(&self) {
        self.changed.notify_one();
    }

    fn touch(&self) {
        self.writes.fetch_add(1, Ordering::SeqCst);
        self.changed.notify_one();
    }

    /// Writes that changed an object since start (no-op applies do not count).
    pub fn writes(&self) -> u64 {
        self.writes.load(Ordering::SeqCst)
    }

    pub fn get(&self, key: &str) -> Option<Value> {
        self.etcd.get(key)
    }

    pub fn list(&self, prefix: &str) -> Vec<Value> {
        self.etcd.list(prefix).into_iter().map(|(_, v)| v).collect()
    }

    fn next_rv(&self) -> String {
        let rv = self
            .etcd
            .get(RV_KEY)
            .and_then(|v| v.as_u64())
            .unwrap_or(1000)
            + 1;
        self.etcd.put(RV_KEY, json!(rv));
        rv.to_string()
    }

    pub fn current_rv(&self) -> String {
        self.rv_now().to_string()
    }

    fn rv_now(&self) -> u64 {
        self.etcd
            .get(RV_KEY)
            .and_then(|v| v.as_u64())
            .unwrap_or(1000)
    }

    /// Store `obj` under `key` unless it equals what is there; returns the stored object.
    pub fn put(&self, key: &str, obj: Value) -> Value {
        self.put_if(key, obj, false)
            .expect("an unconditional write always lands")
    }

    /// `put` for an object read from the store and changed: only while it is still
    /// the stored version (an Update carrying its `resourceVersion`, which the API
    /// server refuses with 409 Conflict once another writer got in between:
    /// kubernetes `staging/src/k8s.io/apiserver/pkg/registry/generic/registry/store.go`
    /// `Store.Update`, `OptimisticLockErrorMsg`). `None`:
    /// it lost the race and nothing was written; the caller redoes it on what is
    /// there now (a controller's next reconcile, woken by that other write).
    pub fn put_current(&self, key: &str, obj: Value) -> Option<Value> {
        self.put_if(key, obj, true)
    }

    fn put_if(&self, key: &str, mut obj: Value, current: bool) -> Option<Value> {
        let mut h = self.history.lock().expect("history lock");
        let old = self.etcd.get(key);
        let read_at = obj["metadata"]["resourceVersion"].as_str();
        if current
            && let (Some(old), Some(read_at)) = (&old, read_at)
            && old["metadata"]["resourceVersion"].as_str() != Some(read_at)
        {
            return None;
        }
        if let Some(old) = &old
            && same(old, &obj)
        {
            return Some(old.clone());
        }
        let meta = &mut obj["metadata"];
        if old.is_none() {
            meta["uid"] = json!(uid(key, &self.current_rv()));
            meta["creationTimestamp"] = json!(now());
        }
        let spec_changed = old
            .as_ref()
            .is_none_or(|o| strip_meta_status(o) != strip_meta_status(&obj));
        let gen_ = old
            .as_ref()
            .and_then(|o| o["metadata"]["generation"].as_i64())
            .unwrap_or(0);
        obj["metadata"]["generation"] = json!(if spec_changed { gen_ + 1 } else { gen_.max(1) });
        let rv = self.next_rv();
        obj["metadata"]["resourceVersion"] = json!(rv);
        self.etcd.put(key, obj.clone());
        let change = Change {
            rv: rv.parse().expect("versions are numbers"),
            key: key.to_owned(),
            kind: if old.is_some() { "MODIFIED" } else { "ADDED" },
            object: obj.clone(),
        };
        self.record(&mut h, change);
        drop(h);
        self.touch();
        Some(obj)
    }

    /// Remove the object; the deletion takes a resource version of its own.
    pub fn delete(&self, key: &str) -> Option<Value> {
        let mut h = self.history.lock().expect("history lock");
        let mut v = self.etcd.delete(key)?;
        let rv = self.next_rv();
        v["metadata"]["resourceVersion"] = json!(rv);
        let change = Change {
            rv: rv.parse().expect("versions are numbers"),
            key: key.to_owned(),
            kind: "DELETED",
            object: v.clone(),
        };
        self.record(&mut h, change);
        drop(h);
        self.touch();
        Some(v)
    }
}

fn uid(key: &str, rv: &str) -> String {
    let d = ring::digest::digest(&ring::digest::SHA256, format!("{key}#{rv}").as_bytes());
    crate::lab::uuid_text(&hex::encode(&d.as_ref()[..16]))
}

/// Equal apart from bookkeeping (resource version, managed-field timestamps).
fn same(a: &Value, b: &Value) -> bool {
    fn norm(v: &Value) -> Value {
        let mut v = v.clone();
        if let Some(m) = v["metadata"].as_object_mut() {
            m.remove("resourceVersion");
            m.remove("generation");
            if let Some(Value::Array(mf)) = m.get_mut("managedFields") {
                for e in mf {
                    if let Some(e) = e.as_object_mut() {
                        e.remove("time");
                    }
                }
            }
        }
        v
    }
    norm(a) == norm(b)
}

fn strip_meta_status(v: &Value) -> Value {
    let mut v = v.clone();
    if let Some(m) = v.as_object_mut() {
        m.remove("metadata");
        m.remove("status");
    }
    v
}

/// Leaf paths of an applied object: objects recurse, anything else is a leaf.
fn leaves(v: &Value, path: &mut Vec<String>, out: &mut Vec<Vec<String>>) {
    match v {
        Value::Object(m) if !m.is_empty() => {
            for (k, x) in m {
                path.push(k.clone());
                leaves(x, path, out);
                path.pop();
            }
        }
        _ => out.push(path.clone()),
    }
}

/// The fields an applied configuration sets, without identity and bookkeeping.
fn owned_paths(applied: &Value) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    leaves(applied, &mut Vec::new(), &mut out);
    out.retain(|p| {
        let s: Vec<&str> = p.iter().map(String::as_str).collect();
        !matches!(
            s.as_slice(),
            ["apiVersion"] | ["kind"] | ["metadata", "name"] | ["metadata", "namespace"]
        )
    });
    out
}

/// `fieldsV1` in the API's `f:` notation.
fn fields_v1(paths: &[Vec<String>]) -> Value {
    let mut root = json!({});
    for p in paths {
        let mut cur = &mut root;
        for k in p {
            cur = cur
                .as_object_mut()
                .expect("built from objects")
                .entry(format!("f:{k}"))
                .or_insert_with(|| json!({}));
        }
    }
    root
}

fn paths_of(fields: &Value) -> Vec<Vec<String>> {
    fn walk(v: &Value, path: &mut Vec<String>, out: &mut Vec<Vec<String>>) {
        match v.as_object() {
            Some(m) if !m.is_empty() => {
                for (k, x) in m {
                    path.push(k.trim_start_matches("f:").to_owned());
                    walk(x, path, out);
                    path.pop();
                }
            }
            _ => out.push(path.clone()),
        }
    }
    let mut out = Vec::new();
    walk(fields, &mut Vec::new(), &mut out);
    out
}

fn at<'a>(v: &'a Value, path: &[String]) -> Option<&'a Value> {
    path.iter().try_fold(v, |cur, k| cur.get(k))
}

fn remove_at(v: &mut Value, path: &[String]) {
    if let Some((last, parent)) = path.split_last()
        && let Some(Value::Object(m)) = parent.iter().try_fold(&mut *v, |cur, k| cur.get_mut(k))
    {
        m.remove(last);
    }
}

/// Deep merge: objects merge key by key; everything else is replaced.
fn merge(into: &mut Value, from: &Value) {
    match (into, from) {
        (Value::Object(a), Value::Object(b)) => {
            for (k, v) in b {
                merge(a.entry(k.clone()).or_insert(Value::Null), v);
            }
        }
        (a, b) => *a = b.clone(),
    }
}

/// RFC 7386: `null` deletes, objects merge, everything else replaces.
pub fn merge_patch(into: &mut Value, patch: &Value) {
    match patch {
        Value::Object(p) => {
            if !into.is_object() {
                *into = Value::Object(Map::new());
            }
            let m = into.as_object_mut().expect("just made an object");
            for (k, v) in p {
                if v.is_null() {
                    m.remove(k);
                } else {
                    merge_patch(m.entry(k.clone()).or_insert(Value::Null), v);
                }
            }
        }
        other => *into = other.clone(),
    }
}

#[derive(Debug, PartialEq)]
pub struct Conflict {
    pub manager: String,
    pub field: String,
}

/// Server-side apply of `applied` by `manager` onto `existing`.
pub fn apply(
    existing: Option<&Value>,
    applied: &Value,
    manager: &str,
    force: bool,
) -> Result<Value, Vec<Conflict>> {
    let mut applied = applied.clone();
    if let Some(m) = applied["metadata"].as_object_mut() {
        for k in [
            "managedFields",
            "resourceVersion",
            "uid",
            "creationTimestamp",
            "generation",
        ] {
            m.remove(k);
        }
    }
    if let Some(m) = applied.as_object_mut() {
        m.remove("status");
    }
    let mine = owned_paths(&applied);
    let mut obj = existing.cloned().unwrap_or_else(|| json!({}));
    let mut entries: Vec<Value> = obj["metadata"]["managedFields"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let mut conflicts = Vec::new();
    for e in &mut entries {
        let other = e["manager"].as_str().unwrap_or_default().to_owned();
        if other == manager && e["operation"] == "Apply" {
            continue;
        }
        let theirs = paths_of(&e["fieldsV1"]);
        let clash: Vec<&Vec<String>> = theirs
            .iter()
            .filter(|p| mine.contains(p) && at(&obj, p) != at(&applied, p))
            .collect();
        if clash.is_empty() {
            continue;
        }
        if !force {
            conflicts.extend(clash.iter().map(|p| Conflict {
                manager: other.clone(),
                field: format!(".{}", p.join(".")),
            }));
            continue;
        }
        let kept: Vec<Vec<String>> = theirs
            .iter()
            .filter(|p| !mine.contains(p))
            .cloned()
            .collect();
        e["fieldsV1"] = fields_v1(&kept);
    }
    if !conflicts.is_empty() {
        return Err(conflicts);
    }
    // Fields this manager applied before but no longer does are removed, unless
    // another manager still owns them.
    let before: Vec<Vec<String>> = entries
        .iter()
        .find(|e| e["manager"] == manager && e["operation"] == "Apply")
        .map(|e| paths_of(&e["fieldsV1"]))
        .unwrap_or_default();
    for p in before.iter().filter(|p| !mine.contains(p)) {
        let owned_elsewhere = entries
            .iter()
            .filter(|e| !(e["manager"] == manager && e["operation"] == "Apply"))
            .any(|e| paths_of(&e["fieldsV1"]).contains(p));
        if !owned_elsewhere {
            remove_at(&mut obj, p);
        }
    }
    merge(&mut obj, &applied);
    let entry = json!({"manager": manager, "operation": "Apply",
        "apiVersion": applied["apiVersion"], "time": now(),
        "fieldsType": "FieldsV1", "fieldsV1": fields_v1(&mine)});
    // Replace in place so a repeated apply leaves the object byte-for-byte alone.
    match entries
        .iter()
        .position(|e| e["manager"] == manager && e["operation"] == "Apply")
    {
        Some(i) => entries[i] = entry,
        None => entries.push(entry),
    }
    entries.retain(|e| !paths_of(&e["fieldsV1"]).iter().all(|p| p.is_empty()));
    obj["metadata"]["managedFields"] = Value::Array(entries);
    Ok(obj)
}

/// Record `manager` as an `Update` owner of the fields a merge patch set.
pub fn record_update(obj: &mut Value, patch: &Value, manager: &str) {
    let mut paths = Vec::new();
    leaves(patch, &mut Vec::new(), &mut paths);
    paths.retain(|p| at(patch, p).is_some_and(|v| !v.is_null()));
    let mut entries: Vec<Value> = obj["metadata"]["managedFields"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    if let Some(e) = entries
        .iter_mut()
        .find(|e| e["manager"] == manager && e["operation"] == "Update")
    {
        let mut all = paths_of(&e["fieldsV1"]);
        all.extend(
            paths
                .into_iter()
                .filter(|p| !all.contains(p))
                .collect::<Vec<_>>(),
        );
        e["fieldsV1"] = fields_v1(&all);
    } else if !paths.is_empty() {
        entries.push(json!({"manager": manager, "operation": "Update",
            "apiVersion": obj["apiVersion"], "time": now(),
            "fieldsType": "FieldsV1", "fieldsV1": fields_v1(&paths)}));
    }
    obj["metadata"]["managedFields"] = Value::Array(entries);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_controller_write_from_a_stale_read_does_not_undo_a_cordon() {
        let s = Store::new(EtcdStore::default());
        let k = key("", "nodes", None, "n1");
        s.put(
            &k,
            json!({"kind": "Node", "metadata": {"name": "n1"}, "spec": {}}),
        );
        let read = s.get(&k).unwrap();
        // The user's cordon lands between the controller's read and its write.
        let mut cordoned = read.clone();
        cordoned["spec"]["unschedulable"] = json!(true);
        s.put(&k, cordoned);
        let mut status = read;
        status["status"]["phase"] = json!("posted");
        assert!(s.put_current(&k, status).is_none(), "a stale write landed");
        assert_eq!(s.get(&k).unwrap()["spec"]["unschedulable"], true);
        // Redone on what is stored now, it lands and keeps the cordon.
        let mut again = s.get(&k).unwrap();
        again["status"]["phase"] = json!("posted");
        let stored = s.put_current(&k, again).expect("a current write lands");
        assert_eq!(stored["spec"]["unschedulable"], true);
    }

    #[test]
    fn apply_merges_owns_conflicts_and_prunes() {
        let a = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x", "namespace": "d"},
            "data": {"a": "1", "b": "2"}});
        let o = apply(None, &a, "talos-pve", true).unwrap();
        assert_eq!(
            o["metadata"]["managedFields"][0]["fieldsV1"]["f:data"]["f:a"],
            json!({})
        );
        // Another manager changing a field owned by talos-pve conflicts without force.
        let b = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x", "namespace": "d"}, "data": {"a": "9"}});
        let c = apply(Some(&o), &b, "other", false).unwrap_err();
        assert_eq!(
            c,
            vec![Conflict {
                manager: "talos-pve".into(),
                field: ".data.a".into()
            }]
        );
        let forced = apply(Some(&o), &b, "other", true).unwrap();
        assert_eq!(forced["data"], json!({"a": "9", "b": "2"}));
        // talos-pve drops `b` from its configuration: the field goes away.
        let a2 = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x", "namespace": "d"}, "data": {"a": "9"}});
        let pruned = apply(Some(&forced), &a2, "talos-pve", true).unwrap();
        assert_eq!(pruned["data"], json!({"a": "9"}));
    }

    #[test]
    fn changes_are_kept_in_order_and_an_old_version_is_expired() {
        let s = Store::new(EtcdStore::default());
        let k = key("", "nodes", None, "n1");
        let start = s.rv_now();
        let a = s.put(&k, json!({"metadata": {"name": "n1"}}));
        let mut b = a.clone();
        b["spec"] = json!({"unschedulable": true});
        s.put(&k, b);
        let gone = s.delete(&k).unwrap();
        let kinds: Vec<(&str, u64)> = s
            .changes_since(start)
            .unwrap()
            .iter()
            .map(|c| (c.kind, c.rv))
            .collect();
        assert_eq!(
            kinds,
            [
                ("ADDED", start + 1),
                ("MODIFIED", start + 2),
                ("DELETED", start + 3)
            ]
        );
        assert_eq!(gone["metadata"]["resourceVersion"], (start + 3).to_string());
        assert_eq!(s.changes_since(start + 2).unwrap().len(), 1);
        // Before what this server has seen: 410 Gone for a watch.
        assert_eq!(
            s.changes_since(start - 1).unwrap_err(),
            Expired { oldest: start }
        );
        for i in 0..HISTORY {
            s.put(&k, json!({"metadata": {"name": "n1"}, "data": i}));
        }
        assert!(s.changes_since(start + 2).is_err(), "compacted");
        assert_eq!(s.changes_since(start + 3).unwrap().len(), HISTORY);
        assert_eq!(s.changes_since(s.rv_now() - 1).unwrap().len(), 1);
    }

    #[test]
    fn store_skips_no_op_writes_and_bumps_generation_on_spec_changes() {
        let s = Store::new(EtcdStore::default());
        let k = key("apps", "deployments", Some("ns"), "d");
        let o = s.put(
            &k,
            json!({"metadata": {"name": "d"}, "spec": {"replicas": 1}}),
        );
        assert_eq!(o["metadata"]["generation"], 1);
        let again = s.put(&k, o.clone());
        assert_eq!(
            again["metadata"]["resourceVersion"],
            o["metadata"]["resourceVersion"]
        );
        assert_eq!(s.writes(), 1);
        let mut st = o.clone();
        st["status"] = json!({"ready": 1});
        assert_eq!(s.put(&k, st)["metadata"]["generation"], 1);
        let mut sp = o;
        sp["spec"]["replicas"] = json!(2);
        assert_eq!(s.put(&k, sp)["metadata"]["generation"], 2);
        let mut m = json!({"a": {"b": 1, "c": 2}});
        merge_patch(&mut m, &json!({"a": {"b": null, "d": 3}}));
        assert_eq!(m, json!({"a": {"c": 2, "d": 3}}));
    }
}
