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
//!   while the lease lives (invariant 3).
//! - [`DirLock`]: the data directory lock, the proof that no other broker maps the same files.
//!
//! # Invariants
//!
//! 1. Positions count bytes of the unrolled ring: `position % capacity` is the byte's place in the
//!    data area and `position / chunk_size` its chunk generation.
//! 2. `published_end` only grows, and only the writer stores it, with release ordering, after the
//!    bytes below it are completely written. A reader views a range only after loading a
//!    `published_end` at or beyond its end with acquire ordering (invariant 2 of DESIGN.md).
//! 3. The writer writes only `[published_end, end of claimed generation)`, so it never writes a
//!    byte a reader may view; it moves to a new generation only through
//!    [`chunks::ChunkTable::try_claim`], which waits for every lease on the generation it replaces.
//! 4. No reference to the whole mapping exists once the ring is shared ([`Exclusive`] is consumed
//!    by [`Exclusive::share`]); readers get references to leased, published ranges only, and the
//!    superblock bytes are written only under `superblock_lock` (readers never view them).

mod chunks;
mod region;

use std::collections::HashSet;
use std::fmt;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::Mutex;

use chunks::ChunkTable;
pub(crate) use chunks::{Claim, LeaseRefused, GENERATION_MAX};
use region::Region;

use crate::sync::{Arc, AtomicU64, Ordering};

/// Where things are in a ring file. Checked by [`Layout::new`]; every position maps into the data
/// area through [`Layout::place`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Layout {
    /// File offset of the data area (the superblocks come first).
    pub(crate) data_start: u64,
    /// Bytes in the data area; a multiple of `chunk_size`.
    pub(crate) capacity: u64,
    /// Bytes per chunk.
    pub(crate) chunk_size: u64,
}

impl Layout {
    /// A layout, or a description of what is inconsistent.
    pub(crate) fn new(
        data_start: u64,
        capacity: u64,
        chunk_size: u64,
    ) -> Result<Self, &'static str> {
        if chunk_size == 0 || capacity == 0 {
            return Err("capacity and chunk size must be positive");
        }
        if !capacity.is_multiple_of(chunk_size) {
            return Err("capacity must be a multiple of the chunk size");
        }
        let total = data_start.checked_add(capacity).ok_or("ring too large")?;
        if usize::try_from(total).is_err() {
            return Err("ring too large for this platform");
        }
        Ok(Self { data_start, capacity, chunk_size })
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

    /// Offset in the region (the file) of a position.
    fn place(&self, position: u64) -> usize {
        // Fits: `data_start + capacity` fits usize (checked in `new`).
        (self.data_start + position % self.capacity) as usize
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

/// Exclusive lock on a data directory (`flock` on `DATA_DIR/.lock`), held while any of its ring
/// files is mapped, with the set of files this process has mapped. It is the proof required by
/// [`Exclusive::map`].
///
/// `flock` is advisory: it keeps a second ringmq broker off the directory, not a process that
/// ignores it. Ring files are created with mode 0600 so only the broker's user can write them;
/// anything with that user's rights that writes or truncates a mapped file breaks the broker
/// (a truncation is a SIGBUS), as it would any database.
pub(crate) struct DirLock {
    _file: File,
    path: PathBuf,
    dir: PathBuf,
    mapped: std::sync::Arc<Mutex<HashSet<(u64, u64)>>>,
}

impl fmt::Debug for DirLock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DirLock").field("path", &self.path).finish()
    }
}

