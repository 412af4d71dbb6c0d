//! One small pure function per setting of `run`: each takes the value the user gave (with where
//! it came from) and returns the typed value, the default, or an input error naming the flag
//! or config key. No I/O here; [`super::resolve`] calls them in order.

use std::net::IpAddr;
use std::time::Duration;

use anyhow::Result;
use rumqttc::QoS;

use super::aws_iot::KEEP_ALIVE_RANGE;
use super::layer::Sourced;
use super::{MqttVersion, Schedule, Seed, TransportKind, validate};
use crate::input;
use crate::shard::Shard;

pub const DEFAULT_PORT: u16 = 8883;
/// IoT Core's HTTPS publish port.
pub const DEFAULT_HTTPS_PORT: u16 = 8443;
pub const DEFAULT_TOPIC: &str = "freezers";
pub const DEFAULT_ID_PREFIX: &str = "freezer";
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(5);
pub const DEFAULT_KEEP_ALIVE: Duration = Duration::from_secs(60);
pub const DEFAULT_DRAIN_TIMEOUT: Duration = Duration::from_secs(5);
pub const DEFAULT_BACKOFF_MIN: Duration = Duration::from_secs(1);
pub const DEFAULT_BACKOFF_MAX: Duration = Duration::from_secs(30);
pub const DEFAULT_OFFLINE_QUEUE: usize = 1000;
pub const DEFAULT_MAX_INFLIGHT: u16 = 100;

type In<T> = Option<Sourced<T>>;

pub fn endpoint(v: In<String>) -> Result<String> {
    let e = v.ok_or_else(|| {
        input!(
            "--endpoint is missing: give the MQTT endpoint host, e.g. --endpoint \
             abc123-ats.iot.us-east-1.amazonaws.com, or set `endpoint` in --config"
        )
    })?;
    validate::endpoint(&e.value, &e.origin)?;
    Ok(e.value)
}

/// A whole number that must not be 0; `why` finishes the sentence "<flag>: <why>".
pub fn nonzero<T: Copy + PartialEq + From<u8>>(v: In<T>, why: &str) -> Result<In<T>> {
    match v {
        Some(s) if s.value == T::from(0) => Err(input!("{}: {why}", s.origin)),
        other => Ok(other),
    }
}

/// `--port`, by default the transport's IoT Core port (8883 for MQTT, 8443 for HTTPS).
pub fn port(v: In<u16>, transport: TransportKind) -> Result<u16> {
    let default = match transport {
        TransportKind::Mqtt => DEFAULT_PORT,
        TransportKind::Https => DEFAULT_HTTPS_PORT,
        TransportKind::MqttWs => 443,
    };
    let why = "port 0 is not a port; AWS IoT Core uses 8883 (MQTT) and 8443 (HTTPS)";
    Ok(nonzero(v, why)?.map_or(default, |p| p.value))
}

/// `--mqtt-version`, which only MQTT has.
pub fn mqtt_version(v: In<MqttVersion>, transport: TransportKind) -> Result<MqttVersion> {
    match v {
        Some(v) if transport == TransportKind::Https => Err(input!(
            "{}: the MQTT version applies to MQTT only; leave it out with --transport https",
            v.origin
        )),
        v => Ok(v.map_or_else(Default::default, |v| v.value)),
    }
}

pub fn topic(v: In<String>) -> Result<String> {
    match v {
        Some(t) => validate::topic(&t.value, &t.origin).map(|()| t.value),
        None => Ok(DEFAULT_TOPIC.to_string()),
    }
}

pub fn qos(v: In<u8>) -> Result<QoS> {
    match v {
        None | Some(Sourced { value: 1, .. }) => Ok(QoS::AtLeastOnce),
        Some(Sourced { value: 0, .. }) => Ok(QoS::AtMostOnce),
        Some(q) => Err(input!(
            "{}: QoS {} is not supported; use 0 or 1 (AWS IoT Core has no QoS 2)",
            q.origin,
            q.value
        )),
    }
}

/// How long the run lasts (`--duration`); none = until stopped.
pub fn run_duration(v: In<Duration>) -> Result<Option<Duration>> {
    match v {
        Some(d) if d.value.is_zero() => Err(input!(
            "{}: a run of 0 s does nothing; give e.g. 60s, or leave it out to run until Ctrl-C",
            d.origin
        )),
        d => Ok(d.map(|d| d.value)),
    }
}

