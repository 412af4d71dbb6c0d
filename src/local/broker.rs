//! The embedded MQTT broker (rumqttd, in-process): a stand-in for AWS IoT Core that accepts only
//! clients whose certificate is signed by the local CA.
//!
//! rumqttd has no shutdown API and `Broker::start` blocks, so it runs on a thread of its own for
//! the life of the process. It also reports a failed bind only in its log, so we check the
//! address is free before starting it and wait until it accepts connections.

use std::collections::HashMap;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Result;
use rumqttd::{Config, ConnectionSettings, RouterConfig, ServerSettings, TlsConfig};

use crate::input;
use crate::local::pki::{CA_CERT, SERVER_CERT, SERVER_KEY};

/// A running embedded broker.
#[derive(Debug, Clone, Copy)]
pub struct Running {
    pub addr: SocketAddr,
}

/// Starts the broker on `listen` (port 0: a free port) with the PKI in `pki_dir`.
pub fn start(pki_dir: &Path, listen: SocketAddr) -> Result<Running> {
    let path = |name: &str| -> Result<String> {
        let p = pki_dir.join(name);
        if !p.is_file() {
            return Err(input!(
                "--pki {}: {name} is missing; create the local PKI with `freezer-fleet certs init {}`",
                pki_dir.display(),
                pki_dir.display()
            ));
        }
        Ok(p.to_string_lossy().into_owned())
    };
    let tls = TlsConfig::Rustls {
        capath: Some(path(CA_CERT)?),
        certpath: path(SERVER_CERT)?,
        keypath: path(SERVER_KEY)?,
    };
    // Check the address, and resolve port 0, by binding it ourselves first.
    let addr = TcpListener::bind(listen)
        .and_then(|l| l.local_addr())
        .map_err(|e| input!("--listen {listen}: cannot listen there: {e}; pick another address or port"))?;

    let server = ServerSettings {
        name: "mtls".into(),
        listen: addr,
        tls: Some(tls),
        next_connection_delay_ms: 0,
        connections: ConnectionSettings {
            connection_timeout_ms: 10_000,
            // AWS IoT Core's limit, plus room for the MQTT header.
            max_payload_size: 128 * 1024 + 1024,
            max_inflight_count: 100,
            auth: None,
            external_auth: None,
            dynamic_filters: true,
        },
    };
    let config = Config {
        id: 0,
        router: RouterConfig {
            max_connections: 100_000,
            max_outgoing_packet_count: 1000,
            max_segment_size: 10 * 1024 * 1024,
            max_segment_count: 10,
            ..Default::default()
        },
        v4: Some(HashMap::from([("1".to_string(), server)])),
        ..Default::default()
    };
    std::thread::Builder::new().name("broker".into()).spawn(move || {
        let mut broker = rumqttd::Broker::new(config);
        if let Err(e) = broker.start() {
            tracing::error!("embedded broker stopped: {e}");
        }
    })?;
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
        if Instant::now() > deadline {
            anyhow::bail!("the embedded broker did not start listening on {addr}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(Running { addr })
}
