//! MQTT 5 over mutual TLS, one connection per device, with rumqttc's v5 client. What MQTT 5 adds
//! for a device is the server's own reasons: a CONNACK, PUBACK or DISCONNECT reason code is
//! reported by name (e.g. `PUBACK 0x87 not authorized`, `DISCONNECT 0x8E session taken over`)
//! instead of being read from timing, and a session expiry replaces clean session.
//!
//! The same two reach-ins into rumqttc as the 3.1.1 transport (`super::mqtt`) are made here: the
//! pre-sized event queue is released, and rumqttc's own copy of unacknowledged publishes is
//! dropped after a lost connection (the device re-sends from its ledger).

use std::time::Duration;

use rumqttc::v5::mqttbytes::QoS as QoS5;
use rumqttc::v5::mqttbytes::v5::{
    ConnectReturnCode as Connack, DisconnectReasonCode as Disconnect, PubAckReason,
};
use rumqttc::v5::{AsyncClient, ConnectionError, Event, EventLoop, Incoming, MqttOptions, StateError};
use rumqttc::{Outgoing, QoS, TlsConfiguration, Transport as Net};

use super::mqtt::{MAX_PACKET, Mqtt, WsSigner};
use super::{Link, LinkEvent, Outbound, Sender, Transport};
use crate::cause::{self, Cause, Kind};
use crate::config::DeviceConfig;

/// How long IoT Core keeps a persistent session (its maximum is one hour by default).
const SESSION_EXPIRY_S: u32 = 3600;

/// MQTT 5 with the same settings as the 3.1.1 transport (`--payload-bytes` aside: MQTT 5
/// servers announce their own maximum packet size).
#[derive(Clone)]
pub struct Mqtt5(pub Mqtt);

impl Transport for Mqtt5 {
    type Sender = Mqtt5Sender;
    type Link = Mqtt5Link;

    fn open(&self, device: &DeviceConfig, index: usize) -> (Mqtt5Sender, Mqtt5Link) {
        let host = self
            .0
            .websocket
            .as_ref()
            .map_or_else(|| self.0.host.clone(), WsSigner::base_url);
        let mut options = MqttOptions::new(device.id.clone(), host, self.0.port);
        options
            .set_keep_alive(self.0.keep_alive)
            .set_clean_start(!self.0.persistent_session)
            .set_session_expiry_interval(self.0.persistent_session.then_some(SESSION_EXPIRY_S))
            .set_outgoing_inflight_upper_limit(self.0.max_inflight)
            .set_request_channel_capacity(self.0.request_room() as usize + 4)
            .set_max_packet_size(Some(MAX_PACKET as u32))
            .set_connection_timeout(self.0.connect_timeout.as_secs().max(1))
            .set_transport(Net::tls_with_config(TlsConfiguration::Rustls(device.tls.clone())));
        if let Some(signer) = self.0.websocket.clone() {
            options.set_transport(Net::wss_with_config(TlsConfiguration::Rustls(device.tls.clone())));
            options.set_request_modifier(move |request| signer.clone().sign(request));
        }
        let mut net = options.network_options();
        net.set_tcp_nodelay(true);
        net.set_bind_addr((!self.0.bind.is_empty()).then(|| self.0.bind[index % self.0.bind.len()]));
        options.set_network_options(net);
        let (client, mut eventloop) = AsyncClient::new(options, self.0.request_room() as usize + 4);
        eventloop.state.events = std::collections::VecDeque::new();
        let qos = match device.qos.unwrap_or(self.0.qos) {
            QoS::AtMostOnce => QoS5::AtMostOnce,
            QoS::AtLeastOnce => QoS5::AtLeastOnce,
            QoS::ExactlyOnce => QoS5::ExactlyOnce,
        };
        let outbound = Outbound::new(self.0.listen);
        let sender = Mqtt5Sender {
            client: client.clone(),
            topic: device.topic.clone().unwrap_or_else(|| self.0.topic.clone()),
            qos,
            outbound: outbound.clone(),
        };
        let link = Mqtt5Link {
            client,
            eventloop,
            addr: self.target(),
            outbound,
        };
        (sender, link)
    }

    fn target(&self) -> String {
        self.0.target()
    }
}

