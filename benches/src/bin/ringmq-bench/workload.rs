//! The workloads: produce, consume, end-to-end, and the raw-TCP yardstick.
//!
//! Every message carries, in its first 16 bytes, the time it was meant to be sent (ns since the
//! run's epoch) and its sequence number. With a target rate, "meant to be sent" is the scheduled
//! time, not the time the producer got round to it, so a stall shows up in the latency instead of
//! being hidden by the producer falling behind (coordinated omission).

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use hdrhistogram::Histogram;
use tokio::sync::Mutex;

use ringmq_client::{Client, ProducerRecord, StartOffset, TopicConfig};

use crate::plan::{
    histogram, nanos_since, Consumed, Measured, Mode, Pacer, Phase, Progress, Protocol, Schedule,
    Workload,
};

/// Connects to the broker, over TLS and logged in where the run is.
pub(crate) async fn connect(address: &str, workload: &Workload) -> anyhow::Result<Client> {
    let mut options = ringmq_client::ConnectOptions::default().busy_poll(workload.busy_poll);
    if let Some(tls) = &workload.tls {
        options = options.tls(tls.clone());
    }
    if let Some(credentials) = &workload.credentials {
        options = options.credentials(credentials.clone());
    }
    Ok(Client::connect_with(address, options).await?)
}

/// Creates the topic (allocating and pre-faulting its rings) and sends the warm-up messages:
/// everything before the measured part.
pub(crate) async fn prepare(address: &str, workload: &Workload) -> anyhow::Result<()> {
    if workload.size < 16 {
        bail!("--size must be at least 16 bytes (a message carries its send time and number)");
    }
    let mut admin = connect(address, workload).await?;
    let config = TopicConfig::default().partitions(workload.partitions).capacity(workload.capacity);
    admin
        .create_topic(&workload.topic, config)
        .await
        .with_context(|| format!("creating topic {}", workload.topic))?;
    if workload.warmup > 0 {
        produce_all(
            address,
            workload,
            workload.warmup,
            None,
            Instant::now(),
            &Arc::new(AtomicU64::new(0)),
        )
        .await?;
    }
    if workload.mode == Mode::Consume {
        // The messages to consume are written before the measured part.
        let none = Arc::new(AtomicU64::new(0));
        produce_all(address, workload, workload.count, None, Instant::now(), &none).await?;
    }
    Ok(())
}

/// Runs the workload on a prepared topic.
pub(crate) async fn run(
    address: &str,
    workload: &Workload,
    progress: &Progress,
) -> anyhow::Result<Measured> {
    let epoch = Instant::now();
    match workload.mode {
        Mode::Produce => {
            let latency = Arc::new(Mutex::new(histogram()));
            let started = Instant::now();
            produce_all(address, workload, workload.count, Some(&latency), epoch, progress).await?;
            let seconds = started.elapsed().as_secs_f64();
            let latency = Arc::try_unwrap(latency)
                .map_or_else(|shared| shared.blocking_lock().clone(), Mutex::into_inner);
            Ok(Measured {
                produce: Some(Phase { messages: workload.count, seconds }),
                consume: None,
                latency,
                local_reads: None,
            })
        }
        Mode::Consume => {
            // Every partition from its start: the warm-up messages and the prepared ones.
            let started = Instant::now();
            let count = workload.count + workload.warmup;
            let consumed =
                consume_all(address, workload, count, StartOffset::Earliest, epoch, progress, true)
                    .await?;
            let seconds = started.elapsed().as_secs_f64();
            let consume = Some(Phase { messages: count, seconds });
            Ok(Measured {
                produce: None,
                consume,
                latency: histogram(),
                local_reads: consumed.local_reads,
            })
        }
        Mode::EndToEnd => {
            // Consumers start at the current end (after the warm-up) before producers begin.
            let consumers = {
                let address = address.to_owned();
                let workload = workload.clone();
                let progress = Arc::clone(progress);
                tokio::spawn(async move {
                    consume_all(
                        &address,
                        &workload,
                        workload.count,
                        StartOffset::Latest,
                        epoch,
                        &progress,
                        true,
                    )
                    .await
                })
            };
            tokio::time::sleep(Duration::from_millis(200)).await;
            let started = Instant::now();
            produce_all(
                address,
                workload,
                workload.count,
                None,
                epoch,
                &Arc::new(AtomicU64::new(0)),
            )
            .await?;
            let produce_seconds = started.elapsed().as_secs_f64();
            let consumed = consumers.await.context("consumer task")??;
            let consume_seconds = consumed.finished.duration_since(started).as_secs_f64();
            Ok(Measured {
                produce: Some(Phase { messages: workload.count, seconds: produce_seconds }),
                consume: Some(Phase { messages: workload.count, seconds: consume_seconds }),
                latency: consumed.latency,
                local_reads: consumed.local_reads,
            })
        }
    }
}

