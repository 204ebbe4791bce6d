//! Byte-rate quotas per principal: how much each may produce and fetch per second, over all its
//! connections and both ports, and its counters.
//!
//! Each principal (anonymous clients together as one) has a token bucket per direction, filled
//! at the quota's rate and holding at most one second of it. A produce or a fetch takes its bytes
//! from the bucket once it is done; a bucket taken below zero says how long the connection must
//! wait for it to be back at zero, and the front end answers and then reads nothing more from that
//! connection for that long (on the Kafka port it also says so in `throttle_time_ms`, which
//! clients honour on their side). Over any window longer than a second a principal moves at most
//! its quota, plus one second of burst; nothing is refused, and no other principal's bucket is
//! touched. This is what Kafka's broker does (KIP-13, KIP-219), with a bucket instead of its
//! sampled windows.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use ringmq_protocol::access::{QuotaKind, PRINCIPAL_SIZE_MAX, QUOTA_DEFAULTS};
use ringmq_protocol::limits::QUOTA_PRINCIPAL_COUNT_MAX;
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use crate::auth::file::{read_toml, replace_private, FileError};
use crate::auth::permissions::PermissionsError;
use crate::config::{QUOTA_CONNECTIONS_MAX, QUOTA_RATE_MAX, QUOTA_TOPIC_BYTES_MAX};
use crate::metrics::{Metrics, PrincipalCounters};
use crate::topics::TopicError;

/// The file of the data directory that says which principal created each topic.
const OWNERS_FILE: &str = ".topic-owners.toml";

/// The file of the data directory with the principals' own quotas.
const QUOTAS_FILE: &str = ".quotas.toml";

/// Longest a single throttle asks a connection to wait, and the most debt (this long at the
/// quota's rate) a principal can run up: Kafka caps it the same way, by its quota window. Well
/// below clients' request timeouts (30 s for `ringmq-client` and librdkafka), so requests
/// pipelined behind a held-back connection do not time out. A principal's many connections are
/// each held back; `principal_connection_count_max` bounds how many it may have.
pub const THROTTLE_MAX: Duration = Duration::from_secs(10);

/// The quotas of the broker: its defaults, the principals' own values, and each principal's
/// buckets and counters.
#[derive(Debug)]
pub(super) struct Quotas {
    /// The broker's settings, for every principal without a value of its own.
    defaults: Limits,
    /// `DATA_DIR/.quotas.toml`.
    path: PathBuf,
    metrics: Arc<Metrics>,
    state: Mutex<QuotaState>,
    /// Held while a change is written and put in force, so changes land in order.
    writing: Mutex<()>,
}

#[derive(Debug, Default)]
struct QuotaState {
    /// The principals' own values.
    own: BTreeMap<String, Own>,
    /// The usage of every principal seen since the start.
    principals: HashMap<Arc<str>, Arc<Usage>>,
}

/// One value per [`QuotaKind`], in wire order: produce and fetch bytes per second, connections,
/// topic bytes. 0: no limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Limits(pub [u64; QUOTA_KINDS]);

/// How many kinds of quota there are.
const QUOTA_KINDS: usize = 4;

impl Limits {
    /// The value of `kind`.
    #[must_use]
    pub fn get(&self, kind: QuotaKind) -> u64 {
        self.0[usize::from(kind.to_u8())]
    }

    /// These limits with a principal's own values in place of the defaults.
    fn with(mut self, own: &Own) -> Self {
        for (value, own) in self.0.iter_mut().zip(own.0) {
            if let Some(own) = own {
                *value = own;
            }
        }
        self
    }
}

/// A principal's own quotas: `Some` in place of the broker's default.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Own(pub [Option<u64>; QUOTA_KINDS]);

impl Own {
    /// The principal's own value of `kind`, if it has one.
    #[must_use]
    pub fn get(&self, kind: QuotaKind) -> Option<u64> {
        self.0[usize::from(kind.to_u8())]
    }

    fn is_empty(&self) -> bool {
        self.0.iter().all(Option::is_none)
    }
}

