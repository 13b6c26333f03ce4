//! Hugging Face datasets for `classify`, `digits` and `tag` (`--hf-dataset OWNER/NAME`, feature
//! `hub`).
//!
//! The split's parquet files are looked up in the local Hugging Face cache first
//! (`$HF_HUB_CACHE`, else `$HF_HOME/hub`, else `~/.cache/huggingface/hub`), laid out as
//! `datasets--OWNER--NAME/snapshots/REV/…/*.parquet`, so a run works offline once the dataset has
//! been downloaded. A split's files are those named `SPLIT.parquet` or `SPLIT-*.parquet`, or
//! under a folder named `SPLIT` (the Hub's `refs/convert/parquet` layout,
//! `default/SPLIT/0000.parquet`). Only when nothing is cached is the Hub asked, through
//! `candle_datasets::hub::from_hub`, which fills the same cache.
//!
//! The (text, label) rows become a `label<TAB>text` file in the run directory, which the rest of
//! the task reads like any `--data` file (so `rnn eval` re-scores the same rows).
//!
//! `digits` reads MNIST through candle-datasets' own loader ([`mnist_idx_files`]); `tag` reads
//! token and tag list columns, like `classify` its text and label ([`conll_file`]).

use std::path::{Path, PathBuf};

use anyhow::{bail, Result};

use super::RunContext;

mod mnist;
mod tagged;
pub use mnist::{mnist_idx_files, MNIST_DATASETS};
pub use tagged::{class_names, conll_file, HfTokens};

/// Where a run reads a Hugging Face dataset from: `--hf-dataset`, `--hf-split`,
/// `--text-column` and `--label-column`.
#[derive(Debug, Clone, PartialEq)]
pub struct HfSource {
    /// The dataset id, `OWNER/NAME`.
    pub dataset: String,
    /// The split (`train`, `validation`, `test`, …).
    pub split: String,
    /// The column with the text.
    pub text_column: String,
    /// The column with the label (a string or an integer).
    pub label_column: String,
}

impl HfSource {
    /// The source `ctx`'s options name, if `--hf-dataset` is given.
    pub fn from_options(ctx: &RunContext) -> Option<HfSource> {
        let o = &ctx.opts;
        Some(HfSource {
            dataset: o.hf_dataset.clone()?,
            split: o.hf_split.clone().unwrap_or_else(|| "train".into()),
            text_column: o.text_column.clone().unwrap_or_else(|| "text".into()),
            label_column: o.label_column.clone().unwrap_or_else(|| "label".into()),
        })
    }
}

/// Writes the (label, text) rows of `src` to a `label<TAB>text` file under `out` and returns
/// its path.
#[cfg(not(feature = "hub"))]
pub fn labelled_file(src: &HfSource, _out: &Path) -> Result<PathBuf> {
    bail!(
        "--hf-dataset {}: this rnn was built without Hugging Face datasets; rebuild with --features hub",
        src.dataset
    )
}

/// Writes the (label, text) rows of `src` to a `label<TAB>text` file under `out` and returns
/// its path.
#[cfg(feature = "hub")]
pub fn labelled_file(src: &HfSource, out: &Path) -> Result<PathBuf> {
    use anyhow::Context;
    use std::io::Write;

    let files = split_files(&src.dataset, &src.split)?;
    let dir = out.join("hf-data");
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let path = dir.join(format!(
        "{}.{}.txt",
        src.dataset.replace('/', "--"),
        src.split
    ));
    let mut w = std::io::BufWriter::new(
        std::fs::File::create(&path)
            .with_context(|| format!("cannot create {}", path.display()))?,
    );
    let mut count = 0usize;
    for file in &files {
        for (label, text) in read_rows(file, &src.text_column, &src.label_column)? {
            writeln!(w, "{label}\t{text}")?;
            count += 1;
        }
    }
    w.flush()?;
    if count == 0 {
        bail!(
            "--hf-dataset {} --hf-split {}: the parquet files hold no rows with text",
            src.dataset,
            src.split
        );
    }
    Ok(path)
}

