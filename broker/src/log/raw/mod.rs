//! The only unsafe code of the log: the mapped ring's memory, and the publish / lease / reclaim
//! protocol that makes handing out views of it sound.
//!
//! Everything else in `log` is safe code built on the four types exported here:
//!
//! - [`Exclusive`]: the ring's memory before any reader exists (creation and recovery). It may
//!   view and write the whole data area, because nothing else can see it.
//! - [`WriteCursor`]: the single writer (DESIGN.md invariant 2). It may write only bytes that are
//!   in the chunk generation it has claimed and at or after the published end.
//! - [`RingCore`]: shared by the writer and every reader. Readers call [`RingCore::lease`] to get a
//!   [`Lease`]: a view of published bytes of one chunk generation that the writer cannot reclaim
//!   while the lease lives (invariant 3). A replicated partition's leader also reads what is
//!   written but not yet published (not yet committed) to send it to followers:
//!   [`RingCore::lease_written`] gives a *tail lease*, which also holds off a rewind (invariant 5).
//! - [`DirLock`] and [`RingFile`]: the data directory lock and the ring file, made or opened and
//!   checked only in `file`, the facts the mapping's proof rests on (one broker; only the
//!   broker's user can write the file; every byte allocated on disk).
//!
//! # Invariants
//!
//! 1. Positions count bytes of the unrolled ring: `position % capacity` is the byte's place in the
//!    data area and `position / chunk_size` its chunk generation.
//! 2. `published_end` only grows, and only the writer stores it, with release ordering, after the
//!    bytes below it are completely written. A reader views a range only after loading a
//!    `published_end` at or beyond its end with acquire ordering (invariant 2 of DESIGN.md).
//!    `written_end` (at or past `published_end`) is stored the same way by the writer alone, after
//!    the bytes below it are completely written; a tail lease views a range only after loading a
//!    `written_end` at or beyond its end with acquire ordering. On a single node the two are
//!    stored together; a replicated partition publishes (commits) later.
//! 3. The writer writes only `[written_end, end of claimed generation)`, so it never writes a
//!    byte a reader may view; it moves to a new generation only through
//!    [`chunks::ChunkTable::try_claim`], which waits for every lease on the generation it replaces.
//! 4. No reference to the whole mapping exists once the ring is shared ([`Exclusive`] is consumed
//!    by [`Exclusive::share_with`]); readers get references to leased, published ranges only, and the
//!    superblock bytes are written only under `superblock_lock` (readers never view them).
//! 5. `written_end` moves back (a rewind: an uncommitted tail that Raft truncates) only in
//!    [`WriteCursor::try_rewind`], never below `published_end`, and only while no tail lease is
//!    held: the writer sets `REWINDING` in the tail state, which refuses every new tail lease
//!    (they take their count by a compare-and-swap that sees the bit clear), and goes on only once
//!    it loads a count of zero with acquire ordering (every release of a tail lease has release
//!    ordering), so every read under a tail lease happens-before the writer's next write of the
//!    rewound range. It hands back the generations past the new end
//!    ([`chunks::ChunkTable::try_unclaim`], which waits for their chunk leases too), stores the
//!    lower `written_end` and then clears the bit with release ordering, so a tail lease taken
//!    after it loads the lower end or a later one. Consumer leases never reach past
//!    `published_end`, so a rewind never waits for them.

mod chunks;
mod file;
mod page;
mod region;

use std::fmt;
use std::io;
use std::sync::atomic::AtomicBool;
use std::sync::Mutex;

use chunks::ChunkTable;
pub(crate) use chunks::{Claim, LeaseRefused, GENERATION_MAX};

/// Tail state: set while the writer rewinds; no tail lease may start.
const REWINDING: u64 = 1 << 63;
/// Tail state: tail leases held.
const TAIL_READERS_MASK: u64 = REWINDING - 1;

/// Outcome of [`WriteCursor::try_rewind`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Rewind {
    /// The written end is at the new position; the writer may write from there.
    Done,
    /// Leases on the rewound range are still held; none can start. Try again shortly (nothing may
    /// be written until a retry returns `Done`).
    Busy {
        /// Leases still held.
        readers: u64,
    },
}
pub use file::RingFileError;
pub(crate) use file::{DirLock, RingFile};
use file::{LockShare, MappedFile, Registration};
pub(crate) use page::LocalPage;
use region::Region;
use ringmq_protocol::local::{self as local_read, PageLayout};

use crate::log::SyncMethod;
use crate::sync::{Arc, AtomicU64, Ordering};

/// Where things are in a ring file: the superblock area, then the data area of `capacity` bytes in
/// chunks of `chunk_size`. The fields are private and checked once, by [`Layout::new`]: every
/// proof below relies on them (a position maps into the data area through [`Layout::place`], and
/// a chunk never straddles the end of the ring).
///
/// # Invariants
///
/// 1. `chunk_size > 0` and `capacity` is a positive multiple of `chunk_size`.
/// 2. `data_start + capacity` fits `usize`: every place in the file is a valid `usize`.
/// 3. The chunk count is at most [`CHUNK_COUNT_MAX`], so a slot index fits `usize` and the
///    lease table stays small.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Layout {
    data_start: u64,
    capacity: u64,
    chunk_size: u64,
}

/// Most chunks a ring may have (bounds the lease table).
pub(crate) const CHUNK_COUNT_MAX: u64 = 1 << 16;

/// Why a ring geometry is inconsistent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum LayoutError {
    /// A zero capacity or chunk size.
    #[error("capacity ({capacity}) and chunk size ({chunk_size}) must be positive")]
    Empty {
        /// The capacity.
        capacity: u64,
        /// The chunk size.
        chunk_size: u64,
    },
    /// A capacity that is not a whole number of chunks.
    #[error("capacity {capacity} is not a multiple of the chunk size {chunk_size}")]
    Fraction {
        /// The capacity.
        capacity: u64,
        /// The chunk size.
        chunk_size: u64,
    },
    /// More chunks than the lease table holds.
    #[error("{count} chunks is more than the {CHUNK_COUNT_MAX} a ring may have")]
    TooManyChunks {
        /// The chunk count.
        count: u64,
    },
    /// A file too large to map on this platform.
    #[error("a ring file of {data_start} + {capacity} bytes is too large for this platform")]
    TooLarge {
        /// Bytes before the data area.
        data_start: u64,
        /// The capacity.
        capacity: u64,
    },
}

impl Layout {
    /// A layout, if the sizes are consistent (see the invariants).
    pub(crate) fn new(
        data_start: u64,
        capacity: u64,
        chunk_size: u64,
    ) -> Result<Self, LayoutError> {
        if chunk_size == 0 || capacity == 0 {
            return Err(LayoutError::Empty { capacity, chunk_size });
        }
        if !capacity.is_multiple_of(chunk_size) {
            return Err(LayoutError::Fraction { capacity, chunk_size });
        }
        let count = capacity / chunk_size;
        if count > CHUNK_COUNT_MAX {
            return Err(LayoutError::TooManyChunks { count });
        }
        let total = data_start.checked_add(capacity);
        if total.and_then(|total| usize::try_from(total).ok()).is_none() {
            return Err(LayoutError::TooLarge { data_start, capacity });
        }
        // INVARIANTS 1 to 3 hold from here.
        Ok(Self { data_start, capacity, chunk_size })
    }

    /// The geometry a cursor page states for this ring.
    pub(crate) fn page_layout(&self) -> PageLayout {
        PageLayout::new(self.data_start, self.capacity, self.chunk_size)
            .expect("a ring's layout is a valid page layout (word-aligned data start and chunks)")
    }

    /// Bytes in the data area; a multiple of the chunk size.
    pub(crate) fn capacity(&self) -> u64 {
        self.capacity
    }

    /// Bytes per chunk.
    pub(crate) fn chunk_size(&self) -> u64 {
        self.chunk_size
    }

    /// Total file size.
    pub(crate) fn file_size(&self) -> u64 {
        self.data_start + self.capacity
    }

    /// Number of chunk slots.
    pub(crate) fn chunk_count(&self) -> u64 {
        self.capacity / self.chunk_size
    }

    /// Chunk generation of a position.
    pub(crate) fn generation(&self, position: u64) -> u64 {
        position / self.chunk_size
    }

