//! AWS IoT Core's HTTPS publish: each device POSTs its event to
//! `https://ENDPOINT:8443/topics/<topic>?qos=1` over its own mutual-TLS connection (its own
//! certificate), kept alive between events. 2xx is delivered; 403 is the policy refusing the
//! topic; 429 and 5xx are retried with the device's backoff; other statuses are refused by name.
//!
//! HTTPS has no session: a device is "connected" when it is ready to send, and a request that
//! fails to reach the server (refused, TLS, timeout) is a lost connection like MQTT's.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use tokio::sync::mpsc;

use super::{Link, LinkEvent, Sender, Transport};
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
    /// The publish URL, the topic percent-encoded as one path segment.
    pub fn url(&self) -> reqwest::Url {
        let mut url = reqwest::Url::parse(&format!("https://{}:{}/", self.host, self.port))
            .expect("a checked host and port make a URL");
        url.path_segments_mut()
            .expect("https URLs have paths")
            .extend(["topics", &self.topic]);
        url.query_pairs_mut().append_pair("qos", &self.qos.to_string());
        url
    }
}

impl Transport for Https {
    type Sender = HttpsSender;
    type Link = HttpsLink;

    fn open(&self, device: &DeviceConfig, _index: usize) -> (HttpsSender, HttpsLink) {
        // One client per device: its own certificate, its own keep-alive connection.
        let client = reqwest::Client::builder()
            .use_preconfigured_tls((*device.tls).clone())
            .http1_only()
            .pool_max_idle_per_host(1)
            .timeout(self.request_timeout)
            .build();
        let (tx, rx) = mpsc::unbounded_channel();
        let link = HttpsLink {
            client,
            url: self.url(),
            topic: self.topic.clone(),
            addr: self.target(),
            rx,
            next_token: 1,
            ready: false,
            inflight: None,
            queued: VecDeque::new(),
        };
        (HttpsSender { tx }, link)
    }

    fn target(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }
}

pub struct HttpsSender {
    tx: mpsc::UnboundedSender<Vec<u8>>,
}

impl Sender for HttpsSender {
    fn try_send(&mut self, payload: &[u8]) -> bool {
        self.tx.send(payload.to_vec()).is_ok()
    }
}

pub struct HttpsLink {
    client: reqwest::Result<reqwest::Client>,
    url: reqwest::Url,
    topic: String,
    addr: String,
    rx: mpsc::UnboundedReceiver<Vec<u8>>,
    next_token: u64,
    /// Ready to send (what a connection is to MQTT).
    ready: bool,
    /// The request under way. It lives here, not in `next()`, so a caller that stops waiting
    /// (the fleet changing phase) never loses a request the server may already have.
    inflight: Option<Pin<Box<dyn Future<Output = Vec<LinkEvent>> + Send>>>,
    /// Reports of a request, given out one per `next()`.
    queued: VecDeque<LinkEvent>,
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

impl HttpsLink {
    /// Starts the request for the next handed payload.
    async fn start_next(&mut self) {
        let Some(payload) = self.rx.recv().await else {
            return std::future::pending().await;
        };
        let token = self.next_token;
        self.next_token += 1;
        let request: Pin<Box<dyn Future<Output = Vec<LinkEvent>> + Send>> = match &self.client {
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
        };
        self.inflight = Some(request);
    }
}

impl Link for HttpsLink {
    async fn next(&mut self) -> LinkEvent {
        if let Some(ev) = self.queued.pop_front() {
            return ev;
        }
        if !self.ready {
            self.ready = true;
            return LinkEvent::Connected;
        }
        if self.inflight.is_none() {
            self.start_next().await;
        }
        let Some(request) = self.inflight.as_mut() else {
            return LinkEvent::Idle;
        };
        let reports = request.await;
        self.inflight = None;
        if reports.iter().any(|r| matches!(r, LinkEvent::Lost(_))) {
            // The connection is gone: what was handed comes back to the device's ledger.
            self.ready = false;
            while self.rx.try_recv().is_ok() {}
        }
        self.queued.extend(reports);
        self.queued.pop_front().unwrap_or(LinkEvent::Idle)
    }

    async fn close(&mut self, _within: Duration, _on_event: impl FnMut(LinkEvent) + Send) {
        // Nothing to say goodbye with: dropping the client closes its connection.
    }
}
