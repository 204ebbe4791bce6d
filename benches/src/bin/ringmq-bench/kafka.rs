//! The Kafka mode: the same workloads through the broker's Kafka listener, driven by librdkafka
//! (the `rdkafka` crate). Messages carry the same 16-byte stamp as the native mode's (send time,
//! producer and sequence), producers and consumers run on their own threads (librdkafka's API is
//! blocking), and the figures are computed by the same code.
//!
//! The producer is configured from the workload as the native one is: `batch.size` from
//! `--batch-bytes`, `linger.ms`, `acks` (none 0, written 1, synced all), idempotence, and
//! `max.in.flight` (at most 5 with idempotence, librdkafka's limit). Messages have no key, so
//! librdkafka spreads them over the partitions.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use hdrhistogram::Histogram;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::Message;
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use ringmq_client::{Acks, StartOffset};

use crate::plan::{histogram, nanos_since, Progress, Schedule, Workload};

/// Counts acknowledgements and, when measuring, records one in 16 latencies.
struct Deliveries {
    epoch: Instant,
    latency: Option<Mutex<Histogram<u64>>>,
    acked: AtomicU64,
    failed: AtomicU64,
    first_error: Mutex<Option<String>>,
}

impl ClientContext for Deliveries {}

impl ProducerContext for Deliveries {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        match result {
            Ok(message) => {
                self.acked.fetch_add(1, Ordering::Relaxed);
                let Some(latency) = &self.latency else { return };
                let payload = message.payload().unwrap_or_default();
                let stamp = |range: std::ops::Range<usize>| {
                    payload
                        .get(range)
                        .and_then(|bytes| bytes.try_into().ok())
                        .map(u64::from_le_bytes)
                };
                if let (Some(sent), Some(sequence)) = (stamp(0..8), stamp(8..16)) {
                    if sequence % 16 == 0 {
                        let took = nanos_since(self.epoch).saturating_sub(sent).max(1);
                        let _ = latency.lock().map(|mut histogram| histogram.record(took));
                    }
                }
            }
            Err((error, _)) => {
                self.failed.fetch_add(1, Ordering::Relaxed);
                if let Ok(mut first) = self.first_error.lock() {
                    first.get_or_insert_with(|| error.to_string());
                }
            }
        }
    }
}

fn acks(acks: Acks) -> &'static str {
    match acks {
        Acks::None => "0",
        Acks::Written => "1",
        _ => "all",
    }
}

/// Sends `count` messages from `workload.producers` producers (threads) and waits for every
/// acknowledgement; with `latency`, one in 16 has its acknowledgement time recorded.
pub(crate) async fn produce_all(
    workload: &Workload,
    count: u64,
    latency: Option<&Arc<tokio::sync::Mutex<Histogram<u64>>>>,
    epoch: Instant,
    progress: &Progress,
) -> anyhow::Result<()> {
    let bootstrap = workload.kafka_address.as_str();
    let producers = workload.producers.max(1) as u64;
    let mut threads = Vec::new();
    for index in 0..producers {
        let share = count / producers + u64::from(index < count % producers);
        let (bootstrap, workload) = (bootstrap.to_owned(), workload.clone());
        let measure = latency.is_some();
        let progress = Arc::clone(progress);
        threads.push(tokio::task::spawn_blocking(move || {
            produce_one(&bootstrap, &workload, share, index, producers, measure, epoch, &progress)
        }));
    }
    for thread in threads {
        let local = thread.await.context("producer thread")??;
        if let (Some(latency), Some(local)) = (latency, local) {
            latency.lock().await.add(&local).context("merging histograms")?;
        }
    }
    Ok(())
}

