//! `run`: pre-flight check, the fleet with its console, signals and live view, then the summary,
//! the report and the exit code.

use std::time::Duration;

use anyhow::Result;
use tokio::sync::mpsc;

use crate::cli::RunArgs;
use crate::config::{self, FleetConfig, MqttVersion, TransportKind};
use crate::console::{self, Command, ConsoleLines};
use crate::device::InjectNote;
use crate::error::exit;
use crate::fleet::{Fleet, Injectors, Outcome, StopReason, Target};
use crate::live::{self, LiveView};
use crate::report::{self, Report, Settings};
use crate::signals::Signals;
use crate::transport::https::Https;
use crate::transport::mqtt::{Mqtt, WsSigner};
use crate::transport::mqtt5::Mqtt5;
use crate::{nofile, preflight, stop};

/// How long a device waits for TCP + TLS + CONNACK.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How often the live view and the connected announcement are checked.
const PROGRESS_EVERY: Duration = Duration::from_millis(250);

pub fn run(args: RunArgs) -> Result<i32> {
    let (flags, file) = args.into_layer();
    let cfg = config::resolve(flags, file.as_deref())?;
    super::runtime()?.block_on(async {
        preflight::check(&cfg).await?;
        let outcome = run_fleet(&cfg, ConsoleLines::spawn()).await?;
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
    }
}

/// With `--transport mqtt-ws`: AWS credentials and the region from the standard chain, to sign
/// every WebSocket connection with.
async fn websocket_signer(cfg: &FleetConfig) -> Result<Option<WsSigner>> {
    if cfg.transport != TransportKind::MqttWs {
        return Ok(None);
    }
    let (credentials, region) = crate::aws::credentials::load(&cfg.aws).await?;
    tracing::info!("signing WebSocket connections for region {region} (SigV4, service iotdevicegateway)");
    Ok(Some(WsSigner {
        host: cfg.endpoint.clone(),
        port: cfg.port,
        region,
        credentials,
    }))
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

/// Runs the fleet to the end with the console on `console`; prints the summary and writes the
/// report.
pub async fn run_fleet(cfg: &FleetConfig, console: ConsoleLines) -> Result<Outcome> {
    nofile::raise_open_files_limit(cfg.devices.len());
    announce(cfg);
    let mut signals = Signals::new()?;
    let signer = websocket_signer(cfg).await?;
    let metrics = match cfg.metrics {
        Some(addr) => Some(crate::metrics::bind(addr).await?),
        None => None,
    };
    let mut fleet = match (cfg.transport, cfg.mqtt_version) {
        (TransportKind::Https, _) => Fleet::start(cfg, https(cfg)),
        (_, MqttVersion::V311) => Fleet::start(cfg, mqtt(cfg, signer)),
        (_, MqttVersion::V5) => Fleet::start(cfg, Mqtt5(mqtt(cfg, signer))),
    };
    if let Some(listener) = metrics {
        let labels = vec![
            ("shard".into(), cfg.shard.to_string()),
            ("sink".into(), sink_name(cfg).into()),
        ];
        crate::metrics::serve(listener, fleet.stats(), cfg.devices.len(), labels);
    }
    let mut front = Front {
        console,
        notes: fleet.take_notes().expect("notes are taken once"),
        injectors: fleet.injectors(),
        live: LiveView::new(cfg.devices.len(), asked_rate(cfg)),
        announced: false,
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
        StopReason::AllEnded if cfg.count.is_some() => tracing::info!("every device sent its --count"),
        StopReason::AllEnded => {}
    }
    let outcome = fleet
        .drain(async {
            let sig = signals.recv().await;
            live::eprintln(&format!(
                "{sig} again: stopping without waiting for acknowledgements"
            ));
        })
        .await;
    let report = Report::new(
        Settings::of(cfg),
        &outcome.snapshot,
        &outcome.latency,
        outcome.timings,
    );
    live::eprint(&report::summary(&report));
    if let Some(path) = &cfg.report {
        report::write(&report, path)?;
    }
    Ok(outcome)
}

/// The transport's name, as the `sink` label of metrics.
fn sink_name(cfg: &FleetConfig) -> &'static str {
    match (cfg.transport, cfg.mqtt_version) {
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

/// 1 when no device could connect, or every device gave up; 0 otherwise.
pub fn exit_code(outcome: &Outcome) -> i32 {
    let devices = &outcome.snapshot.devices;
    if devices.connected == 0 {
        live::eprintln(&format!(
            "error: none of the {} device(s) could connect (causes above)",
            outcome.devices
        ));
        exit::RUN_FAILED
    } else if devices.failed as usize >= outcome.devices {
        live::eprintln("error: every device gave up (causes above)");
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
    tracing::info!(
        "{} device(s) -> {}:{} {} topic '{}' QoS {}, {}{}",
        cfg.devices.len(),
        cfg.endpoint,
        cfg.port,
        match (cfg.transport, cfg.mqtt_version) {
            (TransportKind::Https, _) => "HTTPS",
            (TransportKind::Mqtt, MqttVersion::V5) => "MQTT 5",
            (TransportKind::Mqtt, MqttVersion::V311) => "MQTT 3.1.1",
            (TransportKind::MqttWs, MqttVersion::V5) => "MQTT 5 over WebSockets",
            (TransportKind::MqttWs, MqttVersion::V311) => "MQTT 3.1.1 over WebSockets",
        },
        cfg.topic,
        cfg.qos as u8,
        cfg.schedule,
        cfg.link
            .ramp_up
            .map(|r| format!(", connecting at most {r}/s"))
            .unwrap_or_default()
    );
}

/// What the person at the terminal sees and types while the fleet runs.
struct Front {
    console: ConsoleLines,
    notes: mpsc::UnboundedReceiver<InjectNote>,
    injectors: Injectors,
    live: LiveView,
    announced: bool,
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
                _ = progress.tick() => {
                    let s = stats.snapshot();
                    let n = self.injectors.len() as u64;
                    if !self.announced && s.devices.connected + s.devices.failed >= n {
                        self.announced = true;
                        let secs = started.elapsed().as_secs_f64();
                        tracing::info!("{} of {n} device(s) connected in {secs:.2} s", s.devices.connected);
                    }
                    self.live.tick(&s, stats);
                }
            }
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
        };
        for refusal in self.injectors.inject(&target) {
            live::eprintln(&refusal.to_string());
        }
        None
    }
}

fn describe(note: &InjectNote) -> String {
    match note {
        InjectNote::Taken { id, seq, queued } => {
            let note = if *queued { " (queued: not connected)" } else { "" };
            format!("injected {id} seq={seq}{note}")
        }
        InjectNote::Ignored { id } => format!("inject {id}: ignored, the fleet is stopping"),
    }
}
