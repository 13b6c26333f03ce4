//! Executes a launch plan on a CUDA device, on Candle's stream: GEMMs through Candle's cuBLAS
//! handle, pointwise kernels from the embedded fatbin, copies as async device copies, and
//! scratch memory from Candle's allocator. The CPU twin of this file is `plan/host.rs`.

use crate::ops::plan::{Buf, BufRef, Gemm, Kernel, Op, Plan, StepArgs};
use candle_core::cuda::cudarc;
use candle_core::cuda::cudarc::driver::{
    CudaFunction, CudaModule, CudaSlice, CudaStream, DevicePtr, DeviceRepr, LaunchConfig,
    PushKernelArg,
};
use candle_core::cuda::CudaDevice;
use candle_core::{bail, Result};
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, OnceLock};

/// The kernels of `cuda/recurrence.cu`, built by build.rs.
static FATBIN: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/recurrence.fatbin"));

// SAFETY: `StepArgs` is `#[repr(C)]` plain data (integers and device addresses), the layout of
// `RnnStepArgs<T>` that the kernels take by value (a test holds the two layouts equal).
unsafe impl<T> DeviceRepr for StepArgs<T> {}

/// The kernels' element types.
pub(crate) trait KernelFloat:
    DeviceRepr + candle_core::cuda::CudaDType + Copy + 'static
{
    /// `_f32` or `_f64`.
    const SUFFIX: &'static str;
    /// `C = op(A) op(B) + beta C` (column-major, alpha 1).
    ///
    /// # Safety
    /// The pointers must address device memory that covers the product's operands.
    unsafe fn gemm(dev: &CudaDevice, g: &Gemm, a: u64, b: u64, c: u64) -> Result<()>;
}

fn op(trans: bool) -> cudarc::cublas::sys::cublasOperation_t {
    if trans {
        cudarc::cublas::sys::cublasOperation_t::CUBLAS_OP_T
    } else {
        cudarc::cublas::sys::cublasOperation_t::CUBLAS_OP_N
    }
}

fn int(v: usize, what: &str) -> Result<i32> {
    i32::try_from(v).map_err(|_| {
        candle_core::Error::Msg(format!(
            "fused CUDA recurrence: {what} {v} exceeds cuBLAS's 32-bit sizes"
        ))
    })
}

fn blas_error(e: cudarc::cublas::result::CublasError) -> candle_core::Error {
    candle_core::Error::Msg(format!("fused CUDA recurrence: cuBLAS gemm: {e:?}"))
}

impl KernelFloat for f32 {
    const SUFFIX: &'static str = "_f32";
    /// Full f32 products unless Candle's reduced-precision flag
    /// (`candle_core::cuda::set_gemm_reduced_precision_f32`) asks for TF32, as Candle's matmul does.
    unsafe fn gemm(dev: &CudaDevice, g: &Gemm, a: u64, b: u64, c: u64) -> Result<()> {
        use cudarc::cublas::sys::{cublasComputeType_t as C, cublasGemmAlgo_t, cudaDataType as D};
        let blas = dev.cublas_handle();
        let (alpha, beta) = (1f32, g.beta as f32);
        let compute = if candle_core::cuda::gemm_reduced_precision_f32() {
            C::CUBLAS_COMPUTE_32F_FAST_TF32
        } else {
            C::CUBLAS_COMPUTE_32F
        };
        cudarc::cublas::result::gemm_ex(
            *blas.handle(),
            op(g.transa),
            op(g.transb),
            int(g.m, "m")?,
            int(g.n, "n")?,
            int(g.k, "k")?,
            (&alpha as *const f32).cast(),
            a as *const std::ffi::c_void,
            D::CUDA_R_32F,
            int(g.lda, "lda")?,
            b as *const std::ffi::c_void,
            D::CUDA_R_32F,
            int(g.ldb, "ldb")?,
            (&beta as *const f32).cast(),
            c as *mut std::ffi::c_void,
            D::CUDA_R_32F,
            int(g.ldc, "ldc")?,
            compute,
            cublasGemmAlgo_t::CUBLAS_GEMM_DEFAULT,
        )
        .map_err(blas_error)
    }
}

