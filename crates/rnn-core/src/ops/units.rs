//! Splitting the hidden units across threads, for batches too small to split
//! ([`super::batch`]): at batch 1 each step is a matrix-vector product with `W_hh`, and one
//! thread leaves the other cores idle while it streams the whole matrix every step. Here each
//! thread owns a slice of the hidden units: the rows of `W_hh` that feed its units' gates (read in
//! place by the row-dot kernels for a few rows, packed once per run from
//! [`PACKED_SLICE_MIN_BATCH`] rows), its units' cell state, and their gate math, which needs no
//! other unit. Threads meet once per step, to read the whole new `h` (double-buffered, so one
//! meeting per step suffices); [`run_steps`] is that meeting, a spin on two atomics instead of a
//! fork-join. With a large `W_hh` the split also pays at batches that could be split by rows,
//! where every thread would stream all of `W_hh` each step and here streams its slice.
//!
//! Which runs are split: see [`slices`]. `RNN_UNIT_SPLIT=auto|on|off` (default `auto`), and
//! [`with_unit_split`] for tests and comparisons.

use super::batch::{batch_chunks, Shared};
use super::gemm::{MatRef, PackedRhs, RowsRhs};
use super::masks::KernelMasks;
use super::math::Float;
use super::problem::Problem;
use std::cell::Cell;
use std::ops::Range;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};

/// Whether a run splits its hidden units across threads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UnitSplit {
    /// Split when the host has several threads, the hidden size is at least
    /// [`AUTO_MIN_HIDDEN`] and the sequence is long enough ([`AUTO_MIN_WORK`]) -- below those
    /// the split's fixed cost (handing the loop to the pool) and its per-step meeting cost more
    /// than it saves -- and either the batch is too small to split by rows, or the pass is a
    /// forward one with a large `W_hh` ([`AUTO_MID_BATCH_MIN_BYTES`]) and at least
    /// [`AUTO_MID_BATCH_MIN_ROWS`] rows.
    Auto,
    /// Split every run the split path supports (tests: small shapes, even on one thread).
    On,
    /// Never split.
    Off,
}

/// Smallest hidden size [`UnitSplit::Auto`] splits.
pub const AUTO_MIN_HIDDEN: usize = 128;

/// Smallest `seq_len * hidden²` [`UnitSplit::Auto`] splits: 8 steps at hidden 128, 2 at 256
/// (measured on a 2-core Zen 4, benches/README.md: at hidden 64 the split costs up to 1.3x, from
/// 128 on it saves 10-40%, at 512 about half the step).
pub const AUTO_MIN_WORK: usize = 1 << 17;

/// Smallest `W_hh` in bytes that [`UnitSplit::Auto`] splits in a forward pass whose batch is
/// large enough to split by rows (from [`AUTO_MID_BATCH_MIN_ROWS`] rows): there each thread
/// streams all of `W_hh` every step, split by units its slice. Below this size, below that many
/// rows and in the LSTM backward the split measured no faster (benches/README.md, "Mid-size
/// batches with a large `W_hh`").
pub const AUTO_MID_BATCH_MIN_BYTES: usize = 8 << 20;

/// Fewest batch rows of a forward split by units although its batch could be split by rows
/// ([`AUTO_MID_BATCH_MIN_BYTES`]).
pub const AUTO_MID_BATCH_MIN_ROWS: usize = 16;

/// Slice boundaries are multiples of this when the hidden size allows, so that each slice's
/// rows start on whole vector blocks.
const UNIT_ALIGN: usize = 8;

thread_local! {
    static FORCED: Cell<Option<UnitSplit>> = const { Cell::new(None) };
}

impl UnitSplit {
    /// The setting for runs started on this thread: [`with_unit_split`]'s, else
    /// `RNN_UNIT_SPLIT` (`on`, `off`; anything else is `auto`).
    pub fn current() -> Self {
        if let Some(s) = FORCED.get() {
            return s;
        }
        match std::env::var("RNN_UNIT_SPLIT").as_deref().map(str::trim) {
            Ok("on") => UnitSplit::On,
            Ok("off") => UnitSplit::Off,
            _ => UnitSplit::Auto,
        }
    }
}

