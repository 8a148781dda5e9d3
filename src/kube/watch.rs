//! Waiting through watches instead of polls: list, then watch from the list's
//! `resourceVersion` and check again on every change, keeping the list current
//! from the events (an informer in miniature). The contract
//! (kubernetes.io/docs/reference/using-api/api-concepts/ "Efficient detection of
//! changes", "Watch bookmarks"): `?watch=true&resourceVersion=RV` streams
//! newline-delimited `{"type", "object"}` events after RV, in order; BOOKMARK
//! objects carry only a newer `resourceVersion`; a version the server no longer
//! holds is a 410 (`Expired`), as the HTTP status or as an ERROR event, and means
//! list again; `timeoutSeconds` ends the stream, after which the watch resumes from
//! the last version seen. A stream that breaks is resumed the same way.

use std::collections::BTreeMap;
use std::future::Future;
use std::time::Duration;

use serde_json::Value;

use super::{Client, KubeError, Poll};

/// How long one watch request stays open (the server ends it; then it is resumed).
const WATCH_SECS: u64 = 50;

/// A collection kept current by a watch.
struct Watched<'a> {
    client: &'a Client,
    /// The list path, query included (selectors).
    path: &'a str,
    cache: Cache,
    body: Option<reqwest::Response>,
    buf: Vec<u8>,
}

fn key(o: &Value) -> String {
    format!(
        "{}/{}",
        o["metadata"]["namespace"].as_str().unwrap_or_default(),
        o["metadata"]["name"].as_str().unwrap_or_default()
    )
}

impl<'a> Watched<'a> {
    async fn list(client: &'a Client, path: &'a str) -> Result<Self, KubeError> {
        let mut w = Self {
            client,
            path,
            cache: Cache::default(),
            body: None,
            buf: Vec::new(),
        };
        w.relist().await?;
        Ok(w)
    }

    async fn relist(&mut self) -> Result<(), KubeError> {
        let (items, rv) = self.client.list_at(self.path).await?;
        self.cache = Cache {
            items: items.into_iter().map(|o| (key(&o), o)).collect(),
            rv,
        };
        self.body = None;
        self.buf.clear();
        Ok(())
    }

    fn watch_path(&self) -> String {
        let sep = if self.path.contains('?') { '&' } else { '?' };
        format!(
            "{}{sep}watch=true&resourceVersion={}&allowWatchBookmarks=true&timeoutSeconds={WATCH_SECS}",
            self.path,
            super::segment(&self.cache.rv)
        )
    }

    /// Wait for the next change to the collection. `pause`: the least time between
    /// two watch requests when streams end at once.
    async fn changed(&mut self, pause: Duration) -> Result<(), KubeError> {
        loop {
            let Some(body) = self.body.as_mut() else {
                let limit = Duration::from_secs(WATCH_SECS + 15);
                match self.client.stream(&self.watch_path(), limit).await {
                    Ok(b) => self.body = Some(b),
                    Err(e) if e.code() == Some(410) => {
                        self.relist().await?;
                        return Ok(());
                    }
                    Err(_) => {
                        // No watch now: a fresh list is the state, and a change
                        // since the last one counts as one.
                        tokio::time::sleep(pause).await;
                        let before = self.cache.items.clone();
                        self.relist().await?;
                        if self.cache.items != before {
                            return Ok(());
                        }
                    }
                }
                continue;
            };
            match body.chunk().await {
                Ok(Some(bytes)) => self.buf.extend_from_slice(&bytes),
                // Ended (timeoutSeconds) or broken: resume from the last version.
                Ok(None) | Err(_) => {
                    self.body = None;
                    tokio::time::sleep(pause).await;
                    continue;
                }
            }
            let mut changed = false;
            while let Some(n) = self.buf.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = self.buf.drain(..=n).collect();
                let Ok(ev) = serde_json::from_slice::<Value>(&line) else {
                    continue;
                };
                match self.cache.apply(&ev) {
                    Apply::Changed => changed = true,
                    Apply::Same => {}
                    Apply::Relist => {
                        self.relist().await?;
                        return Ok(());
                    }
                }
            }
            if changed {
                return Ok(());
            }
        }
    }
}

/// The objects by `namespace/name`, and the version they are the state of.
#[derive(Debug, Default, Clone, PartialEq)]
struct Cache {
    items: BTreeMap<String, Value>,
    rv: String,
}

