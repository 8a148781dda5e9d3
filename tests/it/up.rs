//! `talos-pve up --lab` end to end: the real binary against the simulated
//! datacenter, which persists in `<dir>/lab/datacenter.json` between runs (and,
//! like real hosts, keeps what a killed run already did).

use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::support;

/// Fast enough that a whole bring-up takes about two seconds.
const SPEED: &str = "600";

fn profile() -> String {
    support::profile("homelab.yaml").display().to_string()
}

fn up_args<'a>(dir: &'a str, extra: &[&'a str]) -> Vec<String> {
    let p = profile();
    let speed = if extra.contains(&"--lab-speed") {
        &[][..]
    } else {
        &["--lab-speed", SPEED][..]
    };
    let mut v: Vec<String> = [
        "up",
        "--profile",
        &p,
        "--lab",
        "--yes",
        "--dir",
        dir,
        "--progress",
        "plain",
    ]
    .iter()
    .chain(speed)
    .map(|s| s.to_string())
    .collect();
    v.extend(extra.iter().map(|s| s.to_string()));
    v
}

fn up(dir: &Path, extra: &[&str]) -> (i32, String, String) {
    let d = dir.display().to_string();
    let args = up_args(&d, extra);
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    support::run(&refs)
}

fn up_ok(dir: &Path, extra: &[&str]) -> (String, String) {
    let (code, out, err) = up(dir, extra);
    assert_eq!(code, 0, "up failed\n--- stdout\n{out}\n--- stderr\n{err}");
    (out, err)
}

/// Run `up` and SIGKILL it `delay` after a stderr line containing `pattern`.
/// Returns the stderr seen so far. Panics if the run ends before the line.
fn up_killed(dir: &Path, pattern: &str, delay: Duration, extra: &[&str]) -> String {
    let d = dir.display().to_string();
    let mut child = Command::new(support::bin())
        .args(up_args(&d, extra))
        .env("NO_COLOR", "1")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn talos-pve");
    let stderr = child.stderr.take().expect("stderr");
    let mut seen = String::new();
    let mut lines = BufReader::new(stderr).lines();
    let mut hit = false;
    for line in lines.by_ref() {
        let Ok(line) = line else { break };
        seen.push_str(&line);
        seen.push('\n');
        if line.contains(pattern) {
            hit = true;
            break;
        }
    }
    if hit {
        // Keep draining so the child never blocks on a full pipe meanwhile.
        let drain = std::thread::spawn(move || for _ in lines.by_ref() {});
        std::thread::sleep(delay);
        child.kill().expect("SIGKILL talos-pve");
        let _ = drain.join();
    }
    let status = child.wait().expect("wait");
    assert!(hit, "the run ended ({status}) before `{pattern}`:\n{seen}");
    seen
}

