//! What `--faults` asks for, parsed: the chance of each data fault per event and its parameter.
//! The device's [`crate::device::faults::Injector`] acts on it.

use std::time::Duration;

/// What `--faults` asks for: each a probability per event (1/N), with its parameter.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct FaultSpec {
    /// The event is sent twice (same seq; the copy marked).
    pub duplicate: f64,
    /// The event is held and sent after the next one (the pair swapped).
    pub reorder: f64,
    /// The event is held back this long, then sent (its `ts` unchanged).
    pub late: Option<(f64, Duration)>,
    /// Each device's clock is off by a fixed amount within ± this.
    pub skew: Option<Duration>,
    /// The device goes offline this long (disconnects, queues its readings), then sends them in
    /// one burst.
    pub burst_after_offline: Option<(f64, Duration)>,
    /// An invalid JSON record is sent besides the event.
    pub malformed: f64,
}

/// The names `--faults` takes.
pub const KINDS: &str = "duplicate, reorder, late, skew, burst-after-offline, malformed";

impl FaultSpec {
    /// `duplicate=1/500,reorder=1/1000,late=1/2000:30s,skew=±2s,burst-after-offline=1/5000:20s,malformed=1/10000`.
    pub fn parse(text: &str) -> Result<FaultSpec, String> {
        let mut spec = FaultSpec::default();
        for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (kind, value) = part
                .split_once('=')
                .ok_or_else(|| format!("'{part}' has no value; write kind=1/N, e.g. duplicate=1/500"))?;
            let (kind, value) = (kind.trim(), value.trim());
            let with_duration = |v: &str| -> Result<(f64, Duration), String> {
                let (p, d) = v.split_once(':').ok_or_else(|| {
                    format!("{kind}={v}: give a chance and a duration, e.g. {kind}=1/2000:30s")
                })?;
                Ok((chance(kind, p)?, duration(kind, d)?))
            };
            match kind {
                "duplicate" => spec.duplicate = chance(kind, value)?,
                "reorder" => spec.reorder = chance(kind, value)?,
                "malformed" => spec.malformed = chance(kind, value)?,
                "late" => spec.late = Some(with_duration(value)?),
                "burst-after-offline" => spec.burst_after_offline = Some(with_duration(value)?),
                "skew" => {
                    let d = value.trim_start_matches('±').trim_start_matches("+-");
                    spec.skew = Some(duration(kind, d)?);
                }
                other => return Err(format!("'{other}' is not a fault; choose from {KINDS}")),
            }
        }
        Ok(spec)
    }

    pub fn is_none(&self) -> bool {
        *self == FaultSpec::default()
    }
}

fn chance(kind: &str, v: &str) -> Result<f64, String> {
    let v = v.trim();
    let p = match v.split_once('/') {
        Some((a, b)) => match (a.trim().parse::<f64>(), b.trim().parse::<f64>()) {
            (Ok(a), Ok(b)) if b > 0.0 => a / b,
            _ => f64::NAN,
        },
        None => v.parse::<f64>().unwrap_or(f64::NAN),
    };
    if !(p > 0.0 && p <= 1.0) {
        return Err(format!(
            "{kind}={v}: give a chance per event above 0 and at most 1, as 1/N (e.g. 1/500) or a fraction (0.002)"
        ));
    }
    Ok(p)
}

fn duration(kind: &str, v: &str) -> Result<Duration, String> {
    humantime::parse_duration(v.trim())
        .ok()
        .filter(|d| !d.is_zero())
        .ok_or_else(|| {
            format!(
                "{kind}: '{}' is not a duration; write e.g. 30s or 500ms",
                v.trim()
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_kind_and_names_what_is_wrong() {
        let s = FaultSpec::parse("duplicate=1/500, reorder=1/1000,late=1/2000:30s,skew=±2s,burst-after-offline=1/5000:20s,malformed=0.0001").unwrap();
        assert_eq!(s.duplicate, 0.002);
        assert_eq!(s.reorder, 0.001);
        assert_eq!(s.late, Some((0.0005, Duration::from_secs(30))));
        assert_eq!(s.skew, Some(Duration::from_secs(2)));
        assert_eq!(s.burst_after_offline, Some((0.0002, Duration::from_secs(20))));
        assert_eq!(s.malformed, 0.0001);
        let err = |t: &str| FaultSpec::parse(t).unwrap_err();
        assert!(err("dupe=1/5").contains("'dupe' is not a fault"));
        assert!(err("duplicate").contains("has no value"));
        assert!(err("duplicate=1/0").contains("above 0 and at most 1"));
        assert!(err("duplicate=2").contains("above 0 and at most 1"));
        assert!(err("late=1/10").contains("give a chance and a duration"));
        assert!(err("skew=soon").contains("'soon' is not a duration"));
    }
}
