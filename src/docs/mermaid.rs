//! A tiny Mermaid flowchart writer that cannot emit invalid syntax from profile
//! text: node ids are reduced to `[A-Za-z0-9_]`, node labels are always quoted with
//! `"` escaped, edge labels keep only characters that need no quoting.

use std::fmt::Write;

/// A node id made from arbitrary text (`pve-ms01-01` → `pve_ms01_01`), with a
/// prefix so ids never start with a digit or collide with keywords such as `end`.
pub fn id(prefix: &str, raw: &str) -> String {
    let body: String = raw
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    format!("{prefix}_{body}")
}

/// A quoted label; lines joined with `<br/>`.
fn label(lines: &[&str]) -> String {
    let text: Vec<String> = lines.iter().map(|l| l.replace('"', "#quot;")).collect();
    format!("\"{}\"", text.join("<br/>"))
}

/// Edge labels are written bare, so keep only characters Mermaid never reads as syntax.
fn edge_label(s: &str) -> String {
    s.chars()
        .filter(|c| c.is_ascii_alphanumeric() || " .,/:+=_".contains(*c))
        .collect()
}

pub struct Graph {
    out: String,
    depth: usize,
}

impl Graph {
    /// `dir`: `TB` or `LR`.
    pub fn new(dir: &str) -> Self {
        Self {
            out: format!("graph {dir}\n"),
            depth: 1,
        }
    }

    fn line(&mut self, s: &str) {
        let _ = writeln!(self.out, "{}{s}", "    ".repeat(self.depth));
    }

    pub fn node(&mut self, id: &str, lines: &[&str]) {
        self.line(&format!("{id}[{}]", label(lines)));
    }

    pub fn subgraph(&mut self, id: &str, title: &str, body: impl FnOnce(&mut Self)) {
        self.line(&format!("subgraph {id} [{}]", label(&[title])));
        self.depth += 1;
        body(self);
        self.depth -= 1;
        self.line("end");
    }

    /// `arrow`: `-->`, `-.->` or `<-->`.
    pub fn edge(&mut self, from: &str, arrow: &str, to: &str, text: Option<&str>) {
        match text.map(edge_label).filter(|t| !t.trim().is_empty()) {
            Some(t) => self.line(&format!("{from} {arrow}|{t}| {to}")),
            None => self.line(&format!("{from} {arrow} {to}")),
        }
    }

    pub fn style(&mut self, id: &str, fill: &str) {
        self.line(&format!("style {id} fill:{fill}"));
    }

    /// The diagram as a fenced Markdown block.
    pub fn fenced(&self) -> String {
        format!("```mermaid\n{}```\n", self.out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_and_labels_are_safe() {
        assert_eq!(id("h", "pve-ms01-01"), "h_pve_ms01_01");
        assert_eq!(id("n", "end"), "n_end");
        let mut g = Graph::new("TB");
        g.subgraph("s_1", "VLAN 16 \"mgmt\"", |g| {
            g.node("a", &["x [y]", "10.8.16.1"])
        });
        g.edge("a", "-->", "b", Some("VLAN |16| [x]"));
        let text = g.fenced();
        assert!(
            text.contains("subgraph s_1 [\"VLAN 16 #quot;mgmt#quot;\"]"),
            "{text}"
        );
        assert!(text.contains("a[\"x [y]<br/>10.8.16.1\"]"), "{text}");
        assert!(text.contains("a -->|VLAN 16 x| b"), "{text}");
        assert!(text.contains("    end\n"), "{text}");
    }
}
