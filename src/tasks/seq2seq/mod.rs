//! Encoder-decoder tasks on [`Seq2Seq`]: `seq2seq` (translation from TSV pairs) and `dates`
//! (human-written dates to ISO 8601, generated).
//!
//! # `rnn train seq2seq`
//!
//! - `--data FILE`: tab-separated lines `column0<TAB>column1[<TAB>ignored...]` (e.g. `fra.txt`:
//!   English, French, attribution). **Direction**: `--target 0|1` names the target column
//!   (default 1); the source is the other of the first two columns. So `fra.txt` gives
//!   English -> French by default and French -> English with `--target 0`.
//!   The file is UTF-8 unless `--encoding NAME` says otherwise (latin1, windows-1252, ...).
//! - `--level` chooses the tokenisation:
//!   - `word` (default): lower-cased, punctuation split off as its own token, words split on
//!     white space;
//!   - `char`: every character is a token (case kept);
//!   - `tutorial`: the PyTorch "NLP from scratch: translation with a sequence to sequence
//!     network and attention" setup: text lower-cased, accents stripped to ASCII, `!` and `?`
//!     separated, every other non-letter (`.` included) turned into a space; then only pairs
//!     with fewer than 10 words on both sides whose **column 0** (the English side of the
//!     Tatoeba / manythings.org files) starts with `i am`, `he is`, `she is`, `you are`,
//!     `we are`, `they are` or a contraction (`i m`, `he s`, `you re`, ...) are kept
//!     (11,822 pairs of `fra.txt`). [`tutorial_normalize`] and [`tutorial_keeps`] are the two
//!     steps.
//! - Validation: `--valid FILE` (same format), else a seeded `--split` fraction of `--data`
//!   (default 0.1), taken after the filter. Vocabularies (source and target, word or character,
//!   at most `--vocab-size` tokens each) come from the training pairs only; other tokens are
//!   `<unk>`.
//! - Test: `--test FILE`, else another seeded part of `--data` as large as the validation part,
//!   held out of the training pairs. Model selection never sees it; it is scored once with the
//!   best checkpoint: the summary's headline, the line `rnn eval --checkpoint DIR` prints.
//! - Metrics at every evaluation: validation loss (nats per target token, teacher-forced),
//!   corpus BLEU-4 (`bleu`, in `[0, 1]`, on the task's tokens) and `exact_match`, both from
//!   decoding the validation sources (greedy, or beam search with `--beam N`). **Main metric:
//!   BLEU** (it credits partly right translations; exact match is reported too).
//!
//! # `rnn train dates`
//!
//! Generated pairs: a date between 1950-01-01 and 2049-12-31 written in one of 12 human formats
//! ("3 March 2021", "March 3, 2021", "03/03/2021", "Wed, 3 Mar 21", "2021 march 3rd", ...; see
//! [`format_date`]) -> "2021-03-03", character level on both sides. Slashes are month first
//! (US), dots day first (European), two-digit years are 1950-2049. `--samples` training pairs
//! (default 20,000), a tenth as many validation pairs and as many test pairs (never a training
//! source), all from `--seed`. **Main metric: exact match.**
//!
//! The defaults were chosen on `rnn train seq2seq --data fra.txt --level tutorial --target 0`
//! (French -> English) and `rnn train dates`, which learns the task within its default epochs.
//!
//! # Model and training options (both tasks)
//!
//! `--cell` (gru), `--hidden`, `--embedding`, `--layers` (encoder and decoder, 1),
//! `--bidirectional` (encoder), `--dropout`, `--attention none|additive|dot|general` (general),
//! `--teacher-forcing` ratio (1.0), `--beam` for validation decoding (1 = greedy),
//! `--max-len` decoding limit in tokens (default: the longest training target + 5),
//! `--batch-size`, `--epochs`, `--lr` (defaults per task: [`TaskDefaults`]).
//!
//! # Checkpoints, eval, predict
//!
//! `config.json` holds the model config and the data setup; `source_vocab.json` and
//! `target_vocab.json` the vocabularies. `rnn eval --checkpoint DIR [--data FILE]` prints loss,
//! BLEU and exact match on the test part (rebuilt from the recorded setup; the validation data for
//! checkpoints written before the test part existed) or on `FILE`
//! (same TSV layout and `--target` column as in training; for `dates` a `human<TAB>iso` file).
//! `rnn predict --checkpoint DIR --input TEXT|FILE [--beam N]` prints one line per input:
//! `translation<TAB>log-prob L` (natural log, end token included), beam search when `N > 1`
//! (GNMT length penalty 0.6).

