//! Benchmark for `gen` (run in release mode; prints figures for docs/benchmarks.md):
//!
//! ```sh
//! cargo run --release --example bench_gen            # BENCH_RUNS=5 keygen runs by default
//! ```
//!
//! - rendering the 3-node homelab from existing secrets (machine configs, talosconfig,
//!   kubeconfig; target < 50 ms) and a 100-node variant (target < 500 ms);
//! - generating a new secrets bundle (dominated by RSA-4096 key generation) beside
//!   `openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:4096` on the same machine
//!   (target: median within 1.5×), and the `rsa` crate's own key generation for scale.

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use talos_pve::pki::{OsRandom, SecretsBundle, rsa_key};
use talos_pve::plan::Plan;
use talos_pve::profile::{NodeLink, Profile, Role};
use talos_pve::talos::config::{self as tc, Contract};
use time::OffsetDateTime;

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1e3)
}

fn time_n(n: usize, mut f: impl FnMut()) -> Vec<Duration> {
    (0..n)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed()
        })
        .collect()
}

fn render_everything(
    p: &Profile,
    secrets: &SecretsBundle,
    admin: &(tc::AdminCert, tc::AdminCert),
) -> usize {
    let contract = Contract::from_talos_version(&p.talos.version).expect("contract");
    let plan = Plan::build(p).expect("plan");
    let mut bytes = 0;
    for n in &plan.nodes {
        bytes += tc::render_node(p, &plan, n, secrets, contract).len();
    }
    bytes += tc::talosconfig(&plan, secrets, &admin.0)
        .expect("talosconfig")
        .len();
    bytes += tc::kubeconfig(&plan, secrets, &admin.1)
        .expect("kubeconfig")
        .len();
    bytes
}

fn hundred_nodes(mut p: Profile) -> Profile {
    let template = p.nodes[0].clone();
    p.kubernetes.pod_subnet = "10.64.0.0/16".parse().expect("net");
    p.nodes = (0..100u32)
        .map(|i| {
            let mut n = template.clone();
            n.name = format!("talos-node-{i:03}");
            n.vmid = 200 + i;
            n.role = if i < 3 {
                Role::Controlplane
            } else {
                Role::Worker
            };
            n.management = NodeLink::new(Ipv4Addr::new(10, 8, 16, 20 + i as u8));
            n.workload = Some(NodeLink::new(Ipv4Addr::new(10, 8, 28, 20 + i as u8)));
            n.pod_cidr = None;
            n
        })
        .collect();
    p
}

fn openssl_keygen() -> Option<Duration> {
    let t = Instant::now();
    let out = std::process::Command::new("openssl")
        .args([
            "genpkey",
            "-algorithm",
            "RSA",
            "-pkeyopt",
            "rsa_keygen_bits:4096",
            "-out",
            "/dev/null",
        ])
        .output()
        .ok()?;
    out.status.success().then(|| t.elapsed())
}

fn main() {
    talos_pve::tls::install_provider();
    let runs: usize = std::env::var("BENCH_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5);
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let p = talos_pve::profile::load(&root.join("profiles/homelab.yaml")).expect("homelab profile");
    let now = OffsetDateTime::now_utc();

    println!("## gen benchmark ({} runs of key generation)", runs);
    let gen_times = time_n(runs, || {
        SecretsBundle::generate(now).expect("bundle");
    });
    let secrets = SecretsBundle::generate(now).expect("bundle");
    let admin = (
        tc::issue_talos_admin(&secrets, now).expect("admin"),
        tc::issue_kube_admin(&secrets, now).expect("admin"),
    );

    let three = time_n(200, || {
        std::hint::black_box(render_everything(&p, &secrets, &admin));
    });
    let big = hundred_nodes(p.clone());
    let hundred = time_n(20, || {
        std::hint::black_box(render_everything(&big, &secrets, &admin));
    });
    println!(
        "render 3-node homelab (configs + talosconfig + kubeconfig): median {} (200 runs, max {})",
        ms(median(three.clone())),
        ms(*three.iter().max().expect("runs"))
    );
    println!(
        "render 100 nodes: median {} (20 runs, max {})",
        ms(median(hundred.clone())),
        ms(*hundred.iter().max().expect("runs"))
    );

    let rsa_only = time_n(runs, || {
        rsa_key(4096).expect("rsa");
    });
    let openssl: Vec<Duration> = (0..runs).filter_map(|_| openssl_keygen()).collect();
    let crate_default = time_n(runs.min(3), || {
        rsa::RsaPrivateKey::new(&mut OsRandom::new(), 4096).expect("rsa");
    });
    let show = |name: &str, v: &[Duration]| {
        let mut s = v.to_vec();
        s.sort();
        println!(
            "{name}: median {} (min {}, max {}, n={})",
            ms(median(v.to_vec())),
            ms(s[0]),
            ms(s[s.len() - 1]),
            v.len()
        );
    };
    show("new secrets bundle (talos-pve)", &gen_times);
    show(
        "RSA-4096 talos-pve (sieve, p and q on 2 threads)",
        &rsa_only,
    );
    show(
        "RSA-4096 rsa 0.9 RsaPrivateKey::new (crate default)",
        &crate_default,
    );
    if openssl.is_empty() {
        println!("openssl genpkey RSA-4096: openssl not available");
    } else {
        show("openssl genpkey RSA-4096", &openssl);
        let ratio = median(gen_times).as_secs_f64() / median(openssl).as_secs_f64();
        println!("bundle median / openssl median = {ratio:.2}x (target <= 1.5x)");
    }
}
