//! Prometheus metrics while running (`--metrics ADDR:PORT`, text format at `/metrics`), read
//! from the fleet's own counters and HDR histograms at each scrape, so nothing is counted twice.
//! Labels are `shard` and `sink` (the transport), never a device id (cardinality). Latency
//! histograms have buckets from 100 µs to 60 s.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Result;
use hdrhistogram::Histogram;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, MetricEncoder};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

use crate::input;
use crate::stats::Stats;

/// Bucket upper bounds in seconds: 100 µs doubling to about 52 s, then 60 s.
fn bounds() -> Vec<f64> {
    let mut b: Vec<f64> = (0..20).map(|i| 0.0001 * 2f64.powi(i)).collect();
    b.push(60.0);
    b
}

/// The labels every series carries.
pub type Labels = Vec<(String, String)>;

/// One sink's counters and its labels (`shard`, `sink`).
pub type SinkStats = (Labels, Arc<Stats>);

/// Every sink's series under one descriptor per metric, so several sinks (`--sink mqtt,kinesis`)
/// are one metric family with a `sink` label each.
/// The scenario's stages so far, shared with the stage runner: each stage's name and the first
/// sink's figures when it began (the last one is under way). Empty without stages.
pub type CurrentStage = Arc<std::sync::Mutex<Vec<StageMark>>>;

/// A stage's name and the figures when it began.
#[derive(Debug, Clone)]
pub struct StageMark {
    pub name: String,
    pub snapshot: crate::stats::Snapshot,
    pub latency: crate::stats::Latency,
}

#[derive(Debug)]
struct FleetCollector {
    sinks: Vec<SinkStats>,
    devices: usize,
    stage: CurrentStage,
}

impl FleetCollector {
    fn series<'a>(
        &'a self,
        enc: &'a mut DescriptorEncoder,
        name: &'a str,
        help: &str,
        kind: MetricType,
    ) -> Result<MetricEncoder<'a>, std::fmt::Error> {
        enc.encode_descriptor(name, help, None, kind)
    }
}

impl Collector for FleetCollector {
    fn encode(&self, mut enc: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let snapshots: Vec<(&Labels, crate::stats::Snapshot)> =
            self.sinks.iter().map(|(l, s)| (l, s.snapshot())).collect();
        self.encode_counts(&mut enc, &snapshots)?;
        self.encode_latency(&mut enc)?;
        self.encode_stage(&mut enc)?;
        self.encode_stages(&mut enc, snapshots.first().map(|(_, s)| s))
    }
}

impl FleetCollector {
    /// Devices, connections and events.
    fn encode_counts(
        &self,
        enc: &mut DescriptorEncoder,
        sinks: &[(&Labels, crate::stats::Snapshot)],
    ) -> Result<(), std::fmt::Error> {
        type Gauge = fn(&crate::stats::Snapshot, usize) -> i64;
        let gauges: [(&str, &str, Gauge); 2] = [
            ("freezer_fleet_devices", "Devices this process runs", |_, n| {
                n as i64
            }),
            (
                "freezer_fleet_devices_connected",
                "Devices connected now",
                |s, _| s.devices.online as i64,
            ),
        ];
        for (name, help, value) in gauges {
            let mut series = self.series(enc, name, help, MetricType::Gauge)?;
            for (labels, s) in sinks {
                series
                    .encode_family(*labels)?
                    .encode_gauge(&value(s, self.devices))?;
            }
        }
        type Count = fn(&crate::stats::Snapshot) -> u64;
        let counters: [(&str, &str, Count); 11] = [
            ("freezer_fleet_connection_attempts", "Connection attempts", |s| {
                s.connect_attempts_per_second.iter().sum()
            }),
            (
                "freezer_fleet_commands_received",
                "Commands devices received on freezers/<id>/cmd (--listen)",
                |s| s.commands.received,
            ),
            ("freezer_fleet_commands_answered", "Commands answered ok", |s| {
                s.commands.answered
            }),
            (
                "freezer_fleet_commands_refused",
                "Commands answered with ok: false",
                |s| s.commands.refused,
            ),
            (
                "freezer_fleet_shadow_deltas",
                "Device Shadow deltas received",
                |s| s.commands.shadow_deltas,
            ),
            (
                "freezer_fleet_shadow_reports",
                "Reports published to the devices' shadows",
                |s| s.commands.shadow_updates,
            ),
            (
                "freezer_fleet_events_taken",
                "Events the freezers produced",
                |s| s.messages.taken,
            ),
            (
                "freezer_fleet_events_published",
                "Events written to a connection",
                |s| s.messages.published,
            ),
            (
                "freezer_fleet_events_acknowledged",
                "Events the server acknowledged",
                |s| s.messages.acknowledged,
            ),
            ("freezer_fleet_events_failed", "Events never delivered", |s| {
                s.messages.failed
            }),
            (
                "freezer_fleet_events_dropped",
                "Events dropped from a full offline queue",
                |s| s.messages.dropped,
            ),
        ];
        for (name, help, value) in counters {
            let mut series = self.series(enc, name, help, MetricType::Counter)?;
            for (labels, s) in sinks {
                series
                    .encode_family(*labels)?
                    .encode_counter::<Labels, _, u64>(&value(s), None)?;
            }
        }
        let help = "Connection attempts that failed, by cause";
        let mut failures = self.series(
            enc,
            "freezer_fleet_connection_failures",
            help,
            MetricType::Counter,
        )?;
        for (labels, s) in sinks {
            for (cause, n) in &s.connect_failures {
                let mut with_cause = (*labels).clone();
                with_cause.push(("cause".into(), cause.clone()));
                failures
                    .encode_family(&with_cause)?
                    .encode_counter::<Labels, _, u64>(n, None)?;
            }
        }
        Ok(())
    }

