//! Same-host readers against the real `ringmq` binary: a `LocalConsumer` connects to the broker's
//! Unix socket, maps the partition's ring and reads it in place, while producers write over TCP.

#![allow(clippy::unwrap_used, reason = "tests fail on error")]

mod support;

use std::path::PathBuf;
use std::time::Duration;

use ringmq_client::{
    Client, ClientError, ConnectOptions, Consumer, ConsumerRecord, ErrorCode, LocalConsumer,
    ProducerRecord, StartOffset, TopicConfig,
};
use ringmq_protocol::message::{Fetch, FetchReply, LocalOpen};
use ringmq_protocol::Request;
use support::{within, Broker};

/// A broker with its local listener on in a temporary directory; the socket's path.
fn local_broker(extra: &[&str]) -> (Broker, tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("local.sock");
    let mut args = vec!["--local-listen", socket.to_str().unwrap()];
    args.extend_from_slice(extra);
    (Broker::start(&args), dir, socket)
}

fn value(n: u64) -> Vec<u8> {
    let mut value = format!("record {n} ").into_bytes();
    value.resize(16 + (n % 200) as usize, b'.');
    value
}

/// Produces `range` to partition 0, one record per value, in batches of up to 64 records.
async fn produce(address: &str, topic: &str, range: std::ops::Range<u64>) {
    produce_to(address, topic, 0, range).await;
}

/// Produces `range` to `partition`, one record per value, in batches of up to 64 records.
async fn produce_to(address: &str, topic: &str, partition: u32, range: std::ops::Range<u64>) {
    let mut admin = Client::connect(address).await.unwrap();
    let producer = admin.producer().batch_bytes(16 << 10).build().await.unwrap();
    let values: Vec<Vec<u8>> = range.clone().map(value).collect();
    for chunk in values.chunks(64) {
        let records =
            chunk.iter().map(|value| ProducerRecord::new(topic, value).partition(partition));
        let delivered = producer.send_batch(records.collect::<Vec<_>>()).await.await;
        assert_eq!(delivered.failed(), 0, "{:?}", delivered.first_error());
    }
    drop(producer);
    let _ = admin.ping().await;
}

/// Reads `count` records from a local consumer, owned.
async fn read_local(consumer: &mut LocalConsumer, count: usize) -> Vec<ConsumerRecord> {
    let mut records = Vec::with_capacity(count);
    while records.len() < count {
        records.push(consumer.next().await.unwrap());
    }
    records
}

/// A local and a TCP consumer read the same partition while producers write it: they read the
/// same records, field for field, in the same order, every offset once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_and_tcp_consumers_read_the_same_records_under_load() {
    let (broker, _dir, socket) = local_broker(&[]);
    within(120, async {
        let mut admin = Client::connect(&broker.address).await.unwrap();
        // A small ring with small chunks: the readers cross many chunk ends.
        let config = TopicConfig {
            chunk_size: Some(64 << 10),
            ..TopicConfig::default().partitions(1).capacity(4 << 20)
        };
        admin.create_topic("events", config).await.unwrap();
        const TOTAL: u64 = 6000;
        let mut local = LocalConsumer::builder(&socket, "events", 0).build().await.unwrap();
        let mut tcp = Consumer::builder(&broker.address, ConnectOptions::default(), "events", 0)
            .start(StartOffset::Earliest)
            .build()
            .await
            .unwrap();
        let address = broker.address.clone();
        let producers = tokio::spawn(async move {
            let (first, second) = tokio::join!(
                produce(&address, "events", 0..TOTAL / 2),
                produce(&address, "events", TOTAL / 2..TOTAL)
            );
            let ((), ()) = (first, second);
        });
        let local_records = read_local(&mut local, TOTAL as usize).await;
        let mut tcp_records = Vec::new();
        while tcp_records.len() < TOTAL as usize {
            tcp_records.push(tcp.next().await.unwrap());
        }
        producers.await.unwrap();
        assert_eq!(local_records.len(), tcp_records.len());
        for (local, tcp) in local_records.iter().zip(&tcp_records) {
            assert_eq!(local, tcp);
        }
        let offsets: Vec<u64> = local_records.iter().map(|record| record.offset).collect();
        assert_eq!(offsets, (0..TOTAL).collect::<Vec<_>>(), "dense, each once, in order");
        let mut values: Vec<Vec<u8>> =
            local_records.iter().map(|record| record.value.to_vec()).collect();
        values.sort();
        let mut sent: Vec<Vec<u8>> = (0..TOTAL).map(value).collect();
        sent.sort();
        assert_eq!(values, sent, "every record sent, none other");
        // Nothing more: the wait ends empty-handed after max_wait.
        let mut idle = LocalConsumer::builder(&socket, "events", 0)
            .start(StartOffset::Latest)
            .max_wait(Duration::from_millis(200))
            .build()
            .await
            .unwrap();
        assert!(idle.next_batch().await.unwrap().is_none());
        assert_eq!(idle.position(), TOTAL);
    })
    .await;
}

