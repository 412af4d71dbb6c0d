//! Fleet-wide counters, shared by every device task.
//!
//! Devices only add; readers take a [`Snapshot`], a plain value grouped the way the report
//! groups it, so the report embeds its parts instead of copying them field by field. Each group
//! of counters is declared once, in `counters!`, which makes both the atomic and the plain
//! struct.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

use crate::cause::{Cause, Kind};

mod latency;
pub mod outage;
pub use latency::{Latency, Quantiles, histogram};

/// How many device ids a cause lists before it just counts.
pub const NAMES_PER_CAUSE: usize = 5;
/// Latency histograms, sharded by device so devices rarely wait on each other's lock.
const LATENCY_SHARDS: usize = 4;

/// Locks a mutex, taking the data even if another thread panicked while holding it (counters
/// stay meaningful either way).
pub fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Two decimals, as figures are reported.
pub(crate) fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

/// One shared counter.
#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    pub fn inc(&self) {
        self.add(1);
    }
    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Relaxed);
    }
    pub fn dec(&self) {
        self.0.fetch_sub(1, Relaxed);
    }
    pub fn get(&self) -> u64 {
        self.0.load(Relaxed)
    }
}

/// Declares a group of counters once: `$shared` holds a [`Counter`] per field, `$plain` the
/// same fields as numbers, and `$shared::load` copies one into the other; `$plain` adds up
/// (groups into a sink, shards into a merge) and subtracts (a stage's share) field by field.
macro_rules! counters {
    ($(#[$doc:meta])* $shared:ident => $plain:ident { $( $(#[$fm:meta])* $field:ident ),* $(,)? }) => {
        #[derive(Debug, Default)]
        pub struct $shared { $( pub $field: Counter, )* }
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
        #[serde(default)]
        pub struct $plain { $( $(#[$fm])* pub $field: u64, )* }
        impl $shared {
            pub fn load(&self) -> $plain {
                $plain { $( $field: self.$field.get(), )* }
            }
        }
        impl $plain {
            /// Adds `o` into these.
            pub fn add(&mut self, o: &$plain) {
                $( self.$field += o.$field; )*
            }
            /// `self - earlier`, field by field.
            pub fn since(&self, earlier: &$plain) -> $plain {
                $plain { $( $field: self.$field.saturating_sub(earlier.$field), )* }
            }
            pub fn is_zero(&self) -> bool {
                *self == $plain::default()
            }
        }
    };
}

counters! {
    /// Devices, by how their run went.
    DeviceCounters => DeviceCounts {
        /// Devices that completed at least one connection.
        connected,
        /// Devices that failed: a refusal named (the device kept trying), never connected, or
        /// gave up.
        failed,
        /// Devices connected right now.
        #[serde(skip_serializing)]
        online,
        /// Devices that stopped for good (`--give-up-after`).
        #[serde(skip_serializing)]
        stopped,
    }
}

counters! {
    /// Events, from the freezer to the broker's acknowledgement.
    MessageCounters => MessageCounts {
        /// Events the freezers produced (timer and console).
        taken,
        /// Of those, events that fell due while their device was not connected.
        queued_offline,
        /// Events written to the connection (each counted once, however often re-sent).
        published,
        /// QoS 1 events the broker acknowledged.
        acknowledged,
        /// Events never acknowledged (QoS 1) or never sent (QoS 0) by the end.
        failed,
        /// Events dropped because a device's offline queue was full.
        dropped,
        /// Re-sends of events whose connection dropped before the acknowledgement.
        resent,
        /// Events injected from the console.
        injected,
        /// Requests to an HTTP API (Kinesis PutRecords, Firehose PutRecordBatch, the proxy's
        /// POSTs), re-sends included; 0 for MQTT.
        requests,
    }
}

counters! {
    /// Connections, fleet-wide.
    ConnectCounters => ConnectCounts {
        /// Attempts that got a CONNACK.
        ok,
        /// Established connections that dropped.
        disconnects,
        /// Successful connections after a device's first.
        reconnects,
    }
}

counters! {
    /// What devices heard from the cloud (`--listen`) and the console's actions.
    CommandCounters => CommandCounts {
        /// Commands received on `freezers/<id>/cmd`.
        received,
        /// Of those, replies sent with `ok: true`.
        answered,
        /// Of those, replies sent with `ok: false` (unknown command, value out of range).
        refused,
        /// Shadow deltas received (update/delta, and a delta in get/accepted).
        shadow_deltas,
        /// Reports published to the device's shadow (`.../shadow/update`).
        shadow_updates,
        /// Actions typed on the console (door, defrost, fail, fix, setpoint).
        console_actions,
    }
}

counters! {
    /// Data faults injected on purpose (`--faults`), by kind: the truth a consumer's counts are
    /// checked against.
    FaultCounters => FaultCounts {
        /// Events sent twice (the copy marked `"fault":"duplicate"`).
        duplicate,
        /// Events held and sent after the next one.
        reorder,
        /// Events held back for the late delay.
        late,
        /// Invalid JSON records sent beside an event.
        malformed,
        /// Offline spells a device took before sending its queue in one burst.
        bursts,
        /// Devices whose clock is skewed (`ts` off by a fixed amount).
        skewed_devices,
    }
}

/// Why an event was not delivered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Loss {
    /// The device's offline queue was full (`--offline-queue`).
    QueueFull,
    /// The device gave up, for this cause.
    GaveUp(Kind),
    /// The device was still trying to make its first connection when the run ended.
    NeverConnected(Kind),
    /// Written, but not acknowledged before shutdown.
    NotAcked,
    /// Never written before shutdown.
    NotSent,
    /// The server refused it for good (e.g. MQTT 5 PUBACK 0x87).
    Refused(Kind),
}

impl Loss {
    /// The report key.
    pub fn key(self) -> String {
        match self {
            Loss::QueueFull => "offline queue full (--offline-queue)".into(),
            Loss::GaveUp(kind) => format!("device gave up: {}", kind.key()),
            Loss::NeverConnected(kind) => format!("never connected: {}", kind.key()),
            Loss::NotAcked => "not acknowledged before shutdown".into(),
            Loss::NotSent => "not sent before shutdown".into(),
            Loss::Refused(kind) => format!("refused by the server: {}", kind.key()),
        }
    }
}

/// How long a run took.
#[derive(Debug, Clone, Copy)]
pub struct Timings {
    /// While the fleet ran: start to the stop request (the rate's denominator).
    pub running_for: Duration,
    /// Start to the end of draining.
    pub elapsed: Duration,
}

#[derive(Debug, Default)]
pub struct Stats {
    pub devices: DeviceCounters,
    pub messages: MessageCounters,
    pub connects: ConnectCounters,
    pub commands: CommandCounters,
    pub faults: FaultCounters,
    connect_failures: Mutex<BTreeMap<String, u64>>,
    attempts_per_second: Mutex<Vec<u64>>,
    device_causes: Mutex<BTreeMap<String, CauseCount>>,
    suspected: Mutex<BTreeMap<String, CauseCount>>,
    event_causes: Mutex<BTreeMap<String, u64>>,
    refusals: Mutex<BTreeMap<String, u64>>,
    latency: [Mutex<Latency>; LATENCY_SHARDS],
    /// With `[[group]]`s: each group's own counters, which devices record into; what this one
    /// reports is its own plus theirs.
    parts: Mutex<Vec<std::sync::Arc<Stats>>>,
    /// The outages of the devices counting here (a sink's, shared by its groups).
    outages: std::sync::OnceLock<std::sync::Arc<crate::stats::outage::OutageLog>>,
}

/// How often a cause occurred, and the first few devices it hit.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CauseCount {
    pub count: u64,
    pub devices: Vec<String>,
    /// The full sentence of the first occurrence.
    pub example: String,
}

impl CauseCount {
    /// Adds `add`'s causes into `total`: counts summed, the first few device names kept, the
    /// first example kept.
    pub fn add_all(total: &mut BTreeMap<String, CauseCount>, add: &BTreeMap<String, CauseCount>) {
        for (k, c) in add {
            let t = total.entry(k.clone()).or_default();
            t.count += c.count;
            for id in &c.devices {
                if t.devices.len() < NAMES_PER_CAUSE {
                    t.devices.push(id.clone());
                }
            }
            if t.example.is_empty() {
                t.example = c.example.clone();
            }
        }
    }
}

/// A point-in-time copy of the counters.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Snapshot {
    pub devices: DeviceCounts,
    pub messages: MessageCounts,
    pub connects: ConnectCounts,
    pub commands: CommandCounts,
    pub faults: FaultCounts,
    /// Attempts that failed, by cause.
    pub connect_failures: BTreeMap<String, u64>,
    /// Connection attempts (first connects and reconnects) in each second of the run.
    pub connect_attempts_per_second: Vec<u64>,
    /// Why devices gave up, by cause.
    pub device_causes: BTreeMap<String, CauseCount>,
    /// What devices that kept running are suspected of (e.g. a client id in use twice).
    pub suspected: BTreeMap<String, CauseCount>,
    /// Why events were not delivered (failed or dropped), by cause.
    pub event_causes: BTreeMap<String, u64>,
    /// What the server answered instead of a success, by error code or HTTP status, with
    /// `(retried)` when the event was sent again (Kinesis ProvisionedThroughputExceededException,
    /// HTTP 429, …).
    pub refusals: BTreeMap<String, u64>,
    /// Unplanned drops and how the devices came back.
    pub outages: crate::stats::outage::Outages,
}

/// `later - earlier`, key by key.
fn map_since(later: &BTreeMap<String, u64>, earlier: &BTreeMap<String, u64>) -> BTreeMap<String, u64> {
    later
        .iter()
        .map(|(k, v)| (k.clone(), v.saturating_sub(earlier.get(k).copied().unwrap_or(0))))
        .filter(|(_, v)| *v > 0)
        .collect()
}

impl Snapshot {
    /// Adds `o`'s counts into these (a group's into its sink's).
    pub fn absorb(&mut self, o: &Snapshot) {
        self.outages.absorb(&o.outages);
        self.devices.add(&o.devices);
        self.messages.add(&o.messages);
        self.connects.add(&o.connects);
        self.commands.add(&o.commands);
        self.faults.add(&o.faults);
        for (mine, theirs) in [
            (&mut self.connect_failures, &o.connect_failures),
            (&mut self.event_causes, &o.event_causes),
            (&mut self.refusals, &o.refusals),
        ] {
            for (k, v) in theirs {
                *mine.entry(k.clone()).or_default() += v;
            }
        }
        if self.connect_attempts_per_second.len() < o.connect_attempts_per_second.len() {
            self.connect_attempts_per_second
                .resize(o.connect_attempts_per_second.len(), 0);
        }
        for (sum, add) in self
            .connect_attempts_per_second
            .iter_mut()
            .zip(&o.connect_attempts_per_second)
        {
            *sum += add;
        }
        for (mine, theirs) in [
            (&mut self.device_causes, &o.device_causes),
            (&mut self.suspected, &o.suspected),
        ] {
            CauseCount::add_all(mine, theirs);
        }
    }

    /// What happened between `earlier` and this snapshot (a scenario stage): counts and causes
    /// are the differences; devices connected now and device totals are as they are now.
    pub fn since(&self, earlier: &Snapshot) -> Snapshot {
        let messages = self.messages.since(&earlier.messages);
        let connects = self.connects.since(&earlier.connects);
        let from = earlier.connect_attempts_per_second.len().saturating_sub(1);
        let mut per_second = self
            .connect_attempts_per_second
            .get(from..)
            .unwrap_or_default()
            .to_vec();
        // The second the stage began in was shared with the stage before: count only its part.
        if let (Some(first), Some(before)) =
            (per_second.first_mut(), earlier.connect_attempts_per_second.last())
        {
            *first = first.saturating_sub(*before);
        }
        Snapshot {
            devices: self.devices,
            messages,
            connects,
            commands: self.commands.since(&earlier.commands),
            faults: self.faults.since(&earlier.faults),
            connect_failures: map_since(&self.connect_failures, &earlier.connect_failures),
            connect_attempts_per_second: per_second,
            device_causes: self.device_causes.clone(),
            suspected: self.suspected.clone(),
            event_causes: map_since(&self.event_causes, &earlier.event_causes),
            refusals: map_since(&self.refusals, &earlier.refusals),
            // The outages are the run's story, told once, not per stage.
            outages: Default::default(),
        }
    }
}

impl Stats {
    /// A connection attempt failed for `kind`.
    pub fn connect_failed(&self, kind: Kind) {
        *lock(&self.connect_failures)
            .entry(kind.key().to_string())
            .or_default() += 1;
    }

    /// A connection attempt `since_start` into the run.
    pub fn connect_attempt(&self, since_start: Duration) {
        let second = since_start.as_secs() as usize;
        let mut v = lock(&self.attempts_per_second);
        if v.len() <= second {
            v.resize(second + 1, 0);
        }
        v[second] += 1;
    }

    /// A reading became an event; `offline` when its device was not connected.
    pub fn event_taken(&self, offline: bool) {
        self.messages.taken.inc();
        if offline {
            self.messages.queued_offline.inc();
        }
    }

    fn record(&self, device: usize, d: Duration, pick: impl FnOnce(&mut Latency) -> &mut Histogram<u64>) {
        let mut shard = lock(&self.latency[device % LATENCY_SHARDS]);
        pick(&mut shard).saturating_record((d.as_micros() as u64).max(1));
    }
    pub fn record_connect(&self, device: usize, d: Duration) {
        self.record(device, d, |l| &mut l.connect);
    }
    /// `connecting`: the event was meant for before its device's first CONNACK.
    pub fn record_puback(&self, device: usize, d: Duration, connecting: bool) {
        if connecting {
            self.record(device, d, |l| &mut l.puback_connecting);
        } else {
            self.record(device, d, |l| &mut l.puback);
        }
    }
    pub fn record_lag(&self, device: usize, d: Duration, connecting: bool) {
        if connecting {
            self.record(device, d, |l| &mut l.lag_connecting);
        } else {
            self.record(device, d, |l| &mut l.lag);
        }
    }
    /// An event taken while its device was down after a drop was written `d` after its time.
    pub fn record_outage_wait(&self, device: usize, d: Duration) {
        self.record(device, d, |l| &mut l.lag_outage);
    }
    pub fn record_sched(&self, device: usize, d: Duration) {
        self.record(device, d, |l| &mut l.sched);
    }

    /// The fleet's latency histograms, all shards merged.
    /// Makes `parts` part of these figures (a sink's groups).
    pub fn add_parts(&self, parts: &[std::sync::Arc<Stats>]) {
        lock(&self.parts).extend(parts.iter().cloned());
    }

    /// Devices connected now (with the groups').
    pub fn online(&self) -> u64 {
        self.devices.online.get() + lock(&self.parts).iter().map(|p| p.online()).sum::<u64>()
    }

    pub fn latency(&self) -> Latency {
        let mut all = Latency::default();
        for shard in &self.latency {
            all.add(&lock(shard));
        }
        for part in lock(&self.parts).iter() {
            all.add(&part.latency());
        }
        all
    }

    /// A device gave up for `cause`.
    pub fn device_failed(&self, device: &str, cause: &Cause) {
        count_cause(&self.device_causes, device, cause);
        self.devices.failed.inc();
    }

    /// A device that keeps running is suspected of `cause` (counted once per device).
    pub fn device_suspected(&self, device: &str, cause: &Cause) {
        count_cause(&self.suspected, device, cause);
    }

    /// `n` events will never be delivered, for `loss`.
    pub fn events_failed(&self, n: u64, loss: Loss) {
        if n > 0 {
            self.messages.failed.add(n);
            self.add_event_cause(n, loss);
        }
    }

    /// `n` events were dropped from a full queue.
    pub fn events_dropped(&self, n: u64) {
        if n > 0 {
            self.messages.dropped.add(n);
            self.add_event_cause(n, Loss::QueueFull);
        }
    }

    /// The server refused `n` events with `what` (an error code or an HTTP status);
    /// `retried` when they are sent again.
    pub fn refused(&self, what: &str, n: u64, retried: bool) {
        let key = if retried {
            format!("{what} (retried)")
        } else {
            what.to_string()
        };
        *lock(&self.refusals).entry(key).or_default() += n;
    }

    fn add_event_cause(&self, n: u64, loss: Loss) {
        *lock(&self.event_causes).entry(loss.key()).or_default() += n;
    }

    pub fn snapshot(&self) -> Snapshot {
        let mut s = self.own_snapshot();
        for part in lock(&self.parts).iter() {
            s.absorb(&part.snapshot());
        }
        s
    }

    fn own_snapshot(&self) -> Snapshot {
        Snapshot {
            devices: self.devices.load(),
            messages: self.messages.load(),
            connects: self.connects.load(),
            commands: self.commands.load(),
            faults: self.faults.load(),
            connect_failures: lock(&self.connect_failures).clone(),
            connect_attempts_per_second: lock(&self.attempts_per_second).clone(),
            device_causes: lock(&self.device_causes).clone(),
            suspected: lock(&self.suspected).clone(),
            event_causes: lock(&self.event_causes).clone(),
            refusals: lock(&self.refusals).clone(),
            outages: self
                .outages
                .get()
                .map(|o| o.figures(tokio::time::Instant::now()))
                .unwrap_or_default(),
        }
    }

    /// Reports `log`'s outages with these counts.
    pub fn watch_outages(&self, log: std::sync::Arc<crate::stats::outage::OutageLog>) {
        let _ = self.outages.set(log);
    }
}

fn count_cause(map: &Mutex<BTreeMap<String, CauseCount>>, device: &str, cause: &Cause) {
    let mut causes = lock(map);
    let entry = causes.entry(cause.key().to_string()).or_default();
    entry.count += 1;
    if entry.devices.len() < NAMES_PER_CAUSE {
        entry.devices.push(device.to_string());
    }
    if entry.example.is_empty() {
        entry.example = cause.detail.clone();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_snapshot_groups_what_devices_counted() {
        let s = Stats::default();
        s.event_taken(true);
        s.event_taken(false);
        s.messages.published.inc();
        s.events_dropped(3);
        s.events_failed(2, Loss::GaveUp(Kind::ServerNotTrusted));
        s.events_failed(0, Loss::NotSent);
        s.connect_failed(Kind::Refused);
        s.connect_attempt(Duration::from_millis(2500));
        let snap = s.snapshot();
        assert_eq!((snap.messages.taken, snap.messages.queued_offline), (2, 1));
        assert_eq!((snap.messages.dropped, snap.messages.failed), (3, 2));
        assert_eq!(
            snap.event_causes["device gave up: server certificate not trusted"],
            2
        );
        assert_eq!(snap.event_causes.len(), 2);
        assert_eq!(snap.connect_failures["connection refused"], 1);
        assert_eq!(snap.connect_attempts_per_second, vec![0, 0, 1]);
    }

    #[test]
    fn a_cause_names_its_first_few_devices_and_keeps_counting() {
        let s = Stats::default();
        let cause = Cause::new(Kind::ClientCertRejected, "rejected".into());
        for i in 0..7 {
            s.device_failed(&format!("freezer{i}"), &cause);
        }
        let c = &s.snapshot().device_causes["client certificate rejected"];
        assert_eq!(
            (c.count, c.devices.len(), c.example.as_str()),
            (7, NAMES_PER_CAUSE, "rejected")
        );
        assert_eq!(s.devices.failed.get(), 7);
    }

    #[test]
    fn latency_shards_merge_into_one_histogram() {
        let s = Stats::default();
        for device in 0..8 {
            s.record_puback(device, Duration::from_millis(10 + device as u64), false);
        }
        assert_eq!(s.latency().puback.len(), 8);
        let max = Quantiles::of(&s.latency().puback).max;
        assert!((17.0..17.1).contains(&max), "{max}");
    }
}
