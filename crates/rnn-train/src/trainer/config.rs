//! What a run is configured with: budget, optimiser, schedule, clipping, evaluation,
//! early stopping and the non-finite policy.

use serde::{Deserialize, Serialize};

use crate::optim::{LrScheduleConfig, OptimizerConfig};
use crate::{Error, Result};

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

/// An average of the weights over training steps, evaluated and saved as the `best/` model in
/// place of the last weights: the uniform average of stochastic weight averaging and of
/// AWD-LSTM's averaged SGD (PyTorch's `torch.optim.swa_utils.AveragedModel`), or an exponential
/// moving average (`AveragedModel` with `get_ema_multi_avg_fn(decay)`). The training itself
/// always runs on the last weights; the average is kept beside them and saved in checkpoints, so
/// a resumed run continues it exactly. It costs one more copy of the parameters on their device
/// (two during an evaluation, which keeps the last weights aside) and an element-wise pass over
/// them after every step.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WeightAverage {
    /// Averaging starts with the first step after this many epochs (0: from the first step).
    pub start_epoch: u64,
    /// `None`: the uniform mean of the weights after every step since the start; `Some(d)`: an
    /// exponential moving average, `avg = d * avg + (1 - d) * w` (started at the first weights
    /// averaged).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ema_decay: Option<f64>,
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
    /// Micro-batches per optimiser step: every global batch is split into this many parts
    /// (per data-parallel rank), each run forward and backward on its own, and their gradients
    /// are combined as one step on the whole batch. Memory falls with it; the result is the
    /// same. Not saved in checkpoints: a run may resume with another value.
    #[serde(skip_serializing)]
    pub grad_accum: u64,
    /// Evaluate and keep as `best/` an average of the weights over steps ([`WeightAverage`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub average: Option<WeightAverage>,
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
            grad_accum: 1,
            average: None,
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
            ("grad_accum", Some(self.grad_accum)),
        ] {
            if v == Some(0) {
                return bad(key, "must be at least 1".into());
            }
        }
        if let Some(d) = self.average.and_then(|a| a.ema_decay) {
            if !(d.is_finite() && d > 0.0 && d < 1.0) {
                return bad("average.ema_decay", format!("must be in (0, 1), got {d}"));
            }
        }
        if let (Some(a), Some(epochs)) = (self.average, self.epochs) {
            if a.start_epoch >= epochs && self.max_steps.is_none() {
                return bad(
                    "average.start_epoch",
                    format!(
                        "{} is not before the last epoch ({epochs}): nothing would be averaged",
                        a.start_epoch
                    ),
                );
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
