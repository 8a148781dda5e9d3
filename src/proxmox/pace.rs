//! When to ask about a running download again. PVE has no completion notice, so
//! the end is found by polling; the task log's wget percent lines (read anyway to
//! show progress) bracket the transfer rate, hence the end, and the polls go where
//! the end can be instead of at a fixed cadence.
//!
//! A percent `p` first in the answer to a read sent at `sent` and received at
//! `seen`, absent from the read before (sent at `before`), was reached in
//! `(before, seen]`; at a constant rate the download ends in
//! `(before·100/p, seen·100/p]`; a read without the next line (due at share `f`)
//! sent at `sent` moves the start to `sent/f`. Before that window nothing is asked; from its start
//! the polls begin at the shortest interval and grow by a quarter, never past the
//! window's end, so the end is found within a quarter of the time since the window
//! opened. wget prints a line per 32 MiB, so the window stays wide (~10 % of the
//! download); halving what was left of it found the end 55 ms late on average at 20x
//! (simulated over ends from 1.5 to 2.6 s), growing by a quarter 11 ms, for about
//! seven more polls. Once the last percent line before the end is in, the log is
//! not read again (`wants_log`): each poll is the status alone. Without a percent
//! yet they double from four times the shortest (a download takes seconds at least).

use std::time::Duration;

use super::client::{PollPolicy, WgetProgress};

#[derive(Debug, Clone)]
pub struct DownloadPace {
    policy: PollPolicy,
    /// The previous wait of the plain cadence (it doubles).
    cadence: Duration,
    /// The next wait inside the window (it grows by a quarter).
    inside: Duration,
    /// The highest percent seen so far.
    percent: u8,
    /// Whether the log can still show a percent line before the end.
    more_lines: bool,
    /// When the last read of the log was sent (time since dispatch).
    last_read: Duration,
    /// Where the end can be at a constant rate: (not before, at the latest).
    window: Option<(Duration, Duration)>,
}

impl DownloadPace {
    pub fn new(policy: PollPolicy) -> Self {
        Self {
            policy,
            cadence: policy.first * 2,
            inside: policy.first,
            percent: 0,
            more_lines: true,
            last_read: Duration::ZERO,
            window: None,
        }
    }

    /// A read of the log sent at `sent` and answered at `seen` (times since
    /// dispatch) said `progress` (`None`: no line yet).
    pub fn read(&mut self, sent: Duration, seen: Duration, progress: Option<WgetProgress>) {
        let Some(w) = progress else {
            self.last_read = sent;
            return;
        };
        let p = w.percent;
        if (1..=100).contains(&p) && p > self.percent {
            let scale = |t: Duration| t * 100 / u32::from(p);
            let (lo, hi) = (scale(self.last_read), scale(seen));
            self.window = Some(match self.window {
                Some((l, h)) => (l.max(lo), h.min(hi).max(l.max(lo))),
                None => (lo, hi),
            });
            self.percent = p;
            // A narrower window: its search starts over.
            self.inside = self.policy.first;
        }
        // The next line was not there when this read left: the end is later still.
        if let (Some(f), Some((l, h))) = (w.next_line, self.window)
            && f > 0.0
        {
            let lo = sent.div_f64(f);
            if lo > l {
                self.window = Some((lo, h.max(lo)));
                self.inside = self.policy.first;
            }
        }
        self.more_lines &= w.next_line.is_some();
        self.last_read = sent;
    }

    /// Whether a poll should read the log too: not once the last percent line
    /// before the end is in (only the end is left, which the status shows).
    pub fn wants_log(&self) -> bool {
        self.more_lines
    }

