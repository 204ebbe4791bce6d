//! Crash loop: producers send numbered messages with `acks=written` while the real `ringmq`
//! process is killed with SIGKILL at random moments and restarted on the same data directory.
//! After every restart every acknowledged message still held is present exactly once, at the
//! offset it was acknowledged with, byte-identical; offsets are dense; every record served
//! validates (the client checks both CRCs) and is one that was sent.
//!
//! `TEST_SEED` replays a run (the seed is printed); `RINGMQ_CRASH_CYCLES` sets the number of
//! cycles (default 30; the long run in the notes used 1000).

#![allow(clippy::unwrap_used, reason = "tests fail on error")]

mod support;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ringmq_client::{Client, StartOffset, TopicConfig};
use ringmq_protocol::message::{Produce, ProduceReply};
use ringmq_protocol::{Acks, BatchBuilder, FrameHead, Push, Record, Request};
use support::Broker;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const PRODUCERS: u64 = 3;

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

fn value(producer: u64, sequence: u64) -> Vec<u8> {
    let mut value = format!("p{producer}-{sequence}-").into_bytes();
    value.resize(40 + (sequence % 97) as usize, b'.');
    value
}

fn parse(value: &[u8]) -> Option<(u64, u64)> {
    let text = std::str::from_utf8(value).ok()?;
    let mut parts = text.strip_prefix('p')?.split('-');
    Some((parts.next()?.parse().ok()?, parts.next()?.parse().ok()?))
}

/// Sends batches of numbered messages one request at a time, without retries, until the
/// connection fails or `stop` is set. Records `(sequence, offset)` for every acknowledged one.
async fn produce(
    address: String,
    producer: u64,
    mut sequence: u64,
    seed: u64,
    acked: Arc<Mutex<Vec<(u64, u64, u64)>>>,
    stop: Arc<AtomicBool>,
) -> u64 {
    let mut rng = Rng(seed | 1);
    let Ok(mut stream) = tokio::net::TcpStream::connect(&address).await else { return sequence };
    let mut buffer = vec![0u8; 16 << 10];
    let mut frame = Vec::new();
    let mut correlation = 0u32;
    while !stop.load(Ordering::Relaxed) {
        let count = 1 + rng.next() % 20;
        let mut builder = BatchBuilder::new(&mut buffer, 1_700_000_000_000).unwrap();
        for index in 0..count {
            let payload = value(producer, sequence + index);
            assert_eq!(
                builder.push(&Record::value(&payload, 1_700_000_000_000)).unwrap(),
                Push::Appended
            );
        }
        let batch = builder.finish().unwrap();
        correlation += 1;
        frame.clear();
        Request::Produce(Produce {
            topic: "crash",
            partition: 0,
            acks: Acks::Written,
            timeout_ms: 5000,
            batch,
        })
        .encode_frame(correlation, &mut frame)
        .unwrap();
        if stream.write_all(&frame).await.is_err() {
            return sequence + count;
        }
        let mut head = [0u8; 20];
        if stream.read_exact(&mut head).await.is_err() {
            // Sent, maybe written, never acknowledged.
            return sequence + count;
        }
        let head = FrameHead::decode(&head, u32::MAX).unwrap();
        let mut body = vec![0u8; head.body_len()];
        if stream.read_exact(&mut body).await.is_err() {
            return sequence + count;
        }
        assert_eq!(
            head.status,
            0,
            "produce failed: {:?}",
            ringmq_protocol::message::ErrorBody::decode(&body)
        );
        let base = ProduceReply::decode(&body).unwrap().base_offset;
        let mut acked = acked.lock().unwrap();
        for index in 0..count {
            acked.push((producer, sequence + index, base + index));
        }
        sequence += count;
    }
    sequence
}

