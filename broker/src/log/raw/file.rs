//! The files a mapping's soundness depends on: the data directory lock, and the ring file, created
//! or opened only here.
//!
//! memmap2 makes mapping a file `unsafe` because anyone who truncates the file or writes it
//! behind the mapping's back breaks the memory the mapping hands out. The proof in
//! [`super::Exclusive::map`] rests on three facts, all established by the code in this file:
//!
//! 1. **One broker.** [`DirLock`] holds an exclusive `flock` on `DATA_DIR/.lock` for as long as
//!    any ring file of the directory is mapped, and records every file it maps, so neither a
//!    second broker nor a second mapping in this process writes the same file.
//! 2. **Only the broker's user can write or truncate a ring file.** [`RingFile::create`] makes
//!    new files with mode `0600`; [`RingFile::open`] refuses a file that is not a regular file,
//!    not owned by this process's effective user, or writable by group or others. (`flock` is
//!    advisory and a process of the same user, or root, can still break any database's files.)
//! 3. **Every byte of the file exists on disk.** [`RingFile::create`] allocates the whole file
//!    with `fallocate` (not a sparse `set_len`), so a write into the mapping never meets a hole
//!    on a full disk (which is a SIGBUS), and nothing here resizes a file once it is made.

use std::collections::HashSet;
use std::fmt;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use thiserror::Error;

use super::Layout;

/// File mode of a ring file and of the lock file: read and write for the broker's user only.
const RING_FILE_MODE: u32 = 0o600;

/// Permission bits that would let another user write a ring file.
const SHARED_WRITE_BITS: u32 = 0o022;

/// Why a ring file could not be made or accepted for mapping.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum RingFileError {
    /// A file operation failed.
    #[error("could not {action}: {source}")]
    Io {
        /// What was being done.
        action: &'static str,
        /// The operating system's error.
        source: io::Error,
    },
    /// The disk could not give the file all its blocks.
    #[error("could not allocate {size} bytes: {source}")]
    Allocate {
        /// The file size.
        size: u64,
        /// The operating system's error (ENOSPC when the disk is full).
        source: io::Error,
    },
    /// Not a regular file (a directory, a device, a FIFO).
    #[error("is not a regular file")]
    NotRegular,
    /// Owned by another user, who could truncate it under the mapping.
    #[error(
        "is owned by uid {owner}, not by this broker's uid {broker}; chown it to the broker's user"
    )]
    ForeignOwner {
        /// The file's owner.
        owner: u32,
        /// The broker's effective uid.
        broker: u32,
    },
    /// Writable by group or others, who could change it under the mapping.
    #[error("is writable by group or others (mode {mode:o}); only the broker's user may write a ring file: chmod 600 it")]
    SharedWritable {
        /// The file's permission bits.
        mode: u32,
    },
    /// Not the size its layout says.
    #[error("is {found} bytes but its layout needs {expected} (truncated or extended?)")]
    WrongSize {
        /// The file's size.
        found: u64,
        /// The layout's file size.
        expected: u64,
    },
    /// Outside the locked data directory.
    #[error("is outside the locked data directory {dir}")]
    OutsideDataDir {
        /// The locked directory.
        dir: PathBuf,
    },
    /// Already mapped by this process.
    #[error("is already open")]
    AlreadyMapped,
}

/// A ring file that may be mapped: made by [`RingFile::create`] or checked by [`RingFile::open`]
/// (facts 2 and 3 of the module docs).
#[derive(Debug)]
pub(crate) struct RingFile {
    file: File,
    path: PathBuf,
}

impl RingFile {
    /// Creates the file at `path`, which must not exist, with mode 0600, and allocates all of
    /// `layout.file_size()` bytes on disk. On failure no file is left behind.
    pub(crate) fn create(path: &Path, layout: &Layout) -> Result<Self, RingFileError> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .mode(RING_FILE_MODE)
            .open(path)
            .map_err(|source| RingFileError::Io { action: "create", source })?;
        let size = layout.file_size();
        // INVARIANT (fact 3): every block of the file is allocated before it is mapped.
        if let Err(error) =
            rustix::fs::fallocate(&file, rustix::fs::FallocateFlags::empty(), 0, size)
        {
            drop(file);
            let _ = std::fs::remove_file(path);
            return Err(RingFileError::Allocate { size, source: io::Error::from(error) });
        }
        Ok(Self { file, path: path.to_owned() })
    }

    /// Opens the existing ring file at `path` for mapping: a regular file owned by this process's
    /// effective user and writable by no one else.
    pub(crate) fn open(path: &Path) -> Result<Self, RingFileError> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .map_err(|source| RingFileError::Io { action: "open", source })?;
        let metadata =
            file.metadata().map_err(|source| RingFileError::Io { action: "stat", source })?;
        if !metadata.file_type().is_file() {
            return Err(RingFileError::NotRegular);
        }
        let broker = rustix::process::geteuid().as_raw();
        if metadata.uid() != broker {
            return Err(RingFileError::ForeignOwner { owner: metadata.uid(), broker });
        }
        let mode = metadata.mode() & 0o7777;
        if mode & SHARED_WRITE_BITS != 0 {
            return Err(RingFileError::SharedWritable { mode });
        }
        Ok(Self { file, path: path.to_owned() })
    }

    /// The path it was made or opened at.
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// Its size now.
    pub(crate) fn size(&self) -> Result<u64, RingFileError> {
        self.file
            .metadata()
            .map(|metadata| metadata.len())
            .map_err(|source| RingFileError::Io { action: "stat", source })
    }

    /// Reads `buffer.len()` bytes at `offset` (before mapping: the superblocks).
    pub(crate) fn read_exact_at(
        &self,
        buffer: &mut [u8],
        offset: u64,
    ) -> Result<(), RingFileError> {
        self.file
            .read_exact_at(buffer, offset)
            .map_err(|source| RingFileError::Io { action: "read the superblock", source })
    }

    /// Syncs the file's data and metadata (after it is made).
    pub(crate) fn sync_all(&self) -> io::Result<()> {
        self.file.sync_all()
    }

    pub(super) fn file(&self) -> &File {
        &self.file
    }
}