    /// `freezer_fleet_stage{stage="…"} 1` for the stage under way, so PromQL can slice a run by
    /// stage.
    fn encode_stage(&self, enc: &mut DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let mut shard: Labels = self.sinks.first().map(|(l, _)| l.clone()).unwrap_or_default();
        shard.retain(|(k, _)| k == "shard");
        let cpu = crate::report::timeseries::cpu_seconds();
        let help = "CPU seconds this process used (rate() of it: the generator's own load)";
        self.series(
            enc,
            "freezer_fleet_process_cpu_seconds",
            help,
            MetricType::Counter,
        )?
        .encode_family(&shard)?
        .encode_counter::<Labels, _, f64>(&cpu, None)?;
        if let Some(q) = crate::sendq::latest() {
            for (name, help, value) in [
                (
                    "freezer_fleet_send_queue_bytes",
                    "Bytes in this process's TCP send queues (written, not yet acknowledged by the peer)",
                    q.total_bytes,
                ),
                (
                    "freezer_fleet_send_queue_max_bytes",
                    "Bytes in this process's longest TCP send queue",
                    q.max_bytes,
                ),
            ] {
                self.series(enc, name, help, MetricType::Gauge)?
                    .encode_family(&shard)?
                    .encode_gauge(&(value as i64))?;
            }
        }
        let marks = crate::stats::lock(&self.stage).clone();
        let Some(stage) = marks.last().map(|m| m.name.clone()) else {
            return Ok(());
        };
        let mut series = self.series(
            enc,
            "freezer_fleet_stage",
            "The scenario stage under way",
            MetricType::Gauge,
        )?;
        let mut labels = shard;
        labels.push(("stage".into(), stage));
        series.encode_family(&labels)?.encode_gauge(&1i64)?;
        Ok(())
    }

    /// Each stage's own figures (the first sink's), so a spike's p99 is not hidden by the soak
    /// around it: counters and the acknowledgement histogram under `freezer_fleet_stage_…`, with
    /// a `stage` label; a stage's series stop moving when it is over.
    fn encode_stages(
        &self,
        enc: &mut DescriptorEncoder,
        now: Option<&crate::stats::Snapshot>,
    ) -> Result<(), std::fmt::Error> {
        let marks = crate::stats::lock(&self.stage).clone();
        let (Some(now), Some((labels, first))) = (now, self.sinks.first()) else {
            return Ok(());
        };
        if marks.is_empty() {
            return Ok(());
        }
        let latency_now = first.latency();
        let stages: Vec<(Labels, crate::stats::Snapshot, crate::stats::Latency)> = marks
            .iter()
            .enumerate()
            .map(|(i, m)| {
                let (snapshot, latency) = match marks.get(i + 1) {
                    Some(next) => (&next.snapshot, &next.latency),
                    None => (now, &latency_now),
                };
                let mut l = labels.clone();
                l.push(("stage".into(), m.name.clone()));
                (l, snapshot.since(&m.snapshot), latency.since(&m.latency))
            })
            .collect();
        type Count = fn(&crate::stats::Snapshot) -> u64;
        let counters: [(&str, &str, Count); 6] = [
            (
                "freezer_fleet_stage_connection_attempts",
                "Connection attempts in the stage",
                |s| s.connect_attempts_per_second.iter().sum(),
            ),
            (
                "freezer_fleet_stage_disconnects",
                "Connections closed or lost in the stage",
                |s| s.connects.disconnects,
            ),
            (
                "freezer_fleet_stage_events_published",
                "Events written in the stage",
                |s| s.messages.published,
            ),
            (
                "freezer_fleet_stage_events_acknowledged",
                "Events acknowledged in the stage",
                |s| s.messages.acknowledged,
            ),
            (
                "freezer_fleet_stage_events_failed",
                "Events never delivered, counted in the stage",
                |s| s.messages.failed,
            ),
            (
                "freezer_fleet_stage_events_dropped",
                "Events dropped from a full offline queue in the stage",
                |s| s.messages.dropped,
            ),
        ];
        for (name, help, value) in counters {
            let mut series = self.series(enc, name, help, MetricType::Counter)?;
            for (labels, s, _) in &stages {
                series
                    .encode_family(labels)?
                    .encode_counter::<Labels, _, u64>(&value(s), None)?;
            }
        }
        let mut series = self.series(
            enc,
            "freezer_fleet_stage_ack_seconds",
            "Intended send time to acknowledgement, in the stage",
            MetricType::Histogram,
        )?;
        for (labels, _, latency) in &stages {
            let (sum, count, buckets) = buckets(&latency.puback);
            series
                .encode_family(labels)?
                .encode_histogram::<Labels>(sum, count, &buckets, None)?;
        }
        Ok(())
    }

