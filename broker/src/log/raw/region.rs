//! A fixed-size byte region: a shared file mapping, or heap memory for Miri and loom.
//!
//! # Invariants
//!
//! 1. `ptr .. ptr + len` is a single live allocation (the mapping or a leaked heap box) for the
//!    whole life of the `Region`, valid for reads and writes, never moved or resized.
//! 2. The region never creates a reference to the whole of its memory. It hands out references
//!    only to ranges a caller has proven stable (reads) or exclusive (writes); see the `# Safety`
//!    section of each method.
//!
//! Under `cfg(broker_loom)` every byte (`LOOM_GRANULE`) has a zero-sized shadow
//! `UnsafeCell`; writes touch it with `with_mut` and reads with `with`, so loom reports a read that
//! is not ordered after the write it observes (a wrong `Ordering` on the publish cursor) as a
//! causality violation, which it cannot see on raw memory.

use std::fs::File;
use std::io;
use std::ptr::{self, NonNull};

use memmap2::{Advice, MmapOptions, MmapRaw};

/// Bytes per loom shadow cell.
#[cfg(broker_loom)]
pub(crate) const LOOM_GRANULE: usize = 1;

#[derive(Debug)]
enum Backing {
    /// A shared, writable mapping of a file region (`map`), with a descriptor of the file
    /// (`file`, mapped from byte `file_offset`) for the syncs that go through it. `MmapRaw`
    /// never hands out slices, so the region is the only way to its bytes.
    Map { map: MmapRaw, file: File, file_offset: u64 },
    /// A boxed slice leaked into `ptr`; rebuilt and dropped in `Drop`.
    Heap,
}

/// Fixed-size memory whose accesses are proven in-range and race-free by its callers.
#[derive(Debug)]
pub(crate) struct Region {
    ptr: NonNull<u8>,
    len: usize,
    backing: Backing,
    #[cfg(broker_loom)]
    shadow: Box<[loom::cell::UnsafeCell<()>]>,
}

// SAFETY: `Region` owns its memory (invariant 1) and exposes it only through `unsafe` methods
// whose callers guarantee that no range is written while another thread reads or writes it, so
// moving the owner to another thread cannot create a data race.
unsafe impl Send for Region {}
// SAFETY: shared use goes through the same `unsafe` methods and their exclusion guarantees; the
// only safe methods (`len`, `flush`, `write_back`, `sync_file_data`, `advise_populate_write`) do
// not touch the bytes as Rust memory (msync, sync_file_range, fdatasync and madvise are kernel
// calls on the mapping or its file).
unsafe impl Sync for Region {}

impl Region {
    /// Maps `len` bytes of `file` starting at `file_offset`, shared and writable. With `populate`,
    /// page tables are filled up front (`MAP_POPULATE`) so the first pass does not fault per page.
    ///
    /// # Safety
    ///
    /// For as long as the region lives, no process may truncate or resize `file`, and nothing but
    /// this region may write the mapped bytes. The caller proves it with the facts of the `file`
    /// module: the data directory lock held for as long as the mapping lives and the file mapped
    /// once; a regular file with one link, this user's and writable by no one else; allocated in
    /// full, and never resized by this crate.
    pub(crate) unsafe fn map(
        file: &File,
        file_offset: u64,
        len: usize,
        populate: bool,
    ) -> io::Result<Self> {
        let mut options = MmapOptions::new();
        options.offset(file_offset).len(len);
        if populate {
            options.populate();
        }
        // `map_raw` is safe: a raw mapping hands out no references. Our later accesses rely on the
        // caller's guarantee that nobody else resizes or writes the file (see `# Safety`).
        let map = options.map_raw(file)?;
        let ptr = NonNull::new(map.as_mut_ptr()).ok_or_else(|| io::Error::other("null mapping"))?;
        let file = file.try_clone()?;
        Ok(Self::from_parts(ptr, len, Backing::Map { map, file, file_offset }))
    }

    /// Whether the region is heap memory.
    pub(crate) fn is_heap(&self) -> bool {
        matches!(self.backing, Backing::Heap)
    }

    /// A new read-only descriptor of the mapped file, for a same-host reader to map (an error
    /// for heap memory).
    pub(crate) fn reopen_read_only(&self) -> io::Result<std::os::fd::OwnedFd> {
        use std::os::fd::AsRawFd;
        let Backing::Map { file, .. } = &self.backing else {
            return Err(io::Error::other("a heap ring has no file"));
        };
        let path = format!("/proc/self/fd/{}", file.as_raw_fd());
        let flags = rustix::fs::OFlags::RDONLY | rustix::fs::OFlags::CLOEXEC;
        Ok(rustix::fs::open(path, flags, rustix::fs::Mode::empty())?)
    }

    /// Zeroed heap memory of `len` bytes (at least one byte is allocated).
    pub(crate) fn heap(len: usize) -> Self {
        let boxed: Box<[u8]> = vec![0u8; len.max(1)].into_boxed_slice();
        let ptr = NonNull::from(Box::leak(boxed)).cast::<u8>();
        Self::from_parts(ptr, len, Backing::Heap)
    }

