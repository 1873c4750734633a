//! HTTPS (SPEC §17): the certificate and key of config `tls_cert` /
//! `tls_key`, served with rustls, HTTP/2 and HTTP/1.1 offered by ALPN.
//!
//! The certificate is reloaded without a restart: a task looks at both files
//! every [`CHECK_EVERY`] and, when either changed, loads them; a pair that
//! does not load (unreadable, not PEM, a key that does not match the
//! certificate) is logged and the last good one keeps serving. New
//! handshakes take the new certificate; open connections keep theirs.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use rustls::crypto::CryptoProvider;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

/// How often the certificate files are looked at.
pub const CHECK_EVERY: Duration = Duration::from_secs(1);

/// ALPN protocols offered, preferred first.
pub const ALPN_H2: &[u8] = b"h2";
const ALPN_HTTP11: &[u8] = b"http/1.1";

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Loads a certificate chain and its private key from PEM files.
pub fn load(cert: &Path, key: &Path) -> Result<CertifiedKey, String> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .map_err(|e| format!("tls_cert {}: {e}", cert.display()))?
        .collect::<Result<_, _>>()
        .map_err(|e| format!("tls_cert {}: {e}", cert.display()))?;
    if chain.is_empty() {
        return Err(format!("tls_cert {}: no certificate in it", cert.display()));
    }
    let private =
        PrivateKeyDer::from_pem_file(key).map_err(|e| format!("tls_key {}: {e}", key.display()))?;
    CertifiedKey::from_der(chain, private, &provider()).map_err(|e| {
        format!(
            "tls_cert {} / tls_key {}: {e}",
            cert.display(),
            key.display()
        )
    })
}

/// The certificate handshakes get: the last good one loaded.
#[derive(Debug)]
pub struct Certificate {
    current: ArcSwap<CertifiedKey>,
}

impl ResolvesServerCert for Certificate {
    fn resolve(&self, _: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.load_full())
    }
}

/// HTTPS of one listener: the acceptor and the certificate it serves.
pub struct Tls {
    pub acceptor: tokio_rustls::TlsAcceptor,
    certificate: Arc<Certificate>,
    cert: PathBuf,
    key: PathBuf,
}

impl Tls {
    /// Loads `cert` and `key`; an error stops start-up.
    pub fn new(cert: PathBuf, key: PathBuf) -> Result<Tls, String> {
        let certificate = Arc::new(Certificate {
            current: ArcSwap::from_pointee(load(&cert, &key)?),
        });
        let mut config = rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .with_no_client_auth()
            .with_cert_resolver(certificate.clone());
        config.alpn_protocols = vec![ALPN_H2.to_vec(), ALPN_HTTP11.to_vec()];
        Ok(Tls {
            acceptor: tokio_rustls::TlsAcceptor::from(Arc::new(config)),
            certificate,
            cert,
            key,
        })
    }

    /// Follows the two files: a changed pair that loads replaces the
    /// certificate; one that does not is logged once and the old one stays.
    pub fn watch(&self) {
        let (certificate, cert, key) = (
            self.certificate.clone(),
            self.cert.clone(),
            self.key.clone(),
        );
        tokio::spawn(async move {
            let mut seen = stamp(&cert, &key);
            let mut tick = tokio::time::interval(CHECK_EVERY);
            loop {
                tick.tick().await;
                let now = stamp(&cert, &key);
                if now == seen {
                    continue;
                }
                seen = now;
                let (c, k) = (cert.clone(), key.clone());
                match tokio::task::spawn_blocking(move || load(&c, &k)).await {
                    Ok(Ok(loaded)) => {
                        certificate.current.store(Arc::new(loaded));
                        tracing::info!(cert = %cert.display(), "TLS certificate reloaded");
                    }
                    Ok(Err(e)) => {
                        tracing::error!(
                            "TLS certificate not reloaded, the last good one stays: {e}"
                        )
                    }
                    Err(e) => tracing::error!("TLS certificate not reloaded: {e}"),
                }
            }
        });
    }
}

/// What tells a changed file: modification time and length of both.
fn stamp(cert: &Path, key: &Path) -> [Option<(SystemTime, u64)>; 2] {
    let of = |p: &Path| {
        std::fs::metadata(p)
            .ok()
            .and_then(|m| Some((m.modified().ok()?, m.len())))
    };
    [of(cert), of(key)]
}
