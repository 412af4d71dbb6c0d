//! The pre-flight checks of the other sinks, before any device starts: the Kinesis stream or
//! Firehose delivery stream exists and the credentials may use it; the HTTPS proxy speaks TLS
//! 1.2 or newer with a certificate we trust. A failure stops the run with one line naming the
//! flag (exit 2), instead of every device failing the same way.

use std::time::Duration;

use anyhow::Result;
use rustls::pki_types::ServerName;
use serde_json::json;
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
    let connector = tokio_rustls::TlsConnector::from(tls);
    let result = match timeout(STEP_TIMEOUT, connector.connect(name, tcp)).await {
        Err(_) => {
            return Err(input!(
                "--url {url}: the TLS handshake did not finish within {} s",
                STEP_TIMEOUT.as_secs()
            ));
        }
        Ok(r) => r,
    };
    let Err(e) = result else { return Ok(()) };
    let Some(tls) = e
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
    else {
        return Err(input!("--url {url}: the TLS handshake with {addr} failed: {e}"));
    };
    let c = cause::from_rustls(tls, &addr);
    let flag = match c.kind {
        Kind::TlsVersion => {
            let offered = match offered_version(&host, port).await {
                Some(v) => format!("offered {v} only"),
                None => "offers only TLS older than 1.2".to_string(),
            };
            return Err(input!(
                "--url {url}: the proxy {offered}; freezer-fleet sends only over TLS 1.2 or 1.3 and never \
                 downgrades: set the proxy's (API Gateway custom domain's) security policy to TLS 1.2"
            ));
        }
        Kind::ServerNotTrusted | Kind::ServerCertExpired | Kind::ServerCertInvalid => "--ca",
        Kind::ClientCertRejected => "--cert",
        _ => "--url",
    };
    Err(input!("{flag}: {}", c.detail))
}

/// Which old version a server that refused TLS 1.2 and 1.3 speaks: a TLS 1.1 ClientHello, built
/// and its answer parsed with tls-parser (never to talk, only to name the version in the
/// message); the server answers with the highest version it has up to 1.1.
async fn offered_version(host: &str, port: u16) -> Option<&'static str> {
    use tls_parser::{
        NamedGroup, Serialize, TlsCipherSuiteID, TlsClientHelloContents, TlsCompressionID, TlsExtension,
        TlsMessage, TlsMessageHandshake, TlsPlaintext, TlsRecordHeader, TlsRecordType, TlsVersion,
    };
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    // ECDHE and RSA key exchange with AES-CBC and SHA-1: what a TLS 1.0/1.1 server has.
    let ciphers = [0xc009, 0xc00a, 0xc013, 0xc014, 0x002f, 0x0035]
        .map(TlsCipherSuiteID)
        .to_vec();
    let random: [u8; 32] = rand::random();
    // The curves ECDHE may use: without them a server with an EC certificate refuses.
    let curves = TlsExtension::EllipticCurves(vec![NamedGroup::Secp256r1, NamedGroup::Secp384r1]);
    let ext = cookie_factory::gen_simple(tls_parser::gen_tls_extension(&curves), Vec::new()).ok()?;
    let hello = TlsClientHelloContents::new(
        0x0302,
        &random,
        None,
        ciphers,
        vec![TlsCompressionID(0)],
        Some(&ext),
    );
    let record = TlsPlaintext {
        hdr: TlsRecordHeader {
            record_type: TlsRecordType::Handshake,
            version: TlsVersion(0x0301),
            len: 0,
        },
        msg: vec![TlsMessage::Handshake(TlsMessageHandshake::ClientHello(hello))],
    };
    let bytes = record.serialize().ok()?;
    let mut tcp = timeout(STEP_TIMEOUT, TcpStream::connect((host, port)))
        .await
        .ok()?
        .ok()?;
    tcp.write_all(&bytes).await.ok()?;
    let mut answer = vec![0u8; 16 * 1024];
    let n = timeout(STEP_TIMEOUT, tcp.read(&mut answer)).await.ok()?.ok()?;
    let (_, plain) = tls_parser::parse_tls_plaintext(&answer[..n]).ok()?;
    plain.msg.iter().find_map(|m| match m {
        TlsMessage::Handshake(TlsMessageHandshake::ServerHello(sh)) => version_name(sh.version.0),
        _ => None,
    })
}

fn version_name(v: u16) -> Option<&'static str> {
    match v {
        0x0300 => Some("SSL 3.0"),
        0x0301 => Some("TLS 1.0"),
        0x0302 => Some("TLS 1.1"),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn old_versions_are_named() {
        assert_eq!(super::version_name(0x0302), Some("TLS 1.1"));
        assert_eq!(super::version_name(0x0301), Some("TLS 1.0"));
        assert_eq!(super::version_name(0x0303), None);
    }
}
