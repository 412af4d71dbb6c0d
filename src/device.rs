//! One simulated device: a tokio task that owns one MQTT client over mutual TLS, takes a reading
//! on its timer or when injected, and publishes it, keeping its own record of every event until
//! the broker has it.
//!
//! Why its own record: rumqttc drops unacknowledged QoS 1 publishes when a reconnect starts a
//! clean session, and requests queued while offline go with them. So the device hands rumqttc
//! only what fits in flight while connected, remembers what it handed, and after a dropped
//! connection puts everything unacknowledged back at the front of its queue, in seq order.
//!
//! Connection attempts are gated three ways, so a broker hiccup never becomes a reconnect storm:
//! exponential backoff with full jitter, at most one attempt per second per client id (AWS IoT
//! Core's limit), and the fleet-wide `--ramp-up` pacer.
//!
//! The event loop's `poll()` is never cancelled by a timer tick or an injection: cancelling it
//! mid-handshake would restart the connection, so the task waits on it and on its local inputs
//! side by side with a pinned future.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use rand::rngs::Xoshiro256PlusPlus;
use rand::{RngExt, SeedableRng};
use rumqttc::{
    AsyncClient, Event as MqttEvent, EventLoop, Incoming, MqttOptions, Outgoing, QoS, TlsConfiguration,
    Transport,
};
use tokio::sync::{mpsc, watch};
use tokio::time::{Instant, Interval, MissedTickBehavior};

use crate::cause::{self, CLOSED_BY_SERVER, Cause};
use crate::config::{DeviceConfig, Schedule};
use crate::freezer::{Event, Freezer, unix_millis};
use crate::ratelimit::Pacer;
use crate::stats::Stats;

/// Where the fleet is in its life; devices watch it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Running,
    /// Stop producing events; deliver what is in flight until the drain timeout.
    Draining,
    /// Stop now.
    Stop,
}

/// Settings every device shares.
#[derive(Debug, Clone)]
pub struct DeviceSettings {
    pub host: String,
    pub port: u16,
    pub topic: String,
    pub qos: QoS,
    pub schedule: Schedule,
    /// Timed events per device, then the device finishes.
    pub count: Option<u64>,
    /// Pad every message to this many bytes.
    pub payload_bytes: Option<usize>,
    pub keep_alive: Duration,
    pub drain_timeout: Duration,
    /// Fleet size, to spread the devices' timers over the interval.
    pub fleet_size: usize,
    pub seed: u64,
    /// When the fleet started; timers count from here.
    pub start: Instant,
    /// Publishes awaiting acknowledgement at once.
    pub max_inflight: u16,
    pub connect_timeout: Duration,
    pub backoff_min: Duration,
    pub backoff_max: Duration,
    /// Events kept while they cannot be sent; beyond it the oldest are dropped (and counted).
    pub offline_queue: usize,
    /// Connect with clean session off, so the broker keeps the session across reconnects.
    pub persistent_session: bool,
    /// Fleet-wide pacing of connection attempts (`--ramp-up`).
    pub pacer: Option<Arc<Pacer>>,
    /// Local source addresses, round-robin by device index (`--bind`).
    pub bind: Vec<std::net::IpAddr>,
}

/// AWS IoT Core accepts one CONNECT per second per client id.
const MIN_ATTEMPT_SPACING: Duration = Duration::from_secs(1);
/// A session the server closes within this long after CONNACK counts as a short session.
const SHORT_SESSION: Duration = Duration::from_secs(10);
/// This many short sessions in a row: another connection is taking over our client id.
const TAKEOVER_SESSIONS: u32 = 3;

/// A request from the console to this device.
#[derive(Debug, Clone, Copy)]
pub struct Inject;

/// An event the device owes the broker.
#[derive(Debug)]
struct Queued {
    seq: u64,
    /// When the schedule meant it to be sent: latency counts from here, so a stalled
    /// connection shows as latency instead of a quietly lower rate.
    intended: Instant,
    payload: Vec<u8>,
    /// Written to a connection at least once already.
    sent: bool,
}

/// What the device task does between polls of the event loop.
enum Local {
    /// A timed event is due; it was meant for this instant.
    Tick(Instant),
    Inject,
    Phase(Phase),
    Nothing,
}

