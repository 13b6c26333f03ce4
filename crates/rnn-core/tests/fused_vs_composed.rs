//! The fused CPU op and its composed twin compute the same function: outputs, final states and
//! every gradient agree on random configurations (all modes and options, variable lengths,
//! training with dropout), in f64 to 1e-10 and in f32 to 1e-5; so do the outputs of the same
//! forward with nothing tracked (no autograd graph).
//!
//! With `RNN_TEST_DEVICE` set to another device (`rnn_core::testing`), the fused CPU op is the
//! reference and that device's default path and its composed twin are held equal to it.

mod common;
use common::{implementations, max_abs_diff, scale};

use candle_core::{DType, Device, Tensor, Var};
use candle_nn::{Init, VarMap};
use proptest::prelude::*;
use rnn_core::init::seeded_var_builder;
use rnn_core::kernels::{with_direction_split, with_unit_split, DirectionSplit, UnitSplit};
use rnn_core::{Implementation, Mode, Rnn, RnnConfig, RnnState};

struct Case {
    cfg: RnnConfig,
    batch: usize,
    seq_len: usize,
    lengths: Option<Vec<usize>>,
    with_state: bool,
    train: bool,
    dtype: DType,
    seed: u64,
}

/// Runs `case` with `imp`; returns output, final h, final c and the gradients of a fixed random
/// linear loss for the input, the initial state (when given) and every parameter, by name.
fn run(case: &Case, imp: Implementation, dev: &Device) -> Vec<(String, Tensor)> {
    let params = VarMap::new();
    let rnn = Rnn::new(
        &case.cfg,
        seeded_var_builder(&params, case.seed, case.dtype, dev),
    )
    .unwrap()
    .with_implementation(imp)
    .set_dropout_seed(case.seed);
    let data = VarMap::new();
    let vb = seeded_var_builder(&data, case.seed + 1, case.dtype, dev);
    let randn = |name: &str, dims: &[usize]| {
        Var::from_tensor(
            &vb.get_with_hints(
                dims,
                name,
                Init::Randn {
                    mean: 0.0,
                    stdev: 1.0,
                },
            )
            .unwrap(),
        )
        .unwrap()
    };
    let x_dims = if case.cfg.batch_first {
        [case.batch, case.seq_len, case.cfg.input_size]
    } else {
        [case.seq_len, case.batch, case.cfg.input_size]
    };
    let x = randn("x", &x_dims);
    let zero = rnn.zero_state(case.batch).unwrap();
    let h0 = randn("h0", zero.h.dims());
    let c0 = zero.c.as_ref().map(|c| randn("c0", c.dims()));
    let state = case.with_state.then(|| {
        RnnState::new(
            h0.as_tensor().clone(),
            c0.as_ref().map(|c| c.as_tensor().clone()),
        )
    });
    let (ys, fin) = rnn
        .forward_t(
            x.as_tensor(),
            state.as_ref(),
            case.lengths.as_deref(),
            case.train,
        )
        .unwrap();
    let w_y = randn("w_y", ys.dims());
    let w_h = randn("w_h", fin.h.dims());
    let mut loss = ((&ys * w_y.as_tensor()).unwrap().sum_all().unwrap()
        + (&fin.h * w_h.as_tensor()).unwrap().sum_all().unwrap())
    .unwrap();
    let w_c = fin.c.as_ref().map(|c| randn("w_c", c.dims()));
    if let (Some(c), Some(w_c)) = (&fin.c, &w_c) {
        loss = (loss + (c * w_c.as_tensor()).unwrap().sum_all().unwrap()).unwrap();
    }
    let grads = loss.backward().unwrap();
    let mut out = vec![("output".to_string(), ys), ("h_n".into(), fin.h.clone())];
    if let Some(c) = fin.c {
        out.push(("c_n".into(), c));
    }
    // The same loss with the input as plain data (no gradient for it: the fused op then skips
    // the input-gradient product); the parameters' gradients are unchanged.
    let x_data = x.as_tensor().detach();
    let (ys_d, fin_d) = rnn
        .forward_t(&x_data, state.as_ref(), case.lengths.as_deref(), case.train)
        .unwrap();
    let mut loss_d = ((&ys_d * w_y.as_tensor()).unwrap().sum_all().unwrap()
        + (&fin_d.h * w_h.as_tensor()).unwrap().sum_all().unwrap())
    .unwrap();
    if let (Some(c), Some(w_c)) = (&fin_d.c, &w_c) {
        loss_d = (loss_d + (c * w_c.as_tensor()).unwrap().sum_all().unwrap()).unwrap();
    }
    let grads_d = loss_d.backward().unwrap();
    assert!(
        grads_d.get(&x_data).is_none(),
        "{imp:?}: gradient for plain data"
    );
    for (name, p) in rnn.named_parameters() {
        let g = grads_d
            .get(&p)
            .unwrap_or_else(|| panic!("{imp:?}: no gradient for {name} with data input"));
        out.push((format!("data-input.grad.{name}"), g.clone()));
        // (With dropout in training the second forward draws other masks.)
        if case.train && case.cfg.dropout > 0.0 && case.cfg.num_layers > 1 {
            continue;
        }
        let d = max_abs_diff(g, grads.get(&p).unwrap());
        assert!(
            d <= 1e-5,
            "{imp:?}: grad {name} differs with a data input by {d:e} ({:?}, train {})",
            case.cfg,
            case.train
        );
    }
    // The same forward with nothing tracked (the fused op then reads its arguments in place).
    let detach = |t: &Tensor| t.detach();
    let state = state.map(|s| RnnState::new(detach(&s.h), s.c.as_ref().map(detach)));
    let (ys_u, fin_u) = rnn
        .detached()
        .forward_t(
            &x.as_tensor().detach(),
            state.as_ref(),
            case.lengths.as_deref(),
            case.train,
        )
        .unwrap();
    out.push(("untracked.output".into(), ys_u));
    out.push(("untracked.h_n".into(), fin_u.h));
    if let Some(c) = fin_u.c {
        out.push(("untracked.c_n".into(), c));
    }
    out.push(("grad.x".into(), grads.get(&x).expect("grad x").clone()));
    if case.with_state {
        out.push(("grad.h0".into(), grads.get(&h0).expect("grad h0").clone()));
        if let Some(c0) = &c0 {
            out.push(("grad.c0".into(), grads.get(c0).expect("grad c0").clone()));
        }
    }
    for (name, p) in rnn.named_parameters() {
        let g = grads
            .get(&p)
            .unwrap_or_else(|| panic!("{imp:?}: no gradient for {name}"));
        out.push((format!("grad.{name}"), g.clone()));
    }
    out
}

