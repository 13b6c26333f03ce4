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

use std::collections::{HashMap, HashSet};
use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use candle_core::{DType, Device, Tensor, Var};
use candle_nn::VarMap;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// Version of the checkpoint format this build writes and reads (stored in `state.json`).
pub const FORMAT_VERSION: u32 = 1;
/// The parameters, as safetensors, under their PyTorch names.
pub const MODEL_FILE: &str = "model.safetensors";
/// Model and training configuration (JSON, opaque to this module).
pub const CONFIG_FILE: &str = "config.json";
/// The training state, [`TrainState`] as JSON.
pub const STATE_FILE: &str = "state.json";
/// Optimiser tensors (moments), as safetensors; present only when some were saved.
pub const OPTIMIZER_FILE: &str = "optimizer.safetensors";
/// Conventional name of the tokenizer file, written through `extra_files`.
pub const TOKENIZER_FILE: &str = "tokenizer.json";
/// Conventional name of the vocabulary file, written through `extra_files`.
pub const VOCAB_FILE: &str = "vocab.json";

/// Files this module writes itself; `extra_files` may not use these names.
const RESERVED_FILES: [&str; 4] = [MODEL_FILE, CONFIG_FILE, STATE_FILE, OPTIMIZER_FILE];

/// Where training stands, saved as `state.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainState {
    /// Checkpoint format version ([`FORMAT_VERSION`] when written by this build).
    pub format_version: u32,
    /// Epochs completed when the checkpoint was written.
    pub epoch: u64,
    /// Optimiser steps taken so far over the whole run (global step).
    pub step: u64,
    /// Seed of the run's random number generators (shuffles, initialisation, dropout).
    pub seed: u64,
    /// Best value so far of the metric named [`best_metric_name`](Self::best_metric_name), if any
    /// evaluation has happened.
    pub best_metric: Option<f64>,
    /// Name of the metric [`best_metric`](Self::best_metric) tracks (e.g. `val_loss`); empty when
    /// none is tracked.
    #[serde(default)]
    pub best_metric_name: String,
    /// Learning rate in effect at the checkpoint (after any schedule).
    pub learning_rate: f64,
    /// Dropout call counter of the model (see `rnn_core::Rnn::dropout_calls`), so that a resumed
    /// run draws the same dropout masks as an uninterrupted one.
    pub dropout_calls: u64,
    /// The optimiser's JSON-serialisable state (hyper-parameters, step counts); its tensors go to
    /// [`OPTIMIZER_FILE`]. Opaque here: the optimiser owns its format.
    #[serde(default)]
    pub optimizer: serde_json::Value,
    /// The training loop's own resumable state (position in the epoch, schedule, early
    /// stopping, random-number counters, running sums); opaque here: the `Trainer` owns its
    /// format. `null` in checkpoints not written by the `Trainer`.
    #[serde(default)]
    pub trainer: serde_json::Value,
}

impl TrainState {
    /// The state at the start of a run: epoch and step 0, no best metric, no optimiser state.
    pub fn new(seed: u64, learning_rate: f64) -> Self {
        Self {
            format_version: FORMAT_VERSION,
            epoch: 0,
            step: 0,
            seed,
            best_metric: None,
            best_metric_name: String::new(),
            learning_rate,
            dropout_calls: 0,
            optimizer: serde_json::Value::Null,
            trainer: serde_json::Value::Null,
        }
    }

    /// Refuses what could not be read back: JSON has no NaN or infinity (serde_json would write
    /// `null`, which then fails to load as a number), and other format versions are not ours to
    /// write.
    fn check_writable(&self) -> Result<()> {
        if self.format_version != FORMAT_VERSION {
            return Err(Error::Invalid(format!(
                "TrainState.format_version is {}, but this build writes version {FORMAT_VERSION}",
                self.format_version
            )));
        }
        if !self.learning_rate.is_finite() {
            return Err(Error::Invalid(format!(
                "TrainState.learning_rate is {}; refusing to write a non-finite learning rate",
                self.learning_rate
            )));
        }
        if let Some(m) = self.best_metric {
            if !m.is_finite() {
                return Err(Error::Invalid(format!(
                    "TrainState.best_metric ({}) is {m}; refusing to write a non-finite metric",
                    self.best_metric_name
                )));
            }
        }
        Ok(())
    }
}

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

/// The tensors of `varmap` under their names (shared, not copied), for [`save`].
pub fn varmap_tensors(varmap: &VarMap) -> Result<HashMap<String, Tensor>> {
    let vars = lock_varmap(varmap)?;
    Ok(vars
        .iter()
        .map(|(name, var)| (name.clone(), var.as_tensor().clone()))
        .collect())
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

/// Checks that `loaded` holds exactly the `expected` (name, shape, dtype) parameters.
///
/// Every problem is reported at once (missing names, unexpected names, wrong shapes, wrong
/// dtypes), each naming the tensor, what was expected and what was found.
pub fn validate_params(
    loaded: &HashMap<String, Tensor>,
    expected: &[(String, Vec<usize>, DType)],
) -> Result<()> {
    let mut problems = Vec::new();
    let mut expected_names = HashSet::new();
    for (name, shape, dtype) in expected {
        if !expected_names.insert(name.as_str()) {
            // A model listing a name twice is a bug in the caller, not in the checkpoint.
            return Err(Error::Invalid(format!(
                "the expected parameters list `{name}` twice"
            )));
        }
        match loaded.get(name) {
            None => problems.push(format!(
                "`{name}` is missing (expected shape {shape:?}, dtype {})",
                dtype.as_str()
            )),
            Some(t) => {
                if t.dims() != shape.as_slice() {
                    problems.push(format!(
                        "`{name}` has shape {:?}, expected {shape:?}",
                        t.dims()
                    ));
                }
                if t.dtype() != *dtype {
                    problems.push(format!(
                        "`{name}` has dtype {}, expected {}",
                        t.dtype().as_str(),
                        dtype.as_str()
                    ));
                }
            }
        }
    }
    let mut unexpected: Vec<(&String, &Tensor)> = loaded
        .iter()
        .filter(|(name, _)| !expected_names.contains(name.as_str()))
        .collect();
    unexpected.sort_by(|a, b| a.0.cmp(b.0));
    for (name, t) in unexpected {
        problems.push(format!(
            "`{name}` (shape {:?}, dtype {}) is not a parameter of the model",
            t.dims(),
            t.dtype().as_str()
        ));
    }
    if problems.is_empty() {
        return Ok(());
    }
    Err(Error::Invalid(format!(
        "checkpoint parameters do not match the model ({} problem{}): {}",
        problems.len(),
        if problems.len() == 1 { "" } else { "s" },
        problems.join("; ")
    )))
}

/// The (name, shape, dtype) of every variable of `varmap`, sorted by name, for
/// [`validate_params`].
pub fn varmap_expected(varmap: &VarMap) -> Result<Vec<(String, Vec<usize>, DType)>> {
    let vars = lock_varmap(varmap)?;
    Ok(expected_of(&vars))
}

/// Copies `loaded` into the variables of `varmap`, after checking with [`validate_params`] that
/// names, shapes and dtypes match exactly; on a mismatch no variable is changed. Values move to
/// each variable's device.
pub fn copy_into_varmap(loaded: &HashMap<String, Tensor>, varmap: &VarMap) -> Result<()> {
    // One lock for both the check and the copy, so the checked map is the one written.
    let vars = lock_varmap(varmap)?;
    validate_params(loaded, &expected_of(&vars))?;
    // Move everything first: a failing device copy then leaves every variable unchanged.
    let mut moved = Vec::with_capacity(vars.len());
    for (name, var) in vars.iter() {
        let value = loaded
            .get(name)
            .ok_or_else(|| Error::Invalid(format!("`{name}` is missing from the checkpoint")))?;
        moved.push((name, var, value.to_device(var.device())?));
    }
    for (name, var, value) in moved {
        var.set(&value)
            .map_err(|e| Error::Invalid(format!("cannot set parameter `{name}`: {e}")))?;
    }
    Ok(())
}

fn lock_varmap(varmap: &VarMap) -> Result<std::sync::MutexGuard<'_, HashMap<String, Var>>> {
    varmap
        .data()
        .lock()
        .map_err(|_| Error::Invalid("the VarMap's lock is poisoned".to_string()))
}

