//! Deliberate data faults (`--faults`): what the fleet injects is counted in its report, and
//! the watcher, a separate process on the same mosquitto, counts exactly the same.

mod common;

use std::time::Duration;

use common::*;

/// The watcher's "injected by --faults" line: duplicates, reordered, late, malformed.
fn injected_line(table: &str) -> [u64; 4] {
    let line = table
        .lines()
        .find(|l| l.starts_with("injected by --faults"))
        .unwrap_or_else(|| panic!("no injected line in:\n{table}"));
    let nums: Vec<u64> = line
        .split(|c: char| !c.is_ascii_digit())
        .filter(|w| !w.is_empty())
        .map(|w| w.parse().unwrap())
        .collect();
    nums.try_into().unwrap_or_else(|_| panic!("{line}"))
}

/// The watcher's total row: received, missing, duplicates, out-of-order.
fn total_row(table: &str) -> [u64; 4] {
    let row = table
        .lines()
        .find(|l| l.starts_with("total"))
        .expect("a total row");
    let nums: Vec<u64> = row
        .split_whitespace()
        .skip(2)
        .take(4)
        .map(|w| w.parse().unwrap())
        .collect();
    nums.try_into().unwrap()
}

#[test]
fn the_watcher_counts_exactly_the_faults_the_report_says_were_injected() {
    let pki = Pki::new(10);
    let broker = Mosquitto::start(&pki);
    let port = broker.port.to_string();
    let (ca, cert, key) = (
        pki.ca_pem().display().to_string(),
        pki.path().join("monitor.crt").display().to_string(),
        pki.path().join("monitor.key").display().to_string(),
    );
    let watcher = Fleet::spawn(&[
        "watch",
        "--endpoint",
        "localhost",
        "--port",
        &port,
        "--ca",
        &ca,
        "--cert",
        &cert,
        "--key",
        &key,
        "--client-id",
        "test-watch",
        "--duration",
        "60s",
    ]);
    assert!(
        watcher.wait_stderr("watching 'freezers'", Duration::from_secs(15)),
        "{}",
        watcher.stderr()
    );

    let mut args = certs_args(&pki, broker.port);
    args.extend(
        [
            "--interval",
            "20ms",
            "--count",
            "100",
            "--seed",
            "11",
            "--faults",
            "duplicate=1/10,reorder=1/20,late=1/50:300ms,malformed=1/25",
        ]
        .map(String::from),
    );
    let (code, stderr, report) = run_report(&strs(&args), Duration::from_secs(60));
    assert_eq!(code, 0, "{stderr}");
    let f = &report["faults"];
    let (dup, reo, late, bad) = (
        num(f, "/duplicate"),
        num(f, "/reorder"),
        num(f, "/late"),
        num(f, "/malformed"),
    );
    // About 100, 50, 20 and 40 of 1,000 events.
    assert!(
        (60..=140).contains(&dup)
            && (25..=80).contains(&reo)
            && (5..=40).contains(&late)
            && (20..=65).contains(&bad),
        "{f}"
    );
    assert!(
        stderr.contains(&format!(
            "faults    injected on purpose: {dup} duplicates, {reo} reordered, {late} late, {bad} malformed"
        )),
        "{stderr}"
    );
    // Every record written and acknowledged: 1,000 events plus the duplicates and malformed ones.
    assert_eq!(
        num(&report, "/messages/acknowledged"),
        1000 + dup + bad,
        "{report}"
    );

    // The watcher has everything within a second; SIGINT prints its table.
    std::thread::sleep(Duration::from_secs(1));
    watcher.signal("INT");
    let (code, werr, table) = watcher.finish(Duration::from_secs(20));
    assert_eq!(code, 0, "{werr}");
    assert_eq!(injected_line(&table), [dup, reo, late, bad], "{table}");
    // received counts every parsed record: the 1,000 events and the marked duplicates.
    assert_eq!(
        total_row(&table),
        [1000 + dup, 0, 0, 0],
        "nothing missing, no unexplained duplicate or reordering:\n{table}"
    );
}

#[test]
fn offline_bursts_and_clock_skew_lose_nothing_and_are_counted() {
    let Setup { pki, broker, sub } = Setup::new(5);
    let mut args = certs_args(&pki, broker.port);
    args.extend(
        [
            "--interval",
            "50ms",
            "--duration",
            "5s",
            "--seed",
            "4",
            "--faults",
            "skew=±5s,burst-after-offline=1/40:700ms",
        ]
        .map(String::from),
    );
    let t0 = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    let (code, stderr, report) = run_report(&strs(&args), Duration::from_secs(60));
    assert_eq!(code, 0, "{stderr}");
    let f = &report["faults"];
    assert_eq!(num(f, "/skewed_devices"), 5, "{f}");
    let bursts = num(f, "/bursts");
    assert!(bursts >= 3, "{f}");
    // Each offline spell is a disconnect, and the readings taken meanwhile come after it.
    assert!(num(&report, "/connects/disconnects") >= bursts.min(5), "{report}");
    assert!(num(&report, "/messages/queued_offline") > 0, "{report}");
    assert_eq!(
        num(&report, "/messages/acknowledged"),
        num(&report, "/messages/taken"),
        "{report}"
    );
    let events = sub.wait_for(num(&report, "/messages/taken") as usize, Duration::from_secs(10));
    assert_eq!(events.len() as u64, num(&report, "/messages/taken"));
    // Each device's clock is off by its own fixed amount within ±5 s.
    let mut offsets = std::collections::BTreeMap::new();
    for e in &events {
        let off = e["ts"].as_i64().unwrap() - t0;
        offsets
            .entry(e["device_id"].as_str().unwrap().to_string())
            .or_insert_with(Vec::new)
            .push(off);
    }
    let firsts: Vec<i64> = offsets.values().map(|v| *v.iter().min().unwrap()).collect();
    assert!(firsts.iter().all(|o| (-5_500..7_000).contains(o)), "{firsts:?}");
    let spread = firsts.iter().max().unwrap() - firsts.iter().min().unwrap();
    assert!(spread > 500, "the devices' clocks differ: {firsts:?}");
}
