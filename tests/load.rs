//! The load engine against mosquitto: ramp-up, target rate, --count, the JSON report, the
//! aws-iot profile, and latency measured from the schedule (coordinated omission).

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::*;

fn report(path: &std::path::Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(path).expect("the report was written"))
        .expect("report is JSON")
}

#[test]
fn ramp_up_holds_the_connect_rate() {
    let pki = Pki::new(40);
    let broker = Mosquitto::start(&pki);
    let out = pki.path().join("report.json");
    let mut args = certs_args(&pki, broker.port);
    args.extend(
        [
            "--interval",
            "0",
            "--ramp-up",
            "10",
            "--duration",
            "6s",
            "--report",
        ]
        .map(String::from),
    );
    args.push(out.display().to_string());
    let (code, stderr, _) = run_to_end(&strs(&args), Duration::from_secs(30));
    assert_eq!(code, 0, "{stderr}");
    // mosquitto stamps each "New client connected" with the Unix second.
    let mut per_second = BTreeMap::<u64, u64>::new();
    for line in broker
        .log_text()
        .lines()
        .filter(|l| l.contains("New client connected"))
    {
        let second: u64 = line.split(':').next().unwrap().trim().parse().unwrap();
        *per_second.entry(second).or_default() += 1;
    }
    // The 40 devices and the pre-flight CONNECT (as freezer1), paced alike.
    assert_eq!(per_second.values().sum::<u64>(), 41);
    assert!(
        per_second.values().all(|&n| n <= 11),
        "connects per second at the broker: {per_second:?}"
    );
    let span = per_second.keys().last().unwrap() - per_second.keys().next().unwrap();
    assert!(
        span >= 3,
        "40 devices at 10/s take 4 s, took {span} s: {per_second:?}"
    );
    let r = report(&out);
    assert_eq!(r["devices"]["connected"], 40);
    assert!(
        r["connects"]["peak_per_second"].as_u64().unwrap() <= 11,
        "{}",
        r["connects"]
    );
}

#[test]
fn the_target_rate_is_met_and_the_report_matches_the_broker() {
    let Setup { pki, broker, sub } = Setup::new(20);
    let out = pki.path().join("report.json");
    let mut args = certs_args(&pki, broker.port);
    args.extend(["--rate", "200", "--duration", "11s", "--report"].map(String::from));
    args.push(out.display().to_string());
    let (code, stderr, _) = run_to_end(&strs(&args), Duration::from_secs(40));
    assert_eq!(code, 0, "{stderr}");
    let r = report(&out);
    let achieved = r["rate"]["achieved"].as_f64().unwrap();
    assert_eq!(r["rate"]["target"].as_f64(), Some(200.0));
    assert!(
        (achieved - 200.0).abs() <= 10.0,
        "achieved {achieved}/s for a target of 200/s"
    );
    let published = r["messages"]["published"].as_u64().unwrap();
    assert_eq!(r["messages"]["acknowledged"].as_u64().unwrap(), published);
    let received = sub.wait_for(published as usize, Duration::from_secs(10)).len() as u64;
    assert_eq!(received, published, "the broker delivered what the report counts");
    assert!(
        (received as f64 - 2200.0).abs() <= 110.0,
        "{received} events in 11 s at 200/s"
    );
    // Not a terminal: a plain status line every 10 s, no redrawn line.
    assert!(stderr.contains("connected 20/20 | "), "{stderr}");
    assert!(!stderr.contains('\r'), "no live view off a terminal");
    for key in ["connect", "puback", "lag"] {
        assert!(r["latency_ms"][key]["count"].as_u64().unwrap() > 0, "{key}");
        assert!(
            r["histograms"][key].as_str().unwrap().starts_with("HISTF"),
            "{key}: V2 deflate, base64"
        );
    }
}

#[test]
fn count_stops_each_device_after_exactly_k_events() {
    let Setup { pki, broker, sub } = Setup::new(5);
    let mut args = certs_args(&pki, broker.port);
    args.extend(["--interval", "50ms", "--count", "7"].map(String::from));
    let started = Instant::now();
    let (code, stderr, _) = run_to_end(&strs(&args), Duration::from_secs(30));
    assert_eq!(code, 0, "{stderr}");
    assert!(started.elapsed() < Duration::from_secs(10), "stopped by itself");
    assert!(stderr.contains("every device sent its --count"), "{stderr}");
    assert!(
        stderr.contains("35 taken, 35 published, 35 acknowledged, 0 failed"),
        "{stderr}"
    );
    let events = sub.wait_for(35, Duration::from_secs(5));
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(sub.events().len(), 35);
    for (dev, seqs) in seqs_by_device(&events) {
        assert_eq!(seqs, (1..=7).collect::<Vec<u64>>(), "{dev}");
    }
}

