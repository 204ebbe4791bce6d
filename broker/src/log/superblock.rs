//! The ring file's superblock: what the file is, and where its log was at the last checkpoint.
//!
//! The first 8 KiB of a ring file hold two copies of the superblock, one per 4 KiB page. Each
//! write goes to both, one after the other, each synced before the next starts, so a crash can
//! tear at most one; [`Superblock::choose`] takes the valid copy with the highest sequence.
//!
//! ```text
//! byte  size  field            notes
//!    0     8  magic            "RINGMQLG"
//!    8     4  format_version   2 (1: ringmq 0.1's own batch format, refused)
//!   12     4  superblock_size  4096 (bytes per copy)
//!   16     8  capacity         bytes in the data area
//!   24     8  chunk_size       bytes per chunk
//!   32     8  sequence         incremented by every write
//!   40     4  flags            bit 0: clean shutdown (head and tail below are exact)
//!   44     4  term             leader term of the last append (0 on a single node)
//!   48     8  head_position    clean shutdown: position of the first retained batch
//!   56     8  head_offset      clean shutdown: its base offset
//!   64     8  tail_position    clean shutdown: position after the last batch
//!   72     8  next_offset      clean shutdown: offset the next record gets
//!   80     8  durable_offset   every record below this offset was synced to disk
//!   88     4  crc              CRC-32C of bytes 0..88
//!   92   932  zero
//! 1024  2048  replication state  a replicated partition's Raft state (see below)
//! 3072  1016  zero
//! 4088     8  incarnation      first copy only; not part of the superblock (see below)
//! ```
//!
//! A superblock write writes its 92 bytes only, so the rest of each page keeps what it holds. The
//! last word of the first page is the ring's incarnation: a little-endian count that every broker
//! opening the ring increments before it writes anything else, which same-host readers still on
//! a dead broker's cursor page check their copies against ([`ringmq_protocol::local`], "A broker
//! that dies"). It is not checksummed and needs no durability: it only has to change while a
//! reader of the previous broker may still be reading, and a reader lives no longer than the
//! page cache it reads.
//!
//! The *replication state* is what a replicated partition's consensus keeps besides its log (the
//! vote, the membership, the last purged and committed entries), as bytes the ring does not
//! interpret, up to [`REPLICATION_STATE_MAX`]. It has its own record in each page, written apart
//! from the superblock record: save `n` goes to copy `n % 2` and is synced before it returns, so a
//! crash tears at most the save under way and the other copy holds the one before it;
//! [`choose_state`] takes the valid copy with the highest sequence. A file without one (every
//! file of a single node, and every file made before it existed) has zeroes there: no state.
//!
//! ```text
//! byte  size  field
//!    0     8  magic      "RMQREPL1"
//!    8     8  sequence   one more than the save before
//!   16     4  length     bytes of state
//!   20     4  crc        CRC-32C of the sequence, the length and the state
//!   24     -  state
//! ```

use zerocopy::little_endian::{U32, U64};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

/// Bytes per superblock copy (one page).
pub(crate) const SUPERBLOCK_SIZE: usize = 4096;
/// [`SUPERBLOCK_SIZE`] as it is stored.
const SUPERBLOCK_SIZE_U32: u32 = 4096;
const _: () = assert!(SUPERBLOCK_SIZE_U32 as usize == SUPERBLOCK_SIZE);
/// Copies of the superblock at the start of a ring file.
pub(crate) const SUPERBLOCK_COPIES: usize = 2;
/// File offset of the data area.
/// Bytes before the data area: the superblock copies.
pub(crate) const DATA_START_BYTES: usize = SUPERBLOCK_SIZE * SUPERBLOCK_COPIES;
/// [`DATA_START_BYTES`] as a file offset.
pub(crate) const DATA_START: u64 = DATA_START_BYTES as u64;
/// Bytes of a superblock copy that a superblock write writes (the rest of its page is left alone).
pub(crate) const RECORD_SIZE: usize = size_of::<Raw>();
/// File offset of the ring's incarnation word: the last word of the first superblock page.
pub(crate) const INCARNATION_AT: usize = SUPERBLOCK_SIZE - 8;
const _: () = assert!(RECORD_SIZE <= INCARNATION_AT);
/// The magic of a ring file.
pub(crate) const MAGIC: [u8; 8] = *b"RINGMQLG";
/// The format version this build reads and writes.
pub(crate) const FORMAT_VERSION: u32 = 2;

const FLAG_CLEAN: u32 = 1;

