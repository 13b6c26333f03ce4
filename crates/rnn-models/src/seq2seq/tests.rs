//! Tests of [`Seq2Seq`](super::Seq2Seq).

use super::*;
use crate::test_util::{adamw, assert_fused_matches_composed, grads_by_name, max_abs_diff, scalar};
use candle_core::{DType, Result, Tensor, D};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rnn_core::{Implementation, Mode};

use crate::common::Stochastic;
use candle_core::Device;
use candle_nn::{Optimizer, VarMap};
use rnn_core::init::seeded_var_builder;
use std::collections::HashSet;
use std::time::Instant;

fn build(cfg: &Seq2SeqConfig, seed: u64) -> (VarMap, Seq2Seq) {
    let varmap = VarMap::new();
    let model = Seq2Seq::new(
        cfg,
        seeded_var_builder(&varmap, seed, DType::F32, &Device::Cpu),
    )
    .unwrap();
    (varmap, model)
}

fn small(mode: Mode, attention: Attention, bidirectional: bool) -> Seq2SeqConfig {
    Seq2SeqConfig {
        embedding_dim: 6,
        hidden_size: 8,
        mode,
        attention,
        bidirectional_encoder: bidirectional,
        ..Seq2SeqConfig::new(9, 10)
    }
}

/// Right-pads `seqs` with 0 into a `(B, max_len)` u32 tensor.
fn pad(seqs: &[Vec<u32>]) -> (Tensor, Vec<usize>) {
    let max = seqs.iter().map(Vec::len).max().unwrap();
    let flat: Vec<u32> = seqs
        .iter()
        .flat_map(|s| s.iter().copied().chain(std::iter::repeat(0)).take(max))
        .collect();
    (
        Tensor::from_vec(flat, (seqs.len(), max), &Device::Cpu).unwrap(),
        seqs.iter().map(Vec::len).collect(),
    )
}

/// Three sentences: source lengths 5, 3, 1; gold targets (with eos = 2) of lengths 4, 2, 3.
fn batch() -> (Tensor, Vec<usize>, Tensor, Vec<usize>) {
    let (src, sl) = pad(&[vec![3, 4, 5, 6, 7], vec![8, 3, 4], vec![5]]);
    let (tgt, tl) = pad(&[vec![7, 6, 5, 2], vec![4, 2], vec![9, 3, 2]]);
    (src, sl, tgt, tl)
}

