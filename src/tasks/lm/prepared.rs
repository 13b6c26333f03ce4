//! `rnn prepare`: a language-model corpus tokenised once into a token file
//! ([`rnn_train::data::TokenFile`]) that `rnn train char-lm|word-lm --data FILE` reads in place,
//! and the reading of such a file back into a run's data.
//!
//! The file holds what the in-memory path (`--data TEXT`) would compute: the same tokens (the
//! same tokenizer, fed block by block), the same parts (the test part is the last `--split` of
//! the text's characters, moved to the next line start within 200 bytes; the validation part
//! the last tokens before it, or `--valid FILE`), and the same vocabulary (counted on the
//! training part only, same order and limits). Training from it gives the same metrics and
//! weights as training from the text.
//!
//! The corpus is read several times instead of held in memory: (1) characters are counted,
//! (2) the test cut is located, (3) the tokens before it are counted, (4) the training part's
//! tokens are counted into the vocabulary, (5) the ids are written. Memory: the vocabulary's
//! counts plus a block of text. Passes 1 and 2 run only when the test part is held out of
//! `--data`; pass 3 only when the validation part is.

use std::collections::HashMap;
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use rnn_train::data::{
    stream_text, Granularity, TextEncoding, TokenFile, TokenFileInfo, TokenFileWriter, TokenPart,
    TokenStream, Vocab,
};
use serde::{Deserialize, Serialize};

use super::codec::{tail_len, valid_fraction, Level, LINE_START_REACH};
use super::Codec;

/// What `rnn prepare` is asked: the options of `rnn train char-lm|word-lm` that shape the data.
#[derive(Debug, Clone, PartialEq)]
pub struct PrepareRequest {
    /// `char-lm` or `word-lm`: the default level.
    pub task: String,
    /// The corpus.
    pub data: PathBuf,
    /// Validation text; `None`: held out of `data` before the test part.
    pub valid: Option<PathBuf>,
    /// Test text; `None`: the last `split` of `data`.
    pub test: Option<PathBuf>,
    /// Held-out fraction (default 0.1).
    pub split: Option<f64>,
    /// `char` or `word` (default: the task's).
    pub level: Option<String>,
    /// Word level: the vocabulary's maximum size, specials included.
    pub vocab_size: Option<usize>,
    /// The files' encoding (default UTF-8).
    pub encoding: Option<String>,
    /// The token file to write.
    pub out: PathBuf,
}

/// How a token file was made: its metadata, checked against the options of a run that trains
/// from it and recorded in the run's checkpoint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PreparedMeta {
    /// `char` or `word`.
    pub level: Level,
    /// The corpus it was made from.
    pub data: PathBuf,
    /// `--valid`, if given.
    pub valid: Option<PathBuf>,
    /// `--test`, if given.
    pub test: Option<PathBuf>,
    /// `--split`.
    pub split: f64,
    /// `--vocab-size`, if given.
    pub vocab_size: Option<usize>,
    /// The encoding's name when not UTF-8.
    pub encoding: Option<String>,
    /// Whether the test part was held out of `data` (else it is `test`).
    pub test_held_out: bool,
}

/// The token level of a task name and `--level`.
fn level_of(task: &str, level: Option<&str>) -> Result<Level> {
    let default = match task {
        "word-lm" => Level::Word,
        "char-lm" => Level::Char,
        other => bail!("rnn prepare: the task must be char-lm or word-lm, got '{other}'"),
    };
    let level = level.map(Level::parse).transpose()?.unwrap_or(default);
    if level == Level::Subword {
        bail!("--level subword: rnn prepare makes char and word token files only (byte-level BPE is trained on the whole text in memory); train on --data TEXT for subwords");
    }
    Ok(level)
}

fn granularity(level: Level) -> Granularity {
    match level {
        Level::Word => Granularity::Word,
        _ => Granularity::Char,
    }
}

/// The segment of the text a token comes from: before the test cut (0) or after it (1).
type Segment = usize;

