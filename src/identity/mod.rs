//! Device identities: the X.509 certificate and private key a device proves itself with, and
//! the CA it trusts the endpoint with, turned into a ready `rustls::ClientConfig`.
//!
//! Everything is checked here, once, before the first connection: unreadable files, PEM with
//! nothing usable in it, password-protected or unsupported keys, a key that does not belong to
//! its certificate, certificates that are expired or not yet valid. Each problem becomes an
//! [`InputError`](crate::error::InputError) that names the file and the fix. Key material never
//! appears in a message: we report the kind of problem, not the bytes.

use std::path::Path;
use std::sync::Arc;

use anyhow::Result;
use rustls::client::ClientConfig;
use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::{RootCertStore, crypto::CryptoProvider};

use crate::error::io_cause;
use crate::input;

pub mod devices;
pub mod layout;
mod session;

pub use devices::{DeviceConfig, Identity};

/// The one crypto provider of the process (ring), passed explicitly to every config so a second
/// provider compiled in by some dependency can never make rustls pick at random or panic.
pub fn provider() -> Arc<CryptoProvider> {
    static PROVIDER: std::sync::OnceLock<Arc<CryptoProvider>> = std::sync::OnceLock::new();
    PROVIDER
        .get_or_init(|| Arc::new(rustls::crypto::ring::default_provider()))
        .clone()
}

/// Where the trust anchors for the endpoint's certificate come from.
#[derive(Debug, Clone)]
pub enum TrustSource {
    /// A PEM file given with `--ca` (e.g. AmazonRootCA1.pem).
    File(std::path::PathBuf),
    /// The Mozilla root programme's CAs, built in (they include Amazon Root CA 1).
    BuiltIn,
}

impl TrustSource {
    /// `--ca FILE`, or the built-in roots when it is not given.
    pub fn from_flag(ca: Option<std::path::PathBuf>) -> TrustSource {
        ca.map_or(TrustSource::BuiltIn, TrustSource::File)
    }
}

/// Reads a file for a flag, turning the I/O error into one clear line.
pub fn read_file(path: &Path, what: &str) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|e| {
        input!(
            "{what} {}: cannot read: {}; check the path",
            path.display(),
            io_cause(&e, false)
        )
    })
}

/// Loads the trust anchors that verify the endpoint's server certificate.
pub fn load_roots(source: &TrustSource) -> Result<Arc<RootCertStore>> {
    let path = match source {
        TrustSource::BuiltIn => {
            let roots = RootCertStore {
                roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
            };
            return Ok(Arc::new(roots));
        }
        TrustSource::File(path) => path,
    };
    let what = "--ca";
    let bytes = read_file(path, what)?;
    let shown = path.display();
    if looks_like_private_key(&bytes) && !bytes_contain(&bytes, b"CERTIFICATE-----") {
        return Err(input!(
            "{what} {shown}: this file holds a private key, not a certificate; pass the root CA certificate that signed the endpoint (for AWS IoT Core: AmazonRootCA1.pem)"
        ));
    }
    let mut store = RootCertStore::empty();
    let mut count = 0;
    for (i, cert) in CertificateDer::pem_slice_iter(&bytes).enumerate() {
        let cert = cert.map_err(|e| {
            input!(
                "{what} {shown}: certificate {} is not valid PEM ({}); download the CA file again",
                i + 1,
                pem_cause(&e)
            )
        })?;
        store.add(cert).map_err(|e| {
            input!(
                "{what} {shown}: certificate {} cannot be used as a trust anchor: {e}",
                i + 1
            )
        })?;
        count += 1;
    }
    if count == 0 {
        return Err(input!(
            "{what} {shown}: no PEM certificate in this file (no '-----BEGIN CERTIFICATE-----'); pass the root CA certificate (for AWS IoT Core: AmazonRootCA1.pem)"
        ));
    }
    Ok(Arc::new(store))
}

/// Where a device's certificate and key come from, and which flag named them (for messages).
#[derive(Debug, Clone)]
pub struct IdentityFiles {
    pub cert: std::path::PathBuf,
    pub key: std::path::PathBuf,
    /// How to name the certificate in a message, e.g. "--cert" or "device freezer3: certificate".
    pub cert_label: String,
    /// How to name the key in a message.
    pub key_label: String,
}

/// Loads and checks one identity and builds the TLS client config for it: TLS 1.2 and 1.3 only,
/// server name always verified against `roots`, client certificate offered.
/// `alpn` is offered in the handshake when not empty (IoT Core on port 443 needs `x-amzn-mqtt-ca`).
pub fn client_config(
    files: &IdentityFiles,
    roots: Arc<RootCertStore>,
    alpn: &[Vec<u8>],
) -> Result<Arc<ClientConfig>> {
    let chain = load_cert_chain(&files.cert, &files.cert_label)?;
    let key = load_private_key(&files.key, &files.key_label)?;
    let mut config = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| anyhow::anyhow!("TLS setup: {e}"))?
        .with_root_certificates(roots)
        .with_client_auth_cert(chain, key)
        .map_err(|e| match e {
            rustls::Error::InconsistentKeys(_) => input!(
                "{} {}: this private key does not belong to the certificate {}; use the key file that was downloaded with that certificate",
                files.key_label,
                files.key.display(),
                files.cert.display()
            ),
            other => input!(
                "{} {}: the key cannot be used for TLS client authentication ({other}); use an RSA, ECDSA P-256/P-384 or Ed25519 key",
                files.key_label,
                files.key.display()
            ),
        })?;
    config.alpn_protocols = alpn.to_vec();
    // A device talks to one endpoint: its session memory holds one server's latest ticket
    // (`session`; rustls' default cache holds 32 servers' and every ticket, ~12 KB per device
    // when every device has its own certificate). Resumption stays on, so reconnects after a
    // cut cost less. Never share it between identities: a resumed session carries the identity
    // it was made with.
    config.resumption = rustls::client::Resumption::store(Arc::new(session::OneSession::default()));
    Ok(Arc::new(config))
}

