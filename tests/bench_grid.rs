//! `rnn bench --grid` through the binary, on a tiny grid with a fake PyTorch (a shell script
//! printing the real script's JSON line), so no PyTorch is needed: the report files, their rows,
//! ratios, summaries and targets, and the sample's determinism.
#![cfg(feature = "cli")]

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

/// The median the fake PyTorch reports, ms.
const FAKE_TORCH_MS: f64 = 4.0;

/// An executable shell script `dir/python` with `body`.
fn script(dir: &Path, body: &str) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.join("python");
    std::fs::write(&path, format!("#!/bin/sh\n{body}")).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

/// The JSON line of the fake PyTorch, reporting a median of `ms`.
fn torch_line(ms: f64) -> String {
    format!(
        r#"{{"median_ms": {ms}, "min_ms": 1.0, "torch": "9.9.9-fake", "threads": 2, "backend": "fake"}}"#
    )
}

/// A fake PyTorch reporting [`FAKE_TORCH_MS`] that appends its arguments after the script
/// (`-c SCRIPT`) to `dir/args`, one run per line.
fn fake_python(dir: &Path) -> PathBuf {
    let args = dir.join("args");
    script(
        dir,
        &format!(
            "[ \"$1\" = -c ] && shift 2 && echo \"$@\" >> '{}'\necho '{}'\n",
            args.display(),
            torch_line(FAKE_TORCH_MS)
        ),
    )
}

fn grid(out: &Path, python: &Path, extra: &[&str]) -> std::process::Output {
    grid_timed(out, python, extra, true)
}

/// [`grid`]; `short`: timed rounds of 0.01 s a side instead of the default (unless `extra`
/// sets `--min-time-s`).
fn grid_timed(out: &Path, python: &Path, extra: &[&str], short: bool) -> std::process::Output {
    let mut cmd = Command::new(common::rnn_bin());
    cmd.args([
        "bench",
        "--grid",
        "--grid-hidden",
        "8,12",
        "--grid-batch",
        "1,5",
    ])
    .args(["--grid-seq-len", "3,4"]);
    if !extra.contains(&"--grid-budget-min") {
        cmd.args(["--grid-budget-min", "0.8"]);
    }
    if short && !extra.contains(&"--min-time-s") {
        cmd.args(["--min-time-s", "0.01"]);
    }
    cmd.arg("--pytorch")
        .arg(python)
        .arg("--grid-out")
        .arg(out)
        .args(extra)
        .output()
        .unwrap()
}

/// [`grid_timed`], which must succeed: the report (as [`report`]) and the standard output.
fn grid_ok(out: &Path, python: &Path, extra: &[&str], short: bool) -> (Value, String, String) {
    let run = grid_timed(out, python, extra, short);
    let stdout = String::from_utf8_lossy(&run.stdout).into_owned();
    assert!(
        run.status.success(),
        "{}\n{stdout}",
        String::from_utf8_lossy(&run.stderr)
    );
    let (r, md) = report(out);
    (r, md, stdout)
}

/// A row's per-round ratios.
fn round_ratios(row: &Value) -> Vec<f64> {
    row["round_ratios"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap())
        .collect()
}

fn report(out: &Path) -> (Value, String) {
    let files: Vec<PathBuf> = std::fs::read_dir(out)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    let json = files
        .iter()
        .find(|p| p.extension().unwrap() == "json")
        .unwrap();
    let md = json.with_extension("md");
    assert!(md.is_file(), "{files:?}");
    let slug = rnn::bench_grid::report_slug(
        &rnn::rnn_core::kernels::cpu_model(),
        &rnn::bench_grid::host_isa(),
    );
    assert_eq!(json.file_stem().unwrap().to_str().unwrap(), slug);
    (
        serde_json::from_str(&std::fs::read_to_string(json).unwrap()).unwrap(),
        std::fs::read_to_string(md).unwrap(),
    )
}

