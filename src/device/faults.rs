//! Deliberate data faults for the consumers downstream (`--faults`): duplicates, swapped pairs,
//! late events, a clock skew per device, bursts after a device's offline spell, and malformed
//! records. Pure: the [`Injector`] decides, per event, what records go out now and what is held
//! back; the device queues them. Every injected record except a skewed `ts` carries
//! `"fault":"<kind>"`, so `watch` tells an injected duplicate from a real one.

use std::time::Duration;

use rand::rngs::Xoshiro256PlusPlus;
use rand::{RngExt, SeedableRng};
use tokio::time::Instant;

use crate::freezer::Event;

pub use crate::config::faults::FaultSpec;

/// The faults a record carries, by kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Duplicate,
    Reorder,
    Late,
    Malformed,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::Duplicate => "duplicate",
            Kind::Reorder => "reorder",
            Kind::Late => "late",
            Kind::Malformed => "malformed",
        }
    }
}

/// One record to queue.
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    pub payload: Vec<u8>,
    pub intended: Instant,
    /// The event's own record (false: an extra copy or a malformed record beside it).
    pub own: bool,
    pub fault: Option<Kind>,
}

/// What the injector did with one event.
#[derive(Debug, Default, PartialEq)]
pub struct Decision {
    /// Queue these now, in order.
    pub now: Vec<Record>,
    /// Go offline for this long (then send everything queued meanwhile at once).
    pub offline_for: Option<Duration>,
    /// The event was held back (late, or to follow the next one).
    pub held: Option<Kind>,
}

/// One device's fault injector.
#[derive(Debug)]
pub struct Injector {
    spec: FaultSpec,
    rng: Xoshiro256PlusPlus,
    skew_ms: i64,
    /// An event waiting to follow the next one (a swapped pair).
    held: Option<Record>,
    /// Late events and when they go, in order.
    late: Vec<(Instant, Record)>,
}

/// How `payload` is made for an event (padding applies to every record alike).
pub type Encode<'a> = &'a mut dyn FnMut(&mut Event) -> Vec<u8>;

impl Injector {
    pub fn new(spec: FaultSpec, seed: u64, index: u64) -> Injector {
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(
            seed.rotate_left(29) ^ index.wrapping_mul(0xA24B_AED4_963E_E407),
        );
        let skew_ms = spec.skew.map_or(0, |s| {
            let ms = s.as_millis() as i64;
            rng.random_range(-ms..=ms)
        });
        Injector {
            spec,
            rng,
            skew_ms,
            held: None,
            late: Vec::new(),
        }
    }

    /// This device's clock skew (ms), applied to every `ts`.
    pub fn skew_ms(&self) -> i64 {
        self.skew_ms
    }

    /// Decides what goes out for `event` (its `ts` already skewed), meant for `intended`.
    pub fn on_event(&mut self, event: &mut Event, intended: Instant, encode: Encode<'_>) -> Decision {
        let mut d = Decision::default();
        // Every draw happens for every event, so the stream of decisions depends on the seed alone.
        let draws: [f64; 5] = std::array::from_fn(|_| self.rng.random_range(0.0..1.0));
        let record = Record {
            payload: encode(event),
            intended,
            own: true,
            fault: None,
        };
        if let Some((p, hold)) = self.spec.late
            && draws[0] < p
        {
            let mut late = record;
            event.fault = Some(Kind::Late.name().into());
            late.payload = encode(event);
            late.fault = Some(Kind::Late);
            event.fault = None;
            self.late.push((intended + hold, late));
            d.held = Some(Kind::Late);
        } else if self.held.is_none() && draws[1] < self.spec.reorder {
            let mut first = record;
            event.fault = Some(Kind::Reorder.name().into());
            first.payload = encode(event);
            first.fault = Some(Kind::Reorder);
            event.fault = None;
            self.held = Some(first);
            d.held = Some(Kind::Reorder);
        } else {
            d.now.push(record);
            // The swapped one follows the event after it.
            if let Some(h) = self.held.take() {
                d.now.push(h);
            }
        }
        // A held event is not copied: the copy would arrive before the original.
        if d.held.is_none() && draws[2] < self.spec.duplicate {
            event.fault = Some(Kind::Duplicate.name().into());
            d.now.push(Record {
                payload: encode(event),
                intended,
                own: false,
                fault: Some(Kind::Duplicate),
            });
            event.fault = None;
        }
        if draws[3] < self.spec.malformed {
            // Cut off mid-object: invalid JSON that still names its device, seq and fault.
            let bad = format!(
                "{{\"device_id\":\"{}\",\"seq\":{},\"fault\":\"malformed\",\"temperature\":",
                event.device_id, event.seq
            );
            d.now.push(Record {
                payload: bad.into_bytes(),
                intended,
                own: false,
                fault: Some(Kind::Malformed),
            });
        }
        if let Some((p, off)) = self.spec.burst_after_offline
            && draws[4] < p
        {
            d.offline_for = Some(off);
        }
        d
    }

