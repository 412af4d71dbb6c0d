//! Bad input is refused before the first connection: one line naming the flag or file, the
//! cause and the fix; exit code 2; no panic; no key material. One test per case, each a
//! specification: the arguments, and the words the one line must contain.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

use common::*;

/// The files the cases use, made once for this test file (in Cargo's scratch folder for
/// integration tests, so a static fixture leaves nothing in /tmp).
struct Bad {
    pki: Pki,
    /// The base64 body lines of every key in the fixture: none may ever be printed.
    secrets: Vec<String>,
}

fn fx() -> &'static Bad {
    static FIXTURE: OnceLock<Bad> = OnceLock::new();
    FIXTURE.get_or_init(Bad::new)
}

fn openssl(args: &[&str]) {
    let ok = Command::new("openssl")
        .args(args)
        .status()
        .expect("openssl is installed (README's test command installs it)");
    assert!(ok.success(), "openssl {args:?}");
}

fn text(path: &Path) -> String {
    path.display().to_string()
}

/// Copies `files` (source, name) into `dir/freezer1/`.
fn device_folder(dir: &Path, files: &[(&Path, &str)]) {
    std::fs::create_dir_all(dir.join("freezer1")).unwrap();
    for (from, name) in files {
        std::fs::copy(from, dir.join("freezer1").join(name)).unwrap();
    }
}

impl Bad {
    fn new() -> Bad {
        let pki = Pki::new_in(Path::new(env!("CARGO_TARGET_TMPDIR")), 2);
        let dir = pki.path().to_path_buf();
        let (cert1, key1) = pki.device_files("freezer1");
        let (_, key2) = pki.device_files("freezer2");
        write(&dir.join("empty.pem"), "");
        let (enc8, enc_legacy) = (
            text(&dir.join("encrypted-pkcs8.key")),
            text(&dir.join("encrypted-legacy.key")),
        );
        let key1s = text(&key1);
        openssl(&[
            "pkcs8",
            "-topk8",
            "-in",
            &key1s,
            "-out",
            &enc8,
            "-passout",
            "pass:s3cret",
            "-v2",
            "aes-256-cbc",
        ]);
        openssl(&[
            "ec",
            "-in",
            &key1s,
            "-out",
            &enc_legacy,
            "-aes256",
            "-passout",
            "pass:s3cret",
        ]);
        openssl(&[
            "pkey",
            "-in",
            &key1s,
            "-pubout",
            "-out",
            &text(&dir.join("public.pem.key")),
        ]);
        let future = pki.ca.client_with("future", |params| {
            params.not_before = rcgen::date_time_ymd(2090, 1, 1);
            params.not_after = rcgen::date_time_ymd(2091, 1, 1);
        });
        write(&dir.join("future.crt"), &future.0);
        write(&dir.join("future.key"), &future.1);
        write(&dir.join("garbage.crt"), "this is not a certificate\n");

        device_folder(&dir.join("no-cert"), &[(&key1, "a-private.pem.key")]);
        device_folder(&dir.join("no-key"), &[(&cert1, "a-certificate.pem.crt")]);
        let two = [
            (&*cert1, "a-certificate.pem.crt"),
            (&*cert1, "b-certificate.pem.crt"),
            (&*key1, "a-private.pem.key"),
        ];
        device_folder(&dir.join("two-certs"), &two);
        device_folder(
            &dir.join("mismatched"),
            &[(&cert1, "a-certificate.pem.crt"), (&key2, "a-private.pem.key")],
        );
        let expired = pki.ca.client_with("old", |params| {
            params.not_before = rcgen::date_time_ymd(2020, 1, 1);
            params.not_after = rcgen::date_time_ymd(2021, 1, 1);
        });
        let expired_dir = pki.write_device("zz-expired", &expired.0, &expired.1);
        std::fs::create_dir_all(dir.join("only-expired")).unwrap();
        std::fs::rename(&expired_dir, dir.join("only-expired/zz-expired")).unwrap();
        std::fs::create_dir_all(dir.join("empty-dir")).unwrap();

        let devices = text(&pki.devices());
        write(
            &dir.join("unknown-key.toml"),
            "endpoint = \"localhost\"\nendpiont = \"typo\"\n",
        );
        write(
            &dir.join("qos.toml"),
            &format!("endpoint = \"localhost\"\nqos = 2\ncerts = \"{devices}\"\n"),
        );
        write(
            &dir.join("bool.toml"),
            "endpoint = \"localhost\"\npersistent_session = \"yes\"\n",
        );
        let backoff = format!("endpoint = \"localhost\"\nbackoff_max = \"soon\"\ncerts = \"{devices}\"\n");
        write(&dir.join("backoff.toml"), &backoff);
        write(&dir.join("bad.toml"), "endpoint = localhost\n");
        let secrets = key_lines(&dir);
        assert!(!secrets.is_empty());
        Bad { pki, secrets }
    }

