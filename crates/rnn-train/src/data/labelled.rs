//! Labelled sequences: one example per line, `label<space or tab>text` (the SST-2 `stsa.binary`
//! format).

use super::{numbered_lines, read_text, text_from_bytes};
use crate::{Error, Result};
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

/// Reads `label text` lines; blank lines are skipped. With `labels = Some(list)`, a label outside
/// the list is an error naming the line. A line with no text after its label is an error.
pub fn read_labelled(path: &Path, labels: Option<&[&str]>) -> Result<Vec<LabelledText>> {
    labelled_lines(path, &read_text(path)?, labels)
}

/// [`read_labelled`] of a file's bytes already in memory; `path` only names the file in errors.
pub fn parse_labelled(
    path: &Path,
    bytes: &[u8],
    labels: Option<&[&str]>,
) -> Result<Vec<LabelledText>> {
    labelled_lines(path, &text_from_bytes(path, bytes.to_vec())?, labels)
}

fn labelled_lines(path: &Path, text: &str, labels: Option<&[&str]>) -> Result<Vec<LabelledText>> {
    let mut out = Vec::new();
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
                format!("label '{label}' has no text after it"),
            ));
        }
        if let Some(allowed) = labels {
            if !allowed.contains(&label) {
                return Err(Error::parse(
                    path,
                    line,
                    format!("bad label '{label}': expected one of {allowed:?}"),
                ));
            }
        }
        out.push(LabelledText {
            label: label.to_string(),
            text: rest.to_string(),
            line,
        });
    }
    Ok(out)
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
}