    /// When the next late event is due.
    pub fn next_due(&self) -> Option<Instant> {
        self.late.iter().map(|(at, _)| *at).min()
    }

    /// The late events due by `now`, oldest first.
    pub fn due(&mut self, now: Instant) -> Vec<Record> {
        let (due, keep): (Vec<_>, Vec<_>) = std::mem::take(&mut self.late)
            .into_iter()
            .partition(|(at, _)| *at <= now);
        self.late = keep;
        due.into_iter().map(|(_, r)| r).collect()
    }

    /// Everything still held, at the end of the run (nothing is lost to an injected fault).
    pub fn release_all(&mut self) -> Vec<Record> {
        let mut out: Vec<Record> = std::mem::take(&mut self.late)
            .into_iter()
            .map(|(_, r)| r)
            .collect();
        out.extend(self.held.take());
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(seq: u64) -> Event {
        Event {
            device_id: "freezer1".into(),
            seq,
            ts: 1000,
            ..Default::default()
        }
    }

    fn json(e: &mut Event) -> Vec<u8> {
        e.to_json()
    }

    #[test]
    fn every_fault_is_marked_and_nothing_is_lost() {
        let spec = FaultSpec::parse("duplicate=1/4,reorder=1/5,late=1/6:1s,malformed=1/7").unwrap();
        let mut inj = Injector::new(spec, 7, 0);
        let t0 = Instant::now();
        let mut out = vec![];
        for seq in 1..=2000 {
            out.extend(inj.on_event(&mut event(seq), t0, &mut json).now);
        }
        out.extend(inj.release_all());
        let own: Vec<u64> = out
            .iter()
            .filter(|r| r.own)
            .map(|r| serde_json::from_slice::<Event>(&r.payload).unwrap().seq)
            .collect();
        let mut sorted = own.clone();
        sorted.sort();
        assert_eq!(
            sorted,
            (1..=2000).collect::<Vec<_>>(),
            "every event exactly once as its own record"
        );
        let count = |k: Kind| out.iter().filter(|r| r.fault == Some(k)).count();
        for (k, p) in [(Kind::Duplicate, 4.0), (Kind::Late, 6.0), (Kind::Malformed, 7.0)] {
            let expect = 2000.0 / p;
            let n = count(k) as f64;
            assert!((n - expect).abs() < expect * 0.35, "{k:?}: {n} vs {expect}");
        }
        assert!(count(Kind::Reorder) > 100);
        for r in &out {
            let text = String::from_utf8_lossy(&r.payload);
            match r.fault {
                Some(Kind::Malformed) => assert!(
                    serde_json::from_slice::<Event>(&r.payload).is_err()
                        && text.contains("\"fault\":\"malformed\"")
                ),
                Some(k) => assert_eq!(
                    serde_json::from_slice::<Event>(&r.payload)
                        .unwrap()
                        .fault
                        .as_deref(),
                    Some(k.name())
                ),
                None => assert!(
                    serde_json::from_slice::<Event>(&r.payload)
                        .unwrap()
                        .fault
                        .is_none()
                ),
            }
        }
        // A swapped pair: the held event comes right after the next one.
        let pos = out.iter().position(|r| r.fault == Some(Kind::Reorder)).unwrap();
        let seq = |r: &Record| serde_json::from_slice::<Event>(&r.payload).unwrap().seq;
        assert!(seq(&out[pos - 1]) > seq(&out[pos]));
    }

    #[test]
    fn late_events_wait_their_time_and_skew_is_fixed_per_device() {
        let spec = FaultSpec::parse("late=1/1:2s,skew=2s").unwrap();
        let mut inj = Injector::new(spec, 1, 3);
        let t0 = Instant::now();
        assert!(inj.on_event(&mut event(1), t0, &mut json).now.is_empty());
        assert_eq!(inj.next_due(), Some(t0 + Duration::from_secs(2)));
        assert!(inj.due(t0 + Duration::from_secs(1)).is_empty());
        assert_eq!(inj.due(t0 + Duration::from_secs(2)).len(), 1);
        let skews: Vec<i64> = (0..20).map(|i| Injector::new(spec, 1, i).skew_ms()).collect();
        assert!(skews.iter().all(|s| s.abs() <= 2000));
        assert!(
            skews.iter().collect::<std::collections::BTreeSet<_>>().len() > 10,
            "{skews:?}"
        );
        assert_eq!(Injector::new(spec, 1, 3).skew_ms(), inj.skew_ms(), "seeded");
    }
}
