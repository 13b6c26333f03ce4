//! Reading CPU tensors in place and shaping flat gradients back into tensors: the glue between
//! Candle's storage and the fused CPU kernels.

use super::math::Float;
use candle_core::{bail, CpuStorage, DType, Layout, Result, Storage, Tensor, WithDType};

/// The contiguous slice of a CPU storage under `layout`.
pub(crate) fn cpu_slice<'a, T: WithDType>(s: &'a CpuStorage, layout: &Layout) -> Result<&'a [T]> {
    match layout.contiguous_offsets() {
        Some((start, end)) => Ok(&s.as_slice::<T>()?[start..end]),
        None => bail!("fused CPU op: argument is not contiguous"),
    }
}

/// Reads a contiguous CPU tensor as a flat vector (no copy when already contiguous and in place).
pub(crate) fn with_cpu_slice<T: WithDType, R>(
    t: &Tensor,
    f: impl FnOnce(&[T]) -> Result<R>,
) -> Result<R> {
    let t = t.contiguous()?;
    let (storage, layout) = t.storage_and_layout();
    match &*storage {
        Storage::Cpu(cpu) => f(cpu_slice::<T>(cpu, layout)?),
        _ => bail!("fused recurrence: tensor is not on the CPU"),
    }
}

/// [`with_cpu_slice`] over four tensors at once (a `CustomOp3`'s arguments and the upstream
/// gradient of its backward).
pub(crate) fn with_cpu_slices4<T: WithDType, R>(
    [a, b, c, d]: [&Tensor; 4],
    f: impl FnOnce(&[T], &[T], &[T], &[T]) -> Result<R>,
) -> Result<R> {
    with_cpu_slice::<T, _>(a, |a| {
        with_cpu_slice::<T, _>(b, |b| {
            with_cpu_slice::<T, _>(c, |c| with_cpu_slice::<T, _>(d, |d| f(a, b, c, d)))
        })
    })
}

/// Flat gradients `(d xs, d state0, d params)` of the recurrence's backward (`d xs` only when
/// [`Problem::input_grad`](super::problem::Problem::input_grad)).
pub(crate) type FlatGrads<T> = (Option<Vec<T>>, Vec<T>, Vec<T>);

/// The three flat gradients of a `CustomOp3`'s backward as tensors shaped like its arguments
/// (the first one only when computed).
pub(crate) fn grads_like<T: WithDType>(
    (a, b, c): FlatGrads<T>,
    like: [&Tensor; 3],
) -> Result<(Option<Tensor>, Tensor, Tensor)> {
    let dev = like[0].device();
    Ok((
        a.map(|a| Tensor::from_vec(a, like[0].shape(), dev))
            .transpose()?,
        Tensor::from_vec(b, like[1].shape(), dev)?,
        Tensor::from_vec(c, like[2].shape(), dev)?,
    ))
}

/// The forward of a fused recurrence op with no autograd graph, on the slices of its arguments
/// as the caller keeps them (`[xs, h0, (c0,) weights...]`, no packed copies).
pub(crate) trait UntrackedForward {
    /// The flat result from the arguments' slices.
    fn forward_views<T: Float>(&self, args: &[&[T]]) -> Vec<T>;
    /// Elements of the flat result.
    fn result_len(&self) -> usize;
}

/// Runs `op`'s [`UntrackedForward`] on `args` read in place (each made contiguous first), f32
/// or f64 on the CPU; `what` names the op in errors.
pub(crate) fn run_untracked(
    op: &impl UntrackedForward,
    what: &str,
    args: &[Tensor],
) -> Result<Tensor> {
    fn run<T: WithDType + Float>(
        op: &impl UntrackedForward,
        what: &str,
        args: &[Tensor],
    ) -> Result<Vec<T>> {
        let args = args
            .iter()
            .map(Tensor::contiguous)
            .collect::<Result<Vec<_>>>()?;
        let guards: Vec<_> = args.iter().map(Tensor::storage_and_layout).collect();
        let mut slices = Vec::with_capacity(guards.len());
        for (storage, layout) in &guards {
            match &**storage {
                Storage::Cpu(cpu) => slices.push(cpu_slice::<T>(cpu, layout)?),
                _ => bail!("{what}: tensor is not on the CPU"),
            }
        }
        Ok(op.forward_views(&slices))
    }
    let (len, device) = (op.result_len(), args[0].device());
    match args[0].dtype() {
        DType::F32 => Tensor::from_vec(run::<f32>(op, what, args)?, len, device),
        DType::F64 => Tensor::from_vec(run::<f64>(op, what, args)?, len, device),
        dt => bail!("{what}: f32 or f64 only, got {dt:?}"),
    }
}

/// The typed backward of a fused recurrence op, `(xs, state0, params)` to a flat result.
pub(crate) trait TypedRecurrenceBackward {
    /// `(d xs, d state0, d params)` from the slices of `xs`, `params` and the result's gradient.
    fn backward<T: Float>(&self, xs: &[T], params: &[T], grad_out: &[T]) -> Result<FlatGrads<T>>;
}

