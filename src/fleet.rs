//! The fleet: spawns the devices, routes console injections, and shuts down gracefully on
//! `q`, Ctrl-C, SIGTERM or `--duration`.

use std::collections::HashMap;
use std::io::BufRead;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Result;
use rumqttc::QoS;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::config::FleetConfig;
use crate::console::{self, Command};
use crate::device::{self, DeviceSettings, Inject, Phase};
use crate::ratelimit::Pacer;
use crate::report;
use crate::signals::Signals;
use crate::stats::{Snapshot, Stats};

/// How a run ended.
pub struct Outcome {
    pub stats: Snapshot,
    pub devices: usize,
}

/// Injections a device may have waiting before the console says it is busy.
const INJECT_QUEUE: usize = 64;

/// Runs the fleet to the end and returns its final counters. Prints the summary on stderr.
pub async fn run(cfg: FleetConfig) -> Result<Outcome> {
    let stats = Arc::new(Stats::default());
    let start = Instant::now();
    let n = cfg.devices.len();
    let settings = Arc::new(DeviceSettings {
        host: cfg.endpoint.clone(),
        port: cfg.port,
        topic: cfg.topic.clone(),
        qos: cfg.qos,
        interval: cfg.interval,
        keep_alive: cfg.keep_alive,
        drain_timeout: cfg.drain_timeout,
        fleet_size: n,
        seed: cfg.seed,
        start,
        max_inflight: 100,
        connect_timeout: Duration::from_secs(10),
        backoff_min: cfg.backoff_min,
        backoff_max: cfg.backoff_max,
        offline_queue: cfg.offline_queue,
        persistent_session: cfg.persistent_session,
        pacer: cfg.ramp_up.map(|r| Arc::new(Pacer::new(r))),
    });
    if cfg.seed_given {
        tracing::info!("seed {}", cfg.seed);
    } else {
        tracing::info!(
            "seed {} (pass --seed {} to repeat these readings)",
            cfg.seed,
            cfg.seed
        );
    }
    tracing::info!(
        "{n} device(s) -> {}:{} topic '{}' QoS {}, {}",
        cfg.endpoint,
        cfg.port,
        cfg.topic,
        cfg.qos as u8,
        if cfg.interval.is_zero() {
            "on demand only (press Enter to inject)".to_string()
        } else {
            format!(
                "an event every {} per device",
                humantime::format_duration(cfg.interval)
            )
        }
    );

    let (phase_tx, phase_rx) = watch::channel(Phase::Running);
    let mut tasks = JoinSet::new();
    let mut injectors = Vec::with_capacity(n);
    let mut by_id = HashMap::with_capacity(n);
    for (index, dev) in cfg.devices.into_iter().enumerate() {
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
                        eprintln!("stopping (q)");
                        break;
                    }
                    Command::Unknown(word) => eprintln!("unknown command '{word}'. {}", console::HINT),
                },
                None => console_rx.close(),
            },
            sig = signals.recv() => {
                eprintln!("stopping ({sig})");
                break;
            }
            _ = sleep_until_opt(deadline) => {
                tracing::info!("--duration reached");
                break;
            }
            _ = progress.tick() => {
                let s = stats.snapshot();
                if !announced && (s.connected + s.failed) as usize == n {
                    announced = true;
                    tracing::info!("{} of {n} device(s) connected in {:.2} s", s.connected, start.elapsed().as_secs_f64());
                }
            }
            done = tasks.join_next() => {
                if done.is_none() {
                    break;
                }
                if tasks.is_empty() {
                    break;
                }
            }
        }
    }

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
    eprint!(
        "{}",
        report::summary(&snapshot, n, start.elapsed(), cfg.qos == QoS::AtMostOnce)
    );
    Ok(Outcome {
        stats: snapshot,
        devices: n,
    })
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
