//! `rnn train classify`: many-to-one sequence classification of `label text` lines (the SST-2
//! `stsa.binary` format) with a [`SequenceClassifier`].
//!
//! # Data
//!
//! `--data FILE` holds one example per line, `label<TAB or space>text`
//! ([`rnn_train::data::read_labelled`]). Validation data come from `--valid FILE`, or else a seeded
//! `--split` fraction (default 0.1) of `--data` is held out. Test data come from `--test FILE`, or
//! else another seeded part of `--data` of the same size is held out. The validation data pick the
//! best checkpoint and stop training early; the test data, which model selection never sees, are
//! scored once with the best weights: the summary's headline ("test accuracy X, macro F1 Y (N
//! examples held out of FILE; best checkpoint, step S)"), which `rnn eval --checkpoint DIR`
//! prints again (`--data FILE` scores another file).
//!
//! Text is split on whitespace and **lowercased** (SST-2 is already tokenised and lowercase;
//! lowercasing other data shrinks the vocabulary, which matters more than case on small sets).
//! The vocabulary is built on the training split only: words seen at least twice
//! ([`MIN_FREQ`]), at most `--vocab-size` entries (default 20000, specials included); every other
//! word is `<unk>`, so the `<unk>` embedding is trained on the training singletons. Labels are
//! those of the training split, sorted (numerically when they are all integers); a validation or
//! test label outside them is an error naming the line.
//!
//! `--max-len N` keeps the first N tokens of every example (training, validation and test; it is
//! recorded in the checkpoint, so `rnn eval` cuts the same), with a notice of how many were
//! longer and the longest. Without it examples keep every token: batches are cut so that one long
//! example gets a batch of its own instead of padding a full one
//! ([`rnn_train::data::bucket_batches`]), and before training the peak memory of the largest
//! batch is estimated ([`crate::run::memory`]); a run that would not fit in the memory available
//! is refused, naming the longest example, `--max-len` and `--batch-size`.
//!
//! `--shuffle-buffer N` streams the training file instead of holding it (for files too large
//! for memory even as token ids): a first pass reads `--data` line by line for the labels, the
//! vocabulary and the example count; every epoch then reads it again, sequentially, through a
//! seeded shuffle buffer of N examples ([`rnn_train::data::ShuffleBuffer`], an approximate
//! shuffle: an example moves at most N - 1 places earlier), in batches of `--batch-size`
//! consecutive examples (not bucketed by length). The order depends only on the seed and the
//! epoch, so resuming re-reads the file and skips the batches already trained. It needs
//! `--valid FILE` and `--test FILE` (no split of a streamed file) and a UTF-8 file. Without it,
//! the examples are held as token ids and class ids, and each step builds the tensors of its
//! batch only. See docs/STREAMING.md ("Classification and tagging").
//!
//! `--encoding NAME` (default utf-8; latin1, windows-1252, ...) names the files' character encoding;
//! it is recorded in the checkpoint, so `rnn eval` reads them the same way. A header line
//! (`label<TAB>text`) is skipped with a notice. Files of another layout are refused with the
//! likely fix: comma-separated lines, `text<TAB>label` lines, CoNLL or CoNLL-U (use `rnn train
//! tag`).
//!
//! # Model and defaults
//!
//! Embedding (`--embedding`, 128) -> `--cell` (lstm) with `--hidden` (128) units per direction,
//! `--layers` (1), `--bidirectional` (true) -> `--pooling` (attention) -> linear head, with `--dropout`
//! (0.5) on the embeddings and on the pooled vector. AdamW at `--lr` 2e-3 (weight decay 0.01),
//! `--batch-size` 32 in length buckets shuffled per epoch from (epoch, seed), gradient norm
//! clipped at 5, `--epochs` 10 with an evaluation at every epoch end and early stopping after
//! `--patience` 3 evaluations without a better validation accuracy.
//!
//! Metrics: accuracy (main, higher is better) and macro F1.
//!
//! The defaults were chosen on SST-2 (`--data stsa.binary.train --valid stsa.binary.dev
//! --test stsa.binary.test`), where a lower learning rate with max pooling learned more slowly.
//!
//! # Checkpoints, eval, predict
//!
//! `config.json` holds the model config, the label names, the lowercase flag and where the
//! validation data came from (so `rnn eval` without `--data` re-scores the same split);
//! `vocab.json` holds the vocabulary. `rnn predict --input "a gripping , funny film"` prints,
//! per input, the label, the class probabilities and, with attention pooling, each token's weight.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use candle_core::{Device, Tensor, D};
use candle_nn::VarMap;
use rnn_models::classifier::{Input, Pooling, SequenceClassifier, SequenceClassifierConfig};
use rnn_train::checkpoint::{self, VOCAB_FILE};
use rnn_train::data::{
    excerpt, pad_batch, read_labelled_file, scan_labelled, stream_labelled, LabelledText,
    OpenStream, StreamedBatches, TextEncoding, Vocab,
};
use rnn_train::metrics::{ConfusionMatrix, Metric};
use rnn_train::trainer::{EarlyStopping, Evaluation, MainMetric, Part, StepLoss, TrainTask};
use serde::{Deserialize, Serialize};

use super::parts::empty_part;
use super::valid::{
    eval_batches, first_longest, labelled_options, saved_encoding, shuffle_buffer, train_defaults,
    TrainBatch, TrainData,
};
pub use super::valid::{Parts, TestSource, ValidSource};
use crate::run::memory::{
    check_memory, max_len_notice_counts, Longest, MemoryPlan, RecurrentShape,
};
use crate::run::{
    fit, invalid, load_best, stochastic_model, task_from_functions, trainer_config, weights_label,
    CheckpointRun, EvalRequest, PredictRequest, RunContext, TaskName, TaskOptions, TrainOutcome,
};
use crate::run::{EvalReport, Predictions, Split};

