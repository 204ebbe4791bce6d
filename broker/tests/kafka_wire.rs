//! The Kafka listener on the wire: the real `ringmq` binary, spoken to over TCP with requests
//! encoded by the `kafka-protocol` crate (an encoder that is not ringmq's). Every API the broker
//! serves is called at every version it serves; every response must decode completely at that
//! version and encode back to the same bytes (so the hand-encoded fetch response is exactly what
//! the crate would write), and must say what it should. Then the errors: bad requests close their
//! own connection and nothing else, refused batches get the code a client acts on.

#![allow(clippy::unwrap_used, reason = "tests fail on error")]

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use kafka_protocol::messages::create_topics_request::{CreatableTopic, CreatableTopicConfig};
use kafka_protocol::messages::describe_configs_request::DescribeConfigsResource;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{
    ApiKey, ApiVersionsRequest, ApiVersionsResponse, CreateTopicsRequest, DeleteTopicsRequest,
    DescribeConfigsRequest, FetchRequest, FindCoordinatorRequest, InitProducerIdRequest,
    ListOffsetsRequest, MetadataRequest, ProduceRequest, RequestHeader, ResponseHeader,
    SaslAuthenticateRequest, SaslHandshakeRequest, TopicName,
};
use kafka_protocol::protocol::{Decodable, Encodable, HeaderVersion, Request, StrBytes};
use kafka_protocol::records::{
    Compression, Record, RecordBatchDecoder, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
};
use support::Broker;

/// Kafka error codes the tests expect.
const NONE: i16 = 0;
const OFFSET_OUT_OF_RANGE: i16 = 1;
const CORRUPT_MESSAGE: i16 = 2;
const UNKNOWN_TOPIC_OR_PARTITION: i16 = 3;
const MESSAGE_TOO_LARGE: i16 = 10;
const INVALID_REQUIRED_ACKS: i16 = 21;
const UNSUPPORTED_VERSION: i16 = 35;
const INVALID_RECORD: i16 = 87;
const TOPIC_ALREADY_EXISTS: i16 = 36;

/// A Kafka connection that sends one request and reads its response.
struct Wire {
    stream: TcpStream,
    correlation_id: i32,
}

impl Wire {
    fn connect(address: &str) -> Self {
        let stream = TcpStream::connect(address).unwrap();
        stream.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        Self { stream, correlation_id: 0 }
    }

    /// Sends raw bytes (a size prefix is not added).
    fn send_raw(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).unwrap();
    }

    fn send<R: Request>(&mut self, version: i16, body: &R) -> i32 {
        self.correlation_id += 1;
        let header = RequestHeader::default()
            .with_request_api_key(R::KEY)
            .with_request_api_version(version)
            .with_correlation_id(self.correlation_id)
            .with_client_id(Some(StrBytes::from_static_str("kafka-wire-test")));
        let mut frame = BytesMut::new();
        header.encode(&mut frame, R::header_version(version)).unwrap();
        body.encode(&mut frame, version).unwrap_or_else(|error| {
            panic!("encoding {:?} v{version}: {error}", ApiKey::try_from(R::KEY).unwrap())
        });
        let mut out = (frame.len() as u32).to_be_bytes().to_vec();
        out.extend_from_slice(&frame);
        self.stream.write_all(&out).unwrap();
        self.correlation_id
    }

    /// Reads one response frame, or `None` when the broker closed the connection.
    fn receive_frame(&mut self) -> Option<Bytes> {
        let mut size = [0u8; 4];
        if self.stream.read_exact(&mut size).is_err() {
            return None;
        }
        let mut frame = vec![0u8; u32::from_be_bytes(size) as usize];
        self.stream.read_exact(&mut frame).unwrap();
        Some(Bytes::from(frame))
    }

    /// Sends `body` at `version` and returns the response, checked to decode completely and to
    /// encode back to the bytes the broker sent.
    fn call<R: Request>(&mut self, version: i16, body: &R) -> R::Response {
        let correlation_id = self.send(version, body);
        let frame = self.receive_frame().expect("a response");
        decode_response::<R::Response>(frame, version, correlation_id)
    }

    /// Whether the broker closed the connection (reads end) within the read timeout.
    fn closed(&mut self) -> bool {
        let mut byte = [0u8; 1];
        matches!(self.stream.read(&mut byte), Ok(0) | Err(_))
    }
}

fn decode_response<M: Decodable + Encodable + HeaderVersion>(
    frame: Bytes,
    version: i16,
    correlation_id: i32,
) -> M {
    let name = std::any::type_name::<M>().rsplit("::").next().unwrap_or_default();
    let mut body = frame.clone();
    let header = ResponseHeader::decode(&mut body, M::header_version(version)).unwrap();
    assert_eq!(header.correlation_id, correlation_id, "{name} v{version}: correlation id");
    let header_size = frame.len() - body.len();
    let response = M::decode(&mut body, version)
        .unwrap_or_else(|error| panic!("{name} v{version} does not decode: {error:#}"));
    assert_eq!(body.remaining(), 0, "{name} v{version}: bytes after the response");
    let mut again = BytesMut::new();
    response.encode(&mut again, version).unwrap();
    assert!(
        again[..] == frame[header_size..],
        "{name} v{version}: the response is not what the crate encodes for the same values"
    );
    response
}

fn name(text: &str) -> TopicName {
    TopicName(StrBytes::from_string(text.to_owned()))
}

fn text(value: &str) -> StrBytes {
    StrBytes::from_string(value.to_owned())
}

/// A record batch of `values`, encoded by the crate.
fn batch(values: &[&str]) -> Bytes {
    let records: Vec<Record> = values
        .iter()
        .enumerate()
        .map(|(index, value)| Record {
            transactional: false,
            control: false,
            delete_horizon: false,
            partition_leader_epoch: -1,
            producer_id: -1,
            producer_epoch: -1,
            timestamp_type: TimestampType::Creation,
            offset: index as i64,
            // Offset minus sequence constant: the crate puts the records in one batch.
            sequence: index as i32 - 1,
            timestamp: 1_700_000_000_000 + index as i64,
            key: Some(Bytes::from(format!("key-{index}"))),
            value: Some(Bytes::copy_from_slice(value.as_bytes())),
            headers: Default::default(),
        })
        .collect();
    let mut out = BytesMut::new();
    let options = RecordEncodeOptions { version: 2, compression: Compression::None };
    RecordBatchEncoder::encode(&mut out, records.iter(), &options).unwrap();
    out.freeze()
}

fn produce_request(topic: &str, partition: i32, records: Bytes, acks: i16) -> ProduceRequest {
    ProduceRequest::default().with_acks(acks).with_timeout_ms(5000).with_topic_data(vec![
        TopicProduceData::default().with_name(name(topic)).with_partition_data(vec![
            PartitionProduceData::default().with_index(partition).with_records(Some(records)),
        ]),
    ])
}

fn fetch_request(topic: &str, offset: i64, version: i16, max_wait_ms: i32) -> FetchRequest {
    let mut partition = FetchPartition::default()
        .with_partition(0)
        .with_fetch_offset(offset)
        .with_partition_max_bytes(1 << 20);
    if version >= 5 {
        partition = partition.with_log_start_offset(-1);
    }
    FetchRequest::default()
        .with_max_wait_ms(max_wait_ms)
        .with_min_bytes(1)
        .with_max_bytes(4 << 20)
        .with_topics(vec![FetchTopic::default()
            .with_topic(name(topic))
            .with_partitions(vec![partition])])
}

/// Creates `topic` with one partition.
fn create(wire: &mut Wire, topic: &str) {
    let request = CreateTopicsRequest::default().with_timeout_ms(5000).with_topics(vec![
        CreatableTopic::default()
            .with_name(name(topic))
            .with_num_partitions(1)
            .with_replication_factor(-1),
    ]);
    assert_eq!(wire.call(4, &request).topics[0].error_code, NONE, "creating {topic}");
}

