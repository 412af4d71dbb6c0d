//! A fleet-wide pacer for connection attempts (`--ramp-up R`): attempts are spaced 1/R apart, so
//! no second ever sees more than R of them, however many devices want to connect at once (a
//! start, or every device after a broker restart).

use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

#[derive(Debug)]
pub struct Pacer {
    spacing: Duration,
    next: Mutex<Option<Instant>>,
}

impl Pacer {
    /// At most `per_second` slots a second.
    pub fn new(per_second: u32) -> Pacer {
        Pacer {
            spacing: Duration::from_secs(1) / per_second.max(1),
            next: Mutex::new(None),
        }
    }

    /// Reserves the next free slot and returns when it starts. Slots are handed out in order;
    /// wait with `sleep_until` (cancelling the wait wastes the slot, which only slows others).
    pub fn reserve(&self) -> Instant {
        let now = Instant::now();
        let mut next = self.next.lock().unwrap_or_else(|p| p.into_inner());
        let slot = match *next {
            Some(n) if n > now => n,
            _ => now,
        };
        *next = Some(slot + self.spacing);
        slot
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn slots_are_spaced_evenly() {
        let p = Pacer::new(4);
        let t0 = Instant::now();
        let slots: Vec<_> = (0..9).map(|_| p.reserve() - t0).collect();
        assert_eq!(slots[0], Duration::ZERO);
        assert_eq!(slots[4], Duration::from_secs(1));
        assert_eq!(slots[8], Duration::from_secs(2));
        // After a quiet spell, the next slot is now again.
        tokio::time::sleep(Duration::from_secs(10)).await;
        assert_eq!(p.reserve() - t0, Duration::from_secs(10));
    }
}
