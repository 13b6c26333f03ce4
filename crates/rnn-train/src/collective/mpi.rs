//! Ranks as processes under an MPI launcher (`mpirun -np N`, `srun`): every operation is an MPI
//! collective on a duplicate of `MPI_COMM_WORLD`.
//!
//! Each operation first exchanges a small header (operation, dtype, length, root) with
//! `MPI_Allgather`, so ranks that are out of step or send different lengths get
//! [`Error::Collective`] naming the ranks, where plain MPI would corrupt memory or hang. The
//! header costs one 24-byte all-gather per operation: microseconds, against the milliseconds of a
//! gradient all-reduce.
//!
//! # Sums
//!
//! Float sums are `MPI_Allreduce` with `MPI_SUM`. With 2 ranks every rank computes `a + b`
//! (IEEE addition is commutative), so every rank gets the same bits, equal to a two-micro-batch
//! accumulation `0 + a + b` in one process. Beyond 2 ranks the order of the additions is the MPI
//! library's algorithm's (recursive doubling, ring, ...): not the rank order of
//! [`super::ThreadCollective`], so N ranks match `--grad-accum N` only up to rounding.
//!
//! # A rank that fails
//!
//! A rank killed by a signal or that exits without reaching the end makes the launcher
//! (`mpirun`) end the whole job with a non-zero status: OpenMPI and MPICH both do. A rank whose
//! code returns an error drops its handle; [`Drop`] then waits (a non-blocking barrier on a
//! communicator of its own, so it never mixes with an operation the others are blocked in) up to
//! `RNN_MPI_EXIT_WAIT_S` seconds (default [`DEFAULT_EXIT_WAIT_S`]) for every rank to drop its
//! handle too. When they all arrive the run ends normally (`MPI_Finalize`); when they do not, the
//! rank leaves without finalising, says so on standard error, and the launcher ends the job when
//! its process exits.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use ::mpi::collective::SystemOperation;
use ::mpi::environment::{Threading, Universe};
use ::mpi::topology::SimpleCommunicator;
use ::mpi::traits::*;
use candle_core::{CpuStorage, DType, Storage, Tensor};

use super::{check_flat, check_root, Collective};
use crate::{Error, Result};

/// Seconds a finishing rank waits for the others before it leaves without `MPI_Finalize`.
pub const DEFAULT_EXIT_WAIT_S: u64 = 120;

/// The environment variable that overrides [`DEFAULT_EXIT_WAIT_S`] (whole seconds).
pub const EXIT_WAIT_VAR: &str = "RNN_MPI_EXIT_WAIT_S";

/// The communicators, used only under the [`MpiCollective`]'s lock.
struct Comms {
    /// Every operation's communicator (a duplicate of `MPI_COMM_WORLD`).
    ops: SimpleCommunicator,
    /// The end-of-run barrier's communicator, apart so it never matches a pending operation.
    exit: SimpleCommunicator,
}

// SAFETY: MPI handles are process-wide integers or pointers that any thread may use once MPI is
// initialised with at least `MPI_THREAD_SERIALIZED` (checked in `MpiCollective::init`), provided
// that no two calls overlap; every use goes through the `Mutex` in `MpiCollective`.
unsafe impl Send for Comms {}

/// One rank of a group of MPI processes; owns the MPI universe (`MPI_Finalize` on drop).
///
/// Only one can exist per process: MPI is initialised once. Tensors on any device work; their
/// data goes through host memory (MPI reads and writes host buffers).
///
/// Drop it before the process exits (do not keep it in a `static` or call
/// `std::process::exit` while it lives): a rank that exits without `MPI_Finalize` makes `mpirun`
/// report the whole job as failed, even when every rank succeeded.
pub struct MpiCollective {
    rank: usize,
    world: usize,
    comms: Mutex<Option<Comms>>,
    universe: Option<Universe>,
}

/// Operation codes of the header exchange.
#[derive(Clone, Copy)]
enum Op {
    AllReduceSum = 1,
    Broadcast = 2,
    AllGather = 3,
    AllReduceSumF64 = 4,
    BroadcastBytes = 5,
}

fn op_name(code: u64) -> &'static str {
    match code {
        1 => "all_reduce_sum",
        2 => "broadcast",
        3 => "all_gather",
        4 => "all_reduce_sum_f64",
        5 => "broadcast_bytes",
        _ => "an unknown operation",
    }
}

fn dtype_code(dtype: DType) -> u64 {
    match dtype {
        DType::F32 => 32,
        _ => 64,
    }
}

