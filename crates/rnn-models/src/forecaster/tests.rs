//! Tests of [`Forecaster`](super::Forecaster).

use super::*;
use crate::test_util::{adamw, max_abs_diff, scalar};
use candle_core::{DType, Device, Result, Tensor};
use rnn_core::Mode;

use crate::common::{Activation, Stochastic};
use crate::loss::mse;
use candle_nn::{Optimizer, VarMap};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rnn_core::init::seeded_var_builder;

fn build(cfg: ForecasterConfig, seed: u64) -> (VarMap, Forecaster) {
    let varmap = VarMap::new();
    let vb = seeded_var_builder(&varmap, seed, DType::F32, &Device::Cpu);
    // The config by value, the form before 0.2, still builds.
    let model = Forecaster::new(cfg, vb).unwrap();
    (varmap, model)
}

fn randn(shape: &[usize], seed: u64) -> Tensor {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let n = shape.iter().product();
    let v: Vec<f32> = (0..n).map(|_| rng.random::<f32>() * 2.0 - 1.0).collect();
    Tensor::from_vec(v, shape, &Device::Cpu).unwrap()
}

fn multivariate(strategy: ForecastStrategy, mode: Mode) -> ForecasterConfig {
    ForecasterConfig::new(3, 2, 12, strategy)
        .with_mode(mode)
        .with_horizon(4)
        .with_target_columns(vec![2, 0])
}

#[test]
fn shapes_and_gradients_for_every_option() {
    let (b, t) = (3, 7);
    let lengths = [7, 4, 1];
    for mode in Mode::ALL {
        for strategy in ForecastStrategy::ALL {
            for layers in [1, 2] {
                let head = if layers == 2 { vec![8] } else { vec![] };
                let cfg = multivariate(strategy, mode)
                    .with_num_layers(layers)
                    .with_head(head, Activation::Relu);
                let (varmap, model) = build(cfg, layers as u64);
                let xs = randn(&[b, t, 3], 1);
                let out = model.forward(&xs, Some(&lengths), true).unwrap();
                let what = format!("{mode} {strategy} {layers}");
                let steps = if strategy.is_aligned() { t } else { 4 };
                assert_eq!(out.dims(), &[b, steps, 2], "{what}");
                let targets = randn(&[b, steps, 2], 2);
                let loss = model.loss(&xs, Some(&lengths), &targets, true).unwrap();
                assert_eq!(loss.rank(), 0);
                assert!(scalar(&loss).is_finite());
                let grads = loss.backward().unwrap();
                for (name, var) in varmap.data().lock().unwrap().iter() {
                    assert!(grads.get(var.as_tensor()).is_some(), "{what}: {name}");
                }
                let h = match strategy {
                    ForecastStrategy::NextStep => 1,
                    ForecastStrategy::Direct => 4,
                    ForecastStrategy::Autoregressive => 6,
                };
                let pred = model.predict(&xs, Some(&lengths), h).unwrap();
                assert_eq!(pred.dims(), &[b, h, 2], "{what}");
                let pred = model.predict(&xs, None, 1).unwrap();
                assert_eq!(pred.dims(), &[b, 1, 2], "{what}");
            }
        }
    }
    let (varmap, _) = build(
        multivariate(ForecastStrategy::Direct, Mode::Gru).with_head(vec![5], Activation::Tanh),
        0,
    );
    let mut names: Vec<String> = varmap.data().lock().unwrap().keys().cloned().collect();
    names.sort();
    assert_eq!(
        names,
        [
            "head.layers.0.bias",
            "head.layers.0.weight",
            "head.layers.1.bias",
            "head.layers.1.weight",
            "rnn.bias_hh_l0",
            "rnn.bias_ih_l0",
            "rnn.weight_hh_l0",
            "rnn.weight_ih_l0",
        ]
    );
}

