//! Source/target sequence pairs from tab-separated lines (e.g. `fra.txt`: English, French,
//! attribution).

use super::{numbered_lines, read_text, text_from_bytes};
use crate::{Error, Result};
use std::path::Path;

/// One source/target pair.
#[derive(Debug, Clone, PartialEq)]
pub struct SequencePair {
    /// Source text.
    pub source: String,
    /// Target text.
    pub target: String,
    /// 1-based line in the file.
    pub line: usize,
}

/// Reads pairs from columns `source_col` and `target_col` (0-based) of tab-separated lines; extra
/// columns are ignored, blank lines skipped; a line with too few columns or an empty side is an
/// error naming the line.
pub fn read_pairs(path: &Path, source_col: usize, target_col: usize) -> Result<Vec<SequencePair>> {
    pair_lines(path, &read_text(path)?, source_col, target_col)
}

/// [`read_pairs`] of a file's bytes already in memory; `path` only names the file in errors.
pub fn parse_pairs(
    path: &Path,
    bytes: &[u8],
    source_col: usize,
    target_col: usize,
) -> Result<Vec<SequencePair>> {
    pair_lines(
        path,
        &text_from_bytes(path, bytes.to_vec())?,
        source_col,
        target_col,
    )
}

fn pair_lines(
    path: &Path,
    text: &str,
    source_col: usize,
    target_col: usize,
) -> Result<Vec<SequencePair>> {
    let need = source_col
        .max(target_col)
        .checked_add(1)
        .ok_or_else(|| Error::Invalid(format!("column {} is out of range", usize::MAX)))?;
    let mut out = Vec::new();
    for (line, content) in numbered_lines(text) {
        if content.trim().is_empty() {
            continue;
        }
        let fields: Vec<&str> = content.split('\t').collect();
        if fields.len() < need {
            return Err(Error::parse(
                path,
                line,
                format!(
                    "expected at least {need} tab-separated columns, found {}",
                    fields.len()
                ),
            ));
        }
        let (source, target) = (fields[source_col].trim(), fields[target_col].trim());
        if source.is_empty() || target.is_empty() {
            return Err(Error::parse(path, line, "empty source or target"));
        }
        out.push(SequencePair {
            source: source.to_string(),
            target: target.to_string(),
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
    fn pairs_and_errors() {
        let (_d, p) = write_file("fra.txt", b"Go.\tVa !\tCC-BY\nHi.\tSalut !\tCC-BY\n");
        let pairs = read_pairs(&p, 0, 1).unwrap();
        assert_eq!(pairs.len(), 2);
        assert_eq!(
            (pairs[1].source.as_str(), pairs[1].target.as_str()),
            ("Hi.", "Salut !")
        );
        let swapped = read_pairs(&p, 1, 0).unwrap();
        assert_eq!(swapped[0].source, "Va !");
        let (_d, p) = write_file("fra.txt", b"Go.\tVa !\nonly one column\n");
        let err = read_pairs(&p, 0, 1).unwrap_err().to_string();
        assert!(
            err.contains("fra.txt:2:") && err.contains("found 1"),
            "{err}"
        );
        let (_d, p) = write_file("fra.txt", b"Go.\t \n");
        let err = read_pairs(&p, 0, 1).unwrap_err().to_string();
        assert!(err.contains("fra.txt:1:") && err.contains("empty"), "{err}");
    }
}
