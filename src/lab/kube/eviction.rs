//! The Pod `eviction` subresource (`POST …/pods/NAME/eviction`, a policy/v1 or
//! v1beta1 `Eviction`), as kubernetes v1.36 `pkg/registry/core/pod/storage/eviction.go`
//! answers it: the name must match the URL (400); a missing pod is 404; more than one
//! PodDisruptionBudget selecting the pod is 500; a budget with no disruption left
//! refuses with 429 TooManyRequests ("Cannot evict pod as it would violate the pod's
//! disruption budget.", cause `DisruptionBudget`), which is what makes a drain wait;
//! otherwise the pod is deleted and the reply is 201 with a Success Status.
//!
//! The disruption controller's arithmetic is done on the spot: healthy = Ready pods
//! of the namespace that the budget selects; desired = `minAvailable`, or selected
//! pods − `maxUnavailable` (integers or percentages, rounded up as the controller does).

use serde_json::{Value, json};

use super::Lab;
use super::api::{Reply, reply, status};
use super::store::{self, key};

pub fn evict(lab: &Lab, ns: &str, pod: &str, body: &Value) -> Reply {
    let kind_ok = body["kind"] == "Eviction"
        && matches!(
            body["apiVersion"].as_str(),
            Some("policy/v1" | "policy/v1beta1")
        );
    if !kind_ok {
        return status(
            400,
            "BadRequest",
            "the body of an eviction must be a policy/v1 Eviction".into(),
        );
    }
    if body["metadata"]["name"].as_str() != Some(pod) {
        return status(
            400,
            "BadRequest",
            "name in URL does not match name in Eviction object".into(),
        );
    }
    let pod_key = key("", "pods", Some(ns), pod);
    let Some(p) = lab.store.get(&pod_key) else {
        return status(404, "NotFound", format!("pods \"{pod}\" not found"));
    };
    let budgets: Vec<Value> = lab
        .store
        .list(&store::prefix("policy", "poddisruptionbudgets", Some(ns)))
        .into_iter()
        .filter(|b| selects(&b["spec"]["selector"], &p))
        .collect();
    match budgets.as_slice() {
        [] => {}
        [b] => {
            let selected: Vec<Value> = lab
                .store
                .list(&store::prefix("", "pods", Some(ns)))
                .into_iter()
                .filter(|q| selects(&b["spec"]["selector"], q))
                .collect();
            let healthy = selected.iter().filter(|q| ready(q)).count() as i64;
            let desired = desired_healthy(&b["spec"], selected.len() as i64);
            // An unhealthy pod does not count toward the budget: it may always go.
            if ready(&p) && healthy <= desired {
                let name = b["metadata"]["name"].as_str().unwrap_or_default();
                let mut r = status(
                    429,
                    "TooManyRequests",
                    "Cannot evict pod as it would violate the pod's disruption budget.".into(),
                );
                r.body["details"] = json!({"causes": [{"reason": "DisruptionBudget",
                    "message": format!("The disruption budget {name} needs {desired} healthy pods and has {healthy} currently")}]});
                return r;
            }
        }
        _ => {
            return status(
                500,
                "InternalError",
                "This pod has more than one PodDisruptionBudget, which the eviction subresource does not support.".into(),
            );
        }
    }
    lab.store.delete(&pod_key);
    reply(
        201,
        json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201}),
    )
}

/// `matchLabels` of a budget's selector; in policy/v1 an empty selector selects
/// every pod of the namespace.
fn selects(selector: &Value, pod: &Value) -> bool {
    let labels = &pod["metadata"]["labels"];
    selector["matchLabels"]
        .as_object()
        .into_iter()
        .flatten()
        .all(|(k, v)| labels[k] == *v)
}

fn ready(pod: &Value) -> bool {
    pod["status"]["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|c| c["type"] == "Ready" && c["status"] == "True")
}

/// The healthy pods a budget wants to keep out of `expected` selected pods.
fn desired_healthy(spec: &Value, expected: i64) -> i64 {
    let scaled = |v: &Value| match v {
        Value::Number(n) => n.as_i64().unwrap_or(0),
        Value::String(s) => s
            .strip_suffix('%')
            .and_then(|p| p.parse::<i64>().ok())
            .map_or(0, |p| (p * expected + 99) / 100),
        _ => 0,
    };
    if !spec["minAvailable"].is_null() {
        scaled(&spec["minAvailable"])
    } else if !spec["maxUnavailable"].is_null() {
        (expected - scaled(&spec["maxUnavailable"])).max(0)
    } else {
        0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lab_with(pods: usize, budget: Value) -> Lab {
        let lab = Lab {
            store: store::Store::new(crate::lab::etcd::EtcdStore::default()),
            cfg: super::super::KubeSimConfig::realistic(),
            nodes: Default::default(),
            down: Default::default(),
            starting: Default::default(),
            timers: Default::default(),
            next_due: Default::default(),
            requests: Default::default(),
            pending: std::sync::Mutex::new(crate::lab::Fabric::new().events.subscribe()),
        };
        for i in 0..pods {
            let name = format!("web-{i}");
            lab.store.put(
                &key("", "pods", Some("default"), &name),
                json!({"apiVersion": "v1", "kind": "Pod",
                    "metadata": {"name": name, "namespace": "default", "labels": {"app": "web"}},
                    "status": {"conditions": [{"type": "Ready", "status": "True"}]}}),
            );
        }
        lab.store.put(
            &key("policy", "poddisruptionbudgets", Some("default"), "web"),
            json!({"apiVersion": "policy/v1", "kind": "PodDisruptionBudget",
                "metadata": {"name": "web", "namespace": "default"},
                "spec": budget}),
        );
        lab
    }

    fn eviction(name: &str) -> Value {
        json!({"apiVersion": "policy/v1", "kind": "Eviction",
            "metadata": {"name": name, "namespace": "default"}})
    }

    #[test]
    fn a_budget_refuses_with_429_until_a_disruption_is_allowed() {
        let budget = json!({"minAvailable": 2, "selector": {"matchLabels": {"app": "web"}}});
        let lab = lab_with(3, budget);
        assert_eq!(
            evict(&lab, "default", "web-0", &eviction("web-0")).code,
            201
        );
        let r = evict(&lab, "default", "web-1", &eviction("web-1"));
        assert_eq!(r.code, 429, "{}", r.body);
        assert_eq!(r.body["reason"], "TooManyRequests");
        assert!(
            r.body["details"]["causes"][0]["message"]
                .as_str()
                .unwrap()
                .contains("needs 2 healthy pods and has 2 currently"),
            "{}",
            r.body
        );
        assert!(
            lab.store
                .get(&key("", "pods", Some("default"), "web-1"))
                .is_some()
        );
        assert_eq!(
            evict(&lab, "default", "web-0", &eviction("web-0")).code,
            404
        );
        assert_eq!(
            evict(&lab, "default", "web-2", &eviction("web-1")).code,
            400
        );
    }

    #[test]
    fn budgets_count_like_the_disruption_controller() {
        assert_eq!(desired_healthy(&json!({"minAvailable": 2}), 3), 2);
        assert_eq!(desired_healthy(&json!({"minAvailable": "50%"}), 3), 2);
        assert_eq!(desired_healthy(&json!({"maxUnavailable": 0}), 3), 3);
        assert_eq!(desired_healthy(&json!({"maxUnavailable": "34%"}), 3), 1);
    }
}
