//! The watcher: an MQTT test client that subscribes to a topic filter, prints each event as it
//! arrives, and keeps per-device accounting from `device_id` / `seq` / `ts`: received, missing
//! (gaps in seq), duplicates, out of order, and end-to-end latency from `ts` (the pure part is in
//! `accounting`).

use std::time::Duration;

use anyhow::Result;
use rumqttc::{Event as MqttEvent, Incoming, QoS};
use tokio::sync::{oneshot, watch};

use crate::cause;
use crate::config::watch::WatchConfig;
use crate::freezer::{Event, unix_millis};
use crate::live;
use crate::transport::mqtt::{self, ClientSpec};

mod accounting;
pub mod kinesis;

pub use accounting::{Accounting, SeqKind};

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
        requests: 60,
        max_incoming: MAX_MESSAGE,
        max_outgoing: MAX_MESSAGE,
        connect_timeout: Duration::from_secs(10),
        bind: None,
        websocket: None,
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
        // Invalid on purpose (`--faults malformed`): it names itself.
        if payload.windows(19).any(|w| w == br#""fault":"malformed""#) {
            acc.injected.malformed += 1;
            return false;
        }
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
        let note = match (kind, event.fault.as_deref()) {
            (_, Some(fault)) => format!("  injected {fault}"),
            (SeqKind::New, None) => String::new(),
            (SeqKind::Duplicate, None) => "  DUPLICATE".into(),
            (SeqKind::OutOfOrder, None) => "  OUT OF ORDER".into(),
        };
        // The model's fields, when the fleet sends them (--fields).
        let mut extra = String::new();
        if let Some(state) = event.state {
            extra.push_str(&format!("  {}", state.name()));
        }
        if let Some(sp) = event.setpoint {
            extra.push_str(&format!("  setpoint {sp:.1}"));
        }
        if event.door_open == Some(true) {
            extra.push_str("  DOOR OPEN");
        }
        if event.alarm == Some(true) {
            extra.push_str("  ALARM");
        }
        let line = format!(
            "{:<12} seq {:<6} {:>6.1} °C {:>5.1} %  {latency:>4} ms{extra}{note}\n",
            event.device_id, event.seq, event.temperature, event.humidity
        );
        live::print_stdout(line.as_bytes());
    }
    true
}