#[test]
fn a_tiny_grid_writes_rows_summaries_and_targets() {
    let dir = tempfile::tempdir().unwrap();
    let python = fake_python(dir.path());
    let out = dir.path().join("results");
    let (r, md, stdout) = grid_ok(&out, &python, &[], true);
    assert_eq!(r["cpu_model"], rnn::rnn_core::kernels::cpu_model().as_str());
    assert!(r["threads"].as_u64().unwrap() >= 1);
    assert_eq!(r["torch_threads"], 2);
    assert_eq!(r["kernel_setting"], "auto");
    assert_eq!(r["load_avg"].as_array().unwrap().len(), 2);
    assert_eq!(r["skipped_rows"], 0);
    assert_eq!(r["min_time_s"], 0.01);
    let rows = r["rows"].as_array().unwrap();
    // 0.8 min at 2 rounds x 3 s of PyTorch start-up per row (the cost model): 7 or 8 rows,
    // every one the header line announced, at least one of each cell and mode.
    let n = rows.len();
    assert!((6..=8).contains(&n), "{stdout}");
    assert!(
        stdout.starts_with(&format!("grid: {n} rows sampled")),
        "{stdout}"
    );
    for row in rows {
        let (ours, torch) = (
            row["ours_ms"].as_f64().unwrap(),
            row["torch_ms"].as_f64().unwrap(),
        );
        assert_eq!(torch, FAKE_TORCH_MS);
        // Both rates are the row's FLOPs over each side's time: the same FLOPs.
        let (og, tg) = (
            row["ours_gflops"].as_f64().unwrap(),
            row["torch_gflops"].as_f64().unwrap(),
        );
        assert!(
            og > 0.0 && ((og * ours) / (tg * torch) - 1.0).abs() < 1e-9,
            "{row}"
        );
        // The median of per-round ratios, each ours / 4 ms.
        let ratio = row["ratio"].as_f64().unwrap();
        assert!(
            ratio > 0.0 && (ratio - ours / FAKE_TORCH_MS).abs() <= 0.5 * ours / FAKE_TORCH_MS,
            "{row}"
        );
        // Two rounds, and more (up to five) while the rounds' ratios differ by over 1.25x; if
        // the five still differ, a second pass by the same rule at the end of the run.
        let all = row["rounds"].as_u64().unwrap() as usize;
        let late = row["late_rounds"].as_u64().unwrap() as usize;
        let rr = round_ratios(row);
        assert_eq!(rr.len(), all, "{row}");
        let spread = |v: &[f64]| {
            v.iter().copied().reduce(f64::max).unwrap()
                / v.iter().copied().reduce(f64::min).unwrap()
        };
        let early = all - late;
        let passes = if late > 0 {
            assert_eq!(
                early, 5,
                "a second pass before the first reached the cap: {row}"
            );
            assert!(
                spread(&rr[..5]) > 1.25,
                "a second pass for a settled row: {row}"
            );
            let note = row["note"].as_str().unwrap();
            assert!(
                note.starts_with(&format!("{late} rounds at the end")),
                "{row}"
            );
            vec![&rr[..5], &rr[5..]]
        } else {
            vec![&rr[..]]
        };
        for pass in passes {
            let k = pass.len();
            assert!((2..=5).contains(&k), "{row}");
            if k < 5 {
                assert!(spread(pass) <= 1.25, "stopped while they disagree: {row}");
            }
            if k > 2 {
                assert!(spread(&pass[..k - 1]) > 1.25, "a round too many: {row}");
            }
        }
        if early == 5 && late == 0 {
            assert!(
                spread(&rr) <= 1.25,
                "no second pass for an unsettled row: {row}"
            );
        }
        assert_eq!(row["input"], row["hidden"]);
        assert!([8, 12].contains(&row["hidden"].as_u64().unwrap()));
        assert!(["lstm", "gru", "rnn-tanh"].contains(&row["cell"].as_str().unwrap()));
        assert_ne!(row["kernel"], "none", "{row}");
        if late == 0 {
            assert_eq!(row["note"], "", "{row}");
        }
    }
    // Every cell x mode is summarized, its geometric mean between its best and worst row.
    let summary = r["summary"].as_array().unwrap();
    assert_eq!(summary.len(), 6);
    for s in summary {
        let of: Vec<f64> = rows
            .iter()
            .filter(|row| row["cell"] == s["cell"] && row["mode"] == s["mode"])
            .map(|row| row["ratio"].as_f64().unwrap())
            .collect();
        assert_eq!(s["rows"].as_u64().unwrap() as usize, of.len(), "{s}");
        assert!(!of.is_empty(), "{s}");
        if let Some(worst) = of.iter().copied().reduce(f64::max) {
            assert_eq!(s["worst"].as_f64().unwrap(), worst);
            let g = s["geomean"].as_f64().unwrap();
            let best = of.iter().copied().reduce(f64::min).unwrap();
            assert!(best - 1e-12 <= g && g <= worst + 1e-12, "{s}");
        }
    }
    let targets = r["targets"].as_array().unwrap();
    assert_eq!(targets.len(), 4);
    for t in targets {
        let status = t["status"].as_str().unwrap();
        match t["value"].as_f64() {
            Some(v) => assert_eq!(
                status,
                if v <= t["bound"].as_f64().unwrap() {
                    "met"
                } else {
                    "missed"
                }
            ),
            None => assert_eq!(status, "no rows"),
        }
        assert!(md.contains(t["target"].as_str().unwrap()), "{md}");
    }
    assert!(
        md.contains("## Per cell and mode") && md.contains("RNN_KERNEL=auto"),
        "{md}"
    );
    let cell_lines = md
        .lines()
        .filter(|l| {
            ["| lstm", "| gru", "| rnn-tanh"]
                .iter()
                .any(|c| l.starts_with(c))
        })
        .count();
    assert_eq!(cell_lines, n + 6, "{md}");

    // The same seed samples the same rows; another seed, others.
    let keys = |r: &Value| -> Vec<String> {
        r["rows"]
            .as_array()
            .unwrap()
            .iter()
            .map(|row| {
                format!(
                    "{} {} {} {} {} {} {}",
                    row["cell"],
                    row["mode"],
                    row["batch"],
                    row["seq_len"],
                    row["hidden"],
                    row["layers"],
                    row["bidirectional"]
                )
            })
            .collect()
    };
    let again = dir.path().join("again");
    assert!(grid(&again, &python, &[]).status.success());
    assert_eq!(keys(&report(&again).0), keys(&r));
    // A spread nobody reaches: two rounds for every row.
    let two = dir.path().join("two");
    assert!(grid(&two, &python, &["--grid-spread", "1e9"])
        .status
        .success());
    let (r2, md2) = report(&two);
    for row in r2["rows"].as_array().unwrap() {
        assert_eq!(row["rounds"], 2, "{row}");
    }
    assert!(md2.contains("--grid-spread 1000000000"), "{md2}");
    let other = dir.path().join("other");
    assert!(grid(&other, &python, &["--grid-seed", "7"])
        .status
        .success());
    assert_ne!(keys(&report(&other).0), keys(&r));
}

