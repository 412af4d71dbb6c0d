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
//! - [`preflight`]: one TLS handshake with the endpoint before the fleet starts.
//! - [`ratelimit`]: the fleet-wide pacer of connection attempts (`--ramp-up`).
//! - [`watch`]: the subscriber that prints events and counts gaps, duplicates, latency.
//! - [`local`]: the zero-setup parts: a local PKI and the embedded mTLS broker.
//! - [`app`]: what each subcommand does, composed from the modules below.
//! - [`signals`]: Ctrl-C and SIGTERM.
//! - [`error`]: input errors (exit 2) versus run failures (exit 1).

pub mod app;
pub mod cause;
pub mod cli;
pub mod config;
pub mod console;
pub mod device;
pub mod error;
pub mod fleet;
pub mod freezer;
pub mod identity;
pub mod local;
pub mod preflight;
pub mod ratelimit;
pub mod report;
pub mod signals;
pub mod stats;
pub mod watch;
