//! Gradients of the mask options (variational input/output/recurrent dropout, zoneout on `h` and
//! `c`, weight dropout on `W_hh`) by central finite differences in f64: on a tiny case with every
//! option on at once (2 layers, bidirectional, variable lengths, given initial state), autograd
//! must agree with the numerical derivative for every input, initial-state and parameter entry,
//! through the fused op and through the composed twin, in training (sampled masks) and in
//! evaluation (zoneout's expectation).

use candle_core::{DType, Device, Result, Tensor, Var};
use candle_nn::{Init, VarMap};
use rnn_core::init::seeded_var_builder;
use rnn_core::{Implementation, Mode, Rnn, RnnConfig, RnnMasks, RnnState};

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

fn check(mode: Mode, imp: Implementation, train: bool, dev: &Device) -> Result<usize> {
    let mut cfg = RnnConfig::new(mode, 2, 3)
        .with_num_layers(2)
        .with_bidirectional(true)
        .with_input_dropout(0.3)
        .with_output_dropout(0.3)
        .with_recurrent_dropout(0.4)
        .with_zoneout_h(0.3)
        .with_weight_drop(0.4);
    if mode == Mode::Lstm {
        cfg = cfg.with_zoneout_c(0.25);
    }
    let params = VarMap::new();
    let rnn = Rnn::new(&cfg, seeded_var_builder(&params, 1, DType::F64, dev))?
        .with_implementation(imp)
        .set_dropout_seed(9);
    let (batch, seq_len) = (2, 3);
    let masks: RnnMasks = rnn
        .draw_masks(seq_len, batch, train)?
        .expect("the options ask for masks");
    let lengths = [2usize, 3];
    let data = VarMap::new();
    let x = randn(&data, "x", &[batch, seq_len, 2], dev);
    let zero = rnn.zero_state(batch)?;
    let h0 = randn(&data, "h0", zero.h.dims(), dev);
    let c0 = zero.c.as_ref().map(|c| randn(&data, "c0", c.dims(), dev));
    let w_out = randn(&data, "w_out", &[batch, seq_len, cfg.output_size()], dev)
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
        let (ys, fin) =
            rnn.forward_with_masks(x.as_tensor(), Some(&state), Some(&lengths), false, &masks)?;
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
            .unwrap_or_else(|| panic!("{mode} {imp:?}: no gradient for {name}"))
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
                "{mode} {imp:?} train={train}: d loss / d {name}[{i}]: autograd {} vs numeric {numeric}",
                analytic[i]
            );
            checked += 1;
        }
    }
    Ok(checked)
}

#[test]
fn mask_options_autograd_matches_finite_differences() -> Result<()> {
    let dev = Device::Cpu;
    for mode in Mode::ALL {
        for imp in [Implementation::Auto, Implementation::Composed] {
            let n = check(mode, imp, true, &dev)?;
            assert!(n > 100, "{mode}: checked {n} entries");
        }
    }
    for mode in [Mode::Lstm, Mode::Gru] {
        check(mode, Implementation::Auto, false, &dev)?;
    }
    Ok(())
}
