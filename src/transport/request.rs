//! The link of a transport that sends one HTTP request per event, one at a time per device
//! (IoT Core's HTTPS publish, the Firehose proxy). The request under way lives in the link, not
//! in `next()`, so a caller that stops waiting (the fleet changing phase) never loses a request
//! the server may already have; its reports are given out one per `next()`.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use tokio::sync::mpsc;

use super::{Link, LinkEvent, Sender};

/// One request and what it means, in report order (`Written`, then `Acked`, `Refused` or `Lost`).
pub type Request = Pin<Box<dyn Future<Output = Vec<LinkEvent>> + Send>>;

/// How a transport turns one handed payload into its request.
pub trait Requests: Send + 'static {
    fn request(&self, payload: Vec<u8>, token: u64) -> Request;
}

/// The sending half: payloads wait in a channel for their turn.
pub struct RequestSender {
    tx: mpsc::UnboundedSender<Vec<u8>>,
}

impl Sender for RequestSender {
    fn try_send(&mut self, payload: &[u8]) -> bool {
        self.tx.send(payload.to_vec()).is_ok()
    }
}

pub struct RequestLink<R: Requests> {
    requests: R,
    rx: mpsc::UnboundedReceiver<Vec<u8>>,
    next_token: u64,
    /// Ready to send (what a connection is to MQTT).
    ready: bool,
    inflight: Option<Request>,
    queued: VecDeque<LinkEvent>,
}

/// The two halves of a device's request link.
pub fn open<R: Requests>(requests: R) -> (RequestSender, RequestLink<R>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let link = RequestLink {
        requests,
        rx,
        next_token: 1,
        ready: false,
        inflight: None,
        queued: VecDeque::new(),
    };
    (RequestSender { tx }, link)
}

impl<R: Requests> Link for RequestLink<R> {
    async fn next(&mut self) -> LinkEvent {
        if let Some(ev) = self.queued.pop_front() {
            return ev;
        }
        if !self.ready {
            self.ready = true;
            return LinkEvent::Connected;
        }
        if self.inflight.is_none() {
            let Some(payload) = self.rx.recv().await else {
                return std::future::pending().await;
            };
            let token = self.next_token;
            self.next_token += 1;
            self.inflight = Some(self.requests.request(payload, token));
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
