//! Checked little-endian reading and writing of message fields.
//!
//! [`Reader`] is a cursor over untrusted bytes: every read checks the length first and returns a
//! [`DecodeError`] naming the structure, the field and the byte position. The `put_*` functions
//! append to a `Vec<u8>` that the caller reuses, so steady-state encoding does not allocate.

use crate::error::{DecodeError, EncodeError};

/// A bounds-checked cursor over one message body.
#[derive(Debug, Clone)]
pub struct Reader<'a> {
    bytes: &'a [u8],
    position: usize,
    context: &'static str,
}

impl<'a> Reader<'a> {
    pub(crate) fn new(bytes: &'a [u8], context: &'static str) -> Self {
        Self { bytes, position: 0, context }
    }

    /// Byte position of the next field.
    pub(crate) fn position(&self) -> usize {
        self.position
    }

    pub(crate) fn remaining(&self) -> usize {
        self.bytes.len().saturating_sub(self.position)
    }

    pub(crate) fn take(
        &mut self,
        size: usize,
        field: &'static str,
    ) -> Result<&'a [u8], DecodeError> {
        let truncated = || DecodeError::Truncated {
            context: self.context,
            field,
            position: self.position,
            needed: size,
            available: self.remaining(),
        };
        let end = self.position.checked_add(size).ok_or_else(truncated)?;
        let taken = self.bytes.get(self.position..end).ok_or_else(truncated)?;
        self.position = end;
        Ok(taken)
    }

    fn array<const N: usize>(&mut self, field: &'static str) -> Result<[u8; N], DecodeError> {
        let taken = self.take(N, field)?;
        // `take` returned exactly N bytes, so the conversion cannot fail; map it anyway rather
        // than assert, because this crate never panics on input.
        <[u8; N]>::try_from(taken).map_err(|_| DecodeError::Truncated {
            context: self.context,
            field,
            position: self.position,
            needed: N,
            available: taken.len(),
        })
    }

    pub(crate) fn u8(&mut self, field: &'static str) -> Result<u8, DecodeError> {
        Ok(u8::from_le_bytes(self.array(field)?))
    }

    pub(crate) fn u16(&mut self, field: &'static str) -> Result<u16, DecodeError> {
        Ok(u16::from_le_bytes(self.array(field)?))
    }

    pub(crate) fn u32(&mut self, field: &'static str) -> Result<u32, DecodeError> {
        Ok(u32::from_le_bytes(self.array(field)?))
    }

    pub(crate) fn u64(&mut self, field: &'static str) -> Result<u64, DecodeError> {
        Ok(u64::from_le_bytes(self.array(field)?))
    }

    /// A string with a `u16` byte length in front, at most `max` bytes, valid UTF-8.
    pub(crate) fn str16(
        &mut self,
        field: &'static str,
        max: usize,
    ) -> Result<&'a str, DecodeError> {
        let size = usize::from(self.u16(field)?);
        if size > max {
            return Err(self.too_large(field, size, max));
        }
        let position = self.position;
        let bytes = self.take(size, field)?;
        std::str::from_utf8(bytes).map_err(|_| DecodeError::InvalidUtf8 {
            context: self.context,
            field,
            position,
        })
    }

    /// A `u32` count or length converted to `usize`.
    pub(crate) fn len32(&mut self, field: &'static str) -> Result<usize, DecodeError> {
        let value = self.u32(field)?;
        usize::try_from(value).map_err(|_| self.too_large(field, usize::MAX, usize::MAX))
    }

    /// A `u32` element count: at most `max`, and no more than the bytes left could hold at
    /// `element_size_min` bytes each (so a hostile count can never size an allocation).
    pub(crate) fn count32(
        &mut self,
        field: &'static str,
        max: usize,
        element_size_min: usize,
    ) -> Result<usize, DecodeError> {
        let count = self.len32(field)?;
        if count > max {
            return Err(self.too_large(field, count, max));
        }
        let fits = self.remaining().checked_div(element_size_min).unwrap_or(usize::MAX);
        if count > fits {
            return Err(DecodeError::SizeMismatch {
                context: self.context,
                field,
                declared: to_u64(count),
                actual: to_u64(fits),
            });
        }
        Ok(count)
    }

    pub(crate) fn rest(&mut self) -> &'a [u8] {
        let rest = self.bytes.get(self.position..).unwrap_or_default();
        self.position = self.bytes.len();
        rest
    }

    /// Fails if bytes are left over: every message is decoded whole.
    pub(crate) fn finish(self) -> Result<(), DecodeError> {
        match self.remaining() {
            0 => Ok(()),
            extra => Err(DecodeError::TrailingBytes { context: self.context, extra }),
        }
    }

    pub(crate) fn too_large(&self, field: &'static str, size: usize, max: usize) -> DecodeError {
        DecodeError::TooLarge { context: self.context, field, size: to_u64(size), max: to_u64(max) }
    }

    pub(crate) fn invalid(
        &self,
        field: &'static str,
        value: u64,
        reason: &'static str,
    ) -> DecodeError {
        DecodeError::InvalidValue {
            context: self.context,
            field,
            position: self.position,
            value,
            reason,
        }
    }
}

