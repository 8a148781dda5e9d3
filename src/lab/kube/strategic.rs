//! Strategic merge patch (`application/strategic-merge-patch+json`) on built-in
//! kinds, as far as the lab models it. kubectl sends one for `cordon`/`uncordon`
//! (`{"spec":{"unschedulable":true}}`, then `null`), `patch` without `--type`,
//! `label`, `annotate`.
//!
//! Semantics (kubernetes.io/docs/tasks/manage-kubernetes-objects/update-api-object-kubectl-patch;
//! the `patchStrategy`/`patchMergeKey` tags of `k8s.io/api/core/v1/types.go`): maps
//! merge and `null` deletes, as in a JSON merge patch; a list merges according to
//! its field's `patchStrategy`: by `patchMergeKey` (containers by `name`, conditions
//! by `type`), as a set for primitive lists (`podCIDRs`, `finalizers`), or is
//! replaced when the field has no strategy (`NodeSpec.taints`, `tolerations`).
//! A list field the lab has no strategy for, and the `$patch`/`$retainKeys`/
//! `$setElementOrder` directives, are refused naming the field: guessing would
//! silently replace what the real server merges.

use serde_json::{Map, Value};

/// How a list field takes a strategic merge patch.
#[derive(Debug, Clone, Copy, PartialEq)]
enum ListStrategy {
    /// `patchStrategy:"merge"` with `patchMergeKey`: elements matched by that key.
    Key(&'static str),
    /// `patchStrategy:"merge"` on a list of scalars: a union.
    Set,
    /// No `patchStrategy`: the patch's list replaces the object's.
    Replace,
}

/// Pod-spec lists, under `prefix` (`spec.` for a Pod, `spec.template.spec.` for a
/// workload's template).
fn pod_spec(rest: &str) -> Option<ListStrategy> {
    Some(match rest {
        "containers" | "initContainers" | "volumes" => ListStrategy::Key("name"),
        "tolerations" => ListStrategy::Replace,
        _ => return None,
    })
}

/// The strategy of the list at `path` (`spec.containers`) of a `kind`; `None` when
/// the lab does not model it.
fn strategy(kind: &str, path: &str) -> Option<ListStrategy> {
    match (kind, path) {
        (_, "metadata.finalizers") => Some(ListStrategy::Set),
        (_, "metadata.ownerReferences") => Some(ListStrategy::Key("uid")),
        ("Node", "spec.podCIDRs") => Some(ListStrategy::Set),
        ("Node", "spec.taints") => Some(ListStrategy::Replace),
        ("Node", "status.conditions" | "status.addresses") => Some(ListStrategy::Key("type")),
        ("Pod", p) => pod_spec(p.strip_prefix("spec.")?),
        ("Deployment" | "DaemonSet" | "StatefulSet" | "ReplicaSet", p) => {
            pod_spec(p.strip_prefix("spec.template.spec.")?)
        }
        _ => None,
    }
}

/// Why a patch cannot be applied: the field (or directive) and what to do instead.
#[derive(Debug, PartialEq)]
pub struct Refused(pub String);

/// Applies `patch` to `into`, an object of `kind`.
pub fn apply(kind: &str, into: &mut Value, patch: &Value) -> Result<(), Refused> {
    merge(kind, "", into, patch)
}

fn merge(kind: &str, path: &str, into: &mut Value, patch: &Value) -> Result<(), Refused> {
    let Value::Object(p) = patch else {
        *into = patch.clone();
        return Ok(());
    };
    if !into.is_object() {
        *into = Value::Object(Map::new());
    }
    let m = into.as_object_mut().expect("just made an object");
    for (k, v) in p {
        let here = if path.is_empty() {
            k.clone()
        } else {
            format!("{path}.{k}")
        };
        if k.starts_with('$') {
            return Err(Refused(format!(
                "the lab does not implement the strategic merge patch directive `{k}` (at `{here}`)"
            )));
        }
        match v {
            Value::Null => {
                m.remove(k);
            }
            Value::Array(items) => {
                let Some(how) = strategy(kind, &here) else {
                    return Err(Refused(format!(
                        "the lab does not model the patch strategy of the list `{here}` of a {kind}"
                    )));
                };
                let slot = m.entry(k.clone()).or_insert(Value::Null);
                merge_list(kind, &here, how, slot, items)?;
            }
            _ => merge(kind, &here, m.entry(k.clone()).or_insert(Value::Null), v)?,
        }
    }
    Ok(())
}

fn merge_list(
    kind: &str,
    path: &str,
    how: ListStrategy,
    slot: &mut Value,
    items: &[Value],
) -> Result<(), Refused> {
    if how == ListStrategy::Replace || !slot.is_array() {
        *slot = Value::Array(items.to_vec());
        return Ok(());
    }
    let have = slot.as_array_mut().expect("checked above");
    for item in items {
        match how {
            ListStrategy::Set if !have.contains(item) => have.push(item.clone()),
            ListStrategy::Key(key) => {
                let Some(id) = item.get(key).filter(|id| !id.is_null()) else {
                    return Err(Refused(format!(
                        "an element of `{path}` has no `{key}`, the key its elements merge by"
                    )));
                };
                let inner = format!("{path}[]");
                match have.iter_mut().find(|e| e.get(key) == Some(id)) {
                    Some(e) => merge(kind, &inner, e, item)?,
                    None => {
                        let mut e = Value::Null;
                        merge(kind, &inner, &mut e, item)?;
                        have.push(e);
                    }
                }
            }
            _ => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn cordon_and_uncordon_set_and_remove_unschedulable() {
        let mut node = json!({"kind": "Node", "spec": {"podCIDR": "10.244.1.0/24"}});
        apply("Node", &mut node, &json!({"spec": {"unschedulable": true}})).unwrap();
        assert_eq!(node["spec"]["unschedulable"], true);
        assert_eq!(node["spec"]["podCIDR"], "10.244.1.0/24");
        apply("Node", &mut node, &json!({"spec": {"unschedulable": null}})).unwrap();
        assert!(node["spec"].get("unschedulable").is_none(), "{node}");
    }

    #[test]
    fn keyed_lists_merge_by_key_and_sets_unite() {
        let mut pod = json!({"spec": {"containers": [
            {"name": "a", "image": "nginx", "args": ["x"]},
            {"name": "b", "image": "redis"}
        ]}, "metadata": {"finalizers": ["f1"]}});
        let patch = json!({
            "spec": {"containers": [{"name": "b", "image": "redis:7"}, {"name": "c", "image": "busybox"}]},
            "metadata": {"finalizers": ["f1", "f2"]}
        });
        apply("Pod", &mut pod, &patch).unwrap();
        assert_eq!(
            pod["spec"]["containers"],
            json!([
                {"name": "a", "image": "nginx", "args": ["x"]},
                {"name": "b", "image": "redis:7"},
                {"name": "c", "image": "busybox"}
            ])
        );
        assert_eq!(pod["metadata"]["finalizers"], json!(["f1", "f2"]));
    }

    #[test]
    fn lists_without_a_strategy_are_replaced() {
        // NodeSpec.taints carries no patchStrategy in core/v1 types.go: atomic.
        let mut node = json!({"spec": {"taints": [{"key": "a", "effect": "NoSchedule"}]}});
        let taints = json!([{"key": "b", "effect": "NoExecute"}]);
        apply("Node", &mut node, &json!({"spec": {"taints": taints}})).unwrap();
        assert_eq!(node["spec"]["taints"], taints);
    }

    #[test]
    fn unmodelled_lists_and_directives_are_refused_by_name() {
        let mut o = json!({"spec": {"containers": [{"name": "a", "env": []}]}});
        let e = apply(
            "Pod",
            &mut o,
            &json!({"spec": {"containers": [{"name": "a", "env": [{"name": "X"}]}]}}),
        )
        .unwrap_err();
        assert!(e.0.contains("`spec.containers[].env` of a Pod"), "{e:?}");
        let e = apply("ConfigMap", &mut o, &json!({"spec": {"things": [1]}})).unwrap_err();
        assert!(e.0.contains("`spec.things`"), "{e:?}");
        let e = apply("Pod", &mut o, &json!({"spec": {"$patch": "replace"}})).unwrap_err();
        assert!(e.0.contains("`$patch`"), "{e:?}");
        let e = apply(
            "Pod",
            &mut o,
            &json!({"spec": {"containers": [{"image": "x"}]}}),
        )
        .unwrap_err();
        assert!(e.0.contains("no `name`"), "{e:?}");
    }
}
