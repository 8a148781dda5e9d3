//! Human-readable forms of lint results: the text report and the code table.

use std::fmt::Write;

use super::{RULES, Report};

/// One block per finding, acknowledged ones with their reasons, stale
/// acknowledgements, then a summary line naming `source` (the profile path):
/// what `talos-pve lint` prints.
pub fn render_text(report: &Report, source: &str) -> String {
    render(report, source, true)
}

/// [`render_text`] with acknowledged findings counted on one line instead of
/// listed: what other commands print, so accepted findings are not repeated.
pub fn render_brief(report: &Report, source: &str) -> String {
    render(report, source, false)
}

fn render(report: &Report, source: &str, list_acknowledged: bool) -> String {
    let mut s = String::new();
    for f in &report.findings {
        let _ = writeln!(
            s,
            "{}[{}] {}: {}",
            f.severity.as_str(),
            f.code,
            f.path,
            f.message
        );
        let _ = writeln!(s, "  fix: {}", f.fix);
    }
    if list_acknowledged {
        for a in &report.acknowledged {
            let f = &a.finding;
            let _ = writeln!(s, "acknowledged[{}] {}: {}", f.code, f.path, f.message);
            let _ = writeln!(s, "  reason: {}", a.reason);
        }
    } else if !report.acknowledged.is_empty() {
        let _ = writeln!(
            s,
            "{} acknowledged finding(s) (see `talos-pve lint`)",
            report.acknowledged.len()
        );
    }
    for st in &report.stale {
        let _ = writeln!(
            s,
            "stale acknowledgement {} ({}): it matches no finding",
            st.field, st.code
        );
        let _ = writeln!(
            s,
            "  fix: remove it from the profile, or correct its code, node or path"
        );
    }
    let verdict = if report.has_errors() { "FAIL" } else { "ok" };
    let _ = write!(
        s,
        "{source}: {verdict}: {} error(s), {} warning(s), {} info",
        report.errors, report.warnings, report.infos
    );
    if !report.acknowledged.is_empty() {
        let _ = write!(s, ", {} acknowledged", report.acknowledged.len());
    }
    if !report.stale.is_empty() {
        let _ = write!(s, ", {} stale acknowledgement(s)", report.stale.len());
    }
    s.push('\n');
    s
}

/// `docs/lint-codes.md`: every rule with its code, severity and title.
pub fn codes_markdown() -> String {
    let mut s = String::from(
        "# talos-pve lint codes\n\n\
         Generated from `src/lint` (`RULES`); `cargo test lint::tests::codes_doc` checks it,\n\
         `UPDATE_GOLDEN=1` rewrites it. Codes are stable and never reused.\n\n\
         Ranges: NET0xx static addresses, NET1xx pod CIDRs, NET2xx MetalLB pool,\n\
         NET3xx topology (networks, VLANs, MTUs, names, VMIDs), NET4xx cluster and routing,\n\
         NET5xx value formats (what Proxmox, Talos and Kubernetes accept).\n\n\
         Each finding carries the profile path of the offending field (e.g.\n\
         `nodes[0].workload.address`), a one-sentence reason and a fix. Errors make\n\
         `talos-pve lint` exit 1 and `talos-pve plan`/`docs` refuse; an unreadable or\n\
         invalid profile exits 2. NET307 takes the uplink MTU from the `infrastructure`\n\
         network (untagged on the same trunk), 1500 when there is none.\n\n\
         NET6xx come from the routing rehearsal (`talos-pve plan --paths`, docs/routing.md):\n\
         the flows the seed cares about, traced through the generated configs.\n\n\
         ## Acknowledging a finding\n\n\
         A warning or info you have read and accept can be acknowledged in the profile,\n\
         with a reason; it is then listed (with the reason) only by `talos-pve lint`,\n\
         and other commands print one line `N acknowledged finding(s)`:\n\n\
         ```yaml\n\
         lint:\n  \
         acknowledge:\n    \
         - code: NET403\n      \
         reason: one API endpoint is enough for this homelab\n    \
         - code: NET412              # narrowed: only the finding at or below this field\n      \
         path: timeServers\n      \
         reason: the gateway allows NTP to time.cloudflare.com\n    \
         - code: NET602\n      \
         path: routing.defaultRoute\n      \
         reason: the firewall allows both directions\n\
         ```\n\n\
         `code` and a non-empty `reason` are required. `path` narrows it to findings at\n\
         that field or below it, `node` to findings at that node's fields (`nodes[i]…`). An\n\
         acknowledgement that matches no finding is reported as stale. Errors cannot be\n\
         acknowledged: the profile is refused (exit 2) naming `lint.acknowledge[i].code`.\n\n\
         ## JSON (`talos-pve lint --output json`)\n\n\
         One object:\n\n\
         | field | type | meaning |\n|---|---|---|\n\
         | `errors`, `warnings`, `infos` | number | counts of `findings` by severity (acknowledged ones not included) |\n\
         | `findings` | list | each `severity` (`error` \\| `warning` \\| `info`), `code`, `path`, `message` (the reason), `fix` |\n\
         | `acknowledged` | list | findings the profile acknowledges: the fields of a finding plus `reason` (the acknowledgement's); absent when none |\n\
         | `stale` | list | acknowledgements that matched no finding: `field` (their place, `lint.acknowledge[2]`) and `code`; absent when none |\n\n\
         ## Codes\n\n\
         | code | severity | rule |\n|---|---|---|\n",
    );
    for r in RULES {
        let _ = writeln!(s, "| {} | {} | {} |", r.code, r.severity.as_str(), r.title);
    }
    s
}
