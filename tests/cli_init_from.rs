//! `rnn train --init-from DIR`: a new run that starts from a checkpoint's weights, with a fresh
//! optimiser, schedule and step count (fine-tuning, a warm restart of the schedule), and its
//! refusals of checkpoints that do not fit. Driven in-process through `rnn::cli`; small
//! generated text, tiny word-level models on the CPU.
#![cfg(feature = "cli")]

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use candle_core::Device;
use rnn::cli::options::Options;
use rnn::cli::TrainArgs;
use rnn::train::checkpoint;

/// Lines of a small, regular language; `shift` renames the objects, so that a corpus with
/// another shift has another vocabulary of the same size.
fn corpus(lines: usize, offset: usize, shift: usize) -> String {
    let subjects = ["the cat", "a dog", "the king", "my friend"];
    let verbs = ["sees", "likes", "finds"];
    let objects = ["moon", "ball", "river", "apple", "tree", "stone"];
    (0..lines)
        .map(|i| {
            let k = i + offset;
            format!(
                "{} {} the {} .\n",
                subjects[k % 4],
                verbs[(k / 4) % 3],
                objects[((k * 7 / 3) % 5) + shift]
            )
        })
        .collect()
}

struct Data {
    _dir: tempfile::TempDir,
    root: PathBuf,
    train: PathBuf,
    valid: PathBuf,
}

fn data(shift: usize) -> Data {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_path_buf();
    let train = root.join("train.txt");
    let valid = root.join("valid.txt");
    std::fs::write(&train, corpus(300, 0, shift)).unwrap();
    std::fs::write(&valid, corpus(40, 1000, shift)).unwrap();
    Data {
        _dir: dir,
        root,
        train,
        valid,
    }
}

/// A word-LM run of `steps` steps into `out`, evaluated every `eval_every` steps.
fn opts(d: &Data, out: &Path, steps: u64, eval_every: u64) -> Options {
    Options {
        data: Some(d.train.clone()),
        valid: Some(d.valid.clone()),
        out: Some(out.to_path_buf()),
        device: Some("cpu".into()),
        hidden: Some(24),
        embedding: Some(24),
        tie_weights: Some(true),
        layers: Some(2),
        seq_len: Some(8),
        batch_size: Some(8),
        max_steps: Some(steps),
        eval_every: Some(eval_every),
        seed: Some(5),
        ..Default::default()
    }
}

fn train(task: &str, opts: Options) -> anyhow::Result<String> {
    rnn::cli::train(
        TrainArgs {
            task: Some(task.into()),
            config: None,
            opts,
        },
        false,
    )
}

fn best_valid_loss(out: &Path) -> f64 {
    common::records(out)
        .iter()
        .map(|r| r.valid_loss)
        .fold(f64::INFINITY, f64::min)
}

fn step_of(checkpoint_dir: &Path) -> u64 {
    let state: serde_json::Value = serde_json::from_slice(
        &std::fs::read(checkpoint_dir.join(checkpoint::STATE_FILE)).unwrap(),
    )
    .unwrap();
    state["step"].as_u64().unwrap()
}

/// Every file under `dir`, by relative path, with its bytes.
fn files(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    common::files_under(dir)
        .into_iter()
        .map(|p| {
            let bytes = std::fs::read(dir.join(&p)).unwrap();
            (p, bytes)
        })
        .collect()
}

