//! Kafka's consumer-group APIs: `JoinGroup`, `SyncGroup`, `Heartbeat`, `LeaveGroup` (the classic
//! protocol, kept by the core's coordinator), `OffsetCommit` and `OffsetFetch` (the store native
//! groups commit to), `ListGroups` and `DescribeGroups` (native groups included, with protocol
//! type `ringmq`).
//!
//! A join or sync the group completes later is held here until it does (the connection answers
//! nothing else meanwhile, as Kafka's broker does), for at most the rebalance timeout and a
//! margin; a broker shutting down closes the connection instead.

use std::time::Duration;

use bytes::BytesMut;
use kafka_protocol::messages::describe_groups_response::{DescribedGroup, DescribedGroupMember};
use kafka_protocol::messages::join_group_response::JoinGroupResponseMember;
use kafka_protocol::messages::leave_group_response::MemberResponse;
use kafka_protocol::messages::list_groups_response::ListedGroup;
use kafka_protocol::messages::offset_commit_response::{
    OffsetCommitResponsePartition, OffsetCommitResponseTopic,
};
use kafka_protocol::messages::offset_fetch_response::{
    OffsetFetchResponsePartition, OffsetFetchResponseTopic,
};
use kafka_protocol::messages::{
    DescribeGroupsRequest, DescribeGroupsResponse, GroupId, HeartbeatRequest, HeartbeatResponse,
    JoinGroupRequest, JoinGroupResponse, LeaveGroupRequest, LeaveGroupResponse, ListGroupsRequest,
    ListGroupsResponse, OffsetCommitRequest, OffsetCommitResponse, OffsetFetchRequest,
    OffsetFetchResponse, SyncGroupRequest, SyncGroupResponse, TopicName,
};
use kafka_protocol::protocol::StrBytes;
use ringmq_protocol::group::PartitionOffset;
use tokio::sync::watch;

use super::{codes, encoded, KafkaContext, Request};
use crate::auth::permissions::{Operation, ResourceKind};
use crate::groups::{
    GroupError, GroupKind, GroupState, JoinRequest, MemberRef, Reply, SyncRequest,
};

/// Kafka's longest commit metadata (`offset.metadata.max.bytes`).
const COMMIT_METADATA_MAX: usize = 4096;

/// How much longer than the rebalance timeout a held join may wait (the group answers it by the
/// rebalance deadline; this only bounds the wait should it not).
const HOLD_MARGIN: Duration = Duration::from_secs(5);

/// The longest a held sync may wait (the group answers it by its rebalance deadline, which the
/// connection does not know; this only bounds the wait should it not).
const SYNC_HOLD_MAX: Duration = Duration::from_secs(3600);

fn text(value: &str) -> StrBytes {
    StrBytes::from_string(value.to_owned())
}

fn millis(value: i32) -> Duration {
    Duration::from_millis(u64::try_from(value).unwrap_or(0))
}

/// Waits for a held answer; `Err` closes the connection (the broker is stopping).
async fn held<T>(
    reply: Reply<T>,
    limit: Duration,
    stop: &mut watch::Receiver<bool>,
    group: &str,
) -> Result<Result<T, GroupError>, String> {
    let receiver = match reply {
        Reply::Ready(result) => return Ok(result),
        Reply::Waiting(receiver) => receiver,
    };
    let rebalancing = || GroupError::RebalanceInProgress { group: group.to_owned() };
    tokio::select! {
        _ = stop.changed() => Err("broker shutting down".to_owned()),
        answer = tokio::time::timeout(limit, receiver) => Ok(match answer {
            Ok(Ok(result)) => result,
            // The group moved on without answering this request: the member joins again.
            Ok(Err(_)) | Err(_) => Err(rebalancing()),
        }),
    }
}

fn log_refusal(request: &Request, group: &str, error: &GroupError) {
    match error {
        GroupError::MemberIdRequired { .. } | GroupError::RebalanceInProgress { .. } => {
            tracing::debug!(client = %request.client_id, group, %error, "kafka group request answered with an error");
        }
        _ => {
            tracing::info!(client = %request.client_id, group, %error, "kafka group request refused");
        }
    }
}

