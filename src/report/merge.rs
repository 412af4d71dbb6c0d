//! `report merge`: reports of the shards of one fleet (or of several runs side by side) added up
//! exactly. Counts are summed, and the latency histograms are decoded, added and encoded again,
//! so the merged percentiles are those of one histogram holding every shard's samples, not an
//! average of averages.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::Result;
use base64::Engine as _;
use hdrhistogram::Histogram;
use hdrhistogram::serialization::Deserializer;

use super::{Figures, LatencyMs, Report, encode, round2};
use crate::error::io_cause;
use crate::input;
use crate::stats::{self, CauseCount, Quantiles};

/// Reads a JSON report written with `--report`.
pub fn read(path: &Path) -> Result<Report> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| input!("{}: cannot read: {}", path.display(), io_cause(&e, false)))?;
    serde_json::from_str(&text).map_err(|e| {
        input!(
            "{}: not a freezer-fleet report ({e}); give files written with `run --report FILE`",
            path.display()
        )
    })
}

/// One report of all of `reports`.
pub fn merge(path_and_reports: Vec<(String, Report)>) -> Result<Report> {
    let count = path_and_reports.len();
    let mut parts = path_and_reports.into_iter();
    let Some((first, mut total)) = parts.next() else {
        return Err(input!(
            "report merge: no report given; name two or more report files"
        ));
    };
    let mut top = Sum::new(&first, total.figures.clone())?;
    let mut sinks = BTreeMap::new();
    for (name, f) in &total.sinks {
        sinks.insert(name.clone(), Sum::new(&first, f.clone())?);
    }
    let mut stages = BTreeMap::new();
    for (name, f) in &total.stages {
        stages.insert(name.clone(), Sum::new(&first, f.clone())?);
    }
    let mut groups = BTreeMap::new();
    for (name, f) in &total.groups {
        groups.insert(name.clone(), Sum::new(&first, f.clone())?);
    }
    for (path, r) in parts {
        top.add(&path, &r.figures)?;
        for (group, theirs) in [
            (&mut sinks, &r.sinks),
            (&mut stages, &r.stages),
            (&mut groups, &r.groups),
        ] {
            for (name, f) in theirs {
                match group.get_mut(name) {
                    Some(sum) => sum.add(&path, f)?,
                    None => {
                        group.insert(name.clone(), Sum::new(&path, f.clone())?);
                    }
                }
            }
        }
        total.duration_s = total.duration_s.max(r.duration_s);
        total.running_s = total.running_s.max(r.running_s);
        total.settings.devices += r.settings.devices;
        add_timeline(&mut total.timeline, &r.timeline);
    }
    total.figures = top.finish();
    total.sinks = sinks.into_iter().map(|(k, s)| (k, s.finish())).collect();
    total.stages = stages.into_iter().map(|(k, s)| (k, s.finish())).collect();
    total.groups = groups.into_iter().map(|(k, s)| (k, s.finish())).collect();
    total.settings.shard = Some(format!("merged from {count} reports"));
    Ok(total)
}

/// Figures being added up, with their histograms decoded.
struct Sum {
    figures: Figures,
    histograms: BTreeMap<String, Histogram<u64>>,
}

impl Sum {
    fn new(origin: &str, figures: Figures) -> Result<Sum> {
        let histograms = decode_all(origin, &figures)?;
        Ok(Sum { figures, histograms })
    }

    fn add(&mut self, origin: &str, r: &Figures) -> Result<()> {
        add_counts(&mut self.figures, r);
        for (name, h) in decode_all(origin, r)? {
            let sum = self.histograms.entry(name).or_insert_with(stats::histogram);
            sum.add(&h)
                .map_err(|e| input!("{origin}: a histogram cannot be added ({e:?})"))?;
        }
        Ok(())
    }