fn expected_of(vars: &HashMap<String, Var>) -> Vec<(String, Vec<usize>, DType)> {
    let mut expected: Vec<_> = vars
        .iter()
        .map(|(name, var)| (name.clone(), var.dims().to_vec(), var.dtype()))
        .collect();
    expected.sort_by(|a, b| a.0.cmp(&b.0));
    expected
}

// ---------------------------------------------------------------------------------------------
// Writing

/// The file-system operations of a save, so that tests can fail any of them half-way.
trait FileSystem {
    /// Creates `path` (which must not exist), writes `bytes` and makes them durable.
    fn write_file(&self, path: &Path, bytes: &[u8]) -> io::Result<()>;
    /// Makes the entries of directory `path` durable.
    fn sync_dir(&self, path: &Path) -> io::Result<()>;
    /// Renames `from` to `to`.
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()>;
}

/// The real file system.
struct RealFs;

impl FileSystem for RealFs {
    fn write_file(&self, path: &Path, bytes: &[u8]) -> io::Result<()> {
        let mut file = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(path)?;
        file.write_all(bytes)?;
        file.sync_all()
    }

    fn sync_dir(&self, path: &Path) -> io::Result<()> {
        // Unix needs the directory itself fsynced for new entries and renames to survive a
        // power loss; other platforms cannot open a directory as a file and have no equivalent.
        #[cfg(unix)]
        {
            fs::File::open(path)?.sync_all()
        }
        #[cfg(not(unix))]
        {
            let _ = path;
            Ok(())
        }
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        fs::rename(from, to)
    }
}

fn write_all_files(fs: &dyn FileSystem, temp: &Path, files: &[(String, Vec<u8>)]) -> Result<()> {
    for (file, bytes) in files {
        let path = temp.join(file);
        fs.write_file(&path, bytes)
            .map_err(|e| Error::file(file, format!("cannot write {}: {e}", path.display())))?;
    }
    fs.sync_dir(temp).map_err(|e| {
        Error::file(
            temp,
            format!("cannot sync the temporary checkpoint directory: {e}"),
        )
    })
}

/// Removes the temporary directory after a failure and turns `e` into an error naming `dir`
/// and saying that the previous checkpoint is intact.
fn discard_temp(temp: &Path, dir: &Path, e: Error) -> Error {
    let cleanup = match fs::remove_dir_all(temp) {
        Ok(()) => String::new(),
        Err(r) => format!(
            "; the temporary directory {} could not be removed ({r})",
            temp.display()
        ),
    };
    let what = match e {
        // The file-name-only path given by `write_all_files` reads better inside the message.
        Error::File { path, message } if path.is_relative() && path.components().count() == 1 => {
            format!("{}: {message}", path.display())
        }
        other => other.to_string(),
    };
    Error::file(
        dir,
        format!("checkpoint not saved, the previous one (if any) is unchanged: {what}{cleanup}"),
    )
}

/// Moves the complete `temp` into place as `dir`, keeping the previous checkpoint until the new
/// one is there.
fn replace_dir(
    fs: &dyn FileSystem,
    temp: &Path,
    dir: &Path,
    parent: &Path,
    name: &str,
) -> Result<()> {
    let backup = if dir.exists() {
        let backup = unique_sibling(parent, name, "old");
        if let Err(e) = fs.rename(dir, &backup) {
            let e = Error::Invalid(format!(
                "cannot move the previous checkpoint aside to {}: {e}",
                backup.display()
            ));
            return Err(discard_temp(temp, dir, e));
        }
        Some(backup)
    } else {
        None
    };
    if let Err(e) = fs.rename(temp, dir) {
        let restore = match &backup {
            Some(backup) => match fs.rename(backup, dir) {
                Ok(()) => String::new(),
                Err(r) => format!(
                    " (and the previous checkpoint could not be moved back from {}: {r})",
                    backup.display()
                ),
            },
            None => String::new(),
        };
        let e = Error::Invalid(format!(
            "cannot rename {} into place: {e}{restore}",
            temp.display()
        ));
        return Err(discard_temp(temp, dir, e));
    }
    fs.sync_dir(parent).map_err(|e| {
        Error::file(
            parent,
            format!(
                "checkpoint {} written, but its parent directory could not be synced: {e}",
                dir.display()
            ),
        )
    })?;
    if let Some(backup) = backup {
        fs::remove_dir_all(&backup).map_err(|e| {
            Error::file(
                &backup,
                format!(
                    "checkpoint {} written, but the previous one could not be removed: {e}",
                    dir.display()
                ),
            )
        })?;
    }
    Ok(())
}

/// The process id and kind (`tmp` or `old`) of a sibling that a save of checkpoint `name`
/// creates (`.NAME.KIND-PID-NANOS-N`), or `None` for any other file name.
fn save_sibling(file_name: &str, name: &str) -> Option<(&'static str, u32)> {
    let rest = file_name
        .strip_prefix('.')?
        .strip_prefix(name)?
        .strip_prefix('.')?;
    let (kind, rest) = if let Some(r) = rest.strip_prefix("tmp-") {
        ("tmp", r)
    } else {
        ("old", rest.strip_prefix("old-")?)
    };
    let mut parts = rest.split('-');
    let pid = parts.next()?.parse().ok()?;
    let nanos_and_n_are_numbers =
        parts.clone().count() == 2 && parts.all(|p| p.parse::<u128>().is_ok());
    nanos_and_n_are_numbers.then_some((kind, pid))
}

/// Whether process `pid` may still be running (always `true` where `/proc` is not available,
/// so that nothing of a live writer is ever removed).
fn process_may_be_alive(pid: u32) -> bool {
    let proc = Path::new("/proc");
    !proc.join("self").exists() || proc.join(pid.to_string()).exists()
}

