//! Crash safety of training (issue 8, part 2): the real `rnn` binary is SIGKILLed at random
//! moments, many of them inside checkpoint writes, and after every kill the output directory
//! must be sound; finally the run is resumed to completion and must equal, bit for bit, an
//! uninterrupted run of the same length.
//!
//! After each kill: `checkpoint/` (when present) loads, passes validation against the model's
//! parameter list, `rnn eval` works on it, its step never goes back; `best/` loads; every
//! `metrics.jsonl` line parses except possibly a torn last one (which the trainer drops on
//! resume), steps increase, the evaluation of the checkpoint's step is logged and at most one
//! evaluation is logged past it (the log is written just before the checkpoint). Kills that
//! left a checkpoint's temporary (`.checkpoint.tmp-*`, `.best.tmp-*`) or backup
//! (`.*.old-*`) directory behind are counted as kills during a checkpoint write.
//!
//! `RNN_CRASH_KILLS` (default 25) sets the number of kills, `RNN_CRASH_SEED` the seed of the
//! kill delays (default: from the clock; printed). See docs/CRASH_SAFETY.md.
#![cfg(feature = "cli")]

mod common;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use candle_core::{DType, Device, Tensor};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rnn::train::checkpoint;
use rnn::train::trainer::EvalRecord;

/// Longest random delay between starting a child and killing it.
const MAX_DELAY_MS: u64 = 300;

/// The classification data of every run here.
fn sentiment_file(dir: &Path) -> PathBuf {
    let filler = ["the", "film", "a", "story", "is", "with", "its", "cast"];
    common::sentiment_file_with(dir, "sentiment.txt", 200, 11, &filler)
}

/// `rnn train classify ...` with a checkpoint at every step.
fn command(data: &Path, out: &Path, steps: u64, resume: bool, stderr: Stdio) -> Command {
    let mut cmd = Command::new(common::rnn_bin());
    // The reference and the killed runs share one choice of matrix kernels, as runs on one host
    // share the user's kernel cache (`rnn_core::kernels`).
    cmd.env(
        "RNN_KERNEL_CACHE",
        out.parent().unwrap().join("kernels.json"),
    );
    cmd.arg("train").arg("classify").arg("--data").arg(data);
    cmd.args([
        "--hidden",
        "8",
        "--embedding",
        "8",
        "--batch-size",
        "16",
        "--dropout",
        "0.2",
        "--patience",
        "1000000",
        "--eval-every",
        "1",
        "--device",
        "cpu",
        "--seed",
        "0",
    ]);
    cmd.arg("--out").arg(out);
    cmd.arg("--max-steps").arg(steps.to_string());
    if resume {
        cmd.arg("--resume").arg(out);
    }
    cmd.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(stderr);
    cmd
}

fn train_to_end(data: &Path, out: &Path, steps: u64, resume: bool) -> String {
    let output = command(data, out, steps, resume, Stdio::piped())
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "rnn train to step {steps} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// What the kills left behind, counted over the run.
#[derive(Debug, Default)]
struct Stats {
    kills: u64,
    before_first_checkpoint: u64,
    in_checkpoint_write: u64,
    in_checkpoint_replace: u64,
    between_renames: u64,
    in_log_cut: u64,
    torn_log_line: u64,
    log_ahead_of_checkpoint: u64,
    best_behind_log: u64,
    max_step: u64,
}

/// The run directory's hidden and temporary entries; none while it does not exist yet (a kill
/// can land before the first run has created it: random delays start at 0 ms).
fn hidden_entries(out: &Path) -> BTreeSet<String> {
    let Ok(entries) = std::fs::read_dir(out) else {
        assert!(!out.exists(), "{} cannot be read", out.display());
        return BTreeSet::new();
    };
    entries
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.starts_with('.') || n.ends_with(".tmp"))
        .collect()
}

/// Parses metrics.jsonl: every line must be a record, except a torn last one.
fn read_log(out: &Path, stats: &mut Stats) -> Vec<EvalRecord> {
    let Ok(text) = std::fs::read_to_string(out.join("metrics.jsonl")) else {
        return Vec::new();
    };
    let lines: Vec<&str> = text.lines().collect();
    let mut records = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        match serde_json::from_str::<EvalRecord>(line) {
            Ok(r) => records.push(r),
            Err(e) => {
                assert!(
                    i + 1 == lines.len() && !text.ends_with('\n'),
                    "metrics.jsonl line {} is not a record and not a torn last line: {e}",
                    i + 1
                );
                stats.torn_log_line += 1;
            }
        }
    }
    for w in records.windows(2) {
        assert!(w[0].step < w[1].step, "metrics.jsonl steps do not increase");
    }
    records
}