mod data;

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use candle_core::Device;
use candle_nn::VarMap;
use rnn_core::RnnState;
use rnn_models::seq2seq::{Attention, Hypothesis, Seq2Seq, Seq2SeqConfig};
use rnn_train::data::{bucket_batches, pad_batch, PaddedBatch, TextEncoding, Vocab};
// The date generator and the tutorial's normalisation, where they were before they moved to
// `rnn_train::data`.
use super::parts::empty_part;
pub use rnn_train::data::{
    date_pairs, format_date, tutorial_keeps, tutorial_normalize, DatePairs, DATE_FORMATS,
};
use rnn_train::metrics::{CorpusBleu, ExactMatch, Metric};
use rnn_train::trainer::{Evaluation, MainMetric, Part, StepLoss, TrainTask};

use data::{encode, eval_data, training_data, Example, BOS_ID, EOS_ID, PAD_ID};
pub use data::{Level, Setup, TaskDefaults};

use crate::run::{
    fit, invalid, stochastic_model, task_from_functions, trainer_config, CheckpointRun,
    EvalRequest, PredictRequest, RunContext, TaskName, TaskOptions, TrainOutcome,
};
use crate::run::{EvalReport, Predictions, Split};

/// GNMT length-penalty exponent of beam search.
pub const LENGTH_PENALTY: f64 = 0.6;
/// File of the source vocabulary inside a checkpoint.
pub const SOURCE_VOCAB_FILE: &str = "source_vocab.json";
/// File of the target vocabulary inside a checkpoint.
pub const TARGET_VOCAB_FILE: &str = "target_vocab.json";

// ---------------------------------------------------------------------------------------------
// Scoring

/// Loss, BLEU and exact match of a model on examples.
#[derive(Debug, Clone)]
struct Scores {
    loss: f64,
    bleu: f64,
    exact_match: f64,
    count: usize,
}

/// Decodes `sources` in batches of `batch` (sorted by length, results in input order).
fn decode(
    model: &Seq2Seq,
    sources: &[Vec<u32>],
    beam: usize,
    max_len: usize,
    batch: usize,
    device: &Device,
) -> Result<Vec<Hypothesis>> {
    let mut order: Vec<usize> = (0..sources.len()).collect();
    order.sort_by_key(|&i| sources[i].len());
    let mut out: Vec<Option<Hypothesis>> = vec![None; sources.len()];
    for chunk in order.chunks(batch.max(1)) {
        let seqs: Vec<Vec<u32>> = chunk.iter().map(|&i| sources[i].clone()).collect();
        let src = pad_batch(&seqs, PAD_ID, device)?;
        let hyps = if beam > 1 {
            model.beam_search(&src.ids, &src.lengths, beam, LENGTH_PENALTY, max_len)?
        } else {
            model.greedy(&src.ids, &src.lengths, max_len)?
        };
        for (&i, h) in chunk.iter().zip(hyps) {
            out[i] = Some(h);
        }
    }
    Ok(out.into_iter().flatten().collect())
}

fn hypothesis_tokens(h: &Hypothesis, vocab: &Vocab) -> Vec<String> {
    h.tokens
        .iter()
        .map(|&t| vocab.token(t).to_string())
        .collect()
}

