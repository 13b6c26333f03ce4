//! Tests of [`ConditionedGenerator`](super::ConditionedGenerator).

use super::*;
use crate::test_util::{adamw, assert_fused_matches_composed, grads_by_name, max_abs_diff};
use candle_core::{DType, Device, Result, Tensor};
use rnn_core::{Implementation, Mode};

use crate::common::Stochastic;
use crate::sampling::SamplingConfig;
use candle_nn::{Optimizer, VarMap};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rnn_core::init::seeded_var_builder;

const BOS: u32 = 0;
const EOS: u32 = 1;
const VOCAB: usize = 8;
const MAX_LEN: usize = 8;
const CLASS: ContextKind = ContextKind::Class { num_classes: 3 };
const FEATURES: ContextKind = ContextKind::Features { size: 3 };

fn config(
    stop: StopStrategy,
    context: ContextKind,
    conditioning: Conditioning,
    mode: Mode,
) -> GeneratorConfig {
    GeneratorConfig::new(VOCAB, context, stop)
        .with_bos_id(BOS)
        .with_eos_id(EOS)
        .with_max_len(MAX_LEN)
        .with_embedding_dim(8)
        .with_hidden_size(16)
        .with_context_dim(6)
        .with_conditioning(conditioning)
        .with_mode(mode)
}

fn build(cfg: GeneratorConfig, seed: u64) -> (VarMap, ConditionedGenerator) {
    let varmap = VarMap::new();
    let vb = seeded_var_builder(&varmap, seed, DType::F32, &Device::Cpu);
    let model = ConditionedGenerator::new(&cfg, vb).unwrap();
    (varmap, model)
}

/// Class ids, or (for a feature context) one-hot class vectors plus N(0, 0.1)-ish noise.
fn context_for(kind: ContextKind, classes: &[u32], rng: &mut ChaCha8Rng) -> Tensor {
    match kind {
        ContextKind::Class { .. } => Tensor::new(classes, &Device::Cpu).unwrap(),
        ContextKind::Features { size } => {
            let mut v = vec![0f32; classes.len() * size];
            for (b, &c) in classes.iter().enumerate() {
                for f in 0..size {
                    let noise = (rng.random::<f32>() - 0.5) * 0.3;
                    v[b * size + f] = if f == c as usize { 1.0 } else { 0.0 } + noise;
                }
            }
            Tensor::from_vec(v, (classes.len(), size), &Device::Cpu).unwrap()
        }
    }
}

/// The task: class c has 3 + 2c tokens, alternating 2 + 2c and 3 + 2c.
fn expected(class: u32) -> Vec<u32> {
    (0..3 + 2 * class).map(|t| 2 + 2 * class + t % 2).collect()
}

/// Targets (eos appended for end-token), right-padded with 0, and their lengths.
fn task_batch(stop: StopStrategy, classes: &[u32]) -> (Tensor, Vec<usize>) {
    let mut rows: Vec<Vec<u32>> = classes.iter().map(|&c| expected(c)).collect();
    if stop == StopStrategy::EndToken {
        for r in &mut rows {
            r.push(EOS);
        }
    }
    let lengths: Vec<usize> = rows.iter().map(|r| r.len()).collect();
    let t = *lengths.iter().max().unwrap();
    let flat: Vec<u32> = rows
        .iter()
        .flat_map(|r| r.iter().copied().chain(std::iter::repeat(0)).take(t))
        .collect();
    let targets = Tensor::from_vec(flat, (classes.len(), t), &Device::Cpu).unwrap();
    (targets, lengths)
}

/// (fraction of greedy generations with the class's length, fraction exactly right).
fn accuracy(model: &ConditionedGenerator, kind: ContextKind, seed: u64) -> (f64, f64) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let classes: Vec<u32> = (0..60).map(|i| i % 3).collect();
    let ctx = context_for(kind, &classes, &mut rng);
    let seqs = model
        .generate(&ctx, &SamplingConfig::greedy(), 12, 0)
        .unwrap();
    let n = classes.len() as f64;
    let len_ok = seqs
        .iter()
        .zip(&classes)
        .filter(|(s, &c)| s.len() == expected(c).len())
        .count() as f64;
    let exact = seqs
        .iter()
        .zip(&classes)
        .filter(|(s, &c)| **s == expected(c))
        .count() as f64;
    (len_ok / n, exact / n)
}