    /// First position of a generation.
    pub(crate) fn generation_start(&self, generation: u64) -> u64 {
        generation * self.chunk_size
    }

    /// The slot (chunk index in the data area) holding `generation`.
    pub(crate) fn slot(&self, generation: u64) -> usize {
        // Fits: the slot is below the chunk count, at most CHUNK_COUNT_MAX (invariant 3).
        usize::try_from(generation % self.chunk_count()).expect("slot fits usize (invariant 3)")
    }

    /// Where `position` lies in the data area (0 to capacity - 1).
    pub(crate) fn data_index(&self, position: u64) -> usize {
        // Fits: below `capacity`, and `data_start + capacity` fits usize (invariant 2).
        usize::try_from(position % self.capacity).expect("data index fits usize (invariant 2)")
    }

    /// Where slot `slot` starts in the data area.
    pub(crate) fn slot_start(&self, slot: usize) -> usize {
        assert!(slot < self.slot_count(), "slot {slot} is past the last chunk");
        slot * self.chunk_bytes()
    }

    /// Number of chunk slots, as a `usize` (invariant 3).
    pub(crate) fn slot_count(&self) -> usize {
        usize::try_from(self.chunk_count()).expect("the chunk count fits usize (invariant 3)")
    }

    /// The chunk size as a `usize` (a chunk lies in the data area, which fits; invariant 2).
    pub(crate) fn chunk_bytes(&self) -> usize {
        usize::try_from(self.chunk_size).expect("a chunk fits usize (invariant 2)")
    }

    /// The superblock area's size as a `usize`.
    pub(crate) fn data_start_bytes(&self) -> usize {
        usize::try_from(self.data_start).expect("the superblock area fits usize (invariant 2)")
    }

    /// The whole file's size as a `usize`.
    fn file_bytes(&self) -> usize {
        usize::try_from(self.file_size()).expect("the file fits usize (invariant 2)")
    }

    /// A size that `one_chunk` has checked lies within a chunk, as a `usize`.
    fn within_chunk(&self, size: u64) -> usize {
        assert!(size <= self.chunk_size, "{size} bytes do not fit in a chunk");
        usize::try_from(size).expect("a chunk fits usize (invariant 2)")
    }

    /// Offset in the region (the file) of a position.
    fn place(&self, position: u64) -> usize {
        self.data_start_bytes() + self.data_index(position)
    }

    /// Checks `position .. position + size` lies in one chunk and returns its generation.
    fn one_chunk(&self, position: u64, size: u64) -> u64 {
        let generation = self.generation(position);
        let end = position.checked_add(size).expect("position range fits u64");
        assert!(
            end <= self.generation_start(generation) + self.chunk_size,
            "range {position}..{end} crosses the end of chunk generation {generation}"
        );
        generation
    }
}

/// A ring's memory before it is shared: creation and recovery have it to themselves.
#[derive(Debug)]
pub(crate) struct Exclusive {
    /// Declared before `region` and `lock` after it: see [`file::Registration`].
    entry: Option<MappedFile>,
    region: Region,
    layout: Layout,
    lock: Option<LockShare>,
    /// The ring's incarnation word, once [`Exclusive::begin_incarnation`] stepped it: its file
    /// offset and the value this broker wrote.
    incarnation: Option<(u64, u64)>,
}

impl Exclusive {
    /// Maps `file`, which must be exactly `layout.file_size()` bytes, inside `lock`'s directory,
    /// and not mapped already by this process. With `populate`, page tables are filled up front.
    pub(crate) fn map(
        file: &RingFile,
        layout: Layout,
        lock: &DirLock,
        populate: bool,
    ) -> Result<Self, RingFileError> {
        let found = file.size()?;
        if found != layout.file_size() {
            return Err(RingFileError::WrongSize { found, expected: layout.file_size() });
        }
        let Registration { entry, lock: share } = lock.register(file)?;
        // Fact 1 of `file`'s module docs: `lock` holds the data directory's lock, `share` (kept
        // beside the region until it is unmapped) keeps that lock held, and `register` proved
        // the file lies in the directory and is mapped nowhere else in this process, so no other
        // broker and no second writer or lease table maps it. Fact 2: `RingFile::create` or
        // `RingFile::open` checked, on this descriptor, that the file is regular, has one link,
        // is this user's and writable by no one else. Fact 3: it was allocated in full, and
        // nothing in this crate resizes a ring file.
        // SAFETY: facts 1 to 3 above hold, so nothing else writes, truncates or maps the file
        // while the region lives; the length is the file's (checked above).
        let region = unsafe { Region::map(file.file(), 0, layout.file_bytes(), populate) }
            .map_err(|source| RingFileError::Io { action: "map", source })?;
        Ok(Self { entry: Some(entry), region, layout, lock: Some(share), incarnation: None })
    }

    /// Whether the memory is the heap's (tests, Miri), not a file's.
    pub(crate) fn is_heap(&self) -> bool {
        self.entry.is_none() && self.region.is_heap()
    }

    /// Heap memory laid out like a ring file, for tests and Miri.
    pub(crate) fn heap(layout: Layout) -> Self {
        Self {
            entry: None,
            region: Region::heap(layout.file_bytes()),
            layout,
            lock: None,
            incarnation: None,
        }
    }

    /// Increments the ring's incarnation word, the little-endian `u64` at file offset `at` (in
    /// the superblock area), then issues a sequentially consistent fence: call it before any
    /// other byte of the file is written. A same-host reader still on the cursor page of the
    /// broker that had the ring before checks its copies against the word and so never takes a
    /// byte written after this for one of the old broker's ([`ringmq_protocol::local`], "A broker
    /// that dies"). The new value is kept for this broker's page ([`Exclusive::share_with`]).
    pub(crate) fn begin_incarnation(&mut self, at: usize) {
        let end = at.checked_add(8).expect("the incarnation word's range fits usize");
        assert!(
            at.is_multiple_of(8) && end <= self.layout.data_start_bytes(),
            "the incarnation word is an aligned word of the superblock area"
        );
        let word = &mut self.file_mut()[at..end];
        let mut bytes = [0u8; 8];
        bytes.copy_from_slice(word);
        let value = u64::from_le_bytes(bytes).wrapping_add(1);
        word.copy_from_slice(&value.to_le_bytes());
        // Orders the new incarnation before every later write to the file, in the other
        // processes' view too (the readers' fence pairs with this one).
        std::sync::atomic::fence(std::sync::atomic::Ordering::SeqCst);
        self.incarnation = Some((u64::try_from(at).expect("usize fits u64"), value));
    }

    /// The layout.
    pub(crate) fn layout(&self) -> &Layout {
        &self.layout
    }

    /// The whole file: superblocks then the data area.
    pub(crate) fn file(&self) -> &[u8] {
        // SAFETY: `Exclusive` is the region's only owner and is not shared; writes need
        // `&mut self`, so nothing writes while this borrow lives.
        unsafe { self.region.slice(0, self.region.len()) }
    }

    /// The whole file, writable.
    pub(crate) fn file_mut(&mut self) -> &mut [u8] {
        // SAFETY: `&mut self` on the region's only owner: no other reference exists.
        unsafe { self.region.slice_mut(0, self.region.len()) }
    }

    /// Writes the whole file to disk (`msync`).
    pub(crate) fn flush_all(&self) -> io::Result<()> {
        self.region.flush(0, self.region.len())
    }

    /// Writes `at..at + size` of the file to disk (`msync`).
    pub(crate) fn flush(&self, at: usize, size: usize) -> io::Result<()> {
        self.region.flush(at, size)
    }

    /// Pre-faults `at..at + size` of the file for writing; see
    /// [`Region::advise_populate_write`].
    pub(crate) fn advise_populate_write(&self, at: usize, size: usize) -> io::Result<()> {
        self.region.advise_populate_write(at, size)
    }

    /// Shares the ring: readers may now lease published bytes below `published_end`.
    ///
    /// `next_generation` is the next chunk generation the writer will claim and `claimed` the one
    /// it holds. Every slot's lease state follows from `next_generation` alone: a slot holds the
    /// generation the writer will replace when it next claims that slot (see
    /// [`slot_generation`]), so a reader can never lease a generation whose bytes the writer may
    /// still write.
    #[cfg(test)]
    pub(crate) fn share(
        self,
        published_end: u64,
        claimed: Option<u64>,
        next_generation: u64,
    ) -> (Arc<RingCore>, WriteCursor) {
        self.share_with(published_end, published_end, claimed, next_generation, None)
    }

