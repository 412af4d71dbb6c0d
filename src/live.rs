//! The terminal: one writer owns it, so the live status line never shares a row with other
//! output. Every line the program prints (logs, console answers, the watcher's events) goes
//! through [`eprintln`], [`print_stdout`] or the tracing writer [`LogWriter`]: the status line is
//! cleared first and redrawn after.
//!
//! [`LiveView`] computes that status line: on a terminal it is redrawn every second; elsewhere a
//! plain line is printed every 10 s, so logs of CI jobs and pipes stay readable.

use std::collections::BTreeMap;
use std::io::{IsTerminal, Write};
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

use crate::stats::{Quantiles, Snapshot, Stats, lock};

const LIVE_EVERY: Duration = Duration::from_secs(1);
const PLAIN_EVERY: Duration = Duration::from_secs(10);
const CLEAR_ROW: &str = "\r\x1b[2K";

/// The status line currently drawn on stderr, if any.
static STATUS: Mutex<Option<String>> = Mutex::new(None);

/// Writes through the screen lock: clears the status line, writes, redraws it.
fn write_around(write: impl FnOnce()) {
    let status = lock(&STATUS);
    let mut err = std::io::stderr().lock();
    if status.is_some() {
        let _ = err.write_all(CLEAR_ROW.as_bytes());
        let _ = err.flush();
    }
    write();
    if let Some(line) = status.as_deref() {
        let _ = write!(err, "{CLEAR_ROW}{line}");
        let _ = err.flush();
    }
}

/// One line on stderr.
pub fn eprintln(line: &str) {
    eprint(&format!("{line}\n"));
}

/// Text on stderr, as is (e.g. the summary's lines).
pub fn eprint(text: &str) {
    write_around(|| {
        let mut err = std::io::stderr().lock();
        let _ = err.write_all(text.as_bytes());
        let _ = err.flush();
    });
}

/// Bytes on stdout (machine-readable output, the watcher's lines).
pub fn print_stdout(bytes: &[u8]) {
    write_around(|| {
        let mut out = std::io::stdout().lock();
        let _ = out.write_all(bytes);
        let _ = out.flush();
    });
}

/// Draws (Some) or removes (None) the status line on stderr.
fn set_status(line: Option<String>) {
    let mut status = lock(&STATUS);
    let mut err = std::io::stderr().lock();
    match &line {
        Some(l) => {
            let _ = write!(err, "{CLEAR_ROW}{l}");
        }
        None if status.is_some() => {
            let _ = err.write_all(CLEAR_ROW.as_bytes());
        }
        None => {}
    }
    let _ = err.flush();
    *status = line;
}

/// The tracing writer: each log event is written whole through the screen lock.
#[derive(Default)]
pub struct LogWriter(Vec<u8>);

impl Write for LogWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for LogWriter {
    fn drop(&mut self) {
        if !self.0.is_empty() {
            let bytes = std::mem::take(&mut self.0);
            write_around(|| {
                let mut err = std::io::stderr().lock();
                let _ = err.write_all(&bytes);
                let _ = err.flush();
            });
        }
    }
}

/// The fleet's status line.
pub struct LiveView {
    tty: bool,
    devices: usize,
    target_rate: Option<f64>,
    last: Option<(Instant, u64)>,
    last_print: Instant,
    /// The PUBACK histogram at the last line: the line shows only what came since, so a slow
    /// ramp-up does not stay in its p99 for the rest of the run.
    last_puback: hdrhistogram::Histogram<u64>,
    /// The generator's own health at the last line: timer lateness and CPU seconds.
    last_sched: hdrhistogram::Histogram<u64>,
    last_cpu: f64,
    /// Failed connection attempts by cause at the last line.
    last_failures: BTreeMap<String, u64>,
}

impl LiveView {
    pub fn new(devices: usize, target_rate: Option<f64>) -> LiveView {
        LiveView {
            tty: std::io::stderr().is_terminal(),
            devices,
            target_rate,
            last: None,
            last_print: Instant::now(),
            last_puback: crate::stats::histogram(),
            last_sched: crate::stats::histogram(),
            last_cpu: crate::report::timeseries::cpu_seconds(),
            last_failures: Default::default(),
        }
    }

    /// Redraws the line when it is due.
    pub fn tick(&mut self, s: &Snapshot, stats: &Stats) {
        let Some(line) = self.next_line(s, stats) else {
            return;
        };
        if self.tty {
            set_status(Some(line));
        } else {
            eprintln(&line);
        }
    }

