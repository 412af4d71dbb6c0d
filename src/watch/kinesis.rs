//! `watch --kinesis`: reads every shard of a Kinesis data stream the way a stream-analytics
//! engine does (ListShards, GetShardIterator, GetRecords), decodes each record as an event and
//! keeps the same per-device accounting as the MQTT watcher. Shard splits and merges are
//! followed: a child shard is read from its start once its parents are read to their end, so a
//! device's events keep their order across a resharding.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use anyhow::Result;
use base64::Engine as _;
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio::task::JoinSet;

use super::{Accounting, Hooks, record};
use crate::aws::json::{ApiError, JsonApi};
use crate::config::watch::StartFrom;
use crate::input;

/// Kinesis allows 5 GetRecords per second per shard.
const POLL_EVERY: Duration = Duration::from_millis(200);
/// How often the shard list is read again, for splits and merges.
const LIST_EVERY: Duration = Duration::from_secs(5);
/// A throttled or failed call waits this long.
const BACK_OFF: Duration = Duration::from_secs(1);

/// The GetShardIterator request for `shard`, starting where `from` says.
fn iterator_request(from: &StartFrom, stream: &str, shard: &str) -> Value {
    match from {
        StartFrom::Latest => json!({"StreamName": stream, "ShardId": shard, "ShardIteratorType": "LATEST"}),
        StartFrom::TrimHorizon => {
            json!({"StreamName": stream, "ShardId": shard, "ShardIteratorType": "TRIM_HORIZON"})
        }
        StartFrom::At(t) => {
            let secs = t
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default()
                .as_secs_f64();
            json!({"StreamName": stream, "ShardId": shard, "ShardIteratorType": "AT_TIMESTAMP", "Timestamp": secs})
        }
    }
}

/// One shard as ListShards describes it.
#[derive(Debug, Clone)]
struct Shard {
    id: String,
    parents: Vec<String>,
}

/// What a shard reader reports.
enum Read {
    /// The data of records of `shard`, in shard order.
    Records { shard: String, records: Vec<Vec<u8>> },
    /// `shard` is read to its end (it was split or merged).
    Finished(String),
}

/// Reads `stream` until `stop`; the accounting of what was read.
pub async fn run(
    api: &JsonApi,
    stream: &str,
    from: &StartFrom,
    json: bool,
    mut hooks: Hooks,
    stop: impl std::future::Future<Output = ()>,
) -> Result<Accounting> {
    let shards = list_shards(api, stream).await.map_err(|e| match e {
        ApiError::Service { code, .. } if code == "ResourceNotFoundException" => input!(
            "--kinesis {stream}: no such stream in {} ({}); check the name and --region",
            api.region(),
            api.url()
        ),
        other => input!(
            "--kinesis {stream}: cannot list its shards at {}: {other}",
            api.url()
        ),
    })?;
    let (tx, mut rx) = mpsc::unbounded_channel();
    let mut readers = JoinSet::new();
    let mut known: BTreeMap<String, Shard> = BTreeMap::new();
    let mut started: BTreeSet<String> = BTreeSet::new();
    let mut finished: BTreeSet<String> = BTreeSet::new();
    // The shards there now start where the user said; shards that appear later (children of a
    // split or merge) start at their beginning.
    for shard in &shards {
        known.insert(shard.id.clone(), shard.clone());
    }
    let initial: BTreeSet<String> = known.keys().cloned().collect();
    let start_ready = |known: &BTreeMap<String, Shard>,
                       started: &mut BTreeSet<String>,
                       finished: &BTreeSet<String>,
                       readers: &mut JoinSet<()>| {
        for shard in known.values() {
            if started.contains(&shard.id) {
                continue;
            }
            // A child waits for its parents still in the list to be read to their end.
            let waiting = shard
                .parents
                .iter()
                .any(|p| known.contains_key(p) && !finished.contains(p));
            if waiting {
                continue;
            }
            let origin = if initial.contains(&shard.id) {
                from.clone()
            } else {
                StartFrom::TrimHorizon
            };
            started.insert(shard.id.clone());
            readers.spawn(read_shard(
                api.clone(),
                stream.to_string(),
                shard.id.clone(),
                origin,
                tx.clone(),
            ));
        }
    };
    start_ready(&known, &mut started, &finished, &mut readers);
    tracing::info!(
        "watching Kinesis stream {stream} ({} shard(s)) at {}; Ctrl-C prints the table",
        known.len(),
        api.url()
    );
    if let Some(tx) = hooks.subscribed.take() {
        // Give the readers a moment to take their iterators, so "latest" means from now.
        tokio::time::sleep(POLL_EVERY).await;
        let _ = tx.send(());
    }
    let mut acc = Accounting::default();
    let mut relist = tokio::time::interval(LIST_EVERY);
    relist.tick().await;
    tokio::pin!(stop);
    loop {
        tokio::select! {
            _ = &mut stop => break,
            Some(read) = rx.recv() => match read {
                Read::Records { shard, records } => {
                    let place = format!("{stream}/{shard}");
                    for data in records {
                        if record(&mut acc, &place, &data, json)
                            && let Some(tx) = &hooks.received
                        {
                            tx.send_modify(|n| *n += 1);
                        }
                    }
                }
                Read::Finished(shard) => {
                    finished.insert(shard);
                    relist.reset_immediately();
                }
            },
            _ = relist.tick() => match list_shards(api, stream).await {
                Ok(shards) => {
                    for shard in shards {
                        known.entry(shard.id.clone()).or_insert(shard);
                    }
                    start_ready(&known, &mut started, &finished, &mut readers);
                }
                Err(e) => tracing::warn!("watch: listing the shards of {stream}: {e}"),
            },
        }
    }
    readers.abort_all();
    Ok(acc)
}

