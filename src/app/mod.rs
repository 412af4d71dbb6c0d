//! What each subcommand does, one file each, composed from the library's modules. `main` parses
//! the command line and calls [`run`]; every command returns its exit code, or an error whose
//! kind decides it (see [`crate::error`]).

use anyhow::Result;

use crate::cli::Command;

mod aws;
mod broker;
mod certs;
mod command;
mod demo;
mod report;
mod run;
mod scenario;
mod watch;

/// Runs one subcommand to the end and returns the process exit code.
pub fn run(command: Command) -> Result<i32> {
    match command {
        Command::Run(args) => run::run(*args),
        Command::Certs(cmd) => certs::run(cmd),
        Command::Broker(args) => broker::run(args),
        Command::Watch(args) => watch::run(*args),
        Command::Demo(args) => demo::run(args),
        Command::Report(cmd) => report::run(cmd),
        Command::Aws(cmd) => aws::run(cmd),
        Command::Command(args) => command::run(*args),
    }
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread().enable_all().build()?)
}
