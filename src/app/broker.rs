//! `broker`: the embedded mutual-TLS MQTT broker until Ctrl-C.

use anyhow::Result;

use crate::cli::BrokerArgs;
use crate::error::exit;
use crate::local::{broker, pki};
use crate::signals::Signals;

pub fn run(args: BrokerArgs) -> Result<i32> {
    let running = broker::start(&args.pki, args.listen)?;
    eprintln!(
        "embedded broker listening on {} (mutual TLS: clients need a certificate signed by {}); Ctrl-C stops it",
        running.addr,
        args.pki.join(pki::CA_CERT).display()
    );
    super::runtime()?.block_on(async {
        let mut signals = Signals::new()?;
        let sig = signals.recv().await;
        eprintln!("stopping ({sig})");
        Ok(exit::OK)
    })
}