/// The value of every record in a record set.
fn values(records: Option<Bytes>) -> Vec<String> {
    let mut records = records.unwrap_or_default();
    let mut values = Vec::new();
    while records.has_remaining() {
        let set = RecordBatchDecoder::decode(&mut records).unwrap();
        for record in set.records {
            values.push(String::from_utf8(record.value.unwrap().to_vec()).unwrap());
        }
    }
    values
}

/// The versions of `api` the broker says it serves.
fn served(versions: &ApiVersionsResponse, api: ApiKey) -> std::ops::RangeInclusive<i16> {
    let entry = versions
        .api_keys
        .iter()
        .find(|entry| entry.api_key == api as i16)
        .unwrap_or_else(|| panic!("{api:?} is not listed by ApiVersions"));
    entry.min_version..=entry.max_version
}

#[test]
fn every_served_version_of_every_api_answers_what_the_crate_decodes() {
    let broker = Broker::start(&[]);
    let mut wire = Wire::connect(&broker.kafka);
    let (host, port) = broker.kafka.rsplit_once(':').unwrap();
    let port: i32 = port.parse().unwrap();

    let versions = wire.call(
        3,
        &ApiVersionsRequest::default()
            .with_client_software_name(text("kafka-wire-test"))
            .with_client_software_version(text("1.0")),
    );
    assert_eq!(versions.error_code, NONE);
    for version in served(&versions, ApiKey::ApiVersions) {
        let mut request = ApiVersionsRequest::default();
        if version >= 3 {
            request = request
                .with_client_software_name(text("kafka-wire-test"))
                .with_client_software_version(text("1.0"));
        }
        let answer = wire.call(version, &request);
        assert_eq!(answer.error_code, NONE, "ApiVersions v{version}");
        assert_eq!(answer.api_keys, versions.api_keys, "ApiVersions v{version}");
    }

    for version in served(&versions, ApiKey::Metadata) {
        let topic = format!("metadata-{version}");
        let mut request = MetadataRequest::default()
            .with_topics(Some(vec![MetadataRequestTopic::default().with_name(Some(name(&topic)))]));
        if version >= 4 {
            request = request.with_allow_auto_topic_creation(true);
        }
        let answer = wire.call(version, &request);
        assert_eq!(answer.brokers.len(), 1, "Metadata v{version}");
        assert_eq!(answer.brokers[0].host.as_str(), host, "Metadata v{version}");
        assert_eq!(answer.brokers[0].port, port, "Metadata v{version}");
        assert_eq!(answer.topics.len(), 1, "Metadata v{version}");
        let described = &answer.topics[0];
        assert_eq!(described.error_code, NONE, "Metadata v{version}: {topic} auto-created");
        assert_eq!(described.name.as_ref().map(|name| name.0.as_str()), Some(topic.as_str()));
        assert!(!described.partitions.is_empty(), "Metadata v{version}");
        assert_eq!(described.partitions[0].leader_id.0, answer.brokers[0].node_id.0);
    }

    for version in served(&versions, ApiKey::CreateTopics) {
        let topic = format!("created-{version}");
        let request = CreateTopicsRequest::default().with_timeout_ms(5000).with_topics(vec![
            CreatableTopic::default()
                .with_name(name(&topic))
                .with_num_partitions(2)
                .with_replication_factor(1)
                .with_configs(vec![CreatableTopicConfig::default()
                    .with_name(text("retention.bytes"))
                    .with_value(Some(text("4194304")))]),
        ]);
        let answer = wire.call(version, &request);
        assert_eq!(answer.topics[0].error_code, NONE, "CreateTopics v{version}");
        let again = wire.call(version, &request);
        assert_eq!(again.topics[0].error_code, TOPIC_ALREADY_EXISTS, "CreateTopics v{version}");
    }

    // One topic takes every produce version, so offsets follow each other.
    let mut produced = Vec::new();
    for version in served(&versions, ApiKey::Produce) {
        let values = [format!("v{version}-a"), format!("v{version}-b")];
        let records = batch(&[&values[0], &values[1]]);
        let answer = wire.call(version, &produce_request("created-2", 0, records, -1));
        let partition = &answer.responses[0].partition_responses[0];
        assert_eq!(
            partition.error_code,
            NONE,
            "Produce v{version}: {:?}\n{}",
            partition.error_message,
            broker.log()
        );
        assert_eq!(partition.base_offset, produced.len() as i64, "Produce v{version}");
        produced.extend(values);
    }

    for version in served(&versions, ApiKey::Fetch) {
        let answer = wire.call(version, &fetch_request("created-2", 0, version, 0));
        let partition = &answer.responses[0].partitions[0];
        assert_eq!(partition.error_code, NONE, "Fetch v{version}");
        assert_eq!(partition.high_watermark, produced.len() as i64, "Fetch v{version}");
        assert_eq!(values(partition.records.clone()), produced, "Fetch v{version}");
        // From the middle of the second batch: that whole batch and the rest.
        let answer = wire.call(version, &fetch_request("created-2", 3, version, 0));
        let fetched = values(answer.responses[0].partitions[0].records.clone());
        assert_eq!(fetched, produced[2..], "Fetch v{version} from offset 3");
        // At the end, with no wait: an empty record set, not an error.
        let end = produced.len() as i64;
        let answer = wire.call(version, &fetch_request("created-2", end, version, 0));
        let partition = &answer.responses[0].partitions[0];
        assert_eq!(partition.error_code, NONE, "Fetch v{version} at the end");
        assert!(values(partition.records.clone()).is_empty(), "Fetch v{version} at the end");
    }

    for version in served(&versions, ApiKey::ListOffsets) {
        let ask = |timestamp| ListOffsetsPartition::default().with_timestamp(timestamp);
        let mut asked = vec![ask(-2), ask(-1), ask(1_700_000_000_001)];
        if version >= 7 {
            asked.push(ask(-3));
        }
        let request = ListOffsetsRequest::default().with_topics(vec![ListOffsetsTopic::default()
            .with_name(name("created-2"))
            .with_partitions(asked)]);
        let answer = wire.call(version, &request);
        let offsets: Vec<i64> =
            answer.topics[0].partitions.iter().map(|partition| partition.offset).collect();
        for partition in &answer.topics[0].partitions {
            assert_eq!(partition.error_code, NONE, "ListOffsets v{version}");
        }
        // Each batch's records are 0 and 1 ms after the base time: the first record at or
        // after base + 1 is the second of the first batch.
        let mut expected = vec![0, produced.len() as i64, 1];
        if version >= 7 {
            // The largest timestamp is base + 1, first reached by offset 1.
            expected.push(1);
        }
        assert_eq!(offsets, expected, "ListOffsets v{version}");
    }

    for version in served(&versions, ApiKey::FindCoordinator) {
        let answer = wire.call(version, &FindCoordinatorRequest::default().with_key(text("g")));
        assert_eq!(answer.error_code, NONE, "FindCoordinator v{version}");
        assert_eq!((answer.host.as_str(), answer.port), (host, port));
    }

    let mut producer_ids = Vec::new();
    for version in served(&versions, ApiKey::InitProducerId) {
        let request = InitProducerIdRequest::default()
            .with_transactional_id(None)
            .with_transaction_timeout_ms(60_000);
        let answer = wire.call(version, &request);
        assert_eq!(answer.error_code, NONE, "InitProducerId v{version}");
        assert!(answer.producer_id.0 >= 0, "InitProducerId v{version}");
        assert!(!producer_ids.contains(&answer.producer_id.0), "producer ids are not reused");
        producer_ids.push(answer.producer_id.0);
    }

    for version in served(&versions, ApiKey::DescribeConfigs) {
        let request = DescribeConfigsRequest::default().with_resources(vec![
            DescribeConfigsResource::default()
                .with_resource_type(2)
                .with_resource_name(text("created-2"))
                .with_configuration_keys(None),
        ]);
        let answer = wire.call(version, &request);
        let result = &answer.results[0];
        assert_eq!(result.error_code, NONE, "DescribeConfigs v{version}");
        let retention = result
            .configs
            .iter()
            .find(|config| config.name.as_str() == "retention.bytes")
            .and_then(|config| config.value.as_ref().map(|value| value.to_string()));
        assert_eq!(retention.as_deref(), Some("4194304"), "DescribeConfigs v{version}");
    }

    for version in served(&versions, ApiKey::DeleteTopics) {
        let topic = format!("doomed-{version}");
        let create = CreateTopicsRequest::default().with_timeout_ms(5000).with_topics(vec![
            CreatableTopic::default()
                .with_name(name(&topic))
                .with_num_partitions(1)
                .with_replication_factor(1),
        ]);
        assert_eq!(wire.call(4, &create).topics[0].error_code, NONE);
        let request = DeleteTopicsRequest::default()
            .with_timeout_ms(5000)
            .with_topic_names(vec![name(&topic), name("never-created")]);
        let answer = wire.call(version, &request);
        let codes: Vec<i16> = answer.responses.iter().map(|result| result.error_code).collect();
        assert_eq!(codes, [NONE, UNKNOWN_TOPIC_OR_PARTITION], "DeleteTopics v{version}");
        let metadata = MetadataRequest::default()
            .with_topics(Some(vec![MetadataRequestTopic::default().with_name(Some(name(&topic)))]))
            .with_allow_auto_topic_creation(false);
        let gone = wire.call(4, &metadata);
        assert_eq!(gone.topics[0].error_code, UNKNOWN_TOPIC_OR_PARTITION, "{topic} is gone");
    }
}