/// `DATA_DIR/.quotas.toml`: `[principals."NAME"]` tables of the values each principal has of
/// its own.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct QuotasFile {
    #[serde(default)]
    principals: BTreeMap<String, OwnFile>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct OwnFile {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    produce: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    fetch: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    connections: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    topic_bytes: Option<u64>,
}

impl From<&OwnFile> for Own {
    fn from(file: &OwnFile) -> Self {
        Self([file.produce, file.fetch, file.connections, file.topic_bytes])
    }
}

impl From<&Own> for OwnFile {
    fn from(own: &Own) -> Self {
        let [produce, fetch, connections, topic_bytes] = own.0;
        Self { produce, fetch, connections, topic_bytes }
    }
}

/// The highest value a quota of `kind` may have.
#[must_use]
pub fn quota_max(kind: QuotaKind) -> u64 {
    match kind {
        QuotaKind::Produce | QuotaKind::Fetch => QUOTA_RATE_MAX,
        QuotaKind::Connections => u64::from(QUOTA_CONNECTIONS_MAX),
        QuotaKind::TopicBytes => QUOTA_TOPIC_BYTES_MAX,
    }
}

/// A quota change refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum QuotaError {
    /// The file could not be read or written (nothing changed), or is not what this broker
    /// writes.
    #[error(transparent)]
    File(#[from] FileError),
    /// The defaults are the broker's settings.
    #[error("the default quotas are the broker's settings (produce_quota, fetch_quota, principal_connection_count_max, principal_topic_bytes_max): change them in its configuration")]
    Defaults,
    /// Not a principal name.
    #[error("invalid principal {principal:?}: {reason}")]
    InvalidPrincipal {
        /// The name.
        principal: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A value past the kind's range.
    #[error("a {} quota of {value} is past its maximum of {max}", kind.name())]
    OutOfRange {
        /// The quota.
        kind: QuotaKind,
        /// The value asked for.
        value: u64,
        /// The highest allowed.
        max: u64,
    },
    /// The broker holds quotas of their own for as many principals as it may.
    #[error("the broker already holds quotas of their own for {max} principals")]
    TooMany {
        /// The limit.
        max: usize,
    },
    /// There was nothing to remove.
    #[error("principal {principal:?} has no {} quota of its own", kind.name())]
    NotSet {
        /// The principal.
        principal: String,
        /// The quota.
        kind: QuotaKind,
    },
}

/// One principal's buckets, limits and counters, shared by all its connections.
#[derive(Debug)]
pub struct Usage {
    principal: Arc<str>,
    produce: Bucket,
    fetch: Bucket,
    /// Most connections; 0: no limit.
    connection_limit: AtomicU64,
    /// Most topic bytes; 0: no limit.
    topic_bytes_limit: AtomicU64,
    /// Connections acting as the principal now.
    connections: AtomicU32,
    counters: PrincipalCounters,
}

impl Usage {
    fn apply(&self, limits: &Limits) {
        self.produce.set_rate(limits.get(QuotaKind::Produce));
        self.fetch.set_rate(limits.get(QuotaKind::Fetch));
        self.connection_limit.store(limits.get(QuotaKind::Connections), Ordering::Relaxed);
        self.topic_bytes_limit.store(limits.get(QuotaKind::TopicBytes), Ordering::Relaxed);
    }

    /// Most topic bytes the principal may hold; 0: no limit.
    pub(super) fn topic_bytes_limit(&self) -> u64 {
        self.topic_bytes_limit.load(Ordering::Relaxed)
    }
}

/// A connection acting as a principal, counted against its connection quota until it drops.
#[derive(Debug)]
pub struct Seat {
    usage: Arc<Usage>,
}

impl Drop for Seat {
    fn drop(&mut self) {
        self.usage.connections.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A connection refused: its principal has as many open as it may.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("principal {principal:?} is at its limit of {limit} open connections (principal_connection_count_max, or its own connections quota)")]
pub struct TooManyConnections {
    /// The principal.
    pub principal: String,
    /// Its limit.
    pub limit: u64,
}

/// Which way bytes move.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Direction {
    /// Into the broker: produced batches.
    Produce,
    /// Out of the broker: fetched batches.
    Fetch,
}

#[derive(Debug)]
struct Bucket {
    state: Mutex<Level>,
}

#[derive(Debug, Clone, Copy)]
struct Level {
    /// Bytes per second; 0: no quota.
    rate: u64,
    /// Bytes the principal may still move at once (negative: owed).
    tokens: f64,
    at: Instant,
}

impl Bucket {
    fn new(rate: u64) -> Self {
        Self { state: Mutex::new(Level { rate, tokens: rate as f64, at: Instant::now() }) }
    }

    /// Changes the rate from now on: what is owed stays owed (capped as [`take`](Self::take)
    /// caps it at the new rate), the burst is at most one second of the new rate.
    fn set_rate(&self, rate: u64) {
        let mut level = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        if level.rate == rate {
            return;
        }
        let now = Instant::now();
        let tokens = if level.rate == 0 { rate as f64 } else { level.refilled(now) };
        let floor = -(rate as f64) * THROTTLE_MAX.as_secs_f64();
        *level = Level { rate, tokens: tokens.min(rate as f64).max(floor), at: now };
    }

    /// Takes `bytes`; how long the principal must now wait to be back within its quota.
    fn take(&self, bytes: u64, now: Instant) -> Duration {
        let mut level = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        if level.rate == 0 {
            return Duration::ZERO;
        }
        let rate = level.rate as f64;
        // At most one second of burst, at most THROTTLE_MAX of debt (so the wait handed out
        // is the debt, and a client that slowed down is not held back for long-gone bursts).
        let floor = -rate * THROTTLE_MAX.as_secs_f64();
        level.tokens = (level.refilled(now) - bytes as f64).max(floor);
        level.at = now;
        if level.tokens >= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64((-level.tokens / rate).min(THROTTLE_MAX.as_secs_f64()))
        }
    }
}

