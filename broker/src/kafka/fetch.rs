//! Kafka `Fetch` (versions 4 to 12): read every partition asked for through the core, wait for
//! data while there is less than `min_bytes` (up to `max_wait_ms`, capped by the broker's
//! `fetch_wait_max_ms`), and answer with one vectored write whose record sets are views of the
//! mapped ring: no copy out. The response is encoded here, not by the crate (which would copy the
//! records into its buffer); a test checks it against the crate's encoder byte for byte.
//!
//! A fetch from inside a batch returns the whole batch (consumers skip the records before their
//! offset); an empty record set is zero bytes, never null; an offset outside the partition gets
//! `OFFSET_OUT_OF_RANGE` with the partition's range, and no timeout error code is ever sent (a
//! long poll that found nothing answers empty record sets). The leases on the ring are held only
//! while the response is written, under the write timeout, never while waiting.

use std::future::Future;
use std::io::{self, IoSlice};
use std::pin::Pin;
use std::task::Poll;
use std::time::Duration;

use crate::stream::Stream;
use kafka_protocol::messages::FetchRequest;
use tokio::time::Instant;

use kafka_protocol::messages::ApiKey;

use super::wire::Out;
use super::{codes, KafkaContext, ResponseHead};
use crate::core::{FetchError, PartitionHandle};
use crate::log::ReadOutcome;

/// A fetch response ready to write: encoded bytes with the record sets to splice in.
pub(crate) struct FetchAnswer {
    /// Everything but the record sets.
    own: bytes::BytesMut,
    /// The partitions, each with its answer and where in `own` its record set goes.
    asked: Vec<Asked>,
    started: Instant,
}

/// One partition's answer.
enum Answered {
    /// Its batches (none if the response was full before it).
    Data {
        offsets: (u64, u64),
        read: Option<(PartitionHandle, ReadOutcome)>,
    },
    Failed {
        code: i16,
        offsets: (u64, u64),
    },
}

impl Asked {
    /// The record set of its answer (empty if none).
    fn records(&self) -> &[u8] {
        match &self.answer {
            Some(Answered::Data { read: Some((_, outcome)), .. }) => &outcome.batches,
            _ => &[],
        }
    }
}

/// A partition asked for, resolved once, with its answer of the current attempt.
struct Asked {
    index: i32,
    handle: Result<PartitionHandle, i16>,
    offset: u64,
    max: usize,
    answer: Option<Answered>,
    /// Where in the encoded response its record set is spliced in.
    splice: usize,
}

