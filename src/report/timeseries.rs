//! `--timeseries FILE.csv`: one row per second of the run, readable by any spreadsheet or
//! pandas. Counts are per row (what happened in that second), so each column sums to the
//! report's total; percentiles are those of the second's own samples (the difference of the
//! cumulative histograms), so a slow ramp does not hide in a whole-run p99.

use std::io::Write;
use std::path::Path;

use anyhow::Result;

use crate::error::io_cause;
use crate::input;
use crate::stats::{Latency, Quantiles, Snapshot};

pub const HEADER: &str = "elapsed_s,stage,devices_connected,attempts,published,acknowledged,failed,dropped,in_flight,\
                          puback_p50_ms,puback_p99_ms,lag_p99_ms";

/// The cumulative figures at the last row.
#[derive(Default)]
struct Totals {
    attempts: u64,
    published: u64,
    acknowledged: u64,
    failed: u64,
    dropped: u64,
}

/// Rows from successive snapshots of one sink's counters.
pub struct TimeSeries {
    out: std::io::BufWriter<std::fs::File>,
    last: Totals,
    last_latency: Latency,
    /// Events wait for an acknowledgement (QoS 1, AWS APIs): in flight until then.
    acked: bool,
}

impl TimeSeries {
    /// Creates the file (before the run, so a bad path is an input error) and writes the header.
    pub fn create(path: &Path, acked: bool) -> Result<TimeSeries> {
        let file = std::fs::File::create(path).map_err(|e| {
            input!(
                "--timeseries {}: cannot create: {}",
                path.display(),
                io_cause(&e, false)
            )
        })?;
        let mut out = std::io::BufWriter::new(file);
        writeln!(out, "{HEADER}")?;
        out.flush()?;
        Ok(TimeSeries {
            out,
            last: Totals::default(),
            last_latency: Latency::default(),
            acked,
        })
    }

    /// Writes the row for the time since the previous one.
    pub fn sample(&mut self, elapsed_s: f64, stage: &str, s: &Snapshot, latency: Latency) -> Result<()> {
        let row = self.row(elapsed_s, stage, s, latency);
        writeln!(self.out, "{row}")?;
        self.out.flush()?;
        Ok(())
    }

    fn row(&mut self, elapsed_s: f64, stage: &str, s: &Snapshot, latency: Latency) -> String {
        let m = &s.messages;
        let now = Totals {
            attempts: s.connect_attempts_per_second.iter().sum(),
            published: m.published,
            acknowledged: m.acknowledged,
            failed: m.failed,
            dropped: m.dropped,
        };
        let d = |a: u64, b: u64| a.saturating_sub(b);
        let mut puback = latency.puback.clone();
        let _ = puback.subtract(&self.last_latency.puback);
        let mut lag = latency.lag.clone();
        let _ = lag.subtract(&self.last_latency.lag);
        let (p, l) = (Quantiles::of(&puback), Quantiles::of(&lag));
        let settled = if self.acked { m.acknowledged } else { m.published };
        let in_flight = m.taken.saturating_sub(settled + m.failed + m.dropped);
        let row = format!(
            "{elapsed_s:.1},{stage},{},{},{},{},{},{},{in_flight},{},{},{}",
            s.devices.online,
            d(now.attempts, self.last.attempts),
            d(now.published, self.last.published),
            d(now.acknowledged, self.last.acknowledged),
            d(now.failed, self.last.failed),
            d(now.dropped, self.last.dropped),
            p.p50,
            p.p99,
            l.p99
        );
        self.last = now;
        self.last_latency = latency;
        row
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::Stats;
    use std::time::Duration;

    #[test]
    fn each_row_counts_its_own_second_and_its_own_percentiles() {
        let dir = tempfile::tempdir().unwrap();
        let mut ts = TimeSeries::create(&dir.path().join("t.csv"), true).unwrap();
        let stats = Stats::default();
        for _ in 0..10 {
            stats.event_taken(false);
            stats.messages.published.inc();
            stats.messages.acknowledged.inc();
            stats.record_puback(0, Duration::from_millis(100));
        }
        let first = ts.row(1.0, "run", &stats.snapshot(), stats.latency());
        for _ in 0..5 {
            stats.event_taken(false);
            stats.messages.published.inc();
            stats.messages.acknowledged.inc();
            stats.record_puback(0, Duration::from_millis(2));
        }
        let second = ts.row(2.0, "run", &stats.snapshot(), stats.latency());
        let cols = |r: &str| r.split(',').map(String::from).collect::<Vec<_>>();
        assert_eq!(cols(&first)[4..6], ["10", "10"]);
        assert_eq!(cols(&second)[4..6], ["5", "5"], "{second}");
        let p99: f64 = cols(&second)[10].parse().unwrap();
        assert!(p99 < 3.0, "the second's p99 is its own, not the run's: {second}");
        assert_eq!(HEADER.split(',').count(), cols(&second).len());
    }
}