    /// The latency histograms.
    fn encode_latency(&self, enc: &mut DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let latencies: Vec<(&Labels, crate::stats::Latency)> =
            self.sinks.iter().map(|(l, s)| (l, s.latency())).collect();
        type Pick = fn(&crate::stats::Latency) -> &Histogram<u64>;
        let histograms: [(&str, &str, Pick); 4] = [
            (
                "freezer_fleet_connect_seconds",
                "TCP + TLS + CONNACK per connection",
                |l| &l.connect,
            ),
            (
                "freezer_fleet_ack_seconds",
                "Intended send time to acknowledgement",
                |l| &l.puback,
            ),
            (
                "freezer_fleet_lag_seconds",
                "Intended send time to written",
                |l| &l.lag,
            ),
            (
                "freezer_fleet_timer_late_seconds",
                "How late device timers fired (the generator's own delay)",
                |l| &l.sched,
            ),
        ];
        for (name, help, pick) in histograms {
            let mut series = self.series(enc, name, help, MetricType::Histogram)?;
            for (labels, latency) in &latencies {
                let (sum, count, buckets) = buckets(pick(latency));
                series
                    .encode_family(*labels)?
                    .encode_histogram::<Labels>(sum, count, &buckets, None)?;
            }
        }
        Ok(())
    }
}

/// An HDR histogram in microseconds as Prometheus buckets in seconds (count per bucket).
fn buckets(h: &Histogram<u64>) -> (f64, u64, Vec<(f64, u64)>) {
    let bounds = bounds();
    let mut counts = vec![0u64; bounds.len() + 1];
    let mut sum = 0.0;
    for v in h.iter_recorded() {
        let seconds = h.highest_equivalent(v.value_iterated_to()) as f64 / 1e6;
        let n = v.count_at_value();
        sum += seconds * n as f64;
        let i = bounds.iter().position(|b| seconds <= *b).unwrap_or(bounds.len());
        counts[i] += n;
    }
    let mut out: Vec<(f64, u64)> = bounds.into_iter().zip(counts.iter().copied()).collect();
    out.push((f64::INFINITY, counts[counts.len() - 1]));
    (sum, h.len(), out)
}

/// Binds the metrics address, before the fleet starts, so a bad one is an input error.
pub async fn bind(addr: SocketAddr) -> Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| input!("--metrics {addr}: cannot listen there: {e}; pick another address or port"))
}

/// Serves `/metrics` on `listener` until the process ends: every sink's series.
pub fn serve(listener: tokio::net::TcpListener, sinks: Vec<SinkStats>, devices: usize, stage: CurrentStage) {
    let addr = listener.local_addr().map(|a| a.to_string()).unwrap_or_default();
    let mut registry = Registry::default();
    registry.register_collector(Box::new(FleetCollector {
        sinks,
        devices,
        stage,
    }));
    let registry = Arc::new(registry);
    tracing::info!("Prometheus metrics at http://{addr}/metrics");
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                continue;
            };
            let registry = registry.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |req| respond(req, registry.clone()));
                let io = hyper_util::rt::TokioIo::new(tcp);
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(io, service)
                    .await;
            });
        }
    });
}

