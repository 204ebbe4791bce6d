//! Per-chunk read leases with generations: the protocol that keeps the writer from reusing a chunk
//! while a reader still holds a view of it (DESIGN.md invariant 3).
//!
//! A chunk *generation* is the number of the chunk counted from the start of the unrolled ring:
//! generation `g` lives in slot `g % slot_count`. Each slot has one `AtomicU64` state:
//!
//! ```text
//! bits 63..24  tag: generation + 1 of the chunk the slot holds (0: never written)
//! bit  23      reclaiming: the writer wants the slot; no new lease may start
//! bits 22..0   readers: leases held
//! ```
//!
//! # Invariants
//!
//! 1. A lease on generation `g` is taken only by a compare-and-swap that sees tag `g + 1` and no
//!    reclaiming bit, so it cannot start once the writer has begun to reclaim the slot.
//! 2. The writer moves a slot to a new tag only by a compare-and-swap from a state with zero
//!    readers. That CAS has acquire ordering and every lease release has release ordering, so every
//!    read made under a lease happens-before the writer's first write of the new generation.
//! 3. The writer claims generations one after another (`g`, then `g + 1`, ...), so the tag it
//!    replaces is always `g - slot_count + 1` (or 0 on the first lap). A rewind of the writer
//!    ([`ChunkTable::try_unclaim`], newest first) hands a claimed generation back: the slot returns
//!    to the tag it replaced with the reclaiming bit set, the state a `Busy` claim leaves, so no
//!    lease of either generation can start and the writer's next claim of the slot is again in
//!    order. The unclaim, like the claim, moves the tag only from a state with zero readers.

use crate::sync::{AtomicU64, Ordering};

const READERS_BITS: u32 = 23;
const READERS_MASK: u64 = (1 << READERS_BITS) - 1;
const RECLAIMING: u64 = 1 << READERS_BITS;
const TAG_SHIFT: u32 = READERS_BITS + 1;
/// Largest generation a tag can hold (40 bits): at 4 KiB chunks, 4 PiB written per partition.
pub(crate) const GENERATION_MAX: u64 = (1 << (64 - TAG_SHIFT)) - 2;

/// Why a lease could not be taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LeaseRefused {
    /// The slot holds another generation, or the writer is reclaiming it.
    Reclaimed,
    /// The slot has the maximum number of concurrent readers.
    TooManyReaders,
}

/// Outcome of [`ChunkTable::try_claim`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Claim {
    /// The slot now holds the new generation; the writer may write it.
    Claimed,
    /// Readers still hold leases on the old generation. No new lease can start; try again later.
    Busy {
        /// Leases still held.
        readers: u64,
    },
}

/// One lease state per chunk slot.
#[derive(Debug)]
pub(crate) struct ChunkTable {
    states: Box<[AtomicU64]>,
}

fn tag_of(generation: u64) -> u64 {
    assert!(generation <= GENERATION_MAX, "chunk generation {generation} exceeds the tag width");
    (generation + 1) << TAG_SHIFT
}

impl ChunkTable {
    /// A table of `slot_count` slots; `initial(slot)` is the generation the slot holds, if any.
    pub(crate) fn new(slot_count: usize, initial: impl Fn(usize) -> Option<u64>) -> Self {
        assert!(slot_count > 0, "a ring has at least one chunk");
        let states = (0..slot_count)
            .map(|slot| {
                AtomicU64::new(initial(slot).map_or(0, |generation| {
                    assert_eq!(
                        generation % slot_count as u64,
                        slot as u64,
                        "generation in wrong slot"
                    );
                    tag_of(generation)
                }))
            })
            .collect();
        Self { states }
    }

    pub(crate) fn slot_count(&self) -> u64 {
        self.states.len() as u64
    }

    fn state(&self, generation: u64) -> &AtomicU64 {
        let slot = usize::try_from(generation % self.slot_count()).expect("below the slot count");
        &self.states[slot]
    }

