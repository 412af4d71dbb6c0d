//! One layer of run settings, as close to what the user wrote as possible: the flags are one
//! layer, the `--config` TOML file another, and both have this one type. Filling a layer does
//! no I/O beyond reading the file itself and checks nothing but syntax; [`Merger`] then picks
//! each value from the flags first, the file second, and remembers where it came from so a
//! message can name the flag or the config key.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Result;
use serde::Deserialize;

use super::aws_iot::Profile;
use super::validate::parse_duration;
use super::{MqttVersion, TransportKind};
use crate::error::io_cause;
use crate::input;

/// The settings of `run`: the keys of a config file are the flags' names with `_` for `-`.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Layer {
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
    pub give_up_after: Option<String>,
    pub offline_queue: Option<usize>,
    pub persistent_session: Option<bool>,
    pub rate: Option<RateValue>,
    pub count: Option<u64>,
    pub payload_bytes: Option<usize>,
    pub max_inflight: Option<u16>,
    pub report: Option<PathBuf>,
    pub profile: Option<Profile>,
    pub bind: Option<Vec<String>>,
    pub alpn: Option<String>,
    pub basic_ingest: Option<String>,
    pub mqtt_version: Option<MqttVersion>,
    pub transport: Option<TransportKind>,
    pub region: Option<String>,
    pub aws_profile: Option<String>,
    pub shard: Option<String>,
    pub metrics: Option<String>,
    pub start_at: Option<String>,
    pub sink: Option<Vec<String>>,
    pub stream: Option<String>,
    pub delivery_stream: Option<String>,
    pub url: Option<String>,
    pub header: Option<Vec<String>>,
    pub role_arn: Option<String>,
    pub external_id: Option<String>,
    pub role_session_name: Option<String>,
    pub fail_if: Option<Vec<String>>,
    pub timeseries: Option<PathBuf>,
    pub scenario: Option<PathBuf>,
    pub speed: Option<f64>,
    pub fields: Option<Vec<String>>,
    pub alarm_above: Option<f64>,
    pub alarm_after: Option<String>,
    pub listen: Option<bool>,
    pub faults: Option<String>,
    pub template: Option<PathBuf>,
    pub replay: Option<PathBuf>,
    pub replay_device_column: Option<String>,
    pub replay_time_column: Option<String>,
    pub replay_loop: Option<bool>,
    /// `[[group]]` tables (config file only).
    pub group: Option<Vec<GroupSpec>>,
    /// `[[stage]]` tables (config file only).
    pub stage: Option<Vec<super::stages::StageSpec>>,
    /// A `[thresholds]` table (config file only): `puback.p99 = "> 250ms"`, `lost = "> 0"`,
    /// `spike.puback.p99 = "> 1s"`.
    pub thresholds: Option<toml::Table>,
}

fn flatten_thresholds(
    table: &toml::Table,
    prefix: &str,
    file: &str,
    out: &mut Vec<Sourced<String>>,
) -> Result<()> {
    for (key, value) in table {
        let name = if prefix.is_empty() {
            key.clone()
        } else {
            format!("{prefix}.{key}")
        };
        match value {
            toml::Value::Table(inner) => flatten_thresholds(inner, &name, file, out)?,
            toml::Value::String(cond) => out.push(Sourced {
                value: format!("{name} {}", cond.trim()),
                origin: format!("`thresholds.{name}` in {file}"),
            }),
            other => {
                return Err(input!(
                    "`thresholds.{name}` in {file}: {other} is not a condition; write it as text, e.g. {name} = \"> 250ms\""
                ));
            }
        }
    }
    Ok(())
}

/// `rate`: a number, or "max" (a config file may write either; a flag is always text).
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum RateValue {
    Number(f64),
    Text(String),
}

impl RateValue {
    pub fn text(self) -> String {
        match self {
            RateValue::Number(x) => x.to_string(),
            RateValue::Text(t) => t,
        }
    }
}

