//! `command`: load-tests the fleet's command path. One MQTT client sends a command to each
//! target device (`freezers/<id>/cmd`) at a steady pace, listens on `freezers/+/cmd/reply`, and
//! reports sent, answered, refused and lost (no reply within `--timeout`) with round-trip
//! latency percentiles from an HDR histogram, per command and overall.

use std::collections::HashMap;
use std::time::Duration;

use anyhow::Result;
use rumqttc::{Event, Incoming, QoS};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::cli::CommandArgs;
use crate::config::command::{CommandConfig, CommandFlags, REPLY_FILTER};
use crate::error::exit;
use crate::stats::{Quantiles, histogram};
use crate::transport::mqtt::{self, ClientSpec};

/// The in-flight window of the command client (IoT Core allows 100 unacknowledged QoS 1).
const INFLIGHT: u16 = 100;

pub fn run(args: CommandArgs) -> Result<i32> {
    let cfg = CommandConfig::resolve(args.into_flags())?;
    super::runtime()?.block_on(async {
        let mut signals = crate::signals::Signals::new()?;
        let report = tokio::select! {
            r = send_all(&cfg) => r?,
            _ = signals.recv() => {
                tracing::warn!("command: interrupted; nothing reported");
                return Ok(exit::RUN_FAILED);
            }
        };
        crate::live::eprint(&report.summary());
        if let Some(path) = &cfg.report {
            let json = serde_json::to_string_pretty(&report)?;
            if path.as_os_str() == "-" {
                println!("{json}");
            } else {
                std::fs::write(path, json + "\n")
                    .map_err(|e| anyhow::anyhow!("writing the report {}: {e}", path.display()))?;
            }
        }
        Ok(if report.lost == 0 && report.refused == 0 {
            exit::OK
        } else {
            exit::RUN_FAILED
        })
    })
}

impl CommandArgs {
    fn into_flags(self) -> CommandFlags {
        CommandFlags {
            endpoint: self.endpoint,
            port: self.port,
            ca: self.ca,
            cert: self.cert,
            key: self.key,
            certs: self.certs,
            id: self.id,
            client_id: self.client_id,
            to: self.to,
            devices: self.devices,
            id_prefix: self.id_prefix,
            cmd: self.cmd,
            value: self.value,
            rate: self.rate,
            timeout: self.timeout,
            report: self.report,
        }
    }
}

/// What happened to one command.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Outcome {
    pub id: String,
    pub device: String,
    /// "ok", "refused" or "lost".
    pub result: String,
    /// Publish to reply, when answered.
    pub round_trip_ms: Option<f64>,
    /// Why the device refused it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// The report: the same shape of counts, rate and `latency_ms` quantiles as `run`'s, with the
/// histogram for exact merging, and each command's outcome.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Report {
    pub kind: String,
    pub endpoint: String,
    pub cmd: String,
    pub value: Option<f64>,
    pub targets: usize,
    pub sent: u64,
    pub answered: u64,
    pub refused: u64,
    pub lost: u64,
    /// Replies that matched no command of this run (another sender's, or a repeat).
    pub unexpected: u64,
    pub duration_s: f64,
    pub rate: crate::report::Rate,
    pub latency_ms: RoundTrip,
    pub histograms: std::collections::BTreeMap<String, String>,
    pub commands: Vec<Outcome>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RoundTrip {
    /// From the command's publish to its reply's arrival.
    pub round_trip: Quantiles,
}

impl Report {
    pub fn summary(&self) -> String {
        let q = &self.latency_ms.round_trip;
        let mut out = format!(
            "freezer-fleet command {} to {} device(s) in {:.1} s\n  sent      {}, answered {} ({} ok, {} refused), lost {} (no reply in time)\n",
            self.cmd,
            self.targets,
            self.duration_s,
            self.sent,
            self.answered,
            self.answered - self.refused,
            self.refused,
            self.lost,
        );
        if q.count > 0 {
            out.push_str(&format!(
                "  latency   round trip p50 {} p90 {} p99 {} max {} ms\n",
                q.p50, q.p90, q.p99, q.max
            ));
        }
        let lost: Vec<&str> = self
            .commands
            .iter()
            .filter(|c| c.result == "lost")
            .map(|c| c.device.as_str())
            .collect();
        if !lost.is_empty() {
            let more = lost.len().saturating_sub(5);
            out.push_str(&format!(
                "  lost      {}{}: is the fleet running with --listen, and subscribed?\n",
                lost[..lost.len().min(5)].join(", "),
                if more > 0 {
                    format!(" and {more} more")
                } else {
                    String::new()
                }
            ));
        }
        for c in self.commands.iter().filter(|c| c.result == "refused").take(5) {
            out.push_str(&format!(
                "  refused   {}: {}\n",
                c.device,
                c.error.as_deref().unwrap_or("")
            ));
        }
        out
    }
}

