//! Character encodings of text files: a name such as `latin1` or `utf-8` (the WHATWG labels that
//! [`encoding_rs`] implements), and the decoding of a file's bytes into text, with the line of the
//! first byte sequence that is not valid in the encoding.

use crate::{Error, Result};
use std::fmt;
use std::path::Path;

/// The character encoding of a text file. UTF-8 by default.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct TextEncoding(&'static encoding_rs::Encoding);

impl TextEncoding {
    /// UTF-8, the default.
    pub const UTF8: TextEncoding = TextEncoding(encoding_rs::UTF_8);

    /// The encoding named `name`: a WHATWG label, case-insensitive (`utf-8`, `latin1`,
    /// `iso-8859-1`, `windows-1252`, `iso-8859-15`, `utf-16le`, `shift_jis`, `gb18030`, ...).
    /// As in browsers, `latin1` and `iso-8859-1` decode as windows-1252, a superset.
    pub fn from_label(name: &str) -> Result<Self> {
        let trimmed = name.trim();
        let alias = match trimmed.to_ascii_lowercase().as_str() {
            "latin-1" | "latin_1" => "latin1".to_string(),
            other => other.replace('_', "-"),
        };
        encoding_rs::Encoding::for_label(trimmed.as_bytes())
            .or_else(|| encoding_rs::Encoding::for_label(alias.as_bytes()))
            // The "replacement" encoding decodes every input to U+FFFD: never what a user means.
            .filter(|e| *e != encoding_rs::REPLACEMENT)
            .map(TextEncoding)
            .ok_or_else(|| {
                Error::Invalid(format!(
                    "unknown encoding '{}': expected a name such as utf-8, latin1, windows-1252, iso-8859-15, utf-16le, shift_jis or gb18030",
                    super::excerpt(trimmed, 40)
                ))
            })
    }

    /// The canonical name (`UTF-8`, `windows-1252`, ...).
    pub fn name(&self) -> &'static str {
        self.0.name()
    }
}

impl Default for TextEncoding {
    fn default() -> Self {
        Self::UTF8
    }
}

impl fmt::Debug for TextEncoding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TextEncoding({})", self.name())
    }
}

impl fmt::Display for TextEncoding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Decodes the bytes of the text file `path` (named in errors only) from `encoding`. A byte
/// order mark of the encoding is dropped. A byte sequence that is not valid in the encoding is an
/// error naming its line; an empty (or whitespace-only) text is an error.
pub fn decode_text(path: &Path, bytes: Vec<u8>, encoding: TextEncoding) -> Result<String> {
    let text = if encoding == TextEncoding::UTF8 {
        utf8(path, bytes)?
    } else {
        other(path, &bytes, encoding)?
    };
    if text.trim().is_empty() {
        return Err(Error::file(path, "the file is empty"));
    }
    Ok(text)
}

/// UTF-8 without copying: the bytes become the string.
fn utf8(path: &Path, mut bytes: Vec<u8>) -> Result<String> {
    if bytes.starts_with(b"\xEF\xBB\xBF") {
        bytes.drain(..3);
    }
    String::from_utf8(bytes).map_err(|e| {
        let valid = e.utf8_error().valid_up_to();
        let line = e.as_bytes()[..valid]
            .iter()
            .filter(|b| **b == b'\n')
            .count()
            + 1;
        Error::parse(
            path,
            line,
            format!("not valid UTF-8 (byte offset {valid}); name the file's encoding with --encoding, e.g. --encoding latin1"),
        )
    })
}

/// Bytes read at a time by [`stream_text`].
const STREAM_BLOCK: usize = 1 << 20;

/// Reads the text file `path` in `encoding` block by block and calls `f` with the decoded text,
/// piece by piece (pieces end anywhere, never inside a character), until the end or until `f`
/// breaks; memory stays at a block whatever the file's size. The same text and the same errors
/// as [`decode_text`] (byte order mark dropped; bytes not valid in the encoding are an error
/// naming their line; an empty or whitespace-only file is an error, when read to the end).
pub fn stream_text(
    path: &Path,
    encoding: TextEncoding,
    mut f: impl FnMut(&str) -> std::ops::ControlFlow<()>,
) -> Result<()> {
    use std::io::Read;
    use std::ops::ControlFlow;
    let io = |source| Error::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut file = std::fs::File::open(path).map_err(io)?;
    let mut decoder = encoding.0.new_decoder_with_bom_removal();
    let mut buf = vec![0u8; STREAM_BLOCK];
    let mut text = String::new();
    let (mut lines, mut consumed, mut blank) = (0usize, 0u64, true);
    loop {
        let n = loop {
            match file.read(&mut buf) {
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                other => break other.map_err(io)?,
            }
        };
        let last = n == 0;
        let mut input = &buf[..n];
        loop {
            text.clear();
            let room = decoder
                .max_utf8_buffer_length_without_replacement(input.len())
                .unwrap_or(STREAM_BLOCK * 4)
                .max(16);
            text.reserve(room);
            let (result, read) =
                decoder.decode_to_string_without_replacement(input, &mut text, last);
            if let encoding_rs::DecoderResult::Malformed(bad, after) = result {
                let offset = consumed + read as u64 - u64::from(bad) - u64::from(after);
                let line = lines + text.matches('\n').count() + 1;
                let hint = if encoding == TextEncoding::UTF8 {
                    "; name the file's encoding with --encoding, e.g. --encoding latin1"
                } else {
                    ""
                };
                return Err(Error::parse(
                    path,
                    line,
                    format!("not valid {} (byte offset {offset}){hint}", encoding.name()),
                ));
            }
            consumed += read as u64;
            input = &input[read..];
            lines += text.bytes().filter(|&b| b == b'\n').count();
            blank = blank && text.trim().is_empty();
            if !text.is_empty() && f(&text) == ControlFlow::Break(()) {
                return Ok(());
            }
            if matches!(result, encoding_rs::DecoderResult::InputEmpty) {
                break;
            }
        }
        if last {
            break;
        }
    }
    if blank {
        return Err(Error::file(path, "the file is empty"));
    }
    Ok(())
}

