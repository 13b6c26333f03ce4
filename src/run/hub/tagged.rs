//! Token-tagging datasets for `tag` (`--hf-dataset NAME --tokens-column tokens --tags-column
//! ner_tags`, as in conll2003): two list columns per row, the sentence's tokens (strings) and
//! their tags (strings, or integers: class ids).
//!
//! The split's parquet files come from the cache or the Hub as for `classify` (see the
//! [parent module](super)). Integer tags are named by the `ClassLabel` names that the
//! `huggingface` metadata of a converted parquet file records for the column (conll2003's
//! `O`, `B-PER`, …), so the BIO scheme of named entities is seen; without such names the ids
//! themselves are the tags. The sentences become a 2-column CoNLL file (`token tag` per line, a
//! blank line between sentences) in the run directory, which the rest of the task reads like
//! any `--data` file (so `rnn eval` re-scores the same sentences).

use std::path::{Path, PathBuf};

use anyhow::{bail, Result};

use crate::run::RunContext;

/// Where `tag` reads a Hugging Face dataset from: `--hf-dataset`, `--hf-split`,
/// `--tokens-column` and `--tags-column`.
#[derive(Debug, Clone, PartialEq)]
pub struct HfTokens {
    /// The dataset id, `OWNER/NAME`.
    pub dataset: String,
    /// The split (`train`, `validation`, `test`, …).
    pub split: String,
    /// The list column with each sentence's tokens.
    pub tokens_column: String,
    /// The list column with each sentence's tags (strings or class ids).
    pub tags_column: String,
}

impl HfTokens {
    /// The source `ctx`'s options name, if `--hf-dataset` is given.
    pub fn from_options(ctx: &RunContext) -> Option<HfTokens> {
        let o = &ctx.opts;
        Some(HfTokens {
            dataset: o.hf_dataset.clone()?,
            split: o.hf_split.clone().unwrap_or_else(|| "train".into()),
            tokens_column: o.tokens_column.clone().unwrap_or_else(|| "tokens".into()),
            tags_column: o.tags_column.clone().unwrap_or_else(|| "ner_tags".into()),
        })
    }
}

/// Writes the tagged sentences of `src` to a 2-column CoNLL file under `out` and returns its
/// path.
#[cfg(not(feature = "hub"))]
pub fn conll_file(src: &HfTokens, _out: &Path) -> Result<PathBuf> {
    bail!(
        "--hf-dataset {}: this rnn was built without Hugging Face datasets; rebuild with --features hub",
        src.dataset
    )
}

/// Writes the tagged sentences of `src` to a 2-column CoNLL file under `out` and returns its
/// path.
#[cfg(feature = "hub")]
pub fn conll_file(src: &HfTokens, out: &Path) -> Result<PathBuf> {
    use anyhow::Context;
    use std::io::Write;

    let files = super::split_files(&src.dataset, &src.split)?;
    let dir = out.join("hf-data");
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let path = dir.join(format!(
        "{}.{}.conll",
        src.dataset.replace('/', "--"),
        src.split
    ));
    let mut w = std::io::BufWriter::new(
        std::fs::File::create(&path)
            .with_context(|| format!("cannot create {}", path.display()))?,
    );
    let mut count = 0usize;
    for file in &files {
        for sentence in read_sentences(file, &src.tokens_column, &src.tags_column)? {
            for (token, tag) in sentence {
                writeln!(w, "{token} {tag}")?;
            }
            writeln!(w)?;
            count += 1;
        }
    }
    w.flush()?;
    if count == 0 {
        bail!(
            "--hf-dataset {} --hf-split {}: the parquet files hold no sentences with tokens",
            src.dataset,
            src.split
        );
    }
    Ok(path)
}

/// The `ClassLabel` names of list column `column`, from the `huggingface` key of a parquet
/// file's metadata (`{"info": {"features": {COLUMN: {"feature": {"names": [...]}}}}}`; the
/// feature's `_type` is `Sequence` or `List`).
pub fn class_names(huggingface: &str, column: &str) -> Option<Vec<String>> {
    let meta: serde_json::Value = serde_json::from_str(huggingface).ok()?;
    let feature = &meta["info"]["features"][column];
    let names = feature["feature"]["names"]
        .as_array()
        .or_else(|| feature["names"].as_array())?;
    names
        .iter()
        .map(|n| n.as_str().map(str::to_string))
        .collect()
}