#[test]
fn an_unserved_api_versions_version_is_answered_with_the_versions_served() {
    let broker = Broker::start(&[]);
    let mut wire = Wire::connect(&broker.kafka);
    // KIP-511: a client newer than the broker sends its newest ApiVersions; the answer is a
    // version 0 response saying UNSUPPORTED_VERSION, with the versions the broker serves.
    let mut frame = BytesMut::new();
    RequestHeader::default()
        .with_request_api_key(ApiKey::ApiVersions as i16)
        .with_request_api_version(99)
        .with_correlation_id(7)
        .encode(&mut frame, 1)
        .unwrap();
    let mut out = (frame.len() as u32).to_be_bytes().to_vec();
    out.extend_from_slice(&frame);
    wire.send_raw(&out);
    let answer: ApiVersionsResponse = decode_response(wire.receive_frame().unwrap(), 0, 7);
    assert_eq!(answer.error_code, UNSUPPORTED_VERSION);
    let produce = answer.api_keys.iter().find(|entry| entry.api_key == ApiKey::Produce as i16);
    assert!(produce.is_some(), "the versions served are listed");
    // The connection stays usable.
    let answer = wire.call(0, &ApiVersionsRequest::default());
    assert_eq!(answer.error_code, NONE);
}

#[test]
fn a_malformed_request_closes_its_connection_and_harms_nothing_else() {
    let broker = Broker::start(&["--frame-size-max", "1MiB"]);
    let mut keeper = Wire::connect(&broker.kafka);
    create(&mut keeper, "kept");
    let answer = keeper.call(7, &produce_request("kept", 0, batch(&["safe"]), -1));
    assert_eq!(answer.responses[0].partition_responses[0].error_code, NONE);

    let header = |api: i16, version: i16| {
        let mut frame = BytesMut::new();
        RequestHeader::default()
            .with_request_api_key(api)
            .with_request_api_version(version)
            .with_correlation_id(1)
            .with_client_id(Some(text("bad")))
            .encode(&mut frame, 1)
            .unwrap();
        frame.to_vec()
    };
    let framed = |body: &[u8]| {
        let mut out = (body.len() as u32).to_be_bytes().to_vec();
        out.extend_from_slice(body);
        out
    };
    let mut produce_with_a_huge_array = header(ApiKey::Produce as i16, 7);
    produce_with_a_huge_array.extend_from_slice(&(-1i16).to_be_bytes()); // transactional id
    produce_with_a_huge_array.extend_from_slice(&1i16.to_be_bytes()); // acks
    produce_with_a_huge_array.extend_from_slice(&5000i32.to_be_bytes()); // timeout
    produce_with_a_huge_array.extend_from_slice(&i32::MAX.to_be_bytes()); // 2^31 topics, none sent
    let mut metadata_cut_short = header(ApiKey::Metadata as i16, 1);
    metadata_cut_short.extend_from_slice(&3i32.to_be_bytes()); // three topics, none sent
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("a size over the frame limit", (2u32 << 20).to_be_bytes().to_vec()),
        ("a negative size", (-5i32).to_be_bytes().to_vec()),
        ("an unknown API key", framed(&header(999, 0))),
        ("an API that is not served", framed(&header(ApiKey::AlterConfigs as i16, 1))),
        ("an unserved version", framed(&header(ApiKey::Produce as i16, 1))),
        ("an array longer than its request", framed(&produce_with_a_huge_array)),
        ("a request cut short", framed(&metadata_cut_short)),
        ("a header cut short", framed(&[0, 3, 0, 1, 0])),
    ];
    for (case, bytes) in cases {
        let mut wire = Wire::connect(&broker.kafka);
        wire.send_raw(&bytes);
        assert!(wire.closed(), "{case}: the connection is closed");
        // The other connection and the stored batch are untouched.
        let answer = keeper.call(11, &fetch_request("kept", 0, 11, 0));
        assert_eq!(values(answer.responses[0].partitions[0].records.clone()), ["safe"], "{case}");
    }
    let log = broker.log();
    for reason in ["unknown API key 999", "AlterConfigs is not served", "Produce version 1"] {
        assert!(log.contains(reason), "the log names the reason {reason:?}:\n{log}");
    }
}

#[test]
fn refused_batches_get_the_code_a_kafka_client_acts_on() {
    let broker = Broker::start(&["--batch-size-max", "64KiB"]);
    let mut wire = Wire::connect(&broker.kafka);
    create(&mut wire, "refusals");
    let ok = wire.call(9, &produce_request("refusals", 0, batch(&["first"]), 1));
    assert_eq!(ok.responses[0].partition_responses[0].error_code, NONE);

    let code = |wire: &mut Wire, request: ProduceRequest| {
        let answer = wire.call(9, &request);
        let partition = answer.responses[0].partition_responses[0].clone();
        (partition.error_code, partition.error_message.map(|m| m.to_string()).unwrap_or_default())
    };
    let mut corrupt = batch(&["flipped"]).to_vec();
    let last = corrupt.len() - 1;
    corrupt[last] ^= 0xFF;
    let (error, message) = code(&mut wire, produce_request("refusals", 0, corrupt.into(), 1));
    assert_eq!(error, CORRUPT_MESSAGE, "{message}");
    assert!(message.contains("CRC"), "the message says what was wrong: {message}");

    let large = "x".repeat(100 << 10);
    let (error, message) = code(&mut wire, produce_request("refusals", 0, batch(&[&large]), 1));
    assert_eq!(error, MESSAGE_TOO_LARGE, "{message}");

    let (error, _) = code(&mut wire, produce_request("refusals", 7, batch(&["nowhere"]), 1));
    assert_eq!(error, UNKNOWN_TOPIC_OR_PARTITION);

    let (error, _) = code(&mut wire, produce_request("refusals", 0, batch(&["odd acks"]), 2));
    assert_eq!(error, INVALID_REQUIRED_ACKS);

    // A produce never creates a topic (a client's metadata request does).
    let (error, _) = code(&mut wire, produce_request("not-created", 0, batch(&["lost"]), 1));
    assert_eq!(error, UNKNOWN_TOPIC_OR_PARTITION);

    let two = [batch(&["one"]), batch(&["two"])].concat();
    let (error, message) = code(&mut wire, produce_request("refusals", 0, two.into(), 1));
    assert_eq!(error, INVALID_RECORD, "{message}");
    assert!(message.contains("one record batch per partition"), "{message}");

    let answer = wire.call(11, &fetch_request("refusals", 0, 11, 0));
    assert_eq!(values(answer.responses[0].partitions[0].records.clone()), ["first"]);
    let answer = wire.call(11, &fetch_request("refusals", 5, 11, 0));
    let partition = &answer.responses[0].partitions[0];
    assert_eq!(partition.error_code, OFFSET_OUT_OF_RANGE);
    assert_eq!((partition.log_start_offset, partition.high_watermark), (0, 1));
}

