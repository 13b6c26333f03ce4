//! `char-lm` and `word-lm`: recurrent language models on a text file, trained with truncated
//! back-propagation through time over a token stream cut into parallel rows, as in Zaremba et
//! al. (2014, <https://arxiv.org/abs/1409.2329>), and evaluated statefully (perplexity, bits per
//! token; bits per character for `char-lm`).
//!
//! Token levels (`--level`, default `char` for `char-lm`, `word` for `word-lm`):
//!
//! | level | tokens | vocabulary (training split only) | checkpoint file |
//! |---|---|---|---|
//! | `char` | every character, newlines included | characters seen, unknown ones -> `<unk>` | `vocab.json` |
//! | `word` | whitespace-separated words, `<eos>` after each line (PTB); a literal `<unk>` is the unknown id | `--vocab-size` most frequent words | `vocab.json` |
//! | `subword` | byte-level BPE pieces | `--vocab-size` (default 2000) pieces | `tokenizer.json` |
//!
//! Data: `--data FILE` (UTF-8, or the `--encoding` given, which `rnn eval` reuses). Test part:
//! `--test FILE`, else the last `--split` fraction (default 0.1) of the text. Validation part:
//! `--valid FILE`, else a piece of the same size just before the test part. Validation picks the
//! best weights; the test part, which neither the vocabulary nor model selection sees, is scored
//! once with them (the summary's `test perplexity`, which `rnn eval --checkpoint DIR` prints
//! again). Without `--data` a small generated text is used, so `rnn train char-lm` runs on a
//! fresh clone. `--data` may also be a token file made by `rnn prepare` (docs/STREAMING.md):
//! training then reads its windows in place from the mapped file, with the same metrics and
//! weights as from the text; the data options are those the file was prepared with.
//!
//! Defaults: `char-lm` 2 x 256 LSTM, embedding 64, dropout 0.1, `--seq-len` 100, batch 32,
//! AdamW lr 2e-3, clip 5, 10 epochs. `word-lm` is Zaremba's "small" model: 2 x 200 LSTM,
//! dropout 0, `--seq-len` 20, batch 20, SGD, 13 epochs, init U(-0.1, 0.1), lr 20 and clip 0.25
//! on the per-token mean loss (= Zaremba's lr 1 and clip 5 on the loss summed over a window); the
//! learning rate is kept for 4 epochs and halved after every later one, as in the paper
//! (`--schedule multistep --milestones 4,5,...,12 --lr-decay 0.5`; any `--schedule` overrides it).

mod codec;
mod prepared;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use candle_core::{Device, Tensor, D};
use candle_nn::VarMap;
use rnn_core::{Mode, RnnState};
use rnn_models::lm::{GenerateConfig, LanguageModel, LanguageModelConfig};
use rnn_models::sampling::SamplingConfig;
use rnn_train::data::{is_token_file, read_text_as, LmBatches, TextEncoding, TokenIds, TokenPart};
use rnn_train::metrics::{Metric, Perplexity, PerplexityReport};
use rnn_train::optim::LrScheduleConfig;
use rnn_train::trainer::{Evaluation, MainMetric, Part, StepLoss, TrainTask};

use codec::held_out_ids;
pub use codec::{builtin_text, prepare, Codec, Level};
pub use prepared::{prepare_file, PrepareRequest, PreparedMeta};

use crate::run::{
    self, invalid, stochastic_model, task_from_functions, CheckpointRun, EvalRequest,
    PredictRequest, RunContext, SampleRequest, TaskName, TaskOptions, TrainDefaults, TrainOutcome,
};
use crate::run::{EvalReport, Predictions, Samples, Split};

/// The task's defaults (overridden by the options).
struct LmDefaults {
    hidden: usize,
    layers: usize,
    embedding: usize,
    dropout: f64,
    seq_len: usize,
    batch: usize,
    train: TrainDefaults,
}

