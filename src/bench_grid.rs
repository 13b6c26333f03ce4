//! `rnn bench --grid`: LSTM, GRU and tanh-RNN layers over a grid of the sizes users train
//! (hidden 128-1024, batch 1-64, 35-200 steps, one or two layers, one or two directions,
//! training and inference), sampled to fit a time budget, each row timed against PyTorch in
//! interleaved rounds; the report (`<out>/<cpu-model>-<isa>.md` and `.json`) holds every row, the
//! geometric mean and worst ratio per cell and mode, and issue 28's targets, met or missed.
//!
//! The sample is deterministic: the rows of each cell x mode are shuffled with `--grid-seed`
//! and taken in turn, one group after the other, while a static cost model (FLOPs, steps and
//! PyTorch's start-up, not this host's speed) says they fit `--grid-budget-min`, so the same
//! seed and budget time the same rows on every host.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use candle_core::{DType, Device};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rnn_core::Mode;
use serde::Serialize;

use crate::bench::{BenchImpl, BenchMasks, BenchSpec, Workload};
use crate::bench_devices::{probe_torch, run_torch};
use crate::run::error_line;

/// The axes of the grid.
#[derive(Debug, Clone)]
pub struct GridSpec {
    /// Cells.
    pub cells: Vec<Mode>,
    /// Hidden sizes (the input size is the same).
    pub hidden: Vec<usize>,
    /// Batch sizes.
    pub batch: Vec<usize>,
    /// Sequence lengths.
    pub seq_len: Vec<usize>,
    /// Layer counts.
    pub layers: Vec<usize>,
    /// Directions: `false` one, `true` two.
    pub bidirectional: Vec<bool>,
    /// `true` train, `false` infer.
    pub modes: Vec<bool>,
    /// Minutes the sample may take, by the cost model.
    pub budget_min: f64,
    /// Seed of the sample.
    pub seed: u64,
    /// Interleaved rounds per row (ours, PyTorch, ours, PyTorch, ...).
    pub rounds: usize,
    /// Rounds a row may take in all: a row whose per-round ratios disagree by more than
    /// `spread` gets further rounds, one at a time, up to this many (see [`wants_more_rounds`]).
    pub max_rounds: usize,
    /// The largest ratio of one row's per-round ratios (max / min) taken as agreement.
    pub spread: f64,
    /// Seconds each side's timed iterations take at least in a round ([`BenchSpec::min_time_s`]).
    pub min_time_s: f64,
    /// A Python with PyTorch (no PyTorch column without it).
    pub pytorch: Option<PathBuf>,
    /// Folder of the report.
    pub out: PathBuf,
}

impl GridSpec {
    /// The grid of issue 28: H in {128, 256, 512, 650, 1024} (I = H), B in {1, 8, 32, 64}, T in
    /// {35, 64, 200}, one and two layers, one and two directions, LSTM, GRU and tanh-RNN,
    /// training and inference; 20 minutes, seed 0, two rounds (up to five where they disagree by
    /// more than 1.25x), `benches/results`.
    pub fn issue_28() -> Self {
        Self {
            cells: vec![Mode::Lstm, Mode::Gru, Mode::RnnTanh],
            hidden: vec![128, 256, 512, 650, 1024],
            batch: vec![1, 8, 32, 64],
            seq_len: vec![35, 64, 200],
            layers: vec![1, 2],
            bidirectional: vec![false, true],
            modes: vec![true, false],
            budget_min: 20.0,
            seed: 0,
            rounds: 2,
            max_rounds: 5,
            spread: 1.25,
            min_time_s: GRID_MIN_TIME_S,
            pytorch: None,
            out: PathBuf::from("benches/results"),
        }
    }

    /// The most rounds a row takes: `max_rounds`, never fewer than `rounds`.
    pub fn round_cap(&self) -> usize {
        self.max_rounds.max(self.rounds)
    }
}

/// One configuration of the grid.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Point {
    /// Cell.
    #[serde(serialize_with = "ser_mode")]
    pub cell: Mode,
    /// `true`: train.
    #[serde(skip)]
    pub train: bool,
    /// Sequences per batch.
    pub batch: usize,
    /// Steps.
    pub seq_len: usize,
    /// Input features (= hidden).
    pub input: usize,
    /// Hidden size.
    pub hidden: usize,
    /// Layers.
    pub layers: usize,
    /// Two directions.
    pub bidirectional: bool,
}

fn ser_mode<S: serde::Serializer>(m: &Mode, s: S) -> std::result::Result<S::Ok, S::Error> {
    s.serialize_str(m.as_str())
}