impl DirLock {
    /// Locks `dir`, creating it and its lock file (mode `0600`) if needed.
    ///
    /// Fails with [`io::ErrorKind::WouldBlock`] if another process holds the lock.
    pub(crate) fn acquire(dir: &Path) -> io::Result<Self> {
        std::fs::create_dir_all(dir)?;
        let dir = dir.canonicalize()?;
        let path = dir.join(".lock");
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&path)?;
        match file.try_lock() {
            Ok(()) => Ok(Self { _file: file, path, dir, mapped: std::sync::Arc::default() }),
            Err(std::fs::TryLockError::WouldBlock) => Err(io::Error::new(
                io::ErrorKind::WouldBlock,
                format!("{} is locked by another running broker", path.display()),
            )),
            Err(std::fs::TryLockError::Error(error)) => Err(error),
        }
    }

    /// The lock file's path.
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// Records that the file at `path` (opened as `file`) is about to be mapped: it must lie in
    /// the locked directory and must not be mapped already by this process.
    fn register(&self, path: &Path, file: &File) -> io::Result<MappedFile> {
        use std::os::unix::fs::MetadataExt;
        let parent = path.parent().unwrap_or(Path::new(".")).canonicalize()?;
        if !parent.starts_with(&self.dir) {
            return Err(io::Error::new(
                io::ErrorKind::PermissionDenied,
                format!(
                    "{} is outside the locked data directory {}",
                    path.display(),
                    self.dir.display()
                ),
            ));
        }
        let metadata = file.metadata()?;
        let key = (metadata.dev(), metadata.ino());
        let mut mapped = self.mapped.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if !mapped.insert(key) {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                format!("{} is already open", path.display()),
            ));
        }
        Ok(MappedFile { registry: std::sync::Arc::clone(&self.mapped), key })
    }
}

/// A file's entry in its [`DirLock`]'s set of mapped files, removed when the mapping goes.
#[derive(Debug)]
struct MappedFile {
    registry: std::sync::Arc<Mutex<HashSet<(u64, u64)>>>,
    key: (u64, u64),
}

impl Drop for MappedFile {
    fn drop(&mut self) {
        self.registry.lock().unwrap_or_else(std::sync::PoisonError::into_inner).remove(&self.key);
    }
}

/// A ring's memory before it is shared: creation and recovery have it to themselves.
#[derive(Debug)]
pub(crate) struct Exclusive {
    region: Region,
    layout: Layout,
    /// Declared after `region`, so the entry goes only once the mapping has.
    mapped: Option<MappedFile>,
}

