//! The Kafka APIs other than fetch and the consumer groups: versions, metadata, produce, offsets
//! by position and time, the coordinator, producer ids, topic administration and configs. Each
//! decodes nothing itself (the crate did), calls the core, and encodes with the crate.

use std::time::Duration;

use bytes::BytesMut;
use kafka_protocol::error::ResponseError as Kafka;
use kafka_protocol::messages::api_versions_response::ApiVersion;
use kafka_protocol::messages::create_topics_response::CreatableTopicResult;
use kafka_protocol::messages::delete_topics_response::DeletableTopicResult;
use kafka_protocol::messages::describe_configs_response::{
    DescribeConfigsResourceResult, DescribeConfigsResult,
};
use kafka_protocol::messages::find_coordinator_response;
use kafka_protocol::messages::list_offsets_response::{
    ListOffsetsPartitionResponse, ListOffsetsTopicResponse,
};
use kafka_protocol::messages::metadata_response::{
    MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
};
use kafka_protocol::messages::{
    ApiVersionsResponse, BrokerId, CreateTopicsRequest, CreateTopicsResponse, DeleteTopicsRequest,
    DeleteTopicsResponse, DescribeConfigsRequest, DescribeConfigsResponse, FindCoordinatorRequest,
    FindCoordinatorResponse, InitProducerIdRequest, InitProducerIdResponse, ListOffsetsRequest,
    ListOffsetsResponse, MetadataRequest, MetadataResponse, ProduceRequest, ProducerId, TopicName,
};
use kafka_protocol::protocol::StrBytes;
use ringmq_protocol::Acks;
use tokio::time::Instant;

use super::wire::Out;
use super::{codes, encoded, Answer, KafkaContext, Request, NODE_ID, SERVED};
use crate::auth::permissions::{Operation, ResourceKind};
use crate::core::{Caller, PartitionHandle, SyncState, TopicHandle};
use crate::topics::TopicError;

/// `ListOffsets` timestamps with a meaning of their own.
const LATEST: i64 = -1;
const EARLIEST: i64 = -2;
const MAX_TIMESTAMP: i64 = -3;

/// Kafka's "not requested" value of the authorized-operations bit fields.
const OPERATIONS_UNKNOWN: i32 = i32::MIN;

/// Kafka's `DescribeConfigs` resource types.
const RESOURCE_TOPIC: i8 = 2;
const RESOURCE_BROKER: i8 = 4;

fn text(value: &str) -> StrBytes {
    StrBytes::from_string(value.to_owned())
}

fn topic_name(value: &str) -> TopicName {
    TopicName(text(value))
}

/// The `ApiVersions` answer, at version 0 with `error_code` (KIP-511).
pub(super) fn api_versions(error_code: i16) -> Result<BytesMut, String> {
    let response =
        ApiVersionsResponse::default().with_error_code(error_code).with_api_keys(served());
    encoded(&response, 0)
}

/// The `ApiVersions` answer at a served version.
pub(super) fn api_versions_at(version: i16) -> Result<BytesMut, String> {
    encoded(&ApiVersionsResponse::default().with_api_keys(served()), version)
}

fn served() -> Vec<ApiVersion> {
    SERVED
        .iter()
        .map(|&(api, min, max)| {
            ApiVersion::default()
                .with_api_key(api as i16)
                .with_min_version(min)
                .with_max_version(max)
        })
        .collect()
}

/// `Metadata`: the one broker, and the topics asked for (every topic for none, or a null list),
/// each with its partitions led by this broker. A topic that does not exist is created when both
/// the client and the broker allow it.
pub(super) async fn metadata(
    context: &KafkaContext,
    asked: &Request,
    request: &MetadataRequest,
) -> Result<BytesMut, String> {
    let (core, caller, version) = (&context.core, &asked.caller, asked.version);
    let names: Vec<String> = match &request.topics {
        Some(topics) if !topics.is_empty() || version == 0 => topics
            .iter()
            .filter_map(|topic| topic.name.as_ref().map(|name| name.to_string()))
            .collect(),
        _ => core.list_topics(caller).iter().map(|(name, _)| name.to_string()).collect(),
    };
    // Version 0 has no flag and lets the broker decide.
    let may_create =
        context.settings.auto_create_topics && (request.allow_auto_topic_creation || version < 4);
    let mut topics = Vec::with_capacity(names.len());
    for name in names {
        let mut found = core.topic(caller, &name);
        if matches!(found, Err(TopicError::Unknown(_))) && may_create {
            match core.create_topic(caller, &name, 0, 0, 0).await {
                Ok(()) | Err(TopicError::Exists(_)) => {
                    tracing::info!(topic = %name, "topic created for a kafka client's metadata request");
                    found = core.topic(caller, &name);
                }
                Err(error) => found = Err(error),
            }
        }
        topics.push(match found {
            Ok(topic) => topic_metadata(context, &topic),
            Err(error) => MetadataResponseTopic::default()
                .with_name(Some(topic_name(&name)))
                .with_error_code(codes::topic(&error))
                .with_topic_authorized_operations(OPERATIONS_UNKNOWN),
        });
    }
    let broker = MetadataResponseBroker::default()
        .with_node_id(BrokerId(NODE_ID))
        .with_host(text(&context.settings.advertised_host))
        .with_port(context.settings.advertised_port);
    let response = MetadataResponse::default()
        .with_brokers(vec![broker])
        .with_cluster_id(Some(text("ringmq")))
        .with_controller_id(BrokerId(NODE_ID))
        .with_topics(topics)
        .with_cluster_authorized_operations(OPERATIONS_UNKNOWN);
    encoded(&response, version)
}