#[test]
fn both_sides_time_at_least_0_4_s_a_round_by_default() {
    let dir = tempfile::tempdir().unwrap();
    let python = fake_python(dir.path());
    let out = dir.path().join("results");
    let (r, md, _) = grid_ok(
        &out,
        &python,
        &["--grid-budget-min", "0.12", "--grid-spread", "1e9"],
        false,
    );
    assert_eq!(r["min_time_s"], 0.4);
    assert!(md.contains("which take at least 0.4 s"), "{md}");
    let rows = r["rows"].as_array().unwrap();
    assert!(!rows.is_empty());
    // Every round of ours timed for 0.4 s (these rows' 3-20 iterations alone take
    // milliseconds), so the run cannot have been shorter. (The 0.25 s warm-up is left out of the
    // bound: it ends at `WARMUP_MAX_ITERS` iterations, which the smallest rows may run in less
    // on a fast host.)
    assert_eq!(r["warmup_s"], 0.25);
    let rounds: f64 = rows.iter().map(|r| r["rounds"].as_f64().unwrap()).sum();
    let wall_s = r["wall_min"].as_f64().unwrap() * 60.0;
    assert!(wall_s >= rounds * 0.4, "{wall_s} s for {rounds} rounds");
    // PyTorch's script is asked for the same floor, in every run (probe excluded).
    let args = std::fs::read_to_string(dir.path().join("args")).unwrap();
    let timed: Vec<&str> = args.lines().filter(|l| l.contains("--cell")).collect();
    assert_eq!(timed.len(), 2 * rows.len(), "{args}");
    for l in timed {
        assert!(
            l.contains("--min-time-s 0.4 ") && l.contains("--max-iters "),
            "{l}"
        );
    }
}

