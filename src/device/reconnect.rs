//! What a device does after a failed attempt or a lost connection: retry (when, see
//! [`super::backoff`]), stop, or carry on under a suspicion.
//!
//! Design: pure state, no I/O and no clock of its own, so every rule is unit-tested in
//! microseconds. It reads what the server is silently saying. IoT Core refuses by closing the
//! connection: right after CONNECT when the policy does not allow iot:Connect for the client id,
//! right after a PUBLISH when it does not allow iot:Publish on the topic, and within seconds of
//! connecting, again and again, when another connection uses the same client id. Only those can
//! be a refusal: the TLS handshake completed, CONNECT (or PUBLISH) was written, and the server
//! closed on it. A connection closed or reset before that (a load balancer with no healthy
//! target accepts and closes), refused, or timed out is the network or the endpoint, whatever
//! its shape. A flapping network closes sessions too, but for many devices at once: a close
//! after CONNECT counts only while the rest of the fleet gets through (or before any device
//! ever connected), a short session only while the rest stays connected, and every sign only
//! when it repeats. MQTT 5 servers give their reasons outright.
//!
//! A device never gives up by itself, as AWS's device SDKs retry until stopped: a diagnosis is
//! named once and the device keeps trying every `--backoff-max`; anything else is retried with
//! the backoff. Only `--give-up-after` (no success for that long) stops a device.

use std::time::Duration;

use rand::{Rng, RngExt};
use tokio::time::Instant;

pub use super::backoff::{Backoff, SHORT_SESSION};
use crate::cause::{Cause, Kind};

/// How far the device had got in a session when it ended.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Stage {
    /// The attempt failed before the server could judge the client: no TCP connection, no
    /// completed TLS handshake, no CONNECT written, or no answer in time.
    BeforeConnect,
    /// CONNECT was written and the server closed the connection without CONNACK.
    AfterConnect,
    /// Connected, wrote PUBLISH, and the server closed the connection within
    /// [`PUBLISH_CLOSE_WINDOW`] of the first one without acknowledging any.
    AfterPublish,
    /// Connected for `lasted`; `acked` when the server acknowledged a publish in the session.
    Connected { lasted: Duration, acked: bool },
}

/// A closed connection this soon after the session's first PUBLISH, with no PUBACK, is the
/// server refusing the publish (IoT Core closes at once when the policy denies iot:Publish).
pub const PUBLISH_CLOSE_WINDOW: Duration = Duration::from_secs(2);
/// Drops of other devices within this long of ours make ours part of a network or broker event.
pub const CORRELATION_WINDOW: Duration = Duration::from_secs(1);
/// This many uncorrelated refusals of the same kind in a row make a diagnosis.
pub const REPEATS: u32 = 3;

/// How a session ended.
#[derive(Debug, Clone, PartialEq)]
pub struct SessionEnd {
    pub at: Instant,
    pub cause: Cause,
    pub stage: Stage,
}

/// What the whole fleet did around a moment.
pub trait Neighbours {
    /// Connection drops of every device (this one's included) within [`CORRELATION_WINDOW`] of `at`.
    fn drops_around(&self, at: Instant) -> u64;
    /// How many devices the fleet has.
    fn fleet_size(&self) -> usize;
    /// How far apart two drops may be and still fall in one [`Neighbours::drops_around`] count
    /// (the window, plus the rounding of how drops are kept).
    fn reach(&self) -> Duration {
        CORRELATION_WINDOW
    }
    /// Whether a close after CONNECT can be aimed at this device: another device is connected
    /// now, or no device has ever connected (a refusal of the whole fleet from its first
    /// attempt). Otherwise the fleet got through before and none does now: an outage (a front
    /// end that takes CONNECT and closes while what is behind it is down).
    fn others_get_through(&self) -> bool;
}

/// Whether two moments are at most `reach` apart.
fn within(a: Instant, b: Instant, reach: Duration) -> bool {
    a.max(b).duration_since(a.min(b)) <= reach
}

/// A drop is this device's own when at most one in this many other devices dropped around it.
const SOLO_SHARE: usize = 50;

