//! The broker's counters: cheap relaxed atomics, bumped once per request (never per message),
//! read by the `Stats` request and the benchmark tool.

use std::sync::atomic::{AtomicU64, Ordering};

use ringmq_protocol::message::BrokerStats;

/// Counters since the broker started.
#[derive(Debug, Default)]
pub struct Metrics {
    /// Records appended.
    pub records_in: AtomicU64,
    /// Batch bytes appended.
    pub bytes_in: AtomicU64,
    /// Batch bytes sent to consumers.
    pub bytes_out: AtomicU64,
    /// Records sent to consumers.
    pub records_out: AtomicU64,
    /// Bytes copied in user space on the produce path (socket buffer to log, buffer compaction).
    pub produce_copy_bytes: AtomicU64,
    /// Bytes copied in user space on the fetch path (none: fetches are written from the mapping).
    pub fetch_copy_bytes: AtomicU64,
    /// Produce requests served.
    pub produce_requests: AtomicU64,
    /// Fetch requests served.
    pub fetch_requests: AtomicU64,
    /// Connections accepted.
    pub connections_opened: AtomicU64,
    /// Connections closed.
    pub connections_closed: AtomicU64,
    /// Connections refused at the limit.
    pub connections_refused: AtomicU64,
    /// Error responses sent.
    pub errors: AtomicU64,
}

impl Metrics {
    /// Adds `value` to a counter.
    pub fn add(counter: &AtomicU64, value: u64) {
        counter.fetch_add(value, Ordering::Relaxed);
    }

    /// The counters in the `Stats` response shape.
    pub fn snapshot(&self) -> BrokerStats {
        let get = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        BrokerStats {
            records_in: get(&self.records_in),
            bytes_in: get(&self.bytes_in),
            bytes_out: get(&self.bytes_out),
            records_out: get(&self.records_out),
            produce_copy_bytes: get(&self.produce_copy_bytes),
            fetch_copy_bytes: get(&self.fetch_copy_bytes),
            allocations: 0,
            produce_requests: get(&self.produce_requests),
            fetch_requests: get(&self.fetch_requests),
            peak_rss_bytes: 0,
            cpu_time_us: 0,
        }
    }
}
