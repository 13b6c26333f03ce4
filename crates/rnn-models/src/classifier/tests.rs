//! Tests of [`SequenceClassifier`](super::SequenceClassifier).

use super::*;
use crate::test_util::{adamw, feature_input, make_input, token_input};
use candle_core::{DType, Device, Result, Tensor};
use candle_nn::VarBuilder;
use rnn_core::Mode;

use crate::common::{Activation, Stochastic};
use candle_nn::{Optimizer, VarMap};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rnn_core::init::seeded_var_builder;

fn build(cfg: &SequenceClassifierConfig, seed: u64) -> (VarMap, SequenceClassifier) {
    let varmap = VarMap::new();
    let vb = seeded_var_builder(&varmap, seed, DType::F32, &Device::Cpu);
    let model = SequenceClassifier::new(cfg, vb).unwrap();
    (varmap, model)
}

fn inputs() -> [Input; 3] {
    [
        Input::tokens_with_padding(7, 5, 0),
        Input::features(4),
        Input::projected_features(4, 6),
    ]
}

fn vec2(t: &Tensor) -> Vec<Vec<f32>> {
    t.to_vec2::<f32>().unwrap()
}

#[test]
fn shapes_for_every_pooling_mode_direction_and_input() {
    let (b, t) = (3, 5);
    let lengths = [5, 2, 4];
    for input in inputs() {
        for mode in Mode::ALL {
            for bidirectional in [false, true] {
                for pooling in Pooling::ALL {
                    let cfg = SequenceClassifierConfig::new(input.clone(), mode, 6, 4)
                        .with_num_layers(2)
                        .with_bidirectional(bidirectional)
                        .with_pooling(pooling)
                        .with_head(vec![5], Activation::Relu);
                    let (_, model) = build(&cfg, 1);
                    let xs = make_input(&input, b, t, 2);
                    for lengths in [None, Some(&lengths[..])] {
                        let (logits, weights) =
                            model.forward_with_weights(&xs, lengths, false).unwrap();
                        assert_eq!(logits.dims(), &[b, 4], "{cfg:?}");
                        match pooling {
                            Pooling::Mean | Pooling::Attention => {
                                assert_eq!(weights.unwrap().dims(), &[b, t])
                            }
                            Pooling::Last | Pooling::Max => assert!(weights.is_none()),
                        }
                        let (pooled, _) = model.pooled(&xs, lengths, false).unwrap();
                        let dirs = if bidirectional { 2 } else { 1 };
                        assert_eq!(pooled.dims(), &[b, 6 * dirs]);
                        assert_eq!(model.predict(&xs, lengths).unwrap().len(), b);
                    }
                }
            }
        }
    }
}

#[test]
fn lstm_projection_shapes() {
    let cfg = SequenceClassifierConfig::new(Input::tokens(5, 4), Mode::Lstm, 8, 3)
        .with_proj_size(3)
        .with_bidirectional(true)
        .with_pooling(Pooling::Attention);
    let (_, model) = build(&cfg, 0);
    let (pooled, _) = model
        .pooled(&token_input(5, 2, 4, 0), Some(&[4, 1]), false)
        .unwrap();
    assert_eq!(pooled.dims(), &[2, 6]);
}

/// Changes every padded position of `xs` (beyond each length) to other values.
fn scramble_padding(xs: &Tensor, lengths: &[usize], wild: bool) -> Tensor {
    match xs.rank() {
        2 => {
            let mut rows = xs.to_vec2::<u32>().unwrap();
            for (row, &l) in rows.iter_mut().zip(lengths) {
                for (i, v) in row.iter_mut().enumerate().skip(l) {
                    // Far out of the vocabulary or another valid id.
                    *v = if wild { 1000 + i as u32 } else { (*v + 1) % 7 };
                }
            }
            Tensor::new(rows, &Device::Cpu).unwrap()
        }
        _ => {
            let mut rows = xs.to_vec3::<f32>().unwrap();
            for (row, &l) in rows.iter_mut().zip(lengths) {
                for step in row.iter_mut().skip(l) {
                    for v in step.iter_mut() {
                        *v = if wild { f32::NAN } else { *v * -37.0 + 5.0 };
                    }
                }
            }
            Tensor::new(rows, &Device::Cpu).unwrap()
        }
    }
}

