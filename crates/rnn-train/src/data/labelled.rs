//! Labelled sequences: one example per line, `label<space or tab>text` (the SST-2 `stsa.binary`
//! format).
//!
//! Files of other layouts parse as this one without complaint and then make nonsense classes, so
//! they are recognised first and refused in one short line that names the likely fix:
//! comma-separated lines (`ham,Go until ...`), `text<TAB>label` lines (the label last), CoNLL
//! (`token<TAB>tag` lines with blank lines between sentences) and CoNLL-U. A header line
//! (`label<TAB>text`, or a first label that occurs nowhere else while every other label repeats)
//! is skipped and reported in [`LabelledFile::header`].

use super::{excerpt, numbered_lines, read_text_as, text_from_bytes, TextEncoding, EXCERPT_CHARS};
use crate::{Error, Result};
use std::collections::{HashMap, HashSet};
use std::path::Path;

/// One labelled example.
#[derive(Debug, Clone, PartialEq)]
pub struct LabelledText {
    /// The label as written (e.g. `0`, `1`, `positive`).
    pub label: String,
    /// The text after the label.
    pub text: String,
    /// 1-based line in the file.
    pub line: usize,
}

/// The examples of a labelled file, and the header line that was skipped, if any.
#[derive(Debug, Clone, PartialEq)]
pub struct LabelledFile {
    /// The examples in file order.
    pub rows: Vec<LabelledText>,
    /// The skipped header line: its 1-based number and its content (shortened).
    pub header: Option<(usize, String)>,
}

/// Reads `label text` lines; blank lines are skipped, and so is a header line. With
/// `labels = Some(list)`, a label outside the list is an error naming the line. A line with no
/// text after its label is an error, and so is a file of another layout (comma-separated lines,
/// `text<TAB>label` lines, CoNLL or CoNLL-U), refused in one line naming the likely fix.
pub fn read_labelled(path: &Path, labels: Option<&[&str]>) -> Result<Vec<LabelledText>> {
    Ok(read_labelled_file(path, labels, TextEncoding::UTF8)?.rows)
}

/// [`read_labelled`] of a file in `encoding`, telling which header line it skipped.
pub fn read_labelled_file(
    path: &Path,
    labels: Option<&[&str]>,
    encoding: TextEncoding,
) -> Result<LabelledFile> {
    labelled_text(path, &read_text_as(path, encoding)?, labels)
}

/// [`read_labelled`] of a file's bytes already in memory; `path` only names the file in errors.
pub fn parse_labelled(
    path: &Path,
    bytes: &[u8],
    labels: Option<&[&str]>,
) -> Result<Vec<LabelledText>> {
    Ok(labelled_text(path, &text_from_bytes(path, bytes.to_vec())?, labels)?.rows)
}

/// [`read_labelled_file`] of text already decoded; `path` only names the file in errors.
pub fn labelled_text(path: &Path, text: &str, labels: Option<&[&str]>) -> Result<LabelledFile> {
    check_layout(path, text)?;
    let mut rows = Vec::new();
    for (line, content) in numbered_lines(text) {
        if content.trim().is_empty() {
            continue;
        }
        let content = content.trim_start();
        let Some(split) = content.find([' ', '\t']) else {
            return Err(Error::parse(
                path,
                line,
                "expected `label<space or tab>text`, found no separator",
            ));
        };
        let (label, rest) = content.split_at(split);
        let rest = rest.trim();
        if rest.is_empty() {
            return Err(Error::parse(
                path,
                line,
                format!(
                    "label '{}' has no text after it",
                    excerpt(label, EXCERPT_CHARS)
                ),
            ));
        }
        rows.push(LabelledText {
            label: label.to_string(),
            text: rest.to_string(),
            line,
        });
    }
    let header = if is_header(&rows) {
        let first = rows.remove(0);
        let shown = format!("{} {}", first.label, first.text);
        Some((first.line, excerpt(&shown, EXCERPT_CHARS)))
    } else {
        None
    };
    if let Some(allowed) = labels {
        if let Some(bad) = rows.iter().find(|r| !allowed.contains(&r.label.as_str())) {
            let list = excerpt(&allowed.join(", "), 120);
            return Err(Error::parse(
                path,
                bad.line,
                format!(
                    "bad label '{}': expected one of {list}",
                    excerpt(&bad.label, EXCERPT_CHARS)
                ),
            ));
        }
    }
    Ok(LabelledFile { rows, header })
}

