//! Authentication: who a client is. Users and their salted keys ([`users`]), the SASL mechanisms
//! a client logs in with (PLAIN, SCRAM-SHA-256, SCRAM-SHA-512; [`scram`]), and the penalty for a
//! failed login (a constant delay, longer for an address that keeps failing).
//!
//! A front end drives a [`Login`] with the client's SASL messages and learns the principal, or
//! the reason the login failed; it never sees a password or a key, and neither does the log.

pub mod file;
pub mod permissions;
pub mod scram;
pub mod users;

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use thiserror::Error;

use self::scram::{ScramExchange, ScramHash};
use self::users::Users;

/// Why a login failed.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum AuthError {
    /// The client's message is not what the mechanism expects here.
    #[error("malformed authentication message: {0}")]
    Malformed(String),
    /// A wrong password, or no such user (the two are not told apart).
    #[error("authentication failed for user {user:?}: wrong user name or password")]
    BadCredentials {
        /// The user the client named.
        user: String,
    },
    /// A mechanism this broker does not serve here (PLAIN without TLS, say).
    #[error("SASL mechanism {mechanism:?} is not served{reason}")]
    UnsupportedMechanism {
        /// The mechanism asked for.
        mechanism: String,
        /// Why not, when it exists (", PLAIN only over TLS").
        reason: &'static str,
    },
    /// The client's address failed to log in a moment ago; it may try again after the wait.
    #[error("too many failed logins from this address: retry in {} ms", retry_after.as_millis())]
    Throttled {
        /// How long until a login is checked again.
        retry_after: Duration,
    },
    /// A message out of turn (a second login, a step after the last).
    #[error("authentication message out of turn: {0}")]
    OutOfTurn(&'static str),
    /// The system's random source failed.
    #[error("the system's random source failed")]
    Random,
}

/// A SASL mechanism.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mechanism {
    /// RFC 4616: the password in the clear (so only over TLS).
    Plain,
    /// RFC 5802 with SHA-256 (RFC 7677).
    ScramSha256,
    /// RFC 5802 with SHA-512.
    ScramSha512,
}

impl Mechanism {
    /// Every mechanism, in the order they are offered.
    pub const ALL: [Mechanism; 3] =
        [Mechanism::ScramSha512, Mechanism::ScramSha256, Mechanism::Plain];

    /// The mechanism's SASL name.
    pub fn name(self) -> &'static str {
        match self {
            Self::Plain => "PLAIN",
            Self::ScramSha256 => "SCRAM-SHA-256",
            Self::ScramSha512 => "SCRAM-SHA-512",
        }
    }

    /// The mechanism named `name` (as SASL spells it, upper case).
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|mechanism| mechanism.name() == name)
    }

    /// The mechanisms offered on a connection: PLAIN only where the connection is TLS.
    pub fn offered(tls: bool) -> Vec<Mechanism> {
        Self::ALL.into_iter().filter(|mechanism| tls || *mechanism != Mechanism::Plain).collect()
    }
}

/// One client's login, one SASL message at a time.
#[derive(Debug)]
pub enum Login {
    /// The mechanism is chosen; the client's first message is next.
    Started(Mechanism),
    /// A SCRAM exchange waits for the client's final message.
    Scram(ScramExchange),
}

/// What a login step gives.
#[derive(Debug)]
pub enum Step {
    /// Send these bytes to the client; its next message continues the login.
    Continue(Login, Vec<u8>),
    /// The client is the user named, authenticated; send these bytes (maybe empty) last.
    Done {
        /// The principal (the user's name).
        user: String,
        /// The mechanism's last message to the client.
        message: Vec<u8>,
    },
}

impl Login {
    /// Starts a login with `mechanism`, on a connection that is TLS or not.
    ///
    /// # Errors
    ///
    /// [`AuthError::UnsupportedMechanism`] for PLAIN without TLS.
    pub fn start(mechanism: Mechanism, tls: bool) -> Result<Self, AuthError> {
        if mechanism == Mechanism::Plain && !tls {
            return Err(AuthError::UnsupportedMechanism {
                mechanism: mechanism.name().to_owned(),
                reason: " without TLS (the password would cross the network in the clear)",
            });
        }
        Ok(Self::Started(mechanism))
    }