/// Streams the tokens of `path` at `level`, tokenising the text before character `cut` and the
/// text after it separately (as the in-memory path tokenises its two strings): `f(segment,
/// token)` until the end or until `f` breaks.
fn scan(
    path: &Path,
    encoding: TextEncoding,
    level: Level,
    cut: Option<u64>,
    mut f: impl FnMut(Segment, &str) -> ControlFlow<()>,
) -> Result<()> {
    let mut stream = TokenStream::new(granularity(level));
    let (mut segment, mut chars, mut broke) = (0, 0u64, false);
    stream_text(path, encoding, |piece| {
        let mut piece = piece;
        if let (0, Some(cut)) = (segment, cut) {
            let n = piece.chars().count() as u64;
            if chars + n >= cut {
                let at = piece
                    .char_indices()
                    .nth((cut - chars) as usize)
                    .map_or(piece.len(), |(i, _)| i);
                if stream.feed(&piece[..at], &mut |t| f(0, t)).is_break()
                    || stream.finish(&mut |t| f(0, t)).is_break()
                {
                    broke = true;
                    return ControlFlow::Break(());
                }
                segment = 1;
                piece = &piece[at..];
            } else {
                chars += n;
            }
        }
        let r = stream.feed(piece, &mut |t| f(segment, t));
        broke = r.is_break();
        r
    })?;
    if !broke {
        let _ = stream.finish(&mut |t| f(segment, t));
    }
    Ok(())
}

/// Characters of the text of `path` (pass 1; also checks that it decodes and is not empty).
fn count_chars(path: &Path, encoding: TextEncoding) -> Result<u64> {
    let mut n = 0u64;
    stream_text(path, encoding, |piece| {
        n += piece.chars().count() as u64;
        ControlFlow::Continue(())
    })?;
    Ok(n)
}

/// The character where the test part of a text of `n` characters starts (pass 2), as
/// `codec::split_text` cuts it: before the last `split` of the characters, then at the start of
/// the next line when it begins within [`LINE_START_REACH`] bytes and is not the last character.
fn find_cut(path: &Path, encoding: TextEncoding, n: u64, split: f64) -> Result<u64> {
    let n_usize = usize::try_from(n).context("the text is too long for this machine")?;
    if n < 2 {
        bail!(
            "{}: {n} characters are too few to hold out a test part (give --test FILE)",
            path.display()
        );
    }
    let start = n - tail_len(n_usize, split) as u64;
    let (mut at, mut bytes, mut cut) = (0u64, 0usize, start);
    stream_text(path, encoding, |piece| {
        for c in piece.chars() {
            if at >= start {
                if c == '\n' {
                    if bytes < LINE_START_REACH && at + 1 < n {
                        cut = at + 1;
                    }
                    return ControlFlow::Break(());
                }
                bytes += c.len_utf8();
                if bytes >= LINE_START_REACH {
                    return ControlFlow::Break(());
                }
            }
            at += 1;
        }
        ControlFlow::Continue(())
    })?;
    Ok(cut)
}

