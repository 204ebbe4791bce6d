//! Compressing and decompressing the records block of a batch, with the codecs Kafka names in a
//! batch's attributes. The broker never does either: a compressed batch is stored and served as
//! it came, and only clients pay for the codec.
//!
//! - gzip: `flate2` (RFC 1952 streams).
//! - snappy: `snap`. Kafka's Java client frames snappy the way xerial's snappy-java does (a
//!   16-byte header, then blocks each with a 4-byte big-endian length); librdkafka writes plain
//!   snappy. Both are read; this client writes the xerial framing, which every client reads.
//! - lz4: `lz4_flex`, the LZ4 frame format.
//! - zstd: `zstd` (the reference library), one frame.
//!
//! Decompression is bounded: a block that would grow past [`DECOMPRESSED_SIZE_MAX`] is refused,
//! so a small hostile batch cannot make the consumer allocate without limit.

use std::io::{Read, Write};

use ringmq_protocol::Compression;

/// Largest records block a batch may decompress to.
pub const DECOMPRESSED_SIZE_MAX: usize = 64 << 20;

/// The xerial snappy-java stream header: magic, then version 1 and compatible version 1.
const XERIAL_HEADER: [u8; 16] =
    [0x82, b'S', b'N', b'A', b'P', b'P', b'Y', 0, 0, 0, 0, 1, 0, 0, 0, 1];

/// Bytes of uncompressed input per xerial block (snappy-java's default block size).
const XERIAL_BLOCK_SIZE: usize = 32 << 10;

/// Why a records block could not be compressed or decompressed.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum CodecError {
    /// The codec rejected the bytes (corrupt, truncated, or not in its format).
    #[error("{codec} records block is corrupt: {reason}")]
    Corrupt {
        /// The codec.
        codec: &'static str,
        /// What the codec said.
        reason: String,
    },
    /// Decompressing would exceed [`DECOMPRESSED_SIZE_MAX`].
    #[error("{codec} records block decompresses to more than {max} bytes")]
    TooLarge {
        /// The codec.
        codec: &'static str,
        /// The limit.
        max: usize,
    },
}

/// Decompresses a records block compressed with `compression` (a block of `None` is returned as
/// is).
///
/// # Errors
///
/// [`CodecError`] for a corrupt block or one that decompresses past the limit.
pub fn decompress(compression: Compression, block: &[u8]) -> Result<Vec<u8>, CodecError> {
    let codec = compression.name();
    let corrupt =
        |error: &dyn std::fmt::Display| CodecError::Corrupt { codec, reason: error.to_string() };
    match compression {
        Compression::None => Ok(block.to_vec()),
        Compression::Gzip => read_bounded(flate2::read::GzDecoder::new(block), codec),
        Compression::Lz4 => read_bounded(lz4_flex::frame::FrameDecoder::new(block), codec),
        Compression::Zstd => {
            let decoder = zstd::stream::read::Decoder::new(block).map_err(|e| corrupt(&e))?;
            read_bounded(decoder, codec)
        }
        Compression::Snappy => match block.strip_prefix(&XERIAL_HEADER[..8]) {
            Some(rest) => xerial_decompress(rest.get(8..).unwrap_or_default()),
            None => snappy_raw(block),
        },
    }
}

/// Compresses `records` with `compression` into `out` (cleared first).
///
/// # Errors
///
/// [`CodecError`] if the codec fails (it does not on valid input; reported rather than assumed).
pub fn compress(
    compression: Compression,
    records: &[u8],
    out: &mut Vec<u8>,
) -> Result<(), CodecError> {
    out.clear();
    let codec = compression.name();
    let failed =
        |error: &dyn std::fmt::Display| CodecError::Corrupt { codec, reason: error.to_string() };
    match compression {
        Compression::None => out.extend_from_slice(records),
        Compression::Gzip => {
            let mut encoder = flate2::write::GzEncoder::new(out, flate2::Compression::fast());
            encoder.write_all(records).map_err(|e| failed(&e))?;
            encoder.finish().map_err(|e| failed(&e))?;
        }
        Compression::Lz4 => {
            let mut encoder = lz4_flex::frame::FrameEncoder::new(out);
            encoder.write_all(records).map_err(|e| failed(&e))?;
            encoder.finish().map_err(|e| failed(&e))?;
        }
        Compression::Zstd => {
            let compressed = zstd::bulk::compress(records, 3).map_err(|e| failed(&e))?;
            out.extend_from_slice(&compressed);
        }
        Compression::Snappy => {
            out.extend_from_slice(&XERIAL_HEADER);
            let mut encoder = snap::raw::Encoder::new();
            for block in records.chunks(XERIAL_BLOCK_SIZE) {
                let compressed = encoder.compress_vec(block).map_err(|e| failed(&e))?;
                let length = u32::try_from(compressed.len()).map_err(|e| failed(&e))?;
                out.extend_from_slice(&length.to_be_bytes());
                out.extend_from_slice(&compressed);
            }
        }
    }
    Ok(())
}

