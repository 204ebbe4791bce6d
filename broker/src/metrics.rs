//! The broker's counters, in two forms:
//!
//! - totals (relaxed atomics) answered to the `Stats` request, which `ringmq-bench` reads;
//! - Prometheus metrics served at `/metrics` (see [`serve_http`]): per-topic message and byte
//!   counters, request and sync latency histograms, connections, the buffer pool, and per
//!   partition the ring's usage, laps, and earliest and next offsets.
//!
//! Nothing here adds a lock or an allocation per message: counters are bumped once per request
//! through handles resolved when a topic is opened, and partition gauges are read from the logs
//! only when `/metrics` is scraped.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use prometheus::{
    Counter, CounterVec, Encoder, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use ringmq_protocol::message::BrokerStats;
use ringmq_protocol::ErrorCode;

use crate::pool::PoolStats;

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

/// Latency buckets, seconds: 50 µs to 10 s.
const LATENCY_BUCKETS: &[f64] = &[
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
    2.5, 5.0, 10.0,
];

/// Every counter of the broker.
#[derive(Debug)]
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
    prometheus: Prometheus,
}

#[derive(Debug)]
struct Prometheus {
    registry: Registry,
    messages_in: IntCounterVec,
    bytes_in: IntCounterVec,
    messages_out: IntCounterVec,
    bytes_out: IntCounterVec,
    produce_duration: Histogram,
    fetch_duration: Histogram,
    sync_duration: Histogram,
    errors: Vec<IntCounter>,
    connections_open: IntGauge,
    connections_opened: IntCounter,
    connections_refused: IntCounter,
    tls_handshakes_failed: IntCounter,
    authentication_failures: IntCounter,
    duplicate_batches: IntCounter,
    group_rebalances: IntCounter,
    pool_buffers: IntGauge,
    pool_in_use: IntGauge,
    pool_exhausted: IntCounter,
    ring_capacity: IntGaugeVec,
    ring_used: IntGaugeVec,
    ring_wraps: IntGaugeVec,
    earliest_offset: IntGaugeVec,
    next_offset: IntGaugeVec,
    durable_offset: IntGaugeVec,
    group_lag: IntGaugeVec,
    principal_bytes_in: IntCounterVec,
    principal_bytes_out: IntCounterVec,
    principal_throttle: CounterVec,
    principal_authentication_failures: IntCounterVec,
}

/// One principal's counters, resolved once on its first request.
#[derive(Debug, Clone)]
pub struct PrincipalCounters {
    /// Batch bytes it produced.
    pub bytes_in: IntCounter,
    /// Batch bytes it fetched.
    pub bytes_out: IntCounter,
    /// Seconds its connections were held back for its produce quota.
    pub produce_throttle: Counter,
    /// Seconds its connections were held back for its fetch quota.
    pub fetch_throttle: Counter,
    /// Its refused logins.
    pub authentication_failures: IntCounter,
}

/// One topic's counters, resolved once when the topic is opened.
#[derive(Debug, Clone)]
pub struct TopicCounters {
    messages_in: IntCounter,
    bytes_in: IntCounter,
    messages_out: IntCounter,
    bytes_out: IntCounter,
}

impl TopicCounters {
    /// Counters registered nowhere, for the broker's internal logs (not exported).
    pub fn detached() -> Self {
        let counter = || IntCounter::new("internal", "internal").expect("valid metric");
        Self {
            messages_in: counter(),
            bytes_in: counter(),
            messages_out: counter(),
            bytes_out: counter(),
        }
    }

    /// Counts a batch appended.
    pub fn produced(&self, messages: u64, bytes: u64) {
        self.messages_in.inc_by(messages);
        self.bytes_in.inc_by(bytes);
    }

