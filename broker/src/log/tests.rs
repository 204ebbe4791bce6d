//! Tests of the log as a whole: a model test against a `VecDeque`, restarts, crash images,
//! leases, durability and poisoning. Each names the DESIGN.md invariant it checks.

use std::collections::VecDeque;

use proptest::prelude::*;
use ringmq_protocol::{BatchBuilder, BatchView, Batches, Record};

use super::*;

/// A seeded generator for randomized tests: `TEST_SEED` replays a run; the seed is printed so a
/// failing run can be replayed.
pub(crate) struct TestRng(u64);

impl TestRng {
    pub(crate) fn from_env(test: &str) -> Self {
        let seed = std::env::var("TEST_SEED")
            .ok()
            .and_then(|seed| seed.parse().ok())
            .unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap()
                    .as_nanos() as u64
            });
        eprintln!("{test}: TEST_SEED={seed}");
        Self(seed.max(1))
    }

    pub(crate) fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    pub(crate) fn below(&mut self, bound: u64) -> u64 {
        self.next() % bound.max(1)
    }
}

const CHUNK: u64 = 4096;

fn config(chunks: u64) -> LogConfig {
    let mut config = LogConfig::new(CHUNK * chunks, Some(CHUNK), 2048).unwrap();
    config.prefault = false;
    config
}

/// A batch of records whose values are derived from `tag`, so content can be checked anywhere.
fn batch(values: &[Vec<u8>]) -> Vec<u8> {
    let mut buffer = vec![0; 8192];
    let mut builder = BatchBuilder::new(&mut buffer, 1_000).unwrap();
    for value in values {
        assert_eq!(
            builder.push(&Record::value(value, 1_000)).unwrap(),
            ringmq_protocol::Push::Appended
        );
    }
    builder.finish().unwrap().to_vec()
}

fn value_for(offset: u64, size: usize) -> Vec<u8> {
    (0..size).map(|index| (offset as usize * 31 + index) as u8).collect()
}

fn append_values(writer: &mut LogWriter, values: &[Vec<u8>]) -> Result<Appended, StorageError> {
    let bytes = batch(values);
    let view = BatchView::validate(&bytes, u32::MAX).unwrap();
    writer.append(&view)
}

/// Every record from `offset` on in a read, as (offset, value).
fn records_of(outcome: &ReadOutcome) -> Vec<(u64, Vec<u8>)> {
    let mut records = Vec::new();
    for batch in Batches::new(&outcome.batches, u32::MAX) {
        let batch = batch.expect("served batches validate");
        for record in batch.records().expect("uncompressed") {
            records.push((
                batch.base_offset() + u64::from(record.offset_delta),
                record.value.unwrap_or_default().to_vec(),
            ));
        }
    }
    records
}

/// Reads everything from the earliest offset to the end.
fn read_all(log: &Log) -> Vec<(u64, Vec<u8>)> {
    let mut offset = log.earliest_offset();
    let mut all = Vec::new();
    while offset < log.next_offset() {
        let outcome = log.read(offset, 1 << 20).unwrap();
        let records = records_of(&outcome);
        assert!(!records.is_empty(), "read at {offset} returned nothing");
        all.extend(records.into_iter().filter(|(o, _)| *o >= offset));
        offset = all.last().unwrap().0 + 1;
    }
    all
}

#[derive(Debug, Clone)]
enum Op {
    Append(Vec<usize>),
    Read(u64),
    Hold(u64),
    Release,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => proptest::collection::vec(0usize..300, 1..6).prop_map(Op::Append),
        3 => any::<u64>().prop_map(Op::Read),
        1 => any::<u64>().prop_map(Op::Hold),
        1 => Just(Op::Release),
    ]
}

/// Records read back: (offset, value).
type Records = Vec<(u64, Vec<u8>)>;

struct ModelBatch {
    base: u64,
    values: Vec<Vec<u8>>,
    size: u64,
}

proptest! {
    #![proptest_config(ProptestConfig { cases: if cfg!(miri) { 2 } else { 64 }, ..ProptestConfig::default() })]

    /// Invariants 1 and 3: random appends and reads over many wraps against an in-memory model.
    /// Offsets are dense, data is byte-identical, reclaimed offsets answer `OffsetOutOfRange` with
    /// the earliest offset held, and a held lease blocks reclamation (never corrupts a read).
    #[test]
    fn model_test_against_vecdeque(ops in proptest::collection::vec(op(), 1..400)) {
        let chunks = 8;
        let (log, mut writer, _) = open_in_memory(&config(chunks)).unwrap();
        let mut model: VecDeque<ModelBatch> = VecDeque::new();
        let mut next = 0u64;
        let mut held: Option<(ReadOutcome, Records)> = None;
        for op in ops {
            match op {
                Op::Append(sizes) => {
                    let values: Vec<Vec<u8>> = sizes.iter().enumerate().map(|(i, &size)| value_for(next + i as u64, size)).collect();
                    let size = batch(&values).len() as u64;
                    let appended = match append_values(&mut writer, &values) {
                        Err(StorageError::ChunkBusy { readers }) => {
                            prop_assert!(held.is_some() && readers == 1, "busy without a lease");
                            // The held view is still intact while it blocks the writer.
                            let (outcome, expected) = held.take().unwrap();
                            prop_assert_eq!(records_of(&outcome), expected);
                            drop(outcome);
                            append_values(&mut writer, &values).unwrap()
                        }
                        other => other.unwrap(),
                    };
                    prop_assert_eq!(appended.base_offset, next, "offsets are dense");
                    next += values.len() as u64;
                    prop_assert_eq!(appended.next_offset, next);
                    model.push_back(ModelBatch { base: appended.base_offset, values, size });
                }
                Op::Read(pick) | Op::Hold(pick) => {
                    let offset = pick % (next + 3);
                    let earliest = log.earliest_offset();
                    while model.front().is_some_and(|b| b.base + b.values.len() as u64 <= earliest) {
                        model.pop_front();
                    }
                    // Retention by size: everything from the earliest offset on is held, and that
                    // is at least all but one chunk's worth of batches (less padding waste).
                    let retained: u64 = model.iter().map(|b| b.size).sum();
                    prop_assert!(model.front().is_none_or(|b| b.base == earliest));
                    let waste_per_chunk = 2048 + 64;
                    prop_assert!(
                        next == 0 || retained + (chunks * waste_per_chunk) >= (chunks - 1) * CHUNK
                            || model.len() as u64 == next.min(model.len() as u64) && earliest == 0,
                        "retained {retained} bytes of a {} byte ring", chunks * CHUNK
                    );
                    match log.read(offset, 3000) {
                        Err(ReadError::OffsetOutOfRange { earliest: e, next: n, .. }) => {
                            prop_assert!(offset < earliest || offset > next);
                            prop_assert_eq!((e, n), (earliest, next));
                        }
                        Err(other) => prop_assert!(false, "unexpected {other:?}"),
                        Ok(outcome) => {
                            prop_assert!(offset >= earliest && offset <= next);
                            let records = records_of(&outcome);
                            if offset == next {
                                prop_assert!(records.is_empty());
                                continue;
                            }
                            prop_assert!(records.first().unwrap().0 <= offset);
                            prop_assert!(records.last().unwrap().0 >= offset);
                            for (record_offset, value) in &records {
                                let model_batch = model.iter().find(|b| b.base <= *record_offset && *record_offset < b.base + b.values.len() as u64).unwrap();
                                prop_assert_eq!(value, &model_batch.values[(record_offset - model_batch.base) as usize]);
                            }
                            for pair in records.windows(2) {
                                prop_assert_eq!(pair[0].0 + 1, pair[1].0, "dense within a read");
                            }
                            if matches!(op, Op::Hold(_)) && held.is_none() {
                                held = Some((outcome, records));
                            }
                        }
                    }
                }
                Op::Release => {
                    if let Some((outcome, expected)) = held.take() {
                        prop_assert_eq!(records_of(&outcome), expected, "a leased view never changes");
                    }
                }
            }
        }
    }
}

