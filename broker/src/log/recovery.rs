//! Recovery: find the true log in a ring file after a clean stop or any crash (DESIGN.md
//! invariant 4).
//!
//! Every chunk starts with a batch (a batch never straddles a chunk and always fits an empty one),
//! and every batch carries its base offset and a CRC, so the file describes itself:
//!
//! 1. **Clean stop.** The superblock's checkpoint names the exact head and tail. A light walk over
//!    the batch headers between them confirms it (magic, sizes, dense offsets); if it does not hold,
//!    recovery falls back to the full scan.
//! 2. **Full scan.** Every chunk is validated from its start, each batch in full (magic, sizes,
//!    CRC, records, base offset equal to the one expected), up to padding or the first batch that
//!    fails. Chunks link into a chain when one ends cleanly with offset `n` and the next slot starts
//!    with offset `n`. The log is the chain that holds the superblock's durable offset (every
//!    record below it was synced, so its chain survived any crash), else the chain that reaches
//!    the highest offset. A stale batch from an earlier lap cannot link (its offsets are lower) and
//!    a torn or corrupt batch ends its chunk, so the result is a prefix of what was written and
//!    nothing corrupt is ever served.
//!
//! After a full scan the file is cleaned before the writer may append: the rest of the tail chunk
//! is zeroed and the first header of every chunk outside the log is blanked, so bytes from before
//! the crash can never be mistaken for a continuation of the new log.

use std::fmt;

use ringmq_protocol::batch::{BatchHeader, BatchView};

use super::entry::{
    entry_place, read_end_marker, Entry as RingEntry, NoEntry, END_MARKER_SIZE, ENTRY_SIZE,
};
use super::raw::{Layout, GENERATION_MAX};
use super::superblock::{Checkpoint, Superblock};

/// How recovery found the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecoveryMode {
    /// A fresh file: nothing to recover.
    Fresh,
    /// The clean-shutdown checkpoint was confirmed by a walk of the batch headers.
    Clean,
    /// Every chunk was scanned and validated in full (after a crash or a bad checkpoint).
    Scanned,
}

/// Where a full scan stopped short of a chunk's end.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Truncation {
    /// Position where the log now ends.
    pub position: u64,
    /// Offset the next record will get.
    pub offset: u64,
    /// Why the bytes there were not accepted.
    pub reason: String,
}

/// The log recovery found, and what it set aside.
#[derive(Debug, Clone)]
pub(crate) struct Recovered {
    pub(crate) mode: RecoveryMode,
    /// Generation of the first retained chunk.
    pub(crate) head_generation: u64,
    pub(crate) head_offset: u64,
    /// Position after the last batch.
    pub(crate) tail_position: u64,
    pub(crate) next_offset: u64,
    /// Generation of the chunk holding the last batch, if any.
    pub(crate) tail_generation: Option<u64>,
    /// Where the tail chunk's valid bytes stop, if the scan stopped early in it.
    pub(crate) truncated: Option<Truncation>,
    /// Chunks with valid batches that are not part of the log (stale laps, lost continuations).
    pub(crate) discarded_chunks: u64,
    /// Why a clean checkpoint was not trusted, if it was not.
    pub(crate) checkpoint_rejected: Option<String>,
}

impl Recovered {
    /// The generation the writer claims next.
    pub(crate) fn next_generation(&self) -> u64 {
        self.tail_generation.map_or(self.head_generation, |tail| tail + 1)
    }
}

/// A batch seen by [`walk`]: position, base offset, offset after it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct BatchAt {
    pub(crate) position: u64,
    pub(crate) base_offset: u64,
    pub(crate) next_offset: u64,
    pub(crate) max_timestamp: i64,
}

/// Why a walk or scan stopped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct WalkError {
    pub(crate) position: u64,
    pub(crate) reason: String,
}

impl fmt::Display for WalkError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "at position {}: {}", self.position, self.reason)
    }
}

/// The bytes of the chunk holding `position`, from `position` to the chunk's end.
fn chunk_rest<'a>(data: &'a [u8], layout: &Layout, position: u64) -> &'a [u8] {
    let place = layout.data_index(position);
    let chunk_end =
        layout.slot_start(layout.slot(layout.generation(position))) + layout.chunk_bytes();
    &data[place..chunk_end]
}