fn defaults(task: TaskName) -> LmDefaults {
    match task {
        TaskName::WordLm => LmDefaults {
            hidden: 200,
            layers: 2,
            embedding: 200,
            dropout: 0.0,
            seq_len: 20,
            batch: 20,
            // Zaremba's lr 1 and clip 5 act on the loss summed over the 20 steps of a window;
            // on the per-token mean loss the same update is lr 20 and clip 0.25 (as PyTorch's
            // word_language_model example).
            train: TrainDefaults {
                epochs: 13,
                lr: 20.0,
                clip: Some(0.25),
                eval_every: None,
                optimizer: "sgd",
            },
        },
        _ => LmDefaults {
            hidden: 256,
            layers: 2,
            embedding: 64,
            dropout: 0.1,
            seq_len: 100,
            batch: 32,
            train: TrainDefaults {
                epochs: 10,
                lr: 2e-3,
                clip: Some(5.0),
                eval_every: None,
                optimizer: "adamw",
            },
        },
    }
}

/// The task's view of the data and model, as the trainer drives it.
struct LmTask {
    model: LanguageModel,
    train: LmBatches,
    valid: Vec<u32>,
    eval_batch: usize,
    seq_len: usize,
    level: Level,
    device: Device,
    config: serde_json::Value,
    files: Vec<(String, Vec<u8>)>,
}

/// Stateful evaluation of a token stream; the batch shrinks for short streams.
fn stream_report(
    model: &LanguageModel,
    ids: &[u32],
    batch: usize,
    window: usize,
) -> Result<PerplexityReport> {
    if ids.len() < 2 {
        bail!(
            "{} tokens are too few to evaluate (at least 2 are needed)",
            ids.len()
        );
    }
    let batch = batch.min(ids.len() / 2).max(1);
    let (nll, count) = model.stream_nll(ids, batch, window)?;
    let mut ppl = Perplexity::new();
    ppl.update(nll, count)?;
    ppl.compute().context("no tokens were evaluated")
}

/// The metrics of a report, named for `level`.
fn report_metrics(r: &PerplexityReport, level: Level) -> BTreeMap<String, f64> {
    let mut m = BTreeMap::new();
    m.insert("perplexity".to_string(), r.perplexity);
    match level {
        Level::Char => {
            m.insert("bits_per_char".to_string(), r.bits_per_token);
            m.insert("nats_per_char".to_string(), r.nll_per_token);
        }
        _ => {
            m.insert("bits_per_token".to_string(), r.bits_per_token);
        }
    }
    m
}

/// A one-line description of a report.
fn describe(r: &PerplexityReport, level: Level) -> String {
    let unit = level.unit();
    format!(
        "perplexity {:.3}, loss {:.4} nats/{unit}, {:.4} bits/{unit} over {} {unit}s",
        r.perplexity, r.nll_per_token, r.bits_per_token, r.tokens
    )
}

impl TrainTask for LmTask {
    type Batch = usize;

    fn train_batches(&mut self, _epoch: u64, _seed: u64) -> rnn_train::Result<Vec<usize>> {
        // Windows stay in stream order: the state carried from window k feeds window k + 1.
        Ok((0..self.train.len()).collect())
    }

    fn train_step(
        &mut self,
        batch: &usize,
        carry: &mut Option<RnnState>,
    ) -> rnn_train::Result<StepLoss> {
        self.train_part(batch, Part::WHOLE, carry)
    }

    fn train_part(
        &mut self,
        batch: &usize,
        part: Part,
        carry: &mut Option<RnnState>,
    ) -> rnn_train::Result<StepLoss> {
        // A part is a contiguous range of the streams (the rows of the window): only those
        // streams are read.
        let w = self
            .train
            .window_rows(*batch, part.rows(self.train.batch()), &self.device)?;
        let (inputs, targets) = (w.inputs, w.targets);
        let rows = inputs.dims()[0];
        if rows == 0 {
            return Ok(StepLoss {
                loss: Tensor::zeros((), candle_core::DType::F32, &self.device)?,
                units: 0,
            });
        }
        let (nll, state) = self
            .model
            .loss(&inputs, &targets, carry.as_ref(), None, true)?;
        *carry = Some(state);
        Ok(StepLoss {
            loss: nll.mean()?,
            units: (rows * w.len) as u64,
        })
    }