/// Invariant 3: the writer never reclaims a chunk while a read lease is held.
#[test]
fn lease_blocks_the_writer_until_released() {
    let (log, mut writer, _) = open_in_memory(&config(4)).unwrap();
    let values = vec![vec![7u8; 900]; 2];
    append_values(&mut writer, &values).unwrap();
    let held = log.read(0, 1).unwrap();
    let snapshot = held.batches.to_vec();
    let mut busy = None;
    for _ in 0..100 {
        match append_values(&mut writer, &values) {
            Ok(_) => {}
            Err(StorageError::ChunkBusy { readers }) => {
                busy = Some(readers);
                break;
            }
            Err(other) => panic!("{other}"),
        }
    }
    assert_eq!(busy, Some(1), "the writer must stop at the leased chunk");
    assert_eq!(&*held.batches, &snapshot[..], "the leased bytes are unchanged");
    // New readers of the chunk being reclaimed are told it is gone.
    assert!(matches!(log.read(0, 1), Err(ReadError::OffsetOutOfRange { .. })));
    let copy = held.batches.to_vec();
    assert!(matches!(append_values(&mut writer, &values), Err(StorageError::ChunkBusy { .. })));
    drop(held);
    assert_eq!(copy, snapshot, "a copy outlives the lease");
    append_values(&mut writer, &values).unwrap();
    assert!(log.earliest_offset() > 0);
}

/// Invariant 1 across restarts, clean and unclean; invariant 4 on a process crash.
#[test]
#[cfg_attr(miri, ignore = "file mmap")]
fn restart_keeps_offsets_dense() {
    let dir = tempfile::tempdir().unwrap();
    let data = DataDir::lock(dir.path()).unwrap();
    let path = dir.path().join("0.ring");
    let config = config(8);
    let (log, mut writer, report) = open(&data, &path, &config, OpenMode::Create).unwrap();
    assert_eq!(report.mode, RecoveryMode::Fresh);
    let mut next = 0;
    for round in 0..120u64 {
        let values: Vec<Vec<u8>> = (0..1 + round % 4)
            .map(|i| value_for(next + i, 100 + (round as usize * 7) % 300))
            .collect();
        next = append_values(&mut writer, &values).unwrap().next_offset;
    }
    let before = read_all(&log);
    writer.close().unwrap();
    drop(log);

    let (log, mut writer, report) = open(&data, &path, &config, OpenMode::Existing).unwrap();
    assert_eq!(report.mode, RecoveryMode::Clean);
    assert_eq!((log.next_offset(), read_all(&log)), (next, before.clone()));
    for round in 0..30u64 {
        let values = vec![value_for(next, 50 + round as usize)];
        let appended = append_values(&mut writer, &values).unwrap();
        assert_eq!(appended.base_offset, next);
        next = appended.next_offset;
    }
    let before = read_all(&log);
    // No close: the superblock still says "not cleanly stopped", as after kill -9.
    drop((log, writer));
    let (log, _writer, report) = open(&data, &path, &config, OpenMode::Existing).unwrap();
    assert_eq!(report.mode, RecoveryMode::Scanned);
    assert!(report.truncated.is_none());
    assert_eq!(log.next_offset(), next);
    assert_eq!(read_all(&log), before);
    for (index, (offset, value)) in before.iter().enumerate() {
        assert_eq!(*value, value_for(*offset, value.len()), "record {index}");
    }
}

/// Control batches (a replicated partition's blank and membership entries) are batches the ring
/// holds like any other: a restart's scan keeps them and every batch after them.
#[test]
#[cfg_attr(miri, ignore = "file mmap")]
fn a_scan_keeps_control_batches() {
    let dir = tempfile::tempdir().unwrap();
    let data = DataDir::lock(dir.path()).unwrap();
    let path = dir.path().join("0.ring");
    let config = config(8);
    let (log, mut writer, _) = open(&data, &path, &config, OpenMode::Create).unwrap();
    let mut buffer = vec![0; 256];
    let mut builder = BatchBuilder::new(&mut buffer, 0).unwrap().control();
    let key = [0u8, 0, 0, 100];
    let control = Record { key: Some(&key), ..Record::value(b"", 0) };
    assert_eq!(builder.push(&control).unwrap(), ringmq_protocol::Push::Appended);
    let control = builder.finish().unwrap().to_vec();
    for round in 0..20u64 {
        if round % 3 == 0 {
            writer.append(&BatchView::validate_control(&control, u32::MAX).unwrap()).unwrap();
        } else {
            append_values(&mut writer, &[value_for(round, 200)]).unwrap();
        }
    }
    // Every batch as stored, each of the kind it was written as.
    let stored = |log: &Log| -> Vec<(bool, Vec<u8>)> {
        let mut batches = Vec::new();
        let mut offset = log.earliest_offset();
        while offset < log.next_offset() {
            let outcome = log.read(offset, 1 << 20).unwrap();
            let mut rest = &outcome.batches[..];
            while !rest.is_empty() {
                let size = ringmq_protocol::BatchHeader::peek(rest).unwrap().batch_len();
                let view = BatchView::validate_stored(&rest[..size], u32::MAX).unwrap();
                offset = view.header().next_offset();
                batches.push((view.header().is_control(), rest[..size].to_vec()));
                rest = &rest[size..];
            }
        }
        batches
    };
    let before = stored(&log);
    assert_eq!(before.len(), 20);
    assert_eq!(before.iter().filter(|(control, _)| *control).count(), 7);
    let next = log.next_offset();
    // No close, as after kill -9: the scan reads every batch back.
    drop((log, writer));
    let (log, _writer, report) = open(&data, &path, &config, OpenMode::Existing).unwrap();
    assert_eq!(report.mode, RecoveryMode::Scanned);
    assert!(report.truncated.is_none(), "{:?}", report.truncated);
    assert_eq!(log.next_offset(), next);
    assert_eq!(stored(&log), before);
}

