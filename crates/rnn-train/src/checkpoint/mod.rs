//! Checkpoints: one directory that holds everything `rnn eval|sample|predict --checkpoint DIR`
//! need, written atomically.
//!
//! # Layout
//!
//! | file | content |
//! |---|---|
//! | [`MODEL_FILE`] `model.safetensors` | the parameters, under their PyTorch names |
//! | [`CONFIG_FILE`] `config.json` | model + training config, vocabulary or tokenizer reference |
//! | [`TOKENIZER_FILE`] `tokenizer.json` | the tokenizer, where one is used (an extra file) |
//! | [`STATE_FILE`] `state.json` | [`TrainState`]: epoch, step, optimiser state, seed, best metric |
//! | [`OPTIMIZER_FILE`] `optimizer.safetensors` | optional: optimiser moment tensors |
//!
//! Other files (e.g. [`VOCAB_FILE`] `vocab.json`) are added through `extra_files`.
//!
//! # Example
//!
//! Save a model's parameters with its configuration, then rebuild the model from the
//! configuration and load the parameters into it. (The [`Trainer`](crate::trainer::Trainer)
//! writes and reads its checkpoints itself; its module documentation shows a run
//! [resumed](crate::trainer#exact-resumption) with [`Trainer::resume`](crate::trainer::Trainer::resume).)
//!
//! ```
//! use candle_core::{DType, Device};
//! use candle_nn::VarMap;
//! use rnn_core::{init::seeded_var_builder, Mode, Rnn, RnnConfig};
//! use rnn_train::checkpoint::{self, varmap_tensors, TrainState};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let dev = Device::Cpu;
//! let cfg = RnnConfig::new(Mode::Gru, 4, 8).with_num_layers(2);
//! let varmap = VarMap::new();
//! let gru = Rnn::new(&cfg, seeded_var_builder(&varmap, 1, DType::F32, &dev))?;
//!
//! let dir = tempfile::tempdir()?;
//! let path = dir.path().join("checkpoint");
//! let mut state = TrainState::new(1, 1e-3); // seed, learning rate
//! state.step = 100;
//! let config = serde_json::json!({ "model": cfg });
//! checkpoint::save(&path, &varmap_tensors(&varmap)?, &config, &state, None, &[])?;
//!
//! // Later: the configuration rebuilds the model (with other weights), the checkpoint fills it.
//! let loaded = checkpoint::load(&path, &dev)?;
//! let cfg: RnnConfig = serde_json::from_value(loaded.config["model"].clone())?;
//! let fresh = VarMap::new();
//! let restored = Rnn::new(&cfg, seeded_var_builder(&fresh, 2, DType::F32, &dev))?;
//! let values = |rnn: &Rnn| -> candle_core::Result<Vec<Vec<f32>>> {
//!     rnn.named_parameters().iter().map(|(_, t)| t.flatten_all()?.to_vec1::<f32>()).collect()
//! };
//! assert_ne!(values(&restored)?, values(&gru)?); // seed 2: other weights so far
//! loaded.copy_into(&fresh)?; // checks every name, shape and dtype first
//! assert_eq!(values(&restored)?, values(&gru)?); // the model shares the VarMap's storage
//! assert_eq!(loaded.state.step, 100);
//! # Ok(())
//! # }
//! ```
//!
//! # Atomicity
//!
//! Everything is written into a fresh sibling directory `.{name}.tmp-{pid}-{nanos}-{n}`, every
//! file and the directory are fsynced, and only then is the directory renamed into place (an
//! existing checkpoint is first renamed to `.{name}.old-…` and removed once the new one is in
//! place). A failure before that final rename removes the temporary directory and leaves the
//! previous checkpoint untouched; a crash leaves at worst a stale hidden temporary directory
//! beside it, never a half-written `DIR`. (A crash exactly between the two renames leaves no
//! `DIR` but the complete previous checkpoint as `.{name}.old-…`, which [`load`] then names and
//! [`recover`] puts back. Each save, and [`recover`], removes the hidden leftovers of processes
//! that are no longer running.) Parameters or optimiser tensors
//! holding NaN or ±inf are refused before anything touches the disk.
//!
//! One writer per checkpoint directory: concurrent saves to the same `DIR` are not coordinated.

mod atomic;
mod format;
mod parameters;
#[cfg(test)]
mod tests;

use std::collections::{HashMap, HashSet};
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use candle_nn::VarMap;

use crate::{Error, Result};

