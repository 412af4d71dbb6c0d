//! Test harness shared by the integration tests: certificates generated with rcgen, a real
//! mosquitto with mutual TLS on a free loopback port, a real subscriber (mosquitto_sub), and the
//! real freezer-fleet binary. Every process started here is ended by its pid when dropped.

#![allow(dead_code)]

pub mod aws;
pub mod standin;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer,
    KeyPair, KeyUsagePurpose,
};

pub const BIN: &str = env!("CARGO_BIN_EXE_freezer-fleet");

/// A certificate authority made for one test.
pub struct Ca {
    pub cert_pem: String,
    key_pem: String,
    issuer: Issuer<'static, KeyPair>,
}

impl Ca {
    pub fn new(cn: &str) -> Ca {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name = dn(cn);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let cert = params.self_signed(&key).unwrap();
        Ca {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            issuer: Issuer::new(params, key),
        }
    }

    /// The CA's private key, PEM.
    pub fn key_pem(&self) -> String {
        self.key_pem.clone()
    }

    /// A server certificate for localhost and 127.0.0.1: (cert PEM, key PEM).
    pub fn server(&self) -> (String, String) {
        self.server_for(&["localhost", "127.0.0.1"])
    }

    /// A server certificate for the given names: (cert PEM, key PEM).
    pub fn server_for(&self, names: &[&str]) -> (String, String) {
        let key = KeyPair::generate().unwrap();
        let mut params =
            CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>()).unwrap();
        params.distinguished_name = dn(names[0]);
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        (cert.pem(), key.serialize_pem())
    }

    /// A client certificate with CN = `cn`: (cert PEM, key PEM).
    pub fn client(&self, cn: &str) -> (String, String) {
        self.client_with(cn, |_| {})
    }

    /// A client certificate whose parameters `tweak` may change (e.g. validity dates).
    pub fn client_with(&self, cn: &str, tweak: impl FnOnce(&mut CertificateParams)) -> (String, String) {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name = dn(cn);
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        tweak(&mut params);
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        (cert.pem(), key.serialize_pem())
    }
}

fn dn(cn: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, cn);
    dn
}

/// A folder of test PKI files laid out as AWS IoT Core hands them out.
pub struct Pki {
    pub dir: tempfile::TempDir,
    pub ca: Ca,
}

impl Pki {
    /// CA, server certificate and `n` device folders freezer1..freezerN.
    pub fn new(n: usize) -> Pki {
        Pki::with_dir(tempfile::tempdir().unwrap(), n)
    }

    /// The same, in a temporary folder under `parent`.
    pub fn new_in(parent: &Path, n: usize) -> Pki {
        std::fs::create_dir_all(parent).unwrap();
        Pki::with_dir(tempfile::tempdir_in(parent).unwrap(), n)
    }

    fn with_dir(dir: tempfile::TempDir, n: usize) -> Pki {
        let ca = Ca::new("freezer-fleet test CA");
        write(&dir.path().join("ca.pem"), &ca.cert_pem);
        let (cert, key) = ca.server();
        write(&dir.path().join("server.pem"), &cert);
        write(&dir.path().join("server.key"), &key);
        let (cert, key) = ca.client("monitor");
        write(&dir.path().join("monitor.crt"), &cert);
        write(&dir.path().join("monitor.key"), &key);
        let pki = Pki { dir, ca };
        for i in 1..=n {
            pki.add_device(&format!("freezer{i}"));
        }
        pki
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }
    pub fn ca_pem(&self) -> PathBuf {
        self.path().join("ca.pem")
    }
    pub fn devices(&self) -> PathBuf {
        self.path().join("devices")
    }

    /// A device folder with the three files of AWS IoT Core's download, under a random-looking prefix.
    pub fn add_device(&self, id: &str) -> PathBuf {
        let (cert, key) = self.ca.client(id);
        self.write_device(id, &cert, &key)
    }

