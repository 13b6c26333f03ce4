//! Peak memory of training a recurrent text model, estimated before training from its largest
//! batch, and the refusal when that would not fit in the memory available (issue 25, item 3):
//! a file with one 200,000-word line used to get the process killed by the kernel with no
//! message.
//!
//! The estimate is [`RecurrentShape::values_per_step`] values per (example, step) kept for
//! backpropagation through time, times the bytes of the dtype, the padded tokens of the largest
//! batch ([`rnn_train::data::largest_batch`]) and [`SAFETY_FACTOR`], plus the parameters with
//! their gradients and AdamW moments. Evaluation batches (no backward pass, but the forward
//! graph is alive until the scores are read) count [`EVAL_SHARE`] of that per token.
//!
//! It is checked against [`available_memory`] on the CPU only: on a GPU the activations live in
//! device memory, which this does not model.

use std::path::Path;

use anyhow::{bail, Result};
use rnn_train::data::largest_batch;

use super::context::RunContext;

/// Measured peak resident set over [`RecurrentShape::values_per_step`] x 4 bytes x padded
/// tokens, rounded up from the largest ratio measured, to leave room for allocator slack and
/// shapes not measured. The measurements are in docs/MEMORY.md.
pub const SAFETY_FACTOR: f64 = 2.5;

/// Memory per (example, step) of an evaluation batch relative to a training batch: measured
/// 0.84 x `values_per_step` x 4 bytes (64 validation examples of 1000 words, classify defaults:
/// 974 MB), half the training ratio.
pub const EVAL_SHARE: f64 = 0.5;

/// The sizes of a recurrent text model that set its activation memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecurrentShape {
    /// Embedding size per token (`--embedding`).
    pub embedding: usize,
    /// Hidden units per direction (`--hidden`).
    pub hidden: usize,
    /// Stacked layers (`--layers`).
    pub layers: usize,
    /// 2 when bidirectional, else 1.
    pub directions: usize,
    /// Gate blocks of the cell ([`rnn_core::Mode::gate_count`]: 4 for LSTM, 3 for GRU, 1 for
    /// a plain RNN).
    pub gates: usize,
}

impl RecurrentShape {
    /// The shape of an encoder: `embedding` values per token into `layers` of `mode` with
    /// `hidden` units per direction.
    pub fn new(
        embedding: usize,
        mode: rnn_core::Mode,
        hidden: usize,
        layers: usize,
        bidirectional: bool,
    ) -> Self {
        Self {
            embedding,
            hidden,
            layers,
            directions: if bidirectional { 2 } else { 1 },
            gates: mode.gate_count(),
        }
    }

    /// Values kept per (example, step): `8 x embedding` (the lookup, the dropout mask and
    /// output, and their gradients), `(2 x gates + 3) x hidden` per layer and direction (input
    /// projections and gate activations, `h`, `c` and the output), and `2 x directions x hidden`
    /// for the head (output dropout, pooling or per-token logits).
    pub fn values_per_step(&self) -> u64 {
        let (e, h) = (self.embedding as u64, self.hidden as u64);
        let (l, d, g) = (
            self.layers as u64,
            self.directions as u64,
            self.gates as u64,
        );
        8 * e + l * d * (2 * g + 3) * h + 2 * d * h
    }
}

/// What [`MemoryPlan::estimate`] found: the peak in bytes and the batch that sets it.
#[derive(Debug, Clone, PartialEq)]
pub struct MemoryEstimate {
    /// Estimated peak, bytes.
    pub bytes: u64,
    /// Examples in the batch that sets the peak.
    pub rows: usize,
    /// Its padded length in tokens.
    pub len: usize,
    /// `training` or `validation`: which batches set the peak.
    pub phase: &'static str,
}

/// The longest example of a run, named in the refusal.
#[derive(Debug, Clone, PartialEq)]
pub struct Longest {
    /// `FILE:LINE` (or the file alone).
    pub place: String,
    /// Its length in tokens, as trained (after `--max-len`).
    pub tokens: usize,
}

impl Longest {
    /// The longest of `items`, each `(file, line, tokens)` with `line` 0 for none (the first of
    /// equal lengths); an empty place for no items.
    pub fn find<'a>(items: impl IntoIterator<Item = (&'a Path, usize, usize)>) -> Longest {
        let mut best: Option<(&Path, usize, usize)> = None;
        for item in items {
            if best.is_none_or(|b| item.2 > b.2) {
                best = Some(item);
            }
        }
        match best {
            Some((path, 0, tokens)) => Longest {
                place: path.display().to_string(),
                tokens,
            },
            Some((path, line, tokens)) => Longest {
                place: format!("{}:{line}", path.display()),
                tokens,
            },
            None => Longest {
                place: String::new(),
                tokens: 0,
            },
        }
    }
}

