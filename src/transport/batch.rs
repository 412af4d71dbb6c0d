//! The batching transports: Kinesis PutRecords and Firehose PutRecordBatch. One task per sink
//! gathers the records every device hands over into requests (at most the API's records and
//! bytes per request, a few requests under way at once), and reports to each device which of its
//! records were written and accepted.
//!
//! Records a response refuses one by one (`ProvisionedThroughputExceededException`,
//! `InternalFailure`) and requests that fail whole (throttling, 5xx, a network error) are sent
//! again after a backoff with full jitter, inside this task: the device just sees its record
//! acknowledged later. Nothing is lost, and since a Kinesis device has one record under way at a
//! time ([`Put::WINDOW`]), a refused record is never overtaken by a later one of the same device:
//! its shard keeps the device's seq order. Refusals that retrying cannot fix
//! (`ResourceNotFoundException`, `AccessDeniedException`, …) go back to the device as refused.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use rand::rngs::Xoshiro256PlusPlus;
use rand::{RngExt, SeedableRng};
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio::time::Instant;

use super::{Link, LinkEvent, Sender, Transport};
use crate::aws::json::{ApiError, JsonApi};
use crate::cause::{Cause, Kind};
use crate::config::DeviceConfig;
use crate::stats::Stats;

/// Requests under way at once, per sink.
const CONCURRENT_REQUESTS: usize = 4;
/// The first retry waits up to this long (full jitter), doubling per attempt …
const RETRY_BASE: Duration = Duration::from_millis(100);
/// … up to this.
const RETRY_CAP: Duration = Duration::from_secs(5);

/// One batching API: how records become a request and how its answer reads.
pub trait Put: Send + Sync + 'static {
    /// The sink's name, for messages.
    const NAME: &'static str;
    const MAX_RECORDS: usize;
    const MAX_BYTES: usize;
    /// Records a device may have under way.
    const WINDOW: Option<u16>;
    /// The operation and its body for `records`.
    fn request(&self, records: &[Record]) -> (&'static str, Value);
    /// Per record, its error code, or None when it was accepted.
    fn results(&self, response: &Value, n: usize) -> Vec<Option<String>>;
    /// How many bytes a record counts for against `MAX_BYTES`.
    fn size(&self, record: &Record) -> usize;
    /// The stream, for messages.
    fn stream(&self) -> &str;
}

/// One record on its way.
pub struct Record {
    /// The device id (Kinesis' partition key: a device's records stay in one shard).
    pub key: Arc<str>,
    pub data: Vec<u8>,
    token: u64,
    reply: mpsc::UnboundedSender<LinkEvent>,
    attempts: u32,
}

fn b64(data: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(data)
}

/// Kinesis Data Streams: PutRecords, partition key = device id.
pub struct Kinesis {
    pub stream: String,
}

impl Put for Kinesis {
    const NAME: &'static str = "kinesis";
    const MAX_RECORDS: usize = 500;
    const MAX_BYTES: usize = 5 << 20;
    const WINDOW: Option<u16> = Some(1);

    fn request(&self, records: &[Record]) -> (&'static str, Value) {
        let records: Vec<Value> = records
            .iter()
            .map(|r| json!({"Data": b64(&r.data), "PartitionKey": &*r.key}))
            .collect();
        (
            "PutRecords",
            json!({"StreamName": self.stream, "Records": records}),
        )
    }

    fn results(&self, response: &Value, n: usize) -> Vec<Option<String>> {
        per_record(response, "Records", n)
    }

    fn size(&self, record: &Record) -> usize {
        record.data.len() + record.key.len()
    }

    fn stream(&self) -> &str {
        &self.stream
    }
}

/// Kinesis Data Firehose: PutRecordBatch, each record the event plus `\n` so the delivered
/// objects are JSON lines.
pub struct Firehose {
    pub delivery_stream: String,
}

impl Put for Firehose {
    const NAME: &'static str = "firehose";
    const MAX_RECORDS: usize = 500;
    const MAX_BYTES: usize = 4 << 20;
    const WINDOW: Option<u16> = None;

    fn request(&self, records: &[Record]) -> (&'static str, Value) {
        let records: Vec<Value> = records.iter().map(|r| json!({"Data": b64(&r.data)})).collect();
        (
            "PutRecordBatch",
            json!({"DeliveryStreamName": self.delivery_stream, "Records": records}),
        )
    }

    fn results(&self, response: &Value, n: usize) -> Vec<Option<String>> {
        per_record(response, "RequestResponses", n)
    }

    fn size(&self, record: &Record) -> usize {
        record.data.len()
    }

    fn stream(&self) -> &str {
        &self.delivery_stream
    }
}

/// The error code of each record in `response[field]`; an answer of the wrong shape counts
/// every record as an internal failure (retried).
fn per_record(response: &Value, field: &str, n: usize) -> Vec<Option<String>> {
    match response.get(field).and_then(Value::as_array) {
        Some(items) if items.len() == n => items
            .iter()
            .map(|r| r.get("ErrorCode").and_then(Value::as_str).map(String::from))
            .collect(),
        _ => vec![Some("InternalFailure".into()); n],
    }
}

