//! Faults: network cuts, broker restarts, duplicate client ids, old TLS. Real mosquitto, real
//! processes, loopback only, every run bounded in time.

mod common;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use common::standin::{Refuse, RefusingServer};
use common::*;

/// Every event the report counts is acknowledged, failed or dropped.
fn assert_every_event_accounted(report: &serde_json::Value) {
    let n = |k: &str| num(report, &format!("/messages/{k}"));
    assert_eq!(
        n("taken"),
        n("acknowledged") + n("failed") + n("dropped"),
        "every event acknowledged or counted as lost: {report:#}"
    );
}

/// Every device's seqs, as a set, must cover 1..=its highest.
fn assert_no_gaps(events: &[serde_json::Value], devices: usize) {
    let by_dev = seqs_by_device(events);
    assert_eq!(by_dev.len(), devices, "events from every device");
    for (dev, seqs) in by_dev {
        let set: BTreeSet<u64> = seqs.iter().copied().collect();
        let max = *set.last().unwrap();
        let missing: Vec<u64> = (1..=max).filter(|s| !set.contains(s)).collect();
        assert!(
            missing.is_empty(),
            "{dev}: seqs {missing:?} never arrived (highest {max})"
        );
    }
}

#[test]
fn a_network_cut_loses_no_qos1_event_and_every_device_reconnects_within_the_ramp_up() {
    const N: usize = 100;
    const RAMP: u64 = 50;
    let Setup { pki, broker, sub } = Setup::new(N);
    let proxy = Proxy::start(broker.port);
    let mut args = certs_args(&pki, proxy.port);
    args.extend(
        [
            "--interval",
            "200ms",
            "--qos",
            "1",
            "--duration",
            "12s",
            "--ramp-up",
            "50",
            "--backoff-max",
            "2s",
            "--report",
            "-",
        ]
        .map(String::from),
    );
    let started = Instant::now();
    let mut fleet = Fleet::spawn(&strs(&args));
    fleet.close_stdin();
    assert!(
        fleet.wait_stderr("100 of 100 device(s) connected", Duration::from_secs(10)),
        "{}",
        fleet.stderr()
    );
    std::thread::sleep(Duration::from_secs(3).saturating_sub(started.elapsed()));
    proxy.cut();
    std::thread::sleep(Duration::from_secs(3));
    proxy.restore();
    let (code, stderr, stdout) = fleet.finish(Duration::from_secs(40));
    assert_eq!(code, 0, "{stderr}");
    let report = report_of(&stdout, &stderr);
    assert_eq!(num(&report, "/connects/reconnects"), N as u64, "{stderr}");
    assert_eq!(
        num(&report, "/connects/disconnects"),
        N as u64,
        "every connection was cut once: {stderr}"
    );
    let peak = num(&report, "/connects/peak_per_second");
    // Slots are 1/R apart; a timer may wake a millisecond late, moving one into the next second.
    assert!(
        peak <= RAMP + 1,
        "peak {peak} connection attempts/s with --ramp-up {RAMP}: {stderr}"
    );
    assert_every_event_accounted(&report);
    assert!(num(&report, "/messages/published") > 4000, "{stderr}");
    let acked = num(&report, "/messages/acknowledged");
    std::thread::sleep(Duration::from_millis(500));
    let events = sub.wait_for(acked as usize, Duration::from_secs(10));
    assert_no_gaps(&events, N);
}

