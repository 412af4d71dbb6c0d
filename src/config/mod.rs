//! The run's configuration, in layers (after ripgrep's low/high arguments):
//! - [`layer`]: the flags and the `--config` file, each a [`Layer`] of raw values;
//! - [`settings`]: one pure function per setting, from raw value to typed value or input error;
//! - the identity stage ([`crate::identity::devices`]): the only I/O, reading every certificate;
//! - [`aws_iot`]: AWS IoT Core's limits, applied last.
//!
//! [`resolve`] runs them in that order and returns a [`FleetConfig`] in which every file has been
//! read and every identity checked, before any connection is made.

use std::fmt;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Result;
use rumqttc::QoS;

use crate::identity::{self, IdentityFiles, TrustSource};
use crate::input;

pub mod aws_iot;
pub mod command;
pub mod faults;
pub mod groups;
pub mod layer;
pub mod settings;
pub mod sinks;
pub mod stages;
pub mod threshold;
pub mod validate;
pub mod watch;

pub use crate::identity::DeviceConfig;
pub use aws_iot::Profile;
pub use layer::{Layer, Sourced};
pub use sinks::{SinkKind, Sinks};

/// When devices send their timed events.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Schedule {
    /// Only when injected from the console (`--interval 0`).
    OnDemand,
    /// One event per device every interval (`--interval`).
    Every(Duration),
    /// A fleet-wide rate (`--rate M`): each device sends every `each` = devices / M seconds.
    Rate { per_second: f64, each: Duration },
    /// As fast as each connection allows (`--rate max`; QoS 1: the in-flight window).
    Max,
}

impl Schedule {
    /// A device's timer period, when it has one.
    pub fn interval(&self) -> Option<Duration> {
        match *self {
            Schedule::Every(i) | Schedule::Rate { each: i, .. } => Some(i),
            Schedule::OnDemand | Schedule::Max => None,
        }
    }

    /// Fleet-wide publishes per second asked for or implied, for `devices` devices.
    pub fn target_rate(&self, devices: usize) -> Option<f64> {
        match *self {
            // A shard's share of a fleet-wide rate: one event per device every `each`.
            Schedule::Rate { each: i, .. } | Schedule::Every(i) => Some(devices as f64 / i.as_secs_f64()),
            Schedule::OnDemand | Schedule::Max => None,
        }
    }
}

impl fmt::Display for Schedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Schedule::OnDemand => f.write_str("on demand only (press Enter to inject)"),
            Schedule::Every(i) => write!(f, "an event every {} per device", humantime::format_duration(*i)),
            Schedule::Rate { per_second, .. } => write!(f, "{per_second} publishes/s fleet-wide"),
            Schedule::Max => f.write_str("as fast as each connection allows"),
        }
    }
}

/// How devices reach the endpoint.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum, serde::Deserialize, serde::Serialize,
)]
#[serde(rename_all = "kebab-case")]
pub enum TransportKind {
    /// MQTT over mutual TLS, one connection per device (port 8883; 443 with ALPN x-amzn-mqtt-ca).
    #[default]
    Mqtt,
    /// IoT Core's HTTPS publish: a POST per event over each device's own keep-alive mutual-TLS
    /// connection (port 8443; 443 with ALPN x-amzn-http-ca).
    Https,
    /// MQTT over WebSockets (wss://ENDPOINT:443/mqtt), signed with AWS credentials (SigV4), no
    /// client certificate.
    MqttWs,
}

/// The MQTT protocol version devices speak.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum, serde::Deserialize, serde::Serialize,
)]
pub enum MqttVersion {
    /// MQTT 3.1.1.
    #[default]
    #[value(name = "3.1.1")]
    #[serde(rename = "3.1.1")]
    V311,
    /// MQTT 5: the server's reason codes are reported by name; session expiry instead of clean session.
    #[value(name = "5")]
    #[serde(rename = "5")]
    V5,
}

/// The seed of every random choice, and whether the user gave it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Seed {
    pub value: u64,
    pub given: bool,
}

/// How devices keep, pace and re-make their connections.
#[derive(Debug, Clone)]
pub struct LinkSettings {
    pub keep_alive: Duration,
    pub drain_timeout: Duration,
    /// Connection attempts per second, fleet-wide.
    pub ramp_up: Option<u32>,
    pub backoff_min: Duration,
    pub backoff_max: Duration,
    /// `--give-up-after`: a device stops after this long without a success (None: never).
    pub give_up_after: Option<Duration>,
    pub offline_queue: usize,
    pub persistent_session: bool,
}

