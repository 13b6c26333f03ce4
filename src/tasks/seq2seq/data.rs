//! The data of the encoder-decoder tasks: tokenisation levels, per-task defaults, the setup
//! recorded in checkpoints, and the training, validation and evaluation pairs as tokens and ids.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use rnn_core::Mode;
use rnn_train::data::{
    date_pairs, parse_pairs, read_text_as, split_fraction, tutorial_keeps, tutorial_normalize,
    word_tokens, DatePairs, SequencePair, TextEncoding, Vocab,
};
use serde::{Deserialize, Serialize};

use crate::run::{RunContext, TaskName, TrainDefaults};

/// Id of `<eos>` in a [`Vocab`] (the specials come first: pad, unk, bos, eos).
pub(super) const EOS_ID: u32 = 3;
/// Id of `<bos>` in a [`Vocab`].
pub(super) const BOS_ID: u32 = 2;
/// Id of `<pad>` in a [`Vocab`].
pub(super) const PAD_ID: u32 = 0;

/// How text becomes tokens (`--level`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    /// Lower-cased words with punctuation split off.
    Word,
    /// Characters.
    Char,
    /// The PyTorch tutorial's normalisation and filter.
    Tutorial,
}

impl Level {
    /// Parses `--level` for `seq2seq`.
    pub fn parse(s: &str) -> Result<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "word" => Ok(Level::Word),
            "char" => Ok(Level::Char),
            "tutorial" => Ok(Level::Tutorial),
            other => bail!("--level must be word, char or tutorial for seq2seq, got '{other}'"),
        }
    }

    /// The tokens of `text`.
    pub fn tokens(self, text: &str) -> Vec<String> {
        match self {
            Level::Char => text.chars().map(String::from).collect(),
            Level::Word => word_tokens(text),
            Level::Tutorial => tutorial_normalize(text)
                .split_whitespace()
                .map(str::to_string)
                .collect(),
        }
    }

    /// Tokens back to text.
    pub fn join(self, tokens: &[String]) -> String {
        match self {
            Level::Char => tokens.concat(),
            Level::Word | Level::Tutorial => tokens.join(" "),
        }
    }
}

