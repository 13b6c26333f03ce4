//! Labelled sequences: one example per line, `label<space or tab>text` (the SST-2 `stsa.binary`
//! format).
//!
//! Files of other layouts parse as this one without complaint and then make nonsense classes, so
//! they are recognised first and refused in one short line that names the likely fix:
//! comma-separated lines (`ham,Go until ...`), `text<TAB>label` lines (the label last), CoNLL
//! (`token<TAB>tag` lines with blank lines between sentences) and CoNLL-U. A header line
//! (`label<TAB>text`, or a first label that occurs nowhere else while every other label repeats)
//! is skipped and reported in [`LabelledFile::header`].

use super::{
    excerpt, numbered_lines, read_text_as, text_from_bytes, FileLines, TextEncoding, EXCERPT_CHARS,
};
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
        if let Some(row) = parse_line(path, line, content)? {
            rows.push(row);
        }
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

/// One line of a labelled file: `None` for a blank line, else the example (an error naming the
/// line when it has no separator or no text after its label).
fn parse_line(path: &Path, line: usize, content: &str) -> Result<Option<LabelledText>> {
    if content.trim().is_empty() {
        return Ok(None);
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
    Ok(Some(LabelledText {
        label: label.to_string(),
        text: rest.to_string(),
        line,
    }))
}

/// What a first pass over a labelled file too large to hold found ([`scan_labelled`]).
#[derive(Debug, Clone, PartialEq)]
pub struct LabelledScan {
    /// How many examples the file holds (the header excluded).
    pub examples: usize,
    /// The skipped header line: its 1-based number and its content (shortened).
    pub header: Option<(usize, String)>,
}

/// A first pass over the labelled file `path` (UTF-8) read line by line, holding one example at
/// a time: checks the layout and every line as [`read_labelled_file`] does, decides on the
/// header line by the same rules, and calls `each` on every example (the header excluded), in
/// file order except that the first example comes last (it is held until the header rule, which
/// counts the labels of the whole file, has decided on it).
pub fn scan_labelled(path: &Path, mut each: impl FnMut(&LabelledText)) -> Result<LabelledScan> {
    // The first lines wait (at most SAMPLE_LINES non-blank ones) until the layout is checked,
    // so that a file of another layout is refused as a whole, before any line's own error.
    let mut pending: Vec<(usize, String)> = Vec::new();
    let mut sampled = 0usize;
    let mut layout_checked = false;
    let mut first: Option<LabelledText> = None;
    let mut counts: HashMap<String, usize> = HashMap::new();
    let mut examples = 0usize;
    let mut take = |line: usize, content: &str| -> Result<()> {
        let Some(row) = parse_line(path, line, content)? else {
            return Ok(());
        };
        *counts.entry(row.label.clone()).or_default() += 1;
        examples += 1;
        if first.is_none() {
            first = Some(row);
        } else {
            each(&row);
        }
        Ok(())
    };
    let check_pending = |pending: &mut Vec<(usize, String)>,
                         take: &mut dyn FnMut(usize, &str) -> Result<()>|
     -> Result<()> {
        let text: String = pending.iter().map(|(_, l)| format!("{l}\n")).collect();
        check_layout(path, &text)?;
        for (line, content) in pending.drain(..) {
            take(line, &content)?;
        }
        Ok(())
    };
    for item in FileLines::open(path)? {
        let (line, content) = item?;
        if layout_checked {
            take(line, &content)?;
            continue;
        }
        sampled += usize::from(!content.trim().is_empty());
        pending.push((line, content));
        if sampled == SAMPLE_LINES {
            check_pending(&mut pending, &mut take)?;
            layout_checked = true;
        }
    }
    if !layout_checked {
        check_pending(&mut pending, &mut take)?;
    }
    let Some(first) = first else {
        return Err(Error::file(path, "the file is empty"));
    };
    let header = if header_by_counts(&first, examples, &counts) {
        examples -= 1;
        let shown = format!("{} {}", first.label, first.text);
        Some((first.line, excerpt(&shown, EXCERPT_CHARS)))
    } else {
        each(&first);
        None
    };
    Ok(LabelledScan { examples, header })
}

/// The examples of the labelled file `path` (UTF-8) read line by line, one at a time, skipping
/// blank lines and the header line that [`scan_labelled`] found (`header`, its 1-based number).
pub fn stream_labelled(
    path: &Path,
    header: Option<usize>,
) -> Result<impl Iterator<Item = Result<LabelledText>>> {
    let path_buf = path.to_path_buf();
    Ok(FileLines::open(path)?.filter_map(move |item| match item {
        Err(e) => Some(Err(e)),
        Ok((line, _)) if Some(line) == header => None,
        Ok((line, content)) => parse_line(&path_buf, line, &content).transpose(),
    }))
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
    let mut counts: HashMap<&str, usize> = HashMap::new();
    for r in rows {
        *counts.entry(r.label.as_str()).or_default() += 1;
    }
    header_by_counts(first, rows.len(), &counts)
}

/// [`is_header`] given the first row, the number of rows and each label's count.
fn header_by_counts<K>(first: &LabelledText, rows: usize, counts: &HashMap<K, usize>) -> bool
where
    K: std::borrow::Borrow<str> + std::hash::Hash + Eq,
{
    let name = first
        .label
        .trim_matches(|c: char| !c.is_alphanumeric())
        .to_ascii_lowercase();
    if first.text.split_whitespace().count() > 3 || first.label.parse::<f64>().is_ok() {
        return false;
    }
    if HEADER_LABELS.contains(&name.as_str()) && rows > 1 {
        return true;
    }
    rows >= 5
        && counts.get(first.label.as_str()) == Some(&1)
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

    #[test]
    fn scan_and_stream_agree_with_the_whole_file_reader() {
        let long: String = (0..300)
            .map(|i| format!("{} text {i}\r\n", i % 3))
            .collect();
        let cases = [
            "label\ttext\n1\tgood film\n\n0\tbad film\n".to_string(),
            "polarity review\npos a\nneg b\npos c\nneg d\n".to_string(),
            "\u{feff}1 fine\n0 dull\n".to_string(),
            long,
        ];
        for text in cases {
            let (_d, p) = write_file("s.txt", text.as_bytes());
            let whole = read_labelled_file(&p, None, TextEncoding::UTF8).unwrap();
            let mut seen = Vec::new();
            let scan = scan_labelled(&p, |r| seen.push(r.clone())).unwrap();
            assert_eq!(scan.header, whole.header);
            assert_eq!(scan.examples, whole.rows.len());
            seen.sort_by_key(|r| r.line);
            assert_eq!(seen, whole.rows);
            let streamed: Vec<LabelledText> = stream_labelled(&p, scan.header.map(|h| h.0))
                .unwrap()
                .collect::<Result<_>>()
                .unwrap();
            assert_eq!(streamed, whole.rows);
        }
        // The same refusals and errors, naming the line.
        let (_d, p) = write_file("c.csv", b"ham,Go until\nspam,Free entry\nham,Ok\n");
        let e = scan_labelled(&p, |_| {}).unwrap_err().to_string();
        assert!(
            e.contains("c.csv:1:") && e.contains("comma-separated"),
            "{e}"
        );
        let (_d, p) = write_file("b.txt", b"1 fine\n0 caf\xe9\n");
        let e = scan_labelled(&p, |_| {}).unwrap_err().to_string();
        assert!(e.contains("b.txt:2:") && e.contains("UTF-8"), "{e}");
        let (_d, p) = write_file("e.txt", b"\n \n");
        let e = scan_labelled(&p, |_| {}).unwrap_err().to_string();
        assert!(e.contains("e.txt") && e.contains("empty"), "{e}");
    }
}