/// The Hugging Face hub cache, found as the hub client finds it: `$HF_HUB_CACHE`, else
/// `$HUGGINGFACE_HUB_CACHE`, else `HF_HOME/hub`, where `HF_HOME` is `$HF_HOME`, else
/// `$XDG_CACHE_HOME/huggingface`, else `~/.cache/huggingface`.
pub fn cache_dir() -> PathBuf {
    let var = |k: &str| {
        std::env::var_os(k)
            .filter(|d| !d.is_empty())
            .map(PathBuf::from)
    };
    if let Some(d) = var("HF_HUB_CACHE").or_else(|| var("HUGGINGFACE_HUB_CACHE")) {
        return d;
    }
    let home = var("HF_HOME")
        .or_else(|| var("XDG_CACHE_HOME").map(|x| x.join("huggingface")))
        .unwrap_or_else(|| {
            var("HOME")
                .unwrap_or_default()
                .join(".cache")
                .join("huggingface")
        });
    home.join("hub")
}

/// The parquet files of `split` of `dataset` in the cache `cache`, sorted; empty when none is
/// cached. Snapshots are tried in order: the one the ref `refs/convert/parquet` names, the one
/// `refs/main` names, then the others by name; the first with files of the split wins.
pub fn cached_split_files(cache: &Path, dataset: &str, split: &str) -> Vec<PathBuf> {
    let repo = cache.join(format!("datasets--{}", dataset.replace('/', "--")));
    let snapshots = repo.join("snapshots");
    let mut revs: Vec<PathBuf> = Vec::new();
    // The hub clients keep the ref `refs/convert/parquet` as `refs/refs/convert/parquet`.
    for r in [
        "refs/refs/convert/parquet",
        "refs/convert/parquet",
        "refs/main",
    ] {
        if let Ok(rev) = std::fs::read_to_string(repo.join(r)) {
            revs.push(snapshots.join(rev.trim()));
        }
    }
    if let Ok(entries) = std::fs::read_dir(&snapshots) {
        let mut others: Vec<PathBuf> = entries.flatten().map(|e| e.path()).collect();
        others.sort();
        revs.extend(others);
    }
    for rev in revs {
        let mut files = Vec::new();
        parquet_files(&rev, &rev, split, &mut files);
        if !files.is_empty() {
            files.sort();
            return files;
        }
    }
    Vec::new()
}

/// Collects under `dir` the `.parquet` files of `split` (see the [module docs](self)).
fn parquet_files(root: &Path, dir: &Path, split: &str, files: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for path in entries.flatten().map(|e| e.path()) {
        if path.is_dir() {
            parquet_files(root, &path, split, files);
        } else if is_split_file(path.strip_prefix(root).unwrap_or(&path), split) {
            files.push(path);
        }
    }
}

/// Whether `rel`, a path inside a snapshot, is a parquet file of `split`.
fn is_split_file(rel: &Path, split: &str) -> bool {
    let Some(stem) = rel
        .file_name()
        .and_then(|n| n.to_str())
        .and_then(|n| n.strip_suffix(".parquet"))
    else {
        return false;
    };
    let in_folder = rel
        .parent()
        .is_some_and(|p| p.components().any(|c| c.as_os_str() == split));
    stem == split || stem.starts_with(&format!("{split}-")) || in_folder
}

/// The split's parquet files: from the cache, else downloaded into it by
/// `candle_datasets::hub::from_hub`.
#[cfg(feature = "hub")]
pub(crate) fn split_files(dataset: &str, split: &str) -> Result<Vec<PathBuf>> {
    let cache = cache_dir();
    let files = cached_split_files(&cache, dataset, split);
    if !files.is_empty() {
        return Ok(files);
    }
    let not_cached = format!(
        "--hf-dataset {dataset} --hf-split {split}: no parquet files of the split in the Hugging Face cache {}",
        cache.display()
    );
    let fetched = hf_hub::HFClientSync::new()
        .map_err(candle_datasets::hub::Error::from)
        .and_then(|api| candle_datasets::hub::from_hub(&api, dataset.to_string()));
    if let Err(e) = fetched {
        bail!("{not_cached}, and the Hub could not be reached to download them (is the network unreachable?): {e}");
    }
    let files = cached_split_files(&cache, dataset, split);
    if files.is_empty() {
        bail!("{not_cached}, nor on the Hub (splits are files named SPLIT-*.parquet or folders named SPLIT)");
    }
    Ok(files)
}

