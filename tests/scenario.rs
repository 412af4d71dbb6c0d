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

/// One run of a fresh mosquitto, `devices` devices and the scenario `stages` (TOML), plus
/// `extra` flags; a subscriber has been listening on the events' topic since before the run.
struct Staged {
    code: i32,
    stderr: String,
    report: serde_json::Value,
    sub: Subscriber,
    _broker: Mosquitto,
    _pki: Pki,
}

fn run_stages(devices: usize, stages: &str, extra: &[&str]) -> Staged {
    let pki = Pki::new(devices);
    let broker = Mosquitto::start(&pki);
    let sub = Subscriber::start(&pki, broker.port, "freezers");
    let dir = tempfile::tempdir().unwrap();
    let scenario = dir.path().join("scenario.toml");
    write(&scenario, stages);
    let mut a = certs_args(&pki, broker.port);
    a.extend(["--scenario", &scenario.display().to_string()].map(String::from));
    a.extend(extra.iter().map(|s| s.to_string()));
    let (code, stderr, report) = run_report(&strs(&a), Duration::from_secs(90));
    Staged {
        code,
        stderr,
        report,
        sub,
        _broker: broker,
        _pki: pki,
    }
}

#[test]
fn stages_change_the_rate_at_the_broker_and_a_storm_brings_every_device_back() {
    let Staged {
        code,
        stderr,
        report,
        sub,
        _broker,
        _pki,
    } = run_stages(
        8,
        "[[stage]]\nname = \"slow\"\nduration = \"4s\"\nrate = 25\n\n\
         [[stage]]\nname = \"fast\"\nduration = \"4s\"\nrate = 75\n\n\
         [[stage]]\nname = \"storm\"\ndisconnect = \"all\"\n\n\
         [[stage]]\nname = \"soak\"\nduration = \"3s\"\nrate = 25\n\n\
         [[stage]]\nname = \"drain\"\n",
        &["--ramp-up", "4", "--fail-if", "fast.lost > 0"],
    );
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
    assert_eq!(storm["attempts"], 8, "each at its first attempt: {storm}");
    assert!(
        storm["peak_per_second"].as_u64().unwrap() <= 5,
        "within the ramp-up: {storm}"
    );
}

