//! End to end through `rnn::cli::run`: `rnn train forecast` on a generated CSV series and
//! `rnn train digits` on generated IDX files, then `rnn eval` and `rnn predict` on the results,
//! and the bad inputs of both tasks.
#![cfg(feature = "cli")]

use std::path::Path;

mod common;
use common::rnn_output;

use rnn::cli::run::CheckpointRun;
use rnn::cli::PredictArgs;

fn run(args: &[&str]) -> anyhow::Result<()> {
    let mut all = vec!["rnn"];
    all.extend_from_slice(args);
    rnn::cli::run(all)
}

fn err(args: &[&str]) -> String {
    match run(args) {
        Ok(()) => panic!("expected an error for {args:?}"),
        Err(e) => format!("{e:#}"),
    }
}

/// The `metrics.jsonl` records of a run.
fn records(out: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(out.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn assert_outputs(out: &Path) {
    for f in [
        "checkpoint/model.safetensors",
        "checkpoint/config.json",
        "best/model.safetensors",
        "metrics.jsonl",
        "learning_curves.png",
    ] {
        assert!(out.join(f).is_file(), "missing {f}");
    }
}

fn predict_lines(out: &Path, input: &Path, horizon: Option<usize>) -> Vec<String> {
    let ckpt = CheckpointRun::load(out, &candle_core::Device::Cpu).unwrap();
    let args = PredictArgs {
        checkpoint: out.to_path_buf(),
        input: Some(input.to_str().unwrap().to_string()),
        beam: None,
        horizon,
        device: "cpu".into(),
        json: false,
    };
    rnn::tasks::predict(&ckpt, &args).unwrap().lines
}

/// A monthly-like series: trend, a period-12 season and a little deterministic noise.
fn seasonal_csv(rows: usize) -> String {
    let mut s = String::from("month,temp,value\n");
    let mut state = 12345u64;
    for t in 0..rows {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let noise = ((state >> 33) as f64 / (1u64 << 31) as f64 - 0.5) * 2.0;
        let phase = t as f64 * std::f64::consts::TAU / 12.0;
        let value = 100.0 + 0.5 * t as f64 + 30.0 * phase.sin() + noise;
        s.push_str(&format!("{t},{:.2},{value:.3}\n", 10.0 + phase.cos()));
    }
    s
}

#[test]
fn forecast_trains_beats_persistence_and_evaluates_and_predicts() {
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("series.csv");
    std::fs::write(&csv, seasonal_csv(120)).unwrap();
    let out = dir.path().join("run");
    let (csv_s, out_s) = (csv.to_str().unwrap(), out.to_str().unwrap());
    // Default target: the last column (value). All 25 epochs run (no early stop).
    run(&[
        "train",
        "forecast",
        "--data",
        csv_s,
        "--out",
        out_s,
        "--device",
        "cpu",
        "--epochs",
        "25",
        "--hidden",
        "16",
        "--patience",
        "25",
    ])
    .unwrap();
    assert_outputs(&out);
    let recs = records(&out);
    assert_eq!(recs.len(), 25);
    let first = recs[0]["train_loss"].as_f64().unwrap();
    let last = recs.last().unwrap();
    assert!(
        last["train_loss"].as_f64().unwrap() < 0.5 * first,
        "{recs:?}"
    );
    let m = &last["metrics"];
    let (rmse, persistence, seasonal) = (
        m["rmse"].as_f64().unwrap(),
        m["persistence_rmse"].as_f64().unwrap(),
        m["seasonal_naive_rmse"].as_f64().unwrap(),
    );
    assert!(
        rmse < persistence,
        "rmse {rmse} vs persistence {persistence}"
    );
    // The baselines of the validation part (rows 65..80): persistence is poor on a strong season, seasonal naive
    // is off by one season's trend (6) plus noise.
    assert!(persistence > 8.0 && (5.0..8.0).contains(&seasonal), "{m}");

    run(&["eval", "--checkpoint", out_s, "--device", "cpu"]).unwrap();
    run(&[
        "eval",
        "--checkpoint",
        out_s,
        "--data",
        csv_s,
        "--device",
        "cpu",
    ])
    .unwrap();
    run(&[
        "predict",
        "--checkpoint",
        out_s,
        "--input",
        csv_s,
        "--device",
        "cpu",
    ])
    .unwrap();
    let lines = predict_lines(&out, &csv, None);
    assert_eq!(lines.len(), 1, "{lines:?}");
    let value: f64 = lines[0].split('\t').nth(1).unwrap().parse().unwrap();
    // The next value of the series (t = 120) is about 160 + 30 sin(0) = 160.
    assert!((value - 160.0).abs() < 15.0, "{lines:?}");
    let e = predict_err(&out, &csv, Some(3));
    assert!(e.contains("--horizon 3") && e.contains("next-step"), "{e}");
    let e = err(&["sample", "--checkpoint", out_s, "--device", "cpu"]);
    assert!(e.contains("forecast"), "{e}");
}

fn predict_err(out: &Path, input: &Path, horizon: Option<usize>) -> String {
    let ckpt = CheckpointRun::load(out, &candle_core::Device::Cpu).unwrap();
    let args = PredictArgs {
        checkpoint: out.to_path_buf(),
        input: Some(input.to_str().unwrap().to_string()),
        beam: None,
        horizon,
        device: "cpu".into(),
        json: false,
    };
    format!("{:#}", rnn::tasks::predict(&ckpt, &args).unwrap_err())
}

/// Model selection never sees the test part: the validation part picks `best/` and stops the
/// run early, the summary's headline is the test part at the best checkpoint, and `eval`
/// prints the same numbers.
#[test]
fn forecast_selects_on_valid_and_reports_test_like_eval() {
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("series.csv");
    std::fs::write(&csv, seasonal_csv(120)).unwrap();
    let out = dir.path().join("run");
    let (csv_s, out_s) = (csv.to_str().unwrap(), out.to_str().unwrap());
    let (train, notes) = rnn_output(&[
        "train",
        "forecast",
        "--data",
        csv_s,
        "--out",
        out_s,
        "--device",
        "cpu",
        "--epochs",
        "40",
        "--hidden",
        "8",
        "--patience",
        "2",
        "--season",
        "12",
        "--lr",
        "0.03",
    ]);
    // 120 rows: test = the last 40, validation = the last 16 of the 80 before.
    let said = format!("{train}{notes}");
    assert!(
        said.contains("validation origins (rows 65..80)")
            && said.contains("test origins (rows 81..120)")
            && said.contains("season 12 (--season)"),
        "{train}{notes}"
    );
    let summary = train.lines().last().unwrap();
    let (_, headline) = summary
        .split_once("test at best (step ")
        .unwrap_or_else(|| panic!("no test headline in {summary}"));
    let (step, rest) = headline.split_once("): ").unwrap();
    let line = rest.split(" over ").next().unwrap();
    assert!(line.contains("seasonal-naive(12) rmse"), "{summary}");
    // The best step is the one whose validation RMSE was lowest.
    let recs = records(&out);
    let best = recs
        .iter()
        .min_by(|a, b| {
            let v = |r: &serde_json::Value| r["metrics"]["rmse"].as_f64().unwrap();
            v(a).total_cmp(&v(b))
        })
        .unwrap();
    assert_eq!(best["step"].as_u64().unwrap().to_string(), step, "{recs:?}");
    assert!(
        recs.len() < 40,
        "patience 2 should stop a 40-epoch run at lr 0.03: {recs:?}"
    );
    assert!(summary.contains("stopped early"), "{summary}");
    let (eval, _) = rnn_output(&["eval", "--checkpoint", out_s, "--device", "cpu"]);
    assert!(
        eval.contains(&format!("forecast: test: {line}")),
        "train: {summary}\neval: {eval}"
    );
}

#[test]
fn forecast_direct_multi_step_with_a_feature() {
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("series.csv");
    std::fs::write(&csv, seasonal_csv(100)).unwrap();
    let out = dir.path().join("run");
    let (csv_s, out_s) = (csv.to_str().unwrap(), out.to_str().unwrap());
    run(&[
        "train",
        "forecast",
        "--data",
        csv_s,
        "--out",
        out_s,
        "--device",
        "cpu",
        "--target",
        "value",
        "--features",
        "temp",
        "--horizon",
        "3",
        "--lookback",
        "6",
        "--epochs",
        "3",
        "--hidden",
        "8",
    ])
    .unwrap();
    let cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("best/config.json")).unwrap())
            .unwrap();
    let model = &cfg["model"]["model"];
    assert_eq!(model["strategy"], "direct");
    assert_eq!(model["input_size"], 2);
    assert_eq!(predict_lines(&out, &csv, None).len(), 3);
    assert_eq!(predict_lines(&out, &csv, Some(2)).len(), 2);
    let e = predict_err(&out, &csv, Some(4));
    assert!(e.contains("--horizon 4") && e.contains("horizon 3"), "{e}");
}

