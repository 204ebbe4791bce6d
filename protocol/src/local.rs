//! Same-host readers of a partition's ring: the cursor page the broker shares with them, and the
//! protocol by which a reader in another process copies a batch out of a ring that the broker is
//! rewriting, and knows whether the copy is whole.
//!
//! A local reader maps two files read-only: the partition's ring file (the broker's own mapping,
//! so batches are where the broker wrote them) and the partition's cursor page, a small shared
//! page the broker updates as it writes. From then on a read is loads from memory: no request,
//! no syscall.
//!
//! # The cursor page
//!
//! The page is an array of `u64` words in the host's byte order (it never leaves the host), each
//! read and written only as an atomic:
//!
//! ```text
//! word  field          notes
//!    0  magic          "RMQLOCAL" (little-endian)
//!    1  version        2
//!    2  data_start     file offset of the ring's data area
//!    3  capacity       bytes in the data area
//!    4  chunk_size     bytes per chunk
//!    5  slot_count     capacity / chunk_size
//!    6  state          0 live; 1 closed (the broker no longer writes this page)
//!    7  published_end  every byte of the ring below this position is written (release)
//!    8  incarnation_at file offset of the ring's incarnation word (before the data area)
//!    9  incarnation    what the incarnation word held when this page was made
//! 10..16 reserved      0
//! 16+s  tag of slot s  1 + the chunk generation slot s holds (0: none yet)
//! ```
//!
//! A reader's loads are all relaxed, each acquire made with a fence after it: the mapping is
//! read-only in the reader, and Rust promises only relaxed atomic loads of register size to work
//! on read-only memory (`core::sync::atomic`, "Atomic accesses to read-only memory"). A relaxed
//! load followed by an acquire fence synchronizes as an acquire load does.
//!
//! Positions count bytes of the unrolled ring as the broker's log does: position `p` is byte
//! `data_start + p % capacity` of the ring file and lies in chunk generation `p / chunk_size`,
//! which is held by slot `generation % slot_count`.
//!
//! # The protocol (a seqlock per chunk)
//!
//! The broker never waits for a local reader: it reclaims a chunk whenever it needs one. So a
//! reader cannot keep bytes from changing; it can only find out that they did.
//!
//! The writer (the broker):
//!
//! 1. before it writes any byte of generation `g` into slot `s`, stores `tag[s] = g + 1`, then a
//!    sequentially consistent fence ([`note_claim`]);
//! 2. after every byte below `end` is written, stores `published_end = end` with release
//!    ([`note_published`]).
//!
//! A reader, for bytes at position `p` of generation `g` ([`copy_checked`]):
//!
//! 1. loads `published_end` with acquire and reads only what was written before it was stored:
//!    the bytes below it, and the ring entries of the batches below it;
//! 2. loads `tag[s]` with acquire: it must be `g + 1` (larger: the chunk was reclaimed);
//! 3. copies the bytes with relaxed word loads into memory of its own;
//! 4. issues an acquire fence and loads `tag[s]` again: still `g + 1`, or the copy is thrown away;
//!    and loads the ring's incarnation word: still the page's `incarnation`, or the copy is thrown
//!    away too (see "A broker that dies" below).
//!
//! Why a copy that passes step 4 holds exactly generation `g`'s bytes: they were all written
//! before `published_end` passed them (writer step 2, reader step 1), so no load can see an older
//! value. If a load in step 3 saw a byte of a later generation `g'`, the writer stored it after
//! its fence following `tag[s] = g' + 1`; that fence then synchronizes with the reader's fence of
//! step 4, whose load must see `g' + 1` or later. Tags only grow (`g + 1`, then `g + 1 +
//! slot_count`, ...), so an unchanged tag means no reclaim began. The loom model in this module
//! checks this with the writer and the reader as threads over the same words.
//!
//! # A broker that dies
//!
//! A page is one broker process's: a broker killed outright (SIGKILL, a crash) never marks it
//! closed, and the next broker to open the ring shares a fresh page of its own. A reader still
//! reading through the dead broker's page would see tags that no longer move while the new broker
//! rewrites the ring, so the tags alone would not catch a torn copy.
//!
//! The ring file therefore holds an incarnation word (a little-endian `u64` in the superblock
//! area, never in the data area) that every broker increments when it opens the ring, and follows
//! with a sequentially consistent fence, before it writes any byte of the data area. Each page
//! states where that word is and what it held for its broker. A reader loads it after its step-4
//! fence: if a load of step 3 saw a byte the new broker wrote, that byte was stored after the new
//! broker's fence, which then synchronizes with the reader's fence, so the reader sees the new
//! incarnation and throws the copy away ([`CopyError::Replaced`]): it must ask the broker that now
//! runs for a page of its own. This is the same argument as for the tags, with the incarnation as
//! one tag over the whole ring.
//!
//! The copy is what makes it sound: a reader that handed out views of the mapping itself would
//! hand out bytes the broker may overwrite while they are being used, and a Rust reference to
//! memory that changes under it is undefined behaviour. The copy is one `memcpy`-sized pass over
//! bytes already in the page cache, into a buffer the reader reuses: no syscall and no
//! allocation per batch.
//!
//! On top of the protocol, every batch handed out is validated on the copy ([`read_batch`]):
//! header, size, CRC-32C and records ([`BatchView::validate`]), and its base offset equal to the
//! one expected. So bytes damaged in the file, or a page the broker stopped writing (it crashed
//! and another broker now writes the ring), give an error and are never handed out.
//!
//! Across processes the writer's bytes are plain stores: the writer's fence keeps the compiler
//! and the CPU from moving them before the tag store, and the reader's word loads are single
//! aligned loads. On the writer's side, this is the same argument the broker's own readers rely
//! on (`published_end` with release).

use std::sync::atomic::{self, AtomicU64, Ordering};

use crate::batch::BatchView;
use crate::error::DecodeError;
use crate::limits::BATCH_HEADER_SIZE;
use crate::ring::{read_end_marker, Entry, END_MARKER_SIZE, ENTRY_SIZE};

/// The page's magic word: "RMQLOCAL".
pub const MAGIC: u64 = u64::from_le_bytes(*b"RMQLOCAL");
/// The page format this build reads and writes (2: with the ring's incarnation).
pub const VERSION: u64 = 2;
/// Words before the slot tags.
pub const HEADER_WORDS: usize = 16;

