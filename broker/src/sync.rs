//! The atomics, `Arc` and cells the storage core uses: `std`'s normally, loom's under
//! `--cfg broker_loom` so the lease protocol can be model-checked (our own cfg name, so crates that
//! key off plain `cfg(loom)` are left alone).

#[cfg(broker_loom)]
pub(crate) use loom::sync::atomic::{AtomicU64, Ordering};
#[cfg(broker_loom)]
pub(crate) use loom::sync::Arc;

#[cfg(not(broker_loom))]
pub(crate) use std::sync::atomic::{AtomicU64, Ordering};
#[cfg(not(broker_loom))]
pub(crate) use std::sync::Arc;