#[test]
fn shapes_gradients_and_generation_for_every_option() {
    let mut rng = ChaCha8Rng::seed_from_u64(0);
    let mut n = 0;
    for mode in Mode::ALL {
        for conditioning in Conditioning::ALL {
            for stop in StopStrategy::ALL {
                n += 1;
                let kind = if n % 2 == 0 { CLASS } else { FEATURES };
                let cfg = config(stop, kind, conditioning, mode).with_num_layers(1 + n % 2);
                let (varmap, model) = build(cfg, n as u64);
                let classes = [0u32, 2, 1];
                let ctx = context_for(kind, &classes, &mut rng);
                let (targets, lengths) = task_batch(stop, &classes);
                let t = targets.dim(1).unwrap();
                let out = model.forward(&ctx, &targets, Some(&lengths), true).unwrap();
                let what = format!("{mode} {conditioning} {stop}");
                assert_eq!(out.logits.dims(), &[3, t, VOCAB], "{what}");
                assert_eq!(
                    out.stop_logits.as_ref().map(|s| s.dims().to_vec()),
                    (stop == StopStrategy::Bernoulli).then(|| vec![3, t]),
                    "{what}"
                );
                assert_eq!(
                    out.length_logits.as_ref().map(|s| s.dims().to_vec()),
                    (stop == StopStrategy::PredictedLength).then(|| vec![3, MAX_LEN]),
                    "{what}"
                );
                let loss = model.loss(&ctx, &targets, Some(&lengths), true).unwrap();
                assert_eq!(loss.rank(), 0);
                assert!(loss.to_scalar::<f32>().unwrap().is_finite(), "{what}");
                let grads = loss.backward().unwrap();
                for (name, var) in varmap.data().lock().unwrap().iter() {
                    assert!(grads.get(var.as_tensor()).is_some(), "{what}: {name}");
                }
                let seqs = model
                    .generate(&ctx, &SamplingConfig::greedy(), 6, 0)
                    .unwrap();
                assert_eq!(seqs.len(), 3);
                assert!(seqs.iter().all(|s| s.len() <= 6), "{what}");
                assert!(seqs.iter().flatten().all(|&tok| (tok as usize) < VOCAB));
                // Sampling is reproducible from its seed.
                let sampling = SamplingConfig::with_temperature(1.0);
                let a = model.generate(&ctx, &sampling, 6, 9).unwrap();
                let b = model.generate(&ctx, &sampling, 6, 9).unwrap();
                assert_eq!(a, b, "{what}");
                if stop == StopStrategy::EndToken {
                    assert!(a.iter().flatten().all(|&tok| tok != EOS));
                }
            }
        }
    }
    // Parameter names.
    let (varmap, _) = build(
        config(
            StopStrategy::Bernoulli,
            FEATURES,
            Conditioning::Both,
            Mode::Lstm,
        ),
        0,
    );
    let mut names: Vec<String> = varmap.data().lock().unwrap().keys().cloned().collect();
    names.sort();
    assert_eq!(
        names,
        [
            "context.init_c.bias",
            "context.init_c.weight",
            "context.init_h.bias",
            "context.init_h.weight",
            "context.proj.bias",
            "context.proj.weight",
            "embedding.weight",
            "output.bias",
            "output.weight",
            "rnn.bias_hh_l0",
            "rnn.bias_ih_l0",
            "rnn.weight_hh_l0",
            "rnn.weight_ih_l0",
            "stop.bias",
            "stop.weight",
        ]
    );
    let (varmap, _) = build(
        config(
            StopStrategy::PredictedLength,
            CLASS,
            Conditioning::EveryStep,
            Mode::Gru,
        ),
        0,
    );
    let names = varmap
        .data()
        .lock()
        .unwrap()
        .keys()
        .cloned()
        .collect::<Vec<_>>();
    assert!(names.contains(&"context.embedding.weight".to_string()));
    assert!(names.contains(&"length.weight".to_string()));
    assert!(!names.iter().any(|n| n.starts_with("context.init")));
}

