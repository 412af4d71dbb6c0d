//! What a device does after a failed attempt or a lost connection: retry (when, see
//! [`super::backoff`]), stop, or carry on under a suspicion.
//!
//! Design: pure state, no I/O and no clock of its own, so every rule is unit-tested in
//! microseconds. It reads what the server is silently saying. IoT Core refuses by closing the
//! connection: right after CONNECT when the policy does not allow iot:Connect for the client id,
//! right after a PUBLISH when it does not allow iot:Publish on the topic, and within seconds of
//! connecting, again and again, when another connection uses the same client id. A flapping
//! network closes connections too, but for many devices at once: a short session counts only when
//! the rest of the fleet did not share its end, and every sign counts only when it repeats.
//! Policy refusals stop the device with the diagnosis; a suspected take-over is named and the
//! device keeps trying every `--backoff-max`. MQTT 5 servers give their reasons outright.

use std::time::Duration;

use rand::{Rng, RngExt};
use tokio::time::Instant;

pub use super::backoff::{Backoff, SHORT_SESSION};
use crate::cause::{Cause, Kind};

/// How far the device had got in a session when it ended.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Stage {
    /// The attempt never got a CONNACK (for a closed connection: CONNECT was the last thing sent).
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
    /// Try again after `wait`; `suspicion` is newly named (log it, count it) and does not stop
    /// the device.
    RetryAfter {
        wait: Duration,
        suspicion: Option<Cause>,
    },
    /// Stop for good, for this cause.
    GiveUp(Cause),
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
    /// Publishes the server refused for good in a row (MQTT 5 PUBACK reason codes).
    refused_in_a_row: u32,
}

impl Policy {
    pub fn new(min: Duration, max: Duration) -> Policy {
        Policy {
            backoff: Backoff::new(min, max),
            pending: None,
            own_ends: std::collections::VecDeque::new(),
            streak: None,
            takeover_named: false,
            refused_in_a_row: 0,
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
        if end.cause.permanent() {
            return Next::GiveUp(end.cause);
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
            Some((Suspect::ConnectRefused, n)) if n >= REPEATS => Next::GiveUp(Cause::new(
                Kind::ConnectNotAllowed,
                format!(
                    "the server closes the connection right after each CONNECT, without CONNACK: the policy \
                     probably does not allow iot:Connect for client id {id}"
                ),
            )),
            Some((Suspect::PublishRefused, n)) if n >= REPEATS => Next::GiveUp(Cause::new(
                Kind::PublishNotAllowed,
                format!(
                    "the server closes the connection after each PUBLISH to '{topic}': the policy probably \
                     does not allow iot:Publish on topic/{topic}"
                ),
            )),
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
                suspicion: None,
            },
        }
    }

    /// A take-over: named once (until a session lasts again), retried every `--backoff-max`.
    fn suspect_takeover(&mut self, why: String, rng: &mut impl Rng) -> Next {
        let suspicion = (!self.takeover_named).then(|| Cause::new(Kind::ClientIdInUse, why));
        self.takeover_named = true;
        Next::RetryAfter {
            wait: self.backoff_max_jittered(rng),
            suspicion,
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

    /// The server refused a publish with `cause` (its own reason); returns the diagnosis to stop
    /// with after [`REPEATS`] permanent refusals in a row.
    pub fn on_refused(&mut self, cause: &Cause, topic: &str) -> Option<Cause> {
        // Only a refusal of the topic itself says something about the policy.
        if cause.kind != Kind::PublishNotAllowed {
            return None;
        }
        self.refused_in_a_row += 1;
        (self.refused_in_a_row >= REPEATS).then(|| {
            Cause::new(
                cause.kind,
                format!(
                    "{} for each PUBLISH to '{topic}': the policy does not allow iot:Publish on topic/{topic}",
                    cause.detail
                ),
            )
        })
    }

    /// The server acknowledged a publish.
    pub fn on_acked(&mut self) {
        self.refused_in_a_row = 0;
    }

    /// Judges an earlier session end now that the fleet's drops around it are known.
    fn judge(&mut self, end: &SessionEnd, neighbours: &impl Neighbours) {
        // A refusal has a signature of its own (closed before CONNACK; closed right after a
        // PUBLISH that was never acknowledged) and a policy refuses the whole fleet at once, so
        // those count whatever the others did. A short session has no signature: it counts only
        // when the rest of the fleet stayed connected.
        let suspect = match end.stage {
            _ if end.cause.kind != Kind::ClosedByServer => None,
            Stage::AfterConnect => Some(Suspect::ConnectRefused),
            Stage::AfterPublish => Some(Suspect::PublishRefused),
            Stage::Connected { lasted, .. }
                if lasted < SHORT_SESSION && self.alone_at(end.at, neighbours) =>
            {
                Some(Suspect::Takeover)
            }
            Stage::Connected { .. } => None,
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
