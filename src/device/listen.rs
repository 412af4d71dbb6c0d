//! What a device hears and does besides sending events: actions on its freezer (the console's
//! verbs, cloud commands, the Device Shadow's delta) and, with `--listen`, its own messages to
//! the cloud: subscriptions, shadow reports and command replies.
//!
//! Topics (AWS IoT Core's classic, unnamed shadow, and the fleet's command topics):
//! - `$aws/things/<id>/shadow/update/delta` and `.../shadow/get/accepted`: subscribed; a delta's
//!   `setpoint` is applied (the temperature then follows physically) and reported back;
//! - `$aws/things/<id>/shadow/get`: asked once per connection, so a setpoint desired while the
//!   device was offline is applied on connect;
//! - `$aws/things/<id>/shadow/update`: `{"state":{"reported":{...}}}` on connect and whenever
//!   the reported state changes (at a reading or an action);
//! - `freezers/<id>/cmd`: `{"id":"c1","cmd":"defrost","value":-25}` applied and answered on
//!   `freezers/<id>/cmd/reply` with `{"id":"c1","ok":true,"ts":…}` or `ok: false` and why.

use serde_json::{Map, Value, json};
use tokio::time::Instant;

use super::{Device, InjectNote};
use crate::freezer::{Action, Reported, unix_millis};
use crate::transport::Sender;

/// The prefix of every device's command topics.
pub const COMMAND_PREFIX: &str = "freezers";
/// AWS IoT Core answers at most this many shadow requests per second per thing; the aws-iot
/// profile keeps reports this far apart (a report held back goes out with the next change).
pub const SHADOW_MIN_SPACING: std::time::Duration = std::time::Duration::from_millis(50);

/// A device's topics.
pub fn shadow_topic(id: &str, rest: &str) -> String {
    format!("$aws/things/{id}/shadow/{rest}")
}

pub fn command_topic(id: &str) -> String {
    format!("{COMMAND_PREFIX}/{id}/cmd")
}

pub fn reply_topic(id: &str) -> String {
    format!("{COMMAND_PREFIX}/{id}/cmd/reply")
}

/// A message of the device's own, waiting for the connection.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Own {
    Subscribe(Vec<String>),
    Publish { topic: String, payload: Vec<u8> },
}

/// A command as it arrives on `freezers/<id>/cmd`.
#[derive(Debug, serde::Deserialize)]
struct Command {
    #[serde(default)]
    id: Value,
    cmd: String,
    #[serde(default)]
    value: Option<f64>,
}

impl Device {
    /// Simulated seconds at `at` (`--speed` maps wall time to the model's time).
    pub(super) fn sim_time(&self, at: Instant) -> f64 {
        at.saturating_duration_since(self.settings.start).as_secs_f64() * self.settings.model.speed
    }

    /// Runs the model up to now.
    fn catch_up(&mut self) {
        let t = self.sim_time(Instant::now());
        self.freezer.advance_to(t);
    }

    /// Applies an action now and says what came of it.
    pub(super) fn act(&mut self, action: Action) -> Result<(), String> {
        self.catch_up();
        let result = self.freezer.apply(action);
        if result.is_ok() {
            self.report_state(false);
        }
        result
    }

    /// A console verb for this device.
    pub(super) fn on_console_action(&mut self, action: Action) {
        self.stats.commands.console_actions.inc();
        let result = self.act(action);
        let _ = self.links.notes.send(InjectNote::Acted {
            id: self.id.clone(),
            action,
            result,
        });
    }

    fn listening(&self) -> bool {
        self.settings.model.listen
    }

    /// A new connection: subscribe, ask for the shadow, report the state.
    pub(super) fn on_connected_listen(&mut self) {
        if !self.listening() {
            return;
        }
        self.outbox.clear();
        self.outbox.push(Own::Subscribe(vec![
            shadow_topic(&self.id, "update/delta"),
            shadow_topic(&self.id, "get/accepted"),
            command_topic(&self.id),
        ]));
        self.outbox.push(Own::Publish {
            topic: shadow_topic(&self.id, "get"),
            payload: b"{}".to_vec(),
        });
        self.report_state(true);
    }

    /// Queues a shadow report when the reported state changed (or always, with `force`).
    pub(super) fn report_state(&mut self, force: bool) {
        if !self.listening() || !self.online() {
            return;
        }
        let now = self.freezer.reported();
        if !force && self.last_reported == Some(now) {
            return;
        }
        if self.settings.shadow_spacing
            && !force
            && self
                .last_report_at
                .is_some_and(|at| at.elapsed() < SHADOW_MIN_SPACING)
        {
            // IoT Core's per-thing rate: the next reading or action reports it.
            return;
        }
        self.last_reported = Some(now);
        self.last_report_at = Some(Instant::now());
        self.outbox.push(Own::Publish {
            topic: shadow_topic(&self.id, "update"),
            payload: reported_document(&now),
        });
    }

