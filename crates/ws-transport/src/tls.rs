//! `wss://` served directly: a rustls server configuration loaded from PEM files and
//! swappable at run time, so a renewed certificate is picked up on SIGHUP without dropping
//! a connection (established connections keep the configuration they started with).

use std::path::{Path, PathBuf};
use std::sync::{Arc, PoisonError, RwLock};

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::{self, ServerConfig};

/// Why a certificate or key could not be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    /// The file is missing, unreadable or not PEM: check the path and its permissions.
    #[error("reading {path}: {message}")]
    Read {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
    /// The certificate file holds no `CERTIFICATE` block.
    #[error("{0}: no certificate found (expected PEM `CERTIFICATE` blocks)")]
    NoCertificate(PathBuf),
    /// The key does not match the certificate, or rustls refused it.
    #[error("the certificate and key cannot be used together: {0}")]
    Rustls(#[from] rustls::Error),
}

/// A TLS server configuration and where it was loaded from.
///
/// ```no_run
/// use ws_transport::TlsConfig;
/// let tls = TlsConfig::load("/etc/wshub/cert.pem", "/etc/wshub/key.pem")?;
/// // On SIGHUP:
/// tls.reload()?;
/// # Ok::<(), ws_transport::TlsError>(())
/// ```
#[derive(Debug)]
pub struct TlsConfig {
    cert: PathBuf,
    key: PathBuf,
    current: RwLock<Arc<ServerConfig>>,
}

impl TlsConfig {
    /// Loads a certificate chain and its private key from PEM files.
    pub fn load(cert: impl AsRef<Path>, key: impl AsRef<Path>) -> Result<Self, TlsError> {
        let (cert, key) = (cert.as_ref().to_owned(), key.as_ref().to_owned());
        let config = build(&cert, &key)?;
        Ok(Self {
            cert,
            key,
            current: RwLock::new(Arc::new(config)),
        })
    }

    /// Reads the files again; on error the configuration in use stays.
    pub fn reload(&self) -> Result<(), TlsError> {
        let config = build(&self.cert, &self.key)?;
        *self.current.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(config);
        Ok(())
    }

    /// An acceptor with the configuration in use now.
    pub(crate) fn acceptor(&self) -> TlsAcceptor {
        TlsAcceptor::from(Arc::clone(
            &self.current.read().unwrap_or_else(PoisonError::into_inner),
        ))
    }
}

fn build(cert: &Path, key: &Path) -> Result<ServerConfig, TlsError> {
    let read_error = |path: &Path, e: &dyn std::fmt::Display| TlsError::Read {
        path: path.to_owned(),
        message: e.to_string(),
    };
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .map_err(|e| read_error(cert, &e))?
        .collect::<Result<_, _>>()
        .map_err(|e| read_error(cert, &e))?;
    if chain.is_empty() {
        return Err(TlsError::NoCertificate(cert.to_owned()));
    }
    let key_der = PrivateKeyDer::from_pem_file(key).map_err(|e| read_error(key, &e))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(chain, key_der)?;
    // WebSocket upgrades need HTTP/1.1; nothing here speaks WebSocket over HTTP/2.
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}