/// PyTorch's start-up per run in the cost model, seconds (`import torch`).
const TORCH_START_S: f64 = 3.0;
/// Our and PyTorch's combined throughput in the cost model, FLOP/s (a low guess for two cores).
const MODEL_FLOPS: f64 = 40e9;
/// Per-step latency in the cost model, seconds (small shapes are latency bound).
const MODEL_STEP_S: f64 = 8e-6;
/// Wall time the timed iterations of one side of one round aim at by the cost model, seconds.
const ROUND_TARGET_S: f64 = 0.4;
/// Seconds each side's timed iterations take at least in a round, by the clock: the cost model's
/// throughput is a low guess, so its iteration counts alone can time a few milliseconds on small
/// rows, too short to outvote the noise of a shared host (benches/README.md, "The shape grid").
pub const GRID_MIN_TIME_S: f64 = 0.4;

impl Point {
    /// Multiply-add FLOPs of one iteration (forward, and twice that again for the backward).
    pub fn flops(&self) -> f64 {
        let gates = match self.cell {
            Mode::Lstm => 4.0,
            Mode::Gru => 3.0,
            _ => 1.0,
        };
        let dirs = if self.bidirectional { 2.0 } else { 1.0 };
        let h = self.hidden as f64;
        let rows = (self.batch * self.seq_len) as f64;
        let mut f = 0.0;
        for l in 0..self.layers {
            let input = if l == 0 { self.input as f64 } else { dirs * h };
            f += 2.0 * rows * (input + h) * gates * h * dirs;
        }
        if self.train {
            3.0 * f
        } else {
            f
        }
    }

    /// The cost model's time of one iteration, seconds.
    pub fn iter_s(&self) -> f64 {
        let dirs = if self.bidirectional { 2 } else { 1 };
        let passes = if self.train { 3 } else { 1 };
        self.flops() / MODEL_FLOPS
            + (self.seq_len * self.layers * dirs * passes) as f64 * MODEL_STEP_S
    }

    /// Timed iterations per round: about 0.4 s of them by the cost model, 3 to 20.
    pub fn iters(&self) -> usize {
        ((ROUND_TARGET_S / self.iter_s()).round() as usize).clamp(3, 20)
    }

    /// The cost model's time of the row over `rounds` rounds, seconds: both sides' warm-ups and
    /// timed iterations, and PyTorch's start-up when it runs.
    pub fn cost_s(&self, rounds: usize, torch: bool) -> f64 {
        let one = (self.iters() + 2) as f64 * self.iter_s();
        let sides = if torch {
            2.0 * one + TORCH_START_S
        } else {
            one
        };
        rounds as f64 * sides
    }
}

/// The sample of `spec`'s grid (see the module's documentation), in run order.
pub fn sample(spec: &GridSpec) -> Vec<Point> {
    let mut rng = ChaCha8Rng::seed_from_u64(spec.seed);
    let mut groups: Vec<Vec<Point>> = Vec::new();
    for &cell in &spec.cells {
        for &train in &spec.modes {
            let mut g = Vec::new();
            for &hidden in &spec.hidden {
                for &batch in &spec.batch {
                    for &seq_len in &spec.seq_len {
                        for &layers in &spec.layers {
                            for &bidirectional in &spec.bidirectional {
                                g.push(Point {
                                    cell,
                                    train,
                                    batch,
                                    seq_len,
                                    input: hidden,
                                    hidden,
                                    layers,
                                    bidirectional,
                                });
                            }
                        }
                    }
                }
            }
            g.shuffle(&mut rng);
            groups.push(g);
        }
    }
    let budget = spec.budget_min * 60.0;
    let torch = spec.pytorch.is_some();
    let mut picked = Vec::new();
    let mut spent = 0.0;
    let mut next = vec![0usize; groups.len()];
    // Round-robin over cell x mode; a row that does not fit is passed over (a cheaper one of
    // its group may), and a group with nothing left that fits drops out.
    let mut live: Vec<usize> = (0..groups.len()).collect();
    while !live.is_empty() {
        live.retain(|&g| {
            while next[g] < groups[g].len() {
                let p = groups[g][next[g]];
                next[g] += 1;
                let cost = p.cost_s(spec.rounds, torch);
                if spent + cost <= budget {
                    spent += cost;
                    picked.push(p);
                    return true;
                }
            }
            false
        });
    }
    picked
}

/// One measured row.
#[derive(Debug, Clone, Serialize)]
pub struct GridRow {
    /// The configuration.
    #[serde(flatten)]
    pub point: Point,
    /// `train` or `infer`.
    pub mode: String,
    /// Timed iterations per round.
    pub iters: usize,
    /// Our median ms, the median over rounds of each round's median.
    pub ours_ms: Option<f64>,
    /// PyTorch's, likewise.
    pub torch_ms: Option<f64>,
    /// The median over rounds of ours / PyTorch per round (below 1: ours faster).
    pub ratio: Option<f64>,
    /// The rate of our median time, GFLOP/s of the products ([`Point::flops`]).
    pub ours_gflops: Option<f64>,
    /// PyTorch's, likewise.
    pub torch_gflops: Option<f64>,
    /// Each round's ratio.
    pub round_ratios: Vec<f64>,
    /// Rounds run: `rounds`, or more where they disagreed (`late_rounds` included).
    pub rounds: usize,
    /// Of them, the rounds run at the end of the grid, for a row whose first `max_rounds` still
    /// disagreed (the last `late_rounds` of `round_ratios`).
    pub late_rounds: usize,
    /// The kernels our products used.
    pub kernel: String,
    /// Errors, if any.
    pub note: String,
}

