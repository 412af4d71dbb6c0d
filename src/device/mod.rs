//! One simulated device: a tokio task that takes a reading on its timer or when injected, and
//! delivers it through its transport, keeping every event in its [`ledger`] until the server
//! has it. *What* and *when* live here (freezer model, schedule, ledger, reconnect policy); *how*
//! is the [`Transport`]'s (see `crate::transport`).
//!
//! The link's `next()` is never cancelled by a timer tick or an injection: cancelling an MQTT
//! poll mid-handshake would restart the connection, so the task waits on it and on its local
//! inputs side by side with a pinned future.

use std::sync::Arc;
use std::time::Duration;

use rand::SeedableRng;
use rand::rngs::Xoshiro256PlusPlus;
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::cause::{Cause, Kind};
use crate::config::{DeviceConfig, Schedule};
use crate::freezer::{Action, Freezer, Reported};
use crate::log_gate::LogGate;
use crate::ratelimit::Pacer;
use crate::stats::{Loss, Stats};
use crate::transport::{Link, LinkEvent, Sender, Transport};

pub mod backoff;
pub mod drops;
mod events;
pub mod faults;
mod inputs;
pub mod ledger;
pub mod listen;
pub mod mailbox;
pub mod phase;
pub mod reconnect;
mod replay;
pub mod ticker;

use drops::DropLog;
use ledger::Ledger;
pub use phase::{Phase, PhaseWatch};
use reconnect::{Neighbours, Policy};
use ticker::Ticker;

/// Settings every device shares.
#[derive(Debug, Clone)]
pub struct DeviceSettings {
    /// Events wait for an acknowledgement (QoS 1).
    pub acked: bool,
    pub schedule: Schedule,
    /// Timed events per device, then the device finishes.
    pub count: Option<u64>,
    /// Pad every message to this many bytes.
    pub payload_bytes: Option<usize>,
    pub drain_timeout: Duration,
    /// Fleet size, to spread the devices' timers over the interval.
    pub fleet_size: usize,
    pub seed: u64,
    /// When the fleet started; timers count from here.
    pub start: Instant,
    /// Events handed to the transport and not yet acknowledged, at most.
    pub max_inflight: u16,
    pub backoff_min: Duration,
    pub backoff_max: Duration,
    /// `--give-up-after`: stop after this long without a success (None: retry until the end).
    pub give_up_after: Option<Duration>,
    /// A client id that already sent a CONNECT (the pre-flight's), and when.
    pub attempted: Option<Arc<(String, Instant)>>,
    /// Events kept while they cannot be sent; beyond it the oldest are dropped (and counted).
    pub offline_queue: usize,
    /// Fleet-wide pacing of connection attempts (`--ramp-up`).
    pub pacer: Option<Arc<Pacer>>,
    /// Keeps per-device warnings to a few lines per window.
    pub log_gate: Arc<LogGate>,
    /// The fleet's recent drops, to tell a refusal aimed at one device from a network event.
    pub drops: Arc<DropLog>,
    /// Where events go (the MQTT topic), to name it in a diagnosis.
    pub topic: String,
    /// What the freezer simulates, sends and hears.
    pub model: crate::config::ModelSettings,
    /// Keep shadow reports IoT Core's per-thing rate apart (the aws-iot profile).
    pub shadow_spacing: bool,
    /// `--template`: what an event holds.
    pub template: Option<Arc<crate::freezer::template::Template>>,
    /// `--replay`: the recording.
    pub replay: Option<Arc<crate::config::ReplayPlan>>,
    /// A `[[group]]`'s freezer model parameters.
    pub tune: crate::config::layer::ModelSpec,
}

impl Neighbours for DeviceSettings {
    fn drops_around(&self, at: Instant) -> u64 {
        self.drops.around(at, reconnect::CORRELATION_WINDOW)
    }
    fn fleet_size(&self) -> usize {
        self.fleet_size
    }
    fn reach(&self) -> Duration {
        reconnect::CORRELATION_WINDOW + drops::BUCKET
    }
    fn others_get_through(&self) -> bool {
        // The judged device is offline, so every connected one is another.
        self.drops.online() > 0 || !self.drops.ever_connected()
    }
}

/// What happened in the current connection attempt and session.
#[derive(Debug, Clone, Copy, Default)]
struct Session {
    /// Payloads written (first sends and re-sends).
    written: u32,
    /// Acknowledgements received.
    acked: u32,
    first_write: Option<Instant>,
}