#[test]
fn generation_agrees_with_teacher_forcing() {
    // Greedy generation step by step, fed back through the teacher-forced forward, gives the
    // same choices: the carried state and the conditioning match the training path.
    let mut rng = ChaCha8Rng::seed_from_u64(2);
    for stop in StopStrategy::ALL {
        for conditioning in Conditioning::ALL {
            let what = format!("{stop} {conditioning}");
            let cfg = config(stop, FEATURES, conditioning, Mode::Lstm).with_num_layers(2);
            let (_, model) = build(cfg, 8);
            let ctx = context_for(FEATURES, &[0, 1, 2, 0, 1, 2], &mut rng);
            let max_len = 6;
            let seqs = model
                .generate(&ctx, &SamplingConfig::greedy(), max_len, 0)
                .unwrap();
            let out = model
                .forward(
                    &ctx,
                    &Tensor::full(BOS, (6, 1), &Device::Cpu).unwrap(),
                    None,
                    false,
                )
                .unwrap();
            if let Some(ll) = &out.length_logits {
                let predicted = crate::sampling::argmax_rows(ll).unwrap();
                for (s, k) in seqs.iter().zip(predicted) {
                    assert_eq!(s.len(), (k as usize + 1).min(max_len), "{what}");
                }
            }
            // Inputs: bos then the generated tokens (eos included for end-token).
            let mut rows = Vec::new();
            let mut lengths = Vec::new();
            for s in &seqs {
                let mut row = vec![BOS];
                row.extend_from_slice(s);
                lengths.push(row.len().min(max_len));
                row.resize(max_len + 1, 0);
                rows.push(row[..max_len].to_vec());
            }
            let tgt_in = Tensor::new(rows, &Device::Cpu).unwrap();
            let out = model.forward(&ctx, &tgt_in, Some(&lengths), false).unwrap();
            let logits = out.logits.to_vec3::<f32>().unwrap();
            for (b, s) in seqs.iter().enumerate() {
                let mut expect = s.clone();
                if stop == StopStrategy::EndToken && s.len() < max_len {
                    expect.push(EOS);
                }
                for (t, &tok) in expect.iter().enumerate().take(max_len) {
                    let row = Tensor::new(logits[b][t].as_slice(), &Device::Cpu).unwrap();
                    let arg = crate::sampling::argmax_rows(&row).unwrap()[0];
                    assert_eq!(arg, tok, "{what}: row {b} step {t}");
                }
                if let Some(sl) = &out.stop_logits {
                    let sl = sl.to_vec2::<f32>().unwrap();
                    for (t, &v) in sl[b].iter().enumerate().take(s.len().min(max_len - 1)) {
                        let last = t + 1 == s.len() && s.len() < max_len;
                        assert_eq!(v > 0.0, last, "{what}: row {b} step {t} stop logit {v}");
                    }
                }
            }
        }
    }
}

#[test]
fn padding_changes_nothing() {
    for stop in StopStrategy::ALL {
        for conditioning in Conditioning::ALL {
            let cfg = config(stop, CLASS, conditioning, Mode::Lstm);
            let (_, model) = build(cfg, 3);
            let ctx = Tensor::new(&[0u32, 2], &Device::Cpu).unwrap();
            let (targets, lengths) = task_batch(stop, &[0, 2]);
            let t = targets.dim(1).unwrap();
            // Junk (even out-of-vocabulary ids) after row 0's length.
            let mut rows = targets.to_vec2::<u32>().unwrap();
            for (i, v) in rows[0].iter_mut().enumerate().skip(lengths[0]) {
                *v = if i % 2 == 0 { 7 } else { 999 };
            }
            let junk = Tensor::new(rows, &Device::Cpu).unwrap();
            let a = model.loss(&ctx, &targets, Some(&lengths), false).unwrap();
            let b = model.loss(&ctx, &junk, Some(&lengths), false).unwrap();
            assert_eq!(
                a.to_scalar::<f32>().unwrap(),
                b.to_scalar::<f32>().unwrap(),
                "{stop} {conditioning}"
            );
            let oa = model
                .forward(&ctx, &targets, Some(&lengths), false)
                .unwrap();
            let ob = model.forward(&ctx, &junk, Some(&lengths), false).unwrap();
            for (b, &l) in lengths.iter().enumerate() {
                let va = oa.logits.get(b).unwrap().narrow(0, 0, l).unwrap();
                let vb = ob.logits.get(b).unwrap().narrow(0, 0, l).unwrap();
                assert_eq!(max_abs_diff(&va, &vb), 0.0);
                if let (Some(sa), Some(sb)) = (&oa.stop_logits, &ob.stop_logits) {
                    let sa = sa.get(b).unwrap().narrow(0, 0, l).unwrap();
                    let sb = sb.get(b).unwrap().narrow(0, 0, l).unwrap();
                    assert_eq!(max_abs_diff(&sa, &sb), 0.0);
                }
            }
            if let (Some(la), Some(lb)) = (&oa.length_logits, &ob.length_logits) {
                assert_eq!(max_abs_diff(la, lb), 0.0);
            }
            assert!(t > lengths[0]);
        }
    }
}

