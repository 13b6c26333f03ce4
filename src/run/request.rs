//! What `rnn eval`, `rnn sample` and `rnn predict` ask of a checkpoint, as plain data: the
//! command line fills these from its arguments, library callers build them directly. The
//! checkpoint and the device are not part of a request: they arrive as the
//! [`CheckpointRun`](super::CheckpointRun) the request runs on.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};

/// `rnn eval`: what to score a checkpoint on.
#[derive(Debug, Clone, PartialEq)]
pub struct EvalRequest {
    /// Data to evaluate on (the task's format); `None`: the task's validation data.
    pub data: Option<PathBuf>,
    /// MNIST label file accompanying `data`.
    pub labels: Option<PathBuf>,
    /// Batch size for evaluation.
    pub batch_size: usize,
}

/// `rnn sample`: how to generate from a checkpoint.
#[derive(Debug, Clone, PartialEq)]
pub struct SampleRequest {
    /// Text to continue.
    pub prompt: Option<String>,
    /// Softmax temperature (0 = greedy).
    pub temperature: f64,
    /// Keep only the K most likely tokens.
    pub top_k: Option<usize>,
    /// Nucleus sampling: keep the smallest set with this much probability.
    pub top_p: Option<f64>,
    /// Tokens to generate at most.
    pub max_len: usize,
    /// Samples to draw.
    pub num: usize,
    /// Seed.
    pub seed: u64,
}

/// `rnn predict`: the inputs to run a checkpoint on.
#[derive(Debug, Clone, PartialEq)]
pub struct PredictRequest {
    /// The input: text, or a file with one input per line (forecast: a CSV file).
    pub input: Option<String>,
    /// Beam size for translation (1 = greedy).
    pub beam: Option<usize>,
    /// Forecast: steps ahead.
    pub horizon: Option<usize>,
}

impl PredictRequest {
    /// The inputs: the lines of `input` if it names a file, else `input` itself.
    pub fn inputs(&self) -> Result<Vec<String>> {
        let Some(input) = &self.input else {
            bail!("--input is required: give a text or a file with one input per line");
        };
        let path = std::path::Path::new(input);
        if path.is_file() {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("--input {}: cannot read as UTF-8 text", input))?;
            let lines: Vec<String> = text
                .lines()
                .filter(|l| !l.trim().is_empty())
                .map(str::to_string)
                .collect();
            if lines.is_empty() {
                bail!("--input {input}: the file has no input (it is empty or blank)");
            }
            Ok(lines)
        } else {
            Ok(vec![input.clone()])
        }
    }
}

/// A request passed by reference converts by copying, so that functions taking
/// `impl Into<EvalRequest>` accept `&EvalRequest` as well as the command line's arguments.
impl From<&EvalRequest> for EvalRequest {
    fn from(req: &EvalRequest) -> Self {
        req.clone()
    }
}

/// See [`EvalRequest`]'s conversion.
impl From<&SampleRequest> for SampleRequest {
    fn from(req: &SampleRequest) -> Self {
        req.clone()
    }
}

/// See [`EvalRequest`]'s conversion.
impl From<&PredictRequest> for PredictRequest {
    fn from(req: &PredictRequest) -> Self {
        req.clone()
    }
}
