//! The fleet: starts every device on a transport, runs until a future the caller passes (the
//! mini-redis `server::run(listener, shutdown)` shape), drains, and returns what happened. It
//! prints nothing and reads nothing: the console, signals, live view and summary belong to the
//! caller (`crate::app::run`).

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use rumqttc::QoS;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::config::FleetConfig;
use crate::device::drops::DropLog;
use crate::device::{
    self, Control, DeviceLinks, DeviceSettings, Fed, Feed, InjectNote, Phase, PhaseWatch, Poke,
};
use crate::log_gate::LogGate;
use crate::ratelimit::Pacer;
use crate::stats::{Latency, Snapshot, Stats, Timings};
pub use crate::stop::StopReason;
use crate::transport::Transport;

/// Injections a device may have waiting before the console says it is busy.
const INJECT_QUEUE: usize = 64;

/// What one sink of a run produced.
pub struct SinkOutcome {
    /// `mqtt`, `kinesis`, `firehose`, `firehose-proxy`.
    pub name: String,
    pub snapshot: Snapshot,
    pub latency: Latency,
}

/// What a run produced.
pub struct Outcome {
    /// Per sink, in the order given; the first is where readings were taken.
    pub sinks: Vec<SinkOutcome>,
    /// The first sink's figures per `[[group]]`, in the groups' order.
    pub groups: Vec<SinkOutcome>,
    pub timings: Timings,
    pub devices: usize,
    /// `--fail-if` thresholds the run broke (set by the caller, who checks them).
    pub broken_thresholds: usize,
}

impl Outcome {
    /// The first sink's figures.
    pub fn first(&self) -> &SinkOutcome {
        &self.sinks[0]
    }
}

/// One sink's name and counters.
#[derive(Clone)]
pub struct Sink {
    pub name: String,
    pub stats: Arc<Stats>,
}

/// A running fleet.
pub struct Fleet {
    tasks: JoinSet<()>,
    injectors: Injectors,
    notes: Option<mpsc::UnboundedReceiver<InjectNote>>,
    phase_tx: watch::Sender<Phase>,
    phase_rx: watch::Receiver<Phase>,
    notes_tx: mpsc::UnboundedSender<InjectNote>,
    sinks: Vec<Sink>,
    /// Per device, the feeds of the sinks after the first, until those sinks are added.
    feeds: Vec<Vec<Option<mpsc::UnboundedReceiver<Fed>>>>,
    tees: Vec<Vec<mpsc::UnboundedSender<Fed>>>,
    devices: Vec<crate::config::DeviceConfig>,
    base: DeviceSettings,
    /// `[[group]]`s: what differs from `base` per group.
    groups: Vec<crate::config::groups::Group>,
    /// The first sink's per-group counters, by group name.
    group_stats: Vec<(String, Arc<Stats>)>,
    /// Scenario stages' changes, sent to every device.
    control: Option<watch::Sender<Control>>,
    started: Instant,
    running_for: Option<Duration>,
}

