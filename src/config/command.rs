//! The settings of `command`: who sends (an MQTT identity, as `watch` has), to which devices,
//! what, how fast and how long to wait for the replies.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Result;

use super::validate;
use super::watch::{WatchConfig, WatchFlags};
use crate::freezer::Action;
use crate::identity::layout;
use crate::input;

/// The default pace and patience.
pub const DEFAULT_RATE: f64 = 100.0;
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);
/// The replies' topic filter, for every device of the fleet.
pub const REPLY_FILTER: &str = "freezers/+/cmd/reply";

/// The flags of `command`, as given.
#[derive(Debug, Clone, Default)]
pub struct CommandFlags {
    pub endpoint: Option<String>,
    pub port: u16,
    pub ca: Option<PathBuf>,
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
    pub certs: Option<PathBuf>,
    pub id: Option<String>,
    pub client_id: Option<String>,
    pub to: Vec<String>,
    pub devices: Option<usize>,
    pub id_prefix: String,
    pub cmd: String,
    pub value: Option<f64>,
    pub rate: Option<f64>,
    pub timeout: Option<String>,
    pub report: Option<PathBuf>,
}

/// A command run ready to connect.
pub struct CommandConfig {
    /// The client: endpoint, TLS identity, client id (the watcher's kind of client).
    pub client: WatchConfig,
    /// The devices, in the order commands go out.
    pub targets: Vec<String>,
    pub cmd: String,
    pub value: Option<f64>,
    pub rate: f64,
    pub timeout: Duration,
    pub report: Option<PathBuf>,
}

impl CommandConfig {
    pub fn resolve(f: CommandFlags) -> Result<CommandConfig> {
        Action::parse(f.cmd.trim(), f.value).map_err(|why| input!("--cmd {}: {why} (--value V)", f.cmd))?;
        if f.value.is_some() && f.cmd.trim() != "setpoint" {
            return Err(input!(
                "--value belongs to --cmd setpoint; {} takes no value: leave --value out",
                f.cmd
            ));
        }
        let rate = match f.rate {
            None => DEFAULT_RATE,
            Some(r) if r.is_finite() && r > 0.0 => r,
            Some(r) => return Err(input!("--rate {r}: give commands per second above 0, e.g. 100")),
        };
        let timeout = f
            .timeout
            .as_deref()
            .map(|t| validate::parse_duration(t, "--timeout"))
            .transpose()?
            .unwrap_or(DEFAULT_TIMEOUT);
        if timeout.is_zero() {
            return Err(input!("--timeout 0: give the devices time to answer, e.g. 5s"));
        }
        let targets = targets(&f)?;
        let watch = WatchFlags {
            endpoint: f.endpoint,
            port: f.port,
            ca: f.ca,
            cert: f.cert,
            key: f.key,
            // The folder names the fleet; it is the identity only with --id.
            certs: f.id.is_some().then_some(f.certs.clone()).flatten(),
            id: f.id,
            client_id: Some(
                f.client_id
                    .unwrap_or_else(|| format!("freezer-fleet-command-{}", std::process::id())),
            ),
            topic: REPLY_FILTER.into(),
            ..Default::default()
        };
        Ok(CommandConfig {
            client: WatchConfig::resolve(watch)?,
            targets,
            cmd: f.cmd.trim().to_string(),
            value: f.value,
            rate,
            timeout,
            report: f.report,
        })
    }
}

/// `--to all` (the folders of --certs, or --devices N) or a list of ids.
fn targets(f: &CommandFlags) -> Result<Vec<String>> {
    let to: Vec<&str> = f.to.iter().map(|t| t.trim()).filter(|t| !t.is_empty()).collect();
    if to.is_empty() {
        return Err(input!(
            "--to is empty: give all, or device ids such as freezer1,freezer2"
        ));
    }
    if to != ["all"] {
        if to.contains(&"all") {
            return Err(input!(
                "--to: all means every device; give it alone, or list ids without it"
            ));
        }
        for id in &to {
            if id.contains(['/', '+', '#']) {
                return Err(input!(
                    "--to {id}: a device id cannot hold '/', '+' or '#' (it is part of the topic freezers/<id>/cmd)"
                ));
            }
        }
        let mut seen = std::collections::BTreeSet::new();
        if let Some(twice) = to.iter().find(|id| !seen.insert(**id)) {
            return Err(input!("--to: {twice} is listed twice; list each device once"));
        }
        return Ok(to.into_iter().map(String::from).collect());
    }
    match (f.devices, &f.certs) {
        (Some(0), _) => Err(input!("--devices 0: give at least 1")),
        (Some(n), _) => Ok((1..=n).map(|i| format!("{}{i}", f.id_prefix)).collect()),
        (None, Some(dir)) => {
            let mut ids: Vec<String> = layout::scan_cert_folders(dir, "--certs")?
                .into_iter()
                .map(|folder| folder.id)
                .collect();
            ids.sort_by_key(|id| natural(id));
            Ok(ids)
        }
        (None, None) => Err(input!(
            "--to all needs the fleet's ids: pass --certs DIR (its device folders) or --devices N (ids {}1..N)",
            f.id_prefix
        )),
    }
}

/// freezer2 before freezer10.
fn natural(id: &str) -> (String, u64) {
    let digits = id.len() - id.trim_end_matches(|c: char| c.is_ascii_digit()).len();
    let (head, tail) = id.split_at(id.len() - digits);
    (head.to_string(), tail.parse().unwrap_or(0))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flags(to: &[&str]) -> CommandFlags {
        CommandFlags {
            to: to.iter().map(|s| s.to_string()).collect(),
            id_prefix: "freezer".into(),
            cmd: "defrost".into(),
            ..Default::default()
        }
    }

    #[test]
    fn targets_from_a_list_or_the_fleet() {
        assert_eq!(
            targets(&flags(&["freezer2", "freezer3"])).unwrap(),
            ["freezer2", "freezer3"]
        );
        let mut all = flags(&["all"]);
        all.devices = Some(3);
        assert_eq!(targets(&all).unwrap(), ["freezer1", "freezer2", "freezer3"]);
        let err = |f: CommandFlags| targets(&f).unwrap_err().to_string();
        assert!(err(flags(&["all"])).contains("--to all needs the fleet's ids"));
        assert!(err(flags(&["all", "freezer1"])).contains("give it alone"));
        assert!(err(flags(&["freezer1", "freezer1"])).contains("listed twice"));
        assert!(err(flags(&["a/b"])).contains("cannot hold"));
        let mut ids = vec!["freezer10", "freezer2", "freezer1"];
        ids.sort_by_key(|id| natural(id));
        assert_eq!(ids, ["freezer1", "freezer2", "freezer10"]);
    }
}
