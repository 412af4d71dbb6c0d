//! A fleet-wide pacer for connection attempts (`--ramp-up R`): attempts are spaced 1/R apart, so
//! no second ever sees more than R of them, however many devices want to connect at once (a
//! start, or every device after a broker restart). Scenario stages change R while the fleet runs
//! (`ramp_up` in a stage).

use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

#[derive(Debug)]
pub struct Pacer {
    /// The spacing between slots (zero: no limit), and the next free slot.
    state: Mutex<(Duration, Option<Instant>)>,
}

impl Pacer {
    /// At most `per_second` slots a second; None for no limit (until [`Pacer::set_rate`]).
    pub fn new(per_second: Option<u32>) -> Pacer {
        Pacer {
            state: Mutex::new((spacing(per_second), None)),
        }
    }

    /// From the next reservation on, at most `per_second` slots a second.
    pub fn set_rate(&self, per_second: u32) {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        let (old, next) = *state;
        let new = spacing(Some(per_second));
        // Slots already handed out stay; the next one is spaced at the new rate from the last.
        state.0 = new;
        state.1 = next.map(|n| (n - old + new).max(now));
    }

    /// Reserves the next free slot and returns when it starts. Slots are handed out in order;
    /// wait with `sleep_until` (cancelling the wait wastes the slot, which only slows others).
    pub fn reserve(&self) -> Instant {
        let now = Instant::now();
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let slot = match state.1 {
            Some(n) if n > now => n,
            _ => now,
        };
        state.1 = Some(slot + state.0);
        slot
    }
}

fn spacing(per_second: Option<u32>) -> Duration {
    per_second.map_or(Duration::ZERO, |r| Duration::from_secs(1) / r.max(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn slots_are_spaced_evenly() {
        let p = Pacer::new(Some(4));
        let t0 = Instant::now();
        let slots: Vec<_> = (0..9).map(|_| p.reserve() - t0).collect();
        assert_eq!(slots[0], Duration::ZERO);
        assert_eq!(slots[4], Duration::from_secs(1));
        assert_eq!(slots[8], Duration::from_secs(2));
        // After a quiet spell, the next slot is now again.
        tokio::time::sleep(Duration::from_secs(10)).await;
        assert_eq!(p.reserve() - t0, Duration::from_secs(10));
        // A stage raises the rate: the next slot is a new spacing after the last one.
        p.set_rate(10);
        assert_eq!(p.reserve() - t0, Duration::from_millis(10_100));
        assert_eq!(p.reserve() - t0, Duration::from_millis(10_200));
        let unpaced = Pacer::new(None);
        assert_eq!(unpaced.reserve(), unpaced.reserve());
    }
}