fn param_list(
    params: &std::collections::HashMap<String, Tensor>,
) -> Vec<(String, Vec<usize>, DType)> {
    let mut v: Vec<_> = params
        .iter()
        .map(|(n, t)| (n.clone(), t.dims().to_vec(), t.dtype()))
        .collect();
    v.sort_by(|a, b| a.0.cmp(&b.0));
    v
}

/// Raw bits of every tensor of a checkpoint's model and optimiser files.
fn raw_tensors(dir: &Path) -> Vec<(String, Vec<usize>, Vec<u32>)> {
    let loaded = checkpoint::load(dir, &Device::Cpu).unwrap();
    let mut all: Vec<_> = loaded
        .params
        .iter()
        .chain(loaded.extra_tensors.iter().flatten())
        .map(|(n, t)| {
            let bits = t
                .flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap()
                .iter()
                .map(|x| x.to_bits())
                .collect();
            (n.clone(), t.dims().to_vec(), bits)
        })
        .collect();
    all.sort_by(|a, b| a.0.cmp(&b.0));
    all
}

#[test]
fn sigkill_at_random_moments_loses_nothing() {
    let kills: u64 = std::env::var("RNN_CRASH_KILLS")
        .ok()
        .map(|v| v.parse().expect("RNN_CRASH_KILLS must be a number"))
        .unwrap_or(25);
    let seed: u64 = std::env::var("RNN_CRASH_SEED")
        .ok()
        .map(|v| v.parse().expect("RNN_CRASH_SEED must be a number"))
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .subsec_nanos() as u64
        });
    eprintln!(
        "crash_safety: {kills} kills, seed {seed} (RNN_CRASH_SEED={seed} to repeat the delays)"
    );
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let root = tempfile::tempdir().unwrap();
    let data = sentiment_file(root.path());
    let out = root.path().join("run");
    let stderr_path = root.path().join("child-stderr.txt");
    let ckpt = out.join("checkpoint");
    let mut stats = Stats::default();
    let mut expected: Option<Vec<(String, Vec<usize>, DType)>> = None;
    let mut seen = BTreeSet::new();
    let mut prev_step = 0u64;
    let mut log_cut_mtime = None;

    for kill in 0..kills {
        let context = format!("kill {kill} (seed {seed})");
        let resume = ckpt.join(checkpoint::STATE_FILE).is_file()
            || out.join("best").join(checkpoint::STATE_FILE).is_file();
        let stderr = std::fs::File::create(&stderr_path).unwrap();
        let mut child = command(&data, &out, 1_000_000, resume, stderr.into())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(rng.random_range(0..MAX_DELAY_MS)));
        child.kill().unwrap();
        let status = child.wait().unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::process::ExitStatusExt;
            assert_eq!(
                status.signal(),
                Some(libc::SIGKILL),
                "{context}: the child ended by itself ({status}): {}",
                std::fs::read_to_string(&stderr_path).unwrap_or_default()
            );
        }
        stats.kills += 1;

        // Traces of an interrupted save.
        let hidden = hidden_entries(&out);
        for name in hidden.difference(&seen) {
            if name.starts_with(".checkpoint.tmp-") || name.starts_with(".best.tmp-") {
                stats.in_checkpoint_write += 1;
            } else if name.starts_with(".checkpoint.old-") || name.starts_with(".best.old-") {
                stats.in_checkpoint_replace += 1;
            }
        }
        seen = hidden;
        let log_tmp = out.join("metrics.jsonl.tmp");
        let mtime = std::fs::metadata(&log_tmp).and_then(|m| m.modified()).ok();
        if mtime.is_some() && mtime != log_cut_mtime {
            stats.in_log_cut += 1;
            log_cut_mtime = mtime;
        }

        // The newest checkpoint on disk.
        let records = read_log(&out, &mut stats);
        let dir = if ckpt.exists() {
            ckpt.clone()
        } else if prev_step > 0 {
            // Killed between moving the old checkpoint aside and renaming the new one in.
            stats.between_renames += 1;
            let old = seen
                .iter()
                .filter(|n| n.starts_with(".checkpoint.old-"))
                .map(|n| out.join(n))
                .max_by_key(|d| checkpoint::load(d, &Device::Cpu).map_or(0, |l| l.state.step))
                .unwrap_or_else(|| panic!("{context}: checkpoint/ vanished without a backup"));
            eprintln!(
                "{context}: killed between the two renames; --resume puts the moved-aside checkpoint back"
            );
            old
        } else {
            stats.before_first_checkpoint += 1;
            continue;
        };
        let loaded = checkpoint::load(&dir, &Device::Cpu)
            .unwrap_or_else(|e| panic!("{context}: the newest checkpoint does not load: {e}"));
        let list = expected.get_or_insert_with(|| param_list(&loaded.params));
        loaded
            .validate(list)
            .unwrap_or_else(|e| panic!("{context}: {e}"));
        let step = loaded.state.step;
        assert!(
            step >= prev_step,
            "{context}: checkpoint went back from step {prev_step} to {step}"
        );
        assert_eq!(
            loaded.state.trainer["step"].as_u64(),
            Some(step),
            "{context}"
        );
        rnn::cli::run([
            "rnn",
            "eval",
            "--checkpoint",
            dir.to_str().unwrap(),
            "--device",
            "cpu",
        ])
        .unwrap_or_else(|e| panic!("{context}: rnn eval on the checkpoint: {e:#}"));
        let best = out.join("best");
        if best.exists() {
            let b = checkpoint::load(&best, &Device::Cpu)
                .unwrap_or_else(|e| panic!("{context}: best/ does not load: {e}"));
            let logged_best = records
                .iter()
                .filter(|r| r.best && r.step <= step)
                .map(|r| r.step)
                .max();
            if logged_best.is_some_and(|s| s > b.state.step) {
                stats.best_behind_log += 1;
            }
        }
        assert!(
            records.iter().any(|r| r.step == step),
            "{context}: the evaluation of checkpoint step {step} is not in metrics.jsonl"
        );
        let ahead = records.iter().filter(|r| r.step > step).count();
        assert!(
            ahead <= 1,
            "{context}: {ahead} evaluations logged past the checkpoint"
        );
        stats.log_ahead_of_checkpoint += ahead as u64;
        if dir == ckpt {
            prev_step = step;
        } else {
            // --resume will use best/ (an older but complete state); follow it.
            prev_step = 0;
        }
        stats.max_step = stats.max_step.max(step);
    }

    // Resume to the end and compare with an uninterrupted run of the same length.
    let target = stats.max_step + 5;
    let resume = ckpt.join(checkpoint::STATE_FILE).is_file();
    train_to_end(&data, &out, target, resume);
    let reference = root.path().join("reference");
    train_to_end(&data, &reference, target, false);
    let records = read_log(&out, &mut stats);
    let steps: Vec<u64> = records.iter().map(|r| r.step).collect();
    assert_eq!(
        steps,
        (1..=target).collect::<Vec<_>>(),
        "the resumed run must log exactly one evaluation per step"
    );
    assert_eq!(
        checkpoint::load(&ckpt, &Device::Cpu).unwrap().state.step,
        target
    );
    assert!(
        raw_tensors(&ckpt) == raw_tensors(&reference.join("checkpoint")),
        "after {} kills the resumed parameters or optimiser state differ from an uninterrupted run (seed {seed})",
        stats.kills
    );
    assert_eq!(
        std::fs::read_to_string(out.join("metrics.jsonl")).unwrap(),
        std::fs::read_to_string(reference.join("metrics.jsonl")).unwrap(),
        "metrics.jsonl differs from an uninterrupted run (seed {seed})"
    );
    let best_ok = raw_tensors(&out.join("best")) == raw_tensors(&reference.join("best"));
    let leftovers = hidden_entries(&out).len();
    eprintln!(
        "crash_safety: seed {seed}: {stats:?}; final step {target}; best/ equal to the \
         uninterrupted run's: {best_ok}; {leftovers} stale hidden entries left in the run directory"
    );
    assert!(
        best_ok,
        "after {} kills best/ differs from an uninterrupted run's (seed {seed})",
        stats.kills
    );
    assert_eq!(
        leftovers, 0,
        "stale save directories left behind (seed {seed})"
    );
    assert!(
        stats.kills == 0 || stats.before_first_checkpoint < stats.kills,
        "no kill landed after the first checkpoint"
    );
}

