//! What a run reports: the summary on stderr and the JSON report (`--report FILE`, `-` =
//! stdout), both drawn from one [`Report`]. The schema is documented in README.md.
//!
//! Percentiles do not add up across machines, so the report also carries each latency
//! histogram in HdrHistogram's V2 deflate format (base64): shards of a run merge exactly.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result};
use base64::Engine as _;
use hdrhistogram::Histogram;
use hdrhistogram::serialization::{Serializer, V2DeflateSerializer};
use serde::Serialize;

use crate::cli::Profile;
use crate::config::{FleetConfig, Schedule};
use crate::stats::{CauseCount, Latency, Quantiles, Snapshot};

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub devices: Devices,
    pub messages: Messages,
    pub rate: Rate,
    pub latency_ms: LatencyMs,
    /// Why devices gave up and why events were lost, by cause.
    pub errors: BTreeMap<String, u64>,
    /// Devices that gave up, by cause: how many, the first few ids, and the full sentence.
    pub device_failures: BTreeMap<String, CauseCount>,
    pub connects: Connects,
    /// Wall time of the run, start to exit.
    pub duration_s: f64,
    pub settings: Settings,
    /// The latency histograms (µs), HdrHistogram V2 deflate, base64: merge shards exactly.
    pub histograms: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Devices {
    pub target: usize,
    pub connected: u64,
    pub failed: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Messages {
    pub taken: u64,
    /// Of those, events that fell due while their device was disconnected.
    pub queued_offline: u64,
    pub published: u64,
    pub acknowledged: u64,
    pub failed: u64,
    pub dropped: u64,
    pub resent: u64,
    pub injected: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Rate {
    /// Publishes per second asked for (--rate), or implied by --interval; null for on demand / max.
    pub target: Option<f64>,
    /// Publishes per second while the fleet was running (first connect to stop).
    pub achieved: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct LatencyMs {
    /// TCP + TLS + CONNACK, per attempt that connected.
    pub connect: Quantiles,
    /// Intended send time to PUBACK (QoS 1): a stall shows here, not as a lower rate.
    pub puback: Quantiles,
    /// Intended send time to the publish being written.
    pub lag: Quantiles,
}

#[derive(Debug, Clone, Serialize)]
pub struct Connects {
    pub attempts: u64,
    /// Attempts that got a CONNACK.
    pub ok: u64,
    /// Attempts that failed, by cause.
    pub failed: BTreeMap<String, u64>,
    /// Established connections that dropped.
    pub disconnects: u64,
    pub reconnects: u64,
    pub peak_per_second: u64,
    pub per_second: Vec<u64>,
}

/// The settings a run used (no file paths, no key material).
#[derive(Debug, Clone, Serialize)]
pub struct Settings {
    pub endpoint: String,
    pub port: u16,
    pub topic: String,
    pub qos: u8,
    pub devices: usize,
    pub interval_ms: Option<f64>,
    pub rate: Option<String>,
    pub count: Option<u64>,
    pub payload_bytes: Option<usize>,
    pub max_inflight: u16,
    pub ramp_up: Option<u32>,
    pub profile: Profile,
    pub offline_queue: usize,
    pub persistent_session: bool,
    pub keep_alive_s: u64,
    pub seed: u64,
    pub bind: Vec<std::net::IpAddr>,
}

impl Report {
    pub fn new(
        cfg: &FleetConfig,
        s: &Snapshot,
        latency: &Latency,
        running: Duration,
        elapsed: Duration,
    ) -> Report {
        let n = cfg.devices.len();
        let target_rate = match cfg.schedule {
            Schedule::Every(i) if !i.is_zero() => Some(cfg.target_rate.unwrap_or(n as f64 / i.as_secs_f64())),
            _ => None,
        };
        let mut errors: BTreeMap<String, u64> = s
            .device_causes
            .iter()
            .map(|(k, c)| (k.clone(), c.count))
            .collect();
        for (k, v) in &s.event_causes {
            *errors.entry(k.clone()).or_default() += v;
        }
        let histograms = [
            ("connect", &latency.connect),
            ("puback", &latency.puback),
            ("lag", &latency.lag),
        ]
        .into_iter()
        .filter_map(|(name, h)| encode(h).map(|b| (name.to_string(), b)))
        .collect();
        Report {
            devices: Devices {
                target: n,
                connected: s.connected,
                failed: s.failed,
            },
            messages: Messages {
                taken: s.taken,
                queued_offline: s.queued_offline,
                published: s.published,
                acknowledged: s.acknowledged,
                failed: s.failed_events,
                dropped: s.dropped,
                resent: s.resent,
                injected: s.injected,
            },
            rate: Rate {
                target: target_rate.map(round2),
                achieved: round2(s.published as f64 / running.as_secs_f64().max(1e-3)),
            },
            latency_ms: LatencyMs {
                connect: Quantiles::of(&latency.connect),
                puback: Quantiles::of(&latency.puback),
                lag: Quantiles::of(&latency.lag),
            },
            errors,
            device_failures: s.device_causes.clone(),
            connects: Connects {
                attempts: s.connect_attempts_per_second.iter().sum(),
                ok: s.connects_ok,
                failed: s.connect_failures.clone(),
                disconnects: s.disconnects,
                reconnects: s.reconnects,
                peak_per_second: s.connect_attempts_per_second.iter().copied().max().unwrap_or(0),
                per_second: s.connect_attempts_per_second.clone(),
            },
            duration_s: round2(elapsed.as_secs_f64()),
            settings: Settings {
                endpoint: cfg.endpoint.clone(),
                port: cfg.port,
                topic: cfg.topic.clone(),
                qos: cfg.qos as u8,
                devices: n,
                interval_ms: match cfg.schedule {
                    Schedule::Every(i) => Some(i.as_secs_f64() * 1000.0),
                    Schedule::Max => None,
                },
                rate: match (cfg.schedule, cfg.target_rate) {
                    (Schedule::Max, _) => Some("max".into()),
                    (_, Some(r)) => Some(r.to_string()),
                    _ => None,
                },
                count: cfg.count,
                payload_bytes: cfg.payload_bytes,
                max_inflight: cfg.max_inflight,
                ramp_up: cfg.ramp_up,
                profile: cfg.profile,
                offline_queue: cfg.offline_queue,
                persistent_session: cfg.persistent_session,
                keep_alive_s: cfg.keep_alive.as_secs(),
                seed: cfg.seed,
                bind: cfg.bind.clone(),
            },
            histograms,
        }
    }
}

fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

fn encode(h: &Histogram<u64>) -> Option<String> {
    let mut bytes = Vec::new();
    V2DeflateSerializer::new().serialize(h, &mut bytes).ok()?;
    Some(base64::engine::general_purpose::STANDARD.encode(bytes))
}

/// Writes the JSON report to `path`, or to stdout for `-`.
pub fn write(report: &Report, path: &Path) -> Result<()> {
    let json = serde_json::to_string_pretty(report)?;
    if path == Path::new("-") {
        println!("{json}");
        return Ok(());
    }
    std::fs::write(path, json + "\n").with_context(|| format!("writing the report {}", path.display()))
}

/// The summary table: devices, connections, events, rate, latency, and every failure by cause.
pub fn summary(r: &Report, qos0: bool) -> String {
    let mut out = String::new();
    let m = &r.messages;
    let _ = writeln!(out, "freezer-fleet summary after {:.1} s", r.duration_s);
    let _ = writeln!(
        out,
        "  devices   {} connected, {} failed (of {})",
        r.devices.connected, r.devices.failed, r.devices.target
    );
    let _ = writeln!(
        out,
        "  connects  {} attempts (peak {}/s), {} ok, {} failed, {} disconnects, {} reconnects",
        r.connects.attempts,
        r.connects.peak_per_second,
        r.connects.ok,
        r.connects.failed.values().sum::<u64>(),
        r.connects.disconnects,
        r.connects.reconnects
    );
    let acked = if qos0 {
        "n/a at QoS 0".to_string()
    } else {
        m.acknowledged.to_string()
    };
    let injected = if m.injected > 0 {
        format!(" ({} injected)", m.injected)
    } else {
        String::new()
    };
    let _ = writeln!(
        out,
        "  events    {} taken, {} published, {acked} acknowledged, {} failed{injected}",
        m.taken, m.published, m.failed
    );
    if m.queued_offline + m.resent + m.dropped > 0 {
        let _ = writeln!(
            out,
            "  offline   {} queued while disconnected, {} re-sent, {} dropped",
            m.queued_offline, m.resent, m.dropped
        );
    }
    let target = r
        .rate
        .target
        .map(|t| format!(" (target {t})"))
        .unwrap_or_default();
    let _ = writeln!(out, "  rate      {} publishes/s{target}", r.rate.achieved);
    let q = |name: &str, q: &Quantiles| {
        if q.count == 0 {
            String::new()
        } else {
            format!("{name} p50 {} p99 {} max {} ms  ", q.p50, q.p99, q.max)
        }
    };
    let l = &r.latency_ms;
    let line = format!(
        "{}{}{}",
        q("connect", &l.connect),
        q("puback", &l.puback),
        q("lag", &l.lag)
    );
    if !line.is_empty() {
        let _ = writeln!(out, "  latency   {}", line.trim_end());
    }
    for (key, c) in &r.device_failures {
        let more = c.count.saturating_sub(c.devices.len() as u64);
        let names = if more > 0 {
            format!("{} and {more} more", c.devices.join(", "))
        } else {
            c.devices.join(", ")
        };
        let _ = writeln!(
            out,
            "  failed: {key}: {} device(s) ({names}): {}",
            c.count, c.example
        );
    }
    for (cause, n) in &r.errors {
        if !r.device_failures.contains_key(cause) {
            let _ = writeln!(out, "  events lost: {cause}: {n}");
        }
    }
    out
}