/// A request from the console to this device.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Poke {
    /// One event now.
    Inject,
    /// Do this to the freezer (door, defrost, fail, fix, setpoint).
    Act(Action),
}

/// What a device says back about an injection (devices never print).
#[derive(Debug, Clone, PartialEq)]
pub enum InjectNote {
    /// Event `seq` was taken; `queued` when the device is not connected.
    Taken { id: String, seq: u64, queued: bool },
    /// The fleet is stopping.
    Ignored { id: String },
    /// A console action, applied or refused (and why).
    Acted {
        id: String,
        action: Action,
        result: Result<(), String>,
    },
}

/// The channels between the fleet and one device.
pub struct DeviceLinks {
    pub inject_rx: mailbox::PokeRx,
    pub notes: mpsc::UnboundedSender<InjectNote>,
    pub phase: PhaseWatch,
    pub feed: Feed,
    /// Scenario stages' changes (rate, disconnects), when the run has stages.
    pub control: Option<tokio::sync::watch::Receiver<Control>>,
}

/// What scenario stages change while the fleet runs.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Control {
    /// Fleet-wide events per second now (each connected device: one every devices / rate
    /// seconds).
    pub rate: Option<f64>,
    /// Disconnects asked for so far: every device drops its connection once per increment.
    pub storms: u64,
    /// Devices connected, fleet-wide: those with an index below it; the others deliver what
    /// they owe, disconnect and take no timed readings. All of them when None.
    pub devices: Option<u64>,
    /// Connect/disconnect cycles per second, fleet-wide, counted from the instant given: the
    /// connected devices take turns, each closing cleanly (after its acknowledgements) and
    /// connecting again.
    pub churn: Option<(f64, Instant)>,
    /// An outage: no device connects (readings are queued, as offline).
    pub outage: bool,
}

impl Control {
    /// Whether the device of fleet index `index` is to be connected.
    pub fn connected(&self, index: usize) -> bool {
        self.devices.is_none_or(|n| (index as u64) < n)
    }
}

/// How long a device asked to disconnect waits for its acknowledgements before it closes anyway.
const CLOSE_GRACE: Duration = Duration::from_secs(2);

/// Where a device's events come from. With several sinks (`--sink mqtt,kinesis`) the device
/// runs once per sink: on the first it takes the readings (timer, console) and passes each event
/// on; on the others it sends exactly those events, same seq, same bytes, the way one Node-RED
/// inject fed both flows.
pub enum Feed {
    /// Its own freezer, timer and console; each event also goes to `tees`.
    Own { tees: Vec<mpsc::UnboundedSender<Fed>> },
    /// The events the device takes on the first sink; `done` once that one has stopped.
    Follow {
        rx: mpsc::UnboundedReceiver<Fed>,
        done: bool,
    },
}

/// One event passed from the device on the first sink to the same device on another.
#[derive(Debug, Clone)]
pub struct Fed {
    pub payload: Vec<u8>,
    /// When the schedule meant it to be sent: every sink measures latency from the same instant.
    pub intended: Instant,
    pub injected: bool,
}

/// The state of the device's connection.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Conn {
    Connecting,
    Online { since: Instant },
}