/// Every open of a ring steps its incarnation word (same-host readers of a broker that died check
/// their copies against it), and no superblock write, clean close or crash touches it.
#[test]
#[cfg_attr(miri, ignore = "file mmap")]
fn every_open_steps_the_incarnation_and_nothing_else_writes_it() {
    let dir = tempfile::tempdir().unwrap();
    let data = DataDir::lock(dir.path()).unwrap();
    let path = dir.path().join("0.ring");
    let incarnation = || {
        let bytes = std::fs::read(&path).unwrap();
        u64::from_le_bytes(bytes[INCARNATION_AT..INCARNATION_AT + 8].try_into().unwrap())
    };
    let config = config(4).with_local_readers(true);
    let (log, mut writer, _) = open(&data, &path, &config, OpenMode::Create).unwrap();
    assert!(log.local_files().is_some());
    for round in 0..20u8 {
        append_values(&mut writer, &[vec![round; 700]]).unwrap();
    }
    log.sync().unwrap();
    assert_eq!(incarnation(), 1);
    writer.close().unwrap();
    drop(log);
    assert_eq!(incarnation(), 1, "a clean close leaves it");
    for expected in 2..5 {
        let (log, mut writer, _) = open(&data, &path, &config, OpenMode::Existing).unwrap();
        assert_eq!(incarnation(), expected);
        append_values(&mut writer, &[vec![9; 100]]).unwrap();
        log.sync().unwrap();
        // A crash (no close): the next open steps it again.
        drop((log, writer));
    }
    let (log, _writer, _) = open(&data, &path, &config, OpenMode::Existing).unwrap();
    assert_eq!(incarnation(), 5);
    assert!(read_all(&log).iter().any(|(_, value)| value == &vec![19u8; 700]));
}

#[test]
#[cfg_attr(miri, ignore = "file mmap")]
fn opening_a_mismatched_or_damaged_file_names_the_file_and_problem() {
    let dir = tempfile::tempdir().unwrap();
    let data = DataDir::lock(dir.path()).unwrap();
    let path = dir.path().join("3.ring");
    let (_, writer, _) = open(&data, &path, &config(8), OpenMode::Create).unwrap();
    writer.close().unwrap();

    let error = open(&data, &path, &config(16), OpenMode::Existing).unwrap_err().to_string();
    assert!(error.contains("3.ring") && error.contains("capacity"), "{error}");

    let original = std::fs::read(&path).unwrap();
    let mut bytes = original.clone();
    bytes[0] = b'X';
    bytes[SUPERBLOCK_SIZE] = b'X';
    std::fs::write(&path, &bytes).unwrap();
    let error = open(&data, &path, &config(8), OpenMode::Existing).unwrap_err().to_string();
    assert!(error.contains("3.ring") && error.contains("not a ringmq ring file"), "{error}");

    std::fs::write(&path, &original).unwrap();
    let file = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
    file.set_len(1000).unwrap();
    let error = open(&data, &path, &config(8), OpenMode::Existing).unwrap_err().to_string();
    assert!(error.contains("3.ring") && error.contains("1000 bytes"), "{error}");

    let error = open(&data, &path, &config(8), OpenMode::Create).unwrap_err().to_string();
    assert!(error.contains("could not create"), "{error}");
    assert!(path.exists(), "a failed create must not remove an existing file");

    assert!(matches!(DataDir::lock(dir.path()), Err(StorageError::Locked { .. })));
}

#[test]
#[cfg_attr(miri, ignore = "file mmap")]
fn a_cancelled_create_removes_its_file_and_a_finished_one_counts_every_byte() {
    let dir = tempfile::tempdir().unwrap();
    let data = DataDir::lock(dir.path()).unwrap();
    let mut prefaulted = config(8);
    prefaulted.prefault = true;
    let path = dir.path().join("0.ring");
    for config in [config(8), prefaulted] {
        let written = AtomicU64::new(0);
        let error = create(&data, &path, &config, &AtomicBool::new(true), &written).unwrap_err();
        assert!(matches!(error, StorageError::Cancelled { .. }), "{error}");
        assert!(error.to_string().contains("0.ring"), "{error}");
        assert!(!path.exists(), "a cancelled create leaves no file");
        assert_eq!(written.load(Ordering::Relaxed), 0);

        let (log, writer) =
            create(&data, &path, &config, &AtomicBool::new(false), &written).unwrap();
        let file_size = std::fs::metadata(&path).unwrap().len();
        assert_eq!(written.load(Ordering::Relaxed), file_size);
        drop((log, writer));
        std::fs::remove_file(&path).unwrap();
    }
}

#[test]
#[cfg_attr(miri, ignore = "file mmap")]
fn one_damaged_superblock_copy_is_repaired_from_the_other() {
    let dir = tempfile::tempdir().unwrap();
    let data = DataDir::lock(dir.path()).unwrap();
    let path = dir.path().join("0.ring");
    let (_, mut writer, _) = open(&data, &path, &config(8), OpenMode::Create).unwrap();
    append_values(&mut writer, &[vec![1; 10]]).unwrap();
    writer.close().unwrap();
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[40] ^= 0xFF;
    std::fs::write(&path, &bytes).unwrap();
    let (log, _, report) = open(&data, &path, &config(8), OpenMode::Existing).unwrap();
    assert!(report.superblock_repaired.unwrap().contains("checksum"));
    assert_eq!(log.next_offset(), 1);
}

/// Invariant 5 and the poisoning rule: a sync makes published batches durable; a failed sync
/// stops the log from accepting writes.
#[test]
fn failed_sync_poisons_the_log() {
    let (log, mut writer, _) = open_in_memory(&config(4)).unwrap();
    append_values(&mut writer, &[vec![1; 10], vec![2; 10]]).unwrap();
    assert_eq!(log.sync().unwrap().offset, 2);
    assert_eq!(log.durable_offset(), 2);
    append_values(&mut writer, &[vec![3; 10]]).unwrap();
    log.inject_sync_failure();
    let error = log.sync().unwrap_err();
    assert_eq!(error.step, FailedStep::Sync, "{error}");
    assert!(error.to_string().contains("msync"), "{error}");
    assert_eq!(log.durable_offset(), 2, "nothing is acknowledged as durable by a failed sync");
    assert!(matches!(
        append_values(&mut writer, &[vec![4; 10]]),
        Err(StorageError::Poisoned { .. })
    ));
    assert!(log.poisoned().is_some());
    assert_eq!(log.read(0, 1 << 20).map(|o| records_of(&o).len()).unwrap(), 3, "reads go on");
}

