//! `--replay`: recorded rows sent to the devices they name, at their recorded offsets scaled by
//! `--speed`, with the time moved to now, against a real mosquitto.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::*;
use serde_json::Value;

/// Offsets (ms from the first row) per device; freezer9 is not in the fleet.
const ROWS: &[(&str, u64, f64)] = &[
    ("freezer1", 0, -18.2),
    ("freezer2", 300, -17.0),
    ("freezer3", 700, -19.5),
    ("freezer1", 1000, -18.1),
    ("freezer9", 1200, -5.0),
    ("freezer2", 2300, -17.2),
    ("freezer1", 2500, -18.0),
    ("freezer3", 3700, -19.4),
    ("freezer9", 3900, -5.1),
    ("freezer1", 4000, -17.9),
    ("freezer2", 6300, -17.1),
];

#[test]
fn a_csv_replays_at_its_recorded_gaps_over_speed_with_the_time_moved_to_now() {
    let Setup { pki, broker, sub } = Setup::new(3);
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("recorded.csv");
    let t0 = 1_700_000_000_000u64;
    let mut text = String::from("device_id,ts,temperature,site\n");
    for (id, off, temp) in ROWS {
        text.push_str(&format!("{id},{},{temp},north hall\n", t0 + off));
    }
    std::fs::write(&csv, text).unwrap();
    let mut args = certs_args(&pki, broker.port);
    args.extend([
        "--replay".to_string(),
        csv.display().to_string(),
        "--speed".into(),
        "10".into(),
    ]);
    let before = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as u64;
    // No --duration: the run ends when the recording is done.
    let (code, stderr, report) = run_report(&strs(&args), Duration::from_secs(30));
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stderr.contains("2 row(s) for 1 device(s) not in this fleet skipped (freezer9)"),
        "{stderr}"
    );
    assert_eq!(num(&report, "/settings/replay/skipped_rows"), 2, "{report}");
    assert_eq!(num(&report, "/messages/acknowledged"), 9);

    let events = sub.wait_for(9, Duration::from_secs(10));
    assert_eq!(events.len(), 9);
    let mut by: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    for e in &events {
        by.entry(e["device_id"].as_str().unwrap().to_string())
            .or_default()
            .push(e.clone());
    }
    assert!(!by.contains_key("freezer9"));
    for (id, evs) in &by {
        let recorded: Vec<(u64, f64)> = ROWS.iter().filter(|r| r.0 == id).map(|r| (r.1, r.2)).collect();
        assert_eq!(evs.len(), recorded.len(), "{id}");
        for (i, e) in evs.iter().enumerate() {
            // Columns become fields, numbers stay numbers; seq is the device's own.
            assert_eq!(e["seq"], i as u64 + 1, "{e}");
            assert_eq!(e["temperature"].as_f64(), Some(recorded[i].1), "{e}");
            assert_eq!(e["site"], "north hall");
            // The time is now, not 2023's.
            assert!(e["ts"].as_u64().unwrap() >= before, "{e}");
        }
        // The gaps are the recorded ones over 10, within a few milliseconds.
        for w in 1..evs.len() {
            let sent = evs[w]["ts"].as_u64().unwrap() as i64 - evs[w - 1]["ts"].as_u64().unwrap() as i64;
            let want = (recorded[w].0 - recorded[w - 1].0) as i64 / 10;
            assert!(
                (sent - want).abs() <= 15,
                "{id}: gap {sent} ms, recorded/10 = {want} ms"
            );
        }
    }
}

#[test]
fn json_lines_loop_until_the_duration() {
    let Setup { pki, broker, sub } = Setup::new(1);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("recorded.jsonl");
    std::fs::write(
        &file,
        "{\"sensor\":\"freezer1\",\"at\":\"2026-11-30T08:00:00Z\",\"t\":-18.5,\"ok\":true}\n\
         {\"sensor\":\"freezer1\",\"at\":\"2026-11-30T08:00:01Z\",\"t\":-18.4,\"ok\":false}\n",
    )
    .unwrap();
    let mut args = certs_args(&pki, broker.port);
    args.extend(
        [
            "--replay",
            &file.display().to_string(),
            "--replay-device-column",
            "sensor",
            "--replay-time-column",
            "at",
            "--replay-loop",
            "--speed",
            "4",
            "--duration",
            "3s",
        ]
        .map(String::from),
    );
    let (code, stderr, _) = run_report(&strs(&args), Duration::from_secs(30));
    assert_eq!(code, 0, "{stderr}");
    let events = sub.wait_for(5, Duration::from_secs(5));
    // 2 rows 250 ms apart, a pass every 500 ms, for 3 s: about 12, alternating.
    assert!((9..=14).contains(&events.len()), "{}", events.len());
    for (i, e) in events.iter().enumerate() {
        assert_eq!(e["device_id"], "freezer1");
        assert_eq!(e["sensor"], "freezer1");
        assert_eq!(e["seq"], i as u64 + 1);
        assert_eq!(
            e["t"].as_f64(),
            Some(if i % 2 == 0 { -18.5 } else { -18.4 }),
            "{e}"
        );
        assert!(
            e["at"].as_str().unwrap().starts_with("20")
                && !e["at"].as_str().unwrap().starts_with("2026-11-30T08")
        );
    }
}