impl Cache {
    fn items(&self) -> Vec<Value> {
        self.items.values().cloned().collect()
    }

    /// Apply one event.
    fn apply(&mut self, ev: &Value) -> Apply {
        let o = &ev["object"];
        let rv = o["metadata"]["resourceVersion"].as_str().map(str::to_owned);
        match ev["type"].as_str() {
            Some("ADDED" | "MODIFIED") => {
                self.items.insert(key(o), o.clone());
            }
            Some("DELETED") => {
                self.items.remove(&key(o));
            }
            Some("BOOKMARK") => {
                if let Some(rv) = rv {
                    self.rv = rv;
                }
                return Apply::Same;
            }
            // ERROR: 410 Expired, or anything else the server gave up on.
            _ => return Apply::Relist,
        }
        if let Some(rv) = rv {
            self.rv = rv;
        }
        Apply::Changed
    }
}

enum Apply {
    Changed,
    Same,
    Relist,
}

impl Poll {
    /// Like `until_with`, but `check` sees the objects of the list at `path` (a
    /// collection, with selectors) each time they change, through a watch, instead
    /// of every poll interval. `Ok(Err(state))` means "not yet".
    pub async fn watch<T, E, F, Fut>(
        &self,
        client: &Client,
        path: &str,
        what: &str,
        mut check: F,
    ) -> Result<T, E>
    where
        E: From<KubeError>,
        F: FnMut(Vec<Value>) -> Fut,
        Fut: Future<Output = Result<Result<T, String>, E>>,
    {
        let start = tokio::time::Instant::now();
        let mut w = Watched::list(client, path).await?;
        loop {
            let last = match check(w.cache.items()).await? {
                Ok(t) => return Ok(t),
                Err(state) => state,
            };
            // Said as polls say it: the progress line shows what a long wait waits on.
            crate::progress::note(format!("waiting for {what}: {last}"));
            let left = self.timeout.saturating_sub(start.elapsed());
            if left.is_zero() {
                return Err(E::from(KubeError::Timeout {
                    what: what.into(),
                    secs: self.timeout.as_secs(),
                    last,
                }));
            }
            if let Ok(r) = tokio::time::timeout(left, w.changed(self.min)).await {
                r?;
            }
        }
    }

    /// Watch the one object at `path` (`…/<plural>/<name>`) until `check` holds;
    /// `None` while it does not exist.
    pub async fn watch_object<T, E, F>(
        &self,
        client: &Client,
        path: &str,
        what: &str,
        mut check: F,
    ) -> Result<T, E>
    where
        E: From<KubeError>,
        F: FnMut(Option<&Value>) -> Result<T, String>,
    {
        let (collection, name) = path.rsplit_once('/').unwrap_or(("", path));
        let list = format!(
            "{collection}?fieldSelector={}",
            super::segment(&format!("metadata.name={name}"))
        );
        self.watch(client, &list, what, |items| {
            let r = check(items.first());
            async move { Ok(r) }
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn events_keep_the_list_current() {
        let node = |rv: &str, ready: &str| json!({"metadata": {"name": "n1", "resourceVersion": rv}, "status": {"ready": ready}});
        let mut c = Cache::default();
        let ev = |t: &str, o: Value| json!({"type": t, "object": o});
        assert!(matches!(
            c.apply(&ev("ADDED", node("5", "no"))),
            Apply::Changed
        ));
        assert!(matches!(
            c.apply(&ev("MODIFIED", node("7", "yes"))),
            Apply::Changed
        ));
        assert_eq!(c.items(), [node("7", "yes")]);
        let bookmark = json!({"kind": "Node", "metadata": {"resourceVersion": "9"}});
        assert!(matches!(c.apply(&ev("BOOKMARK", bookmark)), Apply::Same));
        assert_eq!(c.rv, "9");
        assert!(matches!(
            c.apply(&ev("DELETED", node("10", "yes"))),
            Apply::Changed
        ));
        assert!(c.items().is_empty() && c.rv == "10");
        let gone = json!({"kind": "Status", "code": 410, "reason": "Expired"});
        assert!(matches!(c.apply(&ev("ERROR", gone)), Apply::Relist));
    }

    #[test]
    fn keys_are_namespace_and_name() {
        let o = json!({"metadata": {"namespace": "kube-system", "name": "cilium"}});
        assert_eq!(key(&o), "kube-system/cilium");
        assert_eq!(key(&json!({"metadata": {"name": "n1"}})), "/n1");
    }
}