struct Device {
    id: String,
    index: usize,
    settings: Arc<DeviceSettings>,
    stats: Arc<Stats>,
    freezer: Freezer,
    rng: Xoshiro256PlusPlus,
    ledger: Ledger,
    conn: Conn,
    session: Session,
    ever_connected: bool,
    policy: Policy,
    last_attempt: Option<Instant>,
    last_cause: Option<Cause>,
    timer: Option<Ticker>,
    /// Timed events taken so far (for --count).
    timed_taken: u64,
    links: DeviceLinks,
    inject_open: bool,
    /// A diagnosis that stops the device at the next turn of its loop (`--give-up-after`).
    stop_with: Option<Cause>,
    /// Counted under the devices' failures already (a refusal named, or giving up).
    failed_counted: bool,
    /// Why the device gave up: it sends nothing more (but may still take readings for the
    /// fleet's other sinks).
    gave_up: Option<Kind>,
    /// Disconnects asked for so far (`Control::storms`).
    storms_seen: u64,
    /// A stage wants this device disconnected (`devices` below its index).
    parked: bool,
    /// A stage's outage: no connection until it is over.
    outage: bool,
    /// A churn stage's turns for this device, and the settings they were made from.
    churn: Option<Ticker>,
    churn_made_for: Option<((f64, Instant), u64)>,
    /// A stage wants the connection closed (a storm, a churn turn): hand nothing more, close
    /// once what was written is acknowledged, or at this deadline.
    closing: Option<Instant>,
    /// `--listen`: the device's own messages waiting for the connection, and what its shadow
    /// was last told (and when).
    outbox: Vec<listen::Own>,
    last_reported: Option<Reported>,
    last_report_at: Option<Instant>,
    /// `--faults`: this device's injector, and an offline spell under way (until then).
    // Boxed, as are the template's and the replay's state: most fleets use none of them, and
    // every device holds these fields.
    injector: Option<Box<faults::Injector>>,
    offline_until: Option<Instant>,
    /// `--template`: this device's random stream and fixed values.
    template_state: Option<Box<crate::freezer::template::DeviceState>>,
    /// `--replay`: where this device is in the recording.
    replay: Option<Box<replay::Cursor>>,
    /// When the first CONNACK came (events meant for before it are the connect phase's).
    first_connected: Option<Instant>,
    /// Down since an unplanned drop, until the next CONNACK; then the last such spell, so the
    /// events taken in it are counted as having waited out an outage.
    down_since: Option<Instant>,
    last_down: Option<(Instant, Instant)>,
}

/// Runs one device until the fleet stops it or it gives up for a permanent cause.
pub async fn run<T: Transport>(
    config: DeviceConfig,
    index: usize,
    transport: Arc<T>,
    settings: Arc<DeviceSettings>,
    stats: Arc<Stats>,
    links: DeviceLinks,
) {
    let (mut tx, mut link) = transport.open(&config, index);
    let own = matches!(links.feed, Feed::Own { .. });
    let timer = settings.schedule.interval().filter(|_| own).map(|interval| {
        // Spread the fleet's timers evenly over one interval so it never publishes in bursts.
        let offset = interval.mul_f64(index as f64 / settings.fleet_size.max(1) as f64);
        Ticker::new(settings.start + offset, interval)
    });
    let faults = settings.model.faults;
    let injector = (own && !faults.is_none())
        .then(|| Box::new(faults::Injector::new(faults, settings.seed, index as u64)));
    let template_state = settings.template.as_ref().map(|t| {
        Box::new(crate::freezer::template::DeviceState::new(
            t,
            settings.seed,
            index as u64,
        ))
    });
    let replay_cursor = settings
        .replay
        .as_ref()
        .filter(|_| own)
        .map(|plan| Box::new(replay::Cursor::new(plan.clone(), &config.id)));
    // The pre-flight's CONNECT with this client id counts as an attempt of its own.
    let preflight_attempt = settings
        .attempted
        .as_deref()
        .filter(|(id, _)| *id == config.id)
        .map(|(_, at)| *at);
    let mut freezer = Freezer::new(settings.seed, index as u64, settings.model.alarm);
    freezer.tune(settings.tune.setpoint, settings.tune.door_rate);
    let mut device = Device {
        freezer,
        rng: Xoshiro256PlusPlus::seed_from_u64(settings.seed.rotate_left(17) ^ index as u64),
        ledger: Ledger::new(
            settings.offline_queue,
            settings.max_inflight as usize,
            settings.acked,
        ),
        policy: Policy::new(settings.backoff_min, settings.backoff_max).give_up_after(settings.give_up_after),
        id: config.id,
        index,
        settings,
        stats,
        conn: Conn::Connecting,
        session: Session::default(),
        ever_connected: false,
        last_attempt: preflight_attempt,
        last_cause: None,
        timer,
        timed_taken: 0,
        links,
        inject_open: true,
        stop_with: None,
        failed_counted: false,
        gave_up: None,
        storms_seen: 0,
        parked: false,
        outage: false,
        churn: None,
        churn_made_for: None,
        closing: None,
        outbox: Vec::new(),
        last_reported: None,
        last_report_at: None,
        injector,
        offline_until: None,
        template_state,
        replay: replay_cursor,
        first_connected: None,
        down_since: None,
        last_down: None,
    };
    if device.injector.as_ref().is_some_and(|i| i.skew_ms() != 0) {
        device.stats.faults.skewed_devices.inc();
    }
    // A first stage's settings (devices, rate) hold from the start: its rate makes the timer
    // afresh, spread over its own period.
    if device
        .links
        .control
        .as_ref()
        .is_some_and(|c| c.borrow().rate.is_some())
    {
        device.timer = None;
    }
    device.on_control();
    if device.run(&mut tx, &mut link).await {
        // Boxed, like every rarely taken path below: each device task holds its future inline,
        // so only the hot path (the link's next report) should count towards its size.
        Box::pin(device.drain(&mut tx, &mut link)).await;
    } else if device.feeds_others() {
        // This sink gave up; the others still get the device's readings.
        Box::pin(device.keep_feeding()).await;
    }
}