const WORD_MAGIC: usize = 0;
const WORD_VERSION: usize = 1;
const WORD_DATA_START: usize = 2;
const WORD_CAPACITY: usize = 3;
const WORD_CHUNK_SIZE: usize = 4;
const WORD_SLOT_COUNT: usize = 5;
const WORD_STATE: usize = 6;
const WORD_PUBLISHED_END: usize = 7;
const WORD_INCARNATION_AT: usize = 8;
const WORD_INCARNATION: usize = 9;

const STATE_CLOSED: u64 = 1;

/// A word, in bytes.
const WORD: u64 = 8;

/// Memory of `u64` words that another thread or process may write: what a reader loads from.
/// Implemented for `[AtomicU64]` (a mapping, or heap memory in tests); the loom model implements
/// it over loom's atomics.
pub trait Words {
    /// How many words there are.
    fn word_count(&self) -> usize;
    /// Loads word `index` (`None` past the end).
    fn load(&self, index: usize, order: Ordering) -> Option<u64>;
    /// A memory fence.
    fn fence(&self, order: Ordering);
}

/// Words a writer may store to.
pub trait WordsMut: Words {
    /// Stores word `index`; false (and nothing stored) past the end.
    fn store(&self, index: usize, value: u64, order: Ordering) -> bool;
}

impl Words for [AtomicU64] {
    fn word_count(&self) -> usize {
        self.len()
    }

    #[inline]
    fn load(&self, index: usize, order: Ordering) -> Option<u64> {
        self.get(index).map(|word| word.load(order))
    }

    fn fence(&self, order: Ordering) {
        atomic::fence(order);
    }
}

impl WordsMut for [AtomicU64] {
    fn store(&self, index: usize, value: u64, order: Ordering) -> bool {
        self.get(index).map(|word| word.store(value, order)).is_some()
    }
}

/// A ring's geometry as a cursor page states it, checked to be consistent with itself and with
/// the ring's mapping.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PageLayout {
    data_start: u64,
    capacity: u64,
    chunk_size: u64,
    slot_count: u64,
    incarnation: Option<Incarnation>,
}

/// Where a ring's incarnation word is and what it held for one broker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Incarnation {
    /// File offset of the word.
    at: u64,
    /// Index of the word in the ring's mapping (`at / 8`).
    word: usize,
    value: u64,
}

/// Why a cursor page cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PageError {
    /// Not a cursor page, or one of another version.
    #[error(
        "not a ringmq cursor page of version {VERSION} (magic {magic:#018x}, version {version})"
    )]
    NotAPage {
        /// The magic word found.
        magic: u64,
        /// The version word found.
        version: u64,
    },
    /// Sizes that do not agree with each other, the page's length or the ring's mapping.
    #[error("inconsistent cursor page: {0}")]
    Inconsistent(&'static str),
}

impl PageLayout {
    /// A layout, if the sizes are consistent: a positive capacity that is a whole number of
    /// chunks, a word-aligned data area and chunk size.
    ///
    /// # Errors
    ///
    /// [`PageError::Inconsistent`] naming what does not fit.
    pub fn new(data_start: u64, capacity: u64, chunk_size: u64) -> Result<Self, PageError> {
        if chunk_size == 0 || capacity == 0 || !capacity.is_multiple_of(chunk_size) {
            return Err(PageError::Inconsistent("capacity is not a positive number of chunks"));
        }
        if !data_start.is_multiple_of(WORD) || !chunk_size.is_multiple_of(WORD) {
            return Err(PageError::Inconsistent(
                "the data area or the chunks are not word-aligned",
            ));
        }
        if data_start.checked_add(capacity).and_then(|end| usize::try_from(end).ok()).is_none() {
            return Err(PageError::Inconsistent("the ring is too large to map"));
        }
        let slot_count = capacity.checked_div(chunk_size).unwrap_or(0);
        if usize::try_from(slot_count)
            .ok()
            .and_then(|slots| slots.checked_add(HEADER_WORDS))
            .is_none()
        {
            return Err(PageError::Inconsistent("too many chunks"));
        }
        Ok(Self { data_start, capacity, chunk_size, slot_count, incarnation: None })
    }

    /// This layout with the ring's incarnation word: the little-endian `u64` at file offset `at`
    /// (word-aligned, before the data area), which held `value` when the broker that writes the
    /// page opened the ring. Copies are checked against it (see "A broker that dies").
    ///
    /// # Errors
    ///
    /// [`PageError::Inconsistent`] for a word that is not aligned or not before the data area.
    pub fn with_incarnation(self, at: u64, value: u64) -> Result<Self, PageError> {
        let before_data = at.checked_add(WORD).is_some_and(|end| end <= self.data_start);
        let word = usize::try_from(at / WORD).ok();
        match word {
            Some(word) if at.is_multiple_of(WORD) && before_data => {
                Ok(Self { incarnation: Some(Incarnation { at, word, value }), ..self })
            }
            _ => Err(PageError::Inconsistent(
                "the incarnation word is not an aligned word before the data area",
            )),
        }
    }

    /// Reads and checks the layout a page states, against the page's own length and the ring's
    /// mapping (`ring` covers the whole ring file).
    ///
    /// # Errors
    ///
    /// [`PageError`] naming what is wrong.
    pub fn read<P: Words + ?Sized, R: Words + ?Sized>(
        page: &P,
        ring: &R,
    ) -> Result<Self, PageError> {
        let word = |index| page.load(index, Ordering::Relaxed).unwrap_or(0);
        page.fence(Ordering::Acquire);
        let (magic, version) = (word(WORD_MAGIC), word(WORD_VERSION));
        if magic != MAGIC || version != VERSION {
            return Err(PageError::NotAPage { magic, version });
        }
        let layout = Self::new(word(WORD_DATA_START), word(WORD_CAPACITY), word(WORD_CHUNK_SIZE))?;
        if word(WORD_SLOT_COUNT) != layout.slot_count {
            return Err(PageError::Inconsistent("the slot count is not capacity / chunk size"));
        }
        let layout = layout.with_incarnation(word(WORD_INCARNATION_AT), word(WORD_INCARNATION))?;
        if page.word_count() < layout.page_words() {
            return Err(PageError::Inconsistent("the page is shorter than its slot table"));
        }
        let ring_bytes = u64::try_from(ring.word_count()).unwrap_or(u64::MAX).saturating_mul(WORD);
        if ring_bytes != layout.data_start.saturating_add(layout.capacity) {
            return Err(PageError::Inconsistent(
                "the ring's mapping is not the size the page states",
            ));
        }
        Ok(layout)
    }

