//! Fleet-wide counters, shared by every device task.
//!
//! Devices only add; readers take a [`Snapshot`], a plain value that can be printed, written to a
//! report, or added to another shard's snapshot.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde::Serialize;

/// How many device ids a cause lists before it just counts.
const NAMES_PER_CAUSE: usize = 5;
/// Per-device warnings allowed per window, so a fleet-wide outage logs a few lines, not thousands.
const LOG_LINES_PER_WINDOW: u64 = 10;
const LOG_WINDOW: Duration = Duration::from_secs(10);

#[derive(Debug, Default)]
pub struct Stats {
    connected: AtomicU64,
    failed: AtomicU64,
    connects_ok: AtomicU64,
    disconnects: AtomicU64,
    connect_failures: Mutex<BTreeMap<String, u64>>,
    online: AtomicU64,
    reconnects: AtomicU64,
    taken: AtomicU64,
    queued_offline: AtomicU64,
    published: AtomicU64,
    acknowledged: AtomicU64,
    failed_events: AtomicU64,
    dropped: AtomicU64,
    resent: AtomicU64,
    injected: AtomicU64,
    device_causes: Mutex<BTreeMap<String, CauseCount>>,
    event_causes: Mutex<BTreeMap<String, u64>>,
    attempts_per_second: Mutex<Vec<u64>>,
    log_window: Mutex<Option<(Instant, u64)>>,
    /// Latency histograms, sharded by device so devices rarely wait on each other's lock.
    latency: [Mutex<Latency>; LATENCY_SHARDS],
}

const LATENCY_SHARDS: usize = 4;

/// Latency histograms in microseconds (1 µs to 1 h, 3 significant digits). Histograms add up
/// exactly, so shards of a run, or runs on several machines, merge into exact percentiles.
#[derive(Debug, Clone)]
pub struct Latency {
    /// TCP + TLS + CONNACK, from the start of an attempt.
    pub connect: Histogram<u64>,
    /// From the intended send time to PUBACK (QoS 1).
    pub puback: Histogram<u64>,
    /// From the intended send time to the publish being written.
    pub lag: Histogram<u64>,
}

impl Default for Latency {
    fn default() -> Self {
        let h = || Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("valid histogram bounds");
        Latency {
            connect: h(),
            puback: h(),
            lag: h(),
        }
    }
}

impl Latency {
    fn add(&mut self, other: &Latency) {
        // Same bounds on both sides: adding cannot fail.
        let _ = self.connect.add(&other.connect);
        let _ = self.puback.add(&other.puback);
        let _ = self.lag.add(&other.lag);
    }
}

/// Percentiles of one histogram, in milliseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Quantiles {
    pub count: u64,
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub p999: f64,
    pub max: f64,
}

impl Quantiles {
    pub fn of(h: &Histogram<u64>) -> Quantiles {
        if h.is_empty() {
            return Quantiles::default();
        }
        let ms = |us: u64| (us as f64 / 1000.0 * 1000.0).round() / 1000.0;
        Quantiles {
            count: h.len(),
            p50: ms(h.value_at_quantile(0.5)),
            p90: ms(h.value_at_quantile(0.9)),
            p99: ms(h.value_at_quantile(0.99)),
            p999: ms(h.value_at_quantile(0.999)),
            max: ms(h.max()),
        }
    }
}

/// How often a cause occurred, and the first few devices it hit.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct CauseCount {
    pub count: u64,
    pub devices: Vec<String>,
    /// The full sentence of the first occurrence.
    pub example: String,
}

/// A point-in-time copy of the counters.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Snapshot {
    /// Devices that completed at least one connection.
    pub connected: u64,
    /// Devices that gave up: never connected, or stopped for a permanent cause.
    pub failed: u64,
    /// Devices connected right now.
    pub online: u64,
    /// Successful connections after the first, fleet-wide.
    pub reconnects: u64,
    /// Connection attempts that got a CONNACK.
    pub connects_ok: u64,
    /// Attempts that failed, by cause.
    pub connect_failures: BTreeMap<String, u64>,
    /// Established connections that dropped.
    pub disconnects: u64,
    /// Events the freezers produced (timer and console).
    pub taken: u64,
    /// Of those, events that fell due while their device was not connected.
    pub queued_offline: u64,
    /// Events written to the connection (each counted once, however often re-sent).
    pub published: u64,
    /// QoS 1 events the broker acknowledged.
    pub acknowledged: u64,
    /// Events never acknowledged (QoS 1) or never sent (QoS 0) by the end.
    pub failed_events: u64,
    /// Events dropped because a device's offline queue was full.
    pub dropped: u64,
    /// Re-sends of events whose connection dropped before the acknowledgement.
    pub resent: u64,
    /// Events injected from the console.
    pub injected: u64,
    /// Connection attempts (first connects and reconnects) in each second of the run.
    pub connect_attempts_per_second: Vec<u64>,
    /// Why devices gave up, by cause.
    pub device_causes: BTreeMap<String, CauseCount>,
    /// Why events were not delivered (failed or dropped), by cause.
    pub event_causes: BTreeMap<String, u64>,
}