    /// Takes a read lease on `generation`.
    pub(crate) fn try_lease(&self, generation: u64) -> Result<(), LeaseRefused> {
        if generation > GENERATION_MAX {
            return Err(LeaseRefused::Reclaimed);
        }
        let state = self.state(generation);
        let tag = tag_of(generation);
        let mut current = state.load(Ordering::Relaxed);
        loop {
            if current & !READERS_MASK != tag {
                // INVARIANT 1: another generation, or the reclaiming bit is set.
                return Err(LeaseRefused::Reclaimed);
            }
            if current & READERS_MASK == READERS_MASK {
                return Err(LeaseRefused::TooManyReaders);
            }
            match state.compare_exchange_weak(
                current,
                current + 1,
                Ordering::Acquire,
                Ordering::Relaxed,
            ) {
                Ok(_) => return Ok(()),
                Err(actual) => current = actual,
            }
        }
    }

    /// Releases a lease taken by [`ChunkTable::try_lease`] on `generation`.
    pub(crate) fn release(&self, generation: u64) {
        // INVARIANT 2: release ordering publishes every read made under the lease to the writer's
        // acquire CAS in `try_claim`.
        let previous = self.state(generation).fetch_sub(1, Ordering::Release);
        assert!(previous & READERS_MASK > 0, "lease released twice");
        assert_eq!(previous >> TAG_SHIFT, generation + 1, "lease outlived its generation");
    }

    /// The writer's claim of `generation` for writing, reclaiming whatever the slot held.
    pub(crate) fn try_claim(&self, generation: u64) -> Claim {
        let slot_count = self.slot_count();
        let replaced = generation.checked_sub(slot_count).map_or(0, tag_of);
        let state = self.state(generation);
        let mut current = state.load(Ordering::Acquire);
        loop {
            assert_eq!(
                current & !(READERS_MASK | RECLAIMING),
                replaced,
                "writer claims chunk generations in order (invariant 3)"
            );
            let readers = current & READERS_MASK;
            if readers > 0 {
                // Stop new leases; existing ones drain (they are short and time-limited).
                state.fetch_or(RECLAIMING, Ordering::AcqRel);
                return Claim::Busy { readers };
            }
            // INVARIANT 2: the acquire half orders every released lease before our writes.
            match state.compare_exchange(
                current,
                tag_of(generation),
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => return Claim::Claimed,
                Err(actual) => current = actual,
            }
        }
    }

    /// The writer's rewind past `generation` (the newest it claimed): the slot goes back to the
    /// generation it replaced, with the reclaiming bit set (invariant 3), once no lease is held.
    /// `Busy` leaves the reclaiming bit set, so the leases drain and no new one starts.
    pub(crate) fn try_unclaim(&self, generation: u64) -> Claim {
        let replaced = generation.checked_sub(self.slot_count()).map_or(0, tag_of);
        let state = self.state(generation);
        let mut current = state.load(Ordering::Acquire);
        loop {
            assert_eq!(
                current & !(READERS_MASK | RECLAIMING),
                tag_of(generation),
                "the writer unclaims only a generation it holds (invariant 3)"
            );
            let readers = current & READERS_MASK;
            if readers > 0 {
                state.fetch_or(RECLAIMING, Ordering::AcqRel);
                return Claim::Busy { readers };
            }
            // INVARIANT 2: as in `try_claim`, the acquire half orders every released lease
            // before the writer's next writes of the slot.
            match state.compare_exchange(
                current,
                replaced | RECLAIMING,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => return Claim::Claimed,
                Err(actual) => current = actual,
            }
        }
    }

    /// Leases currently held on `generation` (0 if the slot holds another one).
    #[cfg(test)]
    pub(crate) fn readers(&self, generation: u64) -> u64 {
        let current = self.state(generation).load(Ordering::Acquire);
        if current >> TAG_SHIFT == generation + 1 {
            current & READERS_MASK
        } else {
            0
        }
    }
}

