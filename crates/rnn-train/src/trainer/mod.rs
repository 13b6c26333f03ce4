//! The training loop: a [`Trainer`] drives any [`TrainTask`] (a model with its data) through
//! epochs or a step budget with an optimiser, a learning-rate schedule, gradient clipping,
//! periodic evaluation, early stopping, truncated BPTT (state carried from batch to batch and
//! detached), non-finite detection, a progress bar, a JSON-lines log, learning-curve plots and
//! atomic, exactly resumable checkpoints.
//!
//! # Example
//!
//! A GRU with a linear head learns the mean of short sequences. The task owns the model and the
//! data; the trainer owns the loop.
//!
//! ```
//! use candle_core::{DType, Device, Module, Tensor};
//! use candle_nn::{Linear, VarMap};
//! use rnn_core::{init::seeded_var_builder, Mode, Rnn, RnnConfig, RnnState};
//! use rnn_train::optim::{AdamWConfig, OptimizerConfig};
//! use rnn_train::trainer::{Evaluation, StepLoss, TrainTask, Trainer, TrainerConfig, LATEST_DIR};
//!
//! struct MeanTask { rnn: Rnn, head: Linear, xs: Tensor, ys: Tensor } // xs (64, 6, 1), ys (64, 1)
//!
//! impl MeanTask {
//!     /// Mean squared error of the prediction from the last step's output.
//!     fn loss(&self, xs: &Tensor, ys: &Tensor, train: bool) -> candle_core::Result<Tensor> {
//!         let (out, _) = self.rnn.forward_t(xs, None, None, train)?; // (batch, seq_len, hidden)
//!         let last = out.narrow(1, out.dim(1)? - 1, 1)?.squeeze(1)?;
//!         candle_nn::loss::mse(&self.head.forward(&last)?, ys)
//!     }
//! }
//!
//! impl TrainTask for MeanTask {
//!     type Batch = usize; // batch b is rows 8 b .. 8 b + 8
//!     fn train_batches(&mut self, _epoch: u64, _seed: u64) -> rnn_train::Result<Vec<usize>> {
//!         Ok((0..6).collect()) // rows 48..64 are held out for validation
//!     }
//!     fn train_step(&mut self, b: &usize, _carry: &mut Option<RnnState>) -> rnn_train::Result<StepLoss> {
//!         let (xs, ys) = (self.xs.narrow(0, 8 * b, 8)?, self.ys.narrow(0, 8 * b, 8)?);
//!         Ok(StepLoss { loss: self.loss(&xs, &ys, true)?, units: 8 })
//!     }
//!     fn evaluate(&mut self) -> rnn_train::Result<Evaluation> {
//!         let (xs, ys) = (self.xs.narrow(0, 48, 16)?, self.ys.narrow(0, 48, 16)?);
//!         Ok(Evaluation::from_loss(self.loss(&xs, &ys, false)?.to_scalar::<f32>()? as f64))
//!     }
//! }
//!
//! fn main() -> Result<(), Box<dyn std::error::Error>> {
//!     let dev = Device::Cpu;
//!     let varmap = VarMap::new();
//!     let vb = seeded_var_builder(&varmap, 0, DType::F32, &dev);
//!     let rnn = Rnn::new(&RnnConfig::new(Mode::Gru, 1, 8), vb.pp("rnn"))?;
//!     let head = candle_nn::linear(8, 1, vb.pp("head"))?;
//!     let xs = Tensor::arange(0f32, 384., &dev)?.affine(1.7, 0.)?.sin()?.reshape((64, 6, 1))?;
//!     let ys = xs.mean(1)?; // the target: each sequence's mean, (64, 1)
//!     let mut task = MeanTask { rnn, head, xs, ys };
//!     let before = task.evaluate()?.loss;
//!
//!     let config = TrainerConfig {
//!         optimizer: OptimizerConfig::AdamW(AdamWConfig::with_lr(0.02)),
//!         epochs: Some(4),
//!         clip_grad_norm: Some(1.0),
//!         plot: false,
//!         ..TrainerConfig::default()
//!     };
//!     let out = tempfile::tempdir()?;
//!     let mut trainer = Trainer::new(config, varmap)?.with_out_dir(out.path())?;
//!     let report = trainer.fit(&mut task)?;
//!
//!     assert_eq!((report.steps, report.epochs), (24, 4)); // 6 batches an epoch
//!     assert_eq!(report.history.len(), 4); // one evaluation at the end of every epoch
//!     let last = report.last.as_ref().ok_or("no evaluation")?;
//!     assert!(last.valid_loss < before / 4.0, "{before} -> {}", last.valid_loss);
//!     println!("{}", report.summary()); // step 24, epoch 4.00: valid_loss 0.0018 (best ...)
//!     assert!(out.path().join(LATEST_DIR).join("model.safetensors").exists());
//!     Ok(())
//! }
//! ```
//!
//! # Output directory
//!
//! With [`Trainer::with_out_dir`], a run writes:
//!
//! | path | content |
//! |---|---|
//! | `checkpoint/` | the latest checkpoint (see [`crate::checkpoint`]), after every evaluation and every `checkpoint_every` steps |
//! | `best/` | the checkpoint with the best main metric so far (if `save_best`) |
//! | `metrics.jsonl` | one [`EvalRecord`] per evaluation |
//! | `learning_curves.png`, `.svg` | train / validation loss and the main metric against the step |
//!
//! # Exact resumption
//!
//! Batches of epoch `e` come from [`TrainTask::train_batches`]`(e, seed)`, so a resumed run can
//! rebuild the epoch it stopped in and skip the batches already seen. The checkpoint holds the
//! parameters, the optimiser and schedule state, the loop's position and running sums, the
//! model's random-number counters and the carried recurrent state, all bit-exact: on the CPU a
//! run resumed from step `k` ends with the same parameters, bit for bit, and the same
//! `metrics.jsonl` as an uninterrupted run. Nothing time-dependent goes into the log.
//!
//! With the `MeanTask` of the [example](self#example) (hidden here), a run stopped after 2
//! epochs and resumed for 2 more ends with the parameters of a run of 4 epochs:
//!
//! ```
//! # use candle_core::{DType, Device, Module, Tensor};
//! # use candle_nn::{Linear, VarMap};
//! # use rnn_core::{init::seeded_var_builder, Mode, Rnn, RnnConfig, RnnState};
//! # use rnn_train::trainer::{Evaluation, StepLoss, TrainTask};
//! # struct MeanTask { rnn: Rnn, head: Linear, xs: Tensor, ys: Tensor }
//! # impl MeanTask {
//! #     fn loss(&self, xs: &Tensor, ys: &Tensor, train: bool) -> candle_core::Result<Tensor> {
//! #         let (out, _) = self.rnn.forward_t(xs, None, None, train)?;
//! #         let last = out.narrow(1, out.dim(1)? - 1, 1)?.squeeze(1)?;
//! #         candle_nn::loss::mse(&self.head.forward(&last)?, ys)
//! #     }
//! # }
//! # impl TrainTask for MeanTask {
//! #     type Batch = usize;
//! #     fn train_batches(&mut self, _epoch: u64, _seed: u64) -> rnn_train::Result<Vec<usize>> {
//! #         Ok((0..6).collect())
//! #     }
//! #     fn train_step(&mut self, b: &usize, _carry: &mut Option<RnnState>) -> rnn_train::Result<StepLoss> {
//! #         let (xs, ys) = (self.xs.narrow(0, 8 * b, 8)?, self.ys.narrow(0, 8 * b, 8)?);
//! #         Ok(StepLoss { loss: self.loss(&xs, &ys, true)?, units: 8 })
//! #     }
//! #     fn evaluate(&mut self) -> rnn_train::Result<Evaluation> {
//! #         let (xs, ys) = (self.xs.narrow(0, 48, 16)?, self.ys.narrow(0, 48, 16)?);
//! #         Ok(Evaluation::from_loss(self.loss(&xs, &ys, false)?.to_scalar::<f32>()? as f64))
//! #     }
//! # }
//! use rnn_train::checkpoint::varmap_tensors;
//! use rnn_train::trainer::{Trainer, TrainerConfig, LATEST_DIR};
//!
//! /// A fresh model (same seed, so the same initial weights) and its task.
//! fn build() -> candle_core::Result<(VarMap, MeanTask)> {
//!     let (dev, varmap) = (Device::Cpu, VarMap::new());
//!     let vb = seeded_var_builder(&varmap, 0, DType::F32, &dev);
//!     let rnn = Rnn::new(&RnnConfig::new(Mode::Gru, 1, 8), vb.pp("rnn"))?;
//!     let head = candle_nn::linear(8, 1, vb.pp("head"))?;
//!     let xs = Tensor::arange(0f32, 384., &dev)?.affine(1.7, 0.)?.sin()?.reshape((64, 6, 1))?;
//!     let ys = xs.mean(1)?;
//!     Ok((varmap, MeanTask { rnn, head, xs, ys }))
//! }
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let config = |epochs| TrainerConfig { epochs: Some(epochs), plot: false, ..Default::default() };
//! let out = tempfile::tempdir()?;
//! let (varmap, mut task) = build()?;
//! Trainer::new(config(2), varmap)?.with_out_dir(out.path())?.fit(&mut task)?;
//!
//! // Later, in another process: rebuild, resume from the latest checkpoint, train on.
//! let (resumed, mut task) = build()?;
//! let mut trainer = Trainer::new(config(4), resumed.clone())?;
//! trainer.resume(&out.path().join(LATEST_DIR))?;
//! assert_eq!(trainer.step(), 12); // where the first run stopped
//! assert_eq!(trainer.fit(&mut task)?.steps, 24);
//!
//! let (straight, mut task) = build()?;
//! Trainer::new(config(4), straight.clone())?.fit(&mut task)?;
//! let (a, b) = (varmap_tensors(&resumed)?, varmap_tensors(&straight)?);
//! for (name, t) in &a {
//!     // Bit for bit: the same f32 values.
//!     assert_eq!(t.flatten_all()?.to_vec1::<f32>()?, b[name].flatten_all()?.to_vec1::<f32>()?, "{name}");
//! }
//! # Ok(())
//! # }
//! ```
//!
//! # Data parallelism and gradient accumulation
//!
//! [`Trainer::with_collective`] makes the trainer one rank of a data-parallel group (DDP
//! semantics; backends in [`crate::collective`]), and [`TrainerConfig::grad_accum`] splits each
//! step into micro-batches. Every rank builds the same model and task. Then:
//!
//! - rank 0's parameters are broadcast at the start of [`Trainer::fit`];
//! - every global batch (what [`TrainTask::train_batches`] returns) is split into
//!   `ranks x grad_accum` contiguous [`Part`]s; rank `r` trains parts `r * K .. r * K + K`
//!   ([`TrainTask::train_part`]), so the batch size is the global one;
//! - the gradients are flattened in sorted-name order, weighted by each part's units, all-reduced
//!   once per step and divided by the global units, before clipping and the optimiser: clipping
//!   sees the global norm, and the step is the step of the whole batch. `N` ranks equal one
//!   process with `grad_accum = N` bit for bit (parameters, log and checkpoints, dropout
//!   included), and one process with the whole batch up to float rounding;
//! - only rank 0 evaluates; its result is broadcast (exact bits), so the schedule, the best
//!   checkpoint, early stopping and the non-finite checks (on the reduced values) decide the same
//!   on every rank;
//! - only rank 0 writes checkpoints, `metrics.jsonl`, plots and progress. The carried recurrent
//!   state is gathered into the checkpoint as the whole batch's, so a data-parallel checkpoint
//!   is a single-process one, and any checkpoint resumes with any number of ranks or
//!   micro-batches;
//! - ranks whose epochs have different batch counts stop with an error, and a rank that fails
//!   makes the others fail instead of waiting.
//!
//! # Host synchronisation
//!
//! Each step's loss, gradient norm and per-parameter finiteness markers stay on the device and
//! are read back together, as one small tensor, every [`TrainerConfig::host_sync_every`] steps:
//! every step on the CPU (where reading is free and a NaN is caught before the update), every
//! 25 steps by default on CUDA and Metal (so the device never waits for the host inside that
//! window). Clipping runs on the device too. A non-finite loss or gradient is still reported
//! at the exact step it happened; with deferred reads the parameters in memory may have taken
//! a few bad updates by then, so the trainer refuses to write any further checkpoint (the last
//! one on disk predates the fault). The `skip` policy decides before each update, so it reads
//! every step.

