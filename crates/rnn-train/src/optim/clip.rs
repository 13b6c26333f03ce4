//! Gradient norms, clipping and non-finite detection.
//!
//! Each function reduces on the device and reads at most one scalar back to the host (plus one
//! per parameter in [`first_non_finite_grad`], and only once something non-finite was found).
//! Variables without a gradient in the store are skipped, as PyTorch skips `.grad is None`.
//!
//! The total norm sums the per-parameter squares in the order of `vars`, so a different order
//! rounds differently. Pass the variables in a fixed order ([`named_vars`](super::named_vars),
//! which the `Trainer` uses), not `VarMap::all_vars()`, which iterates a `HashMap` whose order
//! changes from process to process: a run that must repeat exactly would not.

use candle_core::backprop::GradStore;
use candle_core::{DType, Tensor, Var};

use crate::{Error, Result};

mod cpu;

/// The gradients present in `grads` for `vars`, with their variables.
fn present<'a>(grads: &'a GradStore, vars: &'a [Var]) -> impl Iterator<Item = (&'a Var, Tensor)> {
    vars.iter()
        .filter_map(move |v| grads.get(v).map(|g| (v, g.detach())))
}

/// Sums 0-dim per-parameter results on the first one's device, in f64 if all are f64, else in
/// f32 (half-precision sums would overflow, and Metal has no f64); `None` when there are none.
fn sum_on_device(parts: &[Tensor]) -> Result<Option<Tensor>> {
    let Some(first) = parts.first() else {
        return Ok(None);
    };
    let device = first.device().clone();
    let dtype = if parts.iter().all(|p| p.dtype() == DType::F64) {
        DType::F64
    } else {
        DType::F32
    };
    let parts = parts
        .iter()
        .map(|p| p.to_dtype(dtype)?.to_device(&device))
        .collect::<candle_core::Result<Vec<_>>>()?;
    Ok(Some(Tensor::stack(&parts, 0)?.sum_all()?))
}

/// [`sum_on_device`] read back to the host (0 when there are no parts).
fn sum_to_host(parts: Vec<Tensor>) -> Result<f64> {
    match sum_on_device(&parts)? {
        Some(total) => scalar_to_host(&total),
        None => Ok(0.0),
    }
}

fn scalar_to_host(t: &Tensor) -> Result<f64> {
    Ok(match t.dtype() {
        DType::F64 => t.to_scalar::<f64>()?,
        _ => t.to_dtype(DType::F32)?.to_scalar::<f32>()? as f64,
    })
}

/// The dtype a gradient's reductions run in: its own for f32 and f64, f32 for half types.
fn acc_dtype(g: &Tensor) -> DType {
    match g.dtype() {
        DType::F64 => DType::F64,
        _ => DType::F32,
    }
}

/// The L2 norm of all gradients of `vars` taken together (as if concatenated into one vector),
/// i.e. `torch.nn.utils.get_total_norm` with `norm_type=2`. 0 when no variable has a gradient.
pub fn grad_norm(grads: &GradStore, vars: &[Var]) -> Result<f64> {
    match grad_norm_tensor(grads, vars)? {
        Some(t) => scalar_to_host(&t),
        None => Ok(0.0),
    }
}

/// [`grad_norm`] without leaving the device: a 0-dim tensor (f64 when every gradient is f64,
/// else f32) on the gradients' device, or `None` when no variable has a gradient.
pub fn grad_norm_tensor(grads: &GradStore, vars: &[Var]) -> Result<Option<Tensor>> {
    let parts = present(grads, vars)
        .map(|(_, g)| g.to_dtype(acc_dtype(&g))?.sqr()?.sum_all())
        .collect::<candle_core::Result<Vec<_>>>()?;
    match sum_on_device(&parts)? {
        Some(sum_of_squares) => Ok(Some(sum_of_squares.sqrt()?)),
        None => Ok(None),
    }
}

/// Scales the gradients of `vars` so their total L2 norm is at most `max_norm`, as
/// `torch.nn.utils.clip_grad_norm_` (norm type 2): with `total` the norm before clipping, every
/// gradient is multiplied by `min(1, max_norm / (total + 1e-6))`. Returns `total`.
///
/// Unlike PyTorch, a non-finite `total` leaves the gradients unchanged (PyTorch would multiply
/// them by NaN or 0); check the returned norm, or [`grads_are_finite`], before stepping.
///
/// On the CPU, f32/f64 gradients are scaled in their own storage, as PyTorch scales `.grad`:
/// a gradient tensor that is also held outside the store changes there too (the gradients
/// `backward` returns are held nowhere else). Gradients that share storage with each other are
/// replaced by scaled copies instead.
///
/// `max_norm` must be `>= 0` (`inf` disables clipping).
pub fn clip_grad_norm(grads: &mut GradStore, vars: &[Var], max_norm: f64) -> Result<f64> {
    match clip_grad_norm_tensor(grads, vars, max_norm)? {
        Some(t) => scalar_to_host(&t),
        None => Ok(0.0),
    }
}

