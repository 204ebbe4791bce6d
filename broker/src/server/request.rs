//! Request handlers: decode a request body, act on it, queue the response.
//!
//! Every failure a client can cause is answered with an error code and a message naming the bad
//! value; only a body that cannot be decoded closes the connection (the stream is then not to be
//! trusted). Nothing here panics on input.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::time::Instant;

use ringmq_protocol::group::{
    CommitOffsets, CommittedOffsets, GroupAssignment, GroupDescription, GroupList, JoinGroup,
    MemberToEncode, OffsetDescription, PartitionOffset, ProducerIdentity,
};
use ringmq_protocol::message::{
    CreateTopic, Fetch, Handshake, HandshakeReply, LocalOpen, LocalOpenReply, PartitionState,
    Produce, ProduceReply, TopicDescription, TopicList, TopicName,
};
use ringmq_protocol::{Acks, DecodeError, ErrorCode, FrameHead, Opcode, Request, PROTOCOL_VERSION};

use super::response::{encode_ok, CloseReason, Failure, Output, Pending};
use super::Context;
use crate::auth::permissions::{
    Denied, Operation, PatternKind, PermissionsError, ResourceKind, Rule, RuleFilter,
};
use crate::auth::scram::{ScramCredential, ScramHash};
use crate::auth::users::{Credentials, UsersError};
use crate::auth::{Login, Mechanism, Step};
use crate::core::{
    AdminError, Caller, FetchError, PartitionHandle, ProduceError, QuotaError, Seat,
    TooManyConnections, TopicHandle,
};
use crate::groups::{Assignment, GroupError, GroupListing, ProducerGrant};
use crate::log::StorageError;
use crate::topics::TopicError;
use ringmq_protocol::access::{
    QuotaEntry, QuotaKind, QuotaList, RuleEntry, RuleList, RuleOperation, RulePattern,
    RuleResource, SetUser, UserList, QUOTA_DEFAULTS,
};

/// Session timeout of a member that asks for none.
const DEFAULT_SESSION_TIMEOUT: Duration = Duration::from_secs(10);

/// Per-connection request state.
pub(crate) struct Session<'c> {
    context: &'c Context,
    peer: SocketAddr,
    /// The topic of the last request, so a steady stream of requests skips the registry lookup.
    cached: Option<TopicHandle>,
    /// Who the client is: the subject of its certificate on a mutual-TLS connection, or the
    /// user it logged in as (anonymous until then).
    caller: Caller,
    /// A login under way, and the mechanism it uses.
    login: Option<(Mechanism, Login)>,
    /// Whether the connection is TLS (PLAIN is offered only then).
    tls: bool,
    /// Whether the connection came through the local listener (`LocalOpen` is served only then).
    local: bool,
    /// The connection counted against its principal's connection limit.
    seat: Option<Seat>,
}

impl<'c> Session<'c> {
    pub(crate) fn new(
        context: &'c Context,
        peer: SocketAddr,
        principal: Option<String>,
        tls: bool,
        local: bool,
    ) -> Self {
        let caller = principal.map_or_else(Caller::anonymous, |who| Caller::authenticated(&who));
        Self { context, peer, cached: None, caller, login: None, tls, local, seat: None }
    }

    /// Counts the connection against its principal's connection limit (once it has one).
    pub(crate) fn take_seat(&mut self) -> Result<(), TooManyConnections> {
        self.seat = self.context.core.seat(&self.caller)?;
        Ok(())
    }

    pub(crate) fn peer(&self) -> SocketAddr {
        self.peer
    }

