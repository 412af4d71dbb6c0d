//! Payload templates (`--template`) against a real mosquitto: every generator, reproducible
//! with `--seed`, typed, per-device statics fixed, and the shipped examples valid.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::*;
use serde_json::Value;

const EVERY: &str = r#"{
  "device_id": "{{id}}", "seq": "{{seq}}", "ts": "{{ts_ms}}", "at": "{{ts_iso}}",
  "temperature": "{{freezer.temperature}}", "state": "{{freezer.state}}",
  "site": "{{pick:['north','south']}}", "fw": "{{static:'2.4.1'}}", "unit": "{{static:int:min=1,max=1000000}}",
  "vibration": "{{sin:period=2s,min=0,max=3}}", "battery": "{{decay:from=100,to=0,over=30d}}",
  "pos": "{{location:lat=52.5,lon=13.4,radius=5km}}", "uuid": "{{uuid}}",
  "reading": "{{float:min=0,max=1,precision=3}}", "count": "{{int:min=-5,max=5}}", "ok": "{{bool}}",
  "label": "unit {{id}} #{{seq}}"
}"#;

/// One run's payloads, by device, in seq order.
fn run_once(template: &str, seed: &str) -> BTreeMap<String, Vec<Value>> {
    let Setup { pki, broker, sub } = Setup::new(3);
    let mut args = certs_args(&pki, broker.port);
    args.extend(
        [
            "--interval",
            "100ms",
            "--count",
            "10",
            "--seed",
            seed,
            "--template",
            template,
        ]
        .map(String::from),
    );
    let (code, stderr, _) = run_to_end(&strs(&args), Duration::from_secs(30));
    assert_eq!(code, 0, "{stderr}");
    let mut by: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    for e in sub.wait_for(30, Duration::from_secs(10)) {
        by.entry(e["device_id"].as_str().unwrap().to_string())
            .or_default()
            .push(e);
    }
    for v in by.values_mut() {
        v.sort_by_key(|e| e["seq"].as_u64().unwrap());
    }
    by
}

/// The payload without what depends on the wall clock.
fn timeless(e: &Value) -> Value {
    let mut e = e.clone();
    let m = e.as_object_mut().unwrap();
    m.remove("ts");
    m.remove("at");
    e
}

#[test]
fn every_generator_reproducible_typed_and_fixed_per_device() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("every.json");
    std::fs::write(&path, EVERY).unwrap();
    let path = path.display().to_string();
    let a = run_once(&path, "21");
    let b = run_once(&path, "21");
    assert_eq!(a.len(), 3);
    for (id, events) in &a {
        assert_eq!(events.len(), 10, "{id}");
        let again: Vec<Value> = b[id].iter().map(timeless).collect();
        assert_eq!(
            events.iter().map(timeless).collect::<Vec<_>>(),
            again,
            "{id}: same seed, same payloads"
        );
        let first = &events[0];
        for e in events {
            // Numbers are JSON numbers, text is text, in the template's key order.
            assert!(
                e["seq"].is_u64() && e["ts"].is_u64() && e["count"].is_i64() && e["reading"].is_f64(),
                "{e}"
            );
            assert!(
                e["temperature"].is_f64() && e["ok"].is_boolean() && e["pos"]["lat"].is_f64(),
                "{e}"
            );
            assert_eq!(e["label"], format!("unit {id} #{}", e["seq"]));
            assert_eq!(
                (&e["fw"], &e["unit"], &e["pos"]),
                (&first["fw"], &first["unit"], &first["pos"]),
                "statics fixed per device"
            );
            let v = e["vibration"].as_f64().unwrap();
            assert!((0.0..=3.0).contains(&v), "{v}");
            assert!(e["at"].as_str().unwrap().ends_with('Z'));
        }
        let keys: Vec<&String> = first.as_object().unwrap().keys().collect();
        assert_eq!(keys.len(), 17);
        // The sinusoid moves over the run (period 2 s, 10 readings 100 ms apart).
        let vib: Vec<f64> = events.iter().map(|e| e["vibration"].as_f64().unwrap()).collect();
        assert!(
            vib.iter().cloned().fold(f64::MIN, f64::max) - vib.iter().cloned().fold(f64::MAX, f64::min) > 0.3,
            "{vib:?}"
        );
    }
    let units: std::collections::BTreeSet<String> = a.values().map(|e| e[0]["unit"].to_string()).collect();
    assert_eq!(units.len(), 3, "each device draws its own static");
    let c = run_once(&path, "22");
    assert_ne!(
        a["freezer1"].iter().map(timeless).collect::<Vec<_>>(),
        c["freezer1"].iter().map(timeless).collect::<Vec<_>>(),
        "another seed, other payloads"
    );
}

#[test]
fn the_shipped_templates_are_valid() {
    let root = env!("CARGO_MANIFEST_DIR");
    for name in ["freezer.json", "vehicle.json"] {
        let pki = Pki::new(1);
        let mut args = certs_args(&pki, 1);
        args.extend([
            "--check".to_string(),
            "--template".into(),
            format!("{root}/config/templates/{name}"),
        ]);
        let (code, stderr, _) = run_to_end(&strs(&args), Duration::from_secs(20));
        assert_eq!(code, 0, "{name}: {stderr}");
    }
}