impl Level {
    /// The tokens at `now`: refilled at the rate since the last take, at most one second's.
    fn refilled(&self, now: Instant) -> f64 {
        let rate = self.rate as f64;
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        (self.tokens + elapsed * rate).min(rate)
    }
}

impl Quotas {
    /// The quotas with the broker's `defaults` and the principals' own values from
    /// `DATA_DIR/.quotas.toml`.
    pub(super) fn open(
        data_dir: &Path,
        defaults: Limits,
        metrics: Arc<Metrics>,
    ) -> Result<Self, QuotaError> {
        let path = data_dir.join(QUOTAS_FILE);
        let file: QuotasFile = read_toml(&path)?;
        if file.principals.len() > QUOTA_PRINCIPAL_COUNT_MAX {
            return Err(QuotaError::File(FileError::Invalid {
                path,
                message: format!(
                    "quotas of their own for {} principals, more than the {QUOTA_PRINCIPAL_COUNT_MAX} a broker holds",
                    file.principals.len()
                ),
            }));
        }
        let mut own = BTreeMap::new();
        for (principal, values) in &file.principals {
            let values = Own::from(values);
            if values.is_empty() {
                continue;
            }
            check_principal(principal).map_err(|error| FileError::Invalid {
                path: path.clone(),
                message: error.to_string(),
            })?;
            for &kind in QuotaKind::ALL {
                if let Some(value) = values.get(kind) {
                    check_value(kind, value).map_err(|error| FileError::Invalid {
                        path: path.clone(),
                        message: format!("principal {principal:?}: {error}"),
                    })?;
                }
            }
            own.insert(principal.clone(), values);
        }
        let state = QuotaState { own, principals: HashMap::new() };
        Ok(Self { defaults, path, metrics, state: Mutex::new(state), writing: Mutex::new(()) })
    }

    /// The broker's defaults, and every principal's own values.
    pub(super) fn list(&self) -> (Limits, Vec<(String, Own)>) {
        let state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let own = state.own.iter().map(|(principal, own)| (principal.clone(), *own)).collect();
        (self.defaults, own)
    }

