//! MQTT over mutual TLS, one connection per device (and the watcher's client): client setup,
//! the device-facing [`Transport`], and the clean disconnect.
//!
//! Two reach-ins into rumqttc's internals live here and only here (see vendor/rumqttc/PATCHES.md
//! for the fork itself): the pre-sized event queue is released (`state.events`, ~14 KB per idle
//! device), and rumqttc's own copy of unacknowledged publishes is dropped after a connection
//! loss (`pending`), because the device re-sends from its own ledger instead.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use rumqttc::{
    AsyncClient, Event, EventLoop, Incoming, MqttOptions, Outgoing, QoS, TlsConfiguration, Transport as Net,
};
use rustls::ClientConfig;

use super::{LISTEN_ROOM, Link, LinkEvent, Outbound, Sender, Transport};
use crate::cause;
use crate::config::DeviceConfig;
use crate::config::aws_iot::MAX_PAYLOAD as AWS_MAX_PAYLOAD;

/// Room for the fixed header, topic and properties around the largest IoT Core payload.
pub const HEADER_ROOM: usize = 1024;
/// The largest packet a device sends or accepts by default: IoT Core's 128 KB payload plus header.
pub const MAX_PACKET: usize = AWS_MAX_PAYLOAD + HEADER_ROOM;

/// One MQTT client's settings.
#[derive(Clone)]
pub struct ClientSpec {
    pub id: String,
    pub host: String,
    pub port: u16,
    pub tls: Arc<ClientConfig>,
    pub keep_alive: Duration,
    pub clean_session: bool,
    /// Publishes awaiting acknowledgement at once.
    pub inflight: u16,
    /// Requests queued at once besides a disconnect (sizes the request channel).
    pub requests: u16,
    /// The largest packets we accept and send.
    pub max_incoming: usize,
    pub max_outgoing: usize,
    pub connect_timeout: Duration,
    pub bind: Option<IpAddr>,
    /// MQTT over WebSockets signed with AWS credentials, instead of MQTT over TLS.
    pub websocket: Option<WsSigner>,
}

/// Signs every WebSocket connection attempt of MQTT over WebSockets with SigV4: a fresh
/// presigned `wss://HOST:PORT/mqtt?X-Amz-…` URL each time, so a long run never uses an expired
/// one. No client certificate: the AWS credentials are the identity.
#[derive(Clone)]
pub struct WsSigner {
    pub host: String,
    pub port: u16,
    pub region: String,
    /// Refreshed before they expire, so a long run keeps connecting.
    pub credentials: crate::aws::credentials::Credentials,
}

impl WsSigner {
    /// The URL without a signature (where the connection goes).
    pub fn base_url(&self) -> String {
        format!("wss://{}:{}/mqtt", self.host, self.port)
    }

    /// The upgrade request with a freshly presigned URL.
    pub(super) async fn sign(self, mut request: http::Request<()>) -> http::Request<()> {
        let Ok(credentials) = self.credentials.get().await else {
            tracing::error!(
                "no AWS credentials to sign the WebSocket URL for {} with",
                self.host
            );
            return request;
        };
        let signed = crate::aws::sigv4::iot_websocket_url(
            &self.host,
            self.port,
            &self.region,
            &credentials,
            std::time::SystemTime::now(),
        );
        match signed.map(|url| url.parse::<http::Uri>()) {
            Ok(Ok(uri)) => *request.uri_mut() = uri,
            // The server will refuse the unsigned request, and the device reports it.
            _ => tracing::error!("could not sign the WebSocket URL for {}", self.host),
        }
        request
    }
}

