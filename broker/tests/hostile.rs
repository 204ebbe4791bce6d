//! Hostile and careless clients against the real binary: connection floods, clients that never
//! read, consumers so slow the ring laps them, idle connections by the thousand, topics that
//! cannot be allocated. Each is answered with a clear error or a closed connection, logged with
//! the peer's address, and every other client's data stays intact.

#![allow(clippy::unwrap_used, reason = "tests fail on error")]

mod support;

use std::io::Write;
use std::net::TcpStream;
use std::time::Duration;

use ringmq_client::{
    Acks, Client, ClientError, ErrorCode, ProducerRecord, StartOffset, TopicConfig,
};
use ringmq_protocol::message::{Fetch, Produce};
use ringmq_protocol::{BatchBuilder, Push, Record, Request};
use support::{within, Broker};

async fn produce_values(address: &str, topic: &str, count: usize, size: usize) {
    let client = Client::connect(address).await.unwrap();
    let producer = client.producer().acks(Acks::Written).build().await.unwrap();
    let mut deliveries = Vec::with_capacity(count);
    for sequence in 0..count {
        let mut value = format!("{sequence}:").into_bytes();
        value.resize(size, b'#');
        deliveries.push(producer.send(ProducerRecord::new(topic, &value)).await.unwrap());
    }
    for delivery in deliveries {
        delivery.await.unwrap();
    }
    producer.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_beyond_the_limit_are_refused_clearly() {
    let broker = Broker::start(&["--connections-max", "4"]);
    within(60, async {
        let mut held = Vec::new();
        for _ in 0..4 {
            held.push(Client::connect(&broker.address).await.unwrap());
        }
        let error = Client::connect(&broker.address).await.unwrap_err();
        assert_eq!(error.code(), Some(ErrorCode::TooManyConnections), "{error}");
        assert!(error.to_string().contains("limit of 4 connections"), "{error}");
        // Room again once one leaves.
        drop(held.pop());
        tokio::time::sleep(Duration::from_millis(200)).await;
        let mut again = Client::connect(&broker.address).await.unwrap();
        again.ping().await.unwrap();
    })
    .await;
    let log = broker.log();
    assert!(
        log.contains("connection refused")
            && log.contains("limit of 4 connections")
            && log.contains("peer=127.0.0.1:"),
        "{log}"
    );
}

/// Connects to `address` from the loopback address `from` (any of 127.0.0.0/8 is local).
async fn connect_from(from: &str, address: &str) -> tokio::net::TcpStream {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind(format!("{from}:0").parse().unwrap()).unwrap();
    socket.connect(address.parse().unwrap()).await.unwrap()
}

/// One client address cannot take every connection: past its share it is refused (an error
/// answer on the native port, a closed connection on the Kafka port, both counted together),
/// while another address still gets in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_client_address_gets_at_most_its_share_of_connections() {
    let broker = Broker::start(&["--connection-count-per-address-max", "2"]);
    let (native, kafka) = (broker.address.clone(), broker.kafka.clone());
    within(60, async move {
        let first = Client::connect(&native).await.unwrap();
        // The Kafka listener counts against the same share (an ApiVersions v0 answered: the
        // connection is in).
        let mut second = TcpStream::connect(&kafka).unwrap();
        second.write_all(&[0, 0, 0, 10, 0, 18, 0, 0, 0, 0, 0, 1, 0xff, 0xff]).unwrap();
        let mut size = [0u8; 4];
        std::io::Read::read_exact(&mut second, &mut size).unwrap();
        let error = Client::connect(&native).await.unwrap_err();
        assert_eq!(error.code(), Some(ErrorCode::TooManyConnections), "{error}");
        assert!(error.to_string().contains("127.0.0.1 already has 2 connections"), "{error}");
        let mut refused = TcpStream::connect(&kafka).unwrap();
        refused.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut byte = [0u8; 1];
        assert_eq!(std::io::Read::read(&mut refused, &mut byte).unwrap_or(0), 0, "closed");
        // Another address is not held to this one's share.
        let mut other = connect_from("127.0.0.2", &native).await;
        let mut frame = Vec::new();
        Request::Ping.encode_frame(7, &mut frame).unwrap();
        tokio::io::AsyncWriteExt::write_all(&mut other, &frame).await.unwrap();
        let mut answer = [0u8; 20];
        tokio::io::AsyncReadExt::read_exact(&mut other, &mut answer).await.unwrap();
        let head = ringmq_protocol::FrameHead::decode(&answer, u32::MAX).unwrap();
        assert_eq!((head.status, head.correlation_id), (0, 7));
        // A closed connection gives its place back.
        drop((first, second));
        tokio::time::sleep(Duration::from_millis(300)).await;
        let mut again = Client::connect(&native).await.unwrap();
        again.ping().await.unwrap();
    })
    .await;
    let log = broker.log();
    assert!(
        log.contains("protocol=\"kafka\"") && log.contains("already has 2 connections"),
        "{log}"
    );
}