/// Sends `count` messages from `workload.producers` producers and waits for every
/// acknowledgement. With `latency`, one message in 16 has its acknowledgement time recorded.
async fn produce_all(
    address: &str,
    workload: &Workload,
    count: u64,
    latency: Option<&Arc<Mutex<Histogram<u64>>>>,
    epoch: Instant,
    progress: &Progress,
) -> anyhow::Result<()> {
    if workload.protocol == Protocol::Kafka {
        #[cfg(feature = "kafka")]
        return crate::kafka::produce_all(workload, count, latency, epoch, progress).await;
        #[cfg(not(feature = "kafka"))]
        bail!(
            "{} (the broker's Kafka listener: {})",
            crate::plan::NO_KAFKA,
            workload.kafka_address
        );
    }
    let producers = workload.producers.max(1) as u64;
    let mut tasks = Vec::new();
    for index in 0..producers {
        let share = count / producers + u64::from(index < count % producers);
        let address = address.to_owned();
        let workload = workload.clone();
        let latency = latency.cloned();
        let progress = Arc::clone(progress);
        tasks.push(tokio::spawn(async move {
            produce_one(&address, &workload, share, index, producers, latency, epoch, &progress)
                .await
        }));
    }
    for task in tasks {
        task.await.context("producer task")??;
    }
    Ok(())
}

#[allow(clippy::too_many_arguments, reason = "one producer's whole job")]
async fn produce_one(
    address: &str,
    workload: &Workload,
    count: u64,
    index: u64,
    producers: u64,
    latency: Option<Arc<Mutex<Histogram<u64>>>>,
    epoch: Instant,
    progress: &Progress,
) -> anyhow::Result<()> {
    let client = connect(address, workload).await?;
    let producer = client
        .producer()
        .batch_bytes(workload.batch_bytes)
        .linger(workload.linger)
        .acks(workload.acks)
        .max_in_flight(workload.max_in_flight)
        .idempotence(workload.idempotence)
        .build()
        .await?;
    let mut schedule = Schedule::new(workload, index, producers, epoch);
    let (samples, mut sampled) = tokio::sync::mpsc::channel::<(u64, ringmq_client::Delivery)>(4096);
    let recorder = latency.map(|latency| {
        tokio::spawn(async move {
            let mut local = histogram();
            while let Some((sent, delivery)) = sampled.recv().await {
                if delivery.await.is_ok() {
                    let _ = local.record(nanos_since(epoch).saturating_sub(sent).max(1));
                }
            }
            let _ = latency.lock().await.add(&local);
        })
    });
    let producer = if workload.rate.is_some() && workload.pacer == Pacer::Thread {
        let (workload, progress) = (workload.clone(), Arc::clone(progress));
        let runtime = tokio::runtime::Handle::current();
        let paced = tokio::task::spawn_blocking(move || {
            paced_on_thread(&runtime, producer, &workload, count, schedule, &samples, &progress)
        });
        paced.await.context("paced producer thread")??
    } else {
        for sequence in 0..count {
            let intended = schedule.intended(sequence);
            if let Some(intended) = intended {
                if intended > Instant::now() + Duration::from_millis(1) {
                    tokio::time::sleep_until(intended.into()).await;
                }
            }
            let (sent, timestamp) = schedule.stamp(sequence, intended);
            let delivery = producer
                .send(ProducerRecord::new(&workload.topic, schedule.payload()).timestamp(timestamp))
                .await?;
            if recorder.is_some() && sequence % 16 == 0 {
                let _ = samples.send((sent, delivery)).await;
            }
            if sequence % 256 == 255 {
                progress.fetch_add(256, Ordering::Relaxed);
            }
        }
        progress.fetch_add(count % 256, Ordering::Relaxed);
        drop(samples);
        producer
    };
    producer.close().await.context("closing the producer")?;
    if let Some(recorder) = recorder {
        recorder.await.context("latency recorder")?;
    }
    Ok(())
}

