//! Verdicts for CI and the time series: `--fail-if` thresholds (exit 3 naming each broken one
//! with the measured value) and `--timeseries` (one CSV row per second whose columns sum to the
//! report's totals), against a real mosquitto with mutual TLS.

mod common;

use std::time::Duration;

use common::*;

fn signal(pid: u32, sig: &str) {
    let ok = std::process::Command::new("kill")
        .args([sig, &pid.to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok, "kill {sig} {pid}");
}

fn fleet_args(pki: &Pki, port: u16, extra: &[&str]) -> Vec<String> {
    let mut a = certs_args(pki, port);
    a.extend(extra.iter().map(|s| s.to_string()));
    a
}

#[test]
fn a_stalled_broker_breaks_the_latency_threshold_and_a_quiet_run_passes_it() {
    let pki = Pki::new(5);
    let broker = Mosquitto::start(&pki);
    let threshold = ["--fail-if", "puback.p99 > 500ms", "--fail-if", "lost > 0"];
    let mut quiet = fleet_args(&pki, broker.port, &["--rate", "50", "--duration", "3s"]);
    quiet.extend(threshold.iter().map(|s| s.to_string()));
    let (code, stderr, report) = run_report(&strs(&quiet), Duration::from_secs(40));
    assert_eq!(code, 0, "{stderr}");
    assert!(stderr.contains("all 2 --fail-if threshold(s) held"), "{stderr}");
    assert!(report.get("broken_thresholds").is_none(), "{report:#}");

    let mut stalled = fleet_args(
        &pki,
        broker.port,
        &["--rate", "50", "--duration", "6s", "--drain-timeout", "5s"],
    );
    stalled.extend(threshold.iter().map(|s| s.to_string()));
    stalled.extend(["--report".to_string(), "-".to_string()]);
    let mut fleet = Fleet::spawn(&strs(&stalled));
    fleet.close_stdin();
    assert!(
        fleet.wait_stderr("5 of 5 device(s) connected", Duration::from_secs(10)),
        "{}",
        fleet.stderr()
    );
    std::thread::sleep(Duration::from_secs(1));
    signal(broker.pid(), "-STOP");
    std::thread::sleep(Duration::from_secs(2));
    signal(broker.pid(), "-CONT");
    let (code, stderr, stdout) = fleet.finish(Duration::from_secs(40));
    assert_eq!(code, 3, "a broken threshold: {stderr}");
    let broken: Vec<&str> = stderr
        .lines()
        .filter(|l| l.starts_with("threshold broken: "))
        .collect();
    assert_eq!(broken.len(), 1, "only the latency threshold: {stderr}");
    assert!(
        broken[0].starts_with("threshold broken: puback.p99 > 500ms (measured "),
        "{}",
        broken[0]
    );
    let report = report_of(&stdout, &stderr);
    let measured = report["latency_ms"]["puback"]["p99"].as_f64().unwrap();
    assert!(measured > 500.0);
    assert!(
        broken[0].contains(&format!("{measured:.3} ms")),
        "{} vs {measured}",
        broken[0]
    );
    assert_eq!(report["broken_thresholds"][0]["threshold"], "puback.p99 > 500ms");
}

#[test]
fn the_time_series_has_a_row_a_second_and_sums_to_the_report() {
    let pki = Pki::new(4);
    let broker = Mosquitto::start(&pki);
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("run.csv");
    let a = fleet_args(
        &pki,
        broker.port,
        &[
            "--rate",
            "40",
            "--duration",
            "5s",
            "--timeseries",
            &csv.display().to_string(),
        ],
    );
    let (code, stderr, report) = run_report(&strs(&a), Duration::from_secs(40));
    assert_eq!(code, 0, "{stderr}");
    let text = std::fs::read_to_string(&csv).unwrap();
    let mut lines = text.lines();
    assert_eq!(
        lines.next().unwrap(),
        "elapsed_s,stage,devices_connected,attempts,published,acknowledged,failed,dropped,in_flight,\
         puback_p50_ms,puback_p99_ms,lag_p99_ms,late_p99_ms,cpu_pct,\
         send_queue_bytes,send_queue_max_bytes"
    );
    let rows: Vec<Vec<String>> = lines.map(|l| l.split(',').map(String::from).collect()).collect();
    assert!((5..=8).contains(&rows.len()), "about one row a second: {text}");
    assert_eq!(rows.last().unwrap()[1], "drain", "the last row covers the drain");
    let sum = |col: usize| rows.iter().map(|r| r[col].parse::<u64>().unwrap()).sum::<u64>();
    for (col, key) in [
        (3, "/connects/attempts"),
        (4, "/messages/published"),
        (5, "/messages/acknowledged"),
        (6, "/messages/failed"),
        (7, "/messages/dropped"),
    ] {
        assert_eq!(sum(col), num(&report, key), "column {col} sums to {key}");
    }
    let elapsed: Vec<f64> = rows.iter().map(|r| r[0].parse().unwrap()).collect();
    for w in elapsed.windows(2).take(rows.len() - 2) {
        assert!((w[1] - w[0] - 1.0).abs() < 0.3, "a row a second: {elapsed:?}");
    }
    let busy: Vec<&Vec<String>> = rows.iter().filter(|r| r[4] != "0").collect();
    assert!(
        busy.iter().all(|r| r[10].parse::<f64>().unwrap() > 0.0),
        "each busy second has its own p99"
    );
}

#[test]
fn a_generator_pinned_to_one_core_and_overloaded_says_so_and_a_quiet_one_does_not() {
    let dir = tempfile::tempdir().unwrap();
    let pki_dir = dir.path().join("pki");
    let p = pki_dir.display().to_string();
    for args in [
        vec!["certs", "init", &p],
        vec!["certs", "issue", &p, "--devices", "1500"],
    ] {
        let (code, err, _) = run_to_end(&args, Duration::from_secs(120));
        assert_eq!(code, 0, "{err}");
    }
    let broker = Mosquitto::start_with_files(&pki_dir);
    let base = |rate: &str, secs: &str| {
        vec![
            "run".to_string(),
            "--endpoint".into(),
            "localhost".into(),
            "--port".into(),
            broker.port.to_string(),
            "--ca".into(),
            format!("{p}/ca.pem"),
            "--certs".into(),
            format!("{p}/devices"),
            "--rate".into(),
            rate.into(),
            "--duration".into(),
            secs.into(),
            "--drain-timeout".into(),
            "2s".into(),
        ]
    };
    // 1,500 devices asked for 60,000 events a second on one core.
    let mut pinned = vec!["taskset".to_string(), "-c".into(), "0".into(), BIN.to_string()];
    pinned.extend(base("60000", "6s"));
    pinned.extend(["--report".to_string(), "-".to_string()]);
    let out = std::process::Command::new(&pinned[0])
        .args(&pinned[1..])
        .env("NO_COLOR", "1")
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    let report = report_of(&stdout, &stderr);
    let g = &report["generator"];
    assert_eq!(g["cores"], 1, "{g}");
    assert_eq!(g["saturated"], true, "{g}\n{stderr}");
    assert!(
        stderr.contains("WARNING: the generator was saturated ("),
        "{stderr}"
    );

    // A light load (few devices: the connect phase of many, under a test suite running in
    // parallel, can make a few timers late on its own).
    let mut quiet = base("20", "5s");
    quiet.extend(["--devices".to_string(), "5".to_string()]);
    let (code, stderr, quiet) = run_report(&strs(&quiet), Duration::from_secs(60));
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(quiet["generator"]["saturated"], false, "{}", quiet["generator"]);
    assert!(
        !stderr.contains("WARNING: the generator was saturated"),
        "{stderr}"
    );
}

#[test]
fn a_broker_that_stops_reading_shows_in_the_send_queues_and_a_reading_one_does_not() {
    let pki = Pki::new(2);
    let broker = Mosquitto::start(&pki);
    let big = ["--qos", "0", "--payload-bytes", "8000", "--drain-timeout", "1s"];
    let mut reading = fleet_args(&pki, broker.port, &["--rate", "20", "--duration", "3s"]);
    reading.extend(big.iter().map(|s| s.to_string()));
    let (code, stderr, report) = run_report(&strs(&reading), Duration::from_secs(40));
    assert_eq!(code, 0, "{stderr}");
    let g = &report["generator"];
    assert!(
        g["send_queue_peak_bytes"].as_u64().unwrap() < 64_000,
        "a broker that reads keeps the queues short: {g}"
    );

    let mut stalled = fleet_args(&pki, broker.port, &["--rate", "max", "--duration", "5s"]);
    stalled.extend(big.iter().map(|s| s.to_string()));
    stalled.extend(["--report".to_string(), "-".to_string()]);
    let mut fleet = Fleet::spawn(&strs(&stalled));
    fleet.close_stdin();
    assert!(
        fleet.wait_stderr("2 of 2 device(s) connected", Duration::from_secs(10)),
        "{}",
        fleet.stderr()
    );
    signal(broker.pid(), "-STOP");
    std::thread::sleep(Duration::from_secs(3));
    let (code, stderr, stdout) = fleet.finish(Duration::from_secs(40));
    signal(broker.pid(), "-CONT");
    assert_eq!(code, 0, "{stderr}");
    let report = report_of(&stdout, &stderr);
    let g = &report["generator"];
    let peak = g["send_queue_peak_bytes"].as_u64().unwrap();
    assert!(peak > 100_000, "the writes wait in the kernel's queues: {g}");
    assert!(g["send_queue_max_bytes"].as_u64().unwrap() <= peak, "{g}");
    let rows = report["timeline"].as_array().unwrap();
    assert!(
        rows.iter()
            .any(|r| r["send_queue_bytes"].as_u64().unwrap() > 100_000),
        "the time series has it too"
    );
    assert!(stderr.contains("send queues at most "), "{stderr}");
}

#[test]
fn a_thresholds_table_in_the_config_file_is_checked_and_flags_replace_it() {
    let pki = Pki::new(2);
    let broker = Mosquitto::start(&pki);
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("run.toml");
    write(
        &config,
        "[thresholds]\npuback.p99 = \"> 500ms\"\nlost = \"> 0\"\npublished = \"< 1000000\"\n",
    );
    let config = config.display().to_string();
    let base = ["--rate", "20", "--duration", "2s", "--config", &config];
    let (code, stderr, report) = run_report(
        &strs(&fleet_args(&pki, broker.port, &base)),
        Duration::from_secs(40),
    );
    assert_eq!(code, 3, "published < 1000000 is broken: {stderr}");
    let broken: Vec<&str> = stderr
        .lines()
        .filter(|l| l.starts_with("threshold broken: "))
        .collect();
    assert_eq!(broken.len(), 1, "{stderr}");
    assert!(
        broken[0].starts_with("threshold broken: published < 1000000 (measured "),
        "{}",
        broken[0]
    );
    assert_eq!(
        report["broken_thresholds"].as_array().unwrap().len(),
        1,
        "{report:#}"
    );

    let mut flags = base.to_vec();
    flags.extend(["--fail-if", "lost > 0"]);
    let (code, stderr, _) = run_report(
        &strs(&fleet_args(&pki, broker.port, &flags)),
        Duration::from_secs(40),
    );
    assert_eq!(code, 0, "--fail-if replaces the file's thresholds: {stderr}");
    assert!(stderr.contains("all 1 --fail-if threshold(s) held"), "{stderr}");
}
