//! The pipeline's other ways in: events straight to Kinesis and Firehose (moto's emulator on
//! loopback, read back with boto3), through an HTTPS proxy in front of Firehose that must never
//! take TLS below 1.2, and read back from Kinesis by `watch --kinesis` as the analytics side
//! does. One emulator serves the whole file; each test has streams of its own.

mod common;

use std::collections::BTreeMap;
use std::sync::OnceLock;
use std::sync::atomic::Ordering;
use std::time::Duration;

use common::aws::{Kinesalite, Moto, RefusingKinesis, aws_env, refused_with_env};
use common::standin::{Answer, HttpsServer};
use common::*;

fn moto() -> &'static Moto {
    static MOTO: OnceLock<Moto> = OnceLock::new();
    MOTO.get_or_init(Moto::start)
}

/// A folder for the fleet's (absent) AWS config files.
fn scratch() -> tempfile::TempDir {
    tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap()
}

fn args(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

/// Runs the fleet with `args` against `endpoint` (stdin closed); (exit code, stderr, report).
fn run_aws(args: &[String], endpoint: &str) -> (i32, String, serde_json::Value) {
    let dir = scratch();
    let mut all = args.to_vec();
    all.extend(["--report".into(), "-".into()]);
    let mut fleet = Fleet::spawn_with_env(&strs(&all), &aws_env(endpoint, dir.path()));
    fleet.close_stdin();
    let (code, stderr, stdout) = fleet.finish(Duration::from_secs(60));
    assert!(
        !stderr.contains("fleet-secret-never-printed"),
        "a secret was printed"
    );
    (code, stderr.clone(), report_of(&stdout, &stderr))
}

/// Per device, the seqs in the order they stand in the stream.
fn seqs_in_order(events: &[(String, String, serde_json::Value)]) -> BTreeMap<String, Vec<u64>> {
    let mut by: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    for (_, _, e) in events {
        by.entry(e["device_id"].as_str().unwrap().to_string())
            .or_default()
            .push(e["seq"].as_u64().unwrap());
    }
    by
}

/// Every device 1..=n and every seq 1..=count once, in order.
fn assert_complete(by: &BTreeMap<String, Vec<u64>>, n: usize, count: u64) {
    assert_eq!(by.len(), n, "devices: {:?}", by.keys());
    let want: Vec<u64> = (1..=count).collect();
    for (device, seqs) in by {
        assert_eq!(seqs, &want, "{device}: seqs in stream order");
    }
}

#[test]
fn twenty_devices_reach_every_shard_of_kinesis_once_in_order_and_watch_agrees() {
    let m = moto();
    m.aws(&["create-stream", "fleet20", "4"]);
    let dir = scratch();
    let env = aws_env(&m.url(), dir.path());
    let watch = Fleet::spawn_with_env(
        &["watch", "--kinesis", "fleet20", "--region", "eu-west-1", "--json"],
        &env,
    );
    assert!(
        watch.wait_stderr(
            "watching Kinesis stream fleet20 (4 shard(s))",
            Duration::from_secs(20)
        ),
        "{}",
        watch.stderr()
    );
    std::thread::sleep(Duration::from_millis(500));
    let fleet = args(&[
        "run",
        "--sink",
        "kinesis",
        "--stream",
        "fleet20",
        "--region",
        "eu-west-1",
        "--devices",
        "20",
        "--interval",
        "200ms",
        "--count",
        "5",
        "--seed",
        "7",
    ]);
    let (code, stderr, report) = run_aws(&fleet, &m.url());
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(
        num(&report, "/sinks/kinesis/messages/acknowledged"),
        100,
        "{stderr}"
    );
    assert_eq!(num(&report, "/messages/failed"), 0);

    let events = m.stream_events("fleet20");
    assert_eq!(events.len(), 100, "records in the stream");
    let mut shard_of: BTreeMap<String, String> = BTreeMap::new();
    for (shard, key, event) in &events {
        assert_eq!(
            key,
            event["device_id"].as_str().unwrap(),
            "partition key = device id"
        );
        let first = shard_of.entry(key.clone()).or_insert_with(|| shard.clone());
        assert_eq!(first, shard, "{key}: all its records in one shard");
    }
    let shards: std::collections::BTreeSet<&String> = shard_of.values().collect();
    assert!(shards.len() >= 2, "20 devices spread over shards: {shards:?}");
    assert_complete(&seqs_in_order(&events), 20, 5);

    // The watcher saw the same 100, none missing or out of order.
    assert!(watch.wait_stderr("", Duration::from_millis(1500)));
    watch.signal("INT");
    let (wcode, wstderr, wstdout) = watch.finish(Duration::from_secs(20));
    assert_eq!(wcode, 0, "{wstderr}");
    let lines: Vec<serde_json::Value> = wstdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 100, "{wstderr}");
    let total = wstderr
        .lines()
        .find(|l| l.starts_with("total (20)"))
        .unwrap_or_else(|| panic!("no total row:\n{wstderr}"));
    let cols: Vec<&str> = total.split_whitespace().collect();
    assert_eq!(
        &cols[2..6],
        &["100", "0", "0", "0"],
        "received, missing, duplicates, out of order: {total}"
    );
}

