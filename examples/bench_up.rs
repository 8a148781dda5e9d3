//! Benchmark for `up` and `upgrade` against the lab (run in release mode; prints the
//! figures for docs/benchmarks.md):
//!
//! ```sh
//! cargo run --release --example bench_up              # BENCH_VERBOSE=1 adds a stage timeline
//!                                                     # BENCH_TRACE=talos_pve=debug: every request, timed
//! cargo run --release --example bench_up -- upgrade   # the rolling Talos upgrade
//! ```
//!
//! The whole bring-up runs in-process (`Datacenter::open_with` + `Env::lab` +
//! preflight + `up::bring_up`, fresh cluster directory) for the 3-node homelab and for
//! a generated 30-node / 10-host variant, with every simulated latency pinned below.
//! Reported: wall time against the critical path those latencies imply (a lower bound
//! no client can beat, see `critical_path`), their ratio, Proxmox API requests per
//! node (the lab records every request) and the process's peak RSS (VmHWM).
//! Targets: wall ≤ 1.02 × critical path, ≤ 25 Proxmox requests per node, RSS < 64 MiB.
//!
//! `upgrade`: the 30-node variant is brought up on Talos v1.12.11 (Kubernetes
//! 1.35.4), then `upgrade` moves it to v1.13.9 (Talos only; Kubernetes stays, which
//! 1.13 runs), measured from the first `Version` read to the end of `execute`
//! (OS, configs, add-ons). Its critical path is the sum of the per-node waits the
//! pinned latencies imply (`upgrade_path`); reported with Talos and Kubernetes API
//! requests per node. Target: wall ≤ 1.02 × that sum.

use std::net::Ipv4Addr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use talos_pve::cluster_dir::ClusterDir;
use talos_pve::lab::kube::KubeSimConfig;
use talos_pve::lab::proxmox::LabProxmoxConfig;
use talos_pve::lab::talos::LabTalosConfig;
use talos_pve::lab::{Datacenter, LabOptions};
use talos_pve::plan::Plan;
use talos_pve::profile::{NodeLink, Profile, Role};
use talos_pve::progress::{Event, Kind, Render, Reporter, SystemClock};
use talos_pve::proxmox::preflight::preflight;
use talos_pve::state::State;
use talos_pve::up::{self, Env};
use talos_pve::upgrade::{self, Clients, Upgrade};
use time::OffsetDateTime;

/// Lab time runs this many times faster than the real-world latencies below; the
/// clients' polling is scaled by the same factor (`Env::lab`), so ratios carry over.
const SPEED: f64 = 20.0;
/// The rolling upgrade is thirty nodes in a row: faster, so a run stays under a minute.
/// `BENCH_UPGRADE_SPEED=20` runs it at the bring-up's speed: fixed costs (CPU, fsync,
/// the lab's saves) weigh five times less against the scaled waits there.
fn upgrade_speed() -> f64 {
    std::env::var("BENCH_UPGRADE_SPEED")
        .ok()
        .and_then(|s| s.parse::<f64>().ok())
        .filter(|s| *s >= 1.0)
        .unwrap_or(100.0)
}

/// Real-world phase latencies (seconds), pinned for the benchmark.
mod real {
    pub const REQUEST: f64 = 0.02;
    pub const DOWNLOAD: f64 = 40.0;
    pub const QMCREATE: f64 = 3.0;
    pub const QMSTART: f64 = 2.0;
    pub const OTHER_TASK: f64 = 1.0;
    pub const BOOT: f64 = 45.0;
    pub const INSTALL: f64 = 90.0;
    pub const ETCD_READY: f64 = 20.0;
    pub const JOIN: f64 = 20.0;
    pub const KUBE_TICK: f64 = 0.5;
    pub const NODE_REGISTER: f64 = 10.0;
    /// A node booted again → its kubelet posts Ready with the new boot id.
    pub const KUBELET_START: f64 = 15.0;
    /// kube-controller-manager's default `--node-monitor-grace-period` (1.32+).
    pub const NODE_MONITOR_GRACE: f64 = 50.0;
    pub const CRD_ESTABLISHED: f64 = 1.0;
    pub const JOB_RUN: f64 = 20.0;
    pub const ROLLOUT: f64 = 30.0;
    pub const WEBHOOK_ENDPOINT: f64 = 5.0;
    pub const WEBHOOK_GRACE: f64 = 5.0;
}

fn lab_at(real_secs: f64, speed: f64) -> Duration {
    Duration::from_secs_f64(real_secs / speed)
}

fn lab(real_secs: f64) -> Duration {
    lab_at(real_secs, SPEED)
}

