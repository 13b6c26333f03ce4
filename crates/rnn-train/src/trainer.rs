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

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use candle_core::{DType, Tensor, Var};
use candle_nn::VarMap;
use rnn_core::RnnState;
use serde::{Deserialize, Serialize};

use crate::checkpoint::{self, TrainState};
use crate::optim::{
    self, clip_grad_norm_tensor, clip_grad_value, exact_f64, non_finite_markers, LrSchedule,
    LrScheduleConfig, LrScheduleState, Optimizer, OptimizerConfig, OptimizerState,
};
use crate::progress::{JsonlLog, Progress};
use crate::{Error, Result};

/// Name of the latest checkpoint directory inside the output directory.
pub const LATEST_DIR: &str = "checkpoint";
/// Name of the best checkpoint directory inside the output directory.
pub const BEST_DIR: &str = "best";
/// Name of the evaluation log inside the output directory.
pub const METRICS_FILE: &str = "metrics.jsonl";
/// Stem of the learning-curve plots inside the output directory (`.png` and `.svg`).
pub const CURVES_STEM: &str = "learning_curves";

/// Prefix of the trainer's own tensors (the carried state) in the checkpoint's tensor file.
const CARRY_PREFIX: &str = "trainer.carry.";

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

/// The loss of one training batch.
#[derive(Debug, Clone)]
pub struct StepLoss {
    /// The mean loss, a scalar tensor the trainer backpropagates.
    pub loss: Tensor,
    /// What the batch counts (tokens or samples), for throughput and for weighting the mean
    /// training loss reported at each evaluation.
    pub units: u64,
}

/// The headline metric of an evaluation, used for the best checkpoint and early stopping.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MainMetric {
    /// Its name (`accuracy`, `perplexity`, `valid_loss`, ...).
    pub name: String,
    /// Its value.
    pub value: f64,
    /// Whether larger is better (accuracy) or smaller (loss, perplexity, RMSE).
    pub higher_is_better: bool,
}

/// The result of [`TrainTask::evaluate`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Evaluation {
    /// Mean validation loss (the quantity the training loss measures).
    pub loss: f64,
    /// Further metrics by name.
    pub metrics: BTreeMap<String, f64>,
    /// The metric that decides the best checkpoint and early stopping; `None` = the validation
    /// loss (lower is better).
    pub main: Option<MainMetric>,
}

impl Evaluation {
    /// An evaluation with only a loss.
    pub fn from_loss(loss: f64) -> Self {
        Self {
            loss,
            metrics: BTreeMap::new(),
            main: None,
        }
    }

    /// The main metric, defaulting to the validation loss.
    pub fn main_metric(&self) -> MainMetric {
        self.main.clone().unwrap_or(MainMetric {
            name: "valid_loss".to_string(),
            value: self.loss,
            higher_is_better: false,
        })
    }
}

/// What to do when a loss or gradient is NaN or infinite.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NonFinitePolicy {
    /// Stop with [`Error::NonFinite`] naming the step (the default).
    #[default]
    Stop,
    /// Skip the step (no update, carried state reset), count it in the log, and go on.
    Skip,
}

/// Early stopping on the main metric.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EarlyStopping {
    /// Evaluations without improvement tolerated; the next one stops training.
    pub patience: u64,
    /// Improvement needed to count (absolute, in the metric's units).
    #[serde(default)]
    pub min_delta: f64,
}

