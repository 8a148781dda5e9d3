//! Each node's planned pod CIDR on its Node object. kube-controller-manager's
//! allocator is off in the generated config, so talos-pve sets `spec.podCIDR(s)`
//! once per node as it registers; Kubernetes forbids changing it afterwards.

use std::collections::BTreeSet;

use ipnet::Ipv4Net;
use serde_json::{Value, json};

use super::AddonError;
use crate::kube::{Client, KubeError, Poll};
use crate::plan::{NodePlan, Plan};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Patch,
    Unchanged,
}

/// What to do with `node` (a Node object) so its pod CIDR becomes `planned`.
pub fn decide(node: &Value, planned: Ipv4Net) -> Result<Action, AddonError> {
    let name = node["metadata"]["name"].as_str().unwrap_or("?");
    let single = node["spec"]["podCIDR"].as_str().unwrap_or_default();
    let list: Vec<&str> = node["spec"]["podCIDRs"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    if single.is_empty() && list.is_empty() {
        return Ok(Action::Patch);
    }
    let current = if single.is_empty() {
        list.join(",")
    } else {
        single.to_owned()
    };
    let same = |s: &str| s.parse::<Ipv4Net>().is_ok_and(|c| c == planned);
    let list_ok = list.is_empty() || (list.len() == 1 && same(list[0]));
    if (single.is_empty() || same(single)) && list_ok {
        Ok(Action::Unchanged)
    } else {
        Err(AddonError::PodCidrConflict {
            node: name.to_owned(),
            current,
            planned,
        })
    }
}

/// The merge patch setting both fields, as the API expects them.
pub fn patch(planned: Ipv4Net) -> Value {
    json!({"spec": {"podCIDR": planned.to_string(), "podCIDRs": [planned.to_string()]}})
}

/// What the Nodes seen so far still need: the planned nodes not registered yet, and
/// those to patch. `patched`: nodes this run has patched already. A watch can show a
/// Node again without the CIDR just set (its MODIFIED event still on the way); patching
/// it again would cost one request per node per event, O(n²) as a cluster registers.
pub fn pending<'p>(
    plan: &'p Plan,
    nodes: &[Value],
    patched: &BTreeSet<String>,
) -> Result<(Vec<&'p str>, Vec<&'p NodePlan>), AddonError> {
    let mut missing = Vec::new();
    let mut to_patch = Vec::new();
    for n in &plan.nodes {
        let Some(node) = nodes
            .iter()
            .find(|x| x["metadata"]["name"] == n.name.as_str())
        else {
            missing.push(n.name.as_str());
            continue;
        };
        if patched.contains(&n.name) {
            continue;
        }
        match decide(node, n.pod_cidr)? {
            Action::Unchanged => {}
            Action::Patch => to_patch.push(n),
        }
    }
    Ok((missing, to_patch))
}

/// Give every planned node its pod CIDR as soon as its Node object registers, until
/// all have one. Returns the nodes that were patched (empty on a re-run).
pub async fn assign(client: &Client, plan: &Plan, poll: &Poll) -> Result<Vec<String>, AddonError> {
    let patched = std::sync::Mutex::new(BTreeSet::new());
    let patched = &patched;
    // `Ok(Err(conflict))` ends the wait: a foreign CIDR will not go away by waiting.
    let outcome = poll
        .watch::<_, KubeError, _, _>(
            client,
            "/api/v1/nodes",
            "every node to register",
            |nodes| async move {
                let done = patched.lock().expect("patched lock").clone();
                let (missing, to_patch) = match pending(plan, &nodes, &done) {
                    Ok(p) => p,
                    Err(e) => return Ok(Ok(Err(e))),
                };
                // Independent objects: patch them together (Cilium waits for the last one).
                futures_util::future::try_join_all(to_patch.iter().map(|n| async move {
                    client
                        .merge_patch(&format!("/api/v1/nodes/{}", n.name), &patch(n.pod_cidr))
                        .await?;
                    tracing::info!(node = %n.name, cidr = %n.pod_cidr, "pod CIDR set");
                    patched.lock().expect("patched lock").insert(n.name.clone());
                    Ok::<(), KubeError>(())
                }))
                .await?;
                Ok(if missing.is_empty() {
                    Ok(Ok(()))
                } else {
                    Err(format!("not registered yet: {}", missing.join(", ")))
                })
            },
        )
        .await?;
    outcome?;
    let patched = std::mem::take(&mut *patched.lock().expect("patched lock"));
    // In plan order, as the summary lists nodes.
    Ok(plan
        .nodes
        .iter()
        .filter(|n| patched.contains(&n.name))
        .map(|n| n.name.clone())
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(single: Option<&str>, list: &[&str]) -> Value {
        let mut n = json!({"metadata": {"name": "talos-k8s-01"}, "spec": {}});
        if let Some(s) = single {
            n["spec"]["podCIDR"] = json!(s);
        }
        if !list.is_empty() {
            n["spec"]["podCIDRs"] = json!(list);
        }
        n
    }

    #[test]
    fn empty_is_patched_equal_is_kept_different_stops_with_the_remedy() {
        let p: Ipv4Net = "10.8.32.0/24".parse().unwrap();
        assert_eq!(decide(&node(None, &[]), p).unwrap(), Action::Patch);
        assert_eq!(
            decide(&node(Some("10.8.32.0/24"), &["10.8.32.0/24"]), p).unwrap(),
            Action::Unchanged
        );
        let e = decide(&node(Some("10.244.0.0/24"), &["10.244.0.0/24"]), p).unwrap_err();
        let msg = e.to_string();
        assert!(
            msg.contains("10.244.0.0/24") && msg.contains("kubectl delete node talos-k8s-01"),
            "{msg}"
        );
        assert!(
            decide(
                &node(Some("10.8.32.0/24"), &["10.8.32.0/24", "fd00::/64"]),
                p
            )
            .is_err()
        );
        assert_eq!(patch(p)["spec"]["podCIDRs"][0], "10.8.32.0/24");
    }

    #[test]
    fn a_node_patched_by_this_run_is_not_patched_again_from_a_stale_event() {
        let plan = Plan::build(&crate::test_support::homelab()).unwrap();
        let bare = |name: &str| json!({"metadata": {"name": name}, "spec": {}});
        let first = &plan.nodes[0].name;
        // The watch shows the first node without a CIDR after this run patched it.
        let seen = [bare(first)];
        let none = BTreeSet::new();
        let (missing, to_patch) = pending(&plan, &seen, &none).unwrap();
        assert_eq!(to_patch.len(), 1);
        assert_eq!(missing.len(), plan.nodes.len() - 1);
        let done = BTreeSet::from([first.clone()]);
        let (_, to_patch) = pending(&plan, &seen, &done).unwrap();
        assert!(
            to_patch.is_empty(),
            "patched again: {:?}",
            to_patch.iter().map(|n| &n.name).collect::<Vec<_>>()
        );
    }
}
