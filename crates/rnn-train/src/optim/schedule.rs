//! Learning-rate schedules.
//!
//! A trainer asks [`LrSchedule::lr`] before each optimiser step (and passes it to
//! [`StatefulOptimizer::set_lr`](super::StatefulOptimizer::set_lr)), calls [`LrSchedule::on_step`] after each
//! optimiser step and [`LrSchedule::on_epoch_end`] after each epoch's validation. Each schedule
//! reacts to the events it is defined on and ignores the others.

use std::f64::consts::PI;

use serde::{Deserialize, Serialize};

use super::{check_non_negative, exact_f64};
use crate::{Error, Result};

/// A learning-rate schedule with resumable state.
pub trait LrSchedule {
    /// The learning rate for the next optimiser step.
    fn lr(&self) -> f64;

    /// Records that an optimiser step was taken; returns the learning rate for the next one.
    fn on_step(&mut self) -> f64;

    /// Records the end of an epoch with its validation metric (lower is better); returns the
    /// learning rate for the next epoch. Only [`PlateauDecay`] needs the metric, and it fails
    /// without one.
    fn on_epoch_end(&mut self, metric: Option<f64>) -> Result<f64>;

    /// The schedule's configuration.
    fn config(&self) -> LrScheduleConfig;

    /// A snapshot of the schedule's state, for a checkpoint.
    fn state(&self) -> LrScheduleState;

    /// Restores a state saved by [`state`](LrSchedule::state) of the same kind of schedule. As
    /// PyTorch's `load_state_dict`, everything is restored, including the configuration and the
    /// base learning rate. Nothing changes if the state is invalid.
    fn load_state(&mut self, state: &LrScheduleState) -> Result<()>;
}

/// Which schedule, with its parameters; JSON `{"type": "step_decay", "step_size": 1, "gamma":
/// 0.5}`. The base learning rate comes from the optimiser (see [`LrScheduleConfig::build`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum LrScheduleConfig {
    /// The base learning rate throughout.
    Constant,
    /// Multiply by `gamma` every `step_size` epochs (`torch.optim.lr_scheduler.StepLR`).
    StepDecay {
        /// Epochs between decays (>= 1).
        step_size: u64,
        /// Factor applied at each decay (finite, > 0).
        #[serde(with = "exact_f64")]
        gamma: f64,
    },
    /// Multiply by `gamma` at the end of each epoch listed in `milestones` (epochs completed,
    /// `torch.optim.lr_scheduler.MultiStepLR` stepped once per epoch). Zaremba et al.'s PTB
    /// recipe, "halve after every epoch from the fifth on", is `milestones = [4, 5, ...]`,
    /// `gamma = 0.5`.
    MultiStep {
        /// Epoch counts (>= 1, strictly increasing) after which the rate decays.
        milestones: Vec<u64>,
        /// Factor applied at each milestone (finite, > 0).
        #[serde(with = "exact_f64")]
        gamma: f64,
    },
    /// Multiply by `factor` when the validation metric has not improved for more than
    /// `patience` epochs (`ReduceLROnPlateau`, mode `min`, relative threshold, no cooldown).
    PlateauDecay {
        /// Factor applied at each decay (in (0, 1)).
        #[serde(with = "exact_f64")]
        factor: f64,
        /// Epochs without improvement that are tolerated; the next one decays.
        patience: u64,
        /// Relative improvement needed to count: `metric < best * (1 - threshold)` (in [0, 1)).
        #[serde(with = "exact_f64")]
        threshold: f64,
        /// Floor of the learning rate (>= 0).
        #[serde(with = "exact_f64")]
        min_lr: f64,
    },
    /// Linear warm-up from 0 over `warmup_steps` optimiser steps, then a half cosine down to
    /// `min_lr` at `total_steps`, then `min_lr`.
    CosineWarmup {
        /// Optimiser steps of warm-up (<= `total_steps`).
        warmup_steps: u64,
        /// Optimiser steps at which the cosine reaches `min_lr` (>= 1).
        total_steps: u64,
        /// Final learning rate (in [0, base lr]).
        #[serde(with = "exact_f64")]
        min_lr: f64,
    },
    /// Cosine annealing with warm restarts (SGDR), per optimiser step: each cycle falls along a
    /// half cosine from its peak to `min_lr`, then the next starts again at its own peak.
    /// PyTorch's `CosineAnnealingWarmRestarts(T_0, T_mult, eta_min)` stepped once per
    /// optimiser step is `cycle_steps = [T_0]`, `cycle_mult = T_mult`, `peak_decay = 1`.
    CosineRestarts {
        /// Optimiser steps of the first cycles (each >= 1, at least one).
        cycle_steps: Vec<u64>,
        /// Each cycle after the listed ones is this many times as long as the one before (>= 1).
        cycle_mult: u64,
        /// Each cycle's peak is this times the previous cycle's (in (0, 1]; the first peaks at
        /// the base learning rate).
        #[serde(with = "exact_f64")]
        peak_decay: f64,
        /// The floor each cycle falls to (in [0, base lr]).
        #[serde(with = "exact_f64")]
        min_lr: f64,
    },
}