    fn evaluate(&mut self) -> rnn_train::Result<Evaluation> {
        let r = stream_report(&self.model, &self.valid, self.eval_batch, self.seq_len)
            .map_err(|e| invalid(e.context("validation")))?;
        Ok(Evaluation {
            loss: r.nll_per_token,
            metrics: report_metrics(&r, self.level),
            main: Some(MainMetric {
                name: "perplexity".to_string(),
                value: r.perplexity,
                higher_is_better: false,
            }),
        })
    }

    fn unit(&self) -> &'static str {
        "tokens"
    }

    stochastic_model!(model);

    fn checkpoint_config(&self) -> serde_json::Value {
        self.config.clone()
    }

    fn checkpoint_files(&self) -> Vec<(String, Vec<u8>)> {
        self.files.clone()
    }
}

fn path_string(p: &Option<PathBuf>) -> serde_json::Value {
    match p {
        Some(p) => serde_json::Value::String(p.display().to_string()),
        None => serde_json::Value::Null,
    }
}

/// The options `char-lm` and `word-lm` read, with their defaults.
pub fn options(task: TaskName) -> TaskOptions {
    let d = defaults(task);
    TaskOptions::new()
        .read("data")
        .read("valid")
        .read("test")
        .with("split", 0.1)
        .read("encoding")
        .with(
            "level",
            if task == TaskName::WordLm {
                "word"
            } else {
                "char"
            },
        )
        .read("vocab-size")
        .with("seq-len", d.seq_len)
        .with("embedding", d.embedding)
        .with("tie-weights", false)
        .with("cell", "lstm")
        .with("hidden", d.hidden)
        .with("layers", d.layers)
        .with("dropout", d.dropout)
        .with("zoneout", 0)
        .with("recurrent-dropout", 0)
        .with("weight-drop", 0)
        .with("embedding-dropout", 0)
        .with("variational-dropout", 0)
        .with("layer-norm", false)
        .with("batch-size", d.batch)
        .training(&d.train)
}

task_from_functions!(
    /// The language-model tasks `char-lm` and `word-lm` (see the [module docs](self)).
    LanguageModelling, sample
);

/// The token ids of a run and how they were made.
struct LmData {
    level: Level,
    codec: Codec,
    /// Training ids, read in place from a token file or held in memory.
    train: TokenIds,
    valid: Vec<u32>,
    test: Vec<u32>,
    /// Whether the test part was held out of `--data` (else it is `--test FILE`).
    held_out_test: bool,
    split: f64,
    valid_path: Option<PathBuf>,
    test_path: Option<PathBuf>,
    encoding: TextEncoding,
}

/// What [`encode_texts`] gives.
struct EncodedTexts {
    /// The codec, built on the training part.
    codec: Codec,
    /// Training ids.
    train: Vec<u32>,
    /// Validation ids.
    valid: Vec<u32>,
    /// Test ids.
    test: Vec<u32>,
}

