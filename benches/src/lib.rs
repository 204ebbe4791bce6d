//! Shared helpers for ringmq's benchmarks: building record batches of a given record size.

use ringmq_protocol::{BatchBuilder, EncodeError, Push, Record};

/// Fills `buffer` with one batch of records of `record_size` value bytes, as many as fit, and
/// returns the batch's length.
///
/// # Errors
///
/// [`EncodeError`] if the buffer cannot hold even one record.
pub fn fill_batch(
    buffer: &mut [u8],
    record_size: usize,
    timestamp: i64,
) -> Result<usize, EncodeError> {
    let value = vec![0xA5u8; record_size];
    let mut builder = BatchBuilder::new(buffer, timestamp)?;
    while builder.push(&Record::value(&value, timestamp))? == Push::Appended {}
    Ok(builder.finish()?.len())
}
