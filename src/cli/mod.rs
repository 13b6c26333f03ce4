//! The `rnn` command line as a library function, so tests drive it in-process:
//! [`run()`] parses arguments and runs a subcommand; [`main_entry`] adds the one-line error report
//! and exit code of the binary.

// The argument docs below are clap's help text, which spells optional parts as `cuda[:N]`:
// help syntax, not intra-doc links.
#![allow(rustdoc::broken_intra_doc_links)]

pub mod json;

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use rnn_core::Mode;

use crate::bench::{BenchImpl, BenchSpec, Workload};
use crate::run::{EvalRequest, Options, PredictRequest, SampleRequest, TaskName};
use crate::tasks;

// Where these lived before the run layer; they stay reachable here.
/// The run layer (`crate::run`), under the path it had when it was part of the command line.
pub use crate::run;
pub use crate::run::error_line;
pub use crate::run::options;

/// The `rnn` command.
#[derive(Parser, Debug)]
#[command(
    name = "rnn",
    version,
    about = "Recurrent neural networks on Candle: train, evaluate, sample, predict, benchmark",
    args_conflicts_with_subcommands = true
)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Train a task (see `rnn tasks`); without a task, the built-in default (routine).
    Train(Box<TrainArgs>),
    /// Evaluate a checkpoint on its validation data or on --data.
    Eval(EvalArgs),
    /// Generate from a language-model (or generator) checkpoint.
    Sample(SampleArgs),
    /// Run a checkpoint on an input: classify, tag, translate, forecast, complete.
    Predict(PredictArgs),
    /// Tokenise a language-model corpus once into a token file that `rnn train char-lm|word-lm
    /// --data FILE` reads in place.
    ///
    /// The token file holds the token ids (2 bytes each for vocabularies of up to 65,536 entries,
    /// else 4), the vocabulary and a header with checksums. `rnn train char-lm|word-lm --data
    /// FILE` reads its training windows in place from the mapped file, with the same tokens,
    /// parts and vocabulary, and so the same metrics and weights, as training on the text with
    /// the same options; the options that shape the data are fixed here, not at training. The
    /// corpus is read up to five times (counting characters, locating the test part, counting
    /// tokens, counting the vocabulary, writing), never held in memory. Byte-level BPE
    /// (--level subword) is not supported. See docs/STREAMING.md.
    Prepare(PrepareArgs),
    /// List the tasks and what data each expects.
    Tasks,
    /// Time a recurrent layer (train = forward + mean-square loss + backward; infer = forward).
    Bench(Box<BenchArgs>),
}

/// `rnn train`.
#[derive(clap::Args, Debug)]
#[command(allow_negative_numbers = true)]
pub struct TrainArgs {
    /// The task (default: routine).
    pub task: Option<String>,
    /// A TOML or JSON file with the same keys as the flags; flags override it.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// The options (see `rnn train --help`).
    #[command(flatten)]
    pub opts: Options,
}

/// `rnn prepare`.
#[derive(clap::Args, Debug)]
pub struct PrepareArgs {
    /// char-lm (default --level char) or word-lm (default --level word).
    pub task: String,
    /// The corpus, a text file.
    #[arg(long)]
    pub data: PathBuf,
    /// Validation text; default: a piece of --data as large as the test part, just before it.
    #[arg(long)]
    pub valid: Option<PathBuf>,
    /// Test text; default: the last --split of --data's characters (from a line start when one
    /// is near), kept out of the vocabulary.
    #[arg(long)]
    pub test: Option<PathBuf>,
    /// Fraction of --data held out as the test part (and as the validation part without
    /// --valid) [default: 0.1].
    #[arg(long)]
    pub split: Option<f64>,
    /// Token level: char or word [default: the task's].
    #[arg(long)]
    pub level: Option<String>,
    /// Word level: the vocabulary's maximum size, specials included; rarer words become `<unk>`
    /// [default: every word of the training part].
    #[arg(long)]
    pub vocab_size: Option<usize>,
    /// Character encoding of the text files (utf-8, latin1, windows-1252, utf-16le, ...)
    /// [default: utf-8].
    #[arg(long)]
    pub encoding: Option<String>,
    /// The token file to write (replaced atomically when it exists).
    #[arg(long)]
    pub out: PathBuf,
}

