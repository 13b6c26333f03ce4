//! Ranks as GPUs, one process (or thread) each: every operation is an NCCL collective on the
//! CUDA tensors' device buffers, ordered on the Candle device's stream.
//!
//! # Setting up a group
//!
//! NCCL joins ranks through a unique id that one rank creates ([`NcclCollective::new_id`]) and
//! every rank receives before [`NcclCollective::new`]: by MPI, a shared file
//! ([`NcclCollective::id_through_file`], as Candle's `llama_multiprocess` example does), or any
//! other channel ([`NcclCollective::id_bytes`], [`NcclCollective::id_from_bytes`]). Each rank
//! uses its own GPU (`Device::new_cuda(local_rank)`).
//!
//! ```ignore
//! let device = Device::new_cuda(local_rank)?;
//! let id = NcclCollective::id_through_file(Path::new("/shared/nccl.id"), rank, Duration::from_secs(60))?;
//! let comm = NcclCollective::new(rank, world, id, &device)?;
//! ```
//!
//! # Semantics
//!
//! As [`super::Collective`] says. Tensors on the CPU or another GPU are copied to this rank's
//! GPU and the result is returned on the caller's device. Sums are NCCL's ring or tree
//! all-reduce: every rank gets the same bits (NCCL reduces each chunk once and copies the result);
//! with 2 ranks that is `a + b`, bit for bit a two-micro-batch accumulation. Host sums and byte
//! broadcasts go through small device buffers. Every operation first all-gathers a 4-value
//! header (operation, dtype, length, root), so ranks that are out of step get
//! [`Error::Collective`] instead of a hang or corrupted buffers.
//!
//! A rank that dies is not detected by NCCL itself: the others wait in their next collective.
//! Start the ranks under a launcher that ends the whole job when one process fails (`mpirun`,
//! `srun`), which then ends them.

use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use candle_core::backend::BackendStorage;
use candle_core::cuda_backend::cudarc::driver::DeviceRepr;
use candle_core::cuda_backend::cudarc::nccl::safe::{Comm, Id, NcclType, ReduceOp};
use candle_core::cuda_backend::CudaDType;
use candle_core::{CpuStorage, CudaStorage, CustomOp1, DType, Device, Layout, Shape, Tensor};

use super::{check_flat, check_root, Collective};
use crate::{Error, Result};

/// Length in bytes of an NCCL unique id.
pub const ID_BYTES: usize = 128;

/// The NCCL communicator, used only under the [`NcclCollective`]'s lock.
struct Communicator(Comm);

// SAFETY: an NCCL communicator may be used from any thread as long as calls on it do not
// overlap; every use goes through the `Mutex` in `NcclCollective`. Its stream is the Candle
// device's, which Candle itself shares between threads.
unsafe impl Send for Communicator {}

/// One rank of an NCCL group; owns the communicator (aborted and freed on drop).
pub struct NcclCollective {
    rank: usize,
    world: usize,
    device: Device,
    comm: Mutex<Communicator>,
}

/// The collective an op runs.
#[derive(Clone, Copy)]
enum Kind {
    AllReduceSum,
    Broadcast(usize),
    AllGather,
}

/// One NCCL call as a Candle op: Candle hands over the input's device buffer and takes the
/// output's, so no copy leaves the GPU.
struct NcclOp<'a> {
    comm: &'a Comm,
    world: usize,
    kind: Kind,
}

fn nccl_err(op: &str, e: impl std::fmt::Debug) -> candle_core::Error {
    candle_core::Error::Msg(format!("NCCL {op}: {e:?}"))
}