#[test]
fn padded_positions_change_nothing() {
    let (b, t) = (4, 6);
    let lengths = [6, 1, 3, 5];
    let targets = Tensor::new(&[0u32, 2, 1, 2], &Device::Cpu).unwrap();
    for input in inputs() {
        for mode in [Mode::Lstm, Mode::Gru] {
            for bidirectional in [false, true] {
                for pooling in Pooling::ALL {
                    let cfg = SequenceClassifierConfig::new(input.clone(), mode, 5, 3)
                        .with_num_layers(2)
                        .with_bidirectional(bidirectional)
                        .with_pooling(pooling);
                    let (_, model) = build(&cfg, 3);
                    let xs = make_input(&input, b, t, 4);
                    let logits = vec2(&model.forward(&xs, Some(&lengths), false).unwrap());
                    let loss = model
                        .loss(&xs, Some(&lengths), &targets, false)
                        .unwrap()
                        .to_scalar::<f32>()
                        .unwrap();
                    assert!(logits.iter().flatten().all(|v| v.is_finite()));
                    for wild in [false, true] {
                        let other = scramble_padding(&xs, &lengths, wild);
                        let logits2 = vec2(&model.forward(&other, Some(&lengths), false).unwrap());
                        let loss2 = model
                            .loss(&other, Some(&lengths), &targets, false)
                            .unwrap()
                            .to_scalar::<f32>()
                            .unwrap();
                        assert_eq!(logits, logits2, "{cfg:?} wild={wild}");
                        assert_eq!(loss, loss2, "{cfg:?} wild={wild}");
                    }
                }
            }
        }
    }
}

#[test]
fn pooling_weights_are_normalised_over_valid_steps() {
    let lengths = [5, 2, 4];
    for pooling in [Pooling::Mean, Pooling::Attention] {
        let cfg = SequenceClassifierConfig::new(Input::tokens(9, 4), Mode::Gru, 6, 2)
            .with_bidirectional(true)
            .with_pooling(pooling);
        let (_, model) = build(&cfg, 5);
        let xs = token_input(9, 3, 5, 6);
        let (_, w) = model
            .forward_with_weights(&xs, Some(&lengths), false)
            .unwrap();
        for (row, &l) in vec2(&w.unwrap()).iter().zip(&lengths) {
            let sum: f32 = row[..l].iter().sum();
            assert!((sum - 1.0).abs() < 1e-6, "{pooling}: {row:?}");
            assert!(row[..l].iter().all(|&v| v > 0.0), "{row:?}");
            assert!(row[l..].iter().all(|&v| v == 0.0), "{row:?}");
            if pooling == Pooling::Mean {
                assert!(row[..l].iter().all(|&v| (v - 1.0 / l as f32).abs() < 1e-7));
            }
        }
    }
}

/// Last pooling is PyTorch's h_n: forward direction at the last valid step, backward
/// direction at step 0; max pooling is the max over the valid steps.
#[test]
fn last_and_max_pooling_read_the_right_steps() {
    let lengths = [4, 2, 3];
    let xs = token_input(6, 3, 4, 8);
    let h = 5;
    for mode in Mode::ALL {
        for pooling in [Pooling::Last, Pooling::Max] {
            let cfg = SequenceClassifierConfig::new(Input::tokens(6, 3), mode, h, 2)
                .with_num_layers(2)
                .with_bidirectional(true)
                .with_pooling(pooling);
            let (_, model) = build(&cfg, 9);
            let enc = model
                .encoder
                .input
                .forward(MODEL, &xs, Some(&lengths))
                .unwrap();
            let (ys, _) = model
                .rnn()
                .forward_t(&enc, None, Some(&lengths), false)
                .unwrap();
            let ys = ys.to_vec3::<f32>().unwrap();
            let pooled = vec2(&model.pooled(&xs, Some(&lengths), false).unwrap().0);
            for (bi, &l) in lengths.iter().enumerate() {
                let expected: Vec<f32> = match pooling {
                    Pooling::Last => ys[bi][l - 1][..h]
                        .iter()
                        .chain(&ys[bi][0][h..])
                        .copied()
                        .collect(),
                    _ => (0..2 * h)
                        .map(|j| {
                            ys[bi][..l]
                                .iter()
                                .map(|s| s[j])
                                .fold(f32::NEG_INFINITY, f32::max)
                        })
                        .collect(),
                };
                for (a, e) in pooled[bi].iter().zip(&expected) {
                    assert!((a - e).abs() < 1e-6, "{mode} {pooling}: {a} vs {e}");
                }
            }
        }
    }
}