    /// `Exclusive::share` (tests only) with a written end past the published one (a replicated
    /// partition's uncommitted tail), keeping `page` (when there is one) in step with the ring for
    /// same-host readers from the first claim on.
    pub(crate) fn share_with(
        self,
        published_end: u64,
        written_end: u64,
        claimed: Option<u64>,
        next_generation: u64,
        page: Option<LocalPage>,
    ) -> (Arc<RingCore>, WriteCursor) {
        let layout = self.layout;
        assert!(
            next_generation + layout.chunk_count() <= GENERATION_MAX,
            "chunk generation {next_generation} is beyond the lease table's range"
        );
        assert!(published_end <= written_end, "the published end is at most the written end");
        assert!(
            written_end - published_end <= layout.capacity(),
            "the unpublished tail is at most one ring"
        );
        match claimed {
            None => assert_eq!(
                (published_end, written_end),
                (
                    layout.generation_start(next_generation),
                    layout.generation_start(next_generation)
                ),
                "an idle writer's ends are the start of the next chunk"
            ),
            Some(generation) => {
                assert_eq!(generation + 1, next_generation, "claimed generation precedes the next");
                assert!(
                    layout.generation_start(generation) <= written_end
                        && written_end <= layout.generation_start(next_generation),
                    "written end {written_end} outside the claimed chunk {generation}"
                );
            }
        }
        let chunks = ChunkTable::new(layout.slot_count(), |slot| {
            slot_generation(&layout, next_generation, slot)
        });
        let incarnation = self.incarnation;
        let local = page.map(|page| {
            let (at, value) =
                incarnation.expect("a ring shared with local readers stepped its incarnation");
            let page_layout = layout
                .page_layout()
                .with_incarnation(at, value)
                .expect("the incarnation word lies before the data area");
            local_read::init_page(page.words(), &page_layout, published_end, |slot| {
                usize::try_from(slot)
                    .ok()
                    .and_then(|slot| slot_generation(&layout, next_generation, slot))
            });
            Local { page, layout: page_layout }
        });
        let core = Arc::new(RingCore {
            _entry: self.entry,
            region: self.region,
            layout,
            published_end: AtomicU64::new(published_end),
            written_end: AtomicU64::new(written_end),
            tail: AtomicU64::new(0),
            chunks,
            superblock_lock: Mutex::new(()),
            fail_flush: AtomicBool::new(false),
            local,
            _lock: self.lock,
        });
        let cursor = WriteCursor {
            core: Arc::clone(&core),
            claimed,
            next_generation,
            published: published_end,
            written: written_end,
            rewind_pending: false,
        };
        (core, cursor)
    }
}

/// The generation chunk slot `slot` holds when the writer's next claim is `next_generation`: the
/// one the writer replaces when it next claims the slot, `None` if that is on the first lap. The
/// claimed chunk's slot therefore holds the claimed generation itself, and every retained chunk's
/// slot its own generation.
pub(crate) fn slot_generation(layout: &Layout, next_generation: u64, slot: usize) -> Option<u64> {
    let count = layout.chunk_count();
    let slot = u64::try_from(slot).expect("a slot index fits u64");
    assert!(slot < count, "slot {slot} is past the last chunk");
    let upcoming = next_generation + (slot + count - next_generation % count) % count;
    upcoming.checked_sub(count)
}

/// The shared ring: its memory, the published end and the lease table.
#[derive(Debug)]
pub(crate) struct RingCore {
    /// Declared before `region` and `_lock` after it: see [`file::Registration`].
    _entry: Option<MappedFile>,
    region: Region,
    layout: Layout,
    published_end: AtomicU64,
    written_end: AtomicU64,
    /// `REWINDING` and the count of tail leases (invariant 5).
    tail: AtomicU64,
    chunks: ChunkTable,
    superblock_lock: Mutex<()>,
    fail_flush: AtomicBool,
    /// The cursor page of same-host readers, when they are served.
    local: Option<Local>,
    _lock: Option<LockShare>,
}

/// A ring's cursor page and the geometry it states.
#[derive(Debug)]
struct Local {
    page: LocalPage,
    layout: PageLayout,
}

impl Drop for RingCore {
    fn drop(&mut self) {
        // Readers still mapping the page learn that it will not move again.
        if let Some(local) = &self.local {
            local_read::note_closed(local.page.words());
        }
    }
}

/// What a same-host reader maps: the ring file, read-only, and its cursor page.
#[derive(Debug)]
pub struct LocalFiles {
    /// The ring file, opened read-only.
    pub ring: std::os::fd::OwnedFd,
    /// The cursor page (a sealed memfd, which can be mapped read-only only).
    pub page: std::os::fd::OwnedFd,
}

/// Why [`RingCore::lease`] gave no lease.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LeaseError {
    /// The chunk generation was reclaimed (or is being reclaimed).
    Reclaimed,
    /// The position is not published yet.
    NotPublished,
    /// Too many concurrent leases on the chunk.
    TooManyReaders,
    /// The writer is rewinding the unpublished tail (tail leases only); ask again later.
    Rewinding,
}

impl RingCore {
    /// The layout.
    pub(crate) fn layout(&self) -> &Layout {
        &self.layout
    }

    /// The position below which every byte is completely written (acquire).
    pub(crate) fn published_end(&self) -> u64 {
        self.published_end.load(Ordering::Acquire)
    }

    /// The position below which every byte is completely written, published or not (acquire).
    pub(crate) fn written_end(&self) -> u64 {
        self.written_end.load(Ordering::Acquire)
    }

    /// Descriptors for a same-host reader: `None` if this ring keeps no cursor page.
    pub(crate) fn local_files(&self) -> Option<io::Result<LocalFiles>> {
        let local = self.local.as_ref()?;
        Some((|| {
            Ok(LocalFiles { ring: self.region.reopen_read_only()?, page: local.page.reader_fd()? })
        })())
    }

    /// Leases the published bytes of `position`'s chunk from `position` on: up to the chunk's end
    /// or the published end, whichever comes first.
    pub(crate) fn lease(core: &Arc<Self>, position: u64) -> Result<Lease, LeaseError> {
        let generation = core.layout.generation(position);
        core.chunks.try_lease(generation).map_err(|refused| match refused {
            LeaseRefused::Reclaimed => LeaseError::Reclaimed,
            LeaseRefused::TooManyReaders => LeaseError::TooManyReaders,
        })?;
        // From here the lease is held; dropping `lease` releases it on every path.
        let mut lease = Lease {
            core: Arc::clone(core),
            tagged_generation: generation,
            start: position,
            end: position,
        };
        // Invariant 2: acquire pairs with the writer's release in `WriteCursor::publish`.
        let published = core.published_end();
        let chunk_end = core.layout.generation_start(generation + 1);
        let end = published.min(chunk_end);
        if end <= position {
            return Err(LeaseError::NotPublished);
        }
        lease.end = end;
        Ok(lease)
    }

    /// A tail lease: the written bytes of `position`'s chunk from `position` on, published or not
    /// (up to the chunk's end or the written end). Besides the chunk, it holds off a rewind of the
    /// writer (invariant 5), so it must be short: a replicated partition's leader takes one to
    /// send uncommitted batches to a follower.
    pub(crate) fn lease_written(core: &Arc<Self>, position: u64) -> Result<Lease, LeaseError> {
        let mut current = core.tail.load(Ordering::Relaxed);
        loop {
            if current & REWINDING != 0 {
                return Err(LeaseError::Rewinding);
            }
            if current & TAIL_READERS_MASK == TAIL_READERS_MASK {
                return Err(LeaseError::TooManyReaders);
            }
            // INVARIANT 5: taken only by a CAS that sees `REWINDING` clear; acquire pairs with
            // the release that cleared it, so the written end loaded below is the rewound one
            // or later.
            match core.tail.compare_exchange_weak(
                current,
                current + 1,
                Ordering::Acquire,
                Ordering::Relaxed,
            ) {
                Ok(_) => break,
                Err(actual) => current = actual,
            }
        }
        let generation = core.layout.generation(position);
        if let Err(refused) = core.chunks.try_lease(generation) {
            core.tail.fetch_sub(1, Ordering::Release);
            return Err(match refused {
                LeaseRefused::Reclaimed => LeaseError::Reclaimed,
                LeaseRefused::TooManyReaders => LeaseError::TooManyReaders,
            });
        }
        // From here both counts are held; dropping `lease` releases them on every path.
        let mut lease = Lease {
            core: Arc::clone(core),
            tagged_generation: generation | TAIL_LEASE,
            start: position,
            end: position,
        };
        // Invariant 2: acquire pairs with the writer's release in `WriteCursor::mark_written`.
        let written = core.written_end();
        let end = written.min(core.layout.generation_start(generation + 1));
        if end <= position {
            return Err(LeaseError::NotPublished);
        }
        lease.end = end;
        Ok(lease)
    }