pub use atomic::recover;
use atomic::{
    check_checkpoint_dir, check_replaceable, dead_save_siblings, discard_temp, replace_dir,
    split_dir, unique_sibling, write_all_files, FileSystem, RealFs,
};
use format::{
    check_extra_file_name, check_finite, encode_safetensors, read_json, read_safetensors,
    read_state, to_json,
};
pub use format::{
    parse_config, parse_safetensors, parse_state, TrainState, CONFIG_FILE, FORMAT_VERSION,
    MODEL_FILE, OPTIMIZER_FILE, STATE_FILE, TOKENIZER_FILE, VOCAB_FILE,
};
pub use parameters::{copy_into_varmap, validate_params, varmap_expected, varmap_tensors};

/// Everything a checkpoint holds, borrowed, ready to be [saved](Checkpoint::save).
#[derive(Debug, Clone, Copy)]
pub struct Checkpoint<'a> {
    /// Model parameters under their PyTorch names (see [`varmap_tensors`] for a `VarMap`).
    pub params: &'a HashMap<String, Tensor>,
    /// Model and training configuration, written as `config.json`.
    pub config: &'a serde_json::Value,
    /// Training state, written as `state.json`.
    pub state: &'a TrainState,
    /// Optimiser tensors (moments), written as `optimizer.safetensors` when given.
    pub extra_tensors: Option<&'a HashMap<String, Tensor>>,
    /// Further files as (file name, content), e.g. `tokenizer.json`, `vocab.json`.
    pub extra_files: &'a [(&'a str, &'a [u8])],
}

/// Saves a checkpoint into `dir`, atomically replacing any checkpoint there; shorthand for
/// [`Checkpoint::save`].
pub fn save(
    dir: &Path,
    params: &HashMap<String, Tensor>,
    config: &serde_json::Value,
    state: &TrainState,
    extra_tensors: Option<&HashMap<String, Tensor>>,
    extra_files: &[(&str, &[u8])],
) -> Result<()> {
    Checkpoint {
        params,
        config,
        state,
        extra_tensors,
        extra_files,
    }
    .save(dir)
}

impl Checkpoint<'_> {
    /// Writes the checkpoint into `dir` (creating its parent directories), atomically replacing
    /// any checkpoint already there; see the [module documentation](crate::checkpoint) for the protocol.
    ///
    /// Refused before anything is written: no parameters, a parameter or optimiser tensor with
    /// NaN or ±inf (the error names the tensor), an unsupported dtype, a non-finite learning rate
    /// or best metric, an extra file name that is not a plain file name or clashes with the
    /// files written here, and a `dir` that exists but is not a checkpoint (so a mistyped path
    /// never deletes unrelated data).
    pub fn save(&self, dir: &Path) -> Result<()> {
        self.save_with(dir, &RealFs)
    }

    /// [`save`](Self::save) through `fs`, so that tests can make any step fail.
    fn save_with(&self, dir: &Path, fs: &dyn FileSystem) -> Result<()> {
        let files = self.encode(dir)?;
        let (parent, name) = split_dir(dir)?;
        fs::create_dir_all(&parent).map_err(|source| Error::Io {
            path: parent.clone(),
            source,
        })?;
        check_replaceable(dir)?;
        // Leftovers of killed saves are full checkpoints: remove them (never those of a live
        // process) so that repeated kills do not fill the disk.
        for (_, stale) in dead_save_siblings(dir)? {
            let _ = fs::remove_dir_all(stale);
        }

        let temp = unique_sibling(&parent, &name, "tmp");
        fs::create_dir(&temp).map_err(|e| {
            Error::file(
                dir,
                format!(
                    "cannot create the temporary directory {}: {e}",
                    temp.display()
                ),
            )
        })?;
        if let Err(e) = write_all_files(fs, &temp, &files) {
            return Err(discard_temp(&temp, dir, e));
        }
        replace_dir(fs, &temp, dir, &parent, &name)
    }

    /// Checks everything and serialises every file in memory, so that a bad input is refused
    /// before the disk is touched.
    fn encode(&self, dir: &Path) -> Result<Vec<(String, Vec<u8>)>> {
        if self.params.is_empty() {
            return Err(Error::Invalid(format!(
                "refusing to write checkpoint {}: there are no parameters",
                dir.display()
            )));
        }
        self.state
            .check_writable()
            .map_err(|e| refused(dir, STATE_FILE, e))?;
        let mut seen = HashSet::new();
        for (file, _) in self.extra_files {
            check_extra_file_name(file)?;
            if !seen.insert(*file) {
                return Err(Error::Invalid(format!(
                    "extra file `{file}` is given twice for checkpoint {}",
                    dir.display()
                )));
            }
        }

        let mut files = Vec::with_capacity(4 + self.extra_files.len());
        files.push((
            MODEL_FILE.to_string(),
            encode_safetensors(self.params, "parameter")
                .map_err(|e| refused(dir, MODEL_FILE, e))?,
        ));
        if let Some(extra) = self.extra_tensors {
            files.push((
                OPTIMIZER_FILE.to_string(),
                encode_safetensors(extra, "optimiser tensor")
                    .map_err(|e| refused(dir, OPTIMIZER_FILE, e))?,
            ));
        }
        files.push((CONFIG_FILE.to_string(), to_json(self.config, CONFIG_FILE)?));
        for (file, bytes) in self.extra_files {
            files.push((file.to_string(), bytes.to_vec()));
        }
        // Last, for readers that look at a partial directory by hand: a present state.json
        // means the rest was written before it.
        files.push((STATE_FILE.to_string(), to_json(self.state, STATE_FILE)?));
        Ok(files)
    }
}

