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
//!   92  3996  zero
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