#[test]
fn one_inject_press_sends_the_same_event_to_mqtt_and_to_kinesis() {
    let m = moto();
    m.aws(&["create-stream", "both", "2"]);
    let pki = Pki::new(2);
    let broker = Mosquitto::start(&pki);
    let sub = Subscriber::start(&pki, broker.port, "freezers");
    let mut a = certs_args(&pki, broker.port);
    a.extend(args(&[
        "--sink",
        "mqtt,kinesis",
        "--stream",
        "both",
        "--region",
        "eu-west-1",
        "--interval",
        "0",
    ]));
    a.extend(args(&["--report", "-"]));
    let dir = scratch();
    let mut fleet = Fleet::spawn_with_env(&strs(&a), &aws_env(&m.url(), dir.path()));
    assert!(
        fleet.wait_stderr("2 of 2 device(s) connected", Duration::from_secs(20)),
        "{}",
        fleet.stderr()
    );
    fleet.send("");
    assert!(
        fleet.wait_stderr("injected freezer1 seq=1", Duration::from_secs(10)),
        "{}",
        fleet.stderr()
    );
    let mqtt = sub.wait_for(1, Duration::from_secs(10));
    assert!(wait_until(Duration::from_secs(10), || m.stream_events("both").len() == 1).is_some());
    fleet.send("q");
    let (code, stderr, stdout) = fleet.finish(Duration::from_secs(30));
    assert_eq!(code, 0, "{stderr}");
    let kinesis = m.stream_events("both");
    assert_eq!(mqtt.len(), 1, "{mqtt:?}");
    assert_eq!(kinesis.len(), 1, "{kinesis:?}");
    assert_eq!(
        &kinesis[0].2, &mqtt[0],
        "the same event, byte for byte, on both paths"
    );
    assert_eq!(mqtt[0]["seq"], 1);
    let report = report_of(&stdout, &stderr);
    for sink in ["mqtt", "kinesis"] {
        assert_eq!(
            num(&report, &format!("/sinks/{sink}/messages/injected")),
            1,
            "{sink}"
        );
        assert_eq!(
            num(&report, &format!("/sinks/{sink}/messages/acknowledged")),
            1,
            "{sink}"
        );
    }
}

#[test]
fn when_every_mqtt_device_is_refused_kinesis_still_gets_every_reading() {
    let m = moto();
    m.aws(&["create-stream", "still", "1"]);
    let pki = Pki::new(2);
    // Closes each connection right after CONNECT, as IoT Core does when iot:Connect is denied.
    let refusing = common::standin::RefusingServer::start(&pki, common::standin::Refuse::AfterConnect);
    let mut a = certs_args(&pki, refusing.port);
    a.extend(args(&[
        "--sink",
        "mqtt,kinesis",
        "--stream",
        "still",
        "--region",
        "eu-west-1",
        "--interval",
        "250ms",
        "--count",
        "24",
        "--backoff-min",
        "200ms",
        "--backoff-max",
        "400ms",
        // Devices retry a refusal until the run ends; this one ends when both sinks are done.
        "--give-up-after",
        "5s",
    ]));
    let (code, stderr, report) = run_aws(&a, &m.url());
    assert_eq!(code, 1, "the MQTT sink failed: {stderr}");
    assert_eq!(
        num(
            &report,
            "/sinks/mqtt/device_failures/connect not allowed by policy/count"
        ),
        2,
        "{stderr}"
    );
    assert_eq!(
        num(&report, "/sinks/kinesis/messages/acknowledged"),
        48,
        "{stderr}"
    );
    assert_complete(&seqs_in_order(&m.stream_events("still")), 2, 24);
}