/// [`clip_grad_norm`] without leaving the device (no host synchronisation): the clipping
/// factor is computed and applied on the gradients' device, and the total norm comes back as
/// a 0-dim tensor (`None` when no variable has a gradient).
pub fn clip_grad_norm_tensor(
    grads: &mut GradStore,
    vars: &[Var],
    max_norm: f64,
) -> Result<Option<Tensor>> {
    if max_norm.is_nan() || max_norm < 0.0 {
        return Err(Error::Invalid(format!(
            "clip_grad_norm: max_norm must be >= 0, got {max_norm}"
        )));
    }
    if let Some(total) = cpu::clip_grad_norm(grads, vars, max_norm)? {
        return Ok(Some(total));
    }
    clip_grad_norm_composed(grads, vars, max_norm)
}

/// [`clip_grad_norm_tensor`] in Candle ops on any device: the twin of the CPU pass
/// ([`cpu::clip_grad_norm`]), which tests hold equal to it.
fn clip_grad_norm_composed(
    grads: &mut GradStore,
    vars: &[Var],
    max_norm: f64,
) -> Result<Option<Tensor>> {
    let Some(total) = grad_norm_tensor(grads, vars)? else {
        return Ok(None);
    };
    if max_norm.is_infinite() {
        return Ok(Some(total));
    }
    // coef = min(1, max_norm / (total + 1e-6)), and 1 where `total` is not finite.
    let coef = total
        .affine(1.0, 1e-6)?
        .recip()?
        .affine(max_norm, 0.0)?
        .minimum(1.0)?;
    let finite = total.affine(0.0, 0.0)?.eq(0.0)?;
    let coef = finite.where_cond(&coef, &coef.ones_like()?)?;
    for var in vars {
        if let Some(g) = grads.get(var) {
            let scaled = g.detach().broadcast_mul(&coef.to_dtype(g.dtype())?)?;
            grads.insert(var, scaled);
        }
    }
    Ok(Some(total))
}

/// Clamps every gradient element of `vars` to `[-clip, clip]`, as
/// `torch.nn.utils.clip_grad_value_`. NaNs stay NaN. `clip` must be `>= 0`.
pub fn clip_grad_value(grads: &mut GradStore, vars: &[Var], clip: f64) -> Result<()> {
    if clip.is_nan() || clip < 0.0 {
        return Err(Error::Invalid(format!(
            "clip_grad_value: clip must be >= 0, got {clip}"
        )));
    }
    for var in vars {
        if let Some(g) = grads.get(var) {
            let clamped = g.detach().clamp(-clip, clip)?;
            grads.insert(var, clamped);
        }
    }
    Ok(())
}

/// Per gradient, a 0-dim f32 tensor that is 0 when all elements are finite and NaN otherwise:
/// `g * 0` is exactly 0 for finite elements and NaN for infinite or NaN ones, so unlike a plain
/// sum it cannot overflow on large finite values.
fn non_finite_marker(g: &Tensor) -> candle_core::Result<Tensor> {
    g.affine(0.0, 0.0)?.sum_all()?.to_dtype(DType::F32)
}

/// Per parameter, in the given order, a 0-dim f32 marker on the gradients' device: 0 when its
/// gradient is finite (or absent), NaN when it holds a NaN or an infinity. Stack and read them
/// once to learn which parameter went bad without a host round trip per parameter.
pub fn non_finite_markers(grads: &GradStore, params: &[(String, Var)]) -> Result<Vec<Tensor>> {
    let device = params
        .first()
        .map(|(_, v)| v.device().clone())
        .unwrap_or(candle_core::Device::Cpu);
    params
        .iter()
        .map(|(_, v)| match grads.get(v) {
            Some(g) => Ok(non_finite_marker(&g.detach())?),
            None => Ok(Tensor::zeros((), DType::F32, &device)?),
        })
        .collect()
}