pub struct Mqtt5Sender {
    client: AsyncClient,
    topic: String,
    qos: QoS5,
    outbound: Outbound,
}

impl Sender for Mqtt5Sender {
    fn try_send(&mut self, payload: &[u8]) -> bool {
        let ok = self
            .client
            .try_publish(self.topic.clone(), self.qos, false, payload.to_vec())
            .is_ok();
        self.outbound.handed(ok, false)
    }

    fn subscribe(&mut self, filters: &[String]) -> bool {
        let subs = filters
            .iter()
            .map(|f| rumqttc::v5::mqttbytes::v5::Filter::new(f.clone(), QoS5::AtLeastOnce));
        self.client.try_subscribe_many(subs).is_ok()
    }

    fn send_own(&mut self, topic: &str, payload: &[u8]) -> bool {
        let ok = self
            .client
            .try_publish(topic, QoS5::AtMostOnce, false, payload.to_vec())
            .is_ok();
        self.outbound.handed(ok, true)
    }
}

pub struct Mqtt5Link {
    client: AsyncClient,
    eventloop: EventLoop,
    addr: String,
    outbound: Outbound,
}

fn to_link_event(event: Event, outbound: &Outbound) -> LinkEvent {
    match event {
        Event::Incoming(Incoming::ConnAck(_)) => LinkEvent::Connected,
        Event::Outgoing(Outgoing::Publish(pkid)) if outbound.written_is_event() => {
            LinkEvent::Written { token: pkid as u64 }
        }
        Event::Incoming(Incoming::Publish(p)) => LinkEvent::Message {
            topic: String::from_utf8_lossy(&p.topic).into_owned(),
            payload: p.payload.to_vec(),
        },
        Event::Incoming(Incoming::PubAck(ack)) => match puback_refusal(ack.reason) {
            None => LinkEvent::Acked {
                token: ack.pkid as u64,
            },
            Some(cause) => LinkEvent::Refused {
                token: ack.pkid as u64,
                cause,
            },
        },
        _ => LinkEvent::Idle,
    }
}

/// A PUBACK reason that refuses the message, by name.
fn puback_refusal(reason: PubAckReason) -> Option<Cause> {
    let (kind, code, name) = match reason {
        PubAckReason::Success | PubAckReason::NoMatchingSubscribers => return None,
        PubAckReason::NotAuthorized => (Kind::PublishNotAllowed, 0x87, "not authorized"),
        PubAckReason::QuotaExceeded => (Kind::QuotaExceeded, 0x97, "quota exceeded"),
        PubAckReason::TopicNameInvalid => (Kind::PublishNotAllowed, 0x90, "topic name invalid"),
        PubAckReason::PayloadFormatInvalid => (Kind::PublishNotAllowed, 0x99, "payload format invalid"),
        PubAckReason::PacketIdentifierInUse => (Kind::Other, 0x91, "packet identifier in use"),
        PubAckReason::ImplementationSpecificError => (Kind::Other, 0x83, "implementation specific error"),
        PubAckReason::UnspecifiedError => (Kind::Other, 0x80, "unspecified error"),
    };
    Some(Cause::new(kind, format!("PUBACK 0x{code:02X} {name}")))
}

/// A lost connection, by the server's reason code when it gave one.
fn lost(err: &ConnectionError, addr: &str) -> Cause {
    match err {
        ConnectionError::ConnectionRefused(code) => connack_refusal(*code, addr),
        ConnectionError::MqttState(StateError::ServerDisconnect { reason_code, .. }) => {
            disconnect(*reason_code, addr)
        }
        ConnectionError::MqttState(StateError::ConnectionAborted) => cause::closed(addr, "connection closed"),
        ConnectionError::MqttState(StateError::AwaitPingResp) => cause::ping_unanswered(addr),
        // rumqttc does not expose this one as a source: open it by hand.
        ConnectionError::MqttState(StateError::Deserialization(e)) => cause::from_chain(e, addr),
        other => cause::from_chain(other, addr),
    }
}

