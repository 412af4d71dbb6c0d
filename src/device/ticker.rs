//! A device's timer: ticks at fixed instants, a late tick made up (like tokio's `Interval` with
//! `Burst`, so the rate stays honest), plus a period that can change while it runs (scenario
//! stages change the fleet's rate) without losing the device's place in the spread.
//!
//! tokio's timer is 1 ms-grained and never fires before its deadline: woken at its instant, a
//! device would send ~1 ms after it (the median `sched` lateness was 1.1 ms at 10,000 events/s),
//! and that delay would count in every latency measured from the intended instant. So the
//! timer is set [`EARLY`] before the instant. A tick still returns the instant it was meant for
//! (readings are taken at it, so a seeded run repeats exactly); the device measures an early
//! tick's latencies from the moment it fired ([`measured_from`]), never from an instant still
//! to come.

use std::pin::Pin;
use std::time::Duration;

use tokio::time::{Instant, Sleep};

/// How much before its instant a tick's timer is set: one grain of tokio's timer.
pub const EARLY: Duration = Duration::from_millis(1);

/// Where an event meant for `at` counts its latencies from: `at`, or now if `at` is still to
/// come (the tick fired early).
pub fn measured_from(at: Instant) -> Instant {
    at.min(Instant::now())
}

pub struct Ticker {
    sleep: Pin<Box<Sleep>>,
    /// The instant of the next tick.
    due: Instant,
    period: Duration,
}

fn wake_for(due: Instant) -> Instant {
    due.checked_sub(EARLY).unwrap_or(due)
}

impl Ticker {
    /// Ticks at `first`, then every `period`.
    pub fn new(first: Instant, period: Duration) -> Ticker {
        Ticker {
            sleep: Box::pin(tokio::time::sleep_until(wake_for(first))),
            due: first,
            period,
        }
    }

    /// Waits for the next tick (it comes up to [`EARLY`] before its instant); returns the
    /// instant it was meant for. Cancel-safe.
    pub async fn tick(&mut self) -> Instant {
        (&mut self.sleep).await;
        let at = self.due;
        self.due = at + self.period;
        self.sleep.as_mut().reset(wake_for(self.due));
        at
    }

    /// From now on every `period`: the next tick comes one new period after the last one (now,
    /// if that has passed), so a device keeps its place in the fleet's spread.
    pub fn set_period(&mut self, period: Duration) {
        let last = self.due - self.period;
        self.period = period;
        self.due = (last + period).max(Instant::now());
        self.sleep.as_mut().reset(wake_for(self.due));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// With tokio's clock paused, timers fire exactly when set: each tick comes `EARLY` before
    /// its instant, returns that instant, and its latencies count from the moment it fired.
    #[tokio::test(start_paused = true)]
    async fn ticks_keep_their_schedule_and_a_new_period_counts_from_the_last_tick() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let mut t = Ticker::new(t0 + ms(100), Duration::from_secs(1));
        let at = t.tick().await;
        assert_eq!(at - t0, ms(100));
        assert_eq!(Instant::now() - t0, ms(99));
        assert_eq!(measured_from(at) - t0, ms(99));
        assert_eq!(t.tick().await - t0, ms(1100));
        t.set_period(ms(250));
        assert_eq!(t.tick().await - t0, ms(1350));
        // A longer period after a long quiet: not a burst to catch up, the next tick is now.
        tokio::time::sleep(Duration::from_secs(5)).await;
        t.set_period(ms(100));
        let now = Instant::now();
        assert_eq!(t.tick().await, now);
        assert_eq!(t.tick().await - now, ms(100));
        assert_eq!(Instant::now() - now, ms(99));
    }

    /// A tick that fires late (the task was busy) returns the instant it was meant for, and
    /// the ticks it missed come at once, so the count over time stays right.
    #[tokio::test(start_paused = true)]
    async fn a_late_tick_returns_its_own_instant_and_missed_ones_follow() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let mut t = Ticker::new(t0 + ms(10), ms(10));
        tokio::time::sleep(ms(35)).await;
        let at = t.tick().await;
        assert_eq!(at - t0, ms(10));
        assert_eq!(measured_from(at), at);
        assert_eq!(t.tick().await - t0, ms(20));
        assert_eq!(t.tick().await - t0, ms(30));
        assert_eq!(Instant::now() - t0, ms(35));
        assert_eq!(t.tick().await - t0, ms(40));
        assert_eq!(Instant::now() - t0, ms(39));
    }
}