fn topic_metadata(context: &KafkaContext, topic: &TopicHandle) -> MetadataResponseTopic {
    let partitions = context
        .core
        .partitions(topic)
        .iter()
        .map(|partition| {
            MetadataResponsePartition::default()
                .with_partition_index(partition_number(partition.index()))
                .with_leader_id(BrokerId(NODE_ID))
                .with_leader_epoch(0)
                .with_replica_nodes(vec![BrokerId(NODE_ID)])
                .with_isr_nodes(vec![BrokerId(NODE_ID)])
        })
        .collect();
    MetadataResponseTopic::default()
        .with_name(Some(topic_name(topic.name())))
        .with_partitions(partitions)
        .with_topic_authorized_operations(OPERATIONS_UNKNOWN)
}

fn partition_number(index: u32) -> i32 {
    i32::try_from(index).unwrap_or(i32::MAX)
}

fn offset_number(offset: u64) -> i64 {
    i64::try_from(offset).unwrap_or(i64::MAX)
}

/// The partition `index` of topic `name`, or the Kafka error to answer.
pub(super) fn partition_of(
    context: &KafkaContext,
    caller: &Caller,
    name: &str,
    index: i32,
) -> Result<PartitionHandle, i16> {
    let core = &context.core;
    let topic = core.topic(caller, name).map_err(|error| codes::topic(&error))?;
    let index = u32::try_from(index).map_err(|_| Kafka::UnknownTopicOrPartition.code())?;
    core.partition(&topic, index).map_err(|error| codes::produce(&error))
}

/// `Produce`: every partition's batch through the core, with `acks` 0 (no answer), 1 (in the
/// ring: survives a broker crash) or -1 (the strongest the broker offers: synced to disk).
pub(super) async fn produce(
    context: &KafkaContext,
    request: &Request,
    body: ProduceRequest,
) -> Result<Answer, String> {
    let acks = match body.acks {
        0 => Some(Acks::None),
        1 => Some(Acks::Written),
        -1 => Some(Acks::Synced),
        _ => None,
    };
    let timeout =
        u64::try_from(body.timeout_ms).ok().filter(|&ms| ms > 0).map(Duration::from_millis);
    // Encoded here as the partitions are handled (one allocation: the hot path); a test checks
    // it against the crate's encoder at every version.
    let version = request.version;
    let partitions: usize = body.topic_data.iter().map(|topic| topic.partition_data.len()).sum();
    let names: usize = body.topic_data.iter().map(|topic| topic.name.len()).sum();
    let mut out = Out::new(16 + names + 8 * body.topic_data.len() + 48 * partitions, version >= 9);
    out.length(body.topic_data.len());
    for topic in &body.topic_data {
        out.string(&topic.name);
        out.length(topic.partition_data.len());
        for data in &topic.partition_data {
            let outcome = match (acks, &data.records, &body.transactional_id) {
                (None, ..) => Err((Kafka::InvalidRequiredAcks.code(), None)),
                (_, _, Some(_)) => Err((Kafka::TransactionalIdAuthorizationFailed.code(), None)),
                (_, None, _) => Err((Kafka::CorruptMessage.code(), Some("no records".to_owned()))),
                (Some(acks), Some(records), None) => {
                    produce_one(context, request, &topic.name, data.index, records, acks, timeout)
                        .await
                }
            };
            let (code, base_offset, earliest, message) = match outcome {
                Ok((base_offset, earliest)) => (codes::NONE, base_offset, earliest, None),
                Err((code, message)) => {
                    tracing::info!(client = %request.client_id, topic = %topic.name.0, partition = data.index, code, message = message.as_deref().unwrap_or(""), "kafka produce failed");
                    (code, -1, -1, message)
                }
            };
            out.i32(data.index);
            out.i16(code);
            out.i64(base_offset);
            out.i64(-1); // log_append_time_ms: the producer's timestamps are kept
            if version >= 5 {
                out.i64(earliest);
            }
            if version >= 8 {
                out.length(0); // record_errors
                out.nullable_string(message.as_deref());
            }
            out.tags();
        }
        out.tags();
    }
    out.i32(request.throttle.millis()); // throttle_time_ms
    out.tags();
    if acks == Some(Acks::None) {
        return Ok(Answer::Nothing);
    }
    Ok(Answer::Body(out.bytes))
}