#[test]
fn every_parameter_is_named_and_gets_a_gradient() {
    for pooling in Pooling::ALL {
        let cfg = SequenceClassifierConfig::new(Input::tokens(6, 3), Mode::Lstm, 4, 3)
            .with_num_layers(2)
            .with_bidirectional(true)
            .with_pooling(pooling)
            .with_head(vec![5], Activation::Tanh);
        let (varmap, model) = build(&cfg, 2);
        let mut names: Vec<String> = varmap.data().lock().unwrap().keys().cloned().collect();
        names.sort();
        for expected in [
            "embedding.weight",
            "rnn.weight_ih_l0",
            "rnn.bias_hh_l1_reverse",
            "head.layers.0.weight",
            "head.layers.1.bias",
        ] {
            assert!(
                names.iter().any(|n| n == expected),
                "{expected} in {names:?}"
            );
        }
        let has_attention = names.iter().any(|n| n.starts_with("attention."));
        assert_eq!(has_attention, pooling == Pooling::Attention, "{names:?}");
        if pooling == Pooling::Attention {
            for n in [
                "attention.w.weight",
                "attention.w.bias",
                "attention.v.weight",
            ] {
                assert!(names.iter().any(|x| x == n), "{n} in {names:?}");
            }
        }
        let xs = token_input(6, 3, 5, 1);
        let targets = Tensor::new(&[0u32, 1, 2], &Device::Cpu).unwrap();
        let loss = model.loss(&xs, Some(&[5, 3, 1]), &targets, true).unwrap();
        let grads = loss.backward().unwrap();
        for (name, var) in varmap.data().lock().unwrap().iter() {
            let g = grads.get(var.as_tensor());
            assert!(g.is_some(), "{pooling}: no gradient for {name}");
        }
    }
    let cfg = SequenceClassifierConfig::new(Input::projected_features(3, 4), Mode::Gru, 4, 2);
    let (varmap, _) = build(&cfg, 0);
    let data = varmap.data().lock().unwrap();
    assert!(
        data.contains_key("input_projection.weight") && data.contains_key("input_projection.bias")
    );
}

/// Sequences over symbols 0..3 (3 = padding) with a clear majority symbol, the class.
fn majority_batch(rng: &mut ChaCha8Rng, batch: usize) -> (Tensor, Vec<usize>, Tensor) {
    let t_max = 12;
    let mut ids = Vec::with_capacity(batch * t_max);
    let mut lengths = Vec::with_capacity(batch);
    let mut classes = Vec::with_capacity(batch);
    for _ in 0..batch {
        let (seq, class) = loop {
            let len = rng.random_range(5..=12);
            let class = rng.random_range(0..3u32);
            let seq: Vec<u32> = (0..len)
                .map(|_| {
                    if rng.random::<f64>() < 0.55 {
                        class
                    } else {
                        rng.random_range(0..3u32)
                    }
                })
                .collect();
            let count = |s: u32| seq.iter().filter(|&&v| v == s).count();
            if (0..3).all(|s| s == class || count(class) >= count(s) + 2) {
                break (seq, class);
            }
        };
        lengths.push(seq.len());
        classes.push(class);
        ids.extend_from_slice(&seq);
        ids.extend(std::iter::repeat_n(3u32, t_max - seq.len()));
    }
    (
        Tensor::from_vec(ids, (batch, t_max), &Device::Cpu).unwrap(),
        lengths,
        Tensor::new(classes, &Device::Cpu).unwrap(),
    )
}