#[test]
fn forecast_bad_inputs_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    let out_s = out.to_str().unwrap();
    let write = |name: &str, text: &str| {
        let p = dir.path().join(name);
        std::fs::write(&p, text).unwrap();
        p.to_str().unwrap().to_string()
    };
    let ragged = write("ragged.csv", "t,v\n1,2\n2,3\n3\n4,5\n");
    let e = err(&["train", "forecast", "--data", &ragged, "--out", out_s]);
    assert!(
        e.contains("ragged.csv:4") && e.contains("ragged row"),
        "{e}"
    );
    let text = write("text.csv", "t,v\n1,2\n2,many\n");
    let e = err(&["train", "forecast", "--data", &text, "--out", out_s]);
    assert!(
        e.contains("text.csv:3") && e.contains("non-numeric value 'many' in column 'v'"),
        "{e}"
    );
    let good = write("good.csv", &seasonal_csv(60));
    let e = err(&[
        "train", "forecast", "--data", &good, "--target", "price", "--out", out_s,
    ]);
    assert!(
        e.contains("no column 'price'") && e.contains("value"),
        "{e}"
    );
    let e = err(&[
        "train",
        "forecast",
        "--data",
        &good,
        "--horizon",
        "0",
        "--out",
        out_s,
    ]);
    assert!(e.contains("--horizon must be at least 1"), "{e}");
    let e = err(&[
        "train",
        "forecast",
        "--data",
        &good,
        "--lookback",
        "50",
        "--out",
        out_s,
    ]);
    assert!(e.contains("--lookback 50"), "{e}");
    let e = err(&[
        "train",
        "forecast",
        "--data",
        &good,
        "--horizon",
        "2",
        "--strategy",
        "next-step",
        "--out",
        out_s,
    ]);
    assert!(e.contains("--horizon 2"), "{e}");
    let e = err(&["train", "forecast", "--out", out_s]);
    assert!(e.contains("--data"), "{e}");
    let e = err(&[
        "train",
        "forecast",
        "--data",
        dir.path().join("none.csv").to_str().unwrap(),
        "--out",
        out_s,
    ]);
    assert!(e.contains("none.csv"), "{e}");
}