    /// The line, when one is due.
    fn next_line(&mut self, s: &Snapshot, stats: &Stats) -> Option<String> {
        let every = if self.tty { LIVE_EVERY } else { PLAIN_EVERY };
        if self.last_print.elapsed() < every {
            return None;
        }
        let now = Instant::now();
        let published = s.messages.published;
        let rate = match self.last {
            Some((t, before)) => (published - before) as f64 / now.duration_since(t).as_secs_f64(),
            None => published as f64 / every.as_secs_f64(),
        };
        self.last = Some((now, published));
        self.last_print = now;
        let latency = stats.latency();
        let mut interval = latency.puback.clone();
        let _ = interval.subtract(&self.last_puback);
        self.last_puback = latency.puback;
        let mut late = latency.sched.clone();
        let _ = late.subtract(&self.last_sched);
        self.last_sched = latency.sched;
        let cpu = crate::report::timeseries::cpu_seconds();
        let cpu_pct = (cpu - self.last_cpu) / every.as_secs_f64() * 100.0;
        self.last_cpu = cpu;
        let health = Health {
            cpu_pct,
            late_p99_ms: Quantiles::of(&late).p99,
            send_queues: crate::sendq::latest(),
        };
        let attempts = failed_attempts(&s.connect_failures, &self.last_failures);
        self.last_failures = s.connect_failures.clone();
        Some(
            status_line(
                s,
                self.devices,
                (rate, self.target_rate),
                &Quantiles::of(&interval),
                every,
            ) + &attempts
                + &health.to_string(),
        )
    }

    /// Removes the line (before the summary).
    pub fn clear(&mut self) {
        set_status(None);
    }
}

/// The generator's own health over the last interval, at the end of the line.
struct Health {
    cpu_pct: f64,
    late_p99_ms: f64,
    send_queues: Option<crate::sendq::SendQueues>,
}

impl std::fmt::Display for Health {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            " | CPU {:.0}% timers late p99 {:.1} ms",
            self.cpu_pct, self.late_p99_ms
        )?;
        match self.send_queues {
            Some(q) => write!(f, " send queues {}", crate::report::bytes(q.total_bytes)),
            None => Ok(()),
        }
    }
}

/// The connection attempts that failed since the last line, and the most common cause and
/// whose it is (empty when none failed): what an outage looks like while it lasts.
fn failed_attempts(now: &BTreeMap<String, u64>, before: &BTreeMap<String, u64>) -> String {
    let since: Vec<(u64, &str)> = now
        .iter()
        .map(|(k, n)| (n.saturating_sub(before.get(k).copied().unwrap_or(0)), k.as_str()))
        .filter(|(n, _)| *n > 0)
        .collect();
    let total: u64 = since.iter().map(|(n, _)| n).sum();
    let Some(&(_, top)) = since.iter().max() else {
        return String::new();
    };
    let whose = if crate::cause::network_key(top) {
        "the network or the endpoint"
    } else {
        "the server's answer"
    };
    format!(" | {total} attempts failed: {top} ({whose})")
}

/// The line; `puback` holds the last `window`'s acknowledgements only.
fn status_line(
    s: &Snapshot,
    devices: usize,
    (rate, target): (f64, Option<f64>),
    puback: &Quantiles,
    window: Duration,
) -> String {
    let target = target.map(|t| format!(" (target {t:.0})")).unwrap_or_default();
    let errors = s.devices.failed + s.messages.failed + s.messages.dropped;
    format!(
        "connected {}/{devices} | {rate:.0} pub/s{target} | PUBACK p50 {:.1} ms p99 {:.1} ms (last {} s) | errors {errors}",
        s.devices.online,
        puback.p50,
        puback.p99,
        window.as_secs()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_line_shows_the_last_seconds_latency_not_the_whole_runs() {
        let stats = Stats::default();
        let mut view = LiveView::new(10, None);
        for _ in 0..100 {
            stats.record_puback(0, Duration::from_secs(3), false);
        }
        view.last_print -= Duration::from_secs(20);
        let slow = view.next_line(&stats.snapshot(), &stats).unwrap();
        assert!(
            slow.contains("p99 3001.1 ms") || slow.contains("p99 300"),
            "{slow}"
        );
        for _ in 0..100 {
            stats.record_puback(0, Duration::from_millis(2), false);
        }
        view.last_print -= Duration::from_secs(20);
        let fast = view.next_line(&stats.snapshot(), &stats).unwrap();
        assert!(
            fast.contains("PUBACK p50 2.0 ms p99 2.0 ms"),
            "the ramp's seconds are gone: {fast}"
        );
    }

    #[test]
    fn failed_attempts_since_the_last_line_name_the_commonest_cause() {
        let map = |pairs: &[(&str, u64)]| pairs.iter().map(|(k, n)| (k.to_string(), *n)).collect();
        let before = map(&[("connection refused", 5)]);
        let now = map(&[
            ("connection refused", 6),
            ("connection closed during the TLS handshake", 40),
        ]);
        assert_eq!(
            failed_attempts(&now, &before),
            " | 41 attempts failed: connection closed during the TLS handshake (the network or the endpoint)"
        );
        assert_eq!(failed_attempts(&now, &now), "", "none since the last line");
    }

    #[test]
    fn the_status_line_shows_connections_rate_latency_and_errors() {
        let mut s = Snapshot::default();
        s.devices.online = 3;
        s.devices.failed = 1;
        s.messages.dropped = 2;
        let q = Quantiles {
            p50: 1.25,
            p99: 9.0,
            ..Default::default()
        };
        assert_eq!(
            status_line(&s, 4, (19.6, Some(20.0)), &q, Duration::from_secs(1)),
            "connected 3/4 | 20 pub/s (target 20) | PUBACK p50 1.2 ms p99 9.0 ms (last 1 s) | errors 3"
        );
    }
}
