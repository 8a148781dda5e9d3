//! Integration tests: `lint` and `plan` through the real binary, bad input, and a
//! proptest that the profile parser and lint never panic.

use std::path::{Path, PathBuf};

use proptest::prelude::*;

use crate::support::{golden, profile, run};

fn homelab_text() -> String {
    std::fs::read_to_string(profile("homelab.yaml")).unwrap()
}

/// Write `text` as `name` in a fresh temp dir (kept alive by the returned guard).
fn write(name: &str, text: impl AsRef<[u8]>) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(name);
    std::fs::write(&path, text).unwrap();
    (dir, path)
}

/// homelab.yaml with one textual change (which must apply).
fn patched(from: &str, to: &str) -> (tempfile::TempDir, PathBuf) {
    let text = homelab_text();
    assert!(
        text.contains(from),
        "patch anchor `{from}` not in homelab.yaml"
    );
    write("patched.yaml", text.replacen(from, to, 1))
}

fn lint(path: &Path, json: bool) -> (i32, String, String) {
    let p = path.to_str().unwrap();
    if json {
        run(&["--output", "json", "lint", "--profile", p])
    } else {
        run(&["lint", "--profile", p])
    }
}

#[test]
fn homelab_passes_lint_with_warnings_only() {
    let (code, out, err) = lint(&profile("homelab.yaml"), false);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("ok: 0 error(s)"), "{out}");
    assert!(out.contains("warning[NET407] routing.masquerade"), "{out}");
}

#[test]
fn seed_as_written_fails_naming_the_gateway_and_on_link_pods() {
    let (code, out, _) = lint(&profile("seed-as-written.yaml"), false);
    assert_eq!(code, 1, "{out}");
    let gw = out
        .lines()
        .find(|l| l.starts_with("error[NET003] nodes[0].workload.address:"))
        .unwrap_or_else(|| panic!("no gateway conflict in:\n{out}"));
    assert!(gw.contains("10.8.28.1"), "{gw}");
    for i in 0..3 {
        assert!(
            out.contains(&format!("error[NET101] nodes[{i}].podCIDR:")),
            "nodes[{i}].podCIDR missing:\n{out}"
        );
    }
    assert!(out.contains("  fix: "), "{out}");
    assert!(out.contains("FAIL"), "{out}");
}

#[test]
fn lint_json_is_a_stable_object_of_findings() {
    let (code, out, _) = lint(&profile("seed-as-written.yaml"), true);
    assert_eq!(code, 1);
    let v: serde_json::Value = serde_json::from_str(&out).expect("stdout is JSON");
    assert!(v["errors"].as_u64().unwrap() >= 5, "{v}");
    let findings = v["findings"].as_array().unwrap();
    let gw = findings
        .iter()
        .find(|f| f["code"] == "NET003")
        .expect("NET003 in JSON");
    assert_eq!(gw["severity"], "error");
    assert_eq!(gw["path"], "nodes[0].workload.address");
    assert!(gw["message"].as_str().unwrap().contains("10.8.28.1"));
    assert!(!gw["fix"].as_str().unwrap().is_empty());
    let (code, out, _) = lint(&profile("homelab.yaml"), true);
    assert_eq!(code, 0);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["errors"], 0);
}

/// A few rules end to end through the binary, from textual patches of homelab.yaml
/// (every rule is covered by `lint::tests` in the library).
#[test]
fn patched_profiles_fail_with_code_and_path() {
    let cases = [
        (
            "workload: {address: 10.8.28.21}",
            "workload: {address: 10.8.28.20}",
            "NET004",
            "nodes[1].workload.address",
        ),
        (
            "podCIDR: 10.8.33.0/24",
            "podCIDR: 10.8.29.0/24",
            "NET101",
            "nodes[1].podCIDR",
        ),
        (
            "pool: 10.8.31.10-10.8.31.200",
            "pool: 10.8.28.10-10.8.28.30",
            "NET202",
            "addons.metallb.pool",
        ),
        ("    vlan: 48", "    vlan: 28", "NET304", "networks[3].vlan"),
        (
            "allowSchedulingOnControlPlanes: true",
            "allowSchedulingOnControlPlanes: false",
            "NET404",
            "kubernetes.allowSchedulingOnControlPlanes",
        ),
        (
            "version: v1.13.9",
            "version: v1.14.0",
            "NET405",
            "talos.version",
        ),
        ("vmid: 122", "vmid: 121", "NET311", "nodes[2].vmid"),
    ];
    fail_with_code_and_path(&cases);
}

