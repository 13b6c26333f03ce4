//! The options of `rnn train` (and `eval`), readable from flags and from a `--config` file with
//! the same keys (TOML or JSON; flags override the file). Every option is optional here: each
//! task fills in its own defaults, so `rnn train adding` and `rnn train char-lm` can have
//! different hidden sizes without the user saying so.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use candle_core::DType;
use serde::{Deserialize, Serialize};

/// Options shared by every task, plus the task-specific ones (ignored by tasks that do not use
/// them). Keys in a config file are the long flag names with `_` or `-`.
#[derive(Debug, Clone, Default, PartialEq, clap::Args, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct Options {
    // ---- model ----
    /// Recurrent cell (rnn-tanh and rnn-relu: Elman networks).
    #[arg(long, value_parser = super::choice::cell())]
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
    /// Layer-normalised LSTM/GRU (Ba et al. 2016): LN of the gate pre-activations' input and
    /// recurrent parts and of the LSTM cell state (char-lm, word-lm, forecast, adding, classify,
    /// tag, seq2seq, dates).
    #[arg(long, num_args = 0..=1, default_missing_value = "true")]
    pub layer_norm: Option<bool>,
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
    /// Optimiser (PyTorch's AdamW or SGD, step for step).
    #[arg(long, value_parser = super::choice::optimizer())]
    pub optimizer: Option<String>,
    /// Clip the global gradient norm to this value (0 = no clipping).
    #[arg(long)]
    pub clip: Option<f64>,
    /// Learning-rate schedule: constant, step (decay every `--decay-every` epochs), multistep
    /// (decay after the `--milestones` epochs), plateau (decay when validation stalls), cosine
    /// (linear warm-up over `--warmup-steps`, then a half cosine to `--min-lr` at the end of the
    /// run), cosine-restarts (SGDR: half cosines to `--min-lr` over the `--cycle-epochs`, each
    /// restarting at `--peak-decay` times the last peak). Each task has its own default.
    #[arg(long, value_parser = super::choice::schedule())]
    pub schedule: Option<String>,
    /// Decay factor of the step, multistep and plateau schedules (default 0.5).
    #[arg(long)]
    pub lr_decay: Option<f64>,
    /// Epochs between decays of the step schedule (default 1).
    #[arg(long)]
    pub decay_every: Option<u64>,
    /// Epoch counts after which the multistep schedule decays, e.g. `4,5,6`.
    #[arg(long, value_delimiter = ',')]
    pub milestones: Option<Vec<u64>>,
    /// Warm-up steps of the cosine schedule (default 0).
    #[arg(long)]
    pub warmup_steps: Option<u64>,
    /// Final learning rate of the cosine schedule, floor of the plateau and cosine-restarts
    /// schedules (default 0).
    #[arg(long)]
    pub min_lr: Option<f64>,
    /// Cycle lengths of the cosine-restarts schedule in epochs, e.g. `14,12`; after the last
    /// listed cycle each is `--cycle-mult` times as long as the one before.
    #[arg(long, value_delimiter = ',', value_name = "EPOCHS")]
    pub cycle_epochs: Option<Vec<u64>>,
    /// Growth of the cosine-restarts cycles after the listed ones (PyTorch's `T_mult`; default 1).
    #[arg(long, value_name = "N")]
    pub cycle_mult: Option<u64>,
    /// Each cosine-restarts cycle peaks at this times the previous cycle's peak (in (0, 1];
    /// default 1: every cycle restarts at `--lr`).
    #[arg(long, value_name = "F")]
    pub peak_decay: Option<f64>,
    /// Read the loss and the NaN checks back to the host every N steps (default: 1 on the CPU,
    /// 25 on GPUs; a NaN is still reported at its own step).
    #[arg(long)]
    pub host_sync_every: Option<u64>,
    /// Split every batch into K micro-batches, each run forward and backward on its own, and
    /// take one optimiser step on their combined gradients: the same step as the whole batch,
    /// with about 1/K of the activation memory. `--batch-size` stays the batch of one step.
    #[arg(long, value_name = "K")]
    pub grad_accum: Option<u64>,
    /// Train as N data-parallel ranks, threads of this process (the DDP semantics of `mpirun
    /// -np N`, without MPI; see docs/DISTRIBUTED.md). `--batch-size` is the global batch.
    #[arg(long, value_name = "N")]
    pub dp_threads: Option<u64>,
    /// Evaluate every N steps (besides every epoch end).
    #[arg(long)]
    pub eval_every: Option<u64>,
    /// Also save the checkpoint every N steps (it is saved at every evaluation anyway), so that a
    /// killed run resumes from there without paying for an evaluation.
    #[arg(long, value_name = "N")]
    pub checkpoint_every: Option<u64>,
    /// Average the weights over every step after epoch E (0: from the first step), as
    /// stochastic weight averaging and AWD-LSTM's averaged SGD do: evaluations score the
    /// average, `best/` keeps it (so the test result is the average's), training goes on with
    /// the last weights. The uniform mean, or an exponential moving average with --average-ema.
    #[arg(long, value_name = "E")]
    pub average_from_epoch: Option<u64>,
    /// With --average-from-epoch: an exponential moving average with this decay in (0, 1)
    /// (`avg = d * avg + (1 - d) * w` after every step) instead of the uniform mean.
    #[arg(long, value_name = "DECAY", allow_negative_numbers = true)]
    pub average_ema: Option<f64>,
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
    /// Floating-point type of parameters and activations (default f32). bf16 and f16 are for
    /// GPUs: on the CPU they run the composed ops, slower than f32.
    #[arg(long, value_parser = super::choice::dtype())]
    pub dtype: Option<String>,
    /// Output directory (checkpoint, metrics.jsonl, learning curves); default runs/TASK.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Continue the run whose checkpoint is in DIR (a run directory or its checkpoint/).
    #[arg(long)]
    pub resume: Option<PathBuf>,
    /// Start from the weights of the checkpoint in DIR (a run directory, preferring its best/,
    /// or a checkpoint directory) with a fresh optimiser, schedule and step count: fine-tuning,
    /// or a warm restart of the schedule (SGDR). Same task, model sizes and vocabulary. With
    /// --resume it is ignored: the same command plus --resume continues such a run.
    #[arg(long, value_name = "DIR")]
    pub init_from: Option<PathBuf>,

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
    /// Fraction of --data held out: for validation when --valid is not given (forecast: the
    /// test part at the end of the series).
    #[arg(long)]
    pub split: Option<f64>,

    // ---- task-specific ----
    /// Token level: char, word or subword (byte-level BPE) for the language models; char, word
    /// or tutorial (the PyTorch tutorial's normalisation) for translation.
    #[arg(long, value_parser = super::choice::level())]
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
    /// Classifier pooling of the recurrent outputs.
    #[arg(long, value_parser = super::choice::pooling())]
    pub pooling: Option<String>,
    /// Encoder-decoder attention (additive = Bahdanau, general = Luong).
    #[arg(long, value_parser = super::choice::attention())]
    pub attention: Option<String>,
    /// Beam size for decoding (1 = greedy).
    #[arg(long)]
    pub beam: Option<usize>,
    /// Maximum length in tokens: of generated output (seq2seq, sampling); of an example for
    /// classify (longer ones keep their first N tokens) and tag (longer sentences are split into
    /// chunks of N tokens).
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
    /// Forecasting strategy: one step ahead, all horizon steps at once, or fed back step by step.
    #[arg(long, value_parser = super::choice::strategy())]
    pub strategy: Option<String>,
    /// Forecasting: seasonal period of the seasonal-naive baseline (default: detected).
    #[arg(long)]
    pub season: Option<usize>,
    /// Forecast and digits: fraction of the rows before the test part held out for validation.
    #[arg(long)]
    pub valid_split: Option<f64>,
    /// MNIST: label file (idx1) accompanying --data (idx3 images).
    #[arg(long)]
    pub labels: Option<PathBuf>,
    /// Text tasks: character encoding of the data files (utf-8, latin1, windows-1252,
    /// iso-8859-15, utf-16le, shift_jis, ...; default utf-8).
    #[arg(long)]
    pub encoding: Option<String>,
    /// digits from CSV: features per time step; a row of F features becomes F/N steps (default:
    /// 28 when F = 784, else 1).
    #[arg(long)]
    pub row_len: Option<usize>,
    /// classify and tag: stream --data from the file each epoch through a seeded shuffle buffer
    /// of N examples (an approximate shuffle) instead of holding the training set in memory;
    /// needs --valid and --test files.
    #[arg(long, value_name = "N")]
    pub shuffle_buffer: Option<usize>,
    /// classify, digits, tag: train on a Hugging Face dataset (OWNER/NAME) instead of --data: its
    /// parquet files from the local Hugging Face cache ($HF_HOME/hub), else from the Hub. digits
    /// reads ylecun/mnist or zalando-datasets/fashion_mnist through candle-datasets. Needs a
    /// build with `--features hub`.
    #[arg(long, value_name = "NAME")]
    pub hf_dataset: Option<String>,
    /// classify, digits, tag: the split of --hf-dataset to read (default train).
    #[arg(long, value_name = "SPLIT")]
    pub hf_split: Option<String>,
    /// classify: the --hf-dataset column with the text (default text).
    #[arg(long, value_name = "COL")]
    pub text_column: Option<String>,
    /// classify: the --hf-dataset column with the label (default label).
    #[arg(long, value_name = "COL")]
    pub label_column: Option<String>,
    /// tag: the --hf-dataset list column with each sentence's tokens (default tokens).
    #[arg(long, value_name = "COL")]
    pub tokens_column: Option<String>,
    /// tag: the --hf-dataset list column with each sentence's tags, strings or class ids named
    /// by the dataset's ClassLabel names (default ner_tags).
    #[arg(long, value_name = "COL")]
    pub tags_column: Option<String>,
    /// Generated tasks: number of training examples.
    #[arg(long)]
    pub samples: Option<usize>,
    /// Chrono initialisation of the LSTM/GRU gate biases for dependencies up to T_MAX steps
    /// (Tallec & Ollivier 2018); fresh runs only.
    #[arg(long, value_name = "T_MAX")]
    pub chrono_init: Option<f64>,

    // ---- mask regularisers (docs/REGULARIZATION.md; char-lm, word-lm, classify, tag) ----
    /// Zoneout rate of the recurrent state h (and of the LSTM cell c) (Krueger et al. 2016).
    #[arg(long, value_name = "RATE")]
    pub zoneout: Option<f64>,
    /// Variational dropout on h where it enters W_hh, one mask per sequence (Keras'
    /// recurrent_dropout).
    #[arg(long, value_name = "P")]
    pub recurrent_dropout: Option<f64>,
    /// DropConnect on W_hh, one mask per step of training (AWD-LSTM's WeightDrop).
    #[arg(long, value_name = "P")]
    pub weight_drop: Option<f64>,
    /// Drop whole words of the embedding matrix (Merity et al. 2017).
    #[arg(long, value_name = "P")]
    pub embedding_dropout: Option<f64>,
    /// Variational dropout on every recurrent layer's input and on the last layer's output, one
    /// mask per sequence (Gal & Ghahramani 2016).
    #[arg(long, value_name = "P")]
    pub variational_dropout: Option<f64>,
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
            layer_norm,
            embedding,
            epochs,
            max_steps,
            batch_size,
            lr,
            optimizer,
            clip,
            schedule,
            lr_decay,
            decay_every,
            milestones,
            warmup_steps,
            min_lr,
            cycle_epochs,
            cycle_mult,
            peak_decay,
            host_sync_every,
            grad_accum,
            dp_threads,
            eval_every,
            checkpoint_every,
            average_from_epoch,
            average_ema,
            patience,
            skip_non_finite,
            seed,
            device,
            dtype,
            out,
            resume,
            init_from,
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
            season,
            valid_split,
            labels,
            encoding,
            row_len,
            shuffle_buffer,
            hf_dataset,
            hf_split,
            text_column,
            label_column,
            tokens_column,
            tags_column,
            samples,
            chrono_init,
            zoneout,
            recurrent_dropout,
            weight_drop,
            embedding_dropout,
            variational_dropout,
        )
    }

    /// The mask regularisers set by `--zoneout`, `--recurrent-dropout`, `--weight-drop`,
    /// `--embedding-dropout` and `--variational-dropout` (each 0 when not given); `--zoneout`
    /// sets the rate of h and, for an LSTM, of c.
    pub fn mask_options(&self, mode: rnn_core::Mode) -> rnn_models::masks::MaskOptions {
        let zoneout = self.zoneout.unwrap_or(0.0);
        rnn_models::masks::MaskOptions {
            variational_dropout: self.variational_dropout.unwrap_or(0.0),
            recurrent_dropout: self.recurrent_dropout.unwrap_or(0.0),
            zoneout_h: zoneout,
            zoneout_c: if mode == rnn_core::Mode::Lstm {
                zoneout
            } else {
                0.0
            },
            weight_drop: self.weight_drop.unwrap_or(0.0),
            embedding_dropout: self.embedding_dropout.unwrap_or(0.0),
        }
    }

    /// Reads a config file: TOML (`.toml`) or JSON (anything else that starts with `{`).
    pub fn from_file(path: &Path) -> Result<Options> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("--config {}: cannot read the file", path.display()))?;
        let is_json =
            path.extension().is_some_and(|e| e == "json") || text.trim_start().starts_with('{');
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
                    .map(|s| text[..s.start.min(text.len())].matches('\n').count() + 1)
                    .unwrap_or(1);
                anyhow::anyhow!(
                    "--config {}:{line}: invalid TOML: {}",
                    path.display(),
                    e.message()
                )
            })?;
            serde_json::to_value(t)?
        };
        let serde_json::Value::Object(map) = value else {
            bail!(
                "--config {}: expected a table of options (`key = value` lines in TOML, an object in JSON)",
                path.display()
            );
        };
        // Where a key is, for messages: `--config FILE:LINE`.
        let at = |key: &str| match key_line(&text, key) {
            Some(line) => format!("--config {}:{line}", path.display()),
            None => format!("--config {}", path.display()),
        };
        let known = known_keys();
        let mut options = serde_json::Map::new();
        // Option name (kebab-case) -> the key as written in the file.
        let mut written = std::collections::HashMap::new();
        for (key, v) in map {
            // Accept snake_case keys too.
            let name = key.replace('_', "-");
            if !known.contains(&name) {
                let hint = closest_key(&name, &known)
                    .map(|k| format!(" (did you mean `{k}`?)"))
                    .unwrap_or_default();
                bail!(
                    "{}: unknown key `{key}`{hint}; the keys are the long flags of `rnn train --help` without `--`",
                    at(&key)
                );
            }
            // One key at a time, so that a value of the wrong type names its key and line.
            let single =
                serde_json::Value::Object([(name.clone(), v.clone())].into_iter().collect());
            if let Err(e) = serde_json::from_value::<Options>(single) {
                bail!("{}: `{key}`: {e}", at(&key));
            }
            options.insert(name.clone(), v);
            written.insert(name, key);
        }
        let options: Options = serde_json::from_value(serde_json::Value::Object(options))
            .map_err(|e| anyhow::anyhow!("--config {}: {e}", path.display()))?;
        // Out-of-range values: the message names the flag; point at its key's line in the file.
        if let Err(e) = options.validate() {
            let message = e.to_string();
            let flag = message
                .strip_prefix("--")
                .and_then(|m| {
                    m.split(|c: char| !(c.is_ascii_alphanumeric() || c == '-'))
                        .next()
                })
                .unwrap_or_default();
            let place = match written.get(flag) {
                Some(key) => at(key),
                None => format!("--config {}", path.display()),
            };
            bail!("{place}: {message}");
        }
        Ok(options)
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
            ("--row-len", self.row_len),
            ("--shuffle-buffer", self.shuffle_buffer),
        ] {
            if v == Some(0) {
                bail!("{flag} must be at least 1, got 0");
            }
        }
        for (flag, v) in [
            ("--epochs", self.epochs),
            ("--max-steps", self.max_steps),
            ("--eval-every", self.eval_every),
            ("--checkpoint-every", self.checkpoint_every),
            ("--decay-every", self.decay_every),
            ("--cycle-mult", self.cycle_mult),
            ("--host-sync-every", self.host_sync_every),
            ("--grad-accum", self.grad_accum),
            ("--dp-threads", self.dp_threads),
        ] {
            if v == Some(0) {
                bail!("{flag} must be at least 1, got 0");
            }
        }
        for (flag, p) in [
            ("--dropout", self.dropout),
            ("--zoneout", self.zoneout),
            ("--recurrent-dropout", self.recurrent_dropout),
            ("--weight-drop", self.weight_drop),
            ("--embedding-dropout", self.embedding_dropout),
            ("--variational-dropout", self.variational_dropout),
        ] {
            if let Some(p) = p {
                if !(0.0..1.0).contains(&p) {
                    bail!("{flag} must be in [0, 1), got {p}");
                }
            }
        }
        if let Some(d) = self.average_ema {
            if self.average_from_epoch.is_none() {
                bail!(
                    "--average-ema needs --average-from-epoch (the epoch the average starts after)"
                );
            }
            if !(d.is_finite() && d > 0.0 && d < 1.0) {
                bail!("--average-ema must be a decay in (0, 1), got {d}");
            }
        }
        if self.init_from.is_some() && self.chrono_init.is_some() {
            bail!("--chrono-init initialises a fresh model's gate biases and --init-from loads all weights from a checkpoint: give one of them");
        }
        if let Some(t) = self.chrono_init {
            if !(t.is_finite() && t >= 2.0) {
                bail!("--chrono-init must be a number of steps >= 2, got {t}");
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
        if let Some(g) = self.lr_decay {
            if !(g.is_finite() && g > 0.0) {
                bail!("--lr-decay must be a positive number, got {g}");
            }
        }
        if let Some(m) = self.min_lr {
            if !(m.is_finite() && m >= 0.0) {
                bail!("--min-lr must be >= 0, got {m}");
            }
        }
        if let Some(s) = &self.schedule {
            parse_schedule_name(s)?;
        }
        if let Some(c) = &self.cycle_epochs {
            if c.is_empty() {
                bail!("--cycle-epochs needs at least one cycle length (epochs, e.g. 14,12)");
            }
            if let Some(i) = c.iter().position(|&n| n == 0) {
                bail!(
                    "--cycle-epochs: every cycle must last at least 1 epoch, got 0 for cycle {}",
                    i + 1
                );
            }
        }
        if let Some(d) = self.peak_decay {
            if !(d > 0.0 && d <= 1.0) {
                bail!("--peak-decay must be in (0, 1], got {d}");
            }
        }
        if let Some(s) = self.split {
            if !(s > 0.0 && s < 1.0) {
                bail!("--split must be in (0, 1), got {s}");
            }
        }
        if let Some(s) = self.valid_split {
            if !(s > 0.0 && s < 1.0) {
                bail!("--valid-split must be in (0, 1), got {s}");
            }
        }
        if self.season == Some(0) {
            bail!("--season must be at least 1, got 0");
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
            parse_dtype(d)?;
        }
        self.text_encoding()?;
        Ok(())
    }
}