fn read(p: &Path) -> Vec<u8> {
    std::fs::read(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

fn lab_state(dir: &Path) -> Value {
    serde_json::from_slice(&read(&dir.join("lab/datacenter.json"))).expect("lab state is JSON")
}

fn counter(lab: &Value, name: &str) -> u64 {
    lab["talos"]["counters"][name]
        .as_u64()
        .unwrap_or_else(|| panic!("no talos counter {name}"))
}

fn tasks(lab: &Value, kind: &str) -> usize {
    lab["proxmox"]["tasks"]
        .as_array()
        .expect("tasks")
        .iter()
        .filter(|t| t["kind"] == kind && t["exitstatus"] == "OK")
        .count()
}

fn vmids(lab: &Value) -> Vec<String> {
    lab["proxmox"]["vms"]
        .as_object()
        .expect("vms")
        .keys()
        .cloned()
        .collect()
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p)
        .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
        .permissions()
        .mode()
        & 0o777
}

/// The planned nodes: (name, VMID, pod CIDR), from `talos-pve plan --output json`.
fn planned() -> Vec<(String, u64, String)> {
    let (code, out, err) = support::run(&["plan", "--profile", &profile(), "--output", "json"]);
    assert_eq!(code, 0, "{err}");
    let plan: Value = serde_json::from_str(&out).expect("plan JSON");
    plan["nodes"]
        .as_array()
        .expect("nodes")
        .iter()
        .map(|n| {
            (
                n["name"].as_str().expect("name").to_owned(),
                n["vmid"].as_u64().expect("vmid"),
                n["podCIDR"].as_str().expect("podCIDR").to_owned(),
            )
        })
        .collect()
}

/// A finished cluster: every step of the bring-up holds in the files and the lab.
fn assert_healthy(dir: &Path) {
    let state: Value = serde_json::from_slice(&read(&dir.join("state.json"))).expect("state");
    let steps = state.to_string();
    assert!(steps.contains("healthy"), "no healthy step in {steps}");
    let lab = lab_state(dir);
    assert_eq!(
        vmids(&lab),
        ["120", "121", "122"],
        "exactly the planned VMs"
    );
    assert_eq!(
        tasks(&lab, "qmcreate"),
        3,
        "each VM created once: {}",
        lab["proxmox"]["tasks"]
    );
    assert_eq!(counter(&lab, "bootstraps"), 1, "etcd bootstrapped once");
    let nodes = lab["talos"]["nodes"].as_array().expect("talos nodes");
    assert_eq!(nodes.len(), 3);
    for n in nodes {
        assert_eq!(n["phase"], "Running", "{}", n["vm"]["name"]);
    }
    // Each node took its config from its cidata volume; none is left on any
    // storage, nor in any VM's drive.
    assert_eq!(counter(&lab, "cidata_configs"), 3);
    assert_eq!(
        counter(&lab, "applies"),
        0,
        "a config went over the network"
    );
    let storages = lab["proxmox"]["nodes"].to_string();
    assert!(
        !storages.contains("talos-pve-cidata"),
        "a cidata volume was left behind: {storages}"
    );
    for vm in lab["proxmox"]["vms"].as_object().expect("vms").values() {
        assert_eq!(vm["config"]["ide0"], "none,media=cdrom", "{vm}");
        // Talos runs from disk, so its qemu-guest-agent extension answers.
        assert!(vm["guest"].is_array(), "no guest agent: {vm}");
    }
}

#[test]
fn fresh_run_is_healthy_and_a_rerun_changes_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("cluster");
    let report = tmp.path().join("report");
    let (out, err) = up_ok(&dir, &["--lab-report", report.to_str().unwrap()]);
    assert!(out.contains("Cluster homelab is up"), "{out}");
    // The lab's addresses exist only inside it: the summary says so and how to reach it.
    assert!(out.contains("This was the lab"), "{out}");
    assert!(out.contains("talos-pve lab serve --profile"), "{out}");
    assert!(out.contains("--lab-report DIR"), "{out}");
    for f in [
        "secrets.yaml",
        "talosconfig",
        "kubeconfig",
        "state.json",
        "lab/datacenter.json",
    ] {
        assert_eq!(mode(&dir.join(f)), 0o600, "{f}");
    }
    assert_healthy(&dir);
    assert!(err.contains("etcd bootstrapped"), "{err}");

    // The report: VM configs, applied machine configs, Kubernetes objects.
    for (name, vmid, cidr) in planned() {
        let vm: Value =
            serde_json::from_slice(&read(&report.join(format!("proxmox/{vmid}.json")))).unwrap();
        assert_eq!(vm["config"]["name"], name.as_str());
        assert_eq!(vm["running"], true);
        let applied = String::from_utf8(read(&report.join(format!("talos/{name}.yaml")))).unwrap();
        let local = String::from_utf8(read(&dir.join(format!("machineconfigs/{name}.yaml"))));
        assert_eq!(applied, local.unwrap(), "{name} runs the generated config");
        let node = String::from_utf8(read(
            &report.join(format!("kubernetes/core/nodes/{name}.yaml")),
        ))
        .unwrap();
        assert!(
            node.contains(&format!("podCIDR: {cidr}")),
            "{name} has podCIDR {cidr}:\n{node}"
        );
    }
    let k = report.join("kubernetes");
    let pools = std::fs::read_dir(k.join("metallb.io/ipaddresspools/metallb-system"))
        .expect("an IPAddressPool")
        .count();
    assert_eq!(pools, 1);
    let pool = std::fs::read_dir(k.join("metallb.io/ipaddresspools/metallb-system"))
        .unwrap()
        .map(|e| std::fs::read_to_string(e.unwrap().path()).unwrap())
        .collect::<String>();
    assert!(pool.contains("10.8.31.10-10.8.31.200"), "{pool}");
    assert!(
        std::fs::read_dir(k.join("metallb.io/l2advertisements/metallb-system"))
            .expect("an L2Advertisement")
            .count()
            >= 1
    );
    assert!(k.join("apps/daemonsets/kube-system/cilium.yaml").exists());

    // Again, with the VM disk storage nearly full (1 GiB left): nothing is to be
    // created, so preflight passes, and nothing is written, applied or
    // bootstrapped a second time.
    let secrets = read(&dir.join("secrets.yaml"));
    let mut before = lab_state(&dir);
    for node in before["proxmox"]["nodes"]
        .as_object_mut()
        .unwrap()
        .values_mut()
    {
        for s in node["storages"].as_array_mut().unwrap() {
            if s["id"] == "local-lvm" {
                let used: u64 = s["volumes"]
                    .as_object()
                    .unwrap()
                    .values()
                    .map(|v| v.as_u64().unwrap())
                    .sum();
                s["total"] = (used + (1 << 30)).into();
            }
        }
    }
    std::fs::write(
        dir.join("lab/datacenter.json"),
        serde_json::to_vec(&before).unwrap(),
    )
    .unwrap();
    let (_, err) = up_ok(&dir, &[]);
    let after = lab_state(&dir);
    assert_eq!(
        read(&dir.join("secrets.yaml")),
        secrets,
        "secrets untouched"
    );
    assert_eq!(
        before["proxmox"]["tasks"], after["proxmox"]["tasks"],
        "no Proxmox task on a re-run"
    );
    assert_eq!(
        before["proxmox"]["vms"], after["proxmox"]["vms"],
        "VMs unchanged"
    );
    for c in ["applies", "bootstraps"] {
        assert_eq!(counter(&before, c), counter(&after, c), "{c} on a re-run");
    }
    assert_eq!(err.matches(": up to date").count(), 3, "{err}");
    assert_eq!(
        err.matches("cidata: already runs its config").count(),
        3,
        "{err}"
    );
    assert_eq!(
        err.matches("cidata removed: nothing left on Proxmox")
            .count(),
        3,
        "{err}"
    );
    assert!(err.contains("already bootstrapped"), "{err}");
}