/// The paced send loop of [`Pacer::Thread`], on a blocking-pool thread: sleeps until each
/// message's send time (timer slack 1 µs, so `nanosleep` wakes within microseconds of it, and
/// never before), then sends it through the producer, whose sender task runs on `runtime`.
/// Returns the producer, to be closed on the runtime.
fn paced_on_thread(
    runtime: &tokio::runtime::Handle,
    producer: ringmq_client::Producer,
    workload: &Workload,
    count: u64,
    mut schedule: Schedule,
    samples: &tokio::sync::mpsc::Sender<(u64, ringmq_client::Delivery)>,
    progress: &Progress,
) -> anyhow::Result<ringmq_client::Producer> {
    // The default slack (50 µs) would let every wake-up be up to that late; failing to set it
    // only makes the pacing coarser.
    let _ = rustix::thread::set_current_timer_slack(std::num::NonZeroU64::new(1_000));
    for sequence in 0..count {
        let intended = schedule.intended(sequence);
        if let Some(intended) = intended {
            let now = Instant::now();
            if intended > now {
                std::thread::sleep(intended - now);
            }
        }
        let (sent, timestamp) = schedule.stamp(sequence, intended);
        let record = ProducerRecord::new(&workload.topic, schedule.payload()).timestamp(timestamp);
        let delivery = runtime.block_on(producer.send(record))?;
        if sequence % 16 == 0 {
            // Closed: nobody records latency in this run.
            let _ = samples.blocking_send((sent, delivery));
        }
        if sequence % 256 == 255 {
            progress.fetch_add(256, Ordering::Relaxed);
        }
    }
    progress.fetch_add(count % 256, Ordering::Relaxed);
    Ok(producer)
}

/// Reads `count` messages across every partition with `workload.consumers` consumers, over
/// TCP, the Kafka protocol or the local listener as the workload says; returns the latency of
/// each (receive time minus send time) and when the last arrived.
async fn consume_all(
    address: &str,
    workload: &Workload,
    count: u64,
    start: StartOffset,
    epoch: Instant,
    progress: &Progress,
    count_progress: bool,
) -> anyhow::Result<Consumed> {
    if workload.protocol == Protocol::Kafka {
        #[cfg(feature = "kafka")]
        {
            let (latency, finished) =
                crate::kafka::consume_all(workload, count, start, epoch, progress).await?;
            return Ok(Consumed { latency, finished, local_reads: None });
        }
        #[cfg(not(feature = "kafka"))]
        bail!(
            "{} (the broker's Kafka listener: {})",
            crate::plan::NO_KAFKA,
            workload.kafka_address
        );
    }
    if let Some(path) = &workload.local {
        return crate::local::consume_all(
            path,
            workload,
            count,
            start,
            epoch,
            progress,
            count_progress,
        )
        .await;
    }
    let received = Arc::new(AtomicU64::new(0));
    let consumers = workload.consumers.clamp(1, workload.partitions as usize);
    let mut tasks = Vec::new();
    for index in 0..consumers {
        let partitions: Vec<u32> =
            (0..workload.partitions).filter(|p| *p as usize % consumers == index).collect();
        let address = address.to_owned();
        let login = workload.clone();
        let topic = workload.topic.clone();
        let min_bytes = workload.fetch_min_bytes;
        let received = Arc::clone(&received);
        let progress = Arc::clone(progress);
        tasks.push(tokio::spawn(async move {
            let client = connect(&address, &login).await?;
            let wait = match (partitions.len(), min_bytes) {
                (1, 1) => Duration::from_millis(200),
                _ => Duration::from_millis(5),
            };
            let mut readers = Vec::new();
            for partition in partitions {
                let builder = client
                    .consumer(&topic, partition)
                    .start(start)
                    .max_wait(wait)
                    .max_bytes(1 << 20);
                readers.push(builder.min_bytes(min_bytes).build().await?);
            }
            let mut local = histogram();
            let mut last = Instant::now();
            while received.load(Ordering::Relaxed) < count {
                for reader in &mut readers {
                    let records = reader.poll().await?;
                    if records.is_empty() {
                        continue;
                    }
                    let now = nanos_since(epoch);
                    for record in &records {
                        let sent =
                            u64::from_le_bytes(record.value[..8].try_into().unwrap_or_default());
                        let _ = local.record(now.saturating_sub(sent).max(1));
                    }
                    last = Instant::now();
                    let batch = records.len() as u64;
                    received.fetch_add(batch, Ordering::Relaxed);
                    if count_progress {
                        progress.fetch_add(batch, Ordering::Relaxed);
                    }
                }
            }
            anyhow::Ok((local, last))
        }));
    }
    let mut latency = histogram();
    let mut finished = Instant::now();
    let mut first = true;
    for task in tasks {
        let (local, last) = task.await.context("consumer task")??;
        latency.add(&local).context("merging histograms")?;
        finished = if first { last } else { finished.max(last) };
        first = false;
    }
    if received.load(Ordering::Relaxed) < count {
        bail!("consumers stopped early");
    }
    Ok(Consumed { latency, finished, local_reads: None })
}

