//! The calls of `ringmq-client` beyond send and next, against the real broker: producers and
//! consumers built from an address (no admin connection), a batch of records with one handle,
//! sending what is queued without waiting, and bounded polls.

#![allow(clippy::unwrap_used, reason = "tests fail on error")]

mod support;

use std::time::Duration;

use ringmq_client::{
    Client, ConnectOptions, Consumer, ErrorCode, GroupConsumer, Producer, ProducerRecord,
    StartOffset, TopicConfig,
};
use support::{within, Broker};

/// A series of the broker's `/metrics`.
fn metric(broker: &Broker, series: &str) -> f64 {
    support::metrics_text(&broker.metrics)
        .lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' ')?.trim().parse().ok())
        .unwrap()
}

/// The broker's open client connections.
fn connections_open(broker: &Broker) -> f64 {
    metric(broker, "ringmq_connections_open")
}

async fn settled_connections(broker: &Broker, expected: f64) {
    for _ in 0..100 {
        if connections_open(broker) == expected {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("{} connections open, expected {expected}", connections_open(broker));
}

/// `send_batch` queues a thousand records and sends them at once (the linger is 30 s, so only
/// `send_now` can have sent them), and its one handle resolves with every record's offset, the
/// refused record's error in its place; the producer was built from an address and holds one
/// connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_of_records_resolves_once_with_each_result() {
    let broker = Broker::start(&[]);
    within(60, async {
        let mut admin = Client::connect(&broker.address).await.unwrap();
        admin.create_topic("events", TopicConfig::default().partitions(2)).await.unwrap();
        drop(admin);
        settled_connections(&broker, 0.0).await;

        // Small batches: the thousand records go out in several, so runs of records with
        // different batches (and base offsets) are resolved.
        let producer = Producer::builder(&broker.address, ConnectOptions::default())
            .linger(Duration::from_secs(30))
            .batch_bytes(4096)
            .build()
            .await
            .unwrap();
        settled_connections(&broker, 1.0).await;
        let values: Vec<Vec<u8>> = (0..1000).map(|n| format!("event {n}").into_bytes()).collect();
        let mut records: Vec<ProducerRecord<'_>> =
            values.iter().map(|value| ProducerRecord::new("events", value).partition(0)).collect();
        records.insert(500, ProducerRecord::new("no-such-topic", b"lost"));
        let deliveries = producer.send_batch(records).await;
        assert_eq!(deliveries.len(), 1001);
        let acknowledged =
            tokio::time::timeout(Duration::from_secs(10), deliveries).await.expect("not sent");
        assert_eq!(acknowledged.len(), 1001);
        assert_eq!(acknowledged.failed(), 1);
        let error = acknowledged.first_error().unwrap();
        assert_eq!(error.code(), Some(ErrorCode::UnknownTopic), "{error}");
        let offsets: Vec<Option<u64>> = acknowledged
            .results()
            .enumerate()
            .filter(|(index, _)| *index != 500)
            .map(|(_, result)| result.unwrap())
            .collect();
        let expected: Vec<Option<u64>> = (0..1000).map(Some).collect();
        assert_eq!(offsets, expected);
        assert!(acknowledged.result(1001).is_err(), "past the last");
        // A producer with a metadata connection for the unknown topic: two at most.
        assert!(connections_open(&broker) <= 2.0);
    })
    .await;
}

/// `send_now` sends a queued record without waiting for the linger or for other records.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn send_now_sends_what_is_queued_at_once() {
    let broker = Broker::start(&[]);
    within(60, async {
        let mut admin = Client::connect(&broker.address).await.unwrap();
        admin.create_topic("events", TopicConfig::default().partitions(1)).await.unwrap();
        let producer = Producer::builder(&broker.address, ConnectOptions::default())
            .linger(Duration::from_secs(30))
            .build()
            .await
            .unwrap();
        let first = producer.send(ProducerRecord::new("events", b"one")).await.unwrap();
        producer.send_now();
        let offset = tokio::time::timeout(Duration::from_secs(10), first).await.expect("waited");
        assert_eq!(offset.unwrap(), Some(0));
        // Collected deliveries make one handle too.
        let mut pending = Vec::new();
        for value in [b"two", b"six"] {
            pending.push(producer.send(ProducerRecord::new("events", value)).await.unwrap());
        }
        producer.send_now();
        let both: ringmq_client::Deliveries = pending.into_iter().collect();
        let acknowledged = tokio::time::timeout(Duration::from_secs(10), both).await.unwrap();
        let offsets: Vec<_> = acknowledged.results().map(Result::unwrap).collect();
        assert_eq!(offsets, [Some(1), Some(2)]);
    })
    .await;
}