impl From<&PrepareArgs> for tasks::lm::PrepareRequest {
    fn from(args: &PrepareArgs) -> Self {
        tasks::lm::PrepareRequest {
            task: args.task.clone(),
            data: args.data.clone(),
            valid: args.valid.clone(),
            test: args.test.clone(),
            split: args.split,
            level: args.level.clone(),
            vocab_size: args.vocab_size,
            encoding: args.encoding.clone(),
            out: args.out.clone(),
        }
    }
}

/// `rnn eval`.
#[derive(clap::Args, Debug)]
pub struct EvalArgs {
    /// A run directory or checkpoint directory.
    #[arg(long)]
    pub checkpoint: PathBuf,
    /// Data to evaluate on (the task's format); default: the task's validation data.
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// MNIST label file accompanying --data.
    #[arg(long)]
    pub labels: Option<PathBuf>,
    /// Device: auto, cpu, cuda[:N], metal.
    #[arg(long, default_value = "auto")]
    pub device: String,
    /// Batch size for evaluation.
    #[arg(long, default_value_t = run::DEFAULT_EVAL_BATCH)]
    pub batch_size: usize,
    /// Print one JSON document (metrics as numbers; see docs/CLI_JSON.md) instead of the line.
    #[arg(long)]
    pub json: bool,
}

/// `rnn sample`.
#[derive(clap::Args, Debug)]
#[command(allow_negative_numbers = true)]
pub struct SampleArgs {
    /// A run directory or checkpoint directory (char-lm, word-lm, routine...).
    #[arg(long)]
    pub checkpoint: PathBuf,
    /// Text to continue.
    #[arg(long)]
    pub prompt: Option<String>,
    /// Softmax temperature (0 = greedy).
    #[arg(long, default_value_t = 1.0)]
    pub temperature: f64,
    /// Keep only the K most likely tokens.
    #[arg(long)]
    pub top_k: Option<usize>,
    /// Nucleus sampling: keep the smallest set with this much probability.
    #[arg(long)]
    pub top_p: Option<f64>,
    /// Tokens to generate at most.
    #[arg(long, default_value_t = 200)]
    pub max_len: usize,
    /// Samples to draw.
    #[arg(long, default_value_t = 1)]
    pub num: usize,
    /// Seed.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Device: auto, cpu, cuda[:N], metal.
    #[arg(long, default_value = "auto")]
    pub device: String,
    /// Print one JSON document (settings and samples; see docs/CLI_JSON.md) instead of text.
    #[arg(long)]
    pub json: bool,
}

/// `rnn predict`.
#[derive(clap::Args, Debug)]
pub struct PredictArgs {
    /// A run directory or checkpoint directory.
    #[arg(long)]
    pub checkpoint: PathBuf,
    /// The input: text, or a file with one input per line (forecast: a CSV file).
    #[arg(long)]
    pub input: Option<String>,
    /// Beam size for translation (1 = greedy).
    #[arg(long)]
    pub beam: Option<usize>,
    /// Forecast: steps ahead.
    #[arg(long)]
    pub horizon: Option<usize>,
    /// Device: auto, cpu, cuda[:N], metal.
    #[arg(long, default_value = "auto")]
    pub device: String,
    /// Print one JSON document (each input with its output; see docs/CLI_JSON.md) instead of
    /// text.
    #[arg(long)]
    pub json: bool,
}

impl PredictArgs {
    /// The inputs: the lines of `--input` if it names a file, else `--input` itself.
    pub fn inputs(&self) -> Result<Vec<String>> {
        PredictRequest::from(self).inputs()
    }
}