#[test]
fn a_long_poll_is_answered_when_a_batch_arrives() {
    let broker = Broker::start(&[]);
    let mut waiting = Wire::connect(&broker.kafka);
    let mut producer = Wire::connect(&broker.kafka);
    create(&mut producer, "polled");
    let created = producer.call(7, &produce_request("polled", 0, batch(&["before"]), 1));
    assert_eq!(created.responses[0].partition_responses[0].error_code, NONE);
    // A fetch at the end that may wait up to 20 s (the broker caps it at fetch_wait_max).
    let correlation_id = waiting.send(11, &fetch_request("polled", 1, 11, 20_000));
    std::thread::sleep(Duration::from_millis(200));
    let answer = producer.call(7, &produce_request("polled", 0, batch(&["after"]), 1));
    assert_eq!(answer.responses[0].partition_responses[0].error_code, NONE);
    let frame = waiting.receive_frame().unwrap();
    let answer: kafka_protocol::messages::FetchResponse =
        decode_response(frame, 11, correlation_id);
    assert_eq!(values(answer.responses[0].partitions[0].records.clone()), ["after"]);
}

#[test]
fn every_served_version_of_the_group_apis_answers_what_the_crate_decodes() {
    use kafka_protocol::messages::join_group_request::JoinGroupRequestProtocol;
    use kafka_protocol::messages::leave_group_request::MemberIdentity;
    use kafka_protocol::messages::offset_commit_request::{
        OffsetCommitRequestPartition, OffsetCommitRequestTopic,
    };
    use kafka_protocol::messages::offset_fetch_request::OffsetFetchRequestTopic;
    use kafka_protocol::messages::sync_group_request::SyncGroupRequestAssignment;
    use kafka_protocol::messages::{
        DescribeGroupsRequest, GroupId, HeartbeatRequest, JoinGroupRequest, LeaveGroupRequest,
        ListGroupsRequest, OffsetCommitRequest, OffsetFetchRequest, SyncGroupRequest,
    };
    const MEMBER_ID_REQUIRED: i16 = 79;
    const UNKNOWN_MEMBER_ID: i16 = 25;
    const ILLEGAL_GENERATION: i16 = 22;

    let broker = Broker::start(&["--group-initial-rebalance-delay-ms", "0"]);
    let mut wire = Wire::connect(&broker.kafka);
    create(&mut wire, "grouped");
    let produced = wire.call(7, &produce_request("grouped", 0, batch(&["a", "b", "c"]), 1));
    assert_eq!(produced.responses[0].partition_responses[0].error_code, NONE);
    let versions = wire.call(0, &ApiVersionsRequest::default());
    let group_id = |name: &str| GroupId(text(name));

    // A one-member group through its whole life at each JoinGroup version.
    for version in served(&versions, ApiKey::JoinGroup) {
        let group = format!("group-v{version}");
        let instance = (version >= 5).then(|| text(&format!("instance-{version}")));
        let join = |member_id: StrBytes| {
            let mut request = JoinGroupRequest::default()
                .with_group_id(group_id(&group))
                .with_session_timeout_ms(10_000)
                .with_member_id(member_id)
                .with_protocol_type(text("consumer"))
                .with_protocols(vec![JoinGroupRequestProtocol::default()
                    .with_name(text("range"))
                    .with_metadata(Bytes::from_static(b"subscription"))]);
            if version >= 1 {
                request = request.with_rebalance_timeout_ms(10_000);
            }
            if version >= 5 {
                request = request.with_group_instance_id(instance.clone());
            }
            request
        };
        let mut joined = wire.call(version, &join(StrBytes::default()));
        if version >= 4 && instance.is_none() {
            assert_eq!(joined.error_code, MEMBER_ID_REQUIRED, "JoinGroup v{version}");
            assert!(!joined.member_id.is_empty(), "JoinGroup v{version} gives a member id");
            joined = wire.call(version, &join(joined.member_id.clone()));
        }
        assert_eq!(joined.error_code, NONE, "JoinGroup v{version}");
        assert_eq!(joined.leader, joined.member_id, "JoinGroup v{version}: the only member leads");
        assert_eq!(joined.protocol_name.as_ref().map(|name| name.as_str()), Some("range"));
        assert_eq!(joined.members.len(), 1, "JoinGroup v{version}: the leader sees its members");
        assert_eq!(&joined.members[0].metadata[..], b"subscription");
        let (member, generation) = (joined.member_id.clone(), joined.generation_id);

        let step = version.min(3);
        let mut sync = SyncGroupRequest::default()
            .with_group_id(group_id(&group))
            .with_generation_id(generation)
            .with_member_id(member.clone())
            .with_assignments(vec![SyncGroupRequestAssignment::default()
                .with_member_id(member.clone())
                .with_assignment(Bytes::from_static(b"all of it"))]);
        if step >= 3 {
            sync = sync.with_group_instance_id(instance.clone());
        }
        let synced = wire.call(step, &sync);
        assert_eq!(synced.error_code, NONE, "SyncGroup v{step}");
        assert_eq!(&synced.assignment[..], b"all of it", "SyncGroup v{step}");

        let beat = |generation: i32| {
            let request = HeartbeatRequest::default()
                .with_group_id(group_id(&group))
                .with_generation_id(generation)
                .with_member_id(member.clone());
            match step >= 3 {
                true => request.with_group_instance_id(instance.clone()),
                false => request,
            }
        };
        assert_eq!(wire.call(step, &beat(generation)).error_code, NONE, "Heartbeat v{step}");
        let stale = wire.call(step, &beat(generation + 7)).error_code;
        assert_eq!(stale, ILLEGAL_GENERATION, "Heartbeat v{step} of another generation");

        let described = wire.call(
            version.min(5),
            &DescribeGroupsRequest::default().with_groups(vec![group_id(&group)]),
        );
        let description = &described.groups[0];
        assert_eq!(description.group_state.as_str(), "Stable");
        assert_eq!(description.protocol_type.as_str(), "consumer");
        assert_eq!(description.members.len(), 1);
        assert_eq!(&description.members[0].member_assignment[..], b"all of it");

        let leave = if step >= 3 {
            LeaveGroupRequest::default().with_group_id(group_id(&group)).with_members(vec![
                MemberIdentity::default()
                    .with_member_id(member.clone())
                    .with_group_instance_id(instance.clone()),
            ])
        } else {
            LeaveGroupRequest::default()
                .with_group_id(group_id(&group))
                .with_member_id(member.clone())
        };
        let left = wire.call(step, &leave);
        let code = if step >= 3 { left.members[0].error_code } else { left.error_code };
        assert_eq!(code, NONE, "LeaveGroup v{step}");
        let gone = wire.call(step, &beat(generation)).error_code;
        assert_eq!(gone, UNKNOWN_MEMBER_ID, "Heartbeat v{step} after leaving");
    }

    // Commits without members (generation -1), then fetched at every version.
    for version in served(&versions, ApiKey::OffsetCommit) {
        let group = format!("committer-v{version}");
        let mut request = OffsetCommitRequest::default()
            .with_group_id(group_id(&group))
            .with_generation_id_or_member_epoch(-1)
            .with_topics(vec![OffsetCommitRequestTopic::default()
                .with_name(name("grouped"))
                .with_partitions(vec![
                    OffsetCommitRequestPartition::default()
                        .with_partition_index(0)
                        .with_committed_offset(2),
                    OffsetCommitRequestPartition::default()
                        .with_partition_index(9)
                        .with_committed_offset(0),
                ])]);
        if version <= 4 {
            request = request.with_retention_time_ms(-1);
        }
        let answer = wire.call(version, &request);
        let codes: Vec<i16> =
            answer.topics[0].partitions.iter().map(|partition| partition.error_code).collect();
        assert_eq!(codes[0], NONE, "OffsetCommit v{version}");
        assert_eq!(codes[1], UNKNOWN_TOPIC_OR_PARTITION, "OffsetCommit v{version}: partition 9");
    }
    for version in served(&versions, ApiKey::OffsetFetch) {
        let request = OffsetFetchRequest::default()
            .with_group_id(group_id("committer-v2"))
            .with_topics(Some(vec![OffsetFetchRequestTopic::default()
                .with_name(name("grouped"))
                .with_partition_indexes(vec![0])]));
        let answer = wire.call(version, &request);
        let partition = &answer.topics[0].partitions[0];
        assert_eq!(
            (partition.error_code, partition.committed_offset),
            (NONE, 2),
            "OffsetFetch v{version}"
        );
        let never =
            OffsetFetchRequest::default().with_group_id(group_id("never")).with_topics(Some(vec![
                OffsetFetchRequestTopic::default()
                    .with_name(name("grouped"))
                    .with_partition_indexes(vec![0]),
            ]));
        let answer = wire.call(version, &never);
        assert_eq!(answer.topics[0].partitions[0].committed_offset, -1, "OffsetFetch v{version}");
        if version >= 2 {
            // No topics named: every partition the group committed.
            let all = wire.call(
                version,
                &OffsetFetchRequest::default()
                    .with_group_id(group_id("committer-v3"))
                    .with_topics(None),
            );
            assert_eq!(all.topics.len(), 1, "OffsetFetch v{version} of every topic");
            assert_eq!(all.topics[0].partitions[0].committed_offset, 2);
        }
    }
    for version in served(&versions, ApiKey::ListGroups) {
        let answer = wire.call(version, &ListGroupsRequest::default());
        let listed: Vec<&str> =
            answer.groups.iter().map(|group| group.group_id.0.as_str()).collect();
        assert!(listed.contains(&"committer-v8"), "ListGroups v{version}: {listed:?}");
    }
    for version in served(&versions, ApiKey::DescribeGroups) {
        let answer = wire.call(
            version,
            &DescribeGroupsRequest::default()
                .with_groups(vec![group_id("committer-v2"), group_id("no-such-group")]),
        );
        let states: Vec<&str> =
            answer.groups.iter().map(|group| group.group_state.as_str()).collect();
        assert_eq!(states, ["Empty", "Dead"], "DescribeGroups v{version}");
    }
}