    /// Takes the client's next message.
    ///
    /// # Errors
    ///
    /// [`AuthError`]: malformed, wrong credentials, or out of turn.
    pub fn step(self, users: &Users, message: &[u8]) -> Result<Step, AuthError> {
        match self {
            Self::Started(Mechanism::Plain) => {
                let (user, password) = parse_plain(message)?;
                match users.credential(&user, ScramHash::Sha512) {
                    Some(credential) if credential.matches(ScramHash::Sha512, &password) => {
                        Ok(Step::Done { user, message: Vec::new() })
                    }
                    _ => Err(AuthError::BadCredentials { user }),
                }
            }
            Self::Started(mechanism) => {
                let hash = match mechanism {
                    Mechanism::ScramSha256 => ScramHash::Sha256,
                    _ => ScramHash::Sha512,
                };
                let (exchange, reply) =
                    ScramExchange::start(hash, message, |user| users.lookup(user, hash))?;
                Ok(Step::Continue(Self::Scram(exchange), reply))
            }
            Self::Scram(exchange) => {
                let (message, user) = exchange.finish(message)?;
                Ok(Step::Done { user, message })
            }
        }
    }
}

/// RFC 4616: `[authzid] NUL authcid NUL passwd`. An authorization id other than the user itself
/// is refused (no one logs in as someone else).
fn parse_plain(message: &[u8]) -> Result<(String, String), AuthError> {
    if message.len() > scram::MESSAGE_SIZE_MAX {
        return Err(AuthError::Malformed("a PLAIN message over 4096 bytes".to_owned()));
    }
    let text = std::str::from_utf8(message)
        .map_err(|_| AuthError::Malformed("a PLAIN message is not UTF-8".to_owned()))?;
    let mut parts = text.split('\0');
    let (Some(authzid), Some(user), Some(password), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(AuthError::Malformed(
            "a PLAIN message is not authzid NUL user NUL password".to_owned(),
        ));
    };
    if user.is_empty() {
        return Err(AuthError::Malformed("a PLAIN message names no user".to_owned()));
    }
    if !authzid.is_empty() && authzid != user {
        return Err(AuthError::Malformed(
            "a PLAIN authorization id other than the user is not served".to_owned(),
        ));
    }
    Ok((user.to_owned(), password.to_owned()))
}

/// The principal of a client that did not authenticate (Kafka's `User:ANONYMOUS`); no user may
/// take the name.
pub const ANONYMOUS: &str = "ANONYMOUS";

/// How long a failed login waits before its answer: the same whatever failed, so the wait tells
/// nothing, and long enough that one connection guesses slowly.
pub const FAILURE_DELAY: Duration = Duration::from_millis(500);
/// The longest an address is refused logins after its failures.
pub const FAILURE_DELAY_MAX: Duration = Duration::from_secs(8);
/// Addresses whose recent failures are remembered (the one refused for the shortest time is
/// forgotten first).
const FAILURE_ADDRESSES_MAX: usize = 4096;
/// After this long without a failure, an address starts again from [`FAILURE_DELAY`].
const FAILURE_MEMORY: Duration = Duration::from_secs(60);

/// Failed logins per client address (an IPv6 address by its /64): after a failure, the address
/// is refused logins for a while, 0.5 s doubling with each failure within a minute, up to 8 s,
/// without its credentials being checked, so guessing from one address is slow however many
/// connections it opens.
#[derive(Debug, Default)]
pub struct Failures {
    recent: Mutex<HashMap<IpAddr, Failure>>,
}

#[derive(Debug, Clone, Copy)]
struct Failure {
    count: u32,
    last: Instant,
    refused_until: Instant,
}

impl Failures {
    /// How much longer `address` is refused logins, if it is.
    pub fn refused(&self, address: IpAddr) -> Option<Duration> {
        let now = Instant::now();
        let recent = self.recent.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let failure = recent.get(&network(address))?;
        failure.refused_until.checked_duration_since(now).filter(|left| !left.is_zero())
    }