/// A batching sink: every device's sender feeds one task.
pub struct Batch<P: Put> {
    tx: mpsc::UnboundedSender<Record>,
    target: String,
    add_newline: bool,
    _put: std::marker::PhantomData<P>,
}

impl<P: Put> Batch<P> {
    /// Starts the sink's task (inside the runtime); `seed` makes its jitter reproducible.
    pub fn start(put: P, api: JsonApi, stats: Arc<Stats>, seed: u64) -> Batch<P> {
        let (tx, rx) = mpsc::unbounded_channel();
        let target = format!("{} {} at {}", P::NAME, put.stream(), api.url());
        let batcher = Batcher {
            put: Arc::new(put),
            api,
            stats,
            rng: Xoshiro256PlusPlus::seed_from_u64(seed ^ 0x006b_696e_6573_6973),
            ready: VecDeque::new(),
            later: Vec::new(),
            inflight: JoinSet::new(),
            failed_requests: 0,
        };
        tokio::spawn(batcher.run(rx));
        Batch {
            tx,
            target,
            add_newline: P::NAME == "firehose",
            _put: std::marker::PhantomData,
        }
    }
}

impl<P: Put> Transport for Batch<P> {
    type Sender = BatchSender;
    type Link = BatchLink;

    fn open(&self, device: &DeviceConfig, _index: usize) -> (BatchSender, BatchLink) {
        let (reply, rx) = mpsc::unbounded_channel();
        let sender = BatchSender {
            key: device.id.as_str().into(),
            tx: self.tx.clone(),
            reply,
            next_token: 1,
            add_newline: self.add_newline,
        };
        (sender, BatchLink { rx, connected: false })
    }

    fn target(&self) -> String {
        self.target.clone()
    }

    fn window(&self, asked: u16) -> u16 {
        P::WINDOW.unwrap_or(asked)
    }

    fn acknowledges(&self, _qos1: bool) -> bool {
        true
    }
}

pub struct BatchSender {
    key: Arc<str>,
    tx: mpsc::UnboundedSender<Record>,
    reply: mpsc::UnboundedSender<LinkEvent>,
    next_token: u64,
    add_newline: bool,
}

impl Sender for BatchSender {
    fn try_send(&mut self, payload: &[u8]) -> bool {
        let token = self.next_token;
        self.next_token += 1;
        let mut data = Vec::with_capacity(payload.len() + 1);
        data.extend_from_slice(payload);
        if self.add_newline {
            data.push(b'\n');
        }
        self.tx
            .send(Record {
                key: self.key.clone(),
                data,
                token,
                reply: self.reply.clone(),
                attempts: 0,
            })
            .is_ok()
    }
}

pub struct BatchLink {
    rx: mpsc::UnboundedReceiver<LinkEvent>,
    connected: bool,
}

impl Link for BatchLink {
    async fn next(&mut self) -> LinkEvent {
        if !self.connected {
            // No connection of its own: the sink's task holds the HTTP connections.
            self.connected = true;
            return LinkEvent::Connected;
        }
        match self.rx.recv().await {
            Some(ev) => ev,
            None => std::future::pending().await,
        }
    }

    async fn close(&mut self, _within: Duration, _on_event: impl FnMut(LinkEvent) + Send) {}
}

type Answer = (Vec<Record>, Result<Value, ApiError>);

struct Batcher<P: Put> {
    put: Arc<P>,
    api: JsonApi,
    stats: Arc<Stats>,
    rng: Xoshiro256PlusPlus,
    /// Records to send, oldest first.
    ready: VecDeque<Record>,
    /// Records to send again once their backoff has passed.
    later: Vec<(Instant, Record)>,
    inflight: JoinSet<Answer>,
    failed_requests: u64,
}

impl<P: Put> Batcher<P> {
    async fn run(mut self, mut rx: mpsc::UnboundedReceiver<Record>) {
        let mut open = true;
        loop {
            self.release_due();
            while self.inflight.len() < CONCURRENT_REQUESTS && !self.ready.is_empty() {
                self.send_one();
            }
            if !open && self.ready.is_empty() && self.later.is_empty() && self.inflight.is_empty() {
                return;
            }
            let next_retry = self.later.iter().map(|(at, _)| *at).min();
            tokio::select! {
                r = rx.recv(), if open => match r {
                    Some(record) => {
                        self.ready.push_back(record);
                        // Take everything already waiting, so it can share a request.
                        while let Ok(record) = rx.try_recv() {
                            self.ready.push_back(record);
                        }
                    }
                    None => open = false,
                },
                Some(done) = self.inflight.join_next(), if !self.inflight.is_empty() => {
                    if let Ok((records, answer)) = done {
                        self.on_answer(records, answer);
                    }
                }
                _ = sleep_until_opt(next_retry) => {}
            }
        }
    }