/// Geometric mean and worst ratio of one cell and mode.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    /// Cell.
    pub cell: String,
    /// Mode.
    pub mode: String,
    /// Rows with a ratio.
    pub rows: usize,
    /// Geometric mean of the ratios.
    pub geomean: Option<f64>,
    /// Largest ratio.
    pub worst: Option<f64>,
    /// The row of the largest ratio, `BxTxIxH, layers, directions`.
    pub worst_row: Option<String>,
}

/// One target of issue 28 and whether this run met it.
#[derive(Debug, Clone, Serialize)]
pub struct Target {
    /// What must hold.
    pub target: String,
    /// The measured value.
    pub value: Option<f64>,
    /// The bound.
    pub bound: f64,
    /// `met`, `missed` or `no rows`.
    pub status: String,
}

/// The whole report, as written to `<cpu-model>-<isa>.json`.
#[derive(Debug, Clone, Serialize)]
pub struct GridReport {
    /// UTC date of the run.
    pub date: String,
    /// CPU model.
    pub cpu_model: String,
    /// The widest matrix kernel this CPU runs (`avx512`, `avx2` or `portable`): with the model
    /// it names the report's file, since one model string can cover several CPU generations
    /// (`AMD EPYC` for Zen 3 without AVX-512 and Zen 4 with it).
    #[serde(default)]
    pub cpu_isa: String,
    /// Vendor, family, model and stepping from `/proc/cpuinfo`, where there is one.
    #[serde(default)]
    pub cpu_id: Option<String>,
    /// Our CPU threads (Rayon).
    pub threads: usize,
    /// PyTorch's threads, as it reports them.
    pub torch_threads: Option<usize>,
    /// PyTorch's version and backend.
    pub torch: Option<String>,
    /// `RNN_KERNEL`'s setting (`auto`: measured per shape class).
    pub kernel_setting: String,
    /// The kernels our rows used.
    pub kernels_used: String,
    /// This crate's version.
    pub rnn_version: String,
    /// The budget, minutes.
    pub budget_min: f64,
    /// The seed of the sample.
    pub seed: u64,
    /// Interleaved rounds per row.
    pub rounds: usize,
    /// Rounds a row could take where its rounds disagreed.
    pub max_rounds: usize,
    /// Their disagreement that called for more: max / min of the per-round ratios.
    pub spread: f64,
    /// Seconds of warm-up iterations before each side's timed ones, in every round.
    pub warmup_s: f64,
    /// Seconds each side's timed iterations took at least, in every round.
    pub min_time_s: f64,
    /// Wall time of the run, minutes.
    pub wall_min: f64,
    /// The host's load averages (`/proc/loadavg`: 1, 5, 15 min) at the start and the end: a
    /// load above the threads means other work shared the cores and the times are suspect.
    pub load_avg: [Option<String>; 2],
    /// Rows sampled but not run: the run stops starting rows at 1.5x the budget.
    pub skipped_rows: usize,
    /// Every row.
    pub rows: Vec<GridRow>,
    /// Per cell and mode.
    pub summary: Vec<Summary>,
    /// Issue 28's targets.
    pub targets: Vec<Target>,
}

/// Whether a row whose rounds so far gave `ratios` (ours / PyTorch) needs another round: when
/// the largest is more than `spread` times the smallest. The rule looks at the spread only, not
/// at which side is faster, so an outlier round either way gets outvoted by the median of more
/// rounds rather than halving a two-round mean.
pub fn wants_more_rounds(ratios: &[f64], spread: f64) -> bool {
    let (lo, hi) = ratios
        .iter()
        .fold((f64::INFINITY, 0f64), |(lo, hi), &r| (lo.min(r), hi.max(r)));
    ratios.len() >= 2 && lo > 0.0 && hi / lo > spread
}

fn median(v: &mut [f64]) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    Some(if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    })
}

fn geomean(v: &[f64]) -> Option<f64> {
    (!v.is_empty()).then(|| (v.iter().map(|r| r.ln()).sum::<f64>() / v.len() as f64).exp())
}

