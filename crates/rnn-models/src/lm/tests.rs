//! Tests of [`LanguageModel`](super::LanguageModel).

use super::*;
use crate::test_util::{max_abs_diff, scalar};
use candle_core::{DType, Result, Tensor};
use rnn_core::{Implementation, Mode, RnnState};

use crate::common::Stochastic;
use crate::sampling::SamplingConfig;
use candle_core::{Device, Var};
use candle_nn::{AdamW, Optimizer, ParamsAdamW, VarMap};
use rnn_core::init::seeded_var_builder;

const DEV: Device = Device::Cpu;

fn build(cfg: &LanguageModelConfig, seed: u64) -> (VarMap, LanguageModel) {
    let varmap = VarMap::new();
    let lm = LanguageModel::new(cfg, seeded_var_builder(&varmap, seed, DType::F32, &DEV)).unwrap();
    (varmap, lm)
}

fn ids(rows: &[&[u32]]) -> Tensor {
    let t = rows[0].len();
    Tensor::from_vec(rows.concat(), (rows.len(), t), &DEV).unwrap()
}

fn err_of<T: std::fmt::Debug>(r: Result<T>) -> String {
    r.unwrap_err().to_string()
}

#[test]
fn shapes_for_every_mode_tied_and_untied() {
    for mode in Mode::ALL {
        for tie in [false, true] {
            let cfg = LanguageModelConfig::new(mode, 11, 6, 6)
                .with_num_layers(2)
                .with_tie_weights(tie)
                .with_dropout(0.2);
            let (varmap, lm) = build(&cfg, 1);
            let x = ids(&[&[1, 2, 3, 4], &[5, 6, 7, 8], &[0, 1, 2, 3]]);
            for train in [false, true] {
                let (logits, state) = lm.forward(&x, None, Some(&[4, 2, 3]), train).unwrap();
                assert_eq!(logits.dims(), &[3, 4, 11]);
                assert_eq!(state.h.dims(), &[2, 3, 6]);
                assert_eq!(state.c.is_some(), mode == Mode::Lstm);
            }
            let mut names: Vec<String> = varmap.data().lock().unwrap().keys().cloned().collect();
            names.sort();
            let non_rnn: Vec<&str> = names
                .iter()
                .filter(|n| !n.starts_with("rnn."))
                .map(|n| n.as_str())
                .collect();
            if tie {
                assert_eq!(non_rnn, ["decoder.bias", "embedding.weight"]);
            } else {
                assert_eq!(
                    non_rnn,
                    ["decoder.bias", "decoder.weight", "embedding.weight"]
                );
            }
            assert!(names.contains(&"rnn.weight_ih_l1".to_string()), "{names:?}");
            let (step_logits, _) = lm
                .step(&Tensor::new(&[1u32, 2], &DEV).unwrap(), None)
                .unwrap();
            assert_eq!(step_logits.dims(), &[2, 11]);
        }
    }
}

#[test]
fn tying_needs_equal_sizes_and_shares_the_tensor() {
    let cfg = LanguageModelConfig::new(Mode::Gru, 7, 4, 5).with_tie_weights(true);
    let e = err_of(cfg.validate());
    assert!(
        e.contains("tie_weights") && e.contains("embedding_dim=4"),
        "{e}"
    );
    let varmap = VarMap::new();
    let e = err_of(LanguageModel::new(
        &cfg,
        seeded_var_builder(&varmap, 0, DType::F32, &DEV),
    ));
    assert!(e.contains("tie_weights"), "{e}");

    let cfg = LanguageModelConfig::new(Mode::Gru, 7, 5, 5).with_tie_weights(true);
    let (varmap, lm) = build(&cfg, 3);
    assert_eq!(lm.decoder_weight().id(), lm.embedding_weight().id());
    // Inputs use ids 0..3 only, so rows 3..7 of the embedding get a gradient only through
    // the decoder (output layer).
    let x = ids(&[&[0, 1, 2, 0], &[2, 1, 0, 1]]);
    let y = ids(&[&[1, 2, 0, 1], &[1, 0, 1, 2]]);
    let (nll, _) = lm.loss(&x, &y, None, None, true).unwrap();
    let grads = nll.mean().unwrap().backward().unwrap();
    let data = varmap.data().lock().unwrap();
    let var: &Var = &data["embedding.weight"];
    let g = grads
        .get(var.as_tensor())
        .expect("embedding gets a gradient");
    let unused = g.narrow(0, 3, 4).unwrap().abs().unwrap().sum_all().unwrap();
    assert!(unused.to_scalar::<f32>().unwrap() > 0.0);
    assert!(!data.contains_key("decoder.weight"));
    assert!(grads.get(data["decoder.bias"].as_tensor()).is_some());
}