#[cfg(test)]
#[cfg(not(broker_loom))]
mod tests {
    use super::*;

    #[test]
    fn lease_blocks_claim_until_released() {
        let table = ChunkTable::new(4, |slot| Some(slot as u64));
        table.try_lease(1).unwrap();
        table.try_lease(1).unwrap();
        assert_eq!(table.try_claim(5), Claim::Busy { readers: 2 });
        // The reclaiming bit refuses new leases even before the old ones drain.
        assert_eq!(table.try_lease(1), Err(LeaseRefused::Reclaimed));
        table.release(1);
        assert_eq!(table.try_claim(5), Claim::Busy { readers: 1 });
        table.release(1);
        assert_eq!(table.try_claim(5), Claim::Claimed);
        assert_eq!(table.try_lease(1), Err(LeaseRefused::Reclaimed));
        table.try_lease(5).unwrap();
        assert_eq!(table.readers(5), 1);
    }

    #[test]
    fn first_lap_claims_empty_slots() {
        let table = ChunkTable::new(2, |_| None);
        assert_eq!(table.try_lease(0), Err(LeaseRefused::Reclaimed));
        assert_eq!(table.try_claim(0), Claim::Claimed);
        assert_eq!(table.try_claim(1), Claim::Claimed);
        assert_eq!(table.try_claim(2), Claim::Claimed);
        assert_eq!(table.try_lease(0), Err(LeaseRefused::Reclaimed));
        table.try_lease(2).unwrap();
    }

    #[test]
    #[should_panic(expected = "in order")]
    fn out_of_order_claim_is_a_bug() {
        let table = ChunkTable::new(2, |_| None);
        let _ = table.try_claim(3);
    }

    #[test]
    fn an_unclaimed_generation_leases_nothing_and_is_claimed_again_in_order() {
        let table = ChunkTable::new(2, |_| None);
        for generation in 0..3 {
            assert_eq!(table.try_claim(generation), Claim::Claimed);
        }
        table.try_lease(2).unwrap();
        assert_eq!(table.try_unclaim(2), Claim::Busy { readers: 1 });
        assert_eq!(table.try_lease(2), Err(LeaseRefused::Reclaimed), "draining");
        table.release(2);
        assert_eq!(table.try_unclaim(2), Claim::Claimed);
        // Neither the unclaimed generation nor the one it replaced can be leased.
        assert_eq!(table.try_lease(2), Err(LeaseRefused::Reclaimed));
        assert_eq!(table.try_lease(0), Err(LeaseRefused::Reclaimed));
        assert_eq!(table.try_unclaim(1), Claim::Claimed);
        assert_eq!(table.try_lease(1), Err(LeaseRefused::Reclaimed));
        // The writer claims the slots again in order, from the first lap's empty slot on.
        assert_eq!(table.try_claim(1), Claim::Claimed);
        assert_eq!(table.try_claim(2), Claim::Claimed);
        table.try_lease(2).unwrap();
    }

    #[test]
    #[should_panic(expected = "only a generation it holds")]
    fn unclaiming_a_generation_not_held_is_a_bug() {
        let table = ChunkTable::new(2, |_| None);
        assert_eq!(table.try_claim(0), Claim::Claimed);
        let _ = table.try_unclaim(1);
    }

    #[test]
    fn reader_count_saturates_cleanly() {
        let table = ChunkTable::new(1, |_| Some(0));
        table.states[0].fetch_add(READERS_MASK, Ordering::Relaxed);
        assert_eq!(table.try_lease(0), Err(LeaseRefused::TooManyReaders));
    }

    #[test]
    fn generations_beyond_the_tag_width_are_refused() {
        let table = ChunkTable::new(1, |_| None);
        assert_eq!(table.try_lease(GENERATION_MAX + 1), Err(LeaseRefused::Reclaimed));
    }
}
