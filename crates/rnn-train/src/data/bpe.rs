//! Subword (byte-pair encoding) tokenisation through the Hugging Face `tokenizers` crate.
//!
//! [`SubwordTokenizer::train`] learns a **byte-level** BPE: the text is split GPT-2 style
//! (`ByteLevel` pre-tokenizer, no added prefix space) and every byte is mapped to one of 256
//! printable symbols, all of which are in the vocabulary. So any text encodes without `<unk>`,
//! and [`SubwordTokenizer::decode`] (a `ByteLevel` decoder) gives back exactly the encoded text:
//! punctuation, accents, emoji, tabs, newlines and runs of spaces included. The price is a
//! minimum vocabulary of [`SubwordTokenizer::MIN_VOCAB_SIZE`] (4 specials + 256 byte symbols).
//!
//! The special tokens `<pad> <unk> <bos> <eos>` have ids 0-3, as in [`Vocab`](super::Vocab), and
//! are registered as special tokens: a literal `<eos>` in the text encodes to id 3, and decoding
//! drops them.

use super::vocab::{BOS, EOS, PAD, UNK};
use crate::{Error, Result};
use serde::{Deserialize, Serialize};
use std::io::Write;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use tokenizers::models::bpe::{BpeTrainer, BPE};
use tokenizers::models::TrainerWrapper;
use tokenizers::normalizers::Lowercase;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::{AddedToken, Tokenizer};

/// The special tokens in id order (`<pad>`=0, `<unk>`=1, `<bos>`=2, `<eos>`=3).
const SPECIALS: [&str; 4] = [PAD, UNK, BOS, EOS];

/// Options for training a [`SubwordTokenizer`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct BpeConfig {
    /// Largest vocabulary, special tokens and the 256 byte symbols included; at least
    /// [`SubwordTokenizer::MIN_VOCAB_SIZE`]. Training stops earlier when no pair is frequent
    /// enough.
    pub vocab_size: usize,
    /// A pair of symbols is merged only if it occurs at least this often.
    pub min_frequency: u64,
    /// Lowercase the text (a normaliser saved with the tokenizer) before training and encoding.
    pub lowercase: bool,
}

impl Default for BpeConfig {
    fn default() -> Self {
        Self {
            vocab_size: 8000,
            min_frequency: 2,
            lowercase: false,
        }
    }
}

/// A subword (BPE) tokenizer whose special tokens `<pad> <unk> <bos> <eos>` have ids 0-3.
#[derive(Debug, Clone)]
pub struct SubwordTokenizer {
    inner: Tokenizer,
}

impl SubwordTokenizer {
    /// The smallest `vocab_size` [`train`](Self::train) accepts: the 4 special tokens plus the 256
    /// byte symbols of byte-level BPE.
    pub const MIN_VOCAB_SIZE: usize = SPECIALS.len() + 256;

    /// Trains a byte-level BPE on `texts` (lines or whole documents; pass the training split
    /// only). Deterministic: the same texts and options always give the same vocabulary.
    ///
    /// Errors if `cfg.vocab_size` is below [`MIN_VOCAB_SIZE`](Self::MIN_VOCAB_SIZE) or if all the
    /// texts are empty.
    pub fn train<I>(texts: I, cfg: &BpeConfig) -> Result<Self>
    where
        I: IntoIterator,
        I::Item: AsRef<str> + Send,
        I::IntoIter: Send,
    {
        if cfg.vocab_size < Self::MIN_VOCAB_SIZE {
            return Err(Error::Invalid(format!(
                "subword vocab_size must be at least {} (the 4 special tokens {} plus the 256 \
                 byte symbols of byte-level BPE), got {}",
                Self::MIN_VOCAB_SIZE,
                SPECIALS.join(" "),
                cfg.vocab_size
            )));
        }
        let bpe = BPE::builder()
            .unk_token(UNK.to_string())
            .build()
            .map_err(|e| Error::Invalid(format!("subword tokenizer: building BPE model: {e}")))?;
        let mut tok = Tokenizer::new(bpe);
        if cfg.lowercase {
            tok.with_normalizer(Some(Lowercase)).map_err(|e| {
                Error::Invalid(format!("subword tokenizer: setting the normaliser: {e}"))
            })?;
        }
        tok.with_pre_tokenizer(Some(byte_level()));
        tok.with_decoder(Some(byte_level()));

        let trainer = BpeTrainer::builder()
            .show_progress(false)
            .vocab_size(cfg.vocab_size)
            .min_frequency(cfg.min_frequency)
            .special_tokens(
                SPECIALS
                    .iter()
                    .map(|s| AddedToken::from(*s, true))
                    .collect(),
            )
            .initial_alphabet(ByteLevel::alphabet().into_iter().collect())
            .build();
        let mut trainer = TrainerWrapper::from(trainer);
        let seen_text = AtomicBool::new(false);
        let texts = texts.into_iter().inspect(|t| {
            if !t.as_ref().trim().is_empty() {
                seen_text.store(true, Ordering::Relaxed);
            }
        });
        tok.train(&mut trainer, texts)
            .map_err(|e| Error::Invalid(format!("subword tokenizer: training BPE failed: {e}")))?;
        if !seen_text.load(Ordering::Relaxed) {
            return Err(Error::Invalid(
                "subword tokenizer: no training text (all texts are empty)".into(),
            ));
        }
        check_specials(&tok).map_err(|m| Error::Invalid(format!("subword tokenizer: {m}")))?;
        Ok(Self { inner: tok })
    }

