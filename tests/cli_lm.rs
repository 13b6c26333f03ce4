//! End-to-end tests of `rnn train char-lm` / `word-lm` (char, word and subword levels) and of
//! `rnn eval`, `rnn sample`, `rnn predict` on the checkpoints, driven in-process through
//! `rnn::cli`. Small generated text, tiny models, CPU: a few seconds each.
#![cfg(feature = "cli")]

mod common;

use std::path::{Path, PathBuf};

use rnn::cli::options::Options;
use rnn::cli::run::CheckpointRun;
use rnn::cli::{EvalArgs, PredictArgs, SampleArgs, TrainArgs};
use rnn::train::trainer::EvalRecord;

/// A few hundred lines of a small, regular language.
fn corpus(lines: usize, offset: usize) -> String {
    let subjects = ["the cat", "a dog", "the king", "my friend"];
    let verbs = ["sees", "likes", "finds"];
    let objects = ["the moon", "a ball", "the river", "an apple", "<unk>"];
    (0..lines)
        .map(|i| {
            let k = i + offset;
            format!(
                "{} {} {} .\n",
                subjects[k % 4],
                verbs[(k / 4) % 3],
                objects[(k * 7 / 3) % 5]
            )
        })
        .collect()
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

fn s(p: &Path) -> String {
    p.display().to_string()
}

fn run(args: &[&str]) -> anyhow::Result<()> {
    let mut all = vec!["rnn"];
    all.extend_from_slice(args);
    rnn::cli::run(all)
}

fn assert_run_dir(out: &Path, vocab_file: &str) {
    for f in [
        "checkpoint/model.safetensors",
        "checkpoint/config.json",
        "best/model.safetensors",
        "metrics.jsonl",
        "learning_curves.png",
    ] {
        assert!(out.join(f).is_file(), "{f} missing in {}", out.display());
    }
    assert!(
        out.join("checkpoint").join(vocab_file).is_file(),
        "{vocab_file} missing"
    );
}

fn assert_loss_fell(out: &Path) -> Vec<EvalRecord> {
    let recs = common::records(out);
    assert!(recs.len() >= 2, "{} evaluations", recs.len());
    let (first, last) = (&recs[0], recs.last().unwrap());
    assert!(
        last.valid_loss < first.valid_loss,
        "valid loss {} -> {}",
        first.valid_loss,
        last.valid_loss
    );
    assert!(last.train_loss.unwrap() < first.train_loss.unwrap());
    assert_eq!(last.main.name, "perplexity");
    recs
}

fn device() -> candle_core::Device {
    candle_core::Device::Cpu
}

fn sample_args(dir: &Path, prompt: Option<&str>, temperature: f64) -> SampleArgs {
    SampleArgs {
        checkpoint: dir.to_path_buf(),
        prompt: prompt.map(str::to_string),
        temperature,
        top_k: None,
        top_p: None,
        max_len: 40,
        num: 1,
        seed: 3,
        device: "cpu".into(),
        json: false,
    }
}

fn predict_args(dir: &Path, input: &str) -> PredictArgs {
    PredictArgs {
        checkpoint: dir.to_path_buf(),
        input: Some(input.to_string()),
        beam: None,
        horizon: None,
        device: "cpu".into(),
        json: false,
    }
}

#[test]
fn char_lm_trains_and_its_checkpoint_samples_evaluates_and_predicts() {
    let dir = tempfile::tempdir().unwrap();
    let data = write(dir.path(), "train.txt", &corpus(300, 0));
    let out = dir.path().join("run");
    run(&[
        "train",
        "char-lm",
        "--data",
        &s(&data),
        "--out",
        &s(&out),
        "--device",
        "cpu",
        "--hidden",
        "48",
        "--layers",
        "1",
        "--embedding",
        "16",
        "--seq-len",
        "25",
        "--batch-size",
        "8",
        "--max-steps",
        "40",
        "--eval-every",
        "10",
        "--lr",
        "0.01",
        "--dropout",
        "0",
    ])
    .unwrap();
    assert_run_dir(&out, "vocab.json");
    let recs = assert_loss_fell(&out);
    let last = recs.last().unwrap();
    let bpc = last.metrics["bits_per_char"];
    assert!((bpc - last.valid_loss / std::f64::consts::LN_2).abs() < 1e-9);
    assert!(last.metrics["nats_per_char"] < 2.5, "{last:?}");

    // The CLI commands work on the run directory.
    run(&[
        "sample",
        "--checkpoint",
        &s(&out),
        "--device",
        "cpu",
        "--max-len",
        "30",
    ])
    .unwrap();
    run(&["eval", "--checkpoint", &s(&out), "--device", "cpu"]).unwrap();
    run(&[
        "eval",
        "--checkpoint",
        &s(&out),
        "--device",
        "cpu",
        "--data",
        &s(&data),
    ])
    .unwrap();
    run(&[
        "predict",
        "--checkpoint",
        &s(&out),
        "--device",
        "cpu",
        "--input",
        "the cat",
    ])
    .unwrap();

    // And what they print makes sense.
    let ck = CheckpointRun::load(&out, &device()).unwrap();
    let samples = rnn::tasks::lm::sample(&ck, &sample_args(&out, Some("the "), 0.0))
        .unwrap()
        .lines;
    assert_eq!(samples.len(), 1);
    assert!(samples[0].starts_with("the "), "{samples:?}");
    assert_eq!(samples[0].chars().count(), 4 + 40);
    let again = rnn::tasks::lm::sample(&ck, &sample_args(&out, Some("the "), 0.0))
        .unwrap()
        .lines;
    assert_eq!(samples, again, "greedy sampling is deterministic");
    let mut many = sample_args(&out, None, 1.0);
    many.num = 2;
    let two = rnn::tasks::lm::sample(&ck, &many).unwrap().lines;
    assert_eq!(two.len(), 4, "{two:?}"); // header + sample, twice
    let line = rnn::tasks::lm::eval(
        &ck,
        &EvalArgs {
            checkpoint: out.clone(),
            data: None,
            labels: None,
            device: "cpu".into(),
            json: false,
            batch_size: 8,
        },
    )
    .unwrap()
    .summary;
    assert!(
        line.contains("perplexity") && line.contains("bits/char"),
        "{line}"
    );
    // A sentence of the training language is more likely than a scrambled one.
    let p = rnn::tasks::lm::predict(&ck, &predict_args(&out, "the cat sees the moon ."))
        .unwrap()
        .lines;
    let q = rnn::tasks::lm::predict(&ck, &predict_args(&out, "eht tac sees eht noom ."))
        .unwrap()
        .lines;
    let lp = |l: &str| -> f64 {
        l.split("log-prob ")
            .nth(1)
            .unwrap()
            .split(' ')
            .next()
            .unwrap()
            .parse()
            .unwrap()
    };
    assert!(p[0].contains("next:"), "{}", p[0]);
    assert!(lp(&p[0]) > lp(&q[0]), "{} vs {}", p[0], q[0]);
}

#[test]
fn word_lm_with_valid_and_test_files_reports_test_perplexity() {
    let dir = tempfile::tempdir().unwrap();
    let train = write(dir.path(), "ptb.train.txt", &corpus(400, 0));
    let valid = write(dir.path(), "ptb.valid.txt", &corpus(60, 1000));
    let test = write(dir.path(), "ptb.test.txt", &corpus(60, 2000));
    let out = dir.path().join("run");
    let opts = Options {
        data: Some(train.clone()),
        valid: Some(valid),
        test: Some(test.clone()),
        out: Some(out.clone()),
        device: Some("cpu".into()),
        hidden: Some(32),
        embedding: Some(32),
        tie_weights: Some(true),
        layers: Some(1),
        seq_len: Some(10),
        batch_size: Some(8),
        max_steps: Some(60),
        eval_every: Some(20),
        optimizer: Some("adamw".into()),
        lr: Some(0.01),
        ..Default::default()
    };
    let line = rnn::cli::train(
        TrainArgs {
            task: Some("word-lm".into()),
            config: None,
            opts,
        },
        false,
    )
    .unwrap();
    assert!(line.contains("test perplexity"), "{line}");
    assert_run_dir(&out, "vocab.json");
    let recs = assert_loss_fell(&out);
    assert!(recs.last().unwrap().metrics.contains_key("bits_per_token"));
    let test_ppl: f64 = line
        .split("test perplexity ")
        .nth(1)
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    // 18 word types + specials: a model that learnt nothing would score about 20.
    assert!(test_ppl < 10.0, "{line}");

    let ck = CheckpointRun::load(&out, &device()).unwrap();
    let vocab = std::fs::read_to_string(out.join("checkpoint/vocab.json")).unwrap();
    assert!(vocab.contains("\"king\""));
    let samples = rnn::tasks::lm::sample(&ck, &sample_args(&out, Some("the cat"), 0.5))
        .unwrap()
        .lines;
    assert!(samples[0].starts_with("the cat "), "{samples:?}");
    // Word samples are made of training words (and line breaks).
    for w in samples[0].split_whitespace() {
        assert!(vocab.contains(&format!("\"{w}\"")), "{w} in {samples:?}");
    }
    run(&[
        "eval",
        "--checkpoint",
        &s(&out),
        "--device",
        "cpu",
        "--data",
        &s(&test),
    ])
    .unwrap();
    let p = rnn::tasks::lm::predict(&ck, &predict_args(&out, "the king likes a ball ."))
        .unwrap()
        .lines;
    assert!(p[0].contains("over 7 tokens"), "{}", p[0]); // 6 words + <eos>
}

#[test]
fn subword_level_saves_its_tokenizer_and_round_trips_text() {
    let dir = tempfile::tempdir().unwrap();
    let data = write(dir.path(), "train.txt", &corpus(300, 0));
    let out = dir.path().join("run");
    run(&[
        "train",
        "word-lm",
        "--level",
        "subword",
        "--vocab-size",
        "300",
        "--data",
        &s(&data),
        "--out",
        &s(&out),
        "--device",
        "cpu",
        "--hidden",
        "32",
        "--embedding",
        "16",
        "--layers",
        "1",
        "--seq-len",
        "10",
        "--batch-size",
        "8",
        "--max-steps",
        "30",
        "--eval-every",
        "10",
        "--optimizer",
        "adamw",
        "--lr",
        "0.01",
    ])
    .unwrap();
    assert_run_dir(&out, "tokenizer.json");
    assert_loss_fell(&out);
    let ck = CheckpointRun::load(&out, &device()).unwrap();
    let samples = rnn::tasks::lm::sample(&ck, &sample_args(&out, Some("the king"), 1.0))
        .unwrap()
        .lines;
    assert!(samples[0].starts_with("the king"), "{samples:?}");
    assert!(samples[0].len() > "the king".len());
    run(&[
        "predict",
        "--checkpoint",
        &s(&out),
        "--device",
        "cpu",
        "--input",
        "a dog",
    ])
    .unwrap();
    run(&["eval", "--checkpoint", &s(&out), "--device", "cpu"]).unwrap();
}

/// `rnn train word-lm --config examples/configs/FILE` on a small generated corpus in `dir`, with
/// small widths (flags override the file; tied weights need the two equal) and 2 steps, plus
/// `extra` (which names `--out`); returns the run's checkpoint config.
fn train_config_file(dir: &Path, file: &str, extra: &[&str]) -> serde_json::Value {
    let configs = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/configs");
    let train = write(dir, "train.txt", &corpus(400, 0));
    let valid = write(dir, "valid.txt", &corpus(60, 1000));
    let (config, train, valid) = (s(&configs.join(file)), s(&train), s(&valid));
    let mut args = vec![
        "train",
        "word-lm",
        "--config",
        &config,
        "--data",
        &train,
        "--valid",
        &valid,
        "--hidden",
        "16",
        "--embedding",
        "16",
        "--max-steps",
        "2",
        "--device",
        "cpu",
    ];
    args.extend_from_slice(extra);
    run(&args).unwrap();
    let out = extra
        .iter()
        .position(|a| *a == "--out")
        .map(|i| PathBuf::from(extra[i + 1]))
        .expect("extra names --out");
    serde_json::from_slice(&std::fs::read(out.join("checkpoint/config.json")).unwrap()).unwrap()
}

#[test]
fn the_medium_ptb_recipe_file_reaches_the_checkpoint() {
    // examples/configs/word_lm_medium.toml is the command of RESULTS.md's medium PTB row; every
    // key must still be one `rnn train word-lm` reads, with the meaning the recipe gives it.
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    let cfg = train_config_file(dir.path(), "word_lm_medium.toml", &["--out", &s(&out)]);
    let text = cfg.to_string();
    let (data, model, trainer) = (&cfg["model"], &cfg["model"]["model"], &cfg["trainer"]);
    assert_eq!(model["hidden_size"], 16, "{text}");
    assert_eq!(model["num_layers"], 2, "{text}");
    assert_eq!(model["mode"], "lstm", "{text}");
    assert_eq!(model["tie_weights"], true, "{text}");
    assert_eq!(model["variational_dropout"], 0.5, "{text}");
    assert_eq!(model["weight_drop"], 0.2, "{text}");
    assert_eq!(model["embedding_dropout"], 0.1, "{text}");
    assert_eq!(data["seq_len"], 35, "{text}");
    assert_eq!(data["batch_size"], 20, "{text}");
    assert_eq!(trainer["epochs"], 14, "{text}");
    assert_eq!(trainer["clip_grad_norm"], 0.25, "{text}");
    assert_eq!(trainer["optimizer"]["kind"], "sgd", "{text}");
    assert_eq!(trainer["optimizer"]["lr"], 20.0, "{text}");
    assert_eq!(trainer["schedule"]["type"], "cosine_warmup", "{text}");
    assert_eq!(trainer["schedule"]["min_lr"], 0.0, "{text}");
}

#[test]
fn the_one_run_medium_ptb_file_has_the_two_stages_learning_rates() {
    // examples/configs/word_lm_medium_sgdr.toml: the two stages of RESULTS.md's medium PTB row
    // as cycles of one cosine-restarts schedule.
    let configs = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/configs");
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    let one = train_config_file(dir.path(), "word_lm_medium_sgdr.toml", &["--out", &s(&out)]);
    let stage = |file: &str| -> serde_json::Value {
        let text = std::fs::read_to_string(configs.join(file)).unwrap();
        toml::from_str(&text).unwrap()
    };
    let (first, second) = (
        stage("word_lm_medium.toml"),
        stage("word_lm_medium_restart.toml"),
    );
    // The same model as the stages.
    let model = &one["model"]["model"];
    for key in ["variational-dropout", "weight-drop", "embedding-dropout"] {
        let field = key.replace('-', "_");
        assert_eq!(model[&field], first[key], "{key}: {one}");
        assert_eq!(first[key], second[key], "{key}");
    }
    for key in [
        "layers",
        "hidden",
        "embedding",
        "tie-weights",
        "clip",
        "batch-size",
        "seq-len",
    ] {
        assert_eq!(first[key], second[key], "{key}");
    }
    let trainer = &one["trainer"];
    assert_eq!(trainer["epochs"], 26, "{one}");
    assert_eq!(trainer["clip_grad_norm"], first["clip"], "{one}");
    assert_eq!(trainer["optimizer"]["kind"], "sgd", "{one}");
    // Its learning rate per step is the first stage's cosine then the second's.
    let cycles = trainer["schedule"]["cycle_steps"].as_array().unwrap();
    let (a, b) = (cycles[0].as_u64().unwrap(), cycles[1].as_u64().unwrap());
    let per_epoch = a / 14;
    assert_eq!((a, b), (14 * per_epoch, 12 * per_epoch), "{one}");
    assert_eq!(first["epochs"], 14);
    assert_eq!(second["epochs"], 12);
    let lr = |v: &serde_json::Value| v["lr"].as_f64().unwrap();
    let schedule = rnn::train::optim::CosineRestarts::new(
        lr(&first),
        vec![a, b],
        1,
        trainer["schedule"]["peak_decay"].as_f64().unwrap(),
        0.0,
    )
    .unwrap();
    let mut stage_one = rnn::train::optim::CosineWarmup::new(lr(&first), 0, a, 0.0).unwrap();
    let mut stage_two = rnn::train::optim::CosineWarmup::new(lr(&second), 0, b, 0.0).unwrap();
    use rnn::train::optim::LrSchedule;
    let mut want = vec![stage_one.lr()];
    want.extend((1..a).map(|_| stage_one.on_step()));
    want.push(stage_two.lr());
    want.extend((1..b).map(|_| stage_two.on_step()));
    for (step, w) in want.iter().enumerate() {
        let got = schedule.lr_at(step as u64);
        assert!((got - w).abs() <= 1e-12, "step {step}: {got} vs {w}");
    }
}

#[test]
fn the_medium_ptb_restart_file_starts_from_the_first_stage() {
    // examples/configs/word_lm_medium_restart.toml is the second stage of RESULTS.md's medium
    // PTB row: the first stage's model with a fresh schedule, from the first stage's weights.
    let dir = tempfile::tempdir().unwrap();
    let (first, second) = (dir.path().join("first"), dir.path().join("second"));
    let stage = |file: &str, extra: &[&str]| train_config_file(dir.path(), file, extra);
    let a = stage("word_lm_medium.toml", &["--out", &s(&first)]);
    let b = stage(
        "word_lm_medium_restart.toml",
        &["--init-from", &s(&first), "--out", &s(&second)],
    );
    // The same model and data setup; only the trainer's schedule differs.
    assert_eq!(a["model"], b["model"]);
    assert_eq!(b["trainer"]["optimizer"]["lr"], 10.0, "{b}");
    assert_eq!(b["trainer"]["epochs"], 12, "{b}");
    assert_eq!(b["trainer"]["schedule"]["type"], "cosine_warmup", "{b}");
    // It starts from the first stage's best weights: at a rate of 1e-30 one step moves none of
    // them, so the new run's checkpoint holds exactly those.
    let third = dir.path().join("third");
    stage(
        "word_lm_medium_restart.toml",
        &[
            "--init-from",
            &s(&first),
            "--out",
            &s(&third),
            "--lr",
            "1e-30",
        ],
    );
    assert_eq!(
        common::checkpoint_params(&third.join("checkpoint")),
        common::checkpoint_params(&first.join("best"))
    );
    assert_ne!(
        common::checkpoint_params(&second.join("checkpoint")),
        common::checkpoint_params(&first.join("best"))
    );
}

fn train_error(args: &[&str]) -> String {
    let mut all = vec!["train"];
    all.extend_from_slice(args);
    all.extend_from_slice(&["--device", "cpu", "--max-steps", "1"]);
    format!("{:#}", run(&all).unwrap_err())
}

#[test]
fn bad_inputs_give_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let out = s(&dir.path().join("run"));
    let missing = s(&dir.path().join("nope.txt"));
    let e = train_error(&["char-lm", "--data", &missing, "--out", &out]);
    assert!(e.contains("nope.txt") && e.contains("--data"), "{e}");

    let empty = write(dir.path(), "empty.txt", "  \n\n");
    let e = train_error(&["char-lm", "--data", &s(&empty), "--out", &out]);
    assert!(e.contains("empty.txt") && e.contains("empty"), "{e}");

    let bad = dir.path().join("latin1.txt");
    std::fs::write(&bad, b"good line\nsecond line\ncaf\xe9\n").unwrap();
    let e = train_error(&["word-lm", "--data", &s(&bad), "--out", &out]);
    assert!(
        e.contains("latin1.txt") && e.contains('3') && e.contains("UTF-8"),
        "{e}"
    );

    let data = write(dir.path(), "ok.txt", &corpus(50, 0));
    let e = train_error(&[
        "char-lm",
        "--data",
        &s(&data),
        "--out",
        &out,
        "--level",
        "bogus",
    ]);
    assert!(e.contains("--level") && e.contains("bogus"), "{e}");

    let e = train_error(&[
        "char-lm",
        "--data",
        &s(&data),
        "--out",
        &out,
        "--batch-size",
        "100000",
    ]);
    assert!(e.contains("--batch-size") && e.contains("ok.txt"), "{e}");

    let missing_valid = s(&dir.path().join("valid-missing.txt"));
    let e = train_error(&[
        "word-lm",
        "--data",
        &s(&data),
        "--valid",
        &missing_valid,
        "--out",
        &out,
    ]);
    assert!(
        e.contains("--valid") && e.contains("valid-missing.txt"),
        "{e}"
    );

    let e = train_error(&[
        "word-lm",
        "--level",
        "subword",
        "--vocab-size",
        "10",
        "--data",
        &s(&data),
        "--out",
        &out,
    ]);
    assert!(e.contains("--vocab-size"), "{e}");
}
