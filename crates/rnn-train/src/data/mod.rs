//! Data: text corpora, vocabularies, labelled sequences, tagged sentences, sequence pairs and
//! numeric series, each read from a file with errors that name the file, the line and what was
//! wrong; and batching (padding, lengths, masks, bucketing, seeded shuffles and splits).

mod batch;
#[cfg(feature = "tokenizers")]
mod bpe;
mod conll;
mod dates;
mod encoding;
mod feature_rows;
mod labelled;
mod lm;
mod mnist;
mod normalize;
mod pairs;
mod series;
mod shuffle;
mod text;
mod token_file;
mod vocab;

pub use batch::{
    bucket_batches, chunk_sequences, largest_batch, length_batches, pad_batch, seeded_shuffle,
    split_fraction, PaddedBatch, PAD_RATIO, PAD_SLACK,
};
#[cfg(feature = "tokenizers")]
pub use bpe::{BpeConfig, SubwordTokenizer};
pub use conll::{
    parse_conll, parse_conllu, read_conll, read_conllu, stream_conll, stream_conllu, TaggedSentence,
};
pub use dates::{date_pairs, format_date, DatePairs, DATE_FORMATS};
pub use encoding::{decode_text, stream_text, TextEncoding};
pub use feature_rows::{parse_feature_rows, read_feature_rows, FeatureRows};
pub use labelled::{
    labelled_text, parse_labelled, read_labelled, read_labelled_file, scan_labelled,
    stream_labelled, LabelledFile, LabelledScan, LabelledText,
};
pub use lm::{LmBatches, LmWindow};
pub use mnist::{parse_mnist, parse_mnist_images, read_mnist, read_mnist_images, Mnist};
pub use normalize::{tutorial_keeps, tutorial_normalize, word_tokens};
pub use pairs::{parse_pairs, read_pairs, SequencePair};
pub use series::{MissingPolicy, Normalizer, Series, SeriesWindows};
pub use shuffle::{OpenStream, ShuffleBuffer, StreamedBatches};
pub use text::{tokenize, Granularity, TokenStream};
pub use token_file::{
    is_token_file, Fnv64, IdWidth, TokenFile, TokenFileInfo, TokenFileWriter, TokenIds, TokenPart,
    TOKEN_FILE_HEADER_BYTES, TOKEN_FILE_MAGIC, TOKEN_FILE_VERSION,
};
pub use vocab::{Vocab, BOS, EOS, PAD, UNK};

use crate::{Error, Result};
use std::path::{Path, PathBuf};

/// Reads a whole UTF-8 text file. Errors name the file, and for invalid UTF-8 the line of the first
/// bad byte; an empty (or whitespace-only) file is an error.
pub fn read_text(path: &Path) -> Result<String> {
    read_text_as(path, TextEncoding::UTF8)
}

/// [`read_text`] of a file in `encoding` (see [`decode_text`]).
pub fn read_text_as(path: &Path, encoding: TextEncoding) -> Result<String> {
    let bytes = std::fs::read(path).map_err(|source| Error::Io {
        path: path.to_path_buf(),
        source,
    })?;
    decode_text(path, bytes, encoding)
}

/// [`read_text`] of bytes already in memory: `path` only names the file in errors. Invalid UTF-8
/// is an error naming the line of the first bad byte; an empty (or whitespace-only) text is an
/// error.
pub fn text_from_bytes(path: &Path, bytes: Vec<u8>) -> Result<String> {
    decode_text(path, bytes, TextEncoding::UTF8)
}

/// A fresh temporary path in the folder of `path` (`.NAME.tmp-PID-N`), for writing a file
/// completely before renaming it over `path`, so a reader never sees a partial file.
pub(crate) fn temp_beside(path: &Path) -> Result<std::path::PathBuf> {
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let name = path
        .file_name()
        .ok_or_else(|| Error::file(path, "not a file path"))?;
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => std::path::PathBuf::from("."),
    };
    Ok(dir.join(format!(
        ".{}.tmp-{}-{}",
        name.to_string_lossy(),
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )))
}

/// Longest excerpt of a line that an error message quotes, in characters.
pub(crate) const EXCERPT_CHARS: usize = 60;