/// Text is lowercased before lookup (see the [module docs](self)).
const LOWERCASE: bool = true;
/// Words must occur at least this often in the training split to get their own embedding.
pub const MIN_FREQ: usize = 2;
/// Default `--vocab-size`.
pub const DEFAULT_VOCAB_SIZE: usize = 20_000;
/// Default `--pooling`: attention, the best of the four on the generated negation task of
/// `examples/sentiment.rs` and ahead of max pooling early in SST-2 training; it also gives
/// per-token weights to inspect.
pub const DEFAULT_POOLING: Pooling = Pooling::Attention;

/// Splits `text` into word tokens (whitespace), lowercased when `lowercase`.
pub fn words(text: &str, lowercase: bool) -> Vec<String> {
    text.split_whitespace()
        .map(|w| {
            if lowercase {
                w.to_lowercase()
            } else {
                w.to_string()
            }
        })
        .collect()
}

/// The `model` entry of a classify checkpoint's `config.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct SavedConfig {
    task: String,
    model: SequenceClassifierConfig,
    labels: Vec<String>,
    lowercase: bool,
    valid: Option<ValidSource>,
    /// Where the test rows came from (absent in checkpoints written before the test part).
    #[serde(default)]
    test: Option<TestSource>,
    /// `--encoding` of the data files, when not UTF-8.
    #[serde(default)]
    encoding: Option<String>,
    /// `--max-len`: examples keep their first this many tokens (in eval too).
    #[serde(default)]
    max_len: Option<usize>,
}

/// One encoded example: token ids (never empty) and its class id.
#[derive(Debug, Clone, PartialEq)]
struct Example {
    ids: Vec<u32>,
    class: u32,
}

/// Reads the `label text` lines of `path` in `encoding`; a skipped header line is reported
/// through `say`.
fn read_rows(path: &Path, encoding: TextEncoding, say: impl Fn(&str)) -> Result<Vec<LabelledText>> {
    let file = read_labelled_file(path, None, encoding)?;
    if let Some((line, header)) = &file.header {
        say(&format!(
            "notice: {}:{line}: skipped a header line `{header}` (not an example)",
            path.display()
        ));
    }
    Ok(file.rows)
}

/// The encoding a checkpoint's data files were read in.
/// Reads `path` and encodes it with `vocab` and `labels`; a label outside `labels` is an error
/// naming the line.
fn encode_file(
    path: &Path,
    encoding: TextEncoding,
    vocab: &Vocab,
    labels: &[String],
    lowercase: bool,
) -> Result<Vec<Example>> {
    let rows = read_rows(path, encoding, |_| {})?;
    encode_rows(path, &rows, vocab, labels, lowercase)
}

fn encode_rows(
    path: &Path,
    rows: &[LabelledText],
    vocab: &Vocab,
    labels: &[String],
    lowercase: bool,
) -> Result<Vec<Example>> {
    rows.iter()
        .map(|r| encode_row(path, r, vocab, labels, lowercase))
        .collect()
}

/// Encodes one row of `path`; a label outside `labels` is an error naming the line.
fn encode_row(
    path: &Path,
    r: &LabelledText,
    vocab: &Vocab,
    labels: &[String],
    lowercase: bool,
) -> Result<Example> {
    let Some(class) = labels.iter().position(|l| *l == r.label) else {
        bail!(
            "{}:{}: label '{}' does not occur in the training data (labels: {})",
            path.display(),
            r.line,
            excerpt(&r.label, 60),
            excerpt(&labels.join(", "), 120)
        );
    };
    let ws = words(&r.text, lowercase);
    Ok(Example {
        ids: vocab.encode(ws.iter().map(String::as_str)),
        class: class as u32,
    })
}

/// Keeps the first `max_len` tokens of every example of `data` (`--max-len`); returns the lengths
/// before of those it shortened.
fn truncate(data: &mut [Example], max_len: Option<usize>) -> Vec<usize> {
    let Some(n) = max_len else {
        return Vec::new();
    };
    let mut cut = Vec::new();
    for e in data.iter_mut().filter(|e| e.ids.len() > n) {
        cut.push(e.ids.len());
        e.ids.truncate(n);
    }
    cut
}

/// The label names in class-id order: sorted numerically when all are integers, else as text.
fn label_names<'a>(labels: impl IntoIterator<Item = &'a str>) -> Vec<String> {
    let set: BTreeSet<&str> = labels.into_iter().collect();
    let mut v: Vec<String> = set.into_iter().map(str::to_string).collect();
    if v.iter().all(|l| l.parse::<i64>().is_ok()) {
        v.sort_by_key(|l| l.parse::<i64>().unwrap_or(0));
    }
    v
}

/// One padded batch.
struct Batch {
    ids: Tensor,
    lengths: Vec<usize>,
    targets: Tensor,
    classes: Vec<u32>,
}

/// The padded batch of `rows` (at least one).
fn make_batch(rows: &[&Example], device: &Device) -> rnn_train::Result<Batch> {
    let seqs: Vec<Vec<u32>> = rows.iter().map(|e| e.ids.clone()).collect();
    let padded = pad_batch(&seqs, 0, device)?;
    let classes: Vec<u32> = rows.iter().map(|e| e.class).collect();
    Ok(Batch {
        ids: padded.ids,
        lengths: padded.lengths,
        targets: Tensor::new(classes.as_slice(), device)?,
        classes,
    })
}

