//! TLS on the client listeners: the certificate, key and client CAs read from PEM files into one
//! rustls configuration, which SIGHUP replaces whole (a connection keeps the configuration it was
//! accepted with), and the handshake of each new connection, bounded by a timeout.
//!
//! The crypto provider is rustls's `ring`: it builds with a C compiler alone (aws-lc-rs, rustls's
//! default, needs cmake and takes minutes to build), and ringmq needs no FIPS mode.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use thiserror::Error;
use tokio::net::TcpStream;
use tokio_rustls::TlsAcceptor;

use crate::stream::Stream;

/// The files a TLS listener is configured from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// The certificate chain, PEM.
    pub cert: PathBuf,
    /// Its private key, PEM.
    pub key: PathBuf,
    /// CA certificates client certificates must chain to (mutual TLS), PEM.
    pub client_ca: Option<PathBuf>,
}

/// Why the TLS files could not be used.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum TlsError {
    /// A file could not be read or holds no usable PEM item.
    #[error("{path}: {problem}")]
    File {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        problem: String,
    },
    /// rustls refused the certificates or key (a key that does not match the certificate, say).
    #[error("{cert} with {key}: {source}")]
    Config {
        /// The certificate file.
        cert: PathBuf,
        /// The key file.
        key: PathBuf,
        /// rustls's reason.
        source: rustls::Error,
    },
    /// The client CA file holds no certificate rustls accepts as a trust anchor.
    #[error("{path}: no usable client CA certificate: {problem}")]
    ClientCa {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        problem: String,
    },
}

/// A listener's TLS configuration, replaceable while the broker runs.
#[derive(Debug)]
pub struct Tls {
    files: TlsFiles,
    current: RwLock<Arc<ServerConfig>>,
}

impl Tls {
    /// Reads the files.
    ///
    /// # Errors
    ///
    /// [`TlsError`] naming the file and what is wrong with it.
    pub fn load(files: TlsFiles) -> Result<Self, TlsError> {
        let config = Arc::new(server_config(&files)?);
        Ok(Self { files, current: RwLock::new(config) })
    }

    /// Reads the files again; new connections get the new configuration. On an error the old
    /// one stays.
    ///
    /// # Errors
    ///
    /// As [`Tls::load`].
    pub fn reload(&self) -> Result<(), TlsError> {
        let config = Arc::new(server_config(&self.files)?);
        *self.current.write().unwrap_or_else(std::sync::PoisonError::into_inner) = config;
        Ok(())
    }

    /// Whether client certificates are required.
    pub fn requires_client_certificates(&self) -> bool {
        self.files.client_ca.is_some()
    }

    fn acceptor(&self) -> TlsAcceptor {
        let config = self.current.read().unwrap_or_else(std::sync::PoisonError::into_inner);
        TlsAcceptor::from(Arc::clone(&config))
    }
}

/// Turns an accepted TCP connection into the stream the front end serves: a TLS handshake,
/// within `timeout`, where `tls` is on.
///
/// # Errors
///
/// The handshake failed (the client is not speaking TLS, presented no acceptable certificate, or
/// did not finish within `timeout`).
pub(crate) async fn accept(
    tcp: TcpStream,
    tls: Option<&Tls>,
    timeout: Duration,
) -> io::Result<Stream> {
    let Some(tls) = tls else { return Ok(Stream::Plain(tcp)) };
    let handshake = tls.acceptor().accept(tcp);
    match tokio::time::timeout(timeout, handshake).await {
        Ok(Ok(stream)) => Ok(Stream::Tls(Box::new(stream))),
        Ok(Err(error)) => Err(error),
        Err(_) => Err(io::Error::new(
            io::ErrorKind::TimedOut,
            format!("no TLS handshake within {} ms", timeout.as_millis()),
        )),
    }
}

fn server_config(files: &TlsFiles) -> Result<ServerConfig, TlsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let chain = certificates(&files.cert)?;
    let key = PrivateKeyDer::from_pem_file(&files.key).map_err(|error| TlsError::File {
        path: files.key.clone(),
        problem: pem_problem(&error, "private key"),
    })?;
    let config_error =
        |source| TlsError::Config { cert: files.cert.clone(), key: files.key.clone(), source };
    let builder = ServerConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .map_err(config_error)?;
    let builder = match &files.client_ca {
        None => builder.with_no_client_auth(),
        Some(path) => {
            let mut roots = RootCertStore::empty();
            for certificate in certificates(path)? {
                roots.add(certificate).map_err(|error| TlsError::ClientCa {
                    path: path.clone(),
                    problem: error.to_string(),
                })?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .map_err(|error| TlsError::ClientCa {
                    path: path.clone(),
                    problem: error.to_string(),
                })?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    builder.with_single_cert(chain, key).map_err(config_error)
}

/// Every certificate of a PEM file (at least one).
fn certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let file_error =
        |problem: String| TlsError::File { path: path.to_owned(), problem: problem.clone() };
    let certificates = CertificateDer::pem_file_iter(path)
        .and_then(|items| items.collect::<Result<Vec<_>, _>>())
        .map_err(|error| file_error(pem_problem(&error, "certificate")))?;
    if certificates.is_empty() {
        return Err(file_error("no PEM certificate (BEGIN CERTIFICATE) in the file".to_owned()));
    }
    Ok(certificates)
}

fn pem_problem(error: &rustls_pki_types::pem::Error, what: &str) -> String {
    match error {
        rustls_pki_types::pem::Error::Io(error) => format!("cannot read: {error}"),
        rustls_pki_types::pem::Error::NoItemsFound => format!("no PEM {what} in the file"),
        error => format!("not a PEM {what}: {error}"),
    }
}
