//! Criterion benchmarks of the produce and fetch paths in isolation: a request frame body in, a
//! response out, through the broker core that every front end calls (decode; validate in place
//! and append under the writer lock; read a view of the log and encode the response head),
//! without sockets.
//!
//! Run: `cargo bench -p ringmq-benches --bench handlers`.

#![allow(clippy::unwrap_used, reason = "a benchmark that cannot set up should stop loudly")]

use std::hint::black_box;
use std::sync::Arc;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use ringmq_benches::fill_batch;
use ringmq_broker::config::Config;
use ringmq_broker::core::Core;
use ringmq_broker::metrics::Metrics;
use ringmq_protocol::message::{Fetch, FetchReply, Produce, ProduceReply};
use ringmq_protocol::{Acks, BatchView, Opcode, Request};

fn handlers(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = Config {
        data_dir: dir.path().join("data"),
        partition_capacity_default: 256 << 20,
        partition_capacity_max: 1 << 30,
        ..Config::default()
    };
    let core = runtime.block_on(Core::open(&config, Arc::new(Metrics::new()))).unwrap();
    let caller = ringmq_broker::core::Caller::anonymous();
    runtime.block_on(core.create_topic(&caller, "bench", 1, 256 << 20, 0)).unwrap();
    let topic = core.topic(&caller, "bench").unwrap();
    let partition = core.partition(&topic, 0).unwrap();

    let mut batch = vec![0u8; 64 << 10];
    let size = fill_batch(&mut batch, 1024, 0).unwrap();
    let mut body = Vec::new();
    Request::Produce(Produce {
        topic: "bench",
        partition: 0,
        acks: Acks::Written,
        timeout_ms: 0,
        batch: &batch[..size],
    })
    .encode(&mut body)
    .unwrap();
    let mut out = Vec::with_capacity(4096);

    let mut group = c.benchmark_group("handler");
    group.throughput(Throughput::Bytes(size as u64));
    group.bench_function("produce/1KiB", |b| {
        b.iter(|| {
            let Some(Request::Produce(produce)) =
                Request::decode(Opcode::Produce, black_box(&body)).unwrap()
            else {
                unreachable!()
            };
            let produced = runtime
                .block_on(core.produce(&caller, &partition, produce.batch, produce.acks, None))
                .unwrap();
            out.clear();
            let reply = ProduceReply { base_offset: produced.base_offset };
            ringmq_protocol::message::encode_response_frame(Opcode::Produce, 1, &mut out, |body| {
                reply.encode(body);
                Ok(())
            })
            .unwrap();
            black_box(out.len())
        })
    });

    let records_per_batch =
        BatchView::validate(&batch[..size], 1 << 20).unwrap().record_count() as u64;
    let mut offset = core.offsets(&partition).earliest;
    group.bench_function("fetch/1KiB", |b| {
        b.iter(|| {
            let offsets = core.offsets(&partition);
            if offset + records_per_batch >= offsets.next {
                offset = offsets.earliest + records_per_batch;
            }
            let mut request = Vec::new();
            Request::Fetch(Fetch {
                topic: "bench",
                partition: 0,
                offset,
                max_bytes: 64 << 10,
                max_wait_ms: 0,
                min_bytes: 1,
            })
            .encode(&mut request)
            .unwrap();
            let Some(Request::Fetch(fetch)) = Request::decode(Opcode::Fetch, &request).unwrap()
            else {
                unreachable!()
            };
            let outcome =
                core.read(&caller, &partition, fetch.offset, fetch.max_bytes as usize).unwrap();
            out.clear();
            FetchReply::encode_frame_head(
                1,
                outcome.earliest_offset,
                outcome.next_offset,
                outcome.batches.len(),
                &mut out,
            )
            .unwrap();
            offset += outcome.record_count;
            black_box((out.len(), outcome.batches.len()))
        })
    });
    group.finish();
}

criterion_group!(benches, handlers);
criterion_main!(benches);