/// What a header walk finds at the start of `rest` (the remainder of a chunk).
enum Entry {
    Batch {
        base_offset: u64,
        next_offset: u64,
        max_timestamp: i64,
        size: usize,
    },
    /// The end marker, or a remainder too short for one: the chunk's batches end here.
    ChunkEnd,
}

/// Why a scan stopped before a chunk's end.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Stop {
    /// Zeroed bytes: nothing was ever written here (or recovery blanked it).
    Blank,
    /// A valid entry from an earlier lap: older offsets than expected.
    Stale,
    /// Bytes that are not what the chunk's framing says: the middle of an earlier lap's data.
    Garbage(String),
    /// An entry that fails its CRC, or whose batch fails validation or does not match it: a
    /// torn write.
    Torn(String),
}

impl Stop {
    fn reason(&self) -> String {
        match self {
            Stop::Blank => "blank".to_owned(),
            Stop::Stale => "stale entry from an earlier lap".to_owned(),
            Stop::Garbage(reason) | Stop::Torn(reason) => reason.clone(),
        }
    }
}

/// Reads the batch header (or end marker) at the start of `rest` for a walk: sizes and dense
/// offsets only, no CRC.
fn read_header(rest: &[u8], expected: u64) -> Result<Entry, Stop> {
    if rest.len() < END_MARKER_SIZE {
        return Ok(Entry::ChunkEnd);
    }
    if let Some(next) = read_end_marker(rest) {
        return match next {
            next if next == expected => Ok(Entry::ChunkEnd),
            next if next < expected => Err(Stop::Stale),
            next => {
                Err(Stop::Garbage(format!("end marker names offset {next}, expected {expected}")))
            }
        };
    }
    if rest[..END_MARKER_SIZE].iter().all(|&byte| byte == 0) {
        return Err(Stop::Blank);
    }
    let header = BatchHeader::peek(rest).map_err(|error| Stop::Garbage(error.to_string()))?;
    let size = header.batch_len();
    if size > rest.len() {
        return Err(Stop::Torn(format!(
            "batch size {size} does not fit the {} bytes left in the chunk",
            rest.len()
        )));
    }
    if header.record_count() == 0 {
        return Err(Stop::Torn("batch holds no records".to_owned()));
    }
    if header.base_offset() < expected {
        return Err(Stop::Stale);
    }
    if header.base_offset() != expected {
        return Err(Stop::Garbage(format!(
            "batch has base offset {}, expected {expected}",
            header.base_offset()
        )));
    }
    Ok(Entry::Batch {
        base_offset: header.base_offset(),
        next_offset: header.next_offset(),
        max_timestamp: header.max_timestamp(),
        size,
    })
}

/// Walks batch headers from `from` (a batch start with base offset `from_offset`) to `to`,
/// checking sizes and dense offsets (no CRC), calling `visit` for each batch. Returns the offset
/// after the last batch.
pub(crate) fn walk(
    data: &[u8],
    layout: &Layout,
    from: u64,
    from_offset: u64,
    to: u64,
    mut visit: impl FnMut(BatchAt),
) -> Result<u64, WalkError> {
    let mut position = from;
    let mut expected = from_offset;
    while position < to {
        let rest = chunk_rest(data, layout, position);
        let entry = read_header(rest, expected)
            .map_err(|stop| WalkError { position, reason: stop.reason() })?;
        match entry {
            Entry::ChunkEnd => position += rest.len() as u64,
            Entry::Batch { base_offset, next_offset, max_timestamp, size } => {
                visit(BatchAt { position, base_offset, next_offset, max_timestamp });
                position += size as u64;
                expected = next_offset;
            }
        }
    }
    if position != to {
        return Err(WalkError { position, reason: format!("walk overran the end at {to}") });
    }
    Ok(expected)
}

/// What a full validation of one chunk slot found.
#[derive(Debug, Clone)]
struct ChunkScan {
    first_offset: Option<u64>,
    end_offset: u64,
    /// Bytes from the chunk start covered by valid batches.
    valid: u64,
    /// Valid batch entries.
    entries: usize,
    /// Whether the chunk was closed: its close entry and end marker are there and agree.
    complete: bool,
    stop: Option<Stop>,
}