    /// Gives `principal` its own value of each kind named (`None`: back to the default), all or
    /// none: one write, durable, then in force for all its connections, when this returns. A
    /// removal of what the principal does not have is [`QuotaError::NotSet`] when `strict`, and
    /// nothing otherwise (as Kafka's brokers take it).
    pub(super) fn set(
        &self,
        principal: &str,
        changes: &[(QuotaKind, Option<u64>)],
        strict: bool,
    ) -> Result<(), QuotaError> {
        for &(kind, value) in changes {
            check_quota(principal, kind, value)?;
        }
        let _writing = self.writing.lock().unwrap_or_else(PoisonError::into_inner);
        let mut own = self.state.lock().unwrap_or_else(PoisonError::into_inner).own.clone();
        let entry = own.entry(principal.to_owned()).or_default();
        for &(kind, value) in changes {
            let slot = &mut entry.0[usize::from(kind.to_u8())];
            if strict && value.is_none() && slot.is_none() {
                return Err(QuotaError::NotSet { principal: principal.to_owned(), kind });
            }
            *slot = value;
        }
        let values = *entry;
        if values.is_empty() {
            own.remove(principal);
        } else if own.len() > QUOTA_PRINCIPAL_COUNT_MAX {
            return Err(QuotaError::TooMany { max: QUOTA_PRINCIPAL_COUNT_MAX });
        }
        let file = QuotasFile {
            principals: own.iter().map(|(name, own)| (name.clone(), OwnFile::from(own))).collect(),
        };
        let text = toml::to_string(&file).expect("a map of numbers serializes");
        replace_private(&self.path, &text)?;
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        state.own = own;
        if let Some(usage) = state.principals.get(principal) {
            usage.apply(&self.defaults.with(&values));
        }
        Ok(())
    }

    /// Counts a connection of the principal of `usage`, if it has room for one more.
    pub(super) fn seat(&self, usage: &Arc<Usage>) -> Result<Seat, TooManyConnections> {
        let held = usage.connections.fetch_add(1, Ordering::Relaxed);
        let seat = Seat { usage: Arc::clone(usage) };
        let limit = usage.connection_limit.load(Ordering::Relaxed);
        if limit != 0 && u64::from(held) >= limit {
            drop(seat);
            return Err(TooManyConnections { principal: usage.principal.to_string(), limit });
        }
        Ok(seat)
    }

    /// The usage of `principal`, made on its first request. Principals are the broker's users
    /// and the subjects of certificates its CA signed (and `ANONYMOUS`), so the map stays as
    /// small as the set of identities the operator allowed.
    pub(super) fn usage(&self, principal: &str) -> Arc<Usage> {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(usage) = state.principals.get(principal) {
            return Arc::clone(usage);
        }
        let limits = state.own.get(principal).map_or(self.defaults, |own| self.defaults.with(own));
        let name: Arc<str> = Arc::from(principal);
        let usage = Arc::new(Usage {
            principal: Arc::clone(&name),
            produce: Bucket::new(limits.get(QuotaKind::Produce)),
            fetch: Bucket::new(limits.get(QuotaKind::Fetch)),
            connection_limit: AtomicU64::new(limits.get(QuotaKind::Connections)),
            topic_bytes_limit: AtomicU64::new(limits.get(QuotaKind::TopicBytes)),
            connections: AtomicU32::new(0),
            counters: self.metrics.principal(principal),
        });
        state.principals.insert(name, Arc::clone(&usage));
        usage
    }
}

/// Whether `principal` may have its own `kind` quota of `value` (`None`: back to the default),
/// as setting a quota checks it before it changes anything.
///
/// # Errors
///
/// [`QuotaError`]: not a principal, or a value out of range.
pub fn check_quota(principal: &str, kind: QuotaKind, value: Option<u64>) -> Result<(), QuotaError> {
    check_principal(principal)?;
    value.map_or(Ok(()), |value| check_value(kind, value))
}

fn check_principal(principal: &str) -> Result<(), QuotaError> {
    let invalid = |reason| QuotaError::InvalidPrincipal { principal: principal.to_owned(), reason };
    if principal == QUOTA_DEFAULTS {
        return Err(QuotaError::Defaults);
    }
    if principal.is_empty() {
        return Err(invalid("it is empty"));
    }
    if principal.len() > PRINCIPAL_SIZE_MAX {
        return Err(invalid("it is longer than 1024 bytes"));
    }
    if principal.chars().any(char::is_control) {
        return Err(invalid("it holds a control character"));
    }
    Ok(())
}

