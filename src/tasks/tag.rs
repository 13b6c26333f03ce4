//! `rnn train tag`: many-to-many sequence tagging (part-of-speech, named entities) with a
//! bidirectional [`SequenceTagger`].
//!
//! # Data
//!
//! `--data FILE` is read as **CoNLL-U** ([`rnn_train::data::read_conllu`], tags from
//! `--tag-column`, default `upos`; a column name or a 1-based number) when its name ends in
//! `.conllu`, or when its first line that is neither blank nor a `#` comment has 10 tab-separated
//! columns; anything else is read as **2-column CoNLL** (`token tag` per line, blank lines between
//! sentences, [`rnn_train::data::read_conll`]), where `--tag-column` is an error. `--valid` and
//! `--test` are detected the same way; without `--valid` a seeded `--split` fraction (default
//! 0.1) of the sentences is held out for validation, and without `--test` another seeded part of
//! the same size for the test. Validation picks the best checkpoint and stops training early; the
//! test sentences, which model selection never sees, are scored once with the best weights: the
//! summary's headline, which `rnn eval --checkpoint DIR` prints again.
//!
//! `--hf-dataset NAME [--hf-split train] [--tokens-column tokens] [--tags-column ner_tags]`
//! (feature `hub`) reads a Hugging Face token-classification dataset such as conll2003 instead of
//! `--data`: two list columns per row, the tokens and their tags (strings, or class ids named by
//! the dataset's `ClassLabel` names), from the local Hugging Face cache, else the Hub. The
//! sentences are kept as a 2-column CoNLL file under `OUT/hf-data/`, which `rnn eval` re-reads
//! (see [`crate::run::hub::conll_file`]).
//!
//! Words keep their case (capitals matter for tags such as PROPN). The vocabulary is built on the
//! training split: words seen at least twice ([`MIN_FREQ`]), at most `--vocab-size` (default
//! 30000). Every other word maps to an *unknown-word signature* such as `<unk-Cap-ing>` (shape:
//! capitalised / all caps / lowercase / has a digit / has a hyphen, plus a frequent suffix) when
//! the training data contained that signature, else to `<unk>`; the training singletons teach the
//! signatures, which makes out-of-vocabulary words far easier to tag than one shared `<unk>`.
//!
//! `--max-len N` splits every sentence longer than N tokens into consecutive chunks of at most N
//! (training, validation and test; recorded in the checkpoint, so `rnn eval` splits the same),
//! with a notice of how many were longer and the longest. Chunks rather than truncation: every
//! token keeps its tag and is trained and scored (an entity across a chunk boundary counts as
//! two, and the result lines count chunks as sentences). Without it sentences stay whole: batches
//! are cut so that one long sentence gets a batch of its own instead of padding a full one
//! ([`rnn_train::data::bucket_batches`]), and before training the peak memory of the largest
//! batch is estimated ([`crate::run::memory`]); a run that would not fit in the memory available
//! is refused, naming the longest sentence, `--max-len` and `--batch-size`.
//!
//! `--shuffle-buffer N` streams the training file instead of holding it: a first pass reads
//! `--data` sentence by sentence for the tags, the vocabulary and the sentence count (a second
//! checks the tag scheme's transitions when the tags form one); every epoch then reads it
//! again through a seeded shuffle buffer of N sentences (chunks, with `--max-len`), an
//! approximate shuffle, in batches of `--batch-size` consecutive sentences (not bucketed by
//! length). Resuming re-reads the file and skips the batches already trained. It needs
//! `--valid FILE` and `--test FILE` and a UTF-8 file. Without it, the sentences are held as
//! word and tag ids, and each step builds the tensors of its batch only. See
//! docs/STREAMING.md ("Classification and tagging").
//!
//! # Model and defaults
//!
//! Embedding (`--embedding`, 128) -> `--cell` (lstm), `--hidden` 128 per direction, `--layers`
//! 1, `--bidirectional` true -> linear output per token, `--dropout` 0.33 on the embeddings and
//! on the recurrent outputs. AdamW lr 2e-3, `--batch-size` 32 in length buckets shuffled from
//! (epoch, seed), clipping 5, `--epochs` 10 with early stopping after `--patience` 3.
//!
//! The defaults were chosen on UD English-EWT UPOS (`--data en_ewt-ud-train.conllu --valid
//! en_ewt-ud-dev.conllu --test en_ewt-ud-test.conllu`), where accuracy is still rising after the
//! default epochs: more epochs or character features would help.
//!
//! # Metrics and decoding
//!
//! Part-of-speech and other tag sets without a scheme: token accuracy over the real tokens
//! (padding ignored) is the main metric, higher is better, and each token gets its most likely
//! tag. The test part is scored with the best weights ("test accuracy X (N tokens in ...)").
//!
//! Named entities: when the training tags form a BIO (IOB2) or BIOES scheme
//! ([`TagScheme::detect`]: every tag `O` or `B-`/`I-`/`E-`/`S-TYPE`), the main metric, the best
//! checkpoint, the summary line and the test line are **entity F1** by exact span
//! ([`EntityF1`], conlleval / seqeval rules, micro-averaged); validation also logs
//! `entity_precision`, `entity_recall` and token `accuracy`. Decoding is then constrained
//! ([`SequenceTagger::predict_constrained`], Viterbi under the scheme's [`TransitionMask`]), so a
//! prediction never holds `O I-PER`, `B-PER I-LOC` or, under BIOES, an entity without its end.
//! When some training sentences break the scheme's transitions themselves (IOB1 data, whose
//! entities start with `I-`), decoding stays per-token, with a notice, and entity F1 is still
//! reported.
//!
//! `rnn predict --input "The cat sat ."` prints `The/DET cat/NOUN sat/VERB ./PUNCT` (whitespace
//! tokenisation).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::rc::Rc;

use anyhow::{bail, Context, Result};
use candle_core::{DType, Device, Tensor};
use candle_nn::VarMap;
use rnn_models::classifier::Input;
use rnn_models::tagger::{SequenceTagger, SequenceTaggerConfig, TransitionMask};
use rnn_train::checkpoint::{self, VOCAB_FILE};
use rnn_train::data::{
    decode_text, pad_batch, parse_conll, parse_conllu, read_conll, read_conllu, stream_conll,
    stream_conllu, OpenStream, StreamedBatches, TaggedSentence, TextEncoding, Vocab,
};
use rnn_train::metrics::{EntityF1, EntityReport, Metric, TagScheme};
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