/// The training configuration (JSON / TOML with these keys; every key optional).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TrainerConfig {
    /// Optimiser and its hyper-parameters (default AdamW, lr 1e-3).
    pub optimizer: OptimizerConfig,
    /// Learning-rate schedule (default constant).
    pub schedule: LrScheduleConfig,
    /// Clip the global gradient norm to this value (PyTorch `clip_grad_norm_`).
    pub clip_grad_norm: Option<f64>,
    /// Clip every gradient element to `[-v, v]` (applied before norm clipping).
    pub clip_grad_value: Option<f64>,
    /// Number of epochs (passes over the training batches).
    pub epochs: Option<u64>,
    /// Stop after this many steps (batches), whichever of the two budgets ends first.
    pub max_steps: Option<u64>,
    /// Evaluate every this many steps, besides at the end of every epoch.
    pub eval_every: Option<u64>,
    /// Write the latest checkpoint every this many steps, besides after every evaluation.
    pub checkpoint_every: Option<u64>,
    /// Stop when the main metric has not improved for `patience` evaluations.
    pub early_stopping: Option<EarlyStopping>,
    /// Seed of the run (batch order, dropout masks).
    pub seed: u64,
    /// NaN / infinity handling.
    pub on_non_finite: NonFinitePolicy,
    /// Keep a `best/` checkpoint of the best main metric.
    pub save_best: bool,
    /// Show a progress bar (only ever drawn when stderr is a terminal).
    pub progress: bool,
    /// Write learning-curve plots after every evaluation.
    pub plot: bool,
    /// Read the step's loss and finiteness checks back to the host every this many steps
    /// (default: 1 on the CPU, 25 on accelerators; the `skip` policy always reads every step).
    /// Evaluations, checkpoints and the end of training always read first.
    pub host_sync_every: Option<u64>,
}

impl Default for TrainerConfig {
    fn default() -> Self {
        Self {
            optimizer: OptimizerConfig::AdamW(Default::default()),
            schedule: LrScheduleConfig::Constant,
            clip_grad_norm: None,
            clip_grad_value: None,
            epochs: Some(1),
            max_steps: None,
            eval_every: None,
            checkpoint_every: None,
            early_stopping: None,
            seed: 0,
            on_non_finite: NonFinitePolicy::Stop,
            save_best: true,
            progress: true,
            plot: true,
            host_sync_every: None,
        }
    }
}

impl TrainerConfig {
    /// Checks every option; errors name the key.
    pub fn validate(&self) -> Result<()> {
        self.optimizer.validate()?;
        self.schedule.validate(self.optimizer.lr())?;
        let bad = |key: &str, msg: String| Err(Error::Invalid(format!("trainer `{key}`: {msg}")));
        for (key, v) in [
            ("clip_grad_norm", self.clip_grad_norm),
            ("clip_grad_value", self.clip_grad_value),
        ] {
            if let Some(v) = v {
                if !(v.is_finite() && v > 0.0) {
                    return bad(key, format!("must be a positive number, got {v}"));
                }
            }
        }
        if self.epochs.is_none() && self.max_steps.is_none() {
            return bad(
                "epochs",
                "give `epochs` or `max_steps` (or both), otherwise training never ends".into(),
            );
        }
        for (key, v) in [
            ("epochs", self.epochs),
            ("max_steps", self.max_steps),
            ("eval_every", self.eval_every),
            ("checkpoint_every", self.checkpoint_every),
            ("host_sync_every", self.host_sync_every),
        ] {
            if v == Some(0) {
                return bad(key, "must be at least 1".into());
            }
        }
        if let Some(es) = &self.early_stopping {
            if !(es.min_delta.is_finite() && es.min_delta >= 0.0) {
                return bad(
                    "early_stopping.min_delta",
                    format!("must be >= 0, got {}", es.min_delta),
                );
            }
        }
        Ok(())
    }
}

/// One line of `metrics.jsonl`: an evaluation and where training stood.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EvalRecord {
    /// Steps (batches) taken so far.
    pub step: u64,
    /// Epochs completed (fractional mid-epoch).
    pub epoch: f64,
    /// Learning rate of the next step.
    pub lr: f64,
    /// Mean training loss since the previous evaluation (`None` if no step was taken).
    pub train_loss: Option<f64>,
    /// Mean global gradient norm (before clipping) since the previous evaluation, when
    /// norm clipping is on.
    pub grad_norm: Option<f64>,
    /// Validation loss.
    pub valid_loss: f64,
    /// Further validation metrics.
    pub metrics: BTreeMap<String, f64>,
    /// The main metric.
    pub main: MainMetric,
    /// Whether this evaluation is the best so far.
    pub best: bool,
    /// Steps skipped so far because of a non-finite loss or gradient.
    pub skipped_steps: u64,
}