/// `s` cut to at most `max` characters, ending in `…` when cut: for quoting input (a line, a
/// label, a list of labels) in a one-line error message.
pub fn excerpt(s: &str, max: usize) -> String {
    match s.char_indices().nth(max.saturating_sub(1)) {
        Some((cut, _)) if s.chars().count() > max => format!("{}…", &s[..cut]),
        _ => s.to_string(),
    }
}

/// The lines of a UTF-8 text file read one at a time (for files too large to hold), with their
/// 1-based numbers and without the line terminator (`\n` or `\r\n`), as `str::lines` gives
/// them for a file read whole; a UTF-8 byte order mark is dropped. Invalid UTF-8 is an
/// error naming the line.
pub struct FileLines {
    path: PathBuf,
    reader: std::io::BufReader<std::fs::File>,
    line: usize,
    buf: Vec<u8>,
}

impl FileLines {
    /// Opens `path`; an error names it.
    pub fn open(path: &Path) -> Result<Self> {
        let file = std::fs::File::open(path).map_err(|source| Error::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Ok(Self {
            path: path.to_path_buf(),
            reader: std::io::BufReader::new(file),
            line: 0,
            buf: Vec::new(),
        })
    }
}

impl Iterator for FileLines {
    type Item = Result<(usize, String)>;

    fn next(&mut self) -> Option<Self::Item> {
        use std::io::BufRead;
        self.buf.clear();
        match self.reader.read_until(b'\n', &mut self.buf) {
            Ok(0) => return None,
            Ok(_) => {}
            Err(source) => {
                return Some(Err(Error::Io {
                    path: self.path.clone(),
                    source,
                }))
            }
        }
        self.line += 1;
        let mut bytes = self.buf.as_slice();
        if self.line == 1 {
            bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
        }
        if let Some(b) = bytes.strip_suffix(b"\n") {
            bytes = b.strip_suffix(b"\r").unwrap_or(b);
        }
        Some(match std::str::from_utf8(bytes) {
            Ok(s) => Ok((self.line, s.to_string())),
            Err(e) => Err(Error::parse(
                &self.path,
                self.line,
                format!(
                    "not valid UTF-8 (byte {} of the line); name the file's encoding with --encoding, e.g. --encoding latin1",
                    e.valid_up_to()
                ),
            )),
        })
    }
}

/// Lines with their 1-based numbers, without the line terminator (`\n` or `\r\n`).
pub(crate) fn numbered_lines(text: &str) -> impl Iterator<Item = (usize, &str)> {
    text.lines().enumerate().map(|(i, l)| (i + 1, l))
}

#[cfg(test)]
pub(crate) mod testutil {
    use std::io::Write;
    use std::path::PathBuf;

    /// Writes `bytes` to a new file in a fresh temporary folder; the folder lives as long as the
    /// returned guard.
    pub fn write_file(name: &str, bytes: &[u8]) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(name);
        std::fs::File::create(&path)
            .unwrap()
            .write_all(bytes)
            .unwrap();
        (dir, path)
    }
}

#[cfg(test)]
mod tests {
    use super::testutil::write_file;
    use super::*;

    #[test]
    fn read_text_reports_missing_empty_and_non_utf8() {
        let err = read_text(Path::new("/nonexistent/corpus.txt"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("/nonexistent/corpus.txt"), "{err}");
        let (_d, p) = write_file("empty.txt", b"  \n\n");
        let err = read_text(&p).unwrap_err().to_string();
        assert!(err.contains("empty.txt") && err.contains("empty"), "{err}");
        let (_d, p) = write_file("bad.txt", b"fine\nalso fine\nbad \xff byte\n");
        let err = read_text(&p).unwrap_err().to_string();
        assert!(err.contains("bad.txt:3:") && err.contains("UTF-8"), "{err}");
        let (_d, p) = write_file("ok.txt", "h\u{e9}llo\n".as_bytes());
        assert_eq!(read_text(&p).unwrap(), "h\u{e9}llo\n");
    }

    #[test]
    fn excerpts_cut_on_character_boundaries() {
        assert_eq!(excerpt("short", 10), "short");
        assert_eq!(excerpt("\u{e9}\u{e9}\u{e9}\u{e9}", 3), "\u{e9}\u{e9}…");
        assert_eq!(excerpt("abcd", 4), "abcd");
        assert_eq!(excerpt(&"x".repeat(100_000), 60).chars().count(), 60);
    }
}
