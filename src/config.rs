//! The run's configuration: the TOML file, the flags on top, and validation into a
//! [`FleetConfig`] where every file has been read and every identity checked, before any
//! connection is made.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Result;
use rumqttc::QoS;
use rustls::ClientConfig;
use serde::Deserialize;

use crate::cli::{Profile, RunArgs};
use crate::error::io_cause;
use crate::identity::{self, IdentityFiles, TrustSource};
use crate::input;

pub const DEFAULT_PORT: u16 = 8883;
pub const DEFAULT_TOPIC: &str = "freezers";
pub const DEFAULT_ID_PREFIX: &str = "freezer";
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(5);
pub const DEFAULT_KEEP_ALIVE: Duration = Duration::from_secs(60);
pub const DEFAULT_DRAIN_TIMEOUT: Duration = Duration::from_secs(5);
pub const DEFAULT_BACKOFF_MIN: Duration = Duration::from_secs(1);
pub const DEFAULT_BACKOFF_MAX: Duration = Duration::from_secs(30);
pub const DEFAULT_OFFLINE_QUEUE: usize = 1000;
pub const DEFAULT_MAX_INFLIGHT: u16 = 100;
/// AWS IoT Core's documented limits (the aws-iot profile).
pub const AWS_ACCOUNT_CONNECTS_PER_S: u32 = 500;
pub const AWS_PUBLISHES_PER_S_PER_CONNECTION: f64 = 100.0;
pub const AWS_MAX_PAYLOAD: usize = 128 * 1024;
pub const AWS_MAX_CLIENT_ID: usize = 128;
pub const AWS_MAX_TOPIC: usize = 256;
pub const AWS_MAX_TOPIC_SLASHES: usize = 7;
pub const AWS_MAX_INFLIGHT: u16 = 100;
/// AWS IoT Core accepts keep-alive values from 30 s to 1200 s.
pub const KEEP_ALIVE_RANGE: (Duration, Duration) = (Duration::from_secs(30), Duration::from_secs(1200));
/// File-name endings AWS IoT Core's download step uses.
pub const CERT_SUFFIX: &str = "certificate.pem.crt";
pub const KEY_SUFFIX: &str = "private.pem.key";

/// The keys of a config file: the same names as the flags, with `_` for `-`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub endpoint: Option<String>,
    pub port: Option<u16>,
    pub ca: Option<PathBuf>,
    pub certs: Option<PathBuf>,
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
    pub devices: Option<usize>,
    pub id_prefix: Option<String>,
    pub topic: Option<String>,
    pub interval: Option<String>,
    pub qos: Option<u8>,
    pub duration: Option<String>,
    pub seed: Option<u64>,
    pub keep_alive: Option<String>,
    pub drain_timeout: Option<String>,
    pub ramp_up: Option<u32>,
    pub backoff_min: Option<String>,
    pub backoff_max: Option<String>,
    pub offline_queue: Option<usize>,
    pub persistent_session: Option<bool>,
    pub rate: Option<RateValue>,
    pub count: Option<u64>,
    pub payload_bytes: Option<usize>,
    pub max_inflight: Option<u16>,
    pub report: Option<PathBuf>,
    pub profile: Option<Profile>,
    pub bind: Option<Vec<String>>,
}

/// `rate` in a config file: a number, or "max".
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum RateValue {
    Number(f64),
    Text(String),
}

/// How devices schedule their timed events.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Schedule {
    /// One event per device every interval (zero: on demand only).
    Every(Duration),
    /// As fast as each connection allows (QoS 1: the in-flight window; QoS 0: the socket).
    Max,
}

/// One simulated device, ready to connect.
#[derive(Clone)]
pub struct DeviceConfig {
    /// Device id, also the MQTT client id.
    pub id: String,
    pub tls: Arc<ClientConfig>,
    /// The certificate file, to name it in messages.
    pub cert_file: PathBuf,
}

/// Everything a run needs, validated.
pub struct FleetConfig {
    pub endpoint: String,
    pub port: u16,
    pub topic: String,
    pub qos: QoS,