async fn respond(
    req: hyper::Request<hyper::body::Incoming>,
    registry: Arc<Registry>,
) -> Result<hyper::Response<http_body_util::Full<bytes::Bytes>>, std::convert::Infallible> {
    let (status, body) = if req.uri().path() == "/metrics" {
        let mut text = String::new();
        match prometheus_client::encoding::text::encode(&mut text, &registry) {
            Ok(()) => (200, text),
            Err(_) => (500, "encoding failed\n".to_string()),
        }
    } else {
        (404, "see /metrics\n".to_string())
    };
    let response = hyper::Response::builder()
        .status(status)
        .header(
            "Content-Type",
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )
        .body(http_body_util::Full::new(bytes::Bytes::from(body)))
        .expect("a valid response");
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn the_text_format_carries_counters_gauges_and_histograms_with_shard_and_sink() {
        let stats = Arc::new(Stats::default());
        stats.messages.acknowledged.add(7);
        stats.record_puback(0, Duration::from_millis(3), false);
        stats.record_puback(1, Duration::from_secs(2), false);
        let mut registry = Registry::default();
        let labels = vec![
            ("shard".to_string(), "0/2".to_string()),
            ("sink".to_string(), "mqtt".to_string()),
        ];
        let kinesis = Arc::new(Stats::default());
        kinesis.messages.acknowledged.add(5);
        let kinesis_labels = vec![
            ("shard".to_string(), "0/2".to_string()),
            ("sink".to_string(), "kinesis".to_string()),
        ];
        registry.register_collector(Box::new(FleetCollector {
            sinks: vec![(labels, stats.clone()), (kinesis_labels, kinesis)],
            devices: 3,
            stage: Arc::new(std::sync::Mutex::new(vec![
                StageMark {
                    name: "soak".into(),
                    snapshot: crate::stats::Snapshot::default(),
                    latency: crate::stats::Latency::default(),
                },
                StageMark {
                    name: "spike".into(),
                    snapshot: stats.snapshot(),
                    latency: stats.latency(),
                },
            ])),
        }));
        // The spike began after the first 7 acknowledgements; 4 more come in it, one slow.
        stats.messages.acknowledged.add(4);
        stats.record_puback(2, Duration::from_secs(4), false);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        for (series, value) in [
            ("freezer_fleet_stage{shard=\"0/2\",stage=\"spike\"}", "1"),
            (
                "freezer_fleet_stage_events_acknowledged_total{shard=\"0/2\",sink=\"mqtt\",stage=\"soak\"}",
                "7",
            ),
            (
                "freezer_fleet_stage_events_acknowledged_total{shard=\"0/2\",sink=\"mqtt\",stage=\"spike\"}",
                "4",
            ),
            (
                "freezer_fleet_stage_ack_seconds_count{shard=\"0/2\",sink=\"mqtt\",stage=\"soak\"}",
                "2",
            ),
            (
                "freezer_fleet_stage_ack_seconds_count{shard=\"0/2\",sink=\"mqtt\",stage=\"spike\"}",
                "1",
            ),
        ] {
            assert!(
                text.contains(&format!("{series} {value}\n")),
                "{series} {value}: {text}"
            );
        }
        assert!(
            text.contains("freezer_fleet_send_queue_bytes{shard=\"0/2\"} "),
            "{text}"
        );
        assert!(
            text.contains("freezer_fleet_events_acknowledged_total{shard=\"0/2\",sink=\"mqtt\"} 11"),
            "{text}"
        );
        assert!(
            text.contains("freezer_fleet_devices{shard=\"0/2\",sink=\"mqtt\"} 3"),
            "{text}"
        );
        assert!(
            text.contains("freezer_fleet_events_acknowledged_total{shard=\"0/2\",sink=\"kinesis\"} 5"),
            "{text}"
        );
        assert_eq!(
            text.matches("# TYPE freezer_fleet_events_acknowledged counter")
                .count(),
            1,
            "one family for every sink: {text}"
        );
        assert!(
            text.contains("freezer_fleet_ack_seconds_count{shard=\"0/2\",sink=\"mqtt\"} 3"),
            "{text}"
        );
        // 3 ms is under the 3.2 ms bucket, 2 s under the 3.2768 s one.
        assert!(
            text.contains("freezer_fleet_ack_seconds_bucket{le=\"0.0032\",shard=\"0/2\",sink=\"mqtt\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("freezer_fleet_ack_seconds_bucket{le=\"+Inf\",shard=\"0/2\",sink=\"mqtt\"} 3"),
            "{text}"
        );
    }
}