/// The state a SIGKILL leaves when it lands between the two saves of an improving evaluation:
/// `best/` is written first, so it already holds step `s` while `checkpoint/` still holds step
/// `s - 1` (the other order could leave `best/` behind a log that marks a newer best). Rebuilt
/// deterministically: resuming redoes evaluation `s`, and afterwards the metrics log, `best/` and
/// `checkpoint/` must equal an uninterrupted run's.
#[test]
fn kill_between_the_best_and_latest_saves_keeps_best_current() {
    let root = tempfile::tempdir().unwrap();
    let data = sentiment_file(root.path());
    let n = 20;
    let reference = root.path().join("reference");
    train_to_end(&data, &reference, n, false);
    let mut stats = Stats::default();
    let s = read_log(&reference, &mut stats)
        .iter()
        .filter(|r| r.best)
        .map(|r| r.step)
        .max()
        .unwrap();
    assert!(s >= 2, "the test needs an improvement after step 1");

    let out = root.path().join("run");
    train_to_end(&data, &out, s - 1, false);
    let old_latest = root.path().join("old-latest");
    std::fs::create_dir(&old_latest).unwrap();
    for entry in std::fs::read_dir(out.join("checkpoint")).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), old_latest.join(entry.file_name())).unwrap();
    }
    let log_before = std::fs::read_to_string(out.join("metrics.jsonl")).unwrap();
    train_to_end(&data, &out, s, true);
    // The kill: best/ holds step s (improved), checkpoint/ and the log are still at step s - 1.
    std::fs::remove_dir_all(out.join("checkpoint")).unwrap();
    std::fs::rename(&old_latest, out.join("checkpoint")).unwrap();
    std::fs::write(out.join("metrics.jsonl"), log_before).unwrap();
    assert_eq!(
        checkpoint::load(&out.join("best"), &Device::Cpu)
            .unwrap()
            .state
            .step,
        s
    );
    train_to_end(&data, &out, n, true);

    assert_eq!(
        std::fs::read_to_string(out.join("metrics.jsonl")).unwrap(),
        std::fs::read_to_string(reference.join("metrics.jsonl")).unwrap()
    );
    let best_step = checkpoint::load(&out.join("best"), &Device::Cpu)
        .unwrap()
        .state
        .step;
    assert_eq!(
        best_step, s,
        "metrics.jsonl marks step {s} as the best evaluation, but best/ holds step {best_step}"
    );
    assert!(raw_tensors(&out.join("best")) == raw_tensors(&reference.join("best")));
    assert!(raw_tensors(&out.join("checkpoint")) == raw_tensors(&reference.join("checkpoint")));
}