fn assert_same(case: &Case) -> Result<(), TestCaseError> {
    let tol = if case.dtype == DType::F64 {
        1e-10
    } else {
        1e-5
    };
    let Some(device) = rnn_core::testing::device() else {
        return Ok(());
    };
    let fused = run(case, Implementation::Fused, &Device::Cpu);
    for imp in implementations(&device) {
        if device.is_cpu() && imp == Implementation::Fused {
            continue;
        }
        let other = run(case, imp, &device);
        prop_assert_eq!(fused.len(), other.len());
        for ((name, f), (_, c)) in fused.iter().zip(&other) {
            let (d, tol) = (max_abs_diff(f, c), tol * scale(c));
            prop_assert!(
                d <= tol,
                "{} ({:?} on {:?}): max abs diff {:e} > {:e} ({:?})",
                name,
                imp,
                device.location(),
                d,
                tol,
                case.cfg
            );
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, failure_persistence: None, .. ProptestConfig::default() })]

    #[test]
    fn fused_equals_composed(
        mode in prop::sample::select(Mode::ALL.to_vec()),
        layers in 1usize..=3,
        bidirectional in any::<bool>(),
        batch_first in any::<bool>(),
        bias in any::<bool>(),
        proj in 0usize..=3,
        hidden in 1usize..=6,
        input in 1usize..=4,
        batch in 1usize..=4,
        seq_len in 1usize..=6,
        use_lengths in any::<bool>(),
        lengths_seed in any::<u64>(),
        with_state in any::<bool>(),
        dropout in prop::sample::select(vec![0.0, 0.3]),
        f32_dtype in any::<bool>(),
        split_units in any::<bool>(),
        side_by_side in any::<bool>(),
        seed in 0u64..10_000,
    ) {
        let proj = if mode == Mode::Lstm && proj < hidden { proj } else { 0 };
        let lengths = use_lengths.then(|| {
            (0..batch).map(|b| 1 + ((lengths_seed >> (8 * b)) as usize % seq_len)).collect::<Vec<_>>()
        });
        let cfg = RnnConfig::new(mode, input, hidden)
            .with_num_layers(layers)
            .with_bidirectional(bidirectional)
            .with_batch_first(batch_first)
            .with_bias(bias)
            .with_proj_size(proj)
            .with_dropout(dropout);
        let dtype = if f32_dtype { DType::F32 } else { DType::F64 };
        let case = Case { cfg, batch, seq_len, lengths, with_state, train: dropout > 0.0, dtype, seed };
        // Half the cases split the hidden units across threads wherever the fused op can, and
        // half run the directions of bidirectional layers side by side (one op for both).
        let split = if split_units { UnitSplit::On } else { UnitSplit::Off };
        let directions = if side_by_side { DirectionSplit::On } else { DirectionSplit::Off };
        with_direction_split(directions, || with_unit_split(split, || assert_same(&case)))?;
    }
}

