//! The two directions of a bidirectional layer side by side, each on its share of the threads:
//! [`BiRecurrence`], one Candle `CustomOp3` whose forward and backward run the two directions'
//! fused recurrences ([`FusedRecurrence`]) at once, and [`fused_directions`], which runs it for a
//! layer's two cells.
//!
//! A direction whose batch is too small to split by rows and whose units are not split
//! ([`super::units`]: a hidden size below 128, a short sequence, the tanh/ReLU cell, a
//! projection, zoneout) runs on one thread; one after the other, the two directions leave the
//! other threads idle. Side by side, each runs on its own thread with nothing shared but the
//! input, and the backward also runs both at once (two separate ops would be differentiated
//! one after the other). The directions' results are the same as one after the other at the
//! same thread count per direction: each runs its own unchanged op.
//!
//! Layer-normalised cells have their own op, with no joint backward: their two ops run side by
//! side in inference only.
//!
//! Which layers: see [`DirectionSplit`]. `RNN_DIRECTION_SPLIT=auto|on|off` (default `auto`), and
//! [`with_direction_split`] for tests and comparisons.

use super::batch::{threads, with_threads};
use super::cpu::{cpu_fwd3, recurrence_bwd, FlatGrads, TypedForward3, TypedRecurrenceBackward};
use super::fused::build;
use super::math::Float;
use super::problem::Problem;
use super::recurrence::FusedRecurrence;
use super::scratch;
use super::units::{self, Pass};
use crate::cell::params::CellParams;
use crate::config::Mode;
use crate::regularize::StateMasks;
use crate::state::RnnState;
use candle_core::{CpuStorage, CustomOp3, Layout, Result, Shape, Tensor};
use std::cell::Cell;

/// Whether the two directions of a bidirectional layer run side by side on the CPU.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DirectionSplit {
    /// Side by side (layer-normalised layers in inference only) when the host has two threads
    /// or more, the batch has at most [`AUTO_MAX_ROWS_PER_THREAD`] rows per thread, and a
    /// direction alone would not split its units with a large `W_hh`
    /// ([`AUTO_KEEP_UNITS_BYTES_INFER`], [`AUTO_KEEP_UNITS_BYTES_TRAIN`]).
    Auto,
    /// Side by side on every layer the fused CPU op runs (layer-normalised ones in inference
    /// only), even on one thread (tests).
    On,
    /// One direction after the other.
    Off,
}

/// Most batch rows per thread whose layer [`DirectionSplit::Auto`] runs side by side: 8 (16 rows
/// on two threads), where each direction on its own thread fills whole register blocks that the
/// row split cuts in half (measured on a 2-core Zen 4, benches/README.md "Bidirectional layers":
/// 10-50% faster up to there, within a few percent either way at 32 rows).
pub const AUTO_MAX_ROWS_PER_THREAD: usize = 8;

/// Smallest `W_hh` in bytes of a direction whose units split ([`super::units::UnitSplit`]) keeps
/// the directions one after the other in inference: there each thread streams its slice of
/// `W_hh` every step instead of a whole one; at batch 1, hidden 256 the split measured faster
/// than a thread per direction, at 128 slower.
pub const AUTO_KEEP_UNITS_BYTES_INFER: usize = 1 << 20;

/// As [`AUTO_KEEP_UNITS_BYTES_INFER`] for a forward that keeps what a backward needs (the
/// backward runs side by side too): the LSTM at batch 1, hidden 256 trained faster side by side,
/// at hidden 1024 (16 MiB) slower.
pub const AUTO_KEEP_UNITS_BYTES_TRAIN: usize = 8 << 20;

thread_local! {
    static FORCED: Cell<Option<DirectionSplit>> = const { Cell::new(None) };
}

impl DirectionSplit {
    /// The setting for layers run on this thread: [`with_direction_split`]'s, else
    /// `RNN_DIRECTION_SPLIT` (`on`, `off`; anything else is `auto`).
    pub fn current() -> Self {
        if let Some(s) = FORCED.get() {
            return s;
        }
        match std::env::var("RNN_DIRECTION_SPLIT")
            .as_deref()
            .map(str::trim)
        {
            Ok("on") => DirectionSplit::On,
            Ok("off") => DirectionSplit::Off,
            _ => DirectionSplit::Auto,
        }
    }
}

