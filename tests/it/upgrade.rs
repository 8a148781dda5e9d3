//! `talos-pve upgrade --lab`: a cluster made with Talos v1.12.11 and its default
//! Kubernetes (1.35.4) moved to v1.13.9 and Kubernetes 1.36.3 by the real binary,
//! with a dry run that changes nothing and a failure mid-upgrade that a second run
//! finishes.

use std::path::Path;

use serde_json::Value;

use crate::support;

const SPEED: &str = "600";

/// The homelab profile at other versions (same cluster name, so the same directory).
fn profile_at(dir: &Path, talos: &str, k8s: &str) -> String {
    let text = std::fs::read_to_string(support::profile("homelab.yaml")).unwrap();
    let text = text
        .replace("  version: v1.13.9\n", &format!("  version: {talos}\n"))
        .replace("  version: 1.36.3\n", &format!("  version: {k8s}\n"));
    assert!(text.contains(talos) && text.contains(k8s));
    let p = dir.join(format!("homelab-{talos}-{k8s}.yaml"));
    std::fs::write(&p, text).unwrap();
    p.display().to_string()
}

fn run(cmd: &str, profile: &str, dir: &Path, extra: &[&str]) -> (i32, String, String) {
    support::lab_cli(cmd, profile, dir, SPEED, extra)
}

fn ok(r: (i32, String, String), what: &str) -> (String, String) {
    assert_eq!(
        r.0, 0,
        "{what} failed\n--- stdout\n{}\n--- stderr\n{}",
        r.1, r.2
    );
    (r.1, r.2)
}

/// Node → (Talos version, kubelet version) as `status --output json` shows them.
fn versions(profile: &str, dir: &Path) -> Vec<(String, String, String)> {
    let d = dir.display().to_string();
    let (out, _) = ok(
        support::run(&[
            "status",
            "--profile",
            profile,
            "--dir",
            &d,
            "--lab",
            "--output",
            "json",
        ]),
        "status",
    );
    let s: Value = serde_json::from_str(out.trim()).expect("status JSON");
    assert_eq!(
        s["etcd"]["members"].as_array().map(Vec::len),
        Some(3),
        "etcd keeps its three members: {}",
        s["etcd"]
    );
    s["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| {
            (
                n["name"].as_str().unwrap().to_owned(),
                n["talos"]["version"].as_str().unwrap_or("?").to_owned(),
                n["kubelet"].as_str().unwrap_or("?").to_owned(),
            )
        })
        .collect()
}

fn lab_nodes(dir: &Path) -> Value {
    let lab: Value =
        serde_json::from_slice(&std::fs::read(dir.join("lab/datacenter.json")).unwrap()).unwrap();
    let nodes: Vec<Value> = lab["talos"]["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| {
            serde_json::json!([
                n["talos_version"],
                n["staged_version"],
                n["boots"],
                n["config_sha256"]
            ])
        })
        .collect();
    serde_json::json!({"nodes": nodes, "counters": lab["talos"]["counters"]})
}

