//! Cordon and drain a Node, as `kubectl drain --ignore-daemonsets` and talosctl's
//! 1.13 client drain do (talos-day2.md §1.6: `nodedrain.go` @v1.13.9): policy/v1
//! Evictions, which a PodDisruptionBudget refuses with 429 until a disruption is
//! allowed; refused pods are tried again until the bound (talosctl
//! `--drain-timeout`, 5 min); DaemonSet and static mirror pods stay. Used by `up`'s
//! scale-down and by `upgrade` before a reboot.

use serde_json::{Value, json};

use super::{Client, KubeError, Poll, segment};

/// `spec.unschedulable` set (`true`) or removed; Talos never lifts a client's cordon.
pub async fn cordon(client: &Client, node: &str, on: bool) -> Result<(), KubeError> {
    let v = if on { json!(true) } else { Value::Null };
    client
        .merge_patch(
            &format!("/api/v1/nodes/{}", segment(node)),
            &json!({"spec": {"unschedulable": v}}),
        )
        .await?;
    Ok(())
}

/// Evict every pod on `node` that a controller would not simply recreate there,
/// until none is left or `bound` gives up (`KubeError::Drain`, naming the pods a
/// budget still protects). The node must be cordoned first, or the scheduler may
/// put evicted pods straight back.
pub async fn drain(client: &Client, bound: &Poll, node: &str) -> Result<(), KubeError> {
    let list = format!(
        "/api/v1/pods?fieldSelector={}",
        segment(&format!("spec.nodeName={node}"))
    );
    let outcome = bound
        .until(&format!("drain of {node}"), || async {
            let mut refused = Vec::new();
            for p in client.list(&list).await? {
                if !evictable(&p) {
                    continue;
                }
                let (ns, pod) = (
                    p["metadata"]["namespace"].as_str().unwrap_or_default(),
                    p["metadata"]["name"].as_str().unwrap_or_default(),
                );
                let body = json!({"apiVersion": "policy/v1", "kind": "Eviction",
                    "metadata": {"name": pod, "namespace": ns}});
                let path = format!(
                    "/api/v1/namespaces/{}/pods/{}/eviction",
                    segment(ns),
                    segment(pod)
                );
                match client.post(&path, &body).await {
                    Ok(_) => {}
                    // Already gone is drained.
                    Err(e) if e.code() == Some(404) => {}
                    Err(e) if e.code() == Some(429) => refused.push(format!(
                        "{ns}/{pod}: {}",
                        e.message().unwrap_or("eviction refused")
                    )),
                    Err(e) => return Err(e),
                }
            }
            Ok(if refused.is_empty() {
                Ok(())
            } else {
                Err(refused.join("; "))
            })
        })
        .await;
    match outcome {
        Err(KubeError::Timeout { last, .. }) => Err(KubeError::Drain {
            node: node.to_owned(),
            pods: last,
        }),
        other => other,
    }
}

/// Like `kubectl drain --ignore-daemonsets`: DaemonSet pods and mirror pods stay.
fn evictable(pod: &Value) -> bool {
    let daemon = pod["metadata"]["ownerReferences"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|o| o["kind"] == "DaemonSet");
    let mirror = pod["metadata"]["annotations"]
        .get("kubernetes.io/config.mirror")
        .is_some();
    !daemon && !mirror
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn daemonset_and_mirror_pods_are_not_evicted() {
        let ds = json!({"metadata": {"ownerReferences": [{"kind": "DaemonSet"}]}});
        let mirror = json!({"metadata": {"annotations": {"kubernetes.io/config.mirror": "x"}}});
        let rs = json!({"metadata": {"ownerReferences": [{"kind": "ReplicaSet"}]}});
        assert!(!evictable(&ds) && !evictable(&mirror) && evictable(&rs));
    }
}