impl From<&EvalArgs> for EvalRequest {
    fn from(args: &EvalArgs) -> Self {
        EvalRequest {
            data: args.data.clone(),
            labels: args.labels.clone(),
            batch_size: args.batch_size,
        }
    }
}

impl From<&SampleArgs> for SampleRequest {
    fn from(args: &SampleArgs) -> Self {
        SampleRequest {
            prompt: args.prompt.clone(),
            temperature: args.temperature,
            top_k: args.top_k,
            top_p: args.top_p,
            max_len: args.max_len,
            num: args.num,
            seed: args.seed,
        }
    }
}

impl From<&PredictArgs> for PredictRequest {
    fn from(args: &PredictArgs) -> Self {
        PredictRequest {
            input: args.input.clone(),
            beam: args.beam,
            horizon: args.horizon,
        }
    }
}

/// `rnn bench`.
#[derive(clap::Args, Debug)]
#[command(group(clap::ArgGroup::new("table").args(["devices", "grid"])))]
pub struct BenchArgs {
    /// Cell kind: lstm, gru, rnn-tanh, rnn-relu.
    #[arg(long, default_value = "lstm")]
    pub cell: String,
    /// Sequences per batch.
    #[arg(long, default_value_t = 32)]
    pub batch: usize,
    /// Steps per sequence.
    #[arg(long, default_value_t = 64)]
    pub seq_len: usize,
    /// Input features per step.
    #[arg(long, default_value_t = 256)]
    pub input_size: usize,
    /// Hidden size.
    #[arg(long, default_value_t = 256)]
    pub hidden_size: usize,
    /// Stacked layers.
    #[arg(long, default_value_t = 1)]
    pub layers: usize,
    /// Two directions per layer.
    #[arg(long)]
    pub bidirectional: bool,
    /// Time the layer-normalised LSTM/GRU (`RnnConfig::layer_norm`); compare with the same
    /// command without it for its cost over the plain cell. Not with --devices.
    #[arg(long, conflicts_with = "devices")]
    pub layer_norm: bool,
    /// train or infer.
    #[arg(long, default_value = "train")]
    pub mode: String,
    /// auto, cpu, cuda[:N] or metal.
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// Timed iterations (after the warm-up: at least 2 iterations and 0.25 s).
    #[arg(long, default_value_t = 20)]
    pub iters: usize,
    /// Seconds the timed iterations take at least, on both sides of a comparison: more than
    /// --iters of them where these take less (default 0: exactly --iters; with --grid 0.4).
    #[arg(long, value_name = "S", allow_negative_numbers = true)]
    pub min_time_s: Option<f64>,
    /// fused, composed or candle-nn.
    #[arg(long = "impl", default_value = "fused")]
    pub implementation: String,
    /// f32, f64, bf16 or f16 (half precision with `--impl composed` or `candle-nn`).
    #[arg(long, default_value = "f32")]
    pub dtype: String,
    /// Print one JSON line instead of text (with --devices: one JSON line per row).
    #[arg(long)]
    pub json: bool,
    /// Zoneout rate of h (and of the LSTM cell c): times the option's cost over the plain cell.
    #[arg(long, default_value_t = 0.0, value_name = "RATE")]
    pub zoneout: f64,
    /// Recurrent (variational) dropout on h before W_hh.
    #[arg(long, default_value_t = 0.0, value_name = "P")]
    pub recurrent_dropout: f64,
    /// DropConnect on W_hh.
    #[arg(long, default_value_t = 0.0, value_name = "P")]
    pub weight_drop: f64,
    /// Variational dropout on each layer's input and the last layer's output.
    #[arg(long, default_value_t = 0.0, value_name = "P")]
    pub variational_dropout: f64,
    /// Time a table instead of one layer: every device of this comma-separated list (cpu, cuda,
    /// cuda:N, metal, metal:N, auto; `all` = every device kind of this build) × --cells ×
    /// --modes × --shapes, printed as Markdown (or --json lines). A device this build or machine
    /// lacks, and a workload that fails, is a row saying so; the exit status is 0 whatever the
    /// rows hold.
    #[arg(long, value_name = "LIST", conflicts_with_all = ["device", "mode"])]
    pub devices: Option<String>,
    /// With --devices: cells, comma-separated (default: --cell); with --grid: the grid's cells
    /// (default: lstm,gru,rnn-tanh).
    #[arg(long, value_name = "LIST", requires = "table", conflicts_with = "cell")]
    pub cells: Option<String>,
    /// With --devices or --grid: modes, comma-separated (default: train,infer).
    #[arg(long, value_name = "LIST", requires = "table")]
    pub modes: Option<String>,
    /// With --devices: shapes BxTxIxH, `;`-separated, e.g. '32x64x256x256;1x100x64x128'
    /// (default: the one of --batch, --seq-len, --input-size, --hidden-size).
    #[arg(
        long,
        value_name = "LIST",
        requires = "devices",
        conflicts_with_all = ["batch", "seq_len", "input_size", "hidden_size"]
    )]
    pub shapes: Option<String>,
    /// With --devices or --grid: also time each row in PyTorch with this Python (same shape,
    /// device, mode, dtype and iterations; oneDNN on CPU, cuDNN on CUDA), and print the ratio
    /// ours / PyTorch.
    #[arg(long, value_name = "PYTHON", requires = "table")]
    pub pytorch: Option<PathBuf>,
    /// Time LSTM, GRU and tanh-RNN over issue 28's grid of sizes on the CPU (hidden = input in
    /// 128,256,512,650,1024; batch 1,8,32,64; 35,64,200 steps; 1-2 layers; 1-2 directions;
    /// train and infer), a seeded sample that fits --grid-budget-min, each row against PyTorch
    /// (--pytorch) in interleaved rounds; writes `<--grid-out>/<cpu-model>-<isa>.md` and `.json`
    /// with the geometric mean and worst ratio per cell and mode and the issue's targets.
    #[arg(
        long,
        conflicts_with_all = [
            "device", "mode", "devices", "shapes", "implementation", "dtype", "layers",
            "bidirectional", "json", "batch", "seq_len", "input_size", "hidden_size", "iters",
            "tf32", "cell",
        ]
    )]
    pub grid: bool,
    /// With --grid: minutes the sample may take (by a static cost model: same rows on every host).
    #[arg(long, value_name = "MIN", default_value_t = 20.0, requires = "grid")]
    pub grid_budget_min: f64,
    /// With --grid: the seed of the sample.
    #[arg(long, value_name = "N", default_value_t = 0, requires = "grid")]
    pub grid_seed: u64,
    /// With --grid: interleaved rounds per row (ours then PyTorch, each round).
    #[arg(long, value_name = "N", default_value_t = 2, requires = "grid")]
    pub grid_rounds: usize,
    /// With --grid: rounds a row may take in a pass; a row whose per-round ratios (ours / PyTorch)
    /// differ by more than --grid-spread gets further rounds, one at a time, up to this many, and
    /// if they still differ, a second pass by the same rule at the end of the run.
    #[arg(long, value_name = "N", default_value_t = 5, requires = "grid")]
    pub grid_max_rounds: usize,
    /// With --grid: the per-round ratios' spread (max / min) above which a row gets another round.
    #[arg(long, value_name = "RATIO", default_value_t = 1.25, requires = "grid")]
    pub grid_spread: f64,
    /// With --grid: the report's folder.
    #[arg(
        long,
        value_name = "DIR",
        default_value = "benches/results",
        requires = "grid"
    )]
    pub grid_out: PathBuf,
    /// With --grid: hidden sizes (= input sizes), comma-separated, instead of the issue's.
    #[arg(long, value_name = "LIST", requires = "grid")]
    pub grid_hidden: Option<String>,
    /// With --grid: batch sizes, comma-separated, instead of the issue's.
    #[arg(long, value_name = "LIST", requires = "grid")]
    pub grid_batch: Option<String>,
    /// With --grid: sequence lengths, comma-separated, instead of the issue's.
    #[arg(long, value_name = "LIST", requires = "grid")]
    pub grid_seq_len: Option<String>,
    /// With --devices: allow TF32 in f32 matrix products on CUDA, on both sides (default off,
    /// as in Candle and PyTorch).
    #[arg(long, requires = "devices")]
    pub tf32: bool,
}