#[test]
fn attention_parses_and_config_validates() {
    for a in Attention::ALL {
        assert_eq!(a.as_str().parse::<Attention>().unwrap(), a);
        assert_eq!(a.to_string(), a.as_str());
        let json = serde_json::to_string(&a).unwrap();
        assert_eq!(json, format!("\"{}\"", a.as_str()));
    }
    assert_eq!(
        "Bahdanau".parse::<Attention>().unwrap(),
        Attention::Additive
    );
    let err = "cosine".parse::<Attention>().unwrap_err().to_string();
    assert!(
        err.contains("cosine") && err.contains("none|additive|dot|general"),
        "{err}"
    );

    let cfg: Seq2SeqConfig =
        serde_json::from_str(r#"{"src_vocab": 9, "tgt_vocab": 10, "attention": "additive"}"#)
            .unwrap();
    assert_eq!(
        cfg,
        Seq2SeqConfig {
            attention: Attention::Additive,
            ..Seq2SeqConfig::new(9, 10)
        }
    );
    let back: Seq2SeqConfig = serde_json::from_str(&serde_json::to_string(&cfg).unwrap()).unwrap();
    assert_eq!(back, cfg);
    cfg.validate().unwrap();

    let ok = small(Mode::Lstm, Attention::General, false);
    let cases = [
        (
            Seq2SeqConfig {
                src_vocab: 0,
                ..ok.clone()
            },
            "src_vocab",
        ),
        (
            Seq2SeqConfig {
                hidden_size: 0,
                ..ok.clone()
            },
            "hidden_size",
        ),
        (
            Seq2SeqConfig {
                decoder_layers: 0,
                ..ok.clone()
            },
            "decoder_layers",
        ),
        (
            Seq2SeqConfig {
                dropout: 1.0,
                ..ok.clone()
            },
            "dropout",
        ),
        (
            Seq2SeqConfig {
                eos_id: 10,
                ..ok.clone()
            },
            "eos_id",
        ),
        (
            Seq2SeqConfig {
                pad_id: 9,
                ..ok.clone()
            },
            "pad_id",
        ),
        (
            Seq2SeqConfig {
                bos_id: 2,
                ..ok.clone()
            },
            "bos_id and eos_id",
        ),
        (small(Mode::Lstm, Attention::Dot, true), "'dot'"),
        (
            Seq2SeqConfig {
                input_feeding: true,
                ..small(Mode::Gru, Attention::None, false)
            },
            "input_feeding",
        ),
        (
            Seq2SeqConfig {
                layer_norm: true,
                ..small(Mode::RnnTanh, Attention::General, false)
            },
            "layer_norm",
        ),
    ];
    for (cfg, needle) in cases {
        let err = cfg.validate().unwrap_err().to_string();
        assert!(err.contains(needle), "{needle}: {err}");
        let varmap = VarMap::new();
        assert!(Seq2Seq::new(
            &cfg,
            seeded_var_builder(&varmap, 0, DType::F32, &Device::Cpu)
        )
        .is_err());
    }
}

/// Every attention kind, bidirectional on/off, LSTM and GRU, and unequal layer counts with
/// input feeding: output shapes, a finite loss and a gradient for every parameter.
#[test]
fn shapes_and_gradients_for_every_variant() {
    let (src, sl, tgt, tl) = batch();
    let mut cfgs = Vec::new();
    for mode in [Mode::Lstm, Mode::Gru] {
        for bidirectional in [false, true] {
            for attention in Attention::ALL {
                if attention == Attention::Dot && bidirectional {
                    continue; // rejected by validate (tested above)
                }
                cfgs.push(small(mode, attention, bidirectional));
            }
        }
    }
    cfgs.push(Seq2SeqConfig {
        encoder_layers: 2,
        decoder_layers: 3,
        input_feeding: true,
        ..small(Mode::Lstm, Attention::Additive, true)
    });
    cfgs.push(Seq2SeqConfig {
        encoder_layers: 3,
        decoder_layers: 2,
        input_feeding: true,
        ..small(Mode::RnnTanh, Attention::Dot, false)
    });
    cfgs.push(Seq2SeqConfig {
        encoder_layers: 2,
        decoder_layers: 2,
        dropout: 0.2,
        ..small(Mode::Gru, Attention::General, true)
    });
    for mode in [Mode::Lstm, Mode::Gru] {
        cfgs.push(Seq2SeqConfig {
            decoder_layers: 2,
            input_feeding: true,
            layer_norm: true,
            ..small(mode, Attention::Additive, true)
        });
    }
    for cfg in cfgs {
        let label = format!("{cfg:?}");
        let (varmap, model) = build(&cfg, 3);
        let tgt_in = model.shift_right(&tgt).unwrap();
        let out = model.forward(&src, &sl, &tgt_in, false, 1.0, 0).unwrap();
        assert_eq!(out.logits.dims(), &[3, 4, 10], "{label}");
        match cfg.attention {
            Attention::None => assert!(out.attention.is_none(), "{label}"),
            _ => assert_eq!(out.attention.unwrap().dims(), &[3, 4, 5], "{label}"),
        }
        for ratio in [1.0, 0.5] {
            let loss = model.loss(&src, &sl, &tgt, &tl, true, ratio).unwrap();
            assert_eq!(loss.rank(), 0);
            assert!(scalar(&loss).is_finite(), "{label}");
            let grads = loss.backward().unwrap();
            let data = varmap.data().lock().unwrap();
            for (name, var) in data.iter() {
                let g = grads.get(var.as_tensor());
                assert!(g.is_some(), "{label}: no gradient for {name}");
            }
        }
        let hyps = model.greedy(&src, &sl, 6).unwrap();
        assert_eq!(hyps.len(), 3);
        for (h, &len) in hyps.iter().zip(&sl) {
            assert!(h.tokens.len() <= 6);
            let steps = h.tokens.len() + usize::from(h.finished);
            if cfg.attention == Attention::None {
                assert!(h.attention.is_empty());
            } else {
                assert_eq!(h.attention.len(), steps, "{label}");
                assert!(h.attention.iter().all(|r| r.len() == len), "{label}");
            }
        }
    }
}

#[test]
fn parameter_names() {
    let cfg = Seq2SeqConfig {
        encoder_layers: 2,
        ..small(Mode::Lstm, Attention::Additive, true)
    };
    let (varmap, _) = build(&cfg, 0);
    let data = varmap.data().lock().unwrap();
    let shape = |n: &str| {
        data.get(n)
            .unwrap_or_else(|| panic!("missing {n}"))
            .as_tensor()
            .dims()
            .to_vec()
    };
    assert_eq!(shape("encoder.embedding.weight"), [9, 6]);
    assert_eq!(shape("encoder.rnn.weight_ih_l0"), [32, 6]);
    assert_eq!(shape("encoder.rnn.weight_ih_l1_reverse"), [32, 16]);
    assert_eq!(shape("bridge.h.weight"), [8, 16]);
    assert_eq!(shape("bridge.c.bias"), [8]);
    assert_eq!(shape("decoder.embedding.weight"), [10, 6]);
    assert_eq!(shape("decoder.rnn.weight_hh_l0"), [32, 8]);
    assert_eq!(shape("attention.query.weight"), [8, 8]);
    assert_eq!(shape("attention.key.weight"), [8, 16]);
    assert_eq!(shape("attention.key.bias"), [8]);
    assert_eq!(shape("attention.v.weight"), [1, 8]);
    assert_eq!(shape("decoder.combine.weight"), [8, 24]);
    assert_eq!(shape("decoder.output.weight"), [10, 8]);
    assert_eq!(shape("decoder.output.bias"), [10]);
    drop(data);
    let (varmap, _) = build(&small(Mode::Gru, Attention::General, false), 0);
    let data = varmap.data().lock().unwrap();
    assert_eq!(data.get("attention.key.weight").unwrap().dims(), [8, 8]);
    assert!(!data.keys().any(|k| k.starts_with("bridge")));
    assert!(!data.keys().any(|k| k.contains("layernorm")));
    drop(data);
    // Layer norm: PyTorch-style names per layer and direction on both sides (LSTM: x, h and c).
    let cfg = Seq2SeqConfig {
        layer_norm: true,
        ..small(Mode::Lstm, Attention::General, true)
    };
    let (varmap, _) = build(&cfg, 0);
    let data = varmap.data().lock().unwrap();
    for (name, dims) in [
        ("encoder.rnn.layernorm_x_weight_l0", [32]),
        ("encoder.rnn.layernorm_h_bias_l0_reverse", [32]),
        ("encoder.rnn.layernorm_c_weight_l0_reverse", [8]),
        ("decoder.rnn.layernorm_x_bias_l0", [32]),
        ("decoder.rnn.layernorm_c_bias_l0", [8]),
    ] {
        let t = data.get(name).unwrap_or_else(|| panic!("missing {name}"));
        assert_eq!(t.dims(), dims, "{name}");
    }
    assert_eq!(
        data.keys().filter(|k| k.contains("layernorm")).count(),
        3 * 6,
        "{:?}",
        data.keys()
    );
}

/// The whole-sequence fast path equals the step-by-step decoder.
#[test]
fn fast_path_equals_step_by_step() {
    let (src, sl, tgt, _) = batch();
    for cfg in [
        small(Mode::Lstm, Attention::Additive, true),
        Seq2SeqConfig {
            decoder_layers: 2,
            ..small(Mode::Gru, Attention::General, false)
        },
        small(Mode::RnnRelu, Attention::Dot, false),
        small(Mode::Lstm, Attention::None, true),
        Seq2SeqConfig {
            layer_norm: true,
            ..small(Mode::Lstm, Attention::General, true)
        },
        Seq2SeqConfig {
            decoder_layers: 2,
            layer_norm: true,
            ..small(Mode::Gru, Attention::Dot, false)
        },
    ] {
        let (_, model) = build(&cfg, 5);
        let tgt_in = model.shift_right(&tgt).unwrap();
        let fast = model
            .forward_impl(&src, &sl, &tgt_in, false, 1.0, 0, false)
            .unwrap();
        let steps = model
            .forward_impl(&src, &sl, &tgt_in, false, 1.0, 0, true)
            .unwrap();
        let d = max_abs_diff(&fast.logits, &steps.logits);
        assert!(d < 1e-5, "{cfg:?}: {d}");
        if let (Some(a), Some(b)) = (&fast.attention, &steps.attention) {
            assert!(max_abs_diff(a, b) < 1e-6);
        }
    }
}

#[test]
fn teacher_forcing_is_seeded_and_ratio_zero_is_greedy() {
    let (src, sl, tgt, _) = batch();
    let cfg = Seq2SeqConfig {
        input_feeding: true,
        ..small(Mode::Gru, Attention::General, true)
    };
    let (_, model) = build(&cfg, 11);
    let tgt_in = model.shift_right(&tgt).unwrap();
    let a = model.forward(&src, &sl, &tgt_in, false, 0.5, 42).unwrap();
    let b = model.forward(&src, &sl, &tgt_in, false, 0.5, 42).unwrap();
    assert_eq!(max_abs_diff(&a.logits, &b.logits), 0.0);
    // Free running (ratio 0): every step reads the previous argmax, i.e. greedy decoding.
    let free = model.forward(&src, &sl, &tgt_in, false, 0.0, 1).unwrap();
    let predicted = free
        .logits
        .argmax(D::Minus1)
        .unwrap()
        .to_vec2::<u32>()
        .unwrap();
    let greedy = model.greedy(&src, &sl, 4).unwrap();
    for (row, h) in predicted.iter().zip(&greedy) {
        let n = h.tokens.len();
        assert_eq!(&row[..n], &h.tokens[..], "{row:?} vs {h:?}");
        if h.finished && n < 4 {
            assert_eq!(row[n], cfg.eos_id);
        }
    }
    let gold = model.forward(&src, &sl, &tgt_in, false, 1.0, 1).unwrap();
    assert!(max_abs_diff(&gold.logits, &free.logits) > 1e-4);
}

/// Padded source positions change neither logits nor loss; attention is exactly 0 there.
#[test]
fn padding_is_masked() {
    let (src, sl, tgt, tl) = batch();
    // Same valid prefixes, different ids in the padding.
    let (src2, _) = pad(&[
        vec![3, 4, 5, 6, 7],
        vec![8, 3, 4, 7, 7],
        vec![5, 1, 8, 2, 3],
    ]);
    for cfg in [
        small(Mode::Lstm, Attention::Additive, true),
        small(Mode::Gru, Attention::Dot, false),
        small(Mode::Gru, Attention::General, true),
    ] {
        let (_, model) = build(&cfg, 2);
        let tgt_in = model.shift_right(&tgt).unwrap();
        let a = model.forward(&src, &sl, &tgt_in, false, 1.0, 0).unwrap();
        let b = model.forward(&src2, &sl, &tgt_in, false, 1.0, 0).unwrap();
        assert_eq!(max_abs_diff(&a.logits, &b.logits), 0.0, "{cfg:?}");
        let la = scalar(&model.loss(&src, &sl, &tgt, &tl, false, 1.0).unwrap());
        let lb = scalar(&model.loss(&src2, &sl, &tgt, &tl, false, 1.0).unwrap());
        assert_eq!(la, lb);
        let att = a.attention.unwrap().to_vec3::<f32>().unwrap();
        for (rows, &len) in att.iter().zip(&sl) {
            for row in rows {
                let sum: f32 = row[..len].iter().sum();
                assert!((sum - 1.0).abs() < 1e-5, "{row:?}");
                assert!(row[len..].iter().all(|&w| w == 0.0), "{row:?}");
            }
        }
        // Padded target steps do not count in the loss.
        let mut t = tgt.to_vec2::<u32>().unwrap();
        t[1][3] = 9;
        t[2][3] = 5;
        let tgt2 = Tensor::new(t, &Device::Cpu).unwrap();
        let lc = scalar(&model.loss(&src, &sl, &tgt2, &tl, false, 1.0).unwrap());
        assert_eq!(la, lc);
    }
}

/// A bigram decoder set by hand (attention none, W_hh = 0): from bos, `a` (p .6) beats `b`
/// (p .4), but after `a` the end has p .4 while after `b` it has p .95: greedy finds
/// `a </s>` (.24), a beam of 2 finds `b </s>` (.38).
#[test]
fn wider_beam_escapes_the_greedy_trap() {
    let cfg = Seq2SeqConfig {
        embedding_dim: 5,
        hidden_size: 5,
        mode: Mode::RnnTanh,
        attention: Attention::None,
        ..Seq2SeqConfig::new(5, 5)
    };
    let (mut varmap, model) = build(&cfg, 0);
    let dev = Device::Cpu;
    let eye = Tensor::eye(5, DType::F32, &dev).unwrap();
    let eps = 1e-6f64;
    // P[prev][next], ids: 0 pad, 1 bos, 2 eos, 3 a, 4 b.
    let table = [
        [0.2, 0.2, 0.2, 0.2, 0.2],
        [eps, eps, eps, 0.6, 0.4],
        [0.2, 0.2, 0.2, 0.2, 0.2],
        [eps, eps, 0.4, 0.3, 0.3],
        [eps, eps, 0.95, 0.025, 0.025],
    ];
    let gain = 3f64.tanh();
    let mut w = vec![0f32; 25];
    for (prev, row) in table.iter().enumerate() {
        let total: f64 = row.iter().sum();
        for (next, p) in row.iter().enumerate() {
            w[next * 5 + prev] = ((p / total).ln() / gain) as f32;
        }
    }
    let set = |varmap: &mut VarMap, name: &str, t: Tensor| varmap.set_one(name, t).unwrap();
    set(
        &mut varmap,
        "decoder.embedding.weight",
        (&eye * 3.0).unwrap(),
    );
    set(&mut varmap, "decoder.rnn.weight_ih_l0", eye.clone());
    set(
        &mut varmap,
        "decoder.rnn.weight_hh_l0",
        eye.zeros_like().unwrap(),
    );
    let zeros = Tensor::zeros(5, DType::F32, &dev).unwrap();
    for name in [
        "decoder.rnn.bias_ih_l0",
        "decoder.rnn.bias_hh_l0",
        "decoder.output.bias",
    ] {
        set(&mut varmap, name, zeros.clone());
    }
    set(
        &mut varmap,
        "decoder.output.weight",
        Tensor::from_vec(w, (5, 5), &dev).unwrap(),
    );
    let (src, sl) = pad(&[vec![3, 4], vec![4]]);
    let greedy = model.greedy(&src, &sl, 5).unwrap();
    let beam = model.beam_search(&src, &sl, 2, 0.0, 5).unwrap();
    for (g, b) in greedy.iter().zip(&beam) {
        assert_eq!(g.tokens, vec![3]);
        assert!((g.log_prob - 0.24f64.ln()).abs() < 1e-4, "{g:?}");
        assert_eq!(b.tokens, vec![4]);
        assert!((b.log_prob - 0.38f64.ln()).abs() < 1e-4, "{b:?}");
        assert!(b.finished && g.finished && b.log_prob > g.log_prob + 0.4);
        assert_eq!(b.score, b.log_prob);
    }
    // The beam's log-probability is the model's own score of that sequence.
    let (tgt, tl) = pad(&[vec![4, 2], vec![4, 2]]);
    let scored = model.sequence_log_probs(&src, &sl, &tgt, &tl).unwrap();
    for (s, b) in scored.iter().zip(&beam) {
        assert!((s - b.log_prob).abs() < 1e-5, "{s} vs {}", b.log_prob);
    }
    // Beam 1 is greedy.
    assert_eq!(model.beam_search(&src, &sl, 1, 0.0, 5).unwrap(), greedy);
}

fn random_batch(seed: u64, n: usize) -> (Tensor, Vec<usize>) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let seqs: Vec<Vec<u32>> = (0..n)
        .map(|_| {
            let len = rng.random_range(1..=6);
            (0..len).map(|_| rng.random_range(3..9u32)).collect()
        })
        .collect();
    pad(&seqs)
}

