//! One TCP connection to the broker: frames out, frames in, with a timeout on every call.

use std::io::IoSlice;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::tls::{Stream, Tls};

use ringmq_protocol::limits::{FRAME_BODY_SIZE_MAX, FRAME_HEADER_SIZE};
use ringmq_protocol::message::{
    Authenticate, AuthenticateReply, ErrorBody, Handshake, HandshakeReply,
};
use ringmq_protocol::{ErrorCode, FrameHead, FrameKind, Opcode, Request, PROTOCOL_VERSION};

use crate::ClientError;

/// Where a connection goes: the broker's address and, for TLS, how.
#[derive(Debug, Clone)]
pub(crate) struct Endpoint {
    pub(crate) address: String,
    pub(crate) tls: Option<Tls>,
    pub(crate) credentials: Option<crate::Credentials>,
    /// How long a wait for the broker busy-polls before it parks (zero: not at all).
    pub(crate) busy_poll: Duration,
    /// The broker's local socket, for a same-host connection (then `address` is its path).
    pub(crate) local: Option<std::path::PathBuf>,
}

/// What every connection knows about the broker after the handshake.
#[derive(Debug, Clone)]
pub(crate) struct BrokerInfo {
    pub(crate) batch_size_max: u32,
}

/// First wait before reconnecting after a failed reconnect; doubles up to [`RECONNECT_BACKOFF_MAX`].
const RECONNECT_BACKOFF_MIN: Duration = Duration::from_millis(50);
const RECONNECT_BACKOFF_MAX: Duration = Duration::from_secs(1);

/// A connection: requests are written in order and answered in order.
///
/// A call that fails part-way (timeout, I/O error, a frame that does not decode) leaves the
/// stream out of step with the requests: a late response could answer the next call. Such a
/// connection is marked broken and [`Connection::call`] replaces it with a fresh one (with
/// backoff between failed attempts) before the next request.
#[derive(Debug)]
pub(crate) struct Connection {
    stream: Stream,
    endpoint: Endpoint,
    address: String,
    client_name: &'static str,
    input: BytesMut,
    next_correlation_id: u32,
    pub(crate) broker: BrokerInfo,
    pub(crate) timeout: Duration,
    scratch: Vec<u8>,
    broken: bool,
    reconnect: Backoff,
    /// Connections made before this one (by [`Connection::reopen`]).
    reconnects: u64,
}

/// When the next reconnect may be tried.
#[derive(Debug, Default)]
struct Backoff {
    not_before: Option<Instant>,
    delay: Duration,
}

impl Backoff {
    fn failed(&mut self) {
        self.delay = (self.delay * 2).clamp(RECONNECT_BACKOFF_MIN, RECONNECT_BACKOFF_MAX);
        self.not_before = Some(Instant::now() + self.delay);
    }
}

impl Connection {
    /// Connects and performs the handshake.
    pub(crate) async fn open(
        endpoint: &Endpoint,
        timeout: Duration,
        client_name: &'static str,
    ) -> Result<Self, ClientError> {
        let address = endpoint.address.as_str();
        let connect_error = |source: std::io::Error| ClientError::Connect {
            address: address.to_owned(),
            source: source.into(),
        };
        let timed_out =
            |_| ClientError::Timeout { operation: "connecting to the broker", after: timeout };
        let stream = if let Some(path) = &endpoint.local {
            let stream = tokio::time::timeout(timeout, tokio::net::UnixStream::connect(path))
                .await
                .map_err(timed_out)?
                .map_err(connect_error)?;
            Stream::Local(crate::local::socket::LocalStream::new(stream))
        } else {
            Self::connect_tcp(endpoint, timeout).await?
        };
        Self::handshake(stream, endpoint, timeout, client_name).await
    }