/// The (label, text) rows of one parquet file; labels may be strings or integers, texts have
/// their line breaks and tabs turned into spaces. Rows with a null text or label are skipped.
#[cfg(feature = "hub")]
fn read_rows(file: &Path, text_column: &str, label_column: &str) -> Result<Vec<(String, String)>> {
    use anyhow::Context;
    use parquet::file::reader::{FileReader, SerializedFileReader};
    use parquet::record::Field;

    let open = || -> Result<SerializedFileReader<std::fs::File>> {
        Ok(SerializedFileReader::new(std::fs::File::open(file)?)?)
    };
    let reader =
        open().with_context(|| format!("{}: cannot read the parquet file", file.display()))?;
    let columns: Vec<String> = reader
        .metadata()
        .file_metadata()
        .schema_descr()
        .root_schema()
        .get_fields()
        .iter()
        .map(|f| f.name().to_string())
        .collect();
    for (flag, c) in [
        ("--text-column", text_column),
        ("--label-column", label_column),
    ] {
        if !columns.iter().any(|n| n == c) {
            bail!(
                "{}: {flag} {c}: no such column (columns: {})",
                file.display(),
                columns.join(", ")
            );
        }
    }
    let mut rows = Vec::new();
    let iter = reader
        .get_row_iter(None)
        .with_context(|| format!("{}: cannot read the rows", file.display()))?;
    for (i, row) in iter.enumerate() {
        let row = row.with_context(|| format!("{}: row {}", file.display(), i + 1))?;
        let (mut text, mut label) = (None, None);
        for (name, field) in row.get_column_iter() {
            let value = match field {
                Field::Null => None,
                Field::Str(s) => Some(s.clone()),
                Field::Bool(_)
                | Field::Byte(_)
                | Field::Short(_)
                | Field::Int(_)
                | Field::Long(_)
                | Field::UByte(_)
                | Field::UShort(_)
                | Field::UInt(_)
                | Field::ULong(_) => Some(field.to_string()),
                other => bail!(
                    "{}: row {}: column {name} holds {other}, not a string or an integer",
                    file.display(),
                    i + 1
                ),
            };
            if name == text_column {
                text = value;
            } else if name == label_column {
                label = value;
            }
        }
        let (Some(text), Some(label)) = (text, label) else {
            continue;
        };
        let text = text.split_whitespace().collect::<Vec<_>>().join(" ");
        if text.is_empty() {
            continue;
        }
        if label.is_empty() || label.contains(char::is_whitespace) {
            bail!(
                "{}: row {}: label '{label}' is empty or holds white space",
                file.display(),
                i + 1
            );
        }
        rows.push((label, text));
    }
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(not(feature = "hub"))]
    #[test]
    fn without_the_feature_a_dataset_asks_for_a_rebuild() {
        let src = HfSource {
            dataset: "a/b".into(),
            split: "train".into(),
            text_column: "text".into(),
            label_column: "label".into(),
        };
        let e = labelled_file(&src, Path::new("out"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("--hf-dataset a/b"), "{e}");
        assert!(e.contains("rebuild with --features hub"), "{e}");
    }

    #[test]
    fn split_files_are_picked_by_name_or_folder() {
        let p = |s: &str| PathBuf::from(s);
        assert!(is_split_file(
            &p("data/train-00000-of-00001.parquet"),
            "train"
        ));
        assert!(is_split_file(&p("default/train/0000.parquet"), "train"));
        assert!(is_split_file(&p("train.parquet"), "train"));
        assert!(!is_split_file(
            &p("data/test-00000-of-00001.parquet"),
            "train"
        ));
        assert!(!is_split_file(&p("data/trainer.parquet"), "train"));
        assert!(!is_split_file(&p("data/train-0.csv"), "train"));
    }

    #[test]
    fn cached_files_come_from_the_named_snapshot() {
        let dir = tempfile::tempdir().unwrap();
        let repo = dir.path().join("datasets--a--b");
        for rev in ["old", "new"] {
            let d = repo.join("snapshots").join(rev).join("data");
            std::fs::create_dir_all(&d).unwrap();
            std::fs::write(d.join("train-0.parquet"), b"").unwrap();
        }
        std::fs::create_dir_all(repo.join("refs")).unwrap();
        std::fs::write(repo.join("refs/main"), "new\n").unwrap();
        let files = cached_split_files(dir.path(), "a/b", "train");
        assert_eq!(files.len(), 1);
        assert!(files[0].to_string_lossy().contains("new"));
        assert!(cached_split_files(dir.path(), "a/b", "test").is_empty());
        assert!(cached_split_files(dir.path(), "a/c", "train").is_empty());
    }
}
