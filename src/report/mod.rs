//! What a run reports: the summary on stderr and the JSON report (`--report FILE`, `-` =
//! stdout), both drawn from one [`Report`]. The schema is documented in README.md.
//!
//! Percentiles do not add up across machines, so the report also carries each latency
//! histogram in HdrHistogram's V2 deflate format (base64): shards of a run merge exactly.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use anyhow::{Context, Result};
use base64::Engine as _;
use hdrhistogram::Histogram;
use hdrhistogram::serialization::{Serializer, V2DeflateSerializer};
use serde::{Deserialize, Serialize};

pub mod html;
pub mod merge;
pub mod timeseries;
pub mod verdict;

use crate::config::{FleetConfig, Profile, Schedule};
use crate::stats::outage::Outages;
use crate::stats::{
    CauseCount, CommandCounts, ConnectCounts, DeviceCounts, FaultCounts, Latency, MessageCounts, Quantiles,
    Snapshot, Timings,
};

/// What a run reports. The top-level figures are those of the first sink (`--sink`, default
/// mqtt), so a single-sink report reads as it always has; `sinks` has every sink's, by name.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Report {
    #[serde(flatten)]
    pub figures: Figures,
    /// Wall time of the run, start to exit.
    pub duration_s: f64,
    /// Start to the stop request; the drain follows until `duration_s`.
    #[serde(default)]
    pub running_s: f64,
    pub settings: Settings,
    /// Each sink's figures, keyed by sink name (`mqtt`, `kinesis`, `firehose`, `firehose-proxy`).
    #[serde(default)]
    pub sinks: BTreeMap<String, Figures>,
    /// The `--fail-if` thresholds the run broke, with what was measured.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub broken_thresholds: Vec<verdict::Broken>,
    /// One row per second of the first sink (the `--timeseries` columns).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub timeline: Vec<timeseries::Row>,
    /// The generator's own health: its CPU and how late its timers fired, and whether it was
    /// saturated (then its latency figures describe itself, not the endpoint).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generator: Option<Generator>,
    /// Each scenario stage's own figures (the first sink's), keyed by stage name; the order is
    /// `settings.stages`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub stages: BTreeMap<String, Figures>,
    /// Each `[[group]]`'s own figures (the first sink's), keyed by group name; the top level is
    /// their total. The order is `settings.groups`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub groups: BTreeMap<String, Figures>,
}

impl std::ops::Deref for Report {
    type Target = Figures;
    fn deref(&self) -> &Figures {
        &self.figures
    }
}

impl std::ops::DerefMut for Report {
    fn deref_mut(&mut self) -> &mut Figures {
        &mut self.figures
    }
}