    /// Writes the data area between positions `start` and `end` to disk, as `method` says.
    /// A range longer than the ring syncs the whole data area.
    pub(crate) fn flush_data(&self, start: u64, end: u64, method: SyncMethod) -> io::Result<()> {
        if self.fail_flush.load(Ordering::Relaxed) {
            return Err(io::Error::other("injected msync failure"));
        }
        if end <= start {
            return Ok(());
        }
        let pieces = self.data_pieces(start, end);
        match method {
            SyncMethod::Msync => {
                for (at, size) in pieces {
                    self.region.flush(at, size)?;
                }
                Ok(())
            }
            // One call writes the whole file, both pieces included.
            SyncMethod::Fdatasync => self.region.sync_file_data(),
            SyncMethod::RangeFdatasync => {
                for (at, size) in pieces {
                    self.region.write_back(at, size)?;
                }
                // Then the device's cache and the metadata, once for both pieces.
                self.region.sync_file_data()
            }
        }
    }

    /// The file ranges (offset, length) that hold positions `start..end` of the data area: one,
    /// or two where the range wraps (the second then empty or not); the whole data area for a
    /// range longer than the ring.
    fn data_pieces(&self, start: u64, end: u64) -> [(usize, usize); 2] {
        let layout = &self.layout;
        let data_start = layout.data_start_bytes();
        let capacity = layout.file_bytes() - data_start;
        if end - start >= layout.capacity() {
            return [(data_start, capacity), (data_start, 0)];
        }
        let first = layout.place(start);
        // Below the capacity (checked above), which fits usize.
        let length = usize::try_from(end - start).expect("a sync range below the capacity");
        let to_wrap = data_start + capacity - first;
        if length <= to_wrap {
            [(first, length), (data_start, 0)]
        } else {
            [(first, to_wrap), (data_start, length - to_wrap)]
        }
    }

    /// Writes back positions `start..end` without flushing the device (the first step of
    /// `range+fdatasync`), for tests that check which pages it cleans.
    #[cfg(test)]
    pub(crate) fn write_back_data(&self, start: u64, end: u64) -> io::Result<()> {
        for (at, size) in self.data_pieces(start, end) {
            self.region.write_back(at, size)?;
        }
        Ok(())
    }

    /// Writes `bytes` at `at` in the superblock area (before the data area) and syncs them.
    pub(crate) fn write_superblock(&self, at: usize, bytes: &[u8]) -> io::Result<()> {
        let end = at.checked_add(bytes.len()).expect("superblock range fits usize");
        assert!(end <= self.layout.data_start_bytes(), "superblock write past the superblock area");
        if self.fail_flush.load(Ordering::Relaxed) {
            return Err(io::Error::other("injected msync failure"));
        }
        let _guard = self.superblock_lock.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        // SAFETY: the superblock area lies before `data_start` (asserted above); readers and the
        // write cursor only touch the data area (invariant 4), and `superblock_lock` serialises
        // every superblock write, so this range has no other accessor.
        unsafe { self.region.write(at, bytes) };
        self.region.flush(at, bytes.len())
    }

    /// Makes every later flush fail, as a failing disk would (for tests of poisoning).
    pub(crate) fn inject_flush_failure(&self, fail: bool) {
        self.fail_flush.store(fail, Ordering::Relaxed);
    }

    /// Leases currently held on a generation.
    #[cfg(all(test, broker_loom))]
    pub(crate) fn readers(&self, generation: u64) -> u64 {
        self.chunks.readers(generation)
    }

    /// Tail leases currently held.
    #[cfg(test)]
    pub(crate) fn tail_readers(&self) -> u64 {
        self.tail.load(Ordering::Acquire) & TAIL_READERS_MASK
    }
}

/// A read lease: a view of published bytes of one chunk generation, which the writer will not
/// reclaim until the lease is dropped. Soundness holds however long it lives (the writer waits);
/// the writer's progress needs it short, so the log hands it out only inside a `LogBytes`, held
/// for one response write (see `log::reader`).
pub(crate) struct Lease {
    core: Arc<RingCore>,
    /// The chunk's generation, with [`TAIL_LEASE`] set for a tail lease
    /// ([`RingCore::lease_written`], counted in the tail state too). One word rather than a
    /// separate flag: a lease of four words is what every consumer read moves around, and a fifth
    /// measurably slows the read path (criterion `ring/read`).
    tagged_generation: u64,
    start: u64,
    end: u64,
}

/// Set in [`Lease::tagged_generation`] for a tail lease; generations stay below it
/// (`GENERATION_MAX`).
const TAIL_LEASE: u64 = 1 << 63;
const _: () = assert!(GENERATION_MAX < TAIL_LEASE);

impl fmt::Debug for Lease {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Lease")
            .field("generation", &self.generation())
            .field("start", &self.start)
            .field("end", &self.end)
            .field("tail", &self.is_tail())
            .finish()
    }
}

impl Lease {
    fn generation(&self) -> u64 {
        self.tagged_generation & !TAIL_LEASE
    }

    fn is_tail(&self) -> bool {
        self.tagged_generation & TAIL_LEASE != 0
    }

    /// The leased bytes.
    pub(crate) fn bytes(&self) -> &[u8] {
        let size = self.end - self.start;
        let layout = self.core.layout;
        layout.one_chunk(self.start, size);
        // SAFETY: `start..end` lies in one chunk (checked above), below a published (for a tail
        // lease, written) end loaded with acquire after the lease was taken, so every byte is
        // written and stays unwritten while the lease holds: the writer writes only at or past its
        // written end (invariant 3), which moves below a tail lease's end only once every tail
        // lease is released (invariant 5), and it cannot claim or unclaim this chunk's slot
        // until our lease is released (chunk invariant 2).
        unsafe { self.core.region.slice(layout.place(self.start), layout.within_chunk(size)) }
    }
}

impl AsRef<[u8]> for Lease {
    fn as_ref(&self) -> &[u8] {
        self.bytes()
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.core.chunks.release(self.generation());
        if self.is_tail() {
            // INVARIANT 5: release pairs with the rewind's acquire of a zero count.
            let previous = self.core.tail.fetch_sub(1, Ordering::Release);
            assert!(previous & TAIL_READERS_MASK > 0, "tail lease released twice");
        }
    }
}

/// The ring's single writer.
#[derive(Debug)]
pub(crate) struct WriteCursor {
    core: Arc<RingCore>,
    claimed: Option<u64>,
    next_generation: u64,
    published: u64,
    written: u64,
    /// A rewind returned `Busy`: nothing may be written until it is done.
    rewind_pending: bool,
}

impl WriteCursor {
    /// The shared ring.
    pub(crate) fn core(&self) -> &Arc<RingCore> {
        &self.core
    }

    /// The generation the writer may write, if it holds one.
    pub(crate) fn claimed(&self) -> Option<u64> {
        self.claimed
    }