/// A random model with output bias `eos_bias` on the end token (0 elsewhere).
fn model_with_eos_bias(cfg: &Seq2SeqConfig, seed: u64, eos_bias: f32) -> (VarMap, Seq2Seq) {
    let (mut varmap, model) = build(cfg, seed);
    let mut bias = vec![0f32; cfg.tgt_vocab];
    bias[cfg.eos_id as usize] = eos_bias;
    varmap
        .set_one(
            "decoder.output.bias",
            Tensor::new(bias, &Device::Cpu).unwrap(),
        )
        .unwrap();
    (varmap, model)
}

#[test]
fn beam_one_equals_greedy_and_log_probs_match_the_model() {
    let (src, sl) = random_batch(3, 6);
    for cfg in [
        Seq2SeqConfig {
            input_feeding: true,
            ..small(Mode::Lstm, Attention::Additive, true)
        },
        small(Mode::Gru, Attention::Dot, false),
        Seq2SeqConfig {
            decoder_layers: 2,
            ..small(Mode::Gru, Attention::None, true)
        },
    ] {
        for eos_bias in [0.6, -2.0] {
            // 0.6: many hypotheses end early; -2: many run to max_len.
            let (_, model) = model_with_eos_bias(&cfg, 4, eos_bias);
            let greedy = model.greedy(&src, &sl, 7).unwrap();
            let beam1 = model.beam_search(&src, &sl, 1, 0.8, 7).unwrap();
            for (g, b) in greedy.iter().zip(&beam1) {
                assert_eq!(g.tokens, b.tokens);
                assert_eq!(g.finished, b.finished);
                assert!((g.log_prob - b.log_prob).abs() < 1e-5);
                assert_eq!(g.attention, b.attention);
            }
            let beam = model.beam_search(&src, &sl, 4, 0.6, 7).unwrap();
            if eos_bias > 0.0 {
                assert!(beam.iter().any(|h| h.finished), "{beam:?}");
            } else {
                assert!(beam.iter().any(|h| h.tokens.len() > 1), "{beam:?}");
            }
            let seqs: Vec<Vec<u32>> = beam
                .iter()
                .map(|h| {
                    let mut t = h.tokens.clone();
                    if h.finished {
                        t.push(cfg.eos_id);
                    }
                    t
                })
                .collect();
            let (tgt, tl) = pad(&seqs);
            let scored = model.sequence_log_probs(&src, &sl, &tgt, &tl).unwrap();
            for ((h, s), len) in beam.iter().zip(&scored).zip(&tl) {
                assert!((h.log_prob - s).abs() < 1e-4, "{h:?} vs {s}");
                let expected = h.log_prob / length_penalty(*len, 0.6);
                assert!((h.score - expected).abs() < 1e-9);
            }
        }
    }
}

