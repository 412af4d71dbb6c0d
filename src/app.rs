//! What each subcommand does. `main` parses the command line and calls [`run`]; every command
//! returns its exit code, or an error whose kind decides it (see [`crate::error`]).

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::Result;
use tokio::sync::oneshot;

use crate::cli::{BrokerArgs, CertsCommand, Command, DemoArgs, RunArgs, WatchArgs};
use crate::config::{self, parse_duration};
use crate::error::exit;
use crate::identity::{self, IdentityFiles, TrustSource};
use crate::input;
use crate::local::{broker, pki};
use crate::signals::Signals;
use crate::watch::{self, WatchOptions};
use crate::{fleet, preflight};

/// Runs one subcommand to the end and returns the process exit code.
pub fn run(command: Command) -> Result<i32> {
    match command {
        Command::Run(args) => {
            let cfg = config::resolve(*args)?;
            runtime()?.block_on(async {
                preflight::check(&cfg).await?;
                let outcome = fleet::run(cfg).await?;
                Ok(fleet_exit_code(&outcome))
            })
        }
        Command::Certs(CertsCommand::Init { dir, key_type }) => certs_init(&dir, key_type),
        Command::Certs(CertsCommand::Issue {
            dir,
            devices,
            id_prefix,
            out,
            ca_cert,
            ca_key,
            key_type,
        }) => {
            if devices == 0 {
                return Err(input!("--devices: 0 devices; give at least 1"));
            }
            config::validate_id_prefix(&id_prefix, "--id-prefix")?;
            let opts = pki::IssueOptions {
                devices,
                out: out.unwrap_or_else(|| dir.join("devices")),
                ca_cert: ca_cert.unwrap_or_else(|| dir.join(pki::CA_CERT)),
                ca_key: ca_key.unwrap_or_else(|| dir.join(pki::CA_KEY)),
                id_prefix,
                key_type,
                progress: true,
            };
            let started = std::time::Instant::now();
            let done = pki::issue(&opts)?;
            eprintln!(
                "{} device certificate(s) created, {} kept, {} re-issued for existing keys in {} ({:.1} s)",
                done.created,
                done.kept,
                done.recertified,
                opts.out.display(),
                started.elapsed().as_secs_f64()
            );
            Ok(exit::OK)
        }
        Command::Broker(args) => broker_cmd(args),
        Command::Watch(args) => watch_cmd(args),
        Command::Demo(args) => demo(args),
    }
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread().enable_all().build()?)
}

/// 1 when no device could connect, or every device gave up; 0 otherwise.
fn fleet_exit_code(outcome: &fleet::Outcome) -> i32 {
    if outcome.stats.connected == 0 {
        eprintln!(
            "error: none of the {} device(s) could connect (causes above)",
            outcome.devices
        );
        exit::RUN_FAILED
    } else if outcome.stats.failed as usize >= outcome.devices {
        eprintln!("error: every device gave up (causes above)");
        exit::RUN_FAILED
    } else {
        exit::OK
    }
}

fn certs_init(dir: &Path, key_type: pki::KeyType) -> Result<i32> {
    let out = pki::init(dir, key_type)?;
    for p in &out.created {
        eprintln!("created {}", p.display());
    }
    for p in &out.kept {
        eprintln!("kept    {} (exists)", p.display());
    }
    eprintln!("next: freezer-fleet certs issue {} --devices 10", dir.display());
    Ok(exit::OK)
}

fn broker_cmd(args: BrokerArgs) -> Result<i32> {
    let running = broker::start(&args.pki, args.listen)?;
    eprintln!(
        "embedded broker listening on {} (mutual TLS: clients need a certificate signed by {}); Ctrl-C stops it",
        running.addr,
        args.pki.join(pki::CA_CERT).display()
    );
    runtime()?.block_on(async {
        let mut signals = Signals::new()?;
        let sig = signals.recv().await;
        eprintln!("stopping ({sig})");
        Ok(exit::OK)
    })
}

/// The identity the watcher connects with.
fn watch_identity(args: &WatchArgs) -> Result<IdentityFiles> {
    match (&args.cert, &args.key, &args.certs, &args.id) {
        (Some(cert), Some(key), None, None) => Ok(IdentityFiles {
            cert: cert.clone(),
            key: key.clone(),
            cert_label: "--cert".into(),
            key_label: "--key".into(),
        }),
        (None, None, Some(dir), Some(id)) => {
            let folders = config::scan_cert_folders(dir, "--certs")?;
            folders
                .into_iter()
                .find(|f| &f.id == id)
                .map(|f| f.files)
                .ok_or_else(|| input!("--id {id}: {} has no device folder named {id}", dir.display()))
        }
        (Some(_), None, _, _) => Err(input!(
            "--cert is given without --key: pass the private key of the certificate"
        )),
        (None, Some(_), _, _) => Err(input!(
            "--key is given without --cert: pass the certificate of the key"
        )),
        _ => Err(input!(
            "no identity for the watcher: pass --cert FILE --key FILE, or --certs DIR --id ID"
        )),
    }
}

/// Checks a subscription filter: `+` and `#` only as whole levels, `#` only last.
fn validate_filter(filter: &str) -> Result<()> {
    let levels: Vec<&str> = filter.split('/').collect();
    let bad = filter.is_empty()
        || levels.iter().enumerate().any(|(i, l)| {
            (l.contains('#') && (*l != "#" || i + 1 != levels.len())) || (l.contains('+') && *l != "+")
        });
    if bad {
        return Err(input!(
            "--topic: '{filter}' is not a valid topic filter; + must be a whole level, # a whole last level (e.g. freezers, plant/+/freezers, plant/#)"
        ));
    }
    Ok(())
}

