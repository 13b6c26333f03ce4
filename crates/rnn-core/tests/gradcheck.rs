//! Gradients by central finite differences in f64, for each mode, on a tiny case that uses every
//! feature at once (2 layers, bidirectional, variable lengths, given initial state; LSTM also with a
//! projection): autograd must agree with the numerical derivative for every input, every initial
//! state entry and every parameter entry.
//!
//! On the device named by `RNN_TEST_DEVICE` (default cpu; `rnn_core::testing`), through that
//! device's default path. (Metal has no f64, so there the test has nothing to check.)

use candle_core::{DType, Device, Result, Tensor, Var};
use candle_nn::{Init, VarMap};
use rnn_core::init::seeded_var_builder;
use rnn_core::{Implementation, Mode, Rnn, RnnConfig, RnnState};

const EPS: f64 = 1e-6;
/// |autograd - numeric| <= TOL * max(1, |numeric|).
const TOL: f64 = 1e-6;

fn randn(vm: &VarMap, name: &str, dims: &[usize], dev: &Device) -> Var {
    let t = seeded_var_builder(vm, 42, DType::F64, dev)
        .get_with_hints(
            dims,
            name,
            Init::Randn {
                mean: 0.0,
                stdev: 1.0,
            },
        )
        .unwrap();
    Var::from_tensor(&t).unwrap()
}

fn check_mode(mode: Mode, proj: usize, dev: &Device) -> Result<usize> {
    check_config(
        RnnConfig::new(mode, 2, 3)
            .with_num_layers(2)
            .with_bidirectional(true)
            .with_proj_size(proj),
        Implementation::Auto,
        dev,
    )
}

fn check_config(cfg: RnnConfig, imp: Implementation, dev: &Device) -> Result<usize> {
    let mode = cfg.mode;
    let params = VarMap::new();
    let rnn =
        Rnn::new(&cfg, seeded_var_builder(&params, 1, DType::F64, dev))?.with_implementation(imp);
    // Layer-norm gains and biases away from their init (1 and 0), so that every term counts:
    // seeded noise (Candle's `randn_like` draws from an unseeded generator, and one draw in about
    // six made a case whose gradients of ~500 the finite differences could not resolve).
    let noise = VarMap::new();
    for (name, var) in params.data().lock().unwrap().iter() {
        if name.starts_with("layernorm_") {
            let n = randn(&noise, name, var.dims(), dev)
                .as_tensor()
                .affine(0.3, 0.0)?;
            var.set(&(var.as_tensor() + n)?)?;
        }
    }
    let data = VarMap::new();
    let lengths = [2usize, 3];
    let x = randn(&data, "x", &[2, 3, 2], dev);
    let zero = rnn.zero_state(2)?;
    let h0 = randn(&data, "h0", zero.h.dims(), dev);
    let c0 = zero.c.as_ref().map(|c| randn(&data, "c0", c.dims(), dev));
    let w_out = randn(&data, "w_out", &[2, 3, cfg.output_size()], dev)
        .as_tensor()
        .clone();
    let w_h = randn(&data, "w_h", zero.h.dims(), dev).as_tensor().clone();
    let w_c = zero
        .c
        .as_ref()
        .map(|c| randn(&data, "w_c", c.dims(), dev).as_tensor().clone());

    let loss = || -> Result<Tensor> {
        let state = RnnState::new(
            h0.as_tensor().clone(),
            c0.as_ref().map(|c| c.as_tensor().clone()),
        );
        let (ys, fin) = rnn.forward_t(x.as_tensor(), Some(&state), Some(&lengths), false)?;
        let mut l = ((ys * &w_out)?.sum_all()? + (fin.h * &w_h)?.sum_all()?)?;
        if let (Some(c), Some(w)) = (fin.c, &w_c) {
            l = (l + (c * w)?.sum_all()?)?;
        }
        Ok(l)
    };
    let grads = loss()?.backward()?;
    let mut vars: Vec<(String, Var)> = vec![("x".into(), x.clone()), ("h0".into(), h0.clone())];
    if let Some(c0) = &c0 {
        vars.push(("c0".into(), c0.clone()));
    }
    let mut named: Vec<(String, Var)> = params
        .data()
        .lock()
        .unwrap()
        .iter()
        .map(|(n, v)| (n.clone(), v.clone()))
        .collect();
    named.sort_by(|a, b| a.0.cmp(&b.0));
    vars.extend(named);
    let mut checked = 0;
    for (name, var) in &vars {
        let analytic = grads
            .get(var)
            .unwrap_or_else(|| panic!("{mode}: no gradient for {name}"))
            .flatten_all()?
            .to_vec1::<f64>()?;
        let orig = var.as_tensor().flatten_all()?.to_vec1::<f64>()?;
        for i in 0..orig.len() {
            let eval_at = |v: f64| -> Result<f64> {
                let mut p = orig.clone();
                p[i] = v;
                var.set(&Tensor::from_vec(p, var.shape(), dev)?)?;
                loss()?.to_scalar::<f64>()
            };
            let numeric = (eval_at(orig[i] + EPS)? - eval_at(orig[i] - EPS)?) / (2.0 * EPS);
            var.set(&Tensor::from_vec(orig.clone(), var.shape(), dev)?)?;
            let err = (analytic[i] - numeric).abs();
            assert!(
                err <= TOL * numeric.abs().max(1.0),
                "{mode}: d loss / d {name}[{i}]: autograd {} vs numeric {numeric}",
                analytic[i]
            );
            checked += 1;
        }
    }
    Ok(checked)
}

#[test]
fn autograd_matches_finite_differences_for_every_mode() -> Result<()> {
    let Some(dev) = rnn_core::testing::device() else {
        return Ok(());
    };
    if dev.is_metal() {
        eprintln!("skipped: Metal has no f64");
        return Ok(());
    }
    for mode in Mode::ALL {
        let n = check_mode(mode, 0, &dev)?;
        assert!(n > 100, "{mode}: checked {n} entries");
    }
    check_mode(Mode::Lstm, 2, &dev)?;
    Ok(())
}

#[test]
fn layer_norm_autograd_matches_finite_differences_fused_and_composed() -> Result<()> {
    let Some(dev) = rnn_core::testing::device() else {
        return Ok(());
    };
    if dev.is_metal() {
        eprintln!("skipped: Metal has no f64");
        return Ok(());
    }
    let imps = if dev.is_cpu() {
        vec![Implementation::Fused, Implementation::Composed]
    } else {
        vec![Implementation::Auto, Implementation::Composed]
    };
    for mode in [Mode::Lstm, Mode::Gru] {
        for &imp in &imps {
            let cfg = RnnConfig::new(mode, 2, 3)
                .with_num_layers(2)
                .with_bidirectional(true)
                .with_layer_norm(true);
            let n = check_config(cfg, imp, &dev)?;
            assert!(n > 100, "{mode} {imp:?}: checked {n} entries");
        }
    }
    Ok(())
}