/// Lines looked at to recognise a file's layout.
const SAMPLE_LINES: usize = 200;

/// Words a header line's first field is often called.
const HEADER_LABELS: [&str; 12] = [
    "label",
    "labels",
    "class",
    "category",
    "sentiment",
    "polarity",
    "target",
    "tag",
    "y",
    "v1",
    "rating",
    "score",
];

/// Whether the first row is a header: a first field named like a label column (`label`,
/// `class`, ...), or a label that occurs nowhere else while every other label repeats; either
/// way with at most three words of "text" and a label that is not a number.
fn is_header(rows: &[LabelledText]) -> bool {
    let Some(first) = rows.first() else {
        return false;
    };
    let name = first
        .label
        .trim_matches(|c: char| !c.is_alphanumeric())
        .to_ascii_lowercase();
    if first.text.split_whitespace().count() > 3 || first.label.parse::<f64>().is_ok() {
        return false;
    }
    if HEADER_LABELS.contains(&name.as_str()) && rows.len() > 1 {
        return true;
    }
    let mut counts: HashMap<&str, usize> = HashMap::new();
    for r in rows {
        *counts.entry(r.label.as_str()).or_default() += 1;
    }
    rows.len() >= 5
        && counts[first.label.as_str()] == 1
        && counts.values().filter(|&&c| c == 1).count() == 1
}

