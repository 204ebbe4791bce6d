//! Request and response bodies.
//!
//! Every body is a sequence of fixed-width little-endian fields; strings carry a `u16` byte length
//! in front (`str16`), byte strings a `u32` length (`bytes32`), arrays a `u32` count. Decoding is
//! in place: strings and batches are borrowed from the frame body. `protocol/README.md` lists every
//! body field by field.

use crate::access::{
    QuotaEntry, QuotaList, QuotaTarget, RuleEntry, RuleList, SetUser, UserList, UserName,
};
use crate::code::ErrorCode;
use crate::error::{DecodeError, EncodeError};
use crate::frame::{write_frame, FrameHead, Opcode};
use crate::group::{
    CommitOffsets, CommittedOffsets, GroupAssignment, GroupDescription, GroupList, GroupName,
    GroupTopic, Heartbeat, JoinGroup, LeaveGroup, ProducerIdentity,
};
use crate::limits::{
    ERROR_MESSAGE_SIZE_MAX, FRAME_HEADER_SIZE, PARTITION_COUNT_MAX, PEER_NAME_SIZE_MAX,
    TOPIC_COUNT_MAX, TOPIC_NAME_SIZE_MAX,
};
use crate::wire::{len_u32, put_str16, put_u16, put_u32, put_u64, put_u8, Reader};

/// How durable a produced batch must be before the broker acknowledges it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Acks {
    /// No acknowledgement: the broker sends no reply on success (errors are still reported).
    None,
    /// Acknowledged once the batch is in the shared mapping of the log file: it survives a broker
    /// crash (`kill -9` included) but not an operating-system crash or power loss.
    #[default]
    Written,
    /// Acknowledged after `msync` of the written range returned: it survives an OS crash.
    Synced,
}

impl Acks {
    /// The wire value.
    #[must_use]
    pub fn as_u8(self) -> u8 {
        match self {
            Acks::None => 0,
            Acks::Written => 1,
            Acks::Synced => 2,
        }
    }

    /// The level for a wire value.
    #[must_use]
    pub fn from_u8(value: u8) -> Option<Self> {
        match value {
            0 => Some(Acks::None),
            1 => Some(Acks::Written),
            2 => Some(Acks::Synced),
            _ => None,
        }
    }

    /// The name used on the command line (`none`, `written`, `synced`).
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Acks::None => "none",
            Acks::Written => "written",
            Acks::Synced => "synced",
        }
    }
}

