//! What `rnn eval`, `rnn sample` and `rnn predict` ask of a checkpoint, as plain data: the
//! command line fills these from its arguments, library callers build them directly. The
//! checkpoint and the device are not part of a request: they arrive as the
//! [`CheckpointRun`](super::CheckpointRun) the request runs on.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};

/// `rnn eval --batch-size` when not given.
pub const DEFAULT_EVAL_BATCH: usize = 64;

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
        } else if looks_like_path(input) {
            bail!(
                "--input {input}: no such file (a value that looks like a path is read as a file, not as the input text)"
            )
        } else {
            Ok(vec![input.clone()])
        }
    }
}

/// File extensions that make an `--input` value a file name.
const INPUT_EXTENSIONS: [&str; 9] = [
    ".txt", ".csv", ".tsv", ".conll", ".conllu", ".json", ".jsonl", ".gz", ".tok",
];

/// Whether an `--input` value that names no file was meant as one: a single word that ends in a
/// data file's extension, or that holds a `/` and a letter or starts like a path (`./`, `/`,
/// `~`). Dates such as `12/05/2026` and sentences with a slash stay text.
pub fn looks_like_path(input: &str) -> bool {
    let s = input.trim();
    if s.is_empty() || s.chars().any(char::is_whitespace) {
        return false;
    }
    let lower = s.to_ascii_lowercase();
    INPUT_EXTENSIONS.iter().any(|e| lower.ends_with(e))
        || s.starts_with("./")
        || s.starts_with("../")
        || s.starts_with("~/")
        || (s.contains('/') && (s.starts_with('/') || s.chars().any(|c| c.is_alphabetic())))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_like_inputs_are_told_from_text() {
        for p in [
            "reviews.txt",
            "data/test.tsv",
            "./x",
            "/tmp/in",
            "~/in.CSV",
            "dir/file",
        ] {
            assert!(looks_like_path(p), "{p}");
        }
        for t in [
            "12/05/2026",
            "The cat sat .",
            "and/or is fine",
            "great",
            "3.5",
            "",
        ] {
            assert!(!looks_like_path(t), "{t}");
        }
        let req = PredictRequest {
            input: Some("no/such/reviews.txt".into()),
            beam: None,
            horizon: None,
        };
        let e = req.inputs().unwrap_err().to_string();
        assert!(
            e.starts_with("--input no/such/reviews.txt: no such file"),
            "{e}"
        );
        let req = PredictRequest {
            input: Some("a fine film".into()),
            beam: None,
            horizon: None,
        };
        assert_eq!(req.inputs().unwrap(), vec!["a fine film".to_string()]);
    }
}
