//! Bad input gets an error (never a panic) that names the argument and the expected and actual
//! values.

use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};
use rnn_core::init::seeded_var_builder;
use rnn_core::{CellConfig, GruCell, LstmCell, Mode, Rnn, RnnConfig, RnnState};
use std::collections::HashMap;

fn lstm(cfg: &RnnConfig) -> Rnn {
    let vm = VarMap::new();
    Rnn::new(cfg, seeded_var_builder(&vm, 0, DType::F32, &Device::Cpu)).unwrap()
}

fn zeros(dims: &[usize]) -> Tensor {
    Tensor::zeros(dims, DType::F32, &Device::Cpu).unwrap()
}

/// Asserts `r` is an error whose message contains every needle.
fn assert_err<T: std::fmt::Debug>(r: candle_core::Result<T>, needles: &[&str]) {
    let msg = r.expect_err("expected an error").to_string();
    for n in needles {
        assert!(msg.contains(n), "error message {msg:?} lacks {n:?}");
    }
}

#[test]
fn input_rank_and_feature_size() {
    let rnn = lstm(&RnnConfig::new(Mode::Lstm, 3, 4));
    assert_err(
        rnn.forward_with_state(&zeros(&[2, 3, 4, 5]), None),
        &["rank 4", "[2, 3, 4, 5]", "(batch, seq_len, input_size)"],
    );
    assert_err(rnn.forward_with_state(&zeros(&[5]), None), &["rank 1"]);
    assert_err(
        rnn.forward_with_state(&zeros(&[2, 5, 7]), None),
        &["7 features", "input_size = 3"],
    );
    assert_err(
        rnn.forward_with_state(&zeros(&[2, 0, 3]), None),
        &["at least one step", "[2, 0, 3]"],
    );
    assert_err(
        rnn.forward_with_state(&zeros(&[0, 2, 3]), None),
        &["at least one step"],
    );
}

#[test]
fn state_shapes_are_named() {
    let cfg = RnnConfig::new(Mode::Lstm, 3, 4).with_num_layers(2);
    let rnn = lstm(&cfg);
    let xs = zeros(&[5, 6, 3]);
    let bad_h = RnnState::new(zeros(&[1, 5, 4]), Some(zeros(&[2, 5, 4])));
    assert_err(
        rnn.forward_with_state(&xs, Some(&bad_h)),
        &["state.h", "[2, 5, 4]", "[1, 5, 4]"],
    );
    let bad_c = RnnState::new(zeros(&[2, 5, 4]), Some(zeros(&[2, 5, 3])));
    assert_err(
        rnn.forward_with_state(&xs, Some(&bad_c)),
        &["state.c", "[2, 5, 4]", "[2, 5, 3]"],
    );
    let no_c = RnnState::new(zeros(&[2, 5, 4]), None);
    assert_err(rnn.forward_with_state(&xs, Some(&no_c)), &["needs c"]);
    let gru = lstm(&RnnConfig::new(Mode::Gru, 3, 4));
    let extra_c = RnnState::new(zeros(&[1, 5, 4]), Some(zeros(&[1, 5, 4])));
    assert_err(
        gru.forward_with_state(&xs, Some(&extra_c)),
        &["only for LSTM"],
    );
    // Projection: h is (layers, batch, proj).
    let proj = lstm(&RnnConfig::new(Mode::Lstm, 3, 4).with_proj_size(2));
    let wrong = RnnState::new(zeros(&[1, 5, 4]), Some(zeros(&[1, 5, 4])));
    assert_err(
        proj.forward_with_state(&xs, Some(&wrong)),
        &["state.h", "[1, 5, 2]"],
    );
}

#[test]
fn lengths_are_checked() {
    let rnn = lstm(&RnnConfig::new(Mode::Gru, 3, 4));
    let xs = zeros(&[3, 5, 3]);
    assert_err(
        rnn.forward_t(&xs, None, Some(&[]), false),
        &["lengths", "empty"],
    );
    assert_err(
        rnn.forward_t(&xs, None, Some(&[1, 2]), false),
        &["one length per batch row (3)", "2 lengths"],
    );
    assert_err(
        rnn.forward_t(&xs, None, Some(&[1, 0, 2]), false),
        &["lengths[1] is 0"],
    );
    assert_err(
        rnn.forward_t(&xs, None, Some(&[1, 6, 2]), false),
        &["lengths[1] = 6", "5"],
    );
}

