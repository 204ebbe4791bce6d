//! What a run is asked to do and what it measured: the types and helpers the native driver
//! (`workload.rs`) and the Kafka driver (`kafka.rs`) share.

use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use ringmq_client::Acks;

/// Said when `--protocol kafka` is asked of a build without the Kafka mode.
pub(crate) const NO_KAFKA: &str = "--protocol kafka needs a ringmq-bench built with the Kafka \
    mode: cargo build --release -p ringmq-benches --features kafka";

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
    /// TLS for the native protocol's connections, if the run is over TLS.
    pub(crate) tls: Option<ringmq_client::Tls>,
    /// The login of every connection, if the broker requires one (`--scram`).
    pub(crate) credentials: Option<ringmq_client::Credentials>,
    /// How long the clients' connections busy-poll before parking (zero: off).
    pub(crate) busy_poll: std::time::Duration,
    /// How long a local reader at the end of the data spins on the cursor page before it sleeps.
    pub(crate) local_spin: std::time::Duration,
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
    /// How a paced run waits for each message's send time.
    pub(crate) pacer: Pacer,
    pub(crate) max_in_flight: usize,
    /// Idempotent producers (the client's default).
    pub(crate) idempotence: bool,
    pub(crate) fetch_min_bytes: u32,
    pub(crate) protocol: Protocol,
    /// The broker's Kafka listener (`host:port`), for the Kafka mode.
    pub(crate) kafka_address: String,
    /// The broker's local listener, when the consumers read on the broker's host through it
    /// (`--local`): they map the rings and read them in place.
    pub(crate) local: Option<std::path::PathBuf>,
}

/// How a run with a target rate waits for each message's send time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Pacer {
    /// A thread of its own per producer sleeps (`nanosleep`, 1 µs timer slack) until each send
    /// time and sends then: never early, late only by the kernel's wake-up.
    Thread,
    /// The producer task sends every message due within the next millisecond at once, then
    /// sleeps on tokio's timer (1 ms ticks): bursts of a millisecond's messages, sent up to 1 ms
    /// early or woken up to about 1 ms late. Kept to compare with what earlier runs measured.
    Tokio,
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
    /// What the local readers did, in a `--local` run.
    pub(crate) local_reads: Option<LocalReads>,
}

/// The local readers' own counts over a run.
#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
pub(crate) struct LocalReads {
    /// Batches read from the mapped rings.
    pub(crate) batches: u64,
    /// `LocalWait` requests (sleeps at the end of a partition): the only requests, so the only
    /// syscalls, a local reader makes.
    pub(crate) waits: u64,
}

/// What the consumers of a run received.
#[derive(Debug)]
pub(crate) struct Consumed {
    /// Receive time minus send time of every message, ns.
    pub(crate) latency: Histogram<u64>,
    /// When the last message arrived.
    pub(crate) finished: Instant,
    pub(crate) local_reads: Option<LocalReads>,
}

/// Counts messages for the progress display.
pub(crate) type Progress = Arc<AtomicU64>;

pub(crate) fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 600_000_000_000, 3).expect("valid histogram bounds")
}

pub(crate) fn nanos_since(epoch: Instant) -> u64 {
    u64::try_from(epoch.elapsed().as_nanos()).unwrap_or(u64::MAX)
}

/// One producer's messages: their pacing at its share of the rate, and the stamps each carries
/// (its intended send time and its number in the first 16 bytes, and a record timestamp from the
/// same clock reading). The same for every front end, so the figures compare.
#[derive(Debug)]
pub(crate) struct Schedule {
    epoch: Instant,
    started: Instant,
    interval: Option<Duration>,
    wall_at_epoch_ms: i64,
    index: u64,
    payload: Vec<u8>,
}

impl Schedule {
    /// Producer `index` of `producers`, its clock starting now.
    pub(crate) fn new(workload: &Workload, index: u64, producers: u64, epoch: Instant) -> Self {
        let interval = workload
            .rate
            .map(|rate| Duration::from_secs_f64(producers as f64 / rate.max(1) as f64));
        let wall_at_epoch_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |now| now.as_millis() as i64)
            - epoch.elapsed().as_millis() as i64;
        Self {
            epoch,
            started: Instant::now(),
            interval,
            wall_at_epoch_ms,
            index,
            payload: (0..workload.size).map(|byte| (byte % 251) as u8).collect(),
        }
    }

    /// When message `sequence` is meant to be sent, if the run has a rate: the caller waits for
    /// it when it is more than a millisecond away.
    pub(crate) fn intended(&self, sequence: u64) -> Option<Instant> {
        self.interval.map(|interval| self.started + interval.mul_f64(sequence as f64))
    }

    /// Stamps message `sequence` into the payload: its send time (the intended one, with a
    /// rate, so a stall shows in the latency) and its number. Returns the send time (ns since
    /// the epoch) and the record timestamp (ms since the Unix epoch).
    pub(crate) fn stamp(&mut self, sequence: u64, intended: Option<Instant>) -> (u64, i64) {
        let sent = match intended {
            Some(intended) => {
                u64::try_from(intended.duration_since(self.epoch).as_nanos()).unwrap_or(u64::MAX)
            }
            None => nanos_since(self.epoch),
        };
        self.payload[..8].copy_from_slice(&sent.to_le_bytes());
        self.payload[8..16].copy_from_slice(&(self.index << 48 | sequence).to_le_bytes());
        (sent, self.wall_at_epoch_ms + (sent / 1_000_000) as i64)
    }

    /// The message as last stamped.
    pub(crate) fn payload(&self) -> &[u8] {
        &self.payload
    }
}