struct Device {
    id: String,
    index: usize,
    /// Timed events taken so far (for --count).
    timed: u64,
    settings: Arc<DeviceSettings>,
    stats: Arc<Stats>,
    client: AsyncClient,
    freezer: Freezer,
    rng: Xoshiro256PlusPlus,
    next_seq: u64,
    /// Due but not yet handed to the client, oldest first.
    outbox: VecDeque<Queued>,
    /// Handed to the client, not yet written (Outgoing::Publish pending), in hand-off order.
    handed: VecDeque<Queued>,
    /// Written with QoS 1, waiting for PUBACK, by packet id.
    awaiting: HashMap<u16, Queued>,
    online: bool,
    ever_connected: bool,
    /// The device gave up (a permanent cause); already counted.
    gave_up: bool,
    connected_at: Instant,
    last_attempt: Option<Instant>,
    failures_in_a_row: u32,
    short_sessions: u32,
    last_cause: Option<Cause>,
    timer: Option<Interval>,
    inject_rx: mpsc::Receiver<Inject>,
    inject_open: bool,
    phase_rx: watch::Receiver<Phase>,
    phase: Phase,
}

/// Runs one device until the fleet stops it or it gives up for a permanent cause.
pub async fn run(
    config: DeviceConfig,
    index: usize,
    settings: Arc<DeviceSettings>,
    stats: Arc<Stats>,
    inject_rx: mpsc::Receiver<Inject>,
    phase_rx: watch::Receiver<Phase>,
) {
    let mut options = MqttOptions::new(config.id.clone(), settings.host.clone(), settings.port);
    options
        .set_keep_alive(settings.keep_alive)
        .set_clean_session(!settings.persistent_session)
        .set_inflight(settings.max_inflight)
        // Room for what is in flight plus a disconnect: the device never hands over more.
        .set_request_channel_capacity(settings.max_inflight as usize + 4)
        // IoT Core accepts payloads up to 128 KiB.
        .set_max_packet_size(128 * 1024 + 1024, 128 * 1024 + 1024)
        .set_transport(Transport::tls_with_config(TlsConfiguration::Rustls(
            config.tls.clone(),
        )));
    if let Some(b) = settings.payload_bytes {
        let largest = (b + settings.topic.len() + 64).max(128 * 1024 + 1024);
        options.set_max_packet_size(128 * 1024 + 1024, largest);
    }
    let (client, mut eventloop) = AsyncClient::new(options, settings.max_inflight as usize + 4);
    // rumqttc pre-sizes its event queue for 100 events of 144 bytes (~14 KB per device); it
    // rarely holds more than a few, so let it grow on demand instead.
    eventloop.state.events = std::collections::VecDeque::new();
    let mut net = eventloop.network_options();
    // Without TCP_NODELAY small TLS records meet delayed ACKs: ~50 ms per round trip on loopback.
    net.set_tcp_nodelay(true);
    net.set_connection_timeout(settings.connect_timeout.as_secs().max(1));
    if !settings.bind.is_empty() {
        net.set_bind_addr(Some(settings.bind[index % settings.bind.len()]));
    }
    eventloop.set_network_options(net);

    let interval = match settings.schedule {
        Schedule::Every(i) if !i.is_zero() => Some(i),
        _ => None,
    };
    let timer = interval.map(|interval| {
        // Spread the fleet's timers evenly over one interval so it never publishes in bursts.
        let offset = interval.mul_f64(index as f64 / settings.fleet_size.max(1) as f64);
        let mut t = tokio::time::interval_at(settings.start + offset, interval);
        // Keep the schedule: a late tick is made up, not skipped, so the rate stays honest.
        t.set_missed_tick_behavior(MissedTickBehavior::Burst);
        t
    });
    let phase = *phase_rx.borrow();
    let mut device = Device {
        freezer: Freezer::new(settings.seed, index as u64),
        rng: Xoshiro256PlusPlus::seed_from_u64(settings.seed.rotate_left(17) ^ index as u64),
        id: config.id,
        index,
        timed: 0,
        settings,
        stats,
        client,
        next_seq: 1,
        outbox: VecDeque::new(),
        handed: VecDeque::new(),
        awaiting: HashMap::new(),
        online: false,
        ever_connected: false,
        gave_up: false,
        connected_at: Instant::now(),
        last_attempt: None,
        failures_in_a_row: 0,
        short_sessions: 0,
        last_cause: None,
        timer,
        inject_rx,
        inject_open: true,
        phase_rx,
        phase,
    };
    device.run(&mut eventloop).await;
}