/// A TLS client config without a client certificate (TLS 1.2+, server name verified against
/// `roots`), for devices that authenticate another way.
pub fn server_only_config(roots: Arc<RootCertStore>, alpn: &[Vec<u8>]) -> Result<Arc<ClientConfig>> {
    let mut config = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| anyhow::anyhow!("TLS setup: {e}"))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = alpn.to_vec();
    config.resumption = rustls::client::Resumption::store(Arc::new(session::OneSession::default()));
    Ok(Arc::new(config))
}

/// Reads a PEM certificate chain (leaf first) and checks the leaf's validity period.
pub fn load_cert_chain(path: &Path, label: &str) -> Result<Vec<CertificateDer<'static>>> {
    let bytes = read_file(path, label)?;
    let shown = path.display();
    let mut chain = Vec::new();
    for cert in CertificateDer::pem_slice_iter(&bytes) {
        chain.push(cert.map_err(|e| {
            input!(
                "{label} {shown}: not valid PEM ({}); download the certificate again",
                pem_cause(&e)
            )
        })?);
    }
    let Some(leaf) = chain.first() else {
        let hint = if looks_like_private_key(&bytes) {
            "this file holds a private key; the certificate is the file ending in certificate.pem.crt"
        } else {
            "expected '-----BEGIN CERTIFICATE-----'"
        };
        return Err(input!("{label} {shown}: no PEM certificate in this file; {hint}"));
    };
    check_validity(leaf, label, path)?;
    Ok(chain)
}

/// Rejects a certificate that is expired or not yet valid, saying when.
fn check_validity(cert: &CertificateDer<'_>, label: &str, path: &Path) -> Result<()> {
    use x509_parser::prelude::*;
    let shown = path.display();
    let (_, parsed) = X509Certificate::from_der(cert.as_ref())
        .map_err(|e| input!("{label} {shown}: not a valid X.509 certificate ({e})"))?;
    let validity = parsed.validity();
    let now = ASN1Time::now();
    if now > validity.not_after {
        return Err(input!(
            "{label} {shown}: the certificate expired on {}; issue a new certificate for this device",
            validity.not_after
        ));
    }
    if now < validity.not_before {
        return Err(input!(
            "{label} {shown}: the certificate is not valid until {}; check this machine's clock or issue a new certificate",
            validity.not_before
        ));
    }
    Ok(())
}

/// Reads an unencrypted PEM private key (PKCS#8, PKCS#1 RSA or SEC1 EC).
pub fn load_private_key(path: &Path, label: &str) -> Result<PrivateKeyDer<'static>> {
    let bytes = read_file(path, label)?;
    let shown = path.display();
    if bytes_contain(&bytes, b"BEGIN ENCRYPTED PRIVATE KEY")
        || bytes_contain(&bytes, b"Proc-Type: 4,ENCRYPTED")
    {
        return Err(input!(
            "{label} {shown}: the key is password-protected; freezer-fleet needs an unencrypted key: run `openssl pkey -in {shown} -out <new file>` and keep the result private (chmod 600)"
        ));
    }
    PrivateKeyDer::from_pem_slice(&bytes).map_err(|e| match e {
        pem::Error::NoItemsFound => {
            let hint = if bytes_contain(&bytes, b"CERTIFICATE-----") {
                "this file holds a certificate; the key is the file ending in private.pem.key"
            } else if bytes_contain(&bytes, b"PUBLIC KEY-----") {
                "this is a public key; the private key is the file ending in private.pem.key"
            } else {
                "expected '-----BEGIN PRIVATE KEY-----', 'BEGIN RSA PRIVATE KEY' or 'BEGIN EC PRIVATE KEY'"
            };
            input!("{label} {shown}: no supported private key in this file; {hint}")
        }
        // Never echo the file's contents: say only what kind of damage it is.
        other => input!(
            "{label} {shown}: the private key is not valid PEM ({}); download it again",
            pem_cause(&other)
        ),
    })
}

/// A short cause for a PEM error that never quotes the file's bytes.
fn pem_cause(e: &pem::Error) -> &'static str {
    match e {
        pem::Error::MissingSectionEnd { .. } => "a section has no END line",
        pem::Error::IllegalSectionStart { .. } => "a BEGIN line is malformed",
        pem::Error::Base64Decode(_) => "the base64 body is damaged",
        pem::Error::Io(_) => "read error",
        pem::Error::NoItemsFound => "no PEM section",
        pem::Error::SectionTooLarge => "a section is too large",
        _ => "unreadable",
    }
}

fn looks_like_private_key(bytes: &[u8]) -> bool {
    bytes_contain(bytes, b"PRIVATE KEY-----")
}

fn bytes_contain(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}