/// Handles a fetch: reads, waits for data while needed, and returns the answer to write.
pub(crate) async fn fetch(
    context: &KafkaContext,
    asked_by: &super::Request,
    request: FetchRequest,
) -> super::Answer {
    let (core, caller, version) = (&context.core, &asked_by.caller, asked_by.version);
    // Every partition asked for, topic by topic, in one vector (one allocation).
    let mut asked: Vec<Asked> =
        Vec::with_capacity(request.topics.iter().map(|topic| topic.partitions.len()).sum());
    for topic in &request.topics {
        for partition in &topic.partitions {
            asked.push(Asked {
                index: partition.partition,
                handle: super::admin::partition_of(
                    context,
                    caller,
                    &topic.topic,
                    partition.partition,
                ),
                offset: u64::try_from(partition.fetch_offset).unwrap_or(u64::MAX),
                max: usize::try_from(partition.partition_max_bytes).unwrap_or(0),
                answer: None,
                splice: 0,
            });
        }
    }
    let max_wait = Duration::from_millis(u64::try_from(request.max_wait_ms).unwrap_or(0));
    let deadline = Instant::now() + core.fetch_wait(max_wait);
    let min_bytes = usize::try_from(request.min_bytes).unwrap_or(0);
    let max_bytes = usize::try_from(request.max_bytes).unwrap_or(usize::MAX).max(1);
    loop {
        let started = Instant::now();
        let mut total = 0usize;
        let mut failed = false;
        for entry in &mut asked {
            let handle = match &entry.handle {
                Ok(handle) => handle,
                Err(code) => {
                    failed = true;
                    entry.answer = Some(Answered::Failed { code: *code, offsets: (0, 0) });
                    continue;
                }
            };
            // The first batch is always sent, however large; after it, the limits hold.
            let room = if total == 0 {
                entry.max.max(1)
            } else {
                entry.max.min(max_bytes.saturating_sub(total))
            };
            let offsets = core.offsets(handle);
            if room == 0 && total > 0 {
                let offsets = (offsets.earliest, offsets.next);
                entry.answer = Some(Answered::Data { offsets, read: None });
                continue;
            }
            entry.answer = Some(match core.read(caller, handle, entry.offset, room) {
                Ok(outcome) => {
                    total += outcome.batches.len();
                    let offsets = (outcome.earliest_offset, outcome.next_offset);
                    Answered::Data { offsets, read: Some((handle.clone(), outcome)) }
                }
                Err(error) => {
                    failed = true;
                    let offsets = match error {
                        FetchError::OffsetOutOfRange { earliest, next, .. } => (earliest, next),
                        FetchError::Busy => (offsets.earliest, offsets.next),
                        // Refused: no offsets either (sent as -1). (The local errors come only
                        // from opening a partition for a same-host reader.)
                        FetchError::Unauthorized(_)
                        | FetchError::LocalOff
                        | FetchError::LocalFiles(_) => (0, 0),
                    };
                    Answered::Failed { code: codes::fetch(&error), offsets }
                }
            });
        }
        if total >= min_bytes || failed || Instant::now() >= deadline {
            asked_by.throttle.hold(core.fetch_throttle(caller, total as u64));
            let throttle_ms = asked_by.throttle.millis();
            let answer = encode(version, &request, asked, started, throttle_ms);
            return super::Answer::Fetch(answer);
        }
        // Nothing yet: let the leases go and wait for an append to any partition asked for.
        for entry in &mut asked {
            entry.answer = None;
        }
        let mut single: Option<&PartitionHandle> = None;
        let mut open = 0usize;
        for entry in &asked {
            if let Ok(handle) = &entry.handle {
                open += 1;
                single = Some(handle);
            }
        }
        if let (1, Some(handle)) = (open, single) {
            // One partition (the usual consumer): wait on it without allocating.
            let seen = core.offsets(handle).next;
            let wait = core.appended(handle);
            tokio::pin!(wait);
            wait.as_mut().enable();
            if core.offsets(handle).next == seen {
                let _ = tokio::time::timeout_at(deadline, wait).await;
            }
            continue;
        }
        let handles: Vec<&PartitionHandle> =
            asked.iter().filter_map(|entry| entry.handle.as_ref().ok()).collect();
        let seen: Vec<u64> = handles.iter().map(|handle| core.offsets(handle).next).collect();
        let mut waits: Vec<Pin<Box<tokio::sync::futures::Notified<'_>>>> =
            handles.iter().map(|handle| Box::pin(core.appended(handle))).collect();
        for wait in &mut waits {
            wait.as_mut().enable();
        }
        let moved =
            handles.iter().zip(&seen).any(|(handle, seen)| core.offsets(handle).next != *seen);
        if !moved {
            let any = std::future::poll_fn(|cx| {
                for wait in &mut waits {
                    if wait.as_mut().poll(cx).is_ready() {
                        return Poll::Ready(());
                    }
                }
                Poll::Pending
            });
            let _ = tokio::time::timeout_at(deadline, any).await;
        }
    }
}

fn offset_number(offset: u64) -> i64 {
    i64::try_from(offset).unwrap_or(i64::MAX)
}

