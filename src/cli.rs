//! Command-line definitions (clap) and nothing else: values are checked in `config`.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

const ABOUT: &str = "A fleet of simulated IoT freezers publishing temperature/humidity over MQTT with mutual TLS, \
and a load tester for MQTT endpoints such as AWS IoT Core.";

const RUN_EXAMPLES: &str = "\
Examples:
  # 10 devices, each with its own certificate folder (as AWS IoT Core's download names the files)
  freezer-fleet run --endpoint abc123-ats.iot.us-east-1.amazonaws.com \\
      --ca AmazonRootCA1.pem --certs ./certs --devices 10

  # 100 devices sharing one certificate, an event every 2 s each, for 5 minutes
  freezer-fleet run --endpoint abc123-ats.iot.eu-west-1.amazonaws.com --ca AmazonRootCA1.pem \\
      --cert device-certificate.pem.crt --key device-private.pem.key --devices 100 --interval 2s --duration 5m

  # Everything from a config file, one flag overridden
  freezer-fleet run --config config/aws-iot.toml --devices 3

  # Events on demand only: press Enter to inject one
  freezer-fleet run --config config/aws-iot.toml --interval 0

Console while running (stdin):
  Enter          one event now from the next device in turn
  <device id>    one event now from that device (e.g. freezer3)
  all            one event now from every device
  q              stop gracefully (so do Ctrl-C and SIGTERM; a second Ctrl-C skips waiting for acknowledgements)

Exit codes: 0 done, 1 no device could connect, 2 bad input (the message names the flag or file).";

#[derive(Debug, Parser)]
#[command(name = "freezer-fleet", version, about = ABOUT)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Launch N simulated freezers that publish over MQTT with mutual TLS.
    #[command(after_help = RUN_EXAMPLES)]
    Run(RunArgs),
}

/// Flags of `run`. Every value may also come from `--config`; a flag given here wins.
#[derive(Debug, Args, Default)]
pub struct RunArgs {
    /// TOML config file (see config/aws-iot.toml); flags override its values.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// MQTT endpoint host name or IP, e.g. abc123-ats.iot.us-east-1.amazonaws.com.
    #[arg(long, value_name = "HOST", env = "FREEZER_FLEET_ENDPOINT")]
    pub endpoint: Option<String>,

    /// Endpoint port [default: 8883].
    #[arg(long, value_name = "PORT")]
    pub port: Option<u16>,

    /// Root CA that signed the endpoint's certificate (AmazonRootCA1.pem) [default: the built-in Mozilla roots, which include Amazon Root CA 1].
    #[arg(long, value_name = "FILE")]
    pub ca: Option<PathBuf>,

    /// Folder with one sub-folder per device, named by its device id, holding `*certificate.pem.crt` and `*private.pem.key`.
    #[arg(long, value_name = "DIR", conflicts_with_all = ["cert", "key"])]
    pub certs: Option<PathBuf>,

    /// One certificate shared by every device (with --key); the alternative to --certs.
    #[arg(long, value_name = "FILE")]
    pub cert: Option<PathBuf>,

    /// The private key of --cert.
    #[arg(long, value_name = "FILE")]
    pub key: Option<PathBuf>,

    /// How many devices [default: every folder of --certs; 1 with --cert].
    #[arg(long, value_name = "N")]
    pub devices: Option<usize>,

    /// With --cert/--key: device ids are PREFIX1..PREFIXN [default: freezer].
    #[arg(long, value_name = "PREFIX")]
    pub id_prefix: Option<String>,

    /// MQTT topic to publish to [default: freezers].
    #[arg(long, value_name = "TOPIC")]
    pub topic: Option<String>,

    /// Time between a device's timed events, e.g. 500ms, 5s, 2m; 0 = on demand only [default: 5s].
    #[arg(long, value_name = "DURATION")]
    pub interval: Option<String>,

    /// MQTT QoS: 0 or 1 (IoT Core has no QoS 2) [default: 1].
    #[arg(long, value_name = "0|1")]
    pub qos: Option<u8>,

    /// Stop after this long, e.g. 60s, 10m [default: until Ctrl-C, SIGTERM or `q`].
    #[arg(long, value_name = "DURATION")]
    pub duration: Option<String>,

    /// Seed for every random value, to reproduce a run's readings [default: random, printed at start].
    #[arg(long, value_name = "N")]
    pub seed: Option<u64>,

    /// MQTT keep-alive, 30s to 20m as AWS IoT Core accepts [default: 60s].
    #[arg(long, value_name = "DURATION")]
    pub keep_alive: Option<String>,

    /// At shutdown, how long to wait for QoS 1 acknowledgements still in flight [default: 5s].
    #[arg(long, value_name = "DURATION")]
    pub drain_timeout: Option<String>,
}