/// The notice `--max-len N` prints when it shortened examples: how many of `total` `what` were
/// longer (`cut` holds their lengths before), the longest, and what was done with them (`how`).
/// `None` when nothing was cut.
pub fn max_len_notice(
    max_len: usize,
    cut: &[usize],
    total: usize,
    what: &str,
    how: &str,
) -> Option<String> {
    let longest = cut.iter().max()?;
    Some(cut_notice(max_len, cut.len(), *longest, total, what, how))
}

/// [`max_len_notice`] from counts kept while streaming a file: `count` of `total` `what` were
/// longer than `max_len`, the longest `longest` tokens. `None` when `count` is 0.
pub fn max_len_notice_counts(
    max_len: usize,
    count: usize,
    longest: usize,
    total: usize,
    what: &str,
    how: &str,
) -> Option<String> {
    (count > 0).then(|| cut_notice(max_len, count, longest, total, what, how))
}

fn cut_notice(
    max_len: usize,
    count: usize,
    longest: usize,
    total: usize,
    what: &str,
    how: &str,
) -> String {
    format!(
        "notice: --max-len {max_len}: {count} of {total} {what} were longer (the longest {longest} tokens); {how}"
    )
}

/// What the memory of a run depends on besides its data.
#[derive(Debug, Clone, PartialEq)]
pub struct MemoryPlan {
    /// The model's sizes.
    pub shape: RecurrentShape,
    /// Bytes per value of the run's dtype.
    pub dtype_bytes: usize,
    /// Number of parameters (weights; gradients and two AdamW moments are counted with them).
    pub params: usize,
    /// Training batch size (`--batch-size`).
    pub batch_size: usize,
    /// Evaluation batch size.
    pub eval_batch_size: usize,
}

impl MemoryPlan {
    /// The plan of a run of `ctx` whose model of `shape` holds the variables of `varmap`.
    pub fn new(
        ctx: &RunContext,
        varmap: &candle_nn::VarMap,
        shape: RecurrentShape,
        batch_size: usize,
        eval_batch_size: usize,
    ) -> Self {
        Self {
            shape,
            dtype_bytes: ctx.dtype.size_in_bytes(),
            params: varmap.all_vars().iter().map(|v| v.elem_count()).sum(),
            batch_size,
            eval_batch_size,
        }
    }

    /// Estimated training bytes per (example, step).
    fn train_step_bytes(&self) -> f64 {
        self.shape.values_per_step() as f64 * self.dtype_bytes as f64 * SAFETY_FACTOR
    }

    /// Bytes of the parameters, their gradients and two optimiser moments.
    fn param_bytes(&self) -> u64 {
        4 * self.params as u64 * self.dtype_bytes as u64
    }

    /// The estimated peak of training on examples of `train` lengths and evaluating on
    /// `eval` lengths (tokens), from the largest batch of each.
    pub fn estimate(&self, train: &[usize], eval: &[usize]) -> MemoryEstimate {
        let step = self.train_step_bytes();
        let (tr, tl) = largest_batch(train, self.batch_size);
        let (er, el) = largest_batch(eval, self.eval_batch_size);
        let train_bytes = (tr * tl) as f64 * step;
        let eval_bytes = (er * el) as f64 * step * EVAL_SHARE;
        let (bytes, rows, len, phase) = if eval_bytes > train_bytes {
            (eval_bytes, er, el, "validation")
        } else {
            (train_bytes, tr, tl, "training")
        };
        MemoryEstimate {
            bytes: self.param_bytes() + bytes as u64,
            rows,
            len,
            phase,
        }
    }

    /// The largest `--max-len` under which the estimate for `train` and `eval` lengths fits in
    /// `available` bytes (lengths clamped to it), rounded down to two significant digits; none
    /// when even one token per example does not fit.
    pub fn max_len_fitting(
        &self,
        available: u64,
        train: &[usize],
        eval: &[usize],
    ) -> Option<usize> {
        let fits = |n: usize| {
            let clamp = |ls: &[usize]| ls.iter().map(|&l| l.min(n)).collect::<Vec<_>>();
            self.estimate(&clamp(train), &clamp(eval)).bytes <= available
        };
        let longest = train.iter().chain(eval).copied().max().unwrap_or(0);
        if !fits(1) {
            return None;
        }
        let (mut lo, mut hi) = (1, longest.max(1)); // fits(lo); the answer is in lo..=hi
        while lo < hi {
            let mid = lo + (hi - lo).div_ceil(2);
            if fits(mid) {
                lo = mid;
            } else {
                hi = mid - 1;
            }
        }
        Some(round_down_2(lo))
    }

