//! The final summary printed on stderr when a run ends.

use std::fmt::Write as _;
use std::time::Duration;

use crate::stats::Snapshot;

/// The summary table: devices, connections, events, and every failure by cause.
pub fn summary(s: &Snapshot, devices: usize, elapsed: Duration, qos0: bool) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "freezer-fleet summary after {:.1} s", elapsed.as_secs_f64());
    let _ = writeln!(
        out,
        "  devices   {} connected, {} failed (of {devices})",
        s.connected, s.failed
    );
    let attempts: u64 = s.connect_attempts_per_second.iter().sum();
    let peak = s.connect_attempts_per_second.iter().max().copied().unwrap_or(0);
    let _ = writeln!(
        out,
        "  connects  {attempts} attempts (peak {peak}/s), {} reconnects",
        s.reconnects
    );
    let acked = if qos0 {
        "n/a at QoS 0".to_string()
    } else {
        s.acknowledged.to_string()
    };
    let _ = writeln!(
        out,
        "  events    {} taken, {} published, {acked} acknowledged, {} failed{}",
        s.taken,
        s.published,
        s.failed_events,
        if s.injected > 0 {
            format!(" ({} injected)", s.injected)
        } else {
            String::new()
        }
    );
    if s.queued_offline + s.resent + s.dropped > 0 {
        let _ = writeln!(
            out,
            "  offline   {} queued while disconnected, {} re-sent, {} dropped",
            s.queued_offline, s.resent, s.dropped
        );
    }
    for (key, c) in &s.device_causes {
        let more = c.count.saturating_sub(c.devices.len() as u64);
        let names = if more > 0 {
            format!("{} and {more} more", c.devices.join(", "))
        } else {
            c.devices.join(", ")
        };
        let _ = writeln!(
            out,
            "  failed: {key}: {} device(s) ({names}): {}",
            c.count, c.example
        );
    }
    for (cause, n) in &s.event_causes {
        let _ = writeln!(out, "  events lost: {cause}: {n}");
    }
    out
}