/// Kill, resume, kill further on, …, then finish; the cluster ends as a fresh run would.
#[test]
fn link_names_the_nodes_report_reach_cilium_and_metallb() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("cluster");
    let report = tmp.path().join("report");
    // Nodes that use predictable names (the `metal` image, or udev): eth0/eth1
    // would be interfaces that do not exist.
    up_ok(
        &dir,
        &[
            "--lab-faults",
            "link-names=predictable",
            "--lab-report",
            report.to_str().unwrap(),
        ],
    );
    let k = report.join("kubernetes");
    let cfg =
        std::fs::read_to_string(k.join("core/configmaps/kube-system/cilium-config.yaml")).unwrap();
    assert!(cfg.contains("devices: ens18 ens19"), "{cfg}");
    let l2 = std::fs::read_dir(k.join("metallb.io/l2advertisements/metallb-system"))
        .unwrap()
        .map(|e| std::fs::read_to_string(e.unwrap().path()).unwrap())
        .collect::<String>();
    assert!(l2.contains("ens19") && !l2.contains("eth1"), "{l2}");
}

fn kill_chain(points: &[(&str, Duration)]) -> PathBuf {
    let tmp = tempfile::tempdir().unwrap().keep();
    let dir = tmp.join("cluster");
    let mut secrets: Option<Vec<u8>> = None;
    for (pattern, delay) in points {
        let seen = up_killed(&dir, pattern, *delay, &[]);
        assert!(!seen.contains("FAILED"), "{seen}");
        // state.json is never torn: it parses after every kill.
        if dir.join("state.json").exists() {
            let _: Value = serde_json::from_slice(&read(&dir.join("state.json")))
                .expect("state.json parses after a kill");
        }
        if let Ok(s) = std::fs::read(dir.join("secrets.yaml")) {
            assert_eq!(secrets.get_or_insert(s.clone()), &s, "secrets kept");
        }
    }
    up_ok(&dir, &[]);
    assert_healthy(&dir);
    if let Some(s) = secrets {
        assert_eq!(read(&dir.join("secrets.yaml")), s, "secrets kept");
    }
    dir
}