#[test]
fn firehose_delivers_every_event_as_one_json_line_in_the_bucket() {
    let m = moto();
    m.aws(&["create-firehose", "fleet-delivery", "fleet-bucket"]);
    let fleet = args(&[
        "run",
        "--sink",
        "firehose",
        "--delivery-stream",
        "fleet-delivery",
        "--region",
        "eu-west-1",
        "--devices",
        "5",
        "--interval",
        "100ms",
        "--count",
        "4",
    ]);
    let (code, stderr, report) = run_aws(&fleet, &m.url());
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(num(&report, "/sinks/firehose/messages/acknowledged"), 20);
    let text = m.aws(&["read-bucket", "fleet-bucket"])["objects"]
        .as_str()
        .unwrap()
        .to_string();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 20, "one line per event:\n{text}");
    let mut seen = std::collections::BTreeSet::new();
    for line in lines {
        let e: serde_json::Value = serde_json::from_str(line).expect("each line is one event");
        assert!(seen.insert((
            e["device_id"].as_str().unwrap().to_string(),
            e["seq"].as_u64().unwrap()
        )));
    }
    assert_eq!(seen.len(), 20);
}

#[test]
fn a_role_is_assumed_with_its_external_id_and_its_credentials_sign_the_puts() {
    let m = moto();
    m.aws(&["create-stream", "assumed", "1"]);
    let fleet = args(&[
        "run",
        "--sink",
        "kinesis",
        "--stream",
        "assumed",
        "--region",
        "eu-west-1",
        "--devices",
        "2",
        "--interval",
        "100ms",
        "--count",
        "3",
        "--role-arn",
        "arn:aws:iam::123456789012:role/freezer-ingest",
        "--external-id",
        "acme-ext-42",
        "--role-session-name",
        "fleet-assume-test",
    ]);
    let (code, stderr, _) = run_aws(&fleet, &m.url());
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(m.stream_events("assumed").len(), 6);
    let recording = m.recording();
    let body = |r: &serde_json::Value| {
        let b = r["body"].as_str().unwrap_or_default();
        if r["body_encoded"].as_bool() == Some(true) {
            use base64::Engine as _;
            String::from_utf8(base64::engine::general_purpose::STANDARD.decode(b).unwrap()).unwrap()
        } else {
            b.to_string()
        }
    };
    let assume: Vec<&serde_json::Value> = recording
        .iter()
        .filter(|r| body(r).contains("Action=AssumeRole") && body(r).contains("fleet-assume-test"))
        .collect();
    assert_eq!(assume.len(), 1, "one AssumeRole for the run");
    let call = body(assume[0]);
    assert!(call.contains("ExternalId=acme-ext-42"), "{call}");
    assert!(call.contains("role%2Ffreezer-ingest"), "{call}");
    assert!(
        assume[0]["headers"]["Authorization"]
            .as_str()
            .unwrap()
            .contains("Credential=AKIDFLEETTEST/"),
        "AssumeRole is signed with the base credentials"
    );
    let puts: Vec<&str> = recording
        .iter()
        .filter(|r| {
            r["headers"]["X-Amz-Target"] == "Kinesis_20131202.PutRecords" && body(r).contains("\"assumed\"")
        })
        .map(|r| r["headers"]["Authorization"].as_str().unwrap())
        .collect();
    assert!(!puts.is_empty());
    for auth in puts {
        assert!(
            auth.contains("Credential=ASIA"),
            "signed with the role's credentials: {auth}"
        );
        assert!(!auth.contains("AKIDFLEETTEST"), "{auth}");
    }
}

#[test]
fn refused_records_are_sent_again_none_lost_each_device_in_order() {
    let m = moto();
    m.aws(&["create-stream", "refusing", "2"]);
    // Every third record refused inside the response, every fifth request refused whole.
    let gate = RefusingKinesis::start(m.port, 3, 5);
    let fleet = args(&[
        "run",
        "--sink",
        "kinesis",
        "--stream",
        "refusing",
        "--region",
        "eu-west-1",
        "--devices",
        "10",
        "--interval",
        "100ms",
        "--count",
        "10",
    ]);
    let (code, stderr, report) = run_aws(&fleet, &gate.url());
    assert_eq!(code, 0, "{stderr}");
    let refused = gate.refused.records.load(Ordering::SeqCst);
    let whole = gate.refused.records_in_requests.load(Ordering::SeqCst);
    assert!(
        refused >= 10 && gate.refused.requests.load(Ordering::SeqCst) >= 2,
        "{refused} {whole}"
    );
    assert_eq!(num(&report, "/messages/acknowledged"), 100, "{stderr}");
    assert_eq!(num(&report, "/messages/failed"), 0);
    assert_eq!(
        num(&report, "/messages/resent"),
        refused + whole,
        "every refusal sent again once"
    );
    assert_eq!(
        num(
            &report,
            "/refusals/ProvisionedThroughputExceededException (retried)"
        ),
        refused + whole
    );
    let events = m.stream_events("refusing");
    assert_eq!(events.len(), 100, "nothing lost, nothing twice");
    assert_complete(&seqs_in_order(&events), 10, 10);
}

