//! Writes the seed corpus of `broker_requests` under `corpus/broker_requests/`: request sequences
//! a client would send (a session over every request, produce then fetch, a consumer group's
//! life, an idempotent producer's retry). Run from this crate: `cargo run --example make_corpus`.

use std::fs;
use std::path::Path;

use ringmq_protocol::access::{
    QuotaEntry, QuotaKind, QuotaTarget, RuleEntry, RuleOperation, RulePattern, RuleResource,
};
use ringmq_protocol::group::{
    CommitOffsets, Entries, GroupName, GroupTopic, Heartbeat, JoinGroup, LeaveGroup,
    PartitionOffset, ProducerIdentity,
};
use ringmq_protocol::message::{CreateTopic, Fetch, Handshake, Produce, TopicName};
use ringmq_protocol::{Acks, BatchBuilder, Header, Record, Request};

const TIMESTAMP: i64 = 1_700_000_000_000;

/// A batch of `values`, each record with `headers`, stamped as `producer` (id, epoch, sequence).
fn batch_of(
    values: &[&[u8]],
    headers: &[Header<'_>],
    producer: Option<(i64, i16, i32)>,
) -> Vec<u8> {
    let mut buffer = vec![0u8; 4096];
    let mut builder = BatchBuilder::new(&mut buffer, TIMESTAMP).expect("buffer");
    if let Some((id, epoch, sequence)) = producer {
        builder = builder.with_producer(id, epoch, sequence);
    }
    for value in values {
        let record = Record { key: None, value, timestamp: TIMESTAMP, headers };
        let _ = builder.push(&record).expect("record fits");
    }
    builder.finish().expect("batch").to_vec()
}

/// Request frames back to back, correlation ids from 1.
fn session(requests: &[Request<'_>]) -> Vec<u8> {
    let mut out = Vec::new();
    for (correlation_id, request) in (1u32..).zip(requests) {
        request.encode_frame(correlation_id, &mut out).expect("encode");
    }
    out
}

fn produce_to_t(batch: &[u8], acks: Acks) -> Request<'_> {
    Request::Produce(Produce { topic: "t", partition: 0, acks, timeout_ms: 100, batch })
}

fn main() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus/broker_requests");
    let plain = batch_of(&[b"hello", b"world"], &[], None);
    let traced = batch_of(&[b"v"], &[Header { name: "trace", value: b"abc" }], None);
    let fetch = Request::Fetch(Fetch {
        topic: "t",
        partition: 0,
        offset: 0,
        max_bytes: 4096,
        max_wait_ms: 0,
        min_bytes: 1,
    });
    let every_request = [
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
        produce_to_t(&plain, Acks::Written),
        fetch.clone(),
    ];
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
    let first = batch_of(&[b"once"], &[], Some((0, 0, 0)));
    let later = batch_of(&[b"once"], &[], Some((0, 0, 5)));
    let admin = [
        Request::ListUsers,
        Request::ListRules,
        Request::AddRule(RuleEntry {
            principal: "fuzz",
            resource: RuleResource::Topic,
            pattern: RulePattern::Prefix,
            name: "t",
            operation: RuleOperation::Produce,
        }),
        Request::ListQuotas,
        Request::SetQuota(QuotaEntry { principal: "fuzz", kind: QuotaKind::Produce, value: 4096 }),
        Request::RemoveQuota(QuotaTarget { principal: "fuzz", kind: QuotaKind::Produce }),
    ];
    let seeds = [
        ("session", session(&every_request)),
        ("admin", session(&admin)),
        ("produce-fetch", session(&[produce_to_t(&traced, Acks::Synced), fetch])),
        ("acks-none", session(&[produce_to_t(&plain, Acks::None), Request::Ping])),
        ("group", session(&group)),
        (
            "idempotent",
            // The second produce is a retry of the first; the third skips ahead (a gap).
            session(&[
                Request::InitProducer(ProducerIdentity { producer_id: -1, producer_epoch: 0 }),
                produce_to_t(&first, Acks::Written),
                produce_to_t(&first, Acks::Written),
                produce_to_t(&later, Acks::Written),
            ]),
        ),
    ];
    fs::create_dir_all(&dir).expect("corpus directory");
    for (name, bytes) in seeds {
        fs::write(dir.join(name), bytes).expect("write seed");
    }
}
