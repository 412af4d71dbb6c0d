//! Freezers that behave and listen: the thermal model's fields, console verbs, the Device
//! Shadow (`--listen`) and commands, against a real mosquitto with mutual TLS.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

fn by_device(events: &[Value]) -> BTreeMap<String, Vec<Value>> {
    let mut m: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    for e in events {
        m.entry(e["device_id"].as_str().unwrap().to_string())
            .or_default()
            .push(e.clone());
    }
    m
}

fn text(p: &std::path::Path) -> String {
    p.display().to_string()
}

/// `command` as the monitor identity against `port`, plus `extra`.
fn command(pki: &Pki, port: u16, extra: &[&str]) -> Vec<String> {
    let mut v: Vec<String> = ["command", "--endpoint", "localhost", "--port", &port.to_string()]
        .map(String::from)
        .into();
    for (flag, path) in [
        ("--ca", pki.ca_pem()),
        ("--cert", pki.path().join("monitor.crt")),
        ("--key", pki.path().join("monitor.key")),
    ] {
        v.extend([flag.to_string(), text(&path)]);
    }
    v.extend(extra.iter().map(|s| s.to_string()));
    v
}

/// A fleet with `--listen` and `extra`, once each of its `n` devices has reported to its shadow
/// (the report follows the SUBSCRIBE on its connection, so it is subscribed).
fn listening_fleet(pki: &Pki, port: u16, n: usize, extra: &[&str], client: &str) -> (Fleet, Subscriber) {
    let reports = Subscriber::start_as(pki, port, "$aws/things/+/shadow/update", client);
    let mut args = certs_args(pki, port);
    args.push("--listen".into());
    args.extend(extra.iter().map(|s| s.to_string()));
    let fleet = Fleet::spawn(&strs(&args));
    assert_eq!(
        reports.wait_for(n, Duration::from_secs(20)).len(),
        n,
        "{}",
        fleet.stderr()
    );
    (fleet, reports)
}

/// Every event the subscriber got has the five usual keys and `extra`, nothing else.
fn assert_every_event_has_exactly(sub: &Subscriber, extra: &[&str]) {
    let expected: BTreeSet<String> = ["device_id", "seq", "ts", "temperature", "humidity"]
        .iter()
        .chain(extra)
        .map(|k| k.to_string())
        .collect();
    let events = sub.events();
    assert!(!events.is_empty());
    assert!(events.iter().all(|e| keys(e) == expected), "{:?}", events[0]);
}

fn keys(e: &Value) -> BTreeSet<String> {
    e.as_object().unwrap().keys().cloned().collect()
}

