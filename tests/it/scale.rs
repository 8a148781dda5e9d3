//! `up` converges the node set, end to end in the lab: a node added to a temporary
//! copy of `profiles/homelab.yaml` is built and joined with the next free pod CIDR;
//! removed from it, it is drained (a PodDisruptionBudget can stop that), its etcd
//! member removed (control planes), reset, its Node deleted and its VM destroyed.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{Value, json};
use talos_pve::kube;

use super::support::{self, res, run, with_api};

/// A copy of the homelab profile in `dir` with `extra` appended to its nodes.
fn profile_with(dir: &Path, file: &str, extra: &str) -> PathBuf {
    let base = std::fs::read_to_string(support::profile("homelab.yaml")).unwrap();
    let text = base.replacen("\naddons:", &format!("\n{extra}\naddons:"), 1);
    assert_ne!(text, base, "the homelab profile has an addons section");
    let p = dir.join(file);
    std::fs::write(&p, text).unwrap();
    p
}

fn node(name: &str, vmid: u32, host: &str, role: &str, octet: u8) -> String {
    format!(
        "  - name: {name}\n    host: {host}\n    vmid: {vmid}\n    role: {role}\n    management: {{address: 10.8.16.{octet}}}\n    workload: {{address: 10.8.28.{octet}}}\n"
    )
}

/// `up --lab --yes` of `profile` in `dir` plus `extra`.
fn up(profile: &Path, dir: &Path, extra: &[&str]) -> (i32, String, String) {
    let owned = support::up_args(profile, dir);
    let mut args: Vec<&str> = owned.iter().map(String::as_str).collect();
    args.extend(extra);
    run(&args)
}

fn ok(r: (i32, String, String)) -> (String, String) {
    assert_eq!(r.0, 0, "stdout:\n{}\nstderr:\n{}", r.1, r.2);
    (r.1, r.2)
}

fn saved(dir: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(dir.join("lab/datacenter.json")).unwrap()).unwrap()
}

fn vmids(dir: &Path) -> Vec<String> {
    let v = saved(dir);
    v["proxmox"]["vms"]
        .as_object()
        .unwrap()
        .keys()
        .cloned()
        .collect()
}