/// The summary [`Trainer::fit`] returns.
#[derive(Debug, Clone)]
pub struct FitReport {
    /// Steps taken in all (including before a resume).
    pub steps: u64,
    /// Epochs completed.
    pub epochs: u64,
    /// The best main metric.
    pub best: Option<MainMetric>,
    /// The last evaluation.
    pub last: Option<EvalRecord>,
    /// Every evaluation of the run (including those before a resume, from `metrics.jsonl`).
    pub history: Vec<EvalRecord>,
    /// Steps skipped because of non-finite values.
    pub skipped_steps: u64,
    /// Whether early stopping ended the run.
    pub stopped_early: bool,
}

impl FitReport {
    /// A one-line summary: `step 1200, epoch 3: valid_loss 1.2345 (best 1.2000 at step 900)`.
    pub fn summary(&self) -> String {
        let Some(last) = &self.last else {
            return format!("{} steps, no evaluation", self.steps);
        };
        let mut s = format!(
            "step {}, epoch {:.2}: {} {:.4}",
            last.step, last.epoch, last.main.name, last.main.value
        );
        if let Some(best) = &self.best {
            let at = self
                .history
                .iter()
                .rev()
                .find(|r| r.best)
                .map(|r| r.step)
                .unwrap_or(last.step);
            s.push_str(&format!(" (best {:.4} at step {at})", best.value));
        }
        if self.stopped_early {
            s.push_str(", stopped early");
        }
        if self.skipped_steps > 0 {
            s.push_str(&format!(
                ", {} non-finite steps skipped",
                self.skipped_steps
            ));
        }
        s
    }
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
    optimizer: Box<dyn Optimizer + Send>,
    schedule: Box<dyn LrSchedule + Send>,
    state: LoopState,
    out_dir: Option<PathBuf>,
    history: Vec<EvalRecord>,
    carry: Option<RnnState>,
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
            carry: None,
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

    /// Restores everything from the checkpoint in `dir` (usually `OUT/checkpoint`): parameters
    /// (validated by name, shape and dtype against the VarMap), optimiser, schedule, the loop's
    /// position, random-number counters and carried state. The configuration given to
    /// [`Trainer::new`] stays in force (so a resumed run may extend `epochs`), except the
    /// optimiser's hyper-parameters, which come back from the checkpoint as in PyTorch.
    ///
    /// With an output directory set, `metrics.jsonl` there is cut back to the checkpoint's step
    /// (a killed run may have logged an evaluation after its last checkpoint), so the resumed log
    /// equals an uninterrupted one.
    pub fn resume(&mut self, dir: &Path) -> Result<()> {
        let device = self
            .vars
            .first()
            .map(|v| v.device().clone())
            .unwrap_or(candle_core::Device::Cpu);
        let loaded = checkpoint::load(dir, &device)?;
        loaded.validate(&checkpoint::varmap_expected(&self.varmap)?)?;
        let state: LoopState = serde_json::from_value(loaded.state.trainer.clone()).map_err(|e| {
            Error::file(
                dir.join(checkpoint::STATE_FILE),
                format!("`trainer` entry is missing or malformed ({e}); was this checkpoint written by the Trainer?"),
            )
        })?;
        let mut extra = loaded.extra_tensors.clone().unwrap_or_default();
        let carry = take_carry(&mut extra)?;
        let opt_state = OptimizerState::from_json_value(loaded.state.optimizer.clone(), extra)?;
        // Check everything that can fail before changing anything.
        let mut optimizer = self.config.optimizer.build(self.params.clone())?;
        optimizer.load_state(&opt_state)?;
        let mut schedule = self.config.schedule.build(self.config.optimizer.lr())?;
        if let Some(s) = &state.schedule {
            schedule.load_state(s)?;
        }
        loaded.copy_into(&self.varmap)?;
        self.optimizer = optimizer;
        self.schedule = schedule;
        self.optimizer.set_lr(self.schedule.lr());
        self.carry = carry;
        self.state = state;
        self.resumed = true;
        self.pending.clear();
        self.poisoned = None;
        if let Some(out) = &self.out_dir {
            self.history = truncate_log(&out.join(METRICS_FILE), self.state.step)?;
        }
        Ok(())
    }

