//! The tasks of `rnn train`: each module builds its data, model and [`TrainTask`] and knows how
//! to evaluate, predict with (and, for generative tasks, sample from) its checkpoints, behind
//! one [`Task`] implementation. [`registry`] maps every [`TaskName`] to its implementation.
//!
//! [`TrainTask`]: rnn_train::trainer::TrainTask

pub mod classify;
pub mod digits;
pub mod forecast;
pub mod lm;
mod parts;
pub mod routine;
pub mod seq2seq;
pub mod synthetic;
pub mod tag;
mod valid;

use anyhow::Result;

pub use crate::run::TaskName;
use crate::run::{CheckpointRun, EvalRequest, PredictRequest, RunContext, SampleRequest};
use crate::run::{Task, TaskOptions, TrainOutcome};

/// Every task with its implementation, in the order of [`TaskName::ALL`] (a test checks that
/// none is missing).
static REGISTRY: [(TaskName, &dyn Task); 11] = [
    (TaskName::Routine, &routine::Routine),
    (TaskName::Adding, &synthetic::Synthetic),
    (TaskName::Copy, &synthetic::Synthetic),
    (TaskName::Dates, &seq2seq::EncoderDecoder),
    (TaskName::CharLm, &lm::LanguageModelling),
    (TaskName::WordLm, &lm::LanguageModelling),
    (TaskName::Classify, &classify::Classify),
    (TaskName::Tag, &tag::Tag),
    (TaskName::Seq2seq, &seq2seq::EncoderDecoder),
    (TaskName::Forecast, &forecast::Forecast),
    (TaskName::Digits, &digits::Digits),
];

/// The implementation of `task`.
pub fn registry(task: TaskName) -> &'static dyn Task {
    REGISTRY
        .iter()
        .find(|(name, _)| *name == task)
        .map_or(REGISTRY[0].1, |(_, implementation)| *implementation)
}

/// The options `task` reads, with its defaults.
pub fn options(task: TaskName) -> TaskOptions {
    registry(task).options(task)
}

/// Trains `ctx.task`, after refusing any option it does not read.
pub fn train(ctx: &RunContext) -> Result<TrainOutcome> {
    options(ctx.task).check(ctx.task, &ctx.opts)?;
    registry(ctx.task).train(ctx)
}

/// Evaluates a checkpoint; returns the result line.
pub fn eval(run: &CheckpointRun, req: impl Into<EvalRequest>) -> Result<String> {
    registry(run.task).eval(run, &req.into())
}

/// Runs a checkpoint on inputs; one output line per input.
pub fn predict(run: &CheckpointRun, req: impl Into<PredictRequest>) -> Result<Vec<String>> {
    registry(run.task).predict(run, &req.into())
}

/// Generates from a checkpoint.
pub fn sample(run: &CheckpointRun, req: impl Into<SampleRequest>) -> Result<Vec<String>> {
    registry(run.task).sample(run, &req.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_registry_lists_every_task_in_order() {
        let names: Vec<TaskName> = REGISTRY.iter().map(|(t, _)| *t).collect();
        assert_eq!(names, TaskName::ALL);
    }

    /// Every option of `rnn train` is read by some task (or by all): none is dead.
    #[test]
    fn every_option_is_read_by_a_task() {
        for key in crate::run::task_options::all_keys() {
            assert!(
                TaskName::ALL.iter().any(|t| options(*t).reads(&key)),
                "--{key} is read by no task"
            );
        }
    }

    /// A task's table names only real options.
    #[test]
    fn task_tables_name_real_options() {
        let keys = crate::run::task_options::all_keys();
        for t in TaskName::ALL {
            let o = options(t);
            let named = o.options.iter().map(|(k, _)| *k);
            for k in named.chain(o.refused.iter().map(|(k, _)| *k)) {
                assert!(
                    keys.iter().any(|x| x == k),
                    "{}: unknown option {k}",
                    t.as_str()
                );
            }
        }
    }
}
