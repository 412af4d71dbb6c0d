//! `freezer-fleet run` against a real mosquitto with mutual TLS and certificates made here.

mod common;

use std::collections::BTreeSet;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::*;

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as u64
}

#[test]
fn every_device_connects_with_its_own_certificate_and_publishes_gap_free() {
    let Setup { pki, broker, sub } = Setup::new(5);
    let t0 = now_ms();
    let mut args = certs_args(&pki, broker.port);
    args.extend(["--interval", "300ms", "--duration", "3s", "--seed", "7"].map(String::from));
    let (code, stderr, _) = run_to_end(&strs(&args), Duration::from_secs(30));
    let t1 = now_ms();
    assert_eq!(code, 0, "{stderr}");

    // The broker saw each device's own certificate (CN = device id).
    let users: BTreeSet<String> = broker.connected_users().into_iter().collect();
    for i in 1..=5 {
        assert!(
            users.contains(&format!("freezer{i}")),
            "freezer{i} not seen by the broker: {users:?}"
        );
    }

    // The one test that reads the human summary's words (report.rs has its golden test).
    let published = summary_number(&stderr, "published");
    let events = sub.wait_for(published as usize, Duration::from_secs(5));
    assert_eq!(events.len() as u64, published, "{stderr}");
    assert_eq!(summary_number(&stderr, "acknowledged"), published);
    assert!(stderr.contains("5 connected, 0 failed"), "{stderr}");
    for e in &events {
        let obj = e.as_object().unwrap();
        let keys: BTreeSet<&str> = obj.keys().map(String::as_str).collect();
        assert_eq!(
            keys,
            BTreeSet::from(["device_id", "seq", "ts", "temperature", "humidity"]),
            "{e}"
        );
        let ts = e["ts"].as_u64().unwrap();
        assert!(ts >= t0 && ts <= t1, "ts {ts} outside the run {t0}..{t1}");
        let t = e["temperature"].as_f64().unwrap();
        let h = e["humidity"].as_f64().unwrap();
        assert!((-25.0..=-10.0).contains(&t), "{e}");
        assert!((0.0..=100.0).contains(&h), "{e}");
    }
    let by_dev = seqs_by_device(&events);
    assert_eq!(by_dev.len(), 5, "{by_dev:?}");
    for (dev, seqs) in &by_dev {
        let expected: Vec<u64> = (1..=seqs.len() as u64).collect();
        assert_eq!(seqs, &expected, "{dev}: seq must be 1, 2, 3 … with no gap");
        assert!(
            seqs.len() >= 8,
            "{dev}: only {} events in 3 s at 300 ms",
            seqs.len()
        );
    }
}

#[test]
fn timer_rate_is_as_configured_and_devices_are_spread_over_the_interval() {
    let Setup { pki, broker, sub } = Setup::new(4);
    let mut args = certs_args(&pki, broker.port);
    args.extend(["--interval", "400ms", "--duration", "4s"].map(String::from));
    let (code, stderr, report) = run_report(&strs(&args), Duration::from_secs(30));
    assert_eq!(code, 0, "{stderr}");
    let events = sub.wait_for(
        num(&report, "/messages/published") as usize,
        Duration::from_secs(5),
    );
    let by_dev = seqs_by_device(&events);
    for (dev, seqs) in &by_dev {
        // 4 s at one event per 400 ms: 10, give or take the first and last tick.
        assert!((9..=11).contains(&seqs.len()), "{dev}: {} events", seqs.len());
    }
    // Spread: each device's first event falls in a different quarter of the interval.
    let mut firsts: Vec<u64> = by_dev
        .keys()
        .map(|d| {
            events
                .iter()
                .filter(|e| e["device_id"] == d.as_str())
                .map(|e| e["ts"].as_u64().unwrap())
                .min()
                .unwrap()
        })
        .collect();
    firsts.sort();
    for w in firsts.windows(2) {
        assert!(
            w[1] - w[0] >= 60,
            "devices publish in lock-step: first ts {firsts:?}"
        );
    }
}

