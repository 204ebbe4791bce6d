//! One client connection: frames in through a pooled buffer, responses out in request order.
//!
//! The connection is a single task and a small state machine, so a request costs no task spawn,
//! channel or allocation:
//!
//! 1. complete frames in the read buffer are handled in order while fewer than `in_flight_max`
//!    responses are outstanding (then the broker stops reading: backpressure);
//! 2. responses that are ready are written, in request order: a response that must wait (a
//!    produce waiting for its sync, a fetch long-polling for data) holds back the ones after it,
//!    which are kept encoded in a side buffer;
//! 3. the task then waits for more bytes, for the front response to become ready, for shutdown,
//!    or for a timeout.
//!
//! Reads land in a buffer from the pool, sized for one whole frame plus read-ahead. A read never
//! runs past the end of the frame in progress, so a frame is always contiguous and a batch is
//! validated in place and copied once, into the log. An idle connection holds no buffer.
//!
//! A fetch response is written with one vectored write: the 40-byte header, then the batches
//! straight from the mapped log. The log lease is taken only when the fetch reaches the front of
//! the queue and is held only while it is written (under the write timeout).

use std::collections::VecDeque;
use std::io::{self, IoSlice};
use std::net::SocketAddr;
use std::ops::Range;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::time::Instant;

use ringmq_protocol::limits::FRAME_HEADER_SIZE;
use ringmq_protocol::message::{ErrorBody, FetchReply, ProduceReply};
use ringmq_protocol::{DecodeError, ErrorCode, FrameHead, FrameKind, Opcode};

use super::request::Session;
use super::Context;
use crate::config::READ_AHEAD;
use crate::log::ReadError;
use crate::metrics::Metrics;
use crate::partition::Partition;
use crate::pool::{BufferPool, PooledBuffer};

/// Output a connection may have encoded and unwritten before it stops reading requests.
const OUTPUT_SOFT_LIMIT: usize = 1 << 20;

/// Why a connection ended without an I/O error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CloseReason {
    /// The client closed its end.
    ClientClosed,
    /// The broker is stopping.
    ShuttingDown,
    /// No request arrived for the idle timeout.
    IdleTimeout,
    /// A frame began but did not arrive whole within the frame timeout.
    FrameTimeout,
    /// A frame header could not be trusted (answered, then closed).
    MalformedFrame,
    /// A request body could not be decoded (answered, then closed).
    MalformedRequest,
}

impl std::fmt::Display for CloseReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            CloseReason::ClientClosed => "closed by the client",
            CloseReason::ShuttingDown => "broker shutting down",
            CloseReason::IdleTimeout => "idle timeout",
            CloseReason::FrameTimeout => "a frame did not arrive whole within the frame timeout",
            CloseReason::MalformedFrame => "malformed frame",
            CloseReason::MalformedRequest => "malformed request body",
        })
    }
}

/// Serves one connection until it closes.
pub(crate) async fn serve(
    stream: TcpStream,
    peer: SocketAddr,
    context: Arc<Context>,
    stop: watch::Receiver<bool>,
) {
    context.metrics.connection_opened();
    tracing::info!(%peer, "connection opened");
    let mut input = ReadBuffer::new(context.pool.clone());
    let mut output = Output::new(context.config.in_flight_count_max as usize);
    let mut session = Session::new(&context, peer);
    let outcome = run(&stream, &context, &mut input, &mut output, &mut session, stop).await;
    Metrics::add(&context.metrics.connections_closed, 1);
    match outcome {
        Ok(reason) => tracing::info!(%peer, %reason, "connection closed"),
        Err(error) => tracing::info!(%peer, %error, "connection closed"),
    }
}