/// `--auth required`: a request before the login closes the connection; the handshake offers
/// the SCRAM mechanisms (PLAIN only over TLS) and refuses version 0; garbage in the login, at
/// every SaslAuthenticate version, is answered SASL_AUTHENTICATION_FAILED after the failure
/// delay and closes the connection; a login right after a failure is refused unchecked; a
/// SaslAuthenticate with no handshake is out of turn.
#[test]
fn logins_out_of_order_or_malformed_are_refused_and_close_the_connection() {
    const UNSUPPORTED_SASL_MECHANISM: i16 = 33;
    const ILLEGAL_SASL_STATE: i16 = 34;
    const SASL_AUTHENTICATION_FAILED: i16 = 58;
    let broker = Broker::start_with_env(
        &["--auth", "required"],
        &[("RINGMQ_ROOT_USER", "admin"), ("RINGMQ_ROOT_PASSWORD", "pw")],
    );
    let mut wire = Wire::connect(&broker.kafka);
    let versions = wire.call(3, &ApiVersionsRequest::default());
    assert_eq!(served(&versions, ApiKey::SaslHandshake), 0..=1);
    assert_eq!(served(&versions, ApiKey::SaslAuthenticate), 0..=2);
    wire.send(1, &MetadataRequest::default());
    assert!(wire.closed(), "a request before the login closes the connection");

    let mut wire = Wire::connect(&broker.kafka);
    let handshake = |mechanism: &'static str| {
        SaslHandshakeRequest::default().with_mechanism(StrBytes::from_static_str(mechanism))
    };
    let refused = wire.call(1, &handshake("PLAIN"));
    assert_eq!(refused.error_code, UNSUPPORTED_SASL_MECHANISM, "PLAIN needs TLS");
    let offered: Vec<&str> = refused.mechanisms.iter().map(|name| name.as_str()).collect();
    assert_eq!(offered, ["SCRAM-SHA-512", "SCRAM-SHA-256"]);
    assert_eq!(wire.call(0, &handshake("SCRAM-SHA-256")).error_code, UNSUPPORTED_VERSION);

    for version in 0..=2u32 {
        // After a failure the address is refused logins for 0.5 s, doubling: wait it out.
        if version > 0 {
            std::thread::sleep(Duration::from_millis((500 << (version - 1)) + 100));
        }
        let mut wire = Wire::connect(&broker.kafka);
        assert_eq!(wire.call(1, &handshake("SCRAM-SHA-256")).error_code, NONE);
        let started = std::time::Instant::now();
        let garbage = SaslAuthenticateRequest::default()
            .with_auth_bytes(Bytes::from_static(b"\x00\xffnot scram,,=,"));
        let answer = wire.call(version as i16, &garbage);
        assert_eq!(answer.error_code, SASL_AUTHENTICATION_FAILED, "v{version}");
        let message = answer.error_message.map(|text| text.to_string()).unwrap_or_default();
        assert!(message.contains("malformed authentication message"), "v{version}: {message}");
        assert!(started.elapsed() >= Duration::from_millis(450), "the failure delay");
        assert!(wire.closed(), "v{version}: the connection closes after a failed login");
    }

    // Right after a failure, a login from the same address is refused unchecked.
    let mut wire = Wire::connect(&broker.kafka);
    assert_eq!(wire.call(1, &handshake("SCRAM-SHA-256")).error_code, NONE);
    let answer = wire.call(2, &SaslAuthenticateRequest::default());
    assert_eq!(answer.error_code, SASL_AUTHENTICATION_FAILED);
    let message = answer.error_message.map(|text| text.to_string()).unwrap_or_default();
    assert!(message.contains("too many failed logins from this address"), "{message}");

    let mut wire = Wire::connect(&broker.kafka);
    let early = wire.call(2, &SaslAuthenticateRequest::default());
    assert_eq!(early.error_code, ILLEGAL_SASL_STATE);
    assert!(wire.closed());
    assert!(broker.log().contains("kafka login refused"));
}