/// `CustomOp3::bwd` of a fused recurrence op on the CPU, f32 or f64: its gradients shaped like
/// its arguments, none for a state outside the graph (Candle would add it into a fresh zero
/// buffer that nothing reads). `what` names the op in the error for other dtypes.
pub(crate) fn recurrence_bwd(
    op: &impl TypedRecurrenceBackward,
    what: &str,
    [xs, state0, params]: [&Tensor; 3],
    grad_res: &Tensor,
) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
    fn run<T: Float>(
        op: &impl TypedRecurrenceBackward,
        xs: &Tensor,
        params: &Tensor,
        grad_res: &Tensor,
    ) -> Result<FlatGrads<T>> {
        with_cpu_slice::<T, _>(xs, |x| {
            with_cpu_slice::<T, _>(params, |w| {
                with_cpu_slice::<T, _>(grad_res, |g| op.backward(x, w, g))
            })
        })
    }
    let like = [xs, state0, params];
    let (dx, ds, dp) = match xs.dtype() {
        DType::F32 => grads_like(run::<f32>(op, xs, params, grad_res)?, like)?,
        DType::F64 => grads_like(run::<f64>(op, xs, params, grad_res)?, like)?,
        dt => bail!("{what}: f32 or f64 only, got {dt:?}"),
    };
    Ok((dx, Some(ds).filter(|_| state0.track_op()), Some(dp)))
}

/// Whether the fused CPU ops (the output layer's loss) can run `xs`: a CPU tensor of f32 or f64.
pub(crate) fn supports(xs: &Tensor) -> bool {
    xs.device().is_cpu() && matches!(xs.dtype(), DType::F32 | DType::F64)
}

/// The typed forward of a fused CPU op with three arguments of one float dtype.
pub(crate) trait TypedForward3 {
    /// The op's result from its three arguments' contiguous slices.
    fn forward<T: Float>(&self, a: &[T], b: &[T], c: &[T]) -> Result<Vec<T>>;
}

/// `CustomOp3::cpu_fwd` for f32 or f64 arguments of one dtype: runs [`TypedForward3::forward`]
/// on their slices. `what` names the op in the error for other dtypes.
pub(crate) fn cpu_fwd3(
    op: &impl TypedForward3,
    what: &str,
    (s1, l1): (&CpuStorage, &Layout),
    (s2, l2): (&CpuStorage, &Layout),
    (s3, l3): (&CpuStorage, &Layout),
) -> Result<CpuStorage> {
    match (s1, s2, s3) {
        (CpuStorage::F32(_), CpuStorage::F32(_), CpuStorage::F32(_)) => Ok(CpuStorage::F32(
            op.forward::<f32>(cpu_slice(s1, l1)?, cpu_slice(s2, l2)?, cpu_slice(s3, l3)?)?,
        )),
        (CpuStorage::F64(_), CpuStorage::F64(_), CpuStorage::F64(_)) => Ok(CpuStorage::F64(
            op.forward::<f64>(cpu_slice(s1, l1)?, cpu_slice(s2, l2)?, cpu_slice(s3, l3)?)?,
        )),
        _ => bail!("{what}: f32 or f64 only, all arguments of one dtype"),
    }
}

/// The typed backward of a fused CPU op with three arguments `(x, weight, bias)` of one float
/// dtype that all get a gradient.
pub(crate) trait TypedBackward3 {
    /// `(dx, dweight, dbias)` from the arguments' and the upstream gradient's slices.
    fn backward<T: Float>(
        &self,
        x: &[T],
        w: &[T],
        b: &[T],
        g: &[T],
    ) -> Result<(Vec<T>, Vec<T>, Vec<T>)>;
}

/// `CustomOp3::bwd` for f32 or f64: runs [`TypedBackward3::backward`] on the contiguous slices
/// of the three arguments and `grad`, and shapes the gradients like the arguments. `what` names
/// the op in the error for other dtypes.
pub(crate) fn cpu_bwd3(
    op: &impl TypedBackward3,
    what: &str,
    [x, w, b]: [&Tensor; 3],
    grad: &Tensor,
) -> Result<(Option<Tensor>, Tensor, Tensor)> {
    let args = [x, w, b, grad];
    match x.dtype() {
        DType::F32 => {
            let (dx, dw, db) =
                with_cpu_slices4::<f32, _>(args, |x, w, b, g| op.backward(x, w, b, g))?;
            grads_like((Some(dx), dw, db), [x, w, b])
        }
        DType::F64 => {
            let (dx, dw, db) =
                with_cpu_slices4::<f64, _>(args, |x, w, b, g| op.backward(x, w, b, g))?;
            grads_like((Some(dx), dw, db), [x, w, b])
        }
        dt => bail!("{what}: f32 or f64 only, got {dt:?}"),
    }
}
