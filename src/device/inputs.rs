//! A device's local inputs: its timer, console injections and the fleet's phase, and the
//! readings they turn into events.

use std::time::Duration;

use tokio::time::Instant;

use super::faults::Record;
use super::{Device, Fed, Feed, InjectNote, Poke};
use crate::config::Schedule;
use crate::freezer::{Event, unix_millis};
use crate::stats::Loss;

/// What the task does between reports of its link.
pub(super) enum LocalInput {
    /// A timed event is due; it was meant for this instant.
    Tick(Instant),
    Inject,
    Act(crate::freezer::Action),
    /// Events held back by `--faults late` are due.
    LateDue,
    /// The next `--replay` row is due; it was meant for this instant.
    Replay(Instant),
    /// An event taken by the same device on the fleet's first sink.
    Fed(Fed),
    /// A scenario stage changed the rate or asked for a disconnect.
    Control,
    /// This device's turn in a churn stage.
    Churn,
    Phase,
}

impl Device {
    pub(super) fn count_reached(&self) -> bool {
        match &self.links.feed {
            Feed::Own { .. } => {
                self.settings.count.is_some_and(|k| self.timed_taken >= k) || self.replay_done()
            }
            // A follower has sent all there is once the first sink's device has stopped.
            Feed::Follow { done, .. } => *done,
        }
    }

    /// With --count: every timed event taken and nothing left to deliver.
    pub(super) fn finished(&self) -> bool {
        self.count_reached() && self.ledger.owed() == 0
    }

    /// With --rate max: room for one more event in the in-flight window, and more to send.
    fn wants_more(&self) -> bool {
        self.settings.schedule == Schedule::Max
            && !self.parked
            && self.closing.is_none()
            && matches!(self.links.feed, Feed::Own { .. })
            && self.online()
            && self.links.phase.running()
            && !self.count_reached()
            && self.ledger.has_room()
    }

    /// Waits for the next timer tick, console injection or phase change.
    pub(super) async fn next_local(&mut self) -> LocalInput {
        let has_timer = self.timer.is_some();
        let has_churn = self.churn.is_some();
        let closing = self.closing;
        let more = self.wants_more();
        let late_due = self.injector.as_ref().and_then(|i| i.next_due());
        let replay_due = self.replay_due().filter(|_| self.links.phase.running());
        loop {
            tokio::select! {
                biased;
                _ = self.links.phase.changed() => return LocalInput::Phase,
                // Each timer is made only when its branch is on (inside an async block): the
                // loop runs for every event, and a made-and-dropped `Sleep` costs a clock read
                // and a handle to the timer.
                _ = async { tokio::time::sleep_until(late_due.expect("guarded")).await }, if late_due.is_some() => {
                    return LocalInput::LateDue;
                }
                _ = async { tokio::time::sleep_until(replay_due.expect("guarded")).await }, if replay_due.is_some() => {
                    return LocalInput::Replay(replay_due.expect("guarded"));
                }
                at = async { self.timer.as_mut().expect("guarded").tick().await }, if has_timer => {
                    return LocalInput::Tick(at);
                }
                _ = std::future::ready(()), if more => return LocalInput::Tick(Instant::now()),
                _ = async { self.churn.as_mut().expect("guarded").tick().await }, if has_churn => {
                    return LocalInput::Churn;
                }
                // A disconnect's grace is over: the loop closes now, acknowledged or not.
                _ = async { tokio::time::sleep_until(closing.expect("guarded")).await }, if closing.is_some() => {
                    return LocalInput::Phase;
                }
                m = self.links.inject_rx.recv(), if self.inject_open => match m {
                    Some(Poke::Inject) => return LocalInput::Inject,
                    Some(Poke::Act(action)) => return LocalInput::Act(action),
                    None => self.inject_open = false,
                },
                changed = control_changed(&mut self.links.control) => {
                    if changed {
                        return LocalInput::Control;
                    }
                    self.links.control = None;
                }
                fed = fed(&mut self.links.feed) => match fed {
                    Some(f) => return LocalInput::Fed(f),
                    None => {
                        if let Feed::Follow { done, .. } = &mut self.links.feed {
                            *done = true;
                        }
                        return LocalInput::Phase;
                    }
                },
            }
        }
    }