/// One sink's figures: what its devices did, what was delivered, how fast, what failed.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Figures {
    pub devices: Devices,
    pub messages: MessageCounts,
    pub rate: Rate,
    pub latency_ms: LatencyMs,
    /// Why devices gave up and why events were lost, by cause.
    pub errors: BTreeMap<String, u64>,
    /// Devices that gave up, by cause: how many, the first few ids, and the full sentence.
    pub device_failures: BTreeMap<String, CauseCount>,
    /// Devices that kept running under a suspicion (e.g. a client id in use twice), by cause.
    pub suspected: BTreeMap<String, CauseCount>,
    pub connects: Connects,
    /// What devices heard from the cloud and the console (`--listen`, console verbs).
    #[serde(default, skip_serializing_if = "CommandCounts::is_zero")]
    pub commands: CommandCounts,
    /// Data faults injected on purpose (`--faults`), by kind.
    #[serde(default, skip_serializing_if = "FaultCounts::is_zero")]
    pub faults: FaultCounts,
    /// What the server answered instead of a success, by error code or HTTP status; `(retried)`
    /// when the event was sent again.
    #[serde(default)]
    pub refusals: BTreeMap<String, u64>,
    /// Unplanned drops: how many, the longest, how many devices were down, how fast they came
    /// back, and how long the events taken meanwhile waited.
    #[serde(default, skip_serializing_if = "Outages::is_quiet")]
    pub outages: Outages,
    /// The latency histograms (µs), HdrHistogram V2 deflate, base64: merge shards exactly.
    pub histograms: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Devices {
    pub target: usize,
    #[serde(flatten)]
    pub counts: DeviceCounts,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Rate {
    /// Publishes per second asked for (--rate), or implied by --interval; null for on demand / max.
    pub target: Option<f64>,
    /// Publishes per second while the fleet was running (first connect to stop).
    pub achieved: f64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LatencyMs {
    /// TCP + TLS + CONNACK, per attempt that connected.
    pub connect: Quantiles,
    /// Intended send time to PUBACK (QoS 1): a stall shows here, not as a lower rate.
    pub puback: Quantiles,
    /// Intended send time to the publish being written.
    pub lag: Quantiles,
    /// How late device timers fired: the generator's own delay.
    #[serde(default)]
    pub sched: Quantiles,
    /// Events meant for before their device's first CONNACK (the connect phase), apart:
    /// `puback` and `lag` above are the steady state's.
    #[serde(default)]
    pub connect_phase: ConnectPhase,
}

/// The connect phase's latency (events that waited for their device's first connection).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct ConnectPhase {
    pub puback: Quantiles,
    pub lag: Quantiles,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Connects {
    pub attempts: u64,
    #[serde(flatten)]
    pub counts: ConnectCounts,
    /// Attempts that failed, by cause.
    pub failed: BTreeMap<String, u64>,
    pub peak_per_second: u64,
    pub per_second: Vec<u64>,
}

/// The settings a run used (no file paths, no key material).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Settings {
    pub endpoint: String,
    pub port: u16,
    pub topic: String,
    /// The ALPN protocol offered, if any.
    pub alpn: Option<String>,
    pub transport: crate::config::TransportKind,
    pub mqtt_version: crate::config::MqttVersion,
    pub qos: u8,
    pub devices: usize,
    pub interval_ms: Option<f64>,
    pub rate: Option<String>,
    /// Publishes per second asked for or implied (not in the JSON: `rate.target` carries it).
    #[serde(skip)]
    pub target_rate: Option<f64>,
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
    /// `I/N` when this process ran one shard of the fleet; the number of reports a merge joined.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shard: Option<String>,
    /// Where events went (`--sink`), in order.
    #[serde(default)]
    pub sinks: Vec<String>,
    /// The Kinesis stream (`--stream`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream: Option<String>,
    /// The Firehose delivery stream (`--delivery-stream`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delivery_stream: Option<String>,
    /// The proxy, scheme, host and path only (`--url`); its headers are never reported.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// The scenario's stages, in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub stages: Vec<String>,
    /// `--replay`: the recording and what became of its rows.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replay: Option<ReplayInfo>,
    /// The `[[group]]`s, in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub groups: Vec<String>,
}

/// A replayed recording in the report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReplayInfo {
    pub file: String,
    pub rows: u64,
    pub devices: usize,
    /// Rows for devices this process does not run: counted, not sent.
    pub skipped_rows: u64,
    pub skipped_devices: Vec<String>,
    pub looped: bool,
}

impl Settings {
    /// What a report says of a run's configuration.
    pub fn of(cfg: &FleetConfig) -> Settings {
        Settings {
            endpoint: cfg.endpoint.clone(),
            port: cfg.port,
            topic: cfg.topic.clone(),
            alpn: cfg.alpn.first().map(|a| String::from_utf8_lossy(a).into_owned()),
            transport: cfg.transport,
            mqtt_version: cfg.mqtt_version,
            qos: cfg.qos as u8,
            devices: cfg.devices.len(),
            interval_ms: match cfg.schedule {
                Schedule::OnDemand => Some(0.0),
                Schedule::Max => None,
                s => s.interval().map(|i| i.as_secs_f64() * 1000.0),
            },
            rate: match cfg.schedule {
                Schedule::Max => Some("max".into()),
                Schedule::Rate { per_second, .. } => Some(per_second.to_string()),
                _ => None,
            },
            // With stages the rate changes; each stage's figures carry its own target.
            target_rate: cfg.target_rate().filter(|_| cfg.stages.is_empty()),
            count: cfg.count,
            payload_bytes: cfg.payload_bytes,
            max_inflight: cfg.max_inflight,
            ramp_up: cfg.link.ramp_up,
            profile: cfg.profile,
            offline_queue: cfg.link.offline_queue,
            persistent_session: cfg.link.persistent_session,
            keep_alive_s: cfg.link.keep_alive.as_secs(),
            seed: cfg.seed.value,
            bind: cfg.bind.clone(),
            shard: (!cfg.shard.is_whole()).then(|| cfg.shard.to_string()),
            sinks: cfg.sinks.kinds.iter().map(|k| k.name().to_string()).collect(),
            stream: cfg.sinks.stream.clone(),
            delivery_stream: cfg.sinks.delivery_stream.clone(),
            url: cfg.sinks.proxy.as_ref().map(|p| {
                let u = &p.url;
                format!(
                    "{}://{}{}",
                    u.scheme(),
                    u.host_str().unwrap_or_default(),
                    u.path()
                )
            }),
            stages: cfg.stages.iter().map(|s| s.name.clone()).collect(),
            groups: cfg.groups.iter().map(|g| g.name.clone()).collect(),
            replay: cfg.replay.as_ref().map(|p| ReplayInfo {
                file: p.file.display().to_string(),
                rows: p.replay.rows,
                devices: p.replay.by_device.len(),
                skipped_rows: p.skipped_rows,
                skipped_devices: p.skipped_devices.clone(),
                looped: p.looped,
            }),
        }
    }
}

