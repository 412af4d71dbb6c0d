//! The benchmark's reference client: the least a QoS 1 publisher over mutual TLS can do, to
//! hold freezer-fleet's latency and CPU figures against (`bench/bench.py`, rows (f) and (g)).
//!
//! One tokio task per connection owns its TLS stream: no event loop, no channel between a
//! device and its connection, no ledger, no model. Each task connects (TCP, TLS 1.3 with the
//! device's own certificate, MQTT CONNECT encoded by rumqttc's codec), then publishes a fixed
//! JSON reading at its share of `--rate` (or, with `--rate max`, keeps up to 100 in flight),
//! and times each PUBACK against the moment its PUBLISH was written. Acknowledgements on one
//! connection come in order, so a FIFO of send instants matches them.
//!
//! ```text
//! cargo build --release --example refclient
//! target/release/examples/refclient --port 18883 --ca ca.pem --certs devices --devices 100 \
//!     --rate 10000 --seconds 14 [--start-at-unix SECS]
//! ```
//! prints one JSON object: published, acknowledged, connected, PUBACK p50/p90/p99/max in ms.
//! Loopback only: the endpoint is always localhost.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use hdrhistogram::Histogram;
use rumqttc::{Connect, Packet, PubAck, Publish, QoS};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

const MAX_PACKET: usize = 1 << 20;
const MAX_IN_FLIGHT: usize = 100;

struct Args {
    port: u16,
    ca: PathBuf,
    certs: PathBuf,
    devices: usize,
    /// Publishes per second over the whole fleet; None = as fast as the window allows.
    rate: Option<f64>,
    seconds: f64,
    /// When the schedule starts (Unix seconds; devices connect before), as `run --start-at`.
    start_at_unix: Option<f64>,
}

fn parse_args() -> Result<Args, String> {
    let mut args = std::env::args().skip(1);
    let (mut port, mut ca, mut certs, mut devices, mut rate, mut seconds, mut start_at_unix) =
        (8883, None, None, 100, None, 10.0, None);
    while let Some(flag) = args.next() {
        let mut value = || args.next().ok_or(format!("{flag} needs a value"));
        match flag.as_str() {
            "--port" => port = value()?.parse().map_err(|e| format!("--port: {e}"))?,
            "--ca" => ca = Some(PathBuf::from(value()?)),
            "--certs" => certs = Some(PathBuf::from(value()?)),
            "--devices" => devices = value()?.parse().map_err(|e| format!("--devices: {e}"))?,
            "--rate" => {
                let v = value()?;
                if v != "max" {
                    rate = Some(v.parse().map_err(|e| format!("--rate: {e}"))?);
                }
            }
            "--seconds" => seconds = value()?.parse().map_err(|e| format!("--seconds: {e}"))?,
            "--start-at-unix" => {
                start_at_unix = Some(value()?.parse().map_err(|e| format!("--start-at-unix: {e}"))?)
            }
            other => return Err(format!("unknown flag {other}")),
        }
    }
    Ok(Args {
        port,
        ca: ca.ok_or("--ca is required")?,
        certs: certs.ok_or("--certs is required")?,
        devices,
        rate,
        seconds,
        start_at_unix,
    })
}

/// One device's identity, loaded before anything connects.
fn tls_config(
    provider: &Arc<rustls::crypto::CryptoProvider>,
    roots: &Arc<rustls::RootCertStore>,
    dir: &std::path::Path,
) -> Result<Arc<rustls::ClientConfig>, String> {
    // The AWS download layout: `certificate.pem.crt` and `private.pem.key`, or with the id in front.
    let find = |suffix: &str| {
        std::fs::read_dir(dir)
            .ok()
            .and_then(|entries| {
                entries
                    .filter_map(|e| e.ok().map(|e| e.path()))
                    .find(|p| p.to_string_lossy().ends_with(suffix))
            })
            .ok_or(format!("{}: no *{suffix}", dir.display()))
    };
    let cert = find("certificate.pem.crt")?;
    let key = find("private.pem.key")?;
    let chain = CertificateDer::pem_file_iter(&cert)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| format!("{}: {e}", cert.display()))?;
    let key = PrivateKeyDer::from_pem_file(&key).map_err(|e| format!("{}: {e}", key.display()))?;
    let config = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots.clone())
        .with_client_auth_cert(chain, key)
        .map_err(|e| format!("{}: {e}", dir.display()))?;
    Ok(Arc::new(config))
}

