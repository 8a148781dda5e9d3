//! `up` on a running cluster whose profile changed its nodes (issue 15 "Changes to
//! existing nodes", issue 13 item 7), end to end in the lab: a machine-config change
//! Talos applies in place goes NO_REBOOT; VM hardware a running VM cannot take stays
//! pending in Proxmox and is reported so, then applied by a rolling reboot through
//! Proxmox, one node at a time, with etcd intact.

use std::path::{Path, PathBuf};

use serde_json::Value;

use super::support::{self, run};

fn profile(dir: &Path, file: &str, edits: &[(&str, &str)]) -> PathBuf {
    let mut text = std::fs::read_to_string(support::profile("homelab.yaml")).unwrap();
    for (from, to) in edits {
        let next = text.replacen(from, to, 1);
        assert_ne!(next, text, "{from} is in the homelab profile");
        text = next;
    }
    let p = dir.join(file);
    std::fs::write(&p, text).unwrap();
    p
}

fn up(profile: &Path, dir: &Path) -> (String, String) {
    let (p, d) = (profile.display().to_string(), dir.display().to_string());
    let r = run(&[
        "up", "--profile", &p, "--dir", &d, "--lab", "--lab-speed", "600", "--yes",
        "--progress", "plain",
    ]);
    assert_eq!(r.0, 0, "stdout:\n{}\nstderr:\n{}", r.1, r.2);
    (r.1, r.2)
}

fn saved(dir: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(dir.join("lab/datacenter.json")).unwrap()).unwrap()
}

fn boots(lab: &Value) -> Vec<u64> {
    let mut nodes: Vec<&Value> = lab["talos"]["nodes"].as_array().unwrap().iter().collect();
    nodes.sort_by_key(|n| n["vm"]["vmid"].as_u64());
    nodes.iter().map(|n| n["boots"].as_u64().unwrap_or(0)).collect()
}

#[test]
fn changed_nodes_are_applied_in_place_or_by_a_rolling_reboot() {
    let t = tempfile::tempdir().unwrap();
    let dir = t.path().join("cluster");
    let base = profile(t.path(), "base.yaml", &[]);
    up(&base, &dir);
    let before = saved(&dir);
    let members = before["talos"]["members"].clone();

    let changed = profile(
        t.path(),
        "changed.yaml",
        &[
            ("nodeDefaults: {cores: 4,", "nodeDefaults: {cores: 6,"),
            ("  nodePodPrefix: 24\n", "  nodePodPrefix: 24\n  certSans: [api.example.org]\n"),
        ],
    );
    let (_, err) = up(&changed, &dir);
    // Proxmox could not hot-plug the cores: reported as pending, never "updated".
    assert!(err.contains("pending until reboot"), "{err}");
    assert!(!err.contains(": updated"), "{err}");
    for n in ["talos-k8s-01", "talos-k8s-02", "talos-k8s-03"] {
        assert!(
            err.contains(&format!(
                "node {n}: machine config applied without reboot; VM config pending until reboot (cores)"
            )),
            "{err}"
        );
    }
    let after = saved(&dir);
    for (vmid, vm) in after["proxmox"]["vms"].as_object().unwrap() {
        assert_eq!(vm["config"]["cores"], "6", "VM {vmid}: {vm}");
        assert!(vm.get("pending").is_none(), "VM {vmid} still pending: {vm}");
    }
    // Each node rebooted once, one at a time, control planes in plan order.
    let (b0, b1) = (boots(&before), boots(&after));
    assert!(b0.iter().zip(&b1).all(|(a, b)| b == &(a + 1)), "{b0:?} → {b1:?}");
    let order: Vec<usize> = ["talos-k8s-01", "talos-k8s-02", "talos-k8s-03"]
        .iter()
        .map(|n| err.find(&format!("{n} rolling-reboot")).or_else(|| err.find(&format!("[{n}] rolling-reboot"))).unwrap_or(usize::MAX))
        .collect();
    assert!(order.windows(2).all(|w| w[0] < w[1]), "{order:?}\n{err}");
    assert_eq!(after["talos"]["members"], members, "etcd membership unchanged");

    // Converged: a re-run finds nothing to apply and reboots nothing.
    let (_, again) = up(&changed, &dir);
    assert!(!again.contains("rolling-reboot"), "{again}");
    assert!(!again.contains("pending until reboot"), "{again}");
    assert_eq!(boots(&saved(&dir)), b1);
}