/// The in-memory parts of a run's texts at `level`: the codec (built on the training part only)
/// and the training, validation and test ids. Without `test_text` the last `split` of
/// `train_text` is the test part, and without `valid_text` as large a piece just before it is
/// the validation part; neither reaches the vocabulary. (`rnn prepare` computes the same,
/// streaming.)
fn encode_texts(
    level: Level,
    train_text: &str,
    valid_text: Option<&str>,
    test_text: Option<&str>,
    split: f64,
    vocab_size: Option<usize>,
) -> Result<EncodedTexts> {
    let (rest, held_out_test, valid_split) = match test_text {
        Some(_) => (None, None, split),
        None => {
            let valid_split = codec::valid_fraction(split, valid_text.is_some())?;
            let (rest, test) = codec::split_text(train_text, split);
            (Some(rest), Some(test), valid_split)
        }
    };
    let (codec, train_ids, valid_ids) = prepare(
        level,
        rest.as_deref().unwrap_or(train_text),
        valid_text,
        valid_split,
        vocab_size,
    )?;
    let test_ids = match (test_text, &held_out_test) {
        (Some(t), _) => codec.encode(t)?,
        (None, Some(t)) => codec.encode(t)?,
        (None, None) => Vec::new(),
    };
    Ok(EncodedTexts {
        codec,
        train: train_ids,
        valid: valid_ids,
        test: test_ids,
    })
}

/// The data of a run on a text (`--data TEXT`, or the built-in text): read, split and encoded in
/// memory.
fn load_text(ctx: &RunContext) -> Result<LmData> {
    let o = &ctx.opts;
    let level = match &o.level {
        Some(l) => Level::parse(l)?,
        None if ctx.task == TaskName::WordLm => Level::Word,
        None => Level::Char,
    };
    let split = o.split.unwrap_or(0.1);
    let encoding = o.text_encoding()?;
    let read_text = |p: &Path| read_text_as(p, encoding);
    let train_text = match &o.data {
        Some(p) => read_text(p).with_context(|| "--data".to_string())?,
        None => {
            ctx.say(&format!(
                "{}: no --data given; training on a small built-in generated text (give --data FILE for real text)",
                ctx.task.as_str()
            ));
            builtin_text()
        }
    };
    let valid_text = match &o.valid {
        Some(p) => Some(read_text(p).context("--valid")?),
        None => None,
    };
    let test_text = match &o.test {
        Some(p) => Some(read_text(p).context("--test")?),
        None => None,
    };
    let EncodedTexts {
        codec,
        train: train_ids,
        valid: valid_ids,
        test: test_ids,
    } = encode_texts(
        level,
        &train_text,
        valid_text.as_deref(),
        test_text.as_deref(),
        split,
        o.vocab_size,
    )?;
    let held_out_test = test_text.is_none();
    Ok(LmData {
        level,
        codec,
        train: TokenIds::from(train_ids),
        valid: valid_ids,
        test: test_ids,
        held_out_test,
        split,
        valid_path: o.valid.clone(),
        test_path: o.test.clone(),
        encoding,
    })
}