#[test]
fn config_is_validated_at_construction() {
    let vm = VarMap::new();
    let vb = seeded_var_builder(&vm, 0, DType::F32, &Device::Cpu);
    assert_err(
        Rnn::new(
            &RnnConfig::new(Mode::Gru, 3, 4).with_proj_size(2),
            vb.clone(),
        ),
        &["proj_size", "LSTM only"],
    );
    assert_err(
        Rnn::new(
            &RnnConfig::new(Mode::Lstm, 3, 4).with_proj_size(4),
            vb.clone(),
        ),
        &["proj_size", "hidden_size"],
    );
    assert_err(
        Rnn::new(
            &RnnConfig::new(Mode::Lstm, 3, 4).with_num_layers(0),
            vb.clone(),
        ),
        &["num_layers"],
    );
    assert_err(
        Rnn::new(
            &RnnConfig::new(Mode::Lstm, 3, 4).with_dropout(1.5),
            vb.clone(),
        ),
        &["dropout", "1.5"],
    );
    assert_err(LstmCell::new(&CellConfig::new(0, 4), vb), &["input_size"]);
}

#[test]
fn dtype_and_device_mismatch() {
    let rnn = lstm(&RnnConfig::new(Mode::Lstm, 3, 4));
    let xs64 = Tensor::zeros((2, 5, 3), DType::F64, &Device::Cpu).unwrap();
    assert_err(rnn.forward_with_state(&xs64, None), &["xs", "F64", "F32"]);
    let xs = zeros(&[2, 5, 3]);
    let h64 = Tensor::zeros((1, 2, 4), DType::F64, &Device::Cpu).unwrap();
    let state = RnnState::new(h64, Some(zeros(&[1, 2, 4])));
    assert_err(
        rnn.forward_with_state(&xs, Some(&state)),
        &["state.h", "F64"],
    );
}

#[test]
fn missing_or_misshapen_weights_name_the_tensor() {
    let cfg = RnnConfig::new(Mode::Lstm, 3, 4).with_num_layers(2);
    let vm = VarMap::new();
    let full = lstm(&cfg);
    let _ = vm;
    let mut tensors: HashMap<String, Tensor> = full.named_parameters().into_iter().collect();
    tensors.remove("bias_hh_l1");
    let vb = VarBuilder::from_tensors(tensors.clone(), DType::F32, &Device::Cpu);
    assert_err(Rnn::new(&cfg, vb), &["bias_hh_l1"]);
    tensors.insert("bias_hh_l1".into(), zeros(&[16]));
    tensors.insert("weight_hh_l0".into(), zeros(&[16, 5]));
    let vb = VarBuilder::from_tensors(tensors, DType::F32, &Device::Cpu);
    assert_err(Rnn::new(&cfg, vb), &["weight_hh_l0", "[16, 4]", "[16, 5]"]);
}

#[test]
fn cells_check_their_inputs() {
    let vm = VarMap::new();
    let cell = GruCell::new(
        &CellConfig::new(3, 4),
        seeded_var_builder(&vm, 0, DType::F32, &Device::Cpu),
    )
    .unwrap();
    assert_err(
        cell.step(&zeros(&[2, 5]), None),
        &["x_t", "[2, 3]", "[2, 5]"],
    );
    let s = RnnState::new(zeros(&[2, 3]), None);
    assert_err(
        cell.step(&zeros(&[2, 3]), Some(&s)),
        &["state.h", "[2, 4]", "[2, 3]"],
    );
    assert_err(cell.step(&zeros(&[1, 2, 3]), None), &["rank 3"]);
    let lstm_cell = LstmCell::new(
        &CellConfig::new(3, 4),
        seeded_var_builder(&vm, 0, DType::F32, &Device::Cpu).pp("l"),
    )
    .unwrap();
    let s = RnnState::new(zeros(&[2, 4]), None);
    assert_err(
        lstm_cell.step(&zeros(&[2, 3]), Some(&s)),
        &["state.c", "required"],
    );
}

#[test]
fn bidirectional_step_is_refused() {
    let rnn = lstm(&RnnConfig::new(Mode::Lstm, 3, 4).with_bidirectional(true));
    assert_err(rnn.step(&zeros(&[2, 3]), None), &["bidirectional"]);
}
