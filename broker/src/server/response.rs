//! Responses of one connection, in request order: ready ones encoded into the output buffer, ones
//! that must wait (a produce for its sync, a fetch for data) held as [`Pending`] with the
//! responses behind them kept encoded in a side buffer; and how a failed request is answered.
//!
//! A fetch response is written with one vectored write: the 40-byte header, then the batches
//! straight from the mapped log. The log lease is taken only when the fetch reaches the front of
//! the queue and is held only while it is written (under the write timeout).

use std::collections::VecDeque;
use std::io::{self, IoSlice};
use std::net::SocketAddr;
use std::time::Duration;

use crate::stream::Stream;
use tokio::time::Instant;

use ringmq_protocol::message::{ErrorBody, FetchReply, LocalWaitReply, ProduceReply};
use ringmq_protocol::{ErrorCode, Opcode};

use super::Context;
use crate::core::{Caller, FetchError, PartitionHandle, SyncState, SyncWait};
use crate::log::LocalFiles;

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
    /// A request on a connection that is not authenticated, where the broker requires it.
    Unauthenticated,
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
            CloseReason::Unauthenticated => "a request before authentication",
        })
    }
}

/// A response that is not ready to write yet, or is queued behind one that is not.
#[derive(Debug)]
pub(crate) enum Pending {
    /// Encoded response bytes in the side buffer, up to `end`.
    Deferred { end: usize },
    /// A produce acknowledged once its sync is done.
    Synced { correlation_id: u32, wait: SyncWait, base_offset: u64, started: Instant },
    /// An encoded response that goes out with descriptors attached (a `LocalOpen` answer).
    Descriptors { frame: Vec<u8>, files: LocalFiles },
    /// A fetch, read when it reaches the front; waits for data until `deadline`.
    Fetch {
        correlation_id: u32,
        caller: Caller,
        partition: PartitionHandle,
        offset: u64,
        max_bytes: usize,
        min_bytes: usize,
        deadline: Instant,
        /// The partition's next offset when it was last read: any append since is a reason to
        /// read again.
        seen_next: u64,
        /// A `LocalWait`: answered with the offsets only, once data is there.
        wake_only: bool,
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
    /// Until when the connection reads nothing more: its principal is over a quota.
    throttled_until: Option<Instant>,
}

impl Output {
    pub(super) fn new(in_flight_max: usize) -> Self {
        Self {
            // Small to start: idle connections cost little; busy ones grow these once and keep
            // the capacity.
            out: Vec::with_capacity(4096),
            deferred: Vec::new(),
            deferred_start: 0,
            pending: VecDeque::with_capacity(in_flight_max.min(64)),
            wrote: false,
            throttled_until: None,
        }
    }

    /// Holds back the connection's next requests for `throttle` (a quota's wait).
    pub(crate) fn throttle(&mut self, throttle: Duration) {
        if !throttle.is_zero() {
            let until = Instant::now() + throttle;
            self.throttled_until = Some(self.throttled_until.map_or(until, |held| held.max(until)));
        }
    }

    /// Until when the connection must read nothing (`None`: it may read now).
    pub(super) fn throttled_until(&mut self) -> Option<Instant> {
        match self.throttled_until {
            Some(until) if until > Instant::now() => Some(until),
            _ => {
                self.throttled_until = None;
                None
            }
        }
    }

    pub(super) fn has_room(&self, in_flight_max: usize) -> bool {
        self.pending.len() < in_flight_max
            && self.out.len() + self.deferred.len() < OUTPUT_SOFT_LIMIT
    }

    /// The responses waiting.
    pub(super) fn pending(&self) -> &VecDeque<Pending> {
        &self.pending
    }

    /// Whether a response must wait for something (a sync, data).
    pub(super) fn is_waiting(&self) -> bool {
        !self.pending.is_empty()
    }

    pub(super) fn is_idle(&self) -> bool {
        self.pending.is_empty() && self.out.is_empty()
    }

