//! Past one process: shards of one fleet (`--shard I/N`, or Kubernetes' JOB_COMPLETION_INDEX),
//! and their reports merged exactly. Real mosquitto, real processes.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use base64::Engine as _;
use common::*;

/// A histogram of a report, decoded here, independently of the merge code.
fn histogram(report: &serde_json::Value, name: &str) -> hdrhistogram::Histogram<u64> {
    let b64 = report["histograms"][name].as_str().unwrap();
    let bytes = base64::engine::general_purpose::STANDARD.decode(b64).unwrap();
    hdrhistogram::serialization::Deserializer::new()
        .deserialize(&mut bytes.as_slice())
        .unwrap()
}

#[test]
fn two_shards_run_disjoint_halves_whose_events_and_merged_report_are_the_whole_fleets() {
    const N: usize = 40;
    let Setup { pki, broker, sub } = Setup::new(N);
    let dir = tempfile::tempdir().unwrap();
    let mut base = certs_args(&pki, broker.port);
    base.extend(["--interval", "200ms", "--count", "3", "--seed", "7"].map(String::from));

    // The whole fleet in one process: what the shards together must send.
    let (code, stderr, _) = run_to_end(&strs(&base), Duration::from_secs(60));
    assert_eq!(code, 0, "{stderr}");
    let whole: BTreeSet<_> = readings(&sub.wait_for(3 * N, Duration::from_secs(10)))
        .into_iter()
        .collect();
    assert_eq!(whole.len(), 3 * N);
    let before = sub.events().len();

    // Shard 0 by flag, shard 1 as a Kubernetes Indexed Job would start it.
    let report = |i: usize| dir.path().join(format!("shard{i}.json"));
    let mut a = base.clone();
    a.extend([
        "--shard".to_string(),
        "0/2".into(),
        "--report".into(),
        report(0).display().to_string(),
    ]);
    let mut b = base.clone();
    b.extend(["--report".to_string(), report(1).display().to_string()]);
    let env = [("JOB_COMPLETION_INDEX", "1"), ("FREEZER_FLEET_SHARDS", "2")]
        .map(|(k, v)| (k.to_string(), v.to_string()));
    let mut sharded = Vec::new();
    for (i, (args, env)) in [(&a, &[][..]), (&b, &env[..])].into_iter().enumerate() {
        let mut shard = Fleet::spawn_with_env(&strs(args), env);
        shard.close_stdin();
        let (code, stderr, _) = shard.finish(Duration::from_secs(60));
        assert_eq!(code, 0, "{stderr}");
        assert!(
            stderr.contains(&format!("shard {i}/2: 20 of the fleet's 40 device(s)")),
            "{stderr}"
        );
        let events = sub.wait_for(before + 3 * N / 2 * (i + 1), Duration::from_secs(10));
        let mine = &events[before + 3 * N / 2 * i..];
        // Shard 0 has freezer1, freezer3, …; shard 1 freezer2, freezer4, …: disjoint halves.
        for e in mine {
            let n: usize = e["device_id"].as_str().unwrap()["freezer".len()..]
                .parse()
                .unwrap();
            assert_eq!((n - 1) % 2, i, "{} in shard {i}", e["device_id"]);
        }
        sharded.extend_from_slice(mine);
    }
    assert_eq!(
        readings(&sharded).into_iter().collect::<BTreeSet<_>>(),
        whole,
        "the shards sent exactly what one process sent"
    );
    let ids = |r: &serde_json::Value| r["settings"]["devices"].as_u64().unwrap();
    let (ra, rb) = (report_json(&report(0)), report_json(&report(1)));
    assert_eq!((ids(&ra), ids(&rb)), (20, 20));

    // The merge: counts summed, percentiles of the union histogram.
    let merged_path = dir.path().join("fleet.json");
    let merge = [
        "report",
        "merge",
        &report(0).display().to_string(),
        &report(1).display().to_string(),
        "--out",
        &merged_path.display().to_string(),
    ]
    .map(String::from);
    let (code, stderr, _) = run_to_end(&strs(&merge), Duration::from_secs(20));
    assert_eq!(code, 0, "{stderr}");
    let merged = report_json(&merged_path);
    for key in [
        "/devices/target",
        "/devices/connected",
        "/messages/published",
        "/messages/acknowledged",
        "/connects/attempts",
    ] {
        assert_eq!(num(&merged, key), num(&ra, key) + num(&rb, key), "{key}");
    }
    assert_eq!(num(&merged, "/messages/acknowledged"), 3 * N as u64);
    let mut union = histogram(&ra, "puback");
    union.add(histogram(&rb, "puback")).unwrap();
    let ms = |us: u64| (us as f64 / 1000.0 * 1000.0).round() / 1000.0;
    assert_eq!(merged["latency_ms"]["puback"]["count"], union.len());
    assert_eq!(
        merged["latency_ms"]["puback"]["p99"],
        ms(union.value_at_quantile(0.99))
    );
    assert_eq!(
        merged["latency_ms"]["puback"]["p50"],
        ms(union.value_at_quantile(0.5))
    );

    // And the summary of a report file.
    let show = ["report", "show", &merged_path.display().to_string()].map(String::from);
    let (code, _, stdout) = run_to_end(&strs(&show), Duration::from_secs(20));
    assert_eq!(code, 0);
    assert!(
        stdout.contains("devices   40 connected, 0 failed (of 40)"),
        "{stdout}"
    );
}