    /// Claims the next generation; see [`Claim`]. On `Busy` nothing changes and the claim may be
    /// retried. The writer must have written up to the end of the chunk it holds.
    pub(crate) fn try_claim(&mut self) -> Claim {
        assert!(!self.rewind_pending, "claim during a rewind");
        let generation = self.next_generation;
        if let Some(held) = self.claimed {
            assert_eq!(
                self.written,
                self.core.layout.generation_start(held + 1),
                "claim before the held chunk is written to its end"
            );
        }
        let claim = self.core.chunks.try_claim(generation);
        if claim == Claim::Claimed {
            if let Some(local) = &self.core.local {
                // Before the first byte of the generation: same-host readers of the slot's old
                // generation see their copies fail (the page's protocol, writer step 1).
                local_read::note_claim(local.page.words(), &local.layout, generation);
            }
            // INVARIANT 3: from here the writer may write this generation's bytes.
            self.claimed = Some(generation);
            self.next_generation = generation + 1;
        }
        claim
    }

    /// Checks the writer may write `position .. position + size` and returns its region place.
    fn writable(&self, position: u64, size: u64) -> usize {
        let layout = self.core.layout;
        assert!(!self.rewind_pending, "write during a rewind");
        let generation = layout.one_chunk(position, size);
        assert_eq!(Some(generation), self.claimed, "write outside the claimed chunk");
        assert!(position >= self.written, "write below the written end {}", self.written);
        layout.place(position)
    }

    /// Copies `bytes` to `position`.
    pub(crate) fn write(&mut self, position: u64, bytes: &[u8]) {
        let size = u64::try_from(bytes.len()).expect("a slice length fits u64");
        let place = self.writable(position, size);
        // SAFETY: `writable` checked the range is in the claimed generation and at or past the
        // written end, which no reader may view and no lease covers (invariants 3 and 5);
        // `&mut self` on the single cursor excludes other writers.
        unsafe { self.core.region.write(place, bytes) };
    }

    /// An exclusive view of unpublished bytes at `position`, for stamping fields in place.
    pub(crate) fn bytes_mut(&mut self, position: u64, size: u64) -> &mut [u8] {
        let place = self.writable(position, size);
        // SAFETY: as for `write`; the borrow of `self` keeps any other write from overlapping.
        unsafe { self.core.region.slice_mut(place, self.core.layout.within_chunk(size)) }
    }

    /// The written end: where the next write may start.
    pub(crate) fn written(&self) -> u64 {
        self.written
    }

    /// The published end.
    pub(crate) fn published(&self) -> u64 {
        self.published
    }

    /// Every byte below `end` (in the claimed chunk) is written: tail leases may view it (release).
    pub(crate) fn mark_written(&mut self, end: u64) {
        assert!(!self.rewind_pending, "write during a rewind");
        let generation = self.claimed.expect("mark written with a claimed chunk");
        assert!(end >= self.written, "written end moves backwards outside a rewind");
        assert!(
            end <= self.core.layout.generation_start(generation + 1),
            "written past the claimed chunk"
        );
        self.written = end;
        // INVARIANT 2: release pairs with the acquire in `RingCore::lease_written`.
        self.core.written_end.store(end, Ordering::Release);
    }

    /// Publishes every byte below `end` to readers (release), marking it written first if it is
    /// not yet (the single-node path writes and publishes together).
    pub(crate) fn publish(&mut self, end: u64) {
        assert!(!self.rewind_pending, "publish during a rewind");
        assert!(end >= self.published, "published end moves backwards");
        if end > self.written {
            self.mark_written(end);
        }
        self.published = end;
        // INVARIANT 2: release pairs with the acquire in `RingCore::lease`.
        self.core.published_end.store(end, Ordering::Release);
        if let Some(local) = &self.core.local {
            local_read::note_published(local.page.words(), end);
        }
    }

    /// Moves the written end back to `to` (at or past the published end): the bytes from `to` on
    /// are no longer the log's and will be written again. Generations past the one holding the
    /// byte before `to` are handed back, zeroed in full (so nothing of them can be recovered as
    /// log), and the writer claims them again in order; the rest of the chunk holding `to` is the
    /// caller's to clean (it may hold the chunk's own framing). `Busy` while
    /// a lease on the range is held (no new one can start); retry until `Done`, writing nothing
    /// in between (invariant 5).
    pub(crate) fn try_rewind(&mut self, to: u64) -> Rewind {
        assert!(to >= self.published, "rewind below the published end {}", self.published);
        assert!(to <= self.written, "rewind forward, to {to} past {}", self.written);
        self.rewind_pending = true;
        // INVARIANT 5: no tail lease starts from here; acquire pairs with their releases.
        let previous = self.core.tail.fetch_or(REWINDING, Ordering::AcqRel);
        let readers = previous & TAIL_READERS_MASK;
        if readers > 0 {
            return Rewind::Busy { readers };
        }
        let layout = self.core.layout;
        // The generation that keeps the byte before `to`; those after it are handed back.
        let keep = to.checked_sub(1).map(|last| layout.generation(last));
        while let Some(held) = self.claimed.filter(|&held| Some(held) != keep) {
            match self.core.chunks.try_unclaim(held) {
                Claim::Claimed => {
                    let start = layout.place(layout.generation_start(held));
                    // SAFETY: the slot's tag moved from `held` with no lease held (chunk
                    // invariant 2) to the replaced generation being reclaimed, so no lease of
                    // either can view it; no tail lease exists either (`REWINDING`, invariant 5);
                    // and `&mut self` on the single cursor excludes other writers.
                    unsafe { self.core.region.slice_mut(start, layout.chunk_bytes()) }.fill(0);
                    self.claimed = held.checked_sub(1);
                    self.next_generation = held;
                }
                Claim::Busy { readers } => return Rewind::Busy { readers },
            }
        }
        self.written = to;
        self.core.written_end.store(to, Ordering::Release);
        // INVARIANT 5: release orders the lower end before any tail lease taken after this.
        self.core.tail.fetch_and(!REWINDING, Ordering::Release);
        self.rewind_pending = false;
        Rewind::Done
    }
}

#[cfg(test)]
#[cfg(not(broker_loom))]
mod tests {
    use super::*;

    fn small() -> (Arc<RingCore>, WriteCursor) {
        let layout = Layout::new(64, 256, 64).unwrap();
        Exclusive::heap(layout).share(0, None, 0)
    }

    /// Every consumer read moves leases around; a fifth word cost a third more per read (criterion
    /// `ring/read/1KiB`, 62 against 95 ns), so the tail flag lives in the generation word.
    #[test]
    fn a_lease_is_four_words() {
        assert_eq!(std::mem::size_of::<Lease>(), 4 * std::mem::size_of::<u64>());
        let (core, mut cursor) = small();
        assert_eq!(cursor.try_claim(), Claim::Claimed);
        cursor.write(0, &[1; 8]);
        cursor.publish(8);
        let plain = RingCore::lease(&core, 0).unwrap();
        let tail = RingCore::lease_written(&core, 0).unwrap();
        assert!(!plain.is_tail() && tail.is_tail());
        assert_eq!((plain.generation(), tail.generation()), (0, 0));
        drop((plain, tail));
        assert_eq!((core.tail_readers(), core.chunks.readers(0)), (0, 0));
    }

    #[test]
    fn layout_rejects_inconsistent_sizes() {
        assert!(Layout::new(0, 100, 64).is_err());
        assert!(Layout::new(0, 0, 64).is_err());
        assert!(Layout::new(u64::MAX, 64, 64).is_err());
        let layout = Layout::new(4096, 1 << 20, 1 << 16).unwrap();
        assert_eq!((layout.chunk_count(), layout.file_size()), (16, 4096 + (1 << 20)));
        assert_eq!(layout.place(1 << 20), 4096);
    }

    #[test]
    fn readers_see_only_published_bytes() {
        let (core, mut writer) = small();
        assert_eq!(RingCore::lease(&core, 0).unwrap_err(), LeaseError::Reclaimed);
        assert_eq!(writer.try_claim(), Claim::Claimed);
        assert_eq!(RingCore::lease(&core, 0).unwrap_err(), LeaseError::NotPublished);
        writer.write(0, &[1; 10]);
        writer.publish(10);
        let lease = RingCore::lease(&core, 0).unwrap();
        assert_eq!(lease.bytes(), &[1; 10]);
        writer.write(10, &[2; 5]);
        assert_eq!(lease.bytes().len(), 10, "a lease never grows past what was published");
        writer.publish(15);
        assert_eq!(RingCore::lease(&core, 4).unwrap().bytes(), &[1, 1, 1, 1, 1, 1, 2, 2, 2, 2, 2]);
    }

