//! Command-line definitions (clap), and their conversion into config layers: values are checked
//! in `config`.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::config::Profile;
use crate::config::layer::{Layer, RateValue};
use crate::config::watch::WatchFlags;

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

  # Through a firewall that allows only 443 (ALPN x-amzn-mqtt-ca is offered there)
  freezer-fleet run --config config/aws-iot.toml --port 443

  # Straight to the IoT rule freezer_rule with Basic Ingest
  freezer-fleet run --config config/aws-iot.toml --basic-ingest freezer_rule

  # 20 freezers straight to the Kinesis stream freezer_data (no MQTT endpoint or certificate)
  freezer-fleet run --sink kinesis --stream freezer_data --region eu-west-1 --devices 20

  # Both Node-RED flows at once: every event (and every Enter) to IoT Core and to Kinesis
  freezer-fleet run --config config/aws-iot.toml --sink mqtt,kinesis --stream freezer_data

  # Firehose, with a role assumed through STS
  freezer-fleet run --sink firehose --delivery-stream freezer-delivery --devices 50 \
      --role-arn arn:aws:iam::123456789012:role/freezer-ingest --external-id acme-7

  # The HTTPS proxy in front of Firehose (TLS 1.2+ only), with an API key
  freezer-fleet run --sink firehose-proxy --url https://ingest.example.com/v1/freezers \
      --delivery-stream freezer-delivery --header 'x-api-key: ...' --devices 10

  # Freezers a day in 24 minutes, with their state and alarm, hearing their shadow and commands
  freezer-fleet run --config config/aws-iot.toml --speed 60 --fields state,alarm --listen

  # Ugly data for the consumers downstream, every fault counted in the report
  freezer-fleet run --config config/aws-iot.toml --faults 'duplicate=1/500,late=1/2000:30s,malformed=1/10000'

  # Your own payload shape, or yesterday's recording ten times faster
  freezer-fleet run --config config/aws-iot.toml --template config/templates/vehicle.json
  freezer-fleet run --config config/aws-iot.toml --replay recorded.csv --speed 10

  # A mixed fleet: [[group]] tables in the config file (README, \"Device groups\")

Console while running (stdin):
  Enter          one event now from the next device in turn
  <device id>    one event now from that device (e.g. freezer3)
  all            one event now from every device
  door|defrost|fail|fix <id|all>, setpoint <id|all> <°C>   act on the freezer model
  q              stop gracefully (so do Ctrl-C and SIGTERM; a second Ctrl-C skips waiting for acknowledgements)

Exit codes: 0 done, 1 no device could connect, 2 bad input (the message names the flag or file).";

const TOP_EXAMPLES: &str = "\
Examples:
  freezer-fleet demo                                   see it all work locally, no AWS account
  freezer-fleet run --config config/aws-iot.toml       a fleet against AWS IoT Core
  freezer-fleet certs init ./pki && freezer-fleet certs issue ./pki --devices 100
  freezer-fleet watch --endpoint localhost --ca ./pki/ca.pem --certs ./pki/devices --id freezer1
  freezer-fleet command --endpoint localhost --ca ./pki/ca.pem --certs ./pki/devices --id freezer1 --to all --cmd defrost

`freezer-fleet <command> --help` shows each command's flags and examples.";

#[derive(Debug, Parser)]
#[command(name = "freezer-fleet", version, about = ABOUT, after_help = TOP_EXAMPLES)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

const DEMO_EXAMPLES: &str = "\
Examples:
  freezer-fleet demo                              5 freezers, an event every 2 s each
  freezer-fleet demo --devices 20 --interval 500ms --duration 30s

Everything runs in this process on loopback: a temporary CA and certificates (deleted at exit),
the embedded mutual-TLS broker on a free port, the freezers, and a watcher that prints every
event it receives. Press Enter to inject an event (as in `run`); q or Ctrl-C ends the demo with
the watcher's table: received, missing, duplicates, out of order, latency.";

const CERTS_EXAMPLES: &str = "\
Examples:
  freezer-fleet certs init ./pki
  freezer-fleet certs issue ./pki --devices 100            # ./pki/devices/freezer1 .. freezer100
  freezer-fleet certs issue ./pki --devices 10 --key-type rsa2048 --out ./certs/devices
  freezer-fleet run --endpoint localhost --ca ./pki/ca.pem --certs ./pki/devices";

