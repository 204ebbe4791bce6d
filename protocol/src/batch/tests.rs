use super::*;
use crate::limits::BATCH_SIZE_MIN;
use proptest::prelude::*;

fn build(records: &[Record<'_>], buffer: &mut [u8]) -> usize {
    let mut builder = BatchBuilder::new(buffer, records[0].timestamp).unwrap();
    for record in records {
        assert_eq!(builder.push(record).unwrap(), Push::Appended);
    }
    builder.finish().unwrap().len()
}

fn records_of<'a>(view: &BatchView<'a>) -> Vec<RecordView<'a>> {
    view.records().expect("uncompressed").collect()
}

/// A batch written by Kafka's Java client (`DefaultRecordBatchTest`-style): one record, key
/// "key", value "value", one header, base timestamp 1_700_000_000_000, not idempotent, as the
/// bytes would come from `kafka-clients` 3.x with `compression.type=none`. Built by hand from
/// the spec, so the encoder is checked against the spec, not against itself.
fn spec_batch() -> Vec<u8> {
    // attributes, timestampDelta 0, offsetDelta 0, keyLength 3 (zig-zag: 6)
    let mut record = vec![0, 0, 0, 6];
    record.extend_from_slice(b"key");
    record.push(10); // valueLength 5
    record.extend_from_slice(b"value");
    record.push(2); // headerCount 1
    record.push(2); // headerKeyLength 1
    record.extend_from_slice(b"h");
    record.push(2); // headerValueLength 1
    record.extend_from_slice(b"v");
    let mut records = vec![u8::try_from(record.len() * 2).unwrap()];
    records.extend_from_slice(&record);
    let mut batch = Vec::new();
    batch.extend_from_slice(&0i64.to_be_bytes()); // baseOffset
    let length = i32::try_from(61 - 12 + records.len()).unwrap();
    batch.extend_from_slice(&length.to_be_bytes()); // batchLength
    batch.extend_from_slice(&(-1i32).to_be_bytes()); // partitionLeaderEpoch
    batch.push(2); // magic
    batch.extend_from_slice(&[0; 4]); // crc, below
    batch.extend_from_slice(&0i16.to_be_bytes()); // attributes
    batch.extend_from_slice(&0i32.to_be_bytes()); // lastOffsetDelta
    batch.extend_from_slice(&1_700_000_000_000i64.to_be_bytes()); // baseTimestamp
    batch.extend_from_slice(&1_700_000_000_000i64.to_be_bytes()); // maxTimestamp
    batch.extend_from_slice(&(-1i64).to_be_bytes()); // producerId
    batch.extend_from_slice(&(-1i16).to_be_bytes()); // producerEpoch
    batch.extend_from_slice(&(-1i32).to_be_bytes()); // baseSequence
    batch.extend_from_slice(&1i32.to_be_bytes()); // recordCount
    batch.extend_from_slice(&records);
    let crc = crc32c::crc32c(&batch[21..]);
    batch[17..21].copy_from_slice(&crc.to_be_bytes());
    batch
}

#[test]
fn the_encoder_writes_the_bytes_the_spec_describes() {
    let headers = [Header { name: "h", value: b"v" }];
    let record = Record {
        key: Some(b"key"),
        value: b"value",
        timestamp: 1_700_000_000_000,
        headers: &headers,
    };
    let mut buffer = vec![0; 256];
    let size = build(&[record], &mut buffer);
    assert_eq!(&buffer[..size], &spec_batch()[..]);
    let spec = spec_batch();
    let view = BatchView::validate(&spec, 1 << 20).unwrap();
    let decoded = records_of(&view);
    assert_eq!(decoded[0].key, Some(&b"key"[..]));
    assert_eq!(decoded[0].value, Some(&b"value"[..]));
    let headers: Vec<HeaderView<'_>> = decoded[0].headers.clone().collect();
    assert_eq!(headers, [HeaderView { name: "h", value: Some(&b"v"[..]) }]);
    assert_eq!(view.header().producer_epoch(), NO_PRODUCER_EPOCH);
}

