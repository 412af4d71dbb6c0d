//! Other ways into IoT Core: MQTT on 443 with ALPN, Basic Ingest. Real mosquitto, real TLS,
//! the real binary; the ALPN gate is a stand-in for IoT Core's port 443, which mosquitto has no
//! equivalent of.

mod common;

use std::time::Duration;

use common::standin::{AlpnGate, Answer, HttpsServer, Refuse, RefusingServer, WsGate};
use common::*;

#[test]
fn mqtt_with_alpn_x_amzn_mqtt_ca_passes_a_gate_that_requires_it() {
    let Setup { pki, broker, sub } = Setup::new(3);
    let gate = AlpnGate::start(&pki, broker.port);
    let mut args = certs_args(&pki, gate.port);
    args.extend(
        [
            "--alpn",
            "x-amzn-mqtt-ca",
            "--interval",
            "300ms",
            "--duration",
            "3s",
        ]
        .map(String::from),
    );
    let (code, stderr, report) = run_report(&strs(&args), Duration::from_secs(30));
    assert_eq!(code, 0, "{stderr}");
    assert!(
        !stderr.contains("ALPN"),
        "the gate selected the protocol: {stderr}"
    );
    assert_eq!(report["settings"]["alpn"], "x-amzn-mqtt-ca");
    assert!(
        gate.passed() >= 3,
        "{} connections passed the gate",
        gate.passed()
    );
    let published = num(&report, "/messages/published");
    assert!(published >= 27, "{report:#}");
    assert_eq!(
        sub.wait_for(published as usize, Duration::from_secs(5)).len() as u64,
        published
    );
}

#[test]
fn another_alpn_protocol_is_refused_by_name_before_the_run() {
    let pki = Pki::new(1);
    let broker = Mosquitto::start(&pki);
    let gate = AlpnGate::start(&pki, broker.port);
    let mut args = certs_args(&pki, gate.port);
    args.extend(["--alpn", "mqtt", "--duration", "3s"].map(String::from));
    let (code, stderr, _) = run_to_end(&strs(&args), Duration::from_secs(30));
    assert_eq!(code, 2, "{stderr}");
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 1, "{stderr}");
    assert!(lines[0].starts_with("error: --alpn: "), "{stderr}");
    assert!(
        stderr.contains("none of the ALPN protocols offered") && stderr.contains("x-amzn-mqtt-ca"),
        "{stderr}"
    );
}

#[test]
fn a_broker_that_ignores_alpn_is_named_in_a_warning_and_still_used() {
    let Setup { pki, broker, sub } = Setup::new(1);
    let mut args = certs_args(&pki, broker.port);
    args.extend(
        [
            "--alpn",
            "x-amzn-mqtt-ca",
            "--interval",
            "200ms",
            "--duration",
            "2s",
        ]
        .map(String::from),
    );
    let (code, stderr, report) = run_report(&strs(&args), Duration::from_secs(30));
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stderr.contains("ALPN 'x-amzn-mqtt-ca' was offered but the server selected none"),
        "{stderr}"
    );
    let published = num(&report, "/messages/published");
    assert_eq!(
        sub.wait_for(published as usize, Duration::from_secs(5)).len() as u64,
        published
    );
}

