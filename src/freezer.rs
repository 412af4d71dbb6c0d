//! What a device sends: the simulated freezer and the event it reports.
//!
//! This module knows nothing about MQTT, TLS or time: a [`Freezer`] turns its seeded state into
//! the next [`Reading`], and an [`Event`] is the JSON object every ingestion path (MQTT today;
//! Kinesis or HTTPS later) carries unchanged. Readings depend only on the seed, the device's
//! index and how many events it has produced, so `--seed` reproduces a run exactly.

use rand::rngs::Xoshiro256PlusPlus;
use rand::{RngExt, SeedableRng};
use serde::{Deserialize, Serialize};

/// The setpoint every freezer regulates around (°C), a common commercial freezer setting.
pub const SETPOINT_C: f64 = -18.0;

/// One event, exactly as it goes on the wire:
/// `{"device_id":"freezer7","seq":42,"ts":1764000000123,"temperature":-18.4,"humidity":64.9}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
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
    /// Filler that brings the message to `--payload-bytes`, for throughput tests; absent otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pad: Option<String>,
}

/// The smallest `--payload-bytes`: an unpadded event with a long device id fits below it.
pub const MIN_PADDED_SIZE: usize = 256;
/// MQTT's largest message, less room for the topic and header.
pub const MAX_PAYLOAD: usize = 256 * 1024 * 1024 - 64 * 1024;

impl Event {
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

/// A temperature/humidity pair, rounded as a real sensor reports it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Reading {
    pub temperature: f64,
    pub humidity: f64,
}

/// A freezer whose compressor cycles around its setpoint: the cabinet warms slowly while the
/// compressor is off, cools faster while it runs, and now and then a door opening lets in warm,
/// humid air. Each device gets its own offset, rates and humidity level.
#[derive(Debug, Clone)]
pub struct Freezer {
    rng: Xoshiro256PlusPlus,
    setpoint: f64,
    hysteresis: f64,
    warm_rate: f64,
    cool_rate: f64,
    temperature: f64,
    compressor_on: bool,
    humidity_base: f64,
    humidity: f64,
}

impl Freezer {
    /// The freezer for device number `index` (0-based) of a run seeded with `seed`.
    pub fn new(seed: u64, index: u64) -> Self {
        // Mix the index into the seed so neighbouring devices get unrelated streams.
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(
            seed ^ index.wrapping_add(1).wrapping_mul(0x9E37_79B9_7F4A_7C15),
        );
        let setpoint = SETPOINT_C + rng.random_range(-1.5..1.5);
        let hysteresis = rng.random_range(0.8..1.6);
        let humidity_base = rng.random_range(55.0..72.0);
        let temperature = setpoint + rng.random_range(-hysteresis..hysteresis);
        Freezer {
            setpoint,
            hysteresis,
            warm_rate: rng.random_range(0.05..0.15),
            cool_rate: rng.random_range(0.15..0.35),
            temperature,
            compressor_on: rng.random_bool(0.5),
            humidity_base,
            humidity: humidity_base,
            rng,
        }
    }

    /// Advances the model by one reporting step and returns the reading.
    pub fn next_reading(&mut self) -> Reading {
        let rng = &mut self.rng;
        if self.compressor_on {
            self.temperature -= self.cool_rate * rng.random_range(0.8..1.2);
            if self.temperature < self.setpoint - self.hysteresis {
                self.compressor_on = false;
            }
        } else {
            self.temperature += self.warm_rate * rng.random_range(0.8..1.2);
            if self.temperature > self.setpoint + self.hysteresis {
                self.compressor_on = true;
            }
        }
        // About one step in a hundred, someone opens the door: warm, humid air comes in and the
        // thermostat starts the compressor at once.
        if rng.random_bool(0.01) && self.temperature <= self.setpoint + self.hysteresis {
            self.temperature += rng.random_range(0.5..2.0);
            self.humidity += rng.random_range(5.0..12.0);
            self.compressor_on = true;
        }
        // Humidity relaxes towards the cabinet's own level, with sensor noise.
        self.humidity += (self.humidity_base - self.humidity) * 0.1 + rng.random_range(-0.5..0.5);
        self.humidity = self.humidity.clamp(0.0, 100.0);
        let sensor_noise = rng.random_range(-0.05..0.05);
        Reading {
            temperature: round1(self.temperature + sensor_noise),
            humidity: round1(self.humidity),
        }
    }
}

fn round1(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
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
    fn same_seed_same_readings_and_devices_differ() {
        let a: Vec<_> = (0..50)
            .map({
                let mut f = Freezer::new(7, 3);
                move |_| f.next_reading()
            })
            .collect();
        let b: Vec<_> = (0..50)
            .map({
                let mut f = Freezer::new(7, 3);
                move |_| f.next_reading()
            })
            .collect();
        let other: Vec<_> = (0..50)
            .map({
                let mut f = Freezer::new(7, 4);
                move |_| f.next_reading()
            })
            .collect();
        assert_eq!(a, b);
        assert_ne!(a, other);
    }

    #[test]
    fn readings_stay_in_a_freezers_range_and_drift_slowly() {
        for index in 0..20 {
            let mut f = Freezer::new(1, index);
            let mut last = f.next_reading();
            for _ in 0..10_000 {
                let r = f.next_reading();
                assert!((-25.0..=-10.0).contains(&r.temperature), "{r:?}");
                assert!((0.0..=100.0).contains(&r.humidity), "{r:?}");
                // No jumps beyond a door opening between two consecutive readings.
                assert!(
                    (r.temperature - last.temperature).abs() <= 3.6,
                    "{last:?} -> {r:?}"
                );
                last = r;
            }
        }
    }

    #[test]
    fn padding_hits_the_size_exactly() {
        let mut e = Event {
            device_id: "freezer1".into(),
            seq: 7,
            ts: 1,
            temperature: -18.0,
            humidity: 60.0,
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
            pad: None,
        };
        assert_eq!(
            String::from_utf8(e.to_json()).unwrap(),
            r#"{"device_id":"freezer7","seq":42,"ts":1764000000123,"temperature":-18.4,"humidity":64.9}"#
        );
    }
}