impl MpiCollective {
    /// Initialises MPI (`MPI_Init_thread`, asking for `MPI_THREAD_SERIALIZED`) and returns this
    /// process's rank in `MPI_COMM_WORLD`.
    ///
    /// Errors when MPI is already initialised in this process (a second `MpiCollective`) or the
    /// library cannot serve calls from more than one thread.
    pub fn init() -> Result<Self> {
        let (universe, threading) = ::mpi::initialize_with_threading(Threading::Serialized)
            .ok_or_else(|| {
                Error::Collective(
                    "MPI is already initialised in this process: only one MpiCollective can exist"
                        .into(),
                )
            })?;
        if matches!(threading, Threading::Single | Threading::Funneled) {
            // Dropping `universe` finalises MPI.
            return Err(Error::Collective(format!(
                "the MPI library provides only {threading:?} threading; rnn needs \
                 MPI_THREAD_SERIALIZED (rebuild the MPI library with thread support)"
            )));
        }
        let world_comm = universe.world();
        let rank = world_comm.rank() as usize;
        let world = world_comm.size() as usize;
        let comms = Comms {
            ops: world_comm.duplicate(),
            exit: world_comm.duplicate(),
        };
        Ok(MpiCollective {
            rank,
            world,
            comms: Mutex::new(Some(comms)),
            universe: Some(universe),
        })
    }

    /// The MPI library's own description (`MPI_Get_library_version`), for logs.
    pub fn library_version() -> String {
        ::mpi::environment::library_version()
            .map(|s| s.trim().to_string())
            .unwrap_or_else(|_| "an MPI library (version string not UTF-8)".into())
    }

    /// Runs `f` on the operations' communicator, after checking with a header exchange that
    /// every rank runs the same operation on the same dtype, length and root. `len` is `None`
    /// where lengths may differ (byte broadcasts).
    fn with_ops<T>(
        &self,
        op: Op,
        dtype: u64,
        len: Option<usize>,
        root: usize,
        f: impl FnOnce(&SimpleCommunicator) -> Result<T>,
    ) -> Result<T> {
        let guard = self
            .comms
            .lock()
            .map_err(|_| Error::Collective("the MPI communicator's lock is poisoned".into()))?;
        let comms = guard
            .as_ref()
            .ok_or_else(|| Error::Collective("the MPI communicators are closed".into()))?;
        let header = [
            op as u64,
            dtype,
            len.map_or(u64::MAX, |n| n as u64),
            root as u64,
        ];
        let mut all = vec![0u64; 4 * self.world];
        comms.ops.all_gather_into(&header[..], &mut all[..]);
        let name = op_name(header[0]);
        for (r, h) in all.chunks_exact(4).enumerate() {
            if h[0] != header[0] {
                return Err(Error::Collective(format!(
                    "rank {} called `{name}` while rank {r} called `{}`: the ranks are out of step",
                    self.rank,
                    op_name(h[0])
                )));
            }
            if h[1] != header[1] {
                return Err(Error::Collective(format!(
                    "`{name}`: rank {r} sent f{} while rank {} sent f{}",
                    h[1], self.rank, header[1]
                )));
            }
            if h[2] != header[2] {
                return Err(Error::Collective(format!(
                    "`{name}`: rank {r} sent {} values, rank {} sent {}",
                    h[2], self.rank, header[2]
                )));
            }
            if h[3] != header[3] {
                return Err(Error::Collective(format!(
                    "`{name}`: rank {r} named root {} while rank {} named root {}",
                    h[3], self.rank, header[3]
                )));
            }
        }
        f(&comms.ops)
    }

    /// [`Self::with_ops`] for operations on equal-length buffers: an empty buffer is checked but
    /// not sent, because an empty Rust slice's address (`0x1` for bytes) can be OpenMPI's
    /// `MPI_IN_PLACE`, which the library then rejects.
    fn with_data<T>(
        &self,
        op: Op,
        dtype: u64,
        len: usize,
        root: usize,
        empty: T,
        f: impl FnOnce(&SimpleCommunicator) -> Result<T>,
    ) -> Result<T> {
        self.with_ops(op, dtype, Some(len), root, |c| {
            if len == 0 {
                Ok(empty)
            } else {
                f(c)
            }
        })
    }