/// Exclusive lock on a data directory (`flock` on `DATA_DIR/.lock`), held while any of its ring
/// files is mapped, with the set of files this process has mapped (fact 1 of the module docs).
/// It is the proof required by [`super::Exclusive::map`].
pub(crate) struct DirLock {
    _file: File,
    path: PathBuf,
    dir: PathBuf,
    mapped: Arc<Mutex<HashSet<(u64, u64)>>>,
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
            .mode(RING_FILE_MODE)
            .open(&path)?;
        match file.try_lock() {
            Ok(()) => Ok(Self { _file: file, path, dir, mapped: Arc::default() }),
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

    /// Records that `file` is about to be mapped: it must lie in the locked directory and must
    /// not be mapped already by this process.
    pub(super) fn register(&self, file: &RingFile) -> Result<MappedFile, RingFileError> {
        let io_error = |source| RingFileError::Io { action: "resolve the path", source };
        let parent =
            file.path.parent().unwrap_or(Path::new(".")).canonicalize().map_err(io_error)?;
        if !parent.starts_with(&self.dir) {
            return Err(RingFileError::OutsideDataDir { dir: self.dir.clone() });
        }
        let metadata =
            file.file.metadata().map_err(|source| RingFileError::Io { action: "stat", source })?;
        let key = (metadata.dev(), metadata.ino());
        let mut mapped = self.mapped.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if !mapped.insert(key) {
            return Err(RingFileError::AlreadyMapped);
        }
        Ok(MappedFile { registry: Arc::clone(&self.mapped), key })
    }
}

/// A file's entry in its [`DirLock`]'s set of mapped files, removed when the mapping goes.
#[derive(Debug)]
pub(super) struct MappedFile {
    registry: Arc<Mutex<HashSet<(u64, u64)>>>,
    key: (u64, u64),
}

impl Drop for MappedFile {
    fn drop(&mut self) {
        self.registry.lock().unwrap_or_else(std::sync::PoisonError::into_inner).remove(&self.key);
    }
}

#[cfg(test)]
#[cfg(not(broker_loom))]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    fn layout() -> Layout {
        Layout::new(4096, 4 * 4096, 4096).unwrap()
    }

    #[test]
    #[cfg_attr(miri, ignore = "file system")]
    fn a_created_ring_file_is_private_and_allocated() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("0.ring");
        let file = RingFile::create(&path, &layout()).unwrap();
        let metadata = std::fs::metadata(&path).unwrap();
        assert_eq!(metadata.permissions().mode() & 0o777, 0o600);
        assert_eq!(metadata.len(), layout().file_size());
        // Allocated, not sparse: the blocks cover the whole length.
        assert!(metadata.blocks() * 512 >= layout().file_size(), "{} blocks", metadata.blocks());
        assert_eq!(file.size().unwrap(), layout().file_size());
        let error = RingFile::create(&path, &layout()).unwrap_err();
        assert!(matches!(error, RingFileError::Io { action: "create", .. }), "{error}");
    }

    #[test]
    #[cfg_attr(miri, ignore = "file system")]
    fn an_existing_file_that_others_could_write_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("0.ring");
        drop(RingFile::create(&path, &layout()).unwrap());
        RingFile::open(&path).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o664)).unwrap();
        let error = RingFile::open(&path).unwrap_err();
        assert!(matches!(error, RingFileError::SharedWritable { mode: 0o664 }), "{error}");
        assert!(error.to_string().contains("chmod 600"), "{error}");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        RingFile::open(&path).unwrap();
        let error = RingFile::open(dir.path()).unwrap_err();
        assert!(matches!(error, RingFileError::NotRegular | RingFileError::Io { .. }), "{error}");
    }
}