/// Batches come out as views that borrow the consumer: each is the Kafka batch as the producer
/// sent it, its records start at the position the consumer was at, and a start in the middle
/// of a batch skips the records before it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_are_views_that_start_at_the_position() {
    let (broker, _dir, socket) = local_broker(&[]);
    within(60, async {
        let mut admin = Client::connect(&broker.address).await.unwrap();
        admin.create_topic("events", TopicConfig::default().partitions(1)).await.unwrap();
        produce(&broker.address, "events", 0..200).await;
        let mut consumer = LocalConsumer::builder(&socket, "events", 0)
            .start(StartOffset::Offset(70))
            .build()
            .await
            .unwrap();
        let batch = consumer.next_batch().await.unwrap().expect("a batch");
        assert!(batch.base_offset() <= 70 && batch.next_offset() > 70);
        let offsets: Vec<u64> = batch.records().unwrap().map(|record| record.offset).collect();
        assert_eq!(offsets.first(), Some(&70));
        let first = batch.records().unwrap().next().unwrap();
        assert_eq!(first.value, Some(value(70).as_slice()));
        let bytes = batch.as_bytes().to_vec();
        let end = batch.next_offset();
        assert_eq!(consumer.position(), end);
        // The same batch over TCP, fetched raw, is the same bytes.
        let fetch = Request::Fetch(Fetch {
            topic: "events",
            partition: 0,
            offset: 70,
            max_bytes: 1 << 20,
            max_wait_ms: 0,
            min_bytes: 1,
        });
        let body = admin.raw_call(&fetch).await.unwrap();
        let fetched = FetchReply::decode(&body).unwrap();
        assert!(
            fetched.batches.starts_with(&bytes),
            "the local batch is the fetched batch, byte for byte"
        );
        let rest = read_local(&mut consumer, (200 - end) as usize).await;
        assert_eq!(rest.first().unwrap().offset, end);
        assert_eq!(rest.last().unwrap().offset, 199);
    })
    .await;
}

/// Creates "small": one partition, a 1 MiB ring of 64 KiB chunks, holding records 0..100.
async fn small_topic(address: &str) {
    let mut admin = Client::connect(address).await.unwrap();
    let config = TopicConfig {
        chunk_size: Some(64 << 10),
        ..TopicConfig::default().partitions(1).capacity(1 << 20)
    };
    admin.create_topic("small", config).await.unwrap();
    produce(address, "small", 0..100).await;
}

/// Reads batches (each record checked) until the reader is told its position is gone, about
/// 3 MiB of 0..25 000 through a 1 MiB ring; then it seeks to the earliest offset and reads the
/// rest, to the last record.
async fn told_out_of_range_then_resumes(consumer: &mut LocalConsumer) {
    let error = loop {
        match consumer.next_batch().await {
            Ok(Some(batch)) => {
                for record in batch.records().unwrap() {
                    assert_eq!(record.value, Some(&value(record.offset)[..]));
                }
            }
            Ok(None) => panic!("the reader was lapped, not at the end"),
            Err(error) => break error,
        }
    };
    let ClientError::OffsetOutOfRange { earliest, next, .. } = error else {
        panic!("expected out of range, got {error}");
    };
    assert!(earliest > 100, "earliest {earliest}");
    assert_eq!(next, 25_000);
    consumer.seek(earliest);
    let rest = read_local(consumer, (next - earliest) as usize).await;
    assert_eq!(rest.first().unwrap().offset, earliest);
    assert_eq!(rest.last().unwrap().offset, 24_999);
    assert_eq!(rest.last().unwrap().value, value(24_999));
}

