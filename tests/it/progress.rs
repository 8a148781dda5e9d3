//! Progress output of the real binary: every row ends, plain lines wherever bars
//! cannot be drawn (TERM=dumb, -v), on a pty like a person's terminal.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use serde_json::Value;

use super::support;

fn up_json(dir: &Path, extra: &[&str]) -> (i32, Vec<Value>, String) {
    // `node` is null for cluster rows; tests below compare it with "cluster".
    let p = support::profile("homelab.yaml");
    let mut args = vec![
        "up",
        "--lab",
        "--yes",
        "--output",
        "json",
        "--profile",
        p.to_str().unwrap(),
        "--dir",
        dir.to_str().unwrap(),
    ];
    args.extend(extra);
    let (code, out, err) = support::run(&args);
    let events = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .filter(|v: &Value| v["event"] != "summary")
        .map(|mut v: Value| {
            if v["node"].is_null() {
                v["node"] = "cluster".into();
            }
            v
        })
        .collect();
    (code, events, err)
}

/// The last event of every (node, stage) row.
fn last_events(events: &[Value]) -> BTreeMap<(String, String), Value> {
    let mut last = BTreeMap::new();
    for e in events {
        let node = e["node"].as_str().unwrap().to_owned();
        let stage = e["stage"].as_str().unwrap().to_owned();
        last.insert((node, stage), e.clone());
    }
    last
}

fn is_end(e: &Value) -> bool {
    matches!(e["event"].as_str(), Some("done" | "failed" | "skipped"))
}

/// Per-node `provision` rows (and every other) end; a bar never spins forever.
#[test]
fn every_row_of_a_lab_run_ends() {
    let tmp = tempfile::tempdir().unwrap();
    let (code, events, _) = up_json(tmp.path(), &[]);
    assert_eq!(code, 0);
    let last = last_events(&events);
    assert_eq!(
        last[&("talos-k8s-02".to_owned(), "provision".to_owned())]["event"],
        "done"
    );
    for (row, e) in &last {
        assert_eq!(e["event"], "done", "{row:?} ended with {e}");
    }
}

/// A failure cancels the other nodes' steps: their rows end as failed too.
#[test]
fn rows_cancelled_by_a_failure_end_as_not_finished() {
    let tmp = tempfile::tempdir().unwrap();
    let (code, events, err) = up_json(tmp.path(), &["--lab-faults", "pve-task-error=qmstart"]);
    assert_ne!(code, 0);
    // The error is printed once, its check line last (no cause glued after it).
    assert_eq!(err.matches("injected qmstart failure").count(), 1, "{err}");
    assert!(err.trim_end().ends_with("then run again"), "{err}");
    let last = last_events(&events);
    assert!(last.values().any(|e| e["event"] == "failed"), "{last:?}");
    for (row, e) in &last {
        assert!(is_end(e), "{row:?} never ended: {e}");
    }
}

/// Long stages say how far they are: the ISO download's percent from the PVE task
/// log, retries with their count, what an add-on rollout waits for.
#[test]
fn long_stages_show_their_progress() {
    let tmp = tempfile::tempdir().unwrap();
    let (code, events, _) = up_json(
        tmp.path(),
        &["--lab-speed", "10", "--lab-faults", "pve-lock=1"],
    );
    assert_eq!(code, 0);
    let said = |node: &str, stage: &str| -> Vec<String> {
        events
            .iter()
            .filter(|e| e["node"] == node && e["stage"] == stage && e["event"] == "progress")
            .map(|e| e["message"].as_str().unwrap().to_owned())
            .collect()
    };
    let iso = said("pve-ms01-01", "ISO download");
    assert!(
        iso.iter().any(|m| m.ends_with('%')),
        "the download's percent: {iso:?}"
    );
    let cluster = |stage: &str| said("cluster", stage).join("\n");
    let provision = cluster("provision");
    assert!(provision.contains("retry 1/5 in "), "{provision}");
    let addons = cluster("addons");
    assert!(
        addons.contains("waiting for the Cilium agent DaemonSet to be ready: 0/3 ready"),
        "{addons}"
    );
}

/// Runs `up --lab` on a pty with `TERM` and `extra`; everything it printed.
#[cfg(unix)]
fn up_on_a_pty(term: &str, extra: &[&str]) -> String {
    use rexpect::session::spawn_command;

    let tmp = tempfile::tempdir().unwrap();
    let mut cmd = Command::new(support::bin());
    cmd.args(["up", "--lab", "--yes"])
        .args(extra)
        .arg("--profile")
        .arg(support::profile("homelab.yaml"))
        .arg("--dir")
        .arg(tmp.path().join("cluster"))
        .env("NO_COLOR", "1")
        .env_remove("TALOS_PVE_LOG")
        .env("TERM", term);
    let mut s = spawn_command(cmd, Some(120_000)).unwrap();
    let out = s.exp_eof().unwrap();
    match s.process().wait().unwrap() {
        rexpect::process::WaitStatus::Exited(_, code) => assert_eq!(code, 0, "{out}"),
        other => panic!("{other:?}"),
    }
    out
}

fn spinner_free(out: &str) {
    let spinners = "⠁⠂⠄⡀⢀⠠⠐⠈⠉⠒⠤⠙⠚⠲⠴⠦⠖⠋⠓⠸⠼⠧⠇⠏";
    assert!(!out.chars().any(|c| spinners.contains(c)), "{out}");
}

/// A dumb terminal gets a line per event, never nothing.
#[cfg(unix)]
#[test]
fn term_dumb_gets_plain_lines() {
    let out = up_on_a_pty("dumb", &[]);
    assert!(out.contains("talos-k8s-01 provision: VM 120"), "{out}");
    assert!(out.contains("cluster addons: done in"), "{out}");
    spinner_free(&out);
}

/// With -v the log lines and the progress are plain lines, in one stream.
#[cfg(unix)]
#[test]
fn verbose_on_a_terminal_gets_plain_lines_not_bars() {
    let out = up_on_a_pty("xterm-256color", &["-v"]);
    assert!(out.contains(" INFO "), "log lines are shown:\n{out}");
    assert!(out.contains("talos-k8s-03 install: done in"), "{out}");
    spinner_free(&out);
}