/// The pure bookkeeping of a command run: what was sent when, what came back.
#[derive(Debug, Default)]
pub struct Tally {
    /// Command id → (device, sent at), until answered.
    waiting: HashMap<String, (String, Instant)>,
    outcomes: Vec<Outcome>,
    index: HashMap<String, usize>,
    unexpected: u64,
}

/// A reply as devices send it.
#[derive(Debug, Deserialize)]
struct Reply {
    id: serde_json::Value,
    ok: bool,
    #[serde(default)]
    error: Option<String>,
}

impl Tally {
    pub fn sent(&mut self, id: String, device: String, at: Instant) {
        self.index.insert(id.clone(), self.outcomes.len());
        self.outcomes.push(Outcome {
            id: id.clone(),
            device: device.clone(),
            result: "lost".into(),
            round_trip_ms: None,
            error: None,
        });
        self.waiting.insert(id, (device, at));
    }

    /// A reply's payload, arrived at `at`.
    pub fn reply(&mut self, payload: &[u8], at: Instant) {
        let Ok(reply) = serde_json::from_slice::<Reply>(payload) else {
            self.unexpected += 1;
            return;
        };
        let id = match reply.id {
            serde_json::Value::String(s) => s,
            other => other.to_string(),
        };
        let Some((_, sent)) = self.waiting.remove(&id) else {
            self.unexpected += 1;
            return;
        };
        let o = &mut self.outcomes[self.index[&id]];
        o.result = if reply.ok { "ok" } else { "refused" }.into();
        o.round_trip_ms = Some(at.saturating_duration_since(sent).as_secs_f64() * 1000.0);
        o.error = reply.error;
    }

    pub fn waiting(&self) -> usize {
        self.waiting.len()
    }

    /// The report, with `elapsed` since the first command.
    pub fn report(self, cfg: &CommandConfig, elapsed: Duration) -> Report {
        let mut h = histogram();
        let mut refused = 0;
        let mut answered = 0;
        for o in &self.outcomes {
            if let Some(ms) = o.round_trip_ms {
                answered += 1;
                let _ = h.record(((ms * 1000.0) as u64).max(1));
            }
            if o.result == "refused" {
                refused += 1;
            }
        }
        let sent = self.outcomes.len() as u64;
        let secs = elapsed.as_secs_f64().max(1e-3);
        Report {
            kind: "command".into(),
            endpoint: format!("{}:{}", cfg.client.host, cfg.client.port),
            cmd: cfg.cmd.clone(),
            value: cfg.value,
            targets: cfg.targets.len(),
            sent,
            answered,
            refused,
            lost: sent - answered,
            unexpected: self.unexpected,
            duration_s: crate::report::round2(secs),
            rate: crate::report::Rate {
                target: Some(cfg.rate),
                achieved: crate::report::round2(sent as f64 / secs),
            },
            latency_ms: RoundTrip {
                round_trip: Quantiles::of(&h),
            },
            histograms: crate::report::encode(&h)
                .map(|b| ("round_trip".to_string(), b))
                .into_iter()
                .collect(),
            commands: self.outcomes,
        }
    }
}

/// What the client's event loop passes on.
enum Heard {
    Subscribed(Result<(), String>),
    Reply(Vec<u8>, Instant),
    Lost(String),
}