/// Logs `wire` in as `user` with SCRAM-SHA-256, through SaslHandshake and SaslAuthenticate.
fn sasl_login(wire: &mut Wire, user: &str, password: &str) {
    let handshake =
        SaslHandshakeRequest::default().with_mechanism(StrBytes::from_static_str("SCRAM-SHA-256"));
    assert_eq!(wire.call(1, &handshake).error_code, NONE);
    let mut login = ringmq_client::Credentials::new(user, password).scram_login();
    let first = SaslAuthenticateRequest::default().with_auth_bytes(login.first().unwrap().into());
    let server_first = wire.call(2, &first);
    assert_eq!(server_first.error_code, NONE, "{:?}", server_first.error_message);
    let last = login.last(&server_first.auth_bytes).unwrap();
    let server_final =
        wire.call(2, &SaslAuthenticateRequest::default().with_auth_bytes(last.into()));
    assert_eq!(server_final.error_code, NONE, "{:?}", server_final.error_message);
    login.verify(&server_final.auth_bytes).unwrap();
}

/// An AlterClientQuotas entry for user `name` (empty: the default user): each key set to its
/// value, or removed (`None`).
fn quota_entry(
    name: &str,
    ops: &[(&str, Option<f64>)],
) -> kafka_protocol::messages::alter_client_quotas_request::EntryData {
    use kafka_protocol::messages::alter_client_quotas_request::{EntityData, EntryData, OpData};
    let entity = EntityData::default()
        .with_entity_type(text("user"))
        .with_entity_name((!name.is_empty()).then(|| text(name)));
    let ops = ops
        .iter()
        .map(|(key, value)| {
            OpData::default()
                .with_key(text(key))
                .with_value(value.unwrap_or(0.0))
                .with_remove(value.is_none())
        })
        .collect();
    EntryData::default().with_entity(vec![entity]).with_ops(ops)
}

/// A user entity of DescribeClientQuotas (`None`: the default user) and its quotas.
type QuotaEntity = (Option<String>, Vec<(String, f64)>);

/// DescribeClientQuotas and AlterClientQuotas, every served version: a superuser gives a user
/// its own quotas and takes them back; the default user shows the broker's settings and cannot
/// be changed here; what ringmq does not keep (client-id entities, unknown keys, fractions) is
/// refused with a message, an entry at a time, and `validate_only` changes nothing. The native
/// port sees the same quotas.
#[test]
fn client_quotas_are_described_and_altered_over_kafka() {
    use kafka_protocol::messages::alter_client_quotas_request::{EntityData, EntryData};
    use kafka_protocol::messages::describe_client_quotas_request::ComponentData;
    use kafka_protocol::messages::{AlterClientQuotasRequest, DescribeClientQuotasRequest};
    const INVALID_REQUEST: i16 = 42;
    let broker = Broker::start_with_env(
        &["--auth", "required", "--produce-quota", "1MiB"],
        &[("RINGMQ_ROOT_USER", "root"), ("RINGMQ_ROOT_PASSWORD", "root password")],
    );
    let mut wire = Wire::connect(&broker.kafka);
    let versions = wire.call(3, &ApiVersionsRequest::default());
    sasl_login(&mut wire, "root", "root password");
    let user = |match_type: i8, name: Option<&str>| {
        ComponentData::default()
            .with_entity_type(text("user"))
            .with_match_type(match_type)
            .with_match(name.map(text))
    };
    for version in served(&versions, ApiKey::AlterClientQuotas) {
        let app = format!("app-{version}");
        let alter = |wire: &mut Wire, entries: Vec<EntryData>, validate_only: bool| {
            let request = AlterClientQuotasRequest::default()
                .with_entries(entries)
                .with_validate_only(validate_only);
            let answer = wire.call(version, &request);
            answer
                .entries
                .iter()
                .map(|entry| {
                    let message = entry.error_message.as_ref().map(ToString::to_string);
                    (entry.error_code, message.unwrap_or_default())
                })
                .collect::<Vec<_>>()
        };
        let set =
            [("producer_byte_rate", Some(2_097_152.0)), ("ringmq_connection_count_max", Some(5.0))];
        let checked = alter(&mut wire, vec![quota_entry(&app, &set)], true);
        assert_eq!(checked, [(NONE, String::new())], "v{version}");
        let describe = |wire: &mut Wire, components: Vec<ComponentData>, strict: bool| {
            let request = DescribeClientQuotasRequest::default()
                .with_components(components)
                .with_strict(strict);
            let answer = wire.call(version, &request);
            assert_eq!(answer.error_code, NONE, "v{version}: {:?}", answer.error_message);
            let mut found: Vec<QuotaEntity> = answer
                .entries
                .unwrap_or_default()
                .into_iter()
                .map(|entry| {
                    assert_eq!(entry.entity.len(), 1);
                    assert_eq!(entry.entity[0].entity_type.as_str(), "user");
                    let name = entry.entity[0].entity_name.as_ref().map(ToString::to_string);
                    let values =
                        entry.values.iter().map(|value| (value.key.to_string(), value.value));
                    (name, values.collect())
                })
                .collect();
            found.sort_by(|a, b| a.0.cmp(&b.0));
            found
        };
        assert!(describe(&mut wire, vec![user(0, Some(&app))], false).is_empty(), "validate_only");

        let applied = alter(&mut wire, vec![quota_entry(&app, &set)], false);
        assert_eq!(applied, [(NONE, String::new())], "v{version}");
        let own = (
            Some(app.clone()),
            vec![
                ("producer_byte_rate".to_owned(), 2_097_152.0),
                ("ringmq_connection_count_max".to_owned(), 5.0),
            ],
        );
        let defaults = (None, vec![("producer_byte_rate".to_owned(), 1_048_576.0)]);
        assert_eq!(
            describe(&mut wire, vec![user(0, Some(&app))], false),
            std::slice::from_ref(&own)
        );
        assert_eq!(describe(&mut wire, vec![user(1, None)], true), std::slice::from_ref(&defaults));
        let everything = describe(&mut wire, vec![], false);
        assert!(everything.contains(&own) && everything.contains(&defaults), "{everything:?}");
        let client_id = ComponentData::default()
            .with_entity_type(text("client-id"))
            .with_match_type(2)
            .with_match(None);
        assert!(describe(&mut wire, vec![client_id], false).is_empty(), "no client-id quotas");

        // Each entry alone: the good one applied, the others refused with what is wrong.
        let client_entity = EntryData::default()
            .with_entity(vec![EntityData::default()
                .with_entity_type(text("client-id"))
                .with_entity_name(Some(text("tool")))])
            .with_ops(quota_entry("x", &[("producer_byte_rate", Some(1.0))]).ops);
        let results = alter(
            &mut wire,
            vec![
                quota_entry(&app, &[("producer_byte_rate", None)]),
                quota_entry(&app, &[("request_percentage", Some(50.0))]),
                quota_entry(&app, &[("consumer_byte_rate", Some(1.5))]),
                quota_entry("", &[("producer_byte_rate", Some(1.0))]),
                client_entity,
            ],
            false,
        );
        let codes: Vec<i16> = results.iter().map(|(code, _)| *code).collect();
        assert_eq!(
            codes,
            [NONE, INVALID_REQUEST, INVALID_REQUEST, INVALID_REQUEST, INVALID_REQUEST]
        );
        assert!(results[1].1.contains("\"request_percentage\" is not kept here"), "{results:?}");
        assert!(results[2].1.contains("a whole number"), "{results:?}");
        assert!(results[3].1.contains("change them in its configuration"), "{results:?}");
        assert!(results[4].1.contains("not per client-id"), "{results:?}");
        // Kafka's "no limit" (Long.MAX_VALUE) is ringmq's 0, both ways.
        let unlimited = i64::MAX as f64;
        let results = alter(
            &mut wire,
            vec![quota_entry(&app, &[("consumer_byte_rate", Some(unlimited))])],
            false,
        );
        assert_eq!(results, [(NONE, String::new())]);
        let any = describe(&mut wire, vec![user(2, None)], false);
        assert!(any.iter().all(|(name, _)| name.is_some()), "any named user: {any:?}");
        let found = any.iter().find(|(name, _)| name.as_deref() == Some(app.as_str())).unwrap();
        assert!(found.1.contains(&("consumer_byte_rate".to_owned(), unlimited)), "{found:?}");
        let named_default =
            DescribeClientQuotasRequest::default().with_components(vec![user(1, Some("root"))]);
        assert_eq!(wire.call(version, &named_default).error_code, INVALID_REQUEST);
        let back = quota_entry(&app, &[("consumer_byte_rate", None)]);
        assert_eq!(alter(&mut wire, vec![back], false), [(NONE, String::new())]);
        let left = describe(&mut wire, vec![user(0, Some(&app))], false);
        assert_eq!(
            left,
            [(Some(app.clone()), vec![("ringmq_connection_count_max".to_owned(), 5.0)])]
        );
    }

    // The native port sees the same quotas; an administrator that is no superuser may change
    // others' quotas, not a superuser's, whether it only validates or not.
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let quotas = runtime.block_on(async {
        let login = ringmq_client::Credentials::new("root", "root password");
        let options = ringmq_client::ConnectOptions::default().credentials(login);
        let mut root = ringmq_client::Client::connect_with(&broker.address, options).await.unwrap();
        root.add_user("ops", "ops password").await.unwrap();
        let alter = ringmq_client::access::RuleOperation::Alter;
        root.add_rule(&ringmq_client::Rule::cluster("ops", alter)).await.unwrap();
        root.list_quotas().await.unwrap()
    });
    let mut ops = Wire::connect(&broker.kafka);
    sasl_login(&mut ops, "ops", "ops password");
    for validate_only in [true, false] {
        let request = AlterClientQuotasRequest::default()
            .with_entries(vec![
                quota_entry("root", &[("producer_byte_rate", Some(1.0))]),
                quota_entry("worker", &[("producer_byte_rate", Some(1.0))]),
            ])
            .with_validate_only(validate_only);
        let answer = ops.call(1, &request);
        let codes: Vec<i16> = answer.entries.iter().map(|entry| entry.error_code).collect();
        assert_eq!(codes, [31, NONE], "validate_only {validate_only}: {answer:?}");
    }
    let principals: Vec<&str> = quotas.own.iter().map(|quota| quota.principal.as_str()).collect();
    assert_eq!(principals, ["app-0", "app-1"]);
    let after = runtime.block_on(async {
        let login = ringmq_client::Credentials::new("root", "root password");
        let options = ringmq_client::ConnectOptions::default().credentials(login);
        let mut root = ringmq_client::Client::connect_with(&broker.address, options).await.unwrap();
        root.list_quotas().await.unwrap()
    });
    let principals: Vec<&str> = after.own.iter().map(|quota| quota.principal.as_str()).collect();
    assert_eq!(principals, ["app-0", "app-1", "worker"], "root's quotas are unchanged");
}