#[test]
fn round_trip_with_keys_and_headers() {
    let headers = [Header { name: "trace", value: b"abc" }, Header { name: "é", value: b"" }];
    let records = [
        Record { key: Some(b"k1"), value: b"v1", timestamp: 1000, headers: &headers },
        Record { key: None, value: b"", timestamp: 990, headers: &[] },
        Record { key: Some(b""), value: b"third", timestamp: 1500, headers: &[] },
    ];
    let mut buffer = vec![0; 1024];
    let size = build(&records, &mut buffer);
    let view = BatchView::validate(&buffer[..size], 1 << 20).unwrap();
    assert_eq!(view.record_count(), 3);
    assert_eq!(view.header().max_timestamp(), 1500);
    assert_eq!(view.header().last_offset_delta(), 2);
    let decoded = records_of(&view);
    assert_eq!(decoded.len(), 3);
    assert_eq!(decoded[0].key, Some(&b"k1"[..]));
    let names: Vec<_> = decoded[0].headers.clone().map(|h| h.name).collect();
    assert_eq!(names, ["trace", "é"]);
    assert_eq!(decoded[1].key, None);
    assert_eq!(decoded[1].value, Some(&b""[..]));
    assert_eq!(decoded[1].timestamp, 990);
    assert_eq!(decoded[2].key, Some(&b""[..]));
    assert_eq!(decoded[2].offset_delta, 2);
}

#[test]
fn the_smallest_batch_is_68_bytes() {
    let mut buffer = vec![0; BATCH_SIZE_MIN];
    let size = build(&[Record::value(b"", 0)], &mut buffer);
    assert_eq!(size, 68);
    assert_eq!(size, BATCH_SIZE_MIN);
    BatchView::validate(&buffer[..size], 1 << 20).unwrap();
}

#[test]
fn full_is_an_outcome_not_an_error() {
    // Each record: length 1 + attributes 1 + deltas 2 + key 1 + value 1 + 10 + headers 1.
    let record_size = 17;
    let mut buffer = vec![0; BATCH_HEADER_SIZE + 2 * record_size];
    let mut builder = BatchBuilder::new(&mut buffer, 0).unwrap();
    let record = Record::value(&[7; 10], 0);
    assert_eq!(builder.push(&record).unwrap(), Push::Appended);
    assert_eq!(builder.push(&record).unwrap(), Push::Appended);
    assert_eq!(builder.push(&record).unwrap(), Push::Full);
    assert_eq!(builder.record_count(), 2);
    let batch = builder.finish().unwrap();
    assert_eq!(batch.len(), BATCH_HEADER_SIZE + 2 * record_size);
    BatchView::validate(batch, u32::MAX).unwrap();
}

#[test]
fn oversized_record_is_an_error_even_in_an_empty_batch() {
    let mut buffer = vec![0; 128];
    let mut builder = BatchBuilder::new(&mut buffer, 0).unwrap();
    assert!(matches!(
        builder.push(&Record::value(&[0; 100], 0)),
        Err(EncodeError::RecordTooLarge { .. })
    ));
    assert!(matches!(builder.finish(), Err(EncodeError::EmptyBatch)));
}

#[test]
fn stamping_keeps_the_crc_valid() {
    let mut buffer = vec![0; 256];
    let size = build(&[Record::value(b"x", 5)], &mut buffer);
    stamp(&mut buffer[..size], 123_456, 9).unwrap();
    let view = BatchView::validate(&buffer[..size], 1 << 20).unwrap();
    assert_eq!(view.base_offset(), 123_456);
    assert_eq!(view.header().partition_leader_epoch(), 9);
    assert_eq!(view.next_offset(), 123_457);
}

