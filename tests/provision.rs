//! `aws provision`, `aws teardown`, `aws endpoint` and `run --check` against moto's IoT
//! registry on loopback (things, types, groups, policies, certificates, attachments,
//! endpoints), read back with boto3. Tests that count everything in the registry have an
//! emulator of their own.

mod common;

use std::path::Path;
use std::time::Duration;

use common::aws::{Moto, aws_env, refused_with_env};
use common::*;

fn scratch() -> tempfile::TempDir {
    tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap()
}

/// Runs freezer-fleet with `args` against `moto` (stdin closed): (exit code, stderr, stdout).
fn aws(moto: &Moto, dir: &Path, args: &[&str]) -> (i32, String, String) {
    let mut all = args.to_vec();
    all.extend(["--region", "eu-west-1"]);
    let mut f = Fleet::spawn_with_env(&all, &aws_env(&moto.url(), dir));
    f.close_stdin();
    let (code, stderr, stdout) = f.finish(Duration::from_secs(120));
    assert!(!stderr.contains("fleet-secret-never-printed"));
    (code, stderr, stdout)
}

fn state(moto: &Moto) -> serde_json::Value {
    moto.aws(&["iot-state"])
}

fn out_of(dir: &Path) -> String {
    dir.join("certs/devices").display().to_string()
}

#[test]
fn twenty_devices_are_things_in_a_group_with_active_certificates_and_files_run_accepts() {
    let moto = Moto::start();
    let dir = scratch();
    let out = out_of(dir.path());
    let (code, stderr, _) = aws(
        &moto,
        dir.path(),
        &[
            "aws",
            "provision",
            "--devices",
            "20",
            "--thing-type",
            "freezer",
            "--thing-group",
            "freezers",
            "--out",
            &out,
            "--rate",
            "200",
        ],
    );
    assert_eq!(code, 0, "{stderr}");
    let s = state(&moto);
    let things = s["things"].as_object().unwrap();
    assert_eq!(things.len(), 20);
    let group = s["groups"]["freezers"].as_array().unwrap();
    assert_eq!(group.len(), 20, "every thing in the group");
    let policy = &s["policies"]["freezer-policy"];
    let doc: serde_json::Value = serde_json::from_str(policy["document"].as_str().unwrap()).unwrap();
    let actions: Vec<&str> = doc["Statement"]
        .as_array()
        .unwrap()
        .iter()
        .map(|st| st["Action"].as_str().unwrap())
        .collect();
    // Connect, publish readings, and the device's own shadow and command topics (run --listen).
    assert_eq!(
        actions,
        [
            "iot:Connect",
            "iot:Publish",
            "iot:Subscribe",
            "iot:Receive",
            "iot:Publish"
        ],
        "{doc}"
    );
    let me = "${iot:Connection.Thing.ThingName}";
    assert!(
        doc.to_string()
            .contains(&format!("topicfilter/freezers/{me}/cmd")),
        "{doc}"
    );
    for (name, t) in things {
        assert_eq!(t["type"], "freezer", "{name}");
        assert_eq!(t["attributes"]["createdBy"], "freezer-fleet", "{name}");
        let principals = t["principals"].as_array().unwrap();
        assert_eq!(principals.len(), 1, "{name}: one certificate");
        let arn = principals[0].as_str().unwrap();
        assert_eq!(s["certificates"][arn]["status"], "ACTIVE", "{name}");
        assert!(
            policy["targets"].as_array().unwrap().iter().any(|t| t == arn),
            "{name}: policy attached"
        );
        // The files are the registry's certificate, named by its id.
        let id = arn.rsplit_once("cert/").unwrap().1;
        let folder = Path::new(&out).join(name);
        let pem = std::fs::read_to_string(folder.join(format!("{id}-certificate.pem.crt"))).unwrap();
        assert_eq!(
            pem.trim(),
            s["certificates"][arn]["pem"].as_str().unwrap().trim(),
            "{name}"
        );
        let key = folder.join(format!("{id}-private.pem.key"));
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&key).unwrap().permissions().mode() & 0o777,
            0o600
        );
    }
    assert!(dir.path().join("certs/AmazonRootCA1.pem").exists());
    // The command printed at the end works as it is, checked without connecting.
    let next = stderr
        .lines()
        .find_map(|l| l.strip_prefix("next: freezer-fleet "))
        .expect("the run command");
    let mut run: Vec<&str> = next.split_whitespace().collect();
    run.push("--check");
    let (code, check, _) = run_to_end(&run, Duration::from_secs(30));
    assert_eq!(code, 0, "{check}");
    assert!(
        check.contains("the configuration and 20 device identities are valid"),
        "{check}"
    );
    assert!(check.contains("-ats.iot.eu-west-1.amazonaws.com"), "{check}");
    // aws endpoint prints the account's endpoint (moto makes up a new one per call).
    let (code, _, endpoint) = aws(&moto, dir.path(), &["aws", "endpoint"]);
    assert_eq!(code, 0);
    assert!(
        endpoint.trim().ends_with("-ats.iot.eu-west-1.amazonaws.com"),
        "{endpoint}"
    );
}