fn lengths(data: &[Example]) -> Vec<usize> {
    data.iter().map(|e| e.ids.len()).collect()
}

/// Evaluation batches of `data` (see [`eval_batches`]).
fn batches(data: &[Example], batch_size: usize, device: &Device) -> Result<Vec<Batch>> {
    eval_batches(&lengths(data), batch_size, |idx| {
        let rows: Vec<&Example> = idx.iter().map(|&i| &data[i]).collect();
        Ok(make_batch(&rows, device)?)
    })
}

/// Scores of a classifier on a data set.
#[derive(Debug, Clone, PartialEq)]
pub struct Scores {
    /// Fraction of examples classified correctly.
    pub accuracy: f64,
    /// Unweighted mean of the per-class F1.
    pub macro_f1: f64,
    /// Mean cross-entropy (nats).
    pub loss: f64,
    /// Number of examples.
    pub count: usize,
}

fn score(model: &SequenceClassifier, batches: &[Batch], num_classes: usize) -> Result<Scores> {
    let mut cm = ConfusionMatrix::new(num_classes)?;
    let (mut loss_sum, mut count) = (0.0, 0usize);
    for b in batches {
        let logits = model.forward(&b.ids, Some(&b.lengths), false)?;
        let loss = candle_nn::loss::cross_entropy(&logits, &b.targets)?
            .to_dtype(candle_core::DType::F64)?
            .to_scalar::<f64>()?;
        loss_sum += loss * b.classes.len() as f64;
        count += b.classes.len();
        let pred = logits.argmax(D::Minus1)?.to_vec1::<u32>()?;
        cm.update(&pred, &b.classes)?;
    }
    let report = cm.compute();
    Ok(Scores {
        accuracy: report.accuracy,
        macro_f1: report.macro_f1,
        loss: if count > 0 {
            loss_sum / count as f64
        } else {
            0.0
        },
        count,
    })
}

struct ClassifyTask {
    model: SequenceClassifier,
    train: TrainData<Example>,
    valid: Vec<Batch>,
    batch_size: usize,
    device: Device,
    saved: SavedConfig,
    vocab_json: Vec<u8>,
}

impl TrainTask for ClassifyTask {
    type Batch = TrainBatch;

    fn train_batches(&mut self, epoch: u64, seed: u64) -> rnn_train::Result<Vec<TrainBatch>> {
        self.train.batches(self.batch_size, epoch, seed)
    }

    fn train_step(
        &mut self,
        batch: &TrainBatch,
        carry: &mut Option<rnn_core::RnnState>,
    ) -> rnn_train::Result<StepLoss> {
        self.train_part(batch, Part::WHOLE, carry)
    }

    /// The part's examples padded to their own longest; the loss is their mean cross-entropy
    /// and the units their count, so the units-weighted mean of the parts is the batch's loss
    /// (every example weighs the same: there are no class weights).
    fn train_part(
        &mut self,
        batch: &TrainBatch,
        part: Part,
        _carry: &mut Option<rnn_core::RnnState>,
    ) -> rnn_train::Result<StepLoss> {
        let rows = self.train.part(batch, part)?;
        if rows.is_empty() {
            return empty_part(&self.device);
        }
        let b = make_batch(&rows, &self.device)?;
        let loss = self
            .model
            .loss(&b.ids, Some(&b.lengths), &b.targets, true)?;
        Ok(StepLoss {
            loss,
            units: b.classes.len() as u64,
        })
    }

    fn evaluate(&mut self) -> rnn_train::Result<Evaluation> {
        let s = score(&self.model, &self.valid, self.saved.labels.len()).map_err(invalid)?;
        let mut ev = Evaluation::from_loss(s.loss);
        ev.metrics.insert("accuracy".into(), s.accuracy);
        ev.metrics.insert("macro_f1".into(), s.macro_f1);
        ev.main = Some(MainMetric {
            name: "accuracy".into(),
            value: s.accuracy,
            higher_is_better: true,
        });
        Ok(ev)
    }

    stochastic_model!(model);

    fn checkpoint_config(&self) -> serde_json::Value {
        serde_json::to_value(&self.saved).unwrap_or_default()
    }

    fn checkpoint_files(&self) -> Vec<(String, Vec<u8>)> {
        vec![(VOCAB_FILE.to_string(), self.vocab_json.clone())]
    }
}

/// Parses `--pooling`.
fn parse_pooling(s: Option<&str>) -> Result<Pooling> {
    match s {
        None => Ok(DEFAULT_POOLING),
        Some(p) => p.parse::<Pooling>().map_err(|_| {
            anyhow::anyhow!("--pooling must be last, mean, max or attention, got '{p}'")
        }),
    }
}

/// The options `classify` reads, with its defaults.
pub fn options(_task: TaskName) -> TaskOptions {
    labelled_options()
        .with("vocab-size", DEFAULT_VOCAB_SIZE)
        .with("embedding", 128)
        .with("pooling", DEFAULT_POOLING)
        .with("bidirectional", true)
        .with("cell", "lstm")
        .with("hidden", 128)
        .with("layers", 1)
        .with("dropout", 0.5)
        .with("layer-norm", false)
        .with("zoneout", 0)
        .with("recurrent-dropout", 0)
        .with("weight-drop", 0)
        .with("embedding-dropout", 0)
        .with("variational-dropout", 0)
        .with("batch-size", 32)
        .read("hf-dataset")
        .with("hf-split", "train")
        .with("text-column", "text")
        .with("label-column", "label")
}

