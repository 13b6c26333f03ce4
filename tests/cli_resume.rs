//! Resume exactness through the real `rnn` binary (issue 8, part 3).
//!
//! For a task with dropout and per-epoch shuffling (`classify`) and one with truncated BPTT,
//! i.e. recurrent state carried from batch to batch (`char-lm`), three runs end at step `N`:
//!
//! - **A** trains `--max-steps N` in one go;
//! - **B** trains `--max-steps k`, then `--resume`s to `N` (in a separate process);
//! - **C** starts with `--max-steps N`, is killed with SIGKILL as soon as it has written a
//!   checkpoint past step `k` (found by polling `checkpoint/state.json`), then `--resume`s to `N`.
//!
//! On the CPU the three must end bit for bit alike: the parameters and optimiser moments (the
//! raw bytes of every tensor), `state.json`, `config.json`, the vocabulary and `metrics.jsonl`
//! (byte for byte). `k` is mid-epoch (and, for `classify`, also exactly at an epoch end), and
//! a control checks that the comparison is not vacuous (the step-`k` parameters differ from
//! the final ones).
//!
//! Two further tests use another `--seed` and char-lm with dropout: they failed until
//! `Trainer::fit` reseeded the model's dropout from the run seed on resume (the bug this file
//! found; docs/CRASH_SAFETY.md).
#![cfg(feature = "cli")]

mod common;
use common::sentiment_file;
use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use candle_core::{DType, Device, Tensor};
use rnn::train::checkpoint;

/// The training command: `rnn train <base...> --out OUT --max-steps STEPS [--resume OUT]`.
fn command(base: &[String], out: &Path, steps: u64, resume: bool) -> Command {
    let mut cmd = Command::new(common::rnn_bin());
    // Every run of one check measures each matrix kernel once and shares the choice, as runs on
    // one host share the user's kernel cache: a kernel measured anew could differ in its last
    // bits (`rnn_core::kernels`).
    cmd.env(
        "RNN_KERNEL_CACHE",
        out.parent().unwrap().join("kernels.json"),
    );
    cmd.arg("train")
        .args(base)
        .arg("--out")
        .arg(out)
        .arg("--max-steps")
        .arg(steps.to_string());
    if resume {
        cmd.arg("--resume").arg(out);
    }
    cmd.stdin(Stdio::null());
    cmd
}

