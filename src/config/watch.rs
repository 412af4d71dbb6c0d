//! The watcher's settings: what `watch` was given, checked and turned into a ready TLS identity.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Result;
use rustls::ClientConfig;

use super::validate;
use crate::identity::{self, IdentityFiles, TrustSource, layout};
use crate::input;

/// The flags of `watch`, as given.
#[derive(Debug, Clone, Default)]
pub struct WatchFlags {
    pub endpoint: Option<String>,
    pub port: u16,
    pub ca: Option<PathBuf>,
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
    pub certs: Option<PathBuf>,
    pub id: Option<String>,
    pub client_id: Option<String>,
    pub topic: String,
    pub json: bool,
    pub duration: Option<String>,
    pub kinesis: Option<String>,
    pub from: Option<String>,
    pub region: Option<String>,
    pub aws_profile: Option<String>,
    pub role_arn: Option<String>,
    pub external_id: Option<String>,
}

/// What to watch: an MQTT topic, or a Kinesis stream.
pub enum Watch {
    Mqtt(WatchConfig),
    Kinesis(KinesisWatch),
}

/// A watcher of a Kinesis data stream.
pub struct KinesisWatch {
    pub stream: String,
    pub from: StartFrom,
    pub aws: crate::aws::credentials::Source,
    pub json: bool,
    pub duration: Option<Duration>,
}

impl Watch {
    pub fn resolve(f: WatchFlags) -> Result<Watch> {
        let Some(stream) = f.kinesis.clone() else {
            if let Some(flag) = [
                (f.from.is_some(), "--from"),
                (f.role_arn.is_some(), "--role-arn"),
                (f.external_id.is_some(), "--external-id"),
            ]
            .iter()
            .find_map(|(given, flag)| given.then_some(*flag))
            {
                return Err(input!(
                    "{flag} belongs to --kinesis STREAM: give the stream to read, or leave {flag} out"
                ));
            }
            return WatchConfig::resolve(f).map(Watch::Mqtt);
        };
        for (given, flag) in [
            (f.cert.is_some(), "--cert"),
            (f.key.is_some(), "--key"),
            (f.certs.is_some(), "--certs"),
            (f.client_id.is_some(), "--client-id"),
        ] {
            if given {
                return Err(input!(
                    "{flag}: --kinesis reads the stream with AWS credentials, not an MQTT identity; leave {flag} out"
                ));
            }
        }
        let stream = super::sinks::stream_name(
            Some(super::Sourced::flag(stream, "--kinesis")),
            None,
            "--kinesis",
            128,
        )?
        .unwrap_or_default();
        let from = match f.from.as_deref().map(str::trim) {
            None | Some("latest") => StartFrom::Latest,
            Some("trim-horizon") => StartFrom::TrimHorizon,
            Some(t) => StartFrom::At(humantime::parse_rfc3339_weak(t).map_err(|_| {
                input!(
                    "--from {t}: give latest, trim-horizon or an RFC 3339 time such as 2026-12-01T09:00:00Z"
                )
            })?),
        };
        let arn = super::sinks::role_arn(f.role_arn.map(|a| super::Sourced::flag(a, "--role-arn")))?;
        let (external_id, session_name) = super::sinks::role_extras(
            f.external_id.map(|e| super::Sourced::flag(e, "--external-id")),
            None,
            arn.is_some(),
        )?;
        let duration = f
            .duration
            .as_deref()
            .map(|d| validate::parse_duration(d, "--duration"))
            .transpose()?;
        Ok(Watch::Kinesis(KinesisWatch {
            stream,
            from,
            aws: crate::aws::credentials::Source {
                region: f.region,
                fallback_region: None,
                profile: f.aws_profile,
                role: arn.map(|arn| crate::aws::credentials::Role {
                    arn,
                    external_id,
                    session_name,
                }),
            },
            json: f.json,
            duration,
        }))
    }
}

