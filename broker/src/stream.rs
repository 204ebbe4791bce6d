//! The byte stream of one client connection, plain TCP, TLS or the local Unix socket, as both
//! front ends read and write it.
//!
//! Plain TCP keeps the readiness-based path (`readable` then `try_read`, `writable` then
//! `try_write_vectored`), so an idle connection waits holding no buffer and a fetch answer goes to
//! the socket as views of the mapped ring. TLS goes through tokio-rustls: rustls encrypts the
//! views into its records (the one copy TLS cannot avoid), and an idle TLS connection also waits on
//! the socket's readiness, unless rustls already holds decrypted bytes for it.

use std::io::{self, IoSlice};
use std::pin::Pin;
use std::task::{Context, Poll};

use std::os::fd::{AsFd, BorrowedFd};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, Interest, ReadBuf};
use tokio::net::{TcpStream, UnixStream};
use tokio_rustls::server::TlsStream;

/// Reads into `$buffer` from a tokio socket, waiting for readiness (`TcpStream` and `UnixStream`
/// have these methods but no trait in common).
macro_rules! read_ready {
    ($stream:expr, $buffer:expr) => {
        loop {
            match $stream.try_read($buffer) {
                Ok(read) => return Ok(read),
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => {
                    $stream.readable().await?;
                }
                Err(error) => return Err(error),
            }
        }
    };
}

/// Writes every slice of `$remaining` to a tokio socket with as few `writev` calls as it allows.
macro_rules! write_all_ready {
    ($stream:expr, $remaining:expr) => {{
        while !$remaining.is_empty() {
            $stream.writable().await?;
            match $stream.try_write_vectored($remaining) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(written) => IoSlice::advance_slices(&mut $remaining, written),
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => {}
                Err(error) => return Err(error),
            }
        }
        Ok(())
    }};
}

/// A client connection's stream.
#[derive(Debug)]
pub(crate) enum Stream {
    /// Plain TCP.
    Plain(TcpStream),
    /// TLS over TCP, after the handshake.
    Tls(Box<TlsStream<TcpStream>>),
    /// The local listener's Unix domain socket (same-host clients).
    Local(UnixStream),
}

impl Stream {
    /// Waits until a read would find bytes (or the end of the stream), without reading.
    pub(crate) async fn readable(&mut self) -> io::Result<()> {
        match self {
            Self::Plain(stream) => stream.readable().await,
            Self::Local(stream) => stream.readable().await,
            Self::Tls(stream) => {
                let (tcp, connection) = stream.get_ref();
                // rustls holds decrypted bytes not read yet: no need to wait for the socket.
                if !connection.wants_read() {
                    return Ok(());
                }
                tcp.readable().await
            }
        }
    }

    /// Reads what is there into `buffer` (waiting for at least a byte); 0 at the end of the
    /// stream.
    pub(crate) async fn read(&mut self, buffer: &mut [u8]) -> io::Result<usize> {
        match self {
            Self::Plain(stream) => read_ready!(stream, buffer),
            Self::Local(stream) => read_ready!(stream, buffer),
            Self::Tls(stream) => stream.read(buffer).await,
        }
    }

    /// Writes all of `bytes`.
    pub(crate) async fn write_all(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.write_all_vectored(&mut [IoSlice::new(bytes)]).await
    }