/// Offset in each superblock page of its replication state record.
pub(crate) const STATE_AT: usize = 1024;
/// Bytes of a replication state record, header included.
const STATE_AREA: usize = 2048;
const STATE_HEADER: usize = 24;
const STATE_MAGIC: [u8; 8] = *b"RMQREPL1";
/// Largest replication state a ring keeps, in bytes.
pub const REPLICATION_STATE_MAX: usize = STATE_AREA - STATE_HEADER;
const _: () = assert!(RECORD_SIZE <= STATE_AT && STATE_AT + STATE_AREA <= INCARNATION_AT);

/// Encodes replication state record `sequence` holding `state` (at most
/// [`REPLICATION_STATE_MAX`] bytes): the bytes a save writes at [`STATE_AT`] of copy
/// `sequence % 2`.
pub(crate) fn encode_state(sequence: u64, state: &[u8]) -> Vec<u8> {
    assert!(state.len() <= REPLICATION_STATE_MAX, "replication state checked by the caller");
    let length = u32::try_from(state.len()).expect("at most 2 KiB");
    let mut record = Vec::with_capacity(STATE_HEADER + state.len());
    record.extend_from_slice(&STATE_MAGIC);
    record.extend_from_slice(&sequence.to_le_bytes());
    record.extend_from_slice(&length.to_le_bytes());
    record.extend_from_slice(&[0; 4]);
    record.extend_from_slice(state);
    let crc = state_crc(&record);
    record[20..24].copy_from_slice(&crc.to_le_bytes());
    record
}

fn state_crc(record: &[u8]) -> u32 {
    crc32c::crc32c_append(crc32c::crc32c(&record[8..20]), &record[STATE_HEADER..])
}

/// Decodes the replication state record at the start of `area`: `None` if there is none or it
/// is torn.
fn decode_state(area: &[u8]) -> Option<(u64, &[u8])> {
    let header = area.get(..STATE_HEADER)?;
    if header[..8] != STATE_MAGIC {
        return None;
    }
    let word = |at: usize| u64::from_le_bytes(header[at..at + 8].try_into().expect("8 bytes"));
    let half = |at: usize| u32::from_le_bytes(header[at..at + 4].try_into().expect("4 bytes"));
    let length =
        usize::try_from(half(16)).ok().filter(|&length| length <= REPLICATION_STATE_MAX)?;
    let record = area.get(..STATE_HEADER + length)?;
    (state_crc(record) == half(20)).then(|| (word(8), &record[STATE_HEADER..]))
}

/// The newest valid replication state of a file's superblock area (`file` from byte 0), with its
/// sequence: `None` if neither copy holds one.
pub(crate) fn choose_state(file: &[u8]) -> Option<(u64, Vec<u8>)> {
    (0..SUPERBLOCK_COPIES)
        .filter_map(|copy| {
            let at = copy * SUPERBLOCK_SIZE + STATE_AT;
            decode_state(file.get(at..at + STATE_AREA)?)
        })
        .max_by_key(|(sequence, _)| *sequence)
        .map(|(sequence, state)| (sequence, state.to_vec()))
}
const CRC_SPAN: usize = 88;

#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
struct Raw {
    magic: [u8; 8],
    format_version: U32,
    superblock_size: U32,
    capacity: U64,
    chunk_size: U64,
    sequence: U64,
    flags: U32,
    term: U32,
    head_position: U64,
    head_offset: U64,
    tail_position: U64,
    next_offset: U64,
    durable_offset: U64,
    crc: U32,
}

const _: () = assert!(size_of::<Raw>() == CRC_SPAN + 4);
const _: () = assert!(std::mem::offset_of!(Raw, sequence) == 32);
const _: () = assert!(std::mem::offset_of!(Raw, head_position) == 48);
const _: () = assert!(std::mem::offset_of!(Raw, durable_offset) == 80);
const _: () = assert!(std::mem::offset_of!(Raw, crc) == CRC_SPAN);
const _: () = assert!(size_of::<Raw>() <= SUPERBLOCK_SIZE);

/// Where the log stood when the superblock was written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct Checkpoint {
    pub(crate) head_position: u64,
    pub(crate) head_offset: u64,
    pub(crate) tail_position: u64,
    pub(crate) next_offset: u64,
}

/// A decoded superblock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Superblock {
    pub(crate) capacity: u64,
    pub(crate) chunk_size: u64,
    pub(crate) sequence: u64,
    pub(crate) term: u32,
    /// `Some` after a clean shutdown: the exact head and tail.
    pub(crate) clean: Option<Checkpoint>,
    /// Every record below this offset was synced.
    pub(crate) durable_offset: u64,
}