#[test]
fn rate_max_fills_the_window_and_payloads_are_padded_exactly() {
    let Setup { pki, broker, sub } = Setup::new(4);
    let mut args = certs_args(&pki, broker.port);
    args.extend(["--rate", "max", "--count", "500", "--payload-bytes", "1000"].map(String::from));
    let (code, stderr, _) = run_to_end(&strs(&args), Duration::from_secs(60));
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stderr.contains("2000 taken, 2000 published, 2000 acknowledged, 0 failed"),
        "{stderr}"
    );
    let events = sub.wait_for(2000, Duration::from_secs(10));
    assert_eq!(events.len(), 2000);
    for e in &events {
        assert_eq!(
            serde_json::to_vec(e).unwrap().len(),
            1000,
            "payload of exactly --payload-bytes: {e}"
        );
        assert!(e["pad"].as_str().unwrap().chars().all(|c| c == 'x'));
    }
    for (dev, seqs) in seqs_by_device(&events) {
        assert_eq!(seqs, (1..=500).collect::<Vec<u64>>(), "{dev}");
    }
}

#[test]
fn held_back_pubacks_show_as_latency_not_as_a_lower_rate() {
    let pki = Pki::new(10);
    let broker = Mosquitto::start(&pki);
    let out = pki.path().join("report.json");
    let mut args = certs_args(&pki, broker.port);
    args.extend(
        [
            "--rate",
            "100",
            "--duration",
            "8s",
            "--drain-timeout",
            "5s",
            "--report",
        ]
        .map(String::from),
    );
    args.push(out.display().to_string());
    let mut fleet = Fleet::spawn(&strs(&args));
    fleet.close_stdin();
    assert!(
        fleet.wait_stderr("10 of 10 device(s) connected", Duration::from_secs(10)),
        "{}",
        fleet.stderr()
    );
    std::thread::sleep(Duration::from_secs(2));
    // Freeze the broker for 2 s: publishes still leave on schedule, their PUBACKs wait.
    let pid = broker.pid().to_string();
    assert!(
        std::process::Command::new("kill")
            .args(["-STOP", &pid])
            .status()
            .unwrap()
            .success()
    );
    std::thread::sleep(Duration::from_secs(2));
    assert!(
        std::process::Command::new("kill")
            .args(["-CONT", &pid])
            .status()
            .unwrap()
            .success()
    );
    let (code, stderr, _) = fleet.finish(Duration::from_secs(40));
    assert_eq!(code, 0, "{stderr}");
    let r = report(&out);
    let max = r["latency_ms"]["puback"]["max"].as_f64().unwrap();
    let p99 = r["latency_ms"]["puback"]["p99"].as_f64().unwrap();
    assert!(
        max >= 1800.0,
        "a 2 s stall must show in the PUBACK latency, max was {max} ms"
    );
    assert!(p99 >= 1000.0, "p99 {p99} ms");
    let achieved = r["rate"]["achieved"].as_f64().unwrap();
    assert!(
        (achieved - 100.0).abs() <= 5.0,
        "the rate stays at its target ({achieved}/s): the stall is latency"
    );
    assert_eq!(
        r["messages"]["acknowledged"], r["messages"]["published"],
        "{}",
        r["messages"]
    );
}