    /// Writes every slice, in order: with as few `writev` calls as the socket allows on plain
    /// TCP, through rustls's records (then flushed to the socket) on TLS.
    pub(crate) async fn write_all_vectored(
        &mut self,
        slices: &mut [IoSlice<'_>],
    ) -> io::Result<()> {
        let mut remaining: &mut [IoSlice<'_>] = slices;
        IoSlice::advance_slices(&mut remaining, 0);
        match self {
            Self::Plain(stream) => write_all_ready!(stream, remaining),
            Self::Local(stream) => write_all_ready!(stream, remaining),
            Self::Tls(stream) => {
                while !remaining.is_empty() {
                    match stream.write_vectored(remaining).await? {
                        0 => return Err(io::ErrorKind::WriteZero.into()),
                        written => IoSlice::advance_slices(&mut remaining, written),
                    }
                }
                stream.flush().await
            }
        }
    }

    /// Writes all of `bytes` with `descriptors` attached to the first of them (`SCM_RIGHTS`), on
    /// the local socket only.
    pub(crate) async fn write_with_descriptors(
        &mut self,
        bytes: &[u8],
        descriptors: &[BorrowedFd<'_>],
    ) -> io::Result<()> {
        let Self::Local(stream) = self else {
            return Err(io::Error::other("descriptors can be sent over the local socket only"));
        };
        let mut rest = bytes;
        let mut attached = false;
        while !rest.is_empty() {
            stream.writable().await?;
            let sent = stream.try_io(Interest::WRITABLE, || {
                let mut space =
                    [std::mem::MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(2))];
                let mut control = rustix::net::SendAncillaryBuffer::new(&mut space);
                if !attached
                    && !control.push(rustix::net::SendAncillaryMessage::ScmRights(descriptors))
                {
                    return Err(io::Error::other("too many descriptors for one message"));
                }
                let flags = rustix::net::SendFlags::NOSIGNAL;
                Ok(rustix::net::sendmsg(
                    stream.as_fd(),
                    &[IoSlice::new(rest)],
                    &mut control,
                    flags,
                )?)
            });
            match sent {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(written) => {
                    attached = true;
                    rest = rest.get(written..).unwrap_or_default();
                }
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => {}
                Err(error) => return Err(error),
            }
        }
        Ok(())
    }

    /// The subject of the client's certificate, on a TLS connection whose client presented one
    /// that the listener's client CA verified: `CN=writer, O=Example`, in the certificate's order,
    /// each value escaped as RFC 4514 says (so `CN=a\, O=b` cannot pass for `CN=a, O=b`). A
    /// subject that is empty or holds a value that is not a string gives no principal.
    pub(crate) fn certificate_subject(&self) -> Option<String> {
        let Self::Tls(stream) = self else { return None };
        let certificate = stream.get_ref().1.peer_certificates()?.first()?;
        let (_, parsed) = x509_parser::parse_x509_certificate(certificate.as_ref()).ok()?;
        let registry = x509_parser::objects::oid_registry();
        let mut parts = Vec::new();
        for rdn in parsed.subject().iter() {
            let mut attributes = Vec::new();
            for attribute in rdn.iter() {
                let name = x509_parser::objects::oid2abbrev(attribute.attr_type(), registry)
                    .map_or_else(|_| attribute.attr_type().to_id_string(), str::to_owned);
                attributes.push(format!("{name}={}", escape_rfc4514(attribute.as_str().ok()?)));
            }
            parts.push(attributes.join("+"));
        }
        let subject = parts.join(", ");
        (!subject.is_empty()).then_some(subject)
    }
}

/// A distinguished-name value escaped as RFC 4514 says: `, + " \ < > ;` and a leading `#` or
/// space or trailing space are escaped with `\`, control characters as `\XX`.
fn escape_rfc4514(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    let last = value.chars().count().saturating_sub(1);
    for (index, character) in value.chars().enumerate() {
        match character {
            ',' | '+' | '"' | '\\' | '<' | '>' | ';' | '=' => {
                out.push('\\');
                out.push(character);
            }
            '#' if index == 0 => out.push_str("\\#"),
            ' ' if index == 0 || index == last => out.push_str("\\ "),
            character if character.is_control() => {
                let mut bytes = [0u8; 4];
                for byte in character.encode_utf8(&mut bytes).bytes() {
                    out.push_str(&format!("\\{byte:02X}"));
                }
            }
            character => out.push(character),
        }
    }
    out
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        context: &mut Context<'_>,
        buffer: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
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
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Self::Plain(stream) => Pin::new(stream).poll_write(context, bytes),
            Self::Local(stream) => Pin::new(stream).poll_write(context, bytes),
            Self::Tls(stream) => Pin::new(stream.as_mut()).poll_write(context, bytes),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, context: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(stream) => Pin::new(stream).poll_flush(context),
            Self::Local(stream) => Pin::new(stream).poll_flush(context),
            Self::Tls(stream) => Pin::new(stream.as_mut()).poll_flush(context),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, context: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(stream) => Pin::new(stream).poll_shutdown(context),
            Self::Local(stream) => Pin::new(stream).poll_shutdown(context),
            Self::Tls(stream) => Pin::new(stream.as_mut()).poll_shutdown(context),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::escape_rfc4514;

    #[test]
    fn distinguished_name_values_are_escaped() {
        assert_eq!(escape_rfc4514("writer"), "writer");
        assert_eq!(escape_rfc4514("alice, O=ops"), "alice\\, O\\=ops");
        assert_eq!(escape_rfc4514("#x "), "\\#x\\ ");
        assert_eq!(escape_rfc4514("a\nb"), "a\\0Ab");
    }
}