/// One partition's batch: its base offset and the partition's earliest offset, or the code and
/// message to answer.
async fn produce_one(
    context: &KafkaContext,
    request: &Request,
    topic: &TopicName,
    index: i32,
    records: &bytes::Bytes,
    acks: Acks,
    timeout: Option<Duration>,
) -> Result<(i64, i64), (i16, Option<String>)> {
    let (core, caller) = (&context.core, &request.caller);
    let started = Instant::now();
    let handle = partition_of(context, caller, topic, index).map_err(|code| (code, None))?;
    // Kafka's rule, which clients follow: one batch per partition in a produce.
    if let Some(length) = records.get(8..12) {
        let first = i32::from_be_bytes([length[0], length[1], length[2], length[3]]);
        let first = usize::try_from(first).unwrap_or(0).saturating_add(12);
        if first < records.len() {
            let message = format!(
                "a produce carries one record batch per partition; this one has {} bytes after \
                 its first batch of {first}",
                records.len() - first
            );
            return Err((Kafka::InvalidRecord.code(), Some(message)));
        }
    }
    let produced = core
        .produce(caller, &handle, records, acks, timeout)
        .await
        .map_err(|error| (codes::produce(&error), Some(error.to_string())))?;
    request.throttle.hold(produced.throttle);
    if let Some(wait) = &produced.sync {
        let state = core.wait_synced(wait, started).await;
        if state != SyncState::Done {
            return Err((codes::sync(&state), Some(format!("{state:?}"))));
        }
    }
    Ok((offset_number(produced.base_offset), offset_number(core.offsets(&handle).earliest)))
}

/// `ListOffsets`: the earliest or next offset, the first offset at or after a time (through the
/// sparse time index), or (version 7) the offset of the largest timestamp.
pub(super) fn list_offsets(
    context: &KafkaContext,
    asked: &Request,
    request: &ListOffsetsRequest,
) -> Result<BytesMut, String> {
    let (core, caller, version) = (&context.core, &asked.caller, asked.version);
    let topics = request
        .topics
        .iter()
        .map(|topic| {
            let partitions = topic
                .partitions
                .iter()
                .map(|asked| {
                    let response = ListOffsetsPartitionResponse::default()
                        .with_partition_index(asked.partition_index)
                        .with_timestamp(-1)
                        .with_offset(-1)
                        // A single replica that never changed: epoch 0 (from version 4 on).
                        .with_leader_epoch(if version >= 4 { 0 } else { -1 });
                    let handle =
                        match partition_of(context, caller, &topic.name, asked.partition_index) {
                            Ok(handle) => handle,
                            Err(code) => {
                                return response.with_error_code(code).with_leader_epoch(-1)
                            }
                        };
                    let offsets = core.offsets(&handle);
                    match asked.timestamp {
                        LATEST => response.with_offset(offset_number(offsets.next)),
                        EARLIEST => response.with_offset(offset_number(offsets.earliest)),
                        MAX_TIMESTAMP => match core.max_timestamp(&handle) {
                            Some(found) => response
                                .with_offset(offset_number(found.offset))
                                .with_timestamp(found.timestamp),
                            None => response,
                        },
                        timestamp if timestamp < 0 => {
                            response.with_error_code(Kafka::InvalidRequest.code())
                        }
                        timestamp => match core.offset_for_timestamp(&handle, timestamp) {
                            Some(found) => response
                                .with_offset(offset_number(found.offset))
                                .with_timestamp(found.timestamp),
                            None => response,
                        },
                    }
                })
                .collect();
            ListOffsetsTopicResponse::default()
                .with_name(topic.name.clone())
                .with_partitions(partitions)
        })
        .collect();
    encoded(&ListOffsetsResponse::default().with_topics(topics), version)
}

