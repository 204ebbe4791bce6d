//! What a run reports: a table for people, JSON and CSV for scripts.

use serde::Serialize;

/// Latency percentiles, microseconds.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub(crate) struct Latency {
    pub(crate) p50: f64,
    pub(crate) p90: f64,
    pub(crate) p99: f64,
    pub(crate) p999: f64,
    pub(crate) max: f64,
    pub(crate) samples: u64,
}

/// One run's figures. Field names are the JSON keys scripts rely on.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Report {
    pub(crate) mode: crate::plan::Mode,
    pub(crate) protocol: crate::plan::Protocol,
    /// `tcp`, `tls`, `tls-scram` (over TLS, logged in, every request rule-checked), or `local`
    /// (producers over TCP, consumers reading the rings in place through the local listener).
    pub(crate) transport: &'static str,
    /// In a `local` run: batches the local readers read from the mapped rings.
    pub(crate) local_batches: Option<u64>,
    /// In a `local` run: the readers' `LocalWait` requests (sleeps at the end of a partition),
    /// their only requests.
    pub(crate) local_waits: Option<u64>,
    pub(crate) message_size: usize,
    pub(crate) messages: u64,
    pub(crate) producers: usize,
    pub(crate) consumers: usize,
    pub(crate) partitions: u32,
    pub(crate) acks: String,
    pub(crate) broker_sync: String,
    pub(crate) batch_bytes: usize,
    pub(crate) linger_ms: u64,
    pub(crate) fetch_min_bytes: u32,
    pub(crate) target_rate: Option<u64>,
    pub(crate) produce_msgs_per_s: Option<f64>,
    pub(crate) produce_mb_per_s: Option<f64>,
    pub(crate) consume_msgs_per_s: Option<f64>,
    pub(crate) consume_mb_per_s: Option<f64>,
    pub(crate) baseline_mb_per_s: Option<f64>,
    pub(crate) consume_of_baseline: Option<f64>,
    /// The disk yardstick: the same bytes in batch-size writes, one `fdatasync` each.
    pub(crate) disk_mb_per_s: Option<f64>,
    /// Produce MB/s over the disk yardstick (what synced produce is read against).
    pub(crate) produce_of_disk: Option<f64>,
    /// End to end (send to receive), or produce to acknowledgement in produce mode.
    pub(crate) latency_kind: &'static str,
    pub(crate) latency_us: Latency,
    pub(crate) broker_allocs_per_msg: f64,
    pub(crate) produce_copy_ratio: f64,
    pub(crate) fetch_copy_ratio: f64,
    pub(crate) broker_cpu_s_per_million_msgs: f64,
    pub(crate) bench_cpu_s_per_million_msgs: f64,
    pub(crate) broker_peak_rss_bytes: u64,
    /// The broker's own counters over the measured part (the Stats request).
    pub(crate) broker_records_in: u64,
    pub(crate) broker_records_out: u64,
    pub(crate) broker_bytes_in: u64,
    pub(crate) broker_bytes_out: u64,
    pub(crate) broker: String,
    /// Worker threads of the bench's runtime (`--client-threads`; 0: one per core).
    pub(crate) client_threads: usize,
    /// The bench's connections' busy-poll, µs (`--client-busy-poll-us`; 0: off).
    pub(crate) client_busy_poll_us: u64,
    pub(crate) host: String,
    pub(crate) commit: String,
}