    /// Refuses, with one line naming the longest example, the estimate, what is available,
    /// `--max-len` (with a value that fits) and `--batch-size`, when the [`estimate`](Self::estimate)
    /// for `train` and `eval` lengths exceeds `available` bytes (no check when that is unknown).
    pub fn check(
        &self,
        train: &[usize],
        eval: &[usize],
        available: Option<u64>,
        longest: &Longest,
    ) -> Result<()> {
        let Some(available) = available else {
            return Ok(());
        };
        let estimate = self.estimate(train, eval);
        if estimate.bytes <= available {
            return Ok(());
        }
        let hint = match self.max_len_fitting(available, train, eval) {
            Some(n) if n < longest.tokens => format!("--max-len {n}"),
            _ => "--max-len N".to_string(),
        };
        bail!(
            "{} would need about {} of memory for its largest batch ({} x {} tokens) and {} is available; the longest example is {} ({} tokens): shorten examples with {hint} or lower --batch-size (now {})",
            estimate.phase,
            gb(estimate.bytes),
            estimate.rows,
            estimate.len,
            gb(available),
            longest.place,
            longest.tokens,
            self.batch_size
        )
    }
}

/// `n` rounded down to two significant digits (1234 -> 1200).
fn round_down_2(n: usize) -> usize {
    let mut unit = 1;
    while n / unit >= 100 {
        unit *= 10;
    }
    n / unit * unit
}

/// Bytes as `12.3 GB` (10^9) or `456 MB`.
fn gb(bytes: u64) -> String {
    if bytes >= 1_000_000_000 {
        format!("{:.1} GB", bytes as f64 / 1e9)
    } else {
        format!("{} MB", bytes.div_ceil(1_000_000))
    }
}

/// `MemAvailable` of a `/proc/meminfo` text, bytes.
fn mem_available(meminfo: &str) -> Option<u64> {
    let kb = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemAvailable:"))?
        .trim()
        .strip_suffix("kB")?
        .trim()
        .parse::<u64>()
        .ok()?;
    Some(kb * 1024)
}

/// What a cgroup v2 limit leaves: `memory.max` (`max` = no limit) minus `memory.current`.
fn cgroup_room(max: &str, current: Option<&str>) -> Option<u64> {
    let max: u64 = max.trim().parse().ok()?;
    let used: u64 = current.and_then(|c| c.trim().parse().ok()).unwrap_or(0);
    Some(max.saturating_sub(used))
}

/// The memory this process may still use, bytes: `MemAvailable` of `/proc/meminfo`, or what the
/// cgroup's `memory.max` leaves above `memory.current` when that is smaller; `None` where
/// neither can be read (then nothing is refused).
pub fn available_memory() -> Option<u64> {
    let read = |p: &str| std::fs::read_to_string(p).ok();
    let system = read("/proc/meminfo").as_deref().and_then(mem_available);
    let cgroup = read("/sys/fs/cgroup/memory.max")
        .and_then(|m| cgroup_room(&m, read("/sys/fs/cgroup/memory.current").as_deref()));
    match (system, cgroup) {
        (Some(s), Some(c)) => Some(s.min(c)),
        (s, c) => s.or(c),
    }
}

/// Refuses a run of `ctx` on the CPU whose largest training or evaluation batch would not fit in
/// [`available_memory`] (see [`MemoryPlan::check`]); `longest` names the longest example.
pub fn check_memory(
    ctx: &RunContext,
    plan: &MemoryPlan,
    train: &[usize],
    eval: &[usize],
    longest: impl FnOnce() -> Longest,
) -> Result<()> {
    if !ctx.device.is_cpu() {
        return Ok(());
    }
    plan.check(train, eval, available_memory(), &longest())
}

#[cfg(test)]
mod tests {
    use super::*;

    const GB: u64 = 1_000_000_000;

    fn plan() -> MemoryPlan {
        MemoryPlan {
            shape: RecurrentShape {
                embedding: 128,
                hidden: 128,
                layers: 1,
                directions: 2,
                gates: 4,
            },
            dtype_bytes: 4,
            params: 1_000_000,
            batch_size: 32,
            eval_batch_size: 256,
        }
    }

    fn longest() -> Longest {
        Longest {
            place: "long.txt:3".into(),
            tokens: 200_000,
        }
    }

