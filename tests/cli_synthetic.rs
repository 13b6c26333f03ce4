//! End-to-end tests of `rnn train adding` and `rnn train copy` through `rnn::cli::run`: tiny runs
//! whose output directory, falling loss, `rnn eval` and `rnn predict` are checked, and bad inputs
//! whose errors must name the flag.
#![cfg(feature = "cli")]

use std::path::Path;

fn run(args: &[&str]) -> anyhow::Result<()> {
    rnn::cli::run(std::iter::once("rnn").chain(args.iter().copied()))
}

/// The `metrics.jsonl` records of a run.
fn records(out: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(out.join("metrics.jsonl"))
        .expect("metrics.jsonl")
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON record"))
        .collect()
}

fn check_run_dir(out: &Path) {
    for f in [
        "checkpoint/model.safetensors",
        "checkpoint/config.json",
        "checkpoint/state.json",
        "best/model.safetensors",
        "metrics.jsonl",
        "learning_curves.png",
        "learning_curves.svg",
    ] {
        assert!(out.join(f).is_file(), "missing {f}");
    }
}

fn err(args: &[&str]) -> String {
    format!("{:#}", run(args).expect_err("should fail"))
}

#[test]
fn adding_learns_below_the_baseline_and_evaluates_and_predicts() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("adding");
    let out_s = out.to_str().unwrap();
    // Short sequences (T = 6) are learnt in a few hundred steps, well below the 1/6 baseline.
    run(&[
        "train",
        "adding",
        "--out",
        out_s,
        "--device",
        "cpu",
        "--seq-len",
        "6",
        "--samples",
        "2000",
        "--hidden",
        "24",
        "--batch-size",
        "32",
        "--lr",
        "0.01",
        "--max-steps",
        "300",
        "--eval-every",
        "100",
    ])
    .unwrap();
    check_run_dir(&out);
    let recs = records(&out);
    assert!(recs.len() >= 3, "{recs:?}");
    let first = recs[0]["train_loss"].as_f64().unwrap();
    let last = recs.last().unwrap();
    let mse = last["metrics"]["mse"].as_f64().unwrap();
    assert!(last["train_loss"].as_f64().unwrap() < first, "{recs:?}");
    assert!(
        mse < 0.1,
        "valid MSE {mse} should be well below the 0.167 baseline"
    );
    let baseline = last["metrics"]["baseline_mse"].as_f64().unwrap();
    assert!((baseline - 1.0 / 6.0).abs() < 0.03, "{baseline}");
    assert_eq!(last["main"]["name"], "mse");

    run(&["eval", "--checkpoint", out_s, "--device", "cpu"]).unwrap();
    run(&[
        "predict",
        "--checkpoint",
        out_s,
        "--device",
        "cpu",
        "--input",
        "0.3:1 0.5:0 0.9:0 0.2:1 0.1:0 0.7:0",
    ])
    .unwrap();
    // A file with one input per line.
    let inputs = dir.path().join("inputs.txt");
    std::fs::write(
        &inputs,
        "0.3:1 0.5:0 0.9:0 0.2:1 0.1:0 0.7:0\n0.9:0 0.8:1 0.1:0 0.6:0 0.5:1 0.4:0\n",
    )
    .unwrap();
    run(&[
        "predict",
        "--checkpoint",
        out_s,
        "--device",
        "cpu",
        "--input",
        inputs.to_str().unwrap(),
    ])
    .unwrap();

    // Malformed inputs name the flag and the step.
    let e = err(&[
        "predict",
        "--checkpoint",
        out_s,
        "--device",
        "cpu",
        "--input",
        "0.3:1 0.5",
    ]);
    assert!(e.contains("--input") && e.contains("step 2"), "{e}");
    let e = err(&[
        "predict",
        "--checkpoint",
        out_s,
        "--device",
        "cpu",
        "--input",
        "0.3:2 0.5:1",
    ]);
    assert!(e.contains("--input") && e.contains("marker"), "{e}");
    let e = err(&["sample", "--checkpoint", out_s, "--device", "cpu"]);
    assert!(e.contains("rnn predict"), "{e}");
    let e = err(&[
        "eval",
        "--checkpoint",
        out_s,
        "--device",
        "cpu",
        "--data",
        "x.txt",
    ]);
    assert!(e.contains("--data"), "{e}");
}

