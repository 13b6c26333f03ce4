//! Validation data of the tasks that read labelled files (classify, tag): where it came from
//! (`--valid FILE` or a seeded `--split` of `--data`), recorded in the checkpoint so that
//! `rnn eval` rebuilds the same split, and the batching of training and evaluation data.

use std::path::{Path, PathBuf};

use anyhow::{bail, Result};
use rnn_train::data::{
    bucket_batches, length_batches, split_fraction, StreamedBatches, TextEncoding,
};
use rnn_train::trainer::Part;
use serde::{Deserialize, Serialize};

use crate::run::{RunContext, TaskOptions, TrainDefaults};

/// Where the validation data of a run came from, so `rnn eval` can rebuild them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum ValidSource {
    /// A separate file (`--valid`).
    File {
        /// The file.
        path: PathBuf,
    },
    /// A seeded fraction of the training file's examples.
    Split {
        /// The training file.
        path: PathBuf,
        /// The held-out fraction.
        fraction: f64,
        /// The split seed.
        seed: u64,
    },
}

/// The training defaults of the labelled-file tasks (classify, tag).
pub fn train_defaults() -> TrainDefaults {
    TrainDefaults {
        epochs: 10,
        lr: 2e-3,
        ..Default::default()
    }
}

/// The data options of the labelled-file tasks (classify, tag), and their training defaults
/// with early stopping after 3 evaluations.
pub fn labelled_options() -> TaskOptions {
    TaskOptions::new()
        .read("data")
        .read("valid")
        .read("test")
        .with("split", 0.1)
        .read("encoding")
        .read("max-len")
        .read("shuffle-buffer")
        .with("patience", 3)
        .training(&train_defaults())
}

/// The encoding a checkpoint recorded (`None`: UTF-8).
pub fn saved_encoding(saved: Option<&str>) -> Result<TextEncoding> {
    Ok(saved
        .map(TextEncoding::from_label)
        .transpose()?
        .unwrap_or_default())
}

/// Where the test rows of a run came from, so `rnn eval` scores the same rows that the run's
/// headline scored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum TestSource {
    /// A separate file (`--test`).
    File {
        /// The file.
        path: PathBuf,
    },
    /// Held out of the training file besides the validation rows: after the validation split
    /// `valid` (`(fraction, seed)`, when the validation rows came from the same file), a
    /// `fraction` of the remaining rows shuffled with `seed`.
    Split {
        /// The training file.
        path: PathBuf,
        /// The validation split taken first, if any.
        valid: Option<(f64, u64)>,
        /// The held-out fraction of what the validation split left.
        fraction: f64,
        /// The split seed.
        seed: u64,
    },
}

impl TestSource {
    /// The file the test rows come from.
    pub fn path(&self) -> &Path {
        match self {
            TestSource::File { path } | TestSource::Split { path, .. } => path,
        }
    }

    /// Whether the test rows were held out of `--data` (else they are `--test FILE`).
    pub fn is_held_out(&self) -> bool {
        matches!(self, TestSource::Split { .. })
    }

    /// The test rows again, read with `read`.
    pub fn rows<T>(&self, read: impl Fn(&Path) -> Result<Vec<T>>) -> Result<Vec<T>> {
        match self {
            TestSource::File { path } => read(path),
            TestSource::Split {
                path,
                valid,
                fraction,
                seed,
            } => {
                let mut rows = read(path)?;
                if let Some((f, s)) = valid {
                    rows = split_fraction(rows, *f, *s)?.0;
                }
                Ok(split_fraction(rows, *fraction, *seed)?.1)
            }
        }
    }

    /// `N examples of FILE` or `N examples held out of FILE`, for result lines.
    pub fn describe(&self, count: usize, what: &str) -> String {
        if self.is_held_out() {
            format!("{count} {what} held out of {}", self.path().display())
        } else {
            format!("{count} {what} of {}", self.path().display())
        }
    }
}

/// The rows of a run on `--data`: training, validation and test, with where the latter two came
/// from. Model selection sees only the validation rows; the test rows are scored once, with the
/// best checkpoint.
pub struct Parts<T> {
    /// Training rows.
    pub train: Vec<T>,
    /// Validation rows (best checkpoint, early stopping).
    pub valid: Vec<T>,
    /// Test rows (the headline).
    pub test: Vec<T>,
    /// Where the validation rows came from.
    pub valid_source: ValidSource,
    /// Where the test rows came from.
    pub test_source: TestSource,
}