#[test]
fn oversized_batches_are_refused_before_any_write() {
    let mut config = config(4);
    config.batch_size_max = 512;
    let (log, mut writer, _) = open_in_memory(&config).unwrap();
    let error = append_values(&mut writer, &[vec![0; 600]]).unwrap_err();
    assert!(matches!(error, StorageError::BatchTooLarge { max: 512, .. }), "{error}");
    assert_eq!(log.next_offset(), 0);
}

#[test]
fn config_checks_every_limit() {
    assert!(LogConfig::new(4096, None, 1 << 20).is_err(), "too small");
    assert!(LogConfig::new(CAPACITY_MAX + 1, None, 1 << 20).is_err());
    assert!(LogConfig::new(1 << 20, Some(1000), 1 << 20).is_err(), "chunk not page-sized");
    assert!(LogConfig::new(1 << 20, Some(1 << 19), 1 << 20).is_err(), "only two chunks");
    assert!(LogConfig::new(1 << 20, None, 10).is_err(), "batch limit too small");
    let auto = LogConfig::new(1 << 30, None, 1 << 20).unwrap();
    assert_eq!((auto.chunk_size, auto.capacity), (16 << 20, 1 << 30));
    let small = LogConfig::new(1 << 20, None, 1 << 20).unwrap();
    assert_eq!(small.chunk_size, 256 << 10);
    assert_eq!(
        small.batch_size_max,
        (256 << 10) - entry::CHUNK_FRAMING_SIZE as u32,
        "a batch and its framing never exceed a chunk"
    );
    let odd = LogConfig::new(100_000_000, None, 1 << 20).unwrap();
    assert_eq!(odd.capacity % odd.chunk_size, 0);
    let error = LogConfig::new(1 << 20, Some(1000), 1 << 20).unwrap_err().to_string();
    assert!(error.contains("chunk_size 1000"), "{error}");
}

/// Images of the file after each append, for building crash images.
struct History {
    images: Vec<Vec<u8>>,
    appended: Vec<(Appended, Vec<Vec<u8>>)>,
    config: LogConfig,
}

fn history(rng: &mut TestRng, chunks: u64, batches: usize) -> History {
    let dir = tempfile::tempdir().unwrap();
    let data = DataDir::lock(dir.path()).unwrap();
    let path = dir.path().join("0.ring");
    let config = config(chunks);
    let (_log, mut writer, _) = open(&data, &path, &config, OpenMode::Create).unwrap();
    let mut images = vec![std::fs::read(&path).unwrap()];
    let mut appended = Vec::new();
    for _ in 0..batches {
        let next = writer.next_offset();
        let values: Vec<Vec<u8>> =
            (0..1 + rng.below(5)).map(|i| value_for(next + i, rng.below(400) as usize)).collect();
        appended.push((append_values(&mut writer, &values).unwrap(), values));
        images.push(std::fs::read(&path).unwrap());
    }
    History { images, appended, config }
}

/// Checks a recovered log serves a prefix of `history`'s batches, byte-identical, ending at or
/// after batch `at_least` (exclusive) and at or before `at_most` (exclusive).
fn assert_prefix(log: &Log, history: &History, at_least: usize, at_most: usize) {
    let records = read_all(log);
    for (offset, value) in &records {
        let (_, values) = history
            .appended
            .iter()
            .find(|(a, _)| a.base_offset <= *offset && *offset < a.next_offset)
            .expect("served record was written");
        let (appended, _) = history
            .appended
            .iter()
            .find(|(a, _)| a.base_offset <= *offset && *offset < a.next_offset)
            .unwrap();
        assert_eq!(
            value,
            &values[(offset - appended.base_offset) as usize],
            "corrupt record {offset}"
        );
    }
    let end = log.next_offset();
    let low = history.appended.get(at_least.wrapping_sub(1)).map_or(0, |(a, _)| a.next_offset);
    let high = history.appended.get(at_most.wrapping_sub(1)).map_or(0, |(a, _)| a.next_offset);
    assert!(end >= low && end <= high, "recovered end {end} outside {low}..={high}");
    assert!(
        history.appended.iter().any(|(a, _)| a.next_offset == end) || end == 0,
        "end {end} is a batch boundary"
    );
}

/// Invariant 4: a crash at any byte of any write leaves a log that recovery cuts at the last
/// whole batch: nothing before it lost, nothing after it served.
///
/// The write of batch `k` is every byte that differs between the file before and after it, in
/// the order the writer makes them: the previous chunk's end marker and close entry (when the
/// batch starts a new chunk), then the batch, then its ring entry. A crash keeps a prefix.
#[test]
#[cfg_attr(miri, ignore = "file mmap")]
fn crash_mid_write_recovers_the_written_prefix() {
    let mut rng = TestRng::from_env("crash_mid_write_recovers_the_written_prefix");
    let history = history(&mut rng, 4, 150);
    let layout = history.config.layout().unwrap();
    let place = |position: u64| (DATA_START + position % layout.capacity()) as usize;
    for _ in 0..150 {
        let k = rng.below(history.appended.len() as u64) as usize;
        let (appended, _) = &history.appended[k];
        let (before, after) = (&history.images[k], &history.images[k + 1]);
        let (batch_from, batch_to) =
            (place(batch_start(&history, k)), place(appended.end_position - 1) + 1);
        let chunk = layout.chunk_size() as usize;
        let slot_of = |at: usize| (at - DATA_START as usize) / chunk;
        let mut written: Vec<usize> =
            (0..before.len()).filter(|&at| before[at] != after[at]).collect();
        // Old chunk first, then the batch, then its entry (after the batch in the same chunk).
        written.sort_by_key(|&at| {
            let group = if (batch_from..batch_to).contains(&at) {
                1
            } else if slot_of(at) == slot_of(batch_from) && at >= batch_to {
                2
            } else {
                0
            };
            (group, at)
        });
        let cut = rng.below(written.len() as u64 + 1) as usize;
        let mut image = before.clone();
        for &at in &written[..cut] {
            image[at] = after[at];
        }
        let (log, _, report) = open_image(&image, &history.config).unwrap();
        assert_eq!(report.mode, RecoveryMode::Scanned);
        let whole = cut == written.len();
        let end = if whole { k + 1 } else { k };
        assert_prefix(&log, &history, end, end);
    }
}

