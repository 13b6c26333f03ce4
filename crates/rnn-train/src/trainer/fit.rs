//! The training loop itself: batches, steps, host synchronisation and non-finite checks.

use candle_core::{DType, Tensor};

use super::parallel::Combined;
use super::{FitReport, NonFinitePolicy, PendingStep, StepCheck, TrainTask, Trainer, METRICS_FILE};
use crate::collective::check_agree;
use crate::optim::{clip_grad_norm_tensor, clip_grad_value, non_finite_markers};
use crate::progress::{JsonlLog, Progress};
use crate::{Error, Result};

impl Trainer {
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
        self.broadcast_parameters()?;
        let mut log = match self.writer_dir() {
            Some(dir) => Some(JsonlLog::open(&dir.join(METRICS_FILE), self.resumed)?),
            None => None,
        };
        let mut progress: Option<Progress> = None;
        self.started = std::time::Instant::now();
        let first_step = self.state.step;
        let mut train_time = std::time::Duration::ZERO;
        let mut done = self.budget_spent() || self.state.stopped_early;
        while !done {
            let epoch = self.state.epoch;
            let batching = std::time::Instant::now();
            let batches = task.train_batches(epoch, self.config.seed)?;
            train_time += batching.elapsed();
            if batches.is_empty() {
                return Err(Error::Invalid(format!(
                    "epoch {epoch} has no training batches (is the training data empty or smaller than one batch?)"
                )));
            }
            let n = batches.len() as u64;
            check_agree(
                &*self.collective,
                &format!("the number of training batches of epoch {epoch}"),
                n,
            )?;
            if progress.is_none() && self.config.progress && self.collective.rank() == 0 {
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
                self.reset_carries();
            }
            let start = self.state.batch_in_epoch as usize;
            for (i, batch) in batches.iter().enumerate().skip(start) {
                if self.budget_spent() {
                    break;
                }
                let stepping = std::time::Instant::now();
                self.train_one(task, batch, progress.as_ref())?;
                train_time += stepping.elapsed();
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
            self.reset_carries();
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
            train_steps: self.state.step - first_step,
            train_seconds: train_time.as_secs_f64(),
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
        let out = if self.parts().0 == 1 {
            let out = task.train_step(batch, &mut self.carries[0])?;
            if out.loss.elem_count() != 1 {
                return Err(Error::Invalid(format!(
                    "the training loss must be a scalar, got shape {:?}",
                    out.loss.shape()
                )));
            }
            let grads = out.loss.backward()?;
            Combined {
                grads,
                loss: out.loss,
                units: out.units,
            }
        } else {
            self.combined_step(task, batch)?
        };
        let mut grads = out.grads;
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

    /// The optimiser step, the weight average, the schedule's per-step update and the carried
    /// state's detachment.
    fn update(&mut self, grads: &candle_core::backprop::GradStore) -> Result<()> {
        self.optimizer.step(grads)?;
        self.update_average()?;
        let lr = self.schedule.on_step();
        self.optimizer.set_lr(lr);
        for carry in &mut self.carries {
            *carry = carry.take().map(|s| s.detach());
        }
        Ok(())
    }

    /// Forgets the carried state (epoch start, skipped step).
    fn reset_carries(&mut self) {
        self.carries = vec![None; self.config.grad_accum as usize];
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
    pub(super) fn sync(&mut self, progress: Option<&Progress>) -> Result<()> {
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
                self.reset_carries();
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
}
