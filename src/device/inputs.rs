//! A device's local inputs: its timer, console injections and the fleet's phase, and the
//! readings they turn into events.

use tokio::time::Instant;

use super::{Device, Inject, InjectNote};
use crate::config::Schedule;
use crate::freezer::{Event, unix_millis};

/// What the task does between reports of its link.
pub(super) enum LocalInput {
    /// A timed event is due; it was meant for this instant.
    Tick(Instant),
    Inject,
    Phase,
}

impl Device {
    pub(super) fn count_reached(&self) -> bool {
        self.settings.count.is_some_and(|k| self.timed_taken >= k)
    }

    /// With --count: every timed event taken and nothing left to deliver.
    pub(super) fn finished(&self) -> bool {
        self.count_reached() && self.ledger.owed() == 0
    }

    /// With --rate max: room for one more event in the in-flight window, and more to send.
    fn wants_more(&self) -> bool {
        self.settings.schedule == Schedule::Max
            && self.online()
            && self.links.phase.running()
            && !self.count_reached()
            && self.ledger.has_room()
    }

    /// Waits for the next timer tick, console injection or phase change.
    pub(super) async fn next_local(&mut self) -> LocalInput {
        let has_timer = self.timer.is_some();
        let more = self.wants_more();
        loop {
            tokio::select! {
                biased;
                _ = self.links.phase.changed() => return LocalInput::Phase,
                at = async { self.timer.as_mut().expect("guarded").tick().await }, if has_timer => {
                    return LocalInput::Tick(at);
                }
                _ = std::future::ready(()), if more => return LocalInput::Tick(Instant::now()),
                m = self.links.inject_rx.recv(), if self.inject_open => match m {
                    Some(Inject) => return LocalInput::Inject,
                    None => self.inject_open = false,
                },
            }
        }
    }

    pub(super) fn on_local(&mut self, input: LocalInput) {
        match input {
            LocalInput::Tick(intended) => {
                if self.links.phase.running() && !self.count_reached() {
                    self.timed_taken += 1;
                    self.take_reading(intended);
                    if self.count_reached() {
                        self.timer = None;
                    }
                }
            }
            LocalInput::Inject => {
                let id = self.id.clone();
                let note = if self.links.phase.running() {
                    let seq = self.take_reading(Instant::now());
                    self.stats.messages.injected.inc();
                    InjectNote::Taken {
                        id,
                        seq,
                        queued: !self.online(),
                    }
                } else {
                    InjectNote::Ignored { id }
                };
                let _ = self.links.notes.send(note);
            }
            LocalInput::Phase => {}
        }
    }

    /// Takes the next reading and queues its event, meant to be sent at `intended`; returns its seq.
    fn take_reading(&mut self, intended: Instant) -> u64 {
        let reading = self.freezer.next_reading();
        let seq = self.ledger.next_seq();
        let mut event = Event {
            device_id: self.id.clone(),
            seq,
            ts: unix_millis(),
            temperature: reading.temperature,
            humidity: reading.humidity,
            pad: None,
        };
        let payload = match self.settings.payload_bytes {
            Some(size) => event.padded_json(size),
            None => event.to_json(),
        };
        self.stats.event_taken(!self.online());
        let dropped = self.ledger.push(payload, intended);
        self.stats.events_dropped(dropped);
        seq
    }
}
