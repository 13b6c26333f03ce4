//! Text to token ids and back for the language models, at every level (`--level`): the codec
//! built on the training text, the training/validation split of the text, and the built-in text
//! used without `--data`.

use anyhow::{bail, Context, Result};
use rand::{Rng, SeedableRng};
use rnn_train::data::{tokenize, BpeConfig, Granularity, SubwordTokenizer, Vocab, EOS, UNK};
use serde::{Deserialize, Serialize};

use crate::run::CheckpointRun;

/// The token level of a language model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    /// Characters.
    Char,
    /// Whitespace-separated words with `<eos>` at line ends.
    Word,
    /// Byte-level BPE pieces.
    Subword,
}

impl Level {
    /// Parses `--level`.
    pub fn parse(s: &str) -> Result<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "char" | "character" => Ok(Level::Char),
            "word" => Ok(Level::Word),
            "subword" | "bpe" => Ok(Level::Subword),
            other => bail!("--level must be char, word or subword, got '{other}'"),
        }
    }

    /// The name on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            Level::Char => "char",
            Level::Word => "word",
            Level::Subword => "subword",
        }
    }

    /// What one token is called in reports (`char`, `word`, `token`).
    pub(super) fn unit(self) -> &'static str {
        match self {
            Level::Char => "char",
            Level::Word => "word",
            Level::Subword => "token",
        }
    }
}

/// Text to ids and back, for any level.
#[derive(Debug, Clone)]
pub enum Codec {
    /// Character or word vocabulary.
    Vocab {
        /// `Char` or `Word`.
        level: Level,
        /// The vocabulary (specials first).
        vocab: Vocab,
    },
    /// A byte-level BPE tokenizer.
    Subword(Box<SubwordTokenizer>),
}

/// The tokens of `text` at a vocabulary level (char or word).
fn text_tokens(text: &str, level: Level) -> Vec<String> {
    match level {
        Level::Word => tokenize(text, Granularity::Word),
        _ => tokenize(text, Granularity::Char),
    }
}

/// How many of `n` items the last `fraction` is: rounded, at least one item on each side when
/// `n >= 2`.
pub(super) fn tail_len(n: usize, fraction: f64) -> usize {
    ((n as f64 * fraction).round() as usize).clamp(1.min(n), n.saturating_sub(1).max(1.min(n)))
}

/// Splits off the last `fraction` of `items` (at least one item on each side when possible).
fn split_tail<T>(mut items: Vec<T>, fraction: f64) -> (Vec<T>, Vec<T>) {
    let n = items.len();
    let tail = items.split_off(n - tail_len(n, fraction));
    (items, tail)
}

/// The fraction of the tokens before the test part that the validation part takes, when the
/// test part is the last `split` of the text: `split / (1 - split)` (as large a piece as the test
/// part), or `split` when the validation part is a file of its own (unused then). An error when
/// the two parts would not leave a training part.
pub(super) fn valid_fraction(split: f64, valid_file: bool) -> Result<f64> {
    let fraction = if valid_file {
        split
    } else {
        split / (1.0 - split)
    };
    if fraction >= 1.0 {
        bail!("--split {split}: too large to hold out a validation and a test part of that size each; give --split below 0.5, or --valid/--test FILE");
    }
    Ok(fraction)
}

/// [`split_text`] moves its cut to the start of the next line when that line starts within this
/// many bytes (and is not the text's last character).
pub(super) const LINE_START_REACH: usize = 200;

/// Splits `text` before its last `fraction` of characters, at the start of a line when one is
/// near (for subword tokenisation, which needs text rather than tokens).
pub(super) fn split_text(text: &str, fraction: f64) -> (String, String) {
    let chars: Vec<char> = text.chars().collect();
    let (head, _) = split_tail(chars, fraction);
    let mut cut: usize = head.iter().map(|c| c.len_utf8()).sum();
    if let Some(nl) = text[cut..].find('\n') {
        if nl < LINE_START_REACH && cut + nl + 1 < text.len() {
            cut += nl + 1;
        }
    }
    (text[..cut].to_string(), text[cut..].to_string())
}

impl Codec {
    /// The level.
    pub fn level(&self) -> Level {
        match self {
            Codec::Vocab { level, .. } => *level,
            Codec::Subword(_) => Level::Subword,
        }
    }

    /// Number of ids.
    pub fn vocab_size(&self) -> usize {
        match self {
            Codec::Vocab { vocab, .. } => vocab.len(),
            Codec::Subword(t) => t.vocab_size(),
        }
    }