#[test]
fn basic_ingest_publishes_under_the_rule_prefix_and_the_limits_skip_it() {
    let pki = Pki::new(2);
    let broker = Mosquitto::start(&pki);
    // Seven slashes after the prefix: IoT Core's limit, which the prefix does not count towards.
    let topic = "plant/a/b/c/d/e/f/freezers";
    let sub = Subscriber::start(&pki, broker.port, &format!("$aws/rules/freezer_rule/{topic}"));
    let mut args = certs_args(&pki, broker.port);
    let flags = [
        "--basic-ingest",
        "freezer_rule",
        "--topic",
        topic,
        "--profile",
        "aws-iot",
    ];
    args.extend(flags.map(String::from));
    args.extend(["--interval", "250ms", "--duration", "2s"].map(String::from));
    let (code, stderr, report) = run_report(&strs(&args), Duration::from_secs(30));
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(
        report["settings"]["topic"],
        format!("$aws/rules/freezer_rule/{topic}")
    );
    let published = num(&report, "/messages/published");
    assert!(published >= 12, "{report:#}");
    let events = sub.wait_for(published as usize, Duration::from_secs(5));
    assert_eq!(events.len() as u64, published, "{stderr}");
    // One more slash is over the limit, prefix or not.
    let mut args = certs_args(&pki, broker.port);
    let flags = [
        "--basic-ingest",
        "freezer_rule",
        "--topic",
        "plant/a/b/c/d/e/f/g/freezers",
        "--profile",
        "aws-iot",
    ];
    args.extend(flags.map(String::from));
    let (code, stderr, _) = run_to_end(&strs(&args), Duration::from_secs(30));
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("8 slashes"), "{stderr}");
}

#[test]
fn a_real_broker_that_denies_the_topic_gets_the_publish_policy_diagnosis() {
    // mosquitto's ACL here allows `#`, which never matches a topic starting with `$`: a publish
    // to `$denied/freezers` is refused, and mosquitto (like IoT Core) closes the connection.
    let pki = Pki::new(2);
    let broker = Mosquitto::start(&pki);
    let mut args = certs_args(&pki, broker.port);
    args.extend(
        [
            "--topic",
            "$denied/freezers",
            "--interval",
            "300ms",
            // mosquitto acknowledges some of the denied publishes before it closes, which
            // breaks a streak: quick retries give the diagnosis its three in a row sooner.
            "--backoff-max",
            "2s",
            "--duration",
            "20s",
        ]
        .map(String::from),
    );
    let (code, stderr, report) = run_report(&strs(&args), Duration::from_secs(60));
    assert_eq!(code, 1, "every device failed: {stderr}");
    assert_eq!(
        report["device_failures"]["publish not allowed by policy"]["count"], 2,
        "{report:#}"
    );
    assert!(
        stderr.contains("the server closes the connection after each PUBLISH to '$denied/freezers'"),
        "{stderr}"
    );
    assert!(
        broker.log_text().contains("Denied PUBLISH"),
        "{}",
        broker.log_text()
    );
}

#[test]
fn mqtt5_devices_connect_as_protocol_v5_and_deliver_every_event() {
    let Setup { pki, broker, sub } = Setup::new(3);
    let mut args = certs_args(&pki, broker.port);
    args.extend(["--mqtt-version", "5", "--interval", "250ms", "--duration", "2s"].map(String::from));
    let (code, stderr, report) = run_report(&strs(&args), Duration::from_secs(30));
    assert_eq!(code, 0, "{stderr}");
    assert!(stderr.contains("MQTT 5 topic 'freezers'"), "{stderr}");
    assert_eq!(report["settings"]["mqtt_version"], "5");
    let log = broker.log_text();
    for id in ["freezer1", "freezer2", "freezer3"] {
        assert!(
            log.lines().any(|l| l.contains(&format!("as {id} (p5,"))),
            "{id} did not connect with MQTT 5:\n{log}"
        );
    }
    let published = num(&report, "/messages/published");
    assert_eq!(num(&report, "/messages/acknowledged"), published, "{report:#}");
    let events = sub.wait_for(published as usize, Duration::from_secs(5));
    assert_eq!(events.len() as u64, published);
}

