//! End-to-end tests of the routine task (the default of `rnn train`) through `rnn::cli::run`:
//! training writes its outputs and learns, eval / predict / sample work on the checkpoint,
//! `--resume` continues, and bad input gives clear errors.
#![cfg(feature = "cli")]

use std::path::Path;

use candle_core::Device;
use rnn::cli::run::CheckpointRun;
use rnn::cli::{PredictArgs, SampleArgs};
use rnn::tasks::routine;
use rnn::train::trainer::EvalRecord;

fn run(args: &[&str]) -> anyhow::Result<()> {
    let mut full = vec!["rnn"];
    full.extend_from_slice(args);
    rnn::cli::run(full)
}

fn records(out: &Path) -> Vec<EvalRecord> {
    std::fs::read_to_string(out.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn train(out: &Path, extra: &[&str]) -> anyhow::Result<()> {
    let out = out.to_str().unwrap();
    let mut args = vec![
        "train",
        "routine",
        "--out",
        out,
        "--device",
        "cpu",
        "--seq-len",
        "32",
    ];
    args.extend_from_slice(extra);
    run(&args)
}

fn predict_args(dir: &Path, input: &str) -> PredictArgs {
    PredictArgs {
        checkpoint: dir.to_path_buf(),
        input: Some(input.to_string()),
        beam: None,
        horizon: None,
        device: "cpu".into(),
        json: false,
    }
}

#[test]
fn training_learns_the_routine_and_the_checkpoint_predicts_samples_and_evaluates() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    train(
        &out,
        &[
            "--max-steps",
            "60",
            "--eval-every",
            "20",
            "--samples",
            "256",
        ],
    )
    .unwrap();
    for f in [
        "checkpoint/model.safetensors",
        "checkpoint/config.json",
        "best/model.safetensors",
        "metrics.jsonl",
        "learning_curves.png",
        "learning_curves.svg",
    ] {
        assert!(out.join(f).is_file(), "{f} missing");
    }
    let recs = records(&out);
    assert_eq!(recs.last().unwrap().step, 60);
    let (first, last) = (&recs[0], &recs[recs.len() - 1]);
    assert!(
        last.valid_loss < first.valid_loss * 0.5,
        "{first:?} -> {last:?}"
    );
    assert!(last.train_loss.unwrap() < first.train_loss.unwrap());
    assert_eq!(last.main.name, "accuracy");
    assert!(last.main.value > 0.97, "{last:?}");
    // The hard days need memory: a model without it gets about a third of them.
    assert!(last.metrics["resume_accuracy"] > 0.9, "{last:?}");

    // The commands run on the checkpoint ...
    let o = out.to_str().unwrap();
    run(&["eval", "--checkpoint", o, "--device", "cpu"]).unwrap();
    run(&[
        "predict",
        "--checkpoint",
        o,
        "--device",
        "cpu",
        "--input",
        "swim: sun rain rain sun",
    ])
    .unwrap();
    run(&[
        "sample",
        "--checkpoint",
        o,
        "--device",
        "cpu",
        "--max-len",
        "10",
    ])
    .unwrap();

    // ... and say the right things.
    let ck = CheckpointRun::load(&out, &Device::Cpu).unwrap();
    let lines = routine::predict(&ck, &predict_args(&out, "swim: sun rain rain sun, sun"))
        .unwrap()
        .lines;
    assert_eq!(
        lines,
        ["swim: sun->run rain->sleep rain->sleep sun->bike sun->swim  [5/5 as the rule]"]
    );
    let samples = routine::sample(
        &ck,
        &SampleArgs {
            checkpoint: out.clone(),
            prompt: None,
            temperature: 1.0,
            top_k: None,
            top_p: None,
            max_len: 14,
            num: 2,
            seed: 3,
            device: "cpu".into(),
            json: false,
        },
    )
    .unwrap()
    .lines;
    let headers: Vec<&String> = samples
        .iter()
        .filter(|l| l.starts_with("sample "))
        .collect();
    assert_eq!(headers.len(), 2, "{samples:#?}");
    assert!(headers[0].contains("14 days"), "{}", headers[0]);
    // 15 days = 3 week blocks of at least 3 rows each, per sample.
    assert!(samples.len() >= 2 * (1 + 9), "{samples:#?}");

    // Eval on a file in the predict syntax.
    let data = dir.path().join("weeks.txt");
    std::fs::write(
        &data,
        "# comments and blank lines are skipped\nrun: sun rain sun sun\n\nbike: rain rain rain sun sun\n",
    )
    .unwrap();
    let line = routine::eval(
        &ck,
        &rnn::cli::EvalArgs {
            checkpoint: out.clone(),
            data: Some(data.clone()),
            labels: None,
            device: "cpu".into(),
            json: false,
            batch_size: 64,
        },
    )
    .unwrap()
    .summary;
    assert!(
        line.contains("(9/9 days)") && line.contains("2 lines"),
        "{line}"
    );
}

#[test]
fn plain_train_defaults_to_routine() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("plain");
    run(&[
        "train",
        "--out",
        out.to_str().unwrap(),
        "--device",
        "cpu",
        "--max-steps",
        "5",
        "--samples",
        "64",
    ])
    .unwrap();
    let config = std::fs::read_to_string(out.join("checkpoint/config.json")).unwrap();
    assert!(config.contains("\"routine\""), "{config}");
    assert!(out.join("learning_curves.png").is_file());
    let recs = records(&out);
    assert_eq!(recs.last().unwrap().step, 5);
    assert!(recs.last().unwrap().train_loss.is_some());
}

