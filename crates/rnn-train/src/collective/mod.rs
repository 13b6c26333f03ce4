//! Collective communication for data-parallel training: all-reduce, broadcast and all-gather
//! of flat tensors, plus host-side sums for metrics and byte broadcasts for small messages.
//!
//! A [`Collective`] is one rank's handle on a group of `world_size` ranks. The
//! [`crate::trainer::Trainer`] uses it for DDP semantics (see its module documentation):
//! parameters broadcast from rank 0 at the start, gradients flattened in sorted-name order and
//! all-reduced once per step, evaluations and decisions broadcast from rank 0.
//!
//! Backends:
//!
//! | backend | where | feature |
//! |---|---|---|
//! | [`ThreadCollective`] | ranks are threads of one process (tests, one machine) | always |
//! | [`Solo`] | a single process (world size 1, every operation is the identity) | always |
//! | `MpiCollective` | ranks are processes under `mpirun` (one machine or several) | `mpi` |
//! | `NcclCollective` | ranks are GPUs, one process each | `nccl` |
//!
//! Every operation is a collective: every rank must call it, in the same order, with buffers
//! of the same length and dtype. A rank that leaves the group (its handle dropped, its process
//! gone) makes the others' pending and later calls fail with [`crate::Error::Collective`]
//! instead of waiting forever.

#[cfg(feature = "mpi")]
mod mpi;
#[cfg(feature = "nccl")]
mod nccl;
mod thread;

use candle_core::{DType, Tensor};

use crate::{Error, Result};

#[cfg(feature = "mpi")]
pub use self::mpi::MpiCollective;
#[cfg(feature = "nccl")]
pub use self::nccl::NcclCollective;
pub use thread::ThreadCollective;

/// One rank's handle on a communication group.
pub trait Collective: Send + Sync {
    /// This rank, in `0..world_size()`.
    fn rank(&self) -> usize;

    /// The number of ranks in the group.
    fn world_size(&self) -> usize;

    /// The backend's name, for logs and errors (`"threads"`, `"mpi"`, `"nccl"`, `"solo"`).
    fn backend(&self) -> &'static str;

    /// The element-wise sum of every rank's 1-D `buf` (f32 or f64), on every rank. Backends
    /// that can add in rank order (`((r0 + r1) + r2) + ...`) do, so the result is the same
    /// bits on every rank and equals a sequential accumulation over micro-batches.
    fn all_reduce_sum(&self, buf: &Tensor) -> Result<Tensor>;

    /// Rank `root`'s 1-D `buf`, on every rank (the other ranks' `buf` gives length and dtype).
    fn broadcast(&self, buf: &Tensor, root: usize) -> Result<Tensor>;

    /// Every rank's 1-D `buf` (equal lengths), concatenated in rank order, on every rank.
    fn all_gather(&self, buf: &Tensor) -> Result<Tensor>;

    /// Sums `values` element-wise over all ranks in place (host values: units, loss sums).
    fn all_reduce_sum_f64(&self, values: &mut [f64]) -> Result<()>;

    /// Replaces `bytes` on every rank with rank `root`'s `bytes` (any lengths).
    fn broadcast_bytes(&self, bytes: &mut Vec<u8>, root: usize) -> Result<()>;
}

/// The group of one: every operation returns its input.
#[derive(Debug, Clone, Copy, Default)]
pub struct Solo;

impl Collective for Solo {
    fn rank(&self) -> usize {
        0
    }
    fn world_size(&self) -> usize {
        1
    }
    fn backend(&self) -> &'static str {
        "solo"
    }
    fn all_reduce_sum(&self, buf: &Tensor) -> Result<Tensor> {
        check_flat("all_reduce_sum", buf)?;
        Ok(buf.clone())
    }
    fn broadcast(&self, buf: &Tensor, root: usize) -> Result<Tensor> {
        check_flat("broadcast", buf)?;
        check_root(self, root)?;
        Ok(buf.clone())
    }
    fn all_gather(&self, buf: &Tensor) -> Result<Tensor> {
        check_flat("all_gather", buf)?;
        Ok(buf.clone())
    }
    fn all_reduce_sum_f64(&self, _values: &mut [f64]) -> Result<()> {
        Ok(())
    }
    fn broadcast_bytes(&self, _bytes: &mut Vec<u8>, root: usize) -> Result<()> {
        check_root(self, root)
    }
}

/// Broadcasts a JSON-serialisable value from `root` (small messages: evaluations, decisions).
pub fn broadcast_json<T>(c: &dyn Collective, value: &T, root: usize) -> Result<T>
where
    T: serde::Serialize + serde::de::DeserializeOwned,
{
    let mut bytes = if c.rank() == root {
        serde_json::to_vec(value).map_err(|e| Error::Invalid(format!("broadcast_json: {e}")))?
    } else {
        Vec::new()
    };
    c.broadcast_bytes(&mut bytes, root)?;
    serde_json::from_slice(&bytes).map_err(|e| Error::Invalid(format!("broadcast_json: {e}")))
}

/// Checks that every rank holds the same `value` (a batch count, a checksum): errors on every
/// rank, naming the ranks and their values, when one differs. Costs one gather of `f64`s.
pub fn check_agree(c: &dyn Collective, what: &str, value: u64) -> Result<()> {
    if c.world_size() == 1 {
        return Ok(());
    }
    let mut slots = vec![0.0f64; c.world_size()];
    slots[c.rank()] = value as f64;
    c.all_reduce_sum_f64(&mut slots)?;
    if slots.iter().all(|v| *v == slots[0]) {
        return Ok(());
    }
    let listed: Vec<String> = slots
        .iter()
        .enumerate()
        .map(|(r, v)| format!("rank {r}: {v}"))
        .collect();
    Err(Error::Collective(format!(
        "the ranks disagree on {what} ({}); every rank must read the same data and options",
        listed.join(", ")
    )))
}

pub(crate) fn check_flat(op: &str, buf: &Tensor) -> Result<()> {
    if buf.rank() != 1 {
        return Err(Error::Invalid(format!(
            "collective {op}: the buffer must be 1-D, got shape {:?}",
            buf.shape()
        )));
    }
    if !matches!(buf.dtype(), DType::F32 | DType::F64) {
        return Err(Error::Invalid(format!(
            "collective {op}: the buffer must be f32 or f64, got {:?}",
            buf.dtype()
        )));
    }
    Ok(())
}

pub(crate) fn check_root(c: &(impl Collective + ?Sized), root: usize) -> Result<()> {
    if root >= c.world_size() {
        return Err(Error::Invalid(format!(
            "collective broadcast: root {root} is not a rank of a group of {}",
            c.world_size()
        )));
    }
    Ok(())
}