    /// Trains `task` until the budget is spent or early stopping triggers.
    pub fn fit<T: TrainTask>(&mut self, task: &mut T) -> Result<FitReport> {
        if self.resumed {
            // Seed first (it resets the counters), then fast-forward to the saved counters, so
            // every dropout stream is where the interrupted run left it.
            task.set_seed(self.config.seed);
            task.set_rng_counters(&self.state.rng_counters)?;
        } else if self.state.step == 0 {
            task.set_seed(self.config.seed);
        }
        let mut log = match &self.out_dir {
            Some(dir) => Some(JsonlLog::open(&dir.join(METRICS_FILE), self.resumed)?),
            None => None,
        };
        let mut progress: Option<Progress> = None;
        self.started = std::time::Instant::now();
        let mut done = self.budget_spent() || self.state.stopped_early;
        while !done {
            let epoch = self.state.epoch;
            let batches = task.train_batches(epoch, self.config.seed)?;
            if batches.is_empty() {
                return Err(Error::Invalid(format!(
                    "epoch {epoch} has no training batches (is the training data empty or smaller than one batch?)"
                )));
            }
            let n = batches.len() as u64;
            if progress.is_none() && self.config.progress {
                let total = match (self.config.max_steps, self.config.epochs) {
                    (Some(s), Some(e)) => s.min(e * n),
                    (Some(s), None) => s,
                    (None, Some(e)) => e * n,
                    (None, None) => n,
                };
                let p = Progress::new(total, task.unit());
                p.set_position(self.state.step);
                progress = Some(p);
            }
            if self.state.batch_in_epoch == 0 {
                self.carry = None;
            }
            let start = self.state.batch_in_epoch as usize;
            for (i, batch) in batches.iter().enumerate().skip(start) {
                if self.budget_spent() {
                    break;
                }
                self.train_one(task, batch, progress.as_ref())?;
                self.state.batch_in_epoch = i as u64 + 1;
                let last_in_epoch = i + 1 == batches.len();
                let step = self.state.step;
                if !last_in_epoch {
                    let eval_now = self
                        .config
                        .eval_every
                        .is_some_and(|k| step.is_multiple_of(k))
                        || self.config.max_steps == Some(step);
                    if eval_now {
                        if self.evaluate(task, n, false, log.as_mut(), progress.as_ref())? {
                            done = true;
                            break;
                        }
                    } else if self
                        .config
                        .checkpoint_every
                        .is_some_and(|k| step.is_multiple_of(k))
                    {
                        self.sync(progress.as_ref())?;
                        self.save_latest(task)?;
                    }
                    if self.budget_spent() {
                        done = true;
                        break;
                    }
                }
            }
            if done {
                break;
            }
            // End of the epoch.
            self.state.epoch += 1;
            self.state.batch_in_epoch = 0;
            self.carry = None;
            if self.evaluate(task, n, true, log.as_mut(), progress.as_ref())? {
                break;
            }
            done = self.budget_spent();
        }
        self.sync(progress.as_ref())?;
        if let Some(p) = &progress {
            p.finish();
        }
        Ok(FitReport {
            steps: self.state.step,
            epochs: self.state.epoch,
            best: self.state.best.clone(),
            last: self.history.last().cloned(),
            history: self.history.clone(),
            skipped_steps: self.state.skipped_steps,
            stopped_early: self.state.stopped_early,
        })
    }

    fn budget_spent(&self) -> bool {
        self.config.epochs.is_some_and(|e| self.state.epoch >= e)
            || self.config.max_steps.is_some_and(|s| self.state.step >= s)
    }