#[test]
fn killed_at_stage_boundaries_then_resumed() {
    let dir = kill_chain(&[
        ("provision: started", Duration::ZERO),
        ("cidata: started", Duration::ZERO),
        ("install: started", Duration::ZERO),
        ("bootstrap: done", Duration::ZERO),
        ("addons: started", Duration::ZERO),
    ]);
    let _ = std::fs::remove_dir_all(dir.parent().unwrap());
}

#[test]
fn killed_mid_stage_then_resumed_and_status_tells_where_it_stands() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("cluster");
    // Mid provision: VMs being created when the run dies (a slower lab: the ISO
    // download alone takes 0.4 s).
    up_killed(
        &dir,
        "provision: started",
        Duration::from_millis(600),
        &["--lab-speed", "100"],
    );
    let lab = lab_state(&dir);
    assert!(
        !vmids(&lab).is_empty() || !lab["proxmox"]["tasks"].as_array().unwrap().is_empty(),
        "the lab kept what the killed run did on Proxmox"
    );
    // Mid install: cidata attached, nodes booting or installing from it.
    up_killed(&dir, "install: started", Duration::from_millis(50), &[]);
    let lab = lab_state(&dir);
    assert!(
        counter(&lab, "cidata_configs") >= 1
            || lab["proxmox"]["vms"]
                .to_string()
                .contains("talos-pve-cidata"),
        "the delivered config survives the kill"
    );
    let (code, out, err) = status(&dir, true);
    assert_eq!(code, 3, "status after a kill: degraded\n{err}");
    let s: Value = serde_json::from_str(out.trim()).expect("status JSON");
    assert_eq!(s["nodes"].as_array().unwrap().len(), 3, "{s}");
    assert!(s["nodes"][0]["vm"]["exists"].as_bool().unwrap(), "{s}");
    assert!(!s["steps"].as_array().unwrap().is_empty(), "{s}");
    // Mid add-ons.
    up_killed(&dir, "addons: started", Duration::from_millis(150), &[]);
    up_ok(&dir, &[]);
    assert_healthy(&dir);

    let (code, out, err) = status(&dir, false);
    assert_eq!(code, 0, "{err}");
    for line in [
        "talos-k8s-01",
        "running",
        "etcd members: 3",
        "cilium",
        "metallb",
    ] {
        assert!(out.contains(line), "status lacks `{line}`:\n{out}");
    }
    let (_, out, _) = status(&dir, true);
    let s: Value = serde_json::from_str(out.trim()).expect("status JSON");
    for n in s["nodes"].as_array().unwrap() {
        assert_eq!(n["vm"]["running"], true, "{n}");
        assert_eq!(n["talos"]["stage"], "running", "{n}");
    }
    assert_eq!(s["etcd"]["members"].as_array().unwrap().len(), 3, "{s}");
    assert_eq!(s["addons"]["cilium"]["ready"], true, "{s}");
    assert_eq!(s["addons"]["metallb"]["ready"], true, "{s}");
    assert_eq!(s["addons"]["metallb"]["pool"], true, "{s}");
}

