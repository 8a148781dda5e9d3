//! Integration tests: `talos-pve gen` and the machine-config renderer.
//!
//! - Schema: every generated document validates against the JSON schema of its Talos
//!   minor, checked with `talos_pve::jsonschema` (the subset those schemas use).
//! - Golden: field-by-field comparison with `talosctl gen config` output of the same
//!   contract; `INTENDED` lists every path where talos-pve deliberately differs.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;
use talos_pve::pki::SecretsBundle;
use talos_pve::plan::Plan;
use talos_pve::profile::{Profile, Role};
use talos_pve::talos::config::{Contract, render_node};

use crate::support::{bin, homelab, profile, reference, repo};

// ---------------------------------------------------------------- helpers

fn sample_secrets() -> Option<SecretsBundle> {
    let p = reference("data/talos/secrets.sample.yaml")?;
    Some(SecretsBundle::parse(&std::fs::read_to_string(p).unwrap()).unwrap())
}

fn run_gen(dir: &Path, extra: &[&str]) -> Output {
    Command::new(bin())
        .arg("gen")
        .arg("--profile")
        .arg(profile("homelab.yaml"))
        .arg("--out")
        .arg(dir)
        .args(extra)
        .env_remove("TALOS_PVE_DIR")
        .env("NO_COLOR", "1")
        .output()
        .unwrap()
}