/// Runs the sample of `spec`, calling `on_row` as each row is done, and returns the report
/// (not yet written: [`write_report`]).
pub fn run_grid(spec: &GridSpec, mut on_row: impl FnMut(&GridRow)) -> Result<GridReport> {
    if spec.rounds == 0 {
        bail!("--grid-rounds must be at least 1");
    }
    if !(spec.spread.is_finite() && spec.spread >= 1.0) {
        bail!("--grid-spread must be a ratio >= 1, got {}", spec.spread);
    }
    if spec.budget_min.is_nan() || spec.budget_min <= 0.0 {
        bail!("--grid-budget-min must be above 0, got {}", spec.budget_min);
    }
    let points = sample(spec);
    if points.is_empty() {
        bail!(
            "--grid-budget-min {}: not even one row of the grid fits (the cheapest needs more)",
            spec.budget_min
        );
    }
    if let Some(python) = &spec.pytorch {
        probe_torch(python).context("--pytorch")?;
    }
    let start = Instant::now();
    let load_start = load_avg();
    let device = Device::Cpu;
    let mut rows = Vec::new();
    let mut late = Vec::new();
    let mut torch_info = TorchInfo::default();
    let planned = points.len();
    for p in points {
        // A host much slower than the cost model (or a loaded one) stops at 1.5x the budget
        // rather than run on for hours; the report counts the rows left out.
        if start.elapsed().as_secs_f64() > 1.5 * 60.0 * spec.budget_min {
            break;
        }
        let mut run = RowRun::new(p, spec);
        run.rounds(spec, &device, &mut torch_info, false);
        let row = run.row();
        on_row(&row);
        rows.push(row);
        if run.unsettled(spec) {
            late.push((rows.len() - 1, run));
        }
    }
    // Rows whose rounds still disagree at the cap are measured again once the rest is done, when
    // a disturbance of a few minutes has likely passed; their ratio is the median of all rounds.
    for (i, mut run) in late {
        if start.elapsed().as_secs_f64() > 1.5 * 60.0 * spec.budget_min {
            break;
        }
        run.rounds(spec, &device, &mut torch_info, true);
        let row = run.row();
        on_row(&row);
        rows[i] = row;
    }
    let TorchInfo {
        threads: torch_threads,
        version: torch,
    } = torch_info;
    let mut kernels: Vec<&str> = rows
        .iter()
        .flat_map(|r| r.kernel.split('+'))
        .filter(|k| *k != "none")
        .collect();
    kernels.sort();
    kernels.dedup();
    let summary = summarize(spec, &rows);
    let targets = targets(&rows);
    Ok(GridReport {
        date: utc_date(),
        cpu_model: rnn_core::kernels::cpu_model(),
        cpu_isa: host_isa(),
        cpu_id: cpu_id(),
        threads: rayon::current_num_threads(),
        torch_threads,
        torch,
        kernel_setting: rnn_core::kernels::setting(),
        kernels_used: if kernels.is_empty() {
            "none".into()
        } else {
            kernels.join("+")
        },
        rnn_version: env!("CARGO_PKG_VERSION").into(),
        budget_min: spec.budget_min,
        seed: spec.seed,
        rounds: spec.rounds,
        max_rounds: spec.round_cap(),
        spread: spec.spread,
        warmup_s: crate::bench::WARMUP_MIN_S,
        min_time_s: spec.min_time_s,
        wall_min: start.elapsed().as_secs_f64() / 60.0,
        load_avg: [load_start, load_avg()],
        skipped_rows: planned - rows.len(),
        rows,
        summary,
        targets,
    })
}

/// PyTorch's threads and version (with its backend), from its first run.
#[derive(Default)]
struct TorchInfo {
    threads: Option<usize>,
    version: Option<String>,
}

/// One row's rounds so far.
struct RowRun {
    point: Point,
    bench: BenchSpec,
    ours: Vec<f64>,
    theirs: Vec<f64>,
    ratios: Vec<f64>,
    /// Rounds run in the first pass (the rest ran at the end of the grid).
    early: usize,
    rounds: usize,
    notes: Vec<String>,
    kernel: String,
    failed: bool,
}

impl RowRun {
    fn new(point: Point, spec: &GridSpec) -> Self {
        let p = point;
        Self {
            point,
            bench: BenchSpec {
                cell: p.cell,
                batch: p.batch,
                seq_len: p.seq_len,
                input: p.input,
                hidden: p.hidden,
                layers: p.layers,
                bidirectional: p.bidirectional,
                train: p.train,
                implementation: BenchImpl::Fused,
                iters: p.iters(),
                min_time_s: spec.min_time_s,
                dtype: DType::F32,
                masks: BenchMasks::default(),
                layer_norm: false,
            },
            ours: Vec::new(),
            theirs: Vec::new(),
            ratios: Vec::new(),
            early: 0,
            rounds: 0,
            notes: Vec::new(),
            kernel: String::from("none"),
            failed: false,
        }
    }

    /// Whether the first pass ended at the cap with its rounds still disagreeing.
    fn unsettled(&self, spec: &GridSpec) -> bool {
        !self.failed
            && spec.round_cap() > spec.rounds
            && self.rounds == spec.round_cap()
            && wants_more_rounds(&self.ratios, spec.spread)
    }

