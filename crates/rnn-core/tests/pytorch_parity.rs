//! Parity with PyTorch: outputs, final states and the gradients of a scalar loss with respect to
//! the input, the initial state and every parameter, for every case written by
//! `tests/fixtures/gen_fixtures.py` (see its docstring for the file layout and the loss).
//!
//! The device comes from `RNN_TEST_DEVICE` (default cpu) and the fixtures from `RNN_FIXTURES_DIR`
//! or the repository (`rnn_core::testing`). On the CPU both the fused op and the composed twin are
//! checked; on another device its default path and the composed twin. On CUDA, f32 products run
//! with TF32 off, so the f32 tolerance is PyTorch's with TF32 off too.

mod common;
use common::{implementations, try_max_abs_diff};

use candle_core::{DType, Device, Result, Tensor, Var};
use candle_nn::{VarBuilder, VarMap};
use rnn_core::{
    CellConfig, GruCell, Implementation, LstmCell, Mode, Nonlinearity, Rnn, RnnCell, RnnConfig,
    RnnState,
};
use serde::Deserialize;
use std::collections::HashMap;
use std::path::PathBuf;

/// Absolute tolerances named by the acceptance criteria.
const TOL_F32: f64 = 1e-5;
const TOL_F64: f64 = 1e-10;

#[derive(Debug, Deserialize)]
struct LayerCase {
    name: String,
    mode: Mode,
    num_layers: usize,
    bidirectional: bool,
    batch_first: bool,
    bias: bool,
    proj_size: usize,
    lengths: Option<Vec<usize>>,
    state: bool,
    #[allow(dead_code)] // documented in cases.json; the input rank tells the layer
    unbatched: bool,
}

#[derive(Debug, Deserialize)]
struct CellCase {
    name: String,
    mode: Mode,
    bias: bool,
}

#[derive(Debug, Deserialize)]
struct Sizes {
    input_size: usize,
    hidden_size: usize,
}

#[derive(Debug, Deserialize)]
struct Meta {
    sizes: Sizes,
    layers: Vec<LayerCase>,
    cells: Vec<CellCase>,
}

fn fixture_dir() -> PathBuf {
    rnn_core::testing::fixtures_dir().join("pytorch")
}

fn meta() -> Meta {
    let text = std::fs::read_to_string(fixture_dir().join("cases.json")).expect("cases.json");
    serde_json::from_str(&text).expect("cases.json parses")
}