    pub duration: Option<Duration>,
    pub seed: u64,
    pub seed_given: bool,
    pub keep_alive: Duration,
    pub drain_timeout: Duration,
    /// Connection attempts per second, fleet-wide.
    pub ramp_up: Option<u32>,
    pub backoff_min: Duration,
    pub backoff_max: Duration,
    pub offline_queue: usize,
    pub persistent_session: bool,
    pub schedule: Schedule,
    /// Fleet-wide publishes per second asked for with --rate (None with --interval or `max`).
    pub target_rate: Option<f64>,
    /// Events per device, then stop.
    pub count: Option<u64>,
    pub payload_bytes: Option<usize>,
    pub max_inflight: u16,
    pub report: Option<PathBuf>,
    pub profile: Profile,
    /// Local source addresses, round-robin by device (empty: the system's choice).
    pub bind: Vec<std::net::IpAddr>,
    pub devices: Vec<DeviceConfig>,
}

/// A value and where it came from, so a message can name the flag or the config key.
struct Sourced<T> {
    value: T,
    origin: String,
}

struct Merger<'a> {
    file: Option<&'a Path>,
}

impl Merger<'_> {
    fn pick<T>(&self, flag: Option<T>, file: Option<T>, flag_name: &str) -> Option<Sourced<T>> {
        if let Some(value) = flag {
            return Some(Sourced {
                value,
                origin: flag_name.to_string(),
            });
        }
        let key = flag_name.trim_start_matches("--").replace('-', "_");
        file.map(|value| Sourced {
            value,
            origin: format!(
                "`{key}` in {}",
                self.file.map(|p| p.display().to_string()).unwrap_or_default()
            ),
        })
    }

    /// A whole number that must not be 0; `why` finishes the sentence "<flag>: <why>".
    fn nonzero<T: Copy + PartialEq + From<u8>>(
        &self,
        flag: Option<T>,
        file: Option<T>,
        flag_name: &str,
        why: &str,
    ) -> Result<Option<Sourced<T>>> {
        match self.pick(flag, file, flag_name) {
            Some(s) if s.value == T::from(0) => Err(input!("{}: {why}", s.origin)),
            other => Ok(other),
        }
    }

    /// A duration such as 500ms, 5s or 2m, with where it came from.
    fn duration(
        &self,
        flag: Option<String>,
        file: Option<String>,
        flag_name: &str,
    ) -> Result<Option<Sourced<Duration>>> {
        self.pick(flag, file, flag_name)
            .map(|s| {
                parse_duration(&s.value, &s.origin).map(|value| Sourced {
                    value,
                    origin: s.origin,
                })
            })
            .transpose()
    }

    /// Paths in a config file are relative to the file's folder.
    fn pick_path(
        &self,
        flag: Option<PathBuf>,
        file: Option<PathBuf>,
        flag_name: &str,
    ) -> Option<Sourced<PathBuf>> {
        let base = self.file.and_then(Path::parent).map(Path::to_path_buf);
        let file = file.map(|p| match &base {
            Some(dir) if p.is_relative() => dir.join(p),
            _ => p,
        });
        self.pick(flag, file, flag_name)
    }
}

/// Reads the config file named by `--config`.
pub fn read_file_config(path: &Path) -> Result<FileConfig> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        input!(
            "--config {}: cannot read: {}",
            path.display(),
            io_cause(&e, false)
        )
    })?;
    toml::from_str(&text).map_err(|e| {
        // Name the line and, when the line is `key = value`, the key (never the value).
        let place = e
            .span()
            .map(|s| {
                let start = s.start.min(text.len());
                let line_no = text[..start].matches('\n').count() + 1;
                let line = text.lines().nth(line_no - 1).unwrap_or("");
                match line.split_once('=') {
                    Some((key, _)) if !key.trim().is_empty() => format!("line {line_no}, `{}`: ", key.trim()),
                    _ => format!("line {line_no}: "),
                }
            })
            .unwrap_or_default();
        input!("--config {}: {place}{}", path.display(), e.message().trim())
    })
}

/// Parses a duration such as `500ms`, `5s` or `2m`; a bare `0` is zero.
pub fn parse_duration(text: &str, origin: &str) -> Result<Duration> {
    let t = text.trim();
    if t == "0" {
        return Ok(Duration::ZERO);
    }
    humantime::parse_duration(t).map_err(|_| {
        input!("{origin}: '{text}' is not a duration; write a number with a unit, e.g. 500ms, 5s, 2m")
    })
}