async fn run(
    stream: &TcpStream,
    context: &Context,
    input: &mut ReadBuffer,
    output: &mut Output,
    session: &mut Session<'_>,
    mut stop: watch::Receiver<bool>,
) -> io::Result<CloseReason> {
    let config = &context.config;
    let in_flight_max = config.in_flight_count_max as usize;
    let mut closing: Option<CloseReason> = None;
    let mut last_activity = Instant::now();
    loop {
        while closing.is_none() && output.has_room(in_flight_max) {
            match input.next_frame(config.frame_size_max) {
                Ok(Some((head, body))) => {
                    last_activity = Instant::now();
                    if let Err(reason) = session.handle(head, input.body(body), output).await {
                        closing = Some(reason);
                    }
                }
                Ok(None) => break,
                Err(rejected) => {
                    context.metrics.error(rejected.code);
                    tracing::warn!(peer = %session.peer(), code = rejected.code.name(), error = %rejected.message, "rejected frame; closing the connection");
                    output.error(
                        rejected.opcode,
                        rejected.code,
                        rejected.correlation_id,
                        &rejected.message,
                        0,
                        0,
                    );
                    closing = Some(CloseReason::MalformedFrame);
                }
            }
        }
        output.flush(stream, context, session.peer(), closing.is_some()).await?;
        if output.written_any() {
            last_activity = Instant::now();
        }
        if let Some(reason) = closing {
            if output.is_idle() {
                return Ok(reason);
            }
        }
        if closing.is_none() && output.has_room(in_flight_max) && input.has_whole_frame() {
            // Frames were left unhandled for want of room, and the flush made room.
            continue;
        }
        let can_read = closing.is_none() && output.has_room(in_flight_max);
        let deadline = match input.partial_since() {
            Some(since) => since + config.frame_timeout,
            None if output.is_idle() => last_activity + config.idle_timeout,
            None => Instant::now() + config.idle_timeout,
        };
        let waiting = !output.pending.is_empty();
        tokio::select! {
            biased;
            _ = stop.changed(), if closing.is_none() => closing = Some(CloseReason::ShuttingDown),
            () = wait_front(&output.pending, closing.is_some()), if waiting => {}
            read = input.fill(stream, &context.pool_available, config.request_timeout), if can_read => {
                match read? {
                    0 => closing = Some(CloseReason::ClientClosed),
                    _ => last_activity = Instant::now(),
                }
            }
            () = tokio::time::sleep_until(deadline), if closing.is_none() => {
                return Ok(if input.partial_since().is_some() {
                    CloseReason::FrameTimeout
                } else {
                    CloseReason::IdleTimeout
                });
            }
        }
    }
}

/// A frame the broker refuses to read further: answered, then the connection closes.
struct Rejected {
    opcode: u8,
    code: ErrorCode,
    correlation_id: u32,
    message: String,
}

/// The connection's read buffer: a pooled buffer while bytes are buffered, none while idle.
struct ReadBuffer {
    pool: BufferPool,
    buffer: Option<PooledBuffer>,
    start: usize,
    end: usize,
    partial_since: Option<Instant>,
}

impl ReadBuffer {
    fn new(pool: BufferPool) -> Self {
        Self { pool, buffer: None, start: 0, end: 0, partial_since: None }
    }

    fn buffered(&self) -> &[u8] {
        match &self.buffer {
            Some(buffer) => &buffer[self.start..self.end],
            None => &[],
        }
    }

    /// When the frame now partly buffered began to arrive.
    fn partial_since(&self) -> Option<Instant> {
        self.partial_since
    }

    /// The next whole frame's header and the range of its body, or `None` for "need more bytes".
    fn next_frame(
        &mut self,
        body_size_max: u32,
    ) -> Result<Option<(FrameHead, Range<usize>)>, Rejected> {
        let buffered = self.buffered();
        if buffered.len() < FRAME_HEADER_SIZE {
            self.mark_partial();
            return Ok(None);
        }
        let head =
            FrameHead::decode(buffered, body_size_max).map_err(|error| reject(buffered, &error))?;
        if head.kind != FrameKind::Request {
            return Err(Rejected {
                opcode: head.opcode,
                code: ErrorCode::MalformedFrame,
                correlation_id: head.correlation_id,
                message: "a response frame was sent to the broker".to_owned(),
            });
        }
        let total = FRAME_HEADER_SIZE + head.body_len();
        if buffered.len() < total {
            self.mark_partial();
            return Ok(None);
        }
        let body = self.start + FRAME_HEADER_SIZE..self.start + total;
        self.start += total;
        self.partial_since = None;
        Ok(Some((head, body)))
    }

