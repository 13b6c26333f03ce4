//! Data parallelism and gradient accumulation: a step over the parts of a global batch.
//!
//! With `N` ranks and `K` micro-batches per step (`TrainerConfig::grad_accum`), every global
//! batch is split into `P = N * K` parts ([`Part`]); rank `r` trains parts `r * K .. r * K + K`.
//! For each part the rank runs forward and backward, flattens the gradients in sorted-name order
//! (zeros where a parameter got none) with the part's loss appended, and accumulates them
//! weighted by the part's units (`acc = acc + u_k * [g_k, loss_k]`). One all-reduce adds the
//! ranks' accumulators in rank order and one host all-reduce adds their units `U`; dividing by
//! `U` gives the gradient and loss of the whole batch. The additions happen in the same order
//! as a single process accumulating `P` micro-batches, so `N` ranks equal one process with
//! `--grad-accum N` bit for bit (for `N = 2` with any backend, beyond that where the backend
//! adds in rank order).
//!
//! Dropout streams: with `P > 1`, part `p` of a step draws its masks from the counters
//! `base + p * MASK_STRIDE` and the step leaves them at `base + P * MASK_STRIDE`, so every part
//! has masks of its own and the ranks and micro-batches draw the same masks whatever their
//! split. With `P = 1` the counters advance as they always did.

use candle_core::backprop::GradStore;
use candle_core::{DType, Tensor};
use rnn_core::RnnState;

use super::{Part, TrainTask, Trainer};
use crate::collective::{broadcast_json, check_agree};
use crate::trainer::Evaluation;
use crate::{Error, Result};

/// How far apart the dropout counters of two parts of a step start (see the module docs).
pub(super) const MASK_STRIDE: u64 = 1 << 24;

/// A step's gradients and loss over all parts, averaged over the global batch's units.
pub(super) struct Combined {
    pub grads: GradStore,
    /// The mean loss of the global batch (a scalar on the parameters' device).
    pub loss: Tensor,
    /// The global batch's units.
    pub units: u64,
}

impl Trainer {
    /// Parts per global batch (`N * K`), and the first global part of this rank.
    pub(super) fn parts(&self) -> (usize, usize) {
        let k = self.config.grad_accum as usize;
        (self.collective.world_size() * k, self.collective.rank() * k)
    }

    /// The dtype of the flat gradient buffer: f64 for f64 parameters, f32 otherwise.
    fn flat_dtype(&self) -> DType {
        if self.vars.iter().all(|v| v.dtype() == DType::F64) {
            DType::F64
        } else {
            DType::F32
        }
    }