#[test]
fn log_prob_is_the_chain_rule_and_matches_loss() {
    for bos in [None, Some(0u32)] {
        let cfg = LanguageModelConfig::new(Mode::Lstm, 9, 5, 7)
            .with_num_layers(2)
            .with_bos_id(bos);
        let (_, lm) = build(&cfg, 5);
        let seq = [3u32, 1, 4, 1, 5, 8, 2, 6];
        let lp = lm.log_prob(&seq).unwrap();
        // Independently: log-softmax of the forward over the conditioning tokens.
        let (inputs, targets): (Vec<u32>, Vec<u32>) = match bos {
            Some(b) => ([&[b][..], &seq[..7]].concat(), seq.to_vec()),
            None => (seq[..7].to_vec(), seq[1..].to_vec()),
        };
        let (logits, _) = lm.forward(&ids(&[&inputs]), None, None, false).unwrap();
        let logp = candle_nn::ops::log_softmax(&logits.get(0).unwrap(), 1)
            .unwrap()
            .to_vec2::<f32>()
            .unwrap();
        let manual: f64 = targets
            .iter()
            .enumerate()
            .map(|(t, &y)| logp[t][y as usize] as f64)
            .sum();
        assert!((lp - manual).abs() < 1e-4, "{lp} vs {manual}");
        let (nll, _) = lm
            .loss(&ids(&[&inputs]), &ids(&[&targets]), None, None, false)
            .unwrap();
        let nll = nll.sum.to_scalar::<f32>().unwrap() as f64;
        assert!((lp + nll).abs() < 1e-4, "{lp} vs -{nll}");
        // A batch of different lengths gives the same values as one at a time.
        let seqs: Vec<Vec<u32>> = vec![seq.to_vec(), vec![2, 7], vec![4], seq[..5].to_vec()];
        let batch = lm.log_prob_batch(&seqs).unwrap();
        for (s, b) in seqs.iter().zip(&batch) {
            let single = lm.log_prob(s).unwrap();
            assert!((single - b).abs() < 1e-4, "{s:?}: {single} vs {b}");
        }
        if bos.is_none() {
            assert_eq!(batch[2], 0.0); // one token, nothing scored
        } else {
            assert!(batch[2] < 0.0);
        }
    }
}

