//! The ring log's own framing around the batches, inside each chunk. Batches are Kafka's v2 record
//! batches, stored exactly as they arrived and handed out exactly as stored, so the ring adds
//! nothing between them. Its framing lies around them:
//!
//! ```text
//! chunk:  [ batch 0 | batch 1 | ... | batch n-1 | end marker | free ... | close | entry n-1 | ... | entry 0 ]
//!           batches grow up from the chunk start ->                       <- entries grow down from its end
//! ```
//!
//! - **An entry per batch**, 24 bytes, little-endian, written after its batch and before it is
//!   published:
//!
//!   ```text
//!   byte  size  field
//!      0     8  base_offset   the batch's base offset, as stamped
//!      8     4  batch_size    bytes of the batch (0 in the close entry)
//!     12     4  leader_epoch  the batch's partitionLeaderEpoch, as stamped
//!     16     4  batch_crc     the batch's own CRC (0 in the close entry)
//!     20     4  entry_crc     CRC-32C of bytes 0..20
//!   ```
//!
//!   A batch's CRC covers everything but the fields the broker stamps (`baseOffset`,
//!   `partitionLeaderEpoch`) and its length and magic. The entry binds those to the batch: a
//!   batch is accepted by recovery only if its entry passes its CRC and the batch's stamped
//!   fields, size and CRC all equal the entry's. A write torn between the stamped fields and the
//!   rest of a batch, or a batch from an earlier lap under a new offset, therefore never
//!   validates (today's strictness of the old format's `stamp_crc`).
//! - **A close entry** (`batch_size` 0, `base_offset` the next offset) and an **end marker**
//!   right after the last batch, written when the writer leaves the chunk. The end marker is 12
//!   bytes shaped like the start of a batch: the next offset (big-endian) and a `batchLength` of
//!   -1, which no batch has. Readers walk batch headers and stop there, so a fetch never returns
//!   framing or the stale bytes behind it; recovery checks both.
//!
//! Every chunk keeps room for its close entry and end marker: a batch goes in only if, after it
//! and its entry, [`CLOSE_SIZE`] bytes are still free.

use zerocopy::little_endian::{I32, U32, U64};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

/// Bytes of one entry.
pub const ENTRY_SIZE: usize = 24;
/// Bytes of the end marker.
pub const END_MARKER_SIZE: usize = 12;
/// Bytes a chunk keeps free for leaving it: the end marker and the close entry.
pub const CLOSE_SIZE: usize = END_MARKER_SIZE + ENTRY_SIZE;
/// Bytes of framing a chunk holding one batch needs: the batch's entry, the close entry and the
/// end marker. A batch is at most the chunk size less this, so it always fits an empty chunk.
pub const CHUNK_FRAMING_SIZE: usize = ENTRY_SIZE + CLOSE_SIZE;

/// `batchLength` of the end marker: no batch is shorter than its header.
const END_MARKER_LENGTH: i32 = -1;
/// Bytes of an entry its CRC covers.
const ENTRY_CRC_SPAN: usize = ENTRY_SIZE - 4;

#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
struct RawEntry {
    base_offset: U64,
    batch_size: U32,
    leader_epoch: I32,
    batch_crc: U32,
    entry_crc: U32,
}

const _: () = assert!(size_of::<RawEntry>() == ENTRY_SIZE);
const _: () = assert!(std::mem::offset_of!(RawEntry, entry_crc) == ENTRY_CRC_SPAN);

/// An entry of a chunk's table, as read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Entry {
    /// The entry of a batch.
    Batch {
        /// Its base offset.
        base_offset: u64,
        /// Its size, bytes.
        size: u32,
        /// Its `partitionLeaderEpoch`.
        leader_epoch: i32,
        /// Its CRC.
        crc: u32,
    },
    /// The chunk was left: the log goes on at the next chunk with `next_offset`.
    Close {
        /// Offset of the next record.
        next_offset: u64,
        /// The writer's term.
        leader_epoch: i32,
    },
}

/// Why an entry slot holds no entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoEntry {
    /// All zeros: never written (or blanked by recovery).
    Blank,
    /// Bytes that fail the entry CRC: a torn write, or not an entry at all.
    BadCrc,
}

