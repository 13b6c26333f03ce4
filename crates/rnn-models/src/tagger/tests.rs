//! Tests of [`SequenceTagger`](super::SequenceTagger).

use super::*;
use crate::test_util::{
    adamw, assert_fused_matches_composed, feature_input, grads_by_name, make_input, token_input,
};
use candle_core::Device;
use candle_nn::{Optimizer, VarMap};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rnn_core::init::seeded_var_builder;

fn build(cfg: &SequenceTaggerConfig, seed: u64) -> (VarMap, SequenceTagger) {
    let varmap = VarMap::new();
    let vb = seeded_var_builder(&varmap, seed, DType::F32, &Device::Cpu);
    let model = SequenceTagger::new(cfg, vb).unwrap();
    (varmap, model)
}

fn inputs() -> [Input; 3] {
    [
        Input::tokens_with_padding(7, 5, 0),
        Input::features(4),
        Input::projected_features(4, 6),
    ]
}

fn vec3(t: &Tensor) -> Vec<Vec<Vec<f32>>> {
    t.to_vec3::<f32>().unwrap()
}

#[test]
fn shapes_for_every_mode_direction_and_input() {
    let (b, t) = (3, 5);
    let lengths = [5, 1, 3];
    for input in inputs() {
        for mode in Mode::ALL {
            for bidirectional in [false, true] {
                let cfg = SequenceTaggerConfig::new(input.clone(), mode, 6, 4)
                    .with_num_layers(2)
                    .with_bidirectional(bidirectional);
                let (_, model) = build(&cfg, 1);
                let xs = make_input(&input, b, t, 2);
                for lengths in [None, Some(&lengths[..])] {
                    let logits = model.forward(&xs, lengths, false).unwrap();
                    assert_eq!(logits.dims(), &[b, t, 4], "{cfg:?}");
                    let tags = model.predict(&xs, lengths).unwrap();
                    let lens: Vec<usize> = tags.iter().map(|r| r.len()).collect();
                    assert_eq!(lens, lengths.map_or(vec![t; b], |l| l.to_vec()));
                    assert!(tags.iter().flatten().all(|&tag| tag < 4));
                }
            }
        }
    }
}

/// Changes every padded position of `xs` and `tags` (beyond each length) to other values.
fn scramble_padding(xs: &Tensor, tags: &Tensor, lengths: &[usize]) -> (Tensor, Tensor) {
    let mut tag_rows = tags.to_vec2::<u32>().unwrap();
    for (row, &l) in tag_rows.iter_mut().zip(lengths) {
        for v in row.iter_mut().skip(l) {
            *v = u32::MAX;
        }
    }
    let tags = Tensor::new(tag_rows, &Device::Cpu).unwrap();
    let xs = match xs.rank() {
        2 => {
            let mut rows = xs.to_vec2::<u32>().unwrap();
            for (row, &l) in rows.iter_mut().zip(lengths) {
                for v in row.iter_mut().skip(l) {
                    *v = 999;
                }
            }
            Tensor::new(rows, &Device::Cpu).unwrap()
        }
        _ => {
            let mut rows = xs.to_vec3::<f32>().unwrap();
            for (row, &l) in rows.iter_mut().zip(lengths) {
                for step in row.iter_mut().skip(l) {
                    for v in step.iter_mut() {
                        *v = *v * 50.0 - 3.0;
                    }
                }
            }
            Tensor::new(rows, &Device::Cpu).unwrap()
        }
    };
    (xs, tags)
}

#[test]
fn padded_positions_change_nothing() {
    let (b, t) = (4, 6);
    let lengths = [6, 1, 3, 5];
    for input in inputs() {
        for mode in [Mode::Lstm, Mode::RnnTanh] {
            for bidirectional in [false, true] {
                let cfg = SequenceTaggerConfig::new(input.clone(), mode, 5, 3)
                    .with_num_layers(2)
                    .with_bidirectional(bidirectional);
                let (_, model) = build(&cfg, 3);
                let xs = make_input(&input, b, t, 4);
                let tags = token_input(3, b, t, 5);
                let logits = vec3(&model.forward(&xs, Some(&lengths), false).unwrap());
                let loss = model
                    .loss(&xs, Some(&lengths), &tags, false)
                    .unwrap()
                    .to_scalar::<f32>()
                    .unwrap();
                let pred = model.predict(&xs, Some(&lengths)).unwrap();
                let (xs2, tags2) = scramble_padding(&xs, &tags, &lengths);
                let logits2 = vec3(&model.forward(&xs2, Some(&lengths), false).unwrap());
                let loss2 = model
                    .loss(&xs2, Some(&lengths), &tags2, false)
                    .unwrap()
                    .to_scalar::<f32>()
                    .unwrap();
                assert!(loss.is_finite());
                assert_eq!(loss, loss2, "{cfg:?}");
                for (bi, &l) in lengths.iter().enumerate() {
                    assert_eq!(logits[bi][..l], logits2[bi][..l], "{cfg:?}");
                }
                assert_eq!(pred, model.predict(&xs2, Some(&lengths)).unwrap());
            }
        }
    }
}