fn score(
    model: &Seq2Seq,
    examples: &[Example],
    tgt_vocab: &Vocab,
    setup: &Setup,
    batch: usize,
    device: &Device,
) -> Result<Scores> {
    let mut loss_sum = 0.0;
    let mut tokens = 0usize;
    for chunk in examples.chunks(batch.max(1)) {
        let (src, tgt) = pad_pair(chunk, device)?;
        let loss = model.loss(&src.ids, &src.lengths, &tgt.ids, &tgt.lengths, false, 1.0)?;
        let n: usize = tgt.lengths.iter().sum();
        loss_sum +=
            f64::from(loss.to_dtype(candle_core::DType::F32)?.to_scalar::<f32>()?) * n as f64;
        tokens += n;
    }
    let sources: Vec<Vec<u32>> = examples.iter().map(|e| e.src.clone()).collect();
    let hyps = decode(model, &sources, setup.beam, setup.max_len, batch, device)?;
    let hyp_tokens: Vec<Vec<String>> = hyps
        .iter()
        .map(|h| hypothesis_tokens(h, tgt_vocab))
        .collect();
    let refs: Vec<Vec<String>> = examples.iter().map(|e| e.reference.clone()).collect();
    let mut bleu = CorpusBleu::new();
    bleu.update(&hyp_tokens, &refs)?;
    let mut em = ExactMatch::new();
    em.update(&hyp_tokens, &refs)?;
    Ok(Scores {
        loss: loss_sum / tokens.max(1) as f64,
        bleu: bleu.value().unwrap_or(0.0),
        exact_match: em.value().unwrap_or(0.0),
        count: examples.len(),
    })
}

fn pad_pair(examples: &[Example], device: &Device) -> Result<(PaddedBatch, PaddedBatch)> {
    let src: Vec<Vec<u32>> = examples.iter().map(|e| e.src.clone()).collect();
    let tgt: Vec<Vec<u32>> = examples.iter().map(|e| e.tgt.clone()).collect();
    Ok((
        pad_batch(&src, PAD_ID, device)?,
        pad_batch(&tgt, PAD_ID, device)?,
    ))
}

// ---------------------------------------------------------------------------------------------
// The training task

struct Seq2SeqTask {
    task: TaskName,
    model: Seq2Seq,
    setup: Setup,
    src_vocab: Vocab,
    tgt_vocab: Vocab,
    train: Vec<Example>,
    valid: Vec<Example>,
    batch_size: usize,
    teacher_forcing: f64,
    device: Device,
}

impl TrainTask for Seq2SeqTask {
    /// The indices of the batch's examples; the padded tensors are built per step, for the
    /// rows of the part being trained only.
    type Batch = Vec<usize>;

    fn train_batches(&mut self, epoch: u64, seed: u64) -> rnn_train::Result<Vec<Self::Batch>> {
        let lengths: Vec<usize> = self.train.iter().map(|e| e.src.len()).collect();
        bucket_batches(
            &lengths,
            self.batch_size,
            seed ^ epoch.wrapping_mul(rnn_core::seed::GOLDEN_GAMMA),
        )
    }

    fn train_step(
        &mut self,
        batch: &Self::Batch,
        carry: &mut Option<RnnState>,
    ) -> rnn_train::Result<StepLoss> {
        self.train_part(batch, Part::WHOLE, carry)
    }

    /// The part's pairs padded to their own longest; the loss is the mean cross-entropy over
    /// their real target tokens and the units those tokens, so the units-weighted mean of the
    /// parts is the batch's loss. With `--teacher-forcing` below 1 each part draws its own
    /// decoder inputs (one draw per loss call), so a split step equals the whole batch's in
    /// distribution, not bit for bit.
    fn train_part(
        &mut self,
        batch: &Self::Batch,
        part: Part,
        _carry: &mut Option<RnnState>,
    ) -> rnn_train::Result<StepLoss> {
        let rows: Vec<Example> = batch[part.rows(batch.len())]
            .iter()
            .map(|&i| self.train[i].clone())
            .collect();
        if rows.is_empty() {
            return empty_part(&self.device);
        }
        let (src, tgt) = pad_pair(&rows, &self.device).map_err(invalid)?;
        let loss = self.model.loss(
            &src.ids,
            &src.lengths,
            &tgt.ids,
            &tgt.lengths,
            true,
            self.teacher_forcing,
        )?;
        Ok(StepLoss {
            loss,
            units: tgt.lengths.iter().sum::<usize>() as u64,
        })
    }

