//! Runs a run's scenario stages: at each stage's start it marks the first sink's figures (so
//! each stage is reported on its own), sets the fleet-wide rate (ramped every 250 ms for
//! `rate_to`), the devices connected, the pace of connections and the churn, and asks for
//! disconnects; it says when the last stage is over.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;

use crate::config::stages::Stage;
use crate::device::Control;
use crate::ratelimit::Pacer;
use crate::stats::{Latency, Snapshot, Stats};

/// How often a `rate_to` ramp moves the rate.
const RAMP_STEP: Duration = Duration::from_millis(250);
/// A disconnect stage with no duration lasts until every device is back, or this long.
const STORM_LIMIT: Duration = Duration::from_secs(60);
/// How often a disconnect stage looks whether every device is back.
const STORM_POLL: Duration = Duration::from_millis(100);

/// The first sink's figures when a stage began.
pub struct Mark {
    pub name: String,
    pub at: Instant,
    pub snapshot: Snapshot,
    pub latency: Latency,
}

pub struct Scenario {
    stages: Vec<Stage>,
    control: watch::Sender<Control>,
    /// Paces connection attempts (`ramp_up`); None when no stage and no --ramp-up sets a pace.
    pacer: Option<Arc<Pacer>>,
    /// The stage under way (`stages.len()` when all are over).
    i: usize,
    since: Instant,
    /// The rate before the stage under way began.
    rate_before: Option<f64>,
    started: bool,
    /// When the stage under way next needs attention (a ramp step, a look at the devices, its
    /// end). Kept here so a caller that stops waiting and waits again loses no time.
    wake: Instant,
    /// Devices online when a disconnect stage began, and whether they were seen gone.
    storm: Option<(u64, bool)>,
    /// The devices connected, as the stages so far set them (an outage aside).
    devices: Option<u64>,
    /// The stage under way, for the metrics.
    shown: crate::metrics::CurrentStage,
    pub marks: Vec<Mark>,
}

impl Scenario {
    /// `rate` is the fleet's rate before the first stage (`--rate`, `--interval`).
    pub fn new(
        stages: Vec<Stage>,
        control: watch::Sender<Control>,
        pacer: Option<Arc<Pacer>>,
        rate: Option<f64>,
        shown: crate::metrics::CurrentStage,
    ) -> Scenario {
        Scenario {
            stages,
            control,
            pacer,
            i: 0,
            since: Instant::now(),
            rate_before: rate,
            started: false,
            wake: Instant::now(),
            storm: None,
            devices: None,
            shown,
            marks: Vec::new(),
        }
    }

    /// The stage under way, for the time series.
    pub fn current(&self) -> &str {
        self.stages.get(self.i).map_or("drain", |s| s.name.as_str())
    }

    fn begin(&mut self, stats: &Stats) {
        let stage = &self.stages[self.i];
        // One look at the figures for the report's stages and the metrics' alike. The first
        // stage began with the fleet: everything from its first connection attempt is its.
        let (snapshot, latency) = if self.marks.is_empty() {
            (Snapshot::default(), Latency::default())
        } else {
            (stats.snapshot(), stats.latency())
        };
        crate::stats::lock(&self.shown).push(crate::metrics::StageMark {
            name: stage.name.clone(),
            snapshot: snapshot.clone(),
            latency: latency.clone(),
        });
        self.marks.push(Mark {
            name: stage.name.clone(),
            at: Instant::now(),
            snapshot,
            latency,
        });
        self.since = Instant::now();
        self.wake = self.since;
        // An outage (then_reconnect = false) is over at its duration, not when devices are back.
        self.storm = (stage.disconnect && !stage.outage).then(|| (stats.online(), false));
        self.devices = stage.devices.or(self.devices);
        tracing::info!("stage {}: {}", stage.name, describe(stage, self.rate_before));
        if let (Some(r), Some(pacer)) = (stage.ramp_up, &self.pacer) {
            pacer.set_rate(r);
        }
        let rate = stage.rate_at(Duration::ZERO, self.rate_before);
        let disconnect = stage.disconnect;
        let (devices, outage) = (self.devices, stage.outage);
        let churn = stage.churn.map(|c| (c, self.since));
        self.control.send_if_modified(|c| {
            let before = *c;
            c.rate = rate.or(c.rate);
            c.devices = devices;
            c.outage = outage;
            c.churn = churn;
            if disconnect {
                c.storms += 1;
            }
            *c != before
        });
    }