    /// Handles one request. `Err` closes the connection after the response is written.
    pub(crate) async fn handle(
        &mut self,
        head: FrameHead,
        body: &[u8],
        output: &mut Output,
    ) -> Result<(), CloseReason> {
        let correlation_id = head.correlation_id;
        let before_login =
            !matches!(Opcode::from_u8(head.opcode), Some(Opcode::Handshake | Opcode::Authenticate));
        if before_login
            && !self.caller.is_authenticated()
            && self.context.config.auth == crate::config::AuthMode::Required
        {
            let message = "this broker requires authentication: log in (Authenticate, \
                           SCRAM-SHA-256 or SCRAM-SHA-512) or present a client certificate";
            self.context.core.metrics().authentication_failed();
            tracing::warn!(peer = %self.peer, "native request before authentication; closing the connection");
            self.error(output, head.opcode, ErrorCode::Unauthenticated, correlation_id, message);
            return Err(CloseReason::Unauthenticated);
        }
        let Some(opcode) = Opcode::from_u8(head.opcode) else {
            let message = format!("opcode {} is not a request this broker serves", head.opcode);
            self.error(
                output,
                head.opcode,
                ErrorCode::UnsupportedRequest,
                correlation_id,
                &message,
            );
            return Ok(());
        };
        let request = match Request::decode(opcode, body) {
            Ok(Some(request)) => request,
            Ok(None) => {
                let message = format!("{} is not served by this broker version", opcode.name());
                self.error(
                    output,
                    head.opcode,
                    ErrorCode::UnsupportedRequest,
                    correlation_id,
                    &message,
                );
                return Ok(());
            }
            Err(error) => {
                self.malformed(output, opcode, correlation_id, &error);
                return Err(CloseReason::MalformedRequest);
            }
        };
        match request {
            Request::Handshake(handshake) => self.handshake(output, correlation_id, &handshake),
            Request::Ping => {
                output.respond(|out| encode_ok(out, Opcode::Ping, correlation_id, |_| Ok(())))
            }
            Request::CreateTopic(create) => {
                self.create_topic(output, correlation_id, &create).await
            }
            Request::DeleteTopic(name) => self.delete_topic(output, correlation_id, &name).await,
            Request::ListTopics => self.list_topics(output, correlation_id),
            Request::DescribeTopic(name) => self.describe_topic(output, correlation_id, &name),
            Request::Produce(produce) => self.produce(output, correlation_id, &produce).await,
            Request::Fetch(fetch) => self.fetch(output, correlation_id, &fetch, false),
            Request::LocalWait(fetch) => self.fetch(output, correlation_id, &fetch, true),
            Request::LocalOpen(open) => self.local_open(output, correlation_id, &open),
            Request::Stats => match self.context.core.stats(&self.caller) {
                Ok(stats) => output.respond(|out| {
                    encode_ok(out, Opcode::Stats, correlation_id, |body| {
                        stats.encode(body);
                        Ok(())
                    })
                }),
                Err(denied) => self.denied(output, Opcode::Stats, correlation_id, &denied),
            },
            Request::InitProducer(identity) => {
                self.init_producer(output, correlation_id, identity).await
            }
            Request::JoinGroup(join) => self.join_group(output, correlation_id, &join).await,
            Request::Heartbeat(heartbeat) => {
                let peer = self.peer.to_string();
                let (group, member) = (heartbeat.group, heartbeat.member_id);
                let result = self.context.core.heartbeat(&self.caller, group, member, &peer).await;
                self.assignment(output, Opcode::Heartbeat, correlation_id, result);
            }
            Request::LeaveGroup(leave) => {
                let core = &self.context.core;
                match core.leave_group(&self.caller, leave.group, leave.member_id).await {
                    Ok(()) => output.respond(|out| {
                        encode_ok(out, Opcode::LeaveGroup, correlation_id, |_| Ok(()))
                    }),
                    Err(error) => {
                        self.group_error(output, Opcode::LeaveGroup, correlation_id, &error)
                    }
                }
            }
            Request::CommitOffsets(commit) => {
                self.commit_offsets(output, correlation_id, &commit).await
            }
            Request::FetchCommitted(names) => {
                let core = &self.context.core;
                match core.committed_offsets(&self.caller, names.group, names.topic).await {
                    Ok(offsets) => output.respond(|out| {
                        encode_ok(out, Opcode::FetchCommitted, correlation_id, |body| {
                            CommittedOffsets::encode(&offsets, body)
                        })
                    }),
                    Err(denied) => {
                        self.denied(output, Opcode::FetchCommitted, correlation_id, &denied)
                    }
                }
            }
            Request::ListGroups => {
                let groups = self.context.core.list_groups(&self.caller).await;
                let summaries: Vec<_> = groups.iter().map(GroupListing::summary).collect();
                output.respond(|out| {
                    encode_ok(out, Opcode::ListGroups, correlation_id, |body| {
                        GroupList::encode(&summaries, body)
                    })
                });
            }
            Request::DescribeGroup(name) => {
                self.describe_group(output, correlation_id, name.group).await
            }
            Request::Authenticate(authenticate) => {
                return self.authenticate(output, correlation_id, &authenticate).await;
            }
            Request::ListUsers => match self.context.core.list_users(&self.caller) {
                Ok(names) => output.respond(|out| {
                    encode_ok(out, Opcode::ListUsers, correlation_id, |body| {
                        let names: Vec<&str> = names.iter().map(String::as_str).collect();
                        UserList::encode(&names, body)
                    })
                }),
                Err(error) => self.admin_answer(
                    output,
                    Opcode::ListUsers,
                    correlation_id,
                    Err::<(), _>(error),
                ),
            },
            Request::SetUser(set) => {
                let result = match credentials(&set) {
                    Ok(credentials) => {
                        let core = &self.context.core;
                        core.set_user(&self.caller, set.name, credentials, set.replace).await
                    }
                    Err(error) => Err(error),
                };
                if result.is_ok() {
                    tracing::info!(peer = %self.peer, by = self.caller.principal(), user = set.name, replaced = set.replace, "user set");
                }
                self.admin_answer(output, Opcode::SetUser, correlation_id, result);
            }
            Request::RemoveUser(name) => {
                let result = self.context.core.remove_user(&self.caller, name.name).await;
                if result.is_ok() {
                    tracing::info!(peer = %self.peer, by = self.caller.principal(), user = name.name, "user removed");
                }
                self.admin_answer(output, Opcode::RemoveUser, correlation_id, result);
            }
            Request::ListRules => self.list_rules(output, correlation_id),
            Request::AddRule(entry) => {
                let result = self.change_rule(&entry, true).await;
                self.admin_answer(output, Opcode::AddRule, correlation_id, result);
            }
            Request::RemoveRule(entry) => {
                let result = self.change_rule(&entry, false).await;
                self.admin_answer(output, Opcode::RemoveRule, correlation_id, result);
            }
            Request::ListQuotas => self.list_quotas(output, correlation_id),
            Request::SetQuota(entry) => {
                let core = &self.context.core;
                let change = vec![(entry.kind, Some(entry.value))];
                let result = core.set_quotas(&self.caller, entry.principal, change, true).await;
                if result.is_ok() {
                    tracing::info!(peer = %self.peer, by = self.caller.principal(), principal = entry.principal, quota = entry.kind.name(), value = entry.value, "quota set");
                }
                self.admin_answer(output, Opcode::SetQuota, correlation_id, result);
            }
            Request::RemoveQuota(target) => {
                let core = &self.context.core;
                let change = vec![(target.kind, None)];
                let result = core.set_quotas(&self.caller, target.principal, change, true).await;
                if result.is_ok() {
                    tracing::info!(peer = %self.peer, by = self.caller.principal(), principal = target.principal, quota = target.kind.name(), "quota removed");
                }
                self.admin_answer(output, Opcode::RemoveQuota, correlation_id, result);
            }
            _ => {
                let message = format!("{} is not served by this broker version", opcode.name());
                self.error(
                    output,
                    head.opcode,
                    ErrorCode::UnsupportedRequest,
                    correlation_id,
                    &message,
                );
            }
        }
        Ok(())
    }

