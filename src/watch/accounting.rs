//! The watcher's accounting, pure: per device, which seqs arrived, duplicates, reorderings and
//! latency from `ts`; the table printed at the end.
//!
//! A device's window starts at the first seq the watcher sees from it, so a watcher started after
//! the fleet does not count what it could never have seen; a lower seq arriving later is counted
//! out of order and widens the window.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use hdrhistogram::Histogram;
use serde::Serialize;

use crate::freezer::Event;

/// Which seqs of one device have been seen, compactly: a bitmap from the first seq seen, and a
/// set for the rare ones below it.
#[derive(Debug, Default, Clone)]
pub struct SeqTracker {
    first: u64,
    bits: Vec<u64>,
    below: BTreeSet<u64>,
    max: u64,
    distinct: u64,
    started: bool,
}

/// What one seq turned out to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SeqKind {
    New,
    Duplicate,
    OutOfOrder,
}

impl SeqTracker {
    pub fn record(&mut self, seq: u64) -> SeqKind {
        if !self.started {
            self.started = true;
            self.first = seq;
            self.max = seq;
        }
        let fresh = if seq < self.first {
            self.below.insert(seq)
        } else {
            let off = seq - self.first;
            let (word, bit) = ((off / 64) as usize, off % 64);
            if word >= self.bits.len() {
                self.bits.resize(word + 1, 0);
            }
            let was = self.bits[word] & (1 << bit) != 0;
            self.bits[word] |= 1 << bit;
            !was
        };
        if !fresh {
            return SeqKind::Duplicate;
        }
        self.distinct += 1;
        if seq < self.max {
            SeqKind::OutOfOrder
        } else {
            self.max = seq;
            SeqKind::New
        }
    }

    /// Lowest seq seen.
    pub fn min(&self) -> u64 {
        self.below.first().copied().unwrap_or(self.first)
    }

    pub fn max(&self) -> u64 {
        self.max
    }

    /// Seqs between the lowest and highest seen that never arrived.
    pub fn missing(&self) -> u64 {
        if !self.started {
            return 0;
        }
        (self.max - self.min() + 1) - self.distinct
    }
}

/// Per-device accounting.
#[derive(Debug, Clone)]
pub struct Tally {
    pub received: u64,
    pub duplicates: u64,
    pub out_of_order: u64,
    pub seqs: SeqTracker,
    /// End-to-end latency, ms from `ts` to arrival.
    pub latency: Histogram<u64>,
}

impl Default for Tally {
    fn default() -> Self {
        Tally {
            received: 0,
            duplicates: 0,
            out_of_order: 0,
            seqs: SeqTracker::default(),
            latency: new_histogram(),
        }
    }
}

/// End-to-end latency range in milliseconds: 1 ms to 1 hour; larger values saturate.
const LATENCY_MAX_MS: u64 = 3_600_000;

fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, LATENCY_MAX_MS, 3).expect("valid histogram bounds")
}

/// Everything the watcher counted.
#[derive(Debug, Clone, Default)]
pub struct Accounting {
    pub devices: BTreeMap<String, Tally>,
    /// Payloads that were not a freezer event (not JSON, or missing device_id/seq/ts).
    pub invalid: u64,
    /// Records the fleet injected on purpose (`--faults`), recognised by their `fault` mark and
    /// counted here instead of as duplicates, reorderings or invalid records.
    pub injected: Injected,
}

/// Injected faults seen, by kind.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Injected {
    pub duplicates: u64,
    pub reordered: u64,
    pub late: u64,
    pub malformed: u64,
}

impl Accounting {
    /// Accounts one received event at `now_ms`; returns what its seq was and its latency (ms).
    pub fn record(&mut self, event: &Event, now_ms: u64) -> (SeqKind, u64) {
        let tally = self.devices.entry(event.device_id.clone()).or_default();
        tally.received += 1;
        let kind = tally.seqs.record(event.seq);
        let fault = event.fault.as_deref();
        match (kind, fault) {
            (SeqKind::Duplicate, Some("duplicate")) => self.injected.duplicates += 1,
            (_, Some("reorder")) => self.injected.reordered += 1,
            (_, Some("late")) => self.injected.late += 1,
            (SeqKind::Duplicate, _) => tally.duplicates += 1,
            (SeqKind::OutOfOrder, _) => tally.out_of_order += 1,
            (SeqKind::New, _) => {}
        }
        let latency = now_ms.saturating_sub(event.ts);
        // A record held back on purpose would only say how long it was held.
        if !matches!(fault, Some("late" | "reorder")) {
            tally.latency.saturating_record(latency.max(1));
        }
        (kind, latency)
    }

