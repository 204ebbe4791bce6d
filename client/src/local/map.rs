//! Read-only mappings of a partition's ring file and cursor page, seen as `AtomicU64` words: the
//! client's only unsafe code.
#![allow(unsafe_code, reason = "the one fenced module of mapped memory; see the invariants")]
//!
//! # Invariants
//!
//! 1. A [`Mapped`] is a shared, read-only mapping (`PROT_READ`, `MAP_SHARED`) of a whole file of
//!    `words * 8` bytes, its size checked before it is mapped; the mapping is page-aligned and
//!    lives, unmoved, as long as the `Mapped`.
//! 2. This process never writes the memory (it cannot) and never makes a `&[u8]` or `&mut` of
//!    it: it is read only as `AtomicU64` loads, through [`Mapped::words`]. The broker writes it
//!    from its own process; [`ringmq_protocol::local`] is the protocol that makes those reads
//!    meaningful.
//! 3. Neither file shrinks under the mapping, so no load faults: the cursor page is a memfd the
//!    broker sealed against shrinking, and the broker never resizes a ring file (it preallocates
//!    it and keeps it for the partition's life; a deleted topic's file is unlinked, which leaves
//!    a mapping intact). Only a user who can write the broker's data directory could truncate
//!    it, and the broker itself relies on that not happening. The reader checks both before it
//!    maps them (`check_files` in the parent module: the page's seals, the ring file's owner
//!    against the broker's user as the socket reports it).
//! 4. The target is 64-bit: `core::sync::atomic` promises relaxed loads from read-only memory
//!    only up to the pointer's size (a 32-bit target may load a `u64` with a compare-exchange,
//!    which faults on a read-only page), so [`Mapped::map`] refuses elsewhere.

use std::io;
use std::os::fd::OwnedFd;
use std::sync::atomic::AtomicU64;

use memmap2::{MmapOptions, MmapRaw};

/// A read-only shared mapping of a whole file.
#[derive(Debug)]
pub(crate) struct Mapped {
    map: MmapRaw,
    words: usize,
}

impl Mapped {
    /// Maps the whole of `file`, read-only; its size must be a positive multiple of 8.
    pub(crate) fn map(file: OwnedFd) -> io::Result<Self> {
        if cfg!(not(target_pointer_width = "64")) {
            return Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "same-host reading needs a 64-bit target (its relaxed 8-byte loads of read-only memory)",
            ));
        }
        let file = std::fs::File::from(file);
        let size = file.metadata()?.len();
        let words = usize::try_from(size / 8).map_err(io::Error::other)?;
        if size == 0 || size % 8 != 0 {
            return Err(io::Error::other(format!(
                "a file of {size} bytes is not a whole number of words"
            )));
        }
        // `map_raw_read_only` is safe: a raw mapping hands out no references (invariant 1).
        let bytes = words.checked_mul(8).ok_or_else(|| {
            io::Error::other(format!("a file of {size} bytes is too large to map"))
        })?;
        let map = MmapOptions::new().len(bytes).map_raw_read_only(&file)?;
        Ok(Self { map, words })
    }

    /// The mapping's words.
    pub(crate) fn words(&self) -> &[AtomicU64] {
        let ptr = self.map.as_ptr().cast::<AtomicU64>();
        // The only operation ever made on these atomics is a relaxed `load` (the `Words` impl of
        // `ringmq_protocol::local`, whose acquires are fences), which `core::sync::atomic`
        // documents as sound on read-only memory for register-sized atomics.
        // SAFETY: invariant 1: `ptr` is page-aligned (aligned for `AtomicU64`) and valid for
        // reads of `words * 8` bytes while `self` lives, which the borrow cannot outlive;
        // invariant 3: none of it goes away meanwhile; invariant 2: it is only loaded through
        // these atomics, which allow the broker's writes under them, so nothing else aliases it;
        // invariant 4: a `Mapped` exists only on a 64-bit target.
        unsafe { std::slice::from_raw_parts(ptr, self.words) }
    }
}