#[test]
fn copy_trains_evaluates_and_predicts() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("copy");
    let out_s = out.to_str().unwrap();
    run(&[
        "train",
        "copy",
        "--out",
        out_s,
        "--device",
        "cpu",
        "--seq-len",
        "3",
        "--samples",
        "400",
        "--hidden",
        "32",
        "--batch-size",
        "32",
        "--max-steps",
        "60",
        "--eval-every",
        "20",
        "--cell",
        "gru",
    ])
    .unwrap();
    check_run_dir(&out);
    let recs = records(&out);
    assert!(recs.len() >= 3, "{recs:?}");
    let first = recs[0]["train_loss"].as_f64().unwrap();
    let last = recs.last().unwrap();
    assert!(last["train_loss"].as_f64().unwrap() < first, "{recs:?}");
    assert!(
        last["valid_loss"].as_f64().unwrap() < recs[0]["valid_loss"].as_f64().unwrap(),
        "{recs:?}"
    );
    assert_eq!(last["main"]["name"], "accuracy");
    let acc = last["metrics"]["accuracy"].as_f64().unwrap();
    assert!((0.0..=1.0).contains(&acc));
    let config: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("checkpoint/config.json")).unwrap())
            .unwrap();
    assert_eq!(config["model"]["task"], "copy");
    assert_eq!(config["model"]["seq_len"], 3);

    run(&["eval", "--checkpoint", out_s, "--device", "cpu"]).unwrap();
    run(&[
        "predict",
        "--checkpoint",
        out_s,
        "--device",
        "cpu",
        "--input",
        "3 1 4 1 5 2 6 5 3 5",
    ])
    .unwrap();
    for (bad, what) in [
        ("3 1 4", "expected 10 symbols"),
        ("3 1 4 1 5 2 6 5 3 9", "symbol 10"),
        ("3 x 4 1 5 2 6 5 3 5", "symbol 2"),
    ] {
        let e = err(&[
            "predict",
            "--checkpoint",
            out_s,
            "--device",
            "cpu",
            "--input",
            bad,
        ]);
        assert!(e.contains("--input") && e.contains(what), "{bad}: {e}");
    }
}

#[test]
fn bad_options_name_the_flag() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("bad");
    let out_s = out.to_str().unwrap();
    for (task, extra, flag) in [
        ("adding", vec!["--seq-len", "0"], "--seq-len"),
        ("copy", vec!["--seq-len", "0"], "--seq-len"),
        ("adding", vec!["--seq-len", "1"], "--seq-len"),
        ("adding", vec!["--cell", "lstn"], "--cell"),
        ("copy", vec!["--cell", "lstn"], "--cell"),
        ("adding", vec!["--data", "file.txt"], "--data"),
        ("copy", vec!["--bidirectional"], "--bidirectional"),
    ] {
        let mut args = vec![
            "train",
            task,
            "--out",
            out_s,
            "--device",
            "cpu",
            "--max-steps",
            "1",
        ];
        args.extend(extra.iter().copied());
        let e = err(&args);
        assert!(e.contains(flag), "{task} {extra:?}: {e}");
    }
}

/// Half precision on the CPU (composed path, f32 losses and master weights): a short run in
/// bf16 and in f16 trains, logs finite losses, saves a checkpoint in that dtype and evaluates.
#[test]
fn adding_trains_in_bf16_and_f16() {
    for dtype in ["bf16", "f16"] {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join(dtype);
        let out_s = out.to_str().unwrap();
        run(&[
            "train",
            "adding",
            "--out",
            out_s,
            "--device",
            "cpu",
            "--dtype",
            dtype,
            "--seq-len",
            "6",
            "--samples",
            "400",
            "--hidden",
            "16",
            "--batch-size",
            "32",
            "--epochs",
            "2",
        ])
        .unwrap_or_else(|e| panic!("{dtype}: {e:#}"));
        check_run_dir(&out);
        let recs = records(&out);
        assert_eq!(recs.len(), 2, "{dtype}: one record per epoch");
        for r in &recs {
            let v = r["valid_loss"].as_f64().expect("valid_loss");
            assert!(v.is_finite() && v > 0.0, "{dtype}: {r}");
        }
        let ckpt = rnn_train::checkpoint::load(&out.join("checkpoint"), &candle_core::Device::Cpu)
            .unwrap_or_else(|e| panic!("{dtype}: {e}"));
        let want = if dtype == "bf16" {
            candle_core::DType::BF16
        } else {
            candle_core::DType::F16
        };
        assert!(
            ckpt.params.iter().all(|(_, t)| t.dtype() == want),
            "{dtype}: checkpoint dtypes"
        );
        let ck = out.join("checkpoint");
        run(&[
            "eval",
            "--checkpoint",
            ck.to_str().unwrap(),
            "--device",
            "cpu",
        ])
        .unwrap_or_else(|e| panic!("{dtype} eval: {e:#}"));
    }
}