mod average;
mod checkpoints;
mod config;
mod evaluation;
mod fit;
mod parallel;
mod report;

use std::path::PathBuf;
use std::sync::Arc;

use candle_core::{Tensor, Var};
use candle_nn::VarMap;
use rnn_core::RnnState;
use serde::{Deserialize, Serialize};

use crate::collective::{Collective, Solo};
use crate::optim::{self, exact_f64, LrSchedule, LrScheduleState, StatefulOptimizer};
use crate::{Error, Result};

pub use config::{EarlyStopping, NonFinitePolicy, TrainerConfig, WeightAverage};
pub use evaluation::{Evaluation, MainMetric};
pub use report::{EvalRecord, FitReport};

/// Name of the latest checkpoint directory inside the output directory.
pub const LATEST_DIR: &str = "checkpoint";
/// Name of the best checkpoint directory inside the output directory.
pub const BEST_DIR: &str = "best";
/// Name of the evaluation log inside the output directory.
pub const METRICS_FILE: &str = "metrics.jsonl";
/// Stem of the learning-curve plots inside the output directory (`.png` and `.svg`).
pub const CURVES_STEM: &str = "learning_curves";

/// A model with its data, as the [`Trainer`] sees it.
pub trait TrainTask {
    /// One training batch.
    type Batch;

