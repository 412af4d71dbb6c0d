//! Payload templates (`--template FILE.json`): a JSON document whose string values may be
//! generator expressions, parsed once and rendered per event.
//!
//! A string that is exactly one `{{…}}` becomes the generator's typed value (numbers stay
//! numbers); a string with `{{…}}` inside other text becomes text. Generators:
//! - the event: `id`, `seq`, `ts_ms`, `ts_iso`, `group`, and the freezer model's
//!   `freezer.temperature|humidity|state|setpoint|door_open|alarm`;
//! - random, from the device's seeded stream: `float:min=0,max=1,precision=3`,
//!   `int:min=0,max=10`, `bool` (or `bool:p=0.2`), `pick:['north','south']`, `uuid`;
//! - over simulated time: `sin:period=60s,min=0,max=3`, `decay:from=100,to=0,over=30d`;
//! - per device, fixed: `static:'2.4.1'` (or `static:<any generator>`, drawn once per device),
//!   `location:lat=52.5,lon=13.4,radius=5km` (a point within the radius, as `{"lat","lon"}`).
//!
//! Pure: no I/O here; the file is read by the config stage, which reports a bad template as one
//! line naming the file, the line and column, and the problem.

use std::fmt;

use rand::rngs::Xoshiro256PlusPlus;
use rand::{RngExt, SeedableRng};
use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Number, Value};

use super::Reading;

/// A parsed template.
#[derive(Debug, Clone, PartialEq)]
pub struct Template {
    root: Node,
    /// How many per-device values (statics, locations, phases) a device keeps.
    slots: usize,
}

#[derive(Debug, Clone, PartialEq)]
enum Node {
    Literal(Value),
    Gen(Gen),
    /// Text with generators inside.
    Text(Vec<Part>),
    /// Keys in the template's order.
    Object(Vec<(String, Node)>),
    Array(Vec<Node>),
}

#[derive(Debug, Clone, PartialEq)]
enum Part {
    Lit(String),
    Gen(Gen),
}

#[derive(Debug, Clone, PartialEq)]
enum Gen {
    Id,
    Seq,
    TsMs,
    TsIso,
    Group,
    Freezer(&'static str),
    Float {
        min: f64,
        max: f64,
        precision: u32,
    },
    Int {
        min: i64,
        max: i64,
    },
    Bool {
        p: f64,
    },
    Pick(Vec<Value>),
    Uuid,
    Sin {
        period_s: f64,
        min: f64,
        max: f64,
        slot: usize,
    },
    Decay {
        from: f64,
        to: f64,
        over_s: f64,
    },
    /// Drawn once per device.
    Static {
        inner: Box<Gen>,
        slot: usize,
    },
    Const(Value),
    Location {
        lat: f64,
        lon: f64,
        radius_m: f64,
        slot: usize,
    },
}

/// What an event offers a template.
pub struct Context<'a> {
    pub id: &'a str,
    pub group: &'a str,
    pub seq: u64,
    pub ts_ms: u64,
    /// Simulated seconds since the start.
    pub t: f64,
    pub reading: &'a Reading,
}

/// One device's state for a template: its random stream and its fixed values.
#[derive(Debug, Clone)]
pub struct DeviceState {
    rng: Xoshiro256PlusPlus,
    slots: Vec<Option<Value>>,
}

impl DeviceState {
    pub fn new(template: &Template, seed: u64, index: u64) -> DeviceState {
        DeviceState {
            rng: Xoshiro256PlusPlus::seed_from_u64(
                seed.rotate_left(41) ^ index.wrapping_mul(0xD6E8_FEB8_6659_FD93),
            ),
            slots: vec![None; template.slots],
        }
    }
}

/// A template error: where (a JSON path, and the expression) and what.
#[derive(Debug, Clone, PartialEq)]
pub struct TemplateError {
    /// The expression as written (to find its line and column in the file), if any.
    pub expr: Option<String>,
    pub path: String,
    pub why: String,
}