#[test]
fn a_shadow_delta_sets_the_setpoint_and_the_temperature_follows() {
    let Setup { pki, broker, sub } = Setup::new(3);
    let port = broker.port;
    let shadow2 = Subscriber::start_as(&pki, port, "$aws/things/freezer2/shadow/update", "test-shadow2");
    let shadow1 = Subscriber::start_as(&pki, port, "$aws/things/freezer1/shadow/update", "test-shadow1");
    let mut args = certs_args(&pki, port);
    // 600×: each 200 ms reading is 2 simulated minutes.
    args.extend(
        [
            "--listen",
            "--interval",
            "200ms",
            "--speed",
            "600",
            "--fields",
            "state,setpoint",
            "--duration",
            "60s",
            "--seed",
            "5",
        ]
        .map(String::from),
    );
    let mut fleet = Fleet::spawn(&strs(&args));

    // Each device reports its state on connect (after subscribing on the same connection).
    let first = shadow2.wait_for(1, Duration::from_secs(15));
    assert!(!first.is_empty(), "freezer2 never reported: {}", fleet.stderr());
    let reported = &first[0]["state"]["reported"];
    let before = reported["setpoint"].as_f64().unwrap();
    assert!((-19.5..=-16.5).contains(&before), "{first:?}");
    assert!(
        ["cooling", "idle", "defrost", "door_open", "fault"].contains(&reported["state"].as_str().unwrap()),
        "{first:?}"
    );
    assert!(shadow1.wait_for(1, Duration::from_secs(10)).len() == 1);

    publish(
        &pki,
        port,
        "$aws/things/freezer2/shadow/update/delta",
        r#"{"version":2,"state":{"setpoint":-25}}"#,
    );
    publish(
        &pki,
        port,
        "$aws/things/freezer1/shadow/update/delta",
        r#"{"version":7,"state":{"colour":"red"}}"#,
    );
    let changed_at = Instant::now();

    // freezer2 reports the new setpoint back.
    let reports = wait_until(Duration::from_secs(10), || {
        shadow2
            .events()
            .iter()
            .any(|r| r["state"]["reported"]["setpoint"].as_f64() == Some(-25.0))
    });
    assert!(reports.is_some(), "{:?}\n{}", shadow2.events(), fleet.stderr());
    // freezer1 refuses the unknown key, says so, keeps its setpoint and reports it back.
    assert!(
        fleet.wait_stderr(
            "freezer1: shadow delta refused: 'colour' is not a setting",
            Duration::from_secs(10)
        ),
        "{}",
        fleet.stderr()
    );

    // The temperature follows physically: not at once, but within an hour or so of simulated
    // time (6 s here), it is down near -25 °C.
    let reached = wait_until(Duration::from_secs(20), || {
        by_device(&sub.events())
            .get("freezer2")
            .is_some_and(|evs| evs.iter().any(|e| e["temperature"].as_f64().unwrap() <= -24.0))
    });
    let took = changed_at.elapsed();
    assert!(
        reached.is_some(),
        "freezer2 never got near -25 °C: {:?}",
        by_device(&sub.events()).get("freezer2")
    );
    assert!(
        took >= Duration::from_millis(600),
        "at once ({took:?}): not physical"
    );
    fleet.send("q");
    let (code, stderr, _) = fleet.finish(Duration::from_secs(30));
    assert_eq!(code, 0, "{stderr}");

    let devices = by_device(&sub.events());
    let f2 = &devices["freezer2"];
    let switched = f2
        .iter()
        .position(|e| e["setpoint"].as_f64() == Some(-25.0))
        .expect("events carry the new setpoint");
    // Before the change it regulated around its own setpoint, never down at -22 °C.
    assert!(
        f2[..switched]
            .iter()
            .all(|e| e["temperature"].as_f64().unwrap() > -22.0 && e["setpoint"].as_f64() == Some(before)),
        "{:?}",
        &f2[..switched]
    );
    assert!(
        f2[switched..]
            .iter()
            .all(|e| e["setpoint"].as_f64() == Some(-25.0))
    );
    // The other devices are unchanged: one setpoint each, all run long.
    for id in ["freezer1", "freezer3"] {
        let sps: BTreeSet<String> = devices[id].iter().map(|e| e["setpoint"].to_string()).collect();
        assert_eq!(sps.len(), 1, "{id}: {sps:?}");
    }
    // `--fields state,setpoint`: exactly the five usual keys and those two.
    assert_every_event_has_exactly(&sub, &["state", "setpoint"]);
    // freezer1's refused delta still got a report back (its state as it is).
    assert!(
        shadow1
            .events()
            .iter()
            .all(|r| r["state"]["reported"]["setpoint"].as_f64().unwrap() != -25.0)
    );
    assert!(shadow1.events().len() >= 2, "{:?}", shadow1.events());
    // The summary counts both deltas and the reports.
    assert!(stderr.contains("shadow 2 deltas"), "{stderr}");
}

#[test]
fn console_verbs_act_on_the_model_and_fields_say_so() {
    let Setup { pki, broker, sub } = Setup::new(3);
    let mut args = certs_args(&pki, broker.port);
    args.extend(
        [
            "--interval",
            "200ms",
            "--speed",
            "60",
            "--fields",
            "all",
            "--duration",
            "60s",
        ]
        .map(String::from),
    );
    let mut fleet = Fleet::spawn(&strs(&args));
    assert!(
        !sub.wait_for(6, Duration::from_secs(15)).is_empty(),
        "{}",
        fleet.stderr()
    );
    let sent_at = sub.events().len();
    for line in [
        "door freezer1",
        "defrost freezer3",
        "setpoint freezer2 -25",
        "setpoint freezer9 -2",
        "setpoint freezer2 20",
        "fix all",
    ] {
        fleet.send(line);
    }
    for needle in [
        "freezer1: door opened",
        "freezer3: defrost started",
        "freezer2: setpoint -25 °C",
        "console: 'freezer9' is not a device of this fleet",
        "freezer2: refused: setpoint 20 °C is outside -40 to -5 °C",
        "freezer3: repaired",
    ] {
        assert!(
            fleet.wait_stderr(needle, Duration::from_secs(10)),
            "{needle}:\n{}",
            fleet.stderr()
        );
    }
    // Let the model show it: a few readings later.
    let _ = sub.wait_for(sent_at + 30, Duration::from_secs(15));
    fleet.send("q");
    let (code, stderr, _) = fleet.finish(Duration::from_secs(30));
    assert_eq!(code, 0, "{stderr}");

    let after: Vec<Value> = sub.events()[sent_at..].to_vec();
    let devices = by_device(&after);
    assert!(
        devices["freezer1"]
            .iter()
            .any(|e| e["door_open"] == Value::Bool(true) && e["state"] == "door_open")
    );
    assert!(devices["freezer3"].iter().any(|e| e["state"] == "defrost"));
    assert!(
        devices["freezer2"]
            .iter()
            .any(|e| e["setpoint"].as_f64() == Some(-25.0))
    );
    // `--fields all`: the five usual keys and the model's four, nothing else.
    assert_every_event_has_exactly(&sub, &["state", "setpoint", "door_open", "alarm"]);
    // door + defrost + 2 setpoints + fix × 3 devices; the misspelt id never reached a device.
    assert!(stderr.contains("7 console actions"), "{stderr}");
}