/// The raw-TCP yardstick: `bytes` pushed through a plain loopback socket, in 64 KiB writes, one
/// thread writing and one reading, no broker. Returns MB/s (10^6 bytes per second).
pub(crate) fn baseline(bytes: u64) -> anyhow::Result<f64> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let address = listener.local_addr()?;
    let reader = std::thread::spawn(move || -> std::io::Result<Instant> {
        let (mut stream, _) = listener.accept()?;
        let mut buffer = vec![0u8; 64 << 10];
        let mut left = bytes;
        while left > 0 {
            let read = stream.read(&mut buffer)?;
            if read == 0 {
                break;
            }
            left = left.saturating_sub(read as u64);
        }
        Ok(Instant::now())
    });
    let mut stream = TcpStream::connect(address)?;
    stream.set_nodelay(true)?;
    let chunk = vec![0xA5u8; 64 << 10];
    let started = Instant::now();
    let mut left = bytes;
    while left > 0 {
        let size = left.min(chunk.len() as u64) as usize;
        stream.write_all(&chunk[..size])?;
        left -= size as u64;
    }
    drop(stream);
    let finished = reader.join().map_err(|_| anyhow::anyhow!("baseline reader panicked"))??;
    Ok(bytes as f64 / finished.duration_since(started).as_secs_f64() / 1e6)
}

/// Most bytes the disk yardstick writes, so that a long run does not spend minutes on it.
const DISK_BASELINE_BYTES_MAX: u64 = 1 << 30;

/// The disk yardstick: `bytes` (at most 1 GiB) written into a file allocated up front in `dir`
/// (as the broker's rings are, so no write allocates), in `batch`-byte writes each followed by
/// one `fdatasync`: what synced produce could reach in that file system at that batch size,
/// with nothing else in the way. Returns MB/s (10^6 bytes per second).
pub(crate) fn disk_baseline(
    dir: &std::path::Path,
    bytes: u64,
    batch: usize,
) -> anyhow::Result<f64> {
    use std::os::unix::fs::FileExt;
    let bytes = bytes.min(DISK_BASELINE_BYTES_MAX).max(batch as u64);
    let file = tempfile::Builder::new()
        .prefix("ringmq-bench-disk-")
        .tempfile_in(dir)
        .with_context(|| format!("creating the disk yardstick's file in {}", dir.display()))?;
    let handle = file.as_file();
    rustix::fs::fallocate(handle, rustix::fs::FallocateFlags::empty(), 0, bytes)
        .context("allocating the disk yardstick's file")?;
    handle.sync_all()?;
    let chunk = vec![0x5Au8; batch.max(1)];
    let started = Instant::now();
    let mut offset = 0;
    while offset < bytes {
        let size = (bytes - offset).min(chunk.len() as u64) as usize;
        handle.write_all_at(&chunk[..size], offset)?;
        rustix::fs::fdatasync(handle).context("fdatasync")?;
        offset += size as u64;
    }
    Ok(bytes as f64 / started.elapsed().as_secs_f64() / 1e6)
}
