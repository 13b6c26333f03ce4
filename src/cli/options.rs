//! The options of `rnn train` (and `eval`), readable from flags and from a `--config` file with
//! the same keys (TOML or JSON; flags override the file). Every option is optional here: each
//! task fills in its own defaults, so `rnn train adding` and `rnn train char-lm` can have
//! different hidden sizes without the user saying so.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

/// Options shared by every task, plus the task-specific ones (ignored by tasks that do not use
/// them). Keys in a config file are the long flag names with `_` or `-`.
#[derive(Debug, Clone, Default, PartialEq, clap::Args, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct Options {
    // ---- model ----
    /// Recurrent cell: lstm, gru, rnn-tanh, rnn-relu.
    #[arg(long)]
    pub cell: Option<String>,
    /// Hidden units per layer and direction.
    #[arg(long)]
    pub hidden: Option<usize>,
    /// Stacked recurrent layers.
    #[arg(long)]
    pub layers: Option<usize>,
    /// Bidirectional recurrent layers (where the task allows it).
    #[arg(long, num_args = 0..=1, default_missing_value = "true")]
    pub bidirectional: Option<bool>,
    /// Dropout probability (between layers and on embeddings/outputs).
    #[arg(long)]
    pub dropout: Option<f64>,
    /// Token embedding size.
    #[arg(long)]
    pub embedding: Option<usize>,

    // ---- training ----
    /// Passes over the training data.
    #[arg(long)]
    pub epochs: Option<u64>,
    /// Stop after this many steps (batches), whichever budget ends first.
    #[arg(long)]
    pub max_steps: Option<u64>,
    /// Sequences per batch.
    #[arg(long)]
    pub batch_size: Option<usize>,
    /// Learning rate.
    #[arg(long)]
    pub lr: Option<f64>,
    /// Optimiser: adamw or sgd.
    #[arg(long)]
    pub optimizer: Option<String>,
    /// Clip the global gradient norm to this value (0 = no clipping).
    #[arg(long)]
    pub clip: Option<f64>,
    /// Evaluate every N steps (besides every epoch end).
    #[arg(long)]
    pub eval_every: Option<u64>,
    /// Stop when the main metric has not improved for N evaluations.
    #[arg(long)]
    pub patience: Option<u64>,
    /// Skip (and count) steps whose loss or gradient is NaN/inf instead of stopping.
    #[arg(long, num_args = 0..=1, default_missing_value = "true")]
    pub skip_non_finite: Option<bool>,
    /// Seed of initialisation, data order and dropout.
    #[arg(long)]
    pub seed: Option<u64>,
    /// Device: auto, cpu, cuda, cuda:N, metal.
    #[arg(long)]
    pub device: Option<String>,
    /// Floating-point type: f32 or f64.
    #[arg(long)]
    pub dtype: Option<String>,
    /// Output directory (checkpoint, metrics.jsonl, learning curves); default runs/TASK.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Continue the run whose checkpoint is in DIR (a run directory or its checkpoint/).
    #[arg(long)]
    pub resume: Option<PathBuf>,

    // ---- data ----
    /// Training data file (file-based tasks).
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// Validation data file; without it a seeded fraction of --data is held out.
    #[arg(long)]
    pub valid: Option<PathBuf>,
    /// Test data file, evaluated with the best checkpoint at the end.
    #[arg(long)]
    pub test: Option<PathBuf>,
    /// Fraction of --data held out for validation when --valid is not given.
    #[arg(long)]
    pub split: Option<f64>,

    // ---- task-specific ----
    /// Language models: token level, char, word or subword (BPE).
    #[arg(long)]
    pub level: Option<String>,
    /// Subword vocabulary size (BPE) or maximum word vocabulary size.
    #[arg(long)]
    pub vocab_size: Option<usize>,
    /// Steps per training window (truncated BPTT) or sequence length of generated tasks.
    #[arg(long)]
    pub seq_len: Option<usize>,
    /// Tie the output layer of a language model to its embedding.
    #[arg(long, num_args = 0..=1, default_missing_value = "true")]
    pub tie_weights: Option<bool>,
    /// Classifier pooling: last, mean, max, attention.
    #[arg(long)]
    pub pooling: Option<String>,
    /// Encoder-decoder attention: none, additive, dot, general.
    #[arg(long)]
    pub attention: Option<String>,
    /// Beam size for decoding (1 = greedy).
    #[arg(long)]
    pub beam: Option<usize>,
    /// Maximum generated length.
    #[arg(long)]
    pub max_len: Option<usize>,
    /// Teacher-forcing ratio for encoder-decoder training.
    #[arg(long)]
    pub teacher_forcing: Option<f64>,
    /// CoNLL-U column with the tags (upos, xpos, deprel, ...).
    #[arg(long)]
    pub tag_column: Option<String>,
    /// CSV: target column name.
    #[arg(long)]
    pub target: Option<String>,
    /// CSV: feature column names, comma-separated (default: the target only).
    #[arg(long, value_delimiter = ',')]
    pub features: Option<Vec<String>>,
    /// Forecasting: past steps the model sees.
    #[arg(long)]
    pub lookback: Option<usize>,
    /// Forecasting: steps predicted ahead.
    #[arg(long)]
    pub horizon: Option<usize>,
    /// Forecasting: next-step, direct or autoregressive.
    #[arg(long)]
    pub strategy: Option<String>,
    /// MNIST: label file (idx1) accompanying --data (idx3 images).
    #[arg(long)]
    pub labels: Option<PathBuf>,
    /// Generated tasks: number of training examples.
    #[arg(long)]
    pub samples: Option<usize>,
}

