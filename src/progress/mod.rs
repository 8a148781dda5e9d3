//! Progress reporting for long runs: per-node, per-stage events, rendered as indicatif
//! bars on a terminal, timestamped plain lines otherwise, or a JSON-lines stream for
//! automation (`--output json`, fields documented in docs/events.md).
//!
//! A [`Reporter`] is an `Arc` handle: clone it into every concurrent task. Events are
//! rendered under one lock, in the order they were reported, so lines never interleave.
//! The clock is injected so renderings are testable.
//!
//! Rendering only: it must not decide anything about the run it reports.

mod render;

use std::borrow::Cow;
use std::collections::HashMap;
use std::fmt::Display;
use std::io::IsTerminal;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use time::OffsetDateTime;

pub use render::{Bars, EVENTS_FORMAT, Json, Plain, Render, timestamp};

/// What happened to a stage.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    Started,
    Progress(String),
    Done,
    Failed(String),
    Skipped(String),
}

impl Kind {
    /// The stable name used in plain and JSON output.
    pub fn name(&self) -> &'static str {
        match self {
            Kind::Started => "started",
            Kind::Progress(_) => "progress",
            Kind::Done => "done",
            Kind::Failed(_) => "failed",
            Kind::Skipped(_) => "skipped",
        }
    }

    pub fn message(&self) -> Option<&str> {
        match self {
            Kind::Progress(m) | Kind::Failed(m) | Kind::Skipped(m) => Some(m),
            Kind::Started | Kind::Done => None,
        }
    }
}

/// One step of one node (or of the whole cluster when `node` is `None`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub node: Option<String>,
    /// Short stage name (`vm`, `apply`, `bootstrap`, …), stable for automation.
    pub stage: Cow<'static, str>,
    pub kind: Kind,
    /// Time since this node's stage started (zero for `Started` or if it never did).
    pub elapsed: Duration,
}

/// Time source: monotonic for elapsed times, wall clock for timestamps.
pub trait Clock: Send + Sync {
    fn elapsed(&self) -> Duration;
    fn now(&self) -> OffsetDateTime;
}

pub struct SystemClock {
    start: Instant,
}

impl Default for SystemClock {
    fn default() -> Self {
        Self {
            start: Instant::now(),
        }
    }
}

impl Clock for SystemClock {
    fn elapsed(&self) -> Duration {
        self.start.elapsed()
    }
    fn now(&self) -> OffsetDateTime {
        OffsetDateTime::now_utc()
    }
}

/// How to show progress when not emitting JSON (`--progress`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum ProgressMode {
    /// Bars on a terminal, plain lines otherwise.
    #[default]
    Auto,
    Bars,
    Plain,
}

type Key = (Option<String>, Cow<'static, str>);

struct Inner {
    clock: Arc<dyn Clock>,
    /// Kept outside the lock: a prompt under `suspend` must not block other tasks' events.
    multi: Option<indicatif::MultiProgress>,
    state: Mutex<State>,
}

struct State {
    render: Box<dyn Render>,
    started: HashMap<Key, Duration>,
}

#[derive(Clone)]
pub struct Reporter {
    inner: Arc<Inner>,
}

impl Reporter {
    pub fn new(render: Box<dyn Render>, clock: Arc<dyn Clock>) -> Self {
        let multi = render.multi();
        Self {
            inner: Arc::new(Inner {
                clock,
                multi,
                state: Mutex::new(State {
                    render,
                    started: HashMap::new(),
                }),
            }),
        }
    }

    /// The renderer the command line asks for: JSON lines on stdout for `--output json`,
    /// otherwise bars or plain lines on stderr. `NO_COLOR` turns colours off.
    pub fn select(json: bool, mode: ProgressMode) -> Self {
        let clock: Arc<dyn Clock> = Arc::new(SystemClock::default());
        let render: Box<dyn Render> = if json {
            Box::new(Json::new(Box::new(std::io::stdout())))
        } else {
            let bars = match mode {
                ProgressMode::Bars => true,
                ProgressMode::Plain => false,
                ProgressMode::Auto => std::io::stderr().is_terminal(),
            };
            if bars {
                let color = std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
                Box::new(Bars::new(indicatif::ProgressDrawTarget::stderr(), color))
            } else {
                Box::new(Plain::new(Box::new(std::io::stderr())))
            }
        };
        Self::new(render, clock)
    }

    pub fn emit(&self, node: Option<&str>, stage: impl Into<Cow<'static, str>>, kind: Kind) {
        let now = self.inner.clock.elapsed();
        let at = self.inner.clock.now();
        let stage = stage.into();
        let key: Key = (node.map(str::to_owned), stage.clone());
        let mut st = self
            .inner
            .state
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let elapsed = match kind {
            Kind::Started => {
                st.started.insert(key, now);
                Duration::ZERO
            }
            _ => st
                .started
                .get(&key)
                .map_or(Duration::ZERO, |s| now.saturating_sub(*s)),
        };
        let ev = Event {
            node: node.map(str::to_owned),
            stage,
            kind,
            elapsed,
        };
        st.render.event(at, &ev);
    }

    pub fn started(&self, node: Option<&str>, stage: impl Into<Cow<'static, str>>) {
        self.emit(node, stage, Kind::Started);
    }
    pub fn progress(
        &self,
        node: Option<&str>,
        stage: impl Into<Cow<'static, str>>,
        msg: impl Into<String>,
    ) {
        self.emit(node, stage, Kind::Progress(msg.into()));
    }
    pub fn done(&self, node: Option<&str>, stage: impl Into<Cow<'static, str>>) {
        self.emit(node, stage, Kind::Done);
    }
    pub fn failed(
        &self,
        node: Option<&str>,
        stage: impl Into<Cow<'static, str>>,
        err: &dyn Display,
    ) {
        self.emit(node, stage, Kind::Failed(err.to_string()));
    }
    pub fn skipped(
        &self,
        node: Option<&str>,
        stage: impl Into<Cow<'static, str>>,
        reason: impl Into<String>,
    ) {
        self.emit(node, stage, Kind::Skipped(reason.into()));
    }

    /// Run `f` (a prompt) with the bars hidden, so they do not draw over it.
    pub fn suspend<R>(&self, f: impl FnOnce() -> R) -> R {
        match &self.inner.multi {
            Some(m) => m.suspend(f),
            None => f(),
        }
    }
}

#[cfg(test)]
mod tests;