/// tag = 2 * [previous token == this token] + [next token == this token]: needs both
/// directions of context.
fn tagging_batch(rng: &mut ChaCha8Rng, batch: usize) -> (Tensor, Vec<usize>, Tensor) {
    let t_max = 12;
    let (mut ids, mut tags, mut lengths) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..batch {
        let len = rng.random_range(5..=t_max);
        let seq: Vec<u32> = (0..len).map(|_| rng.random_range(0..3u32)).collect();
        for i in 0..t_max {
            if i < len {
                let prev = i > 0 && seq[i - 1] == seq[i];
                let next = i + 1 < len && seq[i + 1] == seq[i];
                ids.push(seq[i]);
                tags.push(2 * prev as u32 + next as u32);
            } else {
                ids.push(3);
                tags.push(u32::MAX);
            }
        }
        lengths.push(len);
    }
    (
        Tensor::from_vec(ids, (batch, t_max), &Device::Cpu).unwrap(),
        lengths,
        Tensor::from_vec(tags, (batch, t_max), &Device::Cpu).unwrap(),
    )
}

fn token_accuracy(model: &SequenceTagger, data: &(Tensor, Vec<usize>, Tensor)) -> f64 {
    let pred = model.predict(&data.0, Some(&data.1)).unwrap();
    let truth = data.2.to_vec2::<u32>().unwrap();
    let (mut right, mut total) = (0, 0);
    for (p, t) in pred.iter().zip(&truth) {
        right += p.iter().zip(t).filter(|(a, b)| a == b).count();
        total += p.len();
    }
    right as f64 / total as f64
}

#[test]
fn learns_a_tagging_rule_that_needs_both_directions() {
    let cfg = SequenceTaggerConfig::new(Input::tokens_with_padding(4, 8, 3), Mode::Gru, 16, 4)
        .with_output_dropout(0.1);
    let (varmap, mut model) = build(&cfg, 7);
    model.set_seed(1);
    let mut rng = ChaCha8Rng::seed_from_u64(17);
    let held_out = tagging_batch(&mut rng, 200);
    let untrained = token_accuracy(&model, &held_out);
    let mut opt = adamw(varmap.all_vars(), 0.02);
    for _ in 0..250 {
        let (ids, lengths, tags) = tagging_batch(&mut rng, 32);
        let loss = model.loss(&ids, Some(&lengths), &tags, true).unwrap();
        opt.backward_step(&loss).unwrap();
    }
    let trained = token_accuracy(&model, &held_out);
    eprintln!("tagger: untrained {untrained:.3}, trained {trained:.3}");
    assert!(untrained < 0.6, "untrained token accuracy {untrained}");
    assert!(trained >= 0.95, "trained token accuracy {trained}");
}

#[test]
fn every_parameter_is_named_and_gets_a_gradient() {
    let cfg = SequenceTaggerConfig::new(Input::tokens(6, 3), Mode::Lstm, 4, 3).with_num_layers(2);
    let (varmap, model) = build(&cfg, 2);
    let names: Vec<String> = varmap.data().lock().unwrap().keys().cloned().collect();
    for expected in [
        "embedding.weight",
        "rnn.weight_ih_l0",
        "rnn.weight_hh_l1_reverse",
        "output.weight",
        "output.bias",
    ] {
        assert!(
            names.iter().any(|n| n == expected),
            "{expected} in {names:?}"
        );
    }
    let xs = token_input(6, 3, 5, 1);
    let tags = token_input(3, 3, 5, 2);
    let loss = model.loss(&xs, Some(&[5, 3, 1]), &tags, true).unwrap();
    let grads = loss.backward().unwrap();
    for (name, var) in varmap.data().lock().unwrap().iter() {
        assert!(
            grads.get(var.as_tensor()).is_some(),
            "no gradient for {name}"
        );
    }
}