const BROKER_EXAMPLES: &str = "\
Examples:
  freezer-fleet certs init ./pki && freezer-fleet certs issue ./pki --devices 10
  freezer-fleet broker --pki ./pki                           # 127.0.0.1:8883
  freezer-fleet run --endpoint localhost --ca ./pki/ca.pem --certs ./pki/devices";

const WATCH_EXAMPLES: &str = "\
Examples:
  # what arrives from a local broker, with a certificate issued by `certs issue`
  freezer-fleet watch --endpoint localhost --ca ./pki/ca.pem --certs ./pki/devices --id freezer1
  # AWS IoT Core, JSON lines on stdout, the table on stderr after 5 minutes
  freezer-fleet watch --endpoint abc123-ats.iot.us-east-1.amazonaws.com --ca AmazonRootCA1.pem \\
      --cert watcher-certificate.pem.crt --key watcher-private.pem.key --json --duration 5m > events.jsonl

  # The Kinesis stream the IoT rule writes to: every shard, from now on
  freezer-fleet watch --kinesis freezer_data --region eu-west-1
  # ... or everything it still holds, as JSON lines
  freezer-fleet watch --kinesis freezer_data --from trim-horizon --json --duration 1m

The client id is freezer-fleet-watch-<pid> unless --client-id says otherwise: do not reuse a
device's id, or the broker disconnects that device.";

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Launch N simulated freezers that publish over MQTT with mutual TLS.
    #[command(after_help = RUN_EXAMPLES)]
    Run(Box<RunArgs>),
    /// Everything on one machine, no AWS account: temporary PKI, embedded broker, freezers, watcher.
    #[command(after_help = DEMO_EXAMPLES)]
    Demo(DemoArgs),
    /// Make a local CA and device certificates in the layout `run --certs` reads.
    #[command(subcommand)]
    Certs(CertsCommand),
    /// Run the embedded MQTT broker with mutual TLS: a local stand-in for AWS IoT Core.
    #[command(after_help = BROKER_EXAMPLES)]
    Broker(BrokerArgs),
    /// Subscribe and print what arrives, counting gaps, duplicates, reorderings and latency per device.
    #[command(after_help = WATCH_EXAMPLES)]
    Watch(Box<WatchArgs>),
    /// Merge the JSON reports of a fleet's shards exactly, or show a report's summary.
    #[command(subcommand)]
    Report(ReportCommand),
    /// Define the fleet in AWS IoT Core (things, certificates, policy) and take it down again.
    #[command(subcommand)]
    Aws(AwsCommand),
    /// Send commands to the devices of a running fleet (`run --listen`), wait for their replies, and report round-trip latency.
    #[command(after_help = COMMAND_EXAMPLES)]
    Command(Box<CommandArgs>),
}

const COMMAND_EXAMPLES: &str = "\
Examples:
  # A fleet that listens, and a defrost for every one of its devices (--certs names the fleet;
  # ops.crt's policy must allow publishing to freezers/+/cmd and receiving freezers/+/cmd/reply)
  freezer-fleet run --config config/aws-iot.toml --certs certs/devices --listen &
  freezer-fleet command --endpoint abc123-ats.iot.eu-west-1.amazonaws.com --ca AmazonRootCA1.pem \\
      --cert ops.crt --key ops.key --certs certs/devices --to all --cmd defrost

  # Against the local broker, as one of the fleet's own identities
  freezer-fleet command --endpoint localhost --ca pki/ca.pem --certs pki/devices --id freezer1 --to all --cmd door

  # A new setpoint for two devices, at most 50 commands/s, 2 s to answer
  freezer-fleet command --endpoint localhost --port 8883 --ca pki/ca.pem --cert ops.crt --key ops.key \\
      --to freezer2,freezer3 --cmd setpoint --value -25 --rate 50 --timeout 2s --report commands.json