/// Trains `char-lm` or `word-lm`.
pub fn train(ctx: &RunContext) -> Result<TrainOutcome> {
    let o = &ctx.opts;
    let d = defaults(ctx.task);
    let data = match &o.data {
        Some(p) if is_token_file(p) => {
            let p = prepared::open_for_training(p, o)?;
            ctx.say(&format!(
                "{}: prepared token file {} ({} level, made from {}), read in place",
                ctx.task.as_str(),
                p.file.path().display(),
                p.meta.level.as_str(),
                p.meta.data.display()
            ));
            LmData {
                level: p.meta.level,
                train: p.file.part(TokenPart::Train),
                valid: p.file.part(TokenPart::Valid).to_vec(),
                test: p.file.part(TokenPart::Test).to_vec(),
                held_out_test: p.meta.test_held_out,
                split: p.meta.split,
                valid_path: p.meta.valid,
                test_path: p.meta.test,
                encoding: match &p.meta.encoding {
                    Some(e) => TextEncoding::from_label(e)?,
                    None => TextEncoding::UTF8,
                },
                codec: p.codec,
            }
        }
        _ => load_text(ctx)?,
    };
    let LmData {
        level,
        codec,
        train: train_ids,
        valid: valid_ids,
        test: test_ids,
        held_out_test,
        split,
        valid_path,
        test_path,
        encoding,
    } = data;
    let batch = o.batch_size.unwrap_or(d.batch);
    let seq_len = o.seq_len.unwrap_or(d.seq_len);
    let train = LmBatches::from_ids(train_ids.clone(), batch, seq_len).with_context(|| {
        format!(
            "{}: the training text gives {} tokens, too few for --batch-size {batch}",
            o.data
                .as_ref()
                .map_or("built-in text".to_string(), |p| p.display().to_string()),
            train_ids.len()
        )
    })?;
    if valid_ids.len() < 2 {
        bail!(
            "the validation data has {} tokens; at least 2 are needed (give --valid FILE or a larger --split)",
            valid_ids.len()
        );
    }
    ctx.say(&format!(
        "{}: {} level, vocabulary {}, {} training tokens ({} windows of {batch} x {seq_len}), {} validation tokens",
        ctx.task.as_str(),
        level.as_str(),
        codec.vocab_size(),
        train_ids.len(),
        train.len(),
        valid_ids.len()
    ));

    let hidden = o.hidden.unwrap_or(d.hidden);
    let tie = o.tie_weights.unwrap_or(false);
    let embedding = o
        .embedding
        .unwrap_or(if tie { hidden } else { d.embedding });
    if tie && embedding != hidden {
        bail!("--tie-weights needs --embedding equal to --hidden, got --embedding {embedding} and --hidden {hidden}");
    }
    let mode = ctx.cell(Mode::Lstm)?;
    let model_cfg = LanguageModelConfig::new(mode, codec.vocab_size(), embedding, hidden)
        .with_masks(o.mask_options(mode))
        .with_num_layers(o.layers.unwrap_or(d.layers))
        .with_dropout(o.dropout.unwrap_or(d.dropout))
        .with_tie_weights(tie)
        .with_layer_norm(o.layer_norm.unwrap_or(false))
        .with_init_range(Some(0.1))
        .with_pad_id(Some(0))
        .with_eos_id((level == Level::Word).then_some(3));
    let varmap = VarMap::new();
    let model = LanguageModel::new(&model_cfg, ctx.var_builder(&varmap))?;

    let mut cfg = run::trainer_config(ctx, &d.train)?;
    if ctx.task == TaskName::WordLm && o.schedule.is_none() {
        // Zaremba et al.: the base rate for 4 epochs, then halved after every further epoch.
        let epochs = cfg.epochs.unwrap_or(d.train.epochs);
        cfg.schedule = LrScheduleConfig::MultiStep {
            milestones: (4..epochs.max(5)).collect(),
            gamma: 0.5,
        };
        cfg.validate()?;
    }

    let (file_name, bytes) = codec.file()?;
    let config = serde_json::json!({
        "task": ctx.task.as_str(),
        "model": model_cfg,
        "level": level,
        "seq_len": seq_len,
        "batch_size": batch,
        "data": path_string(&o.data),
        "valid": path_string(&valid_path),
        "split": split,
        "test": path_string(&test_path),
        "test_held_out": held_out_test,
        "encoding": (encoding != TextEncoding::UTF8).then(|| encoding.name()),
    });
    let mut task = LmTask {
        model,
        train,
        valid: valid_ids,
        eval_batch: batch,
        seq_len,
        level,
        device: ctx.device.clone(),
        config,
        files: vec![(file_name, bytes)],
    };
    let report = run::fit(ctx, cfg, varmap.clone(), &mut task)?;

    let mut extra = Vec::new();
    if let Some(best) = report.history.iter().rev().find(|r| r.best) {
        let unit = level.unit();
        extra.push(format!(
            "best valid loss {:.4} nats/{unit} ({:.4} bits/{unit})",
            best.valid_loss,
            best.valid_loss / std::f64::consts::LN_2
        ));
    }
    {
        let which = match run::load_best(ctx, &varmap)? {
            Some(_) => "best",
            None => "final",
        };
        // Scored as `rnn eval` scores it by default, so that the two print the same numbers.
        let r = stream_report(&task.model, &test_ids, run::DEFAULT_EVAL_BATCH, seq_len)
            .context("scoring the test part (give a larger --split or --test FILE)")?;
        ctx.say(&format!("test ({which} weights): {}", describe(&r, level)));
        extra.push(format!("test perplexity {:.3}", r.perplexity));
        extra.push(format!(
            "test part: {} {}s {}, {which} weights",
            r.tokens,
            level.unit(),
            if held_out_test {
                "held out of the training text"
            } else {
                "of --test"
            }
        ));
        if level == Level::Char {
            extra.push(format!(
                "test {:.4} nats/char, {:.4} bits/char",
                r.nll_per_token, r.bits_per_token
            ));
        }
    }
    Ok(TrainOutcome { report, extra })
}

