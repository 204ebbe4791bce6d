//! The cursor page of a ring's same-host readers ([`ringmq_protocol::local`]): a sealed memfd
//! the broker maps read-write and hands to local readers, who can only map it read-only.
//!
//! # Invariants
//!
//! 1. The mapping is `len` bytes, page-aligned, `len` a multiple of 8, and lives (with the memfd
//!    behind it) as long as the `LocalPage`: it is never moved, resized or unmapped before drop.
//! 2. Its memory is accessed in this process only as `AtomicU64`s (through [`LocalPage::words`]);
//!    no `&[u8]` or `&mut` to it is ever made.
//! 3. Before the memfd leaves this process it is sealed against growing, shrinking and any future
//!    write access (`F_SEAL_GROW | F_SEAL_SHRINK | F_SEAL_FUTURE_WRITE | F_SEAL_SEAL`): a reader
//!    cannot truncate it under the broker (no `SIGBUS`) nor map it writable.

use std::fs::File;
use std::io;
use std::os::fd::OwnedFd;
use std::sync::atomic::AtomicU64;

use memmap2::{MmapOptions, MmapRaw};
use rustix::fs::{MemfdFlags, SealFlags};

/// A ring's cursor page.
#[derive(Debug)]
pub(crate) struct LocalPage {
    map: MmapRaw,
    file: File,
    words: usize,
}

impl LocalPage {
    /// A zeroed, sealed page of `bytes` bytes (rounded up to a word), named `name` in
    /// `/proc/<pid>/fd` (for whoever inspects the broker).
    pub(crate) fn create(name: &str, bytes: usize) -> io::Result<Self> {
        let words = bytes.div_ceil(8).max(1);
        let fd = rustix::fs::memfd_create(name, MemfdFlags::CLOEXEC | MemfdFlags::ALLOW_SEALING)?;
        let file = File::from(fd);
        file.set_len((words * 8) as u64)?;
        let map = MmapOptions::new().len(words * 8).map_raw(&file)?;
        // INVARIANT 3: sealed before anyone else can have the descriptor; the broker's own
        // writable mapping, made just above, keeps working (FUTURE_WRITE spares existing ones).
        let seals = SealFlags::GROW | SealFlags::SHRINK | SealFlags::FUTURE_WRITE | SealFlags::SEAL;
        rustix::fs::fcntl_add_seals(&file, seals)?;
        Ok(Self { map, file, words })
    }

    /// The page's words.
    pub(crate) fn words(&self) -> &[AtomicU64] {
        let ptr = self.map.as_mut_ptr().cast::<AtomicU64>();
        // SAFETY: invariant 1: `ptr` is page-aligned (so aligned for `AtomicU64`) and valid for
        // `words * 8` bytes for as long as `self`, which the returned borrow cannot outlive.
        // Invariant 2: this process touches the memory only through these atomics, so the shared
        // reference aliases nothing; other processes map it read-only (invariant 3), and
        // `AtomicU64` permits its value to change under a shared reference.
        unsafe { std::slice::from_raw_parts(ptr, self.words) }
    }

    /// A descriptor of the page for a reader (which can map it read-only only; invariant 3).
    pub(crate) fn reader_fd(&self) -> io::Result<OwnedFd> {
        Ok(OwnedFd::from(self.file.try_clone()?))
    }
}

#[cfg(test)]
#[cfg(not(miri))]
mod tests {
    use super::*;
    use std::sync::atomic::Ordering;

    #[test]
    fn a_reader_can_map_the_page_only_read_only_and_sees_the_broker_write() {
        let page = LocalPage::create("ringmq-test-page", 100).unwrap();
        assert_eq!(page.words().len(), 13);
        let fd = File::from(page.reader_fd().unwrap());
        assert!(MmapOptions::new().len(104).map_raw(&fd).is_err(), "no writable mapping");
        assert!(fd.set_len(8).is_err(), "the page cannot shrink");
        assert!(fd.set_len(1 << 20).is_err(), "nor grow");
        let read_only = MmapOptions::new().len(104).map_raw_read_only(&fd).unwrap();
        page.words()[3].store(0xABCD, Ordering::Release);
        let word = read_only.as_ptr().wrapping_add(24).cast::<AtomicU64>();
        // SAFETY: the mapping is 104 bytes and page-aligned, so word 3 is in it and aligned; it
        // lives to the end of the test and is only ever touched through atomics.
        let seen = unsafe { &*word };
        assert_eq!(seen.load(Ordering::Acquire), 0xABCD);
    }
}