Each command goes to freezers/<id>/cmd as {\"id\":\"…\",\"cmd\":\"defrost\"} and is answered on
freezers/<id>/cmd/reply. Exit code 0 when every command was answered ok, 1 when one was lost (no
reply within --timeout) or refused, 2 for bad input.";

/// Flags of `command`.
#[derive(Debug, Args)]
pub struct CommandArgs {
    /// MQTT endpoint host.
    #[arg(long, value_name = "HOST", env = "FREEZER_FLEET_ENDPOINT")]
    pub endpoint: Option<String>,
    /// Endpoint port.
    #[arg(long, default_value_t = 8883, value_name = "PORT")]
    pub port: u16,
    /// Root CA of the endpoint [default: the built-in Mozilla roots].
    #[arg(long, value_name = "FILE")]
    pub ca: Option<PathBuf>,
    /// Client certificate (with --key).
    #[arg(long, value_name = "FILE", conflicts_with_all = ["id"])]
    pub cert: Option<PathBuf>,
    /// The private key of --cert.
    #[arg(long, value_name = "FILE")]
    pub key: Option<PathBuf>,
    /// A --certs folder of `run`: its device folders are the fleet (`--to all`); with --id, the identity to connect with.
    #[arg(long, value_name = "DIR")]
    pub certs: Option<PathBuf>,
    /// Which device folder of --certs to take the identity from.
    #[arg(long, value_name = "ID", requires = "certs")]
    pub id: Option<String>,
    /// MQTT client id [default: freezer-fleet-command-<pid>].
    #[arg(long, value_name = "ID")]
    pub client_id: Option<String>,
    /// Which devices: all, or device ids, comma-separated.
    #[arg(long, value_name = "all|ID[,ID...]", value_delimiter = ',', required = true)]
    pub to: Vec<String>,
    /// With --to all and no --certs: the fleet is <id-prefix>1..<id-prefix>N.
    #[arg(long, value_name = "N")]
    pub devices: Option<usize>,
    /// Device id prefix, with --devices.
    #[arg(long, default_value = "freezer", value_name = "PREFIX")]
    pub id_prefix: String,
    /// The command: door, defrost, fail, fix, or setpoint (with --value).
    #[arg(long, value_name = "CMD", required = true)]
    pub cmd: String,
    /// The command's value (setpoint: °C).
    #[arg(long, value_name = "V", allow_negative_numbers = true)]
    pub value: Option<f64>,
    /// Commands per second, at most [default: 100].
    #[arg(long, value_name = "R")]
    pub rate: Option<f64>,
    /// How long a device has to answer before its command counts as lost [default: 5s].
    #[arg(long, value_name = "DURATION")]
    pub timeout: Option<String>,
    /// Write a JSON report here at the end; `-` = stdout.
    #[arg(long, value_name = "FILE")]
    pub report: Option<PathBuf>,
}

const AWS_EXAMPLES: &str = "\
Examples:
  freezer-fleet aws provision --devices 100 --thing-type freezer --thing-group freezers --region eu-west-1
  freezer-fleet run --endpoint $(freezer-fleet aws endpoint --region eu-west-1) --ca certs/AmazonRootCA1.pem --certs certs/devices
  freezer-fleet aws teardown --thing-group freezers --thing-type freezer --dry-run
  freezer-fleet aws teardown --thing-group freezers --thing-type freezer

  # Keys made on this machine, never sent: certificates signed by a local CA, registered without it
  freezer-fleet certs init ./pki && freezer-fleet aws provision --devices 10 --certs-from-ca ./pki

Everything provision makes carries createdBy=freezer-fleet; teardown deletes nothing else. Provision
is resumable: run it again after an interruption and it continues, making nothing twice.";

#[derive(Debug, Subcommand)]
pub enum AwsCommand {
    /// Things, certificates and the policy for N devices, their files in the layout `run --certs` reads.
    #[command(after_help = AWS_EXAMPLES)]
    Provision(Box<ProvisionArgs>),
    /// Remove what provision made: certificates detached, deactivated and deleted, things deleted, then the group, type and policy when empty.
    #[command(after_help = AWS_EXAMPLES)]
    Teardown(Box<TeardownArgs>),
    /// Print the account's device data endpoint (iot:Data-ATS), what `run --endpoint` needs.
    #[command(after_help = AWS_EXAMPLES)]
    Endpoint(AwsArgs),
}

/// Where the commands that call AWS find credentials and the region.
#[derive(Debug, Clone, Args)]
pub struct AwsArgs {
    /// AWS region [default: AWS_REGION, the profile's, or (run) the IoT endpoint's].
    #[arg(long, value_name = "REGION")]
    pub region: Option<String>,
    /// AWS profile of ~/.aws/config and ~/.aws/credentials [default: AWS_PROFILE, or default].
    #[arg(long, value_name = "PROFILE")]
    pub aws_profile: Option<String>,
    /// Assume this IAM role with STS first.
    #[arg(long, value_name = "ARN")]
    pub role_arn: Option<String>,
    /// The external id the role's trust policy asks for (with --role-arn).
    #[arg(long, value_name = "ID")]
    pub external_id: Option<String>,
}

#[derive(Debug, Args)]
pub struct ProvisionArgs {
    /// How many devices: things PREFIX1..PREFIXN.
    #[arg(long, value_name = "N")]
    pub devices: usize,
    /// Thing names (and MQTT client ids) are PREFIX1..PREFIXN.
    #[arg(long, default_value = "freezer", value_name = "PREFIX")]
    pub id_prefix: String,
    /// Where the device folders go (the folder `run --certs` takes); AmazonRootCA1.pem goes beside it.
    #[arg(long, default_value = "certs/devices", value_name = "DIR")]
    pub out: PathBuf,
    /// Give every thing this thing type (made if missing).
    #[arg(long, value_name = "NAME")]
    pub thing_type: Option<String>,
    /// Put every thing in this thing group (made if missing).
    #[arg(long, value_name = "NAME")]
    pub thing_group: Option<String>,
    /// The policy attached to every certificate (made if missing).
    #[arg(long, default_value = "freezer-policy", value_name = "NAME")]
    pub policy: String,
    /// The policy document to make --policy with [default: connect as its own thing, publish to --topic, nothing more].
    #[arg(long, value_name = "FILE")]
    pub policy_file: Option<PathBuf>,
    /// The topic the default policy allows publishing to.
    #[arg(long, default_value = "freezers", value_name = "TOPIC")]
    pub topic: String,
    /// Sign device certificates locally with this CA (a `certs init` folder: ca.pem, ca.key) and register them without it (multi-account registration): the keys never leave this machine.
    #[arg(long, value_name = "DIR")]
    pub certs_from_ca: Option<PathBuf>,
    /// Registry calls per second (AWS allows about 10-15 for CreateThing and its kin).
    #[arg(long, default_value_t = 10.0, value_name = "R")]
    pub rate: f64,
    #[command(flatten)]
    pub aws: AwsArgs,
}

#[derive(Debug, Args)]
pub struct TeardownArgs {
    /// The things named PREFIX… that provision made [default: freezer].
    #[arg(long, value_name = "PREFIX")]
    pub id_prefix: Option<String>,
    /// The things in this group that provision made, then the group itself when empty.
    #[arg(long, value_name = "NAME")]
    pub thing_group: Option<String>,
    /// Also the thing type, when provision made it.
    #[arg(long, value_name = "NAME")]
    pub thing_type: Option<String>,
    /// Also this policy, when provision wrote it and nothing uses it any more.
    #[arg(long, default_value = "freezer-policy", value_name = "NAME")]
    pub policy: String,
    /// The device folders provision wrote: the files of deleted certificates are removed from it too.
    #[arg(long, default_value = "certs/devices", value_name = "DIR")]
    pub out: PathBuf,
    /// List what would be removed, remove nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Registry calls per second.
    #[arg(long, default_value_t = 10.0, value_name = "R")]
    pub rate: f64,
    #[command(flatten)]
    pub aws: AwsArgs,
}

const REPORT_EXAMPLES: &str = "\
Examples:
  freezer-fleet run --config fleet.toml --shard 0/2 --report shard0.json
  freezer-fleet run --config fleet.toml --shard 1/2 --report shard1.json
  freezer-fleet report merge shard0.json shard1.json --out fleet.json
  freezer-fleet report show fleet.json

Counts are summed and the latency histograms added, so the merged percentiles are those of the
whole fleet, not an average of the shards' percentiles.";

#[derive(Debug, Subcommand)]
pub enum ReportCommand {
    /// Add reports up exactly: counts summed, HDR histograms added, percentiles recomputed.
    #[command(after_help = REPORT_EXAMPLES)]
    Merge {
        /// Reports written with `run --report FILE`.
        #[arg(value_name = "REPORT", required = true)]
        files: Vec<PathBuf>,
        /// Write the merged report here [default: stdout].
        #[arg(long, value_name = "FILE")]
        out: Option<PathBuf>,
    },
    /// Print a report's summary, as the run printed it.
    #[command(after_help = REPORT_EXAMPLES)]
    Show {
        #[arg(value_name = "REPORT")]
        file: PathBuf,
        /// Also write the report as one self-contained HTML page with its plots.
        #[arg(long, value_name = "OUT.html")]
        html: Option<PathBuf>,
    },
}

#[derive(Debug, Args)]
pub struct DemoArgs {
    /// How many freezers.
    #[arg(long, default_value_t = 5, value_name = "N")]
    pub devices: usize,
    /// Time between a freezer's timed events; 0 = on demand only.
    #[arg(long, default_value = "2s", value_name = "DURATION")]
    pub interval: String,
    /// Stop after this long [default: until q or Ctrl-C].
    #[arg(long, value_name = "DURATION")]
    pub duration: Option<String>,
    /// MQTT QoS, 0 or 1.
    #[arg(long, default_value_t = 1, value_name = "0|1")]
    pub qos: u8,
    /// Seed for reproducible readings [default: random].
    #[arg(long, value_name = "N")]
    pub seed: Option<u64>,
    /// How much faster than real time the freezers live: 60 = a day in 24 minutes, so door openings, defrosts and (rarely) faults show within minutes.
    #[arg(long, default_value_t = 60.0, value_name = "K")]
    pub speed: f64,
    /// The model's fields in every event (state, setpoint, door, alarm, or all).
    #[arg(
        long,
        default_value = "state,alarm",
        value_name = "FIELD[,FIELD...]",
        value_delimiter = ','
    )]
    pub fields: Vec<String>,
}

