//! The fleet: spawns the devices, routes console injections, shows a live view, and shuts down
//! gracefully on `q`, Ctrl-C, SIGTERM, `--duration`, or when every device has sent its
//! `--count`.

use std::collections::HashMap;
use std::io::{BufRead, IsTerminal};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Result;
use rumqttc::QoS;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::config::{FleetConfig, Schedule};
use crate::console::{self, Command};
use crate::device::{self, DeviceSettings, Inject, Phase};
use crate::ratelimit::Pacer;
use crate::report::{self, Report};
use crate::signals::Signals;
use crate::stats::{Quantiles, Snapshot, Stats};

/// How a run ended.
pub struct Outcome {
    pub stats: Snapshot,
    pub devices: usize,
}

/// Injections a device may have waiting before the console says it is busy.
const INJECT_QUEUE: usize = 64;
/// The live view is redrawn this often on a terminal; elsewhere a plain line every 10 s.
const LIVE_EVERY: Duration = Duration::from_secs(1);
const PLAIN_EVERY: Duration = Duration::from_secs(10);
/// File descriptors kept for everything but device connections.
const SPARE_FDS: u64 = 16;

/// Runs the fleet to the end and returns its final counters. Prints the summary on stderr and
/// writes the JSON report if one was asked for.
pub async fn run(cfg: FleetConfig) -> Result<Outcome> {
    let n = cfg.devices.len();
    raise_open_files_limit(n);
    let stats = Arc::new(Stats::default());
    let start = Instant::now();
    let settings = Arc::new(DeviceSettings {
        host: cfg.endpoint.clone(),
        port: cfg.port,
        topic: cfg.topic.clone(),
        qos: cfg.qos,
        schedule: cfg.schedule,
        count: cfg.count,
        payload_bytes: cfg.payload_bytes,
        keep_alive: cfg.keep_alive,
        drain_timeout: cfg.drain_timeout,
        fleet_size: n,
        seed: cfg.seed,
        start,
        max_inflight: cfg.max_inflight,
        connect_timeout: Duration::from_secs(10),
        backoff_min: cfg.backoff_min,
        backoff_max: cfg.backoff_max,
        offline_queue: cfg.offline_queue,
        persistent_session: cfg.persistent_session,
        pacer: cfg.ramp_up.map(|r| Arc::new(Pacer::new(r))),
        bind: cfg.bind.clone(),
    });
    announce(&cfg, n);

    let (phase_tx, phase_rx) = watch::channel(Phase::Running);
    let mut tasks = JoinSet::new();
    let mut injectors = Vec::with_capacity(n);
    let mut by_id = HashMap::with_capacity(n);
    for (index, dev) in cfg.devices.iter().cloned().enumerate() {
        let (tx, rx) = mpsc::channel(INJECT_QUEUE);
        by_id.insert(dev.id.clone(), index);
        injectors.push((dev.id.clone(), tx));
        tasks.spawn(device::run(
            dev,
            index,
            settings.clone(),
            stats.clone(),
            rx,
            phase_rx.clone(),
        ));
    }

    let mut console_rx = spawn_console();
    let mut next_device = 0usize;
    let deadline = cfg.duration.map(|d| start + d);
    let mut announced = false;
    let mut live = LiveView::new(n, cfg.target_rate);
    let mut progress = tokio::time::interval(Duration::from_millis(250));
    let mut signals = Signals::new()?;

    // Running: until the user, a signal or --duration says stop, or every device has ended.
    loop {
        tokio::select! {
            line = console_rx.recv(), if console_rx.is_some_open() => match line {
                Some(line) => match console::parse(&line, |w| by_id.contains_key(w)) {
                    Command::InjectNext => inject_next(&injectors, &mut next_device),
                    Command::InjectDevice(id) => inject(&injectors[by_id[&id]]),
                    Command::InjectAll => injectors.iter().for_each(inject),
                    Command::Quit => {
                        live.clear();
                        eprintln!("stopping (q)");
                        break;
                    }
                    Command::Unknown(word) => eprintln!("unknown command '{word}'. {}", console::HINT),
                },
                None => console_rx.close(),
            },
            sig = signals.recv() => {
                live.clear();
                eprintln!("stopping ({sig})");
                break;
            }
            _ = sleep_until_opt(deadline) => {
                live.clear();
                tracing::info!("--duration reached");
                break;
            }
            _ = progress.tick() => {
                let s = stats.snapshot();
                if !announced && (s.connected + s.failed) as usize >= n {
                    announced = true;
                    live.clear();
                    tracing::info!("{} of {n} device(s) connected in {:.2} s", s.connected, start.elapsed().as_secs_f64());
                }
                live.tick(&s, &stats);
            }
            done = tasks.join_next() => {
                if done.is_none() || tasks.is_empty() {
                    live.clear();
                    if cfg.count.is_some() {
                        tracing::info!("every device sent its --count");
                    }
                    break;
                }
            }
        }
    }
    let running_for = start.elapsed();

    // Draining: devices deliver what is in flight, bounded by --drain-timeout; a second signal stops at once.
    let _ = phase_tx.send(Phase::Draining);
    loop {
        tokio::select! {
            done = tasks.join_next() => if done.is_none() { break },
            sig = signals.recv() => {
                eprintln!("{sig} again: stopping without waiting for acknowledgements");
                let _ = phase_tx.send(Phase::Stop);
            }
        }
    }
    let snapshot = stats.snapshot();
    let latency = stats.latency();
    let elapsed = start.elapsed();
    let report = Report::new(&cfg, &snapshot, &latency, running_for, elapsed);
    eprint!("{}", report::summary(&report, cfg.qos == QoS::AtMostOnce));
    if let Some(path) = &cfg.report {
        report::write(&report, path)?;
    }
    Ok(Outcome {
        stats: snapshot,
        devices: n,
    })
}