/// The loss through the fused output op equals the composed decoder + cross-entropy, in
/// value and in the gradient of every parameter, with and without tying and padding.
#[test]
fn fused_and_composed_losses_agree_with_every_gradient() {
    for tie in [false, true] {
        let cfg = LanguageModelConfig::new(Mode::Lstm, 11, 6, 6)
            .with_num_layers(2)
            .with_tie_weights(tie);
        let (varmap, lm) = build(&cfg, 21);
        let inputs = ids(&[&[1, 2, 3, 4, 5], &[6, 7, 8, 9, 10]]);
        let targets = ids(&[&[2, 3, 4, 5, 6], &[7, 8, 0, 0, 0]]);
        let lengths = [5, 2];
        let mut runs = Vec::new();
        for imp in [Implementation::Fused, Implementation::Composed] {
            let lm = lm.clone().with_loss_implementation(imp);
            let (nll, _) = lm
                .loss(&inputs, &targets, None, Some(&lengths), false)
                .unwrap();
            let grads = nll.mean().unwrap().backward().unwrap();
            let mut g: Vec<(String, Tensor)> = varmap
                .data()
                .lock()
                .unwrap()
                .iter()
                .map(|(name, v)| (name.clone(), grads.get(v).unwrap().clone()))
                .collect();
            g.sort_by(|a, b| a.0.cmp(&b.0));
            assert_eq!(nll.count.to_scalar::<f32>().unwrap(), 7.0);
            runs.push((nll.sum, g));
        }
        let (fused, composed) = (&runs[0], &runs[1]);
        let d = max_abs_diff(&fused.0, &composed.0);
        assert!(d < 1e-5, "tie={tie}: loss differs by {d}");
        for ((name, a), (_, b)) in fused.1.iter().zip(&composed.1) {
            let d = max_abs_diff(a, b);
            assert!(d < 1e-5, "tie={tie}: gradient of {name} differs by {d}");
        }
    }
}

#[test]
fn windowed_perplexity_with_carried_state_equals_one_long_forward() {
    let cfg = LanguageModelConfig::new(Mode::Gru, 8, 6, 10).with_num_layers(2);
    let (_, lm) = build(&cfg, 9);
    let stream: Vec<u32> = (0..61u32).map(|i| (i * 7 + i / 3) % 8).collect();
    // One long forward, batch 1.
    let inputs = ids(&[&stream[..60]]);
    let targets = ids(&[&stream[1..]]);
    let (nll, _) = lm.loss(&inputs, &targets, None, None, false).unwrap();
    let long = (nll.sum.to_scalar::<f32>().unwrap() as f64 / 60.0).exp();
    for window in [1, 7, 60, 100] {
        let ppl = lm.perplexity(&stream, 1, window).unwrap();
        assert!(
            (ppl - long).abs() / long < 1e-4,
            "window {window}: {ppl} vs {long}"
        );
    }
    // Three rows: each row is its own stream (first 60 tokens, 20 per row).
    let (total, count) = lm.stream_nll(&stream, 3, 6).unwrap();
    assert_eq!(count, 3 * 19);
    let per_row: f64 = stream[..60]
        .chunks(20)
        .map(|row| -lm.log_prob(row).unwrap())
        .sum();
    assert!((total - per_row).abs() < 1e-3, "{total} vs {per_row}");
    let e = err_of(lm.perplexity(&stream, 40, 5));
    assert!(e.contains("token_stream"), "{e}");
}

#[test]
fn step_state_reuse_matches_rerunning_the_prefix() {
    for mode in Mode::ALL {
        let cfg = LanguageModelConfig::new(mode, 10, 4, 6).with_num_layers(2);
        let (_, lm) = build(&cfg, 2);
        let seq = [1u32, 5, 2, 9, 3, 3, 7];
        let (full, _) = lm.forward(&ids(&[&seq]), None, None, false).unwrap();
        let (_, mut state) = lm.forward(&ids(&[&seq[..3]]), None, None, false).unwrap();
        for (t, &tok) in seq.iter().enumerate().skip(3) {
            let (logits, next) = lm
                .step(&Tensor::new(&[tok], &DEV).unwrap(), Some(&state))
                .unwrap();
            let expected = full.get(0).unwrap().get(t).unwrap().unsqueeze(0).unwrap();
            assert!(max_abs_diff(&logits, &expected) < 1e-5, "{mode} t={t}");
            state = next;
        }
    }
}

