//! The launch plan executed on the CPU, with the CUDA kernels' own per-element bodies compiled
//! for the host (crate `rnn-cuda-host`), against the CPU fused op: forward outputs, final states
//! and every gradient, over random configurations.

use super::host::{execute, HostBuffers};
use super::ir::*;
use super::{backward_plan, forward_plan};
use crate::config::Mode;
use crate::ops::math::Float;
use crate::ops::problem::{ParamSizes, Problem};
use crate::ops::recurrence::FusedRecurrence;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::ffi::c_void;
use std::sync::Mutex;

/// Runs a plan's pointwise calls through the host-compiled kernel bodies.
trait HostKernels: Float {
    fn run(kernel: Kernel, args: &StepArgs<Self>, n: usize);
}

impl HostKernels for f32 {
    fn run(kernel: Kernel, args: &StepArgs<f32>, n: usize) {
        // SAFETY: the executor resolved every pointer inside its (guarded) buffers.
        unsafe {
            rnn_cuda_host::pointwise_f32(
                kernel as i32,
                args as *const StepArgs<f32> as *const c_void,
                n as i64,
            )
        }
    }
}

impl HostKernels for f64 {
    fn run(kernel: Kernel, args: &StepArgs<f64>, n: usize) {
        // SAFETY: as above.
        unsafe {
            rnn_cuda_host::pointwise_f64(
                kernel as i32,
                args as *const StepArgs<f64> as *const c_void,
                n as i64,
            )
        }
    }
}

#[derive(Debug, Clone)]
struct Case {
    mode: Mode,
    seq_len: usize,
    batch: usize,
    input: usize,
    hidden: usize,
    proj: Option<usize>,
    bias: bool,
    batch_first: bool,
    reverse: bool,
    lengths: Option<Vec<usize>>,
    input_grad: bool,
}

impl Case {
    fn random(rng: &mut ChaCha8Rng) -> Self {
        let mode = [Mode::Lstm, Mode::Gru, Mode::RnnTanh, Mode::RnnRelu][rng.random_range(0..4)];
        let seq_len = rng.random_range(1..7);
        let batch = rng.random_range(1..6);
        let hidden = rng.random_range(1..7);
        let lengths = rng
            .random_bool(0.5)
            .then(|| (0..batch).map(|_| rng.random_range(1..=seq_len)).collect());
        Case {
            mode,
            seq_len,
            batch,
            input: rng.random_range(1..6),
            hidden,
            proj: (mode == Mode::Lstm && hidden > 1 && rng.random_bool(0.4))
                .then(|| rng.random_range(1..hidden)),
            bias: rng.random_bool(0.8),
            batch_first: rng.random_bool(0.5),
            reverse: rng.random_bool(0.5),
            lengths,
            input_grad: rng.random_bool(0.8),
        }
    }

    fn gates(&self) -> usize {
        match self.mode {
            Mode::Lstm => 4,
            Mode::Gru => 3,
            _ => 1,
        }
    }

    fn problem(&self) -> Problem {
        Problem {
            seq_len: self.seq_len,
            batch: self.batch,
            input: self.input,
            hidden: self.hidden,
            state: self.proj.unwrap_or(self.hidden),
            batch_first: self.batch_first,
            reverse: self.reverse,
            lengths: self.lengths.clone(),
            input_grad: self.input_grad,
        }
    }

    fn sizes(&self) -> ParamSizes {
        let gh = self.gates() * self.hidden;
        let state = self.proj.unwrap_or(self.hidden);
        ParamSizes {
            w_ih: gh * self.input,
            w_hh: gh * state,
            bias: if self.bias { gh } else { 0 },
            w_hr: self.proj.map_or(0, |p| p * self.hidden),
        }
    }
}

fn random_vec<T: Float>(rng: &mut ChaCha8Rng, n: usize, scale: f64) -> Vec<T> {
    (0..n)
        .map(|_| T::from(rng.random_range(-scale..scale)).unwrap())
        .collect()
}

/// Largest absolute difference, NaN when the lengths differ or a value is NaN.
fn max_diff<T: Float>(a: &[T], b: &[T]) -> f64 {
    if a.len() != b.len() {
        return f64::NAN;
    }
    a.iter()
        .zip(b)
        .map(|(x, y)| (x.to_f64().unwrap() - y.to_f64().unwrap()).abs())
        .fold(0.0, |m, d| {
            if d.is_nan() || m.is_nan() {
                f64::NAN
            } else {
                m.max(d)
            }
        })
}