    /// Loads a Hugging Face `tokenizer.json` (any model: BPE, WordPiece, Unigram, ...).
    ///
    /// The four special tokens must already be in it with ids `<pad>`=0 `<unk>`=1 `<bos>`=2
    /// `<eos>`=3; they are **not** added, since added tokens would get other ids. Otherwise the
    /// error names the file and the missing (or misplaced) tokens. Tokens present with the right
    /// ids but not flagged special are registered as special. Padding and truncation settings in
    /// the file are switched off, so [`encode`](Self::encode) returns every token of its input.
    /// Errors name the file (and for bad JSON the line).
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let bytes = std::fs::read(path).map_err(|source| Error::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Self::from_bytes(path, &bytes)
    }

    /// [`from_file`](Self::from_file) of a `tokenizer.json`'s bytes already in memory; `path`
    /// only names the file in errors.
    pub fn from_bytes(path: impl AsRef<Path>, bytes: &[u8]) -> Result<Self> {
        let path = path.as_ref();
        // tokenizers 0.23 panics (instead of erroring) on some malformed components, e.g. a
        // `decoder` object it cannot deserialise (found by fuzzing): turn that into an error too.
        let parsed =
            std::panic::catch_unwind(|| Tokenizer::from_bytes(bytes)).map_err(|panic| {
                let what = panic
                    .downcast_ref::<String>()
                    .map(String::as_str)
                    .or_else(|| panic.downcast_ref::<&str>().copied())
                    .unwrap_or("unknown error");
                Error::file(
                    path,
                    format!(
                        "not a valid tokenizer.json: the tokenizers library failed on it: {what}"
                    ),
                )
            })?;
        let mut tok = parsed.map_err(|e| {
            let message = format!("not a valid tokenizer.json: {e}");
            match e.downcast_ref::<serde_json::Error>() {
                Some(je) if je.line() > 0 => Error::parse(path, je.line(), message),
                _ => Error::file(path, message),
            }
        })?;
        check_specials(&tok).map_err(|m| Error::file(path, m))?;
        let decoder = tok.get_added_tokens_decoder();
        let not_special: Vec<AddedToken> = SPECIALS
            .iter()
            .enumerate()
            .filter(|(id, _)| !decoder.get(&(*id as u32)).is_some_and(|t| t.special))
            .map(|(_, s)| AddedToken::from(*s, true))
            .collect();
        if !not_special.is_empty() {
            tok.add_special_tokens(not_special)
                .map_err(|e| Error::file(path, format!("registering the special tokens: {e}")))?;
            check_specials(&tok).map_err(|m| Error::file(path, m))?;
        }
        tok.with_truncation(None)
            .map_err(|e| Error::file(path, format!("switching truncation off: {e}")))?;
        tok.with_padding(None);
        Ok(Self { inner: tok })
    }

    /// Writes the tokenizer as a (pretty-printed) Hugging Face `tokenizer.json`, atomically: to a
    /// temporary file in the same folder, then renamed over `path`.
    pub fn save(&self, path: impl AsRef<Path>) -> Result<()> {
        let path = path.as_ref();
        let json = self
            .inner
            .to_string(true)
            .map_err(|e| Error::file(path, format!("serialising the tokenizer: {e}")))?;
        write_atomically(path, json.as_bytes())
    }