#[test]
fn a_broker_killed_and_restarted_gets_every_device_back_within_the_ramp_up_and_counts_every_event() {
    const N: usize = 60;
    const RAMP: u64 = 30;
    let pki = Pki::new(N);
    let mut broker = Mosquitto::start(&pki);
    let mut args = certs_args(&pki, broker.port);
    args.extend(
        [
            "--interval",
            "250ms",
            "--duration",
            "14s",
            "--ramp-up",
            "30",
            "--backoff-max",
            "2s",
            "--offline-queue",
            "8",
            "--persistent-session",
            "--report",
            "-",
        ]
        .map(String::from),
    );
    let mut fleet = Fleet::spawn(&strs(&args));
    fleet.close_stdin();
    assert!(
        fleet.wait_stderr("60 of 60 device(s) connected", Duration::from_secs(10)),
        "{}",
        fleet.stderr()
    );
    std::thread::sleep(Duration::from_secs(1));
    broker.kill9();
    std::thread::sleep(Duration::from_secs(3));
    broker.restart();
    let (code, stderr, stdout) = fleet.finish(Duration::from_secs(40));
    assert_eq!(code, 0, "{stderr}");
    let report = report_of(&stdout, &stderr);
    assert_eq!(
        num(&report, "/connects/reconnects"),
        N as u64,
        "every device is back: {stderr}"
    );
    let peak = num(&report, "/connects/peak_per_second");
    assert!(peak <= RAMP + 1, "peak {peak}/s with --ramp-up {RAMP}: {stderr}");
    let dropped = num(&report, "/messages/dropped");
    assert!(
        dropped > 0,
        "3 s offline at 4 events/s overflows a queue of 8: {stderr}"
    );
    assert_eq!(
        num(&report, "/errors/offline queue full (--offline-queue)"),
        dropped,
        "{report:#}"
    );
    assert_every_event_accounted(&report);
    // Clean session off: the broker logs c0 for the devices.
    let log = broker.log_text();
    assert!(
        log.lines()
            .any(|l| l.contains("as freezer1 ") && l.contains("c0,")),
        "{log}"
    );
}

#[test]
fn two_processes_with_the_same_client_id_are_reported_by_name() {
    let pki = Pki::new(1);
    let broker = Mosquitto::start(&pki);
    let (cert, key) = pki.device_files("freezer1");
    let port = broker.port.to_string();
    let ca = pki.ca_pem();
    let args = [
        "run",
        "--endpoint",
        "localhost",
        "--port",
        &port,
        "--ca",
        ca.to_str().unwrap(),
        "--cert",
        cert.to_str().unwrap(),
        "--key",
        key.to_str().unwrap(),
        "--id-prefix",
        "cabinet",
        "--devices",
        "1",
        "--interval",
        "500ms",
        "--duration",
        "40s",
        "--backoff-max",
        "3s",
    ];
    let mut a = Fleet::spawn(&args);
    assert!(
        a.wait_stderr("1 of 1 device(s) connected", Duration::from_secs(10)),
        "{}",
        a.stderr()
    );
    let started = Instant::now();
    let mut b = Fleet::spawn(&args);
    let needle = "client id cabinet1 is probably in use by another connection";
    let found = wait_until(Duration::from_secs(20), || {
        a.stderr().contains(needle) || b.stderr().contains(needle)
    });
    let took = started.elapsed();
    std::thread::sleep(Duration::from_secs(2));
    a.send("q");
    b.send("q");
    let (a_code, a_err, _) = a.finish(Duration::from_secs(40));
    let (b_code, b_err, _) = b.finish(Duration::from_secs(40));
    assert!(
        found.is_some(),
        "no take-over report in 20 s:\nA:\n{a_err}\nB:\n{b_err}"
    );
    assert!(
        took < Duration::from_secs(15),
        "reported after {took:?}\nA:\n{a_err}\nB:\n{b_err}"
    );
    let reporter = if a_err.contains(needle) { &a_err } else { &b_err };
    // A suspicion, not a verdict: the device kept trying (every --backoff-max) and the run ended
    // as any other, with the suspicion in the summary.
    assert_eq!((a_code, b_code), (0, 0), "A:\n{a_err}\nB:\n{b_err}");
    assert!(
        reporter.contains("suspected: client id in use: 1 device(s) (cabinet1)"),
        "{reporter}"
    );
    assert!(!reporter.contains("giving up"), "{reporter}");
}