fn accuracy(model: &SequenceClassifier, data: &(Tensor, Vec<usize>, Tensor)) -> f64 {
    let pred = model.predict(&data.0, Some(&data.1)).unwrap();
    let truth = data.2.to_vec1::<u32>().unwrap();
    pred.iter().zip(&truth).filter(|(p, t)| p == t).count() as f64 / truth.len() as f64
}

#[test]
fn learns_the_majority_symbol() {
    for (mode, pooling) in [(Mode::Gru, Pooling::Attention), (Mode::Lstm, Pooling::Last)] {
        let cfg = SequenceClassifierConfig::new(Input::tokens_with_padding(4, 8, 3), mode, 16, 3)
            .with_pooling(pooling)
            .with_output_dropout(0.1);
        let (varmap, mut model) = build(&cfg, 11);
        model.set_seed(3);
        let mut rng = ChaCha8Rng::seed_from_u64(42);
        let held_out = majority_batch(&mut rng, 300);
        let untrained = accuracy(&model, &held_out);
        let mut opt = adamw(varmap.all_vars(), 0.02);
        for _ in 0..250 {
            let (ids, lengths, targets) = majority_batch(&mut rng, 32);
            let loss = model.loss(&ids, Some(&lengths), &targets, true).unwrap();
            opt.backward_step(&loss).unwrap();
        }
        let trained = accuracy(&model, &held_out);
        eprintln!("{mode} {pooling}: untrained {untrained:.3}, trained {trained:.3}");
        assert!(
            untrained < 0.6,
            "{mode} {pooling}: untrained accuracy {untrained}"
        );
        assert!(
            trained >= 0.9,
            "{mode} {pooling}: trained accuracy {trained}"
        );
    }
}

#[test]
fn save_load_round_trip_is_exact() {
    let cfg = SequenceClassifierConfig::new(Input::tokens(8, 4), Mode::Lstm, 6, 3)
        .with_num_layers(2)
        .with_bidirectional(true)
        .with_pooling(Pooling::Attention)
        .with_head(vec![5], Activation::Relu);
    let (varmap, model) = build(&cfg, 21);
    let xs = token_input(8, 3, 5, 22);
    let lengths = [5, 3, 2];
    let logits = vec2(&model.forward(&xs, Some(&lengths), false).unwrap());
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("model.safetensors");
    varmap.save(&path).unwrap();

    let mut fresh = VarMap::new();
    let loaded = SequenceClassifier::new(
        &cfg,
        VarBuilder::from_varmap(&fresh, DType::F32, &Device::Cpu),
    )
    .unwrap();
    let before = vec2(&loaded.forward(&xs, Some(&lengths), false).unwrap());
    assert_ne!(before, logits);
    fresh.load(&path).unwrap();
    let after = vec2(&loaded.forward(&xs, Some(&lengths), false).unwrap());
    assert_eq!(after, logits);
}

#[test]
fn dropout_is_seeded_and_resumable() {
    let cfg = SequenceClassifierConfig::new(Input::tokens(8, 4), Mode::Gru, 6, 3)
        .with_num_layers(2)
        .with_rnn_dropout(0.3)
        .with_embedding_dropout(0.2)
        .with_output_dropout(0.4)
        .with_pooling(Pooling::Mean);
    let (_, mut model) = build(&cfg, 1);
    let xs = token_input(8, 2, 6, 2);
    let eval = vec2(&model.forward(&xs, None, false).unwrap());
    assert_eq!(model.rng_counters(), vec![0, 0, 0]);
    model.set_seed(9);
    let a1 = vec2(&model.forward(&xs, None, true).unwrap());
    let counters = model.rng_counters();
    assert_eq!(counters, vec![1, 1, 1]);
    let a2 = vec2(&model.forward(&xs, None, true).unwrap());
    assert_ne!(a1, eval);
    assert_ne!(a1, a2);
    model.set_seed(9);
    assert_eq!(vec2(&model.forward(&xs, None, true).unwrap()), a1);
    model.set_rng_counters(&counters).unwrap();
    assert_eq!(vec2(&model.forward(&xs, None, true).unwrap()), a2);
    assert_eq!(vec2(&model.forward(&xs, None, false).unwrap()), eval);
    let err = model.set_rng_counters(&[1]).unwrap_err().to_string();
    assert!(
        err.contains("SequenceClassifier") && err.contains("3"),
        "{err}"
    );
}

