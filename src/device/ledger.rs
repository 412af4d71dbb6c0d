//! The delivery ledger of one device: every event from the moment the freezer produced it until
//! the server acknowledged it (or it was counted lost).
//!
//! Design: like rumqttc's `MqttState`, these methods only change state and return what the
//! caller must know; nothing here does I/O, so the rules are unit-tested in microseconds.
//!
//! Why a ledger of our own: rumqttc drops unacknowledged QoS 1 publishes when a reconnect starts a
//! clean session, and requests queued while offline go with them. So a device hands the transport
//! only what fits in flight while connected, remembers what it handed, and after a lost
//! connection puts everything unacknowledged back at the front of its queue, in seq order.

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use tokio::time::Instant;

/// An event the device owes the server.
#[derive(Debug)]
pub struct Queued {
    /// Its place in the device's sending order (an event's seq, unless `--faults` adds records).
    pub seq: u64,
    /// When the schedule meant it to be sent: latency counts from here, so a stalled connection
    /// shows as latency instead of a quietly lower rate.
    pub intended: Instant,
    pub payload: Vec<u8>,
    /// Written to a connection at least once already.
    sent: bool,
}

/// What a written payload was.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Written {
    /// Written for the first time, `lag` after its intended send time.
    First { lag: Duration },
    /// Written again after a lost connection.
    Resent,
}

#[derive(Debug)]
pub struct Ledger {
    next_seq: u64,
    /// The sending order of queued records (events, and `--faults`' extra records, which take
    /// no seq of their own).
    next_order: u64,
    /// Due but not yet handed to the transport, oldest first.
    outbox: VecDeque<Queued>,
    /// Handed to the transport, not yet written, in hand-off order.
    handed: VecDeque<Queued>,
    /// Written, waiting for the acknowledgement, by the transport's token.
    awaiting: HashMap<u64, Queued>,
    /// At most this many events wait in the outbox (`--offline-queue`).
    outbox_cap: usize,
    /// At most this many events handed or awaiting at once (`--max-inflight`).
    window: usize,
    /// Written events wait for an acknowledgement (QoS 1); otherwise written is delivered.
    acked: bool,
}

impl Ledger {
    pub fn new(outbox_cap: usize, window: usize, acked: bool) -> Ledger {
        Ledger {
            next_seq: 1,
            next_order: 1,
            outbox: VecDeque::new(),
            handed: VecDeque::new(),
            awaiting: HashMap::new(),
            outbox_cap,
            window,
            acked,
        }
    }

    /// The seq the next event gets.
    #[cfg(test)]
    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// Queues the event with the next seq; returns how many of the oldest events were dropped to
    /// keep the outbox within its cap.
    pub fn push(&mut self, payload: Vec<u8>, intended: Instant) -> u64 {
        self.take_seq();
        self.push_record(payload, intended)
    }

    /// The seq the next event will get.
    pub fn next_seq_peek(&self) -> u64 {
        self.next_seq
    }

    /// The next event's seq is taken; its record is queued later (or more than one).
    pub fn take_seq(&mut self) -> u64 {
        self.next_seq += 1;
        self.next_seq - 1
    }

    /// Queues a record after everything queued so far, taking no seq (`--faults`: an event held
    /// back, a duplicate, a malformed record); returns how many of the oldest were dropped.
    pub fn push_record(&mut self, payload: Vec<u8>, intended: Instant) -> u64 {
        self.outbox.push_back(Queued {
            seq: self.next_order,
            intended,
            payload,
            sent: false,
        });
        self.next_order += 1;
        self.trim()
    }

    fn trim(&mut self) -> u64 {
        let over = self.outbox.len().saturating_sub(self.outbox_cap);
        self.outbox.drain(..over);
        over as u64
    }

    /// Handed or awaiting an acknowledgement.
    pub fn in_flight(&self) -> usize {
        self.handed.len() + self.awaiting.len()
    }

    /// The next payload to hand over, if the window has room.
    pub fn next_to_hand(&self) -> Option<&[u8]> {
        if self.in_flight() >= self.window {
            return None;
        }
        self.outbox.front().map(|q| q.payload.as_slice())
    }

    /// The payload from [`Ledger::next_to_hand`] was taken by the transport.
    pub fn handed(&mut self) {
        if let Some(item) = self.outbox.pop_front() {
            self.handed.push_back(item);
        }
    }

    /// With `--rate max`: the window and the outbox together have room for one more event.
    pub fn has_room(&self) -> bool {
        self.outbox.len() + self.in_flight() < self.window
    }

    /// The oldest handed payload was written and will be acknowledged as `token`.
    pub fn on_written(&mut self, token: u64) -> Option<Written> {
        let mut item = self.handed.pop_front()?;
        let written = if item.sent {
            Written::Resent
        } else {
            item.sent = true;
            Written::First {
                lag: item.intended.elapsed(),
            }
        };
        if self.acked {
            self.awaiting.insert(token, item);
        }
        Some(written)
    }

    /// `token` was acknowledged; returns the latency from the intended send time.
    pub fn on_acked(&mut self, token: u64) -> Option<Duration> {
        self.awaiting.remove(&token).map(|q| q.intended.elapsed())
    }

    /// The server refused the payload written as `token`: with `retry` it goes back to the front
    /// of the outbox (in seq order), otherwise it is forgotten. False when `token` is unknown.
    pub fn on_refused(&mut self, token: u64, retry: bool) -> bool {
        let Some(item) = self.awaiting.remove(&token) else {
            return false;
        };
        if retry {
            let at = self
                .outbox
                .iter()
                .position(|q| q.seq > item.seq)
                .unwrap_or(self.outbox.len());
            self.outbox.insert(at, item);
        }
        true
    }

