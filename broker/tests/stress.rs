//! Seeded stress: many producers and consumers on many partitions at once, through the real
//! binary. Consumers read while producers write; afterwards every acknowledged message has been
//! read exactly once, at its acknowledged offset, in per-key order, byte-identical, and each
//! partition's offsets are dense. `TEST_SEED` replays a run.

#![allow(clippy::unwrap_used, reason = "tests fail on error")]

mod support;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use ringmq_client::{Client, ProducerRecord, StartOffset, TopicConfig};
use support::{within, Broker};

const PARTITIONS: u32 = 8;
const PRODUCERS: u64 = 6;
const PER_PRODUCER: u64 = 4000;

fn value(producer: u64, sequence: u64, seed: u64) -> Vec<u8> {
    let size = 16 + ((sequence.wrapping_mul(2_654_435_761) ^ seed) % 2000) as usize;
    let mut value = format!("{producer}/{sequence}/").into_bytes();
    value.resize(size, b'a' + (sequence % 26) as u8);
    value
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_producers_and_consumers_keep_order_density_and_content() {
    let seed =
        std::env::var("TEST_SEED").ok().and_then(|seed| seed.parse().ok()).unwrap_or_else(|| {
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos()
                as u64
        });
    eprintln!("stress: TEST_SEED={seed}");
    let broker = Broker::start(&["--default-capacity", "64MiB"]);
    let address = broker.address.clone();
    within(300, async move {
        Client::connect(&address)
            .await
            .unwrap()
            .create_topic("stress", TopicConfig::default().partitions(PARTITIONS))
            .await
            .unwrap();
        let total = PRODUCERS * PER_PRODUCER;
        let received = Arc::new(std::sync::atomic::AtomicU64::new(0));
        // Consumers first, following their partitions while the producers write.
        let mut consumers = Vec::new();
        for group in 0..4u32 {
            let address = address.clone();
            let received = Arc::clone(&received);
            consumers.push(tokio::spawn(async move {
                let client = Client::connect(&address).await.unwrap();
                let mut readers = Vec::new();
                for partition in [group, group + 4] {
                    readers.push((
                        partition,
                        client
                            .consumer("stress", partition)
                            .start(StartOffset::Earliest)
                            .max_wait(Duration::from_millis(20))
                            .build()
                            .await
                            .unwrap(),
                    ));
                }
                let mut seen: Vec<(u32, u64, Vec<u8>)> = Vec::new();
                while received.load(std::sync::atomic::Ordering::Relaxed) < total {
                    for (partition, reader) in &mut readers {
                        let records = reader.poll().await.unwrap();
                        received
                            .fetch_add(records.len() as u64, std::sync::atomic::Ordering::Relaxed);
                        seen.extend(
                            records
                                .into_iter()
                                .map(|record| (*partition, record.offset, record.value.to_vec())),
                        );
                    }
                }
                seen
            }));
        }
        let mut producers = Vec::new();
        for producer in 0..PRODUCERS {
            let address = address.clone();
            producers.push(tokio::spawn(async move {
                let client = Client::connect(&address).await.unwrap();
                let sender = client
                    .producer()
                    .linger(Duration::from_millis((seed + producer) % 4))
                    .batch_bytes(16 << 10 << (producer % 3))
                    .build()
                    .await
                    .unwrap();
                let mut deliveries = Vec::new();
                for sequence in 0..PER_PRODUCER {
                    // Keys spread each producer over several partitions; order holds per key.
                    let key = format!("{producer}-{}", (sequence ^ seed) % 5);
                    let payload = value(producer, sequence, seed);
                    let delivery = sender
                        .send(ProducerRecord::new("stress", &payload).key(key.as_bytes()))
                        .await
                        .unwrap();
                    deliveries.push((key, sequence, delivery));
                }
                let mut acked = Vec::new();
                for (key, sequence, delivery) in deliveries {
                    acked.push((key, sequence, delivery.await.unwrap().unwrap()));
                }
                sender.close().await.unwrap();
                acked
            }));
        }
        let mut acked = Vec::new();
        for (producer, task) in producers.into_iter().enumerate() {
            for (key, sequence, offset) in task.await.unwrap() {
                acked.push((producer as u64, key, sequence, offset));
            }
        }
        let mut by_partition: HashMap<u32, Vec<(u64, Vec<u8>)>> = HashMap::new();
        for consumer in consumers {
            for (partition, offset, value) in consumer.await.unwrap() {
                by_partition.entry(partition).or_default().push((offset, value));
            }
        }
        let mut at: HashMap<(u32, u64), Vec<u8>> = HashMap::new();
        for (partition, records) in &by_partition {
            for (index, (offset, value)) in records.iter().enumerate() {
                assert_eq!(
                    *offset, index as u64,
                    "partition {partition}: dense, in order, no duplicate"
                );
                at.insert((*partition, *offset), value.clone());
            }
        }
        assert_eq!(at.len() as u64, total, "every message read exactly once");
        let mut last_by_key: HashMap<String, (u32, u64, u64)> = HashMap::new();
        for (producer, key, sequence, offset) in acked {
            let partition = crc32c::crc32c(key.as_bytes()) % PARTITIONS;
            assert_eq!(
                at.get(&(partition, offset)),
                Some(&value(producer, sequence, seed)),
                "p{producer} #{sequence} at {partition}/{offset}"
            );
            if let Some((last_partition, last_sequence, last_offset)) =
                last_by_key.insert(key.clone(), (partition, sequence, offset))
            {
                assert_eq!(last_partition, partition, "one partition per key");
                assert!(
                    sequence > last_sequence && offset > last_offset,
                    "key {key}: in send order"
                );
            }
        }
    })
    .await;
}