#[test]
fn mqtt5_puback_0x87_for_a_denied_topic_is_named_by_device() {
    // The ACL allows only `allowed/#`: a publish to `freezers` is denied, and mosquitto answers
    // an MQTT 5 client with PUBACK 0x87 and keeps the connection.
    let pki = Pki::new(2);
    let broker = Mosquitto::start_with_acl(&pki, "pattern readwrite allowed/#\n");
    let mut args = certs_args(&pki, broker.port);
    let flags = ["--mqtt-version", "5", "--interval", "200ms", "--duration", "5s"];
    args.extend(flags.map(String::from));
    let (code, stderr, report) = run_report(&strs(&args), Duration::from_secs(40));
    assert_eq!(code, 1, "every device failed: {stderr}");
    let refused = &report["device_failures"]["publish not allowed by policy"];
    assert_eq!(refused["count"], 2, "{report:#}");
    let why = refused["example"].as_str().unwrap();
    assert!(
        why.starts_with("PUBACK 0x87 not authorized for each PUBLISH to 'freezers'"),
        "{why}\n{stderr}\n{}",
        broker.log_text()
    );
    assert!(
        num(
            &report,
            "/errors/refused by the server: publish not allowed by policy"
        ) >= 30,
        "the devices kept publishing after the diagnosis: {report:#}"
    );
    // The server said why: no connection was closed to make it so.
    assert_eq!(num(&report, "/connects/disconnects"), 0, "{report:#}");
    let failed = stderr
        .lines()
        .find(|l| l.contains("failed: publish not allowed by policy: 2 device(s) ("))
        .unwrap_or_else(|| panic!("{stderr}"));
    assert!(
        failed.contains("freezer1") && failed.contains("freezer2"),
        "{stderr}"
    );
}

#[test]
fn mqtt5_session_taken_over_is_the_servers_own_word_for_a_duplicate_client_id() {
    // mosquitto 2.0.11 closes the older connection without DISCONNECT 0x8E; IoT Core sends it.
    let pki = Pki::new(1);
    let server = RefusingServer::start(&pki, Refuse::TakenOverV5);
    let mut args = certs_args(&pki, server.port);
    let flags = [
        "--mqtt-version",
        "5",
        "--interval",
        "100ms",
        "--duration",
        "5s",
        "--backoff-max",
        "2s",
    ];
    args.extend(flags.map(String::from));
    let (code, stderr, report) = run_report(&strs(&args), Duration::from_secs(30));
    assert_eq!(code, 0, "the device kept trying to the end: {stderr}");
    let named: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("WARN") && l.contains("is in use by another connection"))
        .collect();
    assert_eq!(named.len(), 1, "named once, at the first DISCONNECT: {stderr}");
    assert!(
        named[0].contains("DISCONNECT 0x8E session taken over"),
        "{stderr}"
    );
    let suspected = &report["suspected"]["client id in use"];
    assert_eq!(
        suspected["devices"],
        serde_json::json!(["freezer1"]),
        "{report:#}"
    );
    // After the first, every --backoff-max (1 to 2 s): about 3 to 5 connects in 5 s, not 15.
    let connects = server.connects().len();
    assert!((2..=6).contains(&connects), "{connects} connects: {stderr}");
}

/// The events an HTTPS stand-in received, by device, in arrival order.
fn https_events(server: &HttpsServer) -> Vec<serde_json::Value> {
    server
        .requests()
        .iter()
        .map(|(target, body)| {
            assert_eq!(target, "/topics/freezers?qos=1");
            serde_json::from_slice(body).expect("each body is one event")
        })
        .collect()
}