    /// Counts batches sent to a consumer.
    pub fn fetched(&self, messages: u64, bytes: u64) {
        self.messages_out.inc_by(messages);
        self.bytes_out.inc_by(bytes);
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

fn registered<T: prometheus::core::Collector + Clone + 'static>(
    registry: &Registry,
    metric: T,
) -> T {
    registry.register(Box::new(metric.clone())).expect("metric names are unique and valid");
    metric
}

impl Metrics {
    /// Fresh counters and a registry with every metric described.
    pub fn new() -> Self {
        let registry = Registry::new();
        let counter_vec = |name: &str, help: &str, labels: &[&str]| {
            registered(
                &registry,
                IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric"),
            )
        };
        let gauge_vec = |name: &str, help: &str, labels: &[&str]| {
            registered(
                &registry,
                IntGaugeVec::new(Opts::new(name, help), labels).expect("valid metric"),
            )
        };
        let histogram = |name: &str, help: &str| {
            let options = HistogramOpts::new(name, help).buckets(LATENCY_BUCKETS.to_vec());
            registered(&registry, Histogram::with_opts(options).expect("valid metric"))
        };
        let counter = |name: &str, help: &str| {
            registered(&registry, IntCounter::new(name, help).expect("valid metric"))
        };
        let gauge = |name: &str, help: &str| {
            registered(&registry, IntGauge::new(name, help).expect("valid metric"))
        };
        let errors_vec =
            counter_vec("ringmq_errors_total", "Error responses sent, by error code.", &["code"]);
        let partition = &["topic", "partition"];
        let prometheus = Prometheus {
            messages_in: counter_vec("ringmq_messages_in_total", "Records appended, by topic.", &["topic"]),
            bytes_in: counter_vec("ringmq_bytes_in_total", "Record batch bytes appended, by topic.", &["topic"]),
            messages_out: counter_vec("ringmq_messages_out_total", "Records sent to consumers, by topic.", &["topic"]),
            bytes_out: counter_vec("ringmq_bytes_out_total", "Record batch bytes sent to consumers, by topic.", &["topic"]),
            produce_duration: histogram(
                "ringmq_produce_duration_seconds",
                "Produce requests, from decoding to the acknowledgement (its sync included for synced acks).",
            ),
            fetch_duration: histogram(
                "ringmq_fetch_duration_seconds",
                "Fetch requests, from reading the log to the response written (long-poll wait excluded).",
            ),
            sync_duration: histogram("ringmq_sync_duration_seconds", "Syncs of partition logs (by sync_method) and of the consumer-group log (msync)."),
            errors: ErrorCode::ALL.iter().map(|code| errors_vec.with_label_values(&[code.name()])).collect(),
            connections_open: gauge("ringmq_connections_open", "Client connections open."),
            connections_opened: counter("ringmq_connections_opened_total", "Client connections accepted."),
            connections_refused: counter("ringmq_connections_refused_total", "Client connections refused at the connection limit."),
            authentication_failures: counter("ringmq_authentication_failures_total", "Logins refused: a wrong user name or password, or a malformed exchange."),
            tls_handshakes_failed: counter("ringmq_tls_handshakes_failed_total", "Client connections closed because their TLS handshake failed or timed out."),
            duplicate_batches: counter("ringmq_duplicate_batches_total", "Idempotent producers' retried batches acknowledged without being written again."),
            group_rebalances: counter("ringmq_group_rebalances_total", "Consumer group generations started (a member joined, left or expired)."),
            pool_buffers: gauge("ringmq_buffer_pool_buffers", "Read buffers in the pool."),
            pool_in_use: gauge("ringmq_buffer_pool_in_use", "Read buffers in use."),
            pool_exhausted: counter("ringmq_buffer_pool_exhausted_total", "Times a connection found the read buffer pool empty."),
            ring_capacity: gauge_vec("ringmq_ring_capacity_bytes", "Data area of each partition's ring.", partition),
            ring_used: gauge_vec("ringmq_ring_used_bytes", "Bytes between each partition's head and end.", partition),
            ring_wraps: gauge_vec("ringmq_ring_wraps", "Laps each partition's ring has completed.", partition),
            earliest_offset: gauge_vec("ringmq_partition_earliest_offset", "Earliest offset held.", partition),
            next_offset: gauge_vec("ringmq_partition_next_offset", "Offset the next record gets.", partition),
            durable_offset: gauge_vec("ringmq_partition_durable_offset", "Every record below this offset is synced.", partition),
            group_lag: gauge_vec(
                "ringmq_consumer_group_lag",
                "Records between a group's committed offset and the partition's next offset.",
                &["group", "topic", "partition"],
            ),
            principal_bytes_in: counter_vec("ringmq_principal_bytes_in_total", "Record batch bytes produced, by principal.", &["principal"]),
            principal_bytes_out: counter_vec("ringmq_principal_bytes_out_total", "Record batch bytes fetched, by principal.", &["principal"]),
            principal_throttle: registered(
                &registry,
                CounterVec::new(
                    Opts::new("ringmq_principal_throttle_seconds_total", "Time a principal's connections were held back for its quota, by principal and direction (produce, fetch)."),
                    &["principal", "direction"],
                )
                .expect("valid metric"),
            ),
            principal_authentication_failures: counter_vec("ringmq_principal_authentication_failures_total", "Refused logins of a known user, by user (failures naming unknown users count only in ringmq_authentication_failures_total).", &["principal"]),
            registry,
        };
        Self {
            records_in: AtomicU64::new(0),
            bytes_in: AtomicU64::new(0),
            bytes_out: AtomicU64::new(0),
            records_out: AtomicU64::new(0),
            produce_copy_bytes: AtomicU64::new(0),
            fetch_copy_bytes: AtomicU64::new(0),
            produce_requests: AtomicU64::new(0),
            fetch_requests: AtomicU64::new(0),
            connections_opened: AtomicU64::new(0),
            connections_closed: AtomicU64::new(0),
            connections_refused: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            prometheus,
        }
    }

