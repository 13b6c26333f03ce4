//! Long inputs to the text tasks run in bounded memory or are refused before training (issue
//! 25, item 3): a classify file with one 200,000-token line trains with `--max-len`, and one
//! whose largest batch would need far more memory than any machine has is refused with a line
//! naming the longest example, `--max-len` and `--batch-size`.
#![cfg(feature = "cli")]

mod common;
use std::path::Path;

use common::sentiment_file;

fn run(args: &[&str]) -> anyhow::Result<()> {
    let mut all = vec!["rnn"];
    all.extend_from_slice(args);
    rnn::cli::run(all)
}

/// A `label text` line of `tokens` words from a ten-word vocabulary.
fn long_line(label: u32, tokens: usize) -> String {
    let words = [
        "the", "film", "a", "story", "is", "great", "dull", "cast", "and", "plot",
    ];
    let text: Vec<&str> = (0..tokens).map(|i| words[(i * 7) % words.len()]).collect();
    format!("{label}\t{}\n", text.join(" "))
}

fn config(out: &Path) -> serde_json::Value {
    let text = std::fs::read_to_string(out.join("checkpoint/config.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

#[test]
fn classify_line_of_200000_tokens_trains_under_max_len() {
    let dir = tempfile::tempdir().unwrap();
    let data = sentiment_file(dir.path(), "train.txt", 60, 1);
    let mut text = std::fs::read_to_string(&data).unwrap();
    text.push_str(&long_line(1, 200_000));
    std::fs::write(&data, text).unwrap();
    let out = dir.path().join("run");
    run(&[
        "train",
        "classify",
        "--data",
        data.to_str().unwrap(),
        "--max-len",
        "1000",
        "--max-steps",
        "1",
        "--device",
        "cpu",
        "--out",
        out.to_str().unwrap(),
    ])
    .unwrap();
    let model = &config(&out)["model"];
    assert_eq!(model["max_len"], 1000, "{model}");
    // eval cuts the same way.
    run(&[
        "eval",
        "--checkpoint",
        out.to_str().unwrap(),
        "--data",
        data.to_str().unwrap(),
        "--device",
        "cpu",
    ])
    .unwrap();
}

#[test]
fn classify_batch_of_200000_token_lines_is_refused_before_training() {
    let available = rnn::run::memory::available_memory();
    // 32 x 200,000 tokens of the default model: about 280 GB.
    if available.is_none_or(|a| a > 500_000_000_000) {
        eprintln!("skipped: available memory unknown or above 500 GB ({available:?})");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("long.txt");
    let line = long_line(0, 200_000) + &long_line(1, 200_000);
    std::fs::write(&data, line.repeat(32)).unwrap();
    let out = dir.path().join("run");
    let err = run(&[
        "train",
        "classify",
        "--data",
        data.to_str().unwrap(),
        "--max-steps",
        "1",
        "--device",
        "cpu",
        "--out",
        out.to_str().unwrap(),
    ])
    .expect_err("the run should be refused");
    let msg = format!("{err:#}");
    assert!(!msg.contains('\n'), "{msg}");
    for part in [
        "training would need about",
        "(32 x 200000 tokens)",
        "the longest example is",
        "long.txt:",
        "(200000 tokens)",
        "--max-len",
        "--batch-size (now 32)",
    ] {
        assert!(msg.contains(part), "{part:?} missing from: {msg}");
    }
    assert!(!out.exists(), "the refused run left {}", out.display());
}

#[test]
fn tag_long_sentence_is_split_under_max_len() {
    let dir = tempfile::tempdir().unwrap();
    let mut text = String::new();
    for s in 0..40 {
        let n = if s == 3 { 5_000 } else { 5 };
        for i in 0..n {
            let (w, t) = [("the", "DET"), ("cat", "NOUN"), ("sat", "VERB")][(i + s) % 3];
            text.push_str(&format!("{w}\t{t}\n"));
        }
        text.push('\n');
    }
    let data = dir.path().join("train.conll");
    std::fs::write(&data, text).unwrap();
    let out = dir.path().join("run");
    run(&[
        "train",
        "tag",
        "--data",
        data.to_str().unwrap(),
        "--max-len",
        "100",
        "--max-steps",
        "1",
        "--device",
        "cpu",
        "--out",
        out.to_str().unwrap(),
    ])
    .unwrap();
    assert_eq!(config(&out)["model"]["max_len"], 100);
}
