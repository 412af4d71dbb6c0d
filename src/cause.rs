//! Turns a connection error into one typed cause a person can act on.
//!
//! rumqttc wraps the interesting part several layers deep (a rustls alert can arrive as
//! `MqttState(Deserialization(Io(io::Error(rustls::Error))))`), so we walk the chain, open
//! `io::Error`s by hand (their `source()` skips the wrapped error) and classify what we find.
//! A [`Kind`] decides: its stable report key, whether retrying can help, and which flag or file
//! to blame when it stops a run before it starts.

use std::error::Error as StdError;
use std::io;

pub use rumqttc::ConnectStep as Step;
use rumqttc::{ConnectReturnCode, ConnectionError};
use rustls::{AlertDescription, CertificateError};

/// What went wrong, as far as anyone can act on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    Refused,
    Timeout,
    /// Reset while the TCP connection was being opened.
    ResetOnConnect,
    /// Closed or reset during the TLS handshake, before it completed.
    ClosedInHandshake,
    /// Closed after the TLS handshake, before CONNECT was written.
    ClosedBeforeConnect,
    /// Closed after CONNECT was written, with no CONNACK.
    ClosedAfterConnect,
    /// Closed in a session (after CONNACK), or where the step is not known.
    ClosedByServer,
    UnknownHost,
    Unreachable,
    TooManyOpenFiles,
    ServiceUnavailable,
    NotAuthorized,
    BadCredentials,
    ClientIdRejected,
    ProtocolVersion,
    ConnectRefused,
    ServerNotTrusted,
    NameMismatch,
    ServerCertExpired,
    ServerCertInvalid,
    TlsVersion,
    HandshakeFailure,
    AlpnRefused,
    ClientCertRejected,
    TlsOther,
    ClientIdInUse,
    QuotaExceeded,
    RequestRefused,
    ConnectNotAllowed,
    PublishNotAllowed,
    NotConnectedYet,
    Other,
}

/// Whom a cause blames when it stops the run at the pre-flight check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Blame {
    /// The trust anchors (`--ca`).
    Ca,
    /// The host, port or server (`--endpoint`).
    Endpoint,
    /// The ALPN protocol offered (`--alpn`).
    Alpn,
    /// The device's own certificate.
    Device,
}

impl Kind {
    /// The stable key that groups equal causes in summaries and reports.
    pub fn key(self) -> &'static str {
        match self {
            Kind::Refused => "connection refused",
            Kind::Timeout => "timeout",
            Kind::ResetOnConnect => "connection reset while connecting",
            Kind::ClosedInHandshake => "connection closed during the TLS handshake",
            Kind::ClosedBeforeConnect => "connection closed before CONNECT",
            Kind::ClosedAfterConnect => "connection closed after CONNECT, no CONNACK",
            Kind::ClosedByServer => "connection closed by the server",
            Kind::UnknownHost => "unknown host",
            Kind::Unreachable => "unreachable",
            Kind::TooManyOpenFiles => "too many open files",
            Kind::ServiceUnavailable => "service unavailable",
            Kind::NotAuthorized => "not authorized",
            Kind::BadCredentials => "bad credentials",
            Kind::ClientIdRejected => "client id rejected",
            Kind::ProtocolVersion => "protocol version",
            Kind::ConnectRefused => "connect refused",
            Kind::ServerNotTrusted => "server certificate not trusted",
            Kind::NameMismatch => "server name mismatch",
            Kind::ServerCertExpired => "server certificate expired",
            Kind::ServerCertInvalid => "server certificate invalid",
            Kind::TlsVersion => "TLS version",
            Kind::HandshakeFailure => "TLS handshake failure",
            Kind::AlpnRefused => "ALPN protocol refused",
            Kind::ClientCertRejected => "client certificate rejected",
            Kind::TlsOther => "TLS error",
            Kind::ClientIdInUse => "client id in use",
            Kind::QuotaExceeded => "quota exceeded",
            Kind::RequestRefused => "refused by the server",
            Kind::ConnectNotAllowed => "connect not allowed by policy",
            Kind::PublishNotAllowed => "publish not allowed by policy",
            Kind::NotConnectedYet => "not connected yet",
            Kind::Other => "connection error",
        }
    }

    /// Retrying cannot help: an untrusted server, a rejected certificate, an unknown host… The
    /// rest (refused, timed out, closed) may pass, so devices retry them with backoff.
    pub fn permanent(self) -> bool {
        matches!(
            self,
            Kind::UnknownHost
                | Kind::NotAuthorized
                | Kind::BadCredentials
                | Kind::ClientIdRejected
                | Kind::ProtocolVersion
                | Kind::ConnectRefused
                | Kind::ServerNotTrusted
                | Kind::NameMismatch
                | Kind::ServerCertExpired
                | Kind::ServerCertInvalid
                | Kind::TlsVersion
                | Kind::HandshakeFailure
                | Kind::AlpnRefused
                | Kind::ClientCertRejected
                | Kind::TlsOther
                | Kind::RequestRefused
                | Kind::ConnectNotAllowed
                | Kind::PublishNotAllowed
        )
    }

    /// The attempt failed before the server could judge the client (no TCP, no completed TLS
    /// handshake, no CONNECT written) or the server said it is busy: the network or the
    /// endpoint, never the device's policy.
    pub fn network(self) -> bool {
        NETWORK.contains(&self)
    }

    pub fn blames(self) -> Blame {
        match self {
            Kind::ServerNotTrusted | Kind::ServerCertExpired | Kind::ServerCertInvalid => Blame::Ca,
            Kind::ClientCertRejected => Blame::Device,
            Kind::AlpnRefused => Blame::Alpn,
            _ => Blame::Endpoint,
        }
    }
}

