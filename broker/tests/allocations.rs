//! Steady-state appends and reads allocate nothing: the storage core's "no per-message
//! allocation" target, checked with a counting global allocator (allocation-counter counts the
//! current thread's allocations inside `measure`).

#![allow(clippy::unwrap_used, reason = "test helpers fail the test on error")]

use ringmq_broker::log::{open, DataDir, LogConfig, OpenMode};
use ringmq_broker::pool::BufferPool;
use ringmq_protocol::{BatchBuilder, BatchView, Push, Record};

fn batch_of_1kib_records(buffer: &mut [u8]) -> usize {
    let value = [0x5Au8; 1024];
    let mut builder = BatchBuilder::new(buffer, 1_700_000_000_000).unwrap();
    while builder.push(&Record::value(&value, 1_700_000_000_000)).unwrap() == Push::Appended {}
    builder.finish().unwrap().len()
}

#[test]
fn appends_reads_and_pool_round_trips_allocate_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let data = DataDir::lock(dir.path()).unwrap();
    let config = LogConfig::new(4 << 20, Some(256 << 10), 64 << 10).unwrap();
    let (log, mut writer, _) =
        open(&data, &dir.path().join("0.ring"), &config, OpenMode::Create).unwrap();
    let mut buffer = vec![0u8; 64 << 10];
    let size = batch_of_1kib_records(&mut buffer);
    let batch = BatchView::validate(&buffer[..size], 64 << 10).unwrap();

    // Warm up: lap the ring so reclamation and padding are part of the steady state.
    for _ in 0..200 {
        writer.append(&batch).unwrap();
    }
    let appends = allocation_counter::measure(|| {
        for _ in 0..2_000 {
            writer.append(&batch).unwrap();
        }
    });
    assert_eq!(appends.count_total, 0, "appends allocated: {appends:?}");

    let mut offset = log.earliest_offset() + 1000;
    let reads = allocation_counter::measure(|| {
        for _ in 0..2_000 {
            let outcome = log.read(offset, 64 << 10).unwrap();
            assert!(!outcome.batches.is_empty());
            offset = (offset + outcome.record_count).min(log.next_offset() - 1);
            if offset + 200 >= log.next_offset() {
                offset = log.earliest_offset() + 1000;
            }
        }
    });
    assert_eq!(reads.count_total, 0, "reads allocated: {reads:?}");

    let pool = BufferPool::new(64 << 10, 4).unwrap();
    let pooled = allocation_counter::measure(|| {
        for _ in 0..10_000 {
            let mut buffer = pool.try_acquire().unwrap();
            buffer[0] = 1;
        }
    });
    assert_eq!(pooled.count_total, 0, "pool allocated: {pooled:?}");
}