/// Each `(from, to, code, path)` patch of homelab.yaml fails lint with `code` at `path`.
fn fail_with_code_and_path(cases: &[(&str, &str, &str, &str)]) {
    for (from, to, code, path) in cases {
        let (_dir, file) = patched(from, to);
        let (rc, out, _) = lint(&file, false);
        assert_eq!(rc, 1, "{code}: {out}");
        assert!(
            out.contains(&format!("error[{code}] {path}:")),
            "{code} at {path} missing:\n{out}"
        );
    }
}

const BOMB: &str = "a: &a [\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\"]
b: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]
c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]
d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]
e: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]
f: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e]
g: &g [*f,*f,*f,*f,*f,*f,*f,*f,*f]
h: &h [*g,*g,*g,*g,*g,*g,*g,*g,*g]
i: &i [*h,*h,*h,*h,*h,*h,*h,*h,*h]
";

/// Each bad input: exit 2, a short message naming the file (and line:col when the
/// parser knows it), never a panic.
#[test]
fn bad_input_exits_2_with_file_and_location() {
    let text = homelab_text();
    let bomb_in_field = format!(
        "{text}timeServers:\n  - &a lol\n{}",
        (b'b'..=b'i')
            .map(|c| {
                let prev = (c - 1) as char;
                format!(
                    "  - &{} [{}]\n",
                    c as char,
                    vec![format!("*{prev}"); 9].join(",")
                )
            })
            .collect::<String>()
    );
    // The line of node 2's VMID, wherever the profile has it.
    let vmid_line = text.lines().position(|l| l.contains("vmid: 121")).unwrap() + 1;
    let vmid_at = format!(":{vmid_line}:");
    let cases: Vec<(&str, Vec<u8>, Option<&str>)> = vec![
        (
            "unknown-field",
            text.replacen("  tokenId:", "  tokenIdd:", 1).into_bytes(),
            Some(":29:3"),
        ),
        (
            "wrong-type",
            text.replacen("vmid: 121", "vmid: [121]", 1).into_bytes(),
            Some(&vmid_at),
        ),
        (
            "bad-vmid",
            text.replacen("vmid: 121", "vmid: -5", 1).into_bytes(),
            Some(&vmid_at),
        ),
        (
            "bad-cidr",
            text.replacen("subnet: 10.8.16.0/24", "subnet: 10.8.16.0/33", 1)
                .into_bytes(),
            Some(":72:"),
        ),
        (
            "bad-address",
            text.replacen("address: 10.8.16.20}", "address: 10.8.16.300}", 1)
                .into_bytes(),
            Some(":"),
        ),
        (
            "bad-range",
            text.replacen("10.8.31.10-10.8.31.200", "10.8.31.200-10.8.31.10", 1)
                .into_bytes(),
            Some(":"),
        ),
        (
            "wrong-kind",
            text.replacen("kind: Cluster", "kind: Pod", 1).into_bytes(),
            None,
        ),
        ("empty", Vec::new(), None),
        ("comments-only", b"# nothing here\n\n".to_vec(), None),
        (
            "garbage",
            (0..4096u32)
                .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
                .collect(),
            None,
        ),
        (
            "nul-bytes",
            b"apiVersion: talos-pve.dev/v1alpha1\n\0\0\0".to_vec(),
            None,
        ),
        ("yaml-bomb", BOMB.as_bytes().to_vec(), Some(":1:1")),
        ("yaml-bomb-in-field", bomb_in_field.into_bytes(), Some(":")),
        ("not-yaml", b"{{{{ [[[[ : : :".to_vec(), Some(":1:")),
    ];
    for (name, bytes, location) in cases {
        let (_dir, file) = write(&format!("{name}.yaml"), bytes);
        let started = std::time::Instant::now();
        let (rc, out, err) = lint(&file, false);
        assert!(started.elapsed().as_secs() < 10, "{name} took too long");
        assert_eq!(rc, 2, "{name}: exit {rc}\nstdout: {out}\nstderr: {err}");
        assert!(!err.contains("panicked"), "{name} panicked: {err}");
        let shown = file.display().to_string();
        assert!(err.contains(&shown), "{name}: file not named: {err}");
        if let Some(loc) = location {
            assert!(
                err.contains(&format!("{shown}{loc}")),
                "{name}: no {loc} location: {err}"
            );
        }
        assert!(err.contains("fix:"), "{name}: no fix: {err}");
        assert!(
            err.lines().count() <= 25,
            "{name}: more than a screen:\n{err}"
        );
    }
    let missing = std::env::temp_dir().join("talos-pve-no-such-profile.yaml");
    let (rc, _, err) = lint(&missing, false);
    assert_eq!(rc, 2);
    assert!(
        err.contains(&missing.display().to_string()) && err.contains("fix:"),
        "{err}"
    );
    assert_eq!(err.matches("No such file").count(), 1, "{err}");
}