    /// One pass: `spec.rounds` interleaved rounds, then one more at a time while this pass's
    /// ratios disagree, up to `spec.round_cap()` in the pass. The workload lives for the pass.
    fn rounds(&mut self, spec: &GridSpec, device: &Device, torch: &mut TorchInfo, late: bool) {
        let mut workload = match Workload::new(&self.bench, device) {
            Ok(w) => Some(w),
            Err(e) => {
                self.notes.push(format!("error: {}", error_line(&e)));
                self.failed = true;
                None
            }
        };
        let first = self.ratios.len();
        let mut round = 0;
        while round < spec.rounds
            || (round < spec.round_cap() && wants_more_rounds(&self.ratios[first..], spec.spread))
        {
            round += 1;
            let o = workload.as_mut().and_then(|w| match w.measure() {
                Ok(r) => {
                    self.kernel = r.kernel.clone();
                    Some(r.median_ms)
                }
                Err(e) => {
                    self.notes.push(format!("error: {}", error_line(&e)));
                    None
                }
            });
            let t = match &spec.pytorch {
                Some(python) => match run_torch(python, &self.bench, "cpu", false) {
                    Ok(t) => {
                        torch.threads = torch.threads.or(t.threads);
                        if torch.version.is_none() {
                            torch.version = Some(format!(
                                "{} ({})",
                                t.torch.clone().unwrap_or_default(),
                                t.backend.clone().unwrap_or_default()
                            ));
                        }
                        Some(t.median_ms)
                    }
                    Err(e) => {
                        self.notes.push(format!("PyTorch: {}", error_line(&e)));
                        None
                    }
                },
                None => None,
            };
            if let Some(o) = o {
                self.ours.push(o);
            }
            if let Some(t) = t {
                self.theirs.push(t);
            }
            if let (Some(o), Some(t)) = (o, t.filter(|t| *t > 0.0)) {
                self.ratios.push(o / t);
            }
            if o.is_none() {
                self.failed = true;
                break;
            }
        }
        self.rounds += round;
        if !late {
            self.early = self.rounds;
        } else if wants_more_rounds(&self.ratios[first..], spec.spread) {
            self.notes.push(format!(
                "unsettled: the last {} rounds still differ by more than {}x",
                self.rounds - self.early,
                spec.spread
            ));
        }
    }

    fn row(&self) -> GridRow {
        let mut notes = self.notes.clone();
        notes.dedup();
        let late_rounds = self.rounds - self.early;
        if late_rounds > 0 {
            notes.insert(0, format!("{late_rounds} rounds at the end of the run"));
        }
        let p = self.point;
        let (ours_ms, torch_ms) = (
            median(&mut self.ours.clone()),
            median(&mut self.theirs.clone()),
        );
        let gflops = |ms: Option<f64>| ms.filter(|ms| *ms > 0.0).map(|ms| p.flops() / ms / 1e6);
        GridRow {
            point: p,
            mode: if p.train { "train" } else { "infer" }.into(),
            iters: self.bench.iters,
            ours_ms,
            torch_ms,
            ours_gflops: gflops(ours_ms),
            torch_gflops: gflops(torch_ms),
            ratio: median(&mut self.ratios.clone()),
            round_ratios: self.ratios.clone(),
            rounds: self.rounds,
            late_rounds,
            kernel: self.kernel.clone(),
            note: notes.join("; "),
        }
    }
}

fn describe(p: &Point) -> String {
    format!(
        "{}x{}x{}x{}, {} layer{}, {}",
        p.batch,
        p.seq_len,
        p.input,
        p.hidden,
        p.layers,
        if p.layers == 1 { "" } else { "s" },
        if p.bidirectional { "bi" } else { "uni" }
    )
}

/// Geometric mean and worst ratio per cell and mode, in the grid's order.
pub fn summarize(spec: &GridSpec, rows: &[GridRow]) -> Vec<Summary> {
    let mut out = Vec::new();
    for &cell in &spec.cells {
        for &train in &spec.modes {
            let of: Vec<&GridRow> = rows
                .iter()
                .filter(|r| r.point.cell == cell && r.point.train == train && r.ratio.is_some())
                .collect();
            let ratios: Vec<f64> = of.iter().filter_map(|r| r.ratio).collect();
            let worst = of
                .iter()
                .max_by(|a, b| a.ratio.unwrap().total_cmp(&b.ratio.unwrap()));
            out.push(Summary {
                cell: cell.as_str().into(),
                mode: if train { "train" } else { "infer" }.into(),
                rows: ratios.len(),
                geomean: geomean(&ratios),
                worst: worst.and_then(|r| r.ratio),
                worst_row: worst.map(|r| describe(&r.point)),
            });
        }
    }
    out
}