#[test]
fn save_load_round_trip_is_exact() {
    let cfg = SequenceTaggerConfig::new(Input::projected_features(3, 5), Mode::Lstm, 6, 4)
        .with_num_layers(2)
        .with_proj_size(4);
    let (varmap, model) = build(&cfg, 21);
    let xs = feature_input(3, 5, 3, 22);
    let lengths = [5, 3, 2];
    let logits = vec3(&model.forward(&xs, Some(&lengths), false).unwrap());
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("model.safetensors");
    varmap.save(&path).unwrap();

    let mut fresh = VarMap::new();
    let loaded = SequenceTagger::new(
        &cfg,
        VarBuilder::from_varmap(&fresh, DType::F32, &Device::Cpu),
    )
    .unwrap();
    assert_ne!(
        vec3(&loaded.forward(&xs, Some(&lengths), false).unwrap()),
        logits
    );
    fresh.load(&path).unwrap();
    assert_eq!(
        vec3(&loaded.forward(&xs, Some(&lengths), false).unwrap()),
        logits
    );
}

#[test]
fn dropout_is_seeded_and_resumable() {
    let cfg = SequenceTaggerConfig::new(Input::tokens(8, 4), Mode::Gru, 6, 3)
        .with_num_layers(2)
        .with_rnn_dropout(0.3)
        .with_embedding_dropout(0.2)
        .with_output_dropout(0.4);
    let (_, mut model) = build(&cfg, 1);
    let xs = token_input(8, 2, 6, 2);
    let eval = vec3(&model.forward(&xs, None, false).unwrap());
    model.set_seed(4);
    let a1 = vec3(&model.forward(&xs, None, true).unwrap());
    let counters = model.rng_counters();
    assert_eq!(counters, vec![1, 1, 1]);
    let a2 = vec3(&model.forward(&xs, None, true).unwrap());
    assert_ne!(a1, eval);
    assert_ne!(a1, a2);
    model.set_seed(4);
    assert_eq!(vec3(&model.forward(&xs, None, true).unwrap()), a1);
    model.set_rng_counters(&counters).unwrap();
    assert_eq!(vec3(&model.forward(&xs, None, true).unwrap()), a2);
    assert!(model.set_rng_counters(&[0, 0]).is_err());
}

#[test]
fn argument_errors_name_the_argument() {
    let cfg = SequenceTaggerConfig::new(Input::tokens(5, 3), Mode::Gru, 4, 3);
    let (_, model) = build(&cfg, 0);
    let dev = Device::Cpu;
    let xs = token_input(5, 2, 4, 0);
    let tags = token_input(3, 2, 4, 1);
    let err = |r: Result<Tensor>| r.unwrap_err().to_string();
    let check = |msg: String, needles: &[&str]| {
        assert!(msg.contains("SequenceTagger"), "{msg}");
        for n in needles {
            assert!(msg.contains(n), "{n} not in: {msg}");
        }
    };
    check(
        err(model.forward(&xs, Some(&[4, 2, 1]), false)),
        &["lengths", "3 entries"],
    );
    check(
        err(model.forward(&xs, Some(&[4, 9]), false)),
        &["lengths[1]", "1..=4"],
    );
    check(
        err(model.loss(&xs, Some(&[0, 1]), &tags, false)),
        &["lengths[0]"],
    );
    let float_ids = xs.to_dtype(DType::F32).unwrap();
    check(
        err(model.forward(&float_ids, None, false)),
        &["input", "u32"],
    );
    let rank1 = Tensor::new(&[1u32, 2], &dev).unwrap();
    check(err(model.forward(&rank1, None, false)), &["input", "[2]"]);
    let oov = Tensor::new(&[[1u32, 2, 3, 4], [1, 5, 1, 1]], &dev).unwrap();
    check(
        err(model.forward(&oov, None, false)),
        &["input", "token id 5", "[1, 1]"],
    );
    let wrong_shape = token_input(3, 2, 3, 1);
    check(
        err(model.loss(&xs, None, &wrong_shape, false)),
        &["tags", "(2, 4)", "[2, 3]"],
    );
    let float_tags = tags.to_dtype(DType::F32).unwrap();
    check(
        err(model.loss(&xs, None, &float_tags, false)),
        &["tags", "u32", "F32"],
    );
    let big = Tensor::new(&[[0u32, 1, 2, 3], [0, 0, 0, 0]], &dev).unwrap();
    check(err(model.loss(&xs, None, &big, false)), &["tags", "tag 3"]);
    // ... but an invalid tag at a padded step is fine.
    model.loss(&xs, Some(&[3, 4]), &big, false).unwrap();
}

