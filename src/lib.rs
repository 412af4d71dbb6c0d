//! freezer-fleet: a fleet of simulated IoT freezers that publish temperature/humidity JSON over
//! MQTT with mutual TLS (one certificate per device, as AWS IoT Core issues them), and a load
//! tester for MQTT endpoints.
//!
//! # Layout
//! - [`cli`]: clap definitions only.
//! - [`config`]: the TOML file plus flags, validated into a [`config::FleetConfig`] before any connection.
//! - [`identity`]: certificates and keys → `rustls::ClientConfig` (TLS 1.2+, server name verified).
//! - [`freezer`]: what a device sends: the seeded freezer model and the event JSON.
//! - [`device`]: how it is sent: one tokio task per device owning one MQTT client.
//! - [`fleet`]: spawning, console injection routing, graceful shutdown.
//! - [`console`]: stdin commands (Enter injects one event).
//! - [`cause`]: connection errors → one actionable cause.
//! - [`stats`] and [`report`]: counters and the final summary.
//! - [`error`]: input errors (exit 2) versus run failures (exit 1).

pub mod cause;
pub mod cli;
pub mod config;
pub mod console;
pub mod device;
pub mod error;
pub mod fleet;
pub mod freezer;
pub mod identity;
pub mod report;
pub mod stats;