    /// Moves records whose backoff has passed to the front, oldest first.
    fn release_due(&mut self) {
        let now = Instant::now();
        let mut due: Vec<Record> = Vec::new();
        let mut i = 0;
        while i < self.later.len() {
            if self.later[i].0 <= now {
                due.push(self.later.swap_remove(i).1);
            } else {
                i += 1;
            }
        }
        due.sort_by_key(|r| r.token);
        for record in due.into_iter().rev() {
            self.ready.push_front(record);
        }
    }

    /// Starts one request with as many ready records as fit.
    fn send_one(&mut self) {
        let mut records = Vec::new();
        let mut bytes = 0;
        while let Some(r) = self.ready.front() {
            let size = self.put.size(r);
            if records.len() == P::MAX_RECORDS || (!records.is_empty() && bytes + size > P::MAX_BYTES) {
                break;
            }
            bytes += size;
            let r = self.ready.pop_front().expect("front exists");
            if r.attempts == 0 {
                let _ = r.reply.send(LinkEvent::Written { token: r.token });
            } else {
                self.stats.messages.resent.inc();
            }
            records.push(r);
        }
        let (operation, body) = self.put.request(&records);
        self.stats.messages.requests.inc();
        let api = self.api.clone();
        self.inflight.spawn(async move {
            let answer = api.call(operation, &body).await;
            if let Err(e) = &answer
                && e.expired()
            {
                api.refresh_credentials().await;
            }
            (records, answer)
        });
    }

    fn on_answer(&mut self, records: Vec<Record>, answer: Result<Value, ApiError>) {
        match answer {
            Ok(response) => {
                let results = self.put.results(&response, records.len());
                for (record, error) in records.into_iter().zip(results) {
                    match error {
                        None => {
                            let _ = record.reply.send(LinkEvent::Acked { token: record.token });
                        }
                        Some(code) => {
                            let err = ApiError::Service {
                                status: 200,
                                code,
                                message: String::new(),
                            };
                            self.refused(record, &err);
                        }
                    }
                }
            }
            Err(err) => {
                self.failed_requests += 1;
                // The first few, then one in a hundred: a long outage must not flood the log.
                if self.failed_requests <= 3 || self.failed_requests.is_multiple_of(100) {
                    let again = if err.retryable() { "; sending again" } else { "" };
                    tracing::warn!("{} {}: request failed: {err}{again}", P::NAME, self.put.stream());
                }
                for record in records {
                    self.refused(record, &err);
                }
            }
        }
    }

    /// A record was not accepted: later again, or refused for good.
    fn refused(&mut self, mut record: Record, err: &ApiError) {
        if err.retryable() {
            self.stats.refused(err.code(), 1, true);
            record.attempts += 1;
            let cap = RETRY_BASE
                .saturating_mul(1 << record.attempts.min(16))
                .min(RETRY_CAP);
            let wait = cap.mul_f64(self.rng.random::<f64>());
            self.later.push((Instant::now() + wait, record));
        } else {
            self.stats.refused(err.code(), 1, false);
            let detail = format!("{} refused a record for {}: {err}", P::NAME, self.put.stream());
            let _ = record.reply.send(LinkEvent::Refused {
                token: record.token,
                cause: Cause::new(Kind::RequestRefused, detail),
            });
        }
    }
}

async fn sleep_until_opt(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(key: &str, data: &[u8]) -> Record {
        Record {
            key: key.into(),
            data: data.to_vec(),
            token: 1,
            reply: mpsc::unbounded_channel().0,
            attempts: 0,
        }
    }

    #[test]
    fn kinesis_records_carry_the_device_id_as_partition_key() {
        let k = Kinesis {
            stream: "freezer_data".into(),
        };
        let (op, body) = k.request(&[record("freezer7", b"{}")]);
        assert_eq!(op, "PutRecords");
        assert_eq!(body["StreamName"], "freezer_data");
        assert_eq!(body["Records"][0]["PartitionKey"], "freezer7");
        assert_eq!(body["Records"][0]["Data"], "e30=");
    }

    #[test]
    fn each_records_error_code_is_read_and_a_malformed_answer_retries_all() {
        let k = Kinesis { stream: "s".into() };
        let answer = json!({"FailedRecordCount": 1, "Records": [
            {"SequenceNumber": "1", "ShardId": "shardId-0"},
            {"ErrorCode": "ProvisionedThroughputExceededException", "ErrorMessage": "slow down"}]});
        assert_eq!(
            k.results(&answer, 2),
            vec![None, Some("ProvisionedThroughputExceededException".into())]
        );
        assert_eq!(k.results(&json!({}), 2), vec![Some("InternalFailure".into()); 2]);
        let f = Firehose {
            delivery_stream: "d".into(),
        };
        let answer = json!({"FailedPutCount": 0, "RequestResponses": [{"RecordId": "x"}]});
        assert_eq!(f.results(&answer, 1), vec![None]);
    }
}
