//! The fixed-size buffer pool that network reads land in.
//!
//! Every buffer is allocated once, zeroed (`calloc`: pages are committed on first touch), when the
//! pool is built; afterwards acquiring and releasing moves a `Box<[u8]>` through a bounded
//! lock-free queue (crossbeam `ArrayQueue`) and allocates nothing. The pool never grows: when it is
//! empty [`BufferPool::try_acquire`] fails at once with [`PoolExhausted`] and counts the event; the
//! caller decides whether to wait (the broker waits, woken by the release hook, up to its request
//! timeout) or to refuse.
//!
//! # Invariants
//!
//! 1. `in_use + free.len() == buffer_count` whenever no acquire or release is in flight: a buffer
//!    is either in the queue or owned by exactly one [`PooledBuffer`].
//! 2. The queue's capacity equals the buffer count, so returning a buffer can never fail.

use std::fmt;
use std::ops::{Deref, DerefMut};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use crossbeam_queue::ArrayQueue;
use thiserror::Error;

/// Most buffers a pool may hold.
pub const BUFFER_COUNT_MAX: usize = 1 << 16;
/// Largest buffer a pool may hold.
pub const BUFFER_SIZE_MAX: usize = 256 << 20;

/// A bounded pool of equal-sized byte buffers. Cloning shares the pool.
#[derive(Clone)]
pub struct BufferPool {
    inner: Arc<Inner>,
}

struct Inner {
    free: ArrayQueue<Box<[u8]>>,
    buffer_size: usize,
    buffer_count: usize,
    in_use: AtomicUsize,
    acquired: AtomicU64,
    exhausted: AtomicU64,
    on_release: Option<Box<dyn Fn() + Send + Sync>>,
}

/// The pool had no free buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
#[error("all {buffer_count} buffers of {buffer_size} bytes are in use")]
pub struct PoolExhausted {
    /// Buffers in the pool.
    pub buffer_count: usize,
    /// Bytes per buffer.
    pub buffer_size: usize,
}

/// Counters of a pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolStats {
    /// Buffers in the pool.
    pub buffer_count: usize,
    /// Bytes per buffer.
    pub buffer_size: usize,
    /// Buffers currently handed out.
    pub in_use: usize,
    /// Successful acquisitions since the pool was built.
    pub acquired: u64,
    /// Acquisitions that found the pool empty.
    pub exhausted: u64,
}

/// Why a pool could not be built.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
#[error("invalid buffer pool: {buffer_count} buffers of {buffer_size} bytes (1 to {BUFFER_COUNT_MAX} buffers of 1 to {BUFFER_SIZE_MAX} bytes)")]
pub struct InvalidPool {
    /// Buffers asked for.
    pub buffer_count: usize,
    /// Bytes per buffer asked for.
    pub buffer_size: usize,
}

impl BufferPool {
    /// Allocates `buffer_count` zeroed buffers of `buffer_size` bytes.
    ///
    /// # Errors
    ///
    /// [`InvalidPool`] if either number is zero or above its maximum.
    pub fn new(buffer_size: usize, buffer_count: usize) -> Result<Self, InvalidPool> {
        Self::build(buffer_size, buffer_count, None)
    }

    /// As [`BufferPool::new`], calling `on_release` after every buffer returns (to wake a waiter).
    ///
    /// # Errors
    ///
    /// [`InvalidPool`] if either number is zero or above its maximum.
    pub fn with_release_hook(
        buffer_size: usize,
        buffer_count: usize,
        on_release: impl Fn() + Send + Sync + 'static,
    ) -> Result<Self, InvalidPool> {
        Self::build(buffer_size, buffer_count, Some(Box::new(on_release)))
    }

    fn build(
        buffer_size: usize,
        buffer_count: usize,
        on_release: Option<Box<dyn Fn() + Send + Sync>>,
    ) -> Result<Self, InvalidPool> {
        if !(1..=BUFFER_SIZE_MAX).contains(&buffer_size)
            || !(1..=BUFFER_COUNT_MAX).contains(&buffer_count)
        {
            return Err(InvalidPool { buffer_count, buffer_size });
        }
        let free = ArrayQueue::new(buffer_count);
        for _ in 0..buffer_count {
            let buffer: Box<[u8]> = bytemuck::zeroed_slice_box(buffer_size);
            // INVARIANT 2: the queue holds exactly `buffer_count`.
            free.push(buffer).expect("queue capacity equals the buffer count");
        }
        Ok(Self {
            inner: Arc::new(Inner {
                free,
                buffer_size,
                buffer_count,
                in_use: AtomicUsize::new(0),
                acquired: AtomicU64::new(0),
                exhausted: AtomicU64::new(0),
                on_release,
            }),
        })
    }