    pub fn write_device(&self, id: &str, cert: &str, key: &str) -> PathBuf {
        let folder = self.devices().join(id);
        std::fs::create_dir_all(&folder).unwrap();
        let prefix = format!(
            "{:x}",
            id.bytes().fold(0xcbf29ce484222325u64, |h, b| (h ^ b as u64)
                .wrapping_mul(0x100000001b3))
        );
        let prefix = &prefix[..10];
        write(&folder.join(format!("{prefix}-certificate.pem.crt")), cert);
        write(&folder.join(format!("{prefix}-private.pem.key")), key);
        // The public key AWS also hands out; freezer-fleet must ignore it.
        write(
            &folder.join(format!("{prefix}-public.pem.key")),
            "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n",
        );
        folder
    }

    /// (cert, key) paths of a device folder.
    pub fn device_files(&self, id: &str) -> (PathBuf, PathBuf) {
        let folder = self.devices().join(id);
        let mut cert = None;
        let mut key = None;
        for e in std::fs::read_dir(&folder).unwrap() {
            let p = e.unwrap().path();
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            if name.ends_with("certificate.pem.crt") {
                cert = Some(p);
            } else if name.ends_with("private.pem.key") {
                key = Some(p);
            }
        }
        (cert.unwrap(), key.unwrap())
    }
}

/// Writes a file; private keys get mode 0600, as they should.
pub fn write(path: &Path, text: &str) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
    if text.contains("PRIVATE KEY-----") {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
}

/// A loopback port nobody listens on right now, and never handed out before in this test
/// process (tests run in parallel: two of them must not start brokers on one port).
pub fn free_port() -> u16 {
    static GIVEN: Mutex<Vec<u16>> = Mutex::new(Vec::new());
    loop {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut given = GIVEN.lock().unwrap();
        if !given.contains(&port) {
            given.push(port);
            return port;
        }
    }
}

fn require(tool: &str) {
    let found = Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {tool}"))
        .output()
        .unwrap();
    assert!(
        found.status.success(),
        "{tool} is not installed; run the test command from README.md, which installs it"
    );
}

/// A real mosquitto requiring client certificates, with the certificate CN as user name.
pub struct Mosquitto {
    pub port: u16,
    child: Child,
    pub log: PathBuf,
    conf: PathBuf,
    _state: tempfile::TempDir,
}

impl Mosquitto {
    /// Starts on a fresh port; if another process took the port first (mosquitto then exits),
    /// tries another.
    pub fn start(pki: &Pki) -> Mosquitto {
        for _ in 0..5 {
            let mut m = Self::start_on(pki, free_port());
            if m.child.try_wait().unwrap().is_none() {
                return m;
            }
        }
        panic!("mosquitto could not bind a free port in 5 tries");
    }

    pub fn start_on(pki: &Pki, port: u16) -> Mosquitto {
        // `#` does not match topics that start with `$`: Basic Ingest topics need their own line.
        // max_queued_messages 0: a slow subscriber must not lose messages to the broker's queue
        // limit (default 1000), or a test would blame the fleet for the broker's drop.
        let acl = "pattern readwrite #\npattern readwrite $aws/rules/#\npattern readwrite $aws/things/#\n";
        Self::start_with(pki, port, acl, "max_queued_messages 0\n")
    }

    /// Starts on a fresh port with this ACL file content (user name = certificate CN), and the
    /// default queue limit: with `max_queued_messages 0`, mosquitto 2.0.11 drops the connection
    /// right after it sends an MQTT 5 PUBACK with a reason code, so the reason rarely arrives.
    pub fn start_with_acl(pki: &Pki, acl: &str) -> Mosquitto {
        let mut m = Self::start_with(pki, free_port(), acl, "");
        assert!(
            m.child.try_wait().unwrap().is_none(),
            "mosquitto exited: {}",
            m.log_text()
        );
        m
    }

    /// Starts on a fresh port with the CA and server files of `dir` (a `certs init` folder).
    pub fn start_with_files(dir: &Path) -> Mosquitto {
        let acl = "pattern readwrite #\n";
        Self::start_in(dir, free_port(), acl, "max_queued_messages 0\n")
    }

    fn start_with(pki: &Pki, port: u16, acl_text: &str, queue: &str) -> Mosquitto {
        Self::start_in(pki.path(), port, acl_text, queue)
    }