#[test]
fn padding_changes_nothing() {
    let lengths = [6, 3];
    for strategy in ForecastStrategy::ALL {
        let (_, model) = build(multivariate(strategy, Mode::Lstm), 3);
        let xs = randn(&[2, 6, 3], 5);
        let steps = if strategy.is_aligned() { 6 } else { 4 };
        let targets = randn(&[2, steps, 2], 6);
        // Junk after row 1's length, in the inputs and (aligned) NaN in the targets.
        let mut x = xs.to_vec3::<f32>().unwrap();
        let mut y = targets.to_vec3::<f32>().unwrap();
        for s in 3..6 {
            x[1][s] = vec![100.0, -7.0, 3.0];
            if strategy.is_aligned() {
                y[1][s] = vec![f32::NAN, 1e30];
            }
        }
        let xj = Tensor::new(x, &Device::Cpu).unwrap();
        let yj = Tensor::new(y, &Device::Cpu).unwrap();
        let la = model.loss(&xs, Some(&lengths), &targets, false).unwrap();
        let lb = model.loss(&xj, Some(&lengths), &yj, false).unwrap();
        assert_eq!(scalar(&la), scalar(&lb), "{strategy}");
        let oa = model.forward(&xs, Some(&lengths), false).unwrap();
        let ob = model.forward(&xj, Some(&lengths), false).unwrap();
        if strategy.is_aligned() {
            for (b, &l) in lengths.iter().enumerate() {
                let va = oa.get(b).unwrap().narrow(0, 0, l).unwrap();
                let vb = ob.get(b).unwrap().narrow(0, 0, l).unwrap();
                assert_eq!(max_abs_diff(&va, &vb), 0.0, "{strategy}");
            }
        } else {
            assert_eq!(max_abs_diff(&oa, &ob), 0.0, "{strategy}");
        }
        let h = if strategy == ForecastStrategy::NextStep {
            1
        } else {
            3
        };
        let pa = model.predict(&xs, Some(&lengths), h).unwrap();
        let pb = model.predict(&xj, Some(&lengths), h).unwrap();
        assert_eq!(max_abs_diff(&pa, &pb), 0.0, "{strategy}");
        // A padded row predicts what the same row alone, unpadded, predicts.
        let alone = model
            .predict(
                &xs.narrow(0, 1, 1).unwrap().narrow(1, 0, 3).unwrap(),
                None,
                h,
            )
            .unwrap();
        assert!(
            max_abs_diff(&pa.narrow(0, 1, 1).unwrap(), &alone) < 1e-5,
            "{strategy}"
        );
    }
}

#[test]
fn autoregressive_rollout_matches_next_step_outputs() {
    let lengths = [5, 2, 4];
    let (_, model) = build(multivariate(ForecastStrategy::Autoregressive, Mode::Gru), 7);
    let xs = randn(&[3, 5, 3], 8);
    // H = 1 is the next-step output at the last valid step.
    let out = model.forward(&xs, Some(&lengths), false).unwrap();
    let one = model.predict(&xs, Some(&lengths), 1).unwrap();
    for (b, &l) in lengths.iter().enumerate() {
        let next = out.get(b).unwrap().get(l - 1).unwrap();
        let pred = one.get(b).unwrap().get(0).unwrap();
        // Same values; a head on one row vs on all rows may round differently in theory.
        assert!(max_abs_diff(&next, &pred) <= 1e-6);
    }
    // Step 2 is the next-step output after appending the fed-back row: the last input with
    // columns [2, 0] set to the first prediction and column 1 held.
    let two = model
        .predict(&xs, None, 2)
        .unwrap()
        .to_vec3::<f32>()
        .unwrap();
    let mut x = xs.to_vec3::<f32>().unwrap();
    for (b, row) in x.iter_mut().enumerate() {
        let mut next = row[4].clone();
        next[2] = two[b][0][0];
        next[0] = two[b][0][1];
        row.push(next);
    }
    let extended = Tensor::new(x, &Device::Cpu).unwrap();
    let out = model
        .forward(&extended, None, false)
        .unwrap()
        .to_vec3::<f32>()
        .unwrap();
    for b in 0..3 {
        for j in 0..2 {
            assert!(
                (out[b][5][j] - two[b][1][j]).abs() < 1e-5,
                "{out:?} {two:?}"
            );
        }
    }
}