    /// A TCP connection to the endpoint, with TLS if it says so.
    async fn connect_tcp(endpoint: &Endpoint, timeout: Duration) -> Result<Stream, ClientError> {
        let address = endpoint.address.as_str();
        let connect_error = |source: std::io::Error| ClientError::Connect {
            address: address.to_owned(),
            source: source.into(),
        };
        let stream = tokio::time::timeout(timeout, TcpStream::connect(address))
            .await
            .map_err(|_| ClientError::Timeout {
                operation: "connecting to the broker",
                after: timeout,
            })?
            .map_err(connect_error)?;
        let _ = stream.set_nodelay(true);
        Ok(match &endpoint.tls {
            None => Stream::Plain(stream),
            Some(tls) => {
                let handshake = tokio::time::timeout(timeout, tls.connect(address, stream))
                    .await
                    .map_err(|_| ClientError::Timeout {
                        operation: "the TLS handshake",
                        after: timeout,
                    })?
                    .map_err(connect_error)?;
                Stream::Tls(Box::new(handshake))
            }
        })
    }

    /// Performs the handshake (and the login) on a fresh stream.
    async fn handshake(
        stream: Stream,
        endpoint: &Endpoint,
        timeout: Duration,
        client_name: &'static str,
    ) -> Result<Self, ClientError> {
        let address = endpoint.address.as_str();
        let mut connection = Self {
            stream,
            endpoint: endpoint.clone(),
            address: address.to_owned(),
            client_name,
            input: BytesMut::with_capacity(64 << 10),
            next_correlation_id: 1,
            broker: BrokerInfo { batch_size_max: FRAME_BODY_SIZE_MAX },
            timeout,
            scratch: Vec::with_capacity(4096),
            broken: false,
            reconnect: Backoff::default(),
            reconnects: 0,
        };
        let handshake = Request::Handshake(Handshake {
            version_min: PROTOCOL_VERSION,
            version_max: PROTOCOL_VERSION,
            client_name,
        });
        let (_, body) = connection.exchange(&handshake, timeout).await?;
        let reply = HandshakeReply::decode(&body)?;
        connection.broker = BrokerInfo { batch_size_max: reply.batch_size_max };
        if let Some(credentials) = &endpoint.credentials {
            connection.log_in(credentials, timeout).await?;
        }
        Ok(connection)
    }

    /// Logs in with SCRAM: client-first, server-first, client-final, server-final (checked).
    async fn log_in(
        &mut self,
        credentials: &crate::Credentials,
        timeout: Duration,
    ) -> Result<(), ClientError> {
        let mut login = credentials.scram_login();
        let mechanism = login.mechanism();
        let first = login.first()?;
        let request = Request::Authenticate(Authenticate { mechanism, message: &first });
        let (_, body) = self.exchange(&request, timeout).await?;
        let reply = AuthenticateReply::decode(&body)?;
        let last = login.last(reply.message)?;
        let request = Request::Authenticate(Authenticate { mechanism, message: &last });
        let (_, body) = self.exchange(&request, timeout).await?;
        let reply = AuthenticateReply::decode(&body)?;
        if !reply.done || login.verify(reply.message).is_err() {
            return Err(ClientError::InvalidArgument(format!(
                "the broker at {} did not prove it holds {:?}'s keys (its SCRAM signature is wrong)",
                self.address,
                credentials.user()
            )));
        }
        Ok(())
    }

    /// How many times the connection was replaced by a new one: what was learned over an
    /// earlier one (a same-host reader's mapped page) may be a broker's that is gone.
    pub(crate) fn reconnects(&self) -> u64 {
        self.reconnects
    }

    /// The user id of the process at the other end of a local connection (`SO_PEERCRED`):
    /// the broker's, whose files a same-host reader maps. `None` over TCP.
    pub(crate) fn peer_uid(&self) -> Option<std::io::Result<u32>> {
        match &self.stream {
            Stream::Local(stream) => Some(stream.peer_uid()),
            _ => None,
        }
    }

