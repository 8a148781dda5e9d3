//! Unit tests of the run state: marks persist at once (mode 0600) and survive a
//! restart, concurrent marks, a changed profile, damaged files, step round trips.

use std::sync::Arc;

use super::*;

use crate::test_support::homelab;

fn open(path: &Path, p: &Profile) -> Result<State, StateError> {
    State::load_or_new(path, p, &Plan::build(p).unwrap())
}

#[test]
fn marks_persist_at_once_with_mode_0600_and_survive_a_restart() {
    let d = tempfile::tempdir().unwrap();
    let path = d.path().join("state.json");
    let p = homelab();
    let s = open(&path, &p).unwrap();
    assert!(!path.exists(), "nothing is written before the first step");
    s.mark_done(Step::Preflight, None).unwrap();
    s.mark_done(
        Step::Vm("talos-k8s-01".into()),
        Some("VMID 120 on pve-ms01-01"),
    )
    .unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }
    // A "crash" here: a new process reads what was written.
    drop(s);
    let s = open(&path, &p).unwrap();
    assert!(s.drift().is_empty());
    assert!(s.is_done(&Step::Preflight));
    assert!(s.is_done(&Step::Vm("talos-k8s-01".into())));
    assert!(
        !s.is_done(&Step::Vm("talos-k8s-02".into())),
        "keyed by node"
    );
    assert!(!s.is_done(&Step::Bootstrapped));
    let steps = s.steps();
    assert_eq!(steps.len(), 2);
    assert_eq!(steps[1].detail.as_deref(), Some("VMID 120 on pve-ms01-01"));
    let raw: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    assert_eq!(raw["steps"][1]["step"], "vm");
    assert_eq!(raw["steps"][1]["target"], "talos-k8s-01");
    assert_eq!(raw["identities"]["talos-k8s-01"]["vmid"], 120);
    assert_eq!(State::read(&path).unwrap().unwrap().steps, steps);
}

#[test]
fn concurrent_marks_all_land() {
    let d = tempfile::tempdir().unwrap();
    let path = d.path().join("state.json");
    let p = homelab();
    let s = Arc::new(open(&path, &p).unwrap());
    let nodes: Vec<String> = (0..16).map(|i| format!("node-{i}")).collect();
    std::thread::scope(|scope| {
        for n in &nodes {
            let s = s.clone();
            scope.spawn(move || {
                s.mark_done(Step::Cidata(n.clone()), None).unwrap();
                s.mark_done(Step::Installed(n.clone()), None).unwrap();
            });
        }
    });
    let reread = State::read(&path).unwrap().unwrap();
    assert_eq!(reread.steps.len(), 32);
    assert!(nodes.iter().all(|n| {
        open(&path, &p)
            .unwrap()
            .is_done(&Step::Installed(n.clone()))
    }));
    assert_eq!(
        std::fs::read_dir(d.path()).unwrap().count(),
        1,
        "no temp files left"
    );
}

#[test]
fn a_changed_profile_is_detected_and_must_be_adopted() {
    let d = tempfile::tempdir().unwrap();
    let path = d.path().join("state.json");
    let p = homelab();
    let s = open(&path, &p).unwrap();
    s.mark_done(Step::Vm("talos-k8s-01".into()), None).unwrap();
    s.mark_done(Step::Vm("talos-k8s-02".into()), None).unwrap();
    s.mark_done(Step::Secrets, None).unwrap();

    // A harmless edit: drift without identity changes.
    let mut edited = p.clone();
    edited.metadata.description = Some("edited".into());
    let s = open(&path, &edited).unwrap();
    let drift = s.drift();
    assert!(drift.profile_changed && drift.identity_changes.is_empty());

    // A new VMID for one node: reported, marking refused until adopted.
    let mut moved = p.clone();
    moved.nodes[0].vmid = 130;
    let s = open(&path, &moved).unwrap();
    assert_eq!(s.drift().identity_changes, ["talos-k8s-01: VMID 120 → 130"]);
    let e = s.mark_done(Step::Cilium, None).unwrap_err();
    assert!(matches!(e, StateError::Drifted { .. }));
    assert!(e.to_string().contains("VMID 120 → 130"), "{e}");
    s.adopt().unwrap();
    assert!(
        !s.is_done(&Step::Vm("talos-k8s-01".into())),
        "another VM now"
    );
    assert!(s.is_done(&Step::Vm("talos-k8s-02".into())));
    assert!(s.is_done(&Step::Secrets));
    s.mark_done(Step::Cilium, None).unwrap();
    assert!(open(&path, &moved).unwrap().drift().is_empty());
}

#[test]
fn damaged_files_are_errors_naming_the_file_and_the_fix() {
    let d = tempfile::tempdir().unwrap();
    let path = d.path().join("state.json");
    let p = homelab();
    for (content, expect) in [
        (&b"{\"format\": 1, \"cluster\": \"homelab\", \"profileHa"[..], "damaged"),
        (b"", "damaged"),
        (b"{\"format\": 1, \"cluster\": \"homelab\", \"profileHash\": \"x\", \"identities\": {}, \"steps\": [{\"step\": \"teleport\", \"at\": \"now\"}]}", "unknown step `teleport`"),
        (b"{\"format\": 9}", "format 9"),
    ] {
        std::fs::write(&path, content).unwrap();
        let e = open(&path, &p).err().expect("damaged state must not load");
        let msg = e.to_string();
        assert!(msg.contains(&path.display().to_string()), "{msg}");
        assert!(msg.contains(expect), "{msg}");
        assert!(msg.contains("fix:"), "{msg}");
        assert_eq!(std::fs::read(&path).unwrap(), content, "never reset silently");
    }
    std::fs::write(&path, b"{\"format\": 1, \"cluster\": \"other\", \"profileHash\": \"x\", \"identities\": {}, \"steps\": []}").unwrap();
    assert!(matches!(
        open(&path, &p),
        Err(StateError::OtherCluster { .. })
    ));
}

#[test]
fn every_step_round_trips_through_its_parts() {
    let n = || "talos-k8s-01".to_owned();
    let all = [
        Step::Lint,
        Step::Preflight,
        Step::Secrets,
        Step::Configs,
        Step::Schematic,
        Step::Iso("pve-ms01-01".into()),
        Step::Vm(n()),
        Step::Started(n()),
        Step::Cidata(n()),
        Step::CidataRemoved(n()),
        Step::Installed(n()),
        Step::Bootstrapped,
        Step::EtcdHealthy,
        Step::Kubeconfig,
        Step::PodCidr(n()),
        Step::Cilium,
        Step::Metallb,
        Step::Healthy,
        Step::TalosUpgraded(n()),
        Step::KubernetesUpgraded(n()),
        Step::Reconfigured(n()),
    ];
    for s in &all {
        assert_eq!(Step::from_parts(s.name(), s.target()).as_ref(), Some(s));
    }
    assert_eq!(
        Step::from_parts("vm", None),
        None,
        "per-node steps need a node"
    );
    assert_eq!(Step::from_parts("lint", Some("x")), None);
    // State files from before the cidata delivery still read.
    assert_eq!(
        Step::from_parts("applied", Some("n1")),
        Some(Step::Cidata("n1".into()))
    );
}