#[test]
fn one_shared_certificate_with_an_id_prefix_and_qos0() {
    let pki = Pki::new(1);
    let broker = Mosquitto::start(&pki);
    let sub = Subscriber::start(&pki, broker.port, "plant/cold-room");
    let (cert, key) = pki.device_files("freezer1");
    let port = broker.port.to_string();
    let (code, stderr, report) = run_report(
        &[
            "run",
            "--endpoint",
            "127.0.0.1",
            "--port",
            &port,
            "--ca",
            pki.ca_pem().to_str().unwrap(),
            "--cert",
            cert.to_str().unwrap(),
            "--key",
            key.to_str().unwrap(),
            "--devices",
            "3",
            "--id-prefix",
            "cab-",
            "--topic",
            "plant/cold-room",
            "--qos",
            "0",
            "--interval",
            "250ms",
            "--duration",
            "1500ms",
        ],
        Duration::from_secs(30),
    );
    assert_eq!(code, 0, "{stderr}");
    let events = sub.wait_for(
        num(&report, "/messages/published") as usize,
        Duration::from_secs(5),
    );
    let ids: BTreeSet<String> = seqs_by_device(&events).into_keys().collect();
    assert_eq!(ids, BTreeSet::from(["cab-1", "cab-2", "cab-3"].map(String::from)));
    // Every client presented the one shared certificate: the three devices and the
    // pre-flight CONNECT (as the first device).
    let users = broker.connected_users();
    assert_eq!(users.iter().filter(|u| *u == "freezer1").count(), 4, "{users:?}");
    assert!(stderr.contains("n/a at QoS 0"), "{stderr}");
}

#[test]
fn enter_injects_exactly_one_event_an_id_injects_from_that_device_and_q_stops() {
    let Setup { pki, broker, sub } = Setup::new(3);
    let mut args = certs_args(&pki, broker.port);
    args.extend(["--interval", "0"].map(String::from));
    let mut fleet = Fleet::spawn(&strs(&args));
    assert!(
        fleet.wait_stderr("3 of 3 device(s) connected", Duration::from_secs(15)),
        "{}",
        fleet.stderr()
    );

    fleet.send("");
    let events = sub.wait_for(1, Duration::from_secs(5));
    std::thread::sleep(Duration::from_millis(500));
    let events_after = sub.events();
    assert_eq!(events_after.len(), 1, "one Enter, one event: {events_after:?}");
    assert_eq!(events[0]["device_id"], "freezer1");
    assert_eq!(events[0]["seq"], 1);
    assert!(
        fleet.wait_stderr("injected freezer1 seq=1", Duration::from_secs(2)),
        "{}",
        fleet.stderr()
    );

    fleet.send("freezer3");
    let events = sub.wait_for(2, Duration::from_secs(5));
    assert_eq!(events[1]["device_id"], "freezer3");
    assert_eq!(events[1]["seq"], 1);

    fleet.send("");
    let events = sub.wait_for(3, Duration::from_secs(5));
    assert_eq!(
        events[2]["device_id"], "freezer2",
        "Enter takes the next device in turn"
    );

    fleet.send("all");
    let events = sub.wait_for(6, Duration::from_secs(5));
    let mut last: Vec<(String, u64)> = events[3..]
        .iter()
        .map(|e| {
            (
                e["device_id"].as_str().unwrap().to_string(),
                e["seq"].as_u64().unwrap(),
            )
        })
        .collect();
    last.sort();
    assert_eq!(
        last,
        vec![
            ("freezer1".into(), 2),
            ("freezer2".into(), 2),
            ("freezer3".into(), 2)
        ],
        "all: one event from every device"
    );

    fleet.send("hello");
    assert!(fleet.wait_stderr("unknown command 'hello'", Duration::from_secs(2)));

    fleet.send("q");
    let (code, stderr, _) = fleet.finish(Duration::from_secs(15));
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stderr.contains("6 published, 6 acknowledged, 0 failed (6 injected)"),
        "{stderr}"
    );
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(sub.events().len(), 6);
}