/// Why a superblock copy was rejected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum SuperblockError {
    /// Not a ringmq ring file (or the copy is blank).
    BadMagic,
    /// Written by another format version.
    Version(u32),
    /// The checksum does not match.
    Checksum,
    /// The copy is inconsistent with itself.
    Invalid(&'static str),
}

impl std::fmt::Display for SuperblockError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::BadMagic => f.write_str("not a ringmq ring file (bad magic)"),
            Self::Version(1) => write!(
                f,
                "format version 1 (ringmq 0.1's own batch format), but this build reads version \
                 {FORMAT_VERSION} (Kafka record batches) and does not migrate files: read what you \
                 need with the old broker, then move this data directory aside and start with an \
                 empty one"
            ),
            Self::Version(found) => {
                write!(f, "format version {found}, but this build reads version {FORMAT_VERSION}")
            }
            Self::Checksum => f.write_str("superblock checksum mismatch"),
            Self::Invalid(what) => write!(f, "inconsistent superblock: {what}"),
        }
    }
}

impl Superblock {
    /// Encodes one copy: the bytes a superblock write writes at the start of its page.
    pub(crate) fn encode(&self) -> [u8; RECORD_SIZE] {
        let clean = self.clean.unwrap_or_default();
        let mut raw = Raw {
            magic: MAGIC,
            format_version: U32::new(FORMAT_VERSION),
            superblock_size: U32::new(SUPERBLOCK_SIZE_U32),
            capacity: U64::new(self.capacity),
            chunk_size: U64::new(self.chunk_size),
            sequence: U64::new(self.sequence),
            flags: U32::new(if self.clean.is_some() { FLAG_CLEAN } else { 0 }),
            term: U32::new(self.term),
            head_position: U64::new(clean.head_position),
            head_offset: U64::new(clean.head_offset),
            tail_position: U64::new(clean.tail_position),
            next_offset: U64::new(clean.next_offset),
            durable_offset: U64::new(self.durable_offset),
            crc: U32::new(0),
        };
        raw.crc = U32::new(crc32c::crc32c(&raw.as_bytes()[..CRC_SPAN]));
        let mut record = [0u8; RECORD_SIZE];
        record.copy_from_slice(raw.as_bytes());
        record
    }

    /// Decodes one copy.
    pub(crate) fn decode(page: &[u8]) -> Result<Self, SuperblockError> {
        let Ok((raw, _)) = Raw::read_from_prefix(page) else {
            return Err(SuperblockError::Invalid("shorter than a superblock"));
        };
        if raw.magic != MAGIC {
            return Err(SuperblockError::BadMagic);
        }
        if crc32c::crc32c(&raw.as_bytes()[..CRC_SPAN]) != raw.crc.get() {
            return Err(SuperblockError::Checksum);
        }
        if raw.format_version.get() != FORMAT_VERSION {
            return Err(SuperblockError::Version(raw.format_version.get()));
        }
        if raw.superblock_size.get() as usize != SUPERBLOCK_SIZE {
            return Err(SuperblockError::Invalid("superblock size"));
        }
        let flags = raw.flags.get();
        if flags & !FLAG_CLEAN != 0 {
            return Err(SuperblockError::Invalid("unknown flags"));
        }
        let clean = (flags & FLAG_CLEAN != 0).then(|| Checkpoint {
            head_position: raw.head_position.get(),
            head_offset: raw.head_offset.get(),
            tail_position: raw.tail_position.get(),
            next_offset: raw.next_offset.get(),
        });
        if let Some(checkpoint) = clean {
            if checkpoint.head_position > checkpoint.tail_position
                || checkpoint.head_offset > checkpoint.next_offset
            {
                return Err(SuperblockError::Invalid("head after tail"));
            }
        }
        Ok(Self {
            capacity: raw.capacity.get(),
            chunk_size: raw.chunk_size.get(),
            sequence: raw.sequence.get(),
            term: raw.term.get(),
            clean,
            durable_offset: raw.durable_offset.get(),
        })
    }