    /// A file or folder of the fixture.
    fn at(&self, name: &str) -> PathBuf {
        self.pki.path().join(name)
    }

    fn device(&self, id: &str) -> (PathBuf, PathBuf) {
        self.pki.device_files(id)
    }

    /// `run` against a closed port with the fixture's CA, plus `extra`.
    fn base(&self, extra: &[&str]) -> Vec<String> {
        let ca = text(&self.pki.ca_pem());
        let mut v: Vec<String> = ["run", "--endpoint", "localhost", "--port", "1", "--ca", &ca]
            .map(String::from)
            .into();
        v.extend(extra.iter().map(|s| s.to_string()));
        v
    }

    /// `base` with `--certs dir`.
    fn certs(&self, dir: &Path, extra: &[&str]) -> Vec<String> {
        let mut v = self.base(&["--certs", &text(dir)]);
        v.extend(extra.iter().map(|s| s.to_string()));
        v
    }

    /// `base` with the fixture's device folders.
    fn fleet(&self, extra: &[&str]) -> Vec<String> {
        self.certs(&self.pki.devices(), extra)
    }

    /// `base` with `--cert cert --key key`.
    fn pair(&self, cert: &Path, key: &Path) -> Vec<String> {
        self.base(&["--cert", &text(cert), "--key", &text(key)])
    }

    /// `run --config` with a fixture file.
    fn config(&self, name: &str) -> Vec<String> {
        vec!["run".into(), "--config".into(), text(&self.at(name))]
    }

    /// Plain `run` with `extra` and the fixture's device folders (no --ca).
    fn bare(&self, extra: &[&str]) -> Vec<String> {
        let mut v: Vec<String> = std::iter::once("run")
            .chain(extra.iter().copied())
            .map(String::from)
            .collect();
        v.extend(["--certs".to_string(), text(&self.pki.devices())]);
        v
    }
}

/// The base64 body lines of every key under `dir`.
fn key_lines(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let path = e.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else if let Ok(text) = std::fs::read_to_string(&path)
                && text.contains("PRIVATE KEY-----")
            {
                out.extend(
                    text.lines()
                        .filter(|l| !l.starts_with("-----") && l.len() > 20)
                        .map(String::from),
                );
            }
        }
    }
    out
}

/// Runs the binary with `args` and checks the invariants of a refusal and the `needles`.
fn assert_refused(args: &[String], needles: &[&str]) {
    let (code, stderr, stdout) = run_to_end(&strs(args), Duration::from_secs(20));
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(code, 2, "exit code {code}, not 2; stderr:\n{stderr}");
    assert!(
        lines.len() == 1 && lines[0].starts_with("error: "),
        "not exactly one 'error:' line:\n{stderr}"
    );
    for needle in needles {
        assert!(stderr.contains(needle), "missing '{needle}' in:\n{stderr}");
    }
    assert!(
        !stderr.contains("panicked") && !stderr.contains("RUST_BACKTRACE"),
        "{stderr}"
    );
    let secrets = &fx().secrets;
    assert!(
        !secrets
            .iter()
            .any(|l| stderr.contains(l.as_str()) || stdout.contains(l.as_str())),
        "printed key material"
    );
}

/// One bad-input case: `refused!(name, |fixture| args, ["words", …])`.
macro_rules! refused {
    ($name:ident, |$f:ident| $args:expr, [$($needle:expr),+ $(,)?]) => {
        #[test]
        fn $name() {
            let $f = fx();
            let args: Vec<String> = $args;
            assert_refused(&args, &[$($needle),+]);
        }
    };
}

