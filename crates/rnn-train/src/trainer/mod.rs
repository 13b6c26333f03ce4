//! The training loop: a [`Trainer`] drives any [`TrainTask`] (a model with its data) through
//! epochs or a step budget with an optimiser, a learning-rate schedule, gradient clipping,
//! periodic evaluation, early stopping, truncated BPTT (state carried from batch to batch and
//! detached), non-finite detection, a progress bar, a JSON-lines log, learning-curve plots and
//! atomic, exactly resumable checkpoints.
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

pub use config::{EarlyStopping, NonFinitePolicy, TrainerConfig};
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