#[test]
fn the_kinesis_watcher_follows_a_shard_split() {
    // moto moves a split shard's records and keeps routing to it; kinesalite splits as Kinesis does.
    let k = Kinesalite::start();
    k.aws(&["create-stream", "resharded", "1"]);
    let dir = scratch();
    let env = aws_env(&k.url(), dir.path());
    let watch = Fleet::spawn_with_env(
        &["watch", "--kinesis", "resharded", "--region", "eu-west-1"],
        &env,
    );
    assert!(watch.wait_stderr("watching Kinesis stream resharded", Duration::from_secs(20)));
    std::thread::sleep(Duration::from_millis(500));
    let fleet_args = args(&[
        "run",
        "--sink",
        "kinesis",
        "--stream",
        "resharded",
        "--region",
        "eu-west-1",
        "--devices",
        "6",
        "--interval",
        "200ms",
        "--count",
        "20",
    ]);
    let mut fleet = Fleet::spawn_with_env(&strs(&fleet_args), &env);
    fleet.close_stdin();
    std::thread::sleep(Duration::from_millis(1500));
    let split = k.aws(&["split-shard", "resharded"]);
    assert_eq!(split["split"], "shardId-000000000000");
    let (code, stderr, _) = fleet.finish(Duration::from_secs(60));
    assert_eq!(code, 0, "{stderr}");
    // The children hold the later events.
    let events = common::aws::stream_events(&k.url(), "resharded");
    assert_eq!(events.len(), 120);
    assert!(
        events.iter().any(|(shard, _, _)| shard != "shardId-000000000000"),
        "nothing went to a child shard"
    );
    std::thread::sleep(Duration::from_secs(7));
    watch.signal("INT");
    let (wcode, _, wstdout) = watch.finish(Duration::from_secs(20));
    assert_eq!(wcode, 0);
    let total = wstdout
        .lines()
        .find(|l| l.starts_with("total (6)"))
        .unwrap_or_else(|| panic!("{wstdout}"));
    let cols: Vec<&str> = total.split_whitespace().collect();
    assert_eq!(&cols[2..6], &["120", "0", "0", "0"], "{total}");
}

// The HTTPS proxy in front of Firehose.

/// `run --sink firehose-proxy` at `server` with the test PKI's CA and a client certificate.
fn proxy_args(pki: &Pki, port: u16, extra: &[&str]) -> Vec<String> {
    let (cert, key) = pki.device_files("freezer1");
    let mut a = args(&[
        "run",
        "--sink",
        "firehose-proxy",
        "--url",
        &format!("https://localhost:{port}/v1/freezers"),
        "--delivery-stream",
        "freezer-delivery",
        "--ca",
        &pki.ca_pem().display().to_string(),
        "--cert",
        &cert.display().to_string(),
        "--key",
        &key.display().to_string(),
        "--header",
        "x-api-key: k-123-secret",
    ]);
    a.extend(extra.iter().map(|s| s.to_string()));
    a
}

#[test]
fn the_proxy_receives_every_event_as_a_firehose_record() {
    let pki = Pki::new(1);
    let server = HttpsServer::start(&pki, Answer::Ok);
    let a = proxy_args(
        &pki,
        server.port,
        &["--devices", "3", "--interval", "100ms", "--count", "4"],
    );
    let (code, stderr, report) = run_report(&strs(&a), Duration::from_secs(60));
    assert_eq!(code, 0, "{stderr}");
    assert!(!stderr.contains("k-123-secret"), "a header value was printed");
    assert_eq!(num(&report, "/sinks/firehose-proxy/messages/acknowledged"), 12);
    let requests = server.requests_with_headers();
    assert_eq!(requests.len(), 12);
    let mut seen = std::collections::BTreeSet::new();
    for (path, body, headers) in &requests {
        assert_eq!(path, "/v1/freezers");
        assert!(
            headers.contains(&"x-api-key: k-123-secret".to_string()),
            "{headers:?}"
        );
        assert!(
            headers.contains(&"content-type: application/json".to_string()),
            "{headers:?}"
        );
        let v: serde_json::Value = serde_json::from_slice(body).unwrap();
        assert_eq!(v["DeliveryStreamName"], "freezer-delivery");
        use base64::Engine as _;
        let data = base64::engine::general_purpose::STANDARD
            .decode(v["Data"].as_str().unwrap())
            .unwrap();
        assert_eq!(data.last(), Some(&b'\n'), "each record is a JSON line");
        let e: serde_json::Value = serde_json::from_slice(&data).unwrap();
        seen.insert((
            e["device_id"].as_str().unwrap().to_string(),
            e["seq"].as_u64().unwrap(),
        ));
    }
    assert_eq!(seen.len(), 12, "every event once");
    assert!(
        server.connections() <= 4,
        "kept-alive connections: {}",
        server.connections()
    );
}