/// `n` noisy sine windows of `len` steps with random phases: (n, len) row-major.
fn sine(n: usize, len: usize, seed: u64) -> Vec<Vec<f32>> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let omega = std::f32::consts::TAU / 16.0;
    (0..n)
        .map(|_| {
            let phase = rng.random::<f32>() * std::f32::consts::TAU;
            (0..len)
                .map(|t| {
                    let noise = (rng.random::<f32>() + rng.random::<f32>() - 1.0) * 0.17;
                    (omega * t as f32 + phase).sin() + noise
                })
                .collect()
        })
        .collect()
}

/// (n, len, 1) from rows[.., from..from + len].
fn window(rows: &[Vec<f32>], from: usize, len: usize) -> Tensor {
    let v: Vec<f32> = rows
        .iter()
        .flat_map(|r| r[from..from + len].to_vec())
        .collect();
    Tensor::from_vec(v, (rows.len(), len, 1), &Device::Cpu).unwrap()
}

fn rmse(a: &Tensor, b: &Tensor) -> f32 {
    scalar(&mse(a, b).unwrap()).sqrt()
}

const T_IN: usize = 24;
const H: usize = 6;

fn train(strategy: ForecastStrategy, steps: usize) -> Forecaster {
    let cfg = ForecasterConfig::new(1, 1, 24, strategy)
        .with_mode(Mode::Gru)
        .with_horizon(H)
        .with_target_columns(vec![0]);
    let (varmap, model) = build(cfg, 21);
    let mut opt = adamw(varmap.all_vars(), 0.01);
    for step in 0..steps {
        let rows = sine(32, T_IN + H, 1000 + step as u64);
        let xs = window(&rows, 0, T_IN);
        let targets = if strategy.is_aligned() {
            window(&rows, 1, T_IN)
        } else {
            window(&rows, T_IN, H)
        };
        let loss = model.loss(&xs, None, &targets, true).unwrap();
        opt.backward_step(&loss).unwrap();
    }
    model
}

#[test]
fn learns_noisy_sine_next_step() {
    let model = train(ForecastStrategy::NextStep, 150);
    let rows = sine(128, T_IN + 1, 7);
    let xs = window(&rows, 0, T_IN);
    let next = window(&rows, 1, T_IN);
    // Skip the first steps (no context yet) for both.
    let pred = model
        .forward(&xs, None, false)
        .unwrap()
        .narrow(1, 4, T_IN - 4)
        .unwrap();
    let truth = next.narrow(1, 4, T_IN - 4).unwrap();
    let persistence = xs.narrow(1, 4, T_IN - 4).unwrap();
    let (ours, base) = (rmse(&pred, &truth), rmse(&persistence, &truth));
    eprintln!("next-step RMSE {ours:.3} vs persistence {base:.3}");
    assert!(ours < 0.7 * base, "{ours} vs {base}");
}

fn multi_step(strategy: ForecastStrategy) {
    let model = train(strategy, 150);
    let rows = sine(128, T_IN + H, 7);
    let xs = window(&rows, 0, T_IN);
    let future = window(&rows, T_IN, H);
    let pred = model.predict(&xs, None, H).unwrap();
    let persistence = xs
        .narrow(1, T_IN - 1, 1)
        .unwrap()
        .repeat((1, H, 1))
        .unwrap();
    let (ours, base) = (rmse(&pred, &future), rmse(&persistence, &future));
    eprintln!("{strategy} {H}-step RMSE {ours:.3} vs persistence {base:.3}");
    assert!(ours < 0.5 * base, "{ours} vs {base}");
}