#[test]
fn a_server_offering_only_tls_1_1_or_1_0_is_refused_by_name() {
    let pki = Pki::new(1);
    for flag in ["-tls1_1", "-tls1"] {
        let server = OldTls::start(&pki, flag);
        let mut args = certs_args(&pki, server.port);
        args.extend(["--duration", "5s"].map(String::from));
        let (code, stderr, _) = run_to_end(&strs(&args), Duration::from_secs(20));
        assert_eq!(code, 2, "{flag}: {stderr}");
        assert!(stderr.contains("--endpoint"), "{stderr}");
        assert!(
            stderr.contains("TLS 1.0/1.1") && stderr.contains("requires TLS 1.2 or newer"),
            "{stderr}"
        );
    }
}

#[test]
fn a_flapping_network_is_not_a_duplicate_client_id_and_loses_nothing() {
    const N: usize = 200;
    let Setup { pki, broker, sub } = Setup::new(N);
    let proxy = Proxy::start(broker.port);
    let mut args = certs_args(&pki, proxy.port);
    let flags = [
        "--interval",
        "1s",
        "--duration",
        "68s",
        "--backoff-max",
        "2s",
        "--report",
        "-",
    ];
    args.extend(flags.map(String::from));
    let mut fleet = Fleet::spawn(&strs(&args));
    fleet.close_stdin();
    assert!(
        fleet.wait_stderr("200 of 200 device(s) connected", Duration::from_secs(20)),
        "{}",
        fleet.stderr()
    );
    // For a minute: every connection cut every 6 s (new ones refused for 200 ms), and single
    // connections killed at random twice a second in between.
    let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
    let flapping = Instant::now();
    let mut next_cut = flapping + Duration::from_secs(6);
    while flapping.elapsed() < Duration::from_secs(60) {
        std::thread::sleep(Duration::from_millis(500));
        if Instant::now() >= next_cut {
            proxy.cut();
            std::thread::sleep(Duration::from_millis(200));
            proxy.restore();
            next_cut += Duration::from_secs(6);
        } else {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            proxy.kill_one(seed as usize);
        }
    }
    let (code, stderr, stdout) = fleet.finish(Duration::from_secs(40));
    assert_eq!(code, 0, "{stderr}");
    assert!(!stderr.contains("in use by another connection"), "{stderr}");
    let report = report_of(&stdout, &stderr);
    assert_eq!(report["device_failures"], serde_json::json!({}), "{report:#}");
    assert_eq!(report["suspected"], serde_json::json!({}), "{report:#}");
    assert!(
        num(&report, "/connects/disconnects") >= 9 * N as u64,
        "{report:#}"
    );
    assert_eq!(num(&report, "/messages/dropped"), 0, "{report:#}");
    assert_eq!(num(&report, "/messages/failed"), 0, "{report:#}");
    assert_every_event_accounted(&report);
    let acked = num(&report, "/messages/acknowledged");
    let events = sub.wait_for(acked as usize, Duration::from_secs(20));
    assert_no_gaps(&events, N);
    let distinct: BTreeSet<(String, u64)> = events
        .iter()
        .map(|e| {
            (
                e["device_id"].as_str().unwrap().to_string(),
                e["seq"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(distinct.len() as u64, acked, "every acknowledged event arrived");
}

/// Runs `pki`'s devices against a stand-in that refuses as IoT Core does; returns the exit
/// code, stderr and report, and checks the attempts stayed within the gates.
fn against_refusing_server(refuse: Refuse) -> (i32, String, serde_json::Value) {
    let pki = Pki::new(3);
    let server = RefusingServer::start(&pki, refuse);
    let mut args = certs_args(&pki, server.port);
    args.extend(["--interval", "300ms", "--duration", "10s", "--ramp-up", "10"].map(String::from));
    let started = Instant::now();
    let (code, stderr, report) = run_report(&strs(&args), Duration::from_secs(60));
    assert!(
        started.elapsed() >= Duration::from_secs(10),
        "the devices kept trying to the end of the run: {stderr}"
    );
    assert!(!stderr.contains("giving up"), "{stderr}");
    assert!(stderr.contains("retrying every --backoff-max"), "{stderr}");
    assert!(!stderr.contains("in use by another connection"), "{stderr}");
    // No reconnect storm: one attempt a second per client id, at most --ramp-up a second. The
    // first CONNECT as freezer1 is the pre-flight's, before the fleet starts.
    let connects = server.connects();
    for id in ["freezer1", "freezer2", "freezer3"] {
        let skip = usize::from(id == "freezer1");
        let times: Vec<Instant> = connects
            .iter()
            .filter(|(c, _)| c == id)
            .map(|(_, t)| *t)
            .skip(skip)
            .collect();
        assert!(
            (2..=6).contains(&times.len()),
            "{id}: {} attempts: {stderr}",
            times.len()
        );
        for w in times.windows(2) {
            assert!(
                w[1] - w[0] >= Duration::from_millis(990),
                "{id}: attempts {:?} apart",
                w[1] - w[0]
            );
        }
    }
    assert!(num(&report, "/connects/peak_per_second") <= 11, "{report:#}");
    (code, stderr, report)
}

#[test]
fn a_server_that_closes_after_each_publish_is_named_a_policy_refusal() {
    let (code, stderr, report) = against_refusing_server(Refuse::AfterPublish);
    assert_eq!(code, 1, "every device failed: {stderr}");
    let refused = &report["device_failures"]["publish not allowed by policy"];
    assert_eq!(refused["count"], 3, "{report:#}");
    let why = refused["example"].as_str().unwrap();
    assert!(
        why.contains("closes the connection after each PUBLISH to 'freezers'"),
        "{why}"
    );
    assert!(
        why.contains("does not allow iot:Publish on topic/freezers"),
        "{why}"
    );
    assert!(
        stderr.contains("failed: publish not allowed by policy: 3 device(s)"),
        "{stderr}"
    );
}

#[test]
fn a_server_that_closes_after_each_connect_is_named_a_policy_refusal() {
    let (code, stderr, report) = against_refusing_server(Refuse::AfterConnect);
    assert_eq!(code, 1, "no device could connect: {stderr}");
    let refused = &report["device_failures"]["connect not allowed by policy"];
    assert_eq!(refused["count"], 3, "{report:#}");
    let why = refused["example"].as_str().unwrap();
    assert!(
        why.contains("does not allow iot:Connect for client id freezer"),
        "{why}"
    );
}

#[test]
fn a_connack_refusal_stops_the_run_at_the_pre_flight_check_naming_the_device() {
    let pki = Pki::new(3);
    let server = RefusingServer::start(&pki, Refuse::NotAuthorized);
    let mut args = certs_args(&pki, server.port);
    args.extend(["--interval", "1s", "--duration", "30s"].map(String::from));
    let started = Instant::now();
    let (code, stderr, _) = run_to_end(&strs(&args), Duration::from_secs(30));
    assert_eq!(code, 2, "{stderr}");
    assert!(started.elapsed() < Duration::from_secs(10), "{stderr}");
    let line = stderr.lines().find(|l| l.contains("error")).unwrap_or_default();
    assert!(
        line.contains("device freezer1 (") && line.contains("not authorized") && line.contains("iot:Connect"),
        "{stderr}"
    );
    // One CONNECT, the pre-flight's: no device started.
    assert_eq!(server.connects().len(), 1, "{stderr}");
}

#[test]
fn under_the_aws_iot_profile_the_pre_flight_connect_keeps_a_second_from_the_devices_own() {
    let pki = Pki::new(2);
    let server = RefusingServer::start(&pki, Refuse::AfterPublish);
    let mut args = certs_args(&pki, server.port);
    let flags = ["--profile", "aws-iot", "--interval", "1s", "--duration", "3s"];
    args.extend(flags.map(String::from));
    let (_, stderr, _) = run_to_end(&strs(&args), Duration::from_secs(30));
    let times: Vec<Instant> = server
        .connects()
        .into_iter()
        .filter(|(id, _)| id == "freezer1")
        .map(|(_, t)| t)
        .collect();
    assert!(times.len() >= 2, "the pre-flight's and the device's: {stderr}");
    assert!(
        times[1] - times[0] >= Duration::from_millis(990),
        "{:?} apart: {stderr}",
        times[1] - times[0]
    );
}
