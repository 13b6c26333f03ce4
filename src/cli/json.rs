//! The documents `--json` prints for `rnn eval`, `rnn predict` and `rnn sample`: one JSON object
//! on one line of stdout (compact, so that a pipe reads one document per command; `jq .` shows
//! it indented). Each starts with the task and the checkpoint directory, then the command's own
//! fields; docs/CLI_JSON.md is the schema, with an example per command.

use anyhow::Result;
use serde::Serialize;

use crate::run::{CheckpointRun, EvalReport, Predictions, SampleRequest, Samples};

/// The fields every document starts with, then `body`'s.
#[derive(Serialize)]
struct Document<'a, T: Serialize> {
    /// The checkpoint's task (`classify`, `char-lm`, ...).
    task: &'a str,
    /// The checkpoint directory that was loaded (a run directory resolves to its best or
    /// latest checkpoint).
    checkpoint: String,
    #[serde(flatten)]
    body: T,
}

/// The body of `rnn sample`'s document: the settings it sampled with, then the samples.
#[derive(Serialize)]
struct SampleBody<'a> {
    prompt: Option<&'a str>,
    temperature: f64,
    top_k: Option<usize>,
    top_p: Option<f64>,
    max_len: usize,
    num: usize,
    seed: u64,
    #[serde(flatten)]
    samples: &'a Samples,
}

/// `body` under the task and checkpoint of `run`, as one line of JSON.
fn document(run: &CheckpointRun, body: impl Serialize) -> Result<String> {
    Ok(serde_json::to_string(&Document {
        task: run.task.as_str(),
        checkpoint: run.dir.to_string_lossy().into_owned(),
        body,
    })?)
}

/// `rnn eval --json`: `{"task", "checkpoint", "data", "split", "metrics", "count", "unit",
/// "summary"}`.
pub fn eval_document(run: &CheckpointRun, report: &EvalReport) -> Result<String> {
    document(run, report)
}

/// `rnn predict --json`: `{"task", "checkpoint", "predictions": [{"input", "output"}]}`.
pub fn predict_document(run: &CheckpointRun, predictions: &Predictions) -> Result<String> {
    document(run, predictions)
}

/// `rnn sample --json`: `{"task", "checkpoint", "prompt", "temperature", "top_k", "top_p",
/// "max_len", "num", "seed", "samples"}`, the settings as `req` gave them.
pub fn sample_document(
    run: &CheckpointRun,
    req: &SampleRequest,
    samples: &Samples,
) -> Result<String> {
    document(
        run,
        SampleBody {
            prompt: req.prompt.as_deref(),
            temperature: req.temperature,
            top_k: req.top_k,
            top_p: req.top_p,
            max_len: req.max_len,
            num: req.num,
            seed: req.seed,
            samples,
        },
    )
}
