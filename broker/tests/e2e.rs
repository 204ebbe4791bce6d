//! End-to-end tests: the real `ringmq` binary on a loopback port, driven through
//! `ringmq-client` over TCP (and `ringmq-cli` for the CLI test).

#![allow(clippy::unwrap_used, reason = "tests fail on error")]

mod support;

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use ringmq_client::{
    Acks, Client, ClientError, Compression, ErrorCode, ProducerRecord, StartOffset, TopicConfig,
};
use ringmq_protocol::message::{Fetch, Produce};
use ringmq_protocol::{BatchBuilder, FrameHead, Opcode, Record, Request};
use support::{within, Broker};

fn value(producer: usize, sequence: usize) -> Vec<u8> {
    format!("producer {producer} message {sequence} {}", "x".repeat(sequence % 300)).into_bytes()
}

/// Reads a whole partition from the earliest offset.
async fn read_partition(
    address: &str,
    topic: &str,
    partition: u32,
) -> Vec<ringmq_client::ConsumerRecord> {
    let client = Client::connect(address).await.unwrap();
    let mut consumer = client
        .consumer(topic, partition)
        .start(StartOffset::Earliest)
        .max_wait(Duration::from_millis(50))
        .build()
        .await
        .unwrap();
    let end = consumer.high_watermark();
    let mut records = Vec::new();
    while consumer.position() < end {
        records.push(consumer.next().await.unwrap());
    }
    records
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keyed_messages_come_back_byte_identical_and_in_order() {
    let broker = Broker::start(&[]);
    within(120, async {
        let mut client = Client::connect(&broker.address).await.unwrap();
        client.create_topic("orders", TopicConfig::default().partitions(3)).await.unwrap();
        let producer = client.producer().linger(Duration::from_millis(2)).build().await.unwrap();
        let mut deliveries = Vec::new();
        for sequence in 0..3000 {
            let key = format!("customer-{}", sequence % 10);
            let payload = value(0, sequence);
            let record = ProducerRecord::new("orders", &payload).key(key.as_bytes());
            let delivery = producer.send(record).await.unwrap();
            deliveries.push((key, payload, delivery));
        }
        let mut sent: HashMap<String, Vec<(u64, Vec<u8>)>> = HashMap::new();
        for (key, payload, delivery) in deliveries {
            let offset = delivery.await.unwrap().expect("acks=written gives an offset");
            sent.entry(key).or_default().push((offset, payload));
        }
        producer.close().await.unwrap();
        let mut received: HashMap<String, Vec<(u64, Vec<u8>)>> = HashMap::new();
        let mut total = 0;
        for partition in 0..3 {
            let records = read_partition(&broker.address, "orders", partition).await;
            for (index, record) in records.iter().enumerate() {
                assert_eq!(record.offset, index as u64, "offsets are dense from 0");
            }
            total += records.len();
            for record in records {
                let key = String::from_utf8(record.key.unwrap().to_vec()).unwrap();
                received.entry(key).or_default().push((record.offset, record.value.to_vec()));
            }
        }
        assert_eq!(total, 3000);
        // Each key lives in one partition, in send order, every byte intact.
        assert_eq!(received, sent);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_producers_lose_and_duplicate_nothing() {
    let broker = Broker::start(&[]);
    within(120, async {
        let mut client = Client::connect(&broker.address).await.unwrap();
        client.create_topic("events", TopicConfig::default().partitions(2)).await.unwrap();
        let mut tasks = Vec::new();
        for producer_id in 0..4usize {
            let address = broker.address.clone();
            tasks.push(tokio::spawn(async move {
                let client = Client::connect(&address).await.unwrap();
                let producer = client.producer().build().await.unwrap();
                let key = format!("producer-{producer_id}");
                let mut deliveries = Vec::new();
                for sequence in 0..1500 {
                    let payload = value(producer_id, sequence);
                    deliveries.push(
                        producer
                            .send(ProducerRecord::new("events", &payload).key(key.as_bytes()))
                            .await
                            .unwrap(),
                    );
                }
                for delivery in deliveries {
                    delivery.await.unwrap();
                }
                producer.close().await.unwrap();
            }));
        }
        for task in tasks {
            task.await.unwrap();
        }
        let mut seen: HashMap<usize, Vec<usize>> = HashMap::new();
        for partition in 0..2 {
            for record in read_partition(&broker.address, "events", partition).await {
                let text = String::from_utf8(record.value.to_vec()).unwrap();
                let mut words = text.split(' ');
                let producer: usize = words.nth(1).unwrap().parse().unwrap();
                let sequence: usize = words.nth(1).unwrap().parse().unwrap();
                assert_eq!(record.value.to_vec(), value(producer, sequence), "content intact");
                seen.entry(producer).or_default().push(sequence);
            }
        }
        for producer in 0..4 {
            assert_eq!(
                seen[&producer],
                (0..1500).collect::<Vec<_>>(),
                "producer {producer}: all, once, in order"
            );
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_polling_consumer_receives_messages_produced_after_it_started() {
    let broker = Broker::start(&[]);
    within(60, async {
        let mut client = Client::connect(&broker.address).await.unwrap();
        client.create_topic("live", TopicConfig::default()).await.unwrap();
        let mut consumer = client
            .consumer("live", 0)
            .start(StartOffset::Latest)
            .max_wait(Duration::from_secs(20))
            .build()
            .await
            .unwrap();
        let waiting = tokio::spawn(async move { consumer.next().await });
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(!waiting.is_finished(), "the fetch waits for data instead of returning empty");
        let producer = client.producer().build().await.unwrap();
        producer.send_and_wait(ProducerRecord::new("live", b"wake up")).await.unwrap();
        // Answered when the data arrives, long before the 20 s poll ends (the test's own limit is
        // the outer `within`, not a timing assertion).
        let record = waiting.await.unwrap().unwrap();
        assert_eq!((record.offset, &record.value[..]), (0, &b"wake up"[..]));
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_recover_from_a_timed_out_call_and_a_broker_restart() {
    let mut broker = Broker::start(&[]);
    within(120, async {
        let short = Duration::from_millis(500);
        let mut client = Client::connect_with_timeout(&broker.address, short).await.unwrap();
        client.create_topic("steady", TopicConfig::default().partitions(1)).await.unwrap();
        produce_numbered(&broker.address, "steady", 0..10).await;
        let mut consumer = client
            .consumer("steady", 0)
            .max_wait(Duration::from_millis(100))
            .timeout(short)
            .build()
            .await
            .unwrap();
        let mut received = Vec::new();
        while received.len() < 5 {
            received.push(consumer.next().await.unwrap().offset);
        }

        // A frozen broker makes the call time out; its answer then arrives late. The next call
        // must not take that stale answer for its own.
        broker.freeze();
        let frozen = client.describe_topic("steady").await;
        broker.signal("CONT");
        assert!(
            matches!(frozen, Err(ringmq_client::ClientError::Timeout { .. })),
            "a frozen broker times the call out: {frozen:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
        let info = client.describe_topic("steady").await.unwrap();
        assert_eq!((info.name.as_str(), info.partitions[0].next_offset), ("steady", 10));

        // After a crash and a restart on the same port, the same consumer goes on from where it
        // was (it sees errors while the broker is down).
        broker.restart_same_port();
        produce_numbered(&broker.address, "steady", 10..15).await;
        let mut errors = 0;
        while received.len() < 15 {
            match consumer.next().await {
                Ok(record) => received.push(record.offset),
                Err(_) => errors += 1,
            }
            assert!(errors < 100, "the consumer does not reconnect");
        }
        assert_eq!(received, (0..15).collect::<Vec<u64>>());
        client.ping().await.unwrap();
    })
    .await;
}

async fn produce_numbered(address: &str, topic: &str, range: std::ops::Range<usize>) -> Vec<u64> {
    let client = Client::connect(address).await.unwrap();
    let producer = client.producer().acks(Acks::Written).build().await.unwrap();
    let mut deliveries = Vec::new();
    for sequence in range {
        deliveries
            .push(producer.send(ProducerRecord::new(topic, &value(9, sequence))).await.unwrap());
    }
    let mut offsets = Vec::new();
    for delivery in deliveries {
        offsets.push(delivery.await.unwrap().unwrap());
    }
    producer.close().await.unwrap();
    offsets
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn topics_and_acknowledged_messages_survive_sigterm_and_sigkill() {
    let mut broker = Broker::start(&[]);
    within(120, async {
        let mut client = Client::connect(&broker.address).await.unwrap();
        client.create_topic("durable", TopicConfig::default()).await.unwrap();
        let offsets = produce_numbered(&broker.address, "durable", 0..2000).await;
        assert_eq!(offsets, (0..2000).collect::<Vec<u64>>());
    })
    .await;
    assert!(broker.terminate(), "SIGTERM stops the broker cleanly");
    assert!(broker.log().contains("stopped"));
    broker.restart();
    assert!(
        broker.log().contains("mode=\"clean\"") || broker.log().contains("mode=clean"),
        "{}",
        broker.log()
    );
    within(120, async {
        let mut client = Client::connect(&broker.address).await.unwrap();
        assert_eq!(client.list_topics().await.unwrap()[0].name, "durable");
        let records = read_partition(&broker.address, "durable", 0).await;
        assert_eq!(records.len(), 2000);
        let offsets = produce_numbered(&broker.address, "durable", 2000..4000).await;
        assert_eq!(offsets, (2000..4000).collect::<Vec<u64>>(), "offsets continue densely");
    })
    .await;
    broker.kill();
    broker.restart();
    within(120, async {
        let records = read_partition(&broker.address, "durable", 0).await;
        assert_eq!(records.len(), 4000, "every acknowledged message survives SIGKILL");
        for (index, record) in records.iter().enumerate() {
            assert_eq!(record.value.to_vec(), value(9, index));
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn producer_retries_through_a_broker_restart() {
    let mut broker = Broker::start(&[]);
    let address = broker.address.clone();
    let client = within(30, Client::connect(&address)).await.unwrap();
    let mut admin = Client::connect(&address).await.unwrap();
    admin.create_topic("retry", TopicConfig::default()).await.unwrap();
    let producer = client.producer().linger(Duration::from_millis(1)).build().await.unwrap();
    let mut deliveries = Vec::new();
    for sequence in 0..4000usize {
        if sequence == 2000 {
            // Kill the broker mid-stream and bring it back on the same port.
            broker.kill();
            let restart = tokio::task::spawn_blocking(move || {
                broker.restart_same_port();
                broker
            });
            broker = restart.await.unwrap();
        }
        let payload = value(3, sequence);
        deliveries
            .push(within(60, producer.send(ProducerRecord::new("retry", &payload))).await.unwrap());
    }
    for delivery in deliveries {
        within(60, delivery).await.expect("every record is delivered despite the restart");
    }
    within(60, producer.close()).await.unwrap();
    let records = read_partition(&broker.address, "retry", 0).await;
    // At least once: every message is there; a batch written just before the kill may be there
    // twice (its acknowledgement was lost and it was sent again).
    let mut seen = std::collections::BTreeSet::new();
    for record in &records {
        let text = String::from_utf8(record.value.to_vec()).unwrap();
        let sequence: usize = text.split(' ').nth(3).unwrap().parse().unwrap();
        assert_eq!(record.value.to_vec(), value(3, sequence));
        seen.insert(sequence);
    }
    assert_eq!(seen.len(), 4000, "every message arrived");
}

fn raw_socket(address: &str) -> TcpStream {
    let stream = TcpStream::connect(address).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    stream
}

/// Reads until the broker closes the connection; returns what it sent.
fn read_to_close(stream: &mut TcpStream) -> Vec<u8> {
    let mut received = Vec::new();
    let _ = stream.read_to_end(&mut received);
    received
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_frames_get_an_error_or_a_close_and_harm_no_one_else() {
    let broker = Broker::start(&["--frame-timeout-ms", "500"]);
    let address = broker.address.clone();
    within(120, async {
        let mut client = Client::connect(&address).await.unwrap();
        client.create_topic("safe", TopicConfig::default()).await.unwrap();
        // A well-behaved producer keeps working while the hostile clients run.
        let good = {
            let address = address.clone();
            tokio::spawn(async move { produce_numbered(&address, "safe", 0..3000).await })
        };
        let hostile = tokio::task::spawn_blocking(move || {
            // Random garbage.
            let mut garbage = raw_socket(&address);
            let bytes: Vec<u8> =
                (0..4096u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
            garbage.write_all(&bytes).unwrap();
            let answer = read_to_close(&mut garbage);
            let head = FrameHead::decode(&answer, u32::MAX).unwrap();
            assert_eq!(head.status, ErrorCode::MalformedFrame.as_u16());

            // A header claiming a 4 GiB body: refused from the header alone.
            let mut huge = raw_socket(&address);
            huge.write_all(&FrameHead::request(Opcode::Produce, 77, u32::MAX).encode()).unwrap();
            let answer = read_to_close(&mut huge);
            let head = FrameHead::decode(&answer, u32::MAX).unwrap();
            assert_eq!((head.status, head.correlation_id), (ErrorCode::FrameTooLarge.as_u16(), 77));

            // A truncated frame, then silence: closed after the frame timeout.
            let mut truncated = raw_socket(&address);
            let mut frame = Vec::new();
            Request::Ping.encode_frame(5, &mut frame).unwrap();
            truncated.write_all(&FrameHead::request(Opcode::Fetch, 6, 100).encode()).unwrap();
            truncated.write_all(&[0; 10]).unwrap();
            assert!(read_to_close(&mut truncated).is_empty(), "closed without a reply");

            // A valid header whose body does not decode.
            let mut bad_body = raw_socket(&address);
            bad_body.write_all(&FrameHead::request(Opcode::Fetch, 9, 3).encode()).unwrap();
            bad_body.write_all(&[1, 2, 3]).unwrap();
            let answer = read_to_close(&mut bad_body);
            let head = FrameHead::decode(&answer, u32::MAX).unwrap();
            assert_eq!((head.status, head.correlation_id), (ErrorCode::MalformedFrame.as_u16(), 9));
            let body = ringmq_protocol::message::ErrorBody::decode(&answer[20..]).unwrap();
            assert!(body.message.contains("fetch request"), "{}", body.message);

            // A request with a status (requests carry 0): refused like any bad header.
            let mut with_status = raw_socket(&address);
            let mut head = FrameHead::request(Opcode::Ping, 21, 0);
            head.status = 7;
            with_status.write_all(&head.encode()).unwrap();
            let answer = read_to_close(&mut with_status);
            let head = FrameHead::decode(&answer, u32::MAX).unwrap();
            assert_eq!(
                (head.status, head.correlation_id, head.opcode),
                (ErrorCode::MalformedFrame.as_u16(), 21, Opcode::Ping.as_u8())
            );
            let body = ringmq_protocol::message::ErrorBody::decode(&answer[20..]).unwrap();
            assert!(body.message.contains("status 7"), "{}", body.message);

            // A produce whose batch is corrupt: an error reply, and the connection goes on.
            let mut corrupt = raw_socket(&address);
            let mut buffer = vec![0u8; 256];
            let mut builder = BatchBuilder::new(&mut buffer, 0).unwrap();
            let _ = builder.push(&Record::value(b"payload", 0)).unwrap();
            let batch = builder.finish().unwrap().to_vec();
            let mut damaged = batch.clone();
            let last = damaged.len() - 1;
            damaged[last] ^= 0xFF;
            let mut frame = Vec::new();
            Request::Produce(Produce {
                topic: "safe",
                partition: 0,
                acks: Acks::Written,
                timeout_ms: 0,
                batch: &damaged,
            })
            .encode_frame(11, &mut frame)
            .unwrap();
            Request::Ping.encode_frame(12, &mut frame).unwrap();
            corrupt.write_all(&frame).unwrap();
            let mut answer = [0u8; 20];
            corrupt.read_exact(&mut answer).unwrap();
            let head = FrameHead::decode(&answer, u32::MAX).unwrap();
            assert_eq!((head.status, head.correlation_id), (ErrorCode::CorruptBatch.as_u16(), 11));
            let mut body = vec![0u8; head.body_len()];
            corrupt.read_exact(&mut body).unwrap();
            let mut answer = [0u8; 20];
            corrupt.read_exact(&mut answer).unwrap();
            let head = FrameHead::decode(&answer, u32::MAX).unwrap();
            assert_eq!(
                (head.status, head.correlation_id),
                (0, 12),
                "the connection goes on after a bad batch"
            );

            // A fetch with a bad offset on the raw socket: OffsetOutOfRange with the offsets.
            let mut frame = Vec::new();
            Request::Fetch(Fetch {
                topic: "safe",
                partition: 0,
                offset: u64::MAX,
                max_bytes: 1024,
                max_wait_ms: 0,
                min_bytes: 1,
            })
            .encode_frame(13, &mut frame)
            .unwrap();
            corrupt.write_all(&frame).unwrap();
            let mut answer = [0u8; 20];
            corrupt.read_exact(&mut answer).unwrap();
            let head = FrameHead::decode(&answer, u32::MAX).unwrap();
            assert_eq!(head.status, ErrorCode::OffsetOutOfRange.as_u16());
        });
        hostile.await.unwrap();
        let offsets = good.await.unwrap();
        assert_eq!(offsets.len(), 3000);
        let records = read_partition(&broker.address, "safe", 0).await;
        assert_eq!(records.len(), 3000, "nothing stored was harmed");
    })
    .await;
    let log = broker.log();
    assert!(log.contains("rejected frame"), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_errors_are_clear() {
    let broker = Broker::start(&["--batch-size-max", "64KiB"]);
    within(60, async {
        let mut client = Client::connect(&broker.address).await.unwrap();
        client.create_topic("small", TopicConfig::default()).await.unwrap();

        let error = client.describe_topic("nope").await.unwrap_err();
        assert_eq!(error.to_string(), "topic \"nope\" does not exist");
        assert_eq!(error.code(), Some(ErrorCode::UnknownTopic));

        let error = client.create_topic("small", TopicConfig::default()).await.unwrap_err();
        assert_eq!(error.to_string(), "topic \"small\" already exists");
        let error = client.create_topic("bad/name", TopicConfig::default()).await.unwrap_err();
        assert_eq!(error.code(), Some(ErrorCode::InvalidTopicName));
        assert!(error.to_string().contains("bad/name"), "{error}");
        let error = client
            .create_topic("huge", TopicConfig::default().capacity(1 << 50))
            .await
            .unwrap_err();
        assert_eq!(error.code(), Some(ErrorCode::InvalidRequest));
        assert!(error.to_string().contains("capacity"), "{error}");

        let producer = client.producer().build().await.unwrap();
        let error = producer.send(ProducerRecord::new("nope", b"x")).await.unwrap_err();
        assert_eq!(error.to_string(), "topic \"nope\" does not exist");
        let error =
            producer.send(ProducerRecord::new("small", b"x").partition(5)).await.unwrap_err();
        assert!(error.to_string().contains("no partition 5"), "{error}");
        let oversized = vec![7u8; 100 << 10];
        let error = producer.send(ProducerRecord::new("small", &oversized)).await.unwrap_err();
        assert!(matches!(error, ClientError::Encode(_)), "{error}");
        assert!(error.to_string().contains("does not fit"), "{error}");

        producer.send_and_wait(ProducerRecord::new("small", b"one")).await.unwrap();
        let mut consumer =
            client.consumer("small", 0).start(StartOffset::Offset(50)).build().await.unwrap();
        let error = consumer.next().await.unwrap_err();
        match error {
            ClientError::OffsetOutOfRange { offset, earliest, next } => {
                assert_eq!((offset, earliest, next), (50, 0, 1))
            }
            other => panic!("unexpected {other}"),
        }
        consumer.seek(0);
        assert_eq!(&consumer.next().await.unwrap().value[..], b"one");
        let error = client.consumer("small", 3).build().await.unwrap_err();
        assert!(error.to_string().contains("no partition 3"), "{error}");
    })
    .await;
}

#[test]
fn cli_pipes_lines_through_produce_and_consume() {
    let broker = Broker::start(&[]);
    let cli = support::workspace_binary("ringmq-cli", "ringmq-cli");
    let run = |args: &[&str], input: Option<&str>| {
        let mut command = std::process::Command::new(&cli);
        command.arg("--broker").arg(&broker.address).args(args);
        command
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        let mut child = command.spawn().unwrap();
        if let Some(input) = input {
            child.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
        }
        drop(child.stdin.take());
        child.wait_with_output().unwrap()
    };
    let created =
        run(&["topic", "create", "lines", "--partitions", "1", "--capacity", "4MiB"], None);
    assert!(created.status.success(), "{}", String::from_utf8_lossy(&created.stderr));
    let lines: String = (0..500).map(|i| format!("line {i} ünïcødé\n")).collect();
    let produced = run(&["produce", "lines", "--acks", "synced"], Some(&lines));
    assert!(produced.status.success(), "{}", String::from_utf8_lossy(&produced.stderr));
    assert_eq!(
        String::from_utf8_lossy(&produced.stdout).trim(),
        "500 of 500 message(s) acknowledged"
    );
    let consumed = run(&["consume", "lines"], None);
    assert!(consumed.status.success(), "{}", String::from_utf8_lossy(&consumed.stderr));
    assert_eq!(String::from_utf8(consumed.stdout).unwrap(), lines);
    let counted = run(&["consume", "lines", "--from", "498", "--format", "offset"], None);
    assert_eq!(
        String::from_utf8(counted.stdout).unwrap(),
        "0\t498\tline 498 ünïcødé\n0\t499\tline 499 ünïcødé\n"
    );
    let missing = run(&["consume", "orders"], None);
    assert_eq!(missing.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&missing.stderr).trim(),
        "error: topic \"orders\" does not exist"
    );
    let described = run(&["topic", "describe", "lines"], None);
    assert!(String::from_utf8_lossy(&described.stdout).contains("0\t0\t500\t500"));
}

#[test]
fn bad_flags_exit_2_with_one_line() {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_ringmq"))
        .args(["--sync", "sometimes"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.starts_with("error: invalid value \"sometimes\" for --sync"), "{stderr}");
}

#[test]
fn a_second_broker_on_the_same_data_directory_is_refused() {
    let broker = Broker::start(&[]);
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_ringmq"))
        .args(["--listen", "127.0.0.1:0", "--no-metrics", "--data-dir"])
        .arg(broker.data_dir())
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert!(stderr.contains("in use by another running broker"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consumer_seeks_while_its_next_fetch_is_already_sent() {
    // After each answer the consumer sends its next fetch at once; a seek must not let that
    // answer (for the old position) stand in for the new one.
    let broker = Broker::start(&[]);
    within(60, async {
        let mut client = Client::connect(&broker.address).await.unwrap();
        client.create_topic("seek", TopicConfig::default().partitions(1)).await.unwrap();
        // Two producers one after the other: at least two batches.
        produce_numbered(&broker.address, "seek", 0..5).await;
        produce_numbered(&broker.address, "seek", 5..10).await;
        let mut consumer = client
            .consumer("seek", 0)
            .max_bytes(1)
            .max_wait(Duration::from_millis(100))
            .build()
            .await
            .unwrap();
        assert_eq!(consumer.next().await.unwrap().offset, 0);
        for (to, expected) in [(7, 7), (2, 2), (3, 3), (9, 9), (0, 0)] {
            consumer.seek(to);
            let record = consumer.next().await.unwrap();
            assert_eq!(record.offset, expected, "after seek({to})");
            assert_eq!(record.value, value(9, to as usize), "after seek({to})");
        }
        // Reading on without a seek uses the fetch sent ahead.
        let rest: Vec<u64> = {
            let mut rest = Vec::new();
            while consumer.position() < 10 {
                rest.push(consumer.next().await.unwrap().offset);
            }
            rest
        };
        assert_eq!(rest, (1..10).collect::<Vec<u64>>());
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn topic_limits_from_the_settings_are_enforced() {
    let broker = Broker::start(&[
        "--partition-count-max",
        "4",
        "--partition-capacity-max",
        "16MiB",
        "--partition-capacity-default",
        "1MiB",
        "--topic-count-max",
        "2",
    ]);
    within(60, async {
        let mut client = Client::connect(&broker.address).await.unwrap();
        let error =
            client.create_topic("wide", TopicConfig::default().partitions(5)).await.unwrap_err();
        assert_eq!(error.code(), Some(ErrorCode::InvalidRequest), "{error}");
        assert!(error.to_string().contains("5 partitions (at most 4)"), "{error}");
        let error = client
            .create_topic("deep", TopicConfig::default().capacity(32 << 20))
            .await
            .unwrap_err();
        assert_eq!(error.code(), Some(ErrorCode::InvalidRequest), "{error}");
        assert!(error.to_string().contains("at most 16777216"), "{error}");
        // At the limits themselves: accepted.
        let at_limit = TopicConfig::default().partitions(4).capacity(16 << 20);
        client.create_topic("first", at_limit).await.unwrap();
        client.create_topic("second", TopicConfig::default()).await.unwrap();
        let error = client.create_topic("third", TopicConfig::default()).await.unwrap_err();
        assert_eq!(error.code(), Some(ErrorCode::Busy), "{error}");
        assert!(error.to_string().contains("already holds 2 topics"), "{error}");
        assert_eq!(client.list_topics().await.unwrap().len(), 2, "nothing half-made");
        client.delete_topic("second").await.unwrap();
        client.create_topic("third", TopicConfig::default()).await.unwrap();
    })
    .await;
}

/// `ring_bytes_max` and `disk_reserve` refuse a topic before anything is allocated: no file is
/// left, the other topics keep their data, and a topic that fits is still created.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ring_bytes_and_the_disk_reserve_are_enforced_before_allocating() {
    let broker =
        Broker::start(&["--ring-bytes-max", "8MiB", "--partition-capacity-default", "1MiB"]);
    within(60, async {
        let mut client = Client::connect(&broker.address).await.unwrap();
        client.create_topic("kept", TopicConfig::default().partitions(6)).await.unwrap();
        produce_numbered(&broker.address, "kept", 0..100).await;
        let error =
            client.create_topic("over", TopicConfig::default().partitions(3)).await.unwrap_err();
        assert_eq!(error.code(), Some(ErrorCode::Busy), "{error}");
        let text = error.to_string();
        assert!(text.contains("3145728") && text.contains("6291456 of at most 8388608"), "{text}");
        assert!(!broker.data_dir.join("over").exists(), "nothing allocated");
        // Exactly up to the limit: accepted.
        client.create_topic("fits", TopicConfig::default().partitions(2)).await.unwrap();
        assert_eq!(read_partition(&broker.address, "kept", 0).await.len(), 100);
    })
    .await;
    drop(broker);

    // A reserve no disk has: every creation is refused, naming the free space.
    let broker = Broker::start(&["--disk-reserve", "1PiB"]);
    within(60, async {
        let mut client = Client::connect(&broker.address).await.unwrap();
        let error = client.create_topic("big", TopicConfig::default()).await.unwrap_err();
        assert_eq!(error.code(), Some(ErrorCode::Busy), "{error}");
        assert!(error.to_string().contains("must stay free (disk_reserve)"), "{error}");
        assert!(!broker.data_dir.join("big").exists(), "nothing allocated");
        assert!(client.list_topics().await.unwrap().is_empty());
    })
    .await;
}

/// Batches are stored compressed as the producer sent them: the broker never decompresses (its
/// bytes in are the compressed size) and consumers read every codec back byte-identical.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compressed_batches_are_stored_as_sent_and_read_back_with_every_codec() {
    let broker = Broker::start(&[]);
    within(60, async {
        let mut admin = Client::connect(&broker.address).await.unwrap();
        let codecs = [
            Compression::None,
            Compression::Gzip,
            Compression::Snappy,
            Compression::Lz4,
            Compression::Zstd,
        ];
        let values: Vec<Vec<u8>> = (0..500)
            .map(|i| format!("{i:05} {}", "compressible ".repeat(40)).into_bytes())
            .collect();
        let raw: u64 = values.iter().map(|value| value.len() as u64).sum();
        for codec in codecs {
            let topic = format!("codec-{}", codec.name());
            admin.create_topic(&topic, TopicConfig::default().partitions(1)).await.unwrap();
            let before = admin.stats().await.unwrap().bytes_in;
            let producer = admin.producer().compression(codec).build().await.unwrap();
            let mut deliveries = Vec::new();
            for value in &values {
                deliveries.push(producer.send(ProducerRecord::new(&topic, value)).await.unwrap());
            }
            for delivery in deliveries {
                delivery.await.unwrap();
            }
            producer.close().await.unwrap();
            let stored = admin.stats().await.unwrap().bytes_in - before;
            if codec == Compression::None {
                assert!(stored > raw, "{stored} bytes stored for {raw} raw");
            } else {
                assert!(stored < raw / 4, "{codec:?}: {stored} bytes stored for {raw} raw");
            }
            let records = read_partition(&broker.address, &topic, 0).await;
            let read: Vec<Vec<u8>> = records.iter().map(|record| record.value.to_vec()).collect();
            assert_eq!(read, values, "{codec:?}");
            assert_eq!(records.last().unwrap().offset, 499);
        }
    })
    .await;
}

/// Free bytes on the file system of `path`.
fn free_bytes(path: &std::path::Path) -> u64 {
    let stats = rustix::fs::statvfs(path).unwrap();
    stats.f_bavail * stats.f_frsize
}

/// A large topic creation (rings of several GiB, pre-faulted and written out) holds up nothing
/// else: meanwhile another topic is created, produced to, read and listed, and the broker's
/// `Stats` shows the creation's progress. A SIGTERM during it stops the broker cleanly: the
/// creation answers `ShuttingDown`, its files are gone, and the broker restarts without it.
/// `ringmq-cli` then creates a topic that takes longer than its call timeout, without timing out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_topic_creation_blocks_nothing_and_a_stop_cancels_it() {
    let mut broker = Broker::start(&["--prefault", "true", "--disk-reserve", "1GiB"]);
    let free = free_bytes(broker.data_dir.parent().unwrap());
    // Half the free space, at most 16 GiB: several seconds of writing on any disk, and the stop
    // cuts it short after a fraction of it.
    let partitions = (free / 2 / (1 << 30)).min(16);
    assert!(partitions >= 4, "this test needs 8 GiB free under the temporary directory");
    let partitions = u32::try_from(partitions).unwrap();
    let big = tokio::spawn({
        let address = broker.address.clone();
        async move {
            let mut client = Client::connect(&address).await.unwrap();
            let config = TopicConfig::default().partitions(partitions).capacity(1 << 30);
            client.create_topic("big", config).await
        }
    });
    within(60, async {
        let mut admin = Client::connect(&broker.address).await.unwrap();
        let mut stats = admin.stats().await.unwrap();
        while stats.creating_written_bytes == 0 {
            tokio::time::sleep(Duration::from_millis(10)).await;
            stats = admin.stats().await.unwrap();
        }
        let expected_file_bytes = u64::from(partitions) * ((1 << 30) + 8192);
        assert!(
            stats.creating_file_bytes >= u64::from(partitions) << 30
                && stats.creating_file_bytes <= expected_file_bytes + (64 << 20),
            "{stats:?}"
        );
        // Everything else goes on meanwhile, the same name excepted.
        let error = admin.create_topic("big", TopicConfig::default()).await.unwrap_err();
        assert_eq!(error.code(), Some(ErrorCode::TopicExists), "{error}");
        admin.create_topic("small", TopicConfig::default().partitions(1)).await.unwrap();
        produce_numbered(&broker.address, "small", 0..100).await;
        assert_eq!(read_partition(&broker.address, "small", 0).await.len(), 100);
        let listed = admin.list_topics().await.unwrap();
        assert_eq!(listed.iter().map(|topic| topic.name.as_str()).collect::<Vec<_>>(), ["small"]);
        let during = admin.stats().await.unwrap();
        assert!(
            during.creating_written_bytes < during.creating_file_bytes,
            "the creation was still under way: {during:?}"
        );
        assert!(broker.data_dir.join("big").exists());
    })
    .await;
    let clean = tokio::task::block_in_place(|| broker.terminate());
    assert!(clean, "the broker stopped cleanly; its log:\n{}", broker.log());
    let error = within(10, big).await.unwrap().unwrap_err();
    assert_eq!(error.code(), Some(ErrorCode::ShuttingDown), "{error}");
    assert!(error.to_string().contains("the broker is stopping"), "{error}");
    assert!(!broker.data_dir.join("big").exists(), "the unfinished topic's files are removed");
    assert!(broker.log().contains("topic creation given up for the stop"), "{}", broker.log());

    broker.restart_same_port();
    within(60, async {
        let mut admin = Client::connect(&broker.address).await.unwrap();
        let listed = admin.list_topics().await.unwrap();
        assert_eq!(listed.iter().map(|topic| topic.name.as_str()).collect::<Vec<_>>(), ["small"]);
        assert_eq!(read_partition(&broker.address, "small", 0).await.len(), 100);
        assert_eq!(admin.stats().await.unwrap().creating_file_bytes, 0);
    })
    .await;

    // The CLI waits for a creation that outlasts its call timeout (200 ms; 4 GiB to write).
    let cli = support::workspace_binary("ringmq-cli", "ringmq-cli");
    let address = broker.address.clone();
    let created = tokio::task::spawn_blocking(move || {
        std::process::Command::new(cli)
            .args(["--broker", &address, "--timeout-ms", "200", "topic", "create", "slow"])
            .args(["--partitions", "4", "--capacity", "1GiB"])
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert!(created.status.success(), "{}", String::from_utf8_lossy(&created.stderr));
    assert_eq!(
        String::from_utf8_lossy(&created.stdout).trim(),
        "created topic slow with 4 partition(s) of 1.0 GiB each"
    );
}
