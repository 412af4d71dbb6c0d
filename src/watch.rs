//! The watcher: an MQTT test client that subscribes to a topic filter, prints each event as it
//! arrives, and keeps per-device accounting from `device_id` / `seq` / `ts`: received, missing
//! (gaps in seq), duplicates, out of order, and end-to-end latency from `ts`.
//!
//! A device's window starts at the first seq the watcher sees from it, so a watcher started after
//! the fleet does not count what it could never have seen; a lower seq arriving later is counted
//! out of order and widens the window.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::time::Duration;

use anyhow::Result;
use hdrhistogram::Histogram;
use rumqttc::{Event as MqttEvent, Incoming, QoS};
use serde::Serialize;
use tokio::sync::{oneshot, watch};

use crate::cause;
use crate::config::watch::WatchConfig;
use crate::freezer::{Event, unix_millis};
use crate::live;
use crate::transport::mqtt::{self, ClientSpec};

/// Which seqs of one device have been seen, compactly: a bitmap from the first seq seen, and a
/// set for the rare ones below it.
#[derive(Debug, Default, Clone)]
pub struct SeqTracker {
    first: u64,
    bits: Vec<u64>,
    below: BTreeSet<u64>,
    max: u64,
    distinct: u64,
    started: bool,
}

/// What one seq turned out to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SeqKind {
    New,
    Duplicate,
    OutOfOrder,
}

impl SeqTracker {
    pub fn record(&mut self, seq: u64) -> SeqKind {
        if !self.started {
            self.started = true;
            self.first = seq;
            self.max = seq;
        }
        let fresh = if seq < self.first {
            self.below.insert(seq)
        } else {
            let off = seq - self.first;
            let (word, bit) = ((off / 64) as usize, off % 64);
            if word >= self.bits.len() {
                self.bits.resize(word + 1, 0);
            }
            let was = self.bits[word] & (1 << bit) != 0;
            self.bits[word] |= 1 << bit;
            !was
        };
        if !fresh {
            return SeqKind::Duplicate;
        }
        self.distinct += 1;
        if seq < self.max {
            SeqKind::OutOfOrder
        } else {
            self.max = seq;
            SeqKind::New
        }
    }

    /// Lowest seq seen.
    pub fn min(&self) -> u64 {
        self.below.first().copied().unwrap_or(self.first)
    }

    pub fn max(&self) -> u64 {
        self.max
    }

    /// Seqs between the lowest and highest seen that never arrived.
    pub fn missing(&self) -> u64 {
        if !self.started {
            return 0;
        }
        (self.max - self.min() + 1) - self.distinct
    }
}

/// Per-device accounting.
#[derive(Debug, Clone)]
pub struct Tally {
    pub received: u64,
    pub duplicates: u64,
    pub out_of_order: u64,
    pub seqs: SeqTracker,
    /// End-to-end latency, ms from `ts` to arrival.
    pub latency: Histogram<u64>,
}

impl Default for Tally {
    fn default() -> Self {
        Tally {
            received: 0,
            duplicates: 0,
            out_of_order: 0,
            seqs: SeqTracker::default(),
            latency: new_histogram(),
        }
    }
}

fn new_histogram() -> Histogram<u64> {
    // 1 ms to 1 hour at 3 significant digits; larger values saturate.
    Histogram::new_with_bounds(1, 3_600_000, 3).expect("valid histogram bounds")
}

/// Everything the watcher counted.
#[derive(Debug, Clone, Default)]
pub struct Accounting {
    pub devices: BTreeMap<String, Tally>,
    /// Payloads that were not a freezer event (not JSON, or missing device_id/seq/ts).
    pub invalid: u64,
}

impl Accounting {
    /// Accounts one received event at `now_ms`; returns what its seq was and its latency (ms).
    pub fn record(&mut self, event: &Event, now_ms: u64) -> (SeqKind, u64) {
        let tally = self.devices.entry(event.device_id.clone()).or_default();
        tally.received += 1;
        let kind = tally.seqs.record(event.seq);
        match kind {
            SeqKind::Duplicate => tally.duplicates += 1,
            SeqKind::OutOfOrder => tally.out_of_order += 1,
            SeqKind::New => {}
        }
        let latency = now_ms.saturating_sub(event.ts);
        tally.latency.saturating_record(latency.max(1));
        (kind, latency)
    }

