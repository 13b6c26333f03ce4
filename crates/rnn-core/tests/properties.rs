//! Invariants of the recurrence, checked on random configurations and data (proptest):
//! - a sequence run in two chunks with the state carried equals one run;
//! - a padded batch with lengths equals each sequence run alone;
//! - `step` repeated equals the layer (cells and `Rnn::step`).

mod common;
use common::max_abs_diff;

use candle_core::{DType, Device, IndexOp, Result, Tensor};
use candle_nn::{VarBuilder, VarMap};
use proptest::prelude::*;
use rnn_core::init::seeded_var_builder;
use rnn_core::{
    CellConfig, GruCell, LstmCell, Mode, Nonlinearity, Rnn, RnnCell, RnnConfig, RnnState,
};

/// f64 everywhere: the invariants are exact up to summation order.
const TOL: f64 = 1e-12;

/// One cell step, whatever the cell kind.
type StepFn = Box<dyn Fn(&Tensor, &RnnState) -> RnnState>;

fn mode_strategy() -> impl Strategy<Value = Mode> {
    prop::sample::select(Mode::ALL.to_vec())
}

fn build(cfg: &RnnConfig, seed: u64) -> (Rnn, VarMap) {
    let vm = VarMap::new();
    let rnn = Rnn::new(cfg, seeded_var_builder(&vm, seed, DType::F64, &Device::Cpu)).unwrap();
    (rnn, vm)
}

fn randn(seed: u64, dims: &[usize]) -> Tensor {
    // Uses the seeded builder as a reproducible source of normal data.
    let vm = VarMap::new();
    seeded_var_builder(&vm, seed, DType::F64, &Device::Cpu)
        .get_with_hints(
            dims,
            "data",
            candle_nn::Init::Randn {
                mean: 0.0,
                stdev: 1.0,
            },
        )
        .unwrap()
        .detach()
}