struct Outcome {
    connected: bool,
    published: u64,
    acknowledged: u64,
    puback_us: Histogram<u64>,
}

async fn device(
    id: String,
    config: Arc<rustls::ClientConfig>,
    port: u16,
    start: Instant,
    period: Option<Duration>,
    end: Instant,
) -> Outcome {
    let mut out = Outcome {
        connected: false,
        published: 0,
        acknowledged: 0,
        puback_us: Histogram::new_with_bounds(1, 60_000_000, 3).expect("histogram bounds"),
    };
    if let Err(e) = publish_until(&id, config, port, start, period, end, &mut out).await {
        eprintln!("refclient: {id}: {e}");
    }
    out
}

async fn publish_until(
    id: &str,
    config: Arc<rustls::ClientConfig>,
    port: u16,
    start: Instant,
    period: Option<Duration>,
    end: Instant,
    out: &mut Outcome,
) -> Result<(), Box<dyn std::error::Error>> {
    let tcp = TcpStream::connect(("127.0.0.1", port)).await?;
    tcp.set_nodelay(true)?;
    let tls = TlsConnector::from(config)
        .connect(ServerName::try_from("localhost")?, tcp)
        .await?;
    let (mut rx, mut tx) = tokio::io::split(tls);
    let mut wbuf = BytesMut::with_capacity(256);
    let mut rbuf = BytesMut::with_capacity(1024);
    let mut connect = Connect::new(id);
    connect.keep_alive = 60;
    connect.clean_session = true;
    Packet::Connect(connect).write(&mut wbuf, MAX_PACKET)?;
    tx.write_all(&wbuf).await?;
    loop {
        match Packet::read(&mut rbuf, MAX_PACKET) {
            Ok(Packet::ConnAck(ack)) if ack.code == rumqttc::ConnectReturnCode::Success => break,
            Ok(other) => return Err(format!("expected CONNACK, got {other:?}").into()),
            Err(rumqttc::Error::InsufficientBytes(_)) => {
                if rx.read_buf(&mut rbuf).await? == 0 {
                    return Err("closed before CONNACK".into());
                }
            }
            Err(e) => return Err(e.into()),
        }
    }
    out.connected = true;

    let topic = "freezers".to_string();
    let mut sent: VecDeque<Instant> = VecDeque::with_capacity(MAX_IN_FLIGHT);
    let mut pkid: u16 = 0;
    let mut seq: u64 = 0;
    let mut ticker = period.map(|p| {
        let first = start.max(Instant::now());
        let mut t = tokio::time::interval_at(first.into(), p);
        t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
        t
    });
    let drain_until = end + Duration::from_secs(2);
    loop {
        let now = Instant::now();
        let sending = now < end;
        if !sending && (sent.is_empty() || now >= drain_until) {
            break;
        }
        let window_open = sent.len() < MAX_IN_FLIGHT;
        tokio::select! {
            at = async { ticker.as_mut().unwrap().tick().await }, if sending && ticker.is_some() => {
                // A tick due at the end itself belongs to the next run.
                if at.into_std() < end {
                    publish(&mut tx, &mut wbuf, &topic, id, &mut pkid, &mut seq).await?;
                    sent.push_back(Instant::now());
                    out.published += 1;
                }
            }
            _ = std::future::ready(()), if sending && ticker.is_none() && window_open => {
                publish(&mut tx, &mut wbuf, &topic, id, &mut pkid, &mut seq).await?;
                sent.push_back(Instant::now());
                out.published += 1;
            }
            n = rx.read_buf(&mut rbuf) => {
                if n? == 0 {
                    return Err("connection closed".into());
                }
                loop {
                    match Packet::read(&mut rbuf, MAX_PACKET) {
                        Ok(Packet::PubAck(PubAck { .. })) => {
                            if let Some(at) = sent.pop_front() {
                                let us = at.elapsed().as_micros().max(1) as u64;
                                out.puback_us.saturating_record(us);
                                out.acknowledged += 1;
                            }
                        }
                        Ok(_) => {}
                        Err(rumqttc::Error::InsufficientBytes(_)) => break,
                        Err(e) => return Err(e.into()),
                    }
                }
            }
            _ = tokio::time::sleep_until(drain_until.into()), if !sending => {}
        }
    }
    wbuf.clear();
    Packet::Disconnect.write(&mut wbuf, MAX_PACKET)?;
    tx.write_all(&wbuf).await?;
    tx.shutdown().await.ok();
    Ok(())
}