/// Every byte the CRC covers, and the length and magic, are checked; the fields the broker
/// stamps (`baseOffset`, `partitionLeaderEpoch`) are not, by design: the ring log binds them.
#[test]
fn every_bit_flip_outside_the_stamped_fields_is_detected() {
    let mut buffer = vec![0; 256];
    let size = build(&[Record::value(b"payload", 5), Record::value(b"two", 6)], &mut buffer);
    stamp(&mut buffer[..size], 77, 1).unwrap();
    for bit in 0..size * 8 {
        let byte = bit / 8;
        let stamped = byte < 8 || (12..16).contains(&byte);
        let mut copy = buffer[..size].to_vec();
        copy[byte] ^= 1 << (bit % 8);
        assert_eq!(
            BatchView::validate(&copy, 1 << 20).is_ok(),
            stamped,
            "flip of bit {bit} (byte {byte})"
        );
    }
}

#[test]
fn batch_size_limit_is_enforced() {
    let mut buffer = vec![0; 512];
    let size = build(&[Record::value(&[1; 300], 0)], &mut buffer);
    assert!(BatchView::validate(&buffer[..size], u32::try_from(size).unwrap()).is_ok());
    assert!(matches!(
        BatchView::validate(&buffer[..size], u32::try_from(size - 1).unwrap()),
        Err(DecodeError::TooLarge { field: "batch_size", .. })
    ));
}

/// Rewrites attribute bits and re-seals the CRC, as a producer sending them would.
fn with_attributes(batch: &[u8], attributes: u16) -> Vec<u8> {
    let mut copy = batch.to_vec();
    copy[21..23].copy_from_slice(&attributes.to_be_bytes());
    let crc = crc32c::crc32c(&copy[21..]);
    copy[17..21].copy_from_slice(&crc.to_be_bytes());
    copy
}

#[test]
fn transactions_are_unsupported_and_unknown_bits_invalid() {
    let mut buffer = vec![0; 256];
    let size = build(&[Record::value(b"x", 5)], &mut buffer);
    for bits in [0x10, 0x20, 0x30] {
        let error =
            BatchView::validate(&with_attributes(&buffer[..size], bits), 1 << 20).unwrap_err();
        assert!(matches!(error, DecodeError::Unsupported { .. }), "{bits:#x}: {error}");
    }
    for bits in [0x05, 0x07, 0x40, 0x8000] {
        let error =
            BatchView::validate(&with_attributes(&buffer[..size], bits), 1 << 20).unwrap_err();
        assert!(matches!(error, DecodeError::InvalidValue { field: "attributes", .. }), "{error}");
    }
    // Log append time is accepted as it came (the broker does not rewrite timestamps).
    BatchView::validate(&with_attributes(&buffer[..size], 0x08), 1 << 20).unwrap();
}

#[test]
fn a_compressed_batch_is_checked_up_to_its_records_and_read_after_decompression() {
    let records = [Record::value(b"one", 10), Record::value(b"two", 11)];
    let mut plain = vec![0; 256];
    let mut encoder = BatchEncoder::new(plain.len(), 10).unwrap();
    for record in &records {
        assert_eq!(encoder.push(&mut plain, record).unwrap(), Push::Appended);
    }
    let uncompressed = encoder.record_bytes(&plain).to_vec();
    // A stand-in "codec" (the protocol crate compresses nothing): reversed bytes.
    let packed: Vec<u8> = uncompressed.iter().rev().copied().collect();
    let mut out = vec![0; 256];
    let size = encoder.finish_compressed(Compression::Zstd, &packed, &mut out).unwrap();
    let view = BatchView::validate(&out[..size], 1 << 20).unwrap();
    assert_eq!(view.compression(), Compression::Zstd);
    assert!(view.records().is_none(), "compressed records are not iterated in place");
    assert_eq!(view.record_bytes(), &packed[..]);
    let unpacked: Vec<u8> = view.record_bytes().iter().rev().copied().collect();
    let values: Vec<_> = Records::checked(&unpacked, view.header())
        .unwrap()
        .map(|record| record.value.unwrap().to_vec())
        .collect();
    assert_eq!(values, [b"one".to_vec(), b"two".to_vec()]);
    assert!(Records::checked(&packed, view.header()).is_err(), "still compressed: refused");
}

