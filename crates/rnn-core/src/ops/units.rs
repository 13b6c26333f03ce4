//! Splitting the hidden units across threads, for batches too small to split
//! ([`super::batch`]): at batch 1 each step is a matrix-vector product with `W_hh`, and one
//! thread leaves the other cores idle while it streams the whole matrix every step. Here each
//! thread owns a slice of the hidden units: the rows of `W_hh` that feed its units' gates (packed
//! once), its units' cell state, and their gate math, which needs no other unit. Threads meet
//! once per step, to read the whole new `h` (double-buffered, so one fork-join per step
//! suffices).
//!
//! Which runs are split: see [`slices`]. `RNN_UNIT_SPLIT=auto|on|off` (default `auto`), and
//! [`with_unit_split`] for tests and comparisons.

use super::batch::batch_chunks;
use super::masks::KernelMasks;
use super::math::Float;
use super::problem::Problem;
use std::cell::Cell;
use std::ops::Range;

/// Whether a run splits its hidden units across threads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UnitSplit {
    /// Split when the batch is too small to split, the host has several threads and the hidden
    /// size is at least [`AUTO_MIN_HIDDEN`] (below that the per-step fork-join costs about what
    /// the split saves).
    Auto,
    /// Split every run the split path supports (tests: small shapes, even on one thread).
    On,
    /// Never split.
    Off,
}

/// Smallest hidden size [`UnitSplit::Auto`] splits.
pub const AUTO_MIN_HIDDEN: usize = 256;

/// Units per slice are a multiple of this under [`UnitSplit::Auto`], so that each thread's gate
/// block fills whole register panels.
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

/// The unit slices a run of `p` is split into (two or more), or `None` to run it by batch
/// chunks. The split path covers the plain recurrence with recurrent dropout and variable
/// lengths; a projection (`proj_size`) or zoneout keeps the batch path.
pub(crate) fn slices<T: Float>(
    p: &Problem,
    projected: bool,
    m: &KernelMasks<T>,
) -> Option<Vec<Range<usize>>> {
    if projected || m.zh.is_some() || m.zc.is_some() || p.hidden < 2 {
        return None;
    }
    let threads = rayon::current_num_threads();
    let count = match UnitSplit::current() {
        UnitSplit::Off => return None,
        UnitSplit::On => threads.max(2).min(p.hidden),
        UnitSplit::Auto => {
            if threads < 2 || batch_chunks(p.batch) > 1 || p.hidden < AUTO_MIN_HIDDEN {
                return None;
            }
            threads.min(p.hidden / (AUTO_MIN_HIDDEN / 2))
        }
    };
    if count < 2 {
        return None;
    }
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

/// The rows of a gate-blocked matrix `w` (`gates` blocks of `hidden` rows, `cols` columns each)
/// that belong to `units`: block by block, `(gates * units.len(), cols)` row-major.
pub(crate) fn gather_gate_rows<T: Copy>(
    w: &[T],
    gates: usize,
    hidden: usize,
    cols: usize,
    units: &Range<usize>,
) -> Vec<T> {
    let mut out = Vec::with_capacity(gates * units.len() * cols);
    for g in 0..gates {
        out.extend_from_slice(&w[(g * hidden + units.start) * cols..][..units.len() * cols]);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

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
                slices::<f32>(&problem(1, hidden), false, &KernelMasks::none())
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
        assert!(with_unit_split(UnitSplit::Off, || slices(&p, false, &none)).is_none());
        assert!(with_unit_split(UnitSplit::On, || slices(&p, true, &none)).is_none());
        let z = [0.5f32];
        let zoned = KernelMasks {
            zh: Some(&z[..]),
            ..none
        };
        assert!(with_unit_split(UnitSplit::On, || slices(&p, false, &zoned)).is_none());
        // Auto leaves small hidden sizes and splittable batches to the batch path.
        assert!(
            with_unit_split(UnitSplit::Auto, || slices(&problem(1, 64), false, &none)).is_none()
        );
        assert!(
            with_unit_split(UnitSplit::Auto, || slices(&problem(64, 512), false, &none)).is_none()
        );
    }

    #[test]
    fn gathered_rows_are_each_gates_rows_of_the_slice() {
        let (gates, hidden, cols) = (3, 5, 2);
        let w: Vec<usize> = (0..gates * hidden * cols).collect();
        let got = gather_gate_rows(&w, gates, hidden, cols, &(1..3));
        let want: Vec<usize> = [1, 2, 6, 7, 11, 12]
            .iter()
            .flat_map(|&r| [r * cols, r * cols + 1])
            .collect();
        assert_eq!(got, want);
    }
}
