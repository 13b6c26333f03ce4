//! `rnn eval --json`, `rnn predict --json` and `rnn sample --json` (docs/CLI_JSON.md) through the
//! binary, on tiny runs of classify, tag (part-of-speech and entity tags), adding, dates, char-lm,
//! forecast, routine and digits: each prints one JSON document on one line, with the task and
//! checkpoint, and numbers that are the unrounded values of the text output of the same command
//! (each printed number equals the JSON value rounded as the text rounds it).
#![cfg(feature = "cli")]

mod common;
use common::{conll_file, rnn_output, sentiment_file};

use std::path::Path;

use serde_json::Value;

/// Trains in-process (the tests only need the checkpoint).
fn train(args: &[&str]) {
    rnn::cli::run(["rnn", "train"].iter().chain(args).copied()).unwrap();
}

/// The text output of `rnn ARGS --device cpu`, and the document of the same command with
/// `--json`, which must be a single line.
fn both(args: &[&str]) -> (String, Value) {
    let mut args = args.to_vec();
    args.extend(["--device", "cpu"]);
    let (text, _) = rnn_output(&args);
    args.push("--json");
    let (json, _) = rnn_output(&args);
    assert_eq!(json.lines().count(), 1, "one line of JSON: {json}");
    let doc: Value = serde_json::from_str(&json).unwrap_or_else(|e| panic!("{e}: {json}"));
    (text, doc)
}

/// The document of `rnn eval --checkpoint OUT [--data DATA]`, checked against the line the same
/// command prints: the fields every eval document has, `count` in the line, and `printed`, the
/// `(label, metric, decimals)` the line shows, each equal to the JSON metric so rounded.
fn eval(
    out: &Path,
    data: Option<&Path>,
    task: &str,
    split: &str,
    unit: &str,
    printed: &[(&str, &str, usize)],
) -> Value {
    let out_s = out.to_str().unwrap();
    let mut args = vec!["eval", "--checkpoint", out_s];
    if let Some(d) = data {
        args.extend(["--data", d.to_str().unwrap()]);
    }
    let (text, doc) = both(&args);
    let line = text.trim_end();
    assert_eq!(doc["task"], task, "{doc}");
    let checkpoint = doc["checkpoint"].as_str().unwrap();
    assert!(
        Path::new(checkpoint).starts_with(out) && Path::new(checkpoint).is_dir(),
        "{doc}"
    );
    assert_eq!(doc["summary"], line, "{doc}");
    assert_eq!(doc["split"], split, "{doc}");
    assert_eq!(doc["unit"], unit, "{doc}");
    let count = doc["count"].as_u64().unwrap();
    assert!(
        count > 0 && line.contains(&format!("{count} ")),
        "{count}: {line}"
    );
    for (label, name, decimals) in printed {
        let v = doc["metrics"][name]
            .as_f64()
            .unwrap_or_else(|| panic!("metric {name}: {doc}"));
        let shown = format!("{label}{v:.decimals$}");
        assert!(
            line.contains(&shown),
            "{name} {v}: '{shown}' not in '{line}'"
        );
    }
    doc
}

/// The lines of `text`.
fn lines(text: &str) -> Vec<&str> {
    text.lines().collect()
}