/// A checkpoint's model and codec, ready to run.
struct Loaded {
    model: LanguageModel,
    codec: Codec,
    seq_len: usize,
}

fn load(run: &CheckpointRun) -> Result<Loaded> {
    let cfg: LanguageModelConfig = run.model_entry("model")?;
    let level: Level = run.model_entry("level")?;
    let seq_len: usize = run.model_entry("seq_len").unwrap_or(35);
    let codec = Codec::from_checkpoint(run, level)?;
    if codec.vocab_size() != cfg.vocab_size {
        bail!(
            "checkpoint {}: the vocabulary has {} entries but the model expects {}",
            run.dir.display(),
            codec.vocab_size(),
            cfg.vocab_size
        );
    }
    let varmap = VarMap::new();
    let model = LanguageModel::new(&cfg, run.var_builder(&varmap))?;
    run.fill(&varmap)?;
    Ok(Loaded {
        model,
        codec,
        seq_len,
    })
}

/// What [`eval`] scores: the ids, and which part of which file they are.
struct Scored {
    ids: Vec<u32>,
    /// How the result line names them (`test: FILE`, `the last 0.1 of FILE`, ...).
    source: String,
    split: Split,
    /// Their file; `None` for the built-in text.
    path: Option<PathBuf>,
}

/// The ids `rnn eval` scores in the token file `path`: its test part, else (when it holds none)
/// its validation part. The file's vocabulary must be the checkpoint's.
fn token_file_ids(codec: &Codec, path: &Path) -> Result<Scored> {
    let (file, _, file_codec) = prepared::open(path)?;
    let same = match (codec, &file_codec) {
        (Codec::Vocab { vocab: a, .. }, Codec::Vocab { vocab: b, .. }) => a.tokens() == b.tokens(),
        _ => false,
    };
    if !same {
        bail!(
            "{}: the token file's vocabulary is not the checkpoint's (give a text --data, or a token file prepared the way this run's was)",
            path.display()
        );
    }
    let (part, name, split) = if file.part(TokenPart::Test).is_empty() {
        (TokenPart::Valid, "validation", Split::Validation)
    } else {
        (TokenPart::Test, "test", Split::Test)
    };
    Ok(Scored {
        ids: file.part(part).to_vec(),
        source: format!("{name} part of {}", path.display()),
        split,
        path: Some(path.to_path_buf()),
    })
}

