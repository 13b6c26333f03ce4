//! What a run reports: the evaluation log (`metrics.jsonl`), the learning-curve plots and
//! the summary of a fit.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

#[cfg(feature = "plot")]
use super::CURVES_STEM;
use super::{MainMetric, Trainer};
use crate::{Error, Result};

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
    /// Steps taken by this call (not counting those before a resume).
    pub train_steps: u64,
    /// Wall-clock seconds this call spent training: building the epochs' batches and the
    /// steps themselves (forward, backward, clipping, update, reading the loss back), not the
    /// evaluations, checkpoints or set-up. With deferred reads on an accelerator
    /// (`host_sync_every` > 1) a step's queued work may finish inside a later evaluation.
    pub train_seconds: f64,
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

    /// Mean wall-clock milliseconds per training step of this call ([`FitReport::train_seconds`]
    /// over [`FitReport::train_steps`]); `None` when no step was taken.
    pub fn ms_per_step(&self) -> Option<f64> {
        (self.train_steps > 0).then(|| self.train_seconds * 1e3 / self.train_steps as f64)
    }
}

impl Trainer {
    /// Without the `plot` feature (no `plotters`) there are no plots to write.
    #[cfg(not(feature = "plot"))]
    pub(super) fn plot(&self) -> Result<()> {
        Ok(())
    }

    #[cfg(feature = "plot")]
    pub(super) fn plot(&self) -> Result<()> {
        let Some(out) = self.writer_dir() else {
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

/// Keeps the records of `path` up to `step` (rewriting the file atomically if anything is cut)
/// and returns them. A missing file is an empty history.
pub(super) fn truncate_log(path: &Path, step: u64) -> Result<Vec<EvalRecord>> {
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
