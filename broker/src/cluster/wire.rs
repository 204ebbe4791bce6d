//! The peer protocol: frames between the nodes of a cluster, on one connection per node pair that
//! every Raft group shares.
//!
//! ```text
//! byte  size  field     notes
//!    0     2  magic     the bytes "RC"
//!    2     1  version   1
//!    3     1  kind      Hello, Append, Vote, Snapshot; | RESPONSE in answers; Failure
//!    4     4  size      bytes that follow the header
//!    8     8  group     the Raft group (a partition, or the metadata group)
//!   16     8  id        chosen by the sender of a request, echoed in its answer
//!   24     4  crc       CRC-32C of bytes 0..24
//! ```
//!
//! All integers are little-endian. The header CRC lets a receiver refuse a corrupt size before it
//! waits for (or allocates for) a body.
//!
//! Bodies: `Hello` is JSON ([`Hello`]). `Append` is a JSON head ([`AppendHead`]) after its 4-byte
//! length, then the entries as the batches the ring holds, back to back (each self-delimiting by
//! its `batchLength`; the Raft index of the first follows the head's `prev_log_id`, the term is each
//! batch's `partitionLeaderEpoch`), so a producer's batch crosses the network as the bytes it
//! sent, and a follower appends slices of the frame it read. `Vote` and `Snapshot` requests and
//! every answer are JSON of openraft's own messages (small and rare next to entries). `Failure` is
//! a UTF-8 message: the request reached the node but not a group (no such group there, or a
//! frame the node refuses).

use bytes::{Bytes, BytesMut};
use openraft::raft::{AppendEntriesRequest, InstallSnapshotRequest, VoteRequest};
use openraft::Vote;
use ringmq_protocol::{BatchHeader, BatchView};
use serde::{Deserialize, Serialize};
use zerocopy::little_endian::{U32, U64};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

use super::entry::{self, EntryError};
use super::{LogId, PartitionRaft};

/// The header's magic, the bytes `"RC"`.
const MAGIC: [u8; 2] = *b"RC";
/// The peer protocol's version.
pub(crate) const VERSION: u8 = 1;
/// Bytes of the header.
pub(crate) const HEADER_SIZE: usize = 28;

/// Set in the kind of every answer.
const RESPONSE: u8 = 0x80;

/// What a frame carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// First frame each way on a new connection: who is at each end.
    Hello,
    /// openraft's `AppendEntries` (entries and heartbeats).
    Append,
    /// openraft's `Vote`.
    Vote,
    /// One chunk of openraft's `InstallSnapshot`.
    Snapshot,
    /// The request reached the node but no group answered it.
    Failure,
}

impl Kind {
    fn code(self) -> u8 {
        match self {
            Self::Hello => 1,
            Self::Append => 2,
            Self::Vote => 3,
            Self::Snapshot => 4,
            Self::Failure => 0x7f,
        }
    }

    fn from_code(code: u8) -> Option<Self> {
        Some(match code {
            1 => Self::Hello,
            2 => Self::Append,
            3 => Self::Vote,
            4 => Self::Snapshot,
            0x7f => Self::Failure,
            _ => return None,
        })
    }
}

#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
struct RawHeader {
    magic: [u8; 2],
    version: u8,
    kind: u8,
    size: U32,
    group: U64,
    id: U64,
    crc: U32,
}

const _: () = assert!(size_of::<RawHeader>() == HEADER_SIZE);

/// A checked frame header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Header {
    /// What the frame carries.
    pub(crate) kind: Kind,
    /// An answer (to the request of the same id) rather than a request.
    pub(crate) response: bool,
    /// Bytes of the body that follows.
    pub(crate) size: u32,
    /// The Raft group.
    pub(crate) group: u64,
    /// The request's id.
    pub(crate) id: u64,
}