    fn denied(&self, output: &mut Output, opcode: Opcode, correlation_id: u32, denied: &Denied) {
        tracing::info!(peer = %self.peer, request = opcode.name(), %denied, "request refused");
        let message = denied.to_string();
        self.error(output, opcode.as_u8(), ErrorCode::Unauthorized, correlation_id, &message);
    }

    /// Answers a change to users or rules.
    fn admin_answer<T>(
        &self,
        output: &mut Output,
        opcode: Opcode,
        correlation_id: u32,
        result: Result<T, AdminError>,
    ) {
        let code = match result {
            Ok(_) => {
                return output.respond(|out| encode_ok(out, opcode, correlation_id, |_| Ok(())));
            }
            Err(AdminError::Unauthorized(denied)) => {
                return self.denied(output, opcode, correlation_id, &denied);
            }
            Err(ref error) => match error {
                AdminError::Users(UsersError::Exists(_)) => ErrorCode::InvalidRequest,
                AdminError::Users(UsersError::Unknown(_)) => ErrorCode::InvalidRequest,
                AdminError::Users(UsersError::Io(_))
                | AdminError::Permissions(PermissionsError::File(_))
                | AdminError::Quotas(QuotaError::File(_)) => ErrorCode::StorageError,
                AdminError::Interrupted => ErrorCode::ShuttingDown,
                AdminError::AuthOff | AdminError::NotSuperuser { .. } => ErrorCode::Unauthorized,
                _ => ErrorCode::InvalidRequest,
            },
        };
        let message = result.err().map(|error| error.to_string()).unwrap_or_default();
        if code == ErrorCode::StorageError {
            tracing::error!(peer = %self.peer, request = opcode.name(), %message, "change failed");
        }
        self.error(output, opcode.as_u8(), code, correlation_id, &message);
    }

    fn list_rules(&self, output: &mut Output, correlation_id: u32) {
        let (rules, superusers) = match self.context.core.rules(&self.caller, &RuleFilter::any()) {
            Ok(found) => found,
            Err(error) => {
                return self.admin_answer(
                    output,
                    Opcode::ListRules,
                    correlation_id,
                    Err::<(), _>(error),
                )
            }
        };
        let mut entries: Vec<RuleEntry<'_>> = superusers
            .iter()
            .map(|principal| RuleEntry {
                principal,
                resource: RuleResource::Superuser,
                pattern: RulePattern::Literal,
                name: "",
                operation: RuleOperation::All,
            })
            .collect();
        entries.extend(rules.iter().map(|rule| RuleEntry {
            principal: &rule.principal,
            resource: match rule.resource {
                ResourceKind::Topic => RuleResource::Topic,
                ResourceKind::Group => RuleResource::Group,
                ResourceKind::Cluster => RuleResource::Cluster,
            },
            pattern: match rule.pattern {
                PatternKind::Literal => RulePattern::Literal,
                PatternKind::Prefix => RulePattern::Prefix,
            },
            name: &rule.name,
            operation: wire_operation(rule.operation),
        }));
        output.respond(|out| {
            encode_ok(out, Opcode::ListRules, correlation_id, |body| {
                RuleList::encode(&entries, body)
            })
        });
    }