/// Invariant 4: random bytes flipped anywhere never make recovery serve a corrupt record.
#[test]
#[cfg_attr(miri, ignore = "file mmap")]
fn random_corruption_never_serves_corrupt_data() {
    let mut rng = TestRng::from_env("random_corruption_never_serves_corrupt_data");
    let history = history(&mut rng, 6, 200);
    let last = history.images.last().unwrap();
    for _ in 0..200 {
        let mut image = last.clone();
        for _ in 0..1 + rng.below(5) {
            let at = DATA_START as usize + rng.below(image.len() as u64 - DATA_START) as usize;
            image[at] ^= 1 + rng.below(255) as u8;
        }
        let (log, _, _) = open_image(&image, &history.config).unwrap();
        assert_prefix(&log, &history, 0, history.appended.len());
    }
}

/// Invariant 4: a valid batch from an earlier lap right after the tail is not taken as new data,
/// and a torn last batch ends the log.
#[test]
#[cfg_attr(miri, ignore = "file mmap")]
fn stale_lap_and_torn_tail_images() {
    let mut rng = TestRng::from_env("stale_lap_and_torn_tail_images");
    let history = history(&mut rng, 4, 120);
    let layout = history.config.layout().unwrap();
    // Find a batch that starts a new chunk after the first lap: the bytes after it are a stale
    // lap's batches with valid CRCs.
    let k = (1..history.appended.len())
        .find(|&k| {
            batch_start(&history, k).is_multiple_of(CHUNK)
                && batch_start(&history, k) >= layout.capacity()
        })
        .expect("the history wraps");
    let (log, _, _) = open_image(&history.images[k + 1], &history.config).unwrap();
    assert_eq!(log.next_offset(), history.appended[k].0.next_offset);
    assert_prefix(&log, &history, k + 1, k + 1);
    // Torn: the padding before batch k and all of batch k but its last byte are written.
    let mut image = history.images[k].clone();
    let previous_end = history.appended[k - 1].0.end_position;
    copy_positions(
        &mut image,
        &history.images[k + 1],
        &layout,
        previous_end,
        history.appended[k].0.end_position - 1,
    );
    let (log, _, report) = open_image(&image, &history.config).unwrap();
    assert_prefix(&log, &history, k, k);
    assert!(report.truncated.is_some());
}

fn batch_start(history: &History, k: usize) -> u64 {
    let (appended, values) = &history.appended[k];
    appended.end_position - batch(values).len() as u64
}

/// Copies the bytes at positions `from..to` of the ring from `source` into `image`.
fn copy_positions(image: &mut [u8], source: &[u8], layout: &Layout, from: u64, to: u64) {
    for position in from..to {
        let place = (DATA_START + position % layout.capacity()) as usize;
        image[place] = source[place];
    }
}

/// Power loss with `synced` acknowledgements: after a sync, only what it covered is promised.
/// An OS crash image keeps the data area as of the last sync, plus any subset of the pages
/// written since, plus one page torn part-way; the superblocks as last written (each write is
/// synced), possibly with the copy being written torn. Recovery must keep every record below the synced offset
/// that the log still held, byte-identical, and serve nothing that was not written.
#[test]
#[cfg_attr(miri, ignore = "file mmap")]
fn os_crash_images_keep_every_synced_record() {
    let mut rng = TestRng::from_env("os_crash_images_keep_every_synced_record");
    const PAGE: usize = 4096;
    for round in 0..60 {
        let dir = tempfile::tempdir().unwrap();
        let data = DataDir::lock(dir.path()).unwrap();
        let path = dir.path().join("0.ring");
        let config = config(6);
        let (log, mut writer, _) = open(&data, &path, &config, OpenMode::Create).unwrap();
        let mut disk = std::fs::read(&path).unwrap();
        let mut synced = 0;
        let mut written: Vec<Vec<u8>> = Vec::new();
        for _ in 0..50 + rng.below(250) {
            let next = writer.next_offset();
            let values: Vec<Vec<u8>> = (0..1 + rng.below(5))
                .map(|i| value_for(next + i, rng.below(300) as usize))
                .collect();
            append_values(&mut writer, &values).unwrap();
            written.extend(values);
            if rng.below(10) == 0 {
                synced = log.sync().unwrap().offset;
                // Everything published is on disk now.
                disk = std::fs::read(&path).unwrap();
            }
        }
        let earliest_before_crash = log.earliest_offset();
        let memory = std::fs::read(&path).unwrap();
        drop((log, writer));
        let mut image = disk.clone();
        // Every superblock write is synced (copy A, then copy B) before the call that made it
        // returns, so the disk holds the newest superblock; a crash while rewriting it tears the
        // copy being written, and recovery must fall back to the other.
        let superblocks = DATA_START as usize;
        image[..superblocks].copy_from_slice(&memory[..superblocks]);
        if rng.below(3) == 0 {
            let copy = rng.below(2) as usize * PAGE;
            let cut = rng.below(64) as usize;
            image[copy + cut..copy + PAGE].fill(0);
        }
        let changed: Vec<usize> = (superblocks / PAGE..memory.len() / PAGE)
            .filter(|&page| {
                memory[page * PAGE..(page + 1) * PAGE] != disk[page * PAGE..(page + 1) * PAGE]
            })
            .collect();
        for &page in &changed {
            if rng.below(2) == 0 {
                image[page * PAGE..(page + 1) * PAGE]
                    .copy_from_slice(&memory[page * PAGE..(page + 1) * PAGE]);
            }
        }
        if !changed.is_empty() {
            let page = changed[rng.below(changed.len() as u64) as usize];
            let cut = rng.below(PAGE as u64) as usize;
            image[page * PAGE..page * PAGE + cut]
                .copy_from_slice(&memory[page * PAGE..page * PAGE + cut]);
        }
        let (recovered, _, report) = open_image(&image, &config).unwrap();
        assert!(
            recovered.next_offset() >= synced,
            "round {round}: synced offset {synced} lost; recovered up to {} ({report:?})",
            recovered.next_offset()
        );
        let records = read_all(&recovered);
        for (offset, value) in &records {
            assert_eq!(
                value, &written[*offset as usize],
                "round {round}: record {offset} is not what was written"
            );
        }
        let held: std::collections::HashSet<u64> =
            records.iter().map(|(offset, _)| *offset).collect();
        for offset in earliest_before_crash..synced {
            assert!(
                held.contains(&offset),
                "round {round}: synced record {offset} missing (earliest before {earliest_before_crash}, synced {synced}, recovered {:?}, {report:?})",
                (recovered.earliest_offset(), recovered.next_offset())
            );
        }
    }
}