#[test]
fn batched_beam_search_equals_one_sentence_at_a_time() {
    let (src, sl) = random_batch(9, 5);
    let cfg = Seq2SeqConfig {
        input_feeding: true,
        ..small(Mode::Lstm, Attention::General, true)
    };
    let mut seen = (false, false);
    for eos_bias in [0.6, -1.0] {
        let (_, model) = model_with_eos_bias(&cfg, 8, eos_bias);
        let batched = model.beam_search(&src, &sl, 3, 0.6, 8).unwrap();
        seen.0 |= batched.iter().any(|h| h.finished);
        seen.1 |= batched.iter().any(|h| !h.finished);
        for (i, h) in batched.iter().enumerate() {
            let one = src.narrow(0, i, 1).unwrap().narrow(1, 0, sl[i]).unwrap();
            let single = model.beam_search(&one, &sl[i..=i], 3, 0.6, 8).unwrap();
            assert_eq!(single[0].tokens, h.tokens, "sentence {i}");
            assert_eq!(single[0].finished, h.finished);
            assert!((single[0].log_prob - h.log_prob).abs() < 1e-5);
            assert!((single[0].score - h.score).abs() < 1e-5);
            for (a, b) in single[0].attention.iter().zip(&h.attention) {
                assert_eq!(a.len(), b.len());
                assert!(a.iter().zip(b).all(|(x, y)| (x - y).abs() < 1e-5));
            }
        }
    }
    // Hypotheses that stopped at the end token and at max_len were both compared.
    assert_eq!(seen, (true, true));
}