/// Checks a device id prefix (`run --id-prefix`, `certs issue --id-prefix`): ids become MQTT
/// client ids, certificate CNs and folder names.
pub fn validate_id_prefix(prefix: &str, origin: &str) -> Result<()> {
    if prefix.is_empty() || prefix.contains(|c: char| c.is_whitespace() || "/+#\0".contains(c)) {
        return Err(input!(
            "{origin}: '{prefix}' cannot start a device id; use letters, digits, '-', '_' or ':'"
        ));
    }
    Ok(())
}

/// Checks an MQTT topic we publish to.
pub fn validate_topic(topic: &str, origin: &str) -> Result<()> {
    if topic.is_empty() {
        return Err(input!("{origin}: the topic is empty; e.g. --topic freezers"));
    }
    if topic.contains(['+', '#']) {
        return Err(input!(
            "{origin}: '{topic}' has a wildcard (+ or #), which only subscriptions may use; publish to a plain topic such as freezers"
        ));
    }
    if topic.contains('\0') {
        return Err(input!("{origin}: the topic contains a NUL character"));
    }
    if topic.len() > 65_535 {
        return Err(input!("{origin}: the topic is longer than MQTT's 65,535 bytes"));
    }
    Ok(())
}

/// Checks an endpoint host: a DNS name or an IP address, without scheme or port.
pub fn validate_endpoint(host: &str, origin: &str) -> Result<()> {
    if host.trim().is_empty() {
        return Err(input!(
            "{origin}: the endpoint is empty; give the host name, e.g. abc123-ats.iot.us-east-1.amazonaws.com (AWS console: IoT Core > Settings > Device data endpoint)"
        ));
    }
    if host.contains("://") {
        return Err(input!(
            "{origin}: '{host}' has a scheme; give the host name only (e.g. abc123-ats.iot.us-east-1.amazonaws.com) and the port with --port"
        ));
    }
    if host.parse::<std::net::IpAddr>().is_err() && host.contains(':') {
        return Err(input!(
            "{origin}: '{host}' has a port; give the host name only and the port with --port"
        ));
    }
    if rustls::pki_types::ServerName::try_from(host).is_err() {
        return Err(input!(
            "{origin}: '{host}' is not a valid host name or IP address"
        ));
    }
    Ok(())
}