    #[test]
    fn values_per_step_count_embedding_layers_and_head() {
        // 8 * 128 + 1 * 2 * (2 * 4 + 3) * 128 + 2 * 2 * 128
        assert_eq!(plan().shape.values_per_step(), 1024 + 2816 + 512);
        let gru = RecurrentShape {
            embedding: 10,
            hidden: 20,
            layers: 2,
            directions: 1,
            gates: 3,
        };
        assert_eq!(gru.values_per_step(), 80 + 2 * 9 * 20 + 40);
    }

    #[test]
    fn estimate_is_the_largest_batch_times_the_step_cost() {
        let p = plan();
        let step = 4352.0 * 4.0 * SAFETY_FACTOR;
        // 40 short examples and one long: the long one is a batch of its own.
        let mut train = vec![20; 40];
        train.push(10_000);
        let e = p.estimate(&train, &[20; 8]);
        assert_eq!((e.rows, e.len, e.phase), (1, 10_000, "training"));
        assert_eq!(e.bytes, 16_000_000 + (10_000.0 * step) as u64);
        // 64 examples of 1000 tokens: a full batch of 32.
        let e = p.estimate(&[1000; 64], &[5]);
        assert_eq!((e.rows, e.len), (32, 1000));
        assert_eq!(e.bytes, 16_000_000 + (32_000.0 * step) as u64);
        // Long validation examples batch by 256 and can set the peak.
        let e = p.estimate(&[5; 10], &[1000; 300]);
        assert_eq!((e.rows, e.len, e.phase), (256, 1000, "validation"));
        assert_eq!(e.bytes, 16_000_000 + (256_000.0 * step * EVAL_SHARE) as u64);
    }

    #[test]
    fn refuses_what_does_not_fit_and_names_the_fix() {
        let p = plan();
        let (train, eval) = (vec![200_000; 40], vec![20; 4]);
        let e = p.estimate(&train, &eval);
        assert_eq!((e.rows, e.len), (32, 200_000));
        assert!(
            p.check(&train, &eval, None, &longest()).is_ok(),
            "unknown: no check"
        );
        assert!(p.check(&train, &eval, Some(e.bytes), &longest()).is_ok());
        let msg = p
            .check(&train, &eval, Some(8 * GB), &longest())
            .unwrap_err()
            .to_string();
        assert_eq!(
            msg,
            "training would need about 278.5 GB of memory for its largest batch (32 x 200000 tokens) and 8.0 GB is available; the longest example is long.txt:3 (200000 tokens): shorten examples with --max-len 5700 or lower --batch-size (now 32)"
        );
        // The suggested --max-len fits, and a little more would not.
        assert!(p
            .check(&[5700; 40], &eval, Some(8 * GB), &longest())
            .is_ok());
        assert!(p
            .check(&[5800; 40], &eval, Some(8 * GB), &longest())
            .is_err());
        // Nothing fits: no number suggested.
        let msg = p
            .check(&train, &eval, Some(GB / 1000), &longest())
            .unwrap_err();
        assert!(msg.to_string().contains("with --max-len N or"), "{msg}");
    }

    #[test]
    fn longest_names_file_and_line_and_notice_counts() {
        let (a, b) = (Path::new("a.txt"), Path::new("b.txt"));
        let l = Longest::find([(a, 1, 5), (b, 7, 9), (a, 3, 9)]);
        assert_eq!((l.place.as_str(), l.tokens), ("b.txt:7", 9));
        assert_eq!(Longest::find([(a, 0, 2)]).place, "a.txt");
        assert_eq!(
            max_len_notice(10, &[12, 200], 40, "examples", "kept their first 10 tokens").unwrap(),
            "notice: --max-len 10: 2 of 40 examples were longer (the longest 200 tokens); kept their first 10 tokens"
        );
        assert_eq!(max_len_notice(10, &[], 40, "examples", ""), None);
    }

    #[test]
    fn available_memory_reads_meminfo_and_cgroup() {
        let meminfo =
            "MemTotal:       24000000 kB\nMemFree:  100 kB\nMemAvailable:   22000000 kB\n";
        assert_eq!(mem_available(meminfo), Some(22_000_000 * 1024));
        assert_eq!(mem_available("MemTotal: 5 kB\n"), None);
        assert_eq!(cgroup_room("max\n", Some("100")), None);
        assert_eq!(cgroup_room("1000\n", Some("300\n")), Some(700));
        assert_eq!(cgroup_room("1000", None), Some(1000));
        assert_eq!(round_down_2(5789), 5700);
        assert_eq!(round_down_2(42), 42);
        assert_eq!(gb(278_456_000_000), "278.5 GB");
        assert_eq!(gb(1_500_000), "2 MB");
    }
}
