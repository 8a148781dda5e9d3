//! How a configured lab node takes a machine config (`ApplyConfiguration` outside
//! maintenance), as talos v1.13.9 `internal/app/machined/internal/server/v1alpha1/
//! v1alpha1_server.go` L178-349 does (v1.12.11 L179-346, same flow): the mode
//! resolution and its texts here (pure), the effects in `server.rs` and `mod.rs`.
//! Which changes apply in place is `crate::diff::config::classify`: the same rule
//! (`v1alpha1_runtime.go` `CanApplyImmediate`) talos-pve plans with.

use tonic::Status;

use crate::diff::config::{self as cfgdiff, Apply};
use crate::talos::api::messages::ApplyMode;

/// What the node will do with an accepted config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// The mode after AUTO is resolved (the reply's `mode`).
    pub mode: ApplyMode,
    /// `mode_details` without the dry-run framing.
    pub details: String,
    /// Appended to the details of a real (not dry-run) AUTO → REBOOT.
    pub reason: String,
}

/// Resolve `mode` for a change from `running` to `new` (both whole document sets).
/// NO_REBOOT and TRY refuse a change that needs a reboot, with the diff.
pub fn decide(mode: ApplyMode, running: &str, new: &str) -> Result<Decision, Status> {
    let immediate = || -> Result<(), String> {
        let changes = cfgdiff::diff(running, new)?;
        match cfgdiff::classify(&changes) {
            Apply::RebootNeeded => Err(format!(
                "this config change can't be applied in immediate mode\ndiff:\n{}",
                unified(running, new)
            )),
            _ => Ok(()),
        }
    };
    let (mode, details, reason) = match mode {
        ApplyMode::NoReboot | ApplyMode::Try => {
            immediate().map_err(Status::invalid_argument)?;
            (
                mode,
                "Applied configuration without a reboot",
                String::new(),
            )
        }
        ApplyMode::Staged => (
            mode,
            "Staged configuration to be applied after the next reboot",
            String::new(),
        ),
        ApplyMode::Auto => match immediate() {
            Ok(()) => (
                ApplyMode::NoReboot,
                "Applied configuration without a reboot",
                String::new(),
            ),
            Err(e) => (
                ApplyMode::Reboot,
                "Applied configuration with a reboot",
                format!(": {e}"),
            ),
        },
        ApplyMode::Reboot => (mode, "Applied configuration with a reboot", String::new()),
    };
    Ok(Decision {
        mode,
        details: details.to_owned(),
        reason,
    })
}

/// The dry-run reply text (`v1alpha1_server.go` L269-285, `generateDiff` L351-362):
/// the AUTO reason is not appended.
pub fn dry_run_details(d: &Decision, running: &str, new: &str) -> String {
    let diff = match unified(running, new) {
        s if s.is_empty() => "No changes.".to_owned(),
        s => s,
    };
    format!(
        "Dry run summary:\n{} (skipped in dry-run).\nConfig diff:\n\n{diff}",
        d.details
    )
}

/// Details of an accepted TRY apply (`constants.ConfigTryTimeout` is 1 m when the
/// request names none; Go prints durations as `1m0s`).
pub fn try_details(d: &Decision, timeout: std::time::Duration) -> String {
    let s = timeout.as_secs();
    let go = match (s / 60, s % 60) {
        (0, s) => format!("{s}s"),
        (m, s) => format!("{m}m{s}s"),
    };
    format!(
        "{}\nThe config is applied in 'try' mode and will be automatically reverted back in {go}",
        d.details
    )
}

/// A unified diff of two texts (one hunk spanning both: line-exact, as
/// `pkg/machinery/textdiff` marks lines), empty when they are equal.
pub fn unified(a: &str, b: &str) -> String {
    if a == b {
        return String::new();
    }
    let (x, y): (Vec<&str>, Vec<&str>) = (a.lines().collect(), b.lines().collect());
    // Longest common subsequence table; configs are a few hundred lines.
    let mut l = vec![vec![0u32; y.len() + 1]; x.len() + 1];
    for i in (0..x.len()).rev() {
        for j in (0..y.len()).rev() {
            l[i][j] = if x[i] == y[j] {
                l[i + 1][j + 1] + 1
            } else {
                l[i + 1][j].max(l[i][j + 1])
            };
        }
    }
    let mut out = format!("--- a\n+++ b\n@@ -1,{} +1,{} @@\n", x.len(), y.len());
    let (mut i, mut j) = (0, 0);
    while i < x.len() || j < y.len() {
        if i < x.len() && j < y.len() && x[i] == y[j] {
            out += &format!(" {}\n", x[i]);
            (i, j) = (i + 1, j + 1);
        } else if j == y.len() || (i < x.len() && l[i + 1][j] >= l[i][j + 1]) {
            out += &format!("-{}\n", x[i]);
            i += 1;
        } else {
            out += &format!("+{}\n", y[j]);
            j += 1;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const RUNNING: &str = "version: v1alpha1\nmachine:\n  type: worker\n  nodeLabels: {a: b}\n";

    #[test]
    fn modes_resolve_and_refuse_as_talos_does() {
        let label = RUNNING.replace("{a: b}", "{a: c}");
        let env = RUNNING.replace("  type", "  env: {A: b}\n  type");
        let auto = decide(ApplyMode::Auto, RUNNING, &label).unwrap();
        assert_eq!(auto.mode, ApplyMode::NoReboot);
        assert_eq!(auto.details, "Applied configuration without a reboot");
        let auto = decide(ApplyMode::Auto, RUNNING, &env).unwrap();
        assert_eq!(auto.mode, ApplyMode::Reboot);
        assert!(
            auto.reason.starts_with(
                ": this config change can't be applied in immediate mode\ndiff:\n--- a\n+++ b\n"
            ),
            "{}",
            auto.reason
        );
        for m in [ApplyMode::NoReboot, ApplyMode::Try] {
            let e = decide(m, RUNNING, &env).unwrap_err();
            assert_eq!(e.code(), tonic::Code::InvalidArgument);
            assert!(e.message().contains("+  env: {A: b}"), "{}", e.message());
        }
        let staged = decide(ApplyMode::Staged, RUNNING, &env).unwrap();
        assert_eq!(
            staged.details,
            "Staged configuration to be applied after the next reboot"
        );
        assert_eq!(
            dry_run_details(&auto, RUNNING, RUNNING),
            "Dry run summary:\nApplied configuration with a reboot (skipped in dry-run).\nConfig diff:\n\nNo changes."
        );
        let t = decide(ApplyMode::Try, RUNNING, &label).unwrap();
        assert!(
            try_details(&t, std::time::Duration::from_secs(60)).ends_with("reverted back in 1m0s")
        );
    }

    #[test]
    fn the_diff_marks_removed_and_added_lines() {
        assert_eq!(
            unified("a\nb\nc\n", "a\nx\nc\n"),
            "--- a\n+++ b\n@@ -1,3 +1,3 @@\n a\n-b\n+x\n c\n"
        );
        assert_eq!(unified("a\n", "a\n"), "");
    }
}
