//! `--lab` on every command that talks to Proxmox, Talos or Kubernetes: the wizard
//! discovers the lab (never a real Proxmox), and teardown can be rehearsed.

use std::path::Path;
use std::process::Command;

use serde_json::Value;

use crate::support;

fn lab_vms(dir: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(dir.join("lab/datacenter.json")).unwrap();
    let lab: Value = serde_json::from_str(&text).unwrap();
    lab["proxmox"]["vms"]
        .as_object()
        .map(|m| m.keys().cloned().collect())
        .unwrap_or_default()
}

/// `up --lab` without a profile: the wizard's discovery asks the lab's Proxmox, the
/// defaults make a profile, and the bring-up runs in the lab. Direct connections are
/// refused (`TALOS_PVE_LOOPBACK_ONLY=1`), so a real Proxmox could not have been asked.
#[cfg(unix)]
#[test]
fn up_lab_without_a_profile_discovers_the_lab() {
    use rexpect::session::spawn_command;

    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("cluster");
    let mut cmd = Command::new(support::bin());
    cmd.current_dir(tmp.path())
        .args([
            "up",
            "--lab",
            "--yes",
            "--lab-speed",
            "600",
            "--progress",
            "plain",
        ])
        .arg("--dir")
        .arg(&dir)
        .env("NO_COLOR", "1")
        .env("TERM", "dumb")
        .env("TALOS_PVE_LOOPBACK_ONLY", "1");
    let mut s = spawn_command(cmd, Some(150)).unwrap();
    let mut seen = String::new();
    let mut done = false;
    for _ in 0..600 {
        match s.exp_string("Cluster homelab is up") {
            Ok(before) => {
                seen.push_str(&before);
                done = true;
                break;
            }
            Err(_) => {
                s.send_line("").unwrap();
            }
        }
    }
    assert!(done, "the lab bring-up never finished");
    assert!(
        seen.contains("lab: discovery asks a simulated Proxmox"),
        "{seen}"
    );
    let rest = s.exp_eof().unwrap_or_default();
    assert!(rest.contains("This was the lab"), "{rest}");
    let profile = talos_pve::profile::load(&tmp.path().join("talos-pve.yaml")).unwrap();
    assert_eq!(profile.proxmox.endpoint, "https://10.8.16.10:8006");
    assert_eq!(lab_vms(&dir).len(), profile.nodes.len());
}

