//! Learning-rate schedules through the `rnn` binary: `--schedule cosine-restarts` turns its
//! `--cycle-epochs` into optimiser steps, restarts each cycle at `--peak-decay` times the last
//! peak, and logs the rate the schedule gives for the next step at every evaluation.
#![cfg(feature = "cli")]

mod common;
use common::{records, rnn_output, sentiment_file};
use rnn::train::optim::CosineRestarts;

#[test]
fn cosine_restarts_follows_its_cycles_in_epochs() {
    let dir = tempfile::tempdir().unwrap();
    // 200 examples (a part held out for validation) in batches of 16.
    let data = sentiment_file(dir.path(), "sentiment.txt", 200, 11);
    let out = dir.path().join("run");
    let s = |p: &std::path::Path| p.to_str().unwrap().to_string();
    rnn_output(&[
        "train",
        "classify",
        "--data",
        &s(&data),
        "--hidden",
        "8",
        "--embedding",
        "8",
        "--batch-size",
        "16",
        "--optimizer",
        "sgd",
        "--lr",
        "0.4",
        "--schedule",
        "cosine-restarts",
        "--cycle-epochs",
        "2,1",
        "--peak-decay",
        "0.5",
        "--min-lr",
        "0.01",
        "--epochs",
        "5",
        "--eval-every",
        "6",
        "--patience",
        "1000",
        "--device",
        "cpu",
        "--out",
        &s(&out),
    ]);
    let records = records(&out);
    // Evaluations every 6 steps and at each epoch's end.
    let per_epoch = records.iter().find(|r| r.epoch == 1.0).unwrap().step;
    assert!(
        records.len() >= 5 * per_epoch as usize / 6,
        "{}",
        records.len()
    );
    assert_eq!(records.last().unwrap().step, 5 * per_epoch);
    // Cycles of 2 epochs and 1 epoch, then 1 epoch again: restarts after epochs 2, 3, 4 and 5,
    // each at half the previous peak.
    let schedule = CosineRestarts::new(0.4, vec![2 * per_epoch, per_epoch], 1, 0.5, 0.01).unwrap();
    // (Within a rounding: serde_json may read the last bit of a 17-digit number back wrong.)
    for r in &records {
        let want = schedule.lr_at(r.step);
        assert!(
            (r.lr - want).abs() <= 1e-15,
            "step {}: {} vs {want}",
            r.step,
            r.lr
        );
    }
    let lr_at = |step: u64| records.iter().find(|r| r.step == step).unwrap().lr;
    assert_eq!(lr_at(2 * per_epoch), 0.2);
    assert_eq!(lr_at(3 * per_epoch), 0.1);
    assert_eq!(lr_at(4 * per_epoch), 0.05);
    // Within a cycle the rate falls.
    let falling = |from: u64, to: u64| {
        let lrs: Vec<f64> = records
            .iter()
            .filter(|r| (from..to).contains(&r.step))
            .map(|r| r.lr)
            .collect();
        assert!(
            lrs.len() >= 2 && lrs.windows(2).all(|w| w[1] < w[0]),
            "{lrs:?}"
        );
    };
    falling(1, 2 * per_epoch);
    falling(2 * per_epoch, 3 * per_epoch);
    falling(4 * per_epoch, 5 * per_epoch);
    // The rate logged after the last step is that of the next cycle's first.
    assert_eq!(lr_at(5 * per_epoch), 0.025);
    // The checkpoint records the cycles in optimiser steps.
    let config: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("checkpoint/config.json")).unwrap())
            .unwrap();
    let schedule_json = &config["trainer"]["schedule"];
    assert_eq!(schedule_json["type"], "cosine_restarts", "{config}");
    assert_eq!(
        schedule_json["cycle_steps"],
        serde_json::json!([2 * per_epoch, per_epoch])
    );
    assert_eq!(schedule_json["peak_decay"], 0.5);
}
