//! Human-readable forms of lint results: the text report and the code table.

use std::fmt::Write;

use super::{RULES, Report};

/// One block per finding, then a summary line naming `source` (the profile path).
pub fn render_text(report: &Report, source: &str) -> String {
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
    let verdict = if report.has_errors() { "FAIL" } else { "ok" };
    let _ = writeln!(
        s,
        "{source}: {verdict}: {} error(s), {} warning(s), {} info",
        report.errors, report.warnings, report.infos
    );
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
         | code | severity | rule |\n|---|---|---|\n",
    );
    for r in RULES {
        let _ = writeln!(s, "| {} | {} | {} |", r.code, r.severity.as_str(), r.title);
    }
    s
}
