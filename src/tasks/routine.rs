//! (being written)

use anyhow::{bail, Result};

use crate::cli::run::{CheckpointRun, RunContext, TrainOutcome};
use crate::cli::{EvalArgs, PredictArgs, SampleArgs};

/// Trains the task.
pub fn train(ctx: &RunContext) -> Result<TrainOutcome> {
    bail!("task {} is not built yet", ctx.task.as_str())
}

/// Evaluates a checkpoint.
pub fn eval(run: &CheckpointRun, _args: &EvalArgs) -> Result<String> {
    bail!("eval of {} is not built yet", run.task.as_str())
}

/// Predicts with a checkpoint.
pub fn predict(run: &CheckpointRun, _args: &PredictArgs) -> Result<Vec<String>> {
    bail!("predict of {} is not built yet", run.task.as_str())
}

/// Samples from a checkpoint.
pub fn sample(run: &CheckpointRun, _args: &SampleArgs) -> Result<Vec<String>> {
    bail!("sample of {} is not built yet", run.task.as_str())
}