task_from_functions!(
    /// The `classify` task (see the [module docs](self)).
    Classify
);

/// The data of a classify run: the training examples (held or streamed), the validation and
/// test examples with their rows (for the lines named in messages), the labels and the
/// vocabulary.
struct Prepared {
    train: TrainData<Example>,
    /// The training lengths the memory estimate sees: every example's when held; when
    /// streamed (batches not bucketed by length), a full batch of the longest.
    train_lengths: Vec<usize>,
    /// The first longest training example: its line and length as trained.
    train_longest: (usize, usize),
    valid: Vec<Example>,
    valid_rows: Vec<LabelledText>,
    test: Vec<Example>,
    test_rows: Vec<LabelledText>,
    valid_source: ValidSource,
    test_source: TestSource,
    labels: Vec<String>,
    vocab: Vocab,
    /// `--max-len`: how many examples were longer, and the longest of them.
    cut: (usize, usize),
}

/// The labels of the training data, refused when fewer than two.
fn training_labels<'a>(
    data: &Path,
    labels: impl IntoIterator<Item = &'a str>,
) -> Result<Vec<String>> {
    let labels = label_names(labels);
    if labels.len() < 2 {
        bail!(
            "--data {}: the training data hold only the label '{}'; a classifier needs at least 2",
            data.display(),
            excerpt(&labels.join(", "), 60)
        );
    }
    Ok(labels)
}

/// Reads `--data` whole, splits it and encodes every part (the default).
fn prepare_held(ctx: &RunContext, data: &Path, encoding: TextEncoding) -> Result<Prepared> {
    let o = &ctx.opts;
    let say = |line: &str| ctx.say(line);
    let rows = read_rows(data, encoding, say)?;
    let Parts {
        train: train_rows,
        valid: valid_rows,
        test: test_rows,
        valid_source,
        test_source,
    } = Parts::split(
        ctx,
        data,
        rows,
        |v: &Path| read_rows(v, encoding, say),
        "examples",
    )?;
    let labels = training_labels(data, train_rows.iter().map(|r| r.label.as_str()))?;
    let train_words: Vec<Vec<String>> = train_rows
        .iter()
        .map(|r| words(&r.text, LOWERCASE))
        .collect();
    let vocab = Vocab::build(
        train_words.iter().flatten().map(String::as_str),
        MIN_FREQ,
        Some(o.vocab_size.unwrap_or(DEFAULT_VOCAB_SIZE).max(4)),
    )?;
    drop(train_words);
    let mut train = encode_rows(data, &train_rows, &vocab, &labels, LOWERCASE)?;
    let mut valid = encode_rows(valid_source.path(), &valid_rows, &vocab, &labels, LOWERCASE)?;
    let mut test = encode_rows(test_source.path(), &test_rows, &vocab, &labels, LOWERCASE)?;
    let mut cut = truncate(&mut train, o.max_len);
    cut.extend(truncate(&mut valid, o.max_len));
    cut.extend(truncate(&mut test, o.max_len));
    let train_lengths = lengths(&train);
    let train_longest = first_longest(
        train_rows
            .iter()
            .zip(&train_lengths)
            .map(|(r, &l)| (r.line, l)),
    );
    Ok(Prepared {
        train: TrainData::Held {
            examples: train,
            lengths: train_lengths.clone(),
        },
        train_lengths,
        train_longest,
        valid,
        valid_rows,
        test,
        test_rows,
        valid_source,
        test_source,
        labels,
        vocab,
        cut: (cut.len(), cut.iter().copied().max().unwrap_or(0)),
    })
}

/// Streams `--data` (`--shuffle-buffer N`): a first pass counts the examples, the labels and
/// the words (holding one example at a time); training then reads the file once per epoch
/// through a shuffle buffer of `capacity` examples. Validation and test come from their files.
fn prepare_streamed(ctx: &RunContext, data: &Path, capacity: usize) -> Result<Prepared> {
    let o = &ctx.opts;
    let (Some(valid_path), Some(test_path)) = (&o.valid, &o.test) else {
        bail!("--shuffle-buffer needs --valid FILE and --test FILE");
    };
    let mut word_counts: HashMap<String, usize> = HashMap::new();
    let mut label_set: BTreeSet<String> = BTreeSet::new();
    let mut longest = (0usize, 0usize);
    let mut cut = (0usize, 0usize);
    let scan = scan_labelled(data, |r| {
        let ws = words(&r.text, LOWERCASE);
        let len = match o.max_len {
            Some(n) if ws.len() > n => {
                cut = (cut.0 + 1, cut.1.max(ws.len()));
                n
            }
            _ => ws.len(),
        };
        // The first pass sees the file's first example last (see scan_labelled).
        if len > longest.1 || (len == longest.1 && r.line < longest.0) {
            longest = (r.line, len);
        }
        for w in ws {
            *word_counts.entry(w).or_default() += 1;
        }
        if !label_set.contains(&r.label) {
            label_set.insert(r.label.clone());
        }
    })?;
    if let Some((line, header)) = &scan.header {
        ctx.say(&format!(
            "notice: {}:{line}: skipped a header line `{header}` (not an example)",
            data.display()
        ));
    }
    let labels = training_labels(data, label_set.iter().map(String::as_str))?;
    let vocab = Vocab::from_counts(
        word_counts.iter().map(|(w, &c)| (w.as_str(), c)),
        MIN_FREQ,
        Some(o.vocab_size.unwrap_or(DEFAULT_VOCAB_SIZE).max(4)),
    )?;
    drop(word_counts);
    let say = |line: &str| ctx.say(line);
    let valid_rows = read_rows(valid_path, TextEncoding::UTF8, say)?;
    let test_rows = read_rows(test_path, TextEncoding::UTF8, say)?;
    let mut valid = encode_rows(valid_path, &valid_rows, &vocab, &labels, LOWERCASE)?;
    let mut test = encode_rows(test_path, &test_rows, &vocab, &labels, LOWERCASE)?;
    let mut eval_cut = truncate(&mut valid, o.max_len);
    eval_cut.extend(truncate(&mut test, o.max_len));
    let cut = (
        cut.0 + eval_cut.len(),
        eval_cut.iter().copied().fold(cut.1, usize::max),
    );
    let batch_size = o.batch_size.unwrap_or(32);
    let open = example_stream(
        data.to_path_buf(),
        scan.header.map(|h| h.0),
        std::rc::Rc::new(vocab.clone()),
        std::rc::Rc::new(labels.clone()),
        o.max_len,
    );
    Ok(Prepared {
        train: TrainData::Streamed(Box::new(StreamedBatches::new(
            open,
            scan.examples,
            capacity,
            batch_size,
        ))),
        train_lengths: vec![longest.1; batch_size.min(scan.examples)],
        train_longest: longest,
        valid,
        valid_rows,
        test,
        test_rows,
        valid_source: ValidSource::File {
            path: valid_path.clone(),
        },
        test_source: TestSource::File {
            path: test_path.clone(),
        },
        labels,
        vocab,
        cut,
    })
}