impl LinkSettings {
    /// Reads the link settings (`--keep-alive` … `--persistent-session`).
    fn resolve(m: &mut layer::Merger) -> Result<LinkSettings> {
        use settings as s;
        let keep_alive = s::keep_alive(m.duration(|l| l.keep_alive.take(), "--keep-alive")?)?;
        let drain_timeout = m
            .duration(|l| l.drain_timeout.take(), "--drain-timeout")?
            .map_or(settings::DEFAULT_DRAIN_TIMEOUT, |d| d.value);
        let ramp_why = "0 connections per second would never connect; give e.g. 100";
        let ramp_up = s::nonzero(m.pick(|l| l.ramp_up.take(), "--ramp-up"), ramp_why)?.map(|r| r.value);
        let (backoff_min, backoff_max) = s::backoff(
            m.duration(|l| l.backoff_min.take(), "--backoff-min")?,
            m.duration(|l| l.backoff_max.take(), "--backoff-max")?,
        )?;
        let give_up_after = s::give_up_after(m.duration(|l| l.give_up_after.take(), "--give-up-after")?)?;
        Ok(LinkSettings {
            keep_alive,
            drain_timeout,
            ramp_up,
            backoff_min,
            backoff_max,
            give_up_after,
            offline_queue: s::offline_queue(m.pick(|l| l.offline_queue.take(), "--offline-queue"))?,
            persistent_session: m
                .pick(|l| l.persistent_session.take(), "--persistent-session")
                .is_some_and(|p| p.value),
        })
    }
}

/// Everything a run needs, validated.
pub struct FleetConfig {
    pub endpoint: String,
    pub port: u16,
    /// The topic as published (with the Basic Ingest prefix, if any).
    pub topic: String,
    /// The ALPN protocol offered (empty: none).
    pub alpn: Vec<Vec<u8>>,
    pub transport: TransportKind,
    /// Where to find AWS credentials and the region (`--transport mqtt-ws`).
    pub aws: crate::aws::credentials::Source,
    pub mqtt_version: MqttVersion,
    pub qos: QoS,
    pub duration: Option<Duration>,
    pub seed: Seed,
    /// How connections are kept, paced and re-made.
    pub link: LinkSettings,
    pub schedule: Schedule,
    /// Events per device, then stop.
    pub count: Option<u64>,
    pub payload_bytes: Option<usize>,
    pub max_inflight: u16,
    pub report: Option<PathBuf>,
    pub profile: Profile,
    /// Local source addresses, round-robin by device (empty: the system's choice).
    pub bind: Vec<IpAddr>,
    /// This process's devices (all of them, or its shard's).
    pub devices: Vec<DeviceConfig>,
    /// Which part of the fleet this process runs.
    pub shard: crate::shard::Shard,
    /// How many devices the whole fleet has (every shard's).
    pub fleet_size: usize,
    /// Where to serve Prometheus metrics.
    pub metrics: Option<IpAddrPort>,
    /// When the schedule starts (`--start-at`), on every shard at once.
    pub start_at: Option<std::time::SystemTime>,
    /// Where events go (`--sink`).
    pub sinks: Sinks,
    /// `--fail-if` thresholds, checked at the end.
    pub thresholds: Vec<threshold::Threshold>,
    /// `--timeseries`: one CSV row per second.
    pub timeseries: Option<PathBuf>,
    /// Scenario stages (`--scenario`, or `[[stage]]` in the config file), in order.
    pub stages: Vec<stages::Stage>,
    /// What each freezer simulates, sends and hears.
    pub model: ModelSettings,
    /// `--template`: what an event holds, instead of the usual fields.
    pub template: Option<std::sync::Arc<crate::freezer::template::Template>>,
    /// `--replay`: recorded rows instead of the model's readings.
    pub replay: Option<std::sync::Arc<ReplayPlan>>,
    /// `[[group]]` tables: a mixed fleet (empty: one group, the flags').
    pub groups: Vec<groups::Group>,
}

/// A recording to replay, and what became of its rows.
#[derive(Debug, Clone)]
pub struct ReplayPlan {
    pub file: PathBuf,
    pub replay: crate::freezer::replay::Replay,
    /// Start over at the end (`--replay-loop`).
    pub looped: bool,
    /// Rows for devices this process does not run, skipped.
    pub skipped_rows: u64,
    pub skipped_devices: Vec<String>,
}