impl Options {
    /// `--encoding`, UTF-8 when not given; an unknown name is an error naming the flag.
    pub fn text_encoding(&self) -> Result<rnn_train::data::TextEncoding> {
        match &self.encoding {
            Some(name) => rnn_train::data::TextEncoding::from_label(name)
                .map_err(|e| anyhow::anyhow!("--encoding: {e}")),
            None => Ok(rnn_train::data::TextEncoding::UTF8),
        }
    }
}

/// Parses `--dtype`.
pub fn parse_dtype(s: &str) -> Result<DType> {
    match s.trim().to_ascii_lowercase().as_str() {
        "f32" | "float32" => Ok(DType::F32),
        "f64" | "float64" => Ok(DType::F64),
        "bf16" | "bfloat16" => Ok(DType::BF16),
        "f16" | "float16" | "half" => Ok(DType::F16),
        other => bail!("--dtype must be f32, f64, bf16 or f16, got '{other}'"),
    }
}

/// Checks an `--optimizer` name (any case; `adam` for `adamw`) and returns its canonical spelling.
pub fn parse_optimizer_name(s: &str) -> Result<&'static str> {
    match s.trim().to_ascii_lowercase().as_str() {
        "adamw" | "adam" => Ok("adamw"),
        "sgd" => Ok("sgd"),
        _ => bail!("--optimizer must be adamw or sgd, got '{s}'"),
    }
}