/// Validates one chunk through its entry table: each entry in turn, and the batch it names in
/// full, up to the close entry or the first entry or batch that fails (see `entry`).
fn scan_chunk(chunk: &[u8], batch_size_max: u32) -> ChunkScan {
    let mut scan = ChunkScan {
        first_offset: None,
        end_offset: 0,
        valid: 0,
        entries: 0,
        complete: false,
        stop: None,
    };
    let mut at = 0usize;
    let stop = loop {
        let Some(place) = entry_place(chunk.len(), scan.entries) else {
            break Stop::Garbage("the entry table fills the chunk".to_owned());
        };
        if place < at + END_MARKER_SIZE {
            break Stop::Garbage("the entry table runs into the batches".to_owned());
        }
        let entry = match RingEntry::decode(&chunk[place..place + ENTRY_SIZE]) {
            Ok(entry) => entry,
            Err(NoEntry::Blank) => break Stop::Blank,
            Err(NoEntry::BadCrc) => break Stop::Torn("ring entry fails its CRC".to_owned()),
        };
        let (entry_offset, is_close) = match entry {
            RingEntry::Batch { base_offset, .. } => (base_offset, false),
            RingEntry::Close { next_offset, .. } => (next_offset, true),
        };
        if scan.first_offset.is_some() && entry_offset != scan.end_offset {
            break if entry_offset < scan.end_offset {
                Stop::Stale
            } else {
                Stop::Garbage(format!(
                    "entry names offset {entry_offset}, expected {}",
                    scan.end_offset
                ))
            };
        }
        match entry {
            RingEntry::Close { next_offset, .. } => {
                if scan.first_offset.is_none() {
                    break Stop::Garbage("a chunk is closed before its first batch".to_owned());
                }
                if read_end_marker(&chunk[at..]) != Some(next_offset) {
                    break Stop::Torn("the chunk's close entry has no end marker".to_owned());
                }
                scan.complete = true;
                return scan;
            }
            RingEntry::Batch { base_offset, size, leader_epoch, crc } => {
                let size = size as usize;
                let Some(bytes) =
                    chunk.get(at..at + size).filter(|_| at + size + END_MARKER_SIZE <= place)
                else {
                    break Stop::Torn(format!(
                        "a batch of {size} bytes does not fit where its entry puts it"
                    ));
                };
                let view = match BatchView::validate_stored(bytes, batch_size_max) {
                    Ok(view) => view,
                    Err(error) => break Stop::Torn(error.to_string()),
                };
                let header = view.header();
                if header.base_offset() != base_offset
                    || header.partition_leader_epoch() != leader_epoch
                    || header.crc() != crc
                {
                    break Stop::Torn("the batch does not match its ring entry".to_owned());
                }
                debug_assert!(!is_close);
                scan.first_offset.get_or_insert(base_offset);
                scan.end_offset = header.next_offset();
                at += size;
                scan.valid = u64::try_from(at).expect("a position in a chunk fits u64");
                scan.entries += 1;
            }
        }
    };
    scan.stop = Some(stop);
    scan
}

/// Recovers the log in `data` (the data area, `layout.capacity()` bytes) described by `superblock`.
pub(crate) fn recover(
    data: &[u8],
    layout: &Layout,
    superblock: &Superblock,
    batch_size_max: u32,
) -> Recovered {
    let mut checkpoint_rejected = None;
    if let Some(checkpoint) = superblock.clean {
        match confirm_checkpoint(data, layout, &checkpoint) {
            Ok(recovered) => return recovered,
            Err(error) => checkpoint_rejected = Some(error.to_string()),
        }
    }
    let mut recovered = scan(data, layout, superblock.durable_offset, batch_size_max);
    recovered.checkpoint_rejected = checkpoint_rejected;
    recovered
}