#[test]
fn classify_json_matches_the_text_output() {
    let dir = tempfile::tempdir().unwrap();
    let train_file = sentiment_file(dir.path(), "train.txt", 120, 1);
    let data = sentiment_file(dir.path(), "other.txt", 30, 2);
    let out = dir.path().join("run");
    train(&[
        "classify",
        "--data",
        train_file.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--device",
        "cpu",
        "--max-steps",
        "4",
        "--hidden",
        "8",
        "--embedding",
        "8",
    ]);
    let metrics = [
        ("accuracy ", "accuracy", 4),
        ("macro F1 ", "macro_f1", 4),
        ("loss ", "loss", 4),
    ];
    // Without --data: the test part held out of the training file.
    let doc = eval(&out, None, "classify", "test", "examples", &metrics);
    assert_eq!(doc["data"], train_file.to_str().unwrap());
    assert_eq!(doc["metrics"].as_object().unwrap().len(), 3, "{doc}");
    let doc = eval(&out, Some(&data), "classify", "data", "examples", &metrics);
    assert_eq!(doc["data"], data.to_str().unwrap());
    assert_eq!(doc["count"], 30);

    let inputs = dir.path().join("inputs.txt");
    std::fs::write(&inputs, "a dull boring film\nthe story is great\n").unwrap();
    let out_s = out.to_str().unwrap();
    let (text, doc) = both(&[
        "predict",
        "--checkpoint",
        out_s,
        "--input",
        inputs.to_str().unwrap(),
    ]);
    let text = lines(&text);
    let predictions = doc["predictions"].as_array().unwrap();
    assert_eq!(predictions.len(), 2, "{doc}");
    assert_eq!(predictions[1]["input"], "the story is great");
    for (p, line) in predictions.iter().zip(&text) {
        let o = &p["output"];
        let label = o["label"].as_str().unwrap();
        assert!(line.starts_with(&format!("{label}\t")), "{line} vs {o}");
        let probabilities = o["probabilities"].as_object().unwrap();
        assert_eq!(probabilities.len(), 2, "{o}");
        for (l, v) in probabilities {
            let shown = format!("P({l})={:.3}", v.as_f64().unwrap());
            assert!(line.contains(&shown), "{shown} not in {line}");
        }
        // The default pooling is attention: one weight per token.
        let attention = o["attention"].as_array().unwrap();
        let words = p["input"].as_str().unwrap().split_whitespace().count();
        assert_eq!(attention.len(), words, "{o}");
        let first = &attention[0];
        let shown = format!(
            "attention: {}:{:.3}",
            first["token"].as_str().unwrap(),
            first["weight"].as_f64().unwrap()
        );
        assert!(line.contains(&shown), "{shown} not in {line}");
    }
}

#[test]
fn tag_json_matches_the_text_output() {
    let dir = tempfile::tempdir().unwrap();
    let train_file = conll_file(dir.path(), "train.conll", 120, 1);
    let test_file = conll_file(dir.path(), "test.conll", 20, 2);
    let out = dir.path().join("run");
    train(&[
        "tag",
        "--data",
        train_file.to_str().unwrap(),
        "--test",
        test_file.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--device",
        "cpu",
        "--max-steps",
        "4",
        "--hidden",
        "8",
        "--embedding",
        "8",
    ]);
    let metrics = [("accuracy ", "accuracy", 4), ("loss ", "loss", 4)];
    let doc = eval(&out, None, "tag", "test", "tokens", &metrics);
    assert_eq!(doc["data"], test_file.to_str().unwrap());
    // Part-of-speech tags: no entity metrics.
    assert_eq!(doc["metrics"].as_object().unwrap().len(), 2, "{doc}");
    eval(&out, Some(&test_file), "tag", "data", "tokens", &metrics);

    let out_s = out.to_str().unwrap();
    let (text, doc) = both(&[
        "predict",
        "--checkpoint",
        out_s,
        "--input",
        "a cat sees the mat .",
    ]);
    let p = &doc["predictions"][0];
    assert_eq!(p["input"], "a cat sees the mat .");
    let tokens = p["output"]["tokens"].as_array().unwrap();
    let tags = p["output"]["tags"].as_array().unwrap();
    assert_eq!((tokens.len(), tags.len()), (6, 6), "{p}");
    let pairs: Vec<String> = tokens
        .iter()
        .zip(tags)
        .map(|(w, t)| format!("{}/{}", w.as_str().unwrap(), t.as_str().unwrap()))
        .collect();
    assert_eq!(text.trim_end(), pairs.join(" "));
}

#[test]
fn adding_json_matches_the_text_output() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    let out_s = out.to_str().unwrap();
    train(&[
        "adding",
        "--out",
        out_s,
        "--device",
        "cpu",
        "--seq-len",
        "6",
        "--samples",
        "200",
        "--hidden",
        "8",
        "--max-steps",
        "3",
    ]);
    let doc = eval(
        &out,
        None,
        "adding",
        "test",
        "sequences",
        &[("MSE ", "mse", 4), ("(always 1) ", "baseline_mse", 4)],
    );
    assert!(doc["data"].is_null(), "generated data has no file: {doc}");

    let input = "0.3:1 0.5:0 0.9:0 0.2:1 0.1:0 0.7:0";
    let (text, doc) = both(&["predict", "--checkpoint", out_s, "--input", input]);
    let p = &doc["predictions"][0];
    assert_eq!(p["input"], input);
    let o = &p["output"];
    assert_eq!(
        (o["steps"].as_u64(), o["marked"].as_u64()),
        (Some(6), Some(2))
    );
    assert!(
        (o["marked_sum"].as_f64().unwrap() - 0.5).abs() < 1e-6,
        "{o}"
    );
    let shown = format!("{:.4} (sum of", o["sum"].as_f64().unwrap());
    assert!(text.starts_with(&shown), "{shown} vs {text}");
}