impl LrScheduleConfig {
    /// The kind as written in JSON (`"constant"`, `"step_decay"`, ...).
    pub fn kind(&self) -> &'static str {
        match self {
            LrScheduleConfig::Constant => "constant",
            LrScheduleConfig::StepDecay { .. } => "step_decay",
            LrScheduleConfig::MultiStep { .. } => "multi_step",
            LrScheduleConfig::PlateauDecay { .. } => "plateau_decay",
            LrScheduleConfig::CosineWarmup { .. } => "cosine_warmup",
            LrScheduleConfig::CosineRestarts { .. } => "cosine_restarts",
        }
    }

    /// Checks the parameters against each other and against the base learning rate.
    pub fn validate(&self, base_lr: f64) -> Result<()> {
        let who = self.kind();
        check_non_negative(who, "base_lr", base_lr)?;
        match *self {
            LrScheduleConfig::Constant => {}
            LrScheduleConfig::MultiStep {
                ref milestones,
                gamma,
            } => {
                if milestones.first() == Some(&0) {
                    return Err(Error::Invalid(format!(
                        "{who}: milestones must be >= 1 (epochs completed), got 0"
                    )));
                }
                if let Some(w) = milestones.windows(2).find(|w| w[1] <= w[0]) {
                    return Err(Error::Invalid(format!(
                        "{who}: milestones must be strictly increasing, got {} then {}",
                        w[0], w[1]
                    )));
                }
                if !(gamma.is_finite() && gamma > 0.0) {
                    return Err(Error::Invalid(format!(
                        "{who}: gamma must be finite and > 0, got {gamma}"
                    )));
                }
            }
            LrScheduleConfig::StepDecay { step_size, gamma } => {
                if step_size == 0 {
                    return Err(Error::Invalid(format!(
                        "{who}: step_size must be >= 1, got 0"
                    )));
                }
                if !(gamma.is_finite() && gamma > 0.0) {
                    return Err(Error::Invalid(format!(
                        "{who}: gamma must be finite and > 0, got {gamma}"
                    )));
                }
            }
            LrScheduleConfig::PlateauDecay {
                factor,
                threshold,
                min_lr,
                ..
            } => {
                if !(factor > 0.0 && factor < 1.0) {
                    return Err(Error::Invalid(format!(
                        "{who}: factor must be in (0, 1), got {factor}"
                    )));
                }
                if !(0.0..1.0).contains(&threshold) {
                    // best * (1 - threshold) must stay positive for "improved" to mean anything.
                    return Err(Error::Invalid(format!(
                        "{who}: threshold must be in [0, 1), got {threshold}"
                    )));
                }
                check_non_negative(who, "min_lr", min_lr)?;
            }
            LrScheduleConfig::CosineWarmup {
                warmup_steps,
                total_steps,
                min_lr,
            } => {
                if total_steps == 0 {
                    return Err(Error::Invalid(format!(
                        "{who}: total_steps must be >= 1, got 0"
                    )));
                }
                if warmup_steps > total_steps {
                    return Err(Error::Invalid(format!(
                        "{who}: warmup_steps must be <= total_steps ({total_steps}), got \
                         {warmup_steps}"
                    )));
                }
                check_min_lr(who, min_lr, base_lr)?;
            }
            LrScheduleConfig::CosineRestarts {
                ref cycle_steps,
                cycle_mult,
                peak_decay,
                min_lr,
            } => {
                if cycle_steps.is_empty() {
                    return Err(Error::Invalid(format!(
                        "{who}: cycle_steps must list at least one cycle length"
                    )));
                }
                if let Some(i) = cycle_steps.iter().position(|&n| n == 0) {
                    return Err(Error::Invalid(format!(
                        "{who}: cycle_steps must be >= 1, got 0 for cycle {}",
                        i + 1
                    )));
                }
                if cycle_mult == 0 {
                    return Err(Error::Invalid(format!(
                        "{who}: cycle_mult must be >= 1, got 0"
                    )));
                }
                if !(peak_decay > 0.0 && peak_decay <= 1.0) {
                    return Err(Error::Invalid(format!(
                        "{who}: peak_decay must be in (0, 1], got {peak_decay}"
                    )));
                }
                check_min_lr(who, min_lr, base_lr)?;
            }
        }
        Ok(())
    }

    /// The schedule, starting from `base_lr` (usually the optimiser's configured `lr`).
    pub fn build(&self, base_lr: f64) -> Result<Box<dyn LrSchedule + Send>> {
        Ok(match *self {
            LrScheduleConfig::Constant => Box::new(Constant::new(base_lr)?),
            LrScheduleConfig::MultiStep {
                ref milestones,
                gamma,
            } => Box::new(MultiStep::new(base_lr, milestones.clone(), gamma)?),
            LrScheduleConfig::StepDecay { step_size, gamma } => {
                Box::new(StepDecay::new(base_lr, step_size, gamma)?)
            }
            LrScheduleConfig::PlateauDecay {
                factor,
                patience,
                threshold,
                min_lr,
            } => Box::new(PlateauDecay::new(
                base_lr, factor, patience, threshold, min_lr,
            )?),
            LrScheduleConfig::CosineWarmup {
                warmup_steps,
                total_steps,
                min_lr,
            } => Box::new(CosineWarmup::new(
                base_lr,
                warmup_steps,
                total_steps,
                min_lr,
            )?),
            LrScheduleConfig::CosineRestarts {
                ref cycle_steps,
                cycle_mult,
                peak_decay,
                min_lr,
            } => Box::new(CosineRestarts::new(
                base_lr,
                cycle_steps.clone(),
                cycle_mult,
                peak_decay,
                min_lr,
            )?),
        })
    }
}

/// `min_lr` of a cosine schedule: finite, >= 0 and at most the base learning rate.
fn check_min_lr(who: &str, min_lr: f64, base_lr: f64) -> Result<()> {
    check_non_negative(who, "min_lr", min_lr)?;
    if min_lr > base_lr {
        return Err(Error::Invalid(format!(
            "{who}: min_lr must be <= the base learning rate {base_lr}, got {min_lr}"
        )));
    }
    Ok(())
}

/// The resumable state of any [`LrSchedule`]. Fields a schedule does not use keep their
/// initial values (`best` = `inf`, counts 0).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LrScheduleState {
    /// The schedule and its parameters.
    pub config: LrScheduleConfig,
    /// The learning rate the schedule started from.
    #[serde(with = "exact_f64")]
    pub base_lr: f64,
    /// The current learning rate.
    #[serde(with = "exact_f64")]
    pub lr: f64,
    /// Optimiser steps recorded.
    pub steps: u64,
    /// Epochs recorded.
    pub epochs: u64,
    /// [`PlateauDecay`]: the best metric so far (`inf` before the first epoch).
    #[serde(with = "exact_f64")]
    pub best: f64,
    /// [`PlateauDecay`]: epochs since the last improvement (or decay).
    pub bad_epochs: u64,
}

