//! `up` on a running cluster whose profile changed its nodes (issue 15 "Changes to
//! existing nodes", issue 13 item 7), end to end in the lab: a machine-config change
//! Talos applies in place goes NO_REBOOT; VM hardware a running VM cannot take stays
//! pending in Proxmox and is reported so, then applied by a rolling reboot through
//! Proxmox, one node at a time, with etcd intact.

use std::path::Path;

use serde_json::Value;

use super::support::{self, run};

use support::edited_homelab as profile;

fn up(profile: &Path, dir: &Path) -> (String, String) {
    let args = support::up_args(profile, dir);
    let r = run(&args.iter().map(String::as_str).collect::<Vec<_>>());
    assert_eq!(r.0, 0, "stdout:\n{}\nstderr:\n{}", r.1, r.2);
    (r.1, r.2)
}

fn saved(dir: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(dir.join("lab/datacenter.json")).unwrap()).unwrap()
}

fn boots(lab: &Value) -> Vec<u64> {
    let mut nodes: Vec<&Value> = lab["talos"]["nodes"].as_array().unwrap().iter().collect();
    nodes.sort_by_key(|n| n["vm"]["vmid"].as_u64());
    nodes
        .iter()
        .map(|n| n["boots"].as_u64().unwrap_or(0))
        .collect()
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
            (
                "  nodePodPrefix: 24\n",
                "  nodePodPrefix: 24\n  certSans: [api.example.org]\n",
            ),
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
    assert!(
        b0.iter().zip(&b1).all(|(a, b)| b == &(a + 1)),
        "{b0:?} → {b1:?}"
    );
    let order: Vec<usize> = ["talos-k8s-01", "talos-k8s-02", "talos-k8s-03"]
        .iter()
        .map(|n| {
            err.find(&format!("{n} rolling-reboot"))
                .or_else(|| err.find(&format!("[{n}] rolling-reboot")))
                .unwrap_or(usize::MAX)
        })
        .collect();
    assert!(order.windows(2).all(|w| w[0] < w[1]), "{order:?}\n{err}");
    assert_eq!(
        after["talos"]["members"], members,
        "etcd membership unchanged"
    );

    // Converged: a re-run finds nothing to apply and reboots nothing.
    let (_, again) = up(&changed, &dir);
    assert!(!again.contains("rolling-reboot"), "{again}");
    assert!(!again.contains("pending until reboot"), "{again}");
    assert_eq!(boots(&saved(&dir)), b1);
}

/// Issue 13 item 7: `--recreate` rebuilt every affected control plane at once. Now
/// one at a time, each back with its etcd member rejoined before the next; a disk
/// grown beyond the plan is a note, not a reason to re-create.
#[test]
fn recreate_takes_one_control_plane_at_a_time_and_a_grown_disk_is_kept() {
    let t = tempfile::tempdir().unwrap();
    let dir = t.path().join("cluster");
    let base = profile(t.path(), "base.yaml", &[]);
    up(&base, &dir);
    let bigger = profile(t.path(), "bigger.yaml", &[("disk: 64}", "disk: 80}")]);
    let owned = support::up_args(&bigger, &dir);
    let args: Vec<&str> = owned.iter().map(String::as_str).collect();
    let refused = run(&args);
    assert_ne!(refused.0, 0, "{}", refused.2);
    assert!(refused.2.contains("--recreate"), "{}", refused.2);
    let mut with = args.to_vec();
    with.push("--recreate");
    let r = run(&with);
    assert_eq!(r.0, 0, "{}", r.2);
    // Stage events of the re-creates, in order: never two open at once.
    let events: Vec<&str> =
        r.2.lines()
            .filter(|l| l.contains(" recreate: started") || l.contains(" recreate: done"))
            .collect();
    assert_eq!(events.len(), 6, "{}", r.2);
    for pair in events.chunks(2) {
        assert!(
            pair[0].contains("started") && pair[1].contains("done"),
            "{events:?}"
        );
        let node = |l: &str| l.split_whitespace().nth(1).unwrap().to_owned();
        assert_eq!(node(pair[0]), node(pair[1]), "{events:?}");
    }
    assert!(
        r.2.matches("members, ").count() >= 3,
        "etcd checked after each: {}",
        r.2
    );
    let lab = saved(&dir);
    let mut members: Vec<&str> = lab["talos"]["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["hostname"].as_str().unwrap())
        .collect();
    members.sort();
    assert_eq!(members, ["talos-k8s-01", "talos-k8s-02", "talos-k8s-03"]);
    for vm in lab["proxmox"]["vms"].as_object().unwrap().values() {
        assert!(
            vm["config"]["scsi0"].as_str().unwrap().contains("size=80G"),
            "{vm}"
        );
    }
    // Back to the smaller plan: the disks stay as they are, with a note.
    let (_, err) = up(&base, &dir);
    assert!(!err.contains(" recreate: "), "{err}");
    assert!(
        err.contains("scsi0: 80 GiB, larger than the planned 64 GiB (kept)"),
        "{err}"
    );
}

/// A rolling reboot killed after its first node resumes with the others only.
#[test]
fn an_interrupted_rolling_reboot_resumes_where_it_stopped() {
    use std::io::{BufRead, BufReader};
    use std::process::{Command, Stdio};
    let t = tempfile::tempdir().unwrap();
    let dir = t.path().join("cluster");
    let base = profile(t.path(), "base.yaml", &[]);
    up(&base, &dir);
    let before = boots(&saved(&dir));
    let changed = profile(
        t.path(),
        "changed.yaml",
        &[("nodeDefaults: {cores: 4,", "nodeDefaults: {cores: 6,")],
    );
    let mut child = Command::new(support::bin())
        .args(support::up_args(&changed, &dir))
        .env("NO_COLOR", "1")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut seen = String::new();
    for line in BufReader::new(child.stderr.take().unwrap()).lines() {
        let line = line.unwrap();
        seen += &line;
        seen.push('\n');
        if line.contains("talos-k8s-01 rolling-reboot: done") {
            child.kill().unwrap();
            break;
        }
    }
    child.wait().unwrap();
    assert!(seen.contains("talos-k8s-01 rolling-reboot: done"), "{seen}");
    let (_, err) = up(&changed, &dir);
    assert!(
        !err.contains("talos-k8s-01 rolling-reboot"),
        "done before: {err}"
    );
    assert!(err.contains("talos-k8s-02 rolling-reboot: done"), "{err}");
    assert!(err.contains("talos-k8s-03 rolling-reboot: done"), "{err}");
    let after = boots(&saved(&dir));
    assert!(
        before.iter().zip(&after).all(|(a, b)| b == &(a + 1)),
        "each node rebooted once: {before:?} → {after:?}"
    );
}
