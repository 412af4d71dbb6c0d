//! `run`: pre-flight check, the fleet with its console, signals and live view, then the summary,
//! the report and the exit code.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Result;
use tokio::sync::mpsc;

use crate::aws::credentials::Session;
use crate::aws::endpoint;
use crate::aws::json::{self, JsonApi};
use crate::cli::RunArgs;
use crate::config::SinkKind;
use crate::config::{self, FleetConfig, MqttVersion, Profile, TransportKind};
use crate::console::{self, Command, ConsoleLines};
use crate::device::{InjectNote, Poke};
use crate::error::exit;
use crate::fleet::{Fleet, Injectors, Outcome, SinkOutcome, StopReason, Target};
use crate::live::{self, LiveView};
use crate::report::timeseries::TimeSeries;
use crate::report::{self, Report, Settings, SinkFigures};
use crate::signals::Signals;
use crate::stats::Stats;
use crate::transport::batch::{Batch, Firehose, Kinesis};
use crate::transport::https::Https;
use crate::transport::mqtt::{Mqtt, WsSigner};
use crate::transport::mqtt5::Mqtt5;
use crate::transport::proxy::FirehoseProxy;
use crate::{nofile, preflight, preflight_sinks, stop};

/// How long a device waits for TCP + TLS + CONNACK.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How often the live view and the connected announcement are checked.
const PROGRESS_EVERY: Duration = Duration::from_millis(250);
/// One `--timeseries` row per this.
const SAMPLE_EVERY: Duration = Duration::from_secs(1);

pub fn run(args: RunArgs) -> Result<i32> {
    let check = args.check;
    let (flags, file) = args.into_layer();
    let cfg = config::resolve(flags, file.as_deref())?;
    if check {
        announce(&cfg);
        live::eprintln(&format!(
            "check: the configuration and {} device identit{} are valid; nothing was sent (run without --check to start)",
            cfg.devices.len(),
            if cfg.devices.len() == 1 { "y" } else { "ies" }
        ));
        return Ok(exit::OK);
    }
    super::runtime()?.block_on(async {
        // Created first, so a bad path stops the run before anything connects.
        let series = TimeSeries::new(cfg.timeseries.as_deref(), acknowledged(&cfg))?;
        let mut first_connect = None;
        if cfg.sinks.has(SinkKind::Mqtt) {
            preflight::check(&cfg).await?;
            first_connect = preflight::connect_as_first_device(&cfg, mqtt(&cfg, None)).await?;
        }
        let outcome = run_fleet(&cfg, ConsoleLines::spawn(), series, first_connect).await?;
        Ok(exit_code(&outcome))
    })
}

/// The MQTT transport for a run's settings.
fn mqtt(cfg: &FleetConfig, websocket: Option<WsSigner>) -> Mqtt {
    Mqtt {
        host: cfg.endpoint.clone(),
        port: cfg.port,
        topic: cfg.topic.clone(),
        qos: cfg.qos,
        keep_alive: cfg.link.keep_alive,
        persistent_session: cfg.link.persistent_session,
        max_inflight: cfg.max_inflight,
        payload_bytes: cfg.payload_bytes,
        connect_timeout: CONNECT_TIMEOUT,
        bind: cfg.bind.clone(),
        websocket,
        listen: cfg.model.listen,
    }
}

/// What the sinks need, found and checked before anything is printed: AWS credentials (the
/// standard chain, or an assumed role) when a sink signs with them, each AWS API's client, and
/// each sink's pre-flight check.
struct Prepared {
    session: Option<Session>,
    kinesis: Option<JsonApi>,
    firehose: Option<JsonApi>,
}

