//! The run's checkpoints: writing the latest and the best, and resuming from one.

use std::collections::HashMap;
use std::path::Path;

use candle_core::Tensor;
use rnn_core::RnnState;

use super::report::truncate_log;
use super::{LoopState, TrainTask, Trainer, LATEST_DIR, METRICS_FILE};
use crate::checkpoint::{self, TrainState};
use crate::collective::check_agree;
use crate::optim::OptimizerState;
use crate::{Error, Result};

/// Prefix of the trainer's own tensors (the carried state) in the checkpoint's tensor file.
const CARRY_PREFIX: &str = "trainer.carry.";

impl Trainer {
    /// Restores everything from the checkpoint in `dir` (usually `OUT/checkpoint`): parameters
    /// (validated by name, shape and dtype against the VarMap), optimiser, schedule, the loop's
    /// position, random-number counters, carried state and weight average. The configuration
    /// given to [`Trainer::new`] stays in force (so a resumed run may extend `epochs`), except the
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
        let average = self.take_average(&mut extra, state.average_count)?;
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
        self.set_global_carry(carry)?;
        // A run resumed without averaging drops the checkpoint's average.
        self.average = average.filter(|_| self.config.average.is_some());
        self.state = state;
        self.resumed = true;
        self.pending.clear();
        self.poisoned = None;
        if let Some(out) = self.writer_dir() {
            self.history = truncate_log(&out.join(METRICS_FILE), self.state.step)?;
        }
        check_agree(
            &*self.collective,
            "the step of the checkpoint resumed from",
            self.state.step,
        )?;
        Ok(())
    }

    pub(super) fn save_latest<T: TrainTask>(&mut self, task: &T) -> Result<()> {
        self.save_to(task, LATEST_DIR)
    }

    /// Writes a checkpoint of the current state to `OUT/{name}` (on rank 0; every rank of a
    /// data-parallel group takes part, since the carried state is gathered).
    pub(super) fn save_to<T: TrainTask>(&mut self, task: &T, name: &str) -> Result<()> {
        if self.out_dir.is_none() && self.collective.world_size() == 1 {
            return Ok(());
        }
        let dir = self.out_dir.as_ref().map(|out| out.join(name));
        self.write_checkpoint(task, dir.as_deref())
    }

    /// Writes a checkpoint of the current state into `dir`.
    ///
    /// In a data-parallel group every rank must call it (the carried state is gathered) and
    /// only rank 0 writes. Refused after a non-finite step was found (the parameters in memory
    /// are not the ones before the fault).
    pub fn checkpoint<T: TrainTask>(&mut self, task: &T, dir: &Path) -> Result<()> {
        self.write_checkpoint(task, Some(dir))
    }

    fn write_checkpoint<T: TrainTask>(&mut self, task: &T, dir: Option<&Path>) -> Result<()> {
        self.sync(None)?;
        let carry = self.global_carry()?;
        let Some(dir) = dir.filter(|_| self.collective.rank() == 0) else {
            return Ok(());
        };
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
        if let Some(carry) = &carry {
            extra.insert(format!("{CARRY_PREFIX}h"), carry.h.clone());
            if let Some(c) = &carry.c {
                extra.insert(format!("{CARRY_PREFIX}c"), c.clone());
            }
        }
        extra.extend(self.average_tensors());
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