    /// The training batches of epoch `epoch` (0-based) in order. Must depend only on `epoch`
    /// and `seed` (shuffle with a generator seeded from both), so that a resumed run can rebuild
    /// the epoch it stopped in.
    fn train_batches(&mut self, epoch: u64, seed: u64) -> Result<Vec<Self::Batch>>;

    /// The forward pass and loss of one training batch (with training-mode dropout).
    ///
    /// `carry` is the recurrent state left by the previous batch of the same epoch (`None` at
    /// the start of an epoch): a task doing truncated BPTT starts from it and stores its final
    /// state back; the trainer detaches it after the step, so gradients stop at the window
    /// boundary. Tasks without carried state ignore it.
    fn train_step(&mut self, batch: &Self::Batch, carry: &mut Option<RnnState>)
        -> Result<StepLoss>;

    /// The forward pass and loss of part `part` of a global batch, for data-parallel training
    /// and gradient accumulation: rank `r` of `N` with `K` micro-batches per step computes parts
    /// `r * K .. r * K + K` of `N * K`. A part is a contiguous share of the batch's rows (see
    /// [`Part::rows`]), so the parts together are exactly the batch, and `carry` is the part's
    /// own carried state (the same rows of the whole batch's state).
    ///
    /// A part with no rows returns a zero loss with `units == 0`; the trainer weights every
    /// part's gradient by its units, so the step equals one step on the whole batch.
    ///
    /// The default calls [`TrainTask::train_step`] for a single part and refuses to split.
    fn train_part(
        &mut self,
        batch: &Self::Batch,
        part: Part,
        carry: &mut Option<RnnState>,
    ) -> Result<StepLoss> {
        if part.count == 1 {
            return self.train_step(batch, carry);
        }
        Err(Error::Invalid(format!(
            "this task cannot split its batches into {} parts (data-parallel ranks x gradient accumulation); train it in one process without --grad-accum",
            part.count
        )))
    }

