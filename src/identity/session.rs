//! A device's TLS session memory: one server, one ticket.
//!
//! A device talks to one endpoint, and a reconnect needs one ticket to resume. rustls' own
//! `ClientSessionMemoryCache` sizes a table up front and keeps every TLS 1.3 ticket the server
//! sends (OpenSSL-based brokers such as mosquitto send two), each with its own copy of the
//! server's certificate chain: about 4.9 KB per device, idle. This store keeps the latest
//! ticket (or TLS 1.2 session) of the last server only, about 1.5 KB.

use std::sync::Mutex;

use rustls::NamedGroup;
use rustls::client::{ClientSessionStore, Tls12ClientSessionValue, Tls13ClientSessionValue};
use rustls::pki_types::ServerName;

#[derive(Debug, Default)]
pub struct OneSession(Mutex<Slot>);

#[derive(Debug, Default)]
struct Slot {
    server: Option<ServerName<'static>>,
    kx: Option<NamedGroup>,
    tls12: Option<Tls12ClientSessionValue>,
    tls13: Option<Tls13ClientSessionValue>,
}

impl OneSession {
    /// The slot for `server`, emptied first when it held another server's session.
    fn with_server<R>(&self, server: ServerName<'static>, f: impl FnOnce(&mut Slot) -> R) -> R {
        let mut slot = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if slot.server.as_ref() != Some(&server) {
            *slot = Slot {
                server: Some(server),
                ..Slot::default()
            };
        }
        f(&mut slot)
    }

    /// Reads the slot if it holds `server`'s session.
    fn read<R>(&self, server: &ServerName<'_>, f: impl FnOnce(&mut Slot) -> Option<R>) -> Option<R> {
        let mut slot = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if slot.server.as_ref().is_some_and(|s| s == server) {
            f(&mut slot)
        } else {
            None
        }
    }
}

impl ClientSessionStore for OneSession {
    fn set_kx_hint(&self, server_name: ServerName<'static>, group: NamedGroup) {
        self.with_server(server_name, |s| s.kx = Some(group));
    }

    fn kx_hint(&self, server_name: &ServerName<'_>) -> Option<NamedGroup> {
        self.read(server_name, |s| s.kx)
    }

    fn set_tls12_session(&self, server_name: ServerName<'static>, value: Tls12ClientSessionValue) {
        self.with_server(server_name, |s| s.tls12 = Some(value));
    }

    fn tls12_session(&self, server_name: &ServerName<'_>) -> Option<Tls12ClientSessionValue> {
        self.read(server_name, |s| s.tls12.clone())
    }

    fn remove_tls12_session(&self, server_name: &ServerName<'static>) {
        self.read(server_name, |s| s.tls12.take());
    }

    /// Keeps the latest ticket only: one resumption is all a reconnect needs.
    fn insert_tls13_ticket(&self, server_name: ServerName<'static>, value: Tls13ClientSessionValue) {
        self.with_server(server_name, |s| s.tls13 = Some(value));
    }

    fn take_tls13_ticket(&self, server_name: &ServerName<'static>) -> Option<Tls13ClientSessionValue> {
        self.read(server_name, |s| s.tls13.take())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use crate::identity::{TrustSource, client_config, load_roots};
    use crate::local::pki;

    /// One connection over an in-memory pipe to a rustls server with the test's PKI; returns
    /// whether the handshake resumed a session.
    async fn connect(client: Arc<rustls::ClientConfig>, server: Arc<rustls::ServerConfig>) -> bool {
        let (c, s) = tokio::io::duplex(64 * 1024);
        let accept = tokio::spawn(async move {
            let mut tls = tokio_rustls::TlsAcceptor::from(server).accept(s).await.unwrap();
            // The tickets go out after the handshake; the client reads them with this.
            tls.write_all(b"hello").await.unwrap();
            tls.flush().await.unwrap();
            let mut buf = [0u8; 1];
            let _ = tls.read(&mut buf).await;
        });
        let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
        let mut tls = tokio_rustls::TlsConnector::from(client)
            .connect(name, c)
            .await
            .unwrap();
        let mut buf = [0u8; 5];
        tls.read_exact(&mut buf).await.unwrap();
        let resumed = tls.get_ref().1.handshake_kind() == Some(rustls::HandshakeKind::Resumed);
        tls.shutdown().await.unwrap();
        drop(tls);
        accept.await.unwrap();
        resumed
    }

    /// A device's config with this store resumes its session on every reconnect, with TLS 1.3
    /// and with TLS 1.2, against a server that sends two tickets per handshake.
    #[tokio::test]
    async fn reconnects_resume_with_one_ticket_kept() {
        let dir = tempfile::tempdir().unwrap();
        let files = pki::test_device(dir.path(), "freezer1");
        let roots = load_roots(&TrustSource::File(dir.path().join(pki::CA_CERT))).unwrap();
        let chain: Vec<CertificateDer<'static>> =
            CertificateDer::pem_file_iter(dir.path().join(pki::SERVER_CERT))
                .unwrap()
                .map(|c| c.unwrap())
                .collect();
        let server_key = PrivateKeyDer::from_pem_file(dir.path().join(pki::SERVER_KEY)).unwrap();
        for version in [&rustls::version::TLS13, &rustls::version::TLS12] {
            let mut server = rustls::ServerConfig::builder_with_provider(crate::identity::provider())
                .with_protocol_versions(&[version])
                .unwrap()
                .with_no_client_auth()
                .with_single_cert(chain.clone(), server_key.clone_key())
                .unwrap();
            server.send_tls13_tickets = 2;
            let server = Arc::new(server);
            let client = client_config(&files, roots.clone(), &[]).unwrap();
            assert!(
                !connect(client.clone(), server.clone()).await,
                "{version:?}: the first handshake is a full one"
            );
            for i in 0..3 {
                assert!(
                    connect(client.clone(), server.clone()).await,
                    "{version:?}: reconnect {i} did not resume"
                );
            }
        }
    }
}