/// What each freezer simulates, sends and hears (`--speed`, `--fields`, `--alarm-above`,
/// `--alarm-after`, `--listen`).
#[derive(Debug, Clone, Copy)]
pub struct ModelSettings {
    /// Simulated seconds per wall-clock second.
    pub speed: f64,
    pub fields: crate::freezer::Fields,
    pub alarm: crate::freezer::AlarmRule,
    /// Devices subscribe to their shadow and command topics.
    pub listen: bool,
    /// Data faults to inject (`--faults`).
    pub faults: crate::config::faults::FaultSpec,
}

impl Default for ModelSettings {
    fn default() -> Self {
        ModelSettings {
            speed: 1.0,
            fields: Default::default(),
            alarm: Default::default(),
            listen: false,
            faults: Default::default(),
        }
    }
}

/// A socket address (`--metrics`).
pub type IpAddrPort = std::net::SocketAddr;

impl FleetConfig {
    /// Fleet-wide publishes per second asked for or implied.
    pub fn target_rate(&self) -> Option<f64> {
        if self.groups.is_empty() {
            return self.schedule.target_rate(self.devices.len());
        }
        // Each group at its own pace, over this process's devices of it.
        let rates: Vec<f64> = self
            .groups
            .iter()
            .enumerate()
            .filter_map(|(i, g)| {
                let here = self.devices.iter().filter(|d| d.group == i).count();
                g.schedule.unwrap_or(self.schedule).target_rate(here)
            })
            .collect();
        (!rates.is_empty()).then(|| rates.iter().sum())
    }
}

