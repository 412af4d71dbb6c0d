//! AWS's JSON protocol (Kinesis, Firehose): a POST of a JSON body to the service endpoint with
//! `X-Amz-Target: <prefix>.<Operation>`, signed with SigV4 (aws-sigv4) in the headers. Errors
//! come back as `{"__type": "...Exception", "message": "..."}`; [`ApiError`] says which of them
//! may pass with a retry.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use serde_json::Value;

use super::credentials::Session;
use super::endpoint::Service;

/// How long one API call may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// A client of one AWS JSON API.
#[derive(Clone)]
pub struct JsonApi {
    http: reqwest::Client,
    url: reqwest::Url,
    service: Service,
    /// `Kinesis_20131202`, `Firehose_20150804`.
    target_prefix: &'static str,
    session: Session,
}

/// Why a call did not succeed.
#[derive(Debug, Clone)]
pub enum ApiError {
    /// No answer: refused, reset, TLS, timeout.
    Network(String),
    /// The service answered with an error.
    Service {
        status: u16,
        code: String,
        message: String,
    },
}

/// Error codes that may pass if the call is made again later.
const RETRYABLE: &[&str] = &[
    "ProvisionedThroughputExceededException",
    "ThrottlingException",
    "Throttling",
    "LimitExceededException",
    "ServiceUnavailableException",
    "ServiceUnavailable",
    "InternalFailure",
    "InternalFailureException",
    "InternalServerError",
    "KMSThrottlingException",
    "ExpiredTokenException",
    "RequestExpired",
];

impl ApiError {
    /// Retrying (after a while) may succeed.
    pub fn retryable(&self) -> bool {
        match self {
            ApiError::Network(_) => true,
            ApiError::Service { status, code, .. } => *status >= 500 || RETRYABLE.contains(&code.as_str()),
        }
    }

    /// The credentials are no longer valid: fetch new ones before the retry.
    pub fn expired(&self) -> bool {
        matches!(self, ApiError::Service { code, .. } if code == "ExpiredTokenException" || code == "RequestExpired")
    }

    /// The error code alone (`ResourceNotFoundException`, `network`).
    pub fn code(&self) -> &str {
        match self {
            ApiError::Network(_) => "network error",
            ApiError::Service { code, .. } => code,
        }
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ApiError::Network(why) => f.write_str(why),
            ApiError::Service {
                status,
                code,
                message,
            } if message.is_empty() => write!(f, "HTTP {status} {code}"),
            ApiError::Service {
                status,
                code,
                message,
            } => write!(f, "HTTP {status} {code}: {message}"),
        }
    }
}

impl std::error::Error for ApiError {}

/// The error code of a `__type` such as `com.amazonaws.kinesis#ResourceNotFoundException:...`.
fn error_code(raw: &str) -> String {
    let after_hash = raw.rsplit('#').next().unwrap_or(raw);
    after_hash.split(':').next().unwrap_or(after_hash).to_string()
}

/// An HTTPS client on the process's one crypto provider (ring), TLS 1.2+ only, verifying the
/// server against the built-in Mozilla roots, which include Amazon's.
pub fn http_client(tls: Option<Arc<rustls::ClientConfig>>) -> anyhow::Result<reqwest::Client> {
    let tls = match tls {
        Some(t) => t,
        None => crate::identity::server_only_config(
            crate::identity::load_roots(&crate::identity::TrustSource::BuiltIn)?,
            &[],
        )?,
    };
    reqwest::Client::builder()
        .use_preconfigured_tls((*tls).clone())
        .timeout(REQUEST_TIMEOUT)
        .build()
        .map_err(|e| anyhow::anyhow!("HTTP client: {e}"))
}

impl JsonApi {
    pub fn new(
        http: reqwest::Client,
        url: reqwest::Url,
        service: Service,
        target_prefix: &'static str,
        session: Session,
    ) -> JsonApi {
        JsonApi {
            http,
            url,
            service,
            target_prefix,
            session,
        }
    }

    /// Forgets the credentials, so the next call fetches new ones.
    pub async fn refresh_credentials(&self) {
        self.session.credentials.invalidate().await;
    }

    /// Where calls go (for messages).
    pub fn url(&self) -> &reqwest::Url {
        &self.url
    }

    /// The region calls are signed for.
    pub fn region(&self) -> &str {
        &self.session.region
    }