#[test]
fn save_load_round_trip() {
    let (src, sl, tgt, tl) = batch();
    let cfg = Seq2SeqConfig {
        input_feeding: true,
        ..small(Mode::Lstm, Attention::Additive, true)
    };
    let (varmap, model) = build(&cfg, 21);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("model.safetensors");
    varmap.save(&path).unwrap();
    let (mut varmap2, model2) = build(&cfg, 99);
    let tgt_in = model.shift_right(&tgt).unwrap();
    let before = model2.forward(&src, &sl, &tgt_in, false, 1.0, 0).unwrap();
    let reference = model.forward(&src, &sl, &tgt_in, false, 1.0, 0).unwrap();
    assert!(max_abs_diff(&before.logits, &reference.logits) > 1e-3);
    varmap2.load(&path).unwrap();
    let after = model2.forward(&src, &sl, &tgt_in, false, 1.0, 0).unwrap();
    assert_eq!(max_abs_diff(&after.logits, &reference.logits), 0.0);
    assert_eq!(
        scalar(&model.loss(&src, &sl, &tgt, &tl, false, 1.0).unwrap()),
        scalar(&model2.loss(&src, &sl, &tgt, &tl, false, 1.0).unwrap())
    );
    assert_eq!(
        model.beam_search(&src, &sl, 3, 0.6, 6).unwrap(),
        model2.beam_search(&src, &sl, 3, 0.6, 6).unwrap()
    );
}