    fn list_quotas(&self, output: &mut Output, correlation_id: u32) {
        let (defaults, own) = match self.context.core.quotas(&self.caller) {
            Ok(found) => found,
            Err(error) => {
                return self.admin_answer(
                    output,
                    Opcode::ListQuotas,
                    correlation_id,
                    Err::<(), _>(error),
                )
            }
        };
        let mut entries: Vec<QuotaEntry<'_>> = QuotaKind::ALL
            .iter()
            .map(|&kind| QuotaEntry { principal: QUOTA_DEFAULTS, kind, value: defaults.get(kind) })
            .collect();
        for (principal, own) in &own {
            entries.extend(QuotaKind::ALL.iter().filter_map(|&kind| {
                own.get(kind).map(|value| QuotaEntry { principal, kind, value })
            }));
        }
        output.respond(|out| {
            encode_ok(out, Opcode::ListQuotas, correlation_id, |body| {
                QuotaList::encode(&entries, body)
            })
        });
    }

    /// Adds or removes one rule (or superuser).
    async fn change_rule(&self, entry: &RuleEntry<'_>, add: bool) -> Result<(), AdminError> {
        let core = &self.context.core;
        let (caller, by) = (&self.caller, self.caller.principal());
        let resource = match entry.resource {
            RuleResource::Superuser => {
                core.set_superuser(caller, entry.principal, add).await?;
                tracing::info!(peer = %self.peer, by, principal = entry.principal, add, "superuser changed");
                return Ok(());
            }
            RuleResource::Topic => ResourceKind::Topic,
            RuleResource::Group => ResourceKind::Group,
            RuleResource::Cluster => ResourceKind::Cluster,
        };
        let rule = Rule {
            principal: entry.principal.to_owned(),
            resource,
            pattern: match entry.pattern {
                RulePattern::Literal => PatternKind::Literal,
                RulePattern::Prefix => PatternKind::Prefix,
            },
            name: entry.name.to_owned(),
            operation: rule_operation(entry.operation),
        };
        tracing::info!(peer = %self.peer, by, %rule, add, "rule changed");
        if add {
            core.add_rules(caller, vec![rule]).await.map(drop)
        } else {
            let removed = core.remove_rules(caller, RuleFilter::exactly(&rule)).await?;
            if removed.is_empty() {
                return Err(AdminError::Permissions(PermissionsError::InvalidRule {
                    rule,
                    reason: "no such rule".to_owned(),
                }));
            }
            Ok(())
        }
    }

    fn error(
        &self,
        output: &mut Output,
        opcode: u8,
        code: ErrorCode,
        correlation_id: u32,
        message: &str,
    ) {
        self.error_with_offsets(output, opcode, code, correlation_id, message, 0, 0);
    }

    #[allow(clippy::too_many_arguments, reason = "an error response has this many fields")]
    fn error_with_offsets(
        &self,
        output: &mut Output,
        opcode: u8,
        code: ErrorCode,
        correlation_id: u32,
        message: &str,
        earliest: u64,
        next: u64,
    ) {
        let failure = Failure { opcode, code, correlation_id, message };
        let metrics = self.context.core.metrics();
        output.respond(|out| failure.answer(out, metrics, self.peer, earliest, next));
    }

    fn malformed(
        &self,
        output: &mut Output,
        opcode: Opcode,
        correlation_id: u32,
        error: &DecodeError,
    ) {
        tracing::warn!(peer = %self.peer, request = opcode.name(), %error, "malformed request; closing the connection");
        self.error(
            output,
            opcode.as_u8(),
            ErrorCode::MalformedFrame,
            correlation_id,
            &error.to_string(),
        );
    }

    fn handshake(&self, output: &mut Output, correlation_id: u32, handshake: &Handshake<'_>) {
        if !(handshake.version_min..=handshake.version_max).contains(&PROTOCOL_VERSION) {
            let message = format!(
                "client speaks versions {} to {}, this broker speaks {PROTOCOL_VERSION}",
                handshake.version_min, handshake.version_max
            );
            self.error(
                output,
                Opcode::Handshake.as_u8(),
                ErrorCode::UnsupportedVersion,
                correlation_id,
                &message,
            );
            return;
        }
        tracing::debug!(peer = %self.peer, client = handshake.client_name, "handshake");
        let config = &self.context.config;
        let reply = HandshakeReply {
            version: PROTOCOL_VERSION,
            broker_name: concat!("ringmq ", env!("CARGO_PKG_VERSION")),
            frame_size_max: config.frame_size_max,
            batch_size_max: self.context.core.settings().batch_size_max,
        };
        output.respond(|out| {
            encode_ok(out, Opcode::Handshake, correlation_id, |body| reply.encode(body));
        });
    }