/// Runs a training command to completion; panics with its stderr if it fails.
fn train(base: &[String], out: &Path, steps: u64, resume: bool) {
    let output = command(base, out, steps, resume)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .output()
        .expect("cannot start the rnn binary");
    assert!(
        output.status.success(),
        "rnn train {base:?} --max-steps {steps} (resume: {resume}) failed: {}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
}

/// The step recorded in `OUT/checkpoint/state.json`, if a complete checkpoint is there.
fn checkpoint_step(out: &Path) -> Option<u64> {
    let bytes = std::fs::read(out.join("checkpoint").join(checkpoint::STATE_FILE)).ok()?;
    let v: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    v.get("step")?.as_u64()
}

#[cfg(unix)]
fn killed_by_sigkill(status: &ExitStatus) -> bool {
    use std::os::unix::process::ExitStatusExt;
    status.signal() == Some(libc::SIGKILL)
}

#[cfg(not(unix))]
fn killed_by_sigkill(status: &ExitStatus) -> bool {
    !status.success()
}

/// Starts a run to `n` steps, SIGKILLs it as soon as its checkpoint is past step `k`, and
/// returns the step of the checkpoint it left.
fn train_and_kill_after(base: &[String], out: &Path, n: u64, k: u64) -> u64 {
    let mut child = command(base, out, n, false)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("cannot start the rnn binary");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if checkpoint_step(out).is_some_and(|s| s > k) {
            break;
        }
        if let Some(status) = child.try_wait().unwrap() {
            panic!("run C ended ({status}) before writing a checkpoint past step {k}");
        }
        assert!(
            Instant::now() < deadline,
            "no checkpoint past step {k} within 60 s"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
    // std's Child::kill sends SIGKILL on unix: no destructor, no flush, nothing runs.
    child.kill().unwrap();
    let status = child.wait().unwrap();
    assert!(
        killed_by_sigkill(&status),
        "run C was meant to be killed mid-run, but it ended by itself ({status}); make it longer"
    );
    let step = checkpoint_step(out).expect("the killed run left no loadable checkpoint");
    assert!(
        k < step && step < n,
        "run C was killed with its checkpoint at step {step}, expected one in ({k}, {n})"
    );
    step
}

/// A tensor as (dtype, shape, raw little-endian bytes), for bit-exact comparison.
fn raw(t: &Tensor) -> (DType, Vec<usize>, Vec<u8>) {
    let flat = t.flatten_all().unwrap();
    let bytes = match t.dtype() {
        DType::F32 => flat
            .to_vec1::<f32>()
            .unwrap()
            .iter()
            .flat_map(|x| x.to_bits().to_le_bytes())
            .collect(),
        DType::F64 => flat
            .to_vec1::<f64>()
            .unwrap()
            .iter()
            .flat_map(|x| x.to_bits().to_le_bytes())
            .collect(),
        DType::U32 => flat
            .to_vec1::<u32>()
            .unwrap()
            .iter()
            .flat_map(|x| x.to_le_bytes())
            .collect(),
        DType::I64 => flat
            .to_vec1::<i64>()
            .unwrap()
            .iter()
            .flat_map(|x| x.to_le_bytes())
            .collect(),
        DType::U8 => flat.to_vec1::<u8>().unwrap(),
        other => panic!("unexpected dtype {other:?} in a CPU checkpoint"),
    };
    (t.dtype(), t.dims().to_vec(), bytes)
}

type RawTensors = BTreeMap<String, (DType, Vec<usize>, Vec<u8>)>;

fn raw_all(tensors: &std::collections::HashMap<String, Tensor>) -> RawTensors {
    tensors.iter().map(|(n, t)| (n.clone(), raw(t))).collect()
}

/// Everything a checkpoint directory holds, decoded for comparison.
#[derive(Debug, PartialEq)]
struct Snapshot {
    params: RawTensors,
    optimizer: Option<RawTensors>,
    state: serde_json::Value,
    config: serde_json::Value,
    vocab: Option<Vec<u8>>,
}

fn snapshot(dir: &Path) -> Snapshot {
    let loaded = checkpoint::load(dir, &Device::Cpu)
        .unwrap_or_else(|e| panic!("checkpoint {} does not load: {e}", dir.display()));
    let json = |file: &str| -> serde_json::Value {
        serde_json::from_slice(&std::fs::read(dir.join(file)).unwrap()).unwrap()
    };
    Snapshot {
        params: raw_all(&loaded.params),
        optimizer: loaded.extra_tensors.as_ref().map(raw_all),
        state: json(checkpoint::STATE_FILE),
        config: json(checkpoint::CONFIG_FILE),
        vocab: loaded.read_file(checkpoint::VOCAB_FILE).unwrap(),
    }
}

/// Names what differs between two snapshots (for a readable failure).
fn differences(a: &Snapshot, b: &Snapshot) -> Vec<String> {
    let mut d = Vec::new();
    let names: std::collections::BTreeSet<&String> =
        a.params.keys().chain(b.params.keys()).collect();
    for name in names {
        if a.params.get(name) != b.params.get(name) {
            d.push(format!("parameter {name}"));
        }
    }
    if a.optimizer != b.optimizer {
        d.push("optimizer tensors".into());
    }
    if a.state != b.state {
        d.push(format!("state.json: {} vs {}", a.state, b.state));
    }
    if a.config != b.config {
        d.push("config.json".into());
    }
    if a.vocab != b.vocab {
        d.push("vocab.json".into());
    }
    d
}

fn metrics(out: &Path) -> String {
    std::fs::read_to_string(out.join("metrics.jsonl")).unwrap()
}

fn assert_same_run(a: &Path, other: &Path, label: &str) {
    let (sa, so) = (
        snapshot(&a.join("checkpoint")),
        snapshot(&other.join("checkpoint")),
    );
    assert!(
        sa == so,
        "{label}: final checkpoint differs from the uninterrupted run: {:?}",
        differences(&sa, &so)
    );
    let (ma, mo) = (metrics(a), metrics(other));
    if ma != mo {
        let first = ma
            .lines()
            .zip(mo.lines())
            .position(|(x, y)| x != y)
            .unwrap_or(ma.lines().count().min(mo.lines().count()));
        panic!(
            "{label}: metrics.jsonl differs from the uninterrupted run from record {} on \
             ({} vs {} records)\n  A: {:?}\n  {label}: {:?}",
            first + 1,
            ma.lines().count(),
            mo.lines().count(),
            ma.lines().nth(first),
            mo.lines().nth(first)
        );
    }
}

/// Runs A, B and C (see the module docs) for `base` and checks that they agree.
fn check_exact_resume(base: &[String], n: u64, k: u64, eval_every: u64) {
    assert_eq!(k % eval_every, 0, "k must be an evaluation step");
    let root = tempfile::tempdir().unwrap();
    let mut base = base.to_vec();
    base.extend(["--eval-every", &eval_every.to_string(), "--device", "cpu"].map(String::from));
    let (a, b, c) = (
        root.path().join("a"),
        root.path().join("b"),
        root.path().join("c"),
    );

    train(&base, &a, n, false);
    assert_eq!(checkpoint_step(&a), Some(n), "run A did not reach step {n}");
    let records = metrics(&a).lines().count() as u64;
    assert!(
        records >= n / eval_every,
        "run A logged {records} evaluations"
    );

    train(&base, &b, k, false);
    assert_eq!(checkpoint_step(&b), Some(k));
    let at_k = snapshot(&b.join("checkpoint"));
    train(&base, &b, n, true);
    assert_same_run(&a, &b, "B (stop at k, resume)");
    // The comparison is not vacuous: the resumed leg did change the parameters.
    assert_ne!(
        at_k.params,
        snapshot(&a.join("checkpoint")).params,
        "the parameters did not change between step {k} and step {n}"
    );

    // The runs shared the kernel choices through the cache file the first one wrote.
    let kernels = std::fs::read_to_string(root.path().join("kernels.json")).unwrap();
    assert!(kernels.contains("\"kernels\""), "{kernels}");

    let killed_at = train_and_kill_after(&base, &c, n, k);
    train(&base, &c, n, true);
    assert_same_run(
        &a,
        &c,
        &format!("C (SIGKILL at checkpoint step {killed_at}, resume)"),
    );

    // The best checkpoint, too (whichever process wrote it; `best/` is saved before
    // `checkpoint/`, so a kill between the two cannot leave it behind the log).
    let runs: &[&Path] = &[&b, &c];
    // config.json is left out: it records the `--max-steps` of the process that wrote it.
    let best_of = |run: &Path| Snapshot {
        config: serde_json::Value::Null,
        ..snapshot(&run.join("best"))
    };
    let best_a = best_of(&a);
    for run in runs {
        let best = best_of(run);
        assert!(
            best_a == best,
            "best/ of {} differs from run A's: {:?}",
            run.display(),
            differences(&best_a, &best)
        );
    }
}

fn classify_args(data: &Path, seed: u64) -> Vec<String> {
    [
        "classify",
        "--data",
        data.to_str().unwrap(),
        "--hidden",
        "8",
        "--embedding",
        "8",
        "--batch-size",
        "16",
        "--dropout",
        "0.2",
        "--patience",
        "1000",
    ]
    .map(String::from)
    .into_iter()
    .chain(["--seed".to_string(), seed.to_string()])
    .collect()
}

/// 200 examples, 180 for training: 12 shuffled length-bucketed batches per epoch, so step 10 is
/// mid-epoch and step 12 an epoch end; N = 30 crosses two epoch ends.
#[test]
fn classify_resume_mid_epoch_is_bit_exact() {
    let dir = tempfile::tempdir().unwrap();
    let data = sentiment_file(dir.path(), "sentiment.txt", 200, 11);
    check_exact_resume(&classify_args(&data, 0), 30, 10, 5);
}

/// The same with `--seed 3`: fails because `Trainer::fit` does not reseed the model's dropout
/// from the run seed on resume (see docs/CRASH_SAFETY.md).
#[test]
fn classify_resume_with_a_nonzero_seed_is_bit_exact() {
    let dir = tempfile::tempdir().unwrap();
    let data = sentiment_file(dir.path(), "sentiment.txt", 200, 11);
    check_exact_resume(&classify_args(&data, 3), 30, 10, 5);
}

#[test]
fn classify_resume_at_an_epoch_end_is_bit_exact() {
    let dir = tempfile::tempdir().unwrap();
    let data = sentiment_file(dir.path(), "sentiment.txt", 200, 11);
    // Step 12 ends epoch 1; with --eval-every 4 it is also a regular evaluation step.
    check_exact_resume(&classify_args(&data, 0), 26, 12, 4);
}

/// Warm restarts of the learning rate (cycles of one epoch, 10 steps of this data, each peaking
/// at half the last): stopped at step 5, the resumed leg crosses the restarts at steps 10 and
/// 20 with the schedule restored from the checkpoint.
#[test]
fn classify_resume_across_warm_restarts_is_bit_exact() {
    let dir = tempfile::tempdir().unwrap();
    let data = sentiment_file(dir.path(), "sentiment.txt", 200, 11);
    let mut args = classify_args(&data, 0);
    args.extend(
        [
            "--schedule",
            "cosine-restarts",
            "--cycle-epochs",
            "1",
            "--peak-decay",
            "0.5",
        ]
        .map(String::from),
    );
    check_exact_resume(&args, 30, 5, 5);
}

/// `--shuffle-buffer 40`: classify streams its 180 training examples from the file each epoch
/// through a seeded shuffle buffer of 40 (12 batches of 16, the last of 4), so the resumed
/// process reopens the file and skips the 10 batches already trained.
#[test]
fn classify_streamed_resume_mid_epoch_is_bit_exact() {
    let dir = tempfile::tempdir().unwrap();
    let data = sentiment_file(dir.path(), "train.txt", 180, 11);
    let valid = sentiment_file(dir.path(), "valid.txt", 30, 12);
    let test = sentiment_file(dir.path(), "test.txt", 30, 13);
    let mut args = classify_args(&data, 3);
    for (flag, value) in [
        ("--valid", valid.to_str().unwrap()),
        ("--test", test.to_str().unwrap()),
        ("--shuffle-buffer", "40"),
    ] {
        args.extend([flag.to_string(), value.to_string()]);
    }
    check_exact_resume(&args, 30, 10, 5);
}

/// `--shuffle-buffer 25` for tag, with `--max-len 4` splitting the longer sentences into
/// chunks while streaming.
#[test]
fn tag_streamed_resume_mid_epoch_is_bit_exact() {
    let dir = tempfile::tempdir().unwrap();
    let path = |name: &str, n: usize, seed: u64| {
        common::conll_file(dir.path(), name, n, seed)
            .to_str()
            .unwrap()
            .to_string()
    };
    let args: Vec<String> = [
        "tag",
        "--data",
        &path("train.conll", 150, 1),
        "--valid",
        &path("valid.conll", 20, 2),
        "--test",
        &path("test.conll", 20, 3),
        "--shuffle-buffer",
        "25",
        "--max-len",
        "4",
        "--hidden",
        "8",
        "--embedding",
        "8",
        "--batch-size",
        "16",
        "--dropout",
        "0.2",
        "--patience",
        "1000",
    ]
    .map(String::from)
    .to_vec();
    check_exact_resume(&args, 30, 10, 5);
}

/// char-lm on its generated text: windows in stream order with the LSTM state carried from one
/// window to the next (saved in the checkpoint), dropout between the two layers.
#[test]
fn char_lm_resume_with_carried_state_is_bit_exact() {
    // Without dropout: the resume seeding bug (below) also hits char-lm's inter-layer dropout
    // at seed 0.
    check_exact_resume(&char_lm_args(0, "0"), 30, 10, 5);
}

/// The same with `--dropout 0.2` (the resume seeding bug, as for classify; even at seed 0,
/// since `LanguageModel::set_seed(0)` derives a seed that differs from the construction-time one).
#[test]
fn char_lm_resume_with_dropout_is_bit_exact() {
    check_exact_resume(&char_lm_args(0, "0.2"), 30, 10, 5);
}

fn char_lm_args(seed: u64, dropout: &str) -> Vec<String> {
    [
        "char-lm",
        "--hidden",
        "16",
        "--embedding",
        "8",
        "--layers",
        "2",
        "--seq-len",
        "16",
        "--batch-size",
        "8",
    ]
    .map(String::from)
    .into_iter()
    .chain(["--seed".to_string(), seed.to_string()])
    .chain(["--dropout".to_string(), dropout.to_string()])
    .collect()
}

/// char-lm with every mask option of issue 29 (zoneout, recurrent, weight, embedding and
/// variational dropout, on top of `--dropout`): the masks come from the seed and the call
/// counters saved in the checkpoint, so the resumed runs draw the same ones. The options are
/// recorded in the checkpoint's model config.
#[test]
fn char_lm_resume_with_mask_options_is_bit_exact() {
    let mut args = char_lm_args(3, "0.1");
    args.extend(
        [
            "--zoneout",
            "0.1",
            "--recurrent-dropout",
            "0.25",
            "--weight-drop",
            "0.3",
            "--embedding-dropout",
            "0.1",
            "--variational-dropout",
            "0.2",
        ]
        .map(String::from),
    );
    let root = tempfile::tempdir().unwrap();
    let out = root.path().join("run");
    let mut quick = args.clone();
    quick.extend(["--device", "cpu"].map(String::from));
    train(&quick, &out, 2, false);
    let config: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(out.join("checkpoint").join("config.json")).unwrap(),
    )
    .unwrap();
    // config.json holds the task config under "model", and the task config the model config.
    let model = &config["model"]["model"];
    for (key, value) in [
        ("zoneout_h", 0.1),
        ("zoneout_c", 0.1),
        ("recurrent_dropout", 0.25),
        ("weight_drop", 0.3),
        ("embedding_dropout", 0.1),
        ("variational_dropout", 0.2),
    ] {
        assert_eq!(model[key].as_f64(), Some(value), "{key} in {model}");
    }
    check_exact_resume(&args, 30, 10, 5);
}

/// classify (bidirectional, variable lengths) with the mask options of issue 29, whole-word
/// embedding dropout included: resumed runs draw the same masks as the uninterrupted one (the
/// word dropout's counter is the checkpoint's fourth).
#[test]
fn classify_resume_with_mask_options_is_bit_exact() {
    let dir = tempfile::tempdir().unwrap();
    let data = sentiment_file(dir.path(), "sentiment.txt", 200, 11);
    let mut args = classify_args(&data, 5);
    args.extend(
        [
            "--zoneout",
            "0.1",
            "--recurrent-dropout",
            "0.25",
            "--weight-drop",
            "0.3",
            "--variational-dropout",
            "0.2",
            "--embedding-dropout",
            "0.2",
        ]
        .map(String::from),
    );
    check_exact_resume(&args, 30, 10, 5);
}

/// classify with a weight average from the first step: the average (in the checkpoint's tensor
/// file, compared with the optimiser's tensors) and `best/` (the average's weights) come out the
/// same after a resume, mid-epoch and after a SIGKILL.
#[test]
fn classify_resume_with_a_weight_average_is_bit_exact() {
    let dir = tempfile::tempdir().unwrap();
    let data = sentiment_file(dir.path(), "sentiment.txt", 200, 11);
    let mut args = classify_args(&data, 0);
    args.extend(["--average-from-epoch", "0"].map(String::from));
    check_exact_resume(&args, 30, 10, 5);
}