/// `rnn bench --devices`: the table, printed row by row as each is measured.
fn bench_table(args: &BenchArgs, devices: &str) -> Result<()> {
    use crate::bench_devices::{self as table, Shape, TableSpec};
    let cells = match &args.cells {
        Some(list) => table::parse_cells(list)?,
        None => vec![args.cell.parse::<Mode>().context("--cell")?],
    };
    let shapes = match &args.shapes {
        Some(list) => table::parse_shapes(list)?,
        None => vec![Shape {
            batch: args.batch,
            seq_len: args.seq_len,
            input: args.input_size,
            hidden: args.hidden_size,
        }],
    };
    let spec = TableSpec {
        devices: table::expand_devices(devices)?,
        cells,
        modes: table::parse_modes(args.modes.as_deref().unwrap_or("train,infer"))?,
        shapes,
        layers: args.layers,
        bidirectional: args.bidirectional,
        implementation: args.implementation.parse::<BenchImpl>()?,
        dtype: run::parse_dtype(&args.dtype)?,
        iters: args.iters,
        min_time_s: min_time_s(args.min_time_s, 0.0)?,
        pytorch: args.pytorch.clone(),
        tf32: args.tf32,
    };
    if !args.json {
        println!("{}", table::markdown_header(&spec, &table::Host::detect()));
    }
    let mut failed = None;
    table::run_table(&spec, |row| {
        let line = if args.json {
            serde_json::to_string(row).map_err(anyhow::Error::from)
        } else {
            Ok(table::markdown_row(row, spec.pytorch.is_some()))
        };
        match line {
            Ok(line) => println!("{line}"),
            Err(e) => failed = Some(e),
        }
    })?;
    failed.map_or(Ok(()), Err)
}

