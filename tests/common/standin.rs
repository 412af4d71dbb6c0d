//! A stand-in MQTT server for faults a real broker cannot make: it speaks just enough MQTT 3.1.1
//! over mutual TLS (packets parsed and written by rumqttc's own codec) to refuse the way AWS
//! IoT Core refuses a denied policy — by closing the connection, with no reason given.

use std::net::TcpListener;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use rumqttc::{ConnAck, ConnectReturnCode, Packet};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::Pki;

/// A TLS connection a stand-in serves.
pub type Tls = tokio_rustls::server::TlsStream<tokio::net::TcpStream>;

/// Serves TLS on a free loopback port, on a thread of its own, until `stop` is set: each
/// connection's handshake, then `handle` on a task of its own. Returns the port.
fn serve_tls<F, Fut>(config: rustls::ServerConfig, stop: Arc<AtomicBool>, handle: F) -> u16
where
    F: Fn(Tls) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let port = listener.local_addr().unwrap().port();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let handle = Arc::new(handle);
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            while !stop.load(Ordering::SeqCst) {
                let Ok(Ok((tcp, _))) =
                    tokio::time::timeout(Duration::from_millis(100), listener.accept()).await
                else {
                    continue;
                };
                let (acceptor, handle) = (acceptor.clone(), handle.clone());
                tokio::spawn(async move {
                    if let Ok(tls) = acceptor.accept(tcp).await {
                        handle(tls).await;
                    }
                });
            }
        });
    });
    port
}

/// When the stand-in closes the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refuse {
    /// Right after CONNECT, without CONNACK (iot:Connect denied).
    AfterConnect,
    /// After CONNACK, right after the first PUBLISH, without PUBACK (iot:Publish denied).
    AfterPublish,
    /// CONNACK with return code 5, not authorized: a refusal in the server's own words.
    NotAuthorized,
    /// MQTT 5: acknowledges everything, then 300 ms after CONNACK sends DISCONNECT 0x8E
    /// (session taken over) and closes, as IoT Core tells an MQTT 5 client whose client id
    /// another connection took.
    TakenOverV5,
}

pub struct RefusingServer {
    pub port: u16,
    connects: Arc<Mutex<Vec<(String, Instant)>>>,
    stop: Arc<AtomicBool>,
}

impl RefusingServer {
    pub fn start(pki: &Pki, refuse: Refuse) -> RefusingServer {
        let connects = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let log = connects.clone();
        let port = serve_tls(server_config(pki), stop.clone(), move |tls| {
            let log = log.clone();
            async move {
                if refuse == Refuse::TakenOverV5 {
                    serve_v5_taken_over(tls, &log).await;
                } else {
                    serve(tls, refuse, &log).await;
                }
            }
        });
        RefusingServer { port, connects, stop }
    }

    /// Every CONNECT received: (client id, when).
    pub fn connects(&self) -> Vec<(String, Instant)> {
        self.connects.lock().unwrap().clone()
    }
}

impl Drop for RefusingServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

