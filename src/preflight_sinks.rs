//! The pre-flight checks of the other sinks, before any device starts: the Kinesis stream or
//! Firehose delivery stream exists and the credentials may use it; the HTTPS proxy speaks TLS
//! 1.2 or newer with a certificate we trust. A failure stops the run with one line naming the
//! flag (exit 2), instead of every device failing the same way.

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use anyhow::Result;
use rustls::pki_types::ServerName;
use serde_json::json;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::timeout;

use crate::aws::json::{ApiError, JsonApi};
use crate::cause::{self, Kind};
use crate::config::sinks::Proxy;
use crate::input;

const STEP_TIMEOUT: Duration = Duration::from_secs(10);

/// Error codes that mean the credentials, not the stream, are the problem.
const AUTH_CODES: &[&str] = &[
    "UnrecognizedClientException",
    "InvalidSignatureException",
    "IncompleteSignature",
    "AccessDeniedException",
    "ExpiredTokenException",
    "InvalidClientTokenId",
    "MissingAuthenticationToken",
];

/// `DescribeStreamSummary` (Kinesis) or `DescribeDeliveryStream` (Firehose) of `stream`.
pub async fn check_stream(api: &JsonApi, sink: &str, flag: &str, stream: &str) -> Result<()> {
    let (operation, body, create) = match sink {
        "kinesis" => (
            "DescribeStreamSummary",
            json!({"StreamName": stream}),
            format!("aws kinesis create-stream --stream-name {stream} --shard-count 4"),
        ),
        _ => (
            "DescribeDeliveryStream",
            json!({"DeliveryStreamName": stream}),
            "create it in the Firehose console".to_string(),
        ),
    };
    let region = api.region();
    let url = api.url();
    match api.call(operation, &body).await {
        Ok(_) => Ok(()),
        Err(ApiError::Service { code, .. }) if code == "ResourceNotFoundException" => Err(input!(
            "{flag} {stream}: no such {sink} stream in {region} ({url}); check the name and --region, or \
             create it ({create})"
        )),
        Err(ApiError::Service { code, message, .. }) if AUTH_CODES.contains(&code.as_str()) => Err(input!(
            "--sink {sink}: {url} refused the AWS credentials ({code}{}); check them, their region and \
             that they may write to {stream}",
            if message.is_empty() {
                String::new()
            } else {
                format!(": {message}")
            }
        )),
        Err(ApiError::Network(why)) => Err(input!(
            "--sink {sink}: cannot reach {url}: {why}; check --region (or AWS_ENDPOINT_URL_{}) and the \
             network",
            sink.to_ascii_uppercase()
        )),
        Err(other) => {
            tracing::warn!("pre-flight check of {sink} {stream}: {other}; starting the devices anyway");
            Ok(())
        }
    }
}