    /// Takes a free buffer, or fails at once if none is free.
    ///
    /// # Errors
    ///
    /// [`PoolExhausted`] if every buffer is in use; the event is counted.
    pub fn try_acquire(&self) -> Result<PooledBuffer, PoolExhausted> {
        match self.inner.free.pop() {
            Some(buffer) => {
                self.inner.in_use.fetch_add(1, Ordering::Relaxed);
                self.inner.acquired.fetch_add(1, Ordering::Relaxed);
                Ok(PooledBuffer { buffer: Some(buffer), pool: Arc::clone(&self.inner) })
            }
            None => {
                self.inner.exhausted.fetch_add(1, Ordering::Relaxed);
                Err(PoolExhausted {
                    buffer_count: self.inner.buffer_count,
                    buffer_size: self.inner.buffer_size,
                })
            }
        }
    }

    /// Bytes per buffer.
    pub fn buffer_size(&self) -> usize {
        self.inner.buffer_size
    }

    /// The pool's counters.
    pub fn stats(&self) -> PoolStats {
        PoolStats {
            buffer_count: self.inner.buffer_count,
            buffer_size: self.inner.buffer_size,
            in_use: self.inner.in_use.load(Ordering::Relaxed),
            acquired: self.inner.acquired.load(Ordering::Relaxed),
            exhausted: self.inner.exhausted.load(Ordering::Relaxed),
        }
    }
}

impl fmt::Debug for BufferPool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BufferPool").field("stats", &self.stats()).finish()
    }
}

/// A buffer on loan from a [`BufferPool`]; it goes back when dropped.
pub struct PooledBuffer {
    buffer: Option<Box<[u8]>>,
    pool: Arc<Inner>,
}

impl PooledBuffer {
    fn slice(&self) -> &[u8] {
        self.buffer.as_deref().expect("present until drop")
    }
}

impl Deref for PooledBuffer {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        self.slice()
    }
}

impl DerefMut for PooledBuffer {
    fn deref_mut(&mut self) -> &mut [u8] {
        self.buffer.as_deref_mut().expect("present until drop")
    }
}

impl fmt::Debug for PooledBuffer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PooledBuffer").field("size", &self.slice().len()).finish()
    }
}

impl Drop for PooledBuffer {
    fn drop(&mut self) {
        if let Some(buffer) = self.buffer.take() {
            // INVARIANT 2: a buffer that came out of the queue always fits back in.
            let returned = self.pool.free.push(buffer);
            debug_assert!(returned.is_ok(), "pool queue overflow");
            self.pool.in_use.fetch_sub(1, Ordering::Relaxed);
            if let Some(hook) = &self.pool.on_release {
                hook();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffers_come_back_on_drop_and_the_pool_never_grows() {
        let pool = BufferPool::new(64, 2).unwrap();
        let mut first = pool.try_acquire().unwrap();
        first[0] = 7;
        let second = pool.try_acquire().unwrap();
        assert_eq!(
            pool.try_acquire().unwrap_err(),
            PoolExhausted { buffer_count: 2, buffer_size: 64 }
        );
        assert_eq!(pool.stats().in_use, 2);
        assert_eq!(pool.stats().exhausted, 1);
        drop(first);
        let again = pool.try_acquire().unwrap();
        assert_eq!(again.len(), 64);
        drop((second, again));
        let stats = pool.stats();
        assert_eq!((stats.in_use, stats.acquired, stats.exhausted), (0, 3, 1));
    }

    #[test]
    fn release_hook_runs_once_per_return() {
        let calls = Arc::new(AtomicUsize::new(0));
        let counter = Arc::clone(&calls);
        let pool = BufferPool::with_release_hook(8, 1, move || {
            counter.fetch_add(1, Ordering::Relaxed);
        })
        .unwrap();
        drop(pool.try_acquire().unwrap());
        drop(pool.try_acquire().unwrap());
        assert_eq!(calls.load(Ordering::Relaxed), 2);
    }

    #[test]
    fn limits_are_checked() {
        assert!(BufferPool::new(0, 1).is_err());
        assert!(BufferPool::new(1, 0).is_err());
        assert!(BufferPool::new(BUFFER_SIZE_MAX + 1, 1).is_err());
        assert!(BufferPool::new(1, BUFFER_COUNT_MAX + 1).is_err());
        let error = BufferPool::new(0, 1).unwrap_err().to_string();
        assert!(error.contains("0 bytes"), "{error}");
    }

    #[test]
    fn concurrent_acquire_release_keeps_the_count() {
        let pool = BufferPool::new(16, 4).unwrap();
        std::thread::scope(|scope| {
            for _ in 0..4 {
                let pool = pool.clone();
                scope.spawn(move || {
                    for _ in 0..1000 {
                        if let Ok(mut buffer) = pool.try_acquire() {
                            buffer[0] = buffer[0].wrapping_add(1);
                        }
                    }
                });
            }
        });
        assert_eq!(pool.stats().in_use, 0);
        let all: Vec<_> = (0..4).map(|_| pool.try_acquire().unwrap()).collect();
        assert!(pool.try_acquire().is_err(), "every buffer came back exactly once");
        drop(all);
    }
}