/// A reader the writer laps is told the earliest offset, as over TCP, and goes on from there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lapped_local_reader_is_told_the_earliest_offset() {
    let (broker, _dir, socket) = local_broker(&[]);
    within(120, async {
        small_topic(&broker.address).await;
        let mut consumer = LocalConsumer::builder(&socket, "small", 0).build().await.unwrap();
        let first = read_local(&mut consumer, 10).await;
        assert_eq!(first.last().unwrap().offset, 9);
        // About 3 MiB through a 1 MiB ring: the reader's chunk is long gone.
        produce(&broker.address, "small", 100..25_000).await;
        told_out_of_range_then_resumes(&mut consumer).await;
    })
    .await;
}

/// A broker killed with SIGKILL never closes its cursor page. The next broker on the same data
/// laps the ring while a reader still holds the dead broker's page, whose tags say the reader's
/// chunk is still there: the reader must notice the ring's new incarnation, open the partition
/// again and be told the earliest offset, never be handed the new broker's bytes as its batch
/// (nor report them as corrupt).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reader_on_a_killed_brokers_page_never_takes_the_next_brokers_bytes() {
    let (mut broker, _dir, socket) = local_broker(&[]);
    within(120, async {
        small_topic(&broker.address).await;
        let mut consumer = LocalConsumer::builder(&socket, "small", 0).build().await.unwrap();
        // Batch by batch (`next` would read ahead, and `next_batch` then open the partition
        // again): the reader keeps the first broker's page.
        let first = consumer.next_batch().await.unwrap().unwrap().next_offset();
        assert!(first < 100);
        broker.restart_same_port();
        // About 3 MiB through a 1 MiB ring by the new broker: every slot is rewritten, the
        // reader's included, while the old page still says the reader's chunk is held.
        produce(&broker.address, "small", 100..25_000).await;
        told_out_of_range_then_resumes(&mut consumer).await;
        assert!(consumer.reopened() >= 1, "the reader opened the partition on the new broker");
    })
    .await;
}