/// Issue 28's targets over `rows` (training and inference together).
pub fn targets(rows: &[GridRow]) -> Vec<Target> {
    let ratios = |f: &dyn Fn(&Point) -> bool| -> Vec<f64> {
        rows.iter()
            .filter(|r| f(&r.point))
            .filter_map(|r| r.ratio)
            .collect()
    };
    let lstm = ratios(&|p| p.cell == Mode::Lstm);
    let gru = ratios(&|p| p.cell == Mode::Gru);
    let lstm_b1 = ratios(&|p| p.cell == Mode::Lstm && p.batch == 1);
    let worst = |v: &[f64]| v.iter().copied().reduce(f64::max);
    [
        ("LSTM geometric mean <= 0.9x PyTorch", geomean(&lstm), 0.9),
        ("LSTM worst case <= 1.1x PyTorch", worst(&lstm), 1.1),
        ("GRU geometric mean <= 0.7x PyTorch", geomean(&gru), 0.7),
        (
            "batch-1 LSTM geometric mean <= 0.8x PyTorch",
            geomean(&lstm_b1),
            0.8,
        ),
    ]
    .into_iter()
    .map(|(target, value, bound)| Target {
        target: target.into(),
        value,
        bound,
        status: match value {
            None => "no rows",
            Some(v) if v <= bound => "met",
            Some(_) => "missed",
        }
        .into(),
    })
    .collect()
}

/// `Intel(R) Xeon(R) Processor` -> `intel-r-xeon-r-processor`: the report's file name.
pub fn cpu_slug(model: &str) -> String {
    let mut s = String::new();
    for c in model.chars() {
        if c.is_ascii_alphanumeric() {
            s.push(c.to_ascii_lowercase());
        } else if !s.ends_with('-') {
            s.push('-');
        }
    }
    let s = s.trim_matches('-').to_string();
    if s.is_empty() {
        "unknown-cpu".into()
    } else {
        s
    }
}

/// The report's file name: [`cpu_slug`] of the model, then the widest kernel the CPU runs
/// (`amd-epyc-avx512`).
pub fn report_slug(cpu_model: &str, isa: &str) -> String {
    format!("{}-{}", cpu_slug(cpu_model), cpu_slug(isa))
}

/// The widest matrix kernel this CPU runs.
pub fn host_isa() -> String {
    rnn_core::kernels::supported()
        .first()
        .map_or_else(|| "portable".into(), |k| k.name().to_string())
}

/// `AuthenticAMD family 25 model 17 stepping 1` from `/proc/cpuinfo`'s first processor.
fn cpu_id() -> Option<String> {
    let text = std::fs::read_to_string("/proc/cpuinfo").ok()?;
    let field = |name: &str| {
        text.lines()
            .find(|l| l.split(':').next().is_some_and(|k| k.trim() == name))
            .and_then(|l| l.split_once(':'))
            .map(|(_, v)| v.trim().to_string())
    };
    Some(format!(
        "{} family {} model {} stepping {}",
        field("vendor_id")?,
        field("cpu family")?,
        field("model")?,
        field("stepping").unwrap_or_else(|| "-".into())
    ))
}

/// The first three fields of `/proc/loadavg`, where there is one.
fn load_avg() -> Option<String> {
    let text = std::fs::read_to_string("/proc/loadavg").ok()?;
    Some(
        text.split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" "),
    )
}

/// Today's UTC date, `YYYY-MM-DD`.
fn utc_date() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs()) as i64;
    // Howard Hinnant's civil_from_days.
    let z = secs.div_euclid(86_400) + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}")
}

fn ms(v: Option<f64>) -> String {
    v.map_or_else(|| "-".into(), |v| format!("{v:.2}"))
}

fn x(v: Option<f64>) -> String {
    v.map_or_else(|| "-".into(), |v| format!("{v:.2}x"))
}

/// One Markdown line of a row.
pub fn markdown_row(r: &GridRow) -> String {
    let p = &r.point;
    format!(
        "| {} | {} | {}x{}x{}x{} | {} | {} | {} | {} | {} | {} | {} / {} | {} | {} |",
        p.cell.as_str(),
        r.mode,
        p.batch,
        p.seq_len,
        p.input,
        p.hidden,
        p.layers,
        if p.bidirectional { "bi" } else { "uni" },
        ms(r.ours_ms),
        ms(r.torch_ms),
        x(r.ratio),
        r.round_ratios
            .iter()
            .map(|v| format!("{v:.2}"))
            .collect::<Vec<_>>()
            .join(", "),
        rate(r.ours_gflops),
        rate(r.torch_gflops),
        r.kernel,
        r.note.replace('|', "\\|").replace(['\n', '\r'], " ")
    )
}

/// A GFLOP/s rate for the rows' table, `-` when unknown.
fn rate(v: Option<f64>) -> String {
    v.map_or_else(|| "-".into(), |v| format!("{v:.0}"))
}