// Trust anchors.
refused!(
    missing_ca_file,
    |f| f.bare(&[
        "--endpoint",
        "localhost",
        "--ca",
        "/nonexistent/AmazonRootCA1.pem"
    ]),
    ["--ca /nonexistent/AmazonRootCA1.pem", "no such file"]
);
refused!(
    key_file_as_ca,
    |f| f.bare(&["--endpoint", "localhost", "--ca", &text(&f.device("freezer1").1)]),
    [
        "--ca",
        "holds a private key, not a certificate",
        "AmazonRootCA1.pem"
    ]
);
refused!(
    empty_ca_file,
    |f| f.bare(&["--endpoint", "localhost", "--ca", &text(&f.at("empty.pem"))]),
    ["--ca", "no PEM certificate"]
);
refused!(
    ca_folder_instead_of_file,
    |f| f.bare(&["--endpoint", "localhost", "--ca", &text(f.pki.path())]),
    ["--ca", "folder, not a file"]
);

// Device folders.
refused!(
    missing_certs_folder,
    |f| f.certs(Path::new("/nonexistent/certs"), &[]),
    ["--certs /nonexistent/certs", "no such folder"]
);
refused!(
    certs_folder_without_device_folders,
    |f| f.certs(&f.at("empty-dir"), &[]),
    ["--certs", "no device folders"]
);
refused!(
    device_folder_without_certificate,
    |f| f.certs(&f.at("no-cert"), &[]),
    ["device freezer1", "no file ending in certificate.pem.crt"]
);
refused!(
    device_folder_with_two_certificates,
    |f| f.certs(&f.at("two-certs"), &[]),
    [
        "device freezer1",
        "2 files ending in certificate.pem.crt",
        "keep exactly one"
    ]
);
refused!(
    device_folder_without_key,
    |f| f.certs(&f.at("no-key"), &[]),
    ["device freezer1", "no file ending in private.pem.key"]
);
refused!(
    key_of_another_device,
    |f| f.certs(&f.at("mismatched"), &[]),
    [
        "device freezer1: private key",
        "does not belong to the certificate"
    ]
);
refused!(
    expired_certificate,
    |f| f.certs(&f.at("only-expired"), &[]),
    ["device zz-expired: certificate", "expired on", "2021"]
);
refused!(
    more_devices_than_folders,
    |f| f.fleet(&["--devices", "9"]),
    ["--devices", "9 devices requested", "only 2 device folders"]
);
refused!(
    zero_devices,
    |f| f.fleet(&["--devices", "0"]),
    ["--devices", "at least 1"]
);

// One shared certificate and key.
refused!(
    certificate_not_yet_valid,
    |f| f.pair(&f.at("future.crt"), &f.at("future.key")),
    ["--cert", "not valid until", "2090"]
);
refused!(
    encrypted_pkcs8_key,
    |f| f.pair(&f.device("freezer1").0, &f.at("encrypted-pkcs8.key")),
    ["--key", "password-protected"]
);
refused!(
    encrypted_legacy_key,
    |f| f.pair(&f.device("freezer1").0, &f.at("encrypted-legacy.key")),
    ["--key", "password-protected"]
);
refused!(
    public_key_as_key,
    |f| f.pair(&f.device("freezer1").0, &f.at("public.pem.key")),
    ["--key", "public key"]
);
refused!(
    certificate_as_key,
    |f| f.pair(&f.device("freezer1").0, &f.device("freezer1").0),
    ["--key", "holds a certificate"]
);
refused!(
    key_as_certificate,
    |f| f.pair(&f.device("freezer1").1, &f.device("freezer1").1),
    ["--cert", "holds a private key"]
);
refused!(
    garbage_as_certificate,
    |f| f.pair(&f.at("garbage.crt"), &f.device("freezer1").1),
    ["--cert", "no PEM certificate"]
);
refused!(
    missing_key_file,
    |f| f.pair(&f.device("freezer1").0, Path::new("/nonexistent/private.pem.key")),
    ["--key /nonexistent/private.pem.key", "no such file"]
);
refused!(
    cert_without_key,
    |f| f.base(&["--cert", &text(&f.device("freezer1").0)]),
    ["--cert", "without --key"]
);
refused!(
    no_identity,
    |f| f.base(&[]),
    ["no device identity", "--certs DIR", "--cert FILE --key FILE"]
);