/// Opens the stream of `path`'s encoded examples (skipping the header line `header`), each
/// cut to `max_len` tokens.
fn example_stream(
    path: PathBuf,
    header: Option<usize>,
    vocab: std::rc::Rc<Vocab>,
    labels: std::rc::Rc<Vec<String>>,
    max_len: Option<usize>,
) -> OpenStream<Example> {
    Box::new(move || {
        let (path, vocab, labels) = (path.clone(), vocab.clone(), labels.clone());
        let rows = stream_labelled(&path, header)?;
        Ok(Box::new(rows.map(move |r| {
            let mut e = encode_row(&path, &r?, &vocab, &labels, LOWERCASE).map_err(invalid)?;
            if let Some(n) = max_len {
                e.ids.truncate(n);
            }
            Ok(e)
        })))
    })
}

/// Trains the task (see the [module docs](self) for the options and defaults).
pub fn train(ctx: &RunContext) -> Result<TrainOutcome> {
    let o = &ctx.opts;
    let hf_file;
    let data = match (&o.data, crate::run::hub::HfSource::from_options(ctx)) {
        (Some(_), Some(_)) => bail!("classify reads --data FILE or --hf-dataset NAME, not both"),
        (Some(data), None) => data,
        (None, Some(src)) => {
            hf_file = crate::run::hub::labelled_file(&src, &ctx.out)?;
            &hf_file
        }
        (None, None) => bail!("classify needs --data FILE with `label<TAB or space>text` lines (e.g. SST-2 stsa.binary.train)"),
    };
    let pooling = parse_pooling(o.pooling.as_deref())?;
    let lowercase = LOWERCASE;
    let encoding = o.text_encoding()?;
    let Prepared {
        train,
        train_lengths,
        train_longest,
        valid,
        valid_rows,
        test,
        test_rows,
        valid_source,
        test_source,
        labels,
        vocab,
        cut,
    } = match shuffle_buffer(ctx)? {
        None => prepare_held(ctx, data, encoding)?,
        Some(n) => prepare_streamed(ctx, data, n)?,
    };
    let total = train.len() + valid.len() + test.len();
    if let Some(n) = o.max_len {
        let how = format!("kept their first {n} tokens");
        if let Some(line) = max_len_notice_counts(n, cut.0, cut.1, total, "examples", &how) {
            ctx.say(&line);
        }
    }
    ctx.say(&format!(
        "classify: {} training{} / {} validation / {} test examples{}, {} labels, vocabulary {} words, pooling {pooling}",
        train.len(),
        if matches!(train, TrainData::Streamed(_)) { " (streamed)" } else { "" },
        valid.len(),
        test.len(),
        if test_source.is_held_out() { " (test held out of --data)" } else { "" },
        labels.len(),
        vocab.len()
    ));

    let dropout = o.dropout.unwrap_or(0.5);
    let mode = ctx.cell(rnn_core::Mode::Lstm)?;
    let cfg = SequenceClassifierConfig::new(
        Input::tokens_with_padding(vocab.len(), o.embedding.unwrap_or(128), 0),
        mode,
        o.hidden.unwrap_or(128),
        labels.len(),
    )
    .with_num_layers(o.layers.unwrap_or(1))
    .with_bidirectional(o.bidirectional.unwrap_or(true))
    .with_pooling(pooling)
    .with_masks(o.mask_options(mode))
    .with_layer_norm(o.layer_norm.unwrap_or(false))
    .with_embedding_dropout(dropout)
    .with_output_dropout(dropout)
    .with_rnn_dropout(if o.layers.unwrap_or(1) > 1 {
        dropout
    } else {
        0.0
    });
    let varmap = VarMap::new();
    let model = SequenceClassifier::new(&cfg, ctx.var_builder(&varmap))?;
    let batch_size = o.batch_size.unwrap_or(32);
    let shape = RecurrentShape::new(
        cfg.input.output_size(),
        cfg.mode,
        cfg.hidden_size,
        cfg.num_layers,
        cfg.bidirectional,
    );
    let plan = MemoryPlan::new(ctx, &varmap, shape, batch_size, 256);
    let eval_lengths = [lengths(&valid), lengths(&test)].concat();
    check_memory(ctx, &plan, &train_lengths, &eval_lengths, || {
        let train = [(data.as_path(), train_longest.0, train_longest.1)];
        Longest::find(
            train.into_iter().chain(
                [
                    (valid_source.path(), &valid_rows, &valid),
                    (test_source.path(), &test_rows, &test),
                ]
                .into_iter()
                .flat_map(|(path, rows, enc)| {
                    rows.iter()
                        .zip(enc)
                        .map(move |(r, e)| (path, r.line, e.ids.len()))
                }),
            ),
        )
    })?;
    let mut task = ClassifyTask {
        model,
        valid: batches(&valid, 256, &ctx.device)?,
        train,
        batch_size,
        device: ctx.device.clone(),
        saved: SavedConfig {
            task: ctx.task.as_str().to_string(),
            model: cfg,
            labels: labels.clone(),
            lowercase,
            valid: Some(valid_source),
            test: Some(test_source.clone()),
            encoding: (encoding != TextEncoding::UTF8).then(|| encoding.name().to_string()),
            max_len: o.max_len,
        },
        vocab_json: serde_json::to_vec(&vocab)?,
    };
    let mut tcfg = trainer_config(ctx, &train_defaults())?;
    if o.patience.is_none() {
        tcfg.early_stopping = Some(EarlyStopping {
            patience: 3,
            min_delta: 0.0,
        });
    }
    let report = fit(ctx, tcfg, varmap.clone(), &mut task)?;
    // The headline: the test rows, which model selection never saw, with the best weights.
    let at = weights_label(load_best(ctx, &varmap)?);
    let s = score(
        &task.model,
        &batches(&test, 256, &ctx.device)?,
        labels.len(),
    )?;
    let extra = vec![format!(
        "test accuracy {:.4}, macro F1 {:.4} ({}; {at})",
        s.accuracy,
        s.macro_f1,
        test_source.describe(s.count, "examples")
    )];
    Ok(TrainOutcome { report, extra })
}

