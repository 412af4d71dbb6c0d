//! What a device sends: the simulated freezer and the event it reports.
//!
//! This module knows nothing about MQTT, TLS or the wall clock: a [`Freezer`] ([`model`]) is a
//! seeded thermal model run on simulated time, and an [`Event`] is the JSON object every
//! ingestion path (MQTT, IoT HTTPS, Kinesis, Firehose) carries unchanged. A freezer's trajectory
//! depends only on the seed and the device's index, so `--seed` reproduces a run's readings.

use serde::{Deserialize, Serialize};

pub mod model;
pub mod replay;
pub mod template;

pub use model::{Action, AlarmRule, Freezer, Reading, Reported, State};

/// One event, exactly as it goes on the wire:
/// `{"device_id":"freezer7","seq":42,"ts":1764000000123,"temperature":-18.4,"humidity":64.9}`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Event {
    pub device_id: String,
    /// 1, 2, 3 … per device per run; timed and injected events share it.
    pub seq: u64,
    /// Unix time in milliseconds when the event was published.
    pub ts: u64,
    /// °C, one decimal.
    pub temperature: f64,
    /// % relative humidity, one decimal.
    pub humidity: f64,
    /// With `--fields state`: cooling, idle, defrost, door_open or fault.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<State>,
    /// With `--fields setpoint`: °C.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub setpoint: Option<f64>,
    /// With `--fields door`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub door_open: Option<bool>,
    /// With `--fields alarm`: above the alarm threshold for the alarm's time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alarm: Option<bool>,
    /// On a record `--faults` injected: duplicate, reorder or late (the event's own fields unchanged).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fault: Option<String>,
    /// Filler that brings the message to `--payload-bytes`, for throughput tests; absent otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pad: Option<String>,
}

/// The smallest `--payload-bytes`: an unpadded event with a long device id fits below it.
pub const MIN_PADDED_SIZE: usize = 256;
/// MQTT's largest message, less room for the topic and header.
pub const MAX_PAYLOAD: usize = 256 * 1024 * 1024 - 64 * 1024;

/// Which of the model's fields an event carries besides the five it always has (`--fields`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Fields {
    pub state: bool,
    pub setpoint: bool,
    pub door: bool,
    pub alarm: bool,
}

impl Fields {
    /// The names `--fields` takes, as README documents them.
    pub const NAMES: &'static str = "state, setpoint, door, alarm";

    /// `state,setpoint,door,alarm` (any of them, or `all`); an error names the unknown one.
    pub fn parse(list: &[String]) -> Result<Fields, String> {
        let mut f = Fields::default();
        for name in list.iter().flat_map(|s| s.split(',')).map(str::trim) {
            match name {
                "state" => f.state = true,
                "setpoint" => f.setpoint = true,
                "door" | "door_open" => f.door = true,
                "alarm" => f.alarm = true,
                "all" => {
                    f = Fields {
                        state: true,
                        setpoint: true,
                        door: true,
                        alarm: true,
                    }
                }
                "" => {}
                other => {
                    return Err(format!(
                        "'{other}' is not a field; choose from {}, or all",
                        Fields::NAMES
                    ));
                }
            }
        }
        Ok(f)
    }
}

impl Event {
    /// The event of `reading`, with the fields `fields` asks for.
    pub fn new(device_id: String, seq: u64, ts: u64, reading: &Reading, fields: Fields) -> Event {
        Event {
            device_id,
            seq,
            ts,
            temperature: reading.temperature,
            humidity: reading.humidity,
            state: fields.state.then_some(reading.state),
            setpoint: fields.setpoint.then_some(reading.setpoint),
            door_open: fields.door.then_some(reading.door_open),
            alarm: fields.alarm.then_some(reading.alarm),
            fault: None,
            pad: None,
        }
    }

    /// The JSON payload (one object, no trailing newline).
    pub fn to_json(&self) -> Vec<u8> {
        // Serialising a struct of strings and finite numbers cannot fail.
        serde_json::to_vec(self).expect("event serialises")
    }

    /// The JSON payload padded with a `pad` field to exactly `size` bytes, when it fits.
    pub fn padded_json(&mut self, size: usize) -> Vec<u8> {
        self.pad = None;
        let plain = self.to_json();
        // `,"pad":"…"` adds 9 bytes plus the filler.
        if let Some(fill) = size.checked_sub(plain.len() + 9) {
            self.pad = Some("x".repeat(fill));
            return self.to_json();
        }
        plain
    }
}

/// Milliseconds since the Unix epoch, now.
pub fn unix_millis() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_add_exactly_the_documented_keys() {
        let reading = Reading {
            temperature: -17.9,
            humidity: 61.0,
            state: State::DoorOpen,
            setpoint: -18.0,
            door_open: true,
            alarm: false,
        };
        let all = Fields::parse(&["state,setpoint".into(), "door".into(), "alarm".into()]).unwrap();
        let e = Event::new("freezer2".into(), 3, 5, &reading, all);
        assert_eq!(
            String::from_utf8(e.to_json()).unwrap(),
            r#"{"device_id":"freezer2","seq":3,"ts":5,"temperature":-17.9,"humidity":61.0,"state":"door_open","setpoint":-18.0,"door_open":true,"alarm":false}"#
        );
        let plain = Event::new("freezer2".into(), 3, 5, &reading, Fields::default());
        assert_eq!(
            String::from_utf8(plain.to_json()).unwrap(),
            r#"{"device_id":"freezer2","seq":3,"ts":5,"temperature":-17.9,"humidity":61.0}"#
        );
        assert_eq!(Fields::parse(&["all".into()]).unwrap(), all);
        assert!(
            Fields::parse(&["state,colour".into()])
                .unwrap_err()
                .contains("'colour' is not a field")
        );
    }

    #[test]
    fn padding_hits_the_size_exactly() {
        let mut e = Event {
            device_id: "freezer1".into(),
            seq: 7,
            ts: 1,
            temperature: -18.0,
            humidity: 60.0,
            state: None,
            setpoint: None,
            door_open: None,
            alarm: None,
            fault: None,
            pad: None,
        };
        for size in [256, 1000, 4096, 128 * 1024] {
            let bytes = e.padded_json(size);
            assert_eq!(bytes.len(), size);
            let back: Event = serde_json::from_slice(&bytes).unwrap();
            assert_eq!(back.seq, 7);
        }
    }

    #[test]
    fn event_json_has_exactly_the_documented_fields() {
        let e = Event {
            device_id: "freezer7".into(),
            seq: 42,
            ts: 1_764_000_000_123,
            temperature: -18.4,
            humidity: 64.9,
            state: None,
            setpoint: None,
            door_open: None,
            alarm: None,
            fault: None,
            pad: None,
        };
        assert_eq!(
            String::from_utf8(e.to_json()).unwrap(),
            r#"{"device_id":"freezer7","seq":42,"ts":1764000000123,"temperature":-18.4,"humidity":64.9}"#
        );
    }
}