fn random_state(rnn: &Rnn, batch: usize, seed: u64) -> RnnState {
    let z = rnn.zero_state(batch).unwrap();
    let h = randn(seed, z.h.dims());
    let c = z.c.map(|c| randn(seed + 1, c.dims()));
    RnnState::new(h, c)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, failure_persistence: None, .. ProptestConfig::default() })]

    #[test]
    fn two_chunks_with_carried_state_equal_one_run(
        mode in mode_strategy(),
        layers in 1usize..=3,
        batch in 1usize..=3,
        seq_len in 2usize..=7,
        split in 1usize..=6,
        hidden in 1usize..=5,
        proj in 0usize..=2,
        batch_first in any::<bool>(),
        seed in 0u64..1000,
    ) {
        let split = split.min(seq_len - 1);
        let proj = if mode == Mode::Lstm && proj < hidden { proj } else { 0 };
        let cfg = RnnConfig::new(mode, 3, hidden)
            .with_num_layers(layers)
            .with_proj_size(proj)
            .with_batch_first(batch_first);
        let (rnn, _vm) = build(&cfg, seed);
        let time_axis = if batch_first { 1 } else { 0 };
        let dims = if batch_first { [batch, seq_len, 3] } else { [seq_len, batch, 3] };
        let xs = randn(seed + 7, &dims);
        let s0 = random_state(&rnn, batch, seed + 11);
        let (ys, fin) = rnn.forward_with_state(&xs, Some(&s0)).unwrap();
        let (ys1, mid) = rnn.forward_with_state(&xs.narrow(time_axis, 0, split).unwrap(), Some(&s0)).unwrap();
        let rest = xs.narrow(time_axis, split, seq_len - split).unwrap();
        let (ys2, fin2) = rnn.forward_with_state(&rest, Some(&mid.detach())).unwrap();
        let joined = Tensor::cat(&[ys1, ys2], time_axis).unwrap();
        prop_assert!(max_abs_diff(&ys, &joined) < TOL);
        prop_assert!(max_abs_diff(&fin.h, &fin2.h) < TOL);
        if let (Some(c), Some(c2)) = (&fin.c, &fin2.c) {
            prop_assert!(max_abs_diff(c, c2) < TOL);
        }
    }

    #[test]
    fn padded_batch_with_lengths_equals_each_sequence_alone(
        mode in mode_strategy(),
        layers in 1usize..=2,
        bidirectional in any::<bool>(),
        lengths in prop::collection::vec(1usize..=6, 1..=4),
        hidden in 1usize..=4,
        with_state in any::<bool>(),
        seed in 0u64..1000,
    ) {
        let seq_len = *lengths.iter().max().unwrap() + 1; // padding on every row
        let batch = lengths.len();
        let cfg = RnnConfig::new(mode, 2, hidden)
            .with_num_layers(layers)
            .with_bidirectional(bidirectional);
        let (rnn, _vm) = build(&cfg, seed);
        // Random padding values: they must not matter.
        let xs = randn(seed + 3, &[batch, seq_len, 2]);
        let s0 = with_state.then(|| random_state(&rnn, batch, seed + 5));
        let (ys, fin) = rnn.forward_t(&xs, s0.as_ref(), Some(&lengths), false).unwrap();
        for (b, &len) in lengths.iter().enumerate() {
            let x_b = xs.i((b..b + 1, 0..len, ..)).unwrap();
            let s_b = s0.as_ref().map(|s| {
                let idx = Tensor::new(&[b as u32], &Device::Cpu).unwrap();
                s.index_select(&idx, 1).unwrap()
            });
            let (y_b, fin_b) = rnn.forward_with_state(&x_b, s_b.as_ref()).unwrap();
            prop_assert!(max_abs_diff(&ys.i((b..b + 1, 0..len, ..)).unwrap(), &y_b) < TOL);
            let pad = ys.i((b, len.., ..)).unwrap();
            prop_assert_eq!(pad.abs().unwrap().max_all().unwrap().to_scalar::<f64>().unwrap(), 0.0);
            prop_assert!(max_abs_diff(&fin.h.i((.., b..b + 1, ..)).unwrap(), &fin_b.h) < TOL);
            if let (Some(c), Some(c_b)) = (&fin.c, &fin_b.c) {
                prop_assert!(max_abs_diff(&c.i((.., b..b + 1, ..)).unwrap(), c_b) < TOL);
            }
        }
    }

    #[test]
    fn cell_steps_equal_the_single_layer(
        mode in mode_strategy(),
        batch in 1usize..=3,
        seq_len in 1usize..=6,
        hidden in 1usize..=5,
        bias in any::<bool>(),
        seed in 0u64..1000,
    ) {
        let cfg = RnnConfig::new(mode, 3, hidden).with_bias(bias);
        let (rnn, _vm) = build(&cfg, seed);
        // The same tensors under the cell's names (no `_l0` suffix).
        let cell_weights: std::collections::HashMap<String, Tensor> = rnn
            .named_parameters()
            .into_iter()
            .map(|(n, t)| (n.trim_end_matches("_l0").to_string(), t))
            .collect();
        let vb = VarBuilder::from_tensors(cell_weights, DType::F64, &Device::Cpu);
        let step: StepFn = match mode {
            Mode::Lstm => {
                let cell = LstmCell::new(&CellConfig::new(3, hidden).with_bias(bias), vb).unwrap();
                Box::new(move |x, s| cell.step(x, Some(s)).unwrap())
            }
            Mode::Gru => {
                let cell = GruCell::new(&CellConfig::new(3, hidden).with_bias(bias), vb).unwrap();
                Box::new(move |x, s| cell.step(x, Some(s)).unwrap())
            }
            Mode::RnnTanh | Mode::RnnRelu => {
                let nl = if mode == Mode::RnnTanh { Nonlinearity::Tanh } else { Nonlinearity::Relu };
                let cell = RnnCell::new(&CellConfig::new(3, hidden).with_nonlinearity(nl).with_bias(bias), vb).unwrap();
                Box::new(move |x, s| cell.step(x, Some(s)).unwrap())
            }
        };
        let xs = randn(seed + 1, &[batch, seq_len, 3]);
        let s0 = random_state(&rnn, batch, seed + 2);
        let (ys, fin) = rnn.forward_with_state(&xs, Some(&s0)).unwrap();
        let mut s = s0.layer(0).unwrap();
        for t in 0..seq_len {
            s = step(&xs.i((.., t, ..)).unwrap(), &s);
            prop_assert!(max_abs_diff(&ys.i((.., t, ..)).unwrap(), &s.h) < TOL);
        }
        prop_assert!(max_abs_diff(&fin.h.i(0).unwrap(), &s.h) < TOL);
        if let (Some(c), Some(c_s)) = (&fin.c, &s.c) {
            prop_assert!(max_abs_diff(&c.i(0).unwrap(), c_s) < TOL);
        }
    }

    #[test]
    fn layer_step_repeated_equals_forward(
        mode in mode_strategy(),
        layers in 1usize..=3,
        batch in 1usize..=3,
        seq_len in 1usize..=5,
        batch_first in any::<bool>(),
        seed in 0u64..1000,
    ) {
        let cfg = RnnConfig::new(mode, 2, 4).with_num_layers(layers).with_batch_first(batch_first);
        let (rnn, _vm) = build(&cfg, seed);
        let time_axis = if batch_first { 1 } else { 0 };
        let dims = if batch_first { [batch, seq_len, 2] } else { [seq_len, batch, 2] };
        let xs = randn(seed, &dims);
        let (ys, fin) = rnn.forward_with_state(&xs, None).unwrap();
        let mut state: Option<RnnState> = None;
        for t in 0..seq_len {
            let (y_t, s) = rnn.step(&xs.narrow(time_axis, t, 1).unwrap().squeeze(time_axis).unwrap(), state.as_ref()).unwrap();
            prop_assert!(max_abs_diff(&ys.narrow(time_axis, t, 1).unwrap().squeeze(time_axis).unwrap(), &y_t) < TOL);
            state = Some(s);
        }
        prop_assert!(max_abs_diff(&fin.h, &state.unwrap().h) < TOL);
    }
}