/// A classifier rebuilt from a checkpoint, with its vocabulary and labels.
pub struct LoadedClassifier {
    /// The model with the saved weights.
    pub model: SequenceClassifier,
    /// The vocabulary.
    pub vocab: Vocab,
    /// Label names in class-id order.
    pub labels: Vec<String>,
    /// Whether text is lowercased before lookup.
    pub lowercase: bool,
    /// Where the validation data came from.
    pub valid: Option<ValidSource>,
    /// Where the test data came from (`None` in older checkpoints).
    pub test: Option<TestSource>,
    /// `--max-len` of the run: examples keep their first this many tokens.
    pub max_len: Option<usize>,
    /// The encoding of the data files it was trained on.
    pub encoding: TextEncoding,
}

/// Rebuilds the classifier saved in `run`.
pub fn load(run: &CheckpointRun) -> Result<LoadedClassifier> {
    let saved: SavedConfig = serde_json::from_value(run.model.clone()).with_context(|| {
        format!(
            "{}: not a classify checkpoint configuration",
            run.dir.join(checkpoint::CONFIG_FILE).display()
        )
    })?;
    let vocab = run.vocab(VOCAB_FILE)?;
    let varmap = VarMap::new();
    let model = SequenceClassifier::new(&saved.model, run.var_builder(&varmap))?;
    run.fill(&varmap)?;
    Ok(LoadedClassifier {
        model,
        vocab,
        labels: saved.labels,
        lowercase: saved.lowercase,
        valid: saved.valid,
        test: saved.test,
        max_len: saved.max_len,
        encoding: saved_encoding(saved.encoding.as_deref())?,
    })
}

/// Scores the classifier of `run` on a `label text` file.
pub fn score_file(run: &CheckpointRun, path: &Path, batch_size: usize) -> Result<Scores> {
    let c = load(run)?;
    let mut enc = encode_file(path, c.encoding, &c.vocab, &c.labels, c.lowercase)?;
    truncate(&mut enc, c.max_len);
    score(
        &c.model,
        &batches(&enc, batch_size, &run.device)?,
        c.labels.len(),
    )
}

/// Evaluates a checkpoint on `--data`, or on the validation data it was trained with.
pub fn eval(run: &CheckpointRun, req: impl Into<EvalRequest>) -> Result<EvalReport> {
    let req = req.into();
    let c = load(run)?;
    let read = |p: &Path| read_rows(p, c.encoding, |_| {});
    // Without --data: the test rows of the run (its headline), else (older checkpoints) the
    // validation rows.
    let (test, path, rows) = match (&req.data, &c.test) {
        (None, Some(t)) => (Some(t), t.path().to_path_buf(), t.rows(read)?),
        _ => {
            let (path, rows) = ValidSource::eval_rows(req.data.as_deref(), c.valid.as_ref(), read)?;
            (None, path, rows)
        }
    };
    let mut enc = encode_rows(&path, &rows, &c.vocab, &c.labels, c.lowercase)?;
    truncate(&mut enc, c.max_len);
    if enc.is_empty() {
        bail!("{}: no examples to evaluate", path.display());
    }
    let s = score(
        &c.model,
        &batches(&enc, req.batch_size, &run.device)?,
        c.labels.len(),
    )?;
    let (summary, split) = match test {
        Some(t) => (
            format!(
                "test accuracy {:.4}, macro F1 {:.4}, loss {:.4} on {}",
                s.accuracy,
                s.macro_f1,
                s.loss,
                t.describe(s.count, "examples")
            ),
            Split::Test,
        ),
        None => (
            format!(
                "accuracy {:.4}, macro F1 {:.4}, loss {:.4} on {} examples of {}",
                s.accuracy,
                s.macro_f1,
                s.loss,
                s.count,
                path.display()
            ),
            if req.data.is_some() {
                Split::Data
            } else {
                Split::Validation
            },
        ),
    };
    Ok(
        EvalReport::new(summary, split, Some(&path), s.count as u64, "examples")
            .metric("accuracy", s.accuracy)
            .metric("macro_f1", s.macro_f1)
            .metric("loss", s.loss),
    )
}