impl Prepared {
    async fn new(cfg: &FleetConfig) -> Result<Prepared> {
        let s = &cfg.sinks;
        let ws = s.has(SinkKind::Mqtt) && cfg.transport == TransportKind::MqttWs;
        let session = match ws || s.uses_aws() {
            true => Some(crate::aws::credentials::session(&cfg.aws).await?),
            false => None,
        };
        let mut prepared = Prepared {
            session,
            kinesis: None,
            firehose: None,
        };
        if let (Some(stream), Some(session)) = (&s.stream, &prepared.session)
            && s.has(SinkKind::Kinesis)
        {
            let api = json_api(endpoint::KINESIS, "Kinesis_20131202", session)?;
            preflight_sinks::check_stream(&api, "kinesis", "--stream", stream).await?;
            prepared.kinesis = Some(api);
        }
        if let (Some(stream), Some(session)) = (&s.delivery_stream, &prepared.session)
            && s.has(SinkKind::Firehose)
        {
            let api = json_api(endpoint::FIREHOSE, "Firehose_20150804", session)?;
            preflight_sinks::check_stream(&api, "firehose", "--delivery-stream", stream).await?;
            prepared.firehose = Some(api);
        }
        if let Some(proxy) = &s.proxy {
            preflight_sinks::check_proxy(proxy).await?;
        }
        Ok(prepared)
    }

    /// Starts every device on each sink of `cfg`.
    fn start(self, cfg: &FleetConfig, first_connect: Option<FirstConnect>) -> Fleet {
        if let Some(s) = &self.session {
            tracing::info!(
                "signing AWS requests for region {} with credentials from {}",
                s.region,
                s.credentials.origin
            );
        }
        if let Err(e) = crate::workers::start() {
            tracing::warn!("device threads: {e}; the devices share the main runtime");
        }
        let mut fleet = Fleet::new(cfg, cfg.sinks.kinds.len());
        // IoT Core takes one CONNECT per second per client id, the pre-flight's included.
        if let Some((id, at)) = first_connect.filter(|_| cfg.profile == Profile::AwsIot) {
            fleet.connected_before(id, at);
        }
        let seed = cfg.seed.value;
        for kind in &cfg.sinks.kinds {
            let stats = Arc::new(Stats::default());
            let name = kind.name();
            match kind {
                SinkKind::Mqtt => {
                    let signer = websocket_signer(cfg, self.session.as_ref());
                    match (cfg.transport, cfg.mqtt_version) {
                        (TransportKind::Https, _) => fleet.add(name, https(cfg), stats),
                        (_, MqttVersion::V311) => fleet.add(name, mqtt(cfg, signer), stats),
                        (_, MqttVersion::V5) => fleet.add(name, Mqtt5(mqtt(cfg, signer)), stats),
                    }
                }
                SinkKind::Kinesis => {
                    let api = self.kinesis.clone().expect("prepared with --stream");
                    let put = Kinesis {
                        stream: cfg.sinks.stream.clone().unwrap_or_default(),
                    };
                    fleet.add(name, Batch::start(put, api, stats.clone(), seed), stats);
                }
                SinkKind::Firehose => {
                    let api = self.firehose.clone().expect("prepared with --delivery-stream");
                    let put = Firehose {
                        delivery_stream: cfg.sinks.delivery_stream.clone().unwrap_or_default(),
                    };
                    fleet.add(name, Batch::start(put, api, stats.clone(), seed), stats);
                }
                SinkKind::FirehoseProxy => {
                    let proxy = cfg.sinks.proxy.as_ref().expect("checked: --url");
                    let stream = cfg.sinks.delivery_stream.as_deref().unwrap_or_default();
                    fleet.add(name, FirehoseProxy::new(proxy, stream, stats.clone()), stats);
                }
            }
        }
        fleet
    }
}

/// With `--transport mqtt-ws`: what signs every WebSocket connection.
fn websocket_signer(cfg: &FleetConfig, session: Option<&Session>) -> Option<WsSigner> {
    if cfg.transport != TransportKind::MqttWs {
        return None;
    }
    session.map(|s| WsSigner {
        host: cfg.endpoint.clone(),
        port: cfg.port,
        region: s.region.clone(),
        credentials: s.credentials.clone(),
    })
}

/// IoT Core's HTTPS publish for a run's settings.
fn https(cfg: &FleetConfig) -> Https {
    Https {
        host: cfg.endpoint.clone(),
        port: cfg.port,
        topic: cfg.topic.clone(),
        qos: cfg.qos as u8,
        request_timeout: CONNECT_TIMEOUT,
    }
}

/// A client of an AWS JSON API (Kinesis, Firehose) in the session's region.
fn json_api(service: endpoint::Service, prefix: &'static str, session: &Session) -> Result<JsonApi> {
    let (url, origin) = endpoint::url(service, &session.region)?;
    tracing::debug!("{} API at {url} ({origin})", service.name);
    Ok(JsonApi::new(
        json::http_client(None)?,
        url,
        service,
        prefix,
        session.clone(),
    ))
}