#[test]
fn old_message_formats_are_refused_as_unsupported_versions() {
    let mut batch = spec_batch();
    batch[16] = 1;
    let error = BatchView::validate(&batch, 1 << 20).unwrap_err();
    assert!(matches!(error, DecodeError::UnsupportedVersion { found: 1, .. }), "{error}");
    batch[16] = 7;
    assert!(matches!(BatchView::validate(&batch, 1 << 20), Err(DecodeError::BadMagic { .. })));
}

#[test]
fn producer_fields_must_agree() {
    let mut buffer = vec![0; 256];
    let mut builder = BatchBuilder::new(&mut buffer, 5).unwrap().with_producer(3, 1, 40);
    let _ = builder.push(&Record::value(b"x", 5)).unwrap();
    let size = builder.finish().unwrap().len();
    BatchView::validate(&buffer[..size], 1 << 20).unwrap();
    restamp_producer(&mut buffer[..size], 9, 2, 0).unwrap();
    let view = BatchView::validate(&buffer[..size], 1 << 20).unwrap();
    let header = view.header();
    assert_eq!((header.producer_id(), header.producer_epoch(), header.base_sequence()), (9, 2, 0));
    for (id, epoch, sequence) in [(-1, 0, -1), (-1, -1, 0), (-2, 0, 0), (4, -1, 0), (4, 0, -1)] {
        restamp_producer(&mut buffer[..size], id, epoch, sequence).unwrap();
        assert!(
            BatchView::validate(&buffer[..size], 1 << 20).is_err(),
            "{id} {epoch} {sequence} accepted"
        );
    }
    assert!(restamp_producer(&mut buffer[..10], 1, 1, 1).is_err());
}

#[test]
fn batches_iterator_walks_concatenated_batches() {
    let mut buffer = vec![0; 256];
    let first = build(&[Record::value(b"a", 1)], &mut buffer);
    let mut joined = buffer[..first].to_vec();
    let mut second_buffer = vec![0; 256];
    let second = build(&[Record::value(b"b", 1), Record::value(b"c", 2)], &mut second_buffer);
    joined.extend_from_slice(&second_buffer[..second]);
    let counts: Vec<u32> =
        Batches::new(&joined, 1 << 20).map(|b| b.unwrap().record_count()).collect();
    assert_eq!(counts, [1, 2]);
    joined.pop();
    let results: Vec<_> = Batches::new(&joined, 1 << 20).collect();
    assert!(results[0].is_ok() && results[1].is_err() && results.len() == 2);
}

prop_compose! {
    fn arb_record()(
        key in proptest::option::of(proptest::collection::vec(any::<u8>(), 0..40)),
        value in proptest::collection::vec(any::<u8>(), 0..300),
        delta in -100_000i64..100_000,
        headers in proptest::collection::vec(("[a-z]{0,8}", proptest::collection::vec(any::<u8>(), 0..16)), 0..4),
    ) -> (Option<Vec<u8>>, Vec<u8>, i64, Vec<(String, Vec<u8>)>) {
        (key, value, delta, headers)
    }
}

