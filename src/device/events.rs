//! What a device does with what its link reports: connected, written, acknowledged, refused,
//! lost; and how it stops for good.

use std::time::Duration;

use tokio::time::Instant;

use super::ledger::Written;
use super::reconnect::{Named, Next, SessionEnd, Stage};
use super::{Conn, Device, reconnect};
use crate::cause::{Cause, Kind};
use crate::stats::Loss;
use crate::transport::LinkEvent;

impl Device {
    pub(super) fn on_event(&mut self, event: LinkEvent) {
        match event {
            LinkEvent::Connected => {
                self.on_connected();
                self.on_connected_listen();
            }
            LinkEvent::Message { topic, payload } => self.on_message(&topic, &payload),
            LinkEvent::Written { token } => match self.on_written(token) {
                Some(Written::First { lag }) => {
                    self.stats.messages.published.inc();
                    self.stats
                        .record_lag(self.index, lag, self.meant_before_connect(lag));
                    if self.taken_while_down(lag) {
                        self.stats.record_outage_wait(self.index, lag);
                    }
                }
                Some(Written::Resent) => self.stats.messages.resent.inc(),
                None => {}
            },
            LinkEvent::Refused { token, cause } => self.on_refused(token, cause),
            LinkEvent::Acked { token } => {
                if let Some(latency) = self.ledger.on_acked(token) {
                    self.policy.on_acked(Instant::now);
                    self.session.acked += 1;
                    self.stats.messages.acknowledged.inc();
                    self.stats
                        .record_puback(self.index, latency, self.meant_before_connect(latency));
                }
            }
            LinkEvent::Lost(_) | LinkEvent::Idle => {}
        }
    }

    /// The server refused an event: retried when the reason may pass (a quota), counted as
    /// failed otherwise; repeated refusals stop the device with the diagnosis.
    pub(super) fn on_refused(&mut self, token: u64, cause: Cause) {
        let retry = !cause.permanent();
        if !self.ledger.on_refused(token, retry) {
            return;
        }
        // A retried event is counted as re-sent when it is written again (Written::Resent).
        if !retry {
            self.stats.events_failed(1, Loss::Refused(cause.kind));
        }
        if self.settings.log_gate.may_log() {
            tracing::warn!("{}: {}", self.id, cause.detail);
        }
        if let Some(diagnosis) = self.policy.on_refused(&cause, &self.settings.topic) {
            self.count_failed(&diagnosis);
            tracing::warn!(
                "{}: {}; the device goes on sending (--give-up-after stops a device)",
                self.id,
                diagnosis.detail
            );
        }
        if let Some(why) = self.policy.give_up_due(Instant::now(), &cause) {
            self.stop_with = Some(why);
        }
    }

    /// A refusal that will not heal by itself: logged and counted once under the devices'
    /// failures; the device goes on trying.
    fn name_failure(&mut self, cause: &Cause) {
        self.count_failed(cause);
        tracing::warn!(
            "{}: {}; retrying every --backoff-max ({:.0} s; --give-up-after stops a device)",
            self.id,
            cause.detail,
            self.settings.backoff_max.as_secs_f64()
        );
    }

    /// Counts this device under the devices' failures, once whatever happens after.
    pub(super) fn count_failed(&mut self, cause: &Cause) {
        if !self.failed_counted {
            self.failed_counted = true;
            self.stats.device_failed(&self.id, cause);
        }
    }

    pub(super) fn on_written(&mut self, token: u64) -> Option<Written> {
        self.session.written += 1;
        self.session.first_write.get_or_insert_with(Instant::now);
        self.ledger.on_written(token)
    }

    /// Whether an event `since` its intended time was meant for before this device's first
    /// CONNACK: its latency belongs to the connect phase, not the steady state.
    fn meant_before_connect(&self, since: Duration) -> bool {
        match (self.first_connected, Instant::now().checked_sub(since)) {
            (Some(first), Some(intended)) => intended < first,
            _ => true,
        }
    }

    /// Whether an event written `lag` after its time was taken while this device was down
    /// after its last unplanned drop.
    fn taken_while_down(&self, lag: Duration) -> bool {
        let Some((from, to)) = self.last_down else {
            return false;
        };
        Instant::now()
            .checked_sub(lag)
            .is_some_and(|intended| intended >= from && intended <= to)
    }