/// The Kafka port's half of "every request of every kind tried by a principal without rules is
/// refused and changes nothing": `mallory` logs in (SCRAM-SHA-256 through SaslAuthenticate) and
/// calls every API the broker advertises in ApiVersions, at its highest version; each is
/// refused with TOPIC_/GROUP_/CLUSTER_AUTHORIZATION_FAILED or lists nothing, and afterwards the
/// topics, their offsets, the groups, the users, the rules and the quotas are as they were. The loop runs over what
/// ApiVersions advertises and the match's wildcard fails the test, so a newly served API cannot
/// go without its expectation here.
#[test]
fn every_served_api_is_refused_to_a_principal_without_rules_and_changes_nothing() {
    use kafka_protocol::messages::create_acls_request::AclCreation;
    use kafka_protocol::messages::delete_acls_request::DeleteAclsFilter;
    use kafka_protocol::messages::join_group_request::JoinGroupRequestProtocol;
    use kafka_protocol::messages::leave_group_request::MemberIdentity;
    use kafka_protocol::messages::offset_commit_request::{
        OffsetCommitRequestPartition, OffsetCommitRequestTopic,
    };
    use kafka_protocol::messages::offset_fetch_request::OffsetFetchRequestTopic;
    use kafka_protocol::messages::{
        AlterClientQuotasRequest, CreateAclsRequest, DeleteAclsRequest, DescribeAclsRequest,
        DescribeClientQuotasRequest, DescribeGroupsRequest, GroupId, HeartbeatRequest,
        JoinGroupRequest, LeaveGroupRequest, ListGroupsRequest, OffsetCommitRequest,
        OffsetFetchRequest, SyncGroupRequest,
    };
    const TOPIC_DENIED: i16 = 29;
    const GROUP_DENIED: i16 = 30;
    const CLUSTER_DENIED: i16 = 31;
    let broker = Broker::start_with_env(
        &["--auth", "required"],
        &[("RINGMQ_ROOT_USER", "root"), ("RINGMQ_ROOT_PASSWORD", "root password")],
    );
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let root_login = ringmq_client::Credentials::new("root", "root password");
    let options = ringmq_client::ConnectOptions::default().credentials(root_login);
    let mut root =
        runtime.block_on(ringmq_client::Client::connect_with(&broker.address, options)).unwrap();
    let state = |root: &mut ringmq_client::Client| {
        runtime.block_on(async {
            let mut state = Vec::new();
            for topic in root.list_topics().await.unwrap() {
                let info = root.describe_topic(&topic.name).await.unwrap();
                state.push(format!("topic {} {:?}", topic.name, info.partitions));
            }
            state.push(format!("groups {:?}", root.list_groups().await.unwrap()));
            state.push(format!("rules {:?}", root.list_rules().await.unwrap()));
            state.push(format!("users {:?}", root.list_users().await.unwrap()));
            state.push(format!("quotas {:?}", root.list_quotas().await.unwrap()));
            state
        })
    };
    runtime.block_on(async {
        let config = ringmq_client::TopicConfig::default().partitions(1).capacity(1 << 20);
        root.create_topic("guarded", config).await.unwrap();
        let producer = root.producer().build().await.unwrap();
        let record = ringmq_client::ProducerRecord::new("guarded", b"kept").partition(0);
        producer.send(record).await.unwrap().await.unwrap();
        root.add_user("mallory", "mallory password").await.unwrap();
    });
    let before = state(&mut root);

    // Log in as mallory through Kafka's SASL APIs.
    let mut wire = Wire::connect(&broker.kafka);
    let versions = wire.call(3, &ApiVersionsRequest::default());
    sasl_login(&mut wire, "mallory", "mallory password");

    let group = || GroupId(StrBytes::from_static_str("readers"));
    let mut tried = Vec::new();
    for api in &versions.api_keys {
        let key = ApiKey::try_from(api.api_key).unwrap();
        let version = api.max_version;
        let codes: Vec<i16> = match key {
            ApiKey::ApiVersions => {
                vec![wire.call(version, &ApiVersionsRequest::default()).error_code]
            }
            // The login above took them; a second login is refused (and closes the connection)
            // in `logins_out_of_order_or_malformed_are_refused_and_close_the_connection`.
            ApiKey::SaslHandshake | ApiKey::SaslAuthenticate => continue,
            ApiKey::Metadata => {
                let all = wire.call(version, &MetadataRequest::default());
                assert!(all.topics.is_empty(), "Metadata lists {:?}", all.topics);
                let named = MetadataRequest::default().with_topics(Some(vec![
                    MetadataRequestTopic::default().with_name(Some(name("guarded"))),
                ]));
                vec![wire.call(version, &named).topics[0].error_code]
            }
            ApiKey::Produce => {
                let request = produce_request("guarded", 0, batch(&["intruder"]), -1);
                let answer = wire.call(version, &request);
                vec![answer.responses[0].partition_responses[0].error_code]
            }
            ApiKey::Fetch => {
                let answer = wire.call(version, &fetch_request("guarded", 0, version, 0));
                let partition = &answer.responses[0].partitions[0];
                assert!(partition.records.as_ref().is_none_or(Bytes::is_empty), "Fetch: records");
                vec![partition.error_code]
            }
            ApiKey::ListOffsets => {
                let request = ListOffsetsRequest::default()
                    .with_replica_id((-1).into())
                    .with_topics(vec![ListOffsetsTopic::default()
                        .with_name(name("guarded"))
                        .with_partitions(vec![ListOffsetsPartition::default()
                            .with_partition_index(0)
                            .with_timestamp(-1)])]);
                vec![wire.call(version, &request).topics[0].partitions[0].error_code]
            }
            ApiKey::FindCoordinator => {
                let request = FindCoordinatorRequest::default().with_key(text("readers"));
                vec![wire.call(version, &request).error_code]
            }
            ApiKey::CreateTopics => {
                let request =
                    CreateTopicsRequest::default().with_timeout_ms(5000).with_topics(vec![
                        CreatableTopic::default()
                            .with_name(name("mallorys"))
                            .with_num_partitions(1)
                            .with_replication_factor(1),
                    ]);
                vec![wire.call(version, &request).topics[0].error_code]
            }
            ApiKey::DeleteTopics => {
                let request = DeleteTopicsRequest::default()
                    .with_topic_names(vec![name("guarded")])
                    .with_timeout_ms(5000);
                vec![wire.call(version, &request).responses[0].error_code]
            }
            ApiKey::InitProducerId => {
                let request = InitProducerIdRequest::default()
                    .with_transactional_id(None)
                    .with_transaction_timeout_ms(60_000)
                    .with_producer_id((-1).into())
                    .with_producer_epoch(-1);
                vec![wire.call(version, &request).error_code]
            }
            ApiKey::DescribeConfigs => {
                let resource = |kind: i8, name: &'static str| {
                    DescribeConfigsResource::default()
                        .with_resource_type(kind)
                        .with_resource_name(StrBytes::from_static_str(name))
                };
                let request = DescribeConfigsRequest::default()
                    .with_resources(vec![resource(2, "guarded"), resource(4, "0")]);
                let answer = wire.call(version, &request);
                assert_eq!(answer.results[1].error_code, CLUSTER_DENIED, "DescribeConfigs broker");
                vec![answer.results[0].error_code]
            }
            ApiKey::JoinGroup => {
                let request = JoinGroupRequest::default()
                    .with_group_id(group())
                    .with_session_timeout_ms(10_000)
                    .with_rebalance_timeout_ms(10_000)
                    .with_protocol_type(text("consumer"))
                    .with_protocols(vec![
                        JoinGroupRequestProtocol::default().with_name(text("range"))
                    ]);
                vec![wire.call(version, &request).error_code]
            }
            ApiKey::SyncGroup => {
                let request = SyncGroupRequest::default()
                    .with_group_id(group())
                    .with_generation_id(1)
                    .with_member_id(text("m"))
                    .with_protocol_type(Some(text("consumer")))
                    .with_protocol_name(Some(text("range")));
                vec![wire.call(version, &request).error_code]
            }
            ApiKey::Heartbeat => {
                let request = HeartbeatRequest::default()
                    .with_group_id(group())
                    .with_generation_id(1)
                    .with_member_id(text("m"));
                vec![wire.call(version, &request).error_code]
            }
            ApiKey::LeaveGroup => {
                let request = LeaveGroupRequest::default()
                    .with_group_id(group())
                    .with_members(vec![MemberIdentity::default().with_member_id(text("m"))]);
                vec![wire.call(version, &request).error_code]
            }
            ApiKey::OffsetCommit => {
                let request = OffsetCommitRequest::default()
                    .with_group_id(group())
                    .with_generation_id_or_member_epoch(-1)
                    .with_topics(vec![OffsetCommitRequestTopic::default()
                        .with_name(name("guarded"))
                        .with_partitions(vec![OffsetCommitRequestPartition::default()
                            .with_partition_index(0)
                            .with_committed_offset(1)])]);
                vec![wire.call(version, &request).topics[0].partitions[0].error_code]
            }
            ApiKey::OffsetFetch => {
                let request =
                    OffsetFetchRequest::default().with_group_id(group()).with_topics(Some(vec![
                        OffsetFetchRequestTopic::default()
                            .with_name(name("guarded"))
                            .with_partition_indexes(vec![0]),
                    ]));
                vec![wire.call(version, &request).error_code]
            }
            ApiKey::ListGroups => {
                let answer = wire.call(version, &ListGroupsRequest::default());
                assert!(answer.groups.is_empty(), "ListGroups lists {:?}", answer.groups);
                vec![answer.error_code]
            }
            ApiKey::DescribeGroups => {
                let request = DescribeGroupsRequest::default().with_groups(vec![group()]);
                vec![wire.call(version, &request).groups[0].error_code]
            }
            ApiKey::DescribeAcls => {
                let request = DescribeAclsRequest::default()
                    .with_resource_type_filter(1)
                    .with_pattern_type_filter(1)
                    .with_operation(1)
                    .with_permission_type(1);
                vec![wire.call(version, &request).error_code]
            }
            ApiKey::CreateAcls => {
                let request =
                    CreateAclsRequest::default().with_creations(vec![AclCreation::default()
                        .with_resource_type(2)
                        .with_resource_name(text("guarded"))
                        .with_resource_pattern_type(3)
                        .with_principal(text("User:mallory"))
                        .with_host(text("*"))
                        .with_operation(3)
                        .with_permission_type(3)]);
                vec![wire.call(version, &request).results[0].error_code]
            }
            ApiKey::DeleteAcls => {
                let request =
                    DeleteAclsRequest::default().with_filters(vec![DeleteAclsFilter::default()
                        .with_resource_type_filter(1)
                        .with_pattern_type_filter(1)
                        .with_operation(1)
                        .with_permission_type(1)]);
                vec![wire.call(version, &request).filter_results[0].error_code]
            }
            ApiKey::DescribeClientQuotas => {
                vec![wire.call(version, &DescribeClientQuotasRequest::default()).error_code]
            }
            ApiKey::AlterClientQuotas => {
                let request = AlterClientQuotasRequest::default().with_entries(vec![quota_entry(
                    "mallory",
                    &[("producer_byte_rate", Some(1e12))],
                )]);
                vec![wire.call(version, &request).entries[0].error_code]
            }
            other => panic!("{other:?} is served but has no expectation in this test"),
        };
        let expected = match key {
            ApiKey::ApiVersions | ApiKey::ListGroups => NONE,
            ApiKey::FindCoordinator
            | ApiKey::JoinGroup
            | ApiKey::SyncGroup
            | ApiKey::Heartbeat
            | ApiKey::LeaveGroup
            | ApiKey::OffsetCommit
            | ApiKey::OffsetFetch
            | ApiKey::DescribeGroups => GROUP_DENIED,
            ApiKey::InitProducerId
            | ApiKey::DescribeAcls
            | ApiKey::CreateAcls
            | ApiKey::DeleteAcls
            | ApiKey::DescribeClientQuotas
            | ApiKey::AlterClientQuotas => CLUSTER_DENIED,
            _ => TOPIC_DENIED,
        };
        assert_eq!(codes, [expected], "{key:?} v{version}");
        tried.push(key);
    }
    assert!(tried.len() >= 20, "only {tried:?} were advertised");
    assert_eq!(state(&mut root), before, "a refused request changed the broker");
}