#[test]
fn learns_noisy_sine_direct() {
    multi_step(ForecastStrategy::Direct);
}

#[test]
fn learns_noisy_sine_autoregressive() {
    multi_step(ForecastStrategy::Autoregressive);
}

#[test]
fn save_load_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("forecaster.safetensors");
    for strategy in ForecastStrategy::ALL {
        let cfg = multivariate(strategy, Mode::Lstm).with_head(vec![6], Activation::Tanh);
        let (varmap, a) = build(cfg.clone(), 1);
        varmap.save(&path).unwrap();
        let (mut varmap_b, b) = build(cfg, 2);
        let xs = randn(&[2, 5, 3], 3);
        let before = b.forward(&xs, None, false).unwrap();
        varmap_b.load(&path).unwrap();
        let oa = a.forward(&xs, Some(&[5, 3]), false).unwrap();
        let ob = b.forward(&xs, Some(&[5, 3]), false).unwrap();
        assert!(max_abs_diff(&before, &a.forward(&xs, None, false).unwrap()) > 0.0);
        assert_eq!(max_abs_diff(&oa, &ob), 0.0, "{strategy}");
        let h = if strategy == ForecastStrategy::NextStep {
            1
        } else {
            4
        };
        let pa = a.predict(&xs, Some(&[5, 3]), h).unwrap();
        let pb = b.predict(&xs, Some(&[5, 3]), h).unwrap();
        assert_eq!(max_abs_diff(&pa, &pb), 0.0, "{strategy}");
    }
}

#[test]
fn dropout_is_seeded_and_resumable() {
    let cfg = multivariate(ForecastStrategy::NextStep, Mode::Lstm)
        .with_dropout(0.3)
        .with_num_layers(2);
    let (_, mut model) = build(cfg, 5);
    model.set_seed(42);
    let xs = randn(&[2, 5, 3], 3);
    let targets = randn(&[2, 5, 2], 4);
    let loss = |m: &Forecaster, train| scalar(&m.loss(&xs, None, &targets, train).unwrap());
    let first = loss(&model, true);
    let counters = model.rng_counters();
    assert!(counters.iter().all(|&c| c > 0), "{counters:?}");
    let second = loss(&model, true);
    assert_ne!(first, second);
    model.set_rng_counters(&counters).unwrap();
    assert_eq!(loss(&model, true), second);
    assert_eq!(loss(&model, false), loss(&model, false));
    assert!(model.set_rng_counters(&[]).is_err());
}

