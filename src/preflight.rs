//! The pre-flight check: before any device connects, resolve the endpoint, open one TCP
//! connection and complete one TLS handshake with the first device's identity. A wrong host,
//! port or CA, or a client certificate the server rejects, then stops the run with one line
//! that names the flag or file (exit 2), instead of N devices failing the same way.
//!
//! Then, over MQTT with a clean session ([`connect_first`]), one CONNECT as the first device: a
//! server that refuses it in its own words (CONNACK not authorized, a TLS alert after the
//! handshake) stops the run the same way, since every device would be refused alike and the
//! devices never give up by themselves. Under the aws-iot profile that CONNECT counts as the
//! first device's own attempt (IoT Core takes one per second per client id), so the device's
//! first attempt comes a second after it. With `--persistent-session` it is skipped: it would
//! end the device's kept session.

use std::time::Duration;

use anyhow::Result;
use rustls::pki_types::ServerName;
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;
use tokio::time::timeout;

use crate::cause::{self, Blame};
use crate::config::{DeviceConfig, FleetConfig, MqttVersion, TransportKind};
use crate::input;
use crate::transport::mqtt::Mqtt;
use crate::transport::mqtt5::Mqtt5;
use crate::transport::{Link, LinkEvent, Transport};

const STEP_TIMEOUT: Duration = Duration::from_secs(10);
/// How long to listen after the handshake for a TLS 1.3 server's verdict on our certificate.
const VERDICT_WAIT: Duration = Duration::from_millis(300);

pub async fn check(cfg: &FleetConfig) -> Result<()> {
    let Some(device) = cfg.devices.first() else {
        return Ok(());
    };
    let (host, port) = (cfg.endpoint.as_str(), cfg.port);
    let addr = format!("{host}:{port}");
    let addrs: Vec<_> = match timeout(STEP_TIMEOUT, tokio::net::lookup_host((host, port))).await {
        Ok(Ok(a)) => a.collect(),
        Ok(Err(_)) | Err(_) => {
            return Err(input!(
                "--endpoint {host}: unknown host (DNS lookup failed); check the endpoint name"
            ));
        }
    };
    let tcp = match timeout(STEP_TIMEOUT, TcpStream::connect(&addrs[..])).await {
        Err(_) => {
            return Err(input!(
                "--endpoint {host} --port {port}: no answer within {} s; check the endpoint, the port and any firewall",
                STEP_TIMEOUT.as_secs()
            ));
        }
        Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
            return Err(input!(
                "--port {port}: nothing listens on {addr} (connection refused); is the broker running on that port? (AWS IoT Core: 8883)"
            ));
        }
        Ok(Err(e)) => return Err(input!("--endpoint {addr}: cannot connect: {e}")),
        Ok(Ok(s)) => s,
    };
    let _ = tcp.set_nodelay(true);
    let name = ServerName::try_from(host.to_string())
        .map_err(|_| input!("--endpoint {host}: not a valid host name"))?;
    let connector = tokio_rustls::TlsConnector::from(device.tls.clone());
    let mut tls = match timeout(STEP_TIMEOUT, connector.connect(name, tcp)).await {
        Err(_) => {
            return Err(input!(
                "--endpoint {addr}: the TLS handshake did not finish within {} s",
                STEP_TIMEOUT.as_secs()
            ));
        }
        Ok(Err(e)) => return tls_failure(e, &addr, device),
        Ok(Ok(s)) => s,
    };
    check_alpn(&tls, device, &addr);
    // A TLS 1.3 server judges our certificate after the handshake: give it a moment to object.
    let mut byte = [0u8; 1];
    if let Ok(Err(e)) = timeout(VERDICT_WAIT, tls.read(&mut byte)).await {
        return tls_failure(e, &addr, device);
    }
    Ok(())
}