    fn evaluate(&mut self) -> rnn_train::Result<Evaluation> {
        let s = score(
            &self.model,
            &self.valid,
            &self.tgt_vocab,
            &self.setup,
            self.batch_size.max(64),
            &self.device,
        )
        .map_err(invalid)?;
        let mut metrics = std::collections::BTreeMap::new();
        metrics.insert("exact_match".to_string(), s.exact_match);
        if self.task != TaskName::Dates {
            metrics.insert("bleu".to_string(), s.bleu);
        }
        let main = if self.task == TaskName::Dates {
            ("exact_match", s.exact_match)
        } else {
            ("bleu", s.bleu)
        };
        Ok(Evaluation {
            loss: s.loss,
            metrics,
            main: Some(MainMetric {
                name: main.0.to_string(),
                value: main.1,
                higher_is_better: true,
            }),
        })
    }

    fn unit(&self) -> &'static str {
        "tokens"
    }

    stochastic_model!(model);

    fn checkpoint_config(&self) -> serde_json::Value {
        serde_json::json!({
            "task": self.task.as_str(),
            "model": self.model.config(),
            "setup": self.setup,
        })
    }

    fn checkpoint_files(&self) -> Vec<(String, Vec<u8>)> {
        let json = |v: &Vocab| serde_json::to_vec(v).unwrap_or_default();
        vec![
            (SOURCE_VOCAB_FILE.to_string(), json(&self.src_vocab)),
            (TARGET_VOCAB_FILE.to_string(), json(&self.tgt_vocab)),
        ]
    }
}

fn parse_target_column(target: Option<&str>) -> Result<usize> {
    match target.map(str::trim) {
        None => Ok(1),
        Some("0") => Ok(0),
        Some("1") => Ok(1),
        Some(other) => bail!(
            "--target: seq2seq takes the target column of the TSV file, 0 or 1 (the source is the other one), got '{other}'"
        ),
    }
}

/// The options `seq2seq` and `dates` read, with their defaults.
pub fn options(task: TaskName) -> TaskOptions {
    let d = TaskDefaults::of(task);
    let o = if task == TaskName::Dates {
        let files = "dates generates its data (--samples pairs) and reads no training file";
        TaskOptions::new()
            .with("samples", 20_000)
            .with("level", "char")
            .read("test")
            .refuse("data", files)
            .refuse("valid", files)
    } else {
        TaskOptions::new()
            .read("data")
            .read("valid")
            .read("test")
            .with("split", 0.1)
            .read("encoding")
            .with("level", "word")
            .with("target", 1)
    };
    o.read("vocab-size")
        .with("attention", "general")
        .with("beam", 1)
        .read("max-len")
        .with("teacher-forcing", 1.0)
        .with("embedding", d.embedding)
        .with("bidirectional", d.bidirectional)
        .with("cell", d.cell)
        .with("hidden", d.hidden)
        .with("layers", 1)
        .with("dropout", d.dropout)
        .with("layer-norm", false)
        .with("batch-size", d.batch_size)
        .training(&d.train)
}

task_from_functions!(
    /// The encoder-decoder tasks `seq2seq` and `dates` (see the [module docs](self)).
    EncoderDecoder
);

