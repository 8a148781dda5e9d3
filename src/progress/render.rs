//! The three renderings of progress events: terminal bars, plain lines, JSON lines.

use std::collections::HashMap;
use std::io::Write;
use std::time::Duration;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde::Serialize;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use super::{Event, Kind};

/// Version of the JSON event stream; bumped only on incompatible changes.
pub const EVENTS_FORMAT: u32 = 1;

pub trait Render: Send {
    fn event(&mut self, at: OffsetDateTime, ev: &Event);
    /// The bar set to hide around prompts, for renderers that draw bars.
    fn multi(&self) -> Option<MultiProgress> {
        None
    }
}

pub fn timestamp(at: OffsetDateTime) -> String {
    at.format(&Rfc3339)
        .unwrap_or_else(|_| at.unix_timestamp().to_string())
}

/// A failure's first line: its row shows what failed; the full text with its
/// `fix:` line is printed once, as the command's error.
fn headline(e: &str) -> &str {
    e.lines().next().unwrap_or_default()
}

fn secs(d: Duration) -> String {
    format!("{:.1}s", d.as_secs_f64())
}

fn subject(ev: &Event) -> &str {
    ev.node.as_deref().unwrap_or("cluster")
}

/// `2026-11-28T17:58:06Z talos-k8s-01 vm: done in 12.3s` — for logs and non-terminals.
pub struct Plain {
    out: Box<dyn Write + Send>,
}

impl Plain {
    pub fn new(out: Box<dyn Write + Send>) -> Self {
        Self { out }
    }
}

impl Render for Plain {
    fn event(&mut self, at: OffsetDateTime, ev: &Event) {
        let what = match &ev.kind {
            Kind::Started => "started".to_owned(),
            Kind::Progress(m) => m.clone(),
            Kind::Done => format!("done in {}", secs(ev.elapsed)),
            Kind::Failed(e) => format!("FAILED after {}: {}", secs(ev.elapsed), headline(e)),
            Kind::Skipped(r) => format!("skipped: {r}"),
        };
        // A closed stderr must not abort the run it reports on.
        let _ = writeln!(
            self.out,
            "{} {} {}: {what}",
            timestamp(at),
            subject(ev),
            ev.stage
        );
        let _ = self.out.flush();
    }
}

/// One JSON object per line; field names are a contract (docs/events.md).
pub struct Json {
    out: Box<dyn Write + Send>,
}

impl Json {
    pub fn new(out: Box<dyn Write + Send>) -> Self {
        Self { out }
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct JsonEvent<'a> {
    format: u32,
    ts: String,
    node: Option<&'a str>,
    stage: &'a str,
    event: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    message: Option<&'a str>,
    elapsed_ms: u128,
}

impl Render for Json {
    fn event(&mut self, at: OffsetDateTime, ev: &Event) {
        let line = JsonEvent {
            format: EVENTS_FORMAT,
            ts: timestamp(at),
            node: ev.node.as_deref(),
            stage: &ev.stage,
            event: ev.kind.name(),
            message: ev.kind.message(),
            elapsed_ms: ev.elapsed.as_millis(),
        };
        if let Ok(s) = serde_json::to_string(&line) {
            let _ = writeln!(self.out, "{s}");
            let _ = self.out.flush();
        }
    }
}

/// One spinner per (node, stage) with its elapsed time; finished ones stay as a log.
pub struct Bars {
    multi: MultiProgress,
    bars: HashMap<(Option<String>, String), ProgressBar>,
    color: bool,
    tick: bool,
}

impl Bars {
    pub fn new(target: ProgressDrawTarget, color: bool) -> Self {
        Self {
            multi: MultiProgress::with_draw_target(target),
            bars: HashMap::new(),
            color,
            tick: true,
        }
    }

    /// No background ticking: every change draws synchronously (tests).
    pub fn without_ticks(mut self) -> Self {
        self.tick = false;
        self
    }

    fn style(&self, mark: &str) -> ProgressStyle {
        let t = if self.color {
            format!("{mark} {{prefix:.bold}} {{msg}} {{elapsed:.dim}}")
        } else {
            format!("{mark} {{prefix}} {{msg}} {{elapsed}}")
        };
        ProgressStyle::with_template(&t).unwrap_or_else(|_| ProgressStyle::default_spinner())
    }

    fn running_style(&self) -> ProgressStyle {
        let t = if self.color {
            "{spinner:.cyan} {prefix:.bold} {msg} {elapsed:.dim}"
        } else {
            "{spinner} {prefix} {msg} {elapsed}"
        };
        ProgressStyle::with_template(t).unwrap_or_else(|_| ProgressStyle::default_spinner())
    }

    fn bar(&mut self, ev: &Event) -> ProgressBar {
        let key = (ev.node.clone(), ev.stage.to_string());
        if let Some(b) = self.bars.get(&key) {
            return b.clone();
        }
        let b = self.multi.add(ProgressBar::new_spinner());
        b.set_style(self.running_style());
        b.set_prefix(format!("{:<14} {:<12}", subject(ev), ev.stage));
        if self.tick {
            b.enable_steady_tick(Duration::from_millis(120));
        }
        self.bars.insert(key, b.clone());
        b
    }
}

impl Render for Bars {
    fn event(&mut self, _at: OffsetDateTime, ev: &Event) {
        let b = self.bar(ev);
        let (mark, msg) = match &ev.kind {
            Kind::Started => {
                b.set_message("…");
                return;
            }
            Kind::Progress(m) => {
                b.set_message(m.clone());
                return;
            }
            Kind::Done => ("✓", "done".to_owned()),
            Kind::Failed(e) => ("✗", format!("failed: {}", headline(e))),
            Kind::Skipped(r) => ("-", format!("skipped: {r}")),
        };
        b.set_style(self.style(mark));
        b.finish_with_message(msg);
    }

    fn multi(&self) -> Option<MultiProgress> {
        Some(self.multi.clone())
    }
}