fn load(name: &str, dtype: &str, device: &Device) -> HashMap<String, Tensor> {
    let path = fixture_dir().join(format!("{name}_{dtype}.safetensors"));
    candle_core::safetensors::load(&path, device)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Collects mismatches so one run reports every failing tensor of every case.
#[derive(Default)]
struct Report {
    failures: Vec<String>,
    checked: usize,
}

impl Report {
    fn compare(
        &mut self,
        case: &str,
        what: &str,
        ours: Option<&Tensor>,
        theirs: &Tensor,
        tol: f64,
    ) {
        self.checked += 1;
        match ours.map(|o| try_max_abs_diff(o, theirs)) {
            None => self
                .failures
                .push(format!("{case}: {what}: no value (no gradient?)")),
            Some(Err(e)) => self.failures.push(format!("{case}: {what}: {e}")),
            Some(Ok(d)) if d.is_nan() || d > tol => self
                .failures
                .push(format!("{case}: {what}: max abs diff {d:e} > {tol:e}")),
            Some(Ok(_)) => {}
        }
    }

    fn finish(self) {
        assert!(
            self.failures.is_empty(),
            "{} of {} comparisons failed:\n{}",
            self.failures.len(),
            self.checked,
            self.failures.join("\n")
        );
        assert!(self.checked > 0, "nothing was compared");
    }
}

/// A VarMap holding `names` from `t` as trainable Vars.
fn varmap_from(t: &HashMap<String, Tensor>, names: impl Iterator<Item = String>) -> VarMap {
    let vm = VarMap::new();
    {
        let mut data = vm.data().lock().unwrap();
        for name in names {
            data.insert(name.clone(), Var::from_tensor(&t[&name]).unwrap());
        }
    }
    vm
}

fn param_names(t: &HashMap<String, Tensor>) -> Vec<String> {
    t.keys()
        .filter(|k| k.starts_with("weight_") || k.starts_with("bias_"))
        .cloned()
        .collect()
}

/// Runs one layer case with one implementation and compares everything with PyTorch.
fn run_layer_case(
    case: &LayerCase,
    meta: &Meta,
    dtype_name: &str,
    imp: Implementation,
    device: &Device,
    rep: &mut Report,
) -> Result<()> {
    let t = load(&case.name, dtype_name, device);
    let tol = if dtype_name == "f32" {
        TOL_F32
    } else {
        TOL_F64
    };
    let dtype = t["input"].dtype();
    let label = format!("{}_{dtype_name} ({imp:?})", case.name);
    let cfg = RnnConfig::new(case.mode, meta.sizes.input_size, meta.sizes.hidden_size)
        .with_num_layers(case.num_layers)
        .with_bidirectional(case.bidirectional)
        .with_batch_first(case.batch_first)
        .with_bias(case.bias)
        .with_proj_size(case.proj_size);
    let names = param_names(&t);
    let vm = varmap_from(&t, names.iter().cloned());
    let rnn = Rnn::new(&cfg, VarBuilder::from_varmap(&vm, dtype, device))?.with_implementation(imp);
    assert_eq!(
        rnn.named_parameters().len(),
        names.len(),
        "{label}: parameter count"
    );

    let x = Var::from_tensor(&t["input"])?;
    let h0 = case.state.then(|| Var::from_tensor(&t["h0"])).transpose()?;
    let c0 = t
        .get("c0")
        .filter(|_| case.state)
        .map(Var::from_tensor)
        .transpose()?;
    let state = h0.as_ref().map(|h| {
        RnnState::new(
            h.as_tensor().clone(),
            c0.as_ref().map(|c| c.as_tensor().clone()),
        )
    });
    let (ys, fin) = rnn.forward_t(
        x.as_tensor(),
        state.as_ref(),
        case.lengths.as_deref(),
        false,
    )?;

    rep.compare(&label, "output", Some(&ys), &t["output"], tol);
    rep.compare(&label, "h_n", Some(&fin.h), &t["h_n"], tol);
    let mut loss = ((&ys * &t["lw.output"])?.sum_all()? + (&fin.h * &t["lw.h_n"])?.sum_all()?)?;
    if let Some(c_ref) = t.get("c_n") {
        rep.compare(&label, "c_n", fin.c.as_ref(), c_ref, tol);
        if let Some(c) = &fin.c {
            loss = (loss + (c * &t["lw.c_n"])?.sum_all()?)?;
        }
    }
    let grads = loss.backward()?;
    rep.compare(&label, "grad.input", grads.get(&x), &t["grad.input"], tol);
    if let Some(h0) = &h0 {
        rep.compare(&label, "grad.h0", grads.get(h0), &t["grad.h0"], tol);
    }
    if let Some(c0) = &c0 {
        rep.compare(&label, "grad.c0", grads.get(c0), &t["grad.c0"], tol);
    }
    let data = vm.data().lock().unwrap();
    for name in &names {
        let g = grads.get(data[name].as_tensor());
        rep.compare(
            &label,
            &format!("grad.{name}"),
            g,
            &t[&format!("grad.{name}")],
            tol,
        );
    }
    Ok(())
}

#[test]
fn layers_match_pytorch_forward_state_and_gradients_fused_and_composed() {
    let Some(device) = rnn_core::testing::device() else {
        return;
    };
    let meta = meta();
    let mut rep = Report::default();
    assert!(meta.layers.len() >= 20, "expected the full case list");
    for case in &meta.layers {
        for dtype in ["f32", "f64"] {
            if dtype == "f64" && device.is_metal() {
                continue; // Metal has no f64
            }
            for imp in implementations(&device) {
                if let Err(e) = run_layer_case(case, &meta, dtype, imp, &device, &mut rep) {
                    rep.failures
                        .push(format!("{}_{dtype} ({imp:?}): error {e}", case.name));
                }
            }
        }
    }
    rep.finish();
}

fn run_cell_case(
    case: &CellCase,
    meta: &Meta,
    dtype_name: &str,
    device: &Device,
    rep: &mut Report,
) -> Result<()> {
    let t = load(&case.name, dtype_name, device);
    let tol = if dtype_name == "f32" {
        TOL_F32
    } else {
        TOL_F64
    };
    let label = format!("{}_{dtype_name}", case.name);
    let names = param_names(&t);
    let vm = varmap_from(&t, names.iter().cloned());
    let vb = VarBuilder::from_varmap(&vm, t["input"].dtype(), device);
    let (i, h) = (meta.sizes.input_size, meta.sizes.hidden_size);
    let x = Var::from_tensor(&t["input"])?;
    let h0 = Var::from_tensor(&t["h0"])?;
    let c0 = t.get("c0").map(Var::from_tensor).transpose()?;
    let state = RnnState::new(
        h0.as_tensor().clone(),
        c0.as_ref().map(|c| c.as_tensor().clone()),
    );
    let out = match case.mode {
        Mode::Lstm => LstmCell::new(&CellConfig::new(i, h).with_bias(case.bias), vb)?
            .step(&x, Some(&state))?,
        Mode::Gru => {
            GruCell::new(&CellConfig::new(i, h).with_bias(case.bias), vb)?.step(&x, Some(&state))?
        }
        Mode::RnnTanh => RnnCell::new(
            &CellConfig::new(i, h)
                .with_nonlinearity(Nonlinearity::Tanh)
                .with_bias(case.bias),
            vb,
        )?
        .step(&x, Some(&state))?,
        Mode::RnnRelu => RnnCell::new(
            &CellConfig::new(i, h)
                .with_nonlinearity(Nonlinearity::Relu)
                .with_bias(case.bias),
            vb,
        )?
        .step(&x, Some(&state))?,
    };
    rep.compare(&label, "h'", Some(&out.h), &t["output"], tol);
    let mut loss = (&out.h * &t["lw.output"])?.sum_all()?;
    if let Some(c_ref) = t.get("c_n") {
        rep.compare(&label, "c'", out.c.as_ref(), c_ref, tol);
        if let Some(c) = &out.c {
            loss = (loss + (c * &t["lw.c_n"])?.sum_all()?)?;
        }
    }
    let grads = loss.backward()?;
    rep.compare(&label, "grad.input", grads.get(&x), &t["grad.input"], tol);
    rep.compare(&label, "grad.h0", grads.get(&h0), &t["grad.h0"], tol);
    if let Some(c0) = &c0 {
        rep.compare(&label, "grad.c0", grads.get(c0), &t["grad.c0"], tol);
    }
    let data = vm.data().lock().unwrap();
    for name in &names {
        let g = grads.get(data[name].as_tensor());
        rep.compare(
            &label,
            &format!("grad.{name}"),
            g,
            &t[&format!("grad.{name}")],
            tol,
        );
    }
    Ok(())
}

#[test]
fn cells_match_pytorch() {
    let Some(device) = rnn_core::testing::device() else {
        return;
    };
    let meta = meta();
    let mut rep = Report::default();
    for case in &meta.cells {
        for dtype in ["f32", "f64"] {
            if dtype == "f64" && device.is_metal() {
                continue; // Metal has no f64
            }
            if let Err(e) = run_cell_case(case, &meta, dtype, &device, &mut rep) {
                rep.failures
                    .push(format!("{}_{dtype}: error {e}", case.name));
            }
        }
    }
    rep.finish();
}

/// The contract's loading path: a PyTorch `state_dict` saved with safetensors loads through
/// `VarBuilder::from_mmaped_safetensors` with no renaming and gives PyTorch's numbers.
#[test]
fn state_dict_loads_from_mmaped_safetensors() -> Result<()> {
    let Some(device) = rnn_core::testing::device() else {
        return Ok(());
    };
    let meta = meta();
    let case = meta
        .layers
        .iter()
        .find(|c| c.name == "lstm_proj_l3_bi_state_tm")
        .expect("case exists");
    let path = fixture_dir().join(format!("{}_f64.safetensors", case.name));
    let vb = unsafe { VarBuilder::from_mmaped_safetensors(&[&path], DType::F64, &device)? };
    let cfg = RnnConfig::new(Mode::Lstm, meta.sizes.input_size, meta.sizes.hidden_size)
        .with_num_layers(3)
        .with_bidirectional(true)
        .with_batch_first(false)
        .with_proj_size(case.proj_size);
    let rnn = Rnn::new(&cfg, vb)?;
    let t = load(&case.name, "f64", &device);
    let state = RnnState::new(t["h0"].clone(), Some(t["c0"].clone()));
    let (ys, fin) = rnn.forward_with_state(&t["input"], Some(&state))?;
    assert!(try_max_abs_diff(&ys, &t["output"])? <= TOL_F64);
    assert!(try_max_abs_diff(&fin.h, &t["h_n"])? <= TOL_F64);
    assert!(try_max_abs_diff(fin.c.as_ref().unwrap(), &t["c_n"])? <= TOL_F64);
    Ok(())
}
