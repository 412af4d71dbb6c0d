//! A local PKI for the zero-setup path: a CA, a server certificate for the embedded broker, and
//! device certificates in the layout `run --certs` reads.
//!
//! Files are never overwritten: re-running adds what is missing and keeps every existing key.
//! Keys are written 0600. Device certificates carry CN = device id, a unique random serial,
//! clientAuth usage, and no Organization (the embedded broker would take an O for a tenant id).

use std::fs::OpenOptions;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use anyhow::{Context, Result};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer,
    KeyPair, KeyUsagePurpose, SerialNumber,
};

use crate::error::io_cause;
pub use crate::identity::layout::device_files;
use crate::input;

pub const CA_CERT: &str = "ca.pem";
pub const CA_KEY: &str = "ca.key";
pub const SERVER_CERT: &str = "server.pem";
pub const SERVER_KEY: &str = "server.key";

/// The key algorithm of generated keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum KeyType {
    /// ECDSA P-256: fast to make and to use.
    P256,
    /// RSA-2048, as AWS IoT Core's own device certificates.
    Rsa2048,
}

impl KeyType {
    fn generate(self) -> Result<KeyPair> {
        match self {
            KeyType::P256 => Ok(KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?),
            KeyType::Rsa2048 => {
                use rsa::pkcs8::EncodePrivateKey;
                let key = rsa::PrivateKey::new(&mut rand::rngs::SysRng, 2048)
                    .context("generating an RSA-2048 key")?;
                let der = key.to_pkcs8_der().context("encoding the RSA key")?;
                let der = rustls::pki_types::PrivatePkcs8KeyDer::from(der.as_bytes().to_vec());
                Ok(KeyPair::from_pkcs8_der_and_sign_algo(
                    &der,
                    &rcgen::PKCS_RSA_SHA256,
                )?)
            }
        }
    }
}

/// What `init` did.
#[derive(Debug)]
pub struct InitOutcome {
    pub created: Vec<PathBuf>,
    pub kept: Vec<PathBuf>,
}

/// Creates DIR/ca.pem, ca.key, server.pem, server.key (keys 0600), keeping any that exist.
pub fn init(dir: &Path, key_type: KeyType) -> Result<InitOutcome> {
    std::fs::create_dir_all(dir)
        .map_err(|e| input!("certs init {}: cannot create the folder: {e}", dir.display()))?;
    let mut out = InitOutcome {
        created: vec![],
        kept: vec![],
    };
    let (ca_cert, ca_key) = (dir.join(CA_CERT), dir.join(CA_KEY));
    let issuer = match (ca_cert.exists(), ca_key.exists()) {
        (true, true) => {
            out.kept.extend([ca_cert.clone(), ca_key.clone()]);
            load_issuer(&ca_cert, &ca_key, "certs init")?
        }
        (false, false) => {
            let key = key_type.generate()?;
            let mut params = CertificateParams::default();
            params.distinguished_name = dn("freezer-fleet local CA");
            params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
            params.key_usages = vec![
                KeyUsagePurpose::KeyCertSign,
                KeyUsagePurpose::CrlSign,
                KeyUsagePurpose::DigitalSignature,
            ];
            params.serial_number = Some(random_serial());
            set_validity(&mut params, Duration::from_secs(10 * 365 * 86400));
            let cert = params.self_signed(&key)?;
            write_new(&ca_key, &key.serialize_pem(), true)?;
            write_new(&ca_cert, &cert.pem(), false)?;
            out.created.extend([ca_cert.clone(), ca_key.clone()]);
            Issuer::new(params, key)
        }
        _ => {
            return Err(input!(
                "certs init {}: one of {CA_CERT} and {CA_KEY} exists without the other; restore the missing one or use a new folder",
                dir.display()
            ));
        }
    };
    let (srv_cert, srv_key) = (dir.join(SERVER_CERT), dir.join(SERVER_KEY));
    if srv_cert.exists() && srv_key.exists() {
        out.kept.extend([srv_cert, srv_key]);
    } else {
        // Never replace a key: a lone server.key gets a new certificate.
        let key = if srv_key.exists() {
            read_key(&srv_key, "is not a key freezer-fleet can use; remove it")?
        } else {
            let key = key_type.generate()?;
            write_new(&srv_key, &key.serialize_pem(), true)?;
            out.created.push(srv_key.clone());
            key
        };
        let mut params = CertificateParams::new(vec![
            "localhost".to_string(),
            "127.0.0.1".to_string(),
            "::1".to_string(),
        ])?;
        params.distinguished_name = dn("localhost");
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.serial_number = Some(random_serial());
        params.use_authority_key_identifier_extension = true;
        set_validity(&mut params, Duration::from_secs(825 * 86400));
        let cert = params.signed_by(&key, &issuer)?;
        write_new(&srv_cert, &cert.pem(), false)?;
        out.created.push(srv_cert);
    }
    Ok(out)
}