/// The schedules `--schedule` accepts.
pub const SCHEDULES: [&str; 6] = [
    "constant",
    "step",
    "multistep",
    "plateau",
    "cosine",
    "cosine-restarts",
];

/// Checks a `--schedule` name and returns its canonical spelling.
pub fn parse_schedule_name(s: &str) -> Result<&'static str> {
    let lower = s.trim().to_ascii_lowercase().replace(['-', '_'], "");
    let name = match lower.as_str() {
        "constant" | "none" => "constant",
        "step" | "steplr" | "stepdecay" => "step",
        "multistep" | "multisteplr" => "multistep",
        "plateau" | "reducelronplateau" => "plateau",
        "cosine" | "cosinewarmup" => "cosine",
        "cosinerestarts" | "sgdr" | "cosineannealingwarmrestarts" | "warmrestarts" => {
            "cosine-restarts"
        }
        _ => bail!(
            "--schedule must be one of {}, got '{s}'",
            SCHEDULES.join(", ")
        ),
    };
    Ok(name)
}

/// The option keys a config file may use (kebab-case, as the long flags).
fn known_keys() -> Vec<String> {
    match serde_json::to_value(Options::default()) {
        Ok(serde_json::Value::Object(map)) => map.keys().cloned().collect(),
        _ => Vec::new(),
    }
}