#[derive(Debug, Subcommand)]
pub enum CertsCommand {
    /// Create DIR/ca.pem, ca.key, server.pem, server.key (keys 0600): a local CA and a server
    /// certificate for localhost, 127.0.0.1 and ::1. Existing files are kept.
    #[command(after_help = CERTS_EXAMPLES)]
    Init {
        /// Folder for the CA and server files.
        #[arg(value_name = "DIR")]
        dir: PathBuf,
        /// Key algorithm.
        #[arg(long, value_enum, default_value = "p256")]
        key_type: crate::local::pki::KeyType,
    },
    /// Issue N device certificates signed by DIR's CA (or --ca-cert/--ca-key) as
    /// OUT/<id>/<id>-certificate.pem.crt and OUT/<id>/<id>-private.pem.key (0600). Re-running adds
    /// missing devices and never overwrites a key.
    #[command(after_help = CERTS_EXAMPLES)]
    Issue {
        /// Folder made by `certs init`.
        #[arg(value_name = "DIR")]
        dir: PathBuf,
        /// How many devices.
        #[arg(long, value_name = "N")]
        devices: usize,
        /// Device ids are PREFIX1..PREFIXN.
        #[arg(long, default_value = "freezer", value_name = "PREFIX")]
        id_prefix: String,
        /// Where the device folders go [default: DIR/devices].
        #[arg(long, value_name = "DIR")]
        out: Option<PathBuf>,
        /// Sign with this CA certificate instead of DIR/ca.pem (with --ca-key).
        #[arg(long, value_name = "FILE", requires = "ca_key")]
        ca_cert: Option<PathBuf>,
        /// The key of --ca-cert.
        #[arg(long, value_name = "FILE", requires = "ca_cert")]
        ca_key: Option<PathBuf>,
        /// Key algorithm of the device keys.
        #[arg(long, value_enum, default_value = "p256")]
        key_type: crate::local::pki::KeyType,
    },
}

