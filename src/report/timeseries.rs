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
                          puback_p50_ms,puback_p99_ms,lag_p99_ms,late_p99_ms,cpu_pct,\
                          send_queue_bytes,send_queue_max_bytes";

/// The cumulative figures at the last row.
#[derive(Default)]
struct Totals {
    attempts: u64,
    published: u64,
    acknowledged: u64,
    failed: u64,
    dropped: u64,
}

/// One second of the run (the report's `timeline`, and a CSV row).
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Row {
    pub elapsed_s: f64,
    pub stage: String,
    pub devices_connected: u64,
    pub attempts: u64,
    pub published: u64,
    pub acknowledged: u64,
    pub failed: u64,
    pub dropped: u64,
    pub in_flight: u64,
    pub puback_p50_ms: f64,
    pub puback_p99_ms: f64,
    pub lag_p99_ms: f64,
    /// How late device timers fired this second (p99): the generator's own delay.
    #[serde(default)]
    pub late_p99_ms: f64,
    /// This process's CPU this second, in percent of one core.
    #[serde(default)]
    pub cpu_pct: f64,
    /// Bytes waiting in this process's TCP send queues (written, not yet acknowledged by the
    /// peer), all told and the longest, at the second's last look.
    #[serde(default)]
    pub send_queue_bytes: u64,
    #[serde(default)]
    pub send_queue_max_bytes: u64,
}

impl Row {
    fn csv(&self) -> String {
        format!(
            "{:.1},{},{},{},{},{},{},{},{},{},{},{},{},{:.1},{},{}",
            self.elapsed_s,
            self.stage,
            self.devices_connected,
            self.attempts,
            self.published,
            self.acknowledged,
            self.failed,
            self.dropped,
            self.in_flight,
            self.puback_p50_ms,
            self.puback_p99_ms,
            self.lag_p99_ms,
            self.late_p99_ms,
            self.cpu_pct,
            self.send_queue_bytes,
            self.send_queue_max_bytes
        )
    }
}

/// Rows from successive snapshots of one sink's counters, kept for the report and, with
/// `--timeseries`, written as they come.
pub struct TimeSeries {
    out: Option<std::io::BufWriter<std::fs::File>>,
    pub rows: Vec<Row>,
    last: Totals,
    last_latency: Latency,
    /// Events wait for an acknowledgement (QoS 1, AWS APIs): in flight until then.
    acked: bool,
    /// This process's CPU seconds and the time, at the last row.
    last_cpu: (f64, std::time::Instant),
}

impl TimeSeries {
    /// With `csv`, creates the file (before the run, so a bad path is an input error) and writes
    /// the header.
    pub fn new(csv: Option<&Path>, acked: bool) -> Result<TimeSeries> {
        let out = match csv {
            None => None,
            Some(path) => {
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
                Some(out)
            }
        };
        Ok(TimeSeries {
            out,
            rows: Vec::new(),
            last: Totals::default(),
            last_latency: Latency::default(),
            acked,
            last_cpu: (cpu_seconds(), std::time::Instant::now()),
        })
    }

    /// Writes the row for the time since the previous one.
    pub fn sample(&mut self, elapsed_s: f64, stage: &str, s: &Snapshot, latency: Latency) -> Result<()> {
        let row = self.row(elapsed_s, stage, s, latency);
        let written = match self.out.as_mut() {
            Some(out) => writeln!(out, "{}", row.csv()).and_then(|()| out.flush()),
            None => Ok(()),
        };
        self.rows.push(row);
        if let Err(e) = written {
            self.out = None;
            return Err(e.into());
        }
        Ok(())
    }

    fn row(&mut self, elapsed_s: f64, stage: &str, s: &Snapshot, latency: Latency) -> Row {
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
        let mut late = latency.sched.clone();
        let _ = late.subtract(&self.last_latency.sched);
        let (p, l) = (Quantiles::of(&puback), Quantiles::of(&lag));
        let (cpu, now_t) = (cpu_seconds(), std::time::Instant::now());
        let wall = now_t.duration_since(self.last_cpu.1).as_secs_f64().max(1e-3);
        let cpu_pct = ((cpu - self.last_cpu.0) / wall * 100.0).max(0.0);
        self.last_cpu = (cpu, now_t);
        let sendq = crate::sendq::latest().unwrap_or_default();
        let settled = if self.acked { m.acknowledged } else { m.published };
        let in_flight = m.taken.saturating_sub(settled + m.failed + m.dropped);
        let row = Row {
            elapsed_s: (elapsed_s * 10.0).round() / 10.0,
            stage: stage.to_string(),
            devices_connected: s.devices.online,
            attempts: d(now.attempts, self.last.attempts),
            published: d(now.published, self.last.published),
            acknowledged: d(now.acknowledged, self.last.acknowledged),
            failed: d(now.failed, self.last.failed),
            dropped: d(now.dropped, self.last.dropped),
            in_flight,
            puback_p50_ms: p.p50,
            puback_p99_ms: p.p99,
            lag_p99_ms: l.p99,
            late_p99_ms: Quantiles::of(&late).p99,
            cpu_pct: (cpu_pct * 10.0).round() / 10.0,
            send_queue_bytes: sendq.total_bytes,
            send_queue_max_bytes: sendq.max_bytes,
        };
        self.last = now;
        self.last_latency = latency;
        row
    }
}

/// This process's CPU time so far (user + system), in seconds.
pub fn cpu_seconds() -> f64 {
    // SAFETY: getrusage writes into the struct we pass and reads nothing else.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) } != 0 {
        return 0.0;
    }
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    secs(usage.ru_utime) + secs(usage.ru_stime)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::Stats;
    use std::time::Duration;

    #[test]
    fn each_row_counts_its_own_second_and_its_own_percentiles() {
        let dir = tempfile::tempdir().unwrap();
        let mut ts = TimeSeries::new(Some(&dir.path().join("t.csv")), true).unwrap();
        let stats = Stats::default();
        for _ in 0..10 {
            stats.event_taken(false);
            stats.messages.published.inc();
            stats.messages.acknowledged.inc();
            stats.record_puback(0, Duration::from_millis(100), false);
        }
        let first = ts.row(1.0, "run", &stats.snapshot(), stats.latency()).csv();
        for _ in 0..5 {
            stats.event_taken(false);
            stats.messages.published.inc();
            stats.messages.acknowledged.inc();
            stats.record_puback(0, Duration::from_millis(2), false);
        }
        let second = ts.row(2.0, "run", &stats.snapshot(), stats.latency()).csv();
        let cols = |r: &str| r.split(',').map(String::from).collect::<Vec<_>>();
        assert_eq!(cols(&first)[4..6], ["10", "10"]);
        assert_eq!(cols(&second)[4..6], ["5", "5"], "{second}");
        let p99: f64 = cols(&second)[10].parse().unwrap();
        assert!(p99 < 3.0, "the second's p99 is its own, not the run's: {second}");
        assert_eq!(HEADER.split(',').count(), cols(&second).len());
    }
}
