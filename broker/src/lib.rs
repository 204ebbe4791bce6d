//! The ringmq broker: a persistent, zero-copy message queue.
//!
//! - [`log`]: the partition log, a preallocated memory-mapped ring per partition.
//! - [`pool`]: the fixed-size buffer pool network reads land in.
//!
//! All `unsafe` code lives in `log::raw`; everything else is safe.

#![deny(unsafe_code)]

pub mod log;
pub mod pool;
mod sync;