impl KernelFloat for f64 {
    const SUFFIX: &'static str = "_f64";
    unsafe fn gemm(dev: &CudaDevice, g: &Gemm, a: u64, b: u64, c: u64) -> Result<()> {
        let blas = dev.cublas_handle();
        let (alpha, beta) = (1f64, g.beta);
        cudarc::cublas::result::dgemm(
            *blas.handle(),
            op(g.transa),
            op(g.transb),
            int(g.m, "m")?,
            int(g.n, "n")?,
            int(g.k, "k")?,
            &alpha,
            a as *const f64,
            int(g.lda, "lda")?,
            b as *const f64,
            int(g.ldb, "ldb")?,
            &beta,
            c as *mut f64,
            int(g.ldc, "ldc")?,
        )
        .map_err(blas_error)
    }
}

/// Loaded kernels per CUDA context (by its ordinal) and function name.
type Functions = HashMap<(usize, String), CudaFunction>;
/// Loaded modules per CUDA context, and their functions.
type Cache = Mutex<(HashMap<usize, Arc<CudaModule>>, Functions)>;

fn functions() -> &'static Cache {
    static F: OnceLock<Cache> = OnceLock::new();
    F.get_or_init(|| Mutex::new((HashMap::new(), HashMap::new())))
}

/// The `__global__` function of `kernel` for `T`, loading the fatbin into the stream's context
/// on first use.
fn function<T: KernelFloat>(stream: &Arc<CudaStream>, kernel: Kernel) -> Result<CudaFunction> {
    let ctx = stream.context();
    let ordinal = ctx.ordinal();
    let name = format!("{}{}", kernel.name(), T::SUFFIX);
    let mut guard = match functions().lock() {
        Ok(g) => g,
        Err(_) => bail!("fused CUDA recurrence: kernel cache lock poisoned"),
    };
    let (modules, funcs) = &mut *guard;
    if let Some(f) = funcs.get(&(ordinal, name.clone())) {
        return Ok(f.clone());
    }
    let module = match modules.get(&ordinal) {
        Some(m) => m.clone(),
        None => {
            let ptx = cudarc::nvrtc::Ptx::from_binary(FATBIN.to_vec());
            let m = ctx.load_module(ptx).map_err(|e| {
                candle_core::Error::Msg(format!(
                    "fused CUDA recurrence: loading its kernels (built for sm_{} by {}) failed: {e:?}",
                    env!("RNN_CUDA_KERNELS_CAP"),
                    env!("RNN_CUDA_KERNELS_NVCC")
                ))
            })?;
            modules.insert(ordinal, m.clone());
            m
        }
    };
    let f = module.load_function(&name).map_err(|e| {
        candle_core::Error::Msg(format!("fused CUDA recurrence: kernel {name}: {e:?}"))
    })?;
    funcs.insert((ordinal, name), f.clone());
    Ok(f)
}

/// Device buffers of one execution: addresses (with the caller's layout offsets applied) and
/// lengths, plus the plan-owned allocations they point into.
pub(crate) struct DevBuffers<T> {
    addrs: BTreeMap<Buf, (u64, usize)>,
    owned: BTreeMap<Buf, CudaSlice<T>>,
    lengths: Option<CudaSlice<i64>>,
}

impl<T: KernelFloat> DevBuffers<T> {
    pub fn new() -> Self {
        Self {
            addrs: BTreeMap::new(),
            owned: BTreeMap::new(),
            lengths: None,
        }
    }

    /// Gives `buf` as `len` elements of `slice` from element `offset` (a caller's buffer, kept
    /// alive by the caller until the stream has run the plan's launches).
    pub fn borrow(
        &mut self,
        buf: Buf,
        slice: &CudaSlice<T>,
        offset: usize,
        len: usize,
        stream: &CudaStream,
    ) -> Result<()> {
        if offset + len > slice.len() {
            bail!(
                "fused CUDA recurrence: {buf:?} needs {len} elements from {offset}, has {}",
                slice.len()
            );
        }
        let (ptr, _sync) = slice.device_ptr(stream);
        self.addrs
            .insert(buf, (ptr + (offset * std::mem::size_of::<T>()) as u64, len));
        Ok(())
    }

    /// Makes `buf` a plan-owned allocation of `len` elements (contents undefined).
    pub fn alloc(&mut self, dev: &CudaDevice, buf: Buf, len: usize) -> Result<()> {
        // SAFETY: every element a plan reads is written by an earlier launch of the plan (the
        // host executor's tests check this with NaN-filled buffers).
        let slice = unsafe { dev.alloc::<T>(len.max(1)) }?;
        let stream = dev.cuda_stream();
        let ptr = slice.device_ptr(&stream).0;
        self.addrs.insert(buf, (ptr, len));
        self.owned.insert(buf, slice);
        Ok(())
    }