fn connack_refusal(code: Connack, addr: &str) -> Cause {
    let (kind, byte, name) = match code {
        Connack::NotAuthorized => (Kind::NotAuthorized, 0x87, "not authorized"),
        Connack::BadUserNamePassword => (Kind::BadCredentials, 0x86, "bad user name or password"),
        Connack::ClientIdentifierNotValid => (Kind::ClientIdRejected, 0x85, "client identifier not valid"),
        Connack::Banned => (Kind::NotAuthorized, 0x8A, "banned"),
        Connack::ServerBusy => (Kind::ServiceUnavailable, 0x89, "server busy"),
        Connack::ServerUnavailable => (Kind::ServiceUnavailable, 0x88, "server unavailable"),
        Connack::QuotaExceeded => (Kind::QuotaExceeded, 0x97, "quota exceeded"),
        Connack::ConnectionRateExceeded => (Kind::QuotaExceeded, 0x9F, "connection rate exceeded"),
        Connack::UnsupportedProtocolVersion => (Kind::ProtocolVersion, 0x84, "unsupported protocol version"),
        other => return Cause::new(Kind::ConnectRefused, format!("{addr}: CONNACK {other:?}")),
    };
    Cause::new(kind, format!("{addr}: CONNACK 0x{byte:02X} {name}"))
}

fn disconnect(code: Disconnect, addr: &str) -> Cause {
    let byte = code as u8;
    let (kind, name) = match code {
        Disconnect::SessionTakenOver => (Kind::ClientIdInUse, "session taken over"),
        Disconnect::NotAuthorized => (Kind::NotAuthorized, "not authorized"),
        Disconnect::QuotaExceeded => (Kind::QuotaExceeded, "quota exceeded"),
        Disconnect::ServerBusy => (Kind::ServiceUnavailable, "server busy"),
        Disconnect::ServerShuttingDown => (Kind::ServiceUnavailable, "server shutting down"),
        Disconnect::KeepAliveTimeout => (Kind::Timeout, "keep alive timeout"),
        Disconnect::MessageRateTooHigh => (Kind::QuotaExceeded, "message rate too high"),
        _ => (Kind::ClosedByServer, "closed by the server"),
    };
    Cause::new(kind, format!("{addr}: DISCONNECT 0x{byte:02X} {name}"))
}

impl Link for Mqtt5Link {
    async fn next(&mut self) -> LinkEvent {
        match self.eventloop.poll().await {
            Ok(event) => to_link_event(event, &self.outbound),
            Err(err) => {
                self.eventloop.pending.clear();
                self.outbound.clear();
                LinkEvent::Lost(lost(&err, &self.addr).at(self.eventloop.connect_step, &self.addr))
            }
        }
    }

    async fn close(&mut self, within: Duration, mut on_event: impl FnMut(LinkEvent) + Send) {
        if self.client.try_disconnect().is_ok() {
            let _ = tokio::time::timeout(within, async {
                loop {
                    match self.eventloop.poll().await {
                        Ok(Event::Outgoing(Outgoing::Disconnect)) | Err(_) => break,
                        Ok(ev) => on_event(to_link_event(ev, &self.outbound)),
                    }
                }
            })
            .await;
        }
        // The next `next()` connects afresh; the device re-sends from its ledger.
        self.eventloop.clean();
        self.eventloop.pending.clear();
        self.outbound.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reason_codes_are_named() {
        let c = puback_refusal(PubAckReason::NotAuthorized).unwrap();
        assert_eq!(
            (c.kind, c.detail.as_str()),
            (Kind::PublishNotAllowed, "PUBACK 0x87 not authorized")
        );
        assert_eq!(
            puback_refusal(PubAckReason::QuotaExceeded).unwrap().detail,
            "PUBACK 0x97 quota exceeded"
        );
        assert!(puback_refusal(PubAckReason::NoMatchingSubscribers).is_none());
        let d = disconnect(Disconnect::SessionTakenOver, "h:1");
        assert_eq!(d.kind, Kind::ClientIdInUse);
        assert!(
            d.detail.starts_with("h:1: DISCONNECT 0x8E session taken over"),
            "{}",
            d.detail
        );
        let c = connack_refusal(Connack::NotAuthorized, "h:1");
        assert_eq!(
            (c.kind, c.detail.as_str()),
            (Kind::NotAuthorized, "h:1: CONNACK 0x87 not authorized")
        );
    }
}
