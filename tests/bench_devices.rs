//! `rnn bench --devices`: one table over devices, cells, modes and shapes, through the binary.
//! Devices this build lacks are rows, never errors; PyTorch's side is checked with fake Pythons
//! (shell scripts that print what the real script prints), so no PyTorch is needed.
#![cfg(feature = "cli")]

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

const RNN: &str = env!("CARGO_BIN_EXE_rnn");

/// The median a fake PyTorch reports, in ms.
const FAKE_TORCH_MS: f64 = 2.5;

/// Runs `rnn bench` with 2 iterations, a tiny shape (unless `args` has `--shapes`) and `args`;
/// returns stdout and stderr.
fn bench(args: &[&str]) -> (String, String) {
    let mut cmd = Command::new(RNN);
    cmd.args(["bench", "--iters", "2"]);
    if !args.contains(&"--shapes") {
        cmd.args([
            "--batch",
            "2",
            "--seq-len",
            "3",
            "--input-size",
            "4",
            "--hidden-size",
            "5",
        ]);
    }
    let out = cmd.args(args).output().unwrap();
    let stdout = String::from_utf8(out.stdout).unwrap();
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(out.status.success(), "{args:?}: {stderr}\n{stdout}");
    (stdout, stderr)
}

fn json_rows(stdout: &str) -> Vec<Value> {
    stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

/// Table lines of Markdown output (those starting with `|`), header and rule excluded.
fn table_rows(stdout: &str) -> Vec<Vec<String>> {
    stdout
        .lines()
        .filter(|l| l.starts_with('|'))
        .skip(2)
        .map(|l| {
            l.trim_matches('|')
                .split(" | ")
                .map(|c| c.trim().to_string())
                .collect()
        })
        .collect()
}

/// An executable shell script in `dir` standing in for a Python with PyTorch.
fn fake_python(dir: &Path, name: &str, body: &str) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.join(name);
    std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

fn num(v: &Value, key: &str) -> f64 {
    v[key]
        .as_f64()
        .unwrap_or_else(|| panic!("{key} is not a number: {v}"))
}

#[test]
fn missing_devices_are_rows_and_cpu_is_measured() {
    if cfg!(feature = "cuda") || cfg!(feature = "metal") {
        return; // the rows below are those of a CPU-only build
    }
    let (stdout, _) = bench(&["--devices", "cpu,cuda,metal", "--cells", "lstm,gru"]);
    assert!(stdout.starts_with("host: "), "{stdout}");
    assert!(stdout.contains("threads (Rayon)"), "{stdout}");
    let rows = table_rows(&stdout);
    // cpu: 2 cells × 2 modes; cuda and metal: one row each.
    assert_eq!(rows.len(), 6, "{stdout}");
    for (row, (cell, mode)) in rows[..4].iter().zip([
        ("lstm", "train"),
        ("lstm", "infer"),
        ("gru", "train"),
        ("gru", "infer"),
    ]) {
        assert_eq!(row[..4], ["cpu", cell, mode, "2×3×4×5"], "{stdout}");
        let ms: f64 = row[4].parse().unwrap();
        assert!(ms > 0.0, "{stdout}");
        assert_eq!(row[5], "", "{stdout}");
    }
    assert_eq!(rows[4][0], "cuda");
    assert!(
        rows[4][5].starts_with("not available:") && rows[4][5].contains("--features cuda"),
        "{stdout}"
    );
    assert_eq!(rows[5][0], "metal");
    assert!(
        rows[5][5].starts_with("not available:") && rows[5][5].contains("--features metal"),
        "{stdout}"
    );
}

#[test]
fn json_is_one_parseable_line_per_row() {
    let (stdout, _) = bench(&[
        "--devices",
        "cpu,cuda",
        "--json",
        "--shapes",
        "2x3x4x5;1x2x3x4",
    ]);
    let rows = json_rows(&stdout);
    let cpu: Vec<&Value> = rows.iter().filter(|r| r["device"] == "cpu").collect();
    assert_eq!(cpu.len(), 4, "{stdout}"); // lstm × 2 modes × 2 shapes
    for r in &cpu {
        assert_eq!(r["status"], "ok", "{r}");
        assert_eq!(r["impl"], "fused", "{r}");
        assert!(num(r, "ours_median_ms") > 0.0, "{r}");
        assert!(num(r, "ours_min_ms") <= num(r, "ours_median_ms"), "{r}");
        assert!(
            r["ratio"].is_null() && r["torch_median_ms"].is_null(),
            "{r}"
        );
        assert!(
            r["cpu_model"].as_str().is_some_and(|s| !s.is_empty()),
            "{r}"
        );
        assert!(num(r, "threads") >= 1.0, "{r}");
    }
    assert_eq!(
        (cpu[1]["batch"].as_u64(), cpu[1]["hidden"].as_u64()),
        (Some(1), Some(4))
    );
    if !cfg!(feature = "cuda") {
        let cuda = rows.last().unwrap();
        assert_eq!(cuda["device"], "cuda");
        assert_eq!(cuda["status"], "not-available");
        assert!(
            cuda["cell"].is_null() && cuda["ours_median_ms"].is_null(),
            "{cuda}"
        );
        assert!(
            cuda["note"].as_str().unwrap().contains("--features cuda"),
            "{cuda}"
        );
    }
}

#[test]
fn all_is_every_device_of_the_build() {
    let (stdout, _) = bench(&["--devices", "all", "--json", "--modes", "infer"]);
    let devices: Vec<String> = json_rows(&stdout)
        .iter()
        .map(|r| r["device"].as_str().unwrap().to_string())
        .collect();
    if !cfg!(feature = "cuda") && !cfg!(feature = "metal") {
        assert_eq!(devices, ["cpu"]);
    } else {
        assert_eq!(devices[0], "cpu");
    }
}

#[test]
fn pytorch_times_give_the_ratio() {
    let dir = tempfile::tempdir().unwrap();
    let python = fake_python(
        dir.path(),
        "python",
        &format!(
            r#"echo "some warning on stdout"
echo '{{"median_ms": {FAKE_TORCH_MS}, "min_ms": 2.0, "torch": "9.9.9", "threads": 3, "device": "cpu", "device_name": "cpu", "backend": "oneDNN v3.7", "tf32": null}}'"#
        ),
    );
    let python = python.to_str().unwrap();
    let (stdout, _) = bench(&["--devices", "cpu", "--pytorch", python, "--json"]);
    let rows = json_rows(&stdout);
    assert_eq!(rows.len(), 2, "{stdout}");
    for r in &rows {
        assert_eq!(num(r, "torch_median_ms"), FAKE_TORCH_MS);
        assert_eq!(num(r, "torch_min_ms"), 2.0);
        assert_eq!(r["torch_version"], "9.9.9");
        assert_eq!(r["torch_backend"], "oneDNN v3.7");
        assert!(r["tf32"].is_null(), "{r}");
        let want = num(r, "ours_median_ms") / FAKE_TORCH_MS;
        assert!((num(r, "ratio") - want).abs() <= 1e-12 * want, "{r}");
        assert_eq!(r["note"], "", "{r}");
    }

    // The Markdown table shows the same, with the ratio to two decimals.
    let (stdout, _) = bench(&["--devices", "cpu", "--pytorch", python, "--modes", "train"]);
    assert!(stdout.contains(&format!("PyTorch: {python}")), "{stdout}");
    let rows = table_rows(&stdout);
    assert_eq!(rows.len(), 1, "{stdout}");
    let row = &rows[0];
    assert_eq!(row.len(), 9, "{stdout}");
    let ours: f64 = row[4].parse().unwrap();
    assert_eq!(row[5], "2.500");
    assert_eq!(row[6], "torch 9.9.9, oneDNN v3.7, 3 threads");
    let ratio: f64 = row[7].parse().unwrap();
    assert!((ratio - ours / FAKE_TORCH_MS).abs() <= 0.006, "{stdout}");
}

#[test]
fn a_failing_python_is_a_note_not_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let python = fake_python(
        dir.path(),
        "python",
        "echo \"ModuleNotFoundError: No module named 'torch'\" >&2; exit 1",
    );
    let (stdout, _) = bench(&[
        "--devices",
        "cpu",
        "--pytorch",
        python.to_str().unwrap(),
        "--json",
    ]);
    for r in json_rows(&stdout) {
        assert_eq!(r["status"], "ok", "{r}");
        assert!(num(&r, "ours_median_ms") > 0.0, "{r}");
        assert!(
            r["torch_median_ms"].is_null() && r["ratio"].is_null(),
            "{r}"
        );
        let note = r["note"].as_str().unwrap();
        assert!(
            note.starts_with("PyTorch: ") && note.contains("No module named 'torch'"),
            "{note}"
        );
    }
    // A path that is not there at all.
    let missing = dir.path().join("no-python");
    let (stdout, _) = bench(&[
        "--devices",
        "cpu",
        "--modes",
        "infer",
        "--pytorch",
        missing.to_str().unwrap(),
        "--json",
    ]);
    let rows = json_rows(&stdout);
    assert_eq!(rows.len(), 1);
    let note = rows[0]["note"].as_str().unwrap();
    assert!(
        note.contains("cannot run") && note.contains("no-python"),
        "{note}"
    );
    // A Python that prints no JSON.
    let silent = fake_python(dir.path(), "silent", "echo hello");
    let (stdout, _) = bench(&[
        "--devices",
        "cpu",
        "--modes",
        "infer",
        "--pytorch",
        silent.to_str().unwrap(),
        "--json",
    ]);
    let note = json_rows(&stdout)[0]["note"].as_str().unwrap().to_string();
    assert!(note.contains("no JSON line"), "{note}");
}