/// `JoinGroup` (versions 0 to 5).
pub(super) async fn join_group(
    context: &KafkaContext,
    request: &Request,
    body: JoinGroupRequest,
    stop: &mut watch::Receiver<bool>,
) -> Result<BytesMut, String> {
    let version = request.version;
    let group = body.group_id.to_string();
    let session_timeout = millis(body.session_timeout_ms);
    // Version 0 has no rebalance timeout: the session timeout serves.
    let rebalance_timeout = if version >= 1 && body.rebalance_timeout_ms > 0 {
        millis(body.rebalance_timeout_ms)
    } else {
        session_timeout
    };
    let join = JoinRequest {
        group: group.clone(),
        member_id: body.member_id.to_string(),
        instance_id: body.group_instance_id.as_ref().map(ToString::to_string),
        client_id: request.client_id.to_string(),
        client_host: request.client_host(),
        session_timeout,
        rebalance_timeout,
        protocol_type: body.protocol_type.to_string(),
        protocols: body
            .protocols
            .iter()
            .map(|protocol| (protocol.name.to_string(), protocol.metadata.clone()))
            .collect(),
        require_known_member_id: version >= 4,
    };
    let reply = context.core.join_kafka_group(&request.caller, join).await;
    let outcome = held(reply, rebalance_timeout + HOLD_MARGIN, stop, &group).await?;
    let response = match outcome {
        Ok(joined) => JoinGroupResponse::default()
            .with_generation_id(joined.generation)
            .with_protocol_name(Some(text(&joined.protocol)))
            .with_leader(text(&joined.leader))
            .with_member_id(text(&joined.member_id))
            .with_members(
                joined
                    .members
                    .into_iter()
                    .map(|member| {
                        let described = JoinGroupResponseMember::default()
                            .with_member_id(text(&member.member_id))
                            .with_metadata(member.metadata);
                        match version >= 5 {
                            true => described
                                .with_group_instance_id(member.instance_id.map(|id| text(&id))),
                            false => described,
                        }
                    })
                    .collect(),
            ),
        Err(error) => {
            log_refusal(request, &group, &error);
            let member_id = match &error {
                GroupError::MemberIdRequired { member, .. } => text(member),
                _ => body.member_id.clone(),
            };
            JoinGroupResponse::default()
                .with_error_code(codes::group(&error))
                .with_member_id(member_id)
        }
    };
    encoded(&response, version)
}

/// `SyncGroup` (versions 0 to 3).
pub(super) async fn sync_group(
    context: &KafkaContext,
    request: &Request,
    body: SyncGroupRequest,
    stop: &mut watch::Receiver<bool>,
) -> Result<BytesMut, String> {
    let group = body.group_id.to_string();
    let sync = SyncRequest {
        group: group.clone(),
        generation: body.generation_id,
        member_id: body.member_id.to_string(),
        instance_id: body.group_instance_id.as_ref().map(ToString::to_string),
        assignments: body
            .assignments
            .into_iter()
            .map(|assignment| (assignment.member_id.to_string(), assignment.assignment))
            .collect(),
    };
    let reply = context.core.sync_kafka_group(&request.caller, sync).await;
    let response = match held(reply, SYNC_HOLD_MAX, stop, &group).await? {
        Ok(assignment) => SyncGroupResponse::default().with_assignment(assignment),
        Err(error) => {
            log_refusal(request, &group, &error);
            SyncGroupResponse::default().with_error_code(codes::group(&error))
        }
    };
    encoded(&response, request.version)
}

/// `Heartbeat` (versions 0 to 3).
pub(super) async fn heartbeat(
    context: &KafkaContext,
    request: &Request,
    body: &HeartbeatRequest,
) -> Result<BytesMut, String> {
    let member = MemberRef {
        member_id: body.member_id.to_string(),
        instance_id: body.group_instance_id.as_ref().map(ToString::to_string),
    };
    let (group, generation) = (&body.group_id, body.generation_id);
    let outcome =
        context.core.heartbeat_kafka_group(&request.caller, group, generation, &member).await;
    let code = match outcome {
        Ok(()) => codes::NONE,
        Err(error) => {
            log_refusal(request, &body.group_id, &error);
            codes::group(&error)
        }
    };
    encoded(&HeartbeatResponse::default().with_error_code(code), request.version)
}