    pub(super) fn written_any(&mut self) -> bool {
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
    pub(super) async fn flush(
        &mut self,
        stream: &mut Stream,
        context: &Context,
        peer: SocketAddr,
        closing: bool,
    ) -> io::Result<()> {
        let write_timeout = context.config.write_timeout;
        let core = &context.core;
        let metrics = core.metrics();
        while let Some(mut front) = self.pending.pop_front() {
            match &mut front {
                Pending::Deferred { end } => {
                    self.out.extend_from_slice(&self.deferred[self.deferred_start..*end]);
                    self.deferred_start = *end;
                }
                Pending::Descriptors { frame, files } => {
                    if !self.out.is_empty() {
                        with_timeout(write_timeout, stream.write_all(&self.out)).await?;
                        self.out.clear();
                    }
                    use std::os::fd::AsFd;
                    let descriptors = [files.ring.as_fd(), files.page.as_fd()];
                    with_timeout(write_timeout, stream.write_with_descriptors(frame, &descriptors))
                        .await?;
                    self.wrote = true;
                }
                Pending::Synced { correlation_id, wait, base_offset, started } => {
                    let failure = match core.sync_state(wait) {
                        SyncState::Done => {
                            let reply = ProduceReply { base_offset: *base_offset };
                            encode_ok(&mut self.out, Opcode::Produce, *correlation_id, |body| {
                                reply.encode(body);
                                Ok(())
                            });
                            core.produce_acknowledged(*started);
                            None
                        }
                        SyncState::Failed(failure) => Some((
                            ErrorCode::PartitionPoisoned,
                            format!("partition stopped: {failure}"),
                        )),
                        SyncState::TimedOut => {
                            let message = "the batch was written but its sync did not finish within the request timeout";
                            Some((ErrorCode::Timeout, message.to_owned()))
                        }
                        SyncState::Pending => {
                            self.pending.push_front(front);
                            break;
                        }
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
                    caller,
                    partition,
                    offset,
                    max_bytes,
                    min_bytes,
                    deadline,
                    seen_next,
                    wake_only,
                } => {
                    let started = Instant::now();
                    let (code, message, earliest, next) = match core
                        .read(caller, partition, *offset, *max_bytes)
                    {
                        Err(error @ FetchError::OffsetOutOfRange { earliest, next, .. }) => {
                            (ErrorCode::OffsetOutOfRange, error.to_string(), earliest, next)
                        }
                        Err(error @ FetchError::Unauthorized(_)) => {
                            (ErrorCode::Unauthorized, error.to_string(), 0, 0)
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
                        Ok(outcome) if *wake_only => {
                            let reply = LocalWaitReply {
                                earliest_offset: outcome.earliest_offset,
                                next_offset: outcome.next_offset,
                            };
                            drop(outcome);
                            encode_ok(&mut self.out, Opcode::LocalWait, *correlation_id, |body| {
                                reply.encode(body);
                                Ok(())
                            });
                            continue;
                        }
                        Ok(outcome) => {
                            // Cannot fail: a read is bounded by the frame size limit.
                            let _ = FetchReply::encode_frame_head(
                                *correlation_id,
                                outcome.earliest_offset,
                                outcome.next_offset,
                                outcome.batches.len(),
                                &mut self.out,
                            );
                            core.fetched(partition, &outcome);
                            let bytes = outcome.batches.len() as u64;
                            self.throttle(core.fetch_throttle(caller, bytes));
                            let mut slices =
                                [IoSlice::new(&self.out), IoSlice::new(&outcome.batches)];
                            with_timeout(write_timeout, stream.write_all_vectored(&mut slices))
                                .await?;
                            self.out.clear();
                            self.wrote = true;
                            core.fetch_answered(started);
                            // `outcome` drops here: the lease on the log ends with the write.
                            continue;
                        }
                    };
                    let opcode = if *wake_only { Opcode::LocalWait } else { Opcode::Fetch }.as_u8();
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
            with_timeout(write_timeout, stream.write_all(&self.out)).await?;
            self.out.clear();
            self.wrote = true;
        }
        Ok(())
    }
}

/// Waits until the front pending response may have become ready.
pub(super) async fn wait_front(context: &Context, pending: &VecDeque<Pending>, closing: bool) {
    let core = &context.core;
    match pending.front() {
        None | Some(Pending::Deferred { .. } | Pending::Descriptors { .. }) => {}
        Some(Pending::Synced { wait, .. }) => core.sync_changed(wait).await,
        Some(Pending::Fetch { partition, deadline, seen_next, .. }) => {
            if closing {
                return;
            }
            let appended = core.appended(partition);
            tokio::pin!(appended);
            appended.as_mut().enable();
            // Anything appended since the last read is a reason to read again (which then decides
            // whether enough has arrived).
            if core.offsets(partition).next != *seen_next {
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

pub(super) async fn with_timeout(
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
