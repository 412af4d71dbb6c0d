//! Pass/fail verdicts for CI: each `--fail-if` threshold (parsed in
//! [`crate::config::threshold`]) is checked against the report at the end; each broken one is
//! a line with the measured value, and the run exits 3.

use super::{Figures, Report};
use crate::config::threshold::{Count, Hist, Metric, Op, Q, Ratio, Scope, Threshold};

/// A threshold the run broke, and what was measured.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Broken {
    pub threshold: String,
    pub measured: String,
}

impl Threshold {
    /// The measured value, or None when the report has no such sink or stage.
    fn measure(&self, r: &Report) -> Option<f64> {
        let f: &Figures = match &self.scope {
            Scope::Sink(s) => r.sinks.get(s)?,
            // A stage's name, or a `[[group]]`'s.
            Scope::Stage(s) => r.stages.get(s).or_else(|| r.groups.get(s))?,
            Scope::Run => &r.figures,
        };
        let m = &f.messages;
        Some(match self.metric {
            Metric::Latency(h, q) => {
                let l = match h {
                    Hist::Puback => &f.latency_ms.puback,
                    Hist::Lag => &f.latency_ms.lag,
                    Hist::Connect => &f.latency_ms.connect,
                };
                match q {
                    Q::P50 => l.p50,
                    Q::P90 => l.p90,
                    Q::P99 => l.p99,
                    Q::P999 => l.p999,
                    Q::Max => l.max,
                }
            }
            Metric::Count(c) => {
                (match c {
                    Count::Lost => m.failed + m.dropped,
                    Count::Failed => m.failed,
                    Count::Dropped => m.dropped,
                    Count::Taken => m.taken,
                    Count::Published => m.published,
                    Count::Acknowledged => m.acknowledged,
                    Count::Resent => m.resent,
                    Count::DevicesFailed => f.devices.counts.failed,
                    Count::DevicesConnected => f.devices.counts.connected,
                    Count::ConnectsFailed => f.connects.failed.values().sum(),
                }) as f64
            }
            Metric::Ratio(Ratio::ConnectFailed) => {
                let failed: u64 = f.connects.failed.values().sum();
                failed as f64 / f.connects.attempts.max(1) as f64
            }
            Metric::Ratio(Ratio::Lost) => (m.failed + m.dropped) as f64 / m.taken.max(1) as f64,
            Metric::Rate => f.rate.achieved,
        })
    }

    fn show(&self, v: f64) -> String {
        match self.metric {
            Metric::Latency(..) => format!("{v:.3} ms"),
            Metric::Ratio(_) => format!("{:.3}%", v * 100.0),
            Metric::Rate => format!("{v:.2}/s"),
            Metric::Count(_) => format!("{v:.0}"),
        }
    }

    /// The verdict on `r`: None when the threshold holds.
    pub fn check(&self, r: &Report) -> Option<Broken> {
        let Some(v) = self.measure(r) else {
            return Some(Broken {
                threshold: self.text.clone(),
                measured: "no such sink or stage in this run".into(),
            });
        };
        let broken = match self.op {
            Op::Gt => v > self.value,
            Op::Ge => v >= self.value,
            Op::Lt => v < self.value,
            Op::Le => v <= self.value,
            Op::Eq => v == self.value,
            Op::Ne => v != self.value,
        };
        broken.then(|| Broken {
            threshold: self.text.clone(),
            measured: self.show(v),
        })
    }
}