/// Merges the file and the flags, checks every value, reads every file, and builds each
/// device's TLS configuration.
pub fn resolve(args: RunArgs) -> Result<FleetConfig> {
    let file = match &args.config {
        Some(path) => read_file_config(path)?,
        None => FileConfig::default(),
    };
    let config_path = args.config.clone();
    let m = Merger {
        file: config_path.as_deref(),
    };

    let endpoint = m.pick(args.endpoint, file.endpoint, "--endpoint").ok_or_else(|| {
        input!("--endpoint is missing: give the MQTT endpoint host, e.g. --endpoint abc123-ats.iot.us-east-1.amazonaws.com, or set `endpoint` in --config")
    })?;
    validate_endpoint(&endpoint.value, &endpoint.origin)?;

    let port = m
        .nonzero(
            args.port,
            file.port,
            "--port",
            "port 0 is not a port; AWS IoT Core uses 8883",
        )?
        .map_or(DEFAULT_PORT, |p| p.value);

    let topic = m.pick(args.topic, file.topic, "--topic");
    let topic = match topic {
        Some(t) => {
            validate_topic(&t.value, &t.origin)?;
            t.value
        }
        None => DEFAULT_TOPIC.to_string(),
    };

    let qos = match m.pick(args.qos, file.qos, "--qos") {
        None | Some(Sourced { value: 1, .. }) => QoS::AtLeastOnce,
        Some(Sourced { value: 0, .. }) => QoS::AtMostOnce,
        Some(q) => {
            return Err(input!(
                "{}: QoS {} is not supported; use 0 or 1 (AWS IoT Core has no QoS 2)",
                q.origin,
                q.value
            ));
        }
    };

    let interval = m
        .duration(args.interval, file.interval, "--interval")?
        .map_or(DEFAULT_INTERVAL, |d| d.value);
    let duration = match m.duration(args.duration, file.duration, "--duration")? {
        Some(d) if d.value.is_zero() => {
            return Err(input!(
                "{}: a run of 0 s does nothing; give e.g. 60s, or leave it out to run until Ctrl-C",
                d.origin
            ));
        }
        d => d.map(|d| d.value),
    };
    let keep_alive = match m.duration(args.keep_alive, file.keep_alive, "--keep-alive")? {
        Some(k) if k.value < KEEP_ALIVE_RANGE.0 || k.value > KEEP_ALIVE_RANGE.1 => {
            return Err(input!(
                "{}: keep-alive {} is outside 30s..20m, the range AWS IoT Core accepts",
                k.origin,
                humantime::format_duration(k.value)
            ));
        }
        k => k.map_or(DEFAULT_KEEP_ALIVE, |k| k.value),
    };
    let drain_timeout = m
        .duration(args.drain_timeout, file.drain_timeout, "--drain-timeout")?
        .map_or(DEFAULT_DRAIN_TIMEOUT, |d| d.value);

    let ramp_up = m
        .nonzero(
            args.ramp_up,
            file.ramp_up,
            "--ramp-up",
            "0 connections per second would never connect; give e.g. 100",
        )?
        .map(|r| r.value);
    let backoff_min = match m.duration(args.backoff_min, file.backoff_min, "--backoff-min")? {
        Some(b) if b.value.is_zero() => {
            return Err(input!("{}: the backoff must be longer than 0; e.g. 1s", b.origin));
        }
        b => b.map_or(DEFAULT_BACKOFF_MIN, |b| b.value),
    };
    let backoff_max = match m.duration(args.backoff_max, file.backoff_max, "--backoff-max")? {
        Some(b) if b.value < backoff_min => {
            return Err(input!(
                "{}: {} is shorter than the first backoff ({}); make --backoff-max at least --backoff-min",
                b.origin,
                humantime::format_duration(b.value),
                humantime::format_duration(backoff_min)
            ));
        }
        b => b.map_or(DEFAULT_BACKOFF_MAX.max(backoff_min), |b| b.value),
    };
    let offline_queue = m
        .nonzero(
            args.offline_queue,
            file.offline_queue,
            "--offline-queue",
            "a queue of 0 events would drop every event; give at least 1 (default 1000)",
        )?
        .map_or(DEFAULT_OFFLINE_QUEUE, |q| q.value);
    let persistent_session = args.persistent_session || file.persistent_session.unwrap_or(false);

    let (seed, seed_given) = match m.pick(args.seed, file.seed, "--seed") {
        Some(s) => (s.value, true),
        None => (rand::random::<u64>() >> 1, false),
    };

    let devices_req = m.nonzero(
        args.devices,
        file.devices,
        "--devices",
        "0 devices; give at least 1",
    )?;

    let devices = load_devices(
        &m,
        Identities {
            ca: args.ca,
            certs: args.certs,
            cert: args.cert,
            key: args.key,
            id_prefix: args.id_prefix,
        },
        Identities {
            ca: file.ca,
            certs: file.certs,
            cert: file.cert,
            key: file.key,
            id_prefix: file.id_prefix,
        },
        devices_req,
    )?;

    // Load-test settings.
    let n = devices.len();
    let (schedule, target_rate) = match m.pick(
        args.rate,
        file.rate.map(|r| match r {
            RateValue::Number(x) => x.to_string(),
            RateValue::Text(t) => t,
        }),
        "--rate",
    ) {
        None => (Schedule::Every(interval), None),
        Some(r) if r.value.trim() == "max" => (Schedule::Max, None),
        Some(r) => {
            let m: f64 = r.value.trim().parse().ok().filter(|m: &f64| m.is_finite() && *m > 0.0).ok_or_else(|| {
                input!("{}: '{}' is not a rate; give publishes per second for the whole fleet, e.g. 500, or max", r.origin, r.value)
            })?;
            // M per second over N devices: each device publishes every N/M seconds.
            (Schedule::Every(Duration::from_secs_f64(n as f64 / m)), Some(m))
        }
    };
    let count = m
        .nonzero(
            args.count,
            file.count,
            "--count",
            "0 events per device; give at least 1",
        )?
        .map(|c| c.value);
    if count.is_some() && schedule == Schedule::Every(Duration::ZERO) {
        return Err(input!(
            "--count needs timed events: give --interval or --rate as well"
        ));
    }
    let payload_bytes = match m.pick(args.payload_bytes, file.payload_bytes, "--payload-bytes") {
        Some(b) if b.value < crate::freezer::MIN_PADDED_SIZE || b.value > crate::freezer::MAX_PAYLOAD => {
            return Err(input!(
                "{}: {} bytes is outside {}..{} (an event takes up to {} bytes before padding; MQTT allows 256 MB)",
                b.origin,
                b.value,
                crate::freezer::MIN_PADDED_SIZE,
                crate::freezer::MAX_PAYLOAD,
                crate::freezer::MIN_PADDED_SIZE
            ));
        }
        b => b.map(|b| b.value),
    };
    let max_inflight = m
        .nonzero(
            args.max_inflight,
            file.max_inflight,
            "--max-inflight",
            "0 publishes in flight would send nothing; give 1 to 65535",
        )?
        .map_or(DEFAULT_MAX_INFLIGHT, |f| f.value);
    let report = m.pick_path(args.report, file.report, "--report").map(|r| r.value);
    let bind = match m.pick(args.bind, file.bind, "--bind") {
        Some(b) => b
            .value
            .iter()
            .map(|a| local_address(a, &b.origin))
            .collect::<Result<Vec<_>>>()?,
        None => Vec::new(),
    };
    let profile = m
        .pick(args.profile, file.profile, "--profile")
        .map(|p| p.value)
        .unwrap_or_else(|| {
            if endpoint.value.to_ascii_lowercase().ends_with(".amazonaws.com") {
                Profile::AwsIot
            } else {
                Profile::None
            }
        });
    let ramp_up = if profile == Profile::AwsIot {
        check_aws_iot(AwsCheck {
            schedule,
            payload_bytes,
            max_inflight,
            topic: &topic,
            ids: devices.iter().map(|d| d.id.as_str()),
        })?;
        match ramp_up {
            Some(r) if r > AWS_ACCOUNT_CONNECTS_PER_S => {
                tracing::warn!(
                    "--ramp-up {r}/s is above AWS IoT Core's default account limit of {AWS_ACCOUNT_CONNECTS_PER_S} connects/s: expect throttled connections unless your account's limit was raised"
                );
                Some(r)
            }
            Some(r) => Some(r),
            None => Some(AWS_ACCOUNT_CONNECTS_PER_S),
        }
    } else {
        ramp_up
    };

    Ok(FleetConfig {
        endpoint: endpoint.value,
        port,
        topic,
        qos,
        duration,
        seed,
        seed_given,
        keep_alive,
        drain_timeout,
        ramp_up,
        backoff_min,
        backoff_max,
        offline_queue,
        persistent_session,
        schedule,
        target_rate,
        count,
        payload_bytes,
        max_inflight,
        report,
        profile,
        bind,
        devices,
    })
}