    pub(super) fn on_local(&mut self, input: LocalInput) {
        match input {
            LocalInput::Tick(_) if self.parked => {}
            LocalInput::Tick(at) => {
                // The reading is taken at its instant; its latencies count from the moment
                // the timer fired, if that came first (`ticker::EARLY`).
                let from = super::ticker::measured_from(at);
                // How late the timer fired: the generator's own delay, not the endpoint's
                // (while connected: before, the device waits for its connection anyway).
                if self.online() {
                    self.stats.record_sched(self.index, from.elapsed());
                }
                if self.links.phase.running() && !self.count_reached() {
                    self.timed_taken += 1;
                    self.take_reading(at, from, false);
                    if self.count_reached() {
                        self.timer = None;
                    }
                }
            }
            LocalInput::Inject => {
                let id = self.id.clone();
                let note = if self.links.phase.running() {
                    let now = Instant::now();
                    let seq = self.take_reading(now, now, true);
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
            LocalInput::Act(action) => self.on_console_action(action),
            LocalInput::Replay(intended) => {
                if self.links.phase.running() {
                    if self.online() {
                        self.stats.record_sched(self.index, intended.elapsed());
                    }
                    self.take_replayed(intended);
                }
            }
            LocalInput::LateDue => {
                let due = self
                    .injector
                    .as_mut()
                    .map(|i| i.due(Instant::now()))
                    .unwrap_or_default();
                for r in due {
                    self.queue_record(r.payload, r.intended, false);
                }
            }
            LocalInput::Fed(fed) => self.take_fed(fed),
            LocalInput::Control => self.on_control(),
            LocalInput::Churn => self.close_soon(),
            LocalInput::Phase => {}
        }
    }

    /// A stage's change: a new rate for the timer (the device keeps its place in the spread),
    /// the devices to keep connected, churn turns, or a disconnect to make.
    pub(super) fn on_control(&mut self) {
        let Some(control) = self.links.control.as_mut().map(|c| *c.borrow_and_update()) else {
            return;
        };
        // The devices connected share the rate; the fleet's size when the stages keep all.
        let connected = control.devices.unwrap_or(self.settings.fleet_size as u64).max(1);
        self.parked = !control.connected(self.index);
        self.outage = control.outage;
        if let (Some(rate), Feed::Own { .. }) = (control.rate, &self.links.feed) {
            let period = Duration::from_secs_f64(connected as f64 / rate);
            let done = self.count_reached();
            match self.timer.as_mut() {
                Some(t) => t.set_period(period),
                None if !done => {
                    let offset = period.mul_f64(self.index as f64 / connected as f64);
                    let from = self.settings.start.max(Instant::now());
                    self.timer = Some(super::ticker::Ticker::new(from + offset, period));
                }
                None => {}
            }
        }
        // Churn: device i of the n connected takes turns i, i + n, i + 2n, … of the fleet's
        // `per_second` turns a second, so the fleet cycles evenly; each turn in the middle of
        // its slot, so none falls on the stage's last instant and races its end.
        let made_for = control.churn.map(|c| (c, connected));
        if made_for != self.churn_made_for {
            self.churn_made_for = made_for;
            let parked = self.parked;
            self.churn = control.churn.filter(|_| !parked).map(|(per_second, since)| {
                let first = since + Duration::from_secs_f64((self.index as f64 + 0.5) / per_second);
                super::ticker::Ticker::new(first, Duration::from_secs_f64(connected as f64 / per_second))
            });
        }
        if control.storms > self.storms_seen {
            self.storms_seen = control.storms;
            self.close_soon();
        }
    }

    /// Queues an event the first sink's device took (a follower takes no readings of its own).
    fn take_fed(&mut self, fed: Fed) {
        if fed.injected {
            self.stats.messages.injected.inc();
        }
        self.stats.event_taken(!self.online());
        let dropped = self.ledger.push(fed.payload, fed.intended);
        self.stats.events_dropped(dropped);
    }

    /// At the start of draining: the first sink's device passes nothing more on; a follower
    /// takes what was passed to it until the first one has stopped (bounded by `deadline`).
    pub(super) async fn close_feed(&mut self, deadline: Instant) {
        if let Feed::Own { tees } = &mut self.links.feed {
            tees.clear();
            return;
        }
        while let Feed::Follow { rx, done: false } = &mut self.links.feed {
            match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Some(fed)) => self.take_fed(fed),
                Ok(None) | Err(_) => break,
            }
        }
        if let Feed::Follow { done, .. } = &mut self.links.feed {
            *done = true;
        }
    }