#[test]
fn generation_is_seeded_greedy_deterministic_and_stops_at_eos() {
    let cfg = LanguageModelConfig::new(Mode::Lstm, 12, 6, 8)
        .with_bos_id(Some(0))
        .with_eos_id(Some(1));
    let (_, lm) = build(&cfg, 4);
    let greedy = GenerateConfig {
        sampling: SamplingConfig::greedy(),
        max_len: 15,
        stop_at_eos: false,
    };
    let a = lm.generate(&[2, 3], &greedy, 1).unwrap();
    assert_eq!(a, lm.generate(&[2, 3], &greedy, 99).unwrap());
    assert_eq!(a.len(), 15);
    // Greedy generation = the argmax chain recomputed from scratch each step.
    let mut seq = vec![2u32, 3];
    for &tok in &a {
        let (logits, _) = lm.forward(&ids(&[&seq]), None, None, false).unwrap();
        let last = logits.get(0).unwrap().get(seq.len() - 1).unwrap();
        assert_eq!(crate::sampling::argmax_rows(&last).unwrap()[0], tok);
        seq.push(tok);
    }
    let sample = GenerateConfig {
        sampling: SamplingConfig::with_temperature(1.5),
        max_len: 30,
        stop_at_eos: false,
    };
    let s1 = lm.generate(&[], &sample, 7).unwrap();
    assert_eq!(s1, lm.generate(&[], &sample, 7).unwrap());
    assert_ne!(s1, lm.generate(&[], &sample, 8).unwrap());
    // Stops right after eos: find a seed whose draw contains eos, then check the cut.
    let stopping = GenerateConfig {
        stop_at_eos: true,
        ..sample
    };
    let mut stopped = false;
    for seed in 0..50 {
        let free = lm.generate(&[2], &sample, seed).unwrap();
        let cut = lm.generate(&[2], &stopping, seed).unwrap();
        match free.iter().position(|&t| t == 1) {
            Some(p) => {
                assert_eq!(cut, free[..=p].to_vec());
                stopped = true;
            }
            None => assert_eq!(cut, free),
        }
    }
    assert!(stopped, "no sample drew eos");
    // Errors: empty prompt without bos, stop_at_eos without eos.
    let cfg = LanguageModelConfig::new(Mode::Gru, 12, 6, 8);
    let (_, plain) = build(&cfg, 4);
    let e = err_of(plain.generate(&[], &greedy, 0));
    assert!(e.contains("bos_id"), "{e}");
    let e = err_of(plain.generate(&[1], &GenerateConfig::default(), 0));
    assert!(e.contains("eos_id"), "{e}");
    let e = err_of(plain.generate(&[12], &greedy, 0));
    assert!(e.contains("prompt[0]"), "{e}");
}

fn pattern(len: usize, offset: usize) -> Vec<u32> {
    // Period 4 over {0, 1, 2}: after a 0 the next token depends on the one before it.
    const P: [u32; 4] = [0, 1, 0, 2];
    (0..len).map(|i| P[(i + offset) % 4]).collect()
}

#[test]
fn learns_a_repeating_pattern() {
    let cfg = LanguageModelConfig::new(Mode::Lstm, 5, 8, 16)
        .with_init_range(Some(0.1))
        .with_tie_weights(false);
    let (varmap, lm) = build(&cfg, 11);
    let valid = pattern(400, 1);
    let untrained = lm.perplexity(&valid, 2, 20).unwrap();
    assert!(untrained > 2.0, "untrained perplexity {untrained}");

    let train = pattern(8 * 41, 0);
    let (batch, window) = (8, 10);
    let rows: Vec<Vec<u32>> = train.chunks_exact(41).map(|r| r.to_vec()).collect();
    let mut opt = AdamW::new(
        varmap.all_vars(),
        ParamsAdamW {
            lr: 0.03,
            ..Default::default()
        },
    )
    .unwrap();
    let start = std::time::Instant::now();
    let mut ppl = untrained;
    let mut epochs = 0;
    for epoch in 0..40 {
        epochs = epoch + 1;
        let mut state: Option<RnnState> = None;
        for s in (0..40).step_by(window) {
            let x: Vec<u32> = rows
                .iter()
                .flat_map(|r| r[s..s + window].to_vec())
                .collect();
            let y: Vec<u32> = rows
                .iter()
                .flat_map(|r| r[s + 1..s + window + 1].to_vec())
                .collect();
            let x = Tensor::from_vec(x, (batch, window), &DEV).unwrap();
            let y = Tensor::from_vec(y, (batch, window), &DEV).unwrap();
            let (nll, next) = lm.loss(&x, &y, state.as_ref(), None, true).unwrap();
            opt.backward_step(&nll.mean().unwrap()).unwrap();
            state = Some(next.detach());
        }
        ppl = lm.perplexity(&valid, 2, 20).unwrap();
        if ppl < 1.1 {
            break;
        }
    }
    eprintln!(
        "pattern LM: untrained {untrained:.3}, validation perplexity {ppl:.4} after {epochs} epochs, {:?}",
        start.elapsed()
    );
    assert!(
        ppl < 1.2,
        "validation perplexity {ppl} after {:?}",
        start.elapsed()
    );
}

