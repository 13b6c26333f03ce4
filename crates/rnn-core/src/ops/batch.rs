//! Splitting the batch across threads: the recurrences of different sequences are independent,
//! so each thread runs its chunk of batch rows through every step ([`for_each_batch_chunk`]),
//! writing its own rows of shared buffers ([`Shared`]), with the input projection per step
//! inside the chunk where that pays ([`per_step_projection`], [`StepInput`]).

use super::gemm;
use super::math::Float;
use super::problem::Problem;
use std::cell::Cell;

thread_local! {
    /// Threads the fused CPU ops that this thread starts may use ([`with_threads`]).
    static BUDGET: Cell<Option<usize>> = const { Cell::new(None) };
}

/// Threads the fused CPU ops started on this thread may use: [`with_threads`]'s count, else
/// Rayon's.
pub(crate) fn threads() -> usize {
    BUDGET.get().unwrap_or_else(rayon::current_num_threads)
}

/// Runs `f` with the fused CPU ops it starts on this thread planned for `n` threads (at least
/// one): for two runs that go on side by side, each on its share of the pool.
pub(crate) fn with_threads<R>(n: usize, f: impl FnOnce() -> R) -> R {
    struct Restore(Option<usize>);
    impl Drop for Restore {
        fn drop(&mut self) {
            BUDGET.set(self.0);
        }
    }
    let _restore = Restore(BUDGET.replace(Some(n.max(1))));
    f()
}

/// A buffer that several threads write at once, each in its own rows (a chunk of the batch).
#[derive(Clone, Copy)]
pub(crate) struct Shared<T> {
    ptr: *mut T,
    len: usize,
}

// SAFETY: `Shared` only hands out slices through `slice`, whose callers guarantee that threads
// touch disjoint ranges while the underlying buffer is alive and not otherwise borrowed.
unsafe impl<T: Send> Send for Shared<T> {}
unsafe impl<T: Send> Sync for Shared<T> {}

impl<T> Shared<T> {
    pub fn new(buf: &mut [T]) -> Self {
        Self {
            ptr: buf.as_mut_ptr(),
            len: buf.len(),
        }
    }

    /// Whether the buffer has no elements.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// A raw pointer to `buf[start]`, for kernels that write strided parts of the buffer.
    pub fn ptr_at(&self, start: usize) -> *mut T {
        assert!(start <= self.len, "shared buffer offset out of bounds");
        self.ptr.wrapping_add(start)
    }

    /// `buf[start .. start + len]`, to read.
    ///
    /// # Safety
    /// No thread may write the range while the returned slice lives.
    pub unsafe fn get(&self, start: usize, len: usize) -> &[T] {
        assert!(start + len <= self.len, "shared buffer range out of bounds");
        std::slice::from_raw_parts(self.ptr.add(start), len)
    }

    /// `buf[start .. start + len]`.
    ///
    /// # Safety
    /// No other live reference may overlap the range: kernels give each batch chunk its own rows
    /// (see [`Problem::span`]) and take one range at a time.
    #[allow(clippy::mut_from_ref)]
    pub unsafe fn slice(&self, start: usize, len: usize) -> &mut [T] {
        assert!(start + len <= self.len, "shared buffer range out of bounds");
        std::slice::from_raw_parts_mut(self.ptr.add(start), len)
    }
}

/// Fewest batch rows worth a thread of their own.
pub(crate) const MIN_ROWS_PER_THREAD: usize = 4;

/// Runs `f` on chunks of the batch rows `0..batch`, one per thread: the recurrences of different
/// sequences are independent, so each thread runs its chunk through every step with no
/// synchronisation (one thread when the batch is too small to split).
pub(crate) fn for_each_batch_chunk(batch: usize, f: impl Fn(std::ops::Range<usize>) + Sync) {
    let chunks = batch_chunks(batch);
    if chunks == 1 {
        f(0..batch);
        return;
    }
    let f = &f;
    rayon::scope(|s| {
        for c in 0..chunks {
            let range = c * batch / chunks..(c + 1) * batch / chunks;
            s.spawn(move |_| f(range));
        }
    });
}

/// Fewest rows per batch chunk for which each step's input projection runs inside the chunk's
/// recurrence (with the packed kernel) instead of as one GEMM over all rows before it: the
/// per-step product then fills whole register blocks, needs no pass of its own over the gates
/// and no synchronisation, and inference keeps no gates for all steps.
pub(crate) const PER_STEP_PROJECTION_MIN_ROWS: usize = 6;

/// Whether the input projection `(input) -> (gates)` runs per step inside each batch chunk (see
/// [`PER_STEP_PROJECTION_MIN_ROWS`]): a register kernel was chosen for its products.
pub(crate) fn per_step_projection<T: Float>(batch: usize, input: usize, gates: usize) -> bool {
    batch / batch_chunks(batch) >= PER_STEP_PROJECTION_MIN_ROWS
        && gemm::PackedRhs::<T>::chosen(chunk_rows(batch), input, gates)
            != gemm::KernelIsa::Portable
}

/// The input projection run per step inside a batch chunk: `x_t · W_ihᵀ (+ bias)`.
pub(crate) struct StepInput<'a, T> {
    pub x: &'a [T],
    pub w_ih_t: &'a gemm::PackedRhs<T>,
    pub bias: Option<&'a [T]>,
}

impl<T: Float> StepInput<'_, T> {
    /// Writes step `t`'s projection of batch rows `b0 .. b0 + n` into `dst` (row `i` at
    /// `dst[i * dst_rs..]`, as many columns as `W_ihᵀ` has).
    pub fn project(
        &self,
        p: &Problem,
        t: usize,
        b0: usize,
        n: usize,
        dst: &mut [T],
        dst_rs: usize,
    ) {
        if let Some(bias) = self.bias {
            for i in 0..n {
                dst[i * dst_rs..][..bias.len()].copy_from_slice(bias);
            }
        }
        let x_t = gemm::MatRef::strided(
            self.x,
            p.row(t, b0) * p.input,
            n,
            p.input,
            p.step_rs(p.input),
            1,
        );
        self.w_ih_t.matmul(dst, 0, dst_rs, self.bias.is_some(), x_t);
    }
}

/// Rows of the largest chunk [`for_each_batch_chunk`] splits `batch` rows into: the rows of
/// each per-step product, which pick its kernel ([`gemm::PackedRhs::new`]).
pub(crate) fn chunk_rows(batch: usize) -> usize {
    batch.div_ceil(batch_chunks(batch))
}

/// How many chunks [`for_each_batch_chunk`] splits `batch` rows into.
pub(crate) fn batch_chunks(batch: usize) -> usize {
    threads().min(batch / MIN_ROWS_PER_THREAD).max(1)
}
