//! A device's timer: tokio's `Interval` with its missed-tick behaviour `Burst` (a late tick is
//! made up, so the rate stays honest), plus a period that can change while it runs (scenario
//! stages change the fleet's rate) without losing the device's place in the spread.

use std::pin::Pin;
use std::time::Duration;

use tokio::time::{Instant, Sleep};

pub struct Ticker {
    sleep: Pin<Box<Sleep>>,
    period: Duration,
}

impl Ticker {
    /// Ticks at `first`, then every `period`.
    pub fn new(first: Instant, period: Duration) -> Ticker {
        Ticker {
            sleep: Box::pin(tokio::time::sleep_until(first)),
            period,
        }
    }

    /// Waits for the next tick; returns the instant it was meant for. Cancel-safe.
    pub async fn tick(&mut self) -> Instant {
        (&mut self.sleep).await;
        let at = self.sleep.deadline();
        self.sleep.as_mut().reset(at + self.period);
        at
    }

    /// From now on every `period`: the next tick comes one new period after the last one (now,
    /// if that has passed), so a device keeps its place in the fleet's spread.
    pub fn set_period(&mut self, period: Duration) {
        let last = self.sleep.deadline() - self.period;
        self.period = period;
        let next = (last + period).max(Instant::now());
        self.sleep.as_mut().reset(next);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn ticks_keep_their_schedule_and_a_new_period_counts_from_the_last_tick() {
        let t0 = Instant::now();
        let mut t = Ticker::new(t0 + Duration::from_millis(100), Duration::from_secs(1));
        assert_eq!(t.tick().await - t0, Duration::from_millis(100));
        assert_eq!(t.tick().await - t0, Duration::from_millis(1100));
        t.set_period(Duration::from_millis(250));
        assert_eq!(t.tick().await - t0, Duration::from_millis(1350));
        // A longer period after a long quiet: not a burst to catch up, the next tick is now.
        tokio::time::sleep(Duration::from_secs(5)).await;
        t.set_period(Duration::from_millis(100));
        let now = Instant::now();
        assert_eq!(t.tick().await, now);
        assert_eq!(t.tick().await - now, Duration::from_millis(100));
    }
}
