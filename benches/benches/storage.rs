//! Criterion micro-benchmarks of the storage core: batch encode and validate, the buffer pool,
//! ring append and read, and a plain memcpy of the same bytes as the yardstick.
//!
//! Names follow `group/case/param`. Run: `cargo bench -p ringmq-benches --bench storage`.

#![allow(clippy::unwrap_used, reason = "a benchmark that cannot set up should stop loudly")]

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use ringmq_benches::fill_batch;
use ringmq_broker::log::{open, DataDir, LogConfig, OpenMode};
use ringmq_broker::pool::BufferPool;
use ringmq_protocol::{BatchBuilder, BatchView, Push, Record};

const BATCH_SIZE: usize = 64 << 10;
const RECORD_SIZES: [(usize, &str); 3] = [(64, "64B"), (1024, "1KiB"), (16 << 10, "16KiB")];
/// Ring capacity for the append and read benches: large enough to defeat the CPU caches, small
/// enough to stay in the page cache, so the bench measures the copy, not the disk.
const RING_CAPACITY: u64 = 256 << 20;

fn batch_encode(c: &mut Criterion) {
    let mut group = c.benchmark_group("batch/encode");
    for (record_size, name) in RECORD_SIZES {
        let value = vec![0xA5u8; record_size];
        let mut buffer = vec![0u8; BATCH_SIZE];
        let size = fill_batch(&mut buffer, record_size, 0).unwrap();
        group.throughput(Throughput::Bytes(size as u64));
        group.bench_function(BenchmarkId::from_parameter(name), |b| {
            b.iter(|| {
                let mut builder = BatchBuilder::new(&mut buffer, 0).unwrap();
                while builder.push(&Record::value(&value, 0)).unwrap() == Push::Appended {}
                black_box(builder.finish().unwrap().len())
            })
        });
    }
    group.finish();
}

fn batch_validate(c: &mut Criterion) {
    let mut group = c.benchmark_group("batch/validate");
    for (record_size, name) in RECORD_SIZES {
        let mut buffer = vec![0u8; BATCH_SIZE];
        let size = fill_batch(&mut buffer, record_size, 0).unwrap();
        let batch = &buffer[..size];
        group.throughput(Throughput::Bytes(size as u64));
        group.bench_function(BenchmarkId::from_parameter(name), |b| {
            b.iter(|| {
                black_box(BatchView::validate(black_box(batch), 1 << 20).unwrap().record_count())
            })
        });
    }
    group.finish();
}

fn pool(c: &mut Criterion) {
    let pool = BufferPool::new(64 << 10, 64).unwrap();
    c.bench_function("pool/acquire_release", |b| {
        b.iter(|| {
            let buffer = pool.try_acquire().unwrap();
            black_box(buffer.len())
        })
    });
}

/// Ring append of 1 KiB records in 64 KiB batches, against a memcpy of the same batch into the
/// same amount of memory (a heap buffer of the ring's size, written round-robin).
fn ring_append(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let data = DataDir::lock(dir.path()).unwrap();
    let config = LogConfig::new(RING_CAPACITY, None, BATCH_SIZE as u32).unwrap();
    let (log, mut writer, _) =
        open(&data, &dir.path().join("0.ring"), &config, OpenMode::Create).unwrap();
    let mut buffer = vec![0u8; BATCH_SIZE];
    let size = fill_batch(&mut buffer, 1024, 0).unwrap();
    let batch = BatchView::validate(&buffer[..size], BATCH_SIZE as u32).unwrap();
    // One lap first, so every page has been written once (steady state, not first-touch).
    while log.used_bytes() + 2 * config.chunk_size() < config.capacity() {
        writer.append(&batch).unwrap();
    }
    let mut group = c.benchmark_group("ring");
    group.throughput(Throughput::Bytes(size as u64));
    group.bench_function("append/1KiB", |b| {
        b.iter(|| black_box(writer.append(&batch).unwrap().base_offset))
    });

    let mut target = vec![0u8; RING_CAPACITY as usize];
    let mut place = 0usize;
    group.bench_function("memcpy/1KiB", |b| {
        b.iter(|| {
            if place + size > target.len() {
                place = 0;
            }
            target[place..place + size].copy_from_slice(black_box(&buffer[..size]));
            place += size;
            black_box(target[place - 1])
        })
    });

    let records_per_batch = batch.record_count() as u64;
    let mut offset = log.earliest_offset();
    group.bench_function("read/1KiB", |b| {
        b.iter(|| {
            if offset + 2 * records_per_batch >= log.next_offset() {
                offset = log.earliest_offset() + records_per_batch;
            }
            let outcome = log.read(offset, BATCH_SIZE).unwrap();
            offset += outcome.record_count;
            black_box(outcome.batches.len())
        })
    });
    group.finish();
}

criterion_group!(benches, batch_encode, batch_validate, pool, ring_append);
criterion_main!(benches);