    /// Words of a page for this layout.
    #[must_use]
    pub fn page_words(&self) -> usize {
        // Checked in `new`.
        usize::try_from(self.slot_count).unwrap_or(usize::MAX).saturating_add(HEADER_WORDS)
    }

    /// Bytes of a page for this layout.
    #[must_use]
    pub fn page_bytes(&self) -> usize {
        self.page_words().saturating_mul(8)
    }

    /// Bytes per chunk.
    #[must_use]
    pub fn chunk_size(&self) -> u64 {
        self.chunk_size
    }

    /// Bytes of the ring file: the area before the data, then the data area.
    #[must_use]
    pub fn file_bytes(&self) -> u64 {
        self.data_start.saturating_add(self.capacity)
    }

    fn generation(&self, position: u64) -> u64 {
        position.checked_div(self.chunk_size).unwrap_or(0)
    }

    fn slot_word(&self, generation: u64) -> Option<usize> {
        let slot = usize::try_from(generation.checked_rem(self.slot_count)?).ok()?;
        slot.checked_add(HEADER_WORDS)
    }

    /// Byte index in the ring file of `position`.
    fn file_index(&self, position: u64) -> Option<u64> {
        self.data_start.checked_add(position.checked_rem(self.capacity)?)
    }

    /// Start of the chunk after the one holding `position`.
    fn chunk_end(&self, position: u64) -> Option<u64> {
        self.generation(position).checked_add(1)?.checked_mul(self.chunk_size)
    }
}

/// Writes a fresh page for `layout`: every tag from `generation_of(slot)` (the generation the slot
/// holds, if any), `published_end`, state live. Call before any reader can see the page.
pub fn init_page<W: WordsMut + ?Sized>(
    page: &W,
    layout: &PageLayout,
    published_end: u64,
    generation_of: impl Fn(u64) -> Option<u64>,
) {
    let header = [
        (WORD_MAGIC, MAGIC),
        (WORD_VERSION, VERSION),
        (WORD_DATA_START, layout.data_start),
        (WORD_CAPACITY, layout.capacity),
        (WORD_CHUNK_SIZE, layout.chunk_size),
        (WORD_SLOT_COUNT, layout.slot_count),
        (WORD_STATE, 0),
        (WORD_PUBLISHED_END, published_end),
        // A layout without an incarnation (tests of the protocol alone) gets a page no reader
        // accepts: `u64::MAX` is never a word before the data area.
        (WORD_INCARNATION_AT, layout.incarnation.map_or(u64::MAX, |incarnation| incarnation.at)),
        (WORD_INCARNATION, layout.incarnation.map_or(0, |incarnation| incarnation.value)),
    ];
    for (index, value) in header {
        page.store(index, value, Ordering::Relaxed);
    }
    for slot in 0..layout.slot_count {
        let tag = generation_of(slot).map_or(0, |generation| generation.saturating_add(1));
        if let Some(index) = layout.slot_word(slot) {
            page.store(index, tag, Ordering::Relaxed);
        }
    }
    page.fence(Ordering::SeqCst);
}

/// Writer step 1: the writer is about to write generation `generation`. Call before the first
/// byte of it is written.
pub fn note_claim<W: WordsMut + ?Sized>(page: &W, layout: &PageLayout, generation: u64) {
    if let Some(index) = layout.slot_word(generation) {
        page.store(index, generation.saturating_add(1), Ordering::Relaxed);
    }
    // Orders the tag before every byte of the new generation (see the module docs).
    page.fence(Ordering::SeqCst);
}

/// Writer step 2: every byte below `end` is written.
pub fn note_published<W: WordsMut + ?Sized>(page: &W, end: u64) {
    page.store(WORD_PUBLISHED_END, end, Ordering::Release);
}

/// The broker no longer writes this page (it closed the partition); readers that reach the end
/// must ask the broker again.
pub fn note_closed<W: WordsMut + ?Sized>(page: &W) {
    page.store(WORD_STATE, STATE_CLOSED, Ordering::Release);
}

/// The published end a page states (reader step 1), with acquire semantics.
pub fn published_end<P: Words + ?Sized>(page: &P) -> u64 {
    let end = page.load(WORD_PUBLISHED_END, Ordering::Relaxed).unwrap_or(0);
    page.fence(Ordering::Acquire);
    end
}

/// Whether the broker closed the page.
pub fn is_closed<P: Words + ?Sized>(page: &P) -> bool {
    let state = page.load(WORD_STATE, Ordering::Relaxed);
    page.fence(Ordering::Acquire);
    state == Some(STATE_CLOSED)
}

/// Whether the ring is still written by the broker of this page's layout: its incarnation word
/// holds what the page says (always true for a layout without one). A relaxed look, for a reader
/// deciding whether to wait on the page; every copy checks it again, ordered
/// ([`copy_checked`]).
pub fn is_current<R: Words + ?Sized>(ring: &R, layout: &PageLayout) -> bool {
    layout.incarnation.is_none_or(|incarnation| {
        let word = ring.load(incarnation.word, Ordering::Relaxed);
        word.map(|word| u64::from_le_bytes(word.to_ne_bytes())) == Some(incarnation.value)
    })
}

/// Why a copy was thrown away.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CopyError {
    /// The copy did not hold one generation's bytes: the chunk was reclaimed before or while it
    /// was read (or the range is not inside one chunk of the ring). The reader is behind the
    /// broker's retention and must ask it where the log now starts.
    Lapped,
    /// Another broker opened the ring since the page was made (the page's broker died): the
    /// copy may hold its bytes. The reader must ask the broker that now runs for a new page.
    Replaced,
}

