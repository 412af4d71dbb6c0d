//! Scenario stages (`--scenario FILE.toml`, or `[[stage]]` tables in the `--config` file): load
//! shapes in order — a rate held or ramped (`rate`, `rate_to`) for a `duration`, the devices
//! connected (`devices`) and how fast they connect (`ramp_up`), connect/disconnect cycles
//! (`churn`), every device dropped at once (`disconnect = "all"`, then back through the
//! ramp-up, or off for the stage with `then_reconnect = false`), and a last `drain`. `rate`, `devices` and `ramp_up` hold until a later stage
//! changes them; `churn` lasts its own stage. Each stage's figures are reported on their own as
//! well as in total.

use std::path::Path;
use std::time::Duration;

use anyhow::Result;
use serde::Deserialize;

use super::validate::parse_duration;
use crate::error::io_cause;
use crate::input;

/// One `[[stage]]` table, as written.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StageSpec {
    pub name: Option<String>,
    pub duration: Option<String>,
    pub rate: Option<f64>,
    pub rate_to: Option<f64>,
    pub disconnect: Option<String>,
    pub then_reconnect: Option<bool>,
    pub devices: Option<toml::Value>,
    pub ramp_up: Option<toml::Value>,
    pub churn: Option<toml::Value>,
}

/// A scenario file: only stages.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ScenarioFile {
    stage: Vec<StageSpec>,
}

/// One stage, checked.
#[derive(Debug, Clone, PartialEq)]
pub struct Stage {
    pub name: String,
    /// How long it lasts; zero for a disconnect, None for the last `drain` (the run ends there).
    pub duration: Option<Duration>,
    /// Fleet-wide events per second at its start (unchanged from the stage before when None).
    pub rate: Option<f64>,
    /// … ramped linearly to this by its end.
    pub rate_to: Option<f64>,
    /// Every device drops its connection at the stage's start and comes back.
    pub disconnect: bool,
    /// … and cannot connect for the stage's duration (`then_reconnect = false`), as in a
    /// network outage: devices go on taking readings, queued until the next stage.
    pub outage: bool,
    /// Devices connected from this stage on, fleet-wide (the first N of the fleet; the others
    /// finish what they owe and disconnect). Unchanged from the stage before when None.
    pub devices: Option<u64>,
    /// Connection attempts per second from this stage on (as --ramp-up).
    pub ramp_up: Option<u32>,
    /// Connect/disconnect cycles per second, fleet-wide, during this stage only.
    pub churn: Option<f64>,
}

/// A whole number of at least `min`, from a TOML integer (or a string holding one).
fn whole(v: &toml::Value, at: &str, key: &str, want: &str, min: u64) -> Result<u64> {
    let n = match v {
        toml::Value::Integer(i) => u64::try_from(*i).ok(),
        toml::Value::String(s) => s.trim().replace('_', "").parse::<u64>().ok(),
        _ => None,
    };
    match n {
        Some(n) if n >= min => Ok(n),
        _ => Err(input!("{at}: {key} = {v}; give {want}")),
    }
}

/// Cycles per second: `10`, `2.5`, `"10/s"` or `"120/min"`.
fn per_second(v: &toml::Value, at: &str) -> Result<f64> {
    let bad = || {
        input!(
            "{at}: churn = {v}; give connect/disconnect cycles per second above 0, e.g. churn = \"10/s\" or \"120/min\""
        )
    };
    let rate = match v {
        toml::Value::Integer(i) => *i as f64,
        toml::Value::Float(f) => *f,
        toml::Value::String(s) => {
            let s = s.trim();
            let (n, per) = match s.split_once('/') {
                Some((n, unit)) => match unit.trim() {
                    "s" | "sec" | "second" => (n, 1.0),
                    "min" | "m" | "minute" => (n, 60.0),
                    "h" | "hour" => (n, 3600.0),
                    _ => return Err(bad()),
                },
                None => (s, 1.0),
            };
            n.trim().parse::<f64>().map_err(|_| bad())? / per
        }
        _ => return Err(bad()),
    };
    if rate > 0.0 && rate.is_finite() {
        Ok(rate)
    } else {
        Err(bad())
    }
}

