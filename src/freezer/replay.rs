//! Replay of recorded data (`--replay FILE`): a CSV with a header, or JSON lines. Each row is an
//! event for the device named in one column, sent at its recorded offset from the first row
//! (scaled by `--speed`), with its time column moved to now and `seq` the device's own. Columns
//! become fields, in the file's order; numbers stay numbers.
//!
//! Pure: the config stage reads the file and hands the text here; a row's payload is made by
//! [`Row::payload`].

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::Value;

/// One recorded row.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    /// From the first row of the file.
    pub offset: Duration,
    /// The columns, in the file's order (the time column's value replaced when sent).
    pub fields: Vec<(String, Value)>,
    /// Whether the time column held Unix milliseconds (else RFC 3339 text).
    pub ms: bool,
}

/// A parsed recording, by device.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Replay {
    pub by_device: BTreeMap<String, Vec<Row>>,
    /// The last row's offset: one pass of the file.
    pub span: Duration,
    pub rows: u64,
    pub time_column: String,
}

/// What a bad file looks like: the line (1-based, when known) and what is wrong.
pub type ReplayError = (Option<u64>, String);

impl Replay {
    /// Parses `text` (JSON lines when `jsonl`, else CSV with a header).
    pub fn parse(
        text: &str,
        jsonl: bool,
        device_column: &str,
        time_column: &str,
    ) -> Result<Replay, ReplayError> {
        let rows = if jsonl { json_lines(text)? } else { csv_rows(text)? };
        let mut out = Replay {
            time_column: time_column.to_string(),
            ..Default::default()
        };
        let mut first: Option<i64> = None;
        for (line, fields) in rows {
            let get = |name: &str| fields.iter().find(|(k, _)| k == name).map(|(_, v)| v);
            let device = match get(device_column) {
                Some(Value::String(s)) if !s.is_empty() => s.clone(),
                Some(Value::Number(n)) => n.to_string(),
                _ => {
                    return Err((
                        Some(line),
                        format!("no device in column '{device_column}'; name it with --replay-device-column"),
                    ));
                }
            };
            let (at_ms, ms) = match get(time_column) {
                Some(Value::Number(n)) => (n.as_f64().map(|x| x as i64), true),
                Some(Value::String(s)) => (
                    humantime::parse_rfc3339_weak(s)
                        .ok()
                        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                        .map(|d| d.as_millis() as i64),
                    false,
                ),
                _ => (None, true),
            };
            let at_ms = at_ms.ok_or_else(|| {
                (
                    Some(line),
                    format!(
                        "column '{time_column}' is not a time (Unix milliseconds, or RFC 3339 such as 2026-11-30T08:00:00Z); name the time column with --replay-time-column"
                    ),
                )
            })?;
            let origin = *first.get_or_insert(at_ms);
            if at_ms < origin {
                return Err((
                    Some(line),
                    format!("its time is before the first row's; sort the file by '{time_column}'"),
                ));
            }
            let offset = Duration::from_millis((at_ms - origin) as u64);
            out.span = out.span.max(offset);
            out.rows += 1;
            out.by_device
                .entry(device)
                .or_default()
                .push(Row { offset, fields, ms });
        }
        if out.rows == 0 {
            return Err((None, "no rows to replay".into()));
        }
        for rows in out.by_device.values_mut() {
            // Stable: rows at the same instant keep the file's order.
            rows.sort_by_key(|r| r.offset);
        }
        Ok(out)
    }
}

/// A file's rows: each with its line and its columns in order.
type Lines = Vec<(u64, Vec<(String, Value)>)>;

fn json_lines(text: &str) -> Result<Lines, ReplayError> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let n = i as u64 + 1;
        if line.trim().is_empty() {
            continue;
        }
        let fields = serde_json::from_str::<OrderedObject>(line)
            .map_err(|e| (Some(n), format!("not a JSON object ({e})")))?
            .0;
        out.push((n, fields));
    }
    Ok(out)
}

fn csv_rows(text: &str) -> Result<Lines, ReplayError> {
    let mut reader = csv::ReaderBuilder::new()
        .trim(csv::Trim::All)
        .from_reader(text.as_bytes());
    let header: Vec<String> = reader
        .headers()
        .map_err(|e| (Some(1), format!("no CSV header ({e})")))?
        .iter()
        .map(String::from)
        .collect();
    let mut out = Vec::new();
    for record in reader.records() {
        let record = record.map_err(|e| (e.position().map(|p| p.line()), format!("not a CSV row ({e})")))?;
        let line = record.position().map_or(0, |p| p.line());
        let fields = header.iter().cloned().zip(record.iter().map(cell)).collect();
        out.push((line, fields));
    }
    Ok(out)
}

/// A CSV cell as JSON: numbers stay numbers, true/false booleans, empty null, else text.
fn cell(s: &str) -> Value {
    if s.is_empty() {
        return Value::Null;
    }
    if let Ok(i) = s.parse::<i64>() {
        return i.into();
    }
    if let Ok(x) = s.parse::<f64>()
        && x.is_finite()
    {
        return serde_json::Number::from_f64(x).map_or(Value::Null, Value::Number);
    }
    match s {
        "true" => Value::Bool(true),
        "false" => Value::Bool(false),
        _ => Value::String(s.to_string()),
    }
}