/// The header of the rows' table.
pub const ROWS_HEADER: &str = "| cell | mode | BxTxIxH | layers | dirs | ours ms | PyTorch ms | ours / PyTorch | per round | GFLOP/s ours / PyTorch | kernel | note |\n|---|---|---|---:|---|---:|---:|---:|---|---:|---|---|";

/// The report as Markdown.
pub fn markdown(r: &GridReport) -> String {
    let mut s = format!(
        "# Grid benchmark: {} ({})\n\n\
         {} UTC; `rnn bench --grid --grid-budget-min {} --grid-seed {} --grid-rounds {} --grid-max-rounds {} --grid-spread {}`; rnn {}.\n\
         CPU: {}; widest kernel it runs: {}.\n\
         Ours: {} threads (Rayon), matrix kernels `RNN_KERNEL={}`, used: {}. PyTorch: {}, {} threads.\n\
         {} rows in {:.1} min ({} sampled rows left out at 1.5x the budget); load average (1, 5, 15 min) {} at the start, {} at the end. Each row: {} interleaved rounds (ours, then PyTorch, per round), \
         one more at a time up to {} while its per-round ratios differ by more than {}x (max / min), \
         and a row still differing at that cap gets as many rounds again by the same rule at the end \
         of the run (its note says so); \
         each side warms up for at least {} s (and two iterations) before its timed iterations, \
         which take at least {} s (and the row's iteration count); \
         times the median over rounds of each round's median; the ratio is the median of all its \
         per-round ratios (below 1: ours faster). Input size = hidden size, f32, batch-first; \
         train = forward + mean-square loss + backward.\n\n",
        r.cpu_model,
        r.cpu_isa,
        r.date,
        r.budget_min,
        r.seed,
        r.rounds,
        r.max_rounds,
        r.spread,
        r.rnn_version,
        r.cpu_id.as_deref().unwrap_or("no /proc/cpuinfo"),
        r.cpu_isa,
        r.threads,
        r.kernel_setting,
        r.kernels_used,
        r.torch.as_deref().unwrap_or("not run"),
        r.torch_threads.map_or_else(|| "-".into(), |t| t.to_string()),
        r.rows.len(),
        r.wall_min,
        r.skipped_rows,
        r.load_avg[0].as_deref().unwrap_or("-"),
        r.load_avg[1].as_deref().unwrap_or("-"),
        r.rounds,
        r.max_rounds,
        r.spread,
        r.warmup_s,
        r.min_time_s,
    );
    s.push_str("## Targets (issue 28)\n\n| target | measured | status |\n|---|---:|---|\n");
    for t in &r.targets {
        s.push_str(&format!(
            "| {} | {} | {} |\n",
            t.target,
            x(t.value),
            t.status
        ));
    }
    s.push_str(
        "\n## Per cell and mode\n\n| cell | mode | rows | geometric mean | worst | worst row |\n|---|---|---:|---:|---:|---|\n",
    );
    for m in &r.summary {
        s.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} |\n",
            m.cell,
            m.mode,
            m.rows,
            x(m.geomean),
            x(m.worst),
            m.worst_row.as_deref().unwrap_or("-")
        ));
    }
    s.push_str("\n## Rows\n\n");
    s.push_str(ROWS_HEADER);
    s.push('\n');
    for row in &r.rows {
        s.push_str(&markdown_row(row));
        s.push('\n');
    }
    s
}