fn gen_ok(dir: &Path, extra: &[&str]) -> Output {
    let out = run_gen(dir, extra);
    assert!(
        out.status.success(),
        "gen failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn outputs(dir: &Path) -> Vec<PathBuf> {
    let mut v = vec![
        dir.join("secrets.yaml"),
        dir.join("talosconfig"),
        dir.join("kubeconfig"),
    ];
    for n in ["talos-k8s-01", "talos-k8s-02", "talos-k8s-03"] {
        v.push(dir.join("machineconfigs").join(format!("{n}.yaml")));
    }
    v
}

fn read_all(dir: &Path) -> Vec<Vec<u8>> {
    outputs(dir)
        .iter()
        .map(|p| std::fs::read(p).unwrap())
        .collect()
}

/// Every base64 value of a YAML file (crt/key/ca/... fields), decoded as text.
fn b64_field(yaml: &str, key: &str) -> Vec<String> {
    use base64::Engine;
    yaml.lines()
        .filter_map(|l| l.trim().strip_prefix(&format!("{key}: ")))
        .filter_map(|v| {
            base64::engine::general_purpose::STANDARD
                .decode(v.trim())
                .ok()
        })
        .map(|b| String::from_utf8(b).unwrap())
        .collect()
}

fn have(tool: &str) -> bool {
    let found = Command::new(tool)
        .arg("version")
        .arg("--client")
        .output()
        .or_else(|_| Command::new(tool).arg("version").output())
        .is_ok();
    if !found {
        eprintln!("skipped: `{tool}` is not installed (CI installs it)");
    }
    found
}

fn openssl(args: &[&str], stdin: Option<&str>) -> (bool, String) {
    use std::io::Write;
    let mut child = Command::new("openssl")
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    if let Some(s) = stdin {
        child.stdin.take().unwrap().write_all(s.as_bytes()).unwrap();
    } else {
        drop(child.stdin.take());
    }
    let out = child.wait_with_output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

// ---------------------------------------------------------------- JSON schema

/// A Talos machine-config schema of one minor, checked with the crate's validator.
struct Schema {
    root: Value,
}

impl Schema {
    fn load(minor: u32) -> Option<Self> {
        let p = reference(&format!("data/talos/config.schema.v1.{minor}.json"))?;
        Some(Self {
            root: serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap(),
        })
    }

    /// Errors of `v` against the whole schema (the top-level `oneOf` over all kinds).
    fn errors(&self, v: &Value) -> Vec<String> {
        talos_pve::jsonschema::validate(&self.root, v)
            .iter()
            .map(ToString::to_string)
            .collect()
    }
}

fn documents(yaml: &str) -> Vec<Value> {
    serde_saphyr::from_str_multiple::<Value, Vec<Value>>(yaml).unwrap()
}

fn render_all(p: &Profile, secrets: &SecretsBundle, contract: Contract) -> Vec<(String, String)> {
    let plan = Plan::build(p).unwrap();
    plan.nodes
        .iter()
        .map(|n| (n.name.clone(), render_node(p, &plan, n, secrets, contract)))
        .collect()
}

#[test]
fn every_generated_document_validates_against_its_minor_schema() {
    let Some(secrets) = sample_secrets() else {
        return;
    };
    for (minor, version) in [(12, "v1.12.11"), (13, "v1.13.9")] {
        let Some(schema) = Schema::load(minor) else {
            return;
        };
        let mut p = homelab();
        p.talos.version = version.into();
        p.time_servers = vec!["time.cloudflare.com".into()];
        p.nodes[2].role = Role::Worker; // cover the worker document too
        let contract = Contract::from_talos_version(version).unwrap();
        let mut kinds = Vec::new();
        for (node, yaml) in render_all(&p, &secrets, contract) {
            for doc in documents(&yaml) {
                let kind = doc["kind"].as_str().unwrap_or("v1alpha1").to_owned();
                let errs = schema.errors(&doc);
                assert!(errs.is_empty(), "1.{minor} {node} {kind}: {errs:#?}");
                kinds.push(kind);
            }
        }
        assert_eq!(
            kinds.contains(&"RoutingRuleConfig".to_string()),
            minor == 13,
            "routing rules only where the schema has them"
        );
        for k in [
            "LinkAliasConfig",
            "LinkConfig",
            "HostnameConfig",
            "ResolverConfig",
            "TimeSyncConfig",
        ] {
            assert!(kinds.iter().any(|x| x == k), "1.{minor}: no {k} document");
        }
    }
}

/// profiles/one-network.yaml: one link per node, which carries the default route and
/// the kubelet's node IP; no policy routing (there is no other link to answer from).
#[test]
fn a_one_network_node_has_one_link_with_the_default_route() {
    let Some(secrets) = sample_secrets() else {
        return;
    };
    let p = talos_pve::profile::load(&profile("one-network.yaml")).unwrap();
    for (minor, version) in [(12, "v1.12.11"), (13, "v1.13.9")] {
        let Some(schema) = Schema::load(minor) else {
            return;
        };
        let mut p = p.clone();
        p.talos.version = version.into();
        if minor == 12 {
            p.kubernetes.version = "1.35.0".into();
        }
        let contract = Contract::from_talos_version(version).unwrap();
        for (node, yaml) in render_all(&p, &secrets, contract) {
            let docs = documents(&yaml);
            for doc in &docs {
                let errs = schema.errors(doc);
                assert!(errs.is_empty(), "1.{minor} {node}: {errs:#?}");
            }
            let of =
                |kind: &str| -> Vec<&Value> { docs.iter().filter(|d| d["kind"] == kind).collect() };
            assert_eq!(of("LinkAliasConfig").len(), 1, "{node}: {yaml}");
            assert!(of("RoutingRuleConfig").is_empty(), "{node}: {yaml}");
            let links = of("LinkConfig");
            assert_eq!(links.len(), 1, "{node}");
            assert_eq!(links[0]["name"], "mgmt");
            assert_eq!(
                links[0]["routes"],
                serde_json::json!([{"gateway": "192.168.1.1", "metric": 512}]),
                "{node}"
            );
            let v1 = &docs[0];
            assert_eq!(
                v1["machine"]["kubelet"]["nodeIP"]["validSubnets"],
                serde_json::json!(["192.168.1.0/24"])
            );
            assert_eq!(
                v1["cluster"]["etcd"]["advertisedSubnets"],
                serde_json::json!(["192.168.1.0/24"])
            );
        }
    }
}

#[test]
fn schema_validator_rejects_what_talos_rejects() {
    let Some(schema) = Schema::load(13) else {
        return;
    };
    let Some(golden) = reference("data/talos/golden/v1.13-base-controlplane.yaml") else {
        return;
    };
    let docs = documents(&std::fs::read_to_string(golden).unwrap());
    // talosctl's own output fails on exactly the deprecated `persist` (talos.md §1).
    let errs = schema.errors(&docs[0]);
    assert!(
        errs.iter()
            .any(|e| e == "persist: additional property not allowed"),
        "{errs:#?}"
    );
    let mut fixed = docs[0].clone();
    fixed.as_object_mut().unwrap().remove("persist");
    assert!(
        schema.errors(&fixed).is_empty(),
        "{:#?}",
        schema.errors(&fixed)
    );
    assert!(schema.errors(&docs[1]).is_empty());
    let bad = serde_json::json!({"apiVersion": "v1alpha1", "kind": "LinkConfig", "name": "x",
        "routes": [{"gateway": "not-an-ip!"}]});
    assert!(!schema.errors(&bad).is_empty());
    let bad = serde_json::json!({"apiVersion": "v1alpha1", "kind": "HostnameConfig", "auto": "sometimes"});
    assert!(!schema.errors(&bad).is_empty());
    // 1.12 has no RoutingRuleConfig.
    let Some(s12) = Schema::load(12) else { return };
    let rule = serde_json::json!({"apiVersion": "v1alpha1", "kind": "RoutingRuleConfig",
        "name": "1000", "table": "100"});
    assert!(schema.errors(&rule).is_empty());
    assert!(!s12.errors(&rule).is_empty());
}

// ---------------------------------------------------------------- golden comparison

/// Paths (dot-joined keys of the `v1alpha1` document; sequences compared whole) where
/// talos-pve intentionally differs from `talosctl gen config`, with the reason.
const INTENDED: &[(&str, &str)] = &[
    (
        "persist",
        "deprecated, rejected by the schema (talos.md §1)",
    ),
    (
        "machine.network",
        "1.12 only: deprecated `network: {}`, replaced by network documents",
    ),
    (
        "machine.certSANs",
        "endpoint host, control-plane addresses and names",
    ),
    (
        "machine.kubelet.nodeIP.validSubnets",
        "kubelet node IP on the workload subnet",
    ),
    ("machine.install.disk", "profile talos.installDisk"),
    (
        "machine.install.image",
        "Image Factory installer of the plan",
    ),
    (
        "machine.nodeLabels.node.kubernetes.io/exclude-from-external-load-balancers",
        "would stop MetalLB announcing from control planes (talos.md §9)",
    ),
    (
        "cluster.network.cni.name",
        "`none`: Cilium is installed by talos-pve",
    ),
    (
        "cluster.apiServer.certSANs",
        "same SAN list as machine.certSANs",
    ),
    (
        "cluster.controllerManager.extraArgs.allocate-node-cidrs",
        "pod CIDRs assigned by talos-pve",
    ),
    ("cluster.proxy.disabled", "Cilium replaces kube-proxy"),
    (
        "cluster.etcd.advertisedSubnets",
        "etcd on the management subnet",
    ),
    (
        "cluster.etcd.listenSubnets",
        "etcd also listens on the workload subnet: joiners find members at their node IPs",
    ),
    (
        "cluster.allowSchedulingOnControlPlanes",
        "all nodes are control planes",
    ),
];

fn flatten(v: &Value, prefix: &str, out: &mut BTreeMap<String, Value>) {
    match v {
        Value::Object(m) if !m.is_empty() => {
            for (k, x) in m {
                let p = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                flatten(x, &p, out);
            }
        }
        other => {
            out.insert(prefix.to_owned(), other.clone());
        }
    }
}

#[test]
fn configs_match_talosctl_golden_except_intended_differences() {
    let (Some(secrets_path), Some(_)) = (
        reference("data/talos/golden/secrets.yaml"),
        reference("data/talos/golden/v1.13-base-controlplane.yaml"),
    ) else {
        return;
    };
    // The golden's inputs: cluster `base`, endpoint https://base:6443, Kubernetes 1.28.0,
    // pod subnet 10.244.0.0/16, the stability secrets.
    let secrets = SecretsBundle::parse(&std::fs::read_to_string(secrets_path).unwrap()).unwrap();
    let mut p = homelab();
    p.metadata.name = "base".into();
    p.kubernetes.endpoint = "https://base:6443".into();
    p.kubernetes.version = "1.28.0".into();
    p.kubernetes.pod_subnet = "10.244.0.0/16".parse().unwrap();
    for n in &mut p.nodes {
        n.pod_cidr = None;
    }
    p.nodes[2].role = Role::Worker;
    let mut seen: Vec<String> = Vec::new();
    for (version, minor) in [("v1.12.11", 12), ("v1.13.9", 13)] {
        p.talos.version = version.into();
        let contract = Contract::from_talos_version(version).unwrap();
        let rendered = render_all(&p, &secrets, contract);
        for (role, ours) in [("controlplane", &rendered[0].1), ("worker", &rendered[2].1)] {
            let golden =
                reference(&format!("data/talos/golden/v1.{minor}-base-{role}.yaml")).unwrap();
            let golden = documents(&std::fs::read_to_string(golden).unwrap());
            let ours = documents(ours);
            let (mut g, mut o) = (BTreeMap::new(), BTreeMap::new());
            flatten(&golden[0], "", &mut g);
            flatten(&ours[0], "", &mut o);
            let differing: Vec<&String> = g
                .keys()
                .chain(o.keys())
                .filter(|k| g.get(*k) != o.get(*k))
                .collect();
            seen.extend(differing.iter().map(|k| k.to_string()));
            for k in &differing {
                assert!(
                    INTENDED.iter().any(|(p, _)| p == k),
                    "1.{minor} {role}: unintended difference at `{k}`: talosctl {:?} vs talos-pve {:?}",
                    g.get(*k),
                    o.get(*k)
                );
            }
            // The secrets land exactly where talosctl puts them.
            assert_eq!(g["machine.ca.crt"], o["machine.ca.crt"]);
            assert_eq!(g["cluster.token"], o["cluster.token"]);
            if role == "controlplane" {
                assert!(differing.iter().any(|k| *k == "cluster.proxy.disabled"));
                assert_eq!(g["cluster.etcd.ca.key"], o["cluster.etcd.ca.key"]);
                assert_eq!(
                    g["cluster.serviceAccount.key"],
                    o["cluster.serviceAccount.key"]
                );
            } else {
                assert_eq!(o["machine.ca.key"], Value::String(String::new()));
                assert_eq!(o["cluster.ca.key"], Value::String(String::new()));
                assert!(!o.keys().any(|k| k.starts_with("cluster.etcd")));
            }
            // HostnameConfig `auto: stable` is replaced by the static hostname, not duplicated.
            let hostnames: Vec<&Value> = ours
                .iter()
                .filter(|d| d["kind"] == "HostnameConfig")
                .collect();
            assert_eq!(hostnames.len(), 1);
            assert!(hostnames[0].get("auto").is_none());
            assert!(hostnames[0]["hostname"].is_string());
        }
    }
    for (path, why) in INTENDED {
        assert!(
            seen.iter().any(|s| s == path),
            "stale allow-list entry `{path}` ({why})"
        );
    }
}

// ---------------------------------------------------------------- network documents

#[test]
fn network_documents_follow_the_decided_routing() {
    let Some(secrets) = sample_secrets() else {
        return;
    };
    let mut p = homelab();
    let plan = Plan::build(&p).unwrap();
    let n1 = plan.node("talos-k8s-01").unwrap();
    let docs = documents(&render_node(&p, &plan, n1, &secrets, Contract::V1_13));
    let kind = |k: &str, name: &str| {
        docs.iter()
            .find(|d| d["kind"] == k && (name.is_empty() || d["name"] == name))
            .unwrap_or_else(|| panic!("no {k} {name}"))
            .clone()
    };
    let alias = kind("LinkAliasConfig", "mgmt");
    let mac = n1.management.mac.to_ascii_lowercase();
    assert_eq!(
        alias["selector"]["match"],
        format!("mac(link.permanent_addr) == \"{mac}\"")
    );
    let work = kind("LinkConfig", "work");
    assert_eq!(work["addresses"][0]["address"], "10.8.28.20/22");
    // The default route, and the management subnet via the workload gateway in
    // its own table (pods, LoadBalancer and workload addresses reach VLAN 16 through
    // the gateway both ways).
    assert_eq!(
        work["routes"],
        serde_json::json!([{"gateway": "10.8.28.1", "metric": 512},
                           {"destination": "10.8.16.0/24", "gateway": "10.8.28.1", "table": "101"}])
    );
    assert_eq!(work["mtu"], 1500);
    let mgmt = kind("LinkConfig", "mgmt");
    assert_eq!(
        mgmt["routes"],
        serde_json::json!([{"destination": "10.8.16.0/24", "table": "100"},
                           {"gateway": "10.8.16.1", "table": "100"}])
    );
    let rule = kind("RoutingRuleConfig", "1000");
    assert_eq!(rule["src"], "10.8.16.20/32");
    assert_eq!(rule["table"], "100");
    // Replies from the management address to the node's own pods stay local.
    let own = kind("RoutingRuleConfig", "999");
    assert_eq!(
        (&own["src"], &own["dst"], &own["table"]),
        (
            &"10.8.16.20/32".into(),
            &"10.8.32.0/24".into(),
            &"main".into()
        )
    );
    for (name, src) in [("900", "10.8.32.0/22"), ("901", "10.8.28.0/22")] {
        let r = kind("RoutingRuleConfig", name);
        assert_eq!(
            (&r["src"], &r["dst"], &r["table"]),
            (&src.into(), &"10.8.16.0/24".into(), &"101".into())
        );
    }
    assert_eq!(kind("HostnameConfig", "")["hostname"], "talos-k8s-01");
    let r = kind("ResolverConfig", "");
    assert_eq!(r["nameservers"][0]["address"], "10.0.1.1");
    assert_eq!(r["searchDomains"]["domains"][0], "lab.local");
    // Exactly one default route in the main table.
    let main_defaults = docs
        .iter()
        .filter(|d| d["kind"] == "LinkConfig")
        .flat_map(|d| d["routes"].as_array().cloned().unwrap_or_default())
        .filter(|r| r.get("destination").is_none() && r.get("table").is_none())
        .count();
    assert_eq!(main_defaults, 1);

    // 1.12: no routing rule and no extra table.
    let docs12 = render_node(&p, &plan, n1, &secrets, Contract::V1_12);
    assert!(!docs12.contains("RoutingRuleConfig") && !docs12.contains("table:"));

    // Default route via management: the roles swap.
    p.routing.default_route = talos_pve::profile::LinkRole::Management;
    let plan = Plan::build(&p).unwrap();
    let n1 = plan.node("talos-k8s-01").unwrap();
    let docs = documents(&render_node(&p, &plan, n1, &secrets, Contract::V1_13));
    let rule = docs
        .iter()
        .find(|d| d["kind"] == "RoutingRuleConfig")
        .unwrap();
    assert_eq!(rule["src"], "10.8.28.20/32");
}

#[test]
fn control_plane_config_carries_the_cluster_decisions() {
    let Some(secrets) = sample_secrets() else {
        return;
    };
    let p = homelab();
    let plan = Plan::build(&p).unwrap();
    let docs = documents(&render_node(
        &p,
        &plan,
        &plan.nodes[1],
        &secrets,
        Contract::V1_13,
    ));
    let c = &docs[0];
    let sans: Vec<&str> = c["cluster"]["apiServer"]["certSANs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    for want in [
        "10.8.16.20",
        "10.8.28.22",
        "talos-k8s-03.lab.local",
        "k8s-api.lab.local",
    ] {
        assert!(sans.contains(&want), "{want} missing from {sans:?}");
    }
    assert!(
        !sans.contains(&"traefik.lab.local"),
        "records not pointing at control planes stay out"
    );
    assert_eq!(
        c["machine"]["certSANs"],
        c["cluster"]["apiServer"]["certSANs"]
    );
    assert_eq!(
        c["cluster"]["controllerManager"]["extraArgs"]["allocate-node-cidrs"],
        "false"
    );
    assert_eq!(
        c["machine"]["kubelet"]["image"],
        "ghcr.io/siderolabs/kubelet:v1.36.3"
    );
    assert_eq!(
        c["machine"]["install"]["image"],
        plan.installer_image.as_str()
    );
    assert_eq!(c["machine"]["features"]["kubePrism"]["port"], 7445);
    assert!(c["machine"].get("nodeLabels").is_none());
    assert_eq!(c["cluster"]["network"]["podSubnets"][0], "10.8.32.0/22");
}

// ---------------------------------------------------------------- golden files

/// Values that are key material or tokens are replaced so golden files hold none.
fn redact_secrets(yaml: &str) -> String {
    const SECRET_KEYS: &[&str] = &[
        "crt",
        "key",
        "token",
        "id",
        "secret",
        "secretboxEncryptionSecret",
    ];
    yaml.lines()
        .map(|l| {
            let t = l.trim_start();
            match t.split_once(": ") {
                Some((k, v)) if SECRET_KEYS.contains(&k) && !v.is_empty() && v != "\"\"" => {
                    format!("{}{k}: <redacted>", &l[..l.len() - t.len()])
                }
                _ => l.to_owned(),
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
        + "\n"
}

#[test]
fn rendered_homelab_matches_golden_files() {
    let Some(secrets) = sample_secrets() else {
        return;
    };
    let dir = repo().join("tests/golden/gen");
    let update = std::env::var_os("UPDATE_GOLDEN").is_some();
    for (version, minor) in [("v1.12.11", 12), ("v1.13.9", 13)] {
        let mut p = homelab();
        p.talos.version = version.into();
        let contract = Contract::from_talos_version(version).unwrap();
        for (node, yaml) in render_all(&p, &secrets, contract) {
            let path = dir.join(format!("v1.{minor}-{node}.yaml"));
            let got = redact_secrets(&yaml);
            if update {
                std::fs::create_dir_all(&dir).unwrap();
                std::fs::write(&path, &got).unwrap();
                continue;
            }
            let want = std::fs::read_to_string(&path)
                .unwrap_or_else(|_| panic!("{} missing; run with UPDATE_GOLDEN=1", path.display()));
            assert_eq!(
                got,
                want,
                "{} changed; review and UPDATE_GOLDEN=1",
                path.display()
            );
        }
    }
}

// ---------------------------------------------------------------- the command

#[test]
fn gen_writes_private_files_and_is_byte_stable_on_rerun() {
    let d = tempfile::tempdir().unwrap();
    let out = gen_ok(d.path(), &[]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("machineconfigs") && stdout.contains("(generated)"),
        "{stdout}"
    );
    let first = read_all(d.path());
    #[cfg(unix)]
    for p in outputs(d.path()) {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{}", p.display());
    }
    let out = gen_ok(d.path(), &["--output", "json"]);
    let summary: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(summary["secretsOrigin"], "reused");
    assert_eq!(summary["machineconfigs"].as_array().unwrap().len(), 3);
    assert!(first == read_all(d.path()), "re-run changed the output");
    // --dir works like --out.
    let out = Command::new(bin())
        .args(["gen", "--profile"])
        .arg(profile("homelab.yaml"))
        .arg("--dir")
        .arg(d.path())
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(first == read_all(d.path()));
    // The bundle written is a valid Talos bundle of the current contract.
    let b = SecretsBundle::parse(&std::fs::read_to_string(d.path().join("secrets.yaml")).unwrap())
        .unwrap();
    b.validate(time::OffsetDateTime::now_utc()).unwrap();
}

#[test]
fn gen_verbose_never_prints_key_material() {
    let d = tempfile::tempdir().unwrap();
    let mut logs = String::new();
    for args in [&["-vvv"][..], &["-vvv"], &["-vvv", "--force-new-secrets"]] {
        let out = gen_ok(d.path(), args);
        logs.push_str(&String::from_utf8_lossy(&out.stdout));
        logs.push_str(&String::from_utf8_lossy(&out.stderr));
    }
    assert!(
        logs.contains("TRACE") || logs.contains("DEBUG"),
        "verbose logging ran: {logs}"
    );
    let secrets = std::fs::read_to_string(d.path().join("secrets.yaml")).unwrap();
    assert!(!logs.contains("PRIVATE KEY"));
    assert!(!logs.contains("LS0tLS1"), "base64 PEM in logs");
    for line in secrets.lines() {
        let v = line.split_once(": ").map(|(_, v)| v.trim()).unwrap_or("");
        if v.len() >= 16 {
            assert!(
                !logs.contains(v),
                "a secrets.yaml value appears in the output"
            );
            assert!(!logs.contains(&v[..16]));
        }
    }
}

#[test]
fn existing_bundle_is_kept_and_force_swaps_in_a_new_one_keeping_the_old() {
    let d = tempfile::tempdir().unwrap();
    gen_ok(d.path(), &[]);
    let original = std::fs::read(d.path().join("secrets.yaml")).unwrap();
    gen_ok(d.path(), &[]);
    assert_eq!(
        std::fs::read(d.path().join("secrets.yaml")).unwrap(),
        original
    );
    let old_talosconfig = std::fs::read(d.path().join("talosconfig")).unwrap();

    let dir = talos_pve::cluster_dir::ClusterDir {
        root: d.path().to_owned(),
    };
    let id = talos_pve::cluster_id::read(&dir).unwrap().unwrap();
    gen_ok(d.path(), &["--force-new-secrets"]);
    let new = std::fs::read(d.path().join("secrets.yaml")).unwrap();
    assert_ne!(new, original);
    assert_eq!(
        talos_pve::cluster_id::read(&dir).unwrap(),
        Some(id),
        "new keys, same cluster identity: its VMs stay its own"
    );
    let backups: Vec<_> = std::fs::read_dir(d.path().join("backups"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(backups.len(), 1);
    let name = backups[0]
        .file_name()
        .unwrap()
        .to_string_lossy()
        .into_owned();
    assert!(
        name.starts_with("secrets-") && name.ends_with("Z.yaml"),
        "{name}"
    );
    assert_eq!(std::fs::read(&backups[0]).unwrap(), original);
    // Admin certs of the old CA are not reused with the new one.
    assert_ne!(
        std::fs::read(d.path().join("talosconfig")).unwrap(),
        old_talosconfig
    );
}

#[test]
fn missing_bundle_of_an_existing_cluster_is_an_error() {
    let d = tempfile::tempdir().unwrap();
    std::fs::write(d.path().join("state.json"), "{}").unwrap();
    let out = run_gen(d.path(), &[]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("secrets.yaml") && err.contains("state.json") && err.contains("fix:"),
        "{err}"
    );
    assert!(!d.path().join("secrets.yaml").exists());
    assert!(!d.path().join("machineconfigs").exists());
    // Starting over is possible, but only when asked for.
    let out = gen_ok(d.path(), &["--force-new-secrets"]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("(generated)"));
}

#[test]
fn a_profile_with_lint_errors_or_a_file_as_out_writes_nothing() {
    let d = tempfile::tempdir().unwrap();
    let bad = d.path().join("bad.yaml");
    let text = std::fs::read_to_string(profile("homelab.yaml")).unwrap();
    std::fs::write(&bad, text.replace("10.8.16.20", "10.8.99.20")).unwrap();
    let out_dir = d.path().join("out");
    let out = Command::new(bin())
        .args(["gen", "--profile"])
        .arg(&bad)
        .arg("--out")
        .arg(&out_dir)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("NET001") && err.contains("fix them first"),
        "{err}"
    );
    assert!(!out_dir.exists(), "nothing is written for an unsound plan");

    let file = d.path().join("a-file");
    std::fs::write(&file, "x").unwrap();
    let out = run_gen(&file, &[]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("is a file, not a directory") && err.contains("fix:"),
        "{err}"
    );
}

#[test]
fn a_corrupt_bundle_is_reported_and_left_alone() {
    let d = tempfile::tempdir().unwrap();
    let junk = "cluster:\n    id: LS0tLS1CRUdJTiBFQyBQUklWQVRFIEtFWS0tLS0t\n";
    std::fs::write(d.path().join("secrets.yaml"), junk).unwrap();
    let out = run_gen(d.path(), &[]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("secrets.yaml") && err.contains("fix:"),
        "{err}"
    );
    assert!(
        !err.contains("LS0tLS1CRUdJTi"),
        "error quotes key material: {err}"
    );
    assert_eq!(
        std::fs::read_to_string(d.path().join("secrets.yaml")).unwrap(),
        junk
    );
}

#[test]
fn import_adopts_a_talosctl_bundle_and_refuses_a_different_one() {
    let Some(sample) = reference("data/talos/secrets.sample.yaml") else {
        return;
    };
    let d = tempfile::tempdir().unwrap();
    let sample_s = sample.to_str().unwrap();
    let out = gen_ok(d.path(), &["--import-secrets", sample_s]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("(imported)"));
    assert_eq!(
        std::fs::read(d.path().join("secrets.yaml")).unwrap(),
        std::fs::read(&sample).unwrap(),
        "adopted byte for byte"
    );
    // Same bundle again: fine.
    gen_ok(d.path(), &["--import-secrets", sample_s]);
    // A different one: refused, existing bundle untouched.
    let other = tempfile::tempdir().unwrap();
    gen_ok(other.path(), &[]);
    let out = run_gen(
        d.path(),
        &[
            "--import-secrets",
            other.path().join("secrets.yaml").to_str().unwrap(),
        ],
    );
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("different secrets bundle"));
    assert_eq!(
        std::fs::read(d.path().join("secrets.yaml")).unwrap(),
        std::fs::read(&sample).unwrap()
    );
    // A broken bundle is rejected before anything is written.
    let broken = other.path().join("broken.yaml");
    std::fs::write(&broken, "cluster: {}\n").unwrap();
    let fresh = tempfile::tempdir().unwrap();
    let out = run_gen(
        fresh.path(),
        &["--import-secrets", broken.to_str().unwrap()],
    );
    assert!(!out.status.success());
    assert!(!fresh.path().join("secrets.yaml").exists());
    // So is a path that is not there, with the flag to fix.
    let out = run_gen(
        fresh.path(),
        &[
            "--import-secrets",
            other.path().join("nope.yaml").to_str().unwrap(),
        ],
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success()
            && err.contains("nope.yaml")
            && err.contains("fix: check the path given to --import-secrets"),
        "{err}"
    );
    assert!(!fresh.path().join("secrets.yaml").exists());
}

// ---------------------------------------------------------------- openssl / kubectl

#[test]
fn openssl_confirms_cas_and_admin_certificates() {
    if !have("openssl") {
        return;
    }
    let d = tempfile::tempdir().unwrap();
    gen_ok(d.path(), &[]);
    let secrets = std::fs::read_to_string(d.path().join("secrets.yaml")).unwrap();
    let crts = b64_field(&secrets, "crt");
    let keys = b64_field(&secrets, "key");
    assert_eq!((crts.len(), keys.len()), (4, 5));
    // etcd, k8s, k8saggregator, os in file order; service account key is keys[3].
    let expect = [
        ("O = etcd", "id-ecPublicKey", "EC PRIVATE KEY"),
        ("O = kubernetes", "id-ecPublicKey", "EC PRIVATE KEY"),
        ("", "id-ecPublicKey", "EC PRIVATE KEY"),
        ("O = talos", "ED25519", "ED25519 PRIVATE KEY"),
    ];
    let key_of_ca = [&keys[0], &keys[1], &keys[2], &keys[4]];
    for (i, (subject, alg, label)) in expect.iter().enumerate() {
        let (ok, text) = openssl(&["x509", "-noout", "-text"], Some(&crts[i]));
        assert!(ok, "{text}");
        assert!(
            text.contains(&format!("Subject: {subject}\n"))
                || (subject.is_empty() && text.contains("Subject: \n")),
            "CA {i}: {text}"
        );
        assert!(
            text.contains(&format!("Public Key Algorithm: {alg}")),
            "CA {i}: {text}"
        );
        if *alg == "id-ecPublicKey" {
            assert!(text.contains("prime256v1"), "{text}");
        }
        assert!(
            text.contains("CA:TRUE") && text.contains("Certificate Sign"),
            "{text}"
        );
        assert!(key_of_ca[i].contains(&format!("BEGIN {label}")));
    }
    // Ed25519 keys are PKCS#8 v1: OpenSSL reads them once relabelled.
    let (ok, text) = openssl(
        &["pkey", "-noout", "-text"],
        Some(&talos_pve::pki::pem::relabel_private_key(&keys[4])),
    );
    assert!(ok && text.contains("ED25519 Private-Key"), "{text}");
    let (ok, text) = openssl(&["pkey", "-noout", "-text"], Some(&keys[3]));
    assert!(
        ok && text.contains("4096 bit"),
        "service-account key: {text}"
    );
    assert!(keys[3].contains("BEGIN RSA PRIVATE KEY"));
    let (ok, text) = openssl(&["rsa", "-check", "-noout"], Some(&keys[3]));
    assert!(ok && text.contains("RSA key ok"), "{text}");

    let work = d.path();
    let write = |name: &str, s: &str| {
        let p = work.join(name);
        std::fs::write(&p, s).unwrap();
        p.to_str().unwrap().to_owned()
    };
    // talosconfig: admin cert verifies against the OS CA and is a client cert.
    let tc = std::fs::read_to_string(work.join("talosconfig")).unwrap();
    let os_ca = write("os-ca.pem", &b64_field(&tc, "ca")[0]);
    assert_eq!(b64_field(&tc, "ca")[0], crts[3]);
    let admin = write("admin.pem", &b64_field(&tc, "crt")[0]);
    let (ok, text) = openssl(
        &["verify", "-purpose", "sslclient", "-CAfile", &os_ca, &admin],
        None,
    );
    assert!(ok, "{text}");
    let (ok, text) = openssl(&["x509", "-noout", "-text", "-in", &admin], None);
    assert!(
        ok && text.contains("Subject: O = os:admin\n")
            && text.contains("TLS Web Client Authentication"),
        "{text}"
    );
    assert!(text.contains("ED25519"), "{text}");
    assert!(b64_field(&tc, "key")[0].contains("BEGIN ED25519 PRIVATE KEY"));
    // kubeconfig: client cert verifies against the Kubernetes CA.
    let kc = std::fs::read_to_string(work.join("kubeconfig")).unwrap();
    let k8s_ca = write(
        "k8s-ca.pem",
        &b64_field(&kc, "certificate-authority-data")[0],
    );
    let kadmin = write("kadmin.pem", &b64_field(&kc, "client-certificate-data")[0]);
    let (ok, text) = openssl(
        &[
            "verify",
            "-purpose",
            "sslclient",
            "-CAfile",
            &k8s_ca,
            &kadmin,
        ],
        None,
    );
    assert!(ok, "{text}");
    let (ok, text) = openssl(&["x509", "-noout", "-text", "-in", &kadmin], None);
    assert!(
        ok && text.contains("Subject: O = system:masters, CN = admin"),
        "{text}"
    );
    assert!(text.contains("prime256v1"), "{text}");
    let (ok, text) = openssl(&["verify", "-CAfile", &os_ca, &kadmin], None);
    assert!(!ok, "must not verify against the wrong CA: {text}");
}

#[test]
fn kubectl_parses_the_kubeconfig() {
    if !have("kubectl") {
        return;
    }
    let d = tempfile::tempdir().unwrap();
    gen_ok(d.path(), &[]);
    let out = Command::new("kubectl")
        .args(["config", "view", "--kubeconfig"])
        .arg(d.path().join("kubeconfig"))
        .args([
            "-o",
            "jsonpath={.current-context} {.clusters[0].cluster.server}",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "admin@homelab https://10.8.16.20:6443"
    );
}

/// A second command on a locked cluster directory waits briefly, then refuses
/// naming the holder; nothing is written meanwhile.
#[test]
fn a_locked_cluster_directory_is_refused_naming_the_holder() {
    use std::io::Write;
    let d = tempfile::tempdir().unwrap();
    let mut lock = std::fs::File::create(d.path().join(".lock")).unwrap();
    lock.lock().unwrap();
    lock.write_all(b"talos-pve PID 4242 (`talos-pve up`)\n")
        .unwrap();
    let out = run_gen(d.path(), &[]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("is in use by talos-pve PID 4242 (`talos-pve up`)") && err.contains("fix:"),
        "{err}"
    );
    assert!(!d.path().join("secrets.yaml").exists());
    drop(lock);
    gen_ok(d.path(), &[]);
}

/// `kill -9` during `files::write_atomic` leaves `.NAME.tmp-PID` (maybe key
/// material): the next command removes those of dead processes.
#[test]
fn temporary_files_of_a_killed_run_are_removed_by_the_next() {
    let d = tempfile::tempdir().unwrap();
    let mut child = Command::new("true").spawn().unwrap();
    let dead = child.id();
    child.wait().unwrap();
    let stale = d.path().join(format!(".secrets.yaml.tmp-{dead}"));
    std::fs::write(&stale, "half a key").unwrap();
    gen_ok(d.path(), &[]);
    assert!(!stale.exists(), "removed");
}

/// `--force-new-secrets` killed while it generates: the directory still holds a
/// complete bundle (the old one), never none.
#[test]
fn force_new_secrets_killed_mid_generation_keeps_a_bundle() {
    let d = tempfile::tempdir().unwrap();
    gen_ok(d.path(), &[]);
    let original = std::fs::read(d.path().join("secrets.yaml")).unwrap();
    let mut child = Command::new(bin())
        .args(["gen", "--force-new-secrets", "--profile"])
        .arg(profile("homelab.yaml"))
        .arg("--out")
        .arg(d.path())
        .env_remove("TALOS_PVE_DIR")
        .stderr(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Mid RSA-4096 generation (seconds in a debug build).
    std::thread::sleep(std::time::Duration::from_millis(500));
    let _ = child.kill();
    let finished = child.wait().unwrap().success();
    let now = std::fs::read(d.path().join("secrets.yaml")).expect("a bundle is in place");
    SecretsBundle::parse(std::str::from_utf8(&now).unwrap()).expect("a complete bundle");
    // Killed before the swap: the old bundle, untouched. Killed after it (while the
    // configs were written): the new one, with the old kept in backups/.
    if !finished && now != original {
        let kept = std::fs::read_dir(d.path().join("backups"))
            .unwrap()
            .filter_map(|e| std::fs::read(e.unwrap().path()).ok())
            .any(|b| b == original);
        assert!(kept, "the old bundle is kept in backups/");
    }
}
