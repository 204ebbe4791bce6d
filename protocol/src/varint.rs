//! Kafka's variable-length integers, as record fields use them: zig-zag encoded, then written 7
//! bits at a time, low bits first, with the top bit of each byte set when another byte follows
//! (protobuf's `sint32` / `sint64`). A 32-bit value takes at most 5 bytes, a 64-bit one 10.

/// Most bytes of an encoded 32-bit varint.
pub const VARINT_SIZE_MAX: usize = 5;
/// Most bytes of an encoded 64-bit varint.
pub const VARLONG_SIZE_MAX: usize = 10;

/// Why a varint could not be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum VarintError {
    /// The bytes ended before the last byte of the varint.
    Truncated,
    /// More bytes than the type allows, or a value beyond its range.
    Overlong,
}

#[inline]
fn zigzag64(value: i64) -> u64 {
    // Bit operations on the two's-complement representation: the cast is a reinterpretation.
    #[allow(clippy::as_conversions, reason = "zig-zag reinterprets the bits")]
    let bits = value as u64;
    (bits << 1) ^ (0u64.wrapping_sub(bits >> 63))
}

#[inline]
fn unzigzag64(encoded: u64) -> i64 {
    #[allow(clippy::as_conversions, reason = "zig-zag reinterprets the bits")]
    let value = ((encoded >> 1) ^ 0u64.wrapping_sub(encoded & 1)) as i64;
    value
}

/// Bytes the varlong encoding of `value` takes.
#[must_use]
#[inline]
pub fn varlong_size(value: i64) -> usize {
    // Significant bits (at least 1), then 7 to a byte: (bits * 9 + 64) / 64 is bits / 7 rounded
    // up for 1 to 64 bits, with no division.
    // At most 64 bits, so none of this wraps.
    let bits = 64u32.wrapping_sub((zigzag64(value) | 1).leading_zeros());
    let size = bits.wrapping_mul(9).wrapping_add(64) >> 6;
    usize::try_from(size).unwrap_or(VARLONG_SIZE_MAX)
}

/// Bytes the varint encoding of `value` takes.
#[must_use]
pub fn varint_size(value: i32) -> usize {
    varlong_size(i64::from(value))
}

/// Appends the varlong encoding of `value` to `out` at `at`; returns the position after it, or
/// `None` if `out` is too short (nothing is written then).
#[inline]
pub(crate) fn put_varlong(out: &mut [u8], at: usize, value: i64) -> Option<usize> {
    let encoded = zigzag64(value);
    if encoded < 0x80 {
        // One byte: lengths, deltas and counts below 64 (most record fields).
        *out.get_mut(at)? = u8::try_from(encoded).ok()?;
        return at.checked_add(1);
    }
    if encoded < 0x4000 {
        // Two bytes: to ±8191.
        let end = at.checked_add(2)?;
        let [low, high] = out.get_mut(at..end)? else { return None };
        *low = u8::try_from(encoded & 0x7F).ok()? | 0x80;
        *high = u8::try_from(encoded >> 7).ok()?;
        return Some(end);
    }
    let size = varlong_size(value);
    let end = at.checked_add(size)?;
    let target = out.get_mut(at..end)?;
    let (last, rest) = target.split_last_mut()?;
    let mut encoded = encoded;
    for byte in rest {
        *byte = u8::try_from(encoded & 0x7F).unwrap_or(0) | 0x80;
        encoded >>= 7;
    }
    *last = u8::try_from(encoded).unwrap_or(0);
    Some(end)
}

/// Reads a varlong from the start of `bytes`: the value and the bytes it took.
#[inline]
pub(crate) fn read_varlong(bytes: &[u8]) -> Result<(i64, usize), VarintError> {
    // One and two bytes (values to ±8191) are most record fields: decode them without a loop.
    match *bytes {
        [first, ..] if first < 0x80 => Ok((unzigzag64(u64::from(first)), 1)),
        [first, second, ..] if second < 0x80 => {
            let encoded = u64::from(first & 0x7F) | (u64::from(second) << 7);
            Ok((unzigzag64(encoded), 2))
        }
        _ => read_varlong_long(bytes),
    }
}