/// The broker SIGKILLed and restarted on the same data at seeded random moments, while a
/// producer writes without pause and a local reader reads a 1 MiB ring the producer keeps
/// lapping: every record the reader is handed is whole (its value is the one its sequence names),
/// offsets only grow, and the reader never reports a batch as corrupt: it goes on through every
/// restart, told `OffsetOutOfRange` when it fell behind. (A reader still on a dead broker's page
/// while the next one laps it is rare here, the reader keeps up; the test above makes that case
/// happen.) `RINGMQ_LOCAL_CRASH_CYCLES` sets the
/// cycles (default 3), `TEST_SEED` replays a run (the seed is printed).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_local_reader_through_repeated_broker_kills_gets_only_whole_batches() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    let cycles: u64 = std::env::var("RINGMQ_LOCAL_CRASH_CYCLES")
        .ok()
        .and_then(|cycles| cycles.parse().ok())
        .unwrap_or(3);
    let mut seed: u64 =
        std::env::var("TEST_SEED").ok().and_then(|seed| seed.parse().ok()).unwrap_or_else(|| {
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos()
                as u64
                | 1
        });
    eprintln!("local crash loop: TEST_SEED={seed} RINGMQ_LOCAL_CRASH_CYCLES={cycles}");
    let (mut broker, _dir, socket) = local_broker(&[]);
    within(60 + 10 * cycles, async {
        small_topic(&broker.address).await;
        let stop = Arc::new(AtomicBool::new(false));
        let address = broker.address.clone();
        let producing = tokio::spawn({
            let stop = Arc::clone(&stop);
            async move {
                let mut sequence = 100u64;
                while !stop.load(Ordering::Relaxed) {
                    let Ok(client) = Client::connect(&address).await else {
                        tokio::time::sleep(Duration::from_millis(20)).await;
                        continue;
                    };
                    let Ok(producer) = client.producer().batch_bytes(16 << 10).build().await else {
                        continue;
                    };
                    while !stop.load(Ordering::Relaxed) {
                        let values: Vec<Vec<u8>> = (sequence..sequence + 64).map(value).collect();
                        sequence += 64;
                        let records = values
                            .iter()
                            .map(|value| ProducerRecord::new("small", value).partition(0));
                        // Sends that a kill cuts short fail: the producer starts over.
                        let delivered =
                            producer.send_batch(records.collect::<Vec<_>>()).await.await;
                        if delivered.failed() > 0 {
                            break;
                        }
                    }
                }
            }
        });
        let reading = tokio::spawn({
            let (stop, socket) = (Arc::clone(&stop), socket.clone());
            async move {
                let mut consumer = LocalConsumer::builder(&socket, "small", 0)
                    .max_wait(Duration::from_millis(100))
                    .build()
                    .await
                    .unwrap();
                let (mut read, mut lapped, mut last) = (0u64, 0u64, None::<u64>);
                while !stop.load(Ordering::Relaxed) {
                    match consumer.next_batch().await {
                        Ok(Some(batch)) => {
                            for record in batch.records().unwrap() {
                                let bytes = record.value.unwrap();
                                let text = String::from_utf8_lossy(bytes);
                                let sequence: u64 =
                                    text.split(' ').nth(1).unwrap().parse().unwrap();
                                assert_eq!(bytes, value(sequence), "offset {}", record.offset);
                                assert!(last.is_none_or(|last| record.offset > last));
                                last = Some(record.offset);
                                read += 1;
                            }
                        }
                        Ok(None) => {}
                        Err(ClientError::OffsetOutOfRange { earliest, .. }) => {
                            lapped += 1;
                            consumer.seek(earliest);
                        }
                        // The broker is down or starting: try again.
                        Err(error) if error.is_retriable() => {
                            tokio::time::sleep(Duration::from_millis(20)).await;
                        }
                        Err(error) => panic!("the local reader failed: {error}"),
                    }
                }
                (read, lapped, consumer.reopened())
            }
        });
        let mut random = || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for _ in 0..cycles {
            tokio::time::sleep(Duration::from_millis(150 + random() % 600)).await;
            broker.restart_same_port();
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        stop.store(true, Ordering::Relaxed);
        producing.await.unwrap();
        let (read, lapped, reopened) = reading.await.unwrap();
        eprintln!("{cycles} kills: {read} records read, {lapped} times lapped, {reopened} reopens");
        assert!(read > 0);
        assert!(reopened >= 1, "the reader opened the partition on a new broker");
    })
    .await;
}

/// A broker killed with SIGKILL and restarted on the same data under a local reader: the reader
/// notices, reconnects (the stale socket file is replaced), and goes on from its offset, each
/// record once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_local_reader_resumes_after_the_broker_is_killed_and_restarted() {
    let (mut broker, _dir, socket) = local_broker(&[]);
    within(120, async {
        let mut admin = Client::connect(&broker.address).await.unwrap();
        admin.create_topic("events", TopicConfig::default().partitions(1)).await.unwrap();
        produce(&broker.address, "events", 0..1000).await;
        let mut consumer = LocalConsumer::builder(&socket, "events", 0)
            .max_wait(Duration::from_millis(300))
            .build()
            .await
            .unwrap();
        let mut records = read_local(&mut consumer, 600).await;
        broker.restart_same_port();
        produce(&broker.address, "events", 1000..2000).await;
        while records.len() < 2000 {
            match consumer.next().await {
                Ok(record) => records.push(record),
                // While the new broker starts, a read may find nobody listening.
                Err(ClientError::Connect { .. }) => {
                    tokio::time::sleep(Duration::from_millis(50)).await
                }
                Err(error) => panic!("{error}"),
            }
        }
        let offsets: Vec<u64> = records.iter().map(|record| record.offset).collect();
        assert_eq!(offsets, (0..2000).collect::<Vec<_>>());
        assert!(records.iter().all(|record| record.value == value(record.offset)));
        assert!(consumer.reopened() >= 1, "the reader opened the partition again");
    })
    .await;
}

