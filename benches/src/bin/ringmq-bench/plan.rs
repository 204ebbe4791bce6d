//! What a run is asked to do and what it measured: the types and helpers the native driver
//! (`workload.rs`) and the Kafka driver (`kafka.rs`) share.

use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use ringmq_client::Acks;

/// What to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub(crate) enum Mode {
    /// Producers only; throughput until every record is acknowledged.
    Produce,
    /// Consumers only, reading a topic filled beforehand.
    Consume,
    /// Producers and consumers at once; latency from send to receive.
    EndToEnd,
}

/// Which of the broker's front ends the clients use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub(crate) enum Protocol {
    /// ringmq's own protocol, through `ringmq-client`.
    Native,
    /// Kafka's, through librdkafka (needs the `kafka` feature).
    Kafka,
}

impl Protocol {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Protocol::Native => "native",
            Protocol::Kafka => "kafka",
        }
    }
}

/// One run's parameters.
#[derive(Debug, Clone)]
pub(crate) struct Workload {
    pub(crate) mode: Mode,
    pub(crate) topic: String,
    pub(crate) producers: usize,
    pub(crate) consumers: usize,
    pub(crate) partitions: u32,
    pub(crate) capacity: u64,
    pub(crate) size: usize,
    pub(crate) count: u64,
    pub(crate) warmup: u64,
    pub(crate) batch_bytes: usize,
    pub(crate) linger: Duration,
    pub(crate) acks: Acks,
    pub(crate) rate: Option<u64>,
    pub(crate) max_in_flight: usize,
    /// Idempotent producers (the client's default).
    pub(crate) idempotence: bool,
    pub(crate) fetch_min_bytes: u32,
    pub(crate) protocol: Protocol,
    /// The broker's Kafka listener (`host:port`), for the Kafka mode.
    pub(crate) kafka_address: String,
}

/// Messages moved in one direction, and how long it took.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Phase {
    pub(crate) messages: u64,
    pub(crate) seconds: f64,
}

/// What a run measured.
#[derive(Debug)]
pub(crate) struct Measured {
    pub(crate) produce: Option<Phase>,
    pub(crate) consume: Option<Phase>,
    /// Latency in ns: end to end (send to receive), or produce to acknowledgement.
    pub(crate) latency: Histogram<u64>,
}

/// Counts messages for the progress display.
pub(crate) type Progress = Arc<AtomicU64>;

pub(crate) fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 600_000_000_000, 3).expect("valid histogram bounds")
}

pub(crate) fn nanos_since(epoch: Instant) -> u64 {
    u64::try_from(epoch.elapsed().as_nanos()).unwrap_or(u64::MAX)
}