#[test]
fn dropout_and_teacher_forcing_are_resumable() {
    let (src, sl, tgt, tl) = batch();
    let cfg = Seq2SeqConfig {
        dropout: 0.3,
        encoder_layers: 2,
        decoder_layers: 2,
        ..small(Mode::Gru, Attention::General, true)
    };
    let (_, mut a) = build(&cfg, 1);
    let (_, mut b) = build(&cfg, 1);
    a.set_seed(7);
    b.set_seed(7);
    let first = scalar(&a.loss(&src, &sl, &tgt, &tl, true, 0.5).unwrap());
    assert_eq!(
        first,
        scalar(&b.loss(&src, &sl, &tgt, &tl, true, 0.5).unwrap())
    );
    let counters = a.rng_counters();
    assert_eq!(counters.len(), 6);
    assert!(counters.iter().all(|&c| c > 0), "{counters:?}");
    let second = scalar(&a.loss(&src, &sl, &tgt, &tl, true, 0.5).unwrap());
    assert_ne!(first, second);
    let (_, mut c) = build(&cfg, 1);
    c.set_seed(7);
    c.set_rng_counters(&counters).unwrap();
    assert_eq!(
        second,
        scalar(&c.loss(&src, &sl, &tgt, &tl, true, 0.5).unwrap())
    );
    let err = c.set_rng_counters(&[1, 2]).unwrap_err().to_string();
    assert!(err.contains("6"), "{err}");
    // Eval ignores dropout.
    let e1 = scalar(&a.loss(&src, &sl, &tgt, &tl, false, 1.0).unwrap());
    let e2 = scalar(&a.loss(&src, &sl, &tgt, &tl, false, 1.0).unwrap());
    assert_eq!(e1, e2);
}

