//! The `rnn` command line.

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use rnn::bench::{BenchImpl, BenchSpec, Workload};
use rnn_core::Mode;

#[derive(Parser)]
#[command(
    name = "rnn",
    version,
    about = "Recurrent neural networks on Candle: train, evaluate, sample, benchmark"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Time a recurrent layer (train = forward + mean-square loss + backward; infer = forward).
    Bench(BenchArgs),
}

#[derive(clap::Args)]
struct BenchArgs {
    /// Cell kind: lstm, gru, rnn-tanh, rnn-relu.
    #[arg(long, default_value = "lstm")]
    cell: String,
    /// Sequences per batch.
    #[arg(long, default_value_t = 32)]
    batch: usize,
    /// Steps per sequence.
    #[arg(long, default_value_t = 64)]
    seq_len: usize,
    /// Input features per step.
    #[arg(long, default_value_t = 256)]
    input_size: usize,
    /// Hidden size.
    #[arg(long, default_value_t = 256)]
    hidden_size: usize,
    /// Stacked layers.
    #[arg(long, default_value_t = 1)]
    layers: usize,
    /// Two directions per layer.
    #[arg(long)]
    bidirectional: bool,
    /// train or infer.
    #[arg(long, default_value = "train")]
    mode: String,
    /// auto, cpu, cuda[:N] or metal.
    #[arg(long, default_value = "cpu")]
    device: String,
    /// Timed iterations (after 2 warm-up iterations).
    #[arg(long, default_value_t = 20)]
    iters: usize,
    /// fused, composed or candle-nn.
    #[arg(long = "impl", default_value = "fused")]
    implementation: String,
    /// f32 or f64.
    #[arg(long, default_value = "f32")]
    dtype: String,
    /// Print one JSON line instead of text.
    #[arg(long)]
    json: bool,
}

fn bench(args: BenchArgs) -> Result<()> {
    let cell: Mode = args.cell.parse().context("--cell")?;
    let train = match args.mode.as_str() {
        "train" => true,
        "infer" => false,
        other => anyhow::bail!("--mode must be train or infer, got '{other}'"),
    };
    let dtype = match args.dtype.as_str() {
        "f32" => candle_core::DType::F32,
        "f64" => candle_core::DType::F64,
        other => anyhow::bail!("--dtype must be f32 or f64, got '{other}'"),
    };
    let device = rnn_core::device::select(&args.device).context("--device")?;
    let spec = BenchSpec {
        cell,
        batch: args.batch,
        seq_len: args.seq_len,
        input: args.input_size,
        hidden: args.hidden_size,
        layers: args.layers,
        bidirectional: args.bidirectional,
        train,
        implementation: args.implementation.parse::<BenchImpl>()?,
        iters: args.iters,
        dtype,
    };
    let result = Workload::new(&spec, &device)?.measure()?;
    if args.json {
        println!("{}", serde_json::to_string(&result)?);
    } else {
        println!(
            "{} {} B={} T={} I={} H={} layers={}{} on {} ({} threads): median {:.3} ms, min {:.3} ms over {} iterations",
            result.implementation,
            result.mode,
            result.batch,
            result.seq_len,
            result.input,
            result.hidden,
            result.layers,
            if result.bidirectional { " bidirectional" } else { "" },
            result.device,
            result.threads,
            result.median_ms,
            result.min_ms,
            result.iters
        );
    }
    Ok(())
}

/// Keeps freed large buffers in the heap instead of returning them to the OS, so the next training
/// step reuses them without page faults (about 10% of a step's time on this project's benchmarks;
/// glibc otherwise unmaps and re-faults every buffer above its adaptive mmap threshold).
fn tune_allocator() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator parameters; called once before any other thread runs.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 1 << 30);
    }
}

fn main() {
    tune_allocator();
    let cli = Cli::parse();
    let outcome = match cli.command {
        Command::Bench(args) => bench(args),
    };
    if let Err(e) = outcome {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}
