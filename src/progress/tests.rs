//! Unit tests of the progress reporter, on a fake clock and in-memory outputs: plain
//! lines, JSON lines, terminal bars, and reporting from many threads at once.

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use time::OffsetDateTime;

use super::*;

/// A clock the test moves by hand.
#[derive(Default)]
struct FakeClock(Mutex<Duration>);

impl FakeClock {
    fn advance(&self, by: Duration) {
        *self.0.lock().unwrap() += by;
    }
}

impl Clock for FakeClock {
    fn elapsed(&self) -> Duration {
        *self.0.lock().unwrap()
    }
    fn now(&self) -> OffsetDateTime {
        // 2026-11-28T17:00:00Z plus the elapsed time.
        OffsetDateTime::from_unix_timestamp(1_795_885_200).unwrap() + self.elapsed()
    }
}

/// A writer whose bytes the test can read afterwards.
#[derive(Clone, Default)]
struct Buf(Arc<Mutex<Vec<u8>>>);

impl Write for Buf {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Buf {
    fn text(&self) -> String {
        String::from_utf8(self.0.lock().unwrap().clone()).unwrap()
    }
}

fn script(r: &Reporter, clock: &FakeClock) {
    r.started(None, "preflight");
    clock.advance(Duration::from_millis(1500));
    r.done(None, "preflight");
    r.started(Some("talos-k8s-01"), "vm");
    r.started(Some("talos-k8s-02"), "vm");
    clock.advance(Duration::from_secs(2));
    r.progress(Some("talos-k8s-01"), "vm", "uploading ISO");
    clock.advance(Duration::from_secs(10));
    r.done(Some("talos-k8s-01"), "vm");
    r.failed(Some("talos-k8s-02"), "vm", &"VMID 121 exists");
    r.skipped(Some("talos-k8s-03"), "vm", "already running");
}

#[test]
fn plain_lines_are_timestamped_with_elapsed_times() {
    let clock = Arc::new(FakeClock::default());
    let buf = Buf::default();
    let r = Reporter::new(Box::new(Plain::new(Box::new(buf.clone()))), clock.clone());
    script(&r, &clock);
    assert_eq!(
        buf.text(),
        "\
2026-11-28T17:00:00Z cluster preflight: started
2026-11-28T17:00:01.5Z cluster preflight: done in 1.5s
2026-11-28T17:00:01.5Z talos-k8s-01 vm: started
2026-11-28T17:00:01.5Z talos-k8s-02 vm: started
2026-11-28T17:00:03.5Z talos-k8s-01 vm: uploading ISO
2026-11-28T17:00:13.5Z talos-k8s-01 vm: done in 12.0s
2026-11-28T17:00:13.5Z talos-k8s-02 vm: FAILED after 12.0s: VMID 121 exists
2026-11-28T17:00:13.5Z talos-k8s-03 vm: skipped: already running
"
    );
}

/// The error printed at the end carries the fix; the failed row shows only its
/// first line, so the fix is not printed twice.
#[test]
fn a_failed_row_shows_the_first_line_only() {
    let clock = Arc::new(FakeClock::default());
    let buf = Buf::default();
    let r = Reporter::new(Box::new(Plain::new(Box::new(buf.clone()))), clock.clone());
    r.started(Some("n1"), "vm");
    r.failed(
        Some("n1"),
        "vm",
        &"VMID 121 exists\n  fix: pick another VMID",
    );
    let text = buf.text();
    assert!(
        text.ends_with("vm: FAILED after 0.0s: VMID 121 exists\n"),
        "{text}"
    );
    assert!(!text.contains("fix:"), "{text}");
}

#[test]
fn bars_only_where_they_can_be_drawn_without_logs_tearing_them() {
    use std::ffi::OsStr;
    let xterm = Some(OsStr::new("xterm-256color"));
    let dumb = Some(OsStr::new("dumb"));
    assert!(wants_bars(ProgressMode::Auto, true, xterm, false));
    assert!(!wants_bars(ProgressMode::Auto, false, xterm, false));
    assert!(!wants_bars(ProgressMode::Auto, true, dumb, false));
    assert!(!wants_bars(ProgressMode::Auto, true, xterm, true));
    assert!(!wants_bars(ProgressMode::Bars, true, dumb, false));
    assert!(!wants_bars(ProgressMode::Bars, true, xterm, true));
    assert!(wants_bars(ProgressMode::Bars, false, None, false));
    assert!(!wants_bars(ProgressMode::Plain, true, xterm, false));
}

/// A message for a row nobody started opens it, so the row has a start to end; the
/// same message again is not news.
#[test]
fn a_progress_message_opens_its_row() {
    let clock = Arc::new(FakeClock::default());
    let buf = Buf::default();
    let r = Reporter::new(Box::new(Plain::new(Box::new(buf.clone()))), clock.clone());
    r.progress(Some("n1"), "provision", "VM 120: created");
    r.progress(Some("n1"), "provision", "VM 120: created");
    r.done(Some("n1"), "provision");
    assert_eq!(
        buf.text(),
        "\
2026-11-28T17:00:00Z n1 provision: started
2026-11-28T17:00:00Z n1 provision: VM 120: created
2026-11-28T17:00:00Z n1 provision: done in 0.0s
"
    );
}

/// Rows still open when the run ends (a failure cancelled them) end as failed.
#[test]
fn rows_left_open_end_when_the_reporter_drops() {
    let clock = Arc::new(FakeClock::default());
    let buf = Buf::default();
    let r = Reporter::new(Box::new(Json::new(Box::new(buf.clone()))), clock.clone());
    r.started(Some("n2"), "install");
    r.started(Some("n1"), "install");
    r.done(Some("n2"), "install");
    clock.advance(Duration::from_secs(3));
    let clone = r.clone();
    drop(r);
    assert_eq!(buf.text().lines().count(), 3, "not while a handle lives");
    drop(clone);
    let text = buf.text();
    let last: serde_json::Value = serde_json::from_str(text.lines().last().unwrap()).unwrap();
    assert_eq!(
        (
            &last["node"],
            &last["event"],
            &last["message"],
            &last["elapsedMs"]
        ),
        (
            &serde_json::json!("n1"),
            &serde_json::json!("failed"),
            &serde_json::json!(NOT_FINISHED),
            &serde_json::json!(3000)
        )
    );
    assert_eq!(text.lines().count(), 4);
}

/// Notes from deep inside a row's work land on that row; outside any row, nowhere.
/// The same message twice in a row is said once.
#[tokio::test]
async fn notes_land_on_the_row_whose_work_makes_them() {
    let clock = Arc::new(FakeClock::default());
    let buf = Buf::default();
    let r = Reporter::new(Box::new(Plain::new(Box::new(buf.clone()))), clock.clone());
    note("nobody listens");
    r.started(Some("n1"), "install");
    r.progress(Some("n1"), "install", "retry 1/5 after: 595");
    let (a, b) = tokio::join!(
        r.in_row(Some("n1"), "install", async {
            note("retry 1/5 after: 595");
            1
        }),
        r.in_row(None, "provision", async {
            let spawned = tokio::spawn(carry(async { note("ISO download on pve-1: 40%") }));
            spawned.await.unwrap();
            2
        })
    );
    assert_eq!((a, b), (1, 2));
    assert_eq!(
        buf.text(),
        "\
2026-11-28T17:00:00Z n1 install: started
2026-11-28T17:00:00Z n1 install: retry 1/5 after: 595
2026-11-28T17:00:00Z cluster provision: started
2026-11-28T17:00:00Z cluster provision: ISO download on pve-1: 40%
"
    );
}

#[test]
fn json_lines_have_stable_fields() {
    let clock = Arc::new(FakeClock::default());
    let buf = Buf::default();
    let r = Reporter::new(Box::new(Json::new(Box::new(buf.clone()))), clock.clone());
    script(&r, &clock);
    let lines: Vec<serde_json::Value> = buf
        .text()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 8);
    assert_eq!(
        lines[0],
        serde_json::json!({"format": 1, "ts": "2026-11-28T17:00:00Z", "node": null,
            "stage": "preflight", "event": "started", "elapsedMs": 0})
    );
    assert_eq!(
        lines[6],
        serde_json::json!({"format": 1, "ts": "2026-11-28T17:00:13.5Z", "node": "talos-k8s-02",
            "stage": "vm", "event": "failed", "message": "VMID 121 exists", "elapsedMs": 12000})
    );
    let events: Vec<&str> = lines.iter().map(|l| l["event"].as_str().unwrap()).collect();
    assert_eq!(
        events,
        [
            "started", "done", "started", "started", "progress", "done", "failed", "skipped"
        ]
    );
}