/// The sentences of one parquet file as (token, tag) pairs; rows with a null or empty token
/// list are skipped.
#[cfg(feature = "hub")]
fn read_sentences(
    file: &Path,
    tokens_column: &str,
    tags_column: &str,
) -> Result<Vec<Vec<(String, String)>>> {
    use anyhow::Context;
    use parquet::file::reader::{FileReader, SerializedFileReader};
    use parquet::record::Field;

    let open = || -> Result<SerializedFileReader<std::fs::File>> {
        Ok(SerializedFileReader::new(std::fs::File::open(file)?)?)
    };
    let reader =
        open().with_context(|| format!("{}: cannot read the parquet file", file.display()))?;
    let meta = reader.metadata().file_metadata();
    let columns: Vec<String> = meta
        .schema_descr()
        .root_schema()
        .get_fields()
        .iter()
        .map(|f| f.name().to_string())
        .collect();
    for (flag, c) in [
        ("--tokens-column", tokens_column),
        ("--tags-column", tags_column),
    ] {
        if !columns.iter().any(|n| n == c) {
            bail!(
                "{}: {flag} {c}: no such column (columns: {})",
                file.display(),
                columns.join(", ")
            );
        }
    }
    let names = meta
        .key_value_metadata()
        .and_then(|kv| kv.iter().find(|k| k.key == "huggingface"))
        .and_then(|k| k.value.as_deref())
        .and_then(|v| class_names(v, tags_column));
    let at = |i: usize| format!("{}: row {}", file.display(), i + 1);
    let list = |field: &Field, column: &str, i: usize| -> Result<Option<Vec<Field>>> {
        match field {
            Field::Null => Ok(None),
            Field::ListInternal(l) => Ok(Some(l.elements().to_vec())),
            other => bail!("{}: column {column} holds {other}, not a list", at(i)),
        }
    };
    let mut sentences = Vec::new();
    let iter = reader
        .get_row_iter(None)
        .with_context(|| format!("{}: cannot read the rows", file.display()))?;
    for (i, row) in iter.enumerate() {
        let row = row.with_context(|| at(i))?;
        let (mut tokens, mut tags) = (None, None);
        for (name, field) in row.get_column_iter() {
            if name == tokens_column {
                tokens = list(field, name, i)?;
            } else if name == tags_column {
                tags = list(field, name, i)?;
            }
        }
        let (Some(tokens), Some(tags)) = (tokens, tags) else {
            continue;
        };
        if tokens.is_empty() {
            continue;
        }
        if tokens.len() != tags.len() {
            bail!(
                "{}: {} tokens ({tokens_column}) and {} tags ({tags_column})",
                at(i),
                tokens.len(),
                tags.len()
            );
        }
        let mut sentence = Vec::with_capacity(tokens.len());
        for (token, tag) in tokens.iter().zip(&tags) {
            let Field::Str(token) = token else {
                bail!("{}: {tokens_column} holds {token}, not a string", at(i));
            };
            let tag = match (tag, &names) {
                (Field::Str(s), _) => s.clone(),
                (
                    Field::Byte(_)
                    | Field::Short(_)
                    | Field::Int(_)
                    | Field::Long(_)
                    | Field::UByte(_)
                    | Field::UShort(_)
                    | Field::UInt(_)
                    | Field::ULong(_),
                    Some(names),
                ) => {
                    let id = tag.to_string();
                    match id.parse::<usize>().ok().and_then(|k| names.get(k)) {
                        Some(name) => name.clone(),
                        None => bail!(
                            "{}: tag id {id} ({tags_column}) has no name among the {} the file's metadata lists",
                            at(i),
                            names.len()
                        ),
                    }
                }
                (
                    Field::Byte(_)
                    | Field::Short(_)
                    | Field::Int(_)
                    | Field::Long(_)
                    | Field::UByte(_)
                    | Field::UShort(_)
                    | Field::UInt(_)
                    | Field::ULong(_),
                    None,
                ) => tag.to_string(),
                (other, _) => bail!(
                    "{}: {tags_column} holds {other}, not a string or an integer",
                    at(i)
                ),
            };
            for (what, v) in [("token", token.as_str()), ("tag", tag.as_str())] {
                if v.is_empty() || v.contains(char::is_whitespace) {
                    bail!("{}: {what} '{v}' is empty or holds white space", at(i));
                }
            }
            sentence.push((token.clone(), tag));
        }
        sentences.push(sentence);
    }
    Ok(sentences)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(not(feature = "hub"))]
    #[test]
    fn without_the_feature_a_dataset_asks_for_a_rebuild() {
        let src = HfTokens {
            dataset: "a/b".into(),
            split: "train".into(),
            tokens_column: "tokens".into(),
            tags_column: "ner_tags".into(),
        };
        let e = conll_file(&src, Path::new("out")).unwrap_err().to_string();
        assert!(e.contains("--hf-dataset a/b"), "{e}");
        assert!(e.contains("rebuild with --features hub"), "{e}");
    }

    #[test]
    fn class_names_come_from_sequence_and_list_features() {
        let seq = r#"{"info": {"features": {"ner_tags": {"feature": {"names": ["O", "B-PER"], "_type": "ClassLabel"}, "_type": "Sequence"}}}}"#;
        assert_eq!(
            class_names(seq, "ner_tags"),
            Some(vec!["O".to_string(), "B-PER".to_string()])
        );
        let list = r#"{"info": {"features": {"tags": {"feature": {"names": ["X"], "_type": "ClassLabel"}, "_type": "List"}}}}"#;
        assert_eq!(class_names(list, "tags"), Some(vec!["X".to_string()]));
        assert_eq!(class_names(seq, "pos_tags"), None);
        assert_eq!(class_names("not json", "ner_tags"), None);
    }
}