/// The kinds that are the network's or the endpoint's ([`Kind::network`]).
const NETWORK: [Kind; 8] = [
    Kind::Refused,
    Kind::Timeout,
    Kind::ResetOnConnect,
    Kind::ClosedInHandshake,
    Kind::ClosedBeforeConnect,
    Kind::UnknownHost,
    Kind::Unreachable,
    Kind::ServiceUnavailable,
];

/// Whether a report key (`Kind::key`) names the network or the endpoint.
pub fn network_key(key: &str) -> bool {
    NETWORK.iter().any(|k| k.key() == key)
}

/// A cause: its kind and the sentence for people.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cause {
    pub kind: Kind,
    /// What happened and what to do, e.g. `connection refused by 127.0.0.1:8883: is the broker running on that port?`
    pub detail: String,
}

impl Cause {
    pub fn new(kind: Kind, detail: String) -> Cause {
        Cause { kind, detail }
    }
    pub fn key(&self) -> &'static str {
        self.kind.key()
    }
    pub fn permanent(&self) -> bool {
        self.kind.permanent()
    }

    /// The same cause, placed at the step of the connection attempt where it happened: a
    /// closed connection becomes the step's own kind (closed in the handshake, before CONNECT,
    /// after CONNECT), and a timeout says what it waited for.
    pub fn at(self, step: Step, addr: &str) -> Cause {
        let (kind, detail) = match (self.kind, step) {
            (Kind::ClosedByServer, Step::Tcp) => (
                Kind::ResetOnConnect,
                format!(
                    "{addr} reset the connection while it was being opened (TCP): the network or the endpoint"
                ),
            ),
            (Kind::ClosedByServer, Step::Handshake) => (
                Kind::ClosedInHandshake,
                format!(
                    "{addr} closed the connection during the TLS handshake, before it completed: the network or \
                     the endpoint (a load balancer with no healthy target, a proxy, a server restarting), not \
                     the device's certificate or policy"
                ),
            ),
            (Kind::ClosedByServer, Step::Connect) => (
                Kind::ClosedBeforeConnect,
                format!(
                    "{addr} closed the connection after the TLS handshake, before CONNECT was written: the \
                     network or the endpoint"
                ),
            ),
            (Kind::ClosedByServer, Step::ConnAck) => (
                Kind::ClosedAfterConnect,
                format!(
                    "{addr} closed the connection after CONNECT, without CONNACK: a policy that denies this \
                     client id, another connection with the same client id, or a server going down"
                ),
            ),
            (Kind::Timeout, step) if step != Step::Up => {
                let waited = match step {
                    Step::Tcp => "the TCP connection",
                    Step::Handshake => "the TLS handshake",
                    Step::Connect => "CONNECT to be written",
                    _ => "CONNACK",
                };
                (
                    Kind::Timeout,
                    format!(
                        "no answer from {addr} in time (waiting for {waited}): check the endpoint, port and any firewall"
                    ),
                )
            }
            _ => return self,
        };
        Cause::new(kind, detail)
    }
}