#[test]
fn a_new_run_starts_from_the_checkpoint_weights_with_a_fresh_optimiser() {
    let d = data(0);
    let first = d.root.join("first");
    let mut o = opts(&d, &first, 60, 20);
    o.optimizer = Some("adamw".into());
    o.lr = Some(0.01);
    train("word-lm", o).unwrap();
    let source = common::checkpoint_params(&first.join("best"));
    let source_loss = best_valid_loss(&first);

    // SGD at 1e-30 moves no f32 weight of this size: after one step the new run holds exactly
    // the weights it started from, and its first evaluation scores them.
    let tuned_opts = |out: &Path, init: Option<PathBuf>| {
        let mut o = opts(&d, out, 1, 1);
        o.optimizer = Some("sgd".into());
        o.lr = Some(1e-30);
        o.init_from = init;
        o
    };
    let second = d.root.join("second");
    let line = train("word-lm", tuned_opts(&second, Some(first.clone()))).unwrap();
    assert_eq!(
        common::checkpoint_params(&second.join("checkpoint")),
        source,
        "{line}"
    );
    assert_eq!(
        step_of(&second.join("checkpoint")),
        1,
        "the step count starts afresh"
    );
    let loss = best_valid_loss(&second);
    assert!(
        (loss - source_loss).abs() <= 1e-6 * source_loss,
        "first evaluation {loss}, the checkpoint's best {source_loss}"
    );
    // The AdamW state was not carried over: SGD's, one step old for every parameter.
    let state = checkpoint::load(&second.join("checkpoint"), &Device::Cpu).unwrap();
    let optimizer = &state.state.optimizer;
    assert_eq!(optimizer["config"]["kind"], "sgd", "{optimizer}");
    let steps = optimizer["param_steps"].as_object().unwrap();
    assert_eq!(steps.len(), source.len(), "{optimizer}");
    assert!(steps.values().all(|s| s == 1), "{optimizer}");

    // The same command plus --resume continues that run (--init-from is then ignored).
    let mut o = tuned_opts(&second, Some(first.clone()));
    o.max_steps = Some(3);
    o.resume = Some(second.clone());
    train("word-lm", o).unwrap();
    assert_eq!(step_of(&second.join("checkpoint")), 3);
    let steps: Vec<u64> = common::records(&second).iter().map(|r| r.step).collect();
    assert_eq!(steps, [1, 2, 3]);

    // Control: the same run without --init-from starts from its own random weights.
    let fresh = d.root.join("fresh");
    train("word-lm", tuned_opts(&fresh, None)).unwrap();
    assert_ne!(common::checkpoint_params(&fresh.join("checkpoint")), source);
    assert!(best_valid_loss(&fresh) > source_loss + 0.5);

    // A checkpoint directory itself is taken as it is (here the last one rather than best/).
    let third = d.root.join("third");
    train(
        "word-lm",
        tuned_opts(&third, Some(first.join("checkpoint"))),
    )
    .unwrap();
    assert_eq!(
        common::checkpoint_params(&third.join("checkpoint")),
        common::checkpoint_params(&first.join("checkpoint"))
    );
}

#[test]
fn checkpoints_that_do_not_fit_are_refused_and_left_as_they_were() {
    let d = data(0);
    let first = d.root.join("first");
    train("word-lm", opts(&d, &first, 4, 2)).unwrap();
    let before = files(&first);
    let err = |task: &str, o: Options| format!("{:#}", train(task, o).unwrap_err());

    // Other sizes.
    let mut o = opts(&d, &d.root.join("a"), 1, 1);
    o.hidden = Some(16);
    o.embedding = Some(16);
    o.init_from = Some(first.clone());
    let e = err("word-lm", o);
    assert!(
        e.contains("--init-from") && e.contains("model.safetensors"),
        "{e}"
    );

    // The same sizes, another vocabulary: the weights would mean other words.
    let other = data(1);
    let mut o = opts(&other, &d.root.join("b"), 1, 1);
    o.init_from = Some(first.clone());
    let e = err("word-lm", o);
    assert!(e.contains("vocab.json") && e.contains("differs"), "{e}");

    // Another task's checkpoint.
    let chars = d.root.join("chars");
    let mut o = opts(&d, &chars, 2, 2);
    o.tie_weights = None;
    train("char-lm", o).unwrap();
    let mut o = opts(&d, &d.root.join("c"), 1, 1);
    o.init_from = Some(chars);
    let e = err("word-lm", o);
    assert!(e.contains("from task `char-lm`"), "{e}");

    // No checkpoint there.
    let mut o = opts(&d, &d.root.join("d"), 1, 1);
    o.init_from = Some(d.root.join("nowhere"));
    let e = err("word-lm", o);
    assert!(
        e.contains("nowhere") && e.contains("no such directory"),
        "{e}"
    );

    // Into its own run directory: the new run would write over the weights it starts from.
    let mut o = opts(&d, &first, 1, 1);
    o.init_from = Some(first.clone());
    let e = err("word-lm", o);
    assert!(e.contains("another --out"), "{e}");

    // With --chrono-init.
    let mut o = opts(&d, &d.root.join("f"), 1, 1);
    o.init_from = Some(first.clone());
    o.chrono_init = Some(10.0);
    let e = err("word-lm", o);
    assert!(
        e.contains("--init-from") && e.contains("--chrono-init"),
        "{e}"
    );

    assert!(
        before == files(&first),
        "a refused --init-from changed its checkpoint"
    );
}
