//! Pass/fail thresholds for CI (`--fail-if 'puback.p99 > 250ms'`, repeatable, or `fail_if` in the
//! config file): checked against the report at the end; each broken one is a line with the
//! measured value, and the run exits 3.
//!
//! An expression is `[SINK.]METRIC OP VALUE`:
//! - latency, in a duration (`250ms`, `1s`, `800us`): `puback.p50|p90|p99|p999|max` (also
//!   `ack.…`), `lag.…`, `connect.…`;
//! - counts: `lost` (failed + dropped), `failed`, `dropped`, `taken`, `published`, `acknowledged`,
//!   `resent`, `devices.failed`, `devices.connected`, `connects.failed`;
//! - ratios, as a fraction or a percentage (`0.01`, `1%`): `connect.failed_ratio` (failed
//!   attempts / attempts), `lost_ratio` (lost / taken);
//! - `rate` (events per second achieved);
//! - `SINK.` picks one sink's figures (`kinesis.lost > 0`), `STAGE.` one scenario stage's
//!   (`spike.puback.p99 > 1s`); without either, the first sink's over the whole run.
//!
//! OP is one of `>`, `>=`, `<`, `<=`, `==`, `!=`.

use anyhow::Result;

use crate::input;

/// One threshold, parsed.
#[derive(Debug, Clone, PartialEq)]
pub struct Threshold {
    /// As the user wrote it.
    pub text: String,
    pub(crate) scope: Scope,
    pub(crate) metric: Metric,
    pub(crate) op: Op,
    pub(crate) value: f64,
}

