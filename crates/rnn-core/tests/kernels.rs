//! Every matrix kernel this CPU runs ([`rnn_core::kernels`]), forced for a whole fused forward
//! and backward of LSTM, GRU and tanh-RNN layers, gives the outputs, final states and gradients
//! of the portable path within f32 tolerance: the kernel chosen by measurement changes nothing
//! but rounding. Shapes cover one batch chunk, several chunks with the per-step input
//! projection, and weight gradients large enough for the cache-blocked product.

use candle_core::{DType, Device, Tensor, Var};
use rnn_core::init::seeded_var_builder;
use rnn_core::kernels::{self, Kernel};
use rnn_core::{Implementation, Mode, Rnn, RnnConfig};

/// Output, final h (and c), and the gradients of a fixed loss for the input and every
/// parameter, flattened to f64 by name.
fn run(
    mode: Mode,
    (batch, seq_len, input, hidden, layers, bidirectional): (
        usize,
        usize,
        usize,
        usize,
        usize,
        bool,
    ),
) -> Vec<(String, Vec<f64>)> {
    let dev = Device::Cpu;
    let cfg = RnnConfig::new(mode, input, hidden)
        .with_num_layers(layers)
        .with_bidirectional(bidirectional);
    let params = candle_nn::VarMap::new();
    let rnn = Rnn::new(&cfg, seeded_var_builder(&params, 7, DType::F32, &dev))
        .unwrap()
        .with_implementation(Implementation::Fused);
    let x = Tensor::arange(0f32, (batch * seq_len * input) as f32, &dev)
        .unwrap()
        .affine(0.71, 0.3)
        .unwrap()
        .cos()
        .unwrap()
        .reshape((batch, seq_len, input))
        .unwrap();
    let x = Var::from_tensor(&x).unwrap();
    // A fixed, non-uniform weighting of the outputs, so every gradient is exercised.
    let (ys, fin) = rnn.forward_with_state(x.as_tensor(), None).unwrap();
    let w = Tensor::arange(0f32, ys.elem_count() as f32, &dev)
        .unwrap()
        .reshape(ys.dims())
        .unwrap()
        .affine(0.37, 0.0)
        .unwrap()
        .sin()
        .unwrap();
    let loss =
        ((&ys * &w).unwrap().sum_all().unwrap() + fin.h.sqr().unwrap().sum_all().unwrap()).unwrap();
    let grads = loss.backward().unwrap();
    let flat = |t: &Tensor| -> Vec<f64> {
        t.flatten_all()
            .unwrap()
            .to_dtype(DType::F64)
            .unwrap()
            .to_vec1()
            .unwrap()
    };
    let mut out = vec![
        ("output".to_string(), flat(&ys)),
        ("h_n".into(), flat(&fin.h)),
    ];
    if let Some(c) = &fin.c {
        out.push(("c_n".into(), flat(c)));
    }
    out.push(("grad.x".into(), flat(grads.get(x.as_tensor()).unwrap())));
    for (name, p) in rnn.named_parameters() {
        out.push((format!("grad.{name}"), flat(grads.get(&p).unwrap())));
    }
    out
}

#[test]
fn every_kernel_matches_the_portable_path_on_fused_forward_and_backward() {
    let supported = kernels::supported();
    assert_eq!(supported.last(), Some(&Kernel::Portable));
    let shapes = [
        // One batch chunk, input projection before the recurrence.
        (3, 9, 20, 37, 1, false),
        // Several chunks with the per-step input projection; two layers, both directions.
        (16, 7, 33, 70, 2, true),
        // Weight gradients on the cache-blocked product (rows x gates x input >= 2^26).
        (16, 64, 160, 256, 1, false),
    ];
    // Whether some kernel's bits differ from the portable path's (else forcing did not reach
    // the products).
    let mut any_differs = false;
    for mode in [Mode::Lstm, Mode::Gru, Mode::RnnTanh] {
        for shape in shapes {
            let want = kernels::with_kernel(Kernel::Portable, || run(mode, shape)).unwrap();
            for &kernel in &supported[..supported.len() - 1] {
                let got = kernels::with_kernel(kernel, || run(mode, shape)).unwrap();
                assert_eq!(got.len(), want.len());
                for ((name, g), (_, w)) in got.iter().zip(&want) {
                    any_differs |= g.iter().zip(w).any(|(a, b)| a.to_bits() != b.to_bits());
                    let scale = w.iter().fold(1.0f64, |m, v| m.max(v.abs()));
                    let diff = g
                        .iter()
                        .zip(w)
                        .fold(0.0f64, |m, (a, b)| m.max((a - b).abs()));
                    assert!(
                        diff <= 2e-5 * scale,
                        "{mode:?} {shape:?} {kernel}: {name} differs from portable by {diff:e} \
                         (largest magnitude {scale})"
                    );
                }
            }
        }
    }
    assert!(
        supported.len() == 1 || any_differs,
        "every kernel gave the portable path's bits: was the kernel forced?"
    );
}

#[test]
fn forcing_a_kernel_this_cpu_lacks_is_an_error() {
    for kernel in [Kernel::Avx512, Kernel::Avx2] {
        if !kernel.runs_here() {
            let err = kernels::with_kernel(kernel, || ()).unwrap_err().to_string();
            assert!(err.contains("cannot run"), "{err}");
        }
    }
    assert_eq!(kernels::with_kernel(Kernel::Portable, || 5).unwrap(), 5);
}
