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
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use crate::auth::file::{read_private, replace_private};
use crate::auth::permissions::PermissionsError;
use crate::metrics::{Metrics, PrincipalCounters};
use crate::topics::TopicError;

/// The file of the data directory that says which principal created each topic.
const OWNERS_FILE: &str = ".topic-owners.toml";

/// Longest a single throttle asks a connection to wait, and the most debt (this long at the
/// quota's rate) a principal can run up: Kafka caps it the same way, by its quota window. Well
/// below clients' request timeouts (30 s for `ringmq-client` and librdkafka), so requests
/// pipelined behind a held-back connection do not time out. A principal's many connections are
/// each held back; `principal_connection_count_max` bounds how many it may have.
pub const THROTTLE_MAX: Duration = Duration::from_secs(10);

/// The quotas of the broker: the same for every principal, counted per principal.
#[derive(Debug)]
pub(super) struct Quotas {
    produce: u64,
    fetch: u64,
    /// Most connections per principal; 0: no limit.
    connections: u32,
    metrics: Arc<Metrics>,
    principals: Mutex<HashMap<Arc<str>, Arc<Usage>>>,
}

/// One principal's buckets and counters, shared by all its connections.
#[derive(Debug)]
pub struct Usage {
    principal: Arc<str>,
    produce: Bucket,
    fetch: Bucket,
    /// Connections acting as the principal now.
    connections: AtomicU32,
    counters: PrincipalCounters,
}

/// A connection acting as a principal, counted against `principal_connection_count_max` until
/// it drops.
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
#[error("principal {principal:?} is at its limit of {limit} open connections (principal_connection_count_max)")]
pub struct TooManyConnections {
    /// The principal.
    pub principal: String,
    /// Its limit.
    pub limit: u32,
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
    /// Bytes per second; 0: no quota.
    rate: u64,
    state: Mutex<Level>,
}

#[derive(Debug, Clone, Copy)]
struct Level {
    /// Bytes the principal may still move at once (negative: owed).
    tokens: f64,
    at: Instant,
}

impl Bucket {
    fn new(rate: u64) -> Self {
        Self { rate, state: Mutex::new(Level { tokens: rate as f64, at: Instant::now() }) }
    }

    /// Takes `bytes`; how long the principal must now wait to be back within its quota.
    fn take(&self, bytes: u64, now: Instant) -> Duration {
        if self.rate == 0 {
            return Duration::ZERO;
        }
        let rate = self.rate as f64;
        let mut level = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let elapsed = now.saturating_duration_since(level.at).as_secs_f64();
        // At most one second of burst, at most THROTTLE_MAX of debt (so the wait handed out
        // is the debt, and a client that slowed down is not held back for long-gone bursts).
        let floor = -rate * THROTTLE_MAX.as_secs_f64();
        level.tokens = ((level.tokens + elapsed * rate).min(rate) - bytes as f64).max(floor);
        level.at = now;
        if level.tokens >= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64((-level.tokens / rate).min(THROTTLE_MAX.as_secs_f64()))
        }
    }
}

impl Quotas {
    pub(super) fn new(produce: u64, fetch: u64, connections: u32, metrics: Arc<Metrics>) -> Self {
        Self { produce, fetch, connections, metrics, principals: Mutex::new(HashMap::new()) }
    }

    /// Counts a connection of the principal of `usage`, if it has room for one more.
    pub(super) fn seat(&self, usage: &Arc<Usage>) -> Result<Seat, TooManyConnections> {
        let held = usage.connections.fetch_add(1, Ordering::Relaxed);
        let seat = Seat { usage: Arc::clone(usage) };
        if self.connections != 0 && held >= self.connections {
            drop(seat);
            return Err(TooManyConnections {
                principal: usage.principal.to_string(),
                limit: self.connections,
            });
        }
        Ok(seat)
    }