/// `ListOffsets` by time: the earliest record at or after a timestamp, across chunks and laps,
/// with timestamps that do not grow with offsets.
#[test]
fn offsets_are_found_by_timestamp() {
    let (log, mut writer, _) = open_in_memory(&config(8)).unwrap();
    // Batch k holds 3 records at times 1000 * k + 0, 10, 20, except batch 7 which goes back in time.
    for k in 0..200u64 {
        let base = if k == 7 { 0 } else { 1000 * k as i64 };
        let mut buffer = vec![0; 4096];
        let mut builder = BatchBuilder::new(&mut buffer, base).unwrap();
        for i in 0..3 {
            let _ = builder.push(&Record::value(&[k as u8; 100], base + 10 * i)).unwrap();
        }
        let size = builder.finish().unwrap().len();
        writer.append(&BatchView::validate(&buffer[..size], 2048).unwrap()).unwrap();
    }
    assert!(log.earliest_offset() > 0, "the ring lapped");
    let earliest = log.earliest_offset();
    let first_held = earliest.div_ceil(3);
    let found = log.offset_for_timestamp(1000 * 150 + 5).unwrap();
    assert_eq!((found.offset, found.timestamp), (150 * 3 + 1, 150_010));
    let found = log.offset_for_timestamp(0).unwrap();
    assert_eq!(found.offset, earliest, "everything is at or after time 0");
    assert!(first_held > 8);
    assert_eq!(log.offset_for_timestamp(199_021), None, "nothing that recent");
    assert_eq!(log.offset_for_timestamp(199_020).unwrap().offset, 199 * 3 + 2);
}

/// The kB of the mapping of `path` in this process that are dirty (not yet written back), from
/// `/proc/self/smaps`.
pub(crate) fn dirty_kib_of_mapping(path: &Path) -> u64 {
    let smaps = std::fs::read_to_string("/proc/self/smaps").unwrap();
    let name = path.to_str().unwrap();
    let mut inside = false;
    let mut dirty = 0;
    for line in smaps.lines() {
        let first = line.split_whitespace().next().unwrap_or("");
        if first.contains('-') && first.chars().all(|c| c.is_ascii_hexdigit() || c == '-') {
            inside = line.ends_with(name);
        } else if inside
            && (line.starts_with("Shared_Dirty:") || line.starts_with("Private_Dirty:"))
        {
            dirty += line.split_whitespace().nth(1).unwrap().parse::<u64>().unwrap();
        }
    }
    dirty
}

/// Every sync method writes a real, mapped ring file back, also across the ring's wrap (a
/// synced range in two pieces): after each sync the mapping has no dirty page left, the durable
/// offset covers everything appended, and the reopened log has every record still held.
#[test]
fn every_sync_method_writes_the_ring_back_across_the_wrap() {
    for method in [SyncMethod::Msync, SyncMethod::Fdatasync, SyncMethod::RangeFdatasync] {
        let dir = tempfile::tempdir().unwrap();
        let data = DataDir::lock(dir.path()).unwrap();
        let path = dir.path().join("0.ring");
        let config = config(4).with_sync_method(method);
        assert_eq!(config.sync_method(), method);
        let (log, mut writer, _) = open(&data, &path, &config, OpenMode::Create).unwrap();
        let mut syncs_with_dirty_pages = 0;
        let (capacity, mut wrapped_syncs) = (config.capacity(), 0);
        for round in 0..40u64 {
            let next = writer.next_offset();
            let values: Vec<Vec<u8>> = (0..4).map(|i| value_for(next + i, 300)).collect();
            append_values(&mut writer, &values).unwrap();
            if round % 3 == 2 {
                syncs_with_dirty_pages += u32::from(dirty_kib_of_mapping(&path) > 0);
                let from = log.synced_position();
                assert_eq!(log.sync().unwrap().offset, writer.next_offset(), "{method}");
                let to = log.synced_position();
                // A range that crosses a lap boundary is synced in two pieces.
                wrapped_syncs += u32::from(to > from && from / capacity != (to - 1) / capacity);
                assert_eq!(dirty_kib_of_mapping(&path), 0, "{method}: dirty pages after a sync");
            }
        }
        assert!(syncs_with_dirty_pages > 0, "{method}: the appends dirtied no page");
        assert!(wrapped_syncs > 0, "{method}: no synced range crossed the ring's wrap");
        assert!(log.earliest_offset() > 0, "{method}: the ring lapped");
        let next = writer.next_offset();
        assert_eq!(log.sync().unwrap().offset, next);
        let earliest = log.earliest_offset();
        drop((log, writer));
        let (log, _, _) = open(&data, &path, &config, OpenMode::Existing).unwrap();
        assert_eq!((log.earliest_offset(), log.next_offset()), (earliest, next), "{method}");
        let read = records_of(&log.read(next - 4, 1 << 20).unwrap());
        let expected: Vec<(u64, Vec<u8>)> =
            (next - 4..next).map(|offset| (offset, value_for(offset, 300))).collect();
        assert_eq!(read, expected, "{method}");
    }
}

#[test]
fn sync_methods_parse_and_print() {
    for text in ["msync", "fdatasync", "range+fdatasync"] {
        assert_eq!(text.parse::<SyncMethod>().unwrap().to_string(), text);
    }
    let error = "fsync".parse::<SyncMethod>().unwrap_err().to_string();
    assert!(error.contains("\"fsync\"") && error.contains("range+fdatasync"), "{error}");
}

/// Every written record, committed or not, as `Log::read_written` serves them.
fn written_records(log: &Log) -> Vec<(u64, Vec<u8>)> {
    let mut offset = log.earliest_offset();
    let mut all = Vec::new();
    while offset < log.written_offset() {
        let outcome = log.read_written(offset, 1 << 20).unwrap();
        assert_eq!(outcome.next_offset, log.written_offset());
        let records = records_of(&outcome);
        assert!(!records.is_empty(), "read at {offset} returned nothing");
        all.extend(records.into_iter().filter(|(o, _)| *o >= offset));
        offset = all.last().unwrap().0 + 1;
    }
    all
}

/// The committed records of a log that publishes on commit, as `read_all` sees them.
fn committed_records(log: &Log) -> Vec<(u64, Vec<u8>)> {
    if log.next_offset() == log.earliest_offset() {
        return Vec::new();
    }
    read_all(log)
}