/// Why bytes from a peer are not a frame, or not the frame they claim to be.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum WireError {
    /// The header is damaged or not ours.
    #[error("bad frame header: {0}")]
    Header(String),
    /// A body larger than this node accepts.
    #[error("a frame body of {size} bytes is larger than the {max} bytes a peer may send")]
    TooLarge {
        /// Its size.
        size: u32,
        /// The limit.
        max: u32,
    },
    /// A body that does not decode.
    #[error("bad {kind:?} frame: {reason}")]
    Body {
        /// The frame's kind.
        kind: Kind,
        /// What is wrong.
        reason: String,
    },
}

impl Header {
    /// Checks the first [`HEADER_SIZE`] bytes of a frame; `max` bounds the body.
    pub(crate) fn parse(bytes: &[u8; HEADER_SIZE], max: u32) -> Result<Self, WireError> {
        let raw = RawHeader::read_from_bytes(bytes).expect("the header's size");
        let crc = crc32c::crc32c(&bytes[..HEADER_SIZE - 4]);
        if raw.magic != MAGIC {
            return Err(WireError::Header(format!(
                "magic {:02x?} is not a ringmq cluster frame's",
                raw.magic
            )));
        }
        if raw.crc.get() != crc {
            return Err(WireError::Header("its CRC does not match".to_owned()));
        }
        if raw.version != VERSION {
            return Err(WireError::Header(format!(
                "version {} (this node speaks {VERSION})",
                raw.version
            )));
        }
        let kind = Kind::from_code(raw.kind & !RESPONSE)
            .ok_or_else(|| WireError::Header(format!("unknown kind {:#04x}", raw.kind)))?;
        let size = raw.size.get();
        if size > max {
            return Err(WireError::TooLarge { size, max });
        }
        Ok(Self {
            kind,
            response: raw.kind & RESPONSE != 0,
            size,
            group: raw.group.get(),
            id: raw.id.get(),
        })
    }

    /// The header's bytes.
    pub(crate) fn encode(&self) -> [u8; HEADER_SIZE] {
        let mut raw = RawHeader {
            magic: MAGIC,
            version: VERSION,
            kind: self.kind.code() | if self.response { RESPONSE } else { 0 },
            size: U32::new(self.size),
            group: U64::new(self.group),
            id: U64::new(self.id),
            crc: U32::new(0),
        };
        let crc = crc32c::crc32c(&raw.as_bytes()[..HEADER_SIZE - 4]);
        raw.crc = U32::new(crc);
        let mut bytes = [0; HEADER_SIZE];
        bytes.copy_from_slice(raw.as_bytes());
        bytes
    }
}

/// A frame to send: its header and the pieces of its body, written with one vectored write (a
/// batch is not copied into a frame buffer).
#[derive(Debug)]
pub(crate) struct Outgoing {
    /// The header's bytes, the body's size in them.
    pub(crate) header: [u8; HEADER_SIZE],
    /// The body's pieces.
    pub(crate) body: Vec<Bytes>,
}

impl Outgoing {
    /// A frame of `kind` whose body is `body`.
    pub(crate) fn new(kind: Kind, response: bool, group: u64, id: u64, body: Vec<Bytes>) -> Self {
        let size: usize = body.iter().map(Bytes::len).sum();
        let size = u32::try_from(size).unwrap_or(u32::MAX);
        let header = Header { kind, response, size, group, id }.encode();
        Self { header, body }
    }

    /// Bytes on the wire.
    pub(crate) fn len(&self) -> usize {
        HEADER_SIZE + self.body.iter().map(Bytes::len).sum::<usize>()
    }
}

/// Who is at the end of a connection, and which cluster it belongs to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Hello {
    /// The sender's `--node-id`.
    pub(crate) node: u64,
    /// The cluster's name: two clusters on one network never exchange Raft messages.
    pub(crate) cluster: String,
}

/// The JSON head of an `Append` frame.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct AppendHead {
    vote: Vote<u64>,
    prev_log_id: Option<LogId>,
    leader_commit: Option<LogId>,
    /// Entries that follow (checked against the batches found).
    entries: u64,
}

/// JSON of `value` as one body piece.
pub(crate) fn json<T: Serialize>(value: &T) -> Bytes {
    Bytes::from(serde_json::to_vec(value).expect("openraft's messages serialise"))
}

