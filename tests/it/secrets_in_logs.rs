//! No key material in any output at any verbosity (issue 11 §7): one lab run of
//! every command that handles the bundle, at `-vvv`, and every secret of that run
//! searched for in everything it printed.

use std::path::Path;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use talos_pve::pki::SecretsBundle;

use super::support::{self, run};

/// Every secret of the run in each form it travels in: the bundle's values as
/// stored (tokens, secretbox/aescbc keys, cluster secret, base64-of-PEM keys), each
/// private key's PEM base64 body line, and the client keys of the talosconfig and
/// kubeconfig. Not certificates, not `cluster.id`: those are public.
fn secrets_of(dir: &Path) -> Vec<(String, String)> {
    let text = std::fs::read_to_string(dir.join("secrets.yaml")).unwrap();
    let b = SecretsBundle::parse(&text).unwrap();
    let mut out: Vec<(String, String)> = vec![
        ("cluster.secret".into(), b.cluster.secret.expose().into()),
        (
            "secrets.bootstraptoken".into(),
            b.secrets.bootstraptoken.expose().into(),
        ),
        (
            "trustdinfo.token".into(),
            b.trustdinfo.token.expose().into(),
        ),
    ];
    let enc = [
        ("secretbox", &b.secrets.secretboxencryptionsecret),
        ("aescbc", &b.secrets.aescbcencryptionsecret),
    ];
    for (name, s) in enc {
        if let Some(s) = s {
            out.push((name.into(), s.expose().into()));
        }
    }
    let keys = [
        ("certs.etcd.key", b.certs.etcd.key.expose()),
        ("certs.k8s.key", b.certs.k8s.key.expose()),
        (
            "certs.k8saggregator.key",
            b.certs.k8saggregator.key.expose(),
        ),
        (
            "certs.k8sserviceaccount.key",
            b.certs.k8sserviceaccount.key.expose(),
        ),
        ("certs.os.key", b.certs.os.key.expose()),
    ];
    let mut b64_keys: Vec<(String, String)> = keys
        .iter()
        .map(|(n, k)| (n.to_string(), k.to_string()))
        .collect();
    // Client keys: `key:` in the talosconfig, `client-key-data:` in the kubeconfig.
    for (file, field) in [("talosconfig", "key:"), ("kubeconfig", "client-key-data:")] {
        let t = std::fs::read_to_string(dir.join(file)).unwrap();
        for (i, v) in t
            .lines()
            .filter_map(|l| l.trim().strip_prefix(field))
            .enumerate()
        {
            b64_keys.push((format!("{file} {field} #{i}"), v.trim().to_owned()));
        }
    }
    for (name, b64) in b64_keys {
        let pem = String::from_utf8(STANDARD.decode(&b64).unwrap()).unwrap();
        assert!(pem.contains("PRIVATE KEY"), "{name} is not a key");
        for (i, line) in pem.lines().filter(|l| !l.starts_with("-----")).enumerate() {
            // Short tail lines are too common to be evidence; 40 base64 chars are.
            if line.len() >= 40 {
                out.push((format!("{name} PEM line {i}"), line.to_owned()));
            }
        }
        out.push((name, b64));
    }
    assert!(out.len() > 20, "too few secrets found: {}", out.len());
    out
}

#[test]
fn no_secret_of_the_bundle_reaches_any_output_at_vvv() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    let ds = dir.to_str().unwrap();
    let p = support::profile("homelab.yaml").display().to_string();
    let lab = ["--lab", "--lab-speed", "600", "-vvv"];
    let mut outputs: Vec<(String, String)> = Vec::new();
    // `cluster`: append `--profile … --dir …` (every command but `backup verify`).
    let mut step = |name: &str, args: &[&str], cluster: bool| -> String {
        let mut all: Vec<&str> = args.to_vec();
        if cluster {
            all.extend(["--profile", &p, "--dir", ds]);
        }
        let (code, out, err) = run(&all);
        assert_eq!(code, 0, "{name}\n--- stdout\n{out}\n--- stderr\n{err}");
        outputs.push((format!("{name} stdout"), out.clone()));
        outputs.push((format!("{name} stderr"), err));
        out
    };
    step("gen", &["gen", "-vvv"], true);
    let mut up = vec!["up", "--yes", "--progress", "plain"];
    up.extend(lab);
    step("up", &up, true);
    let mut status = vec!["status"];
    status.extend(lab);
    step("status", &status, true);
    let mut backup = vec!["backup"];
    backup.extend(lab);
    let out = step("backup", &backup, true);
    let b = out
        .lines()
        .find_map(|l| {
            l.rsplit_once("written to ")
                .map(|(_, d)| d.trim().to_owned())
        })
        .expect("backup names its directory");
    step("backup verify", &["backup", "verify", &b, "-vvv"], false);
    let mut node = vec![
        "rebuild",
        "node",
        "talos-k8s-03",
        "--yes",
        "--lab-faults",
        "destroy-vm=talos-k8s-03",
    ];
    node.extend(lab);
    step("rebuild node", &node, true);
    let mut cluster = vec![
        "rebuild",
        "cluster",
        "--from",
        &b,
        "--yes",
        "--progress",
        "plain",
        "--lab-faults",
        "lose-control-planes",
    ];
    cluster.extend(lab);
    step("rebuild cluster", &cluster, true);

    let debug_lines: usize = outputs
        .iter()
        .map(|(_, o)| o.matches("DEBUG").count())
        .sum();
    assert!(debug_lines > 0, "-vvv produced no debug log at all");
    let secrets = secrets_of(dir);
    let mut leaks = Vec::new();
    for (out_name, text) in &outputs {
        for (secret_name, value) in &secrets {
            if text.contains(value.as_str()) {
                leaks.push(format!("{secret_name} in {out_name}"));
            }
        }
        if text.contains("PRIVATE KEY-----") {
            leaks.push(format!("a PEM private key in {out_name}"));
        }
    }
    assert!(leaks.is_empty(), "secrets leaked:\n{}", leaks.join("\n"));
}
