//! TLS for the client's connections: the CAs that vouch for the broker, and optionally this
//! client's own certificate (for a broker that asks for one, mutual TLS).
//!
//! rustls with its `ring` provider, as the broker uses.

use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use rustls::{ClientConfig, RootCertStore};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

use crate::ClientError;

/// How to connect with TLS: which certificate authorities to trust for the broker's certificate,
/// and which certificate, if any, to present.
///
/// ```no_run
/// use ringmq_client::{Client, Tls};
///
/// # async fn example() -> Result<(), ringmq_client::ClientError> {
/// let tls = Tls::with_ca_file("ca.pem".as_ref())?;
/// let mut client = Client::connect_tls("broker.example:7878", tls).await?;
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct Tls {
    config: Arc<ClientConfig>,
}

impl Tls {
    /// Trusts the CA certificates of a PEM file; presents no certificate.
    ///
    /// # Errors
    ///
    /// [`ClientError::Tls`] naming the file and what is wrong with it.
    pub fn with_ca_file(ca_file: &Path) -> Result<Self, ClientError> {
        Self::from_files(ca_file, None)
    }

    /// Trusts the CA certificates of `ca_file` and, with `identity` (a certificate chain file and
    /// its key file, PEM), presents that certificate to a broker that asks for one.
    ///
    /// # Errors
    ///
    /// [`ClientError::Tls`] naming the file and what is wrong with it.
    pub fn from_files(
        ca_file: &Path,
        identity: Option<(&Path, &Path)>,
    ) -> Result<Self, ClientError> {
        let mut roots = RootCertStore::empty();
        for certificate in certificates(ca_file)? {
            roots.add(certificate).map_err(|error| tls_error(ca_file, error.to_string()))?;
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|error| tls_error(ca_file, error.to_string()))?
            .with_root_certificates(roots);
        let config = match identity {
            None => builder.with_no_client_auth(),
            Some((cert_file, key_file)) => {
                let chain = certificates(cert_file)?;
                let key = PrivateKeyDer::from_pem_file(key_file)
                    .map_err(|error| tls_error(key_file, pem_problem(&error, "private key")))?;
                builder
                    .with_client_auth_cert(chain, key)
                    .map_err(|error| tls_error(cert_file, error.to_string()))?
            }
        };
        Ok(Self { config: Arc::new(config) })
    }

    /// A rustls configuration made elsewhere (other roots, a custom verifier, ...).
    pub fn from_config(config: Arc<ClientConfig>) -> Self {
        Self { config }
    }

    /// Performs the handshake on `tcp` for the host part of `address` (`host:port`): the
    /// broker's certificate must name that host (or IP address).
    pub(crate) async fn connect(
        &self,
        address: &str,
        tcp: TcpStream,
    ) -> Result<tokio_rustls::client::TlsStream<TcpStream>, std::io::Error> {
        let host = address.rsplit_once(':').map_or(address, |(host, _)| host);
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let name = ServerName::try_from(host.to_owned()).map_err(|error| {
            std::io::Error::new(std::io::ErrorKind::InvalidInput, format!("{host:?}: {error}"))
        })?;
        tokio_rustls::TlsConnector::from(Arc::clone(&self.config)).connect(name, tcp).await
    }
}

/// A connection's stream: plain TCP, TLS, or the broker's local socket.
#[derive(Debug)]
pub(crate) enum Stream {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
    /// The broker's local listener (a Unix domain socket).
    Local(crate::local::socket::LocalStream),
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        context: &mut Context<'_>,
        buffer: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Self::Plain(stream) => Pin::new(stream).poll_read(context, buffer),
            Self::Local(stream) => Pin::new(stream).poll_read(context, buffer),
            Self::Tls(stream) => Pin::new(stream.as_mut()).poll_read(context, buffer),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        context: &mut Context<'_>,
        bytes: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            Self::Plain(stream) => Pin::new(stream).poll_write(context, bytes),
            Self::Local(stream) => Pin::new(stream).poll_write(context, bytes),
            Self::Tls(stream) => Pin::new(stream.as_mut()).poll_write(context, bytes),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        context: &mut Context<'_>,
        slices: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            Self::Plain(stream) => Pin::new(stream).poll_write_vectored(context, slices),
            Self::Local(stream) => Pin::new(stream).poll_write_vectored(context, slices),
            Self::Tls(stream) => Pin::new(stream.as_mut()).poll_write_vectored(context, slices),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Self::Plain(stream) => stream.is_write_vectored(),
            Self::Local(stream) => stream.is_write_vectored(),
            Self::Tls(stream) => stream.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, context: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Self::Plain(stream) => Pin::new(stream).poll_flush(context),
            Self::Local(stream) => Pin::new(stream).poll_flush(context),
            Self::Tls(stream) => Pin::new(stream.as_mut()).poll_flush(context),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, context: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Self::Plain(stream) => Pin::new(stream).poll_shutdown(context),
            Self::Local(stream) => Pin::new(stream).poll_shutdown(context),
            Self::Tls(stream) => Pin::new(stream.as_mut()).poll_shutdown(context),
        }
    }
}

fn certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, ClientError> {
    let certificates = CertificateDer::pem_file_iter(path)
        .and_then(|items| items.collect::<Result<Vec<_>, _>>())
        .map_err(|error| tls_error(path, pem_problem(&error, "certificate")))?;
    if certificates.is_empty() {
        return Err(tls_error(
            path,
            "no PEM certificate (BEGIN CERTIFICATE) in the file".to_owned(),
        ));
    }
    Ok(certificates)
}

fn tls_error(path: &Path, problem: String) -> ClientError {
    ClientError::Tls { path: path.to_owned(), problem }
}

fn pem_problem(error: &rustls_pki_types::pem::Error, what: &str) -> String {
    match error {
        rustls_pki_types::pem::Error::Io(error) => format!("cannot read: {error}"),
        rustls_pki_types::pem::Error::NoItemsFound => format!("no PEM {what} in the file"),
        error => format!("not a PEM {what}: {error}"),
    }
}