/// Trains `seq2seq` or `dates`.
pub fn train(ctx: &RunContext) -> Result<TrainOutcome> {
    let o = &ctx.opts;
    let d = TaskDefaults::of(ctx.task);
    let dates = ctx.task == TaskName::Dates;
    let level = match (&o.level, dates) {
        (None, true) => Level::Char,
        (None, false) => Level::Word,
        (Some(l), false) => Level::parse(l)?,
        (Some(l), true) => match Level::parse(l)? {
            Level::Char => Level::Char,
            _ => bail!("--level: dates is a character-level task, got '{l}'"),
        },
    };
    let attention: Attention = match &o.attention {
        Some(a) => a.parse().map_err(|e| anyhow::anyhow!("--attention: {e}"))?,
        None => Attention::General,
    };
    let absolute = |p: &Option<PathBuf>| -> Result<Option<PathBuf>> {
        p.as_ref()
            .map(|p| std::path::absolute(p).with_context(|| format!("{}", p.display())))
            .transpose()
    };
    let mut setup = Setup {
        level,
        target_column: if dates {
            1
        } else {
            parse_target_column(o.target.as_deref())?
        },
        max_len: 0,
        beam: o.beam.unwrap_or(1),
        data: if dates { None } else { absolute(&o.data)? },
        valid: if dates { None } else { absolute(&o.valid)? },
        split: o.split.unwrap_or(0.1),
        seed: ctx.seed,
        samples: o.samples.unwrap_or(20_000),
        encoding: {
            let e = o.text_encoding()?;
            (e != TextEncoding::UTF8).then(|| e.name().to_string())
        },
        test: absolute(&o.test)?,
        test_held_out: o.test.is_none(),
    };
    let (train_pairs, valid_pairs) = training_data(ctx, &setup)?;
    let max_size = o.vocab_size;
    let src_vocab = Vocab::build(
        train_pairs
            .iter()
            .flat_map(|p| p.source.iter().map(String::as_str)),
        1,
        max_size,
    )
    .context("--vocab-size")?;
    let tgt_vocab = Vocab::build(
        train_pairs
            .iter()
            .flat_map(|p| p.target.iter().map(String::as_str)),
        1,
        max_size,
    )
    .context("--vocab-size")?;
    let train = encode(&train_pairs, &src_vocab, &tgt_vocab);
    let valid = encode(&valid_pairs, &src_vocab, &tgt_vocab);
    setup.max_len = match o.max_len {
        Some(m) => m,
        None => train.iter().map(|e| e.tgt.len()).max().unwrap_or(1) + 5,
    };
    ctx.say(&format!(
        "{}: {} training pairs, {} validation pairs; vocabularies: source {}, target {} ({:?} level)",
        ctx.task.as_str(),
        train.len(),
        valid.len(),
        src_vocab.len(),
        tgt_vocab.len(),
        setup.level
    ));
    let hidden = o.hidden.unwrap_or(d.hidden);
    let layers = o.layers.unwrap_or(1);
    let cfg = Seq2SeqConfig {
        src_vocab: src_vocab.len(),
        tgt_vocab: tgt_vocab.len(),
        embedding_dim: o.embedding.unwrap_or(d.embedding),
        hidden_size: hidden,
        encoder_layers: layers,
        decoder_layers: layers,
        mode: ctx.cell(d.cell)?,
        bidirectional_encoder: o
            .bidirectional
            .unwrap_or(d.bidirectional && attention != Attention::Dot),
        attention,
        dropout: o.dropout.unwrap_or(d.dropout),
        bos_id: BOS_ID,
        eos_id: EOS_ID,
        pad_id: PAD_ID,
        input_feeding: false,
        layer_norm: o.layer_norm.unwrap_or(false),
    };
    let varmap = VarMap::new();
    let model = Seq2Seq::new(&cfg, ctx.var_builder(&varmap)).map_err(|e| {
        anyhow::anyhow!("{e}").context(
            "the model options (--attention, --bidirectional, --hidden ...) do not fit together",
        )
    })?;
    let mut task = Seq2SeqTask {
        task: ctx.task,
        model,
        setup: setup.clone(),
        src_vocab,
        tgt_vocab,
        train,
        valid,
        batch_size: o.batch_size.unwrap_or(d.batch_size),
        teacher_forcing: o.teacher_forcing.unwrap_or(1.0),
        device: ctx.device.clone(),
    };
    let tcfg = trainer_config(ctx, &d.train)?;
    let report = fit(ctx, tcfg, varmap, &mut task)?;
    let mut extra = Vec::new();
    if let Some(last) = &report.last {
        let other = if dates {
            None
        } else {
            last.metrics.get("exact_match")
        };
        if let Some(em) = other {
            extra.push(format!("valid exact_match {em:.4}"));
        }
    }
    // The headline: the test part, which model selection never saw, with the best weights
    // (the same line as `rnn eval --checkpoint OUT`).
    let run = CheckpointRun::load(&ctx.out, &ctx.device)?;
    let req = EvalRequest {
        data: None,
        labels: None,
        batch_size: task.batch_size.max(64),
    };
    extra.push(format!("test (best checkpoint): {}", eval(&run, req)?));
    Ok(TrainOutcome { report, extra })
}