    /// How many steps may pass between reads of the step statistics.
    fn sync_every(&self) -> u64 {
        if self.config.on_non_finite == NonFinitePolicy::Skip {
            return 1;
        }
        self.config.host_sync_every.unwrap_or_else(|| {
            match self.vars.first().map(|v| v.device().is_cpu()) {
                Some(false) => 25,
                _ => 1,
            }
        })
    }

    /// One step: forward, backward, clipping and the finiteness checks on the device, then the
    /// update. With per-step reads (`sync_every() == 1`) the checks are read before the update,
    /// so a bad step never touches the parameters; otherwise they are queued and read later.
    fn train_one<T: TrainTask>(
        &mut self,
        task: &mut T,
        batch: &T::Batch,
        progress: Option<&Progress>,
    ) -> Result<()> {
        if let Some(step) = self.poisoned {
            return Err(Error::Invalid(format!(
                "training cannot go on after the non-finite step {step}"
            )));
        }
        let step = self.state.step + 1;
        let out = task.train_step(batch, &mut self.carry)?;
        if out.loss.elem_count() != 1 {
            return Err(Error::Invalid(format!(
                "the training loss must be a scalar, got shape {:?}",
                out.loss.shape()
            )));
        }
        let mut grads = out.loss.backward()?;
        if let Some(v) = self.config.clip_grad_value {
            clip_grad_value(&mut grads, &self.vars, v)?;
        }
        let norm = match self.config.clip_grad_norm {
            Some(max) => clip_grad_norm_tensor(&mut grads, &self.vars, max)?,
            None => None,
        };
        let stats = self.step_stats(&out.loss, norm.as_ref(), &grads)?;
        let pending = PendingStep {
            step,
            units: out.units,
            stats,
        };
        if self.sync_every() == 1 {
            // Read now, before the update.
            let check = self.read_checks(std::slice::from_ref(&pending))?;
            match check.into_iter().next() {
                Some(StepCheck::NonFinite { what, value }) => {
                    return self.non_finite(step, what, value, progress)
                }
                Some(StepCheck::Finite { loss, norm }) => {
                    self.update(&grads)?;
                    self.state.step = step;
                    self.account(loss, norm, out.units, progress);
                }
                None => unreachable!("one pending step gives one check"),
            }
        } else {
            self.update(&grads)?;
            self.state.step = step;
            self.pending.push(pending);
            if step.is_multiple_of(self.sync_every()) {
                self.sync(progress)?;
            }
        }
        Ok(())
    }

    /// The optimiser step, the schedule's per-step update and the carried state's detachment.
    fn update(&mut self, grads: &candle_core::backprop::GradStore) -> Result<()> {
        self.optimizer.step(grads)?;
        let lr = self.schedule.on_step();
        self.optimizer.set_lr(lr);
        self.carry = self.carry.take().map(|s| s.detach());
        Ok(())
    }

    /// `[loss, norm, markers...]` as one 1-D tensor on the device (f64, f32 on Metal).
    fn step_stats(
        &self,
        loss: &Tensor,
        norm: Option<&Tensor>,
        grads: &candle_core::backprop::GradStore,
    ) -> Result<Tensor> {
        let device = loss.device().clone();
        let dtype = if device.is_metal() {
            DType::F32
        } else {
            DType::F64
        };
        let mut parts = vec![loss.flatten_all()?.squeeze(0)?.to_dtype(dtype)?];
        parts.push(match norm {
            Some(n) => n.to_dtype(dtype)?,
            None => Tensor::zeros((), dtype, &device)?,
        });
        for m in non_finite_markers(grads, &self.params)? {
            parts.push(m.to_dtype(dtype)?.to_device(&device)?);
        }
        Ok(Tensor::stack(&parts, 0)?)
    }