/// Runs `case` both ways; returns what differs by more than `tol`.
fn compare<T: HostKernels>(case: &Case, seed: u64, tol: f64) -> Vec<String> {
    compare_tampered::<T>(case, seed, tol, &|_| {})
}

/// As [`compare`], with `tamper` changing the forward and backward plans before they run.
fn compare_tampered<T: HostKernels>(
    case: &Case,
    seed: u64,
    tol: f64,
    tamper: &dyn Fn(&mut Plan),
) -> Vec<String> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let p = case.problem();
    let sizes = case.sizes();
    let rows = p.rows();
    let cell = if case.mode == Mode::Lstm {
        p.batch * p.hidden
    } else {
        0
    };
    let xs: Vec<T> = random_vec(&mut rng, rows * p.input, 1.0);
    let state0: Vec<T> = random_vec(&mut rng, p.batch * p.state + cell, 1.0);
    let params: Vec<T> = random_vec(&mut rng, sizes.total(), 0.7);
    let out_len = rows * p.state + p.batch * p.state + cell;
    let grad_out: Vec<T> = random_vec(&mut rng, out_len, 1.0);

    let op = FusedRecurrence {
        mode: case.mode,
        problem: p.clone(),
        sizes,
        saved: Mutex::new(None),
        save: true,
        masks: None,
    };
    let want_out = op.forward_typed(&xs, &state0, &params);
    let (want_dx, want_dstate, want_dparams) = op
        .backward_typed(&xs, &params, &grad_out)
        .expect("CPU backward");

    let spec = Spec {
        mode: case.mode,
        problem: &p,
        sizes,
        save: true,
    };
    let mut bufs = HostBuffers::<T>::new();
    bufs.set(Buf::X, &xs);
    bufs.set(Buf::State0, &state0);
    bufs.set(Buf::Params, &params);
    if let Some(l) = &p.lengths {
        bufs.set_lengths(l);
    }
    bufs.alloc(Buf::Out, out_len);
    let mut fwd = forward_plan(&spec);
    tamper(&mut fwd);
    execute(&fwd, &mut bufs, &T::run);
    // The backward gets what the CUDA executor gives it: the inputs and the saved activations;
    // forward scratch is dropped and the backward's own scratch starts as garbage.
    let mut broken = bufs.broken_guards();
    let out = bufs.get(Buf::Out).to_vec();
    bufs.retain(|b| matches!(b, Buf::X | Buf::Params) || SAVED.contains(&b));
    bufs.set(Buf::GradOut, &grad_out);
    bufs.alloc(Buf::DState, state0.len());
    bufs.alloc(Buf::DParams, params.len());
    if p.input_grad {
        bufs.alloc(Buf::DX, xs.len());
    }
    let mut bwd = backward_plan(&spec);
    tamper(&mut bwd);
    execute(&bwd, &mut bufs, &T::run);

    let mut failures = Vec::new();
    let mut check = |what: &str, got: &[T], want: &[T]| {
        let d = max_diff(got, want);
        if d.is_nan() || d > tol {
            failures.push(format!("{what}: max abs diff {d:e} > {tol:e}"));
        }
    };
    check("forward [ys | h_n | c_n]", &out, &want_out);
    check("grad state0", bufs.get(Buf::DState), &want_dstate);
    let offs = spec.param_offsets();
    let names = ["w_ih", "w_hh", "b_ih", "b_hh", "w_hr"];
    let ends = [offs[1], offs[2], offs[3], offs[4], sizes.total()];
    for i in 0..5 {
        let (s, e) = (offs[i], ends[i]);
        check(
            &format!("grad {}", names[i]),
            &bufs.get(Buf::DParams)[s..e],
            &want_dparams[s..e],
        );
    }
    match (&want_dx, p.input_grad) {
        (Some(dx), true) => check("grad input", bufs.get(Buf::DX), dx),
        (None, false) => {}
        _ => failures.push("the CPU op and the plan disagree on computing dx".into()),
    }
    broken.extend(bufs.broken_guards());
    if !broken.is_empty() {
        failures.push(format!("writes outside buffers: {broken:?}"));
    }
    failures
}