    /// Whether a whole frame (by its header's declared size) is buffered.
    fn has_whole_frame(&self) -> bool {
        let buffered = self.buffered();
        buffered.get(12..16).and_then(|size| size.try_into().ok()).is_some_and(|size: [u8; 4]| {
            buffered.len() >= FRAME_HEADER_SIZE + u32::from_le_bytes(size) as usize
        })
    }

    fn mark_partial(&mut self) {
        if self.start < self.end && self.partial_since.is_none() {
            self.partial_since = Some(Instant::now());
        } else if self.start == self.end {
            self.partial_since = None;
        }
    }

    fn body(&self, range: Range<usize>) -> &[u8] {
        match &self.buffer {
            Some(buffer) => &buffer[range],
            None => &[],
        }
    }

    /// Reads more bytes: read-ahead when empty, otherwise exactly up to the end of the frame in
    /// progress (its header first if that is not whole yet). Returns 0 at end of stream.
    async fn fill(
        &mut self,
        stream: &TcpStream,
        pool_available: &tokio::sync::Notify,
        wait_max: Duration,
    ) -> io::Result<usize> {
        if self.start == self.end {
            // Idle: give the buffer back while waiting for the client.
            self.start = 0;
            self.end = 0;
            self.buffer = None;
            stream.readable().await?;
        }
        if self.buffer.is_none() {
            self.buffer = Some(self.acquire(pool_available, wait_max).await?);
        }
        let capacity = self.pool.buffer_size();
        let buffered = self.end - self.start;
        let wanted_end = if buffered == 0 {
            self.start + READ_AHEAD.min(capacity)
        } else if buffered < FRAME_HEADER_SIZE {
            self.start + FRAME_HEADER_SIZE
        } else {
            // `next_frame` has checked the header, so its size is within the frame limit.
            let size = u32::from_le_bytes(self.buffered()[12..16].try_into().expect("4 bytes"));
            self.start + FRAME_HEADER_SIZE + size as usize
        };
        if wanted_end <= self.end {
            // Nothing to read: the frame in progress is already whole.
            return Ok(self.end - self.start);
        }
        if wanted_end > capacity {
            self.compact();
            return Box::pin(self.fill(stream, pool_available, wait_max)).await;
        }
        loop {
            let buffer = self.buffer.as_mut().expect("acquired above");
            match stream.try_read(&mut buffer[self.end..wanted_end]) {
                Ok(read) => {
                    self.end += read;
                    return Ok(read);
                }
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => {
                    stream.readable().await?
                }
                Err(error) => return Err(error),
            }
        }
    }

    /// Moves a partial frame to the start of the buffer. Only a frame that began beyond the
    /// read-ahead needs it, which the read pattern above avoids; counted as copied bytes if it
    /// ever happens.
    fn compact(&mut self) {
        let buffer = self.buffer.as_mut().expect("compact with a buffer");
        buffer.copy_within(self.start..self.end, 0);
        self.end -= self.start;
        self.start = 0;
    }

    async fn acquire(
        &self,
        pool_available: &tokio::sync::Notify,
        wait_max: Duration,
    ) -> io::Result<PooledBuffer> {
        let deadline = Instant::now() + wait_max;
        loop {
            let available = pool_available.notified();
            match self.pool.try_acquire() {
                Ok(buffer) => return Ok(buffer),
                Err(exhausted) => {
                    if tokio::time::timeout_at(deadline, available).await.is_err() {
                        return Err(io::Error::other(format!(
                            "no read buffer became free: {exhausted}"
                        )));
                    }
                }
            }
        }
    }
}

fn reject(buffered: &[u8], error: &DecodeError) -> Rejected {
    let code = match error {
        DecodeError::TooLarge { field: "body_size", .. } => ErrorCode::FrameTooLarge,
        DecodeError::UnsupportedVersion { .. } => ErrorCode::UnsupportedVersion,
        _ => ErrorCode::MalformedFrame,
    };
    // Echo the opcode and correlation id when the header at least has the right magic.
    let trusted = buffered.starts_with(b"RQ");
    let field = |range: Range<usize>| buffered.get(range).unwrap_or_default();
    Rejected {
        opcode: if trusted { field(3..4).first().copied().unwrap_or(0) } else { 0 },
        code,
        correlation_id: if trusted {
            field(8..12).try_into().map(u32::from_le_bytes).unwrap_or(0)
        } else {
            0
        },
        message: error.to_string(),
    }
}

