//! `rnn train classify --hf-dataset` (feature `hub`) on a parquet file the test writes into a
//! Hugging Face cache layout under a temporary `HF_HOME`: it trains and reports accuracy offline;
//! a dataset that is not cached (and no network) gives one clear error.
#![cfg(all(feature = "cli", feature = "hub"))]

mod common;
use common::{rnn_bin, sentiment_file};
use std::path::Path;
use std::process::Command;
use std::sync::Arc;

use parquet::data_type::{ByteArray, ByteArrayType};
use parquet::file::properties::WriterProperties;
use parquet::file::writer::SerializedFileWriter;
use parquet::schema::parser::parse_message_type;

/// Writes `rows` (label, text) as a parquet file with string columns `text` and `label`.
fn write_parquet(path: &Path, rows: &[(String, String)]) {
    let schema = parse_message_type(
        "message schema { REQUIRED BYTE_ARRAY text (UTF8); REQUIRED BYTE_ARRAY label (UTF8); }",
    )
    .unwrap();
    let props = Arc::new(WriterProperties::builder().build());
    let file = std::fs::File::create(path).unwrap();
    let mut writer = SerializedFileWriter::new(file, Arc::new(schema), props).unwrap();
    let mut group = writer.next_row_group().unwrap();
    let mut column = 0;
    while let Some(mut col) = group.next_column().unwrap() {
        let values: Vec<ByteArray> = rows
            .iter()
            .map(|(label, text)| {
                let v = if column == 0 { text } else { label };
                ByteArray::from(v.as_str())
            })
            .collect();
        col.typed::<ByteArrayType>()
            .write_batch(&values, None, None)
            .unwrap();
        col.close().unwrap();
        column += 1;
    }
    group.close().unwrap();
    writer.close().unwrap();
}

/// An `HF_HOME` whose hub cache holds `test/sentiment` with a train split of `n` rows.
fn hf_home(dir: &Path, n: usize) -> std::path::PathBuf {
    let lines = sentiment_file(dir, "rows.txt", n, 1);
    let rows: Vec<(String, String)> = std::fs::read_to_string(lines)
        .unwrap()
        .lines()
        .map(|l| {
            let (label, text) = l.split_once('\t').unwrap();
            let label = if label == "1" { "pos" } else { "neg" };
            (label.to_string(), text.to_string())
        })
        .collect();
    let home = dir.join("hf");
    let data = home.join("hub/datasets--test--sentiment/snapshots/abc/data");
    std::fs::create_dir_all(&data).unwrap();
    write_parquet(&data.join("train-00000-of-00001.parquet"), &rows);
    home
}

fn rnn(home: &Path, args: &[&str]) -> std::process::Output {
    Command::new(rnn_bin())
        .args(args)
        .env("HF_HOME", home)
        .env_remove("HF_HUB_CACHE")
        .env_remove("HUGGINGFACE_HUB_CACHE")
        // No network here; make sure a test machine with one does not reach the Hub either.
        .env("HF_ENDPOINT", "http://127.0.0.1:9")
        .output()
        .unwrap()
}

#[test]
fn classify_trains_on_a_cached_hf_dataset() {
    let dir = tempfile::tempdir().unwrap();
    let home = hf_home(dir.path(), 300);
    let out = dir.path().join("run");
    let o = rnn(
        &home,
        &[
            "train",
            "classify",
            "--hf-dataset",
            "test/sentiment",
            "--hf-split",
            "train",
            "--text-column",
            "text",
            "--label-column",
            "label",
            "--out",
            out.to_str().unwrap(),
            "--device",
            "cpu",
            "--epochs",
            "2",
            "--hidden",
            "16",
            "--embedding",
            "16",
            "--batch-size",
            "16",
        ],
    );
    let all = format!(
        "{}\n{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(o.status.success(), "rnn failed:\n{all}");
    assert!(all.to_lowercase().contains("accuracy"), "{all}");
    let rows = std::fs::read_to_string(out.join("hf-data/test--sentiment.train.txt")).unwrap();
    assert_eq!(rows.lines().count(), 300);
    assert!(rows
        .lines()
        .all(|l| l.starts_with("pos\t") || l.starts_with("neg\t")));
}

#[test]
fn a_dataset_not_cached_and_no_network_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let home = hf_home(dir.path(), 20);
    let out = dir.path().join("run");
    let o = rnn(
        &home,
        &[
            "train",
            "classify",
            "--hf-dataset",
            "test/missing",
            "--out",
            out.to_str().unwrap(),
            "--device",
            "cpu",
        ],
    );
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success());
    assert!(err.contains("test/missing"), "{err}");
    assert!(err.contains("--hf-split train"), "{err}");
    assert!(
        err.contains(&home.join("hub").display().to_string()),
        "{err}"
    );
    assert!(err.contains("network"), "{err}");

    // A split that is not cached is refused the same way.
    let o = rnn(
        &home,
        &[
            "train",
            "classify",
            "--hf-dataset",
            "test/sentiment",
            "--hf-split",
            "test",
            "--text-column",
            "text",
            "--out",
            out.to_str().unwrap(),
        ],
    );
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success());
    assert!(err.contains("--hf-split test"), "{err}");
}

#[test]
fn a_missing_column_names_the_columns() {
    let dir = tempfile::tempdir().unwrap();
    let home = hf_home(dir.path(), 20);
    let out = dir.path().join("run");
    let o = rnn(
        &home,
        &[
            "train",
            "classify",
            "--hf-dataset",
            "test/sentiment",
            "--text-column",
            "sentence",
            "--out",
            out.to_str().unwrap(),
        ],
    );
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success());
    assert!(err.contains("--text-column sentence"), "{err}");
    assert!(err.contains("columns: text, label"), "{err}");
}
