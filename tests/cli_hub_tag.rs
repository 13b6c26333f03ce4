//! `rnn train tag --hf-dataset NAME --tokens-column tokens --tags-column ner_tags` (feature
//! `hub`) on parquet files in the conll2003 layout (list columns: string tokens, int64 class
//! ids; the `huggingface` metadata naming the ids) that the test writes into a Hugging Face cache
//! under a temporary `HF_HOME`. Offline: the sentences reach the run with their tags named, the
//! run trains and `eval` re-scores; ids without names, a missing column and a dataset that is not
//! cached are handled with clear messages.
#![cfg(all(feature = "cli", feature = "hub"))]

mod common;
use common::rnn_bin;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;

use parquet::data_type::{ByteArray, ByteArrayType, Int64Type};
use parquet::file::metadata::KeyValue;
use parquet::file::properties::WriterProperties;
use parquet::file::writer::SerializedFileWriter;
use parquet::schema::parser::parse_message_type;
use rand::{Rng, SeedableRng};

/// conll2003's first tag names.
const NAMES: [&str; 5] = ["O", "B-PER", "I-PER", "B-ORG", "I-ORG"];

/// Sentences of (token, tag id): a person (one or two tokens) and an organisation among filler.
fn sentences(n: usize, seed: u64) -> Vec<Vec<(String, i64)>> {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let filler = ["the", "said", "on", "visit", "to", "today"];
    let first = ["John", "Mary", "Ann"];
    let last = ["Smith", "Jones"];
    let orgs = ["Reuters", "Acme"];
    (0..n)
        .map(|_| {
            let mut s: Vec<(String, i64)> = Vec::new();
            let f = |rng: &mut rand_chacha::ChaCha8Rng| {
                filler[rng.random_range(0..filler.len())].to_string()
            };
            s.push((f(&mut rng), 0));
            s.push((first[rng.random_range(0..3)].to_string(), 1));
            if rng.random_range(0..2) == 1 {
                s.push((last[rng.random_range(0..2)].to_string(), 2));
            }
            s.push((f(&mut rng), 0));
            s.push((orgs[rng.random_range(0..2)].to_string(), 3));
            if rng.random_range(0..2) == 1 {
                s.push(("Corp".to_string(), 4));
            }
            s.push((".".to_string(), 0));
            s
        })
        .collect()
}

/// Writes `rows` as parquet list columns `tokens: list<string>` and `ner_tags: list<int64>`,
/// with the `huggingface` metadata naming the tag ids when `names` is given.
fn write_parquet(path: &Path, rows: &[Vec<(String, i64)>], names: bool) {
    let schema = parse_message_type(
        "message schema {
            OPTIONAL group tokens (LIST) { REPEATED group list { OPTIONAL BYTE_ARRAY element (UTF8); } }
            OPTIONAL group ner_tags (LIST) { REPEATED group list { OPTIONAL INT64 element; } }
        }",
    )
    .unwrap();
    let meta = serde_json::json!({"info": {"features": {
        "tokens": {"feature": {"dtype": "string", "_type": "Value"}, "_type": "Sequence"},
        "ner_tags": {"feature": {"names": NAMES, "_type": "ClassLabel"}, "_type": "Sequence"},
    }}});
    let mut props = WriterProperties::builder();
    if names {
        props = props.set_key_value_metadata(Some(vec![KeyValue::new(
            "huggingface".to_string(),
            meta.to_string(),
        )]));
    }
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let file = std::fs::File::create(path).unwrap();
    let mut writer =
        SerializedFileWriter::new(file, Arc::new(schema), Arc::new(props.build())).unwrap();
    let mut group = writer.next_row_group().unwrap();
    let (mut rep, mut def) = (Vec::new(), Vec::new());
    for s in rows {
        for i in 0..s.len() {
            rep.push(if i == 0 { 0 } else { 1 });
            def.push(3);
        }
    }
    let mut column = 0;
    while let Some(mut col) = group.next_column().unwrap() {
        if column == 0 {
            let tokens: Vec<ByteArray> = rows
                .iter()
                .flatten()
                .map(|(t, _)| ByteArray::from(t.as_str()))
                .collect();
            col.typed::<ByteArrayType>()
                .write_batch(&tokens, Some(&def), Some(&rep))
                .unwrap();
        } else {
            let tags: Vec<i64> = rows.iter().flatten().map(|(_, t)| *t).collect();
            col.typed::<Int64Type>()
                .write_batch(&tags, Some(&def), Some(&rep))
                .unwrap();
        }
        col.close().unwrap();
        column += 1;
    }
    group.close().unwrap();
    writer.close().unwrap();
}

