//! AWS IoT Core's documented limits, and the `aws-iot` profile that refuses what IoT Core would
//! refuse before the first connection, each time naming the limit.

use std::time::Duration;

use anyhow::Result;
use serde::{Deserialize, Serialize};

use super::Schedule;
use crate::input;

pub const ACCOUNT_CONNECTS_PER_S: u32 = 500;
pub const PUBLISHES_PER_S_PER_CONNECTION: f64 = 100.0;
pub const MAX_PAYLOAD: usize = 128 * 1024;
pub const MAX_CLIENT_ID: usize = 128;
pub const MAX_TOPIC: usize = 256;
pub const MAX_TOPIC_SLASHES: usize = 7;
pub const MAX_INFLIGHT: u16 = 100;
/// AWS IoT Core accepts keep-alive values from 30 s to 1200 s.
pub const KEEP_ALIVE_RANGE: (Duration, Duration) = (Duration::from_secs(30), Duration::from_secs(1200));

/// Whose limits `run` enforces.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Profile {
    /// AWS IoT Core: QoS 0/1, <= 100 publishes/s and 100 in flight per connection, payload <= 128 KB,
    /// client id <= 128 bytes, topic <= 256 bytes with <= 7 slashes, keep-alive 30-1200 s.
    AwsIot,
    /// No limits beyond MQTT's.
    None,
}

impl Profile {
    /// The default: aws-iot for an AWS endpoint, none elsewhere.
    pub fn for_endpoint(host: &str) -> Profile {
        if host.to_ascii_lowercase().ends_with(".amazonaws.com") {
            Profile::AwsIot
        } else {
            Profile::None
        }
    }
}

/// What the profile checks.
pub struct Limits<'a, I: Iterator<Item = &'a str>> {
    pub schedule: Schedule,
    pub payload_bytes: Option<usize>,
    pub max_inflight: u16,
    pub topic: &'a str,
    pub ids: I,
}

const WHY: &str = "(--profile aws-iot; --profile none lifts it for other brokers)";

/// Refuses what AWS IoT Core would refuse, naming the limit.
pub fn check<'a>(mut c: Limits<'a, impl Iterator<Item = &'a str>>) -> Result<()> {
    check_rate(c.schedule)?;
    if let Some(b) = c.payload_bytes
        && b > MAX_PAYLOAD
    {
        return Err(input!(
            "--payload-bytes: {b} bytes is above AWS IoT Core's 128 KB message limit {WHY}"
        ));
    }
    if c.max_inflight > MAX_INFLIGHT {
        return Err(input!(
            "--max-inflight: {} is above AWS IoT Core's {MAX_INFLIGHT} unacknowledged QoS 1 publishes per \
             connection {WHY}",
            c.max_inflight
        ));
    }
    if c.topic.len() > MAX_TOPIC {
        return Err(input!(
            "--topic: {} bytes is above AWS IoT Core's {MAX_TOPIC}-byte topic limit {WHY}",
            c.topic.len()
        ));
    }
    let slashes = c.topic.matches('/').count();
    if slashes > MAX_TOPIC_SLASHES {
        return Err(input!(
            "--topic: '{}' has {slashes} slashes; AWS IoT Core allows at most {MAX_TOPIC_SLASHES} {WHY}",
            c.topic
        ));
    }
    if let Some(id) = c.ids.find(|id| id.len() > MAX_CLIENT_ID) {
        return Err(input!(
            "device id '{id}' is {} bytes; AWS IoT Core allows client ids of at most {MAX_CLIENT_ID} {WHY}",
            id.len()
        ));
    }
    Ok(())
}

pub fn check_rate(schedule: Schedule) -> Result<()> {
    if schedule == Schedule::Max {
        return Err(input!(
            "--rate max: AWS IoT Core allows at most {PUBLISHES_PER_S_PER_CONNECTION} publishes/s per \
             connection; give a number {WHY}"
        ));
    }
    if let Some(i) = schedule.interval()
        && 1.0 / i.as_secs_f64() > PUBLISHES_PER_S_PER_CONNECTION + 1e-9
    {
        return Err(input!(
            "--rate/--interval: {:.0} publishes/s per connection is above AWS IoT Core's \
             {PUBLISHES_PER_S_PER_CONNECTION}/s; use more devices or a lower rate {WHY}",
            1.0 / i.as_secs_f64()
        ));
    }
    Ok(())
}