/// `LeaveGroup` (versions 0 to 3: one member, or from version 3 a list).
pub(super) async fn leave_group(
    context: &KafkaContext,
    request: &Request,
    body: &LeaveGroupRequest,
) -> Result<BytesMut, String> {
    let version = request.version;
    let members: Vec<MemberRef> = if version >= 3 {
        body.members
            .iter()
            .map(|member| MemberRef {
                member_id: member.member_id.to_string(),
                instance_id: member.group_instance_id.as_ref().map(ToString::to_string),
            })
            .collect()
    } else {
        vec![MemberRef { member_id: body.member_id.to_string(), instance_id: None }]
    };
    let outcomes =
        match context.core.leave_kafka_group(&request.caller, &body.group_id, &members).await {
            Ok(outcomes) => outcomes,
            Err(denied) => {
                let error = GroupError::from(denied);
                log_refusal(request, &body.group_id, &error);
                let response = LeaveGroupResponse::default().with_error_code(codes::group(&error));
                return encoded(&response, version);
            }
        };
    let code = |outcome: &Result<(), GroupError>| match outcome {
        Ok(()) => codes::NONE,
        Err(error) => {
            log_refusal(request, &body.group_id, error);
            codes::group(error)
        }
    };
    let response = if version >= 3 {
        LeaveGroupResponse::default().with_members(
            members
                .iter()
                .zip(&outcomes)
                .map(|(member, outcome)| {
                    MemberResponse::default()
                        .with_member_id(text(&member.member_id))
                        .with_group_instance_id(member.instance_id.as_deref().map(text))
                        .with_error_code(code(outcome))
                })
                .collect(),
        )
    } else {
        LeaveGroupResponse::default().with_error_code(outcomes.first().map_or(codes::NONE, code))
    };
    encoded(&response, version)
}

/// `OffsetCommit` (versions 2 to 8), answered partition by partition. Commit metadata is
/// accepted up to Kafka's 4 KiB and not kept: `OffsetFetch` answers it empty.
pub(super) async fn offset_commit(
    context: &KafkaContext,
    request: &Request,
    body: &OffsetCommitRequest,
) -> Result<BytesMut, String> {
    let group = body.group_id.to_string();
    // Partitions refused before the core sees them, by topic and position: their code.
    let mut refused: Vec<Vec<Option<i16>>> = Vec::with_capacity(body.topics.len());
    let mut commits: Vec<(String, Vec<PartitionOffset>)> = Vec::with_capacity(body.topics.len());
    for topic in &body.topics {
        let mut codes_here = Vec::with_capacity(topic.partitions.len());
        let mut offsets = Vec::with_capacity(topic.partitions.len());
        for partition in &topic.partitions {
            let too_large = partition
                .committed_metadata
                .as_ref()
                .is_some_and(|metadata| metadata.len() > COMMIT_METADATA_MAX);
            let index = u32::try_from(partition.partition_index);
            let offset = u64::try_from(partition.committed_offset);
            codes_here.push(match (too_large, index, offset) {
                (true, ..) => Some(codes::OFFSET_METADATA_TOO_LARGE),
                (false, Ok(partition), Ok(offset)) => {
                    offsets.push(PartitionOffset { partition, offset });
                    None
                }
                (false, Err(_), _) => Some(codes::UNKNOWN_TOPIC_OR_PARTITION),
                (false, _, Err(_)) => Some(codes::OFFSET_OUT_OF_RANGE),
            });
        }
        refused.push(codes_here);
        commits.push((topic.name.to_string(), offsets));
    }
    let member = MemberRef {
        member_id: body.member_id.to_string(),
        instance_id: body.group_instance_id.as_ref().map(ToString::to_string),
    };
    let generation = body.generation_id_or_member_epoch;
    let outcome = context
        .core
        .commit_kafka_offsets(&request.caller, &group, generation, &member, &commits)
        .await;
    let mut code_of = |error: &GroupError| {
        log_refusal(request, &group, error);
        codes::group(error)
    };
    let group_code = outcome.as_ref().err().map(&mut code_of);
    let topics = body
        .topics
        .iter()
        .zip(refused)
        .enumerate()
        .map(|(index, (topic, refused))| {
            let commit = outcome.as_ref().ok().and_then(|outcomes| outcomes.get(index));
            let stored = commit.and_then(|commit| commit.stored.as_ref().err()).map(&mut code_of);
            let mut checked = commit.map(|commit| commit.checked.iter());
            let partitions = topic
                .partitions
                .iter()
                .zip(refused)
                .map(|(partition, refused)| {
                    let code = match (refused, group_code) {
                        (Some(code), _) | (None, Some(code)) => code,
                        (None, None) => match checked.as_mut().and_then(Iterator::next) {
                            Some(Err(error)) => code_of(error),
                            _ => stored.unwrap_or(codes::NONE),
                        },
                    };
                    OffsetCommitResponsePartition::default()
                        .with_partition_index(partition.partition_index)
                        .with_error_code(code)
                })
                .collect();
            OffsetCommitResponseTopic::default()
                .with_name(topic.name.clone())
                .with_partitions(partitions)
        })
        .collect();
    encoded(&OffsetCommitResponse::default().with_topics(topics), request.version)
}

