//! AWS IoT Core's HTTPS publish: each device POSTs its event to
//! `https://ENDPOINT:8443/topics/<topic>?qos=1` over its own mutual-TLS connection (its own
//! certificate), kept alive between events. 2xx is delivered; 403 is the policy refusing the
//! topic; 429 and 5xx are retried with the device's backoff; other statuses are refused by name.
//!
//! HTTPS has no session: a device is "connected" when it is ready to send, and a request that
//! fails to reach the server (refused, TLS, timeout) is a lost connection like MQTT's.

use std::time::Duration;

use super::request::{self, Request, RequestLink, RequestSender, Requests};
use super::{LinkEvent, Transport};
use crate::cause::{self, Cause, Kind};
use crate::config::DeviceConfig;

/// The settings every device's HTTPS connection shares.
#[derive(Clone)]
pub struct Https {
    pub host: String,
    pub port: u16,
    pub topic: String,
    pub qos: u8,
    /// How long one request may take, connection included.
    pub request_timeout: Duration,
}

impl Https {
    /// The publish URL for a topic and QoS (the fleet's, or a `[[group]]`'s own), the topic
    /// percent-encoded as one path segment.
    fn url_for(&self, topic: &str, qos: u8) -> reqwest::Url {
        let mut url = reqwest::Url::parse(&format!("https://{}:{}/", self.host, self.port))
            .expect("a checked host and port make a URL");
        url.path_segments_mut()
            .expect("https URLs have paths")
            .extend(["topics", topic]);
        url.query_pairs_mut().append_pair("qos", &qos.to_string());
        url
    }
}

impl Transport for Https {
    type Sender = RequestSender;
    type Link = RequestLink<HttpsRequests>;

    fn open(&self, device: &DeviceConfig, _index: usize) -> (RequestSender, RequestLink<HttpsRequests>) {
        // One client per device: its own certificate, its own keep-alive connection.
        let client = reqwest::Client::builder()
            .use_preconfigured_tls((*device.tls).clone())
            .http1_only()
            .pool_max_idle_per_host(1)
            .timeout(self.request_timeout)
            .build();
        let topic = device.topic.clone().unwrap_or_else(|| self.topic.clone());
        let qos = device
            .qos
            .map_or(self.qos, |q| u8::from(q != rumqttc::QoS::AtMostOnce));
        request::open(HttpsRequests {
            client,
            url: self.url_for(&topic, qos),
            topic,
            addr: self.target(),
        })
    }

    fn target(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }
}

/// One device's publish requests.
pub struct HttpsRequests {
    client: reqwest::Result<reqwest::Client>,
    url: reqwest::Url,
    topic: String,
    addr: String,
}

impl Requests for HttpsRequests {
    fn request(&self, payload: Vec<u8>, token: u64) -> Request {
        match &self.client {
            Ok(client) => Box::pin(post(
                client.clone(),
                self.url.clone(),
                self.topic.clone(),
                self.addr.clone(),
                payload,
                token,
            )),
            Err(e) => {
                let lost = LinkEvent::Lost(cause::from_chain(e, &self.addr));
                Box::pin(std::future::ready(vec![lost]))
            }
        }
    }
}

/// One POST and what it means, in report order.
async fn post(
    client: reqwest::Client,
    url: reqwest::Url,
    topic: String,
    addr: String,
    payload: Vec<u8>,
    token: u64,
) -> Vec<LinkEvent> {
    let sent = client
        .post(url.clone())
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .body(payload)
        .send()
        .await;
    let response = match sent {
        Ok(r) => r,
        Err(e) => return vec![LinkEvent::Lost(cause::from_chain(&e, &addr))],
    };
    let status = response.status();
    // Read the body so the connection can be used again.
    let _ = response.bytes().await;
    let written = LinkEvent::Written { token };
    match status.as_u16() {
        200..=299 => vec![written, LinkEvent::Acked { token }],
        429 | 500..=599 => {
            let kind = if status.as_u16() == 429 {
                Kind::QuotaExceeded
            } else {
                Kind::ServiceUnavailable
            };
            vec![
                written,
                LinkEvent::Lost(Cause::new(kind, format!("{addr}: HTTP {status}"))),
            ]
        }
        403 => {
            let why = format!("HTTP {status}: the policy does not allow iot:Publish on topic/{topic}");
            vec![
                written,
                LinkEvent::Refused {
                    token,
                    cause: Cause::new(Kind::PublishNotAllowed, why),
                },
            ]
        }
        _ => {
            let why = format!("HTTP {status} for POST {}", url.path());
            vec![
                written,
                LinkEvent::Refused {
                    token,
                    cause: Cause::new(Kind::RequestRefused, why),
                },
            ]
        }
    }
}