struct AwsCheck<'a, I: Iterator<Item = &'a str>> {
    schedule: Schedule,
    payload_bytes: Option<usize>,
    max_inflight: u16,
    topic: &'a str,
    ids: I,
}

/// The aws-iot profile: AWS IoT Core's documented limits, each refused with the limit named.
fn check_aws_iot<'a>(mut c: AwsCheck<'a, impl Iterator<Item = &'a str>>) -> Result<()> {
    let why = "(--profile aws-iot; --profile none lifts it for other brokers)";
    match c.schedule {
        Schedule::Max => {
            return Err(input!(
                "--rate max: AWS IoT Core allows at most {AWS_PUBLISHES_PER_S_PER_CONNECTION} publishes/s per connection; give a number {why}"
            ));
        }
        Schedule::Every(i)
            if !i.is_zero() && 1.0 / i.as_secs_f64() > AWS_PUBLISHES_PER_S_PER_CONNECTION + 1e-9 =>
        {
            return Err(input!(
                "--rate/--interval: {:.0} publishes/s per connection is above AWS IoT Core's {AWS_PUBLISHES_PER_S_PER_CONNECTION}/s; use more devices or a lower rate {why}",
                1.0 / i.as_secs_f64()
            ));
        }
        _ => {}
    }
    if let Some(b) = c.payload_bytes
        && b > AWS_MAX_PAYLOAD
    {
        return Err(input!(
            "--payload-bytes: {b} bytes is above AWS IoT Core's 128 KB message limit {why}"
        ));
    }
    if c.max_inflight > AWS_MAX_INFLIGHT {
        return Err(input!(
            "--max-inflight: {} is above AWS IoT Core's {AWS_MAX_INFLIGHT} unacknowledged QoS 1 publishes per connection {why}",
            c.max_inflight
        ));
    }
    if c.topic.len() > AWS_MAX_TOPIC {
        return Err(input!(
            "--topic: {} bytes is above AWS IoT Core's {AWS_MAX_TOPIC}-byte topic limit {why}",
            c.topic.len()
        ));
    }
    let slashes = c.topic.matches('/').count();
    if slashes > AWS_MAX_TOPIC_SLASHES {
        return Err(input!(
            "--topic: '{}' has {slashes} slashes; AWS IoT Core allows at most {AWS_MAX_TOPIC_SLASHES} {why}",
            c.topic
        ));
    }
    if let Some(id) = c.ids.find(|id| id.len() > AWS_MAX_CLIENT_ID) {
        return Err(input!(
            "device id '{id}' is {} bytes; AWS IoT Core allows client ids of at most {AWS_MAX_CLIENT_ID} {why}",
            id.len()
        ));
    }
    Ok(())
}