// Endpoint and topic.
refused!(
    empty_endpoint,
    |f| f.bare(&["--endpoint", ""]),
    ["--endpoint", "empty"]
);
refused!(
    endpoint_with_scheme,
    |f| f.bare(&["--endpoint", "mqtts://abc.iot.us-east-1.amazonaws.com"]),
    ["--endpoint", "scheme", "--port"]
);
refused!(
    endpoint_with_port,
    |f| f.bare(&["--endpoint", "localhost:8883"]),
    ["--endpoint", "has a port"]
);
refused!(missing_endpoint, |f| f.bare(&[]), ["--endpoint is missing"]);
refused!(
    wildcard_topic,
    |f| f.fleet(&["--topic", "freezers/#"]),
    ["--topic", "wildcard"]
);
refused!(
    plus_topic,
    |f| f.fleet(&["--topic", "a/+/b"]),
    ["--topic", "wildcard"]
);
refused!(empty_topic, |f| f.fleet(&["--topic", ""]), ["--topic", "empty"]);

// Values.
refused!(
    qos_2,
    |f| f.fleet(&["--qos", "2"]),
    ["--qos", "QoS 2 is not supported", "0 or 1"]
);
refused!(
    bad_interval,
    |f| f.fleet(&["--interval", "5x"]),
    ["--interval", "'5x' is not a duration", "500ms"]
);
refused!(
    bad_duration,
    |f| f.fleet(&["--duration", "soon"]),
    ["--duration", "'soon' is not a duration"]
);
refused!(
    keep_alive_out_of_range,
    |f| f.fleet(&["--keep-alive", "5s"]),
    ["--keep-alive", "30s..20m"]
);
refused!(
    bind_to_a_foreign_address,
    |f| f.fleet(&["--bind", "192.0.2.7"]),
    ["--bind", "192.0.2.7 is not an address of this machine"]
);
refused!(
    bind_to_a_non_address,
    |f| f.fleet(&["--bind", "127.0.0.1,eth0"]),
    ["--bind", "'eth0' is not an IP address"]
);
refused!(
    zero_backoff,
    |f| f.fleet(&["--backoff-min", "0"]),
    ["--backoff-min", "longer than 0"]
);
refused!(
    backoff_max_below_min,
    |f| f.fleet(&["--backoff-min", "5s", "--backoff-max", "2s"]),
    ["--backoff-max", "at least --backoff-min"]
);
refused!(
    zero_give_up_after,
    |f| f.fleet(&["--give-up-after", "0s"]),
    ["--give-up-after", "0 s would give up before the first attempt"]
);
refused!(
    zero_offline_queue,
    |f| f.fleet(&["--offline-queue", "0"]),
    ["--offline-queue", "at least 1"]
);
refused!(
    zero_ramp_up,
    |f| f.fleet(&["--ramp-up", "0"]),
    ["--ramp-up", "never connect"]
);

// Other ways into IoT Core.
refused!(
    basic_ingest_rule_with_a_dash,
    |f| f.fleet(&["--basic-ingest", "freezer-rule"]),
    [
        "--basic-ingest",
        "'freezer-rule' is not an IoT rule name",
        "letters, digits or _"
    ]
);
refused!(
    empty_alpn,
    |f| f.fleet(&["--alpn", ""]),
    ["--alpn", "is not an ALPN protocol name"]
);
refused!(
    certificates_with_mqtt_over_websockets,
    |f| f.fleet(&["--transport", "mqtt-ws"]),
    ["--certs", "signs with AWS credentials, not a device certificate"]
);
refused!(
    metrics_address_without_port,
    |f| f.fleet(&["--metrics", "localhost"]),
    ["--metrics", "'localhost' is not ADDR:PORT"]
);
refused!(
    start_at_not_a_time,
    |f| f.fleet(&["--start-at", "tomorrow"]),
    ["--start-at", "'tomorrow' is not an RFC 3339 time"]
);
refused!(
    mqtt_version_with_https,
    |f| f.fleet(&["--transport", "https", "--mqtt-version", "5"]),
    ["--mqtt-version", "applies to MQTT only", "--transport https"]
);
refused!(
    watching_a_basic_ingest_topic_on_iot_core,
    |_f| [
        "watch",
        "--endpoint",
        "abc123-ats.iot.eu-west-1.amazonaws.com",
        "--topic",
        "$aws/rules/freezer_rule/freezers",
        "--cert",
        "c",
        "--key",
        "k"
    ]
    .map(String::from)
    .into(),
    [
        "--topic $aws/rules/freezer_rule/freezers",
        "nothing can subscribe",
        "AWS IoT Core"
    ]
);