/// What repeated uncorrelated session ends point to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Suspect {
    ConnectRefused,
    PublishRefused,
    Takeover,
}

/// What a device does after a failed attempt or a lost connection.
#[derive(Debug, Clone, PartialEq)]
pub enum Next {
    /// Try again after `wait`; `named` is newly named (log it, count it) and does not stop the
    /// device.
    RetryAfter { wait: Duration, named: Option<Named> },
    /// Stop for good (`--give-up-after`), for this cause.
    GiveUp(Cause),
}

/// A diagnosis, named once while it stands.
#[derive(Debug, Clone, PartialEq)]
pub enum Named {
    /// A suspicion (a client id in use twice): counted under `suspected`.
    Suspected(Cause),
    /// A refusal that will not heal by itself (a policy, a rejected certificate): counted
    /// under the devices' failures, while the device keeps trying every `--backoff-max`.
    Failed(Cause),
}

/// The reconnect policy of one device.
///
/// A session end is judged one end later (when it is [`Policy::after`]'s `pending`), so every
/// device's drop from the same moment has been recorded by then: a network cut that drops the
/// whole fleet is never mistaken for a refusal aimed at one device.
#[derive(Debug, Clone)]
pub struct Policy {
    pub backoff: Backoff,
    pending: Option<SessionEnd>,
    /// When this device's last few sessions ended (its own share of the fleet's drops).
    own_ends: std::collections::VecDeque<Instant>,
    streak: Option<(Suspect, u32)>,
    takeover_named: bool,
    /// The refusal named for this device, until a session works again.
    refusal: Option<Cause>,
    /// Publishes the server refused for good in a row (MQTT 5 PUBACK reason codes).
    refused_in_a_row: u32,
    /// `--give-up-after`: stop after this long without a success.
    give_up_after: Option<Duration>,
    /// The first attempt, or the last success since (a CONNACK, an acknowledgement).
    ok_since: Option<Instant>,
}

impl Policy {
    pub fn new(min: Duration, max: Duration) -> Policy {
        Policy {
            backoff: Backoff::new(min, max),
            pending: None,
            own_ends: std::collections::VecDeque::new(),
            streak: None,
            takeover_named: false,
            refusal: None,
            refused_in_a_row: 0,
            give_up_after: None,
            ok_since: None,
        }
    }

    /// The refusal named for this device, while it stands.
    pub fn refusal(&self) -> Option<&Cause> {
        self.refusal.as_ref()
    }

    /// Gives up after `limit` without a success (`--give-up-after`).
    pub fn give_up_after(mut self, limit: Option<Duration>) -> Policy {
        self.give_up_after = limit;
        self
    }

    /// A connection attempt starts (the first one starts the `--give-up-after` clock).
    pub fn attempting(&mut self, at: Instant) {
        self.ok_since.get_or_insert(at);
    }

    /// The server accepted the connection: a success, unless it refuses every publish.
    pub fn on_connected(&mut self, at: Instant) {
        let publishes_refused = self
            .refusal
            .as_ref()
            .is_some_and(|c| c.kind == Kind::PublishNotAllowed);
        if !publishes_refused {
            self.ok_since = Some(at);
        }
    }

    /// With `--give-up-after`: the cause to stop for at `now`, when the device has gone that
    /// long without a success; `last` is what went wrong last.
    pub fn give_up_due(&self, now: Instant, last: &Cause) -> Option<Cause> {
        let limit = self.give_up_after?;
        let since = self.ok_since?;
        (now.saturating_duration_since(since) >= limit).then(|| {
            let why = self.refusal.as_ref().unwrap_or(last);
            Cause::new(
                why.kind,
                format!(
                    "no success for {} s (--give-up-after): {}",
                    limit.as_secs_f64(),
                    why.detail
                ),
            )
        })
    }

    /// When to try again at the latest: the `--give-up-after` deadline, so a device gives up
    /// on time rather than a backoff later.
    fn capped(&self, at: Instant, wait: Duration) -> Duration {
        match (self.give_up_after, self.ok_since) {
            (Some(limit), Some(since)) => wait.min((since + limit).saturating_duration_since(at)),
            _ => wait,
        }
    }

