//! Recycled buffers for the fused ops' large activations and gradients.
//!
//! One training step of an LSTM allocates tens of megabytes of saved activations and gate
//! gradients, and zero-filling them every step is a measurable share of the step. Each of these
//! buffers is written in full before it is read, so a buffer of the previous step serves
//! as it is. [`take`] hands out such a buffer (its contents are stale values, initialised memory
//! but meaningless); [`give`] returns one when its owner is done with it.
//!
//! The cache is bounded ([`MAX_BUFFERS`], [`MAX_BYTES`] per dtype) and [`release`] empties it.
//! Debug builds fill every taken buffer with NaN, so a reader of an element no one wrote shows
//! up as NaN in the tests' results instead of as a stale value that happens to pass.

use std::sync::Mutex;

/// Buffers smaller than this are allocated fresh: zeroing them costs next to nothing.
const MIN_LEN_BYTES: usize = 64 << 10;
/// At most this many cached buffers per dtype.
pub(crate) const MAX_BUFFERS: usize = 16;
/// At most this many bytes cached per dtype (the oldest buffers go first).
pub(crate) const MAX_BYTES: usize = 256 << 20;

/// The cache of one dtype: buffers in the order they were returned.
pub(crate) struct Pool<T>(Mutex<Vec<Vec<T>>>);

fn bytes<T>(len: usize) -> usize {
    len * std::mem::size_of::<T>()
}

/// An element type with a cache of its own: the key of the pool lookup.
pub(crate) trait Pooled: num_traits::Float + Send + 'static {
    /// The recycled-buffer cache of this dtype.
    fn pool() -> &'static Pool<Self>;
}

impl Pooled for f32 {
    fn pool() -> &'static Pool<Self> {
        static POOL: Pool<f32> = Pool::new();
        &POOL
    }
}

impl Pooled for f64 {
    fn pool() -> &'static Pool<Self> {
        static POOL: Pool<f64> = Pool::new();
        &POOL
    }
}

impl<T: num_traits::Float> Pool<T> {
    pub(crate) const fn new() -> Self {
        Self(Mutex::new(Vec::new()))
    }

    /// See [`take`].
    fn take(&self, len: usize) -> Vec<T> {
        if bytes::<T>(len) >= MIN_LEN_BYTES {
            if let Ok(mut bufs) = self.0.lock() {
                // The smallest cached buffer that holds `len`, unless it is over twice as large.
                let best = bufs
                    .iter()
                    .enumerate()
                    .filter(|(_, b)| b.capacity() >= len && b.capacity() <= 2 * len)
                    .min_by_key(|(_, b)| b.capacity())
                    .map(|(i, _)| i);
                if let Some(i) = best {
                    let mut v = bufs.remove(i);
                    drop(bufs);
                    // Within capacity: no reallocation, and only a grown tail is zero-filled.
                    v.resize(len, T::zero());
                    poison(&mut v);
                    return v;
                }
            }
        }
        let mut v = vec![T::zero(); len];
        poison(&mut v);
        v
    }

    /// See [`give`].
    fn give(&self, v: Vec<T>) {
        let size = bytes::<T>(v.capacity());
        if !(MIN_LEN_BYTES..=MAX_BYTES).contains(&size) {
            return;
        }
        let Ok(mut bufs) = self.0.lock() else {
            return;
        };
        let mut total: usize = bufs.iter().map(|b| bytes::<T>(b.capacity())).sum();
        while !bufs.is_empty() && (bufs.len() >= MAX_BUFFERS || total + size > MAX_BYTES) {
            let old = bufs.remove(0);
            total -= bytes::<T>(old.capacity());
        }
        bufs.push(v);
    }

    fn clear(&self) {
        if let Ok(mut bufs) = self.0.lock() {
            bufs.clear();
        }
    }

