//! The deployment files: the Kubernetes manifests are valid objects (checked offline against
//! the Kubernetes schemas with kubernetes-validate, which the test command installs in a venv),
//! and the fleet config they ship is one freezer-fleet accepts.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::*;

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn validator() -> PathBuf {
    let path = std::env::var_os("FREEZER_FLEET_KUBE_VALIDATE")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo().join(".venv-tests/bin/kubernetes-validate"));
    assert!(
        path.exists(),
        "{} is missing; run README's test command, which installs kubernetes-validate",
        path.display()
    );
    path
}

fn validate(files: &[PathBuf]) -> (bool, String) {
    let out = Command::new(validator())
        .arg("--strict")
        .args(files)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text)
}

#[test]
fn the_kubernetes_manifests_are_valid_objects_and_a_broken_one_is_caught() {
    let dir = repo().join("deploy/kubernetes");
    let files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert!(files.len() >= 2, "{files:?}");
    let (ok, text) = validate(&files);
    assert!(ok, "{text}");
    assert_eq!(
        text.matches(" passed for resource ").count(),
        files.len(),
        "{text}"
    );
    // The validator really validates: the same Job with a misspelt field fails.
    let tmp = tempfile::tempdir().unwrap();
    let job = std::fs::read_to_string(dir.join("job.yaml")).unwrap();
    let broken = tmp.path().join("job.yaml");
    std::fs::write(
        &broken,
        job.replace("completionMode: Indexed", "completionMod: Indexed"),
    )
    .unwrap();
    let (ok, text) = validate(&[broken]);
    assert!(!ok, "{text}");
}

#[test]
fn the_shipped_fleet_config_and_job_settings_are_accepted_by_run() {
    let yaml = std::fs::read_to_string(repo().join("deploy/kubernetes/fleet-config.yaml")).unwrap();
    let toml: String = yaml
        .split("fleet.toml: |\n")
        .nth(1)
        .expect("the ConfigMap holds fleet.toml")
        .lines()
        .map(|l| l.strip_prefix("    ").unwrap_or(l))
        .collect::<Vec<_>>()
        .join("\n");
    let pki = Pki::new(8);
    let config = pki.path().join("fleet.toml");
    write(&config, &toml);
    let port = free_port().to_string();
    let (certs, ca) = (
        pki.devices().display().to_string(),
        pki.ca_pem().display().to_string(),
    );
    let args = [
        "run",
        "--config",
        config.to_str().unwrap(),
        "--endpoint",
        "localhost",
        "--port",
        &port,
        "--ca",
        &ca,
        "--certs",
        &certs,
        "--metrics",
        "127.0.0.1:0",
    ];
    let env = [("JOB_COMPLETION_INDEX", "1"), ("FREEZER_FLEET_SHARDS", "4")]
        .map(|(k, v)| (k.to_string(), v.to_string()));
    let mut fleet = Fleet::spawn_with_env(&args, &env);
    fleet.close_stdin();
    let (code, stderr, _) = fleet.finish(Duration::from_secs(20));
    // Every key and the shard are accepted; the run stops only at the pre-flight check, as
    // nothing listens on the port.
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("nothing listens on"), "{stderr}");
}
