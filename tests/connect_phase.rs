//! The connect phase apart from the steady state: events meant for before their device's first
//! CONNACK are reported on their own, so the steady state's percentiles are not the ramp-up's.

mod common;

use std::time::Duration;

use common::*;

#[test]
fn events_that_waited_for_the_first_connection_are_reported_apart() {
    let Setup {
        pki,
        broker,
        sub: _sub,
    } = Setup::new(4);
    // The devices cannot connect for the first 2 s (an outage from the start), then run.
    let scenario = pki.path().join("late-start.toml");
    write(
        &scenario,
        "[[stage]]\nname = \"down\"\nduration = \"2s\"\ndisconnect = \"all\"\nthen_reconnect = false\n\n\
         [[stage]]\nname = \"up\"\nduration = \"3s\"\n\n[[stage]]\nname = \"drain\"\n",
    );
    let mut args = certs_args(&pki, broker.port);
    args.extend(
        [
            "--interval",
            "100ms",
            "--scenario",
            &scenario.display().to_string(),
        ]
        .map(String::from),
    );
    let (code, stderr, report) = run_report(&strs(&args), Duration::from_secs(40));
    assert_eq!(code, 0, "{stderr}");
    let l = &report["latency_ms"];
    let waited = num(l, "/connect_phase/puback/count");
    let steady = num(l, "/puback/count");
    // About 2 s × 10/s × 4 devices waited; the rest came in the steady state.
    assert!((60..=90).contains(&waited), "{l}");
    assert_eq!(waited + steady, num(&report, "/messages/acknowledged"), "{l}");
    // Those waited up to the outage's length; the steady state did not.
    assert!(
        l["connect_phase"]["puback"]["max"].as_f64().unwrap() > 1500.0,
        "{l}"
    );
    assert!(l["puback"]["p99"].as_f64().unwrap() < 500.0, "{l}");
    assert!(stderr.contains("connect phase"), "{stderr}");
}