    async fn create_topic(
        &self,
        output: &mut Output,
        correlation_id: u32,
        create: &CreateTopic<'_>,
    ) {
        let (partitions, capacity, chunk_size) =
            (create.partition_count, create.capacity, u64::from(create.chunk_size));
        let core = &self.context.core;
        let created =
            core.create_topic(&self.caller, create.name, partitions, capacity, chunk_size).await;
        match created {
            Ok(_) => output
                .respond(|out| encode_ok(out, Opcode::CreateTopic, correlation_id, |_| Ok(()))),
            Err(error) => self.topic_error(output, Opcode::CreateTopic, correlation_id, &error),
        }
    }

    async fn delete_topic(
        &mut self,
        output: &mut Output,
        correlation_id: u32,
        name: &TopicName<'_>,
    ) {
        self.cached = None;
        match self.context.core.delete_topic(&self.caller, name.name).await {
            Ok(()) => output
                .respond(|out| encode_ok(out, Opcode::DeleteTopic, correlation_id, |_| Ok(()))),
            Err(error) => self.topic_error(output, Opcode::DeleteTopic, correlation_id, &error),
        }
    }

    async fn init_producer(
        &self,
        output: &mut Output,
        correlation_id: u32,
        identity: ProducerIdentity,
    ) {
        let (id, epoch) = (identity.producer_id, identity.producer_epoch);
        let granted = self.context.core.init_producer(&self.caller, id, epoch).await;
        match granted {
            Ok(ProducerGrant { producer_id, producer_epoch }) => {
                tracing::debug!(peer = %self.peer, producer_id, producer_epoch, "producer id granted");
                let reply = ProducerIdentity { producer_id, producer_epoch };
                output.respond(|out| {
                    encode_ok(out, Opcode::InitProducer, correlation_id, |body| {
                        reply.encode(body);
                        Ok(())
                    })
                });
            }
            Err(error) => self.group_error(output, Opcode::InitProducer, correlation_id, &error),
        }
    }

    async fn join_group(&self, output: &mut Output, correlation_id: u32, join: &JoinGroup<'_>) {
        let session = match join.session_timeout_ms {
            0 => DEFAULT_SESSION_TIMEOUT,
            ms => Duration::from_millis(u64::from(ms)),
        };
        let peer = self.peer.to_string();
        let result = self
            .context
            .core
            .join_group(&self.caller, join.group, join.topic, join.member_id, session, &peer)
            .await;
        self.assignment(output, Opcode::JoinGroup, correlation_id, result);
    }

    fn assignment(
        &self,
        output: &mut Output,
        opcode: Opcode,
        correlation_id: u32,
        result: Result<Assignment, GroupError>,
    ) {
        match result {
            Ok(assignment) => {
                let millis =
                    |duration: Duration| u32::try_from(duration.as_millis()).unwrap_or(u32::MAX);
                output.respond(|out| {
                    encode_ok(out, opcode, correlation_id, |body| {
                        GroupAssignment::encode(
                            assignment.generation,
                            &assignment.member_id,
                            millis(assignment.session_timeout),
                            millis(assignment.heartbeat_interval),
                            assignment.settled,
                            &assignment.partitions,
                            body,
                        )
                    })
                });
            }
            Err(error) => self.group_error(output, opcode, correlation_id, &error),
        }
    }

    async fn commit_offsets(
        &self,
        output: &mut Output,
        correlation_id: u32,
        commit: &CommitOffsets<'_>,
    ) {
        let offsets: Vec<PartitionOffset> = commit.offsets.iter().collect();
        let result = self
            .context
            .core
            .commit_offsets(
                &self.caller,
                commit.group,
                commit.topic,
                commit.member_id,
                commit.generation,
                &offsets,
            )
            .await;
        match result {
            Ok(()) => output
                .respond(|out| encode_ok(out, Opcode::CommitOffsets, correlation_id, |_| Ok(()))),
            Err(error) => self.group_error(output, Opcode::CommitOffsets, correlation_id, &error),
        }
    }

    async fn describe_group(&self, output: &mut Output, correlation_id: u32, group: &str) {
        let info = match self.context.core.describe_group(&self.caller, group).await {
            Ok(info) => info,
            Err(error) => {
                return self.group_error(output, Opcode::DescribeGroup, correlation_id, &error)
            }
        };
        let members: Vec<MemberToEncode<'_>> = info
            .members
            .iter()
            .map(|member| MemberToEncode {
                member_id: &member.member_id,
                client: &member.client,
                generation: member.generation,
                partitions: &member.partitions,
            })
            .collect();
        let offsets: Vec<OffsetDescription<'_>> = info
            .offsets
            .iter()
            .map(|entry| OffsetDescription {
                topic: &entry.topic,
                partition: entry.partition,
                committed: entry.committed,
                end: entry.end,
            })
            .collect();
        output.respond(|out| {
            encode_ok(out, Opcode::DescribeGroup, correlation_id, |body| {
                GroupDescription::encode(
                    &info.group,
                    &info.topic,
                    info.generation,
                    &members,
                    &offsets,
                    body,
                )
            })
        });
    }