#[test]
fn certificates_from_a_local_ca_are_registered_without_it_and_keys_never_leave() {
    let moto = Moto::start();
    let dir = scratch();
    let pki = dir.path().join("pki");
    let (code, err, _) = run_to_end(
        &["certs", "init", &pki.display().to_string()],
        Duration::from_secs(30),
    );
    assert_eq!(code, 0, "{err}");
    let out = out_of(dir.path());
    let (code, stderr, _) = aws(
        &moto,
        dir.path(),
        &[
            "aws",
            "provision",
            "--devices",
            "3",
            "--certs-from-ca",
            &pki.display().to_string(),
            "--out",
            &out,
            "--rate",
            "200",
        ],
    );
    assert_eq!(code, 0, "{stderr}");
    let s = state(&moto);
    for i in 1..=3 {
        let name = format!("freezer{i}");
        let arn = s["things"][&name]["principals"][0].as_str().unwrap();
        let id = arn.rsplit_once("cert/").unwrap().1;
        let pem = std::fs::read_to_string(
            Path::new(&out)
                .join(&name)
                .join(format!("{id}-certificate.pem.crt")),
        )
        .unwrap();
        assert_eq!(pem.trim(), s["certificates"][arn]["pem"].as_str().unwrap().trim());
        // Signed by the local CA.
        let verify = std::process::Command::new("openssl")
            .args(["verify", "-CAfile", &pki.join("ca.pem").display().to_string()])
            .arg(
                Path::new(&out)
                    .join(&name)
                    .join(format!("{id}-certificate.pem.crt")),
            )
            .output()
            .unwrap();
        assert!(
            verify.status.success(),
            "{}",
            String::from_utf8_lossy(&verify.stdout)
        );
    }
    let sent_keys = moto
        .recording()
        .iter()
        .filter(|r| r["body"].as_str().is_some_and(|b| b.contains("PRIVATE KEY")))
        .count();
    assert_eq!(sent_keys, 0, "a private key was sent");
    let registered = moto
        .recording()
        .iter()
        .filter(|r| {
            r["url"]
                .as_str()
                .is_some_and(|u| u.contains("/certificate/register-no-ca"))
        })
        .count();
    assert_eq!(registered, 3);
}

#[test]
fn an_interrupted_provision_continues_and_makes_nothing_twice() {
    let moto = Moto::start();
    let dir = scratch();
    let out = out_of(dir.path());
    let args = [
        "aws",
        "provision",
        "--devices",
        "40",
        "--out",
        &out,
        "--rate",
        "15",
        "--region",
        "eu-west-1",
    ];
    let env = aws_env(&moto.url(), dir.path());
    let first = Fleet::spawn_with_env(&args, &env);
    std::thread::sleep(Duration::from_secs(4));
    first.signal("INT");
    let (code, stderr, _) = first.finish(Duration::from_secs(60));
    assert_eq!(code, 1, "stopped before the end: {stderr}");
    assert!(
        stderr.contains("run the same command again to continue"),
        "{stderr}"
    );
    let partway = state(&moto)["things"].as_object().unwrap().len();
    assert!(
        (1..40).contains(&partway),
        "{partway} things after the interruption"
    );
    let mut again = Fleet::spawn_with_env(&args, &env);
    again.close_stdin();
    let (code, stderr, _) = again.finish(Duration::from_secs(120));
    assert_eq!(code, 0, "{stderr}");
    let s = state(&moto);
    assert_eq!(s["things"].as_object().unwrap().len(), 40);
    assert_eq!(
        s["certificates"].as_object().unwrap().len(),
        40,
        "no certificate made twice"
    );
    for (name, t) in s["things"].as_object().unwrap() {
        assert_eq!(t["principals"].as_array().unwrap().len(), 1, "{name}");
    }
    let folders = std::fs::read_dir(&out).unwrap().count();
    assert_eq!(folders, 40);
}