/// One connection: reads packets until it is time to close.
async fn serve(mut stream: Tls, refuse: Refuse, log: &Mutex<Vec<(String, Instant)>>) {
    let mut buf = BytesMut::with_capacity(4096);
    loop {
        let packet = loop {
            match Packet::read(&mut buf, 1 << 20) {
                Ok(p) => break p,
                Err(rumqttc::Error::InsufficientBytes(_)) => {}
                Err(_) => return,
            }
            match stream.read_buf(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        };
        let reply = match packet {
            Packet::Connect(c) => {
                log.lock().unwrap().push((c.client_id.clone(), Instant::now()));
                match refuse {
                    Refuse::AfterConnect => return,
                    Refuse::NotAuthorized => {
                        Packet::ConnAck(ConnAck::new(ConnectReturnCode::NotAuthorized, false))
                    }
                    _ => Packet::ConnAck(ConnAck::new(ConnectReturnCode::Success, false)),
                }
            }
            Packet::Publish(_) if refuse == Refuse::AfterPublish => return,
            Packet::PingReq => Packet::PingResp,
            _ => continue,
        };
        let mut out = BytesMut::new();
        reply.write(&mut out, 1 << 20).unwrap();
        if stream.write_all(&out).await.is_err() {
            return;
        }
    }
}

/// MQTT 5: CONNACK, PUBACK and PINGRESP as a broker would, then DISCONNECT 0x8E.
async fn serve_v5_taken_over(mut stream: Tls, log: &Mutex<Vec<(String, Instant)>>) {
    use rumqttc::v5::mqttbytes::v5::{
        ConnAck as ConnAck5, ConnectReturnCode as Code5, Disconnect, DisconnectReasonCode, Packet as P5,
        PingResp, PubAck, PubAckReason,
    };
    let mut buf = BytesMut::with_capacity(4096);
    let mut taken_at: Option<tokio::time::Instant> = None;
    loop {
        let packet = match P5::read(&mut buf, None) {
            Ok(p) => Some(p),
            Err(rumqttc::v5::mqttbytes::Error::InsufficientBytes(_)) => None,
            Err(_) => return,
        };
        let reply = match packet {
            Some(P5::Connect(c, _, _)) => {
                log.lock().unwrap().push((c.client_id.clone(), Instant::now()));
                taken_at = Some(tokio::time::Instant::now() + Duration::from_millis(300));
                Some(P5::ConnAck(ConnAck5 {
                    session_present: false,
                    code: Code5::Success,
                    properties: None,
                }))
            }
            Some(P5::Publish(p)) if p.pkid > 0 => Some(P5::PubAck(PubAck {
                pkid: p.pkid,
                reason: PubAckReason::Success,
                properties: None,
            })),
            Some(P5::PingReq(_)) => Some(P5::PingResp(PingResp)),
            Some(_) => None,
            None => {
                let deadline =
                    taken_at.unwrap_or_else(|| tokio::time::Instant::now() + Duration::from_secs(3600));
                tokio::select! {
                    n = stream.read_buf(&mut buf) => match n {
                        Ok(0) | Err(_) => return,
                        Ok(_) => continue,
                    },
                    _ = tokio::time::sleep_until(deadline) => {
                        let mut out = BytesMut::new();
                        P5::Disconnect(Disconnect::new(DisconnectReasonCode::SessionTakenOver)).write(&mut out, None).unwrap();
                        let _ = stream.write_all(&out).await;
                        let _ = stream.shutdown().await;
                        return;
                    }
                }
            }
        };
        if let Some(reply) = reply {
            let mut out = BytesMut::new();
            reply.write(&mut out, None).unwrap();
            if stream.write_all(&out).await.is_err() {
                return;
            }
        }
    }
}

/// The test PKI's server certificate, client certificates required (signed by its CA).
fn server_config(pki: &Pki) -> rustls::ServerConfig {
    server_config_with(pki, true)
}

/// The test PKI's server certificate, no client certificate asked for.
fn server_config_without_client_auth(pki: &Pki) -> rustls::ServerConfig {
    server_config_with(pki, false)
}

fn server_config_with(pki: &Pki, client_auth: bool) -> rustls::ServerConfig {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let read = |name: &str| std::fs::read(pki.path().join(name)).unwrap();
    let certs: Vec<CertificateDer> = CertificateDer::pem_slice_iter(&read("server.pem"))
        .map(|c| c.unwrap())
        .collect();
    let key = PrivateKeyDer::from_pem_slice(&read("server.key")).unwrap();
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .unwrap();
    let builder = if client_auth {
        let mut roots = rustls::RootCertStore::empty();
        for ca in CertificateDer::pem_slice_iter(&read("ca.pem")) {
            roots.add(ca.unwrap()).unwrap();
        }
        let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
            .build()
            .unwrap();
        builder.with_client_cert_verifier(verifier)
    } else {
        builder.with_no_client_auth()
    };
    builder.with_single_cert(certs, key).unwrap()
}

/// A TLS front that, like AWS IoT Core on port 443, takes MQTT only from clients that offer ALPN
/// `x-amzn-mqtt-ca` (client certificate required), and passes it on to a real broker over TLS
/// with the test PKI's `monitor` identity.
pub struct AlpnGate {
    pub port: u16,
    passed: Arc<Mutex<u64>>,
    stop: Arc<AtomicBool>,
}

pub const IOT_MQTT_ALPN: &[u8] = b"x-amzn-mqtt-ca";

impl AlpnGate {
    pub fn start(pki: &Pki, upstream: u16) -> AlpnGate {
        let mut server = server_config(pki);
        server.alpn_protocols = vec![IOT_MQTT_ALPN.to_vec()];
        let connector = tokio_rustls::TlsConnector::from(Arc::new(monitor_client_config(pki)));
        let (passed, stop) = (Arc::new(Mutex::new(0)), Arc::new(AtomicBool::new(false)));
        let count = passed.clone();
        let port = serve_tls(server, stop.clone(), move |mut front| {
            let (connector, count) = (connector.clone(), count.clone());
            async move {
                if front.get_ref().1.alpn_protocol() != Some(IOT_MQTT_ALPN) {
                    return; // no ALPN: not MQTT for this port
                }
                let Some(mut back) = upstream_tls(&connector, upstream).await else {
                    return;
                };
                *count.lock().unwrap() += 1;
                let _ = tokio::io::copy_bidirectional(&mut front, &mut back).await;
            }
        });
        AlpnGate { port, passed, stop }
    }

    /// Connections that offered the ALPN protocol and were passed on.
    pub fn passed(&self) -> u64 {
        *self.passed.lock().unwrap()
    }
}

impl Drop for AlpnGate {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

/// A TLS connection to the real broker on `port`, as the test PKI's `monitor`.
async fn upstream_tls(
    connector: &tokio_rustls::TlsConnector,
    port: u16,
) -> Option<tokio_rustls::client::TlsStream<tokio::net::TcpStream>> {
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.ok()?;
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    connector.connect(name, tcp).await.ok()
}

/// A client config with the test PKI's `monitor` certificate.
fn monitor_client_config(pki: &Pki) -> rustls::ClientConfig {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let read = |name: &str| std::fs::read(pki.path().join(name)).unwrap();
    let mut roots = rustls::RootCertStore::empty();
    for ca in CertificateDer::pem_slice_iter(&read("ca.pem")) {
        roots.add(ca.unwrap()).unwrap();
    }
    let certs: Vec<CertificateDer> = CertificateDer::pem_slice_iter(&read("monitor.crt"))
        .map(|c| c.unwrap())
        .collect();
    let key = PrivateKeyDer::from_pem_slice(&read("monitor.key")).unwrap();
    rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_client_auth_cert(certs, key)
        .unwrap()
}

/// How the HTTPS stand-in answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    /// 200 to everything.
    Ok,
    /// This status to everything.
    Status(u16),
    /// 429 to the first N requests, then 200.
    ThrottleFirst(u64),
}

/// Every request received: (path and query, body, headers as `name: value`).
type RequestLog = Arc<Mutex<Vec<(String, Vec<u8>, Vec<String>)>>>;

/// A stand-in for IoT Core's HTTPS publish endpoint: mutual TLS (client certificates signed by
/// the test CA), HTTP/1.1 with keep-alive, every request recorded.
pub struct HttpsServer {
    pub port: u16,
    requests: RequestLog,
    connections: Arc<Mutex<u64>>,
    stop: Arc<AtomicBool>,
}

impl HttpsServer {
    pub fn start(pki: &Pki, answer: Answer) -> HttpsServer {
        let requests = Arc::new(Mutex::new(Vec::new()));
        let connections = Arc::new(Mutex::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (log, conns) = (requests.clone(), connections.clone());
        let port = serve_tls(server_config(pki), stop.clone(), move |tls| {
            *conns.lock().unwrap() += 1;
            let log = log.clone();
            async move {
                let service = hyper::service::service_fn(move |req| answer_one(req, answer, log.clone()));
                let io = hyper_util::rt::TokioIo::new(tls);
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(io, service)
                    .await;
            }
        });
        HttpsServer {
            port,
            requests,
            connections,
            stop,
        }
    }

    /// Every request: (path and query, body).
    pub fn requests(&self) -> Vec<(String, Vec<u8>)> {
        let log = self.requests.lock().unwrap();
        log.iter().map(|(p, b, _)| (p.clone(), b.clone())).collect()
    }

    /// Every request: (path and query, body, headers as `name: value`).
    pub fn requests_with_headers(&self) -> Vec<(String, Vec<u8>, Vec<String>)> {
        self.requests.lock().unwrap().clone()
    }

    /// TLS connections accepted (a fleet's pre-flight check makes one too).
    pub fn connections(&self) -> u64 {
        *self.connections.lock().unwrap()
    }
}

impl Drop for HttpsServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

async fn answer_one(
    req: hyper::Request<hyper::body::Incoming>,
    answer: Answer,
    log: RequestLog,
) -> Result<hyper::Response<http_body_util::Full<bytes::Bytes>>, std::convert::Infallible> {
    use http_body_util::BodyExt;
    let target = req
        .uri()
        .path_and_query()
        .map(|p| p.to_string())
        .unwrap_or_default();
    let headers: Vec<String> = req
        .headers()
        .iter()
        .map(|(k, v)| format!("{k}: {}", v.to_str().unwrap_or_default()))
        .collect();
    let body = req
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes().to_vec())
        .unwrap_or_default();
    let n = {
        let mut log = log.lock().unwrap();
        log.push((target, body, headers));
        log.len() as u64
    };
    let status = match answer {
        Answer::Ok => 200,
        Answer::Status(s) => s,
        Answer::ThrottleFirst(k) if n <= k => 429,
        Answer::ThrottleFirst(_) => 200,
    };
    let body = http_body_util::Full::new(bytes::Bytes::from_static(b"{\"message\":\"OK\"}"));
    Ok(hyper::Response::builder().status(status).body(body).unwrap())
}

/// A stand-in for AWS IoT Core's MQTT-over-WebSockets endpoint: TLS with the test PKI's server
/// certificate (no client certificate), a WebSocket upgrade whose request URL is recorded (where
/// the SigV4 signature travels), then MQTT passed on to a real broker over TLS with the test
/// PKI's `monitor` identity.
pub struct WsGate {
    pub port: u16,
    urls: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
}

impl WsGate {
    pub fn start(pki: &Pki, upstream: u16) -> WsGate {
        let connector = tokio_rustls::TlsConnector::from(Arc::new(monitor_client_config(pki)));
        let (urls, stop) = (Arc::new(Mutex::new(Vec::new())), Arc::new(AtomicBool::new(false)));
        let log = urls.clone();
        let port = serve_tls(server_config_without_client_auth(pki), stop.clone(), move |tls| {
            bridge(tls, connector.clone(), upstream, log.clone())
        });
        WsGate { port, urls, stop }
    }

    /// The URL (path and query) of every WebSocket upgrade request.
    pub fn urls(&self) -> Vec<String> {
        self.urls.lock().unwrap().clone()
    }
}

impl Drop for WsGate {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

/// Accepts the WebSocket (subprotocol `mqtt`), then copies binary frames to and from the broker.
async fn bridge(
    tls: Tls,
    connector: tokio_rustls::TlsConnector,
    upstream: u16,
    log: Arc<Mutex<Vec<String>>>,
) {
    use async_tungstenite::tungstenite::Message;
    use async_tungstenite::tungstenite::handshake::server::{Request, Response};
    use futures_util::{SinkExt, StreamExt};
    // The closure's type is tungstenite's: its error variant is large by their design.
    #[allow(clippy::result_large_err)]
    let callback = |req: &Request, mut resp: Response| {
        log.lock().unwrap().push(req.uri().to_string());
        resp.headers_mut()
            .insert("Sec-WebSocket-Protocol", "mqtt".parse().unwrap());
        Ok(resp)
    };
    let Ok(ws) = async_tungstenite::tokio::accept_hdr_async(tls, callback).await else {
        return;
    };
    let Ok(up) = tokio::net::TcpStream::connect(("127.0.0.1", upstream)).await else {
        return;
    };
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let Ok(back) = connector.connect(name, up).await else {
        return;
    };
    let (mut back_read, mut back_write) = tokio::io::split(back);
    let (mut ws_write, mut ws_read) = ws.split();
    let to_broker = async {
        while let Some(Ok(message)) = ws_read.next().await {
            if let Message::Binary(bytes) = message
                && back_write.write_all(&bytes).await.is_err()
            {
                break;
            }
        }
    };
    let to_client = async {
        let mut buf = vec![0u8; 16 * 1024];
        while let Ok(n @ 1..) = back_read.read(&mut buf).await {
            if ws_write
                .send(Message::Binary(buf[..n].to_vec().into()))
                .await
                .is_err()
            {
                break;
            }
        }
    };
    tokio::select! {
        _ = to_broker => {}
        _ = to_client => {}
    }
}
