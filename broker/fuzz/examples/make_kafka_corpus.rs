//! Writes the seed corpora of `kafka_decode` (one request frame, no size prefix) and
//! `kafka_requests` (size-prefixed frames, and a client's session) under `corpus/`: a request of
//! every API at every version the listener serves, encoded by `kafka-protocol`. Run from this
//! crate: `cargo run --example make_kafka_corpus`.

use std::fs;
use std::path::Path;

use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::create_topics_request::CreatableTopic;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::join_group_request::JoinGroupRequestProtocol;
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::offset_commit_request::{
    OffsetCommitRequestPartition, OffsetCommitRequestTopic,
};
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::{Encodable, HeaderVersion, StrBytes};
use kafka_protocol::records::{
    Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
};

fn text(value: &str) -> StrBytes {
    StrBytes::from_string(value.to_owned())
}

fn topic() -> TopicName {
    TopicName(text("t"))
}

fn batch() -> Bytes {
    let record = Record {
        transactional: false,
        control: false,
        delete_horizon: false,
        partition_leader_epoch: -1,
        producer_id: -1,
        producer_epoch: -1,
        timestamp_type: TimestampType::Creation,
        offset: 0,
        sequence: -1,
        timestamp: 1_700_000_000_000,
        key: Some(Bytes::from_static(b"k")),
        value: Some(Bytes::from_static(b"value")),
        headers: Default::default(),
    };
    let mut out = BytesMut::new();
    let options = RecordEncodeOptions { version: 2, compression: Compression::None };
    RecordBatchEncoder::encode(&mut out, [record].iter(), &options).expect("batch");
    out.freeze()
}

/// Encodes `rich` at `version`, or the type's default where a field of `rich` does not exist in
/// that version.
fn body<M: Encodable + Default>(rich: M, version: i16) -> Vec<u8> {
    let mut out = BytesMut::new();
    if rich.encode(&mut out, version).is_err() {
        out.clear();
        M::default().encode(&mut out, version).expect("a default request encodes");
    }
    out.to_vec()
}