#[test]
fn plan_text_matches_golden() {
    let (code, out, err) = run(&[
        "plan",
        "--profile",
        profile("homelab.yaml").to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{err}");
    // The golden file must not depend on where the repository lives.
    let out = out.replace(
        profile("homelab.yaml").to_str().unwrap(),
        "profiles/homelab.yaml",
    );
    golden("plan-homelab.txt", &out);
    assert!(out.contains("10.8.32.0/24  via 10.8.28.20"), "{out}");
}

#[test]
fn plan_json_matches_golden_and_names_every_node_identity() {
    let path = profile("homelab.yaml");
    let (code, out, _) = run(&[
        "--output",
        "json",
        "plan",
        "--profile",
        path.to_str().unwrap(),
    ]);
    assert_eq!(code, 0);
    golden("plan-homelab.json", &out);
    let v: serde_json::Value = serde_json::from_str(&out).expect("stdout is JSON only");
    let nodes = v["nodes"].as_array().unwrap();
    let want = [
        (
            "talos-k8s-01",
            120,
            "10.8.16.20/24",
            "10.8.28.20/22",
            "10.8.32.0/24",
        ),
        (
            "talos-k8s-02",
            121,
            "10.8.16.21/24",
            "10.8.28.21/22",
            "10.8.33.0/24",
        ),
        (
            "talos-k8s-03",
            122,
            "10.8.16.22/24",
            "10.8.28.22/22",
            "10.8.34.0/24",
        ),
    ];
    assert_eq!(nodes.len(), want.len());
    for (n, (name, vmid, mgmt, work, pods)) in nodes.iter().zip(want) {
        assert_eq!(n["name"], name);
        assert_eq!(n["vmid"], vmid);
        assert_eq!(n["management"]["address"], mgmt);
        assert_eq!(n["workload"]["address"], work);
        assert_eq!(n["podCIDR"], pods);
        for nic in ["management", "workload"] {
            let mac = n[nic]["mac"].as_str().unwrap();
            assert_eq!(mac.len(), 17, "{name} {nic} mac {mac}");
        }
    }
    assert_eq!(v["metallbPool"], "10.8.31.10-10.8.31.200");
    let doc = std::fs::read_to_string(crate::support::repo().join("docs/plan-json.md")).unwrap();
    for obj in [
        &v,
        &v["hosts"][0],
        &nodes[0],
        &nodes[0]["workload"],
        &v["gatewayRoutes"][0],
    ] {
        for key in obj.as_object().unwrap().keys() {
            assert!(
                doc.contains(&format!("| `{key}` |")),
                "docs/plan-json.md lacks `{key}`"
            );
        }
    }
    assert_eq!(v["gatewayRoutes"][0]["via"], "10.8.28.20");
}

/// Issue 11 §4, §5, §8 through the binary: values the receiving system refuses
/// (or that would change what it does) fail lint with their NET5xx code and path.
#[test]
fn values_in_the_wrong_format_fail_lint_with_code_and_path() {
    let cases = [
        (
            "bridge: vmbr0",
            "bridge: \"vmbr0,link_down=1\"",
            "NET505",
            "proxmox.bridge",
        ),
        (
            "diskStorage: local-lvm",
            "diskStorage: \"local-lvm,cache=unsafe\"",
            "NET506",
            "proxmox.diskStorage",
        ),
        (
            "isoStorage: local",
            "isoStorage: \"lo cal/x\"",
            "NET506",
            "proxmox.isoStorage",
        ),
        (
            "name: homelab",
            "name: \"../../escaped\"",
            "NET501",
            "metadata.name",
        ),
        ("name: homelab", "name: \"\"", "NET501", "metadata.name"),
        (
            "version: v1.13.9",
            "version: v1.12.11",
            "NET511",
            "kubernetes.version",
        ),
        (
            "version: 1.36.3",
            "version: latest",
            "NET510",
            "kubernetes.version",
        ),
        (
            "installDisk: /dev/sda",
            "installDisk: /dev/../etc/passwd",
            "NET512",
            "talos.installDisk",
        ),
        (
            "tokenId: root@pam!talos-pve",
            "tokenId: root-pam-talos",
            "NET503",
            "proxmox.tokenId",
        ),
        ("disk: 64}", "disk: 0}", "NET508", "nodeDefaults.disk"),
    ];
    fail_with_code_and_path(&cases);
}

/// Issue 11 §5: a name that is a path never leaves the data directory: `gen` refuses
/// and writes nothing anywhere.
#[test]
fn a_cluster_name_that_is_a_path_writes_nothing() {
    let data = tempfile::tempdir().unwrap();
    let xdg = data.path().join("a/b");
    std::fs::create_dir_all(&xdg).unwrap();
    for name in ["\"../../escaped\"", "\"\""] {
        let (_dir, file) = patched("name: homelab", &format!("name: {name}"));
        let out = std::process::Command::new(crate::support::bin())
            .args(["gen", "--profile", file.to_str().unwrap()])
            .env("XDG_DATA_HOME", &xdg)
            .env("NO_COLOR", "1")
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{name}: {err}");
        assert!(err.contains("error[NET501] metadata.name"), "{err}");
        let written: Vec<_> = walk(data.path());
        assert!(
            written.iter().all(|p| p.is_dir()),
            "{name}: wrote {written:?}"
        );
    }
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p));
        }
        out.push(p);
    }
    out
}