    /// The ids of a text stream (word level: `<eos>` after every non-empty line).
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        match self {
            Codec::Vocab { level, vocab } => {
                let tokens = text_tokens(text, *level);
                Ok(vocab.encode(tokens.iter().map(String::as_str)))
            }
            Codec::Subword(t) => Ok(t.encode(text)?),
        }
    }

    /// The ids of a prompt: as [`Codec::encode`] but without the `<eos>` a word-level line gets.
    pub fn encode_prompt(&self, text: &str) -> Result<Vec<u32>> {
        match self {
            Codec::Vocab {
                level: Level::Word,
                vocab,
            } => Ok(vocab.encode(text.split_whitespace())),
            other => other.encode(text),
        }
    }

    /// The context a line starts from: what ends the previous line (`<eos>` or a newline).
    pub fn line_start(&self) -> Result<Vec<u32>> {
        match self {
            Codec::Vocab {
                level: Level::Word,
                vocab,
            } => Ok(vec![vocab.id(EOS)]),
            other => other.encode("\n"),
        }
    }

    /// The text of `ids` (char: concatenated; word: space-joined, `<eos>` as a line break;
    /// subword: the tokenizer's decoding).
    pub fn decode(&self, ids: &[u32]) -> Result<String> {
        match self {
            Codec::Vocab {
                level: Level::Word,
                vocab,
            } => {
                let mut out = String::new();
                for &id in ids {
                    let t = vocab.token(id);
                    if t == EOS {
                        out.push('\n');
                    } else {
                        if !(out.is_empty() || out.ends_with('\n')) {
                            out.push(' ');
                        }
                        out.push_str(t);
                    }
                }
                Ok(out)
            }
            Codec::Vocab { vocab, .. } => Ok(ids
                .iter()
                .filter_map(|&id| match (id, vocab.token(id)) {
                    (1, _) => Some("\u{fffd}"),
                    (0 | 2 | 3, _) => None,
                    (_, t) => Some(t),
                })
                .collect()),
            Codec::Subword(t) => Ok(t.decode(ids)?),
        }
    }

    /// One token as text, for listing predictions.
    pub fn token_text(&self, id: u32) -> String {
        match self {
            Codec::Vocab { vocab, .. } => vocab.token(id).to_string(),
            Codec::Subword(t) => t.decode(&[id]).unwrap_or_else(|_| UNK.to_string()),
        }
    }

    /// The checkpoint file holding the codec: (`vocab.json` or `tokenizer.json`, bytes).
    pub fn file(&self) -> Result<(String, Vec<u8>)> {
        match self {
            Codec::Vocab { vocab, .. } => Ok(("vocab.json".into(), serde_json::to_vec(vocab)?)),
            Codec::Subword(t) => {
                let json = t
                    .inner()
                    .to_string(true)
                    .map_err(|e| anyhow::anyhow!("serialising the subword tokenizer: {e}"))?;
                Ok(("tokenizer.json".into(), json.into_bytes()))
            }
        }
    }

    /// Rebuilds the codec of a checkpoint.
    pub fn from_checkpoint(run: &CheckpointRun, level: Level) -> Result<Self> {
        match level {
            Level::Subword => {
                let path = run.loaded.path("tokenizer.json");
                Ok(Codec::Subword(Box::new(
                    SubwordTokenizer::from_file(&path)
                        .with_context(|| format!("checkpoint {}", run.dir.display()))?,
                )))
            }
            level => {
                let vocab = run.vocab("vocab.json")?;
                Ok(Codec::Vocab { level, vocab })
            }
        }
    }
}