    pub fn set_lengths(&mut self, stream: &Arc<CudaStream>, lengths: &[usize]) -> Result<()> {
        let l: Vec<i64> = lengths.iter().map(|&v| v as i64).collect();
        self.lengths = Some(stream.clone_htod(&l).map_err(|e| {
            candle_core::Error::Msg(format!("fused CUDA recurrence: lengths upload: {e:?}"))
        })?);
        Ok(())
    }

    /// Takes the plan-owned allocation of `buf` out (e.g. the saved activations).
    pub fn take(&mut self, buf: Buf) -> Option<CudaSlice<T>> {
        self.addrs.remove(&buf);
        self.owned.remove(&buf)
    }

    fn addr(&self, r: BufRef) -> Result<u64> {
        match self.addrs.get(&r.buf) {
            Some(&(base, len)) if r.off <= len => {
                Ok(base + (r.off * std::mem::size_of::<T>()) as u64)
            }
            Some(&(_, len)) => bail!(
                "fused CUDA recurrence: {:?} at {} is outside its {len} elements",
                r.buf,
                r.off
            ),
            None => bail!(
                "fused CUDA recurrence: plan uses {:?}, which was not given",
                r.buf
            ),
        }
    }
}

/// Threads per block of the pointwise kernels (grid-stride loops cover any element count).
const BLOCK: u32 = 256;
/// Most blocks per pointwise launch.
const MAX_BLOCKS: u64 = 65_535;

/// Runs `plan` on `dev`'s stream: allocates its scratch buffers, then every launch in order.
pub(crate) fn execute<T: KernelFloat>(
    dev: &CudaDevice,
    plan: &Plan,
    bufs: &mut DevBuffers<T>,
) -> Result<()> {
    let stream = dev.cuda_stream();
    for &(buf, len) in &plan.scratch {
        if !bufs.addrs.contains_key(&buf) {
            bufs.alloc(dev, buf, len)?;
        }
    }
    let lengths_addr = match &bufs.lengths {
        Some(l) => l.device_ptr(&stream).0,
        None => 0,
    };
    for op in &plan.ops {
        match op {
            Op::Copy { src, dst, len } => {
                if *len > 0 {
                    let (s, d) = (bufs.addr(*src)?, bufs.addr(*dst)?);
                    // SAFETY: both ranges lie inside their buffers (offsets checked by `addr`,
                    // lengths by the plan's construction and the host executor's tests).
                    unsafe {
                        cudarc::driver::result::memcpy_dtod_async(
                            d,
                            s,
                            len * std::mem::size_of::<T>(),
                            stream.cu_stream(),
                        )
                    }
                    .map_err(|e| {
                        candle_core::Error::Msg(format!("fused CUDA recurrence: copy: {e:?}"))
                    })?;
                }
            }
            Op::Gemm(g) => {
                if g.m > 0 && g.n > 0 {
                    let (a, b, c) = (bufs.addr(g.a)?, bufs.addr(g.b)?, bufs.addr(g.c)?);
                    // SAFETY: as for the copy; the same plan runs on the CPU in the tests.
                    unsafe { T::gemm(dev, g, a, b, c)? };
                }
            }
            Op::Pointwise { kernel, n, args } => {
                if *n == 0 {
                    continue;
                }
                let mut failed = None;
                let resolved: StepArgs<T> = args.resolve(
                    |r| match bufs.addr(r) {
                        Ok(a) => a as *mut T,
                        Err(e) => {
                            failed = Some(e);
                            std::ptr::null_mut()
                        }
                    },
                    |_| lengths_addr as *const i64,
                );
                if let Some(e) = failed {
                    return Err(e);
                }
                let f = function::<T>(&stream, *kernel)?;
                let n64 = *n as i64;
                let blocks = (*n as u64).div_ceil(BLOCK as u64).min(MAX_BLOCKS) as u32;
                let cfg = LaunchConfig {
                    grid_dim: (blocks, 1, 1),
                    block_dim: (BLOCK, 1, 1),
                    shared_mem_bytes: 0,
                };
                let mut launch = stream.launch_builder(&f);
                launch.arg(&resolved).arg(&n64);
                // SAFETY: the kernel reads and writes only what its argument block addresses
                // for `n` elements (the host-compiled bodies are tested over the same plans).
                unsafe { launch.launch(cfg) }.map_err(|e| {
                    candle_core::Error::Msg(format!(
                        "fused CUDA recurrence: launch {}: {e:?}",
                        kernel.name()
                    ))
                })?;
            }
        }
    }
    Ok(())
}