impl NcclOp<'_> {
    fn run<T: CudaDType + NcclType + DeviceRepr>(
        &self,
        s: &CudaStorage,
        layout: &Layout,
    ) -> candle_core::Result<(CudaStorage, Shape)> {
        let n = layout.shape().elem_count();
        let (start, end) = layout.contiguous_offsets().ok_or_else(|| {
            candle_core::Error::Msg("NCCL collective: the buffer must be contiguous".into())
        })?;
        let dev = s.device().clone();
        let src = s.as_cuda_slice::<T>()?.slice(start..end);
        let out_len = match self.kind {
            Kind::AllGather => n * self.world,
            _ => n,
        };
        // SAFETY: NCCL writes every element of `dst` before Candle reads it (same stream).
        let mut dst = unsafe { dev.alloc::<T>(out_len) }?;
        match self.kind {
            Kind::AllReduceSum => self
                .comm
                .all_reduce(&src, &mut dst, &ReduceOp::Sum)
                .map(|_| ())
                .map_err(|e| nccl_err("all_reduce", e))?,
            Kind::Broadcast(root) => self
                .comm
                .broadcast(Some(&src), &mut dst, root as i32)
                .map(|_| ())
                .map_err(|e| nccl_err("broadcast", e))?,
            Kind::AllGather => self
                .comm
                .all_gather(&src, &mut dst)
                .map(|_| ())
                .map_err(|e| nccl_err("all_gather", e))?,
        }
        Ok((CudaStorage::wrap_cuda_slice(dst, dev), Shape::from(out_len)))
    }
}

impl CustomOp1 for NcclOp<'_> {
    fn name(&self) -> &'static str {
        match self.kind {
            Kind::AllReduceSum => "nccl-all-reduce",
            Kind::Broadcast(_) => "nccl-broadcast",
            Kind::AllGather => "nccl-all-gather",
        }
    }

    fn cpu_fwd(&self, _: &CpuStorage, _: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        Err(candle_core::Error::Msg(
            "NCCL collectives run on CUDA buffers (NcclCollective copies CPU tensors first)".into(),
        ))
    }

    fn cuda_fwd(
        &self,
        s: &CudaStorage,
        layout: &Layout,
    ) -> candle_core::Result<(CudaStorage, Shape)> {
        match s.dtype() {
            DType::F32 => self.run::<f32>(s, layout),
            DType::F64 => self.run::<f64>(s, layout),
            DType::U8 => self.run::<u8>(s, layout),
            other => Err(candle_core::Error::Msg(format!(
                "NCCL collective: unsupported dtype {other:?}"
            ))),
        }
    }
}

/// Operation codes of the header exchange.
const OPS: [&str; 6] = [
    "",
    "all_reduce_sum",
    "broadcast",
    "all_gather",
    "all_reduce_sum_f64",
    "broadcast_bytes",
];

impl NcclCollective {
    /// A fresh unique id, on the rank that starts the group (rank 0 by convention); hand it to
    /// every rank before they call [`Self::new`].
    pub fn new_id() -> Result<Id> {
        Id::new().map_err(|e| Error::Collective(format!("ncclGetUniqueId: {e:?}")))
    }

    /// The id's bytes, to send to the other ranks.
    pub fn id_bytes(id: &Id) -> [u8; ID_BYTES] {
        id.internal().map(|c| c as u8)
    }

    /// The id from bytes made by [`Self::id_bytes`]; errors on another length.
    pub fn id_from_bytes(bytes: &[u8]) -> Result<Id> {
        let raw: [u8; ID_BYTES] = bytes.try_into().map_err(|_| {
            Error::Invalid(format!(
                "an NCCL id has {ID_BYTES} bytes, got {}",
                bytes.len()
            ))
        })?;
        Ok(Id::uninit(raw.map(|b| b as std::ffi::c_char)))
    }

    /// The group's id through a file every rank can read (one machine, or a shared file
    /// system): rank 0 creates an id and writes it to `path` (to a temporary name, then
    /// renamed, so no rank reads half an id); the other ranks wait up to `wait` for the file.
    /// Remove the file before the next run: a stale id makes the ranks join no group.
    pub fn id_through_file(path: &Path, rank: usize, wait: Duration) -> Result<Id> {
        let io = |e: std::io::Error| Error::Io {
            path: path.to_path_buf(),
            source: e,
        };
        if rank == 0 {
            let id = Self::new_id()?;
            let tmp = path.with_extension("tmp");
            std::fs::write(&tmp, Self::id_bytes(&id)).map_err(io)?;
            std::fs::rename(&tmp, path).map_err(io)?;
            return Ok(id);
        }
        let start = Instant::now();
        loop {
            match std::fs::read(path) {
                Ok(bytes) => return Self::id_from_bytes(&bytes),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound && start.elapsed() < wait => {
                    std::thread::sleep(Duration::from_millis(50));
                }
                Err(e) => return Err(io(e)),
            }
        }
    }