/// One TLS handshake with the proxy. A proxy that offers only TLS 1.0/1.1 is refused, naming
/// the version it offered.
pub async fn check_proxy(proxy: &Proxy) -> Result<()> {
    let url = &proxy.url;
    let host = url
        .host_str()
        .unwrap_or_default()
        .trim_matches(['[', ']'])
        .to_string();
    let port = url.port_or_known_default().unwrap_or(443);
    let addr = format!("{host}:{port}");
    let tcp = match timeout(STEP_TIMEOUT, TcpStream::connect((host.as_str(), port))).await {
        Err(_) => {
            return Err(input!(
                "--url {url}: no answer from {addr} within {} s",
                STEP_TIMEOUT.as_secs()
            ));
        }
        Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
            return Err(input!(
                "--url {url}: nothing listens on {addr} (connection refused)"
            ));
        }
        Ok(Err(e)) => return Err(input!("--url {url}: cannot connect to {addr}: {e}")),
        Ok(Ok(s)) => s,
    };
    let Some(tls) = proxy.tls.clone() else {
        return Ok(());
    };
    let name =
        ServerName::try_from(host.clone()).map_err(|_| input!("--url {url}: not a valid host name"))?;
    let seen = Arc::new(Mutex::new(Vec::new()));
    let stream = Recording {
        inner: tcp,
        seen: seen.clone(),
    };
    let connector = tokio_rustls::TlsConnector::from(tls);
    let result = match timeout(STEP_TIMEOUT, connector.connect(name, stream)).await {
        Err(_) => {
            return Err(input!(
                "--url {url}: the TLS handshake did not finish within {} s",
                STEP_TIMEOUT.as_secs()
            ));
        }
        Ok(r) => r,
    };
    let Err(e) = result else { return Ok(()) };
    let first_bytes = crate::stats::lock(&seen).clone();
    if let Some(version) = offered_version(&first_bytes).filter(|v| v.old) {
        return Err(input!(
            "--url {url}: the proxy offered {} only; freezer-fleet sends only over TLS 1.2 or 1.3 and never \
             downgrades: set the proxy's (API Gateway custom domain's) security policy to TLS 1.2",
            version.name
        ));
    }
    match e
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
    {
        Some(tls) => {
            let c = cause::from_rustls(tls, &addr);
            let flag = match c.kind {
                Kind::ServerNotTrusted | Kind::ServerCertExpired | Kind::ServerCertInvalid => "--ca",
                Kind::ClientCertRejected => "--cert",
                _ => "--url",
            };
            Err(input!("{flag}: {}", c.detail))
        }
        None => Err(input!("--url {url}: the TLS handshake with {addr} failed: {e}")),
    }
}

/// A TLS version a server answered with.
#[derive(Debug, PartialEq)]
struct Offered {
    name: &'static str,
    /// Older than TLS 1.2.
    old: bool,
}

/// The version in the server's first TLS record: a ServerHello's, else the record layer's (an
/// alert such as `protocol_version` carries the server's version there).
fn offered_version(bytes: &[u8]) -> Option<Offered> {
    if bytes.len() < 5 || !matches!(bytes[0], 0x15 | 0x16) {
        return None;
    }
    let hello = bytes[0] == 0x16 && bytes.len() >= 11 && bytes[5] == 2;
    let (major, minor) = if hello {
        (bytes[9], bytes[10])
    } else {
        (bytes[1], bytes[2])
    };
    let name = match (major, minor) {
        (3, 0) => "SSL 3.0",
        (3, 1) => "TLS 1.0",
        (3, 2) => "TLS 1.1",
        (3, 3) => "TLS 1.2",
        _ => return None,
    };
    Some(Offered { name, old: minor < 3 })
}

/// A stream that keeps the first bytes it reads (the server's first TLS record).
struct Recording<S> {
    inner: S,
    seen: Arc<Mutex<Vec<u8>>>,
}

const KEEP: usize = 64;

impl<S: AsyncRead + Unpin> AsyncRead for Recording<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = polled {
            let mut seen = crate::stats::lock(&self.seen);
            let new = &buf.filled()[before..];
            let room = KEEP.saturating_sub(seen.len());
            seen.extend_from_slice(&new[..new.len().min(room)]);
        }
        polled
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Recording<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_version_is_read_from_a_server_hello_or_an_alert() {
        // An alert (protocol_version) in a TLS 1.1 record.
        assert_eq!(
            offered_version(&[0x15, 3, 2, 0, 2, 2, 70]),
            Some(Offered {
                name: "TLS 1.1",
                old: true
            })
        );
        // A ServerHello of TLS 1.0 in a TLS 1.0 record.
        let hello = [0x16, 3, 1, 0, 0x4a, 2, 0, 0, 0x46, 3, 1];
        assert_eq!(
            offered_version(&hello),
            Some(Offered {
                name: "TLS 1.0",
                old: true
            })
        );
        assert_eq!(
            offered_version(&[0x16, 3, 3, 0, 0x4a, 2, 0, 0, 0x46, 3, 3]).map(|o| o.old),
            Some(false)
        );
        assert_eq!(offered_version(b"HTTP/1.1 400"), None);
    }
}