/// Trains on the class/length task; returns the accuracy before and after.
fn learn(
    stop: StopStrategy,
    kind: ContextKind,
    conditioning: Conditioning,
    mode: Mode,
    steps: usize,
) -> ((f64, f64), (f64, f64)) {
    let cfg = config(stop, kind, conditioning, mode)
        .with_hidden_size(32)
        .with_embedding_dim(8);
    let (varmap, model) = build(cfg, 11);
    let before = accuracy(&model, kind, 100);
    let mut opt = adamw(varmap.all_vars(), 0.02);
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    let classes: Vec<u32> = (0..12).map(|i| i % 3).collect();
    let (targets, lengths) = task_batch(stop, &classes);
    for _ in 0..steps {
        let ctx = context_for(kind, &classes, &mut rng);
        let loss = model.loss(&ctx, &targets, Some(&lengths), true).unwrap();
        opt.backward_step(&loss).unwrap();
    }
    let after = accuracy(&model, kind, 200);
    (before, after)
}

fn assert_learns(stop: StopStrategy, kind: ContextKind, conditioning: Conditioning, mode: Mode) {
    let (before, after) = learn(stop, kind, conditioning, mode, 150);
    eprintln!("{stop}: before {before:?}, after {after:?}");
    assert!(
        before.0 < 0.95,
        "{stop}: untrained model already right: {before:?}"
    );
    assert!(
        after.0 >= 0.95,
        "{stop}: lengths right in {:.0}%",
        after.0 * 100.0
    );
    assert!(
        after.1 >= 0.95,
        "{stop}: sequences right in {:.0}%",
        after.1 * 100.0
    );
}

#[test]
fn learns_class_lengths_with_end_token() {
    assert_learns(
        StopStrategy::EndToken,
        CLASS,
        Conditioning::InitialState,
        Mode::Lstm,
    );
}

#[test]
fn learns_class_lengths_with_bernoulli_stop() {
    assert_learns(
        StopStrategy::Bernoulli,
        FEATURES,
        Conditioning::EveryStep,
        Mode::Gru,
    );
}

#[test]
fn learns_class_lengths_with_predicted_length() {
    assert_learns(
        StopStrategy::PredictedLength,
        FEATURES,
        Conditioning::Both,
        Mode::Lstm,
    );
}

#[test]
fn save_load_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("generator.safetensors");
    for stop in StopStrategy::ALL {
        let cfg = config(stop, FEATURES, Conditioning::Both, Mode::Gru);
        let (varmap, a) = build(cfg.clone(), 1);
        varmap.save(&path).unwrap();
        let (mut varmap_b, b) = build(cfg, 2);
        let mut rng = ChaCha8Rng::seed_from_u64(4);
        let ctx = context_for(FEATURES, &[0, 1, 2], &mut rng);
        let (targets, lengths) = task_batch(stop, &[0, 1, 2]);
        let before = b.loss(&ctx, &targets, Some(&lengths), false).unwrap();
        varmap_b.load(&path).unwrap();
        let la = a.loss(&ctx, &targets, Some(&lengths), false).unwrap();
        let lb = b.loss(&ctx, &targets, Some(&lengths), false).unwrap();
        assert_ne!(
            before.to_scalar::<f32>().unwrap(),
            la.to_scalar::<f32>().unwrap()
        );
        assert_eq!(
            la.to_scalar::<f32>().unwrap(),
            lb.to_scalar::<f32>().unwrap()
        );
        let oa = a.forward(&ctx, &targets, None, false).unwrap();
        let ob = b.forward(&ctx, &targets, None, false).unwrap();
        assert_eq!(max_abs_diff(&oa.logits, &ob.logits), 0.0);
        let s = SamplingConfig::with_temperature(0.8);
        assert_eq!(
            a.generate(&ctx, &s, MAX_LEN, 3).unwrap(),
            b.generate(&ctx, &s, MAX_LEN, 3).unwrap()
        );
    }
}