#[test]
fn errors_name_the_argument() {
    let (src, sl, tgt, tl) = batch();
    let (_, model) = build(&small(Mode::Gru, Attention::Dot, false), 0);
    let tgt_in = model.shift_right(&tgt).unwrap();
    let dev = Device::Cpu;
    let check = |r: Result<Seq2SeqOutput>, needles: &[&str]| {
        let e = r.unwrap_err().to_string();
        assert!(needles.iter().all(|n| e.contains(n)), "{needles:?}: {e}");
    };
    let float_src = src.to_dtype(DType::F32).unwrap();
    check(
        model.forward(&float_src, &sl, &tgt_in, false, 1.0, 0),
        &["`src`", "u32"],
    );
    check(
        model.forward(&src, &[5, 3], &tgt_in, false, 1.0, 0),
        &["src_lengths", "2 entries"],
    );
    check(
        model.forward(&src, &[5, 6, 1], &tgt_in, false, 1.0, 0),
        &["src_lengths", "lengths[1]"],
    );
    check(
        model.forward(&src, &sl, &tgt_in.narrow(0, 0, 2).unwrap(), false, 1.0, 0),
        &["`tgt_in`", "[2, 4]", "[3, 5]"],
    );
    check(
        model.forward(&src, &sl, &tgt_in, false, 1.5, 0),
        &["teacher_forcing_ratio", "1.5"],
    );
    check(
        model.forward(&src, &sl, &tgt_in, false, f64::NAN, 0),
        &["teacher_forcing_ratio"],
    );
    let big = Tensor::new(&[[3u32, 9, 0], [1, 2, 3], [4, 4, 4]], &dev).unwrap();
    check(
        model.forward(&big, &[3, 3, 3], &tgt_in, false, 1.0, 0),
        &["`src`", "token id 9", "9 ids"],
    );
    let big_t = Tensor::new(&[[1u32, 10], [1, 2], [1, 3]], &dev).unwrap();
    check(
        model.forward(&src, &sl, &big_t, false, 1.0, 0),
        &["`tgt_in`", "token id 10"],
    );
    let e = model
        .loss(&src, &sl, &tgt, &[4, 2, 5], false, 1.0)
        .unwrap_err()
        .to_string();
    assert!(e.contains("tgt_lengths") && e.contains("lengths[2]"), "{e}");
    let e = model
        .loss(&src, &sl, &tgt.unsqueeze(0).unwrap(), &tl, false, 1.0)
        .unwrap_err()
        .to_string();
    assert!(e.contains("`tgt`") && e.contains("(batch, seq)"), "{e}");
    let e = model.greedy(&src, &sl, 0).unwrap_err().to_string();
    assert!(e.contains("max_len"), "{e}");
    let e = model
        .beam_search(&src, &sl, 0, 0.0, 5)
        .unwrap_err()
        .to_string();
    assert!(e.contains("`beam`"), "{e}");
    let e = model
        .beam_search(&src, &sl, 2, f64::INFINITY, 5)
        .unwrap_err()
        .to_string();
    assert!(e.contains("length_penalty"), "{e}");
    let e = model
        .beam_search(&src, &[], 2, 0.0, 5)
        .unwrap_err()
        .to_string();
    assert!(e.contains("src_lengths"), "{e}");
}

/// Trains `cfg` (vocabulary 11: pad, bos, eos and 8 symbols) to reverse sequences of 3-7
/// symbols with AdamW at teacher-forcing ratio `ratio`; checks greedy exact match on 200
/// held-out sequences goes from < 5% to >= 95%. Returns the model and the held-out set.
fn train_reverse(cfg: &Seq2SeqConfig, ratio: f64, label: &str) -> (Seq2Seq, Vec<Vec<u32>>) {
    let start = Instant::now();
    let (varmap, mut model) = build(cfg, 1);
    model.set_seed(3);
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    let sample = |rng: &mut ChaCha8Rng| -> Vec<u32> {
        let len = rng.random_range(3..=7);
        (0..len).map(|_| rng.random_range(3..11u32)).collect()
    };
    let mut held: Vec<Vec<u32>> = Vec::new();
    let mut held_set = HashSet::new();
    while held.len() < 200 {
        let s = sample(&mut rng);
        if held_set.insert(s.clone()) {
            held.push(s);
        }
    }
    let (held_src, held_len) = pad(&held);
    let accuracy = |model: &Seq2Seq| {
        let hyps = model.greedy(&held_src, &held_len, 10).unwrap();
        let correct = hyps
            .iter()
            .zip(&held)
            .filter(|(h, s)| h.finished && h.tokens.iter().copied().eq(s.iter().rev().copied()))
            .count();
        correct as f64 / held.len() as f64
    };
    let untrained = accuracy(&model);
    assert!(untrained < 0.05, "{label}: untrained accuracy {untrained}");
    let mut opt = adamw(varmap.all_vars(), 0.01);
    let mut trained = 0.0;
    let mut steps = 0;
    for round in 0..10 {
        // 0.01 for 300 steps, then 0.003, then 0.001: settles the noisy plateau.
        opt.set_learning_rate(match round {
            0..=2 => 0.01,
            3..=5 => 0.003,
            _ => 0.001,
        });
        for _ in 0..100 {
            let mut seqs = Vec::new();
            while seqs.len() < 32 {
                let s = sample(&mut rng);
                if !held_set.contains(&s) {
                    seqs.push(s);
                }
            }
            let targets: Vec<Vec<u32>> = seqs
                .iter()
                .map(|s| s.iter().rev().copied().chain([cfg.eos_id]).collect())
                .collect();
            let (src, sl) = pad(&seqs);
            let (tgt, tl) = pad(&targets);
            let loss = model.loss(&src, &sl, &tgt, &tl, true, ratio).unwrap();
            opt.backward_step(&loss).unwrap();
            steps += 1;
        }
        trained = accuracy(&model);
        eprintln!(
            "{label} round {round}: {steps} steps, held-out exact match {trained:.3}, {:.1} s",
            start.elapsed().as_secs_f64()
        );
        if trained >= 0.98 {
            break;
        }
    }
    assert!(trained >= 0.95, "{label}: held-out exact match {trained}");
    (model, held)
}