/// Merges the flags over the file named by `file`, checks every value, reads every file, and
/// builds each device's TLS configuration.
pub fn resolve(flags: Layer, file: Option<&Path>) -> Result<FleetConfig> {
    let file_layer = match file {
        Some(path) => layer::read_file(path)?,
        None => Layer::default(),
    };
    let mut m = layer::Merger::new(flags, file_layer, file);
    use settings as s;

    let kinds = sinks::kinds(m.pick(|l| l.sink.take(), "--sink"))?;
    let mqtt = kinds.contains(&SinkKind::Mqtt);
    let endpoint = match m.pick(|l| l.endpoint.take(), "--endpoint") {
        e if mqtt => s::endpoint(e)?,
        // Only the MQTT sink has an endpoint; the AWS sinks find theirs by region.
        _ => String::new(),
    };
    let transport = m
        .pick(|l| l.transport.take(), "--transport")
        .map_or_else(Default::default, |t| t.value);
    let port = s::port(m.pick(|l| l.port.take(), "--port"), transport)?;
    let topic = s::topic(m.pick(|l| l.topic.take(), "--topic"))?;
    let basic_ingest = s::basic_ingest(m.pick(|l| l.basic_ingest.take(), "--basic-ingest"))?;
    let alpn = m.pick(|l| l.alpn.take(), "--alpn");
    s::check_alpn(&alpn)?;
    let alpn = s::alpn(alpn, port, transport);
    let mqtt_version = s::mqtt_version(m.pick(|l| l.mqtt_version.take(), "--mqtt-version"), transport)?;
    let qos = s::qos(m.pick(|l| l.qos.take(), "--qos"))?;
    let interval = m.duration(|l| l.interval.take(), "--interval")?;
    let duration = s::run_duration(m.duration(|l| l.duration.take(), "--duration")?)?;
    let mut link = LinkSettings::resolve(&mut m)?;
    let seed = s::seed(m.pick(|l| l.seed.take(), "--seed"));
    let requested = s::nonzero(
        m.pick(|l| l.devices.take(), "--devices"),
        "0 devices; give at least 1",
    )?;
    let file_name = m.file_name();
    let groups = match m.pick(|l| l.group.take(), "--group") {
        Some(specs) => groups::check(specs.value, &file_name, m.file_dir().as_deref())?,
        None => Vec::new(),
    };
    let requested = match (requested, groups.is_empty()) {
        (Some(r), false) => {
            return Err(input!(
                "{} and [[group]] in {file_name} both give the fleet's size: the groups say how many devices there are; leave {} out",
                r.origin,
                r.origin
            ));
        }
        (None, false) => Some(Sourced {
            value: groups::total(&groups),
            origin: format!("[[group]] in {file_name}"),
        }),
        (r, true) => r,
    };

    // The one I/O stage: trust anchors and every device identity.
    let roots = identity::load_roots(&TrustSource::from_flag(
        m.path(|l| l.ca.take(), "--ca").map(|c| c.value),
    ))?;
    let (identity, proxy_client) = match transport {
        _ if !mqtt => unconnected_identity(&mut m, requested)?,
        TransportKind::MqttWs => (signed_identity(&mut m, requested)?, None),
        _ => {
            let identity = identity_source(&mut m, requested)?;
            let files = match &identity {
                identity::Identity::Shared { files, .. } => Some(files.clone()),
                _ => None,
            };
            (identity, files)
        }
    };
    let shard = shard(&mut m)?;
    let per_folder = matches!(identity, identity::Identity::Folder { .. });
    let identity::devices::Loaded {
        mut devices,
        fleet_size,
    } = identity::devices::load(identity, roots.clone(), &alpn, shard)?;
    if !groups.is_empty() {
        assign_groups(&groups, &mut devices, fleet_size, per_folder, &file_name)?;
    }
    let aws = aws_source(&mut m, &endpoint)?;
    let sinks = sink_settings(&mut m, kinds, roots, proxy_client.as_ref())?;

    let rate = s::rate(m.pick(|l| l.rate.take().map(layer::RateValue::text), "--rate"))?;
    let timed_by_flags = interval.is_some() || rate.is_some();
    let schedule = s::schedule(interval, rate, fleet_size);
    let count = s::count(m.pick(|l| l.count.take(), "--count"), schedule)?;
    let replay = replay_plan(&mut m, &devices)?;
    let schedule = match &replay {
        Some(_) if timed_by_flags || count.is_some() => {
            return Err(input!(
                "--replay and --interval/--rate/--count both given: the recording says when each event goes; leave those out (--speed scales it, --replay-loop repeats it)"
            ));
        }
        Some(_) => Schedule::OnDemand,
        None => schedule,
    };
    let payload_bytes = s::payload_bytes(m.pick(|l| l.payload_bytes.take(), "--payload-bytes"))?;
    let max_inflight = s::max_inflight(m.pick(|l| l.max_inflight.take(), "--max-inflight"))?;
    let report = m.path(|l| l.report.take(), "--report").map(|r| r.value);
    // `--fail-if` flags replace the file's thresholds; else `fail_if = […]` and `[thresholds]`.
    let table = m.threshold_table()?;
    let thresholds = match m.pick(|l| l.fail_if.take(), "--fail-if") {
        Some(t) if t.origin == "--fail-if" => t
            .value
            .iter()
            .map(|e| threshold::parse(e, &t.origin))
            .collect::<Result<Vec<_>>>()?,
        listed => {
            let listed = listed.into_iter().flat_map(|t| {
                let origin = t.origin;
                t.value.into_iter().map(move |e| (e, origin.clone()))
            });
            let tabled = table.into_iter().map(|t| (t.value, t.origin));
            listed
                .chain(tabled)
                .map(|(e, origin)| threshold::parse(&e, &origin))
                .collect::<Result<Vec<_>>>()?
        }
    };
    let timeseries = m.path(|l| l.timeseries.take(), "--timeseries").map(|t| t.value);
    let stages = scenario(&mut m)?;
    if let Some(s) = stages
        .iter()
        .find(|s| s.devices.is_some_and(|d| d > fleet_size as u64))
    {
        return Err(input!(
            "stage '{}': devices = {} but the fleet has {fleet_size}; raise --devices (or add certificates) or lower the stage's devices",
            s.name,
            s.devices.unwrap_or_default()
        ));
    }
    if !stages.is_empty() && duration.is_some() {
        return Err(input!(
            "--duration and scenario stages both given: the stages say how long the run lasts; leave --duration out"
        ));
    }
    // A stage with a rate needs every device on a timer.
    let schedule = match (stages.iter().find_map(|s| s.rate), schedule) {
        (Some(rate), Schedule::OnDemand | Schedule::Max) => {
            s::schedule(None, Some(settings::RateSpec::PerSecond(rate)), fleet_size)
        }
        (_, schedule) => schedule,
    };
    let model = ModelSettings {
        speed: s::speed(m.pick(|l| l.speed.take(), "--speed"))?,
        fields: s::fields(m.pick(|l| l.fields.take(), "--fields"))?,
        alarm: s::alarm_rule(
            m.pick(|l| l.alarm_above.take(), "--alarm-above"),
            m.duration(|l| l.alarm_after.take(), "--alarm-after")?,
        )?,
        listen: m.pick(|l| l.listen.take(), "--listen").is_some_and(|l| l.value),
        faults: s::faults(m.pick(|l| l.faults.take(), "--faults"))?,
    };
    if model.listen && (sinks.kinds != [SinkKind::Mqtt] || transport == TransportKind::Https) {
        return Err(input!(
            "--listen needs MQTT: devices hear their shadow and commands on an MQTT connection; use --transport mqtt or mqtt-ws with the mqtt sink alone, or leave --listen out"
        ));
    }
    let template = match m.path(|l| l.template.take(), "--template") {
        None => None,
        Some(t) => {
            if model.fields != Default::default() {
                return Err(input!(
                    "--fields and --template both given: the template says what an event holds; put \"{{{{freezer.state}}}}\" and the like in it, or leave --fields out"
                ));
            }
            if payload_bytes.is_some() {
                return Err(input!(
                    "--payload-bytes and --template both given: padding is for the usual event; give the template the size you want, or leave --payload-bytes out"
                ));
            }
            Some(std::sync::Arc::new(s::template(&t.value, &t.origin)?))
        }
    };
    let metrics = s::metrics(m.pick(|l| l.metrics.take(), "--metrics"))?;
    let start_at = s::start_at(m.pick(|l| l.start_at.take(), "--start-at"))?;
    let bind = check_local_addresses(s::bind_addrs(m.pick(|l| l.bind.take(), "--bind"))?)?;
    let longest_id = devices.iter().map(|d| d.id.len()).max().unwrap_or(0);
    sinks::check_payload_size(&sinks.kinds, payload_bytes, longest_id)?;
    let profile = m
        .pick(|l| l.profile.take(), "--profile")
        .map_or_else(|| Profile::for_endpoint(&endpoint), |p| p.value);
    if profile == Profile::AwsIot {
        let ids = devices.iter().map(|d| d.id.as_str());
        aws_iot::check(aws_iot::Limits {
            schedule,
            payload_bytes,
            max_inflight,
            topic: &topic,
            ids,
        })?;
        if model.listen {
            aws_iot::check_listen(schedule)?;
        }
        for g in &groups {
            if let Some(gs) = g.schedule {
                aws_iot::check_rate(gs).map_err(|e| input!("[[group]] '{}': {e}", g.name))?;
            }
        }
        link.ramp_up = Some(aws_iot::ramp_up(link.ramp_up));
        for r in stages.iter().filter_map(|s| s.ramp_up) {
            aws_iot::ramp_up(Some(r));
        }
    }
    if replay.is_some() {
        let clash = [
            (template.is_some(), "--template"),
            (!model.faults.is_none(), "--faults"),
            (model.fields != Default::default(), "--fields"),
        ];
        if let Some((_, flag)) = clash.iter().find(|(given, _)| *given) {
            return Err(input!(
                "--replay and {flag} both given: a replayed row is sent as recorded; leave {flag} out"
            ));
        }
    }
    Ok(FleetConfig {
        endpoint,
        port,
        // The Basic Ingest prefix is exempt from the topic limits above, as IoT Core does.
        topic: format!("{}{topic}", basic_ingest.as_deref().unwrap_or_default()),
        alpn,
        transport,
        aws,
        mqtt_version,
        qos,
        duration,
        seed,
        link,
        schedule,
        count,
        payload_bytes,
        max_inflight,
        report,
        profile,
        bind,
        devices,
        shard,
        fleet_size,
        metrics,
        start_at,
        sinks,
        thresholds,
        timeseries,
        stages,
        model,
        template,
        replay,
        groups,
    })
}

