//! The same-host reader's side of the cursor page protocol on arbitrary bytes: a page whose
//! words are the input (`PageLayout::read`), and `local::read_batch` over a ring of arbitrary
//! bytes with arbitrary slot tags, published end, incarnation and cursor. Never a panic, never a load past
//! either mapping, never a batch handed out that does not validate.
#![no_main]

use std::sync::atomic::AtomicU64;

use libfuzzer_sys::fuzz_target;
use ringmq_protocol::local::{self, Cursor, PageLayout};
use ringmq_protocol::BatchView;

/// The input as words, zero-padded (`count` of them).
fn words(bytes: &[u8], count: usize) -> Vec<AtomicU64> {
    (0..count)
        .map(|index| {
            let mut word = [0u8; 8];
            if let Some(piece) = bytes.get(index * 8..) {
                let take = piece.len().min(8);
                word[..take].copy_from_slice(&piece[..take]);
            }
            AtomicU64::new(u64::from_le_bytes(word))
        })
        .collect()
}

fuzz_target!(|data: &[u8]| {
    // A page read as it is: its layout is checked against itself and the ring's size.
    let page = words(data, data.len().div_ceil(8));
    let ring = words(&[], 64);
    let _ = PageLayout::read(page.as_slice(), ring.as_slice());

    let Some((params, rest)) = data.split_first_chunk::<40>() else { return };
    let word = |at: usize| u64::from_le_bytes(params[at..at + 8].try_into().unwrap_or_default());
    let chunk_size = 64 * (1 + u64::from(params[0] % 16));
    let slots = 1 + u64::from(params[1] % 4);
    let data_start = 8 * u64::from(params[2] % 4);
    let Ok(layout) = PageLayout::new(data_start, chunk_size * slots, chunk_size) else { return };
    let ring = words(rest, usize::try_from((data_start + chunk_size * slots) / 8).unwrap_or(0));
    // The ring's incarnation word (the last word before the data area, when there is one): the
    // page's value matches it or is arbitrary.
    let layout = match data_start.checked_sub(8) {
        Some(at) => {
            let found = ring.get(usize::try_from(at / 8).unwrap_or(usize::MAX)).map_or(0, |word| {
                u64::from_le_bytes(word.load(std::sync::atomic::Ordering::Relaxed).to_ne_bytes())
            });
            let value = if params[5] & 1 == 1 { found } else { word(0) };
            layout.with_incarnation(at, value).unwrap_or(layout)
        }
        None => layout,
    };
    let page = words(&[], layout.page_words());
    // Generations around the cursor's, some current, some reclaimed, some not yet written.
    let base = word(8) % (1 << 20);
    let tags = params[3];
    local::init_page(page.as_slice(), &layout, base * chunk_size + word(16) % (4 * chunk_size), |slot| {
        (tags >> slot & 1 == 1).then_some(base + slot)
    });
    let mut cursor = Cursor {
        position: base * chunk_size + word(24) % (2 * chunk_size),
        offset: word(32),
        entry: u32::from(params[4] % 8),
    };
    let batch_size_max = u32::try_from(chunk_size).unwrap_or(u32::MAX);
    let mut buffer = Vec::new();
    for _ in 0..8 {
        let before = cursor;
        match local::read_batch(
            page.as_slice(),
            ring.as_slice(),
            &layout,
            &mut cursor,
            &mut buffer,
            batch_size_max,
        ) {
            Ok(Some(batch)) => {
                let bytes = batch.as_bytes().to_vec();
                assert!(BatchView::validate(&bytes, batch_size_max).is_ok(), "handed out an invalid batch");
                assert!(cursor.position > before.position, "the cursor did not move past the batch");
            }
            Ok(None) => break,
            Err(_) => {
                assert_eq!(cursor, before, "an error moved the cursor");
                break;
            }
        }
    }
});