pub fn keep_alive(v: In<Duration>) -> Result<Duration> {
    match v {
        Some(k) if k.value < KEEP_ALIVE_RANGE.0 || k.value > KEEP_ALIVE_RANGE.1 => Err(input!(
            "{}: keep-alive {} is outside 30s..20m, the range AWS IoT Core accepts",
            k.origin,
            humantime::format_duration(k.value)
        )),
        k => Ok(k.map_or(DEFAULT_KEEP_ALIVE, |k| k.value)),
    }
}

/// The first and the longest wait before reconnecting.
pub fn backoff(min: In<Duration>, max: In<Duration>) -> Result<(Duration, Duration)> {
    let min = match min {
        Some(b) if b.value.is_zero() => {
            return Err(input!("{}: the backoff must be longer than 0; e.g. 1s", b.origin));
        }
        b => b.map_or(DEFAULT_BACKOFF_MIN, |b| b.value),
    };
    let max = match max {
        Some(b) if b.value < min => {
            return Err(input!(
                "{}: {} is shorter than the first backoff ({}); make --backoff-max at least --backoff-min",
                b.origin,
                humantime::format_duration(b.value),
                humantime::format_duration(min)
            ));
        }
        b => b.map_or(DEFAULT_BACKOFF_MAX.max(min), |b| b.value),
    };
    Ok((min, max))
}

/// `--give-up-after`: none by default (devices retry until the run ends); 0 would give up
/// before the first attempt.
pub fn give_up_after(v: In<Duration>) -> Result<Option<Duration>> {
    match v {
        Some(d) if d.value.is_zero() => Err(input!(
            "{}: 0 s would give up before the first attempt; give e.g. 5m, or leave it out to retry until the run ends",
            d.origin
        )),
        d => Ok(d.map(|d| d.value)),
    }
}

pub fn offline_queue(v: In<usize>) -> Result<usize> {
    let why = "a queue of 0 events would drop every event; give at least 1 (default 1000)";
    Ok(nonzero(v, why)?.map_or(DEFAULT_OFFLINE_QUEUE, |q| q.value))
}

pub fn max_inflight(v: In<u16>) -> Result<u16> {
    let why = "0 publishes in flight would send nothing; give 1 to 65535";
    Ok(nonzero(v, why)?.map_or(DEFAULT_MAX_INFLIGHT, |f| f.value))
}

pub fn seed(v: In<u64>) -> Seed {
    match v {
        Some(s) => Seed {
            value: s.value,
            given: true,
        },
        None => Seed {
            value: rand::random::<u64>() >> 1,
            given: false,
        },
    }
}

/// What `--rate` asked for, before the fleet size is known.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum RateSpec {
    Max,
    PerSecond(f64),
}

pub fn rate(v: In<String>) -> Result<Option<RateSpec>> {
    let Some(r) = v else { return Ok(None) };
    if r.value.trim() == "max" {
        return Ok(Some(RateSpec::Max));
    }
    let m: f64 = r
        .value
        .trim()
        .parse()
        .ok()
        .filter(|m: &f64| m.is_finite() && *m > 0.0)
        .ok_or_else(|| {
            input!(
                "{}: '{}' is not a rate; give publishes per second for the whole fleet, e.g. 500, or max",
                r.origin,
                r.value
            )
        })?;
    Ok(Some(RateSpec::PerSecond(m)))
}

/// When devices send: `--rate` over `devices` devices, else `--interval` (0 = on demand).
pub fn schedule(interval: In<Duration>, rate: Option<RateSpec>, devices: usize) -> Schedule {
    match rate {
        Some(RateSpec::Max) => Schedule::Max,
        // M per second over N devices: each device publishes every N/M seconds.
        Some(RateSpec::PerSecond(m)) => Schedule::Rate {
            per_second: m,
            each: Duration::from_secs_f64(devices as f64 / m),
        },
        None => match interval.map_or(DEFAULT_INTERVAL, |i| i.value) {
            i if i.is_zero() => Schedule::OnDemand,
            i => Schedule::Every(i),
        },
    }
}

/// `--count`: events per device, which needs timed events.
pub fn count(v: In<u64>, schedule: Schedule) -> Result<Option<u64>> {
    let count = nonzero(v, "0 events per device; give at least 1")?.map(|c| c.value);
    if count.is_some() && schedule == Schedule::OnDemand {
        return Err(input!(
            "--count needs timed events: give --interval or --rate as well"
        ));
    }
    Ok(count)
}