/// Words must occur at least this often in the training split to get their own embedding.
pub const MIN_FREQ: usize = 2;
/// Default `--vocab-size`.
pub const DEFAULT_VOCAB_SIZE: usize = 30_000;

/// Suffixes used in unknown-word signatures (checked in order, longest first).
const SUFFIXES: [&str; 16] = [
    "ing", "ed", "ly", "ion", "er", "est", "al", "ity", "ive", "ous", "able", "ful", "less", "s",
    "'s", "n't",
];

/// The unknown-word signature of `word`, e.g. `<unk-Cap-ing>`, `<unk-num>`, `<unk-low-s>`.
pub fn signature(word: &str) -> String {
    let mut sig = String::from("<unk");
    let has_digit = word.chars().any(|c| c.is_ascii_digit());
    let has_alpha = word.chars().any(char::is_alphabetic);
    if has_digit && !has_alpha {
        return "<unk-num>".to_string();
    }
    if !has_alpha {
        return "<unk-punct>".to_string();
    }
    let first_upper = word.chars().next().is_some_and(char::is_uppercase);
    let all_upper = word
        .chars()
        .filter(|c| c.is_alphabetic())
        .all(char::is_uppercase);
    sig.push_str(if all_upper && word.chars().count() > 1 {
        "-CAPS"
    } else if first_upper {
        "-Cap"
    } else {
        "-low"
    });
    if has_digit {
        sig.push_str("-dig");
    }
    if word.contains('-') {
        sig.push_str("-hyph");
    }
    let lower = word.to_lowercase();
    let mut best: Option<&str> = None;
    for s in SUFFIXES {
        if lower.len() > s.len() + 2 && lower.ends_with(s) && best.is_none_or(|b| s.len() > b.len())
        {
            best = Some(s);
        }
    }
    if let Some(s) = best {
        sig.push('-');
        sig.push_str(s);
    }
    sig.push('>');
    sig
}

/// Word ids: the word's own id, else its signature's, else `<unk>` (1).
fn encode_words(vocab: &Vocab, tokens: &[String]) -> Vec<u32> {
    tokens
        .iter()
        .map(|w| match vocab.id(w) {
            1 => vocab.id(&signature(w)),
            id => id,
        })
        .collect()
}

/// Whether `path` holds CoNLL-U (see the [module docs](self)).
fn is_conllu(path: &Path) -> Result<bool> {
    if path.extension().is_some_and(|e| e == "conllu") {
        return Ok(true);
    }
    use std::io::BufRead;
    // Only the lines up to the first token line are read (the file may be too large to hold).
    let file = std::fs::File::open(path)
        .with_context(|| format!("{}: cannot read the file", path.display()))?;
    for line in std::io::BufReader::new(file).split(b'\n') {
        let line = line.with_context(|| format!("{}: cannot read the file", path.display()))?;
        let line = String::from_utf8_lossy(&line);
        let line = line.strip_suffix('\r').unwrap_or(&line);
        if !line.trim().is_empty() && !line.starts_with('#') {
            return Ok(line.split('\t').count() == 10);
        }
    }
    Ok(false)
}

/// Reads tagged sentences from a CoNLL-U or 2-column CoNLL file.
pub fn read_tagged(
    path: &Path,
    tag_column: Option<&str>,
    encoding: TextEncoding,
) -> Result<Vec<TaggedSentence>> {
    if !path.is_file() {
        bail!("{}: no such file", path.display());
    }
    // Another encoding is decoded to UTF-8 first; the parsers then see UTF-8 bytes.
    let decoded = if encoding == TextEncoding::UTF8 {
        None
    } else {
        let bytes = std::fs::read(path)
            .with_context(|| format!("{}: cannot read the file", path.display()))?;
        Some(decode_text(path, bytes, encoding)?)
    };
    if is_conllu(path)? {
        let parsed = match &decoded {
            Some(text) => parse_conllu(path, text.as_bytes(), tag_column),
            None => read_conllu(path, tag_column),
        };
        Ok(parsed.map_err(|e| match e {
            rnn_train::Error::Invalid(m) => anyhow::anyhow!("--tag-column: {m}"),
            e => e.into(),
        })?)
    } else {
        if let Some(c) = tag_column {
            bail!(
                "--tag-column {c}: {} is read as 2-column CoNLL (token tag), which has no columns to choose; the option applies to CoNLL-U files",
                path.display()
            );
        }
        Ok(match &decoded {
            Some(text) => parse_conll(path, text.as_bytes())?,
            None => read_conll(path)?,
        })
    }
}

/// The sentences of a CoNLL-U or 2-column CoNLL file (UTF-8) read one at a time
/// (`--shuffle-buffer`), detected and checked as [`read_tagged`] does.
fn stream_tagged(
    path: &Path,
    tag_column: Option<&str>,
) -> Result<Box<dyn Iterator<Item = rnn_train::Result<TaggedSentence>>>> {
    if !path.is_file() {
        bail!("{}: no such file", path.display());
    }
    if is_conllu(path)? {
        match stream_conllu(path, tag_column) {
            Ok(s) => Ok(Box::new(s)),
            Err(rnn_train::Error::Invalid(m)) => bail!("--tag-column: {m}"),
            Err(e) => Err(e.into()),
        }
    } else {
        if let Some(c) = tag_column {
            bail!(
                "--tag-column {c}: {} is read as 2-column CoNLL (token tag), which has no columns to choose; the option applies to CoNLL-U files",
                path.display()
            );
        }
        Ok(Box::new(stream_conll(path)?))
    }
}

/// The `model` entry of a tag checkpoint's `config.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct SavedConfig {
    task: String,
    model: SequenceTaggerConfig,
    tags: Vec<String>,
    tag_column: Option<String>,
    /// `--encoding` of the data files, when not UTF-8.
    #[serde(default)]
    encoding: Option<String>,
    valid: Option<ValidSource>,
    /// Where the test rows came from (absent in checkpoints written before the test part).
    #[serde(default)]
    test: Option<TestSource>,
    /// Whether decoding follows the tag scheme's transitions (when the tags form one); absent
    /// in checkpoints older than the option, which then decode constrained too.
    #[serde(default = "constrained_by_default")]
    constrained: bool,
    /// `--max-len`: longer sentences are split into chunks of this many tokens (in eval too).
    #[serde(default)]
    max_len: Option<usize>,
}

fn constrained_by_default() -> bool {
    true
}