/// Runs the fleet to the end with the console on `console`; prints the summary and writes the
/// report.
/// A client id that already sent one CONNECT (the pre-flight's), and when.
pub type FirstConnect = (String, tokio::time::Instant);

pub async fn run_fleet(
    cfg: &FleetConfig,
    console: ConsoleLines,
    series: TimeSeries,
    first_connect: Option<FirstConnect>,
) -> Result<Outcome> {
    nofile::raise_open_files_limit(cfg.devices.len());
    let prepared = Prepared::new(cfg).await?;
    announce(cfg);
    let mut signals = Signals::new()?;
    let metrics = match cfg.metrics {
        Some(addr) => Some(crate::metrics::bind(addr).await?),
        None => None,
    };
    let launched = tokio::time::Instant::now();
    let mut fleet = prepared.start(cfg, first_connect);
    let stage = crate::metrics::CurrentStage::default();
    if let Some(listener) = metrics {
        let sinks = fleet
            .sinks()
            .iter()
            .zip(&cfg.sinks.kinds)
            .map(|(sink, kind)| {
                let name = match kind {
                    SinkKind::Mqtt => mqtt_sink_name(cfg.transport, cfg.mqtt_version),
                    other => other.name(),
                };
                let labels = vec![
                    ("shard".into(), cfg.shard.to_string()),
                    ("sink".into(), name.into()),
                ];
                (labels, sink.stats.clone())
            })
            .collect();
        crate::metrics::serve(listener, sinks, cfg.devices.len(), stage.clone());
    }
    let mut front = Front {
        console,
        notes: fleet.take_notes().expect("notes are taken once"),
        injectors: fleet.injectors(),
        live: LiveView::new(cfg.devices.len(), asked_rate(cfg)),
        announced: false,
        series,
        sampled: tokio::time::Instant::now(),
        launched,
        scenario: fleet.control().map(|c| {
            super::scenario::Scenario::new(cfg.stages.clone(), c, fleet.pacer(), cfg.target_rate(), stage)
        }),
    };
    let started = fleet.started();
    let stats = fleet.stats();
    let reason = fleet
        .run_until(front.until_stopped(&mut signals, started, cfg.duration, &stats))
        .await;
    front.live.clear();
    match reason {
        StopReason::Quit => live::eprintln("stopping (q)"),
        StopReason::Signal(sig) => live::eprintln(&format!("stopping ({sig})")),
        StopReason::Deadline => tracing::info!("--duration reached"),
        StopReason::StagesOver => tracing::info!("the scenario's stages are over"),
        StopReason::AllEnded if cfg.count.is_some() => tracing::info!("every device sent its --count"),
        StopReason::AllEnded => {}
    }
    let mut outcome = fleet
        .drain(async {
            let sig = signals.recv().await;
            live::eprintln(&format!(
                "{sig} again: stopping without waiting for acknowledgements"
            ));
        })
        .await;
    let sinks: Vec<SinkFigures> = outcome
        .sinks
        .iter()
        .map(|s| SinkFigures {
            name: &s.name,
            snapshot: &s.snapshot,
            latency: &s.latency,
        })
        .collect();
    let first = outcome.first();
    let elapsed = outcome.timings.elapsed.as_secs_f64();
    if let Err(e) = front
        .series
        .sample(elapsed, "drain", &first.snapshot, first.latency.clone())
    {
        tracing::warn!("--timeseries: {e}");
    }
    let mut report = Report::new(Settings::of(cfg), &sinks, outcome.timings);
    report.timeline = std::mem::take(&mut front.series.rows);
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    report.generator = Some(report::Generator::judge(
        &report.timeline,
        &report.latency_ms.sched,
        cores,
    ));
    for (i, (g, spec)) in outcome.groups.iter().zip(&cfg.groups).enumerate() {
        let mut f = report::Figures::new(&report.settings, &g.snapshot, &g.latency, outcome.timings);
        // This process's share of the group (all of it unless sharded), so shards merge exactly.
        let here = cfg.devices.iter().filter(|d| d.group == i).count();
        f.devices.target = here;
        f.rate.target = crate::config::groups::target_rate(spec, cfg.schedule)
            .map(|r| report::round2(r * here as f64 / spec.len().max(1) as f64));
        report.groups.insert(g.name.clone(), f);
    }
    if let Some(scenario) = &front.scenario {
        let end = (&first.snapshot, &first.latency, tokio::time::Instant::now());
        report.stages = scenario.figures(&report.settings, end).into_iter().collect();
    }
    report.broken_thresholds = cfg.thresholds.iter().filter_map(|t| t.check(&report)).collect();
    live::eprint(&report::summary(&report));
    for b in &report.broken_thresholds {
        live::eprintln(&format!(
            "threshold broken: {} (measured {})",
            b.threshold, b.measured
        ));
    }
    if !cfg.thresholds.is_empty() && report.broken_thresholds.is_empty() {
        tracing::info!("all {} --fail-if threshold(s) held", cfg.thresholds.len());
    }
    outcome.broken_thresholds = report.broken_thresholds.len();
    if let Some(path) = &cfg.report {
        report::write(&report, path)?;
    }
    Ok(outcome)
}