#[test]
fn unbatched_input_equals_batch_of_one() -> Result<()> {
    for mode in Mode::ALL {
        let cfg = RnnConfig::new(mode, 3, 4)
            .with_num_layers(2)
            .with_bidirectional(true);
        let (rnn, _vm) = build(&cfg, 1);
        let xs = randn(2, &[5, 3]);
        let (ys, fin) = rnn.forward_with_state(&xs, None)?;
        let (yb, finb) = rnn.forward_with_state(&xs.unsqueeze(0)?, None)?;
        assert_eq!(ys.dims(), &[5, 8]);
        assert_eq!(fin.h.dims(), &[4, 4]);
        assert!(max_abs_diff(&ys, &yb.squeeze(0)?) < TOL);
        assert!(max_abs_diff(&fin.h, &finb.h.squeeze(1)?) < TOL);
    }
    Ok(())
}

#[test]
fn dropout_only_in_training_and_reproducible() -> Result<()> {
    let cfg = RnnConfig::new(Mode::Gru, 3, 8)
        .with_num_layers(2)
        .with_dropout(0.5);
    let (rnn, _vm) = build(&cfg, 4);
    let xs = randn(9, &[2, 6, 3]);
    let (eval1, _) = rnn.forward_t(&xs, None, None, false)?;
    let (eval2, _) = rnn.forward_with_state(&xs, None)?;
    assert_eq!(max_abs_diff(&eval1, &eval2), 0.0, "eval is deterministic");
    let (train1, _) = rnn.forward_t(&xs, None, None, true)?;
    let (train2, _) = rnn.forward_t(&xs, None, None, true)?;
    assert!(
        max_abs_diff(&train1, &eval1) > 1e-3,
        "dropout changes training outputs"
    );
    assert!(
        max_abs_diff(&train1, &train2) > 1e-3,
        "each call draws new masks"
    );
    // Same seed and call count: same masks.
    let again = rnn.set_dropout_seed(0);
    let (train1b, _) = again.forward_t(&xs, None, None, true)?;
    assert_eq!(max_abs_diff(&train1, &train1b), 0.0);
    // A single layer has no inter-layer dropout.
    let single = RnnConfig::new(Mode::Gru, 3, 8).with_dropout(0.5);
    let (rnn1, _vm1) = build(&single, 4);
    let (a, _) = rnn1.forward_t(&xs, None, None, true)?;
    let (b, _) = rnn1.forward_with_state(&xs, None)?;
    assert_eq!(max_abs_diff(&a, &b), 0.0);
    Ok(())
}

#[test]
fn truncated_bptt_detach_stops_gradients() -> Result<()> {
    let cfg = RnnConfig::new(Mode::Lstm, 2, 3);
    let (rnn, vm) = build(&cfg, 5);
    let x1 = candle_core::Var::from_tensor(&randn(1, &[1, 4, 2]))?;
    let x2 = randn(2, &[1, 4, 2]);
    let (_, s1) = rnn.forward_with_state(&x1, None)?;
    let (y_carried, _) = rnn.forward_with_state(&x2, Some(&s1))?;
    let (y_detached, _) = rnn.forward_with_state(&x2, Some(&s1.detach()))?;
    assert_eq!(max_abs_diff(&y_carried, &y_detached), 0.0, "same values");
    let g = y_carried.sum_all()?.backward()?;
    assert!(
        g.get(&x1).is_some(),
        "a carried state passes gradients to the previous window"
    );
    let g = y_detached.sum_all()?.backward()?;
    assert!(g.get(&x1).is_none(), "a detached state does not");
    for var in vm.all_vars() {
        assert!(
            g.get(&var).is_some(),
            "every parameter still gets a gradient"
        );
    }
    Ok(())
}

#[test]
fn detached_layer_computes_the_same_without_a_graph() -> Result<()> {
    let cfg = RnnConfig::new(Mode::Lstm, 3, 4).with_num_layers(2);
    let (rnn, vm) = build(&cfg, 8);
    let xs = randn(1, &[2, 5, 3]);
    let (a, _) = rnn.forward_with_state(&xs, None)?;
    let (b, _) = rnn.detached().forward_with_state(&xs, None)?;
    assert_eq!(max_abs_diff(&a, &b), 0.0);
    let grads = b.sum_all()?.backward()?;
    assert!(vm.all_vars().iter().all(|v| grads.get(v).is_none()));
    Ok(())
}
