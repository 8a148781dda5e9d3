//! Shell completions asked the way the shells ask them: bash through its completion
//! function with `COMP_WORDS`, fish through `complete -C`, zsh loaded with its
//! completion system. A shell that is not installed is skipped with a printed
//! reason, unless CI=true (`.ci/run` installs bash, zsh and fish).

use std::process::Command;

use crate::support;

fn script(shell: &str, dir: &std::path::Path) -> Option<std::path::PathBuf> {
    let present = Command::new(shell)
        .args(["-c", "exit 0"])
        .status()
        .is_ok_and(|s| s.success());
    if !present {
        assert!(
            std::env::var("CI").map_or(true, |v| v != "true"),
            "CI=true but {shell} is not installed"
        );
        eprintln!("skipped: {shell} is not installed");
        return None;
    }
    let (code, out, err) = support::run(&["completions", shell]);
    assert_eq!(code, 0, "{err}");
    let path = dir.join(format!("talos-pve.{shell}"));
    std::fs::write(&path, out).unwrap();
    Some(path)
}

/// What bash completes for `words`, the last one being completed.
fn bash_complete(script: &std::path::Path, words: &[&str]) -> Vec<String> {
    let quoted: Vec<String> = words.iter().map(|w| format!("'{w}'")).collect();
    let cword = words.len() - 1;
    let prog = format!(
        "source '{}'\n\
         f=$(complete -p talos-pve | sed 's/.*-F \\([^ ]*\\).*/\\1/')\n\
         COMP_WORDS=({})\nCOMP_CWORD={cword}\n\
         $f talos-pve '{}' '{}'\n\
         printf '%s\\n' \"${{COMPREPLY[@]}}\"",
        script.display(),
        quoted.join(" "),
        words[cword],
        words[cword - 1],
    );
    let out = Command::new("bash").args(["-c", &prog]).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_owned)
        .collect()
}

#[test]
fn bash_completes_below_the_top_level() {
    let tmp = tempfile::tempdir().unwrap();
    let Some(s) = script("bash", tmp.path()) else {
        return;
    };
    let got = bash_complete(&s, &["talos-pve", "up", "--l"]);
    for want in ["--lab", "--lab-speed", "--lab-faults", "--lab-report"] {
        assert!(got.iter().any(|g| g == want), "up --l<TAB>: {got:?}");
    }
    let got = bash_complete(&s, &["talos-pve", "rebuild", ""]);
    assert!(
        got.contains(&"node".to_owned()) && got.contains(&"cluster".to_owned()),
        "rebuild <TAB> lists its subcommands, not files: {got:?}"
    );
    let got = bash_complete(&s, &["talos-pve", "lab", "serve", "--p"]);
    assert!(got.contains(&"--profile".to_owned()), "{got:?}");
    let got = bash_complete(&s, &["talos-pve", "st"]);
    assert_eq!(got, ["status"]);
}

#[test]
fn fish_completes_below_the_top_level() {
    let tmp = tempfile::tempdir().unwrap();
    let Some(s) = script("fish", tmp.path()) else {
        return;
    };
    let ask = |line: &str| {
        let prog = format!("source '{}'; complete -C '{line}'", s.display());
        let out = Command::new("fish").args(["-c", &prog]).output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let got = ask("talos-pve up --l");
    assert!(
        got.lines()
            .any(|l| l.starts_with("--lab\t") || l == "--lab"),
        "{got}"
    );
    let got = ask("talos-pve rebuild ");
    assert!(got.lines().any(|l| l.starts_with("node")), "{got}");
}

#[test]
fn zsh_loads_the_completion_function() {
    let tmp = tempfile::tempdir().unwrap();
    let Some(s) = script("zsh", tmp.path()) else {
        return;
    };
    let syntax = Command::new("zsh").arg("-n").arg(&s).status().unwrap();
    assert!(syntax.success(), "zsh -n rejects the script");
    let prog = format!(
        "autoload -U compinit && compinit -u -D && source '{}' && whence -w _talos-pve && print -r -- ${{_comps[talos-pve]}}",
        s.display()
    );
    let out = Command::new("zsh")
        .args(["-f", "-c", &prog])
        .env("HOME", tmp.path())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("_talos-pve: function"), "{text}");
    assert!(
        text.trim_end().ends_with("_talos-pve"),
        "compdef registered it: {text}"
    );
}