/// AWS IoT Core answers at most this many Device Shadow requests per second per thing.
pub const SHADOW_REQUESTS_PER_S_PER_THING: f64 = 20.0;

/// With `--listen`, a device may report to its shadow at every reading (at most
/// [`SHADOW_REQUESTS_PER_S_PER_THING`], the fleet keeps them that far apart), and IoT Core counts
/// each report as a publish of the connection: events plus reports must stay within the
/// connection's publishes per second.
pub fn check_listen(schedule: Schedule) -> Result<()> {
    let Some(i) = schedule.interval() else {
        return Ok(());
    };
    let events = 1.0 / i.as_secs_f64();
    let reports = events.min(SHADOW_REQUESTS_PER_S_PER_THING);
    if events + reports > PUBLISHES_PER_S_PER_CONNECTION + 1e-9 {
        return Err(input!(
            "--listen: {events:.0} events/s per device plus up to {reports:.0} shadow reports/s is above AWS IoT Core's {PUBLISHES_PER_S_PER_CONNECTION} publishes/s per connection (a shadow update counts as a publish); use more devices or a lower rate {WHY}"
        ));
    }
    Ok(())
}

/// The connection pace under the profile: the account's default limit unless asked otherwise,
/// with a warning when asked for more.
pub fn ramp_up(asked: Option<u32>) -> u32 {
    match asked {
        Some(r) if r > ACCOUNT_CONNECTS_PER_S => {
            tracing::warn!(
                "--ramp-up {r}/s is above AWS IoT Core's default account limit of {ACCOUNT_CONNECTS_PER_S} \
                 connects/s: expect throttled connections unless your account's limit was raised"
            );
            r
        }
        Some(r) => r,
        None => ACCOUNT_CONNECTS_PER_S,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shadow_reports_count_as_publishes_of_the_connection() {
        let every = |ms| Schedule::Every(Duration::from_millis(ms));
        assert!(check_listen(every(5000)).is_ok());
        // 50 events/s + 20 reports/s fits; 90 + 20 does not.
        assert!(check_listen(every(20)).is_ok());
        let e = check_listen(every(11)).unwrap_err().to_string();
        assert!(e.contains("a shadow update counts as a publish"), "{e}");
    }

    fn limits(schedule: Schedule, topic: &str) -> Limits<'_, std::vec::IntoIter<&str>> {
        Limits {
            schedule,
            payload_bytes: None,
            max_inflight: 100,
            topic,
            ids: vec!["freezer1"].into_iter(),
        }
    }

    #[test]
    fn rates_above_100_per_connection_and_max_are_refused() {
        let every = |ms| Schedule::Every(Duration::from_millis(ms));
        assert!(check(limits(every(10), "freezers")).is_ok());
        let err = check(limits(every(5), "freezers")).unwrap_err().to_string();
        assert!(err.contains("200 publishes/s per connection"), "{err}");
        assert!(check(limits(Schedule::Max, "freezers")).is_err());
        assert!(check(limits(Schedule::OnDemand, "freezers")).is_ok());
    }

    #[test]
    fn topic_limits_count_bytes_and_slashes() {
        assert!(check(limits(Schedule::OnDemand, "a/b/c/d/e/f/g/h")).is_ok());
        let err = check(limits(Schedule::OnDemand, "a/b/c/d/e/f/g/h/i"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("8 slashes"), "{err}");
        let long = "t".repeat(257);
        assert!(check(limits(Schedule::OnDemand, &long)).is_err());
    }

    #[test]
    fn the_profile_defaults_from_the_endpoint() {
        assert_eq!(
            Profile::for_endpoint("abc-ats.iot.eu-west-1.amazonaws.com"),
            Profile::AwsIot
        );
        assert_eq!(Profile::for_endpoint("localhost"), Profile::None);
        assert_eq!(ramp_up(None), ACCOUNT_CONNECTS_PER_S);
        assert_eq!(ramp_up(Some(50)), 50);
    }
}