    fn group_error(
        &self,
        output: &mut Output,
        opcode: Opcode,
        correlation_id: u32,
        error: &GroupError,
    ) {
        let code = error.code();
        if code == ErrorCode::StorageError {
            tracing::error!(peer = %self.peer, request = opcode.name(), %error, "group operation failed");
        }
        self.error(output, opcode.as_u8(), code, correlation_id, &error.to_string());
    }

    fn topic_error(
        &self,
        output: &mut Output,
        opcode: Opcode,
        correlation_id: u32,
        error: &TopicError,
    ) {
        let code = match error {
            TopicError::Unauthorized(_) => ErrorCode::Unauthorized,
            TopicError::Unknown(_) => ErrorCode::UnknownTopic,
            TopicError::Exists(_) => ErrorCode::TopicExists,
            TopicError::InvalidName { .. } => ErrorCode::InvalidTopicName,
            TopicError::TooManyPartitions { .. }
            | TopicError::CapacityTooLarge { .. }
            | TopicError::InvalidGeometry(_) => ErrorCode::InvalidRequest,
            TopicError::TooMany { .. }
            | TopicError::RingBytesExceeded { .. }
            | TopicError::PrincipalBytesExceeded { .. }
            | TopicError::DiskFull { .. } => ErrorCode::Busy,
            TopicError::TaskFailed { .. } => ErrorCode::Internal,
            TopicError::Stopping { .. } => ErrorCode::ShuttingDown,
            _ => ErrorCode::StorageError,
        };
        if code == ErrorCode::StorageError {
            tracing::error!(peer = %self.peer, request = opcode.name(), %error, "topic operation failed");
        }
        self.error(output, opcode.as_u8(), code, correlation_id, &error.to_string());
    }

    /// One SASL message of a login. A failure (after the core's delay) is answered
    /// `Unauthenticated` and closes the connection.
    async fn authenticate(
        &mut self,
        output: &mut Output,
        correlation_id: u32,
        authenticate: &ringmq_protocol::message::Authenticate<'_>,
    ) -> Result<(), CloseReason> {
        let peer = self.peer;
        let refuse = |session: &mut Self, output: &mut Output, message: String| {
            tracing::warn!(%peer, reason = %message, "native login refused");
            let opcode = Opcode::Authenticate.as_u8();
            session.error(output, opcode, ErrorCode::Unauthenticated, correlation_id, &message);
            Err(CloseReason::Unauthenticated)
        };
        if self.caller.is_authenticated() {
            return refuse(self, output, "this connection is authenticated already".to_owned());
        }
        let Some(mechanism) = Mechanism::from_name(authenticate.mechanism) else {
            let message = format!("SASL mechanism {:?} is not served", authenticate.mechanism);
            return refuse(self, output, message);
        };
        let login = match self.login.take() {
            Some((started, login)) if started == mechanism => login,
            Some((started, _)) => {
                let message = format!(
                    "a {} login is under way; its next message cannot be {}",
                    started.name(),
                    mechanism.name()
                );
                return refuse(self, output, message);
            }
            None => match Login::start(mechanism, self.tls) {
                Ok(login) => login,
                Err(error) => return refuse(self, output, error.to_string()),
            },
        };
        let core = &self.context.core;
        let (done, message) = match core.login_step(login, authenticate.message, peer.ip()).await {
            Ok(Step::Continue(login, message)) => {
                self.login = Some((mechanism, login));
                (false, message)
            }
            Ok(Step::Done { user, message }) => {
                let caller = std::mem::replace(&mut self.caller, Caller::authenticated(&user));
                if let Err(refused) = self.take_seat() {
                    self.caller = caller;
                    tracing::warn!(%peer, reason = %refused, "native login refused");
                    let opcode = Opcode::Authenticate.as_u8();
                    let code = ErrorCode::TooManyConnections;
                    self.error(output, opcode, code, correlation_id, &refused.to_string());
                    return Err(CloseReason::Unauthenticated);
                }
                tracing::info!(%peer, principal = %user, "authenticated");
                (true, message)
            }
            Err(error) => return refuse(self, output, error.to_string()),
        };
        let reply = ringmq_protocol::message::AuthenticateReply { done, message: &message };
        output.respond(|out| {
            encode_ok(out, Opcode::Authenticate, correlation_id, |body| reply.encode(body))
        });
        Ok(())
    }

    fn list_topics(&self, output: &mut Output, correlation_id: u32) {
        let list = self.context.core.list_topics(&self.caller);
        output.respond(|out| {
            encode_ok(out, Opcode::ListTopics, correlation_id, |body| {
                TopicList::encode(list.iter().map(|(name, count)| (&**name, *count)), body)
            });
        });
    }