fn announce(cfg: &FleetConfig, n: usize) {
    if cfg.seed_given {
        tracing::info!("seed {}", cfg.seed);
    } else {
        tracing::info!(
            "seed {} (pass --seed {} to repeat these readings)",
            cfg.seed,
            cfg.seed
        );
    }
    let schedule = match (cfg.schedule, cfg.target_rate) {
        (Schedule::Max, _) => "as fast as each connection allows".to_string(),
        (Schedule::Every(_), Some(rate)) => format!("{rate} publishes/s fleet-wide"),
        (Schedule::Every(i), None) if i.is_zero() => "on demand only (press Enter to inject)".to_string(),
        (Schedule::Every(i), None) => format!("an event every {} per device", humantime::format_duration(i)),
    };
    tracing::info!(
        "{n} device(s) -> {}:{} topic '{}' QoS {}, {schedule}{}",
        cfg.endpoint,
        cfg.port,
        cfg.topic,
        cfg.qos as u8,
        cfg.ramp_up
            .map(|r| format!(", connecting at most {r}/s"))
            .unwrap_or_default()
    );
}

/// Raises the open-files soft limit to the hard limit, and says how many devices fit when the
/// fleet comes near it (each device holds one socket).
fn raise_open_files_limit(devices: usize) {
    #[cfg(unix)]
    {
        let limit = match rlimit::increase_nofile_limit(u64::MAX) {
            Ok(l) => l,
            Err(e) => {
                tracing::warn!("could not raise the open-files limit: {e}");
                return;
            }
        };
        let fits = limit.saturating_sub(SPARE_FDS);
        if devices as u64 > fits {
            tracing::warn!(
                "the open-files limit is {limit}: about {fits} devices can connect, not {devices}; raise the hard limit (ulimit -Hn, or LimitNOFILE= for a service)"
            );
        } else if devices as u64 * 10 > fits * 9 {
            tracing::info!("the open-files limit is {limit}: room for about {fits} devices");
        }
    }
}