/// `FindCoordinator`: this broker coordinates every group (and would every transaction).
///
/// The caller must be allowed to describe the group (versions 4 and later ask for several
/// groups at once; each is answered alone).
pub(super) fn find_coordinator(
    context: &KafkaContext,
    asked: &Request,
    request: &FindCoordinatorRequest,
) -> Result<BytesMut, String> {
    let version = asked.version;
    let check = |key: &str| -> i16 {
        // Key type 1 is a transactional id: no transactions here, refused as Kafka refuses an
        // id the client may not use.
        if request.key_type == 1 {
            return Kafka::TransactionalIdAuthorizationFailed.code();
        }
        let denied =
            context.core.authorize(&asked.caller, ResourceKind::Group, key, Operation::Describe);
        denied.map_or_else(|denied| codes::denied(&denied), |()| codes::NONE)
    };
    let host = text(&context.settings.advertised_host);
    let port = context.settings.advertised_port;
    let mut response = FindCoordinatorResponse::default();
    if version >= 4 {
        let coordinators = request
            .coordinator_keys
            .iter()
            .map(|key| {
                let code = check(key);
                let coordinator = find_coordinator_response::Coordinator::default()
                    .with_key(key.clone())
                    .with_error_code(code);
                if code == codes::NONE {
                    coordinator
                        .with_node_id(BrokerId(NODE_ID))
                        .with_host(host.clone())
                        .with_port(port)
                } else {
                    coordinator.with_node_id(BrokerId(-1)).with_port(-1)
                }
            })
            .collect();
        response = response.with_coordinators(coordinators);
    } else {
        let code = check(&request.key);
        response = response.with_error_code(code);
        response = if code == codes::NONE {
            response.with_node_id(BrokerId(NODE_ID)).with_host(host).with_port(port)
        } else {
            response.with_node_id(BrokerId(-1)).with_port(-1)
        };
    }
    encoded(&response, version)
}

/// `InitProducerId`: a producer id and epoch for an idempotent producer, from the same blocks
/// native producers get theirs from. Transactional ids are refused: the broker has no
/// transactions.
pub(super) async fn init_producer_id(
    context: &KafkaContext,
    asked: &Request,
    request: &InitProducerIdRequest,
) -> Result<BytesMut, String> {
    let (caller, version) = (&asked.caller, asked.version);
    let mut response =
        InitProducerIdResponse::default().with_producer_id(ProducerId(-1)).with_producer_epoch(-1);
    if request.transactional_id.is_some() {
        response = response.with_error_code(Kafka::TransactionalIdAuthorizationFailed.code());
        return encoded(&response, version);
    }
    let core = &context.core;
    let (id, epoch) = (request.producer_id.0, request.producer_epoch);
    // An id the broker does not know (its data was replaced) gets a new one.
    let granted = match core.init_producer(caller, id, epoch).await {
        Err(crate::groups::GroupError::UnknownProducer { .. }) => {
            core.init_producer(caller, -1, -1).await
        }
        other => other,
    };
    response = match granted {
        Ok(grant) => response
            .with_producer_id(ProducerId(grant.producer_id))
            .with_producer_epoch(grant.producer_epoch),
        Err(error) => response.with_error_code(codes::group(&error)),
    };
    encoded(&response, version)
}

/// `CreateTopics`: `num_partitions` -1 takes the broker's default; a replication factor other
/// than -1 or 1 is refused (one node); config `retention.bytes` sets the ring capacity per
/// partition (retention is by size), `cleanup.policy` must be `delete` (no compaction), and other
/// configs are ignored.
pub(super) async fn create_topics(
    context: &KafkaContext,
    asked: &Request,
    request: CreateTopicsRequest,
) -> Result<BytesMut, String> {
    let (core, caller, version) = (&context.core, &asked.caller, asked.version);
    let mut results = Vec::with_capacity(request.topics.len());
    for topic in request.topics {
        let name = topic.name.to_string();
        let mut result = CreatableTopicResult::default()
            .with_name(topic.name.clone())
            .with_num_partitions(topic.num_partitions)
            .with_replication_factor(1);
        let mut capacity = 0u64;
        let mut refused: Option<(i16, String)> = None;
        // Checked first: a caller who may not create the topic learns nothing else about it.
        if let Err(denied) = core.may_create_topic(caller, &name) {
            refused = Some((codes::denied(&denied), denied.to_string()));
        } else if !matches!(topic.replication_factor, -1 | 1) {
            refused = Some((
                Kafka::InvalidReplicationFactor.code(),
                format!("replication factor {} on a single node", topic.replication_factor),
            ));
        }
        let allowed = refused.is_none();
        for config in topic.configs.iter().filter(|_| allowed) {
            let value = config.value.as_ref().map(|value| value.to_string()).unwrap_or_default();
            match config.name.as_str() {
                "retention.bytes" => match value.parse::<u64>() {
                    Ok(bytes) => capacity = bytes,
                    Err(_) => {
                        refused = Some((
                            Kafka::InvalidConfig.code(),
                            format!("retention.bytes {value:?}"),
                        ))
                    }
                },
                "cleanup.policy" if value != "delete" => {
                    refused = Some((
                        Kafka::InvalidConfig.code(),
                        "only cleanup.policy=delete (no compaction)".to_owned(),
                    ))
                }
                other => tracing::debug!(topic = %name, config = other, "topic config ignored"),
            }
        }
        let partitions = u32::try_from(topic.num_partitions).unwrap_or(0);
        if refused.is_none() && !request.validate_only {
            if let Err(error) = core.create_topic(caller, &name, partitions, capacity, 0).await {
                refused = Some((codes::topic(&error), error.to_string()));
            }
        }
        if let Some((code, message)) = refused {
            result = result.with_error_code(code).with_error_message(Some(text(&message)));
        } else if let Ok(handle) = core.topic(caller, &name) {
            result = result.with_num_partitions(
                i32::try_from(handle.settings().partitions).unwrap_or(i32::MAX),
            );
        }
        results.push(result);
    }
    encoded(&CreateTopicsResponse::default().with_topics(results), version)
}