/// Reads the config file named by `--config` into a layer.
pub fn read_file(path: &Path) -> Result<Layer> {
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

/// A value and where it came from, so a message can name the flag or the config key.
#[derive(Debug, Clone, PartialEq)]
pub struct Sourced<T> {
    pub value: T,
    pub origin: String,
}

impl<T> Sourced<T> {
    /// A value given with `flag` on the command line (tests build these directly).
    pub fn flag(value: T, flag: &str) -> Sourced<T> {
        Sourced {
            value,
            origin: flag.to_string(),
        }
    }
}

/// Picks each setting from the flags, else from the file.
pub struct Merger {
    flags: Layer,
    file: Layer,
    file_path: Option<PathBuf>,
}

impl Merger {
    /// The config file's folder (relative paths in it start there).
    pub fn file_dir(&self) -> Option<PathBuf> {
        self.file_path
            .as_deref()
            .and_then(Path::parent)
            .map(Path::to_path_buf)
    }

    /// The config file's name, for messages.
    pub fn file_name(&self) -> String {
        self.file_path
            .as_deref()
            .map(|p| p.display().to_string())
            .unwrap_or_default()
    }

    pub fn new(flags: Layer, file: Layer, file_path: Option<&Path>) -> Merger {
        Merger {
            flags,
            file,
            file_path: file_path.map(Path::to_path_buf),
        }
    }

    /// Takes one setting out of both layers: `get` names the field, `flag` the flag.
    pub fn pick<T>(&mut self, get: impl Fn(&mut Layer) -> Option<T>, flag: &str) -> Option<Sourced<T>> {
        let from_file = get(&mut self.file);
        if let Some(value) = get(&mut self.flags) {
            return Some(Sourced::flag(value, flag));
        }
        let key = flag.trim_start_matches("--").replace('-', "_");
        let file = self
            .file_path
            .as_deref()
            .map(|p| p.display().to_string())
            .unwrap_or_default();
        from_file.map(|value| Sourced {
            value,
            origin: format!("`{key}` in {file}"),
        })
    }

    /// The config file's `[thresholds]` table as `--fail-if` expressions, each with where it
    /// came from; dotted keys (`puback.p99 = …`) are the metric's name.
    pub fn threshold_table(&mut self) -> Result<Vec<Sourced<String>>> {
        let Some(table) = self.file.thresholds.take() else {
            return Ok(Vec::new());
        };
        let file = self
            .file_path
            .as_deref()
            .map(|p| p.display().to_string())
            .unwrap_or_default();
        let mut out = Vec::new();
        flatten_thresholds(&table, "", &file, &mut out)?;
        Ok(out)
    }

    /// A duration such as 500ms, 5s or 2m.
    pub fn duration(
        &mut self,
        get: impl Fn(&mut Layer) -> Option<String>,
        flag: &str,
    ) -> Result<Option<Sourced<Duration>>> {
        self.pick(get, flag)
            .map(|s| {
                parse_duration(&s.value, &s.origin).map(|value| Sourced {
                    value,
                    origin: s.origin,
                })
            })
            .transpose()
    }

    /// A path; in a config file it is relative to the file's folder.
    pub fn path(
        &mut self,
        get: impl Fn(&mut Layer) -> Option<PathBuf>,
        flag: &str,
    ) -> Option<Sourced<PathBuf>> {
        let base = self
            .file_path
            .as_deref()
            .and_then(Path::parent)
            .map(Path::to_path_buf);
        let mut picked = self.pick(get, flag);
        if let (Some(dir), Some(p)) = (base, picked.as_mut())
            && p.origin != flag
            && p.value.is_relative()
        {
            p.value = dir.join(&p.value);
        }
        picked
    }
}

/// One `[[group]]` table, as written.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GroupSpec {
    pub name: Option<String>,
    /// A count, or a range of the fleet's devices in order: "1..20" (1-based, inclusive).
    pub devices: Option<toml::Value>,
    pub id_prefix: Option<String>,
    pub interval: Option<String>,
    pub rate: Option<RateValue>,
    /// With `{id}` and `{group}` placeholders.
    pub topic: Option<String>,
    pub qos: Option<u8>,
    pub fields: Option<Vec<String>>,
    pub template: Option<std::path::PathBuf>,
    pub model: Option<ModelSpec>,
}

/// A group's freezer model parameters.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ModelSpec {
    /// °C.
    pub setpoint: Option<f64>,
    /// Door openings per hour.
    pub door_rate: Option<f64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_example_config_parses_with_every_key_known() {
        let cfg: Layer =
            toml::from_str(include_str!("../../config/aws-iot.toml")).expect("config/aws-iot.toml");
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
    fn every_key_the_example_config_mentions_in_a_comment_is_a_real_key() {
        let text = include_str!("../../config/aws-iot.toml");
        let uncommented: String = text
            .lines()
            .map(|l| match l.strip_prefix("# ") {
                Some(rest)
                    if rest == "[[group]]"
                        || rest
                            .split_once(" = ")
                            .is_some_and(|(k, _)| k.chars().all(|c| c.is_ascii_lowercase() || c == '_')) =>
                {
                    rest
                }
                _ => l,
            })
            .collect::<Vec<_>>()
            .join("\n");
        let cfg: Layer = toml::from_str(&uncommented).expect("every commented key is known");
        assert_eq!(cfg.sink, Some(vec!["mqtt".to_string(), "kinesis".to_string()]));
        assert_eq!(cfg.stream.as_deref(), Some("freezer_data"));
        assert!(cfg.role_arn.is_some() && cfg.header.is_some());
        let groups = cfg.group.expect("the [[group]] example");
        assert_eq!(groups.len(), 2);
        assert_eq!(groups[1].name.as_deref(), Some("new"));
    }

    #[test]
    fn flags_win_and_file_values_name_their_key_and_paths_follow_the_file() {
        let flags = Layer {
            port: Some(1883),
            ..Default::default()
        };
        let file = Layer {
            port: Some(8883),
            topic: Some("t".into()),
            ca: Some("ca.pem".into()),
            ..Default::default()
        };
        let mut m = Merger::new(flags, file, Some(Path::new("/etc/ff/fleet.toml")));
        assert_eq!(
            m.pick(|l| l.port.take(), "--port"),
            Some(Sourced::flag(1883, "--port"))
        );
        let topic = m.pick(|l| l.topic.take(), "--topic").unwrap();
        assert_eq!(topic.origin, "`topic` in /etc/ff/fleet.toml");
        let ca = m.path(|l| l.ca.take(), "--ca").unwrap();
        assert_eq!(ca.value, PathBuf::from("/etc/ff/ca.pem"));
        assert_eq!(m.pick(|l| l.qos.take(), "--qos"), None);
    }
}
