//! The one I/O stage of a run's identities: reads every device's certificate and key, checks
//! them, and builds each device's TLS configuration, before any connection is made.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Result;
use rustls::{ClientConfig, RootCertStore};

use super::layout::{self, CertFolder};
use super::{IdentityFiles, client_config};
use crate::input;
use crate::shard::Shard;

/// One simulated device, ready to connect.
#[derive(Clone)]
pub struct DeviceConfig {
    /// Device id, also the MQTT client id.
    pub id: String,
    /// Its number in the whole fleet (0-based), whichever shard runs it: readings and timers
    /// depend on it, so a sharded fleet sends what one process would.
    pub index: usize,
    pub tls: Arc<ClientConfig>,
    /// The certificate file, to name it in messages.
    pub cert_file: PathBuf,
    /// Its `[[group]]` (0 without groups), and the group's topic and QoS for it.
    pub group: usize,
    pub topic: Option<String>,
    pub qos: Option<rumqttc::QoS>,
}

/// Where the devices' identities come from.
pub enum Identity {
    /// `--certs DIR`: one sub-folder per device; `requested` is `--devices` and where it came from.
    Folder {
        dir: PathBuf,
        origin: String,
        requested: Option<(usize, String)>,
    },
    /// `--cert/--key`: one certificate shared by devices with these ids.
    Shared { files: IdentityFiles, ids: Vec<String> },
    /// No certificate: devices that authenticate another way (AWS credentials over WebSockets).
    Unsigned { ids: Vec<String> },
}

/// The devices of this shard, and how many the whole fleet has.
pub struct Loaded {
    pub devices: Vec<DeviceConfig>,
    pub fleet_size: usize,
}

/// Loads and checks the identities of `shard`'s devices (only theirs are read); warns once
/// about private keys others can read.
pub fn load(identity: Identity, roots: Arc<RootCertStore>, alpn: &[Vec<u8>], shard: Shard) -> Result<Loaded> {
    let (fleet_size, devices) = match identity {
        Identity::Folder {
            dir,
            origin,
            requested,
        } => {
            let mut folders = layout::scan_cert_folders(&dir, &origin)?;
            if let Some((n, origin)) = requested {
                if n > folders.len() {
                    return Err(input!(
                        "{origin}: {n} devices requested but {} has only {} device folders; lower --devices \
                         or add folders (freezer-fleet reads one sub-folder per device)",
                        dir.display(),
                        folders.len()
                    ));
                }
                folders.truncate(n);
            }
            let fleet_size = folders.len();
            let mine: Vec<(usize, CertFolder)> = folders
                .into_iter()
                .enumerate()
                .filter(|(i, _)| shard.owns(*i))
                .collect();
            let devices = mine
                .iter()
                .map(|(index, CertFolder { id, files })| {
                    Ok(DeviceConfig {
                        id: id.clone(),
                        index: *index,
                        tls: client_config(files, roots.clone(), alpn)?,
                        cert_file: files.cert.clone(),
                        group: 0,
                        topic: None,
                        qos: None,
                    })
                })
                .collect::<Result<Vec<_>>>()?;
            warn_readable_keys(mine.iter().map(|(_, f)| f.files.key.as_path()));
            (fleet_size, devices)
        }
        Identity::Unsigned { ids } => {
            let tls = super::server_only_config(roots, alpn)?;
            (ids.len(), sharing(ids, shard, &tls, PathBuf::new()))
        }
        Identity::Shared { files, ids } => {
            let tls = client_config(&files, roots, alpn)?;
            warn_readable_keys(std::iter::once(files.key.as_path()));
            (ids.len(), sharing(ids, shard, &tls, files.cert.clone()))
        }
    };
    Ok(Loaded { devices, fleet_size })
}

/// Devices of `shard` with one TLS configuration for all.
fn sharing(ids: Vec<String>, shard: Shard, tls: &Arc<ClientConfig>, cert_file: PathBuf) -> Vec<DeviceConfig> {
    ids.into_iter()
        .enumerate()
        .filter(|(i, _)| shard.owns(*i))
        .map(|(index, id)| DeviceConfig {
            id,
            index,
            tls: tls.clone(),
            cert_file: cert_file.clone(),
            group: 0,
            topic: None,
            qos: None,
        })
        .collect()
}

/// Warns (once, with a count) when private key files can be read by group or others.
pub fn warn_readable_keys<'a>(keys: impl Iterator<Item = &'a Path>) {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let open: Vec<&Path> = keys
            .filter(|k| {
                std::fs::metadata(k)
                    .map(|m| m.permissions().mode() & 0o077 != 0)
                    .unwrap_or(false)
            })
            .collect();
        if let Some(first) = open.first() {
            tracing::warn!(
                "{} private key file(s) can be read by group or others (e.g. {}); make them private: chmod 600 <key files>",
                open.len(),
                first.display()
            );
        }
    }
    #[cfg(not(unix))]
    let _ = keys;
}
