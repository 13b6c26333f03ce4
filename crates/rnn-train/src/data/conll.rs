//! Tagged sentences from CoNLL-U (Universal Dependencies) and from 2-column CoNLL files.

use super::{numbered_lines, read_text, text_from_bytes, FileLines};
use crate::{Error, Result};
use std::path::Path;

/// A sentence with one tag per token.
#[derive(Debug, Clone, PartialEq)]
pub struct TaggedSentence {
    /// Word forms.
    pub tokens: Vec<String>,
    /// One tag per token.
    pub tags: Vec<String>,
    /// 1-based line of the sentence's first token.
    pub line: usize,
}

/// Name of a CoNLL-U column (1-based numbers as in the format's documentation).
fn conllu_column(name: &str) -> Option<usize> {
    const COLUMNS: [&str; 10] = [
        "id", "form", "lemma", "upos", "xpos", "feats", "head", "deprel", "deps", "misc",
    ];
    COLUMNS.iter().position(|c| c.eq_ignore_ascii_case(name))
}

/// Reads a CoNLL-U file: the word form (column 2) and the tag column `tag_column` (a name such as
/// `upos` or `xpos`, or a 1-based number; UPOS by default). Comment lines (`#`), multi-word token
/// lines (`3-4`) and empty nodes (`3.1`) are skipped; sentences end at blank lines.
pub fn read_conllu(path: &Path, tag_column: Option<&str>) -> Result<Vec<TaggedSentence>> {
    let col = conllu_tag_column(tag_column)?;
    conllu_sentences(path, &read_text(path)?, col)
}

/// [`read_conllu`] of a file's bytes already in memory; `path` only names the file in errors.
pub fn parse_conllu(
    path: &Path,
    bytes: &[u8],
    tag_column: Option<&str>,
) -> Result<Vec<TaggedSentence>> {
    let col = conllu_tag_column(tag_column)?;
    conllu_sentences(path, &text_from_bytes(path, bytes.to_vec())?, col)
}

/// The 0-based index of the CoNLL-U column named (or numbered) `tag_column`, UPOS by default.
fn conllu_tag_column(tag_column: Option<&str>) -> Result<usize> {
    let col_name = tag_column.unwrap_or("upos");
    let col = match col_name.parse::<usize>() {
        Ok(n) if (1..=10).contains(&n) => n - 1,
        Ok(n) => {
            return Err(Error::Invalid(format!(
                "unknown tag column {n}: CoNLL-U has columns 1-10"
            )))
        }
        Err(_) => conllu_column(col_name).ok_or_else(|| {
            Error::Invalid(format!(
                "unknown tag column '{col_name}': expected a CoNLL-U column name (upos, xpos, deprel, ...) or 1-10"
            ))
        })?,
    };
    Ok(col)
}

fn conllu_sentences(path: &Path, text: &str, col: usize) -> Result<Vec<TaggedSentence>> {
    sentences(text, path, conllu_token(path, col))
}

/// The `(form, tag)` of a CoNLL-U token line, `None` for a comment, a multi-word token or an
/// empty node.
fn conllu_token(
    path: &Path,
    col: usize,
) -> impl Fn(usize, &str) -> Result<Option<(String, String)>> {
    let path = path.to_path_buf();
    move |line, content| {
        if content.starts_with('#') {
            return Ok(None);
        }
        let fields: Vec<&str> = content.split('\t').collect();
        if fields.len() != 10 {
            return Err(Error::parse(
                &path,
                line,
                format!("expected 10 tab-separated columns, found {}", fields.len()),
            ));
        }
        let id = fields[0];
        if id.contains('-') || id.contains('.') {
            return Ok(None);
        }
        if id.parse::<usize>().is_err() {
            return Err(Error::parse(&path, line, format!("bad token id '{id}'")));
        }
        Ok(Some((fields[1].to_string(), fields[col].to_string())))
    }
}

/// Reads a 2-column CoNLL file: `token<whitespace>tag` per line, sentences separated by blank lines.
pub fn read_conll(path: &Path) -> Result<Vec<TaggedSentence>> {
    conll_sentences(path, &read_text(path)?)
}