pub fn payload_bytes(v: In<usize>) -> Result<Option<usize>> {
    use crate::freezer::{MAX_PAYLOAD, MIN_PADDED_SIZE};
    match v {
        Some(b) if b.value < MIN_PADDED_SIZE || b.value > MAX_PAYLOAD => Err(input!(
            "{}: {} bytes is outside {MIN_PADDED_SIZE}..{MAX_PAYLOAD} (an event takes up to \
             {MIN_PADDED_SIZE} bytes before padding; MQTT allows 256 MB)",
            b.origin,
            b.value
        )),
        b => Ok(b.map(|b| b.value)),
    }
}

/// The fastest `--speed`: a simulated week a minute.
pub const MAX_SPEED: f64 = 10_080.0;

/// `--speed K`: simulated seconds per wall-clock second for every time constant of the freezer
/// model [default: 1, real time].
pub fn speed(v: In<f64>) -> Result<f64> {
    match v {
        None => Ok(1.0),
        Some(k) if k.value.is_finite() && k.value > 0.0 && k.value <= MAX_SPEED => Ok(k.value),
        Some(k) => Err(input!(
            "{}: {} is not a speed-up; give a number above 0 and at most {MAX_SPEED} (60 = a day in 24 minutes)",
            k.origin,
            k.value
        )),
    }
}

/// `--fields state,setpoint,door,alarm`: the model's fields an event carries besides the usual five.
pub fn fields(v: In<Vec<String>>) -> Result<crate::freezer::Fields> {
    let Some(list) = v else {
        return Ok(crate::freezer::Fields::default());
    };
    crate::freezer::Fields::parse(&list.value).map_err(|why| input!("{}: {why}", list.origin))
}

/// `--faults duplicate=1/500,…`: the data faults to inject [default: none].
pub fn faults(v: In<String>) -> Result<crate::config::faults::FaultSpec> {
    let Some(f) = v else {
        return Ok(Default::default());
    };
    crate::config::faults::FaultSpec::parse(&f.value).map_err(|why| input!("{} {}: {why}", f.origin, f.value))
}

/// `--template FILE.json`, read and parsed once; an error names the file, line and column.
pub fn template(path: &std::path::Path, origin: &str) -> Result<crate::freezer::template::Template> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        input!(
            "{origin} {}: {}; give a JSON template file (see config/templates/)",
            path.display(),
            crate::error::io_cause(&e, false)
        )
    })?;
    crate::freezer::template::Template::parse(&text).map_err(|(at, why)| {
        let at = at.map(|(l, c)| format!(":{l}:{c}")).unwrap_or_default();
        input!("{origin} {}{at}: {why}", path.display())
    })
}

/// `--alarm-above C` and `--alarm-after DURATION`: when a freezer is in alarm [default: above
/// -10 °C for 15 minutes of simulated time].
pub fn alarm_rule(above: In<f64>, after: Option<Sourced<Duration>>) -> Result<crate::freezer::AlarmRule> {
    let mut rule = crate::freezer::AlarmRule::default();
    if let Some(a) = above {
        if !a.value.is_finite() || !(-60.0..=30.0).contains(&a.value) {
            return Err(input!(
                "{}: {} °C is not a freezer's alarm threshold; give a temperature from -60 to 30, e.g. -10",
                a.origin,
                a.value
            ));
        }
        rule.above = a.value;
    }
    if let Some(d) = after {
        rule.after_s = d.value.as_secs_f64();
    }
    Ok(rule)
}

/// ALPN `x-amzn-mqtt-ca`: what AWS IoT Core needs to take MQTT with a client certificate on 443.
pub const IOT_MQTT_ALPN: &str = "x-amzn-mqtt-ca";

/// ALPN `x-amzn-http-ca`: the same for HTTPS publish on 443.
pub const IOT_HTTP_ALPN: &str = "x-amzn-http-ca";