#[test]
fn a_ramp_raises_the_rate_across_its_stage() {
    let Staged {
        code,
        stderr,
        report,
        sub: _,
        _broker,
        _pki,
    } = run_stages(
        5,
        "[[stage]]\nname = \"ramp\"\nduration = \"6s\"\nrate = 10\nrate_to = 70\n",
        &[],
    );
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

#[test]
fn a_stage_sets_the_devices_connected_and_how_fast_they_come() {
    let Staged {
        code,
        stderr,
        report,
        sub,
        _broker,
        _pki,
    } = run_stages(
        20,
        "[[stage]]\nname = \"few\"\nduration = \"4s\"\nrate = 10\ndevices = 5\n\n\
         [[stage]]\nname = \"all\"\nduration = \"6s\"\ndevices = 20\nramp_up = 5\n\n\
         [[stage]]\nname = \"drain\"\n",
        &[],
    );
    assert_eq!(code, 0, "{stderr}");
    let rows = report["timeline"].as_array().unwrap();
    let in_stage = |name: &'static str| rows.iter().filter(move |r| r["stage"] == name);
    let few_peak = in_stage("few")
        .map(|r| r["devices_connected"].as_u64().unwrap())
        .max()
        .unwrap();
    assert_eq!(few_peak, 5, "only the first 5 connected: {rows:#?}");
    let all_peak = in_stage("all")
        .map(|r| r["devices_connected"].as_u64().unwrap())
        .max()
        .unwrap();
    assert_eq!(all_peak, 20, "all 20 connected in the second stage: {rows:#?}");
    for r in in_stage("all") {
        assert!(
            r["attempts"].as_u64().unwrap() <= 6,
            "at most ramp_up = 5 attempts a second: {r}"
        );
    }
    assert_eq!(num(&report, "/stages/all/connects/ok"), 15, "{report:#}");

    // Kept off in the first stage, the last 15 took no readings there: a few events each,
    // against the first 5's 2/s for 4 s and then their share of the rate.
    let published = num(&report, "/messages/published");
    assert_eq!(num(&report, "/messages/acknowledged"), published);
    assert_eq!(
        num(&report, "/messages/failed") + num(&report, "/devices/failed"),
        0
    );
    let events = sub.wait_for(published as usize, Duration::from_secs(10));
    assert_eq!(events.len() as u64, published, "every event arrived once");
    let mut per_device: BTreeMap<String, u64> = BTreeMap::new();
    for e in &events {
        *per_device
            .entry(e["device_id"].as_str().unwrap().into())
            .or_default() += 1;
    }
    let busy = per_device.values().filter(|&&n| n >= 9).count();
    let late = per_device.values().filter(|&&n| (1..=4).contains(&n)).count();
    assert_eq!((busy, late), (5, 15), "{per_device:?}");
    let rate = report["stages"]["few"]["rate"]["achieved"].as_f64().unwrap();
    assert!((rate - 10.0).abs() <= 1.0, "5 devices share 10/s: {rate}");
}

#[test]
fn churn_cycles_devices_at_its_rate_in_its_stage_only_and_loses_nothing() {
    let Staged {
        code,
        stderr,
        report,
        sub,
        _broker,
        _pki,
    } = run_stages(
        10,
        "[[stage]]\nname = \"churn\"\nduration = \"5s\"\nrate = 20\nchurn = \"4/s\"\n\n\
         [[stage]]\nname = \"calm\"\nduration = \"3s\"\n\n\
         [[stage]]\nname = \"drain\"\n",
        &[],
    );
    assert_eq!(code, 0, "{stderr}");
    let churn = &report["stages"]["churn"]["connects"];
    let cycles = churn["disconnects"].as_u64().unwrap();
    assert!((17..=20).contains(&cycles), "4/s for 5 s: {churn}");
    // Each device closed and came back (the first connections count in this stage too), each
    // at its first attempt.
    assert_eq!(churn["ok"].as_u64().unwrap(), 10 + cycles, "{churn}");
    assert_eq!(churn["attempts"], churn["ok"], "{churn}");
    assert_eq!(churn["reconnects"].as_u64().unwrap(), cycles, "{churn}");
    let calm = &report["stages"]["calm"]["connects"];
    assert_eq!(calm["disconnects"], 0, "churn lasts its own stage: {calm}");

    // A churning device closes after its acknowledgements: nothing lost, nothing sent twice.
    let published = num(&report, "/messages/published");
    assert_eq!(num(&report, "/messages/acknowledged"), published);
    assert_eq!(
        num(&report, "/messages/failed") + num(&report, "/messages/dropped"),
        0
    );
    let events = sub.wait_for(published as usize, Duration::from_secs(10));
    let unique: std::collections::BTreeSet<(String, u64)> = events
        .iter()
        .map(|e| {
            (
                e["device_id"].as_str().unwrap().to_string(),
                e["seq"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!((events.len() as u64, unique.len() as u64), (published, published));
    assert!(published >= 150, "about 20/s for 8 s: {published}");
}

#[test]
fn an_outage_keeps_every_device_off_and_its_readings_arrive_after_it() {
    let Staged {
        code,
        stderr,
        report,
        sub,
        _broker,
        _pki,
    } = run_stages(
        5,
        "[[stage]]\nname = \"before\"\nduration = \"2s\"\nrate = 10\n\n\
         [[stage]]\nname = \"outage\"\nduration = \"3s\"\ndisconnect = \"all\"\nthen_reconnect = false\n\n\
         [[stage]]\nname = \"after\"\nduration = \"3s\"\n\n\
         [[stage]]\nname = \"drain\"\n",
        &[],
    );
    assert_eq!(code, 0, "{stderr}");
    let rows = report["timeline"].as_array().unwrap();
    let off: Vec<u64> = rows
        .iter()
        .filter(|r| r["stage"] == "outage")
        .skip(1)
        .map(|r| r["devices_connected"].as_u64().unwrap())
        .collect();
    assert!(!off.is_empty() && off.iter().all(|&n| n == 0), "{rows:#?}");
    let outage = &report["stages"]["outage"];
    assert_eq!(outage["connects"]["disconnects"], 5, "{outage}");
    assert_eq!(outage["connects"]["attempts"], 0, "nobody tried: {outage}");
    let queued = outage["messages"]["queued_offline"].as_u64().unwrap();
    assert!(queued >= 25, "readings went on, queued: {outage}");
    assert_eq!(report["stages"]["after"]["connects"]["ok"], 5);

    let published = num(&report, "/messages/published");
    assert_eq!(num(&report, "/messages/acknowledged"), published);
    assert_eq!(
        num(&report, "/messages/failed") + num(&report, "/messages/dropped"),
        0
    );
    let events = sub.wait_for(published as usize, Duration::from_secs(10));
    assert_eq!(events.len() as u64, published, "every event arrived once");
    let starts = stage_starts(&stderr);
    let at = |name: &str| starts.iter().find(|(n, _)| n == name).map(|(_, t)| *t).unwrap();
    let during = events
        .iter()
        .filter(|e| (at("outage")..at("after")).contains(&e["ts"].as_u64().unwrap()))
        .count() as u64;
    assert!(
        during >= 25,
        "readings taken in the outage arrived after it: {during}"
    );
}
