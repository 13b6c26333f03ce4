//! Times the gradient all-reduce of data-parallel training and checks its result: flat f32
//! buffers the size of the default `word-lm`'s and `char-lm`'s gradients (and a few reference
//! sizes), summed over the ranks with the [`Collective`] that `rnn train` gets from
//! [`rnn::run::world::collective_from_env`].
//!
//! Run (needs the `mpi` feature and an MPI library; as root Open MPI also wants
//! `OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1`):
//!
//! ```text
//! cargo build --release --features mpi --example allreduce_bench
//! mpirun -np 2 -x RAYON_NUM_THREADS=1 target/release/examples/allreduce_bench [--iters 20]
//! ```
//!
//! Every rank fills its buffer with values that depend on the rank and the index, and compares
//! the all-reduced buffer with the sum computed locally in rank order: bit for bit with 2 ranks
//! (where MPI computes `a + b` on both), within 1e-5 relative beyond. A mismatch exits with
//! status 1. Rank 0 prints, per size, the median and fastest time of `all_reduce_sum` (the whole
//! call the trainer makes: the header exchange, the copies in and out of the tensor, and
//! `MPI_Allreduce`), the slowest rank's time counting, and the bus bandwidth
//! `2 (N - 1) / N x bytes / time` (what a ring all-reduce moves per rank).
//!
//! `--fail-rank R` makes rank R return an error before its first all-reduce while the others
//! wait in it: the job must then end with a non-zero status instead of hanging (`.ci/mpi-check`
//! runs it with `RNN_MPI_EXIT_WAIT_S=2`).
//!
//! Parameter counts come from building the models with the tasks' defaults (src/tasks/lm):
//! `word-lm` 2 x 200 LSTM, embedding 200, vocabulary 10,000 (PTB); `char-lm` 2 x 256 LSTM,
//! embedding 64, vocabulary 66 (tiny Shakespeare's 65 characters and `<unk>`). Change the
//! vocabularies with `--word-vocab N` and `--char-vocab N`.

use std::sync::Arc;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};
use rnn::core::Mode;
use rnn::models::lm::{LanguageModel, LanguageModelConfig};
use rnn::run::world::collective_from_env;
use rnn::train::collective::{Collective, Solo};

/// Number of parameters of the LSTM language model with these sizes (the gradient's length).
fn lm_parameters(vocab: usize, embedding: usize, hidden: usize, layers: usize) -> Result<usize> {
    let cfg =
        LanguageModelConfig::new(Mode::Lstm, vocab, embedding, hidden).with_num_layers(layers);
    let varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
    LanguageModel::new(&cfg, vb).context("building the model to count its parameters")?;
    Ok(varmap.all_vars().iter().map(|v| v.elem_count()).sum())
}

/// Rank `rank`'s value at index `i`: varied magnitudes, so the sum's rounding is exercised.
fn value(rank: usize, i: usize) -> f32 {
    let k = (i.wrapping_mul(2654435761) ^ rank.wrapping_mul(40503)) % 100_003;
    (k as f32 / 100_003.0 - 0.5) * 10f32.powi((i % 7) as i32 - 3)
}

fn parse_flag(args: &[String], name: &str, default: usize) -> Result<usize> {
    match args.iter().position(|a| a == name) {
        None => Ok(default),
        Some(i) => {
            let v = args
                .get(i + 1)
                .with_context(|| format!("{name} needs a value"))?;
            v.parse()
                .with_context(|| format!("{name} {v:?}: not a whole number"))
        }
    }
}