#[test]
fn config_validation_and_serde() {
    let ok = SequenceTaggerConfig::new(Input::tokens(5, 3), Mode::Lstm, 4, 3);
    ok.validate().unwrap();
    let cases = [
        (ok.clone().with_num_layers(0), "num_layers"),
        (ok.clone().with_rnn_dropout(1.0), "dropout"),
        (ok.clone().with_embedding_dropout(2.0), "embedding_dropout"),
        (ok.clone().with_output_dropout(-1.0), "output_dropout"),
        (ok.clone().with_proj_size(4), "proj_size"),
        (
            SequenceTaggerConfig::new(Input::tokens(5, 3), Mode::Gru, 4, 1),
            "num_tags",
        ),
        (
            SequenceTaggerConfig::new(Input::tokens_with_padding(5, 3, 9), Mode::Gru, 4, 3),
            "padding_idx",
        ),
    ];
    for (cfg, needle) in cases {
        let err = cfg.validate().unwrap_err().to_string();
        assert!(
            err.contains(needle) && err.contains(CONFIG),
            "{needle}: {err}"
        );
    }
    let json = serde_json::to_string(&ok.clone().with_output_dropout(0.5)).unwrap();
    let back: SequenceTaggerConfig = serde_json::from_str(&json).unwrap();
    assert_eq!(back, ok.clone().with_output_dropout(0.5));
    let minimal: SequenceTaggerConfig = serde_json::from_str(
        r#"{"input":{"kind":"tokens","vocab_size":5,"embedding_dim":3},"mode":"lstm","hidden_size":4,"num_tags":3}"#,
    )
    .unwrap();
    assert_eq!(minimal, ok);
    assert!(minimal.bidirectional);
}

#[test]
fn constrained_prediction_is_argmax_without_constraints_and_valid_with_them() {
    let input = Input::tokens_with_padding(7, 5, 0);
    let cfg = SequenceTaggerConfig::new(input.clone(), Mode::Lstm, 6, 5);
    let (_, model) = build(&cfg, 3);
    let xs = make_input(&input, 4, 6, 9);
    let lengths = [6, 1, 4, 3];
    let free = TransitionMask::unconstrained(5);
    assert_eq!(
        model
            .predict_constrained(&xs, Some(&lengths), &free)
            .unwrap(),
        model.predict(&xs, Some(&lengths)).unwrap()
    );
    // Tag 0 may only be followed by tag 1, and no sequence may end on tag 0.
    let mask = TransitionMask::from_fn(5, |a, b| match (a, b) {
        (Some(0), Some(next)) => next == 1,
        (Some(0), None) => false,
        _ => true,
    })
    .unwrap();
    for lengths in [None, Some(&lengths[..])] {
        let tags = model.predict_constrained(&xs, lengths, &mask).unwrap();
        let lens: Vec<usize> = tags.iter().map(Vec::len).collect();
        assert_eq!(lens, lengths.map_or(vec![6; 4], |l| l.to_vec()));
        assert!(tags.iter().all(|row| mask.is_valid(row)), "{tags:?}");
    }
    let e = model
        .predict_constrained(&xs, None, &TransitionMask::unconstrained(4))
        .unwrap_err()
        .to_string();
    assert!(e.contains("`mask` is over 4 tags"), "{e}");
}

/// The loss through the fused output op (the CPU default) equals the composed output layer and
/// cross-entropy, in value and in every parameter's gradient, with output dropout (both clones
/// draw the same mask) and padded steps whose tags are not tags; and, without dropout, the
/// cross-entropy of [`SequenceTagger::forward`]'s logits.
#[test]
fn fused_and_composed_losses_agree_with_every_gradient() {
    let mut rng = ChaCha8Rng::seed_from_u64(4);
    let (xs, lengths, tags) = tagging_batch(&mut rng, 5);
    let cfg = SequenceTaggerConfig {
        bidirectional: true,
        output_dropout: 0.3,
        ..SequenceTaggerConfig::new(Input::tokens(4, 5), Mode::Gru, 6, 4)
    };
    let (varmap, model) = build(&cfg, 3);
    let mut runs = Vec::new();
    for imp in [Implementation::Fused, Implementation::Composed] {
        let model = model.clone().with_loss_implementation(imp);
        let loss = model.loss(&xs, Some(&lengths), &tags, true).unwrap();
        let grads = loss.backward().unwrap();
        runs.push((
            loss.to_scalar::<f32>().unwrap(),
            grads_by_name(&varmap, &grads),
        ));
    }
    assert_fused_matches_composed(&runs[0], &runs[1], "tagger");
    let params = varmap.all_vars().len();
    assert_eq!(runs[0].1.len(), params, "every parameter gets a gradient");
    let loss = model.loss(&xs, Some(&lengths), &tags, false).unwrap();
    let logits = model.forward(&xs, Some(&lengths), false).unwrap();
    let mask = crate::common::length_mask(Some(&lengths), 5, 12, DType::U8, &Device::Cpu).unwrap();
    let want = crate::loss::masked_cross_entropy(&logits, &tags, Some(&mask)).unwrap();
    let (got, want) = (
        loss.to_scalar::<f32>().unwrap(),
        want.to_scalar::<f32>().unwrap(),
    );
    assert!((got - want).abs() < 1e-5, "{got} vs {want}");
}
