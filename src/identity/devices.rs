//! The one I/O stage of a run's identities: reads every device's certificate and key, checks
//! them, and builds each device's TLS configuration, before any connection is made.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Result;
use rustls::{ClientConfig, RootCertStore};

use super::layout::{self, CertFolder};
use super::{IdentityFiles, client_config};
use crate::input;

/// One simulated device, ready to connect.
#[derive(Clone)]
pub struct DeviceConfig {
    /// Device id, also the MQTT client id.
    pub id: String,
    pub tls: Arc<ClientConfig>,
    /// The certificate file, to name it in messages.
    pub cert_file: PathBuf,
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

/// Loads and checks every identity; warns once about private keys others can read.
pub fn load(identity: Identity, roots: Arc<RootCertStore>, alpn: &[Vec<u8>]) -> Result<Vec<DeviceConfig>> {
    match identity {
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
            let devices = folders
                .iter()
                .map(|CertFolder { id, files }| {
                    Ok(DeviceConfig {
                        id: id.clone(),
                        tls: client_config(files, roots.clone(), alpn)?,
                        cert_file: files.cert.clone(),
                    })
                })
                .collect::<Result<Vec<_>>>()?;
            warn_readable_keys(folders.iter().map(|f| f.files.key.as_path()));
            Ok(devices)
        }
        Identity::Unsigned { ids } => {
            let tls = super::server_only_config(roots, alpn)?;
            Ok(ids
                .into_iter()
                .map(|id| DeviceConfig {
                    id,
                    tls: tls.clone(),
                    cert_file: PathBuf::new(),
                })
                .collect())
        }
        Identity::Shared { files, ids } => {
            let tls = client_config(&files, roots, alpn)?;
            warn_readable_keys(std::iter::once(files.key.as_path()));
            Ok(ids
                .into_iter()
                .map(|id| DeviceConfig {
                    id,
                    tls: tls.clone(),
                    cert_file: files.cert.clone(),
                })
                .collect())
        }
    }
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
