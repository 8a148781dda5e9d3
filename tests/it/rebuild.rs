//! Backup and disaster recovery, end to end in the lab: the real binary builds a
//! cluster (`up --lab`), backs it up, suffers a lab disaster (`--lab-faults
//! destroy-vm=…`, `lose-control-planes`) and rebuilds; the guards refuse what they
//! must. A real etcd snapshot (Debian's etcd-server/etcd-client) checks the
//! snapshot contract against the genuine article.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use age::secrecy::ExposeSecret;
use serde_json::{Value, json};
use talos_pve::kube::{self, Kubeconfig, Resource};
use talos_pve::lab::{Datacenter, LabOptions};
use talos_pve::rebuild::backup;
use talos_pve::rebuild::cluster::load_source;
use talos_pve::talos::api::snapshot::{SnapshotError, validate_snapshot};

use super::support::{self, run};

const SPEED: &str = "600";

fn homelab() -> String {
    support::profile("homelab.yaml").display().to_string()
}

/// Run the binary with `--profile homelab --dir <dir>` appended.
fn cmd(dir: &Path, args: &[&str]) -> (i32, String, String) {
    let p = homelab();
    let d = dir.display().to_string();
    let mut all: Vec<&str> = args.to_vec();
    all.extend(["--profile", &p, "--dir", &d]);
    run(&all)
}

fn lab(dir: &Path, args: &[&str]) -> (i32, String, String) {
    let mut all: Vec<&str> = args.to_vec();
    all.extend(["--lab", "--lab-speed", SPEED]);
    cmd(dir, &all)
}

fn ok(r: (i32, String, String)) -> String {
    assert_eq!(r.0, 0, "stdout:\n{}\nstderr:\n{}", r.1, r.2);
    r.1
}

/// Assert the run failed (exit 1) and its stderr says every one of `needles`.
fn refused(r: &(i32, String, String), needles: &[&str]) {
    assert_eq!(r.0, 1, "{}", r.2);
    said(r, needles);
}

/// Assert the run's stderr says every one of `needles`.
fn said(r: &(i32, String, String), needles: &[&str]) {
    for n in needles {
        assert!(r.2.contains(n), "expected `{n}` in:\n{}", r.2);
    }
}

fn up(dir: &Path) {
    ok(lab(dir, &["up", "--yes", "--progress", "plain"]));
}

/// A fresh temporary directory holding a lab cluster brought up by `up`.
fn lab_cluster() -> tempfile::TempDir {
    let d = tempfile::tempdir().unwrap();
    up(d.path());
    d
}

/// `rebuild node NODE --yes` plus `extra`, in the lab.
fn rebuild_node(dir: &Path, node: &str, extra: &[&str]) -> (i32, String, String) {
    let mut args = vec!["rebuild", "node", node, "--yes"];
    args.extend(extra);
    lab(dir, &args)
}

/// `rebuild cluster --from FROM --yes` plus `extra`, in the lab.
fn rebuild_cluster(dir: &Path, from: &str, extra: &[&str]) -> (i32, String, String) {
    let mut args = vec!["rebuild", "cluster", "--from", from, "--yes"];
    args.extend(extra);
    lab(dir, &args)
}

fn backup(dir: &Path, extra: &[&str]) -> PathBuf {
    let mut args = vec!["backup"];
    args.extend(extra);
    let out = ok(lab(dir, &args));
    let line = out
        .lines()
        .find(|l| l.contains("written to "))
        .expect("backup names its directory");
    PathBuf::from(line.rsplit("written to ").next().unwrap().trim())
}

/// The saved lab datacenter, as JSON.
fn saved(dir: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(dir.join("lab/datacenter.json")).unwrap()).unwrap()
}

fn vm_config(dir: &Path, vmid: u32) -> Option<Value> {
    saved(dir)["proxmox"]["vms"]
        .get(vmid.to_string())
        .map(|v| v["config"].clone())
}

fn member_names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = saved(dir)["talos"]["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["hostname"].as_str().unwrap().to_owned())
        .collect();
    v.sort();
    v
}

const ALL: [&str; 3] = ["talos-k8s-01", "talos-k8s-02", "talos-k8s-03"];

