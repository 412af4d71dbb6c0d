//! Where a connection attempt ended, as a device's MQTT link reports it: a real rumqttc client
//! with mutual TLS against loopback servers that fail at each step (nothing listening, accept
//! and close, a handshake cut half way, a close after CONNECT, a CONNACK refusal, a TLS alert,
//! a server that never answers, a close in the session).

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rustls::RootCertStore;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use super::*;
use crate::cause::{Cause, Kind};
use crate::identity::{IdentityFiles, TrustSource, client_config, load_roots};
use crate::local::pki;

/// What the loopback server does with each connection.
#[derive(Clone, Copy, Debug)]
enum Fault {
    /// Accepts the TCP connection and closes it at once (a load balancer with no target).
    AcceptClose,
    /// Reads the ClientHello, then closes without answering it.
    CutHandshake,
    /// Completes the TLS handshake with a CA that did not sign the client: an alert.
    UntrustedClient,
    /// Completes the handshake, reads CONNECT, closes (IoT Core denying iot:Connect).
    CloseAfterConnect,
    /// Completes the handshake and answers CONNECT with CONNACK "not authorized".
    ConnAckNotAuthorized,
    /// Accepts and never says anything.
    Silent,
    /// CONNACK, then closes the session a moment later.
    CloseInSession,
}

struct Pki {
    dir: tempfile::TempDir,
    device: IdentityFiles,
}

impl Pki {
    fn new() -> Pki {
        let dir = tempfile::tempdir().unwrap();
        let device = pki::test_device(dir.path(), "freezer1");
        Pki { dir, device }
    }

    fn path(&self, name: &str) -> std::path::PathBuf {
        self.dir.path().join(name)
    }

    fn client(&self) -> Arc<rustls::ClientConfig> {
        let roots = load_roots(&TrustSource::File(self.path(pki::CA_CERT))).unwrap();
        client_config(&self.device, roots, &[]).unwrap()
    }

    /// The server's config: client certificates required, signed by `client_ca`.
    fn server(&self, client_ca: &Path) -> Arc<rustls::ServerConfig> {
        let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(self.path(pki::SERVER_CERT))
            .unwrap()
            .map(|c| c.unwrap())
            .collect();
        let key = PrivateKeyDer::from_pem_file(self.path(pki::SERVER_KEY)).unwrap();
        let mut roots = RootCertStore::empty();
        for c in CertificateDer::pem_file_iter(client_ca).unwrap() {
            roots.add(c.unwrap()).unwrap();
        }
        let provider = crate::identity::provider();
        let verifier =
            rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
                .build()
                .unwrap();
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_client_cert_verifier(verifier)
            .with_single_cert(chain, key)
            .unwrap();
        Arc::new(config)
    }
}

/// CONNACK: session present 0, return code `code`.
fn connack(code: u8) -> [u8; 4] {
    [0x20, 0x02, 0x00, code]
}

/// Serves `fault` on a loopback port; returns the port.
async fn serve(pki: &Pki, fault: Fault) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let other_ca = tempfile::tempdir().unwrap();
    pki::init(other_ca.path(), pki::KeyType::P256).unwrap();
    let client_ca = match fault {
        Fault::UntrustedClient => other_ca.path().join(pki::CA_CERT),
        _ => pki.path(pki::CA_CERT),
    };
    let acceptor = tokio_rustls::TlsAcceptor::from(pki.server(&client_ca));
    tokio::spawn(async move {
        let _keep = other_ca;
        loop {
            let Ok((mut tcp, _)) = listener.accept().await else {
                return;
            };
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                match fault {
                    Fault::AcceptClose => drop(tcp),
                    Fault::CutHandshake => {
                        let mut hello = [0u8; 512];
                        let _ = tcp.read(&mut hello).await;
                    }
                    Fault::Silent => tokio::time::sleep(Duration::from_secs(30)).await,
                    _ => {
                        let Ok(mut tls) = acceptor.accept(tcp).await else {
                            return;
                        };
                        let mut connect = [0u8; 256];
                        let _ = tls.read(&mut connect).await;
                        match fault {
                            Fault::ConnAckNotAuthorized => {
                                let _ = tls.write_all(&connack(5)).await;
                                let _ = tls.flush().await;
                            }
                            Fault::CloseInSession => {
                                let _ = tls.write_all(&connack(0)).await;
                                let _ = tls.flush().await;
                                tokio::time::sleep(Duration::from_millis(200)).await;
                            }
                            _ => {}
                        }
                    }
                }
            });
        }
    });
    port
}

