//! Integration tests: `talos-pve docs` (golden Markdown, atomic public file,
//! refusal on lint errors) and validity of every Mermaid block.

use std::collections::HashSet;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;

use crate::support::{golden, profile, repo, run};

fn homelab_docs() -> String {
    let (code, out, err) = run(&[
        "docs",
        "--profile",
        profile("homelab.yaml").to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{err}");
    out
}

fn mermaid_blocks(doc: &str) -> Vec<String> {
    doc.split("```mermaid\n")
        .skip(1)
        .map(|rest| rest.split("```").next().unwrap().to_string())
        .collect()
}

#[test]
fn docs_match_golden_and_are_written_atomically_with_public_mode() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("net/network.md");
    let (code, stdout, err) = run(&[
        "docs",
        "--profile",
        profile("homelab.yaml").to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(stdout.is_empty());
    assert!(err.contains("wrote"), "{err}");
    let doc = std::fs::read_to_string(&out).unwrap();
    assert_eq!(doc, homelab_docs(), "--out and stdout differ");
    let mode = std::fs::metadata(&out).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o644);
    let leftovers: Vec<_> = std::fs::read_dir(out.parent().unwrap()).unwrap().collect();
    assert_eq!(leftovers.len(), 1, "temp files left behind");
    golden("docs-homelab.md", &doc);
}

#[test]
fn docs_cover_tables_routes_dns_and_firewall() {
    let doc = homelab_docs();
    for want in [
        "| 28 | workload | workload | 10.8.28.0/22 | 10.8.28.1 | 1500 | yes |",
        "| 10.8.28.20 | talos-k8s-01 | Talos VM (controlplane) |",
        "| 10.8.16.190 | pve-ms01-01-vpro | vPro/AMT |",
        "| 10.8.31.10-10.8.31.200 | MetalLB | LoadBalancer pool | 191 addresses |",
        "| 10.8.33.0/24 | 10.8.28.21 | talos-k8s-02 |",
        "| talos-k8s-03.lab.local | 10.8.16.22 |",
        "| k8s-api.lab.local | 10.8.16.20 | extra record |",
        "| deny | 10.8.28.0/22, 10.8.32.0/22 | 10.8.16.10, 10.8.16.11, 10.8.16.12 | tcp/8006 |",
        "| allow | 10.8.28.0/22, 10.8.32.0/22 | 10.8.16.20, 10.8.16.21, 10.8.16.22 | tcp/6443 |",
        "| deny | any other VLAN | 10.8.48.0/24 | any |",
    ] {
        assert!(doc.contains(want), "missing `{want}`");
    }
    assert_eq!(mermaid_blocks(&doc).len(), 3);
}

#[test]
fn docs_refuse_a_profile_with_lint_errors() {
    let (code, out, err) = run(&[
        "docs",
        "--profile",
        profile("seed-as-written.yaml").to_str().unwrap(),
    ]);
    assert_eq!(code, 1);
    assert!(out.is_empty());
    assert!(err.contains("NET101"), "{err}");
}

/// What each line of our flowcharts may be; ids are `[A-Za-z][A-Za-z0-9_]*`.
fn is_id(s: &str) -> bool {
    s.chars().next().is_some_and(|c| c.is_ascii_alphabetic())
        && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        && s != "end"
}

fn quoted_label(s: &str) -> bool {
    s.len() >= 2 && s.starts_with('"') && s.ends_with('"') && !s[1..s.len() - 1].contains('"')
}

/// Structural validity: header, subgraph/end balance, quoted labels, unique ids,
/// edges only between declared ids, bare edge labels free of syntax characters.
fn check_structure(block: &str) -> Result<(), String> {
    let mut lines = block.lines().map(str::trim).filter(|l| !l.is_empty());
    let head = lines.next().ok_or("empty block")?;
    if !["graph TB", "graph LR"].contains(&head) {
        return Err(format!("bad header `{head}`"));
    }
    let mut depth = 0i32;
    let mut ids = HashSet::new();
    let mut edges = Vec::new();
    for l in lines {
        if l == "end" {
            depth -= 1;
            if depth < 0 {
                return Err("`end` without subgraph".into());
            }
        } else if let Some(rest) = l.strip_prefix("subgraph ") {
            let (id, label) = rest.split_once(' ').ok_or(format!("bad subgraph `{l}`"))?;
            let label = label.strip_prefix('[').and_then(|s| s.strip_suffix(']'));
            if !is_id(id) || !label.is_some_and(quoted_label) || !ids.insert(id.to_string()) {
                return Err(format!("bad subgraph `{l}`"));
            }
            depth += 1;
        } else if let Some(rest) = l.strip_prefix("style ") {
            let (id, _) = rest.split_once(' ').ok_or(format!("bad style `{l}`"))?;
            edges.push((id.to_string(), id.to_string()));
        } else if let Some((id, label)) = l.split_once('[') {
            let label = label.strip_suffix(']').ok_or(format!("bad node `{l}`"))?;
            if !is_id(id) || !quoted_label(label) || !ids.insert(id.to_string()) {
                return Err(format!("bad node `{l}`"));
            }
        } else {
            let parts: Vec<&str> = l.splitn(3, ' ').collect();
            let [from, arrow, rest] = parts[..] else {
                return Err(format!("unrecognised line `{l}`"));
            };
            let (arrow, to) = match arrow.split_once('|') {
                Some((a, label)) => {
                    let (label, to) = format!("{label} {rest}")
                        .split_once("| ")
                        .map(|(x, y)| (x.to_string(), y.to_string()))
                        .ok_or(format!("bad edge label `{l}`"))?;
                    if label.contains(['"', '[', ']', '(', ')', '{', '}', '|']) {
                        return Err(format!("unsafe edge label `{l}`"));
                    }
                    (a.to_string(), to)
                }
                None => (arrow.to_string(), rest.to_string()),
            };
            if !["-->", "---", "-.->", "-.-", "<-->"].contains(&arrow.as_str())
                || !is_id(from)
                || !is_id(&to)
            {
                return Err(format!("bad edge `{l}`"));
            }
            edges.push((from.to_string(), to));
        }
    }
    if depth != 0 {
        return Err(format!("{depth} subgraph(s) not closed"));
    }
    for (a, b) in edges {
        if !ids.contains(&a) || !ids.contains(&b) {
            return Err(format!("edge/style names an undeclared id: {a} -> {b}"));
        }
    }
    Ok(())
}

#[test]
fn every_mermaid_block_is_structurally_valid() {
    for block in mermaid_blocks(&homelab_docs()) {
        check_structure(&block).unwrap_or_else(|e| panic!("{e} in:\n{block}"));
    }
    // The checker itself rejects what Mermaid would reject.
    for bad in [
        "graph TB\n    subgraph s [\"x\"]\n",
        "graph TB\n    a[x y]\n",
        "graph TB\n    a[\"x\"]\n    a --> b\n",
        "graph TB\n    a[\"x\"]\n    b[\"y\"]\n    a -->|p(q)| b\n",
        "flowchart XX\n",
    ] {
        assert!(check_structure(bad).is_err(), "accepted:\n{bad}");
    }
}

/// Where `mermaid` and `jsdom` are installed: `$TALOS_PVE_MERMAID_DIR`, else
/// `target/mermaid` (`npm install --prefix target/mermaid mermaid@11 jsdom@24`).
fn mermaid_dir() -> Option<PathBuf> {
    let dir = std::env::var_os("TALOS_PVE_MERMAID_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo().join("target/mermaid"));
    let node = std::process::Command::new("node").arg("--version").output();
    if node.is_err() {
        eprintln!("skipped: `node` is not installed");
        return None;
    }
    if !dir.join("node_modules/mermaid").is_dir() || !dir.join("node_modules/jsdom").is_dir() {
        eprintln!(
            "skipped: mermaid/jsdom not in {}; install with `npm install --prefix {} mermaid@11 jsdom@24`",
            dir.display(),
            dir.display()
        );
        return None;
    }
    Some(dir)
}

#[test]
fn every_mermaid_block_parses_with_the_real_mermaid_parser() {
    let Some(dir) = mermaid_dir() else { return };
    let script = dir.join("check.mjs");
    std::fs::copy(repo().join("tests/mermaid/check.mjs"), &script).unwrap();
    let work = tempfile::tempdir().unwrap();
    let mut files = Vec::new();
    for (i, block) in mermaid_blocks(&homelab_docs()).iter().enumerate() {
        let f = work.path().join(format!("block{i}.mmd"));
        std::fs::write(&f, block).unwrap();
        files.push(f);
    }
    let broken = work.path().join("broken.mmd");
    std::fs::write(&broken, "graph TB\n    a[x --> b\n").unwrap();
    let parse = |files: &[PathBuf]| {
        std::process::Command::new("node")
            .arg(&script)
            .args(files)
            .current_dir(&dir)
            .output()
            .expect("run node")
    };
    let out = parse(&files);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "mermaid rejected a block:\n{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(text.matches("ok ").count(), 3, "{text}");
    assert!(
        !parse(&[broken]).status.success(),
        "the parser must reject broken input"
    );
}

#[test]
fn docs_out_to_an_unwritable_place_fails_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("a-file");
    std::fs::write(&file, "x").unwrap();
    let out = file.join("sub/network.md");
    let (code, _, err) = run(&[
        "docs",
        "--profile",
        profile("homelab.yaml").to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains(&out.display().to_string()), "{err}");
    assert!(!err.contains("panicked"), "{err}");
}