/// One sink's counters and histograms at the end of a run.
pub struct SinkFigures<'a> {
    pub name: &'a str,
    pub snapshot: &'a Snapshot,
    pub latency: &'a Latency,
}

impl Report {
    /// The report of a run with one sink or more (the first is the top level).
    pub fn new(settings: Settings, sinks: &[SinkFigures], t: Timings) -> Report {
        let figures: BTreeMap<String, Figures> = sinks
            .iter()
            .map(|s| {
                (
                    s.name.to_string(),
                    Figures::new(&settings, s.snapshot, s.latency, t),
                )
            })
            .collect();
        let first = sinks
            .first()
            .map(|s| figures[s.name].clone())
            .unwrap_or_else(|| Figures::new(&settings, &Snapshot::default(), &Latency::default(), t));
        Report {
            figures: first,
            duration_s: round2(t.elapsed.as_secs_f64()),
            running_s: round2(t.running_for.as_secs_f64()),
            settings,
            sinks: figures,
            broken_thresholds: Vec::new(),
            timeline: Vec::new(),
            generator: None,
            stages: BTreeMap::new(),
            groups: BTreeMap::new(),
        }
    }
}

impl Figures {
    pub fn new(settings: &Settings, s: &Snapshot, latency: &Latency, t: Timings) -> Figures {
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
            ("sched", &latency.sched),
            ("puback_connecting", &latency.puback_connecting),
            ("lag_connecting", &latency.lag_connecting),
            ("lag_outage", &latency.lag_outage),
        ]
        .into_iter()
        .filter_map(|(name, h)| encode(h).map(|b| (name.to_string(), b)))
        .collect();
        let per_second = &s.connect_attempts_per_second;
        Figures {
            devices: Devices {
                target: settings.devices,
                counts: s.devices,
            },
            messages: s.messages,
            rate: Rate {
                target: settings.target_rate.map(round2),
                achieved: round2(s.messages.published as f64 / t.running_for.as_secs_f64().max(1e-3)),
            },
            latency_ms: LatencyMs {
                connect: Quantiles::of(&latency.connect),
                puback: Quantiles::of(&latency.puback),
                lag: Quantiles::of(&latency.lag),
                sched: Quantiles::of(&latency.sched),
                connect_phase: ConnectPhase {
                    puback: Quantiles::of(&latency.puback_connecting),
                    lag: Quantiles::of(&latency.lag_connecting),
                },
            },
            errors,
            device_failures: s.device_causes.clone(),
            suspected: s.suspected.clone(),
            connects: Connects {
                attempts: per_second.iter().sum(),
                counts: s.connects,
                failed: s.connect_failures.clone(),
                peak_per_second: per_second.iter().copied().max().unwrap_or(0),
                per_second: per_second.clone(),
            },
            commands: s.commands,
            faults: s.faults,
            refusals: s.refusals.clone(),
            outages: Outages {
                waited_ms: Quantiles::of(&latency.lag_outage),
                ..s.outages.clone()
            },
            histograms,
        }
    }
}

