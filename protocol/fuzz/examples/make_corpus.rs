//! Writes the seed corpus under `corpus/<target>/`: valid frames and batches for the decoders'
//! fuzzers to start from. Run from the fuzz crate: `cargo run --example make_corpus`. (The
//! broker's request-sequence seeds are made by `broker/fuzz/examples/make_corpus.rs`.)

use std::fs;
use std::path::Path;

use ringmq_protocol::group::{
    CommitOffsets, Entries, GroupName, GroupTopic, Heartbeat, JoinGroup, LeaveGroup,
    PartitionOffset, ProducerIdentity,
};
use ringmq_protocol::message::{CreateTopic, Fetch, Handshake, Produce, TopicName};
use ringmq_protocol::{Acks, BatchBuilder, Header, Record, Request};

fn batch(records: &[(&[u8], Option<&[u8]>)], headers: &[Header<'_>]) -> Vec<u8> {
    let mut buffer = vec![0u8; 4096];
    let mut builder = BatchBuilder::new(&mut buffer, 1_700_000_000_000).expect("buffer");
    for (index, (value, key)) in records.iter().enumerate() {
        let record =
            Record { key: *key, value, timestamp: 1_700_000_000_000 + index as i64, headers };
        let _ = builder.push(&record).expect("record fits");
    }
    builder.finish().expect("batch").to_vec()
}

fn idempotent_batch(sequence: i32) -> Vec<u8> {
    let mut buffer = vec![0u8; 4096];
    let mut builder = BatchBuilder::new(&mut buffer, 1_700_000_000_000)
        .expect("buffer")
        .with_producer(0, 0, sequence);
    let _ = builder.push(&Record::value(b"once", 1_700_000_000_000)).expect("record fits");
    builder.finish().expect("batch").to_vec()
}

fn frames(requests: &[Request<'_>]) -> Vec<u8> {
    let mut out = Vec::new();
    for (index, request) in requests.iter().enumerate() {
        request.encode_frame(index as u32 + 1, &mut out).expect("encode");
    }
    out
}

fn main() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus");
    let small = batch(&[(b"hello", None), (b"world", Some(b"key"))], &[]);
    let with_headers = batch(&[(b"v", Some(b"k"))], &[Header { name: "trace", value: b"abc" }]);
    let requests = [
        Request::Handshake(Handshake { version_min: 1, version_max: 1, client_name: "fuzz" }),
        Request::Ping,
        Request::ListTopics,
        Request::Stats,
        Request::DescribeTopic(TopicName { name: "t" }),
        Request::CreateTopic(CreateTopic {
            name: "x",
            partition_count: 1,
            capacity: 65536,
            chunk_size: 0,
        }),
        Request::DeleteTopic(TopicName { name: "x" }),
        produce(&small, Acks::Written),
        Request::Fetch(Fetch {
            topic: "t",
            partition: 0,
            offset: 0,
            max_bytes: 4096,
            max_wait_ms: 0,
            min_bytes: 1,
        }),
    ];
    let mut seeds: Vec<(&str, String, Vec<u8>)> = Vec::new();
    for (index, request) in requests.iter().enumerate() {
        seeds.push((
            "decode_frame",
            format!("request-{index}"),
            frames(std::slice::from_ref(request)),
        ));
    }
    seeds.push(("decode_batch", "small".into(), small.clone()));
    seeds.push(("decode_batch", "headers".into(), with_headers.clone()));
    // A consumer group's requests, and an idempotent producer's batch.
    let offsets = [PartitionOffset { partition: 0, offset: 1 }];
    let group = [
        Request::JoinGroup(JoinGroup {
            group: "g",
            topic: "t",
            member_id: "",
            session_timeout_ms: 1000,
        }),
        Request::Heartbeat(Heartbeat { group: "g", member_id: "g-0-1", generation: 1 }),
        Request::CommitOffsets(CommitOffsets {
            group: "g",
            topic: "t",
            member_id: "",
            generation: 0,
            offsets: Entries::from_slice(&offsets),
        }),
        Request::FetchCommitted(GroupTopic { group: "g", topic: "t" }),
        Request::ListGroups,
        Request::DescribeGroup(GroupName { group: "g" }),
        Request::LeaveGroup(LeaveGroup { group: "g", member_id: "g-0-1" }),
    ];
    for (index, request) in group.iter().enumerate() {
        seeds.push((
            "decode_frame",
            format!("group-{index}"),
            frames(std::slice::from_ref(request)),
        ));
    }
    seeds.push(("decode_batch", "idempotent".into(), idempotent_batch(0)));
    seeds.push((
        "decode_frame",
        "init-producer".into(),
        frames(&[Request::InitProducer(ProducerIdentity { producer_id: -1, producer_epoch: 0 })]),
    ));
    for (target, name, bytes) in seeds {
        let dir = root.join(target);
        fs::create_dir_all(&dir).expect("corpus directory");
        fs::write(dir.join(name), bytes).expect("write seed");
    }
}

fn produce(batch: &[u8], acks: Acks) -> Request<'_> {
    Request::Produce(Produce { topic: "t", partition: 0, acks, timeout_ms: 100, batch })
}
