//! The cells through candle-nn's `RNN` trait alone: the same numbers as candle-nn's own LSTM and
//! GRU with the same weights, and a user-written training loop with `candle_nn::AdamW`.

use std::collections::HashMap;

use candle_core::{DType, Device, Result, Tensor};
use candle_nn::{AdamW, Optimizer, ParamsAdamW, VarBuilder, VarMap, RNN};
use rnn_core::{CellConfig, GruCell, LstmCell};

/// Input `(batch, seq, features)` from a fixed pattern.
fn input(b: usize, t: usize, i: usize) -> Result<Tensor> {
    let v: Vec<f32> = (0..b * t * i)
        .map(|k| ((k * 37 % 23) as f32 / 23.0 - 0.5) * 1.5)
        .collect();
    Tensor::from_vec(v, (b, t, i), &Device::Cpu)
}

/// The stacked hidden states of a whole sequence, through the trait only.
fn run<R: RNN>(r: &R, xs: &Tensor) -> Result<Tensor> {
    let states = r.seq(xs)?;
    r.states_to_tensor(&states)
}

/// The cell's weights under candle-nn's layer names (`weight_ih_l0`, ...).
fn as_layer_weights(varmap: &VarMap) -> HashMap<String, Tensor> {
    varmap
        .data()
        .lock()
        .unwrap()
        .iter()
        .map(|(name, var)| {
            let short = name.trim_start_matches("cell.");
            (format!("{short}_l0"), var.as_tensor().clone())
        })
        .collect()
}

fn max_diff(a: &Tensor, b: &Tensor) -> f32 {
    (a - b)
        .unwrap()
        .abs()
        .unwrap()
        .flatten_all()
        .unwrap()
        .max(0)
        .unwrap()
        .to_scalar::<f32>()
        .unwrap()
}

#[test]
fn lstm_cell_as_rnn_equals_candle_nn_lstm() -> Result<()> {
    let varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
    let cell = LstmCell::new(&CellConfig::new(5, 7), vb.pp("cell"))?;
    let reference = candle_nn::lstm(
        5,
        7,
        candle_nn::LSTMConfig::default(),
        VarBuilder::from_tensors(as_layer_weights(&varmap), DType::F32, &Device::Cpu),
    )?;
    let xs = input(3, 6, 5)?;
    let ours = run(&cell, &xs)?;
    assert_eq!(ours.dims(), &[3, 6, 7]);
    let d = max_diff(&ours, &run(&reference, &xs)?);
    assert!(d < 1e-5, "max difference {d}");
    // The last state's cell memory too.
    let (a, b) = (cell.seq(&xs)?, reference.seq(&xs)?);
    assert!(max_diff(&a[5].c, &b[5].c) < 1e-5);
    Ok(())
}

#[test]
fn gru_cell_as_rnn_equals_candle_nn_gru() -> Result<()> {
    let varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
    let cell = GruCell::new(&CellConfig::new(4, 6), vb.pp("cell"))?;
    let reference = candle_nn::gru(
        4,
        6,
        candle_nn::GRUConfig::default(),
        VarBuilder::from_tensors(as_layer_weights(&varmap), DType::F32, &Device::Cpu),
    )?;
    let xs = input(2, 5, 4)?;
    let ours = run(&cell, &xs)?;
    // candle-nn's GRU concatenates the steps' hidden states (its LSTM stacks them).
    assert_eq!(ours.dims(), &[2, 30]);
    let d = max_diff(&ours, &run(&reference, &xs)?);
    assert!(d < 1e-5, "max difference {d}");
    // A state carried in: `seq_init` from a non-zero state.
    // The inherent `step` takes an `Option<&RnnState>`; the trait's is called by its path.
    let init = RNN::step(
        &cell,
        &xs.narrow(1, 0, 1)?.squeeze(1)?,
        &cell.zero_state(2)?,
    )?;
    let a = cell.states_to_tensor(&cell.seq_init(&xs, &init)?)?;
    let b = reference.states_to_tensor(&reference.seq_init(&xs, &init)?)?;
    assert!(max_diff(&a, &b) < 1e-5);
    Ok(())
}

/// A candle-nn style loop: the cell through `RNN`, a linear head, `candle_nn::AdamW`. The task
/// (predict the running mean of the first feature) is learnable, so the loss must fall.
#[test]
fn a_user_training_loop_with_candle_nn_adamw_learns() -> Result<()> {
    let varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
    let cell = LstmCell::new(&CellConfig::new(3, 16), vb.pp("cell"))?;
    let head = candle_nn::linear(16, 1, vb.pp("head"))?;
    let xs = input(8, 10, 3)?;
    let first = xs.narrow(2, 0, 1)?;
    let steps = Tensor::arange(1f32, 11f32, &Device::Cpu)?.reshape((1, 10, 1))?;
    let target = first.cumsum(1)?.broadcast_div(&steps)?;
    let mut opt = AdamW::new(
        varmap.all_vars(),
        ParamsAdamW {
            lr: 0.02,
            ..Default::default()
        },
    )?;
    let loss_of = |cell: &LstmCell| -> Result<Tensor> {
        let hs = run(cell, &xs)?;
        let pred = hs.apply(&head)?;
        candle_nn::loss::mse(&pred, &target)
    };
    let before = loss_of(&cell)?.to_scalar::<f32>()?;
    for _ in 0..60 {
        let loss = loss_of(&cell)?;
        opt.backward_step(&loss)?;
    }
    let after = loss_of(&cell)?.to_scalar::<f32>()?;
    assert!(after < 0.2 * before, "loss {before} -> {after}");
    Ok(())
}

/// With `Module` in scope, `rnn.forward(&xs)` is the trait's method (the two-argument form is
/// `forward_with_state`), and an `Rnn` works where any `Module` or `ModuleT` is expected.
#[test]
fn rnn_forward_is_module_forward() -> Result<()> {
    use candle_nn::{Module, ModuleT};
    let varmap = VarMap::new();
    let vb = rnn_core::init::seeded_var_builder(&varmap, 3, DType::F32, &Device::Cpu);
    let cfg = rnn_core::RnnConfig::new(rnn_core::Mode::Gru, 4, 6).with_num_layers(2);
    let rnn = rnn_core::Rnn::new(&cfg, vb)?;
    let xs = input(2, 5, 4)?;
    let ys = rnn.forward(&xs)?;
    let (expected, _) = rnn.forward_with_state(&xs, None)?;
    let diff = (&ys - &expected)?.abs()?.max_all()?.to_scalar::<f32>()?;
    assert_eq!(diff, 0.0);
    fn through_module_t<M: ModuleT>(m: &M, xs: &Tensor) -> Result<Tensor> {
        m.forward_t(xs, false)
    }
    let via_t = through_module_t(&rnn, &xs)?;
    assert_eq!(via_t.to_vec3::<f32>()?, ys.to_vec3::<f32>()?);
    assert_eq!(ys.dims(), &[2, 5, 6]);
    Ok(())
}
