use clap::Parser;
use freezer_fleet::cli::Cli;
use freezer_fleet::{app, error, live};
use tracing_subscriber::EnvFilter;

fn main() {
    let cli = Cli::parse();
    init_tracing();
    let code = match app::run(cli.command) {
        Ok(code) => code,
        Err(err) => {
            // One line: our input errors are finished sentences; others carry their context chain.
            live::eprintln(&format!("error: {err:#}"));
            error::exit_code(&err)
        }
    };
    // Exit without waiting for the console thread, which may be blocked reading stdin, or for
    // the embedded broker's thread, which has no way to stop.
    std::process::exit(code)
}

/// Logs go to stderr; FREEZER_FLEET_LOG (e.g. `debug`, or `info,rumqttd=info` for the embedded
/// broker's own log, quiet by default) changes the level; NO_COLOR is respected.
fn init_tracing() {
    let filter = EnvFilter::try_from_env("FREEZER_FLEET_LOG")
        .unwrap_or_else(|_| EnvFilter::new("info,rumqttd=off,rumqttc=error"));
    let ansi = std::env::var_os("NO_COLOR").is_none() && std::io::IsTerminal::is_terminal(&std::io::stderr());
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        // Through the terminal's one writer, so a log line never lands on the live status line.
        .with_writer(live::LogWriter::default)
        .with_target(false)
        .with_ansi(ansi)
        .init();
}
