//! Record batch validation and iteration on arbitrary bytes: never a panic; a batch that
//! validates iterates to exactly its record count, every record and header readable.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ringmq_protocol::batch::validate_padding;
use ringmq_protocol::{BatchView, Batches};

fuzz_target!(|data: &[u8]| {
    if let Ok(batch) = BatchView::validate(data, u32::MAX) {
        let mut count = 0u32;
        for record in batch.records() {
            for header in record.headers {
                header.expect("headers of a validated batch decode");
            }
            count += 1;
        }
        assert_eq!(count, batch.record_count(), "a validated batch iterates to its record count");
        assert!(batch.header().stamp_is_valid());
    }
    let _ = BatchView::validate_prefix(data, 1 << 20);
    let _ = validate_padding(data);
    for batch in Batches::new(data, 1 << 20) {
        if let Ok(batch) = batch {
            let _ = batch.records().count();
        }
    }
});