macro_rules! merge_fields {
    ($self:ident, $other:ident, $($f:ident),* $(,)?) => {
        Options { $($f: $self.$f.or($other.$f)),* }
    };
}

impl Options {
    /// Flags (`self`) over the file's values (`file`).
    pub fn over(self, file: Options) -> Options {
        merge_fields!(
            self,
            file,
            cell,
            hidden,
            layers,
            bidirectional,
            dropout,
            embedding,
            epochs,
            max_steps,
            batch_size,
            lr,
            optimizer,
            clip,
            eval_every,
            patience,
            skip_non_finite,
            seed,
            device,
            dtype,
            out,
            resume,
            data,
            valid,
            test,
            split,
            level,
            vocab_size,
            seq_len,
            tie_weights,
            pooling,
            attention,
            beam,
            max_len,
            teacher_forcing,
            tag_column,
            target,
            features,
            lookback,
            horizon,
            strategy,
            labels,
            samples,
        )
    }

    /// Reads a config file: TOML (`.toml`) or JSON (anything else that starts with `{`).
    pub fn from_file(path: &Path) -> Result<Options> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("--config {}: cannot read the file", path.display()))?;
        let is_json =
            path.extension().is_some_and(|e| e == "json") || text.trim_start().starts_with('{');
        // Accept snake_case keys too.
        let normalise = |v: serde_json::Value| -> serde_json::Value {
            match v {
                serde_json::Value::Object(map) => serde_json::Value::Object(
                    map.into_iter()
                        .map(|(k, v)| (k.replace('_', "-"), v))
                        .collect(),
                ),
                v => v,
            }
        };
        let value: serde_json::Value = if is_json {
            serde_json::from_str(&text).map_err(|e| {
                anyhow::anyhow!(
                    "--config {}:{}: invalid JSON: {e}",
                    path.display(),
                    e.line()
                )
            })?
        } else {
            let t: toml::Value = toml::from_str(&text).map_err(|e| {
                let line = e
                    .span()
                    .map(|s| text[..s.start.min(text.len())].lines().count().max(1))
                    .unwrap_or(1);
                anyhow::anyhow!(
                    "--config {}:{line}: invalid TOML: {}",
                    path.display(),
                    e.message()
                )
            })?;
            serde_json::to_value(t)?
        };
        serde_json::from_value(normalise(value))
            .map_err(|e| anyhow::anyhow!("--config {}: {e}", path.display()))
    }

    /// Checks value ranges common to all tasks; errors name the flag.
    pub fn validate(&self) -> Result<()> {
        for (flag, v) in [
            ("--hidden", self.hidden),
            ("--layers", self.layers),
            ("--batch-size", self.batch_size),
            ("--embedding", self.embedding),
            ("--seq-len", self.seq_len),
            ("--beam", self.beam),
            ("--max-len", self.max_len),
            ("--lookback", self.lookback),
            ("--horizon", self.horizon),
            ("--samples", self.samples),
            ("--vocab-size", self.vocab_size),
        ] {
            if v == Some(0) {
                bail!("{flag} must be at least 1, got 0");
            }
        }
        for (flag, v) in [
            ("--epochs", self.epochs),
            ("--max-steps", self.max_steps),
            ("--eval-every", self.eval_every),
        ] {
            if v == Some(0) {
                bail!("{flag} must be at least 1, got 0");
            }
        }
        if let Some(p) = self.dropout {
            if !(0.0..1.0).contains(&p) {
                bail!("--dropout must be in [0, 1), got {p}");
            }
        }
        if let Some(lr) = self.lr {
            if !(lr.is_finite() && lr > 0.0) {
                bail!("--lr must be a positive number, got {lr}");
            }
        }
        if let Some(c) = self.clip {
            if !(c.is_finite() && c >= 0.0) {
                bail!("--clip must be >= 0 (0 = no clipping), got {c}");
            }
        }
        if let Some(s) = self.split {
            if !(s > 0.0 && s < 1.0) {
                bail!("--split must be in (0, 1), got {s}");
            }
        }
        if let Some(r) = self.teacher_forcing {
            if !(0.0..=1.0).contains(&r) {
                bail!("--teacher-forcing must be in [0, 1], got {r}");
            }
        }
        if let Some(c) = &self.cell {
            c.parse::<rnn_core::Mode>()
                .map_err(|e| anyhow::anyhow!("--cell: {e}"))?;
        }
        if let Some(d) = &self.dtype {
            crate::cli::run::parse_dtype(d)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_override_the_file_and_both_formats_load() {
        let dir = tempfile::tempdir().unwrap();
        let toml_path = dir.path().join("c.toml");
        std::fs::write(&toml_path, "hidden = 32\nbatch_size = 8\ncell = \"gru\"\n").unwrap();
        let file = Options::from_file(&toml_path).unwrap();
        assert_eq!(file.hidden, Some(32));
        assert_eq!(file.batch_size, Some(8));
        let json_path = dir.path().join("c.json");
        std::fs::write(&json_path, r#"{"hidden": 16, "lr": 0.5}"#).unwrap();
        assert_eq!(Options::from_file(&json_path).unwrap().lr, Some(0.5));
        let flags = Options {
            hidden: Some(64),
            ..Default::default()
        };
        let merged = flags.over(file);
        assert_eq!(merged.hidden, Some(64));
        assert_eq!(merged.batch_size, Some(8));
        assert_eq!(merged.cell.as_deref(), Some("gru"));
    }

    #[test]
    fn config_errors_name_the_file_line_and_key() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c.toml");
        std::fs::write(&p, "hidden = 32\nhiden = 3\n").unwrap();
        let e = Options::from_file(&p).unwrap_err().to_string();
        assert!(e.contains("c.toml") && e.contains("hiden"), "{e}");
        std::fs::write(&p, "hidden = 32\nlayers = = 3\n").unwrap();
        let e = Options::from_file(&p).unwrap_err().to_string();
        assert!(e.contains("c.toml:2"), "{e}");
        let e = Options::from_file(&dir.path().join("none.toml"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("none.toml"), "{e}");
    }

    #[test]
    fn ranges_are_checked() {
        for (o, flag) in [
            (
                Options {
                    hidden: Some(0),
                    ..Default::default()
                },
                "--hidden",
            ),
            (
                Options {
                    dropout: Some(1.5),
                    ..Default::default()
                },
                "--dropout",
            ),
            (
                Options {
                    cell: Some("lstn".into()),
                    ..Default::default()
                },
                "--cell",
            ),
            (
                Options {
                    lr: Some(-1.0),
                    ..Default::default()
                },
                "--lr",
            ),
        ] {
            let e = o.validate().unwrap_err().to_string();
            assert!(e.contains(flag), "{e}");
        }
    }
}