#[test]
fn lost_node_is_rebuilt_with_its_identity() {
    let d = lab_cluster();
    let dir = d.path();
    let b = backup(dir, &[]);
    ok(run(&["backup", "verify", b.to_str().unwrap()]));
    let before = vm_config(dir, 121).expect("VM 121 exists");

    let r = rebuild_node(
        dir,
        "talos-k8s-02",
        &[
            "--progress",
            "plain",
            "--lab-faults",
            "destroy-vm=talos-k8s-02",
        ],
    );
    let out = ok(r.clone());
    assert!(out.contains("node talos-k8s-02 rebuilt"), "{out}");
    assert!(
        r.2.contains("create VM 121 on pve-ms01-02"),
        "the plan names the re-created VM: {}",
        r.2
    );
    said(&r, &["stale member removed"]);
    let after = vm_config(dir, 121).expect("VM 121 re-created");
    for k in ["net0", "net1", "ipconfig0", "ipconfig1", "name"] {
        assert_eq!(after[k], before[k], "{k} keeps its identity");
    }
    assert_eq!(member_names(dir), ALL);

    // Healthy now: a second rebuild refuses without --force.
    let r = rebuild_node(dir, "talos-k8s-02", &[]);
    refused(&r, &["node talos-k8s-02 is healthy", "--force"]);
}

#[test]
fn node_with_corrupt_etcd_is_reset_and_rejoins() {
    let d = lab_cluster();
    let dir = d.path();
    let r = rebuild_node(
        dir,
        "talos-k8s-03",
        &["--lab-faults", "corrupt-etcd=talos-k8s-03"],
    );
    ok(r.clone());
    said(
        &r,
        &[
            "reset talos-k8s-03: wipe its EPHEMERAL",
            "keep the existing VM 122",
        ],
    );
    assert_eq!(member_names(dir), ALL);
}

#[test]
fn removing_a_member_without_a_majority_is_refused() {
    let d = lab_cluster();
    let dir = d.path();
    let r = rebuild_node(
        dir,
        "talos-k8s-02",
        &[
            "--lab-faults",
            "destroy-vm=talos-k8s-02,destroy-vm=talos-k8s-03",
        ],
    );
    refused(
        &r,
        &[
            "removing talos-k8s-02's etcd member would leave 2 members, of which 1 is healthy; etcd needs 2",
            "rebuild cluster --from BACKUP",
        ],
    );
    // Nothing was changed: the member is still listed, the VM still gone.
    assert_eq!(member_names(dir), ALL);
    assert!(vm_config(dir, 121).is_none());
}

#[test]
fn no_terminal_and_no_yes_changes_nothing() {
    let d = lab_cluster();
    let dir = d.path();
    let r = lab(
        dir,
        &[
            "rebuild",
            "node",
            "talos-k8s-02",
            "--lab-faults",
            "destroy-vm=talos-k8s-02",
        ],
    );
    refused(
        &r,
        &["Rebuild plan for node talos-k8s-02", "not a terminal"],
    );
    assert!(vm_config(dir, 121).is_none(), "the VM was not re-created");
    assert_eq!(member_names(dir), ALL, "the member was not removed");
}

/// Put another cluster's secrets bundle into `dir` (a fresh `gen` elsewhere).
fn swap_in_foreign_secrets(dir: &Path) {
    let other = tempfile::tempdir().unwrap();
    ok(cmd(other.path(), &["gen"]));
    std::fs::copy(other.path().join("secrets.yaml"), dir.join("secrets.yaml")).unwrap();
}

#[test]
fn missing_secrets_are_a_refusal_never_regenerated() {
    let d = lab_cluster();
    let dir = d.path();
    let b = backup(dir, &[]);
    let bs = b.to_str().unwrap();
    let no_bundle = || {
        assert!(
            !dir.join("secrets.yaml").exists(),
            "no bundle was generated"
        )
    };
    std::fs::remove_file(dir.join("secrets.yaml")).unwrap();
    let r = rebuild_node(dir, "talos-k8s-02", &[]);
    refused(
        &r,
        &["secrets.yaml is missing", "fix: restore secrets.yaml"],
    );
    no_bundle();
    let r = rebuild_cluster(dir, bs, &[]);
    let fix = format!("`install -m 600 {}/secrets.yaml", b.display());
    refused(&r, &["a rebuild never generates secrets", &fix]);
    no_bundle();

    // Another cluster's bundle in the directory: refused before anything is rendered.
    swap_in_foreign_secrets(dir);
    let config = dir.join("machineconfigs/talos-k8s-01.yaml");
    let before = std::fs::read(&config).unwrap();
    let r = rebuild_cluster(dir, bs, &[]);
    refused(&r, &["differs from"]);
    assert_eq!(
        std::fs::read(&config).unwrap(),
        before,
        "nothing re-rendered"
    );
}

