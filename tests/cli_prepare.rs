//! `rnn prepare` end to end: training `word-lm` and `char-lm` from a prepared token file gives
//! the same metrics.jsonl and checkpoint files, byte for byte, as training from the text; a
//! corrupt or truncated token file is refused with an error naming it; `rnn eval` scores a
//! prepared run. Small generated text, tiny models, CPU, in-process through `rnn::cli`.
#![cfg(feature = "cli")]

mod common;

use std::path::{Path, PathBuf};

use rnn::cli::run::error_line;

/// A small regular language with some irregular lines (blank, CRLF, long, non-ASCII).
fn corpus(lines: usize, offset: usize) -> String {
    let subjects = ["the cat", "a d\u{f6}g", "the king", "my friend"];
    let verbs = ["sees", "likes", "finds"];
    let objects = ["the moon", "a ball", "the river", "an apple", "<unk>"];
    (0..lines)
        .map(|i| {
            let k = i + offset;
            match k % 17 {
                0 => "\n".to_string(),
                5 => format!(
                    "{} {} {} .\r\n",
                    subjects[k % 4],
                    verbs[k % 3],
                    objects[k % 5]
                ),
                9 => format!("{}\n", ["the long line"; 30].join(" ")),
                _ => format!(
                    "{} {} {} .\n",
                    subjects[k % 4],
                    verbs[(k / 4) % 3],
                    objects[(k * 7 / 3) % 5]
                ),
            }
        })
        .collect()
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

fn s(p: &Path) -> String {
    p.display().to_string()
}

fn run(args: &[&str]) -> anyhow::Result<()> {
    let mut all = vec!["rnn"];
    all.extend_from_slice(args);
    rnn::cli::run(all)
}

/// The two runs' metrics.jsonl and checkpoint files are the same bytes; config.json differs only
/// in the `data` it names; plots are not compared (they are drawn from the same metrics).
fn assert_same_runs(a: &Path, b: &Path) {
    let (fa, fb) = (common::files_under(a), common::files_under(b));
    assert_eq!(fa, fb, "the runs wrote different files");
    let mut compared = 0;
    for f in &fa {
        let name = f.to_string_lossy();
        if name.ends_with(".png") || name.ends_with(".svg") {
            continue;
        }
        let (x, y) = (
            std::fs::read(a.join(f)).unwrap(),
            std::fs::read(b.join(f)).unwrap(),
        );
        if f.file_name().unwrap() == "config.json" {
            let mut x: serde_json::Value = serde_json::from_slice(&x).unwrap();
            let mut y: serde_json::Value = serde_json::from_slice(&y).unwrap();
            for v in [&mut x, &mut y] {
                v["model"]["data"] = serde_json::Value::Null;
            }
            assert_eq!(x, y, "{name} differs beyond `data`");
        } else {
            assert!(x == y, "{name} differs");
        }
        compared += 1;
    }
    assert!(fa.iter().any(|f| f.ends_with("metrics.jsonl")));
    assert!(fa.iter().any(|f| f.ends_with("model.safetensors")));
    assert!(compared >= 8, "{compared} files compared");
}

const TINY: [&str; 12] = [
    "--hidden",
    "16",
    "--embedding",
    "8",
    "--batch-size",
    "4",
    "--seq-len",
    "7",
    "--max-steps",
    "12",
    "--eval-every",
    "4",
];

/// Trains `task` on `text_args` and on the token file `rnn prepare` makes from them, and checks
/// the two runs are the same.
fn same_both_ways(dir: &Path, task: &str, text_args: &[&str], train_args: &[&str]) {
    let tokens = dir.join(format!("{task}.tokens"));
    let mut prep = vec!["prepare", task, "--out", tokens.to_str().unwrap()];
    prep.extend_from_slice(text_args);
    run(&prep).unwrap();
    let (mem, tok) = (
        dir.join(format!("{task}-mem")),
        dir.join(format!("{task}-tok")),
    );
    let mut a = vec![
        "train",
        task,
        "--device",
        "cpu",
        "--out",
        mem.to_str().unwrap(),
    ];
    a.extend_from_slice(text_args);
    a.extend_from_slice(&TINY);
    a.extend_from_slice(train_args);
    run(&a).unwrap();
    let mut b = vec![
        "train",
        task,
        "--device",
        "cpu",
        "--out",
        tok.to_str().unwrap(),
    ];
    b.extend(["--data", tokens.to_str().unwrap()]);
    b.extend_from_slice(&TINY);
    b.extend_from_slice(train_args);
    run(&b).unwrap();
    assert_same_runs(&mem, &tok);
}

#[test]
fn word_lm_from_a_token_file_equals_word_lm_from_the_text() {
    let dir = tempfile::tempdir().unwrap();
    let data = write(dir.path(), "train.txt", &corpus(400, 0));
    same_both_ways(
        dir.path(),
        "word-lm",
        &["--data", &s(&data), "--split", "0.15", "--vocab-size", "20"],
        &[],
    );
    // The prepared run's checkpoint scores the token file's test part, as the text run scores
    // the held-out tail of the text.
    let tok = dir.path().join("word-lm-tok");
    run(&["eval", "--checkpoint", &s(&tok), "--device", "cpu"]).unwrap();
}

#[test]
fn char_lm_from_a_token_file_equals_char_lm_from_the_text() {
    let dir = tempfile::tempdir().unwrap();
    let data = write(dir.path(), "train.txt", &corpus(150, 0));
    let valid = write(dir.path(), "valid.txt", &corpus(30, 7));
    same_both_ways(
        dir.path(),
        "char-lm",
        &["--data", &s(&data), "--valid", &s(&valid)],
        &["--layers", "1", "--cell", "gru"],
    );
}

#[test]
fn a_damaged_token_file_is_refused_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let data = write(dir.path(), "train.txt", &corpus(200, 0));
    let tokens = dir.path().join("c.tokens");
    run(&[
        "prepare",
        "word-lm",
        "--data",
        &s(&data),
        "--out",
        &s(&tokens),
    ])
    .unwrap();
    let good = std::fs::read(&tokens).unwrap();
    let train = |bytes: &[u8]| {
        std::fs::write(&tokens, bytes).unwrap();
        let out = dir.path().join("run");
        let e = run(&[
            "train",
            "word-lm",
            "--device",
            "cpu",
            "--data",
            &s(&tokens),
            "--out",
            &s(&out),
            "--max-steps",
            "1",
        ])
        .unwrap_err();
        let line = error_line(&e);
        assert!(line.contains(&s(&tokens)), "{line}");
        line
    };
    let e = train(&good[..good.len() - 100]);
    assert!(e.contains("truncated"), "{e}");
    let mut flipped = good.clone();
    flipped[200] ^= 0x40;
    let e = train(&flipped);
    assert!(e.contains("ids checksum mismatch"), "{e}");
    let mut header = good.clone();
    header[20] ^= 1;
    let e = train(&header);
    assert!(e.contains("header checksum mismatch"), "{e}");
    // Options that shape the data are fixed by `rnn prepare`.
    std::fs::write(&tokens, &good).unwrap();
    let e = run(&[
        "train",
        "word-lm",
        "--data",
        &s(&tokens),
        "--split",
        "0.3",
        "--max-steps",
        "1",
    ])
    .unwrap_err();
    let line = error_line(&e);
    assert!(
        line.contains("--split 0.3") && line.contains("rnn prepare"),
        "{line}"
    );
}