    /// Adds `value` to a counter.
    pub fn add(counter: &AtomicU64, value: u64) {
        counter.fetch_add(value, Ordering::Relaxed);
    }

    /// The counters of one topic.
    pub fn topic(&self, name: &str) -> TopicCounters {
        let p = &self.prometheus;
        TopicCounters {
            messages_in: p.messages_in.with_label_values(&[name]),
            bytes_in: p.bytes_in.with_label_values(&[name]),
            messages_out: p.messages_out.with_label_values(&[name]),
            bytes_out: p.bytes_out.with_label_values(&[name]),
        }
    }

    /// The counters of one principal.
    pub fn principal(&self, name: &str) -> PrincipalCounters {
        let p = &self.prometheus;
        PrincipalCounters {
            bytes_in: p.principal_bytes_in.with_label_values(&[name]),
            bytes_out: p.principal_bytes_out.with_label_values(&[name]),
            produce_throttle: p.principal_throttle.with_label_values(&[name, "produce"]),
            fetch_throttle: p.principal_throttle.with_label_values(&[name, "fetch"]),
            authentication_failures: p.principal_authentication_failures.with_label_values(&[name]),
        }
    }

    /// Drops a deleted topic's series.
    pub fn forget_topic(&self, name: &str) {
        let p = &self.prometheus;
        for family in [&p.messages_in, &p.bytes_in, &p.messages_out, &p.bytes_out] {
            let _ = family.remove_label_values(&[name]);
        }
    }

    /// Counts an error response.
    pub fn error(&self, code: ErrorCode) {
        Self::add(&self.errors, 1);
        if let Some(index) = ErrorCode::ALL.iter().position(|known| *known == code) {
            self.prometheus.errors[index].inc();
        }
    }

    /// Records how long a produce request took.
    pub fn produce_took(&self, elapsed: Duration) {
        self.prometheus.produce_duration.observe(elapsed.as_secs_f64());
    }

    /// Records how long a fetch took to read and write.
    pub fn fetch_took(&self, elapsed: Duration) {
        self.prometheus.fetch_duration.observe(elapsed.as_secs_f64());
    }

    /// The histogram partitions record their syncs in.
    pub fn sync_histogram(&self) -> Histogram {
        self.prometheus.sync_duration.clone()
    }

    /// Counts a connection accepted.
    pub fn connection_opened(&self) {
        Self::add(&self.connections_opened, 1);
        self.prometheus.connections_opened.inc();
    }

    /// Counts a retried batch acknowledged without being written again.
    pub fn duplicate_batch(&self) {
        self.prometheus.duplicate_batches.inc();
    }

    /// Counts a consumer group generation started.
    pub fn group_rebalance(&self) {
        self.prometheus.group_rebalances.inc();
    }

    /// Counts a connection refused at the limit.
    pub fn connection_refused(&self) {
        Self::add(&self.connections_refused, 1);
        self.prometheus.connections_refused.inc();
    }

    /// Counts a refused login.
    pub fn authentication_failed(&self) {
        self.prometheus.authentication_failures.inc();
    }

    /// Counts a connection whose TLS handshake failed.
    pub fn tls_handshake_failed(&self) {
        self.prometheus.tls_handshakes_failed.inc();
    }