/// Runs `f` with every bidirectional layer that this thread runs on the fused CPU op using
/// `split`, whatever `RNN_DIRECTION_SPLIT` says. For tests and comparisons.
pub fn with_direction_split<R>(split: DirectionSplit, f: impl FnOnce() -> R) -> R {
    struct Restore(Option<DirectionSplit>);
    impl Drop for Restore {
        fn drop(&mut self) {
            FORCED.set(self.0);
        }
    }
    let _restore = Restore(FORCED.replace(Some(split)));
    f()
}

/// Whether a layer of `mode` cells runs its directions side by side on `threads` threads: `p`
/// one direction's problem, `whole_units` a cell that never splits its units across threads (a
/// projection, zoneout, layer normalisation), `elem` bytes per element, `train` a forward that
/// keeps what a backward needs.
pub(crate) fn side_by_side(
    mode: Mode,
    p: &Problem,
    whole_units: bool,
    elem: usize,
    train: bool,
    threads: usize,
) -> bool {
    match DirectionSplit::current() {
        DirectionSplit::Off => false,
        DirectionSplit::On => true,
        DirectionSplit::Auto => {
            if threads < 2 || p.batch > AUTO_MAX_ROWS_PER_THREAD * threads {
                return false;
            }
            let gates = match mode {
                Mode::Lstm => 4,
                Mode::Gru => 3,
                // The tanh and ReLU cells never split their units.
                Mode::RnnTanh | Mode::RnnRelu => return true,
            };
            let pass = Pass {
                gates,
                forward: true,
            };
            let splits_units = units::slice_count(p, whole_units, false, pass, elem).is_some();
            let keep = if train {
                AUTO_KEEP_UNITS_BYTES_TRAIN
            } else {
                AUTO_KEEP_UNITS_BYTES_INFER
            };
            !(splits_units && gates * p.hidden * p.hidden * elem >= keep)
        }
    }
}

/// The op: both directions of one layer over the whole sequence. Arguments: `xs` (rows, input)
/// in the problem's layout, shared; `state0 = [forward's h0 | c0 | reverse's h0 | c0]` and
/// `params = [forward's | reverse's]`, each as [`FusedRecurrence`] takes them. Result: the
/// forward direction's result, then the reverse one's.
pub(crate) struct BiRecurrence {
    dirs: [FusedRecurrence; 2],
    /// Threads of each direction.
    threads: [usize; 2],
}

impl BiRecurrence {
    fn out_len(&self) -> usize {
        self.dirs[0].out_len() + self.dirs[1].out_len()
    }
}

impl TypedRecurrenceBackward for BiRecurrence {
    fn backward<T: Float>(&self, xs: &[T], params: &[T], grad_out: &[T]) -> Result<FlatGrads<T>> {
        let [a, b] = &self.dirs;
        let (p_a, p_b) = params.split_at(a.sizes.total());
        let (g_a, g_b) = grad_out.split_at(a.out_len());
        let (ra, rb) = rayon::join(
            || with_threads(self.threads[0], || a.backward_typed(xs, p_a, g_a)),
            || with_threads(self.threads[1], || b.backward_typed(xs, p_b, g_b)),
        );
        let ((dx_a, mut ds, mut dp), (dx_b, ds_b, dp_b)) = (ra?, rb?);
        let dx = match (dx_a, dx_b) {
            (Some(mut x), Some(y)) => {
                for (x, y) in x.iter_mut().zip(&y) {
                    *x += *y;
                }
                Some(x)
            }
            _ => None,
        };
        ds.extend(ds_b);
        dp.extend(dp_b);
        Ok((dx, ds, dp))
    }
}