    /// The ids of `text`, without added special tokens (a literal special token in the text
    /// still maps to its id).
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        let enc = self
            .inner
            .encode(text, false)
            .map_err(|e| Error::Invalid(format!("subword tokenizer: encoding text failed: {e}")))?;
        Ok(enc.get_ids().to_vec())
    }

    /// The text of `ids`, leaving out special tokens. Errors on an id outside the vocabulary.
    pub fn decode(&self, ids: &[u32]) -> Result<String> {
        if let Some(bad) = ids.iter().find(|&&id| self.inner.id_to_token(id).is_none()) {
            return Err(Error::Invalid(format!(
                "subword tokenizer: cannot decode id {bad}: not in the vocabulary of {} tokens",
                self.vocab_size()
            )));
        }
        self.inner
            .decode(ids, true)
            .map_err(|e| Error::Invalid(format!("subword tokenizer: decoding ids failed: {e}")))
    }

    /// Number of tokens, special tokens included.
    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    /// The id of a vocabulary entry (for byte-level BPE in its byte-symbol spelling, e.g. `Ġthe`
    /// for " the").
    pub fn token_to_id(&self, token: &str) -> Option<u32> {
        self.inner.token_to_id(token)
    }

    /// The vocabulary entry of `id` (for byte-level BPE in its byte-symbol spelling).
    pub fn id_to_token(&self, id: u32) -> Option<String> {
        self.inner.id_to_token(id)
    }

    /// Id of `<pad>` (0).
    pub fn pad_id(&self) -> u32 {
        0
    }

    /// Id of `<unk>` (1).
    pub fn unk_id(&self) -> u32 {
        1
    }

    /// Id of `<bos>` (2).
    pub fn bos_id(&self) -> u32 {
        2
    }

    /// Id of `<eos>` (3).
    pub fn eos_id(&self) -> u32 {
        3
    }

    /// The underlying Hugging Face tokenizer.
    pub fn inner(&self) -> &tokenizers::Tokenizer {
        &self.inner
    }
}

/// The byte-level pre-tokenizer/decoder: no prefix space, so decoding reproduces the text.
fn byte_level() -> ByteLevel {
    ByteLevel::default()
        .add_prefix_space(false)
        .trim_offsets(false)
}

/// Checks that the four special tokens exist with ids 0-3; the message lists what is wrong.
fn check_specials(tok: &Tokenizer) -> std::result::Result<(), String> {
    let mut missing = Vec::new();
    let mut misplaced = Vec::new();
    for (want, name) in SPECIALS.iter().enumerate() {
        match tok.token_to_id(name) {
            None => missing.push(*name),
            Some(id) if id as usize != want => misplaced.push(format!("{name} has id {id}")),
            Some(_) => {}
        }
    }
    if missing.is_empty() && misplaced.is_empty() {
        return Ok(());
    }
    let mut problems = Vec::new();
    if !missing.is_empty() {
        problems.push(format!("lacks the special tokens {}", missing.join(" ")));
    }
    if !misplaced.is_empty() {
        problems.push(misplaced.join(", "));
    }
    Err(format!(
        "tokenizer {}; the special tokens must be <pad>=0 <unk>=1 <bos>=2 <eos>=3",
        problems.join("; ")
    ))
}

/// Writes `bytes` to a temporary file next to `path`, syncs it and renames it to `path`.
fn write_atomically(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = super::temp_beside(path)?;
    let written = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&tmp)
        .and_then(|mut f| {
            f.write_all(bytes)?;
            f.sync_all()
        })
        .map_err(|e| {
            Error::file(
                path,
                format!("writing the temporary file {}: {e}", tmp.display()),
            )
        })
        .and_then(|()| {
            std::fs::rename(&tmp, path).map_err(|source| Error::Io {
                path: path.to_path_buf(),
                source,
            })
        });
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written
}

#[cfg(test)]
mod tests {
    use super::super::testutil::write_file;
    use super::*;