/// How a tagger's output becomes tags and is scored: by token accuracy only, or, when the tags
/// form a scheme, also by entity F1, with decoding constrained to the scheme when `mask` is set.
struct Decoding {
    tags: Vec<String>,
    scheme: Option<TagScheme>,
    mask: Option<TransitionMask>,
}

impl Decoding {
    /// The decoding for `tags` (names in id order); `constrained` asks for the scheme's
    /// transition mask when there is a scheme.
    fn new(tags: &[String], constrained: bool) -> Result<Self> {
        let scheme = TagScheme::detect(tags);
        let mask = match scheme {
            Some(scheme) if constrained => {
                let name = |i: Option<usize>| i.map(|i| tags[i].as_str());
                Some(TransitionMask::from_fn(tags.len(), |a, b| {
                    scheme.allows(name(a), name(b))
                })?)
            }
            _ => None,
        };
        Ok(Self {
            tags: tags.to_vec(),
            scheme,
            mask,
        })
    }

    fn predict(
        &self,
        model: &SequenceTagger,
        ids: &Tensor,
        lengths: Option<&[usize]>,
    ) -> Result<Vec<Vec<u32>>> {
        Ok(match &self.mask {
            Some(mask) => model.predict_constrained(ids, lengths, mask)?,
            None => model.predict(ids, lengths)?,
        })
    }

    fn names<'a>(&'a self, ids: &[u32]) -> Vec<&'a str> {
        ids.iter()
            .map(|&i| self.tags[i as usize].as_str())
            .collect()
    }
}

/// The scheme of `tags` and whether decoding may be constrained to it: not when some training
/// sentences break its transitions (e.g. IOB1 data), which is said on the console.
/// `broken` counts the training sentences that break a scheme's transitions.
fn choose_constraint(
    ctx: &RunContext,
    tags: &[String],
    broken: impl FnOnce(TagScheme) -> Result<usize>,
) -> Result<bool> {
    let Some(scheme) = TagScheme::detect(tags) else {
        return Ok(false);
    };
    let broken = broken(scheme)?;
    if broken > 0 {
        ctx.say(&format!(
            "tag: the tags form a {} scheme, but {broken} training sentences break its transitions (IOB1 data?); decoding picks each token's tag on its own",
            scheme.name()
        ));
        return Ok(false);
    }
    ctx.say(&format!(
        "tag: {} entity tags; decoding follows the scheme's transitions, and the headline is entity F1",
        scheme.name()
    ));
    Ok(true)
}

/// One encoded sentence (or chunk of one): word ids and tag ids, as many of each, never none.
#[derive(Debug, Clone, PartialEq)]
struct Example {
    ids: Vec<u32>,
    tags: Vec<u32>,
}

/// The tag ids of `tags` (names in id order).
fn tag_index(tags: &[String]) -> BTreeMap<String, u32> {
    tags.iter()
        .enumerate()
        .map(|(i, t)| (t.clone(), i as u32))
        .collect()
}

fn encode(
    path: &Path,
    sentences: &[TaggedSentence],
    vocab: &Vocab,
    tags: &[String],
) -> Result<Vec<Example>> {
    let index = tag_index(tags);
    sentences
        .iter()
        .map(|s| encode_sentence(path, s, vocab, &index))
        .collect()
}

/// Encodes one sentence of `path`; a tag outside `index` is an error naming the sentence's line.
fn encode_sentence(
    path: &Path,
    s: &TaggedSentence,
    vocab: &Vocab,
    index: &BTreeMap<String, u32>,
) -> Result<Example> {
    let mut ts = Vec::with_capacity(s.tags.len());
    for (k, t) in s.tags.iter().enumerate() {
        let Some(&id) = index.get(t.as_str()) else {
            bail!(
                "{}: tag '{t}' of token '{}' (sentence starting at line {}) does not occur in the training data",
                path.display(),
                s.tokens[k],
                s.line
            );
        };
        ts.push(id);
    }
    Ok(Example {
        ids: encode_words(vocab, &s.tokens),
        tags: ts,
    })
}

/// Splits every sentence of `data` longer than `max_len` into consecutive chunks of at most
/// `max_len` tokens (`--max-len`); returns the lengths before of those it split.
fn chunk(data: &mut Vec<Example>, max_len: Option<usize>) -> Vec<usize> {
    let Some(n) = max_len else {
        return Vec::new();
    };
    let cut = data
        .iter()
        .map(|e| e.ids.len())
        .filter(|&l| l > n)
        .collect();
    *data = std::mem::take(data)
        .into_iter()
        .flat_map(|e| chunks(e, n))
        .collect();
    cut
}

/// `e` split into consecutive chunks of at most `max_len` tokens (itself when not longer).
fn chunks(e: Example, max_len: usize) -> Vec<Example> {
    let n = max_len.max(1);
    if e.ids.len() <= n {
        return vec![e];
    }
    e.ids
        .chunks(n)
        .zip(e.tags.chunks(n))
        .map(|(ids, tags)| Example {
            ids: ids.to_vec(),
            tags: tags.to_vec(),
        })
        .collect()
}

struct Batch {
    ids: Tensor,
    lengths: Vec<usize>,
    tags: Tensor,
    tag_rows: Vec<Vec<u32>>,
    tokens: u64,
}