fn check_value(kind: QuotaKind, value: u64) -> Result<(), QuotaError> {
    let max = quota_max(kind);
    if value > max {
        return Err(QuotaError::OutOfRange { kind, value, max });
    }
    Ok(())
}

impl Usage {
    /// Counts `bytes` moved in `direction` and says how long the connection must now wait.
    pub(super) fn take(&self, direction: Direction, bytes: u64) -> Duration {
        let now = Instant::now();
        let throttle = match direction {
            Direction::Produce => {
                self.counters.bytes_in.inc_by(bytes);
                self.produce.take(bytes, now)
            }
            Direction::Fetch => {
                self.counters.bytes_out.inc_by(bytes);
                self.fetch.take(bytes, now)
            }
        };
        if !throttle.is_zero() {
            let counter = match direction {
                Direction::Produce => &self.counters.produce_throttle,
                Direction::Fetch => &self.counters.fetch_throttle,
            };
            counter.inc_by(throttle.as_secs_f64());
        }
        throttle
    }

    /// Counts a refused login of this principal.
    pub(super) fn authentication_failed(&self) {
        self.counters.authentication_failures.inc();
    }
}

/// Who created each topic, for `principal_topic_bytes_max`: a principal's topic bytes are the
/// ring bytes (partitions × capacity) of the topics it created that still exist, plus those of
/// its creations under way. Kept in `DATA_DIR/.topic-owners.toml`, written after each creation
/// and deletion; a topic whose owner could not be written (the broker died in between) counts
/// for no one.
#[derive(Debug)]
pub(super) struct Owners {
    path: PathBuf,
    state: Mutex<OwnerState>,
    /// Held while the file is written (with a snapshot taken under it), so writes land in
    /// order without holding `state` across the write and its sync.
    writing: Mutex<()>,
}

#[derive(Debug, Default)]
struct OwnerState {
    /// Topic name to the principal that created it.
    topics: BTreeMap<String, String>,
    /// Bytes of creations under way, by principal.
    reserved: HashMap<String, u64>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct OwnersFile {
    #[serde(default)]
    owners: BTreeMap<String, String>,
}

/// Topic bytes set aside for a creation under way, given back when it drops (however the
/// creation ended); [`Claim::created`] makes the topic its principal's.
#[derive(Debug)]
#[must_use]
pub(super) struct Claim {
    owners: Arc<Owners>,
    principal: String,
    bytes: u64,
}

impl Claim {
    /// The creation succeeded: `topic` is the principal's from now on.
    pub(super) fn created(self, topic: &str) {
        self.owners.change(|topics| {
            topics.insert(topic.to_owned(), self.principal.clone());
        });
    }
}

impl Drop for Claim {
    fn drop(&mut self) {
        let mut state = self.owners.state.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(reserved) = state.reserved.get_mut(&self.principal) {
            *reserved = reserved.saturating_sub(self.bytes);
            if *reserved == 0 {
                state.reserved.remove(&self.principal);
            }
        }
    }
}

impl Owners {
    pub(super) fn open(data_dir: &Path) -> Result<Self, PermissionsError> {
        let path = data_dir.join(OWNERS_FILE);
        let file: OwnersFile = read_toml(&path)?;
        let state = OwnerState { topics: file.owners, reserved: HashMap::new() };
        Ok(Self { path, state: Mutex::new(state), writing: Mutex::new(()) })
    }

    /// Sets aside `bytes` of `principal`'s topic bytes for a creation, if they fit its `limit`
    /// (0: none); `size_of` gives an existing topic's ring bytes.
    pub(super) fn claim(
        self: &Arc<Self>,
        principal: &str,
        bytes: u64,
        limit: u64,
        size_of: impl Fn(&str) -> Option<u64>,
    ) -> Result<Claim, TopicError> {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        if limit != 0 {
            let owned: u64 = state
                .topics
                .iter()
                .filter(|(_, owner)| *owner == principal)
                .filter_map(|(topic, _)| size_of(topic))
                .sum();
            let held = owned + state.reserved.get(principal).copied().unwrap_or(0);
            if held.saturating_add(bytes) > limit {
                return Err(TopicError::PrincipalBytesExceeded {
                    principal: principal.to_owned(),
                    requested: bytes,
                    held,
                    max: limit,
                });
            }
        }
        *state.reserved.entry(principal.to_owned()).or_insert(0) += bytes;
        Ok(Claim { owners: Arc::clone(self), principal: principal.to_owned(), bytes })
    }