impl Template {
    /// Parses a template document (JSON text).
    pub fn parse(text: &str) -> Result<Template, (Option<(usize, usize)>, String)> {
        let raw: Raw =
            serde_json::from_str(text).map_err(|e| (Some((e.line(), e.column())), e.to_string()))?;
        let mut slots = 0;
        let root = build(raw, "$", &mut slots).map_err(|e| {
            let at = e.expr.as_deref().and_then(|x| line_col(text, x));
            (at, format!("{}: {}", e.path, e.why))
        })?;
        Ok(Template { root, slots })
    }

    /// The payload for one event.
    pub fn render(&self, ctx: &Context<'_>, dev: &mut DeviceState) -> Value {
        render(&self.root, ctx, dev)
    }
}

fn line_col(text: &str, needle: &str) -> Option<(usize, usize)> {
    let at = text.find(needle)?;
    let before = &text[..at];
    let line = before.matches('\n').count() + 1;
    let col = at - before.rfind('\n').map_or(0, |i| i + 1) + 1;
    Some((line, col))
}

/// The template as parsed, keys in order (serde_json's own maps sort them).
enum Raw {
    Value(Value),
    Object(Vec<(String, Raw)>),
    Array(Vec<Raw>),
}

impl<'de> de::Deserialize<'de> for Raw {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Raw, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Raw;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a JSON value")
            }
            fn visit_bool<E>(self, b: bool) -> Result<Raw, E> {
                Ok(Raw::Value(Value::Bool(b)))
            }
            fn visit_i64<E>(self, n: i64) -> Result<Raw, E> {
                Ok(Raw::Value(n.into()))
            }
            fn visit_u64<E>(self, n: u64) -> Result<Raw, E> {
                Ok(Raw::Value(n.into()))
            }
            fn visit_f64<E>(self, n: f64) -> Result<Raw, E> {
                Ok(Raw::Value(Number::from_f64(n).map_or(Value::Null, Value::Number)))
            }
            fn visit_str<E>(self, s: &str) -> Result<Raw, E> {
                Ok(Raw::Value(Value::String(s.to_string())))
            }
            fn visit_unit<E>(self) -> Result<Raw, E> {
                Ok(Raw::Value(Value::Null))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut a: A) -> Result<Raw, A::Error> {
                let mut v = Vec::new();
                while let Some(x) = a.next_element()? {
                    v.push(x);
                }
                Ok(Raw::Array(v))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut a: A) -> Result<Raw, A::Error> {
                let mut v: Vec<(String, Raw)> = Vec::new();
                while let Some((k, x)) = a.next_entry::<String, Raw>()? {
                    if v.iter().any(|(seen, _)| *seen == k) {
                        return Err(de::Error::custom(format!("the key \"{k}\" appears twice")));
                    }
                    v.push((k, x));
                }
                Ok(Raw::Object(v))
            }
        }
        d.deserialize_any(V)
    }
}

fn build(raw: Raw, path: &str, slots: &mut usize) -> Result<Node, TemplateError> {
    match raw {
        Raw::Object(entries) => entries
            .into_iter()
            .map(|(k, v)| build(v, &format!("{path}.{k}"), slots).map(|n| (k, n)))
            .collect::<Result<_, _>>()
            .map(Node::Object),
        Raw::Array(items) => items
            .into_iter()
            .enumerate()
            .map(|(i, v)| build(v, &format!("{path}[{i}]"), slots))
            .collect::<Result<_, _>>()
            .map(Node::Array),
        Raw::Value(Value::String(s)) if s.contains("{{") => string_node(&s, path, slots),
        Raw::Value(v) => Ok(Node::Literal(v)),
    }
}

fn string_node(s: &str, path: &str, slots: &mut usize) -> Result<Node, TemplateError> {
    let err = |expr: &str, why: String| TemplateError {
        expr: Some(expr.to_string()),
        path: path.to_string(),
        why,
    };
    let mut parts = Vec::new();
    let mut rest = s;
    while let Some(open) = rest.find("{{") {
        if open > 0 {
            parts.push(Part::Lit(rest[..open].to_string()));
        }
        let after = &rest[open + 2..];
        let close = after
            .find("}}")
            .ok_or_else(|| err(&rest[open..], "'{{' without its closing '}}'".into()))?;
        let expr = after[..close].trim();
        let g = parse_gen(expr, slots).map_err(|why| {
            err(
                &format!("{{{{{}", &after[..close]),
                format!("{{{{{expr}}}}}: {why}"),
            )
        })?;
        parts.push(Part::Gen(g));
        rest = &after[close + 2..];
    }
    if !rest.is_empty() {
        parts.push(Part::Lit(rest.to_string()));
    }
    Ok(match parts.as_slice() {
        [Part::Gen(g)] => Node::Gen(g.clone()),
        _ => Node::Text(parts),
    })
}