    /// Takes the reading meant for `at` and queues its event, whose latencies count from
    /// `intended` (the moment its timer fired, when that came first); returns its seq.
    fn take_reading(&mut self, at: Instant, intended: Instant, injected: bool) -> u64 {
        let t = self.sim_time(at);
        self.freezer.advance_to(t);
        let reading = self.freezer.reading();
        self.report_state(false);
        let seq = self.ledger.take_seq();
        let skew = self.injector.as_ref().map_or(0, |i| i.skew_ms());
        let ts = (unix_millis() as i64).saturating_add(skew).max(0) as u64;
        let mut event = Event::new(self.id.clone(), seq, ts, &reading, self.settings.model.fields);
        let size = self.settings.payload_bytes;
        let template = self.settings.template.clone();
        let state = &mut self.template_state;
        let mut encode = |e: &mut Event| match (&template, state.as_mut()) {
            (Some(tpl), Some(st)) => {
                let ctx = crate::freezer::template::Context {
                    id: &e.device_id,
                    group: "",
                    seq: e.seq,
                    ts_ms: e.ts,
                    t,
                    reading: &reading,
                };
                let value = tpl.render(&ctx, st);
                let mark: Vec<(&str, serde_json::Value)> = e
                    .fault
                    .iter()
                    .map(|f| ("fault", serde_json::Value::String(f.clone())))
                    .collect();
                crate::freezer::template::to_bytes(tpl, &value, &mark)
            }
            _ => match size {
                Some(size) => e.padded_json(size),
                None => e.to_json(),
            },
        };
        let (records, decision) = match self.injector.as_mut() {
            None => (
                vec![Record {
                    payload: encode(&mut event),
                    intended,
                    own: true,
                    fault: None,
                }],
                None,
            ),
            Some(injector) => {
                let mut d = injector.on_event(&mut event, intended, &mut encode);
                (std::mem::take(&mut d.now), Some(d))
            }
        };
        if let Some(d) = decision {
            self.count_faults(&records, &d);
            if let Some(off) = d.offline_for {
                self.offline_until = Some(Instant::now() + off);
            }
        }
        for r in records {
            self.queue_record(r.payload, r.intended, injected && r.own);
        }
        if let Some(kind) = self.gave_up {
            let owed = self.ledger.clear();
            self.stats.events_failed(owed, Loss::GaveUp(kind));
        }
        seq
    }

    /// Queues one record (an event, or a record `--faults` added) and passes it to the other sinks.
    pub(super) fn queue_record(&mut self, payload: Vec<u8>, intended: Instant, injected: bool) {
        if let Feed::Own { tees } = &mut self.links.feed {
            // A sink whose device has stopped takes nothing more.
            tees.retain(|tee| {
                tee.send(Fed {
                    payload: payload.clone(),
                    intended,
                    injected,
                })
                .is_ok()
            });
        }
        self.stats.event_taken(!self.online());
        let dropped = self.ledger.push_record(payload, intended);
        self.stats.events_dropped(dropped);
    }

    fn count_faults(&self, now: &[Record], d: &super::faults::Decision) {
        use super::faults::Kind;
        let f = &self.stats.faults;
        for r in now {
            match r.fault {
                Some(Kind::Duplicate) => f.duplicate.inc(),
                Some(Kind::Malformed) => f.malformed.inc(),
                _ => {}
            }
        }
        // Counted when held back; the record goes later, marked.
        match d.held {
            Some(Kind::Reorder) => f.reorder.inc(),
            Some(Kind::Late) => f.late.inc(),
            _ => {}
        }
        if d.offline_for.is_some() {
            f.bursts.inc();
        }
    }

    /// At the end: every record still held back by `--faults` is queued.
    pub(super) fn release_faults(&mut self) {
        let held = self
            .injector
            .as_mut()
            .map(|i| i.release_all())
            .unwrap_or_default();
        for r in held {
            self.queue_record(r.payload, r.intended, false);
        }
    }

    /// The first sink's device passes readings on to the others.
    pub(super) fn feeds_others(&self) -> bool {
        matches!(&self.links.feed, Feed::Own { tees } if !tees.is_empty())
    }

    /// After giving up on its own sink: goes on taking readings for the others until the fleet
    /// stops or `--count` is reached (each counted here as failed, with the reason it gave up).
    pub(super) async fn keep_feeding(&mut self) {
        while self.links.phase.running() && !self.count_reached() && self.feeds_others() {
            let input = self.next_local().await;
            self.on_local(input);
        }
    }
}

/// Whether the scenario's control changed (false once its sender is gone); never ready without one.
async fn control_changed(control: &mut Option<tokio::sync::watch::Receiver<super::Control>>) -> bool {
    match control {
        Some(c) => c.changed().await.is_ok(),
        None => std::future::pending().await,
    }
}

/// The next event passed to a follower; never ready for the first sink's device.
async fn fed(feed: &mut Feed) -> Option<Fed> {
    match feed {
        Feed::Follow { rx, done: false } => rx.recv().await,
        _ => std::future::pending().await,
    }
}
