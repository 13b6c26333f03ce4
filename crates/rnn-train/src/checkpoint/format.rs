//! The checkpoint's files: their names, the training state, and how each is encoded and read
//! back (safetensors for tensors, JSON for the rest), refusing what could not be read back.

use std::collections::HashMap;
use std::fs;
use std::io;
use std::path::Path;

use candle_core::{DType, Device, Tensor};
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
    pub(super) fn check_writable(&self) -> Result<()> {
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

pub(super) fn check_extra_file_name(file: &str) -> Result<()> {
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

pub(super) fn to_json<T: Serialize>(value: &T, file: &str) -> Result<Vec<u8>> {
    let mut bytes = serde_json::to_vec_pretty(value)
        .map_err(|e| Error::Invalid(format!("cannot serialise {file}: {e}")))?;
    bytes.push(b'\n');
    Ok(bytes)
}

/// Serialises `tensors` in the safetensors format with the `safetensors` crate (the one Candle
/// uses), with `{"format": "pt"}` metadata as PyTorch writes it. Returns bytes (not a file) so the
/// write goes through [`FileSystem`]. Refuses empty names and non-finite values, naming the tensor.
pub(super) fn encode_safetensors(tensors: &HashMap<String, Tensor>, what: &str) -> Result<Vec<u8>> {
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
pub(super) fn check_finite(tensor: &Tensor, name: &str, what: &str, refusing: &str) -> Result<()> {
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

pub(super) fn read_json<T: DeserializeOwned>(path: &Path) -> Result<T> {
    let bytes = read_required(path)?;
    serde_json::from_slice(&bytes).map_err(|e| json_error(path, &e))
}

/// Parses the content of a checkpoint's `config.json` as [`load`](super::load) does; `path`
/// only names the file in errors (invalid JSON is an error with the line and column).
pub fn parse_config(path: &Path, bytes: &[u8]) -> Result<serde_json::Value> {
    serde_json::from_slice(bytes).map_err(|e| json_error(path, &e))
}

pub(super) fn read_state(path: &Path) -> Result<TrainState> {
    parse_state(path, &read_required(path)?)
}

/// Parses the content of a checkpoint's `state.json` as [`load`](super::load) does, format
/// version check included; `path` only names the file in errors.
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

pub(super) fn read_safetensors(path: &Path, device: &Device) -> Result<HashMap<String, Tensor>> {
    parse_safetensors(path, &read_required(path)?, device)
}

/// Parses the content of a `model.safetensors` / `optimizer.safetensors` file as
/// [`load`](super::load) does (without the finiteness check of parameters); `path` only names
/// the file in errors.
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