#[test]
fn dates_json_matches_the_text_output() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    let out_s = out.to_str().unwrap();
    train(&[
        "dates",
        "--out",
        out_s,
        "--device",
        "cpu",
        "--samples",
        "200",
        "--hidden",
        "16",
        "--embedding",
        "8",
        "--max-steps",
        "3",
    ]);
    let doc = eval(
        &out,
        None,
        "dates",
        "test",
        "pairs",
        &[
            ("loss ", "loss", 4),
            ("bleu ", "bleu", 4),
            ("exact_match ", "exact_match", 4),
        ],
    );
    assert!(doc["data"].is_null(), "{doc}");

    let inputs = dir.path().join("inputs.txt");
    std::fs::write(&inputs, "March 3, 2021\n12/25/1999\n").unwrap();
    let (text, doc) = both(&[
        "predict",
        "--checkpoint",
        out_s,
        "--input",
        inputs.to_str().unwrap(),
    ]);
    let predictions = doc["predictions"].as_array().unwrap();
    assert_eq!(predictions.len(), 2, "{doc}");
    assert_eq!(predictions[0]["input"], "March 3, 2021");
    for (p, line) in predictions.iter().zip(lines(&text)) {
        let o = &p["output"];
        let shown = format!(
            "{}\tlog-prob {:.4}",
            o["translation"].as_str().unwrap(),
            o["log_prob"].as_f64().unwrap()
        );
        assert_eq!(line, shown);
    }
}

#[test]
fn char_lm_json_matches_the_text_output() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("train.txt");
    let text: String = (0..120)
        .map(|i| ["the cat sees the moon .\n", "a dog likes a ball .\n"][i % 2])
        .collect();
    std::fs::write(&data, text).unwrap();
    let out = dir.path().join("run");
    let out_s = out.to_str().unwrap();
    train(&[
        "char-lm",
        "--data",
        data.to_str().unwrap(),
        "--out",
        out_s,
        "--device",
        "cpu",
        "--hidden",
        "16",
        "--embedding",
        "8",
        "--seq-len",
        "20",
        "--batch-size",
        "4",
        "--max-steps",
        "4",
    ]);
    let metrics = [
        ("perplexity ", "perplexity", 3),
        ("loss ", "loss", 4),
        (", ", "bits_per_char", 4),
    ];
    let doc = eval(&out, None, "char-lm", "test", "chars", &metrics);
    assert_eq!(doc["data"], data.to_str().unwrap());
    eval(&out, Some(&data), "char-lm", "data", "chars", &metrics);
    // A token file given as --data: its test part is scored.
    let tokens = dir.path().join("train.tok");
    let (data_s, tokens_s) = (data.to_str().unwrap(), tokens.to_str().unwrap());
    rnn::cli::run([
        "rnn", "prepare", "char-lm", "--data", data_s, "--out", tokens_s,
    ])
    .unwrap();
    let doc = eval(&out, Some(&tokens), "char-lm", "test", "chars", &metrics);
    assert_eq!(doc["data"], tokens_s);

    let (text, doc) = both(&["predict", "--checkpoint", out_s, "--input", "the cat"]);
    let o = &doc["predictions"][0]["output"];
    let shown = format!(
        "the cat\tlog-prob {:.3} nats over {} tokens, perplexity {:.3}; next: ",
        o["log_prob"].as_f64().unwrap(),
        o["tokens"].as_u64().unwrap(),
        o["perplexity"].as_f64().unwrap()
    );
    assert!(text.starts_with(&shown), "{shown} vs {text}");
    assert_eq!(o["next"].as_array().unwrap().len(), 5, "{o}");

    let args = [
        "sample",
        "--checkpoint",
        out_s,
        "--prompt",
        "the ",
        "--num",
        "2",
        "--max-len",
        "12",
        "--temperature",
        "0.5",
        "--seed",
        "7",
    ];
    let (text, doc) = both(&args);
    assert_eq!(doc["task"], "char-lm");
    assert_eq!(doc["prompt"], "the ");
    assert_eq!(doc["temperature"], 0.5);
    assert!(doc["top_k"].is_null() && doc["top_p"].is_null(), "{doc}");
    assert_eq!(
        (doc["seed"].as_u64(), doc["num"].as_u64()),
        (Some(7), Some(2))
    );
    assert_eq!(doc["max_len"], 12);
    let samples: Vec<&str> = doc["samples"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap())
        .collect();
    assert_eq!(samples.len(), 2, "{doc}");
    assert!(samples.iter().all(|s| s.starts_with("the ")), "{samples:?}");
    // The text output: a header before each sample (whose text may hold line breaks).
    let expected = format!(
        "--- sample 1 (seed 7) ---\n{}\n--- sample 2 (seed 8) ---\n{}\n",
        samples[0], samples[1]
    );
    assert_eq!(text, expected);
}