#[test]
fn plan_with_host_kernels_matches_the_cpu_fused_op_in_f64() {
    let mut rng = ChaCha8Rng::seed_from_u64(0x5eed_cafe);
    let mut failures = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for i in 0..600u64 {
        let case = Case::random(&mut rng);
        seen.insert((
            format!("{:?}", case.mode),
            case.proj.is_some(),
            case.lengths.is_some(),
            case.reverse,
            case.batch_first,
        ));
        for f in compare::<f64>(&case, i, 1e-12) {
            failures.push(format!("{case:?}: {f}"));
        }
    }
    // The random cases cover every mode with and without lengths, reverse and batch-first, and
    // the projection.
    assert_eq!(seen.len(), 40, "kinds of case drawn");
    assert!(
        seen.iter().any(|k| k.1 && k.2 && k.3),
        "no reverse projection with lengths"
    );
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn plan_with_host_kernels_matches_the_cpu_fused_op_in_f32() {
    let mut rng = ChaCha8Rng::seed_from_u64(0xf32);
    let mut failures = Vec::new();
    for i in 0..80u64 {
        let case = Case::random(&mut rng);
        // The CPU op's f32 exp and tanh are polynomial approximations (~1e-7).
        for f in compare::<f32>(&case, i, 2e-5) {
            failures.push(format!("{case:?}: {f}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn a_wrong_index_in_the_plan_is_caught() {
    // The comparison sees a plan with a plausible indexing bug: the per-step GEMMs of a
    // batch-first problem given the time-major row stride of the step's gates.
    let case = Case {
        mode: Mode::Lstm,
        seq_len: 3,
        batch: 2,
        input: 2,
        hidden: 3,
        proj: None,
        bias: true,
        batch_first: true,
        reverse: false,
        lengths: Some(vec![3, 2]),
        input_grad: true,
    };
    assert!(compare::<f64>(&case, 7, 1e-12).is_empty());
    let gh = 4 * case.hidden;
    let wrong_stride = |plan: &mut Plan| {
        for op in &mut plan.ops {
            if let Op::Gemm(g) = op {
                if g.c.buf == Buf::Gates && g.ldc > gh {
                    g.ldc = gh;
                }
                if g.b.buf == Buf::Dg && g.ldb > gh {
                    g.ldb = gh;
                }
            }
        }
    };
    let failures = compare_tampered::<f64>(&case, 7, 1e-12, &wrong_stride);
    assert!(
        failures.iter().any(|f| f.starts_with("forward"))
            && failures.iter().any(|f| f.starts_with("grad w_hh")),
        "{failures:?}"
    );
}

#[test]
fn launches_per_layer_direction() {
    for seq_len in [1usize, 5, 17] {
        for mode in [Mode::Lstm, Mode::Gru, Mode::RnnTanh] {
            for proj in [None, Some(2)] {
                if proj.is_some() && mode != Mode::Lstm {
                    continue;
                }
                let case = Case {
                    mode,
                    seq_len,
                    batch: 3,
                    input: 4,
                    hidden: 5,
                    proj,
                    bias: true,
                    batch_first: false,
                    reverse: false,
                    lengths: Some(vec![seq_len; 3]),
                    input_grad: true,
                };
                let p = case.problem();
                let spec = Spec {
                    mode,
                    problem: &p,
                    sizes: case.sizes(),
                    save: true,
                };
                let (fwd, bwd) = (
                    forward_plan(&spec).launches(),
                    backward_plan(&spec).launches(),
                );
                let t = seq_len;
                if proj.is_none() {
                    assert!(fwd <= 2 * t + 3, "{mode:?} T={t}: {fwd} forward launches");
                    assert!(bwd <= 2 * t + 6, "{mode:?} T={t}: {bwd} backward launches");
                } else {
                    assert_eq!(fwd, 4 * t + 3, "projection T={t}: forward");
                    assert_eq!(bwd, 4 * t + 7, "projection T={t}: backward");
                }
            }
        }
    }
}

#[test]
fn kernel_ids_and_argument_layout_match_the_header() {
    assert_eq!(rnn_cuda_host::kernel_count() as usize, Kernel::ALL.len());
    for (i, k) in Kernel::ALL.iter().enumerate() {
        assert_eq!(*k as usize, i, "{k:?}");
    }
    assert_eq!(rnn_cuda_host::args_layout(), step_args_layout());
}

#[test]
fn every_kernel_of_the_plan_is_a_cuda_kernel() {
    let cu = include_str!("../../../cuda/recurrence.cu");
    let header = include_str!("../../../cuda/recurrence.cuh");
    for k in Kernel::ALL {
        let name = k.name();
        assert!(
            cu.contains(&format!("RNN_KERNEL({name})")),
            "{name} is not instantiated in recurrence.cu"
        );
        assert!(
            header.contains(&format!("RNN_HD void {name}(")),
            "{name} has no body in recurrence.cuh"
        );
    }
}