#[test]
fn errors_name_the_argument() {
    let check = |r: Result<()>, needles: &[&str]| {
        let e = r.unwrap_err().to_string();
        for n in needles {
            assert!(e.contains(n), "expected {n:?} in: {e}");
        }
    };
    let base = multivariate(ForecastStrategy::Autoregressive, Mode::Gru);
    check(
        base.clone().with_target_columns(vec![]).validate(),
        &["target_columns", "autoregressive"],
    );
    check(
        base.clone().with_target_columns(vec![0]).validate(),
        &["target_columns", "target_size = 2"],
    );
    check(
        base.clone().with_target_columns(vec![0, 3]).validate(),
        &["target_columns[1]", "input_size"],
    );
    check(
        base.clone().with_target_columns(vec![1, 1]).validate(),
        &["target_columns[1]", "repeated"],
    );
    check(base.clone().with_horizon(0).validate(), &["horizon"]);
    check(base.clone().with_dropout(-0.5).validate(), &["dropout"]);
    check(
        base.clone().with_head(vec![0], Activation::Tanh).validate(),
        &["head_hidden[0]"],
    );
    check(
        "soon".parse::<ForecastStrategy>().map(|_| ()),
        &["soon", "next-step", "direct", "autoregressive"],
    );
    for s in ForecastStrategy::ALL {
        assert_eq!(s.to_string().parse::<ForecastStrategy>().unwrap(), s);
        assert_eq!(serde_json::to_string(&s).unwrap(), format!("\"{s}\""));
    }
    let json = r#"{"input_size":3,"target_size":2,"hidden":12,"layers":2,"strategy":"direct","horizon":4}"#;
    let cfg: ForecasterConfig = serde_json::from_str(json).unwrap();
    assert_eq!(
        (cfg.hidden_size, cfg.num_layers, cfg.strategy),
        (12, 2, ForecastStrategy::Direct)
    );
    let back: ForecasterConfig =
        serde_json::from_str(&serde_json::to_string(&cfg).unwrap()).unwrap();
    assert_eq!(back, cfg);

    let (_, model) = build(base, 0);
    let xs = randn(&[2, 5, 3], 1);
    let targets = randn(&[2, 5, 2], 2);
    check(
        model
            .forward(&randn(&[2, 5, 4], 1), None, false)
            .map(|_| ()),
        &["Forecaster", "`xs`", "input_size = 3", "[2, 5, 4]"],
    );
    check(
        model.forward(&randn(&[5, 3], 1), None, false).map(|_| ()),
        &["`xs`", "[5, 3]"],
    );
    let ids = Tensor::zeros((2, 5, 3), DType::U32, &Device::Cpu).unwrap();
    check(
        model.forward(&ids, None, false).map(|_| ()),
        &["`xs`", "float"],
    );
    check(
        model.forward(&xs, Some(&[5]), false).map(|_| ()),
        &["lengths", "1 entries"],
    );
    check(
        model.forward(&xs, Some(&[5, 0]), false).map(|_| ()),
        &["lengths[1]"],
    );
    check(
        model
            .loss(&xs, None, &randn(&[2, 4, 2], 1), false)
            .map(|_| ()),
        &["`targets`", "[2, 5, 2]", "[2, 4, 2]"],
    );
    check(
        model
            .loss(&xs, None, &targets.to_dtype(DType::U32).unwrap(), false)
            .map(|_| ()),
        &["`targets`", "U32"],
    );
    check(model.predict(&xs, None, 0).map(|_| ()), &["`horizon`"]);
    let (_, next) = build(multivariate(ForecastStrategy::NextStep, Mode::Gru), 0);
    check(
        next.predict(&xs, None, 3).map(|_| ()),
        &["`horizon` = 3", "next-step"],
    );
    let (_, direct) = build(multivariate(ForecastStrategy::Direct, Mode::Gru), 0);
    check(
        direct.predict(&xs, None, 5).map(|_| ()),
        &["`horizon` = 5", "horizon 4"],
    );
    check(
        direct.loss(&xs, None, &targets, false).map(|_| ()),
        &["`targets`", "(batch, horizon, target_size)"],
    );
}

#[test]
fn layer_norm_config_reaches_the_rnn_and_old_configs_load_without_it() {
    let old: ForecasterConfig =
        serde_json::from_str(r#"{"input_size":2,"target_size":1,"hidden_size":4}"#).unwrap();
    assert!(!old.layer_norm && !old.rnn_config().layer_norm);
    let cfg = ForecasterConfig::new(2, 1, 4, ForecastStrategy::Direct)
        .with_mode(Mode::Gru)
        .with_layer_norm(true);
    let back: ForecasterConfig =
        serde_json::from_str(&serde_json::to_string(&cfg).unwrap()).unwrap();
    assert_eq!(back, cfg);
    let (varmap, _model) = build(cfg, 1);
    let names: Vec<String> = varmap.data().lock().unwrap().keys().cloned().collect();
    assert!(
        names.contains(&"rnn.layernorm_h_weight_l0".to_string()),
        "{names:?}"
    );
    assert!(
        !names.iter().any(|n| n.contains("layernorm_c")),
        "{names:?}"
    );
}