#[test]
fn a_1_12_cluster_is_upgraded_to_1_13_and_kubernetes_1_36_resuming_after_a_fault() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("cluster");
    let old = profile_at(tmp.path(), "v1.12.11", "1.35.4");
    ok(run("up", &old, &dir, &[]), "up at v1.12.11");
    let before = versions(&old, &dir);
    assert!(
        before
            .iter()
            .all(|(_, t, k)| t == "v1.12.11" && k == "v1.35.4"),
        "{before:?}"
    );
    let secrets = std::fs::read(dir.join("secrets.yaml")).unwrap();

    let new = profile_at(tmp.path(), "v1.13.9", "1.36.3");
    // Kubernetes 1.36 on Talos 1.12 is refused (lint already says so): OS first.
    let (code, _, err) = run(
        "upgrade",
        &profile_at(tmp.path(), "v1.12.11", "1.36.3"),
        &dir,
        &[],
    );
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("Talos v1.12.11 runs Kubernetes 1.30 to 1.35"),
        "{err}"
    );

    // A dry run prints every step and changes nothing, not even the saved lab.
    let lab_before = lab_nodes(&dir);
    let state_before = std::fs::read(dir.join("state.json")).unwrap();
    let (_, err) = ok(run("upgrade", &new, &dir, &["--dry-run"]), "dry run");
    for (name, _, _) in &before {
        assert!(
            err.contains(&format!("{name} (control plane) v1.12.11 → v1.13.9")),
            "{err}"
        );
        assert!(
            err.contains(&format!("{name} (control plane) v1.35.4 → v1.36.3")),
            "{err}"
        );
    }
    assert!(
        err.contains("factory.talos.dev/nocloud-installer/"),
        "{err}"
    );
    // The same plan as JSON.
    let (out, _) = ok(
        run("upgrade", &new, &dir, &["--dry-run", "--output", "json"]),
        "JSON dry run",
    );
    let plan: Value = serde_json::from_str(out.trim()).expect("dry-run JSON");
    assert_eq!(
        plan["talosSteps"].as_array().map(Vec::len),
        Some(3),
        "{plan}"
    );
    assert_eq!(plan["kubernetesSteps"][0]["to"], "v1.36.3", "{plan}");
    assert_eq!(lab_nodes(&dir), lab_before, "the dry run changed the lab");
    assert_eq!(std::fs::read(dir.join("state.json")).unwrap(), state_before);

    // The installer fails on the second control plane: the run stops there, names
    // it, and the cluster keeps its quorum (the first is upgraded, the third untouched).
    let (code, _, err) = run(
        "upgrade",
        &new,
        &dir,
        &["--lab-faults", "upgrade-fails=talos-k8s-02"],
    );
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("talos-k8s-02: the OS upgrade to v1.13.9 failed"),
        "{err}"
    );
    assert!(err.contains("fix:"), "{err}");
    let mid = versions(&new, &dir);
    let talos: Vec<&str> = mid.iter().map(|(_, t, _)| t.as_str()).collect();
    assert_eq!(talos, ["v1.13.9", "v1.12.11", "v1.12.11"], "{mid:?}");

    // Running it again finishes: every node on 1.13.9 and Kubernetes 1.36.3.
    let (_, err) = ok(run("upgrade", &new, &dir, &[]), "resumed upgrade");
    assert!(
        err.contains("runs Talos v1.13.9 and Kubernetes 1.36.3"),
        "{err}"
    );
    let after = versions(&new, &dir);
    assert!(
        after
            .iter()
            .all(|(_, t, k)| t == "v1.13.9" && k == "v1.36.3"),
        "{after:?}"
    );
    let (text, _) = ok(run("status", &new, &dir, &[]), "status");
    assert!(
        text.contains("running v1.13.9") && text.contains("v1.36.3"),
        "{text}"
    );
    assert_eq!(
        std::fs::read(dir.join("secrets.yaml")).unwrap(),
        secrets,
        "secrets unchanged"
    );
    let config = std::fs::read_to_string(dir.join("machineconfigs/talos-k8s-01.yaml")).unwrap();
    assert!(
        config.contains("ghcr.io/siderolabs/kubelet:v1.36.3"),
        "local configs follow"
    );

    // Nothing left to do: a third run changes no node.
    let lab_done = lab_nodes(&dir);
    let (_, err) = ok(run("upgrade", &new, &dir, &[]), "no-op upgrade");
    assert!(err.contains("every node already runs it"), "{err}");
    assert_eq!(lab_nodes(&dir)["nodes"], lab_done["nodes"]);
}