fn median(xs: &mut [f64]) -> f64 {
    xs.sort_by(|a, b| a.total_cmp(b));
    xs[xs.len() / 2]
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let iters = parse_flag(&args, "--iters", 20)?.max(1);
    let warmup = parse_flag(&args, "--warmup", 3)?;
    let word_vocab = parse_flag(&args, "--word-vocab", 10_000)?;
    let char_vocab = parse_flag(&args, "--char-vocab", 66)?;

    let c: Arc<dyn Collective> = match collective_from_env()? {
        Some(c) => c,
        None => Arc::new(Solo),
    };
    let (rank, world) = (c.rank(), c.world_size());
    if args.iter().any(|a| a == "--fail-rank") {
        let fail = parse_flag(&args, "--fail-rank", 0)?;
        if rank == fail {
            bail!(
                "rank {rank}: failing on purpose (--fail-rank {fail}) before the first all-reduce"
            );
        }
    }

    let sizes = [
        ("1 Ki floats".to_string(), 1 << 10),
        ("64 Ki floats".to_string(), 1 << 16),
        (
            format!("char-lm (V={char_vocab})"),
            lm_parameters(char_vocab, 64, 256, 2)?,
        ),
        (
            format!("word-lm (V={word_vocab})"),
            lm_parameters(word_vocab, 200, 200, 2)?,
        ),
        ("16 Mi floats".to_string(), 1 << 24),
    ];
    if rank == 0 {
        println!(
            "all_reduce_sum of f32 buffers over {world} rank(s), backend {}, {iters} timed \
             iterations after {warmup} warm-up (times: slowest rank per iteration)",
            c.backend()
        );
        println!(
            "| buffer | floats | MB | median ms | min ms | bus GB/s (median) | check |\n|---|---|---|---|---|---|---|"
        );
    }
    let mut failed = false;
    for (name, n) in &sizes {
        let n = *n;
        let mine: Vec<f32> = (0..n).map(|i| value(rank, i)).collect();
        let expected: Vec<f32> = (0..n)
            .map(|i| (1..world).fold(value(0, i), |acc, r| acc + value(r, i)))
            .collect();
        let t = Tensor::from_vec(mine, n, &Device::Cpu)?;
        let mut times = Vec::with_capacity(iters);
        let mut got = Vec::new();
        for it in 0..warmup + iters {
            // Start together: a tiny host sum is the barrier.
            c.all_reduce_sum_f64(&mut [0.0])?;
            let start = Instant::now();
            let sum = c.all_reduce_sum(&t)?;
            let mut secs = [start.elapsed().as_secs_f64()];
            // The slowest rank's time is the step's time.
            let all = c.all_gather(&Tensor::new(&secs, &Device::Cpu)?)?;
            secs[0] = all.to_vec1::<f64>()?.into_iter().fold(0.0, f64::max);
            if it >= warmup {
                times.push(secs[0]);
            }
            if it + 1 == warmup + iters {
                got = sum.to_vec1::<f32>()?;
            }
        }
        let bad = if world <= 2 {
            got.iter()
                .zip(&expected)
                .filter(|(g, e)| g.to_bits() != e.to_bits())
                .count()
        } else {
            got.iter()
                .zip(&expected)
                .filter(|(g, e)| (*g - *e).abs() > 1e-5 * e.abs().max(1e-6))
                .count()
        };
        let mut flags = [bad as f64];
        c.all_reduce_sum_f64(&mut flags)?;
        let check = if flags[0] == 0.0 {
            if world <= 2 {
                "bitwise equal"
            } else {
                "equal within 1e-5"
            }
        } else {
            failed = true;
            "MISMATCH"
        };
        let min = times.iter().copied().fold(f64::INFINITY, f64::min);
        let med = median(&mut times);
        let bytes = (n * 4) as f64;
        let bus = if world > 1 {
            2.0 * (world - 1) as f64 / world as f64 * bytes / med / 1e9
        } else {
            0.0
        };
        if rank == 0 {
            println!(
                "| {name} | {n} | {:.2} | {:.3} | {:.3} | {bus:.2} | {check} ({} wrong values summed over ranks) |",
                bytes / 1e6,
                med * 1e3,
                min * 1e3,
                flags[0]
            );
        }
    }
    if failed {
        bail!("rank {rank}: the all-reduced sums differ from the local sums");
    }
    Ok(())
}