// ---------------------------------------------------------------------------------------------
// eval / predict

struct Loaded {
    model: Seq2Seq,
    setup: Setup,
    src_vocab: Vocab,
    tgt_vocab: Vocab,
}

fn load(run: &CheckpointRun) -> Result<Loaded> {
    let cfg: Seq2SeqConfig = run.model_entry("model")?;
    let setup: Setup = run.model_entry("setup")?;
    let (src_vocab, tgt_vocab) = (run.vocab(SOURCE_VOCAB_FILE)?, run.vocab(TARGET_VOCAB_FILE)?);
    if src_vocab.len() != cfg.src_vocab || tgt_vocab.len() != cfg.tgt_vocab {
        bail!(
            "{}: the vocabularies ({} and {} tokens) do not match the model ({} and {})",
            run.dir.display(),
            src_vocab.len(),
            tgt_vocab.len(),
            cfg.src_vocab,
            cfg.tgt_vocab
        );
    }
    let varmap = VarMap::new();
    let model = Seq2Seq::new(&cfg, run.var_builder(&varmap))?;
    run.fill(&varmap)?;
    Ok(Loaded {
        model,
        setup,
        src_vocab,
        tgt_vocab,
    })
}

/// Evaluates a checkpoint: loss, BLEU and exact match on its validation data or `--data`.
pub fn eval(run: &CheckpointRun, req: impl Into<EvalRequest>) -> Result<EvalReport> {
    let req = req.into();
    if req.batch_size == 0 {
        bail!("--batch-size must be at least 1, got 0");
    }
    let l = load(run)?;
    let pairs = eval_data(run.task, &l.setup, req.data.as_deref())?;
    let examples = encode(&pairs, &l.src_vocab, &l.tgt_vocab);
    let s = score(
        &l.model,
        &examples,
        &l.tgt_vocab,
        &l.setup,
        req.batch_size,
        &run.device,
    )?;
    let setup = &l.setup;
    let (what, split, path) = match (&req.data, &setup.test) {
        (Some(p), _) => (p.display().to_string(), Split::Data, Some(p)),
        (None, Some(t)) => (
            format!("the test data {}", t.display()),
            Split::Test,
            Some(t),
        ),
        (None, None) if setup.test_held_out => (
            "the held-out test part".to_string(),
            Split::Test,
            setup.data.as_ref(),
        ),
        (None, None) => (
            "validation data".to_string(),
            Split::Validation,
            setup.valid.as_ref().or(setup.data.as_ref()),
        ),
    };
    let decoding = if l.setup.beam > 1 {
        format!("beam {}", l.setup.beam)
    } else {
        "greedy".to_string()
    };
    let summary = format!(
        "{} on {what} ({} pairs, {decoding}): loss {:.4}, bleu {:.4}, exact_match {:.4}",
        run.task.as_str(),
        s.count,
        s.loss,
        s.bleu,
        s.exact_match
    );
    let path = path.map(PathBuf::as_path);
    Ok(
        EvalReport::new(summary, split, path, s.count as u64, "pairs")
            .metric("loss", s.loss)
            .metric("bleu", s.bleu)
            .metric("exact_match", s.exact_match),
    )
}