#[test]
fn https_publish_posts_every_event_once_in_order_over_one_kept_alive_connection_per_device() {
    let pki = Pki::new(3);
    let server = HttpsServer::start(&pki, Answer::Ok);
    let mut args = certs_args(&pki, server.port);
    args.extend(["--transport", "https", "--interval", "200ms", "--duration", "3s"].map(String::from));
    let (code, stderr, report) = run_report(&strs(&args), Duration::from_secs(30));
    assert_eq!(code, 0, "{stderr}");
    assert!(stderr.contains("HTTPS topic 'freezers'"), "{stderr}");
    assert_eq!(report["settings"]["transport"], "https");
    let events = https_events(&server);
    let acked = num(&report, "/messages/acknowledged");
    assert!(acked >= 36, "{report:#}");
    assert_eq!(events.len() as u64, acked, "every event once");
    for (id, seqs) in seqs_by_device(&events) {
        assert_eq!(
            seqs,
            (1..=seqs.len() as u64).collect::<Vec<_>>(),
            "{id}: in seq order, no gap"
        );
    }
    // One connection per device, kept alive between events, plus the pre-flight check's.
    assert_eq!(server.connections(), 3 + 1, "{stderr}");
    // Every answered request has its latency, in the steady state or the connect phase.
    assert!(
        num(&report, "/latency_ms/puback/count") + num(&report, "/latency_ms/connect_phase/puback/count")
            >= acked,
        "request latency recorded: {report:#}"
    );
}

#[test]
fn https_403_is_named_a_policy_refusal_by_device() {
    let pki = Pki::new(2);
    let server = HttpsServer::start(&pki, Answer::Status(403));
    let mut args = certs_args(&pki, server.port);
    args.extend(["--transport", "https", "--interval", "200ms", "--duration", "5s"].map(String::from));
    let (code, stderr, report) = run_report(&strs(&args), Duration::from_secs(40));
    assert_eq!(code, 1, "every device failed: {stderr}");
    let refused = &report["device_failures"]["publish not allowed by policy"];
    assert_eq!(refused["count"], 2, "{report:#}");
    let why = refused["example"].as_str().unwrap();
    assert!(
        why.starts_with("HTTP 403 Forbidden: the policy does not allow iot:Publish on topic/freezers"),
        "{why}"
    );
    // Named after three refusals; the devices go on posting (they never give up by
    // themselves), each refused event counted as failed.
    assert_eq!(
        server.requests().len() as u64,
        num(
            &report,
            "/errors/refused by the server: publish not allowed by policy"
        ),
        "{report:#}"
    );
    assert!(server.requests().len() > 6, "{report:#}");
}

