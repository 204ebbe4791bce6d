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
use std::ops::Range;
use std::pin::Pin;
use std::task::Poll;
use std::time::Duration;

use bytes::BytesMut;
use kafka_protocol::messages::FetchRequest;
use tokio::net::TcpStream;
use tokio::time::Instant;

use super::{codes, KafkaContext};
use crate::core::{FetchError, PartitionHandle};
use crate::log::ReadOutcome;

/// A fetch response ready to write: encoded bytes with the record sets to splice in.
pub(crate) struct FetchAnswer {
    /// Everything but the record sets.
    own: Vec<u8>,
    /// In order: own bytes, or the record set of `reads[i]`.
    parts: Vec<Part>,
    reads: Vec<(PartitionHandle, ReadOutcome)>,
    started: Instant,
}

enum Part {
    Own(Range<usize>),
    Records(usize),
}

/// One partition's answer.
enum Answered {
    Data { offsets: (u64, u64), read: usize },
    Failed { code: i16, offsets: (u64, u64) },
}

/// The partitions asked for, resolved once.
struct Asked {
    topic: String,
    partitions: Vec<(i32, Result<PartitionHandle, i16>, u64, usize)>,
}

/// Handles a fetch: reads, waits for data while needed, and returns the answer to write.
pub(crate) async fn fetch(
    context: &KafkaContext,
    request: FetchRequest,
    version: i16,
) -> super::Answer {
    let core = &context.core;
    let asked: Vec<Asked> = request
        .topics
        .iter()
        .map(|topic| Asked {
            topic: topic.topic.to_string(),
            partitions: topic
                .partitions
                .iter()
                .map(|partition| {
                    let handle =
                        super::admin::partition_of(context, &topic.topic, partition.partition);
                    let offset = u64::try_from(partition.fetch_offset).unwrap_or(u64::MAX);
                    let max = usize::try_from(partition.partition_max_bytes).unwrap_or(0);
                    (partition.partition, handle, offset, max)
                })
                .collect(),
        })
        .collect();
    let max_wait = Duration::from_millis(u64::try_from(request.max_wait_ms).unwrap_or(0));
    let deadline = Instant::now() + core.fetch_wait(max_wait);
    let min_bytes = usize::try_from(request.min_bytes).unwrap_or(0);
    let max_bytes = usize::try_from(request.max_bytes).unwrap_or(usize::MAX).max(1);
    loop {
        let started = Instant::now();
        let mut reads = Vec::new();
        let mut answered: Vec<Vec<Answered>> = Vec::with_capacity(asked.len());
        let mut total = 0usize;
        let mut failed = false;
        for topic in &asked {
            let mut partitions = Vec::with_capacity(topic.partitions.len());
            for (_, handle, offset, partition_max) in &topic.partitions {
                let handle = match handle {
                    Ok(handle) => handle,
                    Err(code) => {
                        failed = true;
                        partitions.push(Answered::Failed { code: *code, offsets: (0, 0) });
                        continue;
                    }
                };
                // The first batch is always sent, however large; after it, the limits hold.
                let room = if total == 0 {
                    (*partition_max).max(1)
                } else {
                    (*partition_max).min(max_bytes.saturating_sub(total))
                };
                let offsets = core.offsets(handle);
                if room == 0 && total > 0 {
                    partitions.push(Answered::Data {
                        offsets: (offsets.earliest, offsets.next),
                        read: usize::MAX,
                    });
                    continue;
                }
                match core.read(handle, *offset, room) {
                    Ok(outcome) => {
                        total += outcome.batches.len();
                        let offsets = (outcome.earliest_offset, outcome.next_offset);
                        partitions.push(Answered::Data { offsets, read: reads.len() });
                        reads.push((handle.clone(), outcome));
                    }
                    Err(error) => {
                        failed = true;
                        let offsets = match error {
                            FetchError::OffsetOutOfRange { earliest, next, .. } => (earliest, next),
                            FetchError::Busy => (offsets.earliest, offsets.next),
                        };
                        partitions.push(Answered::Failed { code: codes::fetch(&error), offsets });
                    }
                }
            }
            answered.push(partitions);
        }
        if total >= min_bytes || failed || Instant::now() >= deadline {
            let answer = encode(version, &asked, &answered, reads, started);
            return super::Answer::Fetch(answer);
        }
        // Nothing yet: let the leases go and wait for an append to any partition asked for.
        drop(reads);
        let handles: Vec<&PartitionHandle> = asked
            .iter()
            .flat_map(|topic| {
                topic.partitions.iter().filter_map(|(_, handle, ..)| handle.as_ref().ok())
            })
            .collect();
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

/// Kafka's encodings at a version: compact (flexible, version 12) or classic.
struct Out {
    bytes: Vec<u8>,
    flexible: bool,
}

impl Out {
    fn i16(&mut self, value: i16) {
        self.bytes.extend_from_slice(&value.to_be_bytes());
    }

    fn i32(&mut self, value: i32) {
        self.bytes.extend_from_slice(&value.to_be_bytes());
    }

    fn i64(&mut self, value: i64) {
        self.bytes.extend_from_slice(&value.to_be_bytes());
    }

    fn uvarint(&mut self, mut value: u64) {
        while value >= 0x80 {
            self.bytes.push(u8::try_from(value & 0x7F).unwrap_or(0) | 0x80);
            value >>= 7;
        }
        self.bytes.push(u8::try_from(value).unwrap_or(0));
    }

    fn length(&mut self, length: usize) {
        if self.flexible {
            self.uvarint(length as u64 + 1);
        } else {
            self.i32(i32::try_from(length).unwrap_or(i32::MAX));
        }
    }

    fn string(&mut self, text: &str) {
        if self.flexible {
            self.uvarint(text.len() as u64 + 1);
        } else {
            self.i16(i16::try_from(text.len()).unwrap_or(i16::MAX));
        }
        self.bytes.extend_from_slice(text.as_bytes());
    }

    fn null_array(&mut self) {
        if self.flexible {
            self.uvarint(0);
        } else {
            self.i32(-1);
        }
    }

    fn tags(&mut self) {
        if self.flexible {
            self.uvarint(0);
        }
    }
}

fn offset_number(offset: u64) -> i64 {
    i64::try_from(offset).unwrap_or(i64::MAX)
}

fn encode(
    version: i16,
    asked: &[Asked],
    answered: &[Vec<Answered>],
    reads: Vec<(PartitionHandle, ReadOutcome)>,
    started: Instant,
) -> FetchAnswer {
    let mut out = Out { bytes: Vec::with_capacity(128), flexible: version >= 12 };
    let mut parts = Vec::new();
    let mut from = 0usize;
    out.i32(0); // throttle_time_ms
    if version >= 7 {
        out.i16(codes::NONE);
        out.i32(0); // session_id: no fetch sessions, every fetch is a full one
    }
    out.length(asked.len());
    for (topic, partitions) in asked.iter().zip(answered) {
        out.string(&topic.topic);
        out.length(partitions.len());
        for ((index, ..), answer) in topic.partitions.iter().zip(partitions) {
            out.i32(*index);
            let (code, (earliest, next), read) = match answer {
                Answered::Data { offsets, read } => (codes::NONE, *offsets, Some(*read)),
                Answered::Failed { code, offsets } => (*code, *offsets, None),
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
            let records = read
                .and_then(|read| reads.get(read))
                .map_or(0, |(_, outcome)| outcome.batches.len());
            out.length(records);
            if records > 0 {
                if let Some(read) = read {
                    parts.push(Part::Own(from..out.bytes.len()));
                    parts.push(Part::Records(read));
                    from = out.bytes.len();
                }
            }
            out.tags();
        }
        out.tags();
    }
    out.tags();
    parts.push(Part::Own(from..out.bytes.len()));
    FetchAnswer { own: out.bytes, parts, reads, started }
}

/// Writes a fetch response: size, `header`, then the body with its record sets from the ring.
pub(crate) async fn write(
    stream: &TcpStream,
    header: &BytesMut,
    answer: FetchAnswer,
    context: &KafkaContext,
    timeout: Duration,
) -> io::Result<()> {
    let FetchAnswer { own, parts, reads, started } = answer;
    let body: usize = parts
        .iter()
        .map(|part| match part {
            Part::Own(range) => range.len(),
            Part::Records(read) => reads[*read].1.batches.len(),
        })
        .sum();
    let size = i32::try_from(header.len() + body)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "fetch response over 2 GiB"))?
        .to_be_bytes();
    let mut slices: Vec<IoSlice<'_>> = Vec::with_capacity(parts.len() + 2);
    slices.push(IoSlice::new(&size));
    slices.push(IoSlice::new(header));
    for part in &parts {
        slices.push(match part {
            Part::Own(range) => IoSlice::new(&own[range.clone()]),
            Part::Records(read) => IoSlice::new(&reads[*read].1.batches),
        });
    }
    let written = tokio::time::timeout(timeout, write_vectored(stream, &mut slices)).await;
    match written {
        Err(_) => {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "the client did not read its fetch response within the write timeout",
            ))
        }
        Ok(result) => result?,
    }
    for (partition, outcome) in &reads {
        context.core.fetched(partition, outcome, started);
    }
    Ok(())
}

async fn write_vectored(stream: &TcpStream, slices: &mut [IoSlice<'_>]) -> io::Result<()> {
    let mut remaining: &mut [IoSlice<'_>] = slices;
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