/// Decodes a JSON body.
pub(crate) fn from_json<T: for<'de> Deserialize<'de>>(
    kind: Kind,
    body: &[u8],
) -> Result<T, WireError> {
    serde_json::from_slice(body)
        .map_err(|error| WireError::Body { kind, reason: error.to_string() })
}

/// The body of an `Append` request: the head, then each entry as the batch the ring holds
/// (`scratch` builds the control batches of blank and membership entries).
pub(crate) fn encode_append(
    request: &AppendEntriesRequest<PartitionRaft>,
    batch_size_max: u32,
) -> Result<Vec<Bytes>, EntryError> {
    let head = AppendHead {
        vote: request.vote,
        prev_log_id: request.prev_log_id,
        leader_commit: request.leader_commit,
        entries: request.entries.len() as u64,
    };
    let head = json(&head);
    let mut body = Vec::with_capacity(2 + request.entries.len());
    body.push(Bytes::copy_from_slice(&u32::try_from(head.len()).unwrap_or(u32::MAX).to_le_bytes()));
    body.push(head);
    let mut scratch = Vec::new();
    for entry in &request.entries {
        body.push(entry::to_wire(entry, &mut scratch, batch_size_max)?);
    }
    Ok(body)
}

/// Decodes an `Append` request body: every entry's batch validated (as the ring stores it) and
/// kept as a slice of `body`, not copied.
pub(crate) fn decode_append(
    body: &Bytes,
    batch_size_max: u32,
) -> Result<AppendEntriesRequest<PartitionRaft>, WireError> {
    let bad = |reason: String| WireError::Body { kind: Kind::Append, reason };
    let head_len = body
        .get(..4)
        .map(|bytes| u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]) as usize)
        .ok_or_else(|| bad("no head length".to_owned()))?;
    let head_end = head_len.checked_add(4).filter(|&end| end <= body.len());
    let head_end =
        head_end.ok_or_else(|| bad(format!("a head of {head_len} bytes runs past the body")))?;
    let head: AppendHead = from_json(Kind::Append, &body[4..head_end])?;
    let mut index = head.prev_log_id.map_or(0, |id| id.index + 1);
    let mut entries = Vec::new();
    let mut at = head_end;
    while at < body.len() {
        let rest = &body[at..];
        let size = BatchHeader::peek(rest)
            .map_err(|error| bad(format!("entry {index}: {error}")))?
            .batch_len();
        let bytes =
            rest.get(..size).ok_or_else(|| bad(format!("entry {index} runs past the body")))?;
        BatchView::validate_stored(bytes, batch_size_max)
            .map_err(|error| bad(format!("entry {index}: {error}")))?;
        let entry = entry::from_wire(body.slice(at..at + size), index)
            .map_err(|error| bad(error.to_string()))?;
        entries.push(entry);
        index += 1;
        at += size;
        if entries.len() as u64 > head.entries {
            break;
        }
    }
    if entries.len() as u64 != head.entries {
        return Err(bad(format!(
            "the head names {} entries, the body holds {}",
            head.entries,
            entries.len()
        )));
    }
    Ok(AppendEntriesRequest {
        vote: head.vote,
        prev_log_id: head.prev_log_id,
        entries,
        leader_commit: head.leader_commit,
    })
}

/// The body of a `Vote` request.
pub(crate) fn encode_vote(request: &VoteRequest<u64>) -> Vec<Bytes> {
    vec![json(request)]
}

/// The body of a `Snapshot` request.
pub(crate) fn encode_snapshot(request: &InstallSnapshotRequest<PartitionRaft>) -> Vec<Bytes> {
    vec![json(request)]
}

/// A body read from a socket, as one buffer the entries slice.
pub(crate) fn body_buffer(size: u32) -> BytesMut {
    BytesMut::zeroed(size as usize)
}