/// Reads the whole partition and checks it against what was sent and acknowledged.
async fn verify(
    address: &str,
    acked: &[(u64, u64, u64)],
    sent_until: &HashMap<u64, u64>,
    cycle: usize,
) {
    let client = Client::connect(address).await.unwrap();
    let mut consumer = client
        .consumer("crash", 0)
        .start(StartOffset::Earliest)
        .max_wait(Duration::from_millis(20))
        .build()
        .await
        .unwrap();
    let earliest = consumer.position();
    let end = consumer.high_watermark();
    let mut held = HashMap::new();
    let mut last: HashMap<u64, u64> = HashMap::new();
    let mut expected_offset = earliest;
    while consumer.position() < end {
        let record = consumer
            .next()
            .await
            .unwrap_or_else(|error| panic!("cycle {cycle}: read failed: {error}"));
        assert_eq!(record.offset, expected_offset, "cycle {cycle}: offsets are dense");
        expected_offset += 1;
        let (producer, sequence) = parse(&record.value)
            .unwrap_or_else(|| panic!("cycle {cycle}: corrupt record at {}", record.offset));
        assert_eq!(
            record.value.to_vec(),
            value(producer, sequence),
            "cycle {cycle}: record {} byte-identical",
            record.offset
        );
        assert!(
            sequence < sent_until[&producer],
            "cycle {cycle}: record {} was never sent",
            record.offset
        );
        if let Some(previous) = last.insert(producer, sequence) {
            assert!(
                sequence > previous,
                "cycle {cycle}: producer {producer} out of order or duplicated at {}",
                record.offset
            );
        }
        held.insert(record.offset, (producer, sequence));
    }
    for &(producer, sequence, offset) in acked {
        if offset >= earliest {
            assert_eq!(
                held.get(&offset),
                Some(&(producer, sequence)),
                "cycle {cycle}: acknowledged p{producer}-{sequence} missing at offset {offset} (log holds {earliest}..{end})"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_messages_survive_kill_9_at_random_moments() {
    let seed =
        std::env::var("TEST_SEED").ok().and_then(|seed| seed.parse().ok()).unwrap_or_else(|| {
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos()
                as u64
        });
    eprintln!("crash loop: TEST_SEED={seed}");
    let cycles: usize = std::env::var("RINGMQ_CRASH_CYCLES")
        .ok()
        .and_then(|cycles| cycles.parse().ok())
        .unwrap_or(30);
    let mut rng = Rng(seed | 1);
    // A small ring, so the log wraps and reclaims across cycles.
    let mut broker = Broker::start(&["--default-capacity", "2MiB"]);
    Client::connect(&broker.address)
        .await
        .unwrap()
        .create_topic("crash", TopicConfig::default())
        .await
        .unwrap();
    let acked = Arc::new(Mutex::new(Vec::new()));
    let mut next_sequence: HashMap<u64, u64> =
        (0..PRODUCERS).map(|producer| (producer, 0)).collect();
    let mut total_acked = 0;
    for cycle in 0..cycles {
        let stop = Arc::new(AtomicBool::new(false));
        let tasks: Vec<_> = (0..PRODUCERS)
            .map(|producer| {
                let task = produce(
                    broker.address.clone(),
                    producer,
                    next_sequence[&producer],
                    rng.next(),
                    Arc::clone(&acked),
                    Arc::clone(&stop),
                );
                (producer, tokio::spawn(task))
            })
            .collect();
        tokio::time::sleep(Duration::from_millis(5 + rng.next() % 150)).await;
        let killed = tokio::task::spawn_blocking(move || {
            broker.kill();
            broker
        });
        broker = killed.await.unwrap();
        stop.store(true, Ordering::Relaxed);
        for (producer, task) in tasks {
            let sent = task.await.unwrap();
            next_sequence.insert(producer, sent);
        }
        let restarted = tokio::task::spawn_blocking(move || {
            broker.restart();
            broker
        });
        broker = restarted.await.unwrap();
        let acked_now = acked.lock().unwrap().clone();
        total_acked = acked_now.len();
        tokio::time::timeout(
            Duration::from_secs(60),
            verify(&broker.address, &acked_now, &next_sequence, cycle),
        )
        .await
        .expect("verification timed out");
    }
    eprintln!(
        "crash loop: {cycles} cycles, {total_acked} acknowledged messages, none lost or duplicated"
    );
    assert!(total_acked > 0, "the producers got acknowledgements");
}