    /// Waits up to `wait` for every rank to reach the end of the run; `true` when they all did.
    fn exit_barrier(comms: &Comms, wait: Duration) -> bool {
        let mut request = comms.exit.immediate_barrier();
        let start = Instant::now();
        let mut pause = Duration::from_micros(50);
        loop {
            match request.test() {
                Ok(_) => return true,
                Err(pending) => request = pending,
            }
            if start.elapsed() >= wait {
                // The barrier can never be completed or cancelled now; dropping the request would
                // panic, and MPI may still write to it until the process ends.
                std::mem::forget(request);
                return false;
            }
            std::thread::sleep(pause);
            pause = (pause * 2).min(Duration::from_millis(20));
        }
    }
}

fn exit_wait() -> Duration {
    let secs = std::env::var(EXIT_WAIT_VAR)
        .ok()
        .and_then(|v| v.trim().parse::<u64>().ok())
        .unwrap_or(DEFAULT_EXIT_WAIT_S);
    Duration::from_secs(secs)
}

impl Drop for MpiCollective {
    fn drop(&mut self) {
        let comms = match self.comms.get_mut() {
            Ok(c) => c.take(),
            Err(poisoned) => poisoned.into_inner().take(),
        };
        let Some(comms) = comms else { return };
        if std::thread::panicking() {
            eprintln!(
                "rank {}: panicking; aborting the MPI job (MPI_Abort)",
                self.rank
            );
            comms.ops.abort(1);
        }
        let wait = exit_wait();
        if Self::exit_barrier(&comms, wait) {
            drop(comms); // MPI_Comm_free, before MPI_Finalize
            drop(self.universe.take()); // MPI_Finalize
        } else {
            eprintln!(
                "rank {}: the other ranks did not reach the end within {} s ({EXIT_WAIT_VAR}); \
                 one of them failed or is stuck, so this rank leaves without MPI_Finalize and \
                 the launcher ends the job",
                self.rank,
                wait.as_secs()
            );
            std::mem::forget(comms);
            std::mem::forget(self.universe.take());
        }
    }
}

/// A 1-D f32 or f64 tensor's values as host vectors.
enum Host {
    F32(Vec<f32>),
    F64(Vec<f64>),
}

fn host(buf: &Tensor) -> Result<Host> {
    Ok(match buf.dtype() {
        DType::F32 => Host::F32(buf.to_vec1::<f32>()?),
        _ => Host::F64(buf.to_vec1::<f64>()?),
    })
}

impl Host {
    /// No values, of `dtype`'s kind (the result of an operation on empty buffers).
    fn empty(dtype: DType) -> Host {
        match dtype {
            DType::F32 => Host::F32(Vec::new()),
            _ => Host::F64(Vec::new()),
        }
    }
}

