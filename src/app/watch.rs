//! `watch`: subscribe and print what arrives, then the table of gaps, duplicates, reorderings
//! and latency per device.

use anyhow::Result;
use tokio::sync::oneshot;

use crate::cli::WatchArgs;
use crate::config::watch::WatchConfig;
use crate::error::exit;
use crate::live;
use crate::signals::Signals;
use crate::watch::{self, Hooks};

pub fn run(args: WatchArgs) -> Result<i32> {
    let cfg = WatchConfig::resolve(args.into())?;
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
        let acc = acc?;
        let table = acc.table();
        if cfg.json {
            live::eprint(&table);
        } else {
            live::print_stdout(table.as_bytes());
        }
        Ok(exit::OK)
    })
}