#[test]
fn teardown_removes_what_provision_made_and_leaves_the_rest() {
    let moto = Moto::start();
    let dir = scratch();
    let out = out_of(dir.path());
    moto.aws(&["create-thing", "freezer-made-by-hand"]);
    let (code, stderr, _) = aws(
        &moto,
        dir.path(),
        &[
            "aws",
            "provision",
            "--devices",
            "5",
            "--thing-type",
            "freezer",
            "--thing-group",
            "freezers",
            "--out",
            &out,
            "--rate",
            "200",
        ],
    );
    assert_eq!(code, 0, "{stderr}");
    let teardown = [
        "aws",
        "teardown",
        "--thing-group",
        "freezers",
        "--thing-type",
        "freezer",
        "--out",
        &out,
        "--rate",
        "200",
    ];
    let mut dry = teardown.to_vec();
    dry.push("--dry-run");
    let (code, stderr, stdout) = aws(&moto, dir.path(), &dry);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(
        stdout.lines().filter(|l| l.starts_with("thing freezer")).count(),
        5,
        "{stdout}"
    );
    assert!(
        stdout.contains("policy freezer-policy") && stdout.contains("thing group freezers"),
        "{stdout}"
    );
    assert_eq!(
        state(&moto)["things"].as_object().unwrap().len(),
        6,
        "a dry run removes nothing"
    );

    let (code, stderr, _) = aws(&moto, dir.path(), &teardown);
    assert_eq!(code, 0, "{stderr}");
    let s = state(&moto);
    let left: Vec<&String> = s["things"].as_object().unwrap().keys().collect();
    assert_eq!(
        left,
        ["freezer-made-by-hand"],
        "only the thing provision did not make"
    );
    assert!(s["certificates"].as_object().unwrap().is_empty(), "{s:#}");
    assert!(s["groups"].as_object().unwrap().is_empty(), "{s:#}");
    assert!(s["policies"].as_object().unwrap().is_empty(), "{s:#}");
    assert!(s["types"].as_array().unwrap().is_empty(), "{s:#}");
    assert_eq!(
        std::fs::read_dir(&out).unwrap().count(),
        0,
        "the deleted certificates' files are gone"
    );

    // By prefix: the hand-made thing matches the prefix and is still left alone.
    let (code, stderr, _) = aws(
        &moto,
        dir.path(),
        &["aws", "teardown", "--id-prefix", "freezer", "--rate", "200"],
    );
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(state(&moto)["things"].as_object().unwrap().len(), 1);
}

// Bad input: one line each, exit 2.

#[test]
fn bad_input_to_provision_is_one_line_each() {
    let dir = scratch();
    let env = aws_env("http://127.0.0.1:9", dir.path());
    let p = dir.path();
    std::fs::write(p.join("policy.json"), "{ not json").unwrap();
    std::fs::write(p.join("a-file"), "x").unwrap();
    let policy = p.join("policy.json").display().to_string();
    let file = p.join("a-file").display().to_string();
    refused_with_env(
        &env,
        &["aws", "provision", "--devices", "0"],
        &["--devices", "0 devices"],
    );
    refused_with_env(
        &env,
        &["aws", "provision", "--devices", "2", "--policy-file", &policy],
        &["--policy-file", "not JSON"],
    );
    refused_with_env(
        &env,
        &["aws", "provision", "--devices", "2", "--out", &file],
        &["--out", "it is a file, not a folder"],
    );
    let mut no_region = env.clone();
    no_region.retain(|(k, _)| k != "AWS_ENDPOINT_URL");
    refused_with_env(
        &no_region,
        &[
            "aws",
            "provision",
            "--devices",
            "2",
            "--out",
            &out_of(p),
            "--region",
            "mars-1",
        ],
        &["--region mars-1", "not an AWS region"],
    );
    let mut no_keys = env.clone();
    no_keys.retain(|(k, _)| !k.starts_with("AWS_ACCESS") && !k.starts_with("AWS_SECRET"));
    refused_with_env(
        &no_keys,
        &[
            "aws",
            "provision",
            "--devices",
            "2",
            "--out",
            &out_of(p),
            "--region",
            "eu-west-1",
        ],
        &["no AWS credentials found", "~/.aws/credentials"],
    );
}