/// Counters shared by all schedules.
#[derive(Debug, Clone, PartialEq)]
struct Counters {
    base_lr: f64,
    lr: f64,
    steps: u64,
    epochs: u64,
}

impl Counters {
    fn new(base_lr: f64) -> Self {
        Self {
            base_lr,
            lr: base_lr,
            steps: 0,
            epochs: 0,
        }
    }

    fn state(&self, config: LrScheduleConfig) -> LrScheduleState {
        LrScheduleState {
            config,
            base_lr: self.base_lr,
            lr: self.lr,
            steps: self.steps,
            epochs: self.epochs,
            best: f64::INFINITY,
            bad_epochs: 0,
        }
    }

    /// Checks that `state` is of `kind` and valid, and returns its counters.
    fn from_state(kind: &str, state: &LrScheduleState) -> Result<Self> {
        if state.config.kind() != kind {
            return Err(Error::Invalid(format!(
                "{kind}: the schedule state is for {:?}, expected {kind:?}",
                state.config.kind()
            )));
        }
        state.config.validate(state.base_lr)?;
        check_non_negative(kind, "lr", state.lr)?;
        Ok(Self {
            base_lr: state.base_lr,
            lr: state.lr,
            steps: state.steps,
            epochs: state.epochs,
        })
    }
}

/// The base learning rate throughout.
#[derive(Debug, Clone, PartialEq)]
pub struct Constant {
    c: Counters,
}

impl Constant {
    /// A constant schedule at `base_lr` (finite, >= 0).
    pub fn new(base_lr: f64) -> Result<Self> {
        LrScheduleConfig::Constant.validate(base_lr)?;
        Ok(Self {
            c: Counters::new(base_lr),
        })
    }
}

impl LrSchedule for Constant {
    fn lr(&self) -> f64 {
        self.c.lr
    }

    fn on_step(&mut self) -> f64 {
        self.c.steps += 1;
        self.c.lr
    }

    fn on_epoch_end(&mut self, _metric: Option<f64>) -> Result<f64> {
        self.c.epochs += 1;
        Ok(self.c.lr)
    }

    fn config(&self) -> LrScheduleConfig {
        LrScheduleConfig::Constant
    }

    fn state(&self) -> LrScheduleState {
        self.c.state(self.config())
    }

    fn load_state(&mut self, state: &LrScheduleState) -> Result<()> {
        self.c = Counters::from_state("constant", state)?;
        Ok(())
    }
}

/// Multiplies the learning rate by `gamma` at the end of every `step_size`-th epoch, as
/// `torch.optim.lr_scheduler.StepLR` stepped once per epoch (by repeated multiplication, as its
/// `step()` does, so the values match PyTorch's bit for bit).
#[derive(Debug, Clone, PartialEq)]
pub struct StepDecay {
    c: Counters,
    step_size: u64,
    gamma: f64,
}

impl StepDecay {
    /// A step decay from `base_lr`; `step_size >= 1`, `gamma` finite and > 0.
    pub fn new(base_lr: f64, step_size: u64, gamma: f64) -> Result<Self> {
        LrScheduleConfig::StepDecay { step_size, gamma }.validate(base_lr)?;
        Ok(Self {
            c: Counters::new(base_lr),
            step_size,
            gamma,
        })
    }
}

impl LrSchedule for StepDecay {
    fn lr(&self) -> f64 {
        self.c.lr
    }

    fn on_step(&mut self) -> f64 {
        self.c.steps += 1;
        self.c.lr
    }

    fn on_epoch_end(&mut self, _metric: Option<f64>) -> Result<f64> {
        self.c.epochs += 1;
        if self.c.epochs.is_multiple_of(self.step_size) {
            self.c.lr *= self.gamma;
        }
        Ok(self.c.lr)
    }

    fn config(&self) -> LrScheduleConfig {
        LrScheduleConfig::StepDecay {
            step_size: self.step_size,
            gamma: self.gamma,
        }
    }

    fn state(&self) -> LrScheduleState {
        self.c.state(self.config())
    }

    fn load_state(&mut self, state: &LrScheduleState) -> Result<()> {
        let c = Counters::from_state("step_decay", state)?;
        if let LrScheduleConfig::StepDecay { step_size, gamma } = state.config {
            (self.step_size, self.gamma) = (step_size, gamma);
        }
        self.c = c;
        Ok(())
    }
}

/// Multiplies the learning rate by `gamma` at the end of each milestone epoch, as
/// `torch.optim.lr_scheduler.MultiStepLR` stepped once per epoch (by repeated multiplication,
/// as its `step()` does).
#[derive(Debug, Clone, PartialEq)]
pub struct MultiStep {
    c: Counters,
    milestones: Vec<u64>,
    gamma: f64,
}

impl MultiStep {
    /// A multi-step decay from `base_lr`; milestones >= 1 and strictly increasing, `gamma`
    /// finite and > 0.
    pub fn new(base_lr: f64, milestones: Vec<u64>, gamma: f64) -> Result<Self> {
        let config = LrScheduleConfig::MultiStep { milestones, gamma };
        config.validate(base_lr)?;
        let LrScheduleConfig::MultiStep { milestones, gamma } = config else {
            unreachable!("built just above")
        };
        Ok(Self {
            c: Counters::new(base_lr),
            milestones,
            gamma,
        })
    }
}

impl LrSchedule for MultiStep {
    fn lr(&self) -> f64 {
        self.c.lr
    }

    fn on_step(&mut self) -> f64 {
        self.c.steps += 1;
        self.c.lr
    }

    fn on_epoch_end(&mut self, _metric: Option<f64>) -> Result<f64> {
        self.c.epochs += 1;
        if self.milestones.binary_search(&self.c.epochs).is_ok() {
            self.c.lr *= self.gamma;
        }
        Ok(self.c.lr)
    }