/// The generators' names, for messages.
const GENERATORS: &str = "id, seq, ts_ms, ts_iso, group, freezer.<field>, float, int, bool, pick, uuid, sin, decay, static, location";

fn parse_gen(expr: &str, slots: &mut usize) -> Result<Gen, String> {
    let (name, args) = match expr.split_once(':') {
        Some((n, a)) => (n.trim(), Some(a.trim())),
        None => (expr, None),
    };
    let mut slot = || {
        *slots += 1;
        *slots - 1
    };
    let no_args = |g: Gen| match args {
        None => Ok(g),
        Some(_) => Err(format!("{name} takes no arguments")),
    };
    match name {
        "id" => no_args(Gen::Id),
        "seq" => no_args(Gen::Seq),
        "ts_ms" => no_args(Gen::TsMs),
        "ts_iso" => no_args(Gen::TsIso),
        "group" => no_args(Gen::Group),
        "uuid" => no_args(Gen::Uuid),
        f if f.starts_with("freezer.") => {
            let field = match &f["freezer.".len()..] {
                "temperature" => "temperature",
                "humidity" => "humidity",
                "state" => "state",
                "setpoint" => "setpoint",
                "door_open" => "door_open",
                "alarm" => "alarm",
                other => {
                    return Err(format!(
                        "freezer.{other} is not a field of the model; use temperature, humidity, state, setpoint, door_open or alarm"
                    ));
                }
            };
            no_args(Gen::Freezer(field))
        }
        "float" => {
            let a = Args::parse(args, &["min", "max", "precision"])?;
            let (min, max) = (a.num("min", 0.0)?, a.num("max", 1.0)?);
            let precision = a.num("precision", 2.0)?;
            if min > max || !(0.0..=12.0).contains(&precision) || precision.fract() != 0.0 {
                return Err("needs min <= max and a whole precision from 0 to 12".into());
            }
            Ok(Gen::Float {
                min,
                max,
                precision: precision as u32,
            })
        }
        "int" => {
            let a = Args::parse(args, &["min", "max"])?;
            let (min, max) = (a.num("min", 0.0)?, a.num("max", 100.0)?);
            if min.fract() != 0.0 || max.fract() != 0.0 || min > max {
                return Err("needs whole numbers with min <= max".into());
            }
            Ok(Gen::Int {
                min: min as i64,
                max: max as i64,
            })
        }
        "bool" => {
            let a = Args::parse(args, &["p"])?;
            let p = a.num("p", 0.5)?;
            if !(0.0..=1.0).contains(&p) {
                return Err("p is a chance from 0 to 1".into());
            }
            Ok(Gen::Bool { p })
        }
        "pick" => {
            let list = args.ok_or("needs a list, e.g. pick:['north','south']")?;
            let json = list.replace('\'', "\"");
            match serde_json::from_str::<Value>(&json) {
                Ok(Value::Array(v)) if !v.is_empty() => Ok(Gen::Pick(v)),
                _ => Err(format!(
                    "'{list}' is not a list of values; write pick:['north','south'] or pick:[1,2,3]"
                )),
            }
        }
        "sin" => {
            let a = Args::parse(args, &["period", "min", "max"])?;
            let period_s = a.duration("period", 60.0)?;
            let (min, max) = (a.num("min", -1.0)?, a.num("max", 1.0)?);
            if min > max {
                return Err("needs min <= max".into());
            }
            Ok(Gen::Sin {
                period_s,
                min,
                max,
                slot: slot(),
            })
        }
        "decay" => {
            let a = Args::parse(args, &["from", "to", "over"])?;
            Ok(Gen::Decay {
                from: a.num("from", 100.0)?,
                to: a.num("to", 0.0)?,
                over_s: a.duration("over", 3600.0)?,
            })
        }
        "location" => {
            let a = Args::parse(args, &["lat", "lon", "radius"])?;
            let (lat, lon) = (a.num("lat", 0.0)?, a.num("lon", 0.0)?);
            if !(-90.0..=90.0).contains(&lat) || !(-180.0..=180.0).contains(&lon) {
                return Err("lat is -90 to 90 and lon -180 to 180".into());
            }
            Ok(Gen::Location {
                lat,
                lon,
                radius_m: a.distance("radius", 1000.0)?,
                slot: slot(),
            })
        }
        "static" => {
            let inner = args
                .ok_or("needs a value, e.g. static:'2.4.1', or a generator, e.g. static:int:min=1,max=9")?;
            let g = if let Some(lit) = inner.strip_prefix('\'').and_then(|s| s.strip_suffix('\'')) {
                Gen::Const(Value::String(lit.to_string()))
            } else if let Ok(v) = serde_json::from_str::<Value>(inner) {
                Gen::Const(v)
            } else {
                parse_gen(inner, slots)?
            };
            Ok(Gen::Static {
                inner: Box::new(g),
                slot: {
                    *slots += 1;
                    *slots - 1
                },
            })
        }
        "" => Err(format!("an empty expression; choose from {GENERATORS}")),
        other => Err(format!("'{other}' is not a generator; choose from {GENERATORS}")),
    }
}