#[allow(clippy::too_many_arguments, reason = "one producer's whole job")]
fn produce_one(
    bootstrap: &str,
    workload: &Workload,
    count: u64,
    index: u64,
    producers: u64,
    measure: bool,
    epoch: Instant,
    progress: &Progress,
) -> anyhow::Result<Option<Histogram<u64>>> {
    if workload.idempotence && workload.acks != Acks::Synced {
        bail!(
            "librdkafka's idempotent producer needs acks=all (here: --acks synced); for acks=1 \
             (--acks written) pass --no-idempotence"
        );
    }
    let in_flight = match workload.idempotence {
        true => workload.max_in_flight.clamp(1, 5),
        false => workload.max_in_flight.max(1),
    };
    let context = Deliveries {
        epoch,
        latency: measure.then(|| Mutex::new(histogram())),
        acked: AtomicU64::new(0),
        failed: AtomicU64::new(0),
        first_error: Mutex::new(None),
    };
    let producer: BaseProducer<Deliveries> = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("acks", acks(workload.acks))
        .set("linger.ms", workload.linger.as_millis().to_string())
        .set("batch.size", workload.batch_bytes.to_string())
        .set("enable.idempotence", workload.idempotence.to_string())
        .set("max.in.flight.requests.per.connection", in_flight.to_string())
        .set("queue.buffering.max.messages", "1000000")
        .set("queue.buffering.max.kbytes", "1048576")
        .set("message.max.bytes", (workload.batch_bytes.max(workload.size) + 4096).to_string())
        .create_with_context(context)
        .context("creating the librdkafka producer")?;
    let mut schedule = Schedule::new(workload, index, producers, epoch);
    for sequence in 0..count {
        let intended = schedule.intended(sequence);
        if let Some(intended) = intended {
            let now = Instant::now();
            if intended > now + Duration::from_millis(1) {
                producer.poll(intended - now);
            }
        }
        let (_, timestamp) = schedule.stamp(sequence, intended);
        loop {
            let record: BaseRecord<'_, (), [u8]> =
                BaseRecord::to(&workload.topic).payload(schedule.payload()).timestamp(timestamp);
            match producer.send(record) {
                Ok(()) => break,
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                    producer.poll(Duration::from_millis(5));
                }
                Err((error, _)) => bail!("librdkafka refused a message: {error}"),
            }
        }
        if sequence % 256 == 255 {
            producer.poll(Duration::ZERO);
            progress.fetch_add(256, Ordering::Relaxed);
        }
    }
    progress.fetch_add(count % 256, Ordering::Relaxed);
    producer.flush(Duration::from_secs(120)).context("waiting for acknowledgements")?;
    let context = producer.context();
    let failed = context.failed.load(Ordering::Relaxed);
    if failed > 0 {
        let first = context.first_error.lock().ok().and_then(|first| first.clone());
        bail!("{failed} messages failed; the first: {}", first.unwrap_or_default());
    }
    let acked = context.acked.load(Ordering::Relaxed);
    if acked != count {
        bail!("{acked} of {count} messages acknowledged");
    }
    Ok(context.latency.as_ref().and_then(|latency| latency.lock().ok().map(|h| h.clone())))
}

/// Reads `count` messages across every partition with `workload.consumers` consumers (threads),
/// each assigned its share of the partitions; returns the latency of each (receive minus send)
/// and when the last arrived.
pub(crate) async fn consume_all(
    workload: &Workload,
    count: u64,
    start: StartOffset,
    epoch: Instant,
    progress: &Progress,
) -> anyhow::Result<(Histogram<u64>, Instant)> {
    let bootstrap = workload.kafka_address.as_str();
    let received = Arc::new(AtomicU64::new(0));
    let consumers = workload.consumers.clamp(1, workload.partitions as usize);
    // Where to start, resolved before returning: an end-to-end run starts producing next.
    let starts = {
        let (bootstrap, topic, partitions) =
            (bootstrap.to_owned(), workload.topic.clone(), workload.partitions);
        tokio::task::spawn_blocking(move || start_offsets(&bootstrap, &topic, partitions, start))
            .await
            .context("resolving start offsets")??
    };
    let mut threads = Vec::new();
    for index in 0..consumers {
        let partitions: Vec<(i32, i64)> = starts
            .iter()
            .copied()
            .filter(|(partition, _)| *partition as usize % consumers == index)
            .collect();
        let (bootstrap, workload) = (bootstrap.to_owned(), workload.clone());
        let (received, progress) = (Arc::clone(&received), Arc::clone(progress));
        threads.push(tokio::task::spawn_blocking(move || {
            consume_some(&bootstrap, &workload, &partitions, count, epoch, &received, &progress)
        }));
    }
    let mut latency = histogram();
    let mut finished: Option<Instant> = None;
    for thread in threads {
        let (local, last) = thread.await.context("consumer thread")??;
        latency.add(&local).context("merging histograms")?;
        finished = Some(finished.map_or(last, |finished| finished.max(last)));
    }
    Ok((latency, finished.unwrap_or_else(Instant::now)))
}