    fn config(&self) -> LrScheduleConfig {
        LrScheduleConfig::MultiStep {
            milestones: self.milestones.clone(),
            gamma: self.gamma,
        }
    }

    fn state(&self) -> LrScheduleState {
        self.c.state(self.config())
    }

    fn load_state(&mut self, state: &LrScheduleState) -> Result<()> {
        let c = Counters::from_state("multi_step", state)?;
        if let LrScheduleConfig::MultiStep { milestones, gamma } = &state.config {
            (self.milestones, self.gamma) = (milestones.clone(), *gamma);
        }
        self.c = c;
        Ok(())
    }
}

/// Decays the learning rate when the validation metric stops improving: PyTorch's
/// `ReduceLROnPlateau(mode="min", threshold_mode="rel", cooldown=0, eps=1e-8)`.
///
/// An epoch improves when `metric < best * (1 - threshold)`; after more than `patience` epochs in
/// a row without improvement, `lr = max(lr * factor, min_lr)` (skipped when that changes it by at
/// most 1e-8) and the count restarts. A NaN metric counts as no improvement, as in PyTorch.
///
/// The PyTorch word-language-model recipe ("divide the lr by 4 whenever the validation loss does
/// not improve") is `factor = 0.25, patience = 0, threshold = 0`.
#[derive(Debug, Clone, PartialEq)]
pub struct PlateauDecay {
    c: Counters,
    factor: f64,
    patience: u64,
    threshold: f64,
    min_lr: f64,
    best: f64,
    bad_epochs: u64,
}

/// PyTorch's `ReduceLROnPlateau` `eps`: decays smaller than this are skipped.
const PLATEAU_EPS: f64 = 1e-8;

impl PlateauDecay {
    /// A plateau decay from `base_lr`; `factor` in (0, 1), `threshold` in [0, 1), `min_lr` >= 0.
    pub fn new(
        base_lr: f64,
        factor: f64,
        patience: u64,
        threshold: f64,
        min_lr: f64,
    ) -> Result<Self> {
        LrScheduleConfig::PlateauDecay {
            factor,
            patience,
            threshold,
            min_lr,
        }
        .validate(base_lr)?;
        Ok(Self {
            c: Counters::new(base_lr),
            factor,
            patience,
            threshold,
            min_lr,
            best: f64::INFINITY,
            bad_epochs: 0,
        })
    }

    /// The best metric so far (`inf` before the first epoch).
    pub fn best(&self) -> f64 {
        self.best
    }
}

impl LrSchedule for PlateauDecay {
    fn lr(&self) -> f64 {
        self.c.lr
    }

    fn on_step(&mut self) -> f64 {
        self.c.steps += 1;
        self.c.lr
    }

    fn on_epoch_end(&mut self, metric: Option<f64>) -> Result<f64> {
        let Some(metric) = metric else {
            return Err(Error::Invalid(
                "plateau_decay: on_epoch_end needs the epoch's validation metric, got None"
                    .to_string(),
            ));
        };
        self.c.epochs += 1;
        if metric < self.best * (1.0 - self.threshold) {
            self.best = metric;
            self.bad_epochs = 0;
        } else {
            self.bad_epochs += 1;
        }
        if self.bad_epochs > self.patience {
            let new_lr = (self.c.lr * self.factor).max(self.min_lr);
            if self.c.lr - new_lr > PLATEAU_EPS {
                self.c.lr = new_lr;
            }
            self.bad_epochs = 0;
        }
        Ok(self.c.lr)
    }

    fn config(&self) -> LrScheduleConfig {
        LrScheduleConfig::PlateauDecay {
            factor: self.factor,
            patience: self.patience,
            threshold: self.threshold,
            min_lr: self.min_lr,
        }
    }

    fn state(&self) -> LrScheduleState {
        LrScheduleState {
            best: self.best,
            bad_epochs: self.bad_epochs,
            ..self.c.state(self.config())
        }
    }

    fn load_state(&mut self, state: &LrScheduleState) -> Result<()> {
        let c = Counters::from_state("plateau_decay", state)?;
        if let LrScheduleConfig::PlateauDecay {
            factor,
            patience,
            threshold,
            min_lr,
        } = state.config
        {
            (self.factor, self.patience, self.threshold, self.min_lr) =
                (factor, patience, threshold, min_lr);
        }
        self.c = c;
        self.best = state.best;
        self.bad_epochs = state.bad_epochs;
        Ok(())
    }
}

/// Linear warm-up then cosine decay, per optimiser step. After `s` steps the learning rate is
///
/// ```text
/// base_lr * s / warmup_steps                                          s < warmup_steps
/// min_lr + (base_lr - min_lr) * (1 + cos(pi * progress)) / 2          otherwise, where
///     progress = min(1, (s - warmup_steps) / (total_steps - warmup_steps))
/// ```
///
/// so the first step uses 0 (as Hugging Face's `get_cosine_schedule_with_warmup`, which this is
/// with a floor of `min_lr`), the step after the warm-up uses `base_lr`, and from `total_steps`
/// on it is `min_lr`. It depends only on the step count, so resuming is exact.
#[derive(Debug, Clone, PartialEq)]
pub struct CosineWarmup {
    c: Counters,
    warmup_steps: u64,
    total_steps: u64,
    min_lr: f64,
}

impl CosineWarmup {
    /// A cosine schedule with warm-up from `base_lr`; `1 <= total_steps`, `warmup_steps <=
    /// total_steps`, `0 <= min_lr <= base_lr`.
    pub fn new(base_lr: f64, warmup_steps: u64, total_steps: u64, min_lr: f64) -> Result<Self> {
        LrScheduleConfig::CosineWarmup {
            warmup_steps,
            total_steps,
            min_lr,
        }
        .validate(base_lr)?;
        let mut s = Self {
            c: Counters::new(base_lr),
            warmup_steps,
            total_steps,
            min_lr,
        };
        s.c.lr = s.lr_at(0);
        Ok(s)
    }

