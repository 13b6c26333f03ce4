//! Which f32 matrix kernel runs the fused CPU recurrences' products, and how to pin it.
//!
//! The products of a recurrence (a batch chunk's rows times a fixed weight matrix, every step)
//! and the large weight gradients run on a register-blocked kernel ([`Kernel::Avx512`],
//! [`Kernel::Avx2`]) or on the portable path (faer). Which one is fastest depends on the host
//! and the shape, not only on the instructions the CPU has, so the kernel is chosen per *shape
//! class* (rows per call in buckets 1, 2-8, 9-32, 33-128, >128, times buckets of the inner
//! dimension and of the output columns, plus one class for the weight gradients) by timing
//! every kernel the CPU runs on a synthetic product of the class, a few milliseconds at the
//! class's first use. The choice is kept for the process ([`choices`]) and, when
//! [`set_cache_file`] names a file (the `rnn` binary uses [`default_cache_file`] unless
//! `RNN_KERNEL_CACHE=off`), on disk for later processes on the same CPU model. Processes that
//! share the file agree on every class, also when they measure one at the same time: the first
//! to store it wins and the others take its choice.
//!
//! Environment:
//! - `RNN_KERNEL=auto|avx512|avx2|portable`: `auto` (the default) measures; a kernel name pins
//!   every class to it. A kernel this CPU cannot run, or an unknown value, prints a warning and
//!   measures instead.
//! - `RNN_PACKED_KERNEL=off`: the portable path everywhere, as before (`RNN_KERNEL`, when it
//!   names a kernel, wins).
//!
//! Kernels add in different orders, so their results differ in the last bits (the tests hold
//! each within float tolerance of the portable path). Two processes that measure may choose
//! differently; a resumed run reproduces the original's bits only with the same choices: the
//! same cache file (same host) or the same `RNN_KERNEL`.

use std::path::PathBuf;

use crate::ops::gemm::calibrate;
pub use crate::ops::gemm::KernelIsa as Kernel;

/// One shape class's kernel in this process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KernelChoice {
    /// The class, e.g. `rows 9-32, k 129-256, n 513-1024` or `weight gradients`.
    pub class: String,
    /// Its kernel.
    pub kernel: Kernel,
    /// Products that asked for it so far (0 for a choice read from the cache file, unused yet).
    pub uses: u64,
}

/// Every class's kernel chosen (measured, pinned or read from the cache file) in this process,
/// in class order.
pub fn choices() -> Vec<KernelChoice> {
    calibrate::choices()
        .into_iter()
        .map(|(class, e)| KernelChoice {
            class: class.label(),
            kernel: e.isa,
            uses: e.uses,
        })
        .collect()
}

/// `auto` when kernels are measured, else the kernel `RNN_KERNEL` (or `RNN_PACKED_KERNEL=off`)
/// pins.
pub fn setting() -> String {
    match calibrate::Setting::current() {
        calibrate::Setting::Auto => "auto".into(),
        calibrate::Setting::Pinned(k) => k.name().into(),
    }
}

/// Every kernel this CPU runs, fastest by instruction set first; `portable` last.
pub fn supported() -> Vec<Kernel> {
    Kernel::supported()
}

/// Keeps measured choices in `file` (read now, rewritten after each new measurement); `None`
/// keeps them in memory only, the library's default. A missing, corrupt or other-CPU file is
/// ignored, and an unwritable one is never an error.
pub fn set_cache_file(file: Option<PathBuf>) {
    calibrate::set_cache_file(file)
}

/// `$XDG_CACHE_HOME/rnn/kernels-<hash>.json` (else under `~/.cache`), the hash naming the CPU
/// model and its kernels; `None` when neither variable is set.
pub fn default_cache_file() -> Option<PathBuf> {
    calibrate::default_cache_file()
}

/// The CPU's model name as `/proc/cpuinfo` gives it, or `unknown CPU`.
pub fn cpu_model() -> String {
    calibrate::cpu_model()
}

/// Runs `f` with every product that this thread starts on `kernel`, whatever was chosen (the
/// fused ops build their packed weights on the calling thread, so a forward or backward called
/// inside `f` runs on `kernel` throughout). For tests and comparisons; fails if this CPU cannot
/// run `kernel`.
pub fn with_kernel<R>(kernel: Kernel, f: impl FnOnce() -> R) -> candle_core::Result<R> {
    if !kernel.runs_here() {
        candle_core::bail!(
            "with_kernel: this CPU cannot run the {kernel} kernel (it runs: {})",
            supported()
                .iter()
                .map(|k| k.name())
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    Ok(calibrate::with_forced(kernel, f))
}

/// Runs `f` with every bidirectional layer this thread runs on the fused CPU op using the given
/// [`DirectionSplit`].
pub use crate::ops::directions::with_direction_split;
/// Whether the two directions of a bidirectional layer run side by side on the CPU, each on its
/// share of the threads (small batches and hidden sizes): `RNN_DIRECTION_SPLIT=auto|on|off`, or
/// [`with_direction_split`].
pub use crate::ops::directions::DirectionSplit;
/// The smallest `W_hh` in bytes whose units split keeps the directions one after the other in
/// inference ([`DirectionSplit::Auto`]).
pub use crate::ops::directions::AUTO_KEEP_UNITS_BYTES_INFER as DIRECTION_SPLIT_KEEP_UNITS_BYTES_INFER;
/// The same in training.
pub use crate::ops::directions::AUTO_KEEP_UNITS_BYTES_TRAIN as DIRECTION_SPLIT_KEEP_UNITS_BYTES_TRAIN;
/// The most batch rows per thread whose bidirectional layer [`DirectionSplit::Auto`] runs side
/// by side.
pub use crate::ops::directions::AUTO_MAX_ROWS_PER_THREAD as DIRECTION_SPLIT_MAX_ROWS_PER_THREAD;
/// Runs `f` with every fused CPU recurrence this thread starts using the given [`UnitSplit`].
pub use crate::ops::units::with_unit_split;
/// Whether a fused CPU recurrence splits its hidden units across threads (batches too small to
/// split by rows, such as batch-1 inference, and forward passes with a large `W_hh`):
/// `RNN_UNIT_SPLIT=auto|on|off`, or [`with_unit_split`].
pub use crate::ops::units::UnitSplit;
/// The smallest `W_hh` in bytes whose forward [`UnitSplit::Auto`] splits by units at a batch
/// that could be split by rows.
pub use crate::ops::units::AUTO_MID_BATCH_MIN_BYTES as UNIT_SPLIT_MID_BATCH_MIN_BYTES;
/// The fewest batch rows of such a split.
pub use crate::ops::units::AUTO_MID_BATCH_MIN_ROWS as UNIT_SPLIT_MID_BATCH_MIN_ROWS;
/// The smallest hidden size [`UnitSplit::Auto`] splits.
pub use crate::ops::units::AUTO_MIN_HIDDEN as UNIT_SPLIT_MIN_HIDDEN;
/// The smallest `seq_len * hidden²` [`UnitSplit::Auto`] splits.
pub use crate::ops::units::AUTO_MIN_WORK as UNIT_SPLIT_MIN_WORK;