/// A decoded request body.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Request<'a> {
    /// See [`Handshake`].
    Handshake(Handshake<'a>),
    /// Empty body.
    Ping,
    /// See [`CreateTopic`].
    CreateTopic(CreateTopic<'a>),
    /// The topic name.
    DeleteTopic(TopicName<'a>),
    /// Empty body.
    ListTopics,
    /// The topic name.
    DescribeTopic(TopicName<'a>),
    /// See [`Produce`].
    Produce(Produce<'a>),
    /// See [`Fetch`].
    Fetch(Fetch<'a>),
    /// Empty body.
    Stats,
    /// See [`ProducerIdentity`].
    InitProducer(ProducerIdentity),
    /// See [`JoinGroup`].
    JoinGroup(JoinGroup<'a>),
    /// See [`Heartbeat`].
    Heartbeat(Heartbeat<'a>),
    /// See [`LeaveGroup`].
    LeaveGroup(LeaveGroup<'a>),
    /// See [`CommitOffsets`].
    CommitOffsets(CommitOffsets<'a>),
    /// The group and topic whose committed offsets are wanted.
    FetchCommitted(GroupTopic<'a>),
    /// Empty body.
    ListGroups,
    /// The group to describe.
    DescribeGroup(GroupName<'a>),
    /// See [`Authenticate`].
    Authenticate(Authenticate<'a>),
    /// Empty body.
    ListUsers,
    /// See [`SetUser`].
    SetUser(SetUser<'a>),
    /// The user to remove.
    RemoveUser(UserName<'a>),
    /// Empty body.
    ListRules,
    /// The rule to add.
    AddRule(RuleEntry<'a>),
    /// The rule to remove.
    RemoveRule(RuleEntry<'a>),
    /// Empty body.
    ListQuotas,
    /// The quota to set.
    SetQuota(QuotaEntry<'a>),
    /// The quota to put back to the default.
    RemoveQuota(QuotaTarget<'a>),
    /// See [`LocalOpen`].
    LocalOpen(LocalOpen<'a>),
    /// Wait until the partition holds data at the offset (or `max_wait_ms` passed); a fetch's
    /// body, answered with a [`LocalWaitReply`] and no batches.
    LocalWait(Fetch<'a>),
}

impl<'a> Request<'a> {
    /// Decodes the body of a request with the given opcode.
    ///
    /// # Errors
    ///
    /// A [`DecodeError`] for a malformed body. An opcode this build does not serve is reported as
    /// `Ok(None)` so the caller can answer [`ErrorCode::UnsupportedRequest`].
    pub fn decode(opcode: Opcode, body: &'a [u8]) -> Result<Option<Self>, DecodeError> {
        let request = match opcode {
            Opcode::Handshake => Request::Handshake(Handshake::decode(body)?),
            Opcode::Ping => {
                Reader::new(body, "ping request").finish()?;
                Request::Ping
            }
            Opcode::CreateTopic => Request::CreateTopic(CreateTopic::decode(body)?),
            Opcode::DeleteTopic => {
                Request::DeleteTopic(TopicName::decode(body, "delete topic request")?)
            }
            Opcode::ListTopics => {
                Reader::new(body, "list topics request").finish()?;
                Request::ListTopics
            }
            Opcode::DescribeTopic => {
                Request::DescribeTopic(TopicName::decode(body, "describe topic request")?)
            }
            Opcode::Produce => Request::Produce(Produce::decode(body)?),
            Opcode::Fetch => Request::Fetch(Fetch::decode(body)?),
            Opcode::Stats => {
                Reader::new(body, "stats request").finish()?;
                Request::Stats
            }
            Opcode::InitProducer => {
                Request::InitProducer(ProducerIdentity::decode(body, "init producer request")?)
            }
            Opcode::JoinGroup => Request::JoinGroup(JoinGroup::decode(body)?),
            Opcode::Heartbeat => Request::Heartbeat(Heartbeat::decode(body)?),
            Opcode::LeaveGroup => Request::LeaveGroup(LeaveGroup::decode(body)?),
            Opcode::CommitOffsets => Request::CommitOffsets(CommitOffsets::decode(body)?),
            Opcode::FetchCommitted => {
                Request::FetchCommitted(GroupTopic::decode(body, "fetch committed request")?)
            }
            Opcode::ListGroups => {
                Reader::new(body, "list groups request").finish()?;
                Request::ListGroups
            }
            Opcode::DescribeGroup => {
                Request::DescribeGroup(GroupName::decode(body, "describe group request")?)
            }
            Opcode::Authenticate => Request::Authenticate(Authenticate::decode(body)?),
            Opcode::ListUsers => {
                Reader::new(body, "list users request").finish()?;
                Request::ListUsers
            }
            Opcode::SetUser => Request::SetUser(SetUser::decode(body)?),
            Opcode::RemoveUser => Request::RemoveUser(UserName::decode(body)?),
            Opcode::ListRules => {
                Reader::new(body, "list rules request").finish()?;
                Request::ListRules
            }
            Opcode::AddRule => Request::AddRule(RuleEntry::decode(body)?),
            Opcode::RemoveRule => Request::RemoveRule(RuleEntry::decode(body)?),
            Opcode::ListQuotas => {
                Reader::new(body, "list quotas request").finish()?;
                Request::ListQuotas
            }
            Opcode::SetQuota => Request::SetQuota(QuotaEntry::decode(body)?),
            Opcode::RemoveQuota => Request::RemoveQuota(QuotaTarget::decode(body)?),
            Opcode::LocalOpen => Request::LocalOpen(LocalOpen::decode(body)?),
            Opcode::LocalWait => Request::LocalWait(Fetch::decode(body)?),
        };
        Ok(Some(request))
    }

    /// The opcode of this request.
    #[must_use]
    pub fn opcode(&self) -> Opcode {
        match self {
            Request::Handshake(_) => Opcode::Handshake,
            Request::Ping => Opcode::Ping,
            Request::CreateTopic(_) => Opcode::CreateTopic,
            Request::DeleteTopic(_) => Opcode::DeleteTopic,
            Request::ListTopics => Opcode::ListTopics,
            Request::DescribeTopic(_) => Opcode::DescribeTopic,
            Request::Produce(_) => Opcode::Produce,
            Request::Fetch(_) => Opcode::Fetch,
            Request::Stats => Opcode::Stats,
            Request::InitProducer(_) => Opcode::InitProducer,
            Request::JoinGroup(_) => Opcode::JoinGroup,
            Request::Heartbeat(_) => Opcode::Heartbeat,
            Request::LeaveGroup(_) => Opcode::LeaveGroup,
            Request::CommitOffsets(_) => Opcode::CommitOffsets,
            Request::FetchCommitted(_) => Opcode::FetchCommitted,
            Request::ListGroups => Opcode::ListGroups,
            Request::DescribeGroup(_) => Opcode::DescribeGroup,
            Request::Authenticate(_) => Opcode::Authenticate,
            Request::ListUsers => Opcode::ListUsers,
            Request::SetUser(_) => Opcode::SetUser,
            Request::RemoveUser(_) => Opcode::RemoveUser,
            Request::ListRules => Opcode::ListRules,
            Request::AddRule(_) => Opcode::AddRule,
            Request::RemoveRule(_) => Opcode::RemoveRule,
            Request::ListQuotas => Opcode::ListQuotas,
            Request::SetQuota(_) => Opcode::SetQuota,
            Request::RemoveQuota(_) => Opcode::RemoveQuota,
            Request::LocalOpen(_) => Opcode::LocalOpen,
            Request::LocalWait(_) => Opcode::LocalWait,
        }
    }

    /// Encodes the body.
    ///
    /// # Errors
    ///
    /// [`EncodeError`] if a field breaks its limit.
    pub fn encode(&self, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        match self {
            Request::Handshake(handshake) => handshake.encode(out),
            Request::Ping
            | Request::ListTopics
            | Request::Stats
            | Request::ListGroups
            | Request::ListUsers
            | Request::ListRules
            | Request::ListQuotas => Ok(()),
            Request::CreateTopic(create) => create.encode(out),
            Request::DeleteTopic(name) | Request::DescribeTopic(name) => name.encode(out),
            Request::Produce(produce) => produce.encode(out),
            Request::Fetch(fetch) | Request::LocalWait(fetch) => fetch.encode(out),
            Request::LocalOpen(open) => open.encode(out),
            Request::InitProducer(identity) => {
                identity.encode(out);
                Ok(())
            }
            Request::JoinGroup(join) => join.encode(out),
            Request::Heartbeat(heartbeat) => heartbeat.encode(out),
            Request::LeaveGroup(leave) => leave.encode(out),
            Request::CommitOffsets(commit) => commit.encode(out),
            Request::FetchCommitted(names) => names.encode(out),
            Request::DescribeGroup(name) => name.encode(out),
            Request::Authenticate(authenticate) => authenticate.encode(out),
            Request::SetUser(set) => set.encode(out),
            Request::RemoveUser(name) => name.encode(out),
            Request::AddRule(rule) | Request::RemoveRule(rule) => rule.encode(out),
            Request::SetQuota(entry) => entry.encode(out),
            Request::RemoveQuota(target) => target.encode(out),
        }
    }

    /// Encodes a whole request frame (header and body) into `out`.
    ///
    /// # Errors
    ///
    /// [`EncodeError`] if a field breaks its limit; `out` is left as it was.
    pub fn encode_frame(&self, correlation_id: u32, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        write_frame(out, FrameHead::request(self.opcode(), correlation_id, 0), |body| {
            self.encode(body)
        })
    }
}

/// A decoded response body, for callers that dispatch on the opcode (the broker's own tests, the
/// fuzzer). Clients usually decode the reply type they expect directly.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Response<'a> {
    /// The request failed; see [`ErrorBody`].
    Error(ErrorCode, ErrorBody<'a>),
    /// See [`HandshakeReply`].
    Handshake(HandshakeReply<'a>),
    /// Success without a body (ping, create, delete).
    Empty,
    /// See [`TopicList`].
    TopicList(TopicList<'a>),
    /// See [`TopicDescription`].
    TopicDescription(TopicDescription<'a>),
    /// See [`ProduceReply`].
    Produce(ProduceReply),
    /// See [`FetchReply`].
    Fetch(FetchReply<'a>),
    /// See [`BrokerStats`].
    Stats(BrokerStats),
    /// See [`ProducerIdentity`].
    ProducerIdentity(ProducerIdentity),
    /// See [`GroupAssignment`] (join and heartbeat).
    GroupAssignment(GroupAssignment<'a>),
    /// See [`CommittedOffsets`].
    CommittedOffsets(CommittedOffsets<'a>),
    /// See [`GroupList`].
    GroupList(GroupList<'a>),
    /// See [`GroupDescription`].
    GroupDescription(GroupDescription<'a>),
    /// See [`AuthenticateReply`].
    Authenticate(AuthenticateReply<'a>),
    /// See [`UserList`].
    UserList(UserList<'a>),
    /// See [`RuleList`].
    RuleList(RuleList<'a>),
    /// See [`QuotaList`].
    QuotaList(QuotaList<'a>),
    /// See [`LocalOpenReply`].
    LocalOpen(LocalOpenReply),
    /// See [`LocalWaitReply`].
    LocalWait(LocalWaitReply),
}

impl<'a> Response<'a> {
    /// Decodes a response body given its frame header.
    ///
    /// # Errors
    ///
    /// A [`DecodeError`] for a malformed body or unknown status code.
    pub fn decode(head: &FrameHead, body: &'a [u8]) -> Result<Self, DecodeError> {
        let status = ErrorCode::from_u16(head.status).ok_or(DecodeError::InvalidValue {
            context: "response",
            field: "status",
            position: 6,
            value: u64::from(head.status),
            reason: "unknown error code",
        })?;
        if status != ErrorCode::None {
            return Ok(Response::Error(status, ErrorBody::decode(body)?));
        }
        let empty = |context| Reader::new(body, context).finish().map(|()| Response::Empty);
        match Opcode::from_u8(head.opcode) {
            Some(Opcode::Handshake) => Ok(Response::Handshake(HandshakeReply::decode(body)?)),
            Some(Opcode::ListTopics) => Ok(Response::TopicList(TopicList::decode(body)?)),
            Some(Opcode::DescribeTopic) => {
                Ok(Response::TopicDescription(TopicDescription::decode(body)?))
            }
            Some(Opcode::Produce) => Ok(Response::Produce(ProduceReply::decode(body)?)),
            Some(Opcode::Fetch) => Ok(Response::Fetch(FetchReply::decode(body)?)),
            Some(Opcode::Ping) => empty("ping response"),
            Some(Opcode::CreateTopic) => empty("create topic response"),
            Some(Opcode::DeleteTopic) => empty("delete topic response"),
            Some(Opcode::Stats) => Ok(Response::Stats(BrokerStats::decode(body)?)),
            Some(Opcode::InitProducer) => Ok(Response::ProducerIdentity(ProducerIdentity::decode(
                body,
                "init producer response",
            )?)),
            Some(Opcode::JoinGroup | Opcode::Heartbeat) => {
                Ok(Response::GroupAssignment(GroupAssignment::decode(body)?))
            }
            Some(Opcode::LeaveGroup) => empty("leave group response"),
            Some(Opcode::CommitOffsets) => empty("commit offsets response"),
            Some(Opcode::FetchCommitted) => {
                Ok(Response::CommittedOffsets(CommittedOffsets::decode(body)?))
            }
            Some(Opcode::ListGroups) => Ok(Response::GroupList(GroupList::decode(body)?)),
            Some(Opcode::DescribeGroup) => {
                Ok(Response::GroupDescription(GroupDescription::decode(body)?))
            }
            Some(Opcode::Authenticate) => {
                Ok(Response::Authenticate(AuthenticateReply::decode(body)?))
            }
            Some(Opcode::ListUsers) => Ok(Response::UserList(UserList::decode(body)?)),
            Some(Opcode::SetUser) => empty("set user response"),
            Some(Opcode::RemoveUser) => empty("remove user response"),
            Some(Opcode::ListRules) => Ok(Response::RuleList(RuleList::decode(body)?)),
            Some(Opcode::AddRule) => empty("add rule response"),
            Some(Opcode::RemoveRule) => empty("remove rule response"),
            Some(Opcode::ListQuotas) => Ok(Response::QuotaList(QuotaList::decode(body)?)),
            Some(Opcode::SetQuota) => empty("set quota response"),
            Some(Opcode::RemoveQuota) => empty("remove quota response"),
            Some(Opcode::LocalOpen) => Ok(Response::LocalOpen(LocalOpenReply::decode(body)?)),
            Some(Opcode::LocalWait) => Ok(Response::LocalWait(LocalWaitReply::decode(body)?)),
            None => Err(DecodeError::InvalidValue {
                context: "response",
                field: "opcode",
                position: 3,
                value: u64::from(head.opcode),
                reason: "no response body is defined for this opcode",
            }),
        }
    }
}

/// The body of every response whose status is not [`ErrorCode::None`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErrorBody<'a> {
    /// What went wrong, for people: a lower-case sentence naming the bad value.
    pub message: &'a str,
    /// For errors about a partition (such as [`ErrorCode::OffsetOutOfRange`]): its earliest
    /// retained offset; otherwise 0.
    pub earliest_offset: u64,
    /// For errors about a partition: the offset the next record will get; otherwise 0.
    pub next_offset: u64,
}

impl<'a> ErrorBody<'a> {
    /// Decodes an error body.
    ///
    /// # Errors
    ///
    /// A [`DecodeError`] for a malformed body.
    pub fn decode(body: &'a [u8]) -> Result<Self, DecodeError> {
        let mut reader = Reader::new(body, "error body");
        let message = reader.str16("message", ERROR_MESSAGE_SIZE_MAX)?;
        let earliest_offset = reader.u64("earliest_offset")?;
        let next_offset = reader.u64("next_offset")?;
        reader.finish()?;
        Ok(Self { message, earliest_offset, next_offset })
    }

    /// Encodes an error body; a message longer than the limit is cut at a character boundary.
    pub fn encode(&self, out: &mut Vec<u8>) {
        let mut end = self.message.len().min(ERROR_MESSAGE_SIZE_MAX);
        while !self.message.is_char_boundary(end) {
            end = end.saturating_sub(1);
        }
        let message = self.message.get(..end).unwrap_or_default();
        // Cannot fail: the message was cut to the limit.
        let _ = put_str16(out, "message", message, ERROR_MESSAGE_SIZE_MAX);
        put_u64(out, self.earliest_offset);
        put_u64(out, self.next_offset);
    }

    /// Encodes a whole error response frame into `out`.
    pub fn encode_frame(
        &self,
        opcode: u8,
        status: ErrorCode,
        correlation_id: u32,
        out: &mut Vec<u8>,
    ) {
        let head = FrameHead::response(opcode, status, correlation_id, 0);
        let _ = write_frame::<EncodeError>(out, head, |body| {
            self.encode(body);
            Ok(())
        });
    }
}

/// Longest SASL mechanism name, bytes.
pub const MECHANISM_SIZE_MAX: usize = 32;
/// Longest SASL message in an `Authenticate` request or reply, bytes.
pub const SASL_MESSAGE_SIZE_MAX: usize = 4096;

/// Authenticate request: one SASL message of a login, and the mechanism it belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Authenticate<'a> {
    /// `SCRAM-SHA-256`, `SCRAM-SHA-512` or `PLAIN`.
    pub mechanism: &'a str,
    /// The client's message (SCRAM's client-first, then client-final; PLAIN's one message).
    pub message: &'a [u8],
}

impl<'a> Authenticate<'a> {
    fn decode(body: &'a [u8]) -> Result<Self, DecodeError> {
        let mut reader = Reader::new(body, "authenticate request");
        let mechanism = reader.str16("mechanism", MECHANISM_SIZE_MAX)?;
        let message = sasl_message(&mut reader)?;
        reader.finish()?;
        Ok(Self { mechanism, message })
    }

    fn encode(&self, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        put_str16(out, "mechanism", self.mechanism, MECHANISM_SIZE_MAX)?;
        put_sasl_message(out, self.message)
    }
}

/// Authenticate reply: the broker's SASL message, and whether the login is done.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthenticateReply<'a> {
    /// The client is authenticated (the message is the mechanism's last; SCRAM's server-final,
    /// which the client checks); otherwise the login goes on with the client's next message.
    pub done: bool,
    /// The broker's message.
    pub message: &'a [u8],
}

impl<'a> AuthenticateReply<'a> {
    /// Decodes the reply body.
    ///
    /// # Errors
    ///
    /// A [`DecodeError`] for a malformed body.
    pub fn decode(body: &'a [u8]) -> Result<Self, DecodeError> {
        let mut reader = Reader::new(body, "authenticate response");
        let done = match reader.u8("done")? {
            0 => false,
            1 => true,
            value => {
                return Err(DecodeError::InvalidValue {
                    context: "authenticate response",
                    field: "done",
                    position: 0,
                    value: u64::from(value),
                    reason: "neither 0 nor 1",
                })
            }
        };
        let message = sasl_message(&mut reader)?;
        reader.finish()?;
        Ok(Self { done, message })
    }

    /// Encodes the reply body.
    ///
    /// # Errors
    ///
    /// [`EncodeError`] for a message over [`SASL_MESSAGE_SIZE_MAX`].
    pub fn encode(&self, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        put_u8(out, u8::from(self.done));
        put_sasl_message(out, self.message)
    }
}

fn sasl_message<'a>(reader: &mut Reader<'a>) -> Result<&'a [u8], DecodeError> {
    let size = usize::from(reader.u16("message_size")?);
    if size > SASL_MESSAGE_SIZE_MAX {
        return Err(reader.too_large("message", size, SASL_MESSAGE_SIZE_MAX));
    }
    reader.take(size, "message")
}

fn put_sasl_message(out: &mut Vec<u8>, message: &[u8]) -> Result<(), EncodeError> {
    let too_long = || EncodeError::TooLong {
        field: "message",
        size: message.len(),
        max: SASL_MESSAGE_SIZE_MAX,
    };
    if message.len() > SASL_MESSAGE_SIZE_MAX {
        return Err(too_long());
    }
    put_u16(out, u16::try_from(message.len()).map_err(|_| too_long())?);
    out.extend_from_slice(message);
    Ok(())
}

/// Handshake request: the range of protocol versions the client speaks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Handshake<'a> {
    /// Lowest version the client speaks.
    pub version_min: u8,
    /// Highest version the client speaks.
    pub version_max: u8,
    /// Free-form client name for the broker's logs.
    pub client_name: &'a str,
}

impl<'a> Handshake<'a> {
    fn decode(body: &'a [u8]) -> Result<Self, DecodeError> {
        let mut reader = Reader::new(body, "handshake request");
        let version_min = reader.u8("version_min")?;
        let version_max = reader.u8("version_max")?;
        let client_name = reader.str16("client_name", PEER_NAME_SIZE_MAX)?;
        reader.finish()?;
        Ok(Self { version_min, version_max, client_name })
    }

    fn encode(&self, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        put_u8(out, self.version_min);
        put_u8(out, self.version_max);
        put_str16(out, "client_name", self.client_name, PEER_NAME_SIZE_MAX)
    }
}

/// Handshake reply: the version chosen and the broker's limits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HandshakeReply<'a> {
    /// The protocol version both sides will speak.
    pub version: u8,
    /// Free-form broker name and version.
    pub broker_name: &'a str,
    /// Largest frame body the broker accepts.
    pub frame_size_max: u32,
    /// Largest record batch the broker accepts (a topic may accept less; see its description).
    pub batch_size_max: u32,
}

impl<'a> HandshakeReply<'a> {
    /// Decodes the reply body.
    ///
    /// # Errors
    ///
    /// A [`DecodeError`] for a malformed body.
    pub fn decode(body: &'a [u8]) -> Result<Self, DecodeError> {
        let mut reader = Reader::new(body, "handshake response");
        let version = reader.u8("version")?;
        let broker_name = reader.str16("broker_name", PEER_NAME_SIZE_MAX)?;
        let frame_size_max = reader.u32("frame_size_max")?;
        let batch_size_max = reader.u32("batch_size_max")?;
        reader.finish()?;
        Ok(Self { version, broker_name, frame_size_max, batch_size_max })
    }

    /// Encodes the reply body.
    ///
    /// # Errors
    ///
    /// [`EncodeError`] if the broker name is too long.
    pub fn encode(&self, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        put_u8(out, self.version);
        put_str16(out, "broker_name", self.broker_name, PEER_NAME_SIZE_MAX)?;
        put_u32(out, self.frame_size_max);
        put_u32(out, self.batch_size_max);
        Ok(())
    }
}

/// A request naming one topic (delete, describe).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicName<'a> {
    /// The topic.
    pub name: &'a str,
}

impl<'a> TopicName<'a> {
    fn decode(body: &'a [u8], context: &'static str) -> Result<Self, DecodeError> {
        let mut reader = Reader::new(body, context);
        let name = reader.str16("name", TOPIC_NAME_SIZE_MAX)?;
        reader.finish()?;
        Ok(Self { name })
    }

    fn encode(&self, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        put_str16(out, "name", self.name, TOPIC_NAME_SIZE_MAX)
    }
}

/// Create a topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreateTopic<'a> {
    /// The topic name; see [`crate::topic::validate_topic_name`].
    pub name: &'a str,
    /// Number of partitions, 1 ..= [`PARTITION_COUNT_MAX`]; 0 for the broker's default.
    pub partition_count: u32,
    /// Ring capacity per partition in bytes; 0 for the broker's default.
    pub capacity: u64,
    /// Chunk size (the unit of reclamation) in bytes; 0 for the broker's choice.
    pub chunk_size: u32,
}

impl<'a> CreateTopic<'a> {
    fn decode(body: &'a [u8]) -> Result<Self, DecodeError> {
        let mut reader = Reader::new(body, "create topic request");
        let name = reader.str16("name", TOPIC_NAME_SIZE_MAX)?;
        let partition_count = reader.u32("partition_count")?;
        if partition_count > PARTITION_COUNT_MAX {
            return Err(reader.invalid(
                "partition_count",
                u64::from(partition_count),
                "a topic has 1 to 1024 partitions (0 for the broker's default)",
            ));
        }
        let capacity = reader.u64("capacity")?;
        let chunk_size = reader.u32("chunk_size")?;
        reader.finish()?;
        Ok(Self { name, partition_count, capacity, chunk_size })
    }

    fn encode(&self, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        put_str16(out, "name", self.name, TOPIC_NAME_SIZE_MAX)?;
        put_u32(out, self.partition_count);
        put_u64(out, self.capacity);
        put_u32(out, self.chunk_size);
        Ok(())
    }
}

/// Reply to `ListTopics`: every topic's name and partition count.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicList<'a> {
    count: usize,
    entries: &'a [u8],
}

impl<'a> TopicList<'a> {
    /// Decodes the reply body (checking every entry).
    ///
    /// # Errors
    ///
    /// A [`DecodeError`] for a malformed body.
    pub fn decode(body: &'a [u8]) -> Result<Self, DecodeError> {
        let mut reader = Reader::new(body, "topic list");
        let count =
            reader.count32("topic_count", usize::try_from(TOPIC_COUNT_MAX).unwrap_or(0), 6)?;
        let entries = reader.rest();
        let mut check = Reader::new(entries, "topic list entry");
        for _ in 0..count {
            check.str16("name", TOPIC_NAME_SIZE_MAX)?;
            check.u32("partition_count")?;
        }
        check.finish()?;
        Ok(Self { count, entries })
    }

    /// Number of topics.
    #[must_use]
    pub fn len(&self) -> usize {
        self.count
    }

    /// Whether there are no topics.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// `(name, partition_count)` for each topic.
    pub fn iter(&self) -> impl Iterator<Item = (&'a str, u32)> + 'a {
        let mut reader = Reader::new(self.entries, "topic list entry");
        (0..self.count).map_while(move |_| {
            let name = reader.str16("name", TOPIC_NAME_SIZE_MAX).ok()?;
            let partition_count = reader.u32("partition_count").ok()?;
            Some((name, partition_count))
        })
    }

    /// Encodes a reply body from `(name, partition_count)` pairs.
    ///
    /// # Errors
    ///
    /// [`EncodeError`] if a name is too long or there are too many topics.
    pub fn encode<'n>(
        topics: impl ExactSizeIterator<Item = (&'n str, u32)>,
        out: &mut Vec<u8>,
    ) -> Result<(), EncodeError> {
        let max = usize::try_from(TOPIC_COUNT_MAX).unwrap_or(0);
        put_u32(out, len_u32("topics", topics.len(), max)?);
        for (name, partition_count) in topics {
            put_str16(out, "name", name, TOPIC_NAME_SIZE_MAX)?;
            put_u32(out, partition_count);
        }
        Ok(())
    }
}

/// One partition's state in a [`TopicDescription`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PartitionState {
    /// Partition index.
    pub partition: u32,
    /// Earliest offset still held.
    pub earliest_offset: u64,
    /// Offset the next record will get.
    pub next_offset: u64,
}

const PARTITION_STATE_SIZE: usize = 20;

/// Reply to `DescribeTopic`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicDescription<'a> {
    /// The topic name.
    pub name: &'a str,
    /// Ring capacity per partition, bytes.
    pub capacity: u64,
    /// Chunk size, bytes.
    pub chunk_size: u32,
    /// Largest batch a partition of this topic accepts, bytes.
    pub batch_size_max: u32,
    partition_count: usize,
    partitions: &'a [u8],
}

impl<'a> TopicDescription<'a> {
    /// Decodes the reply body.
    ///
    /// # Errors
    ///
    /// A [`DecodeError`] for a malformed body.
    pub fn decode(body: &'a [u8]) -> Result<Self, DecodeError> {
        let mut reader = Reader::new(body, "topic description");
        let name = reader.str16("name", TOPIC_NAME_SIZE_MAX)?;
        let capacity = reader.u64("capacity")?;
        let chunk_size = reader.u32("chunk_size")?;
        let batch_size_max = reader.u32("batch_size_max")?;
        let partition_count = reader.count32(
            "partition_count",
            usize::try_from(PARTITION_COUNT_MAX).unwrap_or(0),
            PARTITION_STATE_SIZE,
        )?;
        let size = partition_count.saturating_mul(PARTITION_STATE_SIZE);
        let partitions = reader.take(size, "partitions")?;
        reader.finish()?;
        Ok(Self { name, capacity, chunk_size, batch_size_max, partition_count, partitions })
    }

    /// Number of partitions.
    #[must_use]
    pub fn partition_count(&self) -> usize {
        self.partition_count
    }

    /// Each partition's offsets.
    pub fn partitions(&self) -> impl Iterator<Item = PartitionState> + 'a {
        self.partitions.chunks_exact(PARTITION_STATE_SIZE).filter_map(|entry| {
            let mut reader = Reader::new(entry, "partition state");
            Some(PartitionState {
                partition: reader.u32("partition").ok()?,
                earliest_offset: reader.u64("earliest_offset").ok()?,
                next_offset: reader.u64("next_offset").ok()?,
            })
        })
    }

    /// Encodes a reply body.
    ///
    /// # Errors
    ///
    /// [`EncodeError`] if the name is too long or there are too many partitions.
    pub fn encode(
        name: &str,
        capacity: u64,
        chunk_size: u32,
        batch_size_max: u32,
        partitions: impl ExactSizeIterator<Item = PartitionState>,
        out: &mut Vec<u8>,
    ) -> Result<(), EncodeError> {
        put_str16(out, "name", name, TOPIC_NAME_SIZE_MAX)?;
        put_u64(out, capacity);
        put_u32(out, chunk_size);
        put_u32(out, batch_size_max);
        let max = usize::try_from(PARTITION_COUNT_MAX).unwrap_or(0);
        put_u32(out, len_u32("partitions", partitions.len(), max)?);
        for state in partitions {
            put_u32(out, state.partition);
            put_u64(out, state.earliest_offset);
            put_u64(out, state.next_offset);
        }
        Ok(())
    }
}

/// Append one record batch to one partition.
///
/// The batch is the last field and runs to the end of the body, so a producer can send it from
/// its own buffer right after the fields before it (see [`Produce::encode_frame_head`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Produce<'a> {
    /// The topic.
    pub topic: &'a str,
    /// The partition.
    pub partition: u32,
    /// Durability required before the reply.
    pub acks: Acks,
    /// How long the broker may take before answering [`ErrorCode::Timeout`], ms.
    pub timeout_ms: u32,
    /// One record batch (unvalidated until the broker checks it).
    pub batch: &'a [u8],
}

impl<'a> Produce<'a> {
    fn decode(body: &'a [u8]) -> Result<Self, DecodeError> {
        let mut reader = Reader::new(body, "produce request");
        let topic = reader.str16("topic", TOPIC_NAME_SIZE_MAX)?;
        let partition = reader.u32("partition")?;
        let acks_value = reader.u8("acks")?;
        let acks = Acks::from_u8(acks_value).ok_or_else(|| {
            reader.invalid("acks", u64::from(acks_value), "0 (none), 1 (written) or 2 (synced)")
        })?;
        let timeout_ms = reader.u32("timeout_ms")?;
        let batch = reader.rest();
        Ok(Self { topic, partition, acks, timeout_ms, batch })
    }

    fn encode(&self, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        self.encode_fields(out)?;
        out.extend_from_slice(self.batch);
        Ok(())
    }

    fn encode_fields(&self, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        put_str16(out, "topic", self.topic, TOPIC_NAME_SIZE_MAX)?;
        put_u32(out, self.partition);
        put_u8(out, self.acks.as_u8());
        put_u32(out, self.timeout_ms);
        Ok(())
    }

    /// Encodes the frame header and every field except the batch into `out`; the caller sends
    /// `self.batch` right after (with a vectored write), so the batch is never copied.
    ///
    /// # Errors
    ///
    /// [`EncodeError`] if the topic name is too long or the frame too large.
    pub fn encode_frame_head(
        &self,
        correlation_id: u32,
        out: &mut Vec<u8>,
    ) -> Result<(), EncodeError> {
        let start = out.len();
        out.extend_from_slice(&[0; FRAME_HEADER_SIZE]);
        if let Err(error) = self.encode_fields(out) {
            out.truncate(start);
            return Err(error);
        }
        let fields = out.len().saturating_sub(start).saturating_sub(FRAME_HEADER_SIZE);
        let total = fields.saturating_add(self.batch.len());
        let max = usize::try_from(crate::limits::FRAME_BODY_SIZE_MAX).unwrap_or(usize::MAX);
        let body_size = match len_u32("frame body", total, max) {
            Ok(size) => size,
            Err(error) => {
                out.truncate(start);
                return Err(error);
            }
        };
        let head = FrameHead::request(Opcode::Produce, correlation_id, body_size).encode();
        if let Some(slot) = out.get_mut(start..start.saturating_add(FRAME_HEADER_SIZE)) {
            slot.copy_from_slice(&head);
        }
        Ok(())
    }
}

/// Reply to a produce request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProduceReply {
    /// Offset the broker gave the batch's first record.
    pub base_offset: u64,
}

impl ProduceReply {
    /// Decodes the reply body.
    ///
    /// # Errors
    ///
    /// A [`DecodeError`] for a malformed body.
    pub fn decode(body: &[u8]) -> Result<Self, DecodeError> {
        let mut reader = Reader::new(body, "produce response");
        let base_offset = reader.u64("base_offset")?;
        reader.finish()?;
        Ok(Self { base_offset })
    }

    /// Encodes the reply body.
    pub fn encode(&self, out: &mut Vec<u8>) {
        put_u64(out, self.base_offset);
    }
}

/// Read record batches from one partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fetch<'a> {
    /// The topic.
    pub topic: &'a str,
    /// The partition.
    pub partition: u32,
    /// First offset wanted. The reply starts with the batch holding it, so it may begin with
    /// records before it, which the consumer skips.
    pub offset: u64,
    /// Soft limit on the reply's batch bytes; at least one whole batch is always returned.
    pub max_bytes: u32,
    /// How long to wait for data when none is available at `offset`, ms (long polling).
    pub max_wait_ms: u32,
    /// Answer as soon as at least this many bytes of batches are available (or `max_wait_ms`
    /// has passed); 1 answers as soon as anything is. Larger values trade latency for fewer
    /// round trips.
    pub min_bytes: u32,
}

impl<'a> Fetch<'a> {
    fn decode(body: &'a [u8]) -> Result<Self, DecodeError> {
        let mut reader = Reader::new(body, "fetch request");
        let topic = reader.str16("topic", TOPIC_NAME_SIZE_MAX)?;
        let partition = reader.u32("partition")?;
        let offset = reader.u64("offset")?;
        let max_bytes = reader.u32("max_bytes")?;
        let max_wait_ms = reader.u32("max_wait_ms")?;
        let min_bytes = reader.u32("min_bytes")?;
        reader.finish()?;
        Ok(Self { topic, partition, offset, max_bytes, max_wait_ms, min_bytes })
    }

    fn encode(&self, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        put_str16(out, "topic", self.topic, TOPIC_NAME_SIZE_MAX)?;
        put_u32(out, self.partition);
        put_u64(out, self.offset);
        put_u32(out, self.max_bytes);
        put_u32(out, self.max_wait_ms);
        put_u32(out, self.min_bytes);
        Ok(())
    }
}

/// LocalOpen request: a same-host reader asks to read a partition in place from `offset`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalOpen<'a> {
    /// The topic.
    pub topic: &'a str,
    /// The partition.
    pub partition: u32,
    /// First offset wanted.
    pub offset: u64,
}

impl<'a> LocalOpen<'a> {
    fn decode(body: &'a [u8]) -> Result<Self, DecodeError> {
        let mut reader = Reader::new(body, "local open request");
        let topic = reader.str16("topic", TOPIC_NAME_SIZE_MAX)?;
        let partition = reader.u32("partition")?;
        let offset = reader.u64("offset")?;
        reader.finish()?;
        Ok(Self { topic, partition, offset })
    }

    fn encode(&self, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        put_str16(out, "topic", self.topic, TOPIC_NAME_SIZE_MAX)?;
        put_u32(out, self.partition);
        put_u64(out, self.offset);
        Ok(())
    }
}

/// Reply to a [`LocalOpen`]: where to start reading, and the partition's offsets. The frame comes
/// with two descriptors (`SCM_RIGHTS`, on the reply's first byte): the ring file, read-only, then
/// its cursor page ([`crate::local`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LocalOpenReply {
    /// Position of the batch holding the offset asked for (it may begin with records before it,
    /// which the reader skips).
    pub position: u64,
    /// Base offset of the batch at `position`.
    pub offset: u64,
    /// Index of that batch's entry in its chunk's table ([`crate::local::Cursor::entry`]).
    pub entry: u32,
    /// Earliest offset the partition holds.
    pub earliest_offset: u64,
    /// Offset the next record will get.
    pub next_offset: u64,
    /// Largest batch the partition holds, bytes.
    pub batch_size_max: u32,
}

impl LocalOpenReply {
    /// Decodes the reply body.
    ///
    /// # Errors
    ///
    /// A [`DecodeError`] for a malformed body.
    pub fn decode(body: &[u8]) -> Result<Self, DecodeError> {
        let mut reader = Reader::new(body, "local open response");
        let position = reader.u64("position")?;
        let offset = reader.u64("offset")?;
        let entry = reader.u32("entry")?;
        let earliest_offset = reader.u64("earliest_offset")?;
        let next_offset = reader.u64("next_offset")?;
        let batch_size_max = reader.u32("batch_size_max")?;
        reader.finish()?;
        Ok(Self { position, offset, entry, earliest_offset, next_offset, batch_size_max })
    }

    /// Encodes the reply body.
    pub fn encode(&self, out: &mut Vec<u8>) {
        put_u64(out, self.position);
        put_u64(out, self.offset);
        put_u32(out, self.entry);
        put_u64(out, self.earliest_offset);
        put_u64(out, self.next_offset);
        put_u32(out, self.batch_size_max);
    }
}

/// Reply to a `LocalWait`: the partition's offsets once it holds data at the offset asked for
/// (or when the wait ran out).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LocalWaitReply {
    /// Earliest offset the partition holds.
    pub earliest_offset: u64,
    /// Offset the next record will get.
    pub next_offset: u64,
}

impl LocalWaitReply {
    /// Decodes the reply body.
    ///
    /// # Errors
    ///
    /// A [`DecodeError`] for a malformed body.
    pub fn decode(body: &[u8]) -> Result<Self, DecodeError> {
        let mut reader = Reader::new(body, "local wait response");
        let earliest_offset = reader.u64("earliest_offset")?;
        let next_offset = reader.u64("next_offset")?;
        reader.finish()?;
        Ok(Self { earliest_offset, next_offset })
    }

    /// Encodes the reply body.
    pub fn encode(&self, out: &mut Vec<u8>) {
        put_u64(out, self.earliest_offset);
        put_u64(out, self.next_offset);
    }
}

/// Reply to a fetch: the partition's offsets, then whole record batches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchReply<'a> {
    /// Earliest offset the partition holds.
    pub earliest_offset: u64,
    /// Offset the next record will get (the end of the log).
    pub next_offset: u64,
    /// Zero or more whole batches, back to back; iterate with [`crate::Batches`].
    pub batches: &'a [u8],
}

/// Bytes of the fetch reply body before the batches.
pub const FETCH_REPLY_FIXED_SIZE: usize = 20;

impl<'a> FetchReply<'a> {
    /// Decodes the reply body.
    ///
    /// # Errors
    ///
    /// A [`DecodeError`] for a malformed body.
    pub fn decode(body: &'a [u8]) -> Result<Self, DecodeError> {
        let mut reader = Reader::new(body, "fetch response");
        let earliest_offset = reader.u64("earliest_offset")?;
        let next_offset = reader.u64("next_offset")?;
        let size = reader.len32("batches_size")?;
        let batches = reader.take(size, "batches")?;
        reader.finish()?;
        Ok(Self { earliest_offset, next_offset, batches })
    }

    /// Encodes the frame header and fixed fields of a fetch reply carrying `batches_size` bytes
    /// of batches; the caller sends the batches right after, straight from the log.
    ///
    /// # Errors
    ///
    /// [`EncodeError::TooLong`] if the batches exceed the frame size limit.
    pub fn encode_frame_head(
        correlation_id: u32,
        earliest_offset: u64,
        next_offset: u64,
        batches_size: usize,
        out: &mut Vec<u8>,
    ) -> Result<(), EncodeError> {
        let max = usize::try_from(crate::limits::FRAME_BODY_SIZE_MAX).unwrap_or(usize::MAX);
        let body_size =
            len_u32("fetch reply", batches_size.saturating_add(FETCH_REPLY_FIXED_SIZE), max)?;
        let batches_size = len_u32("batches", batches_size, max)?;
        let head =
            FrameHead::response(Opcode::Fetch.as_u8(), ErrorCode::None, correlation_id, body_size);
        out.extend_from_slice(&head.encode());
        put_u64(out, earliest_offset);
        put_u64(out, next_offset);
        put_u32(out, batches_size);
        Ok(())
    }
}

/// The broker's counters, answered to a `Stats` request. Counters only grow (until restart).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct BrokerStats {
    /// Records appended.
    pub records_in: u64,
    /// Batch bytes appended.
    pub bytes_in: u64,
    /// Batch bytes sent to consumers.
    pub bytes_out: u64,
    /// Records sent to consumers (counted per batch sent).
    pub records_out: u64,
    /// Bytes copied by the broker in user space on the produce path (socket buffer to log,
    /// plus any compaction of a read buffer).
    pub produce_copy_bytes: u64,
    /// Bytes copied by the broker in user space on the fetch path.
    pub fetch_copy_bytes: u64,
    /// Heap allocations made by the broker process since it started.
    pub allocations: u64,
    /// Produce requests served.
    pub produce_requests: u64,
    /// Fetch requests served.
    pub fetch_requests: u64,
    /// Peak resident set size, bytes (0 where unknown).
    pub peak_rss_bytes: u64,
    /// CPU time used by the broker process, microseconds (user + system).
    pub cpu_time_us: u64,
    /// Bytes of ring files that the topic creations under way will have allocated when they are
    /// done (a gauge: 0 when no creation is under way).
    pub creating_file_bytes: u64,
    /// Of `creating_file_bytes`, the bytes allocated and written out so far (a gauge).
    pub creating_written_bytes: u64,
}

const BROKER_STATS_FIELDS: usize = 13;

impl BrokerStats {
    /// Decodes the reply body.
    ///
    /// # Errors
    ///
    /// A [`DecodeError`] for a malformed body.
    pub fn decode(body: &[u8]) -> Result<Self, DecodeError> {
        let mut reader = Reader::new(body, "stats response");
        let count = reader.count32("field_count", 1024, 8)?;
        let mut values = [0u64; BROKER_STATS_FIELDS];
        for index in 0..count {
            let value = reader.u64("counter")?;
            // Counters a newer broker adds beyond the ones this build knows are skipped.
            if let Some(slot) = values.get_mut(index) {
                *slot = value;
            }
        }
        reader.finish()?;
        let [records_in, bytes_in, bytes_out, records_out, produce_copy_bytes, fetch_copy_bytes, allocations, produce_requests, fetch_requests, peak_rss_bytes, cpu_time_us, creating_file_bytes, creating_written_bytes] =
            values;
        Ok(Self {
            records_in,
            bytes_in,
            bytes_out,
            records_out,
            produce_copy_bytes,
            fetch_copy_bytes,
            allocations,
            produce_requests,
            fetch_requests,
            peak_rss_bytes,
            cpu_time_us,
            creating_file_bytes,
            creating_written_bytes,
        })
    }

    /// Encodes the reply body: a count, then each counter as a `u64`, in field order.
    pub fn encode(&self, out: &mut Vec<u8>) {
        let values = [
            self.records_in,
            self.bytes_in,
            self.bytes_out,
            self.records_out,
            self.produce_copy_bytes,
            self.fetch_copy_bytes,
            self.allocations,
            self.produce_requests,
            self.fetch_requests,
            self.peak_rss_bytes,
            self.cpu_time_us,
            self.creating_file_bytes,
            self.creating_written_bytes,
        ];
        put_u32(out, u32::try_from(values.len()).unwrap_or(0));
        for value in values {
            put_u64(out, value);
        }
    }
}

/// Encodes a whole success response frame whose body `body` writes.
///
/// # Errors
///
/// The body encoder's error.
pub fn encode_response_frame(
    opcode: Opcode,
    correlation_id: u32,
    out: &mut Vec<u8>,
    body: impl FnOnce(&mut Vec<u8>) -> Result<(), EncodeError>,
) -> Result<(), EncodeError> {
    write_frame(out, FrameHead::response(opcode.as_u8(), ErrorCode::None, correlation_id, 0), body)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn round_trip(request: &Request<'_>) {
        let mut out = Vec::new();
        request.encode_frame(77, &mut out).unwrap();
        let head = FrameHead::decode(&out, u32::MAX).unwrap();
        assert_eq!(head.correlation_id, 77);
        let body = &out[FRAME_HEADER_SIZE..];
        assert_eq!(head.body_len(), body.len());
        let decoded =
            Request::decode(Opcode::from_u8(head.opcode).unwrap(), body).unwrap().unwrap();
        assert_eq!(&decoded, request);
    }

    #[test]
    fn requests_round_trip() {
        round_trip(&Request::Handshake(Handshake {
            version_min: 1,
            version_max: 3,
            client_name: "cli",
        }));
        round_trip(&Request::Ping);
        round_trip(&Request::ListTopics);
        round_trip(&Request::Stats);
        round_trip(&Request::CreateTopic(CreateTopic {
            name: "orders",
            partition_count: 6,
            capacity: 1 << 30,
            chunk_size: 0,
        }));
        round_trip(&Request::DeleteTopic(TopicName { name: "orders" }));
        round_trip(&Request::DescribeTopic(TopicName { name: "orders" }));
        round_trip(&Request::Produce(Produce {
            topic: "t",
            partition: 3,
            acks: Acks::Synced,
            timeout_ms: 5000,
            batch: b"not validated here",
        }));
        round_trip(&Request::Fetch(Fetch {
            topic: "t",
            partition: 0,
            offset: u64::MAX,
            max_bytes: 1 << 20,
            max_wait_ms: 500,
            min_bytes: 1,
        }));
    }

    #[test]
    fn produce_frame_head_plus_batch_equals_the_whole_frame() {
        let produce = Produce {
            topic: "orders",
            partition: 1,
            acks: Acks::Written,
            timeout_ms: 10,
            batch: b"0123456789",
        };
        let mut whole = Vec::new();
        Request::Produce(produce.clone()).encode_frame(5, &mut whole).unwrap();
        let mut head = Vec::new();
        produce.encode_frame_head(5, &mut head).unwrap();
        head.extend_from_slice(produce.batch);
        assert_eq!(head, whole);
    }

    #[test]
    fn responses_round_trip() {
        let mut out = Vec::new();
        TopicList::encode([("a", 1), ("bb", 7)].into_iter(), &mut out).unwrap();
        let list = TopicList::decode(&out).unwrap();
        assert_eq!(list.iter().collect::<Vec<_>>(), [("a", 1), ("bb", 7)]);

        let mut out = Vec::new();
        let states = [
            PartitionState { partition: 0, earliest_offset: 5, next_offset: 9 },
            PartitionState { partition: 1, earliest_offset: 0, next_offset: 0 },
        ];
        TopicDescription::encode("t", 1 << 20, 1 << 16, 1 << 16, states.into_iter(), &mut out)
            .unwrap();
        let description = TopicDescription::decode(&out).unwrap();
        assert_eq!(description.partitions().collect::<Vec<_>>(), states);
        assert_eq!(description.chunk_size, 1 << 16);

        let mut out = Vec::new();
        FetchReply::encode_frame_head(9, 1, 2, 3, &mut out).unwrap();
        out.extend_from_slice(b"xyz");
        let head = FrameHead::decode(&out, u32::MAX).unwrap();
        let reply = FetchReply::decode(&out[FRAME_HEADER_SIZE..]).unwrap();
        assert_eq!((reply.earliest_offset, reply.next_offset, reply.batches), (1, 2, &b"xyz"[..]));
        assert!(matches!(
            Response::decode(&head, &out[FRAME_HEADER_SIZE..]).unwrap(),
            Response::Fetch(_)
        ));

        let mut out = Vec::new();
        ErrorBody { message: "topic \"x\" does not exist", earliest_offset: 0, next_offset: 0 }
            .encode_frame(Opcode::Fetch.as_u8(), ErrorCode::UnknownTopic, 4, &mut out);
        let head = FrameHead::decode(&out, u32::MAX).unwrap();
        match Response::decode(&head, &out[FRAME_HEADER_SIZE..]).unwrap() {
            Response::Error(ErrorCode::UnknownTopic, body) => {
                assert!(body.message.contains("\"x\""))
            }
            other => panic!("unexpected {other:?}"),
        }

        let stats = BrokerStats { records_in: 1, cpu_time_us: 11, ..BrokerStats::default() };
        let mut out = Vec::new();
        stats.encode(&mut out);
        assert_eq!(BrokerStats::decode(&out).unwrap(), stats);
    }

    #[test]
    fn bad_values_are_named() {
        let mut out = Vec::new();
        CreateTopic { name: "t", partition_count: 5000, capacity: 0, chunk_size: 0 }
            .encode(&mut out)
            .unwrap();
        let error = Request::decode(Opcode::CreateTopic, &out).unwrap_err();
        assert!(error.to_string().contains("partition_count"), "{error}");

        let mut out = Vec::new();
        Produce { topic: "t", partition: 0, acks: Acks::None, timeout_ms: 0, batch: &[] }
            .encode(&mut out)
            .unwrap();
        let acks_at = out.len() - 5;
        out[acks_at] = 9;
        let error = Request::decode(Opcode::Produce, &out).unwrap_err();
        assert!(error.to_string().contains("acks"), "{error}");
    }

    #[test]
    fn long_error_messages_are_cut_on_a_char_boundary() {
        let message = "é".repeat(ERROR_MESSAGE_SIZE_MAX);
        let mut out = Vec::new();
        ErrorBody { message: &message, earliest_offset: 1, next_offset: 2 }.encode(&mut out);
        let body = ErrorBody::decode(&out).unwrap();
        assert!(
            body.message.len() <= ERROR_MESSAGE_SIZE_MAX
                && body.message.len() >= ERROR_MESSAGE_SIZE_MAX - 1
        );
    }

    proptest! {
        #[test]
        fn random_bodies_never_panic_any_decoder(body in proptest::collection::vec(any::<u8>(), 0..256), opcode in any::<u8>()) {
            if let Some(opcode) = Opcode::from_u8(opcode) {
                let _ = Request::decode(opcode, &body);
            }
            let _ = TopicList::decode(&body).map(|list| list.iter().count());
            let _ = TopicDescription::decode(&body).map(|d| d.partitions().count());
            let _ = FetchReply::decode(&body);
            let _ = HandshakeReply::decode(&body);
            let _ = ErrorBody::decode(&body);
            let _ = BrokerStats::decode(&body);
        }
    }
}