    /// Decides after `end`. `id` and `topic` name the client and the topic in diagnoses.
    pub fn after(
        &mut self,
        end: SessionEnd,
        who: (&str, &str),
        neighbours: &impl Neighbours,
        rng: &mut impl Rng,
    ) -> Next {
        if let Some(why) = self.give_up_due(end.at, &end.cause) {
            return Next::GiveUp(why);
        }
        let at = end.at;
        match self.decide(end, who, neighbours, rng) {
            Next::RetryAfter { wait, named } => Next::RetryAfter {
                wait: self.capped(at, wait),
                named,
            },
            give_up => give_up,
        }
    }

    fn decide(
        &mut self,
        end: SessionEnd,
        who: (&str, &str),
        neighbours: &impl Neighbours,
        rng: &mut impl Rng,
    ) -> Next {
        // The server's own word that it will not take this client (a TLS alert, CONNACK not
        // authorized, …): named at once, tried again every --backoff-max.
        if end.cause.permanent() && !end.cause.kind.network() {
            let cause = end.cause;
            self.pending = None;
            return self.refused(cause, rng);
        }
        let healthy = match end.stage {
            Stage::Connected { lasted, acked } => lasted >= SHORT_SESSION || (acked && !self.takeover_named),
            _ => false,
        };
        if self.own_ends.len() == 8 {
            self.own_ends.pop_front();
        }
        self.own_ends.push_back(end.at);
        // MQTT 5 says so itself (DISCONNECT 0x8E session taken over): nothing to infer.
        let told = (end.cause.kind == Kind::ClientIdInUse).then(|| end.cause.clone());
        if let Some(prev) = self.pending.replace(end) {
            self.judge(&prev, neighbours);
        }
        if let Some(told) = told {
            let why = format!(
                "client id {} is in use by another connection ({})",
                who.0, told.detail
            );
            return self.suspect_takeover(why, rng);
        }
        // The backoff starts over after a session that worked (it lasted, or the server
        // acknowledged a publish); the streak is judged from the session ends themselves.
        if healthy {
            self.backoff.reset();
            self.refusal = None;
        }
        let lasted =
            |e: &SessionEnd| matches!(e.stage, Stage::Connected { lasted, .. } if lasted >= SHORT_SESSION);
        if self.pending.as_ref().is_some_and(lasted) {
            self.takeover_named = false;
        }
        self.verdict(who, rng)
    }

    /// What the current streak of session ends means.
    fn verdict(&mut self, (id, topic): (&str, &str), rng: &mut impl Rng) -> Next {
        match self.streak {
            Some((Suspect::ConnectRefused, n)) if n >= REPEATS => self.refused(
                Cause::new(
                    Kind::ConnectNotAllowed,
                    format!(
                        "the server closes the connection right after each CONNECT, without CONNACK: the \
                         policy probably does not allow iot:Connect for client id {id}"
                    ),
                ),
                rng,
            ),
            Some((Suspect::PublishRefused, n)) if n >= REPEATS => self.refused(
                Cause::new(
                    Kind::PublishNotAllowed,
                    format!(
                        "the server closes the connection after each PUBLISH to '{topic}': the policy \
                         probably does not allow iot:Publish on topic/{topic}"
                    ),
                ),
                rng,
            ),
            Some((Suspect::Takeover, n)) if n >= REPEATS => {
                let why = format!(
                    "client id {id} is probably in use by another connection: the server closed {n} sessions \
                     in a row within seconds while the rest of the fleet stayed connected; retrying every \
                     --backoff-max"
                );
                self.suspect_takeover(why, rng)
            }
            _ => Next::RetryAfter {
                wait: self.backoff.next(rng),
                named: None,
            },
        }
    }