/// IoT Core on 443 routes by ALPN: a server that did not select the protocol we offered will
/// not take MQTT there. Other brokers ignore ALPN and work anyway, so this is a warning.
fn check_alpn(tls: &tokio_rustls::client::TlsStream<TcpStream>, device: &DeviceConfig, addr: &str) {
    let Some(offered) = device.tls.alpn_protocols.first() else {
        return;
    };
    let offered = String::from_utf8_lossy(offered);
    match tls.get_ref().1.alpn_protocol() {
        Some(p) if p == offered.as_bytes() => {}
        other => {
            let chosen = other.map_or("none".to_string(), |p| {
                format!("'{}'", String::from_utf8_lossy(p))
            });
            tracing::warn!(
                "pre-flight check of {addr}: ALPN '{offered}' was offered but the server selected {chosen}; \
                 AWS IoT Core needs x-amzn-mqtt-ca for MQTT on 443 (--alpn sets another)"
            );
        }
    }
}

fn tls_failure(e: std::io::Error, addr: &str, device: &DeviceConfig) -> Result<()> {
    let Some(tls) = e
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
    else {
        // Not a TLS verdict (e.g. the connection closed): let the devices try, and report.
        tracing::warn!("pre-flight check of {addr}: {e}; starting the devices anyway");
        return Ok(());
    };
    let c = cause::from_rustls(tls, addr);
    match c.kind.blames() {
        Blame::Ca => Err(input!("--ca: {}", c.detail)),
        Blame::Endpoint => Err(input!("--endpoint: {}", c.detail)),
        Blame::Alpn => Err(input!("--alpn: {}", c.detail)),
        Blame::Device => Err(input!(
            "device {} ({}): {}",
            device.id,
            device.cert_file.display(),
            c.detail
        )),
    }
}

/// The pre-flight MQTT CONNECT as the first device over the run's MQTT settings (plain MQTT
/// over TLS with a clean session only): its client id and when it was sent.
pub async fn connect_as_first_device(
    cfg: &FleetConfig,
    mqtt: Mqtt,
) -> Result<Option<(String, tokio::time::Instant)>> {
    let Some(device) = cfg.devices.first() else {
        return Ok(None);
    };
    if cfg.transport != TransportKind::Mqtt || cfg.link.persistent_session {
        return Ok(None);
    }
    let at = match cfg.mqtt_version {
        MqttVersion::V5 => connect_first(&Mqtt5(mqtt), device).await?,
        _ => connect_first(&mqtt, device).await?,
    };
    // It took one slot of --ramp-up: the fleet's attempts start a slot later.
    if let Some(r) = cfg.link.ramp_up {
        tokio::time::sleep_until(at + Duration::from_secs_f64(1.0 / f64::from(r))).await;
    }
    Ok(Some((device.id.clone(), at)))
}

/// One MQTT CONNECT as `device` over `transport`, then a clean DISCONNECT. A refusal in the
/// server's own words is bad input (exit 2) naming the device; anything else (a close, a
/// timeout) is left to the devices, which retry. Returns when the CONNECT was sent, to space
/// the device's own first attempt from it.
async fn connect_first<T: Transport>(transport: &T, device: &DeviceConfig) -> Result<tokio::time::Instant> {
    let (_tx, mut link) = transport.open(device, 0);
    let at = tokio::time::Instant::now();
    let outcome = timeout(STEP_TIMEOUT, async {
        loop {
            match link.next().await {
                LinkEvent::Connected => return None,
                LinkEvent::Lost(cause) => return Some(cause),
                _ => {}
            }
        }
    })
    .await;
    match outcome {
        Ok(None) => link.close(Duration::from_secs(1), |_| {}).await,
        Ok(Some(c)) if c.permanent() && !c.kind.network() => {
            return Err(input!(
                "device {} ({}): {}: the server refuses this device's CONNECT, and would refuse it again; \
                 check the certificate is active and its policy allows iot:Connect for this client id",
                device.id,
                device.cert_file.display(),
                c.detail
            ));
        }
        Ok(Some(c)) => {
            tracing::warn!(
                "pre-flight CONNECT as {}: {}; starting the devices anyway",
                device.id,
                c.detail
            )
        }
        Err(_) => tracing::warn!(
            "pre-flight CONNECT as {}: no CONNACK within {} s; starting the devices anyway",
            device.id,
            STEP_TIMEOUT.as_secs()
        ),
    }
    Ok(at)
}