/// Perplexity (and bits per token) of the checkpoint on `--data` (a text, or the test part of a
/// token file), or on the test data recorded in the checkpoint.
pub fn eval(run: &CheckpointRun, req: impl Into<EvalRequest>) -> Result<EvalReport> {
    let req = req.into();
    let l = load(run)?;
    let level = l.codec.level();
    // The files are read in the encoding recorded at training (`--encoding`), UTF-8 by default.
    let saved: Option<String> = run.model_entry("encoding").ok().flatten();
    let encoding = saved
        .as_deref()
        .map(TextEncoding::from_label)
        .transpose()?
        .unwrap_or_default();
    let read_text = |p: &Path| read_text_as(p, encoding);
    let recorded: Option<PathBuf> = run.model_entry("data").ok().flatten();
    let scored = match &req.data {
        Some(p) if is_token_file(p) => token_file_ids(&l.codec, p)?,
        None if recorded.as_deref().is_some_and(is_token_file) => {
            token_file_ids(&l.codec, recorded.as_deref().unwrap_or(Path::new("")))?
        }
        Some(p) => Scored {
            ids: l.codec.encode(&read_text(p).context("--data")?)?,
            source: p.display().to_string(),
            split: Split::Data,
            path: Some(p.clone()),
        },
        None => {
            let valid: Option<PathBuf> = run.model_entry("valid").ok().flatten();
            let data: Option<PathBuf> = run.model_entry("data").ok().flatten();
            let split: f64 = run.model_entry("split").unwrap_or(0.1);
            let test: Option<PathBuf> = run.model_entry("test").ok().flatten();
            let test_held_out: bool = run.model_entry("test_held_out").unwrap_or(false);
            // The run's test part (its headline), else (older checkpoints) its validation part.
            let text = |d: &Option<PathBuf>| -> Result<String> {
                match d {
                    Some(d) => read_text(d).context(
                        "the training file recorded in the checkpoint (give --data FILE instead)",
                    ),
                    None => Ok(builtin_text()),
                }
            };
            let name = |d: &Option<PathBuf>| {
                d.as_ref()
                    .map_or("the built-in text".to_string(), |p| p.display().to_string())
            };
            match (test, test_held_out, valid, data) {
                (Some(t), _, _, _) => Scored {
                    ids: l.codec.encode(&read_text(&t).context(
                        "the test file recorded in the checkpoint (give --data FILE instead)",
                    )?)?,
                    source: format!("test: {}", t.display()),
                    split: Split::Test,
                    path: Some(t),
                },
                (None, true, _, data) => Scored {
                    ids: l.codec.encode(&codec::split_text(&text(&data)?, split).1)?,
                    source: format!("test: the last {split} of {}", name(&data)),
                    split: Split::Test,
                    path: data,
                },
                (None, false, Some(v), _) => Scored {
                    ids: l.codec.encode(&read_text(&v).context(
                        "the validation file recorded in the checkpoint (give --data FILE instead)",
                    )?)?,
                    source: v.display().to_string(),
                    split: Split::Validation,
                    path: Some(v),
                },
                (None, false, None, Some(d)) => Scored {
                    ids: held_out_ids(
                        &l.codec,
                        &read_text(&d).context(
                            "the training file recorded in the checkpoint (give --data FILE instead)",
                        )?,
                        split,
                    )?,
                    source: format!("the last {split} of {}", d.display()),
                    split: Split::Validation,
                    path: Some(d),
                },
                (None, false, None, None) => Scored {
                    ids: held_out_ids(&l.codec, &builtin_text(), split)?,
                    source: format!("the last {split} of the built-in text"),
                    split: Split::Validation,
                    path: None,
                },
            }
        }
    };
    let Scored {
        ids,
        source,
        split,
        path,
    } = scored;
    let r = stream_report(&l.model, &ids, req.batch_size, l.seq_len)
        .with_context(|| format!("evaluating on {source}"))?;
    let summary = format!("{}: {} ({source})", run.task.as_str(), describe(&r, level));
    let unit = format!("{}s", level.unit());
    let mut report = EvalReport::new(summary, split, path.as_deref(), r.tokens, &unit);
    report.metrics = report_metrics(&r, level);
    Ok(report.metric("loss", r.nll_per_token))
}