/// What to issue.
#[derive(Debug, Clone)]
pub struct IssueOptions {
    pub devices: usize,
    pub id_prefix: String,
    pub out: PathBuf,
    pub ca_cert: PathBuf,
    pub ca_key: PathBuf,
    pub key_type: KeyType,
}

/// What `issue` did.
#[derive(Debug, Default)]
pub struct IssueOutcome {
    pub created: usize,
    pub kept: usize,
    /// Existing keys that got a new certificate because theirs was missing.
    pub recertified: usize,
}

/// Issues device certificates PREFIX1..PREFIXN signed by the CA, in parallel, skipping devices
/// that already have both files and never replacing an existing key. `on_issued` is called once
/// per device done (e.g. to move a progress bar), from the worker threads.
pub fn issue(opts: &IssueOptions, on_issued: impl Fn(&str) + Sync) -> Result<IssueOutcome> {
    let issuer = load_issuer(&opts.ca_cert, &opts.ca_key, "certs issue")?;
    std::fs::create_dir_all(&opts.out)
        .map_err(|e| input!("--out {}: cannot create the folder: {e}", opts.out.display()))?;
    let next = AtomicUsize::new(1);
    let outcome = Mutex::new(IssueOutcome::default());
    let first_error: Mutex<Option<anyhow::Error>> = Mutex::new(None);
    let workers = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2)
        .min(opts.devices.max(1));
    std::thread::scope(|s| {
        for _ in 0..workers {
            s.spawn(|| {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i > opts.devices || first_error.lock().map(|e| e.is_some()).unwrap_or(true) {
                        break;
                    }
                    let id = format!("{}{i}", opts.id_prefix);
                    match issue_one(&issuer, opts, &id) {
                        Ok(done) => {
                            let mut o = outcome.lock().unwrap_or_else(|p| p.into_inner());
                            match done {
                                Done::Created => o.created += 1,
                                Done::Kept => o.kept += 1,
                                Done::Recertified => o.recertified += 1,
                            }
                        }
                        Err(e) => {
                            first_error
                                .lock()
                                .unwrap_or_else(|p| p.into_inner())
                                .get_or_insert(e);
                            break;
                        }
                    }
                    on_issued(&id);
                }
            });
        }
    });
    if let Some(e) = first_error.into_inner().unwrap_or_else(|p| p.into_inner()) {
        return Err(e);
    }
    Ok(outcome.into_inner().unwrap_or_else(|p| p.into_inner()))
}

enum Done {
    Created,
    Kept,
    Recertified,
}

fn issue_one(issuer: &Issuer<'static, KeyPair>, opts: &IssueOptions, id: &str) -> Result<Done> {
    let (cert_path, key_path) = device_files(&opts.out, id);
    let (has_cert, has_key) = (cert_path.exists(), key_path.exists());
    if has_cert && has_key {
        return Ok(Done::Kept);
    }
    if has_cert {
        return Err(input!(
            "device {id}: {} exists without its key {}; remove the certificate to issue a new pair",
            cert_path.display(),
            key_path.display()
        ));
    }
    let (key, done) = if has_key {
        let why = format!("is not a key freezer-fleet can sign for (device {id})");
        (read_key(&key_path, &why)?, Done::Recertified)
    } else {
        std::fs::create_dir_all(key_path.parent().unwrap_or(&opts.out))?;
        let key = opts.key_type.generate()?;
        write_new(&key_path, &key.serialize_pem(), true)?;
        (key, Done::Created)
    };
    let cert = device_params(id)?.signed_by(&key, issuer)?;
    write_new(&cert_path, &cert.pem(), false)?;
    Ok(done)
}

/// A new P-256 key and a device certificate for `id` signed by `issuer`: (certificate PEM, key
/// PEM). For `aws provision --certs-from-ca`, whose keys never leave the machine.
pub fn device_pem(issuer: &Issuer<'static, KeyPair>, id: &str) -> Result<(String, String)> {
    let key = KeyType::P256.generate()?;
    let cert = device_params(id)?.signed_by(&key, issuer)?;
    Ok((cert.pem(), key.serialize_pem()))
}

fn device_params(id: &str) -> Result<CertificateParams> {
    let mut params = CertificateParams::default();
    params.distinguished_name = dn(id);
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    params.serial_number = Some(random_serial());
    params.use_authority_key_identifier_extension = true;
    set_validity(&mut params, Duration::from_secs(825 * 86400));
    Ok(params)
}

