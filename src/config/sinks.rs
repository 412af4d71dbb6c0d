//! Where events go (`--sink`): the MQTT endpoint (IoT Core, a broker), a Kinesis data stream, a
//! Firehose delivery stream, or an HTTPS proxy in front of Firehose — one or several, each event
//! to every one. Pure checks of the flags; the proxy's TLS identity is built in [`proxy_tls`].

use std::sync::Arc;

use anyhow::Result;

use super::Sourced;
use crate::identity::{self, IdentityFiles};
use crate::input;

/// One way in for events.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SinkKind {
    /// The MQTT endpoint (`--endpoint`), or IoT Core's HTTPS publish with `--transport https`.
    Mqtt,
    /// Kinesis Data Streams PutRecords (`--stream`).
    Kinesis,
    /// Kinesis Data Firehose PutRecordBatch (`--delivery-stream`).
    Firehose,
    /// An HTTPS proxy (API Gateway) in front of Firehose (`--url`, `--delivery-stream`).
    FirehoseProxy,
}

impl SinkKind {
    pub const ALL: [SinkKind; 4] = [
        SinkKind::Mqtt,
        SinkKind::Kinesis,
        SinkKind::Firehose,
        SinkKind::FirehoseProxy,
    ];

    /// The name on the command line and in reports.
    pub fn name(self) -> &'static str {
        match self {
            SinkKind::Mqtt => "mqtt",
            SinkKind::Kinesis => "kinesis",
            SinkKind::Firehose => "firehose",
            SinkKind::FirehoseProxy => "firehose-proxy",
        }
    }

    /// Signs with AWS credentials.
    pub fn uses_aws(self) -> bool {
        matches!(self, SinkKind::Kinesis | SinkKind::Firehose)
    }
}

/// The sinks of a run and what each needs.
#[derive(Debug, Clone)]
pub struct Sinks {
    /// In the order given; the first takes the readings.
    pub kinds: Vec<SinkKind>,
    /// `--stream`, for kinesis.
    pub stream: Option<String>,
    /// `--delivery-stream`, for firehose and firehose-proxy.
    pub delivery_stream: Option<String>,
    /// `--url` and `--header`, for firehose-proxy.
    pub proxy: Option<Proxy>,
}

/// The HTTPS proxy in front of Firehose.
#[derive(Clone)]
pub struct Proxy {
    pub url: reqwest::Url,
    /// Extra request headers (`--header`), e.g. an API key: never logged or reported.
    pub headers: Vec<(String, String)>,
    /// TLS 1.2+ with the proxy's trust anchors (`--ca`) and, when given, `--cert/--key`.
    pub tls: Option<Arc<rustls::ClientConfig>>,
}

impl std::fmt::Debug for Proxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<&str> = self.headers.iter().map(|(n, _)| n.as_str()).collect();
        write!(f, "Proxy({}, headers {names:?})", self.url)
    }
}

impl Sinks {
    pub fn has(&self, kind: SinkKind) -> bool {
        self.kinds.contains(&kind)
    }
    pub fn uses_aws(&self) -> bool {
        self.kinds.iter().any(|k| k.uses_aws())
    }
}

type In<T> = Option<Sourced<T>>;

/// `--sink a,b`: known names, each once; default mqtt.
pub fn kinds(v: In<Vec<String>>) -> Result<Vec<SinkKind>> {
    let Some(v) = v else {
        return Ok(vec![SinkKind::Mqtt]);
    };
    let known = SinkKind::ALL.map(SinkKind::name).join(", ");
    let mut kinds = Vec::new();
    for word in v.value.iter().flat_map(|w| w.split(',')).map(str::trim) {
        let kind = SinkKind::ALL
            .into_iter()
            .find(|k| k.name() == word)
            .ok_or_else(|| {
                input!(
                    "{} {word}: unknown sink; choose from {known} (several: --sink mqtt,kinesis)",
                    v.origin
                )
            })?;
        if kinds.contains(&kind) {
            return Err(input!("{} {word}: named twice; name each sink once", v.origin));
        }
        kinds.push(kind);
    }
    if kinds.is_empty() {
        return Err(input!("{}: no sink named; choose from {known}", v.origin));
    }
    Ok(kinds)
}