    pub fn totals(&self) -> Totals {
        let mut t = Totals::default();
        let mut all = new_histogram();
        for d in self.devices.values() {
            t.received += d.received;
            t.missing += d.seqs.missing();
            t.duplicates += d.duplicates;
            t.out_of_order += d.out_of_order;
            let _ = all.add(&d.latency);
        }
        t.devices = self.devices.len() as u64;
        t.invalid = self.invalid;
        if !all.is_empty() {
            t.latency_p50_ms = Some(all.value_at_quantile(0.5));
            t.latency_p99_ms = Some(all.value_at_quantile(0.99));
        }
        t
    }

    /// The table printed at the end: a row per device and a total.
    pub fn table(&self) -> String {
        let mut out = String::new();
        let total_label = format!("total ({})", self.devices.len());
        let width = self
            .devices
            .keys()
            .map(String::len)
            .max()
            .unwrap_or(0)
            .max(total_label.len());
        let _ = writeln!(
            out,
            "{:<width$}  {:>9} {:>8} {:>10} {:>12} {:>8} {:>8} {:>7} {:>7}",
            "device",
            "received",
            "missing",
            "duplicates",
            "out-of-order",
            "first",
            "last",
            "p50 ms",
            "p99 ms"
        );
        for (id, d) in &self.devices {
            let _ = writeln!(
                out,
                "{id:<width$}  {:>9} {:>8} {:>10} {:>12} {:>8} {:>8} {:>7} {:>7}",
                d.received,
                d.seqs.missing(),
                d.duplicates,
                d.out_of_order,
                d.seqs.min(),
                d.seqs.max(),
                d.latency.value_at_quantile(0.5),
                d.latency.value_at_quantile(0.99),
            );
        }
        let t = self.totals();
        let _ = writeln!(
            out,
            "{:<width$}  {:>9} {:>8} {:>10} {:>12} {:>8} {:>8} {:>7} {:>7}",
            total_label,
            t.received,
            t.missing,
            t.duplicates,
            t.out_of_order,
            "",
            "",
            t.latency_p50_ms
                .map(|v| v.to_string())
                .unwrap_or_else(|| "-".into()),
            t.latency_p99_ms
                .map(|v| v.to_string())
                .unwrap_or_else(|| "-".into()),
        );
        if t.invalid > 0 {
            let _ = writeln!(
                out,
                "{} message(s) were not freezer events and were not counted",
                t.invalid
            );
        }
        out
    }
}

/// Fleet-wide figures of a watch.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Totals {
    pub devices: u64,
    pub received: u64,
    pub missing: u64,
    pub duplicates: u64,
    pub out_of_order: u64,
    pub invalid: u64,
    pub latency_p50_ms: Option<u64>,
    pub latency_p99_ms: Option<u64>,
}

/// What a caller may learn while the watcher runs.
#[derive(Default)]
pub struct Hooks {
    /// Told once the broker has acknowledged the subscription, so a caller can start publishers
    /// without losing the first events.
    pub subscribed: Option<oneshot::Sender<()>>,
    /// The number of freezer events received so far.
    pub received: Option<watch::Sender<u64>>,
}

/// How long the watcher waits before reconnecting after a drop.
const RECONNECT_AFTER: Duration = Duration::from_secs(1);
/// The largest message the watcher accepts (a padded event may exceed IoT Core's 128 KB).
const MAX_MESSAGE: usize = 256 * 1024;

/// Subscribes and accounts events until `stop` resolves. A failure of the first connection is
/// an error; later drops are retried every second.
pub async fn run(
    cfg: &WatchConfig,
    mut hooks: Hooks,
    stop: impl std::future::Future<Output = ()>,
) -> Result<Accounting> {
    let spec = ClientSpec {
        id: cfg.client_id.clone(),
        host: cfg.host.clone(),
        port: cfg.port,
        tls: cfg.tls.clone(),
        keep_alive: Duration::from_secs(60),
        clean_session: true,
        inflight: 60,
        max_incoming: MAX_MESSAGE,
        max_outgoing: MAX_MESSAGE,
        connect_timeout: Duration::from_secs(10),
        bind: None,
    };
    let (client, mut eventloop) = mqtt::client(&spec);
    let addr = format!("{}:{}", cfg.host, cfg.port);
    let mut acc = Accounting::default();
    let mut connected_once = false;
    tokio::pin!(stop);
    loop {
        let polled = tokio::select! {
            _ = &mut stop => break,
            p = eventloop.poll() => p,
        };
        match polled {
            Ok(MqttEvent::Incoming(Incoming::ConnAck(_))) => {
                if connected_once {
                    tracing::info!("watch: reconnected to {addr}");
                }
                connected_once = true;
                client.try_subscribe(cfg.topic.clone(), QoS::AtLeastOnce)?;
            }
            Ok(MqttEvent::Incoming(Incoming::SubAck(ack))) => {
                if ack
                    .return_codes
                    .iter()
                    .any(|c| matches!(c, rumqttc::SubscribeReasonCode::Failure))
                {
                    anyhow::bail!(
                        "the broker refused the subscription to '{}' (check the policy allows iot:Subscribe)",
                        cfg.topic
                    );
                }
                if let Some(tx) = hooks.subscribed.take() {
                    let _ = tx.send(());
                }
            }
            Ok(MqttEvent::Incoming(Incoming::Publish(p))) => {
                if record(&mut acc, &p.topic, &p.payload, cfg.json)
                    && let Some(tx) = &hooks.received
                {
                    tx.send_modify(|n| *n += 1);
                }
            }
            Ok(_) => {}
            Err(err) => {
                let cause = cause::classify(&err, &addr);
                if !connected_once {
                    anyhow::bail!("watch: cannot connect: {}", cause.detail);
                }
                tracing::warn!("watch: connection lost: {}; reconnecting", cause.detail);
                tokio::select! {
                    _ = &mut stop => break,
                    _ = tokio::time::sleep(RECONNECT_AFTER) => {}
                }
            }
        }
    }
    mqtt::disconnect_cleanly(&client, &mut eventloop, Duration::from_millis(500), |_| {}).await;
    Ok(acc)
}