#[test]
fn save_load_round_trip_gives_identical_logits() {
    let cfg = LanguageModelConfig::new(Mode::Lstm, 9, 6, 6)
        .with_tie_weights(true)
        .with_num_layers(2);
    let (varmap, lm) = build(&cfg, 21);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("model.safetensors");
    varmap.save(&path).unwrap();
    let (mut other_map, other) = build(&cfg, 22);
    let x = ids(&[&[1, 2, 3, 4, 5], &[8, 7, 6, 5, 4]]);
    let (a, _) = lm.forward(&x, None, None, false).unwrap();
    let (before, _) = other.forward(&x, None, None, false).unwrap();
    assert!(max_abs_diff(&a, &before) > 1e-3);
    other_map.load(&path).unwrap();
    let (b, _) = other.forward(&x, None, None, false).unwrap();
    assert_eq!(max_abs_diff(&a, &b), 0.0);
}

#[test]
fn errors_name_the_argument() {
    let cfg = LanguageModelConfig::new(Mode::Gru, 6, 4, 4);
    let (_, lm) = build(&cfg, 0);
    let x = ids(&[&[1, 2, 3], &[3, 4, 5]]);
    let float = x.to_dtype(DType::F32).unwrap();
    let e = err_of(lm.forward(&float, None, None, false));
    assert!(e.contains("`ids`") && e.contains("u32"), "{e}");
    let flat = Tensor::new(&[1u32, 2, 3], &DEV).unwrap();
    let e = err_of(lm.forward(&flat, None, None, false));
    assert!(e.contains("`ids`") && e.contains("(batch, seq)"), "{e}");
    let e = err_of(lm.forward(&ids(&[&[1, 6, 2]]), None, None, false));
    assert!(
        e.contains("ids[0, 1]") && e.contains("vocab_size = 6"),
        "{e}"
    );
    let e = err_of(lm.forward(&x, None, Some(&[3]), false));
    assert!(e.contains("lengths"), "{e}");
    let e = err_of(lm.forward(&x, None, Some(&[3, 4]), false));
    assert!(e.contains("lengths[1]"), "{e}");
    let state = lm.zero_state(3).unwrap();
    let e = err_of(lm.forward(&x, Some(&state), None, false));
    assert!(e.contains("state.h"), "{e}");
    let bad_targets = ids(&[&[1, 2, 9], &[3, 4, 5]]);
    let e = err_of(lm.loss(&x, &bad_targets, None, None, false));
    assert!(e.contains("targets[0, 2]"), "{e}");
    let e = err_of(lm.loss(&ids(&[&[1, 2, 3], &[3, 4, 7]]), &x, None, None, false));
    assert!(e.contains("`inputs[1, 2]`"), "{e}");
    // ... unless the position is padding.
    lm.loss(&x, &bad_targets, None, Some(&[2, 3]), false)
        .unwrap();
    let e = err_of(lm.loss(&x, &ids(&[&[1, 2]]), None, None, false));
    assert!(e.contains("`targets`"), "{e}");
    let e = err_of(lm.log_prob(&[]));
    assert!(e.contains("empty"), "{e}");
    let e = err_of(lm.log_prob(&[1, 7]));
    assert!(e.contains("sequences[0][1]"), "{e}");

    let bad = [
        (LanguageModelConfig::new(Mode::Gru, 0, 4, 4), "vocab_size"),
        (
            LanguageModelConfig::new(Mode::Gru, 6, 0, 4),
            "embedding_dim",
        ),
        (LanguageModelConfig::new(Mode::Gru, 6, 4, 0), "hidden_size"),
        (cfg.clone().with_num_layers(0), "num_layers"),
        (cfg.clone().with_dropout(1.0), "dropout"),
        (cfg.clone().with_init_range(Some(-1.0)), "init_range"),
        (cfg.clone().with_eos_id(Some(6)), "eos_id"),
        (cfg.clone().with_bos_id(Some(9)), "bos_id"),
        (cfg.clone().with_pad_id(Some(6)), "pad_id"),
    ];
    for (c, field) in bad {
        let e = err_of(c.validate());
        assert!(e.contains(field), "{field}: {e}");
    }
}