/// A workload our side refuses (candle-nn has no vanilla RNN) is a row with the error.
#[test]
fn a_failing_workload_is_a_row() {
    let (stdout, _) = bench(&[
        "--devices",
        "cpu",
        "--cells",
        "rnn-tanh,gru",
        "--modes",
        "infer",
        "--impl",
        "candle-nn",
        "--json",
    ]);
    let rows = json_rows(&stdout);
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[0]["status"], "error");
    assert!(rows[0]["note"]
        .as_str()
        .unwrap()
        .contains("candle-nn has no rnn-tanh"));
    assert_eq!(rows[1]["status"], "ok");
}

/// The single-run `rnn bench` is unchanged; the table's flags need `--devices`, and typos in
/// the lists are errors before anything runs.
#[test]
fn single_run_and_flag_errors() {
    let (stdout, _) = bench(&["--mode", "infer"]);
    assert!(
        stdout.starts_with("rnn-fused infer B=2 T=3 I=4 H=5 layers=1 on cpu ("),
        "{stdout}"
    );
    assert_eq!(stdout.lines().count(), 1);
    let (stdout, _) = bench(&["--json"]);
    let r = json_rows(&stdout);
    assert_eq!(r.len(), 1);
    assert_eq!(r[0]["impl"], "rnn-fused");
    assert_eq!(r[0]["iters"], 2);
    // --min-time-s times more than --iters where these take less (a 2x3x4x5 iteration takes
    // microseconds).
    let (stdout, _) = bench(&["--json", "--min-time-s", "0.05"]);
    let r = json_rows(&stdout);
    assert!(r[0]["iters"].as_u64().unwrap() > 2, "{}", r[0]);

    let err = |args: &[&str]| {
        let mut all = vec!["rnn", "bench"];
        all.extend_from_slice(args);
        format!("{:#}", rnn::cli::run(all).unwrap_err())
    };
    let e = err(&["--cells", "lstm,gru"]);
    assert!(e.contains("--devices"), "{e}");
    let e = err(&["--devices", "cpu", "--device", "cpu"]);
    assert!(e.contains("--device"), "{e}");
    let e = err(&["--devices", "tpu"]);
    assert!(e.contains("unknown device 'tpu'"), "{e}");
    let e = err(&["--devices", "cpu", "--shapes", "2x3x4"]);
    assert!(e.contains("'2x3x4'"), "{e}");
    let e = err(&["--devices", "cpu", "--modes", "fast"]);
    assert!(e.contains("'fast'"), "{e}");
    let e = err(&["--devices", "cpu", "--cells", "lstn"]);
    assert!(e.contains("lstn"), "{e}");
    for bad in ["-1", "inf"] {
        let e = err(&["--min-time-s", bad]);
        assert!(e.contains("--min-time-s"), "{bad}: {e}");
        let e = err(&["--devices", "cpu", "--min-time-s", bad]);
        assert!(e.contains("--min-time-s"), "{bad}: {e}");
    }
}

/// The embedded PyTorch script is valid Python, and its argument parsing (which needs no
/// PyTorch) accepts every flag `rnn bench` passes.
#[test]
fn the_embedded_script_parses() {
    let script = rnn::bench_devices::TORCH_SCRIPT;
    let Ok(out) = Command::new("python3")
        .args(["-c", script, "--help"])
        .output()
    else {
        eprintln!("skipped: no python3");
        return;
    };
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{help}");
    for flag in [
        "--cell",
        "--batch",
        "--seq-len",
        "--input",
        "--hidden",
        "--layers",
        "--bidirectional",
        "--mode",
        "--iters",
        "--warmup-s",
        "--warmup-max",
        "--min-time-s",
        "--max-iters",
        "--device",
        "--dtype",
        "--tf32",
    ] {
        assert!(help.contains(flag), "{flag}: {help}");
    }
}