#[test]
fn init_lab_conflicts_with_a_discovery_file() {
    let (code, _, err) = support::run(&["init", "--lab", "--discovery-file", "x.yaml"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("cannot be used with"), "{err}");
}

fn lab_cmd(cmd: &str, dir: &Path, extra: &[&str]) -> (i32, String, String) {
    let p = support::profile("homelab.yaml").display().to_string();
    let d = dir.display().to_string();
    let mut args = vec![
        cmd,
        "--profile",
        &p,
        "--dir",
        &d,
        "--lab",
        "--lab-speed",
        "600",
    ];
    args.extend(extra);
    support::run(&args)
}

/// A newcomer can rehearse the whole life cycle in the lab, teardown included.
#[test]
fn preflight_provision_and_destroy_take_lab() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("cluster");
    let (code, out, err) = lab_cmd("up", &dir, &["--yes", "--progress", "plain"]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert_eq!(lab_vms(&dir).len(), 3);

    let (code, out, err) = lab_cmd("preflight", &dir, &[]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(out.contains("[ok  ]"), "{out}");
    let (code, out, err) = lab_cmd("provision", &dir, &[]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(out.contains("Everything is up to date"), "{out}");

    let (code, out, err) = lab_cmd("status", &dir, &[]);
    assert_eq!(code, 0, "healthy\n{out}\n{err}");
    assert!(out.starts_with("Cluster homelab: healthy"), "{out}");
    assert!(out.contains("Kubernetes"), "a Ready column:\n{out}");
    // A VM gone (the lab's disaster, applied to what this command sees): non-zero,
    // the verdict says why and names the rebuild.
    let (code, out, err) = lab_cmd("status", &dir, &["--lab-faults", "destroy-vm=talos-k8s-02"]);
    assert_eq!(code, 3, "degraded\n{out}\n{err}");
    assert!(out.contains("talos-k8s-02: VM 121 is gone"), "{out}");
    assert!(
        out.contains("talos-pve rebuild node talos-k8s-02 --profile"),
        "{out}"
    );
    // Piped, the missing node's row says it does not answer, in one line; the lab's
    // own wording waits for `-v`.
    assert!(!out.contains("loopback"), "{out}");
    let row = out.lines().find(|l| l.contains("talos-k8s-02  ")).unwrap();
    assert!(row.contains("unreachable (nothing answers at"), "{out}");
    let (_, out, _) = lab_cmd(
        "status",
        &dir,
        &["--lab-faults", "destroy-vm=talos-k8s-02", "-v"],
    );
    assert!(out.contains("no loopback mapping"), "{out}");
    let (code, out, _) = lab_cmd(
        "status",
        &dir,
        &[
            "--lab-faults",
            "destroy-vm=talos-k8s-02",
            "--output",
            "json",
        ],
    );
    assert_eq!(code, 3);
    let s: Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(
        (s["format"].as_u64(), s["verdict"].as_str()),
        (Some(1), Some("degraded"))
    );

    let (code, out, err) = lab_cmd("destroy", &dir, &["--yes"]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(out.contains("Destroyed 3 VMs"), "{out}");
    assert_eq!(
        lab_vms(&dir),
        Vec::<String>::new(),
        "no VM is left in the lab"
    );
    let (code, out, _) = lab_cmd("destroy", &dir, &["--yes"]);
    assert_eq!(code, 0);
    assert!(out.contains("nothing to destroy"), "{out}");
}

/// Ctrl-C during `up` says how to resume, exits 130, and the next run resumes.
#[test]
fn ctrl_c_during_up_says_run_again_to_resume() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("cluster");
    let p = support::profile("homelab.yaml");
    let child = Command::new(support::bin())
        .args([
            "up",
            "--lab",
            "--yes",
            "--lab-speed",
            "60",
            "--progress",
            "plain",
        ])
        .arg("--profile")
        .arg(&p)
        .arg("--dir")
        .arg(&dir)
        .env("NO_COLOR", "1")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(1500));
    let sent = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(sent.success());
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(130), "{err}");
    assert!(
        err.contains("run the same command again to resume"),
        "{err}"
    );
    assert!(!err.contains("error:"), "{err}");
    let (code, out, err) = lab_cmd("up", &dir, &["--yes", "--progress", "plain"]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(err.contains("already done"), "the re-run resumes:\n{err}");
}

/// "no" at the confirmation is an answer, not a failure: exit 0, no `error:`.
#[cfg(unix)]
#[test]
fn no_at_the_confirmation_exits_0_without_error() {
    use rexpect::session::spawn_command;

    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("cluster");
    let mut cmd = Command::new(support::bin());
    cmd.args(["up", "--lab", "--lab-speed", "600", "--progress", "plain"])
        .arg("--profile")
        .arg(support::profile("homelab.yaml"))
        .arg("--dir")
        .arg(&dir)
        .env("NO_COLOR", "1")
        .env("TERM", "dumb");
    let mut s = spawn_command(cmd, Some(30_000)).unwrap();
    s.exp_string("Build cluster homelab (3 VMs)?").unwrap();
    s.exp_string("[y/N]").unwrap();
    s.send_line("n").unwrap();
    let rest = s.exp_eof().unwrap();
    assert!(rest.contains("nothing was changed"), "{rest}");
    assert!(!rest.contains("error"), "{rest}");
    match s.process().wait().unwrap() {
        rexpect::process::WaitStatus::Exited(_, code) => assert_eq!(code, 0, "{rest}"),
        other => panic!("{other:?}"),
    }
}