    /// Reads the statistics of `steps` in one transfer and interprets them.
    fn read_checks(&self, steps: &[PendingStep]) -> Result<Vec<StepCheck>> {
        if steps.is_empty() {
            return Ok(Vec::new());
        }
        let stats: Vec<&Tensor> = steps.iter().map(|p| &p.stats).collect();
        let rows = Tensor::stack(&stats, 0)?
            .to_dtype(DType::F64)?
            .to_vec2::<f64>()?;
        let clipping = self.config.clip_grad_norm.is_some();
        Ok(rows
            .into_iter()
            .map(|row| {
                let loss = row[0];
                if !loss.is_finite() {
                    return StepCheck::NonFinite {
                        what: "the loss".to_string(),
                        value: Some(loss),
                    };
                }
                if let Some(i) = row[2..].iter().position(|m| !m.is_finite()) {
                    return StepCheck::NonFinite {
                        what: format!("the gradient of `{}`", self.params[i].0),
                        value: None,
                    };
                }
                StepCheck::Finite {
                    loss,
                    norm: clipping.then_some(row[1]),
                }
            })
            .collect())
    }

    /// Folds a finite step into the running sums and the progress bar.
    fn account(&mut self, loss: f64, norm: Option<f64>, units: u64, progress: Option<&Progress>) {
        if let Some(norm) = norm {
            self.state.grad_norm_sum += norm;
            self.state.grad_norm_count += 1;
        }
        self.state.loss_sum += loss * units as f64;
        self.state.loss_units += units;
        if let Some(p) = progress {
            p.step(loss, units);
        }
    }

    /// Reads every queued step's statistics (one transfer), accounts for them in order and
    /// stops at the first non-finite one, naming its step.
    fn sync(&mut self, progress: Option<&Progress>) -> Result<()> {
        if let Some(step) = self.poisoned {
            return Err(Error::Invalid(format!(
                "no checkpoint is written after the non-finite step {step} (the parameters in memory took updates after it)"
            )));
        }
        let pending = std::mem::take(&mut self.pending);
        let checks = self.read_checks(&pending)?;
        for (p, check) in pending.iter().zip(checks) {
            match check {
                StepCheck::Finite { loss, norm } => self.account(loss, norm, p.units, progress),
                StepCheck::NonFinite { what, value } => {
                    self.poisoned = Some(p.step);
                    if let Some(pb) = progress {
                        pb.finish();
                    }
                    return Err(Error::NonFinite {
                        step: p.step,
                        what,
                        value,
                    });
                }
            }
        }
        Ok(())
    }

    fn non_finite(
        &mut self,
        step: u64,
        what: String,
        value: Option<f64>,
        progress: Option<&Progress>,
    ) -> Result<()> {
        match self.config.on_non_finite {
            NonFinitePolicy::Stop => {
                if let Some(p) = progress {
                    p.finish();
                }
                Err(Error::NonFinite { step, what, value })
            }
            NonFinitePolicy::Skip => {
                self.state.step = step;
                self.state.skipped_steps += 1;
                self.carry = None;
                if let Some(p) = progress {
                    p.println(&format!(
                        "step {step}: {what} is not finite; step skipped ({} so far)",
                        self.state.skipped_steps
                    ));
                    p.step(f64::NAN, 0);
                }
                Ok(())
            }
        }
    }