#[derive(Debug, Args)]
pub struct BrokerArgs {
    /// Folder made by `certs init` (ca.pem, server.pem, server.key).
    #[arg(long, value_name = "DIR")]
    pub pki: PathBuf,
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8883", value_name = "ADDR")]
    pub listen: std::net::SocketAddr,
}

#[derive(Debug, Args)]
pub struct WatchArgs {
    /// MQTT endpoint host (not with --kinesis).
    #[arg(long, value_name = "HOST", env = "FREEZER_FLEET_ENDPOINT")]
    pub endpoint: Option<String>,
    /// Endpoint port.
    #[arg(long, default_value_t = 8883, value_name = "PORT")]
    pub port: u16,
    /// Root CA of the endpoint [default: the built-in Mozilla roots].
    #[arg(long, value_name = "FILE")]
    pub ca: Option<PathBuf>,
    /// Client certificate (with --key).
    #[arg(long, value_name = "FILE", conflicts_with_all = ["certs", "id"])]
    pub cert: Option<PathBuf>,
    /// The private key of --cert.
    #[arg(long, value_name = "FILE")]
    pub key: Option<PathBuf>,
    /// A --certs folder of `run`; use the identity in its sub-folder --id.
    #[arg(long, value_name = "DIR", requires = "id")]
    pub certs: Option<PathBuf>,
    /// Which device folder of --certs to take the identity from.
    #[arg(long, value_name = "ID", requires = "certs")]
    pub id: Option<String>,
    /// MQTT client id [default: freezer-fleet-watch-<pid>].
    #[arg(long, value_name = "ID")]
    pub client_id: Option<String>,
    /// Topic filter to subscribe to (+ and # allowed).
    #[arg(long, default_value = "freezers", value_name = "FILTER")]
    pub topic: String,
    /// Print each received JSON object on stdout, one per line; the table goes to stderr.
    #[arg(long)]
    pub json: bool,
    /// Stop after this long [default: until Ctrl-C or SIGTERM].
    #[arg(long, value_name = "DURATION")]
    pub duration: Option<String>,