    /// The learning rate after `steps` optimiser steps.
    pub fn lr_at(&self, steps: u64) -> f64 {
        let base = self.c.base_lr;
        if steps < self.warmup_steps {
            return base * steps as f64 / self.warmup_steps as f64;
        }
        if steps >= self.total_steps {
            return self.min_lr;
        }
        // total_steps > warmup_steps here, since warmup_steps <= steps < total_steps.
        let progress =
            (steps - self.warmup_steps) as f64 / (self.total_steps - self.warmup_steps) as f64;
        self.min_lr + (base - self.min_lr) * 0.5 * (1.0 + (PI * progress).cos())
    }
}

impl LrSchedule for CosineWarmup {
    fn lr(&self) -> f64 {
        self.c.lr
    }

    fn on_step(&mut self) -> f64 {
        self.c.steps += 1;
        self.c.lr = self.lr_at(self.c.steps);
        self.c.lr
    }

    fn on_epoch_end(&mut self, _metric: Option<f64>) -> Result<f64> {
        self.c.epochs += 1;
        Ok(self.c.lr)
    }

    fn config(&self) -> LrScheduleConfig {
        LrScheduleConfig::CosineWarmup {
            warmup_steps: self.warmup_steps,
            total_steps: self.total_steps,
            min_lr: self.min_lr,
        }
    }

    fn state(&self) -> LrScheduleState {
        self.c.state(self.config())
    }

    fn load_state(&mut self, state: &LrScheduleState) -> Result<()> {
        let c = Counters::from_state("cosine_warmup", state)?;
        if let LrScheduleConfig::CosineWarmup {
            warmup_steps,
            total_steps,
            min_lr,
        } = state.config
        {
            (self.warmup_steps, self.total_steps, self.min_lr) =
                (warmup_steps, total_steps, min_lr);
        }
        self.c = c;
        Ok(())
    }
}

/// Cosine annealing with warm restarts (SGDR, Loshchilov and Hutter 2017), per optimiser step.
/// After `s` steps, with `s` falling `t` steps into cycle `i` (counted from 0) of `len` steps,
///
/// ```text
/// peak = max(base_lr * peak_decay^i, min_lr)
/// lr   = min_lr + (peak - min_lr) * (1 + cos(pi * t / len)) / 2
/// ```
///
/// in PyTorch's order of operations, so `cycle_steps = [T_0]`, `cycle_mult = T_mult`,
/// `peak_decay = 1` gives `CosineAnnealingWarmRestarts(T_0, T_mult, eta_min)`'s values. Cycle
/// `i` lasts `cycle_steps[i]` steps while the list lasts, then each is `cycle_mult` times the one
/// before. It depends only on the step count, so resuming is exact.
///
/// Two stages of a recipe, e.g. 14 epochs of cosine from lr 20 and 12 more from lr 10, are one
/// schedule: `cycle_steps = [14 * E, 12 * E]` (E steps per epoch), `peak_decay = 0.5`.
#[derive(Debug, Clone, PartialEq)]
pub struct CosineRestarts {
    c: Counters,
    cycle_steps: Vec<u64>,
    cycle_mult: u64,
    peak_decay: f64,
    min_lr: f64,
}

impl CosineRestarts {
    /// Cosine with warm restarts from `base_lr`; see the type's documentation for the
    /// parameters and their ranges.
    pub fn new(
        base_lr: f64,
        cycle_steps: Vec<u64>,
        cycle_mult: u64,
        peak_decay: f64,
        min_lr: f64,
    ) -> Result<Self> {
        let config = LrScheduleConfig::CosineRestarts {
            cycle_steps,
            cycle_mult,
            peak_decay,
            min_lr,
        };
        config.validate(base_lr)?;
        let LrScheduleConfig::CosineRestarts { cycle_steps, .. } = config else {
            unreachable!("built just above")
        };
        let mut s = Self {
            c: Counters::new(base_lr),
            cycle_steps,
            cycle_mult,
            peak_decay,
            min_lr,
        };
        s.c.lr = s.lr_at(0);
        Ok(s)
    }

    /// `(cycle, steps into it, its length)` after `steps` optimiser steps.
    pub fn position(&self, steps: u64) -> (u64, u64, u64) {
        let mut start = 0u64;
        let mut len = 1u64;
        for (i, &n) in self.cycle_steps.iter().enumerate() {
            len = n;
            if steps - start < n {
                return (i as u64, steps - start, n);
            }
            start += n;
        }
        let listed = self.cycle_steps.len() as u64;
        let t = steps - start;
        if self.cycle_mult == 1 {
            return (listed + t / len, t % len, len);
        }
        // Lengths grow geometrically: at most 64 more cycles before a u64 overflows.
        let (mut t, mut i) = (t, listed);
        loop {
            len = len.saturating_mul(self.cycle_mult);
            if t < len {
                return (i, t, len);
            }
            t -= len;
            i += 1;
        }
    }

    /// The learning rate after `steps` optimiser steps.
    pub fn lr_at(&self, steps: u64) -> f64 {
        let (cycle, t, len) = self.position(steps);
        let decay = self
            .peak_decay
            .powi(i32::try_from(cycle).unwrap_or(i32::MAX));
        let peak = (self.c.base_lr * decay).max(self.min_lr);
        self.min_lr + (peak - self.min_lr) * (1.0 + (PI * t as f64 / len as f64).cos()) / 2.0
    }
}

impl LrSchedule for CosineRestarts {
    fn lr(&self) -> f64 {
        self.c.lr
    }

    fn on_step(&mut self) -> f64 {
        self.c.steps += 1;
        self.c.lr = self.lr_at(self.c.steps);
        self.c.lr
    }

    fn on_epoch_end(&mut self, _metric: Option<f64>) -> Result<f64> {
        self.c.epochs += 1;
        Ok(self.c.lr)
    }