#[test]
fn a_patch_upgrade_of_1_13_nodes_pulls_the_factory_installer_reboots_and_uncordons() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("cluster");
    let old = profile_at(tmp.path(), "v1.13.8", "1.36.3");
    ok(run("up", &old, &dir, &[]), "up at v1.13.8");
    let new = support::profile("homelab.yaml").display().to_string();
    let report = tmp.path().join("report");
    let r = report.display().to_string();
    let (_, err) = ok(run("upgrade", &new, &dir, &["--lab-report", &r]), "upgrade");
    assert!(
        err.contains("Kubernetes: every kubelet already runs it"),
        "{err}"
    );
    // No kubelet moves, so each node's config (its installer image names the new
    // release) follows right after its own reboot, not in a second pass.
    assert!(
        err.contains("then its machine config from the profile (no reboot)"),
        "{err}"
    );
    assert_eq!(
        err.matches("config applied (no reboot)").count(),
        3,
        "{err}"
    );
    assert!(
        versions(&new, &dir).iter().all(|(_, t, _)| t == "v1.13.9"),
        "{err}"
    );
    for name in ["talos-k8s-01", "talos-k8s-02", "talos-k8s-03"] {
        let applied = std::fs::read_to_string(report.join(format!("talos/{name}.yaml"))).unwrap();
        let local =
            std::fs::read_to_string(dir.join(format!("machineconfigs/{name}.yaml"))).unwrap();
        assert_eq!(applied, local, "{name}: the node runs its local copy");
        assert!(applied.contains(":v1.13.9"), "{name}: {applied}");
    }
    let lab: Value =
        serde_json::from_slice(&std::fs::read(dir.join("lab/datacenter.json")).unwrap()).unwrap();
    for n in lab["talos"]["nodes"].as_array().unwrap() {
        // The new API path: the node pulled the schematic's installer (extensions kept).
        let pulled = n["pulled"].to_string();
        assert!(
            pulled.contains("factory.talos.dev/nocloud-installer/") && pulled.contains(":v1.13.9"),
            "{pulled}"
        );
    }
    for name in ["talos-k8s-01", "talos-k8s-02", "talos-k8s-03"] {
        let node =
            std::fs::read_to_string(report.join(format!("kubernetes/core/nodes/{name}.yaml")))
                .unwrap();
        assert!(
            !node.contains("unschedulable: true"),
            "{name} left cordoned:\n{node}"
        );
    }
    // The VMs' CD-ROM still holds the old ISO (docs/day2.md): `diff` says so, and
    // the next `up` swaps it, after which nothing differs.
    let d = dir.display().to_string();
    let diff = || support::run(&["diff", "--profile", &new, "--dir", &d, "--lab"]);
    let (code, out, _) = diff();
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("talos-v1.13.8") && out.contains("(in place)"),
        "{out}"
    );
    ok(run("up", &new, &dir, &[]), "up after the upgrade");
    let (code, out, err) = diff();
    assert_eq!(code, 0, "{out}{err}");
}

/// The web pods: (name, node, restarts of their containers).
async fn web_pods(c: &talos_pve::kube::Client) -> Vec<(String, String, i64)> {
    c.list("/api/v1/namespaces/default/pods?labelSelector=app%3Dweb")
        .await
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["metadata"]["name"].as_str().unwrap().to_owned(),
                p["spec"]["nodeName"].as_str().unwrap().to_owned(),
                p["status"]["containerStatuses"][0]["restartCount"]
                    .as_i64()
                    .unwrap(),
            )
        })
        .collect()
}

fn budget(min_available: u32) -> Value {
    serde_json::json!({"apiVersion": "policy/v1", "kind": "PodDisruptionBudget",
        "metadata": {"name": "web", "namespace": "default"},
        "spec": {"minAvailable": min_available, "selector": {"matchLabels": {"app": "web"}}}})
}

