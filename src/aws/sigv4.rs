//! SigV4 signing with the aws-sigv4 crate, never by hand: in the query string (presigned URLs,
//! what an MQTT-over-WebSockets connection to AWS IoT Core authenticates with) or in the headers
//! (every AWS API call: Kinesis, Firehose).

use std::time::{Duration, SystemTime};

use anyhow::{Context, Result};
use aws_credential_types::Credentials;
use aws_sigv4::http_request::{
    PercentEncodingMode, SessionTokenMode, SignableBody, SignableRequest, SignatureLocation, SigningSettings,
    sign,
};
use aws_sigv4::sign::v4;

/// AWS IoT Core's signing name for device connections.
pub const IOT_SERVICE: &str = "iotdevicegateway";
/// How long a presigned URL is valid (a new one is made for every connection attempt).
pub const URL_VALIDITY: Duration = Duration::from_secs(300);

/// What the request's body is, for the signature.
#[derive(Debug, Clone, Copy)]
pub enum Payload {
    /// The SHA-256 of an empty body (IoT Core's WebSocket upgrade).
    Empty,
    /// `UNSIGNED-PAYLOAD` (S3 presigned URLs; the published example the signing is checked
    /// against is one).
    #[cfg_attr(not(test), allow(dead_code))]
    Unsigned,
}

/// Presigns a GET of `url` for `service` in `region`: the signature and its parameters in the
/// query string. A session token is left out of the signature and appended after it, as AWS IoT
/// Core wants (S3 wants it signed: `session_token_signed`).
pub fn presign(
    url: &str,
    (service, region): (&str, &str),
    credentials: &Credentials,
    time: SystemTime,
    expires: Duration,
    payload: Payload,
    session_token_signed: bool,
) -> Result<String> {
    let mut settings = SigningSettings::default();
    settings.signature_location = SignatureLocation::QueryParams;
    settings.expires_in = Some(expires);
    settings.percent_encoding_mode = PercentEncodingMode::Single;
    settings.session_token_mode = if session_token_signed {
        SessionTokenMode::Include
    } else {
        SessionTokenMode::Exclude
    };
    let body = match payload {
        Payload::Empty => SignableBody::Bytes(&[]),
        Payload::Unsigned => SignableBody::UnsignedPayload,
    };
    let signable = SignableRequest::new("GET", url, std::iter::empty(), body).context("SigV4 request")?;
    let instructions = signed(signable, credentials, (service, region), time, settings)?;
    let mut request = http::Request::builder()
        .method("GET")
        .uri(url)
        .body(())
        .context("SigV4 URL")?;
    instructions.apply_to_request_http1x(&mut request);
    let mut signed = request.uri().to_string();
    if let (false, Some(token)) = (session_token_signed, credentials.session_token()) {
        let token = percent_encoding::utf8_percent_encode(token, QUERY_VALUE);
        signed.push_str(&format!("&X-Amz-Security-Token={token}"));
    }
    Ok(signed)
}

/// Signs a request in its headers (`Authorization`, `X-Amz-Date`, `X-Amz-Security-Token`):
/// what AWS's JSON APIs (Kinesis, Firehose) and REST APIs authenticate with. Returns the headers
/// to add; `headers` are the ones to sign besides `host`.
pub fn sign_headers(
    (method, url): (&str, &str),
    headers: &[(&str, &str)],
    body: &[u8],
    (service, region): (&str, &str),
    credentials: &Credentials,
    time: SystemTime,
) -> Result<Vec<(String, String)>> {
    let signable = SignableRequest::new(method, url, headers.iter().copied(), SignableBody::Bytes(body))
        .context("SigV4 request")?;
    let settings = SigningSettings::default();
    let instructions = signed(signable, credentials, (service, region), time, settings)?;
    Ok(instructions
        .headers()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect())
}

/// Signs `signable` for `service` in `region` with `settings`: what to add to the request.
fn signed(
    signable: SignableRequest<'_>,
    credentials: &Credentials,
    (service, region): (&str, &str),
    time: SystemTime,
    settings: SigningSettings,
) -> Result<aws_sigv4::http_request::SigningInstructions> {
    let identity = credentials.clone().into();
    let params = v4::SigningParams::builder()
        .identity(&identity)
        .region(region)
        .name(service)
        .time(time)
        .settings(settings)
        .build()
        .context("SigV4 parameters")?
        .into();
    let (instructions, _) = sign(signable, &params).context("SigV4 signing")?.into_parts();
    Ok(instructions)
}