    /// Read this Kinesis data stream instead of an MQTT topic: every shard, splits and merges followed, as the analytics side does.
    #[arg(long, value_name = "STREAM")]
    pub kinesis: Option<String>,

    /// With --kinesis: where to start, latest, trim-horizon (all the stream holds) or an RFC 3339 time [default: latest].
    #[arg(long, value_name = "latest|trim-horizon|TIME")]
    pub from: Option<String>,

    /// With --kinesis: AWS credentials and region.
    #[command(flatten)]
    pub aws: AwsArgs,
}

/// Flags of `run`. Every value may also come from `--config`; a flag given here wins.
#[derive(Debug, Args)]
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

    /// Connect at most R devices per second, fleet-wide, reconnects included (AWS's default account limit is 500/s) [default: no limit].
    #[arg(long, value_name = "R")]
    pub ramp_up: Option<u32>,

    /// First wait before reconnecting; doubles per failure, with full jitter [default: 1s].
    #[arg(long, value_name = "DURATION")]
    pub backoff_min: Option<String>,

    /// Longest wait before reconnecting [default: 30s].
    #[arg(long, value_name = "DURATION")]
    pub backoff_max: Option<String>,

    /// A device stops for good after this long without a success (no CONNACK, nothing acknowledged) [default: never: devices retry until the run ends, as AWS's device SDKs do].
    #[arg(long, value_name = "DURATION")]
    pub give_up_after: Option<String>,

    /// Events a device keeps while it cannot send them; beyond it the oldest are dropped and counted [default: 1000].
    #[arg(long, value_name = "N")]
    pub offline_queue: Option<usize>,

    /// Connect with clean session off, so the broker keeps each device's session across reconnects (IoT Core keeps it an hour).
    #[arg(long)]
    pub persistent_session: bool,

    /// Fleet-wide target publishes per second, spread evenly over devices and time (instead of --interval); `max` = as fast as each connection allows.
    #[arg(long, value_name = "M|max", conflicts_with = "interval")]
    pub rate: Option<String>,

    /// Stop after K events per device (timed events; the run ends when every device has sent its K).
    #[arg(long, value_name = "K")]
    pub count: Option<u64>,

    /// Pad each message to exactly B bytes with a `pad` field, for throughput tests.
    #[arg(long, value_name = "B")]
    pub payload_bytes: Option<usize>,

    /// QoS 1 publishes awaiting PUBACK per device (IoT Core allows 100) [default: 100].
    #[arg(long, value_name = "F")]
    pub max_inflight: Option<u16>,

    /// Write a JSON report here at the end; `-` = stdout.
    #[arg(long, value_name = "FILE")]
    pub report: Option<PathBuf>,

    /// Local source addresses, used round-robin by device, to go past ~28k connections per address to one endpoint.
    #[arg(long, value_name = "ADDR[,ADDR...]", value_delimiter = ',')]
    pub bind: Option<Vec<String>>,

    /// How devices reach the endpoint: mqtt (port 8883), https (IoT Core's HTTPS publish, port 8443), or mqtt-ws (MQTT over WebSockets signed with AWS credentials, port 443) [default: mqtt].
    #[arg(long, value_enum, value_name = "mqtt|https|mqtt-ws")]
    pub transport: Option<crate::config::TransportKind>,

    /// Run shard I of N: devices I, I+N, I+2N, … of the fleet (ids unchanged) [default: JOB_COMPLETION_INDEX of FREEZER_FLEET_SHARDS when both are set, else the whole fleet].
    #[arg(long, value_name = "I/N")]
    pub shard: Option<String>,

    /// Serve Prometheus metrics at http://ADDR:PORT/metrics while running (e.g. 0.0.0.0:9464 in a pod).
    #[arg(long, value_name = "ADDR:PORT")]
    pub metrics: Option<String>,

    /// Start the schedule at this wall-clock time, e.g. 2026-11-28T09:00:00Z, so every shard starts together (devices connect before) [default: now].
    #[arg(long, value_name = "RFC3339")]
    pub start_at: Option<String>,

    /// Where events go: mqtt (the --endpoint), kinesis (--stream), firehose (--delivery-stream), firehose-proxy (--url); several, comma-separated, send every event to each [default: mqtt].
    #[arg(long, value_name = "SINK[,SINK...]", value_delimiter = ',')]
    pub sink: Option<Vec<String>>,

    /// The Kinesis data stream of --sink kinesis, e.g. freezer_data.
    #[arg(long, value_name = "NAME")]
    pub stream: Option<String>,

    /// The Firehose delivery stream of --sink firehose and firehose-proxy.
    #[arg(long, value_name = "NAME")]
    pub delivery_stream: Option<String>,

    /// The https:// URL of the proxy in front of Firehose (--sink firehose-proxy), e.g. an API Gateway stage and resource.
    #[arg(long, value_name = "URL")]
    pub url: Option<String>,

    /// An extra request header for the proxy, 'Name: value' (e.g. 'x-api-key: …'); repeatable. Values are never logged.
    #[arg(long, value_name = "'NAME: VALUE'")]
    pub header: Option<Vec<String>>,

    /// AWS credentials and region (kinesis, firehose, mqtt-ws): the role's temporary credentials are refreshed before they expire.
    #[command(flatten)]
    pub aws: AwsArgs,

    /// The assumed role's session name, as CloudTrail shows it (with --role-arn) [default: freezer-fleet].
    #[arg(long, value_name = "NAME")]
    pub role_session_name: Option<String>,

    /// MQTT version: 3.1.1, or 5 (the server's CONNACK/PUBACK/DISCONNECT reason codes by name) [default: 3.1.1].
    #[arg(long, value_enum, value_name = "3.1.1|5")]
    pub mqtt_version: Option<crate::config::MqttVersion>,

    /// TLS ALPN protocol to offer [default: x-amzn-mqtt-ca on port 443, as IoT Core needs for MQTT there; none elsewhere].
    #[arg(long, value_name = "PROTO")]
    pub alpn: Option<String>,

    /// Publish to IoT Core's Basic Ingest topic $aws/rules/RULE/<topic>: straight to the rule, no message-broker cost (nothing can subscribe to it).
    #[arg(long, value_name = "RULE")]
    pub basic_ingest: Option<String>,

    /// Enforce a service's documented limits [default: aws-iot for *.amazonaws.com endpoints, else none].
    #[arg(long, value_enum, value_name = "PROFILE")]
    pub profile: Option<Profile>,

    /// Check the configuration and every device identity, print what would run, and exit without connecting.
    #[arg(long)]
    pub check: bool,

    /// Fail the run (exit 3) when this holds at the end, e.g. 'puback.p99 > 250ms', 'lost > 0', 'connect.failed_ratio > 1%'; repeatable (README lists the metrics).
    #[arg(long, value_name = "EXPR")]
    pub fail_if: Option<Vec<String>>,

    /// Run these stages in order (a TOML file of [[stage]] tables: name, duration, rate, rate_to, disconnect = "all"; a last "drain" ends the run); figures per stage in the report.
    #[arg(long, value_name = "FILE.toml")]
    pub scenario: Option<PathBuf>,

    /// Run the freezer model K times faster than real time (door openings, defrosts every few hours, faults, alarms): 60 = a day in 24 minutes [default: 1].
    #[arg(long, value_name = "K")]
    pub speed: Option<f64>,

    /// Add the model's fields to every event: state (cooling|idle|defrost|door_open|fault), setpoint, door (door_open), alarm; or all [default: none, the five usual fields only].
    #[arg(long, value_name = "FIELD[,FIELD...]", value_delimiter = ',')]
    pub fields: Option<Vec<String>>,

    /// A freezer is in alarm when its temperature stays above this (°C) for --alarm-after [default: -10].
    #[arg(long, value_name = "C", allow_negative_numbers = true)]
    pub alarm_above: Option<f64>,

    /// How long (simulated time) above --alarm-above before the alarm [default: 15m].
    #[arg(long, value_name = "DURATION")]
    pub alarm_after: Option<String>,

    /// Send each event as this JSON template renders it: values like "{{id}}", "{{seq}}", "{{freezer.temperature}}", "{{pick:['north','south']}}", "{{sin:period=60s,min=0,max=3}}" (README lists every generator); see config/templates/.
    #[arg(long, value_name = "FILE.json")]
    pub template: Option<PathBuf>,

    /// Replay recorded data instead of the model: a CSV with a header, or JSON lines (.jsonl/.ndjson); each row goes to the device it names at its recorded offset from the first row (scaled by --speed), its time column moved to now.
    #[arg(long, value_name = "FILE")]
    pub replay: Option<PathBuf>,

    /// The --replay column that names the device [default: device_id].
    #[arg(long, value_name = "NAME")]
    pub replay_device_column: Option<String>,

    /// The --replay column with each row's time, Unix milliseconds or RFC 3339 [default: ts].
    #[arg(long, value_name = "NAME")]
    pub replay_time_column: Option<String>,

    /// Start --replay over when the file is done, until --duration or q.
    #[arg(long)]
    pub replay_loop: bool,

    /// Inject data faults for the consumers downstream, each a chance per event: duplicate=1/500, reorder=1/1000, late=1/2000:30s, skew=±2s (per device), burst-after-offline=1/5000:20s, malformed=1/10000; every one is counted in the report.
    #[arg(long, value_name = "KIND=1/N[:D],...")]
    pub faults: Option<String>,

    /// Devices listen to the cloud (MQTT only): the Device Shadow ($aws/things/<id>/shadow/...: a delta's setpoint is applied and reported) and commands on freezers/<id>/cmd, answered on freezers/<id>/cmd/reply.
    #[arg(long)]
    pub listen: bool,

    /// Write one CSV row per second: elapsed, devices connected, attempts, published, acknowledged, failed, dropped, in flight, PUBACK p50/p99 and lag p99 of that second.
    #[arg(long, value_name = "FILE.csv")]
    pub timeseries: Option<PathBuf>,
}

