//! When to ask about a running download again. PVE has no completion notice, so
//! the end is found by polling; the task log's wget percent lines (read anyway to
//! show progress) bracket the transfer rate, hence the end, and the polls go where
//! the end can be instead of at a fixed cadence.
//!
//! A percent `p` first in the answer to a read sent at `sent` and received at
//! `seen`, absent from the read before (sent at `before`), was reached in
//! `(before, seen]`; at a constant rate the download ends in
//! `(before·100/p, seen·100/p]`. Before that window nothing is asked; inside it the
//! polls halve the time left to its end; past it (the rate dropped) the polls start
//! over from the shortest interval, doubling. Without a percent yet they double from
//! four times the shortest (a download takes seconds at least).

use std::time::Duration;

use super::client::PollPolicy;

#[derive(Debug, Clone)]
pub struct DownloadPace {
    policy: PollPolicy,
    /// The previous wait of the plain cadence (it doubles).
    cadence: Duration,
    /// The highest percent seen so far.
    percent: u8,
    /// When the last read of the log was sent (time since dispatch).
    last_read: Duration,
    /// Where the end can be at a constant rate: (not before, at the latest).
    window: Option<(Duration, Duration)>,
    /// The window passed without the end: the cadence started over.
    past: bool,
}

impl DownloadPace {
    pub fn new(policy: PollPolicy) -> Self {
        Self {
            policy,
            cadence: policy.first * 2,
            percent: 0,
            last_read: Duration::ZERO,
            window: None,
            past: false,
        }
    }

    /// A read of the log sent at `sent` and answered at `seen` (times since
    /// dispatch) said `percent` (`None`: no line yet).
    pub fn read(&mut self, sent: Duration, seen: Duration, percent: Option<u8>) {
        if let Some(p) = percent.filter(|p| (1..=100).contains(p) && *p > self.percent) {
            let scale = |t: Duration| t * 100 / u32::from(p);
            let (lo, hi) = (scale(self.last_read), scale(seen));
            self.window = Some(match self.window {
                Some((l, h)) => (l.max(lo), h.min(hi).max(l.max(lo))),
                None => (lo, hi),
            });
            self.percent = p;
        }
        self.last_read = sent;
    }

    /// How long to wait, at `now` (time since dispatch), before the next poll.
    pub fn next_wait(&mut self, now: Duration) -> Duration {
        let first = self.policy.first;
        match self.window {
            // Not done before the window: no poll before it, yet not blind for long.
            Some((lo, _)) if lo > now + first => (lo - now).min(self.policy.max * 4),
            Some((_, hi)) if hi > now + first => ((hi - now) / 2).max(first),
            Some((_, hi)) if hi > now => hi - now,
            window => {
                if window.is_some() && !self.past {
                    self.past = true;
                    self.cadence = first / 2;
                }
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
        p.read(ms(590), ms(600), Some(25));
        assert_eq!(p.next_wait(ms(600)), ms(760));
        // Inside the window the polls halve what is left of it.
        assert_eq!(p.next_wait(ms(1400)), ms(500));
        assert_eq!(p.next_wait(ms(2300)), ms(50));
        assert_eq!(p.next_wait(ms(2390)), ms(10));
        // Past it (the rate dropped): from the shortest interval again, doubling.
        assert_eq!(p.next_wait(ms(2400)), ms(12));
        assert_eq!(p.next_wait(ms(2412)), ms(24));
    }

    #[test]
    fn later_percents_narrow_the_window() {
        let mut p = DownloadPace::new(policy());
        p.read(ms(500), ms(500), None);
        p.read(ms(1000), ms(1000), Some(50)); // end in (1.0 s, 2.0 s]
        p.read(ms(1500), ms(1500), Some(75)); // end in (1.333 s, 2.0 s]
        assert_eq!(p.next_wait(ms(1500)), ms(250));
        p.read(ms(1600), ms(1600), Some(80)); // end in (1.875 s, 2.0 s]
        assert_eq!(p.next_wait(ms(1600)), ms(275));
        // A percent that is not higher, or nonsense, changes nothing.
        p.read(ms(1700), ms(1700), Some(80));
        p.read(ms(1800), ms(1800), Some(0));
        assert_eq!(p.next_wait(ms(1876)), ms(62));
    }

    #[test]
    fn a_long_wait_before_the_window_is_capped() {
        let mut p = DownloadPace::new(policy());
        p.read(ms(1000), ms(1000), None);
        p.read(ms(2000), ms(2000), Some(1)); // end after 100 s
        assert_eq!(p.next_wait(ms(2000)), ms(1000));
    }
}
