//! `--average-from-epoch E [--average-ema D]`: the run keeps an average of the weights (uniform
//! or exponential), saved in the checkpoint; evaluations score it and `best/` holds it, while the
//! checkpoint's model is the last weights that training goes on from.
#![cfg(feature = "cli")]

mod common;

use std::collections::HashMap;
use std::path::Path;
use std::process::Command;

use candle_core::{Device, Tensor};

fn classify(dir: &Path, out: &Path, extra: &[&str]) -> std::process::Output {
    let data = common::sentiment_file(dir, "train.txt", 240, 3);
    Command::new(common::rnn_bin())
        .env("RNN_KERNEL_CACHE", "off")
        .arg("train")
        .arg("classify")
        .arg("--data")
        .arg(&data)
        .arg("--out")
        .arg(out)
        .args([
            "--hidden",
            "4",
            "--embedding",
            "4",
            "--batch-size",
            "8",
            "--device",
            "cpu",
        ])
        .args(extra)
        .output()
        .unwrap()
}

fn tensors(path: &Path) -> HashMap<String, Vec<f32>> {
    candle_core::safetensors::load(path, &Device::Cpu)
        .unwrap()
        .into_iter()
        .map(|(k, t): (String, Tensor)| (k, t.flatten_all().unwrap().to_vec1::<f32>().unwrap()))
        .collect()
}

fn json(path: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

#[test]
fn best_holds_the_average_and_the_checkpoint_the_last_weights() {
    for ema in [None, Some("0.9")] {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("run");
        let mut extra = vec!["--epochs", "1", "--average-from-epoch", "0"];
        if let Some(d) = ema {
            extra.extend(["--average-ema", d]);
        }
        let run = classify(dir.path(), &out, &extra);
        assert!(
            run.status.success(),
            "{}",
            String::from_utf8_lossy(&run.stderr)
        );
        let config = json(&out.join("checkpoint/config.json"));
        assert_eq!(config["trainer"]["average"]["start_epoch"], 0, "{config}");
        match ema {
            None => assert!(config["trainer"]["average"]["ema_decay"].is_null()),
            Some(_) => assert_eq!(config["trainer"]["average"]["ema_decay"], 0.9),
        }
        // Every step of the one epoch is in the average.
        let state = json(&out.join("checkpoint/state.json"));
        let steps = state["step"].as_u64().unwrap();
        assert!(steps > 5, "{state}");
        assert_eq!(state["trainer"]["average_count"], steps, "{state}");
        // The checkpoint keeps the last weights and the average beside them; `best/` (the one
        // evaluation's weights) is the average.
        let last = tensors(&out.join("checkpoint/model.safetensors"));
        let best = tensors(&out.join("best/model.safetensors"));
        let extra = tensors(&out.join("checkpoint/optimizer.safetensors"));
        assert_eq!(last.len(), best.len());
        let mut differ = 0;
        for (name, w) in &last {
            let avg = &extra[&format!("trainer.average.{name}")];
            assert_eq!(&best[name], avg, "{name}");
            differ += usize::from(avg != w);
        }
        assert!(differ > 0, "the average equals the last weights");
    }
}

#[test]
fn bad_average_options_name_the_flag() {
    let dir = tempfile::tempdir().unwrap();
    for (extra, says) in [
        (
            &["--average-ema", "0.9"][..],
            "--average-ema needs --average-from-epoch",
        ),
        (
            &["--average-from-epoch", "0", "--average-ema", "1.5"][..],
            "--average-ema must be a decay in (0, 1)",
        ),
        (
            &["--average-from-epoch", "0", "--average-ema", "-0.5"][..],
            "--average-ema must be a decay in (0, 1)",
        ),
        (
            &["--epochs", "2", "--average-from-epoch", "2"][..],
            "--average-from-epoch 2 is not before the last epoch (--epochs 2)",
        ),
    ] {
        let run = classify(dir.path(), &dir.path().join("bad"), extra);
        let stderr = String::from_utf8_lossy(&run.stderr);
        assert!(
            !run.status.success() && stderr.contains(says),
            "{extra:?}: {stderr}"
        );
    }
}