pub(crate) use crate::stats::round2;

pub(crate) fn encode(h: &Histogram<u64>) -> Option<String> {
    let mut bytes = Vec::new();
    V2DeflateSerializer::new().serialize(h, &mut bytes).ok()?;
    Some(base64::engine::general_purpose::STANDARD.encode(bytes))
}

/// Writes the report to `path`: HTML when it ends in `.html`, else JSON (`-` = stdout).
pub fn write(report: &Report, path: &Path) -> Result<()> {
    if path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("html") || e.eq_ignore_ascii_case("htm"))
    {
        return std::fs::write(path, html::render(report))
            .with_context(|| format!("writing the report {}", path.display()));
    }
    let json = serde_json::to_string_pretty(report)?;
    if path == Path::new("-") {
        println!("{json}");
        return Ok(());
    }
    std::fs::write(path, json + "\n").with_context(|| format!("writing the report {}", path.display()))
}

/// The summary table: devices, connections, events, rate, latency, and every failure by cause.
pub fn summary(r: &Report) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "freezer-fleet summary after {:.1} s", r.duration_s);
    let (d, c) = (&r.devices, &r.connects);
    let _ = writeln!(
        out,
        "  devices   {} connected, {} failed (of {})",
        d.counts.connected, d.counts.failed, d.target
    );
    let _ = writeln!(
        out,
        "  connects  {} attempts (peak {}/s), {} ok, {} failed, {} disconnects, {} reconnects",
        c.attempts,
        c.peak_per_second,
        c.counts.ok,
        c.failed.values().sum::<u64>(),
        c.counts.disconnects,
        c.counts.reconnects
    );
    write_attempts_and_outages(&mut out, r);
    write_events(&mut out, &r.messages, r.settings.qos == 0);
    let target = r
        .rate
        .target
        .map(|t| format!(" (target {t})"))
        .unwrap_or_default();
    let _ = writeln!(out, "  rate      {} publishes/s{target}", r.rate.achieved);
    let l = &r.latency_ms;
    let line = [("connect", &l.connect), ("puback", &l.puback), ("lag", &l.lag)]
        .iter()
        .filter(|(_, q)| q.count > 0)
        .map(|(name, q)| format!("{name} p50 {} p99 {} max {} ms", q.p50, q.p99, q.max))
        .collect::<Vec<_>>()
        .join("  ");
    if !line.is_empty() {
        let _ = writeln!(out, "  latency   {line}");
    }
    let cp = &l.connect_phase;
    if cp.puback.count + cp.lag.count > 0 {
        let q = if cp.puback.count > 0 { &cp.puback } else { &cp.lag };
        let what = if cp.puback.count > 0 { "puback" } else { "lag" };
        let _ = writeln!(
            out,
            "  connect phase {} event(s) meant for before their device's first connection (not in the latency above): {what} p50 {} p99 {} max {} ms",
            q.count, q.p50, q.p99, q.max
        );
    }
    if !r.commands.is_zero() {
        let k = &r.commands;
        let _ = writeln!(
            out,
            "  commands  {} received, {} answered ok, {} refused; shadow {} deltas, {} reports; {} console actions",
            k.received, k.answered, k.refused, k.shadow_deltas, k.shadow_updates, k.console_actions
        );
    }
    if !r.faults.is_zero() {
        let f = &r.faults;
        let _ = writeln!(
            out,
            "  faults    injected on purpose: {} duplicates, {} reordered, {} late, {} malformed, {} offline bursts, {} devices with a skewed clock",
            f.duplicate, f.reorder, f.late, f.malformed, f.bursts, f.skewed_devices
        );
    }
    write_refusals(&mut out, &r.refusals);
    write_failures(&mut out, r);
    if let Some(g) = &r.generator {
        write_generator(&mut out, g);
    }
    for name in &r.settings.stages {
        if let Some(f) = r.stages.get(name) {
            write_stage(&mut out, name, f);
        }
    }
    for name in &r.settings.groups {
        if let Some(f) = r.groups.get(name) {
            write_group(&mut out, name, f);
        }
    }
    if r.sinks.len() > 1 {
        for name in &r.settings.sinks {
            if let Some(f) = r.sinks.get(name) {
                write_sink(&mut out, name, f);
            }
        }
    }
    out
}