/// Refuses files of another layout (see the [module docs](self)), judged on their first
/// [`SAMPLE_LINES`] non-blank lines.
fn check_layout(path: &Path, text: &str) -> Result<()> {
    let mut sample: Vec<(usize, &str)> = Vec::new();
    let mut sentence_break = false;
    let mut blank_before = false;
    for (line, content) in numbered_lines(text) {
        if content.trim().is_empty() {
            blank_before = !sample.is_empty();
            continue;
        }
        sentence_break |= blank_before;
        blank_before = false;
        if sample.len() == SAMPLE_LINES {
            break;
        }
        sample.push((line, content.trim()));
    }
    let n = sample.len();
    if n == 0 {
        return Ok(());
    }
    let tag_task = "use `rnn train tag` for tagging data";
    // CoNLL-U: ten tab-separated columns, a numeric token id first.
    if let Some((line, _)) = sample.iter().find(|(_, l)| {
        let fields: Vec<&str> = l.split('\t').collect();
        fields.len() == 10
            && fields[0]
                .split(['-', '.'])
                .all(|p| p.parse::<u32>().is_ok())
    }) {
        return Err(Error::parse(
            path,
            *line,
            format!("this looks like CoNLL-U (10 tab-separated columns), not `label<TAB or space>text` lines; {tag_task}"),
        ));
    }
    // Comma-separated: the first field holds a comma in most lines.
    let comma_lines: Vec<&(usize, &str)> = sample
        .iter()
        .filter(|(_, l)| {
            let field = l.split([' ', '\t']).next().unwrap_or_default();
            field.find(',').is_some_and(|at| at > 0 && at <= 30)
        })
        .collect();
    if comma_lines.len() * 2 > n {
        let (line, content) = comma_lines[0];
        return Err(Error::parse(
            path,
            *line,
            format!(
                "expected `label<TAB or space>text`; line {line} looks comma-separated (`{}`): put a TAB or a space after the label instead of the comma",
                excerpt(content, 40)
            ),
        ));
    }
    // CoNLL: a few short columns in (nearly) every line, blank lines between sentences, the last
    // column a tag (no lowercase letters) or fewer distinct values than the first.
    let widths: Vec<usize> = sample
        .iter()
        .map(|(_, l)| l.split_whitespace().count())
        .collect();
    let width = widths[0];
    if sentence_break
        && (2..=5).contains(&width)
        && widths.iter().filter(|&&w| w == width).count() * 10 >= n * 9
    {
        let column = |i: usize| -> HashSet<&str> {
            sample
                .iter()
                .filter_map(|(_, l)| l.split_whitespace().nth(i))
                .collect()
        };
        let (first, last) = (column(0), column(width - 1));
        let tag_like = last.iter().all(|t| !t.chars().any(char::is_lowercase));
        if tag_like || last.len() < first.len() {
            return Err(Error::file(
                path,
                format!("this looks like CoNLL (token<TAB>tag lines, blank lines between sentences), not `label<TAB or space>text` lines; {tag_task}"),
            ));
        }
    }
    // `text<TAB>label`: one TAB per line, words before it, one word after it, few distinct.
    let tabbed: Vec<(&str, &str)> = sample
        .iter()
        .filter_map(|(_, l)| l.split_once('\t'))
        .filter(|(_, after)| !after.contains('\t'))
        .collect();
    if tabbed.len() * 10 >= n * 9 {
        let one_word_after = tabbed
            .iter()
            .all(|(_, after)| after.split_whitespace().count() == 1);
        let words_before = tabbed
            .iter()
            .filter(|(before, _)| before.split_whitespace().count() > 1)
            .count();
        let labels_after: HashSet<&str> = tabbed.iter().map(|(_, a)| a.trim()).collect();
        let labels_before: HashSet<&str> = tabbed.iter().map(|(b, _)| b.trim()).collect();
        if one_word_after
            && words_before * 2 > tabbed.len()
            && labels_after.len() * 2 <= labels_before.len()
        {
            let (line, content) = sample[0];
            return Err(Error::parse(
                path,
                line,
                format!(
                    "expected `label<TAB or space>text`; line {line} looks like `text<TAB>label` (`{}`): put the label first",
                    excerpt(content, 40)
                ),
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::testutil::write_file;
    use super::*;

    #[test]
    fn reads_space_and_tab_separated_lines() {
        let (_d, p) = write_file("sst.txt", b"1 a great film\n\n0\tdull , slow\n");
        let rows = read_labelled(&p, Some(&["0", "1"])).unwrap();
        assert_eq!(rows.len(), 2);
        assert_eq!(
            (rows[0].label.as_str(), rows[0].text.as_str()),
            ("1", "a great film")
        );
        assert_eq!(
            (rows[1].label.as_str(), rows[1].text.as_str(), rows[1].line),
            ("0", "dull , slow", 3)
        );
    }

    #[test]
    fn malformed_lines_name_file_and_line() {
        let (_d, p) = write_file("sst.txt", b"1 fine\n2 unknown label\n");
        let err = read_labelled(&p, Some(&["0", "1"]))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("sst.txt:2:") && err.contains("bad label '2'"),
            "{err}"
        );
        let (_d, p) = write_file("sst.txt", b"1 fine\nnoseparator\n");
        let err = read_labelled(&p, None).unwrap_err().to_string();
        assert!(
            err.contains("sst.txt:2:") && err.contains("separator"),
            "{err}"
        );
        let (_d, p) = write_file("sst.txt", b"1   \t \n");
        let err = read_labelled(&p, None).unwrap_err().to_string();
        assert!(
            err.contains("sst.txt:1:") && err.contains("no text"),
            "{err}"
        );
    }

    #[test]
    fn other_layouts_are_refused_in_one_short_line() {
        let long = "w ".repeat(70_000);
        let cases: [(&str, String, &str); 5] = [
            (
                "spam.csv",
                format!("ham,Go until jurong point {long}\nspam,Free entry\nham,Ok lar\n"),
                "spam.csv:1: expected `label<TAB or space>text`; line 1 looks comma-separated (`ham,Go until jurong point w w w w w w w…`)",
            ),
            (
                "ner.conll",
                "EU\tB-ORG\nrejects\tO\nGerman\tB-MISC\n\nPeter\tB-PER\nBlackburn\tI-PER\n".to_string(),
                "ner.conll: this looks like CoNLL (token<TAB>tag lines",
            ),
            (
                "ner4.txt",
                "-DOCSTART- -X- -X- O\n\nEU NNP B-NP B-ORG\nrejects VBZ B-VP O\n\nPeter NNP B-NP B-PER\n".to_string(),
                "ner4.txt: this looks like CoNLL",
            ),
            (
                "ud.conllu",
                "# sent_id = 1\n1\tHi\thi\tINTJ\tUH\t_\t0\troot\t_\t_\n".to_string(),
                "ud.conllu:2: this looks like CoNLL-U",
            ),
            (
                "swapped.tsv",
                "a great film\tpos\ndull and slow\tneg\nfine work\tpos\nbad acting here\tneg\n".to_string(),
                "swapped.tsv:1: expected `label<TAB or space>text`; line 1 looks like `text<TAB>label`",
            ),
        ];
        for (name, text, start) in cases {
            let (_d, p) = write_file(name, text.as_bytes());
            let e = read_labelled(&p, None).unwrap_err().to_string();
            let e = e.replace(&format!("{}", p.parent().unwrap().display()), "");
            assert!(e.trim_start_matches('/').starts_with(start), "{e}");
            assert!(e.len() < 300, "{} chars: {e}", e.len());
            assert!(!e.contains('\n'), "{e}");
        }
    }

    #[test]
    fn single_word_texts_and_commas_in_text_still_read() {
        let (_d, p) = write_file("w.txt", b"1 good\n0 bad\n\n1 nice\n0 awful\n");
        assert_eq!(read_labelled(&p, None).unwrap().len(), 4);
        let (_d, p) = write_file("c.txt", b"1 hello, world\n0 no,thanks\n");
        assert_eq!(read_labelled(&p, None).unwrap().len(), 2);
        let (_d, p) = write_file("t.txt", b"1\ta great film\n0\tdull\n");
        assert_eq!(read_labelled(&p, None).unwrap().len(), 2);
    }

    #[test]
    fn header_lines_are_skipped_and_reported() {
        let (_d, p) = write_file("h.tsv", b"label\ttext\n1\tgood film\n0\tbad film\n");
        let f = read_labelled_file(&p, None, TextEncoding::UTF8).unwrap();
        assert_eq!(f.header, Some((1, "label text".to_string())));
        assert_eq!(f.rows.len(), 2);
        assert_eq!(f.rows[0].line, 2);
        // A first label seen nowhere else while every other label repeats.
        let text = b"polarity review\npos a\nneg b\npos c\nneg d\n";
        let (_d, p) = write_file("h.txt", text);
        let f = read_labelled_file(&p, Some(&["pos", "neg"]), TextEncoding::UTF8).unwrap();
        assert_eq!(f.header.map(|h| h.0), Some(1));
        let (_d, p) = write_file("h2.txt", b"Sentiment Review\npos a\nneg b\npos c\nneg d\n");
        assert!(read_labelled_file(&p, None, TextEncoding::UTF8)
            .unwrap()
            .header
            .is_some());
        // A real example of a rare class is kept: its text is long, or its label a number.
        let (_d, p) = write_file(
            "n.txt",
            b"neutral it was fine I guess\npos a\nneg b\npos c\nneg d\n",
        );
        assert!(read_labelled_file(&p, None, TextEncoding::UTF8)
            .unwrap()
            .header
            .is_none());
        let (_d, p) = write_file("n.txt", b"2 ok\n1 a\n0 b\n1 c\n0 d\n");
        assert!(read_labelled_file(&p, None, TextEncoding::UTF8)
            .unwrap()
            .header
            .is_none());
    }

    #[test]
    fn latin1_files_read_with_their_encoding() {
        let (_d, p) = write_file("l1.txt", b"1 caf\xe9 cr\xe8me\n0 bof\n");
        let e = read_labelled(&p, None).unwrap_err().to_string();
        assert!(e.contains("l1.txt:1: not valid UTF-8"), "{e}");
        let latin1 = TextEncoding::from_label("latin1").unwrap();
        let f = read_labelled_file(&p, None, latin1).unwrap();
        assert_eq!(f.rows[0].text, "caf\u{e9} cr\u{e8}me");
    }

    #[test]
    fn long_labels_are_shortened_in_errors() {
        let long = "x".repeat(5000);
        let (_d, p) = write_file("l.txt", format!("{long} \n").as_bytes());
        let e = read_labelled(&p, None).unwrap_err().to_string();
        assert!(e.len() < 300 && e.contains("no text"), "{e}");
        let (_d, p) = write_file("l.txt", format!("{long} text\n").as_bytes());
        let e = read_labelled(&p, Some(&["0", "1"]))
            .unwrap_err()
            .to_string();
        assert!(e.len() < 300 && e.contains("bad label"), "{e}");
    }
}