/// Rows whose five rounds still disagree get a second pass at the end of the run; a row that
/// disagrees there too is marked unsettled. The fake PyTorch here alternates between 4 and 40 ms,
/// so every pair of rounds differs by about 10x.
#[test]
fn unsettled_rows_get_a_second_pass_at_the_end() {
    let dir = tempfile::tempdir().unwrap();
    let count = dir.path().join("count");
    let python = script(
        dir.path(),
        &format!(
            "n=$(cat '{c}' 2>/dev/null || echo 0); echo $((n + 1)) > '{c}'\n\
             if [ $((n % 2)) = 0 ]; then echo '{}'; else echo '{}'; fi\n",
            torch_line(4.0),
            torch_line(40.0),
            c = count.display()
        ),
    );
    let out = dir.path().join("results");
    let (r, md, stdout) = grid_ok(&out, &python, &["--grid-budget-min", "0.12"], true);
    let rows = r["rows"].as_array().unwrap();
    assert!(!rows.is_empty());
    for row in rows {
        assert_eq!(row["rounds"], 10, "{row}");
        assert_eq!(row["late_rounds"], 5, "{row}");
        let note = row["note"].as_str().unwrap();
        assert!(
            note.starts_with("5 rounds at the end of the run")
                && note.contains("unsettled: the last 5 rounds still differ by more than 1.25x"),
            "{row}"
        );
        // The ratio is the median of all ten rounds.
        let mut rr = round_ratios(row);
        assert_eq!(rr.len(), 10);
        rr.sort_by(f64::total_cmp);
        let want = (rr[4] + rr[5]) / 2.0;
        assert!(
            (row["ratio"].as_f64().unwrap() - want).abs() < 1e-12,
            "{row}"
        );
    }
    // Printed once as measured, and again after the second pass.
    let printed = stdout.lines().filter(|l| l.contains("unsettled")).count();
    assert_eq!(printed, rows.len(), "{stdout}");
    assert!(md.contains("at the end of the run"), "{md}");
}

#[test]
fn bad_grid_options_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let python = fake_python(dir.path());
    let out = dir.path().join("results");
    for (extra, says) in [
        (&["--grid-budget-min", "0.001"][..], "not even one row"),
        (&["--grid-batch", "0"][..], "--grid-batch"),
        (&["--grid-rounds", "0"][..], "--grid-rounds"),
        (&["--grid-spread", "0.5"][..], "--grid-spread"),
        (&["--min-time-s", "-1"][..], "--min-time-s"),
        (&["--min-time-s", "NaN"][..], "--min-time-s"),
        (&["--layers", "2"][..], "cannot be used with"),
    ] {
        let run = grid(&out, &python, extra);
        let stderr = String::from_utf8_lossy(&run.stderr);
        assert!(
            !run.status.success() && stderr.contains(says),
            "{extra:?}: {stderr}"
        );
    }
    // A Python without PyTorch is named.
    let run = grid(&out, Path::new("/nonexistent/python"), &[]);
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(
        !run.status.success() && stderr.contains("--pytorch"),
        "{stderr}"
    );
}
