//! `--layer-norm` end to end: `rnn train char-lm --layer-norm` trains a layer-normalised LSTM for
//! a few steps, saves the option and the `rnn.layernorm_*` parameters in its checkpoint, and
//! `rnn eval` rebuilds the same model from it; so do the adding task (the forecaster's
//! layer), classify and tag; tasks that build no such layer refuse the flag.
#![cfg(feature = "cli")]

use std::path::Path;

fn run(args: &[&str]) -> anyhow::Result<()> {
    let mut all = vec!["rnn"];
    all.extend_from_slice(args);
    rnn::cli::run(all)
}

fn s(p: &Path) -> String {
    p.display().to_string()
}

/// The model config and the weights of the checkpoint in run directory `out`.
fn saved(
    out: &Path,
) -> (
    serde_json::Value,
    std::collections::HashMap<String, candle_core::Tensor>,
) {
    let config =
        serde_json::from_str(&std::fs::read_to_string(out.join("checkpoint/config.json")).unwrap())
            .unwrap();
    let weights = candle_core::safetensors::load(
        out.join("checkpoint/model.safetensors"),
        &candle_core::Device::Cpu,
    )
    .unwrap();
    (config, weights)
}

/// The weights of the run in `out` after checking that its saved config turns layer norm on and
/// that `rnn eval` rebuilds the model from the checkpoint; `what` labels the failures.
fn layer_normalised_weights(
    what: &str,
    out: &Path,
) -> std::collections::HashMap<String, candle_core::Tensor> {
    let (config, weights) = saved(out);
    assert!(has_layer_norm(&config), "{what}: {config}");
    run(&["eval", "--checkpoint", &s(out), "--device", "cpu"])
        .unwrap_or_else(|e| panic!("{what} eval: {e:#}"));
    weights
}

fn corpus() -> String {
    (0..200)
        .map(|i| format!("the cat {} the dog {} .\n", ["sees", "likes"][i % 2], i % 7))
        .collect()
}

#[test]
fn char_lm_with_layer_norm_trains_saves_and_evaluates() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("train.txt");
    std::fs::write(&data, corpus()).unwrap();
    let out = dir.path().join("run");
    let train = |out: &Path, extra: &[&str]| {
        let (data, out) = (s(&data), s(out));
        let mut args = vec![
            "train",
            "char-lm",
            "--data",
            &data,
            "--out",
            &out,
            "--device",
            "cpu",
            "--hidden",
            "16",
            "--embedding",
            "8",
            "--seq-len",
            "10",
            "--batch-size",
            "4",
            "--max-steps",
            "6",
            "--eval-every",
            "3",
            "--lr",
            "0.01",
        ];
        args.extend_from_slice(extra);
        run(&args)
    };
    train(&out, &["--layer-norm"]).unwrap();

    // The option is in the checkpoint's model config, and its parameters in the weights.
    let (config, weights) = saved(&out);
    // The task's config (under `model`) holds the language model's config (under `model`).
    let model = &config["model"]["model"];
    assert_eq!(
        model["layer_norm"],
        serde_json::Value::Bool(true),
        "{model}"
    );
    for name in [
        "rnn.layernorm_x_weight_l0",
        "rnn.layernorm_x_bias_l0",
        "rnn.layernorm_h_weight_l0",
        "rnn.layernorm_h_bias_l0",
        "rnn.layernorm_c_weight_l0",
        "rnn.layernorm_c_bias_l0",
    ] {
        let t = weights
            .get(name)
            .unwrap_or_else(|| panic!("{name} missing"));
        assert_eq!(
            t.dims(),
            if name.contains("_c_") {
                &[16][..]
            } else {
                &[64][..]
            }
        );
    }
    // Trained: the gains moved off their initial 1.
    let gain = weights["rnn.layernorm_h_weight_l0"]
        .to_vec1::<f32>()
        .unwrap();
    assert!(gain.iter().any(|g| (g - 1.0).abs() > 1e-6), "{gain:?}");

    // eval rebuilds the model from the checkpoint's config and weights.
    run(&["eval", "--checkpoint", &s(&out), "--device", "cpu"]).unwrap();

    // Off: no layernorm parameter, and the saved config says so.
    let plain = dir.path().join("plain");
    train(&plain, &[]).unwrap();
    let (_, weights) = saved(&plain);
    assert!(
        weights.keys().all(|k| !k.contains("layernorm")),
        "{:?}",
        weights.keys()
    );
}

#[test]
fn layer_norm_is_refused_where_it_does_not_apply() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("train.txt");
    std::fs::write(&data, corpus()).unwrap();
    let out = s(&dir.path().join("run"));
    let data = s(&data);
    let base = [
        "train",
        "char-lm",
        "--data",
        &data,
        "--out",
        &out,
        "--device",
        "cpu",
        "--max-steps",
        "1",
    ];
    let mut args = base.to_vec();
    args.extend_from_slice(&["--layer-norm", "--cell", "rnn-tanh"]);
    let err = format!("{:#}", run(&args).unwrap_err());
    assert!(
        err.contains("layer_norm") && err.contains("LSTM and GRU"),
        "{err}"
    );
    let err = format!(
        "{:#}",
        run(&[
            "train",
            "copy",
            "--device",
            "cpu",
            "--out",
            &out,
            "--max-steps",
            "1",
            "--layer-norm"
        ])
        .unwrap_err()
    );
    assert!(err.contains("layer-norm"), "{err}");
}