    /// Forward and backward over this rank's parts of `batch`, then one all-reduce.
    pub(super) fn combined_step<T: TrainTask>(
        &mut self,
        task: &mut T,
        batch: &T::Batch,
    ) -> Result<Combined> {
        let (count, first) = self.parts();
        let flat_dtype = self.flat_dtype();
        let base = task.rng_counters();
        let mut acc: Option<Tensor> = None;
        let mut units = 0u64;
        // Candle's GradStore cannot be built empty outside candle: the last part's store is
        // reused, every parameter's entry replaced below.
        let mut store: Option<GradStore> = None;
        let mut had_grad = vec![0.0f64; self.params.len()];
        for k in 0..self.config.grad_accum as usize {
            let part = Part {
                index: first + k,
                count,
            };
            let start: Vec<u64> = base
                .iter()
                .map(|b| b + part.index as u64 * MASK_STRIDE)
                .collect();
            if !base.is_empty() {
                task.set_rng_counters(&start)?;
            }
            let out = task.train_part(batch, part, &mut self.carries[k])?;
            if out.loss.elem_count() != 1 {
                return Err(Error::Invalid(format!(
                    "the training loss must be a scalar, got shape {:?}",
                    out.loss.shape()
                )));
            }
            let drawn = task.rng_counters();
            if let Some((after, before)) = drawn
                .iter()
                .zip(&start)
                .find(|(a, b)| a.saturating_sub(**b) > MASK_STRIDE)
            {
                return Err(Error::Invalid(format!(
                    "one micro-batch drew {} dropout masks, more than the {MASK_STRIDE} a part may draw",
                    after - before
                )));
            }
            let grads = out.loss.backward()?;
            let mut pieces = Vec::with_capacity(self.params.len() + 1);
            for (i, (_, var)) in self.params.iter().enumerate() {
                match grads.get(var) {
                    Some(g) => {
                        had_grad[i] = 1.0;
                        pieces.push(g.detach().flatten_all()?.to_dtype(flat_dtype)?);
                    }
                    None => pieces.push(Tensor::zeros(var.elem_count(), flat_dtype, var.device())?),
                }
            }
            pieces.push(
                out.loss
                    .detach()
                    .flatten_all()?
                    .to_dtype(flat_dtype)?
                    .to_device(self.vars[0].device())?,
            );
            let weighted = (Tensor::cat(&pieces, 0)? * out.units as f64)?;
            acc = Some(match acc {
                None => weighted,
                Some(a) => (a + weighted)?,
            });
            units += out.units;
            store = Some(grads);
        }
        let acc = acc.ok_or_else(|| Error::Invalid("grad_accum must be at least 1".into()))?;
        let total = self.collective.all_reduce_sum(&acc)?;
        let mut host = vec![units as f64];
        host.extend_from_slice(&had_grad);
        self.collective.all_reduce_sum_f64(&mut host)?;
        let global_units = host[0];
        if !base.is_empty() {
            let end: Vec<u64> = base
                .iter()
                .map(|b| b + count as u64 * MASK_STRIDE)
                .collect();
            task.set_rng_counters(&end)?;
        }
        if global_units == 0.0 {
            return Err(Error::Invalid(
                "a global batch has no units (no samples or tokens) in any part".into(),
            ));
        }
        let mean = (total / global_units)?;
        let mut grads =
            store.ok_or_else(|| Error::Invalid("grad_accum must be at least 1".into()))?;
        let mut offset = 0;
        for (i, (_, var)) in self.params.iter().enumerate() {
            let n = var.elem_count();
            if host[1 + i] > 0.0 {
                let g = mean
                    .narrow(0, offset, n)?
                    .reshape(var.shape())?
                    .to_dtype(var.dtype())?;
                grads.insert(var, g);
            } else {
                grads.remove(var);
            }
            offset += n;
        }
        let loss = mean.narrow(0, offset, 1)?.squeeze(0)?;
        Ok(Combined {
            grads,
            loss,
            units: global_units as u64,
        })
    }

    /// Makes every rank's parameters rank 0's (one broadcast of the flat parameters).
    pub(super) fn broadcast_parameters(&self) -> Result<()> {
        let c = &*self.collective;
        if c.world_size() == 1 {
            return Ok(());
        }
        let total: usize = self.vars.iter().map(|v| v.elem_count()).sum();
        check_agree(c, "the number of parameter values", total as u64)?;
        let dtype = self.flat_dtype();
        let flat: Vec<Tensor> = self
            .vars
            .iter()
            .map(|v| Ok(v.as_tensor().flatten_all()?.to_dtype(dtype)?))
            .collect::<Result<_>>()?;
        let flat = c.broadcast(&Tensor::cat(&flat, 0)?, 0)?;
        let mut offset = 0;
        for var in &self.vars {
            let n = var.elem_count();
            if n > 0 {
                let v = flat
                    .narrow(0, offset, n)?
                    .reshape(var.shape())?
                    .to_dtype(var.dtype())?
                    .to_device(var.device())?;
                var.set(&v)?;
            }
            offset += n;
        }
        Ok(())
    }

    /// Rank 0's evaluation on every rank: only rank 0 evaluates, the others receive its result
    /// (with every value's exact bits), so all ranks take the same decisions.
    pub(super) fn shared_evaluation<T: TrainTask>(&self, task: &mut T) -> Result<Evaluation> {
        let c = &*self.collective;
        if c.world_size() == 1 {
            return task.evaluate();
        }
        let mine = if c.rank() == 0 {
            Some(task.evaluate()?)
        } else {
            None
        };
        let wire = mine.as_ref().map(ExactEvaluation::from);
        let wire: ExactEvaluation = broadcast_json(c, &wire, 0)?
            .ok_or_else(|| Error::Collective("rank 0 sent no evaluation".into()))?;
        Ok(match mine {
            Some(e) => e,
            None => wire.into(),
        })
    }