impl Device {
    async fn run(&mut self, eventloop: &mut EventLoop) {
        let mut retry_at: Option<Instant> = None;
        while self.phase == Phase::Running {
            if !self.online {
                // The next poll connects: pass the gates first, still taking readings meanwhile.
                let mut at = retry_at.take().unwrap_or_else(Instant::now);
                if let Some(last) = self.last_attempt {
                    at = at.max(last + MIN_ATTEMPT_SPACING);
                }
                if !self.wait_until(at).await {
                    break;
                }
                if let Some(pacer) = self.settings.pacer.clone()
                    && !self.wait_until(pacer.reserve()).await
                {
                    break;
                }
                self.last_attempt = Some(Instant::now());
                self.stats.connect_attempt(self.settings.start.elapsed());
            }
            if self.finished() {
                break;
            }
            let result = {
                let poll = eventloop.poll();
                tokio::pin!(poll);
                loop {
                    tokio::select! {
                        r = &mut poll => break Some(r),
                        local = self.next_local() => {
                            self.on_local(local);
                            if self.phase != Phase::Running {
                                break None;
                            }
                            self.hand_off();
                        }
                    }
                }
            };
            match result {
                None => break,
                Some(Ok(event)) => self.on_mqtt(event),
                Some(Err(err)) => {
                    let cause =
                        cause::classify(&err, &format!("{}:{}", self.settings.host, self.settings.port));
                    match self.after_error(eventloop, cause) {
                        Some(at) => retry_at = Some(at),
                        None => return,
                    }
                }
            }
            self.hand_off();
        }
        self.drain(eventloop).await;
    }

    /// Waits until `at`, still taking readings and injections; false when the fleet is stopping.
    async fn wait_until(&mut self, at: Instant) -> bool {
        let sleep = tokio::time::sleep_until(at);
        tokio::pin!(sleep);
        loop {
            tokio::select! {
                _ = &mut sleep => return self.phase == Phase::Running,
                local = self.next_local() => self.on_local(local),
            }
            if self.phase != Phase::Running {
                return false;
            }
        }
    }

    /// With --count: every timed event taken and nothing left to deliver.
    fn finished(&self) -> bool {
        self.settings.count.is_some_and(|k| self.timed >= k)
            && self.outbox.is_empty()
            && self.handed.is_empty()
            && self.awaiting.is_empty()
    }

    /// With --rate max: room for one more event in the in-flight window, and more to send.
    fn wants_more(&self) -> bool {
        self.settings.schedule == Schedule::Max
            && self.online
            && self.phase == Phase::Running
            && self.settings.count.is_none_or(|k| self.timed < k)
            && self.outbox.len() + self.in_flight() < self.settings.max_inflight as usize
    }

    /// Waits for the next timer tick, console injection or phase change.
    async fn next_local(&mut self) -> Local {
        let has_timer = self.timer.is_some();
        let more = self.wants_more();
        tokio::select! {
        biased;
        changed = self.phase_rx.changed() => match changed {
            Ok(()) => Local::Phase(*self.phase_rx.borrow_and_update()),
            Err(_) => Local::Phase(Phase::Stop),
        },
        at = async { self.timer.as_mut().expect("guarded").tick().await }, if has_timer => Local::Tick(at),
        _ = std::future::ready(()), if more => Local::Tick(Instant::now()),
        m = self.inject_rx.recv(), if self.inject_open => match m {
            Some(Inject) => Local::Inject,
            None => {
                self.inject_open = false;
                Local::Nothing
            }
        },
                }
    }

    fn on_local(&mut self, local: Local) {
        match local {
            Local::Tick(intended) => {
                if self.phase == Phase::Running && self.settings.count.is_none_or(|k| self.timed < k) {
                    self.timed += 1;
                    self.take_reading(intended);
                    if self.settings.count.is_some_and(|k| self.timed >= k) {
                        self.timer = None;
                    }
                }
            }
            Local::Inject => {
                if self.phase != Phase::Running {
                    eprintln!("inject {}: ignored, the fleet is stopping", self.id);
                    return;
                }
                let seq = self.take_reading(Instant::now());
                self.stats.injected();
                let note = if self.online {
                    ""
                } else {
                    " (queued: not connected)"
                };
                eprintln!("injected {} seq={seq}{note}", self.id);
            }
            Local::Phase(p) => self.phase = p,
            Local::Nothing => {}
        }
    }

