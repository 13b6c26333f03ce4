//! Each task reads its own options: `rnn train TASK` refuses one that TASK does not read (by
//! flag or config file) and data paths that do not exist, `rnn train TASK --help` lists TASK's
//! options with its defaults, and a run that fails before its first checkpoint removes the
//! `--out` directory it created.
#![cfg(feature = "cli")]

mod common;
use common::rnn_output;

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
    rnn_stdout(&["train", task, "--help"])
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
            && e.len() <= 440,
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

/// Runs the `rnn` binary; returns stdout, failing the test on a non-zero exit.
fn rnn_stdout(args: &[&str]) -> String {
    rnn_output(args).0
}

/// Without `--test`, classify holds a test part out of `--data` besides the validation part;
/// the summary's headline scores it with the best checkpoint, and `eval` prints the same.
#[test]
fn classify_holds_out_a_test_part_that_eval_scores_again() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("reviews.txt");
    let mut text = String::new();
    let (good, bad) = (["great", "fine", "lovely"], ["awful", "dull", "poor"]);
    for i in 0..200 {
        let (label, word) = if i % 2 == 0 {
            ("pos", good[i % 3])
        } else {
            ("neg", bad[i % 3])
        };
        text.push_str(&format!("{label}\tthe film was {word} and {word}\n"));
    }
    std::fs::write(&data, text).unwrap();
    let out = dir.path().join("run");
    let (data_s, out_s) = (data.to_str().unwrap(), out.to_str().unwrap());
    let train = rnn_stdout(&[
        "train",
        "classify",
        "--data",
        data_s,
        "--out",
        out_s,
        "--device",
        "cpu",
        "--epochs",
        "2",
        "--hidden",
        "8",
        "--embedding",
        "8",
    ]);
    let summary = train.lines().last().unwrap();
    let (_, headline) = summary
        .split_once("; test accuracy ")
        .unwrap_or_else(|| panic!("no test headline: {summary}"));
    // 200 examples: 20 validation, 20 test (a tenth each), 160 training.
    let held = format!("(20 examples held out of {data_s}; best checkpoint, step ");
    assert!(headline.contains(&held), "{summary}");
    let (scores, _) = headline.split_once(" (").unwrap();
    let eval = rnn_stdout(&["eval", "--checkpoint", out_s, "--device", "cpu"]);
    let (accuracy, macro_f1) = scores.split_once(", macro F1 ").unwrap();
    assert!(
        eval.starts_with(&format!(
            "test accuracy {accuracy}, macro F1 {macro_f1}, loss "
        )) && eval.contains(&format!("on 20 examples held out of {data_s}")),
        "train: {summary}\neval: {eval}"
    );
}

/// `dates` (and `seq2seq`) score a test part besides the validation part; the summary's
/// headline is the line `eval` prints for the best checkpoint.
#[test]
fn dates_reports_a_test_part_that_eval_prints_again() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    let out_s = out.to_str().unwrap();
    let train = rnn_stdout(&[
        "train",
        "dates",
        "--samples",
        "200",
        "--epochs",
        "1",
        "--hidden",
        "8",
        "--embedding",
        "8",
        "--out",
        out_s,
        "--device",
        "cpu",
    ]);
    let summary = train.lines().last().unwrap();
    let (_, headline) = summary
        .split_once("; test (best checkpoint): ")
        .unwrap_or_else(|| panic!("no test headline: {summary}"));
    let headline = headline.split("; run in ").next().unwrap();
    assert!(
        headline.starts_with("dates on the held-out test part (20 pairs, greedy): loss "),
        "{summary}"
    );
    let eval = rnn_stdout(&["eval", "--checkpoint", out_s, "--device", "cpu"]);
    assert_eq!(eval.trim_end(), headline, "train: {summary}");
}

/// char-lm without `--test` holds out the end of the text as its test part; the summary's test
/// perplexity is what `eval` prints for the best checkpoint.
#[test]
fn char_lm_holds_out_a_test_part_that_eval_scores_again() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    let out_s = out.to_str().unwrap();
    let train = rnn_stdout(&[
        "train",
        "char-lm",
        "--max-steps",
        "3",
        "--hidden",
        "16",
        "--embedding",
        "8",
        "--layers",
        "1",
        "--out",
        out_s,
        "--device",
        "cpu",
    ]);
    let summary = train.lines().last().unwrap();
    let ppl = summary
        .split("; test perplexity ")
        .nth(1)
        .unwrap_or_else(|| panic!("no test perplexity: {summary}"))
        .split(';')
        .next()
        .unwrap();
    assert!(
        summary.contains("held out of the training text, best weights"),
        "{summary}"
    );
    let eval = rnn_stdout(&["eval", "--checkpoint", out_s, "--device", "cpu"]);
    assert!(
        eval.starts_with(&format!("char-lm: perplexity {ppl}, "))
            && eval.contains("(test: the last 0.1 of the built-in text)"),
        "train: {summary}\neval: {eval}"
    );
}

/// The generated tasks score fresh test sequences at the best checkpoint, as `eval` does.
#[test]
fn adding_reports_fresh_test_sequences_like_eval() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    let out_s = out.to_str().unwrap();
    let train = rnn_stdout(&[
        "train",
        "adding",
        "--seq-len",
        "10",
        "--samples",
        "200",
        "--epochs",
        "1",
        "--hidden",
        "8",
        "--out",
        out_s,
        "--device",
        "cpu",
    ]);
    let summary = train.lines().last().unwrap();
    let headline = summary
        .split("; test (best checkpoint): ")
        .nth(1)
        .unwrap_or_else(|| panic!("no test headline: {summary}"))
        .split("; run in ")
        .next()
        .unwrap();
    assert!(headline.starts_with("adding (T = 10, "), "{summary}");
    let eval = rnn_stdout(&["eval", "--checkpoint", out_s, "--device", "cpu"]);
    assert_eq!(eval.trim_end(), headline, "train: {summary}");
}

/// Enumerated options list their values in `--help`, and a wrong value is answered with them
/// (by the argument parser, exit code 2) while aliases still work.
#[test]
fn enumerated_options_list_their_values() {
    let (help, _) = common::rnn_output(&["train", "--help"]);
    for listed in [
        "[possible values: lstm, gru, rnn-tanh, rnn-relu]",
        "[possible values: adamw, sgd]",
        "[possible values: constant, step, multistep, plateau, cosine, cosine-restarts]",
        "[possible values: f32, f64, bf16, f16]",
        "[possible values: char, word, subword, tutorial]",
        "[possible values: last, mean, max, attention]",
        "[possible values: none, additive, dot, general]",
        "[possible values: next-step, direct, autoregressive]",
    ] {
        assert!(help.contains(listed), "--help lacks {listed}");
    }
    let out = std::process::Command::new(common::rnn_bin())
        .args(["train", "adding", "--optimizer", "adagrad"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--optimizer must be adamw or sgd, got 'adagrad'")
            && err.contains("[possible values: adamw, sgd]"),
        "{err}"
    );
    // Aliases and any case are accepted, as in config files.
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run").display().to_string();
    common::rnn_output(&[
        "train",
        "adding",
        "--cell",
        "GRU",
        "--optimizer",
        "Adam",
        "--schedule",
        "StepLR",
        "--samples",
        "64",
        "--seq-len",
        "8",
        "--hidden",
        "8",
        "--max-steps",
        "2",
        "--out",
        &out,
    ]);
}