/// Parses a comma-separated list of sizes of at least 1 for `flag`.
fn size_list(flag: &str, list: &str) -> Result<Vec<usize>> {
    let sizes: Option<Vec<usize>> = list
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| s.parse::<usize>().ok().filter(|&n| n > 0))
        .collect();
    match sizes {
        Some(v) if !v.is_empty() => Ok(v),
        _ => anyhow::bail!("{flag}: '{list}' is not a comma-separated list of sizes of at least 1"),
    }
}

/// `--min-time-s`, or `default` when it is not given: a finite number of seconds, at least 0.
fn min_time_s(given: Option<f64>, default: f64) -> Result<f64> {
    match given {
        None => Ok(default),
        Some(s) if s.is_finite() && s >= 0.0 => Ok(s),
        Some(s) => anyhow::bail!("--min-time-s must be a number of seconds >= 0, got {s}"),
    }
}

/// `rnn bench --grid`: rows printed as measured, then the report written.
fn bench_grid(args: &BenchArgs) -> Result<()> {
    use crate::bench_grid::{self as grid, GridSpec};
    let mut spec = GridSpec::issue_28();
    if let Some(list) = &args.cells {
        spec.cells = crate::bench_devices::parse_cells(list)?;
    }
    if let Some(list) = &args.modes {
        spec.modes = crate::bench_devices::parse_modes(list)?;
    }
    for (flag, list, axis) in [
        ("--grid-hidden", &args.grid_hidden, &mut spec.hidden),
        ("--grid-batch", &args.grid_batch, &mut spec.batch),
        ("--grid-seq-len", &args.grid_seq_len, &mut spec.seq_len),
    ] {
        if let Some(list) = list {
            *axis = size_list(flag, list)?;
        }
    }
    spec.budget_min = args.grid_budget_min;
    spec.seed = args.grid_seed;
    spec.rounds = args.grid_rounds;
    spec.max_rounds = args.grid_max_rounds;
    spec.spread = args.grid_spread;
    spec.min_time_s = min_time_s(args.min_time_s, spec.min_time_s)?;
    spec.pytorch = args.pytorch.clone();
    spec.out = args.grid_out.clone();
    let planned = grid::sample(&spec);
    println!(
        "grid: {} rows sampled (seed {}, budget {} min); {} rounds each, up to {} where they differ by more than {}x{}",
        planned.len(),
        spec.seed,
        spec.budget_min,
        spec.rounds,
        spec.round_cap(),
        spec.spread,
        if spec.pytorch.is_some() {
            ", against PyTorch"
        } else {
            ", no PyTorch (--pytorch PYTHON)"
        }
    );
    println!("{}", grid::ROWS_HEADER);
    let report = grid::run_grid(&spec, |row| println!("{}", grid::markdown_row(row)))?;
    let (md, json) = grid::write_report(&report, &spec.out)?;
    for t in &report.targets {
        println!(
            "target: {}: {} ({})",
            t.target,
            t.value.map_or_else(|| "-".into(), |v| format!("{v:.2}x")),
            t.status
        );
    }
    println!("wrote {} and {}", md.display(), json.display());
    Ok(())
}