    pub fn totals(&self) -> Totals {
        let mut t = Totals::default();
        let mut all = new_histogram();
        for d in self.devices.values() {
            t.received += d.received;
            t.missing += d.seqs.missing();
            t.duplicates += d.duplicates;
            t.out_of_order += d.out_of_order;
            let _ = all.add(&d.latency);
        }
        t.devices = self.devices.len() as u64;
        t.invalid = self.invalid;
        t.injected = self.injected;
        if !all.is_empty() {
            t.latency_p50_ms = Some(all.value_at_quantile(0.5));
            t.latency_p99_ms = Some(all.value_at_quantile(0.99));
        }
        t
    }

    /// The table printed at the end: a row per device and a total.
    pub fn table(&self) -> String {
        let mut out = String::new();
        let total_label = format!("total ({})", self.devices.len());
        let width = self
            .devices
            .keys()
            .map(String::len)
            .max()
            .unwrap_or(0)
            .max(total_label.len());
        let _ = writeln!(
            out,
            "{:<width$}  {:>9} {:>8} {:>10} {:>12} {:>8} {:>8} {:>7} {:>7}",
            "device",
            "received",
            "missing",
            "duplicates",
            "out-of-order",
            "first",
            "last",
            "p50 ms",
            "p99 ms"
        );
        for (id, d) in &self.devices {
            let _ = writeln!(
                out,
                "{id:<width$}  {:>9} {:>8} {:>10} {:>12} {:>8} {:>8} {:>7} {:>7}",
                d.received,
                d.seqs.missing(),
                d.duplicates,
                d.out_of_order,
                d.seqs.min(),
                d.seqs.max(),
                d.latency.value_at_quantile(0.5),
                d.latency.value_at_quantile(0.99),
            );
        }
        let t = self.totals();
        let _ = writeln!(
            out,
            "{:<width$}  {:>9} {:>8} {:>10} {:>12} {:>8} {:>8} {:>7} {:>7}",
            total_label,
            t.received,
            t.missing,
            t.duplicates,
            t.out_of_order,
            "",
            "",
            t.latency_p50_ms
                .map(|v| v.to_string())
                .unwrap_or_else(|| "-".into()),
            t.latency_p99_ms
                .map(|v| v.to_string())
                .unwrap_or_else(|| "-".into()),
        );
        let i = self.injected;
        if i != Injected::default() {
            let _ = writeln!(
                out,
                "injected by --faults (not counted above): {} duplicates, {} reordered, {} late, {} malformed",
                i.duplicates, i.reordered, i.late, i.malformed
            );
        }
        if t.invalid > 0 {
            let _ = writeln!(
                out,
                "{} message(s) were not freezer events and were not counted",
                t.invalid
            );
        }
        out
    }
}

/// Fleet-wide figures of a watch.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Totals {
    pub devices: u64,
    pub received: u64,
    pub missing: u64,
    pub duplicates: u64,
    pub out_of_order: u64,
    pub invalid: u64,
    pub injected: Injected,
    pub latency_p50_ms: Option<u64>,
    pub latency_p99_ms: Option<u64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(seq: u64) -> Event {
        Event {
            device_id: "d".into(),
            seq,
            ts: 1000,
            temperature: -18.0,
            humidity: 60.0,
            ..Default::default()
        }
    }

    #[test]
    fn gaps_duplicates_and_reorderings_are_counted_exactly() {
        let mut acc = Accounting::default();
        // 1 2 4 4 3 7 5 9 : missing 6 and 8; one duplicate (4); out of order 3 and 5.
        for s in [1, 2, 4, 4, 3, 7, 5, 9] {
            acc.record(&ev(s), 1005);
        }
        let d = &acc.devices["d"];
        assert_eq!(d.received, 8);
        assert_eq!(d.duplicates, 1);
        assert_eq!(d.out_of_order, 2);
        assert_eq!(d.seqs.missing(), 2);
        assert_eq!((d.seqs.min(), d.seqs.max()), (1, 9));
    }

    #[test]
    fn the_window_starts_at_the_first_seq_seen_and_widens_downwards() {
        let mut t = SeqTracker::default();
        assert_eq!(t.record(100), SeqKind::New);
        assert_eq!(t.record(102), SeqKind::New);
        assert_eq!(t.missing(), 1);
        assert_eq!(t.record(98), SeqKind::OutOfOrder);
        assert_eq!(t.record(98), SeqKind::Duplicate);
        assert_eq!(t.missing(), 2); // 99 and 101
        assert_eq!(t.record(101), SeqKind::OutOfOrder);
        assert_eq!(t.record(99), SeqKind::OutOfOrder);
        assert_eq!(t.missing(), 0);
        assert_eq!(t.record(100_000), SeqKind::New);
        assert_eq!(t.missing(), 100_000 - 98 + 1 - 6);
    }

    #[test]
    fn latency_is_measured_from_ts() {
        let mut acc = Accounting::default();
        acc.record(&ev(1), 1000 + 40);
        acc.record(&ev(2), 1000 + 60);
        let t = acc.totals();
        assert_eq!(t.latency_p50_ms, Some(40));
        assert_eq!(t.latency_p99_ms, Some(60));
    }
}