    /// How long to wait, at `now` (time since dispatch), before the next poll.
    pub fn next_wait(&mut self, now: Duration) -> Duration {
        let first = self.policy.first;
        match self.window {
            // Not done before the window: no poll before it, yet not blind for long.
            Some((lo, _)) if lo > now + first => (lo - now).min(self.policy.max * 4),
            Some((_, hi)) => {
                let mut wait = self.inside;
                if hi > now + first {
                    wait = wait.min(hi - now);
                }
                self.inside = (self.inside * 5 / 4).min(self.policy.max);
                wait
            }
            None => {
                self.cadence = (self.cadence * 2).min(self.policy.max);
                self.cadence
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    /// A percent line whose successor's share is unknown (no size in the log).
    fn pct(percent: u8) -> Option<WgetProgress> {
        Some(WgetProgress {
            percent,
            next_line: Some(1.0),
        })
    }

    fn policy() -> PollPolicy {
        PollPolicy {
            first: ms(12),
            max: ms(250),
        }
    }

    #[test]
    fn without_a_percent_it_doubles_up_to_the_cap() {
        let mut p = DownloadPace::new(policy());
        let waits: Vec<u64> = (0..5)
            .map(|_| p.next_wait(ms(0)).as_millis() as u64)
            .collect();
        assert_eq!(waits, [48, 96, 192, 250, 250]);
    }

    #[test]
    fn a_percent_puts_the_next_poll_at_the_earliest_end() {
        let mut p = DownloadPace::new(policy());
        p.read(ms(340), ms(350), None);
        // 25 % reached after 340 ms (that read's request left then) and by 600 ms:
        // the end is in (1.36 s, 2.4 s].
        p.read(ms(590), ms(600), pct(25));
        assert_eq!(p.next_wait(ms(600)), ms(760));
        // From the window's start: the shortest interval, growing by a quarter.
        let waits: Vec<u64> = [1360, 1372, 1387, 1405, 1428, 1457, 1493]
            .into_iter()
            .map(|t| p.next_wait(ms(t)).as_millis() as u64)
            .collect();
        assert_eq!(waits, [12, 15, 18, 23, 29, 36, 45]);
        // Never past the window's end; past it (the rate dropped) still growing.
        assert_eq!(p.next_wait(ms(2380)), ms(20));
        assert_eq!(p.next_wait(ms(2400)).as_millis(), 71);
    }

    /// The run that found a 2.0 s download 70 ms late when the polls halved the
    /// window (reads every ~0.2-0.6 s; wget prints 29 %, 58 %, 87 % of 110 MiB).
    #[test]
    fn the_end_is_found_soon_after_the_earliest_end_of_a_wide_window() {
        let mut p = DownloadPace::new(PollPolicy {
            first: Duration::from_micros(12_500),
            max: ms(250),
        });
        let end = ms(2000);
        let mut now = ms(0);
        let (mut shown, mut reads, mut polls) = (0, 0, 0);
        loop {
            now += p.next_wait(now);
            polls += 1;
            if now >= end {
                break;
            }
            let done = now.as_secs_f64() / end.as_secs_f64();
            // One line per full 32 MiB, its percent truncated, as wget prints it.
            let lines = (110.0 * done) as u64 / 32;
            if lines > 0 {
                shown = (lines * 32 * 100 / 110) as u8;
            }
            let answered = now + ms(1);
            if p.wants_log() {
                reads += 1;
                let next = (lines + 1) * 32;
                let progress = WgetProgress {
                    percent: shown,
                    next_line: (next < 110).then(|| next as f64 / 110.0),
                };
                p.read(now, answered, (shown > 0).then_some(progress));
            }
            now = answered;
        }
        assert!(now - end <= ms(25), "found {:?} late", now - end);
        // After the 87 % line (the last before the end) only the status is asked.
        assert!(reads < polls - 3, "{reads} log reads in {polls} polls");
    }

    #[test]
    fn a_missing_next_line_moves_the_window_start() {
        let mut p = DownloadPace::new(policy());
        // 29 % (32 of 110 MiB) by 1 s and the 64 MiB line not yet: the end is after
        // 1 s * 110/64 = 1.719 s, not after 0 s (the read before had no line).
        p.read(
            ms(1000),
            ms(1000),
            Some(WgetProgress {
                percent: 29,
                next_line: Some(64.0 / 110.0),
            }),
        );
        assert_eq!(p.next_wait(ms(1000)).as_millis(), 718);
        assert!(p.wants_log());
        // The last line before the end: only the status from now on.
        p.read(
            ms(1800),
            ms(1800),
            Some(WgetProgress {
                percent: 87,
                next_line: None,
            }),
        );
        assert!(!p.wants_log());
    }

    #[test]
    fn later_percents_narrow_the_window() {
        let mut p = DownloadPace::new(policy());
        p.read(ms(500), ms(500), None);
        p.read(ms(1000), ms(1000), pct(50)); // end in (1.0 s, 2.0 s]
        p.read(ms(1500), ms(1500), pct(75)); // end in (1.333 s, 2.0 s]
        assert_eq!(p.next_wait(ms(1500)), ms(12));
        assert_eq!(p.next_wait(ms(1512)), ms(15));
        p.read(ms(1600), ms(1600), pct(80)); // end in (1.875 s, 2.0 s]
        assert_eq!(p.next_wait(ms(1600)), ms(275));
        // A percent that is not higher, or nonsense, changes nothing.
        p.read(ms(1700), ms(1700), pct(80));
        p.read(ms(1800), ms(1800), pct(0));
        assert_eq!(p.next_wait(ms(1876)), ms(12));
    }

    #[test]
    fn a_long_wait_before_the_window_is_capped() {
        let mut p = DownloadPace::new(policy());
        p.read(ms(1000), ms(1000), None);
        p.read(ms(2000), ms(2000), pct(1)); // end after 100 s
        assert_eq!(p.next_wait(ms(2000)), ms(1000));
    }
}