/// [`read_conll`] of a file's bytes already in memory; `path` only names the file in errors.
pub fn parse_conll(path: &Path, bytes: &[u8]) -> Result<Vec<TaggedSentence>> {
    conll_sentences(path, &text_from_bytes(path, bytes.to_vec())?)
}

fn conll_sentences(path: &Path, text: &str) -> Result<Vec<TaggedSentence>> {
    sentences(text, path, conll_token(path))
}

/// The `(token, tag)` of a 2-column CoNLL line.
fn conll_token(path: &Path) -> impl Fn(usize, &str) -> Result<Option<(String, String)>> {
    let path = path.to_path_buf();
    move |line, content| {
        let fields: Vec<&str> = content.split_whitespace().collect();
        if fields.len() != 2 {
            return Err(Error::parse(
                &path,
                line,
                format!("expected 2 columns (token tag), found {}", fields.len()),
            ));
        }
        Ok(Some((fields[0].to_string(), fields[1].to_string())))
    }
}

/// The sentences of the CoNLL-U file `path` (UTF-8, as [`read_conllu`]) read line by line, one
/// sentence at a time: for files too large to hold.
pub fn stream_conllu(
    path: &Path,
    tag_column: Option<&str>,
) -> Result<impl Iterator<Item = Result<TaggedSentence>>> {
    let col = conllu_tag_column(tag_column)?;
    Ok(Sentences::new(
        FileLines::open(path)?,
        conllu_token(path, col),
    ))
}

/// The sentences of the 2-column CoNLL file `path` (UTF-8, as [`read_conll`]) read line by
/// line, one sentence at a time: for files too large to hold.
pub fn stream_conll(path: &Path) -> Result<impl Iterator<Item = Result<TaggedSentence>>> {
    Ok(Sentences::new(FileLines::open(path)?, conll_token(path)))
}

/// Groups the token lines of `text` (the content of `path`) into sentences at blank lines;
/// `token_line` turns a non-blank line into `(token, tag)`, `None` to skip it, or an error.
fn sentences(
    text: &str,
    path: &Path,
    token_line: impl Fn(usize, &str) -> Result<Option<(String, String)>>,
) -> Result<Vec<TaggedSentence>> {
    let lines = numbered_lines(text).map(Ok);
    let out = Sentences::new(lines, token_line).collect::<Result<Vec<_>>>()?;
    if out.is_empty() {
        return Err(Error::file(path, "no sentences found"));
    }
    Ok(out)
}

/// The sentences of numbered lines, ended by blank lines (see [`sentences`]).
struct Sentences<I, F> {
    lines: I,
    token_line: F,
    current: TaggedSentence,
}

impl<I, F> Sentences<I, F> {
    fn new(lines: I, token_line: F) -> Self {
        Self {
            lines,
            token_line,
            current: TaggedSentence {
                tokens: vec![],
                tags: vec![],
                line: 0,
            },
        }
    }

    /// The sentence gathered so far, if it has tokens.
    fn take(&mut self) -> Option<TaggedSentence> {
        if self.current.tokens.is_empty() {
            return None;
        }
        Some(std::mem::replace(
            &mut self.current,
            TaggedSentence {
                tokens: vec![],
                tags: vec![],
                line: 0,
            },
        ))
    }
}