impl Device {
    /// The running phase; false when the device gave up (nothing left to drain).
    async fn run(&mut self, tx: &mut impl Sender, link: &mut impl Link) -> bool {
        let mut retry_at: Option<Instant> = None;
        while self.links.phase.running() {
            if self.online() && self.ready_to_close() {
                Box::pin(self.drop_connection(link)).await;
            }
            if !self.online() && !Box::pin(self.pass_gates(retry_at.take())).await {
                break;
            }
            if self.finished() {
                break;
            }
            let event = {
                let next = link.next();
                tokio::pin!(next);
                loop {
                    tokio::select! {
                        ev = &mut next => break Some(ev),
                        input = self.next_local() => {
                            self.on_local(input);
                            if !self.links.phase.running() || self.ready_to_close() {
                                break None;
                            }
                            self.hand_off(tx);
                        }
                    }
                }
            };
            match event {
                None if !self.links.phase.running() => break,
                None => Box::pin(self.drop_connection(link)).await,
                Some(LinkEvent::Lost(cause)) => match self.after_lost(cause) {
                    Some(at) => retry_at = Some(at),
                    None => return false,
                },
                Some(ev) => self.on_event(ev),
            }
            if let Some(diagnosis) = self.stop_with.take() {
                Box::pin(link.close(Duration::from_secs(1), |ev| self.on_event(ev))).await;
                self.go_offline();
                self.give_up(&diagnosis);
                return false;
            }
            self.hand_off(tx);
        }
        true
    }

    fn online(&self) -> bool {
        matches!(self.conn, Conn::Online { .. })
    }

    /// Whether a stage wants the connection closed now: a storm or a churn turn once what was
    /// written is acknowledged (so nothing is sent twice); a parked device once it owes nothing.
    fn ready_to_close(&self) -> bool {
        self.closing
            .is_some_and(|by| self.ledger.in_flight() == 0 || Instant::now() >= by)
            || (self.parked && self.ledger.owed() == 0)
            || (self.outage && self.ledger.in_flight() == 0)
            || (self.offline_until.is_some() && self.ledger.in_flight() == 0)
    }

    /// A storm or a churn turn: close once acknowledged.
    fn close_soon(&mut self) {
        if self.online() && self.closing.is_none() {
            self.closing = Some(Instant::now() + CLOSE_GRACE);
        }
    }

    /// A scenario's storm, churn turn or parking: the connection is closed now and made again
    /// (unless parked) through the usual gates (backoff, one attempt a second per id, the
    /// fleet's ramp-up).
    async fn drop_connection(&mut self, link: &mut impl Link) {
        self.closing = None;
        if !self.online() {
            return;
        }
        link.close(Duration::from_secs(1), |ev| self.on_event(ev)).await;
        self.go_offline();
        self.stats.connects.disconnects.inc();
        let dropped = self.ledger.take_back_unacked();
        self.stats.events_dropped(dropped);
    }

    /// Waits for the next attempt's turn (backoff, one per second per id, the fleet's pacer),
    /// still taking readings meanwhile; false when the fleet is stopping.
    async fn pass_gates(&mut self, retry_at: Option<Instant>) -> bool {
        // Parked by a stage: no connection until a later stage wants it, or it owes an event
        // (an injection), which it then delivers. In an outage: none until it is over.
        while self.outage || (self.parked && self.ledger.owed() == 0) {
            let input = self.next_local().await;
            self.on_local(input);
            if !self.links.phase.running() {
                return false;
            }
        }
        // An injected offline spell (`--faults burst-after-offline`): back when it is over.
        while let Some(until) = self.offline_until {
            if Instant::now() >= until {
                self.offline_until = None;
            } else if !self.wait_until(until).await {
                return false;
            }
        }
        let at = backoff::attempt_at(retry_at, self.last_attempt, Instant::now());
        if !self.wait_until(at).await {
            return false;
        }
        if let Some(pacer) = self.settings.pacer.clone()
            && !self.wait_until(pacer.reserve()).await
        {
            return false;
        }
        self.last_attempt = Some(Instant::now());
        self.policy.attempting(Instant::now());
        self.session = Session::default();
        self.stats.connect_attempt(self.settings.start.elapsed());
        true
    }