/// `OffsetFetch` (versions 1 to 7): the committed offset of each partition asked for (-1 where
/// none is), or from version 2 with no topics named, of every partition the group committed.
pub(super) async fn offset_fetch(
    context: &KafkaContext,
    request: &Request,
    body: &OffsetFetchRequest,
) -> Result<BytesMut, String> {
    let version = request.version;
    let core = &context.core;
    let partition = |index: i32, offset: Option<u64>| {
        let answer = OffsetFetchResponsePartition::default()
            .with_partition_index(index)
            .with_committed_offset(offset.map_or(-1, |offset| i64::try_from(offset).unwrap_or(-1)))
            .with_metadata(Some(StrBytes::default()));
        match (version >= 5, offset) {
            (true, Some(_)) => answer.with_committed_leader_epoch(0),
            _ => answer,
        }
    };
    let caller = &request.caller;
    if let Err(denied) =
        core.authorize(caller, ResourceKind::Group, &body.group_id, Operation::Describe)
    {
        tracing::info!(client = %request.client_id, group = %body.group_id.0, %denied, "kafka offset fetch refused");
        let code = codes::denied(&denied);
        // Version 1 has no top-level code: the refusal goes on every partition asked for.
        let topics = match (&body.topics, version < 2) {
            (Some(topics), true) => topics
                .iter()
                .map(|topic| {
                    let partitions = topic.partition_indexes.iter();
                    OffsetFetchResponseTopic::default()
                        .with_name(topic.name.clone())
                        .with_partitions(
                            partitions
                                .map(|&index| partition(index, None).with_error_code(code))
                                .collect(),
                        )
                })
                .collect(),
            _ => Vec::new(),
        };
        let top = if version >= 2 { code } else { 0 };
        let response = OffsetFetchResponse::default().with_error_code(top).with_topics(topics);
        return encoded(&response, version);
    }
    let topics: Vec<OffsetFetchResponseTopic> = match &body.topics {
        Some(topics) => {
            let mut answered = Vec::with_capacity(topics.len());
            for topic in topics {
                let committed =
                    match core.committed_offsets(caller, &body.group_id, &topic.name).await {
                        Ok(committed) => committed,
                        Err(denied) => {
                            let code = codes::denied(&denied);
                            let partitions = topic
                                .partition_indexes
                                .iter()
                                .map(|&index| partition(index, None).with_error_code(code))
                                .collect();
                            answered.push(
                                OffsetFetchResponseTopic::default()
                                    .with_name(topic.name.clone())
                                    .with_partitions(partitions),
                            );
                            continue;
                        }
                    };
                let known = core.topic(caller, &topic.name).ok();
                let partitions = topic
                    .partition_indexes
                    .iter()
                    .map(|&index| {
                        let found = u32::try_from(index).ok().and_then(|index| {
                            committed.iter().find(|entry| entry.partition == index)
                        });
                        let answer = partition(index, found.map(|entry| entry.offset));
                        let exists = known.as_ref().is_some_and(|topic| {
                            u32::try_from(index)
                                .is_ok_and(|index| index < topic.settings().partitions)
                        });
                        // Kafka answers -1 for an unknown partition; from version 7 it says so.
                        match (exists, version >= 7) {
                            (false, true) => {
                                answer.with_error_code(codes::UNKNOWN_TOPIC_OR_PARTITION)
                            }
                            _ => answer,
                        }
                    })
                    .collect();
                answered.push(
                    OffsetFetchResponseTopic::default()
                        .with_name(topic.name.clone())
                        .with_partitions(partitions),
                );
            }
            answered
        }
        None => {
            let mut by_topic: Vec<OffsetFetchResponseTopic> = Vec::new();
            let all = core.committed_offsets_all(caller, &body.group_id).await;
            for (key, offset) in all.unwrap_or_default() {
                let index = i32::try_from(key.partition).unwrap_or(i32::MAX);
                let answer = partition(index, Some(offset));
                match by_topic.iter_mut().find(|topic| topic.name.0.as_str() == key.topic) {
                    Some(topic) => topic.partitions.push(answer),
                    None => by_topic.push(
                        OffsetFetchResponseTopic::default()
                            .with_name(TopicName(text(&key.topic)))
                            .with_partitions(vec![answer]),
                    ),
                }
            }
            by_topic
        }
    };
    encoded(&OffsetFetchResponse::default().with_topics(topics), version)
}