// The config file.
refused!(
    config_persistent_session_not_a_bool,
    |f| f.config("bool.toml"),
    ["--config", "line 2", "persistent_session"]
);
refused!(
    config_backoff_not_a_duration,
    |f| f.config("backoff.toml"),
    ["`backoff_max` in", "'soon' is not a duration"]
);
refused!(
    missing_config,
    |_f| ["run", "--config", "/nonexistent/fleet.toml"]
        .map(String::from)
        .into(),
    ["--config /nonexistent/fleet.toml", "no such file"]
);
refused!(
    unknown_config_key,
    |f| f.config("unknown-key.toml"),
    ["--config", "line 2", "endpiont"]
);
refused!(
    config_qos_2,
    |f| f.config("qos.toml"),
    ["`qos` in", "QoS 2 is not supported"]
);
refused!(config_not_toml, |f| f.config("bad.toml"), ["--config", "line 1"]);

/// Unreadable files only mean something when not root (root reads every file).
#[test]
fn an_unreadable_key_is_named_when_not_root() {
    let root = Command::new("id")
        .arg("-u")
        .output()
        .unwrap()
        .stdout
        .starts_with(b"0");
    if root {
        return;
    }
    let f = fx();
    let locked = f.at("locked.key");
    let _ = std::fs::copy(f.device("freezer1").1, &locked);
    std::fs::set_permissions(&locked, std::os::unix::fs::PermissionsExt::from_mode(0o000)).unwrap();
    assert_refused(&f.pair(&f.device("freezer1").0, &locked), &["permission denied"]);
}

#[test]
fn a_private_key_readable_by_others_is_warned_about_without_its_content() {
    use std::os::unix::fs::PermissionsExt;
    let pki = Pki::new(3);
    let (_, key) = pki.device_files("freezer2");
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let mut args = certs_args(&pki, free_port());
    args.extend(["--duration", "1s"].map(String::from));
    let (code, stderr, _) = run_to_end(&strs(&args), Duration::from_secs(20));
    // The port is refused, so the run stops at the pre-flight check; the warning comes first.
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains("1 private key file(s) can be read by group or others"),
        "{stderr}"
    );
    assert!(
        stderr.contains("freezer2") && stderr.contains("chmod 600"),
        "{stderr}"
    );
    for line in key_lines(pki.path()) {
        assert!(!stderr.contains(&line), "key material printed");
    }
}

