//! `talos-pve lab serve` with the real kubectl: the lab cluster stays up on loopback
//! and kubectl's own requests (discovery, Table printing, selectors, OpenAPI v3 for
//! server-side apply, delete and its wait) get what a real API server answers.
//! kubectl is installed in CI (`.ci/run`); without it the test skips with a
//! printed reason, unless CI=true.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::support;

fn kubectl_present() -> bool {
    let ok = Command::new("kubectl")
        .args(["version", "--client"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        assert!(
            std::env::var("CI").map_or(true, |v| v != "true"),
            "CI=true but kubectl is not installed"
        );
        eprintln!("skipped: kubectl is not installed");
    }
    ok
}

/// The serving lab; SIGTERM on drop if the test did not stop it.
struct Served {
    child: Child,
    kubeconfig: PathBuf,
    talosconfig: PathBuf,
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn serve(dir: &Path) -> Served {
    let p = support::profile("homelab.yaml");
    let mut child = Command::new(support::bin())
        .args(["lab", "serve", "--profile"])
        .arg(&p)
        .arg("--dir")
        .arg(dir)
        .args(["--lab-speed", "600", "--progress", "plain"])
        .env("NO_COLOR", "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("run talos-pve lab serve");
    let stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let line = |what: &str| {
        let l = rx
            .recv_timeout(Duration::from_secs(120))
            .unwrap_or_else(|_| panic!("lab serve printed no {what} line"));
        let v = l
            .strip_prefix(&format!("export {what}="))
            .unwrap_or_else(|| panic!("expected `export {what}=…` first, got {l:?}"));
        PathBuf::from(v)
    };
    let kubeconfig = line("KUBECONFIG");
    let talosconfig = line("TALOSCONFIG");
    Served {
        child,
        kubeconfig,
        talosconfig,
    }
}

/// kubectl against the lab: (exit code, stdout, stderr).
fn kubectl(s: &Served, home: &Path, args: &[&str]) -> (i32, String, String) {
    let out = Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(&s.kubeconfig)
        .arg("--cache-dir")
        .arg(home.join("kube-cache"))
        .args(args)
        .env("HOME", home)
        .env("KUBECONFIG", &s.kubeconfig)
        .output()
        .expect("run kubectl");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn kubectl_ok(s: &Served, home: &Path, args: &[&str]) -> String {
    let (code, out, err) = kubectl(s, home, args);
    assert_eq!(code, 0, "kubectl {args:?} failed\n{out}\n{err}");
    out
}

/// `kubectl get nodes -w`: the list (a Table with headers), then a row for every
/// change as it happens: cordoning `node` shows it `SchedulingDisabled` at once.
fn watch_nodes(s: &Served, home: &Path, node: &str) {
    let mut child = Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(&s.kubeconfig)
        .arg("--cache-dir")
        .arg(home.join("kube-cache"))
        .args(["get", "nodes", "-w"])
        .env("HOME", home)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run kubectl get nodes -w");
    let stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let next = || rx.recv_timeout(Duration::from_secs(20));
    let header = next().expect("kubectl -w printed the list");
    assert!(header.starts_with("NAME"), "{header}");
    for _ in 0..3 {
        let row = next().expect("a row per node");
        assert!(row.contains(" Ready "), "{row}");
    }
    // `kubectl cordon`/`uncordon` send a strategic merge patch.
    let cordoned = kubectl_ok(s, home, &["cordon", node]);
    assert!(cordoned.contains("cordoned"), "{cordoned}");
    let Ok(row) = next() else {
        let _ = child.kill();
        let out = child.wait_with_output().unwrap();
        panic!(
            "no watch event after the cordon: {}",
            String::from_utf8_lossy(&out.stderr)
        )
    };
    assert!(
        row.starts_with(node) && row.contains("Ready,SchedulingDisabled"),
        "{row}"
    );
    let got = kubectl_ok(s, home, &["get", "node", node]);
    assert!(got.contains("Ready,SchedulingDisabled"), "{got}");
    let uncordoned = kubectl_ok(s, home, &["uncordon", node]);
    assert!(uncordoned.contains("uncordoned"), "{uncordoned}");
    let row = next().expect("the uncordon too");
    assert!(
        row.starts_with(node) && !row.contains("SchedulingDisabled"),
        "{row}"
    );
    let _ = child.kill();
    let _ = child.wait();
    let got = kubectl_ok(s, home, &["get", "node", node]);
    assert!(!got.contains("SchedulingDisabled"), "{got}");

    // A list the lab has no patch strategy for is refused by name, never replaced.
    let (code, _, err) = kubectl(
        s,
        home,
        &[
            "patch",
            "deployment",
            "cilium-operator",
            "-n",
            "kube-system",
            "-p",
            r#"{"spec":{"template":{"spec":{"containers":[{"name":"cilium-operator","env":[{"name":"X","value":"1"}]}]}}}}"#,
        ],
    );
    assert_ne!(code, 0);
    assert!(
        err.contains("`spec.template.spec.containers[].env` of a Deployment"),
        "{err}"
    );
}

#[test]
fn kubectl_works_against_lab_serve() {
    if !kubectl_present() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("cluster");
    let home = tmp.path().join("home");
    std::fs::create_dir_all(&home).unwrap();
    let mut s = serve(&dir);
    let plan = talos_pve::plan::Plan::build(&support::homelab()).unwrap();

    // Loopback only, with the cluster's own credentials.
    let kc = std::fs::read_to_string(&s.kubeconfig).unwrap();
    assert!(kc.contains("server: https://127.0.0.1:"), "{kc}");
    let tc = talos_pve::talos::api::Talosconfig::load(&s.talosconfig).unwrap();
    assert!(
        tc.endpoints.iter().all(|e| e.starts_with("127.0.0.1:")),
        "{:?}",
        tc.endpoints
    );

    // The talosconfig works as written: mutual TLS to the loopback endpoint, whose
    // certificate is valid for 127.0.0.1 (what talosctl checks too).
    talos_pve::tls::install_provider();
    let version = tokio::runtime::Runtime::new().unwrap().block_on(async {
        use talos_pve::talos::api::{RpcLimits, TalosClient, Target, TlsMode};
        let target = Target {
            node: plan.nodes[0].name.clone(),
            addr: tc.endpoints[0].parse().unwrap(),
        };
        let mode = TlsMode::Mutual(tc.credentials.clone());
        let book = talos_pve::net::AddressBook::direct();
        let mut c = TalosClient::connect(&book, &target, &mode, RpcLimits::default()).unwrap();
        c.version().await
    });
    assert!(
        version.is_ok(),
        "Version over the lab talosconfig: {version:?}"
    );

    let nodes = kubectl_ok(&s, &home, &["get", "nodes", "-o", "wide"]);
    assert!(nodes.starts_with("NAME"), "a server-side Table:\n{nodes}");
    assert!(nodes.contains("INTERNAL-IP"), "{nodes}");
    for n in &plan.nodes {
        let row = nodes
            .lines()
            .find(|l| l.starts_with(&n.name))
            .unwrap_or_else(|| panic!("no row for {}:\n{nodes}", n.name));
        assert!(row.contains(" Ready "), "{row}");
        assert!(row.contains("control-plane"), "{row}");
    }

    // Pods are Running once their workloads rolled out; poll briefly.
    let mut pods = String::new();
    for _ in 0..50 {
        pods = kubectl_ok(&s, &home, &["get", "pods", "-A"]);
        if pods.contains("metallb-system") && pods.contains("cilium-operator") {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(pods.starts_with("NAMESPACE"), "{pods}");
    assert!(pods.contains("Running"), "{pods}");
    assert!(pods.contains("metallb-system"), "{pods}");

    let pool = plan.metallb_pool.expect("homelab has a MetalLB pool");
    let pools = kubectl_ok(
        &s,
        &home,
        &["get", "ipaddresspools", "-n", "metallb-system"],
    );
    assert!(pools.contains("ADDRESSES"), "CRD printer columns:\n{pools}");
    let first = pool.to_string();
    let first = first.split(['-', '/']).next().unwrap();
    assert!(pools.contains(first), "{pools}");
    // `autoAssign` was not applied: the CRD schema's default shows, as on a real server.
    let row = pools.lines().nth(1).unwrap_or_default();
    assert!(row.contains("true"), "AUTO ASSIGN defaulted:\n{pools}");

    watch_nodes(&s, &home, &plan.nodes[1].name);

    let node = &plan.nodes[0].name;
    let described = kubectl_ok(&s, &home, &["describe", "node", node]);
    assert!(
        described.contains(&format!("Name:               {node}")),
        "{described}"
    );
    assert!(described.contains("Non-terminated Pods:"), "{described}");
    assert!(described.contains("Kubelet Version:"), "{described}");

    let cm = tmp.path().join("cm.yaml");
    std::fs::write(
        &cm,
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: hello\n  namespace: default\ndata:\n  greeting: hi\n",
    )
    .unwrap();
    let cm = cm.display().to_string();
    let applied = kubectl_ok(&s, &home, &["apply", "--server-side", "-f", &cm]);
    assert!(
        applied.contains("configmap/hello serverside-applied"),
        "{applied}"
    );
    let got = kubectl_ok(
        &s,
        &home,
        &[
            "get",
            "configmap",
            "hello",
            "-o",
            "jsonpath={.data.greeting}",
        ],
    );
    assert_eq!(got, "hi");
    let deleted = kubectl_ok(&s, &home, &["delete", "-f", &cm]);
    assert!(deleted.contains("configmap \"hello\" deleted"), "{deleted}");
    let (code, _, err) = kubectl(&s, &home, &["get", "configmap", "hello"]);
    assert_ne!(code, 0);
    assert!(err.contains("NotFound"), "{err}");

    // kubectl asks for strict field validation: a typo in a custom resource is refused.
    let pool = tmp.path().join("pool.yaml");
    std::fs::write(
        &pool,
        "apiVersion: metallb.io/v1beta1\nkind: IPAddressPool\nmetadata:\n  name: extra\n  namespace: metallb-system\nspec:\n  addresses: [10.8.31.201-10.8.31.210]\n  autoAsign: false\n",
    )
    .unwrap();
    let (code, _, err) = kubectl(
        &s,
        &home,
        &["apply", "--server-side", "-f", &pool.display().to_string()],
    );
    assert_ne!(code, 0);
    assert!(
        err.contains(".spec.autoAsign: field not declared in schema"),
        "{err}"
    );

    // SIGTERM stops it cleanly and keeps the lab for the next command.
    let pid = s.child.id().to_string();
    let killed = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    assert!(killed.success());
    let status = s.child.wait().unwrap();
    assert_eq!(status.code(), Some(0), "lab serve exits 0 on SIGTERM");
    assert!(dir.join("lab/datacenter.json").exists());
}
