//! The files a mapping's soundness depends on: the data directory lock, and the ring file, created
//! or opened only here.
//!
//! memmap2 makes mapping a file `unsafe` because anyone who truncates the file or writes it
//! behind the mapping's back breaks the memory the mapping hands out. The proof in
//! [`super::Exclusive::map`] rests on three facts, all established by the code in this file:
//!
//! 1. **One mapping per file, in one broker.** [`DirLock`] holds an exclusive `flock` on
//!    `DATA_DIR/.lock`, and every mapping keeps the lock alive (it owns a [`LockShare`]), so the lock is released only once the last ring file of the directory is unmapped,
//!    however the owners are dropped. A process-wide registry of mapped files (by device and
//!    inode) refuses to map a file twice, whatever path or data directory it is reached by.
//! 2. **Only the broker's user can write or truncate a ring file, through one name.**
//!    [`RingFile::create`] makes new files with mode `0600`; both it and [`RingFile::open`]
//!    check, on the open descriptor, that the file is a regular file with one link, owned by
//!    this process's effective user and writable by no one else. `open` does not follow a
//!    symbolic link. (`flock` is advisory, and a process of the same user, or root, can still
//!    break any database's files.)
//! 3. **Every byte of the file exists on disk.** The whole file is allocated with `fallocate`
//!    before it is mapped: when it is created, and again when it is opened (a no-op for a file
//!    that is allocated, and it fills the holes a sparse copy made by `cp` or `rsync -S` has),
//!    and nothing here resizes a file once it is made. This is about availability, not aliasing:
//!    a write into a hole on a full disk is a SIGBUS that kills the broker. (On copy-on-write
//!    file systems such as btrfs or ZFS, `fallocate` cannot fully promise later writes find
//!    space.)

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
    /// More than one name links to it, so it could be reached and changed under another.
    #[error("has {links} hard links; a ring file must have exactly one")]
    Linked {
        /// The link count.
        links: u64,
    },
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
    /// Already mapped by this process (under this or another name).
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
    /// Creates the file at `path`, which must not exist, with mode 0600, checks it as
    /// [`RingFile::open`] does, and allocates all of `layout.file_size()` bytes on disk. On
    /// failure no file is left behind.
    pub(crate) fn create(path: &Path, layout: &Layout) -> Result<Self, RingFileError> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .mode(RING_FILE_MODE)
            .custom_flags(libc::O_NOFOLLOW)
            .open(path)
            .map_err(|source| RingFileError::Io { action: "create", source })?;
        let made = check(&file).and_then(|()| allocate(&file, layout.file_size()));
        if let Err(error) = made {
            drop(file);
            let _ = std::fs::remove_file(path);
            return Err(error);
        }
        Ok(Self { file, path: path.to_owned() })
    }

    /// Opens the existing ring file at `path` for mapping (not through a symbolic link): a
    /// regular file with one link, owned by this process's effective user and writable by no one
    /// else. Its holes, if a copy made it sparse, are allocated.
    pub(crate) fn open(path: &Path) -> Result<Self, RingFileError> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            // No symlink; and opening a FIFO or a device by mistake has no side effect before
            // `check` refuses it.
            .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
            .open(path)
            .map_err(|source| RingFileError::Io { action: "open", source })?;
        check(&file)?;
        let file = Self { file, path: path.to_owned() };
        allocate(&file.file, file.size()?)?;
        Ok(file)
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

/// Checks an open ring file: a regular file with one link, owned by this process's effective
/// user, writable by no one else (fact 2).
fn check(file: &File) -> Result<(), RingFileError> {
    let metadata =
        file.metadata().map_err(|source| RingFileError::Io { action: "stat", source })?;
    if !metadata.file_type().is_file() {
        return Err(RingFileError::NotRegular);
    }
    if metadata.nlink() != 1 {
        return Err(RingFileError::Linked { links: metadata.nlink() });
    }
    let broker = rustix::process::geteuid().as_raw();
    if metadata.uid() != broker {
        return Err(RingFileError::ForeignOwner { owner: metadata.uid(), broker });
    }
    let mode = metadata.mode() & 0o7777;
    if mode & SHARED_WRITE_BITS != 0 {
        return Err(RingFileError::SharedWritable { mode });
    }
    Ok(())
}

/// Allocates every block of the first `size` bytes of `file` (fact 3).
fn allocate(file: &File, size: u64) -> Result<(), RingFileError> {
    // INVARIANT (fact 3): every block of the file is allocated before it is mapped.
    rustix::fs::fallocate(file, rustix::fs::FallocateFlags::empty(), 0, size)
        .map_err(|error| RingFileError::Allocate { size, source: io::Error::from(error) })
}

/// Exclusive lock on a data directory (`flock` on `DATA_DIR/.lock`), the proof required by
/// [`super::Exclusive::map`] (fact 1 of the module docs). Every mapping made under it keeps a
/// share of the lock, so it is released only when this value and every mapping are gone.
#[derive(Clone)]
pub(crate) struct DirLock {
    held: Arc<HeldLock>,
}

/// The locked file; closing it (when the last share goes) releases the lock.
struct HeldLock {
    _file: File,
    path: PathBuf,
    dir: PathBuf,
}