// Sinks other than MQTT.
refused!(
    unknown_sink,
    |f| f.bare(&["--sink", "mqtt,kafka"]),
    [
        "--sink kafka: unknown sink",
        "mqtt, kinesis, firehose, firehose-proxy"
    ]
);
refused!(
    kinesis_without_a_stream,
    |f| f.bare(&["--sink", "kinesis"]),
    ["--stream is missing", "--sink kinesis", "freezer_data"]
);
refused!(
    firehose_without_a_delivery_stream,
    |f| f.bare(&["--sink", "firehose"]),
    ["--delivery-stream is missing", "--sink firehose"]
);
refused!(
    firehose_proxy_without_a_url,
    |f| f.bare(&["--sink", "firehose-proxy", "--delivery-stream", "d"]),
    ["--url is missing", "--sink firehose-proxy", "https://"]
);
refused!(
    firehose_proxy_over_plain_http,
    |f| f.bare(&[
        "--sink",
        "firehose-proxy",
        "--delivery-stream",
        "d",
        "--url",
        "http://ingest.example/v1"
    ]),
    ["--url http://ingest.example/v1", "not https://", "TLS 1.2"]
);
refused!(
    a_header_without_a_colon,
    |f| f.bare(&[
        "--sink",
        "firehose-proxy",
        "--delivery-stream",
        "d",
        "--url",
        "https://ingest.example/v1",
        "--header",
        "x-api-key"
    ]),
    ["--header", "has no ':'", "'Name: value'"]
);
refused!(
    a_role_that_is_not_an_arn,
    |f| f.bare(&["--sink", "kinesis", "--stream", "s", "--role-arn", "freezer-role"]),
    ["--role-arn freezer-role", "not an IAM role ARN"]
);
refused!(
    an_external_id_without_a_role,
    |f| f.bare(&["--sink", "kinesis", "--stream", "s", "--external-id", "acme-7"]),
    ["--external-id", "without --role-arn"]
);
refused!(
    a_stream_name_with_a_slash,
    |f| f.bare(&["--sink", "kinesis", "--stream", "freezer/data"]),
    ["--stream freezer/data", "not a stream name"]
);
refused!(
    a_payload_larger_than_a_kinesis_record,
    |f| f.bare(&["--sink", "kinesis", "--stream", "s", "--payload-bytes", "2000000"]),
    ["--payload-bytes 2000000", "--sink kinesis", "at most"]
);
refused!(
    watch_with_neither_endpoint_nor_stream,
    |_f| vec!["watch".into()],
    ["--endpoint is missing", "--kinesis STREAM"]
);
refused!(
    watch_kinesis_with_a_certificate,
    |f| vec![
        "watch".into(),
        "--kinesis".into(),
        "freezer_data".into(),
        "--cert".into(),
        text(&f.device("freezer1").0),
        "--key".into(),
        text(&f.device("freezer1").1),
    ],
    ["--cert", "--kinesis reads the stream with AWS credentials"]
);
refused!(
    watch_kinesis_from_a_bad_time,
    |_f| vec![
        "watch".into(),
        "--kinesis".into(),
        "freezer_data".into(),
        "--from".into(),
        "yesterday".into()
    ],
    ["--from yesterday", "latest, trim-horizon or an RFC 3339 time"]
);
refused!(
    a_threshold_on_an_unknown_metric,
    |f| f.fleet(&["--fail-if", "pubak.p99 > 250ms"]),
    [
        "--fail-if 'pubak.p99 > 250ms'",
        "unknown metric 'pubak.p99'",
        "known: puback.p99"
    ]
);
refused!(
    a_latency_threshold_without_a_unit,
    |f| f.fleet(&["--fail-if", "puback.p99 > 250"]),
    ["--fail-if", "not a duration", "250ms"]
);
refused!(
    a_time_series_in_a_missing_folder,
    |f| f.fleet(&["--timeseries", "/nonexistent/run.csv"]),
    ["--timeseries /nonexistent/run.csv", "cannot create"]
);
refused!(
    a_scenario_stage_without_a_duration,
    |f| {
        let path = f.at("no-duration.toml");
        std::fs::write(&path, "[[stage]]\nname = \"soak\"\nrate = 10\n").unwrap();
        f.fleet(&["--scenario", &text(&path)])
    },
    ["stage 'soak'", "no duration", "drain"]
);
refused!(
    a_stage_with_more_devices_than_the_fleet,
    |f| {
        let path = f.at("too-many.toml");
        std::fs::write(
            &path,
            "[[stage]]\nname = \"ramp\"\nduration = \"1m\"\ndevices = 10000\n",
        )
        .unwrap();
        f.fleet(&["--scenario", &text(&path)])
    },
    [
        "stage 'ramp'",
        "devices = 10000 but the fleet has",
        "raise --devices"
    ]
);
refused!(
    a_stage_churn_that_is_not_a_rate,
    |f| {
        let path = f.at("churn.toml");
        std::fs::write(
            &path,
            "[[stage]]\nname = \"churn\"\nduration = \"1m\"\nchurn = \"often\"\n",
        )
        .unwrap();
        f.fleet(&["--scenario", &text(&path)])
    },
    ["stage 'churn'", "churn = \"often\"", "\"10/s\""]
);
refused!(
    an_outage_stage_without_a_duration,
    |f| {
        let path = f.at("outage.toml");
        std::fs::write(
            &path,
            "[[stage]]\nname = \"cut\"\ndisconnect = \"all\"\nthen_reconnect = false\n",
        )
        .unwrap();
        f.fleet(&["--scenario", &text(&path)])
    },
    ["stage 'cut'", "then_reconnect = false", "give it one"]
);
refused!(
    a_threshold_in_the_config_file_that_is_not_text,
    |f| {
        let path = f.at("thresholds-not-text.toml");
        std::fs::write(&path, "[thresholds]\nlost = 0\n").unwrap();
        f.fleet(&["--config", &text(&path)])
    },
    [
        "`thresholds.lost` in",
        "0 is not a condition",
        "lost = \"> 250ms\""
    ]
);
refused!(
    a_threshold_in_the_config_file_on_an_unknown_metric,
    |f| {
        let path = f.at("thresholds-unknown.toml");
        std::fs::write(&path, "[thresholds]\npubak.p99 = \"> 1s\"\n").unwrap();
        f.fleet(&["--config", &text(&path)])
    },
    ["`thresholds.pubak.p99` in", "unknown metric 'pubak.p99'"]
);
refused!(
    a_scenario_with_duration,
    |f| {
        let path = f.at("ok.toml");
        std::fs::write(
            &path,
            "[[stage]]\nname = \"soak\"\nduration = \"1s\"\nrate = 10\n",
        )
        .unwrap();
        f.fleet(&["--scenario", &text(&path), "--duration", "5s"])
    },
    ["--duration and scenario stages both given"]
);