#[test]
fn healthy_cluster_is_not_recovered_without_force() {
    let d = lab_cluster();
    let dir = d.path();
    let b = backup(dir, &[]);
    let bs = b.to_str().unwrap();
    let r = rebuild_cluster(dir, bs, &[]);
    refused(&r, &["cluster homelab is healthy"]);
    // One node lost, etcd still running elsewhere: rebuild node is the answer.
    let r = rebuild_cluster(dir, bs, &["--lab-faults", "destroy-vm=talos-k8s-03"]);
    refused(
        &r,
        &[
            "refusing to recover etcd from a backup while it still runs on talos-k8s-01, talos-k8s-02",
            "rebuild node NAME",
        ],
    );
}

/// Run `f` against the lab Kubernetes API of the saved datacenter in `dir`,
/// authenticating with the kubeconfig bytes `kc`.
async fn with_api<T>(dir: &Path, kc: &[u8], f: impl AsyncFnOnce(&kube::Client) -> T) -> T {
    let profile = talos_pve::profile::load(&support::profile("homelab.yaml")).unwrap();
    let dc = Datacenter::open(&dir.join("lab"), &profile, &LabOptions::default())
        .await
        .unwrap();
    dc.kube
        .serving(Duration::from_secs(10))
        .await
        .expect("the lab API serves");
    let kc = Kubeconfig::parse(std::str::from_utf8(kc).unwrap(), "test").unwrap();
    let client = kube::Client::new(&kc, &dc.fabric.addresses).await.unwrap();
    let out = f(&client).await;
    dc.save().unwrap();
    dc.shutdown();
    out
}

fn configmap() -> Resource {
    Resource {
        group: String::new(),
        version: "v1".into(),
        kind: "ConfigMap".into(),
        plural: "configmaps".into(),
        namespaced: true,
    }
}

async fn put_configmap(c: &kube::Client, name: &str) {
    c.apply(
        &configmap(),
        &json!({"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": name, "namespace": "default"}, "data": {"kept": name}}),
    )
    .await
    .unwrap();
}

async fn get_configmap(c: &kube::Client, name: &str) -> Option<Value> {
    c.get(&configmap().object_path(Some("default"), name))
        .await
        .unwrap()
}