/// One prediction: the label, the class probabilities and the pooling weights per token.
#[derive(Debug, Clone)]
pub struct Prediction {
    /// The predicted label.
    pub label: String,
    /// `(label, probability)` for every class.
    pub probabilities: Vec<(String, f32)>,
    /// `(token, weight)` per token for attention pooling, else empty.
    pub attention: Vec<(String, f32)>,
}

/// Classifies one text with a loaded classifier.
pub fn classify_text(c: &LoadedClassifier, text: &str, device: &Device) -> Result<Prediction> {
    let ws = words(text, c.lowercase);
    if ws.is_empty() {
        bail!("--input: empty text");
    }
    let ids = c.vocab.encode(ws.iter().map(String::as_str));
    let len = ids.len();
    let xs = Tensor::from_vec(ids, (1, len), device)?;
    let (logits, weights) = c.model.forward_with_weights(&xs, Some(&[len]), false)?;
    let probs = candle_nn::ops::softmax(&logits, D::Minus1)?
        .squeeze(0)?
        .to_dtype(candle_core::DType::F32)?
        .to_vec1::<f32>()?;
    let best = probs
        .iter()
        .enumerate()
        .max_by(|a, b| a.1.total_cmp(b.1))
        .map(|(i, _)| i)
        .unwrap_or(0);
    let attention = match (c.model.config().pooling, weights) {
        (Pooling::Attention, Some(w)) => {
            let w = w
                .squeeze(0)?
                .to_dtype(candle_core::DType::F32)?
                .to_vec1::<f32>()?;
            ws.iter().cloned().zip(w).collect()
        }
        _ => Vec::new(),
    };
    Ok(Prediction {
        label: c.labels[best].clone(),
        probabilities: c.labels.iter().cloned().zip(probs).collect(),
        attention,
    })
}