/// Writes `<dir>/<cpu-slug>-<isa>.md` and `.json`; returns both paths.
pub fn write_report(r: &GridReport, dir: &Path) -> Result<(PathBuf, PathBuf)> {
    std::fs::create_dir_all(dir)
        .with_context(|| format!("--grid-out: cannot create {}", dir.display()))?;
    let slug = report_slug(&r.cpu_model, &r.cpu_isa);
    let md = dir.join(format!("{slug}.md"));
    let json = dir.join(format!("{slug}.json"));
    std::fs::write(&md, markdown(r))
        .with_context(|| format!("--grid-out: cannot write {}", md.display()))?;
    std::fs::write(&json, serde_json::to_string_pretty(r)? + "\n")
        .with_context(|| format!("--grid-out: cannot write {}", json.display()))?;
    Ok((md, json))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sample_is_seeded_covers_every_cell_and_mode_and_fits_the_budget() {
        let spec = GridSpec {
            pytorch: Some("python".into()),
            ..GridSpec::issue_28()
        };
        let a = sample(&spec);
        assert_eq!(a, sample(&spec), "same seed, same rows");
        let other = sample(&GridSpec {
            seed: 1,
            ..spec.clone()
        });
        assert_ne!(a, other, "another seed, other rows");
        let cost: f64 = a.iter().map(|p| p.cost_s(spec.rounds, true)).sum();
        assert!(cost <= 20.0 * 60.0 && cost > 15.0 * 60.0, "{cost}");
        for cell in [Mode::Lstm, Mode::Gru, Mode::RnnTanh] {
            for train in [true, false] {
                let n = a
                    .iter()
                    .filter(|p| p.cell == cell && p.train == train)
                    .count();
                assert!(n >= 3, "{cell:?} train {train}: {n} rows");
            }
        }
        assert!(a.iter().any(|p| p.cell == Mode::Lstm && p.batch == 1));
        // No row twice.
        for (i, p) in a.iter().enumerate() {
            assert!(!a[i + 1..].contains(p), "{p:?} twice");
        }
        // A larger budget takes more rows.
        let more = sample(&GridSpec {
            budget_min: 40.0,
            ..spec
        });
        assert!(more.len() > a.len());
    }

    #[test]
    fn rounds_that_disagree_ask_for_more_either_way() {
        assert!(!wants_more_rounds(&[], 1.25));
        assert!(!wants_more_rounds(&[3.0], 1.25));
        assert!(!wants_more_rounds(&[1.0, 1.2], 1.25));
        assert!(!wants_more_rounds(&[1.2, 1.0, 1.1], 1.25));
        // An outlier round above or below asks for more, whichever side it favours.
        assert!(wants_more_rounds(&[0.8, 1.51], 1.25));
        assert!(wants_more_rounds(&[1.51, 0.8], 1.25));
        assert!(wants_more_rounds(&[0.9, 0.6], 1.25));
        assert!(!wants_more_rounds(&[0.9, 0.6], 2.0));
        // A zero ratio (a timer at its resolution) does not loop.
        assert!(!wants_more_rounds(&[0.0, 1.0], 1.25));
    }

    #[test]
    fn flops_count_layers_directions_and_the_backward() {
        let p = Point {
            cell: Mode::Lstm,
            train: false,
            batch: 2,
            seq_len: 3,
            input: 5,
            hidden: 7,
            layers: 1,
            bidirectional: false,
        };
        assert_eq!(p.flops(), 2.0 * 6.0 * 12.0 * 28.0);
        let train = Point { train: true, ..p };
        assert_eq!(train.flops(), 3.0 * p.flops());
        let bi2 = Point {
            layers: 2,
            bidirectional: true,
            ..p
        };
        // Layer 2 reads both directions of layer 1.
        assert_eq!(
            bi2.flops(),
            2.0 * 6.0 * 12.0 * 28.0 * 2.0 + 2.0 * 6.0 * 21.0 * 28.0 * 2.0
        );
    }

    #[test]
    fn slugs_dates_and_targets() {
        assert_eq!(
            cpu_slug("Intel(R) Xeon(R) Processor"),
            "intel-r-xeon-r-processor"
        );
        assert_eq!(
            cpu_slug("AMD EPYC 7B13 64-Core Processor"),
            "amd-epyc-7b13-64-core-processor"
        );
        assert_eq!(cpu_slug("()"), "unknown-cpu");
        assert_eq!(report_slug("AMD EPYC", "avx512"), "amd-epyc-avx512");
        assert!(["avx512", "avx2", "portable"].contains(&host_isa().as_str()));
        let d = utc_date();
        assert!(
            d.len() == 10 && d.as_bytes()[4] == b'-' && d.starts_with("20"),
            "{d}"
        );
        let row = |cell, batch, ratio: f64| GridRow {
            point: Point {
                cell,
                train: true,
                batch,
                seq_len: 1,
                input: 1,
                hidden: 1,
                layers: 1,
                bidirectional: false,
            },
            mode: "train".into(),
            iters: 1,
            ours_ms: Some(ratio),
            torch_ms: Some(1.0),
            ratio: Some(ratio),
            ours_gflops: None,
            torch_gflops: None,
            round_ratios: vec![ratio],
            rounds: 1,
            late_rounds: 0,
            kernel: "avx2".into(),
            note: String::new(),
        };
        let rows = [
            row(Mode::Lstm, 1, 0.5),
            row(Mode::Lstm, 8, 2.0),
            row(Mode::Lstm, 8, 1.0),
            row(Mode::Gru, 8, 0.6),
        ];
        let t = targets(&rows);
        let by = |name: &str| t.iter().find(|t| t.target.starts_with(name)).unwrap();
        // (0.5 * 2 * 1)^(1/3) = 1 > 0.9.
        assert!((by("LSTM geometric").value.unwrap() - 1.0).abs() < 1e-12);
        assert_eq!(by("LSTM geometric").status, "missed");
        assert_eq!(by("LSTM worst").status, "missed");
        assert_eq!(by("LSTM worst").value, Some(2.0));
        assert_eq!(by("GRU").status, "met");
        assert_eq!(by("batch-1").value, Some(0.5));
        assert_eq!(targets(&[])[0].status, "no rows");
    }
}