/// A response that is not ready to write yet, or is queued behind one that is not.
#[derive(Debug)]
pub(crate) enum Pending {
    /// Encoded response bytes in the side buffer, up to `end`.
    Deferred { end: usize },
    /// A produce acknowledged once the partition is synced to `position`.
    Synced {
        correlation_id: u32,
        partition: Arc<Partition>,
        position: u64,
        base_offset: u64,
        deadline: Instant,
        started: Instant,
    },
    /// A fetch, read when it reaches the front; waits for data until `deadline`.
    Fetch {
        correlation_id: u32,
        partition: Arc<Partition>,
        offset: u64,
        max_bytes: usize,
        min_bytes: usize,
        deadline: Instant,
        /// The partition's next offset when it was last read: any append since is a reason to
        /// read again.
        seen_next: u64,
    },
}

/// Responses in request order.
#[derive(Debug)]
pub(crate) struct Output {
    /// Bytes ready to write.
    out: Vec<u8>,
    /// Encoded responses waiting behind a pending one.
    deferred: Vec<u8>,
    deferred_start: usize,
    pending: VecDeque<Pending>,
    wrote: bool,
}

impl Output {
    fn new(in_flight_max: usize) -> Self {
        Self {
            // Small to start: idle connections cost little; busy ones grow these once and keep
            // the capacity.
            out: Vec::with_capacity(4096),
            deferred: Vec::new(),
            deferred_start: 0,
            pending: VecDeque::with_capacity(in_flight_max.min(64)),
            wrote: false,
        }
    }

    fn has_room(&self, in_flight_max: usize) -> bool {
        self.pending.len() < in_flight_max
            && self.out.len() + self.deferred.len() < OUTPUT_SOFT_LIMIT
    }

    fn is_idle(&self) -> bool {
        self.pending.is_empty() && self.out.is_empty()
    }

    fn written_any(&mut self) -> bool {
        std::mem::take(&mut self.wrote)
    }

    /// Encodes a response with `encode` in request order: straight into the output if nothing
    /// is pending, else into the side buffer behind the pending responses.
    pub(crate) fn respond(&mut self, encode: impl FnOnce(&mut Vec<u8>)) {
        if self.pending.is_empty() {
            encode(&mut self.out);
        } else {
            encode(&mut self.deferred);
            self.pending.push_back(Pending::Deferred { end: self.deferred.len() });
        }
    }

    /// Queues a response that must wait.
    pub(crate) fn push(&mut self, pending: Pending) {
        self.pending.push_back(pending);
    }

    /// Queues an error response.
    pub(crate) fn error(
        &mut self,
        opcode: u8,
        code: ErrorCode,
        correlation_id: u32,
        message: &str,
        earliest: u64,
        next: u64,
    ) {
        self.respond(|out| {
            encode_error(out, opcode, code, correlation_id, message, earliest, next)
        });
    }

