//! Progress reporting for long runs: per-node, per-stage events, rendered as indicatif
//! bars on a terminal, timestamped plain lines otherwise, or a JSON-lines stream for
//! automation (`--output json`, fields documented in docs/events.md).
//!
//! A [`Reporter`] is an `Arc` handle: clone it into every concurrent task. Events are
//! rendered under one lock, in the order they were reported, so lines never interleave.
//! The clock is injected so renderings are testable.
//!
//! Every row that starts also ends: a progress message opens its row if nothing did,
//! and rows still open when the last handle drops (a failure elsewhere cancelled
//! them) end as failed, so no spinner is left turning and no JSON row dangles.
//!
//! Rendering only: it must not decide anything about the run it reports.

mod render;

use std::borrow::Cow;
use std::collections::{HashMap, HashSet};
use std::ffi::OsStr;
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
    /// Bars on a terminal, plain lines otherwise (and with -v or TERM=dumb).
    #[default]
    Auto,
    /// Bars, except on TERM=dumb and with -v, where plain lines.
    Bars,
    Plain,
}

/// The message of a row that was still open when the run ended.
pub const NOT_FINISHED: &str = "not finished: the run stopped before this step ended";

/// Whether to draw bars rather than plain lines. A dumb terminal cannot move the
/// cursor (indicatif would draw nothing at all), and log lines (`-v`) written to the
/// same stderr would tear redrawn bars apart, so both get plain lines.
pub fn wants_bars(mode: ProgressMode, stderr_tty: bool, term: Option<&OsStr>, logs: bool) -> bool {
    if term == Some(OsStr::new("dumb")) || logs {
        return false;
    }
    match mode {
        ProgressMode::Bars => true,
        ProgressMode::Plain => false,
        ProgressMode::Auto => stderr_tty,
    }
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
    /// Rows started and not yet ended.
    open: HashSet<Key>,
    /// Each row's last progress message: a wait that sees the same state again is
    /// not news.
    said: HashMap<Key, String>,
}

impl State {
    fn emit(&mut self, now: Duration, at: OffsetDateTime, key: Key, kind: Kind) {
        if let Kind::Progress(m) = &kind {
            if self.said.get(&key) == Some(m) {
                return;
            }
            if !self.open.contains(&key) {
                self.emit(now, at, key.clone(), Kind::Started);
            }
            self.said.insert(key.clone(), m.clone());
        }
        let elapsed = match kind {
            Kind::Started => {
                self.started.insert(key.clone(), now);
                self.open.insert(key.clone());
                self.said.remove(&key);
                Duration::ZERO
            }
            _ => self
                .started
                .get(&key)
                .map_or(Duration::ZERO, |s| now.saturating_sub(*s)),
        };
        if matches!(kind, Kind::Done | Kind::Failed(_) | Kind::Skipped(_)) {
            self.open.remove(&key);
        }
        let (node, stage) = key;
        let ev = Event {
            node,
            stage,
            kind,
            elapsed,
        };
        self.render.event(at, &ev);
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        let now = self.clock.elapsed();
        let at = self.clock.now();
        let st = self.state.get_mut().unwrap_or_else(PoisonError::into_inner);
        let mut open: Vec<Key> = st.open.iter().cloned().collect();
        open.sort();
        for key in open {
            st.emit(now, at, key, Kind::Failed(NOT_FINISHED.to_owned()));
        }
    }
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
                    open: HashSet::new(),
                    said: HashMap::new(),
                }),
            }),
        }
    }

    /// The renderer the command line asks for: JSON lines on stdout for `--output json`,
    /// otherwise bars or plain lines on stderr ([`wants_bars`]; `verbose` is -v).
    /// `NO_COLOR` turns colours off.
    pub fn select(json: bool, mode: ProgressMode, verbose: bool) -> Self {
        let clock: Arc<dyn Clock> = Arc::new(SystemClock::default());
        let render: Box<dyn Render> = if json {
            Box::new(Json::new(Box::new(std::io::stdout())))
        } else {
            let logs = verbose || std::env::var_os("TALOS_PVE_LOG").is_some();
            let term = std::env::var_os("TERM");
            if wants_bars(mode, std::io::stderr().is_terminal(), term.as_deref(), logs) {
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
        let key: Key = (node.map(str::to_owned), stage.into());
        self.inner
            .state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .emit(now, at, key, kind);
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

    /// Run `fut` as the work of one row: [`note`]s made while it runs (however deep
    /// in the Proxmox, Talos or Kubernetes clients) become that row's progress.
    pub async fn in_row<F: std::future::Future>(
        &self,
        node: Option<&str>,
        stage: impl Into<Cow<'static, str>>,
        fut: F,
    ) -> F::Output {
        let row = Row {
            rep: self.clone(),
            node: node.map(str::to_owned),
            stage: stage.into(),
        };
        ROW.scope(row, fut).await
    }

    /// Run `f` (a prompt) with the bars hidden, so they do not draw over it.
    pub fn suspend<R>(&self, f: impl FnOnce() -> R) -> R {
        match &self.inner.multi {
            Some(m) => m.suspend(f),
            None => f(),
        }
    }
}

/// The row the current task works for ([`Reporter::in_row`]).
#[derive(Clone)]
struct Row {
    rep: Reporter,
    node: Option<String>,
    stage: Cow<'static, str>,
}

tokio::task_local! {
    static ROW: Row;
}

/// Detail for the row the current task works for (ISO download percent, a retry,
/// what a wait is waiting for); nothing outside [`Reporter::in_row`]. The clients
/// that wait stay free of progress plumbing: they only say what they see.
pub fn note(msg: impl Into<String>) {
    let _ = ROW.try_with(|r| r.rep.progress(r.node.as_deref(), r.stage.clone(), msg));
}

/// `fut` as a row of its own under the current task's reporter (a download on one
/// host inside the cluster's `provision`): started now, done or failed with `fut`.
/// Without a current row, just `fut`.
pub async fn own_row<T, E: Display, F: std::future::Future<Output = Result<T, E>>>(
    node: &str,
    stage: &'static str,
    fut: F,
) -> Result<T, E> {
    let Ok(rep) = ROW.try_with(|r| r.rep.clone()) else {
        return fut.await;
    };
    rep.started(Some(node), stage);
    let r = rep.in_row(Some(node), stage, fut).await;
    match &r {
        Ok(_) => rep.done(Some(node), stage),
        Err(e) => rep.failed(Some(node), stage, e),
    }
    r
}

/// `fut` working for the current task's row, for a task spawned on its behalf
/// (task-locals do not cross `spawn`).
pub fn carry<F: std::future::Future>(fut: F) -> impl std::future::Future<Output = F::Output> {
    let row = ROW.try_with(Row::clone).ok();
    async move {
        match row {
            Some(row) => ROW.scope(row, fut).await,
            None => fut.await,
        }
    }
}

#[cfg(test)]
mod tests;