/// Whether the first sink's events wait for an acknowledgement (QoS 1, or an AWS API's answer).
fn acknowledged(cfg: &FleetConfig) -> bool {
    cfg.qos != rumqttc::QoS::AtMostOnce || cfg.sinks.kinds[0] != SinkKind::Mqtt
}

/// The MQTT sink's name as the `sink` label of metrics: how it reaches the endpoint.
fn mqtt_sink_name(transport: TransportKind, version: MqttVersion) -> &'static str {
    match (transport, version) {
        (TransportKind::Https, _) => "https",
        (TransportKind::Mqtt, MqttVersion::V311) => "mqtt",
        (TransportKind::Mqtt, MqttVersion::V5) => "mqtt5",
        (TransportKind::MqttWs, _) => "mqtt-ws",
    }
}

/// The rate the live line compares with: only one asked for with `--rate`.
fn asked_rate(cfg: &FleetConfig) -> Option<f64> {
    match cfg.schedule {
        crate::config::Schedule::Rate { .. } => cfg.target_rate(),
        _ => None,
    }
}

/// 1 when no device could connect, every device gave up or failed (a refusal named), or a sink
/// delivered nothing of what it was given; else 3 when a `--fail-if` threshold broke; 0 otherwise.
pub fn exit_code(outcome: &Outcome) -> i32 {
    for sink in &outcome.sinks {
        let code = sink_exit_code(sink, outcome.devices, outcome.sinks.len() > 1);
        if code != exit::OK {
            return code;
        }
    }
    if outcome.broken_thresholds > 0 {
        return exit::THRESHOLD;
    }
    exit::OK
}

fn sink_exit_code(sink: &SinkOutcome, n: usize, named: bool) -> i32 {
    let devices = &sink.snapshot.devices;
    let m = &sink.snapshot.messages;
    let on = if named {
        format!(" on sink {}", sink.name)
    } else {
        String::new()
    };
    if sink.name != "mqtt" && m.taken > 0 && m.acknowledged == 0 {
        live::eprintln(&format!(
            "error: sink {} delivered none of its {} event(s) (causes above)",
            sink.name, m.taken
        ));
        return exit::RUN_FAILED;
    }
    if devices.connected == 0 {
        live::eprintln(&format!(
            "error: none of the {n} device(s) could connect{on} (causes above)"
        ));
        exit::RUN_FAILED
    } else if devices.stopped as usize >= n {
        live::eprintln(&format!("error: every device gave up{on} (causes above)"));
        exit::RUN_FAILED
    } else if devices.failed as usize >= n {
        live::eprintln(&format!(
            "error: every device failed{on}: refused, gave up or never connected (causes above)"
        ));
        exit::RUN_FAILED
    } else {
        exit::OK
    }
}

