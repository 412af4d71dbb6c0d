//! Bad input is refused before the first connection: one line naming the flag or file, the
//! cause and the fix; exit code 2; no panic; no key material.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::*;

struct Case {
    name: &'static str,
    args: Vec<String>,
    /// Every one of these must appear in the message.
    expect: Vec<String>,
}

fn s(v: &[&str]) -> Vec<String> {
    v.iter().map(|x| x.to_string()).collect()
}

fn p(path: &Path) -> String {
    path.display().to_string()
}

fn openssl(args: &[&str]) {
    let ok = Command::new("openssl")
        .args(args)
        .status()
        .expect("openssl is installed (README's test command installs it)");
    assert!(ok.success(), "openssl {args:?}");
}

/// The base64 body lines of every key under `dir`: none may ever be printed.
fn key_lines(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let path = e.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else if let Ok(text) = std::fs::read_to_string(&path)
                && text.contains("PRIVATE KEY-----")
            {
                out.extend(
                    text.lines()
                        .filter(|l| !l.starts_with("-----") && l.len() > 20)
                        .map(String::from),
                );
            }
        }
    }
    out
}

#[test]
fn every_bad_input_gets_one_clear_line_and_exit_2() {
    let pki = Pki::new(2);
    let dir = pki.path();
    let base = |extra: &[&str]| {
        let mut v = s(&["run", "--endpoint", "localhost", "--port", "1", "--ca"]);
        v.push(p(&pki.ca_pem()));
        v.extend(s(extra));
        v
    };
    let with_certs = |certs: &Path, extra: &[&str]| {
        let mut v = base(&["--certs"]);
        v.push(p(certs));
        v.extend(s(extra));
        v
    };
    let (cert1, key1) = pki.device_files("freezer1");
    let (_, key2) = pki.device_files("freezer2");
    let with_pair = |cert: &Path, key: &Path| {
        let mut v = base(&["--cert"]);
        v.push(p(cert));
        v.push("--key".into());
        v.push(p(key));
        v
    };

    // Files for the cases.
    let empty = dir.join("empty.pem");
    write(&empty, "");
    let enc8 = dir.join("encrypted-pkcs8.key");
    openssl(&[
        "pkcs8",
        "-topk8",
        "-in",
        &p(&key1),
        "-out",
        &p(&enc8),
        "-passout",
        "pass:s3cret",
        "-v2",
        "aes-256-cbc",
    ]);
    let enc_legacy = dir.join("encrypted-legacy.key");
    openssl(&[
        "ec",
        "-in",
        &p(&key1),
        "-out",
        &p(&enc_legacy),
        "-aes256",
        "-passout",
        "pass:s3cret",
    ]);
    let expired = pki.ca.client_with("old", |params| {
        params.not_before = rcgen::date_time_ymd(2020, 1, 1);
        params.not_after = rcgen::date_time_ymd(2021, 1, 1);
    });
    let expired_dir = pki.write_device("zz-expired", &expired.0, &expired.1);
    let future = pki.ca.client_with("future", |params| {
        params.not_before = rcgen::date_time_ymd(2090, 1, 1);
        params.not_after = rcgen::date_time_ymd(2091, 1, 1);
    });
    let (fcert, fkey) = (dir.join("future.crt"), dir.join("future.key"));
    write(&fcert, &future.0);
    write(&fkey, &future.1);
    let garbage = dir.join("garbage.crt");
    write(&garbage, "this is not a certificate\n");
    let pubkey = dir.join("public.pem.key");
    openssl(&["pkey", "-in", &p(&key1), "-pubout", "-out", &p(&pubkey)]);

    // Folder layouts.
    let no_cert = dir.join("no-cert");
    std::fs::create_dir_all(no_cert.join("freezer1")).unwrap();
    std::fs::copy(&key1, no_cert.join("freezer1/a-private.pem.key")).unwrap();
    let two_certs = dir.join("two-certs");
    std::fs::create_dir_all(two_certs.join("freezer1")).unwrap();
    std::fs::copy(&cert1, two_certs.join("freezer1/a-certificate.pem.crt")).unwrap();
    std::fs::copy(&cert1, two_certs.join("freezer1/b-certificate.pem.crt")).unwrap();
    std::fs::copy(&key1, two_certs.join("freezer1/a-private.pem.key")).unwrap();
    let no_key = dir.join("no-key");
    std::fs::create_dir_all(no_key.join("freezer1")).unwrap();
    std::fs::copy(&cert1, no_key.join("freezer1/a-certificate.pem.crt")).unwrap();
    let mismatched = dir.join("mismatched");
    std::fs::create_dir_all(mismatched.join("freezer1")).unwrap();
    std::fs::copy(&cert1, mismatched.join("freezer1/a-certificate.pem.crt")).unwrap();
    std::fs::copy(&key2, mismatched.join("freezer1/a-private.pem.key")).unwrap();
    let only_expired = dir.join("only-expired");
    std::fs::create_dir_all(&only_expired).unwrap();
    std::fs::rename(&expired_dir, only_expired.join("zz-expired")).unwrap();
    let empty_dir = dir.join("empty-dir");
    std::fs::create_dir_all(&empty_dir).unwrap();

    let unknown_key_cfg = dir.join("unknown-key.toml");
    write(
        &unknown_key_cfg,
        "endpoint = \"localhost\"\nendpiont = \"typo\"\n",
    );
    let qos_cfg = dir.join("qos.toml");
    write(
        &qos_cfg,
        &format!(
            "endpoint = \"localhost\"\nqos = 2\ncerts = \"{}\"\n",
            p(&pki.devices())
        ),
    );
    let bool_cfg = dir.join("bool.toml");
    write(
        &bool_cfg,
        "endpoint = \"localhost\"\npersistent_session = \"yes\"\n",
    );
    let backoff_cfg = dir.join("backoff.toml");
    write(
        &backoff_cfg,
        &format!(
            "endpoint = \"localhost\"\nbackoff_max = \"soon\"\ncerts = \"{}\"\n",
            p(&pki.devices())
        ),
    );
    let bad_toml = dir.join("bad.toml");
    write(&bad_toml, "endpoint = localhost\n");

    let devices = pki.devices();
    let mut cases = vec![
        Case {
            name: "missing CA file",
            args: {
                let mut a = s(&[
                    "run",
                    "--endpoint",
                    "localhost",
                    "--ca",
                    "/nonexistent/AmazonRootCA1.pem",
                    "--certs",
                ]);
                a.push(p(&devices));
                a
            },
            expect: s(&["--ca /nonexistent/AmazonRootCA1.pem", "no such file"]),
        },
        Case {
            name: "key file as CA",
            args: {
                let mut a = s(&["run", "--endpoint", "localhost", "--ca"]);
                a.push(p(&key1));
                a.push("--certs".into());
                a.push(p(&devices));
                a
            },
            expect: s(&[
                "--ca",
                "holds a private key, not a certificate",
                "AmazonRootCA1.pem",
            ]),
        },
        Case {
            name: "empty CA file",
            args: {
                let mut a = s(&["run", "--endpoint", "localhost", "--ca"]);
                a.push(p(&empty));
                a.push("--certs".into());
                a.push(p(&devices));
                a
            },
            expect: s(&["--ca", "no PEM certificate"]),
        },
        Case {
            name: "CA folder instead of file",
            args: {
                let mut a = s(&["run", "--endpoint", "localhost", "--ca"]);
                a.push(p(dir));
                a.push("--certs".into());
                a.push(p(&devices));
                a
            },
            expect: s(&["--ca", "folder, not a file"]),
        },
        Case {
            name: "missing certs folder",
            args: with_certs(Path::new("/nonexistent/certs"), &[]),
            expect: s(&["--certs /nonexistent/certs", "no such folder"]),
        },
        Case {
            name: "certs folder without device folders",
            args: with_certs(&empty_dir, &[]),
            expect: s(&["--certs", "no device folders"]),
        },
        Case {
            name: "device folder without certificate",
            args: with_certs(&no_cert, &[]),
            expect: s(&["device freezer1", "no file ending in certificate.pem.crt"]),
        },
        Case {
            name: "device folder with two certificates",
            args: with_certs(&two_certs, &[]),
            expect: s(&[
                "device freezer1",
                "2 files ending in certificate.pem.crt",
                "keep exactly one",
            ]),
        },
        Case {
            name: "device folder without key",
            args: with_certs(&no_key, &[]),
            expect: s(&["device freezer1", "no file ending in private.pem.key"]),
        },
        Case {
            name: "key of another device",
            args: with_certs(&mismatched, &[]),
            expect: s(&[
                "device freezer1: private key",
                "does not belong to the certificate",
            ]),
        },
        Case {
            name: "expired certificate",
            args: with_certs(&only_expired, &[]),
            expect: s(&["device zz-expired: certificate", "expired on", "2021"]),
        },
        Case {
            name: "certificate not yet valid",
            args: with_pair(&fcert, &fkey),
            expect: s(&["--cert", "not valid until", "2090"]),
        },
        Case {
            name: "encrypted PKCS#8 key",
            args: with_pair(&cert1, &enc8),
            expect: s(&["--key", "password-protected"]),
        },
        Case {
            name: "encrypted legacy key",
            args: with_pair(&cert1, &enc_legacy),
            expect: s(&["--key", "password-protected"]),
        },
        Case {
            name: "public key as --key",
            args: with_pair(&cert1, &pubkey),
            expect: s(&["--key", "public key"]),
        },
        Case {
            name: "certificate as --key",
            args: with_pair(&cert1, &cert1),
            expect: s(&["--key", "holds a certificate"]),
        },
        Case {
            name: "key as --cert",
            args: with_pair(&key1, &key1),
            expect: s(&["--cert", "holds a private key"]),
        },
        Case {
            name: "garbage as --cert",
            args: with_pair(&garbage, &key1),
            expect: s(&["--cert", "no PEM certificate"]),
        },
        Case {
            name: "missing --key file",
            args: with_pair(&cert1, Path::new("/nonexistent/private.pem.key")),
            expect: s(&["--key /nonexistent/private.pem.key", "no such file"]),
        },
        Case {
            name: "--cert without --key",
            args: {
                let mut a = base(&["--cert"]);
                a.push(p(&cert1));
                a
            },
            expect: s(&["--cert", "without --key"]),
        },
        Case {
            name: "no identity",
            args: base(&[]),
            expect: s(&["no device identity", "--certs DIR", "--cert FILE --key FILE"]),
        },
        Case {
            name: "empty endpoint",
            args: {
                let mut a = s(&["run", "--endpoint", "", "--certs"]);
                a.push(p(&devices));
                a
            },
            expect: s(&["--endpoint", "empty"]),
        },
        Case {
            name: "endpoint with scheme",
            args: {
                let mut a = s(&[
                    "run",
                    "--endpoint",
                    "mqtts://abc.iot.us-east-1.amazonaws.com",
                    "--certs",
                ]);
                a.push(p(&devices));
                a
            },
            expect: s(&["--endpoint", "scheme", "--port"]),
        },
        Case {
            name: "endpoint with port",
            args: {
                let mut a = s(&["run", "--endpoint", "localhost:8883", "--certs"]);
                a.push(p(&devices));
                a
            },
            expect: s(&["--endpoint", "has a port"]),
        },
        Case {
            name: "missing endpoint",
            args: {
                let mut a = s(&["run", "--certs"]);
                a.push(p(&devices));
                a
            },
            expect: s(&["--endpoint is missing"]),
        },
        Case {
            name: "wildcard topic",
            args: with_certs(&devices, &["--topic", "freezers/#"]),
            expect: s(&["--topic", "wildcard"]),
        },
        Case {
            name: "plus topic",
            args: with_certs(&devices, &["--topic", "a/+/b"]),
            expect: s(&["--topic", "wildcard"]),
        },
        Case {
            name: "empty topic",
            args: with_certs(&devices, &["--topic", ""]),
            expect: s(&["--topic", "empty"]),
        },
        Case {
            name: "QoS 2",
            args: with_certs(&devices, &["--qos", "2"]),
            expect: s(&["--qos", "QoS 2 is not supported", "0 or 1"]),
        },
        Case {
            name: "bad interval",
            args: with_certs(&devices, &["--interval", "5x"]),
            expect: s(&["--interval", "'5x' is not a duration", "500ms"]),
        },
        Case {
            name: "bad duration",
            args: with_certs(&devices, &["--duration", "soon"]),
            expect: s(&["--duration", "'soon' is not a duration"]),
        },
        Case {
            name: "keep-alive out of range",
            args: with_certs(&devices, &["--keep-alive", "5s"]),
            expect: s(&["--keep-alive", "30s..20m"]),
        },
        Case {
            name: "more devices than folders",
            args: with_certs(&devices, &["--devices", "9"]),
            expect: s(&["--devices", "9 devices requested", "only 2 device folders"]),
        },
        Case {
            name: "zero devices",
            args: with_certs(&devices, &["--devices", "0"]),
            expect: s(&["--devices", "at least 1"]),
        },
        Case {
            name: "bind to a foreign address",
            args: with_certs(&devices, &["--bind", "192.0.2.7"]),
            expect: s(&["--bind", "192.0.2.7 is not an address of this machine"]),
        },
        Case {
            name: "bind to a non-address",
            args: with_certs(&devices, &["--bind", "127.0.0.1,eth0"]),
            expect: s(&["--bind", "'eth0' is not an IP address"]),
        },
        Case {
            name: "zero backoff",
            args: with_certs(&devices, &["--backoff-min", "0"]),
            expect: s(&["--backoff-min", "longer than 0"]),
        },
        Case {
            name: "backoff max below min",
            args: with_certs(&devices, &["--backoff-min", "5s", "--backoff-max", "2s"]),
            expect: s(&["--backoff-max", "at least --backoff-min"]),
        },
        Case {
            name: "zero offline queue",
            args: with_certs(&devices, &["--offline-queue", "0"]),
            expect: s(&["--offline-queue", "at least 1"]),
        },
        Case {
            name: "zero ramp-up",
            args: with_certs(&devices, &["--ramp-up", "0"]),
            expect: s(&["--ramp-up", "never connect"]),
        },
        Case {
            name: "config persistent_session not a bool",
            args: {
                let mut a = s(&["run", "--config"]);
                a.push(p(&bool_cfg));
                a
            },
            expect: s(&["--config", "line 2", "persistent_session"]),
        },
        Case {
            name: "config backoff not a duration",
            args: {
                let mut a = s(&["run", "--config"]);
                a.push(p(&backoff_cfg));
                a
            },
            expect: s(&["`backoff_max` in", "'soon' is not a duration"]),
        },
        Case {
            name: "missing config",
            args: s(&["run", "--config", "/nonexistent/fleet.toml"]),
            expect: s(&["--config /nonexistent/fleet.toml", "no such file"]),
        },
        Case {
            name: "unknown config key",
            args: {
                let mut a = s(&["run", "--config"]);
                a.push(p(&unknown_key_cfg));
                a
            },
            expect: s(&["--config", "line 2", "endpiont"]),
        },
        Case {
            name: "config qos 2",
            args: {
                let mut a = s(&["run", "--config"]);
                a.push(p(&qos_cfg));
                a
            },
            expect: s(&["`qos` in", "QoS 2 is not supported"]),
        },
        Case {
            name: "config not TOML",
            args: {
                let mut a = s(&["run", "--config"]);
                a.push(p(&bad_toml));
                a
            },
            expect: s(&["--config", "line 1"]),
        },
    ];
    // Unreadable files only mean something when not root.
    if !Command::new("id")
        .arg("-u")
        .output()
        .unwrap()
        .stdout
        .starts_with(b"0")
    {
        let locked = dir.join("locked.key");
        std::fs::copy(&key1, &locked).unwrap();
        std::os::unix::fs::PermissionsExt::set_mode(
            &mut std::fs::metadata(&locked).unwrap().permissions(),
            0o000,
        );
        cases.push(Case {
            name: "unreadable key",
            args: with_pair(&cert1, &locked),
            expect: s(&["permission denied"]),
        });
    }
    assert!(cases.len() >= 20);

    let secrets = key_lines(dir);
    assert!(!secrets.is_empty());
    let mut failures = Vec::new();
    for case in &cases {
        let (code, stderr, stdout) = run_to_end(&strs(&case.args), Duration::from_secs(20));
        let lines: Vec<&str> = stderr.lines().collect();
        let mut problems = Vec::new();
        if code != 2 {
            problems.push(format!("exit code {code}, not 2"));
        }
        if lines.len() != 1 || !lines[0].starts_with("error: ") {
            problems.push("not exactly one 'error:' line".to_string());
        }
        for needle in &case.expect {
            if !stderr.contains(needle.as_str()) {
                problems.push(format!("missing '{needle}'"));
            }
        }
        if stderr.contains("panicked") || stderr.contains("RUST_BACKTRACE") {
            problems.push("panicked".into());
        }
        if secrets
            .iter()
            .any(|l| stderr.contains(l.as_str()) || stdout.contains(l.as_str()))
        {
            problems.push("printed key material".into());
        }
        if !problems.is_empty() {
            failures.push(format!(
                "{}: {}\n    stderr: {}",
                case.name,
                problems.join("; "),
                stderr.trim()
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}

#[test]
fn a_private_key_readable_by_others_is_warned_about_without_its_content() {
    use std::os::unix::fs::PermissionsExt;
    let pki = Pki::new(3);
    let (_, key) = pki.device_files("freezer2");
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let mut args = certs_args(&pki, free_port());
    args.extend(["--duration", "1s"].map(String::from));
    let (code, stderr, _) = run_to_end(&strs(&args), Duration::from_secs(20));
    // The port is refused, so the run stops at the pre-flight check; the warning comes first.
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains("1 private key file(s) can be read by group or others"),
        "{stderr}"
    );
    assert!(
        stderr.contains("freezer2") && stderr.contains("chmod 600"),
        "{stderr}"
    );
    for line in key_lines(pki.path()) {
        assert!(!stderr.contains(&line), "key material printed");
    }
}