/// The generator's own health over a run.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Generator {
    /// Cores this process may run on.
    pub cores: usize,
    /// Its CPU, in percent of one core: the mean over the running seconds, and the busiest second.
    pub cpu_mean_pct: f64,
    pub cpu_max_pct: f64,
    /// How late device timers fired, p99 over the run.
    pub timers_late_p99_ms: f64,
    /// This process's TCP send queues: the most bytes waiting in all of them at one look, and
    /// in one connection.
    #[serde(default)]
    pub send_queue_peak_bytes: u64,
    #[serde(default)]
    pub send_queue_max_bytes: u64,
    pub saturated: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub why: Option<String>,
}

/// Timers late by more than this at p99 mean the generator could not keep its schedule.
pub const LATE_LIMIT_MS: f64 = 10.0;
/// A mean CPU above this share of the cores available means the generator had no room left.
pub const CPU_LIMIT: f64 = 0.9;

impl Generator {
    /// Judges a run from its timeline (the drain left out) and its timer lateness.
    pub fn judge(timeline: &[timeseries::Row], late: &Quantiles, cores: usize) -> Generator {
        let running: Vec<f64> = timeline
            .iter()
            .filter(|r| r.stage != "drain")
            .map(|r| r.cpu_pct)
            .collect();
        let mean = running.iter().sum::<f64>() / running.len().max(1) as f64;
        let peak = |f: fn(&timeseries::Row) -> u64| timeline.iter().map(f).max().unwrap_or(0);
        let max = running.iter().copied().fold(0.0, f64::max);
        let mut why = Vec::new();
        if late.p99 > LATE_LIMIT_MS {
            why.push(format!(
                "timers late by {:.1} ms at p99 (over {LATE_LIMIT_MS} ms)",
                late.p99
            ));
        }
        if mean >= CPU_LIMIT * 100.0 * cores as f64 {
            why.push(format!("CPU {mean:.0}% of {cores} core(s) on average"));
        }
        Generator {
            cores,
            cpu_mean_pct: round2(mean.max(0.0)),
            cpu_max_pct: round2(max),
            timers_late_p99_ms: late.p99,
            send_queue_peak_bytes: peak(|r| r.send_queue_bytes),
            send_queue_max_bytes: peak(|r| r.send_queue_max_bytes),
            saturated: !why.is_empty(),
            why: (!why.is_empty()).then(|| why.join(", ")),
        }
    }
}

/// The generator's line, and a warning when it was saturated.
fn write_generator(out: &mut String, g: &Generator) {
    let _ = writeln!(
        out,
        "  generator CPU {}% mean, {}% max (100% = one core; {} available), timers late p99 {} ms, \
         send queues at most {} ({} in one connection)",
        g.cpu_mean_pct,
        g.cpu_max_pct,
        g.cores,
        g.timers_late_p99_ms,
        bytes(g.send_queue_peak_bytes),
        bytes(g.send_queue_max_bytes)
    );
    if let Some(why) = &g.why {
        let _ = writeln!(
            out,
            "  WARNING: the generator was saturated ({why}): its latency figures describe itself, not the endpoint; \
             run fewer devices per process (--shard) or give it more cores"
        );
    }
}

/// A byte count for people: `512 B`, `12.3 KB`, `4.1 MB`.
pub fn bytes(n: u64) -> String {
    match n {
        n if n < 1000 => format!("{n} B"),
        n if n < 1_000_000 => format!("{:.1} KB", n as f64 / 1e3),
        n => format!("{:.1} MB", n as f64 / 1e6),
    }
}

/// One scenario stage's line.
fn write_stage(out: &mut String, name: &str, f: &Figures) {
    let m = &f.messages;
    let p = &f.latency_ms.puback;
    let _ = writeln!(
        out,
        "  stage {name}: {} events/s, {} published, {} acknowledged, {} lost, {} disconnects; PUBACK p50 {} p99 {} ms",
        f.rate.achieved,
        m.published,
        m.acknowledged,
        m.failed + m.dropped,
        f.connects.counts.disconnects,
        p.p50,
        p.p99
    );
}