/// Group members on the broker's host read their assigned partitions in place: a member alone
/// reads every partition and commits; then a local and a TCP member share the group, each
/// partition read by exactly one of them, from the commit on, every record once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_and_tcp_group_members_share_the_partitions() {
    use std::collections::BTreeMap;
    let (broker, _dir, socket) = local_broker(&[]);
    within(120, async {
        let mut admin = Client::connect(&broker.address).await.unwrap();
        admin.create_topic("events", TopicConfig::default().partitions(2)).await.unwrap();
        for partition in 0..2 {
            produce_to(&broker.address, "events", partition, 0..300).await;
        }
        // Joins, heartbeats and commits over the local socket too.
        let coordinator = Client::connect_local(&socket, ConnectOptions::default()).await.unwrap();
        let local_member = || {
            coordinator
                .group_consumer("shared", "events")
                .auto_commit(None)
                .max_wait(Duration::from_millis(100))
                .read_locally(&socket)
        };
        let served_before = admin.stats().await.unwrap().records_out;
        let mut alone = local_member().build().await.unwrap();
        let mut seen = BTreeMap::new();
        for _ in 0..600 {
            let record = alone.next().await.unwrap();
            assert_eq!(record.value, value(record.offset));
            *seen.entry((record.partition, record.offset)).or_insert(0) += 1;
        }
        assert_eq!(seen.len(), 600);
        assert_eq!(
            admin.stats().await.unwrap().records_out,
            served_before,
            "the member read in place: the broker served no record over a fetch"
        );
        alone.commit().await.unwrap();
        alone.close().await.unwrap();
        assert_eq!(
            admin.committed_offsets("shared", "events").await.unwrap(),
            [(0, 300), (1, 300)]
        );

        let mut local = local_member().build().await.unwrap();
        let mut tcp =
            admin.group_consumer("shared", "events").auto_commit(None).build().await.unwrap();
        // Settled: one partition each.
        loop {
            let (mine, theirs) = (local.refresh().await.unwrap(), tcp.refresh().await.unwrap());
            if mine.len() == 1 && theirs.len() == 1 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        for partition in 0..2 {
            produce_to(&broker.address, "events", partition, 300..500).await;
        }
        let mut read = BTreeMap::new();
        while read.len() < 400 {
            for member in [&mut local, &mut tcp] {
                if let Some(record) = member.next_timeout(Duration::from_millis(50)).await.unwrap()
                {
                    assert_eq!(record.value, value(record.offset));
                    let previous = read.insert((record.partition, record.offset), record);
                    assert!(previous.is_none(), "a record read twice");
                }
            }
        }
        let offsets: Vec<u64> = read.keys().map(|&(_, offset)| offset).collect();
        assert!(offsets.iter().all(|offset| (300..500).contains(offset)), "from the commit on");
        local.commit().await.unwrap();
        tcp.commit().await.unwrap();
        assert_eq!(
            admin.committed_offsets("shared", "events").await.unwrap(),
            [(0, 500), (1, 500)]
        );
        local.close().await.unwrap();
        tcp.close().await.unwrap();
    })
    .await;
}

/// The local reader commits to a group over the Unix socket; a new one resumes there, and the
/// TCP side sees the same committed offset.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_local_reader_commits_and_resumes_through_its_group() {
    let (broker, _dir, socket) = local_broker(&[]);
    within(60, async {
        let mut admin = Client::connect(&broker.address).await.unwrap();
        admin.create_topic("events", TopicConfig::default().partitions(1)).await.unwrap();
        produce(&broker.address, "events", 0..300).await;
        let mut consumer =
            LocalConsumer::builder(&socket, "events", 0).group("audit").build().await.unwrap();
        let read = read_local(&mut consumer, 120).await;
        assert_eq!(read.last().unwrap().offset, 119);
        // `next` reads whole batches but hands out records one by one: the position, and the
        // commit, are after the last record handed out.
        assert_eq!(consumer.position(), 120);
        consumer.commit().await.unwrap();
        drop(consumer);
        assert_eq!(admin.committed_offsets("audit", "events").await.unwrap(), [(0, 120)]);
        let mut again =
            LocalConsumer::builder(&socket, "events", 0).group("audit").build().await.unwrap();
        assert_eq!(again.position(), 120);
        assert_eq!(read_local(&mut again, 1).await[0].offset, 120);
        let mut plain = LocalConsumer::builder(&socket, "events", 0).build().await.unwrap();
        let error = plain.commit().await.unwrap_err();
        assert!(error.to_string().contains("needs a group"), "{error}");
    })
    .await;
}