/// Runs `f` with every fused CPU recurrence that this thread starts using `split`, whatever
/// `RNN_UNIT_SPLIT` says. For tests and comparisons.
pub fn with_unit_split<R>(split: UnitSplit, f: impl FnOnce() -> R) -> R {
    struct Restore(Option<UnitSplit>);
    impl Drop for Restore {
        fn drop(&mut self) {
            FORCED.set(self.0);
        }
    }
    let _restore = Restore(FORCED.replace(Some(split)));
    f()
}

/// Which pass of which cell asks [`slices`]: the number of gate blocks of `W_hh` (4 for the
/// LSTM, 3 for the GRU) and whether it is the forward pass.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Pass {
    pub gates: usize,
    pub forward: bool,
}

/// The unit slices a run of `p` is split into (two or more), or `None` to run it by batch
/// chunks. The split path covers the plain recurrence with recurrent dropout and variable
/// lengths; a projection (`proj_size`) or zoneout keeps the batch path.
pub(crate) fn slices<T: Float>(
    p: &Problem,
    projected: bool,
    m: &KernelMasks<T>,
    pass: Pass,
) -> Option<Vec<Range<usize>>> {
    let zoneout = m.zh.is_some() || m.zc.is_some();
    let count = slice_count(p, projected, zoneout, pass, std::mem::size_of::<T>())?;
    let align = if p.hidden >= UNIT_ALIGN * count {
        UNIT_ALIGN
    } else {
        1
    };
    let bound = |j: usize| {
        if j == count {
            p.hidden
        } else {
            j * p.hidden / count / align * align
        }
    };
    Some((0..count).map(|j| bound(j)..bound(j + 1)).collect())
}

/// How many unit slices [`slices`] splits a run of `p` into (`elem_bytes` per element of
/// `W_hh`), or `None` for the batch path.
pub(crate) fn slice_count(
    p: &Problem,
    projected: bool,
    zoneout: bool,
    pass: Pass,
    elem_bytes: usize,
) -> Option<usize> {
    if projected || zoneout || p.hidden < 2 {
        return None;
    }
    let threads = super::batch::threads();
    let count = match UnitSplit::current() {
        UnitSplit::Off => return None,
        UnitSplit::On => threads.max(2).min(p.hidden),
        UnitSplit::Auto => {
            let w_hh_bytes = pass.gates * p.hidden * p.hidden * elem_bytes;
            if threads < 2
                || p.hidden < AUTO_MIN_HIDDEN
                || p.seq_len * p.hidden * p.hidden < AUTO_MIN_WORK
                || (batch_chunks(p.batch) > 1
                    && (!pass.forward
                        || w_hh_bytes < AUTO_MID_BATCH_MIN_BYTES
                        || p.batch < AUTO_MID_BATCH_MIN_ROWS))
            {
                return None;
            }
            threads.min(p.hidden / (AUTO_MIN_HIDDEN / 2))
        }
    };
    (count >= 2).then_some(count)
}

/// The rows of a gate-blocked matrix (`gates` blocks of `hidden` rows) that belong to `units`,
/// block by block.
pub(crate) fn gate_rows(gates: usize, hidden: usize, units: &Range<usize>) -> Vec<Range<usize>> {
    (0..gates)
        .map(|g| g * hidden + units.start..g * hidden + units.end)
        .collect()
}

/// Batch rows from which a slice's rows of `W_hh` are gathered and packed once per run for the
/// register-blocked kernels ([`SliceRhs::Packed`]) instead of read in place by the row-dot ones:
/// one full register block of rows (8 with AVX-512, 6 with AVX2). Below it every element of
/// `W_hh` is used once or twice per step, and the packed copy costs about what it saves.
pub(crate) const PACKED_SLICE_MIN_BATCH: usize = 8;