    /// Evaluates on the validation data (no dropout, no gradient needed).
    fn evaluate(&mut self) -> Result<Evaluation>;

    /// What a batch counts for throughput: `"tokens"` or `"samples"`.
    fn unit(&self) -> &'static str {
        "samples"
    }

    /// Seeds the model's random sources (dropout) at the start of a fresh run.
    fn set_seed(&mut self, _seed: u64) {}

    /// The positions of the model's random sources, saved in checkpoints.
    fn rng_counters(&self) -> Vec<u64> {
        Vec::new()
    }

    /// Restores [`TrainTask::rng_counters`] when resuming.
    fn set_rng_counters(&mut self, _counters: &[u64]) -> Result<()> {
        Ok(())
    }

    /// The model's configuration (and anything else needed to rebuild it), saved as the
    /// `model` entry of the checkpoint's `config.json`.
    fn checkpoint_config(&self) -> serde_json::Value {
        serde_json::Value::Null
    }

    /// Further files for the checkpoint (vocabulary, tokenizer), as (file name, bytes).
    fn checkpoint_files(&self) -> Vec<(String, Vec<u8>)> {
        Vec::new()
    }
}

/// Which share of a global batch a rank or micro-batch trains on: part `index` of `count`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Part {
    /// This part, in `0..count`.
    pub index: usize,
    /// How many parts the global batch is split into (ranks x micro-batches).
    pub count: usize,
}

