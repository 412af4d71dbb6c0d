//! `[[group]]` tables: a mixed fleet against a real mosquitto. Each group keeps its own
//! interval or rate, topic, QoS, fields and model, and the report has each group and the total.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::*;
use serde_json::Value;

fn counts(events: &[Value]) -> BTreeMap<String, usize> {
    let mut m = BTreeMap::new();
    for e in events {
        *m.entry(e["device_id"].as_str().unwrap().to_string()).or_default() += 1;
    }
    m
}

#[test]
fn two_groups_keep_their_own_rate_topic_and_fields_and_are_reported_apart() {
    let pki = Pki::new(6);
    let broker = Mosquitto::start(&pki);
    let old = Subscriber::start_as(&pki, broker.port, "freezers/old/+", "test-old");
    let new = Subscriber::start_as(&pki, broker.port, "freezers/new", "test-new");
    let config = pki.path().join("groups.toml");
    write(
        &config,
        &format!(
            r#"endpoint = "localhost"
port = {port}
ca = "{ca}"
certs = "{certs}"
duration = "4s"

[[group]]
name = "old"
devices = 2
interval = "500ms"
topic = "freezers/{{group}}/{{id}}"
qos = 0
fields = ["setpoint"]
model = {{ setpoint = -25.0 }}

[[group]]
name = "new"
devices = "3..6"
rate = 20
topic = "freezers/new"
fields = ["state"]
"#,
            port = broker.port,
            ca = pki.ca_pem().display(),
            certs = pki.devices().display()
        ),
    );
    let (code, stderr, report) = run_report(
        &["run", "--config", &config.display().to_string()],
        Duration::from_secs(40),
    );
    assert_eq!(code, 0, "{stderr}");

    // The broker saw each group on its own topic, at its own pace.
    let old_events = old.wait_for(16, Duration::from_secs(5));
    let new_events = new.wait_for(80, Duration::from_secs(5));
    let (o, n) = (counts(&old_events), counts(&new_events));
    assert_eq!(
        o.keys().map(String::as_str).collect::<Vec<_>>(),
        ["freezer1", "freezer2"],
        "{o:?}"
    );
    assert_eq!(
        n.keys().map(String::as_str).collect::<Vec<_>>(),
        ["freezer3", "freezer4", "freezer5", "freezer6"],
        "{n:?}"
    );
    // 4 s at one every 500 ms, and at one every 200 ms (20/s over 4 devices).
    assert!(o.values().all(|c| (7..=10).contains(c)), "{o:?}");
    assert!(n.values().all(|c| (17..=23).contains(c)), "{n:?}");
    assert!(
        old_events
            .iter()
            .all(|e| e["setpoint"] == -25.0 && e.get("state").is_none()),
        "{:?}",
        old_events[0]
    );
    assert!(
        new_events
            .iter()
            .all(|e| e["state"].is_string() && e.get("setpoint").is_none()),
        "{:?}",
        new_events[0]
    );

    // Each group on its own, and the total.
    let g = &report["groups"];
    let (op, np) = (
        num(g, "/old/messages/published"),
        num(g, "/new/messages/published"),
    );
    assert_eq!(op as usize, o.values().sum::<usize>(), "{g}");
    assert_eq!(np as usize, n.values().sum::<usize>(), "{g}");
    assert_eq!(num(&report, "/messages/published"), op + np);
    assert_eq!(
        num(g, "/old/messages/acknowledged"),
        0,
        "QoS 0: nothing to acknowledge"
    );
    assert_eq!(num(g, "/new/messages/acknowledged"), np, "QoS 1");
    assert_eq!(
        (num(g, "/old/devices/target"), num(g, "/new/devices/target")),
        (2, 4)
    );
    assert_eq!(g["old"]["rate"]["target"], 4.0);
    assert_eq!(g["new"]["rate"]["target"], 20.0);
    assert_eq!(report["rate"]["target"], 24.0);
    assert_eq!(report["settings"]["groups"], serde_json::json!(["old", "new"]));
    assert!(stderr.contains("group old: 2 of 2 devices connected"), "{stderr}");
    assert!(stderr.contains("group new: 4 of 4 devices connected"), "{stderr}");
}

#[test]
fn with_a_shared_certificate_each_group_names_its_devices() {
    let pki = Pki::new(1);
    let broker = Mosquitto::start(&pki);
    let sub = Subscriber::start(&pki, broker.port, "freezers");
    let (cert, key) = pki.device_files("freezer1");
    let config = pki.path().join("shared.toml");
    write(
        &config,
        &format!(
            "endpoint = \"localhost\"\nport = {}\nca = \"{}\"\ncert = \"{}\"\nkey = \"{}\"\ncount = 3\ninterval = \"100ms\"\n\n\
             [[group]]\nname = \"pumps\"\ndevices = 2\nid_prefix = \"pump-\"\n\n[[group]]\ndevices = 1\n",
            broker.port,
            pki.ca_pem().display(),
            cert.display(),
            key.display()
        ),
    );
    // A threshold on one group: pumps acknowledged 6 > 5 breaks it (exit 3); group2's 3 holds.
    let (code, stderr, report) = run_report(
        &[
            "run",
            "--config",
            &config.display().to_string(),
            "--fail-if",
            "pumps.acknowledged > 5",
            "--fail-if",
            "group2.acknowledged > 5",
        ],
        Duration::from_secs(30),
    );
    assert_eq!(code, 3, "{stderr}");
    assert_eq!(
        report["broken_thresholds"].as_array().unwrap().len(),
        1,
        "{report}"
    );
    assert!(
        report["broken_thresholds"][0]
            .to_string()
            .contains("pumps.acknowledged"),
        "{report}"
    );
    let c = counts(&sub.wait_for(9, Duration::from_secs(5)));
    assert_eq!(
        c,
        BTreeMap::from([("pump-1".into(), 3), ("pump-2".into(), 3), ("freezer3".into(), 3)])
    );
    assert_eq!(num(&report, "/groups/pumps/messages/acknowledged"), 6);
    assert_eq!(num(&report, "/groups/group2/messages/acknowledged"), 3);
}