/// Warns (once, with a count) when private key files can be read by group or others.
fn warn_readable_keys<'a>(keys: impl Iterator<Item = &'a Path>) {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let open: Vec<&Path> = keys
            .filter(|k| {
                std::fs::metadata(k)
                    .map(|m| m.permissions().mode() & 0o077 != 0)
                    .unwrap_or(false)
            })
            .collect();
        if let Some(first) = open.first() {
            tracing::warn!(
                "{} private key file(s) can be read by group or others (e.g. {}); make them private: chmod 600 <key files>",
                open.len(),
                first.display()
            );
        }
    }
    #[cfg(not(unix))]
    let _ = keys;
}

/// A `--bind` address: an IP address of this machine (checked by binding it, nothing is sent).
fn local_address(text: &str, origin: &str) -> Result<std::net::IpAddr> {
    let ip: std::net::IpAddr = text.trim().parse().map_err(|_| {
        input!("{origin}: '{text}' is not an IP address; give local addresses, e.g. --bind 10.0.0.5,10.0.0.6")
    })?;
    std::net::TcpListener::bind((ip, 0)).map_err(|e| {
        input!("{origin}: {ip} is not an address of this machine ({e}); list the addresses of this host's interfaces (ip addr)")
    })?;
    Ok(ip)
}

/// Where identities come from, on the command line or in the config file.
struct Identities {
    ca: Option<PathBuf>,
    certs: Option<PathBuf>,
    cert: Option<PathBuf>,
    key: Option<PathBuf>,
    id_prefix: Option<String>,
}

