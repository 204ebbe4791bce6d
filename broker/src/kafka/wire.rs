//! Kafka's primitive encodings, for the responses encoded here rather than by the crate (fetch,
//! whose record sets are written from the ring, and produce, the other hot path).

use bytes::{BufMut, BytesMut};

/// Kafka's encodings at a version: compact (flexible, version 12) or classic.
pub(crate) struct Out {
    pub(crate) bytes: BytesMut,
    flexible: bool,
}

impl Out {
    /// An empty buffer of `capacity` bytes, for a flexible version or not.
    pub(crate) fn new(capacity: usize, flexible: bool) -> Self {
        Self { bytes: BytesMut::with_capacity(capacity), flexible }
    }

    pub(crate) fn i16(&mut self, value: i16) {
        self.bytes.extend_from_slice(&value.to_be_bytes());
    }

    pub(crate) fn i32(&mut self, value: i32) {
        self.bytes.extend_from_slice(&value.to_be_bytes());
    }

    pub(crate) fn i64(&mut self, value: i64) {
        self.bytes.extend_from_slice(&value.to_be_bytes());
    }

    pub(crate) fn uvarint(&mut self, mut value: u64) {
        while value >= 0x80 {
            self.bytes.put_u8(u8::try_from(value & 0x7F).unwrap_or(0) | 0x80);
            value >>= 7;
        }
        self.bytes.put_u8(u8::try_from(value).unwrap_or(0));
    }

    pub(crate) fn length(&mut self, length: usize) {
        if self.flexible {
            self.uvarint(length as u64 + 1);
        } else {
            self.i32(i32::try_from(length).unwrap_or(i32::MAX));
        }
    }

    pub(crate) fn string(&mut self, text: &str) {
        if self.flexible {
            self.uvarint(text.len() as u64 + 1);
        } else {
            self.i16(i16::try_from(text.len()).unwrap_or(i16::MAX));
        }
        self.bytes.extend_from_slice(text.as_bytes());
    }

    pub(crate) fn null_array(&mut self) {
        if self.flexible {
            self.uvarint(0);
        } else {
            self.i32(-1);
        }
    }

    pub(crate) fn nullable_string(&mut self, text: Option<&str>) {
        match text {
            Some(text) => self.string(text),
            None if self.flexible => self.uvarint(0),
            None => self.i16(-1),
        }
    }

    pub(crate) fn tags(&mut self) {
        if self.flexible {
            self.uvarint(0);
        }
    }
}
