//! `talos-pve diff --lab`: the live cluster against the profile, with the
//! documented exit codes (0 none, 1 differences, 2 no comparison possible) and no
//! secret material in the output.

use serde_json::Value;

use crate::support;

fn run(args: &[&str]) -> (i32, String, String) {
    support::run(args)
}

#[test]
fn diff_is_clean_after_up_then_names_each_profile_change_without_secrets() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("cluster");
    let d = dir.display().to_string();
    let homelab = support::profile("homelab.yaml").display().to_string();
    let (code, _, err) = run(&[
        "up",
        "--profile",
        &homelab,
        "--dir",
        &d,
        "--lab",
        "--lab-speed",
        "600",
        "--yes",
        "--progress",
        "plain",
    ]);
    assert_eq!(code, 0, "{err}");
    let diff = |p: &str, json: bool| {
        let mut a = vec!["diff", "--profile", p, "--dir", &d, "--lab"];
        if json {
            a.extend(["--output", "json"]);
        }
        run(&a)
    };
    let (code, out, err) = diff(&homelab, false);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("no differences from the profile"), "{out}");

    // A Kubernetes patch bump, a new worker and a new Cilium version.
    let text = std::fs::read_to_string(&homelab).unwrap();
    let changed = text
        .replace("  version: 1.36.3\n", "  version: 1.36.4\n")
        .replace(
            "    podCIDR: 10.8.34.0/24             # seed: 10.8.30.0/24\n",
            "    podCIDR: 10.8.34.0/24\n  - name: talos-k8s-04\n    host: pve-aimax-01\n    vmid: 123\n    role: worker\n    management: {address: 10.8.16.23}\n    workload: {address: 10.8.28.23}\n    podCIDR: 10.8.35.0/24\n",
        );
    assert_ne!(changed, text);
    let p = tmp.path().join("changed.yaml");
    std::fs::write(&p, changed).unwrap();
    let p = p.display().to_string();
    let (code, out, err) = diff(&p, false);
    assert_eq!(code, 1, "{out}{err}");
    assert!(out.contains("add talos-k8s-04 (VMID 123)"), "{out}");
    assert!(out.contains("kubelet: v1.36.3 → v1.36.4"), "{out}");
    assert!(
        out.contains("config v1alpha1 machine.kubelet.image: \"ghcr.io/siderolabs/kubelet:v1.36.3\" → \"ghcr.io/siderolabs/kubelet:v1.36.4\""),
        "{out}"
    );
    // A kubelet image applies in place (talos-day2.md §3.2).
    assert!(out.contains("config applies without reboot"), "{out}");
    let (code, out, _) = diff(&p, true);
    assert_eq!(code, 1);
    let j: Value = serde_json::from_str(out.trim()).expect("JSON");
    assert!(j["differences"].as_u64().unwrap() > 0, "{j}");
    assert_eq!(j["diff"]["nodes"][0]["apply"], "no-reboot", "{j}");
    assert_eq!(j["diff"]["vms"][0]["change"], "add", "{j}");
    // No key material, whatever changed: the bundle's secrets never appear.
    let secrets = std::fs::read_to_string(dir.join("secrets.yaml")).unwrap();
    let mut checked = 0;
    for line in secrets.lines() {
        if let Some((k, v)) = line.trim().split_once(": ")
            && matches!(
                k,
                "secret" | "token" | "key" | "bootstraptoken" | "secretboxencryptionsecret"
            )
            && v.len() > 8
        {
            assert!(!out.contains(v), "{k} leaked");
            checked += 1;
        }
    }
    assert!(checked >= 3, "the secrets check looked at {checked} values");
    assert!(!out.contains("PRIVATE KEY"));

    // No comparison possible: exit 2.
    let (code, _, err) = diff("/nonexistent/profile.yaml", false);
    assert_eq!(code, 2, "{err}");
}