#[test]
fn argument_errors_name_the_argument() {
    let cfg = SequenceClassifierConfig::new(Input::tokens_with_padding(5, 3, 0), Mode::Gru, 4, 3);
    let (_, model) = build(&cfg, 0);
    let dev = Device::Cpu;
    let xs = token_input(5, 2, 4, 0);
    let err = |r: Result<Tensor>| r.unwrap_err().to_string();
    let check = |msg: String, needles: &[&str]| {
        assert!(msg.contains("SequenceClassifier"), "{msg}");
        for n in needles {
            assert!(msg.contains(n), "{n} not in: {msg}");
        }
    };
    check(
        err(model.forward(&xs, Some(&[4]), false)),
        &["lengths", "1 entries"],
    );
    check(
        err(model.forward(&xs, Some(&[4, 0]), false)),
        &["lengths[1]", "1..=4"],
    );
    check(
        err(model.forward(&xs, Some(&[5, 2]), false)),
        &["lengths[0]"],
    );
    let float_ids = xs.to_dtype(DType::F32).unwrap();
    check(
        err(model.forward(&float_ids, None, false)),
        &["input", "u32", "F32"],
    );
    let rank3 = xs.unsqueeze(2).unwrap();
    check(
        err(model.forward(&rank3, None, false)),
        &["input", "[2, 4, 1]"],
    );
    let oov = Tensor::new(&[[1u32, 2, 7, 0], [1, 1, 1, 1]], &dev).unwrap();
    check(
        err(model.forward(&oov, None, false)),
        &["input", "token id 7", "[0, 2]", "0..5"],
    );
    // The out-of-vocabulary id is fine at a padded position.
    model.forward(&oov, Some(&[2, 4]), false).unwrap();
    let bad_targets = Tensor::new(&[0u32, 1, 2], &dev).unwrap();
    check(
        err(model.loss(&xs, None, &bad_targets, false)),
        &["targets", "[3]"],
    );
    let bad_targets = Tensor::new(&[0f32, 1.0], &dev).unwrap();
    check(
        err(model.loss(&xs, None, &bad_targets, false)),
        &["targets", "u32"],
    );
    let bad_targets = Tensor::new(&[0u32, 3], &dev).unwrap();
    check(
        err(model.loss(&xs, None, &bad_targets, false)),
        &["targets", "class 3"],
    );

    let cfg = SequenceClassifierConfig::new(Input::features(3), Mode::Lstm, 4, 2);
    let (_, model) = build(&cfg, 0);
    let wrong_size = feature_input(2, 4, 5, 0);
    check(
        err(model.forward(&wrong_size, None, false)),
        &["input", "(batch, seq, 3)", "[2, 4, 5]"],
    );
    let f64_input = feature_input(2, 4, 3, 0).to_dtype(DType::F64).unwrap();
    check(
        err(model.forward(&f64_input, None, false)),
        &["input", "F64", "F32"],
    );
    let rank2 = Tensor::zeros((2, 3), DType::F32, &dev).unwrap();
    check(
        err(model.forward(&rank2, None, false)),
        &["input", "[2, 3]"],
    );
    let ids = token_input(3, 2, 4, 0);
    check(err(model.forward(&ids, None, false)), &["input", "U32"]);
}