/// A watcher ready to connect.
#[derive(Clone)]
pub struct WatchConfig {
    pub host: String,
    pub port: u16,
    pub tls: Arc<ClientConfig>,
    pub client_id: String,
    pub topic: String,
    /// Print each received JSON object on stdout, one per line, instead of a human line.
    pub json: bool,
    pub duration: Option<Duration>,
}

impl WatchConfig {
    pub fn resolve(f: WatchFlags) -> Result<WatchConfig> {
        let endpoint = f.endpoint.clone().ok_or_else(|| {
            input!(
                "--endpoint is missing: give the MQTT endpoint host (or set FREEZER_FLEET_ENDPOINT), or \
                 --kinesis STREAM to read a Kinesis stream"
            )
        })?;
        validate::endpoint(&endpoint, "--endpoint")?;
        validate::topic_filter(&f.topic, "--topic")?;
        basic_ingest_note(&endpoint, &f.topic)?;
        let duration = f
            .duration
            .as_deref()
            .map(|d| validate::parse_duration(d, "--duration"))
            .transpose()?;
        let roots = identity::load_roots(&TrustSource::from_flag(f.ca.clone()))?;
        let alpn = super::settings::alpn(None, f.port, super::TransportKind::Mqtt);
        let tls = identity::client_config(&watch_identity(&f)?, roots, &alpn)?;
        Ok(WatchConfig {
            host: endpoint,
            port: f.port,
            tls,
            client_id: f
                .client_id
                .unwrap_or_else(|| format!("freezer-fleet-watch-{}", std::process::id())),
            topic: f.topic,
            json: f.json,
            duration,
        })
    }
}

/// Nothing can subscribe to a Basic Ingest topic on IoT Core: its messages go straight to the
/// rule. Refused for an AWS endpoint; elsewhere (a local broker) only a note.
fn basic_ingest_note(endpoint: &str, filter: &str) -> Result<()> {
    if !filter.starts_with("$aws/rules/") {
        return Ok(());
    }
    let why = "Basic Ingest topics ($aws/rules/...) skip the message broker: nothing can subscribe to \
               them on AWS IoT Core; watch the rule's destination instead (e.g. the Kinesis stream)";
    if super::Profile::for_endpoint(endpoint) == super::Profile::AwsIot {
        return Err(input!("--topic {filter}: {why}"));
    }
    tracing::warn!("--topic {filter}: {why}; this endpoint is not IoT Core, so watching anyway");
    Ok(())
}

/// The identity the watcher connects with.
fn watch_identity(f: &WatchFlags) -> Result<IdentityFiles> {
    match (&f.cert, &f.key, &f.certs, &f.id) {
        (Some(cert), Some(key), None, None) => Ok(IdentityFiles {
            cert: cert.clone(),
            key: key.clone(),
            cert_label: "--cert".into(),
            key_label: "--key".into(),
        }),
        (None, None, Some(dir), Some(id)) => layout::scan_cert_folders(dir, "--certs")?
            .into_iter()
            .find(|folder| &folder.id == id)
            .map(|folder| folder.files)
            .ok_or_else(|| input!("--id {id}: {} has no device folder named {id}", dir.display())),
        (Some(_), None, _, _) => Err(input!(
            "--cert is given without --key: pass the private key of the certificate"
        )),
        (None, Some(_), _, _) => Err(input!(
            "--key is given without --cert: pass the certificate of the key"
        )),
        _ => Err(input!(
            "no identity for the watcher: pass --cert FILE --key FILE, or --certs DIR --id ID"
        )),
    }
}

/// Where to start reading the shards that exist when the watcher starts.
#[derive(Debug, Clone, PartialEq)]
pub enum StartFrom {
    /// Only what arrives from now on.
    Latest,
    /// Everything the stream still holds.
    TrimHorizon,
    /// What arrived at or after this time.
    At(std::time::SystemTime),
}
