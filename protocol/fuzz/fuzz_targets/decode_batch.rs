//! Record batch validation and iteration on arbitrary bytes: never a panic; a batch that
//! validates (as a producer's or as a control batch) iterates to exactly its record count, every
//! record and header readable; a records block checked with `Records::checked` (what a consumer
//! does after decompressing) likewise.
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
    // A control batch (a replicated partition's consensus entry, read back from a ring) validates
    // on the same terms, and is never also a producer's batch.
    if let Ok(batch) = BatchView::validate_control(data, u32::MAX) {
        assert!(batch.header().is_control(), "a validated control batch is one");
        assert!(BatchView::validate(data, u32::MAX).is_err(), "never a producer's batch too");
        let _ = batch.records().map(Iterator::count);
    }
    // What a log stores: exactly one of the two.
    let stored = BatchView::validate_stored(data, u32::MAX).is_ok();
    let either = BatchView::validate(data, u32::MAX).is_ok()
        || BatchView::validate_control(data, u32::MAX).is_ok();
    assert_eq!(stored, either, "a stored batch validates as one of the two kinds");
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