#[test]
fn command_reaches_every_listening_device_and_counts_the_lost_when_none_listens() {
    let Setup { pki, broker, sub } = Setup::new(20);
    let port = broker.port;
    let (mut fleet, _reports) = listening_fleet(
        &pki,
        port,
        20,
        &["--interval", "300ms", "--fields", "state", "--duration", "60s"],
        "test-shadows",
    );
    let devices = text(&pki.devices());
    let defrost_all = |timeout: &str| {
        command(
            &pki,
            port,
            &[
                "--certs",
                &devices,
                "--to",
                "all",
                "--cmd",
                "defrost",
                "--timeout",
                timeout,
            ],
        )
    };
    let (code, stderr, report) = run_report(&strs(&defrost_all("3s")), Duration::from_secs(30));
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(
        (
            num(&report, "/sent"),
            num(&report, "/answered"),
            num(&report, "/lost")
        ),
        (20, 20, 0),
        "{report}"
    );
    assert_eq!(num(&report, "/latency_ms/round_trip/count"), 20);
    let p50 = report["latency_ms"]["round_trip"]["p50"].as_f64().unwrap();
    assert!(p50 > 0.0 && p50 < 3000.0, "{report}");
    assert!(
        stderr.contains("answered 20 (20 ok, 0 refused), lost 0"),
        "{stderr}"
    );
    let devices_answered: BTreeSet<&str> = report["commands"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["device"].as_str().unwrap())
        .collect();
    assert_eq!(devices_answered.len(), 20);

    // Each device took the defrost: its next readings say so.
    let seen = wait_until(Duration::from_secs(10), || {
        let d = by_device(&sub.events());
        d.len() == 20 && d.values().all(|evs| evs.iter().any(|e| e["state"] == "defrost"))
    });
    assert!(seen.is_some(), "not every device went into defrost");
    fleet.send("q");
    let (code, fleet_err, _) = fleet.finish(Duration::from_secs(30));
    assert_eq!(code, 0, "{fleet_err}");
    assert!(
        fleet_err.contains("commands  20 received, 20 answered ok, 0 refused"),
        "{fleet_err}"
    );

    // Nobody listening now: every command is lost, and the exit code says so.
    let (code, stderr, report) = run_report(&strs(&defrost_all("1s")), Duration::from_secs(30));
    assert_eq!(code, 1, "{stderr}");
    assert_eq!(
        (num(&report, "/sent"), num(&report, "/lost")),
        (20, 20),
        "{report}"
    );
    assert!(stderr.contains("is the fleet running with --listen"), "{stderr}");
}

#[test]
fn mqtt5_devices_listen_too_and_a_refused_command_is_named() {
    let Setup {
        pki,
        broker,
        sub: _sub,
    } = Setup::new(3);
    let port = broker.port;
    let (mut fleet, reports) = listening_fleet(
        &pki,
        port,
        3,
        &["--mqtt-version", "5", "--interval", "500ms", "--duration", "60s"],
        "test-shadows5",
    );
    let setpoint = |to: &str, value: &str| {
        command(
            &pki,
            port,
            &[
                "--to",
                to,
                "--cmd",
                "setpoint",
                "--value",
                value,
                "--timeout",
                "3s",
            ],
        )
    };
    let (code, stderr, report) = run_report(
        &strs(&setpoint("freezer1,freezer2,freezer3", "-22")),
        Duration::from_secs(30),
    );
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(
        (
            num(&report, "/answered"),
            num(&report, "/refused"),
            num(&report, "/lost")
        ),
        (3, 0, 0),
        "{report}"
    );
    // Each device reports its new setpoint to its shadow.
    assert!(
        wait_until(Duration::from_secs(10), || {
            reports
                .events()
                .iter()
                .filter(|r| r["state"]["reported"]["setpoint"].as_f64() == Some(-22.0))
                .count()
                >= 3
        })
        .is_some(),
        "{:?}",
        reports.events()
    );
    let (code, stderr, report) = run_report(&strs(&setpoint("freezer1", "5")), Duration::from_secs(30));
    assert_eq!(code, 1, "{stderr}");
    assert_eq!(
        (num(&report, "/answered"), num(&report, "/refused")),
        (1, 1),
        "{report}"
    );
    assert!(
        report["commands"][0]["error"]
            .as_str()
            .unwrap()
            .contains("setpoint 5 °C is outside -40 to -5 °C"),
        "{report}"
    );
    assert!(
        stderr.contains("refused   freezer1: setpoint 5 °C is outside"),
        "{stderr}"
    );
    fleet.send("q");
    let (code, fleet_err, _) = fleet.finish(Duration::from_secs(30));
    assert_eq!(code, 0, "{fleet_err}");
    assert!(
        fleet_err.contains("4 received, 3 answered ok, 1 refused"),
        "{fleet_err}"
    );
}