    fn from_parts(ptr: NonNull<u8>, len: usize, backing: Backing) -> Self {
        Self {
            ptr,
            len,
            backing,
            #[cfg(broker_loom)]
            shadow: (0..len.div_ceil(LOOM_GRANULE))
                .map(|_| loom::cell::UnsafeCell::new(()))
                .collect(),
        }
    }

    /// Length in bytes.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Checks `at .. at + size` lies inside the region and returns its end. A violation is a bug in
    /// the caller, so it panics (safely) rather than touch memory out of bounds.
    fn check(&self, at: usize, size: usize) -> usize {
        let end = at.checked_add(size).expect("range end fits usize");
        assert!(end <= self.len, "range {at}..{end} is outside the region of {} bytes", self.len);
        end
    }

    /// Copies `source` into the region at `at`.
    ///
    /// # Safety
    ///
    /// No other thread may read or write `at .. at + source.len()` until this returns.
    pub(crate) unsafe fn write(&self, at: usize, source: &[u8]) {
        self.check(at, source.len());
        self.touch_mut(at, source.len());
        // SAFETY: `at + len <= self.len` (checked above) keeps the pointer inside the allocation
        // (invariant 1).
        let target = unsafe { self.ptr.as_ptr().add(at) };
        // SAFETY: the range is in bounds and writable (invariant 1); `source` is a shared borrow,
        // so it cannot overlap memory the caller holds exclusively; the caller excludes every
        // concurrent access to the range.
        unsafe { ptr::copy_nonoverlapping(source.as_ptr(), target, source.len()) };
    }

    /// A shared view of `size` bytes at `at`.
    ///
    /// # Safety
    ///
    /// Nothing may write `at .. at + size` while the returned borrow lives, and the last write to it must
    /// happen-before this call (release/acquire publication).
    pub(crate) unsafe fn slice(&self, at: usize, size: usize) -> &[u8] {
        self.check(at, size);
        self.touch(at, size);
        // SAFETY: in bounds (checked above) of one live allocation (invariant 1).
        let start = unsafe { self.ptr.as_ptr().add(at) };
        // SAFETY: the bytes are initialised (a file mapping or a zeroed box), in bounds, and the
        // caller guarantees no write to them while the returned borrow lives.
        unsafe { std::slice::from_raw_parts(start, size) }
    }

    /// An exclusive view of `size` bytes at `at`.
    ///
    /// # Safety
    ///
    /// No other thread and no other reference may access `at .. at + size` while the returned borrow lives.
    #[allow(clippy::mut_from_ref, reason = "exclusivity is the caller's documented obligation")]
    pub(crate) unsafe fn slice_mut(&self, at: usize, size: usize) -> &mut [u8] {
        self.check(at, size);
        self.touch_mut(at, size);
        // SAFETY: in bounds (checked above) of one live allocation (invariant 1).
        let start = unsafe { self.ptr.as_ptr().add(at) };
        // SAFETY: initialised, in bounds, and the caller guarantees exclusive access while the borrow lives.
        unsafe { std::slice::from_raw_parts_mut(start, size) }
    }

    /// Writes `at .. at + size` back to the file and waits for it (`msync(MS_SYNC)`): the
    /// durability point. A no-op for heap memory.
    pub(crate) fn flush(&self, at: usize, size: usize) -> io::Result<()> {
        self.check(at, size);
        match &self.backing {
            Backing::Map { map, .. } if size > 0 => map.flush_range(at, size),
            _ => Ok(()),
        }
    }