#[test]
fn dropout_is_seeded_and_resumable() {
    let cfg = config(
        StopStrategy::Bernoulli,
        CLASS,
        Conditioning::Both,
        Mode::Lstm,
    )
    .with_dropout(0.3)
    .with_num_layers(2);
    let (_, mut model) = build(cfg, 5);
    model.set_seed(42);
    let ctx = Tensor::new(&[0u32, 1, 2], &Device::Cpu).unwrap();
    let (targets, lengths) = task_batch(StopStrategy::Bernoulli, &[0, 1, 2]);
    let loss = |m: &ConditionedGenerator, train| {
        m.loss(&ctx, &targets, Some(&lengths), train)
            .unwrap()
            .to_scalar::<f32>()
            .unwrap()
    };
    let first = loss(&model, true);
    let counters = model.rng_counters();
    assert_eq!(counters.len(), 2);
    assert!(counters.iter().all(|&c| c > 0), "{counters:?}");
    let second = loss(&model, true);
    assert_ne!(first, second);
    model.set_rng_counters(&counters).unwrap();
    assert_eq!(loss(&model, true), second);
    // Eval draws nothing and is deterministic.
    assert_eq!(loss(&model, false), loss(&model, false));
    let err = model.set_rng_counters(&[1]).unwrap_err().to_string();
    assert!(
        err.contains("ConditionedGenerator") && err.contains("2"),
        "{err}"
    );
}

#[test]
fn errors_name_the_argument() {
    let check = |r: Result<()>, needles: &[&str]| {
        let e = r.unwrap_err().to_string();
        for n in needles {
            assert!(e.contains(n), "expected {n:?} in: {e}");
        }
    };
    let base = config(
        StopStrategy::EndToken,
        CLASS,
        Conditioning::Both,
        Mode::Lstm,
    );
    let mut no_eos = base.clone();
    no_eos.eos_id = None;
    check(no_eos.validate(), &["eos_id"]);
    check(base.clone().with_eos_id(99).validate(), &["eos_id", "99"]);
    check(base.clone().with_bos_id(8).validate(), &["bos_id"]);
    check(base.clone().with_dropout(1.5).validate(), &["dropout"]);
    check(
        base.clone().with_hidden_size(0).validate(),
        &["hidden_size"],
    );
    let mut no_len = config(
        StopStrategy::PredictedLength,
        CLASS,
        Conditioning::Both,
        Mode::Lstm,
    );
    no_len.max_len = None;
    check(no_len.validate(), &["max_len"]);
    check(
        "maybe".parse::<StopStrategy>().map(|_| ()),
        &["maybe", "end-token", "bernoulli", "predicted-length"],
    );
    check(
        "x".parse::<Conditioning>().map(|_| ()),
        &["initial-state", "every-step", "both"],
    );
    assert_eq!(
        "END_TOKEN".parse::<StopStrategy>().unwrap(),
        StopStrategy::EndToken
    );
    for s in StopStrategy::ALL {
        assert_eq!(s.to_string().parse::<StopStrategy>().unwrap(), s);
        let json = serde_json::to_string(&s).unwrap();
        assert_eq!(json, format!("\"{s}\""));
    }
    let json = serde_json::to_string(&base).unwrap();
    assert_eq!(
        serde_json::from_str::<GeneratorConfig>(&json).unwrap(),
        base
    );

    let (_, model) = build(base, 0);
    let dev = Device::Cpu;
    let ctx = Tensor::new(&[0u32, 1], &dev).unwrap();
    let (targets, lengths) = task_batch(StopStrategy::EndToken, &[0, 1]);
    let fctx = Tensor::zeros((2, 3), DType::F32, &dev).unwrap();
    check(
        model.loss(&fctx, &targets, None, false).map(|_| ()),
        &["ConditionedGenerator", "`context`", "u32"],
    );
    let bad_class = Tensor::new(&[0u32, 3], &dev).unwrap();
    check(
        model.loss(&bad_class, &targets, None, false).map(|_| ()),
        &["`context`", "3", "num_classes"],
    );
    let one = Tensor::new(&[0u32], &dev).unwrap();
    check(
        model
            .loss(&one, &targets, Some(&lengths), false)
            .map(|_| ()),
        &["`targets`", "batch"],
    );
    check(
        model.loss(&ctx, &targets, Some(&[4]), false).map(|_| ()),
        &["lengths"],
    );
    check(
        model.loss(&ctx, &targets, Some(&[4, 9]), false).map(|_| ()),
        &["lengths[1]"],
    );
    // Row 0 has length 4 = 3 tokens + eos; claiming 3 cuts the eos off.
    check(
        model.loss(&ctx, &targets, Some(&[3, 6]), false).map(|_| ()),
        &["eos_id", "row 0"],
    );
    let f_targets = targets.to_dtype(DType::F32).unwrap();
    check(
        model.forward(&ctx, &f_targets, None, false).map(|_| ()),
        &["`tgt_in`", "u32"],
    );
    let big = Tensor::new(&[[2u32, 50]], &dev).unwrap();
    check(
        model.forward(&one, &big, None, false).map(|_| ()),
        &["`tgt_in`", "50", "vocab_size"],
    );
    check(
        model
            .generate(&ctx, &SamplingConfig::greedy(), 0, 0)
            .map(|_| ()),
        &["max_len"],
    );
    let bad_sampling = SamplingConfig::with_temperature(-1.0);
    check(
        model.generate(&ctx, &bad_sampling, 3, 0).map(|_| ()),
        &["temperature"],
    );

    let (_, fmodel) = build(
        config(
            StopStrategy::PredictedLength,
            FEATURES,
            Conditioning::Both,
            Mode::Gru,
        ),
        0,
    );
    check(
        fmodel.loss(&ctx, &targets, None, false).map(|_| ()),
        &["`context`", "(batch, 3)"],
    );
    let wide = Tensor::zeros((2, 4), DType::F32, &dev).unwrap();
    check(
        fmodel.loss(&wide, &targets, None, false).map(|_| ()),
        &["`context`", "[2, 4]"],
    );
    let long = Tensor::zeros((2, 9), DType::U32, &dev).unwrap();
    check(
        fmodel.loss(&fctx, &long, None, false).map(|_| ()),
        &["lengths[0]", "max_len"],
    );
}

