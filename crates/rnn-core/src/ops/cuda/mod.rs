//! The fused recurrence on CUDA: the op's forward (`cuda_fwd`) and backward run the launch plans
//! of [`super::plan`] on Candle's stream (see [`exec`]). Memory comes from Candle's allocator; the
//! activations the backward needs stay on the device between the two passes.

mod exec;

use super::plan::{backward_plan, forward_plan, Buf, Spec, SAVED};
use super::recurrence::FusedRecurrence;
use candle_core::cuda::cudarc::driver::CudaSlice;
use candle_core::cuda::{CudaDevice, CudaStorage, CudaStorageSlice};
use candle_core::{bail, CustomOp3, Layout, Result, Shape, Tensor};
use exec::{execute, DevBuffers, KernelFloat};

/// The forward's saved activations, on the device.
struct CudaSaved<T> {
    bufs: Vec<(Buf, CudaSlice<T>)>,
}

fn start(l: &Layout, what: &str) -> Result<usize> {
    match l.contiguous_offsets() {
        Some((start, _)) => Ok(start),
        None => bail!("fused CUDA recurrence: {what} is not contiguous"),
    }
}

impl FusedRecurrence {
    fn spec(&self) -> Spec<'_> {
        Spec {
            mode: self.mode,
            problem: &self.problem,
            sizes: self.sizes,
            save: self.save,
        }
    }

    /// Gives the op's inputs to `bufs`.
    fn borrow_inputs<T: KernelFloat>(
        &self,
        bufs: &mut DevBuffers<T>,
        dev: &CudaDevice,
        x: (&CudaSlice<T>, &Layout),
        params: (&CudaSlice<T>, &Layout),
    ) -> Result<()> {
        let p = &self.problem;
        let stream = dev.cuda_stream();
        bufs.borrow(
            Buf::X,
            x.0,
            start(x.1, "the input")?,
            p.rows() * p.input,
            &stream,
        )?;
        bufs.borrow(
            Buf::Params,
            params.0,
            start(params.1, "the parameters")?,
            self.sizes.total(),
            &stream,
        )?;
        if let Some(l) = &p.lengths {
            bufs.set_lengths(&stream, l)?;
        }
        Ok(())
    }

    fn cuda_forward<T: KernelFloat>(
        &self,
        dev: &CudaDevice,
        x: (&CudaSlice<T>, &Layout),
        state0: (&CudaSlice<T>, &Layout),
        params: (&CudaSlice<T>, &Layout),
    ) -> Result<(CudaStorage, Shape)> {
        let stream = dev.cuda_stream();
        let mut bufs = DevBuffers::<T>::new();
        self.borrow_inputs(&mut bufs, dev, x, params)?;
        bufs.borrow(
            Buf::State0,
            state0.0,
            start(state0.1, "the initial state")?,
            self.state_len(),
            &stream,
        )?;
        bufs.alloc(dev, Buf::Out, self.out_len())?;
        execute(dev, &forward_plan(&self.spec()), &mut bufs)?;
        let Some(out) = bufs.take(Buf::Out) else {
            bail!("fused CUDA recurrence: the forward lost its output")
        };
        if self.save {
            let saved = CudaSaved {
                bufs: SAVED
                    .iter()
                    .filter_map(|&b| bufs.take(b).map(|s| (b, s)))
                    .collect(),
            };
            if let Ok(mut slot) = self.saved.lock() {
                *slot = Some(Box::new(saved));
            }
        }
        Ok((
            CudaStorage::wrap_cuda_slice(out, dev.clone()),
            Shape::from(self.out_len()),
        ))
    }

    /// The flat gradient `[dx (when computed) | d state0 | d params]`.
    fn cuda_backward<T: KernelFloat>(
        &self,
        dev: &CudaDevice,
        x: (&CudaSlice<T>, &Layout),
        params: (&CudaSlice<T>, &Layout),
        grad_out: (&CudaSlice<T>, &Layout),
    ) -> Result<(CudaStorage, Shape)> {
        let p = &self.problem;
        let stream = dev.cuda_stream();
        let slot = match self.saved.lock() {
            Ok(slot) => slot,
            Err(_) => bail!("fused CUDA recurrence: saved activations lock poisoned"),
        };
        let Some(saved) = slot.as_ref().and_then(|s| s.downcast_ref::<CudaSaved<T>>()) else {
            bail!("fused CUDA recurrence: backward called but the forward saved no activations of this dtype on the device")
        };
        let mut bufs = DevBuffers::<T>::new();
        self.borrow_inputs(&mut bufs, dev, x, params)?;
        bufs.borrow(
            Buf::GradOut,
            grad_out.0,
            start(grad_out.1, "the output gradient")?,
            self.out_len(),
            &stream,
        )?;
        for (buf, slice) in &saved.bufs {
            bufs.borrow(*buf, slice, 0, slice.len(), &stream)?;
        }
        let dx_len = if p.input_grad { p.rows() * p.input } else { 0 };
        let (ds_len, dp_len) = (self.state_len(), self.sizes.total());
        let total = dx_len + ds_len + dp_len;
        // SAFETY: the backward plan writes every element of DX, DState and DParams (the host
        // executor's tests start them as NaN and check).
        let res = unsafe { dev.alloc::<T>(total.max(1)) }?;
        if p.input_grad {
            bufs.borrow(Buf::DX, &res, 0, dx_len, &stream)?;
        }
        bufs.borrow(Buf::DState, &res, dx_len, ds_len, &stream)?;
        bufs.borrow(Buf::DParams, &res, dx_len + ds_len, dp_len, &stream)?;
        execute(dev, &backward_plan(&self.spec()), &mut bufs)?;
        drop(bufs);
        Ok((
            CudaStorage::wrap_cuda_slice(res, dev.clone()),
            Shape::from(total.max(1)),
        ))
    }
}