/// What SigV4 percent-encodes in a query value: everything but the unreserved characters.
const QUERY_VALUE: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// The presigned `wss://HOST:PORT/mqtt?X-Amz-…` URL of an AWS IoT Core MQTT-over-WebSockets
/// connection, valid for [`URL_VALIDITY`] from `time`.
pub fn iot_websocket_url(
    host: &str,
    port: u16,
    region: &str,
    credentials: &Credentials,
    time: SystemTime,
) -> Result<String> {
    let base = format!("wss://{host}:{port}/mqtt");
    presign(
        &base,
        (IOT_SERVICE, region),
        credentials,
        time,
        URL_VALIDITY,
        Payload::Empty,
        false,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn example_credentials(token: Option<&str>) -> Credentials {
        Credentials::new(
            "AKIAIOSFODNN7EXAMPLE",
            "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
            token.map(String::from),
            None,
            "test",
        )
    }

    fn may_24_2013() -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_369_353_600)
    }

    /// AWS's published example of a presigned URL ("Authenticating Requests: Using Query
    /// Parameters (AWS Signature Version 4)", Amazon S3 API reference): the same inputs must
    /// give the signature AWS printed.
    #[test]
    fn the_signature_matches_aws_published_presigned_url_example() {
        let url = presign(
            "https://examplebucket.s3.amazonaws.com/test.txt",
            ("s3", "us-east-1"),
            &example_credentials(None),
            may_24_2013(),
            Duration::from_secs(86400),
            Payload::Unsigned,
            true,
        )
        .unwrap();
        assert!(url.contains("X-Amz-Algorithm=AWS4-HMAC-SHA256"), "{url}");
        assert!(
            url.contains("X-Amz-Credential=AKIAIOSFODNN7EXAMPLE%2F20130524%2Fus-east-1%2Fs3%2Faws4_request"),
            "{url}"
        );
        assert!(url.contains("X-Amz-Date=20130524T000000Z"), "{url}");
        assert!(url.contains("X-Amz-Expires=86400"), "{url}");
        assert!(url.contains("X-Amz-SignedHeaders=host"), "{url}");
        assert!(
            url.ends_with("X-Amz-Signature=aeeed9bbccd4d02ee5c0109b86d86835f995330da4c265957d157751f604d404"),
            "{url}"
        );
    }

    #[test]
    fn an_iot_websocket_url_carries_every_sigv4_parameter_and_the_session_token_after_the_signature() {
        let creds = example_credentials(Some("FQoGZXIvYXdzE+token/with=chars"));
        let url = iot_websocket_url(
            "abc-ats.iot.eu-west-1.amazonaws.com",
            443,
            "eu-west-1",
            &creds,
            may_24_2013(),
        )
        .unwrap();
        assert!(
            url.starts_with("wss://abc-ats.iot.eu-west-1.amazonaws.com:443/mqtt?"),
            "{url}"
        );
        for param in [
            "X-Amz-Algorithm=",
            "X-Amz-Credential=",
            "X-Amz-Date=",
            "X-Amz-SignedHeaders=",
            "X-Amz-Signature=",
        ] {
            assert!(url.contains(param), "{param} missing: {url}");
        }
        assert!(
            url.contains("%2Feu-west-1%2Fiotdevicegateway%2Faws4_request"),
            "{url}"
        );
        let signature_at = url.find("X-Amz-Signature=").unwrap();
        let token_at = url.find("X-Amz-Security-Token=").unwrap();
        assert!(
            token_at > signature_at,
            "the token comes after the signature: {url}"
        );
        assert!(
            url.ends_with("X-Amz-Security-Token=FQoGZXIvYXdzE%2Btoken%2Fwith%3Dchars"),
            "{url}"
        );
        assert!(!url.contains("wJalrXUtnFEMI"), "the secret never appears");
        let plain =
            iot_websocket_url("h", 443, "eu-west-1", &example_credentials(None), may_24_2013()).unwrap();
        assert!(!plain.contains("X-Amz-Security-Token"), "{plain}");
    }
}