#[test]
fn dropout_is_seeded_and_counters_restore() {
    let cfg = LanguageModelConfig::new(Mode::Lstm, 7, 5, 5)
        .with_num_layers(2)
        .with_dropout(0.5);
    let (_, mut a) = build(&cfg, 1);
    let (_, mut b) = build(&cfg, 1);
    a.set_seed(3);
    b.set_seed(3);
    let x = ids(&[&[1, 2, 3, 4]]);
    let (la, _) = a.forward(&x, None, None, true).unwrap();
    let (lb, _) = b.forward(&x, None, None, true).unwrap();
    assert_eq!(max_abs_diff(&la, &lb), 0.0);
    let counters = a.rng_counters();
    assert_eq!(counters, vec![2, 1]);
    let (la2, _) = a.forward(&x, None, None, true).unwrap();
    assert!(max_abs_diff(&la, &la2) > 0.0);
    b.set_rng_counters(&counters).unwrap();
    let (lb2, _) = b.forward(&x, None, None, true).unwrap();
    assert_eq!(max_abs_diff(&la2, &lb2), 0.0);
    assert!(b.set_rng_counters(&[1]).is_err());
    // Eval is deterministic and dropout-free.
    let (e1, _) = a.forward(&x, None, None, false).unwrap();
    let (e2, _) = b.forward(&x, None, None, false).unwrap();
    assert_eq!(max_abs_diff(&e1, &e2), 0.0);
}

