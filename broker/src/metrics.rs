//! The broker's counters: cheap relaxed atomics, bumped once per request (never per message),
//! read by the `Stats` request and the benchmark tool.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

use ringmq_protocol::message::BrokerStats;

static ALLOCATION_COUNTER: OnceLock<fn() -> u64> = OnceLock::new();

/// Installs the function that reads the process's heap allocation count (the `ringmq` binary
/// counts allocations with an instrumented global allocator). Without it, `Stats` reports 0.
pub fn set_allocation_counter(counter: fn() -> u64) {
    let _ = ALLOCATION_COUNTER.set(counter);
}

/// Heap allocations made by the process so far, if counted.
pub fn allocations() -> u64 {
    ALLOCATION_COUNTER.get().map_or(0, |counter| counter())
}

/// CPU time and peak memory of this process, from `/proc/self` (zeros where unavailable).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ProcessUsage {
    /// User plus system CPU time, microseconds.
    pub cpu_time_us: u64,
    /// Peak resident set size, bytes.
    pub peak_rss_bytes: u64,
}

/// Reads this process's CPU time and peak RSS.
pub fn process_usage() -> ProcessUsage {
    let cpu_time_us = std::fs::read_to_string("/proc/self/stat").ok().and_then(|stat| {
        // Fields after the command name, which may itself hold spaces, end at the last ')'.
        let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
        let ticks = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
        Some(ticks * 1_000_000 / rustix::param::clock_ticks_per_second().max(1))
    });
    let peak_rss_bytes = std::fs::read_to_string("/proc/self/status").ok().and_then(|status| {
        let line = status.lines().find(|line| line.starts_with("VmHWM:"))?;
        Some(line.split_whitespace().nth(1)?.parse::<u64>().ok()? * 1024)
    });
    ProcessUsage {
        cpu_time_us: cpu_time_us.unwrap_or(0),
        peak_rss_bytes: peak_rss_bytes.unwrap_or(0),
    }
}

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
        let usage = process_usage();
        BrokerStats {
            records_in: get(&self.records_in),
            bytes_in: get(&self.bytes_in),
            bytes_out: get(&self.bytes_out),
            records_out: get(&self.records_out),
            produce_copy_bytes: get(&self.produce_copy_bytes),
            fetch_copy_bytes: get(&self.fetch_copy_bytes),
            allocations: allocations(),
            produce_requests: get(&self.produce_requests),
            fetch_requests: get(&self.fetch_requests),
            peak_rss_bytes: usage.peak_rss_bytes,
            cpu_time_us: usage.cpu_time_us,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn process_usage_reads_proc() {
        let spin = std::time::Instant::now();
        while spin.elapsed() < std::time::Duration::from_millis(30) {
            std::hint::black_box(0);
        }
        let usage = process_usage();
        assert!(usage.peak_rss_bytes > 0);
        assert!(usage.cpu_time_us > 0);
    }
}