/// Reads `--scenario FILE`.
pub fn read_file(path: &Path) -> Result<Vec<StageSpec>> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        input!(
            "--scenario {}: cannot read: {}",
            path.display(),
            io_cause(&e, false)
        )
    })?;
    let file: ScenarioFile =
        toml::from_str(&text).map_err(|e| input!("--scenario {}: {}", path.display(), e.message().trim()))?;
    Ok(file.stage)
}

/// Checks the stages; `origin` names where they came from.
pub fn check(specs: Vec<StageSpec>, origin: &str) -> Result<Vec<Stage>> {
    let mut stages: Vec<Stage> = Vec::new();
    let n = specs.len();
    for (i, s) in specs.into_iter().enumerate() {
        let name = s.name.clone().unwrap_or_else(|| format!("stage{}", i + 1));
        let at = format!("{origin}: stage '{name}'");
        let ok_name = !name.is_empty()
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
        if !ok_name {
            return Err(input!(
                "{at}: a stage name is letters, digits, _ and - (it is used in --fail-if 'NAME.puback.p99 > …')"
            ));
        }
        if stages.iter().any(|st| st.name == name) {
            return Err(input!("{at}: named twice; give each stage its own name"));
        }
        let devices = s
            .devices
            .as_ref()
            .map(|v| {
                whole(
                    v,
                    &at,
                    "devices",
                    "a number of devices, 0 or more (devices = 1000)",
                    0,
                )
            })
            .transpose()?;
        let ramp_up = s
            .ramp_up
            .as_ref()
            .map(|v| {
                whole(
                    v,
                    &at,
                    "ramp_up",
                    "connections per second above 0 (ramp_up = 200)",
                    1,
                )
                .map(|r| r.min(u32::MAX as u64) as u32)
            })
            .transpose()?;
        let churn = s.churn.as_ref().map(|v| per_second(v, &at)).transpose()?;
        let disconnect = match s.disconnect.as_deref() {
            None => false,
            Some("all") => true,
            Some(other) => return Err(input!("{at}: disconnect = \"{other}\"; only \"all\" is known")),
        };
        let outage = s.then_reconnect == Some(false);
        if outage && !disconnect {
            return Err(input!(
                "{at}: then_reconnect without disconnect = \"all\"; add disconnect = \"all\" (or leave then_reconnect out)"
            ));
        }
        if outage && s.duration.is_none() {
            return Err(input!(
                "{at}: then_reconnect = false keeps every device off for the stage's duration; give it one (duration = \"30s\")"
            ));
        }
        if outage && (devices.is_some() || churn.is_some()) {
            return Err(input!(
                "{at}: then_reconnect = false keeps every device off; devices and churn belong in another stage"
            ));
        }
        let duration = match (&s.duration, disconnect) {
            (Some(d), _) => Some(parse_duration(d, &format!("{at}: duration"))?),
            (None, true) => Some(Duration::ZERO),
            (None, false) if i + 1 == n && name == "drain" => None,
            (None, false) => {
                return Err(input!(
                    "{at}: no duration; give one (duration = \"2m\"), or name the last stage \"drain\" to end the run"
                ));
            }
        };
        for (r, key) in [(s.rate, "rate"), (s.rate_to, "rate_to")] {
            if let Some(r) = r
                && !(r > 0.0 && r.is_finite())
            {
                return Err(input!("{at}: {key} = {r}; give events per second above 0"));
            }
        }
        if churn.is_some() && duration.is_none_or(|d| d.is_zero()) {
            return Err(input!(
                "{at}: churn cycles devices over the stage's duration; give it a duration"
            ));
        }
        if s.rate_to.is_some() && duration.is_none_or(|d| d.is_zero()) {
            return Err(input!(
                "{at}: rate_to ramps over the stage's duration; give it a duration"
            ));
        }
        stages.push(Stage {
            name,
            duration,
            rate: s.rate,
            rate_to: s.rate_to,
            disconnect,
            outage,
            devices,
            ramp_up,
            churn,
        });
    }
    Ok(stages)
}