/// IDX files of `n` 8x8 images from 3 classes (top half, bottom half, left half bright) with
/// deterministic noise.
fn tiny_idx(n: usize) -> (Vec<u8>, Vec<u8>) {
    let mut images = Vec::new();
    for x in [2051u32, n as u32, 8, 8] {
        images.extend_from_slice(&x.to_be_bytes());
    }
    let mut labels = 2049u32.to_be_bytes().to_vec();
    labels.extend_from_slice(&(n as u32).to_be_bytes());
    let mut state = 7u64;
    for i in 0..n {
        let class = (i * 7 + i / 3) % 3;
        for r in 0..8 {
            for c in 0..8 {
                state = state
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                let noise = (state >> 58) as u8 * 2; // 0..126
                let on = match class {
                    0 => r < 4,
                    1 => r >= 4,
                    _ => c < 4,
                };
                images.push(if on {
                    200u8.saturating_add(noise / 3)
                } else {
                    noise
                });
            }
        }
        labels.push(class as u8);
    }
    (images, labels)
}

#[test]
fn digits_trains_evaluates_and_predicts() {
    let dir = tempfile::tempdir().unwrap();
    let (img, lab) = tiny_idx(100);
    let (img_p, lab_p) = (dir.path().join("img.idx3"), dir.path().join("lab.idx1"));
    std::fs::write(&img_p, &img).unwrap();
    std::fs::write(&lab_p, &lab).unwrap();
    let out = dir.path().join("run");
    let (img_s, lab_s, out_s) = (
        img_p.to_str().unwrap(),
        lab_p.to_str().unwrap(),
        out.to_str().unwrap(),
    );
    run(&[
        "train",
        "digits",
        "--data",
        img_s,
        "--labels",
        lab_s,
        "--out",
        out_s,
        "--device",
        "cpu",
        "--hidden",
        "16",
        "--epochs",
        "6",
        "--batch-size",
        "16",
        "--lr",
        "0.01",
    ])
    .unwrap();
    assert_outputs(&out);
    let recs = records(&out);
    let first = recs[0]["train_loss"].as_f64().unwrap();
    let last = recs.last().unwrap();
    assert!(
        last["train_loss"].as_f64().unwrap() < 0.5 * first,
        "{recs:?}"
    );
    let best = recs
        .iter()
        .map(|r| r["metrics"]["accuracy"].as_f64().unwrap())
        .fold(0.0, f64::max);
    assert!(best >= 0.9, "{recs:?}");
    run(&["eval", "--checkpoint", out_s, "--device", "cpu"]).unwrap();
    run(&[
        "eval",
        "--checkpoint",
        out_s,
        "--data",
        img_s,
        "--labels",
        lab_s,
        "--device",
        "cpu",
    ])
    .unwrap();
    run(&[
        "predict",
        "--checkpoint",
        out_s,
        "--input",
        img_s,
        "--device",
        "cpu",
    ])
    .unwrap();
    let lines = predict_lines(&out, &img_p, None);
    assert_eq!(lines.len(), 100);
    let correct = lines
        .iter()
        .zip(&lab[8..])
        .filter(|(l, &y)| l.split('\t').nth(1).unwrap() == y.to_string())
        .count();
    assert!(correct >= 80, "{correct}/100: {lines:?}");
    let e = err(&[
        "eval",
        "--checkpoint",
        out_s,
        "--data",
        img_s,
        "--device",
        "cpu",
    ]);
    assert!(e.contains("--labels"), "{e}");
    // A label file passed as the image input.
    let e = err(&[
        "predict",
        "--checkpoint",
        out_s,
        "--input",
        lab_s,
        "--device",
        "cpu",
    ]);
    assert!(e.contains("lab.idx1") && e.contains("2051"), "{e}");
}