/// Reader steps 2 to 4: copies `out.len()` bytes at `position` (one chunk; below the published
/// end, which the caller loaded) into `out`, and tells whether the copy holds exactly the bytes of
/// `position`'s chunk generation, as the page's broker wrote them.
///
/// # Errors
///
/// [`CopyError::Lapped`] when the chunk was reclaimed before or during the copy (or the range is
/// not inside one chunk of the ring); [`CopyError::Replaced`] when another broker now writes the
/// ring.
pub fn copy_checked<P: Words + ?Sized, R: Words + ?Sized>(
    page: &P,
    ring: &R,
    layout: &PageLayout,
    position: u64,
    out: &mut [u8],
) -> Result<(), CopyError> {
    let lapped = CopyError::Lapped;
    let generation = layout.generation(position);
    let tag_word = layout.slot_word(generation).ok_or(lapped)?;
    let tag = generation.checked_add(1).ok_or(lapped)?;
    let length = u64::try_from(out.len()).map_err(|_| lapped)?;
    let end = position.checked_add(length).ok_or(lapped)?;
    if end > layout.chunk_end(position).ok_or(lapped)? {
        return Err(lapped);
    }
    let before = page.load(tag_word, Ordering::Relaxed);
    page.fence(Ordering::Acquire);
    if before != Some(tag) {
        return Err(lapped);
    }
    copy_words(ring, layout.file_index(position).ok_or(lapped)?, out).ok_or(lapped)?;
    page.fence(Ordering::Acquire);
    if page.load(tag_word, Ordering::Relaxed) != Some(tag) {
        return Err(lapped);
    }
    if !is_current(ring, layout) {
        return Err(CopyError::Replaced);
    }
    Ok(())
}

/// Copies the bytes at file index `start` into `out` with relaxed word loads (`None` past the
/// end of `ring`): the partial word at each end byte by byte, the words between straight into
/// `out` eight bytes at a time.
#[inline]
fn copy_words<R: Words + ?Sized>(ring: &R, start: u64, out: &mut [u8]) -> Option<()> {
    let mut index = usize::try_from(start / WORD).ok()?;
    let skip = usize::try_from(start % WORD).ok()?;
    let mut rest = out;
    if skip > 0 && !rest.is_empty() {
        let bytes = ring.load(index, Ordering::Relaxed)?.to_ne_bytes();
        let from = bytes.get(skip..)?;
        let take = from.len().min(rest.len());
        let (here, after) = rest.split_at_mut(take);
        here.copy_from_slice(from.get(..take)?);
        rest = after;
        index = index.checked_add(1)?;
    }
    let after = index.checked_add(rest.len() / 8)?;
    if after > ring.word_count() {
        return None;
    }
    let (words, tail) = rest.as_chunks_mut::<8>();
    for (at, chunk) in (index..after).zip(words.iter_mut()) {
        // A whole-array store: eight bytes, no call to `memcpy`.
        *chunk = ring.load(at, Ordering::Relaxed)?.to_ne_bytes();
    }
    if !tail.is_empty() {
        let bytes = ring.load(after, Ordering::Relaxed)?.to_ne_bytes();
        tail.copy_from_slice(bytes.get(..tail.len())?);
    }
    Some(())
}

/// Where a local reader is: the position of the next batch, the base offset it must have and the
/// index of its entry in its chunk's table.
///
/// A reader starts at the start of a chunk (entry 0) and moves only by [`read_batch`], so it
/// always knows which entry describes the batch it reads next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cursor {
    /// Position of the next batch (or of the end marker before it).
    pub position: u64,
    /// Base offset the next batch must have.
    pub offset: u64,
    /// Index of the next batch's entry in its chunk.
    pub entry: u32,
}

impl Cursor {
    /// A cursor at the start of a chunk whose first batch has base offset `offset` (or, for an
    /// empty chunk not written yet, the offset its first batch will get).
    #[must_use]
    pub fn at_chunk_start(position: u64, offset: u64) -> Self {
        Self { position, offset, entry: 0 }
    }
}

/// Why [`read_batch`] handed out nothing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum LocalReadError {
    /// The chunk was reclaimed before or while it was read: ask the broker where the log starts.
    #[error("the broker reclaimed the chunk at position {position} before it was read (the reader fell behind the partition's retention)")]
    Lapped {
        /// Where the reader was.
        position: u64,
    },
    /// The broker that made the page no longer writes the ring (it died and another broker opened
    /// it): open the partition again, on the broker that runs now.
    #[error("the broker that shared this partition's page stopped and another now writes the ring (at position {position}): open it again")]
    Replaced {
        /// Where the reader was.
        position: u64,
    },
    /// The bytes at the cursor are whole (the chunk was not reclaimed, the ring not reopened) but
    /// not the batch expected: damaged in the file.
    #[error("the batch at offset {offset} (position {position}) is not valid: {reason}")]
    Corrupt {
        /// The offset expected there.
        offset: u64,
        /// Its position.
        position: u64,
        /// What is wrong.
        reason: String,
    },
}