fn timings(p: &Profile, speed: f64) -> (LabProxmoxConfig, LabTalosConfig, KubeSimConfig) {
    let lab = |real: f64| lab_at(real, speed);
    let lab_ms = |real: f64| lab(real).as_millis() as u64;
    let pve = LabProxmoxConfig {
        request_latency_ms: lab_ms(real::REQUEST),
        task_ms: [
            ("qmcreate", real::QMCREATE),
            ("qmstart", real::QMSTART),
            ("download", real::DOWNLOAD),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), lab_ms(v)))
        .collect(),
        default_task_ms: lab_ms(real::OTHER_TASK),
        ..LabProxmoxConfig::default()
    };
    let talos = LabTalosConfig {
        talos_version: p.talos.version.clone(),
        boot: lab(real::BOOT),
        install: lab(real::INSTALL),
        etcd_ready: lab(real::ETCD_READY),
        join: lab(real::JOIN),
        faults: Default::default(),
        link_names: Default::default(),
    };
    let kube = KubeSimConfig {
        tick: lab(real::KUBE_TICK),
        node_register: lab(real::NODE_REGISTER),
        kubelet_start: lab(real::KUBELET_START),
        node_monitor_grace: lab(real::NODE_MONITOR_GRACE),
        crd_established: lab(real::CRD_ESTABLISHED),
        slow_crds: Vec::new(),
        job_run: lab(real::JOB_RUN),
        rollout: lab(real::ROLLOUT),
        webhook_endpoint: lab(real::WEBHOOK_ENDPOINT),
        webhook_grace: lab(real::WEBHOOK_GRACE),
        node_labels: Default::default(),
        kubernetes_version: p.kubernetes.version.clone(),
        talos_version: p.talos.version.clone(),
        node_sizes: Default::default(),
    };
    (pve, talos, kube)
}

/// The lower bound the latencies imply, whatever the client does:
///
/// ```text
/// download ISO (each host, in parallel) → qmcreate → imgcopy → qmstart
///   (ISO must exist first; the VM boots only once its cidata volume is uploaded
///   and attached)
///   → boot → install → etcd_ready   (bootstrap node; Bootstrap is accepted from here)
///   → node_register (kubelets register once the API serves)
///   → job_run      (the Cilium install Job; its pod needs a registered node)
///   → rollout      (Cilium DaemonSet: needs every node's pod CIDR)
///   → rollout      (MetalLB controller: needs the CNI)
///   → webhook_endpoint → webhook_grace (the MetalLB webhook answers; pool applied)
/// ```
///
/// etcd joins of the other control planes (`join`) and the worker installs run in
/// parallel with the Kubernetes phases and are shorter, so they are not on the path.
fn critical_path() -> Duration {
    lab(real::DOWNLOAD
        + real::QMCREATE
        + real::OTHER_TASK // imgcopy: the cidata upload
        + real::QMSTART
        + real::BOOT
        + real::INSTALL
        + real::ETCD_READY
        + real::NODE_REGISTER
        + real::JOB_RUN
        + real::ROLLOUT
        + real::ROLLOUT
        + real::WEBHOOK_ENDPOINT
        + real::WEBHOOK_GRACE)
}

/// 30 nodes (3 control planes, 27 workers) on 10 hosts, from the homelab.
fn thirty_nodes(mut p: Profile) -> Profile {
    let host = p.proxmox.hosts[0].clone();
    p.proxmox.hosts = (0..10u8)
        .map(|i| {
            let mut h = host.clone();
            h.name = format!("pve-bench-{:02}", i + 1);
            h.address = Ipv4Addr::new(10, 8, 16, 10 + i);
            if let Some(s) = h.storage.as_mut() {
                s.address = Ipv4Addr::new(10, 8, 48, 10 + i);
            }
            h.oob.clear();
            h
        })
        .collect();
    p.proxmox.endpoint = "https://10.8.16.10:8006".into();
    p.kubernetes.pod_subnet = "10.8.64.0/19".parse().expect("net");
    p.addons.cilium.native_routing_cidr = Some("10.8.64.0/19".parse().expect("net"));
    let template = p.nodes[0].clone();
    p.nodes = (0..30u8)
        .map(|i| {
            let mut n = template.clone();
            n.name = format!("talos-bench-{:02}", i + 1);
            n.host = p.proxmox.hosts[usize::from(i % 10)].name.clone();
            n.vmid = 200 + u32::from(i);
            n.role = if i < 3 {
                Role::Controlplane
            } else {
                Role::Worker
            };
            n.management = NodeLink::new(Ipv4Addr::new(10, 8, 16, 20 + i));
            n.workload = Some(NodeLink::new(Ipv4Addr::new(10, 8, 28, 20 + i)));
            n.pod_cidr = None;
            n
        })
        .collect();
    p
}

/// Stage events with their time since the run started (for BENCH_VERBOSE).
struct Timeline {
    start: Instant,
    lines: Arc<Mutex<Vec<(Duration, String)>>>,
}

