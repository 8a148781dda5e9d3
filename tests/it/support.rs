//! Shared helpers for the integration tests.

use std::path::{Path, PathBuf};

/// The repository root (profiles/, embedded/).
pub fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

pub fn profile(name: &str) -> PathBuf {
    repo().join("profiles").join(name)
}

/// The homelab profile with each `(from, to)` edit made once (each must apply),
/// written as `dir/file`.
pub fn edited_homelab(dir: &Path, file: &str, edits: &[(&str, &str)]) -> PathBuf {
    let mut text = std::fs::read_to_string(profile("homelab.yaml")).unwrap();
    for (from, to) in edits {
        let next = text.replacen(from, to, 1);
        assert_ne!(next, text, "{from} is in the homelab profile");
        text = next;
    }
    let p = dir.join(file);
    std::fs::write(&p, text).unwrap();
    p
}

/// `profiles/homelab.yaml`, loaded.
pub fn homelab() -> talos_pve::profile::Profile {
    talos_pve::profile::load(&profile("homelab.yaml")).expect("profiles/homelab.yaml loads")
}

/// [`homelab`] as the wizard writes it: the wizard does not ask how the switches
/// are cabled (`switches`, documentation only).
pub fn homelab_without_cabling() -> talos_pve::profile::Profile {
    let mut p = homelab();
    p.switches.clear();
    p
}

/// `../shared/reference/...`, or `None` with a printed reason when this clone has no
/// `shared/` beside it. Under `CI=true` a missing reference is a failure, not a skip.
pub fn reference(rel: &str) -> Option<PathBuf> {
    let p = repo().join("../shared/reference").join(rel);
    if p.exists() {
        return Some(p);
    }
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("CI=true but the reference file {} is missing", p.display());
    }
    eprintln!(
        "skipped: {} not found (no ../shared beside this clone)",
        p.display()
    );
    None
}

/// The built binary.
pub fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_talos-pve"))
}

/// Compare `actual` with `tests/golden/<name>`; `UPDATE_GOLDEN=1` rewrites the file.
pub fn golden(name: &str, actual: &str) {
    let path = repo().join("tests/golden").join(name);
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, actual).unwrap();
    }
    let want = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e}; run with UPDATE_GOLDEN=1", path.display()));
    assert!(
        want == actual,
        "{} differs from the output; if the change is intended rerun with UPDATE_GOLDEN=1\n--- output ---\n{actual}",
        path.display()
    );
}

/// Run the binary with `args`; (exit code, stdout, stderr).
/// `talos-pve CMD --profile P --dir D --lab --lab-speed S`, with `--yes --progress
/// plain` for the commands that act (all but `status`), then `extra`.
pub fn lab_cli(
    cmd: &str,
    profile: &str,
    dir: &Path,
    speed: &str,
    extra: &[&str],
) -> (i32, String, String) {
    let d = dir.display().to_string();
    let mut args = vec![
        cmd,
        "--profile",
        profile,
        "--dir",
        &d,
        "--lab",
        "--lab-speed",
        speed,
    ];
    if cmd != "status" {
        args.extend(["--yes", "--progress", "plain"]);
    }
    args.extend(extra);
    run(&args)
}

pub fn run(args: &[&str]) -> (i32, String, String) {
    let out = std::process::Command::new(bin())
        .args(args)
        .env("NO_COLOR", "1")
        .output()
        .expect("run talos-pve");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A CA made by the real `pki` generator, its key PEM as Talos writes it
/// (`ED25519 PRIVATE KEY`, SEC1 `EC PRIVATE KEY`). Valid from an hour ago.
pub struct TestCa {
    pub crt: String,
    pub key_pem: String,
    pub key: talos_pve::pki::PrivateKey,
}

fn an_hour_ago() -> time::OffsetDateTime {
    time::OffsetDateTime::now_utc() - time::Duration::hours(1)
}

pub fn test_ca(alg: talos_pve::pki::KeyAlg, org: &str) -> TestCa {
    let c = talos_pve::pki::cert::new_ca(alg, Some(org), an_hour_ago()).expect("new CA");
    TestCa {
        crt: c.cert_pem,
        key_pem: c.key.to_talos_pem().to_string(),
        key: c.key,
    }
}

/// A client certificate from `ca` (`O=<orgs>`, `CN=<cn>`): (certificate PEM, key PEM as
/// Talos writes it).
pub fn test_client(
    ca: &TestCa,
    alg: talos_pve::pki::KeyAlg,
    orgs: &[&str],
    cn: Option<&str>,
) -> (String, String) {
    let c = talos_pve::pki::cert::new_client(&ca.crt, &ca.key, alg, orgs, cn, an_hour_ago())
        .expect("new client certificate");
    (c.cert_pem, c.key.to_talos_pem().to_string())
}

/// Run `f` against the lab Kubernetes API of the saved datacenter.
pub async fn with_api<T>(
    profile: &Path,
    dir: &Path,
    f: impl AsyncFnOnce(&talos_pve::kube::Client) -> T,
) -> T {
    let p = talos_pve::profile::load(profile).unwrap();
    let dc = talos_pve::lab::Datacenter::open(
        &dir.join("lab"),
        &p,
        &talos_pve::lab::LabOptions::default(),
    )
    .await
    .unwrap();
    dc.kube
        .serving(std::time::Duration::from_secs(10))
        .await
        .expect("the lab API serves");
    let kc = talos_pve::kube::Kubeconfig::load(&dir.join("kubeconfig")).unwrap();
    let client = talos_pve::kube::Client::new(&kc, &dc.fabric.addresses)
        .await
        .unwrap();
    let out = f(&client).await;
    dc.save().unwrap();
    dc.shutdown();
    out
}

pub fn res(group: &str, kind: &str, plural: &str) -> talos_pve::kube::Resource {
    talos_pve::kube::Resource {
        group: group.into(),
        version: "v1".into(),
        kind: kind.into(),
        plural: plural.into(),
        namespaced: true,
    }
}

/// `up` of `profile` into `dir` in a fast lab, unattended, plain progress.
pub fn up_args(profile: &Path, dir: &Path) -> Vec<String> {
    let (p, d) = (profile.display().to_string(), dir.display().to_string());
    [
        "up",
        "--profile",
        &p,
        "--dir",
        &d,
        "--lab",
        "--lab-speed",
        "600",
        "--yes",
        "--progress",
        "plain",
    ]
    .map(str::to_owned)
    .to_vec()
}
