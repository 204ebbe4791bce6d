//! The broker's private files (users, permissions): readable by their owner only, replaced whole
//! (written beside, synced, renamed over, the directory synced), never written through a link.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Why a private file could not be read or written.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FileError {
    /// The operating system refused.
    #[error("{path}: could not {action}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What was being done.
        action: &'static str,
        /// The operating system's error.
        source: std::io::Error,
    },
    /// The file is not what the broker writes.
    #[error("{path}: {message}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        message: String,
    },
}

/// Reads `path` (`None`: it does not exist). A file that others can read, or that is not a
/// regular file, is refused: it holds secrets or decides who may do what.
///
/// # Errors
///
/// [`FileError`] naming the file.
pub fn read_private(path: &Path) -> Result<Option<String>, FileError> {
    if let Ok(metadata) = fs::symlink_metadata(path) {
        let mode = metadata.permissions().mode() & 0o777;
        if !metadata.is_file() || mode & 0o077 != 0 {
            return Err(FileError::Invalid {
                path: path.to_owned(),
                message: format!(
                    "must be a regular file that only its owner can read (it is mode {mode:o}; chmod 600 it)"
                ),
            });
        }
    }
    match fs::read_to_string(path) {
        Ok(text) => Ok(Some(text)),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(FileError::Io { path: path.to_owned(), action: "read", source }),
    }
}

/// Reads and parses the TOML file at `path`, as [`read_private`] reads it; `T::default()` when
/// there is none yet.
///
/// # Errors
///
/// [`FileError`] naming the file, and for a file that does not parse, what is wrong with it.
pub fn read_toml<T: serde::de::DeserializeOwned + Default>(path: &Path) -> Result<T, FileError> {
    match read_private(path)? {
        Some(text) => toml::from_str(&text).map_err(|error| FileError::Invalid {
            path: path.to_owned(),
            message: error.message().to_owned(),
        }),
        None => Ok(T::default()),
    }
}

/// Replaces `path` with `text`, durably: once this returns, a crash leaves the new file or (if it
/// fails) the old one, never a mix.
///
/// # Errors
///
/// [`FileError::Io`] naming the step that failed.
pub fn replace_private(path: &Path, text: &str) -> Result<(), FileError> {
    let temporary = path.with_extension("toml.new");
    let io = |action: &'static str| {
        let path = temporary.clone();
        move |source| FileError::Io { path, action, source }
    };
    // A leftover of an interrupted write goes first; the new file is made fresh (never through a
    // link someone else placed there) with mode 0600 from the start.
    match fs::remove_file(&temporary) {
        Err(error) if error.kind() != std::io::ErrorKind::NotFound => {
            return Err(io("remove a leftover")(error));
        }
        _ => {}
    }
    let mut out = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(&temporary)
        .map_err(io("create"))?;
    out.write_all(text.as_bytes()).map_err(io("write"))?;
    out.sync_all().map_err(io("sync"))?;
    drop(out);
    fs::rename(&temporary, path).map_err(io("rename into place"))?;
    let dir = path.parent().unwrap_or(Path::new("."));
    fs::File::open(dir).and_then(|dir| dir.sync_all()).map_err(|source| FileError::Io {
        path: dir.to_owned(),
        action: "sync",
        source,
    })
}
