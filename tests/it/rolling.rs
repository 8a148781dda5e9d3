//! The per-node gates of a rolling operation (issue 15: "one node at a time, etcd
//! healthy and the node Ready before the next"), proved by a node that does not come
//! back whole. In the lab a rebooting node's kubelet stops posting and its etcd is
//! down until they start again after the boot; the faults `kubelet-stays-down` and
//! `etcd-stays-down` keep one of them down. A rolling reboot (`up` applying pending
//! VM hardware) and an OS upgrade must then stop at that node, naming it and the
//! wait, with no other node rebooted after it.

use std::path::Path;

use serde_json::Value;

use super::support;

const NODES: [&str; 3] = ["talos-k8s-01", "talos-k8s-02", "talos-k8s-03"];

/// The homelab profile with `edits` applied, written into `dir`.
fn profile(dir: &Path, file: &str, edits: &[(&str, &str)]) -> String {
    support::edited_homelab(dir, file, edits)
        .display()
        .to_string()
}

fn cli(
    cmd: &str,
    profile: &str,
    dir: &Path,
    speed: &str,
    faults: Option<&str>,
) -> (i32, String, String) {
    let faults: Vec<&str> = faults.map_or(Vec::new(), |f| vec!["--lab-faults", f]);
    support::lab_cli(cmd, profile, dir, speed, &faults)
}

fn ok(r: (i32, String, String)) {
    assert_eq!(r.0, 0, "stdout:\n{}\nstderr:\n{}", r.1, r.2);
}

/// Boots so far of talos-k8s-01..03 (the lab's saved Talos nodes, by VMID).
fn boots(dir: &Path) -> Vec<u64> {
    let lab: Value =
        serde_json::from_slice(&std::fs::read(dir.join("lab/datacenter.json")).unwrap()).unwrap();
    let mut nodes: Vec<Value> = lab["talos"]["nodes"].as_array().unwrap().clone();
    nodes.sort_by_key(|n| n["vm"]["vmid"].as_u64());
    nodes.iter().map(|n| n["boots"].as_u64().unwrap()).collect()
}

/// `cmd` at lab speed `speed` with `fault` on talos-k8s-02 fails with `expect` in
/// its message, after rebooting talos-k8s-01 and -02 once each and talos-k8s-03 not
/// at all.
fn stops_at_the_second_node(
    (cmd, speed): (&str, &str),
    from: &str,
    to: &str,
    (fault, expect): (&str, &[&str]),
) {
    let t = tempfile::tempdir().unwrap();
    let dir = t.path().join("cluster");
    ok(cli("up", from, &dir, speed, None));
    let before = boots(&dir);
    let fault = format!("{fault}=talos-k8s-02");
    let (code, out, err) = cli(cmd, to, &dir, speed, Some(&fault));
    let after = boots(&dir);
    let rebooted: Vec<u64> = after.iter().zip(&before).map(|(a, b)| a - b).collect();
    assert_eq!(
        rebooted,
        [1, 1, 0],
        "reboots of {NODES:?}: only the nodes up to the stuck one\n{err}"
    );
    assert_ne!(code, 0, "{cmd} with {fault} succeeded:\n{out}\n{err}");
    // Stopped by the wait after the reboot, not by a later check.
    for needle in expect {
        assert!(err.contains(needle), "expected `{needle}` in:\n{err}");
    }
}

/// Profiles for the rolling reboot: more cores, which a running VM takes only at
/// its next (Proxmox) reboot.
fn rolling(dir: &Path) -> (String, String) {
    (
        profile(dir, "base.yaml", &[]),
        profile(
            dir,
            "cores.yaml",
            &[("nodeDefaults: {cores: 4,", "nodeDefaults: {cores: 6,")],
        ),
    )
}

/// Profiles for a patch upgrade of 1.13 nodes (the `LifecycleService` path).
fn upgrade(dir: &Path) -> (String, String) {
    (
        profile(
            dir,
            "v1.13.8.yaml",
            &[("  version: v1.13.9\n", "  version: v1.13.8\n")],
        ),
        profile(dir, "v1.13.9.yaml", &[]),
    )
}

/// The fault on talos-k8s-02 and what the error must say: the kubelet of the new
/// boot never posts, or etcd never runs again.
const KUBELET: (&str, &[&str]) = (
    "kubelet-stays-down",
    &[
        "waiting for Node talos-k8s-02 Ready from boot",
        "has not posted since the reboot",
    ],
);
const ETCD: (&str, &[&str]) = (
    "etcd-stays-down",
    &[
        "talos-k8s-02: etcd healthy again after the reboot",
        "etcd on talos-k8s-02 is Preparing",
    ],
);

#[test]
fn a_rolling_reboot_waits_for_the_kubelet_of_the_new_boot() {
    let t = tempfile::tempdir().unwrap();
    let (from, to) = rolling(t.path());
    stops_at_the_second_node(("up", "600"), &from, &to, KUBELET);
}

#[test]
fn a_rolling_reboot_waits_for_etcd_to_run_again() {
    let t = tempfile::tempdir().unwrap();
    let (from, to) = rolling(t.path());
    stops_at_the_second_node(("up", "600"), &from, &to, ETCD);
}

#[test]
fn an_os_upgrade_waits_for_the_kubelet_of_the_new_boot() {
    let t = tempfile::tempdir().unwrap();
    let (from, to) = upgrade(t.path());
    // Lab speed 60: the reboot (45 s real) is shorter than the grace period (50 s),
    // so the Node still shows Ready — from the old boot — when the node answers
    // again: only the boot id tells that its kubelet has not posted since.
    stops_at_the_second_node(("upgrade", "60"), &from, &to, KUBELET);
}

#[test]
fn an_os_upgrade_waits_for_etcd_to_run_again() {
    let t = tempfile::tempdir().unwrap();
    let (from, to) = upgrade(t.path());
    stops_at_the_second_node(("upgrade", "600"), &from, &to, ETCD);
}
