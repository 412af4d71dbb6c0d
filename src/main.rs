use clap::Parser;
use freezer_fleet::cli::{Cli, Command};
use freezer_fleet::error::{self, exit};
use freezer_fleet::{config, fleet};
use tracing_subscriber::EnvFilter;

fn main() {
    let cli = Cli::parse();
    init_tracing();
    let code = match run(cli) {
        Ok(code) => code,
        Err(err) => {
            // One line: our input errors are finished sentences; others carry their context chain.
            eprintln!("error: {err:#}");
            error::exit_code(&err)
        }
    };
    // Exit without waiting for the console thread, which may be blocked reading stdin.
    std::process::exit(code)
}

fn run(cli: Cli) -> anyhow::Result<i32> {
    match cli.command {
        Command::Run(args) => {
            let cfg = config::resolve(args)?;
            let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
            let outcome = runtime.block_on(fleet::run(cfg))?;
            if outcome.stats.connected == 0 {
                eprintln!(
                    "error: none of the {} device(s) could connect (causes above)",
                    outcome.devices
                );
                return Ok(exit::RUN_FAILED);
            }
            Ok(exit::OK)
        }
    }
}

fn init_tracing() {
    let filter = EnvFilter::try_from_env("FREEZER_FLEET_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    let ansi = std::env::var_os("NO_COLOR").is_none() && std::io::IsTerminal::is_terminal(&std::io::stderr());
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .with_ansi(ansi)
        .init();
}