/// Puts each device in its group (by fleet position, so shards agree): its id with the group's
/// prefix, its topic and QoS.
fn assign_groups(
    groups: &[groups::Group],
    devices: &mut [DeviceConfig],
    fleet_size: usize,
    per_folder: bool,
    file: &str,
) -> Result<()> {
    if fleet_size < groups::total(groups) {
        return Err(input!(
            "[[group]] in {file}: the groups need {} devices but --certs has {fleet_size} folders; add certificates or make the groups smaller",
            groups::total(groups)
        ));
    }
    for (gi, g) in groups.iter().enumerate() {
        if let Some(p) = &g.id_prefix {
            if per_folder {
                return Err(input!(
                    "`id_prefix` of [[group]] '{}' in {file}: with --certs each folder names its device; leave id_prefix out (it is for a shared --cert)",
                    g.name
                ));
            }
            validate::id_prefix(p, &format!("`id_prefix` of [[group]] '{}' in {file}", g.name))?;
        }
        for d in devices.iter_mut().filter(|d| g.range.contains(&d.index)) {
            d.group = gi;
            if let Some(p) = &g.id_prefix {
                d.id = format!("{p}{}", d.index - g.range.start + 1);
            }
            d.topic = g.topic_for(&d.id);
            d.qos = g.qos;
        }
    }
    let mut seen = std::collections::HashSet::new();
    if let Some(d) = devices.iter().find(|d| !seen.insert(d.id.clone())) {
        return Err(input!(
            "[[group]] in {file}: two devices would be {}; give the groups different id_prefix values",
            d.id
        ));
    }
    Ok(())
}