    /// Waits until `at`, still taking readings and injections; false when the fleet is stopping.
    async fn wait_until(&mut self, at: Instant) -> bool {
        let sleep = tokio::time::sleep_until(at);
        tokio::pin!(sleep);
        loop {
            tokio::select! {
                _ = &mut sleep => return self.links.phase.running(),
                input = self.next_local() => self.on_local(input),
            }
            if !self.links.phase.running() {
                return false;
            }
        }
    }

    /// Hands queued events to the transport while connected and below the in-flight limit.
    fn hand_off(&mut self, tx: &mut impl Sender) {
        if !self.online() || self.closing.is_some() || self.outage || self.offline_until.is_some() {
            return;
        }
        self.flush_own(tx);
        while let Some(payload) = self.ledger.next_to_hand() {
            if !tx.try_send(payload) {
                break;
            }
            self.ledger.handed();
        }
    }

    /// One connection attempt, at most until `deadline` (an injected offline spell cut short).
    async fn reconnect_by(&mut self, link: &mut impl Link, deadline: Instant) {
        self.last_attempt = Some(Instant::now());
        self.session = Session::default();
        self.stats.connect_attempt(self.settings.start.elapsed());
        let _ = tokio::time::timeout_at(deadline, async {
            loop {
                match link.next().await {
                    LinkEvent::Lost(cause) => {
                        self.stats.connect_failed(cause.kind);
                        break;
                    }
                    LinkEvent::Connected => {
                        self.on_event(LinkEvent::Connected);
                        break;
                    }
                    ev => self.on_event(ev),
                }
            }
        })
        .await;
    }

    /// Stops producing; delivers what is queued and in flight until the drain timeout; then
    /// disconnects cleanly and counts whatever is left as failed.
    async fn drain(&mut self, tx: &mut impl Sender, link: &mut impl Link) {
        let deadline = Instant::now() + self.settings.drain_timeout;
        // Nothing is lost to an injected fault: what is held back goes now, and an injected
        // offline spell ends with the run.
        self.release_faults();
        if self.offline_until.take().is_some() && !self.online() && self.ever_connected {
            Box::pin(self.reconnect_by(link, deadline)).await;
        }
        Box::pin(self.close_feed(deadline)).await;
        while self.online() && self.links.phase.current() != Phase::Stop {
            self.hand_off(tx);
            if self.ledger.is_drained() {
                break;
            }
            tokio::select! {
                ev = link.next() => match ev {
                    LinkEvent::Lost(_) => {
                        self.go_offline();
                    }
                    ev => self.on_event(ev),
                },
                _ = tokio::time::sleep_until(deadline) => break,
                _ = self.links.phase.changed() => {}
            }
        }
        if self.online() {
            link.close(Duration::from_secs(1), |ev| self.on_event(ev)).await;
            self.go_offline();
        }
        if !self.ever_connected && self.parked && self.ledger.owed() == 0 {
            // Kept off by the stages all along: nothing owed, nothing failed.
            return;
        }
        if !self.ever_connected {
            // Still retrying when the run ended: counted with the refusal named, or else the
            // last cause seen.
            let cause = self.policy.refusal().cloned().or_else(|| self.last_cause.clone());
            let cause = cause.unwrap_or_else(|| {
                Cause::new(
                    Kind::NotConnectedYet,
                    "the run ended before the first connection".into(),
                )
            });
            self.count_failed(&cause);
            let owed = self.ledger.clear();
            self.stats.events_failed(owed, Loss::NeverConnected(cause.kind));
            return;
        }
        if self.settings.acked {
            self.stats.events_failed(self.ledger.unacked(), Loss::NotAcked);
        }
        self.stats.events_failed(self.ledger.unsent(), Loss::NotSent);
    }
}