/// The two directions of a bidirectional layer run side by side (one op for both, each
/// direction on one thread of a two-thread pool) compute bit for bit what they compute one
/// after the other on one thread: outputs, final states, the untracked forward and every
/// gradient, for each cell, with a projection, variable lengths, a given initial state,
/// dropout between layers and layer normalisation. (The input's gradient adds the two
/// directions' parts in either order, which gives the same bits.)
#[test]
fn bidirectional_layers_side_by_side_equal_one_direction_after_the_other() {
    let pool = |n| {
        rayon::ThreadPoolBuilder::new()
            .num_threads(n)
            .build()
            .unwrap()
    };
    let (one, two) = (pool(1), pool(2));
    for mode in Mode::ALL {
        for (batch, hidden, proj, lengths, layers, dropout, layer_norm) in [
            (1, 24, 0, None, 1, 0.0, false),
            (5, 16, 5, Some(vec![7, 3, 9, 1, 9]), 2, 0.25, false),
            (12, 40, 0, None, 2, 0.0, false),
            // Layer-normalised (LSTM and GRU): side by side in the untracked forward only.
            (3, 20, 0, Some(vec![9, 4, 6]), 2, 0.0, true),
        ] {
            let layer_norm = layer_norm && matches!(mode, Mode::Lstm | Mode::Gru);
            let proj = if mode == Mode::Lstm { proj } else { 0 };
            let cfg = RnnConfig::new(mode, 6, hidden)
                .with_num_layers(layers)
                .with_bidirectional(true)
                .with_proj_size(proj)
                .with_dropout(dropout)
                .with_layer_norm(layer_norm);
            let case = Case {
                cfg,
                batch,
                seq_len: 9,
                lengths,
                with_state: batch > 1,
                train: dropout > 0.0,
                dtype: DType::F32,
                seed: 11 + batch as u64,
            };
            let side = two.install(|| {
                with_direction_split(DirectionSplit::On, || {
                    run(&case, Implementation::Fused, &Device::Cpu)
                })
            });
            let apart = one.install(|| {
                with_direction_split(DirectionSplit::Off, || {
                    run(&case, Implementation::Fused, &Device::Cpu)
                })
            });
            assert_eq!(side.len(), apart.len());
            for ((name, s), (_, a)) in side.iter().zip(&apart) {
                let s = s.flatten_all().unwrap().to_vec1::<f32>().unwrap();
                let a = a.flatten_all().unwrap().to_vec1::<f32>().unwrap();
                assert!(
                    s == a,
                    "{mode:?} batch {batch} hidden {hidden}: {name} differs"
                );
            }
        }
    }
}

/// A larger f32 case than the property test draws: long enough for accumulated rounding to show.
#[test]
fn fused_equals_composed_on_a_larger_f32_case() {
    for mode in Mode::ALL {
        let cfg = RnnConfig::new(mode, 24, 32)
            .with_num_layers(2)
            .with_bidirectional(true);
        let case = Case {
            cfg,
            batch: 5,
            seq_len: 30,
            lengths: Some(vec![30, 7, 19, 1, 25]),
            with_state: true,
            train: false,
            dtype: DType::F32,
            seed: 3,
        };
        assert_same(&case).unwrap();
    }
}