async fn publish<W: AsyncWriteExt + Unpin>(
    tx: &mut W,
    wbuf: &mut BytesMut,
    topic: &str,
    id: &str,
    pkid: &mut u16,
    seq: &mut u64,
) -> Result<(), Box<dyn std::error::Error>> {
    *seq += 1;
    *pkid = if *pkid == u16::MAX { 1 } else { *pkid + 1 };
    let ts = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0);
    let payload =
        format!(r#"{{"device_id":"{id}","seq":{seq},"ts":{ts},"temperature":-18.4,"humidity":64.9}}"#);
    let mut p = Publish::new(topic, QoS::AtLeastOnce, payload.into_bytes());
    p.pkid = *pkid;
    wbuf.clear();
    Packet::Publish(p).write(wbuf, MAX_PACKET)?;
    tx.write_all(wbuf).await?;
    Ok(())
}

fn main() {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("refclient: {e}");
            std::process::exit(2);
        }
    };
    let mut roots = rustls::RootCertStore::empty();
    let ca = std::fs::read(&args.ca).unwrap_or_else(|e| {
        eprintln!("refclient: {}: {e}", args.ca.display());
        std::process::exit(2)
    });
    for cert in CertificateDer::pem_slice_iter(&ca) {
        roots.add(cert.expect("CA PEM")).expect("CA certificate");
    }
    let roots = Arc::new(roots);
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut dirs: Vec<_> = std::fs::read_dir(&args.certs)
        .expect("--certs folder")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_dir())
        .collect();
    dirs.sort();
    dirs.truncate(args.devices);
    let identities: Vec<_> = dirs
        .iter()
        .map(|d| {
            let id = d.file_name().unwrap().to_string_lossy().into_owned();
            let config = tls_config(&provider, &roots, d).unwrap_or_else(|e| {
                eprintln!("refclient: {e}");
                std::process::exit(2)
            });
            (id, config)
        })
        .collect();
    let n = identities.len();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let outcomes = runtime.block_on(async {
        let now_unix = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64());
        let wait = args.start_at_unix.map_or(0.0, |at| (at - now_unix).max(0.0));
        let t0 = Instant::now() + Duration::from_secs_f64(wait);
        let end = t0 + Duration::from_secs_f64(args.seconds);
        let period = args.rate.map(|r| Duration::from_secs_f64(n as f64 / r));
        let tasks: Vec<_> = identities
            .into_iter()
            .enumerate()
            .map(|(i, (id, config))| {
                // Each device's first publish falls at its own slot of the period.
                let start = t0 + period.map_or(Duration::ZERO, |p| p.mul_f64(i as f64 / n as f64));
                tokio::spawn(device(id, config, args.port, start, period, end))
            })
            .collect();
        let mut outcomes = Vec::with_capacity(n);
        for t in tasks {
            outcomes.push(t.await.expect("device task"));
        }
        (outcomes, end.min(Instant::now()) - t0)
    });
    let (outcomes, elapsed) = outcomes;
    let mut all = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("histogram bounds");
    let (mut published, mut acknowledged, mut connected) = (0, 0, 0);
    for o in &outcomes {
        all.add(&o.puback_us).expect("same bounds");
        published += o.published;
        acknowledged += o.acknowledged;
        connected += o.connected as usize;
    }
    let ms = |q: f64| all.value_at_quantile(q) as f64 / 1000.0;
    println!(
        "{}",
        serde_json::json!({
            "devices": n,
            "connected": connected,
            "published": published,
            "acknowledged": acknowledged,
            "seconds": elapsed.as_secs_f64(),
            "puback_ms": {"p50": ms(0.5), "p90": ms(0.9), "p99": ms(0.99), "max": all.max() as f64 / 1000.0},
        })
    );
}