/// An MQTT client over TLS with rustls (TCP_NODELAY on: without it small TLS records meet
/// delayed ACKs, ~50 ms per round trip on loopback).
pub fn client(spec: &ClientSpec) -> (AsyncClient, EventLoop) {
    let host = spec
        .websocket
        .as_ref()
        .map_or_else(|| spec.host.clone(), WsSigner::base_url);
    let mut options = MqttOptions::new(spec.id.clone(), host, spec.port);
    options
        .set_keep_alive(spec.keep_alive)
        .set_clean_session(spec.clean_session)
        .set_inflight(spec.inflight)
        // Room for what is in flight plus a disconnect: a device never hands over more.
        .set_request_channel_capacity(spec.requests as usize + 4)
        .set_max_packet_size(spec.max_incoming, spec.max_outgoing)
        .set_transport(Net::tls_with_config(TlsConfiguration::Rustls(spec.tls.clone())));
    if let Some(signer) = spec.websocket.clone() {
        options.set_transport(Net::wss_with_config(TlsConfiguration::Rustls(spec.tls.clone())));
        options.set_request_modifier(move |request| signer.clone().sign(request));
    }
    let (client, mut eventloop) = AsyncClient::new(options, spec.requests as usize + 4);
    // rumqttc pre-sizes its event queue for 100 events of 144 bytes (~14 KB per device); it
    // rarely holds more than a few, so let it grow on demand instead.
    eventloop.state.events = std::collections::VecDeque::new();
    let mut net = eventloop.network_options();
    net.set_tcp_nodelay(true);
    net.set_connection_timeout(spec.connect_timeout.as_secs().max(1));
    net.set_bind_addr(spec.bind);
    eventloop.set_network_options(net);
    (client, eventloop)
}

/// Sends DISCONNECT and waits (at most `within`) until it is written, so the broker neither
/// logs an error nor publishes a will. Events polled meanwhile go to `on_event`.
pub async fn disconnect_cleanly(
    client: &AsyncClient,
    eventloop: &mut EventLoop,
    within: Duration,
    mut on_event: impl FnMut(Event),
) {
    if client.try_disconnect().is_err() {
        return;
    }
    let _ = tokio::time::timeout(within, async {
        loop {
            match eventloop.poll().await {
                Ok(Event::Outgoing(Outgoing::Disconnect)) | Err(_) => break,
                Ok(ev) => on_event(ev),
            }
        }
    })
    .await;
}

/// The settings every device's MQTT connection shares.
#[derive(Clone)]
pub struct Mqtt {
    pub host: String,
    pub port: u16,
    pub topic: String,
    pub qos: QoS,
    pub keep_alive: Duration,
    pub persistent_session: bool,
    pub max_inflight: u16,
    pub payload_bytes: Option<usize>,
    pub connect_timeout: Duration,
    /// Local source addresses, round-robin by device index (`--bind`).
    pub bind: Vec<IpAddr>,
    /// MQTT over WebSockets signed with AWS credentials (`--transport mqtt-ws`).
    pub websocket: Option<WsSigner>,
    /// Devices subscribe to their shadow and commands (`--listen`).
    pub listen: bool,
}

impl Mqtt {
    /// Requests a device may have queued at once: its in-flight events, a disconnect, and room
    /// for its own messages when it listens.
    pub fn request_room(&self) -> u16 {
        self.max_inflight
            .saturating_add(if self.listen { LISTEN_ROOM as u16 } else { 0 })
    }
}

impl Transport for Mqtt {
    type Sender = MqttSender;
    type Link = MqttLink;

    fn open(&self, device: &DeviceConfig, index: usize) -> (MqttSender, MqttLink) {
        let spec = ClientSpec {
            id: device.id.clone(),
            host: self.host.clone(),
            port: self.port,
            tls: device.tls.clone(),
            keep_alive: self.keep_alive,
            clean_session: !self.persistent_session,
            inflight: self.max_inflight,
            requests: self.request_room(),
            max_incoming: MAX_PACKET,
            max_outgoing: self
                .payload_bytes
                .map_or(0, |b| b + self.topic.len() + 64)
                .max(MAX_PACKET),
            connect_timeout: self.connect_timeout,
            bind: (!self.bind.is_empty()).then(|| self.bind[index % self.bind.len()]),
            websocket: self.websocket.clone(),
        };
        let (client, eventloop) = client(&spec);
        let outbound = Outbound::new(self.listen);
        let sender = MqttSender {
            client: client.clone(),
            // A `[[group]]`'s own topic and QoS, else the fleet's.
            topic: device.topic.clone().unwrap_or_else(|| self.topic.clone()),
            qos: device.qos.unwrap_or(self.qos),
            outbound: outbound.clone(),
        };
        let link = MqttLink {
            client,
            eventloop,
            addr: self.target(),
            outbound,
        };
        (sender, link)
    }

