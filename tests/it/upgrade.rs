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
    let d = dir.display().to_string();
    let mut args = vec![
        cmd,
        "--profile",
        profile,
        "--dir",
        &d,
        "--lab",
        "--lab-speed",
        SPEED,
    ];
    if cmd != "status" {
        args.extend(["--yes", "--progress", "plain"]);
    }
    args.extend(extra);
    support::run(&args)
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
    assert!(
        versions(&new, &dir).iter().all(|(_, t, _)| t == "v1.13.9"),
        "{err}"
    );
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