fn announce(cfg: &FleetConfig) {
    let seed = cfg.seed.value;
    if cfg.seed.given {
        tracing::info!("seed {seed}");
    } else {
        tracing::info!("seed {seed} (pass --seed {seed} to repeat these readings)");
    }
    if !cfg.shard.is_whole() {
        tracing::info!(
            "shard {}: {} of the fleet's {} device(s)",
            cfg.shard,
            cfg.devices.len(),
            cfg.fleet_size
        );
    }
    let targets: Vec<String> = cfg.sinks.kinds.iter().map(|k| sink_target(cfg, *k)).collect();
    tracing::info!(
        "{} device(s) -> {}, {}{}",
        cfg.devices.len(),
        targets.join(" and "),
        if cfg.groups.is_empty() {
            cfg.schedule.to_string()
        } else {
            format!("in {} groups", cfg.groups.len())
        },
        cfg.link
            .ramp_up
            .map(|r| format!(", connecting at most {r}/s"))
            .unwrap_or_default()
    );
    for g in &cfg.groups {
        let qos = g.qos.map_or(String::new(), |q| {
            format!(", QoS {}", u8::from(q != rumqttc::QoS::AtMostOnce))
        });
        tracing::info!(
            "group {}: {} device(s) (fleet positions {}..{}), {}{}{}",
            g.name,
            g.len(),
            g.range.start + 1,
            g.range.end,
            g.schedule.unwrap_or(cfg.schedule),
            g.topic
                .as_ref()
                .map_or(String::new(), |t| format!(", topic '{t}'")),
            qos
        );
    }
    if let Some(p) = &cfg.replay {
        let skipped = if p.skipped_rows > 0 {
            let more = p.skipped_devices.len().saturating_sub(3);
            format!(
                "; {} row(s) for {} device(s) not in this fleet skipped ({}{})",
                p.skipped_rows,
                p.skipped_devices.len(),
                p.skipped_devices[..p.skipped_devices.len().min(3)].join(", "),
                if more > 0 {
                    format!(" and {more} more")
                } else {
                    String::new()
                }
            )
        } else {
            String::new()
        };
        tracing::info!(
            "replaying {}: {} row(s) for {} device(s) over {:.1} s at {}×{}{}",
            p.file.display(),
            p.replay.rows - p.skipped_rows,
            p.replay.by_device.len() - p.skipped_devices.len(),
            p.replay.span.as_secs_f64() / cfg.model.speed,
            cfg.model.speed,
            if p.looped { ", looped" } else { "" },
            skipped
        );
    }
    let m = &cfg.model;
    if m.speed != 1.0 || m.listen {
        tracing::info!(
            "freezer model at {}× real time{}",
            m.speed,
            if m.listen {
                "; devices listen to their shadow and to freezers/<id>/cmd"
            } else {
                ""
            }
        );
    }
}

/// Where one sink sends, in words.
fn sink_target(cfg: &FleetConfig, kind: SinkKind) -> String {
    let s = &cfg.sinks;
    match kind {
        SinkKind::Mqtt => {
            let how = match (cfg.transport, cfg.mqtt_version) {
                (TransportKind::Https, _) => "HTTPS",
                (TransportKind::Mqtt, MqttVersion::V5) => "MQTT 5",
                (TransportKind::Mqtt, MqttVersion::V311) => "MQTT 3.1.1",
                (TransportKind::MqttWs, MqttVersion::V5) => "MQTT 5 over WebSockets",
                (TransportKind::MqttWs, MqttVersion::V311) => "MQTT 3.1.1 over WebSockets",
            };
            format!(
                "{}:{} {how} topic '{}' QoS {}",
                cfg.endpoint, cfg.port, cfg.topic, cfg.qos as u8
            )
        }
        SinkKind::Kinesis => format!("Kinesis stream {}", s.stream.as_deref().unwrap_or_default()),
        SinkKind::Firehose => format!(
            "Firehose delivery stream {}",
            s.delivery_stream.as_deref().unwrap_or_default()
        ),
        SinkKind::FirehoseProxy => format!(
            "the Firehose proxy {} (delivery stream {})",
            s.proxy.as_ref().map(|p| p.url.to_string()).unwrap_or_default(),
            s.delivery_stream.as_deref().unwrap_or_default()
        ),
    }
}