    /// Forgets the owner of a topic about to be deleted (before it is, so that a topic of the
    /// same name created right after the deletion keeps its new owner); the owner, to give back
    /// with [`restore`](Self::restore) if the deletion fails.
    pub(super) fn forget(&self, topic: &str) -> Option<String> {
        let mut removed = None;
        self.change(|topics| removed = topics.remove(topic));
        removed
    }

    /// Gives a topic whose deletion failed its owner back.
    pub(super) fn restore(&self, topic: &str, owner: String) {
        self.change(|topics| {
            topics.entry(topic.to_owned()).or_insert(owner);
        });
    }

    /// Changes the owners and writes the file (outside the state lock).
    fn change(&self, edit: impl FnOnce(&mut BTreeMap<String, String>)) {
        let _writing = self.writing.lock().unwrap_or_else(PoisonError::into_inner);
        let snapshot = {
            let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
            edit(&mut state.topics);
            state.topics.clone()
        };
        self.write(snapshot);
    }

    fn write(&self, owners: BTreeMap<String, String>) {
        let file = OwnersFile { owners };
        let text = toml::to_string(&file).expect("a map of strings serializes");
        if let Err(error) = replace_private(&self.path, &text) {
            tracing::error!(%error, "the topic owners file was not written; topics created since count for no principal after a restart");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bucket_allows_one_second_of_burst_then_the_rate() {
        let bucket = Bucket::new(1000);
        let start = Instant::now();
        assert_eq!(bucket.take(1000, start), Duration::ZERO);
        // 500 bytes owed: half a second at 1000 B/s.
        assert_eq!(bucket.take(500, start), Duration::from_millis(500));
        // Half a second later the debt is paid; another 100 bytes owe 0.1 s.
        let later = start + Duration::from_millis(500);
        let wait = bucket.take(100, later);
        assert!((wait.as_secs_f64() - 0.1).abs() < 1e-9, "{wait:?}");
        // An idle principal gets back no more than one second of burst.
        let idle = later + Duration::from_secs(60);
        assert_eq!(bucket.take(900, idle), Duration::ZERO);
        assert!(bucket.take(200, idle) > Duration::ZERO);
    }

    #[test]
    fn no_quota_never_throttles_and_a_huge_batch_waits_at_most_the_cap() {
        let free = Bucket::new(0);
        assert_eq!(free.take(u64::MAX / 2, Instant::now()), Duration::ZERO);
        let slow = Bucket::new(1);
        let start = Instant::now();
        assert_eq!(slow.take(1 << 30, start), THROTTLE_MAX);
        // The debt is capped at THROTTLE_MAX too: once it is paid, the principal moves again.
        let later = start + THROTTLE_MAX + Duration::from_secs(1);
        assert_eq!(slow.take(1, later), Duration::ZERO);
    }

    #[test]
    fn each_principal_has_its_own_buckets() {
        let dir = tempfile::tempdir().unwrap();
        let quotas =
            Quotas::open(dir.path(), Limits([1000, 0, 0, 0]), Arc::new(Metrics::new())).unwrap();
        let alice = quotas.usage("alice");
        assert_eq!(alice.take(Direction::Produce, 1000), Duration::ZERO);
        assert!(alice.take(Direction::Produce, 1000) > Duration::ZERO);
        assert!(Arc::ptr_eq(&alice, &quotas.usage("alice")));
        assert_eq!(quotas.usage("bob").take(Direction::Produce, 1000), Duration::ZERO);
        // No fetch quota.
        assert_eq!(alice.take(Direction::Fetch, 1 << 30), Duration::ZERO);
    }

    #[test]
    fn topic_bytes_are_counted_per_owner_with_creations_under_way_and_survive_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let owners = Arc::new(Owners::open(dir.path()).unwrap());
        let sizes = |topic: &str| match topic {
            "a" => Some(60),
            "b" => Some(30),
            _ => None,
        };
        let claim = owners.claim("alice", 60, 100, sizes).unwrap();
        // A second creation while the first is under way counts it.
        assert!(matches!(
            owners.claim("alice", 50, 100, sizes),
            Err(TopicError::PrincipalBytesExceeded { held: 60, max: 100, .. })
        ));
        claim.created("a");
        // A creation that failed gives its bytes back; one with no limit (a superuser's) passes.
        drop(owners.claim("bob", 100, 100, sizes).unwrap());
        drop(owners.claim("bob", 100, 100, sizes).unwrap());
        drop(owners.claim("root", 1000, 0, sizes).unwrap());
        owners.claim("alice", 30, 100, sizes).unwrap().created("b");
        let reopened = Arc::new(Owners::open(dir.path()).unwrap());
        assert!(reopened.claim("alice", 20, 100, sizes).is_err());
        assert_eq!(reopened.forget("a").as_deref(), Some("alice"));
        reopened.restore("a", "alice".to_owned());
        assert!(reopened.claim("alice", 20, 100, sizes).is_err());
        reopened.forget("a");
        let again = Arc::new(Owners::open(dir.path()).unwrap());
        drop(again.claim("alice", 70, 100, sizes).unwrap());
    }

    #[test]
    fn seats_are_counted_per_principal_and_given_back_on_drop() {
        let dir = tempfile::tempdir().unwrap();
        let quotas =
            Quotas::open(dir.path(), Limits([0, 0, 2, 0]), Arc::new(Metrics::new())).unwrap();
        let (alice, bob) = (quotas.usage("alice"), quotas.usage("bob"));
        let first = quotas.seat(&alice).unwrap();
        let _second = quotas.seat(&alice).unwrap();
        let refused = quotas.seat(&alice).unwrap_err();
        assert_eq!(refused, TooManyConnections { principal: "alice".to_owned(), limit: 2 });
        // Alice's own quota takes the default's place at once, for the connections she has.
        quotas.set("alice", &[(QuotaKind::Connections, Some(3))], true).unwrap();
        let _third = quotas.seat(&alice).unwrap();
        quotas.set("alice", &[(QuotaKind::Connections, None)], true).unwrap();
        let _bob = quotas.seat(&bob).unwrap();
        drop(first);
        drop(_third);
        let _fourth = quotas.seat(&alice).unwrap();
        assert!(quotas.seat(&alice).is_err());
    }

    #[test]
    fn own_quotas_replace_the_defaults_at_once_and_survive_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let defaults = Limits([1000, 0, 0, 500]);
        let metrics = Arc::new(Metrics::new());
        let quotas = Quotas::open(dir.path(), defaults, Arc::clone(&metrics)).unwrap();
        let alice = quotas.usage("alice");
        assert_eq!(alice.take(Direction::Produce, 1000), Duration::ZERO);
        assert!(alice.take(Direction::Produce, 1) > Duration::ZERO, "the default holds her");
        // Her own, higher quota applies to the usage her connections already hold.
        let changes = [(QuotaKind::Produce, Some(1_000_000)), (QuotaKind::TopicBytes, Some(0))];
        quotas.set("alice", &changes, true).unwrap();
        // She gets no fresh burst, but her bucket now fills at her rate: 900 kB owe 0.9 s, not
        // the 900 s they would at the default's.
        let wait = alice.take(Direction::Produce, 900_000);
        assert!(wait > Duration::from_millis(800) && wait < Duration::from_secs(1), "{wait:?}");
        assert_eq!(alice.topic_bytes_limit(), 0, "0: no limit, in place of the default");
        // Bob keeps the defaults.
        assert_eq!(quotas.usage("bob").topic_bytes_limit(), 500);
        let (listed_defaults, own) = quotas.list();
        assert_eq!(listed_defaults, defaults);
        assert_eq!(own, [("alice".to_owned(), Own([Some(1_000_000), None, None, Some(0)]))]);
        // Refusals change nothing.
        assert!(matches!(
            quotas.set("alice", &[(QuotaKind::Fetch, Some(QUOTA_RATE_MAX + 1))], true),
            Err(QuotaError::OutOfRange { .. })
        ));
        assert!(matches!(
            quotas.set("*", &[(QuotaKind::Fetch, Some(1))], true),
            Err(QuotaError::Defaults)
        ));
        assert!(matches!(
            quotas.set("", &[(QuotaKind::Fetch, Some(1))], true),
            Err(QuotaError::InvalidPrincipal { .. })
        ));
        assert!(matches!(
            quotas.set("bob", &[(QuotaKind::Fetch, None)], true),
            Err(QuotaError::NotSet { .. })
        ));
        // All or none: a bad value leaves the good one beside it unapplied.
        let mixed = [(QuotaKind::Fetch, Some(10)), (QuotaKind::Connections, Some(1 << 40))];
        assert!(quotas.set("alice", &mixed, true).is_err());
        // Not strict (Kafka's way): removing what is not there is no error.
        quotas.set("bob", &[(QuotaKind::Fetch, None)], false).unwrap();
        assert_eq!(quotas.list().1, own);
        let mode = std::fs::metadata(dir.path().join(QUOTAS_FILE)).unwrap().permissions();
        assert_eq!(std::os::unix::fs::PermissionsExt::mode(&mode) & 0o777, 0o600);
        // After a restart, her usage starts from her own values.
        let reopened = Quotas::open(dir.path(), defaults, Arc::clone(&metrics)).unwrap();
        assert_eq!(reopened.list().1, own);
        let again = reopened.usage("alice");
        assert_eq!(again.take(Direction::Produce, 1_000_000), Duration::ZERO);
        assert_eq!(again.topic_bytes_limit(), 0);
        // Back to the defaults: the entry goes once it holds nothing.
        let back = [(QuotaKind::Produce, None), (QuotaKind::TopicBytes, None)];
        reopened.set("alice", &back, true).unwrap();
        assert!(reopened.list().1.is_empty());
        assert_eq!(again.topic_bytes_limit(), 500);
        assert!(again.take(Direction::Produce, 2000) > Duration::ZERO);
    }

