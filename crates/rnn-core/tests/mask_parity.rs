//! The mask options (variational input/output/recurrent dropout, zoneout on `h` and `c`, weight
//! dropout on `W_hh`) against a reference written with plain PyTorch ops: outputs, final states
//! and the gradients of a scalar loss with respect to the input, the initial state and every
//! parameter, with the masks the fixture carries passed in through `Rnn::forward_with_masks`.
//! Fixtures and the reference: `tests/fixtures/gen_mask_fixtures.py`.
//!
//! On the CPU both the fused op and the composed twin are checked; elsewhere (`RNN_TEST_DEVICE`)
//! the device's default path and the composed twin.

mod common;
use common::{implementations, try_max_abs_diff};

use candle_core::{Device, Result, Tensor, Var};
use candle_nn::{VarBuilder, VarMap};
use rnn_core::{Implementation, Mode, Rnn, RnnConfig, RnnMasks, RnnState};
use serde::Deserialize;
use std::collections::HashMap;
use std::path::PathBuf;

/// Absolute tolerances named by the acceptance criteria.
const TOL_F32: f64 = 1e-5;
const TOL_F64: f64 = 1e-10;

#[derive(Debug, Deserialize)]
struct Case {
    name: String,
    mode: Mode,
    num_layers: usize,
    bidirectional: bool,
    batch_first: bool,
    proj_size: usize,
    lengths: Option<Vec<usize>>,
    eval: bool,
    input_dropout: f64,
    output_dropout: f64,
    recurrent_dropout: f64,
    zoneout_h: f64,
    zoneout_c: f64,
    weight_drop: f64,
}

#[derive(Debug, Deserialize)]
struct Sizes {
    input_size: usize,
    hidden_size: usize,
}

#[derive(Debug, Deserialize)]
struct Meta {
    sizes: Sizes,
    cases: Vec<Case>,
}

fn fixture_dir() -> PathBuf {
    rnn_core::testing::fixtures_dir()
        .join("pytorch")
        .join("masks")
}

fn meta() -> Meta {
    let text = std::fs::read_to_string(fixture_dir().join("cases.json")).expect("cases.json");
    serde_json::from_str(&text).expect("cases.json parses")
}

fn config(case: &Case, meta: &Meta) -> RnnConfig {
    RnnConfig::new(case.mode, meta.sizes.input_size, meta.sizes.hidden_size)
        .with_num_layers(case.num_layers)
        .with_bidirectional(case.bidirectional)
        .with_batch_first(case.batch_first)
        .with_proj_size(case.proj_size)
        .with_input_dropout(case.input_dropout)
        .with_output_dropout(case.output_dropout)
        .with_recurrent_dropout(case.recurrent_dropout)
        .with_zoneout_h(case.zoneout_h)
        .with_zoneout_c(case.zoneout_c)
        .with_weight_drop(case.weight_drop)
}

/// The fixture's masks as [`RnnMasks`].
fn masks(t: &HashMap<String, Tensor>, cfg: &RnnConfig) -> RnnMasks {
    let mut m = RnnMasks::none(cfg);
    let get = |key: String| t.get(&key).cloned();
    for (k, slot) in m.input.iter_mut().enumerate() {
        *slot = get(format!("mask.input.{k}"));
    }
    m.output = get("mask.output".into());
    for i in 0..m.recurrent.len() {
        m.recurrent[i] = get(format!("mask.recurrent.{i}"));
        m.zoneout_h[i] = get(format!("mask.zoneout_h.{i}"));
        m.zoneout_c[i] = get(format!("mask.zoneout_c.{i}"));
        m.weight_hh[i] = get(format!("mask.weight_hh.{i}"));
    }
    m
}

fn check(
    failures: &mut Vec<String>,
    label: &str,
    what: &str,
    ours: Option<&Tensor>,
    theirs: &Tensor,
    tol: f64,
) {
    match ours.map(|o| try_max_abs_diff(o, theirs)) {
        None => failures.push(format!("{label}: {what}: no value (no gradient?)")),
        Some(Err(e)) => failures.push(format!("{label}: {what}: {e}")),
        Some(Ok(d)) if d.is_nan() || d > tol => {
            failures.push(format!("{label}: {what}: max abs diff {d:e} > {tol:e}"))
        }
        Some(Ok(_)) => {}
    }
}