#[test]
fn resume_continues_and_refuses_another_architecture() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("a");
    let common = ["--samples", "64", "--eval-every", "4"];
    let mut args = common.to_vec();
    args.extend(["--max-steps", "4"]);
    train(&out, &args).unwrap();
    assert_eq!(records(&out).last().unwrap().step, 4);

    let o = out.to_str().unwrap().to_string();
    let mut args = common.to_vec();
    args.extend(["--max-steps", "8", "--resume", &o]);
    train(&out, &args).unwrap();
    // The resumed run equals an uninterrupted one (batches depend only on epoch and seed).
    let straight = dir.path().join("straight");
    let mut args = common.to_vec();
    args.extend(["--max-steps", "8"]);
    train(&straight, &args).unwrap();
    let (resumed, straight) = (records(&out), records(&straight));
    assert_eq!(resumed.last().unwrap().step, 8);
    assert_eq!(resumed, straight);

    let other = dir.path().join("b");
    let mut args = common.to_vec();
    args.extend(["--max-steps", "12", "--resume", &o, "--hidden", "8"]);
    let e = format!("{:#}", train(&other, &args).unwrap_err());
    assert!(e.contains("--resume") && e.contains("does not fit"), "{e}");
}

#[test]
fn bad_inputs_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("r");
    train(&out, &["--max-steps", "2", "--samples", "32"]).unwrap();
    let o = out.to_str().unwrap();
    let err = |args: &[&str]| format!("{:#}", run(args).unwrap_err());

    let e = err(&[
        "predict",
        "--checkpoint",
        o,
        "--device",
        "cpu",
        "--input",
        "run: sun snow",
    ]);
    assert!(
        e.contains("word 2 'snow'") && e.contains("sun or rain"),
        "{e}"
    );
    let e = err(&[
        "predict",
        "--checkpoint",
        o,
        "--device",
        "cpu",
        "--input",
        "nap: sun",
    ]);
    assert!(e.contains("'nap' is not a start activity"), "{e}");
    let e = err(&["predict", "--checkpoint", o, "--device", "cpu"]);
    assert!(e.contains("--input is required"), "{e}");

    let data = dir.path().join("bad.txt");
    std::fs::write(&data, "run: sun\nbike: sun hail\n").unwrap();
    let e = err(&[
        "eval",
        "--checkpoint",
        o,
        "--device",
        "cpu",
        "--data",
        data.to_str().unwrap(),
    ]);
    assert!(e.contains("bad.txt:2") && e.contains("hail"), "{e}");

    let e = format!(
        "{:#}",
        train(
            &dir.path().join("x"),
            &["--max-steps", "1", "--bidirectional"]
        )
        .unwrap_err()
    );
    assert!(e.contains("--bidirectional"), "{e}");
}