/// An `HF_HOME` whose cache holds `test/ner` (train split) in the Hub's parquet layout.
fn hf_home(dir: &Path, rows: &[Vec<(String, i64)>], names: bool) -> std::path::PathBuf {
    let home = dir.join("hf");
    let data = home.join("hub/datasets--test--ner/snapshots/abc/default/train");
    write_parquet(&data.join("0000.parquet"), rows, names);
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

fn ok(o: &std::process::Output) -> String {
    let all = format!(
        "{}\n{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(o.status.success(), "rnn failed:\n{all}");
    all
}

fn train(home: &Path, out: &Path, extra: &[&str]) -> std::process::Output {
    let mut args = vec![
        "train",
        "tag",
        "--hf-dataset",
        "test/ner",
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
    ];
    args.extend_from_slice(extra);
    rnn(home, &args)
}

/// The 2-column CoNLL file a run kept, as sentences of (token, tag).
fn kept(out: &Path) -> Vec<Vec<(String, String)>> {
    std::fs::read_to_string(out.join("hf-data/test--ner.train.conll"))
        .unwrap()
        .split("\n\n")
        .filter(|s| !s.trim().is_empty())
        .map(|s| {
            s.lines()
                .map(|l| {
                    let (t, g) = l.split_once(' ').unwrap();
                    (t.to_string(), g.to_string())
                })
                .collect()
        })
        .collect()
}

#[test]
fn tag_trains_on_a_cached_hf_dataset_with_named_tags() {
    let dir = tempfile::tempdir().unwrap();
    let rows = sentences(120, 1);
    let home = hf_home(dir.path(), &rows, true);
    let out = dir.path().join("run");
    let all = ok(&train(
        &home,
        &out,
        &[
            "--hf-split",
            "train",
            "--tokens-column",
            "tokens",
            "--tags-column",
            "ner_tags",
        ],
    ));
    // 120 sentences: a tenth validates, another tenth tests; all five tags are seen.
    assert!(
        all.contains("tag: 96 training / 12 validation / 12 test sentences"),
        "{all}"
    );
    assert!(all.contains(", 5 tags,"), "{all}");
    // The sentences reached the run in order, their ids named by the metadata.
    let expected: Vec<Vec<(String, String)>> = rows
        .iter()
        .map(|s| {
            s.iter()
                .map(|(t, g)| (t.clone(), NAMES[*g as usize].to_string()))
                .collect()
        })
        .collect();
    assert_eq!(kept(&out), expected);
    let eval = ok(&rnn(
        &home,
        &[
            "eval",
            "--checkpoint",
            out.to_str().unwrap(),
            "--device",
            "cpu",
        ],
    ));
    assert!(eval.contains("test--ner.train.conll"), "{eval}");
}

#[test]
fn tag_ids_without_names_are_the_tags() {
    let dir = tempfile::tempdir().unwrap();
    let rows = sentences(40, 2);
    let home = hf_home(dir.path(), &rows, false);
    let out = dir.path().join("run");
    ok(&train(&home, &out, &[]));
    let kept = kept(&out);
    assert_eq!(kept.len(), 40);
    assert_eq!(kept[0][1], (rows[0][1].0.clone(), "1".to_string()));
}

#[test]
fn a_missing_column_or_dataset_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let home = hf_home(dir.path(), &sentences(10, 3), true);
    let out = dir.path().join("run");
    let o = train(&home, &out, &["--tags-column", "pos_tags"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success());
    assert!(
        err.contains("--tags-column pos_tags: no such column"),
        "{err}"
    );
    assert!(err.contains("columns: tokens, ner_tags"), "{err}");

    let o = rnn(
        &home,
        &[
            "train",
            "tag",
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
    assert!(
        err.contains("--hf-dataset test/missing --hf-split train"),
        "{err}"
    );
    assert!(err.contains("network"), "{err}");

    let o = train(&home, &out, &["--tag-column", "upos"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success());
    assert!(err.contains("takes --tags-column"), "{err}");
}