/// Writes the token file of `req`, saying what each pass does through `say`; returns the
/// file's description and a one-line summary.
pub fn prepare_file(req: &PrepareRequest, say: impl Fn(&str)) -> Result<(TokenFileInfo, String)> {
    let began = Instant::now();
    let level = level_of(&req.task, req.level.as_deref())?;
    // As `rnn train` says it (`TaskOptions::check`).
    for (flag, path) in [
        ("--data", Some(&req.data)),
        ("--valid", req.valid.as_ref()),
        ("--test", req.test.as_ref()),
    ] {
        if let Some(p) = path.filter(|p| !p.exists()) {
            bail!("{flag} {}: no such file", p.display());
        }
    }
    let encoding = match &req.encoding {
        Some(name) => TextEncoding::from_label(name).context("--encoding")?,
        None => TextEncoding::UTF8,
    };
    let split = req.split.unwrap_or(0.1);
    if !(split > 0.0 && split < 1.0) {
        bail!("--split must be between 0 and 1, got {split}");
    }
    if level != Level::Word && req.vocab_size.is_some() {
        bail!("--vocab-size applies to --level word only (a character vocabulary keeps every character)");
    }
    let data = &req.data;
    let scan_data = |cut: Option<u64>, f: &mut dyn FnMut(Segment, &str) -> ControlFlow<()>| {
        scan(data, encoding, level, cut, f)
    };

    // The test cut and the validation fraction, as `train` computes them.
    let (cut, valid_split) = match &req.test {
        Some(_) => (None, split),
        None => {
            let valid_split = valid_fraction(split, req.valid.is_some())?;
            say(&format!(
                "rnn prepare: pass 1, counting the characters of {}",
                data.display()
            ));
            let n = count_chars(data, encoding).context("--data")?;
            say("rnn prepare: pass 2, locating the test part");
            let cut = find_cut(data, encoding, n, split)?;
            (Some(cut), valid_split)
        }
    };
    // Tokens before the cut, and how many of them train.
    let n_train = match &req.valid {
        Some(_) => u64::MAX,
        None => {
            say("rnn prepare: pass 3, counting the tokens");
            let mut n = 0u64;
            scan_data(cut, &mut |segment, _| {
                if segment == 0 {
                    n += 1;
                    ControlFlow::Continue(())
                } else {
                    ControlFlow::Break(())
                }
            })
            .context("--data")?;
            let n_usize = usize::try_from(n).context("too many tokens for this machine")?;
            n - tail_len(n_usize, valid_split) as u64
        }
    };
    // The vocabulary of the training part only.
    say("rnn prepare: pass 4, counting the vocabulary of the training part");
    let mut counts: HashMap<String, usize> = HashMap::new();
    let mut seen = 0u64;
    scan_data(cut, &mut |segment, t| {
        if segment != 0 || seen >= n_train {
            return ControlFlow::Break(());
        }
        seen += 1;
        match counts.get_mut(t) {
            Some(c) => *c += 1,
            None => {
                counts.insert(t.to_string(), 1);
            }
        }
        ControlFlow::Continue(())
    })
    .context("--data")?;
    let max = if level == Level::Word {
        req.vocab_size
    } else {
        None
    };
    let vocab = Vocab::from_counts(counts, 1, max).context("--vocab-size")?;

    say(&format!(
        "rnn prepare: pass 5, writing the ids ({} vocabulary entries) to {}",
        vocab.len(),
        req.out.display()
    ));
    let mut writer = TokenFileWriter::create(&req.out, vocab.clone())?;
    let mut failed: Option<rnn_train::Error> = None;
    let mut push =
        |w: &mut TokenFileWriter, part: TokenPart, t: &str| match w.push(part, vocab.id(t)) {
            Ok(()) => ControlFlow::Continue(()),
            Err(e) => {
                failed = Some(e);
                ControlFlow::Break(())
            }
        };
    let mut written = 0u64;
    match &req.valid {
        None => scan_data(cut, &mut |segment, t| {
            let part = match segment {
                0 if written < n_train => TokenPart::Train,
                0 => TokenPart::Valid,
                _ => TokenPart::Test,
            };
            written += 1;
            push(&mut writer, part, t)
        })
        .context("--data")?,
        Some(valid) => {
            scan_data(cut, &mut |segment, t| match segment {
                0 => push(&mut writer, TokenPart::Train, t),
                _ => ControlFlow::Break(()),
            })
            .context("--data")?;
            scan(valid, encoding, level, None, |_, t| {
                push(&mut writer, TokenPart::Valid, t)
            })
            .context("--valid")?;
            if cut.is_some() {
                scan_data(cut, &mut |segment, t| match segment {
                    0 => ControlFlow::Continue(()),
                    _ => push(&mut writer, TokenPart::Test, t),
                })
                .context("--data")?;
            }
        }
    }
    if let Some(test) = &req.test {
        scan(test, encoding, level, None, |_, t| {
            push(&mut writer, TokenPart::Test, t)
        })
        .context("--test")?;
    }
    if let Some(e) = failed {
        return Err(e.into());
    }
    let meta = PreparedMeta {
        level,
        data: req.data.clone(),
        valid: req.valid.clone(),
        test: req.test.clone(),
        split,
        vocab_size: req.vocab_size,
        encoding: (encoding != TextEncoding::UTF8).then(|| encoding.name().to_string()),
        test_held_out: req.test.is_none(),
    };
    let info = writer.finish(&serde_json::to_value(&meta)?)?;
    let [train, valid, test] = info.counts;
    let line = format!(
        "prepared {}: {train} training, {valid} validation, {test} test tokens ({} level, vocabulary {}, {}-byte ids), {} bytes, checksum {:016x}, in {:.1} s",
        req.out.display(),
        level.as_str(),
        vocab.len(),
        info.width.bytes(),
        info.bytes,
        info.checksum,
        began.elapsed().as_secs_f64()
    );
    Ok((info, line))
}

