//! Each task reads its own options: `rnn train TASK` refuses one that TASK does not read (by
//! flag or config file) and data paths that do not exist, `rnn train TASK --help` lists TASK's
//! options with its defaults, and a run that fails before its first checkpoint removes the
//! `--out` directory it created.

use std::process::Command;

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

fn help(task: &str) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_rnn"))
        .args(["train", task, "--help"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn options_a_task_does_not_read_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("s.csv");
    std::fs::write(&csv, "t,v\n1,2\n").unwrap();
    let (csv, out) = (csv.to_str().unwrap(), dir.path().join("run"));
    let out = out.to_str().unwrap();
    // A task-specific reason.
    let e = err(&[
        "train", "forecast", "--data", csv, "--valid", csv, "--out", out,
    ]);
    assert!(
        e.starts_with("--valid: forecast splits its one --data series by time"),
        "{e}"
    );
    // The generic refusal lists what the task reads.
    let e = err(&[
        "train", "classify", "--data", csv, "--labels", csv, "--out", out,
    ]);
    assert!(
        e.starts_with(
            "--labels does not apply to `rnn train classify`, which reads --data --valid --test"
        ) && e.contains("`rnn train classify --help`")
            && e.len() <= 300,
        "{e}"
    );
    let e = err(&[
        "train", "digits", "--data", csv, "--test", csv, "--out", out,
    ]);
    assert!(e.starts_with("--test: digits holds out"), "{e}");
    let e = err(&["train", "adding", "--lookback", "3", "--out", out]);
    assert!(
        e.starts_with("--lookback does not apply to `rnn train adding`"),
        "{e}"
    );
    // The same from a config file.
    let cfg = dir.path().join("c.toml");
    std::fs::write(&cfg, "lookback = 5\n").unwrap();
    let e = err(&[
        "train",
        "classify",
        "--config",
        cfg.to_str().unwrap(),
        "--out",
        out,
    ]);
    assert!(e.starts_with("--lookback does not apply"), "{e}");
    // None of these created the output directory.
    assert!(!dir.path().join("run").exists());
}

#[test]
fn missing_data_paths_are_refused_before_training() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("train.conll");
    std::fs::write(&data, "The DET\ncat NOUN\n\n").unwrap();
    let out = dir.path().join("run");
    let missing = dir.path().join("tset.conll");
    let e = err(&[
        "train",
        "tag",
        "--data",
        data.to_str().unwrap(),
        "--test",
        missing.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    assert_eq!(e, format!("--test {}: no such file", missing.display()));
    assert!(!out.exists());
}

#[test]
fn a_failed_run_removes_the_out_directory_it_created_and_keeps_others() {
    let dir = tempfile::tempdir().unwrap();
    let ragged = dir.path().join("ragged.csv");
    std::fs::write(&ragged, "t,v\n1,2\n3\n").unwrap();
    let created = dir.path().join("new");
    let out = created.join("run");
    let e = err(&[
        "train",
        "forecast",
        "--data",
        ragged.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--device",
        "cpu",
    ]);
    assert!(e.contains("ragged.csv"), "{e}");
    assert!(!created.exists(), "{} was left behind", created.display());
    // An --out that existed before the run stays, with what it held.
    let kept = dir.path().join("kept");
    std::fs::create_dir(&kept).unwrap();
    std::fs::write(kept.join("notes.txt"), "mine").unwrap();
    err(&[
        "train",
        "forecast",
        "--data",
        ragged.to_str().unwrap(),
        "--out",
        kept.to_str().unwrap(),
        "--device",
        "cpu",
    ]);
    assert!(kept.join("notes.txt").is_file());
}

#[test]
fn task_help_lists_the_tasks_options_and_defaults() {
    let h = help("forecast");
    assert!(h.starts_with("time-series forecasting"), "{h}");
    assert!(h.contains("Usage: rnn train forecast"), "{h}");
    for flag in [
        "--lookback",
        "--valid-split",
        "--season",
        "--epochs",
        "--config",
    ] {
        assert!(h.contains(flag), "{flag} missing from\n{h}");
    }
    for flag in ["--vocab-size", "--pooling", "--valid <", "--labels"] {
        assert!(!h.contains(flag), "{flag} in\n{h}");
    }
    assert!(
        h.contains("[default: 12]") && h.contains("[default: 60]"),
        "{h}"
    );
    let h = help("classify");
    assert!(
        h.contains("--pooling") && h.contains("[default: attention]"),
        "{h}"
    );
    assert!(!h.contains("--lookback"), "{h}");
    let h = help("word-lm");
    assert!(
        h.contains("[default: sgd]") && h.contains("[default: word]"),
        "{h}"
    );
}