/// `FusedRecurrence::cuda_fwd`.
pub(crate) fn forward(
    op: &FusedRecurrence,
    s1: &CudaStorage,
    l1: &Layout,
    s2: &CudaStorage,
    l2: &Layout,
    s3: &CudaStorage,
    l3: &Layout,
) -> Result<(CudaStorage, Shape)> {
    use CudaStorageSlice as S;
    match (&s1.slice, &s2.slice, &s3.slice) {
        (S::F32(x), S::F32(s), S::F32(p)) => {
            op.cuda_forward::<f32>(&s1.device, (x, l1), (s, l2), (p, l3))
        }
        (S::F64(x), S::F64(s), S::F64(p)) => {
            op.cuda_forward::<f64>(&s1.device, (x, l1), (s, l2), (p, l3))
        }
        _ => bail!("fused CUDA recurrence: f32 or f64 only, all arguments of one dtype"),
    }
}

/// The backward as an op of its own over `(xs, params, grad_out)`, run without autograd.
struct Backward<'a>(&'a FusedRecurrence);

impl CustomOp3 for Backward<'_> {
    fn name(&self) -> &'static str {
        "fused-recurrence-backward"
    }

    fn cpu_fwd(
        &self,
        _: &candle_core::CpuStorage,
        _: &Layout,
        _: &candle_core::CpuStorage,
        _: &Layout,
        _: &candle_core::CpuStorage,
        _: &Layout,
    ) -> Result<(candle_core::CpuStorage, Shape)> {
        bail!("fused CUDA recurrence: its backward runs on CUDA only")
    }

    fn cuda_fwd(
        &self,
        s1: &CudaStorage,
        l1: &Layout,
        s2: &CudaStorage,
        l2: &Layout,
        s3: &CudaStorage,
        l3: &Layout,
    ) -> Result<(CudaStorage, Shape)> {
        use CudaStorageSlice as S;
        match (&s1.slice, &s2.slice, &s3.slice) {
            (S::F32(x), S::F32(p), S::F32(g)) => {
                self.0
                    .cuda_backward::<f32>(&s1.device, (x, l1), (p, l2), (g, l3))
            }
            (S::F64(x), S::F64(p), S::F64(g)) => {
                self.0
                    .cuda_backward::<f64>(&s1.device, (x, l1), (p, l2), (g, l3))
            }
            _ => bail!("fused CUDA recurrence: f32 or f64 only, all arguments of one dtype"),
        }
    }
}

/// `FusedRecurrence::bwd` on CUDA: gradients shaped like `(xs, state0, params)`.
pub(crate) fn backward(
    op: &FusedRecurrence,
    xs: &Tensor,
    state0: &Tensor,
    params: &Tensor,
    grad_res: &Tensor,
) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
    let flat = xs.contiguous()?.apply_op3_no_bwd(
        &params.contiguous()?,
        &grad_res.contiguous()?,
        &Backward(op),
    )?;
    let mut off = 0;
    let dx = if op.problem.input_grad {
        off = xs.elem_count();
        Some(flat.narrow(0, 0, off)?.reshape(xs.shape())?)
    } else {
        None
    };
    let ds = flat
        .narrow(0, off, state0.elem_count())?
        .reshape(state0.shape())?;
    off += state0.elem_count();
    let dp = flat
        .narrow(0, off, params.elem_count())?
        .reshape(params.shape())?;
    Ok((dx, Some(ds).filter(|_| state0.track_op()), Some(dp)))
}
