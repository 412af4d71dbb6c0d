//! Scenario stages (`--scenario FILE.toml`, or `[[stage]]` tables in the `--config` file): load
//! shapes in order — a rate held or ramped (`rate`, `rate_to`) for a `duration`, every device
//! dropped at once (`disconnect = "all"`, then back through the ramp-up), and a last `drain`.
//! Each stage's figures are reported on their own as well as in total.

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
        for (given, key) in [
            (s.devices.is_some(), "devices"),
            (s.ramp_up.is_some(), "ramp_up"),
            (s.churn.is_some(), "churn"),
        ] {
            if given {
                return Err(input!(
                    "{at}: `{key}` in a stage is not supported yet; set it for the whole run (--{} …) instead",
                    key.replace('_', "-")
                ));
            }
        }
        let disconnect = match s.disconnect.as_deref() {
            None => false,
            Some("all") => true,
            Some(other) => return Err(input!("{at}: disconnect = \"{other}\"; only \"all\" is known")),
        };
        if s.then_reconnect == Some(false) {
            return Err(input!(
                "{at}: then_reconnect = false is not supported; devices always come back"
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
        let stages = check(vec![ramp, storm, drain], "--scenario s.toml").unwrap();
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
        churn.churn = Some(toml::Value::String("10/s".into()));
        assert!(e(vec![churn]).contains("`churn` in a stage is not supported yet"));
        let mut bad = spec("b");
        bad.rate = Some(0.0);
        assert!(e(vec![bad]).contains("rate = 0"));
    }
}