#[test]
fn plan_refuses_a_profile_with_lint_errors() {
    let (code, out, err) = run(&[
        "plan",
        "--profile",
        profile("seed-as-written.yaml").to_str().unwrap(),
    ]);
    assert_eq!(code, 1, "{out}");
    assert!(out.is_empty(), "no plan may be printed: {out}");
    assert!(
        err.contains("error[NET003] nodes[0].workload.address"),
        "{err}"
    );
    assert!(err.contains("lint error(s)"), "{err}");
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    #[test]
    fn parser_never_panics_on_random_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let text = String::from_utf8_lossy(&bytes);
        let _ = talos_pve::profile::parse(&text, Path::new("random.yaml"));
    }

    /// Mutated homelab text: parse, and when it still parses, lint and plan, never panic.
    #[test]
    fn mutated_homelab_never_panics(edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8)) {
        let mut bytes = homelab_text().into_bytes();
        for (at, b) in edits {
            let i = at.index(bytes.len());
            // Keep mutations mostly printable so some of them still parse.
            bytes[i] = if b.is_ascii_graphic() || b == b' ' || b == b'\n' { b } else { b'0' + b % 10 };
        }
        let text = String::from_utf8_lossy(&bytes);
        if let Ok(p) = talos_pve::profile::parse(&text, Path::new("mutated.yaml")) {
            let _ = talos_pve::lint::lint(&p);
            let _ = talos_pve::plan::Plan::build(&p);
        }
    }
}

/// homelab.yaml with a `lint.acknowledge` section appended.
fn acknowledging(items: &str) -> (tempfile::TempDir, PathBuf) {
    write(
        "ack.yaml",
        format!("{}\nlint:\n  acknowledge:\n{items}", homelab_text()),
    )
}

/// `lint` lists acknowledged findings with their reasons and stale ones; `plan`
/// only counts them.
#[test]
fn acknowledged_findings_are_listed_by_lint_and_counted_elsewhere() {
    let (_d, p) = acknowledging(
        "    - code: NET403\n      reason: one endpoint is fine here\n    - code: NET205\n      path: networks[1]\n      reason: typo\n",
    );
    let (code, out, err) = lint(&p, false);
    assert_eq!(code, 0, "{out}{err}");
    assert!(!out.contains("warning[NET403]"), "{out}");
    assert!(
        out.contains("acknowledged[NET403] kubernetes.endpoint:"),
        "{out}"
    );
    assert!(out.contains("  reason: one endpoint is fine here"), "{out}");
    assert!(
        out.contains("stale acknowledgement lint.acknowledge[1] (NET205): it matches no finding"),
        "{out}"
    );
    assert!(
        out.contains("3 warning(s), 1 info, 1 acknowledged"),
        "{out}"
    );
    let (code, out, err) = run(&["plan", "--profile", p.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    assert!(!out.contains("NET403"), "not repeated:\n{out}");
    assert!(
        out.contains("1 acknowledged finding(s) (see `talos-pve lint`)"),
        "{out}"
    );
    let (_, out, _) = lint(&p, true);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["acknowledged"][0]["code"], "NET403");
    assert_eq!(v["acknowledged"][0]["reason"], "one endpoint is fine here");
    assert_eq!(v["stale"][0]["field"], "lint.acknowledge[1]");
}

#[test]
fn acknowledging_an_error_is_refused() {
    let (_d, p) = acknowledging("    - code: NET101\n      reason: pods on link are fine\n");
    let (code, out, err) = lint(&p, false);
    assert_eq!(code, 2, "{out}{err}");
    assert!(
        err.contains(&format!(
            "profile {}: `lint.acknowledge[0].code`: NET101",
            p.display()
        )),
        "{err}"
    );
    assert!(err.contains("errors cannot be acknowledged"), "{err}");
}