impl Render for Timeline {
    fn event(&mut self, _at: OffsetDateTime, ev: &Event) {
        if ev.kind == Kind::Done {
            let who = ev.node.as_deref().unwrap_or("cluster");
            let mut l = self.lines.lock().expect("timeline");
            l.push((self.start.elapsed(), format!("{who} {}", ev.stage)));
        }
    }
}

struct Figures {
    wall: Duration,
    requests: usize,
    nodes: usize,
    /// Of the upgrade: Talos gRPC calls and Kubernetes API requests.
    talos_requests: u64,
    kube_requests: u64,
}

/// Bring `profile` up; with `upgrade_to`, then upgrade to it and measure that instead.
async fn run(
    name: &str,
    profile: &Profile,
    verbose: bool,
    upgrade_to: Option<&Profile>,
) -> Figures {
    let speed = if upgrade_to.is_some() {
        upgrade_speed()
    } else {
        SPEED
    };
    let report = talos_pve::lint::lint(profile);
    assert_eq!(
        report.errors,
        0,
        "{name}: the profile must lint clean:\n{}",
        report.error_lines().join("\n")
    );
    let plan = Plan::build(profile).expect("plan");
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = ClusterDir {
        root: tmp.path().join(&profile.metadata.name),
    };
    let dc = Datacenter::open_with(&dir.lab(), profile, timings(profile, speed), &[])
        .await
        .expect("lab datacenter");
    let opts = LabOptions {
        speed,
        ..LabOptions::default()
    };
    let env = Env::lab(&dc, profile, &opts).expect("lab env");
    let lines = Arc::new(Mutex::new(Vec::new()));
    let start = Instant::now();
    let rep = Reporter::new(
        Box::new(Timeline {
            start,
            lines: lines.clone(),
        }),
        Arc::new(SystemClock::default()),
    );
    let pf = preflight(&env.pve, profile, &plan)
        .await
        .expect("preflight");
    assert!(pf.passed(), "{name}: preflight failed");
    lines
        .lock()
        .expect("timeline")
        .push((start.elapsed(), "cluster preflight".into()));
    let state = State::open(&dir, profile, &plan).expect("state");
    up::bring_up(
        &env,
        profile,
        &plan,
        &dir,
        &state,
        &rep,
        &up::Options::default(),
    )
    .await
    .expect("bring-up");
    let mut wall = start.elapsed();
    let recorded = dc.proxmox.requests();
    let requests = recorded.len();
    let (mut talos_requests, mut kube_requests) = (0, 0);
    if let Some(new) = upgrade_to {
        let plan = Plan::build(new).expect("plan");
        let state = State::open(&dir, new, &plan).expect("state");
        state.adopt().expect("adopt the new versions");
        let env = Env::lab(&dc, new, &opts).expect("lab env");
        let clients = Clients::open(&env, &dir).await.expect("clients");
        let (t0, k0) = (dc.talos.requests(), dc.kube.requests());
        lines.lock().expect("timeline").clear();
        let start = Instant::now();
        let rep = Reporter::new(
            Box::new(Timeline {
                start,
                lines: lines.clone(),
            }),
            Arc::new(SystemClock::default()),
        );
        let running = upgrade::observe(&env, &plan, &clients).await;
        let steps = upgrade::decide(new, &plan, &running).expect("an upgrade path");
        assert_eq!(
            steps.talos_steps.len(),
            plan.nodes.len(),
            "every node upgrades"
        );
        Upgrade {
            env: &env,
            profile: new,
            plan: &plan,
            dir: &dir,
            state: &state,
            rep: &rep,
            clients: &clients,
        }
        .execute(&steps)
        .await
        .expect("upgrade");
        wall = start.elapsed();
        talos_requests = dc.talos.requests() - t0;
        kube_requests = dc.kube.requests() - k0;
    }
    dc.shutdown();
    if verbose && upgrade_to.is_none() {
        let mut kinds = std::collections::BTreeMap::<String, usize>::new();
        for r in &recorded {
            let shape: Vec<&str> = r
                .path
                .split('/')
                .map(|seg| match seg {
                    s if s.starts_with("UPID:") => "{upid}",
                    s if s.parse::<u32>().is_ok() => "{vmid}",
                    s if s.starts_with("pve-") => "{host}",
                    s => s,
                })
                .collect();
            *kinds
                .entry(format!("{} {}", r.method, shape.join("/")))
                .or_default() += 1;
        }
        for (k, n) in kinds {
            println!("  {n:>5}  {k}");
        }
    }
    if verbose {
        let mut l = lines.lock().expect("timeline").clone();
        l.sort();
        for (t, what) in l {
            println!("  {:>8.3} s  {what}", t.as_secs_f64());
        }
    }
    Figures {
        wall,
        requests,
        nodes: plan.nodes.len(),
        talos_requests,
        kube_requests,
    }
}

