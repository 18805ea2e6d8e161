//! The message rate a node reports: a moving average over the last minute, sampled once per
//! heartbeat from a counter the hot path only increments.

use std::collections::VecDeque;
use std::time::Duration;

/// How far back the average looks.
pub const WINDOW: Duration = Duration::from_secs(60);

/// Samples of a monotonically increasing counter, over at most [`WINDOW`].
#[derive(Debug, Default)]
pub struct RateWindow {
    /// (elapsed since start, counter value), oldest first.
    samples: VecDeque<(Duration, u64)>,
}

impl RateWindow {
    /// Records the counter's value at `at` (time since some fixed start).
    pub fn record(&mut self, at: Duration, total: u64) {
        self.samples.push_back((at, total));
        while let Some(&(oldest, _)) = self.samples.front() {
            if at.saturating_sub(oldest) > WINDOW && self.samples.len() > 2 {
                self.samples.pop_front();
            } else {
                break;
            }
        }
    }

    /// Events per second between the oldest and newest sample; 0 before two samples exist.
    pub fn per_second(&self) -> f64 {
        match (self.samples.front(), self.samples.back()) {
            (Some(&(t0, c0)), Some(&(t1, c1))) if t1 > t0 => {
                c1.saturating_sub(c0) as f64 / (t1 - t0).as_secs_f64()
            }
            _ => 0.0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    #[test]
    fn averages_over_what_it_has_seen() {
        let mut w = RateWindow::default();
        assert_eq!(w.per_second(), 0.0);
        w.record(secs(0), 0);
        assert_eq!(w.per_second(), 0.0);
        w.record(secs(1), 10);
        w.record(secs(2), 30);
        assert_eq!(w.per_second(), 15.0);
    }

    #[test]
    fn forgets_what_is_older_than_a_minute() {
        let mut w = RateWindow::default();
        w.record(secs(0), 0);
        w.record(secs(1), 6000); // a burst, long ago
        for s in 2..=100 {
            w.record(secs(s), 6000 + (s - 1) * 2);
        }
        // Only the steady 2/s of the last minute counts.
        assert!((w.per_second() - 2.0).abs() < 1e-9, "{}", w.per_second());
    }
}