impl<I, S, F> Iterator for Sentences<I, F>
where
    I: Iterator<Item = Result<(usize, S)>>,
    S: AsRef<str>,
    F: Fn(usize, &str) -> Result<Option<(String, String)>>,
{
    type Item = Result<TaggedSentence>;

    fn next(&mut self) -> Option<Result<TaggedSentence>> {
        loop {
            let (line, content) = match self.lines.next() {
                None => return self.take().map(Ok),
                Some(Err(e)) => return Some(Err(e)),
                Some(Ok(item)) => item,
            };
            let content = content.as_ref();
            if content.trim().is_empty() {
                match self.take() {
                    Some(s) => return Some(Ok(s)),
                    None => continue,
                }
            }
            match (self.token_line)(line, content) {
                Err(e) => return Some(Err(e)),
                Ok(None) => {}
                Ok(Some((token, tag))) => {
                    if self.current.tokens.is_empty() {
                        self.current.line = line;
                    }
                    self.current.tokens.push(token);
                    self.current.tags.push(tag);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::testutil::write_file;
    use super::*;

    const SAMPLE: &str = "# sent_id = 1\n# text = I can't go.\n\
1\tI\tI\tPRON\tPRP\t_\t3\tnsubj\t_\t_\n\
2-3\tcan't\t_\t_\t_\t_\t_\t_\t_\t_\n\
2\tca\tcan\tAUX\tMD\t_\t4\taux\t_\t_\n\
3\tn't\tnot\tPART\tRB\t_\t4\tadvmod\t_\t_\n\
3.1\tx\tx\tX\tX\t_\t_\t_\t_\t_\n\
4\tgo\tgo\tVERB\tVB\t_\t0\troot\t_\t_\n\n\
1\tYes\tyes\tINTJ\tUH\t_\t0\troot\t_\t_\n";

    #[test]
    fn conllu_skips_comments_multiword_and_empty_nodes() {
        let (_d, p) = write_file("ewt.conllu", SAMPLE.as_bytes());
        let s = read_conllu(&p, None).unwrap();
        assert_eq!(s.len(), 2);
        assert_eq!(s[0].tokens, vec!["I", "ca", "n't", "go"]);
        assert_eq!(s[0].tags, vec!["PRON", "AUX", "PART", "VERB"]);
        assert_eq!(s[0].line, 3);
        let x = read_conllu(&p, Some("xpos")).unwrap();
        assert_eq!(x[1].tags, vec!["UH"]);
        let by_number = read_conllu(&p, Some("5")).unwrap();
        assert_eq!(by_number[0].tags, x[0].tags);
    }

    #[test]
    fn conllu_errors() {
        let (_d, p) = write_file("ewt.conllu", SAMPLE.as_bytes());
        let err = read_conllu(&p, Some("colour")).unwrap_err().to_string();
        assert!(err.contains("unknown tag column 'colour'"), "{err}");
        let bad = "1\tI\tI\tPRON\n";
        let (_d, p) = write_file("bad.conllu", bad.as_bytes());
        let err = read_conllu(&p, None).unwrap_err().to_string();
        assert!(
            err.contains("bad.conllu:1:") && err.contains("found 4"),
            "{err}"
        );
        let (_d, p) = write_file("c.conllu", b"# only a comment\n");
        let err = read_conllu(&p, None).unwrap_err().to_string();
        assert!(err.contains("no sentences"), "{err}");
    }

    #[test]
    fn two_column_conll() {
        let (_d, p) = write_file("t.conll", b"the DT\ncat NN\n\nran VBD\n");
        let s = read_conll(&p).unwrap();
        assert_eq!(s.len(), 2);
        assert_eq!(s[1].tokens, vec!["ran"]);
        let (_d, p) = write_file("t.conll", b"the DT\ncat NN extra\n");
        let err = read_conll(&p).unwrap_err().to_string();
        assert!(
            err.contains("t.conll:2:") && err.contains("found 3"),
            "{err}"
        );
    }

    #[test]
    fn streamed_sentences_equal_the_whole_file_read() {
        let (_d, p) = write_file("s.conllu", SAMPLE.as_bytes());
        let whole = read_conllu(&p, Some("xpos")).unwrap();
        let streamed: Vec<TaggedSentence> = stream_conllu(&p, Some("xpos"))
            .unwrap()
            .collect::<Result<_>>()
            .unwrap();
        assert_eq!(streamed, whole);
        let (_d, p) = write_file(
            "s.conll",
            b"\n\nEU B-ORG\r\nrejects O\n\n\nPeter B-PER\nx\n",
        );
        let e = read_conll(&p).unwrap_err().to_string();
        let streamed: Vec<Result<TaggedSentence>> = stream_conll(&p).unwrap().take(2).collect();
        assert_eq!(streamed[0].as_ref().unwrap().tokens, ["EU", "rejects"]);
        assert_eq!(streamed[1].as_ref().unwrap_err().to_string(), e);
        assert!(e.contains("s.conll:8:"), "{e}");
    }
}