/// Accounts and prints one message; false when it was not a freezer event.
fn record(acc: &mut Accounting, topic: &str, payload: &[u8], json: bool) -> bool {
    let now = unix_millis();
    let Ok(event) = serde_json::from_slice::<Event>(payload) else {
        acc.invalid += 1;
        if acc.invalid <= 5 {
            tracing::warn!(
                "watch: a message on '{topic}' is not a freezer event ({} bytes)",
                payload.len()
            );
        }
        return false;
    };
    let (kind, latency) = acc.record(&event, now);
    if json {
        let mut line = payload.to_vec();
        line.push(b'\n');
        live::print_stdout(&line);
    } else {
        let note = match kind {
            SeqKind::New => "",
            SeqKind::Duplicate => "  DUPLICATE",
            SeqKind::OutOfOrder => "  OUT OF ORDER",
        };
        let line = format!(
            "{:<12} seq {:<6} {:>6.1} °C {:>5.1} %  {latency:>4} ms{note}\n",
            event.device_id, event.seq, event.temperature, event.humidity
        );
        live::print_stdout(line.as_bytes());
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(seq: u64) -> Event {
        Event {
            device_id: "d".into(),
            seq,
            ts: 1000,
            temperature: -18.0,
            humidity: 60.0,
            pad: None,
        }
    }

    #[test]
    fn gaps_duplicates_and_reorderings_are_counted_exactly() {
        let mut acc = Accounting::default();
        // 1 2 4 4 3 7 5 9 : missing 6 and 8; one duplicate (4); out of order 3 and 5.
        for s in [1, 2, 4, 4, 3, 7, 5, 9] {
            acc.record(&ev(s), 1005);
        }
        let d = &acc.devices["d"];
        assert_eq!(d.received, 8);
        assert_eq!(d.duplicates, 1);
        assert_eq!(d.out_of_order, 2);
        assert_eq!(d.seqs.missing(), 2);
        assert_eq!((d.seqs.min(), d.seqs.max()), (1, 9));
    }

    #[test]
    fn the_window_starts_at_the_first_seq_seen_and_widens_downwards() {
        let mut t = SeqTracker::default();
        assert_eq!(t.record(100), SeqKind::New);
        assert_eq!(t.record(102), SeqKind::New);
        assert_eq!(t.missing(), 1);
        assert_eq!(t.record(98), SeqKind::OutOfOrder);
        assert_eq!(t.record(98), SeqKind::Duplicate);
        assert_eq!(t.missing(), 2); // 99 and 101
        assert_eq!(t.record(101), SeqKind::OutOfOrder);
        assert_eq!(t.record(99), SeqKind::OutOfOrder);
        assert_eq!(t.missing(), 0);
        assert_eq!(t.record(100_000), SeqKind::New);
        assert_eq!(t.missing(), 100_000 - 98 + 1 - 6);
    }

    #[test]
    fn latency_is_measured_from_ts() {
        let mut acc = Accounting::default();
        acc.record(&ev(1), 1000 + 40);
        acc.record(&ev(2), 1000 + 60);
        let t = acc.totals();
        assert_eq!(t.latency_p50_ms, Some(40));
        assert_eq!(t.latency_p99_ms, Some(60));
    }
}