impl<T> Parts<T> {
    /// Splits `rows` of `data`: validation rows from `--valid FILE`, else a seeded `--split`
    /// fraction (default 0.1) of `rows` (the same rows as [`ValidSource::split`]); test rows
    /// from `--test FILE`, else another seeded part of `rows` of the same size. `what` names the
    /// rows ("examples") in errors.
    pub fn split(
        ctx: &RunContext,
        data: &Path,
        rows: Vec<T>,
        read: impl Fn(&Path) -> Result<Vec<T>>,
        what: &str,
    ) -> Result<Self> {
        let (rest, valid, valid_source) = ValidSource::split(ctx, data, rows, &read, what)?;
        let (train, test, test_source) = match &ctx.opts.test {
            Some(t) => (rest, read(t)?, TestSource::File { path: t.clone() }),
            None => {
                let f = ctx.opts.split.unwrap_or(0.1);
                let (fraction, valid) = match &valid_source {
                    ValidSource::Split { fraction, seed, .. } => {
                        (f / (1.0 - f), Some((*fraction, *seed)))
                    }
                    ValidSource::File { .. } => (f, None),
                };
                if fraction >= 1.0 {
                    bail!(
                        "--split {f}: too large to hold out a validation and a test part of that size each; give --split below 0.5, or --valid/--test FILE"
                    );
                }
                let seed = rnn_core::seed::derive_seed(ctx.seed, 1);
                let (train, test) = split_fraction(rest, fraction, seed)?;
                if train.is_empty() || test.is_empty() {
                    bail!(
                        "--data {}: too few {what} to hold out a test part (--split {f}); give --test FILE",
                        data.display()
                    );
                }
                let source = TestSource::Split {
                    path: data.to_path_buf(),
                    valid,
                    fraction,
                    seed,
                };
                (train, test, source)
            }
        };
        Ok(Self {
            train,
            valid,
            test,
            valid_source,
            test_source,
        })
    }
}

impl ValidSource {
    /// The training and validation rows of a run on `data` (read as `rows`): all of `rows` and
    /// the rows of `--valid FILE` when given, else a seeded `--split` fraction (default 0.1) of
    /// `rows` held out; `what` names the rows ("examples") in the error when a side is empty.
    pub fn split<T>(
        ctx: &RunContext,
        data: &Path,
        rows: Vec<T>,
        read: impl Fn(&Path) -> Result<Vec<T>>,
        what: &str,
    ) -> Result<(Vec<T>, Vec<T>, ValidSource)> {
        if let Some(v) = &ctx.opts.valid {
            return Ok((rows, read(v)?, ValidSource::File { path: v.clone() }));
        }
        let fraction = ctx.opts.split.unwrap_or(0.1);
        let (train, valid) = split_fraction(rows, fraction, ctx.seed)?;
        if train.is_empty() || valid.is_empty() {
            bail!(
                "--data {}: too few {what} to hold out a --split of {fraction}; give --valid FILE",
                data.display()
            );
        }
        let source = ValidSource::Split {
            path: data.to_path_buf(),
            fraction,
            seed: ctx.seed,
        };
        Ok((train, valid, source))
    }

    /// The file the validation rows come from (named in errors about them).
    pub fn path(&self) -> &Path {
        match self {
            ValidSource::File { path } | ValidSource::Split { path, .. } => path,
        }
    }

    /// The rows `rnn eval` scores, with their file: those of `data` when given, else the
    /// validation rows `recorded` in the checkpoint.
    pub fn eval_rows<T>(
        data: Option<&Path>,
        recorded: Option<&ValidSource>,
        read: impl Fn(&Path) -> Result<Vec<T>>,
    ) -> Result<(PathBuf, Vec<T>)> {
        match (data, recorded) {
            (Some(p), _) => Ok((p.to_path_buf(), read(p)?)),
            (None, Some(ValidSource::File { path })) => Ok((path.clone(), read(path)?)),
            (
                None,
                Some(ValidSource::Split {
                    path,
                    fraction,
                    seed,
                }),
            ) => {
                let (_, valid) = split_fraction(read(path)?, *fraction, *seed)?;
                Ok((path.clone(), valid))
            }
            (None, None) => bail!("give --data FILE to evaluate on"),
        }
    }
}

/// The spread of the epoch seeds of the training batches ([`rnn_core::seed::epoch_seed`]).
const EPOCH_SPREAD: u64 = 0xBF58_476D_1CE4_E5B9;

/// Training batches of one epoch: indices of examples of similar `lengths` bucketed together,
/// shuffled from `(epoch, seed)`.
pub fn bucketed_batches(
    lengths: &[usize],
    batch_size: usize,
    epoch: u64,
    seed: u64,
) -> rnn_train::Result<Vec<Vec<usize>>> {
    let mix = rnn_core::seed::epoch_seed(seed, epoch, EPOCH_SPREAD);
    bucket_batches(lengths, batch_size, mix)
}

/// A training batch of classify and tag: which examples it holds. The tensors are built at
/// each step, for the rows of the part being trained only ([`TrainData::part`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TrainBatch {
    /// The examples at these indices of the training set held in memory.
    Rows(Vec<usize>),
    /// Batch `index` of an epoch streamed from the file (`--shuffle-buffer`), whose shuffle is
    /// seeded with `seed`.
    Streamed {
        /// The epoch's shuffle seed.
        seed: u64,
        /// The batch's place in the epoch.
        index: usize,
    },
}