    /// Takes the next reading and queues its event, meant to be sent at `intended`; returns its seq.
    fn take_reading(&mut self, intended: Instant) -> u64 {
        let reading = self.freezer.next_reading();
        let seq = self.next_seq;
        self.next_seq += 1;
        let mut event = Event {
            device_id: self.id.clone(),
            seq,
            ts: unix_millis(),
            temperature: reading.temperature,
            humidity: reading.humidity,
            pad: None,
        };
        let payload = match self.settings.payload_bytes {
            Some(size) => event.to_json_padded(size),
            None => event.to_json(),
        };
        self.stats.event_taken(!self.online);
        self.outbox.push_back(Queued {
            seq,
            intended,
            payload,
            sent: false,
        });
        self.trim_outbox();
        seq
    }

    /// Keeps the queue within `--offline-queue`, dropping (and counting) the oldest events.
    fn trim_outbox(&mut self) {
        let mut dropped = 0;
        while self.outbox.len() > self.settings.offline_queue {
            self.outbox.pop_front();
            dropped += 1;
        }
        self.stats
            .events_dropped(dropped, "offline queue full (--offline-queue)");
    }

    fn in_flight(&self) -> usize {
        self.handed.len() + self.awaiting.len()
    }

    /// Hands queued events to the client while connected and below the in-flight limit.
    fn hand_off(&mut self) {
        if !self.online {
            return;
        }
        while self.in_flight() < self.settings.max_inflight as usize {
            let Some(item) = self.outbox.pop_front() else {
                break;
            };
            let sent = self.client.try_publish(
                self.settings.topic.clone(),
                self.settings.qos,
                false,
                item.payload.clone(),
            );
            match sent {
                Ok(()) => self.handed.push_back(item),
                Err(_) => {
                    // The channel is sized for everything in flight, so this means it is closed.
                    self.outbox.push_front(item);
                    break;
                }
            }
        }
    }

    fn on_mqtt(&mut self, event: MqttEvent) {
        match event {
            MqttEvent::Incoming(Incoming::ConnAck(_)) => {
                if let Some(started) = self.last_attempt {
                    self.stats.record_connect(self.index, started.elapsed());
                }
                self.stats.connect_ok();
                self.online = true;
                self.failures_in_a_row = 0;
                self.connected_at = Instant::now();
                self.stats.online(true);
                if self.ever_connected {
                    self.stats.reconnected();
                    tracing::debug!(device = %self.id, "reconnected");
                } else {
                    self.ever_connected = true;
                    self.stats.device_connected();
                    tracing::debug!(device = %self.id, "connected");
                }
            }
            MqttEvent::Outgoing(Outgoing::Publish(pkid)) => {
                let Some(mut item) = self.handed.pop_front() else {
                    return;
                };
                if item.sent {
                    self.stats.resent();
                } else {
                    self.stats.published();
                    self.stats.record_lag(self.index, item.intended.elapsed());
                    item.sent = true;
                }
                if self.settings.qos != QoS::AtMostOnce {
                    self.awaiting.insert(pkid, item);
                }
            }
            MqttEvent::Incoming(Incoming::PubAck(ack)) => {
                if let Some(item) = self.awaiting.remove(&ack.pkid) {
                    self.stats.acknowledged();
                    self.stats.record_puback(self.index, item.intended.elapsed());
                }
            }
            _ => {}
        }
    }