/// Training text, validation text or split, for one level: builds the codec on the training
/// part only and encodes both parts. `vocab_size`: word maximum / subword size.
pub fn prepare(
    level: Level,
    train_text: &str,
    valid_text: Option<&str>,
    split: f64,
    vocab_size: Option<usize>,
) -> Result<(Codec, Vec<u32>, Vec<u32>)> {
    match level {
        Level::Subword => {
            let (train, valid) = match valid_text {
                Some(v) => (train_text.to_string(), v.to_string()),
                None => split_text(train_text, split),
            };
            let cfg = BpeConfig {
                vocab_size: vocab_size.unwrap_or(2000),
                ..Default::default()
            };
            let tok = SubwordTokenizer::train(train.split_inclusive('\n'), &cfg)
                .context("--vocab-size")?;
            let codec = Codec::Subword(Box::new(tok));
            let (t, v) = (codec.encode(&train)?, codec.encode(&valid)?);
            Ok((codec, t, v))
        }
        level => {
            let tokens = text_tokens(train_text, level);
            let (train, valid) = match valid_text {
                Some(v) => (tokens, text_tokens(v, level)),
                None => split_tail(tokens, split),
            };
            let max = match level {
                Level::Word => vocab_size,
                _ => None,
            };
            let vocab =
                Vocab::build(train.iter().map(String::as_str), 1, max).context("--vocab-size")?;
            let t = vocab.encode(train.iter().map(String::as_str));
            let v = vocab.encode(valid.iter().map(String::as_str));
            Ok((Codec::Vocab { level, vocab }, t, v))
        }
    }
}

/// The held-out tail of `text` as [`prepare`] splits it, encoded with `codec`.
pub(super) fn held_out_ids(codec: &Codec, text: &str, split: f64) -> Result<Vec<u32>> {
    match codec {
        Codec::Subword(_) => codec.encode(&split_text(text, split).1),
        Codec::Vocab { level, vocab } => {
            let (_, valid) = split_tail(text_tokens(text, *level), split);
            Ok(vocab.encode(valid.iter().map(String::as_str)))
        }
    }
}

/// A small generated English-like text (about 70 kB, seeded, the same on every machine), used
/// when no `--data` is given.
pub fn builtin_text() -> String {
    const SUBJECTS: [&str; 10] = [
        "the cat",
        "a dog",
        "the old man",
        "my sister",
        "the king",
        "a small bird",
        "the queen",
        "our teacher",
        "the farmer",
        "a young girl",
    ];
    const VERBS: [&str; 8] = [
        "sees",
        "likes",
        "follows",
        "finds",
        "calls",
        "watches",
        "helps",
        "remembers",
    ];
    const OBJECTS: [&str; 10] = [
        "the moon",
        "a red ball",
        "the river",
        "his friend",
        "the small house",
        "an apple",
        "the green hill",
        "her brother",
        "the market",
        "a letter",
    ];
    const ENDINGS: [&str; 5] = [".", " today.", " again.", " in the morning.", " at night."];
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
    let mut text = String::new();
    for _ in 0..2000 {
        let s = SUBJECTS[rng.random_range(0..SUBJECTS.len())];
        let v = VERBS[rng.random_range(0..VERBS.len())];
        let o = OBJECTS[rng.random_range(0..OBJECTS.len())];
        let e = ENDINGS[rng.random_range(0..ENDINGS.len())];
        text.push_str(&format!("{s} {v} {o}{e}\n"));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_keeps_both_sides_and_the_tail() {
        let (a, b) = split_tail((0..10).collect::<Vec<_>>(), 0.1);
        assert_eq!((a.len(), b), (9, vec![9]));
        let (a, b) = split_tail(vec![1, 2], 0.01);
        assert_eq!((a, b), (vec![1], vec![2]));
        let (a, b) = split_text("ab\ncd\nef\n", 0.4);
        assert_eq!(format!("{a}{b}"), "ab\ncd\nef\n");
        assert!(!b.is_empty() && !a.is_empty());
    }

    #[test]
    fn word_level_maps_literal_unk_and_adds_eos() {
        let (codec, train, valid) =
            prepare(Level::Word, "a b <unk>\na c\n", Some("a zz\n"), 0.1, None).unwrap();
        let Codec::Vocab { vocab, .. } = &codec else {
            panic!("vocab codec expected")
        };
        assert_eq!(train[2], 1, "<unk> is the unknown id");
        assert_eq!(train[3], vocab.id(EOS));
        assert_eq!(valid, vec![vocab.id("a"), 1, 3]);
        assert_eq!(codec.decode(&train).unwrap(), "a b <unk>\na c\n");
    }

    #[test]
    fn char_level_round_trips_and_unknown_chars_are_unk() {
        let (codec, train, valid) =
            prepare(Level::Char, "hello\nworld\n", None, 0.25, None).unwrap();
        assert_eq!(train.len() + valid.len(), 12);
        assert_eq!(codec.decode(&train).unwrap(), "hello\nwor");
        assert_eq!(codec.encode("z").unwrap(), vec![1]);
        assert!(Level::parse("bogus")
            .unwrap_err()
            .to_string()
            .contains("--level"));
    }
}