/// One `[[group]]`'s line.
fn write_group(out: &mut String, name: &str, f: &Figures) {
    let m = &f.messages;
    let p = &f.latency_ms.puback;
    let target = f
        .rate
        .target
        .map(|t| format!(" (target {t})"))
        .unwrap_or_default();
    let _ = writeln!(
        out,
        "  group {name}: {} of {} devices connected, {} events/s{target}, {} published, {} acknowledged, {} lost; PUBACK p50 {} p99 {} ms",
        f.devices.counts.connected,
        f.devices.target,
        f.rate.achieved,
        m.published,
        m.acknowledged,
        m.failed + m.dropped,
        p.p50,
        p.p99
    );
}

/// One sink's lines, when a run had several.
fn write_sink(out: &mut String, name: &str, f: &Figures) {
    let m = &f.messages;
    let requests = in_requests(m);
    let _ = writeln!(
        out,
        "  sink {name}: {} taken, {} sent{requests}, {} acknowledged, {} failed, {} re-sent; {} events/s",
        m.taken, m.published, m.acknowledged, m.failed, m.resent, f.rate.achieved
    );
    let l = &f.latency_ms;
    if l.puback.count > 0 {
        let _ = writeln!(
            out,
            "    latency p50 {} p99 {} max {} ms (intended send time to acknowledgement)",
            l.puback.p50, l.puback.p99, l.puback.max
        );
    }
    write_refusals(out, &f.refusals);
}

/// " in N requests" for the sinks that make HTTP requests; nothing for MQTT.
fn in_requests(m: &MessageCounts) -> String {
    if m.requests > 0 {
        format!(" in {} requests", m.requests)
    } else {
        String::new()
    }
}

fn write_refusals(out: &mut String, refusals: &BTreeMap<String, u64>) {
    if !refusals.is_empty() {
        let list: Vec<String> = refusals.iter().map(|(k, n)| format!("{k} {n}")).collect();
        let _ = writeln!(out, "    refusals: {}", list.join(", "));
    }
}

fn write_events(out: &mut String, m: &MessageCounts, qos0: bool) {
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
    let requests = in_requests(m);
    let _ = writeln!(
        out,
        "  events    {} taken, {} published{requests}, {acked} acknowledged, {} failed{injected}",
        m.taken, m.published, m.failed
    );
    if m.queued_offline + m.resent + m.dropped > 0 {
        let _ = writeln!(
            out,
            "  offline   {} queued while disconnected, {} re-sent, {} dropped",
            m.queued_offline, m.resent, m.dropped
        );
    }
}

/// Failed connection attempts by cause, each said to be the network's or the server's word;
/// then the story of the outages, if any.
fn write_attempts_and_outages(out: &mut String, r: &Report) {
    let mut failed: Vec<(&String, &u64)> = r.connects.failed.iter().collect();
    failed.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
    for (cause, n) in failed {
        let whose = if crate::cause::network_key(cause) {
            "the network or the endpoint"
        } else {
            "the server's answer"
        };
        let _ = writeln!(out, "  failed attempts: {cause}: {n} ({whose})");
    }
    let o = &r.outages;
    if o.is_quiet() {
        return;
    }
    let mut line = format!(
        "  outages   {} over, the longest {} s with {} device(s) down, every device back {} s after the first",
        o.episodes, o.longest_s, o.devices_down, o.recovery_s
    );
    if let Some(id) = &o.longest_device {
        let _ = write!(line, "; longest offline {} s ({id})", o.longest_device_offline_s);
    }
    if o.waited_ms.count > 0 {
        let w = &o.waited_ms;
        let _ = write!(
            line,
            "; {} event(s) taken meanwhile waited p50 {:.1} s, max {:.1} s",
            w.count,
            w.p50 / 1000.0,
            w.max / 1000.0
        );
    }
    if o.still_down > 0 {
        let _ = write!(line, "; {} device(s) still down at the end", o.still_down);
    }
    let _ = writeln!(out, "{line}");
}