    /// Writes every response that is ready, in order.
    async fn flush(
        &mut self,
        stream: &TcpStream,
        context: &Context,
        peer: SocketAddr,
        closing: bool,
    ) -> io::Result<()> {
        let write_timeout = context.config.write_timeout;
        let metrics = &context.metrics;
        while let Some(mut front) = self.pending.pop_front() {
            match &mut front {
                Pending::Deferred { end } => {
                    self.out.extend_from_slice(&self.deferred[self.deferred_start..*end]);
                    self.deferred_start = *end;
                }
                Pending::Synced {
                    correlation_id,
                    partition,
                    position,
                    base_offset,
                    deadline,
                    started,
                } => {
                    let failure = if partition.synced_position() >= *position {
                        let reply = ProduceReply { base_offset: *base_offset };
                        encode_ok(&mut self.out, Opcode::Produce, *correlation_id, |body| {
                            reply.encode(body);
                            Ok(())
                        });
                        metrics.produce_took(started.elapsed());
                        None
                    } else if let Some(failure) = partition.sync_failure() {
                        Some((
                            ErrorCode::PartitionPoisoned,
                            format!("partition stopped: {failure}"),
                        ))
                    } else if Instant::now() >= *deadline {
                        let message = "the batch was written but its sync did not finish within the request timeout";
                        Some((ErrorCode::Timeout, message.to_owned()))
                    } else {
                        self.pending.push_front(front);
                        break;
                    };
                    if let Some((code, message)) = failure {
                        let opcode = Opcode::Produce.as_u8();
                        Failure {
                            opcode,
                            code,
                            correlation_id: *correlation_id,
                            message: &message,
                        }
                        .answer(&mut self.out, metrics, peer, 0, 0);
                    }
                }
                Pending::Fetch {
                    correlation_id,
                    partition,
                    offset,
                    max_bytes,
                    min_bytes,
                    deadline,
                    seen_next,
                } => {
                    let started = Instant::now();
                    let (code, message, earliest, next) = match partition
                        .log()
                        .read(*offset, *max_bytes)
                    {
                        Err(ReadError::OffsetOutOfRange { offset, earliest, next }) => {
                            let message = format!(
                                "offset {offset} is out of range for {}/{}: it holds {earliest} to {next}",
                                partition.topic(),
                                partition.index()
                            );
                            (ErrorCode::OffsetOutOfRange, message, earliest, next)
                        }
                        Err(error) => (ErrorCode::Busy, error.to_string(), 0, 0),
                        // Wait for more only while the read reached the end of the log (a read
                        // stops at a chunk's end, and what lies beyond is there already).
                        Ok(outcome)
                            if outcome.batches.len() < *min_bytes
                                && outcome.end_offset >= outcome.next_offset
                                && Instant::now() < *deadline
                                && !closing =>
                        {
                            *seen_next = outcome.next_offset;
                            drop(outcome);
                            self.pending.push_front(front);
                            break;
                        }
                        Ok(outcome) => {
                            let size = outcome.batches.len() as u64;
                            Metrics::add(&metrics.fetch_requests, 1);
                            Metrics::add(&metrics.bytes_out, size);
                            Metrics::add(&metrics.records_out, outcome.record_count);
                            partition.counters().fetched(outcome.record_count, size);
                            // Cannot fail: a read is bounded by the frame size limit.
                            let _ = FetchReply::encode_frame_head(
                                *correlation_id,
                                outcome.earliest_offset,
                                outcome.next_offset,
                                outcome.batches.len(),
                                &mut self.out,
                            );
                            let slices = [IoSlice::new(&self.out), IoSlice::new(&outcome.batches)];
                            with_timeout(write_timeout, write_all_vectored(stream, slices)).await?;
                            self.out.clear();
                            self.wrote = true;
                            metrics.fetch_took(started.elapsed());
                            // `outcome` drops here: the lease on the log ends with the write.
                            continue;
                        }
                    };
                    let opcode = Opcode::Fetch.as_u8();
                    Failure { opcode, code, correlation_id: *correlation_id, message: &message }
                        .answer(&mut self.out, metrics, peer, earliest, next);
                }
            }
        }
        if self.pending.is_empty() {
            self.deferred.clear();
            self.deferred_start = 0;
        } else if self.deferred_start >= 64 << 10 {
            // Drop the consumed prefix so the side buffer does not grow without bound.
            let consumed = self.deferred_start;
            self.deferred.drain(..consumed);
            self.deferred_start = 0;
            for pending in &mut self.pending {
                if let Pending::Deferred { end } = pending {
                    *end -= consumed;
                }
            }
        }
        if !self.out.is_empty() {
            with_timeout(write_timeout, write_all(stream, &self.out)).await?;
            self.out.clear();
            self.wrote = true;
        }
        Ok(())
    }
}