fn bench(args: BenchArgs) -> Result<()> {
    if let Some(devices) = &args.devices {
        return bench_table(&args, devices);
    }
    if args.grid {
        return bench_grid(&args);
    }
    let cell: Mode = args.cell.parse().context("--cell")?;
    let train = match args.mode.as_str() {
        "train" => true,
        "infer" => false,
        other => anyhow::bail!("--mode must be train or infer, got '{other}'"),
    };
    let dtype = run::parse_dtype(&args.dtype)?;
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
        min_time_s: min_time_s(args.min_time_s, 0.0)?,
        dtype,
        masks: crate::bench::BenchMasks {
            zoneout: args.zoneout,
            recurrent_dropout: args.recurrent_dropout,
            weight_drop: args.weight_drop,
            variational_dropout: args.variational_dropout,
        },
        layer_norm: args.layer_norm,
    };
    let result = Workload::new(&spec, &device)?.measure()?;
    if args.json {
        println!("{}", serde_json::to_string(&result)?);
    } else {
        println!(
            "{}{} {} B={} T={} I={} H={} layers={}{}{} on {} ({} threads, kernel {}): median {:.3} ms, min {:.3} ms over {} iterations",
            result.implementation,
            if result.layer_norm { " layer-norm" } else { "" },
            result.mode,
            result.batch,
            result.seq_len,
            result.input,
            result.hidden,
            result.layers,
            if result.bidirectional { " bidirectional" } else { "" },
            mask_label(&result.masks),
            result.device,
            result.threads,
            result.kernel,
            result.median_ms,
            result.min_ms,
            result.iters
        );
    }
    Ok(())
}

/// ` zoneout=Z recurrent-dropout=P ...` for the mask options that are on (empty when none).
fn mask_label(m: &crate::bench::BenchMasks) -> String {
    [
        ("zoneout", m.zoneout),
        ("recurrent-dropout", m.recurrent_dropout),
        ("weight-drop", m.weight_drop),
        ("variational-dropout", m.variational_dropout),
    ]
    .iter()
    .filter(|(_, v)| *v > 0.0)
    .map(|(k, v)| format!(" {k}={v}"))
    .collect()
}