    /// Joins the group `id` as `rank` of `world` on `device` (a CUDA device: this rank's GPU).
    /// Blocks until every rank has joined (`ncclCommInitRank`).
    pub fn new(rank: usize, world: usize, id: Id, device: &Device) -> Result<Self> {
        if rank >= world {
            return Err(Error::Invalid(format!(
                "NcclCollective::new: rank {rank} is not below world {world}"
            )));
        }
        let Device::Cuda(cuda) = device else {
            return Err(Error::Invalid(format!(
                "NcclCollective::new: device must be a CUDA device, got {device:?}"
            )));
        };
        let comm = Comm::from_rank(cuda.cuda_stream(), rank, world, id).map_err(|e| {
            Error::Collective(format!("ncclCommInitRank (rank {rank} of {world}): {e:?}"))
        })?;
        Ok(NcclCollective {
            rank,
            world,
            device: device.clone(),
            comm: Mutex::new(Communicator(comm)),
        })
    }

    /// Runs `kind` on `buf` (on this rank's GPU) after the header check; the result is on the
    /// GPU.
    fn collective(&self, op: usize, kind: Kind, buf: &Tensor, check_len: bool) -> Result<Tensor> {
        let guard = self
            .comm
            .lock()
            .map_err(|_| Error::Collective("the NCCL communicator's lock is poisoned".into()))?;
        let comm = &guard.0;
        let root = match kind {
            Kind::Broadcast(r) => r,
            _ => 0,
        };
        let dtype = match buf.dtype() {
            DType::F32 => 32.0,
            DType::F64 => 64.0,
            _ => 8.0,
        };
        let len = if check_len {
            buf.elem_count() as f64
        } else {
            -1.0
        };
        let header = Tensor::new(&[op as f64, dtype, len, root as f64], &self.device)?;
        let all = header
            .apply_op1_no_bwd(&NcclOp {
                comm,
                world: self.world,
                kind: Kind::AllGather,
            })?
            .to_vec1::<f64>()?;
        let name = OPS[op];
        for (r, h) in all.chunks_exact(4).enumerate() {
            let mine = [op as f64, dtype, len, root as f64];
            if h[0] != mine[0] {
                let other = OPS
                    .get(h[0] as usize)
                    .copied()
                    .unwrap_or("an unknown operation");
                return Err(Error::Collective(format!(
                    "rank {} called `{name}` while rank {r} called `{other}`: the ranks are out of step",
                    self.rank
                )));
            }
            if h[1..] != mine[1..] {
                return Err(Error::Collective(format!(
                    "`{name}`: rank {r} sent (dtype bits, values, root) = ({}, {}, {}) while rank {} \
                     sent ({}, {}, {})",
                    h[1], h[2], h[3], self.rank, mine[1], mine[2], mine[3]
                )));
            }
        }
        let on_gpu = buf.to_device(&self.device)?.contiguous()?;
        Ok(on_gpu.apply_op1_no_bwd(&NcclOp {
            comm,
            world: self.world,
            kind,
        })?)
    }
}

impl Collective for NcclCollective {
    fn rank(&self) -> usize {
        self.rank
    }

    fn world_size(&self) -> usize {
        self.world
    }