/// Reads the next batch at `cursor` into `buffer` (grown as needed, never shrunk): walks past the
/// end of a chunk to the next one, copies the batch and its ring entry with [`copy_checked`],
/// validates the copy (header, CRC-32C, records; base offset equal to `cursor.offset`; at most
/// `batch_size_max` bytes; the entry's CRC, and its base offset, size, leader epoch and CRC equal
/// to the batch's) and moves the cursor past it. `Ok(None)`: nothing published at the cursor yet.
///
/// # Errors
///
/// [`LocalReadError::Lapped`], [`LocalReadError::Replaced`] or [`LocalReadError::Corrupt`]; the
/// cursor is left where it was.
pub fn read_batch<'b, P: Words + ?Sized, R: Words + ?Sized>(
    page: &P,
    ring: &R,
    layout: &PageLayout,
    cursor: &mut Cursor,
    buffer: &'b mut Vec<u8>,
    batch_size_max: u32,
) -> Result<Option<BatchView<'b>>, LocalReadError> {
    let mut at = *cursor;
    let position = cursor.position;
    let failed = |error: CopyError| match error {
        CopyError::Lapped => LocalReadError::Lapped { position },
        CopyError::Replaced => LocalReadError::Replaced { position },
    };
    let lapped = failed(CopyError::Lapped);
    let corrupt = |at: &Cursor, reason: String| LocalReadError::Corrupt {
        offset: at.offset,
        position: at.position,
        reason,
    };
    // Each turn returns or moves to the next chunk: past an end marker, or past a chunk end too
    // close to hold one. A third turn would mean the page and the ring disagree.
    for _ in 0..3 {
        let end = published_end(page);
        if at.position >= end {
            *cursor = at;
            return Ok(None);
        }
        let chunk_end = layout.chunk_end(at.position).ok_or_else(|| lapped.clone())?;
        let in_chunk = chunk_end.saturating_sub(at.position);
        if in_chunk < u64::try_from(END_MARKER_SIZE).unwrap_or(u64::MAX) {
            at = Cursor::at_chunk_start(chunk_end, at.offset);
            continue;
        }
        let published = in_chunk.min(end.saturating_sub(at.position));
        let mut head = [0u8; BATCH_HEADER_SIZE];
        let peek = usize::try_from(published).unwrap_or(usize::MAX).min(BATCH_HEADER_SIZE);
        let head = head.get_mut(..peek).ok_or_else(|| lapped.clone())?;
        copy_checked(page, ring, layout, at.position, head).map_err(failed)?;
        if let Some(next) = read_end_marker(head) {
            if next != at.offset {
                return Err(corrupt(&at, format!("the chunk's end marker names offset {next}")));
            }
            at = Cursor::at_chunk_start(chunk_end, at.offset);
            continue;
        }
        let size = match crate::BatchHeader::peek(head) {
            Ok(header) => header.batch_len(),
            Err(error) => return Err(corrupt(&at, error.to_string())),
        };
        let size_max = usize::try_from(batch_size_max).unwrap_or(usize::MAX);
        let size_u64 = u64::try_from(size).unwrap_or(u64::MAX);
        if size < BATCH_HEADER_SIZE || size > size_max || size_u64 > published {
            return Err(corrupt(
                &at,
                format!("a batch of {size} bytes does not fit what is published"),
            ));
        }
        let entry = read_entry(page, ring, layout, &at, chunk_end).map_err(failed)?;
        if buffer.len() < size {
            buffer.resize(size, 0);
        }
        let copy = buffer.get_mut(..size).ok_or_else(|| lapped.clone())?;
        copy_checked(page, ring, layout, at.position, copy).map_err(failed)?;
        let batch = BatchView::validate(copy, batch_size_max)
            .map_err(|error: DecodeError| corrupt(&at, error.to_string()))?;
        if batch.base_offset() != at.offset {
            return Err(corrupt(&at, format!("its base offset is {}", batch.base_offset())));
        }
        let header = batch.header();
        let expected = Entry::Batch {
            base_offset: at.offset,
            size: u32::try_from(size).unwrap_or(u32::MAX),
            leader_epoch: header.partition_leader_epoch(),
            crc: header.crc(),
        };
        match entry {
            Some(entry) if entry == expected => {}
            Some(entry) => {
                return Err(corrupt(&at, format!("its ring entry {} says {entry:?}", at.entry)));
            }
            None => {
                return Err(corrupt(&at, format!("its ring entry {} fails its CRC", at.entry)));
            }
        }
        *cursor = Cursor {
            position: at.position.saturating_add(size_u64),
            offset: batch.next_offset(),
            entry: at.entry.saturating_add(1),
        };
        return Ok(Some(batch));
    }
    Err(corrupt(&at, "no batch where the page says the log goes on".to_owned()))
}

/// The ring entry of the batch at `at` (`None`: its bytes fail the entry's CRC or are blank).
fn read_entry<P: Words + ?Sized, R: Words + ?Sized>(
    page: &P,
    ring: &R,
    layout: &PageLayout,
    at: &Cursor,
    chunk_end: u64,
) -> Result<Option<Entry>, CopyError> {
    let from_end = u64::from(at.entry)
        .checked_add(1)
        .and_then(|count| count.checked_mul(u64::try_from(ENTRY_SIZE).ok()?));
    let place =
        from_end.and_then(|from_end| chunk_end.checked_sub(from_end)).ok_or(CopyError::Lapped)?;
    if place < at.position {
        return Ok(None);
    }
    let mut bytes = [0u8; ENTRY_SIZE];
    copy_checked(page, ring, layout, place, &mut bytes)?;
    Ok(Entry::decode(&bytes).ok())
}

#[cfg(test)]
#[cfg(not(protocol_loom))]
mod tests {
    use super::*;
    use crate::batch::{stamp, BatchBuilder, Record};
    use crate::ring::{end_marker, CLOSE_SIZE};
    use std::sync::atomic::AtomicU64;
    use std::sync::Arc;

    const DATA_START: u64 = 64;
    const CHUNK: u64 = 1024;
    const SLOTS: u64 = 4;
    /// Where the test rings keep their incarnation word: the last word before the data area.
    const INCARNATION_AT: u64 = DATA_START - 8;

    fn words(bytes: u64) -> Arc<[AtomicU64]> {
        (0..bytes / 8).map(|_| AtomicU64::new(0)).collect()
    }

    /// A writer that follows the broker's protocol over heap words, storing bytes as relaxed
    /// word stores (so the race tests are well-defined for Miri).
    struct TestRing {
        page: Arc<[AtomicU64]>,
        ring: Arc<[AtomicU64]>,
        layout: PageLayout,
        tail: u64,
        chunk_end: u64,
        claimed: Option<u64>,
        next_offset: u64,
        entries: u64,
        /// (chunk start, first offset) of every generation written.
        chunk_starts: Vec<(u64, u64)>,
    }

    impl TestRing {
        fn new() -> Self {
            let layout = PageLayout::new(DATA_START, CHUNK * SLOTS, CHUNK)
                .unwrap()
                .with_incarnation(INCARNATION_AT, 1)
                .unwrap();
            let page = words(layout.page_bytes() as u64);
            init_page(&*page, &layout, 0, |_| None);
            let ring = words(layout.file_bytes());
            ring[(INCARNATION_AT / 8) as usize].store(1u64.to_le(), Ordering::Relaxed);
            Self {
                page,
                ring,
                layout,
                tail: 0,
                chunk_end: 0,
                claimed: None,
                next_offset: 0,
                entries: 0,
                chunk_starts: Vec::new(),
            }
        }

        fn write(&self, position: u64, bytes: &[u8]) {
            let start = DATA_START + position % (CHUNK * SLOTS);
            for (at, &byte) in bytes.iter().enumerate() {
                let index = start + at as u64;
                let word = &self.ring[(index / 8) as usize];
                let mut value = word.load(Ordering::Relaxed).to_ne_bytes();
                value[(index % 8) as usize] = byte;
                word.store(u64::from_ne_bytes(value), Ordering::Relaxed);
            }
        }