/// A byte damaged in the ring file is never handed out: the local reader reports the corrupt
/// batch (and so does the TCP consumer, which checks CRCs), and the broker serves on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_batch_is_never_handed_out() {
    let (broker, _dir, socket) = local_broker(&[]);
    within(60, async {
        let mut admin = Client::connect(&broker.address).await.unwrap();
        admin.create_topic("events", TopicConfig::default().partitions(1)).await.unwrap();
        produce(&broker.address, "events", 0..50).await;
        // Flip one bit of a record's value in the first batch, through the file (the page cache
        // both processes map).
        let ring = broker.data_dir.join("events/0.ring");
        let file = std::fs::OpenOptions::new().read(true).write(true).open(&ring).unwrap();
        use std::os::unix::fs::FileExt;
        let at = 8192 + 61 + 20;
        let mut byte = [0u8];
        file.read_exact_at(&mut byte, at).unwrap();
        file.write_all_at(&[byte[0] ^ 0x10], at).unwrap();
        let mut consumer = LocalConsumer::builder(&socket, "events", 0).build().await.unwrap();
        let error = consumer.next_batch().await.unwrap_err();
        assert!(
            matches!(&error, ClientError::Broker { code: ErrorCode::CorruptBatch, .. }),
            "{error}"
        );
        assert!(error.to_string().contains("offset 0"), "{error}");
        // The broker is unharmed: it takes more, and a reader past the damage reads on.
        produce(&broker.address, "events", 50..60).await;
        let mut later = LocalConsumer::builder(&socket, "events", 0)
            .start(StartOffset::Latest)
            .build()
            .await
            .unwrap();
        assert_eq!(later.position(), 60);
        produce(&broker.address, "events", 60..61).await;
        assert_eq!(read_local(&mut later, 1).await[0].value, value(60));
    })
    .await;
}

/// `LocalOpen` is served only on the local socket; over TCP it is refused with a message naming
/// the listener. Unknown topics and offsets past the end are answered as a fetch's are.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_open_is_refused_where_it_cannot_work() {
    let (broker, _dir, socket) = local_broker(&[]);
    within(60, async {
        let mut admin = Client::connect(&broker.address).await.unwrap();
        admin.create_topic("events", TopicConfig::default().partitions(1)).await.unwrap();
        let open = Request::LocalOpen(LocalOpen { topic: "events", partition: 0, offset: 0 });
        let error = admin.raw_call(&open).await.unwrap_err();
        assert!(error.to_string().contains("local listener only"), "{error}");
        let missing = LocalConsumer::builder(&socket, "nope", 0).build().await.unwrap_err();
        assert!(
            matches!(&missing, ClientError::Broker { code: ErrorCode::UnknownTopic, .. }),
            "{missing}"
        );
        let past = LocalConsumer::builder(&socket, "events", 0)
            .start(StartOffset::Offset(5))
            .build()
            .await
            .unwrap_err();
        assert!(
            matches!(past, ClientError::OffsetOutOfRange { offset: 5, earliest: 0, next: 0 }),
            "{past}"
        );
        let nobody = LocalConsumer::builder(socket.with_extension("none"), "events", 0)
            .build()
            .await
            .unwrap_err();
        assert!(matches!(nobody, ClientError::Connect { .. }), "{nobody}");
    })
    .await;
}

