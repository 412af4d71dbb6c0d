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

/// A fleet of 200 as a test sees it: this device's own session ends, the moments when 100
/// other devices dropped too, and whether the others get through.
struct Fleet {
    own: Vec<Instant>,
    shared: Vec<Instant>,
    through: bool,
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
    fn others_get_through(&self) -> bool {
        self.through
    }
}

fn end(at: Instant, stage: Stage) -> SessionEnd {
    let cause = match stage {
        Stage::AfterConnect => Cause::new(Kind::ClosedAfterConnect, "closed after CONNECT".into()),
        Stage::BeforeConnect => Cause::new(Kind::ClosedInHandshake, "closed in the handshake".into()),
        _ => closed(),
    };
    SessionEnd { at, cause, stage }
}

/// Feeds `ends` one a second apart; returns every decision.
fn run(stages: &[Stage], shared: &[usize]) -> Vec<Next> {
    run_in(stages, shared, true)
}

/// The same, with the rest of the fleet getting through (`through`) or not.
fn run_in(stages: &[Stage], shared: &[usize], through: bool) -> Vec<Next> {
    let t0 = Instant::now();
    let at = |i: usize| t0 + secs(i as u64);
    let fleet = Fleet {
        own: (0..stages.len()).map(at).collect(),
        shared: shared.iter().map(|&i| at(i)).collect(),
        through,
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

/// Every decision a plain retry: nothing named, nobody gave up.
fn none_suspected(decisions: &[Next]) -> bool {
    decisions
        .iter()
        .all(|n| matches!(n, Next::RetryAfter { named: None, .. }))
}

fn gave_up(n: &Next) -> Option<Kind> {
    match n {
        Next::GiveUp(c) => Some(c.kind),
        Next::RetryAfter { .. } => None,
    }
}

/// The refusal a decision names, if any.
fn failed(n: &Next) -> Option<&Cause> {
    match n {
        Next::RetryAfter {
            named: Some(Named::Failed(c)),
            ..
        } => Some(c),
        _ => None,
    }
}

fn wait(n: &Next) -> Duration {
    match n {
        Next::RetryAfter { wait, .. } => *wait,
        Next::GiveUp(c) => panic!("gave up: {c:?}"),
    }
}

#[test]
fn closes_after_each_publish_mean_the_policy_refuses_the_topic_named_once_and_retried() {
    let decisions = run(&[Stage::AfterPublish; 8], &[]);
    assert!(decisions.iter().all(|n| gave_up(n).is_none()), "never gives up");
    assert!(decisions[..3].iter().all(|n| failed(n).is_none()));
    let c = failed(&decisions[3]).expect("named at the fourth end");
    assert_eq!(c.kind, Kind::PublishNotAllowed);
    assert!(
        c.detail.contains("after each PUBLISH to 'freezers'"),
        "{}",
        c.detail
    );
    assert!(c.detail.contains("iot:Publish on topic/freezers"), "{}", c.detail);
    assert!(decisions[4..].iter().all(|n| failed(n).is_none()), "named once");
    // Once named, the device waits between half and all of --backoff-max.
    for n in &decisions[3..] {
        assert!(wait(n) >= secs(15) && wait(n) <= secs(30), "{n:?}");
    }
}

#[test]
fn closes_after_each_connect_mean_the_policy_refuses_the_client_id() {
    let decisions = run(&[Stage::AfterConnect; 4], &[]);
    let c = failed(&decisions[3]).expect("named");
    assert_eq!(c.kind, Kind::ConnectNotAllowed);
    assert!(
        c.detail.contains("iot:Connect for client id freezer7"),
        "{}",
        c.detail
    );
}

#[test]
fn a_link_that_closes_every_handshake_is_the_network_never_a_refusal() {
    // An accept-and-close load balancer: 40 attempts, each closed before the TLS handshake
    // completed. Nothing is named, nobody gives up, and the waits stay below --backoff-max.
    let decisions = run(&[Stage::BeforeConnect; 40], &[]);
    assert!(none_suspected(&decisions), "{decisions:?}");
    assert!(decisions.iter().all(|n| wait(n) <= secs(30)));
    assert!(
        decisions.iter().any(|n| wait(n) > secs(8)),
        "the backoff grows towards its cap"
    );
}

#[test]
fn closes_after_connect_while_no_one_gets_through_any_more_are_an_outage() {
    // The fleet had connected before and nobody is connected now: a front end that takes
    // CONNECT and closes while its brokers are down, not a policy.
    let decisions = run_in(&[Stage::AfterConnect; 10], &[], false);
    assert!(none_suspected(&decisions), "{decisions:?}");
    // A close right after PUBLISH in a session the server accepted is the server's all the same.
    let decisions = run_in(&[Stage::AfterPublish; 4], &[], false);
    assert_eq!(
        failed(&decisions[3]).map(|c| c.kind),
        Some(Kind::PublishNotAllowed)
    );
}

#[test]
fn short_sessions_alone_are_a_suspected_takeover_named_once_and_never_a_give_up() {
    let decisions = run(&[short(); 8], &[]);
    assert!(decisions.iter().all(|n| gave_up(n).is_none()));
    let named: Vec<&Cause> = decisions
        .iter()
        .filter_map(|n| match n {
            Next::RetryAfter {
                named: Some(Named::Suspected(c)),
                ..
            } => Some(c),
            _ => None,
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
        failed(&run(&[Stage::AfterPublish; 4], &all)[3]).map(|c| c.kind),
        Some(Kind::PublishNotAllowed)
    );
    assert_eq!(
        failed(&run(&[Stage::AfterConnect; 4], &all)[3]).map(|c| c.kind),
        Some(Kind::ConnectNotAllowed)
    );
}

#[test]
fn another_kind_of_end_in_between_breaks_a_streak() {
    let t0 = Instant::now();
    let fleet = Fleet {
        own: vec![],
        shared: vec![],
        through: true,
    };
    let mut p = Policy::new(secs(1), secs(30));
    let mut r = rng();
    let mut gave = 0;
    for i in 0..8u64 {
        let cause = if i % 3 == 2 {
            Cause::new(Kind::Refused, "refused".into())
        } else {
            Cause::new(Kind::ClosedAfterConnect, "closed after CONNECT".into())
        };
        let e = SessionEnd {
            at: t0 + secs(i),
            cause,
            stage: Stage::AfterConnect,
        };
        let n = p.after(e, ("f", "t"), &fleet, &mut r);
        gave += (gave_up(&n).is_some() || failed(&n).is_some()) as u32;
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
fn a_refusal_in_the_servers_own_words_is_named_at_once_and_retried_every_backoff_max() {
    let mut p = Policy::new(secs(1), secs(30));
    let rejected = Cause::new(Kind::ClientCertRejected, "x".into());
    let fleet = Fleet {
        own: vec![],
        shared: vec![],
        through: true,
    };
    let t0 = Instant::now();
    let mut r = rng();
    let decisions: Vec<Next> = (0..4)
        .map(|i| {
            let e = SessionEnd {
                at: t0 + secs(30 * i),
                cause: rejected.clone(),
                stage: Stage::BeforeConnect,
            };
            p.after(e, ("f1", "t"), &fleet, &mut r)
        })
        .collect();
    assert_eq!(failed(&decisions[0]), Some(&rejected));
    assert!(decisions[1..].iter().all(|n| failed(n).is_none()), "named once");
    assert!(decisions.iter().all(|n| wait(n) >= secs(15)), "{decisions:?}");
}

#[test]
fn give_up_after_stops_a_device_that_had_no_success_for_that_long() {
    let mut p = Policy::new(secs(1), secs(30)).give_up_after(Some(secs(5)));
    let fleet = Fleet {
        own: vec![],
        shared: vec![],
        through: false,
    };
    let t0 = Instant::now();
    p.attempting(t0);
    let mut r = rng();
    let mut at = t0;
    let mut decisions = Vec::new();
    loop {
        let n = p.after(end(at, Stage::BeforeConnect), ("f1", "t"), &fleet, &mut r);
        let stop = matches!(n, Next::GiveUp(_));
        decisions.push(n);
        if stop {
            break;
        }
        // The wait never runs past the deadline: the device gives up on time.
        assert!(at + wait(decisions.last().unwrap()) <= t0 + secs(5));
        at += wait(decisions.last().unwrap()).max(Duration::from_millis(1));
        assert!(at <= t0 + secs(6), "{decisions:?}");
    }
    let Some(Next::GiveUp(c)) = decisions.last() else {
        unreachable!()
    };
    assert_eq!(c.kind, Kind::ClosedInHandshake);
    assert!(
        c.detail.starts_with("no success for 5 s (--give-up-after)"),
        "{}",
        c.detail
    );
    // A success starts the clock again.
    let mut p = Policy::new(secs(1), secs(30)).give_up_after(Some(secs(5)));
    p.attempting(t0);
    p.on_connected(t0 + secs(4));
    let n = p.after(
        end(t0 + secs(6), Stage::BeforeConnect),
        ("f1", "t"),
        &fleet,
        &mut r,
    );
    assert!(gave_up(&n).is_none(), "{n:?}");
}

#[test]
fn refused_publishes_are_named_once_and_a_success_clears_them() {
    let mut p = Policy::new(secs(1), secs(30));
    let refusal = Cause::new(Kind::PublishNotAllowed, "PUBACK 0x87 not authorized".into());
    let named: Vec<Option<Cause>> = (0..6).map(|_| p.on_refused(&refusal, "freezers")).collect();
    assert!(named[..2].iter().all(Option::is_none));
    let c = named[2].as_ref().expect("named at the third");
    assert!(
        c.detail
            .starts_with("PUBACK 0x87 not authorized for each PUBLISH to 'freezers'")
    );
    assert!(named[3..].iter().all(Option::is_none), "named once");
    p.on_acked(Instant::now);
    assert!((0..3).filter_map(|_| p.on_refused(&refusal, "freezers")).count() == 1);
}
