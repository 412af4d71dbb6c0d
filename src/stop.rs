//! When a command stops: a signal, or an optional deadline.

use std::time::Duration;

use tokio::time::Instant;

use crate::signals::Signals;

/// Why the running phase ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopReason {
    /// `q` on the console.
    Quit,
    /// Ctrl-C or SIGTERM (the signal's name).
    Signal(&'static str),
    /// `--duration` passed.
    Deadline,
    /// Every device ended by itself (each sent its `--count`, or gave up).
    AllEnded,
    /// The scenario's last stage is over.
    StagesOver,
}

/// Sleeps until `deadline`, or forever when there is none.
pub async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

/// Resolves on Ctrl-C / SIGTERM, or once `duration` has passed since `start`.
pub async fn signal_or_deadline(
    signals: &mut Signals,
    start: Instant,
    duration: Option<Duration>,
) -> StopReason {
    tokio::select! {
        sig = signals.recv() => StopReason::Signal(sig),
        _ = sleep_until(duration.map(|d| start + d)) => StopReason::Deadline,
    }
}