    /// Writes `at .. at + size` back to the file and waits for the writes
    /// (`sync_file_range` with WAIT_BEFORE, WRITE and WAIT_AFTER), without flushing the device's
    /// cache: [`Region::sync_file_data`] does that. A no-op for heap memory.
    pub(crate) fn write_back(&self, at: usize, size: usize) -> io::Result<()> {
        self.check(at, size);
        let Backing::Map { file, file_offset, .. } = &self.backing else {
            return Ok(());
        };
        if size == 0 {
            return Ok(());
        }
        let offset = i64::try_from(*file_offset + at as u64).map_err(io::Error::other)?;
        let length = i64::try_from(size).map_err(io::Error::other)?;
        let flags = libc::SYNC_FILE_RANGE_WAIT_BEFORE
            | libc::SYNC_FILE_RANGE_WRITE
            | libc::SYNC_FILE_RANGE_WAIT_AFTER;
        // SAFETY: an FFI call on a descriptor `file` owns, which lives across the call; it
        // passes no pointer, so no memory of this process is touched.
        let done = unsafe {
            libc::sync_file_range(std::os::fd::AsRawFd::as_raw_fd(file), offset, length, flags)
        };
        if done != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// `fdatasync` of the mapped file: every dirty page of it, the metadata they need and the
    /// device's cache. A no-op for heap memory.
    pub(crate) fn sync_file_data(&self) -> io::Result<()> {
        match &self.backing {
            Backing::Map { file, .. } => file.sync_data(),
            Backing::Heap => Ok(()),
        }
    }

    /// Pre-faults `at..at + size` for writing (`MADV_POPULATE_WRITE`), so the first lap of the
    /// ring does not pay a page fault and a block allocation per page. Kernels older than 5.14
    /// answer `EINVAL`, which is ignored: the region then faults on first write instead.
    pub(crate) fn advise_populate_write(&self, at: usize, size: usize) -> io::Result<()> {
        self.check(at, size);
        match &self.backing {
            Backing::Map { .. } if size == 0 => Ok(()),
            Backing::Map { map, .. } => match map.advise_range(Advice::PopulateWrite, at, size) {
                Err(error) if error.raw_os_error() == Some(libc::EINVAL) => Ok(()),
                other => other,
            },
            Backing::Heap => Ok(()),
        }
    }

    #[cfg(broker_loom)]
    fn touch(&self, at: usize, size: usize) {
        for cell in self.granules(at, size) {
            cell.with(|_| ());
        }
    }

    #[cfg(broker_loom)]
    fn touch_mut(&self, at: usize, size: usize) {
        for cell in self.granules(at, size) {
            cell.with_mut(|_| ());
        }
    }

    #[cfg(broker_loom)]
    fn granules(&self, at: usize, size: usize) -> &[loom::cell::UnsafeCell<()>] {
        if size == 0 {
            return &[];
        }
        let first = at / LOOM_GRANULE;
        let last = (at + size - 1) / LOOM_GRANULE;
        &self.shadow[first..=last]
    }

    #[cfg(not(broker_loom))]
    fn touch(&self, _at: usize, _size: usize) {}

    #[cfg(not(broker_loom))]
    fn touch_mut(&self, _at: usize, _size: usize) {}
}

impl Drop for Region {
    fn drop(&mut self) {
        if matches!(self.backing, Backing::Heap) {
            let slice = ptr::slice_from_raw_parts_mut(self.ptr.as_ptr(), self.len.max(1));
            // SAFETY: `ptr` and `len.max(1)` are exactly the boxed slice leaked in `heap`
            // (invariant 1), and this is the only place that reclaims it, once.
            drop(unsafe { Box::from_raw(slice) });
        }
        // A `Map` backing unmaps itself when `backing` drops.
    }
}

#[cfg(test)]
#[cfg(not(broker_loom))]
mod tests {
    use super::*;

    #[test]
    fn write_read_at_the_boundaries() {
        let region = Region::heap(16);
        // SAFETY: single-threaded test; no other access to the region.
        unsafe { region.write(0, &[1, 2, 3]) };
        // SAFETY: as above.
        unsafe { region.write(13, &[7, 8, 9]) };
        // SAFETY: as above.
        unsafe { region.write(16, &[]) };
        // SAFETY: as above; nothing writes while the view lives.
        let all = unsafe { region.slice(0, 16) };
        assert_eq!(&all[..3], &[1, 2, 3]);
        assert_eq!(&all[13..], &[7, 8, 9]);
        // SAFETY: as above.
        assert!(unsafe { region.slice(16, 0) }.is_empty());
    }

    #[test]
    fn slice_mut_writes_in_place() {
        let region = Region::heap(8);
        // SAFETY: single-threaded test; the exclusive view is dropped before the next access.
        unsafe { region.slice_mut(2, 2) }.copy_from_slice(&[5, 6]);
        // SAFETY: as above.
        assert_eq!(unsafe { region.slice(0, 8) }, &[0, 0, 5, 6, 0, 0, 0, 0]);
        region.flush(0, 8).unwrap();
    }

    #[test]
    #[should_panic(expected = "outside the region")]
    fn one_past_the_end_panics_safely() {
        let region = Region::heap(8);
        // SAFETY: single-threaded test; the call panics before touching memory.
        unsafe { region.write(7, &[1, 2]) };
    }

    #[test]
    #[should_panic(expected = "fits usize")]
    fn overflowing_range_panics_safely() {
        let region = Region::heap(8);
        // SAFETY: single-threaded test; the call panics before touching memory.
        let _ = unsafe { region.slice(usize::MAX, 2) };
    }

    #[test]
    fn empty_region_is_usable() {
        let region = Region::heap(0);
        assert_eq!(region.len(), 0);
        // SAFETY: zero-length access to a zero-length region.
        assert!(unsafe { region.slice(0, 0) }.is_empty());
    }

    #[test]
    #[cfg_attr(miri, ignore = "file mmap")]
    fn file_mapping_round_trips_and_flushes() {
        use std::io::{Read, Seek, SeekFrom};
        let mut file = tempfile::tempfile().unwrap();
        file.set_len(8192).unwrap();
        // SAFETY: the temporary file is private to this test and never resized while mapped.
        let region = unsafe { Region::map(&file, 4096, 4096, true) }.unwrap();
        region.advise_populate_write(0, 4096).unwrap();
        // SAFETY: single-threaded test; no other access.
        unsafe { region.write(10, b"ringmq") };
        region.flush(0, 4096).unwrap();
        drop(region);
        let mut bytes = [0u8; 6];
        file.seek(SeekFrom::Start(4106)).unwrap();
        file.read_exact(&mut bytes).unwrap();
        assert_eq!(&bytes, b"ringmq");
    }
}