    fn target(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }
}

pub struct MqttSender {
    client: AsyncClient,
    topic: String,
    qos: QoS,
    outbound: Outbound,
}

impl Sender for MqttSender {
    fn try_send(&mut self, payload: &[u8]) -> bool {
        // The channel is sized for everything in flight, so an error means it is closed.
        let ok = self
            .client
            .try_publish(self.topic.clone(), self.qos, false, payload.to_vec())
            .is_ok();
        self.outbound.handed(ok, false)
    }

    fn subscribe(&mut self, filters: &[String]) -> bool {
        let subs = filters
            .iter()
            .map(|f| rumqttc::SubscribeFilter::new(f.clone(), QoS::AtLeastOnce));
        self.client.try_subscribe_many(subs).is_ok()
    }

    fn send_own(&mut self, topic: &str, payload: &[u8]) -> bool {
        let ok = self
            .client
            .try_publish(topic, QoS::AtMostOnce, false, payload.to_vec())
            .is_ok();
        self.outbound.handed(ok, true)
    }
}

pub struct MqttLink {
    client: AsyncClient,
    eventloop: EventLoop,
    addr: String,
    outbound: Outbound,
}

/// What a device needs to know of an MQTT event. (A QoS 0 publish is written with packet id 0
/// and never acknowledged; the device knows its QoS.) The device's own messages are not events:
/// their writes are not reported.
fn to_link_event(event: Event, outbound: &Outbound, addr: &str) -> LinkEvent {
    match event {
        Event::Incoming(Incoming::ConnAck(_)) => LinkEvent::Connected,
        Event::Outgoing(Outgoing::Publish(pkid)) if outbound.written_is_event() => {
            LinkEvent::Written { token: pkid as u64 }
        }
        Event::Incoming(Incoming::PubAck(ack)) => LinkEvent::Acked {
            token: ack.pkid as u64,
        },
        Event::Incoming(Incoming::Publish(p)) => LinkEvent::Message {
            topic: p.topic,
            payload: p.payload.to_vec(),
        },
        Event::Incoming(Incoming::SubAck(ack))
            if ack
                .return_codes
                .iter()
                .any(|c| matches!(c, rumqttc::SubscribeReasonCode::Failure)) =>
        {
            tracing::warn!(
                "{addr}: a subscription was refused (SUBACK failure): check the policy allows iot:Subscribe and iot:Receive on the device's shadow and command topics"
            );
            LinkEvent::Idle
        }
        _ => LinkEvent::Idle,
    }
}

impl Link for MqttLink {
    async fn next(&mut self) -> LinkEvent {
        match self.eventloop.poll().await {
            Ok(event) => to_link_event(event, &self.outbound, &self.addr),
            Err(err) => {
                // rumqttc keeps its own copy for a resumed session; the device re-sends from its
                // ledger instead.
                self.eventloop.pending.clear();
                self.outbound.clear();
                LinkEvent::Lost(cause::classify(&err, &self.addr).at(self.eventloop.connect_step, &self.addr))
            }
        }
    }

    async fn close(&mut self, within: Duration, mut on_event: impl FnMut(LinkEvent) + Send) {
        let (outbound, addr) = (self.outbound.clone(), self.addr.clone());
        disconnect_cleanly(&self.client, &mut self.eventloop, within, |ev| {
            on_event(to_link_event(ev, &outbound, &addr))
        })
        .await;
        // A stage's disconnect is followed by a new connection: the next `next()` connects
        // afresh rather than reading the old socket's end; the device re-sends from its ledger.
        self.eventloop.clean();
        self.eventloop.pending.clear();
        self.outbound.clear();
    }
}

#[cfg(test)]
#[path = "mqtt_steps_tests.rs"]
mod steps_tests;