async fn send_all(cfg: &CommandConfig) -> Result<Report> {
    let c = &cfg.client;
    let spec = ClientSpec {
        id: c.client_id.clone(),
        host: c.host.clone(),
        port: c.port,
        tls: c.tls.clone(),
        keep_alive: Duration::from_secs(60),
        clean_session: true,
        inflight: INFLIGHT,
        requests: INFLIGHT,
        max_incoming: mqtt::MAX_PACKET,
        max_outgoing: mqtt::MAX_PACKET,
        connect_timeout: Duration::from_secs(10),
        bind: None,
        websocket: None,
    };
    let (client, mut eventloop) = mqtt::client(&spec);
    let addr = format!("{}:{}", c.host, c.port);
    let (heard_tx, mut heard) = mpsc::unbounded_channel();
    let sub_client = client.clone();
    let poll_addr = addr.clone();
    let poller = tokio::spawn(async move {
        loop {
            let ev = eventloop.poll().await;
            let msg = match ev {
                Ok(Event::Incoming(Incoming::ConnAck(_))) => {
                    if sub_client
                        .subscribe(REPLY_FILTER, QoS::AtLeastOnce)
                        .await
                        .is_err()
                    {
                        break;
                    }
                    continue;
                }
                Ok(Event::Incoming(Incoming::SubAck(ack))) => Heard::Subscribed(
                    if ack
                        .return_codes
                        .iter()
                        .any(|c| matches!(c, rumqttc::SubscribeReasonCode::Failure))
                    {
                        Err(format!(
                            "the broker refused the subscription to '{REPLY_FILTER}' (check the policy allows iot:Subscribe and iot:Receive on it)"
                        ))
                    } else {
                        Ok(())
                    },
                ),
                Ok(Event::Incoming(Incoming::Publish(p))) => Heard::Reply(p.payload.to_vec(), Instant::now()),
                Ok(_) => continue,
                Err(e) => Heard::Lost(crate::cause::classify(&e, &poll_addr).detail),
            };
            let lost = matches!(msg, Heard::Lost(_));
            if heard_tx.send(msg).is_err() || lost {
                break;
            }
        }
        eventloop
    });

    // Connected and subscribed before the first command, so no reply is missed.
    match tokio::time::timeout(Duration::from_secs(15), heard.recv()).await {
        Ok(Some(Heard::Subscribed(Ok(())))) => {}
        Ok(Some(Heard::Subscribed(Err(why)))) => anyhow::bail!("command: {why}"),
        Ok(Some(Heard::Lost(why))) => anyhow::bail!("command: cannot connect: {why}"),
        _ => anyhow::bail!("command: no connection to {addr} within 15 s"),
    }

    let run = format!("c{}", std::process::id());
    let started = Instant::now();
    let period = Duration::from_secs_f64(1.0 / cfg.rate);
    let mut tally = Tally::default();
    let mut next = 0usize;
    let mut lost_link: Option<String> = None;
    let payload = |id: &str| {
        let mut cmd = serde_json::json!({"id": id, "cmd": cfg.cmd});
        if let Some(v) = cfg.value {
            cmd["value"] = serde_json::json!(v);
        }
        cmd.to_string().into_bytes()
    };
    // Send at the pace asked, taking replies as they come.
    while next < cfg.targets.len() && lost_link.is_none() {
        let due = started + period.mul_f64(next as f64);
        tokio::select! {
            _ = tokio::time::sleep_until(due) => {
                let device = &cfg.targets[next];
                let id = format!("{run}-{}", next + 1);
                let topic = crate::device::listen::command_topic(device);
                let at = Instant::now();
                client.publish(topic, QoS::AtLeastOnce, false, payload(&id)).await?;
                tally.sent(id, device.clone(), at);
                next += 1;
            }
            Some(h) = heard.recv() => match h {
                Heard::Reply(p, at) => tally.reply(&p, at),
                Heard::Lost(why) => lost_link = Some(why),
                Heard::Subscribed(_) => {}
            },
        }
    }
    // Then wait for the rest, each at most --timeout after the last was sent.
    let deadline = Instant::now() + cfg.timeout;
    while tally.waiting() > 0 && lost_link.is_none() {
        tokio::select! {
            _ = tokio::time::sleep_until(deadline) => break,
            h = heard.recv() => match h {
                Some(Heard::Reply(p, at)) => tally.reply(&p, at),
                Some(Heard::Lost(why)) => lost_link = Some(why),
                Some(Heard::Subscribed(_)) => {}
                None => break,
            },
        }
    }
    if let Some(why) = lost_link {
        tracing::warn!(
            "command: the connection to {addr} dropped ({why}); commands not answered by then count as lost"
        );
    }
    let elapsed = started.elapsed();
    let _ = client.try_disconnect();
    let _ = tokio::time::timeout(Duration::from_millis(500), poller).await;
    Ok(tally.report(cfg, elapsed))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replies_match_their_commands_and_the_rest_are_lost() {
        let t0 = Instant::now();
        let mut t = Tally::default();
        t.sent("c1-1".into(), "freezer1".into(), t0);
        t.sent("c1-2".into(), "freezer2".into(), t0);
        t.sent("c1-3".into(), "freezer3".into(), t0);
        t.reply(
            br#"{"id":"c1-2","ok":true,"ts":1}"#,
            t0 + Duration::from_millis(4),
        );
        t.reply(
            br#"{"id":"c1-1","ok":false,"error":"setpoint 20 is outside","ts":1}"#,
            t0 + Duration::from_millis(2),
        );
        // A repeat and a stranger's reply are not ours.
        t.reply(br#"{"id":"c1-2","ok":true,"ts":1}"#, t0);
        t.reply(b"not json", t0);
        assert_eq!(t.waiting(), 1);
        let results: Vec<(&str, &str, Option<f64>)> = t
            .outcomes
            .iter()
            .map(|o| (o.device.as_str(), o.result.as_str(), o.round_trip_ms))
            .collect();
        assert_eq!(
            results,
            [
                ("freezer1", "refused", Some(2.0)),
                ("freezer2", "ok", Some(4.0)),
                ("freezer3", "lost", None)
            ]
        );
        assert_eq!(t.unexpected, 2);
    }
}