/// Borrowed host values of a 1-D f32 or f64 tensor.
enum HostRef<'a> {
    F32(&'a [f32]),
    F64(&'a [f64]),
}

/// Runs `f` on `buf`'s values: borrowed where they lie contiguously in host memory (a CPU
/// tensor), else copied to the host first. Sending from the tensor's own memory saves a copy
/// and the page faults of a fresh buffer, which dominate large all-reduces on one machine.
fn with_host<R>(buf: &Tensor, f: impl FnOnce(HostRef<'_>) -> Result<R>) -> Result<R> {
    {
        let (storage, layout) = buf.storage_and_layout();
        if let (Storage::Cpu(cpu), Some((a, b))) = (&*storage, layout.contiguous_offsets()) {
            match cpu {
                CpuStorage::F32(v) => return f(HostRef::F32(&v[a..b])),
                CpuStorage::F64(v) => return f(HostRef::F64(&v[a..b])),
                _ => {}
            }
        }
    }
    match host(buf)? {
        Host::F32(v) => f(HostRef::F32(&v)),
        Host::F64(v) => f(HostRef::F64(&v)),
    }
}

fn to_tensor(h: Host, like: &Tensor) -> Result<Tensor> {
    let device = like.device();
    Ok(match h {
        Host::F32(v) => {
            let n = v.len();
            Tensor::from_vec(v, n, device)?
        }
        Host::F64(v) => {
            let n = v.len();
            Tensor::from_vec(v, n, device)?
        }
    })
}

impl Collective for MpiCollective {
    fn rank(&self) -> usize {
        self.rank
    }

    fn world_size(&self) -> usize {
        self.world
    }

    fn backend(&self) -> &'static str {
        "mpi"
    }

    fn all_reduce_sum(&self, buf: &Tensor) -> Result<Tensor> {
        check_flat("all_reduce_sum", buf)?;
        let n = buf.elem_count();
        let sum = with_host(buf, |send| {
            self.with_data(
                Op::AllReduceSum,
                dtype_code(buf.dtype()),
                n,
                0,
                Host::empty(buf.dtype()),
                |c| {
                    Ok(match send {
                        HostRef::F32(v) => {
                            let mut out = vec![0f32; n];
                            c.all_reduce_into(v, &mut out[..], SystemOperation::sum());
                            Host::F32(out)
                        }
                        HostRef::F64(v) => {
                            let mut out = vec![0f64; n];
                            c.all_reduce_into(v, &mut out[..], SystemOperation::sum());
                            Host::F64(out)
                        }
                    })
                },
            )
        })?;
        to_tensor(sum, buf)
    }

    fn broadcast(&self, buf: &Tensor, root: usize) -> Result<Tensor> {
        check_flat("broadcast", buf)?;
        check_root(self, root)?;
        let mut data = host(buf)?;
        let n = buf.elem_count();
        self.with_data(Op::Broadcast, dtype_code(buf.dtype()), n, root, (), |c| {
            let from = c.process_at_rank(root as i32);
            match &mut data {
                Host::F32(v) => from.broadcast_into(&mut v[..]),
                Host::F64(v) => from.broadcast_into(&mut v[..]),
            }
            Ok(())
        })?;
        to_tensor(data, buf)
    }

    fn all_gather(&self, buf: &Tensor) -> Result<Tensor> {
        check_flat("all_gather", buf)?;
        let n = buf.elem_count();
        let world = self.world;
        let all = with_host(buf, |send| {
            self.with_data(
                Op::AllGather,
                dtype_code(buf.dtype()),
                n,
                0,
                Host::empty(buf.dtype()),
                |c| {
                    Ok(match send {
                        HostRef::F32(v) => {
                            let mut out = vec![0f32; n * world];
                            c.all_gather_into(v, &mut out[..]);
                            Host::F32(out)
                        }
                        HostRef::F64(v) => {
                            let mut out = vec![0f64; n * world];
                            c.all_gather_into(v, &mut out[..]);
                            Host::F64(out)
                        }
                    })
                },
            )
        })?;
        to_tensor(all, buf)
    }

    fn all_reduce_sum_f64(&self, values: &mut [f64]) -> Result<()> {
        let n = values.len();
        self.with_data(Op::AllReduceSumF64, 64, n, 0, (), |c| {
            let send = values.to_vec();
            c.all_reduce_into(&send[..], values, SystemOperation::sum());
            Ok(())
        })
    }

    fn broadcast_bytes(&self, bytes: &mut Vec<u8>, root: usize) -> Result<()> {
        check_root(self, root)?;
        let rank = self.rank;
        self.with_ops(Op::BroadcastBytes, 8, None, root, |c| {
            let from = c.process_at_rank(root as i32);
            // The length first, so the receivers can size their buffers.
            let mut len = [bytes.len() as u64];
            from.broadcast_into(&mut len[..]);
            let len = usize::try_from(len[0]).map_err(|_| {
                Error::Collective(format!(
                    "`broadcast_bytes`: rank {root}'s length {} does not fit rank {rank}'s memory",
                    len[0]
                ))
            })?;
            if rank != root {
                bytes.clear();
                bytes.resize(len, 0);
            }
            if len > 0 {
                from.broadcast_into(&mut bytes[..]);
            }
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    //! These tests need an MPI library; under `mpirun -np 2` they exercise two ranks (see
    //! `.ci/mpi-check`), alone they run as a group of one. One process can initialise MPI only
    //! once, so every check runs inside one test.
    use super::*;
    use candle_core::Device;

    #[test]
    fn every_operation_against_a_local_computation() {
        let c = MpiCollective::init().expect("MPI initialises");
        let (rank, world) = (c.rank(), c.world_size());
        assert!(rank < world);
        assert_eq!(c.backend(), "mpi");

        // Sums: rank r sends [r + 1, 0.1 * r, 1e8 * (r == 0), -1e8 * (r == 1)].
        let value = |r: usize| {
            [
                r as f32 + 1.0,
                0.1 * r as f32,
                if r == 0 { 1.0e8 } else { 0.0 },
                if r == 1 { -1.0e8 } else { 1.0 },
            ]
        };
        let t = Tensor::new(&value(rank), &Device::Cpu).unwrap();
        let got = c.all_reduce_sum(&t).unwrap().to_vec1::<f32>().unwrap();
        let mut expected = value(0).to_vec();
        for r in 1..world {
            expected.iter_mut().zip(value(r)).for_each(|(a, b)| *a += b);
        }
        if world <= 2 {
            // Two ranks: a + b on every rank, bit for bit the rank-order accumulation.
            assert_eq!(
                got.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                expected.iter().map(|v| v.to_bits()).collect::<Vec<_>>()
            );
        } else {
            for (g, e) in got.iter().zip(&expected) {
                assert!(
                    (g - e).abs() <= 1e-3 * e.abs().max(1.0),
                    "{got:?} vs {expected:?}"
                );
            }
        }

        let t64 = Tensor::new(&[rank as f64, 2.0], &Device::Cpu).unwrap();
        let got = c.all_reduce_sum(&t64).unwrap().to_vec1::<f64>().unwrap();
        assert_eq!(
            got,
            vec![(world * (world - 1) / 2) as f64, 2.0 * world as f64]
        );

        // Broadcast from the last rank: every rank gets its values.
        let root = world - 1;
        let t = Tensor::new(&[rank as f32 * 10.0, 7.0], &Device::Cpu).unwrap();
        let got = c.broadcast(&t, root).unwrap().to_vec1::<f32>().unwrap();
        assert_eq!(got, vec![root as f32 * 10.0, 7.0]);

        // All-gather in rank order.
        let t = Tensor::new(&[rank as f64, -(rank as f64)], &Device::Cpu).unwrap();
        let got = c.all_gather(&t).unwrap().to_vec1::<f64>().unwrap();
        let expected: Vec<f64> = (0..world).flat_map(|r| [r as f64, -(r as f64)]).collect();
        assert_eq!(got, expected);

        // Host sums.
        let mut h = [rank as f64, 0.5];
        c.all_reduce_sum_f64(&mut h).unwrap();
        assert_eq!(h, [(world * (world - 1) / 2) as f64, 0.5 * world as f64]);

        // Byte broadcast: the root's bytes replace longer and shorter buffers.
        let mut bytes = if rank == 0 {
            b"hello, ranks".to_vec()
        } else {
            vec![9u8; 40 + rank]
        };
        c.broadcast_bytes(&mut bytes, 0).unwrap();
        assert_eq!(bytes, b"hello, ranks");
        let mut empty = if rank == 0 { Vec::new() } else { vec![1u8; 3] };
        c.broadcast_bytes(&mut empty, 0).unwrap();
        assert!(empty.is_empty());

        // Empty buffers (nothing is sent).
        let none = Tensor::zeros(0, DType::F32, &Device::Cpu).unwrap();
        assert_eq!(c.all_reduce_sum(&none).unwrap().elem_count(), 0);
        assert_eq!(c.all_gather(&none).unwrap().elem_count(), 0);
        c.all_reduce_sum_f64(&mut []).unwrap();

        // Argument errors are local and do not start an exchange.
        let two_d = Tensor::zeros((2, 2), DType::F32, &Device::Cpu).unwrap();
        let msg = c.all_reduce_sum(&two_d).unwrap_err().to_string();
        assert!(msg.contains("must be 1-D"), "{msg}");
        let msg = c.broadcast(&t, world).unwrap_err().to_string();
        assert!(
            msg.contains(&format!("root {world} is not a rank")),
            "{msg}"
        );

        // Disagreements are errors on every rank, not corruption or a hang.
        if world > 1 {
            let t = Tensor::zeros(rank + 1, DType::F32, &Device::Cpu).unwrap();
            let msg = c.all_reduce_sum(&t).unwrap_err().to_string();
            assert!(msg.contains("values"), "{msg}");
            let t = Tensor::zeros(1, DType::F32, &Device::Cpu).unwrap();
            let res = if rank == 0 {
                c.all_reduce_sum(&t).map(|_| ())
            } else {
                c.broadcast(&t, 0).map(|_| ())
            };
            let msg = res.unwrap_err().to_string();
            assert!(msg.contains("out of step"), "{msg}");
            // The group still works afterwards.
            let t = Tensor::new(&[1.0f32], &Device::Cpu).unwrap();
            let got = c.all_reduce_sum(&t).unwrap().to_vec1::<f32>().unwrap();
            assert_eq!(got, vec![world as f32]);
        }

        // A second universe in one process is refused.
        let msg = MpiCollective::init().err().unwrap().to_string();
        assert!(msg.contains("already initialised"), "{msg}");
    }
}
