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

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::time::Instant;

use crate::metrics::{Metrics, PrincipalCounters};

/// Longest a single throttle asks a connection to wait (Kafka caps it the same way, by its
/// quota window), so one huge batch does not silence a connection for minutes.
pub const THROTTLE_MAX: Duration = Duration::from_secs(30);

/// The quotas of the broker: the same for every principal, counted per principal.
#[derive(Debug)]
pub(super) struct Quotas {
    produce: u64,
    fetch: u64,
    metrics: Arc<Metrics>,
    principals: Mutex<HashMap<Arc<str>, Arc<Usage>>>,
}

/// One principal's buckets and counters, shared by all its connections.
#[derive(Debug)]
pub struct Usage {
    produce: Bucket,
    fetch: Bucket,
    counters: PrincipalCounters,
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
        // At most one second of burst.
        level.tokens = (level.tokens + elapsed * rate).min(rate) - bytes as f64;
        level.at = now;
        if level.tokens >= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(-level.tokens / rate).min(THROTTLE_MAX)
        }
    }
}

impl Quotas {
    pub(super) fn new(produce: u64, fetch: u64, metrics: Arc<Metrics>) -> Self {
        Self { produce, fetch, metrics, principals: Mutex::new(HashMap::new()) }
    }

    /// The usage of `principal`, made on its first request. Principals are the broker's users
    /// and the subjects of certificates its CA signed (and `ANONYMOUS`), so the map stays as
    /// small as the set of identities the operator allowed.
    pub(super) fn usage(&self, principal: &str) -> Arc<Usage> {
        let mut principals = self.principals.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(usage) = principals.get(principal) {
            return Arc::clone(usage);
        }
        let usage = Arc::new(Usage {
            produce: Bucket::new(self.produce),
            fetch: Bucket::new(self.fetch),
            counters: self.metrics.principal(principal),
        });
        principals.insert(Arc::from(principal), Arc::clone(&usage));
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
        assert_eq!(slow.take(1 << 30, Instant::now()), THROTTLE_MAX);
    }

    #[test]
    fn each_principal_has_its_own_buckets() {
        let quotas = Quotas::new(1000, 0, Arc::new(Metrics::new()));
        let alice = quotas.usage("alice");
        assert_eq!(alice.take(Direction::Produce, 1000), Duration::ZERO);
        assert!(alice.take(Direction::Produce, 1000) > Duration::ZERO);
        assert!(Arc::ptr_eq(&alice, &quotas.usage("alice")));
        assert_eq!(quotas.usage("bob").take(Direction::Produce, 1000), Duration::ZERO);
        // No fetch quota.
        assert_eq!(alice.take(Direction::Fetch, 1 << 30), Duration::ZERO);
    }
}