/// Classifies each input: `LABEL\tP(a)=.. P(b)=..` and, with attention pooling,
/// `\tattention: tok:0.12 ...`; as values `{"label", "probabilities": {label: p},
/// "attention": [{"token", "weight"}]}` (attention only with attention pooling).
pub fn predict(run: &CheckpointRun, req: impl Into<PredictRequest>) -> Result<Predictions> {
    let req = req.into();
    let c = load(run)?;
    let mut out = Predictions::default();
    for text in req.inputs()? {
        let p = classify_text(&c, &text, &run.device)?;
        let probs: Vec<String> = p
            .probabilities
            .iter()
            .map(|(l, v)| format!("P({l})={v:.3}"))
            .collect();
        let mut line = format!("{}\t{}", p.label, probs.join(" "));
        if !p.attention.is_empty() {
            let att: Vec<String> = p
                .attention
                .iter()
                .map(|(t, w)| format!("{t}:{w:.3}"))
                .collect();
            line.push_str(&format!("\tattention: {}", att.join(" ")));
        }
        let mut output = serde_json::json!({
            "label": p.label,
            "probabilities": p.probabilities.iter().cloned().collect::<BTreeMap<_, _>>(),
        });
        if !p.attention.is_empty() {
            output["attention"] = p
                .attention
                .iter()
                .map(|(t, w)| serde_json::json!({"token": t, "weight": w}))
                .collect();
        }
        out.push(line, text, output);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_sort_numerically_and_words_lowercase() {
        assert_eq!(label_names(["10", "2", "1", "2"]), vec!["1", "2", "10"]);
        assert_eq!(label_names(["pos", "neg"]), vec!["neg", "pos"]);
        assert_eq!(words(" A  Fine\tFilm ", true), vec!["a", "fine", "film"]);
        assert_eq!(words("A b", false), vec!["A", "b"]);
    }

    #[test]
    fn pooling_flag_errors_name_the_flag() {
        assert_eq!(parse_pooling(None).unwrap(), DEFAULT_POOLING);
        assert_eq!(
            parse_pooling(Some("attention")).unwrap(),
            Pooling::Attention
        );
        let e = parse_pooling(Some("bogus")).unwrap_err().to_string();
        assert!(e.contains("--pooling") && e.contains("bogus"), "{e}");
    }

    use crate::tasks::parts::checks::assert_parts_sum_to_whole;
    use rand::{Rng, SeedableRng};
    use rnn_train::data::bucket_batches;

    /// `n` examples of 1 to 12 tokens of a 20-word vocabulary, 3 classes.
    fn examples(n: usize, seed: u64) -> Vec<Example> {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        (0..n)
            .map(|_| Example {
                ids: (0..rng.random_range(1..=12))
                    .map(|_| rng.random_range(1..20))
                    .collect(),
                class: rng.random_range(0..3),
            })
            .collect()
    }

    /// A task on `train` with a bidirectional attention-pooled classifier, without dropout.
    fn task(train: TrainData<Example>) -> (ClassifyTask, Vec<candle_core::Var>) {
        let cfg = SequenceClassifierConfig::new(
            Input::tokens_with_padding(20, 6, 0),
            rnn_core::Mode::Lstm,
            5,
            3,
        )
        .with_bidirectional(true)
        .with_pooling(Pooling::Attention);
        let varmap = VarMap::new();
        let vb =
            rnn_core::init::seeded_var_builder(&varmap, 5, candle_core::DType::F32, &Device::Cpu);
        let model = SequenceClassifier::new(&cfg, vb).unwrap();
        let vars = varmap.all_vars();
        let task = ClassifyTask {
            model,
            train,
            valid: Vec::new(),
            batch_size: 7,
            device: Device::Cpu,
            saved: SavedConfig {
                task: "classify".into(),
                model: cfg,
                labels: vec!["a".into(), "b".into(), "c".into()],
                lowercase: true,
                valid: None,
                test: None,
                encoding: None,
                max_len: None,
            },
            vocab_json: Vec::new(),
        };
        (task, vars)
    }

    #[test]
    fn parts_of_a_batch_sum_to_the_whole_batch() {
        let data = examples(30, 1);
        let lengths = lengths(&data);
        let (mut task, vars) = task(TrainData::Held {
            examples: data,
            lengths,
        });
        let batches = task.train_batches(0, 4).unwrap();
        let batch = batches
            .iter()
            .find(|b| matches!(b, TrainBatch::Rows(r) if r.len() == 7))
            .unwrap()
            .clone();
        assert_parts_sum_to_whole(&mut task, &batch, 7, &vars, &[2, 3, 9]);
    }

    #[test]
    fn held_batches_are_the_seeded_length_buckets() {
        let data = examples(100, 2);
        let lens = lengths(&data);
        let (mut task, _) = task(TrainData::Held {
            examples: data.clone(),
            lengths: lens.clone(),
        });
        for (epoch, seed) in [(0u64, 0u64), (1, 0), (2, 7)] {
            // The seed derivation of the batches before they became indices.
            let mix = seed_u64(seed).wrapping_add(epoch.wrapping_mul(0xBF58_476D_1CE4_E5B9));
            let direct = bucket_batches(&lens, 7, mix).unwrap();
            let got = task.train_batches(epoch, seed).unwrap();
            assert_eq!(
                got,
                direct.into_iter().map(TrainBatch::Rows).collect::<Vec<_>>()
            );
        }
        // A part's tensors are the padded rows of its examples, padded to their own longest.
        let batch = task.train_batches(0, 0).unwrap().remove(0);
        let TrainBatch::Rows(idx) = &batch else {
            unreachable!()
        };
        let rows = task
            .train
            .part(&batch, Part { index: 1, count: 2 })
            .unwrap();
        let want: Vec<&Example> = idx[Part { index: 1, count: 2 }.rows(idx.len())]
            .iter()
            .map(|&i| &data[i])
            .collect();
        assert_eq!(rows, want);
        let b = make_batch(&rows, &Device::Cpu).unwrap();
        let seqs: Vec<Vec<u32>> = want.iter().map(|e| e.ids.clone()).collect();
        let padded = pad_batch(&seqs, 0, &Device::Cpu).unwrap();
        assert_eq!(
            b.ids.to_vec2::<u32>().unwrap(),
            padded.ids.to_vec2::<u32>().unwrap()
        );
        assert_eq!(b.lengths, padded.lengths);
    }

    /// `seed * GOLDEN_GAMMA` as [`rnn_core::seed::epoch_seed`] mixes it.
    fn seed_u64(seed: u64) -> u64 {
        seed.wrapping_mul(0x9E37_79B9_7F4A_7C15)
    }

    #[test]
    fn streamed_training_reads_the_file_in_a_bounded_buffer() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("train.txt");
        let lines: String = (0..53)
            .map(|i| format!("{} w{} w{} x\n", i % 3, i % 7, i % 5))
            .collect();
        std::fs::write(&path, format!("label\ttext\n{lines}")).unwrap();
        let scan = scan_labelled(&path, |_| {}).unwrap();
        assert_eq!(
            (scan.examples, scan.header.as_ref().map(|h| h.0)),
            (53, Some(1))
        );
        let vocab = Vocab::build(["w1", "w1", "x", "x"], 1, None).unwrap();
        let labels: Vec<String> = vec!["0".into(), "1".into(), "2".into()];
        let open = example_stream(
            path.clone(),
            Some(1),
            std::rc::Rc::new(vocab),
            std::rc::Rc::new(labels),
            Some(2),
        );
        let (mut task, vars) = task(TrainData::Streamed(Box::new(StreamedBatches::new(
            open, 53, 10, 7,
        ))));
        let batches = task.train_batches(3, 1).unwrap();
        assert_eq!(batches.len(), 8);
        let mut classes = Vec::new();
        for b in &batches {
            let rows = task.train.part(b, Part::WHOLE).unwrap();
            assert!(rows.iter().all(|e| e.ids.len() == 2), "--max-len 2 applied");
            classes.extend(rows.iter().map(|e| e.class));
        }
        assert_eq!(classes.len(), 53);
        // The same epoch again gives the same batches; another epoch another order.
        let again: Vec<u32> = batches
            .iter()
            .flat_map(|b| {
                let rows = task.train.part(b, Part::WHOLE).unwrap();
                rows.iter().map(|e| e.class).collect::<Vec<_>>()
            })
            .collect();
        assert_eq!(again, classes);
        let TrainData::Streamed(s) = &task.train else {
            unreachable!()
        };
        assert_eq!(
            s.peak(),
            10,
            "the buffer held at most --shuffle-buffer examples"
        );
        // Parts of a streamed batch sum to it too.
        let b = batches[2].clone();
        assert_parts_sum_to_whole(&mut task, &b, 7, &vars, &[2, 3, 8]);
    }
}
