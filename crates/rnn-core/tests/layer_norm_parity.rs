//! Layer-normalised LSTM and GRU (`RnnConfig::layer_norm`, `CellConfig::with_layer_norm`) against
//! a reference written with plain PyTorch ops: outputs, final states and the gradients of a scalar
//! loss with respect to the input, the initial state and every parameter (the `layernorm_*` gains
//! and biases included), for every case written by `tests/fixtures/gen_layer_norm_fixtures.py`
//! (see its docstring for the formulas, the file layout and the loss).
//!
//! On the CPU both the fused op and the composed twin are checked; on another device
//! (`RNN_TEST_DEVICE`) its default path and the composed twin.

mod common;
use common::try_max_abs_diff;

use candle_core::{Device, Result, Tensor, Var};
use candle_nn::{VarBuilder, VarMap};
use rnn_core::{CellConfig, GruCell, Implementation, LstmCell, Mode, Rnn, RnnConfig, RnnState};
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
    lengths: Option<Vec<usize>>,
    state: bool,
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
    let path = fixture_dir().join("layer_norm_cases.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).expect("layer_norm_cases.json parses")
}

fn load(name: &str, dtype: &str, device: &Device) -> HashMap<String, Tensor> {
    let path = fixture_dir().join(format!("ln_{name}_{dtype}.safetensors"));
    candle_core::safetensors::load(&path, device)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn tolerance(dtype_name: &str) -> f64 {
    if dtype_name == "f32" {
        TOL_F32
    } else {
        TOL_F64
    }
}

/// The implementations checked on `device`: the fused op and its twin on the CPU.
fn implementations(device: &Device) -> [Implementation; 2] {
    if device.is_cpu() {
        [Implementation::Fused, Implementation::Composed]
    } else {
        [Implementation::Auto, Implementation::Composed]
    }
}

/// Collects mismatches so one run reports every failing tensor of every case.
#[derive(Default)]
struct Report {
    failures: Vec<String>,
    checked: usize,
}

impl Report {
    /// Fails when `|ours - theirs| > tol * max(1, max |theirs|)`: absolute for values up to 1,
    /// relative beyond. The layer norms' gradients reach 30 here, where f32 rounding alone (about
    /// 1e-6 relative) exceeds an absolute 1e-5; f64 stays far inside 1e-10 either way.
    fn compare(
        &mut self,
        case: &str,
        what: &str,
        ours: Option<&Tensor>,
        theirs: &Tensor,
        tol: f64,
    ) {
        self.checked += 1;
        let scale = theirs
            .abs()
            .and_then(|t| t.to_dtype(candle_core::DType::F64))
            .and_then(|t| t.max_all())
            .and_then(|t| t.to_scalar::<f64>())
            .unwrap_or(1.0)
            .max(1.0);
        let tol = tol * scale;
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

/// The parameter names of a fixture, and a VarMap holding them as trainable Vars.
fn params(t: &HashMap<String, Tensor>) -> (Vec<String>, VarMap) {
    let names: Vec<String> = t
        .keys()
        .filter(|k| {
            k.starts_with("weight_") || k.starts_with("bias_") || k.starts_with("layernorm_")
        })
        .cloned()
        .collect();
    let vm = VarMap::new();
    {
        let mut data = vm.data().lock().unwrap();
        for name in &names {
            data.insert(name.clone(), Var::from_tensor(&t[name]).unwrap());
        }
    }
    (names, vm)
}

/// Compares the gradient of every parameter with the fixture's.
fn compare_param_grads(
    rep: &mut Report,
    label: &str,
    names: &[String],
    vm: &VarMap,
    grads: &candle_core::backprop::GradStore,
    t: &HashMap<String, Tensor>,
    tol: f64,
) {
    let data = vm.data().lock().unwrap();
    for name in names {
        let g = grads.get(data[name].as_tensor());
        rep.compare(
            label,
            &format!("grad.{name}"),
            g,
            &t[&format!("grad.{name}")],
            tol,
        );
    }
}

fn run_layer_case(
    case: &LayerCase,
    meta: &Meta,
    dtype_name: &str,
    imp: Implementation,
    device: &Device,
    rep: &mut Report,
) -> Result<()> {
    let t = load(&case.name, dtype_name, device);
    let tol = tolerance(dtype_name);
    let label = format!("ln_{}_{dtype_name} ({imp:?})", case.name);
    let cfg = RnnConfig::new(case.mode, meta.sizes.input_size, meta.sizes.hidden_size)
        .with_num_layers(case.num_layers)
        .with_bidirectional(case.bidirectional)
        .with_batch_first(case.batch_first)
        .with_bias(case.bias)
        .with_layer_norm(true);
    let (names, vm) = params(&t);
    let dtype = t["input"].dtype();
    let rnn = Rnn::new(&cfg, VarBuilder::from_varmap(&vm, dtype, device))?.with_implementation(imp);
    // Every fixture tensor is used and nothing else is created.
    assert_eq!(
        rnn.named_parameters().len(),
        names.len(),
        "{label}: parameter count"
    );
    assert_eq!(
        vm.all_vars().len(),
        names.len(),
        "{label}: no parameter created"
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
    compare_param_grads(rep, &label, &names, &vm, &grads, &t, tol);
    Ok(())
}

#[test]
fn layer_norm_layers_match_the_pytorch_reference_fused_and_composed() {
    let Some(device) = rnn_core::testing::device() else {
        return;
    };
    let meta = meta();
    assert!(meta.layers.len() >= 8, "expected the full case list");
    let mut rep = Report::default();
    for case in &meta.layers {
        for dtype in ["f32", "f64"] {
            if dtype == "f64" && device.is_metal() {
                continue; // Metal has no f64
            }
            for imp in implementations(&device) {
                if let Err(e) = run_layer_case(case, &meta, dtype, imp, &device, &mut rep) {
                    rep.failures
                        .push(format!("ln_{}_{dtype} ({imp:?}): error {e}", case.name));
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
    let tol = tolerance(dtype_name);
    let label = format!("ln_{}_{dtype_name}", case.name);
    let (names, vm) = params(&t);
    let vb = VarBuilder::from_varmap(&vm, t["input"].dtype(), device);
    let cfg = CellConfig::new(meta.sizes.input_size, meta.sizes.hidden_size)
        .with_bias(case.bias)
        .with_layer_norm(true);
    let x = Var::from_tensor(&t["input"])?;
    let h0 = Var::from_tensor(&t["h0"])?;
    let c0 = t.get("c0").map(Var::from_tensor).transpose()?;
    let state = RnnState::new(
        h0.as_tensor().clone(),
        c0.as_ref().map(|c| c.as_tensor().clone()),
    );
    let out = match case.mode {
        Mode::Lstm => LstmCell::new(&cfg, vb)?.step(&x, Some(&state))?,
        Mode::Gru => GruCell::new(&cfg, vb)?.step(&x, Some(&state))?,
        other => panic!("no layer-normalised {other} cell"),
    };
    assert_eq!(
        vm.all_vars().len(),
        names.len(),
        "{label}: no parameter created"
    );
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
    compare_param_grads(rep, &label, &names, &vm, &grads, &t, tol);
    Ok(())
}

#[test]
fn layer_norm_cells_match_the_pytorch_reference() {
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
                    .push(format!("ln_{}_{dtype}: error {e}", case.name));
            }
        }
    }
    rep.finish();
}

/// Off is PyTorch's layer exactly: no `layernorm_*` parameter; on adds exactly the documented
/// names, with gains 1 and biases 0 at creation.
#[test]
fn layer_norm_parameter_names_and_init() -> Result<()> {
    let dev = Device::Cpu;
    let base = RnnConfig::new(Mode::Lstm, 3, 4).with_bidirectional(true);
    let vm = VarMap::new();
    let plain = Rnn::new(
        &base,
        rnn_core::init::seeded_var_builder(&vm, 1, candle_core::DType::F64, &dev),
    )?;
    assert!(plain
        .named_parameters()
        .iter()
        .all(|(n, _)| !n.starts_with("layernorm")));
    let vm = VarMap::new();
    let ln = Rnn::new(
        &base.clone().with_layer_norm(true),
        rnn_core::init::seeded_var_builder(&vm, 1, candle_core::DType::F64, &dev),
    )?;
    let names: HashMap<String, Tensor> = ln.named_parameters().into_iter().collect();
    for suffix in ["_l0", "_l0_reverse"] {
        for (which, size) in [("x", 16), ("h", 16), ("c", 4)] {
            let w = &names[&format!("layernorm_{which}_weight{suffix}")];
            let b = &names[&format!("layernorm_{which}_bias{suffix}")];
            assert_eq!(w.to_vec1::<f64>()?, vec![1.0; size]);
            assert_eq!(b.to_vec1::<f64>()?, vec![0.0; size]);
        }
    }
    assert_eq!(names.len(), plain.named_parameters().len() + 12);
    let gru = Rnn::new(
        &RnnConfig::new(Mode::Gru, 3, 4).with_layer_norm(true),
        VarBuilder::zeros(candle_core::DType::F32, &dev),
    )?;
    let gru_names: Vec<String> = gru.named_parameters().into_iter().map(|(n, _)| n).collect();
    assert!(gru_names.contains(&"layernorm_h_bias_l0".to_string()));
    assert!(
        !gru_names.iter().any(|n| n.starts_with("layernorm_c")),
        "{gru_names:?}"
    );
    Ok(())
}