/// `ListGroups` (versions 0 to 4): every group with members or committed offsets.
pub(super) async fn list_groups(
    context: &KafkaContext,
    request: &Request,
    body: &ListGroupsRequest,
) -> Result<BytesMut, String> {
    let version = request.version;
    let groups = context
        .core
        .list_groups(&request.caller)
        .await
        .into_iter()
        .filter(|listing| {
            body.states_filter.is_empty()
                || body
                    .states_filter
                    .iter()
                    .any(|state| state.as_str().eq_ignore_ascii_case(listing.state.name()))
        })
        .map(|listing| {
            let protocol_type = match &listing.kind {
                GroupKind::Offsets => String::new(),
                GroupKind::Native => "ringmq".to_owned(),
                GroupKind::Kafka { protocol_type } => protocol_type.clone(),
            };
            let listed = ListedGroup::default()
                .with_group_id(GroupId(text(&listing.group)))
                .with_protocol_type(text(&protocol_type));
            match version >= 4 {
                true => listed.with_group_state(text(listing.state.name())),
                false => listed,
            }
        })
        .collect();
    encoded(&ListGroupsResponse::default().with_groups(groups), version)
}

/// `DescribeGroups` (versions 0 to 5).
pub(super) async fn describe_groups(
    context: &KafkaContext,
    request: &Request,
    body: &DescribeGroupsRequest,
) -> Result<BytesMut, String> {
    let version = request.version;
    let mut groups = Vec::with_capacity(body.groups.len());
    for name in &body.groups {
        let mut described = DescribedGroup::default().with_group_id(name.clone());
        if let Err(reason) = ringmq_protocol::topic::validate_group_name(name) {
            tracing::info!(client = %request.client_id, group = %name.0, reason, "kafka describe of an invalid group name");
            groups.push(described.with_error_code(codes::INVALID_GROUP_ID));
            continue;
        }
        let description = match context.core.describe_kafka_group(&request.caller, name).await {
            Ok(description) => description,
            Err(denied) => {
                tracing::info!(client = %request.client_id, group = %name.0, %denied, "kafka group describe refused");
                groups.push(described.with_error_code(codes::denied(&denied)));
                continue;
            }
        };
        described = described
            .with_group_state(text(description.state.name()))
            .with_protocol_type(text(&description.protocol_type))
            .with_protocol_data(text(&description.protocol))
            .with_members(
                description
                    .members
                    .into_iter()
                    .map(|member| {
                        let described = DescribedGroupMember::default()
                            .with_member_id(text(&member.member_id))
                            .with_client_id(text(&member.client_id))
                            .with_client_host(text(&member.client_host))
                            .with_member_metadata(member.metadata)
                            .with_member_assignment(member.assignment);
                        match version >= 4 {
                            true => described
                                .with_group_instance_id(member.instance_id.map(|id| text(&id))),
                            false => described,
                        }
                    })
                    .collect(),
            );
        if description.state == GroupState::Dead {
            described = described.with_members(Vec::new());
        }
        groups.push(described);
    }
    encoded(&DescribeGroupsResponse::default().with_groups(groups), version)
}