/// Every shard of the stream, following NextToken.
async fn list_shards(api: &JsonApi, stream: &str) -> Result<Vec<Shard>, ApiError> {
    let mut shards = Vec::new();
    let mut next: Option<String> = None;
    loop {
        let body = match &next {
            None => json!({"StreamName": stream}),
            Some(token) => json!({"NextToken": token}),
        };
        let answer = api.call("ListShards", &body).await?;
        for s in answer
            .get("Shards")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let Some(id) = s.get("ShardId").and_then(Value::as_str) else {
                continue;
            };
            let parents = ["ParentShardId", "AdjacentParentShardId"]
                .iter()
                .filter_map(|k| s.get(*k).and_then(Value::as_str).map(String::from))
                .collect();
            shards.push(Shard {
                id: id.to_string(),
                parents,
            });
        }
        match answer.get("NextToken").and_then(Value::as_str) {
            Some(token) => next = Some(token.to_string()),
            None => return Ok(shards),
        }
    }
}

/// Reads one shard to its end (or forever, while it is open).
async fn read_shard(
    api: JsonApi,
    stream: String,
    shard: String,
    from: StartFrom,
    tx: mpsc::UnboundedSender<Read>,
) {
    let mut last_seq: Option<String> = None;
    let mut iterator: Option<String> = None;
    loop {
        let it = match iterator.take() {
            Some(it) => it,
            None => {
                let request = match &last_seq {
                    Some(seq) => json!({"StreamName": stream, "ShardId": shard,
                        "ShardIteratorType": "AFTER_SEQUENCE_NUMBER", "StartingSequenceNumber": seq}),
                    None => iterator_request(&from, &stream, &shard),
                };
                match api.call("GetShardIterator", &request).await {
                    Ok(v) => match v.get("ShardIterator").and_then(Value::as_str) {
                        Some(it) => it.to_string(),
                        None => {
                            let _ = tx.send(Read::Finished(shard));
                            return;
                        }
                    },
                    Err(e) => {
                        tracing::warn!("watch: shard {shard}: GetShardIterator: {e}");
                        tokio::time::sleep(BACK_OFF).await;
                        continue;
                    }
                }
            }
        };
        match api
            .call("GetRecords", &json!({"ShardIterator": &it, "Limit": 10000}))
            .await
        {
            Ok(v) => {
                let mut records = Vec::new();
                for r in v.get("Records").and_then(Value::as_array).into_iter().flatten() {
                    if let Some(seq) = r.get("SequenceNumber").and_then(Value::as_str) {
                        last_seq = Some(seq.to_string());
                    }
                    let data = r.get("Data").and_then(Value::as_str).unwrap_or_default();
                    match base64::engine::general_purpose::STANDARD.decode(data) {
                        Ok(bytes) => records.push(bytes),
                        Err(_) => records.push(data.as_bytes().to_vec()),
                    }
                }
                if !records.is_empty()
                    && tx
                        .send(Read::Records {
                            shard: shard.clone(),
                            records,
                        })
                        .is_err()
                {
                    return;
                }
                match v.get("NextShardIterator").and_then(Value::as_str) {
                    Some(next) => iterator = Some(next.to_string()),
                    None => {
                        let _ = tx.send(Read::Finished(shard));
                        return;
                    }
                }
                tokio::time::sleep(POLL_EVERY).await;
            }
            // Take a new iterator, after the last record read.
            Err(ApiError::Service { code, .. }) if code == "ExpiredIteratorException" => {}
            Err(e) => {
                if !e.retryable() {
                    tracing::warn!("watch: shard {shard}: GetRecords: {e}");
                }
                // Throttled or unreachable: the same iterator, a moment later.
                iterator = Some(it);
                tokio::time::sleep(BACK_OFF).await;
            }
        }
    }
}