/// The 1-based line of `text` where the top-level key `key` is set (`key =`, `"key":`,
/// `[key]`), if any.
fn key_line(text: &str, key: &str) -> Option<usize> {
    let forms = [
        key.to_string(),
        format!("\"{key}\""),
        format!("'{key}'"),
        format!("[{key}]"),
    ];
    text.lines()
        .position(|line| {
            let line = line.trim_start().trim_start_matches('{').trim_start();
            forms.iter().any(|form| {
                line.strip_prefix(form.as_str()).is_some_and(|rest| {
                    let rest = rest.trim_start();
                    form.starts_with('[') || rest.starts_with('=') || rest.starts_with(':')
                })
            })
        })
        .map(|i| i + 1)
}

/// The known key nearest to `key` (at most 2 edits away, or `key` being its prefix).
fn closest_key<'a>(key: &str, known: &'a [String]) -> Option<&'a str> {
    fn distance(a: &str, b: &str) -> usize {
        let b: Vec<char> = b.chars().collect();
        let mut row: Vec<usize> = (0..=b.len()).collect();
        for (i, ca) in a.chars().enumerate() {
            let mut prev = row[0];
            row[0] = i + 1;
            for (j, cb) in b.iter().enumerate() {
                let cur = row[j + 1];
                row[j + 1] = (prev + usize::from(ca != *cb)).min(row[j] + 1).min(cur + 1);
                prev = cur;
            }
        }
        row[b.len()]
    }
    known
        .iter()
        .map(|k| (distance(key, k), k))
        .filter(|(d, k)| *d <= 2 || (key.len() >= 3 && k.starts_with(key)))
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| k.as_str())
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
            (
                Options {
                    encoding: Some("klingon".into()),
                    ..Default::default()
                },
                "--encoding",
            ),
            (
                Options {
                    row_len: Some(0),
                    ..Default::default()
                },
                "--row-len",
            ),
        ] {
            let e = o.validate().unwrap_err().to_string();
            assert!(e.contains(flag), "{e}");
        }
    }
}
