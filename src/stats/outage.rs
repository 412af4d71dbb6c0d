//! The story of a fleet's outages, for the report: how often connected devices lost their
//! connection unplanned and all came back, the longest such outage (how long, how many devices
//! were down at once, and how long from the first device back to the last), the longest any
//! one device was without a connection, and the devices still down at the end.
//!
//! Design: pure state behind one lock, taken only when a connection drops or comes back (never
//! per event), with times passed in, so the rules are unit-tested without a clock. A planned
//! disconnect (a scenario stage, `--faults`) is not an outage and is not recorded here.

use std::sync::Mutex;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use super::{Quantiles, lock};

/// What a report says of the outages (each sink's, and the merged shards': episodes and devices
/// add up, durations are the longest of any shard).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Outages {
    /// Outages over: connected devices dropped, and every one of them came back.
    pub episodes: u64,
    /// The longest outage, from the first drop to the last device back (or to the end of the
    /// run, when it was still going on).
    pub longest_s: f64,
    /// The most devices without a connection at once in it.
    pub devices_down: u64,
    /// In it, from the first device back to the last: how long the fleet took to recover
    /// once the link was back.
    pub recovery_s: f64,
    /// The longest any device was without a connection, and which one.
    pub longest_device_offline_s: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub longest_device: Option<String>,
    /// Devices that had dropped and were not back when the run ended.
    pub still_down: u64,
    /// Events taken while their device was down after a drop, and how long they waited
    /// (intended send time to written).
    #[serde(default)]
    pub waited_ms: Quantiles,
}

impl Outages {
    /// Nothing dropped unplanned.
    pub fn is_quiet(&self) -> bool {
        self.episodes == 0 && self.still_down == 0 && self.longest_device.is_none()
    }

    /// Adds another sink's or shard's outages into these.
    pub fn absorb(&mut self, o: &Outages) {
        self.episodes += o.episodes;
        self.still_down += o.still_down;
        if o.longest_s > self.longest_s {
            self.longest_s = o.longest_s;
            self.devices_down = o.devices_down;
            self.recovery_s = o.recovery_s;
        }
        if o.longest_device_offline_s > self.longest_device_offline_s {
            self.longest_device_offline_s = o.longest_device_offline_s;
            self.longest_device = o.longest_device.clone();
        }
    }
}

#[derive(Debug, Default)]
struct State {
    /// Devices down now (dropped, not back).
    down: u64,
    /// The outage under way: when it began, the most devices down, the first device back.
    start: Option<Instant>,
    peak: u64,
    first_back: Option<Instant>,
    episodes: u64,
    /// The longest outage over: (how long, devices down, recovery).
    longest: Option<(Duration, u64, Duration)>,
    longest_device: Option<(Duration, String)>,
}

/// One sink's outages as they happen.
#[derive(Debug, Default)]
pub struct OutageLog {
    state: Mutex<State>,
}

impl OutageLog {
    /// A connected device lost its connection unplanned at `at`.
    pub fn lost(&self, at: Instant) {
        let mut s = lock(&self.state);
        if s.down == 0 {
            s.start = Some(at);
            s.peak = 0;
            s.first_back = None;
        }
        s.down += 1;
        s.peak = s.peak.max(s.down);
    }

    /// Device `id`, down since a drop, is back at `at` after `offline`.
    pub fn back(&self, at: Instant, id: &str, offline: Duration) {
        let mut s = lock(&self.state);
        if s.longest_device.as_ref().is_none_or(|(d, _)| offline > *d) {
            s.longest_device = Some((offline, id.to_string()));
        }
        if s.down == 0 {
            return;
        }
        s.down -= 1;
        let first_back = *s.first_back.get_or_insert(at);
        if s.down > 0 {
            return;
        }
        s.episodes += 1;
        let lasted = at.saturating_duration_since(s.start.take().unwrap_or(at));
        let recovery = at.saturating_duration_since(first_back);
        if s.longest.is_none_or(|(d, _, _)| lasted > d) {
            s.longest = Some((lasted, s.peak, recovery));
        }
    }