    /// Decodes both copies from the start of a ring file and returns the valid one with the
    /// highest sequence, and the error of a damaged copy if one was passed over.
    pub(crate) fn choose(file: &[u8]) -> Result<(Self, Option<SuperblockError>), SuperblockError> {
        let copy = |index: usize| {
            file.get(index * SUPERBLOCK_SIZE..(index + 1) * SUPERBLOCK_SIZE)
                .ok_or(SuperblockError::Invalid("file shorter than its superblocks"))
                .and_then(Self::decode)
        };
        match (copy(0), copy(1)) {
            (Ok(a), Ok(b)) => Ok((if b.sequence > a.sequence { b } else { a }, None)),
            (Ok(one), Err(error)) | (Err(error), Ok(one)) => Ok((one, Some(error))),
            // Report the first copy's problem: a version mismatch or foreign file shows there.
            (Err(error), Err(_)) => Err(error),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(sequence: u64) -> Superblock {
        Superblock {
            capacity: 1 << 20,
            chunk_size: 1 << 16,
            sequence,
            term: 3,
            clean: Some(Checkpoint {
                head_position: 10,
                head_offset: 5,
                tail_position: 99,
                next_offset: 50,
            }),
            durable_offset: 40,
        }
    }

    #[test]
    fn round_trip_and_choose_newest() {
        let mut file = vec![0u8; DATA_START as usize];
        file[..RECORD_SIZE].copy_from_slice(&sample(7).encode());
        file[SUPERBLOCK_SIZE..][..RECORD_SIZE].copy_from_slice(&sample(8).encode());
        let (chosen, skipped) = Superblock::choose(&file).unwrap();
        assert_eq!((chosen, skipped), (sample(8), None));
    }

    #[test]
    fn replication_state_round_trips_and_a_torn_save_keeps_the_one_before() {
        let mut file = vec![0u8; DATA_START_BYTES];
        assert_eq!(choose_state(&file), None, "a file without one");
        let mut save = |sequence: u64, state: &[u8]| {
            let record = encode_state(sequence, state);
            let at = (sequence % 2) as usize * SUPERBLOCK_SIZE + STATE_AT;
            file[at..at + record.len()].copy_from_slice(&record);
            at
        };
        save(1, b"vote 1");
        let at = save(2, &[7; REPLICATION_STATE_MAX]);
        let mut image = file.clone();
        assert_eq!(choose_state(&image), Some((2, vec![7; REPLICATION_STATE_MAX])));
        // A save torn anywhere leaves the one before it.
        for torn in [at + 3, at + 12, at + 17, at + 22, at + 500, at + 2047] {
            image[torn] ^= 0x40;
            assert_eq!(choose_state(&image), Some((1, b"vote 1".to_vec())), "byte {torn}");
            image[torn] ^= 0x40;
        }
        image[at + 16..at + 20].copy_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(choose_state(&image).unwrap().0, 1, "a length past the area");
        // The superblock record and the incarnation word are elsewhere.
        assert!(file[..STATE_AT].iter().all(|&byte| byte == 0));
        assert!(file[INCARNATION_AT..INCARNATION_AT + 8].iter().all(|&byte| byte == 0));
    }

    #[test]
    fn torn_copy_falls_back_to_the_other() {
        let mut file = vec![0u8; DATA_START as usize];
        file[..RECORD_SIZE].copy_from_slice(&sample(7).encode());
        let mut torn = sample(8).encode();
        torn[60] ^= 0xFF;
        file[SUPERBLOCK_SIZE..][..RECORD_SIZE].copy_from_slice(&torn);
        let (chosen, skipped) = Superblock::choose(&file).unwrap();
        assert_eq!(chosen.sequence, 7);
        assert_eq!(skipped, Some(SuperblockError::Checksum));
    }

    #[test]
    fn both_damaged_or_foreign_is_an_error() {
        let file = vec![0u8; DATA_START as usize];
        assert_eq!(Superblock::choose(&file).unwrap_err(), SuperblockError::BadMagic);
        let mut page = sample(1).encode();
        for (version, says) in [(3u8, "format version 3"), (1, "move this data directory aside")] {
            page[8] = version;
            let crc = crc32c::crc32c(&page[..CRC_SPAN]);
            page[CRC_SPAN..CRC_SPAN + 4].copy_from_slice(&crc.to_le_bytes());
            let mut file = vec![0u8; DATA_START as usize];
            file[..RECORD_SIZE].copy_from_slice(&page);
            file[SUPERBLOCK_SIZE..][..RECORD_SIZE].copy_from_slice(&page);
            let error = Superblock::choose(&file).unwrap_err();
            assert_eq!(error, SuperblockError::Version(u32::from(version)));
            assert!(error.to_string().contains(says), "{error}");
        }
        assert_eq!(
            Superblock::decode(&[0; SUPERBLOCK_SIZE]).unwrap_err(),
            SuperblockError::BadMagic
        );
    }
}
