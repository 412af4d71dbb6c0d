//! Scenario stages against a real mosquitto: each stage's rate as the broker sees it, per-stage
//! figures in the report, nothing lost across stages, and a storm in which every device drops
//! its connection and comes back within the ramp-up limit.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::*;

/// The wall-clock millisecond at which each stage began, from the fleet's log lines.
fn stage_starts(stderr: &str) -> Vec<(String, u64)> {
    stderr
        .lines()
        .filter_map(|l| {
            let (time, rest) = l.split_once("  INFO stage ")?;
            let name = rest.split(':').next()?.to_string();
            let t = humantime::parse_rfc3339(time.trim()).ok()?;
            let ms = t.duration_since(std::time::UNIX_EPOCH).ok()?.as_millis() as u64;
            Some((name, ms))
        })
        .collect()
}

#[test]
fn stages_change_the_rate_at_the_broker_and_a_storm_brings_every_device_back() {
    let pki = Pki::new(8);
    let broker = Mosquitto::start(&pki);
    let sub = Subscriber::start(&pki, broker.port, "freezers");
    let dir = tempfile::tempdir().unwrap();
    let scenario = dir.path().join("scenario.toml");
    write(
        &scenario,
        "[[stage]]\nname = \"slow\"\nduration = \"4s\"\nrate = 25\n\n\
         [[stage]]\nname = \"fast\"\nduration = \"4s\"\nrate = 75\n\n\
         [[stage]]\nname = \"storm\"\ndisconnect = \"all\"\n\n\
         [[stage]]\nname = \"soak\"\nduration = \"3s\"\nrate = 25\n\n\
         [[stage]]\nname = \"drain\"\n",
    );
    let mut a = certs_args(&pki, broker.port);
    a.extend(
        [
            "--scenario",
            &scenario.display().to_string(),
            "--ramp-up",
            "4",
            "--fail-if",
            "fast.lost > 0",
        ]
        .map(String::from),
    );
    let (code, stderr, report) = run_report(&strs(&a), Duration::from_secs(90));
    assert_eq!(code, 0, "{stderr}");
    let stages = &report["stages"];
    for name in ["slow", "fast", "storm", "soak", "drain"] {
        assert!(stages[name].is_object(), "{name} has its own figures: {report:#}");
    }
    assert_eq!(
        report["settings"]["stages"],
        serde_json::json!(["slow", "fast", "storm", "soak", "drain"])
    );

    // Nothing lost across the stages: everything published was acknowledged and arrived once.
    let published = num(&report, "/messages/published");
    assert_eq!(num(&report, "/messages/acknowledged"), published);
    assert_eq!(
        num(&report, "/messages/failed") + num(&report, "/messages/dropped"),
        0
    );
    let events = sub.wait_for(published as usize, Duration::from_secs(10));
    assert_eq!(
        events.len() as u64,
        published,
        "the broker delivered every event once"
    );
    let per_stage: u64 = ["slow", "fast", "storm", "soak", "drain"]
        .iter()
        .map(|s| num(&report, &format!("/stages/{s}/messages/published")))
        .sum();
    assert_eq!(per_stage, published, "the stages add up to the run");

    // Each timed stage's rate, counted at the broker by the events' send times.
    let starts = stage_starts(&stderr);
    let at = |name: &str| starts.iter().find(|(n, _)| n == name).map(|(_, t)| *t).unwrap();
    let mut counts: BTreeMap<&str, u64> = BTreeMap::new();
    for e in &events {
        let ts = e["ts"].as_u64().unwrap();
        for (name, from, to) in [
            ("slow", at("slow"), at("fast")),
            ("fast", at("fast"), at("storm")),
            ("soak", at("soak"), at("drain")),
        ] {
            if (from..to).contains(&ts) {
                *counts.entry(name).or_default() += 1;
            }
        }
    }
    for (name, rate, secs) in [("slow", 25.0, 4.0), ("fast", 75.0, 4.0)] {
        let seen = counts[name] as f64 / secs;
        assert!(
            (seen - rate).abs() <= rate * 0.05 + 1.0,
            "{name}: {seen}/s at the broker, {rate}/s asked: {counts:?}"
        );
        let achieved = report["stages"][name]["rate"]["achieved"].as_f64().unwrap();
        assert!(
            (achieved - rate).abs() <= rate * 0.05 + 1.0,
            "{name}: the report says {achieved}/s"
        );
    }

    // The storm: every device dropped and came back, no faster than --ramp-up 4 a second.
    let storm = &report["stages"]["storm"]["connects"];
    assert_eq!(storm["disconnects"], 8, "{storm}");
    assert_eq!(storm["ok"], 8, "every device back: {storm}");
    assert!(
        storm["peak_per_second"].as_u64().unwrap() <= 5,
        "within the ramp-up: {storm}"
    );
}

#[test]
fn a_ramp_raises_the_rate_across_its_stage() {
    let pki = Pki::new(5);
    let broker = Mosquitto::start(&pki);
    let dir = tempfile::tempdir().unwrap();
    let scenario = dir.path().join("ramp.toml");
    write(
        &scenario,
        "[[stage]]\nname = \"ramp\"\nduration = \"6s\"\nrate = 10\nrate_to = 70\n",
    );
    let mut a = certs_args(&pki, broker.port);
    a.extend(["--scenario", &scenario.display().to_string()].map(String::from));
    let (code, stderr, report) = run_report(&strs(&a), Duration::from_secs(60));
    assert_eq!(code, 0, "{stderr}");
    let rows: Vec<u64> = report["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["stage"] == "ramp")
        .map(|r| r["published"].as_u64().unwrap())
        .collect();
    assert!(rows.len() >= 5, "{rows:?}");
    assert!(
        rows[0] < 25 && rows[rows.len() - 1] > 50,
        "from about 10/s up to about 70/s: {rows:?}"
    );
    let total = num(&report, "/stages/ramp/messages/published") as f64;
    assert!(
        (total - 240.0).abs() <= 24.0,
        "the mean of 10 and 70 over 6 s: {total}"
    );
}