/// A Kinesis stream or Firehose delivery stream name: 1..=max of letters, digits, `_.-`.
pub fn stream_name(
    v: In<String>,
    needed_by: Option<SinkKind>,
    flag: &str,
    max: usize,
) -> Result<Option<String>> {
    let example = if flag == "--stream" {
        "freezer_data"
    } else {
        "freezer-delivery"
    };
    match (v, needed_by) {
        (None, Some(kind)) => Err(input!(
            "{flag} is missing: --sink {} needs the stream to write to, e.g. {flag} {example}",
            kind.name()
        )),
        (None, None) => Ok(None),
        (Some(s), _) => {
            let ok = (1..=max).contains(&s.value.len())
                && s.value
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c));
            if !ok {
                return Err(input!(
                    "{} {}: not a stream name (1 to {max} letters, digits, _ . -); e.g. {example}",
                    s.origin,
                    s.value
                ));
            }
            Ok(Some(s.value))
        }
    }
}

/// `--url`: an https:// URL (TLS 1.2+ is the point of the proxy).
pub fn proxy_url(v: In<String>, needed: bool) -> Result<Option<reqwest::Url>> {
    let Some(v) = v else {
        return if needed {
            Err(input!(
                "--url is missing: --sink firehose-proxy needs the proxy's address, e.g. --url \
                 https://ingest.example.com/v1/freezers"
            ))
        } else {
            Ok(None)
        };
    };
    let url = reqwest::Url::parse(&v.value).map_err(|e| {
        input!(
            "{} {}: not a URL ({e}); give e.g. https://ingest.example.com/v1/freezers",
            v.origin,
            v.value
        )
    })?;
    if url.scheme() != "https" {
        return Err(input!(
            "{} {}: not https://; the proxy is reached over TLS 1.2 or newer only, give its https:// URL",
            v.origin,
            v.value
        ));
    }
    if url.host().is_none() {
        return Err(input!("{} {}: the URL has no host", v.origin, v.value));
    }
    Ok(Some(url))
}

/// `--header 'Name: value'`, repeatable. Values are never shown (an API key is one).
pub fn headers(v: In<Vec<String>>) -> Result<Vec<(String, String)>> {
    let Some(v) = v else { return Ok(Vec::new()) };
    v.value
        .iter()
        .map(|h| {
            let (name, value) = h.split_once(':').ok_or_else(|| {
                input!(
                    "{}: '{}…' has no ':'; write it as 'Name: value', e.g. 'x-api-key: …'",
                    v.origin,
                    first_word(h)
                )
            })?;
            let name = name.trim();
            let value = value.trim();
            http::HeaderName::from_bytes(name.as_bytes())
                .map_err(|_| input!("{}: '{name}' is not a valid header name", v.origin))?;
            http::HeaderValue::from_str(value).map_err(|_| {
                input!(
                    "{}: the value of header '{name}' has characters a header cannot carry",
                    v.origin
                )
            })?;
            Ok((name.to_string(), value.to_string()))
        })
        .collect()
}

fn first_word(s: &str) -> String {
    s.chars().take_while(|c| !c.is_whitespace()).take(20).collect()
}

/// `--role-arn`: `arn:<partition>:iam::<account>:role/<name>`.
pub fn role_arn(v: In<String>) -> Result<Option<String>> {
    let Some(v) = v else { return Ok(None) };
    let parts: Vec<&str> = v.value.splitn(6, ':').collect();
    let ok = parts.len() == 6
        && parts[0] == "arn"
        && parts[1].starts_with("aws")
        && parts[2] == "iam"
        && parts[4].len() == 12
        && parts[4].chars().all(|c| c.is_ascii_digit())
        && parts[5].starts_with("role/")
        && parts[5].len() > 5;
    if !ok {
        return Err(input!(
            "{} {}: not an IAM role ARN; give e.g. arn:aws:iam::123456789012:role/freezer-analytics",
            v.origin,
            v.value
        ));
    }
    Ok(Some(v.value))
}

/// `--external-id` (2..=1224 characters) and `--role-session-name` (2..=64 of `\w+=,.@-`).
pub fn role_extras(
    external_id: In<String>,
    session: In<String>,
    role: bool,
) -> Result<(Option<String>, String)> {
    for given in [&external_id, &session].into_iter().flatten() {
        if !role {
            return Err(input!(
                "{} is given without --role-arn: it belongs to the role to assume",
                given.origin
            ));
        }
    }
    if let Some(id) = &external_id
        && !(2..=1224).contains(&id.value.len())
    {
        return Err(input!("{}: an external id has 2 to 1224 characters", id.origin));
    }
    let session = match session {
        None => crate::aws::credentials::DEFAULT_SESSION_NAME.to_string(),
        Some(s) => {
            let ok = (2..=64).contains(&s.value.len())
                && s.value
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "_+=,.@-".contains(c));
            if !ok {
                return Err(input!(
                    "{} {}: a session name has 2 to 64 letters, digits or _+=,.@-",
                    s.origin,
                    s.value
                ));
            }
            s.value
        }
    };
    Ok((external_id.map(|e| e.value), session))
}