/// A JSON object with its keys in the file's order.
struct OrderedObject(Vec<(String, Value)>);

impl<'de> serde::Deserialize<'de> for OrderedObject {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = OrderedObject;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, mut a: A) -> Result<OrderedObject, A::Error> {
                let mut v = Vec::new();
                while let Some(entry) = a.next_entry::<String, Value>()? {
                    v.push(entry);
                }
                Ok(OrderedObject(v))
            }
        }
        d.deserialize_map(V)
    }
}

impl Row {
    /// The payload: the row's fields in order, `seq` set to the device's, the time column moved
    /// to `now_ms`, and `device_id` added first when the file names devices otherwise.
    pub fn payload(&self, device_id: &str, seq: u64, now_ms: u64, time_column: &str) -> Vec<u8> {
        let mut out: Vec<(String, Value)> = Vec::with_capacity(self.fields.len() + 2);
        if !self.fields.iter().any(|(k, _)| k == "device_id") {
            out.push(("device_id".into(), Value::String(device_id.to_string())));
        }
        let mut has_seq = false;
        for (k, v) in &self.fields {
            let v = if k == time_column {
                if self.ms {
                    now_ms.into()
                } else {
                    Value::String(
                        humantime::format_rfc3339_millis(
                            std::time::UNIX_EPOCH + Duration::from_millis(now_ms),
                        )
                        .to_string(),
                    )
                }
            } else if k == "seq" {
                has_seq = true;
                seq.into()
            } else {
                v.clone()
            };
            out.push((k.clone(), v));
        }
        if !has_seq {
            let at = out
                .iter()
                .position(|(k, _)| k == "device_id")
                .map_or(0, |i| i + 1);
            out.insert(at, ("seq".into(), seq.into()));
        }
        let mut s = String::from("{");
        for (i, (k, v)) in out.iter().enumerate() {
            if i > 0 {
                s.push(',');
            }
            s.push_str(&Value::String(k.clone()).to_string());
            s.push(':');
            s.push_str(&v.to_string());
        }
        s.push('}');
        s.into_bytes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn as_map(fields: &[(String, Value)]) -> serde_json::Map<String, Value> {
        fields.iter().cloned().collect()
    }

    const CSV: &str = "device_id,ts,temperature,door,note\n\
freezer1,1764000000000,-18.2,false,ok\n\
freezer2,1764000000500,-17.9,true,\n\
freezer1,1764000002000,-18.0,false,door shut\n";

    #[test]
    fn csv_rows_by_device_with_offsets_and_types() {
        let r = Replay::parse(CSV, false, "device_id", "ts").unwrap();
        assert_eq!(r.rows, 3);
        assert_eq!(r.span, Duration::from_millis(2000));
        let f1 = &r.by_device["freezer1"];
        assert_eq!(
            f1.iter().map(|r| r.offset.as_millis()).collect::<Vec<_>>(),
            [0, 2000]
        );
        let m = as_map(&r.by_device["freezer2"][0].fields);
        assert_eq!(m["temperature"], -17.9);
        assert_eq!(m["door"], true);
        assert_eq!(m["note"], Value::Null);
        let p = String::from_utf8(f1[1].payload("freezer1", 7, 1_800_000_000_000, "ts")).unwrap();
        assert_eq!(
            p,
            r#"{"device_id":"freezer1","seq":7,"ts":1800000000000,"temperature":-18.0,"door":false,"note":"door shut"}"#
        );
    }

    #[test]
    fn json_lines_and_rfc3339_times() {
        let text = "{\"sensor\":\"a\",\"at\":\"2026-11-30T08:00:00Z\",\"t\":1}\n\n{\"sensor\":\"a\",\"at\":\"2026-11-30T08:00:01.5Z\",\"t\":2}\n";
        let r = Replay::parse(text, true, "sensor", "at").unwrap();
        let rows = &r.by_device["a"];
        assert_eq!(rows[1].offset, Duration::from_millis(1500));
        let p = String::from_utf8(rows[1].payload("a", 2, 0, "at")).unwrap();
        assert_eq!(
            p,
            r#"{"device_id":"a","seq":2,"sensor":"a","at":"1970-01-01T00:00:00.000Z","t":2}"#
        );
    }

    #[test]
    fn a_bad_file_names_the_line_and_the_fix() {
        let err = |t: &str, jsonl| Replay::parse(t, jsonl, "device_id", "ts").unwrap_err();
        assert_eq!(err("device,ts\nfreezer1,1\n", false).0, Some(2));
        assert!(
            err("device,ts\nfreezer1,1\n", false)
                .1
                .contains("--replay-device-column")
        );
        assert!(
            err("device_id,time\nfreezer1,1\n", false)
                .1
                .contains("--replay-time-column")
        );
        assert!(
            err("device_id,ts\nfreezer1,soon\n", false)
                .1
                .contains("is not a time")
        );
        let (line, why) = err("device_id,ts\nfreezer1,5\nfreezer1,3\n", false);
        assert_eq!((line, why.contains("sort the file")), (Some(3), true));
        assert_eq!(err("{\"device_id\":\"a\",\"ts\":1}\nnot json\n", true).0, Some(2));
        assert!(err("device_id,ts\n", false).1.contains("no rows"));
    }
}
