//! A device's place in a `--replay` recording: which of its rows is next and when it is due.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::Device;
use crate::config::ReplayPlan;
use crate::freezer::unix_millis;

/// This device's rows of the recording, and the next one.
#[derive(Debug)]
pub struct Cursor {
    plan: Arc<ReplayPlan>,
    id: String,
    next: usize,
    /// Passes of the file made so far (`--replay-loop`).
    pass: u32,
    /// One pass of the file: its span and one mean gap, so the loop does not stack the last
    /// and first rows.
    period: Duration,
}

impl Cursor {
    pub fn new(plan: Arc<ReplayPlan>, id: &str) -> Cursor {
        let r = &plan.replay;
        let gap = if r.rows > 1 {
            r.span / (r.rows as u32 - 1).max(1)
        } else {
            Duration::from_secs(1)
        };
        Cursor {
            period: (r.span + gap).max(Duration::from_millis(1)),
            plan,
            id: id.to_string(),
            next: 0,
            pass: 0,
        }
    }

    fn rows(&self) -> &[crate::freezer::replay::Row] {
        self.plan
            .replay
            .by_device
            .get(&self.id)
            .map_or(&[], Vec::as_slice)
    }

    /// When the next row is due (recorded offset over `speed`, from `start`); None when done.
    pub fn next_at(&self, start: Instant, speed: f64) -> Option<Instant> {
        let row = self.rows().get(self.next)?;
        let offset = row.offset + self.period * self.pass;
        Some(start + offset.div_f64(speed))
    }

    /// Every row sent (and no loop).
    pub fn done(&self) -> bool {
        self.rows().get(self.next).is_none()
    }

    /// The next row's payload, with the device's seq and the time moved to now.
    pub fn take(&mut self, seq: u64) -> Option<Vec<u8>> {
        let row = self.rows().get(self.next)?;
        let payload = row.payload(&self.id, seq, unix_millis(), &self.plan.replay.time_column);
        self.next += 1;
        if self.next == self.rows().len() && self.plan.looped {
            self.next = 0;
            self.pass += 1;
        }
        Some(payload)
    }
}

impl Device {
    /// When this device's next recorded row is due.
    pub(super) fn replay_due(&self) -> Option<Instant> {
        self.replay
            .as_ref()
            .and_then(|c| c.next_at(self.settings.start, self.settings.model.speed))
    }

    /// Whether the recording has nothing more for this device (a device with no rows is done
    /// at once).
    pub(super) fn replay_done(&self) -> bool {
        self.settings.replay.is_some() && self.replay.as_ref().is_none_or(|c| c.done())
    }

    /// Sends the next recorded row, meant for `intended`.
    pub(super) fn take_replayed(&mut self, intended: Instant) {
        let Some(cursor) = self.replay.as_mut() else {
            return;
        };
        let seq = self.ledger.next_seq_peek();
        if let Some(payload) = cursor.take(seq) {
            self.ledger.take_seq();
            self.timed_taken += 1;
            self.queue_record(payload, intended, false);
        }
    }
}