/// The save siblings of checkpoint `dir` left by processes that are no longer running, with
/// their kind (`tmp`: an unfinished write, `old`: the previous checkpoint moved aside).
fn dead_save_siblings(dir: &Path) -> Result<Vec<(&'static str, PathBuf)>> {
    let (parent, name) = split_dir(dir)?;
    let Ok(entries) = fs::read_dir(&parent) else {
        return Ok(Vec::new());
    };
    let mut out = Vec::new();
    for entry in entries.flatten() {
        let file_name = entry.file_name();
        let Some(file_name) = file_name.to_str() else {
            continue;
        };
        if let Some((kind, pid)) = save_sibling(file_name, &name) {
            if pid != std::process::id() && !process_may_be_alive(pid) {
                out.push((kind, entry.path()));
            }
        }
    }
    out.sort();
    Ok(out)
}

/// Repairs what a killed save of checkpoint `dir` can leave behind, before a run resumes from
/// it: if `dir` holds no checkpoint but the previous checkpoint was moved aside
/// (`.NAME.old-*`, a kill between the two renames of [`Checkpoint::save`]), the newest
/// such backup that loads is renamed back into place; then unfinished writes (`.NAME.tmp-*`)
/// and other backups of processes that are no longer running are removed. Returns the backup
/// that was restored, if any. Siblings of running processes are never touched.
pub fn recover(dir: &Path) -> Result<Option<PathBuf>> {
    let siblings = dead_save_siblings(dir)?;
    let mut restored = None;
    if !dir.join(STATE_FILE).is_file() {
        let mut backups: Vec<(u64, &PathBuf)> = siblings
            .iter()
            .filter(|(kind, _)| *kind == "old")
            .filter_map(|(_, path)| {
                let state = read_state(&path.join(STATE_FILE)).ok()?;
                load(path, &Device::Cpu).ok()?;
                Some((state.step, path))
            })
            .collect();
        backups.sort();
        if let Some((_, backup)) = backups.last() {
            if dir.exists() {
                // Only an empty directory can be here (a save never leaves anything else).
                fs::remove_dir(dir).map_err(|source| Error::Io {
                    path: dir.to_path_buf(),
                    source,
                })?;
            }
            fs::rename(backup, dir).map_err(|e| {
                Error::file(
                    dir,
                    format!("cannot restore the backup {}: {e}", backup.display()),
                )
            })?;
            restored = Some((*backup).clone());
        }
    }
    for (_, path) in &siblings {
        if Some(path) != restored.as_ref() {
            // Best effort: a leftover that cannot be removed costs only disk space.
            let _ = fs::remove_dir_all(path);
        }
    }
    Ok(restored)
}

/// The parent (`.` for a bare name) and the final component of `dir`.
fn split_dir(dir: &Path) -> Result<(PathBuf, String)> {
    let name = dir
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| {
            Error::Invalid(format!(
                "checkpoint path {} must end in a UTF-8 directory name",
                dir.display()
            ))
        })?
        .to_string();
    let parent = match dir.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    Ok((parent, name))
}

/// `dir` may be replaced if it does not exist, is empty, or is a checkpoint; anything else could
/// be the user's data behind a mistyped path.
fn check_replaceable(dir: &Path) -> Result<()> {
    let meta = match fs::symlink_metadata(dir) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(source) => {
            return Err(Error::Io {
                path: dir.to_path_buf(),
                source,
            })
        }
    };
    if !meta.is_dir() {
        return Err(Error::file(
            dir,
            "exists and is not a directory; refusing to replace it with a checkpoint",
        ));
    }
    let mut entries = fs::read_dir(dir).map_err(|source| Error::Io {
        path: dir.to_path_buf(),
        source,
    })?;
    let is_empty = entries.next().is_none();
    if is_empty || dir.join(STATE_FILE).exists() || dir.join(MODEL_FILE).exists() {
        return Ok(());
    }
    Err(Error::file(
        dir,
        format!(
            "exists and is not a checkpoint (no {STATE_FILE} or {MODEL_FILE}); refusing to \
             replace it"
        ),
    ))
}

/// A fresh sibling name `.{name}.{kind}-{pid}-{nanos}-{n}` of `dir`; the counter keeps names
/// distinct between threads of one process within one clock tick.
fn unique_sibling(parent: &Path, name: &str, kind: &str) -> PathBuf {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    parent.join(format!(".{name}.{kind}-{}-{nanos}-{n}", std::process::id()))
}

fn check_extra_file_name(file: &str) -> Result<()> {
    let plain = !file.is_empty()
        && file != "."
        && file != ".."
        && !file.contains(['/', '\\'])
        && Path::new(file).components().count() == 1;
    if !plain {
        return Err(Error::Invalid(format!(
            "extra checkpoint file `{file}` must be a plain file name"
        )));
    }
    if RESERVED_FILES.contains(&file) {
        return Err(Error::Invalid(format!(
            "extra checkpoint file `{file}` clashes with a file the checkpoint writes itself"
        )));
    }
    Ok(())
}

fn to_json<T: Serialize>(value: &T, file: &str) -> Result<Vec<u8>> {
    let mut bytes = serde_json::to_vec_pretty(value)
        .map_err(|e| Error::Invalid(format!("cannot serialise {file}: {e}")))?;
    bytes.push(b'\n');
    Ok(bytes)
}

/// Serialises `tensors` in the safetensors format with the `safetensors` crate (the one Candle
/// uses), with `{"format": "pt"}` metadata as PyTorch writes it. Returns bytes (not a file) so the
/// write goes through [`FileSystem`]. Refuses empty names and non-finite values, naming the tensor.
fn encode_safetensors(tensors: &HashMap<String, Tensor>, what: &str) -> Result<Vec<u8>> {
    let mut entries: Vec<(&String, Tensor)> = Vec::with_capacity(tensors.len());
    for (name, tensor) in tensors {
        if name.is_empty() || name.as_str() == "__metadata__" {
            return Err(Error::Invalid(format!(
                "{what} name `{name}` cannot be stored in safetensors"
            )));
        }
        if matches!(
            tensor.dtype(),
            DType::F4 | DType::F6E2M3 | DType::F6E3M2 | DType::F8E8M0
        ) {
            return Err(Error::Invalid(format!(
                "{what} `{name}` has dtype {}, which checkpoints do not support",
                tensor.dtype().as_str()
            )));
        }
        check_finite(tensor, name, what, "write non-finite values to")?;
        entries.push((name, tensor.to_device(&Device::Cpu)?.contiguous()?));
    }
    entries.sort_by(|a, b| a.0.cmp(b.0));
    let metadata = HashMap::from([("format".to_string(), "pt".to_string())]);
    safetensors::serialize(entries.iter().map(|(n, t)| (n.as_str(), t)), Some(metadata))
        .map_err(|e| Error::Invalid(format!("cannot serialise the {what}s: {e}")))
}

