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
//! Responses are kept and written by [`super::response::Output`].

use std::io;
use std::net::SocketAddr;
use std::ops::Range;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;

use ringmq_protocol::limits::FRAME_HEADER_SIZE;
use ringmq_protocol::{DecodeError, ErrorCode, FrameHead, FrameKind};

use super::request::Session;
use super::response::{wait_front, CloseReason, Output};
use super::Context;
use crate::config::READ_AHEAD;
use crate::metrics::Metrics;
use crate::pool::{BufferPool, PooledBuffer};
use crate::stream::Stream;

/// Serves one connection until it closes.
pub(crate) async fn serve(
    mut stream: Stream,
    peer: SocketAddr,
    context: Arc<Context>,
    stop: watch::Receiver<bool>,
) {
    context.core.metrics().connection_opened();
    let principal = stream.certificate_subject();
    let local = matches!(stream, Stream::Local(_));
    match &principal {
        Some(subject) => tracing::info!(%peer, principal = %subject, "connection opened"),
        None if local => tracing::info!(local, "connection opened"),
        None => tracing::info!(%peer, tls = matches!(stream, Stream::Tls(_)), "connection opened"),
    }
    let mut input = ReadBuffer::new(context.pool.clone());
    let mut output = Output::new(context.config.in_flight_count_max as usize);
    let tls = matches!(stream, Stream::Tls(_));
    let mut session = Session::new(&context, peer, principal, tls, local);
    if let Err(refused) = session.take_seat() {
        tracing::warn!(%peer, reason = %refused, "connection refused");
        context.core.metrics().connection_refused();
        let message = refused.to_string();
        output.error(0, ErrorCode::TooManyConnections, 0, &message, 0, 0);
        let _ = output.flush(&mut stream, &context, peer, true).await;
        Metrics::add(&context.core.metrics().connections_closed, 1);
        return;
    }
    let outcome = run(&mut stream, &context, &mut input, &mut output, &mut session, stop).await;
    Metrics::add(&context.core.metrics().connections_closed, 1);
    match outcome {
        Ok(reason) => tracing::info!(%peer, %reason, "connection closed"),
        Err(error) => tracing::info!(%peer, %error, "connection closed"),
    }
}

async fn run(
    stream: &mut Stream,
    context: &Context,
    input: &mut ReadBuffer,
    output: &mut Output,
    session: &mut Session<'_>,
    mut stop: watch::Receiver<bool>,
) -> io::Result<CloseReason> {
    let config = &context.config;
    let in_flight_max = config.in_flight_count_max as usize;
    let busy_poll = Duration::from_micros(u64::from(config.busy_poll_us));
    let mut closing: Option<CloseReason> = None;
    let mut last_activity = Instant::now();
    loop {
        // A principal over its quota: answer what is in hand, read nothing more until then.
        let mut throttled = output.throttled_until();
        while closing.is_none() && throttled.is_none() && output.has_room(in_flight_max) {
            match input.next_frame(config.frame_size_max) {
                Ok(Some((head, body))) => {
                    last_activity = Instant::now();
                    if let Err(reason) = session.handle(head, input.body(body), output).await {
                        closing = Some(reason);
                    }
                    throttled = output.throttled_until();
                }
                Ok(None) => break,
                Err(rejected) => {
                    context.core.metrics().error(rejected.code);
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
        // The flush may have fetched past the quota.
        let throttled = output.throttled_until();
        if closing.is_none()
            && throttled.is_none()
            && output.has_room(in_flight_max)
            && input.has_whole_frame()
        {
            // Frames were left unhandled for want of room, and the flush made room.
            continue;
        }
        let can_read = closing.is_none() && throttled.is_none() && output.has_room(in_flight_max);
        let deadline = match input.partial_since() {
            Some(since) => since + config.frame_timeout,
            None if output.is_idle() => last_activity + config.idle_timeout,
            None => Instant::now() + config.idle_timeout,
        };
        // While the connection is held back, the client is not the one who is late.
        let deadline = throttled.map_or(deadline, |until| {
            let timeout = match input.partial_since() {
                Some(_) => config.frame_timeout,
                None => config.idle_timeout,
            };
            deadline.max(until + timeout)
        });
        let waiting = output.is_waiting();
        // Busy-polling: for `busy_poll` after the last request or response, the task yields
        // instead of parking, and the branches above are checked again when it next runs.
        let spinning = !busy_poll.is_zero()
            && closing.is_none()
            && (can_read || waiting)
            && Instant::now() < last_activity + busy_poll;
        tokio::select! {
            biased;
            _ = stop.changed(), if closing.is_none() => closing = Some(CloseReason::ShuttingDown),
            () = wait_front(context, output.pending(), closing.is_some()), if waiting => {}
            () = sleep_until_some(throttled), if throttled.is_some() => {
                // A frame left partial meanwhile gets its whole frame timeout from now.
                input.restart_partial_clock();
                last_activity = Instant::now();
            }
            read = input.fill(stream, &context.pool_available, (config.request_timeout, config.frame_timeout)), if can_read => {
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
            () = tokio::task::yield_now(), if spinning => {}
        }
    }
}

/// Sleeps until `until` (forever for `None`, which the caller's guard rules out).
async fn sleep_until_some(until: Option<Instant>) {
    match until {
        Some(until) => tokio::time::sleep_until(until).await,
        None => std::future::pending().await,
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
        if head.status != 0 {
            return Err(Rejected {
                opcode: head.opcode,
                code: ErrorCode::MalformedFrame,
                correlation_id: head.correlation_id,
                message: format!("a request frame has status {} (requests carry 0)", head.status),
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

    /// Counts the frame in progress (if any) as begun now: after a quota's hold, during which
    /// the broker did not read it.
    fn restart_partial_clock(&mut self) {
        if self.partial_since.is_some() {
            self.partial_since = Some(Instant::now());
        }
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
        stream: &mut Stream,
        pool_available: &tokio::sync::Notify,
        (wait_max, frame_timeout): (Duration, Duration),
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
            return Box::pin(self.fill(stream, pool_available, (wait_max, frame_timeout))).await;
        }
        let buffer = self.buffer.as_mut().expect("acquired above");
        // Bounded by the frame timeout: on TLS the socket turns readable with a byte of a record
        // that may never be finished, and a buffer must not be held for the idle timeout.
        let read =
            tokio::time::timeout(frame_timeout, stream.read(&mut buffer[self.end..wanted_end]))
                .await
                .map_err(|_| {
                    io::Error::new(
                        io::ErrorKind::TimedOut,
                        "no bytes arrived within the frame timeout",
                    )
                })??;
        self.end += read;
        Ok(read)
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
