//! Unit tests of the reconnect policy: each decision from a sequence of session ends.

use super::*;
use rand::SeedableRng;
use rand::rngs::Xoshiro256PlusPlus;

fn rng() -> Xoshiro256PlusPlus {
    Xoshiro256PlusPlus::seed_from_u64(7)
}
fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}
fn closed() -> Cause {
    Cause::new(Kind::ClosedByServer, "closed".into())
}

/// A fleet of 200 as a test sees it: this device's own session ends, and the moments when
/// 100 other devices dropped too.
struct Fleet {
    own: Vec<Instant>,
    shared: Vec<Instant>,
}

impl Neighbours for Fleet {
    fn drops_around(&self, at: Instant) -> u64 {
        let near = |t: &&Instant| within(**t, at, CORRELATION_WINDOW);
        let own = self.own.iter().filter(near).count() as u64;
        own + 100 * self.shared.iter().filter(near).count() as u64
    }
    fn fleet_size(&self) -> usize {
        200
    }
}

fn end(at: Instant, stage: Stage) -> SessionEnd {
    SessionEnd {
        at,
        cause: closed(),
        stage,
    }
}

/// Feeds `ends` one a second apart; returns every decision.
fn run(stages: &[Stage], shared: &[usize]) -> Vec<Next> {
    let t0 = Instant::now();
    let at = |i: usize| t0 + secs(i as u64);
    let fleet = Fleet {
        own: (0..stages.len()).map(at).collect(),
        shared: shared.iter().map(|&i| at(i)).collect(),
    };
    let mut p = Policy::new(secs(1), secs(30));
    let mut r = rng();
    stages
        .iter()
        .enumerate()
        .map(|(i, s)| p.after(end(at(i), *s), ("freezer7", "freezers"), &fleet, &mut r))
        .collect()
}

fn short() -> Stage {
    Stage::Connected {
        lasted: secs(2),
        acked: true,
    }
}

/// Every decision a plain retry: no suspicion named, nobody gave up.
fn none_suspected(decisions: &[Next]) -> bool {
    decisions
        .iter()
        .all(|n| matches!(n, Next::RetryAfter { suspicion: None, .. }))
}

fn gave_up(n: &Next) -> Option<Kind> {
    match n {
        Next::GiveUp(c) => Some(c.kind),
        Next::RetryAfter { .. } => None,
    }
}

#[test]
fn closes_after_each_publish_mean_the_policy_refuses_the_topic() {
    let decisions = run(&[Stage::AfterPublish; 4], &[]);
    assert_eq!(decisions[..3].iter().filter_map(gave_up).count(), 0);
    match &decisions[3] {
        Next::GiveUp(c) => {
            assert_eq!(c.kind, Kind::PublishNotAllowed);
            assert!(
                c.detail.contains("after each PUBLISH to 'freezers'"),
                "{}",
                c.detail
            );
            assert!(c.detail.contains("iot:Publish on topic/freezers"), "{}", c.detail);
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn closes_after_each_connect_mean_the_policy_refuses_the_client_id() {
    let decisions = run(&[Stage::AfterConnect; 4], &[]);
    assert_eq!(gave_up(&decisions[3]), Some(Kind::ConnectNotAllowed));
    let Next::GiveUp(c) = &decisions[3] else {
        unreachable!()
    };
    assert!(
        c.detail.contains("iot:Connect for client id freezer7"),
        "{}",
        c.detail
    );
}

#[test]
fn short_sessions_alone_are_a_suspected_takeover_named_once_and_never_a_give_up() {
    let decisions = run(&[short(); 8], &[]);
    assert!(decisions.iter().all(|n| gave_up(n).is_none()));
    let named: Vec<&Cause> = decisions
        .iter()
        .filter_map(|n| match n {
            Next::RetryAfter { suspicion, .. } => suspicion.as_ref(),
            Next::GiveUp(_) => None,
        })
        .collect();
    assert_eq!(named.len(), 1, "{decisions:?}");
    assert_eq!(named[0].kind, Kind::ClientIdInUse);
    assert!(named[0].detail.contains("client id freezer7 is probably in use"));
    // Once suspected, the device waits between half and all of --backoff-max.
    let Next::RetryAfter { wait, .. } = &decisions[7] else {
        unreachable!()
    };
    assert!(*wait >= secs(15) && *wait <= secs(30), "{wait:?}");
}

#[test]
fn short_sessions_shared_with_the_fleet_are_a_network_event_and_never_a_suspicion() {
    let all: Vec<usize> = (0..10).collect();
    let decisions = run(&[short(); 10], &all);
    assert!(none_suspected(&decisions), "{decisions:?}");
}

#[test]
fn a_policy_that_refuses_the_whole_fleet_at_once_is_still_named() {
    let all: Vec<usize> = (0..4).collect();
    assert_eq!(
        gave_up(&run(&[Stage::AfterPublish; 4], &all)[3]),
        Some(Kind::PublishNotAllowed)
    );
    assert_eq!(
        gave_up(&run(&[Stage::AfterConnect; 4], &all)[3]),
        Some(Kind::ConnectNotAllowed)
    );
}

#[test]
fn another_kind_of_end_in_between_breaks_a_streak() {
    let t0 = Instant::now();
    let fleet = Fleet {
        own: vec![],
        shared: vec![],
    };
    let mut p = Policy::new(secs(1), secs(30));
    let mut r = rng();
    let mut gave = 0;
    for i in 0..8u64 {
        let cause = if i % 3 == 2 {
            Cause::new(Kind::Refused, "refused".into())
        } else {
            closed()
        };
        let e = SessionEnd {
            at: t0 + secs(i),
            cause,
            stage: Stage::AfterConnect,
        };
        gave += gave_up(&p.after(e, ("f", "t"), &fleet, &mut r)).is_some() as u32;
    }
    assert_eq!(gave, 0);
}

#[test]
fn a_long_session_resets_the_backoff_and_the_streak() {
    let long = Stage::Connected {
        lasted: secs(60),
        acked: true,
    };
    let stages = [short(), short(), long, short(), short(), short()];
    let decisions = run(&stages, &[]);
    assert!(none_suspected(&decisions), "{decisions:?}");
}

#[test]
fn permanent_causes_give_up_at_once() {
    let mut p = Policy::new(secs(1), secs(30));
    let untrusted = Cause::new(Kind::ServerNotTrusted, "x".into());
    let e = SessionEnd {
        at: Instant::now(),
        cause: untrusted.clone(),
        stage: Stage::AfterConnect,
    };
    let fleet = Fleet {
        own: vec![],
        shared: vec![],
    };
    assert_eq!(
        p.after(e, ("f1", "t"), &fleet, &mut rng()),
        Next::GiveUp(untrusted)
    );
}