/// For each input line: its log-probability (given the start of a line), per-token perplexity
/// and the most likely next tokens; as values `{"log_prob", "tokens", "perplexity", "next":
/// [{"token", "probability"}]}`.
pub fn predict(run: &CheckpointRun, req: impl Into<PredictRequest>) -> Result<Predictions> {
    let req = req.into();
    let l = load(run)?;
    let start = l.codec.line_start()?;
    let device = &run.device;
    let mut out = Predictions::default();
    for line in req.inputs()? {
        let body = l.codec.encode_prompt(&line)?;
        // Scored: the line's tokens and its end (`<eos>` / newline), given the previous line's end.
        let mut seq = start.clone();
        seq.extend_from_slice(&body);
        let mut full = seq.clone();
        full.extend_from_slice(&start);
        let lp = l.model.log_prob(&full)?;
        let n = (full.len() - 1).max(1);
        // Next token after the line (without its end).
        let ids = Tensor::from_vec(seq.clone(), (1, seq.len()), device)?;
        let (logits, _) = l.model.detached().forward(&ids, None, None, false)?;
        let last = logits
            .get(0)?
            .get(seq.len() - 1)?
            .to_dtype(candle_core::DType::F32)?;
        let probs = candle_nn::ops::softmax(&last, D::Minus1)?.to_vec1::<f32>()?;
        let mut order: Vec<usize> = (0..probs.len()).collect();
        order.sort_by(|&a, &b| probs[b].total_cmp(&probs[a]).then(a.cmp(&b)));
        let top: Vec<(String, f32)> = order
            .iter()
            .take(5)
            .map(|&i| (l.codec.token_text(i as u32), probs[i]))
            .collect();
        let next: Vec<String> = top.iter().map(|(t, p)| format!("{t:?} {p:.3}")).collect();
        let perplexity = (-lp / n as f64).exp();
        let text = format!(
            "{line}\tlog-prob {lp:.3} nats over {n} tokens, perplexity {perplexity:.3}; next: {}",
            next.join(", ")
        );
        let next: Vec<_> = top
            .iter()
            .map(|(t, p)| serde_json::json!({"token": t, "probability": p}))
            .collect();
        let value = serde_json::json!({
            "log_prob": lp, "tokens": n, "perplexity": perplexity, "next": next,
        });
        out.push(text, line, value);
    }
    Ok(out)
}

/// Generates `--num` samples continuing `--prompt` (default: the start of a line); sample i
/// (from 0) draws with seed `--seed` + i. As values: each sample's text, prompt included.
pub fn sample(run: &CheckpointRun, req: impl Into<SampleRequest>) -> Result<Samples> {
    let req = req.into();
    let l = load(run)?;
    let (prompt_ids, prompt_text) = match &req.prompt {
        Some(p) if !p.is_empty() => {
            let ids = l.codec.encode_prompt(p)?;
            if ids.is_empty() {
                bail!("--prompt '{p}' has no tokens");
            }
            (ids, p.clone())
        }
        _ => (l.codec.line_start()?, String::new()),
    };
    let cfg = GenerateConfig {
        sampling: SamplingConfig {
            temperature: req.temperature,
            top_k: req.top_k,
            top_p: req.top_p,
        },
        max_len: req.max_len,
        stop_at_eos: false,
    };
    cfg.validate().map_err(|e| {
        // The message names the field at fault; put its flag in front.
        let message = e.to_string();
        let flag = [
            ("top_k", "--top-k"),
            ("top_p", "--top-p"),
            ("temperature", "--temperature"),
        ]
        .into_iter()
        .find(|(field, _)| message.contains(field))
        .map_or("--temperature/--top-k/--top-p", |(_, flag)| flag);
        anyhow::anyhow!("{flag}: {message}")
    })?;
    let mut out = Samples::default();
    for i in 0..req.num.max(1) {
        let seed = req.seed.wrapping_add(i as u64);
        let ids = l.model.generate(&prompt_ids, &cfg, seed)?;
        let text = l.codec.decode(&ids)?;
        let joined = match l.codec.level() {
            Level::Word if !prompt_text.is_empty() && !text.starts_with('\n') => {
                format!("{prompt_text} {text}")
            }
            _ => format!("{prompt_text}{text}"),
        };
        if req.num > 1 {
            out.lines
                .push(format!("--- sample {} (seed {seed}) ---", i + 1));
        }
        out.samples.push(joined.as_str().into());
        out.lines.push(joined);
    }
    Ok(out)
}