    /// Descriptors the broker attached to what was read so far (a `LocalOpen` answer's), taken.
    pub(crate) fn take_descriptors(&mut self) -> Vec<std::os::fd::OwnedFd> {
        match &mut self.stream {
            Stream::Local(stream) => stream.take_descriptors(),
            _ => Vec::new(),
        }
    }

    /// A new correlation id.
    pub(crate) fn correlation_id(&mut self) -> u32 {
        let id = self.next_correlation_id;
        self.next_correlation_id = self.next_correlation_id.wrapping_add(1).max(1);
        id
    }

    fn io_error(&self, source: std::io::Error) -> ClientError {
        ClientError::Io { address: self.address.clone(), source: source.into() }
    }

    /// Sends a request and waits for its response, within `timeout`. A broker error becomes
    /// [`ClientError::Broker`] (or [`ClientError::OffsetOutOfRange`]); the connection stays
    /// usable after one. After any other error it is replaced before the next call.
    pub(crate) async fn call(
        &mut self,
        request: &Request<'_>,
        timeout: Duration,
    ) -> Result<(FrameHead, Bytes), ClientError> {
        if self.broken {
            self.reopen().await?;
        }
        // Broken until the exchange completes: a call cancelled halfway (its future dropped)
        // may leave a request unanswered or a response unread, so the next call starts afresh.
        self.broken = true;
        let result = self.exchange(request, timeout).await;
        self.broken = matches!(
            &result,
            Err(error) if !matches!(error, ClientError::Broker { .. } | ClientError::OffsetOutOfRange { .. })
        );
        result
    }

    /// As [`Connection::call`] for a request that is safe to send twice (a read): if the
    /// connection turns out to be dead (the broker restarted since the last call), it is
    /// replaced and the request sent once more.
    pub(crate) async fn call_idempotent(
        &mut self,
        request: &Request<'_>,
        timeout: Duration,
    ) -> Result<(FrameHead, Bytes), ClientError> {
        match self.call(request, timeout).await {
            Err(ClientError::Closed { .. } | ClientError::Io { .. }) => {
                self.call(request, timeout).await
            }
            result => result,
        }
    }

    /// Replaces a broken connection, waiting out the backoff of earlier failed attempts.
    async fn reopen(&mut self) -> Result<(), ClientError> {
        if let Some(not_before) = self.reconnect.not_before {
            tokio::time::sleep_until(not_before.into()).await;
        }
        match Self::open(&self.endpoint, self.timeout, self.client_name).await {
            Ok(fresh) => {
                let reconnects = self.reconnects.saturating_add(1);
                *self = fresh;
                self.reconnects = reconnects;
                Ok(())
            }
            Err(error) => {
                self.reconnect.failed();
                Err(error)
            }
        }
    }

    /// Sends a request without waiting for its answer, which [`Connection::receive`] reads later
    /// (a consumer's next fetch, sent before the records of the last one are handed out). Until
    /// the answer is read the connection counts as broken: a caller that gives up on it leaves
    /// an answer in the stream, so the next [`Connection::call`] starts on a fresh connection.
    pub(crate) async fn send(
        &mut self,
        request: &Request<'_>,
        timeout: Duration,
    ) -> Result<u32, ClientError> {
        if self.broken {
            self.reopen().await?;
        }
        let correlation_id = self.correlation_id();
        let mut frame = std::mem::take(&mut self.scratch);
        frame.clear();
        let encoded = request.encode_frame(correlation_id, &mut frame);
        if let Err(error) = encoded {
            self.scratch = frame;
            return Err(error.into());
        }
        self.broken = true;
        let written = tokio::time::timeout(timeout, self.write_all(&frame)).await;
        self.scratch = frame;
        let operation = request_name(request.opcode());
        written.map_err(|_| ClientError::Timeout { operation, after: timeout })??;
        Ok(correlation_id)
    }