/// The live view: on a terminal, one line redrawn every second; elsewhere a plain line every
/// 10 s (logs of CI jobs and pipes stay readable).
struct LiveView {
    tty: bool,
    devices: usize,
    target_rate: Option<f64>,
    last: Option<(Instant, u64)>,
    last_print: Instant,
    drawn: bool,
}

impl LiveView {
    fn new(devices: usize, target_rate: Option<f64>) -> LiveView {
        LiveView {
            tty: std::io::stderr().is_terminal(),
            devices,
            target_rate,
            last: None,
            last_print: Instant::now(),
            drawn: false,
        }
    }

    fn tick(&mut self, s: &Snapshot, stats: &Stats) {
        let every = if self.tty { LIVE_EVERY } else { PLAIN_EVERY };
        if self.last_print.elapsed() < every {
            return;
        }
        let now = Instant::now();
        let rate = match self.last {
            Some((t, published)) => (s.published - published) as f64 / now.duration_since(t).as_secs_f64(),
            None => s.published as f64 / every.as_secs_f64(),
        };
        self.last = Some((now, s.published));
        self.last_print = now;
        let puback = Quantiles::of(&stats.puback_latency());
        let target = self
            .target_rate
            .map(|t| format!(" (target {t:.0})"))
            .unwrap_or_default();
        let errors = s.failed + s.failed_events + s.dropped;
        let line = format!(
            "connected {}/{} | {rate:.0} pub/s{target} | PUBACK p50 {:.1} ms p99 {:.1} ms | errors {errors}",
            s.online, self.devices, puback.p50, puback.p99
        );
        if self.tty {
            eprint!("\r\x1b[2K{line}");
            self.drawn = true;
        } else {
            eprintln!("{line}");
        }
    }

    /// Ends the redrawn line before other output.
    fn clear(&mut self) {
        if self.drawn {
            eprint!("\r\x1b[2K");
            self.drawn = false;
        }
    }
}

fn inject(target: &(String, mpsc::Sender<Inject>)) {
    match target.1.try_send(Inject) {
        Ok(()) => {}
        Err(mpsc::error::TrySendError::Full(_)) => eprintln!("inject {}: busy, try again", target.0),
        Err(mpsc::error::TrySendError::Closed(_)) => {
            eprintln!("inject {}: this device is not running", target.0)
        }
    }
}

/// Enter alone: the next device in turn that is still running.
fn inject_next(injectors: &[(String, mpsc::Sender<Inject>)], next: &mut usize) {
    for _ in 0..injectors.len() {
        let target = &injectors[*next % injectors.len()];
        *next = (*next + 1) % injectors.len();
        if !target.1.is_closed() {
            inject(target);
            return;
        }
    }
    eprintln!("inject: no device is running");
}

async fn sleep_until_opt(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

/// Console lines from stdin, read on a plain thread (stdin has no truly async API): the thread
/// ends at end of input, so a closed or redirected stdin costs nothing and never spins.
struct ConsoleLines {
    rx: Option<mpsc::Receiver<String>>,
}

impl ConsoleLines {
    async fn recv(&mut self) -> Option<String> {
        match &mut self.rx {
            Some(rx) => rx.recv().await,
            None => std::future::pending().await,
        }
    }
    fn is_some_open(&self) -> bool {
        self.rx.is_some()
    }
    fn close(&mut self) {
        self.rx = None;
    }
}

fn spawn_console() -> ConsoleLines {
    let (tx, rx) = mpsc::channel(16);
    let spawned = std::thread::Builder::new().name("console".into()).spawn(move || {
        let stdin = std::io::stdin();
        for line in stdin.lock().lines() {
            let Ok(line) = line else { break };
            if tx.blocking_send(line).is_err() {
                break;
            }
        }
    });
    ConsoleLines {
        rx: spawned.is_ok().then_some(rx),
    }
}