impl TypedForward3 for BiRecurrence {
    fn forward<T: Float>(&self, xs: &[T], state0: &[T], params: &[T]) -> Result<Vec<T>> {
        let [a, b] = &self.dirs;
        let (s_a, s_b) = state0.split_at(a.state_len());
        let (p_a, p_b) = params.split_at(a.sizes.total());
        // Every element is written by one of the directions.
        let mut out = scratch::take(self.out_len());
        let (o_a, o_b) = out.split_at_mut(a.out_len());
        let run = |op: &FusedRecurrence, state0: &[T], params: &[T], out: &mut [T]| {
            let (h0, c0) = state0.split_at(op.problem.batch * op.problem.state);
            op.forward_into(xs, h0, c0, &op.sizes.split(params), out)
        };
        rayon::join(
            || with_threads(self.threads[0], || run(a, s_a, p_a, o_a)),
            || with_threads(self.threads[1], || run(b, s_b, p_b, o_b)),
        );
        Ok(out)
    }
}

impl CustomOp3 for BiRecurrence {
    fn name(&self) -> &'static str {
        "fused-bidirectional-recurrence"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let what = "fused bidirectional recurrence";
        let out = cpu_fwd3(self, what, (s1, l1), (s2, l2), (s3, l3))?;
        Ok((out, Shape::from(self.out_len())))
    }

    fn bwd(
        &self,
        xs: &Tensor,
        state0: &Tensor,
        params: &Tensor,
        _res: &Tensor,
        grad_res: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        recurrence_bwd(
            self,
            "fused bidirectional recurrence",
            [xs, state0, params],
            grad_res,
        )
    }
}

