//! `certs init` and `certs issue`: a local CA and device certificates in the layout `run --certs`
//! reads.

use std::path::Path;

use anyhow::Result;

use crate::cli::CertsCommand;
use crate::config::validate;
use crate::error::exit;
use crate::input;
use crate::local::pki;

pub fn run(cmd: CertsCommand) -> Result<i32> {
    match cmd {
        CertsCommand::Init { dir, key_type } => init(&dir, key_type),
        CertsCommand::Issue {
            dir,
            devices,
            id_prefix,
            out,
            ca_cert,
            ca_key,
            key_type,
        } => {
            if devices == 0 {
                return Err(input!("--devices: 0 devices; give at least 1"));
            }
            validate::id_prefix(&id_prefix, "--id-prefix")?;
            issue(&pki::IssueOptions {
                devices,
                out: out.unwrap_or_else(|| dir.join("devices")),
                ca_cert: ca_cert.unwrap_or_else(|| dir.join(pki::CA_CERT)),
                ca_key: ca_key.unwrap_or_else(|| dir.join(pki::CA_KEY)),
                id_prefix,
                key_type,
            })
        }
    }
}

fn init(dir: &Path, key_type: pki::KeyType) -> Result<i32> {
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

fn issue(opts: &pki::IssueOptions) -> Result<i32> {
    let started = std::time::Instant::now();
    // A progress bar on stderr, drawn only when stderr is a terminal.
    let bar = indicatif::ProgressBar::new(opts.devices as u64);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{bar:40} {pos}/{len} devices ({per_sec}, {eta} left)")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let done = pki::issue(opts, |_| bar.inc(1));
    bar.finish_and_clear();
    let done = done?;
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
