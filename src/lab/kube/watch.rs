//! Watches (`GET <collection>?watch=true`), as the real API server serves them
//! (kubernetes.io/docs/reference/using-api/api-concepts/ "Efficient detection of
//! changes", "Watch bookmarks"; kubernetes v1.36 `staging/src/k8s.io/apiserver/pkg/
//! endpoints/handlers/watch.go`): HTTP 200 and a stream of newline-delimited
//! `WatchEvent`s `{"type": ADDED|MODIFIED|DELETED|BOOKMARK|ERROR, "object": …}`.
//!
//! - `resourceVersion` unset or `0`: the current state first, as synthetic ADDED
//!   events, then every change; otherwise every change after that version, in order.
//! - A version older than the history the server holds: one ERROR event carrying a
//!   Status 410 `Expired` ("too old resource version"), then the end; the client
//!   lists again.
//! - Label and field selectors filter; an object that stops (starts) matching is a
//!   DELETED (ADDED) event for this watch.
//! - `timeoutSeconds` ends the stream (default: the server's 30–60 min; here 30 min);
//!   with `allowWatchBookmarks=true` a BOOKMARK carrying only the current
//!   `resourceVersion` precedes the end.
//! - A Table `Accept` (kubectl get -w) makes each event's object a one-row Table.

use std::collections::HashSet;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};

use super::Lab;
use super::select::{self, Requirement};
use super::table;

/// The server's default when the client sets no `timeoutSeconds`.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(1800);

/// What a watch request asked for.
#[derive(Debug, Clone)]
pub struct Watch {
    /// Store prefix of the collection.
    pub prefix: String,
    pub kind: String,
    pub api_version: String,
    pub labels: Vec<Requirement>,
    pub fields: Vec<Requirement>,
    /// `None`: start with the current state.
    pub from: Option<u64>,
    pub bookmarks: bool,
    pub timeout: Duration,
    /// Table rows instead of objects: printer columns and the object in each row.
    pub table: Option<(Option<Vec<table::CrdColumn>>, table::Include)>,
}

impl Watch {
    /// `resourceVersion` and `timeoutSeconds` from the query (`Err`: the message of a 400).
    pub fn versions(
        rv: Option<&str>,
        timeout: Option<&str>,
    ) -> Result<(Option<u64>, Duration), String> {
        let from = match rv {
            None | Some("" | "0") => None,
            Some(v) => Some(
                v.parse::<u64>()
                    .map_err(|_| format!("invalid resource version: {v:?}"))?,
            ),
        };
        let timeout = match timeout {
            None | Some("") => DEFAULT_TIMEOUT,
            Some(t) => Duration::from_secs(
                t.parse::<u64>()
                    .map_err(|_| format!("invalid timeoutSeconds: {t:?}"))?,
            ),
        };
        Ok((from, timeout))
    }

    fn matches(&self, o: &Value) -> bool {
        select::labels_match(o, &self.labels) && select::fields_match(o, &self.fields)
    }

    fn event(&self, kind: &str, o: &Value) -> Value {
        let object = match &self.table {
            Some((cols, include)) => {
                let rv = o["metadata"]["resourceVersion"]
                    .as_str()
                    .unwrap_or_default();
                table::table(
                    &self.kind,
                    cols.as_deref(),
                    std::slice::from_ref(o),
                    rv,
                    *include,
                )
            }
            None => o.clone(),
        };
        json!({"type": kind, "object": object})
    }

    fn bookmark(&self, rv: u64) -> Value {
        json!({"type": "BOOKMARK", "object": {"kind": self.kind, "apiVersion": self.api_version,
            "metadata": {"resourceVersion": rv.to_string()}}})
    }
}

fn expired(rv: u64, oldest: u64) -> Value {
    json!({"type": "ERROR", "object": {"kind": "Status", "apiVersion": "v1", "metadata": {},
        "status": "Failure", "reason": "Expired", "code": 410,
        "message": format!("too old resource version: {rv} ({oldest})")}})
}

fn line(v: &Value) -> axum::body::Bytes {
    let mut b = serde_json::to_vec(v).expect("JSON values serialize");
    b.push(b'\n');
    b.into()
}

/// The response body: events as they happen, until the timeout or the client leaves.
pub fn stream(lab: Arc<Lab>, w: Watch) -> axum::body::Body {
    let (tx, rx) = tokio::sync::mpsc::channel::<axum::body::Bytes>(64);
    tokio::spawn(async move {
        let _ = run(&lab, &w, &tx).await;
    });
    axum::body::Body::from_stream(futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|b| (Ok::<_, Infallible>(b), rx))
    }))
}

/// `Err` when the client is gone.
async fn run(
    lab: &Lab,
    w: &Watch,
    tx: &tokio::sync::mpsc::Sender<axum::body::Bytes>,
) -> Result<(), tokio::sync::mpsc::error::SendError<axum::body::Bytes>> {
    let deadline = tokio::time::Instant::now() + w.timeout;
    // Subscribed before reading, so no change falls between the two.
    let mut latest = lab.store.subscribe();
    let (mut last, now) = match w.from {
        Some(rv) => (rv, lab.store.list_at(&w.prefix).1),
        None => lab.store.list_at(&w.prefix),
    };
    let mut seen: HashSet<String> = HashSet::new();
    for (k, o) in now.iter().filter(|(_, o)| w.matches(o)) {
        seen.insert(k.clone());
        if w.from.is_none() {
            tx.send(line(&w.event("ADDED", o))).await?;
        }
    }
    loop {
        let changes = match lab.store.changes_since(last) {
            Ok(c) => c,
            Err(e) => {
                tx.send(line(&expired(last, e.oldest))).await?;
                return Ok(());
            }
        };
        for c in changes {
            last = c.rv;
            if !c.key.starts_with(&w.prefix) {
                continue;
            }
            let (now_in, was_in) = (
                c.kind != "DELETED" && w.matches(&c.object),
                seen.contains(&c.key),
            );
            let kind = match (was_in, now_in) {
                (false, true) => "ADDED",
                (true, true) => c.kind,
                (true, false) => "DELETED",
                (false, false) => continue,
            };
            if now_in {
                seen.insert(c.key.clone());
            } else {
                seen.remove(&c.key);
            }
            tx.send(line(&w.event(kind, &c.object))).await?;
        }
        tokio::select! {
            r = latest.changed() => if r.is_err() { return Ok(()) },
            () = tokio::time::sleep_until(deadline) => {
                if w.bookmarks {
                    tx.send(line(&w.bookmark(last))).await?;
                }
                return Ok(());
            }
            () = tx.closed() => return Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_versions() {
        assert_eq!(
            Watch::versions(None, None).unwrap(),
            (None, DEFAULT_TIMEOUT)
        );
        assert_eq!(
            Watch::versions(Some("0"), Some("5")).unwrap(),
            (None, Duration::from_secs(5))
        );
        assert_eq!(Watch::versions(Some("1234"), None).unwrap().0, Some(1234));
        assert!(Watch::versions(Some("x"), None).is_err());
    }
}