impl Entry {
    /// The entry's bytes.
    #[must_use]
    pub fn encode(&self) -> [u8; ENTRY_SIZE] {
        let (base_offset, batch_size, leader_epoch, batch_crc) = match *self {
            Entry::Batch { base_offset, size, leader_epoch, crc } => {
                (base_offset, size, leader_epoch, crc)
            }
            Entry::Close { next_offset, leader_epoch } => (next_offset, 0, leader_epoch, 0),
        };
        let mut raw = RawEntry {
            base_offset: U64::new(base_offset),
            batch_size: U32::new(batch_size),
            leader_epoch: I32::new(leader_epoch),
            batch_crc: U32::new(batch_crc),
            entry_crc: U32::new(0),
        };
        let (covered, _) = raw.as_bytes().split_at(ENTRY_CRC_SPAN);
        raw.entry_crc = U32::new(crc32c::crc32c(covered));
        let mut bytes = [0u8; ENTRY_SIZE];
        bytes.copy_from_slice(raw.as_bytes());
        bytes
    }

    /// Reads the entry in `bytes` (exactly [`ENTRY_SIZE`] of them).
    ///
    /// # Errors
    ///
    /// [`NoEntry`]: blank, or failing its CRC (or not [`ENTRY_SIZE`] bytes).
    pub fn decode(bytes: &[u8]) -> Result<Self, NoEntry> {
        let raw = RawEntry::ref_from_bytes(bytes).map_err(|_| NoEntry::BadCrc)?;
        if bytes.iter().all(|&byte| byte == 0) {
            return Err(NoEntry::Blank);
        }
        let (covered, _) = bytes.split_at(ENTRY_CRC_SPAN);
        if crc32c::crc32c(covered) != raw.entry_crc.get() {
            return Err(NoEntry::BadCrc);
        }
        let leader_epoch = raw.leader_epoch.get();
        Ok(match raw.batch_size.get() {
            0 => Entry::Close { next_offset: raw.base_offset.get(), leader_epoch },
            size => Entry::Batch {
                base_offset: raw.base_offset.get(),
                size,
                leader_epoch,
                crc: raw.batch_crc.get(),
            },
        })
    }
}

/// Where entry `index` of a chunk of `chunk_size` bytes lies, from the chunk's start.
#[must_use]
pub fn entry_place(chunk_size: usize, index: usize) -> Option<usize> {
    let from_end = index.checked_add(1)?.checked_mul(ENTRY_SIZE)?;
    chunk_size.checked_sub(from_end)
}

/// The end marker's bytes, naming the next offset.
#[must_use]
pub fn end_marker(next_offset: u64) -> [u8; END_MARKER_SIZE] {
    let mut bytes = [0u8; END_MARKER_SIZE];
    let (offset, length) = bytes.split_at_mut(8);
    offset.copy_from_slice(&next_offset.to_be_bytes());
    length.copy_from_slice(&END_MARKER_LENGTH.to_be_bytes());
    bytes
}

/// The next offset an end marker at the start of `bytes` names, if there is one.
#[must_use]
pub fn read_end_marker(bytes: &[u8]) -> Option<u64> {
    let marker = bytes.get(..END_MARKER_SIZE)?;
    let (offset, length) = marker.split_at(8);
    let length = i32::from_be_bytes(length.try_into().ok()?);
    if length != END_MARKER_LENGTH {
        return None;
    }
    Some(u64::from_be_bytes(offset.try_into().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_round_trip_and_every_flip_is_caught() {
        let entries = [
            Entry::Batch { base_offset: 77, size: 4096, leader_epoch: 3, crc: 0xDEAD_BEEF },
            Entry::Close { next_offset: 99, leader_epoch: 0 },
        ];
        for entry in entries {
            let bytes = entry.encode();
            assert_eq!(Entry::decode(&bytes), Ok(entry));
            for bit in 0..ENTRY_SIZE * 8 {
                let mut copy = bytes;
                copy[bit / 8] ^= 1 << (bit % 8);
                assert_eq!(Entry::decode(&copy), Err(NoEntry::BadCrc), "bit {bit}");
            }
        }
        assert_eq!(Entry::decode(&[0; ENTRY_SIZE]), Err(NoEntry::Blank));
        assert_eq!(Entry::decode(&[0; 3]), Err(NoEntry::BadCrc));
    }

    #[test]
    fn markers_and_places() {
        assert_eq!(read_end_marker(&end_marker(12345)), Some(12345));
        let mut batch_start = end_marker(5);
        batch_start[8..].copy_from_slice(&49i32.to_be_bytes());
        assert_eq!(read_end_marker(&batch_start), None, "a batch's length is never -1");
        assert_eq!(read_end_marker(&[0; 11]), None);
        assert_eq!(entry_place(4096, 0), Some(4096 - 24));
        assert_eq!(entry_place(4096, 1), Some(4096 - 48));
        assert_eq!(entry_place(48, 2), None);
    }
}