fn status(dir: &Path, json: bool) -> (i32, String, String) {
    let p = profile();
    let d = dir.display().to_string();
    let mut args = vec!["status", "--profile", &p, "--dir", &d, "--lab"];
    if json {
        args.extend(["--output", "json"]);
    }
    support::run(&args)
}

#[test]
fn status_of_a_cluster_that_does_not_exist_yet() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("cluster");
    let (code, out, err) = status(&dir, true);
    assert_eq!(code, 4, "not built yet\n{err}");
    let s: Value = serde_json::from_str(out.trim()).expect("status JSON");
    assert_eq!(s["verdict"], "not-built", "{s}");
    for n in s["nodes"].as_array().unwrap() {
        assert_eq!(n["vm"]["exists"], false, "{n}");
        assert_eq!(n["talos"]["stage"], "unreachable", "{n}");
    }
    assert!(s["steps"].as_array().unwrap().is_empty());
    assert!(!dir.join("state.json").exists(), "status creates no state");
}

/// Survived (exit 0) or reported (an error naming node or host, stage and remedy);
/// either way secrets and state intact, and a plain run afterwards completes.
fn fault(spec: &str) -> &'static str {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("cluster");
    let (code, _, err) = up(&dir, &["--lab-faults", spec]);
    // A failure before the bring-up (preflight) leaves neither; otherwise both are whole.
    let secrets = std::fs::read(dir.join("secrets.yaml")).ok();
    if let Ok(b) = std::fs::read(dir.join("state.json")) {
        let _: Value = serde_json::from_slice(&b).expect("state parses");
    }
    assert_eq!(secrets.is_some(), dir.join("state.json").exists(), "{spec}");
    let verdict = if code == 0 {
        assert_healthy(&dir);
        "survived"
    } else {
        let error = err
            .lines()
            .skip_while(|l| !l.starts_with("error:"))
            .collect::<Vec<_>>()
            .join("\n");
        assert!(!error.is_empty(), "{spec}: no error line:\n{err}");
        assert!(
            error.contains("talos-k8s-")
                || error.contains("pve-")
                || error.starts_with("error: preflight of Proxmox at")
                || error.starts_with("error: addons:"),
            "{spec}: the error names no node, host or cluster-wide stage:\n{error}"
        );
        assert!(
            error.contains("fix:") || error.contains("check:"),
            "{spec}: no remedy:\n{error}"
        );
        assert!(
            err.contains("FAILED") || error.contains("preflight"),
            "{spec}: no failed stage:\n{err}"
        );
        "reported"
    };
    up_ok(&dir, &[]);
    assert_healthy(&dir);
    if let Some(s) = secrets {
        assert_eq!(read(&dir.join("secrets.yaml")), s, "{spec}: secrets kept");
    }
    eprintln!("fault {spec}: {verdict}");
    verdict
}

#[test]
fn talos_and_kubernetes_faults_are_survived() {
    for spec in [
        "time-not-in-sync=2",
        "drop-streams=1",
        "reboot-loops=1",
        "slow-crd=ipaddresspools.metallb.io:60s",
        "slow-install=30s",
    ] {
        assert_eq!(fault(spec), "survived", "{spec}");
    }
}

#[test]
fn proxmox_faults_are_survived_or_reported() {
    for spec in ["pve-lock=2", "pve-595=2"] {
        assert_eq!(fault(spec), "survived", "{spec}");
    }
    for spec in [
        "pve-task-error=qmcreate",
        "pve-task-error=download",
        "pve-500=1",
        // A host that never answers: the preflight reports it.
        "pve-595=1000",
    ] {
        assert_eq!(fault(spec), "reported", "{spec}");
    }
}

#[test]
fn a_stage_past_its_deadline_is_reported_with_node_stage_and_remedy() {
    // An install slower than the (scaled) install deadline.
    assert_eq!(fault("slow-install=60m"), "reported");
    // A CRD that is not Established before the (scaled) deadline.
    assert_eq!(
        fault("slow-crd=ipaddresspools.metallb.io:6000m"),
        "reported"
    );
}

