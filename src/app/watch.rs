//! `watch`: subscribe and print what arrives, then the table of gaps, duplicates, reorderings
//! and latency per device.

use anyhow::Result;
use tokio::sync::oneshot;

use crate::cli::WatchArgs;
use crate::config::watch::{KinesisWatch, Watch};
use crate::error::exit;
use crate::live;
use crate::signals::Signals;
use crate::watch::{self, Hooks};

pub fn run(args: WatchArgs) -> Result<i32> {
    let cfg = match Watch::resolve(args.into())? {
        Watch::Mqtt(cfg) => cfg,
        Watch::Kinesis(k) => return run_kinesis(k),
    };
    super::runtime()?.block_on(async {
        let mut signals = Signals::new()?;
        let (subscribed_tx, subscribed_rx) = oneshot::channel();
        let hooks = Hooks {
            subscribed: Some(subscribed_tx),
            received: None,
        };
        let stop = async {
            let start = tokio::time::Instant::now();
            crate::stop::signal_or_deadline(&mut signals, start, cfg.duration).await;
        };
        // The watcher drops the sender if it never subscribes: then this just ends.
        let announce = async {
            if subscribed_rx.await.is_ok() {
                tracing::info!("watching '{}'; Ctrl-C prints the table", cfg.topic);
            }
        };
        let (acc, ()) = tokio::join!(watch::run(&cfg, hooks, stop), announce);
        print_table(&acc?, cfg.json);
        Ok(exit::OK)
    })
}

/// `watch --kinesis`: every shard of the stream, then the same table.
fn run_kinesis(cfg: KinesisWatch) -> Result<i32> {
    super::runtime()?.block_on(async {
        let mut signals = Signals::new()?;
        let session = crate::aws::credentials::session(&cfg.aws).await?;
        let (url, _) = crate::aws::endpoint::url(crate::aws::endpoint::KINESIS, &session.region)?;
        let http = crate::aws::json::http_client(None)?;
        let api = crate::aws::json::JsonApi::new(
            http,
            url,
            crate::aws::endpoint::KINESIS,
            "Kinesis_20131202",
            session,
        );
        let stop = async {
            let start = tokio::time::Instant::now();
            crate::stop::signal_or_deadline(&mut signals, start, cfg.duration).await;
        };
        let acc = watch::kinesis::run(&api, &cfg.stream, &cfg.from, cfg.json, Hooks::default(), stop).await?;
        print_table(&acc, cfg.json);
        Ok(exit::OK)
    })
}

fn print_table(acc: &watch::Accounting, json: bool) {
    let table = acc.table();
    if json {
        live::eprint(&table);
    } else {
        live::print_stdout(table.as_bytes());
    }
}
