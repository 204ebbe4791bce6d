//! Idempotent produce end to end: the real broker behind a proxy that drops acknowledgements of
//! batches the broker has written, plus a broker crash in the middle. With idempotence every
//! record is in the log exactly once, in order per key; without it the same run writes
//! duplicates (which shows the test can fail).

#![allow(clippy::unwrap_used, reason = "tests fail on error")]

mod support;

use std::collections::HashMap;
use std::time::Duration;

use ringmq_client::{Acks, Client, Producer, ProducerRecord, StartOffset, TopicConfig};
use support::proxy::Proxy;
use support::{within, Broker};

const RECORDS: usize = 3000;
const KEYS: usize = 12;

async fn producer_through(proxy: &Proxy, idempotent: bool, batch_bytes: usize) -> Producer {
    // The proxy may cut the handshake itself: try again.
    for _ in 0..50 {
        let Ok(client) = Client::connect(&proxy.address).await else { continue };
        let built = client
            .producer()
            .acks(Acks::Written)
            .idempotence(idempotent)
            .batch_bytes(batch_bytes)
            .linger(Duration::from_millis(1))
            .timeout(Duration::from_secs(60))
            .build()
            .await;
        if let Ok(producer) = built {
            return producer;
        }
    }
    panic!("could not connect through the proxy");
}

/// Every record of `topic`: value -> how many times it is stored, and per key the values in
/// log order.
async fn stored(
    address: &str,
    topic: &str,
) -> (HashMap<usize, usize>, HashMap<String, Vec<usize>>) {
    let mut client = Client::connect(address).await.unwrap();
    let info = client.describe_topic(topic).await.unwrap();
    let (mut counts, mut by_key) = (HashMap::new(), HashMap::<String, Vec<usize>>::new());
    for state in info.partitions {
        let mut consumer = client
            .consumer(topic, state.partition)
            .start(StartOffset::Earliest)
            .build()
            .await
            .unwrap();
        while consumer.position() < state.next_offset {
            let record = consumer.next().await.unwrap();
            if record.key.is_none() {
                continue; // filler, not a numbered record
            }
            let value: usize = std::str::from_utf8(&record.value).unwrap().parse().unwrap();
            let key = String::from_utf8(record.key.unwrap().to_vec()).unwrap();
            *counts.entry(value).or_default() += 1;
            by_key.entry(key).or_default().push(value);
        }
    }
    (counts, by_key)
}