    /// The outages as of `now` (an outage still going on counts to `now`).
    pub fn figures(&self, now: Instant) -> Outages {
        let s = lock(&self.state);
        let ongoing = s.start.map(|start| {
            let recovery = s
                .first_back
                .map_or(Duration::ZERO, |b| now.saturating_duration_since(b));
            (now.saturating_duration_since(start), s.peak, recovery)
        });
        let longest = match (s.longest, ongoing) {
            (Some(a), Some(b)) => Some(if b.0 > a.0 { b } else { a }),
            (a, b) => a.or(b),
        };
        let (lasted, peak, recovery) = longest.unwrap_or_default();
        let secs = |d: Duration| super::round2(d.as_secs_f64());
        Outages {
            episodes: s.episodes,
            longest_s: secs(lasted),
            devices_down: peak,
            recovery_s: secs(recovery),
            longest_device_offline_s: s.longest_device.as_ref().map_or(0.0, |(d, _)| secs(*d)),
            longest_device: s.longest_device.as_ref().map(|(_, id)| id.clone()),
            still_down: s.down,
            waited_ms: Quantiles::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(t0: Instant, n: u64) -> Instant {
        t0 + Duration::from_millis(n)
    }

    #[test]
    fn an_outage_is_told_from_first_drop_to_last_device_back() {
        let t0 = Instant::now();
        let log = OutageLog::default();
        // Three devices drop within 100 ms; the link is back at 40 s; the last is back at 42.5 s.
        for (n, _) in [(0, "a"), (50, "b"), (100, "c")] {
            log.lost(ms(t0, n));
        }
        log.back(ms(t0, 40_000), "a", Duration::from_millis(40_000));
        log.back(ms(t0, 41_000), "b", Duration::from_millis(40_950));
        let during = log.figures(ms(t0, 41_500));
        assert_eq!((during.episodes, during.still_down), (0, 1), "still going on");
        assert_eq!(during.longest_s, 41.5);
        log.back(ms(t0, 42_500), "c", Duration::from_millis(42_400));
        let f = log.figures(ms(t0, 60_000));
        assert_eq!(f.episodes, 1);
        assert_eq!((f.longest_s, f.devices_down, f.recovery_s), (42.5, 3, 2.5));
        assert_eq!(f.longest_device_offline_s, 42.4);
        assert_eq!(f.longest_device.as_deref(), Some("c"));
        assert_eq!(f.still_down, 0);
        // A short blip later does not replace the longest outage, and counts as one more.
        log.lost(ms(t0, 70_000));
        log.back(ms(t0, 71_000), "a", Duration::from_secs(1));
        let f = log.figures(ms(t0, 80_000));
        assert_eq!((f.episodes, f.longest_s, f.devices_down), (2, 42.5, 3));
    }

    #[test]
    fn shards_add_episodes_and_keep_the_longest() {
        let mut a = Outages {
            episodes: 2,
            longest_s: 10.0,
            devices_down: 50,
            recovery_s: 1.0,
            longest_device_offline_s: 10.0,
            longest_device: Some("a".into()),
            ..Default::default()
        };
        let b = Outages {
            episodes: 1,
            longest_s: 41.0,
            devices_down: 100,
            recovery_s: 3.0,
            longest_device_offline_s: 40.0,
            longest_device: Some("b".into()),
            still_down: 1,
            ..Default::default()
        };
        a.absorb(&b);
        assert_eq!((a.episodes, a.still_down), (3, 1));
        assert_eq!((a.longest_s, a.devices_down, a.recovery_s), (41.0, 100, 3.0));
        assert_eq!(a.longest_device.as_deref(), Some("b"));
        assert!(!a.is_quiet() && Outages::default().is_quiet());
    }
}