/// The devices of a run: one per `--certs` folder, or N sharing `--cert/--key`, each with its
/// TLS configuration built and checked.
fn load_devices(
    m: &Merger<'_>,
    args: Identities,
    file: Identities,
    devices_req: Option<Sourced<usize>>,
) -> Result<Vec<DeviceConfig>> {
    // Trust anchors for the endpoint.
    let ca = m.pick_path(args.ca, file.ca, "--ca");
    let roots = identity::load_roots(&match ca {
        Some(p) => TrustSource::File(p.value),
        None => TrustSource::BuiltIn,
    })?;
    let alpn: Vec<Vec<u8>> = Vec::new();

    // Device identities: a folder per device, or one shared certificate.
    let certs = m.pick_path(args.certs, file.certs, "--certs");
    let cert = m.pick_path(args.cert, file.cert, "--cert");
    let key = m.pick_path(args.key, file.key, "--key");
    let devices = match (certs, cert, key) {
        (Some(dir), None, None) => {
            let folders = scan_cert_folders(&dir.value, &dir.origin)?;
            let n = match &devices_req {
                Some(d) if d.value > folders.len() => {
                    return Err(input!(
                        "{}: {} devices requested but {} has only {} device folders; lower --devices or add folders (freezer-fleet reads one sub-folder per device)",
                        d.origin,
                        d.value,
                        dir.value.display(),
                        folders.len()
                    ));
                }
                Some(d) => d.value,
                None => folders.len(),
            };
            let mut devices = Vec::with_capacity(n);
            let folders: Vec<CertFolder> = folders.into_iter().take(n).collect();
            for folder in &folders {
                let tls = identity::client_config(&folder.files, roots.clone(), &alpn)?;
                devices.push(DeviceConfig {
                    id: folder.id.clone(),
                    tls,
                    cert_file: folder.files.cert.clone(),
                });
            }
            warn_readable_keys(folders.iter().map(|f| f.files.key.as_path()));
            devices
        }
        (None, Some(cert), Some(key)) => {
            let files = IdentityFiles {
                cert: cert.value,
                key: key.value,
                cert_label: cert.origin,
                key_label: key.origin,
            };
            let tls = identity::client_config(&files, roots, &alpn)?;
            warn_readable_keys(std::iter::once(files.key.as_path()));
            let prefix = match m.pick(args.id_prefix, file.id_prefix, "--id-prefix") {
                Some(p) => {
                    validate_id_prefix(&p.value, &p.origin)?;
                    p.value
                }
                None => DEFAULT_ID_PREFIX.to_string(),
            };
            let n = devices_req.map(|d| d.value).unwrap_or(1);
            (1..=n)
                .map(|i| DeviceConfig {
                    id: format!("{prefix}{i}"),
                    tls: tls.clone(),
                    cert_file: files.cert.clone(),
                })
                .collect()
        }
        (Some(_), Some(_), _) | (Some(_), _, Some(_)) => {
            return Err(input!(
                "--certs and --cert/--key both given: use --certs DIR for one certificate per device, or --cert/--key for one shared certificate"
            ));
        }
        (None, Some(c), None) => {
            return Err(input!(
                "{} is given without --key: pass the private key that belongs to the certificate",
                c.origin
            ));
        }
        (None, None, Some(k)) => {
            return Err(input!(
                "{} is given without --cert: pass the certificate that belongs to the key",
                k.origin
            ));
        }
        (None, None, None) => {
            return Err(input!(
                "no device identity: pass --certs DIR (one sub-folder per device) or --cert FILE --key FILE (one certificate for every device)"
            ));
        }
    };
    Ok(devices)
}

/// One device folder under `--certs`.
pub struct CertFolder {
    pub id: String,
    pub files: IdentityFiles,
}

/// Lists the device folders of `dir` in natural order (freezer2 before freezer10) and finds
/// each one's certificate and key by the endings AWS IoT Core uses.
pub fn scan_cert_folders(dir: &Path, origin: &str) -> Result<Vec<CertFolder>> {
    let shown = dir.display();
    let entries = std::fs::read_dir(dir)
        .map_err(|e| input!("{origin} {shown}: cannot read: {}", io_cause(&e, true)))?;
    let mut folders = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| input!("{origin} {shown}: cannot list: {e}"))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') || !entry.path().is_dir() {
            continue;
        }
        folders.push((name, entry.path()));
    }
    if folders.is_empty() {
        return Err(input!(
            "{origin} {shown}: no device folders; put one sub-folder per device in it, named by the device id, holding its *{CERT_SUFFIX} and *{KEY_SUFFIX} (see certs.example/)"
        ));
    }
    folders.sort_by(|a, b| natural_cmp(&a.0, &b.0));
    folders
        .into_iter()
        .map(|(id, path)| {
            let cert = find_one(&path, CERT_SUFFIX, &id)?;
            let key = find_one(&path, KEY_SUFFIX, &id)?;
            Ok(CertFolder {
                files: IdentityFiles {
                    cert,
                    key,
                    cert_label: format!("device {id}: certificate"),
                    key_label: format!("device {id}: private key"),
                },
                id,
            })
        })
        .collect()
}