    /// Evaluates, updates the schedule (at epoch ends), best metric and early stopping, logs,
    /// plots and checkpoints. Returns whether to stop early.
    fn evaluate<T: TrainTask>(
        &mut self,
        task: &mut T,
        batches_per_epoch: u64,
        epoch_end: bool,
        log: Option<&mut JsonlLog>,
        progress: Option<&Progress>,
    ) -> Result<bool> {
        self.sync(progress)?;
        let step = self.state.step;
        if self.state.last_eval_step == Some(step) && !epoch_end {
            return Ok(false);
        }
        let eval = task.evaluate()?;
        let main = eval.main_metric();
        if !eval.loss.is_finite() || !main.value.is_finite() {
            return Err(Error::NonFinite {
                step,
                what: format!(
                    "the validation {}",
                    if eval.loss.is_finite() {
                        &main.name
                    } else {
                        "loss"
                    }
                ),
                value: Some(if eval.loss.is_finite() {
                    main.value
                } else {
                    eval.loss
                }),
            });
        }
        if epoch_end {
            let lr = self.schedule.on_epoch_end(Some(eval.loss))?;
            self.optimizer.set_lr(lr);
        }
        let improved = match &self.state.best {
            None => true,
            Some(best) => {
                let delta = self
                    .config
                    .early_stopping
                    .as_ref()
                    .map_or(0.0, |e| e.min_delta);
                if main.higher_is_better {
                    main.value > best.value + delta
                } else {
                    main.value < best.value - delta
                }
            }
        };
        if improved {
            self.state.best = Some(main.clone());
            self.state.bad_evals = 0;
        } else {
            self.state.bad_evals += 1;
        }
        let record = EvalRecord {
            step,
            epoch: if epoch_end {
                self.state.epoch as f64
            } else {
                self.state.epoch as f64
                    + self.state.batch_in_epoch as f64 / batches_per_epoch as f64
            },
            lr: self.optimizer.lr(),
            train_loss: (self.state.loss_units > 0)
                .then(|| self.state.loss_sum / self.state.loss_units as f64),
            grad_norm: (self.state.grad_norm_count > 0)
                .then(|| self.state.grad_norm_sum / self.state.grad_norm_count as f64),
            valid_loss: eval.loss,
            metrics: eval.metrics.clone(),
            main: main.clone(),
            best: improved,
            skipped_steps: self.state.skipped_steps,
        };
        self.state.loss_sum = 0.0;
        self.state.loss_units = 0;
        self.state.grad_norm_sum = 0.0;
        self.state.grad_norm_count = 0;
        self.state.last_eval_step = Some(step);
        let stop = self
            .config
            .early_stopping
            .as_ref()
            .is_some_and(|e| self.state.bad_evals >= e.patience);
        if stop {
            self.state.stopped_early = true;
        }
        if let Some(p) = progress {
            let mut line = format!(
                "step {step} epoch {:.2}: train loss {} valid loss {:.4}",
                record.epoch,
                record
                    .train_loss
                    .map_or("-".to_string(), |l| format!("{l:.4}")),
                record.valid_loss
            );
            if main.name != "valid_loss" {
                line.push_str(&format!(" {} {:.4}", main.name, main.value));
            }
            if improved {
                line.push_str(" (best)");
            }
            let secs = self.started.elapsed().as_secs();
            line.push_str(&format!(" [{}m{:02}s]", secs / 60, secs % 60));
            p.println(&line);
        }
        if let Some(log) = log {
            log.write(&record)?;
        }
        self.history.push(record);
        if self.out_dir.is_some() {
            // `best/` first: a kill between the two saves then resumes from before this
            // evaluation, which redoes it and rewrites `best/` identically (the other order could
            // leave `best/` behind a log that names a newer best step).
            if improved && self.config.save_best {
                self.save_to(task, BEST_DIR)?;
            }
            self.save_latest(task)?;
            if self.config.plot {
                self.plot()?;
            }
        }
        Ok(stop)
    }

    fn save_latest<T: TrainTask>(&mut self, task: &T) -> Result<()> {
        if self.out_dir.is_some() {
            self.save_to(task, LATEST_DIR)?;
        }
        Ok(())
    }

    /// Writes a checkpoint of the current state to `OUT/{name}`.
    fn save_to<T: TrainTask>(&mut self, task: &T, name: &str) -> Result<()> {
        let Some(out) = &self.out_dir else {
            return Ok(());
        };
        let dir = out.join(name);
        self.checkpoint(task, &dir)
    }