    /// A connection failed or dropped. Takes back everything unacknowledged, in seq order, and
    /// decides: give up (a permanent cause, or another connection owns our client id), or retry
    /// at the returned time (exponential backoff with full jitter).
    fn after_error(&mut self, eventloop: &mut EventLoop, cause: Cause) -> Option<Instant> {
        let was_online = self.online;
        if was_online {
            self.online = false;
            self.stats.online(false);
            self.stats.disconnected();
        } else {
            self.stats.connect_failed(&cause.key);
        }
        // rumqttc keeps its own copy for a resumed session; we re-send from ours instead.
        eventloop.pending.clear();
        let mut back: Vec<Queued> = self
            .handed
            .drain(..)
            .chain(self.awaiting.drain().map(|(_, q)| q))
            .collect();
        back.sort_by_key(|q| q.seq);
        for item in back.into_iter().rev() {
            self.outbox.push_front(item);
        }
        self.trim_outbox();

        if cause.permanent {
            self.give_up(&cause);
            return None;
        }
        if was_online {
            let lasted = self.connected_at.elapsed();
            if cause.key == CLOSED_BY_SERVER && lasted < SHORT_SESSION {
                self.short_sessions += 1;
            } else {
                self.short_sessions = 0;
            }
            if self.short_sessions >= TAKEOVER_SESSIONS {
                let takeover = Cause::permanent(
                    "client id in use",
                    format!(
                        "client id {} is in use by another connection: the broker closed {} sessions in a row within seconds of connecting (or a policy closes it: check iot:Connect/iot:Publish)",
                        self.id, self.short_sessions
                    ),
                );
                self.give_up(&takeover);
                return None;
            }
        }
        self.failures_in_a_row = self.failures_in_a_row.saturating_add(1);
        let cap = self
            .settings
            .backoff_min
            .saturating_mul(1u32 << self.failures_in_a_row.min(16).saturating_sub(1))
            .min(self.settings.backoff_max);
        let wait = cap.mul_f64(self.rng.random::<f64>());
        if self.stats.may_log() {
            let what = if was_online {
                "connection lost"
            } else {
                "cannot connect"
            };
            tracing::warn!(
                "{}: {what}: {}; retrying in {:.1} s",
                self.id,
                cause.detail,
                wait.as_secs_f64()
            );
        }
        self.last_cause = Some(cause);
        Some(Instant::now() + wait)
    }

    /// Stops this device for good and counts why.
    fn give_up(&mut self, cause: &Cause) {
        self.gave_up = true;
        if self.stats.device_failed(&self.id, &cause.key, &cause.detail) {
            tracing::error!("{}: giving up: {}", self.id, cause.detail);
        }
        let owed = (self.outbox.len() + self.in_flight()) as u64;
        self.outbox.clear();
        self.stats
            .events_failed(owed, &format!("device gave up: {}", cause.key));
    }

    /// Stops producing; delivers what is queued and in flight until the drain timeout; then
    /// disconnects cleanly and counts whatever is left as failed.
    async fn drain(&mut self, eventloop: &mut EventLoop) {
        let deadline = Instant::now() + self.settings.drain_timeout;
        let qos0 = self.settings.qos == QoS::AtMostOnce;
        while self.online && self.phase != Phase::Stop {
            self.hand_off();
            if self.outbox.is_empty() && self.handed.is_empty() && (qos0 || self.awaiting.is_empty()) {
                break;
            }
            tokio::select! {
                r = eventloop.poll() => match r {
                    Ok(ev) => self.on_mqtt(ev),
                    Err(_) => {
                        self.online = false;
                        self.stats.online(false);
                    }
                },
                _ = tokio::time::sleep_until(deadline) => break,
                changed = self.phase_rx.changed() => {
                    self.phase = if changed.is_ok() { *self.phase_rx.borrow_and_update() } else { Phase::Stop };
                }
            }
        }
        if self.online {
            // A clean DISCONNECT, so the broker does not publish a will or log an error.
            if self.client.try_disconnect().is_ok() {
                let _ = tokio::time::timeout(Duration::from_secs(1), async {
                    loop {
                        match eventloop.poll().await {
                            Ok(MqttEvent::Outgoing(Outgoing::Disconnect)) | Err(_) => break,
                            Ok(ev) => self.on_mqtt(ev),
                        }
                    }
                })
                .await;
            }
            self.online = false;
            self.stats.online(false);
        }
        if !self.ever_connected && !self.gave_up {
            // Still retrying when the run ended: count it with the last cause seen.
            let cause = self.last_cause.clone().unwrap_or_else(|| {
                Cause::transient(
                    "not connected yet",
                    "the run ended before the first connection".into(),
                )
            });
            self.give_up(&cause);
            return;
        }
        let unsent = (self.outbox.len() + self.handed.len()) as u64;
        if !qos0 {
            self.stats
                .events_failed(self.awaiting.len() as u64, "not acknowledged before shutdown");
        }
        self.stats.events_failed(unsent, "not sent before shutdown");
    }
}
