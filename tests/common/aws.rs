//! AWS emulation for the tests: moto's server (PyPI `moto[server]`, installed by the test
//! command into `.venv-tests`) on a free loopback port, boto3 scripts that make streams and read
//! back what the fleet wrote (`tests/fixtures/aws.py`), and a stand-in between the fleet and
//! the emulator that refuses records the way Kinesis does under load, a fault the emulator never
//! makes.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::{free_port, wait_until};

/// A program of the tests' Python venv.
pub fn venv_bin(name: &str) -> PathBuf {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join(".venv-tests/bin")
        .join(name);
    assert!(
        path.exists(),
        "{} is missing; run the test command from README.md, which installs it",
        path.display()
    );
    path
}

/// moto's server on loopback, every request recorded (moto's recorder), ended by its pid when
/// dropped, or by itself when the test process ends (a static one is never dropped).
pub struct Moto {
    pub port: u16,
    child: Child,
    /// Where moto's recorder writes (its default is a file in the working folder).
    _recording: tempfile::TempDir,
}

impl Moto {
    pub fn start() -> Moto {
        let port = free_port();
        let recording = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/moto_server.py");
        let child = Command::new(venv_bin("python"))
            .arg(script)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .env("MOTO_ENABLE_RECORDING", "True")
            .env("MOTO_RECORDER_FILEPATH", recording.path().join("moto_recording"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start moto_server");
        let moto = Moto {
            port,
            child,
            _recording: recording,
        };
        let up = wait_until(Duration::from_secs(30), || {
            std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
        assert!(up.is_some(), "moto_server did not listen on {port}");
        let recording = moto.http("POST", "/moto-api/recorder/start-recording");
        assert!(recording.contains("True"), "moto's recorder: {recording}");
        moto
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// One plain HTTP request to moto's own API (curl-free: a raw HTTP/1.0 exchange).
    fn http(&self, method: &str, path: &str) -> String {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(("127.0.0.1", self.port)).unwrap();
        write!(
            s,
            "{method} {path} HTTP/1.0\r\nHost: 127.0.0.1\r\nContent-Length: 0\r\n\r\n"
        )
        .unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        out.split_once("\r\n\r\n")
            .map(|(_, b)| b.to_string())
            .unwrap_or(out)
    }

    /// Every request moto has served since it started: method, headers, body (base64 when
    /// moto says `body_encoded`).
    pub fn recording(&self) -> Vec<serde_json::Value> {
        self.http("GET", "/moto-api/recorder/download-recording")
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    /// Runs `tests/fixtures/aws.py` with boto3 against this emulator; its JSON answer.
    pub fn aws(&self, args: &[&str]) -> serde_json::Value {
        run_aws_py(&self.url(), args)
    }

    /// The events in a Kinesis stream, as (shard, partition key, event), in shard order.
    pub fn stream_events(&self, stream: &str) -> Vec<(String, String, serde_json::Value)> {
        stream_events(&self.url(), stream)
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// kinesalite on loopback (npm, installed by the test command into `.node-tests`): unlike moto,
/// it closes a split shard and routes new records to its children, as Kinesis does.
pub struct Kinesalite {
    pub port: u16,
    child: Child,
}

impl Kinesalite {
    pub fn start() -> Kinesalite {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let modules = root.join(".node-tests/node_modules");
        assert!(
            modules.join("kinesalite").exists(),
            "kinesalite is missing; run the test command from README.md, which installs it"
        );
        let port = free_port();
        let child = Command::new("node")
            .arg(root.join("tests/fixtures/kinesalite.js"))
            .arg(port.to_string())
            .env("NODE_PATH", &modules)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start node");
        let up = wait_until(Duration::from_secs(30), || {
            std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
        assert!(up.is_some(), "kinesalite did not listen on {port}");
        Kinesalite { port, child }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// `tests/fixtures/aws.py` against this emulator.
    pub fn aws(&self, args: &[&str]) -> serde_json::Value {
        run_aws_py(&self.url(), args)
    }
}

impl Drop for Kinesalite {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs `tests/fixtures/aws.py` with boto3 against `endpoint`; its JSON answer.
fn run_aws_py(endpoint: &str, args: &[&str]) -> serde_json::Value {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/aws.py");
    let out = Command::new(venv_bin("python"))
        .arg(script)
        .arg(endpoint)
        .args(args)
        .output()
        .expect("run python");
    assert!(
        out.status.success(),
        "aws.py {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("aws.py prints JSON")
}

/// The events in a Kinesis stream at `endpoint`, as (shard, partition key, event), in shard order.
pub fn stream_events(endpoint: &str, stream: &str) -> Vec<(String, String, serde_json::Value)> {
    let records = run_aws_py(endpoint, &["read-stream", stream]);
    records
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            let event = serde_json::from_str(r["data"].as_str().unwrap()).expect("a record is an event");
            (
                r["shard"].as_str().unwrap().to_string(),
                r["key"].as_str().unwrap().to_string(),
                event,
            )
        })
        .collect()
}

/// The environment of a fleet that talks to `endpoint` with test credentials, and nothing of
/// this machine's AWS setup (config and credentials files point into `dir`).
pub fn aws_env(endpoint: &str, dir: &Path) -> Vec<(String, String)> {
    for file in ["config", "credentials"] {
        std::fs::write(dir.join(file), "").unwrap();
    }
    vec![
        ("AWS_ACCESS_KEY_ID".into(), "AKIDFLEETTEST".into()),
        (
            "AWS_SECRET_ACCESS_KEY".into(),
            "fleet-secret-never-printed".into(),
        ),
        ("AWS_CONFIG_FILE".into(), dir.join("config").display().to_string()),
        (
            "AWS_SHARED_CREDENTIALS_FILE".into(),
            dir.join("credentials").display().to_string(),
        ),
        ("AWS_EC2_METADATA_DISABLED".into(), "true".into()),
        ("AWS_ENDPOINT_URL".into(), endpoint.into()),
    ]
}

/// What the refusing stand-in did.
#[derive(Debug, Default)]
pub struct Refused {
    /// Records answered with ProvisionedThroughputExceededException inside a 200 response.
    pub records: AtomicU64,
    /// Whole PutRecords requests answered 400 ProvisionedThroughputExceededException.
    pub requests: AtomicU64,
    /// Records in those requests.
    pub records_in_requests: AtomicU64,
}

/// Between the fleet and the emulator: refuses every `every`-th record of PutRecords (answering
/// ProvisionedThroughputExceededException for it, and passing the rest on), and every
/// `request_every`-th PutRecords request whole; everything else passes unchanged.
pub struct RefusingKinesis {
    pub port: u16,
    pub refused: Arc<Refused>,
    stop: Arc<AtomicBool>,
}

impl RefusingKinesis {
    pub fn start(upstream: u16, every: u64, request_every: u64) -> RefusingKinesis {
        // reqwest is built without a default crypto provider: give the process ring.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let refused = Arc::new(Refused::default());
        let stop = Arc::new(AtomicBool::new(false));
        let (r, s) = (refused.clone(), stop.clone());
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).unwrap();
                let counters = Arc::new(Mutex::new((0u64, 0u64)));
                let client = reqwest::Client::new();
                while !s.load(Ordering::SeqCst) {
                    let Ok(Ok((tcp, _))) =
                        tokio::time::timeout(Duration::from_millis(100), listener.accept()).await
                    else {
                        continue;
                    };
                    let (r, counters, client) = (r.clone(), counters.clone(), client.clone());
                    tokio::spawn(async move {
                        let service = hyper::service::service_fn(move |req| {
                            forward(
                                req,
                                upstream,
                                client.clone(),
                                r.clone(),
                                counters.clone(),
                                (every, request_every),
                            )
                        });
                        let io = hyper_util::rt::TokioIo::new(tcp);
                        let _ = hyper::server::conn::http1::Builder::new()
                            .serve_connection(io, service)
                            .await;
                    });
                }
            });
        });
        RefusingKinesis { port, refused, stop }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

impl Drop for RefusingKinesis {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

type Body = http_body_util::Full<bytes::Bytes>;

async fn forward(
    req: hyper::Request<hyper::body::Incoming>,
    upstream: u16,
    client: reqwest::Client,
    refused: Arc<Refused>,
    counters: Arc<Mutex<(u64, u64)>>,
    (every, request_every): (u64, u64),
) -> Result<hyper::Response<Body>, std::convert::Infallible> {
    use http_body_util::BodyExt;
    let (parts, body) = req.into_parts();
    let body = body
        .collect()
        .await
        .map(|b| b.to_bytes().to_vec())
        .unwrap_or_default();
    let target = parts
        .headers
        .get("x-amz-target")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    let send = |body: Vec<u8>| {
        let mut r = client.post(format!("http://127.0.0.1:{upstream}/"));
        for (k, v) in &parts.headers {
            if k != "host" && k != "content-length" {
                r = r.header(k, v);
            }
        }
        r.body(body).send()
    };
    let reply = |status: u16, bytes: Vec<u8>| {
        Ok(hyper::Response::builder()
            .status(status)
            .header("content-type", "application/x-amz-json-1.1")
            .body(Body::new(bytes.into()))
            .unwrap())
    };
    if target != "Kinesis_20131202.PutRecords" {
        let answer = send(body).await.unwrap();
        let status = answer.status().as_u16();
        return reply(status, answer.bytes().await.unwrap().to_vec());
    }
    let mut request: serde_json::Value = serde_json::from_slice(&body).unwrap();
    let records = request["Records"].as_array().unwrap().clone();
    let (whole, refuse): (bool, Vec<bool>) = {
        let mut c = counters.lock().unwrap();
        c.1 += 1;
        let whole = c.1.is_multiple_of(request_every);
        let refuse = records
            .iter()
            .map(|_| {
                c.0 += 1;
                !whole && c.0.is_multiple_of(every)
            })
            .collect();
        (whole, refuse)
    };
    if whole {
        refused.requests.fetch_add(1, Ordering::SeqCst);
        refused
            .records_in_requests
            .fetch_add(records.len() as u64, Ordering::SeqCst);
        let body =
            br#"{"__type":"ProvisionedThroughputExceededException","message":"Rate exceeded for stream"}"#;
        return reply(400, body.to_vec());
    }
    let passed: Vec<serde_json::Value> = records
        .iter()
        .zip(&refuse)
        .filter(|(_, r)| !**r)
        .map(|(rec, _)| rec.clone())
        .collect();
    let mut upstream_results = Vec::new();
    if !passed.is_empty() {
        request["Records"] = serde_json::Value::Array(passed);
        let answer = send(serde_json::to_vec(&request).unwrap()).await.unwrap();
        let v: serde_json::Value = serde_json::from_slice(&answer.bytes().await.unwrap()).unwrap();
        upstream_results = v["Records"].as_array().unwrap().clone();
    }
    let mut upstream_results = upstream_results.into_iter();
    let mut failed = 0;
    let results: Vec<serde_json::Value> = refuse
        .iter()
        .map(|r| {
            if *r {
                failed += 1;
                serde_json::json!({"ErrorCode": "ProvisionedThroughputExceededException",
                    "ErrorMessage": "Rate exceeded for shard shardId-000000000000"})
            } else {
                upstream_results.next().unwrap()
            }
        })
        .collect();
    refused.records.fetch_add(failed, Ordering::SeqCst);
    let answer = serde_json::json!({"FailedRecordCount": failed, "Records": results});
    reply(200, serde_json::to_vec(&answer).unwrap())
}

/// Runs freezer-fleet with `args` in `env` (stdin closed) and checks a refusal: exit 2, exactly
/// one `error:` line holding every needle, and no secret of `aws_env` printed.
pub fn refused_with_env(env: &[(String, String)], args: &[&str], needles: &[&str]) {
    let mut fleet = super::Fleet::spawn_with_env(args, env);
    fleet.close_stdin();
    let (code, stderr, _) = fleet.finish(Duration::from_secs(30));
    assert_eq!(code, 2, "{stderr}");
    let lines: Vec<&str> = stderr.lines().collect();
    assert!(
        lines.len() == 1 && lines[0].starts_with("error: "),
        "not one error line:\n{stderr}"
    );
    for n in needles {
        assert!(lines[0].contains(n), "missing '{n}':\n{stderr}");
    }
    assert!(!stderr.contains("fleet-secret-never-printed"));
}