/// Runs one case with one implementation; returns the number of tensors compared.
fn run_case(
    case: &Case,
    meta: &Meta,
    dtype_name: &str,
    imp: Implementation,
    device: &Device,
    failures: &mut Vec<String>,
) -> Result<usize> {
    let path = fixture_dir().join(format!("{}_{dtype_name}.safetensors", case.name));
    let t = candle_core::safetensors::load(&path, device)?;
    let tol = if dtype_name == "f32" {
        TOL_F32
    } else {
        TOL_F64
    };
    let label = format!("{}_{dtype_name} ({imp:?})", case.name);
    let cfg = config(case, meta);
    let names: Vec<String> = t
        .keys()
        .filter(|k| k.starts_with("weight_") || k.starts_with("bias_"))
        .cloned()
        .collect();
    let vm = VarMap::new();
    {
        let mut data = vm.data().lock().unwrap();
        for name in &names {
            data.insert(name.clone(), Var::from_tensor(&t[name])?);
        }
    }
    let dtype = t["input"].dtype();
    let rnn = Rnn::new(&cfg, VarBuilder::from_varmap(&vm, dtype, device))?.with_implementation(imp);
    let x = Var::from_tensor(&t["input"])?;
    let h0 = Var::from_tensor(&t["h0"])?;
    let c0 = t.get("c0").map(Var::from_tensor).transpose()?;
    let state = RnnState::new(
        h0.as_tensor().clone(),
        c0.as_ref().map(|c| c.as_tensor().clone()),
    );
    let m = masks(&t, &cfg);
    assert!(!m.is_empty(), "{label}: the fixture has no masks");
    let lengths = case.lengths.as_deref();
    let (ys, fin) = rnn.forward_with_masks(x.as_tensor(), Some(&state), lengths, false, &m)?;
    if case.eval {
        // Evaluation draws only the zoneout expectations: forward_t gives the same.
        let (ys_eval, _) = rnn.forward_t(x.as_tensor(), Some(&state), lengths, false)?;
        check(
            failures,
            &label,
            "eval output",
            Some(&ys_eval),
            &t["output"],
            tol,
        );
    }
    let mut n = 0;
    let mut cmp = |what: &str, ours: Option<&Tensor>, key: &str| {
        check(failures, &label, what, ours, &t[key], tol);
        n += 1;
    };
    cmp("output", Some(&ys), "output");
    cmp("h_n", Some(&fin.h), "h_n");
    let mut loss = ((&ys * &t["lw.output"])?.sum_all()? + (&fin.h * &t["lw.h_n"])?.sum_all()?)?;
    if let Some(c) = &fin.c {
        cmp("c_n", Some(c), "c_n");
        loss = (loss + (c * &t["lw.c_n"])?.sum_all()?)?;
    }
    let grads = loss.backward()?;
    cmp("grad.input", grads.get(&x), "grad.input");
    cmp("grad.h0", grads.get(&h0), "grad.h0");
    if let Some(c0) = &c0 {
        cmp("grad.c0", grads.get(c0), "grad.c0");
    }
    let data = vm.data().lock().unwrap();
    for name in &names {
        cmp(
            &format!("grad.{name}"),
            grads.get(data[name].as_tensor()),
            &format!("grad.{name}"),
        );
    }
    Ok(n)
}

#[test]
fn mask_options_match_the_pytorch_reference_fused_and_composed() {
    let Some(device) = rnn_core::testing::device() else {
        return;
    };
    let meta = meta();
    assert!(meta.cases.len() >= 10, "expected the full case list");
    let mut failures = Vec::new();
    let mut checked = 0;
    for case in &meta.cases {
        for dtype in ["f32", "f64"] {
            if dtype == "f64" && device.is_metal() {
                continue; // Metal has no f64
            }
            for imp in implementations(&device) {
                match run_case(case, &meta, dtype, imp, &device, &mut failures) {
                    Ok(n) => checked += n,
                    Err(e) => failures.push(format!("{}_{dtype} ({imp:?}): error {e}", case.name)),
                }
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {checked} comparisons failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
    assert!(checked > 200, "only {checked} comparisons");
}
