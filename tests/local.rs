//! The zero-setup path: `certs`, the embedded `broker`, `watch` and `demo`, as real processes.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;

/// Runs freezer-fleet to completion and returns (exit code, stderr).
fn ff(args: &[&str]) -> (i32, String) {
    let out = Command::new(BIN)
        .args(args)
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn make_pki(dir: &Path, devices: usize) {
    let d = dir.to_str().unwrap();
    let (code, err) = ff(&["certs", "init", d]);
    assert_eq!(code, 0, "{err}");
    let (code, err) = ff(&["certs", "issue", d, "--devices", &devices.to_string()]);
    assert_eq!(code, 0, "{err}");
}

/// The embedded broker as its own process on a free loopback port.
fn start_broker(pki: &Path) -> (Fleet, u16) {
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let broker = Fleet::spawn(&["broker", "--pki", pki.to_str().unwrap(), "--listen", &listen]);
    assert!(
        broker.wait_stderr("embedded broker listening", Duration::from_secs(15)),
        "{}",
        broker.stderr()
    );
    (broker, port)
}

fn mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

/// One row of a watch table: (received, missing, duplicates, out-of-order).
fn table_row(table: &str, device: &str) -> (u64, u64, u64, u64) {
    let header = table.rfind("\ndevice ").map(|i| i + 1).unwrap_or(0);
    let line = table[header..]
        .lines()
        .find(|l| l.split_whitespace().next() == Some(device))
        .unwrap_or_else(|| panic!("no row for {device} in:\n{table}"));
    let n: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .take(4)
        .map(|w| w.parse().unwrap())
        .collect();
    (n[0], n[1], n[2], n[3])
}

#[test]
fn demo_shows_every_device_injects_on_enter_and_ends_with_a_clean_table() {
    let mut demo = Fleet::spawn(&["demo", "--devices", "3", "--interval", "500ms"]);
    assert!(
        demo.wait_stderr("3 of 3 device(s) connected", Duration::from_secs(30)),
        "{}",
        demo.stderr()
    );
    std::thread::sleep(Duration::from_millis(1500));
    demo.send("");
    assert!(
        demo.wait_stderr("injected freezer1 seq=", Duration::from_secs(5)),
        "{}",
        demo.stderr()
    );
    std::thread::sleep(Duration::from_millis(300));
    demo.send("q");
    let (code, stderr, stdout) = demo.finish(Duration::from_secs(30));
    assert_eq!(code, 0, "{stderr}");
    for id in ["freezer1", "freezer2", "freezer3"] {
        assert!(
            stdout.lines().any(|l| l.starts_with(id) && l.contains("seq")),
            "no event line from {id}:\n{stdout}"
        );
    }
    let published = summary_number(&stderr, "published");
    assert!(stderr.contains("(1 injected)"), "{stderr}");
    let table = &stdout[stdout.find("watcher:").expect("the watcher's table")..];
    let total = table.lines().find(|l| l.starts_with("total")).unwrap();
    let n: Vec<u64> = total
        .split_whitespace()
        .skip(2)
        .take(4)
        .map(|w| w.parse().unwrap())
        .collect();
    assert_eq!(
        n,
        vec![published, 0, 0, 0],
        "received, missing, duplicates, out of order:\n{table}"
    );
    // The temporary PKI is gone.
    let tmp_line = stderr.lines().find(|l| l.contains("temporary PKI in")).unwrap();
    let tmp = tmp_line
        .split("temporary PKI in ")
        .nth(1)
        .unwrap()
        .split(',')
        .next()
        .unwrap();
    assert!(!Path::new(tmp).exists(), "{tmp} was not removed");
}

#[test]
fn on_a_terminal_the_demo_keeps_the_status_line_off_the_event_lines() {
    let screen = on_terminal(&[
        "demo",
        "--devices",
        "3",
        "--interval",
        "100ms",
        "--duration",
        "4s",
    ]);
    let rows = screen_rows(&screen);
    let is_status = |r: &str| r.contains(" pub/s") && r.contains("| errors ");
    let is_event = |r: &str| r.starts_with("freezer") && r.contains(" seq ");
    assert!(
        screen.matches("\r\x1b[2Kconnected ").count() >= 2,
        "the status line was not redrawn:\n{screen:?}"
    );
    assert!(rows.iter().filter(|r| is_event(r)).count() >= 60, "{rows:#?}");
    let shared: Vec<&String> = rows
        .iter()
        .filter(|r| is_status(r) && r.contains(" seq "))
        .collect();
    assert!(
        shared.is_empty(),
        "event lines share a row with the status line: {shared:#?}"
    );
    assert!(
        rows.iter().any(|r| r.starts_with("freezer-fleet summary")),
        "{rows:#?}"
    );
}

#[test]
fn certs_broker_run_and_watch_as_four_processes() {
    let dir = tempfile::tempdir().unwrap();
    make_pki(dir.path(), 4);
    let (code, err) = ff(&[
        "certs",
        "issue",
        dir.path().to_str().unwrap(),
        "--devices",
        "1",
        "--id-prefix",
        "monitor",
        "--out",
        dir.path().join("monitors").to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{err}");
    let (_broker, port) = start_broker(dir.path());
    let port_s = port.to_string();
    let ca = dir.path().join("ca.pem");
    let watch = Fleet::spawn(&[
        "watch",
        "--endpoint",
        "localhost",
        "--port",
        &port_s,
        "--ca",
        ca.to_str().unwrap(),
        "--certs",
        dir.path().join("monitors").to_str().unwrap(),
        "--id",
        "monitor1",
        "--json",
        "--duration",
        "6s",
    ]);
    assert!(
        watch.wait_stderr("watching 'freezers'", Duration::from_secs(15)),
        "{}",
        watch.stderr()
    );
    let (code, run_err) = ff(&[
        "run",
        "--endpoint",
        "localhost",
        "--port",
        &port_s,
        "--ca",
        ca.to_str().unwrap(),
        "--certs",
        dir.path().join("devices").to_str().unwrap(),
        "--interval",
        "250ms",
        "--duration",
        "2s",
    ]);
    assert_eq!(code, 0, "{run_err}");
    let published = summary_number(&run_err, "published");
    let (code, watch_err, stdout) = watch.finish(Duration::from_secs(20));
    assert_eq!(code, 0, "{watch_err}");
    let events: Vec<serde_json::Value> = stdout.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(
        events.len() as u64,
        published,
        "stdout carries one JSON object per event"
    );
    let by_dev = seqs_by_device(&events);
    assert_eq!(by_dev.len(), 4);
    for (dev, seqs) in by_dev {
        assert_eq!(seqs, (1..=seqs.len() as u64).collect::<Vec<_>>(), "{dev}");
    }
    // With --json the table goes to stderr.
    for i in 1..=4 {
        let (_, missing, dups, ooo) = table_row(&watch_err, &format!("freezer{i}"));
        assert_eq!((missing, dups, ooo), (0, 0, 0));
    }
}

/// Publishes these payloads, in this order, on `freezers` with mosquitto_pub (one connection).
fn publish(port: u16, ca: &Path, cert: &Path, key: &Path, lines: &[String]) {
    let mut child = Command::new("mosquitto_pub")
        .args([
            "-h",
            "localhost",
            "-p",
            &port.to_string(),
            "-q",
            "1",
            "-t",
            "freezers",
            "-l",
            "-i",
            "seq-tester",
        ])
        .args(mosquitto_tls(ca, cert, key))
        .stdin(Stdio::piped())
        .spawn()
        .expect("mosquitto_pub is installed");
    {
        use std::io::Write;
        let stdin = child.stdin.as_mut().unwrap();
        for l in lines {
            writeln!(stdin, "{l}").unwrap();
        }
    }
    drop(child.stdin.take());
    assert!(child.wait().unwrap().success());
}

fn crafted_events() -> Vec<String> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis();
    let ev = |d: &str, s: u64| {
        format!(r#"{{"device_id":"{d}","seq":{s},"ts":{now},"temperature":-18.0,"humidity":60.0}}"#)
    };
    // a: 1 2 4 4 3 6 9 7 → missing 5 and 8; one duplicate (4); out of order 3 and 7.
    // b: 5 6 7 → a watcher that joined late: nothing missing.
    let mut v: Vec<String> = [1, 2, 4, 4, 3, 6, 9, 7].iter().map(|s| ev("a", *s)).collect();
    v.extend([5, 6, 7].iter().map(|s| ev("b", *s)));
    v.push("not a freezer event".into());
    v
}

fn check_counts(stdout_table: &str) {
    assert_eq!(table_row(stdout_table, "a"), (8, 2, 1, 2), "{stdout_table}");
    assert_eq!(table_row(stdout_table, "b"), (3, 0, 0, 0), "{stdout_table}");
    assert!(
        stdout_table.contains("1 message(s) were not freezer events"),
        "{stdout_table}"
    );
}

#[test]
fn watch_counts_gaps_duplicates_and_reorderings_exactly_on_mosquitto() {
    let pki = Pki::new(0);
    let broker = Mosquitto::start(&pki);
    let port = broker.port.to_string();
    let watch = Fleet::spawn(&[
        "watch",
        "--endpoint",
        "localhost",
        "--port",
        &port,
        "--ca",
        pki.ca_pem().to_str().unwrap(),
        "--cert",
        pki.path().join("monitor.crt").to_str().unwrap(),
        "--key",
        pki.path().join("monitor.key").to_str().unwrap(),
        "--duration",
        "4s",
    ]);
    assert!(
        watch.wait_stderr("watching 'freezers'", Duration::from_secs(15)),
        "{}",
        watch.stderr()
    );
    publish(
        broker.port,
        &pki.ca_pem(),
        &pki.path().join("monitor.crt"),
        &pki.path().join("monitor.key"),
        &crafted_events(),
    );
    let (code, stderr, stdout) = watch.finish(Duration::from_secs(20));
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stdout.contains("DUPLICATE") && stdout.contains("OUT OF ORDER"),
        "{stdout}"
    );
    check_counts(&stdout);
}

#[test]
fn watch_counts_exactly_on_the_embedded_broker() {
    let dir = tempfile::tempdir().unwrap();
    make_pki(dir.path(), 2);
    let (_broker, port) = start_broker(dir.path());
    let port_s = port.to_string();
    let ca = dir.path().join("ca.pem");
    let devices = dir.path().join("devices");
    let watch = Fleet::spawn(&[
        "watch",
        "--endpoint",
        "localhost",
        "--port",
        &port_s,
        "--ca",
        ca.to_str().unwrap(),
        "--certs",
        devices.to_str().unwrap(),
        "--id",
        "freezer2",
        "--duration",
        "4s",
    ]);
    assert!(
        watch.wait_stderr("watching 'freezers'", Duration::from_secs(15)),
        "{}",
        watch.stderr()
    );
    let cert = devices.join("freezer1/freezer1-certificate.pem.crt");
    let key = devices.join("freezer1/freezer1-private.pem.key");
    publish(port, &ca, &cert, &key, &crafted_events());
    let (code, stderr, stdout) = watch.finish(Duration::from_secs(20));
    assert_eq!(code, 0, "{stderr}");
    check_counts(&stdout);
}

#[test]
fn the_embedded_broker_refuses_strangers_and_clients_without_a_certificate() {
    let dir = tempfile::tempdir().unwrap();
    make_pki(dir.path(), 1);
    let (_broker, port) = start_broker(dir.path());
    let port_s = port.to_string();
    let ca = dir.path().join("ca.pem");
    let devices = dir.path().join("devices");
    let cert = devices.join("freezer1/freezer1-certificate.pem.crt");
    let key = devices.join("freezer1/freezer1-private.pem.key");
    // A device certificate from another CA is refused...
    let stranger = Pki::new(1);
    let (scert, skey) = stranger.device_files("freezer1");
    let (code, stderr, _) = run_to_end(
        &[
            "run",
            "--endpoint",
            "localhost",
            "--port",
            &port_s,
            "--ca",
            ca.to_str().unwrap(),
            "--cert",
            scert.to_str().unwrap(),
            "--key",
            skey.to_str().unwrap(),
            "--duration",
            "3s",
        ],
        Duration::from_secs(20),
    );
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("rejected the client certificate"), "{stderr}");
    // ... and so is a client with no certificate at all ...
    let no_cert = Command::new("mosquitto_pub")
        .args([
            "-h",
            "localhost",
            "-p",
            &port_s,
            "-t",
            "freezers",
            "-m",
            "x",
            "--cafile",
            ca.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(
        !no_cert.status.success(),
        "a client without a certificate was accepted"
    );
    // ... while the same command with a certificate of this CA goes through.
    let ok = Command::new("mosquitto_pub")
        .args([
            "-h",
            "localhost",
            "-p",
            &port_s,
            "-t",
            "freezers",
            "-m",
            "x",
            "--cafile",
            ca.to_str().unwrap(),
        ])
        .arg("--cert")
        .arg(&cert)
        .arg("--key")
        .arg(&key)
        .output()
        .unwrap();
    assert!(ok.status.success(), "{}", String::from_utf8_lossy(&ok.stderr));
}

#[test]
fn issued_certificates_verify_with_openssl_keys_are_private_and_reruns_keep_keys() {
    for key_type in ["p256", "rsa2048"] {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().to_str().unwrap();
        assert_eq!(ff(&["certs", "init", d, "--key-type", key_type]).0, 0);
        assert_eq!(mode(&dir.path().join("ca.key")), 0o600);
        assert_eq!(mode(&dir.path().join("server.key")), 0o600);
        let (code, err) = ff(&["certs", "issue", d, "--devices", "2", "--key-type", key_type]);
        assert_eq!(code, 0, "{err}");
        let key1 = dir.path().join("devices/freezer1/freezer1-private.pem.key");
        let cert1 = dir.path().join("devices/freezer1/freezer1-certificate.pem.crt");
        let before = std::fs::read(&key1).unwrap();
        assert_eq!(mode(&key1), 0o600);
        let text = String::from_utf8(before.clone()).unwrap();
        assert!(text.contains("BEGIN PRIVATE KEY"), "{key_type}: PKCS#8 PEM");

        // Re-running adds freezer3 and leaves freezer1's key alone.
        let (code, err) = ff(&["certs", "issue", d, "--devices", "3", "--key-type", key_type]);
        assert_eq!(code, 0, "{err}");
        assert!(err.contains("1 device certificate(s) created, 2 kept"), "{err}");
        assert_eq!(std::fs::read(&key1).unwrap(), before);

        let verify = Command::new("openssl")
            .args(["verify", "-purpose", "sslclient", "-CAfile"])
            .arg(dir.path().join("ca.pem"))
            .arg(&cert1)
            .arg(dir.path().join("devices/freezer3/freezer3-certificate.pem.crt"))
            .output()
            .expect("openssl is installed");
        assert!(
            verify.status.success(),
            "{key_type}: {}",
            String::from_utf8_lossy(&verify.stdout)
        );
        let server = Command::new("openssl")
            .args(["verify", "-purpose", "sslserver", "-CAfile"])
            .arg(dir.path().join("ca.pem"))
            .arg(dir.path().join("server.pem"))
            .output()
            .unwrap();
        assert!(server.status.success());
        let subject = Command::new("openssl")
            .args(["x509", "-noout", "-subject", "-serial", "-in"])
            .arg(&cert1)
            .output()
            .unwrap();
        let subject = String::from_utf8_lossy(&subject.stdout);
        assert!(
            subject.contains("CN=freezer1") || subject.contains("CN = freezer1"),
            "{subject}"
        );
        let other = Command::new("openssl")
            .args(["x509", "-noout", "-serial", "-in"])
            .arg(dir.path().join("devices/freezer2/freezer2-certificate.pem.crt"))
            .output()
            .unwrap();
        let serial1 = subject
            .lines()
            .find(|l| l.starts_with("serial"))
            .unwrap()
            .to_string();
        assert_ne!(
            serial1,
            String::from_utf8_lossy(&other.stdout).trim(),
            "serials are unique"
        );

        // They load in `run` unchanged, against the embedded broker.
        let (_broker, port) = start_broker(dir.path());
        let (code, stderr, _) = run_to_end(
            &[
                "run",
                "--endpoint",
                "localhost",
                "--port",
                &port.to_string(),
                "--ca",
                dir.path().join("ca.pem").to_str().unwrap(),
                "--certs",
                dir.path().join("devices").to_str().unwrap(),
                "--interval",
                "200ms",
                "--duration",
                "1s",
            ],
            Duration::from_secs(30),
        );
        assert_eq!(code, 0, "{key_type}: {stderr}");
        assert!(stderr.contains("3 connected, 0 failed"), "{key_type}: {stderr}");
    }
}

#[test]
fn certs_issue_signs_with_your_own_ca() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap();
    // Your own CA, e.g. the one registered with AWS IoT Core.
    let own = Pki::new(0);
    let own_key = own.path().join("ca.key");
    write(&own_key, &own.ca.key_pem());
    let (code, err) = ff(&[
        "certs",
        "issue",
        d,
        "--devices",
        "2",
        "--ca-cert",
        own.ca_pem().to_str().unwrap(),
        "--ca-key",
        own_key.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{err}");
    let verify = Command::new("openssl")
        .args(["verify", "-CAfile"])
        .arg(own.ca_pem())
        .arg(dir.path().join("devices/freezer2/freezer2-certificate.pem.crt"))
        .output()
        .unwrap();
    assert!(verify.status.success());
}

#[test]
fn certs_issue_refuses_a_ca_key_that_is_not_the_certificates() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap();
    let own = Pki::new(0);
    let other = Pki::new(0);
    let other_key = other.path().join("ca.key");
    write(&other_key, &other.ca.key_pem());
    let (code, err) = ff(&[
        "certs",
        "issue",
        d,
        "--devices",
        "3",
        "--ca-cert",
        own.ca_pem().to_str().unwrap(),
        "--ca-key",
        other_key.to_str().unwrap(),
    ]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("does not belong to the CA certificate"), "{err}");
}

#[test]
fn certs_issue_broker_and_watch_name_their_bad_input() {
    // No CA yet.
    let empty = tempfile::tempdir().unwrap();
    let (code, err) = ff(&["certs", "issue", empty.path().to_str().unwrap(), "--devices", "1"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("cannot read the CA certificate"), "{err}");
    // The broker without a PKI.
    let (code, err) = ff(&[
        "broker",
        "--pki",
        empty.path().to_str().unwrap(),
        "--listen",
        "127.0.0.1:0",
    ]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("certs init"), "{err}");
    // An invalid watch filter.
    let (code, err) = ff(&[
        "watch",
        "--endpoint",
        "localhost",
        "--topic",
        "a/#/b",
        "--cert",
        "x",
        "--key",
        "y",
    ]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("--topic"), "{err}");
}