impl Fleet {
    /// A fleet that will send every event to `sinks` sinks, each added with [`Fleet::add`]; the
    /// first added takes the readings and passes them to the others.
    pub fn new(cfg: &FleetConfig, sinks: usize) -> Fleet {
        let n = cfg.devices.len();
        // With --start-at, the schedule (timers, --duration, the rate's clock) starts then, on
        // every shard at once; devices connect right away.
        let wait = cfg
            .start_at
            .and_then(|at| at.duration_since(std::time::SystemTime::now()).ok());
        let started = Instant::now() + wait.unwrap_or_default();
        let base = DeviceSettings {
            acked: cfg.qos != QoS::AtMostOnce,
            schedule: cfg.schedule,
            count: cfg.count,
            payload_bytes: cfg.payload_bytes,
            drain_timeout: cfg.link.drain_timeout,
            fleet_size: cfg.fleet_size,
            seed: cfg.seed.value,
            start: started,
            max_inflight: cfg.max_inflight,
            backoff_min: cfg.link.backoff_min,
            backoff_max: cfg.link.backoff_max,
            give_up_after: cfg.link.give_up_after,
            attempted: None,
            offline_queue: cfg.link.offline_queue,
            pacer: pacer(cfg),
            log_gate: Arc::new(LogGate::default()),
            drops: Arc::new(DropLog::new(started)),
            topic: cfg.topic.clone(),
            model: cfg.model,
            shadow_spacing: cfg.profile == crate::config::aws_iot::Profile::AwsIot,
            template: cfg.template.clone(),
            replay: cfg.replay.clone(),
            tune: Default::default(),
        };
        let mut feeds = Vec::with_capacity(n);
        let mut tees = Vec::with_capacity(n);
        for _ in 0..n {
            let (txs, rxs): (Vec<_>, Vec<_>) = (1..sinks.max(1))
                .map(|_| {
                    let (tx, rx) = mpsc::unbounded_channel();
                    (tx, Some(rx))
                })
                .unzip();
            tees.push(txs);
            feeds.push(rxs);
        }
        let (phase_tx, phase_rx) = watch::channel(Phase::Running);
        let (notes_tx, notes_rx) = mpsc::unbounded_channel();
        Fleet {
            tasks: JoinSet::new(),
            injectors: Injectors::with_capacity(n),
            notes: Some(notes_rx),
            phase_tx,
            phase_rx,
            notes_tx,
            sinks: Vec::with_capacity(sinks),
            feeds,
            tees,
            devices: cfg.devices.clone(),
            base,
            groups: cfg.groups.clone(),
            group_stats: Vec::new(),
            // The first stage's rate and devices hold from the first connection on.
            control: cfg.stages.first().map(|first| {
                let opening = Control {
                    rate: first.rate,
                    devices: first.devices,
                    outage: first.outage,
                    ..Control::default()
                };
                watch::channel(opening).0
            }),
            started,
            running_for: None,
        }
    }

    /// Starts every device on one more sink, counting into `stats`.
    pub fn add<T: Transport>(&mut self, name: &str, transport: T, stats: Arc<Stats>) {
        let first = self.sinks.is_empty();
        let follower = self.sinks.len();
        let settings = Arc::new(DeviceSettings {
            acked: transport.acknowledges(self.base.acked),
            max_inflight: transport.window(self.base.max_inflight),
            // Each sink's connections drop on their own: a network event on one is not the
            // other's.
            drops: Arc::new(DropLog::new(self.started)),
            ..self.base.clone()
        });
        stats.watch_outages(settings.drops.outages.clone());
        self.sinks.push(Sink {
            name: name.to_string(),
            stats: stats.clone(),
        });
        // A `[[group]]` has its own settings and counters; the sink's counters add them up.
        let per_group: Vec<(Arc<DeviceSettings>, Arc<Stats>)> = if self.groups.is_empty() {
            vec![(settings.clone(), stats.clone())]
        } else {
            let parts: Vec<_> = self
                .groups
                .iter()
                .map(|g| {
                    let qos1 = g.qos.map_or(self.base.acked, |q| q != QoS::AtMostOnce);
                    let mut model = settings.model;
                    if let Some(f) = g.fields {
                        model.fields = f;
                    }
                    let s = DeviceSettings {
                        acked: transport.acknowledges(qos1),
                        schedule: g.schedule.unwrap_or(settings.schedule),
                        model,
                        template: g.template.clone().or_else(|| settings.template.clone()),
                        tune: g.model,
                        ..(*settings).clone()
                    };
                    (Arc::new(s), Arc::new(Stats::default()))
                })
                .collect();
            stats.add_parts(&parts.iter().map(|(_, s)| s.clone()).collect::<Vec<_>>());
            if first {
                self.group_stats = self
                    .groups
                    .iter()
                    .map(|g| g.name.clone())
                    .zip(parts.iter().map(|(_, s)| s.clone()))
                    .collect();
            }
            parts
        };
        let transport = Arc::new(transport);
        for (i, dev) in self.devices.iter().cloned().enumerate() {
            let (settings, stats) = &per_group[dev.group.min(per_group.len() - 1)];
            let index = dev.index;
            let (tx, inject_rx) = device::mailbox::mailbox(INJECT_QUEUE);
            let feed = if first {
                self.injectors.add(dev.id.clone(), tx);
                Feed::Own {
                    tees: std::mem::take(&mut self.tees[i]),
                }
            } else {
                let rx = self.feeds[i][follower - 1]
                    .take()
                    .expect("each sink is added once");
                Feed::Follow { rx, done: false }
            };
            let links = DeviceLinks {
                inject_rx,
                notes: self.notes_tx.clone(),
                phase: PhaseWatch::new(self.phase_rx.clone()),
                feed,
                control: self.control.as_ref().map(|c| c.subscribe()),
            };
            let task = device::run(
                dev,
                index,
                transport.clone(),
                settings.clone(),
                stats.clone(),
                links,
            );
            match crate::workers::next() {
                Some(thread) => self.tasks.spawn_on(task, thread),
                None => self.tasks.spawn(task),
            };
        }
    }