impl Part {
    /// The whole batch.
    pub const WHOLE: Part = Part { index: 0, count: 1 };

    /// This part's rows of a batch of `n` rows: contiguous, in order, sizes differing by at
    /// most one (the first `n % count` parts have one more). Empty when `n < count`.
    pub fn rows(&self, n: usize) -> std::ops::Range<usize> {
        let base = n / self.count;
        let extra = n % self.count;
        let start = self.index * base + self.index.min(extra);
        let len = base + usize::from(self.index < extra);
        start..start + len
    }

    /// Rows `self.rows(n)` of `t` along `dim` (of size `n`).
    pub fn narrow(&self, t: &Tensor, dim: usize) -> Result<Tensor> {
        let r = self.rows(t.dim(dim)?);
        Ok(t.narrow(dim, r.start, r.len())?)
    }

    /// The carried state's rows of this part (batch dimension 1 of `h` and `c`).
    pub fn narrow_state(&self, state: &RnnState) -> Result<RnnState> {
        Ok(RnnState::new(
            self.narrow(&state.h, 1)?,
            state.c.as_ref().map(|c| self.narrow(c, 1)).transpose()?,
        ))
    }
}

/// The loss of one training batch.
#[derive(Debug, Clone)]
pub struct StepLoss {
    /// The mean loss, a scalar tensor the trainer backpropagates.
    pub loss: Tensor,
    /// What the batch counts (tokens or samples), for throughput and for weighting the mean
    /// training loss reported at each evaluation.
    pub units: u64,
}

/// The loop's resumable position and running sums (saved in `state.json` under `trainer`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct LoopState {
    epoch: u64,
    batch_in_epoch: u64,
    step: u64,
    best: Option<MainMetric>,
    bad_evals: u64,
    skipped_steps: u64,
    #[serde(with = "exact_f64")]
    loss_sum: f64,
    loss_units: u64,
    #[serde(with = "exact_f64")]
    grad_norm_sum: f64,
    grad_norm_count: u64,
    rng_counters: Vec<u64>,
    schedule: Option<LrScheduleState>,
    stopped_early: bool,
    last_eval_step: Option<u64>,
    /// Steps in the weight average so far (see [`WeightAverage`]).
    #[serde(default)]
    average_count: u64,
}

impl LoopState {
    fn new() -> Self {
        Self {
            epoch: 0,
            batch_in_epoch: 0,
            step: 0,
            best: None,
            bad_evals: 0,
            skipped_steps: 0,
            loss_sum: 0.0,
            loss_units: 0,
            grad_norm_sum: 0.0,
            grad_norm_count: 0,
            rng_counters: Vec::new(),
            schedule: None,
            stopped_early: false,
            last_eval_step: None,
            average_count: 0,
        }
    }
}

/// The training loop over the parameters of one [`VarMap`].
pub struct Trainer {
    config: TrainerConfig,
    varmap: VarMap,
    params: Vec<(String, Var)>,
    vars: Vec<Var>,
    optimizer: Box<dyn StatefulOptimizer + Send>,
    schedule: Box<dyn LrSchedule + Send>,
    state: LoopState,
    out_dir: Option<PathBuf>,
    history: Vec<EvalRecord>,
    /// The carried state of each of this rank's micro-batches (`grad_accum` of them).
    carries: Vec<Option<RnnState>>,
    /// The data-parallel group ([`Solo`] when training in one process).
    collective: Arc<dyn Collective>,
    resumed: bool,
    /// Steps whose statistics are still on the device (see [`PendingStep`]).
    pending: Vec<PendingStep>,
    /// The step at which a non-finite value was found after its update (deferred reads);
    /// no checkpoint is written from then on.
    poisoned: Option<u64>,
    /// When this process started training (for the elapsed time on progress lines only).
    started: std::time::Instant,
    /// The weight average, one tensor per parameter in `vars`' order, once it has started.
    average: Option<Vec<Tensor>>,
}