/// Widens a `usize` to `u64` (lossless on every supported target).
pub(crate) fn to_u64(value: usize) -> u64 {
    u64::try_from(value).unwrap_or(u64::MAX)
}

pub(crate) fn put_u8(out: &mut Vec<u8>, value: u8) {
    out.push(value);
}

pub(crate) fn put_u16(out: &mut Vec<u8>, value: u16) {
    out.extend_from_slice(&value.to_le_bytes());
}

pub(crate) fn put_u32(out: &mut Vec<u8>, value: u32) {
    out.extend_from_slice(&value.to_le_bytes());
}

pub(crate) fn put_u64(out: &mut Vec<u8>, value: u64) {
    out.extend_from_slice(&value.to_le_bytes());
}

/// Appends a string with a `u16` length in front; fails if it is longer than `max`.
pub(crate) fn put_str16(
    out: &mut Vec<u8>,
    field: &'static str,
    value: &str,
    max: usize,
) -> Result<(), EncodeError> {
    let too_long = || EncodeError::TooLong { field, size: value.len(), max };
    if value.len() > max {
        return Err(too_long());
    }
    let size = u16::try_from(value.len()).map_err(|_| too_long())?;
    put_u16(out, size);
    out.extend_from_slice(value.as_bytes());
    Ok(())
}

/// Converts a length to the `u32` the wire carries.
pub(crate) fn len_u32(field: &'static str, size: usize, max: usize) -> Result<u32, EncodeError> {
    if size > max {
        return Err(EncodeError::TooLong { field, size, max });
    }
    u32::try_from(size).map_err(|_| EncodeError::TooLong { field, size, max })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_fields_in_order_and_rejects_trailing_bytes() {
        let mut out = Vec::new();
        put_u16(&mut out, 7);
        put_str16(&mut out, "name", "orders", 10).unwrap();
        put_u64(&mut out, u64::MAX);
        out.push(1);
        let mut reader = Reader::new(&out, "test");
        assert_eq!(reader.u16("a").unwrap(), 7);
        assert_eq!(reader.str16("name", 10).unwrap(), "orders");
        assert_eq!(reader.u64("b").unwrap(), u64::MAX);
        assert_eq!(reader.finish(), Err(DecodeError::TrailingBytes { context: "test", extra: 1 }));
    }

    #[test]
    fn truncated_field_names_the_field_and_position() {
        let mut reader = Reader::new(&[1, 2, 3], "test");
        reader.u16("first").unwrap();
        let error = reader.u32("second").unwrap_err();
        assert_eq!(
            error,
            DecodeError::Truncated {
                context: "test",
                field: "second",
                position: 2,
                needed: 4,
                available: 1
            }
        );
    }

    #[test]
    fn string_limits_are_enforced_both_ways() {
        let mut out = Vec::new();
        assert!(put_str16(&mut out, "name", "abcdef", 5).is_err());
        put_str16(&mut out, "name", "abcdef", 6).unwrap();
        let mut reader = Reader::new(&out, "test");
        assert!(matches!(reader.str16("name", 5), Err(DecodeError::TooLarge { .. })));
    }

    #[test]
    fn hostile_counts_cannot_exceed_the_bytes_present() {
        let mut out = Vec::new();
        put_u32(&mut out, 1_000_000);
        out.extend_from_slice(&[0; 8]);
        let mut reader = Reader::new(&out, "test");
        assert!(matches!(
            reader.count32("items", 10_000_000, 4),
            Err(DecodeError::SizeMismatch { declared: 1_000_000, actual: 2, .. })
        ));
    }

    #[test]
    fn invalid_utf8_is_reported() {
        let out = [2, 0, 0xff, 0xfe];
        let mut reader = Reader::new(&out, "test");
        assert!(matches!(
            reader.str16("name", 10),
            Err(DecodeError::InvalidUtf8 { position: 2, .. })
        ));
    }
}