/// The ALPN protocol to offer: `--alpn`, else IoT Core's for the transport on port 443, else none.
pub fn alpn(v: In<String>, port: u16, transport: TransportKind) -> Vec<Vec<u8>> {
    let on_443 = match transport {
        TransportKind::Mqtt => Some(IOT_MQTT_ALPN),
        TransportKind::Https => Some(IOT_HTTP_ALPN),
        // WebSockets are an HTTP/1.1 upgrade: IoT Core needs no ALPN for them.
        TransportKind::MqttWs => None,
    };
    match (v, on_443) {
        (Some(a), _) => vec![a.value.into_bytes()],
        (None, Some(alpn)) if port == 443 => vec![alpn.as_bytes().to_vec()],
        _ => vec![],
    }
}

/// Checks `--alpn` (1 to 255 printable ASCII bytes, as TLS allows).
pub fn check_alpn(v: &In<String>) -> Result<()> {
    if let Some(a) = v
        && (a.value.is_empty() || a.value.len() > 255 || !a.value.bytes().all(|b| b.is_ascii_graphic()))
    {
        return Err(input!(
            "{}: '{}' is not an ALPN protocol name; give 1 to 255 printable characters, e.g. x-amzn-mqtt-ca",
            a.origin,
            a.value
        ));
    }
    Ok(())
}

/// `--basic-ingest RULE`: the topic prefix `$aws/rules/RULE/` (IoT rule names are letters,
/// digits and `_`, at most 128).
pub fn basic_ingest(v: In<String>) -> Result<Option<String>> {
    let Some(r) = v else { return Ok(None) };
    let ok = !r.value.is_empty()
        && r.value.len() <= 128
        && r.value.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
    if !ok {
        return Err(input!(
            "{}: '{}' is not an IoT rule name; rule names are 1 to 128 letters, digits or _ (e.g. freezer_rule)",
            r.origin,
            r.value
        ));
    }
    Ok(Some(format!("$aws/rules/{}/", r.value)))
}

/// `--shard I/N`, else Kubernetes' `JOB_COMPLETION_INDEX` with `FREEZER_FLEET_SHARDS` (both
/// given as `(value, variable name)`), else the whole fleet.
pub fn shard(v: In<String>, job_index: Option<String>, shards: Option<String>) -> Result<Shard> {
    let (text, origin) = match (v, job_index, shards) {
        (Some(s), _, _) => (s.value, s.origin),
        (None, Some(i), Some(n)) => (
            format!("{i}/{n}"),
            "JOB_COMPLETION_INDEX / FREEZER_FLEET_SHARDS".to_string(),
        ),
        (None, Some(_), None) => {
            return Err(input!(
                "JOB_COMPLETION_INDEX is set but FREEZER_FLEET_SHARDS is not: set it to the Job's completions, \
                 or pass --shard I/N"
            ));
        }
        _ => return Ok(Shard::default()),
    };
    Shard::parse(&text).ok_or_else(|| {
        input!("{origin}: '{text}' is not a shard; give I/N with 0 <= I < N, e.g. --shard 0/4")
    })
}

/// `--start-at`: an RFC 3339 time (a past one means now, with a warning).
pub fn start_at(v: In<String>) -> Result<Option<std::time::SystemTime>> {
    let Some(s) = v else { return Ok(None) };
    let at = humantime::parse_rfc3339_weak(s.value.trim()).map_err(|_| {
        input!(
            "{}: '{}' is not an RFC 3339 time; e.g. 2026-11-28T09:00:00Z (UTC)",
            s.origin,
            s.value
        )
    })?;
    if at < std::time::SystemTime::now() {
        tracing::warn!("{}: {} has passed; starting now", s.origin, s.value);
    }
    Ok(Some(at))
}

/// `--metrics ADDR:PORT`.
pub fn metrics(v: In<String>) -> Result<Option<std::net::SocketAddr>> {
    v.map(|m| {
        m.value.trim().parse().map_err(|_| {
            input!(
                "{}: '{}' is not ADDR:PORT; e.g. --metrics 127.0.0.1:9464",
                m.origin,
                m.value
            )
        })
    })
    .transpose()
}