/// Reads an existing PEM key pair; `unusable` finishes the sentence "<file> …" when it cannot
/// be used.
fn read_key(path: &Path, unusable: &str) -> Result<KeyPair> {
    let pem = std::fs::read_to_string(path)
        .map_err(|e| input!("{}: cannot read: {}", path.display(), io_cause(&e, false)))?;
    KeyPair::from_pem(&pem).map_err(|_| input!("{} {unusable}", path.display()))
}

/// Loads a CA certificate and its key to sign with.
pub fn load_issuer(cert: &Path, key: &Path, what: &str) -> Result<Issuer<'static, KeyPair>> {
    let read = |path: &Path, name: &str| {
        std::fs::read_to_string(path).map_err(|e| {
            input!(
                "{what}: cannot read the {name} {}: {}",
                path.display(),
                io_cause(&e, false)
            )
        })
    };
    let (cert_pem, key_pem) = (read(cert, "CA certificate")?, read(key, "CA key")?);
    let signing_key = KeyPair::from_pem(&key_pem).map_err(|_| {
        input!(
            "{what}: {} is not an unencrypted PEM private key freezer-fleet can sign with",
            key.display()
        )
    })?;
    let issuer = Issuer::from_ca_cert_pem(&cert_pem, signing_key)
        .map_err(|e| input!("{what}: {} is not a usable CA certificate ({e})", cert.display()))?;
    // A CA key that does not match its certificate would sign certificates nobody can verify.
    check_pair(&cert_pem, &key_pem, cert, key)?;
    Ok(issuer)
}

fn check_pair(cert_pem: &str, key_pem: &str, cert: &Path, key: &Path) -> Result<()> {
    use rustls::pki_types::pem::PemObject;
    let cert_der = rustls::pki_types::CertificateDer::from_pem_slice(cert_pem.as_bytes())
        .map_err(|_| input!("{}: no PEM certificate", cert.display()))?;
    let key_der = rustls::pki_types::PrivateKeyDer::from_pem_slice(key_pem.as_bytes())
        .map_err(|_| input!("{}: no PEM private key", key.display()))?;
    let signing = crate::identity::provider()
        .key_provider
        .load_private_key(key_der)
        .map_err(|_| input!("{}: unsupported private key", key.display()))?;
    let ck = rustls::sign::CertifiedKey::new(vec![cert_der], signing);
    ck.keys_match().map_err(|_| {
        input!(
            "{} does not belong to the CA certificate {}; pass the CA's own key",
            key.display(),
            cert.display()
        )
    })
}

fn dn(cn: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, cn);
    dn
}

/// 16 random bytes with the top bit clear: a positive, unique serial.
fn random_serial() -> SerialNumber {
    let mut bytes: [u8; 16] = rand::random();
    bytes[0] &= 0x7f;
    bytes[0] |= 0x01;
    SerialNumber::from(bytes.to_vec())
}

/// Valid from an hour ago (clock skew between machines) for `lifetime`.
fn set_validity(params: &mut CertificateParams, lifetime: Duration) {
    let now = time_now();
    params.not_before = now - Duration::from_secs(3600);
    params.not_after = now + lifetime;
}

fn time_now() -> time::OffsetDateTime {
    time::OffsetDateTime::now_utc()
}

/// Writes a file that must not exist yet; keys get mode 0600.
pub(crate) fn write_new(path: &Path, text: &str, secret: bool) -> Result<()> {
    let mut opts = OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    if secret {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts
        .open(path)
        .map_err(|e| input!("cannot create {}: {e}", path.display()))?;
    f.write_all(text.as_bytes())
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

/// For unit tests: a local CA and server certificate in `dir` (as `certs init` makes them), and
/// the identity of device `id` signed by it; returns its certificate and key files.
#[cfg(test)]
pub fn test_device(dir: &Path, id: &str) -> crate::identity::IdentityFiles {
    init(dir, KeyType::P256).unwrap();
    let issuer = load_issuer(&dir.join(CA_CERT), &dir.join(CA_KEY), "test").unwrap();
    let (cert, key) = device_pem(&issuer, id).unwrap();
    let (cert_path, key_path) = (dir.join(format!("{id}.crt")), dir.join(format!("{id}.key")));
    std::fs::write(&cert_path, cert).unwrap();
    std::fs::write(&key_path, key).unwrap();
    crate::identity::IdentityFiles {
        cert: cert_path,
        key: key_path,
        cert_label: "cert".into(),
        key_label: "key".into(),
    }
}