/// The right-hand side `W_sliceᵀ` of a slice's per-step product `h · W_sliceᵀ`, where
/// `W_slice` is the rows of `W_hh` that feed the slice's gates.
pub(crate) enum SliceRhs<'a, T: Float> {
    /// Read in place by the row-dot kernels (a few batch rows).
    Rows(RowsRhs<'a, T>),
    /// Gathered and packed once per run for the register-blocked kernels (from
    /// [`PACKED_SLICE_MIN_BATCH`] rows): `k` is `W_hh`'s width.
    Packed { w: PackedRhs<T>, k: usize },
}

impl<'a, T: Float> SliceRhs<'a, T> {
    /// The rows `blocks` of `w_hh` (`k` wide) for products of `rows` batch rows.
    pub fn new(w_hh: &'a [T], k: usize, blocks: Vec<Range<usize>>, rows: usize) -> Self {
        if rows < PACKED_SLICE_MIN_BATCH {
            return Self::Rows(RowsRhs::new(w_hh, k, blocks, rows));
        }
        let mut gathered = Vec::with_capacity(blocks.iter().map(|b| b.len()).sum::<usize>() * k);
        for b in &blocks {
            gathered.extend_from_slice(&w_hh[b.start * k..b.end * k]);
        }
        let n = gathered.len() / k;
        Self::Packed {
            w: PackedRhs::new(MatRef::row_major(&gathered, n, k).t(), rows),
            k,
        }
    }

    /// `dst (m, n) [+]= a (m, k) · W_sliceᵀ`, row `i` of `dst` at `dst[i * dst_rs..]`; `a` is
    /// `m` rows of `k` contiguous values, `a_rs` apart. Single-threaded.
    pub fn matmul(
        &self,
        dst: &mut [T],
        dst_rs: usize,
        accumulate: bool,
        (a, m, a_rs): (&[T], usize, usize),
    ) {
        match self {
            Self::Rows(w) => w.matmul(dst, dst_rs, accumulate, (a, m, a_rs)),
            Self::Packed { w, k } => w.matmul(
                dst,
                0,
                dst_rs,
                accumulate,
                MatRef::strided(a, 0, m, *k, a_rs, 1),
            ),
        }
    }
}

/// What every unit slice of a split forward holds: its units, the rows of `W_hh` feeding their
/// `gates` gate blocks ([`SliceRhs`]), this step's pre-activations of those gates
/// (`(batch, gates * units)`), and `h` as it enters `W_hh` under recurrent dropout
/// (`(batch, hidden)`; empty without it).
pub(crate) struct GateSlice<'a, T: Float> {
    pub units: Range<usize>,
    pub w: SliceRhs<'a, T>,
    pub g: Vec<T>,
    pub h_rec: Vec<T>,
}

impl<'a, T: Float> GateSlice<'a, T> {
    /// The slice `units` of a problem `p` whose `W_hh` (`gates` blocks of `hidden` rows) is
    /// `w_hh`.
    pub fn new(
        p: &Problem,
        w_hh: &'a [T],
        gates: usize,
        units: &Range<usize>,
        m: &KernelMasks<T>,
    ) -> Self {
        let (bb, hh) = (p.batch, p.hidden);
        Self {
            units: units.clone(),
            w: SliceRhs::new(w_hh, hh, gate_rows(gates, hh, units), bb),
            g: vec![T::zero(); bb * gates * units.len()],
            h_rec: vec![T::zero(); if m.rec.is_some() { bb * hh } else { 0 }],
        }
    }
}