#[test]
fn config_validation_serde_and_pooling_parse() {
    let ok = SequenceClassifierConfig::new(Input::tokens(5, 3), Mode::Gru, 4, 3);
    ok.validate().unwrap();
    let cases = [
        (ok.clone().with_num_layers(0), "num_layers"),
        (ok.clone().with_rnn_dropout(1.0), "dropout"),
        (ok.clone().with_embedding_dropout(-0.1), "embedding_dropout"),
        (ok.clone().with_output_dropout(1.5), "output_dropout"),
        (ok.clone().with_proj_size(2), "proj_size"),
        (
            ok.clone().with_head(vec![4, 0], Activation::Tanh),
            "head_hidden[1]",
        ),
        (ok.clone().with_attention_size(0), "attention_size"),
        (
            SequenceClassifierConfig::new(Input::tokens(5, 3), Mode::Gru, 4, 1),
            "num_classes",
        ),
        (
            SequenceClassifierConfig::new(Input::tokens(0, 3), Mode::Gru, 4, 3),
            "vocab_size",
        ),
        (
            SequenceClassifierConfig::new(Input::tokens(5, 0), Mode::Gru, 4, 3),
            "embedding_dim",
        ),
        (
            SequenceClassifierConfig::new(Input::tokens_with_padding(5, 3, 5), Mode::Gru, 4, 3),
            "padding_idx",
        ),
        (
            SequenceClassifierConfig::new(Input::features(0), Mode::Gru, 4, 3),
            "input.size",
        ),
        (
            SequenceClassifierConfig::new(Input::projected_features(2, 0), Mode::Gru, 4, 3),
            "projection_dim",
        ),
        (
            SequenceClassifierConfig::new(Input::features(2), Mode::Gru, 0, 3),
            "hidden_size",
        ),
    ];
    for (cfg, needle) in cases {
        let err = cfg.validate().unwrap_err().to_string();
        assert!(
            err.contains(needle) && err.contains(CONFIG),
            "{needle}: {err}"
        );
        let vm = VarMap::new();
        let vb = VarBuilder::from_varmap(&vm, DType::F32, &Device::Cpu);
        assert!(SequenceClassifier::new(&cfg, vb).is_err());
    }

    let full = ok
        .clone()
        .with_pooling(Pooling::Max)
        .with_bidirectional(true)
        .with_head(vec![7], Activation::Relu)
        .with_output_dropout(0.25);
    let json = serde_json::to_string(&full).unwrap();
    assert!(
        json.contains(r#""pooling":"max""#) && json.contains(r#""kind":"tokens""#),
        "{json}"
    );
    let back: SequenceClassifierConfig = serde_json::from_str(&json).unwrap();
    assert_eq!(back, full);
    let minimal: SequenceClassifierConfig = serde_json::from_str(
        r#"{"input":{"kind":"features","size":3},"mode":"lstm","hidden_size":8,"num_classes":2}"#,
    )
    .unwrap();
    assert_eq!(
        minimal,
        SequenceClassifierConfig::new(Input::features(3), Mode::Lstm, 8, 2)
    );

    for p in Pooling::ALL {
        assert_eq!(p.as_str().parse::<Pooling>().unwrap(), p);
        assert_eq!(p.to_string().to_uppercase().parse::<Pooling>().unwrap(), p);
    }
    let err = "sum".parse::<Pooling>().unwrap_err().to_string();
    assert!(
        err.contains("'sum'") && err.contains("last, mean, max, attention"),
        "{err}"
    );
}

/// The recurrent-layer mask options: nested under `masks` in the JSON (the classifier has an
/// element-wise `embedding_dropout` of its own), absent while off, reach the recurrent layer, and
/// draw with the recurrent layer's counter; whole-word embedding dropout is refused for a
/// feature input.
#[test]
fn mask_options_nest_reach_the_layer_and_refuse_embedding_dropout_on_features() {
    let masks = crate::masks::MaskOptions {
        recurrent_dropout: 0.3,
        zoneout_h: 0.1,
        weight_drop: 0.2,
        variational_dropout: 0.1,
        ..Default::default()
    };
    let plain = SequenceClassifierConfig::new(Input::tokens(20, 4), Mode::Gru, 5, 3);
    assert!(!serde_json::to_string(&plain).unwrap().contains("masks"));
    let cfg = plain.clone().with_masks(masks);
    let json = serde_json::to_value(&cfg).unwrap();
    assert_eq!(json["masks"]["weight_drop"], 0.2);
    assert_eq!(
        serde_json::from_value::<SequenceClassifierConfig>(json).unwrap(),
        cfg
    );
    let rnn = cfg.rnn_config();
    assert_eq!(
        (rnn.recurrent_dropout, rnn.zoneout_h, rnn.weight_drop),
        (0.3, 0.1, 0.2)
    );
    assert_eq!((rnn.input_dropout, rnn.output_dropout), (0.1, 0.1));
    let words = crate::masks::MaskOptions {
        embedding_dropout: 0.1,
        ..masks
    };
    plain.clone().with_masks(words).validate().unwrap();
    let bad = SequenceClassifierConfig::new(Input::features(4), Mode::Gru, 5, 3).with_masks(words);
    let e = bad.validate().unwrap_err().to_string();
    assert!(e.contains("masks.embedding_dropout"), "{e}");
}

/// `masks.embedding_dropout` drops whole words: a training forward equals the plain model's
/// forward with the embedding matrix's rows scaled by the same draw (Merity et al.'s
/// formulation), its counter is the fourth (three stay three without it), and a feature input
/// refuses it.
#[test]
fn whole_word_dropout_equals_dropping_embedding_rows() {
    use crate::common::derive_seed;
    use crate::masks::{EmbeddingDropout, MaskOptions};
    let vocab = 20;
    let plain = SequenceClassifierConfig::new(Input::tokens(vocab, 5), Mode::Lstm, 6, 3);
    let masks = MaskOptions {
        embedding_dropout: 0.5,
        ..MaskOptions::default()
    };
    let dropped = plain.clone().with_masks(masks);
    let (_, model) = build(&dropped, 4);
    let (varmap, reference) = build(&plain, 4);
    assert_eq!(reference.rng_counters().len(), 3);
    assert_eq!(model.rng_counters(), vec![0, 0, 0, 0]);
    let ids = Tensor::new(&[[1u32, 2, 1, 3, 1], [4, 4, 5, 19, 0]], &Device::Cpu).unwrap();
    let got = model.forward(&ids, None, true).unwrap();
    assert_eq!(model.rng_counters(), vec![0, 0, 0, 1]);

    // The same draw: a fresh model's word dropout is seeded with derive_seed(0, 3).
    let scale = EmbeddingDropout::new(0.5, derive_seed(0, 3))
        .unwrap()
        .word_scale(vocab, DType::F32, &Device::Cpu, true)
        .unwrap()
        .unwrap();
    let s: Vec<f32> = scale.flatten_all().unwrap().to_vec1().unwrap();
    assert!(s.contains(&0.0) && s.contains(&2.0), "{s:?}");
    {
        let data = varmap.data().lock().unwrap();
        let w = &data["embedding.weight"];
        w.set(&w.as_tensor().broadcast_mul(&scale).unwrap())
            .unwrap();
    }
    let max_diff = |a: Tensor, b: Tensor| -> f32 {
        (a - b)
            .and_then(|d| d.abs()?.max_all()?.to_scalar::<f32>())
            .unwrap()
    };
    let d = max_diff(got, reference.forward(&ids, None, true).unwrap());
    assert!(d < 1e-6, "{d}");
    // Evaluation draws nothing and drops nothing.
    let (_, fresh) = build(&dropped, 4);
    let (_, fresh_plain) = build(&plain, 4);
    let e = max_diff(
        fresh.forward(&ids, None, false).unwrap(),
        fresh_plain.forward(&ids, None, false).unwrap(),
    );
    assert_eq!(e, 0.0);
    assert_eq!(fresh.rng_counters(), vec![0, 0, 0, 0]);
    // Old checkpoints' three counters load (the word counter restarts), four restore it.
    model.set_rng_counters(&[0, 0, 0]).unwrap();
    assert_eq!(model.rng_counters()[3], 0);
    model.set_rng_counters(&[0, 0, 0, 7]).unwrap();
    assert_eq!(model.rng_counters()[3], 7);
    assert!(model.set_rng_counters(&[0, 0]).is_err());
    // Numeric features have no words to drop.
    let err = SequenceClassifierConfig::new(Input::features(4), Mode::Lstm, 6, 3)
        .with_masks(masks)
        .validate()
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("embedding_dropout") && err.contains("token"),
        "{err}"
    );
}