/// A replicated partition's log (publish on commit) against a model, through appends, commits,
/// truncations of the uncommitted tail (within a chunk and back across chunks), syncs and
/// kill -9 restarts: readers see exactly the committed records; after a restart the log holds
/// exactly what was written and not truncated (a truncation is never undone by recovery, and a
/// batch written after it never brings back one it removed), and nothing is published until the
/// owner commits again.
#[test]
#[cfg_attr(miri, ignore = "file mmap")]
fn commits_and_truncations_of_the_uncommitted_tail_survive_restarts() {
    let mut rng =
        TestRng::from_env("commits_and_truncations_of_the_uncommitted_tail_survive_restarts");
    let dir = tempfile::tempdir().unwrap();
    let data = DataDir::lock(dir.path()).unwrap();
    let path = dir.path().join("0.ring");
    let config = config(8).with_publish_on_commit(true);
    let (mut log, mut writer, _) = open(&data, &path, &config, OpenMode::Create).unwrap();
    // Every written record, and the offsets where batches start (truncation points).
    let mut written: Vec<(u64, Vec<u8>)> = Vec::new();
    let mut boundaries: Vec<u64> = vec![0];
    let mut committed = 0u64;
    let mut next = 0u64;
    let mut truncations = 0;
    let mut restarts = 0;
    for step in 0..3_000u64 {
        match rng.below(12) {
            0..=5 => {
                let values: Vec<Vec<u8>> = (0..1 + rng.below(4))
                    .map(|i| value_for(next + i + step, 20 + rng.below(300) as usize))
                    .collect();
                match append_values(&mut writer, &values) {
                    Ok(appended) => {
                        assert_eq!(appended.base_offset, next);
                        for (i, value) in values.into_iter().enumerate() {
                            written.push((next + i as u64, value));
                        }
                        boundaries.push(appended.next_offset);
                        next = appended.next_offset;
                    }
                    Err(StorageError::Uncommitted { .. }) => {
                        // The ring is full of uncommitted batches: commit them all.
                        writer.commit(next).unwrap();
                        committed = next;
                    }
                    Err(error) => panic!("step {step}: {error}"),
                }
            }
            6..=7 => {
                let candidates: Vec<u64> =
                    boundaries.iter().copied().filter(|&b| b >= committed).collect();
                let offset = candidates[rng.below(candidates.len() as u64) as usize];
                writer.commit(offset).unwrap();
                committed = committed.max(offset);
            }
            8..=9 => {
                let candidates: Vec<u64> =
                    boundaries.iter().copied().filter(|&b| b >= committed).collect();
                let offset = candidates[rng.below(candidates.len() as u64) as usize];
                writer.truncate(offset).unwrap();
                let first = written.first().map_or(0, |(offset, _)| *offset);
                written.truncate((offset - first) as usize);
                boundaries.retain(|&b| b <= offset);
                next = offset;
                truncations += 1;
            }
            10 => {
                log.sync().unwrap();
            }
            _ => {
                // kill -9: no close; the shared mapping keeps every byte written.
                drop((log, writer));
                let (reopened, rewriter, _) =
                    open(&data, &path, &config, OpenMode::Existing).unwrap();
                (log, writer) = (reopened, rewriter);
                restarts += 1;
                assert_eq!(log.written_offset(), next, "step {step}: the written log survives");
                assert_eq!(log.next_offset(), log.earliest_offset(), "nothing published on open");
                writer.commit(committed).unwrap();
            }
        }
        // The head may have moved past records the model still holds.
        let earliest = log.earliest_offset();
        if let Some(drop_count) = written.iter().position(|(offset, _)| *offset >= earliest) {
            written.drain(..drop_count);
        } else {
            written.clear();
        }
        boundaries.retain(|&b| b >= earliest);
        assert_eq!(log.next_offset(), committed, "step {step}");
        assert_eq!(log.written_offset(), next, "step {step}");
        if step % 10 == 0 {
            let expected: Vec<_> =
                written.iter().filter(|(offset, _)| *offset < committed).cloned().collect();
            assert_eq!(
                committed_records(&log),
                expected,
                "step {step}: readers see the committed log"
            );
            assert_eq!(written_records(&log), written, "step {step}: the leader reads the tail");
        }
    }
    eprintln!("{truncations} truncations, {restarts} restarts");
    assert!(truncations > 100 && restarts > 100);
}

/// A truncation at the first batch of a chunk keeps the chunk before it whole and hands the
/// later ones back: they are zeroed, so a restart right after it cannot link them to the kept
/// log again (their first offsets would continue it exactly). Also the truncation of everything.
#[test]
#[cfg_attr(miri, ignore = "file mmap")]
fn a_truncation_at_a_chunk_start_is_not_undone_by_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let data = DataDir::lock(dir.path()).unwrap();
    let path = dir.path().join("0.ring");
    let config = config(8).with_publish_on_commit(true);
    let (log, mut writer, _) = open(&data, &path, &config, OpenMode::Create).unwrap();
    // The base offsets of batches that start a chunk (a batch never straddles one).
    let mut chunk_starts = Vec::new();
    let mut last_chunk = None;
    while chunk_starts.len() < 3 {
        let next = writer.next_offset();
        let appended = append_values(&mut writer, &[value_for(next, 500)]).unwrap();
        let chunk = (appended.end_position - 1) / CHUNK;
        if last_chunk != Some(chunk) {
            chunk_starts.push(appended.base_offset);
            last_chunk = Some(chunk);
        }
    }
    let written = writer.next_offset();
    // The first batch of the second chunk: the first chunk stays, whole.
    let cut = chunk_starts[1];
    writer.commit(1).unwrap();
    writer.truncate(cut).unwrap();
    assert_eq!((log.written_offset(), log.next_offset()), (cut, 1));
    drop((log, writer));
    let (log, mut writer, _) = open(&data, &path, &config, OpenMode::Existing).unwrap();
    assert_eq!(log.written_offset(), cut, "written {written}, truncated at {cut}");
    writer.commit(cut).unwrap();
    let records = read_all(&log);
    assert_eq!(records.len() as u64, cut);
    assert!(records.iter().all(|(offset, value)| *value == value_for(*offset, 500)));
    // Everything that is not committed, back to the start.
    let mut writer_next = cut;
    for _ in 0..20 {
        writer_next =
            append_values(&mut writer, &[value_for(writer_next, 300)]).unwrap().next_offset;
    }
    writer.truncate(cut).unwrap();
    drop((log, writer));
    let (log, _writer, _) = open(&data, &path, &config, OpenMode::Existing).unwrap();
    assert_eq!(log.written_offset(), cut);

    // A log all of whose batches are truncated.
    let path = dir.path().join("1.ring");
    let (log, mut writer, _) = open(&data, &path, &config, OpenMode::Create).unwrap();
    for offset in 0..30 {
        append_values(&mut writer, &[value_for(offset, 400)]).unwrap();
    }
    writer.truncate(0).unwrap();
    drop((log, writer));
    let (log, mut writer, _) = open(&data, &path, &config, OpenMode::Existing).unwrap();
    assert_eq!((log.earliest_offset(), log.written_offset()), (0, 0));
    assert_eq!(append_values(&mut writer, &[value_for(0, 10)]).unwrap().base_offset, 0);
}