    pub(super) fn on_connected(&mut self) {
        if let Some(started) = self.last_attempt {
            self.stats.record_connect(self.index, started.elapsed());
        }
        self.stats.connects.ok.inc();
        let now = Instant::now();
        self.conn = Conn::Online { since: now };
        self.settings.drops.up();
        self.policy.on_connected(now);
        if let Some(since) = self.down_since.take() {
            let offline = now.saturating_duration_since(since);
            self.settings.drops.outages.back(now, &self.id, offline);
            self.last_down = Some((since, now));
        }
        self.stats.devices.online.inc();
        if self.ever_connected {
            self.stats.connects.reconnects.inc();
            tracing::debug!(device = %self.id, "reconnected");
        } else {
            self.ever_connected = true;
            self.first_connected = Some(Instant::now());
            self.stats.devices.connected.inc();
            tracing::debug!(device = %self.id, "connected");
        }
    }

    /// Marks the connection down; returns how long it had lasted, if it was up.
    pub(super) fn go_offline(&mut self) -> Option<Duration> {
        let Conn::Online { since } = self.conn else {
            return None;
        };
        self.conn = Conn::Connecting;
        self.stats.devices.online.dec();
        self.settings.drops.down();
        Some(since.elapsed())
    }

    /// How far the session got before it ended for `cause`.
    pub(super) fn stage(&self, lasted: Option<Duration>, cause: &Cause) -> Stage {
        let Some(lasted) = lasted else {
            // Only a close after CONNECT was written can be the server judging the client.
            return if cause.kind == Kind::ClosedAfterConnect {
                Stage::AfterConnect
            } else {
                Stage::BeforeConnect
            };
        };
        let s = self.session;
        match s.first_write {
            Some(first) if s.acked == 0 && first.elapsed() < reconnect::PUBLISH_CLOSE_WINDOW => {
                Stage::AfterPublish
            }
            _ => Stage::Connected {
                lasted,
                acked: s.acked > 0,
            },
        }
    }

    /// A connection failed or dropped. Takes back everything unacknowledged, in seq order, and
    /// returns when to retry, or None when the device gave up.
    pub(super) fn after_lost(&mut self, cause: Cause) -> Option<Instant> {
        let lasted = self.go_offline();
        let online = lasted.is_some();
        if online {
            self.stats.connects.disconnects.inc();
            let now = Instant::now();
            self.down_since = Some(now);
            self.settings.drops.outages.lost(now);
        } else {
            self.stats.connect_failed(cause.kind);
        }
        let dropped = self.ledger.take_back_unacked();
        self.stats.events_dropped(dropped);
        let now = Instant::now();
        self.settings.drops.record(now);
        let end = SessionEnd {
            at: now,
            stage: self.stage(lasted, &cause),
            cause: cause.clone(),
        };
        let who = (self.id.as_str(), self.settings.topic.as_str());
        match self.policy.after(end, who, &*self.settings, &mut self.rng) {
            Next::GiveUp(why) => {
                self.give_up(&why);
                None
            }
            Next::RetryAfter { wait, named } => {
                if let Some(Named::Suspected(suspicion)) = &named {
                    self.stats.device_suspected(&self.id, suspicion);
                    tracing::warn!("{}: {}", self.id, suspicion.detail);
                } else if let Some(Named::Failed(refusal)) = &named {
                    self.name_failure(refusal);
                } else if self.settings.log_gate.may_log() {
                    let what = if online {
                        "connection lost"
                    } else {
                        "cannot connect"
                    };
                    let secs = wait.as_secs_f64();
                    tracing::warn!("{}: {what}: {}; retrying in {secs:.1} s", self.id, cause.detail);
                }
                self.last_cause = Some(cause);
                Some(now + wait)
            }
        }
    }

    /// Stops this device for good and counts why.
    pub(super) fn give_up(&mut self, cause: &Cause) {
        self.gave_up = Some(cause.kind);
        self.stats.devices.stopped.inc();
        self.count_failed(cause);
        if self.settings.log_gate.may_log() {
            tracing::error!("{}: giving up: {}", self.id, cause.detail);
        }
        let owed = self.ledger.clear();
        self.stats.events_failed(owed, Loss::GaveUp(cause.kind));
    }
}