#[test]
fn config_serde_defaults() {
    let cfg: LanguageModelConfig =
        serde_json::from_str(r#"{"vocab_size":10,"embedding_dim":4,"hidden_size":4}"#).unwrap();
    assert_eq!(cfg, LanguageModelConfig::new(Mode::Lstm, 10, 4, 4));
    let back: LanguageModelConfig =
        serde_json::from_str(&serde_json::to_string(&cfg).unwrap()).unwrap();
    assert_eq!(back, cfg);
    let g: GenerateConfig = serde_json::from_str("{}").unwrap();
    assert_eq!(g, GenerateConfig::default());
}

/// AWD-LSTM's set (variational, recurrent, weight and embedding dropout, zoneout): every
/// parameter gets a gradient, training forwards draw fresh masks, restoring the counters replays
/// them, evaluation is deterministic, and a model without the options keeps two counters.
#[test]
fn mask_options_train_replay_and_keep_old_counters() {
    let masks = crate::masks::MaskOptions {
        variational_dropout: 0.3,
        recurrent_dropout: 0.25,
        zoneout_h: 0.1,
        zoneout_c: 0.2,
        weight_drop: 0.5,
        embedding_dropout: 0.2,
    };
    let cfg = LanguageModelConfig::new(Mode::Lstm, 13, 6, 6)
        .with_num_layers(2)
        .with_tie_weights(true)
        .with_masks(masks);
    let json = serde_json::to_value(&cfg).unwrap();
    assert_eq!(json["weight_drop"], 0.5);
    let back: LanguageModelConfig = serde_json::from_value(json).unwrap();
    assert_eq!(back, cfg);
    let (varmap, mut lm) = build(&cfg, 3);
    lm.set_seed(11);
    let x = ids(&[&[1, 2, 3, 4], &[5, 6, 7, 8]]);
    let y = ids(&[&[2, 3, 4, 5], &[6, 7, 8, 9]]);
    let loss = |train| {
        lm.loss(&x, &y, None, None, train)
            .unwrap()
            .0
            .mean()
            .unwrap()
    };
    let l1 = loss(true);
    let grads = l1.backward().unwrap();
    for (name, var) in varmap.data().lock().unwrap().iter() {
        assert!(
            grads.get(var.as_tensor()).is_some(),
            "no gradient for {name}"
        );
    }
    let counters = lm.rng_counters();
    assert_eq!(counters.len(), 3);
    assert_eq!(
        counters[1], 1,
        "one mask draw per training forward: {counters:?}"
    );
    let l2 = loss(true);
    assert_ne!(scalar(&l1), scalar(&l2));
    lm.set_rng_counters(&counters).unwrap();
    assert_eq!(scalar(&loss(true)), scalar(&l2));
    assert_eq!(scalar(&loss(false)), scalar(&loss(false)));
    assert!(lm.set_rng_counters(&[0, 0]).is_err());

    let plain = LanguageModelConfig::new(Mode::Lstm, 13, 6, 6);
    // A config written before the options reads with them off, and writes as it did.
    let old = r#"{"vocab_size":13,"embedding_dim":6,"hidden_size":6}"#;
    let read: LanguageModelConfig = serde_json::from_str(old).unwrap();
    assert_eq!(read, plain);
    let written = serde_json::to_string(&plain).unwrap();
    for key in [
        "zoneout",
        "weight_drop",
        "recurrent_dropout",
        "embedding_dropout",
        "variational",
    ] {
        assert!(!written.contains(key), "{written}");
    }
    let (_, plain) = build(&plain, 3);
    assert_eq!(plain.rng_counters().len(), 2);
    let bad = cfg.clone().with_masks(crate::masks::MaskOptions {
        embedding_dropout: 1.0,
        ..masks
    });
    assert!(err_of(LanguageModel::new(
        &bad,
        seeded_var_builder(&VarMap::new(), 0, DType::F32, &DEV)
    ))
    .contains("embedding_dropout"));
}

#[test]
fn layer_norm_config_reaches_the_rnn_and_old_configs_load_without_it() {
    // A config saved before the field existed: layer norm off.
    let old: LanguageModelConfig = serde_json::from_str(
        r#"{"vocab_size":7,"embedding_dim":4,"hidden_size":5,"num_layers":1,"mode":"gru"}"#,
    )
    .unwrap();
    assert!(!old.layer_norm);
    assert!(!old.rnn_config().layer_norm);
    let cfg = LanguageModelConfig::new(Mode::Lstm, 7, 4, 5).with_layer_norm(true);
    let back: LanguageModelConfig =
        serde_json::from_str(&serde_json::to_string(&cfg).unwrap()).unwrap();
    assert_eq!(back, cfg);
    let (varmap, lm) = build(&cfg, 3);
    assert!(lm.rnn().config().layer_norm);
    let data = varmap.data().lock().unwrap();
    assert!(
        data.contains_key("rnn.layernorm_c_weight_l0"),
        "{:?}",
        data.keys()
    );
    drop(data);
    // And the model runs with it.
    let (logits, _) = lm.forward(&ids(&[&[1, 2, 3]]), None, None, true).unwrap();
    assert_eq!(logits.dims(), &[1, 3, 7]);
}
