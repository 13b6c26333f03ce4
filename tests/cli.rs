//! The `rnn` command's shared behaviour, driven in-process: every bad input is one clear error
//! naming what is wrong (never a panic), and the listing commands work.

mod common;

use std::path::Path;

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

#[test]
fn tasks_lists_every_task() {
    run(&["tasks"]).unwrap();
    for t in rnn::tasks::TaskName::ALL {
        assert_eq!(t.as_str().parse::<rnn::tasks::TaskName>().unwrap(), t);
        assert!(!t.describe().is_empty());
    }
}

#[test]
fn unknown_task_and_cell_are_named() {
    let e = err(&["train", "chess"]);
    assert!(
        e.contains("unknown task 'chess'") && e.contains("char-lm"),
        "{e}"
    );
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().to_str().unwrap();
    let e = err(&["train", "adding", "--cell", "lstn", "--out", out]);
    assert!(e.contains("--cell") && e.contains("lstn"), "{e}");
}

#[test]
fn zero_and_negative_sizes_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().to_str().unwrap();
    for (flag, value) in [
        ("--hidden", "0"),
        ("--layers", "0"),
        ("--batch-size", "0"),
        ("--epochs", "0"),
        ("--dropout", "1.5"),
        ("--lr", "-0.1"),
        ("--split", "1.0"),
    ] {
        let e = err(&["train", "adding", flag, value, "--out", out]);
        assert!(e.contains(flag), "{flag}: {e}");
    }
    // A negative size is not a number clap accepts for an unsigned option: a usage error.
    let e = err(&["train", "adding", "--hidden", "-3", "--out", out]);
    assert!(e.contains("--hidden"), "{e}");
}

#[test]
fn gpu_devices_without_their_feature_say_how_to_rebuild() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().to_str().unwrap();
    if !cfg!(feature = "cuda") {
        let e = err(&["train", "adding", "--device", "cuda", "--out", out]);
        assert!(e.contains("--features cuda"), "{e}");
    }
    if !cfg!(feature = "metal") {
        let e = err(&["train", "adding", "--device", "metal", "--out", out]);
        assert!(e.contains("--features metal"), "{e}");
    }
    let e = err(&["train", "adding", "--device", "tpu", "--out", out]);
    assert!(e.contains("tpu"), "{e}");
    let e = err(&[
        "train", "adding", "--dtype", "f8", "--device", "cpu", "--out", out,
    ]);
    assert!(e.contains("--dtype"), "{e}");
}

#[test]
fn unwritable_out_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("a-file");
    std::fs::write(&file, b"x").unwrap();
    let out = file.join("run");
    let e = err(&["train", "adding", "--out", out.to_str().unwrap()]);
    assert!(e.contains("--out") && e.contains("a-file"), "{e}");
}

#[test]
fn config_file_errors_name_the_file_and_key() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("run.toml");
    std::fs::write(&cfg, "hiden = 3\n").unwrap();
    let e = err(&["train", "adding", "--config", cfg.to_str().unwrap()]);
    assert!(e.contains("run.toml") && e.contains("hiden"), "{e}");
    let e = err(&["train", "adding", "--config", "/no/such/file.toml"]);
    assert!(e.contains("/no/such/file.toml"), "{e}");
}

#[test]
fn checkpoint_commands_name_a_missing_or_foreign_directory() {
    let e = err(&["eval", "--checkpoint", "/no/such/run", "--device", "cpu"]);
    assert!(e.contains("/no/such/run"), "{e}");
    let dir = tempfile::tempdir().unwrap();
    let e = err(&[
        "predict",
        "--checkpoint",
        dir.path().to_str().unwrap(),
        "--input",
        "x",
        "--device",
        "cpu",
    ]);
    assert!(e.contains("not a checkpoint"), "{e}");
    assert!(!Path::new("/no/such/run").exists());
}