/// `--bind` addresses, parsed (that they belong to this machine is checked later, by binding).
pub fn bind_addrs(v: In<Vec<String>>) -> Result<Sourced<Vec<IpAddr>>> {
    let Some(b) = v else {
        return Ok(Sourced::flag(Vec::new(), "--bind"));
    };
    let addrs = b
        .value
        .iter()
        .map(|text| {
            text.trim().parse().map_err(|_| {
                input!(
                    "{}: '{text}' is not an IP address; give local addresses, e.g. --bind 10.0.0.5,10.0.0.6",
                    b.origin
                )
            })
        })
        .collect::<Result<Vec<IpAddr>>>()?;
    Ok(Sourced {
        value: addrs,
        origin: b.origin,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f<T>(v: T, flag: &str) -> In<T> {
        Some(Sourced::flag(v, flag))
    }
    fn err<T: std::fmt::Debug>(r: Result<T>) -> String {
        r.unwrap_err().to_string()
    }
    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    #[test]
    fn qos_2_is_refused_naming_where_it_came_from() {
        assert_eq!(qos(None).unwrap(), QoS::AtLeastOnce);
        assert_eq!(qos(f(0, "--qos")).unwrap(), QoS::AtMostOnce);
        let from_file = Some(Sourced {
            value: 2,
            origin: "`qos` in f.toml".into(),
        });
        assert!(err(qos(from_file)).starts_with("`qos` in f.toml: QoS 2 is not supported"));
    }

    #[test]
    fn keep_alive_must_be_within_iot_cores_range() {
        assert_eq!(keep_alive(None).unwrap(), DEFAULT_KEEP_ALIVE);
        assert_eq!(keep_alive(f(secs(30), "--keep-alive")).unwrap(), secs(30));
        assert!(err(keep_alive(f(secs(5), "--keep-alive"))).contains("30s..20m"));
        assert!(keep_alive(f(secs(1201), "--keep-alive")).is_err());
    }

    #[test]
    fn backoff_must_be_positive_and_ordered() {
        assert_eq!(
            backoff(None, None).unwrap(),
            (DEFAULT_BACKOFF_MIN, DEFAULT_BACKOFF_MAX)
        );
        // A first wait above the default longest wait raises the longest wait with it.
        assert_eq!(
            backoff(f(secs(60), "--backoff-min"), None).unwrap(),
            (secs(60), secs(60))
        );
        assert!(err(backoff(f(Duration::ZERO, "--backoff-min"), None)).contains("longer than 0"));
        let e = err(backoff(f(secs(5), "--backoff-min"), f(secs(2), "--backoff-max")));
        assert!(
            e.starts_with("--backoff-max: 2s is shorter") && e.contains("at least --backoff-min"),
            "{e}"
        );
    }

    #[test]
    fn zero_is_refused_wherever_it_means_nothing() {
        assert!(err(port(f(0, "--port"), TransportKind::Mqtt)).contains("port 0 is not a port"));
        assert!(err(offline_queue(f(0, "--offline-queue"))).contains("at least 1"));
        assert!(err(max_inflight(f(0, "--max-inflight"))).contains("would send nothing"));
        assert!(err(run_duration(f(Duration::ZERO, "--duration"))).contains("0 s does nothing"));
        assert_eq!(offline_queue(None).unwrap(), DEFAULT_OFFLINE_QUEUE);
        let e = err(give_up_after(f(Duration::ZERO, "--give-up-after")));
        assert!(e.starts_with("--give-up-after: 0 s would give up"), "{e}");
        assert_eq!(give_up_after(None).unwrap(), None);
        assert_eq!(
            give_up_after(f(secs(5), "--give-up-after")).unwrap(),
            Some(secs(5))
        );
    }

    #[test]
    fn the_schedule_says_what_it_means() {
        assert_eq!(schedule(None, None, 3), Schedule::Every(DEFAULT_INTERVAL));
        assert_eq!(
            schedule(f(Duration::ZERO, "--interval"), None, 3),
            Schedule::OnDemand
        );
        assert_eq!(schedule(None, Some(RateSpec::Max), 3), Schedule::Max);
        let s = schedule(None, Some(RateSpec::PerSecond(200.0)), 100);
        assert_eq!(
            s,
            Schedule::Rate {
                per_second: 200.0,
                each: Duration::from_millis(500)
            }
        );
        assert_eq!(s.target_rate(100), Some(200.0));
        assert_eq!(Schedule::Every(secs(2)).target_rate(10), Some(5.0));
        assert_eq!(Schedule::OnDemand.target_rate(10), None);
    }

    #[test]
    fn rates_are_positive_numbers_or_max() {
        assert_eq!(rate(f("max".into(), "--rate")).unwrap(), Some(RateSpec::Max));
        assert_eq!(
            rate(f(" 12.5".into(), "--rate")).unwrap(),
            Some(RateSpec::PerSecond(12.5))
        );
        for bad in ["0", "-3", "fast", "inf", "NaN"] {
            assert!(
                err(rate(f(bad.into(), "--rate"))).contains("is not a rate"),
                "{bad}"
            );
        }
    }

    #[test]
    fn count_needs_timed_events() {
        assert_eq!(count(f(3, "--count"), Schedule::Max).unwrap(), Some(3));
        assert!(err(count(f(3, "--count"), Schedule::OnDemand)).contains("needs timed events"));
        assert!(err(count(f(0, "--count"), Schedule::Max)).contains("at least 1"));
    }

    #[test]
    fn payload_sizes_stay_within_bounds() {
        assert_eq!(payload_bytes(f(1024, "--payload-bytes")).unwrap(), Some(1024));
        assert!(err(payload_bytes(f(10, "--payload-bytes"))).contains("is outside 256.."));
    }

    #[test]
    fn port_443_offers_iot_cores_mqtt_alpn_unless_told_otherwise() {
        let mqtt = TransportKind::Mqtt;
        assert_eq!(alpn(None, 443, mqtt), vec![b"x-amzn-mqtt-ca".to_vec()]);
        assert_eq!(
            alpn(None, 443, TransportKind::Https),
            vec![b"x-amzn-http-ca".to_vec()]
        );
        assert_eq!(alpn(None, 8883, mqtt), Vec::<Vec<u8>>::new());
        assert_eq!(
            alpn(f("mqtt".into(), "--alpn"), 443, mqtt),
            vec![b"mqtt".to_vec()]
        );
        assert_eq!(port(None, TransportKind::Https).unwrap(), 8443);
        assert_eq!(port(None, mqtt).unwrap(), 8883);
        assert!(mqtt_version(f(MqttVersion::V5, "--mqtt-version"), TransportKind::Https).is_err());
        assert!(check_alpn(&f("x-amzn-mqtt-ca".into(), "--alpn")).is_ok());
        assert!(err(check_alpn(&f("two words".into(), "--alpn"))).contains("is not an ALPN protocol name"));
    }

    #[test]
    fn a_shard_comes_from_the_flag_or_from_kubernetes() {
        assert_eq!(shard(None, None, None).unwrap(), Shard::default());
        let s = |i, n| Shard { index: i, count: n };
        assert_eq!(shard(f("1/2".into(), "--shard"), None, None).unwrap(), s(1, 2));
        assert_eq!(shard(None, Some("3".into()), Some("5".into())).unwrap(), s(3, 5));
        assert_eq!(
            shard(f("0/2".into(), "--shard"), Some("3".into()), Some("5".into())).unwrap(),
            s(0, 2)
        );
        assert!(err(shard(f("2/2".into(), "--shard"), None, None)).contains("'2/2' is not a shard"));
        assert!(err(shard(None, Some("1".into()), None)).contains("FREEZER_FLEET_SHARDS is not"));
    }

    #[test]
    fn start_at_is_an_rfc_3339_time() {
        let at = start_at(f("2030-01-02T03:04:05Z".into(), "--start-at"))
            .unwrap()
            .unwrap();
        assert_eq!(
            at.duration_since(std::time::UNIX_EPOCH).unwrap().as_secs(),
            1_893_553_445
        );
        assert!(err(start_at(f("tomorrow".into(), "--start-at"))).contains("is not an RFC 3339 time"));
    }

    #[test]
    fn basic_ingest_takes_an_iot_rule_name() {
        let prefix = basic_ingest(f("freezer_rule".into(), "--basic-ingest")).unwrap();
        assert_eq!(prefix.as_deref(), Some("$aws/rules/freezer_rule/"));
        assert_eq!(basic_ingest(None).unwrap(), None);
        for bad in ["", "freezer-rule", "a/b", &"r".repeat(129)] {
            assert!(
                basic_ingest(f(bad.to_string(), "--basic-ingest")).is_err(),
                "{bad}"
            );
        }
    }

    #[test]
    fn bind_addresses_are_parsed_and_names_refused() {
        let ok = bind_addrs(f(vec!["127.0.0.1".into(), " ::1".into()], "--bind")).unwrap();
        assert_eq!(ok.value.len(), 2);
        let e = err(bind_addrs(f(vec!["127.0.0.1".into(), "eth0".into()], "--bind")));
        assert!(e.contains("'eth0' is not an IP address"), "{e}");
    }
}
