//! `rnn train --dp-threads N` (data-parallel ranks as threads, the DDP semantics of `mpirun`)
//! against `--grad-accum N` in one process: the same metrics.jsonl and checkpoints byte for
//! byte, for word-lm (with dropout) and char-lm, across a stop and `--resume` too.

mod common;

use std::path::Path;

use common::{rnn_bin, rnn_output};

/// A small word corpus from a fixed word list and a seeded generator.
fn corpus(dir: &Path) -> String {
    use rand::{Rng, SeedableRng};
    let words = [
        "the", "cat", "sat", "on", "mat", "a", "dog", "ran", "to", "house", "and", "big",
    ];
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
    let text: Vec<String> = (0..600)
        .map(|_| {
            (0..10)
                .map(|_| words[rng.random_range(0..words.len())])
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect();
    let path = dir.join("corpus.txt");
    std::fs::write(&path, text.join("\n")).unwrap();
    path.display().to_string()
}

fn train(task: &str, data: &str, out: &Path, extra: &[&str]) {
    let out = out.display().to_string();
    let mut args = vec![
        "train",
        task,
        "--data",
        data,
        "--batch-size",
        "8",
        "--hidden",
        "24",
        "--eval-every",
        "5",
        "--out",
        &out,
    ];
    if task == "word-lm" {
        args.extend(["--embedding", "16", "--dropout", "0.3"]);
    } else {
        args.extend(["--seq-len", "16", "--dropout", "0"]);
    }
    args.extend(extra);
    rnn_output(&args);
}

fn read(p: &Path) -> Vec<u8> {
    std::fs::read(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// metrics.jsonl and every file of `checkpoint/` and `best/` are byte-identical.
fn assert_same_run(a: &Path, b: &Path) {
    assert_eq!(
        read(&a.join("metrics.jsonl")),
        read(&b.join("metrics.jsonl")),
        "metrics.jsonl of {} and {} differ",
        a.display(),
        b.display()
    );
    for sub in ["checkpoint", "best"] {
        let names: Vec<_> = std::fs::read_dir(b.join(sub))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert!(names.len() >= 4, "{sub}: {names:?}");
        for n in names {
            let (x, y) = (a.join(sub).join(&n), b.join(sub).join(&n));
            assert!(read(&x) == read(&y), "{} differs", y.display());
        }
    }
}

#[test]
fn two_thread_ranks_equal_two_micro_batches_byte_for_byte() {
    let dir = tempfile::tempdir().unwrap();
    let data = corpus(dir.path());
    for task in ["word-lm", "char-lm"] {
        let (a, b) = (
            dir.path().join(format!("{task}-dp")),
            dir.path().join(format!("{task}-ga")),
        );
        train(task, &data, &a, &["--max-steps", "20", "--dp-threads", "2"]);
        train(task, &data, &b, &["--max-steps", "20", "--grad-accum", "2"]);
        assert_same_run(&a, &b);
    }
}

#[test]
fn a_stopped_data_parallel_run_resumes_byte_for_byte() {
    let dir = tempfile::tempdir().unwrap();
    let data = corpus(dir.path());
    let whole = dir.path().join("whole");
    train(
        "word-lm",
        &data,
        &whole,
        &["--max-steps", "20", "--grad-accum", "2"],
    );
    // Stop two ranks at step 10 and resume them.
    let dp = dir.path().join("dp");
    train(
        "word-lm",
        &data,
        &dp,
        &["--max-steps", "10", "--dp-threads", "2"],
    );
    let ckpt = dp.join("checkpoint").display().to_string();
    train(
        "word-lm",
        &data,
        &dp,
        &["--max-steps", "20", "--dp-threads", "2", "--resume", &ckpt],
    );
    assert_same_run(&dp, &whole);
    // The same data-parallel checkpoint resumes in one process.
    let single = dir.path().join("single");
    train(
        "word-lm",
        &data,
        &single,
        &["--max-steps", "10", "--dp-threads", "2"],
    );
    let ckpt = single.join("checkpoint").display().to_string();
    train(
        "word-lm",
        &data,
        &single,
        &["--max-steps", "20", "--grad-accum", "2", "--resume", &ckpt],
    );
    assert_same_run(&single, &whole);
}

#[test]
fn zero_micro_batches_or_ranks_are_refused_by_name() {
    for flag in ["--grad-accum", "--dp-threads"] {
        let out = std::process::Command::new(rnn_bin())
            .args(["train", "adding", "--max-steps", "1", flag, "0"])
            .output()
            .unwrap();
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(&format!("{flag} must be at least 1")), "{err}");
    }
}

/// The other tasks' batches split the same way: classify (held and streamed), tag (streamed),
/// adding and dates give the same metrics.jsonl with two thread ranks as with two micro-batches,
/// and rank 1 reports nothing of its own.
#[test]
fn every_task_kind_splits_its_batches_the_same_way() {
    let dir = tempfile::tempdir().unwrap();
    let d = |p: std::path::PathBuf| p.display().to_string();
    let train = d(common::sentiment_file(dir.path(), "train.txt", 120, 1));
    let valid = d(common::sentiment_file(dir.path(), "valid.txt", 24, 2));
    let test = d(common::sentiment_file(dir.path(), "test.txt", 24, 3));
    let conll = |name: &str, n: usize, seed: u64| d(common::conll_file(dir.path(), name, n, seed));
    let (ctrain, cvalid, ctest) = (
        conll("train.conll", 90, 4),
        conll("valid.conll", 16, 5),
        conll("test.conll", 16, 6),
    );
    let small = ["--hidden", "8", "--max-steps", "8", "--eval-every", "4"];
    let cases: Vec<(&str, Vec<&str>)> = vec![
        (
            "classify",
            vec!["--data", &train, "--batch-size", "10", "--embedding", "8"],
        ),
        (
            "classify",
            vec![
                "--data",
                &train,
                "--valid",
                &valid,
                "--test",
                &test,
                "--shuffle-buffer",
                "30",
                "--batch-size",
                "10",
                "--embedding",
                "8",
            ],
        ),
        (
            "tag",
            vec![
                "--data",
                &ctrain,
                "--valid",
                &cvalid,
                "--test",
                &ctest,
                "--shuffle-buffer",
                "20",
                "--batch-size",
                "8",
                "--embedding",
                "8",
            ],
        ),
        (
            "adding",
            vec!["--samples", "96", "--seq-len", "10", "--batch-size", "8"],
        ),
        ("dates", vec!["--samples", "96", "--batch-size", "8"]),
    ];
    for (i, (task, args)) in cases.iter().enumerate() {
        let run = |name: &str, extra: [&str; 2]| {
            let out = d(dir.path().join(format!("{i}-{name}")));
            let mut all = vec!["train", task, "--out", &out];
            all.extend(args.iter().copied());
            all.extend(small);
            all.extend(extra);
            rnn_output(&all).0
        };
        let dp = run("dp", ["--dp-threads", "2"]);
        let ga = run("ga", ["--grad-accum", "2"]);
        assert_eq!(
            dp.lines().count(),
            1,
            "{task}: one summary line, from rank 0: {dp}"
        );
        let metrics = |name: &str| read(&dir.path().join(format!("{i}-{name}/metrics.jsonl")));
        assert!(
            metrics("dp") == metrics("ga"),
            "{task} case {i}: metrics differ"
        );
        // The summaries differ only in the output directory they name.
        assert_eq!(
            dp.replace(&format!("{i}-dp"), "X"),
            ga.replace(&format!("{i}-ga"), "X"),
            "{task}"
        );
    }
}