/// Parses `args` (starting with the program name) and runs the subcommand. Output goes to
/// stdout; errors are returned.
pub fn run<I, T>(args: I) -> Result<()>
where
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString> + Clone,
{
    let args: Vec<std::ffi::OsString> = args.into_iter().map(Into::into).collect();
    if let Some(help) = task_help(&args) {
        print!("{help}");
        return Ok(());
    }
    let cli = Cli::try_parse_from(args)?;
    match cli.command {
        Command::Train(args) => train(*args, true).map(|line| {
            // Ranks other than 0 of a data-parallel run report nothing.
            if !line.is_empty() {
                println!("{line}");
            }
        }),
        Command::Eval(args) => {
            at_least_one("--batch-size", args.batch_size)?;
            let device = select_device(&args.device)?;
            let run = run::CheckpointRun::load(&args.checkpoint, &device)?;
            let report = tasks::eval(&run, &args)?;
            if args.json {
                println!("{}", json::eval_document(&run, &report)?);
            } else {
                println!("{}", report.summary);
            }
            Ok(())
        }
        Command::Sample(args) => {
            at_least_one("--max-len", args.max_len)?;
            at_least_one("--num", args.num)?;
            let device = select_device(&args.device)?;
            let run = run::CheckpointRun::load(&args.checkpoint, &device)?;
            let req = SampleRequest::from(&args);
            let samples = tasks::sample(&run, &req)?;
            if args.json {
                println!("{}", json::sample_document(&run, &req, &samples)?);
            } else {
                for line in &samples.lines {
                    println!("{line}");
                }
            }
            Ok(())
        }
        Command::Predict(args) => {
            let device = select_device(&args.device)?;
            let run = run::CheckpointRun::load(&args.checkpoint, &device)?;
            let predictions = tasks::predict(&run, &args)?;
            if args.json {
                println!("{}", json::predict_document(&run, &predictions)?);
            } else {
                for line in &predictions.lines {
                    println!("{line}");
                }
            }
            Ok(())
        }
        Command::Prepare(args) => {
            let req = tasks::lm::PrepareRequest::from(&args);
            let (_, line) = tasks::lm::prepare_file(&req, |m| eprintln!("{m}"))?;
            println!("{line}");
            Ok(())
        }
        Command::Tasks => {
            for t in TaskName::ALL {
                println!("{:<10} {}", t.as_str(), t.describe());
            }
            Ok(())
        }
        Command::Bench(args) => bench(*args),
    }
}

/// Refuses 0 for a count option of `eval`, `sample` or `predict`.
fn at_least_one(flag: &str, value: usize) -> Result<()> {
    if value == 0 {
        anyhow::bail!("{flag} must be at least 1, got 0");
    }
    Ok(())
}

/// Selects `--device` and says on stderr which device runs (useful with `auto`).
fn select_device(spec: &str) -> Result<candle_core::Device> {
    let device = rnn_core::device::select(spec).context("--device")?;
    eprintln!("device {}", rnn_core::device::name(&device));
    Ok(device)
}

/// `rnn train` with parsed arguments; returns the summary line. `verbose` = progress output.
pub fn train(args: TrainArgs, verbose: bool) -> Result<String> {
    let task: TaskName = match &args.task {
        Some(t) => t.parse()?,
        None => TaskName::Routine,
    };
    let file = match &args.config {
        Some(path) => Options::from_file(path)?,
        None => Options::default(),
    };
    let opts = args.opts.over(file);
    tasks::options(task).check(task, &opts)?;
    let threads = opts.dp_threads.unwrap_or(1) as usize;
    if let Some(group) = run::world::collective_from_env()? {
        if threads > 1 {
            anyhow::bail!("--dp-threads {threads} under an MPI launcher: use one or the other");
        }
        let result = train_rank(task, opts, verbose, Some(group.clone()));
        if result.is_ok() {
            run::world::all_done(group.as_ref())?;
        }
        return result;
    }
    if threads > 1 {
        return train_threads(task, opts, threads, verbose);
    }
    train_rank(task, opts, verbose, None)
}