// The freezer model and listening.
refused!(
    a_speed_of_zero,
    |f| f.fleet(&["--speed", "0"]),
    ["--speed", "0 is not a speed-up", "60 = a day in 24 minutes"]
);
refused!(
    an_unknown_field,
    |f| f.fleet(&["--fields", "state,colour"]),
    [
        "--fields",
        "'colour' is not a field",
        "state, setpoint, door, alarm"
    ]
);
refused!(
    an_alarm_threshold_out_of_reach,
    |f| f.fleet(&["--alarm-above", "90"]),
    ["--alarm-above", "90 °C is not a freezer's alarm threshold"]
);
refused!(
    listening_on_https,
    |f| f.fleet(&["--listen", "--transport", "https"]),
    ["--listen needs MQTT", "--transport mqtt or mqtt-ws"]
);
refused!(
    listening_faster_than_iot_core_counts,
    |f| f.bare(&[
        "--endpoint",
        "abc123-ats.iot.eu-west-1.amazonaws.com",
        "--listen",
        "--interval",
        "12ms"
    ]),
    [
        "--listen",
        "a shadow update counts as a publish",
        "--profile none"
    ]
);

// `command`.
fn command_args(f: &Bad, extra: &[&str]) -> Vec<String> {
    let (cert, key) = f.device("freezer1");
    let mut v: Vec<String> = [
        "command",
        "--endpoint",
        "localhost",
        "--cert",
        &text(&cert),
        "--key",
        &text(&key),
    ]
    .map(String::from)
    .into();
    v.extend(extra.iter().map(|s| s.to_string()));
    v
}
refused!(
    command_to_all_without_the_fleet,
    |f| command_args(f, &["--to", "all", "--cmd", "defrost"]),
    ["--to all needs the fleet's ids", "--certs DIR", "--devices N"]
);
refused!(
    command_unknown,
    |f| command_args(f, &["--to", "freezer1", "--cmd", "explode"]),
    [
        "--cmd explode",
        "unknown command 'explode'",
        "door, defrost, fail, fix or setpoint"
    ]
);
refused!(
    command_setpoint_without_a_value,
    |f| command_args(f, &["--to", "freezer1", "--cmd", "setpoint"]),
    ["--cmd setpoint", "setpoint needs a value"]
);
refused!(
    command_value_for_a_defrost,
    |f| command_args(f, &["--to", "freezer1", "--cmd", "defrost", "--value", "3"]),
    ["--value belongs to --cmd setpoint"]
);
refused!(
    command_rate_zero,
    |f| command_args(f, &["--to", "freezer1", "--cmd", "door", "--rate", "0"]),
    ["--rate 0", "above 0"]
);
refused!(
    faults_not_a_spec,
    |f| f.fleet(&["--faults", "duplicate=1/10,typo=3"]),
    [
        "--faults duplicate=1/10,typo=3",
        "'typo' is not a fault",
        "duplicate, reorder, late"
    ]
);
refused!(
    faults_late_without_a_delay,
    |f| f.fleet(&["--faults", "late=1/100"]),
    ["--faults", "late=1/100: give a chance and a duration"]
);
refused!(
    a_template_with_an_unknown_generator,
    |f| {
        let path = f.at("template-unknown.json");
        std::fs::write(&path, "{\n  \"id\": \"{{id}}\",\n  \"x\": \"{{colour}}\"\n}\n").unwrap();
        f.fleet(&["--template", &text(&path)])
    },
    [
        "--template",
        "template-unknown.json:3:",
        "$.x: {{colour}}: 'colour' is not a generator"
    ]
);
refused!(
    a_template_that_is_not_json,
    |f| {
        let path = f.at("template-broken.json");
        std::fs::write(&path, "{\"id\": \"{{id}}\",\n \"x\": }\n").unwrap();
        f.fleet(&["--template", &text(&path)])
    },
    ["--template", "template-broken.json:2:"]
);
refused!(
    a_template_that_is_missing,
    |f| f.fleet(&["--template", "/nonexistent/template.json"]),
    ["--template /nonexistent/template.json", "config/templates/"]
);
refused!(
    a_template_with_fields,
    |f| {
        let path = f.at("template-ok.json");
        std::fs::write(&path, "{\"id\": \"{{id}}\"}").unwrap();
        f.fleet(&["--template", &text(&path), "--fields", "state"])
    },
    ["--fields and --template both given"]
);
refused!(
    replay_without_the_device_column,
    |f| {
        let path = f.at("replay-nodevice.csv");
        std::fs::write(&path, "sensor,ts,t\nfreezer1,1,2\n").unwrap();
        f.fleet(&["--replay", &text(&path)])
    },
    [
        "--replay",
        "replay-nodevice.csv:2",
        "no device in column 'device_id'",
        "--replay-device-column"
    ]
);
refused!(
    replay_with_a_time_that_is_not_one,
    |f| {
        let path = f.at("replay-badtime.csv");
        std::fs::write(&path, "device_id,ts\nfreezer1,yesterday\n").unwrap();
        f.fleet(&["--replay", &text(&path)])
    },
    [
        "replay-badtime.csv:2",
        "column 'ts' is not a time",
        "--replay-time-column"
    ]
);
refused!(
    replay_for_devices_of_another_fleet,
    |f| {
        let path = f.at("replay-strangers.csv");
        std::fs::write(&path, "device_id,ts\npump7,1\n").unwrap();
        f.fleet(&["--replay", &text(&path)])
    },
    [
        "replay-strangers.csv",
        "none of its 1 device(s) (pump7) is in this fleet"
    ]
);
refused!(
    replay_with_an_interval,
    |f| {
        let path = f.at("replay-ok.csv");
        std::fs::write(&path, "device_id,ts\nfreezer1,1\n").unwrap();
        f.fleet(&["--replay", &text(&path), "--interval", "1s"])
    },
    ["--replay and --interval/--rate/--count both given"]
);
refused!(
    replay_column_without_replay,
    |f| f.fleet(&["--replay-loop"]),
    ["--replay-loop belongs to --replay FILE"]
);
refused!(
    groups_that_overlap,
    |f| {
        let path = f.at("groups-overlap.toml");
        std::fs::write(
            &path,
            "[[group]]\nname = \"a\"\ndevices = 2\n\n[[group]]\nname = \"b\"\ndevices = \"2..3\"\n",
        )
        .unwrap();
        f.fleet(&["--config", &text(&path)])
    },
    [
        "`devices` of [[group]] 'b' in",
        "groups-overlap.toml",
        "overlap group 'a'"
    ]
);
refused!(
    groups_and_devices,
    |f| {
        let path = f.at("groups-devices.toml");
        std::fs::write(&path, "[[group]]\ndevices = 2\n").unwrap();
        f.fleet(&["--config", &text(&path), "--devices", "2"])
    },
    ["--devices and [[group]] in", "both give the fleet's size"]
);
refused!(
    a_group_id_prefix_with_certificate_folders,
    |f| {
        let path = f.at("groups-prefix.toml");
        std::fs::write(&path, "[[group]]\ndevices = 1\nid_prefix = \"pump-\"\n").unwrap();
        f.fleet(&["--config", &text(&path)])
    },
    [
        "`id_prefix` of [[group]] 'group1'",
        "with --certs each folder names its device"
    ]
);
refused!(
    a_group_larger_than_the_certificates,
    |f| {
        let path = f.at("groups-large.toml");
        std::fs::write(&path, "[[group]]\ndevices = 500\n").unwrap();
        f.fleet(&["--config", &text(&path)])
    },
    ["groups-large.toml"]
);
refused!(
    a_group_with_an_unknown_key,
    |f| {
        let path = f.at("groups-key.toml");
        std::fs::write(&path, "[[group]]\ndevices = 1\ncolour = \"red\"\n").unwrap();
        f.fleet(&["--config", &text(&path)])
    },
    ["groups-key.toml", "colour"]
);