fn to_sequence_pairs(pairs: Vec<(String, String)>) -> Vec<SequencePair> {
    pairs
        .into_iter()
        .enumerate()
        .map(|(i, (source, target))| SequencePair {
            source,
            target,
            line: i + 1,
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Setup and data

/// Per-task defaults of the model and training options.
#[derive(Debug, Clone)]
pub struct TaskDefaults {
    /// Recurrent cell.
    pub cell: Mode,
    /// Hidden size (decoder and each encoder direction).
    pub hidden: usize,
    /// Embedding size.
    pub embedding: usize,
    /// Bidirectional encoder.
    pub bidirectional: bool,
    /// Dropout.
    pub dropout: f64,
    /// Sentences per batch.
    pub batch_size: usize,
    /// Trainer defaults (epochs, learning rate, clipping).
    pub train: TrainDefaults,
}

impl TaskDefaults {
    /// The defaults of `task` (`seq2seq` or `dates`).
    pub fn of(task: TaskName) -> Self {
        match task {
            TaskName::Dates => Self {
                cell: Mode::Gru,
                hidden: 128,
                embedding: 32,
                bidirectional: true,
                dropout: 0.0,
                batch_size: 64,
                train: TrainDefaults {
                    epochs: 2,
                    lr: 3e-3,
                    clip: Some(5.0),
                    eval_every: None,
                    optimizer: "adamw",
                },
            },
            _ => Self {
                cell: Mode::Gru,
                hidden: 256,
                embedding: 256,
                bidirectional: true,
                dropout: 0.1,
                batch_size: 64,
                train: TrainDefaults {
                    epochs: 6,
                    lr: 2e-3,
                    clip: Some(5.0),
                    eval_every: None,
                    optimizer: "adamw",
                },
            },
        }
    }
}

/// How the data was obtained and decoded, saved in the checkpoint (`config.json`, `model.setup`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Setup {
    /// Tokenisation.
    pub level: Level,
    /// Target column of the TSV file (the source is the other of columns 0 and 1).
    pub target_column: usize,
    /// Decoding limit in tokens (end token included).
    pub max_len: usize,
    /// Beam size of validation decoding (1 = greedy).
    pub beam: usize,
    /// Training file (seq2seq), absolute.
    pub data: Option<PathBuf>,
    /// Validation file (seq2seq), absolute.
    pub valid: Option<PathBuf>,
    /// Held-out fraction when there is no validation file.
    pub split: f64,
    /// Seed of the split (seq2seq) or of the generated pairs (dates).
    pub seed: u64,
    /// Generated training pairs (dates).
    pub samples: usize,
    /// Character encoding of the files (`--encoding`), when not UTF-8.
    #[serde(default)]
    pub encoding: Option<String>,
    /// Test file (seq2seq, `--test`), absolute.
    #[serde(default)]
    pub test: Option<PathBuf>,
    /// Whether the run held a test part out (of `--data`, or generated for dates) besides the
    /// validation part; false in checkpoints written before the test part existed.
    #[serde(default)]
    pub test_held_out: bool,
}

impl Setup {
    fn source_column(&self) -> usize {
        if self.target_column == 0 {
            1
        } else {
            0
        }
    }

    /// Validation pairs generated for `dates` (as many test pairs follow them).
    fn valid_samples(&self) -> usize {
        (self.samples / 10).max(1)
    }

    /// Whether the run has a test part that `rnn eval` scores by default.
    pub fn has_test(&self) -> bool {
        self.test.is_some() || self.test_held_out
    }

    /// The fraction of the pairs left after the validation split that the test part takes, and
    /// its seed: the test part is as large as the validation part.
    fn test_split(&self) -> (f64, u64) {
        let fraction = if self.valid.is_some() {
            self.split
        } else {
            self.split / (1.0 - self.split)
        };
        (fraction, rnn_core::seed::derive_seed(self.seed, 1))
    }
}

/// The generated `dates` pairs: training, validation, and test pairs drawn after the validation
/// pairs (so the validation pairs are those of runs without a test part).
fn dates_parts(setup: &Setup) -> (DatePairs, DatePairs, DatePairs) {
    let n = setup.valid_samples();
    let (train, mut valid) = date_pairs(setup.samples, 2 * n, setup.seed);
    let test = valid.split_off(n.min(valid.len()));
    (train, valid, test)
}

/// One tokenised pair.
#[derive(Debug, Clone)]
pub(super) struct TextPair {
    pub(super) source: Vec<String>,
    pub(super) target: Vec<String>,
}

/// Tokenises pairs (read with source = `setup.source_column()`); `tutorial` also filters.
fn tokenize_pairs(pairs: &[SequencePair], setup: &Setup) -> Vec<TextPair> {
    pairs
        .iter()
        .filter_map(|p| {
            if setup.level == Level::Tutorial {
                let (s, t) = (tutorial_normalize(&p.source), tutorial_normalize(&p.target));
                let (english, other) = if setup.target_column == 0 {
                    (&t, &s)
                } else {
                    (&s, &t)
                };
                if s.is_empty() || t.is_empty() || !tutorial_keeps(english, other) {
                    return None;
                }
            }
            let source = setup.level.tokens(&p.source);
            let target = setup.level.tokens(&p.target);
            (!source.is_empty() && !target.is_empty()).then_some(TextPair { source, target })
        })
        .collect()
}

/// Reads and tokenises a TSV file with the setup's columns and level.
fn read_file_pairs(path: &Path, setup: &Setup, flag: &str) -> Result<Vec<TextPair>> {
    // The loader's errors name the file (and line); the flag is added in front.
    let read = || -> rnn_train::Result<Vec<SequencePair>> {
        let encoding = setup
            .encoding
            .as_deref()
            .map(TextEncoding::from_label)
            .transpose()?
            .unwrap_or_default();
        let text = read_text_as(path, encoding)?;
        parse_pairs(
            path,
            text.as_bytes(),
            setup.source_column(),
            setup.target_column,
        )
    };
    let pairs = read().map_err(|e| {
        let named = e.to_string().starts_with(&path.display().to_string());
        let e = anyhow::Error::new(e);
        if named {
            e.context(flag.to_string())
        } else {
            e.context(format!("{flag} {}", path.display()))
        }
    })?;
    let tokenized = tokenize_pairs(&pairs, setup);
    if tokenized.is_empty() {
        bail!(
            "{flag} {}: no pair left after the {} filter ({} pairs read)",
            path.display(),
            match setup.level {
                Level::Tutorial => "tutorial",
                _ => "tokenisation",
            },
            pairs.len()
        );
    }
    Ok(tokenized)
}

/// A pair as ids, with its reference tokens for BLEU / exact match.
#[derive(Debug, Clone)]
pub(super) struct Example {
    pub(super) src: Vec<u32>,
    /// Target ids followed by `<eos>`.
    pub(super) tgt: Vec<u32>,
    pub(super) reference: Vec<String>,
}

pub(super) fn encode(pairs: &[TextPair], src_vocab: &Vocab, tgt_vocab: &Vocab) -> Vec<Example> {
    pairs
        .iter()
        .map(|p| Example {
            src: src_vocab.encode(p.source.iter().map(String::as_str)),
            tgt: tgt_vocab
                .encode(p.target.iter().map(String::as_str))
                .into_iter()
                .chain([EOS_ID])
                .collect(),
            reference: p.target.clone(),
        })
        .collect()
}

/// The training and validation pairs of a run.
pub(super) fn training_data(
    ctx: &RunContext,
    setup: &Setup,
) -> Result<(Vec<TextPair>, Vec<TextPair>)> {
    if ctx.task == TaskName::Dates {
        let (train, valid, _) = dates_parts(setup);
        return Ok((
            tokenize_pairs(&to_sequence_pairs(train), setup),
            tokenize_pairs(&to_sequence_pairs(valid), setup),
        ));
    }
    let data = setup
        .data
        .as_deref()
        .context("seq2seq needs --data FILE: tab-separated \"source<TAB>target\" lines")?;
    let all = read_file_pairs(data, setup, "--data")?;
    let (train, valid) = match &setup.valid {
        Some(v) => (all, read_file_pairs(v, setup, "--valid")?),
        None => split_fraction(all, setup.split, setup.seed)?,
    };
    // The test part comes out of the training pairs, so the validation pairs stay those of
    // runs without one.
    let train = if setup.test_held_out {
        let (fraction, seed) = setup.test_split();
        if fraction >= 1.0 {
            bail!(
                "--split {}: too large to hold out a validation and a test part of that size each; give --split below 0.5, or --valid/--test FILE",
                setup.split
            );
        }
        split_fraction(train, fraction, seed)?.0
    } else {
        train
    };
    if train.is_empty() || valid.is_empty() {
        bail!(
            "--data {}: too few pairs to hold out a validation set ({} for training, {} for validation); give more data, a larger --split or --valid FILE",
            data.display(),
            train.len(),
            valid.len()
        );
    }
    Ok((train, valid))
}

/// What `rnn eval` scores: `file`, else the run's test part when it has one, else its
/// validation pairs.
pub(super) fn eval_data(
    task: TaskName,
    setup: &Setup,
    file: Option<&Path>,
) -> Result<Vec<TextPair>> {
    if let Some(f) = file {
        return read_file_pairs(f, setup, "--data");
    }
    if task == TaskName::Dates {
        let (_, valid, test) = dates_parts(setup);
        let part = if setup.test_held_out { test } else { valid };
        return Ok(tokenize_pairs(&to_sequence_pairs(part), setup));
    }
    let data = setup
        .data
        .as_deref()
        .context("the checkpoint records no training file; give --data FILE")?;
    if let Some(t) = &setup.test {
        return read_file_pairs(t, setup, "--test (recorded in the checkpoint)");
    }
    let recorded = "--data (recorded in the checkpoint)";
    match (&setup.valid, setup.test_held_out) {
        (Some(v), false) => read_file_pairs(v, setup, "--valid (recorded in the checkpoint)"),
        (None, false) => Ok(split_fraction(
            read_file_pairs(data, setup, recorded)?,
            setup.split,
            setup.seed,
        )?
        .1),
        (valid, true) => {
            let all = read_file_pairs(data, setup, recorded)?;
            let train = match valid {
                Some(_) => all,
                None => split_fraction(all, setup.split, setup.seed)?.0,
            };
            let (fraction, seed) = setup.test_split();
            Ok(split_fraction(train, fraction, seed)?.1)
        }
    }
}