/// Waits until the front pending response may have become ready.
async fn wait_front(pending: &VecDeque<Pending>, closing: bool) {
    match pending.front() {
        None | Some(Pending::Deferred { .. }) => {}
        Some(Pending::Synced { partition, position, deadline, .. }) => {
            let done = partition.sync_done();
            tokio::pin!(done);
            done.as_mut().enable();
            if partition.synced_position() >= *position || partition.sync_failure().is_some() {
                return;
            }
            let _ = tokio::time::timeout_at(*deadline, done).await;
        }
        Some(Pending::Fetch { partition, deadline, seen_next, .. }) => {
            if closing {
                return;
            }
            let appended = partition.appended();
            tokio::pin!(appended);
            appended.as_mut().enable();
            // Anything appended since the last read is a reason to read again (which then decides
            // whether enough has arrived).
            if partition.log().next_offset() != *seen_next {
                return;
            }
            let _ = tokio::time::timeout_at(*deadline, appended).await;
        }
    }
}

/// Encodes a success frame with body `body`.
pub(crate) fn encode_ok(
    out: &mut Vec<u8>,
    opcode: Opcode,
    correlation_id: u32,
    body: impl FnOnce(&mut Vec<u8>) -> Result<(), ringmq_protocol::EncodeError>,
) {
    let start = out.len();
    if let Err(error) =
        ringmq_protocol::message::encode_response_frame(opcode, correlation_id, out, body)
    {
        // A reply the protocol cannot carry (a field past its limit): say so instead of sending
        // a truncated or malformed frame.
        tracing::error!(request = opcode.name(), %error, "reply could not be encoded");
        out.truncate(start);
        let message = format!("the reply could not be encoded: {error}");
        encode_error(out, opcode.as_u8(), ErrorCode::Internal, correlation_id, &message, 0, 0);
    }
}

/// A request that failed, as the client is told and the operator sees it.
pub(crate) struct Failure<'a> {
    pub(crate) opcode: u8,
    pub(crate) code: ErrorCode,
    pub(crate) correlation_id: u32,
    pub(crate) message: &'a str,
}

impl Failure<'_> {
    /// Counts it by code, logs it with the peer's address, and encodes its error frame (with the
    /// partition's `earliest` and `next` offsets where they help the client resume).
    pub(crate) fn answer(
        &self,
        out: &mut Vec<u8>,
        metrics: &crate::metrics::Metrics,
        peer: SocketAddr,
        earliest: u64,
        next: u64,
    ) {
        let Failure { opcode, code, correlation_id, message } = *self;
        metrics.error(code);
        tracing::info!(%peer, code = code.name(), message, "request failed");
        encode_error(out, opcode, code, correlation_id, message, earliest, next);
    }
}

/// Encodes an error frame.
pub(crate) fn encode_error(
    out: &mut Vec<u8>,
    opcode: u8,
    code: ErrorCode,
    correlation_id: u32,
    message: &str,
    earliest: u64,
    next: u64,
) {
    ErrorBody { message, earliest_offset: earliest, next_offset: next }.encode_frame(
        opcode,
        code,
        correlation_id,
        out,
    );
}

async fn with_timeout(
    limit: Duration,
    write: impl std::future::Future<Output = io::Result<()>>,
) -> io::Result<()> {
    tokio::time::timeout(limit, write).await.map_err(|_| {
        io::Error::new(
            io::ErrorKind::TimedOut,
            format!("the client did not read its responses within {} ms", limit.as_millis()),
        )
    })?
}

/// Writes all of `bytes`.
pub(crate) async fn write_all(stream: &TcpStream, mut bytes: &[u8]) -> io::Result<()> {
    while !bytes.is_empty() {
        stream.writable().await?;
        match stream.try_write(bytes) {
            Ok(written) => bytes = &bytes[written..],
            Err(error) if error.kind() == io::ErrorKind::WouldBlock => {}
            Err(error) => return Err(error),
        }
    }
    Ok(())
}

/// Writes all of `slices` with vectored writes.
async fn write_all_vectored<const N: usize>(
    stream: &TcpStream,
    mut slices: [IoSlice<'_>; N],
) -> io::Result<()> {
    let mut remaining: &mut [IoSlice<'_>] = &mut slices;
    IoSlice::advance_slices(&mut remaining, 0);
    while !remaining.is_empty() {
        stream.writable().await?;
        match stream.try_write_vectored(remaining) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(written) => IoSlice::advance_slices(&mut remaining, written),
            Err(error) if error.kind() == io::ErrorKind::WouldBlock => {}
            Err(error) => return Err(error),
        }
    }
    Ok(())
}