/// An input refused before writing, as an error naming the file it was meant for.
fn refused(dir: &Path, file: &str, e: Error) -> Error {
    Error::file(
        dir.join(file),
        format!("not saved (the previous checkpoint, if any, is unchanged): {e}"),
    )
}

/// A checkpoint read back by [`load`].
#[derive(Debug)]
pub struct LoadedCheckpoint {
    /// The checkpoint directory.
    pub dir: PathBuf,
    /// Model parameters under their PyTorch names.
    pub params: HashMap<String, Tensor>,
    /// The content of `config.json`.
    pub config: serde_json::Value,
    /// The content of `state.json`.
    pub state: TrainState,
    /// The content of `optimizer.safetensors`, if the checkpoint has one.
    pub extra_tensors: Option<HashMap<String, Tensor>>,
}

impl LoadedCheckpoint {
    /// The path of `file` inside the checkpoint directory (whether or not it exists).
    pub fn path(&self, file: &str) -> PathBuf {
        self.dir.join(file)
    }

    /// The content of the extra file `file` (e.g. [`TOKENIZER_FILE`]), or `None` if the
    /// checkpoint has no such file.
    pub fn read_file(&self, file: &str) -> Result<Option<Vec<u8>>> {
        let path = self.path(file);
        match fs::read(&path) {
            Ok(bytes) => Ok(Some(bytes)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(Error::Io { path, source }),
        }
    }

    /// [`validate_params`] of the loaded parameters, the error naming `model.safetensors`.
    pub fn validate(&self, expected: &[(String, Vec<usize>, DType)]) -> Result<()> {
        validate_params(&self.params, expected).map_err(|e| self.model_error(e))
    }

    /// [`copy_into_varmap`] of the loaded parameters, the error naming `model.safetensors`.
    pub fn copy_into(&self, varmap: &VarMap) -> Result<()> {
        copy_into_varmap(&self.params, varmap).map_err(|e| self.model_error(e))
    }

    fn model_error(&self, e: Error) -> Error {
        match e {
            Error::Invalid(message) => Error::file(self.path(MODEL_FILE), message),
            other => other,
        }
    }
}

/// Loads the checkpoint in `dir`, its tensors onto `device`.
///
/// Errors name the file and what was wrong: a missing directory (mentioning a previous
/// checkpoint left beside it by an interrupted save, if any), a missing, truncated or corrupt
/// `model.safetensors` / `optimizer.safetensors`, parameters holding NaN or ±inf, invalid JSON
/// (with the line), and a `state.json` of an unsupported format version.
pub fn load(dir: &Path, device: &Device) -> Result<LoadedCheckpoint> {
    check_checkpoint_dir(dir)?;
    // state.json first: its format version decides whether the rest can be read at all.
    let state = read_state(&dir.join(STATE_FILE))?;
    let config: serde_json::Value = read_json(&dir.join(CONFIG_FILE))?;
    let model_path = dir.join(MODEL_FILE);
    let params = read_safetensors(&model_path, device)?;
    for (name, tensor) in &params {
        check_finite(tensor, name, "parameter", "load non-finite values from")
            .map_err(|e| Error::file(&model_path, e.to_string()))?;
    }
    let optimizer_path = dir.join(OPTIMIZER_FILE);
    let extra_tensors = if optimizer_path.exists() {
        Some(read_safetensors(&optimizer_path, device)?)
    } else {
        None
    };
    Ok(LoadedCheckpoint {
        dir: dir.to_path_buf(),
        params,
        config,
        state,
        extra_tensors,
    })
}