async fn send_all(
    producer: &Producer,
    topic: &str,
    range: std::ops::Range<usize>,
) -> Vec<ringmq_client::Delivery> {
    let mut deliveries = Vec::new();
    for index in range {
        let key = format!("key-{}", index % KEYS);
        let value = index.to_string();
        let record = ProducerRecord::new(topic, value.as_bytes()).key(key.as_bytes());
        deliveries.push(producer.send(record).await.unwrap());
    }
    deliveries
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_never_duplicate_with_idempotence_across_cut_connections_and_a_crash() {
    let mut broker = Broker::start(&[]);
    within(180, async {
        let mut admin = Client::connect(&broker.address).await.unwrap();
        admin.create_topic("exact", TopicConfig::default().partitions(3)).await.unwrap();
        let proxy = Proxy::start(&broker.address, 9).await;
        let producer = producer_through(&proxy, true, 1024).await;
        let mut deliveries = send_all(&producer, "exact", 0..RECORDS / 2).await;
        // Crash the broker while batches are in flight; it comes back on the same port and
        // rebuilds its producer state from the log.
        broker = tokio::task::spawn_blocking(move || {
            broker.restart_same_port();
            broker
        })
        .await
        .unwrap();
        deliveries.extend(send_all(&producer, "exact", RECORDS / 2..RECORDS).await);
        for delivery in deliveries {
            delivery.await.unwrap();
        }
        producer.close().await.unwrap();
        assert!(
            proxy.cuts() >= 3,
            "the proxy cut {} connections of {} chunks",
            proxy.cuts(),
            proxy.chunks()
        );

        let (counts, by_key) = stored(&broker.address, "exact").await;
        let duplicated: Vec<_> = counts.iter().filter(|(_, count)| **count > 1).take(5).collect();
        assert!(duplicated.is_empty(), "written more than once (value, times): {duplicated:?}");
        assert_eq!(counts.len(), RECORDS, "every record is stored");
        for (key, values) in by_key {
            assert!(values.windows(2).all(|pair| pair[0] < pair[1]), "{key} out of order");
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_cuts_without_idempotence_write_duplicates() {
    let broker = Broker::start(&[]);
    within(120, async {
        let mut admin = Client::connect(&broker.address).await.unwrap();
        admin.create_topic("loose", TopicConfig::default().partitions(3)).await.unwrap();
        let proxy = Proxy::start(&broker.address, 9).await;
        let producer = producer_through(&proxy, false, 1024).await;
        for delivery in send_all(&producer, "loose", 0..RECORDS).await {
            delivery.await.unwrap();
        }
        producer.close().await.unwrap();
        assert!(proxy.cuts() >= 3, "the proxy cut {} connections", proxy.cuts());
        let (counts, _) = stored(&broker.address, "loose").await;
        assert_eq!(counts.len(), RECORDS, "at-least-once: nothing lost");
        let duplicated = counts.values().filter(|count| **count > 1).count();
        assert!(duplicated > 0, "lost acknowledgements make a plain producer write twice");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_that_fails_for_good_does_not_block_the_batches_after_it() {
    // A topic whose batches are at most 64 KiB, and a producer allowed larger ones: every batch
    // holding two 100 KiB records fails with BatchTooLarge, leaving a hole in the
    // sequence; the producer renumbers what follows in a new epoch instead of failing it.
    let broker = Broker::start(&[]);
    within(60, async {
        let mut admin = Client::connect(&broker.address).await.unwrap();
        let config = TopicConfig {
            partitions: Some(1),
            capacity: Some(4 << 20),
            chunk_size: Some(64 << 10),
        };
        admin.create_topic("strict", config).await.unwrap();
        let info = admin.describe_topic("strict").await.unwrap();
        assert!(info.batch_size_max < 200 << 10, "{}", info.batch_size_max);
        let producer = admin
            .producer()
            .batch_bytes(512 << 10)
            .linger(Duration::from_millis(20))
            .build()
            .await
            .unwrap();
        let big = vec![b'x'; 100 << 10];
        let mut small = Vec::new();
        let mut failed = Vec::new();
        for round in 0..5 {
            for index in 0..20 {
                let value = format!("{round}-{index}");
                let delivery =
                    producer.send(ProducerRecord::new("strict", value.as_bytes())).await.unwrap();
                small.push((value, delivery));
            }
            producer.flush().await.unwrap();
            // Two big records in one batch: too large for the topic.
            failed.push(producer.send(ProducerRecord::new("strict", &big)).await.unwrap());
            failed.push(producer.send(ProducerRecord::new("strict", &big)).await.unwrap());
            producer.flush().await.unwrap();
        }
        for (value, delivery) in small {
            delivery.await.unwrap_or_else(|error| panic!("{value}: {error}"));
        }
        for delivery in failed {
            let error = delivery.await.unwrap_err();
            assert_eq!(error.code(), Some(ringmq_client::ErrorCode::BatchTooLarge), "{error}");
        }
        producer.close().await.unwrap();
        let mut consumer = admin.consumer("strict", 0).build().await.unwrap();
        let mut values = Vec::new();
        while consumer.position() < consumer.high_watermark() {
            values.push(String::from_utf8(consumer.next().await.unwrap().value.to_vec()).unwrap());
        }
        let expected: Vec<String> =
            (0..5).flat_map(|round| (0..20).map(move |index| format!("{round}-{index}"))).collect();
        assert_eq!(values, expected);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_failing_for_good_amid_cut_connections_leave_no_duplicate() {
    // Batches refused for good (too large for the topic) start a renumbering while batches of
    // other partitions are in flight and the proxy cuts connections: a batch the broker wrote but
    // whose answer was lost must be resolved under its original stamp before the rest is
    // renumbered, or the broker writes it twice.
    let broker = Broker::start(&[]);
    within(180, async {
        let mut admin = Client::connect(&broker.address).await.unwrap();
        let config = TopicConfig {
            partitions: Some(3),
            capacity: Some(64 << 20),
            chunk_size: Some(64 << 10),
        };
        admin.create_topic("holes", config).await.unwrap();
        let proxy = Proxy::start(&broker.address, 9).await;
        let producer = producer_through(&proxy, true, 512 << 10).await;
        let big = vec![b'x'; 100 << 10];
        let mut deliveries = Vec::new();
        for index in 0..RECORDS {
            let (key, value) = (format!("key-{}", index % KEYS), index.to_string());
            let record = ProducerRecord::new("holes", value.as_bytes()).key(key.as_bytes());
            deliveries.push((Some(index), producer.send(record).await.unwrap()));
            if index % 10 == 0 {
                // Let the linger seal batches: many small ones, many acknowledgements to lose.
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            if index % 50 == 25 {
                // Two big records for one partition: a batch too large for the topic.
                let partition = u32::try_from(index / 50 % 3).unwrap();
                for _ in 0..2 {
                    let record = ProducerRecord::new("holes", &big).partition(partition);
                    deliveries.push((None, producer.send(record).await.unwrap()));
                }
            }
        }
        let (mut acknowledged, mut refused) = (std::collections::HashSet::new(), 0);
        for (index, delivery) in deliveries {
            match (index, delivery.await) {
                (Some(index), Ok(_)) => assert!(acknowledged.insert(index)),
                (None, Ok(_)) => {}
                (index, Err(error)) => {
                    let code = error.code();
                    assert_eq!(code, Some(ringmq_client::ErrorCode::BatchTooLarge), "{error}");
                    refused += usize::from(index.is_some());
                }
            }
        }
        producer.close().await.unwrap();
        assert!(proxy.cuts() >= 3, "the proxy cut {} connections", proxy.cuts());

        let (counts, by_key) = stored(&broker.address, "holes").await;
        let duplicated: Vec<_> = counts.iter().filter(|(_, count)| **count > 1).take(5).collect();
        assert!(duplicated.is_empty(), "written more than once (value, times): {duplicated:?}");
        let stored: std::collections::HashSet<usize> = counts.into_keys().collect();
        assert_eq!(stored, acknowledged, "exactly the acknowledged records are stored");
        assert_eq!(stored.len() + refused, RECORDS);
        for (key, values) in by_key {
            assert!(values.windows(2).all(|pair| pair[0] < pair[1]), "{key} out of order");
        }
    })
    .await;
}