fn produce_frame(topic: &str, correlation: u32, value: &[u8]) -> Vec<u8> {
    let mut buffer = vec![0u8; value.len() + 256];
    let mut builder = BatchBuilder::new(&mut buffer, 0).unwrap();
    assert_eq!(builder.push(&Record::value(value, 0)).unwrap(), Push::Appended);
    let batch = builder.finish().unwrap();
    let mut frame = Vec::new();
    Request::Produce(Produce { topic, partition: 0, acks: Acks::Written, timeout_ms: 0, batch })
        .encode_frame(correlation, &mut frame)
        .unwrap();
    frame
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_never_reads_is_cut_off_without_unbounded_buffering() {
    let broker = Broker::start(&["--write-timeout-ms", "500", "--in-flight-max", "32"]);
    let address = broker.address.clone();
    within(120, async {
        let mut admin = Client::connect(&address).await.unwrap();
        admin.create_topic("deaf", TopicConfig::default()).await.unwrap();
        let rss_before = admin.stats().await.unwrap().peak_rss_bytes;
        let deaf = tokio::task::spawn_blocking(move || {
            let mut stream = TcpStream::connect(&address).unwrap();
            stream.set_write_timeout(Some(Duration::from_secs(20))).unwrap();
            let frame = produce_frame("deaf", 1, &[7u8; 512]);
            // Keep writing requests and never read a response: the broker must stop reading
            // (backpressure), then close the connection when its writes time out.
            let mut sent = 0u64;
            for _ in 0..200_000 {
                if stream.write_all(&frame).is_err() {
                    return sent;
                }
                sent += 1;
            }
            sent
        });
        // Meanwhile a well-behaved client works.
        produce_values(&broker.address, "deaf", 2000, 100).await;
        let sent = deaf.await.unwrap();
        assert!(sent < 200_000, "the broker kept accepting requests from a client that never reads");
        let stats = admin.stats().await.unwrap();
        let growth = stats.peak_rss_bytes.saturating_sub(rss_before);
        eprintln!("deaf client: {sent} requests sent before the broker cut it off; broker peak RSS grew {growth} bytes");
        assert!(growth < 64 << 20, "broker memory grew by {growth} bytes for one deaf client");
    })
    .await;
    let log = broker.log();
    assert!(log.contains("did not read its responses"), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consumer_lapped_by_the_ring_is_told_where_to_resume() {
    let broker = Broker::start(&[]);
    within(120, async {
        let mut admin = Client::connect(&broker.address).await.unwrap();
        admin.create_topic("lapped", TopicConfig::default().capacity(1 << 20)).await.unwrap();
        produce_values(&broker.address, "lapped", 100, 1000).await;
        let mut consumer = admin
            .consumer("lapped", 0)
            .start(StartOffset::Earliest)
            .max_bytes(1)
            .build()
            .await
            .unwrap();
        assert_eq!(consumer.next().await.unwrap().offset, 0);
        // The ring (1 MiB) is overwritten several times before the consumer reads again.
        produce_values(&broker.address, "lapped", 6000, 1000).await;
        let mut skipped_to = None;
        for _ in 0..200 {
            match consumer.next().await {
                Ok(_) => {}
                Err(ClientError::OffsetOutOfRange { offset, earliest, next }) => {
                    assert!(offset < earliest && earliest < next, "{offset} {earliest} {next}");
                    skipped_to = Some(earliest);
                    consumer.seek(earliest);
                    break;
                }
                Err(other) => panic!("unexpected {other}"),
            }
        }
        let earliest = skipped_to.expect("the lapped consumer is told its offset is gone");
        let record = consumer.next().await.unwrap();
        assert_eq!(record.offset, earliest, "it resumes at the earliest offset held");
        assert!(record.value.starts_with(format!("{}:", record.offset - 100).as_bytes()));
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stuck_reader_blocks_the_writer_no_longer_than_the_write_timeout() {
    // A fetch response the client never reads holds a lease on the chunk it came from; the
    // writer must reclaim that chunk once the ring wraps. The write timeout (1.5 s) closes the
    // stuck connection and frees the lease long before the produce timeout (10 s) would fail the
    // producer's appends with Busy.
    let broker = Broker::start(&["--write-timeout-ms", "1500", "--request-timeout-ms", "10000"]);
    let address = broker.address.clone();
    within(120, async {
        let mut admin = Client::connect(&address).await.unwrap();
        admin.create_topic("stuck", TopicConfig::default().capacity(1 << 20)).await.unwrap();
        produce_values(&address, "stuck", 900, 1000).await;
        let stuck = tokio::task::spawn_blocking(move || {
            let stream = TcpStream::connect(&address).unwrap();
            let socket = socket2_recv_buffer(&stream);
            // Enough pipelined fetches of the first chunk that their responses overflow the
            // kernel's socket buffers: the broker's write blocks with a lease on that chunk.
            let mut frame = Vec::new();
            for correlation in 0..64 {
                Request::Fetch(Fetch {
                    topic: "stuck",
                    partition: 0,
                    offset: 0,
                    max_bytes: 900_000,
                    max_wait_ms: 0,
                    min_bytes: 1,
                })
                .encode_frame(correlation, &mut frame)
                .unwrap();
            }
            (&stream).write_all(&frame).unwrap();
            // Never read; hold the connection until the producer is done.
            std::thread::sleep(Duration::from_secs(3));
            socket
        });
        tokio::time::sleep(Duration::from_millis(100)).await;
        // Four more laps of the 1 MiB ring: the chunk the stuck fetch leases must be reclaimed.
        produce_values(&broker.address, "stuck", 4000, 1000).await;
        // Every produce was acknowledged (none failed with Busy after the 5 s produce timeout).
        stuck.await.unwrap();
    })
    .await;
    let log = broker.log();
    assert!(log.contains("did not read its responses"), "{log}");
    assert!(
        log.contains("append waited for readers to release the oldest chunk"),
        "the writer met the lease: {log}"
    );
    assert!(!log.contains("append gave up"), "{log}");
}

/// Shrinks a socket's receive buffer so a large response cannot be absorbed by the kernel.
fn socket2_recv_buffer(stream: &TcpStream) -> usize {
    use std::os::fd::AsFd;
    let _ = rustix::net::sockopt::set_socket_recv_buffer_size(stream.as_fd(), 4096);
    rustix::net::sockopt::socket_recv_buffer_size(stream.as_fd()).unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_idle_connections_cost_little_memory() {
    let broker = Broker::start(&["--connections-max", "2000"]);
    let address = broker.address.clone();
    within(120, async {
        let mut admin = Client::connect(&address).await.unwrap();
        let before = admin.stats().await.unwrap().peak_rss_bytes;
        let idle = tokio::task::spawn_blocking(move || {
            (0..1000).map(|_| TcpStream::connect(&address).unwrap()).collect::<Vec<_>>()
        })
        .await
        .unwrap();
        tokio::time::sleep(Duration::from_millis(500)).await;
        admin.ping().await.unwrap();
        let after = admin.stats().await.unwrap().peak_rss_bytes;
        let per_connection = after.saturating_sub(before) / 1000;
        eprintln!("1000 idle connections: broker peak RSS {before} -> {after} bytes ({per_connection} bytes each)");
        assert!(per_connection < 64 << 10, "{per_connection} bytes per idle connection");
        drop(idle);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backlog_of_a_million_messages_keeps_memory_bounded() {
    let broker = Broker::start(&[]);
    within(300, async {
        let mut admin = Client::connect(&broker.address).await.unwrap();
        admin.create_topic("backlog", TopicConfig::default().capacity(8 << 20)).await.unwrap();
        produce_values(&broker.address, "backlog", 1_000_000, 100).await;
        let stats = admin.stats().await.unwrap();
        eprintln!(
            "1,000,000 unread messages through an 8 MiB ring: broker peak RSS {} bytes",
            stats.peak_rss_bytes
        );
        assert!(stats.peak_rss_bytes < 256 << 20, "peak RSS {}", stats.peak_rss_bytes);
        let info = admin.describe_topic("backlog").await.unwrap();
        assert_eq!(info.partitions[0].next_offset, 1_000_000);
        assert!(info.partitions[0].earliest_offset > 0, "retention by size reclaimed the oldest");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_topic_whose_rings_cannot_be_allocated_leaves_nothing_behind() {
    let broker = Broker::start(&[]);
    within(60, async {
        let mut admin = Client::connect(&broker.address).await.unwrap();
        // Four rings of 1 TiB: more than the disk holds. Refused from the free space before any
        // file is made (with a disk filled by someone else between the check and `fallocate`,
        // the allocation's ENOSPC removes what was made; see `create_files`).
        let error = admin
            .create_topic("huge", TopicConfig::default().partitions(4).capacity(1 << 40))
            .await
            .unwrap_err();
        assert_eq!(error.code(), Some(ErrorCode::Busy), "{error}");
        assert!(error.to_string().contains("4398046543872 bytes; the disk has"), "{error}");
        assert!(admin.list_topics().await.unwrap().is_empty(), "no half-made topic is listed");
        assert!(!broker.data_dir().join("huge").exists(), "no half-made topic is left on disk");
        admin.create_topic("fine", TopicConfig::default()).await.unwrap();
    })
    .await;
}