#[tokio::test(flavor = "multi_thread")]
async fn a_1_13_node_is_drained_before_its_reboot_and_a_budget_can_stop_the_upgrade() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("cluster");
    let old = profile_at(tmp.path(), "v1.13.8", "1.36.3");
    let (o, d) = (old.clone(), dir.clone());
    tokio::task::spawn_blocking(move || ok(run("up", &o, &d, &[]), "up at v1.13.8"))
        .await
        .unwrap();
    let pdb = support::res("policy", "PodDisruptionBudget", "poddisruptionbudgets");
    // Three web pods (one per node) whose budget allows no disruption at all.
    support::with_api(Path::new(&old), &dir, async |c| {
        let labels = serde_json::json!({"app": "web"});
        c.apply(
            &support::res("apps", "Deployment", "deployments"),
            &serde_json::json!({"apiVersion": "apps/v1", "kind": "Deployment",
                "metadata": {"name": "web", "namespace": "default"},
                "spec": {"replicas": 3, "selector": {"matchLabels": labels},
                    "template": {"metadata": {"labels": labels},
                        "spec": {"containers": [{"name": "web", "image": "nginx:1.29"}]}}}}),
        )
        .await
        .unwrap();
        c.apply(&pdb, &budget(3)).await.unwrap();
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(20);
        while web_pods(c).await.len() < 3 {
            assert!(tokio::time::Instant::now() < deadline, "no web pods");
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    })
    .await;

    // The drain of the first node cannot finish: the upgrade stops before its
    // reboot, naming it; the node stays cordoned and on its release.
    let new = support::profile("homelab.yaml").display().to_string();
    let (n, d) = (new.clone(), dir.clone());
    let held = tokio::task::spawn_blocking(move || run("upgrade", &n, &d, &[]))
        .await
        .unwrap();
    assert_eq!(held.0, 1, "{}", held.2);
    for needle in [
        "drain of talos-k8s-01 did not finish",
        "disruption budget",
        "kubectl get pdb",
    ] {
        assert!(
            held.2.contains(needle),
            "expected `{needle}` in:\n{}",
            held.2
        );
    }
    let (n, d) = (new.clone(), dir.clone());
    let mid = tokio::task::spawn_blocking(move || versions(&n, &d))
        .await
        .unwrap();
    assert!(mid.iter().all(|(_, t, _)| t == "v1.13.8"), "{mid:?}");
    support::with_api(Path::new(&new), &dir, async |c| {
        let n = c.get("/api/v1/nodes/talos-k8s-01").await.unwrap().unwrap();
        assert_eq!(n["spec"]["unschedulable"], true, "cordon kept: {n}");
        assert!(web_pods(c).await.iter().all(|(_, _, r)| *r == 0));
        // One disruption at a time is allowed now.
        c.apply(&pdb, &budget(2)).await.unwrap();
    })
    .await;

    // The resumed run drains every node before its reboot: no web pod was ever
    // killed by a reboot (its containers would count a restart), all three run.
    let (n, d) = (new.clone(), dir.clone());
    tokio::task::spawn_blocking(move || ok(run("upgrade", &n, &d, &[]), "resumed upgrade"))
        .await
        .unwrap();
    let (n, d) = (new.clone(), dir.clone());
    let after = tokio::task::spawn_blocking(move || versions(&n, &d))
        .await
        .unwrap();
    assert!(after.iter().all(|(_, t, _)| t == "v1.13.9"), "{after:?}");
    support::with_api(Path::new(&new), &dir, async |c| {
        let web = web_pods(c).await;
        assert_eq!(web.len(), 3, "{web:?}");
        assert!(
            web.iter().all(|(_, _, r)| *r == 0),
            "killed by a reboot: {web:?}"
        );
        for name in ["talos-k8s-01", "talos-k8s-02", "talos-k8s-03"] {
            let n = c
                .get(&format!("/api/v1/nodes/{name}"))
                .await
                .unwrap()
                .unwrap();
            assert!(n["spec"]["unschedulable"].is_null(), "{name} cordoned: {n}");
        }
        // DaemonSet pods stay through a drain: the reboot restarted Cilium's.
        let cilium = c
            .list("/api/v1/namespaces/kube-system/pods?labelSelector=k8s-app%3Dcilium")
            .await
            .unwrap();
        assert!(
            cilium
                .iter()
                .all(|p| p["status"]["containerStatuses"][0]["restartCount"] == 1),
            "{cilium:?}"
        );
    })
    .await;
}