/// A step whose loss and checks have not been read back yet: `stats` holds, on the device,
/// `[loss, grad_norm (0 without norm clipping), marker per parameter...]`, where a marker is 0
/// for a finite gradient and NaN otherwise.
struct PendingStep {
    step: u64,
    units: u64,
    stats: Tensor,
}

/// What a step's statistics say once read.
enum StepCheck {
    Finite { loss: f64, norm: Option<f64> },
    NonFinite { what: String, value: Option<f64> },
}

impl Trainer {
    /// A trainer for the parameters in `varmap` (all of them are trained).
    pub fn new(config: TrainerConfig, varmap: VarMap) -> Result<Self> {
        config.validate()?;
        let params = optim::named_vars(&varmap)?;
        if params.is_empty() {
            return Err(Error::Invalid(
                "Trainer: the VarMap has no parameters (build the model before the trainer)".into(),
            ));
        }
        let vars = params.iter().map(|(_, v)| v.clone()).collect();
        let optimizer = config.optimizer.build(params.clone())?;
        let schedule = config.schedule.build(config.optimizer.lr())?;
        let accum = config.grad_accum as usize;
        Ok(Self {
            config,
            varmap,
            params,
            vars,
            optimizer,
            schedule,
            state: LoopState::new(),
            out_dir: None,
            history: Vec::new(),
            carries: vec![None; accum],
            collective: Arc::new(Solo),
            resumed: false,
            pending: Vec::new(),
            poisoned: None,
            started: std::time::Instant::now(),
            average: None,
        })
    }

    /// Writes checkpoints, `metrics.jsonl` and plots into `dir` (created if needed).
    pub fn with_out_dir(mut self, dir: impl Into<PathBuf>) -> Result<Self> {
        let dir = dir.into();
        std::fs::create_dir_all(&dir).map_err(|source| Error::Io {
            path: dir.clone(),
            source,
        })?;
        self.out_dir = Some(dir);
        Ok(self)
    }

    /// Trains as one rank of a data-parallel group (see the module documentation, "Data
    /// parallelism"). Every rank builds the same model and task and calls [`Trainer::fit`];
    /// rank 0's parameters are broadcast at the start, and only rank 0 writes into its output
    /// directory.
    pub fn with_collective(mut self, collective: Arc<dyn Collective>) -> Self {
        self.collective = collective;
        self
    }

    /// This process's rank and the group's size (`(0, 1)` without [`Trainer::with_collective`]).
    pub fn rank_and_world(&self) -> (usize, usize) {
        (self.collective.rank(), self.collective.world_size())
    }

    /// The output directory this rank writes into: the configured one on rank 0, none on the
    /// other ranks.
    fn writer_dir(&self) -> Option<&PathBuf> {
        self.out_dir
            .as_ref()
            .filter(|_| self.collective.rank() == 0)
    }

    /// The configuration.
    pub fn config(&self) -> &TrainerConfig {
        &self.config
    }

    /// Steps taken so far.
    pub fn step(&self) -> u64 {
        self.state.step
    }

    /// The learning rate of the next step.
    pub fn lr(&self) -> f64 {
        self.optimizer.lr()
    }
}

#[cfg(test)]
mod part_tests {
    use super::Part;

    #[test]
    fn parts_cover_the_rows_in_order_with_sizes_within_one() {
        for n in 0..20 {
            for count in 1..7 {
                let mut next = 0;
                for index in 0..count {
                    let r = Part { index, count }.rows(n);
                    assert_eq!(r.start, next, "n {n} count {count} index {index}");
                    assert!(r.len() == n / count || r.len() == n / count + 1);
                    next = r.end;
                }
                assert_eq!(next, n);
            }
        }
        assert_eq!(Part::WHOLE.rows(5), 0..5);
        assert_eq!(Part { index: 1, count: 2 }.rows(5), 3..5);
    }
}
