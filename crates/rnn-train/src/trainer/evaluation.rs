//! Periodic evaluation: the task's result, the best metric, early stopping, and the
//! log, plot and checkpoints that follow it.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{EvalRecord, TrainTask, Trainer, BEST_DIR};
use crate::progress::{JsonlLog, Progress};
use crate::{Error, Result};

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

impl Trainer {
    /// Evaluates, updates the schedule (at epoch ends), best metric and early stopping, logs,
    /// plots and checkpoints. Returns whether to stop early.
    pub(super) fn evaluate<T: TrainTask>(
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
        // With a weight average, the average is what is evaluated (and kept as `best/`).
        let eval = self.with_average(|t| t.shared_evaluation(task))?;
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
        if self.out_dir.is_some() || self.collective.world_size() > 1 {
            // `best/` first: a kill between the two saves then resumes from before this
            // evaluation, which redoes it and rewrites `best/` identically (the other order could
            // leave `best/` behind a log that names a newer best step).
            if improved && self.config.save_best {
                self.with_average(|t| t.save_to(task, BEST_DIR))?;
            }
            self.save_latest(task)?;
            if self.config.plot {
                self.plot()?;
            }
        }
        Ok(stop)
    }
}