/// The forward steps of `p` over `parts` ([`run_steps`]) with `h` double-buffered:
/// `step(t, h, h_next, part)` reads all of step `t`'s incoming `h` (`(batch, hidden)`) and
/// writes its part of the outgoing one into `h_next`. Returns the final `h`.
pub(crate) fn run_forward<T: Float, S: Send>(
    p: &Problem,
    h0: &[T],
    parts: &mut [S],
    step: impl Fn(usize, &[T], Shared<T>, &mut S) + Sync,
) -> Vec<T> {
    let len = p.batch * p.hidden;
    let mut h_bufs = [h0[..len].to_vec(), vec![T::zero(); len]];
    let steps: Vec<usize> = p.forward_steps().collect();
    {
        let [a, b] = &mut h_bufs;
        let h_bufs = [Shared::new(a), Shared::new(b)];
        run_steps(parts, steps.len(), |k, part| {
            // SAFETY: step k reads buffer k % 2, which no part writes during step k.
            let h = unsafe { h_bufs[k % 2].get(0, len) };
            step(steps[k], h, h_bufs[(k + 1) % 2], part)
        });
    }
    let [a, b] = h_bufs;
    if steps.len().is_multiple_of(2) {
        a
    } else {
        b
    }
}

/// The parts of [`run_steps`], handed to whichever thread claims one.
struct Parts<S>(*mut S);

// SAFETY: a part is reached only through a claim of `run_steps`'s ticket, which gives it to one
// thread per step, and steps are ordered by the coordinator's wait.
unsafe impl<S: Send> Send for Parts<S> {}
unsafe impl<S: Send> Sync for Parts<S> {}

impl<S> Parts<S> {
    /// Part `j` (a method, so that closures capture the whole `Parts`, not its raw pointer).
    fn at(&self, j: usize) -> *mut S {
        self.0.wrapping_add(j)
    }
}

/// Claims in a step's ticket: the low 32 bits count claims, the high bits hold the step + 1 (0:
/// no step published yet).
const CLAIMS: u64 = 0xffff_ffff;