fn encode(
    version: i16,
    request: &FetchRequest,
    mut asked: Vec<Asked>,
    started: Instant,
    throttle_ms: i32,
) -> FetchAnswer {
    // Sized for the whole response but its record sets: no growth.
    let own_size: usize = 16
        + request.topics.iter().map(|topic| topic.topic.len() + 16).sum::<usize>()
        + 64 * asked.len();
    let mut out = Out::new(own_size, version >= 12);
    let mut entries = asked.iter_mut();
    out.i32(throttle_ms);
    if version >= 7 {
        out.i16(codes::NONE);
        out.i32(0); // session_id: no fetch sessions, every fetch is a full one
    }
    out.length(request.topics.len());
    for topic in &request.topics {
        out.string(&topic.topic);
        out.length(topic.partitions.len());
        for entry in entries.by_ref().take(topic.partitions.len()) {
            out.i32(entry.index);
            let (code, (earliest, next)) = match &entry.answer {
                Some(Answered::Data { offsets, .. }) => (codes::NONE, *offsets),
                Some(Answered::Failed { code, offsets }) => (*code, *offsets),
                None => (codes::NONE, (0, 0)),
            };
            out.i16(code);
            let (high_watermark, start) = if code == codes::NONE || next > 0 {
                (offset_number(next), offset_number(earliest))
            } else {
                (-1, -1)
            };
            out.i64(high_watermark);
            out.i64(high_watermark); // last_stable_offset: no transactions
            if version >= 5 {
                out.i64(start);
            }
            out.null_array(); // aborted_transactions
            if version >= 11 {
                out.i32(-1); // preferred_read_replica
            }
            out.length(entry.records().len());
            entry.splice = out.bytes.len();
            out.tags();
        }
        out.tags();
    }
    out.tags();
    FetchAnswer { own: out.bytes, asked, started }
}

/// Writes a fetch response: its head (size and header, for `request`: correlation id, API,
/// version), then the body with its record sets from the ring.
pub(crate) async fn write(
    stream: &mut Stream,
    request: (i32, ApiKey, i16),
    answer: FetchAnswer,
    context: &KafkaContext,
    timeout: Duration,
) -> io::Result<()> {
    let FetchAnswer { own, asked, started } = answer;
    let spliced = asked.iter().filter(|entry| !entry.records().is_empty());
    let body = own.len() + spliced.clone().map(|entry| entry.records().len()).sum::<usize>();
    let (correlation_id, api, version) = request;
    let head = ResponseHead::new(correlation_id, api, version, body)
        .map_err(|error| io::Error::new(io::ErrorKind::InvalidData, error))?;
    // Head, then own bytes up to each record set, the record set, ..., the rest of own bytes;
    // for a few partitions (the usual fetch) the slices are on the stack.
    let count = 2 + 2 * spliced.clone().count();
    let mut on_stack = [IoSlice::new(&[]); 16];
    let mut on_heap = Vec::new();
    let stacked = count <= on_stack.len();
    if !stacked {
        on_heap.reserve_exact(count);
    }
    let mut placed = 0usize;
    let place = |slice| {
        if stacked {
            on_stack[placed] = slice;
        } else {
            on_heap.push(slice);
        }
        placed += 1;
    };
    pieces(head.bytes(), &own, &asked, place);
    let slices: &mut [IoSlice<'_>] = if stacked { &mut on_stack[..count] } else { &mut on_heap };
    let mut with_data = false;
    for entry in &asked {
        if let Some(Answered::Data { read: Some((partition, outcome)), .. }) = &entry.answer {
            context.core.fetched(partition, outcome);
            with_data = true;
        }
    }
    let written = tokio::time::timeout(timeout, stream.write_all_vectored(slices)).await;
    match written {
        Err(_) => {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "the client did not read its fetch response within the write timeout",
            ))
        }
        Ok(result) => result?,
    }
    if with_data {
        // Counted like a native fetch: one request answered with data.
        context.core.fetch_answered(started);
    }
    Ok(())
}

/// Hands `put` the slices of a fetch response in order: the head, then the encoded bytes up to
/// each record set, the record set, and the rest of the encoded bytes.
fn pieces<'a>(head: &'a [u8], own: &'a [u8], asked: &'a [Asked], mut put: impl FnMut(IoSlice<'a>)) {
    put(IoSlice::new(head));
    let mut from = 0usize;
    for entry in asked.iter().filter(|entry| !entry.records().is_empty()) {
        put(IoSlice::new(&own[from..entry.splice]));
        put(IoSlice::new(entry.records()));
        from = entry.splice;
    }
    put(IoSlice::new(&own[from..]));
}