#[test]
fn the_aws_iot_profile_refuses_what_iot_core_would() {
    let pki = Pki::new(1);
    let cases: Vec<(Vec<&str>, Vec<&str>)> = vec![
        (vec!["--qos", "2"], vec!["--qos", "QoS 2"]),
        (
            vec!["--payload-bytes", "204800"],
            vec!["--payload-bytes", "128 KB", "--profile aws-iot"],
        ),
        (
            vec!["--topic", "a/b/c/d/e/f/g/h/i"],
            vec!["--topic", "8 slashes", "at most 7"],
        ),
        (
            vec!["--interval", "5ms"],
            vec!["200 publishes/s per connection", "100/s"],
        ),
        (vec!["--rate", "max"], vec!["--rate max", "100 publishes/s"]),
        (vec!["--max-inflight", "500"], vec!["--max-inflight", "100"]),
    ];
    let long_id = "d".repeat(130);
    let mut all = cases;
    all.push((vec!["--id-prefix", &long_id], vec!["131 bytes", "at most 128"]));
    for (extra, needles) in all {
        // Explicitly, and by default for an *.amazonaws.com endpoint.
        for endpoint in ["localhost", "abc123-ats.iot.us-east-1.amazonaws.com"] {
            let ca = pki.ca_pem().display().to_string();
            let mut args = vec!["run", "--endpoint", endpoint, "--ca", &ca];
            let (cert, key) = pki.device_files("freezer1");
            let (cert, key) = (cert.display().to_string(), key.display().to_string());
            args.extend(["--cert", &cert, "--key", &key]);
            if endpoint == "localhost" {
                args.extend(["--profile", "aws-iot"]);
            }
            args.extend(extra.iter().copied());
            let (code, stderr, _) = run_to_end(&args, Duration::from_secs(20));
            assert_eq!(code, 2, "{extra:?}: {stderr}");
            for n in &needles {
                assert!(stderr.contains(n), "{extra:?}: expected '{n}' in {stderr}");
            }
            assert_eq!(stderr.lines().count(), 1, "{stderr}");
        }
    }
    // --profile none lifts the limits (the endpoint then fails the pre-flight, a different error).
    let (code, stderr, _) = run_to_end(
        &[
            "run",
            "--endpoint",
            "localhost",
            "--port",
            &free_port().to_string(),
            "--ca",
            pki.ca_pem().to_str().unwrap(),
            "--certs",
            pki.devices().to_str().unwrap(),
            "--profile",
            "none",
            "--payload-bytes",
            "204800",
        ],
        Duration::from_secs(20),
    );
    assert_eq!(code, 2);
    assert!(stderr.contains("connection refused"), "{stderr}");
}

#[test]
fn bind_spreads_devices_over_local_source_addresses() {
    let pki = Pki::new(4);
    let broker = Mosquitto::start(&pki);
    let mut args = certs_args(&pki, broker.port);
    args.extend(
        [
            "--interval",
            "200ms",
            "--duration",
            "1500ms",
            "--bind",
            "127.0.0.2,127.0.0.3",
        ]
        .map(String::from),
    );
    let (code, stderr, _) = run_to_end(&strs(&args), Duration::from_secs(30));
    assert_eq!(code, 0, "{stderr}");
    // mosquitto logs each client's source address: devices alternate between the two.
    let log = broker.log_text();
    let from = |id: &str| {
        let line = log
            .lines()
            .find(|l| l.contains("New client connected") && l.contains(&format!(" as {id} ")))
            .unwrap_or_else(|| panic!("{id} never connected:\n{log}"));
        line.split(" from ")
            .nth(1)
            .unwrap()
            .split(':')
            .next()
            .unwrap()
            .to_string()
    };
    assert_eq!(from("freezer1"), "127.0.0.2");
    assert_eq!(from("freezer2"), "127.0.0.3");
    assert_eq!(from("freezer3"), "127.0.0.2");
    assert_eq!(from("freezer4"), "127.0.0.3");
}

#[test]
fn near_the_open_files_limit_the_run_says_how_many_devices_fit() {
    let pki = Pki::new(1);
    let broker = Mosquitto::start(&pki);
    let (cert, key) = pki.device_files("freezer1");
    // A hard limit of 100 open files: about 84 devices fit, 150 are asked for.
    let cmd = format!(
        "ulimit -n 100 && exec '{BIN}' run --endpoint localhost --port {} --ca '{}' --cert '{}' --key '{}' --devices 150 --interval 0 --duration 2s",
        broker.port,
        pki.ca_pem().display(),
        cert.display(),
        key.display()
    );
    let out = std::process::Command::new("sh")
        .args(["-c", &cmd])
        .env("NO_COLOR", "1")
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("the open-files limit is 100: about 84 devices can connect, not 150"),
        "{stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
    // Devices past the limit fail with a cause that says what to do.
    assert!(
        stderr.contains("too many open files on this machine: raise the open-files limit"),
        "{stderr}"
    );
}

#[test]
fn on_a_terminal_the_live_view_is_redrawn_every_second() {
    let pki = Pki::new(2);
    let broker = Mosquitto::start(&pki);
    // `script` runs the fleet on a pseudo-terminal, as a person at a terminal would.
    let mut args = certs_args(&pki, broker.port);
    args.extend(["--rate", "20", "--duration", "4s"].map(String::from));
    let screen = on_terminal(&strs(&args));
    let redraws = screen.matches("\r\x1b[2Kconnected 2/2 | ").count();
    assert!(
        redraws >= 2,
        "expected a line redrawn about once a second, got {redraws}:\n{screen}"
    );
    assert!(screen.contains(" pub/s (target 20) | PUBACK p50 "), "{screen}");
    assert!(screen.contains("freezer-fleet summary"), "{screen}");
}