fn find_one(folder: &Path, suffix: &str, id: &str) -> Result<PathBuf> {
    let shown = folder.display();
    let mut found: Vec<PathBuf> = std::fs::read_dir(folder)
        .map_err(|e| input!("device {id}: cannot read {shown}: {e}"))?
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| {
            p.is_file()
                && p.file_name()
                    .is_some_and(|n| n.to_string_lossy().ends_with(suffix))
        })
        .collect();
    found.sort();
    match found.len() {
        1 => Ok(found.remove(0)),
        0 => Err(input!(
            "device {id}: {shown} has no file ending in {suffix}; put the device's {} there (as AWS IoT Core names it, e.g. 3f2a9c-{suffix})",
            if suffix == CERT_SUFFIX {
                "certificate"
            } else {
                "private key"
            }
        )),
        _ => Err(input!(
            "device {id}: {shown} has {} files ending in {suffix} ({}); keep exactly one",
            found.len(),
            found
                .iter()
                .filter_map(|p| p.file_name())
                .map(|n| n.to_string_lossy().into_owned())
                .collect::<Vec<_>>()
                .join(", ")
        )),
    }
}

/// Compares names so that embedded numbers sort by value: freezer2 < freezer10.
pub fn natural_cmp(a: &str, b: &str) -> std::cmp::Ordering {
    fn chunks(s: &str) -> Vec<(bool, &str)> {
        let mut out = Vec::new();
        let mut start = 0;
        let bytes = s.as_bytes();
        for i in 1..=bytes.len() {
            if i == bytes.len() || bytes[i].is_ascii_digit() != bytes[start].is_ascii_digit() {
                out.push((bytes[start].is_ascii_digit(), &s[start..i]));
                start = i;
            }
        }
        out
    }
    let (ca, cb) = (chunks(a), chunks(b));
    for (x, y) in ca.iter().zip(cb.iter()) {
        let ord = match (x, y) {
            ((true, xs), (true, ys)) => {
                let (xt, yt) = (xs.trim_start_matches('0'), ys.trim_start_matches('0'));
                xt.len()
                    .cmp(&yt.len())
                    .then_with(|| xt.cmp(yt))
                    .then_with(|| xs.len().cmp(&ys.len()))
            }
            ((_, xs), (_, ys)) => xs.cmp(ys),
        };
        if ord.is_ne() {
            return ord;
        }
    }
    ca.len().cmp(&cb.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_example_config_parses_with_every_key_known() {
        let cfg: FileConfig =
            toml::from_str(include_str!("../config/aws-iot.toml")).expect("config/aws-iot.toml");
        assert_eq!(cfg.topic.as_deref(), Some("freezers"));
        assert_eq!(cfg.port, Some(8883));
        assert_eq!(cfg.ramp_up, Some(100));
        for d in [
            &cfg.interval,
            &cfg.keep_alive,
            &cfg.drain_timeout,
            &cfg.backoff_min,
            &cfg.backoff_max,
        ] {
            parse_duration(d.as_deref().unwrap(), "example").unwrap();
        }
    }

    #[test]
    fn natural_order() {
        let mut v = vec![
            "freezer10",
            "freezer2",
            "freezer1",
            "alpha",
            "freezer02",
            "freezer",
        ];
        v.sort_by(|a, b| natural_cmp(a, b));
        assert_eq!(
            v,
            [
                "alpha",
                "freezer",
                "freezer1",
                "freezer2",
                "freezer02",
                "freezer10"
            ]
        );
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("500ms", "x").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("5s", "x").unwrap(), Duration::from_secs(5));
        assert_eq!(parse_duration("2m", "x").unwrap(), Duration::from_secs(120));
        assert_eq!(parse_duration("0", "x").unwrap(), Duration::ZERO);
        let err = parse_duration("5x", "--interval").unwrap_err().to_string();
        assert!(err.starts_with("--interval: '5x' is not a duration"), "{err}");
    }

    #[test]
    fn topics_and_endpoints() {
        assert!(validate_topic("freezers", "t").is_ok());
        assert!(validate_topic("a/+/b", "t").is_err());
        assert!(validate_topic("#", "t").is_err());
        assert!(validate_topic("", "t").is_err());
        assert!(validate_endpoint("abc-ats.iot.us-east-1.amazonaws.com", "e").is_ok());
        assert!(validate_endpoint("127.0.0.1", "e").is_ok());
        assert!(validate_endpoint("::1", "e").is_ok());
        assert!(validate_endpoint("mqtts://x.example", "e").is_err());
        assert!(validate_endpoint("x.example:8883", "e").is_err());
        assert!(validate_endpoint("bad host", "e").is_err());
        assert!(validate_endpoint("", "e").is_err());
    }
}