/// `key=value,key=value` of a generator.
struct Args(Vec<(String, String)>);

impl Args {
    fn parse(args: Option<&str>, allowed: &[&str]) -> Result<Args, String> {
        let mut out = Vec::new();
        for part in args
            .unwrap_or("")
            .split(',')
            .map(str::trim)
            .filter(|p| !p.is_empty())
        {
            let (k, v) = part
                .split_once('=')
                .ok_or_else(|| format!("'{part}' is not key=value (keys: {})", allowed.join(", ")))?;
            let k = k.trim();
            if !allowed.contains(&k) {
                return Err(format!(
                    "'{k}' is not an argument here (keys: {})",
                    allowed.join(", ")
                ));
            }
            out.push((k.to_string(), v.trim().to_string()));
        }
        Ok(Args(out))
    }
    fn get(&self, k: &str) -> Option<&str> {
        self.0.iter().find(|(key, _)| key == k).map(|(_, v)| v.as_str())
    }
    fn num(&self, k: &str, default: f64) -> Result<f64, String> {
        match self.get(k) {
            None => Ok(default),
            Some(v) => v
                .parse::<f64>()
                .ok()
                .filter(|x| x.is_finite())
                .ok_or_else(|| format!("{k}={v} is not a number")),
        }
    }
    fn duration(&self, k: &str, default_s: f64) -> Result<f64, String> {
        match self.get(k) {
            None => Ok(default_s),
            Some(v) => humantime::parse_duration(v)
                .ok()
                .filter(|d| !d.is_zero())
                .map(|d| d.as_secs_f64())
                .ok_or_else(|| format!("{k}={v} is not a duration; write e.g. 60s, 2h or 30d")),
        }
    }
    fn distance(&self, k: &str, default_m: f64) -> Result<f64, String> {
        let Some(v) = self.get(k) else {
            return Ok(default_m);
        };
        let (num, factor) = if let Some(n) = v.strip_suffix("km") {
            (n, 1000.0)
        } else if let Some(n) = v.strip_suffix('m') {
            (n, 1.0)
        } else {
            (v, 1.0)
        };
        num.trim()
            .parse::<f64>()
            .ok()
            .filter(|x| x.is_finite() && *x >= 0.0)
            .map(|x| x * factor)
            .ok_or_else(|| format!("{k}={v} is not a distance; write e.g. 5km or 300m"))
    }
}

