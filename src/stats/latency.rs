//! The latency histograms: each a device adds to, all of them added up exactly across shards
//! and runs, and read as percentiles in milliseconds.

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

/// Histogram range in microseconds: 1 µs to 1 h, 3 significant digits.
const LATENCY_MAX_US: u64 = 3_600_000_000;

/// Latency histograms in microseconds. Histograms add up exactly, so shards of a run, or runs
/// on several machines, merge into exact percentiles.
#[derive(Debug, Clone)]
pub struct Latency {
    /// TCP + TLS + CONNACK, from the start of an attempt.
    pub connect: Histogram<u64>,
    /// From the intended send time to PUBACK (QoS 1).
    pub puback: Histogram<u64>,
    /// From the intended send time to the publish being written.
    pub lag: Histogram<u64>,
    /// How late device timers fired (the generator's own scheduling delay).
    pub sched: Histogram<u64>,
    /// PUBACK and lag of events meant for before their device's first CONNACK: the connect
    /// phase, kept apart so the steady state's percentiles are not the ramp-up's.
    pub puback_connecting: Histogram<u64>,
    pub lag_connecting: Histogram<u64>,
    /// Lag of events taken while their device was down after a drop: how long they waited.
    pub lag_outage: Histogram<u64>,
}

pub fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, LATENCY_MAX_US, 3).expect("valid histogram bounds")
}

impl Default for Latency {
    fn default() -> Self {
        Latency {
            connect: histogram(),
            puback: histogram(),
            lag: histogram(),
            sched: histogram(),
            puback_connecting: histogram(),
            lag_connecting: histogram(),
            lag_outage: histogram(),
        }
    }
}

impl Latency {
    /// Each histogram of these beside the same one of `other`: the one list of them that
    /// adding and subtracting walk.
    fn pairs<'a>(&'a mut self, other: &'a Latency) -> [(&'a mut Histogram<u64>, &'a Histogram<u64>); 7] {
        [
            (&mut self.connect, &other.connect),
            (&mut self.puback, &other.puback),
            (&mut self.lag, &other.lag),
            (&mut self.sched, &other.sched),
            (&mut self.puback_connecting, &other.puback_connecting),
            (&mut self.lag_connecting, &other.lag_connecting),
            (&mut self.lag_outage, &other.lag_outage),
        ]
    }

    pub(super) fn add(&mut self, other: &Latency) {
        // Same bounds on both sides: adding cannot fail.
        for (mine, theirs) in self.pairs(other) {
            let _ = mine.add(theirs);
        }
    }

    /// The samples recorded since `earlier` (histograms subtract exactly).
    pub fn since(&self, earlier: &Latency) -> Latency {
        let mut l = self.clone();
        for (mine, before) in l.pairs(earlier) {
            let _ = mine.subtract(before);
        }
        l
    }
}

/// Percentiles of one histogram, in milliseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
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
