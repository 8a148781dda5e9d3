//! Waiting with adaptive polling, and the readiness rules for what talos-pve waits on.

use std::future::Future;
use std::time::Duration;

use serde_json::Value;

use super::KubeError;

/// Polling starts at `min`, doubles up to `max`, and gives up after `timeout`.
#[derive(Debug, Clone, Copy)]
pub struct Poll {
    pub min: Duration,
    pub max: Duration,
    pub timeout: Duration,
}

impl Poll {
    /// Real clusters: start quick, settle at a few seconds.
    pub fn standard(timeout: Duration) -> Self {
        Self {
            min: Duration::from_millis(250),
            max: Duration::from_secs(3),
            timeout,
        }
    }

    /// Repeat `check` until it yields `Ok(Ok(t))`. `Ok(Err(state))` means "not yet"
    /// (the state is reported on timeout); `Err` aborts at once.
    pub async fn until<T, F, Fut>(&self, what: &str, check: F) -> Result<T, KubeError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<Result<T, String>, KubeError>>,
    {
        self.until_with(what, check).await
    }

    /// `until` for a caller's own error type (its checks fail with it).
    pub async fn until_with<T, E, F, Fut>(&self, what: &str, mut check: F) -> Result<T, E>
    where
        E: From<KubeError>,
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<Result<T, String>, E>>,
    {
        let start = tokio::time::Instant::now();
        let mut delay = self.min;
        loop {
            let last = match check().await? {
                Ok(t) => return Ok(t),
                Err(state) => state,
            };
            crate::progress::note(format!("waiting for {what}: {last}"));
            if start.elapsed() >= self.timeout {
                return Err(E::from(KubeError::Timeout {
                    what: what.into(),
                    secs: self.timeout.as_secs(),
                    last,
                }));
            }
            tokio::time::sleep(delay.min(self.timeout.saturating_sub(start.elapsed()))).await;
            delay = (delay * 2).min(self.max);
        }
    }
}

fn int(v: &Value) -> i64 {
    v.as_i64().unwrap_or(0)
}

fn condition<'a>(obj: &'a Value, kind: &str) -> Option<&'a Value> {
    obj["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == kind)
}

fn observed(obj: &Value) -> Result<(), String> {
    let (gen_, seen) = (
        int(&obj["metadata"]["generation"]),
        int(&obj["status"]["observedGeneration"]),
    );
    if seen < gen_ {
        return Err(format!("controller has seen generation {seen} of {gen_}"));
    }
    Ok(())
}

/// A CRD's `Established` condition is `True`.
pub fn crd_established(crd: &Value) -> Result<(), String> {
    match condition(crd, "Established") {
        Some(c) if c["status"] == "True" => Ok(()),
        Some(c) => Err(format!("Established={}", c["status"])),
        None => Err("no Established condition yet".into()),
    }
}

/// Every replica of a Deployment is updated and available.
pub fn deployment_ready(d: &Value) -> Result<(), String> {
    observed(d)?;
    let want = d["spec"]["replicas"].as_i64().unwrap_or(1);
    let s = &d["status"];
    let (upd, avail) = (int(&s["updatedReplicas"]), int(&s["availableReplicas"]));
    if upd < want || avail < want {
        return Err(format!("{avail}/{want} available, {upd}/{want} updated"));
    }
    Ok(())
}

/// Every scheduled pod of a DaemonSet is updated and ready (and there is at least one).
pub fn daemonset_ready(ds: &Value) -> Result<(), String> {
    observed(ds)?;
    let s = &ds["status"];
    let want = int(&s["desiredNumberScheduled"]);
    let (ready, upd) = (int(&s["numberReady"]), int(&s["updatedNumberScheduled"]));
    if want == 0 || ready < want || upd < want {
        return Err(format!("{ready}/{want} ready, {upd}/{want} updated"));
    }
    Ok(())
}

/// The Node's `Ready` condition is `True`.
pub fn node_ready(n: &Value) -> Result<(), String> {
    match condition(n, "Ready") {
        Some(c) if c["status"] == "True" => Ok(()),
        Some(c) => Err(format!(
            "Ready={} ({})",
            c["status"].as_str().unwrap_or("?"),
            c["reason"].as_str().unwrap_or("")
        )),
        None => Err("no Ready condition yet".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn readiness_rules() {
        let mut d = json!({"metadata": {"generation": 2}, "spec": {"replicas": 2},
            "status": {"observedGeneration": 1, "updatedReplicas": 2, "availableReplicas": 2}});
        assert!(deployment_ready(&d).is_err());
        d["status"]["observedGeneration"] = json!(2);
        assert_eq!(deployment_ready(&d), Ok(()));
        d["status"]["availableReplicas"] = json!(1);
        assert!(deployment_ready(&d).is_err());
        let ds = json!({"status": {"desiredNumberScheduled": 0}});
        assert!(daemonset_ready(&ds).is_err(), "zero pods is not ready");
        let crd = json!({"status": {"conditions": [{"type": "Established", "status": "True"}]}});
        assert_eq!(crd_established(&crd), Ok(()));
        let n = json!({"status": {"conditions": [{"type": "Ready", "status": "False", "reason": "NetworkPluginNotReady"}]}});
        assert!(
            node_ready(&n)
                .unwrap_err()
                .contains("NetworkPluginNotReady")
        );
    }

    #[tokio::test]
    async fn poll_times_out_with_the_last_state() {
        let p = Poll {
            min: Duration::from_millis(1),
            max: Duration::from_millis(5),
            timeout: Duration::from_millis(30),
        };
        let e = p
            .until::<(), _, _>("thing", || async { Ok(Err("still pending".into())) })
            .await
            .unwrap_err();
        assert!(e.to_string().contains("still pending"), "{e}");
    }
}