    /// A deterministic corpus of ~400 short sentences over a small word list.
    fn corpus() -> Vec<String> {
        let words = [
            "the", "cat", "sat", "on", "mat", "dog", "ran", "to", "a", "house", "and", "big",
            "small", "red", "tree", "bird", "sang", "in",
        ];
        let mut state: u64 = 42;
        let mut next = |n: usize| {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (state >> 33) as usize % n
        };
        (0..400)
            .map(|_| {
                let len = 3 + next(6);
                let mut s: Vec<&str> = (0..len).map(|_| words[next(words.len())]).collect();
                s.insert(0, "the");
                let end = [".", "!", "?", ","][next(4)];
                format!("{}{end}", s.join(" "))
            })
            .collect()
    }

    fn cfg(vocab_size: usize) -> BpeConfig {
        BpeConfig {
            vocab_size,
            ..BpeConfig::default()
        }
    }

    fn trained() -> SubwordTokenizer {
        let lines = corpus();
        SubwordTokenizer::train(lines.iter().map(String::as_str), &cfg(320)).unwrap()
    }

    #[test]
    fn trains_with_specials_first_and_a_bounded_vocab() {
        let tok = trained();
        for (id, name) in SPECIALS.iter().enumerate() {
            assert_eq!(tok.token_to_id(name), Some(id as u32), "{name}");
            assert_eq!(tok.id_to_token(id as u32).as_deref(), Some(*name));
        }
        assert_eq!(
            [tok.pad_id(), tok.unk_id(), tok.bos_id(), tok.eos_id()],
            [0, 1, 2, 3]
        );
        assert!(tok.vocab_size() <= 320, "{}", tok.vocab_size());
        assert!(tok.vocab_size() > SubwordTokenizer::MIN_VOCAB_SIZE);
        // Frequent words (with their leading space, byte-level style) are single tokens.
        for w in [" cat", " the", " house", "the"] {
            assert_eq!(tok.encode(w).unwrap().len(), 1, "{w:?}");
        }
        assert!(tok.token_to_id("Ġhouse").is_some());
        // Specials are registered as special tokens.
        let added = tok.inner().get_added_tokens_decoder();
        assert!((0..4).all(|id| added.get(&id).is_some_and(|t| t.special)));
    }

    #[test]
    fn round_trip_is_exact_and_unseen_text_has_no_unk() {
        let tok = trained();
        for text in [
            "the cat sat on the mat.",
            "Hello,  world!!  (café naïve)\ttabs\n\n   many    spaces  ",
            "zyxwvut qqq 日本語 🙂 «quotes» — 3.14159",
            "",
        ] {
            let ids = tok.encode(text).unwrap();
            assert!(!ids.contains(&tok.unk_id()), "{text:?}: {ids:?}");
            assert_eq!(tok.decode(&ids).unwrap(), text);
        }
        // Decoding drops special tokens; a literal special in the text maps to its id.
        let mut ids = vec![tok.bos_id()];
        ids.extend(tok.encode("the cat").unwrap());
        ids.push(tok.eos_id());
        assert_eq!(tok.decode(&ids).unwrap(), "the cat");
        assert_eq!(tok.encode("a<eos>").unwrap().last(), Some(&3));
        let err = tok.decode(&[1_000_000]).unwrap_err().to_string();
        assert!(err.contains("1000000"), "{err}");
    }

    #[test]
    fn lowercase_option_normalises() {
        let lines = corpus();
        let c = BpeConfig {
            lowercase: true,
            ..cfg(300)
        };
        let tok = SubwordTokenizer::train(&lines, &c).unwrap();
        let ids = tok.encode("The CAT Sat").unwrap();
        assert_eq!(tok.decode(&ids).unwrap(), "the cat sat");
        assert_eq!(ids, tok.encode("the cat sat").unwrap());
    }