impl Report {
    /// A table for people.
    pub(crate) fn table(&self) -> String {
        let mut lines = Vec::new();
        let mut row = |name: &str, value: String| lines.push(format!("{name:<34} {value}"));
        let rate = self
            .target_rate
            .map_or_else(|| "as fast as possible".to_owned(), |rate| format!("{rate} msgs/s"));
        let protocol = self.protocol.name();
        let over = match self.transport {
            "tls" => format!("{protocol} over TLS"),
            "tls-scram" => format!("{protocol} over TLS, logged in with SCRAM-SHA-256"),
            "local" => format!("{protocol}, consumers reading the rings in place (local)"),
            _ => protocol.to_owned(),
        };
        row("mode", format!("{:?} over {over}, {rate}", self.mode));
        row(
            "workload",
            format!(
                "{} x {} B, {} producer(s), {} consumer(s), {} partition(s)",
                self.messages, self.message_size, self.producers, self.consumers, self.partitions
            ),
        );
        row(
            "producer / consumer",
            format!(
                "acks={}, batch {} B, linger {} ms / fetch min {} B",
                self.acks, self.batch_bytes, self.linger_ms, self.fetch_min_bytes
            ),
        );
        row("broker", format!("{} (sync {})", self.broker, self.broker_sync));
        if let (Some(msgs), Some(mb)) = (self.produce_msgs_per_s, self.produce_mb_per_s) {
            row("produce", format!("{msgs:>12.0} msgs/s {mb:>10.1} MB/s"));
        }
        if let (Some(msgs), Some(mb)) = (self.consume_msgs_per_s, self.consume_mb_per_s) {
            row("consume", format!("{msgs:>12.0} msgs/s {mb:>10.1} MB/s"));
        }
        if let Some(baseline) = self.baseline_mb_per_s {
            row("raw TCP yardstick", format!("{:>31.1} MB/s", baseline));
        }
        if let Some(ratio) = self.consume_of_baseline {
            row("consume / yardstick", format!("{:>30.1} %", ratio * 100.0));
        }
        if let Some(disk) = self.disk_mb_per_s {
            row(
                &format!("disk yardstick ({} B + fdatasync)", self.batch_bytes),
                format!("{disk:>31.1} MB/s"),
            );
        }
        if let Some(ratio) = self.produce_of_disk {
            row("produce / disk yardstick", format!("{:>30.1} %", ratio * 100.0));
        }
        if let (Some(batches), Some(waits)) = (self.local_batches, self.local_waits) {
            row(
                "local reads",
                format!(
                    "{batches} batches, {waits} LocalWait requests ({:.3} per batch)",
                    waits as f64 / batches.max(1) as f64
                ),
            );
        }
        let latency = &self.latency_us;
        if latency.samples > 0 {
            row(
                &format!("latency ({}), us", self.latency_kind),
                format!(
                    "p50 {:.0}  p90 {:.0}  p99 {:.0}  p99.9 {:.0}  max {:.0}  ({} samples)",
                    latency.p50,
                    latency.p90,
                    latency.p99,
                    latency.p999,
                    latency.max,
                    latency.samples
                ),
            );
        }
        row("broker heap allocations / msg", format!("{:.5}", self.broker_allocs_per_msg));
        row("bytes copied / byte, produce", format!("{:.3}", self.produce_copy_ratio));
        row("bytes copied / byte, fetch", format!("{:.3}", self.fetch_copy_ratio));
        row(
            "CPU s per million msgs",
            format!(
                "broker {:.2}, bench {:.2}",
                self.broker_cpu_s_per_million_msgs, self.bench_cpu_s_per_million_msgs
            ),
        );
        row(
            "broker peak RSS",
            bytesize::ByteSize::b(self.broker_peak_rss_bytes).display().iec().to_string(),
        );
        row("host", self.host.clone());
        row("commit", self.commit.clone());
        lines.join("\n")
    }

    /// The CSV header line.
    pub(crate) fn csv_header() -> &'static str {
        "mode,message_size,messages,producers,consumers,partitions,acks,produce_msgs_per_s,produce_mb_per_s,consume_msgs_per_s,consume_mb_per_s,baseline_mb_per_s,latency_p50_us,latency_p99_us,latency_p999_us,latency_max_us,broker_allocs_per_msg,produce_copy_ratio,fetch_copy_ratio,broker_cpu_s_per_million_msgs,bench_cpu_s_per_million_msgs,broker_peak_rss_bytes,protocol,transport,disk_mb_per_s,target_rate"
    }

    /// One CSV row.
    pub(crate) fn csv_row(&self) -> String {
        let option =
            |value: Option<f64>| value.map_or_else(String::new, |value| format!("{value:.3}"));
        format!(
            "{},{},{},{},{},{},{},{},{},{},{},{},{:.1},{:.1},{:.1},{:.1},{:.6},{:.4},{:.4},{:.3},{:.3},{},{},{},{},{}",
            serde_json::to_value(self.mode).ok().and_then(|mode| mode.as_str().map(str::to_owned)).unwrap_or_default(),
            self.message_size,
            self.messages,
            self.producers,
            self.consumers,
            self.partitions,
            self.acks,
            option(self.produce_msgs_per_s),
            option(self.produce_mb_per_s),
            option(self.consume_msgs_per_s),
            option(self.consume_mb_per_s),
            option(self.baseline_mb_per_s),
            self.latency_us.p50,
            self.latency_us.p99,
            self.latency_us.p999,
            self.latency_us.max,
            self.broker_allocs_per_msg,
            self.produce_copy_ratio,
            self.fetch_copy_ratio,
            self.broker_cpu_s_per_million_msgs,
            self.bench_cpu_s_per_million_msgs,
            self.broker_peak_rss_bytes,
            self.protocol.name(),
            self.transport,
            option(self.disk_mb_per_s),
            self.target_rate.map_or_else(String::new, |rate| rate.to_string()),
        )
    }
}