impl Stage {
    /// The fleet-wide rate `into` the stage (`rate` ramping to `rate_to`), given the rate it
    /// started from.
    pub fn rate_at(&self, into: Duration, from: Option<f64>) -> Option<f64> {
        let start = self.rate.or(from)?;
        match (self.rate_to, self.duration) {
            (Some(end), Some(d)) if !d.is_zero() => {
                let f = (into.as_secs_f64() / d.as_secs_f64()).clamp(0.0, 1.0);
                Some(start + (end - start) * f)
            }
            _ => Some(start),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(name: &str) -> StageSpec {
        StageSpec {
            name: Some(name.into()),
            duration: Some("10s".into()),
            ..Default::default()
        }
    }

    #[test]
    fn stages_are_checked_in_order() {
        let mut ramp = spec("ramp");
        ramp.rate = Some(10.0);
        ramp.rate_to = Some(30.0);
        let storm = StageSpec {
            name: Some("storm".into()),
            disconnect: Some("all".into()),
            ..Default::default()
        };
        let drain = StageSpec {
            name: Some("drain".into()),
            ..Default::default()
        };
        ramp.devices = Some(toml::Value::Integer(200));
        ramp.ramp_up = Some(toml::Value::String("50".into()));
        let mut churn = spec("churn");
        churn.churn = Some(toml::Value::String("120/min".into()));
        let stages = check(vec![ramp, storm, drain], "--scenario s.toml").unwrap();
        assert_eq!((stages[0].devices, stages[0].ramp_up), (Some(200), Some(50)));
        assert_eq!(check(vec![churn], "x").unwrap()[0].churn, Some(2.0));
        assert_eq!(stages[1].duration, Some(Duration::ZERO));
        assert!(stages[1].disconnect);
        assert_eq!(stages[2].duration, None);
        assert_eq!(stages[0].rate_at(Duration::from_secs(5), None), Some(20.0));
        assert_eq!(stages[0].rate_at(Duration::from_secs(50), None), Some(30.0));
        let mut soak = spec("soak");
        soak.rate = None;
        let soak = check(vec![soak], "x").unwrap();
        assert_eq!(soak[0].rate_at(Duration::ZERO, Some(7.0)), Some(7.0));
    }

    #[test]
    fn mistakes_are_named() {
        let e = |s: Vec<StageSpec>| check(s, "--scenario s.toml").unwrap_err().to_string();
        assert!(e(vec![spec("a"), spec("a")]).contains("stage 'a': named twice"));
        let mut no_duration = spec("soak");
        no_duration.duration = None;
        assert!(e(vec![no_duration]).contains("no duration"));
        let mut churn = spec("churn");
        churn.churn = Some(toml::Value::String("10/fortnight".into()));
        assert!(e(vec![churn]).contains("churn = \"10/fortnight\"; give connect/disconnect cycles"));
        let mut devices = spec("ramp");
        devices.devices = Some(toml::Value::Integer(-3));
        assert!(e(vec![devices]).contains("devices = -3; give a number of devices"));
        let mut ramp = spec("ramp");
        ramp.ramp_up = Some(toml::Value::Integer(0));
        assert!(e(vec![ramp]).contains("ramp_up = 0; give connections per second above 0"));
        let mut off = spec("off");
        off.then_reconnect = Some(false);
        assert!(e(vec![off.clone()]).contains("then_reconnect without disconnect"));
        off.disconnect = Some("all".into());
        off.duration = None;
        assert!(e(vec![off.clone()]).contains("keeps every device off for the stage's duration"));
        off.duration = Some("5s".into());
        assert!(check(vec![off], "x").unwrap()[0].outage);
        let mut bad = spec("b");
        bad.rate = Some(0.0);
        assert!(e(vec![bad]).contains("rate = 0"));
    }
}