/// Whether any value under `v` is an object with `"layer_norm": true`.
fn has_layer_norm(v: &serde_json::Value) -> bool {
    match v {
        serde_json::Value::Object(m) => {
            m.get("layer_norm") == Some(&serde_json::Value::Bool(true))
                || m.values().any(has_layer_norm)
        }
        serde_json::Value::Array(a) => a.iter().any(has_layer_norm),
        _ => false,
    }
}

#[test]
fn adding_with_layer_norm_trains_saves_and_evaluates() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    let out_s = s(&out);
    run(&[
        "train",
        "adding",
        "--device",
        "cpu",
        "--out",
        &out_s,
        "--samples",
        "64",
        "--seq-len",
        "8",
        "--hidden",
        "8",
        "--batch-size",
        "16",
        "--max-steps",
        "3",
        "--layer-norm",
    ])
    .unwrap();
    let weights = layer_normalised_weights("adding", &out);
    let names: Vec<&String> = weights
        .keys()
        .filter(|k| k.contains("layernorm_"))
        .collect();
    assert_eq!(names.len(), 6, "{:?}", weights.keys());
}

/// `classify` and `tag` take `--layer-norm` too: the option reaches the checkpoint's model
/// config and weights (a bidirectional layer: both directions' parameters), and `eval` rebuilds
/// the model from it.
#[test]
fn classify_and_tag_with_layer_norm_train_save_and_evaluate() {
    let dir = tempfile::tempdir().unwrap();
    let sentiment: String = (0..40)
        .map(|i| ["1\ta great funny film\n", "0\ta dull boring film\n"][i % 2])
        .collect();
    let mut conllu = String::new();
    for sent in 0..12 {
        conllu.push_str(&format!("# sent_id = {sent}\n"));
        for (i, (w, t)) in [
            ("the", "DET"),
            ("cat", "NOUN"),
            ("sat", "VERB"),
            (".", "PUNCT"),
        ]
        .iter()
        .enumerate()
        {
            conllu.push_str(&format!("{}\t{w}\t{w}\t{t}\t_\t_\t0\tdep\t_\t_\n", i + 1));
        }
        conllu.push('\n');
    }
    for (task, file, text) in [
        ("classify", "train.txt", sentiment),
        ("tag", "train.conllu", conllu),
    ] {
        let data = dir.path().join(file);
        std::fs::write(&data, text).unwrap();
        let out = dir.path().join(task);
        let (data, out_s) = (s(&data), s(&out));
        run(&[
            "train",
            task,
            "--data",
            &data,
            "--out",
            &out_s,
            "--device",
            "cpu",
            "--hidden",
            "8",
            "--embedding",
            "8",
            "--batch-size",
            "4",
            "--max-steps",
            "3",
            "--layer-norm",
            "--cell",
            "gru",
        ])
        .unwrap_or_else(|e| panic!("{task}: {e:#}"));
        let weights = layer_normalised_weights(task, &out);
        // GRU: x and h gains and biases, no cell-state ones, per direction.
        let names: Vec<&String> = weights
            .keys()
            .filter(|k| k.contains("layernorm_"))
            .collect();
        assert_eq!(names.len(), 8, "{task}: {:?}", weights.keys());
        assert!(
            names.iter().any(|k| k.ends_with("_reverse")),
            "{task}: {names:?}"
        );
    }
}

/// `seq2seq` (and `dates`, the same encoder-decoder task on generated data) take `--layer-norm`:
/// both the encoder's and the decoder's layers are layer-normalised in the checkpoint, `eval`
/// rebuilds the model, and a plain cell with the flag is refused.
#[test]
fn seq2seq_with_layer_norm_trains_saves_and_evaluates() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("pairs.tsv");
    let pairs: String = (0..60)
        .map(|i| format!("w{} w{}\tv{} v{}\n", i % 5, i % 3, i % 3, i % 5))
        .collect();
    std::fs::write(&data, pairs).unwrap();
    let data = s(&data);
    for (task, cell) in [("seq2seq", "lstm"), ("dates", "gru")] {
        let out = dir.path().join(task);
        let out_s = s(&out);
        let mut args = vec![
            "train",
            task,
            "--out",
            &out_s,
            "--device",
            "cpu",
            "--hidden",
            "8",
            "--embedding",
            "8",
            "--batch-size",
            "8",
            "--max-steps",
            "3",
            "--cell",
            cell,
            "--layer-norm",
        ];
        if task == "seq2seq" {
            args.extend_from_slice(&["--data", &data, "--target", "0"]);
        } else {
            args.extend_from_slice(&["--samples", "64"]);
        }
        run(&args).unwrap_or_else(|e| panic!("{task}: {e:#}"));
        let weights = layer_normalised_weights(task, &out);
        for side in ["encoder.rnn.", "decoder.rnn."] {
            assert!(
                weights
                    .keys()
                    .any(|k| k.starts_with(side) && k.contains("layernorm_h_weight")),
                "{task} {side}: {:?}",
                weights.keys()
            );
        }
    }
    let out = s(&dir.path().join("tanh"));
    let err = format!(
        "{:#}",
        run(&[
            "train",
            "seq2seq",
            "--data",
            &data,
            "--out",
            &out,
            "--device",
            "cpu",
            "--max-steps",
            "1",
            "--cell",
            "rnn-tanh",
            "--layer-norm",
        ])
        .unwrap_err()
    );
    assert!(
        err.contains("layer_norm") && err.contains("LSTM and GRU"),
        "{err}"
    );
}