    /// The totals in the `Stats` response shape.
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
            creating_file_bytes: 0,
            creating_written_bytes: 0,
        }
    }

    /// The Prometheus text exposition, with the gauges that live elsewhere (partitions, the pool,
    /// groups) as the caller read them.
    pub fn render(
        &self,
        partitions: &[PartitionGauges<'_>],
        pool_stats: PoolStats,
        group_lags: &[GroupLag<'_>],
    ) -> String {
        let p = &self.prometheus;
        let opened = self.connections_opened.load(Ordering::Relaxed);
        let closed = self.connections_closed.load(Ordering::Relaxed);
        p.connections_open.set(i64::try_from(opened.saturating_sub(closed)).unwrap_or(i64::MAX));
        p.pool_buffers.set(i64::try_from(pool_stats.buffer_count).unwrap_or(i64::MAX));
        p.pool_in_use.set(i64::try_from(pool_stats.in_use).unwrap_or(i64::MAX));
        p.pool_exhausted.inc_by(pool_stats.exhausted.saturating_sub(p.pool_exhausted.get()));
        let gauges = [
            &p.ring_capacity,
            &p.ring_used,
            &p.ring_wraps,
            &p.earliest_offset,
            &p.next_offset,
            &p.durable_offset,
        ];
        for family in gauges {
            family.reset();
        }
        let as_i64 = |value: u64| i64::try_from(value).unwrap_or(i64::MAX);
        for gauges in partitions {
            let index = gauges.partition.to_string();
            let labels = [gauges.topic, index.as_str()];
            p.ring_capacity.with_label_values(&labels).set(as_i64(gauges.capacity));
            p.ring_used.with_label_values(&labels).set(as_i64(gauges.used_bytes));
            p.ring_wraps.with_label_values(&labels).set(as_i64(gauges.wraps));
            p.earliest_offset.with_label_values(&labels).set(as_i64(gauges.earliest_offset));
            p.next_offset.with_label_values(&labels).set(as_i64(gauges.next_offset));
            p.durable_offset.with_label_values(&labels).set(as_i64(gauges.durable_offset));
        }
        p.group_lag.reset();
        for lag in group_lags {
            let partition = lag.partition.to_string();
            p.group_lag
                .with_label_values(&[lag.group, lag.topic, partition.as_str()])
                .set(as_i64(lag.records));
        }
        let mut out = Vec::with_capacity(16 << 10);
        // Encoding into a Vec cannot fail.
        let _ = TextEncoder::new().encode(&p.registry.gather(), &mut out);
        String::from_utf8(out).unwrap_or_default()
    }
}

/// A partition's gauges, as [`Metrics::render`] shows them.
#[derive(Debug, Clone, Copy)]
pub struct PartitionGauges<'a> {
    /// The topic.
    pub topic: &'a str,
    /// The partition.
    pub partition: u32,
    /// Ring capacity, bytes.
    pub capacity: u64,
    /// Bytes retained.
    pub used_bytes: u64,
    /// Laps the ring has completed.
    pub wraps: u64,
    /// Earliest offset held.
    pub earliest_offset: u64,
    /// Next offset to be written.
    pub next_offset: u64,
    /// Every record below it is synced.
    pub durable_offset: u64,
}

/// A consumer group's lag on one partition, as [`Metrics::render`] shows it.
#[derive(Debug, Clone, Copy)]
pub struct GroupLag<'a> {
    /// The group.
    pub group: &'a str,
    /// The topic.
    pub topic: &'a str,
    /// The partition.
    pub partition: u32,
    /// Records behind the partition's end.
    pub records: u64,
}

/// Renders the metrics page (async: group lags are read under the coordinator's lock).
pub type Render = Arc<
    dyn Fn() -> std::pin::Pin<Box<dyn std::future::Future<Output = String> + Send>> + Send + Sync,
>;

/// Serves `GET /metrics` on `listener` until the task is dropped. A deliberately small HTTP/1.1
/// responder: one request per connection, request head at most 8 KiB, 5 s to send it.
pub async fn serve_http(listener: TcpListener, render: Render) {
    loop {
        let Ok((mut stream, peer)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let render = Arc::clone(&render);
        tokio::spawn(async move {
            let mut head = Vec::with_capacity(1024);
            let read = tokio::time::timeout(Duration::from_secs(5), async {
                let mut chunk = [0u8; 1024];
                while !head.windows(4).any(|window| window == b"\r\n\r\n") && head.len() < 8192 {
                    let read = stream.read(&mut chunk).await?;
                    if read == 0 {
                        break;
                    }
                    head.extend_from_slice(&chunk[..read]);
                }
                std::io::Result::Ok(())
            })
            .await;
            if !matches!(read, Ok(Ok(()))) {
                return;
            }
            let request_line = head.split(|&byte| byte == b'\r').next().unwrap_or_default();
            let response = if request_line.starts_with(b"GET /metrics ") {
                let body = render().await;
                format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                )
            } else {
                tracing::debug!(%peer, "metrics endpoint: not found");
                "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                    .to_owned()
            };
            let _ =
                tokio::time::timeout(Duration::from_secs(5), stream.write_all(response.as_bytes()))
                    .await;
        });
    }
}

/// Binds the metrics listener.
///
/// # Errors
///
/// The bind error.
pub async fn bind(address: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(address).await
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

    #[test]
    fn every_error_code_has_a_series() {
        let metrics = Metrics::new();
        metrics.error(ErrorCode::UnknownTopic);
        metrics.error(ErrorCode::UnknownTopic);
        let families = metrics.prometheus.registry.gather();
        let errors = families.iter().find(|family| family.name() == "ringmq_errors_total").unwrap();
        assert_eq!(errors.get_metric().len(), ErrorCode::ALL.len());
    }
}
