//! When a device tries to connect again, and when it stops trying.
//!
//! Design: pure state, no I/O and no clock of its own (times are passed in), so every rule is
//! unit-tested in microseconds. Three gates space the attempts, so a broker hiccup never becomes
//! a reconnect storm: exponential backoff with full jitter ([`Backoff`]), at most one attempt per
//! second per client id (AWS IoT Core's limit, [`attempt_at`]), and the fleet-wide `--ramp-up`
//! pacer (`crate::ratelimit`).

use std::time::Duration;

use rand::{Rng, RngExt};
use tokio::time::Instant;

use crate::cause::{Cause, Kind};

/// AWS IoT Core accepts one CONNECT per second per client id.
pub const MIN_ATTEMPT_SPACING: Duration = Duration::from_secs(1);
/// A session the server closes within this long after CONNACK counts as a short session.
pub const SHORT_SESSION: Duration = Duration::from_secs(10);
/// This many short sessions in a row: another connection is taking over our client id.
pub const TAKEOVER_SESSIONS: u32 = 3;

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
    max: Duration,
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

/// Watches for another connection taking over our client id: the server closing our sessions
/// again and again within seconds of connecting.
#[derive(Debug, Clone, Default)]
pub struct TakeoverWatch {
    short_sessions: u32,
}

impl TakeoverWatch {
    /// An established session ended for `kind` after `lasted`; true when that makes
    /// [`TAKEOVER_SESSIONS`] short sessions in a row.
    pub fn on_drop(&mut self, kind: Kind, lasted: Duration) -> bool {
        if kind == Kind::ClosedByServer && lasted < SHORT_SESSION {
            self.short_sessions += 1;
        } else {
            self.short_sessions = 0;
        }
        self.short_sessions >= TAKEOVER_SESSIONS
    }

    pub fn short_sessions(&self) -> u32 {
        self.short_sessions
    }
}

/// What a device does after a failed attempt or a lost connection.
#[derive(Debug, Clone, PartialEq)]
pub enum Next {
    /// Try again after this wait.
    RetryAfter(Duration),
    /// Stop for good, for this cause.
    GiveUp(Cause),
}

/// The reconnect policy of one device.
#[derive(Debug, Clone)]
pub struct Policy {
    pub backoff: Backoff,
    pub takeover: TakeoverWatch,
}

impl Policy {
    pub fn new(min: Duration, max: Duration) -> Policy {
        Policy {
            backoff: Backoff::new(min, max),
            takeover: TakeoverWatch::default(),
        }
    }

    /// Decides after `cause`: `session` is how long the connection had lasted when it was lost,
    /// or None when the attempt itself failed.
    pub fn after(&mut self, id: &str, cause: &Cause, session: Option<Duration>, rng: &mut impl Rng) -> Next {
        if cause.permanent() {
            return Next::GiveUp(cause.clone());
        }
        if let Some(lasted) = session
            && self.takeover.on_drop(cause.kind, lasted)
        {
            return Next::GiveUp(Cause::new(
                Kind::ClientIdInUse,
                format!(
                    "client id {id} is in use by another connection: the broker closed {} sessions in a row \
                     within seconds of connecting (or a policy closes it: check iot:Connect/iot:Publish)",
                    self.takeover.short_sessions()
                ),
            ));
        }
        Next::RetryAfter(self.backoff.next(rng))
    }

    /// A connection succeeded.
    pub fn connected(&mut self) {
        self.backoff.reset();
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
    fn closed() -> Cause {
        Cause::new(Kind::ClosedByServer, "closed".into())
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

    #[test]
    fn three_short_sessions_in_a_row_mean_a_takeover() {
        let mut p = Policy::new(secs(1), secs(30));
        let mut r = rng();
        let short = Some(secs(2));
        assert!(matches!(
            p.after("f1", &closed(), short, &mut r),
            Next::RetryAfter(_)
        ));
        assert!(matches!(
            p.after("f1", &closed(), short, &mut r),
            Next::RetryAfter(_)
        ));
        match p.after("f1", &closed(), short, &mut r) {
            Next::GiveUp(c) => {
                assert_eq!(c.kind, Kind::ClientIdInUse);
                assert!(c.detail.contains("client id f1 is in use"), "{}", c.detail);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_long_session_or_another_cause_resets_the_takeover_watch() {
        let mut w = TakeoverWatch::default();
        assert!(!w.on_drop(Kind::ClosedByServer, secs(1)));
        assert!(!w.on_drop(Kind::ClosedByServer, secs(1)));
        assert!(!w.on_drop(Kind::ClosedByServer, secs(60)));
        assert!(!w.on_drop(Kind::ClosedByServer, secs(1)));
        assert!(!w.on_drop(Kind::Timeout, secs(1)));
        assert_eq!(w.short_sessions(), 0);
    }

    #[test]
    fn permanent_causes_give_up_at_once_and_failed_attempts_never_count_as_takeover() {
        let mut p = Policy::new(secs(1), secs(30));
        let mut r = rng();
        let untrusted = Cause::new(Kind::ServerNotTrusted, "x".into());
        assert_eq!(
            p.after("f1", &untrusted, None, &mut r),
            Next::GiveUp(untrusted.clone())
        );
        for _ in 0..5 {
            assert!(matches!(
                p.after("f1", &closed(), None, &mut r),
                Next::RetryAfter(_)
            ));
        }
    }
}