/// The proxy's TLS: its trust anchors and, when `--cert/--key` are given, a client certificate
/// (API Gateway custom domains can require one). HTTP/2 and HTTP/1.1 are offered.
pub fn proxy_tls(
    roots: Arc<rustls::RootCertStore>,
    client: Option<&IdentityFiles>,
) -> Result<Arc<rustls::ClientConfig>> {
    let alpn = [b"h2".to_vec(), b"http/1.1".to_vec()];
    match client {
        Some(files) => identity::client_config(files, roots, &alpn),
        None => identity::server_only_config(roots, &alpn),
    }
}

/// The largest event a sink takes, in bytes: Kinesis 1 MiB per record with its partition key,
/// Firehose 1,000 KiB with the newline it adds.
pub fn check_payload_size(kinds: &[SinkKind], payload_bytes: Option<usize>, longest_id: usize) -> Result<()> {
    let Some(size) = payload_bytes else { return Ok(()) };
    for kind in kinds {
        let max = match kind {
            SinkKind::Kinesis => (1 << 20) - longest_id,
            SinkKind::Firehose | SinkKind::FirehoseProxy => 1000 * 1024 - 1,
            SinkKind::Mqtt => continue,
        };
        if size > max {
            return Err(input!(
                "--payload-bytes {size}: --sink {} takes records of at most {max} bytes; give a smaller size",
                kind.name()
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flag<T>(v: T) -> In<T> {
        Some(Sourced::flag(v, "--x"))
    }

    #[test]
    fn sinks_are_named_once_each_in_order() {
        assert_eq!(kinds(None).unwrap(), vec![SinkKind::Mqtt]);
        assert_eq!(
            kinds(flag(vec!["mqtt".into(), "kinesis".into()])).unwrap(),
            vec![SinkKind::Mqtt, SinkKind::Kinesis]
        );
        assert_eq!(
            kinds(flag(vec!["firehose-proxy,firehose".into()])).unwrap().len(),
            2
        );
        let e = kinds(flag(vec!["mqtt".into(), "kafka".into()]))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("kafka: unknown sink; choose from mqtt, kinesis, firehose, firehose-proxy"),
            "{e}"
        );
        assert!(kinds(flag(vec!["mqtt,mqtt".into()])).is_err());
    }

    #[test]
    fn headers_are_name_colon_value_and_values_never_appear_in_errors() {
        assert_eq!(
            headers(flag(vec!["x-api-key: s3cr3t".into()])).unwrap(),
            vec![("x-api-key".to_string(), "s3cr3t".to_string())]
        );
        let e = headers(flag(vec!["x-api-key s3cr3t".into()]))
            .unwrap_err()
            .to_string();
        assert!(!e.contains("s3cr3t"), "{e}");
        assert!(headers(flag(vec!["bad name: v".into()])).is_err());
    }

    #[test]
    fn role_arns_and_session_names_are_checked() {
        assert!(
            role_arn(flag("arn:aws:iam::123456789012:role/r".into()))
                .unwrap()
                .is_some()
        );
        assert!(role_arn(flag("arn:aws:iam::123:role/r".into())).is_err());
        assert!(role_arn(flag("freezer-role".into())).is_err());
        assert_eq!(role_extras(None, None, true).unwrap().1, "freezer-fleet");
        assert!(role_extras(flag("x".into()), None, true).is_err());
        assert!(role_extras(flag("ext-id".into()), None, false).is_err());
    }

    #[test]
    fn proxy_urls_must_be_https() {
        assert!(
            proxy_url(flag("https://h.example/v1".into()), true)
                .unwrap()
                .is_some()
        );
        let e = proxy_url(flag("http://h.example/v1".into()), true)
            .unwrap_err()
            .to_string();
        assert!(e.contains("not https://"), "{e}");
        assert!(proxy_url(None, true).is_err());
        assert!(proxy_url(None, false).unwrap().is_none());
    }
}