#[test]
fn forecast_json_matches_the_text_output() {
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("series.csv");
    let mut text = String::from("t,value\n");
    for t in 0..80 {
        let v = 100.0 + 0.5 * t as f64 + 20.0 * (t as f64 * std::f64::consts::TAU / 12.0).sin();
        text.push_str(&format!("{t},{v:.3}\n"));
    }
    std::fs::write(&csv, text).unwrap();
    let out = dir.path().join("run");
    let out_s = out.to_str().unwrap();
    train(&[
        "forecast",
        "--data",
        csv.to_str().unwrap(),
        "--target",
        "value",
        "--out",
        out_s,
        "--device",
        "cpu",
        "--hidden",
        "8",
        "--horizon",
        "3",
        "--max-steps",
        "3",
    ]);
    let metrics = [
        ("rmse ", "rmse", 3),
        ("mae ", "mae", 3),
        ("persistence rmse ", "persistence_rmse", 3),
    ];
    let doc = eval(&out, None, "forecast", "test", "points", &metrics);
    assert_eq!(doc["data"], csv.to_str().unwrap());
    let m = &doc["metrics"];
    // mape is a fraction; the line shows a percentage.
    let shown = format!("mape {:.2}%", 100.0 * m["mape"].as_f64().unwrap());
    assert!(doc["summary"].as_str().unwrap().contains(&shown), "{doc}");
    assert!(m["loss"].as_f64().unwrap() >= 0.0, "{doc}");
    eval(&out, Some(&csv), "forecast", "data", "points", &metrics);

    let (text, doc) = both(&[
        "predict",
        "--checkpoint",
        out_s,
        "--input",
        csv.to_str().unwrap(),
    ]);
    let predictions = doc["predictions"].as_array().unwrap();
    assert_eq!(predictions.len(), 1, "one input file: {doc}");
    assert_eq!(predictions[0]["input"], csv.to_str().unwrap());
    let values: Vec<String> = predictions[0]["output"]
        .as_array()
        .unwrap()
        .iter()
        .enumerate()
        .map(|(k, v)| format!("+{}\t{:.4}", k + 1, v.as_f64().unwrap()))
        .collect();
    assert_eq!(lines(&text), values);
}

#[test]
fn routine_json_matches_the_text_output() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    let out_s = out.to_str().unwrap();
    train(&[
        "routine",
        "--out",
        out_s,
        "--device",
        "cpu",
        "--samples",
        "64",
        "--hidden",
        "8",
        "--max-steps",
        "2",
    ]);
    let doc = eval(
        &out,
        None,
        "routine",
        "test",
        "days",
        &[
            ("accuracy ", "accuracy", 4),
            ("after rain ", "resume_accuracy", 4),
            ("loss ", "loss", 4),
            ("at most ", "memoryless_accuracy", 4),
            (" and ", "memoryless_resume_accuracy", 4),
        ],
    );
    assert!(doc["data"].is_null(), "{doc}");

    let input = "swim: sun rain rain sun, sun";
    let (text, doc) = both(&["predict", "--checkpoint", out_s, "--input", input]);
    let o = &doc["predictions"][0]["output"];
    assert_eq!(o["start"], "swim");
    assert_eq!(
        o["weather"],
        serde_json::json!(["sun", "rain", "rain", "sun", "sun"])
    );
    assert_eq!(
        o["rule"],
        serde_json::json!(["run", "sleep", "sleep", "bike", "swim"])
    );
    assert_eq!(o["activities"].as_array().unwrap().len(), 5, "{o}");
    let shown = format!("[{}/5 as the rule]", o["agree"].as_u64().unwrap());
    assert!(text.trim_end().ends_with(&shown), "{shown} vs {text}");

    let args = [
        "sample",
        "--checkpoint",
        out_s,
        "--num",
        "2",
        "--max-len",
        "9",
        "--seed",
        "3",
    ];
    let (text, doc) = both(&args);
    let samples = doc["samples"].as_array().unwrap();
    assert_eq!(samples.len(), 2, "{doc}");
    let headers: Vec<&str> = text.lines().filter(|l| l.starts_with("sample ")).collect();
    for (s, header) in samples.iter().zip(headers) {
        assert_eq!(s["weather"].as_array().unwrap().len(), 9, "{s}");
        let shown = format!(
            "with {}; {}/9 days as the rule",
            s["start"].as_str().unwrap(),
            s["agree"].as_u64().unwrap()
        );
        assert!(header.ends_with(&shown), "{shown} vs {header}");
    }
}