    /// Writes a checkpoint of the current state into `dir`.
    ///
    /// Refused after a non-finite step was found (the parameters in memory are not the ones
    /// before the fault).
    pub fn checkpoint<T: TrainTask>(&mut self, task: &T, dir: &Path) -> Result<()> {
        self.sync(None)?;
        self.state.rng_counters = task.rng_counters();
        self.state.schedule = Some(self.schedule.state());
        let opt = self.optimizer.state()?;
        let mut state = TrainState::new(self.config.seed, self.optimizer.lr());
        state.epoch = self.state.epoch;
        state.step = self.state.step;
        if let Some(best) = &self.state.best {
            state.best_metric = Some(best.value);
            state.best_metric_name = best.name.clone();
        }
        state.dropout_calls = self.state.rng_counters.iter().sum();
        state.optimizer = opt.to_json_value()?;
        state.trainer = serde_json::to_value(&self.state)
            .map_err(|e| Error::Invalid(format!("trainer state: {e}")))?;
        let mut extra = opt.to_tensors();
        if let Some(carry) = &self.carry {
            extra.insert(format!("{CARRY_PREFIX}h"), carry.h.clone());
            if let Some(c) = &carry.c {
                extra.insert(format!("{CARRY_PREFIX}c"), c.clone());
            }
        }
        let config = serde_json::json!({
            "model": task.checkpoint_config(),
            "trainer": self.config,
        });
        let files = task.checkpoint_files();
        let files: Vec<(&str, &[u8])> = files
            .iter()
            .map(|(n, b)| (n.as_str(), b.as_slice()))
            .collect();
        let params = checkpoint::varmap_tensors(&self.varmap)?;
        checkpoint::save(
            dir,
            &params,
            &config,
            &state,
            (!extra.is_empty()).then_some(&extra),
            &files,
        )
    }

    fn plot(&self) -> Result<()> {
        let Some(out) = &self.out_dir else {
            return Ok(());
        };
        let train: Vec<(f64, f64)> = self
            .history
            .iter()
            .filter_map(|r| r.train_loss.map(|l| (r.step as f64, l)))
            .collect();
        let valid: Vec<(f64, f64)> = self
            .history
            .iter()
            .map(|r| (r.step as f64, r.valid_loss))
            .collect();
        let main_name = self.history.last().map(|r| r.main.name.clone());
        let metric: Vec<(f64, f64)> = self
            .history
            .iter()
            .map(|r| (r.step as f64, r.main.value))
            .collect();
        let metric = match &main_name {
            Some(name) if name != "valid_loss" => Some((name.as_str(), metric.as_slice())),
            _ => None,
        };
        crate::plot::learning_curves(&train, &valid, metric, &out.join(CURVES_STEM))?;
        Ok(())
    }
}

/// Removes the carried state's tensors from a checkpoint's tensor map.
fn take_carry(extra: &mut HashMap<String, Tensor>) -> Result<Option<RnnState>> {
    let h = extra.remove(&format!("{CARRY_PREFIX}h"));
    let c = extra.remove(&format!("{CARRY_PREFIX}c"));
    Ok(match (h, c) {
        (Some(h), c) => Some(RnnState::new(h, c)),
        (None, None) => None,
        (None, Some(_)) => {
            return Err(Error::Invalid(
                "checkpoint has a carried cell state but no hidden state".into(),
            ))
        }
    })
}

/// Keeps the records of `path` up to `step` (rewriting the file atomically if anything is cut)
/// and returns them. A missing file is an empty history.
fn truncate_log(path: &Path, step: u64) -> Result<Vec<EvalRecord>> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => {
            return Err(Error::Io {
                path: path.to_path_buf(),
                source,
            })
        }
    };
    let mut kept = Vec::new();
    let mut kept_text = String::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let record: EvalRecord = match serde_json::from_str(line) {
            Ok(r) => r,
            // A line cut short by a kill is the last one; drop it.
            Err(_) if i + 1 == text.lines().count() => break,
            Err(e) => {
                return Err(Error::parse(
                    path,
                    i + 1,
                    format!("not an evaluation record: {e}"),
                ))
            }
        };
        if record.step > step {
            break;
        }
        kept_text.push_str(line);
        kept_text.push('\n');
        kept.push(record);
    }
    if kept_text != text {
        let tmp = path.with_extension("jsonl.tmp");
        std::fs::write(&tmp, &kept_text).map_err(|source| Error::Io {
            path: tmp.clone(),
            source,
        })?;
        std::fs::rename(&tmp, path).map_err(|source| Error::Io {
            path: path.to_path_buf(),
            source,
        })?;
    }
    Ok(kept)
}