#[test]
fn https_429_is_retried_with_backoff_and_nothing_is_lost() {
    let pki = Pki::new(2);
    let server = HttpsServer::start(&pki, Answer::ThrottleFirst(4));
    let mut args = certs_args(&pki, server.port);
    let flags = [
        "--transport",
        "https",
        "--interval",
        "250ms",
        "--duration",
        "4s",
        "--backoff-min",
        "100ms",
    ];
    args.extend(flags.map(String::from));
    let (code, stderr, report) = run_report(&strs(&args), Duration::from_secs(30));
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(num(&report, "/messages/failed"), 0, "{report:#}");
    assert_eq!(num(&report, "/messages/dropped"), 0, "{report:#}");
    assert!(num(&report, "/messages/resent") >= 4, "{report:#}");
    let requests = server.requests().len() as u64;
    let taken = num(&report, "/messages/taken");
    assert_eq!(
        requests,
        taken + 4,
        "every event delivered, the 4 throttled ones twice"
    );
    let delivered: std::collections::BTreeSet<(String, u64)> = https_events(&server)[4..]
        .iter()
        .map(|e| {
            (
                e["device_id"].as_str().unwrap().to_string(),
                e["seq"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        delivered.len() as u64,
        taken,
        "each event delivered once after the throttling"
    );
}

/// Dummy AWS credentials for the stand-in, and nothing else from this machine's AWS setup.
fn aws_env(dir: &std::path::Path, token: Option<&str>) -> Vec<(String, String)> {
    let mut env = vec![
        (
            "AWS_ACCESS_KEY_ID".to_string(),
            "AKIDFREEZERFLEETTEST".to_string(),
        ),
        (
            "AWS_SECRET_ACCESS_KEY".into(),
            "testsecretkey/notreal+abcdefghijklmnopqrst".into(),
        ),
        ("AWS_CONFIG_FILE".into(), dir.join("config").display().to_string()),
        (
            "AWS_SHARED_CREDENTIALS_FILE".into(),
            dir.join("credentials").display().to_string(),
        ),
        ("AWS_EC2_METADATA_DISABLED".into(), "true".into()),
    ];
    if let Some(t) = token {
        env.push(("AWS_SESSION_TOKEN".into(), t.into()));
    }
    env
}

#[test]
fn mqtt_over_websockets_signs_every_connection_with_sigv4_and_delivers_every_event() {
    let Setup { pki, broker, sub } = Setup::new(3);
    let gate = WsGate::start(&pki, broker.port);
    let args = [
        "run",
        "--transport",
        "mqtt-ws",
        "--endpoint",
        "localhost",
        "--port",
        &gate.port.to_string(),
        "--ca",
        &pki.ca_pem().display().to_string(),
        "--devices",
        "3",
        "--region",
        "eu-west-1",
        "--interval",
        "250ms",
        "--duration",
        "3s",
        "--report",
        "-",
    ];
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    let token = "IQoJb3JpZ2luX2VjEJr//////////wEaCXVzLWVhc3QtMSJHMEUCIQ";
    let mut fleet = Fleet::spawn_with_env(&strs(&args), &aws_env(pki.path(), Some(token)));
    fleet.close_stdin();
    let (code, stderr, stdout) = fleet.finish(Duration::from_secs(30));
    assert_eq!(code, 0, "{stderr}");
    assert!(stderr.contains("over WebSockets"), "{stderr}");
    let report = report_of(&stdout, &stderr);
    let published = num(&report, "/messages/published");
    assert!(published >= 30, "{report:#}");
    assert_eq!(num(&report, "/messages/acknowledged"), published, "{report:#}");
    assert_eq!(
        sub.wait_for(published as usize, Duration::from_secs(5)).len() as u64,
        published
    );
    let urls = gate.urls();
    assert_eq!(urls.len(), 3, "one signed upgrade per device: {urls:?}");
    for url in &urls {
        assert!(url.starts_with("/mqtt?"), "{url}");
        for param in [
            "X-Amz-Algorithm=AWS4-HMAC-SHA256",
            "X-Amz-Credential=AKIDFREEZERFLEETTEST%2F",
            "X-Amz-Date=",
            "X-Amz-SignedHeaders=host",
            "X-Amz-Signature=",
            "X-Amz-Security-Token=",
        ] {
            assert!(url.contains(param), "{param} missing in {url}");
        }
        assert!(
            url.contains("%2Feu-west-1%2Fiotdevicegateway%2Faws4_request"),
            "{url}"
        );
    }
    for secret in ["testsecretkey", token] {
        assert!(
            !stderr.contains(secret) && !stdout.contains(secret),
            "a secret was printed"
        );
    }
}

#[test]
fn mqtt_over_websockets_without_credentials_names_where_it_looked() {
    let pki = Pki::new(1);
    let gate = WsGate::start(&pki, 1);
    let args = [
        "run",
        "--transport",
        "mqtt-ws",
        "--endpoint",
        "localhost",
        "--port",
        &gate.port.to_string(),
        "--ca",
        &pki.ca_pem().display().to_string(),
        "--region",
        "eu-west-1",
        "--duration",
        "2s",
    ];
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    let mut env = aws_env(pki.path(), None);
    env.retain(|(k, _)| !k.starts_with("AWS_ACCESS") && !k.starts_with("AWS_SECRET"));
    let mut fleet = Fleet::spawn_with_env(&strs(&args), &env);
    fleet.close_stdin();
    let (code, stderr, _) = fleet.finish(Duration::from_secs(30));
    assert_eq!(code, 2, "{stderr}");
    let errors: Vec<&str> = stderr.lines().filter(|l| l.starts_with("error: ")).collect();
    assert_eq!(errors.len(), 1, "{stderr}");
    assert!(
        errors[0].contains("no AWS credentials found") && errors[0].contains("~/.aws/credentials"),
        "{stderr}"
    );
}
