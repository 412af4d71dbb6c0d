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
    /// Retrying cannot help (an untrusted server, a rejected certificate, an unknown host…);
    /// the rest (refused, timed out, closed) may pass, so devices retry them with backoff.
    pub permanent: bool,
}

/// The key of a connection the server closed: right after connecting, the sign of another
/// client taking over the same client id.
pub const CLOSED_BY_SERVER: &str = "connection closed by the server";

impl Cause {
    pub fn transient(key: &str, detail: String) -> Self {
        Cause {
            key: key.to_string(),
            detail,
            permanent: false,
        }
    }
    pub fn permanent(key: &str, detail: String) -> Self {
        Cause {
            key: key.to_string(),
            detail,
            permanent: true,
        }
    }
}

/// Classifies a connection error. `addr` is `host:port`, used in the sentence.
pub fn classify(err: &ConnectionError, addr: &str) -> Cause {
    if let ConnectionError::ConnectionRefused(code) = err {
        return refused_connect(*code, addr);
    }
    if let ConnectionError::NetworkTimeout = err {
        return Cause::transient(
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
        ConnectionError::MqttState(rumqttc::StateError::ConnectionAborted) => {
            closed(addr, "connection closed")
        }
        other => Cause::transient("connection error", format!("{addr}: {other}")),
    }
}

fn closed(addr: &str, how: &str) -> Cause {
    Cause::transient(
        CLOSED_BY_SERVER,
        format!(
            "{addr} closed the connection ({how}): a broker restart, a policy that denies this client, or another connection with the same client id"
        ),
    )
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
            return Cause::transient(
                "service unavailable",
                format!("{addr}: the broker is unavailable for now"),
            );
        }
        ConnectReturnCode::RefusedProtocolVersion => {
            ("protocol version", "the broker does not speak MQTT 3.1.1")
        }
        ConnectReturnCode::Success => ("connect refused", "CONNACK was not a success"),
    };
    Cause::permanent(key, format!("{addr}: {why}"))
}

fn from_io(e: &io::Error, addr: &str) -> Option<Cause> {
    let text = e.to_string();
    // EMFILE / ENFILE: this machine, not the endpoint.
    if matches!(e.raw_os_error(), Some(24) | Some(23)) {
        return Some(Cause::transient(
            "too many open files",
            "too many open files on this machine: raise the open-files limit (ulimit -n, or LimitNOFILE= for a service) or run fewer devices".to_string(),
        ));
    }
    let cause = match e.kind() {
        io::ErrorKind::ConnectionRefused => Cause::transient(
            "connection refused",
            format!("connection refused by {addr}: is the broker running and listening on that port?"),
        ),
        io::ErrorKind::TimedOut => Cause::transient("timeout", format!("{addr}: timed out")),
        io::ErrorKind::ConnectionReset | io::ErrorKind::BrokenPipe | io::ErrorKind::UnexpectedEof => {
            closed(addr, &text)
        }
        _ if text.contains("failed to lookup address") || text.contains("Name or service not known") => {
            Cause::permanent(
                "unknown host",
                format!("cannot resolve the host of {addr} (DNS lookup failed): check --endpoint"),
            )
        }
        io::ErrorKind::NetworkUnreachable | io::ErrorKind::HostUnreachable => {
            Cause::transient("unreachable", format!("{addr} is unreachable: {text}"))
        }
        _ => return None,
    };
    Some(cause)
}

/// Every TLS failure is permanent: the same certificates will fail the same way again.
pub fn from_rustls(e: &rustls::Error, addr: &str) -> Cause {
    use rustls::Error as E;
    let (key, detail) = match e {
        // A different CA with the same subject name shows up as a bad signature.
        E::InvalidCertificate(CertificateError::UnknownIssuer | CertificateError::BadSignature) => (
            "server certificate not trusted",
            format!(
                "the server certificate of {addr} is not signed by the CA given with --ca: pass the CA that signed the endpoint (for AWS IoT Core: AmazonRootCA1.pem)"
            ),
        ),
        E::InvalidCertificate(
            CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
        ) => (
            "server name mismatch",
            format!(
                "the server certificate of {addr} is not valid for that host name: use the host name the certificate was issued for"
            ),
        ),
        E::InvalidCertificate(CertificateError::Expired | CertificateError::ExpiredContext { .. }) => (
            "server certificate expired",
            format!("the server certificate of {addr} has expired"),
        ),
        E::InvalidCertificate(other) => (
            "server certificate invalid",
            format!("the server certificate of {addr} was refused: {other:?}"),
        ),
        E::AlertReceived(AlertDescription::ProtocolVersion) | E::PeerIncompatible(_) => {
            return tls_version(addr);
        }
        E::AlertReceived(AlertDescription::HandshakeFailure) => (
            "TLS handshake failure",
            format!(
                "{addr} ended the TLS handshake (handshake failure): it may not accept TLS 1.2+, these cipher suites, or the client certificate"
            ),
        ),
        E::AlertReceived(alert) => (
            "client certificate rejected",
            format!(
                "{addr} rejected the client certificate (TLS alert {alert:?}): make sure the certificate is registered and active, or signed by a CA the broker trusts"
            ),
        ),
        other => ("TLS error", format!("TLS with {addr} failed: {other}")),
    };
    Cause::permanent(key, detail)
}

fn tls_version(addr: &str) -> Cause {
    Cause::permanent(
        "TLS version",
        format!(
            "{addr} offers only TLS older than 1.2 (TLS 1.0/1.1); freezer-fleet requires TLS 1.2 or newer and will not downgrade"
        ),
    )
}