fn confirm_checkpoint(
    data: &[u8],
    layout: &Layout,
    checkpoint: &Checkpoint,
) -> Result<Recovered, WalkError> {
    let Checkpoint { head_position, head_offset, tail_position, next_offset } = *checkpoint;
    let reject = |reason: &str| WalkError { position: head_position, reason: reason.to_owned() };
    if head_position % layout.chunk_size() != 0 {
        return Err(reject("head is not at a chunk start"));
    }
    if tail_position < head_position {
        return Err(reject("the tail is before the head"));
    }
    if tail_position - head_position > layout.capacity() {
        return Err(reject("head and tail are more than one ring apart"));
    }
    // Positions must leave room for the chunks after the tail, both as byte positions and as
    // chunk generations.
    if tail_position.checked_add(2 * layout.capacity()).is_none()
        || layout.generation(tail_position) + 2 * layout.chunk_count() > GENERATION_MAX
    {
        return Err(reject("positions beyond the lease table's range"));
    }
    let walked = walk(data, layout, head_position, head_offset, tail_position, |_| ())?;
    if walked != next_offset {
        return Err(reject(
            "batches between head and tail do not end at the checkpoint's next offset",
        ));
    }
    let empty = tail_position == head_position;
    if empty && head_position != 0 {
        return Err(reject("an empty log after a clean stop starts at position 0"));
    }
    Ok(Recovered {
        mode: if empty && next_offset == 0 { RecoveryMode::Fresh } else { RecoveryMode::Clean },
        head_generation: layout.generation(head_position),
        head_offset,
        tail_position,
        next_offset,
        tail_generation: (!empty).then(|| layout.generation(tail_position - 1)),
        truncated: None,
        discarded_chunks: 0,
        checkpoint_rejected: None,
    })
}