    /// A message on a subscribed topic.
    pub(super) fn on_message(&mut self, topic: &str, payload: &[u8]) {
        if !self.listening() {
            return;
        }
        if topic == command_topic(&self.id) {
            self.on_command(payload);
            return;
        }
        let delta = if topic == shadow_topic(&self.id, "update/delta") {
            parse_object(payload).and_then(|mut doc| doc.remove("state"))
        } else if topic == shadow_topic(&self.id, "get/accepted") {
            // The delta, if the shadow has one (a setpoint desired while the device was away).
            parse_object(payload)
                .and_then(|mut doc| doc.remove("state"))
                .and_then(|state| state.get("delta").cloned())
        } else {
            return;
        };
        match delta {
            Some(Value::Object(state)) => {
                self.stats.commands.shadow_deltas.inc();
                self.apply_desired(&state);
            }
            Some(_) => self.warn(format_args!(
                "{}: a shadow message on {topic} has no state object; ignored",
                self.id
            )),
            None => {}
        }
    }

    /// A shadow delta: `setpoint` is applied; anything else is refused (logged, not applied).
    fn apply_desired(&mut self, state: &Map<String, Value>) {
        for (key, value) in state {
            let result = match (key.as_str(), value.as_f64()) {
                ("setpoint", Some(v)) => self.act(Action::Setpoint(v)),
                ("setpoint", None) => Err(format!("setpoint {value} is not a number")),
                (other, _) => Err(format!(
                    "'{other}' is not a setting of this freezer; only setpoint is applied"
                )),
            };
            if let Err(why) = result {
                self.warn(format_args!("{}: shadow delta refused: {why}", self.id));
            }
        }
        // Report back, applied or not, so the shadow shows what the freezer does.
        self.report_state(true);
    }

    fn on_command(&mut self, payload: &[u8]) {
        self.stats.commands.received.inc();
        let (id, result) = match serde_json::from_slice::<Command>(payload) {
            Ok(c) => {
                let result = Action::parse(&c.cmd, c.value).and_then(|a| self.act(a));
                (c.id, result)
            }
            Err(e) => (
                Value::Null,
                Err(format!(
                    "not a command ({e}); send {{\"id\":\"c1\",\"cmd\":\"defrost\"}}"
                )),
            ),
        };
        let reply = match &result {
            Ok(()) => {
                self.stats.commands.answered.inc();
                json!({"id": id, "ok": true, "ts": unix_millis()})
            }
            Err(why) => {
                self.stats.commands.refused.inc();
                self.warn(format_args!("{}: command refused: {why}", self.id));
                json!({"id": id, "ok": false, "error": why, "ts": unix_millis()})
            }
        };
        self.outbox.push(Own::Publish {
            topic: reply_topic(&self.id),
            payload: reply.to_string().into_bytes(),
        });
    }

    /// Hands the device's own messages to the connection (before its events).
    pub(super) fn flush_own(&mut self, tx: &mut impl Sender) {
        if self.outbox.is_empty() {
            return;
        }
        let update = shadow_topic(&self.id, "update");
        for own in std::mem::take(&mut self.outbox) {
            let sent = match &own {
                Own::Subscribe(filters) => tx.subscribe(filters),
                Own::Publish { topic, payload } => {
                    let sent = tx.send_own(topic, payload);
                    if sent && *topic == update {
                        self.stats.commands.shadow_updates.inc();
                    }
                    sent
                }
            };
            if !sent {
                self.warn(format_args!(
                    "{}: the connection could not take a message of its own ({}); it is dropped",
                    self.id,
                    match own {
                        Own::Subscribe(_) => "a subscription".to_string(),
                        Own::Publish { topic, .. } => topic,
                    }
                ));
            }
        }
    }

    fn warn(&self, line: std::fmt::Arguments<'_>) {
        if self.settings.log_gate.may_log() {
            tracing::warn!("{line}");
        }
    }
}

fn parse_object(payload: &[u8]) -> Option<Map<String, Value>> {
    match serde_json::from_slice(payload) {
        Ok(Value::Object(m)) => Some(m),
        _ => None,
    }
}

/// `{"state":{"reported":{"state":"cooling","setpoint":-18.0,"door_open":false,"alarm":false}}}`
pub fn reported_document(r: &Reported) -> Vec<u8> {
    json!({"state": {"reported": {
        "state": r.state.name(),
        "setpoint": r.setpoint,
        "door_open": r.door_open,
        "alarm": r.alarm,
    }}})
    .to_string()
    .into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::freezer::State;

    #[test]
    fn topics_and_the_reported_document() {
        assert_eq!(
            shadow_topic("freezer2", "update/delta"),
            "$aws/things/freezer2/shadow/update/delta"
        );
        assert_eq!(command_topic("freezer2"), "freezers/freezer2/cmd");
        assert_eq!(reply_topic("freezer2"), "freezers/freezer2/cmd/reply");
        let doc = reported_document(&Reported {
            state: State::Defrost,
            setpoint: -25.0,
            door_open: false,
            alarm: true,
        });
        assert_eq!(
            String::from_utf8(doc).unwrap(),
            r#"{"state":{"reported":{"alarm":true,"door_open":false,"setpoint":-25.0,"state":"defrost"}}}"#
        );
    }
}