fn other(path: &Path, bytes: &[u8], encoding: TextEncoding) -> Result<String> {
    let mut decoder = encoding.0.new_decoder_with_bom_removal();
    let capacity = decoder
        .max_utf8_buffer_length_without_replacement(bytes.len())
        .ok_or_else(|| Error::file(path, "the file is too large to decode"))?;
    let mut text = String::with_capacity(capacity);
    let (result, read) = decoder.decode_to_string_without_replacement(bytes, &mut text, true);
    match result {
        encoding_rs::DecoderResult::InputEmpty => Ok(text),
        encoding_rs::DecoderResult::Malformed(bad, after) => {
            let offset = read - bad as usize - after as usize;
            let line = text.matches('\n').count() + 1;
            Err(Error::parse(
                path,
                line,
                format!("not valid {} (byte offset {offset})", encoding.name()),
            ))
        }
        // The buffer holds the worst case, so decoding never stops for want of room.
        encoding_rs::DecoderResult::OutputFull => {
            Err(Error::file(path, "the decoded text outgrew its buffer"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_and_unknown_names() {
        assert_eq!(
            TextEncoding::from_label("UTF-8").unwrap(),
            TextEncoding::UTF8
        );
        assert_eq!(
            TextEncoding::from_label("utf8").unwrap(),
            TextEncoding::UTF8
        );
        for latin in ["latin1", "Latin-1", "iso-8859-1", "ISO_8859-1", "cp1252"] {
            assert_eq!(
                TextEncoding::from_label(latin).unwrap().name(),
                "windows-1252",
                "{latin}"
            );
        }
        let e = TextEncoding::from_label("klingon").unwrap_err().to_string();
        assert!(
            e.contains("unknown encoding 'klingon'") && e.contains("latin1"),
            "{e}"
        );
        assert!(TextEncoding::from_label("iso-2022-kr").is_err());
        let long = "x".repeat(5000);
        assert!(
            TextEncoding::from_label(&long)
                .unwrap_err()
                .to_string()
                .len()
                < 300
        );
    }

    #[test]
    fn decodes_latin1_and_names_the_line_of_bad_bytes() {
        let p = Path::new("f.txt");
        let latin1 = TextEncoding::from_label("latin1").unwrap();
        assert_eq!(
            decode_text(p, b"1 caf\xe9\n".to_vec(), latin1).unwrap(),
            "1 caf\u{e9}\n"
        );
        let e = decode_text(p, b"a\nb\nc\xe9\n".to_vec(), TextEncoding::UTF8)
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("f.txt:3: not valid UTF-8") && e.contains("--encoding"),
            "{e}"
        );
        assert_eq!(
            decode_text(p, b"\xEF\xBB\xBFhi\n".to_vec(), TextEncoding::UTF8).unwrap(),
            "hi\n"
        );
        let sjis = TextEncoding::from_label("shift_jis").unwrap();
        let e = decode_text(p, b"ok\nok\n\x82\n".to_vec(), sjis)
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("f.txt:3: not valid Shift_JIS"), "{e}");
        let utf16 = TextEncoding::from_label("utf-16le").unwrap();
        assert_eq!(
            decode_text(p, b"\xff\xfeh\x00i\x00".to_vec(), utf16).unwrap(),
            "hi"
        );
        let e = decode_text(p, b" \n".to_vec(), latin1)
            .unwrap_err()
            .to_string();
        assert!(e.contains("empty"), "{e}");
    }

    /// The text [`stream_text`] gives, or its error.
    fn streamed(bytes: &[u8], encoding: TextEncoding) -> std::result::Result<String, String> {
        let (_d, p) = super::super::testutil::write_file("s.txt", bytes);
        let mut text = String::new();
        stream_text(&p, encoding, |piece| {
            text.push_str(piece);
            std::ops::ControlFlow::Continue(())
        })
        .map(|()| text)
        .map_err(|e| e.to_string())
    }

    #[test]
    fn streaming_gives_the_text_and_errors_of_decode_text() {
        let latin1 = TextEncoding::from_label("latin1").unwrap();
        let utf16 = TextEncoding::from_label("utf-16le").unwrap();
        let big: String = (0..300_000).map(|i| format!("l\u{e9}ne {i}\n")).collect();
        let mut with_bom = b"\xEF\xBB\xBF".to_vec();
        with_bom.extend_from_slice(big.as_bytes());
        for (bytes, enc) in [
            (with_bom, TextEncoding::UTF8),
            (b"1 caf\xe9\n".to_vec(), latin1),
            (b"\xff\xfeh\x00i\x00".to_vec(), utf16),
        ] {
            let p = Path::new("s.txt");
            assert_eq!(
                streamed(&bytes, enc),
                Ok(decode_text(p, bytes.clone(), enc).unwrap())
            );
        }
        let mut bad = big.clone().into_bytes();
        bad.extend_from_slice(b"ok\nbad \xff\n");
        let e = streamed(&bad, TextEncoding::UTF8).unwrap_err();
        assert!(
            e.contains("s.txt:300002: not valid UTF-8") && e.contains("--encoding"),
            "{e}"
        );
        let e = streamed(b" \n\n", TextEncoding::UTF8).unwrap_err();
        assert!(e.contains("s.txt") && e.contains("empty"), "{e}");
    }
}