/// The padded batch of `rows` (at least one).
fn make_batch(rows: &[&Example], device: &Device) -> rnn_train::Result<Batch> {
    let seqs: Vec<Vec<u32>> = rows.iter().map(|e| e.ids.clone()).collect();
    let tag_rows: Vec<Vec<u32>> = rows.iter().map(|e| e.tags.clone()).collect();
    let padded = pad_batch(&seqs, 0, device)?;
    let tags = pad_batch(&tag_rows, 0, device)?;
    Ok(Batch {
        tokens: padded.lengths.iter().sum::<usize>() as u64,
        ids: padded.ids,
        lengths: padded.lengths,
        tags: tags.ids,
        tag_rows,
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

/// Token accuracy, loss and (for entity tags) entity scores of a tagger on a data set.
#[derive(Debug, Clone, PartialEq)]
pub struct Scores {
    /// Fraction of real tokens tagged correctly.
    pub accuracy: f64,
    /// Mean cross-entropy per token (nats).
    pub loss: f64,
    /// Tokens counted.
    pub tokens: u64,
    /// Sentences counted.
    pub sentences: usize,
    /// Entity precision, recall and F1 by exact span, when the tags form a BIO / BIOES scheme.
    pub entities: Option<EntityReport>,
}

impl Scores {
    /// The headline: `entity F1 0.8123 (precision 0.8000, recall 0.8250, 400 entities)` for
    /// entity tags, else `accuracy 0.9512`.
    pub fn headline(&self) -> String {
        match &self.entities {
            Some(e) => format!(
                "entity F1 {:.4} (precision {:.4}, recall {:.4}, {} entities)",
                e.f1, e.precision, e.recall, e.total.gold
            ),
            None => format!("accuracy {:.4}", self.accuracy),
        }
    }
}

fn score(model: &SequenceTagger, decoding: &Decoding, batches: &[Batch]) -> Result<Scores> {
    let (mut correct, mut tokens, mut loss_sum, mut sentences) = (0u64, 0u64, 0.0, 0usize);
    let mut entities = decoding.scheme.map(|_| EntityF1::new());
    for b in batches {
        let loss = model
            .loss(&b.ids, Some(&b.lengths), &b.tags, false)?
            .to_dtype(DType::F64)?
            .to_scalar::<f64>()?;
        loss_sum += loss * b.tokens as f64;
        let pred = decoding.predict(model, &b.ids, Some(&b.lengths))?;
        for (p, t) in pred.iter().zip(&b.tag_rows) {
            correct += p.iter().zip(t).filter(|(a, b)| a == b).count() as u64;
            if let Some(m) = &mut entities {
                m.update(&decoding.names(p), &decoding.names(t))?;
            }
        }
        tokens += b.tokens;
        sentences += b.lengths.len();
    }
    let div = |a: f64| if tokens > 0 { a / tokens as f64 } else { 0.0 };
    Ok(Scores {
        accuracy: div(correct as f64),
        loss: div(loss_sum),
        tokens,
        sentences,
        entities: entities.map(|m| m.compute()),
    })
}

struct TagTask {
    model: SequenceTagger,
    decoding: Decoding,
    train: TrainData<Example>,
    valid: Vec<Batch>,
    batch_size: usize,
    device: Device,
    saved: SavedConfig,
    vocab_json: Vec<u8>,
}

impl TrainTask for TagTask {
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

    /// The part's sentences padded to their own longest; the loss is the mean cross-entropy
    /// over their real tokens (padding masked) and the units those tokens, so the
    /// units-weighted mean of the parts is the batch's loss.
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
        let loss = self.model.loss(&b.ids, Some(&b.lengths), &b.tags, true)?;
        Ok(StepLoss {
            loss,
            units: b.tokens,
        })
    }

    fn evaluate(&mut self) -> rnn_train::Result<Evaluation> {
        let s = score(&self.model, &self.decoding, &self.valid).map_err(invalid)?;
        let mut ev = Evaluation::from_loss(s.loss);
        ev.metrics.insert("accuracy".into(), s.accuracy);
        let (name, value) = match &s.entities {
            Some(e) => {
                ev.metrics.insert("entity_precision".into(), e.precision);
                ev.metrics.insert("entity_recall".into(), e.recall);
                ev.metrics.insert("entity_f1".into(), e.f1);
                ("entity_f1", e.f1)
            }
            None => ("accuracy", s.accuracy),
        };
        ev.main = Some(MainMetric {
            name: name.into(),
            value,
            higher_is_better: true,
        });
        Ok(ev)
    }

    fn unit(&self) -> &'static str {
        "tokens"
    }

    stochastic_model!(model);

    fn checkpoint_config(&self) -> serde_json::Value {
        serde_json::to_value(&self.saved).unwrap_or_default()
    }

    fn checkpoint_files(&self) -> Vec<(String, Vec<u8>)> {
        vec![(VOCAB_FILE.to_string(), self.vocab_json.clone())]
    }
}

/// The options `tag` reads, with its defaults.
pub fn options(_task: TaskName) -> TaskOptions {
    labelled_options()
        .with("tag-column", "upos")
        .with("vocab-size", DEFAULT_VOCAB_SIZE)
        .with("embedding", 128)
        .with("bidirectional", true)
        .with("cell", "lstm")
        .with("hidden", 128)
        .with("layers", 1)
        .with("dropout", 0.33)
        .with("layer-norm", false)
        .with("zoneout", 0)
        .with("recurrent-dropout", 0)
        .with("weight-drop", 0)
        .with("embedding-dropout", 0)
        .with("variational-dropout", 0)
        .with("batch-size", 32)
        .read("hf-dataset")
        .with("hf-split", "train")
        .with("tokens-column", "tokens")
        .with("tags-column", "ner_tags")
}

task_from_functions!(
    /// The `tag` task (see the [module docs](self)).
    Tag
);

/// The data of a tag run: the training sentences (held or streamed, chunked by `--max-len`), the
/// validation and test ones, the tags, the vocabulary and the decoding constraint.
struct Prepared {
    train: TrainData<Example>,
    /// Training sentences before chunking.
    train_sentences: usize,
    /// The training lengths the memory estimate sees: every chunk's when held; when streamed
    /// (batches not bucketed by length), a full batch of the longest.
    train_lengths: Vec<usize>,
    /// The first longest training sentence: its line and length as trained.
    train_longest: (usize, usize),
    valid: Vec<Example>,
    valid_s: Vec<TaggedSentence>,
    test: Vec<Example>,
    test_s: Vec<TaggedSentence>,
    valid_source: ValidSource,
    test_source: TestSource,
    tags: Vec<String>,
    vocab: Vocab,
    constrained: bool,
    /// `--max-len`: how many sentences were longer, and the longest of them.
    cut: (usize, usize),
}

/// The tags of the training data (sorted), refused when fewer than two.
fn training_tags(data: &Path, tags: Vec<String>) -> Result<Vec<String>> {
    if tags.len() < 2 {
        bail!(
            "--data {}: the training data hold only the tag {tags:?}; a tagger needs at least 2",
            data.display()
        );
    }
    Ok(tags)
}

/// The vocabulary of the training words' counts: words seen at least [`MIN_FREQ`] times, and
/// the signatures of the rarer ones, each counted twice per training singleton so that they
/// enter exactly when the training data had rare words of that shape.
fn tag_vocab(word_counts: &BTreeMap<&str, usize>, vocab_size: Option<usize>) -> Result<Vocab> {
    let mut counts: BTreeMap<String, usize> = word_counts
        .iter()
        .map(|(w, &c)| (w.to_string(), c))
        .collect();
    for (w, _) in word_counts.iter().filter(|(_, &c)| c < MIN_FREQ) {
        *counts.entry(signature(w)).or_default() += 2;
    }
    Ok(Vocab::from_counts(
        counts.iter().map(|(w, &c)| (w.as_str(), c)),
        MIN_FREQ,
        Some(vocab_size.unwrap_or(DEFAULT_VOCAB_SIZE).max(4)),
    )?)
}

/// Reads `--data` whole, splits it and encodes every part (the default).
fn prepare_held(ctx: &RunContext, data: &Path, encoding: TextEncoding) -> Result<Prepared> {
    let o = &ctx.opts;
    let tag_column = o.tag_column.as_deref();
    let sentences = read_tagged(data, tag_column, encoding)?;
    let Parts {
        train: train_s,
        valid: valid_s,
        test: test_s,
        valid_source,
        test_source,
    } = Parts::split(
        ctx,
        data,
        sentences,
        |v: &Path| read_tagged(v, tag_column, encoding),
        "sentences",
    )?;
    let mut tag_counts: BTreeMap<&str, usize> = BTreeMap::new();
    for s in &train_s {
        for t in &s.tags {
            *tag_counts.entry(t.as_str()).or_default() += 1;
        }
    }
    let tags = training_tags(data, tag_counts.keys().map(|t| t.to_string()).collect())?;
    let mut word_counts: BTreeMap<&str, usize> = BTreeMap::new();
    for s in &train_s {
        for w in &s.tokens {
            *word_counts.entry(w.as_str()).or_default() += 1;
        }
    }
    let vocab = tag_vocab(&word_counts, o.vocab_size)?;
    drop(word_counts);
    let constrained = choose_constraint(ctx, &tags, |scheme| {
        Ok(train_s.iter().filter(|s| !scheme.is_valid(&s.tags)).count())
    })?;
    let mut train = encode(data, &train_s, &vocab, &tags)?;
    let mut valid = encode(valid_source.path(), &valid_s, &vocab, &tags)?;
    let mut test = encode(test_source.path(), &test_s, &vocab, &tags)?;
    let train_sentences = train.len();
    let max_len = o.max_len.unwrap_or(usize::MAX);
    let train_longest = first_longest(
        train_s
            .iter()
            .map(|s| (s.line, s.tokens.len().min(max_len))),
    );
    let mut cut = chunk(&mut train, o.max_len);
    cut.extend(chunk(&mut valid, o.max_len));
    cut.extend(chunk(&mut test, o.max_len));
    let train_lengths = lengths(&train);
    Ok(Prepared {
        train: TrainData::Held {
            examples: train,
            lengths: train_lengths.clone(),
        },
        train_sentences,
        train_lengths,
        train_longest,
        valid,
        valid_s,
        test,
        test_s,
        valid_source,
        test_source,
        tags,
        vocab,
        constrained,
        cut: (cut.len(), cut.iter().copied().max().unwrap_or(0)),
    })
}

/// Streams `--data` (`--shuffle-buffer N`): a first pass counts the sentences, the tags and the
/// words (holding one sentence at a time; a second one checks the tag scheme's transitions when
/// the tags form one); training then reads the file once per epoch through a shuffle buffer of
/// `capacity` sentences (chunks, with `--max-len`). Validation and test come from their files.
fn prepare_streamed(ctx: &RunContext, data: &Path, capacity: usize) -> Result<Prepared> {
    let o = &ctx.opts;
    let tag_column = o.tag_column.clone();
    let (Some(valid_path), Some(test_path)) = (&o.valid, &o.test) else {
        bail!("--shuffle-buffer needs --valid FILE and --test FILE");
    };
    let max_len = o.max_len;
    let mut tag_set: BTreeMap<String, usize> = BTreeMap::new();
    let mut word_counts: BTreeMap<String, usize> = BTreeMap::new();
    let (mut sentences, mut chunks_n) = (0usize, 0usize);
    let mut longest = (0usize, 0usize);
    let mut cut = (0usize, 0usize);
    for s in stream_tagged(data, tag_column.as_deref())? {
        let s = s?;
        let len = s.tokens.len();
        sentences += 1;
        chunks_n += len.div_ceil(max_len.unwrap_or(usize::MAX).max(1));
        if max_len.is_some_and(|n| len > n) {
            cut = (cut.0 + 1, cut.1.max(len));
        }
        let trained = len.min(max_len.unwrap_or(usize::MAX));
        if trained > longest.1 {
            longest = (s.line, trained);
        }
        for t in s.tags {
            *tag_set.entry(t).or_default() += 1;
        }
        for w in s.tokens {
            *word_counts.entry(w).or_default() += 1;
        }
    }
    if sentences == 0 {
        bail!("{}: no sentences found", data.display());
    }
    let tags = training_tags(data, tag_set.into_keys().collect())?;
    let vocab = tag_vocab(
        &word_counts.iter().map(|(w, &c)| (w.as_str(), c)).collect(),
        o.vocab_size,
    )?;
    drop(word_counts);
    let constrained = choose_constraint(ctx, &tags, |scheme| {
        let mut broken = 0;
        for s in stream_tagged(data, tag_column.as_deref())? {
            broken += usize::from(!scheme.is_valid(&s?.tags));
        }
        Ok(broken)
    })?;
    let valid_s = read_tagged(valid_path, tag_column.as_deref(), TextEncoding::UTF8)?;
    let test_s = read_tagged(test_path, tag_column.as_deref(), TextEncoding::UTF8)?;
    let mut valid = encode(valid_path, &valid_s, &vocab, &tags)?;
    let mut test = encode(test_path, &test_s, &vocab, &tags)?;
    let mut eval_cut = chunk(&mut valid, max_len);
    eval_cut.extend(chunk(&mut test, max_len));
    let cut = (
        cut.0 + eval_cut.len(),
        eval_cut.iter().copied().fold(cut.1, usize::max),
    );
    let batch_size = o.batch_size.unwrap_or(32);
    let open = sentence_stream(
        data.to_path_buf(),
        tag_column,
        Rc::new(vocab.clone()),
        &tags,
        max_len,
    );
    Ok(Prepared {
        train: TrainData::Streamed(Box::new(StreamedBatches::new(
            open, chunks_n, capacity, batch_size,
        ))),
        train_sentences: sentences,
        train_lengths: vec![longest.1; batch_size.min(chunks_n)],
        train_longest: longest,
        valid,
        valid_s,
        test,
        test_s,
        valid_source: ValidSource::File {
            path: valid_path.clone(),
        },
        test_source: TestSource::File {
            path: test_path.clone(),
        },
        tags,
        vocab,
        constrained,
        cut,
    })
}

/// Opens the stream of `path`'s encoded sentences, each split into chunks of at most `max_len`
/// tokens.
fn sentence_stream(
    path: PathBuf,
    tag_column: Option<String>,
    vocab: Rc<Vocab>,
    tags: &[String],
    max_len: Option<usize>,
) -> OpenStream<Example> {
    let index = Rc::new(tag_index(tags));
    Box::new(move || {
        let sentences = stream_tagged(&path, tag_column.as_deref()).map_err(invalid)?;
        let (path, vocab, index) = (path.clone(), vocab.clone(), index.clone());
        Ok(Box::new(sentences.flat_map(move |s| {
            let encoded =
                s.and_then(|s| encode_sentence(&path, &s, &vocab, &index).map_err(invalid));
            match encoded {
                Ok(e) => chunks(e, max_len.unwrap_or(usize::MAX))
                    .into_iter()
                    .map(Ok)
                    .collect(),
                Err(e) => vec![Err(e)],
            }
        })))
    })
}

/// Trains the task (see the [module docs](self) for the options and defaults).
pub fn train(ctx: &RunContext) -> Result<TrainOutcome> {
    let o = &ctx.opts;
    let hf_file;
    let data = match (&o.data, crate::run::hub::HfTokens::from_options(ctx)) {
        (Some(_), Some(_)) => bail!("tag reads --data FILE or --hf-dataset NAME, not both"),
        (Some(data), None) => data,
        (None, Some(src)) => {
            if let Some(c) = &o.tag_column {
                bail!("--tag-column {c}: the option picks a column of CoNLL-U files; --hf-dataset {} takes --tags-column", src.dataset);
            }
            hf_file = crate::run::hub::conll_file(&src, &ctx.out)?;
            &hf_file
        }
        (None, None) => bail!("tag needs --data FILE: CoNLL-U (e.g. en_ewt-ud-train.conllu) or 2-column CoNLL (token tag)"),
    };
    let encoding = o.text_encoding()?;
    let Prepared {
        train,
        train_sentences,
        train_lengths,
        train_longest,
        valid,
        valid_s,
        test,
        test_s,
        valid_source,
        test_source,
        tags,
        vocab,
        constrained,
        cut,
    } = match shuffle_buffer(ctx)? {
        None => prepare_held(ctx, data, encoding)?,
        Some(n) => prepare_streamed(ctx, data, n)?,
    };
    ctx.say(&format!(
        "tag: {} training{} / {} validation / {} test sentences{}, {} tags, vocabulary {} words",
        train_sentences,
        if matches!(train, TrainData::Streamed(_)) {
            " (streamed)"
        } else {
            ""
        },
        valid_s.len(),
        test_s.len(),
        if test_source.is_held_out() {
            " (test held out of --data)"
        } else {
            ""
        },
        tags.len(),
        vocab.len()
    ));
    let total = train_sentences + valid_s.len() + test_s.len();
    if let Some(n) = o.max_len {
        let how = format!("split into chunks of at most {n} tokens");
        if let Some(line) = max_len_notice_counts(n, cut.0, cut.1, total, "sentences", &how) {
            ctx.say(&line);
        }
    }

    let dropout = o.dropout.unwrap_or(0.33);
    let layers = o.layers.unwrap_or(1);
    let mode = ctx.cell(rnn_core::Mode::Lstm)?;
    let cfg = SequenceTaggerConfig::new(
        Input::tokens_with_padding(vocab.len(), o.embedding.unwrap_or(128), 0),
        mode,
        o.hidden.unwrap_or(128),
        tags.len(),
    )
    .with_num_layers(layers)
    .with_bidirectional(o.bidirectional.unwrap_or(true))
    .with_masks(o.mask_options(mode))
    .with_layer_norm(o.layer_norm.unwrap_or(false))
    .with_embedding_dropout(dropout)
    .with_output_dropout(dropout)
    .with_rnn_dropout(if layers > 1 { dropout } else { 0.0 });
    let varmap = VarMap::new();
    let model = SequenceTagger::new(&cfg, ctx.var_builder(&varmap))?;
    let batch_size = o.batch_size.unwrap_or(32);
    let shape = RecurrentShape::new(
        cfg.input.output_size(),
        cfg.mode,
        cfg.hidden_size,
        cfg.num_layers,
        cfg.bidirectional,
    );
    let plan = MemoryPlan::new(ctx, &varmap, shape, batch_size, 128);
    let eval_lengths = [lengths(&valid), lengths(&test)].concat();
    check_memory(ctx, &plan, &train_lengths, &eval_lengths, || {
        let max_len = o.max_len.unwrap_or(usize::MAX);
        let train = [(data.as_path(), train_longest.0, train_longest.1)];
        Longest::find(
            train.into_iter().chain(
                [
                    (valid_source.path(), &valid_s),
                    (test_source.path(), &test_s),
                ]
                .into_iter()
                .flat_map(|(path, sentences)| {
                    sentences
                        .iter()
                        .map(move |s| (path, s.line, s.tokens.len().min(max_len)))
                }),
            ),
        )
    })?;
    let mut task = TagTask {
        model,
        decoding: Decoding::new(&tags, constrained)?,
        valid: batches(&valid, 128, &ctx.device)?,
        train,
        batch_size,
        device: ctx.device.clone(),
        saved: SavedConfig {
            task: ctx.task.as_str().to_string(),
            model: cfg,
            tags: tags.clone(),
            tag_column: o.tag_column.clone(),
            encoding: (encoding != TextEncoding::UTF8).then(|| encoding.name().to_string()),
            valid: Some(valid_source),
            test: Some(test_source.clone()),
            constrained,
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
        &task.decoding,
        &batches(&test, 128, &ctx.device)?,
    )?;
    let of = test_source.describe(s.sentences, "sentences");
    let extra = vec![match &s.entities {
        None => format!(
            "test accuracy {:.4} ({} tokens in {of}; {at})",
            s.accuracy, s.tokens
        ),
        Some(_) => format!(
            "test {}, accuracy {:.4} ({} tokens in {of}; {at})",
            s.headline(),
            s.accuracy,
            s.tokens
        ),
    }];
    Ok(TrainOutcome { report, extra })
}

/// A tagger rebuilt from a checkpoint, with its vocabulary and tag names.
pub struct LoadedTagger {
    /// The model with the saved weights.
    pub model: SequenceTagger,
    /// The word vocabulary (with unknown-word signatures).
    pub vocab: Vocab,
    /// Tag names in id order.
    pub tags: Vec<String>,
    /// The CoNLL-U tag column trained on (`None` = the default, or 2-column data).
    pub tag_column: Option<String>,
    /// The encoding of the data files it was trained on.
    pub encoding: TextEncoding,
    /// Where the validation data came from.
    pub valid: Option<ValidSource>,
    /// Where the test data came from (`None` in older checkpoints).
    pub test: Option<TestSource>,
    /// `--max-len` of the run: longer sentences are split into chunks of this many tokens.
    pub max_len: Option<usize>,
    decoding: Decoding,
}

/// Rebuilds the tagger saved in `run`.
pub fn load(run: &CheckpointRun) -> Result<LoadedTagger> {
    let saved: SavedConfig = serde_json::from_value(run.model.clone()).with_context(|| {
        format!(
            "{}: not a tag checkpoint configuration",
            run.dir.join(checkpoint::CONFIG_FILE).display()
        )
    })?;
    let vocab = run.vocab(VOCAB_FILE)?;
    let varmap = VarMap::new();
    let model = SequenceTagger::new(&saved.model, run.var_builder(&varmap))?;
    run.fill(&varmap)?;
    Ok(LoadedTagger {
        model,
        vocab,
        decoding: Decoding::new(&saved.tags, saved.constrained)?,
        tags: saved.tags,
        tag_column: saved.tag_column,
        encoding: saved_encoding(saved.encoding.as_deref())?,
        valid: saved.valid,
        test: saved.test,
        max_len: saved.max_len,
    })
}

/// Scores the tagger of `run` on a CoNLL-U or 2-column CoNLL file.
pub fn score_file(run: &CheckpointRun, path: &Path, batch_size: usize) -> Result<Scores> {
    let t = load(run)?;
    let s = read_tagged(path, t.tag_column.as_deref(), t.encoding)?;
    let mut enc = encode(path, &s, &t.vocab, &t.tags)?;
    chunk(&mut enc, t.max_len);
    score(
        &t.model,
        &t.decoding,
        &batches(&enc, batch_size, &run.device)?,
    )
}

/// Evaluates a checkpoint on `--data`, or on the validation data it was trained with.
pub fn eval(run: &CheckpointRun, req: impl Into<EvalRequest>) -> Result<EvalReport> {
    let req = req.into();
    let t = load(run)?;
    let col = t.tag_column.as_deref();
    let read = |p: &Path| read_tagged(p, col, t.encoding);
    // Without --data: the test rows of the run (its headline), else (older checkpoints) the
    // validation rows.
    let (test, path, sentences) = match (&req.data, &t.test) {
        (None, Some(ts)) => (Some(ts), ts.path().to_path_buf(), ts.rows(read)?),
        _ => {
            let (path, rows) = ValidSource::eval_rows(req.data.as_deref(), t.valid.as_ref(), read)?;
            (None, path, rows)
        }
    };
    let mut enc = encode(&path, &sentences, &t.vocab, &t.tags)?;
    chunk(&mut enc, t.max_len);
    if enc.is_empty() {
        bail!("{}: no sentences to evaluate", path.display());
    }
    let s = score(
        &t.model,
        &t.decoding,
        &batches(&enc, req.batch_size, &run.device)?,
    )?;
    let entities = match &s.entities {
        Some(_) => format!("{}, ", s.headline()),
        None => String::new(),
    };
    let (summary, split) = match test {
        Some(ts) => (
            format!(
                "test {entities}accuracy {:.4}, loss {:.4} on {} tokens in {}",
                s.accuracy,
                s.loss,
                s.tokens,
                ts.describe(s.sentences, "sentences")
            ),
            Split::Test,
        ),
        None => (
            format!(
                "{entities}accuracy {:.4}, loss {:.4} on {} tokens in {} sentences of {}",
                s.accuracy,
                s.loss,
                s.tokens,
                s.sentences,
                path.display()
            ),
            if req.data.is_some() {
                Split::Data
            } else {
                Split::Validation
            },
        ),
    };
    let mut report = EvalReport::new(summary, split, Some(&path), s.tokens, "tokens")
        .metric("accuracy", s.accuracy)
        .metric("loss", s.loss);
    if let Some(e) = &s.entities {
        report = report
            .metric("entity_precision", e.precision)
            .metric("entity_recall", e.recall)
            .metric("entity_f1", e.f1);
    }
    Ok(report)
}

/// Tags one whitespace-tokenised sentence: `(token, tag)` pairs.
pub fn tag_sentence(
    t: &LoadedTagger,
    text: &str,
    device: &Device,
) -> Result<Vec<(String, String)>> {
    let tokens: Vec<String> = text.split_whitespace().map(str::to_string).collect();
    if tokens.is_empty() {
        bail!("--input: empty text");
    }
    let ids = encode_words(&t.vocab, &tokens);
    let len = ids.len();
    let xs = Tensor::from_vec(ids, (1, len), device)?;
    let pred = t.decoding.predict(&t.model, &xs, Some(&[len]))?;
    Ok(tokens
        .into_iter()
        .zip(pred[0].iter().map(|&i| t.tags[i as usize].clone()))
        .collect())
}

/// Tags each input: `token/TAG token/TAG ...`; as values `{"tokens": [...], "tags": [...]}`.
pub fn predict(run: &CheckpointRun, req: impl Into<PredictRequest>) -> Result<Predictions> {
    let req = req.into();
    let t = load(run)?;
    let mut out = Predictions::default();
    for text in req.inputs()? {
        let pairs = tag_sentence(&t, &text, &run.device)?;
        let line = pairs
            .iter()
            .map(|(w, g)| format!("{w}/{g}"))
            .collect::<Vec<_>>()
            .join(" ");
        let (tokens, tags): (Vec<String>, Vec<String>) = pairs.into_iter().unzip();
        out.push(
            line,
            text,
            serde_json::json!({"tokens": tokens, "tags": tags}),
        );
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_describe_the_shape() {
        assert_eq!(signature("1,234"), "<unk-num>");
        assert_eq!(signature("--"), "<unk-punct>");
        assert_eq!(signature("Walking"), "<unk-Cap-ing>");
        assert_eq!(signature("NASA"), "<unk-CAPS>");
        assert_eq!(signature("quickly"), "<unk-low-ly>");
        assert_eq!(signature("well-known"), "<unk-low-hyph>");
        assert_eq!(signature("B52"), "<unk-CAPS-dig>");
    }

    #[test]
    fn unknown_words_fall_back_to_signatures_then_unk() {
        let vocab =
            Vocab::build(["the", "the", "<unk-low-ing>", "<unk-low-ing>"], 2, None).unwrap();
        let ids = encode_words(&vocab, &["the".into(), "jumping".into(), "Zebra".into()]);
        assert_eq!(ids[0], vocab.id("the"));
        assert_eq!(ids[1], vocab.id("<unk-low-ing>"));
        assert_eq!(ids[2], 1);
    }

    #[test]
    fn entity_tags_get_a_scheme_and_a_mask_pos_tags_neither() {
        let names = |v: &[&str]| v.iter().map(|t| t.to_string()).collect::<Vec<_>>();
        let ner = names(&["B-LOC", "B-PER", "I-LOC", "I-PER", "O"]);
        let d = Decoding::new(&ner, true).unwrap();
        assert_eq!(d.scheme, Some(TagScheme::Bio));
        let mask = d.mask.as_ref().unwrap();
        assert!(!mask.allows_start(2) && !mask.allows(4, 3) && !mask.allows(0, 3));
        assert!(mask.allows(0, 2) && mask.allows(3, 3) && mask.allows_end(3));
        assert_eq!(d.names(&[1, 3, 4]), ["B-PER", "I-PER", "O"]);
        let free = Decoding::new(&ner, false).unwrap();
        assert!(free.scheme.is_some() && free.mask.is_none());
        let pos = Decoding::new(&names(&["DET", "NOUN", "VERB"]), true).unwrap();
        assert!(pos.scheme.is_none() && pos.mask.is_none());
    }

    #[test]
    fn format_detection() {
        let dir = tempfile::tempdir().unwrap();
        let u = dir.path().join("a.txt");
        std::fs::write(&u, "# c\n1\tI\tI\tPRON\tPRP\t_\t0\troot\t_\t_\n").unwrap();
        assert!(is_conllu(&u).unwrap());
        let c = dir.path().join("b.txt");
        std::fs::write(&c, "I PRP\nran VBD\n").unwrap();
        assert!(!is_conllu(&c).unwrap());
        let e = read_tagged(&c, Some("xpos"), TextEncoding::UTF8)
            .unwrap_err()
            .to_string();
        assert!(e.contains("--tag-column"), "{e}");
        let e = read_tagged(&u, Some("colour"), TextEncoding::UTF8)
            .unwrap_err()
            .to_string();
        assert!(e.contains("--tag-column") && e.contains("colour"), "{e}");
    }

    use crate::tasks::parts::checks::assert_parts_sum_to_whole;
    use rand::{Rng, SeedableRng};

    /// `n` sentences of 1 to 12 tokens of a 20-word vocabulary, 4 tags.
    fn examples(n: usize, seed: u64) -> Vec<Example> {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        (0..n)
            .map(|_| {
                let len = rng.random_range(1..=12);
                Example {
                    ids: (0..len).map(|_| rng.random_range(1..20)).collect(),
                    tags: (0..len).map(|_| rng.random_range(0..4)).collect(),
                }
            })
            .collect()
    }

    /// A task on `train` with a bidirectional tagger, without dropout.
    fn task(train: TrainData<Example>) -> (TagTask, Vec<candle_core::Var>) {
        let cfg = SequenceTaggerConfig::new(
            Input::tokens_with_padding(20, 6, 0),
            rnn_core::Mode::Gru,
            5,
            4,
        )
        .with_bidirectional(true);
        let varmap = VarMap::new();
        let vb = rnn_core::init::seeded_var_builder(&varmap, 5, DType::F32, &Device::Cpu);
        let model = SequenceTagger::new(&cfg, vb).unwrap();
        let tags: Vec<String> = ["A", "B", "C", "D"].map(String::from).to_vec();
        let task = TagTask {
            model,
            decoding: Decoding::new(&tags, false).unwrap(),
            train,
            valid: Vec::new(),
            batch_size: 7,
            device: Device::Cpu,
            saved: SavedConfig {
                task: "tag".into(),
                model: cfg,
                tags,
                tag_column: None,
                encoding: None,
                valid: None,
                test: None,
                constrained: false,
                max_len: None,
            },
            vocab_json: Vec::new(),
        };
        (task, varmap.all_vars())
    }

    /// Units are real tokens: the parts' token-weighted losses and gradients sum to the
    /// batch's, padding excluded.
    #[test]
    fn parts_of_a_batch_sum_to_the_whole_batch() {
        let data = examples(30, 1);
        let lengths = lengths(&data);
        let (mut task, vars) = task(TrainData::Held {
            examples: data,
            lengths,
        });
        let batch = task
            .train_batches(0, 4)
            .unwrap()
            .into_iter()
            .find(|b| matches!(b, TrainBatch::Rows(r) if r.len() == 7))
            .unwrap();
        assert_parts_sum_to_whole(&mut task, &batch, 7, &vars, &[2, 3, 9]);
    }

    #[test]
    fn streamed_sentences_are_chunked_and_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("train.conll");
        let text: String = (0..20)
            .map(|i| {
                let words: String = (0..=i % 6).map(|k| format!("w{k} T{}\n", k % 2)).collect();
                format!("{words}\n")
            })
            .collect();
        std::fs::write(&path, text).unwrap();
        let vocab = Vocab::build(["w1", "w1", "w2", "w2"], 1, None).unwrap();
        let tags: Vec<String> = vec!["T0".into(), "T1".into()];
        // Sentences of 1 to 6 tokens in chunks of at most 4: 20 sentences, 26 chunks.
        let open = sentence_stream(path, None, Rc::new(vocab), &tags, Some(4));
        let (mut task, vars) = task(TrainData::Streamed(Box::new(StreamedBatches::new(
            open, 26, 5, 7,
        ))));
        let batches = task.train_batches(0, 2).unwrap();
        assert_eq!(batches.len(), 4);
        let mut tokens = 0;
        for b in &batches {
            let rows = task.train.part(b, Part::WHOLE).unwrap();
            assert!(rows
                .iter()
                .all(|e| e.ids.len() <= 4 && e.ids.len() == e.tags.len()));
            tokens += rows.iter().map(|e| e.ids.len()).sum::<usize>();
        }
        assert_eq!(tokens, (0..20).map(|i| i % 6 + 1).sum::<usize>());
        let TrainData::Streamed(s) = &task.train else {
            unreachable!()
        };
        assert_eq!(
            s.peak(),
            5,
            "the buffer held at most --shuffle-buffer chunks"
        );
        let b = batches[1].clone();
        assert_parts_sum_to_whole(&mut task, &b, 7, &vars, &[2, 3, 8]);
    }
}
