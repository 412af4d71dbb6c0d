//! The certificate-folder layout, shared by its reader (`run --certs`, `watch --certs`) and its
//! writer (`certs issue`): one sub-folder per device, named by the device id, holding the files
//! AWS IoT Core's download step names `…-certificate.pem.crt` and `…-private.pem.key`.

use std::path::{Path, PathBuf};

use anyhow::Result;

use super::IdentityFiles;
use crate::error::io_cause;
use crate::input;

/// File-name endings AWS IoT Core's download step uses.
pub const CERT_SUFFIX: &str = "certificate.pem.crt";
pub const KEY_SUFFIX: &str = "private.pem.key";

/// The files `certs issue` writes for device `id` under `out`.
pub fn device_files(out: &Path, id: &str) -> (PathBuf, PathBuf) {
    let folder = out.join(id);
    (
        folder.join(format!("{id}-{CERT_SUFFIX}")),
        folder.join(format!("{id}-{KEY_SUFFIX}")),
    )
}

/// One device folder.
pub struct CertFolder {
    pub id: String,
    pub files: IdentityFiles,
}

/// Lists the device folders of `dir` in natural order (freezer2 before freezer10) and finds
/// each one's certificate and key by the endings AWS IoT Core uses.
pub fn scan_cert_folders(dir: &Path, origin: &str) -> Result<Vec<CertFolder>> {
    let shown = dir.display();
    let entries = std::fs::read_dir(dir)
        .map_err(|e| input!("{origin} {shown}: cannot read: {}", io_cause(&e, true)))?;
    let mut folders = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| input!("{origin} {shown}: cannot list: {e}"))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') || !entry.path().is_dir() {
            continue;
        }
        folders.push((name, entry.path()));
    }
    if folders.is_empty() {
        return Err(input!(
            "{origin} {shown}: no device folders; put one sub-folder per device in it, named by the \
             device id, holding its *{CERT_SUFFIX} and *{KEY_SUFFIX} (see certs.example/)"
        ));
    }
    folders.sort_by(|a, b| natural_cmp(&a.0, &b.0));
    folders
        .into_iter()
        .map(|(id, path)| {
            let cert = find_one(&path, CERT_SUFFIX, &id)?;
            let key = find_one(&path, KEY_SUFFIX, &id)?;
            Ok(CertFolder {
                files: IdentityFiles {
                    cert,
                    key,
                    cert_label: format!("device {id}: certificate"),
                    key_label: format!("device {id}: private key"),
                },
                id,
            })
        })
        .collect()
}

fn find_one(folder: &Path, suffix: &str, id: &str) -> Result<PathBuf> {
    let shown = folder.display();
    let mut found: Vec<PathBuf> = std::fs::read_dir(folder)
        .map_err(|e| input!("device {id}: cannot read {shown}: {e}"))?
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| {
            p.is_file()
                && p.file_name()
                    .is_some_and(|n| n.to_string_lossy().ends_with(suffix))
        })
        .collect();
    found.sort();
    let what = if suffix == CERT_SUFFIX {
        "certificate"
    } else {
        "private key"
    };
    match found.len() {
        1 => Ok(found.remove(0)),
        0 => Err(input!(
            "device {id}: {shown} has no file ending in {suffix}; put the device's {what} there (as AWS \
             IoT Core names it, e.g. 3f2a9c-{suffix})"
        )),
        n => Err(input!(
            "device {id}: {shown} has {n} files ending in {suffix} ({}); keep exactly one",
            found
                .iter()
                .filter_map(|p| p.file_name())
                .map(|n| n.to_string_lossy().into_owned())
                .collect::<Vec<_>>()
                .join(", ")
        )),
    }
}

/// Compares names so that embedded numbers sort by value: freezer2 < freezer10.
pub fn natural_cmp(a: &str, b: &str) -> std::cmp::Ordering {
    fn chunks(s: &str) -> Vec<(bool, &str)> {
        let mut out = Vec::new();
        let mut start = 0;
        let bytes = s.as_bytes();
        for i in 1..=bytes.len() {
            if i == bytes.len() || bytes[i].is_ascii_digit() != bytes[start].is_ascii_digit() {
                out.push((bytes[start].is_ascii_digit(), &s[start..i]));
                start = i;
            }
        }
        out
    }
    let (ca, cb) = (chunks(a), chunks(b));
    for (x, y) in ca.iter().zip(cb.iter()) {
        let ord = match (x, y) {
            ((true, xs), (true, ys)) => {
                let (xt, yt) = (xs.trim_start_matches('0'), ys.trim_start_matches('0'));
                xt.len()
                    .cmp(&yt.len())
                    .then_with(|| xt.cmp(yt))
                    .then_with(|| xs.len().cmp(&ys.len()))
            }
            ((_, xs), (_, ys)) => xs.cmp(ys),
        };
        if ord.is_ne() {
            return ord;
        }
    }
    ca.len().cmp(&cb.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn natural_order() {
        let mut v = vec![
            "freezer10",
            "freezer2",
            "freezer1",
            "alpha",
            "freezer02",
            "freezer",
        ];
        v.sort_by(|a, b| natural_cmp(a, b));
        assert_eq!(
            v,
            [
                "alpha",
                "freezer",
                "freezer1",
                "freezer2",
                "freezer02",
                "freezer10"
            ]
        );
    }

    #[test]
    fn what_the_writer_names_the_reader_finds() {
        let dir = tempfile::tempdir().unwrap();
        for id in ["freezer10", "freezer2"] {
            let (cert, key) = device_files(dir.path(), id);
            std::fs::create_dir_all(cert.parent().unwrap()).unwrap();
            std::fs::write(&cert, "c").unwrap();
            std::fs::write(&key, "k").unwrap();
        }
        let found = scan_cert_folders(dir.path(), "--certs").unwrap();
        let ids: Vec<&str> = found.iter().map(|f| f.id.as_str()).collect();
        assert_eq!(ids, ["freezer2", "freezer10"]);
        assert_eq!(found[0].files.cert, device_files(dir.path(), "freezer2").0);
    }
}