/// Runs with the hidden units split across threads, in f32 on every matrix kernel this CPU has,
/// with variable lengths, both directions, two layers: batches of 1 and 3 (as batch-1 inference
/// runs at large hidden sizes; `W_hh`'s rows read in place) and of 9 and 16 (each slice's rows
/// packed for the register-blocked kernels, partial blocks of rows and columns); forward, final
/// state and every gradient equal the composed twin.
#[test]
fn fused_equals_composed_with_the_hidden_units_split_across_threads() {
    for kernel in rnn_core::kernels::supported() {
        for mode in Mode::ALL {
            for (batch, lengths) in [
                (1, None),
                (3, Some(vec![30, 9, 1])),
                (9, Some(vec![30, 3, 1, 7, 30, 2, 5, 8, 4])),
                (16, None),
            ] {
                let cfg = RnnConfig::new(mode, 24, 40)
                    .with_num_layers(2)
                    .with_bidirectional(true);
                let case = Case {
                    cfg,
                    batch,
                    seq_len: 30,
                    lengths,
                    with_state: true,
                    train: false,
                    dtype: DType::F32,
                    seed: 5,
                };
                rnn_core::kernels::with_kernel(kernel, || {
                    with_unit_split(UnitSplit::On, || assert_same(&case))
                })
                .unwrap()
                .unwrap_or_else(|e| panic!("{kernel} kernel, {mode:?}, batch {batch}: {e}"));
            }
        }
    }
}

/// Where `UnitSplit::Auto` splits a forward pass by units and leaves its backward to the batch
/// path (16 rows, a `W_hh` over `UNIT_SPLIT_MID_BATCH_MIN_BYTES`, two threads): the two halves
/// agree, every gradient equals the composed twin.
#[test]
fn fused_equals_composed_with_a_split_forward_and_a_batch_backward() {
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(2)
        .build()
        .unwrap();
    for (mode, hidden) in [(Mode::Lstm, 768), (Mode::Gru, 840)] {
        let gates = if mode == Mode::Lstm { 4 } else { 3 };
        assert!(
            gates * hidden * hidden * 4 >= rnn_core::kernels::UNIT_SPLIT_MID_BATCH_MIN_BYTES,
            "{mode:?}: W_hh too small to split"
        );
        let case = Case {
            cfg: RnnConfig::new(mode, 8, hidden),
            batch: rnn_core::kernels::UNIT_SPLIT_MID_BATCH_MIN_ROWS,
            seq_len: 3,
            lengths: Some(vec![3, 1, 2, 3, 3, 2, 1, 3, 3, 3, 2, 3, 1, 3, 3, 2]),
            with_state: true,
            train: false,
            dtype: DType::F32,
            seed: 31,
        };
        pool.install(|| with_unit_split(UnitSplit::Auto, || assert_same(&case)))
            .unwrap_or_else(|e| panic!("{mode:?}: {e}"));
    }
}

/// A batch large enough to be split across threads (chunks of at least 4 rows), with variable
/// lengths and a projection: the chunked recurrence equals the composed one.
#[test]
fn fused_equals_composed_when_the_batch_is_split_across_threads() {
    for mode in Mode::ALL {
        let proj = if mode == Mode::Lstm { 5 } else { 0 };
        for batch_first in [true, false] {
            let cfg = RnnConfig::new(mode, 6, 8)
                .with_num_layers(2)
                .with_bidirectional(true)
                .with_proj_size(proj)
                .with_batch_first(batch_first);
            let case = Case {
                cfg,
                batch: 11,
                seq_len: 9,
                lengths: Some(vec![9, 3, 1, 7, 9, 2, 5, 8, 4, 6, 9]),
                with_state: true,
                train: false,
                dtype: DType::F64,
                seed: 17,
            };
            assert_same(&case).unwrap();
        }
    }
}

/// f32 with batch chunks of at least 6 rows, so each step's input projection runs inside the
/// chunk's recurrence through the packed kernel (on CPUs with AVX2+FMA or AVX-512), with sizes
/// that leave partial register blocks and panels, variable lengths, both layouts, a projection,
/// two bidirectional layers; forward, final state and every gradient equal the composed twin.
#[test]
fn fused_equals_composed_with_the_per_step_input_projection() {
    for mode in Mode::ALL {
        let proj = if mode == Mode::Lstm { 7 } else { 0 };
        for batch_first in [true, false] {
            let cfg = RnnConfig::new(mode, 13, 9)
                .with_num_layers(2)
                .with_bidirectional(true)
                .with_proj_size(proj)
                .with_batch_first(batch_first);
            let case = Case {
                cfg,
                batch: 14,
                seq_len: 11,
                lengths: Some(vec![11, 3, 1, 7, 11, 2, 5, 8, 4, 6, 11, 10, 9, 1]),
                with_state: true,
                train: false,
                dtype: DType::F32,
                seed: 23,
            };
            assert_same(&case).unwrap();
        }
    }
}
