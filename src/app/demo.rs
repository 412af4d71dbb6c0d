//! `demo`: everything on one machine, no AWS account: a temporary PKI, the embedded broker, the
//! freezers, and a watcher that prints every event and ends with its table.

use std::path::Path;
use std::time::Duration;

use anyhow::Result;

use crate::report::timeseries::TimeSeries;
use tokio::sync::{oneshot, watch as tokio_watch};

use crate::cli::DemoArgs;
use crate::config::watch::WatchConfig;
use crate::config::{self, Layer};
use crate::console::ConsoleLines;
use crate::identity::{self, IdentityFiles, TrustSource, layout};
use crate::input;
use crate::live;
use crate::local::{broker, pki};
use crate::watch::{self, Hooks};

/// How long the watcher may take to receive the fleet's last events.
const CATCH_UP: Duration = Duration::from_secs(3);

pub fn run(args: DemoArgs) -> Result<i32> {
    if args.devices == 0 {
        return Err(input!("--devices: 0 devices; give at least 1"));
    }
    let dir = tempfile::Builder::new().prefix("freezer-fleet-demo-").tempdir()?;
    let code = run_in(&args, dir.path());
    // Remove the temporary keys before exiting, whatever happened.
    drop(dir);
    code
}

fn run_in(args: &DemoArgs, dir: &Path) -> Result<i32> {
    pki::init(dir, pki::KeyType::P256)?;
    let issue = |prefix: &str, n: usize, out: &str| {
        pki::issue(
            &pki::IssueOptions {
                devices: n,
                id_prefix: prefix.into(),
                out: dir.join(out),
                ca_cert: dir.join(pki::CA_CERT),
                ca_key: dir.join(pki::CA_KEY),
                key_type: pki::KeyType::P256,
            },
            |_| {},
        )
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

    let flags = Layer {
        endpoint: Some("localhost".into()),
        port: Some(port),
        ca: Some(dir.join(pki::CA_CERT)),
        certs: Some(dir.join("devices")),
        devices: Some(args.devices),
        interval: Some(args.interval.clone()),
        duration: args.duration.clone(),
        qos: Some(args.qos),
        seed: args.seed,
        speed: Some(args.speed),
        fields: Some(args.fields.clone()),
        ..Default::default()
    };
    let cfg = config::resolve(flags, None)?;
    let watcher = watcher_config(dir, port, &cfg.topic)?;
    super::runtime()?.block_on(async move {
        let (subscribed_tx, subscribed_rx) = oneshot::channel();
        let (received_tx, mut received_rx) = tokio_watch::channel(0u64);
        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        let hooks = Hooks {
            subscribed: Some(subscribed_tx),
            received: Some(received_tx),
        };
        let watching = tokio::spawn(async move {
            watch::run(&watcher, hooks, async move {
                let _ = stop_rx.await;
            })
            .await
        });
        // Start publishing only once the watcher is subscribed, so it sees every event.
        if tokio::time::timeout(Duration::from_secs(10), subscribed_rx)
            .await
            .is_err()
        {
            anyhow::bail!("demo: the watcher could not subscribe to the embedded broker");
        }
        live::eprintln(&format!(
            "demo: {} freezers publishing; press Enter to inject an event, q to stop",
            args.devices
        ));
        let outcome =
            super::run::run_fleet(&cfg, ConsoleLines::spawn(), TimeSeries::new(None, true)?, None).await?;
        // Give the last events time to reach the watcher.
        let published = outcome.first().snapshot.messages.published;
        let _ = tokio::time::timeout(CATCH_UP, received_rx.wait_for(|n| *n >= published)).await;
        let _ = stop_tx.send(());
        let acc = watching.await??;
        live::print_stdout(format!("\nwatcher:\n{}", acc.table()).as_bytes());
        Ok(super::run::exit_code(&outcome))
    })
}

fn watcher_config(dir: &Path, port: u16, topic: &str) -> Result<WatchConfig> {
    let roots = identity::load_roots(&TrustSource::File(dir.join(pki::CA_CERT)))?;
    let (cert, key) = layout::device_files(&dir.join("watchers"), "watcher1");
    let files = IdentityFiles {
        cert,
        key,
        cert_label: "watcher certificate".into(),
        key_label: "watcher key".into(),
    };
    Ok(WatchConfig {
        host: "localhost".into(),
        port,
        tls: identity::client_config(&files, roots, &[])?,
        client_id: "watcher1".into(),
        topic: topic.to_string(),
        json: false,
        duration: None,
    })
}