/// The first `Lost` a device's link reports against `port` (and whether it connected first).
async fn first_loss(pki: &Pki, port: u16) -> (bool, Cause) {
    let mqtt = Mqtt {
        host: "localhost".into(),
        port,
        topic: "freezers".into(),
        qos: QoS::AtLeastOnce,
        keep_alive: Duration::from_secs(30),
        persistent_session: false,
        max_inflight: 10,
        payload_bytes: None,
        connect_timeout: Duration::from_secs(1),
        bind: Vec::new(),
        websocket: None,
        listen: false,
    };
    let device = DeviceConfig {
        id: "freezer1".into(),
        index: 0,
        tls: pki.client(),
        cert_file: pki.device.cert.clone(),
        group: 0,
        topic: None,
        qos: None,
    };
    let (_tx, mut link) = mqtt.open(&device, 0);
    let mut connected = false;
    let within = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match link.next().await {
                LinkEvent::Lost(cause) => return cause,
                LinkEvent::Connected => connected = true,
                _ => {}
            }
        }
    });
    let cause = within.await.expect("the link reports a loss");
    (connected, cause)
}

#[tokio::test]
async fn each_step_of_a_failed_attempt_is_told_apart() {
    let pki = Pki::new();
    // Nothing listens: refused.
    let free = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = free.local_addr().unwrap().port();
    drop(free);
    let (_, c) = first_loss(&pki, port).await;
    assert_eq!(c.kind, Kind::Refused, "{c:?}");
    assert!(c.kind.network());

    let cases = [
        (Fault::AcceptClose, Kind::ClosedInHandshake),
        (Fault::CutHandshake, Kind::ClosedInHandshake),
        (Fault::CloseAfterConnect, Kind::ClosedAfterConnect),
        (Fault::ConnAckNotAuthorized, Kind::NotAuthorized),
        (Fault::UntrustedClient, Kind::ClientCertRejected),
        (Fault::Silent, Kind::Timeout),
        (Fault::CloseInSession, Kind::ClosedByServer),
    ];
    for (fault, kind) in cases {
        let port = serve(&pki, fault).await;
        let (connected, c) = first_loss(&pki, port).await;
        assert_eq!(c.kind, kind, "{fault:?}: {c:?}");
        assert_eq!(connected, matches!(fault, Fault::CloseInSession), "{fault:?}");
        match fault {
            Fault::AcceptClose | Fault::CutHandshake => {
                assert!(c.kind.network() && !c.permanent(), "{fault:?}");
                assert!(c.detail.contains("during the TLS handshake"), "{}", c.detail);
                assert!(
                    c.detail.contains("not the device's certificate or policy"),
                    "{}",
                    c.detail
                );
            }
            Fault::CloseAfterConnect => {
                assert!(
                    !c.kind.network(),
                    "the server read CONNECT and closed: it may be refusing"
                );
                assert!(
                    c.detail.contains("after CONNECT, without CONNACK"),
                    "{}",
                    c.detail
                );
            }
            Fault::UntrustedClient => {
                assert!(c.permanent() && !c.kind.network());
                assert!(c.detail.contains("TLS alert"), "{}", c.detail);
            }
            Fault::Silent => {
                assert!(c.detail.contains("waiting for the TLS handshake"), "{}", c.detail);
            }
            _ => {}
        }
    }
}