fn members(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = saved(dir)["talos"]["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["hostname"].as_str().unwrap().to_owned())
        .collect();
    v.sort();
    v
}

async fn pods_on(c: &kube::Client, node: &str) -> Vec<Value> {
    c.list(&format!(
        "/api/v1/pods?fieldSelector=spec.nodeName%3D{node}"
    ))
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_worker_is_added_then_removed_and_a_budget_holds_its_drain() {
    let t = tempfile::tempdir().unwrap();
    let dir = t.path().join("cluster");
    let base = profile_with(t.path(), "base.yaml", "");
    let grown = profile_with(
        t.path(),
        "grown.yaml",
        &node("talos-k8s-04", 123, "pve-ms01-01", "worker", 23),
    );
    let (b, d, g) = (base.clone(), dir.clone(), grown.clone());
    let (_, grew) = tokio::task::spawn_blocking(move || {
        ok(up(&b, &d, &[]));
        ok(up(&g, &d, &[]))
    })
    .await
    .unwrap();
    // Joined, not a new cluster: the bootstrap guard lets it pass, etcd is not
    // bootstrapped again.
    assert!(grew.contains("not bootstrapped again"), "{grew}");
    assert!(vmids(&dir).contains(&"123".to_owned()));
    let before = members(&dir);
    assert_eq!(before, ["talos-k8s-01", "talos-k8s-02", "talos-k8s-03"]);
    // The new Node: the next free /24 of the pod block, Cilium and the MetalLB
    // speaker on it; then a workload whose budget allows no disruption.
    with_api(&grown, &dir, async |c| {
        let n = c.get("/api/v1/nodes/talos-k8s-04").await.unwrap().unwrap();
        assert_eq!(n["spec"]["podCIDR"], "10.8.35.0/24", "{n}");
        let daemons: Vec<String> = pods_on(c, "talos-k8s-04")
            .await
            .iter()
            .map(|p| p["metadata"]["name"].as_str().unwrap().to_owned())
            .collect();
        assert!(
            daemons.iter().any(|p| p.starts_with("cilium-")),
            "{daemons:?}"
        );
        assert!(
            daemons.iter().any(|p| p.starts_with("speaker-")),
            "{daemons:?}"
        );
        let labels = json!({"app": "web"});
        c.apply(
            &res("apps", "Deployment", "deployments"),
            &json!({"apiVersion": "apps/v1", "kind": "Deployment",
                "metadata": {"name": "web", "namespace": "default"},
                "spec": {"replicas": 4, "selector": {"matchLabels": labels},
                    "template": {"metadata": {"labels": labels},
                        "spec": {"containers": [{"name": "web", "image": "nginx:1.29"}]}}}}),
        )
        .await
        .unwrap();
        c.apply(
            &res("policy", "PodDisruptionBudget", "poddisruptionbudgets"),
            &json!({"apiVersion": "policy/v1", "kind": "PodDisruptionBudget",
                "metadata": {"name": "web", "namespace": "default"},
                "spec": {"minAvailable": 4, "selector": {"matchLabels": labels}}}),
        )
        .await
        .unwrap();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            let on = pods_on(c, "talos-k8s-04").await;
            if on.iter().any(|p| p["metadata"]["labels"]["app"] == "web") {
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "no web pod on the worker"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    // Removed from the profile: the drain cannot finish, nothing is destroyed.
    let (b, d) = (base.clone(), dir.clone());
    let held = tokio::task::spawn_blocking(move || up(&b, &d, &[]))
        .await
        .unwrap();
    assert_eq!(held.0, 1, "{}", held.2);
    for needle in [
        "drain of talos-k8s-04 did not finish",
        "disruption budget",
        "kubectl get pdb",
    ] {
        assert!(
            held.2.contains(needle),
            "expected `{needle}` in:\n{}",
            held.2
        );
    }
    assert!(vmids(&dir).contains(&"123".to_owned()), "VM kept");
    with_api(&base, &dir, async |c| {
        let n = c.get("/api/v1/nodes/talos-k8s-04").await.unwrap().unwrap();
        assert_eq!(n["spec"]["unschedulable"], true, "cordoned: {n}");
        c.delete("/apis/policy/v1/namespaces/default/poddisruptionbudgets/web")
            .await
            .unwrap();
    })
    .await;
    let (b, d) = (base.clone(), dir.clone());
    let (out, err) = tokio::task::spawn_blocking(move || ok(up(&b, &d, &[])))
        .await
        .unwrap();
    assert!(err.contains("remove talos-k8s-04: cordon, drain"), "{err}");
    assert!(
        out.contains("Delete these static routes from the gateway")
            && out.contains("10.8.35.0/24 via 10.8.28.23   (talos-k8s-04)"),
        "{out}"
    );
    assert!(!vmids(&dir).contains(&"123".to_owned()), "VM gone");
    assert_eq!(members(&dir), before, "etcd unchanged");
    with_api(&base, &dir, async |c| {
        assert!(c.get("/api/v1/nodes/talos-k8s-04").await.unwrap().is_none());
        // The evicted web pod runs elsewhere.
        let web = c
            .list("/api/v1/namespaces/default/pods?labelSelector=app%3Dweb")
            .await
            .unwrap();
        assert_eq!(web.len(), 4, "{web:?}");
        assert!(web.iter().all(|p| p["spec"]["nodeName"] != "talos-k8s-04"));
    })
    .await;
    // Converged: a re-run removes nothing.
    let (b, d) = (base.clone(), dir.clone());
    let (_, err) = tokio::task::spawn_blocking(move || ok(up(&b, &d, &[])))
        .await
        .unwrap();
    assert!(!err.contains("remove "), "{err}");
}

#[tokio::test(flavor = "multi_thread")]
async fn control_planes_leave_etcd_only_with_fault_tolerance_left() {
    let t = tempfile::tempdir().unwrap();
    let dir = t.path().join("cluster");
    let four = profile_with(
        t.path(),
        "four.yaml",
        &node("talos-k8s-04", 123, "pve-ms01-02", "controlplane", 23),
    );
    let three = profile_with(t.path(), "three.yaml", "");
    // Three control planes, talos-k8s-03 dropped from the profile.
    let two = {
        let text = std::fs::read_to_string(&three).unwrap();
        let start = text.find("  - name: talos-k8s-03").unwrap();
        let end = start + text[start..].find("\naddons:").unwrap();
        let p = t.path().join("two.yaml");
        std::fs::write(&p, format!("{}{}", &text[..start], &text[end + 1..])).unwrap();
        p
    };
    let (f, th, tw, d) = (four.clone(), three.clone(), two.clone(), dir.clone());
    let (refused, shrunk) = tokio::task::spawn_blocking(move || {
        ok(up(&th, &d, &[]));
        let refused = up(&tw, &d, &[]);
        ok(up(&f, &d, &[]));
        (refused, ok(up(&th, &d, &[])))
    })
    .await
    .unwrap();
    assert_eq!(refused.0, 1, "{}", refused.2);
    assert!(
        refused.2.contains("leaves 2 etcd members")
            && refused.2.contains("no fault tolerance")
            && refused.2.contains("--allow-etcd-without-fault-tolerance"),
        "{}",
        refused.2
    );
    // Four to three: the member goes before the VM does.
    let err = shrunk.1;
    let member = err
        .find("talos-k8s-04 remove: etcd member removed")
        .expect(&err);
    let vm = err.find("talos-k8s-04 remove: VM 123").expect(&err);
    assert!(member < vm, "{err}");
    assert_eq!(
        members(&dir),
        ["talos-k8s-01", "talos-k8s-02", "talos-k8s-03"]
    );
    assert!(!vmids(&dir).contains(&"123".to_owned()));
    assert!(
        vmids(&dir).contains(&"122".to_owned()),
        "the refused run kept 03"
    );
}

/// Pod CIDRs derived in node order (none in the profile) stay with their nodes
/// when a node is inserted first: a Node's `spec.podCIDR` cannot change.
#[tokio::test(flavor = "multi_thread")]
async fn a_node_inserted_first_keeps_every_pod_cidr() {
    let t = tempfile::tempdir().unwrap();
    let dir = t.path().join("cluster");
    let strip = |p: &Path| {
        let text: String = std::fs::read_to_string(p)
            .unwrap()
            .lines()
            .filter(|l| !l.trim_start().starts_with("podCIDR:"))
            .map(|l| format!("{l}\n"))
            .collect();
        std::fs::write(p, text).unwrap();
    };
    let base = profile_with(t.path(), "base.yaml", "");
    strip(&base);
    let text = std::fs::read_to_string(&base).unwrap();
    let first = text.find("  - name: talos-k8s-01").unwrap();
    let inserted = t.path().join("inserted.yaml");
    std::fs::write(
        &inserted,
        format!(
            "{}{}{}",
            &text[..first],
            node("talos-k8s-00", 123, "pve-ms01-01", "worker", 23),
            &text[first..]
        ),
    )
    .unwrap();
    let (b, i, d) = (base.clone(), inserted.clone(), dir.clone());
    tokio::task::spawn_blocking(move || {
        ok(up(&b, &d, &[]));
        ok(up(&i, &d, &[]))
    })
    .await
    .unwrap();
    with_api(&inserted, &dir, async |c| {
        for (node, cidr) in [
            ("talos-k8s-00", "10.8.35.0/24"),
            ("talos-k8s-01", "10.8.32.0/24"),
            ("talos-k8s-02", "10.8.33.0/24"),
            ("talos-k8s-03", "10.8.34.0/24"),
        ] {
            let n = c
                .get(&format!("/api/v1/nodes/{node}"))
                .await
                .unwrap()
                .unwrap();
            assert_eq!(n["spec"]["podCIDR"], cidr, "{node}");
        }
    })
    .await;
}