impl Stats {
    pub fn device_connected(&self) {
        self.connected.fetch_add(1, Relaxed);
    }
    pub fn online(&self, up: bool) {
        if up {
            self.online.fetch_add(1, Relaxed);
        } else {
            self.online.fetch_sub(1, Relaxed);
        }
    }
    pub fn reconnected(&self) {
        self.reconnects.fetch_add(1, Relaxed);
    }
    /// An attempt got its CONNACK.
    pub fn connect_ok(&self) {
        self.connects_ok.fetch_add(1, Relaxed);
    }
    /// An attempt failed for `cause`.
    pub fn connect_failed(&self, cause: &str) {
        let mut m = self.connect_failures.lock().unwrap_or_else(|p| p.into_inner());
        *m.entry(cause.to_string()).or_default() += 1;
    }
    /// An established connection dropped.
    pub fn disconnected(&self) {
        self.disconnects.fetch_add(1, Relaxed);
    }
    /// A reading became an event; `offline` when its device was not connected.
    pub fn event_taken(&self, offline: bool) {
        self.taken.fetch_add(1, Relaxed);
        if offline {
            self.queued_offline.fetch_add(1, Relaxed);
        }
    }
    pub fn published(&self) {
        self.published.fetch_add(1, Relaxed);
    }
    pub fn resent(&self) {
        self.resent.fetch_add(1, Relaxed);
    }
    pub fn acknowledged(&self) {
        self.acknowledged.fetch_add(1, Relaxed);
    }
    pub fn injected(&self) {
        self.injected.fetch_add(1, Relaxed);
    }

    fn record(&self, device: usize, d: Duration, pick: impl FnOnce(&mut Latency) -> &mut Histogram<u64>) {
        let mut shard = self.latency[device % LATENCY_SHARDS]
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        pick(&mut shard).saturating_record((d.as_micros() as u64).max(1));
    }
    pub fn record_connect(&self, device: usize, d: Duration) {
        self.record(device, d, |l| &mut l.connect);
    }
    pub fn record_puback(&self, device: usize, d: Duration) {
        self.record(device, d, |l| &mut l.puback);
    }
    pub fn record_lag(&self, device: usize, d: Duration) {
        self.record(device, d, |l| &mut l.lag);
    }

    /// The fleet's PUBACK latency histogram alone, for the live view (merging the others every
    /// second would be wasted work).
    pub fn puback_latency(&self) -> Histogram<u64> {
        let mut shards = self.latency.iter();
        let mut all = shards
            .next()
            .map(|s| s.lock().unwrap_or_else(|p| p.into_inner()).puback.clone())
            .unwrap_or_else(|| Latency::default().puback);
        for shard in shards {
            let _ = all.add(&shard.lock().unwrap_or_else(|p| p.into_inner()).puback);
        }
        all
    }

    /// The fleet's latency histograms, all shards merged.
    pub fn latency(&self) -> Latency {
        let mut all = Latency::default();
        for shard in &self.latency {
            all.add(&shard.lock().unwrap_or_else(|p| p.into_inner()));
        }
        all
    }

    /// A connection attempt `since_start` into the run.
    pub fn connect_attempt(&self, since_start: Duration) {
        let second = since_start.as_secs() as usize;
        let mut v = self.attempts_per_second.lock().unwrap_or_else(|p| p.into_inner());
        if v.len() <= second {
            v.resize(second + 1, 0);
        }
        v[second] += 1;
    }

    /// Whether a per-device warning may be logged now (a few per window, then silence until
    /// the next window; the summary counts everything).
    pub fn may_log(&self) -> bool {
        let mut w = self.log_window.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        match &mut *w {
            Some((start, n)) if now.duration_since(*start) < LOG_WINDOW => {
                *n += 1;
                if *n == LOG_LINES_PER_WINDOW + 1 {
                    tracing::warn!("more devices report problems; the summary counts them by cause");
                }
                *n <= LOG_LINES_PER_WINDOW
            }
            _ => {
                *w = Some((now, 1));
                true
            }
        }
    }

    /// A device gave up; returns whether to log it (see [`Stats::may_log`]).
    pub fn device_failed(&self, device: &str, key: &str, detail: &str) -> bool {
        {
            let mut causes = self.device_causes.lock().unwrap_or_else(|p| p.into_inner());
            let entry = causes.entry(key.to_string()).or_default();
            entry.count += 1;
            if entry.devices.len() < NAMES_PER_CAUSE {
                entry.devices.push(device.to_string());
            }
            if entry.example.is_empty() {
                entry.example = detail.to_string();
            }
        }
        self.failed.fetch_add(1, Relaxed);
        self.may_log()
    }

    /// `n` events will never be delivered, for `cause`.
    pub fn events_failed(&self, n: u64, cause: &str) {
        if n > 0 {
            self.failed_events.fetch_add(n, Relaxed);
            self.add_event_cause(n, cause);
        }
    }

    /// `n` events were dropped from a full queue, for `cause`.
    pub fn events_dropped(&self, n: u64, cause: &str) {
        if n > 0 {
            self.dropped.fetch_add(n, Relaxed);
            self.add_event_cause(n, cause);
        }
    }

    fn add_event_cause(&self, n: u64, cause: &str) {
        let mut causes = self.event_causes.lock().unwrap_or_else(|p| p.into_inner());
        *causes.entry(cause.to_string()).or_default() += n;
    }

    pub fn snapshot(&self) -> Snapshot {
        Snapshot {
            connected: self.connected.load(Relaxed),
            failed: self.failed.load(Relaxed),
            online: self.online.load(Relaxed),
            reconnects: self.reconnects.load(Relaxed),
            connects_ok: self.connects_ok.load(Relaxed),
            connect_failures: self
                .connect_failures
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone(),
            disconnects: self.disconnects.load(Relaxed),
            taken: self.taken.load(Relaxed),
            queued_offline: self.queued_offline.load(Relaxed),
            published: self.published.load(Relaxed),
            acknowledged: self.acknowledged.load(Relaxed),
            failed_events: self.failed_events.load(Relaxed),
            dropped: self.dropped.load(Relaxed),
            resent: self.resent.load(Relaxed),
            injected: self.injected.load(Relaxed),
            connect_attempts_per_second: self
                .attempts_per_second
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone(),
            device_causes: self
                .device_causes
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone(),
            event_causes: self
                .event_causes
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone(),
        }
    }
}