#[test]
fn the_binary_reports_one_line_and_a_nonzero_code() {
    assert_eq!(rnn::cli::main_entry(["rnn", "train", "chess"]), 1);
    assert_ne!(rnn::cli::main_entry(["rnn", "--no-such-flag"]), 0);
    assert_eq!(rnn::cli::main_entry(["rnn", "tasks"]), 0);
}

#[test]
fn resuming_from_another_task_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("adding");
    let out = out.to_str().unwrap();
    run(&[
        "train",
        "adding",
        "--max-steps",
        "2",
        "--samples",
        "64",
        "--seq-len",
        "5",
        "--hidden",
        "8",
        "--batch-size",
        "16",
        "--device",
        "cpu",
        "--out",
        out,
    ])
    .unwrap();
    let other = dir.path().join("copy");
    let e = err(&[
        "train",
        "copy",
        "--max-steps",
        "2",
        "--resume",
        out,
        "--device",
        "cpu",
        "--out",
        other.to_str().unwrap(),
    ]);
    assert!(e.contains("--resume") && e.contains("`adding`"), "{e}");
    // `sample` needs a generative checkpoint.
    let e = err(&["sample", "--checkpoint", out, "--device", "cpu"]);
    assert!(e.contains("adding"), "{e}");
}

/// The binary's exit code and stderr for `args` (an output directory is appended as `--out`)
/// under `RUST_BACKTRACE=1`, as many Rust users have it set.
fn binary_with_rust_backtrace(args: &[&std::ffi::OsStr]) -> (Option<i32>, String) {
    let dir = tempfile::tempdir().unwrap();
    let output = std::process::Command::new(common::rnn_bin())
        .args(args)
        .arg("--out")
        .arg(dir.path().join("run"))
        .env("RUST_BACKTRACE", "1")
        .env_remove("RUST_LIB_BACKTRACE")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr)
        .trim_end()
        .to_string();
    (output.status.code(), stderr)
}

/// With `RUST_BACKTRACE=1` Candle's errors would carry a 50-line backtrace inside their
/// message; the binary still prints one line. (`--cell lstn` on the command line is refused by
/// the argument parser before the run starts; from a config file it reaches the run layer.)
#[test]
fn the_binary_error_is_one_line_even_with_rust_backtrace_set() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("run.toml");
    std::fs::write(&config, "cell = \"lstn\"\n").unwrap();
    let args = [
        std::ffi::OsStr::new("train"),
        std::ffi::OsStr::new("adding"),
        std::ffi::OsStr::new("--config"),
        config.as_os_str(),
        std::ffi::OsStr::new("--device"),
        std::ffi::OsStr::new("cpu"),
    ];
    let (code, stderr) = binary_with_rust_backtrace(&args);
    assert_eq!(code, Some(1), "{stderr}");
    assert_eq!(
        stderr,
        format!(
            "error: --config {}:1: --cell: unknown cell 'lstn': expected one of lstm, gru, rnn-tanh, rnn-relu",
            config.display()
        )
    );
}

/// The input the `config_toml` fuzzer reported as a 10-second timeout (`cell = "0["`): under
/// `RUST_BACKTRACE=1` the unknown-cell error captured and symbolised a backtrace (seconds under
/// AddressSanitizer) and printed it inside the message. Through the binary it is one line.
#[test]
fn fuzz_regression_config_with_an_unknown_cell_is_one_line() {
    let config = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fuzz_regressions/config_toml_unknown_cell.toml");
    let mut args = ["train", "adding", "--device", "cpu", "--config"]
        .map(std::ffi::OsStr::new)
        .to_vec();
    args.push(config.as_os_str());
    let (code, stderr) = binary_with_rust_backtrace(&args);
    assert_eq!(code, Some(1), "{stderr}");
    assert_eq!(
        stderr,
        format!(
            "error: --config {}:1: --cell: unknown cell '0[': expected one of lstm, gru, rnn-tanh, rnn-relu",
            config.display()
        )
    );
}