proptest! {
    #[test]
    fn encode_validate_iterate_gives_back_the_records(
        records in proptest::collection::vec(arb_record(), 1..30),
        base in 0u64..u64::MAX / 2,
    ) {
        let first_timestamp = 1_700_000_000_000i64;
        let header_storage: Vec<Vec<Header<'_>>> = records.iter()
            .map(|(_, _, _, headers)| headers.iter().map(|(n, v)| Header { name: n, value: v }).collect())
            .collect();
        let inputs: Vec<Record<'_>> = records.iter().zip(&header_storage)
            .map(|((key, value, delta, _), headers)| Record {
                key: key.as_deref(), value, timestamp: first_timestamp + delta, headers,
            })
            .collect();
        let mut buffer = vec![0; 64 * 1024];
        let mut builder = BatchBuilder::new(&mut buffer, first_timestamp).unwrap();
        for record in &inputs {
            prop_assert_eq!(builder.push(record).unwrap(), Push::Appended);
        }
        let batch = builder.finish().unwrap();
        stamp(batch, base, 0).unwrap();
        let view = BatchView::validate(batch, 1 << 20).unwrap();
        prop_assert_eq!(view.base_offset(), base);
        let decoded = records_of(&view);
        prop_assert_eq!(decoded.len(), inputs.len());
        for (got, want) in decoded.iter().zip(&inputs) {
            prop_assert_eq!(got.key, want.key);
            prop_assert_eq!(got.value, Some(want.value));
            prop_assert_eq!(got.timestamp, want.timestamp);
            let headers: Vec<(&str, Option<&[u8]>)> =
                got.headers.clone().map(|h| (h.name, h.value)).collect();
            let wanted: Vec<(&str, Option<&[u8]>)> =
                want.headers.iter().map(|h| (h.name, Some(h.value))).collect();
            prop_assert_eq!(headers, wanted);
        }
    }

    #[test]
    fn random_bytes_never_panic_the_validator(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = BatchView::validate(&bytes, 1 << 20);
        let _ = BatchView::validate_prefix(&bytes, 1 << 20);
        for batch in Batches::new(&bytes, 1 << 20) {
            let _ = batch.map(|b| b.records().map(Iterator::count));
        }
        if let Ok(header) = BatchHeader::peek(&spec_batch()) {
            let _ = Records::checked(&bytes, header).map(Iterator::count);
        }
    }

    #[test]
    fn mutated_batches_never_panic_and_never_pass_with_changed_content(
        flips in proptest::collection::vec((0usize..400, any::<u8>()), 1..6),
    ) {
        let mut buffer = vec![0; 400];
        let size = build(&[Record { key: Some(b"key"), value: &[5; 100], timestamp: 9, headers: &[Header { name: "h", value: b"v" }] }, Record::value(&[6; 150], 10)], &mut buffer);
        let original = buffer[..size].to_vec();
        let mut mutated = original.clone();
        for (at, value) in flips {
            if at < size { mutated[at] ^= value; }
        }
        // Outside the stamped fields every byte is checked.
        if let Ok(view) = BatchView::validate(&mutated, 1 << 20) {
            let unstamped = |bytes: &[u8]| [&bytes[8..12], &bytes[16..]].concat();
            prop_assert_eq!(unstamped(view.as_bytes()), unstamped(&original));
        }
    }
}

#[test]
fn a_control_batch_validates_only_as_one() {
    let mut buffer = vec![0; 256];
    let mut builder = BatchBuilder::new(&mut buffer, 7).unwrap().control();
    let key = [0u8, 0, 0, 100];
    let record = Record { key: Some(&key), ..Record::value(b"state", 7) };
    assert_eq!(builder.push(&record).unwrap(), Push::Appended);
    let batch = builder.finish().unwrap().to_vec();
    let view = BatchView::validate_control(&batch, 1 << 20).unwrap();
    assert!(view.header().is_control() && !view.header().is_transactional());
    let records = records_of(&view);
    assert_eq!(records.len(), 1);
    assert_eq!((records[0].key, records[0].value), (Some(&key[..]), Some(&b"state"[..])));
    // What a log stores validates as the kind it is.
    assert!(BatchView::validate_stored(&batch, 1 << 20).unwrap().header().is_control());
    // A producer cannot send one, and a producer's batch is not one.
    let error = BatchView::validate(&batch, 1 << 20).unwrap_err();
    assert!(matches!(error, DecodeError::Unsupported { .. }), "{error}");
    let size = build(&[Record::value(b"x", 5)], &mut buffer);
    let error = BatchView::validate_control(&buffer[..size], 1 << 20).unwrap_err();
    assert!(error.to_string().contains("control batch"), "{error}");
    assert!(!BatchView::validate_stored(&buffer[..size], 1 << 20).unwrap().header().is_control());
    // Transactional control batches (Kafka's transaction markers) stay unsupported.
    let error = BatchView::validate_control(&with_attributes(&batch, 0x30), 1 << 20).unwrap_err();
    assert!(matches!(error, DecodeError::Unsupported { .. }), "{error}");
}