    /// Reads the answer to the request [`Connection::send`] sent with `correlation_id` (the only
    /// one unanswered), within `timeout`.
    pub(crate) async fn receive(
        &mut self,
        correlation_id: u32,
        opcode: Opcode,
        timeout: Duration,
    ) -> Result<(FrameHead, Bytes), ClientError> {
        let operation = request_name(opcode);
        let result = tokio::time::timeout(timeout, self.read_response(correlation_id))
            .await
            .unwrap_or(Err(ClientError::Timeout { operation, after: timeout }));
        self.broken = matches!(
            &result,
            Err(error) if !matches!(error, ClientError::Broker { .. } | ClientError::OffsetOutOfRange { .. })
        );
        result
    }

    async fn exchange(
        &mut self,
        request: &Request<'_>,
        timeout: Duration,
    ) -> Result<(FrameHead, Bytes), ClientError> {
        let correlation_id = self.correlation_id();
        let mut frame = std::mem::take(&mut self.scratch);
        frame.clear();
        request.encode_frame(correlation_id, &mut frame)?;
        let result = tokio::time::timeout(timeout, async {
            self.write_all(&frame).await?;
            self.read_response(correlation_id).await
        })
        .await;
        self.scratch = frame;
        let operation = request_name(request.opcode());
        result.map_err(|_| ClientError::Timeout { operation, after: timeout })?
    }

    /// Writes bytes.
    pub(crate) async fn write_all(&mut self, bytes: &[u8]) -> Result<(), ClientError> {
        let written = match self.stream.write_all(bytes).await {
            Ok(()) => self.stream.flush().await,
            Err(error) => Err(error),
        };
        written.map_err(|error| self.io_error(error))
    }