#[test]
fn without_a_terminal_and_without_yes_it_refuses_and_creates_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("cluster");
    let p = profile();
    let d = dir.display().to_string();
    let out = Command::new(support::bin())
        .args([
            "up",
            "--profile",
            &p,
            "--lab",
            "--dir",
            &d,
            "--progress",
            "plain",
        ])
        .stdin(Stdio::null())
        .output()
        .expect("run");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_ne!(out.status.code(), Some(0));
    assert!(err.contains("not a terminal"), "{err}");
    assert!(err.contains("--yes"), "{err}");
    assert!(!dir.join("state.json").exists(), "no state written");
    assert!(!dir.join("secrets.yaml").exists(), "no secrets written");
    if let Ok(b) = std::fs::read(dir.join("lab/datacenter.json")) {
        let lab: Value = serde_json::from_slice(&b).unwrap();
        assert!(vmids(&lab).is_empty(), "no lab VMs");
    }
}

#[test]
fn json_output_is_json_lines_ending_with_the_summary() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("cluster");
    let started = Instant::now();
    let (out, _) = up_ok(&dir, &["--output", "json"]);
    let events: Vec<Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    assert!(events.len() > 10, "{out}");
    let last = events.last().unwrap();
    assert_eq!(last["event"], "summary", "{last}");
    assert_eq!(last["format"], 1, "{last}");
    assert!(
        last["ts"].as_str().is_some_and(|t| t.ends_with('Z')),
        "{last}"
    );
    assert!(last["summary"]["lab"]["serve"].is_string(), "{last}");
    assert!(
        events.iter().any(|e| e["stage"] == "bootstrap"),
        "stage events on stdout: {out}"
    );
    assert!(started.elapsed() < Duration::from_secs(60));
}

/// Two `up`s on one directory at once: the second waits for the first or refuses
/// naming it, never races it; the cluster ends healthy.
#[test]
fn two_ups_at_once_take_turns() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("cluster");
    let d = dir.display().to_string();
    let args = up_args(&d, &[]);
    let spawn = || {
        Command::new(support::bin())
            .args(&args)
            .env("NO_COLOR", "1")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let (a, b) = (spawn(), spawn());
    let pids = [a.id(), b.id()];
    let outs = [a.wait_with_output().unwrap(), b.wait_with_output().unwrap()];
    for (i, o) in outs.iter().enumerate() {
        let err = String::from_utf8_lossy(&o.stderr);
        let other = pids[1 - i];
        assert!(
            o.status.success() || err.contains(&format!("is in use by talos-pve PID {other}")),
            "{err}"
        );
    }
    assert!(outs.iter().any(|o| o.status.success()));
    assert_healthy(&dir);
}

/// Issue 11 §1: a foreign machine answers at talos-k8s-02's management address
/// with its MACs. It must receive no machine config (and so no CA key), whatever
/// `up` does; if `up` reaches it, it refuses and names the node and the address.
#[test]
fn an_impostor_at_a_node_address_never_receives_a_config() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("cluster");
    let report = tmp.path().join("report");
    let (code, out, err) = up(
        &dir,
        &[
            "--lab-faults",
            "impostor=talos-k8s-02",
            "--lab-report",
            report.to_str().unwrap(),
        ],
    );
    let leaked = report.join("talos/impostor-talos-k8s-02.yaml");
    assert!(
        !leaked.exists(),
        "the impostor received a machine config (exit {code})\n--- stderr\n{err}"
    );
    assert_ne!(
        code, 0,
        "up must not call this cluster healthy\n{out}\n{err}"
    );
    assert!(
        err.contains("talos-k8s-02") && err.contains("10.8.16.21"),
        "the refusal names the node and its address\n{err}"
    );
    // What the lab recorded: no ApplyConfiguration reached any machine (the
    // impostor counts with the nodes); the real nodes read their cidata volumes.
    let lab = lab_state(&dir);
    assert_eq!(counter(&lab, "applies"), 0);
    assert!(counter(&lab, "cidata_configs") >= 1);
    assert!(report.join("talos/talos-k8s-01.yaml").exists());
}