/// Refuses a floating-point tensor holding NaN or ±inf, naming it and the first bad element.
/// `refusing` completes "refusing to ... a checkpoint" in the error.
fn check_finite(tensor: &Tensor, name: &str, what: &str, refusing: &str) -> Result<()> {
    let t = match tensor.dtype() {
        DType::F16 | DType::BF16 | DType::F32 | DType::F64 => tensor.clone(),
        dtype if dtype.is_float() => tensor.to_dtype(DType::F32)?,
        _ => return Ok(()),
    };
    // x - x is 0 for every finite x and NaN for NaN and ±inf, and a sum of zeros cannot
    // overflow, so one reduction on the tensor's own device answers the question.
    let probe = t
        .broadcast_sub(&t)?
        .sum_all()?
        .to_dtype(DType::F64)?
        .to_scalar::<f64>()?;
    if probe == 0.0 {
        return Ok(());
    }
    let values = t.flatten_all()?.to_dtype(DType::F64)?.to_vec1::<f64>()?;
    let (index, value) = values
        .iter()
        .enumerate()
        .find(|(_, v)| !v.is_finite())
        .map(|(i, v)| (i, *v))
        .unwrap_or((0, probe));
    Err(Error::Invalid(format!(
        "{what} `{name}` holds {value} (flat index {index} of {}, shape {:?}); refusing to \
         {refusing} a checkpoint",
        values.len(),
        tensor.dims()
    )))
}

// ---------------------------------------------------------------------------------------------
// Reading

fn check_checkpoint_dir(dir: &Path) -> Result<()> {
    match fs::metadata(dir) {
        Ok(m) if m.is_dir() => Ok(()),
        Ok(_) => Err(Error::file(
            dir,
            "is not a checkpoint directory (not a directory)",
        )),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            let hint = match split_dir(dir).ok().and_then(|(p, n)| left_behind(&p, &n)) {
                Some(backup) => format!(
                    "; a save was interrupted while replacing it: the previous checkpoint is at \
                     {} (rename it to {})",
                    backup.display(),
                    dir.display()
                ),
                None => String::new(),
            };
            Err(Error::file(
                dir,
                format!("checkpoint directory does not exist{hint}"),
            ))
        }
        Err(source) => Err(Error::Io {
            path: dir.to_path_buf(),
            source,
        }),
    }
}

/// A previous checkpoint moved aside by a save that then crashed before the new one was
/// renamed into place.
fn left_behind(parent: &Path, name: &str) -> Option<PathBuf> {
    let prefix = format!(".{name}.old-");
    let mut found: Vec<PathBuf> = fs::read_dir(parent)
        .ok()?
        .filter_map(|e| e.ok())
        .filter(|e| {
            e.file_name()
                .to_str()
                .is_some_and(|n| n.starts_with(&prefix))
        })
        .map(|e| e.path())
        .filter(|p| p.join(STATE_FILE).is_file())
        .collect();
    found.sort();
    found.pop()
}

fn read_required(path: &Path) -> Result<Vec<u8>> {
    fs::read(path).map_err(|source| {
        if source.kind() == io::ErrorKind::NotFound {
            Error::file(path, "missing: the checkpoint is incomplete")
        } else {
            Error::Io {
                path: path.to_path_buf(),
                source,
            }
        }
    })
}

/// A JSON error at its line, the message without serde's trailing "at line L column C".
fn json_error(path: &Path, e: &serde_json::Error) -> Error {
    let message = e.to_string();
    let suffix = format!(" at line {} column {}", e.line(), e.column());
    let message = message.strip_suffix(&suffix).unwrap_or(&message);
    Error::parse(
        path,
        e.line().max(1),
        format!("invalid JSON at column {}: {message}", e.column()),
    )
}

fn read_json<T: DeserializeOwned>(path: &Path) -> Result<T> {
    let bytes = read_required(path)?;
    serde_json::from_slice(&bytes).map_err(|e| json_error(path, &e))
}

/// Parses the content of a checkpoint's `config.json` as [`load`] does; `path` only names the
/// file in errors (invalid JSON is an error with the line and column).
pub fn parse_config(path: &Path, bytes: &[u8]) -> Result<serde_json::Value> {
    serde_json::from_slice(bytes).map_err(|e| json_error(path, &e))
}

fn read_state(path: &Path) -> Result<TrainState> {
    parse_state(path, &read_required(path)?)
}

/// Parses the content of a checkpoint's `state.json` as [`load`] does, format version check
/// included; `path` only names the file in errors.
pub fn parse_state(path: &Path, bytes: &[u8]) -> Result<TrainState> {
    // The version is checked on the untyped value first, so that a future format gets "version
    // not supported" rather than a confusing error about some field.
    let value: serde_json::Value =
        serde_json::from_slice(bytes).map_err(|e| json_error(path, &e))?;
    let Some(object) = value.as_object() else {
        return Err(Error::file(path, "expected a JSON object"));
    };
    let version = match object.get("format_version") {
        None => {
            return Err(Error::file(
                path,
                "no `format_version`: not a checkpoint state file",
            ))
        }
        Some(v) => v.as_u64().ok_or_else(|| {
            Error::file(
                path,
                format!("`format_version` must be a non-negative integer, found {v}"),
            )
        })?,
    };
    if version != u64::from(FORMAT_VERSION) {
        let who = if version > u64::from(FORMAT_VERSION) {
            "a newer"
        } else {
            "an older"
        };
        return Err(Error::file(
            path,
            format!(
                "checkpoint format version {version} is not supported (this build reads version \
                 {FORMAT_VERSION}); it was written by {who} version of rnn"
            ),
        ));
    }
    // Typed parse of the bytes again (not of `value`), so field errors keep their line.
    serde_json::from_slice(bytes).map_err(|e| json_error(path, &e))
}

fn read_safetensors(path: &Path, device: &Device) -> Result<HashMap<String, Tensor>> {
    parse_safetensors(path, &read_required(path)?, device)
}

