//! The threads the devices run on: one current-thread tokio runtime per core, every device
//! pinned to one of them (in turn) for its whole life.
//!
//! On tokio's shared multi-thread scheduler a device's wake-ups (its timer, its socket) often
//! land on another worker than the one that last ran it, and an idle worker is woken to steal
//! it: a futex and a migration per event at moderate rates. Pinned, a device's timer, socket and
//! task stay on one thread. Everything else (console, status line, Prometheus, the batching
//! sinks' shared parts) stays on the main runtime; tokio's channels, locks and sockets work
//! across runtimes, so nothing else changes.
//!
//! Without [`start`] (unit tests, paused clocks), devices run where they are spawned.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::runtime::Handle;

struct Workers {
    handles: Vec<Handle>,
    next: AtomicUsize,
}

static WORKERS: OnceLock<Workers> = OnceLock::new();

/// Starts one device thread per core (once per process; later calls do nothing). The threads
/// live until the process exits.
pub fn start() -> std::io::Result<()> {
    if WORKERS.get().is_some() {
        return Ok(());
    }
    let n = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut handles = Vec::with_capacity(n);
    for i in 0..n {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        handles.push(runtime.handle().clone());
        std::thread::Builder::new()
            .name(format!("devices-{i}"))
            .spawn(move || runtime.block_on(std::future::pending::<()>()))?;
    }
    let _ = WORKERS.set(Workers {
        handles,
        next: AtomicUsize::new(0),
    });
    Ok(())
}

/// The runtime the next device runs on, in turn; None before [`start`].
pub fn next() -> Option<&'static Handle> {
    let w = WORKERS.get()?;
    let i = w.next.fetch_add(1, Ordering::Relaxed) % w.handles.len();
    Some(&w.handles[i])
}

#[cfg(test)]
mod tests {
    /// Devices spawned through the workers run on threads of their own, in turn, and finish
    /// there; their results come back to the spawning runtime.
    #[tokio::test]
    async fn devices_run_in_turn_on_the_device_threads() {
        super::start().unwrap();
        let n = super::WORKERS.get().unwrap().handles.len();
        let mut set = tokio::task::JoinSet::new();
        for _ in 0..2 * n {
            let h = super::next().unwrap();
            set.spawn_on(
                async {
                    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
                    std::thread::current().name().unwrap_or("").to_string()
                },
                h,
            );
        }
        let mut names = Vec::new();
        while let Some(name) = set.join_next().await {
            names.push(name.unwrap());
        }
        names.sort();
        names.dedup();
        assert_eq!(names.len(), n, "{names:?}");
        assert!(names.iter().all(|n| n.starts_with("devices-")), "{names:?}");
    }
}