/// `poll_max` hands out at most its count (the rest wait for the next call) and waits at most
/// its limit; `next_timeout` gives up when nothing comes, leaves the fetch it asked for pending
/// on the same connection, and that fetch answers a later call when a record arrives.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn polls_are_bounded_in_count_and_in_time() {
    let broker = Broker::start(&[]);
    within(60, async {
        let mut admin = Client::connect(&broker.address).await.unwrap();
        admin.create_topic("events", TopicConfig::default().partitions(1)).await.unwrap();
        let producer = admin.producer().build().await.unwrap();
        let values: Vec<Vec<u8>> = (0..100).map(|n| format!("event {n}").into_bytes()).collect();
        let records = values.iter().map(|value| ProducerRecord::new("events", value));
        let acknowledged = producer.send_batch(records).await.await;
        assert!(acknowledged.first_error().is_none());

        let mut consumer =
            Consumer::builder(&broker.address, ConnectOptions::default(), "events", 0)
                .start(StartOffset::Earliest)
                .max_wait(Duration::from_secs(5))
                .build()
                .await
                .unwrap();
        assert!(consumer.poll_max(0, Duration::from_secs(5)).await.unwrap().is_empty());
        let first = consumer.poll_max(10, Duration::from_secs(5)).await.unwrap();
        let offsets: Vec<u64> = first.iter().map(|record| record.offset).collect();
        assert_eq!(offsets, (0..10).collect::<Vec<_>>());
        let mut rest = Vec::new();
        while rest.len() < 90 {
            let more = consumer.poll_max(1000, Duration::from_secs(5)).await.unwrap();
            assert!(!more.is_empty(), "records 10 to 99 are there");
            rest.extend(more);
        }
        assert_eq!(rest.first().unwrap().offset, 10);
        assert_eq!(rest.last().unwrap().offset, 99);
        let zero = std::time::Instant::now();
        assert!(consumer.poll_max(10, Duration::ZERO).await.unwrap().is_empty());
        assert!(
            zero.elapsed() < Duration::from_secs(4),
            "a zero limit waited {:?}",
            zero.elapsed()
        );

        // Nothing more: both give up at their limit (the broker's long poll is 5 s), on the
        // same connection (giving up does not reconnect).
        let opened = metric(&broker, "ringmq_connections_opened_total");
        let started = std::time::Instant::now();
        assert!(consumer.next_timeout(Duration::from_millis(200)).await.unwrap().is_none());
        assert!(consumer.poll_max(10, Duration::from_millis(200)).await.unwrap().is_empty());
        assert!(started.elapsed() < Duration::from_secs(4), "{:?}", started.elapsed());

        // A record written now is answered by the fetch left pending.
        producer.send_and_wait(ProducerRecord::new("events", b"late")).await.unwrap();
        let late = consumer.next_timeout(Duration::from_secs(10)).await.unwrap().unwrap();
        assert_eq!((late.offset, &late.value[..]), (100, &b"late"[..]));
        assert_eq!(metric(&broker, "ringmq_connections_opened_total"), opened, "a reconnect");

        // A zero limit still fetches what is there (after a seek, no fetch is pending for it).
        consumer.seek(3);
        let again = consumer.poll_max(2, Duration::ZERO).await.unwrap();
        let offsets: Vec<u64> = again.iter().map(|record| record.offset).collect();
        assert_eq!(offsets, [3, 4]);
    })
    .await;
}