/// Whose figures a threshold reads.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Scope {
    /// The first sink's, over the whole run.
    Run,
    Sink(String),
    /// A scenario stage's own.
    Stage(String),
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Metric {
    Latency(Hist, Q),
    Count(Count),
    Ratio(Ratio),
    Rate,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Hist {
    Puback,
    Lag,
    Connect,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Q {
    P50,
    P90,
    P99,
    P999,
    Max,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Count {
    Lost,
    Failed,
    Dropped,
    Taken,
    Published,
    Acknowledged,
    Resent,
    DevicesFailed,
    DevicesConnected,
    ConnectsFailed,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Ratio {
    ConnectFailed,
    Lost,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Op {
    Gt,
    Ge,
    Lt,
    Le,
    Eq,
    Ne,
}

const METRICS: &str = "puback.p99 (p50, p90, p999, max; lag., connect.), lost, failed, dropped, taken, published, \
                       acknowledged, resent, devices.failed, devices.connected, connects.failed, \
                       connect.failed_ratio, lost_ratio, rate";

fn metric(name: &str) -> Option<Metric> {
    use Count as C;
    let count = |c| Some(Metric::Count(c));
    match name {
        "lost" => count(C::Lost),
        "failed" => count(C::Failed),
        "dropped" => count(C::Dropped),
        "taken" => count(C::Taken),
        "published" => count(C::Published),
        "acknowledged" => count(C::Acknowledged),
        "resent" => count(C::Resent),
        "devices.failed" => count(C::DevicesFailed),
        "devices.connected" => count(C::DevicesConnected),
        "connects.failed" => count(C::ConnectsFailed),
        "connect.failed_ratio" => Some(Metric::Ratio(Ratio::ConnectFailed)),
        "lost_ratio" => Some(Metric::Ratio(Ratio::Lost)),
        "rate" => Some(Metric::Rate),
        _ => {
            let (h, q) = name.split_once('.')?;
            let h = match h {
                "puback" | "ack" => Hist::Puback,
                "lag" => Hist::Lag,
                "connect" => Hist::Connect,
                _ => return None,
            };
            let q = match q {
                "p50" => Q::P50,
                "p90" => Q::P90,
                "p99" => Q::P99,
                "p999" => Q::P999,
                "max" => Q::Max,
                _ => return None,
            };
            Some(Metric::Latency(h, q))
        }
    }
}

/// Parses one expression; `origin` names the flag or config key in errors.
pub fn parse(text: &str, origin: &str) -> Result<Threshold> {
    let bad = |why: &str| input!("{origin} '{text}': {why}");
    let ops = [
        (">=", Op::Ge),
        ("<=", Op::Le),
        ("==", Op::Eq),
        ("!=", Op::Ne),
        (">", Op::Gt),
        ("<", Op::Lt),
    ];
    let (at, op_text, op) = ops
        .iter()
        .filter_map(|(s, op)| text.find(s).map(|at| (at, *s, *op)))
        .min_by_key(|(at, s, _)| (*at, std::cmp::Reverse(s.len())))
        .ok_or_else(|| bad("no comparison; write e.g. 'puback.p99 > 250ms'"))?;
    let name = text[..at].trim();
    let value = text[at + op_text.len()..].trim();
    // `kinesis.lost`: a sink; `spike.puback.p99`: a stage; else the metric itself.
    let (scope, metric_name) = match name.split_once('.') {
        _ if metric(name).is_some() => (Scope::Run, name),
        Some((s, rest)) if super::SinkKind::ALL.iter().any(|k| k.name() == s) => {
            (Scope::Sink(s.to_string()), rest)
        }
        Some((s, rest)) if metric(rest).is_some() => (Scope::Stage(s.to_string()), rest),
        _ => (Scope::Run, name),
    };
    let metric = metric(metric_name)
        .ok_or_else(|| bad(&format!("unknown metric '{metric_name}'; known: {METRICS}")))?;
    let value = match metric {
        Metric::Latency(..) => {
            let d = humantime::parse_duration(value).map_err(|_| {
                bad(&format!(
                    "'{value}' is not a duration; give one with a unit, e.g. 250ms"
                ))
            })?;
            d.as_secs_f64() * 1000.0
        }
        Metric::Ratio(_) => match value.strip_suffix('%') {
            Some(p) => p.trim().parse::<f64>().map(|p| p / 100.0),
            None => value.parse::<f64>(),
        }
        .map_err(|_| bad(&format!("'{value}' is not a ratio; give e.g. 0.01 or 1%")))?,
        Metric::Count(_) | Metric::Rate => value
            .parse::<f64>()
            .map_err(|_| bad(&format!("'{value}' is not a number")))?,
    };
    Ok(Threshold {
        text: text.trim().to_string(),
        scope,
        metric,
        op,
        value,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expressions_parse_with_units_and_sinks() {
        let t = parse("puback.p99 > 250ms", "--fail-if").unwrap();
        assert_eq!(
            (t.metric, t.op, t.value),
            (Metric::Latency(Hist::Puback, Q::P99), Op::Gt, 250.0)
        );
        let t = parse("kinesis.lost>=1", "--fail-if").unwrap();
        assert_eq!(
            (t.scope, t.op, t.value),
            (Scope::Sink("kinesis".into()), Op::Ge, 1.0)
        );
        let t = parse("spike.puback.p99 > 1s", "--fail-if").unwrap();
        assert_eq!((t.scope, t.value), (Scope::Stage("spike".into()), 1000.0));
        assert_eq!(parse("connect.p99 > 1s", "x").unwrap().scope, Scope::Run);
        let t = parse("connect.failed_ratio > 1%", "--fail-if").unwrap();
        assert!((t.value - 0.01).abs() < 1e-12);
        assert_eq!(parse("lag.max <= 2s", "x").unwrap().value, 2000.0);
    }

    #[test]
    fn bad_expressions_say_what_is_wrong() {
        let e = |t: &str| parse(t, "--fail-if").unwrap_err().to_string();
        assert!(e("puback.p99 250ms").contains("no comparison"));
        assert!(e("pubak.p99 > 250ms").contains("unknown metric 'pubak.p99'"));
        assert!(e("puback.p99 > 250").contains("not a duration"));
        assert!(e("lost > many").contains("not a number"));
    }
}