fn report_json(path: &std::path::Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

#[test]
fn a_bad_shard_or_a_report_that_is_not_one_is_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let not_a_report = dir.path().join("x.json");
    std::fs::write(&not_a_report, "{\"hello\": 1}").unwrap();
    let (code, stderr, _) = run_to_end(
        &["report", "show", not_a_report.to_str().unwrap()],
        Duration::from_secs(20),
    );
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("not a freezer-fleet report"), "{stderr}");
    let pki = Pki::new(1);
    let mut args = certs_args(&pki, free_port());
    args.extend(["--shard", "2/2"].map(String::from));
    let (code, stderr, _) = run_to_end(&strs(&args), Duration::from_secs(20));
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("--shard: '2/2' is not a shard"), "{stderr}");
}

#[test]
fn start_at_starts_every_shards_schedule_at_one_instant() {
    const N: usize = 4;
    let Setup { pki, broker, sub } = Setup::new(N);
    let start = std::time::SystemTime::now() + Duration::from_secs(3);
    let start_ms = start.duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64;
    let at = humantime::format_rfc3339_millis(start).to_string();
    let mut shards = Vec::new();
    for i in 0..2 {
        let mut args = certs_args(&pki, broker.port);
        let shard = format!("{i}/2");
        args.extend(
            [
                "--shard",
                &shard,
                "--start-at",
                &at,
                "--interval",
                "500ms",
                "--count",
                "2",
            ]
            .map(String::from),
        );
        let mut fleet = Fleet::spawn(&strs(&args));
        fleet.close_stdin();
        shards.push(fleet);
    }
    for fleet in shards {
        let (code, stderr, _) = fleet.finish(Duration::from_secs(30));
        assert_eq!(code, 0, "{stderr}");
        // Devices connect at once; the time to connect counts from then, not from --start-at.
        let secs: f64 = stderr
            .split("device(s) connected in ")
            .nth(1)
            .and_then(|rest| rest.split(' ').next())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("no connect time: {stderr}"));
        assert!(secs > 0.0 && secs < 3.0, "connected in {secs} s: {stderr}");
    }
    let events = sub.wait_for(2 * N, Duration::from_secs(5));
    assert_eq!(events.len(), 2 * N);
    for e in &events {
        let ts = e["ts"].as_u64().unwrap();
        // Timers are spread over one interval from the start: the first events fall in
        // [start, start + 500 ms), the second ones 500 ms later.
        assert!(
            ts + 5 >= start_ms,
            "{} sent {} ms before --start-at",
            e["device_id"],
            start_ms - ts
        );
        assert!(
            ts < start_ms + 1500,
            "{} sent {} ms after --start-at",
            e["device_id"],
            ts - start_ms
        );
    }
    let firsts: Vec<u64> = events
        .iter()
        .filter(|e| e["seq"] == 1)
        .map(|e| e["ts"].as_u64().unwrap())
        .collect();
    assert!(
        firsts.iter().all(|ts| *ts < start_ms + 600),
        "{firsts:?} vs {start_ms}"
    );
}