    #[test]
    fn a_quotas_file_with_a_bad_value_is_refused_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(QUOTAS_FILE);
        replace_private(&path, "[principals.alice]\nconnections = 100001\n").unwrap();
        let error = Quotas::open(dir.path(), Limits::default(), Arc::new(Metrics::new()))
            .unwrap_err()
            .to_string();
        assert!(error.contains(".quotas.toml") && error.contains("alice"), "{error}");
        replace_private(&path, "[principals.alice]\nproduc = 1\n").unwrap();
        let error = Quotas::open(dir.path(), Limits::default(), Arc::new(Metrics::new()))
            .unwrap_err()
            .to_string();
        assert!(error.contains("produc"), "{error}");
        replace_private(&path, "[principals.\"*\"]\nfetch = 1\n").unwrap();
        let error = Quotas::open(dir.path(), Limits::default(), Arc::new(Metrics::new()))
            .unwrap_err()
            .to_string();
        assert!(error.contains(".quotas.toml"), "{error}");
        // An empty table is no quota of its own.
        replace_private(&path, "[principals.alice]\n").unwrap();
        let quotas = Quotas::open(dir.path(), Limits::default(), Arc::new(Metrics::new())).unwrap();
        assert!(quotas.list().1.is_empty());
    }

    #[test]
    fn a_rate_change_keeps_the_debt_and_caps_the_burst() {
        let bucket = Bucket::new(1000);
        let start = Instant::now();
        assert!(bucket.take(3000, start) > Duration::ZERO);
        bucket.set_rate(2000);
        // 2000 owed at 2000 B/s: about a second to wait.
        let wait = bucket.take(0, Instant::now());
        assert!(wait > Duration::from_millis(900) && wait <= Duration::from_secs(1), "{wait:?}");
        let free = Bucket::new(0);
        free.set_rate(100);
        assert_eq!(free.take(100, Instant::now()), Duration::ZERO, "a new quota starts full");
        assert!(free.take(100, Instant::now()) > Duration::ZERO);
    }
}