        /// What a broker that opens the ring after this one died does before it writes: a new
        /// incarnation, then the fence. The old page is left as it was (nobody writes it again).
        fn replace_broker(&self) {
            let word = &self.ring[(INCARNATION_AT / 8) as usize];
            let next = u64::from_le(word.load(Ordering::Relaxed)) + 1;
            word.store(next.to_le(), Ordering::Relaxed);
            atomic::fence(Ordering::SeqCst);
        }

        fn entry_position(&self) -> u64 {
            self.chunk_end - (self.entries + 1) * ENTRY_SIZE as u64
        }

        /// Appends a batch of `count` records whose values name their offsets; returns its base
        /// offset.
        fn append(&mut self, count: u32) -> u64 {
            let batch = batch_for(self.next_offset, count);
            let size = batch.len() as u64;
            let framing = (self.entries + 1) * ENTRY_SIZE as u64 + CLOSE_SIZE as u64;
            if self.claimed.is_some() && self.tail + size + framing > self.chunk_end {
                let close = Entry::Close { next_offset: self.next_offset, leader_epoch: 0 };
                self.write(self.entry_position(), &close.encode());
                self.write(self.tail, &end_marker(self.next_offset));
                self.tail = self.chunk_end;
                note_published(&*self.page, self.tail);
                self.claimed = None;
            }
            if self.claimed.is_none() {
                let generation = self.tail / CHUNK;
                note_claim(&*self.page, &self.layout, generation);
                self.claimed = Some(generation);
                self.chunk_end = self.tail + CHUNK;
                self.entries = 0;
                self.chunk_starts.push((self.tail, self.next_offset));
            }
            let base_offset = self.next_offset;
            self.write(self.tail, &batch);
            let entry = Entry::Batch {
                base_offset,
                size: size as u32,
                leader_epoch: 0,
                crc: crate::BatchHeader::peek(&batch).unwrap().crc(),
            };
            self.write(self.entry_position(), &entry.encode());
            self.entries += 1;
            self.tail += size;
            self.next_offset += u64::from(count);
            note_published(&*self.page, self.tail);
            base_offset
        }

        fn read(
            &self,
            cursor: &mut Cursor,
            buffer: &mut Vec<u8>,
        ) -> Result<Option<Vec<u8>>, LocalReadError> {
            read_batch(&*self.page, &*self.ring, &self.layout, cursor, buffer, 1 << 20)
                .map(|batch| batch.map(|batch| batch.as_bytes().to_vec()))
        }
    }

    /// The batch written for `base_offset`: `count` records whose values name their offsets.
    fn batch_for(base_offset: u64, count: u32) -> Vec<u8> {
        let mut buffer = vec![0u8; 4096];
        let mut builder = BatchBuilder::new(&mut buffer, 1_700_000_000_000).unwrap();
        let values: Vec<String> =
            (0..u64::from(count)).map(|at| format!("record {}", base_offset + at)).collect();
        for value in &values {
            let pushed = builder.push(&Record::value(value.as_bytes(), 1_700_000_000_000)).unwrap();
            assert_eq!(pushed, crate::batch::Push::Appended);
        }
        let mut batch = builder.finish().unwrap().to_vec();
        stamp(&mut batch, base_offset, 0).unwrap();
        batch
    }

    #[test]
    fn reads_every_batch_in_order_across_chunks() {
        let mut ring = TestRing::new();
        let mut cursor = Cursor::at_chunk_start(0, 0);
        let mut buffer = Vec::new();
        assert_eq!(ring.read(&mut cursor, &mut buffer), Ok(None), "nothing published yet");
        let mut bases = Vec::new();
        let mut round = 0u32;
        while ring.chunk_starts.len() < 3 {
            bases.push((ring.append(1 + round % 5), 1 + round % 5));
            round += 1;
        }
        for &(base, count) in &bases {
            let batch = ring.read(&mut cursor, &mut buffer).unwrap().expect("a batch");
            assert_eq!(batch, batch_for(base, count));
        }
        assert_eq!(ring.read(&mut cursor, &mut buffer), Ok(None));
        assert_eq!(cursor.offset, ring.next_offset);
        // A reader waiting at the end sees the next batch, also in a fresh chunk.
        let base = ring.append(3);
        assert_eq!(ring.read(&mut cursor, &mut buffer).unwrap(), Some(batch_for(base, 3)));
    }

    #[test]
    fn a_lapped_reader_is_told_and_keeps_its_place() {
        let mut ring = TestRing::new();
        let mut cursor = Cursor::at_chunk_start(0, 0);
        let mut buffer = Vec::new();
        ring.append(2);
        while ring.chunk_starts.len() <= SLOTS as usize {
            ring.append(4);
        }
        let before = cursor;
        assert_eq!(
            ring.read(&mut cursor, &mut buffer),
            Err(LocalReadError::Lapped { position: 0 })
        );
        assert_eq!(cursor, before);
        // From the oldest chunk still held, everything reads.
        let (start, offset) = ring.chunk_starts[ring.chunk_starts.len() - SLOTS as usize];
        let mut cursor = Cursor::at_chunk_start(start, offset);
        while ring.read(&mut cursor, &mut buffer).unwrap().is_some() {}
        assert_eq!(cursor.offset, ring.next_offset);
    }

    #[test]
    fn bad_pages_are_refused() {
        let ring = TestRing::new();
        assert_eq!(PageLayout::read(&*ring.page, &*ring.ring), Ok(ring.layout));
        let short = words(ring.layout.file_bytes() - 8);
        assert!(matches!(PageLayout::read(&*ring.page, &*short), Err(PageError::Inconsistent(_))));
        ring.page[WORD_VERSION].store(1, Ordering::Relaxed);
        assert!(matches!(
            PageLayout::read(&*ring.page, &*ring.ring),
            Err(PageError::NotAPage { version: 1, .. })
        ));
        ring.page[WORD_VERSION].store(VERSION, Ordering::Relaxed);
        // An incarnation word inside the data area, or not aligned, is refused.
        for at in [DATA_START, INCARNATION_AT + 1, u64::MAX] {
            ring.page[WORD_INCARNATION_AT].store(at, Ordering::Relaxed);
            assert!(matches!(
                PageLayout::read(&*ring.page, &*ring.ring),
                Err(PageError::Inconsistent(_))
            ));
        }
        // A page made without an incarnation is refused by readers.
        let bare = PageLayout::new(DATA_START, CHUNK * SLOTS, CHUNK).unwrap();
        let page = words(bare.page_bytes() as u64);
        init_page(&*page, &bare, 0, |_| None);
        assert!(PageLayout::read(&*page, &*ring.ring).is_err());
        assert!(PageLayout::new(64, 1000, 300).is_err());
        assert!(PageLayout::new(60, 1024, 256).is_err());
        assert!(!is_closed(&*ring.page));
        note_closed(&*ring.page);
        assert!(is_closed(&*ring.page));
    }