/// Reads a decoder to its end, refusing to grow past the limit.
fn read_bounded(decoder: impl Read, codec: &'static str) -> Result<Vec<u8>, CodecError> {
    let mut out = Vec::new();
    let limit = u64::try_from(DECOMPRESSED_SIZE_MAX).unwrap_or(u64::MAX);
    decoder
        .take(limit.saturating_add(1))
        .read_to_end(&mut out)
        .map_err(|error| CodecError::Corrupt { codec, reason: error.to_string() })?;
    if out.len() > DECOMPRESSED_SIZE_MAX {
        return Err(CodecError::TooLarge { codec, max: DECOMPRESSED_SIZE_MAX });
    }
    Ok(out)
}

fn snappy_raw(block: &[u8]) -> Result<Vec<u8>, CodecError> {
    let corrupt = |reason: String| CodecError::Corrupt { codec: "snappy", reason };
    let length = snap::raw::decompress_len(block).map_err(|error| corrupt(error.to_string()))?;
    if length > DECOMPRESSED_SIZE_MAX {
        return Err(CodecError::TooLarge { codec: "snappy", max: DECOMPRESSED_SIZE_MAX });
    }
    snap::raw::Decoder::new().decompress_vec(block).map_err(|error| corrupt(error.to_string()))
}

/// The blocks after a xerial header: each a 4-byte big-endian length and raw snappy.
fn xerial_decompress(mut blocks: &[u8]) -> Result<Vec<u8>, CodecError> {
    let corrupt = |reason: &str| CodecError::Corrupt { codec: "snappy", reason: reason.to_owned() };
    let mut out = Vec::new();
    while !blocks.is_empty() {
        let (length, rest) = blocks.split_at_checked(4).ok_or_else(|| corrupt("block length"))?;
        let length = u32::from_be_bytes(length.try_into().map_err(|_| corrupt("block length"))?);
        let length = usize::try_from(length).map_err(|_| corrupt("block length"))?;
        let (block, rest) =
            rest.split_at_checked(length).ok_or_else(|| corrupt("a block runs past the end"))?;
        let decompressed = snappy_raw(block)?;
        if out.len().saturating_add(decompressed.len()) > DECOMPRESSED_SIZE_MAX {
            return Err(CodecError::TooLarge { codec: "snappy", max: DECOMPRESSED_SIZE_MAX });
        }
        out.extend_from_slice(&decompressed);
        blocks = rest;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const CODECS: [Compression; 5] = [
        Compression::None,
        Compression::Gzip,
        Compression::Snappy,
        Compression::Lz4,
        Compression::Zstd,
    ];

    #[test]
    fn every_codec_round_trips() {
        let records: Vec<u8> = (0..100_000u32).flat_map(|i| (i % 251).to_le_bytes()).collect();
        for codec in CODECS {
            let mut out = Vec::new();
            compress(codec, &records, &mut out).unwrap();
            assert_eq!(decompress(codec, &out).unwrap(), records, "{codec:?}");
            if codec != Compression::None {
                assert!(out.len() < records.len() / 2, "{codec:?} compresses");
            }
        }
    }

    #[test]
    fn plain_snappy_from_librdkafka_is_read() {
        let records = b"librdkafka writes snappy without framing".repeat(40);
        let block = snap::raw::Encoder::new().compress_vec(&records).unwrap();
        assert_eq!(decompress(Compression::Snappy, &block).unwrap(), records);
    }

    #[test]
    fn corrupt_and_oversized_blocks_are_refused() {
        for codec in CODECS.into_iter().skip(1) {
            let error = decompress(codec, b"not compressed at all").unwrap_err();
            assert!(matches!(error, CodecError::Corrupt { .. }), "{codec:?}: {error}");
        }
        let zeros = vec![0u8; DECOMPRESSED_SIZE_MAX + 1];
        let mut bomb = Vec::new();
        compress(Compression::Zstd, &zeros, &mut bomb).unwrap();
        assert!(bomb.len() < 64 << 10, "a small block");
        let error = decompress(Compression::Zstd, &bomb).unwrap_err();
        assert!(matches!(error, CodecError::TooLarge { .. }), "{error}");
    }
}