    /// Writes two buffers with vectored writes (a frame head, then a batch), copying neither.
    pub(crate) async fn write_two(&mut self, head: &[u8], body: &[u8]) -> Result<(), ClientError> {
        let mut slices = [IoSlice::new(head), IoSlice::new(body)];
        let mut remaining: &mut [IoSlice<'_>] = &mut slices;
        while !remaining.is_empty() {
            let written = self
                .stream
                .write_vectored(remaining)
                .await
                .map_err(|error| self.io_error(error))?;
            if written == 0 {
                return Err(self.io_error(std::io::ErrorKind::WriteZero.into()));
            }
            IoSlice::advance_slices(&mut remaining, written);
        }
        self.stream.flush().await.map_err(|error| self.io_error(error))
    }

    /// Reads the next response frame, which must answer `correlation_id`.
    pub(crate) async fn read_response(
        &mut self,
        correlation_id: u32,
    ) -> Result<(FrameHead, Bytes), ClientError> {
        let (head, body) = self.read_frame().await?;
        if head.correlation_id != correlation_id {
            // A broker error about the connection itself (limit, malformed frame) comes with id 0.
            if head.correlation_id == 0 {
                check_status(&head, &body)?;
            }
            return Err(ClientError::Protocol(ringmq_protocol::DecodeError::InvalidValue {
                context: "response",
                field: "correlation_id",
                position: 8,
                value: u64::from(head.correlation_id),
                reason: "does not answer the request sent",
            }));
        }
        check_status(&head, &body)?;
        Ok((head, body))
    }

    /// Waits until a whole frame is buffered, without taking it: [`Connection::receive`] then
    /// returns it at once. Cancel-safe (what arrived stays buffered), so a caller may give up
    /// waiting without leaving the connection out of step.
    pub(crate) async fn frame_arrived(&mut self) -> Result<(), ClientError> {
        self.fill(FRAME_HEADER_SIZE).await?;
        let head = FrameHead::decode(&self.input[..FRAME_HEADER_SIZE], FRAME_BODY_SIZE_MAX)?;
        self.fill(FRAME_HEADER_SIZE + head.body_len()).await
    }

    /// Reads the next frame, whatever it answers.
    pub(crate) async fn read_frame(&mut self) -> Result<(FrameHead, Bytes), ClientError> {
        self.fill(FRAME_HEADER_SIZE).await?;
        let head = FrameHead::decode(&self.input[..FRAME_HEADER_SIZE], FRAME_BODY_SIZE_MAX)?;
        if head.kind != FrameKind::Response {
            return Err(ClientError::Protocol(ringmq_protocol::DecodeError::InvalidValue {
                context: "response",
                field: "flags",
                position: 4,
                value: 0,
                reason: "the broker sent a request frame",
            }));
        }
        let total = FRAME_HEADER_SIZE + head.body_len();
        self.fill(total).await?;
        let mut frame = self.input.split_to(total);
        let body = frame.split_off(FRAME_HEADER_SIZE).freeze();
        Ok((head, body))
    }

    /// Reads until at least `size` bytes are buffered.
    async fn fill(&mut self, size: usize) -> Result<(), ClientError> {
        if self.input.capacity() < size {
            self.input.reserve(size - self.input.len());
        }
        while self.input.len() < size {
            let read = self.read_some().await.map_err(|error| self.io_error(error))?;
            if read == 0 {
                return Err(ClientError::Closed { address: self.address.clone() });
            }
        }
        Ok(())
    }
}

impl Connection {
    /// Reads what has arrived, waiting for at least a byte; with busy-polling on, the first
    /// `busy_poll` of the wait tries the socket and yields to the runtime in turn (never
    /// parking the thread), and only then waits for the kernel's wake-up.
    async fn read_some(&mut self) -> std::io::Result<usize> {
        if self.endpoint.busy_poll.is_zero() {
            return self.stream.read_buf(&mut self.input).await;
        }
        // A spin too long to represent (`Duration::MAX`) never ends: it busy-polls throughout.
        let until = Instant::now().checked_add(self.endpoint.busy_poll);
        loop {
            {
                let mut read = std::pin::pin!(self.stream.read_buf(&mut self.input));
                // A read that is not ready is dropped at the end of this block: `read_buf`
                // loses nothing when cancelled.
                let polled = std::future::poll_fn(|context| {
                    std::task::Poll::Ready(
                        match std::future::Future::poll(read.as_mut(), context) {
                            std::task::Poll::Ready(result) => Some(result),
                            std::task::Poll::Pending => None,
                        },
                    )
                })
                .await;
                if let Some(result) = polled {
                    return result;
                }
                if until.is_some_and(|until| Instant::now() >= until) {
                    return read.await;
                }
            }
            tokio::task::yield_now().await;
        }
    }
}

/// Turns a response with a non-zero status into the matching error.
pub(crate) fn check_status(head: &FrameHead, body: &[u8]) -> Result<(), ClientError> {
    if head.status == 0 {
        return Ok(());
    }
    let error = ErrorBody::decode(body)?;
    let code = ErrorCode::from_u16(head.status).unwrap_or(ErrorCode::Internal);
    if code == ErrorCode::OffsetOutOfRange {
        let offset = parse_offset(error.message).unwrap_or(0);
        return Err(ClientError::OffsetOutOfRange {
            offset,
            earliest: error.earliest_offset,
            next: error.next_offset,
        });
    }
    Err(ClientError::Broker { code, message: error.message.to_owned() })
}

/// The offset an out-of-range message names ("offset N is out of range ...").
fn parse_offset(message: &str) -> Option<u64> {
    message.strip_prefix("offset ")?.split(' ').next()?.parse().ok()
}

fn request_name(opcode: Opcode) -> &'static str {
    match opcode {
        Opcode::Handshake => "handshake",
        Opcode::Ping => "ping",
        Opcode::CreateTopic => "create topic",
        Opcode::DeleteTopic => "delete topic",
        Opcode::ListTopics => "list topics",
        Opcode::DescribeTopic => "describe topic",
        Opcode::Produce => "produce",
        Opcode::Fetch => "fetch",
        Opcode::Stats => "stats",
        _ => "request",
    }
}