/// A group member's bounded wait gives up at its limit, keeps its membership and its fetches,
/// and hands out what arrives later, in order, with nothing lost or repeated across the calls.
/// The broker runs on one worker thread (`--worker-threads 1`, the latency-first setting), so
/// the long polls and the produce that answers them share it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_members_wait_is_bounded_and_loses_nothing() {
    let broker = Broker::start(&["--worker-threads", "1"]);
    within(60, async {
        let mut admin = Client::connect(&broker.address).await.unwrap();
        admin.create_topic("jobs", TopicConfig::default().partitions(2)).await.unwrap();
        let mut member =
            GroupConsumer::builder(&broker.address, ConnectOptions::default(), "workers", "jobs")
                .session_timeout(Duration::from_secs(3))
                .max_wait(Duration::from_secs(5))
                .build()
                .await
                .unwrap();
        let started = std::time::Instant::now();
        assert!(member.next_timeout(Duration::from_millis(200)).await.unwrap().is_none());
        assert!(member.next_timeout(Duration::ZERO).await.unwrap().is_none());
        assert!(started.elapsed() < Duration::from_secs(4), "{:?}", started.elapsed());
        let generation = member.generation();

        let producer =
            Producer::builder(&broker.address, ConnectOptions::default()).build().await.unwrap();
        let values: Vec<Vec<u8>> = (0..40).map(|n| format!("job {n}").into_bytes()).collect();
        let records = values.iter().enumerate().map(|(n, value)| {
            ProducerRecord::new("jobs", value).partition(u32::try_from(n % 2).unwrap())
        });
        assert!(producer.send_batch(records).await.await.first_error().is_none());
        let mut seen = std::collections::BTreeSet::new();
        let mut last = [None::<u64>; 2];
        while seen.len() < 40 {
            // Short limits on purpose: many calls give up halfway through a fetch.
            let Some(record) = member.next_timeout(Duration::from_millis(1)).await.unwrap() else {
                continue;
            };
            let partition = record.partition as usize;
            assert!(last[partition] < Some(record.offset), "in order within a partition");
            last[partition] = Some(record.offset);
            assert!(seen.insert(record.value.to_vec()), "handed out twice: {record:?}");
        }
        assert!(member.next_timeout(Duration::from_millis(100)).await.unwrap().is_none());
        assert_eq!(member.generation(), generation, "giving up is not a rebalance");
        member.commit().await.unwrap();
        member.close().await.unwrap();
    })
    .await;
}

/// Busy-polling on both sides (`--busy-poll-us` on the broker, `ConnectOptions::busy_poll` on
/// the client) delivers every record once, in order, to a consumer that waits on each one while
/// a producer awaits each acknowledgement; and the spin is bounded: an idle broker parks again,
/// spending nothing like the idle time's worth of CPU.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn busy_polling_loses_nothing_and_stops_when_idle() {
    let broker = Broker::start(&["--worker-threads", "1", "--busy-poll-us", "2000"]);
    within(60, async {
        let options = ConnectOptions::default().busy_poll(Duration::from_millis(2));
        let mut admin = Client::connect_with(&broker.address, options.clone()).await.unwrap();
        admin.create_topic("ticks", TopicConfig::default()).await.unwrap();
        let mut consumer = Consumer::builder(&broker.address, options.clone(), "ticks", 0)
            .start(StartOffset::Earliest)
            .build()
            .await
            .unwrap();
        let producer = Producer::builder(&broker.address, options).linger(Duration::ZERO);
        let producer = producer.build().await.unwrap();
        let reader = tokio::spawn(async move {
            let mut values = Vec::new();
            while values.len() < 300 {
                let record = consumer.next().await.unwrap();
                assert_eq!(record.offset, values.len() as u64, "dense and in order");
                values.push(record.value.to_vec());
            }
            values
        });
        for n in 0..300 {
            let value = format!("tick {n}");
            producer
                .send(ProducerRecord::new("ticks", value.as_bytes()))
                .await
                .unwrap()
                .await
                .unwrap();
        }
        let values = reader.await.unwrap();
        let expected: Vec<Vec<u8>> = (0..300).map(|n| format!("tick {n}").into_bytes()).collect();
        assert_eq!(values, expected);

        let before = admin.stats().await.unwrap().cpu_time_us;
        tokio::time::sleep(Duration::from_secs(2)).await;
        let spent = admin.stats().await.unwrap().cpu_time_us - before;
        assert!(spent < 400_000, "an idle busy-polling broker spent {spent} µs of CPU in 2 s");
    })
    .await;
}