#[test]
fn clones_report_from_many_threads_without_interleaving() {
    let clock = Arc::new(FakeClock::default());
    let buf = Buf::default();
    let r = Reporter::new(Box::new(Json::new(Box::new(buf.clone()))), clock);
    let handles: Vec<_> = (0..8)
        .map(|i| {
            let r = r.clone();
            std::thread::spawn(move || {
                let node = format!("n{i}");
                for j in 0..50 {
                    r.progress(
                        Some(&node),
                        "apply",
                        format!("waiting for the Talos API ({j})"),
                    );
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    let text = buf.text();
    // Each thread's first progress message opens its row: 8 `started`, 400 messages.
    assert_eq!(text.lines().count(), 408);
    assert!(
        text.lines()
            .all(|l| serde_json::from_str::<serde_json::Value>(l).is_ok())
    );
}

/// Records everything indicatif writes (a transcript, not a screen).
#[derive(Debug, Clone, Default)]
struct Transcript(Arc<Mutex<String>>);

impl indicatif::TermLike for Transcript {
    fn width(&self) -> u16 {
        100
    }
    fn move_cursor_up(&self, _: usize) -> std::io::Result<()> {
        Ok(())
    }
    fn move_cursor_down(&self, _: usize) -> std::io::Result<()> {
        Ok(())
    }
    fn move_cursor_right(&self, _: usize) -> std::io::Result<()> {
        Ok(())
    }
    fn move_cursor_left(&self, _: usize) -> std::io::Result<()> {
        Ok(())
    }
    fn write_line(&self, s: &str) -> std::io::Result<()> {
        let mut t = self.0.lock().unwrap();
        t.push_str(s);
        t.push('\n');
        Ok(())
    }
    fn write_str(&self, s: &str) -> std::io::Result<()> {
        self.0.lock().unwrap().push_str(s);
        Ok(())
    }
    fn clear_line(&self) -> std::io::Result<()> {
        Ok(())
    }
    fn flush(&self) -> std::io::Result<()> {
        Ok(())
    }
}

#[test]
fn bars_show_each_node_stage_and_its_outcome() {
    let term = Transcript::default();
    let target = indicatif::ProgressDrawTarget::term_like(Box::new(term.clone()));
    let clock = Arc::new(FakeClock::default());
    let bars = Bars::new(target, false).without_ticks();
    let r = Reporter::new(Box::new(bars), clock.clone());
    script(&r, &clock);
    let prompt = r.suspend(|| "answered");
    assert_eq!(prompt, "answered");
    let screen = term.0.lock().unwrap().clone();
    assert!(
        screen.contains("✓ cluster        preflight    done"),
        "{screen}"
    );
    assert!(
        screen.contains("✓ talos-k8s-01   vm           done"),
        "{screen}"
    );
    assert!(
        screen.contains("✗ talos-k8s-02   vm           failed: VMID 121 exists"),
        "{screen}"
    );
    assert!(
        screen.contains("- talos-k8s-03   vm           skipped: already running"),
        "{screen}"
    );
    assert!(
        !screen.contains('\u{1b}'),
        "no colour codes when colour is off"
    );
}