    /// Counts a failure from `address`; returns how long it is refused logins once this failure
    /// is answered ([`FAILURE_DELAY`] from now).
    pub fn failed(&self, address: IpAddr) -> Duration {
        let now = Instant::now();
        let key = network(address);
        let mut recent = self.recent.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if recent.len() >= FAILURE_ADDRESSES_MAX && !recent.contains_key(&key) {
            recent.retain(|_, failure| now.duration_since(failure.last) < FAILURE_MEMORY);
            if recent.len() >= FAILURE_ADDRESSES_MAX {
                let first = recent.iter().min_by_key(|(_, failure)| failure.refused_until);
                if let Some(oldest) = first.map(|(address, _)| *address) {
                    recent.remove(&oldest);
                }
            }
        }
        let failure =
            recent.entry(key).or_insert(Failure { count: 0, last: now, refused_until: now });
        if now.duration_since(failure.last) >= FAILURE_MEMORY {
            failure.count = 0;
        }
        failure.count = failure.count.saturating_add(1);
        failure.last = now;
        let doublings = failure.count.saturating_sub(1).min(8);
        let refused = (FAILURE_DELAY * 2u32.pow(doublings)).min(FAILURE_DELAY_MAX);
        // The refusal starts once the failed login is answered (after FAILURE_DELAY).
        failure.refused_until = now + FAILURE_DELAY + refused;
        refused
    }

    /// Forgets `address`'s failures after it logs in.
    pub fn succeeded(&self, address: IpAddr) {
        let mut recent = self.recent.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        recent.remove(&network(address));
    }
}

/// The key an address's failures are counted under: an IPv6 address by its /64 (one host
/// usually has a whole /64), an IPv4 address as it is.
fn network(address: IpAddr) -> IpAddr {
    match address {
        IpAddr::V4(_) => address,
        IpAddr::V6(v6) => {
            let bits = u128::from(v6) & !((1u128 << 64) - 1);
            IpAddr::V6(bits.into())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_messages_are_parsed_and_checked() {
        assert_eq!(parse_plain(b"\0alice\0secret").unwrap(), ("alice".into(), "secret".into()));
        assert_eq!(parse_plain(b"alice\0alice\0pw").unwrap(), ("alice".into(), "pw".into()));
        for bad in [&b""[..], b"alice", b"\0\0pw", b"bob\0alice\0pw", b"\0a\0b\0c", b"\xff\0a\0b"] {
            assert!(matches!(parse_plain(bad), Err(AuthError::Malformed(_))), "{bad:?}");
        }
        assert!(Login::start(Mechanism::Plain, false).is_err(), "PLAIN needs TLS");
        assert_eq!(Mechanism::offered(false), [Mechanism::ScramSha512, Mechanism::ScramSha256]);
    }

    #[test]
    fn repeated_failures_refuse_longer_up_to_the_maximum() {
        let failures = Failures::default();
        let address: IpAddr = [127, 0, 0, 9].into();
        assert_eq!(failures.refused(address), None);
        let waits: Vec<Duration> = (0..8).map(|_| failures.failed(address)).collect();
        assert_eq!(waits[0], FAILURE_DELAY);
        assert_eq!(waits[1], FAILURE_DELAY * 2);
        assert_eq!(*waits.last().unwrap(), FAILURE_DELAY_MAX);
        assert!(failures.refused(address).is_some_and(|left| left > FAILURE_DELAY));
        assert_eq!(failures.failed([127, 0, 0, 10].into()), FAILURE_DELAY, "per address");
        failures.succeeded(address);
        assert_eq!(failures.refused(address), None);
        assert_eq!(failures.failed(address), FAILURE_DELAY);
        // One IPv6 host's /64 counts as one address.
        let one: IpAddr = "2001:db8::1".parse().unwrap();
        let other: IpAddr = "2001:db8::ffff:2".parse().unwrap();
        failures.failed(one);
        assert!(failures.refused(other).is_some());
    }
}