    #[test]
    #[should_panic(expected = "below the written end")]
    fn writer_cannot_touch_published_bytes() {
        let (_core, mut writer) = small();
        let _ = writer.try_claim();
        writer.write(0, &[1; 8]);
        writer.publish(8);
        writer.write(4, &[0; 2]);
    }

    #[test]
    #[should_panic(expected = "crosses the end")]
    fn writes_never_straddle_a_chunk() {
        let (_core, mut writer) = small();
        let _ = writer.try_claim();
        writer.write(60, &[1; 8]);
    }

    #[test]
    fn lease_holds_off_reclamation_until_dropped() {
        let (core, mut writer) = small();
        for generation in 0..4u64 {
            assert_eq!(writer.try_claim(), Claim::Claimed);
            let start = generation * 64;
            writer.write(start, &[generation as u8 + 1; 64]);
            writer.publish(start + 64);
        }
        let lease = RingCore::lease(&core, 10).unwrap();
        assert_eq!(lease.bytes(), &[1; 54]);
        assert_eq!(writer.try_claim(), Claim::Busy { readers: 1 });
        assert_eq!(
            RingCore::lease(&core, 0).unwrap_err(),
            LeaseError::Reclaimed,
            "no new lease while reclaiming"
        );
        let view = bytes::Bytes::from_owner(lease).slice(4..8);
        assert_eq!(&view[..], &[1; 4]);
        assert_eq!(writer.try_claim(), Claim::Busy { readers: 1 });
        drop(view);
        assert_eq!(writer.try_claim(), Claim::Claimed);
        writer.write(256, &[9; 4]);
        writer.publish(260);
        assert_eq!(RingCore::lease(&core, 256).unwrap().bytes(), &[9; 4]);
        assert_eq!(RingCore::lease(&core, 0).unwrap_err(), LeaseError::Reclaimed);
    }

    /// A ring shared after recovery, with the writer inside chunk 5 of a 4-chunk ring: the slot
    /// of chunk 5 must not lease the lap-old chunk 1 whose bytes the writer is overwriting.
    #[test]
    fn a_recovered_ring_never_leases_the_chunk_its_writer_holds_the_slot_of() {
        let layout = Layout::new(64, 256, 64).unwrap();
        let (core, mut writer) = Exclusive::heap(layout).share(5 * 64 + 10, Some(5), 6);
        assert_eq!(RingCore::lease(&core, 64).unwrap_err(), LeaseError::Reclaimed);
        assert_eq!(RingCore::lease(&core, 5 * 64).unwrap().bytes().len(), 10);
        for generation in 2..=4 {
            assert!(RingCore::lease(&core, generation * 64).is_ok(), "retained chunk {generation}");
        }
        writer.write(5 * 64 + 10, &[1; 4]);
        writer.publish(5 * 64 + 14);
        assert_eq!(slot_generation(&layout, 6, 1), Some(5));
        assert_eq!(slot_generation(&layout, 6, 2), Some(2));
        assert_eq!(slot_generation(&layout, 2, 3), None, "first lap");
    }

    #[test]
    fn tail_leases_see_written_bytes_and_readers_only_published_ones() {
        let (core, mut writer) = small();
        assert_eq!(writer.try_claim(), Claim::Claimed);
        writer.write(0, &[1; 10]);
        writer.mark_written(10);
        assert_eq!(RingCore::lease(&core, 0).unwrap_err(), LeaseError::NotPublished);
        assert_eq!(RingCore::lease_written(&core, 0).unwrap().bytes(), &[1; 10]);
        writer.publish(4);
        assert_eq!(RingCore::lease(&core, 0).unwrap().bytes(), &[1; 4]);
        assert_eq!(core.tail_readers(), 0, "every tail lease was released");
        writer.write(10, &[2; 2]);
        writer.publish(12);
        assert_eq!((core.written_end(), core.published_end()), (12, 12));
    }

    #[test]
    fn a_rewind_waits_for_tail_leases_and_refuses_new_ones() {
        let (core, mut writer) = small();
        assert_eq!(writer.try_claim(), Claim::Claimed);
        writer.write(0, &[1; 20]);
        writer.publish(8);
        writer.mark_written(20);
        let tail = RingCore::lease_written(&core, 8).unwrap();
        let reader = RingCore::lease(&core, 0).unwrap();
        assert_eq!(writer.try_rewind(12), Rewind::Busy { readers: 1 });
        assert_eq!(RingCore::lease_written(&core, 8).unwrap_err(), LeaseError::Rewinding);
        assert_eq!(tail.bytes(), &[1; 12]);
        drop(tail);
        // A reader of published bytes does not hold a rewind up.
        assert_eq!(writer.try_rewind(12), Rewind::Done);
        assert_eq!(core.written_end(), 12);
        writer.write(12, &[3; 4]);
        writer.mark_written(16);
        assert_eq!(
            RingCore::lease_written(&core, 10).unwrap().bytes(),
            &[1, 1, 3, 3, 3, 3],
            "the rewound range is written anew"
        );
        assert_eq!(reader.bytes(), &[1; 8]);
    }

    #[test]
    fn a_rewind_across_chunks_hands_the_later_ones_back() {
        let (core, mut writer) = small();
        for generation in 0..3u64 {
            assert_eq!(writer.try_claim(), Claim::Claimed);
            writer.write(generation * 64, &[generation as u8 + 1; 64]);
            writer.mark_written(generation * 64 + 64);
        }
        writer.publish(40);
        let transient = RingCore::lease(&core, 64);
        assert_eq!(transient.unwrap_err(), LeaseError::NotPublished);
        assert_eq!(writer.try_rewind(50), Rewind::Done);
        assert_eq!((writer.claimed(), writer.written()), (Some(0), 50));
        let layout = *core.layout();
        // SAFETY: the chunks are handed back, so no lease views them, and the writer is not
        // writing (this thread owns it); the view ends before the next write.
        let data = unsafe { core.region.slice(layout.place(64), 128) };
        assert!(data.iter().all(|&byte| byte == 0), "the handed-back chunks are zeroed");
        for position in [64, 128] {
            assert_eq!(
                RingCore::lease_written(&core, position).unwrap_err(),
                LeaseError::Reclaimed
            );
        }
        writer.write(50, &[7; 14]);
        writer.mark_written(64);
        assert_eq!(writer.try_claim(), Claim::Claimed, "chunk 1 is claimed again, in order");
        writer.write(64, &[8; 4]);
        writer.publish(68);
        assert_eq!(RingCore::lease(&core, 64).unwrap().bytes(), &[8; 4]);
        // Back to the very start: every generation is handed back.
        let (core, mut writer) = small();
        assert_eq!(writer.try_claim(), Claim::Claimed);
        writer.write(0, &[1; 64]);
        writer.mark_written(64);
        assert_eq!(writer.try_claim(), Claim::Claimed);
        assert_eq!(writer.try_rewind(0), Rewind::Done);
        assert_eq!(writer.claimed(), None);
        assert_eq!(writer.try_claim(), Claim::Claimed);
        writer.write(0, &[2; 4]);
        writer.publish(4);
        assert_eq!(RingCore::lease(&core, 0).unwrap().bytes(), &[2; 4]);
    }

    #[test]
    #[should_panic(expected = "rewind below the published end")]
    fn a_rewind_never_takes_published_bytes_back() {
        let (_core, mut writer) = small();
        let _ = writer.try_claim();
        writer.write(0, &[1; 8]);
        writer.publish(8);
        let _ = writer.try_rewind(4);
    }

    #[test]
    #[should_panic(expected = "write during a rewind")]
    fn nothing_is_written_while_a_rewind_is_busy() {
        let (core, mut writer) = small();
        let _ = writer.try_claim();
        writer.write(0, &[1; 8]);
        writer.mark_written(8);
        let _tail = RingCore::lease_written(&core, 0).unwrap();
        assert_eq!(writer.try_rewind(0), Rewind::Busy { readers: 1 });
        writer.write(0, &[2; 8]);
    }