impl RunArgs {
    /// The flags as a config layer; `--config` itself is returned apart.
    pub fn into_layer(self) -> (Layer, Option<PathBuf>) {
        let layer = Layer {
            endpoint: self.endpoint,
            port: self.port,
            ca: self.ca,
            certs: self.certs,
            cert: self.cert,
            key: self.key,
            devices: self.devices,
            id_prefix: self.id_prefix,
            topic: self.topic,
            interval: self.interval,
            qos: self.qos,
            duration: self.duration,
            seed: self.seed,
            keep_alive: self.keep_alive,
            drain_timeout: self.drain_timeout,
            ramp_up: self.ramp_up,
            backoff_min: self.backoff_min,
            backoff_max: self.backoff_max,
            give_up_after: self.give_up_after,
            offline_queue: self.offline_queue,
            persistent_session: self.persistent_session.then_some(true),
            rate: self.rate.map(RateValue::Text),
            count: self.count,
            payload_bytes: self.payload_bytes,
            speed: self.speed,
            fields: self.fields,
            alarm_above: self.alarm_above,
            alarm_after: self.alarm_after,
            listen: self.listen.then_some(true),
            faults: self.faults,
            template: self.template,
            replay: self.replay,
            replay_device_column: self.replay_device_column,
            replay_time_column: self.replay_time_column,
            replay_loop: self.replay_loop.then_some(true),
            max_inflight: self.max_inflight,
            report: self.report,
            profile: self.profile,
            bind: self.bind,
            alpn: self.alpn,
            basic_ingest: self.basic_ingest,
            mqtt_version: self.mqtt_version,
            transport: self.transport,
            region: self.aws.region,
            aws_profile: self.aws.aws_profile,
            shard: self.shard,
            metrics: self.metrics,
            start_at: self.start_at,
            sink: self.sink,
            stream: self.stream,
            delivery_stream: self.delivery_stream,
            url: self.url,
            header: self.header,
            role_arn: self.aws.role_arn,
            external_id: self.aws.external_id,
            role_session_name: self.role_session_name,
            fail_if: self.fail_if,
            timeseries: self.timeseries,
            scenario: self.scenario,
            group: None,
            stage: None,
            thresholds: None,
        };
        (layer, self.config)
    }
}

impl From<WatchArgs> for WatchFlags {
    fn from(a: WatchArgs) -> WatchFlags {
        WatchFlags {
            endpoint: a.endpoint,
            port: a.port,
            ca: a.ca,
            cert: a.cert,
            key: a.key,
            certs: a.certs,
            id: a.id,
            client_id: a.client_id,
            topic: a.topic,
            json: a.json,
            duration: a.duration,
            kinesis: a.kinesis,
            from: a.from,
            region: a.aws.region,
            aws_profile: a.aws.aws_profile,
            role_arn: a.aws.role_arn,
            external_id: a.aws.external_id,
        }
    }
}
