//! Checkpoints as `rnn eval`, `sample` and `predict` read them: finding the checkpoint inside a
//! run directory, and loading it with the task that wrote it.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use candle_core::{DType, Device};
use candle_nn::{VarBuilder, VarMap};
use rnn_train::checkpoint::{self, LoadedCheckpoint};
use rnn_train::trainer::LATEST_DIR;

use super::task_name::TaskName;

/// The checkpoint directory inside `dir`: `dir` itself when it holds `state.json`, else
/// `dir/best` (when `prefer_best`) or `dir/checkpoint`.
pub fn resolve_checkpoint(dir: &Path, prefer_best: bool) -> Result<PathBuf> {
    if dir.join(checkpoint::STATE_FILE).is_file() {
        return Ok(dir.to_path_buf());
    }
    let order = if prefer_best {
        ["best", LATEST_DIR]
    } else {
        [LATEST_DIR, "best"]
    };
    for sub in order {
        let d = dir.join(sub);
        if d.join(checkpoint::STATE_FILE).is_file() {
            return Ok(d);
        }
    }
    if !dir.exists() {
        bail!("checkpoint {}: no such directory", dir.display());
    }
    bail!(
        "{}: not a checkpoint (no state.json in it, nor in its checkpoint/ or best/ subdirectory)",
        dir.display()
    )
}

/// A checkpoint loaded for `eval`, `sample` or `predict`, with the task that wrote it.
pub struct CheckpointRun {
    /// The checkpoint directory.
    pub dir: PathBuf,
    /// Its contents.
    pub loaded: LoadedCheckpoint,
    /// The task recorded in `config.json`.
    pub task: TaskName,
    /// The `model` entry of `config.json` (what the task's `checkpoint_config` wrote).
    pub model: serde_json::Value,
    /// The device to run on.
    pub device: Device,
}

impl CheckpointRun {
    /// Loads the checkpoint under `dir` (see [`resolve_checkpoint`]) onto `device`.
    pub fn load(dir: &Path, device: &Device) -> Result<Self> {
        let dir = resolve_checkpoint(dir, true)?;
        let loaded = checkpoint::load(&dir, device)?;
        let model = loaded.config.get("model").cloned().unwrap_or_default();
        let task_name = model
            .get("task")
            .and_then(|t| t.as_str())
            .with_context(|| {
                format!(
                    "{}: no model.task entry; it was not written by `rnn train`",
                    dir.join(checkpoint::CONFIG_FILE).display()
                )
            })?;
        let task: TaskName = task_name.parse().with_context(|| {
            format!(
                "{}: model.task",
                dir.join(checkpoint::CONFIG_FILE).display()
            )
        })?;
        Ok(Self {
            dir,
            loaded,
            task,
            model,
            device: device.clone(),
        })
    }

    /// Deserialises `model[key]` (e.g. the model's config).
    pub fn model_entry<T: serde::de::DeserializeOwned>(&self, key: &str) -> Result<T> {
        let v = self.model.get(key).cloned().with_context(|| {
            format!(
                "{}: no model.{key} entry",
                self.dir.join(checkpoint::CONFIG_FILE).display()
            )
        })?;
        serde_json::from_value(v).with_context(|| {
            format!(
                "{}: model.{key} is malformed",
                self.dir.join(checkpoint::CONFIG_FILE).display()
            )
        })
    }

    /// The dtype of the saved parameters: the one most of them have (ties go to the dtype of
    /// the first parameter by name), so that the model is rebuilt the same way on every run and
    /// a parameter saved in another dtype is reported as the odd one out.
    pub fn dtype(&self) -> DType {
        let mut names: Vec<&String> = self.loaded.params.keys().collect();
        names.sort();
        // (dtype, count) in order of first appearance by name.
        let mut counts: Vec<(DType, usize)> = Vec::new();
        for name in names {
            let dtype = self.loaded.params[name].dtype();
            match counts.iter_mut().find(|(d, _)| *d == dtype) {
                Some((_, n)) => *n += 1,
                None => counts.push((dtype, 1)),
            }
        }
        // `max_by_key` keeps the last maximum: reverse so that the first one wins a tie.
        counts
            .into_iter()
            .rev()
            .max_by_key(|(_, n)| *n)
            .map(|(d, _)| d)
            .unwrap_or(DType::F32)
    }

    /// A VarBuilder for rebuilding the model, and after the model is built, call
    /// [`CheckpointRun::fill`] to copy the saved parameters in (validated by name, shape, dtype).
    pub fn var_builder(&self, varmap: &VarMap) -> VarBuilder<'static> {
        rnn_core::init::seeded_var_builder(varmap, 0, self.dtype(), &self.device)
    }

    /// Copies the saved parameters into `varmap` after checking names, shapes and dtypes.
    pub fn fill(&self, varmap: &VarMap) -> Result<()> {
        self.loaded
            .validate(&checkpoint::varmap_expected(varmap)?)
            .with_context(|| {
                format!(
                    "checkpoint {} does not match the model it describes",
                    self.dir.display()
                )
            })?;
        self.loaded.copy_into(varmap)?;
        Ok(())
    }

    /// The vocabulary saved as the extra file `name` (e.g. `vocab.json`); errors name the file.
    pub fn vocab(&self, name: &str) -> Result<rnn_train::data::Vocab> {
        let path = self.dir.join(name);
        let text = String::from_utf8(self.file(name)?)
            .with_context(|| format!("{}: not UTF-8", path.display()))?;
        rnn_train::data::Vocab::from_json(&text).with_context(|| path.display().to_string())
    }

    /// The bytes of an extra file (vocab.json, tokenizer.json), or an error naming it.
    pub fn file(&self, name: &str) -> Result<Vec<u8>> {
        self.loaded.read_file(name)?.with_context(|| {
            format!(
                "{}: missing from the checkpoint",
                self.dir.join(name).display()
            )
        })
    }
}
