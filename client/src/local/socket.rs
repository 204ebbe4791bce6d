//! The client's end of the broker's local listener: a Unix domain socket whose reads also take
//! the descriptors the broker attaches to a `LocalOpen` answer (`SCM_RIGHTS`), kept until the
//! caller asks for them. A plain read would silently drop (close) them.

use std::io;
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, OwnedFd};
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use rustix::net::{RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags};
use tokio::io::{AsyncRead, AsyncWrite, Interest, ReadBuf};
use tokio::net::UnixStream;

/// Most bytes one read takes: the local socket carries small control messages only, and each
/// read zeroes what it may fill.
const READ_SIZE_MAX: usize = 16 << 10;
/// Most descriptors one message may bring (the broker sends two).
const DESCRIPTORS_MAX: usize = 4;

/// A connected local socket and the descriptors received on it, not yet taken.
#[derive(Debug)]
pub(crate) struct LocalStream {
    stream: UnixStream,
    received: Vec<OwnedFd>,
}

impl LocalStream {
    pub(crate) fn new(stream: UnixStream) -> Self {
        Self { stream, received: Vec::new() }
    }

    /// The user id of the peer process, as the kernel recorded it when it connected.
    pub(crate) fn peer_uid(&self) -> io::Result<u32> {
        let credentials = rustix::net::sockopt::socket_peercred(self.stream.as_fd())?;
        Ok(credentials.uid.as_raw())
    }

    /// The descriptors received since the last call, in order.
    pub(crate) fn take_descriptors(&mut self) -> Vec<OwnedFd> {
        std::mem::take(&mut self.received)
    }
}

impl AsyncRead for LocalStream {
    fn poll_read(
        self: Pin<&mut Self>,
        context: &mut Context<'_>,
        buffer: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            ready!(this.stream.poll_read_ready(context))?;
            let room = buffer.remaining().min(READ_SIZE_MAX);
            let unfilled = buffer.initialize_unfilled_to(room);
            let mut space =
                [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(DESCRIPTORS_MAX))];
            let mut control = RecvAncillaryBuffer::new(&mut space);
            let received = this.stream.try_io(Interest::READABLE, || {
                let mut slices = [io::IoSliceMut::new(unfilled)];
                let flags = RecvFlags::CMSG_CLOEXEC;
                Ok(rustix::net::recvmsg(this.stream.as_fd(), &mut slices, &mut control, flags)?)
            });
            match received {
                Ok(message) => {
                    for ancillary in control.drain() {
                        if let RecvAncillaryMessage::ScmRights(descriptors) = ancillary {
                            this.received.extend(descriptors);
                        }
                    }
                    buffer.advance(message.bytes);
                    return Poll::Ready(Ok(()));
                }
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => {}
                Err(error) => return Poll::Ready(Err(error)),
            }
        }
    }
}

impl AsyncWrite for LocalStream {
    fn poll_write(
        self: Pin<&mut Self>,
        context: &mut Context<'_>,
        bytes: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write(context, bytes)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        context: &mut Context<'_>,
        slices: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write_vectored(context, slices)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, context: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(context)
    }

    fn poll_shutdown(self: Pin<&mut Self>, context: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(context)
    }
}