/// What the person at the terminal sees and types while the fleet runs.
struct Front {
    console: ConsoleLines,
    notes: mpsc::UnboundedReceiver<InjectNote>,
    injectors: Injectors,
    live: LiveView,
    announced: bool,
    /// A row a second (the report's timeline, and `--timeseries`), and when it last had one.
    series: TimeSeries,
    /// The scenario's stages, when the run has them.
    scenario: Option<super::scenario::Scenario>,
    sampled: tokio::time::Instant,
    /// When the devices started (connecting at once, whatever --start-at says).
    launched: tokio::time::Instant,
}

impl Front {
    /// Serves the console, device notes and the live view until `q`, a signal or `--duration`.
    async fn until_stopped(
        &mut self,
        signals: &mut Signals,
        started: tokio::time::Instant,
        duration: Option<Duration>,
        stats: &crate::stats::Stats,
    ) -> StopReason {
        let mut progress = tokio::time::interval(PROGRESS_EVERY);
        let stop = stop::signal_or_deadline(signals, started, duration);
        tokio::pin!(stop);
        loop {
            tokio::select! {
                reason = &mut stop => return reason,
                Some(line) = self.console.recv() => {
                    if let Some(reason) = self.on_line(&line) {
                        return reason;
                    }
                }
                Some(note) = self.notes.recv() => live::eprintln(&describe(&note)),
                over = step(&mut self.scenario, stats) => if over {
                    return StopReason::StagesOver;
                },
                _ = progress.tick() => {
                    let s = stats.snapshot();
                    let n = self.injectors.len() as u64;
                    if !self.announced && s.devices.connected + s.devices.failed >= n {
                        self.announced = true;
                        // From the devices' start, not the schedule's (--start-at may be later).
                        let secs = self.launched.elapsed().as_secs_f64();
                        tracing::info!("{} of {n} device(s) connected in {secs:.2} s", s.devices.connected);
                    }
                    self.live.tick(&s, stats);
                    self.sample(started, &s, stats);
                }
            }
        }
    }

    /// One `--timeseries` row a second.
    fn sample(
        &mut self,
        started: tokio::time::Instant,
        s: &crate::stats::Snapshot,
        stats: &crate::stats::Stats,
    ) {
        if self.sampled.elapsed() < SAMPLE_EVERY {
            return;
        }
        self.sampled += SAMPLE_EVERY;
        let elapsed = started.elapsed().as_secs_f64();
        let stage = self
            .scenario
            .as_ref()
            .map_or("run", |sc| sc.current())
            .to_string();
        if let Err(e) = self.series.sample(elapsed, &stage, s, stats.latency()) {
            tracing::warn!("--timeseries: {e}; no more rows written");
        }
    }

    fn on_line(&mut self, line: &str) -> Option<StopReason> {
        let target = match console::parse(line, |w| self.injectors.knows(w)) {
            Command::InjectNext => Target::Next,
            Command::InjectDevice(id) => Target::Device(id),
            Command::InjectAll => Target::All,
            Command::Quit => return Some(StopReason::Quit),
            Command::Unknown(word) => {
                live::eprintln(&format!("unknown command '{word}'. {}", console::HINT));
                return None;
            }
            Command::Misused(usage) => {
                live::eprintln(&format!("console: {usage}"));
                return None;
            }
            Command::Act { action, device } => {
                let target = device.map_or(Target::All, Target::Device);
                for refusal in self.injectors.poke(&target, Poke::Act(action)) {
                    live::eprintln(&refusal.to_string());
                }
                return None;
            }
        };
        for refusal in self.injectors.inject(&target) {
            live::eprintln(&refusal.to_string());
        }
        None
    }
}

/// The scenario's next step; never ready without one.
async fn step(scenario: &mut Option<super::scenario::Scenario>, stats: &crate::stats::Stats) -> bool {
    match scenario {
        Some(s) => s.step(stats).await,
        None => std::future::pending().await,
    }
}

fn describe(note: &InjectNote) -> String {
    match note {
        InjectNote::Taken { id, seq, queued } => {
            let note = if *queued { " (queued: not connected)" } else { "" };
            format!("injected {id} seq={seq}{note}")
        }
        InjectNote::Ignored { id } => format!("inject {id}: ignored, the fleet is stopping"),
        InjectNote::Acted { id, action, result } => match result {
            Ok(()) => format!("{id}: {}", action.describe()),
            Err(why) => format!("{id}: refused: {why}"),
        },
    }
}