/// `DeleteTopics`, by name.
pub(super) async fn delete_topics(
    context: &KafkaContext,
    asked: &Request,
    request: &DeleteTopicsRequest,
) -> Result<BytesMut, String> {
    let version = asked.version;
    let mut results = Vec::with_capacity(request.topic_names.len());
    for name in &request.topic_names {
        let mut result = DeletableTopicResult::default().with_name(Some(name.clone()));
        if let Err(error) = context.core.delete_topic(&asked.caller, name).await {
            result = result
                .with_error_code(codes::topic(&error))
                .with_error_message(Some(text(&error.to_string())));
        }
        results.push(result);
    }
    encoded(&DeleteTopicsResponse::default().with_responses(results), version)
}

/// `DescribeConfigs`: a topic's settings under Kafka's names (read-only), and the broker's.
pub(super) fn describe_configs(
    context: &KafkaContext,
    asked: &Request,
    request: &DescribeConfigsRequest,
) -> Result<BytesMut, String> {
    let (core, caller, version) = (&context.core, &asked.caller, asked.version);
    let config = |name: &str, value: String| {
        DescribeConfigsResourceResult::default()
            .with_name(text(name))
            .with_value(Some(text(&value)))
            .with_read_only(true)
            .with_config_source(5)
    };
    let results = request
        .resources
        .iter()
        .map(|resource| {
            let result = DescribeConfigsResult::default()
                .with_resource_type(resource.resource_type)
                .with_resource_name(resource.resource_name.clone());
            let configs = match resource.resource_type {
                RESOURCE_TOPIC => match core.topic(caller, &resource.resource_name) {
                    Ok(topic) => {
                        let settings = topic.settings();
                        vec![
                            config("cleanup.policy", "delete".to_owned()),
                            config("retention.bytes", settings.capacity.to_string()),
                            config("retention.ms", "-1".to_owned()),
                            config("segment.bytes", settings.chunk_size.to_string()),
                            config("max.message.bytes", settings.batch_size_max.to_string()),
                        ]
                    }
                    Err(error) => {
                        return result
                            .with_error_code(codes::topic(&error))
                            .with_error_message(Some(text(&error.to_string())))
                    }
                },
                RESOURCE_BROKER if core.authorize_cluster(caller, Operation::Describe).is_err() => {
                    return result
                        .with_error_code(Kafka::ClusterAuthorizationFailed.code())
                        .with_error_message(Some(text(&format!(
                            "principal {:?} is not allowed to describe the cluster",
                            caller.principal()
                        ))))
                }
                RESOURCE_BROKER => vec![
                    config("message.max.bytes", core.settings().batch_size_max.to_string()),
                    config(
                        "auto.create.topics.enable",
                        context.settings.auto_create_topics.to_string(),
                    ),
                ],
                _ => return result.with_error_code(Kafka::InvalidRequest.code()),
            };
            let wanted = resource.configuration_keys.as_ref();
            let configs = configs
                .into_iter()
                .filter(|entry| wanted.is_none_or(|keys| keys.contains(&entry.name)))
                .collect();
            result.with_configs(configs)
        })
        .collect();
    encoded(&DescribeConfigsResponse::default().with_results(results), version)
}
