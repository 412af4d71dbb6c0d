//! Outages of every shape, ridden out: a link that accepts and closes, resets, or cuts the TLS
//! handshake half way for 40 s, a broker that answers nothing for 40 s, and the fleet itself
//! stopped for 30 s. Real mosquitto with mutual TLS, every device its own certificate, a real
//! subscriber counting every seq; a stand-in proxy only for the fault. Loopback only, each run
//! bounded in time.

mod common;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use common::*;

/// Every device's seqs arrived, 1..=its highest, none missing.
fn assert_every_seq(events: &[serde_json::Value], devices: usize) {
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

/// Nothing lost, nothing blamed on the devices: no device failed or suspected, no event
/// dropped or failed, and the subscriber saw every acknowledged event.
fn assert_nothing_lost(report: &serde_json::Value, sub: &Subscriber, devices: usize, stderr: &str) {
    assert_eq!(report["device_failures"], serde_json::json!({}), "{stderr}");
    assert_eq!(report["suspected"], serde_json::json!({}), "{stderr}");
    assert_eq!(num(report, "/messages/dropped"), 0, "{report:#}");
    assert_eq!(num(report, "/messages/failed"), 0, "{report:#}");
    assert!(!stderr.contains("giving up"), "{stderr}");
    assert!(!stderr.contains("not allowed by policy"), "{stderr}");
    assert!(!stderr.contains("in use by another connection"), "{stderr}");
    let acked = num(report, "/messages/acknowledged");
    assert_eq!(acked, num(report, "/messages/taken"), "{report:#}");
    let events = sub.wait_for(acked as usize, Duration::from_secs(20));
    assert_every_seq(&events, devices);
}

/// The fleet of `pki` against `port` with `flags` and the JSON report on stdout, stdin closed.
fn spawn(pki: &Pki, port: u16, flags: &[&str]) -> Fleet {
    let mut args = certs_args(pki, port);
    args.extend(flags.iter().map(|f| f.to_string()));
    args.extend(["--report", "-"].map(String::from));
    let mut fleet = Fleet::spawn(&strs(&args));
    fleet.close_stdin();
    fleet
}

/// Waits until all `n` devices are connected.
fn wait_connected(fleet: &Fleet, n: usize) {
    let line = format!("{n} of {n} device(s) connected");
    assert!(
        fleet.wait_stderr(&line, Duration::from_secs(15)),
        "{}",
        fleet.stderr()
    );
}

/// 100 devices at QoS 1, one event a second each, `--backoff-max 10s`, for 70 s, behind a proxy
/// that goes down as `how` says from 15 s to 55 s.
fn ride_out(how: Down, cause: &str) {
    const N: usize = 100;
    const BACKOFF_MAX: f64 = 10.0;
    let Setup { pki, broker, sub } = Setup::new(N);
    let proxy = Proxy::start(broker.port);
    let flags = [
        "--interval",
        "1s",
        "--qos",
        "1",
        "--backoff-max",
        "10s",
        "--duration",
        "70s",
    ];
    let started = Instant::now();
    let fleet = spawn(&pki, proxy.port, &flags);
    wait_connected(&fleet, N);
    std::thread::sleep(Duration::from_secs(15).saturating_sub(started.elapsed()));
    proxy.go_down(how);
    std::thread::sleep(Duration::from_secs(40));
    proxy.restore();
    let (code, stderr, stdout) = fleet.finish(Duration::from_secs(60));
    assert_eq!(code, 0, "{how:?}: {stderr}");
    let report = report_of(&stdout, &stderr);
    // The outage as the report tells it: one, every device down, all back within
    // --backoff-max (there is no --ramp-up) of the link's return.
    let o = &report["outages"];
    assert_eq!(o["episodes"], 1, "{how:?}: {o:#}");
    assert_eq!(o["devices_down"], N as u64, "{how:?}: {o:#}");
    assert_eq!(o["still_down"], 0, "{how:?}: {o:#}");
    let longest = o["longest_s"].as_f64().unwrap();
    assert!(
        (40.0..=40.0 + BACKOFF_MAX + 1.5).contains(&longest),
        "{how:?}: every device back within --backoff-max of the link's return: {o:#}"
    );
    assert!(o["recovery_s"].as_f64().unwrap() <= BACKOFF_MAX + 1.5, "{o:#}");
    // About 40 events per device waited out the outage, and are counted as having waited.
    assert!(num(&report, "/outages/waited_ms/count") >= 35 * N as u64, "{o:#}");
    assert!(o["waited_ms"]["max"].as_f64().unwrap() >= 35_000.0, "{o:#}");
    // Named as the network, in the report and the summary.
    assert!(
        num(&report, &format!("/connects/failed/{cause}")) >= N as u64,
        "{how:?}: {:#}",
        report["connects"]
    );
    assert!(
        stderr.contains(&format!("failed attempts: {cause}: "))
            && stderr.contains("(the network or the endpoint)"),
        "{how:?}: {stderr}"
    );
    assert!(stderr.contains("outages   1 over"), "{stderr}");
    assert_nothing_lost(&report, &sub, N, &stderr);
}

#[test]
fn a_link_that_accepts_and_closes_for_40_s_is_ridden_out_and_named_the_network() {
    ride_out(Down::AcceptClose, "connection closed during the TLS handshake");
}

#[test]
fn a_link_that_resets_every_connection_for_40_s_is_ridden_out() {
    ride_out(Down::Reset, "connection closed during the TLS handshake");
}

#[test]
fn a_tls_handshake_cut_half_way_for_40_s_is_ridden_out() {
    ride_out(Down::CutHandshake, "connection closed during the TLS handshake");
}

#[test]
fn a_broker_that_answers_nothing_for_40_s_is_ridden_out() {
    // Half the fleet is connected when the broker stops; the other half tries to connect
    // meanwhile, its TLS handshakes unanswered.
    const N: usize = 100;
    let Setup { pki, broker, sub } = Setup::new(N);
    let flags = [
        "--interval",
        "1s",
        "--ramp-up",
        "10",
        "--backoff-max",
        "10s",
        "--duration",
        "70s",
    ];
    let fleet = spawn(&pki, broker.port, &flags);
    // --ramp-up 10: about half the fleet is connected 5 s in.
    std::thread::sleep(Duration::from_secs(5));
    broker.signal("STOP");
    std::thread::sleep(Duration::from_secs(40));
    broker.signal("CONT");
    let (code, stderr, stdout) = fleet.finish(Duration::from_secs(60));
    assert_eq!(code, 0, "{stderr}");
    let report = report_of(&stdout, &stderr);
    assert_eq!(num(&report, "/devices/connected"), N as u64, "{stderr}");
    assert!(
        num(&report, "/connects/failed/timeout") > 0,
        "{:#}",
        report["connects"]
    );
    assert!(stderr.contains("failed attempts: timeout: "), "{stderr}");
    // The stall shows as latency, measured from each event's intended time.
    assert!(
        report["latency_ms"]["puback"]["max"].as_f64().unwrap() >= 30_000.0,
        "{:#}",
        report["latency_ms"]
    );
    assert_nothing_lost(&report, &sub, N, &stderr);
}

#[test]
fn a_fleet_stopped_for_30_s_like_a_closed_laptop_lid_loses_nothing_and_counts_the_wait() {
    const N: usize = 20;
    let Setup { pki, broker, sub } = Setup::new(N);
    let flags = ["--interval", "1s", "--keep-alive", "30s", "--duration", "50s"];
    let fleet = spawn(&pki, broker.port, &flags);
    wait_connected(&fleet, N);
    std::thread::sleep(Duration::from_secs(5));
    fleet.signal("STOP");
    std::thread::sleep(Duration::from_secs(30));
    fleet.signal("CONT");
    let (code, stderr, stdout) = fleet.finish(Duration::from_secs(60));
    assert_eq!(code, 0, "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    let report = report_of(&stdout, &stderr);
    // The events due while stopped were taken late and counted as late: ~30 s of lag.
    let lag = report["latency_ms"]["lag"]["max"].as_f64().unwrap();
    assert!(lag >= 28_000.0, "{:#}", report["latency_ms"]);
    assert!(num(&report, "/messages/taken") >= 45 * N as u64, "{report:#}");
    assert_nothing_lost(&report, &sub, N, &stderr);
    // Every device is connected at the end of the run (kept, or made again).
    let rows = report["timeline"].as_array().unwrap();
    let last = rows.iter().rev().find(|r| r["stage"] != "drain").unwrap();
    assert_eq!(last["devices_connected"], N as u64, "{last:#}");
}

#[test]
fn give_up_after_stops_every_device_on_time_and_names_why() {
    const N: usize = 10;
    let Setup { pki, broker, .. } = Setup::new(N);
    let proxy = Proxy::start(broker.port);
    proxy.go_down(Down::AcceptClose);
    let mut args = certs_args(&pki, proxy.port);
    let flags = ["--interval", "1s", "--give-up-after", "5s", "--duration", "60s"];
    args.extend(flags.map(String::from));
    let started = Instant::now();
    let (code, stderr, report) = run_report(&strs(&args), Duration::from_secs(60));
    let took = started.elapsed();
    assert_eq!(code, 1, "{stderr}");
    assert!(
        took < Duration::from_secs(15),
        "every device gave up after 5 s: {took:?} {stderr}"
    );
    let gave_up = &report["device_failures"]["connection closed during the TLS handshake"];
    assert_eq!(gave_up["count"], N as u64, "{report:#}");
    assert!(
        gave_up["example"]
            .as_str()
            .unwrap()
            .starts_with("no success for 5 s (--give-up-after)"),
        "{gave_up:#}"
    );
    assert!(
        stderr.contains("none of the 10 device(s) could connect"),
        "{stderr}"
    );
}