/// Arbitrary bytes as one peer frame, through every decoder a node runs on what a peer sends: the
/// header, then the body as the kind it names (never a panic; an `Append` whose entries decode
/// holds exactly the batches the body carries).
#[doc(hidden)]
pub fn decode_for_fuzzing(data: &[u8]) {
    let Some((head, body)) = data.split_first_chunk::<HEADER_SIZE>() else { return };
    let Ok(header) = Header::parse(head, 1 << 20) else { return };
    let body = Bytes::copy_from_slice(body);
    match header.kind {
        Kind::Hello => drop(from_json::<Hello>(header.kind, &body)),
        Kind::Append => {
            if let Ok(request) = decode_append(&body, 1 << 20) {
                let sizes: usize = request
                    .entries
                    .iter()
                    .map(|entry| match &entry.payload {
                        openraft::EntryPayload::Normal(super::Batch(bytes)) => bytes.len(),
                        _ => 0,
                    })
                    .sum();
                assert!(sizes <= body.len(), "entries are slices of the body");
            }
        }
        Kind::Vote => drop(from_json::<VoteRequest<u64>>(header.kind, &body)),
        Kind::Snapshot => {
            drop(from_json::<InstallSnapshotRequest<PartitionRaft>>(header.kind, &body))
        }
        Kind::Failure => drop(String::from_utf8_lossy(&body)),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests stop loudly")]

    use openraft::{CommittedLeaderId, EntryPayload, Membership};

    use super::*;
    use crate::cluster::tests::batch;
    use crate::cluster::Batch;

    type Entry = openraft::Entry<PartitionRaft>;

    fn log_id(term: u64, index: u64) -> LogId {
        LogId::new(CommittedLeaderId::new(term, 0), index)
    }

    fn request() -> AppendEntriesRequest<PartitionRaft> {
        let voters = [1u64, 2, 3].into_iter().collect();
        AppendEntriesRequest {
            vote: Vote::new_committed(4, 1),
            prev_log_id: Some(log_id(3, 9)),
            entries: vec![
                Entry { log_id: log_id(4, 10), payload: EntryPayload::Blank },
                Entry {
                    log_id: log_id(4, 11),
                    payload: EntryPayload::Membership(Membership::new(vec![voters], None)),
                },
                // A producer's batch as it came (epoch 0): sent stamped with the entry's term.
                Entry {
                    log_id: log_id(4, 12),
                    payload: EntryPayload::Normal(Batch(batch(12, 3).into())),
                },
            ],
            leader_commit: Some(log_id(3, 9)),
        }
    }

    fn frame_bytes(header: [u8; HEADER_SIZE], body: &[Bytes]) -> Vec<u8> {
        let mut bytes = header.to_vec();
        for piece in body {
            bytes.extend_from_slice(piece);
        }
        bytes
    }

    #[test]
    fn an_append_crosses_the_wire_as_the_ring_s_batches() {
        let request = request();
        let body = encode_append(&request, 1 << 20).unwrap();
        let outgoing = Outgoing::new(Kind::Append, false, 7, 42, body);
        let bytes = frame_bytes(outgoing.header, &outgoing.body);
        assert_eq!(bytes.len(), outgoing.len());
        // The fuzz target's seeds (`broker/fuzz/corpus/peer_frames`) are these frames.
        if let Some(dir) = std::env::var_os("RINGMQ_WRITE_PEER_CORPUS") {
            let dir = std::path::Path::new(&dir);
            std::fs::write(dir.join("append"), &bytes).unwrap();
            let hello = Hello { node: 3, cluster: "prod".to_owned() };
            let hello = Outgoing::new(Kind::Hello, false, 0, 0, vec![json(&hello)]);
            std::fs::write(dir.join("hello"), frame_bytes(hello.header, &hello.body)).unwrap();
            let vote = VoteRequest::new(Vote::new(5, 2), Some(log_id(4, 12)));
            let vote = Outgoing::new(Kind::Vote, false, 7, 43, encode_vote(&vote));
            std::fs::write(dir.join("vote"), frame_bytes(vote.header, &vote.body)).unwrap();
        }
        let header = Header::parse(bytes[..HEADER_SIZE].try_into().unwrap(), 1 << 20).unwrap();
        assert_eq!(
            header,
            Header {
                kind: Kind::Append,
                response: false,
                size: (bytes.len() - HEADER_SIZE) as u32,
                group: 7,
                id: 42
            }
        );
        let body = Bytes::copy_from_slice(&bytes[HEADER_SIZE..]);
        let decoded = decode_append(&body, 1 << 20).unwrap();
        assert_eq!(
            (decoded.vote, decoded.prev_log_id, decoded.leader_commit),
            (request.vote, request.prev_log_id, request.leader_commit)
        );
        assert_eq!(decoded.entries.len(), 3);
        for (got, sent) in decoded.entries.iter().zip(&request.entries) {
            assert_eq!(got.log_id, sent.log_id);
            match (&got.payload, &sent.payload) {
                (EntryPayload::Normal(Batch(got)), EntryPayload::Normal(Batch(sent))) => {
                    // The records as sent, the term stamped outside the CRC.
                    assert_eq!(&got[16..], &sent[16..]);
                    assert_eq!(BatchHeader::peek(got).unwrap().partition_leader_epoch(), 4);
                    // A slice of the frame's body, not a copy.
                    let range = body.as_ptr_range();
                    assert!(range.contains(&got.as_ptr()));
                }
                (got, sent) => assert_eq!(got, sent),
            }
        }
        // A heartbeat: no entries.
        let heartbeat = AppendEntriesRequest { entries: Vec::new(), ..request };
        let body: Vec<u8> = encode_append(&heartbeat, 1 << 20).unwrap().concat();
        assert!(decode_append(&Bytes::from(body), 1 << 20).unwrap().entries.is_empty());
    }

    #[test]
    fn a_bad_frame_is_refused_with_what_is_wrong() {
        let outgoing = Outgoing::new(Kind::Vote, true, 1, 2, vec![Bytes::from_static(b"{}")]);
        let header = outgoing.header;
        assert!(Header::parse(&header, 1 << 20).unwrap().response);
        let with = |at: usize, value: u8| {
            let mut bytes = header;
            bytes[at] = value;
            Header::parse(&bytes, 1 << 20).unwrap_err().to_string()
        };
        assert!(with(0, b'X').contains("magic"), "{}", with(0, b'X'));
        assert!(with(9, 0xee).contains("CRC"), "{}", with(9, 0xee));
        let reencoded = |mutate: fn(&mut Header)| {
            let mut parsed = Header::parse(&header, 1 << 20).unwrap();
            mutate(&mut parsed);
            Header::parse(&parsed.encode(), 1).unwrap_err().to_string()
        };
        assert!(reencoded(|header| header.size = 2).contains("larger than the 1 bytes"));

        let request = request();
        let body: Vec<u8> = encode_append(&request, 1 << 20).unwrap().concat();
        // The last batch cut short, then damaged.
        let short = Bytes::copy_from_slice(&body[..body.len() - 1]);
        let error = decode_append(&short, 1 << 20).unwrap_err().to_string();
        assert!(error.contains("entry 12"), "{error}");
        let mut damaged = body.clone();
        let last = damaged.len() - 1;
        damaged[last] ^= 0xff;
        let error = decode_append(&Bytes::from(damaged), 1 << 20).unwrap_err().to_string();
        assert!(error.contains("entry 12") && error.contains("CRC"), "{error}");
        // A head that names more entries than the body holds.
        let head_len = u32::from_le_bytes(body[..4].try_into().unwrap()) as usize;
        let cut = Bytes::copy_from_slice(&body[..4 + head_len]);
        let error = decode_append(&cut, 1 << 20).unwrap_err().to_string();
        assert!(error.contains("names 3 entries, the body holds 0"), "{error}");
        let error = decode_append(&Bytes::from_static(b"\xff\xff\xff\xff{}"), 1 << 20)
            .unwrap_err()
            .to_string();
        assert!(error.contains("runs past the body"), "{error}");
    }
}