    #[cfg(test)]
    fn cached_bytes(&self) -> usize {
        self.0
            .lock()
            .map(|b| b.iter().map(|v| bytes::<T>(v.capacity())).sum())
            .unwrap_or(0)
    }
}

/// A buffer of `len` elements whose contents are unspecified (stale values of an earlier
/// buffer, NaN in debug builds): every element must be written before it is read.
pub(crate) fn take<T: Pooled>(len: usize) -> Vec<T> {
    T::pool().take(len)
}

/// Returns a buffer to the cache (or frees it when it is small or the cache is full).
pub(crate) fn give<T: Pooled>(v: Vec<T>) {
    T::pool().give(v)
}

/// Frees every buffer the fused ops keep for reuse (up to [`MAX_BYTES`] per dtype); public as
/// `rnn_core::release_cached_buffers`.
pub fn release() {
    f32::pool().clear();
    f64::pool().clear();
}

#[cfg(debug_assertions)]
fn poison<T: num_traits::Float>(v: &mut [T]) {
    v.fill(T::nan());
}

#[cfg(not(debug_assertions))]
fn poison<T: num_traits::Float>(_: &mut [T]) {}

#[cfg(test)]
mod tests {
    use super::*;

    const BIG: usize = 1 << 16; // 512 KiB of f64

    #[test]
    fn a_returned_buffer_is_reused_in_place() {
        let pool = Pool::<f64>::new();
        let v = pool.take(BIG);
        assert_eq!(v.len(), BIG);
        let ptr = v.as_ptr();
        pool.give(v);
        assert_eq!(pool.cached_bytes(), bytes::<f64>(BIG));
        // A slightly smaller request reuses it; one under half its size does not.
        let w = pool.take(BIG - 10);
        assert_eq!((w.as_ptr(), w.len()), (ptr, BIG - 10));
        assert_eq!(pool.cached_bytes(), 0);
        pool.give(w);
        let small = pool.take(BIG / 4);
        assert_ne!(small.as_ptr(), ptr);
        assert_eq!(pool.cached_bytes(), bytes::<f64>(BIG));
        // Growing back within capacity keeps the allocation.
        let again = pool.take(BIG);
        assert_eq!((again.as_ptr(), again.len()), (ptr, BIG));
        // Too large for any cached buffer: a fresh one.
        pool.give(again);
        assert_eq!(pool.take(BIG + 1).len(), BIG + 1);
        assert_eq!(pool.cached_bytes(), bytes::<f64>(BIG));
        pool.clear();
        assert_eq!(pool.cached_bytes(), 0);
    }

    #[test]
    fn the_cache_is_bounded_and_small_buffers_are_not_kept() {
        let pool = Pool::<f64>::new();
        pool.give(vec![0f64; 16]);
        assert_eq!(pool.cached_bytes(), 0);
        for _ in 0..MAX_BUFFERS + 5 {
            pool.give(vec![0f64; BIG]);
        }
        assert_eq!(pool.cached_bytes(), MAX_BUFFERS * bytes::<f64>(BIG));
        // Large buffers evict the oldest ones until the total fits.
        let large = MAX_BYTES / 8 * 3 / std::mem::size_of::<f64>();
        pool.give(vec![0f64; large]);
        pool.give(vec![0f64; large]);
        let total = pool.cached_bytes();
        assert!(total <= MAX_BYTES, "{total} bytes cached");
        assert!(total >= 2 * bytes::<f64>(large));
        // Larger than the whole cache: freed.
        pool.clear();
        pool.give(vec![0f64; MAX_BYTES / 8 + 1]);
        assert_eq!(pool.cached_bytes(), 0);
    }

    #[test]
    #[cfg(debug_assertions)]
    fn debug_builds_hand_out_nan() {
        let pool = Pool::<f64>::new();
        pool.give(vec![1f64; BIG]);
        assert!(pool.take(BIG).iter().all(|v| v.is_nan()));
        assert!(pool.take(BIG).iter().all(|v| v.is_nan()));
    }
}
