//! Record batch validation and iteration on arbitrary bytes: never a panic; a batch that
//! validates iterates to exactly its record count, every record and header readable; a records
//! block checked with `Records::checked` (what a consumer does after decompressing) likewise.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ringmq_protocol::{BatchHeader, BatchView, Batches, Records};

fuzz_target!(|data: &[u8]| {
    if let Ok(batch) = BatchView::validate(data, u32::MAX) {
        if let Some(records) = batch.records() {
            let mut count = 0u32;
            for record in records {
                let _ = record.headers.count();
                count += 1;
            }
            assert_eq!(count, batch.record_count(), "a validated batch iterates to its count");
        }
    }
    let _ = BatchView::validate_prefix(data, 1 << 20);
    for batch in Batches::new(data, 1 << 20) {
        if let Ok(batch) = batch {
            let _ = batch.records().map(Iterator::count);
        }
    }
    // The first 61 bytes as a header, the rest as a decompressed records block.
    if let (Some(head), Some(rest)) = (data.get(..61), data.get(61..)) {
        if let Ok(header) = BatchHeader::peek(head) {
            if let Ok(records) = Records::checked(rest, header) {
                let count = records.count();
                assert_eq!(count, header.record_count() as usize, "checked records count");
            }
        }
    }
});