/// Runs `step(k, part)` for every step `k` in `0..steps` and every part, all parts of step `k`
/// before any of step `k + 1`, spread over the pool's threads. The calling thread (or the pool
/// worker it hands the loop to) coordinates: it publishes each step in a ticket, claims parts
/// itself and spins until every part of the step is done. Helpers, one per other thread of the
/// pool, spin on the ticket and claim parts too. A helper that never starts (a busy pool) only
/// means the coordinator runs more parts itself: no thread ever waits for a particular one, so
/// this cannot deadlock, even with several of these runs in one pool at once. A panic in any
/// part ends every thread's loop and is raised again.
pub(crate) fn run_steps<S: Send>(
    parts: &mut [S],
    steps: usize,
    step: impl Fn(usize, &mut S) + Sync,
) {
    let n = parts.len();
    let helpers = super::batch::threads().min(n).saturating_sub(1);
    if helpers == 0 {
        for k in 0..steps {
            for part in parts.iter_mut() {
                step(k, part);
            }
        }
        return;
    }
    let parts = Parts(parts.as_mut_ptr());
    let ticket = AtomicU64::new(0);
    let done = AtomicUsize::new(0);
    // Set when the coordinator leaves (normally or unwinding) or a part panicked.
    let finished = AtomicBool::new(false);
    let poisoned = AtomicBool::new(false);
    /// Sets its flag when dropped, or only when dropped while unwinding (`only_on_panic`).
    struct Flag<'a>(&'a AtomicBool, bool);
    impl Drop for Flag<'_> {
        fn drop(&mut self) {
            if !self.1 || std::thread::panicking() {
                self.0.store(true, Ordering::Release);
            }
        }
    }
    // Claims and runs parts of step `k1 - 1` until none is left.
    let work = |k1: u64| loop {
        let cur = ticket.load(Ordering::Acquire);
        if cur >> 32 != k1 || cur & CLAIMS >= n as u64 {
            return;
        }
        if ticket
            .compare_exchange_weak(cur, cur + 1, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
        {
            let _poison = Flag(&poisoned, true);
            // SAFETY: the claim is this part's only one in this step (see `Parts`).
            step((k1 - 1) as usize, unsafe {
                &mut *parts.at((cur & CLAIMS) as usize)
            });
            done.fetch_add(1, Ordering::Release);
        }
    };
    rayon::scope(|s| {
        for _ in 0..helpers {
            s.spawn(|_| loop {
                let cur = ticket.load(Ordering::Acquire);
                if cur >> 32 != 0 && cur & CLAIMS < n as u64 {
                    work(cur >> 32);
                } else if finished.load(Ordering::Acquire) || poisoned.load(Ordering::Acquire) {
                    return;
                } else {
                    std::hint::spin_loop();
                }
            });
        }
        let _finished = Flag(&finished, false);
        for k in 0..steps as u64 {
            done.store(0, Ordering::Relaxed);
            ticket.store((k + 1) << 32, Ordering::Release);
            work(k + 1);
            while done.load(Ordering::Acquire) < n {
                if poisoned.load(Ordering::Acquire) {
                    panic!("a unit slice of the fused recurrence panicked");
                }
                std::hint::spin_loop();
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An LSTM forward pass.
    const FWD: Pass = Pass {
        gates: 4,
        forward: true,
    };

    fn problem(batch: usize, hidden: usize) -> Problem {
        Problem {
            seq_len: 3,
            batch,
            input: 4,
            hidden,
            state: hidden,
            batch_first: false,
            reverse: false,
            lengths: None,
            input_grad: true,
        }
    }

    #[test]
    fn slices_cover_every_unit_once_in_order() {
        for hidden in [2, 3, 7, 16, 33, 650, 1024] {
            let s = with_unit_split(UnitSplit::On, || {
                slices::<f32>(&problem(1, hidden), false, &KernelMasks::none(), FWD)
            })
            .expect("forced on");
            assert!(s.len() >= 2, "hidden {hidden}: {s:?}");
            assert_eq!(s[0].start, 0);
            assert_eq!(s.last().unwrap().end, hidden);
            for w in s.windows(2) {
                assert_eq!(w[0].end, w[1].start);
                assert!(!w[0].is_empty(), "hidden {hidden}: {s:?}");
            }
        }
    }

    #[test]
    fn off_projection_and_zoneout_keep_the_batch_path() {
        let p = problem(1, 512);
        let none = KernelMasks::<f32>::none();
        assert!(with_unit_split(UnitSplit::Off, || slices(&p, false, &none, FWD)).is_none());
        assert!(with_unit_split(UnitSplit::On, || slices(&p, true, &none, FWD)).is_none());
        let z = [0.5f32];
        let zoned = KernelMasks {
            zh: Some(&z[..]),
            ..none
        };
        assert!(with_unit_split(UnitSplit::On, || slices(&p, false, &zoned, FWD)).is_none());
        // Auto leaves small hidden sizes and splittable batches to the batch path.
        assert!(with_unit_split(UnitSplit::Auto, || slices(
            &problem(1, 64),
            false,
            &none,
            FWD
        ))
        .is_none());
        assert!(with_unit_split(UnitSplit::Auto, || slices(
            &problem(64, 512),
            false,
            &none,
            FWD
        ))
        .is_none());
    }

    /// Every part runs every step once, in step order, whatever thread claims it.
    #[test]
    fn run_steps_runs_each_part_once_per_step_in_order() {
        for threads in [1, 2, 4] {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap();
            let mut parts: Vec<Vec<usize>> = vec![Vec::new(); 5];
            pool.install(|| run_steps(&mut parts, 300, |k, log| log.push(k)));
            for log in &parts {
                assert_eq!(*log, (0..300).collect::<Vec<_>>(), "{threads} threads");
            }
        }
    }

    /// Two runs at once in a two-thread pool (helpers of one may never start): both finish.
    #[test]
    fn concurrent_runs_in_one_small_pool_finish() {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(2)
            .build()
            .unwrap();
        let (a, b) = pool.install(|| {
            rayon::join(
                || {
                    let mut parts = vec![0u64; 3];
                    run_steps(&mut parts, 2000, |k, s| *s += k as u64);
                    parts
                },
                || {
                    let mut parts = vec![0u64; 2];
                    run_steps(&mut parts, 1000, |_, s| *s += 1);
                    parts
                },
            )
        });
        assert_eq!(a, vec![1999 * 2000 / 2; 3]);
        assert_eq!(b, vec![1000; 2]);
    }

    /// A part that panics ends the run with a panic (the part's own, or the coordinator's
    /// "panicked" when it notices first) instead of leaving the other threads spinning.
    #[test]
    #[should_panic]
    fn a_panicking_part_ends_the_run() {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(2)
            .build()
            .unwrap();
        let mut parts = vec![0usize; 4];
        pool.install(|| {
            run_steps(&mut parts, 10, |k, s| {
                *s += 1;
                if k == 5 && *s == 6 {
                    panic!("boom");
                }
            })
        });
    }

    #[test]
    fn auto_splits_long_enough_runs_at_large_hidden_sizes() {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(2)
            .build()
            .unwrap();
        let none = KernelMasks::<f32>::none();
        let auto = |batch, seq_len, hidden| {
            let p = Problem {
                seq_len,
                ..problem(batch, hidden)
            };
            pool.install(|| with_unit_split(UnitSplit::Auto, || slices(&p, false, &none, FWD)))
        };
        assert_eq!(auto(1, 35, 512), Some(vec![0..256, 256..512]));
        assert_eq!(auto(3, 200, 650).map(|s| s.len()), Some(2));
        assert_eq!(auto(1, 35, 128).map(|s| s.len()), Some(2));
        assert_eq!(auto(1, 200, 64), None, "hidden 64 is too small");
        assert_eq!(auto(1, 5, 128), None, "5 steps at hidden 128 are too short");
        assert_eq!(auto(8, 200, 512), None, "a batch of 8 splits by rows");
    }

    /// Batches that could be split by rows are split by units only in the forward pass, from
    /// 16 rows, with a `W_hh` of at least 8 MiB.
    #[test]
    fn auto_splits_mid_size_batches_only_forward_with_a_large_w_hh() {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(2)
            .build()
            .unwrap();
        fn auto<T: Float>(
            pool: &rayon::ThreadPool,
            batch: usize,
            hidden: usize,
            pass: Pass,
        ) -> bool {
            let p = Problem {
                seq_len: 35,
                ..problem(batch, hidden)
            };
            let none = KernelMasks::<T>::none();
            pool.install(|| with_unit_split(UnitSplit::Auto, || slices(&p, false, &none, pass)))
                .is_some()
        }
        let lstm = |forward| Pass { gates: 4, forward };
        let gru = Pass {
            gates: 3,
            forward: true,
        };
        assert!(auto::<f32>(&pool, 32, 1024, lstm(true)));
        assert!(auto::<f32>(&pool, 16, 1024, lstm(true)));
        assert!(!auto::<f32>(&pool, 32, 1024, lstm(false)), "backward");
        assert!(!auto::<f32>(&pool, 8, 1024, lstm(true)), "8 rows");
        assert!(auto::<f32>(&pool, 64, 800, lstm(true)), "10 MB");
        assert!(auto::<f32>(&pool, 16, 768, lstm(true)), "9.4 MB");
        assert!(auto::<f32>(&pool, 16, 840, gru), "8.5 MB");
        assert!(!auto::<f32>(&pool, 64, 650, lstm(true)), "6.8 MB");
        assert!(auto::<f64>(&pool, 64, 650, lstm(true)), "13.5 MB in f64");
        assert!(auto::<f32>(&pool, 32, 1024, gru), "12.6 MB");
        assert!(!auto::<f32>(&pool, 32, 800, gru), "7.7 MB");
        // Off the pool's two threads (a one-thread pool) nothing splits.
        let one = rayon::ThreadPoolBuilder::new()
            .num_threads(1)
            .build()
            .unwrap();
        assert!(!auto::<f32>(&one, 32, 1024, lstm(true)));
    }

    #[test]
    fn gate_rows_are_each_gates_rows_of_the_slice() {
        assert_eq!(gate_rows(3, 5, &(1..3)), vec![1..3, 6..8, 11..13]);
    }
}