#[test]
fn the_proxy_retries_a_429_and_counts_a_403_by_status() {
    let pki = Pki::new(1);
    let throttling = HttpsServer::start(&pki, Answer::ThrottleFirst(2));
    let a = proxy_args(
        &pki,
        throttling.port,
        &["--devices", "1", "--interval", "100ms", "--count", "3"],
    );
    let (code, stderr, report) = run_report(&strs(&a), Duration::from_secs(60));
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(num(&report, "/messages/acknowledged"), 3);
    assert_eq!(num(&report, "/refusals/HTTP 429 (retried)"), 2);
    assert_eq!(num(&report, "/messages/resent"), 2);
    assert_eq!(throttling.requests().len(), 5);

    let forbidden = HttpsServer::start(&pki, Answer::Status(403));
    let a = proxy_args(
        &pki,
        forbidden.port,
        &["--devices", "1", "--interval", "100ms", "--count", "3"],
    );
    let (code, stderr, report) = run_report(&strs(&a), Duration::from_secs(60));
    assert_eq!(code, 1, "a sink that delivered nothing fails the run: {stderr}");
    assert!(
        stderr.contains("sink firehose-proxy delivered none of its 3 event(s)"),
        "{stderr}"
    );
    assert_eq!(num(&report, "/refusals/HTTP 403"), 3);
    assert_eq!(num(&report, "/messages/failed"), 3);
    assert_eq!(forbidden.requests().len(), 3, "a 403 is not retried");
}

#[test]
fn a_proxy_that_offers_only_tls_1_1_or_1_0_is_refused_naming_the_version() {
    let pki = Pki::new(1);
    for (flag, name) in [("-tls1_1", "TLS 1.1"), ("-tls1", "TLS 1.0")] {
        let old = OldTls::start(&pki, flag);
        let a = proxy_args(&pki, old.port, &["--devices", "1", "--duration", "5s"]);
        let (code, stderr, _) = run_to_end(&strs(&a), Duration::from_secs(30));
        assert_eq!(code, 2, "{stderr}");
        let errors: Vec<&str> = stderr.lines().filter(|l| l.starts_with("error: ")).collect();
        assert_eq!(errors.len(), 1, "{stderr}");
        let url = format!("--url https://localhost:{}/v1/freezers", old.port);
        assert!(errors[0].contains(&url), "{stderr}");
        assert!(errors[0].contains(&format!("offered {name} only")), "{stderr}");
        assert!(errors[0].contains("TLS 1.2"), "{stderr}");
    }
}

// Bad input that needs an AWS environment of its own (the rest is in bad_input.rs).

#[test]
fn no_aws_credentials_names_the_places_searched() {
    let dir = scratch();
    let mut env = aws_env(&moto().url(), dir.path());
    env.retain(|(k, _)| !k.starts_with("AWS_ACCESS") && !k.starts_with("AWS_SECRET"));
    refused_with_env(
        &env,
        &[
            "run",
            "--sink",
            "kinesis",
            "--stream",
            "s",
            "--region",
            "eu-west-1",
            "--duration",
            "1s",
        ],
        &[
            "no AWS credentials found",
            "AWS_ACCESS_KEY_ID",
            "~/.aws/credentials",
        ],
    );
}

#[test]
fn an_unknown_region_is_refused() {
    let dir = scratch();
    let mut env = aws_env(&moto().url(), dir.path());
    env.retain(|(k, _)| k != "AWS_ENDPOINT_URL");
    refused_with_env(
        &env,
        &[
            "run",
            "--sink",
            "kinesis",
            "--stream",
            "s",
            "--region",
            "eu-wset-1",
            "--duration",
            "1s",
        ],
        &["--region eu-wset-1", "not an AWS region", "eu-west-1"],
    );
}

#[test]
fn a_stream_that_does_not_exist_is_refused_before_the_run() {
    let dir = scratch();
    refused_with_env(
        &aws_env(&moto().url(), dir.path()),
        &[
            "run",
            "--sink",
            "kinesis",
            "--stream",
            "no_such_stream",
            "--region",
            "eu-west-1",
            "--duration",
            "1s",
        ],
        &[
            "--stream no_such_stream",
            "no such kinesis stream in eu-west-1",
            "create-stream",
        ],
    );
}