fn render(node: &Node, ctx: &Context<'_>, dev: &mut DeviceState) -> Value {
    match node {
        Node::Literal(v) => v.clone(),
        Node::Gen(g) => generate(g, ctx, dev),
        Node::Text(parts) => {
            let mut s = String::new();
            for p in parts {
                match p {
                    Part::Lit(l) => s.push_str(l),
                    Part::Gen(g) => match generate(g, ctx, dev) {
                        Value::String(x) => s.push_str(&x),
                        other => s.push_str(&other.to_string()),
                    },
                }
            }
            Value::String(s)
        }
        Node::Object(entries) => {
            // serde_json's map sorts keys; the payload is written in the template's order by
            // `to_bytes`, which walks the template again. Here the map is enough for values.
            let mut m = Map::new();
            for (k, n) in entries {
                m.insert(k.clone(), render(n, ctx, dev));
            }
            Value::Object(m)
        }
        Node::Array(items) => Value::Array(items.iter().map(|n| render(n, ctx, dev)).collect()),
    }
}

fn number(x: f64) -> Value {
    Number::from_f64(x).map_or(Value::Null, Value::Number)
}

fn round(x: f64, digits: u32) -> f64 {
    let f = 10f64.powi(digits as i32);
    (x * f).round() / f
}

fn generate(g: &Gen, ctx: &Context<'_>, dev: &mut DeviceState) -> Value {
    match g {
        Gen::Id => Value::String(ctx.id.to_string()),
        Gen::Seq => ctx.seq.into(),
        Gen::TsMs => ctx.ts_ms.into(),
        Gen::TsIso => Value::String(
            humantime::format_rfc3339_millis(
                std::time::UNIX_EPOCH + std::time::Duration::from_millis(ctx.ts_ms),
            )
            .to_string(),
        ),
        Gen::Group => Value::String(ctx.group.to_string()),
        Gen::Freezer(field) => {
            let r = ctx.reading;
            match *field {
                "temperature" => number(r.temperature),
                "humidity" => number(r.humidity),
                "state" => Value::String(r.state.name().into()),
                "setpoint" => number(r.setpoint),
                "door_open" => Value::Bool(r.door_open),
                _ => Value::Bool(r.alarm),
            }
        }
        Gen::Float { min, max, precision } => {
            let x = if min == max {
                *min
            } else {
                dev.rng.random_range(*min..*max)
            };
            number(round(x, *precision))
        }
        Gen::Int { min, max } => dev.rng.random_range(*min..=*max).into(),
        Gen::Bool { p } => Value::Bool(dev.rng.random_bool(*p)),
        Gen::Pick(list) => list[dev.rng.random_range(0..list.len())].clone(),
        Gen::Uuid => {
            let bytes: [u8; 16] = dev.rng.random();
            Value::String(uuid::Builder::from_random_bytes(bytes).into_uuid().to_string())
        }
        Gen::Sin {
            period_s,
            min,
            max,
            slot,
        } => {
            let phase = slot_value(dev, *slot, |rng| {
                number(rng.random_range(0.0..std::f64::consts::TAU))
            })
            .as_f64()
            .unwrap_or(0.0);
            let s = (ctx.t / period_s * std::f64::consts::TAU + phase).sin();
            number(round(min + (max - min) * (s + 1.0) / 2.0, 3))
        }
        Gen::Decay { from, to, over_s } => {
            let k = (ctx.t / over_s).clamp(0.0, 1.0);
            number(round(from + (to - from) * k, 3))
        }
        Gen::Const(v) => v.clone(),
        Gen::Static { inner, slot } => {
            if let Some(v) = &dev.slots[*slot] {
                return v.clone();
            }
            let v = generate(inner, ctx, dev);
            dev.slots[*slot] = Some(v.clone());
            v
        }
        Gen::Location {
            lat,
            lon,
            radius_m,
            slot,
        } => {
            let (lat, lon, radius) = (*lat, *lon, *radius_m);
            slot_value(dev, *slot, move |rng| {
                // Uniform over the disc: the distance grows with the square root.
                let d = radius * rng.random_range(0.0f64..1.0).sqrt();
                let bearing = rng.random_range(0.0..std::f64::consts::TAU);
                let dlat = d * bearing.cos() / 111_320.0;
                let dlon = d * bearing.sin() / (111_320.0 * lat.to_radians().cos().max(1e-6));
                serde_json::json!({"lat": round(lat + dlat, 6), "lon": round(lon + dlon, 6)})
            })
        }
    }
}