    /// A reader still on the page of a broker that died is told to open the partition again as
    /// soon as another broker opened the ring, and keeps its place; on the new broker's page it
    /// reads on from there.
    #[test]
    fn a_reader_of_a_dead_brokers_page_is_told_to_open_again() {
        let mut ring = TestRing::new();
        let first = ring.append(2);
        let second = ring.append(3);
        let mut cursor = Cursor::at_chunk_start(0, 0);
        let mut buffer = Vec::new();
        assert_eq!(ring.read(&mut cursor, &mut buffer).unwrap(), Some(batch_for(first, 2)));
        assert!(is_current(&*ring.ring, &ring.layout));
        ring.replace_broker();
        assert!(!is_current(&*ring.ring, &ring.layout));
        let before = cursor;
        assert_eq!(
            ring.read(&mut cursor, &mut buffer),
            Err(LocalReadError::Replaced { position: before.position })
        );
        assert_eq!(cursor, before);
        // The new broker's page (the incarnation it wrote), the same ring: the reader goes on.
        let layout = ring.layout.with_incarnation(INCARNATION_AT, 2).unwrap();
        init_page(&*ring.page, &layout, ring.tail, |slot| (slot == 0).then_some(0));
        let read = read_batch(&*ring.page, &*ring.ring, &layout, &mut cursor, &mut buffer, 1 << 20);
        assert_eq!(
            read.unwrap().map(|batch| batch.as_bytes().to_vec()),
            Some(batch_for(second, 3))
        );
    }

    /// A broker that opened the ring after the page's broker died rewrites a chunk while a reader
    /// on the old page (whose tags never move again) reads it over and over, on two threads: the
    /// reader gets the old batches whole or is told to open again, never a mixture.
    #[test]
    fn a_new_broker_rewriting_under_an_old_page_never_gets_a_torn_batch_through() {
        let mut ring = TestRing::new();
        let mut written = Vec::new();
        while ring.tail + 200 < CHUNK {
            written.push(batch_for(ring.next_offset, 3));
            ring.append(3);
        }
        let ring = Arc::new(ring);
        let reader_ring = Arc::clone(&ring);
        let reader = std::thread::spawn(move || {
            let ring = reader_ring;
            let mut buffer = Vec::new();
            for pass in 0.. {
                let mut cursor = Cursor::at_chunk_start(0, 0);
                for batch in &written {
                    match ring.read(&mut cursor, &mut buffer) {
                        Ok(Some(read)) => assert_eq!(&read, batch, "pass {pass}"),
                        Ok(None) => panic!("pass {pass}: the log ended early"),
                        Err(LocalReadError::Replaced { .. }) => return pass,
                        Err(error) => panic!("pass {pass}: {error}"),
                    }
                }
                if pass > 1_000_000 {
                    panic!("the replacement was never noticed");
                }
            }
            unreachable!()
        });
        std::thread::yield_now();
        ring.replace_broker();
        // The new broker's own batches over the old chunk, under the old page's unchanged tags.
        let mut offset = 1_000;
        let mut at = 0;
        while at + 200 < CHUNK {
            let batch = batch_for(offset, 2);
            ring.write(at, &batch);
            at += batch.len() as u64;
            offset += 2;
        }
        let passes = reader.join().unwrap();
        assert!(passes < 1_000_000);
    }

    /// Every single bit flip in a chunk's batches, end marker or entries is refused: a batch read
    /// is always exactly the one written.
    #[test]
    fn no_bit_flip_is_ever_handed_out() {
        let mut ring = TestRing::new();
        let mut bases = Vec::new();
        while ring.chunk_starts.len() < 2 {
            bases.push((ring.append(3), 3));
        }
        let first_chunk: Vec<_> =
            bases.iter().filter(|(base, _)| *base < ring.chunk_starts[1].1).collect();
        let step = if cfg!(miri) { 61 } else { 1 };
        let (start, end) = (DATA_START as usize, (DATA_START + CHUNK) as usize);
        let mut refused = 0;
        for bit in (start * 8..end * 8).step_by(step) {
            let word = &ring.ring[bit / 64];
            let original = word.load(Ordering::Relaxed);
            word.store(original ^ (1 << (bit % 64)), Ordering::Relaxed);
            let mut cursor = Cursor::at_chunk_start(0, 0);
            let mut buffer = Vec::new();
            for &&(base, count) in &first_chunk {
                match ring.read(&mut cursor, &mut buffer) {
                    Ok(Some(batch)) => assert_eq!(batch, batch_for(base, count), "bit {bit}"),
                    Ok(None) => panic!("bit {bit}: the log ended early"),
                    Err(LocalReadError::Corrupt { .. }) => {
                        refused += 1;
                        break;
                    }
                    Err(error) => panic!("bit {bit}: {error}"),
                }
            }
            word.store(original, Ordering::Relaxed);
        }
        assert!(refused > 0);
    }

    /// A writer lapping the ring as fast as it can and a reader following it, on two threads over
    /// the same words: every batch the reader gets is exactly the batch written at its offset.
    #[test]
    fn a_racing_writer_never_gets_a_torn_batch_through() {
        use std::sync::Mutex;
        let appends = if cfg!(miri) { 60 } else { 20_000 };
        let oldest = Arc::new(Mutex::new(None::<(u64, u64)>));
        let mut writer = TestRing::new();
        let (page, words, layout) =
            (Arc::clone(&writer.page), Arc::clone(&writer.ring), writer.layout);
        let reader_oldest = Arc::clone(&oldest);
        let reader = std::thread::spawn(move || {
            let mut cursor = Cursor::at_chunk_start(0, 0);
            let mut buffer = Vec::new();
            let (mut read, mut lapped) = (0u64, 0u64);
            loop {
                match read_batch(&*page, &*words, &layout, &mut cursor, &mut buffer, 1 << 20) {
                    Ok(Some(batch)) => {
                        let count = batch.record_count();
                        assert_eq!(batch.as_bytes(), batch_for(batch.base_offset(), count));
                        read += 1;
                    }
                    Ok(None) if is_closed(&*page) => return (read, lapped),
                    Ok(None) => std::thread::yield_now(),
                    Err(LocalReadError::Lapped { .. }) => {
                        lapped += 1;
                        // The writer notes the oldest chunk held just after it reclaims one.
                        match *reader_oldest.lock().unwrap() {
                            Some((position, offset)) => {
                                cursor = Cursor::at_chunk_start(position, offset);
                            }
                            None => std::thread::yield_now(),
                        }
                    }
                    Err(error) => panic!("{error}"),
                }
            }
        });
        for round in 0..appends {
            let generations = writer.chunk_starts.len();
            writer.append(1 + round % 7);
            let now = writer.chunk_starts.len();
            if now > generations && now > SLOTS as usize {
                // The oldest chunk still held once the writer reclaimed one.
                *oldest.lock().unwrap() = Some(writer.chunk_starts[now - SLOTS as usize]);
            }
        }
        note_closed(&*writer.page);
        let (read, lapped) = reader.join().unwrap();
        assert!(read > 0, "the reader read something ({lapped} laps)");
    }
}