/// The data of a run trained from a token file.
pub(super) struct PreparedData {
    /// The file, checked and mapped.
    pub file: TokenFile,
    /// How it was made.
    pub meta: PreparedMeta,
    /// Its codec.
    pub codec: Codec,
}

/// Opens the token file `path` for a run and checks that the run's options agree with how the
/// file was made (the options that shape the data are fixed by `rnn prepare`).
pub(super) fn open_for_training(path: &Path, opts: &crate::run::Options) -> Result<PreparedData> {
    let (file, meta, codec) = open(path)?;
    let fixed = |flag: &str, given: String, recorded: String| -> Result<()> {
        if given != recorded {
            bail!("{flag} {given}: {} was prepared with {flag} {recorded}; the data options are fixed by `rnn prepare` (prepare the corpus again to change them)", path.display());
        }
        Ok(())
    };
    if let Some(v) = &opts.valid {
        bail!("--valid {}: {} is a prepared token file, which holds its validation part; give --valid to `rnn prepare` instead", v.display(), path.display());
    }
    if let Some(t) = &opts.test {
        bail!("--test {}: {} is a prepared token file, which holds its test part; give --test to `rnn prepare` instead", t.display(), path.display());
    }
    if let Some(s) = opts.split {
        fixed("--split", s.to_string(), meta.split.to_string())?;
    }
    if let Some(l) = &opts.level {
        fixed(
            "--level",
            Level::parse(l)?.as_str().to_string(),
            meta.level.as_str().to_string(),
        )?;
    }
    if let Some(v) = opts.vocab_size {
        let recorded = meta
            .vocab_size
            .map_or("(none)".to_string(), |v| v.to_string());
        fixed("--vocab-size", v.to_string(), recorded)?;
    }
    if let Some(e) = &opts.encoding {
        let given = TextEncoding::from_label(e).context("--encoding")?;
        let recorded = meta.encoding.clone().unwrap_or_else(|| "UTF-8".into());
        fixed("--encoding", given.name().to_string(), recorded)?;
    }
    Ok(PreparedData { file, meta, codec })
}