    /// The carried state of the whole global batch (this rank's parts joined, then every
    /// rank's, in part order), as a single process would hold it. Collective when `N > 1`.
    pub(super) fn global_carry(&self) -> Result<Option<RnnState>> {
        let local: Vec<&RnnState> = self.carries.iter().flatten().collect();
        let joined = match local.len() {
            0 => None,
            1 => Some(local[0].clone()),
            _ => Some(RnnState::new(
                Tensor::cat(&local.iter().map(|s| &s.h).collect::<Vec<_>>(), 1)?,
                match local
                    .iter()
                    .map(|s| s.c.as_ref())
                    .collect::<Option<Vec<_>>>()
                {
                    Some(cs) => Some(Tensor::cat(&cs, 1)?),
                    None => None,
                },
            )),
        };
        let c = &*self.collective;
        if c.world_size() == 1 {
            return Ok(joined);
        }
        let have = joined.is_some() as u64;
        let mut flags = vec![have as f64, 1.0];
        c.all_reduce_sum_f64(&mut flags)?;
        if flags[0] == 0.0 {
            return Ok(None);
        }
        let Some(joined) = joined else {
            return Err(Error::Collective(format!(
                "rank {} has no carried state while another rank has one",
                c.rank()
            )));
        };
        let h = gather_rows(c, &joined.h)?;
        let cell = match &joined.c {
            Some(cell) => Some(gather_rows(c, cell)?),
            None => None,
        };
        Ok(Some(RnnState::new(h, cell)))
    }

    /// Splits a whole-batch carried state (from a checkpoint) into this rank's parts.
    pub(super) fn set_global_carry(&mut self, carry: Option<RnnState>) -> Result<()> {
        let (count, first) = self.parts();
        let k = self.config.grad_accum as usize;
        self.carries = vec![None; k];
        let Some(carry) = carry else {
            return Ok(());
        };
        if count == 1 {
            self.carries[0] = Some(carry);
            return Ok(());
        }
        for (j, slot) in self.carries.iter_mut().enumerate() {
            let part = Part {
                index: first + j,
                count,
            };
            if !part.rows(carry.h.dim(1)?).is_empty() {
                *slot = Some(part.narrow_state(&carry)?);
            }
        }
        Ok(())
    }
}

/// Joins every rank's `(a, b_r, c)` tensor along dimension 1 (the `b_r` may differ).
fn gather_rows(c: &dyn crate::collective::Collective, t: &Tensor) -> Result<Tensor> {
    let (a, b, rest) = t.dims3()?;
    let mut sizes = vec![0.0f64; c.world_size()];
    sizes[c.rank()] = b as f64;
    c.all_reduce_sum_f64(&mut sizes)?;
    let widest = sizes.iter().fold(0.0f64, |m, s| m.max(*s)) as usize;
    let dtype = if t.dtype() == DType::F64 {
        DType::F64
    } else {
        DType::F32
    };
    let mut padded = t.to_dtype(dtype)?;
    if b < widest {
        let pad = Tensor::zeros((a, widest - b, rest), dtype, t.device())?;
        padded = Tensor::cat(&[&padded, &pad], 1)?;
    }
    let all = c.all_gather(&padded.flatten_all()?)?;
    let per = a * widest * rest;
    let mut pieces = Vec::with_capacity(sizes.len());
    for (r, size) in sizes.iter().enumerate() {
        let block = all.narrow(0, r * per, per)?.reshape((a, widest, rest))?;
        pieces.push(block.narrow(1, 0, *size as usize)?);
    }
    Ok(Tensor::cat(&pieces, 1)?.to_dtype(t.dtype())?)
}

/// An [`Evaluation`] whose numbers travel as their exact bits.
#[derive(serde::Serialize, serde::Deserialize)]
struct ExactEvaluation {
    loss: u64,
    metrics: Vec<(String, u64)>,
    main: Option<(String, u64, bool)>,
}

impl From<&Evaluation> for ExactEvaluation {
    fn from(e: &Evaluation) -> Self {
        Self {
            loss: e.loss.to_bits(),
            metrics: e
                .metrics
                .iter()
                .map(|(k, v)| (k.clone(), v.to_bits()))
                .collect(),
            main: e
                .main
                .as_ref()
                .map(|m| (m.name.clone(), m.value.to_bits(), m.higher_is_better)),
        }
    }
}

impl From<ExactEvaluation> for Evaluation {
    fn from(e: ExactEvaluation) -> Self {
        Evaluation {
            loss: f64::from_bits(e.loss),
            metrics: e
                .metrics
                .into_iter()
                .map(|(k, v)| (k, f64::from_bits(v)))
                .collect(),
            main: e.main.map(|(name, v, higher_is_better)| super::MainMetric {
                name,
                value: f64::from_bits(v),
                higher_is_better,
            }),
        }
    }
}