    /// A refusal: named once (until a session works again), tried again every --backoff-max.
    fn refused(&mut self, cause: Cause, rng: &mut impl Rng) -> Next {
        let named = match &self.refusal {
            Some(standing) if standing.kind == cause.kind => None,
            _ => Some(Named::Failed(cause.clone())),
        };
        self.refusal = Some(cause);
        Next::RetryAfter {
            wait: self.backoff_max_jittered(rng),
            named,
        }
    }

    /// A take-over: named once (until a session lasts again), retried every `--backoff-max`.
    fn suspect_takeover(&mut self, why: String, rng: &mut impl Rng) -> Next {
        let named = (!self.takeover_named).then(|| Named::Suspected(Cause::new(Kind::ClientIdInUse, why)));
        self.takeover_named = true;
        Next::RetryAfter {
            wait: self.backoff_max_jittered(rng),
            named,
        }
    }

    /// Whether the rest of the fleet stayed connected around `at`.
    fn alone_at(&self, at: Instant, neighbours: &impl Neighbours) -> bool {
        let reach = neighbours.reach();
        let own = self.own_ends.iter().filter(|t| within(**t, at, reach)).count() as u64;
        let others = neighbours.drops_around(at).saturating_sub(own);
        others <= (neighbours.fleet_size() / SOLO_SHARE) as u64
    }

    /// Between half and all of `--backoff-max`: how long a suspected device waits.
    fn backoff_max_jittered(&self, rng: &mut impl Rng) -> Duration {
        let max = self.backoff.max;
        max / 2 + (max / 2).mul_f64(rng.random::<f64>())
    }

    /// The server refused a publish with `cause` (its own reason); returns the diagnosis to
    /// name (once) after [`REPEATS`] permanent refusals in a row.
    pub fn on_refused(&mut self, cause: &Cause, topic: &str) -> Option<Cause> {
        // Only a refusal of the topic itself says something about the policy.
        if cause.kind != Kind::PublishNotAllowed {
            return None;
        }
        self.refused_in_a_row += 1;
        if self.refused_in_a_row < REPEATS || self.refusal.is_some() {
            return None;
        }
        let diagnosis = Cause::new(
            cause.kind,
            format!(
                "{} for each PUBLISH to '{topic}': the policy does not allow iot:Publish on topic/{topic}",
                cause.detail
            ),
        );
        self.refusal = Some(diagnosis.clone());
        Some(diagnosis)
    }

    /// The server acknowledged a publish (at `at`, when `--give-up-after` is on).
    pub fn on_acked(&mut self, at: impl FnOnce() -> Instant) {
        self.refused_in_a_row = 0;
        self.refusal = None;
        if self.give_up_after.is_some() {
            self.ok_since = Some(at());
        }
    }

    /// Judges an earlier session end now that the fleet's drops around it are known.
    fn judge(&mut self, end: &SessionEnd, neighbours: &impl Neighbours) {
        // A refusal has a signature of its own: closed after CONNECT was written, before
        // CONNACK (counted while the rest of the fleet gets through, or before any device ever
        // connected: a policy refuses the whole fleet from the start); closed right after a
        // PUBLISH that was never acknowledged, in a session the server accepted. A short
        // session has no signature: it counts only when the rest of the fleet stayed connected.
        let suspect = match (end.stage, end.cause.kind) {
            (Stage::AfterConnect, Kind::ClosedAfterConnect) if neighbours.others_get_through() => {
                Some(Suspect::ConnectRefused)
            }
            // The session had its CONNACK, so the path works: a close right after its PUBLISH
            // is the server's, whatever the rest of the fleet does.
            (Stage::AfterPublish, Kind::ClosedByServer) => Some(Suspect::PublishRefused),
            (Stage::Connected { lasted, .. }, Kind::ClosedByServer)
                if lasted < SHORT_SESSION && self.alone_at(end.at, neighbours) =>
            {
                Some(Suspect::Takeover)
            }
            _ => None,
        };
        self.streak = match (suspect, self.streak) {
            (None, _) => None,
            (Some(s), Some((t, n))) if s == t => Some((s, n + 1)),
            (Some(s), _) => Some((s, 1)),
        };
    }
}

#[cfg(test)]
#[path = "reconnect_tests.rs"]
mod tests;
