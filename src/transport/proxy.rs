//! The HTTPS proxy in front of Kinesis Data Firehose (an API Gateway resource with a custom
//! domain): one POST per event with `{"DeliveryStreamName": …, "Data": <base64 of the event and
//! "\n">}` as `application/json`, over a pooled client the whole fleet shares (keep-alive,
//! HTTP/2 when the proxy offers it), TLS 1.2 or 1.3 only.
//!
//! 2xx is delivered. 429 and 5xx are sent again after a backoff with full jitter, by the link
//! itself, so the event keeps its place. Any other status is counted by status and not retried.

use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use rand::RngExt;

use super::request::{self, Request, RequestLink, RequestSender, Requests};
use super::{LinkEvent, Transport};
use crate::cause::{self, Cause, Kind};
use crate::config::DeviceConfig;
use crate::config::sinks::Proxy;
use crate::stats::Stats;

/// The first re-send waits up to this long (full jitter), doubling per attempt …
const RETRY_BASE: Duration = Duration::from_millis(200);
/// … up to this.
const RETRY_CAP: Duration = Duration::from_secs(10);
/// How long one request may take, connection included.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// The proxy sink: one client for the fleet.
pub struct FirehoseProxy {
    shared: Arc<Shared>,
}

struct Shared {
    client: reqwest::Result<reqwest::Client>,
    url: reqwest::Url,
    headers: Vec<(String, String)>,
    delivery_stream: String,
    stats: Arc<Stats>,
    addr: String,
}

impl FirehoseProxy {
    pub fn new(proxy: &Proxy, delivery_stream: &str, stats: Arc<Stats>) -> FirehoseProxy {
        let mut builder = reqwest::Client::builder()
            .timeout(REQUEST_TIMEOUT)
            .pool_idle_timeout(Duration::from_secs(90));
        if let Some(tls) = &proxy.tls {
            builder = builder.use_preconfigured_tls((**tls).clone());
        }
        let addr = format!(
            "{}:{}",
            proxy.url.host_str().unwrap_or_default(),
            proxy.url.port_or_known_default().unwrap_or(443)
        );
        FirehoseProxy {
            shared: Arc::new(Shared {
                client: builder.build(),
                url: proxy.url.clone(),
                headers: proxy.headers.clone(),
                delivery_stream: delivery_stream.to_string(),
                stats,
                addr,
            }),
        }
    }
}

impl Transport for FirehoseProxy {
    type Sender = RequestSender;
    type Link = RequestLink<ProxyRequests>;

    fn open(&self, _device: &DeviceConfig, index: usize) -> (RequestSender, RequestLink<ProxyRequests>) {
        request::open(ProxyRequests {
            shared: self.shared.clone(),
            seed: index as u64,
        })
    }

    fn target(&self) -> String {
        self.shared.url.to_string()
    }

    fn acknowledges(&self, _qos1: bool) -> bool {
        true
    }
}

/// One device's POSTs, over the fleet's one client.
pub struct ProxyRequests {
    shared: Arc<Shared>,
    /// Seeds the jitter of its re-sends.
    seed: u64,
}

impl Requests for ProxyRequests {
    fn request(&self, payload: Vec<u8>, token: u64) -> Request {
        let body = body(&self.shared.delivery_stream, &payload);
        Box::pin(post(self.shared.clone(), body, token, self.seed))
    }
}

/// The request body for one event.
pub fn body(delivery_stream: &str, event: &[u8]) -> Vec<u8> {
    let mut record = event.to_vec();
    record.push(b'\n');
    let data = base64::engine::general_purpose::STANDARD.encode(record);
    serde_json::to_vec(&serde_json::json!({"DeliveryStreamName": delivery_stream, "Data": data}))
        .expect("JSON values serialise")
}

/// POSTs one event until it is delivered, refused for good, or the connection fails.
async fn post(shared: Arc<Shared>, body: Vec<u8>, token: u64, seed: u64) -> Vec<LinkEvent> {
    let client = match &shared.client {
        Ok(c) => c.clone(),
        Err(e) => return vec![LinkEvent::Lost(cause::from_chain(e, &shared.addr))],
    };
    let mut rng = <rand::rngs::Xoshiro256PlusPlus as rand::SeedableRng>::seed_from_u64(seed ^ token);
    let mut attempt = 0u32;
    loop {
        let mut request = client
            .post(shared.url.clone())
            .header(reqwest::header::CONTENT_TYPE, "application/json");
        for (name, value) in &shared.headers {
            request = request.header(name, value);
        }
        shared.stats.messages.requests.inc();
        let response = match request.body(body.clone()).send().await {
            Ok(r) => r,
            Err(e) => return vec![LinkEvent::Lost(cause::from_chain(&e, &shared.addr))],
        };
        let status = response.status();
        // Read the body so the connection can be used again.
        let _ = response.bytes().await;
        let written = LinkEvent::Written { token };
        match status.as_u16() {
            200..=299 => return vec![written, LinkEvent::Acked { token }],
            429 | 500..=599 => {
                shared
                    .stats
                    .refused(&format!("HTTP {}", status.as_u16()), 1, true);
                attempt += 1;
                let cap = RETRY_BASE.saturating_mul(1 << attempt.min(16)).min(RETRY_CAP);
                tokio::time::sleep(cap.mul_f64(rng.random::<f64>())).await;
                shared.stats.messages.resent.inc();
            }
            code => {
                shared.stats.refused(&format!("HTTP {code}"), 1, false);
                let why = format!("{}: HTTP {status} for POST {}", shared.addr, shared.url.path());
                return vec![
                    written,
                    LinkEvent::Refused {
                        token,
                        cause: Cause::new(Kind::RequestRefused, why),
                    },
                ];
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_body_names_the_delivery_stream_and_carries_the_event_as_a_base64_json_line() {
        let b: serde_json::Value = serde_json::from_slice(&super::body("fh", b"{\"seq\":1}")).unwrap();
        assert_eq!(b["DeliveryStreamName"], "fh");
        assert_eq!(b["Data"], "eyJzZXEiOjF9Cg==");
    }
}
