//! End-to-end tests of the encoder-decoder tasks through the CLI (`rnn train seq2seq|dates`,
//! `rnn eval`, `rnn predict`), in-process, on small generated data.
#![cfg(feature = "cli")]

use std::collections::HashSet;
use std::path::Path;

use rnn::cli::run::CheckpointRun;
use rnn::cli::{EvalArgs, PredictArgs};
use rnn::train::trainer::EvalRecord;

fn run(args: &[&str]) -> anyhow::Result<()> {
    let mut full = vec!["rnn"];
    full.extend_from_slice(args);
    rnn::cli::run(full)
}

fn error_of(args: &[&str]) -> String {
    format!("{:#}", run(args).unwrap_err())
}

fn records(out: &Path) -> Vec<EvalRecord> {
    std::fs::read_to_string(out.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// The run wrote its outputs and its validation loss fell.
fn check_run(out: &Path, main: &str) -> Vec<EvalRecord> {
    for f in [
        "checkpoint/model.safetensors",
        "checkpoint/config.json",
        "checkpoint/source_vocab.json",
        "checkpoint/target_vocab.json",
        "best/model.safetensors",
        "metrics.jsonl",
        "learning_curves.png",
    ] {
        assert!(out.join(f).is_file(), "missing {f}");
    }
    let recs = records(out);
    assert!(recs.len() >= 2, "{recs:?}");
    let (first, last) = (&recs[0], recs.last().unwrap());
    assert!(
        last.valid_loss < first.valid_loss,
        "valid loss {} -> {}",
        first.valid_loss,
        last.valid_loss
    );
    assert!(last.train_loss.is_some());
    assert_eq!(last.main.name, main);
    assert!(last.metrics.contains_key("exact_match"));
    recs
}

fn predict(dir: &Path, input: &str, beam: Option<usize>) -> Vec<String> {
    let run = CheckpointRun::load(dir, &candle_core::Device::Cpu).unwrap();
    let args = PredictArgs {
        checkpoint: dir.to_path_buf(),
        input: Some(input.to_string()),
        beam,
        horizon: None,
        device: "cpu".into(),
        json: false,
    };
    rnn::tasks::predict(&run, &args).unwrap().lines
}

#[test]
fn dates_train_eval_predict() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    let out_s = out.to_str().unwrap();
    run(&[
        "train",
        "dates",
        "--out",
        out_s,
        "--samples",
        "400",
        "--hidden",
        "32",
        "--embedding",
        "16",
        "--batch-size",
        "32",
        "--max-steps",
        "30",
        "--eval-every",
        "10",
        "--device",
        "cpu",
    ])
    .unwrap();
    let recs = check_run(&out, "exact_match");
    // A tenth of --samples is held out.
    assert!(recs.iter().all(|r| r.metrics.len() == 1), "{recs:?}");

    run(&["eval", "--checkpoint", out_s, "--device", "cpu"]).unwrap();
    let cr = CheckpointRun::load(&out, &candle_core::Device::Cpu).unwrap();
    let line = rnn::tasks::eval(
        &cr,
        &EvalArgs {
            checkpoint: out.clone(),
            data: None,
            labels: None,
            device: "cpu".into(),
            json: false,
            batch_size: 16,
        },
    )
    .unwrap()
    .summary;
    assert!(
        line.contains("40 pairs") && line.contains("exact_match"),
        "{line}"
    );

    let inputs = dir.path().join("inputs.txt");
    std::fs::write(&inputs, "March 3, 2021\n\n12/25/1999\n").unwrap();
    let inputs_s = inputs.to_str().unwrap();
    run(&[
        "predict",
        "--checkpoint",
        out_s,
        "--input",
        inputs_s,
        "--device",
        "cpu",
    ])
    .unwrap();
    run(&[
        "predict",
        "--checkpoint",
        out_s,
        "--input",
        "3 March 2021",
        "--beam",
        "3",
        "--device",
        "cpu",
    ])
    .unwrap();
    for beam in [None, Some(3)] {
        let lines = predict(&out, inputs_s, beam);
        assert_eq!(lines.len(), 2, "{lines:?}");
        for l in &lines {
            let (text, lp) = l.split_once("\tlog-prob ").unwrap();
            assert!(text.chars().all(|c| c.is_ascii_digit() || c == '-'), "{l}");
            assert!(lp.parse::<f64>().unwrap() <= 0.0, "{l}");
        }
    }
    let e = error_of(&["sample", "--checkpoint", out_s, "--device", "cpu"]);
    assert!(e.contains("predict"), "{e}");
}

const SRC_WORDS: [&str; 8] = [
    "un", "deux", "trois", "quatre", "cinq", "six", "sept", "huit",
];
const TGT_WORDS: [&str; 8] = [
    "one", "two", "three", "four", "five", "six", "seven", "eight",
];

/// Lines `target<TAB>source<TAB>attribution`: the target (column 0) is the source's words
/// translated and reversed.
fn write_pairs(path: &Path, n: usize) {
    let mut text = String::new();
    let mut state = 12345u64;
    let mut next = |m: usize| {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((state >> 33) as usize) % m
    };
    for _ in 0..n {
        let len = 2 + next(3);
        let ids: Vec<usize> = (0..len).map(|_| next(8)).collect();
        let src: Vec<&str> = ids.iter().map(|&i| SRC_WORDS[i]).collect();
        let tgt: Vec<&str> = ids.iter().rev().map(|&i| TGT_WORDS[i]).collect();
        text.push_str(&format!("{}.\t{} !\tCC-BY\n", tgt.join(" "), src.join(" ")));
    }
    std::fs::write(path, text).unwrap();
}

#[test]
fn seq2seq_train_eval_predict_on_tsv() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("pairs.tsv");
    write_pairs(&data, 300);
    let out = dir.path().join("run");
    let out_s = out.to_str().unwrap();
    // Column 0 is the target: the model translates column 1 into column 0.
    run(&[
        "train",
        "seq2seq",
        "--data",
        data.to_str().unwrap(),
        "--target",
        "0",
        "--out",
        out_s,
        "--hidden",
        "32",
        "--embedding",
        "16",
        "--batch-size",
        "16",
        "--max-steps",
        "30",
        "--eval-every",
        "10",
        "--attention",
        "additive",
        "--device",
        "cpu",
    ])
    .unwrap();
    let recs = check_run(&out, "bleu");
    assert!(recs[0].metrics.contains_key("bleu"));

    run(&["eval", "--checkpoint", out_s, "--device", "cpu"]).unwrap();
    let other = dir.path().join("other.tsv");
    write_pairs(&other, 7);
    run(&[
        "eval",
        "--checkpoint",
        out_s,
        "--data",
        other.to_str().unwrap(),
        "--device",
        "cpu",
    ])
    .unwrap();

    // Outputs are made of target-side tokens (column 0, lower-cased, punctuation split off).
    let allowed: HashSet<&str> = TGT_WORDS.iter().copied().chain([".", "<unk>"]).collect();
    for beam in [None, Some(4)] {
        let lines = predict(&out, "Deux trois six !", beam);
        assert_eq!(lines.len(), 1);
        let (text, _) = lines[0].split_once('\t').unwrap();
        assert!(
            text.split_whitespace().all(|w| allowed.contains(w)),
            "{text}"
        );
    }
    run(&[
        "predict",
        "--checkpoint",
        out_s,
        "--input",
        "un deux",
        "--beam",
        "2",
        "--device",
        "cpu",
    ])
    .unwrap();
}