/// Translates each input line; prints `translation<TAB>log-prob L`; as values
/// `{"translation", "log_prob"}`.
pub fn predict(run: &CheckpointRun, req: impl Into<PredictRequest>) -> Result<Predictions> {
    let req = req.into();
    let beam = req.beam.unwrap_or(1);
    if beam == 0 {
        bail!("--beam must be at least 1, got 0");
    }
    let inputs = req.inputs()?;
    let l = load(run)?;
    let mut sources = Vec::with_capacity(inputs.len());
    for (i, input) in inputs.iter().enumerate() {
        let tokens = l.setup.level.tokens(input);
        if tokens.is_empty() {
            bail!(
                "--input line {}: '{input}' has no token left after normalisation",
                i + 1
            );
        }
        sources.push(l.src_vocab.encode(tokens.iter().map(String::as_str)));
    }
    let hyps = decode(&l.model, &sources, beam, l.setup.max_len, 64, &run.device)?;
    let mut out = Predictions::default();
    for (input, h) in inputs.iter().zip(&hyps) {
        let translation = l.setup.level.join(&hypothesis_tokens(h, &l.tgt_vocab));
        out.push(
            format!("{translation}\tlog-prob {:.4}", h.log_prob),
            input.as_str(),
            serde_json::json!({"translation": translation, "log_prob": h.log_prob}),
        );
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn target_column_parsing() {
        assert_eq!(parse_target_column(None).unwrap(), 1);
        assert_eq!(parse_target_column(Some("0")).unwrap(), 0);
        let e = parse_target_column(Some("2")).unwrap_err().to_string();
        assert!(e.contains("--target"), "{e}");
    }

    /// Units are the real target tokens (end tokens included): the parts' token-weighted
    /// losses and gradients sum to the batch's.
    #[test]
    fn parts_of_a_batch_sum_to_the_whole_batch() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
        let mut seq = |max: usize| -> Vec<u32> {
            (0..rng.random_range(1..=max))
                .map(|_| rng.random_range(3..12))
                .collect()
        };
        let train: Vec<Example> = (0..20)
            .map(|_| {
                let mut tgt = seq(6);
                tgt.push(EOS_ID);
                Example {
                    src: seq(8),
                    tgt,
                    reference: Vec::new(),
                }
            })
            .collect();
        let varmap = VarMap::new();
        let vb =
            rnn_core::init::seeded_var_builder(&varmap, 3, candle_core::DType::F32, &Device::Cpu);
        let mut cfg = Seq2SeqConfig::new(12, 12);
        (cfg.embedding_dim, cfg.hidden_size) = (4, 6);
        (cfg.bos_id, cfg.eos_id, cfg.pad_id) = (BOS_ID, EOS_ID, PAD_ID);
        let mut task = Seq2SeqTask {
            task: TaskName::Seq2seq,
            model: Seq2Seq::new(&cfg, vb).unwrap(),
            setup: Setup {
                level: Level::Word,
                target_column: 1,
                max_len: 10,
                beam: 1,
                data: None,
                valid: None,
                split: 0.1,
                seed: 0,
                samples: 0,
                encoding: None,
                test: None,
                test_held_out: false,
            },
            src_vocab: Vocab::build([], 1, None).unwrap(),
            tgt_vocab: Vocab::build([], 1, None).unwrap(),
            train,
            valid: Vec::new(),
            batch_size: 7,
            teacher_forcing: 1.0,
            device: Device::Cpu,
        };
        let batch = task
            .train_batches(0, 1)
            .unwrap()
            .into_iter()
            .find(|b| b.len() == 7)
            .unwrap();
        crate::tasks::parts::checks::assert_parts_sum_to_whole(
            &mut task,
            &batch,
            7,
            &varmap.all_vars(),
            &[2, 3, 9],
        );
    }
}
