//! The run layer, below both the command line (`crate::cli`) and the tasks (`crate::tasks`):
//! what every task's training and evaluation share. The command line turns its arguments into
//! these types and hands them to a task through the [`Task`] trait; the tasks use them and never
//! see the command line.
//!
//! - [`options`]: the options of `rnn train` (flags and `--config` files), [`parse_dtype`];
//!   [`choice`]: the closed value sets of its enumerated options;
//! - [`RunContext`]: merged options, device, dtype, output directory; [`trainer_config`];
//! - [`fit`]: checkpointed, resumable training and the summary line;
//! - [`CheckpointRun`]: a checkpoint loaded for `eval`, `sample` or `predict`;
//! - [`EvalRequest`], [`SampleRequest`], [`PredictRequest`]: what those commands ask;
//!   [`EvalReport`], [`Samples`], [`Predictions`]: what they answer (lines and values);
//! - [`TaskName`] and [`Task`]: the tasks and what each can do; [`TaskOptions`]: which options
//!   each reads, with its defaults;
//! - [`memory`]: the peak-memory estimate of a run and the refusal when it would not fit;
//! - [`error_line`] and [`invalid`]: errors across layers;
//! - [`world`]: data-parallel launch detection (`mpirun`, PMI, PMIx) and the process's
//!   collective, or the refusal of a binary built without the `mpi` feature.

mod checkpoint;
pub mod choice;
mod context;
mod error;
mod fit;
pub mod hub;
pub mod memory;
pub mod options;
mod report;
mod request;
mod task;
mod task_name;
pub mod task_options;
pub mod world;

pub use checkpoint::{resolve_checkpoint, CheckpointRun};
pub use context::{schedule_from_options, trainer_config, RunContext, TrainDefaults};
pub use error::{error_line, invalid};
pub use fit::{fit, load_best, summary_line, weights_label, RankDone, TrainOutcome};
pub use options::{parse_dtype, Options};
pub use report::{EvalReport, Prediction, Predictions, Samples, Split};
pub use request::{EvalRequest, PredictRequest, SampleRequest, DEFAULT_EVAL_BATCH};
pub use task::Task;
pub(crate) use task::{stochastic_model, task_from_functions};
pub use task_name::TaskName;
pub use task_options::TaskOptions;