/// Whether every gradient of `vars` is free of NaN and infinities (true when there are none).
pub fn grads_are_finite(grads: &GradStore, vars: &[Var]) -> Result<bool> {
    let parts = present(grads, vars)
        .map(|(_, g)| non_finite_marker(&g))
        .collect::<candle_core::Result<Vec<_>>>()?;
    Ok(sum_to_host(parts)?.is_finite())
}

/// The name of the first parameter (in the given order) whose gradient holds a NaN or an
/// infinity, or `None` if all are finite, so a trainer can stop and say where it happened.
pub fn first_non_finite_grad(
    grads: &GradStore,
    params: &[(String, Var)],
) -> Result<Option<String>> {
    let vars: Vec<Var> = params.iter().map(|(_, v)| v.clone()).collect();
    if grads_are_finite(grads, &vars)? {
        return Ok(None);
    }
    // Rare path: find the culprit one parameter at a time.
    for (name, var) in params {
        if let Some(g) = grads.get(var) {
            if !scalar_to_host(&non_finite_marker(g)?)?.is_finite() {
                return Ok(Some(name.clone()));
            }
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::super::testutil::{assert_close, values};
    use super::*;
    use candle_core::Device;

    /// `a` (2x2) and `b` (3) with fixed gradients, plus `c` without one.
    fn setup(dtype: DType) -> (Vec<Var>, GradStore) {
        let dev = Device::Cpu;
        let a = Var::zeros((2, 2), dtype, &dev).unwrap();
        let b = Var::zeros(3, dtype, &dev).unwrap();
        let c = Var::zeros(1, dtype, &dev).unwrap();
        let mut grads = GradStore::default();
        let t = |v: &[f64], dims: &[usize]| {
            Tensor::from_slice(v, dims, &dev)
                .unwrap()
                .to_dtype(dtype)
                .unwrap()
        };
        grads.insert(&a, t(&[3.0, -4.0, 1.0, 2.0], &[2, 2]));
        grads.insert(&b, t(&[0.5, -1.5, 2.0], &[3]));
        (vec![a, b, c], grads)
    }

    // Python, for dt in (torch.float64, torch.float32) and max_norm in (1.0, 10.0):
    // a = torch.zeros(2, 2, dtype=dt, requires_grad=True); b = torch.zeros(3, dtype=dt, requires_grad=True)
    // a.grad = torch.tensor([[3.0, -4.0], [1.0, 2.0]], dtype=dt); b.grad = torch.tensor([0.5, -1.5, 2.0], dtype=dt)
    // n = torch.nn.utils.clip_grad_norm_([a, b], max_norm, foreach=False)
    // print(n.item(), a.grad.flatten().tolist(), b.grad.tolist())
    const TORCH_NORM_F64: f64 = 6.041522986797286;
    const TORCH_A_F64: [f64; 4] = [
        0.49656345096965354,
        -0.6620846012928714,
        0.16552115032321785,
        0.3310423006464357,
    ];
    const TORCH_B_F64: [f64; 3] = [
        0.08276057516160892,
        -0.24828172548482677,
        0.3310423006464357,
    ];
    const TORCH_NORM_F32: f64 = 6.041523456573486;
    const TORCH_A_F32: [f64; 4] = [
        0.4965634346008301,
        -0.6620845794677734,
        0.16552114486694336,
        0.3310422897338867,
    ];
    const TORCH_B_F32: [f64; 3] = [
        0.08276057243347168,
        -0.24828171730041504,
        0.3310422897338867,
    ];

    /// Seeded gradients of `shapes` (values of a few units, some of them large enough that the
    /// norm exceeds 5), each in its own storage.
    fn random_grads(dtype: DType, shapes: &[&[usize]], seed: u64) -> (Vec<Var>, GradStore) {
        let dev = Device::Cpu;
        let mut state = seed;
        let mut next = move || {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((state >> 11) as f64 / (1u64 << 53) as f64) * 2.0 - 1.0
        };
        let mut grads = GradStore::default();
        let vars: Vec<Var> = shapes
            .iter()
            .map(|&dims| {
                let var = Var::zeros(dims, dtype, &dev).unwrap();
                let n: usize = dims.iter().product();
                let v: Vec<f64> = (0..n).map(|_| next() * 3.0).collect();
                let g = Tensor::from_vec(v, dims, &dev)
                    .unwrap()
                    .to_dtype(dtype)
                    .unwrap();
                grads.insert(&var, g);
                var
            })
            .collect();
        (vars, grads)
    }

    fn copy(grads: &GradStore, vars: &[Var]) -> GradStore {
        let mut out = GradStore::default();
        for v in vars {
            if let Some(g) = grads.get(v) {
                out.insert(v, g.copy().unwrap());
            }
        }
        out
    }

    /// The CPU pass (two parallel passes, in place) equals its composed twin: the same norm
    /// within the rounding of the sum, the same gradients after clipping; unclipped gradients
    /// untouched bitwise; the same result on 1 and 3 threads, bitwise.
    #[test]
    fn cpu_clip_equals_the_composed_twin() {
        // Sizes across several parallel chunks (CHUNK = 32768), an empty gradient and a scalar.
        let shapes: &[&[usize]] = &[&[300, 257], &[70_001], &[0], &[1], &[4, 5, 6]];
        for (dtype, tol) in [(DType::F32, 2e-6), (DType::F64, 1e-12)] {
            for max_norm in [5.0, 1e9, f64::INFINITY] {
                let (vars, grads) = random_grads(dtype, shapes, 7);
                let (fast, mut composed) = (copy(&grads, &vars), copy(&grads, &vars));
                let total = cpu::clip_grad_norm(&fast, &vars, max_norm)
                    .unwrap()
                    .expect("the CPU pass applies");
                let twin = clip_grad_norm_composed(&mut composed, &vars, max_norm)
                    .unwrap()
                    .unwrap();
                let (t, w) = (values(&total)[0], values(&twin)[0]);
                assert!(
                    (t - w).abs() <= tol * w,
                    "{dtype:?} {max_norm}: norm {t} vs {w}"
                );
                assert!(t > 100.0, "the test's gradients are clipped at 5: norm {t}");
                for v in &vars {
                    let (a, b) = (
                        values(fast.get(v).unwrap()),
                        values(composed.get(v).unwrap()),
                    );
                    assert_close(&a, &b, tol, "clipped gradient");
                    if max_norm > 1e8 {
                        assert_eq!(a, values(grads.get(v).unwrap()), "unclipped: unchanged");
                    }
                }
                // Through the public function: the CPU pass, the same result.
                let mut public = copy(&grads, &vars);
                let n = clip_grad_norm_tensor(&mut public, &vars, max_norm)
                    .unwrap()
                    .unwrap();
                assert_eq!(values(&n), values(&total));
                for v in &vars {
                    assert_eq!(values(public.get(v).unwrap()), values(fast.get(v).unwrap()));
                }
                // Thread counts: the same bits.
                let on = |threads: usize| {
                    let g = copy(&grads, &vars);
                    let pool = rayon::ThreadPoolBuilder::new()
                        .num_threads(threads)
                        .build()
                        .unwrap();
                    let n =
                        pool.install(|| cpu::clip_grad_norm(&g, &vars, max_norm).unwrap().unwrap());
                    let all: Vec<Vec<f64>> =
                        vars.iter().map(|v| values(g.get(v).unwrap())).collect();
                    (values(&n), all)
                };
                assert_eq!(on(1), on(3), "{dtype:?} {max_norm}");
            }
        }
    }

    /// Two variables whose gradients share one storage (scaling in place would scale it twice),
    /// mixed dtypes and non-contiguous gradients are left to the composed path.
    #[test]
    fn cpu_clip_leaves_what_it_cannot_do_in_place_to_the_composed_path() {
        let dev = Device::Cpu;
        let (a, b) = (
            Var::zeros(4, DType::F32, &dev).unwrap(),
            Var::zeros(4, DType::F32, &dev).unwrap(),
        );
        let shared = Tensor::new(&[3f32, 4.0, 0.0, 0.0], &dev).unwrap();
        let mut grads = GradStore::default();
        grads.insert(&a, shared.clone());
        grads.insert(&b, shared.clone());
        assert!(cpu::clip_grad_norm(&grads, &[a.clone(), b.clone()], 1.0)
            .unwrap()
            .is_none());
        let total = clip_grad_norm(&mut grads, &[a.clone(), b.clone()], 1.0).unwrap();
        assert!((total - 50f64.sqrt()).abs() < 1e-5, "{total}");
        let want = 1.0 / (50f64.sqrt() + 1e-6);
        for v in [&a, &b] {
            assert_close(
                &values(grads.get(v).unwrap()),
                &[3.0 * want, 4.0 * want, 0.0, 0.0],
                1e-6,
                "shared",
            );
        }
        let c = Var::zeros((2, 3), DType::F32, &dev).unwrap();
        let mut grads = GradStore::default();
        grads.insert(
            &c,
            Tensor::ones((3, 2), DType::F32, &dev).unwrap().t().unwrap(),
        );
        assert!(cpu::clip_grad_norm(&grads, std::slice::from_ref(&c), 1.0)
            .unwrap()
            .is_none());
        let d = Var::zeros(2, DType::F64, &dev).unwrap();
        grads.insert(&c, Tensor::ones((2, 3), DType::F32, &dev).unwrap());
        grads.insert(&d, Tensor::ones(2, DType::F64, &dev).unwrap());
        assert!(cpu::clip_grad_norm(&grads, &[c, d], 1.0).unwrap().is_none());
    }

    #[test]
    fn clip_grad_norm_matches_pytorch() {
        for (dtype, tol, norm, a, b) in [
            (DType::F64, 1e-12, TORCH_NORM_F64, TORCH_A_F64, TORCH_B_F64),
            (DType::F32, 1e-6, TORCH_NORM_F32, TORCH_A_F32, TORCH_B_F32),
        ] {
            let (vars, mut grads) = setup(dtype);
            let total = clip_grad_norm(&mut grads, &vars, 1.0).unwrap();
            assert_close(&[total], &[norm], tol, "total norm");
            assert_close(&values(grads.get(&vars[0]).unwrap()), &a, tol, "a");
            assert_close(&values(grads.get(&vars[1]).unwrap()), &b, tol, "b");
            assert!(grads.get(&vars[2]).is_none(), "no gradient appears for c");
            assert!((grad_norm(&grads, &vars).unwrap() - 1.0).abs() < 1e-5);

            // max_norm 10: PyTorch returns the same norm and leaves the gradients alone.
            let (vars, mut grads) = setup(dtype);
            let total = clip_grad_norm(&mut grads, &vars, 10.0).unwrap();
            assert_close(&[total], &[norm], tol, "total norm");
            assert_eq!(values(grads.get(&vars[0]).unwrap()), [3.0, -4.0, 1.0, 2.0]);
            assert_eq!(values(grads.get(&vars[1]).unwrap()), [0.5, -1.5, 2.0]);
        }
        let (vars, mut grads) = setup(DType::F32);
        let e = clip_grad_norm(&mut grads, &vars, f64::NAN).unwrap_err();
        assert!(
            e.to_string().contains("max_norm must be >= 0, got NaN"),
            "{e}"
        );
        assert_eq!(grad_norm(&GradStore::default(), &vars).unwrap(), 0.0);
    }

    #[test]
    fn clip_grad_value_clamps() {
        let (vars, mut grads) = setup(DType::F32);
        clip_grad_value(&mut grads, &vars, 1.5).unwrap();
        assert_eq!(values(grads.get(&vars[0]).unwrap()), [1.5, -1.5, 1.0, 1.5]);
        assert_eq!(values(grads.get(&vars[1]).unwrap()), [0.5, -1.5, 1.5]);
        let e = clip_grad_value(&mut grads, &vars, -1.0).unwrap_err();
        assert!(e.to_string().contains("clip must be >= 0, got -1"), "{e}");
    }

    #[test]
    fn non_finite_gradients_are_found_by_name() {
        for dtype in [DType::F32, DType::F64, DType::BF16] {
            let (vars, mut grads) = setup(dtype);
            let named: Vec<(String, Var)> = ["a", "b", "c"]
                .iter()
                .zip(&vars)
                .map(|(n, v)| (n.to_string(), v.clone()))
                .collect();
            assert!(grads_are_finite(&grads, &vars).unwrap());
            assert_eq!(first_non_finite_grad(&grads, &named).unwrap(), None);
            // Huge but finite values: a plain sum would overflow to inf in f32.
            let big = Tensor::full(3.0e38f32, 3, &Device::Cpu)
                .unwrap()
                .to_dtype(dtype)
                .unwrap();
            grads.insert(&vars[1], big);
            assert!(grads_are_finite(&grads, &vars).unwrap(), "{dtype:?}");
            for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
                let g = Tensor::new(&[0.5f32, bad, 2.0], &Device::Cpu)
                    .unwrap()
                    .to_dtype(dtype)
                    .unwrap();
                grads.insert(&vars[1], g);
                assert!(!grads_are_finite(&grads, &vars).unwrap(), "{bad} {dtype:?}");
                assert_eq!(
                    first_non_finite_grad(&grads, &named).unwrap().as_deref(),
                    Some("b")
                );
                // The norm says so too, and clipping leaves such gradients alone.
                let total = clip_grad_norm(&mut grads, &vars, 1.0).unwrap();
                assert!(!total.is_finite());
                assert_eq!(values(grads.get(&vars[0]).unwrap()), [3.0, -4.0, 1.0, 2.0]);
            }
        }
    }
}