fn write_failures(out: &mut String, r: &Report) {
    for (label, map) in [("failed", &r.device_failures), ("suspected", &r.suspected)] {
        for (key, c) in map {
            let more = c.count.saturating_sub(c.devices.len() as u64);
            let names = if more > 0 {
                format!("{} and {more} more", c.devices.join(", "))
            } else {
                c.devices.join(", ")
            };
            let _ = writeln!(
                out,
                "  {label}: {key}: {} device(s) ({names}): {}",
                c.count, c.example
            );
        }
    }
    for (cause, n) in &r.errors {
        if !r.device_failures.contains_key(cause) {
            let _ = writeln!(out, "  events lost: {cause}: {n}");
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::stats::{Loss, Stats};

    fn settings() -> Settings {
        Settings {
            endpoint: "localhost".into(),
            port: 8883,
            topic: "freezers".into(),
            alpn: None,
            transport: Default::default(),
            mqtt_version: Default::default(),
            qos: 1,
            devices: 7,
            interval_ms: Some(500.0),
            rate: None,
            target_rate: Some(14.0),
            count: None,
            payload_bytes: None,
            max_inflight: 100,
            ramp_up: None,
            profile: Profile::None,
            offline_queue: 1000,
            persistent_session: false,
            keep_alive_s: 60,
            seed: 1,
            bind: vec![],
            shard: None,
            sinks: vec!["mqtt".into()],
            stream: None,
            delivery_stream: None,
            url: None,
            stages: vec![],
            replay: None,
            groups: vec![],
        }
    }

    fn report() -> Report {
        let stats = Stats::default();
        stats.devices.connected.add(6);
        stats.connects.ok.add(8);
        stats.connects.disconnects.add(2);
        stats.connects.reconnects.add(2);
        for _ in 0..9 {
            stats.connect_attempt(Duration::from_millis(300));
        }
        stats.connect_failed(crate::cause::Kind::Refused);
        for _ in 0..140 {
            stats.event_taken(false);
            stats.messages.published.inc();
            stats.messages.acknowledged.inc();
        }
        stats.messages.injected.inc();
        stats.record_puback(0, Duration::from_millis(4), false);
        let why = crate::cause::Cause::new(
            crate::cause::Kind::ClientCertRejected,
            "127.0.0.1:8883 rejected it".into(),
        );
        stats.device_failed("freezer7", &why);
        stats.events_failed(3, Loss::NotSent);
        let timings = Timings {
            running_for: Duration::from_secs(10),
            elapsed: Duration::from_millis(10_400),
        };
        let sink = SinkFigures {
            name: "mqtt",
            snapshot: &stats.snapshot(),
            latency: &stats.latency(),
        };
        Report::new(settings(), &[sink], timings)
    }

    #[test]
    fn the_summary_reads_as_it_always_has() {
        let expected = "\
freezer-fleet summary after 10.4 s
  devices   6 connected, 1 failed (of 7)
  connects  9 attempts (peak 9/s), 8 ok, 1 failed, 2 disconnects, 2 reconnects
  failed attempts: connection refused: 1 (the network or the endpoint)
  events    140 taken, 140 published, 140 acknowledged, 3 failed (1 injected)
  rate      14 publishes/s (target 14)
  latency   puback p50 4.001 p99 4.001 max 4.001 ms
  failed: client certificate rejected: 1 device(s) (freezer7): 127.0.0.1:8883 rejected it
  events lost: not sent before shutdown: 3
";
        assert_eq!(summary(&report()), expected);
    }

    #[test]
    fn the_json_report_keeps_its_schema() {
        let v = serde_json::to_value(report()).unwrap();
        assert_eq!(
            v["devices"],
            serde_json::json!({"target": 7, "connected": 6, "failed": 1})
        );
        let m = &v["messages"];
        for key in [
            "taken",
            "queued_offline",
            "published",
            "acknowledged",
            "failed",
            "dropped",
            "resent",
            "injected",
        ] {
            assert!(m[key].is_u64(), "messages.{key}");
        }
        assert_eq!(v["connects"]["attempts"], 9);
        assert_eq!(v["connects"]["ok"], 8);
        assert_eq!(v["connects"]["failed"]["connection refused"], 1);
        assert_eq!(v["rate"]["target"], 14.0);
        assert_eq!(v["settings"]["interval_ms"], 500.0);
        assert!(v["settings"].get("target_rate").is_none());
        assert!(v["histograms"]["puback"].is_string());
        assert_eq!(v["errors"]["not sent before shutdown"], 3);
    }
}