    /// Client id `id` sent a CONNECT at `at` (the pre-flight's): its device's first attempt
    /// keeps one second from it, as from any attempt of its own. Call before [`Fleet::add`].
    pub fn connected_before(&mut self, id: String, at: Instant) {
        self.base.attempted = Some(Arc::new((id, at)));
    }

    /// The fleet's pacer of connection attempts (None when nothing paces them).
    pub fn pacer(&self) -> Option<Arc<Pacer>> {
        self.base.pacer.clone()
    }

    /// Where scenario stages send their changes (None without stages).
    pub fn control(&self) -> Option<watch::Sender<Control>> {
        self.control.clone()
    }

    /// The sinks and their counters, live, in the order added.
    pub fn sinks(&self) -> &[Sink] {
        &self.sinks
    }

    /// The first sink's counters, live.
    pub fn stats(&self) -> Arc<Stats> {
        self.sinks[0].stats.clone()
    }

    /// When the fleet started.
    pub fn started(&self) -> Instant {
        self.started
    }

    /// A handle to inject events, for the console.
    pub fn injectors(&self) -> Injectors {
        self.injectors.clone()
    }

    /// What devices say about injections (once; later calls return None).
    pub fn take_notes(&mut self) -> Option<mpsc::UnboundedReceiver<InjectNote>> {
        self.notes.take()
    }

    /// Runs until `stop` resolves or every device has ended by itself.
    pub async fn run_until(&mut self, stop: impl Future<Output = StopReason>) -> StopReason {
        tokio::pin!(stop);
        let reason = loop {
            tokio::select! {
                reason = &mut stop => break reason,
                done = self.tasks.join_next() => {
                    if done.is_none() || self.tasks.is_empty() {
                        break StopReason::AllEnded;
                    }
                }
            }
        };
        self.running_for = Some(self.started.elapsed());
        reason
    }

    /// Devices deliver what is in flight, each bounded by `--drain-timeout`; when `hurry`
    /// resolves (a second Ctrl-C) they stop at once. Returns the final figures.
    pub async fn drain(mut self, hurry: impl Future<Output = ()>) -> Outcome {
        let running_for = self.running_for.unwrap_or_else(|| self.started.elapsed());
        let _ = self.phase_tx.send(Phase::Draining);
        tokio::pin!(hurry);
        let mut hurried = false;
        loop {
            tokio::select! {
                done = self.tasks.join_next() => if done.is_none() { break },
                _ = &mut hurry, if !hurried => {
                    hurried = true;
                    let _ = self.phase_tx.send(Phase::Stop);
                }
            }
        }
        Outcome {
            sinks: self
                .sinks
                .iter()
                .map(|s| SinkOutcome {
                    name: s.name.clone(),
                    snapshot: s.stats.snapshot(),
                    latency: s.stats.latency(),
                })
                .collect(),
            groups: self
                .group_stats
                .iter()
                .map(|(name, s)| SinkOutcome {
                    name: name.clone(),
                    snapshot: s.snapshot(),
                    latency: s.latency(),
                })
                .collect(),
            timings: Timings {
                running_for,
                elapsed: self.started.elapsed(),
            },
            devices: self.injectors.len(),
            broken_thresholds: 0,
        }
    }
}

