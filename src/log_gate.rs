//! A gate for per-device warnings: a few lines per window, then one note and silence until the
//! next window, so a fleet-wide outage logs a handful of lines, not thousands. The summary
//! counts everything by cause either way.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::stats::lock;

const LINES_PER_WINDOW: u64 = 10;
const WINDOW: Duration = Duration::from_secs(10);

#[derive(Debug, Default)]
pub struct LogGate {
    window: Mutex<Option<(Instant, u64)>>,
}

impl LogGate {
    /// Whether a per-device line may be logged now.
    pub fn may_log(&self) -> bool {
        self.may_log_at(Instant::now())
    }

    fn may_log_at(&self, now: Instant) -> bool {
        let mut w = lock(&self.window);
        match &mut *w {
            Some((start, n)) if now.duration_since(*start) < WINDOW => {
                *n += 1;
                if *n == LINES_PER_WINDOW + 1 {
                    tracing::warn!("more devices report problems; the summary counts them by cause");
                }
                *n <= LINES_PER_WINDOW
            }
            _ => {
                *w = Some((now, 1));
                true
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ten_lines_per_window_then_silence_until_the_next() {
        let gate = LogGate::default();
        let t0 = Instant::now();
        let allowed = (0..25).filter(|_| gate.may_log_at(t0)).count();
        assert_eq!(allowed, 10);
        assert!(gate.may_log_at(t0 + WINDOW));
    }
}