fn consumer(bootstrap: &str, workload: &Workload) -> anyhow::Result<BaseConsumer> {
    let wait_ms = if workload.partitions == 1 && workload.fetch_min_bytes <= 1 { 200 } else { 5 };
    ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", "ringmq-bench")
        .set("enable.auto.commit", "false")
        .set("fetch.min.bytes", workload.fetch_min_bytes.max(1).to_string())
        .set("fetch.wait.max.ms", wait_ms.to_string())
        .set("max.partition.fetch.bytes", (1 << 20).to_string())
        .create()
        .context("creating the librdkafka consumer")
}

/// Each partition's first offset to read.
fn start_offsets(
    bootstrap: &str,
    topic: &str,
    partitions: u32,
    start: StartOffset,
) -> anyhow::Result<Vec<(i32, i64)>> {
    let probe: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", "ringmq-bench")
        .create()
        .context("creating the librdkafka consumer")?;
    (0..partitions)
        .map(|partition| {
            let partition = i32::try_from(partition).context("partition number")?;
            let (low, high) = probe
                .fetch_watermarks(topic, partition, Duration::from_secs(10))
                .with_context(|| format!("the offsets of {topic}/{partition}"))?;
            Ok((partition, if matches!(start, StartOffset::Latest) { high } else { low }))
        })
        .collect()
}

fn consume_some(
    bootstrap: &str,
    workload: &Workload,
    partitions: &[(i32, i64)],
    count: u64,
    epoch: Instant,
    received: &AtomicU64,
    progress: &Progress,
) -> anyhow::Result<(Histogram<u64>, Instant)> {
    let consumer = consumer(bootstrap, workload)?;
    let mut assignment = TopicPartitionList::new();
    for &(partition, offset) in partitions {
        assignment
            .add_partition_offset(&workload.topic, partition, Offset::Offset(offset))
            .context("assignment")?;
    }
    consumer.assign(&assignment).context("assigning partitions")?;
    let mut local = histogram();
    let mut last = Instant::now();
    let mut pending = 0u64;
    while received.load(Ordering::Relaxed) < count {
        let Some(message) = consumer.poll(Duration::from_millis(100)) else { continue };
        let message = message.context("consuming")?;
        let payload = message.payload().unwrap_or_default();
        if let Some(sent) = payload.get(..8).and_then(|bytes| bytes.try_into().ok()) {
            let _ =
                local.record(nanos_since(epoch).saturating_sub(u64::from_le_bytes(sent)).max(1));
        }
        last = Instant::now();
        pending += 1;
        if pending == 256 {
            received.fetch_add(pending, Ordering::Relaxed);
            progress.fetch_add(pending, Ordering::Relaxed);
            pending = 0;
        }
        // The last few: counted one by one so the run ends on the last message.
        if received.load(Ordering::Relaxed) + 256 >= count && pending > 0 {
            received.fetch_add(pending, Ordering::Relaxed);
            progress.fetch_add(pending, Ordering::Relaxed);
            pending = 0;
        }
    }
    Ok((local, last))
}
