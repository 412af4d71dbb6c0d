//! Fleet-wide counters, shared by every device task.
//!
//! Devices only add; readers take a [`Snapshot`], a plain value that can be printed, written to a
//! report, or added to another shard's snapshot.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use serde::Serialize;

/// How many device ids a cause lists before it just counts.
const NAMES_PER_CAUSE: usize = 5;

#[derive(Debug, Default)]
pub struct Stats {
    connected: AtomicU64,
    failed: AtomicU64,
    online: AtomicU64,
    reconnects: AtomicU64,
    published: AtomicU64,
    acknowledged: AtomicU64,
    failed_events: AtomicU64,
    resent: AtomicU64,
    injected: AtomicU64,
    device_causes: Mutex<BTreeMap<String, CauseCount>>,
    event_causes: Mutex<BTreeMap<String, u64>>,
}

/// How often a cause occurred, and the first few devices it hit.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct CauseCount {
    pub count: u64,
    pub devices: Vec<String>,
    /// The full sentence of the first occurrence.
    pub example: String,
}

/// A point-in-time copy of the counters.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Snapshot {
    /// Devices that completed at least one connection.
    pub connected: u64,
    /// Devices that never connected.
    pub failed: u64,
    /// Devices connected right now.
    pub online: u64,
    pub reconnects: u64,
    /// Events written to the connection (each counted once, however often re-sent).
    pub published: u64,
    /// QoS 1 events the broker acknowledged.
    pub acknowledged: u64,
    /// Events that were never acknowledged (QoS 1) or never sent (QoS 0).
    pub failed_events: u64,
    /// Re-sends of events whose connection dropped before the acknowledgement.
    pub resent: u64,
    /// Events injected from the console.
    pub injected: u64,
    /// Why devices failed to connect, by cause.
    pub device_causes: BTreeMap<String, CauseCount>,
    /// Why events failed, by cause.
    pub event_causes: BTreeMap<String, u64>,
}

impl Stats {
    pub fn device_connected(&self) {
        self.connected.fetch_add(1, Relaxed);
    }
    pub fn online(&self, up: bool) {
        if up {
            self.online.fetch_add(1, Relaxed);
        } else {
            self.online.fetch_sub(1, Relaxed);
        }
    }
    pub fn reconnected(&self) {
        self.reconnects.fetch_add(1, Relaxed);
    }
    pub fn published(&self) {
        self.published.fetch_add(1, Relaxed);
    }
    pub fn resent(&self) {
        self.resent.fetch_add(1, Relaxed);
    }
    pub fn acknowledged(&self) {
        self.acknowledged.fetch_add(1, Relaxed);
    }
    pub fn injected(&self) {
        self.injected.fetch_add(1, Relaxed);
    }

    /// A device gave up connecting; returns how many devices have failed so far.
    pub fn device_failed(&self, device: &str, key: &str, detail: &str) -> u64 {
        let mut causes = self.device_causes.lock().unwrap_or_else(|p| p.into_inner());
        let entry = causes.entry(key.to_string()).or_default();
        entry.count += 1;
        if entry.devices.len() < NAMES_PER_CAUSE {
            entry.devices.push(device.to_string());
        }
        if entry.example.is_empty() {
            entry.example = detail.to_string();
        }
        self.failed.fetch_add(1, Relaxed) + 1
    }

    /// `n` events will never be delivered, for `cause`.
    pub fn events_failed(&self, n: u64, cause: &str) {
        if n == 0 {
            return;
        }
        self.failed_events.fetch_add(n, Relaxed);
        let mut causes = self.event_causes.lock().unwrap_or_else(|p| p.into_inner());
        *causes.entry(cause.to_string()).or_default() += n;
    }

    pub fn snapshot(&self) -> Snapshot {
        Snapshot {
            connected: self.connected.load(Relaxed),
            failed: self.failed.load(Relaxed),
            online: self.online.load(Relaxed),
            reconnects: self.reconnects.load(Relaxed),
            published: self.published.load(Relaxed),
            acknowledged: self.acknowledged.load(Relaxed),
            failed_events: self.failed_events.load(Relaxed),
            resent: self.resent.load(Relaxed),
            injected: self.injected.load(Relaxed),
            device_causes: self
                .device_causes
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone(),
            event_causes: self
                .event_causes
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone(),
        }
    }
}