/// Every ring file mapped in this process, by device and inode.
static MAPPED: Mutex<Option<HashSet<(u64, u64)>>> = Mutex::new(None);

impl fmt::Debug for DirLock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DirLock").field("path", &self.held.path).finish()
    }
}

impl DirLock {
    /// Locks `dir`, creating it and its lock file (mode `0600`) if needed.
    ///
    /// Fails with [`io::ErrorKind::WouldBlock`] if another process holds the lock, or this one
    /// still has ring files of the directory mapped.
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
            Ok(()) => Ok(Self { held: Arc::new(HeldLock { _file: file, path, dir }) }),
            Err(std::fs::TryLockError::WouldBlock) => Err(io::Error::new(
                io::ErrorKind::WouldBlock,
                format!("{} is locked by another running broker", path.display()),
            )),
            Err(std::fs::TryLockError::Error(error)) => Err(error),
        }
    }

    /// The lock file's path.
    pub(crate) fn path(&self) -> &Path {
        &self.held.path
    }

    /// Records that `file` is about to be mapped: it must lie in the locked directory and must
    /// not be mapped already by this process. The owner of the mapping keeps both halves of the
    /// answer, in the order [`Registration`] describes.
    pub(super) fn register(&self, file: &RingFile) -> Result<Registration, RingFileError> {
        let io_error = |source| RingFileError::Io { action: "resolve the path", source };
        let parent = match file.path.parent() {
            Some(parent) if !parent.as_os_str().is_empty() => parent,
            _ => Path::new("."),
        };
        if !parent.canonicalize().map_err(io_error)?.starts_with(&self.held.dir) {
            return Err(RingFileError::OutsideDataDir { dir: self.held.dir.clone() });
        }
        let metadata =
            file.file.metadata().map_err(|source| RingFileError::Io { action: "stat", source })?;
        let key = (metadata.dev(), metadata.ino());
        let mut mapped = MAPPED.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if !mapped.get_or_insert_with(HashSet::new).insert(key) {
            return Err(RingFileError::AlreadyMapped);
        }
        Ok(Registration { entry: MappedFile { key }, lock: LockShare(Arc::clone(&self.held)) })
    }
}

/// What [`DirLock::register`] hands the owner of a new mapping. The owner declares `entry`
/// before its region and `lock` after it (fields drop in declaration order), so that when the
/// owner is dropped:
///
/// 1. the registry entry goes first, while the mapping still pins the file's inode. Once the
///    mapping is gone, a file that was deleted (a deleted topic, a removed directory) frees its
///    inode, and a new file may be given the same device and inode at once; an entry that
///    outlived the mapping would refuse that unrelated file as [`RingFileError::AlreadyMapped`].
///    Nothing refers to the region any more when its owner is dropped, so a new mapping of the
///    same file made in this instant is never used alongside the old one;
/// 2. then the region is unmapped;
/// 3. and the directory lock's share goes last, so the lock is held until the file is unmapped.
pub(super) struct Registration {
    pub(super) entry: MappedFile,
    pub(super) lock: LockShare,
}

/// A file's entry in the registry of mapped files, removed when dropped.
pub(super) struct MappedFile {
    key: (u64, u64),
}

impl fmt::Debug for MappedFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MappedFile").field("key", &self.key).finish()
    }
}

impl Drop for MappedFile {
    fn drop(&mut self) {
        let mut mapped = MAPPED.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(mapped) = mapped.as_mut() {
            mapped.remove(&self.key);
        }
    }
}

/// A share of a directory's lock, held by a mapping of one of its files.
pub(super) struct LockShare(Arc<HeldLock>);

impl fmt::Debug for LockShare {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("LockShare").field(&self.0.path).finish()
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

    #[test]
    #[cfg_attr(miri, ignore = "file system")]
    fn a_ring_file_is_reached_by_one_name_only() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("0.ring");
        drop(RingFile::create(&path, &layout()).unwrap());
        let symlink = dir.path().join("1.ring");
        std::os::unix::fs::symlink(&path, &symlink).unwrap();
        let error = RingFile::open(&symlink).unwrap_err();
        assert!(matches!(error, RingFileError::Io { action: "open", .. }), "{error}");
        let hard = dir.path().join("2.ring");
        std::fs::hard_link(&path, &hard).unwrap();
        let error = RingFile::open(&path).unwrap_err();
        assert!(matches!(error, RingFileError::Linked { links: 2 }), "{error}");
        std::fs::remove_file(&hard).unwrap();
        RingFile::open(&path).unwrap();
    }

    #[test]
    #[cfg_attr(miri, ignore = "file system")]
    fn a_sparse_copy_is_allocated_when_opened() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("0.ring");
        let file = OpenOptions::new().write(true).create_new(true).mode(0o600).open(&path).unwrap();
        file.set_len(layout().file_size()).unwrap();
        drop(file);
        let before = std::fs::metadata(&path).unwrap().blocks() * 512;
        assert!(before < layout().file_size(), "the test file starts sparse");
        RingFile::open(&path).unwrap();
        let after = std::fs::metadata(&path).unwrap().blocks() * 512;
        assert!(
            after >= layout().file_size(),
            "{after} of {} bytes allocated",
            layout().file_size()
        );
    }
}
