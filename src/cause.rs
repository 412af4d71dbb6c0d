//! Turns a connection error from the MQTT client into one short cause a person can act on.
//!
//! rumqttc wraps the interesting part several layers deep (a rustls alert can arrive as
//! `MqttState(Deserialization(Io(io::Error(rustls::Error))))`), so we walk the chain, open
//! `io::Error`s by hand (their `source()` skips the wrapped error) and classify what we find.

use std::error::Error as StdError;
use std::io;

use rumqttc::{ConnectReturnCode, ConnectionError};
use rustls::{AlertDescription, CertificateError};

/// A cause: a stable short key (for counting and reports) and the sentence for people.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cause {
    /// Groups equal causes in summaries and reports, e.g. `connection refused`.
    pub key: String,
    /// What happened and what to do, e.g. `connection refused by 127.0.0.1:8883: is the broker running on that port?`
    pub detail: String,
}

impl Cause {
    fn new(key: &str, detail: String) -> Self {
        Cause {
            key: key.to_string(),
            detail,
        }
    }
}

/// Classifies a connection error. `addr` is `host:port`, used in the sentence.
pub fn classify(err: &ConnectionError, addr: &str) -> Cause {
    if let ConnectionError::ConnectionRefused(code) = err {
        return refused_connect(*code, addr);
    }
    if let ConnectionError::NetworkTimeout = err {
        return Cause::new(
            "timeout",
            format!(
                "no answer from {addr} in time (TCP, TLS or CONNACK): check the endpoint, port and any firewall"
            ),
        );
    }
    let mut next: Option<&(dyn StdError + 'static)> = Some(err);
    while let Some(e) = next {
        if let Some(tls) = e.downcast_ref::<rustls::Error>() {
            return from_rustls(tls, addr);
        }
        if let Some(ioe) = e.downcast_ref::<io::Error>() {
            if let Some(inner) = ioe.get_ref()
                && let Some(tls) = inner.downcast_ref::<rustls::Error>()
            {
                return from_rustls(tls, addr);
            }
            if let Some(cause) = from_io(ioe, addr) {
                return cause;
            }
        }
        next = e.source();
    }
    match err {
        ConnectionError::MqttState(rumqttc::StateError::ConnectionAborted) => Cause::new(
            "connection closed by the server",
            format!(
                "{addr} closed the connection (another client with the same client id, a policy that denies this client, or a broker shutdown)"
            ),
        ),
        other => Cause::new("connection error", format!("{addr}: {other}")),
    }
}

fn refused_connect(code: ConnectReturnCode, addr: &str) -> Cause {
    let (key, why) = match code {
        ConnectReturnCode::NotAuthorized => (
            "not authorized",
            "the broker accepted TLS but refused this client (not authorized): check the certificate is active and its policy allows iot:Connect for this client id",
        ),
        ConnectReturnCode::BadUserNamePassword => ("bad credentials", "the broker refused the credentials"),
        ConnectReturnCode::BadClientId => ("client id rejected", "the broker rejected the client id"),
        ConnectReturnCode::ServiceUnavailable => {
            ("service unavailable", "the broker is unavailable; retry later")
        }
        ConnectReturnCode::RefusedProtocolVersion => {
            ("protocol version", "the broker does not speak MQTT 3.1.1")
        }
        ConnectReturnCode::Success => ("connect refused", "CONNACK was not a success"),
    };
    Cause::new(key, format!("{addr}: {why}"))
}

fn from_io(e: &io::Error, addr: &str) -> Option<Cause> {
    let text = e.to_string();
    let cause = match e.kind() {
        io::ErrorKind::ConnectionRefused => Cause::new(
            "connection refused",
            format!("connection refused by {addr}: is the broker running and listening on that port?"),
        ),
        io::ErrorKind::TimedOut => Cause::new("timeout", format!("{addr}: timed out")),
        io::ErrorKind::ConnectionReset | io::ErrorKind::BrokenPipe | io::ErrorKind::UnexpectedEof => {
            Cause::new(
                "connection closed by the server",
                format!(
                    "{addr} closed the connection during the handshake ({text}): the server may have rejected the client certificate"
                ),
            )
        }
        _ if text.contains("failed to lookup address") || text.contains("Name or service not known") => {
            Cause::new(
                "unknown host",
                format!("cannot resolve the host of {addr} (DNS lookup failed): check --endpoint"),
            )
        }
        io::ErrorKind::NetworkUnreachable | io::ErrorKind::HostUnreachable => {
            Cause::new("unreachable", format!("{addr} is unreachable: {text}"))
        }
        _ => return None,
    };
    Some(cause)
}

fn from_rustls(e: &rustls::Error, addr: &str) -> Cause {
    use rustls::Error as E;
    match e {
        // A different CA with the same subject name shows up as a bad signature.
        E::InvalidCertificate(CertificateError::UnknownIssuer | CertificateError::BadSignature) => {
            Cause::new(
                "server certificate not trusted",
                format!(
                    "the server certificate of {addr} is not signed by the CA given with --ca: pass the CA that signed the endpoint (for AWS IoT Core: AmazonRootCA1.pem)"
                ),
            )
        }
        E::InvalidCertificate(
            CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
        ) => Cause::new(
            "server name mismatch",
            format!(
                "the server certificate of {addr} is not valid for that host name: use the host name the certificate was issued for"
            ),
        ),
        E::InvalidCertificate(CertificateError::Expired | CertificateError::ExpiredContext { .. }) => {
            Cause::new(
                "server certificate expired",
                format!("the server certificate of {addr} has expired"),
            )
        }
        E::InvalidCertificate(other) => Cause::new(
            "server certificate invalid",
            format!("the server certificate of {addr} was refused: {other:?}"),
        ),
        E::AlertReceived(alert) => match alert {
            AlertDescription::ProtocolVersion => tls_version(addr),
            AlertDescription::HandshakeFailure => Cause::new(
                "TLS handshake failure",
                format!(
                    "{addr} ended the TLS handshake (handshake failure): it may not accept TLS 1.2+, these cipher suites, or the client certificate"
                ),
            ),
            _ => Cause::new(
                "client certificate rejected",
                format!(
                    "{addr} rejected the client certificate (TLS alert {alert:?}): make sure the certificate is registered and active, or signed by a CA the broker trusts"
                ),
            ),
        },
        E::PeerIncompatible(_) => tls_version(addr),
        other => Cause::new("TLS error", format!("TLS with {addr} failed: {other}")),
    }
}

fn tls_version(addr: &str) -> Cause {
    Cause::new(
        "TLS version",
        format!("{addr} does not offer TLS 1.2 or newer; freezer-fleet refuses older TLS versions"),
    )
}