    fn start_in(dir: &Path, port: u16, acl_text: &str, queue: &str) -> Mosquitto {
        require("mosquitto");
        let state = tempfile::tempdir().unwrap();
        let log = state.path().join("mosquitto.log");
        let acl = state.path().join("acl");
        write(&acl, acl_text);
        let user = if unsafe_is_root() { "user root\n" } else { "" };
        let conf = format!(
            "{user}persistence false\nlog_dest file {log}\nlog_type all\nconnection_messages true\n\
             set_tcp_nodelay true\n{queue}max_inflight_messages 100\nallow_anonymous false\nper_listener_settings false\nacl_file {acl}\n\
             listener {port} 127.0.0.1\ncafile {ca}\ncertfile {cert}\nkeyfile {key}\n\
             require_certificate true\nuse_identity_as_username true\ntls_version tlsv1.2\n",
            log = log.display(),
            acl = acl.display(),
            ca = dir.join("ca.pem").display(),
            cert = dir.join("server.pem").display(),
            key = dir.join("server.key").display(),
        );
        let conf_path = state.path().join("mosquitto.conf");
        write(&conf_path, &conf);
        let child = Self::spawn(&conf_path);
        let mut m = Mosquitto {
            port,
            child,
            log,
            conf: conf_path,
            _state: state,
        };
        m.wait_listening();
        m
    }

    fn spawn(conf: &Path) -> Child {
        Command::new("mosquitto")
            .arg("-c")
            .arg(conf)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start mosquitto")
    }

    fn wait_listening(&mut self) {
        let port = self.port;
        let child = &mut self.child;
        // Listening, and it is our mosquitto that listens (one that lost the bind has exited).
        let up = wait_until(Duration::from_secs(10), || {
            std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() || child.try_wait().unwrap().is_some()
        });
        up.unwrap_or_else(|| panic!("mosquitto did not listen on {port}; log:\n{}", self.log_text()));
    }