    fn describe_topic(&self, output: &mut Output, correlation_id: u32, name: &TopicName<'_>) {
        let core = &self.context.core;
        let topic = match core.topic(&self.caller, name.name) {
            Ok(topic) => topic,
            Err(error) => {
                return self.topic_error(output, Opcode::DescribeTopic, correlation_id, &error)
            }
        };
        let settings = *topic.settings();
        let partitions = core.partitions(&topic);
        let states = partitions.iter().map(|partition| {
            let offsets = core.offsets(partition);
            PartitionState {
                partition: partition.index(),
                earliest_offset: offsets.earliest,
                next_offset: offsets.next,
            }
        });
        output.respond(|out| {
            encode_ok(out, Opcode::DescribeTopic, correlation_id, |body| {
                TopicDescription::encode(
                    topic.name(),
                    settings.capacity,
                    u32::try_from(settings.chunk_size).unwrap_or(u32::MAX),
                    settings.batch_size_max,
                    states,
                    body,
                )
            });
        });
    }

    /// The partition a request names, or the error to answer.
    fn partition(
        &mut self,
        topic: &str,
        partition: u32,
    ) -> Result<PartitionHandle, (ErrorCode, String)> {
        let core = &self.context.core;
        let cached =
            self.cached.as_ref().filter(|cached| cached.name() == topic && !cached.is_deleted());
        let handle = match cached {
            Some(handle) => handle.clone(),
            None => {
                let found = core.topic(&self.caller, topic).map_err(|error| {
                    let code = match error {
                        TopicError::Unauthorized(_) => ErrorCode::Unauthorized,
                        _ => ErrorCode::UnknownTopic,
                    };
                    (code, error.to_string())
                })?;
                self.cached = Some(found.clone());
                found
            }
        };
        core.partition(&handle, partition)
            .map_err(|error| (ErrorCode::UnknownPartition, error.to_string()))
    }

    async fn produce(&mut self, output: &mut Output, correlation_id: u32, produce: &Produce<'_>) {
        let started = Instant::now();
        let opcode = Opcode::Produce.as_u8();
        let partition = match self.partition(produce.topic, produce.partition) {
            Ok(partition) => partition,
            Err((code, message)) => {
                return self.error(output, opcode, code, correlation_id, &message)
            }
        };
        let timeout = match produce.timeout_ms {
            0 => None,
            ms => Some(Duration::from_millis(u64::from(ms))),
        };
        let core = &self.context.core;
        let (batch, acks) = (produce.batch, produce.acks);
        let produced = match core.produce(&self.caller, &partition, batch, acks, timeout).await {
            Ok(produced) => produced,
            Err(error) => {
                let code = produce_error_code(&error);
                return self.error(output, opcode, code, correlation_id, &error.to_string());
            }
        };
        output.throttle(produced.throttle);
        if produced.duplicate {
            tracing::debug!(peer = %self.peer, topic = produce.topic, partition = produce.partition, base_offset = produced.base_offset, "retried batch already written; acknowledged with its offset");
        }
        match (produced.acks, produced.sync) {
            (Acks::None, _) => {}
            (_, Some(wait)) => output.push(Pending::Synced {
                correlation_id,
                wait,
                base_offset: produced.base_offset,
                started,
            }),
            (_, None) => {
                let reply = ProduceReply { base_offset: produced.base_offset };
                output.respond(|out| {
                    encode_ok(out, Opcode::Produce, correlation_id, |body| {
                        reply.encode(body);
                        Ok(())
                    })
                });
            }
        }
    }

    /// A fetch, or with `wake_only` a `LocalWait` (the same wait, answered without data).
    fn fetch(
        &mut self,
        output: &mut Output,
        correlation_id: u32,
        fetch: &Fetch<'_>,
        wake_only: bool,
    ) {
        let opcode = if wake_only { Opcode::LocalWait } else { Opcode::Fetch };
        let partition = match self.partition(fetch.topic, fetch.partition) {
            Ok(partition) => partition,
            Err((code, message)) => {
                return self.error(output, opcode.as_u8(), code, correlation_id, &message)
            }
        };
        let config = &self.context.config;
        // Leave room in the frame for the reply header; one batch always fits.
        let max_bytes = (fetch.max_bytes as usize).min(config.frame_size_max as usize - 64).max(1);
        let wait =
            self.context.core.fetch_wait(Duration::from_millis(u64::from(fetch.max_wait_ms)));
        // Not read yet: any next offset differs from this, so the first wait reads first.
        let partition_next = u64::MAX;
        output.push(Pending::Fetch {
            correlation_id,
            caller: self.caller.clone(),
            partition,
            offset: fetch.offset,
            max_bytes,
            min_bytes: (fetch.min_bytes as usize).clamp(1, max_bytes),
            deadline: Instant::now() + wait,
            seen_next: partition_next,
            wake_only,
        });
    }