/// Peak resident set size of this process (VmHWM), in KiB.
fn peak_rss_kib() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = s.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// The profile at other Talos and Kubernetes versions.
fn at_versions(mut p: Profile, talos: &str, kubernetes: &str) -> Profile {
    p.talos.version = talos.into();
    p.kubernetes.version = kubernetes.into();
    p
}

/// The rolling upgrade's lower bound: one node at a time, each waits for its
/// installer to write the new release (`install`, the legacy upgrade of a 1.12
/// node), its reboot (`boot`), then its kubelet posting Ready from the new boot
/// (`kubelet_start`) and, on a control plane, its etcd running again
/// (`etcd_ready`); both count from the boot, so a control plane waits the longer
/// of the two. The node drains itself at once (no PodDisruptionBudget holds anything).
fn upgrade_path(nodes: usize, control_planes: usize) -> Duration {
    let workers = nodes - control_planes;
    let cp = real::INSTALL + real::BOOT + real::KUBELET_START.max(real::ETCD_READY);
    let worker = real::INSTALL + real::BOOT + real::KUBELET_START;
    lab_at(
        cp * control_planes as f64 + worker * workers as f64,
        upgrade_speed(),
    )
}

fn bench_upgrade(homelab: &Profile, verbose: bool) {
    let big = thirty_nodes(homelab.clone());
    let old = at_versions(big.clone(), "v1.12.11", "1.35.4");
    let new = at_versions(big, "v1.13.9", "1.35.4");
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let name = "30 nodes (3 cp + 27 workers), 10 hosts: v1.12.11 → v1.13.9";
    let f = rt.block_on(run(name, &old, verbose, Some(&new)));
    let cps = old
        .nodes
        .iter()
        .filter(|n| n.role == Role::Controlplane)
        .count();
    let crit = upgrade_path(f.nodes, cps);
    let speed = upgrade_speed();
    println!(
        "## upgrade benchmark (lab speed {speed}x; critical path {:.3} s = {cps} × (install {} s + boot {} s + etcd {} s) + {} × (install + boot + kubelet {} s) real / {speed})",
        crit.as_secs_f64(),
        real::INSTALL,
        real::BOOT,
        real::ETCD_READY,
        f.nodes - cps,
        real::KUBELET_START
    );
    println!(
        "| profile | wall | critical path | ratio | Talos requests/node | Kubernetes requests/node |"
    );
    println!("|---|---|---|---|---|---|");
    println!(
        "| {name} | {:.3} s | {:.3} s | {:.4}x | {:.1} | {:.1} |",
        f.wall.as_secs_f64(),
        crit.as_secs_f64(),
        f.wall.as_secs_f64() / crit.as_secs_f64(),
        f.talos_requests as f64 / f.nodes as f64,
        f.kube_requests as f64 / f.nodes as f64,
    );
}

fn main() {
    let verbose = std::env::var("BENCH_VERBOSE").is_ok_and(|v| v == "1");
    // BENCH_TRACE=<filter> (e.g. `talos_pve=debug`): every request and wait, timed
    // from the start of the process, on stderr.
    if let Ok(filter) = std::env::var("BENCH_TRACE") {
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
            .with_timer(tracing_subscriber::fmt::time::uptime())
            .with_writer(std::io::stderr)
            .with_ansi(false)
            .init();
    }
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let homelab =
        talos_pve::profile::load(&root.join("profiles/homelab.yaml")).expect("homelab profile");
    if std::env::args().nth(1).as_deref() == Some("upgrade") {
        bench_upgrade(&homelab, verbose);
        return;
    }
    let big = thirty_nodes(homelab.clone());
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let crit = critical_path();
    println!(
        "## up benchmark (lab speed {SPEED}x: real-world latencies / {SPEED}; critical path {:.3} s)",
        crit.as_secs_f64()
    );
    println!("| profile | wall | critical path | ratio | Proxmox requests/node |");
    println!("|---|---|---|---|---|");
    for (name, p) in [
        ("homelab: 3 nodes, 3 hosts", &homelab),
        ("30 nodes (3 cp + 27 workers), 10 hosts", &big),
    ] {
        let f = rt.block_on(run(name, p, verbose, None));
        println!(
            "| {name} | {:.3} s | {:.3} s | {:.4}x | {:.1} ({} requests) |",
            f.wall.as_secs_f64(),
            crit.as_secs_f64(),
            f.wall.as_secs_f64() / crit.as_secs_f64(),
            f.requests as f64 / f.nodes as f64,
            f.requests
        );
    }
    match peak_rss_kib() {
        Some(k) => println!("peak RSS (VmHWM): {:.1} MiB", k as f64 / 1024.0),
        None => println!("peak RSS: /proc/self/status not readable"),
    }
}