/// The loss through the fused output op (the CPU default) equals the composed output layer and
/// token cross-entropy, in value and in every parameter's gradient, with each stop strategy's
/// extra term and with dropout (both clones draw the same mask); without dropout it equals the
/// cross-entropy of [`ConditionedGenerator::forward`]'s logits plus the same extra term.
#[test]
fn fused_and_composed_losses_agree_with_every_gradient() {
    for stop in [
        StopStrategy::EndToken,
        StopStrategy::Bernoulli,
        StopStrategy::PredictedLength,
    ] {
        let cfg = config(stop, CLASS, Conditioning::InitialState, Mode::Lstm).with_dropout(0.25);
        let (varmap, model) = build(cfg, 5);
        let classes = [0u32, 2, 1];
        let ctx = Tensor::new(&classes, &Device::Cpu).unwrap();
        let (targets, lengths) = task_batch(stop, &classes);
        let mut runs = Vec::new();
        for imp in [Implementation::Fused, Implementation::Composed] {
            let model = model.clone().with_loss_implementation(imp);
            let loss = model.loss(&ctx, &targets, Some(&lengths), true).unwrap();
            let grads = loss.backward().unwrap();
            runs.push((
                loss.to_scalar::<f32>().unwrap(),
                grads_by_name(&varmap, &grads),
            ));
        }
        let label = format!("{stop:?}");
        assert_fused_matches_composed(&runs[0], &runs[1], &label);
        assert!(
            runs[0].1.iter().any(|(n, _)| n == "output.weight"),
            "{stop:?}"
        );
        if stop == StopStrategy::EndToken {
            let loss = model.loss(&ctx, &targets, Some(&lengths), false).unwrap();
            let (b, t) = targets.dims2().unwrap();
            let bos = Tensor::full(BOS, (b, 1), &Device::Cpu).unwrap();
            let tgt_in = Tensor::cat(&[&bos, &targets.narrow(1, 0, t - 1).unwrap()], 1).unwrap();
            let logits = model
                .forward(&ctx, &tgt_in, Some(&lengths), false)
                .unwrap()
                .logits;
            let mask =
                crate::common::length_mask(Some(&lengths), b, t, DType::F32, &Device::Cpu).unwrap();
            let want = crate::loss::masked_cross_entropy(&logits, &targets, Some(&mask)).unwrap();
            let (got, want) = (
                loss.to_scalar::<f32>().unwrap(),
                want.to_scalar::<f32>().unwrap(),
            );
            assert!((got - want).abs() < 1e-5, "{got} vs {want}");
        }
    }
}
