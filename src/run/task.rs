//! What a task can do with a run or a checkpoint ([`Task`]). The tasks implement it; the
//! registry in `crate::tasks` maps each [`TaskName`](super::TaskName) to its implementation.

use anyhow::{bail, Result};

use super::checkpoint::CheckpointRun;
use super::context::RunContext;
use super::fit::TrainOutcome;
use super::report::{EvalReport, Predictions, Samples};
use super::request::{EvalRequest, PredictRequest, SampleRequest};
use super::task_name::TaskName;
use super::task_options::TaskOptions;

/// One task of `rnn train`: trains it, and evaluates, runs and (for generative tasks) samples
/// from its checkpoints. Implemented by a unit struct per task module; several task names may
/// share one implementation (which then reads `ctx.task` / `run.task`).
pub trait Task: Sync {
    /// Trains `ctx.task` with the options of `ctx`.
    fn train(&self, ctx: &RunContext) -> Result<TrainOutcome>;

    /// Evaluates a checkpoint: the result line and the metrics behind it.
    fn eval(&self, run: &CheckpointRun, req: &EvalRequest) -> Result<EvalReport>;

    /// Runs a checkpoint on inputs: the lines to print and one prediction per input.
    fn predict(&self, run: &CheckpointRun, req: &PredictRequest) -> Result<Predictions>;

    /// The options `task` reads besides the common ones, with its defaults: `rnn train` refuses
    /// any other, and `rnn train TASK --help` lists them.
    fn options(&self, task: TaskName) -> TaskOptions;

    /// Generates from a checkpoint. By default refused: only generative tasks override it.
    fn sample(&self, run: &CheckpointRun, _req: &SampleRequest) -> Result<Samples> {
        bail!(
            "`rnn sample` needs a language-model checkpoint (char-lm, word-lm or routine); {} is a checkpoint of task `{}`; use `rnn predict`",
            run.dir.display(),
            run.task.as_str()
        )
    }
}

/// Implements the random-state methods of [`rnn_train::trainer::TrainTask`] (`set_seed`,
/// `rng_counters`, `set_rng_counters`) by handing them to the model in field `$model`, a
/// [`rnn_models::common::Stochastic`]. Use inside an `impl TrainTask for ...` block.
macro_rules! stochastic_model {
    ($model:ident) => {
        fn set_seed(&mut self, seed: u64) {
            rnn_models::common::Stochastic::set_seed(&mut self.$model, seed);
        }

        fn rng_counters(&self) -> Vec<u64> {
            rnn_models::common::Stochastic::rng_counters(&self.$model)
        }

        fn set_rng_counters(&mut self, counters: &[u64]) -> rnn_train::Result<()> {
            Ok(rnn_models::common::Stochastic::set_rng_counters(
                &self.$model,
                counters,
            )?)
        }
    };
}
pub(crate) use stochastic_model;

/// Declares the unit struct `$name` (with the given doc comment) and implements [`Task`] for it
/// with the calling module's free functions `train`, `eval`, `predict` and `options`, and `sample` when
/// it is listed after the name (generative tasks); unlisted, `sample` refuses.
macro_rules! task_from_functions {
    ($(#[$doc:meta])* $name:ident $(, $sample:ident)?) => {
        $(#[$doc])*
        pub struct $name;

        impl $crate::run::Task for $name {
            fn train(
                &self,
                ctx: &$crate::run::RunContext,
            ) -> anyhow::Result<$crate::run::TrainOutcome> {
                train(ctx)
            }

            fn eval(
                &self,
                run: &$crate::run::CheckpointRun,
                req: &$crate::run::EvalRequest,
            ) -> anyhow::Result<$crate::run::EvalReport> {
                eval(run, req)
            }

            fn predict(
                &self,
                run: &$crate::run::CheckpointRun,
                req: &$crate::run::PredictRequest,
            ) -> anyhow::Result<$crate::run::Predictions> {
                predict(run, req)
            }

            fn options(&self, task: $crate::run::TaskName) -> $crate::run::TaskOptions {
                options(task)
            }

            $(
                fn sample(
                    &self,
                    run: &$crate::run::CheckpointRun,
                    req: &$crate::run::SampleRequest,
                ) -> anyhow::Result<$crate::run::Samples> {
                    $sample(run, req)
                }
            )?
        }
    };
}
pub(crate) use task_from_functions;