    #[test]
    fn save_and_load_round_trip_and_training_is_deterministic() {
        let tok = trained();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tokenizer.json");
        tok.save(&path).unwrap();
        // Overwriting works and leaves no temporary files behind.
        tok.save(&path).unwrap();
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["tokenizer.json"]);
        let back = SubwordTokenizer::from_file(&path).unwrap();
        assert_eq!(back.vocab_size(), tok.vocab_size());
        for text in ["the big red tree sang.", "unseen wörds,  here\n", "<bos>x"] {
            assert_eq!(back.encode(text).unwrap(), tok.encode(text).unwrap());
            let ids = back.encode(text).unwrap();
            assert_eq!(back.decode(&ids).unwrap(), tok.decode(&ids).unwrap());
        }
        let again = trained();
        assert_eq!(again.inner().get_vocab(true), tok.inner().get_vocab(true));
        assert_eq!(
            again.inner().to_string(false).unwrap(),
            tok.inner().to_string(false).unwrap()
        );
        let text = "the small dog ran to a house!";
        assert_eq!(again.encode(text).unwrap(), tok.encode(text).unwrap());
    }

    #[test]
    fn file_errors_name_the_file() {
        let err = SubwordTokenizer::from_file("/nonexistent/tok.json")
            .unwrap_err()
            .to_string();
        assert!(err.contains("/nonexistent/tok.json"), "{err}");

        let (_d, p) = write_file("bad.json", b"{\n  \"version\": \"1.0\",\n  oops\n}\n");
        let err = SubwordTokenizer::from_file(&p).unwrap_err().to_string();
        assert!(
            err.contains("bad.json:3:") && err.contains("tokenizer.json"),
            "{err}"
        );

        let (_d, p) = write_file("notok.json", b"{\"a\": 1}");
        let err = SubwordTokenizer::from_file(&p).unwrap_err().to_string();
        assert!(err.contains("notok.json"), "{err}");

        let err = trained()
            .save("/nonexistent/dir/tokenizer.json")
            .unwrap_err()
            .to_string();
        assert!(err.contains("/nonexistent/dir/tokenizer.json:"), "{err}");
    }

    #[test]
    fn loading_requires_the_special_tokens_at_ids_0_to_3() {
        // A tokenizer with only <pad> and <unk> in its vocabulary.
        let vocab: tokenizers::models::bpe::Vocab =
            [("<pad>", 0), ("<unk>", 1), ("a", 2), ("b", 3)]
                .into_iter()
                .map(|(t, i)| (t.to_string(), i))
                .collect();
        let bpe = BPE::builder()
            .vocab_and_merges(vocab, vec![])
            .unk_token(UNK.into())
            .build()
            .unwrap();
        let mut tok = Tokenizer::new(bpe);
        let (_d, p) = write_file("partial.json", tok.to_string(false).unwrap().as_bytes());
        let err = SubwordTokenizer::from_file(&p).unwrap_err().to_string();
        assert!(
            err.contains("partial.json")
                && err.contains("lacks the special tokens <bos> <eos>")
                && !err.contains("<pad> <unk> <bos>"),
            "{err}"
        );
        // Added at the wrong ids (4 and 5): named as misplaced.
        tok.add_special_tokens([AddedToken::from(BOS, true), AddedToken::from(EOS, true)])
            .unwrap();
        let (_d, p) = write_file("misplaced.json", tok.to_string(false).unwrap().as_bytes());
        let err = SubwordTokenizer::from_file(&p).unwrap_err().to_string();
        assert!(err.contains("<bos> has id 4"), "{err}");
        // All four at ids 0-3 but none flagged special: accepted and registered as special.
        let vocab: tokenizers::models::bpe::Vocab = SPECIALS
            .iter()
            .chain(&["a", "b"])
            .enumerate()
            .map(|(i, t)| (t.to_string(), i as u32))
            .collect();
        let bpe = BPE::builder()
            .vocab_and_merges(vocab, vec![])
            .build()
            .unwrap();
        let plain = Tokenizer::new(bpe);
        let (_d, p) = write_file("plain.json", plain.to_string(false).unwrap().as_bytes());
        let tok = SubwordTokenizer::from_file(&p).unwrap();
        assert_eq!(tok.vocab_size(), 6);
        assert_eq!(tok.encode("<eos>").unwrap(), vec![3]);
        assert!(tok.decode(&[2, 3]).unwrap().is_empty());
    }

    #[test]
    fn rejects_bad_options_and_empty_text() {
        let err = SubwordTokenizer::train(["a b"], &cfg(3))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("at least 260") && err.contains("special") && err.contains("got 3"),
            "{err}"
        );
        assert!(SubwordTokenizer::train(["a b"], &cfg(259)).is_err());
        let err = SubwordTokenizer::train(["", "  "], &cfg(300))
            .unwrap_err()
            .to_string();
        assert!(err.contains("no training text"), "{err}");
        let c: BpeConfig = serde_json::from_str(r#"{"vocab_size": 500}"#).unwrap();
        assert_eq!(
            (c.vocab_size, c.min_frequency, c.lowercase),
            (500, 2, false)
        );
    }
}