/// The pacer of connection attempts: `--ramp-up`, or the first stage's `ramp_up`; a pacer with
/// no limit yet when only a later stage sets one.
fn pacer(cfg: &FleetConfig) -> Option<Arc<Pacer>> {
    let staged = cfg.stages.iter().any(|s| s.ramp_up.is_some());
    let opening = cfg.stages.first().and_then(|s| s.ramp_up).or(cfg.link.ramp_up);
    (staged || opening.is_some()).then(|| Arc::new(Pacer::new(opening)))
}

/// Which device(s) an injection is for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// The next device in turn that is still running.
    Next,
    Device(String),
    All,
}

/// Why an injection was not delivered to a device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    Busy(String),
    NotRunning(String),
    NoDeviceRunning,
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refusal::Busy(id) => write!(f, "inject {id}: busy, try again"),
            Refusal::NotRunning(id) => write!(f, "inject {id}: this device is not running"),
            Refusal::NoDeviceRunning => f.write_str("inject: no device is running"),
        }
    }
}

/// The devices' injection channels, by id, and whose turn Enter is.
#[derive(Clone, Default)]
pub struct Injectors {
    ids: Vec<String>,
    txs: Vec<device::mailbox::PokeTx>,
    by_id: Arc<HashMap<String, usize>>,
    next: usize,
}

impl Injectors {
    fn with_capacity(n: usize) -> Injectors {
        Injectors {
            ids: Vec::with_capacity(n),
            txs: Vec::with_capacity(n),
            by_id: Arc::new(HashMap::with_capacity(n)),
            next: 0,
        }
    }

    fn add(&mut self, id: String, tx: device::mailbox::PokeTx) {
        Arc::make_mut(&mut self.by_id).insert(id.clone(), self.ids.len());
        self.ids.push(id);
        self.txs.push(tx);
    }

    pub fn len(&self) -> usize {
        self.ids.len()
    }

    /// Whether `id` names a device of this fleet.
    pub fn knows(&self, id: &str) -> bool {
        self.by_id.contains_key(id)
    }

    /// Asks the target device(s) for one event now; returns the refusals.
    pub fn inject(&mut self, target: &Target) -> Vec<Refusal> {
        self.poke(target, Poke::Inject)
    }

    /// Asks the target device(s) to do `poke`; returns the refusals.
    pub fn poke(&mut self, target: &Target, poke: Poke) -> Vec<Refusal> {
        match target {
            Target::Next => self.poke_next(poke).err().into_iter().collect(),
            Target::Device(id) => match self.by_id.get(id) {
                Some(&i) => self.send(i, poke).err().into_iter().collect(),
                None => vec![Refusal::NotRunning(id.clone())],
            },
            Target::All => (0..self.len()).filter_map(|i| self.send(i, poke).err()).collect(),
        }
    }

    fn poke_next(&mut self, poke: Poke) -> Result<(), Refusal> {
        for _ in 0..self.len() {
            let i = self.next % self.len();
            self.next = (self.next + 1) % self.len();
            if !self.txs[i].is_closed() {
                return self.send(i, poke);
            }
        }
        Err(Refusal::NoDeviceRunning)
    }

    fn send(&self, i: usize, poke: Poke) -> Result<(), Refusal> {
        match self.txs[i].try_send(poke) {
            Ok(()) => Ok(()),
            Err(device::mailbox::Refused::Full) => Err(Refusal::Busy(self.ids[i].clone())),
            Err(device::mailbox::Refused::Closed) => Err(Refusal::NotRunning(self.ids[i].clone())),
        }
    }
}