fn request_body(api: ApiKey, version: i16) -> Vec<u8> {
    match api {
        ApiKey::Produce => body(
            ProduceRequest::default().with_acks(1).with_timeout_ms(100).with_topic_data(vec![
                TopicProduceData::default().with_name(topic()).with_partition_data(vec![
                    PartitionProduceData::default().with_index(0).with_records(Some(batch())),
                ]),
            ]),
            version,
        ),
        ApiKey::Fetch => body(
            FetchRequest::default().with_max_bytes(4096).with_topics(vec![FetchTopic::default()
                .with_topic(topic())
                .with_partitions(vec![FetchPartition::default().with_partition_max_bytes(4096)])]),
            version,
        ),
        ApiKey::ListOffsets => body(
            ListOffsetsRequest::default().with_topics(vec![ListOffsetsTopic::default()
                .with_name(topic())
                .with_partitions(vec![ListOffsetsPartition::default().with_timestamp(-2)])]),
            version,
        ),
        ApiKey::Metadata => body(
            MetadataRequest::default()
                .with_topics(Some(vec![MetadataRequestTopic::default().with_name(Some(topic()))])),
            version,
        ),
        ApiKey::FindCoordinator => {
            body(FindCoordinatorRequest::default().with_key(text("g")), version)
        }
        ApiKey::ApiVersions => body(
            ApiVersionsRequest::default()
                .with_client_software_name(text("fuzz"))
                .with_client_software_version(text("1")),
            version,
        ),
        ApiKey::CreateTopics => body(
            CreateTopicsRequest::default().with_topics(vec![CreatableTopic::default()
                .with_name(TopicName(text("created")))
                .with_num_partitions(1)
                .with_replication_factor(-1)]),
            version,
        ),
        ApiKey::DeleteTopics => body(
            DeleteTopicsRequest::default().with_topic_names(vec![TopicName(text("created"))]),
            version,
        ),
        ApiKey::InitProducerId => {
            body(InitProducerIdRequest::default().with_transactional_id(None), version)
        }
        ApiKey::DescribeConfigs => body(DescribeConfigsRequest::default(), version),
        ApiKey::JoinGroup => body(
            JoinGroupRequest::default()
                .with_group_id(GroupId(text("g")))
                .with_session_timeout_ms(100)
                .with_protocol_type(text("consumer"))
                .with_protocols(vec![JoinGroupRequestProtocol::default()
                    .with_name(text("range"))
                    .with_metadata(Bytes::from_static(b"meta"))]),
            version,
        ),
        ApiKey::SyncGroup => {
            body(SyncGroupRequest::default().with_group_id(GroupId(text("g"))), version)
        }
        ApiKey::Heartbeat => {
            body(HeartbeatRequest::default().with_group_id(GroupId(text("g"))), version)
        }
        ApiKey::LeaveGroup => {
            body(LeaveGroupRequest::default().with_group_id(GroupId(text("g"))), version)
        }
        ApiKey::OffsetCommit => body(
            OffsetCommitRequest::default()
                .with_group_id(GroupId(text("g")))
                .with_generation_id_or_member_epoch(-1)
                .with_topics(vec![OffsetCommitRequestTopic::default()
                    .with_name(topic())
                    .with_partitions(vec![OffsetCommitRequestPartition::default()])]),
            version,
        ),
        ApiKey::OffsetFetch => {
            body(OffsetFetchRequest::default().with_group_id(GroupId(text("g"))), version)
        }
        ApiKey::ListGroups => body(ListGroupsRequest::default(), version),
        ApiKey::DescribeGroups => {
            body(DescribeGroupsRequest::default().with_groups(vec![GroupId(text("g"))]), version)
        }
        ApiKey::SaslHandshake => {
            body(SaslHandshakeRequest::default().with_mechanism(text("SCRAM-SHA-256")), version)
        }
        ApiKey::SaslAuthenticate => body(
            SaslAuthenticateRequest::default()
                .with_auth_bytes(Bytes::from_static(b"n,,n=fuzz,r=0123456789abcdef")),
            version,
        ),
        ApiKey::DescribeAcls => body(
            DescribeAclsRequest::default()
                .with_resource_type_filter(2)
                .with_resource_name_filter(Some(text("t")))
                .with_pattern_type_filter(1)
                .with_principal_filter(Some(text("User:fuzz")))
                .with_operation(1)
                .with_permission_type(1),
            version,
        ),
        ApiKey::CreateAcls => body(
            CreateAclsRequest::default().with_creations(vec![
                create_acls_request::AclCreation::default()
                    .with_resource_type(2)
                    .with_resource_name(text("t"))
                    .with_resource_pattern_type(4)
                    .with_principal(text("User:fuzz"))
                    .with_host(text("*"))
                    .with_operation(4)
                    .with_permission_type(3),
            ]),
            version,
        ),
        ApiKey::DeleteAcls => body(
            DeleteAclsRequest::default().with_filters(vec![
                delete_acls_request::DeleteAclsFilter::default()
                    .with_resource_type_filter(1)
                    .with_pattern_type_filter(1)
                    .with_operation(1)
                    .with_permission_type(1),
            ]),
            version,
        ),
        ApiKey::DescribeClientQuotas => body(
            DescribeClientQuotasRequest::default().with_components(vec![
                describe_client_quotas_request::ComponentData::default()
                    .with_entity_type(text("user"))
                    .with_match_type(0)
                    .with_match(Some(text("fuzz"))),
            ]),
            version,
        ),
        ApiKey::AlterClientQuotas => body(
            AlterClientQuotasRequest::default().with_entries(vec![
                alter_client_quotas_request::EntryData::default()
                    .with_entity(vec![alter_client_quotas_request::EntityData::default()
                        .with_entity_type(text("user"))
                        .with_entity_name(Some(text("fuzz")))])
                    .with_ops(vec![alter_client_quotas_request::OpData::default()
                        .with_key(text("producer_byte_rate"))
                        .with_value(1_048_576.0)]),
            ]),
            version,
        ),
        other => panic!("{other:?} is served but has no seed here"),
    }
}

/// A request frame without its size prefix.
fn frame(api: ApiKey, version: i16, correlation_id: i32) -> Vec<u8> {
    let header = RequestHeader::default()
        .with_request_api_key(api as i16)
        .with_request_api_version(version)
        .with_correlation_id(correlation_id)
        .with_client_id(Some(text("fuzz")));
    let mut out = BytesMut::new();
    let header_version = match api {
        ApiKey::ApiVersions => ApiVersionsRequest::header_version(version),
        _ => api.request_header_version(version),
    };
    header.encode(&mut out, header_version).expect("header");
    let mut frame = out.to_vec();
    frame.extend(request_body(api, version));
    frame
}

fn prefixed(frame: &[u8]) -> Vec<u8> {
    let mut out = u32::try_from(frame.len()).expect("small").to_be_bytes().to_vec();
    out.extend_from_slice(frame);
    out
}

fn main() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus");
    let (decode, requests) = (root.join("kafka_decode"), root.join("kafka_requests"));
    fs::create_dir_all(&decode).expect("corpus directory");
    fs::create_dir_all(&requests).expect("corpus directory");
    let mut session = Vec::new();
    for (key, min, max) in ringmq_broker::kafka_served_for_fuzzing() {
        let api = ApiKey::try_from(key).expect("a known API");
        for version in min..=max {
            let frame = frame(api, version, 1);
            let name = format!("{api:?}-v{version}");
            if let Err(error) = ringmq_broker::parse_kafka_request_for_fuzzing(&frame) {
                panic!("the seed {name} does not parse: {error}");
            }
            fs::write(decode.join(&name), &frame).expect("write");
            fs::write(requests.join(&name), prefixed(&frame)).expect("write");
            if version == max {
                session.extend(prefixed(&frame));
            }
        }
    }
    // Every API once at its newest version, in the order a client would send them.
    fs::write(requests.join("session"), session).expect("write");
    println!("wrote {} and {}", decode.display(), requests.display());
}