/// The state a SIGKILL leaves when it lands between the two renames of a save: `checkpoint/`
/// has been moved aside to `.checkpoint.old-PID-*` and the new one is not in place yet (plus an
/// unfinished write of an earlier kill). `--resume` must put the backup back (not fall back to
/// the older `best/`), say so, remove the leftovers, and end equal to an uninterrupted run.
#[test]
fn kill_between_the_two_renames_resumes_from_the_moved_checkpoint() {
    let root = tempfile::tempdir().unwrap();
    let data = sentiment_file(root.path());
    let (k, n) = (12, 16);
    let reference = root.path().join("reference");
    train_to_end(&data, &reference, n, false);

    let out = root.path().join("run");
    train_to_end(&data, &out, k, false);
    // A process id that is not running (Linux pid_max is at most 2^22).
    let dead = 999_999_999u32;
    std::fs::rename(
        out.join("checkpoint"),
        out.join(format!(".checkpoint.old-{dead}-1-0")),
    )
    .unwrap();
    std::fs::create_dir(out.join(format!(".checkpoint.tmp-{dead}-2-0"))).unwrap();
    let stderr = train_to_end(&data, &out, n, true);
    assert!(
        stderr.contains("restored it from") && stderr.contains(".checkpoint.old-"),
        "{stderr}"
    );
    let steps: Vec<u64> = read_log(&out, &mut Stats::default())
        .iter()
        .map(|r| r.step)
        .collect();
    assert_eq!(steps, (1..=n).collect::<Vec<_>>());
    assert_eq!(
        std::fs::read_to_string(out.join("metrics.jsonl")).unwrap(),
        std::fs::read_to_string(reference.join("metrics.jsonl")).unwrap()
    );
    assert!(raw_tensors(&out.join("checkpoint")) == raw_tensors(&reference.join("checkpoint")));
    assert_eq!(hidden_entries(&out), BTreeSet::new());
}