    /// Kills the broker with SIGKILL: no goodbye to any client.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Starts the broker again on the same port with the same configuration.
    pub fn restart(&mut self) {
        self.child = Self::spawn(&self.conf);
        self.wait_listening();
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The user names (certificate CNs) of clients that connected.
    pub fn connected_users(&self) -> Vec<String> {
        self.log_text()
            .lines()
            .filter(|l| l.contains("New client connected"))
            .filter_map(|l| {
                l.split("u'")
                    .nth(1)
                    .and_then(|s| s.split('\'').next())
                    .map(str::to_string)
            })
            .collect()
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends the broker a signal by its pid (`STOP`: no answer at all until `CONT`).
    pub fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .args([&format!("-{sig}"), &self.pid().to_string()])
            .status()
            .unwrap();
        assert!(ok.success());
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn unsafe_is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| o.stdout.starts_with(b"0"))
        .unwrap_or(false)
}

/// Polls `f` until it is true or `limit` passes.
pub fn wait_until(limit: Duration, mut f: impl FnMut() -> bool) -> Option<()> {
    let end = Instant::now() + limit;
    while Instant::now() < end {
        if f() {
            return Some(());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    f().then_some(())
}

/// The mutual-TLS flags of mosquitto's own clients (mosquitto_pub, mosquitto_sub).
pub fn mosquitto_tls(ca: &Path, cert: &Path, key: &Path) -> Vec<std::ffi::OsString> {
    let mut v = Vec::new();
    for (flag, path) in [("--cafile", ca), ("--cert", cert), ("--key", key)] {
        v.push(flag.into());
        v.push(path.as_os_str().to_owned());
    }
    v
}

/// Publishes one message with mosquitto_pub (QoS 1) as the monitor identity.
pub fn publish(pki: &Pki, port: u16, topic: &str, payload: &str) {
    require("mosquitto_pub");
    let out = Command::new("mosquitto_pub")
        .args([
            "-h",
            "localhost",
            "-p",
            &port.to_string(),
            "-q",
            "1",
            "-t",
            topic,
            "-m",
            payload,
        ])
        .args(["-i", "test-publisher"])
        .args(mosquitto_tls(
            &pki.ca_pem(),
            &pki.path().join("monitor.crt"),
            &pki.path().join("monitor.key"),
        ))
        .output()
        .expect("run mosquitto_pub");
    assert!(
        out.status.success(),
        "mosquitto_pub: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A real subscriber (mosquitto_sub) collecting every payload on a topic.
pub struct Subscriber {
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
}

impl Subscriber {
    pub fn start(pki: &Pki, port: u16, topic: &str) -> Subscriber {
        Subscriber::start_as(pki, port, topic, "test-monitor")
    }

    /// The same with its own client id, so several subscribers can run side by side.
    pub fn start_as(pki: &Pki, port: u16, topic: &str, client_id: &str) -> Subscriber {
        require("mosquitto_sub");
        // Line-buffered, or the SUBACK note and the payloads sit in stdio's buffer.
        let mut child = Command::new("stdbuf")
            .args(["-oL", "mosquitto_sub"])
            .args([
                "-h",
                "localhost",
                "-p",
                &port.to_string(),
                "-q",
                "1",
                "-t",
                topic,
                "-d",
                "-i",
                client_id,
            ])
            .args(mosquitto_tls(
                &pki.ca_pem(),
                &pki.path().join("monitor.crt"),
                &pki.path().join("monitor.key"),
            ))
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start mosquitto_sub");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let out = child.stdout.take().unwrap();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let sink = lines.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines() {
                let Ok(line) = line else { break };
                if line.contains("received SUBACK") {
                    let _ = ready_tx.send(());
                } else if line.starts_with('{') {
                    sink.lock().unwrap().push(line);
                }
            }
        });
        if ready_rx.recv_timeout(Duration::from_secs(10)).is_err() {
            let _ = child.kill();
            let mut err = String::new();
            let _ = child.stderr.take().unwrap().read_to_string(&mut err);
            panic!("mosquitto_sub got no SUBACK: {err}");
        }
        Subscriber { child, lines }
    }

    /// Every JSON payload received so far.
    pub fn events(&self) -> Vec<serde_json::Value> {
        self.lines
            .lock()
            .unwrap()
            .iter()
            .map(|l| serde_json::from_str(l).expect("payload is JSON"))
            .collect()
    }

    pub fn wait_for(&self, n: usize, limit: Duration) -> Vec<serde_json::Value> {
        let _ = wait_until(limit, || self.lines.lock().unwrap().len() >= n);
        self.events()
    }
}

impl Drop for Subscriber {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The freezer-fleet binary running with piped stdin, its stderr collected line by line.
pub struct Fleet {
    pub child: Child,
    stderr: Arc<Mutex<String>>,
    reader: Option<std::thread::JoinHandle<()>>,
    stdout: Option<std::process::ChildStdout>,
}

impl Fleet {
    pub fn spawn(args: &[&str]) -> Fleet {
        Self::spawn_with_env(args, &[])
    }

    /// The same, with these environment variables set (and every AWS_* variable of the test's
    /// own environment removed, so nothing of this machine's AWS setup leaks in).
    pub fn spawn_with_env(args: &[&str], env: &[(String, String)]) -> Fleet {
        let mut command = Command::new(BIN);
        for (key, _) in std::env::vars().filter(|(k, _)| k.starts_with("AWS_")) {
            command.env_remove(key);
        }
        let mut child = command
            .args(args)
            .envs(env.iter().map(|(k, v)| (k, v)))
            .env("NO_COLOR", "1")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start freezer-fleet");
        let err = child.stderr.take().unwrap();
        let stderr = Arc::new(Mutex::new(String::new()));
        let sink = stderr.clone();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(err).lines() {
                let Ok(line) = line else { break };
                let mut s = sink.lock().unwrap();
                s.push_str(&line);
                s.push('\n');
            }
        });
        let stdout = child.stdout.take();
        Fleet {
            child,
            stderr,
            reader: Some(reader),
            stdout,
        }
    }

    pub fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    pub fn wait_stderr(&self, needle: &str, limit: Duration) -> bool {
        wait_until(limit, || self.stderr().contains(needle)).is_some()
    }

    /// Types a line on the console. A process that already exited just does not read it.
    pub fn send(&mut self, line: &str) {
        let stdin = self.child.stdin.as_mut().expect("stdin open");
        let _ = stdin
            .write_all(format!("{line}\n").as_bytes())
            .and_then(|_| stdin.flush());
    }

    pub fn close_stdin(&mut self) {
        self.child.stdin.take();
    }

    pub fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .args([&format!("-{sig}"), &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(ok.success());
    }

    /// Waits for the exit (at most `limit`); returns (exit code, all stderr, all stdout).
    pub fn finish(mut self, limit: Duration) -> (i32, String, String) {
        let end = Instant::now() + limit;
        let status = loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                break s;
            }
            if Instant::now() > end {
                let _ = self.child.kill();
                let _ = self.child.wait();
                panic!(
                    "freezer-fleet did not exit within {limit:?}; stderr:\n{}",
                    self.stderr()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        if let Some(r) = self.reader.take() {
            let _ = r.join();
        }
        let mut out = String::new();
        if let Some(mut s) = self.stdout.take() {
            let _ = s.read_to_string(&mut out);
        }
        (status.code().unwrap_or(-1), self.stderr(), out)
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Runs freezer-fleet to completion with stdin closed.
pub fn run_to_end(args: &[&str], limit: Duration) -> (i32, String, String) {
    let mut f = Fleet::spawn(args);
    f.close_stdin();
    f.finish(limit)
}

/// The standard flags for a fleet against `port` with the test PKI's folders.
pub fn certs_args(pki: &Pki, port: u16) -> Vec<String> {
    vec![
        "run".into(),
        "--endpoint".into(),
        "localhost".into(),
        "--port".into(),
        port.to_string(),
        "--ca".into(),
        pki.ca_pem().display().to_string(),
        "--certs".into(),
        pki.devices().display().to_string(),
    ]
}

pub fn strs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

/// (device, seq, temperature, humidity) of every event received, sorted.
pub fn readings(events: &[serde_json::Value]) -> Vec<(String, u64, String, String)> {
    let mut r: Vec<_> = events
        .iter()
        .map(|e| {
            (
                e["device_id"].as_str().unwrap().to_string(),
                e["seq"].as_u64().unwrap(),
                e["temperature"].to_string(),
                e["humidity"].to_string(),
            )
        })
        .collect();
    r.sort();
    r
}

/// Groups received events by device id: device -> seqs in arrival order.
pub fn seqs_by_device(events: &[serde_json::Value]) -> std::collections::BTreeMap<String, Vec<u64>> {
    let mut m = std::collections::BTreeMap::<String, Vec<u64>>::new();
    for e in events {
        m.entry(e["device_id"].as_str().unwrap().to_string())
            .or_default()
            .push(e["seq"].as_u64().unwrap());
    }
    m
}

/// A number from a summary line such as "  events    25 published, 25 acknowledged, 0 failed".
pub fn summary_number(stderr: &str, word: &str) -> u64 {
    for line in stderr.lines() {
        let words: Vec<&str> = line.split_whitespace().collect();
        for w in words.windows(2) {
            if w[1].trim_end_matches(',') == word
                && let Ok(n) = w[0].parse()
            {
                return n;
            }
        }
    }
    panic!("no '{word}' count in:\n{stderr}");
}

/// A TCP proxy on a loopback port that forwards to `upstream`, and can cut every connection
/// and refuse new ones (closing its listening socket) until restored: a network cut.
pub struct Proxy {
    pub port: u16,
    mode: Arc<std::sync::atomic::AtomicU8>,
    conns: Arc<Mutex<Vec<std::net::TcpStream>>>,
}

const OPEN: u8 = 0;
const REFUSING: u8 = 1;
const STOPPED: u8 = 2;

/// How a [`Proxy`] behaves while its upstream is down ([`Proxy::go_down`]).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Down {
    /// Accepts each TCP connection and closes it at once, as a TCP load balancer with no
    /// healthy target does.
    AcceptClose = 3,
    /// Accepts each TCP connection and resets it (RST).
    Reset = 4,
    /// Passes the client's first bytes (the TLS ClientHello) upstream, then closes both sides:
    /// a handshake cut half way.
    CutHandshake = 5,
}

/// Resets `s` when it is dropped: SO_LINGER with a zero timeout.
fn reset_on_close(s: &std::net::TcpStream) {
    use std::os::fd::AsRawFd;
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: a valid socket and a correctly sized option value.
    unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            &linger as *const libc::linger as *const libc::c_void,
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        );
    }
}

/// Forwards the first bytes `client` sends to `upstream`, then closes both.
fn cut_after_first_bytes(mut client: std::net::TcpStream, upstream: u16) {
    std::thread::spawn(move || {
        let _ = client.set_read_timeout(Some(Duration::from_secs(5)));
        let mut hello = [0u8; 4096];
        let Ok(n) = client.read(&mut hello) else { return };
        if let Ok(mut server) = std::net::TcpStream::connect(("127.0.0.1", upstream)) {
            let _ = server.write_all(&hello[..n]);
            let _ = server.shutdown(std::net::Shutdown::Both);
        }
        let _ = client.shutdown(std::net::Shutdown::Both);
    });
}

impl Proxy {
    pub fn start(upstream: u16) -> Proxy {
        use std::sync::atomic::{AtomicU8, Ordering};
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let mode = Arc::new(AtomicU8::new(OPEN));
        let conns = Arc::new(Mutex::new(Vec::new()));
        let (m, c) = (mode.clone(), conns.clone());
        std::thread::spawn(move || {
            let mut listener = Some(listener);
            loop {
                match m.load(Ordering::SeqCst) {
                    STOPPED => break,
                    REFUSING => {
                        // Closing the listening socket: new connections are refused.
                        listener = None;
                        std::thread::sleep(Duration::from_millis(10));
                        continue;
                    }
                    _ => {}
                }
                let l = match &listener {
                    Some(l) => l,
                    None => match TcpListener::bind(("127.0.0.1", port)) {
                        Ok(l) => listener.insert(l),
                        Err(_) => {
                            std::thread::sleep(Duration::from_millis(10));
                            continue;
                        }
                    },
                };
                l.set_nonblocking(true).unwrap();
                match l.accept() {
                    Ok((client, _)) => {
                        client.set_nonblocking(false).unwrap();
                        match m.load(Ordering::SeqCst) {
                            x if x == Down::AcceptClose as u8 => continue,
                            x if x == Down::Reset as u8 => {
                                reset_on_close(&client);
                                continue;
                            }
                            x if x == Down::CutHandshake as u8 => {
                                cut_after_first_bytes(client, upstream);
                                continue;
                            }
                            _ => {}
                        }
                        let Ok(server) = std::net::TcpStream::connect(("127.0.0.1", upstream)) else {
                            continue;
                        };
                        let _ = client.set_nodelay(true);
                        let _ = server.set_nodelay(true);
                        {
                            let mut list = c.lock().unwrap();
                            list.push(client.try_clone().unwrap());
                            list.push(server.try_clone().unwrap());
                        }
                        let pairs = [
                            (client.try_clone().unwrap(), server.try_clone().unwrap()),
                            (server, client),
                        ];
                        for (mut from, mut to) in pairs {
                            std::thread::spawn(move || {
                                let _ = std::io::copy(&mut from, &mut to);
                                let _ = to.shutdown(std::net::Shutdown::Both);
                                let _ = from.shutdown(std::net::Shutdown::Both);
                            });
                        }
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(2)),
                }
            }
        });
        Proxy { port, mode, conns }
    }

    /// Cuts every connection and refuses new ones until [`Proxy::restore`].
    pub fn cut(&self) {
        self.mode.store(REFUSING, std::sync::atomic::Ordering::SeqCst);
        for s in self.conns.lock().unwrap().drain(..) {
            let _ = s.shutdown(std::net::Shutdown::Both);
        }
    }

    pub fn restore(&self) {
        self.mode.store(OPEN, std::sync::atomic::Ordering::SeqCst);
    }

    /// Cuts every connection and, until [`Proxy::restore`], treats new ones as `how` says.
    pub fn go_down(&self, how: Down) {
        self.mode.store(how as u8, std::sync::atomic::Ordering::SeqCst);
        for s in self.conns.lock().unwrap().drain(..) {
            let _ = s.shutdown(std::net::Shutdown::Both);
        }
    }

    /// Cuts one connection (the `pick`-th modulo the open ones), as a lossy link or a NAT
    /// timeout would; new connections are still accepted.
    pub fn kill_one(&self, pick: usize) {
        let mut conns = self.conns.lock().unwrap();
        let pairs = conns.len() / 2;
        if pairs == 0 {
            return;
        }
        let i = (pick % pairs) * 2;
        for s in conns.drain(i..i + 2) {
            let _ = s.shutdown(std::net::Shutdown::Both);
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.mode.store(STOPPED, std::sync::atomic::Ordering::SeqCst);
        for s in self.conns.lock().unwrap().drain(..) {
            let _ = s.shutdown(std::net::Shutdown::Both);
        }
    }
}

/// Runs freezer-fleet with `args` on a pseudo-terminal (`script`), as a person at a terminal
/// would, with stdin at end of input; returns the raw bytes the terminal received.
pub fn on_terminal(args: &[&str]) -> String {
    let cmd = format!(
        "'{BIN}' {}",
        args.iter()
            .map(|a| format!("'{a}'"))
            .collect::<Vec<_>>()
            .join(" ")
    );
    let out = Command::new("script")
        .args(["-qefc", &cmd, "/dev/null"])
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .output()
        .expect("script (bsdutils) is installed");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The rows a terminal shows after receiving `bytes`: `\r` returns to the row's start, `\n`
/// starts a new row, `ESC[2K` clears the row, other escape sequences are skipped, and text
/// overwrites from the cursor.
pub fn screen_rows(bytes: &str) -> Vec<String> {
    let mut rows = Vec::new();
    let mut row: Vec<char> = Vec::new();
    let mut col = 0;
    let mut chars = bytes.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\r' => col = 0,
            '\n' => {
                rows.push(row.drain(..).collect());
                col = 0;
            }
            '\x1b' => {
                let mut seq = String::new();
                if chars.peek() == Some(&'[') {
                    chars.next();
                    while let Some(&n) = chars.peek() {
                        chars.next();
                        seq.push(n);
                        if n.is_ascii_alphabetic() {
                            break;
                        }
                    }
                }
                if seq == "2K" {
                    row.clear();
                }
            }
            c => {
                if col < row.len() {
                    row[col] = c;
                } else {
                    row.resize(col, ' ');
                    row.push(c);
                }
                col += 1;
            }
        }
    }
    rows.push(row.into_iter().collect());
    rows
}

/// The JSON report a run printed on stdout with `--report -`.
pub fn report_of(stdout: &str, stderr: &str) -> serde_json::Value {
    serde_json::from_str(stdout)
        .unwrap_or_else(|e| panic!("no JSON report on stdout ({e}):\n{stdout}\n{stderr}"))
}

/// Runs freezer-fleet to completion with `--report -` added; returns (exit code, stderr, report).
pub fn run_report(args: &[&str], limit: Duration) -> (i32, String, serde_json::Value) {
    let mut all = args.to_vec();
    all.extend(["--report", "-"]);
    let (code, stderr, stdout) = run_to_end(&all, limit);
    let report = report_of(&stdout, &stderr);
    (code, stderr, report)
}

/// A whole number from the report, by JSON pointer (e.g. "/messages/published").
pub fn num(report: &serde_json::Value, pointer: &str) -> u64 {
    report
        .pointer(pointer)
        .and_then(serde_json::Value::as_u64)
        .unwrap_or_else(|| panic!("no number at {pointer} in {report:#}"))
}

/// The usual preamble: a test PKI with `devices` device folders, a mutual-TLS mosquitto, and a
/// subscriber on `freezers`.
pub struct Setup {
    pub pki: Pki,
    pub broker: Mosquitto,
    pub sub: Subscriber,
}

impl Setup {
    pub fn new(devices: usize) -> Setup {
        let pki = Pki::new(devices);
        let broker = Mosquitto::start(&pki);
        let sub = Subscriber::start(&pki, broker.port, "freezers");
        Setup { pki, broker, sub }
    }
}

/// `openssl s_server` offering only an old TLS version, on a free loopback port.
pub struct OldTls {
    child: Child,
    pub port: u16,
}

impl OldTls {
    pub fn start(pki: &Pki, version_flag: &str) -> OldTls {
        let port = free_port();
        let child = Command::new("openssl")
            .args([
                "s_server",
                "-accept",
                &format!("127.0.0.1:{port}"),
                version_flag,
                "-cipher",
                "ALL@SECLEVEL=0",
            ])
            .arg("-cert")
            .arg(pki.path().join("server.pem"))
            .arg("-key")
            .arg(pki.path().join("server.key"))
            // s_server quits at end of stdin: keep a pipe open for its life.
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("openssl is installed");
        wait_until(Duration::from_secs(10), || {
            std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
        })
        .expect("openssl s_server listens");
        OldTls { child, port }
    }
}

impl Drop for OldTls {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