/// `rnn train --dp-threads N`: N data-parallel ranks as threads of this process. Returns rank
/// 0's summary, or the error that ended the run (the failing rank's own, not the others'
/// "left the group").
fn train_threads(task: TaskName, opts: Options, threads: usize, verbose: bool) -> Result<String> {
    let group = rnn_train::collective::ThreadCollective::group(threads)?;
    let results: Vec<Result<String>> = std::thread::scope(|s| {
        let handles: Vec<_> = group
            .into_iter()
            .map(|c| {
                let opts = opts.clone();
                s.spawn(move || train_rank(task, opts, verbose, Some(std::sync::Arc::new(c))))
            })
            .collect();
        handles
            .into_iter()
            .enumerate()
            .map(|(rank, h)| {
                h.join()
                    .unwrap_or_else(|_| Err(anyhow::anyhow!("data-parallel rank {rank} panicked")))
            })
            .collect()
    });
    let cause = results.iter().position(|r| {
        r.as_ref()
            .is_err_and(|e| !format!("{e:#}").contains("left the group"))
    });
    let mut results = results.into_iter();
    match cause {
        Some(rank) => {
            let err = results.nth(rank).and_then(|r| r.err()).expect("an error");
            Err(err.context(format!("data-parallel rank {rank}")))
        }
        None => results.next().expect("at least one rank"),
    }
}

/// One run of `rnn train`, alone (`group` `None`) or as one rank of a data-parallel group.
fn train_rank(
    task: TaskName,
    opts: Options,
    verbose: bool,
    group: Option<std::sync::Arc<dyn rnn_train::collective::Collective>>,
) -> Result<String> {
    let mut ctx = run::RunContext::new(task, opts)?;
    ctx.verbose = verbose;
    if let Some(group) = group {
        ctx.join_group(group)?;
    }
    ctx.say(&format!(
        "task {}: device {}, dtype {:?}, output in {}",
        task.as_str(),
        rnn_core::device::name(&ctx.device),
        ctx.dtype,
        ctx.out.display()
    ));
    if matches!(
        ctx.dtype,
        candle_core::DType::BF16 | candle_core::DType::F16
    ) && ctx.device.is_cpu()
    {
        ctx.say(
            "note: half precision on the CPU runs the composed ops (no fused kernel): useful to check a setup before a GPU run, slower than f32",
        );
    }
    let outcome = match tasks::train(&ctx) {
        Ok(outcome) => outcome,
        Err(e) if e.downcast_ref::<run::RankDone>().is_some() => {
            ctx.leave_group();
            return Ok(String::new());
        }
        Err(e) => {
            if let Some(dir) = ctx.remove_created_out() {
                if ctx.rank() == 0 {
                    eprintln!(
                        "note: removed {}, which this failed run had created",
                        dir.display()
                    );
                }
            }
            return Err(e);
        }
    };
    ctx.leave_group();
    if let (Some(ms), 0) = (outcome.report.ms_per_step(), ctx.rank()) {
        ctx.say(&format!(
            "{}: training took {:.3} s for {} steps, {ms:.2} ms per step (evaluations, checkpoints and set-up excluded)",
            task.as_str(),
            outcome.report.train_seconds,
            outcome.report.train_steps
        ));
    }
    Ok(run::summary_line(&ctx, &outcome))
}

/// The help of `rnn train TASK --help` (or `-h`): TASK's own options with its defaults; `None`
/// for any other command line.
fn task_help(args: &[std::ffi::OsString]) -> Option<String> {
    let words: Vec<&str> = args.iter().skip(1).filter_map(|a| a.to_str()).collect();
    if words.first() != Some(&"train") || !words.iter().any(|w| *w == "--help" || *w == "-h") {
        return None;
    }
    let task: TaskName = words.get(1)?.parse().ok()?;
    let cmd = <TrainArgs as clap::Args>::augment_args(clap::Command::new("train"));
    Some(run::task_options::task_help(
        cmd,
        task,
        &tasks::options(task),
    ))
}

/// The binary's entry: runs, prints one `error: ...` line on failure (clap prints its own usage
/// errors), and returns the exit code.
pub fn main_entry<I, T>(args: I) -> i32
where
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString> + Clone,
{
    match run(args) {
        Ok(()) => 0,
        Err(e) => {
            if let Some(clap_err) = e.downcast_ref::<clap::Error>() {
                let _ = clap_err.print();
                return clap_err.exit_code();
            }
            eprintln!("error: {}", error_line(&e));
            1
        }
    }
}
