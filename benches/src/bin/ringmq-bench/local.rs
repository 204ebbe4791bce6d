//! The consumers of a `--local` run: `ringmq-client`'s `LocalConsumer`, reading the rings in
//! place through the broker's local listener, as a consumer on the broker's host would.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

use ringmq_client::{ConnectOptions, LocalConsumer, StartOffset};

use crate::plan::{histogram, nanos_since, Consumed, LocalReads, Progress, Workload};

/// Reads `count` messages across every partition with `workload.consumers` local readers (tasks,
/// each with its share of the partitions); returns the latency of each message (receive time
/// minus send time), when the last arrived, and the readers' own counts.
pub(crate) async fn consume_all(
    path: &Path,
    workload: &Workload,
    count: u64,
    start: StartOffset,
    epoch: Instant,
    progress: &Progress,
    count_progress: bool,
) -> anyhow::Result<Consumed> {
    let received = Arc::new(AtomicU64::new(0));
    let consumers = workload.consumers.clamp(1, workload.partitions as usize);
    // Every reader is open (its start resolved) before this returns: an end-to-end run starts
    // producing next.
    let mut readers: Vec<Vec<LocalConsumer>> = (0..consumers).map(|_| Vec::new()).collect();
    let wait = match workload.partitions {
        1 => Duration::from_millis(200),
        _ => Duration::from_millis(5),
    };
    for partition in 0..workload.partitions {
        let mut options = ConnectOptions::default();
        if let Some(credentials) = &workload.credentials {
            options = options.credentials(credentials.clone());
        }
        let reader = LocalConsumer::builder(path, &workload.topic, partition)
            .options(options)
            .start(start)
            .max_wait(wait)
            .spin(workload.local_spin)
            .build()
            .await
            .with_context(|| {
                format!(
                    "opening {}/{partition} on the local listener {}",
                    workload.topic,
                    path.display()
                )
            })?;
        readers[partition as usize % consumers].push(reader);
    }
    let mut tasks = Vec::new();
    for mut readers in readers {
        let received = Arc::clone(&received);
        let progress = Arc::clone(progress);
        tasks.push(tokio::spawn(async move {
            let mut latency = histogram();
            let mut last = Instant::now();
            while received.load(Ordering::Relaxed) < count {
                for reader in &mut readers {
                    let Some(batch) = reader.next_batch().await? else { continue };
                    let now = nanos_since(epoch);
                    let mut records = 0;
                    for record in batch.records()? {
                        let value = record.value.unwrap_or_default();
                        let sent = value
                            .get(..8)
                            .and_then(|stamp| stamp.try_into().ok())
                            .map_or(0, u64::from_le_bytes);
                        let _ = latency.record(now.saturating_sub(sent).max(1));
                        records += 1;
                    }
                    last = Instant::now();
                    received.fetch_add(records, Ordering::Relaxed);
                    if count_progress {
                        progress.fetch_add(records, Ordering::Relaxed);
                    }
                }
            }
            let reads = readers.iter().fold(LocalReads::default(), |reads, reader| LocalReads {
                batches: reads.batches + reader.batches_read(),
                waits: reads.waits + reader.waits(),
            });
            anyhow::Ok((latency, last, reads))
        }));
    }
    let mut latency = histogram();
    let mut finished: Option<Instant> = None;
    let mut reads = LocalReads::default();
    for task in tasks {
        let (local, last, counted) = task.await.context("local reader task")??;
        latency.add(&local).context("merging histograms")?;
        finished = Some(finished.map_or(last, |finished| finished.max(last)));
        reads.batches += counted.batches;
        reads.waits += counted.waits;
    }
    if received.load(Ordering::Relaxed) < count {
        bail!("local readers stopped early");
    }
    Ok(Consumed {
        latency,
        finished: finished.unwrap_or_else(Instant::now),
        local_reads: Some(reads),
    })
}
