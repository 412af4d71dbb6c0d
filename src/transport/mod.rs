//! The transport seam: *how* a device's events are sent, apart from *what* is sent and *when*
//! (the freezer model, the schedule and the delivery ledger in [`crate::device`]).
//!
//! A transport opens, for each device, a [`Sender`] and a [`Link`], the way rumqttc splits an
//! `AsyncClient` from its `EventLoop`:
//! - the device hands payloads to the [`Sender`] without waiting ([`Sender::try_send`]), never
//!   more than its in-flight window;
//! - it drives the [`Link`] ([`Link::next`]), which connects when needed and reports what
//!   happened: connected, the n-th handed payload written (with a token), a token acknowledged,
//!   or the connection lost with a typed [`Cause`]. After `Lost`, the next call reconnects: the
//!   device decides *when* (backoff, pacing), the link only *how*.
//!
//! The device loop never cancels `next()` mid-way; it waits on it and on its own timers side by
//! side. Written tokens come in hand-off order, so the device's ledger can match them to events.
//!
//! Adding a transport is one new module implementing [`Transport`] plus its flags:
//! - one connection per device (IoT Core HTTPS, MQTT over WebSockets): `open` makes the
//!   connection's two halves, as [`mqtt`] does;
//! - one connection or batcher shared by many devices (Kinesis PutRecords, Firehose
//!   PutRecordBatch, an HTTPS proxy): `open` returns a sender that pushes into one shared task
//!   and a link that receives that task's per-device written/acknowledged/lost reports.

use std::collections::VecDeque;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::cause::Cause;
use crate::config::DeviceConfig;

pub mod batch;
pub mod https;
pub mod mqtt;
pub mod mqtt5;
pub mod proxy;
pub mod request;

/// What a link reports to its device.
#[derive(Debug)]
pub enum LinkEvent {
    /// A connection (or session) is up: handing payloads may start.
    Connected,
    /// The oldest handed payload not yet reported was written; `token` will come back acknowledged.
    Written { token: u64 },
    /// The server acknowledged the payload written with `token`.
    Acked { token: u64 },
    /// The server answered the payload written with `token` with a refusal (e.g. MQTT 5
    /// `PUBACK 0x87 not authorized`): it was not accepted.
    Refused { token: u64, cause: Cause },
    /// The connection failed or dropped. Everything handed but not acknowledged is lost to
    /// this link; the next [`Link::next`] reconnects.
    Lost(Cause),
    /// A message on a topic the device subscribed to (`--listen`: its shadow, its commands).
    Message { topic: String, payload: Vec<u8> },
    /// Anything else (keep-alives, …): nothing for the device to do.
    Idle,
}

/// Extra room in a listening device's request channel for its own messages (subscriptions,
/// shadow reports, replies) beside its in-flight events.
pub const LISTEN_ROOM: usize = 16;

/// Which publishes of a connection, in hand-off order, were the device's own messages (shadow
/// reports, command replies) rather than events, so the link reports only events as written
/// and the ledger's order holds. Shared by a listening device's two halves; empty and free
/// for one that does not listen.
#[derive(Clone, Default)]
pub struct Outbound(Option<Arc<Mutex<VecDeque<bool>>>>);

impl Outbound {
    pub fn new(listen: bool) -> Outbound {
        Outbound(listen.then(Default::default))
    }

    /// A publish was handed over (`ok`): an event, or the device's own message. Returns `ok`.
    pub fn handed(&self, ok: bool, own: bool) -> bool {
        if let (true, Some(q)) = (ok, &self.0) {
            crate::stats::lock(q).push_back(own);
        }
        ok
    }

    /// A publish was written: whether it was an event.
    pub fn written_is_event(&self) -> bool {
        self.0
            .as_ref()
            .is_none_or(|q| !crate::stats::lock(q).pop_front().unwrap_or(false))
    }

    /// The connection dropped everything not yet written.
    pub fn clear(&self) {
        if let Some(q) = &self.0 {
            crate::stats::lock(q).clear();
        }
    }
}

/// The sending half: takes payloads without waiting.
pub trait Sender: Send + 'static {
    /// Hands one payload over; false when the link is closed and cannot take it.
    fn try_send(&mut self, payload: &[u8]) -> bool;
    /// Subscribes (QoS 1) to these topic filters; false when this transport cannot listen or
    /// the link is closed.
    fn subscribe(&mut self, _filters: &[String]) -> bool {
        false
    }
    /// Publishes one of the device's own messages (a shadow report, a command's reply) at QoS 0,
    /// outside the events' ledger: the link never reports it as written.
    fn send_own(&mut self, _topic: &str, _payload: &[u8]) -> bool {
        false
    }
}

/// The connection half, driven by the device task.
pub trait Link: Send + 'static {
    /// Connects if needed and waits until there is something to report.
    fn next(&mut self) -> impl Future<Output = LinkEvent> + Send;
    /// Says goodbye cleanly (e.g. MQTT DISCONNECT), waiting at most `within`; events that
    /// arrive meanwhile are passed to `on_event`. The next `next()` connects afresh.
    fn close(
        &mut self,
        within: Duration,
        on_event: impl FnMut(LinkEvent) + Send,
    ) -> impl Future<Output = ()> + Send;
}

/// A way to send events, opened once per device.
pub trait Transport: Send + Sync + 'static {
    type Sender: Sender;
    type Link: Link;
    /// The two halves for device number `index` (index picks e.g. its `--bind` address).
    fn open(&self, device: &DeviceConfig, index: usize) -> (Self::Sender, Self::Link);
    /// `host:port` or a URL, for messages.
    fn target(&self) -> String;
    /// How many events a device may have handed and unacknowledged at once, given what was
    /// asked (`--max-inflight`). Kinesis keeps it at 1 so a refused record never lets a later
    /// one of the same device overtake it.
    fn window(&self, asked: u16) -> u16 {
        asked
    }
    /// Whether written events wait for the server's acknowledgement (`qos1`: QoS 1 was asked
    /// for). An AWS API answers every request, whatever the QoS.
    fn acknowledges(&self, qos1: bool) -> bool {
        qos1
    }
}