    /// Tail readers while the writer appends, rewinds and rewrites, on real threads: Miri checks
    /// for data races and aliasing violations, and no view is ever torn.
    #[test]
    fn concurrent_tail_readers_and_a_rewinding_writer() {
        let (core, mut writer) = small();
        let rounds: u64 = if cfg!(miri) { 6 } else { 2_000 };
        std::thread::scope(|scope| {
            for _ in 0..2 {
                let core = Arc::clone(&core);
                scope.spawn(move || {
                    for round in 0..rounds * 4 {
                        let position = core.written_end().saturating_sub(1 + round % 32);
                        if let Ok(lease) = RingCore::lease_written(&core, position) {
                            let bytes = lease.bytes();
                            let entry_start = (position % 16) as usize;
                            let whole = &bytes[..bytes.len().min(16 - entry_start)];
                            assert!(whole.windows(2).all(|pair| pair[0] == pair[1]), "torn read");
                        }
                    }
                });
            }
            let mut written = 0u64;
            for round in 0..rounds {
                // Two entries on, one back: the tail keeps growing, rewound at every step.
                for _ in 0..2 {
                    if written.is_multiple_of(64) {
                        while writer.try_claim() != Claim::Claimed {
                            std::thread::yield_now();
                        }
                    }
                    writer.write(written, &[(round % 251) as u8; 16]);
                    written += 16;
                    writer.mark_written(written);
                }
                while writer.try_rewind(written - 16) != Rewind::Done {
                    std::thread::yield_now();
                }
                written -= 16;
                // Keep the unpublished tail short, so the writer never laps a chunk it holds.
                writer.publish(written.saturating_sub(32).max(writer.published()));
            }
        });
    }

    #[test]
    fn flush_ranges_wrap_and_can_be_made_to_fail() {
        let (core, _writer) = small();
        for method in [SyncMethod::Msync, SyncMethod::Fdatasync, SyncMethod::RangeFdatasync] {
            core.flush_data(200, 300, method).unwrap();
            core.flush_data(0, 10_000, method).unwrap();
        }
        core.flush_data(5, 5, SyncMethod::Msync).unwrap();
        core.write_superblock(0, &[1; 64]).unwrap();
        core.inject_flush_failure(true);
        assert!(core.flush_data(0, 1, SyncMethod::Msync).is_err());
        assert!(core.write_superblock(0, &[1; 8]).is_err());
    }

    /// Readers leasing and viewing published bytes while the writer appends and reclaims, on
    /// real threads: Miri checks for data races and aliasing violations here.
    #[test]
    fn concurrent_readers_and_writer() {
        let (core, mut writer) = small();
        let laps: u64 = if cfg!(miri) { 3 } else { 200 };
        std::thread::scope(|scope| {
            for _ in 0..2 {
                let core = Arc::clone(&core);
                scope.spawn(move || {
                    for round in 0..laps * 8 {
                        let position = core.published_end().saturating_sub(1 + round % 64);
                        if let Ok(lease) = RingCore::lease(&core, position) {
                            // Each 16-byte entry is filled with one value: a torn view would mix.
                            let bytes = lease.bytes();
                            let entry_start = (position % 16) as usize;
                            let whole = &bytes[..bytes.len().min(16 - entry_start)];
                            assert!(whole.windows(2).all(|pair| pair[0] == pair[1]), "torn read");
                        }
                    }
                });
            }
            for entry in 0..laps * 16 {
                if entry % 4 == 0 {
                    while writer.try_claim() != Claim::Claimed {
                        std::thread::yield_now();
                    }
                }
                writer.write(entry * 16, &[entry as u8; 16]);
                writer.publish(entry * 16 + 16);
            }
        });
    }

    #[test]
    #[cfg_attr(miri, ignore = "file mmap")]
    fn a_file_is_mapped_once_and_only_inside_the_locked_directory() {
        let dir = tempfile::tempdir().unwrap();
        let lock = DirLock::acquire(dir.path()).unwrap();
        let layout = Layout::new(4096, 4 * 4096, 4096).unwrap();
        let path = dir.path().join("0.ring");
        let file = RingFile::create(&path, &layout).unwrap();
        let first = Exclusive::map(&file, layout, &lock, false).unwrap();
        let again = RingFile::open(&path).unwrap();
        let error = Exclusive::map(&again, layout, &lock, false).unwrap_err();
        assert!(matches!(error, RingFileError::AlreadyMapped), "{error}");
        drop(first);
        let (core, _writer) =
            Exclusive::map(&again, layout, &lock, false).unwrap().share(0, None, 0);
        drop(core);
        let other = Layout::new(4096, 8 * 4096, 4096).unwrap();
        let error = Exclusive::map(&again, other, &lock, false).unwrap_err();
        assert!(matches!(error, RingFileError::WrongSize { .. }), "{error}");
        let elsewhere = tempfile::tempdir().unwrap();
        let outside = RingFile::create(&elsewhere.path().join("0.ring"), &layout).unwrap();
        let error = Exclusive::map(&outside, layout, &lock, false).unwrap_err();
        assert!(matches!(error, RingFileError::OutsideDataDir { .. }), "{error}");
    }

    /// `range+fdatasync`'s first step writes back exactly its range, both pieces of a wrapped
    /// one: the pages outside it stay dirty (`/proc/self/smaps`).
    #[test]
    #[cfg_attr(miri, ignore = "file mmap")]
    fn write_back_cleans_exactly_its_range_and_both_pieces_of_a_wrap() {
        let dir = tempfile::tempdir().unwrap();
        let lock = DirLock::acquire(dir.path()).unwrap();
        let layout = Layout::new(4096, 8 * 4096, 4096).unwrap();
        let path = dir.path().join("0.ring");
        let file = RingFile::create(&path, &layout).unwrap();
        let (core, mut writer) =
            Exclusive::map(&file, layout, &lock, false).unwrap().share(0, None, 0);
        core.flush_data(0, 8 * 4096, SyncMethod::Msync).unwrap();
        let dirty = || crate::log::tests::dirty_kib_of_mapping(&path);
        for chunk in 0..8u64 {
            assert_eq!(writer.try_claim(), Claim::Claimed);
            writer.write(chunk * 4096, &[1; 4096]);
            writer.publish((chunk + 1) * 4096);
        }
        let before = dirty();
        assert!(before >= 32, "8 pages written, {before} kB dirty");
        // Positions 6 to 10 pages: data pages 6 and 7, then (wrapped) 0 and 1.
        core.write_back_data(6 * 4096, 10 * 4096).unwrap();
        assert_eq!(dirty(), before - 16, "exactly the four pages of the range are clean");
        core.write_back_data(2 * 4096, 3 * 4096).unwrap();
        assert_eq!(dirty(), before - 20);
        core.flush_data(0, 8 * 4096, SyncMethod::RangeFdatasync).unwrap();
        assert_eq!(dirty(), 0);
    }

    /// A deleted file's inode is free once its mapping goes, and the next new file may get it at
    /// once: the registry entry must be gone by then, or that unrelated file is refused as
    /// mapped. Two threads race deletions against creations in one directory (the way tests and
    /// topic deletions do); before the entry was dropped ahead of the mapping this failed within
    /// a few hundred rounds.
    #[test]
    #[cfg_attr(miri, ignore = "file mmap")]
    fn a_deleted_files_inode_is_free_to_map_once_its_mapping_is_gone() {
        let dir = tempfile::tempdir().unwrap();
        let lock = DirLock::acquire(dir.path()).unwrap();
        let layout = Layout::new(4096, 4 * 4096, 4096).unwrap();
        let rounds = 2_000;
        std::thread::scope(|scope| {
            for thread in 0..2 {
                let (dir, lock) = (dir.path(), &lock);
                scope.spawn(move || {
                    for round in 0..rounds {
                        let path = dir.join(format!("{thread}-{round}.ring"));
                        let file = RingFile::create(&path, &layout).unwrap();
                        let mapping = Exclusive::map(&file, layout, lock, false)
                            .unwrap_or_else(|error| panic!("round {round}: {error}"));
                        drop(file);
                        std::fs::remove_file(&path).unwrap();
                        drop(mapping);
                    }
                });
            }
        });
    }