#[test]
fn sigterm_stops_gracefully_with_the_summary() {
    let pki = Pki::new(2);
    let broker = Mosquitto::start(&pki);
    let mut args = certs_args(&pki, broker.port);
    args.extend(["--interval", "100ms", "--report", "-"].map(String::from));
    let fleet = Fleet::spawn(&strs(&args));
    assert!(
        fleet.wait_stderr("2 of 2 device(s) connected", Duration::from_secs(15)),
        "{}",
        fleet.stderr()
    );
    std::thread::sleep(Duration::from_millis(700));
    fleet.signal("TERM");
    let (code, stderr, stdout) = fleet.finish(Duration::from_secs(15));
    assert_eq!(code, 0, "{stderr}");
    assert!(stderr.contains("stopping (SIGTERM)"), "{stderr}");
    assert!(stderr.contains("freezer-fleet summary"), "{stderr}");
    let report = report_of(&stdout, &stderr);
    let published = num(&report, "/messages/published");
    assert!(published >= 6, "{stderr}");
    assert_eq!(
        num(&report, "/messages/acknowledged"),
        published,
        "drained before exit: {stderr}"
    );
    // The broker saw clean disconnects, not dropped connections: the two devices' and the
    // pre-flight CONNECT's.
    let log = broker.log_text();
    assert_eq!(
        log.matches("disconnected.").count() - log.matches("disconnected, ").count(),
        3,
        "{log}"
    );
}

#[test]
fn closed_stdin_keeps_the_timer_running_without_spinning() {
    let Setup { pki, broker, sub } = Setup::new(2);
    let mut args = certs_args(&pki, broker.port);
    args.extend(["--interval", "200ms", "--duration", "3s"].map(String::from));
    let mut fleet = Fleet::spawn(&strs(&args));
    fleet.close_stdin();
    std::thread::sleep(Duration::from_millis(2000));
    // CPU time so far, from /proc: a loop spinning on EOF would burn about 2 s of it.
    let stat = std::fs::read_to_string(format!("/proc/{}/stat", fleet.child.id())).unwrap();
    let fields: Vec<&str> = stat.rsplit(')').next().unwrap().split_whitespace().collect();
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    assert!(ticks < 60, "{ticks} clock ticks of CPU in 2 s: busy loop?");
    let (code, stderr, _) = fleet.finish(Duration::from_secs(15));
    assert_eq!(code, 0, "{stderr}");
    assert!(sub.wait_for(20, Duration::from_secs(5)).len() >= 20, "{stderr}");
}

#[test]
fn config_file_is_read_with_paths_relative_to_it_and_flags_override_it() {
    let Setup { pki, broker, sub } = Setup::new(3);
    let cfg = pki.path().join("fleet.toml");
    write(
        &cfg,
        &format!(
            "endpoint = \"localhost\"\nport = {}\nca = \"ca.pem\"\ncerts = \"devices\"\ndevices = 3\n\
             interval = \"200ms\"\nqos = 1\nduration = \"1s\"\nseed = 42\n",
            broker.port
        ),
    );
    let (code, stderr, report) = run_report(
        &["run", "--config", cfg.to_str().unwrap(), "--devices", "2"],
        Duration::from_secs(30),
    );
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(
        report["devices"],
        serde_json::json!({"target": 2, "connected": 2, "failed": 0})
    );
    let events = sub.wait_for(
        num(&report, "/messages/published") as usize,
        Duration::from_secs(5),
    );
    let ids: BTreeSet<String> = seqs_by_device(&events).into_keys().collect();
    assert_eq!(
        ids,
        BTreeSet::from(["freezer1".to_string(), "freezer2".to_string()])
    );
}

#[test]
fn the_same_seed_reproduces_the_readings() {
    let pki = Pki::new(2);
    let broker = Mosquitto::start(&pki);
    let readings = |seed: &str| {
        let sub = Subscriber::start(&pki, broker.port, "freezers");
        let mut args = certs_args(&pki, broker.port);
        args.extend(["--interval", "0", "--seed", seed].map(String::from));
        let mut fleet = Fleet::spawn(&strs(&args));
        assert!(fleet.wait_stderr("2 of 2 device(s) connected", Duration::from_secs(15)));
        for _ in 0..3 {
            fleet.send("all");
        }
        let events = sub.wait_for(6, Duration::from_secs(5));
        fleet.send("q");
        let (code, stderr, _) = fleet.finish(Duration::from_secs(15));
        assert_eq!(code, 0, "{stderr}");
        readings(&events)
    };
    let a = readings("1234");
    let b = readings("1234");
    let c = readings("999");
    assert_eq!(a.len(), 6);
    assert_eq!(a, b, "same seed, same readings");
    assert_ne!(a, c, "another seed, other readings");
}