fn scan(data: &[u8], layout: &Layout, durable_offset: u64, batch_size_max: u32) -> Recovered {
    let count = layout.slot_count();
    let scans: Vec<ChunkScan> = (0..count)
        .map(|slot| {
            let start = layout.slot_start(slot);
            scan_chunk(&data[start..start + layout.chunk_bytes()], batch_size_max)
        })
        .collect();
    let next_slot = |slot: usize| (slot + 1) % count;
    let links = |slot: usize| {
        let here = &scans[slot];
        let there = &scans[next_slot(slot)];
        here.complete && there.first_offset == Some(here.end_offset)
    };
    // A chain starts at a slot with a batch that no complete predecessor links into.
    let mut chains = Vec::new();
    for (slot, chunk) in scans.iter().enumerate() {
        let linked_into = links((slot + count - 1) % count);
        if chunk.first_offset.is_none() || linked_into {
            continue;
        }
        let mut last = slot;
        let mut length = 1;
        while length < count && links(last) {
            last = next_slot(last);
            length += 1;
        }
        chains.push((slot, last, length));
    }
    let first_of = |&(start, _, _): &(usize, usize, usize)| scans[start].first_offset.unwrap_or(0);
    let end_of = |&(_, last, _): &(usize, usize, usize)| scans[last].end_offset;
    // The chain holding the last durable record (offset `durable_offset - 1`). A chain that only
    // starts at `durable_offset` is a continuation written after the sync, which may not have
    // reached the disk whole.
    let durable_last = durable_offset.checked_sub(1);
    let chosen = chains
        .iter()
        .find(|chain| {
            durable_last.is_some_and(|last| first_of(chain) <= last && last < end_of(chain))
        })
        .or_else(|| chains.iter().max_by_key(|chain| end_of(chain)))
        .copied();
    let discarded: usize =
        chains.iter().filter(|chain| Some(**chain) != chosen).map(|&(_, _, length)| length).sum();
    let Some((start, last, length)) = chosen else {
        return Recovered {
            mode: RecoveryMode::Scanned,
            head_generation: 0,
            head_offset: durable_offset,
            tail_position: 0,
            next_offset: durable_offset,
            tail_generation: None,
            truncated: None,
            discarded_chunks: 0,
            checkpoint_rejected: None,
        };
    };
    // Give the chain generations from lap 1 on, so every slot's predecessor generation exists.
    // Slot indices and counts are below the chunk count, a u64 (widening casts).
    let head_generation = (start + count) as u64;
    let tail_generation = head_generation + length as u64 - 1;
    let tail_scan = &scans[last];
    let tail_position = layout.generation_start(tail_generation) + tail_scan.valid;
    // A torn or corrupt write after the tail, in the tail chunk or at the start of the next.
    let after_tail = if tail_scan.complete && length < count {
        let next = &scans[next_slot(last)];
        next.stop.as_ref().filter(|_| next.first_offset.is_none())
    } else {
        tail_scan.stop.as_ref()
    };
    let truncated = match after_tail {
        Some(Stop::Torn(reason)) => Some(Truncation {
            position: if tail_scan.complete {
                layout.generation_start(tail_generation + 1)
            } else {
                tail_position
            },
            offset: tail_scan.end_offset,
            reason: reason.clone(),
        }),
        _ => None,
    };
    Recovered {
        mode: RecoveryMode::Scanned,
        head_generation,
        head_offset: scans[start].first_offset.unwrap_or(0),
        tail_position,
        next_offset: tail_scan.end_offset,
        tail_generation: Some(tail_generation),
        truncated,
        discarded_chunks: discarded as u64,
        checkpoint_rejected: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::log::entry::{end_marker, CLOSE_SIZE};
    use ringmq_protocol::batch::stamp;
    use ringmq_protocol::{BatchBuilder, Record};

    const CHUNK: u64 = 1024;
    const SLOTS: u64 = 4;

    fn layout() -> Layout {
        Layout::new(0, CHUNK * SLOTS, CHUNK).unwrap()
    }

    fn batch(records: usize, fill: u8) -> Vec<u8> {
        let mut buffer = vec![0; 4096];
        let mut builder = BatchBuilder::new(&mut buffer, 0).unwrap();
        for _ in 0..records {
            let _ = builder.push(&Record::value(&[fill; 50], 0)).unwrap();
        }
        builder.finish().unwrap().to_vec()
    }

    /// Writes batches as the ring writer would: a ring entry per batch, an end marker and close
    /// entry when a chunk is left, wrapping.
    struct Image {
        data: Vec<u8>,
        position: u64,
        offset: u64,
        /// Entries in the chunk being written.
        entries: usize,
        layout: Layout,
    }

    impl Image {
        fn new() -> Self {
            Self {
                data: vec![0; (CHUNK * SLOTS) as usize],
                position: 0,
                offset: 0,
                entries: 0,
                layout: layout(),
            }
        }

        fn chunk_start(&self) -> usize {
            ((self.position / CHUNK % SLOTS) * CHUNK) as usize
        }

        fn write_entry(&mut self, entry: RingEntry) {
            let place = self.chunk_start() + entry_place(CHUNK as usize, self.entries).unwrap();
            self.data[place..place + ENTRY_SIZE].copy_from_slice(&entry.encode());
            self.entries += 1;
        }

        fn append(&mut self, records: usize) -> BatchAt {
            let mut bytes = batch(records, self.offset as u8);
            let chunk_end = (self.position / CHUNK + 1) * CHUNK;
            let framing = (self.entries + 1) * ENTRY_SIZE + CLOSE_SIZE;
            if self.position + (bytes.len() + framing) as u64 > chunk_end {
                let place = (self.position % self.layout.capacity()) as usize;
                self.data[place..place + END_MARKER_SIZE].copy_from_slice(&end_marker(self.offset));
                self.write_entry(RingEntry::Close { next_offset: self.offset, leader_epoch: 0 });
                self.position = chunk_end;
                self.entries = 0;
            }
            stamp(&mut bytes, self.offset, 0).unwrap();
            let place = (self.position % self.layout.capacity()) as usize;
            self.data[place..place + bytes.len()].copy_from_slice(&bytes);
            let crc = BatchHeader::peek(&bytes).unwrap().crc();
            let size = bytes.len() as u32;
            self.write_entry(RingEntry::Batch {
                base_offset: self.offset,
                size,
                leader_epoch: 0,
                crc,
            });
            let at = BatchAt {
                position: self.position,
                base_offset: self.offset,
                next_offset: self.offset + records as u64,
                max_timestamp: 0,
            };
            self.position += bytes.len() as u64;
            self.offset += records as u64;
            at
        }
    }

    fn superblock(durable_offset: u64, clean: Option<Checkpoint>) -> Superblock {
        Superblock {
            capacity: CHUNK * SLOTS,
            chunk_size: CHUNK,
            sequence: 1,
            term: 0,
            clean,
            durable_offset,
        }
    }

    #[test]
    fn fresh_file_recovers_empty() {
        let image = Image::new();
        let recovered = recover(&image.data, &image.layout, &superblock(0, None), 1 << 20);
        assert_eq!((recovered.next_offset, recovered.tail_generation), (0, None));
    }

    #[test]
    fn scan_finds_every_batch_across_wraps() {
        let mut image = Image::new();
        let mut batches = Vec::new();
        for index in 0..40 {
            batches.push(image.append(1 + index % 5));
        }
        let recovered = recover(&image.data, &image.layout, &superblock(0, None), 1 << 20);
        assert_eq!(recovered.mode, RecoveryMode::Scanned);
        assert_eq!(recovered.next_offset, image.offset);
        assert!(recovered.truncated.is_none());
        // The head is the oldest chunk still intact: the one right after the tail's slot.
        let first_kept = batches
            .iter()
            .find(|b| b.position >= (image.position / CHUNK + 1 - SLOTS) * CHUNK)
            .unwrap();
        assert_eq!(recovered.head_offset, first_kept.base_offset);
        let layout = image.layout;
        let head = layout.generation_start(recovered.head_generation);
        let mut seen = Vec::new();
        let next =
            walk(&image.data, &layout, head, recovered.head_offset, recovered.tail_position, |b| {
                seen.push(b.base_offset)
            })
            .unwrap();
        assert_eq!(next, image.offset);
        assert_eq!(
            seen,
            batches
                .iter()
                .filter(|b| b.base_offset >= recovered.head_offset)
                .map(|b| b.base_offset)
                .collect::<Vec<_>>()
        );
    }

    #[test]
    fn torn_last_batch_is_truncated_and_nothing_before_it_lost() {
        let mut image = Image::new();
        for _ in 0..6 {
            image.append(3);
        }
        let last = image.append(4);
        // Tear the last batch: its second half never reached memory.
        let place = (last.position % image.layout.capacity()) as usize;
        image.data[place + 200..place + 250].fill(0);
        let recovered = recover(&image.data, &image.layout, &superblock(0, None), 1 << 20);
        assert_eq!(recovered.next_offset, last.base_offset);
        let truncation = recovered.truncated.unwrap();
        assert_eq!(truncation.offset, last.base_offset);
        assert!(truncation.reason.contains("CRC"), "{}", truncation.reason);
    }

    #[test]
    fn stale_batch_from_an_earlier_lap_after_the_tail_is_not_served() {
        let mut image = Image::new();
        // Fill more than one lap, so the tail chunk's slot held an older lap's batches.
        while image.position < CHUNK * SLOTS + CHUNK / 2 {
            image.append(2);
        }
        let end_offset = image.offset;
        // Bytes after the tail in the tail chunk are a stale batch from lap 0 (a valid CRC).
        let recovered = recover(&image.data, &image.layout, &superblock(0, None), 1 << 20);
        assert_eq!(recovered.next_offset, end_offset);
        assert!(recovered.truncated.is_none(), "a stale lap is the normal end, not a truncation");
    }

    #[test]
    fn chain_holding_the_durable_offset_wins_over_a_newer_disconnected_one() {
        let mut image = Image::new();
        let mut batches = Vec::new();
        while image.position < 3 * CHUNK + 100 {
            batches.push(image.append(2));
        }
        // Lose the middle of chunk 1 (an unsynced page): chunks 2 and 3 are valid but cut off.
        let lost = batches.iter().find(|b| b.position > CHUNK + 200).unwrap();
        let place = lost.position as usize;
        image.data[place..place + 64].fill(0xEE);
        let recovered = recover(&image.data, &image.layout, &superblock(3, None), 1 << 20);
        assert_eq!(recovered.next_offset, lost.base_offset, "chain with durable offset 3");
        assert_eq!(recovered.discarded_chunks, 2);
        // Without a chain holding the durable offset, the newest chain is taken.
        let newest = recover(&image.data, &image.layout, &superblock(1000, None), 1 << 20);
        assert_eq!(newest.next_offset, image.offset);
    }

    #[test]
    fn clean_checkpoint_is_confirmed_by_a_walk_and_rejected_when_wrong() {
        let mut image = Image::new();
        let first = image.append(5);
        for _ in 0..4 {
            image.append(5);
        }
        let checkpoint = Checkpoint {
            head_position: 0,
            head_offset: first.base_offset,
            tail_position: image.position,
            next_offset: image.offset,
        };
        let recovered =
            recover(&image.data, &image.layout, &superblock(0, Some(checkpoint)), 1 << 20);
        assert_eq!(recovered.mode, RecoveryMode::Clean);
        assert_eq!(recovered.next_offset, image.offset);
        let wrong = Checkpoint { next_offset: image.offset + 1, ..checkpoint };
        let recovered = recover(&image.data, &image.layout, &superblock(0, Some(wrong)), 1 << 20);
        assert_eq!(recovered.mode, RecoveryMode::Scanned);
        assert!(recovered.checkpoint_rejected.is_some());
        assert_eq!(recovered.next_offset, image.offset);
    }

    #[test]
    fn random_damage_never_yields_an_invalid_batch() {
        // Flip random bytes anywhere; whatever recovery keeps must validate in full and be dense.
        let mut seed = 0x9E37_79B9_7F4A_7C15u64;
        let mut next = || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for _ in 0..if cfg!(miri) { 4 } else { 200 } {
            let mut image = Image::new();
            for _ in 0..(next() % 60) {
                image.append(1 + (next() % 6) as usize);
            }
            for _ in 0..(next() % 4) {
                let at = (next() % image.data.len() as u64) as usize;
                image.data[at] ^= 1 + (next() % 255) as u8;
            }
            let recovered = recover(&image.data, &image.layout, &superblock(0, None), 1 << 20);
            let layout = image.layout;
            let head = layout.generation_start(recovered.head_generation);
            let mut expected = recovered.head_offset;
            walk(&image.data, &layout, head, recovered.head_offset, recovered.tail_position, |b| {
                let rest = chunk_rest(&image.data, &layout, b.position);
                let size = BatchHeader::peek(rest).unwrap().batch_len();
                let view =
                    BatchView::validate(&rest[..size], 1 << 20).expect("served batch validates");
                assert_eq!(view.base_offset(), expected);
                expected = view.next_offset();
            })
            .unwrap();
            assert_eq!(expected, recovered.next_offset);
        }
    }

    /// The torn write the ring's entries exist for: a new batch's base offset landed on an older
    /// lap's batch (valid on its own), with or without the new batch's entry.
    #[test]
    fn a_new_offset_over_an_old_batch_is_never_accepted() {
        let mut image = Image::new();
        while image.position < CHUNK * SLOTS + 300 {
            image.append(2);
        }
        let end_offset = image.offset;
        // The lap-old batch that now lies right after the tail, in the tail chunk's slot.
        let place = (image.position % image.layout.capacity()) as usize;
        let old = BatchHeader::peek(&image.data[place..])
            .map(|header| (header.batch_len(), header.crc()));
        let (old_size, _) = old.expect("an older lap's batch follows the tail");
        let new_batch = batch(3, 0xAB);
        let new_crc = BatchHeader::peek(&new_batch).unwrap().crc();
        // Only the first 8 bytes of the new batch (its stamped base offset) reached the disk.
        image.data[place..place + 8].copy_from_slice(&end_offset.to_be_bytes());
        let without_entry = recover(&image.data, &image.layout, &superblock(0, None), 1 << 20);
        assert_eq!(without_entry.next_offset, end_offset, "an old entry does not name the offset");
        // And its entry too: the old batch's CRC is not the one the entry names.
        let entry = RingEntry::Batch {
            base_offset: end_offset,
            size: old_size as u32,
            leader_epoch: 0,
            crc: new_crc,
        };
        image.write_entry(entry);
        let with_entry = recover(&image.data, &image.layout, &superblock(0, None), 1 << 20);
        assert_eq!(with_entry.next_offset, end_offset);
        let truncation = with_entry.truncated.expect("a torn write");
        assert!(
            truncation.reason.contains("does not match its ring entry"),
            "{}",
            truncation.reason
        );
    }
}