    /// The connection was lost: everything handed or awaiting goes back to the front of the
    /// outbox in seq order. Returns how many of the oldest were dropped to respect the cap.
    pub fn take_back_unacked(&mut self) -> u64 {
        let mut back: Vec<Queued> = self
            .handed
            .drain(..)
            .chain(self.awaiting.drain().map(|(_, q)| q))
            .collect();
        back.sort_by_key(|q| q.seq);
        for item in back.into_iter().rev() {
            self.outbox.push_front(item);
        }
        self.trim()
    }

    /// Every event still owed: queued, handed or awaiting.
    pub fn owed(&self) -> u64 {
        (self.outbox.len() + self.in_flight()) as u64
    }

    /// Not yet written to any connection (queued or handed).
    pub fn unsent(&self) -> u64 {
        (self.outbox.len() + self.handed.len()) as u64
    }

    /// Written but not acknowledged.
    pub fn unacked(&self) -> u64 {
        self.awaiting.len() as u64
    }

    /// Nothing left to deliver.
    pub fn is_drained(&self) -> bool {
        self.outbox.is_empty() && self.handed.is_empty() && (!self.acked || self.awaiting.is_empty())
    }

    /// Forgets everything owed (the device gave up); returns how many events that was.
    pub fn clear(&mut self) -> u64 {
        let owed = self.owed();
        self.outbox.clear();
        self.handed.clear();
        self.awaiting.clear();
        owed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ledger(cap: usize, window: usize) -> Ledger {
        Ledger::new(cap, window, true)
    }

    /// Hands over everything the window allows; returns the seqs handed.
    fn hand_all(l: &mut Ledger) -> Vec<u8> {
        let mut out = vec![];
        while let Some(p) = l.next_to_hand() {
            out.push(p[0]);
            l.handed();
        }
        out
    }

    fn push(l: &mut Ledger, tag: u8) -> u64 {
        l.push(vec![tag], Instant::now())
    }

    #[test]
    fn the_window_limits_what_is_handed_and_acks_free_it() {
        let mut l = ledger(100, 2);
        for tag in 1..=3 {
            push(&mut l, tag);
        }
        assert_eq!(hand_all(&mut l), [1, 2]);
        assert!(matches!(l.on_written(7), Some(Written::First { .. })));
        assert!(l.on_acked(7).is_some());
        assert_eq!(l.on_acked(7), None, "an acknowledgement counts once");
        assert_eq!(hand_all(&mut l), [3]);
        assert_eq!(l.owed(), 2);
    }

    #[test]
    fn a_lost_connection_requeues_in_seq_order_and_resends_count_as_resent() {
        let mut l = ledger(100, 10);
        for tag in 1..=4 {
            push(&mut l, tag);
        }
        hand_all(&mut l);
        l.on_written(11); // seq 1, awaiting
        l.on_written(12); // seq 2, awaiting
        assert!(l.on_acked(11).is_some());
        // seq 2 awaits, seqs 3 and 4 are handed: all three come back, in order.
        assert_eq!(l.take_back_unacked(), 0);
        assert_eq!(hand_all(&mut l), [2, 3, 4]);
        assert_eq!(l.on_written(1), Some(Written::Resent));
        assert!(matches!(l.on_written(2), Some(Written::First { .. })));
    }

    #[test]
    fn a_full_outbox_drops_the_oldest_and_counts_them() {
        let mut l = ledger(3, 10);
        let dropped: u64 = (1..=5).map(|tag| push(&mut l, tag)).sum();
        assert_eq!(dropped, 2);
        assert_eq!(hand_all(&mut l), [3, 4, 5]);
        assert_eq!(l.next_seq(), 6, "seqs keep counting across drops");
        // Requeued events count against the cap too.
        push(&mut l, 6);
        push(&mut l, 7);
        assert_eq!(l.take_back_unacked(), 2);
        assert_eq!(hand_all(&mut l), [5, 6, 7]);
    }

    #[test]
    fn draining_waits_for_acknowledgements_only_at_qos_1() {
        let mut qos1 = Ledger::new(10, 10, true);
        let mut qos0 = Ledger::new(10, 10, false);
        for l in [&mut qos1, &mut qos0] {
            push(l, 1);
            assert!(!l.is_drained());
            hand_all(l);
            l.on_written(0);
        }
        assert!(!qos1.is_drained() && qos0.is_drained());
        assert_eq!((qos1.unacked(), qos1.unsent()), (1, 0));
        assert_eq!(qos1.clear(), 1);
        assert!(qos1.is_drained());
    }

    #[test]
    fn a_refused_event_is_retried_in_seq_order_or_forgotten() {
        let mut l = ledger(100, 2);
        for tag in 1..=3 {
            push(&mut l, tag);
        }
        hand_all(&mut l); // 1 and 2
        l.on_written(1);
        l.on_written(2);
        assert!(l.on_refused(1, true), "quota exceeded: retried");
        assert!(l.on_refused(2, false), "not authorized: forgotten");
        assert!(!l.on_refused(2, false), "once");
        assert_eq!(hand_all(&mut l), [1, 3]);
        assert_eq!(l.owed(), 2);
    }

    #[test]
    fn rate_max_keeps_the_window_full_but_no_fuller() {
        let mut l = ledger(100, 2);
        assert!(l.has_room());
        push(&mut l, 1);
        push(&mut l, 2);
        assert!(!l.has_room());
        hand_all(&mut l);
        l.on_written(1);
        l.on_acked(1);
        assert!(l.has_room());
    }
}