    /// The usage of `principal`, made on its first request. Principals are the broker's users
    /// and the subjects of certificates its CA signed (and `ANONYMOUS`), so the map stays as
    /// small as the set of identities the operator allowed.
    pub(super) fn usage(&self, principal: &str) -> Arc<Usage> {
        let mut principals = self.principals.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(usage) = principals.get(principal) {
            return Arc::clone(usage);
        }
        let name: Arc<str> = Arc::from(principal);
        let usage = Arc::new(Usage {
            principal: Arc::clone(&name),
            produce: Bucket::new(self.produce),
            fetch: Bucket::new(self.fetch),
            connections: AtomicU32::new(0),
            counters: self.metrics.principal(principal),
        });
        principals.insert(name, Arc::clone(&usage));
        usage
    }
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
    /// Most topic bytes per principal; 0: no limit.
    limit: u64,
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
    pub(super) fn open(data_dir: &Path, limit: u64) -> Result<Self, PermissionsError> {
        let path = data_dir.join(OWNERS_FILE);
        let file: OwnersFile = match read_private(&path)? {
            Some(text) => toml::from_str(&text).map_err(|error| PermissionsError::Invalid {
                path: path.clone(),
                message: error.message().to_owned(),
            })?,
            None => OwnersFile::default(),
        };
        let state = OwnerState { topics: file.owners, reserved: HashMap::new() };
        Ok(Self { path, limit, state: Mutex::new(state), writing: Mutex::new(()) })
    }

    /// Sets aside `bytes` of `principal`'s topic bytes for a creation, if they fit its limit
    /// (when `bounded`: superusers are not); `size_of` gives an existing topic's ring bytes.
    pub(super) fn claim(
        self: &Arc<Self>,
        principal: &str,
        bytes: u64,
        bounded: bool,
        size_of: impl Fn(&str) -> Option<u64>,
    ) -> Result<Claim, TopicError> {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        if bounded && self.limit != 0 {
            let owned: u64 = state
                .topics
                .iter()
                .filter(|(_, owner)| *owner == principal)
                .filter_map(|(topic, _)| size_of(topic))
                .sum();
            let held = owned + state.reserved.get(principal).copied().unwrap_or(0);
            if held.saturating_add(bytes) > self.limit {
                return Err(TopicError::PrincipalBytesExceeded {
                    principal: principal.to_owned(),
                    requested: bytes,
                    held,
                    max: self.limit,
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
        let quotas = Quotas::new(1000, 0, 0, Arc::new(Metrics::new()));
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
        let owners = Arc::new(Owners::open(dir.path(), 100).unwrap());
        let sizes = |topic: &str| match topic {
            "a" => Some(60),
            "b" => Some(30),
            _ => None,
        };
        let claim = owners.claim("alice", 60, true, sizes).unwrap();
        // A second creation while the first is under way counts it.
        assert!(matches!(
            owners.claim("alice", 50, true, sizes),
            Err(TopicError::PrincipalBytesExceeded { held: 60, max: 100, .. })
        ));
        claim.created("a");
        // A creation that failed gives its bytes back; an unbounded one (a superuser) passes.
        drop(owners.claim("bob", 100, true, sizes).unwrap());
        drop(owners.claim("bob", 100, true, sizes).unwrap());
        drop(owners.claim("root", 1000, false, sizes).unwrap());
        owners.claim("alice", 30, true, sizes).unwrap().created("b");
        let reopened = Arc::new(Owners::open(dir.path(), 100).unwrap());
        assert!(reopened.claim("alice", 20, true, sizes).is_err());
        assert_eq!(reopened.forget("a").as_deref(), Some("alice"));
        reopened.restore("a", "alice".to_owned());
        assert!(reopened.claim("alice", 20, true, sizes).is_err());
        reopened.forget("a");
        let again = Arc::new(Owners::open(dir.path(), 100).unwrap());
        drop(again.claim("alice", 70, true, sizes).unwrap());
    }

    #[test]
    fn seats_are_counted_per_principal_and_given_back_on_drop() {
        let quotas = Quotas::new(0, 0, 2, Arc::new(Metrics::new()));
        let (alice, bob) = (quotas.usage("alice"), quotas.usage("bob"));
        let first = quotas.seat(&alice).unwrap();
        let _second = quotas.seat(&alice).unwrap();
        let refused = quotas.seat(&alice).unwrap_err();
        assert_eq!(refused, TooManyConnections { principal: "alice".to_owned(), limit: 2 });
        let _bob = quotas.seat(&bob).unwrap();
        drop(first);
        let _third = quotas.seat(&alice).unwrap();
        assert!(quotas.seat(&alice).is_err());
    }
}