    fn config(&self) -> LrScheduleConfig {
        LrScheduleConfig::CosineRestarts {
            cycle_steps: self.cycle_steps.clone(),
            cycle_mult: self.cycle_mult,
            peak_decay: self.peak_decay,
            min_lr: self.min_lr,
        }
    }

    fn state(&self) -> LrScheduleState {
        self.c.state(self.config())
    }

    fn load_state(&mut self, state: &LrScheduleState) -> Result<()> {
        let c = Counters::from_state("cosine_restarts", state)?;
        if let LrScheduleConfig::CosineRestarts {
            cycle_steps,
            cycle_mult,
            peak_decay,
            min_lr,
        } = &state.config
        {
            self.cycle_steps = cycle_steps.clone();
            (self.cycle_mult, self.peak_decay, self.min_lr) = (*cycle_mult, *peak_decay, *min_lr);
        }
        self.c = c;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[track_caller]
    fn close(a: f64, e: f64) {
        assert!((a - e).abs() <= 1e-12, "got {a:e}, expected {e:e}");
    }

    #[test]
    fn constant_stays() {
        let mut s = LrScheduleConfig::Constant.build(0.3).unwrap();
        s.on_step();
        assert_eq!(s.on_epoch_end(None).unwrap(), 0.3);
        assert_eq!(s.lr(), 0.3);
    }

    #[test]
    fn step_decay_by_hand() {
        // lr 1.0, step_size 2, gamma 0.5: epochs 1..=6 end with 1, 0.5, 0.5, 0.25, 0.25, 0.125.
        let mut s = StepDecay::new(1.0, 2, 0.5).unwrap();
        let lrs: Vec<f64> = (0..6).map(|_| s.on_epoch_end(None).unwrap()).collect();
        assert_eq!(lrs, [1.0, 0.5, 0.5, 0.25, 0.25, 0.125]);
        assert_eq!(s.on_step(), 0.125, "steps do not decay");
    }

    // Python:
    // p = torch.zeros(1, requires_grad=True); o = torch.optim.SGD([p], lr=1.0)
    // s = torch.optim.lr_scheduler.MultiStepLR(o, milestones=[4, 5, ..., 12], gamma=0.5)
    // for e in range(13): o.step(); s.step(); print(o.param_groups[0]["lr"])
    const TORCH_MULTISTEP_LRS: [f64; 13] = [
        1.0,
        1.0,
        1.0,
        0.5,
        0.25,
        0.125,
        0.0625,
        0.03125,
        0.015625,
        0.0078125,
        0.00390625,
        0.001953125,
        0.001953125,
    ];

    #[test]
    fn multi_step_matches_pytorch_and_resumes() {
        let milestones: Vec<u64> = (4..=12).collect();
        let mut s = MultiStep::new(1.0, milestones.clone(), 0.5).unwrap();
        let mut lrs = Vec::new();
        for e in 0..13 {
            if e == 6 {
                // Resume half way through from a JSON round trip of the state.
                let json = serde_json::to_string(&s.state()).unwrap();
                let mut fresh = MultiStep::new(1.0, vec![1], 0.9).unwrap();
                fresh
                    .load_state(&serde_json::from_str(&json).unwrap())
                    .unwrap();
                s = fresh;
            }
            assert_eq!(s.on_step(), s.lr(), "steps do not decay");
            lrs.push(s.on_epoch_end(None).unwrap());
        }
        assert_eq!(lrs, TORCH_MULTISTEP_LRS);
        let cfg: LrScheduleConfig =
            serde_json::from_str(r#"{"type": "multi_step", "milestones": [4, 5], "gamma": 0.5}"#)
                .unwrap();
        assert_eq!(cfg.build(1.0).unwrap().config(), cfg);
        for (bad, msg) in [
            (vec![0, 2], "milestones must be >= 1"),
            (vec![3, 3], "strictly increasing, got 3 then 3"),
        ] {
            let e = MultiStep::new(1.0, bad, 0.5).unwrap_err().to_string();
            assert!(e.contains(msg), "{e}");
        }
        let e = MultiStep::new(1.0, milestones, 0.0)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("multi_step: gamma must be finite and > 0"),
            "{e}"
        );
    }

    // Python:
    // p = torch.zeros(1, requires_grad=True); opt = torch.optim.SGD([p], lr=1.0)
    // s = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, mode="min", factor=0.5, patience=2,
    //         threshold=0.01, threshold_mode="rel", min_lr=0.1)
    // for m in METRICS: s.step(m); print(opt.param_groups[0]["lr"])
    const METRICS: [f64; 20] = [
        10.0, 9.0, 8.95, 8.93, 8.99, 7.0, 7.0, 7.0, 7.0, 7.0, 7.0, 7.0, 6.99, 7.0, 7.0, 7.0, 7.0,
        7.0, 7.0, 7.0,
    ];
    const TORCH_PLATEAU_LRS: [f64; 20] = [
        1.0, 1.0, 1.0, 1.0, 0.5, 0.5, 0.5, 0.5, 0.25, 0.25, 0.25, 0.125, 0.125, 0.125, 0.1, 0.1,
        0.1, 0.1, 0.1, 0.1,
    ];

    #[test]
    fn plateau_matches_pytorch_reduce_lr_on_plateau() {
        let mut s = PlateauDecay::new(1.0, 0.5, 2, 0.01, 0.1).unwrap();
        let lrs: Vec<f64> = METRICS
            .iter()
            .map(|m| s.on_epoch_end(Some(*m)).unwrap())
            .collect();
        assert_eq!(lrs, TORCH_PLATEAU_LRS);
        assert_eq!(s.best(), 7.0);
    }

    #[test]
    fn plateau_needs_a_metric_and_resumes_exactly() {
        let mut s = PlateauDecay::new(1.0, 0.5, 2, 0.01, 0.1).unwrap();
        let e = s.on_epoch_end(None).unwrap_err().to_string();
        assert!(e.contains("needs the epoch's validation metric"), "{e}");
        assert_eq!(s.state().epochs, 0, "a failed call records nothing");
        // Fresh state round-trips `best = inf` through JSON.
        let json = serde_json::to_string(&s.state()).unwrap();
        assert!(json.contains(r#""best":"inf""#), "{json}");
        for m in &METRICS[..7] {
            s.on_epoch_end(Some(*m)).unwrap();
        }
        let json = serde_json::to_string(&s.state()).unwrap();
        let state: LrScheduleState = serde_json::from_str(&json).unwrap();
        let mut resumed = LrScheduleConfig::PlateauDecay {
            factor: 0.5,
            patience: 2,
            threshold: 0.01,
            min_lr: 0.1,
        }
        .build(123.0)
        .unwrap();
        resumed.load_state(&state).unwrap();
        let lrs: Vec<f64> = METRICS[7..]
            .iter()
            .map(|m| resumed.on_epoch_end(Some(*m)).unwrap())
            .collect();
        assert_eq!(lrs, TORCH_PLATEAU_LRS[7..]);
    }

    #[test]
    fn cosine_warmup_by_hand() {
        // base 1.0, warm-up 4, total 12, min 0.1.
        let mut s = CosineWarmup::new(1.0, 4, 12, 0.1).unwrap();
        let mut lrs = vec![s.lr()];
        for _ in 0..14 {
            lrs.push(s.on_step());
        }
        // Warm-up: s / 4.
        for (i, want) in [0.0, 0.25, 0.5, 0.75, 1.0].into_iter().enumerate() {
            close(lrs[i], want);
        }
        // s = 6: progress 2/8, 0.1 + 0.9 * (1 + cos(pi/4)) / 2 = 0.1 + 0.45 * 1.7071067811865475.
        close(lrs[6], 0.868198051533946);
        // s = 8: progress 1/2, 0.1 + 0.9 / 2.
        close(lrs[8], 0.55);
        // s = 10: progress 3/4, 0.1 + 0.45 * (1 - 0.7071067811865476).
        close(lrs[10], 0.23180194846605362);
        for lr in &lrs[12..] {
            assert_eq!(*lr, 0.1);
        }
        // Resume: the state's lr is exact, including the hard-to-parse cosine values.
        let mut s = CosineWarmup::new(1.0, 4, 12, 0.1).unwrap();
        for _ in 0..5 {
            s.on_step();
        }
        let state: LrScheduleState =
            serde_json::from_str(&serde_json::to_string(&s.state()).unwrap()).unwrap();
        let mut r = CosineWarmup::new(1.0, 4, 12, 0.1).unwrap();
        r.load_state(&state).unwrap();
        assert_eq!(r, s);
        assert_eq!(r.on_step().to_bits(), s.on_step().to_bits());
    }

    // Python (PyTorch 2.15):
    // p = torch.zeros(1, requires_grad=True); o = torch.optim.SGD([p], lr=1.0)
    // s = torch.optim.lr_scheduler.CosineAnnealingWarmRestarts(o, T_0=3, T_mult=2, eta_min=0.1)
    // for _ in range(24): print(o.param_groups[0]["lr"]); o.step(); s.step()
    const TORCH_WARM_RESTARTS_LRS: [f64; 24] = [
        1.0,
        0.775,
        0.3250000000000001,
        1.0,
        0.9397114317029974,
        0.775,
        0.55,
        0.3250000000000001,
        0.16028856829700258,
        1.0,
        0.9846666218300807,
        0.9397114317029974,
        0.8681980515339464,
        0.775,
        0.6664685702961344,
        0.55,
        0.4335314297038657,
        0.3250000000000001,
        0.23180194846605365,
        0.16028856829700258,
        0.11533337816991932,
        1.0,
        0.9961501876182147,
        0.9846666218300807,
    ];

    #[test]
    fn cosine_restarts_matches_pytorch_warm_restarts() {
        let mut s = CosineRestarts::new(1.0, vec![3], 2, 1.0, 0.1).unwrap();
        let mut lrs = vec![s.lr()];
        for _ in 1..24 {
            lrs.push(s.on_step());
        }
        assert_eq!(lrs, TORCH_WARM_RESTARTS_LRS);
        // Cycles of 3, 6, 12 steps: restarts at steps 3 and 9, peaking at the base rate.
        assert_eq!(s.position(3), (1, 0, 6));
        assert_eq!(s.position(9), (2, 0, 12));
        assert_eq!(s.position(21), (3, 0, 24));
        assert_eq!(lrs[9], 1.0);
    }

    #[test]
    fn cosine_restarts_is_two_cosine_stages_with_a_lower_peak() {
        // The medium PTB recipe's shape: a cosine from 20 over 14 units, then from 10 over 12.
        let mut one = CosineRestarts::new(20.0, vec![14, 12], 1, 0.5, 0.0).unwrap();
        let mut first = CosineWarmup::new(20.0, 0, 14, 0.0).unwrap();
        let mut second = CosineWarmup::new(10.0, 0, 12, 0.0).unwrap();
        let mut want = vec![first.lr()];
        want.extend((1..14).map(|_| first.on_step()));
        want.push(second.lr());
        want.extend((1..12).map(|_| second.on_step()));
        let mut got = vec![one.lr()];
        got.extend((1..26).map(|_| one.on_step()));
        for (i, (g, w)) in got.iter().zip(&want).enumerate() {
            assert!((g - w).abs() <= 1e-13 * w.max(1.0), "step {i}: {g} vs {w}");
        }
        assert_eq!(
            got[14], 10.0,
            "the second cycle restarts at half the first peak"
        );
        // After the listed cycles, the last length repeats (cycle_mult 1), each peak halving.
        assert_eq!(one.on_step(), 5.0);
        assert_eq!(one.position(26 + 12), (3, 0, 12));
        assert_eq!(one.lr_at(38), 2.5);
        // A peak never falls below the floor: it stays at min_lr from there on.
        let floor = CosineRestarts::new(1.0, vec![2], 1, 0.1, 0.05).unwrap();
        assert_eq!(floor.lr_at(2), 0.1);
        assert_eq!(floor.lr_at(4), 0.05);
        assert_eq!(floor.lr_at(5), 0.05);
    }

    #[test]
    fn cosine_restarts_resumes_exactly_and_checks_its_parameters() {
        let mut s = CosineRestarts::new(0.7, vec![4, 5], 3, 0.8, 0.01).unwrap();
        for _ in 0..11 {
            s.on_step();
        }
        let json = serde_json::to_string(&s.state()).unwrap();
        let mut r = LrScheduleConfig::Constant.build(1.0).unwrap();
        assert!(r.load_state(&serde_json::from_str(&json).unwrap()).is_err());
        let mut r = CosineRestarts::new(1.0, vec![1], 1, 1.0, 0.0).unwrap();
        r.load_state(&serde_json::from_str(&json).unwrap()).unwrap();
        assert_eq!(r, s);
        for _ in 0..40 {
            assert_eq!(r.on_step().to_bits(), s.on_step().to_bits());
        }
        // Cycles of 4, 5, then 15, 45, ...: step 11 is 2 steps into the third.
        assert_eq!(s.position(11), (2, 2, 15));
        assert_eq!(s.position(9 + 15 + 45), (4, 0, 135));
        // Far beyond the listed cycles the lengths saturate instead of overflowing.
        assert_eq!(s.position(u64::MAX).0, 40);
        let cfg = s.config();
        let back: LrScheduleConfig =
            serde_json::from_str(&serde_json::to_string(&cfg).unwrap()).unwrap();
        assert_eq!(back, cfg);

        let err = |cycle_steps: Vec<u64>, cycle_mult: u64, peak_decay: f64, min_lr: f64| {
            CosineRestarts::new(1.0, cycle_steps, cycle_mult, peak_decay, min_lr)
                .unwrap_err()
                .to_string()
        };
        for (e, want) in [
            (
                err(vec![], 1, 1.0, 0.0),
                "cycle_steps must list at least one",
            ),
            (
                err(vec![3, 0], 1, 1.0, 0.0),
                "cycle_steps must be >= 1, got 0 for cycle 2",
            ),
            (err(vec![3], 0, 1.0, 0.0), "cycle_mult must be >= 1, got 0"),
            (
                err(vec![3], 1, 0.0, 0.0),
                "peak_decay must be in (0, 1], got 0",
            ),
            (
                err(vec![3], 1, 1.5, 0.0),
                "peak_decay must be in (0, 1], got 1.5",
            ),
            (
                err(vec![3], 1, f64::NAN, 0.0),
                "peak_decay must be in (0, 1], got NaN",
            ),
            (
                err(vec![3], 1, 1.0, 2.0),
                "min_lr must be <= the base learning rate 1, got 2",
            ),
        ] {
            assert!(
                e.starts_with("cosine_restarts: ") && e.contains(want),
                "{e}"
            );
        }
    }

    #[test]
    fn configs_are_serde_and_validated() {
        let c: LrScheduleConfig =
            serde_json::from_str(r#"{"type": "step_decay", "step_size": 1, "gamma": 0.25}"#)
                .unwrap();
        assert_eq!(
            c,
            LrScheduleConfig::StepDecay {
                step_size: 1,
                gamma: 0.25
            }
        );
        let c: LrScheduleConfig = serde_json::from_str(r#"{"type": "constant"}"#).unwrap();
        assert_eq!(c, LrScheduleConfig::Constant);
        for c in [
            LrScheduleConfig::Constant,
            LrScheduleConfig::PlateauDecay {
                factor: 0.25,
                patience: 0,
                threshold: 0.0,
                min_lr: 0.0,
            },
            LrScheduleConfig::CosineWarmup {
                warmup_steps: 10,
                total_steps: 100,
                min_lr: 1e-5,
            },
        ] {
            let back: LrScheduleConfig =
                serde_json::from_str(&serde_json::to_string(&c).unwrap()).unwrap();
            assert_eq!(back, c);
        }
        let typo = r#"{"type": "plateau_decay", "factor": 0.5, "paitence": 1, "threshold": 0,
                       "min_lr": 0}"#;
        assert!(serde_json::from_str::<LrScheduleConfig>(typo).is_err());

        let err = |c: LrScheduleConfig, base: f64| c.build(base).err().unwrap().to_string();
        let e = err(
            LrScheduleConfig::StepDecay {
                step_size: 0,
                gamma: 0.5,
            },
            1.0,
        );
        assert!(e.contains("step_size must be >= 1, got 0"), "{e}");
        let e = err(
            LrScheduleConfig::PlateauDecay {
                factor: 1.0,
                patience: 0,
                threshold: 0.0,
                min_lr: 0.0,
            },
            1.0,
        );
        assert!(e.contains("factor must be in (0, 1), got 1"), "{e}");
        let e = err(
            LrScheduleConfig::CosineWarmup {
                warmup_steps: 5,
                total_steps: 4,
                min_lr: 0.0,
            },
            1.0,
        );
        assert!(
            e.contains("warmup_steps must be <= total_steps (4), got 5"),
            "{e}"
        );
        let e = err(
            LrScheduleConfig::CosineWarmup {
                warmup_steps: 0,
                total_steps: 4,
                min_lr: 2.0,
            },
            1.0,
        );
        assert!(
            e.contains("min_lr must be <= the base learning rate 1, got 2"),
            "{e}"
        );
        let e = err(LrScheduleConfig::Constant, -1.0);
        assert!(e.contains("base_lr must be finite and >= 0, got -1"), "{e}");
    }

    #[test]
    fn load_state_checks_the_kind() {
        let mut s = StepDecay::new(1.0, 2, 0.5).unwrap();
        let other = Constant::new(1.0).unwrap().state();
        let e = s.load_state(&other).unwrap_err().to_string();
        assert!(
            e.contains("step_decay: the schedule state is for \"constant\""),
            "{e}"
        );
    }
}