/// Classifies a connection error. `addr` is `host:port`, used in the sentence.
pub fn classify(err: &ConnectionError, addr: &str) -> Cause {
    if let ConnectionError::ConnectionRefused(code) = err {
        return refused_connect(*code, addr);
    }
    if let ConnectionError::NetworkTimeout = err {
        return Cause::new(
            Kind::Timeout,
            format!(
                "no answer from {addr} in time (TCP, TLS or CONNACK): check the endpoint, port and any firewall"
            ),
        );
    }
    if let ConnectionError::MqttState(rumqttc::StateError::ConnectionAborted) = err {
        return closed(addr, "connection closed");
    }
    if let ConnectionError::MqttState(rumqttc::StateError::AwaitPingResp) = err {
        return ping_unanswered(addr);
    }
    from_chain(err, addr)
}

/// Classifies any connection error by what it wraps (an I/O error, a TLS verdict); for clients
/// other than rumqttc's 3.1.1 one too.
pub fn from_chain(err: &(dyn StdError + 'static), addr: &str) -> Cause {
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
    Cause::new(Kind::Other, format!("{addr}: {err}"))
}

/// The server did not answer a keep-alive PINGREQ before the next one was due.
pub fn ping_unanswered(addr: &str) -> Cause {
    Cause::new(
        Kind::Timeout,
        format!("no answer from {addr} to the keep-alive ping: the network or the server stalled"),
    )
}

pub fn closed(addr: &str, how: &str) -> Cause {
    Cause::new(
        Kind::ClosedByServer,
        format!(
            "{addr} closed the connection ({how}): a broker restart, a policy that denies this client, or \
             another connection with the same client id"
        ),
    )
}

fn refused_connect(code: ConnectReturnCode, addr: &str) -> Cause {
    let (kind, why) = match code {
        ConnectReturnCode::NotAuthorized => (
            Kind::NotAuthorized,
            "the broker accepted TLS but refused this client (not authorized): check the certificate is \
             active and its policy allows iot:Connect for this client id",
        ),
        ConnectReturnCode::BadUserNamePassword => {
            (Kind::BadCredentials, "the broker refused the credentials")
        }
        ConnectReturnCode::BadClientId => (Kind::ClientIdRejected, "the broker rejected the client id"),
        ConnectReturnCode::ServiceUnavailable => {
            (Kind::ServiceUnavailable, "the broker is unavailable for now")
        }
        ConnectReturnCode::RefusedProtocolVersion => {
            (Kind::ProtocolVersion, "the broker does not speak MQTT 3.1.1")
        }
        ConnectReturnCode::Success => (Kind::ConnectRefused, "CONNACK was not a success"),
    };
    Cause::new(kind, format!("{addr}: {why}"))
}

/// EMFILE and ENFILE: this process, or this machine, has no file descriptor left.
const EMFILE: i32 = 24;
const ENFILE: i32 = 23;

fn from_io(e: &io::Error, addr: &str) -> Option<Cause> {
    let text = e.to_string();
    if matches!(e.raw_os_error(), Some(EMFILE | ENFILE)) {
        return Some(Cause::new(
            Kind::TooManyOpenFiles,
            "too many open files on this machine: raise the open-files limit (ulimit -n, or LimitNOFILE= for \
             a service) or run fewer devices"
                .to_string(),
        ));
    }
    let cause = match e.kind() {
        io::ErrorKind::ConnectionRefused => Cause::new(
            Kind::Refused,
            format!("connection refused by {addr}: is the broker running and listening on that port?"),
        ),
        io::ErrorKind::TimedOut => Cause::new(Kind::Timeout, format!("{addr}: timed out")),
        io::ErrorKind::ConnectionReset | io::ErrorKind::BrokenPipe => closed(addr, &text),
        // rustls' own sentence for this carries a link to its manual; say it plainly.
        io::ErrorKind::UnexpectedEof => closed(addr, "closed without a TLS close_notify"),
        _ if text.contains("failed to lookup address") || text.contains("Name or service not known") => {
            Cause::new(
                Kind::UnknownHost,
                format!("cannot resolve the host of {addr} (DNS lookup failed): check --endpoint"),
            )
        }
        io::ErrorKind::NetworkUnreachable | io::ErrorKind::HostUnreachable => {
            Cause::new(Kind::Unreachable, format!("{addr} is unreachable: {text}"))
        }
        _ => return None,
    };
    Some(cause)
}

/// Every TLS failure is permanent: the same certificates will fail the same way again.
pub fn from_rustls(e: &rustls::Error, addr: &str) -> Cause {
    use rustls::Error as E;
    let (kind, detail) = match e {
        // A different CA with the same subject name shows up as a bad signature.
        E::InvalidCertificate(CertificateError::UnknownIssuer | CertificateError::BadSignature) => (
            Kind::ServerNotTrusted,
            format!(
                "the server certificate of {addr} is not signed by the CA given with --ca: pass the CA that \
                 signed the endpoint (for AWS IoT Core: AmazonRootCA1.pem)"
            ),
        ),
        E::InvalidCertificate(
            CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
        ) => (
            Kind::NameMismatch,
            format!(
                "the server certificate of {addr} is not valid for that host name: use the host name the \
                 certificate was issued for"
            ),
        ),
        E::InvalidCertificate(CertificateError::Expired | CertificateError::ExpiredContext { .. }) => (
            Kind::ServerCertExpired,
            format!("the server certificate of {addr} has expired"),
        ),
        E::InvalidCertificate(other) => (
            Kind::ServerCertInvalid,
            format!("the server certificate of {addr} was refused: {other:?}"),
        ),
        E::AlertReceived(AlertDescription::ProtocolVersion) | E::PeerIncompatible(_) => (
            Kind::TlsVersion,
            format!(
                "{addr} offers only TLS older than 1.2 (TLS 1.0/1.1); freezer-fleet requires TLS 1.2 or newer \
                 and will not downgrade"
            ),
        ),
        E::AlertReceived(AlertDescription::NoApplicationProtocol) => (
            Kind::AlpnRefused,
            format!(
                "{addr} accepts none of the ALPN protocols offered (no_application_protocol): AWS IoT \
                 Core takes MQTT with a client certificate on 443 with x-amzn-mqtt-ca; check --alpn"
            ),
        ),
        E::AlertReceived(AlertDescription::HandshakeFailure) => (
            Kind::HandshakeFailure,
            format!(
                "{addr} ended the TLS handshake (handshake failure): it may not accept TLS 1.2+, these cipher \
                 suites, or the client certificate"
            ),
        ),
        E::AlertReceived(alert) => (
            Kind::ClientCertRejected,
            format!(
                "{addr} rejected the client certificate (TLS alert {}): make sure the certificate is \
                 registered and active, or signed by a CA the broker trusts",
                alert_name(*alert)
            ),
        ),
        other => (Kind::TlsOther, format!("TLS with {addr} failed: {other}")),
    };
    Cause::new(kind, detail)
}

/// A TLS alert by its name in the TLS standard (`certificate_required`, `unknown_ca`, …).
pub fn alert_name(alert: AlertDescription) -> String {
    let camel = format!("{alert:?}");
    let mut out = String::with_capacity(camel.len() + 4);
    for (i, c) in camel.char_indices() {
        if c.is_ascii_uppercase() {
            if i > 0 && !camel[..i].ends_with(|p: char| p.is_ascii_uppercase()) {
                out.push('_');
            }
            out.push(c.to_ascii_lowercase());
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn io_err(kind: io::ErrorKind) -> ConnectionError {
        ConnectionError::Io(io::Error::from(kind))
    }

    #[test]
    fn network_errors_are_transient_and_keep_their_report_keys() {
        let c = classify(&io_err(io::ErrorKind::ConnectionRefused), "h:1");
        assert_eq!(
            (c.kind, c.key(), c.permanent()),
            (Kind::Refused, "connection refused", false)
        );
        let c = classify(&io_err(io::ErrorKind::ConnectionReset), "h:1");
        assert_eq!(c.kind, Kind::ClosedByServer);
        assert!(!c.permanent());
        let c = classify(&ConnectionError::Io(io::Error::from_raw_os_error(EMFILE)), "h:1");
        assert_eq!(c.kind, Kind::TooManyOpenFiles);
        assert_eq!(
            classify(&ConnectionError::NetworkTimeout, "h:1").kind,
            Kind::Timeout
        );
    }

    #[test]
    fn tls_verdicts_are_permanent_and_blame_the_right_flag() {
        let untrusted = rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer);
        let c = classify(&ConnectionError::Io(io::Error::other(untrusted)), "h:1");
        assert_eq!((c.kind, c.kind.blames()), (Kind::ServerNotTrusted, Blame::Ca));
        assert!(c.permanent() && c.detail.contains("--ca"));
        let alert = from_rustls(
            &rustls::Error::AlertReceived(AlertDescription::CertificateRequired),
            "h:1",
        );
        assert_eq!(
            (alert.kind, alert.kind.blames()),
            (Kind::ClientCertRejected, Blame::Device)
        );
        let old = from_rustls(
            &rustls::Error::AlertReceived(AlertDescription::ProtocolVersion),
            "h:1",
        );
        assert_eq!((old.kind, old.kind.blames()), (Kind::TlsVersion, Blame::Endpoint));
    }

    #[test]
    fn a_close_is_named_by_the_step_it_ended_at_and_only_a_close_after_connect_can_be_a_refusal() {
        let closed = || closed("h:1", "eof");
        let cases = [
            (Step::Tcp, Kind::ResetOnConnect, true),
            (Step::Handshake, Kind::ClosedInHandshake, true),
            (Step::Connect, Kind::ClosedBeforeConnect, true),
            (Step::ConnAck, Kind::ClosedAfterConnect, false),
            (Step::Up, Kind::ClosedByServer, false),
        ];
        for (step, kind, network) in cases {
            let c = closed().at(step, "h:1");
            assert_eq!((c.kind, c.kind.network()), (kind, network), "{step:?}");
            assert!(!c.permanent(), "{step:?}: a close is retried");
        }
        let t = Cause::new(Kind::Timeout, "t".into()).at(Step::ConnAck, "h:1");
        assert!(t.detail.contains("waiting for CONNACK"), "{}", t.detail);
        // Not a close: the step changes nothing.
        let refused = classify(&io_err(io::ErrorKind::ConnectionRefused), "h:1");
        assert_eq!(refused.clone().at(Step::Tcp, "h:1"), refused);
        let alert = from_rustls(&rustls::Error::AlertReceived(AlertDescription::UnknownCA), "h:1");
        assert_eq!(alert.clone().at(Step::ConnAck, "h:1"), alert);
        assert!(alert.detail.contains("TLS alert unknown_ca"), "{}", alert.detail);
        assert_eq!(
            alert_name(AlertDescription::CertificateRequired),
            "certificate_required"
        );
        assert_eq!(alert_name(AlertDescription::BadCertificate), "bad_certificate");
    }

    #[test]
    fn connack_refusals_are_named() {
        let c = classify(
            &ConnectionError::ConnectionRefused(ConnectReturnCode::NotAuthorized),
            "h:1",
        );
        assert_eq!(c.kind, Kind::NotAuthorized);
        assert!(c.permanent() && c.detail.contains("iot:Connect"));
        let c = classify(
            &ConnectionError::ConnectionRefused(ConnectReturnCode::ServiceUnavailable),
            "h:1",
        );
        assert!(!c.permanent());
    }
}