    /// Opens a partition for a same-host reader: the answer goes out with the ring file and its
    /// cursor page attached.
    fn local_open(&mut self, output: &mut Output, correlation_id: u32, open: &LocalOpen<'_>) {
        let opcode = Opcode::LocalOpen.as_u8();
        if !self.local {
            let message = "LocalOpen is served on the local listener only (a Unix socket, \
                           --local-listen), to clients on the broker's host";
            return self.error(
                output,
                opcode,
                ErrorCode::UnsupportedRequest,
                correlation_id,
                message,
            );
        }
        let partition = match self.partition(open.topic, open.partition) {
            Ok(partition) => partition,
            Err((code, message)) => {
                return self.error(output, opcode, code, correlation_id, &message)
            }
        };
        let (code, message, earliest, next) = match self.context.core.local_open(
            &self.caller,
            &partition,
            open.offset,
        ) {
            Ok(opened) => {
                let reply = LocalOpenReply {
                    position: opened.start.position,
                    offset: opened.start.offset,
                    entry: opened.start.entry,
                    earliest_offset: opened.start.earliest_offset,
                    next_offset: opened.start.next_offset,
                    batch_size_max: opened.batch_size_max,
                };
                let mut frame = Vec::with_capacity(64);
                encode_ok(&mut frame, Opcode::LocalOpen, correlation_id, |body| {
                    reply.encode(body);
                    Ok(())
                });
                tracing::debug!(peer = %self.peer, topic = open.topic, partition = open.partition, offset = open.offset, "local reader opened a partition");
                output.push(Pending::Descriptors { frame, files: opened.files });
                return;
            }
            Err(error @ FetchError::OffsetOutOfRange { earliest, next, .. }) => {
                (ErrorCode::OffsetOutOfRange, error.to_string(), earliest, next)
            }
            Err(error @ FetchError::Unauthorized(_)) => {
                (ErrorCode::Unauthorized, error.to_string(), 0, 0)
            }
            Err(error @ (FetchError::LocalOff | FetchError::LocalFiles(_))) => {
                (ErrorCode::StorageError, error.to_string(), 0, 0)
            }
            Err(error) => (ErrorCode::Busy, error.to_string(), 0, 0),
        };
        output.error(opcode, code, correlation_id, &message, earliest, next);
    }
}

/// The native protocol's code for each way a produce can fail.
fn produce_error_code(error: &ProduceError) -> ErrorCode {
    match error {
        ProduceError::Unauthorized(_) => ErrorCode::Unauthorized,
        ProduceError::UnknownPartition { .. } => ErrorCode::UnknownPartition,
        ProduceError::TopicDeleted { .. } => ErrorCode::UnknownTopic,
        ProduceError::BatchTooLarge { .. } => ErrorCode::BatchTooLarge,
        ProduceError::CorruptBatch(_) => ErrorCode::CorruptBatch,
        ProduceError::Unsupported(_) => ErrorCode::UnsupportedRequest,
        ProduceError::Busy { .. } => ErrorCode::Busy,
        ProduceError::Fenced(_) => ErrorCode::ProducerFenced,
        ProduceError::OutOfOrderSequence(_) => ErrorCode::OutOfOrderSequence,
        ProduceError::Poisoned(_) => ErrorCode::PartitionPoisoned,
        ProduceError::Storage(StorageError::BatchTooLarge { .. }) => ErrorCode::BatchTooLarge,
        _ => ErrorCode::StorageError,
    }
}

/// The salted keys of a `SetUser`, checked.
fn credentials(set: &SetUser<'_>) -> Result<Credentials, AdminError> {
    let one = |hash: ScramHash, keys: &ringmq_protocol::access::ScramKeys<'_>| {
        ScramCredential::from_keys(
            hash,
            keys.salt,
            keys.iterations,
            keys.stored_key,
            keys.server_key,
        )
        .map_err(|error| AdminError::Users(UsersError::Credential(error)))
    };
    Ok(Credentials {
        scram_sha_256: one(ScramHash::Sha256, &set.sha256)?,
        scram_sha_512: one(ScramHash::Sha512, &set.sha512)?,
    })
}

/// A rule's operation on the wire.
fn wire_operation(operation: Operation) -> RuleOperation {
    match operation {
        Operation::All => RuleOperation::All,
        Operation::Produce => RuleOperation::Produce,
        Operation::Consume => RuleOperation::Consume,
        Operation::Read => RuleOperation::Read,
        Operation::Create => RuleOperation::Create,
        Operation::Delete => RuleOperation::Delete,
        Operation::Describe => RuleOperation::Describe,
        Operation::Alter => RuleOperation::Alter,
        Operation::IdempotentWrite => RuleOperation::IdempotentWrite,
    }
}

/// A wire operation as a rule's.
fn rule_operation(operation: RuleOperation) -> Operation {
    match operation {
        RuleOperation::All => Operation::All,
        RuleOperation::Produce => Operation::Produce,
        RuleOperation::Consume => Operation::Consume,
        RuleOperation::Read => Operation::Read,
        RuleOperation::Create => Operation::Create,
        RuleOperation::Delete => Operation::Delete,
        RuleOperation::Describe => Operation::Describe,
        RuleOperation::Alter => Operation::Alter,
        RuleOperation::IdempotentWrite => Operation::IdempotentWrite,
    }
}