impl Exclusive {
    /// Maps the ring file at `path`, opened as `file`. The file must already be
    /// `layout.file_size()` bytes, allocated on disk, inside `lock`'s directory, and not mapped
    /// already by this process.
    pub(crate) fn map(
        path: &Path,
        file: &File,
        layout: Layout,
        lock: &DirLock,
        populate: bool,
    ) -> io::Result<Self> {
        let file_size = file.metadata()?.len();
        if file_size != layout.file_size() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("file is {file_size} bytes, expected {}", layout.file_size()),
            ));
        }
        let mapped = lock.register(path, file)?;
        let len = layout.file_size() as usize;
        // SAFETY: `lock` holds the data directory's lock, so no other ringmq broker maps this
        // file, and `register` proved the file lies in that directory and is not mapped twice by
        // this process (so no second writer or lease table exists for it). Ring files are created
        // with mode 0600 and this crate never calls `set_len` on a file after mapping it. The
        // length matches the file (checked above).
        let region = unsafe { Region::map(file, 0, len, populate) }?;
        Ok(Self { region, layout, mapped: Some(mapped) })
    }

    /// Heap memory laid out like a ring file, for tests and Miri.
    pub(crate) fn heap(layout: Layout) -> Self {
        Self { region: Region::heap(layout.file_size() as usize), layout, mapped: None }
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

    /// Pre-faults the mapping for writing; see [`Region::advise_populate_write`].
    pub(crate) fn advise_populate_write(&self) -> io::Result<()> {
        self.region.advise_populate_write()
    }

    /// Shares the ring: readers may now lease published bytes below `published_end`.
    ///
    /// `next_generation` is the next chunk generation the writer will claim and `claimed` the one
    /// it holds. Every slot's lease state follows from `next_generation` alone: a slot holds the
    /// generation the writer will replace when it next claims that slot (see
    /// [`slot_generation`]), so a reader can never lease a generation whose bytes the writer may
    /// still write.
    pub(crate) fn share(
        self,
        published_end: u64,
        claimed: Option<u64>,
        next_generation: u64,
    ) -> (Arc<RingCore>, WriteCursor) {
        let layout = self.layout;
        assert!(
            next_generation + layout.chunk_count() <= GENERATION_MAX,
            "chunk generation {next_generation} is beyond the lease table's range"
        );
        match claimed {
            None => assert_eq!(
                published_end,
                layout.generation_start(next_generation),
                "an idle writer's published end is the start of the next chunk"
            ),
            Some(generation) => {
                assert_eq!(generation + 1, next_generation, "claimed generation precedes the next");
                assert!(
                    layout.generation_start(generation) <= published_end
                        && published_end <= layout.generation_start(next_generation),
                    "published end {published_end} outside the claimed chunk {generation}"
                );
            }
        }
        let count = layout.chunk_count() as usize;
        let chunks = ChunkTable::new(count, |slot| slot_generation(&layout, next_generation, slot));
        let core = Arc::new(RingCore {
            region: self.region,
            layout,
            published_end: AtomicU64::new(published_end),
            chunks,
            superblock_lock: Mutex::new(()),
            fail_flush: AtomicBool::new(false),
            _mapped: self.mapped,
        });
        let cursor = WriteCursor {
            core: Arc::clone(&core),
            claimed,
            next_generation,
            published: published_end,
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
    let upcoming = next_generation + (slot as u64 + count - next_generation % count) % count;
    upcoming.checked_sub(count)
}

/// The shared ring: its memory, the published end and the lease table.
#[derive(Debug)]
pub(crate) struct RingCore {
    region: Region,
    layout: Layout,
    published_end: AtomicU64,
    chunks: ChunkTable,
    superblock_lock: Mutex<()>,
    fail_flush: AtomicBool,
    /// Declared after `region`, so the entry goes only once the mapping has.
    _mapped: Option<MappedFile>,
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

    /// Leases the published bytes of `position`'s chunk from `position` on: up to the chunk's end
    /// or the published end, whichever comes first.
    pub(crate) fn lease(core: &Arc<Self>, position: u64) -> Result<Lease, LeaseError> {
        let generation = core.layout.generation(position);
        core.chunks.try_lease(generation).map_err(|refused| match refused {
            LeaseRefused::Reclaimed => LeaseError::Reclaimed,
            LeaseRefused::TooManyReaders => LeaseError::TooManyReaders,
        })?;
        // From here the lease is held; dropping `lease` releases it on every path.
        let mut lease =
            Lease { core: Arc::clone(core), generation, start: position, end: position };
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

    /// Writes the data area between positions `start` and `end` to disk (`msync(MS_SYNC)`).
    /// A range longer than the ring syncs the whole data area.
    pub(crate) fn flush_data(&self, start: u64, end: u64) -> io::Result<()> {
        if self.fail_flush.load(Ordering::Relaxed) {
            return Err(io::Error::other("injected msync failure"));
        }
        if end <= start {
            return Ok(());
        }
        let capacity = self.layout.capacity;
        let data_start = self.layout.data_start as usize;
        if end - start >= capacity {
            return self.region.flush(data_start, capacity as usize);
        }
        let first = self.layout.place(start);
        let length = (end - start) as usize;
        let to_wrap = data_start + capacity as usize - first;
        if length <= to_wrap {
            self.region.flush(first, length)
        } else {
            self.region.flush(first, to_wrap)?;
            self.region.flush(data_start, length - to_wrap)
        }
    }

    /// Writes `bytes` at `at` in the superblock area (before the data area) and syncs them.
    pub(crate) fn write_superblock(&self, at: usize, bytes: &[u8]) -> io::Result<()> {
        let end = at.checked_add(bytes.len()).expect("superblock range fits usize");
        assert!(
            end <= self.layout.data_start as usize,
            "superblock write past the superblock area"
        );
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
}

/// A read lease: a view of published bytes of one chunk generation, which the writer will not
/// reclaim until the lease is dropped. Hand it to [`bytes::Bytes::from_owner`] to send it.
pub(crate) struct Lease {
    core: Arc<RingCore>,
    generation: u64,
    start: u64,
    end: u64,
}

impl fmt::Debug for Lease {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Lease")
            .field("generation", &self.generation)
            .field("start", &self.start)
            .field("end", &self.end)
            .finish()
    }
}

impl Lease {
    /// The leased bytes.
    pub(crate) fn bytes(&self) -> &[u8] {
        let size = self.end - self.start;
        let layout = self.core.layout;
        layout.one_chunk(self.start, size);
        // SAFETY: `start..end` lies in chunk `generation` (checked above) and below a published end
        // loaded with acquire after the lease was taken (`RingCore::lease`), so every byte was
        // written before and is never written again while the lease holds: the writer only writes
        // at or past the published end of its claimed generation (invariant 3) and cannot claim
        // this generation's slot again until our lease is released (chunk invariant 2).
        unsafe { self.core.region.slice(layout.place(self.start), size as usize) }
    }
}

impl AsRef<[u8]> for Lease {
    fn as_ref(&self) -> &[u8] {
        self.bytes()
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.core.chunks.release(self.generation);
    }
}

/// The ring's single writer.
#[derive(Debug)]
pub(crate) struct WriteCursor {
    core: Arc<RingCore>,
    claimed: Option<u64>,
    next_generation: u64,
    published: u64,
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
    /// retried. The writer must have published up to the end of the chunk it holds.
    pub(crate) fn try_claim(&mut self) -> Claim {
        let generation = self.next_generation;
        if let Some(held) = self.claimed {
            assert_eq!(
                self.published,
                self.core.layout.generation_start(held + 1),
                "claim before the held chunk is published to its end"
            );
        }
        let claim = self.core.chunks.try_claim(generation);
        if claim == Claim::Claimed {
            // INVARIANT 3: from here the writer may write this generation's bytes.
            self.claimed = Some(generation);
            self.next_generation = generation + 1;
        }
        claim
    }

    /// Checks the writer may write `position .. position + size` and returns its region place.
    fn writable(&self, position: u64, size: u64) -> usize {
        let layout = self.core.layout;
        let generation = layout.one_chunk(position, size);
        assert_eq!(Some(generation), self.claimed, "write outside the claimed chunk");
        assert!(position >= self.published, "write below the published end {}", self.published);
        layout.place(position)
    }

    /// Copies `bytes` to `position`.
    pub(crate) fn write(&mut self, position: u64, bytes: &[u8]) {
        let place = self.writable(position, bytes.len() as u64);
        // SAFETY: `writable` checked the range is in the claimed generation and at or past the
        // published end, which no reader may view and no lease covers (invariant 3); `&mut self`
        // on the single cursor excludes other writers.
        unsafe { self.core.region.write(place, bytes) };
    }

    /// An exclusive view of unpublished bytes at `position`, for stamping fields in place.
    pub(crate) fn bytes_mut(&mut self, position: u64, size: u64) -> &mut [u8] {
        let place = self.writable(position, size);
        // SAFETY: as for `write`; the borrow of `self` keeps any other write from overlapping.
        unsafe { self.core.region.slice_mut(place, size as usize) }
    }

    /// Publishes every byte below `end` to readers (release).
    pub(crate) fn publish(&mut self, end: u64) {
        let generation = self.claimed.expect("publish with a claimed chunk");
        assert!(end >= self.published, "published end moves backwards");
        assert!(
            end <= self.core.layout.generation_start(generation + 1),
            "publish past the claimed chunk"
        );
        self.published = end;
        // INVARIANT 2: release pairs with the acquire in `RingCore::lease`.
        self.core.published_end.store(end, Ordering::Release);
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
    #[should_panic(expected = "below the published end")]
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
    fn flush_ranges_wrap_and_can_be_made_to_fail() {
        let (core, _writer) = small();
        core.flush_data(200, 300).unwrap();
        core.flush_data(0, 10_000).unwrap();
        core.flush_data(5, 5).unwrap();
        core.write_superblock(0, &[1; 64]).unwrap();
        core.inject_flush_failure(true);
        assert!(core.flush_data(0, 1).is_err());
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
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .unwrap();
        file.set_len(layout.file_size()).unwrap();
        let first = Exclusive::map(&path, &file, layout, &lock, false).unwrap();
        let again = OpenOptions::new().read(true).write(true).open(&path).unwrap();
        let error = Exclusive::map(&path, &again, layout, &lock, false).unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::AlreadyExists);
        drop(first);
        let (core, _writer) =
            Exclusive::map(&path, &again, layout, &lock, false).unwrap().share(0, None, 0);
        drop(core);
        let elsewhere = tempfile::tempdir().unwrap();
        let outside = elsewhere.path().join("0.ring");
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&outside)
            .unwrap();
        file.set_len(layout.file_size()).unwrap();
        let error = Exclusive::map(&outside, &file, layout, &lock, false).unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::PermissionDenied);
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