/// `ringmq-cli consume --local` prints what the TCP consumer prints. A reader process killed
/// (SIGKILL) in the middle of its reads leaves the broker serving: producers, TCP consumers and
/// a new local reader go on, and nothing stored is harmed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_reads_locally_and_a_killed_reader_harms_nothing() {
    let (broker, _dir, socket) = local_broker(&[]);
    let cli = support::workspace_binary("ringmq-cli", "ringmq-cli");
    within(120, async {
        let mut admin = Client::connect(&broker.address).await.unwrap();
        admin.create_topic("events", TopicConfig::default().partitions(2)).await.unwrap();
        produce(&broker.address, "events", 0..500).await;
        let printed = |args: &[&str]| {
            let output = std::process::Command::new(&cli).args(args).output().unwrap();
            assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
            String::from_utf8(output.stdout).unwrap()
        };
        let local = printed(&[
            "consume",
            "events",
            "--local",
            socket.to_str().unwrap(),
            "--format",
            "offset",
        ]);
        let tcp =
            printed(&["--broker", &broker.address, "consume", "events", "--format", "offset"]);
        assert_eq!(local.lines().count(), 500);
        let sorted = |text: &str| {
            let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
            lines.sort();
            lines
        };
        assert_eq!(sorted(&local), sorted(&tcp));
        // As a group member: the same records, and the group's commit over the socket.
        let member = printed(&[
            "consume",
            "events",
            "--local",
            socket.to_str().unwrap(),
            "--group",
            "cli-local",
            "--count",
            "500",
            "--idle-ms",
            "3000",
            "--format",
            "offset",
        ]);
        assert_eq!(sorted(&member), sorted(&tcp));
        assert_eq!(admin.committed_offsets("cli-local", "events").await.unwrap(), [(0, 500)]);
        // A bad path is one readable line and exit 1.
        let output = std::process::Command::new(&cli)
            .args(["consume", "events", "--local", "/nonexistent/ringmq.sock"])
            .output()
            .unwrap();
        assert_eq!(output.status.code(), Some(1));
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
        assert!(stderr.contains("/nonexistent/ringmq.sock"), "{stderr}");

        // A following reader, killed while producers write.
        let mut reader = std::process::Command::new(&cli)
            .args(["consume", "events", "--partition", "0", "--follow", "--local"])
            .arg(&socket)
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let address = broker.address.clone();
        let writing = tokio::spawn(async move { produce(&address, "events", 500..3000).await });
        tokio::time::sleep(Duration::from_millis(300)).await;
        reader.kill().unwrap();
        reader.wait().unwrap();
        writing.await.unwrap();
        let mut tcp = Consumer::builder(&broker.address, ConnectOptions::default(), "events", 0)
            .start(StartOffset::Earliest)
            .build()
            .await
            .unwrap();
        let mut fresh = LocalConsumer::builder(&socket, "events", 0).build().await.unwrap();
        let total = admin.describe_topic("events").await.unwrap().partitions[0].next_offset;
        let local_records = read_local(&mut fresh, total as usize).await;
        for record in &local_records {
            assert_eq!(tcp.next().await.unwrap(), *record);
        }
        assert!(broker.log().contains("connection closed"), "the broker saw the reader go");
    })
    .await;
}

/// The local socket's mode is what `--local-listen-mode` says; a file that is not a socket in
/// the way stops the broker with one line naming the path.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_socket_gets_its_mode_and_a_file_in_the_way_is_refused() {
    use std::os::unix::fs::PermissionsExt;
    let (broker, _dir, socket) = local_broker(&["--local-listen-mode", "640"]);
    let mode = std::fs::metadata(&socket).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o640);
    drop(broker);
    let dir = tempfile::tempdir().unwrap();
    let in_the_way = dir.path().join("plain-file");
    std::fs::write(&in_the_way, b"not a socket").unwrap();
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_ringmq"))
        .args(["--listen", "127.0.0.1:0", "--kafka", "false", "--metrics", "false", "--data-dir"])
        .arg(dir.path().join("data"))
        .arg("--local-listen")
        .arg(&in_the_way)
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    let line = stderr.lines().find(|line| line.contains("local socket")).unwrap_or_default();
    assert!(line.contains("not a socket is in the way"), "{stderr}");
    assert!(line.contains("plain-file"), "{stderr}");
    assert_eq!(std::fs::read(&in_the_way).unwrap(), b"not a socket", "left alone");
}