#[test]
fn bad_inputs_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("pairs.tsv");
    std::fs::write(&data, "a b\tx y\nc d\tz\nonly one column\n").unwrap();
    let data_s = data.to_str().unwrap();
    let out = dir.path().join("run");
    let out_s = out.to_str().unwrap();
    let base = ["train", "seq2seq", "--out", out_s, "--device", "cpu"];
    let with = |extra: &[&str]| {
        let mut a = base.to_vec();
        a.extend_from_slice(extra);
        error_of(&a)
    };

    let e = with(&["--data", data_s]);
    assert!(e.contains("pairs.tsv:3") && e.contains("found 1"), "{e}");

    let missing = dir.path().join("nope.tsv");
    let e = with(&["--data", missing.to_str().unwrap()]);
    assert!(e.contains("nope.tsv"), "{e}");

    let e = with(&[]);
    assert!(e.contains("--data"), "{e}");

    std::fs::write(&data, "a b\tx y\nc d\tz\ne f\tw\n").unwrap();
    let e = with(&["--data", data_s, "--attention", "bogus"]);
    assert!(e.contains("--attention") && e.contains("bogus"), "{e}");
    let e = with(&["--data", data_s, "--target", "2"]);
    assert!(e.contains("--target"), "{e}");
    let e = with(&["--data", data_s, "--level", "syllable"]);
    assert!(e.contains("--level") && e.contains("syllable"), "{e}");
    let e = with(&["--data", data_s, "--level", "tutorial"]);
    assert!(e.contains("tutorial") && e.contains("no pair left"), "{e}");
    let e = error_of(&["train", "dates", "--out", out_s, "--level", "word"]);
    assert!(e.contains("--level"), "{e}");
}
