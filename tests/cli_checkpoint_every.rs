//! `--checkpoint-every N`: a run saves its checkpoint every N steps between evaluations, so a run
//! killed before its first evaluation resumes from the last such checkpoint.
#![cfg(feature = "cli")]

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn classify(data: &Path, out: &Path, extra: &[&str]) -> Command {
    let mut cmd = Command::new(common::rnn_bin());
    cmd.env("RNN_KERNEL_CACHE", "off");
    cmd.arg("train").arg("classify").arg("--data").arg(data);
    cmd.arg("--out").arg(out);
    // One epoch of 800 steps (4000 sentences less the held-out parts, 4 per batch); evaluations
    // only at its end.
    cmd.args([
        "--hidden",
        "4",
        "--embedding",
        "4",
        "--batch-size",
        "4",
        "--epochs",
        "1",
        "--device",
        "cpu",
    ]);
    cmd.args(extra);
    cmd
}

/// The `step` of the checkpoint in `out`, once it exists.
fn saved_step(out: &Path) -> Option<u64> {
    let text = std::fs::read_to_string(out.join("checkpoint/state.json")).ok()?;
    let state: serde_json::Value = serde_json::from_str(&text).ok()?;
    state["step"].as_u64()
}

#[test]
fn checkpoint_every_saves_between_evaluations_and_the_run_resumes_from_it() {
    let dir = tempfile::tempdir().unwrap();
    let filler = ["the", "film", "a", "story", "is", "with"];
    let data = common::sentiment_file_with(dir.path(), "s.txt", 4000, 5, &filler);
    let out = dir.path().join("run");
    let mut child = classify(&data, &out, &["--checkpoint-every", "3"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let start = Instant::now();
    let step = loop {
        if let Some(step) = saved_step(&out) {
            break step;
        }
        assert!(
            child.try_wait().unwrap().is_none(),
            "the run ended before any checkpoint appeared"
        );
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "no checkpoint within 120 s"
        );
        std::thread::sleep(Duration::from_millis(2));
    };
    // Saved by --checkpoint-every: a multiple of 3 before the epoch's end, and no evaluation yet.
    let metrics = std::fs::read_to_string(out.join("metrics.jsonl")).unwrap_or_default();
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(step > 0 && step % 3 == 0, "step {step}");
    assert!(
        step < 800 && metrics.trim().is_empty(),
        "step {step}, metrics {metrics}"
    );

    // Resume from it for three more steps.
    let out2 = dir.path().join("resumed");
    let target = (saved_step(&out).unwrap() + 3).to_string();
    let done = classify(
        &data,
        &out2,
        &["--resume", out.to_str().unwrap(), "--max-steps", &target],
    )
    .output()
    .unwrap();
    let log =
        String::from_utf8_lossy(&done.stdout).to_string() + &String::from_utf8_lossy(&done.stderr);
    assert!(done.status.success(), "{log}");
    assert!(log.contains("resuming"), "{log}");
    // The resumed run's own three steps, timed without evaluations and checkpoints.
    assert!(
        log.contains("classify: training took") && log.contains("s for 3 steps,"),
        "{log}"
    );
    assert_eq!(
        saved_step(&out2).map(|s| s.to_string()),
        Some(target),
        "{log}"
    );

    // Zero is refused, naming the flag.
    let bad = classify(&data, &dir.path().join("bad"), &["--checkpoint-every", "0"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(
        !bad.status.success() && err.contains("--checkpoint-every"),
        "{err}"
    );
}
