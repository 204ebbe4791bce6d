//! The users a broker knows and their credentials, kept in `DATA_DIR/.users.toml` (mode 0600,
//! replaced whole: written beside, synced, renamed over, the directory synced). A password is
//! never stored: each user has a salted SCRAM credential per hash (SHA-256 and SHA-512, 4096
//! PBKDF2 iterations), and a PLAIN login is checked by deriving the SHA-512 one again.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::RwLock;

use serde::{Deserialize, Serialize};
use thiserror::Error;

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use ring::hmac;
use ring::rand::SecureRandom;

use super::file::{read_private, replace_private, FileError};
use super::scram::{ScramCredential, ScramHash, SALT_SIZE};
use super::AuthError;

/// The file's name in the data directory.
pub const USERS_FILE: &str = ".users.toml";
/// Longest user name, bytes.
pub const USER_NAME_SIZE_MAX: usize = 200;
/// Most users a broker holds.
pub const USER_COUNT_MAX: usize = 10_000;
/// Bytes of the decoy-salt key.
const DECOY_KEY_SIZE: usize = 32;
/// Longest password, bytes.
pub const PASSWORD_SIZE_MAX: usize = 1024;

/// Why a user operation failed.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum UsersError {
    /// The users file could not be read or written.
    #[error(transparent)]
    Io(#[from] FileError),
    /// The users file is not what this broker writes.
    #[error("{path}: {message}")]
    File {
        /// The file.
        path: PathBuf,
        /// What the TOML parser (or the check after it) said.
        message: String,
    },
    /// A user name that is not allowed.
    #[error(
        "invalid user name {name:?}: 1 to 200 characters of A-Z a-z 0-9 . _ @ -, not ANONYMOUS"
    )]
    InvalidName {
        /// The name given.
        name: String,
    },
    /// A password that is not allowed.
    #[error("invalid password: {0}")]
    InvalidPassword(&'static str),
    /// The user exists already.
    #[error("user {0:?} already exists")]
    Exists(String),
    /// No such user.
    #[error("user {0:?} does not exist")]
    Unknown(String),
    /// The broker holds the most users it may.
    #[error("the broker already holds {USER_COUNT_MAX} users")]
    TooMany,
    /// A credential could not be made.
    #[error(transparent)]
    Credential(#[from] AuthError),
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct StoredUser {
    name: String,
    scram_sha_256: ScramCredential,
    scram_sha_512: ScramCredential,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct UsersFile {
    /// The key of the decoy salts that unknown users get (base64), so that a SCRAM answer does
    /// not tell whether a user exists; kept so that the decoys stay the same across restarts.
    #[serde(default)]
    decoy_key: String,
    #[serde(default)]
    user: Vec<StoredUser>,
}

/// The users of a broker.
pub struct Users {
    path: PathBuf,
    users: RwLock<BTreeMap<String, StoredUser>>,
    decoy_key: hmac::Key,
    decoy_key_text: String,
}

impl std::fmt::Debug for Users {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Users").field("path", &self.path).field("users", &self.names()).finish()
    }
}

impl Users {
    /// Reads `DATA_DIR/.users.toml` (none yet: no users).
    ///
    /// # Errors
    ///
    /// [`UsersError`] naming the file and what is wrong with it.
    pub fn open(data_dir: &Path) -> Result<Self, UsersError> {
        let path = data_dir.join(USERS_FILE);
        let file: UsersFile = match read_private(&path)? {
            Some(text) => toml::from_str(&text).map_err(|error| UsersError::File {
                path: path.clone(),
                message: error.message().to_owned(),
            })?,
            None => UsersFile::default(),
        };
        let mut users = BTreeMap::new();
        for user in file.user {
            if validate_name(&user.name).is_err() || users.contains_key(&user.name) {
                return Err(UsersError::File {
                    path,
                    message: format!("user {:?} is invalid or listed twice", user.name),
                });
            }
            users.insert(user.name.clone(), user);
        }
        let decoded = BASE64.decode(&file.decoy_key).ok().filter(|key| key.len() == DECOY_KEY_SIZE);
        let (key, fresh) = match decoded {
            Some(key) => (key, false),
            None => {
                let mut key = vec![0u8; DECOY_KEY_SIZE];
                ring::rand::SystemRandom::new().fill(&mut key).map_err(|_| AuthError::Random)?;
                (key, true)
            }
        };
        let this = Self {
            path,
            users: RwLock::new(users),
            decoy_key: hmac::Key::new(hmac::HMAC_SHA256, &key),
            decoy_key_text: BASE64.encode(&key),
        };
        if fresh {
            let users = this.users.read().unwrap_or_else(std::sync::PoisonError::into_inner);
            this.write(&users)?;
        }
        Ok(this)
    }

    /// The salt an unknown user gets in SCRAM's first answer: as long as a real one, the same
    /// on every try and across restarts, and not computable without the broker's key.
    pub fn decoy_salt(&self, name: &str, hash: ScramHash) -> Vec<u8> {
        let tag = match hash {
            ScramHash::Sha256 => b"sha-256 ",
            ScramHash::Sha512 => b"sha-512 ",
        };
        let mut message = tag.to_vec();
        message.extend_from_slice(name.as_bytes());
        hmac::sign(&self.decoy_key, &message).as_ref()[..SALT_SIZE].to_vec()
    }

    /// The credential of `name` for `hash`, or the decoy salt of an unknown user.
    ///
    /// # Errors
    ///
    /// The decoy salt, when there is no such user.
    pub fn lookup(&self, name: &str, hash: ScramHash) -> Result<ScramCredential, Vec<u8>> {
        self.credential(name, hash).ok_or_else(|| self.decoy_salt(name, hash))
    }

    /// The credential of `name` for `hash`, if the user exists.
    pub fn credential(&self, name: &str, hash: ScramHash) -> Option<ScramCredential> {
        let users = self.users.read().unwrap_or_else(std::sync::PoisonError::into_inner);
        users.get(name).map(|user| match hash {
            ScramHash::Sha256 => user.scram_sha_256.clone(),
            ScramHash::Sha512 => user.scram_sha_512.clone(),
        })
    }

    /// Every user's name, sorted.
    pub fn names(&self) -> Vec<String> {
        self.users
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .keys()
            .cloned()
            .collect()
    }

    /// Whether there are no users.
    pub fn is_empty(&self) -> bool {
        self.users.read().unwrap_or_else(std::sync::PoisonError::into_inner).is_empty()
    }

    /// Adds a user (durably: the file is replaced before this returns).
    ///
    /// # Errors
    ///
    /// [`UsersError`]: a bad name or password, an existing user, the limit, or the file.
    pub fn add(&self, name: &str, password: &str) -> Result<(), UsersError> {
        validate_name(name)?;
        let user = credentials(name, password)?;
        let mut users = self.users.write().unwrap_or_else(std::sync::PoisonError::into_inner);
        if users.contains_key(name) {
            return Err(UsersError::Exists(name.to_owned()));
        }
        if users.len() >= USER_COUNT_MAX {
            return Err(UsersError::TooMany);
        }
        let mut next = users.clone();
        next.insert(name.to_owned(), user);
        self.write(&next)?;
        *users = next;
        Ok(())
    }

    /// Adds `name` with `credentials`, or (`replace`) replaces an existing user's.
    ///
    /// # Errors
    ///
    /// [`UsersError`]: a bad name, an existing (or, with `replace`, missing) user, the limit,
    /// or the file.
    pub fn set(
        &self,
        name: &str,
        credentials: Credentials,
        replace: bool,
    ) -> Result<(), UsersError> {
        validate_name(name)?;
        let user = StoredUser {
            name: name.to_owned(),
            scram_sha_256: credentials.scram_sha_256,
            scram_sha_512: credentials.scram_sha_512,
        };
        let mut users = self.users.write().unwrap_or_else(std::sync::PoisonError::into_inner);
        match (users.contains_key(name), replace) {
            (true, false) => return Err(UsersError::Exists(name.to_owned())),
            (false, true) => return Err(UsersError::Unknown(name.to_owned())),
            (false, false) if users.len() >= USER_COUNT_MAX => return Err(UsersError::TooMany),
            _ => {}
        }
        let mut next = users.clone();
        next.insert(name.to_owned(), user);
        self.write(&next)?;
        *users = next;
        Ok(())
    }

    /// Replaces a user's password.
    ///
    /// # Errors
    ///
    /// [`UsersError::Unknown`], a bad password, or the file.
    pub fn set_password(&self, name: &str, password: &str) -> Result<(), UsersError> {
        let user = credentials(name, password)?;
        let mut users = self.users.write().unwrap_or_else(std::sync::PoisonError::into_inner);
        if !users.contains_key(name) {
            return Err(UsersError::Unknown(name.to_owned()));
        }
        let mut next = users.clone();
        next.insert(name.to_owned(), user);
        self.write(&next)?;
        *users = next;
        Ok(())
    }

    /// Removes a user.
    ///
    /// # Errors
    ///
    /// [`UsersError::Unknown`], or the file.
    pub fn remove(&self, name: &str) -> Result<(), UsersError> {
        let mut users = self.users.write().unwrap_or_else(std::sync::PoisonError::into_inner);
        if !users.contains_key(name) {
            return Err(UsersError::Unknown(name.to_owned()));
        }
        let mut next = users.clone();
        next.remove(name);
        self.write(&next)?;
        *users = next;
        Ok(())
    }

    fn write(&self, users: &BTreeMap<String, StoredUser>) -> Result<(), UsersError> {
        let file = UsersFile {
            decoy_key: self.decoy_key_text.clone(),
            user: users.values().cloned().collect(),
        };
        let text = toml::to_string(&file).expect("strings and integers serialise as TOML");
        Ok(replace_private(&self.path, &text)?)
    }
}

/// A user's salted SCRAM keys, one per hash, made by the client that sets the password.
#[derive(Debug, Clone)]
pub struct Credentials {
    /// The SCRAM-SHA-256 credential.
    pub scram_sha_256: ScramCredential,
    /// The SCRAM-SHA-512 credential (also checks PLAIN logins).
    pub scram_sha_512: ScramCredential,
}

fn credentials(name: &str, password: &str) -> Result<StoredUser, UsersError> {
    if password.is_empty() {
        return Err(UsersError::InvalidPassword("empty"));
    }
    if password.len() > PASSWORD_SIZE_MAX {
        return Err(UsersError::InvalidPassword("longer than 1024 bytes"));
    }
    Ok(StoredUser {
        name: name.to_owned(),
        scram_sha_256: ScramCredential::new(ScramHash::Sha256, password)?,
        scram_sha_512: ScramCredential::new(ScramHash::Sha512, password)?,
    })
}

/// Checks a user name: 1 to 200 bytes of `[A-Za-z0-9._@-]`, and not `ANONYMOUS` (the principal
/// of clients that did not authenticate, which a user must not pass for).
///
/// # Errors
///
/// [`UsersError::InvalidName`].
pub fn validate_name(name: &str) -> Result<(), UsersError> {
    let valid = !name.is_empty()
        && name != super::ANONYMOUS
        && name.len() <= USER_NAME_SIZE_MAX
        && name.bytes().all(|byte| byte.is_ascii_alphanumeric() || b"._@-".contains(&byte));
    if valid {
        Ok(())
    } else {
        Err(UsersError::InvalidName { name: name.to_owned() })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    #[test]
    fn users_are_kept_durably_as_salted_keys_only() {
        let dir = tempfile::tempdir().unwrap();
        let users = Users::open(dir.path()).unwrap();
        assert!(users.is_empty());
        assert!(dir.path().join(USERS_FILE).exists(), "the decoy key is kept from the start");
        users.add("alice", "correct horse").unwrap();
        users.add("bob", "battery staple").unwrap();
        assert!(matches!(users.add("alice", "x"), Err(UsersError::Exists(_))));
        assert!(matches!(users.add("no spaces", "x"), Err(UsersError::InvalidName { .. })));
        assert!(matches!(users.add("ANONYMOUS", "x"), Err(UsersError::InvalidName { .. })));
        assert!(matches!(users.add("carol", ""), Err(UsersError::InvalidPassword(_))));
        let text = fs::read_to_string(dir.path().join(USERS_FILE)).unwrap();
        assert!(!text.contains("correct horse") && !text.contains("battery"), "{text}");
        use std::os::unix::fs::PermissionsExt;
        let mode = fs::metadata(dir.path().join(USERS_FILE)).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);

        let reopened = Users::open(dir.path()).unwrap();
        assert_eq!(reopened.names(), ["alice", "bob"]);
        let credential = reopened.credential("alice", ScramHash::Sha512).unwrap();
        assert!(credential.matches(ScramHash::Sha512, "correct horse"));
        reopened.set_password("alice", "new one").unwrap();
        reopened.remove("bob").unwrap();
        assert!(matches!(reopened.remove("bob"), Err(UsersError::Unknown(_))));
        let again = Users::open(dir.path()).unwrap();
        assert_eq!(again.names(), ["alice"]);
        let credential = again.credential("alice", ScramHash::Sha256).unwrap();
        assert!(credential.matches(ScramHash::Sha256, "new one"));
        assert!(!credential.matches(ScramHash::Sha256, "correct horse"));

        // An unknown user's decoy salt: as long as a real one, stable across a restart.
        let decoy = again.decoy_salt("mallory", ScramHash::Sha256);
        assert_eq!(decoy.len(), SALT_SIZE);
        assert_eq!(
            Users::open(dir.path()).unwrap().decoy_salt("mallory", ScramHash::Sha256),
            decoy
        );
        assert_ne!(again.decoy_salt("mallory", ScramHash::Sha512), decoy);
        assert_ne!(again.decoy_salt("trudy", ScramHash::Sha256), decoy);

        // A users file others can read is refused.
        let path = dir.path().join(USERS_FILE);
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
        let error = Users::open(dir.path()).unwrap_err().to_string();
        assert!(error.contains("chmod 600"), "{error}");
        fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).unwrap();

        fs::write(dir.path().join(USERS_FILE), "user = 3").unwrap();
        let error = Users::open(dir.path()).unwrap_err().to_string();
        assert!(error.contains(".users.toml"), "{error}");
    }
}