/// `--replay FILE` with its columns, read and parsed; rows for devices not run here are counted.
fn replay_plan(
    m: &mut layer::Merger,
    devices: &[DeviceConfig],
) -> Result<Option<std::sync::Arc<ReplayPlan>>> {
    let device_column = m.pick(|l| l.replay_device_column.take(), "--replay-device-column");
    let time_column = m.pick(|l| l.replay_time_column.take(), "--replay-time-column");
    let looped = m.pick(|l| l.replay_loop.take(), "--replay-loop");
    let Some(file) = m.path(|l| l.replay.take(), "--replay") else {
        if let Some(flag) = [
            device_column.map(|c| c.origin),
            time_column.map(|c| c.origin),
            looped.map(|c| c.origin),
        ]
        .into_iter()
        .flatten()
        .next()
        {
            return Err(input!(
                "{flag} belongs to --replay FILE: give the recording, or leave {flag} out"
            ));
        }
        return Ok(None);
    };
    let path = file.value;
    let text = std::fs::read_to_string(&path).map_err(|e| {
        input!(
            "{} {}: {}; give a CSV with a header or a JSON-lines file",
            file.origin,
            path.display(),
            crate::error::io_cause(&e, false)
        )
    })?;
    let jsonl = path
        .extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| matches!(e.to_ascii_lowercase().as_str(), "jsonl" | "ndjson" | "json"));
    let device_column = device_column.map_or_else(|| "device_id".to_string(), |c| c.value);
    let time_column = time_column.map_or_else(|| "ts".to_string(), |c| c.value);
    let replay = crate::freezer::replay::Replay::parse(&text, jsonl, &device_column, &time_column).map_err(
        |(line, why)| {
            let at = line.map(|l| format!(":{l}")).unwrap_or_default();
            input!("{} {}{at}: {why}", file.origin, path.display())
        },
    )?;
    let ours: std::collections::HashSet<&str> = devices.iter().map(|d| d.id.as_str()).collect();
    let mut skipped_rows = 0;
    let mut skipped_devices = Vec::new();
    for (id, rows) in &replay.by_device {
        if !ours.contains(id.as_str()) {
            skipped_rows += rows.len() as u64;
            skipped_devices.push(id.clone());
        }
    }
    if skipped_rows as usize == replay.rows as usize {
        return Err(input!(
            "{} {}: none of its {} device(s) ({}) is in this fleet; replay it with their certificates, or name the device column with --replay-device-column",
            file.origin,
            path.display(),
            replay.by_device.len(),
            replay
                .by_device
                .keys()
                .take(3)
                .cloned()
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    Ok(Some(std::sync::Arc::new(ReplayPlan {
        file: path,
        replay,
        looped: looped.is_some_and(|l| l.value),
        skipped_rows,
        skipped_devices,
    })))
}

/// The stages of `--scenario FILE`, else the `[[stage]]` tables of the config file.
fn scenario(m: &mut layer::Merger) -> Result<Vec<stages::Stage>> {
    if let Some(file) = m.path(|l| l.scenario.take(), "--scenario") {
        let specs = stages::read_file(&file.value)?;
        return stages::check(specs, &format!("--scenario {}", file.value.display()));
    }
    match m.pick(|l| l.stage.take(), "--stage") {
        Some(specs) => stages::check(specs.value, &specs.origin),
        None => Ok(Vec::new()),
    }
}

/// What each sink needs: the stream names, the proxy's URL, headers and TLS.
fn sink_settings(
    m: &mut layer::Merger,
    kinds: Vec<SinkKind>,
    roots: Arc<rustls::RootCertStore>,
    proxy_client: Option<&IdentityFiles>,
) -> Result<Sinks> {
    let needs = |k: SinkKind| kinds.contains(&k).then_some(k);
    let stream = sinks::stream_name(
        m.pick(|l| l.stream.take(), "--stream"),
        needs(SinkKind::Kinesis),
        "--stream",
        128,
    )?;
    let delivery_stream = sinks::stream_name(
        m.pick(|l| l.delivery_stream.take(), "--delivery-stream"),
        needs(SinkKind::Firehose).or(needs(SinkKind::FirehoseProxy)),
        "--delivery-stream",
        64,
    )?;
    let proxied = kinds.contains(&SinkKind::FirehoseProxy);
    let url = sinks::proxy_url(m.pick(|l| l.url.take(), "--url"), proxied)?;
    let headers = sinks::headers(m.pick(|l| l.header.take(), "--header"))?;
    let proxy = match url {
        Some(url) if proxied => Some(sinks::Proxy {
            url,
            headers,
            tls: Some(sinks::proxy_tls(roots, proxy_client)?),
        }),
        _ => None,
    };
    Ok(Sinks {
        kinds,
        stream,
        delivery_stream,
        proxy,
    })
}

/// Devices with no MQTT connection (only AWS or HTTPS sinks): ids from `--certs` folders, or
/// `--devices` and `--id-prefix`. `--cert/--key`, when given, are the proxy's client certificate.
fn unconnected_identity(
    m: &mut layer::Merger,
    requested: Option<Sourced<usize>>,
) -> Result<(identity::Identity, Option<IdentityFiles>)> {
    let cert = m.path(|l| l.cert.take(), "--cert");
    let key = m.path(|l| l.key.take(), "--key");
    let client = match (cert, key) {
        (Some(cert), Some(key)) => Some(IdentityFiles {
            cert: cert.value,
            key: key.value,
            cert_label: cert.origin,
            key_label: key.origin,
        }),
        (Some(c), None) => {
            return Err(input!(
                "{} is given without --key: pass the private key that belongs to the certificate",
                c.origin
            ));
        }
        (None, Some(k)) => {
            return Err(input!(
                "{} is given without --cert: pass the certificate that belongs to the key",
                k.origin
            ));
        }
        (None, None) => None,
    };
    if let Some(dir) = m.path(|l| l.certs.take(), "--certs") {
        let identity = identity::Identity::Folder {
            dir: dir.value,
            origin: dir.origin,
            requested: requested.map(|r| (r.value, r.origin)),
        };
        return Ok((identity, client));
    }
    let ids = ids(m, requested.map_or(1, |d| d.value))?;
    Ok((identity::Identity::Unsigned { ids }, client))
}

/// `--shard`, or the Kubernetes Indexed Job's variables.
fn shard(m: &mut layer::Merger) -> Result<crate::shard::Shard> {
    settings::shard(
        m.pick(|l| l.shard.take(), "--shard"),
        std::env::var("JOB_COMPLETION_INDEX").ok(),
        std::env::var("FREEZER_FLEET_SHARDS").ok(),
    )
}

/// Where AWS credentials and the region come from (`--region`, `--aws-profile`, the endpoint,
/// `--role-arn` with `--external-id` and `--role-session-name`).
fn aws_source(m: &mut layer::Merger, endpoint: &str) -> Result<crate::aws::credentials::Source> {
    let arn = sinks::role_arn(m.pick(|l| l.role_arn.take(), "--role-arn"))?;
    let (external_id, session_name) = sinks::role_extras(
        m.pick(|l| l.external_id.take(), "--external-id"),
        m.pick(|l| l.role_session_name.take(), "--role-session-name"),
        arn.is_some(),
    )?;
    Ok(crate::aws::credentials::Source {
        region: m.pick(|l| l.region.take(), "--region").map(|r| r.value),
        fallback_region: crate::aws::credentials::region_of_iot_endpoint(endpoint),
        profile: m.pick(|l| l.aws_profile.take(), "--aws-profile").map(|p| p.value),
        role: arn.map(|arn| crate::aws::credentials::Role {
            arn,
            external_id,
            session_name,
        }),
    })
}

/// Where AWS credentials come from for the `aws` commands (`--region`, `--aws-profile`,
/// `--role-arn` with `--external-id`).
pub fn aws_source_of(
    region: Option<String>,
    profile: Option<String>,
    role_arn: Option<String>,
    external_id: Option<String>,
) -> Result<crate::aws::credentials::Source> {
    let arn = sinks::role_arn(role_arn.map(|a| Sourced::flag(a, "--role-arn")))?;
    let (external_id, session_name) = sinks::role_extras(
        external_id.map(|e| Sourced::flag(e, "--external-id")),
        None,
        arn.is_some(),
    )?;
    Ok(crate::aws::credentials::Source {
        region,
        fallback_region: None,
        profile,
        role: arn.map(|arn| crate::aws::credentials::Role {
            arn,
            external_id,
            session_name,
        }),
    })
}

/// Devices that sign with AWS credentials: ids from `--devices` and `--id-prefix`, no certificate.
fn signed_identity(m: &mut layer::Merger, requested: Option<Sourced<usize>>) -> Result<identity::Identity> {
    let certificate = [
        m.path(|l| l.certs.take(), "--certs"),
        m.path(|l| l.cert.take(), "--cert"),
        m.path(|l| l.key.take(), "--key"),
    ];
    if let Some(c) = certificate.into_iter().flatten().next() {
        return Err(input!(
            "{}: --transport mqtt-ws signs with AWS credentials, not a device certificate; leave it out \
             (or use --transport mqtt for certificates)",
            c.origin
        ));
    }
    Ok(identity::Identity::Unsigned {
        ids: ids(m, requested.map_or(1, |d| d.value))?,
    })
}

/// Device ids PREFIX1..PREFIXN (`--id-prefix`, default freezer).
fn ids(m: &mut layer::Merger, n: usize) -> Result<Vec<String>> {
    let prefix = match m.pick(|l| l.id_prefix.take(), "--id-prefix") {
        Some(p) => validate::id_prefix(&p.value, &p.origin).map(|()| p.value)?,
        None => settings::DEFAULT_ID_PREFIX.to_string(),
    };
    Ok((1..=n).map(|i| format!("{prefix}{i}")).collect())
}

/// The identity choice: one folder per device (`--certs`), or one shared pair (`--cert/--key`).
fn identity_source(m: &mut layer::Merger, requested: Option<Sourced<usize>>) -> Result<identity::Identity> {
    let certs = m.path(|l| l.certs.take(), "--certs");
    let cert = m.path(|l| l.cert.take(), "--cert");
    let key = m.path(|l| l.key.take(), "--key");
    match (certs, cert, key) {
        (Some(dir), None, None) => Ok(identity::Identity::Folder {
            dir: dir.value,
            origin: dir.origin,
            requested: requested.map(|r| (r.value, r.origin)),
        }),
        (None, Some(cert), Some(key)) => {
            let ids = ids(m, requested.map_or(1, |d| d.value))?;
            Ok(identity::Identity::Shared {
                files: IdentityFiles {
                    cert: cert.value,
                    key: key.value,
                    cert_label: cert.origin,
                    key_label: key.origin,
                },
                ids,
            })
        }
        (Some(_), Some(_), _) | (Some(_), _, Some(_)) => Err(input!(
            "--certs and --cert/--key both given: use --certs DIR for one certificate per device, or \
             --cert/--key for one shared certificate"
        )),
        (None, Some(c), None) => Err(input!(
            "{} is given without --key: pass the private key that belongs to the certificate",
            c.origin
        )),
        (None, None, Some(k)) => Err(input!(
            "{} is given without --cert: pass the certificate that belongs to the key",
            k.origin
        )),
        (None, None, None) => Err(input!(
            "no device identity: pass --certs DIR (one sub-folder per device) or --cert FILE --key FILE \
             (one certificate for every device)"
        )),
    }
}

/// `--bind`: each address must belong to this machine (checked by binding it; nothing is sent).
fn check_local_addresses(addrs: Sourced<Vec<IpAddr>>) -> Result<Vec<IpAddr>> {
    for ip in &addrs.value {
        std::net::TcpListener::bind((*ip, 0)).map_err(|e| {
            input!(
                "{}: {ip} is not an address of this machine ({e}); list the addresses of this host's \
                 interfaces (ip addr)",
                addrs.origin
            )
        })?;
    }
    Ok(addrs.value)
}
