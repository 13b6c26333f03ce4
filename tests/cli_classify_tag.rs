//! End-to-end tests of `rnn train classify` and `rnn train tag` through `rnn::cli::run`, on small
//! generated files: training writes a checkpoint, metrics and curves and lowers the loss; `eval`
//! and `predict` work on the checkpoint; bad input gives one clear error.
#![cfg(feature = "cli")]

mod common;
use common::sentiment_file;
use std::path::{Path, PathBuf};

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

fn run(args: &[&str]) -> anyhow::Result<()> {
    let mut all = vec!["rnn"];
    all.extend_from_slice(args);
    rnn::cli::run(all)
}

fn err(args: &[&str]) -> String {
    format!("{:#}", run(args).expect_err("the command should fail"))
}

/// CoNLL-U sentences of a tiny grammar: DET ADJ? NOUN VERB (DET NOUN)? PUNCT.
fn conllu_file(dir: &Path, name: &str, n: usize, seed: u64) -> PathBuf {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let det = ["the", "a", "every"];
    let adj = ["big", "red", "old"];
    let noun = ["cat", "dog", "mat", "bird"];
    let verb = ["sees", "likes", "chases"];
    let mut text = String::new();
    for s in 0..n {
        let mut toks: Vec<(&str, &str)> = vec![(det[rng.random_range(0..3)], "DET")];
        if rng.random_bool(0.5) {
            toks.push((adj[rng.random_range(0..3)], "ADJ"));
        }
        toks.push((noun[rng.random_range(0..4)], "NOUN"));
        toks.push((verb[rng.random_range(0..3)], "VERB"));
        if rng.random_bool(0.5) {
            toks.push((det[rng.random_range(0..3)], "DET"));
            toks.push((noun[rng.random_range(0..4)], "NOUN"));
        }
        toks.push((".", "PUNCT"));
        text.push_str(&format!("# sent_id = {s}\n"));
        for (i, (w, t)) in toks.iter().enumerate() {
            text.push_str(&format!("{}\t{w}\t{w}\t{t}\t_\t_\t0\tdep\t_\t_\n", i + 1));
        }
        text.push('\n');
    }
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

fn records(out: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(out.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn check_run_dir(out: &Path) {
    for f in [
        "checkpoint/model.safetensors",
        "checkpoint/vocab.json",
        "checkpoint/config.json",
        "best/model.safetensors",
        "metrics.jsonl",
        "learning_curves.png",
    ] {
        assert!(out.join(f).is_file(), "{f} missing in {}", out.display());
    }
    let recs = records(out);
    assert!(recs.len() >= 2, "{recs:?}");
    let first = recs[0]["valid_loss"].as_f64().unwrap();
    let last = recs.last().unwrap()["valid_loss"].as_f64().unwrap();
    assert!(last < first, "valid loss did not fall: {first} -> {last}");
    let t0 = recs[0]["train_loss"].as_f64().unwrap();
    let t1 = recs.last().unwrap()["train_loss"].as_f64().unwrap();
    assert!(t1 < t0, "train loss did not fall: {t0} -> {t1}");
}

#[test]
fn classify_trains_evaluates_and_predicts() {
    let dir = tempfile::tempdir().unwrap();
    let train = sentiment_file(dir.path(), "train.txt", 400, 1);
    let test = sentiment_file(dir.path(), "test.txt", 100, 2);
    let out = dir.path().join("run");
    let s = |p: &Path| p.to_str().unwrap().to_string();
    run(&[
        "train",
        "classify",
        "--data",
        &s(&train),
        "--test",
        &s(&test),
        "--out",
        &s(&out),
        "--device",
        "cpu",
        "--epochs",
        "4",
        "--eval-every",
        "12",
        "--hidden",
        "16",
        "--embedding",
        "16",
        "--batch-size",
        "16",
        "--lr",
        "0.01",
        "--pooling",
        "attention",
        "--patience",
        "10",
    ])
    .unwrap();
    check_run_dir(&out);
    let recs = records(&out);
    let best = recs
        .iter()
        .map(|r| r["metrics"]["accuracy"].as_f64().unwrap())
        .fold(0.0, f64::max);
    assert!(best > 0.9, "validation accuracy {best}");
    assert!(recs[0]["metrics"]["macro_f1"].is_number());
    let config = std::fs::read_to_string(out.join("checkpoint/config.json")).unwrap();
    assert!(
        config.contains("\"labels\"") && config.contains("attention"),
        "{config}"
    );

    // The library entry points behind `rnn eval` / `rnn predict`.
    let run_ckpt = rnn::cli::run::CheckpointRun::load(&out, &candle_core::Device::Cpu).unwrap();
    let scores = rnn::tasks::classify::score_file(&run_ckpt, &test, 32).unwrap();
    assert!(scores.accuracy > 0.9 && scores.count == 100, "{scores:?}");
    let c = rnn::tasks::classify::load(&run_ckpt).unwrap();
    let p =
        rnn::tasks::classify::classify_text(&c, "the film is great and funny", &run_ckpt.device)
            .unwrap();
    assert_eq!(p.label, "1", "{p:?}");
    assert_eq!(p.attention.len(), 6);
    let sum: f32 = p.attention.iter().map(|(_, w)| w).sum();
    assert!((sum - 1.0).abs() < 1e-4, "{sum}");
    let psum: f32 = p.probabilities.iter().map(|(_, v)| v).sum();
    assert!((psum - 1.0).abs() < 1e-4, "{psum}");
    // And through the CLI.
    run(&["eval", "--checkpoint", &s(&out), "--device", "cpu"]).unwrap();
    run(&[
        "eval",
        "--checkpoint",
        &s(&out),
        "--data",
        &s(&test),
        "--device",
        "cpu",
    ])
    .unwrap();
    run(&[
        "predict",
        "--checkpoint",
        &s(&out),
        "--input",
        "a dull boring film",
        "--device",
        "cpu",
    ])
    .unwrap();
    let e = err(&["sample", "--checkpoint", &s(&out), "--device", "cpu"]);
    assert!(e.contains("predict"), "{e}");
}

#[test]
fn tag_trains_evaluates_and_predicts() {
    let dir = tempfile::tempdir().unwrap();
    let train = conllu_file(dir.path(), "train.conllu", 300, 3);
    let test = conllu_file(dir.path(), "test.conllu", 50, 4);
    let out = dir.path().join("run");
    let s = |p: &Path| p.to_str().unwrap().to_string();
    run(&[
        "train",
        "tag",
        "--data",
        &s(&train),
        "--test",
        &s(&test),
        "--out",
        &s(&out),
        "--device",
        "cpu",
        "--epochs",
        "3",
        "--eval-every",
        "10",
        "--hidden",
        "16",
        "--embedding",
        "16",
        "--batch-size",
        "16",
        "--lr",
        "0.02",
        "--patience",
        "10",
    ])
    .unwrap();
    check_run_dir(&out);
    let best = records(&out)
        .iter()
        .map(|r| r["metrics"]["accuracy"].as_f64().unwrap())
        .fold(0.0, f64::max);
    assert!(best > 0.95, "validation token accuracy {best}");

    let ckpt = rnn::cli::run::CheckpointRun::load(&out, &candle_core::Device::Cpu).unwrap();
    let scores = rnn::tasks::tag::score_file(&ckpt, &test, 16).unwrap();
    assert!(
        scores.accuracy > 0.95 && scores.sentences == 50,
        "{scores:?}"
    );
    let t = rnn::tasks::tag::load(&ckpt).unwrap();
    let pairs =
        rnn::tasks::tag::tag_sentence(&t, "the old dog chases a bird .", &ckpt.device).unwrap();
    let tags: Vec<&str> = pairs.iter().map(|(_, g)| g.as_str()).collect();
    assert_eq!(tags, ["DET", "ADJ", "NOUN", "VERB", "DET", "NOUN", "PUNCT"]);
    run(&["eval", "--checkpoint", &s(&out), "--device", "cpu"]).unwrap();
    run(&[
        "predict",
        "--checkpoint",
        &s(&out),
        "--input",
        "a cat sees the mat .",
        "--device",
        "cpu",
    ])
    .unwrap();
}

#[test]
fn tag_reads_two_column_conll() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("ner.txt");
    let mut text = String::new();
    for i in 0..40 {
        let name = ["Paris", "Rome", "Oslo"][i % 3];
        text.push_str(&format!("in O\n{name} LOC\nit O\nrains O\n\n"));
    }
    std::fs::write(&p, text).unwrap();
    let out = dir.path().join("run");
    run(&[
        "train",
        "tag",
        "--data",
        p.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--device",
        "cpu",
        "--max-steps",
        "6",
        "--eval-every",
        "3",
        "--hidden",
        "8",
        "--embedding",
        "8",
        "--batch-size",
        "8",
    ])
    .unwrap();
    assert!(out.join("checkpoint/model.safetensors").is_file());
    let e = err(&[
        "train",
        "tag",
        "--data",
        p.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--device",
        "cpu",
        "--max-steps",
        "1",
        "--tag-column",
        "xpos",
    ]);
    assert!(e.contains("--tag-column") && e.contains("2-column"), "{e}");
}

#[test]
fn bad_inputs_give_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let out = d.join("run");
    let o = out.to_str().unwrap();
    let common = ["--out", o, "--device", "cpu", "--max-steps", "1"];
    let with = |task: &str, extra: &[&str]| -> String {
        let mut a = vec!["train", task];
        a.extend_from_slice(extra);
        a.extend_from_slice(&common);
        err(&a)
    };

    // A label line without text.
    let bad = d.join("bad_labels.txt");
    std::fs::write(&bad, "1 a fine film\n0 dull\n1\n").unwrap();
    let e = with("classify", &["--data", bad.to_str().unwrap()]);
    assert!(e.contains("bad_labels.txt:3:"), "{e}");
    // A test label the training data never had.
    let train = sentiment_file(d, "train.txt", 40, 5);
    let odd = d.join("odd.txt");
    std::fs::write(&odd, "1 a fine film\nneutral so so\n").unwrap();
    let e = with(
        "classify",
        &[
            "--data",
            train.to_str().unwrap(),
            "--valid",
            odd.to_str().unwrap(),
        ],
    );
    assert!(e.contains("odd.txt:2:") && e.contains("neutral"), "{e}");
    // --pooling bogus.
    let e = with(
        "classify",
        &["--data", train.to_str().unwrap(), "--pooling", "bogus"],
    );
    assert!(e.contains("--pooling") && e.contains("bogus"), "{e}");
    // Missing files.
    let missing = d.join("nope.txt");
    let e = with("classify", &["--data", missing.to_str().unwrap()]);
    assert!(e.contains("nope.txt"), "{e}");
    let e = with("tag", &["--data", missing.to_str().unwrap()]);
    assert!(e.contains("nope.txt"), "{e}");
    let e = with("classify", &[]);
    assert!(e.contains("--data"), "{e}");

    // CoNLL-U with a wrong column count.
    let conllu = d.join("broken.conllu");
    std::fs::write(
        &conllu,
        "1\tThe\tthe\tDET\t_\t_\t2\tdet\t_\t_\n2\tcat\tcat\tNOUN\t_\t_\t0\troot\n",
    )
    .unwrap();
    let e = with("tag", &["--data", conllu.to_str().unwrap()]);
    assert!(
        e.contains("broken.conllu:2:") && e.contains("found 8"),
        "{e}"
    );
    // Unknown --tag-column.
    let good = conllu_file(d, "good.conllu", 10, 6);
    let e = with(
        "tag",
        &["--data", good.to_str().unwrap(), "--tag-column", "colour"],
    );
    assert!(e.contains("--tag-column") && e.contains("colour"), "{e}");
    // Eval of a missing checkpoint.
    let e = err(&[
        "eval",
        "--checkpoint",
        missing.to_str().unwrap(),
        "--device",
        "cpu",
    ]);
    assert!(e.contains("nope.txt"), "{e}");
}
