//! Validation data of the tasks that read labelled files (classify, tag): where it came from
//! (`--valid FILE` or a seeded `--split` of `--data`), recorded in the checkpoint so that
//! `rnn eval` rebuilds the same split, and the batching of training and evaluation data.

use std::path::{Path, PathBuf};

use anyhow::{bail, Result};
use rnn_train::data::{bucket_batches, split_fraction};
use serde::{Deserialize, Serialize};

use crate::run::{invalid, RunContext};

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

/// Training batches of one epoch: examples of similar `lengths` bucketed together, shuffled
/// from `(epoch, seed)`; `make` builds the batch of the examples at the given indices.
pub fn bucketed_batches<B>(
    lengths: &[usize],
    batch_size: usize,
    epoch: u64,
    seed: u64,
    mut make: impl FnMut(&[usize]) -> Result<B>,
) -> rnn_train::Result<Vec<B>> {
    let mix = rnn_core::seed::epoch_seed(seed, epoch, 0xBF58_476D_1CE4_E5B9);
    bucket_batches(lengths, batch_size, mix)?
        .iter()
        .map(|idx| make(idx).map_err(invalid))
        .collect()
}

/// Evaluation batches of at most `batch_size` examples in order of `lengths` (less padding; the
/// order does not change the scores); `make` builds the batch of the examples at the given
/// indices.
pub fn eval_batches<B>(
    lengths: &[usize],
    batch_size: usize,
    make: impl FnMut(&[usize]) -> Result<B>,
) -> Result<Vec<B>> {
    let mut order: Vec<usize> = (0..lengths.len()).collect();
    order.sort_by_key(|&i| lengths[i]);
    order.chunks(batch_size.max(1)).map(make).collect()
}