#[test]
fn digits_bad_inputs_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    let out_s = out.to_str().unwrap();
    let (img, lab) = tiny_idx(10);
    let img_p = dir.path().join("img.idx3");
    std::fs::write(&img_p, &img).unwrap();
    let img_s = img_p.to_str().unwrap();
    let missing = dir.path().join("no-labels.idx1");
    let e = err(&[
        "train",
        "digits",
        "--data",
        img_s,
        "--labels",
        missing.to_str().unwrap(),
        "--out",
        out_s,
    ]);
    assert!(e.contains("no-labels.idx1"), "{e}");
    let e = err(&["train", "digits", "--data", img_s, "--out", out_s]);
    assert!(e.contains("--labels"), "{e}");
    // 9 labels for 10 images.
    let mut short = lab[..8].to_vec();
    short[4..8].copy_from_slice(&9u32.to_be_bytes());
    short.extend_from_slice(&lab[8..17]);
    let short_p = dir.path().join("short.idx1");
    std::fs::write(&short_p, &short).unwrap();
    let e = err(&[
        "train",
        "digits",
        "--data",
        img_s,
        "--labels",
        short_p.to_str().unwrap(),
        "--out",
        out_s,
    ]);
    assert!(
        e.contains("short.idx1") && e.contains("9 labels for 10 images"),
        "{e}"
    );
    // A truncated image file.
    let trunc_p = dir.path().join("trunc.idx3");
    std::fs::write(&trunc_p, &img[..img.len() - 5]).unwrap();
    let lab_p = dir.path().join("lab.idx1");
    std::fs::write(&lab_p, &lab).unwrap();
    let e = err(&[
        "train",
        "digits",
        "--data",
        trunc_p.to_str().unwrap(),
        "--labels",
        lab_p.to_str().unwrap(),
        "--out",
        out_s,
    ]);
    assert!(e.contains("trunc.idx3") && e.contains("bytes"), "{e}");
}

/// digits validates on the images before its test part; the summary's headline is the test
/// part at the best checkpoint, and `eval` prints the same accuracy.
#[test]
fn digits_selects_on_valid_and_reports_test_like_eval() {
    let dir = tempfile::tempdir().unwrap();
    let (img, lab) = tiny_idx(100);
    let (img_p, lab_p) = (dir.path().join("img.idx3"), dir.path().join("lab.idx1"));
    std::fs::write(&img_p, &img).unwrap();
    std::fs::write(&lab_p, &lab).unwrap();
    let out = dir.path().join("run");
    let (img_s, lab_s, out_s) = (
        img_p.to_str().unwrap(),
        lab_p.to_str().unwrap(),
        out.to_str().unwrap(),
    );
    let (train, notes) = rnn_output(&[
        "train",
        "digits",
        "--data",
        img_s,
        "--labels",
        lab_s,
        "--out",
        out_s,
        "--device",
        "cpu",
        "--hidden",
        "16",
        "--epochs",
        "3",
        "--batch-size",
        "16",
        "--lr",
        "0.01",
    ]);
    // 100 images: the last 20 test, the 8 before them validate.
    assert!(
        format!("{train}{notes}").contains("first 72 train, next 8 validate, last 20 test"),
        "{train}{notes}"
    );
    let summary = train.lines().last().unwrap();
    let (_, headline) = summary
        .split_once("; test accuracy ")
        .unwrap_or_else(|| panic!("no test headline in {summary}"));
    let accuracy = headline.split_once(' ').unwrap().0;
    assert!(
        headline.contains("(the last 20 images of ")
            && headline.contains("; best checkpoint, step "),
        "{summary}"
    );
    let (eval, _) = rnn_output(&["eval", "--checkpoint", out_s, "--device", "cpu"]);
    assert!(
        eval.starts_with(&format!("digits: test accuracy {accuracy}, loss ")),
        "train: {summary}\neval: {eval}"
    );
}