/// Issue 14 §5: VLANs are optional. Management on the untagged (native) segment, the
/// workload on VLAN 28: lint keeps homelab's findings, `up --lab` builds it, and the
/// lab's VMs carry `net0` without `tag=` (qemu-server: `tag` is an optional key).
#[test]
fn an_untagged_management_network_builds_in_the_lab() {
    let tmp = tempfile::tempdir().unwrap();
    let yaml = std::fs::read_to_string(profile()).unwrap();
    let untagged = yaml.replacen("    vlan: 16\n", "", 1);
    assert_ne!(yaml, untagged, "homelab.yaml no longer has `vlan: 16`");
    let file = tmp.path().join("untagged.yaml");
    std::fs::write(&file, untagged).unwrap();
    let file = file.display().to_string();
    let (code, out, err) = support::run(&["lint", "--profile", &file]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(!out.contains("NET304") && !out.contains("NET303"), "{out}");
    let dir = tmp.path().join("cluster");
    let d = dir.display().to_string();
    let args = [
        "up",
        "--profile",
        &file,
        "--lab",
        "--yes",
        "--dir",
        &d,
        "--progress",
        "plain",
        "--lab-speed",
        SPEED,
    ];
    let (code, out, err) = support::run(&args);
    assert_eq!(code, 0, "up failed\n--- stdout\n{out}\n--- stderr\n{err}");
    let lab = lab_state(&dir);
    let vms = lab["proxmox"]["vms"].as_object().expect("vms");
    assert_eq!(vms.len(), 3);
    for vm in vms.values() {
        let net0 = vm["config"]["net0"].as_str().expect("net0");
        let net1 = vm["config"]["net1"].as_str().expect("net1");
        assert!(!net0.contains("tag="), "{net0}");
        assert!(net1.contains("tag=28"), "{net1}");
    }
}

/// profiles/one-network.yaml in the lab with predictable link names: one `net0` per VM
/// (untagged), and the one link the nodes report is Cilium's only device and MetalLB's
/// L2 interface.
#[test]
fn a_one_network_cluster_builds_in_the_lab_on_one_link() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("cluster");
    let report = tmp.path().join("report");
    let file = support::profile("one-network.yaml").display().to_string();
    let d = dir.display().to_string();
    let args = [
        "up",
        "--profile",
        &file,
        "--lab",
        "--yes",
        "--dir",
        &d,
        "--progress",
        "plain",
        "--lab-speed",
        SPEED,
        "--lab-faults",
        "link-names=predictable",
        "--lab-report",
        report.to_str().unwrap(),
    ];
    let (code, out, err) = support::run(&args);
    assert_eq!(code, 0, "up failed\n--- stdout\n{out}\n--- stderr\n{err}");
    let lab = lab_state(&dir);
    let vms = lab["proxmox"]["vms"].as_object().expect("vms");
    assert_eq!(vms.len(), 3);
    for vm in vms.values() {
        let net0 = vm["config"]["net0"].as_str().expect("net0");
        assert!(!net0.contains("tag="), "{net0}");
        assert!(vm["config"].get("net1").is_none(), "{vm}");
    }
    let k = report.join("kubernetes");
    let cfg =
        std::fs::read_to_string(k.join("core/configmaps/kube-system/cilium-config.yaml")).unwrap();
    assert!(cfg.contains("devices: ens18\n"), "{cfg}");
    let l2 = std::fs::read_dir(k.join("metallb.io/l2advertisements/metallb-system"))
        .unwrap()
        .map(|e| std::fs::read_to_string(e.unwrap().path()).unwrap())
        .collect::<String>();
    assert!(l2.contains("ens18") && !l2.contains("ens19"), "{l2}");
}