#[test]
fn tag_json_carries_entity_metrics_for_bio_tags() {
    let dir = tempfile::tempdir().unwrap();
    let names = ["john smith", "mary", "ann lee"];
    let places = ["paris", "new york", "rome"];
    let mut text = String::new();
    for i in 0..80 {
        for (k, w) in names[i % 3].split(' ').enumerate() {
            text.push_str(&format!("{w} {}-PER\n", if k == 0 { "B" } else { "I" }));
        }
        text.push_str("visits O\n");
        for (k, w) in places[(i / 3) % 3].split(' ').enumerate() {
            text.push_str(&format!("{w} {}-LOC\n", if k == 0 { "B" } else { "I" }));
        }
        text.push_str(". O\n\n");
    }
    let data = dir.path().join("ner.conll");
    std::fs::write(&data, text).unwrap();
    let out = dir.path().join("run");
    train(&[
        "tag",
        "--data",
        data.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--device",
        "cpu",
        "--max-steps",
        "3",
        "--hidden",
        "8",
        "--embedding",
        "8",
    ]);
    let doc = eval(
        &out,
        Some(&data),
        "tag",
        "data",
        "tokens",
        &[
            ("entity F1 ", "entity_f1", 4),
            ("precision ", "entity_precision", 4),
            ("recall ", "entity_recall", 4),
            ("accuracy ", "accuracy", 4),
            ("loss ", "loss", 4),
        ],
    );
    assert_eq!(doc["metrics"].as_object().unwrap().len(), 5, "{doc}");
}

#[test]
fn digits_json_matches_the_text_output() {
    let dir = tempfile::tempdir().unwrap();
    let (images, labels) = rnn::tasks::digits::synthetic_idx(60, 3, 1);
    let (img, lab) = (dir.path().join("img.idx3"), dir.path().join("lab.idx1"));
    std::fs::write(&img, images).unwrap();
    std::fs::write(&lab, labels).unwrap();
    let out = dir.path().join("run");
    let out_s = out.to_str().unwrap();
    train(&[
        "digits",
        "--data",
        img.to_str().unwrap(),
        "--labels",
        lab.to_str().unwrap(),
        "--out",
        out_s,
        "--device",
        "cpu",
        "--hidden",
        "8",
        "--max-steps",
        "2",
    ]);
    let metrics = [("accuracy ", "accuracy", 4), ("loss ", "loss", 4)];
    let doc = eval(&out, None, "digits", "test", "images", &metrics);
    assert_eq!(doc["data"], img.to_str().unwrap());

    let (text, doc) = both(&[
        "predict",
        "--checkpoint",
        out_s,
        "--input",
        img.to_str().unwrap(),
    ]);
    let predictions = doc["predictions"].as_array().unwrap();
    assert_eq!(predictions.len(), 60, "one per image");
    for (i, (p, line)) in predictions.iter().zip(lines(&text)).enumerate() {
        assert_eq!(p["input"], i, "the image's index");
        let o = &p["output"];
        let shown = format!(
            "{i}\t{}\t{:.4}",
            o["digit"].as_u64().unwrap(),
            o["probability"].as_f64().unwrap()
        );
        assert_eq!(line, shown);
    }
}
