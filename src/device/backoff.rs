//! When a device may try to connect again. Design: pure, no clock of its own (times are passed
//! in), unit-tested in microseconds. Three gates space the attempts, so a broker hiccup never
//! becomes a reconnect storm: exponential backoff with full jitter ([`Backoff`]), at most one
//! attempt per second per client id (AWS IoT Core's limit, [`attempt_at`]), and the fleet-wide
//! `--ramp-up` pacer (`crate::ratelimit`).

use std::time::Duration;

use rand::{Rng, RngExt};
use tokio::time::Instant;

/// AWS IoT Core accepts one CONNECT per second per client id.
pub const MIN_ATTEMPT_SPACING: Duration = Duration::from_secs(1);
/// A session the server closes within this long after CONNACK counts as a short session; one
/// that lasted longer is healthy and resets the backoff.
pub const SHORT_SESSION: Duration = Duration::from_secs(10);

/// The earliest moment of the next attempt: when the backoff says, and never sooner than
/// [`MIN_ATTEMPT_SPACING`] after the previous attempt.
pub fn attempt_at(retry_at: Option<Instant>, last_attempt: Option<Instant>, now: Instant) -> Instant {
    let at = retry_at.unwrap_or(now);
    match last_attempt {
        Some(last) => at.max(last + MIN_ATTEMPT_SPACING),
        None => at,
    }
}

/// Exponential backoff with full jitter: the cap doubles with each failure in a row, from `min`
/// up to `max`, and the wait is drawn uniformly below the cap.
#[derive(Debug, Clone)]
pub struct Backoff {
    min: Duration,
    pub max: Duration,
    failures: u32,
}

impl Backoff {
    pub fn new(min: Duration, max: Duration) -> Backoff {
        Backoff {
            min,
            max,
            failures: 0,
        }
    }

    /// The cap of the next wait, counting one more failure.
    fn next_cap(&mut self) -> Duration {
        self.failures = self.failures.saturating_add(1);
        self.min
            .saturating_mul(1u32 << self.failures.min(16).saturating_sub(1))
            .min(self.max)
    }

    /// The wait before the next attempt.
    pub fn next(&mut self, rng: &mut impl Rng) -> Duration {
        self.next_cap().mul_f64(rng.random::<f64>())
    }

    /// A connection succeeded: start from `min` again.
    pub fn reset(&mut self) {
        self.failures = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand::rngs::Xoshiro256PlusPlus;

    fn rng() -> Xoshiro256PlusPlus {
        Xoshiro256PlusPlus::seed_from_u64(7)
    }
    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    #[test]
    fn the_cap_doubles_per_failure_and_saturates_at_max() {
        let mut b = Backoff::new(secs(1), secs(30));
        let caps: Vec<u64> = (0..7).map(|_| b.next_cap().as_secs()).collect();
        assert_eq!(caps, [1, 2, 4, 8, 16, 30, 30]);
        for _ in 0..100 {
            b.next_cap();
        }
        assert_eq!(b.next_cap(), secs(30), "no overflow after many failures");
        b.reset();
        assert_eq!(b.next_cap(), secs(1));
    }

    #[test]
    fn full_jitter_stays_below_the_cap_and_spreads() {
        let mut r = rng();
        let waits: Vec<Duration> = (0..200)
            .map(|_| {
                let mut b = Backoff::new(secs(4), secs(4));
                b.next(&mut r)
            })
            .collect();
        assert!(waits.iter().all(|w| *w <= secs(4)));
        assert!(waits.iter().any(|w| *w < secs(1)) && waits.iter().any(|w| *w > secs(3)));
    }

    #[test]
    fn attempts_for_one_client_id_are_a_second_apart() {
        let t0 = Instant::now();
        assert_eq!(attempt_at(None, None, t0), t0);
        assert_eq!(attempt_at(None, Some(t0), t0), t0 + MIN_ATTEMPT_SPACING);
        let later = t0 + secs(5);
        assert_eq!(attempt_at(Some(later), Some(t0), t0), later);
    }
}