/// Runs a bidirectional layer's two cells (`cells[1]` reversed) over `xs` side by side when
/// [`DirectionSplit`] says so, else returns `None` (the caller runs them one after the other).
/// Tensors off the CPU always return `None`, and so do layer-normalised cells in training: in
/// inference their two ops run side by side.
///
/// # Shapes
/// As [`super::fused_direction`], per direction.
pub(crate) fn fused_directions(
    cells: [&CellParams; 2],
    xs: &Tensor,
    batch_first: bool,
    inits: [&RnnState; 2],
    lengths: Option<&[usize]>,
    regs: [&StateMasks; 2],
) -> Result<Option<[(Tensor, RnnState); 2]>> {
    if !xs.device().is_cpu() {
        return Ok(None);
    }
    let zoneout = regs
        .iter()
        .any(|r| r.zoneout_h.is_some() || r.zoneout_c.is_some());
    let threads = threads();
    let train = xs.track_op()
        || cells.iter().any(|c| c.tracked())
        || inits
            .iter()
            .any(|s| s.h.track_op() || s.c.as_ref().is_some_and(Tensor::track_op));
    let (d0, d1, input) = xs.dims3()?;
    let (seq_len, batch) = if batch_first { (d1, d0) } else { (d0, d1) };
    let p = Problem {
        seq_len,
        batch,
        input,
        hidden: cells[0].hidden_size,
        state: cells[0].state_size(),
        batch_first,
        reverse: false,
        lengths: None,
        input_grad: false,
    };
    let layer_norm = cells[0].layer_norm.is_some();
    let whole_units = cells[0].weight_hr.is_some() || zoneout || layer_norm;
    let elem = xs.dtype().size_in_bytes();
    if !side_by_side(cells[0].mode, &p, whole_units, elem, train, threads) {
        return Ok(None);
    }
    let budgets = [threads.div_ceil(2), threads / 2];
    if layer_norm {
        if train {
            // Its backwards would run one after the other anyway; the forwards alone side by
            // side measured up to 7% slower (batch 1, hidden 100) and at best even.
            return Ok(None);
        }
        let run = |d: usize| {
            with_threads(budgets[d], || {
                super::fused_direction(
                    cells[d],
                    xs,
                    batch_first,
                    inits[d],
                    lengths,
                    d == 1,
                    regs[d],
                )
            })
        };
        let (a, b) = rayon::join(|| run(0), || run(1));
        return Ok(Some([a?, b?]));
    }
    let build = |d: usize| {
        build(
            cells[d],
            xs,
            batch_first,
            inits[d],
            lengths,
            d == 1,
            regs[d],
        )
    };
    let (a, b) = (build(0)?, build(1)?);
    if !(a.save || b.save) {
        // Nothing to differentiate: each direction's own op on views of its arguments.
        let (ra, rb) = rayon::join(
            || with_threads(budgets[0], || a.run()),
            || with_threads(budgets[1], || b.run()),
        );
        let ((out_a, unpack_a), (out_b, unpack_b)) = (ra?, rb?);
        return Ok(Some([
            unpack_a.split(&out_a, 0)?,
            unpack_b.split(&out_b, 0)?,
        ]));
    }
    let (unpack_a, unpack_b) = (a.unpack(), b.unpack());
    let params = Tensor::cat(&[a.pieces, b.pieces].concat(), 0)?;
    let state0 = Tensor::cat(&[a.state_pieces, b.state_pieces].concat(), 0)?;
    let op = BiRecurrence {
        dirs: [a.op, b.op],
        threads: budgets,
    };
    let out = a.xs.apply_op3(&state0, &params, op)?;
    Ok(Some([
        unpack_a.split(&out, 0)?,
        unpack_b.split(&out, unpack_a.len())?,
    ]))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::units::{with_unit_split, UnitSplit};

    fn problem(batch: usize, seq_len: usize, hidden: usize) -> Problem {
        Problem {
            seq_len,
            batch,
            input: hidden,
            hidden,
            state: hidden,
            batch_first: true,
            reverse: false,
            lengths: None,
            input_grad: false,
        }
    }

    /// `Auto`'s rule, decided on two threads (the units split reads the thread count too).
    #[test]
    fn auto_runs_small_batches_side_by_side_unless_a_large_units_split_runs() {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(2)
            .build()
            .unwrap();
        pool.install(|| {
            with_unit_split(UnitSplit::Auto, || {
                with_direction_split(DirectionSplit::Auto, || {
                    let auto = |mode, b, t, h, train| {
                        side_by_side(mode, &problem(b, t, h), false, 4, train, 2)
                    };
                    // Small hidden sizes and batches: no thread has work of its own otherwise.
                    assert!(auto(Mode::Lstm, 1, 35, 100, false));
                    assert!(auto(Mode::Lstm, 4, 35, 64, true));
                    assert!(auto(Mode::Gru, 16, 35, 256, false));
                    // Up to 8 rows per thread; 17 rows on two threads run by rows.
                    assert!(!auto(Mode::Lstm, 17, 35, 100, false));
                    assert!(!auto(Mode::Gru, 64, 35, 512, true));
                    // The tanh cell never splits units: side by side even at hidden 1024.
                    assert!(auto(Mode::RnnTanh, 1, 35, 1024, false));
                    // A units split of a 1 MiB `W_hh` (LSTM hidden 256) stays in inference,
                    // gives way in training; of 16 MiB (hidden 1024) it stays in both.
                    assert!(!auto(Mode::Lstm, 1, 35, 256, false));
                    assert!(auto(Mode::Lstm, 1, 35, 256, true));
                    assert!(!auto(Mode::Lstm, 1, 35, 1024, true));
                    // A short sequence does not split units: side by side.
                    assert!(auto(Mode::Lstm, 1, 1, 256, false));
                    // A projection, zoneout or layer normalisation keeps the units together:
                    // side by side.
                    let p = problem(1, 35, 1024);
                    assert!(side_by_side(Mode::Lstm, &p, true, 4, false, 2));
                    assert!(!side_by_side(Mode::Lstm, &p, false, 4, false, 2));
                    // One thread: one direction after the other.
                    assert!(!side_by_side(
                        Mode::Lstm,
                        &problem(1, 35, 64),
                        false,
                        4,
                        false,
                        1
                    ));
                });
            });
        });
        // The setting wins over the rule.
        let p = problem(64, 35, 512);
        with_direction_split(DirectionSplit::On, || {
            assert!(side_by_side(Mode::Lstm, &p, false, 4, false, 1))
        });
        with_direction_split(DirectionSplit::Off, || {
            assert!(!side_by_side(
                Mode::Lstm,
                &problem(1, 35, 64),
                false,
                4,
                false,
                2
            ))
        });
    }
}