/// Reversal with the fast path (GRU, general attention, full teacher forcing), then beam
/// search on the trained model: never less likely than greedy, and its log-probabilities
/// are the model's own scores.
#[test]
fn learns_to_reverse_sequences() {
    let cfg = Seq2SeqConfig {
        embedding_dim: 16,
        hidden_size: 48,
        mode: Mode::Gru,
        attention: Attention::General,
        ..Seq2SeqConfig::new(11, 11)
    };
    let (model, held) = train_reverse(&cfg, 1.0, "gru/general");
    let (src, sl) = pad(&held[..20]);
    let greedy = model.greedy(&src, &sl, 10).unwrap();
    let beam = model.beam_search(&src, &sl, 4, 0.0, 10).unwrap();
    for (g, b) in greedy.iter().zip(&beam) {
        assert!(b.log_prob >= g.log_prob - 1e-5);
    }
    let seqs: Vec<Vec<u32>> = beam
        .iter()
        .map(|h| h.tokens.iter().copied().chain([cfg.eos_id]).collect())
        .collect();
    assert!(beam.iter().all(|h| h.finished));
    let (tgt, tl) = pad(&seqs);
    let scored = model.sequence_log_probs(&src, &sl, &tgt, &tl).unwrap();
    for (h, s) in beam.iter().zip(&scored) {
        assert!((h.log_prob - s).abs() < 1e-4, "{} vs {s}", h.log_prob);
    }
}

/// Reversal through the step-by-step decoder: bidirectional LSTM encoder, additive
/// attention, input feeding, dropout and a teacher-forcing ratio of 0.8.
#[test]
fn learns_to_reverse_step_by_step() {
    let cfg = Seq2SeqConfig {
        embedding_dim: 16,
        hidden_size: 32,
        mode: Mode::Lstm,
        bidirectional_encoder: true,
        attention: Attention::Additive,
        input_feeding: true,
        dropout: 0.1,
        ..Seq2SeqConfig::new(11, 11)
    };
    train_reverse(&cfg, 0.8, "lstm/additive/input-feeding");
}

/// `layer_norm` is left out of the saved config while off, so configs saved before it existed
/// and configs saved without it read the same, and it round-trips when on.
#[test]
fn layer_norm_config_round_trips_and_old_configs_load() {
    let plain = small(Mode::Gru, Attention::General, false);
    let json = serde_json::to_value(&plain).unwrap();
    assert!(json.get("layer_norm").is_none(), "{json}");
    let back: Seq2SeqConfig = serde_json::from_value(json).unwrap();
    assert!(!back.layer_norm);
    let on = Seq2SeqConfig {
        layer_norm: true,
        ..plain
    };
    let json = serde_json::to_value(&on).unwrap();
    assert_eq!(json["layer_norm"], serde_json::Value::Bool(true));
    let back: Seq2SeqConfig = serde_json::from_value(json).unwrap();
    assert!(back.layer_norm);
}

/// The loss through the fused output op (the CPU default) equals the composed output layer and
/// cross-entropy, in value and in every parameter's gradient: teacher-forced in one call,
/// step by step with scheduled sampling, with dropout (both clones draw the same masks), and
/// equals the cross-entropy of [`Seq2Seq::forward`]'s logits.
#[test]
fn fused_and_composed_losses_agree_with_every_gradient() {
    let (src, sl, tgt, tl) = batch();
    let cases = [
        (
            Seq2SeqConfig {
                dropout: 0.2,
                ..small(Mode::Gru, Attention::General, true)
            },
            1.0,
        ),
        (
            Seq2SeqConfig {
                input_feeding: true,
                dropout: 0.2,
                ..small(Mode::Lstm, Attention::Additive, false)
            },
            0.5,
        ),
    ];
    for (cfg, ratio) in cases {
        let (varmap, model) = build(&cfg, 8);
        let mut runs = Vec::new();
        for imp in [Implementation::Fused, Implementation::Composed] {
            let model = model.clone().with_loss_implementation(imp);
            let loss = model.loss(&src, &sl, &tgt, &tl, true, ratio).unwrap();
            let grads = loss.backward().unwrap();
            runs.push((scalar(&loss), grads_by_name(&varmap, &grads)));
        }
        let label = format!("{:?} ratio {ratio}", cfg.mode);
        assert_fused_matches_composed(&runs[0], &runs[1], &label);
        let params = varmap.all_vars().len();
        assert_eq!(
            runs[0].1.len(),
            params,
            "{label}: every parameter gets a gradient"
        );
        // In eval mode with full teacher forcing: the cross-entropy of the logits.
        let loss = model.loss(&src, &sl, &tgt, &tl, false, 1.0).unwrap();
        let logits = model
            .forward(&src, &sl, &model.shift_right(&tgt).unwrap(), false, 1.0, 0)
            .unwrap()
            .logits;
        let mask = crate::common::length_mask(Some(&tl), 3, 4, DType::F32, &Device::Cpu).unwrap();
        let want = crate::loss::masked_cross_entropy(&logits, &tgt, Some(&mask)).unwrap();
        assert!((scalar(&loss) - scalar(&want)).abs() < 1e-5, "{label}");
    }
}