/// Parses the content of a `model.safetensors` / `optimizer.safetensors` file as [`load`] does
/// (without the finiteness check of parameters); `path` only names the file in errors.
pub fn parse_safetensors(
    path: &Path,
    bytes: &[u8],
    device: &Device,
) -> Result<HashMap<String, Tensor>> {
    candle_core::safetensors::load_buffer(bytes, device).map_err(|e| {
        Error::file(
            path,
            format!(
                "not a valid safetensors file (truncated or corrupt? {} bytes): {e}",
                bytes.len()
            ),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_nn::Init;
    use serde_json::json;

    /// Fails one chosen step: writing a given file half-way (half its bytes reach the disk, as
    /// in a crash or a full disk), or renaming the temporary directory into place.
    #[derive(Default)]
    struct Faulty {
        fail_write_of: Option<&'static str>,
        fail_final_rename: bool,
    }

    impl FileSystem for Faulty {
        fn write_file(&self, path: &Path, bytes: &[u8]) -> io::Result<()> {
            let file = path.file_name().and_then(|n| n.to_str());
            if file.is_some() && file == self.fail_write_of {
                RealFs.write_file(path, &bytes[..bytes.len() / 2])?;
                return Err(io::Error::other("simulated failure half-way"));
            }
            RealFs.write_file(path, bytes)
        }

        fn sync_dir(&self, path: &Path) -> io::Result<()> {
            RealFs.sync_dir(path)
        }

        fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
            let from_temp = from
                .file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.contains(".tmp-"));
            if self.fail_final_rename && from_temp {
                return Err(io::Error::other("simulated rename failure"));
            }
            RealFs.rename(from, to)
        }
    }

    fn dev() -> Device {
        Device::Cpu
    }

    fn params(scale: f32) -> HashMap<String, Tensor> {
        let w: Vec<f32> = (0..6).map(|i| i as f32 * scale).collect();
        HashMap::from([
            (
                "rnn.weight_ih_l0".to_string(),
                Tensor::from_vec(w, (2, 3), &dev()).unwrap(),
            ),
            (
                "rnn.bias_ih_l0".to_string(),
                Tensor::from_vec(vec![scale, -scale], 2, &dev()).unwrap(),
            ),
        ])
    }

    fn state(step: u64) -> TrainState {
        TrainState {
            epoch: 3,
            step,
            best_metric: Some(0.25),
            best_metric_name: "val_loss".to_string(),
            dropout_calls: 17,
            optimizer: json!({"kind": "adam", "beta1": 0.9, "t": step}),
            ..TrainState::new(42, 1e-3)
        }
    }

    fn save_simple(dir: &Path, scale: f32, step: u64) {
        save(
            dir,
            &params(scale),
            &json!({"hidden": 3}),
            &state(step),
            None,
            &[],
        )
        .unwrap();
    }

    fn f32_bits(t: &Tensor) -> Vec<u32> {
        t.flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap()
            .iter()
            .map(|x| x.to_bits())
            .collect()
    }

    fn weight(dir: &Path) -> Vec<u32> {
        f32_bits(&load(dir, &dev()).unwrap().params["rnn.weight_ih_l0"])
    }

    /// Names in `parent` other than `keep`: temporary or backup directories left behind.
    fn leftovers(parent: &Path, keep: &str) -> Vec<String> {
        fs::read_dir(parent)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n != keep)
            .collect()
    }

    fn message(r: Result<impl std::fmt::Debug>) -> String {
        r.unwrap_err().to_string()
    }

    #[test]
    fn round_trip_is_bit_identical() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("runs").join("ckpt");
        let special = vec![
            0.0f32,
            -0.0,
            f32::MIN_POSITIVE / 3.0,
            f32::MAX,
            f32::MIN,
            1.0 / 3.0,
        ];
        let base = Tensor::from_vec(special.clone(), (2, 3), &dev()).unwrap();
        let mut p = HashMap::from([
            ("a.special".to_string(), base.clone()),
            // Non-contiguous and offset views must be written as their logical values.
            ("b.transposed".to_string(), base.t().unwrap()),
            ("c.narrowed".to_string(), base.narrow(1, 1, 2).unwrap()),
            (
                "d.f64".to_string(),
                Tensor::new(&[1e-300f64, -2.5, std::f64::consts::PI], &dev()).unwrap(),
            ),
            (
                "e.bf16".to_string(),
                Tensor::new(&[1.5f32, -3.0, 0.0078125], &dev())
                    .unwrap()
                    .to_dtype(DType::BF16)
                    .unwrap(),
            ),
            (
                "f.f16".to_string(),
                Tensor::new(&[65504f32, -0.5], &dev())
                    .unwrap()
                    .to_dtype(DType::F16)
                    .unwrap(),
            ),
            (
                "g.i64".to_string(),
                Tensor::new(&[i64::MIN, -1, i64::MAX], &dev()).unwrap(),
            ),
            (
                "h.u8".to_string(),
                Tensor::new(&[0u8, 7, 255], &dev()).unwrap(),
            ),
            ("i.scalar".to_string(), Tensor::new(2.5f32, &dev()).unwrap()),
        ]);
        p.insert(
            "j.u32".to_string(),
            Tensor::new(&[[1u32, 2], [3, u32::MAX]], &dev()).unwrap(),
        );
        let optim = HashMap::from([(
            "exp_avg.rnn.weight_ih_l0".to_string(),
            Tensor::new(&[[0.5f32, 0.25, -1e-8]], &dev()).unwrap(),
        )]);
        let config = json!({"model": {"kind": "lstm", "hidden": 3, "layers": [1, 2]},
                            "train": {"lr": 0.001}, "tokenizer": TOKENIZER_FILE});
        let st = state(99);
        let tokenizer = br#"{"version": "1.0"}"#;
        save(
            &dir,
            &p,
            &config,
            &st,
            Some(&optim),
            &[(TOKENIZER_FILE, tokenizer), (VOCAB_FILE, b"[\"a\", \"b\"]")],
        )
        .unwrap();

        let loaded = load(&dir, &dev()).unwrap();
        assert_eq!(loaded.dir, dir);
        assert_eq!(loaded.config, config);
        assert_eq!(loaded.state, st);
        let mut names: Vec<_> = loaded.params.keys().cloned().collect();
        names.sort();
        let mut expected: Vec<_> = p.keys().cloned().collect();
        expected.sort();
        assert_eq!(names, expected);
        for (name, t) in &p {
            let l = &loaded.params[name];
            assert_eq!(l.dims(), t.dims(), "{name}");
            assert_eq!(l.dtype(), t.dtype(), "{name}");
            // Compare raw bits through an exact widening (f16/bf16 -> f32 is exact).
            let bits = |x: &Tensor| -> Vec<u64> {
                match x.dtype() {
                    DType::F64 => x
                        .flatten_all()
                        .unwrap()
                        .to_vec1::<f64>()
                        .unwrap()
                        .iter()
                        .map(|v| v.to_bits())
                        .collect(),
                    DType::I64 => x
                        .flatten_all()
                        .unwrap()
                        .to_vec1::<i64>()
                        .unwrap()
                        .iter()
                        .map(|v| *v as u64)
                        .collect(),
                    DType::U8 | DType::U32 => x
                        .flatten_all()
                        .unwrap()
                        .to_dtype(DType::I64)
                        .unwrap()
                        .to_vec1::<i64>()
                        .unwrap()
                        .iter()
                        .map(|v| *v as u64)
                        .collect(),
                    _ => f32_bits(&x.to_dtype(DType::F32).unwrap())
                        .iter()
                        .map(|v| u64::from(*v))
                        .collect(),
                }
            };
            assert_eq!(bits(l), bits(t), "{name}");
        }
        let lo = loaded.extra_tensors.as_ref().unwrap();
        assert_eq!(
            f32_bits(&lo["exp_avg.rnn.weight_ih_l0"]),
            f32_bits(&optim["exp_avg.rnn.weight_ih_l0"])
        );
        assert_eq!(
            loaded.read_file(TOKENIZER_FILE).unwrap().unwrap(),
            tokenizer
        );
        assert_eq!(loaded.read_file("absent.json").unwrap(), None);
        // candle's own reader agrees (an independent check of the encoder).
        let direct = candle_core::safetensors::load(dir.join(MODEL_FILE), &dev()).unwrap();
        assert_eq!(f32_bits(&direct["a.special"]), f32_bits(&base));
        // Header: 8-byte aligned, PyTorch format metadata.
        let bytes = fs::read(dir.join(MODEL_FILE)).unwrap();
        let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
        assert_eq!(n % 8, 0);
        let header: serde_json::Value = serde_json::from_slice(&bytes[8..8 + n]).unwrap();
        assert_eq!(header["__metadata__"]["format"], "pt");
        assert_eq!(header["a.special"]["dtype"], "F32");
        assert_eq!(
            leftovers(dir.parent().unwrap(), "ckpt"),
            Vec::<String>::new()
        );
    }

    #[test]
    fn checkpoint_without_optimizer_tensors_loads_none() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("ckpt");
        save_simple(&dir, 1.0, 1);
        let loaded = load(&dir, &dev()).unwrap();
        assert!(loaded.extra_tensors.is_none());
        assert!(!dir.join(OPTIMIZER_FILE).exists());
    }

    #[test]
    fn overwrite_replaces_atomically_and_leaves_nothing_behind() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("ckpt");
        save_simple(&dir, 1.0, 1);
        // The old checkpoint had an optimiser file; the new one must not inherit it.
        save(
            &dir,
            &params(1.0),
            &json!({}),
            &state(1),
            Some(&params(0.5)),
            &[],
        )
        .unwrap();
        assert!(dir.join(OPTIMIZER_FILE).exists());
        save_simple(&dir, 2.0, 2);
        let loaded = load(&dir, &dev()).unwrap();
        assert_eq!(loaded.state.step, 2);
        assert_eq!(weight(&dir), f32_bits(&params(2.0)["rnn.weight_ih_l0"]));
        assert!(loaded.extra_tensors.is_none());
        assert_eq!(leftovers(root.path(), "ckpt"), Vec::<String>::new());
    }

    #[test]
    fn failure_half_way_keeps_the_previous_checkpoint() {
        for file in [
            MODEL_FILE,
            OPTIMIZER_FILE,
            CONFIG_FILE,
            TOKENIZER_FILE,
            STATE_FILE,
        ] {
            let root = tempfile::tempdir().unwrap();
            let dir = root.path().join("ckpt");
            save_simple(&dir, 1.0, 1);
            let before = weight(&dir);
            let fs = Faulty {
                fail_write_of: Some(file),
                ..Faulty::default()
            };
            let p = params(2.0);
            let err = Checkpoint {
                params: &p,
                config: &json!({"hidden": 4}),
                state: &state(2),
                extra_tensors: Some(&p),
                extra_files: &[(TOKENIZER_FILE, b"{}")],
            }
            .save_with(&dir, &fs)
            .unwrap_err()
            .to_string();
            assert!(err.contains(file), "{file}: {err}");
            assert!(err.contains("simulated failure"), "{err}");
            assert!(err.contains("unchanged"), "{err}");
            let loaded = load(&dir, &dev()).unwrap();
            assert_eq!(loaded.state.step, 1, "{file}");
            assert_eq!(loaded.config, json!({"hidden": 3}));
            assert_eq!(weight(&dir), before, "{file}");
            assert_eq!(
                leftovers(root.path(), "ckpt"),
                Vec::<String>::new(),
                "{file}"
            );
        }
    }

    #[test]
    fn failure_of_a_first_save_leaves_nothing() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("ckpt");
        let fs = Faulty {
            fail_write_of: Some(MODEL_FILE),
            ..Faulty::default()
        };
        let p = params(1.0);
        let c = Checkpoint {
            params: &p,
            config: &json!({}),
            state: &state(1),
            extra_tensors: None,
            extra_files: &[],
        };
        assert!(c.save_with(&dir, &fs).is_err());
        assert!(!dir.exists());
        assert_eq!(leftovers(root.path(), "ckpt"), Vec::<String>::new());
        let err = message(load(&dir, &dev()));
        assert!(
            err.contains("ckpt") && err.contains("does not exist"),
            "{err}"
        );
    }

    #[test]
    fn failed_final_rename_restores_the_previous_checkpoint() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("ckpt");
        save_simple(&dir, 1.0, 1);
        let before = weight(&dir);
        let fs = Faulty {
            fail_final_rename: true,
            ..Faulty::default()
        };
        let p = params(2.0);
        let err = Checkpoint {
            params: &p,
            config: &json!({}),
            state: &state(2),
            extra_tensors: None,
            extra_files: &[],
        }
        .save_with(&dir, &fs)
        .unwrap_err()
        .to_string();
        assert!(err.contains("simulated rename failure"), "{err}");
        assert_eq!(weight(&dir), before);
        assert_eq!(load(&dir, &dev()).unwrap().state.step, 1);
        assert_eq!(leftovers(root.path(), "ckpt"), Vec::<String>::new());
    }

    /// A process id that is not running (Linux `pid_max` is at most 2^22).
    const DEAD_PID: u32 = 999_999_999;

    #[test]
    fn save_sibling_names_are_recognised() {
        assert_eq!(
            save_sibling(".ckpt.tmp-12-345-6", "ckpt"),
            Some(("tmp", 12))
        );
        assert_eq!(save_sibling(".ckpt.old-7-8-9", "ckpt"), Some(("old", 7)));
        for other in [
            "ckpt",
            ".ckpt.tmp-12-345",
            ".ckpt.new-1-2-3",
            ".other.tmp-1-2-3",
            ".ckpt.tmp-x-2-3",
            ".ckpt.old-1-2-3-4",
        ] {
            assert_eq!(save_sibling(other, "ckpt"), None, "{other}");
        }
    }

    /// The state of a kill between the two renames of a save (`ckpt/` moved aside, the new one
    /// not yet in place) plus an unfinished write: `recover` puts the backup back and removes
    /// the leftovers of dead processes, never those of a live one.
    #[test]
    fn recover_restores_a_checkpoint_moved_aside_and_removes_dead_leftovers() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("ckpt");
        save_simple(&dir, 1.0, 1);
        let older = root.path().join(format!(".ckpt.old-{DEAD_PID}-1-0"));
        fs::rename(&dir, &older).unwrap();
        save_simple(&dir, 2.0, 2);
        let newer = root.path().join(format!(".ckpt.old-{DEAD_PID}-2-0"));
        fs::rename(&dir, &newer).unwrap();
        let torn = root.path().join(format!(".ckpt.tmp-{DEAD_PID}-3-0"));
        fs::create_dir(&torn).unwrap();
        fs::write(torn.join(MODEL_FILE), [1u8, 2, 3]).unwrap();
        let live = root.path().join(".ckpt.tmp-1-4-0");
        fs::create_dir(&live).unwrap();
        assert!(load(&dir, &dev()).is_err());

        assert_eq!(recover(&dir).unwrap(), Some(newer));
        assert_eq!(load(&dir, &dev()).unwrap().state.step, 2);
        assert_eq!(
            leftovers(root.path(), "ckpt"),
            vec![".ckpt.tmp-1-4-0".to_string()]
        );
        // Nothing to do the second time; a complete checkpoint is never replaced.
        assert_eq!(recover(&dir).unwrap(), None);
        assert_eq!(load(&dir, &dev()).unwrap().state.step, 2);
    }

    #[test]
    fn save_removes_the_leftovers_of_dead_processes_only() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("ckpt");
        save_simple(&dir, 1.0, 1);
        for name in [
            format!(".ckpt.tmp-{DEAD_PID}-1-0"),
            format!(".ckpt.old-{DEAD_PID}-2-0"),
            ".ckpt.tmp-1-3-0".to_string(),
        ] {
            fs::create_dir(root.path().join(name)).unwrap();
        }
        save_simple(&dir, 2.0, 2);
        assert_eq!(
            leftovers(root.path(), "ckpt"),
            vec![".ckpt.tmp-1-3-0".to_string()]
        );
        assert_eq!(load(&dir, &dev()).unwrap().state.step, 2);
    }

    #[test]
    fn stale_temp_dir_from_a_crash_does_not_disturb_load_or_save() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("ckpt");
        save_simple(&dir, 1.0, 1);
        // What a crash in the middle of writing leaves: a hidden sibling with a partial file.
        let stale = root.path().join(".ckpt.tmp-1-2-3");
        fs::create_dir(&stale).unwrap();
        fs::write(stale.join(MODEL_FILE), [1u8, 2, 3]).unwrap();
        assert_eq!(load(&dir, &dev()).unwrap().state.step, 1);
        save_simple(&dir, 2.0, 2);
        assert_eq!(load(&dir, &dev()).unwrap().state.step, 2);
    }

    #[test]
    fn crash_between_renames_is_reported_with_the_backup() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("ckpt");
        save_simple(&dir, 1.0, 1);
        let backup = root.path().join(".ckpt.old-1-2-3");
        fs::rename(&dir, &backup).unwrap();
        let err = message(load(&dir, &dev()));
        assert!(err.contains(".ckpt.old-1-2-3"), "{err}");
    }

    #[test]
    fn non_finite_parameters_are_refused_and_the_previous_checkpoint_kept() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("ckpt");
        save_simple(&dir, 1.0, 1);
        let before = weight(&dir);
        for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
            let mut p = params(2.0);
            p.insert(
                "rnn.weight_hh_l0".to_string(),
                Tensor::new(&[[1.0f32, 2.0], [bad, 0.0]], &dev()).unwrap(),
            );
            let err = message(save(&dir, &p, &json!({}), &state(2), None, &[]));
            assert!(err.contains("rnn.weight_hh_l0"), "{err}");
            assert!(err.contains(&format!("{}", bad as f64)), "{err}");
            assert!(err.contains("flat index 2"), "{err}");
            // In optimiser tensors too.
            let mut optim = params(1.0);
            optim.insert(
                "exp_avg_sq".to_string(),
                Tensor::new(&[bad], &dev()).unwrap(),
            );
            let err = message(save(
                &dir,
                &params(2.0),
                &json!({}),
                &state(2),
                Some(&optim),
                &[],
            ));
            assert!(err.contains("exp_avg_sq"), "{err}");
        }
        // NaN in f16 and f64 is caught as well.
        for dtype in [DType::F16, DType::BF16, DType::F64] {
            let mut p = params(2.0);
            p.insert(
                "x".to_string(),
                Tensor::new(&[f32::NAN], &dev())
                    .unwrap()
                    .to_dtype(dtype)
                    .unwrap(),
            );
            let err = message(save(&dir, &p, &json!({}), &state(2), None, &[]));
            assert!(
                err.contains("`x`") && err.contains("NaN"),
                "{dtype:?}: {err}"
            );
        }
        let mut st = state(2);
        st.learning_rate = f64::NAN;
        assert!(
            message(save(&dir, &params(2.0), &json!({}), &st, None, &[])).contains("learning_rate")
        );
        assert_eq!(weight(&dir), before);
        assert_eq!(load(&dir, &dev()).unwrap().state.step, 1);
        assert_eq!(leftovers(root.path(), "ckpt"), Vec::<String>::new());
    }

    #[test]
    fn truncated_or_corrupt_model_file_is_named() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("ckpt");
        save_simple(&dir, 1.0, 1);
        let model = dir.join(MODEL_FILE);
        let bytes = fs::read(&model).unwrap();
        for cut in [bytes.len() - 1, bytes.len() / 2, 9, 3, 0] {
            fs::write(&model, &bytes[..cut]).unwrap();
            let err = load(&dir, &dev()).unwrap_err();
            let Error::File { path, message } = &err else {
                panic!("cut {cut}: {err:?}");
            };
            assert_eq!(path, &model);
            assert!(message.contains("safetensors"), "{message}");
            assert!(err.to_string().contains(MODEL_FILE));
        }
        fs::write(&model, b"this is not a safetensors file at all").unwrap();
        assert!(message(load(&dir, &dev())).contains(MODEL_FILE));
        fs::remove_file(&model).unwrap();
        let err = message(load(&dir, &dev()));
        assert!(err.contains(MODEL_FILE) && err.contains("missing"), "{err}");
    }

    #[test]
    fn invalid_json_names_file_and_line() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("ckpt");
        for file in [STATE_FILE, CONFIG_FILE] {
            save_simple(&dir, 1.0, 1);
            fs::write(dir.join(file), "{\n  \"a\": 1,\n  \"b\": ]\n}\n").unwrap();
            match load(&dir, &dev()).unwrap_err() {
                Error::Parse { path, line, .. } => {
                    assert_eq!(path, dir.join(file));
                    assert_eq!(line, 3);
                }
                other => panic!("{file}: {other:?}"),
            }
        }
        // A well-formed state.json with a wrongly typed field: the line of the field.
        save_simple(&dir, 1.0, 1);
        let text = fs::read_to_string(dir.join(STATE_FILE)).unwrap();
        let broken = text.replace("\"epoch\": 3", "\"epoch\": \"three\"");
        let line = broken.lines().position(|l| l.contains("three")).unwrap() + 1;
        fs::write(dir.join(STATE_FILE), broken).unwrap();
        match load(&dir, &dev()).unwrap_err() {
            Error::Parse {
                path,
                line: l,
                message,
            } => {
                assert_eq!(path, dir.join(STATE_FILE));
                assert_eq!(l, line);
                assert!(message.contains("invalid type"), "{message}");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn unsupported_format_version_is_refused() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("ckpt");
        save_simple(&dir, 1.0, 1);
        let path = dir.join(STATE_FILE);
        let mut v: serde_json::Value = serde_json::from_slice(&fs::read(&path).unwrap()).unwrap();
        v["format_version"] = json!(FORMAT_VERSION + 1);
        fs::write(&path, serde_json::to_vec(&v).unwrap()).unwrap();
        let err = message(load(&dir, &dev()));
        assert!(err.contains(STATE_FILE), "{err}");
        assert!(
            err.contains(&format!("version {} is not supported", FORMAT_VERSION + 1)),
            "{err}"
        );
        v.as_object_mut().unwrap().remove("format_version");
        fs::write(&path, serde_json::to_vec(&v).unwrap()).unwrap();
        assert!(message(load(&dir, &dev())).contains("format_version"));
        // The writer refuses to write another version, too.
        let mut st = state(1);
        st.format_version = FORMAT_VERSION + 1;
        assert!(
            message(save(&dir, &params(1.0), &json!({}), &st, None, &[]))
                .contains("format_version")
        );
    }

    #[test]
    fn missing_directory_and_missing_files_are_named() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("nope");
        let err = message(load(&dir, &dev()));
        assert!(
            err.contains("nope") && err.contains("does not exist"),
            "{err}"
        );
        save_simple(&dir, 1.0, 1);
        fs::remove_file(dir.join(CONFIG_FILE)).unwrap();
        let err = message(load(&dir, &dev()));
        assert!(
            err.contains(CONFIG_FILE) && err.contains("missing"),
            "{err}"
        );
    }

    #[test]
    fn refuses_to_replace_something_that_is_not_a_checkpoint() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("data");
        fs::create_dir(&dir).unwrap();
        fs::write(dir.join("precious.txt"), b"keep me").unwrap();
        let err = message(save(&dir, &params(1.0), &json!({}), &state(1), None, &[]));
        assert!(err.contains("not a checkpoint"), "{err}");
        assert_eq!(fs::read(dir.join("precious.txt")).unwrap(), b"keep me");
        let file = root.path().join("file");
        fs::write(&file, b"x").unwrap();
        assert!(
            message(save(&file, &params(1.0), &json!({}), &state(1), None, &[]))
                .contains("not a directory")
        );
        // An empty directory is fine.
        let empty = root.path().join("empty");
        fs::create_dir(&empty).unwrap();
        save_simple(&empty, 1.0, 1);
        assert_eq!(load(&empty, &dev()).unwrap().state.step, 1);
    }

    #[test]
    fn bad_extra_file_names_and_empty_params_are_refused() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("ckpt");
        let p = params(1.0);
        for name in [
            "",
            "..",
            "../evil.json",
            "sub/x.json",
            STATE_FILE,
            MODEL_FILE,
        ] {
            let err = message(save(
                &dir,
                &p,
                &json!({}),
                &state(1),
                None,
                &[(name, b"{}")],
            ));
            assert!(err.contains(&format!("`{name}`")), "{name}: {err}");
        }
        let twice: [(&str, &[u8]); 2] = [(VOCAB_FILE, b"[]"), (VOCAB_FILE, b"[]")];
        assert!(message(save(&dir, &p, &json!({}), &state(1), None, &twice)).contains("twice"));
        let empty = HashMap::new();
        assert!(
            message(save(&dir, &empty, &json!({}), &state(1), None, &[])).contains("no parameters")
        );
        assert!(!dir.exists());
    }

    fn expected() -> Vec<(String, Vec<usize>, DType)> {
        vec![
            ("rnn.weight_ih_l0".to_string(), vec![2, 3], DType::F32),
            ("rnn.bias_ih_l0".to_string(), vec![2], DType::F32),
        ]
    }

    #[test]
    fn validate_params_accepts_an_exact_match() {
        validate_params(&params(1.0), &expected()).unwrap();
    }

    #[test]
    fn validate_params_reports_a_missing_tensor() {
        let mut p = params(1.0);
        p.remove("rnn.bias_ih_l0");
        let err = message(validate_params(&p, &expected()));
        assert!(
            err.contains("`rnn.bias_ih_l0` is missing (expected shape [2], dtype f32)"),
            "{err}"
        );
    }

    #[test]
    fn validate_params_reports_an_unexpected_tensor() {
        let mut p = params(1.0);
        p.insert(
            "rnn.weight_hh_l0".to_string(),
            Tensor::zeros((2, 2), DType::F32, &dev()).unwrap(),
        );
        let err = message(validate_params(&p, &expected()));
        assert!(
            err.contains("`rnn.weight_hh_l0` (shape [2, 2], dtype f32) is not a parameter"),
            "{err}"
        );
    }

    #[test]
    fn validate_params_reports_a_wrong_shape() {
        let mut p = params(1.0);
        p.insert(
            "rnn.weight_ih_l0".to_string(),
            Tensor::zeros((3, 2), DType::F32, &dev()).unwrap(),
        );
        let err = message(validate_params(&p, &expected()));
        assert!(
            err.contains("`rnn.weight_ih_l0` has shape [3, 2], expected [2, 3]"),
            "{err}"
        );
    }

    #[test]
    fn validate_params_reports_a_wrong_dtype() {
        let mut p = params(1.0);
        p.insert(
            "rnn.bias_ih_l0".to_string(),
            Tensor::zeros(2, DType::F64, &dev()).unwrap(),
        );
        let err = message(validate_params(&p, &expected()));
        assert!(
            err.contains("`rnn.bias_ih_l0` has dtype f64, expected f32"),
            "{err}"
        );
    }

    #[test]
    fn validate_params_reports_every_problem_at_once() {
        let p = HashMap::from([(
            "extra".to_string(),
            Tensor::zeros(1, DType::F32, &dev()).unwrap(),
        )]);
        let err = message(validate_params(&p, &expected()));
        assert!(err.contains("(3 problems)"), "{err}");
    }

    fn varmap() -> VarMap {
        let vm = VarMap::new();
        vm.get(
            (2, 3),
            "rnn.weight_ih_l0",
            Init::Const(0.0),
            DType::F32,
            &dev(),
        )
        .unwrap();
        vm.get(2, "rnn.bias_ih_l0", Init::Const(0.0), DType::F32, &dev())
            .unwrap();
        vm
    }

    #[test]
    fn copy_into_varmap_sets_values_through_a_checkpoint() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("ckpt");
        let source = varmap();
        source
            .data()
            .lock()
            .unwrap()
            .get("rnn.weight_ih_l0")
            .unwrap()
            .set(&params(1.5)["rnn.weight_ih_l0"])
            .unwrap();
        let p = varmap_tensors(&source).unwrap();
        save(&dir, &p, &json!({}), &state(1), None, &[]).unwrap();

        let loaded = load(&dir, &dev()).unwrap();
        let vm = varmap();
        loaded.validate(&varmap_expected(&vm).unwrap()).unwrap();
        loaded.copy_into(&vm).unwrap();
        let got = varmap_tensors(&vm).unwrap();
        assert_eq!(
            f32_bits(&got["rnn.weight_ih_l0"]),
            f32_bits(&params(1.5)["rnn.weight_ih_l0"])
        );
    }

    #[test]
    fn copy_into_varmap_changes_nothing_on_a_mismatch() {
        let vm = varmap();
        let mut p = params(1.0);
        p.insert(
            "rnn.bias_ih_l0".to_string(),
            Tensor::zeros(3, DType::F32, &dev()).unwrap(),
        );
        let err = message(copy_into_varmap(&p, &vm));
        assert!(
            err.contains("`rnn.bias_ih_l0` has shape [3], expected [2]"),
            "{err}"
        );
        let got = varmap_tensors(&vm).unwrap();
        assert_eq!(f32_bits(&got["rnn.weight_ih_l0"]), vec![0; 6]);
    }

    #[test]
    fn loaded_checkpoint_validation_errors_name_the_model_file() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("ckpt");
        save_simple(&dir, 1.0, 1);
        let loaded = load(&dir, &dev()).unwrap();
        let mut exp = expected();
        exp[0].1 = vec![4];
        let err = message(loaded.validate(&exp));
        assert!(
            err.contains(MODEL_FILE) && err.contains("rnn.weight_ih_l0"),
            "{err}"
        );
    }
}