    fn backend(&self) -> &'static str {
        "nccl"
    }

    fn all_reduce_sum(&self, buf: &Tensor) -> Result<Tensor> {
        check_flat("all_reduce_sum", buf)?;
        let out = self.collective(1, Kind::AllReduceSum, buf, true)?;
        Ok(out.to_device(buf.device())?)
    }

    fn broadcast(&self, buf: &Tensor, root: usize) -> Result<Tensor> {
        check_flat("broadcast", buf)?;
        check_root(self, root)?;
        let out = self.collective(2, Kind::Broadcast(root), buf, true)?;
        Ok(out.to_device(buf.device())?)
    }

    fn all_gather(&self, buf: &Tensor) -> Result<Tensor> {
        check_flat("all_gather", buf)?;
        let out = self.collective(3, Kind::AllGather, buf, true)?;
        Ok(out.to_device(buf.device())?)
    }

    fn all_reduce_sum_f64(&self, values: &mut [f64]) -> Result<()> {
        if values.is_empty() {
            // Still one exchange, so the ranks stay in step.
            let t = Tensor::zeros(1, DType::F64, &self.device)?;
            self.collective(4, Kind::AllReduceSum, &t, false)?;
            return Ok(());
        }
        let t = Tensor::new(&*values, &self.device)?;
        let sum = self.collective(4, Kind::AllReduceSum, &t, true)?;
        values.copy_from_slice(&sum.to_vec1::<f64>()?);
        Ok(())
    }

    fn broadcast_bytes(&self, bytes: &mut Vec<u8>, root: usize) -> Result<()> {
        check_root(self, root)?;
        // The length first (exact in f64 below 2^53), so the receivers can size their buffers.
        let len = Tensor::new(&[bytes.len() as f64], &self.device)?;
        let len = self
            .collective(5, Kind::Broadcast(root), &len, true)?
            .to_vec1::<f64>()?[0];
        let len = len as usize;
        if self.rank != root {
            bytes.clear();
            bytes.resize(len, 0);
        }
        if len == 0 {
            return Ok(());
        }
        let t = Tensor::from_slice(bytes.as_slice(), len, &self.device)?;
        let got = self.collective(5, Kind::Broadcast(root), &t, true)?;
        *bytes = got.to_vec1::<u8>()?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_round_trip_through_bytes_and_bad_lengths_are_named() {
        let raw: [u8; ID_BYTES] = std::array::from_fn(|i| (i * 7) as u8);
        let id = NcclCollective::id_from_bytes(&raw).unwrap();
        assert_eq!(NcclCollective::id_bytes(&id), raw);
        let msg = NcclCollective::id_from_bytes(&raw[..5])
            .err()
            .unwrap()
            .to_string();
        assert!(msg.contains("128 bytes, got 5"), "{msg}");
    }

    #[test]
    fn a_cpu_device_is_refused() {
        let id = NcclCollective::id_from_bytes(&[0u8; ID_BYTES]).unwrap();
        let msg = NcclCollective::new(0, 1, id, &Device::Cpu)
            .err()
            .unwrap()
            .to_string();
        assert!(msg.contains("must be a CUDA device"), "{msg}");
        let msg = NcclCollective::new(2, 2, id, &Device::Cpu)
            .err()
            .unwrap()
            .to_string();
        assert!(msg.contains("rank 2 is not below world 2"), "{msg}");
    }

    /// A group of one on GPU 0 (skips without one): every operation through NCCL, against the
    /// identity a group of one must be.
    #[test]
    fn a_group_of_one_on_the_gpu() {
        let Ok(device) = Device::new_cuda(0) else {
            eprintln!("no CUDA device: skipped");
            return;
        };
        let c = NcclCollective::new(0, 1, NcclCollective::new_id().unwrap(), &device).unwrap();
        let t = Tensor::new(&[1.5f32, -2.0, 3.25], &device).unwrap();
        let sum = c.all_reduce_sum(&t).unwrap();
        assert!(sum.device().is_cuda());
        assert_eq!(sum.to_vec1::<f32>().unwrap(), vec![1.5, -2.0, 3.25]);
        let cpu = Tensor::new(&[4.0f64, 5.0], &Device::Cpu).unwrap();
        let b = c.broadcast(&cpu, 0).unwrap();
        assert!(
            b.device().is_cpu(),
            "results come back on the caller's device"
        );
        assert_eq!(b.to_vec1::<f64>().unwrap(), vec![4.0, 5.0]);
        assert_eq!(
            c.all_gather(&cpu).unwrap().to_vec1::<f64>().unwrap(),
            vec![4.0, 5.0]
        );
        let mut h = [0.25, 7.0];
        c.all_reduce_sum_f64(&mut h).unwrap();
        assert_eq!(h, [0.25, 7.0]);
        let mut bytes = b"rank zero".to_vec();
        c.broadcast_bytes(&mut bytes, 0).unwrap();
        assert_eq!(bytes, b"rank zero");
        let mut none = Vec::new();
        c.broadcast_bytes(&mut none, 0).unwrap();
        assert!(none.is_empty());
    }
}