    fn finish(mut self) -> Figures {
        let q = |name: &str| self.histograms.get(name).map(Quantiles::of).unwrap_or_default();
        self.figures.latency_ms = LatencyMs {
            connect: q("connect"),
            puback: q("puback"),
            lag: q("lag"),
            sched: q("sched"),
            connect_phase: super::ConnectPhase {
                puback: q("puback_connecting"),
                lag: q("lag_connecting"),
            },
        };
        self.figures.histograms = self
            .histograms
            .iter()
            .filter_map(|(k, h)| encode(h).map(|b| (k.clone(), b)))
            .collect();
        self.figures.outages.waited_ms = q("lag_outage");
        let c = &mut self.figures.connects;
        c.peak_per_second = c.per_second.iter().copied().max().unwrap_or(0);
        self.figures
    }
}

/// Adds every count of `r` to `total`.
fn add_counts(total: &mut Figures, r: &Figures) {
    let (d, c) = (&mut total.devices, &mut total.connects);
    d.target += r.devices.target;
    d.counts.add(&r.devices.counts);
    total.messages.add(&r.messages);
    c.attempts += r.connects.attempts;
    c.counts.add(&r.connects.counts);
    total.commands.add(&r.commands);
    total.faults.add(&r.faults);
    total.outages.absorb(&r.outages);
    add_map(&mut c.failed, &r.connects.failed);
    if c.per_second.len() < r.connects.per_second.len() {
        c.per_second.resize(r.connects.per_second.len(), 0);
    }
    for (sum, add) in c.per_second.iter_mut().zip(&r.connects.per_second) {
        *sum += add;
    }
    add_map(&mut total.errors, &r.errors);
    add_map(&mut total.refusals, &r.refusals);
    CauseCount::add_all(&mut total.device_failures, &r.device_failures);
    CauseCount::add_all(&mut total.suspected, &r.suspected);
    total.rate.achieved = round2(total.rate.achieved + r.rate.achieved);
    total.rate.target = match (total.rate.target, r.rate.target) {
        (Some(a), Some(b)) => Some(round2(a + b)),
        (a, b) => a.or(b),
    };
}

/// Second by second: counts added, each second's percentiles the worst shard's (a per-second
/// percentile of several shards is not kept exactly; the totals above are).
fn add_timeline(total: &mut Vec<super::timeseries::Row>, add: &[super::timeseries::Row]) {
    if total.len() < add.len() {
        total.resize(add.len(), Default::default());
    }
    for (t, a) in total.iter_mut().zip(add) {
        t.elapsed_s = t.elapsed_s.max(a.elapsed_s);
        if t.stage.is_empty() {
            t.stage = a.stage.clone();
        }
        t.devices_connected += a.devices_connected;
        t.attempts += a.attempts;
        t.published += a.published;
        t.acknowledged += a.acknowledged;
        t.failed += a.failed;
        t.dropped += a.dropped;
        t.in_flight += a.in_flight;
        t.puback_p50_ms = t.puback_p50_ms.max(a.puback_p50_ms);
        t.puback_p99_ms = t.puback_p99_ms.max(a.puback_p99_ms);
        t.lag_p99_ms = t.lag_p99_ms.max(a.lag_p99_ms);
    }
}

fn add_map(total: &mut BTreeMap<String, u64>, add: &BTreeMap<String, u64>) {
    for (k, v) in add {
        *total.entry(k.clone()).or_default() += v;
    }
}

/// The histograms of a report, decoded.
pub(crate) fn decode_all(origin: &str, r: &Figures) -> Result<BTreeMap<String, Histogram<u64>>> {
    r.histograms
        .iter()
        .map(|(name, b64)| {
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(b64)
                .map_err(|_| input!("{origin}: histogram '{name}' is not base64"))?;
            let h: Histogram<u64> = Deserializer::new()
                .deserialize(&mut bytes.as_slice())
                .map_err(|e| input!("{origin}: histogram '{name}' cannot be decoded ({e:?})"))?;
            Ok((name.clone(), h))
        })
        .collect()
}