/// A leader's read of the uncommitted tail holds off a truncation of it: the truncation answers
/// `TruncationBusy` (and nothing is appended meanwhile) until the view is dropped, and the view
/// keeps its bytes throughout. Readers of committed batches never see the tail.
#[test]
fn a_read_of_the_uncommitted_tail_holds_off_its_truncation() {
    let config = config(8).with_publish_on_commit(true);
    let (log, mut writer, _) = open_in_memory(&config).unwrap();
    for offset in 0..6 {
        append_values(&mut writer, &[value_for(offset, 200)]).unwrap();
    }
    writer.commit(2).unwrap();
    assert_eq!(log.read(2, 1 << 20).unwrap().batch_count, 0, "the tail is not committed");
    assert!(matches!(log.read(3, 1 << 20), Err(ReadError::OffsetOutOfRange { next: 2, .. })));
    let tail = log.read_written(3, 1 << 20).unwrap();
    assert_eq!(records_of(&tail).first().map(|(offset, _)| *offset), Some(3));
    let before = tail.batches.to_vec();
    let error = writer.truncate(4).unwrap_err();
    assert!(matches!(error, StorageError::TruncationBusy { readers: 1 }), "{error}");
    assert!(error.to_string().contains("retry"), "{error}");
    let error = append_values(&mut writer, &[value_for(9, 10)]).unwrap_err();
    assert!(matches!(error, StorageError::TruncationBusy { .. }), "{error}");
    assert!(matches!(writer.truncate(5), Err(StorageError::TruncationBusy { .. })));
    assert!(matches!(log.read_written(3, 1 << 20), Err(ReadError::Busy)));
    assert_eq!(&tail.batches[..], &before[..], "the view keeps its bytes");
    drop(tail);
    writer.truncate(4).unwrap();
    assert_eq!(log.written_offset(), 4);
    let appended = append_values(&mut writer, &[value_for(40, 30)]).unwrap();
    assert_eq!(appended.base_offset, 4);
    writer.commit(5).unwrap();
    let records = read_all(&log);
    assert_eq!(records.len(), 5);
    assert_eq!(records[4], (4, value_for(40, 30)), "the rewritten batch, not the truncated one");
    // Committed batches cannot be truncated, and commits and truncations name batch boundaries.
    assert!(matches!(writer.truncate(3), Err(StorageError::NotABoundary { committed: 5, .. })));
    assert!(matches!(writer.commit(9), Err(StorageError::NotABoundary { next: 5, .. })));
}

/// The replication state survives restarts and clean closes, is left alone by every superblock
/// write of the log (syncs, checkpoints, recovery), and a state too large is refused.
#[test]
#[cfg_attr(miri, ignore = "file mmap")]
fn the_replication_state_survives_restarts_and_superblock_writes() {
    let dir = tempfile::tempdir().unwrap();
    let data = DataDir::lock(dir.path()).unwrap();
    let path = dir.path().join("0.ring");
    let config = config(4);
    let (log, mut writer, _) = open(&data, &path, &config, OpenMode::Create).unwrap();
    assert_eq!(log.replication_state(), None);
    log.save_replication_state(b"term 3, voted for 2").unwrap();
    log.save_replication_state(b"term 4, voted for 1").unwrap();
    for offset in 0..200 {
        append_values(&mut writer, &[value_for(offset, 300)]).unwrap();
        log.sync().unwrap();
    }
    let error = log.save_replication_state(&[0; REPLICATION_STATE_MAX + 1]).unwrap_err();
    assert!(error.to_string().contains("larger than the 2024"), "{error}");
    writer.close().unwrap();
    drop(log);
    let (log, writer, _) = open(&data, &path, &config, OpenMode::Existing).unwrap();
    assert_eq!(log.replication_state().as_deref(), Some(&b"term 4, voted for 1"[..]));
    log.save_replication_state(&[5; REPLICATION_STATE_MAX]).unwrap();
    // kill -9, then a scan and its superblock writes.
    drop((log, writer));
    let (log, _writer, report) = open(&data, &path, &config, OpenMode::Existing).unwrap();
    assert_eq!(report.mode, RecoveryMode::Scanned);
    assert_eq!(log.replication_state(), Some(vec![5; REPLICATION_STATE_MAX]));
    log.inject_sync_failure();
    assert!(matches!(log.save_replication_state(b"x"), Err(StorageError::Poisoned(_))));
    assert_eq!(log.replication_state(), Some(vec![5; REPLICATION_STATE_MAX]));
}

/// `LogWriter::retain_from`: the ring reclaims no kept record; the append that would have to
/// fails and writes nothing, and goes through once the limit moves past the oldest chunk. The
/// term set is the one stamped on each batch.
#[test]
fn the_ring_reclaims_no_retained_record() {
    let (log, mut writer, _) = open_in_memory(&config(4)).unwrap();
    writer.set_term(7);
    writer.retain_from(0);
    let values = vec![vec![3u8; 900]; 2];
    let mut refused = None;
    assert_eq!((writer.reclaim_ahead(1), writer.reclaim_ahead(3)), (None, None), "an empty ring");
    let mut foreseen_ahead = None;
    for _ in 0..100 {
        // What the next claim will reclaim, foreseen (and, three claims ahead, foreseen first).
        let foreseen = writer.reclaim_ahead(1);
        if foreseen.is_some() {
            assert!(foreseen_ahead.is_some(), "three claims ahead is foreseen before one");
        }
        foreseen_ahead = foreseen_ahead.or(writer.reclaim_ahead(3));
        match append_values(&mut writer, &values) {
            Ok(_) => {}
            Err(StorageError::Retained { retained, reclaim_to }) => {
                assert_eq!(foreseen, Some(reclaim_to), "the reclaim was foreseen");
                refused = Some((retained, reclaim_to));
                break;
            }
            Err(other) => panic!("{other}"),
        }
    }
    let (retained, reclaim_to) = refused.expect("a full ring refuses to reclaim kept records");
    assert_eq!(retained, 0);
    assert!(reclaim_to > 0);
    let next = log.next_offset();
    assert_eq!(log.earliest_offset(), 0, "nothing was reclaimed");
    assert!(matches!(append_values(&mut writer, &values), Err(StorageError::Retained { .. })));
    assert_eq!(log.next_offset(), next, "a refused append writes nothing");
    // Keeping from the second chunk on lets the first go.
    writer.retain_from(reclaim_to);
    let appended = append_values(&mut writer, &values).unwrap();
    assert_eq!(appended.base_offset, next);
    assert_eq!(log.earliest_offset(), reclaim_to);
    let outcome = log.read(reclaim_to, 1 << 20).unwrap();
    for batch in Batches::new(&outcome.batches, u32::MAX) {
        assert_eq!(batch.unwrap().header().partition_leader_epoch(), 7);
    }
}