/// The training examples of classify or tag: held in memory, compactly (token ids, labels; no
/// tensors), or streamed from the file through a bounded shuffle buffer (`--shuffle-buffer`).
pub enum TrainData<E> {
    /// Every example in memory, with its length in tokens; batches are bucketed by length.
    Held {
        /// The examples.
        examples: Vec<E>,
        /// Each example's length in tokens.
        lengths: Vec<usize>,
    },
    /// The file read once per epoch ([`StreamedBatches`], boxed: it holds the stream's state).
    Streamed(Box<StreamedBatches<E>>),
}

impl<E> TrainData<E> {
    /// How many training examples there are.
    pub fn len(&self) -> usize {
        match self {
            TrainData::Held { examples, .. } => examples.len(),
            TrainData::Streamed(s) => s.examples(),
        }
    }

    /// The batches of epoch `epoch` (see [`TrainTask::train_batches`]): held examples in length
    /// buckets shuffled from `(epoch, seed)` ([`bucketed_batches`]); streamed ones in the order
    /// of a shuffle buffer seeded from `(epoch, seed)`, `batch_size` at a time.
    ///
    /// [`TrainTask::train_batches`]: rnn_train::trainer::TrainTask::train_batches
    pub fn batches(
        &self,
        batch_size: usize,
        epoch: u64,
        seed: u64,
    ) -> rnn_train::Result<Vec<TrainBatch>> {
        match self {
            TrainData::Held { lengths, .. } => {
                Ok(bucketed_batches(lengths, batch_size, epoch, seed)?
                    .into_iter()
                    .map(TrainBatch::Rows)
                    .collect())
            }
            TrainData::Streamed(s) => {
                let mix = rnn_core::seed::epoch_seed(seed, epoch, EPOCH_SPREAD);
                Ok((0..s.batches_per_epoch())
                    .map(|index| TrainBatch::Streamed { seed: mix, index })
                    .collect())
            }
        }
    }

    /// The examples of part `part` of `batch`, in order ([`Part::rows`]); empty for an empty
    /// part.
    pub fn part(&mut self, batch: &TrainBatch, part: Part) -> rnn_train::Result<Vec<&E>> {
        match (self, batch) {
            (TrainData::Held { examples, .. }, TrainBatch::Rows(idx)) => {
                let mut rows = Vec::with_capacity(idx.len());
                for &i in &idx[part.rows(idx.len())] {
                    rows.push(examples.get(i).ok_or_else(|| {
                        rnn_train::Error::Invalid(format!(
                            "batch row {i} is outside the {} training examples",
                            examples.len()
                        ))
                    })?);
                }
                Ok(rows)
            }
            (TrainData::Streamed(s), TrainBatch::Streamed { seed, index }) => {
                let all = s.batch(*seed, *index)?;
                Ok(all[part.rows(all.len())].iter().collect())
            }
            _ => Err(rnn_train::Error::Invalid(
                "a batch of held examples was given to a streamed training set, or the reverse"
                    .into(),
            )),
        }
    }
}

/// The first longest of `(line, length)` items (the line of a training example and its length
/// as trained), for the memory check's message; `(0, 0)` for none.
pub fn first_longest(items: impl IntoIterator<Item = (usize, usize)>) -> (usize, usize) {
    items
        .into_iter()
        .fold((0, 0), |best, it| if it.1 > best.1 { it } else { best })
}

/// Checks `--shuffle-buffer` against the other options of a labelled-file task: the training
/// file is streamed, so validation and test rows cannot be a seeded split of it, and it is read
/// as UTF-8 line by line. `None` when the option is not set.
pub fn shuffle_buffer(ctx: &RunContext) -> Result<Option<usize>> {
    let o = &ctx.opts;
    let Some(n) = o.shuffle_buffer else {
        return Ok(None);
    };
    if o.valid.is_none() || o.test.is_none() {
        bail!(
            "--shuffle-buffer {n} streams --data from the file, so the validation and test rows cannot be held out of it: give --valid FILE and --test FILE"
        );
    }
    if o.split.is_some() {
        bail!("--split: --shuffle-buffer streams --data and takes its validation and test rows from --valid and --test; drop --split");
    }
    if o.text_encoding()? != TextEncoding::UTF8 {
        bail!(
            "--shuffle-buffer streams --data as UTF-8; convert the file (e.g. `iconv -f {} -t utf-8`) or drop --shuffle-buffer",
            o.encoding.as_deref().unwrap_or_default()
        );
    }
    Ok(Some(n))
}

/// Evaluation batches of at most `batch_size` examples in order of `lengths` (less padding; the
/// order does not change the scores), a long example in a batch of its own
/// ([`length_batches`]); `make` builds the batch of the examples at the given indices.
pub fn eval_batches<B>(
    lengths: &[usize],
    batch_size: usize,
    mut make: impl FnMut(&[usize]) -> Result<B>,
) -> Result<Vec<B>> {
    length_batches(lengths, batch_size)
        .iter()
        .map(|idx| make(idx))
        .collect()
}