    /// Calls `operation` with `body` (the JSON protocol: Kinesis, Firehose); the parsed answer,
    /// or why not.
    pub async fn call(&self, operation: &str, body: &Value) -> Result<Value, ApiError> {
        let body = serde_json::to_vec(body).expect("JSON values serialise");
        let target = format!("{}.{operation}", self.target_prefix);
        let headers = [
            ("content-type", "application/x-amz-json-1.1"),
            ("x-amz-target", target.as_str()),
        ];
        self.send("POST", self.url.clone(), &headers, body).await
    }

    /// `method path_and_query` with an optional JSON body (the REST-JSON protocol: the IoT
    /// registry); the parsed answer, or why not.
    pub async fn rest(
        &self,
        method: &str,
        path_and_query: &str,
        body: Option<&Value>,
        headers: &[(&str, &str)],
    ) -> Result<Value, ApiError> {
        let url = self
            .url
            .join(path_and_query)
            .map_err(|e| ApiError::Network(format!("{}{path_and_query}: {e}", self.url)))?;
        let body = body
            .map(|b| serde_json::to_vec(b).expect("JSON values serialise"))
            .unwrap_or_default();
        let mut all = vec![("content-type", "application/json")];
        all.extend_from_slice(headers);
        self.send(method, url, &all, body).await
    }

    async fn send(
        &self,
        method: &str,
        url: reqwest::Url,
        headers: &[(&str, &str)],
        body: Vec<u8>,
    ) -> Result<Value, ApiError> {
        let credentials = self
            .session
            .credentials
            .get()
            .await
            .map_err(|e| ApiError::Service {
                status: 0,
                code: "CredentialsError".into(),
                message: e.to_string(),
            })?;
        let signed = super::sigv4::sign_headers(
            (method, url.as_str()),
            headers,
            &body,
            (self.service.name, &self.session.region),
            &credentials,
            SystemTime::now(),
        )
        .map_err(|e| ApiError::Network(format!("signing: {e}")))?;
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap_or(reqwest::Method::POST);
        let mut request = self.http.request(method, url.clone());
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        for (name, value) in signed {
            request = request.header(name, value);
        }
        let response = request.body(body).send().await.map_err(|e| {
            let host = url.host_str().unwrap_or_default();
            let addr = format!("{host}:{}", url.port_or_known_default().unwrap_or(443));
            ApiError::Network(crate::cause::from_chain(&e, &addr).detail)
        })?;
        let status = response.status().as_u16();
        let header_code = response
            .headers()
            .get("x-amzn-errortype")
            .and_then(|v| v.to_str().ok())
            .map(error_code);
        let bytes = response
            .bytes()
            .await
            .map_err(|e| ApiError::Network(format!("{url}: {e}")))?;
        let value: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        if (200..300).contains(&status) {
            return Ok(value);
        }
        let code = value
            .get("__type")
            .and_then(Value::as_str)
            .map(error_code)
            .or(header_code)
            .unwrap_or_else(|| format!("HTTP{status}"));
        let message = ["message", "Message"]
            .iter()
            .find_map(|k| value.get(*k).and_then(Value::as_str))
            .unwrap_or_default()
            .to_string();
        Err(ApiError::Service {
            status,
            code,
            message,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_codes_are_read_from_every_form_of_type() {
        assert_eq!(
            error_code("ResourceNotFoundException"),
            "ResourceNotFoundException"
        );
        assert_eq!(
            error_code("com.amazonaws.kinesis.v20131202#ProvisionedThroughputExceededException"),
            "ProvisionedThroughputExceededException"
        );
        assert_eq!(
            error_code("ThrottlingException:http://internal.amazon.com/"),
            "ThrottlingException"
        );
    }

    #[test]
    fn throttling_and_faults_are_retried_and_mistakes_are_not() {
        let e = |status, code: &str| ApiError::Service {
            status,
            code: code.into(),
            message: String::new(),
        };
        assert!(e(400, "ProvisionedThroughputExceededException").retryable());
        assert!(e(500, "Anything").retryable());
        assert!(e(400, "ExpiredTokenException").expired());
        assert!(!e(400, "ResourceNotFoundException").retryable());
        assert!(!e(400, "AccessDeniedException").retryable());
        assert!(ApiError::Network("refused".into()).retryable());
    }
}