fn watch_cmd(args: WatchArgs) -> Result<i32> {
    config::validate_endpoint(&args.endpoint, "--endpoint")?;
    validate_filter(&args.topic)?;
    let duration = args
        .duration
        .as_deref()
        .map(|d| parse_duration(d, "--duration"))
        .transpose()?;
    let roots = identity::load_roots(&match &args.ca {
        Some(p) => TrustSource::File(p.clone()),
        None => TrustSource::BuiltIn,
    })?;
    let tls = identity::client_config(&watch_identity(&args)?, roots, &[])?;
    let opts = WatchOptions {
        host: args.endpoint.clone(),
        port: args.port,
        tls,
        client_id: args
            .client_id
            .clone()
            .unwrap_or_else(|| format!("freezer-fleet-watch-{}", std::process::id())),
        topic: args.topic.clone(),
        json: args.json,
        quiet: false,
        received: Arc::new(AtomicU64::new(0)),
    };
    runtime()?.block_on(async {
        let mut signals = Signals::new()?;
        let (tx, rx) = oneshot::channel();
        let topic = args.topic.clone();
        tokio::spawn(async move {
            if rx.await.is_ok() {
                tracing::info!("watching '{topic}'; Ctrl-C prints the table");
            }
        });
        let stop = async move {
            tokio::select! {
                _ = signals.recv() => {}
                _ = async { match duration { Some(d) => tokio::time::sleep(d).await, None => std::future::pending().await } } => {}
            }
        };
        let acc = watch::run(opts, Some(tx), stop).await?;
        let table = acc.table();
        if args.json {
            eprint!("{table}");
        } else {
            print!("{table}");
        }
        Ok(exit::OK)
    })
}

fn demo(args: DemoArgs) -> Result<i32> {
    if args.devices == 0 {
        return Err(input!("--devices: 0 devices; give at least 1"));
    }
    let dir = tempfile::Builder::new().prefix("freezer-fleet-demo-").tempdir()?;
    let code = demo_in(&args, dir.path());
    // Remove the temporary keys before exiting, whatever happened.
    drop(dir);
    code
}

fn demo_in(args: &DemoArgs, dir: &Path) -> Result<i32> {
    pki::init(dir, pki::KeyType::P256)?;
    let issue = |prefix: &str, n: usize, out: &str| {
        pki::issue(&pki::IssueOptions {
            devices: n,
            id_prefix: prefix.into(),
            out: dir.join(out),
            ca_cert: dir.join(pki::CA_CERT),
            ca_key: dir.join(pki::CA_KEY),
            key_type: pki::KeyType::P256,
            progress: false,
        })
    };
    issue("freezer", args.devices, "devices")?;
    issue("watcher", 1, "watchers")?;
    let running = broker::start(dir, "127.0.0.1:0".parse()?)?;
    let port = running.addr.port();
    tracing::info!(
        "demo: temporary PKI in {}, embedded mTLS broker on {}",
        dir.display(),
        running.addr
    );

    let cfg = config::resolve(RunArgs {
        endpoint: Some("localhost".into()),
        port: Some(port),
        ca: Some(dir.join(pki::CA_CERT)),
        certs: Some(dir.join("devices")),
        devices: Some(args.devices),
        interval: Some(args.interval.clone()),
        duration: args.duration.clone(),
        qos: Some(args.qos),
        seed: args.seed,
        ..Default::default()
    })?;
    let roots = identity::load_roots(&TrustSource::File(dir.join(pki::CA_CERT)))?;
    let (cert, key) = pki::device_files(&dir.join("watchers"), "watcher1");
    let tls = identity::client_config(
        &IdentityFiles {
            cert,
            key,
            cert_label: "watcher certificate".into(),
            key_label: "watcher key".into(),
        },
        roots,
        &[],
    )?;
    let received = Arc::new(AtomicU64::new(0));
    let opts = WatchOptions {
        host: "localhost".into(),
        port,
        tls,
        client_id: "watcher1".into(),
        topic: cfg.topic.clone(),
        json: false,
        quiet: false,
        received: received.clone(),
    };
    runtime()?.block_on(async move {
        let (subscribed_tx, subscribed_rx) = oneshot::channel();
        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        let watcher = tokio::spawn(watch::run(opts, Some(subscribed_tx), async move {
            let _ = stop_rx.await;
        }));
        // Start publishing only once the watcher is subscribed, so it sees every event.
        if tokio::time::timeout(Duration::from_secs(10), subscribed_rx)
            .await
            .is_err()
        {
            anyhow::bail!("demo: the watcher could not subscribe to the embedded broker");
        }
        eprintln!(
            "demo: {} freezers publishing; press Enter to inject an event, q to stop",
            args.devices
        );
        let outcome = fleet::run(cfg).await?;
        // Give the last events time to reach the watcher.
        let expected = outcome.stats.published;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
        while received.load(Ordering::Relaxed) < expected && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let _ = stop_tx.send(());
        let acc = watcher.await??;
        print!("\nwatcher:\n{}", acc.table());
        Ok(fleet_exit_code(&outcome))
    })
}