/// A lab cluster holding the ConfigMap `name`, then backed up: the temporary
/// directory, the cluster directory, its kubeconfig and the backup.
async fn backed_up_cluster(name: &str) -> (tempfile::TempDir, PathBuf, Vec<u8>, PathBuf) {
    let d = tokio::task::spawn_blocking(lab_cluster).await.unwrap();
    let dir = d.path().to_owned();
    let kubeconfig = std::fs::read(dir.join("kubeconfig")).unwrap();
    with_api(&dir, &kubeconfig, async |c| put_configmap(c, name).await).await;
    let dir2 = dir.clone();
    let b = tokio::task::spawn_blocking(move || backup(&dir2, &[]))
        .await
        .unwrap();
    (d, dir, kubeconfig, b)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lost_cluster_is_recovered_from_a_backup_with_its_objects() {
    let (_d, dir, kubeconfig, b) = backed_up_cluster("before-backup").await;
    let talosconfig = std::fs::read(dir.join("talosconfig")).unwrap();
    with_api(&dir, &kubeconfig, async |c| {
        put_configmap(c, "after-backup").await
    })
    .await;

    let (dir2, b2) = (dir.clone(), b.clone());
    let r = tokio::task::spawn_blocking(move || {
        rebuild_cluster(
            &dir2,
            b2.to_str().unwrap(),
            &["--progress", "plain", "--lab-faults", "lose-control-planes"],
        )
    })
    .await
    .unwrap();
    let out = ok(r.clone());
    assert!(out.contains("cluster homelab rebuilt"), "{out}");
    for vmid in [120, 121, 122] {
        assert!(r.2.contains(&format!("create VM {vmid}")), "{}", r.2);
    }
    assert_eq!(member_names(&dir), ALL);
    assert_eq!(
        std::fs::read(dir.join("kubeconfig")).unwrap(),
        kubeconfig,
        "the kubeconfig file is untouched"
    );
    assert_eq!(std::fs::read(dir.join("talosconfig")).unwrap(), talosconfig);

    // The old kubeconfig authenticates; the API state is the backup's.
    let (kept, lost, nodes) = with_api(&dir, &kubeconfig, async |c| {
        (
            get_configmap(c, "before-backup").await,
            get_configmap(c, "after-backup").await,
            c.list("/api/v1/nodes").await.unwrap(),
        )
    })
    .await;
    assert_eq!(kept.expect("restored")["data"]["kept"], "before-backup");
    assert!(lost.is_none(), "objects newer than the backup are gone");
    assert_eq!(nodes.len(), 3);
    for n in &nodes {
        kube::node_ready(n).unwrap();
        assert!(n["spec"]["podCIDR"].as_str().is_some_and(|c| !c.is_empty()));
    }

    // Resuming a finished recovery: etcd runs, so it is refused as healthy.
    let dir2 = dir.clone();
    let r = tokio::task::spawn_blocking(move || rebuild_cluster(&dir2, b.to_str().unwrap(), &[]))
        .await
        .unwrap();
    said(&r, &["cluster homelab is healthy"]);
}

#[test]
fn encrypted_backup_round_trips_and_damage_is_caught() {
    let d = lab_cluster();
    let dir = d.path();
    let id = age::x25519::Identity::generate();
    let recipient = id.to_public().to_string();
    let key = dir.join("age-key.txt");
    std::fs::write(
        &key,
        format!("# test\n{}\n", id.to_string().expose_secret()),
    )
    .unwrap();
    let b = backup(dir, &["--age-recipient", &recipient]);
    assert!(!b.join("secrets.yaml").exists(), "no plain copy");
    let cipher = std::fs::read(b.join("secrets.yaml.age")).unwrap();
    assert!(cipher.starts_with(b"age-encryption.org/v1\n"));
    let plain = backup::decrypt(&key, &cipher).unwrap();
    assert_eq!(*plain, std::fs::read(dir.join("secrets.yaml")).unwrap());
    use std::os::unix::fs::PermissionsExt;
    for e in std::fs::read_dir(&b).unwrap() {
        let m = e.unwrap().metadata().unwrap().permissions().mode() & 0o777;
        assert_eq!(m, 0o600);
    }
    assert_eq!(
        std::fs::metadata(&b).unwrap().permissions().mode() & 0o777,
        0o700
    );

    let bs = b.to_str().unwrap();
    let out = ok(run(&["backup", "verify", bs]));
    assert!(out.contains("a well-formed age file"), "{out}");
    let out = ok(run(&[
        "backup",
        "verify",
        bs,
        "--age-identity",
        key.to_str().unwrap(),
    ]));
    assert!(out.contains("parsed and validated"), "{out}");
    let wrong = dir.join("wrong.txt");
    let w = age::x25519::Identity::generate();
    std::fs::write(&wrong, w.to_string().expose_secret()).unwrap();
    let r = run(&[
        "backup",
        "verify",
        bs,
        "--age-identity",
        wrong.to_str().unwrap(),
    ]);
    assert_eq!(r.0, 1);
    assert!(r.2.contains("decrypting"), "{}", r.2);
    let r = lab(dir, &["backup", "--age-recipient", "age1nope"]);
    assert_eq!(r.0, 1);
    assert!(
        r.2.contains("`age1nope` is not an age X25519 recipient"),
        "{}",
        r.2
    );

    // rebuild cluster decrypts the bundle to compare it with the directory's.
    let keys = key.to_str().unwrap();
    let rebuild = || rebuild_cluster(dir, bs, &["--age-identity", keys]);
    said(&rebuild(), &["cluster homelab is healthy"]);
    swap_in_foreign_secrets(dir);
    refused(&rebuild(), &["differs from"]);

    // One changed byte in the snapshot: the checksum says so.
    let snap = b.join("etcd.snapshot");
    let mut bytes = std::fs::read(&snap).unwrap();
    bytes[100] ^= 1;
    std::fs::write(&snap, &bytes).unwrap();
    let r = run(&["backup", "verify", bs]);
    assert_eq!(r.0, 1);
    assert!(r.2.contains("etcd.snapshot is"), "{}", r.2);
    assert!(r.2.contains("the manifest says"), "{}", r.2);
}

/// A real etcd (Debian's etcd-server) on loopback, one key, `etcdctl snapshot save`.
/// `None` (with a printed reason) when etcd is not installed.
fn real_snapshot(work: &Path) -> Option<(PathBuf, PathBuf)> {
    let have = |b: &str, arg: &str| {
        Command::new(b)
            .arg(arg)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    if !have("etcd", "--version") || !have("etcdctl", "version") {
        eprintln!("skipped: etcd/etcdctl not installed (apt-get install etcd-server etcd-client)");
        return None;
    }
    let free = || {
        std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    };
    let (client, peer) = (free(), free());
    let curl = format!("http://127.0.0.1:{client}");
    let purl = format!("http://127.0.0.1:{peer}");
    let data = work.join("etcd-data");
    let mut etcd = Command::new("etcd")
        .args(["--name", "t", "--data-dir"])
        .arg(&data)
        .args([
            "--listen-client-urls",
            &curl,
            "--advertise-client-urls",
            &curl,
            "--listen-peer-urls",
            &purl,
            "--initial-advertise-peer-urls",
            &purl,
            "--initial-cluster",
            &format!("t={purl}"),
        ])
        .env("ETCD_UNSUPPORTED_ARCH", std::env::consts::ARCH)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start etcd");
    let ctl = |args: &[&str]| {
        Command::new("etcdctl")
            .env("ETCDCTL_API", "3")
            .args(["--endpoints", &curl])
            .args(args)
            .output()
            .unwrap()
    };
    let mut put = false;
    for _ in 0..100 {
        if ctl(&["put", "/registry/configmaps/default/x", "hello"])
            .status
            .success()
        {
            put = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let snap = work.join("real.snapshot");
    let saved = put
        && ctl(&["snapshot", "save", snap.to_str().unwrap()])
            .status
            .success();
    let _ = etcd.kill();
    let _ = etcd.wait();
    assert!(put && saved, "etcd did not take the key or the snapshot");
    Some((snap, data.join("member/snap/db")))
}

#[test]
fn real_etcd_snapshot_passes_and_truncation_is_rejected() {
    let d = tempfile::tempdir().unwrap();
    let Some((snap, db)) = real_snapshot(d.path()) else {
        return;
    };
    let bytes = std::fs::read(&snap).unwrap();
    assert_eq!(validate_snapshot(&bytes), Ok(()));
    assert!(load_source(&snap, false).unwrap().warnings.is_empty());

    let cut = d.path().join("cut.snapshot");
    std::fs::write(&cut, &bytes[..bytes.len() - 100]).unwrap();
    let e = load_source(&cut, false).unwrap_err().to_string();
    assert!(e.contains("truncated or not a snapshot"), "{e}");
    assert!(e.contains("--skip-hash-check"), "{e}");
    let mut flipped = bytes.clone();
    flipped[4096] ^= 1;
    assert_eq!(validate_snapshot(&flipped), Err(SnapshotError::Hash));

    // The raw bbolt file has no trailer: only with --skip-hash-check, and warned.
    let raw = std::fs::read(&db).unwrap();
    assert!(validate_snapshot(&raw).is_err());
    assert!(load_source(&db, false).is_err());
    let src = load_source(&db, true).unwrap();
    assert!(src.skip_hash_check);
    assert!(
        src.warnings[0].contains("may be inconsistent"),
        "{:?}",
        src.warnings
    );
}

/// A run that fails half-way is simply run again: each step checks the real state
/// (the member is already gone, a VM already exists) instead of repeating blindly.
#[test]
fn interrupted_rebuilds_resume() {
    let d = lab_cluster();
    let dir = d.path();
    let b = backup(dir, &[]);
    // `--progress plain`, then `--lab-faults F` when given.
    let with_faults = |faults: Option<&'static str>| {
        let mut args = vec!["--progress", "plain"];
        args.extend(faults.map(|f| ["--lab-faults", f]).into_iter().flatten());
        args
    };
    let node = |faults| rebuild_node(dir, "talos-k8s-02", &with_faults(faults));
    let r = node(Some("destroy-vm=talos-k8s-02,pve-task-error=qmcreate"));
    refused(&r, &["injected qmcreate failure"]);
    assert!(!member_names(dir).contains(&"talos-k8s-02".to_owned()));
    let r = node(None);
    ok(r.clone());
    assert!(!r.2.contains("remove etcd member"), "{}", r.2);
    said(&r, &["create VM 121"]);
    assert_eq!(member_names(dir), ALL);

    let bs = b.to_str().unwrap();
    let cluster = |faults| rebuild_cluster(dir, bs, &with_faults(faults));
    let r = cluster(Some("lose-control-planes,pve-task-error=qmcreate"));
    refused(&r, &["injected qmcreate failure"]);
    let r = cluster(None);
    ok(r.clone());
    assert_eq!(member_names(dir), ALL);
}

#[test]
fn node_rebuild_without_any_etcd_points_to_the_backup() {
    let d = lab_cluster();
    let dir = d.path();
    let r = rebuild_node(
        dir,
        "talos-k8s-02",
        &["--lab-faults", "lose-control-planes"],
    );
    refused(&r, &["quorum is lost", "rebuild cluster --from BACKUP"]);
    assert!(vm_config(dir, 121).is_none(), "nothing was created");
}

#[test]
fn hung_node_is_power_cycled_wiped_and_rejoins() {
    let d = lab_cluster();
    let dir = d.path();
    let r = rebuild_node(
        dir,
        "talos-k8s-02",
        &[
            "--progress",
            "plain",
            "--lab-faults",
            "hang-node=talos-k8s-02",
        ],
    );
    ok(r.clone());
    // It came back with its old config, so its etcd data was wiped before it rejoined.
    said(
        &r,
        &[
            "power-cycle VM 121 on pve-ms01-02",
            "power cycle: runs its config again",
            "talos-k8s-02 wipe: done",
            "stale member removed",
        ],
    );
    assert_eq!(member_names(dir), ALL);
}

/// A raw etcd database (no hash trailer) recovers only with --skip-hash-check,
/// and the user is warned.
#[test]
fn raw_db_recovers_only_with_skip_hash_check() {
    let d = lab_cluster();
    let dir = d.path();
    let b = backup(dir, &[]);
    let snap = std::fs::read(b.join("etcd.snapshot")).unwrap();
    let raw = dir.join("db");
    std::fs::write(&raw, &snap[..snap.len() - 32]).unwrap();
    let raws = raw.to_str().unwrap();
    let r = rebuild_cluster(dir, raws, &["--lab-faults", "lose-control-planes"]);
    refused(&r, &["pass --skip-hash-check"]);
    let r = rebuild_cluster(dir, raws, &["--skip-hash-check"]);
    ok(r.clone());
    said(
        &r,
        &[
            "warning:",
            "may be inconsistent",
            "(skipping the hash check)",
        ],
    );
    assert_eq!(member_names(dir), ALL);
}

/// How often the lab's Talos nodes started an etcd (fresh or recovered).
fn bootstraps(dir: &Path) -> u64 {
    saved(dir)["talos"]["counters"]["bootstraps"]
        .as_u64()
        .unwrap()
}

/// Every control plane lost: `up` must not bootstrap an empty etcd over the cluster
/// the state records; the backup brings the objects back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn up_after_losing_every_control_plane_refuses_a_second_bootstrap() {
    let (_d, dir, kubeconfig, b) = backed_up_cluster("precious").await;
    let before = bootstraps(&dir);

    let dir2 = dir.clone();
    let r = tokio::task::spawn_blocking(move || {
        lab(
            &dir2,
            &[
                "up",
                "--yes",
                "--progress",
                "plain",
                "--lab-faults",
                "lose-control-planes",
            ],
        )
    })
    .await
    .unwrap();
    refused(
        &r,
        &[
            "cluster `homelab` was bootstrapped before",
            "rebuild cluster --from",
            "talos-k8s-01 (VM 120)",
        ],
    );
    assert_eq!(bootstraps(&dir), before, "etcd was not bootstrapped again");
    assert!(vm_config(&dir, 120).is_none(), "nothing was provisioned");

    let dir2 = dir.clone();
    let r = tokio::task::spawn_blocking(move || rebuild_cluster(&dir2, b.to_str().unwrap(), &[]))
        .await
        .unwrap();
    ok(r);
    let kept = with_api(&dir, &kubeconfig, async |c| {
        get_configmap(c, "precious").await
    })
    .await;
    assert_eq!(kept.expect("restored")["data"]["kept"], "precious");
}

/// A VM at the node's VMID marked with another cluster ID (same name) is not
/// power-cycled, wiped or replaced by `rebuild node`.
#[test]
fn rebuild_acts_only_on_vms_with_this_clusters_id() {
    let d = lab_cluster();
    let dir = d.path();
    let path = dir.join("lab/datacenter.json");
    let mut lab = saved(dir);
    let cfg = &mut lab["proxmox"]["vms"]["121"]["config"];
    let ours = cfg["tags"]
        .as_str()
        .unwrap()
        .split(';')
        .find_map(|t| t.strip_prefix("talos-pve-cluster."))
        .expect("the VM carries the cluster ID")
        .to_owned();
    for k in ["tags", "description"] {
        let v = cfg[k].as_str().unwrap().replace(&ours, "0123456789abcdef");
        cfg[k] = Value::String(v);
    }
    std::fs::write(&path, serde_json::to_vec(&lab).unwrap()).unwrap();
    let r = rebuild_node(
        dir,
        "talos-k8s-02",
        &["--lab-faults", "hang-node=talos-k8s-02"],
    );
    refused(
        &r,
        &[
            "VM 121 on pve-ms01-02 does not carry this cluster's marker",
            "ID 0123456789abcdef",
        ],
    );
    assert!(!r.2.contains("power cycle"), "{}", r.2);
}

#[test]
fn backup_keep_prunes_only_this_clusters_oldest_complete_backups() {
    let d = lab_cluster();
    let dir = d.path();
    let out = dir.join("backups");
    std::fs::create_dir_all(&out).unwrap();
    // Older backups of this cluster, and things retention must never touch.
    let fake = |name: &str, cluster: &str| {
        let p = out.join(name);
        std::fs::create_dir(&p).unwrap();
        let m = json!({"format": 1, "cluster": cluster, "takenAt": "2020-01-01T00:00:00Z",
            "node": "talos-k8s-01", "talosPveVersion": "0", "talosVersion": "v1.13.9",
            "kubernetesVersion": "1.36.3", "files": []});
        std::fs::write(p.join("manifest.json"), m.to_string()).unwrap();
    };
    fake("homelab-20200101T000000Z", "homelab");
    fake("homelab-20200102T000000Z", "homelab");
    fake("homelab-20200103T000000Z", "homelab");
    fake("other-20200101T000000Z", "other");
    std::fs::create_dir(out.join(".homelab-20200104T000000Z.partial-1")).unwrap();
    // --keep 0 would delete everything, the new backup included: bad input.
    let r = lab(dir, &["backup", "--keep", "0"]);
    assert_eq!(r.0, 2, "{}", r.2);
    let (code, stdout, stderr) = lab(dir, &["backup", "--keep", "2"]);
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("removed old backup"), "{stdout}");
    let mut left: Vec<String> = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    left.sort();
    assert_eq!(left.len(), 4, "{left:?}");
    assert_eq!(left[0], ".homelab-20200104T000000Z.partial-1");
    assert_eq!(left[1], "homelab-20200103T000000Z", "{left:?}");
    assert!(left[2].starts_with("homelab-20") && left[2] != "homelab-20200103T000000Z");
    assert_eq!(left[3], "other-20200101T000000Z");
    ok(run(&[
        "backup",
        "verify",
        out.join(&left[2]).to_str().unwrap(),
    ]));
}