/// The seqlock protocol under loom: the broker's writer and a reader as threads over the same
/// words, every interleaving and every value a relaxed load may return.
#[cfg(all(test, protocol_loom))]
mod loom_tests {
    use super::*;
    use loom::sync::atomic::AtomicU64;
    use loom::sync::Arc;

    struct LoomWords(Vec<AtomicU64>);

    impl Words for LoomWords {
        fn word_count(&self) -> usize {
            self.0.len()
        }

        fn load(&self, index: usize, order: Ordering) -> Option<u64> {
            self.0.get(index).map(|word| word.load(order))
        }

        fn fence(&self, order: Ordering) {
            loom::sync::atomic::fence(order);
        }
    }

    impl WordsMut for LoomWords {
        fn store(&self, index: usize, value: u64, order: Ordering) -> bool {
            self.0.get(index).map(|word| word.store(value, order)).is_some()
        }
    }

    fn words(count: usize) -> LoomWords {
        LoomWords((0..count).map(|_| AtomicU64::new(0)).collect())
    }

    const CHUNK: u64 = 16;
    const OLD: [u64; 2] = [0x0101_0101_0101_0101, 0x0202_0202_0202_0202];
    const NEW: [u64; 2] = [0x0909_0909_0909_0909, 0x0808_0808_0808_0808];

    /// Generation 0 (two words) is published in slot 0 of a two-slot ring; the writer writes
    /// generation 1, then reclaims slot 0 for generation 2 while a reader copies generation 0,
    /// and another reader copies generation 2 if it sees it published. A copy that passes the
    /// check is always one generation's bytes, whole.
    #[test]
    fn a_checked_copy_is_never_torn() {
        loom::model(|| {
            let layout = PageLayout::new(0, 2 * CHUNK, CHUNK).unwrap();
            let page = Arc::new(words(layout.page_words()));
            let ring = Arc::new(words(4));
            init_page(&*page, &layout, 0, |_| None);
            note_claim(&*page, &layout, 0);
            ring.store(0, OLD[0], Ordering::Relaxed);
            ring.store(1, OLD[1], Ordering::Relaxed);
            note_published(&*page, CHUNK);

            let (writer_page, writer_ring) = (Arc::clone(&page), Arc::clone(&ring));
            let writer = loom::thread::spawn(move || {
                note_claim(&*writer_page, &layout, 1);
                note_published(&*writer_page, 2 * CHUNK);
                note_claim(&*writer_page, &layout, 2);
                writer_ring.store(0, NEW[0], Ordering::Relaxed);
                writer_ring.store(1, NEW[1], Ordering::Relaxed);
                note_published(&*writer_page, 3 * CHUNK);
            });

            let mut copy = [0u8; 16];
            if copy_checked(&*page, &*ring, &layout, 0, &mut copy).is_ok() {
                assert_eq!(
                    copy,
                    bytes_of(OLD),
                    "a copy of generation 0 that passed is generation 0"
                );
            }
            if published_end(&*page) >= 3 * CHUNK {
                copy_checked(&*page, &*ring, &layout, 2 * CHUNK, &mut copy)
                    .expect("generation 2 is held");
                assert_eq!(copy, bytes_of(NEW), "published bytes are whole");
            }
            writer.join().unwrap();
        });
    }

    /// A broker that dies without closing its page, and the next broker rewrites generation 0 in
    /// place (its slot's tag in the old page never changes): a reader copying generation 0 with
    /// the old page passes only with generation 0's bytes, whole.
    #[test]
    fn a_copy_is_never_torn_by_the_next_broker() {
        loom::model(|| {
            // Word 0 is the incarnation word; the data area is words 1 to 4.
            let layout =
                PageLayout::new(8, 2 * CHUNK, CHUNK).unwrap().with_incarnation(0, 1).unwrap();
            let page = Arc::new(words(layout.page_words()));
            let ring = Arc::new(words(5));
            ring.store(0, 1u64.to_le(), Ordering::Relaxed);
            init_page(&*page, &layout, 0, |_| None);
            note_claim(&*page, &layout, 0);
            ring.store(1, OLD[0], Ordering::Relaxed);
            ring.store(2, OLD[1], Ordering::Relaxed);
            note_published(&*page, CHUNK);

            let next_broker_ring = Arc::clone(&ring);
            let next_broker = loom::thread::spawn(move || {
                next_broker_ring.store(0, 2u64.to_le(), Ordering::Relaxed);
                next_broker_ring.fence(Ordering::SeqCst);
                next_broker_ring.store(1, NEW[0], Ordering::Relaxed);
                next_broker_ring.store(2, NEW[1], Ordering::Relaxed);
            });

            let mut copy = [0u8; 16];
            match copy_checked(&*page, &*ring, &layout, 0, &mut copy) {
                Ok(()) => assert_eq!(copy, bytes_of(OLD), "a copy that passed is generation 0"),
                Err(error) => assert_eq!(error, CopyError::Replaced),
            }
            next_broker.join().unwrap();
        });
    }

    fn bytes_of(words: [u64; 2]) -> [u8; 16] {
        let mut bytes = [0u8; 16];
        bytes[..8].copy_from_slice(&words[0].to_ne_bytes());
        bytes[8..].copy_from_slice(&words[1].to_ne_bytes());
        bytes
    }
}