/// Opens and checks the token file `path`: the file, its metadata and its codec.
pub(super) fn open(path: &Path) -> Result<(TokenFile, PreparedMeta, Codec)> {
    let file = TokenFile::open(path)?;
    let meta: PreparedMeta = serde_json::from_value(file.meta().clone()).with_context(|| {
        format!(
            "{}: the metadata is not that of a language-model token file",
            path.display()
        )
    })?;
    let codec = Codec::Vocab {
        level: meta.level,
        vocab: file.vocab().clone(),
    };
    Ok((file, meta, codec))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    /// A text with what tokenisation and splitting must agree on: blank and whitespace-only
    /// lines, CRLF, non-ASCII characters, the specials written literally, lines longer than
    /// the 200 bytes the test cut looks ahead, and (`trailing_newline`) a last line without one.
    fn text(seed: u64, lines: usize, trailing_newline: bool) -> String {
        let words = [
            "the",
            "cat",
            "s\u{e9}es",
            "a",
            "<unk>",
            "<eos>",
            "d\u{f6}g",
            "x",
        ];
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        let mut t = String::new();
        for _ in 0..lines {
            match rng.random_range(0..10) {
                0 => t.push('\n'),
                1 => t.push_str(" \t \n"),
                2 => {
                    let line: Vec<&str> = (0..60)
                        .map(|_| words[rng.random_range(0..words.len())])
                        .collect();
                    t.push_str(&line.join(" "));
                    t.push('\n');
                }
                k => {
                    let n = rng.random_range(1..8);
                    let line: Vec<&str> = (0..n)
                        .map(|_| words[rng.random_range(0..words.len())])
                        .collect();
                    t.push_str(&line.join(if k == 3 { "  " } else { " " }));
                    t.push_str(if k == 4 { "\r\n" } else { "\n" });
                }
            }
        }
        if !trailing_newline {
            t.push_str("last line");
        }
        t
    }

    /// Prepares `data` (+ valid/test texts) and checks the file against the in-memory path.
    fn check(
        level: Level,
        data: &str,
        valid: Option<&str>,
        test: Option<&str>,
        split: f64,
        vocab_size: Option<usize>,
    ) {
        let dir = tempfile::tempdir().unwrap();
        let write = |name: &str, t: &str| {
            let p = dir.path().join(name);
            std::fs::write(&p, t).unwrap();
            p
        };
        let req = PrepareRequest {
            task: "word-lm".into(),
            data: write("data.txt", data),
            valid: valid.map(|v| write("valid.txt", v)),
            test: test.map(|t| write("test.txt", t)),
            split: Some(split),
            level: Some(level.as_str().into()),
            vocab_size,
            encoding: None,
            out: dir.path().join("data.tokens"),
        };
        let (info, _) = prepare_file(&req, |_| {}).unwrap();
        let super::super::EncodedTexts {
            codec,
            train,
            valid: valid_ids,
            test: test_ids,
        } = super::super::encode_texts(level, data, valid, test, split, vocab_size).unwrap();
        let (file, meta, file_codec) = open(&req.out).unwrap();
        let what = format!(
            "{level:?} split {split} valid {} test {}",
            valid.is_some(),
            test.is_some()
        );
        let (Codec::Vocab { vocab: a, .. }, Codec::Vocab { vocab: b, .. }) = (&codec, &file_codec)
        else {
            panic!("vocabulary codecs expected")
        };
        assert_eq!(a.tokens(), b.tokens(), "{what}: vocabulary");
        assert_eq!(file.part(TokenPart::Train).to_vec(), train, "{what}: train");
        assert_eq!(
            file.part(TokenPart::Valid).to_vec(),
            valid_ids,
            "{what}: valid"
        );
        assert_eq!(
            file.part(TokenPart::Test).to_vec(),
            test_ids,
            "{what}: test"
        );
        assert_eq!(info.counts[0] as usize, train.len());
        assert_eq!(meta.test_held_out, test.is_none());
        assert_eq!(meta.level, level);
    }

    #[test]
    fn the_file_holds_what_the_in_memory_path_computes() {
        for (seed, lines, newline) in [(1, 40, true), (2, 300, false), (3, 7, true)] {
            let data = text(seed, lines, newline);
            let other = text(seed + 10, 20, true);
            for level in [Level::Word, Level::Char] {
                for split in [0.1, 0.3, 0.02] {
                    check(level, &data, None, None, split, None);
                }
                check(level, &data, Some(&other), None, 0.2, None);
                check(level, &data, None, Some(&other), 0.2, None);
                check(level, &data, Some(&other), Some(&other), 0.2, None);
            }
            check(Level::Word, &data, None, None, 0.1, Some(6));
        }
    }

    #[test]
    fn a_text_larger_than_a_read_block_splits_the_same() {
        // Over 2 MiB: the reader's 1 MiB blocks end inside lines and characters, and the test
        // cut falls in a later block than the first.
        let data = text(5, 60_000, true);
        assert!(data.len() > 2 << 20);
        check(Level::Word, &data, None, None, 0.1, None);
        check(Level::Char, &data, None, None, 0.45, None);
    }

    #[test]
    fn bad_requests_are_refused_with_their_flag() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("d.txt");
        std::fs::write(&data, "a b c\n").unwrap();
        let req = |f: &dyn Fn(&mut PrepareRequest)| {
            let mut r = PrepareRequest {
                task: "word-lm".into(),
                data: data.clone(),
                valid: None,
                test: None,
                split: None,
                level: None,
                vocab_size: None,
                encoding: None,
                out: dir.path().join("o.tokens"),
            };
            f(&mut r);
            format!("{:#}", prepare_file(&r, |_| {}).unwrap_err())
        };
        assert!(req(&|r| r.task = "classify".into()).contains("char-lm or word-lm"));
        assert!(req(&|r| r.level = Some("subword".into())).contains("--level subword"));
        assert!(req(&|r| r.split = Some(1.5)).contains("--split"));
        assert!(req(&|r| r.split = Some(0.6)).contains("--split 0.6"));
        assert!(req(&|r| r.encoding = Some("klingon".into())).contains("--encoding"));
        let e = req(&|r| r.data = dir.path().join("missing.txt"));
        assert!(e.contains("missing.txt"), "{e}");
        std::fs::write(&data, " \n\n").unwrap();
        let e = req(&|_| {});
        assert!(e.contains("d.txt") && e.contains("empty"), "{e}");
        assert!(!dir.path().join("o.tokens").exists());
    }
}