    /// Goes on with the stages until the next change; true when the last one is over (or has
    /// reached its `drain`) and the fleet should stop. Cancel-safe: it waits for `self.wake`
    /// and changes nothing before the wait is over.
    pub async fn step(&mut self, stats: &Stats) -> bool {
        if !self.started {
            self.started = true;
            self.begin(stats);
        }
        tokio::time::sleep_until(self.wake).await;
        loop {
            let Some(stage) = self.stages.get(self.i) else {
                return true;
            };
            let into = self.since.elapsed();
            let over = match (stage.duration, self.storm) {
                (None, _) => return true,
                // A disconnect with no duration: over once every device that was online is
                // back (after being seen gone), or after STORM_LIMIT.
                (Some(d), Some((before, gone))) if d.is_zero() => {
                    let online = stats.online();
                    let gone = gone || online < before;
                    self.storm = Some((before, gone));
                    (gone && online >= before) || into >= STORM_LIMIT
                }
                (Some(d), _) => into >= d,
            };
            if over {
                let end = stage.duration.unwrap_or_default();
                self.rate_before = stage.rate_at(end, self.rate_before);
                self.i += 1;
                if self.i == self.stages.len() {
                    return true;
                }
                self.begin(stats);
                continue;
            }
            let now = Instant::now();
            self.wake = match (stage.duration, stage.rate_to) {
                (Some(d), _) if d.is_zero() => now + STORM_POLL,
                (Some(d), Some(_)) => {
                    let rate = stage.rate_at(into, self.rate_before);
                    self.control.send_modify(|c| c.rate = rate);
                    (now + RAMP_STEP).min(self.since + d)
                }
                (Some(d), None) => self.since + d,
                (None, _) => now,
            };
            return false;
        }
    }
}

impl Scenario {
    /// Each stage's own figures, from its mark to the next (the last to `end`, after the drain).
    pub fn figures(
        &self,
        settings: &crate::report::Settings,
        end: (&Snapshot, &Latency, Instant),
    ) -> Vec<(String, crate::report::Figures)> {
        let mut out = Vec::new();
        for (i, mark) in self.marks.iter().enumerate() {
            let (snapshot, latency, until) = match self.marks.get(i + 1) {
                Some(next) => (&next.snapshot, &next.latency, next.at),
                None => end,
            };
            let took = until.saturating_duration_since(mark.at);
            let timings = crate::stats::Timings {
                running_for: took,
                elapsed: took,
            };
            let mut stage_settings = settings.clone();
            let stage = self.stages.iter().find(|s| s.name == mark.name);
            stage_settings.target_rate = stage.and_then(|s| match (s.rate, s.rate_to) {
                (Some(a), Some(b)) => Some((a + b) / 2.0),
                (a, _) => a,
            });
            let f = crate::report::Figures::new(
                &stage_settings,
                &snapshot.since(&mark.snapshot),
                &latency.since(&mark.latency),
                timings,
            );
            out.push((mark.name.clone(), f));
        }
        out
    }
}

fn describe(stage: &Stage, before: Option<f64>) -> String {
    let mut parts = Vec::new();
    if let Some(n) = stage.devices {
        parts.push(format!("{n} device(s) connected"));
    }
    if let Some(r) = stage.ramp_up {
        parts.push(format!("connecting at most {r}/s"));
    }
    if let Some(c) = stage.churn {
        parts.push(format!("{c} connect/disconnect cycle(s)/s"));
    }
    if stage.outage {
        parts.push("every device disconnects and stays off".to_string());
    } else if stage.disconnect {
        parts.push("every device disconnects and comes back".to_string());
    }
    match (stage.rate.or(before), stage.rate_to) {
        (Some(a), Some(b)) => parts.push(format!("{a}/s ramping to {b}/s")),
        (Some(a), None) => parts.push(format!("{a}/s")),
        _ => {}
    }
    match stage.duration {
        Some(d) if !d.is_zero() => parts.push(format!("for {}", humantime::format_duration(d))),
        Some(_) => parts.push("until every device is back".into()),
        None => parts.push("then the run ends".into()),
    }
    parts.join(", ")
}