fn read_varlong_long(bytes: &[u8]) -> Result<(i64, usize), VarintError> {
    let mut encoded = 0u64;
    for (index, &byte) in bytes.iter().enumerate().take(VARLONG_SIZE_MAX) {
        let shift = index.saturating_mul(7);
        let low = u64::from(byte & 0x7F);
        // The tenth byte may carry only the top bit of a 64-bit value.
        if index == VARLONG_SIZE_MAX - 1 && low > 1 {
            return Err(VarintError::Overlong);
        }
        encoded |= low << shift;
        if byte & 0x80 == 0 {
            return Ok((unzigzag64(encoded), index.saturating_add(1)));
        }
    }
    if bytes.len() < VARLONG_SIZE_MAX {
        Err(VarintError::Truncated)
    } else {
        Err(VarintError::Overlong)
    }
}

/// Reads a varint (a value in `i32`'s range, at most 5 bytes) from the start of `bytes`.
#[inline]
pub(crate) fn read_varint(bytes: &[u8]) -> Result<(i32, usize), VarintError> {
    match *bytes {
        [first, ..] if first < 0x80 => Ok((unzigzag32(u32::from(first)), 1)),
        [first, second, ..] if second < 0x80 => {
            Ok((unzigzag32(u32::from(first & 0x7F) | (u32::from(second) << 7)), 2))
        }
        _ => {
            let (value, size) = read_varlong_long(bytes)?;
            if size > VARINT_SIZE_MAX {
                return Err(VarintError::Overlong);
            }
            let value = i32::try_from(value).map_err(|_| VarintError::Overlong)?;
            Ok((value, size))
        }
    }
}

#[inline]
fn unzigzag32(encoded: u32) -> i32 {
    #[allow(clippy::as_conversions, reason = "zig-zag reinterprets the bits")]
    let value = ((encoded >> 1) ^ 0u32.wrapping_sub(encoded & 1)) as i32;
    value
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn known_encodings() {
        // From Kafka's ByteUtilsTest: zig-zag maps 0, -1, 1, -2, ... to 0, 1, 2, 3, ...
        let cases: [(i64, &[u8]); 6] = [
            (0, &[0x00]),
            (-1, &[0x01]),
            (1, &[0x02]),
            (63, &[0x7E]),
            (-65, &[0x81, 0x01]),
            (i64::MIN, &[0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0x01]),
        ];
        for (value, bytes) in cases {
            let mut out = [0u8; 10];
            let end = put_varlong(&mut out, 0, value).unwrap();
            assert_eq!(&out[..end], bytes, "{value}");
            assert_eq!(read_varlong(bytes), Ok((value, bytes.len())));
            assert_eq!(varlong_size(value), bytes.len());
        }
    }

    #[test]
    fn bad_encodings_are_refused() {
        assert_eq!(read_varlong(&[]), Err(VarintError::Truncated));
        assert_eq!(read_varlong(&[0x80, 0x80]), Err(VarintError::Truncated));
        assert_eq!(read_varlong(&[0xFF; 11]), Err(VarintError::Overlong));
        assert_eq!(
            read_varlong(&[0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0x02]),
            Err(VarintError::Overlong)
        );
        // Six bytes, or a value past i32: not a varint.
        assert_eq!(read_varint(&[0x80, 0x80, 0x80, 0x80, 0x80, 0x00]), Err(VarintError::Overlong));
        assert_eq!(read_varint(&[0x80, 0x80, 0x80, 0x80, 0x10]), Err(VarintError::Overlong));
        let mut out = [0u8; 2];
        assert_eq!(put_varlong(&mut out, 1, 1 << 20), None, "too short: nothing written");
        assert_eq!(out, [0, 0]);
    }

    #[test]
    fn sizes_match_the_bytes_written_at_every_width() {
        for shift in 0..64 {
            let power = 1i64.wrapping_shl(shift);
            for value in [power, power.wrapping_sub(1), power.wrapping_neg()] {
                let mut out = [0u8; 10];
                assert_eq!(put_varlong(&mut out, 0, value), Some(varlong_size(value)), "{value}");
            }
        }
    }

    proptest! {
        #[test]
        fn round_trip(value in any::<i64>(), small in any::<i32>()) {
            let mut out = [0u8; 10];
            let end = put_varlong(&mut out, 0, value).unwrap();
            prop_assert_eq!(read_varlong(&out[..end]), Ok((value, end)));
            let end = put_varlong(&mut out, 0, i64::from(small)).unwrap();
            prop_assert_eq!(read_varint(&out[..end]), Ok((small, end)));
            prop_assert!(end <= VARINT_SIZE_MAX);
        }

        #[test]
        fn reading_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..12)) {
            let _ = read_varlong(&bytes);
            let _ = read_varint(&bytes);
        }
    }
}