    /// The lock outlives its `DirLock` while a ring file of the directory is mapped, so no second
    /// lock (and so no second mapping of the file) can be had until the mapping is gone.
    #[test]
    #[cfg_attr(miri, ignore = "file mmap")]
    fn a_mapping_keeps_its_directory_locked() {
        let dir = tempfile::tempdir().unwrap();
        let lock = DirLock::acquire(dir.path()).unwrap();
        let layout = Layout::new(4096, 4 * 4096, 4096).unwrap();
        let file = RingFile::create(&dir.path().join("0.ring"), &layout).unwrap();
        let (core, writer) = Exclusive::map(&file, layout, &lock, false).unwrap().share(0, None, 0);
        drop(lock);
        let error = DirLock::acquire(dir.path()).unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::WouldBlock, "{error}");
        drop(writer);
        drop(core);
        let lock = DirLock::acquire(dir.path()).unwrap();
        Exclusive::map(&file, layout, &lock, false).unwrap();
    }

    #[test]
    #[cfg_attr(miri, ignore = "file locking")]
    fn directory_lock_is_exclusive() {
        let dir = tempfile::tempdir().unwrap();
        let lock = DirLock::acquire(dir.path()).unwrap();
        let error = DirLock::acquire(dir.path()).unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::WouldBlock);
        assert!(error.to_string().contains("another running broker"));
        drop(lock);
        DirLock::acquire(dir.path()).unwrap();
    }
}

#[cfg(all(test, broker_loom))]
mod loom_tests {
    //! Model checks of publish / lease / reclaim on a two-chunk ring of 16-byte chunks.
    use super::*;

    fn ring() -> (Arc<RingCore>, WriteCursor) {
        let layout = Layout::new(0, 32, 16).unwrap();
        Exclusive::heap(layout).share(0, None, 0)
    }

    /// A reader never sees a half-written entry, and the writer never reclaims a leased chunk:
    /// every byte a reader views under a lease on generation 0 is generation 0's content.
    #[test]
    fn reader_sees_whole_entries_and_reclaim_waits_for_leases() {
        loom::model(|| {
            let (core, mut writer) = ring();
            let reader_core = Arc::clone(&core);
            let reader = loom::thread::spawn(move || {
                if let Ok(lease) = RingCore::lease(&reader_core, 0) {
                    let bytes = lease.bytes();
                    assert!(
                        bytes.len() == 8 || bytes.len() == 16,
                        "partial entry: {}",
                        bytes.len()
                    );
                    assert!(bytes[..8].iter().all(|&b| b == 1));
                    assert!(bytes[8..].iter().all(|&b| b == 2));
                }
            });
            assert_eq!(writer.try_claim(), Claim::Claimed);
            writer.write(0, &[1; 8]);
            writer.publish(8);
            writer.write(8, &[2; 8]);
            writer.publish(16);
            assert_eq!(writer.try_claim(), Claim::Claimed);
            writer.write(16, &[4; 16]);
            writer.publish(32);
            // Generation 2 replaces generation 0 in slot 0: wait out any lease.
            while writer.try_claim() != Claim::Claimed {
                loom::thread::yield_now();
            }
            writer.write(32, &[3; 8]);
            writer.publish(40);
            reader.join().unwrap();
        });
    }

    /// Every publishing and reclaiming path of the writer: a batch stamped in place after its
    /// copy, padding written through `bytes_mut` to the chunk's end, a claim that finds readers
    /// (`Busy`, which must stop new leases) and the one that then succeeds. The reader must see
    /// either nothing or the stamped batch and its padding, never bytes of a later lap.
    #[test]
    fn stamping_padding_and_reclaim_under_a_reader() {
        loom::model(|| {
            let (core, mut writer) = ring();
            let reader_core = Arc::clone(&core);
            let reader = loom::thread::spawn(move || {
                for _ in 0..2 {
                    if let Ok(lease) = RingCore::lease(&reader_core, 0) {
                        let bytes = lease.bytes();
                        assert_eq!(bytes[0], 0xAA, "a published batch is already stamped");
                        assert!(bytes[1..bytes.len().min(4)].iter().all(|&b| b == 1));
                        assert!(
                            bytes.iter().skip(4).all(|&b| b == 0xEE),
                            "padding, never a later lap"
                        );
                    }
                }
            });
            assert_eq!(writer.try_claim(), Claim::Claimed);
            writer.write(0, &[0, 1, 1, 1]);
            writer.bytes_mut(0, 1)[0] = 0xAA;
            writer.publish(4);
            writer.bytes_mut(4, 12).fill(0xEE);
            writer.publish(16);
            assert_eq!(writer.try_claim(), Claim::Claimed);
            writer.write(16, &[2; 16]);
            writer.publish(32);
            while writer.try_claim() != Claim::Claimed {
                loom::thread::yield_now();
            }
            writer.write(32, &[3; 4]);
            writer.publish(36);
            reader.join().unwrap();
        });
    }

    /// A tail reader against a rewind and a rewrite of the same bytes: a view is either the first
    /// content or the second, whole, never a mix; and the rewind never finishes while a tail lease
    /// of the old bytes is held.
    #[test]
    fn a_tail_lease_is_never_torn_by_a_rewind() {
        loom::model(|| {
            let (core, mut writer) = ring();
            assert_eq!(writer.try_claim(), Claim::Claimed);
            writer.write(0, &[9; 4]);
            writer.publish(4);
            writer.write(4, &[1; 8]);
            writer.mark_written(12);
            let reader_core = Arc::clone(&core);
            let reader = loom::thread::spawn(move || {
                if let Ok(lease) = RingCore::lease_written(&reader_core, 4) {
                    let bytes = lease.bytes();
                    assert_eq!(bytes.len(), 8);
                    assert!(
                        bytes.iter().all(|&b| b == 1) || bytes.iter().all(|&b| b == 2),
                        "torn tail view: {bytes:?}"
                    );
                }
            });
            while writer.try_rewind(4) != Rewind::Done {
                loom::thread::yield_now();
            }
            writer.write(4, &[2; 8]);
            writer.mark_written(12);
            reader.join().unwrap();
            assert_eq!(core.tail_readers(), 0);
        });
    }

    /// A rewind across a chunk boundary hands the later generation back while a tail reader may
    /// lease it: the reader sees the old bytes whole or is refused, and the writer's claim of the
    /// generation again waits for it.
    #[test]
    fn a_rewind_across_chunks_waits_for_the_later_chunks_readers() {
        loom::model(|| {
            let (core, mut writer) = ring();
            assert_eq!(writer.try_claim(), Claim::Claimed);
            writer.write(0, &[1; 16]);
            writer.publish(8);
            writer.mark_written(16);
            assert_eq!(writer.try_claim(), Claim::Claimed);
            writer.write(16, &[3; 8]);
            writer.mark_written(24);
            let reader_core = Arc::clone(&core);
            let reader = loom::thread::spawn(move || {
                if let Ok(lease) = RingCore::lease_written(&reader_core, 16) {
                    let bytes = lease.bytes();
                    assert!(bytes.iter().all(|&b| b == 3) || bytes.iter().all(|&b| b == 4));
                }
            });
            while writer.try_rewind(12) != Rewind::Done {
                loom::thread::yield_now();
            }
            writer.write(12, &[2; 4]);
            writer.mark_written(16);
            while writer.try_claim() != Claim::Claimed {
                loom::thread::yield_now();
            }
            writer.write(16, &[4; 8]);
            writer.mark_written(24);
            reader.join().unwrap();
        });
    }

    /// Two readers leasing and releasing concurrently with a reclaim never strand a count.
    #[test]
    fn concurrent_leases_drain_before_reclaim() {
        loom::model(|| {
            let (core, mut writer) = ring();
            assert_eq!(writer.try_claim(), Claim::Claimed);
            writer.write(0, &[7; 16]);
            writer.publish(16);
            assert_eq!(writer.try_claim(), Claim::Claimed);
            writer.write(16, &[8; 16]);
            writer.publish(32);
            let readers: Vec<_> = (0..2)
                .map(|_| {
                    let core = Arc::clone(&core);
                    loom::thread::spawn(move || {
                        if let Ok(lease) = RingCore::lease(&core, 0) {
                            assert!(lease.bytes().iter().all(|&b| b == 7));
                        }
                    })
                })
                .collect();
            while writer.try_claim() != Claim::Claimed {
                loom::thread::yield_now();
            }
            writer.write(32, &[9; 16]);
            for reader in readers {
                reader.join().unwrap();
            }
            assert_eq!(core.readers(2), 0);
        });
    }
}