#[test]
fn runtime_failures_are_reported_per_device_and_the_rest_keep_running() {
    let pki = Pki::new(3);
    // freezer2's certificate comes from a CA the broker does not trust.
    let stranger = Ca::new("another CA");
    let (cert, key) = stranger.client("freezer2");
    std::fs::remove_dir_all(pki.devices().join("freezer2")).unwrap();
    pki.write_device("freezer2", &cert, &key);
    let broker = Mosquitto::start(&pki);
    let mut args = certs_args(&pki, broker.port);
    args.extend(["--interval", "200ms", "--duration", "1500ms"].map(String::from));
    let (code, stderr, _) = run_to_end(&strs(&args), Duration::from_secs(30));
    assert_eq!(code, 0, "two devices ran: {stderr}");
    assert!(stderr.contains("2 connected, 1 failed (of 3)"), "{stderr}");
    // Named once; the device keeps trying (devices never give up by themselves).
    let named: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("freezer2: ") && l.contains("rejected the client certificate"))
        .collect();
    assert_eq!(named.len(), 1, "{stderr}");
    assert!(named[0].contains("retrying every --backoff-max"), "{stderr}");
    assert!(!stderr.contains("giving up"), "{stderr}");
}

#[test]
fn endpoint_problems_stop_the_run_before_any_device_connects() {
    let pki = Pki::new(2);
    let broker = Mosquitto::start(&pki);
    let other = Ca::new("freezer-fleet test CA");
    let other_ca = pki.path().join("other-ca.pem");
    write(&other_ca, &other.cert_pem);
    let stranger = Ca::new("stranger");
    let (scert, skey) = stranger.client("freezer1");
    let (scert_path, skey_path) = (pki.path().join("stranger.crt"), pki.path().join("stranger.key"));
    write(&scert_path, &scert);
    write(&skey_path, &skey);
    let with = |i: usize, v: &str| {
        let mut a = certs_args(&pki, broker.port);
        a[i] = v.to_string();
        a
    };
    let cases: Vec<(Vec<String>, Vec<&str>)> = vec![
        // The endpoint's certificate is not signed by --ca.
        (
            with(6, other_ca.to_str().unwrap()),
            vec!["--ca:", "not signed by the CA given with --ca"],
        ),
        // Nobody listens on the port.
        (
            certs_args(&pki, free_port()),
            vec!["--port", "connection refused"],
        ),
        // The host does not resolve.
        (
            with(2, "no-such-host.invalid"),
            vec!["--endpoint no-such-host.invalid", "unknown host"],
        ),
        // The broker does not accept this client certificate.
        (
            {
                let mut a = with(7, "--cert");
                a[8] = scert_path.display().to_string();
                a.extend(["--key".to_string(), skey_path.display().to_string()]);
                a
            },
            vec![
                "device freezer1",
                "stranger.crt",
                "rejected the client certificate",
            ],
        ),
    ];
    for (mut args, needles) in cases {
        args.extend(["--duration", "5s"].map(String::from));
        let (code, stderr, _) = run_to_end(&strs(&args), Duration::from_secs(30));
        assert_eq!(code, 2, "{needles:?}: {stderr}");
        for needle in needles {
            assert!(stderr.contains(needle), "expected '{needle}' in:\n{stderr}");
        }
        assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");
        assert!(!stderr.contains("panicked"), "{stderr}");
    }
    assert!(
        broker.connected_users().is_empty(),
        "no device got as far as CONNECT"
    );
}

#[test]
fn a_server_certificate_for_another_name_is_refused() {
    let pki = Pki::new(1);
    // The broker presents a certificate issued for another host: the name check must fail.
    let (cert, key) = pki.ca.server_for(&["broker.elsewhere.test"]);
    write(&pki.path().join("server.pem"), &cert);
    write(&pki.path().join("server.key"), &key);
    let broker = Mosquitto::start(&pki);
    let mut args = certs_args(&pki, broker.port);
    args.extend(["--duration", "5s"].map(String::from));
    let (code, stderr, _) = run_to_end(&strs(&args), Duration::from_secs(30));
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains("--endpoint: the server certificate of localhost"),
        "{stderr}"
    );
    assert!(stderr.contains("not valid for that host name"), "{stderr}");
    assert!(broker.connected_users().is_empty());
}
