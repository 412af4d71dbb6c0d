//! The fleet's recent connection drops, so a device can tell a drop of its own (a policy or a
//! take-over aimed at it) from a network or broker event that dropped many devices at once;
//! and whether the rest of the fleet is connected now, or ever got a CONNACK at all.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use tokio::time::Instant;

use crate::stats::lock;

/// Drops are counted in buckets of this width…
pub const BUCKET: Duration = Duration::from_millis(100);
/// …over this many buckets (two minutes), in a ring.
const BUCKETS: usize = 1200;

#[derive(Debug)]
pub struct DropLog {
    start: Instant,
    /// (bucket number, drops in it), indexed by bucket number modulo BUCKETS.
    ring: Mutex<Vec<(u64, u32)>>,
    /// Devices connected now.
    online: AtomicU64,
    /// Some device got a CONNACK at least once.
    ever_connected: AtomicBool,
    /// Unplanned drops and how the devices came back, for the report.
    pub outages: std::sync::Arc<crate::stats::outage::OutageLog>,
}

impl DropLog {
    pub fn new(start: Instant) -> DropLog {
        DropLog {
            start,
            ring: Mutex::new(vec![(u64::MAX, 0); BUCKETS]),
            online: AtomicU64::new(0),
            ever_connected: AtomicBool::new(false),
            outages: Default::default(),
        }
    }

    /// A device got a CONNACK.
    pub fn up(&self) {
        self.online.fetch_add(1, Ordering::Relaxed);
        self.ever_connected.store(true, Ordering::Relaxed);
    }

    /// A connected device lost its connection.
    pub fn down(&self) {
        self.online.fetch_sub(1, Ordering::Relaxed);
    }

    /// Devices connected now.
    pub fn online(&self) -> u64 {
        self.online.load(Ordering::Relaxed)
    }

    /// Whether any device ever got a CONNACK.
    pub fn ever_connected(&self) -> bool {
        self.ever_connected.load(Ordering::Relaxed)
    }

    fn bucket(&self, at: Instant) -> u64 {
        (at.saturating_duration_since(self.start).as_millis() / BUCKET.as_millis()) as u64
    }

    /// A device's connection dropped (or an attempt failed) at `at`.
    pub fn record(&self, at: Instant) {
        let b = self.bucket(at);
        let mut ring = lock(&self.ring);
        let slot = &mut ring[(b % BUCKETS as u64) as usize];
        if slot.0 != b {
            *slot = (b, 0);
        }
        slot.1 += 1;
    }

    /// Drops recorded within `window` either side of `at`.
    pub fn around(&self, at: Instant, window: Duration) -> u64 {
        let (b, w) = (
            self.bucket(at),
            window.as_millis() as u64 / BUCKET.as_millis() as u64,
        );
        let range = b.saturating_sub(w)..=b + w;
        let ring = lock(&self.ring);
        range
            .clone()
            .map(|x| ring[(x % BUCKETS as u64) as usize])
            .filter(|(bucket, _)| range.contains(bucket))
            .map(|(_, n)| n as u64)
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drops_are_counted_around_a_moment_and_old_ones_fall_out_of_the_ring() {
        let t0 = Instant::now();
        let log = DropLog::new(t0);
        let ms = |n| t0 + Duration::from_millis(n);
        for n in [1000, 1050, 1900, 3500] {
            log.record(ms(n));
        }
        assert_eq!(log.around(ms(1000), Duration::from_secs(1)), 3);
        assert_eq!(log.around(ms(3500), Duration::from_millis(500)), 1);
        assert_eq!(log.around(ms(6000), Duration::from_secs(1)), 0);
        // Two minutes later a slot holds a new bucket: the old drops in it are gone.
        log.record(ms(121_000));
        assert_eq!(log.around(ms(121_000), Duration::from_secs(1)), 1);
        assert_eq!(
            log.around(ms(1000), Duration::from_secs(1)),
            1,
            "only the drop at 1.9 s is left"
        );
    }
}
