//! freezer-fleet: a fleet of simulated IoT freezers that publish temperature/humidity JSON over
//! MQTT with mutual TLS (one certificate per device, as AWS IoT Core issues them), and a load
//! tester for MQTT endpoints.
//!
//! # Layout
//! This is the one list of modules (README.md points here). Only what `main` needs is public.
//! Arrows say who may import whom:
//! `app → fleet → device → transport`, and `config → identity`; nothing imports `app` or `cli`.
//! - [`app`]: one file per subcommand (run, demo, certs, broker, watch, report, aws, command),
//!   composed from the rest; `app::aws` defines the fleet in IoT Core (provision, teardown,
//!   endpoint); `app::command` load-tests the command path of a listening fleet.
//! - [`cli`]: clap definitions only, converted into config layers.
//! - [`config`]: flags and the TOML file as layers → pure per-setting functions → one I/O stage →
//!   a validated [`config::FleetConfig`]; AWS IoT Core's limits (`config::aws_iot`); the
//!   watcher's and the command sender's settings (`config::watch`, `config::command`).
//! - [`identity`]: PEM certificates and keys → `rustls::ClientConfig` (TLS 1.2+, server name
//!   verified); the AWS download layout shared by reader and writer (`identity::layout`); the
//!   identity I/O stage (`identity::devices`).
//! - [`freezer`]: what a device sends: the seeded thermal model on simulated time
//!   (`freezer::model`: compressor, doors, defrosts, faults, alarm; actions) and the event JSON.
//! - [`device`]: what a device sends when: one task per device with its pure delivery ledger
//!   (`device::ledger`) and reconnect policy (`device::reconnect`); what it hears and does
//!   (`device::listen`: console actions, the Device Shadow, commands and their replies).
//! - [`transport`]: how events are sent, behind one seam: [`transport::mqtt`] (3.1.1),
//!   [`transport::mqtt5`], [`transport::https`] (IoT Core's HTTPS publish), [`transport::batch`]
//!   (Kinesis PutRecords, Firehose PutRecordBatch: one batcher per sink), [`transport::proxy`]
//!   (the HTTPS proxy in front of Firehose).
//! - [`fleet`]: starts the devices on each sink (the first takes the readings and passes them to
//!   the others), runs until the caller's stop future, drains, returns each sink's data;
//!   [`workers`]: the threads the devices run on (one current-thread runtime per core).
//! - [`console`]: stdin commands (Enter injects one event); [`live`]: the terminal's one writer
//!   and the status line; [`nofile`]: the open-files limit; [`signals`] and [`stop`]: when to stop.
//! - [`cause`]: connection errors → a typed [`cause::Kind`] and one actionable sentence.
//! - [`stats`], [`log_gate`] and [`report`]: counters declared once, throttled per-device logs,
//!   the summary and the JSON report, and the exact merge of reports (`report::merge`);
//!   `stats::outage`: the story of unplanned drops (how long, how many down, how fast back).
//! - [`preflight`]: one TLS handshake and one MQTT CONNECT with the endpoint before the fleet
//!   starts;
//!   [`preflight_sinks`]: the stream exists, the proxy speaks TLS 1.2+.
//! - [`ratelimit`]: the fleet-wide pacer of connection attempts (`--ramp-up`).
//! - [`watch`]: the subscriber that prints events and counts gaps, duplicates, latency; and
//!   `watch::kinesis`, the same accounting over every shard of a Kinesis stream.
//! - [`local`]: the zero-setup parts: a local PKI and the embedded mTLS broker.
//! - [`shard`]: which part of the fleet this process runs (`--shard I/N`).
//! - [`aws`]: shared by every AWS path: the credential chain with AssumeRole and refresh
//!   (`aws::credentials`), endpoints and regions (`aws::endpoint`), SigV4 signing (`aws::sigv4`),
//!   the JSON and REST-JSON API client (`aws::json`), the IoT registry (`aws::iot`).
//! - [`error`]: input errors (exit 2) versus run failures (exit 1).
//!
//! # Adding a transport
//! Implement [`transport::Transport`] in a new module under `src/transport/` (its doc says how
//! per-device and batching transports fit), add its flags to `cli.rs` and `config`, and choose it
//! in `app/run.rs`. The device task, ledger, reconnect policy, stats and report stay as they are.

// The layout above links modules that are private to the crate on purpose.
#![allow(rustdoc::private_intra_doc_links)]

pub mod app;
mod aws;
mod cause;
pub mod cli;
mod config;
mod console;
mod device;
pub mod error;
mod fleet;
mod freezer;
mod identity;
pub mod live;
mod local;
mod log_gate;
mod metrics;
mod nofile;
mod preflight;
mod preflight_sinks;
mod ratelimit;
mod report;
mod sendq;
mod shard;
mod signals;
mod stats;
mod stop;
mod transport;
mod watch;
mod workers;