fn slot_value(
    dev: &mut DeviceState,
    slot: usize,
    make: impl FnOnce(&mut Xoshiro256PlusPlus) -> Value,
) -> Value {
    if dev.slots[slot].is_none() {
        let v = make(&mut dev.rng);
        dev.slots[slot] = Some(v);
    }
    dev.slots[slot].clone().unwrap_or(Value::Null)
}

/// The payload bytes in the template's key order, with `extra` keys (e.g. a fault mark) after
/// the top-level ones.
pub fn to_bytes(template: &Template, value: &Value, extra: &[(&str, Value)]) -> Vec<u8> {
    let mut out = String::new();
    write_ordered(&template.root, value, &mut out, extra);
    out.into_bytes()
}

fn write_ordered(node: &Node, value: &Value, out: &mut String, extra: &[(&str, Value)]) {
    match (node, value) {
        (Node::Object(entries), Value::Object(m)) => {
            out.push('{');
            let mut first = true;
            let keys = entries.iter().map(|(k, n)| (k.as_str(), Some(n)));
            for (k, n) in keys {
                if !first {
                    out.push(',');
                }
                first = false;
                out.push_str(&Value::String(k.to_string()).to_string());
                out.push(':');
                let v = m.get(k).unwrap_or(&Value::Null);
                match n {
                    Some(n) => write_ordered(n, v, out, &[]),
                    None => out.push_str(&v.to_string()),
                }
            }
            for (k, v) in extra {
                if !first {
                    out.push(',');
                }
                first = false;
                out.push_str(&Value::String(k.to_string()).to_string());
                out.push(':');
                out.push_str(&v.to_string());
            }
            out.push('}');
        }
        (Node::Array(items), Value::Array(vs)) => {
            out.push('[');
            for (i, (n, v)) in items.iter().zip(vs).enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_ordered(n, v, out, &[]);
            }
            out.push(']');
        }
        (_, v) => out.push_str(&v.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::freezer::State;

    const EVERY: &str = r#"{"device_id":"{{id}}","seq":"{{seq}}","ts":"{{ts_ms}}","at":"{{ts_iso}}",
      "temperature":"{{freezer.temperature}}","state":"{{freezer.state}}",
      "site":"{{pick:['north','south']}}","fw":"{{static:'2.4.1'}}","unit":"{{static:int:min=1,max=1000}}",
      "vibration":"{{sin:period=60s,min=0,max=3}}","battery":"{{decay:from=100,to=0,over=30d}}",
      "pos":"{{location:lat=52.5,lon=13.4,radius=5km}}","uuid":"{{uuid}}",
      "reading":"{{float:min=0,max=1,precision=3}}","count":"{{int:min=-5,max=5}}","ok":"{{bool:p=0.5}}",
      "label":"unit {{id}}/{{seq}}","nested":{"list":[1,"{{seq}}",{"k":"{{bool}}"}]}}"#;

    fn reading() -> Reading {
        Reading {
            temperature: -18.2,
            humidity: 60.0,
            state: State::Cooling,
            setpoint: -18.0,
            door_open: false,
            alarm: false,
        }
    }

    fn render_n(t: &Template, seed: u64, index: u64, n: u64) -> Vec<Value> {
        let mut dev = DeviceState::new(t, seed, index);
        let r = reading();
        (1..=n)
            .map(|seq| {
                let ctx = Context {
                    id: "freezer3",
                    group: "g",
                    seq,
                    ts_ms: 1_764_000_000_000 + seq,
                    t: seq as f64 * 7.0,
                    reading: &r,
                };
                t.render(&ctx, &mut dev)
            })
            .collect()
    }

    #[test]
    fn every_generator_typed_seeded_and_in_bounds() {
        let t = Template::parse(EVERY).unwrap();
        let a = render_n(&t, 9, 2, 200);
        assert_eq!(a, render_n(&t, 9, 2, 200), "same seed, same payloads");
        assert_ne!(a, render_n(&t, 9, 3, 200), "another device, another stream");
        let first = &a[0];
        assert_eq!(first["device_id"], "freezer3");
        assert!(
            first["seq"].is_u64() && first["ts"].is_u64(),
            "numbers stay numbers: {first}"
        );
        assert_eq!(first["temperature"], -18.2);
        assert_eq!(first["state"], "cooling");
        assert_eq!(first["label"], "unit freezer3/1");
        assert!(
            first["at"].as_str().unwrap().starts_with("2025-11-24T"),
            "{first}"
        );
        assert_eq!(first["nested"]["list"][1], 1);
        for v in &a {
            assert_eq!(v["fw"], "2.4.1");
            assert_eq!(v["unit"], first["unit"], "a static is drawn once per device");
            assert_eq!(v["pos"], first["pos"], "a location is fixed per device");
            let vib = v["vibration"].as_f64().unwrap();
            assert!((0.0..=3.0).contains(&vib), "{vib}");
            let r = v["reading"].as_f64().unwrap();
            assert!(
                (0.0..1.0).contains(&r) && (r * 1000.0).fract().abs() < 1e-9,
                "{r}"
            );
            assert!((-5..=5).contains(&v["count"].as_i64().unwrap()));
            assert!(v["ok"].is_boolean());
            assert!(["north", "south"].contains(&v["site"].as_str().unwrap()));
            assert_eq!(v["uuid"].as_str().unwrap().len(), 36);
        }
        let sites: std::collections::BTreeSet<_> = a.iter().map(|v| v["site"].to_string()).collect();
        assert_eq!(sites.len(), 2);
        let pos = &first["pos"];
        let (dlat, dlon) = (
            pos["lat"].as_f64().unwrap() - 52.5,
            pos["lon"].as_f64().unwrap() - 13.4,
        );
        let metres =
            ((dlat * 111_320.0).powi(2) + (dlon * 111_320.0 * 52.5f64.to_radians().cos()).powi(2)).sqrt();
        assert!(metres <= 5000.0, "{metres} m");
        // The battery decays linearly over 30 simulated days: 7 s in, still ~100.
        assert!(first["battery"].as_f64().unwrap() > 99.99);
    }

    #[test]
    fn key_order_is_the_templates_and_extra_keys_come_last() {
        let t = Template::parse(r#"{"z":"{{seq}}","a":{"y":1,"b":"{{id}}"}}"#).unwrap();
        let v = render_n(&t, 1, 0, 1).remove(0);
        let bytes = to_bytes(&t, &v, &[("fault", Value::String("duplicate".into()))]);
        assert_eq!(
            String::from_utf8(bytes).unwrap(),
            r#"{"z":1,"a":{"y":1,"b":"freezer3"},"fault":"duplicate"}"#
        );
    }

    #[test]
    fn a_bad_template_says_where_and_what() {
        let err = |t: &str| Template::parse(t).unwrap_err();
        assert_eq!(err("{\n  \"a\": \"{{wat}}\"\n}").0, Some((2, 9)));
        assert!(
            err("{\"a\":\"{{wat}}\"}")
                .1
                .contains("$.a: {{wat}}: 'wat' is not a generator")
        );
        assert!(
            err("{\"a\":\"{{float:min=2,max=1}}\"}")
                .1
                .contains("needs min <= max")
        );
        assert!(
            err("{\"a\":\"{{sin:period=soon}}\"}")
                .1
                .contains("period=soon is not a duration")
        );
        assert!(
            err("{\"a\":\"{{pick:north}}\"}")
                .1
                .contains("is not a list of values")
        );
        assert!(err("{\"a\":\"{{seq\"}").1.contains("without its closing"));
        assert!(
            err("{\"a\":\"{{freezer.colour}}\"}")
                .1
                .contains("freezer.colour is not a field")
        );
        assert!(
            err("{\"a\":\"{{int:min=1,stop=2}}\"}")
                .1
                .contains("'stop' is not an argument")
        );
        let (at, why) = err("{\"a\": 1,\n\"a\": 2}");
        assert!(why.contains("the key \"a\" appears twice"), "{why}");
        assert_eq!(at.map(|p| p.0), Some(2));
        assert!(err("{\"a\": }").0.is_some(), "JSON syntax errors have a position");
    }
}
