//! Ranks as threads of one process: every operation is an exchange through shared memory.

use std::sync::{Arc, Condvar, Mutex};

use candle_core::{DType, Device, Tensor};

use super::{check_flat, check_root, Collective};
use crate::{Error, Result};

/// What one rank brings to an exchange.
#[derive(Clone)]
enum Payload {
    F32(Vec<f32>),
    F64(Vec<f64>),
    Bytes(Vec<u8>),
}

impl Payload {
    fn kind(&self) -> &'static str {
        match self {
            Payload::F32(_) => "f32",
            Payload::F64(_) => "f64",
            Payload::Bytes(_) => "bytes",
        }
    }
}

struct Round {
    /// Deposits of the round in progress, by rank.
    slots: Vec<Option<(&'static str, Payload)>>,
    arrived: usize,
    /// Completed rounds; waiters watch it change.
    generation: u64,
    /// Every rank's deposit of the last completed round, with the operation's name.
    results: Arc<Vec<(&'static str, Payload)>>,
    /// The first rank that left the group, if any.
    left: Option<usize>,
}

struct Shared {
    world: usize,
    round: Mutex<Round>,
    changed: Condvar,
}

/// One rank of a group whose ranks are threads of this process ([`ThreadCollective::group`]).
///
/// Sums run in rank order on every rank, so every rank gets the same bits, equal to a
/// sequential accumulation. Dropping a handle (its thread ended, by error or normally) makes
/// every later or pending operation of the other ranks fail instead of waiting.
pub struct ThreadCollective {
    rank: usize,
    shared: Arc<Shared>,
}

impl ThreadCollective {
    /// `world` handles, one per rank (`world >= 1`), to move into one thread each.
    pub fn group(world: usize) -> Result<Vec<ThreadCollective>> {
        if world == 0 {
            return Err(Error::Invalid(
                "a thread group needs at least one rank".into(),
            ));
        }
        let shared = Arc::new(Shared {
            world,
            round: Mutex::new(Round {
                slots: vec![None; world],
                arrived: 0,
                generation: 0,
                results: Arc::new(Vec::new()),
                left: None,
            }),
            changed: Condvar::new(),
        });
        Ok((0..world)
            .map(|rank| ThreadCollective {
                rank,
                shared: shared.clone(),
            })
            .collect())
    }

    /// Deposits `payload`, waits for every rank, and returns every rank's deposit in rank order.
    fn exchange(
        &self,
        op: &'static str,
        payload: Payload,
    ) -> Result<Arc<Vec<(&'static str, Payload)>>> {
        let gone = |r: usize| {
            Error::Collective(format!(
                "rank {r} left the group during `{op}` (it failed or ended early); rank {} stops too",
                self.rank
            ))
        };
        let mut round = self
            .shared
            .round
            .lock()
            .map_err(|_| Error::Collective("the thread group's lock is poisoned".into()))?;
        if let Some(r) = round.left {
            return Err(gone(r));
        }
        round.slots[self.rank] = Some((op, payload));
        round.arrived += 1;
        if round.arrived == self.shared.world {
            let all: Vec<(&'static str, Payload)> = round
                .slots
                .iter_mut()
                .map(|s| s.take().expect("every rank deposited"))
                .collect();
            round.results = Arc::new(all);
            round.arrived = 0;
            round.generation += 1;
            self.shared.changed.notify_all();
        } else {
            let generation = round.generation;
            while round.generation == generation {
                if let Some(r) = round.left {
                    return Err(gone(r));
                }
                round =
                    self.shared.changed.wait(round).map_err(|_| {
                        Error::Collective("the thread group's lock is poisoned".into())
                    })?;
            }
        }
        let results = round.results.clone();
        drop(round);
        if let Some((r, (other, _))) = results.iter().enumerate().find(|(_, (o, _))| *o != op) {
            return Err(Error::Collective(format!(
                "rank {} called `{op}` while rank {r} called `{other}`: the ranks are out of step",
                self.rank
            )));
        }
        Ok(results)
    }

    fn float_exchange(
        &self,
        op: &'static str,
        buf: &Tensor,
    ) -> Result<(Device, DType, Vec<Payload>)> {
        check_flat(op, buf)?;
        let payload = match buf.dtype() {
            DType::F32 => Payload::F32(buf.to_vec1::<f32>()?),
            _ => Payload::F64(buf.to_vec1::<f64>()?),
        };
        let results = self.exchange(op, payload)?;
        let mut out = Vec::with_capacity(results.len());
        for (r, (_, p)) in results.iter().enumerate() {
            let same_kind = p.kind() == results[self.rank].1.kind();
            if !same_kind {
                return Err(Error::Collective(format!(
                    "`{op}`: rank {r} sent {} while rank {} sent {}",
                    p.kind(),
                    self.rank,
                    results[self.rank].1.kind()
                )));
            }
            out.push(p.clone());
        }
        Ok((buf.device().clone(), buf.dtype(), out))
    }
}

impl Drop for ThreadCollective {
    fn drop(&mut self) {
        if let Ok(mut round) = self.shared.round.lock() {
            if round.left.is_none() {
                round.left = Some(self.rank);
            }
            self.shared.changed.notify_all();
        }
    }
}

fn len_of(p: &Payload) -> usize {
    match p {
        Payload::F32(v) => v.len(),
        Payload::F64(v) => v.len(),
        Payload::Bytes(v) => v.len(),
    }
}

fn equal_lengths(op: &str, parts: &[Payload]) -> Result<()> {
    if let Some((r, p)) = parts
        .iter()
        .enumerate()
        .find(|(_, p)| len_of(p) != len_of(&parts[0]))
    {
        return Err(Error::Collective(format!(
            "`{op}`: rank {r} sent {} values, rank 0 sent {}",
            len_of(p),
            len_of(&parts[0])
        )));
    }
    Ok(())
}

impl Collective for ThreadCollective {
    fn rank(&self) -> usize {
        self.rank
    }

    fn world_size(&self) -> usize {
        self.shared.world
    }

    fn backend(&self) -> &'static str {
        "threads"
    }

    fn all_reduce_sum(&self, buf: &Tensor) -> Result<Tensor> {
        let (device, _, parts) = self.float_exchange("all_reduce_sum", buf)?;
        equal_lengths("all_reduce_sum", &parts)?;
        let t = match &parts[0] {
            Payload::F32(first) => {
                let mut acc = first.clone();
                for p in &parts[1..] {
                    if let Payload::F32(v) = p {
                        acc.iter_mut().zip(v).for_each(|(a, b)| *a += *b);
                    }
                }
                Tensor::from_vec(acc, first.len(), &device)?
            }
            Payload::F64(first) => {
                let mut acc = first.clone();
                for p in &parts[1..] {
                    if let Payload::F64(v) = p {
                        acc.iter_mut().zip(v).for_each(|(a, b)| *a += *b);
                    }
                }
                Tensor::from_vec(acc, first.len(), &device)?
            }
            Payload::Bytes(_) => unreachable!("float_exchange sends floats"),
        };
        Ok(t)
    }

    fn broadcast(&self, buf: &Tensor, root: usize) -> Result<Tensor> {
        check_root(self, root)?;
        let (device, _, parts) = self.float_exchange("broadcast", buf)?;
        equal_lengths("broadcast", &parts)?;
        Ok(match &parts[root] {
            Payload::F32(v) => Tensor::from_vec(v.clone(), v.len(), &device)?,
            Payload::F64(v) => Tensor::from_vec(v.clone(), v.len(), &device)?,
            Payload::Bytes(_) => unreachable!("float_exchange sends floats"),
        })
    }

    fn all_gather(&self, buf: &Tensor) -> Result<Tensor> {
        let (device, _, parts) = self.float_exchange("all_gather", buf)?;
        equal_lengths("all_gather", &parts)?;
        Ok(match &parts[0] {
            Payload::F32(_) => {
                let all: Vec<f32> = parts
                    .iter()
                    .flat_map(|p| match p {
                        Payload::F32(v) => v.clone(),
                        _ => Vec::new(),
                    })
                    .collect();
                let n = all.len();
                Tensor::from_vec(all, n, &device)?
            }
            _ => {
                let all: Vec<f64> = parts
                    .iter()
                    .flat_map(|p| match p {
                        Payload::F64(v) => v.clone(),
                        _ => Vec::new(),
                    })
                    .collect();
                let n = all.len();
                Tensor::from_vec(all, n, &device)?
            }
        })
    }

    fn all_reduce_sum_f64(&self, values: &mut [f64]) -> Result<()> {
        let results = self.exchange("all_reduce_sum_f64", Payload::F64(values.to_vec()))?;
        let parts: Vec<Payload> = results.iter().map(|(_, p)| p.clone()).collect();
        equal_lengths("all_reduce_sum_f64", &parts)?;
        let mut acc = vec![0.0f64; values.len()];
        for (i, p) in parts.iter().enumerate() {
            if let Payload::F64(v) = p {
                if i == 0 {
                    acc.copy_from_slice(v);
                } else {
                    acc.iter_mut().zip(v).for_each(|(a, b)| *a += *b);
                }
            }
        }
        values.copy_from_slice(&acc);
        Ok(())
    }

    fn broadcast_bytes(&self, bytes: &mut Vec<u8>, root: usize) -> Result<()> {
        check_root(self, root)?;
        let results = self.exchange("broadcast_bytes", Payload::Bytes(std::mem::take(bytes)))?;
        if let Payload::Bytes(b) = &results[root].1 {
            *bytes = b.clone();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run<F, T>(world: usize, f: F) -> Vec<Result<T>>
    where
        F: Fn(ThreadCollective) -> Result<T> + Send + Sync + Clone + 'static,
        T: Send + 'static,
    {
        let handles: Vec<_> = ThreadCollective::group(world)
            .unwrap()
            .into_iter()
            .map(|c| {
                let f = f.clone();
                std::thread::spawn(move || f(c))
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    }

    #[test]
    fn all_reduce_sums_in_rank_order_and_every_rank_gets_the_same_bits() {
        let out = run(3, |c| {
            // Values whose f32 sum depends on the order: 1e8 + 1 - 1e8.
            let v = [1.0e8f32, 1.0, -1.0e8][c.rank()];
            let t = Tensor::new(&[v, c.rank() as f32], &Device::Cpu)?;
            c.all_reduce_sum(&t)?.to_vec1::<f32>().map_err(Into::into)
        });
        let expected = vec![(1.0e8f32 + 1.0) + -1.0e8, 3.0];
        for r in out {
            assert_eq!(r.unwrap(), expected);
        }
    }

    #[test]
    fn broadcast_gather_and_host_sums() {
        let out = run(2, |c| {
            let t = Tensor::new(&[c.rank() as f64 + 1.0; 2], &Device::Cpu)?;
            let b = c.broadcast(&t, 1)?.to_vec1::<f64>()?;
            let g = c.all_gather(&t)?.to_vec1::<f64>()?;
            let mut h = [c.rank() as f64, 10.0];
            c.all_reduce_sum_f64(&mut h)?;
            let mut bytes = if c.rank() == 0 {
                b"hello".to_vec()
            } else {
                Vec::new()
            };
            c.broadcast_bytes(&mut bytes, 0)?;
            Ok((b, g, h, bytes))
        });
        for r in out {
            let (b, g, h, bytes) = r.unwrap();
            assert_eq!(b, vec![2.0, 2.0]);
            assert_eq!(g, vec![1.0, 1.0, 2.0, 2.0]);
            assert_eq!(h, [1.0, 20.0]);
            assert_eq!(bytes, b"hello");
        }
    }

    #[test]
    fn a_rank_that_leaves_makes_the_others_fail_instead_of_hang() {
        let out = run(3, |c| {
            if c.rank() == 2 {
                return Err(Error::Invalid("rank 2 fails".into()));
            }
            let t = Tensor::new(&[1.0f32], &Device::Cpu)?;
            c.all_reduce_sum(&t).map(|_| ())
        });
        for (r, res) in out.iter().enumerate() {
            let msg = res.as_ref().unwrap_err().to_string();
            if r < 2 {
                assert!(msg.contains("rank 2 left the group"), "{msg}");
            }
        }
    }

    #[test]
    fn mismatched_lengths_and_operations_are_errors() {
        let out = run(2, |c| {
            let t = Tensor::zeros(c.rank() + 1, DType::F32, &Device::Cpu)?;
            c.all_reduce_sum(&t).map(|_| ())
        });
        for res in out {
            assert!(res
                .unwrap_err()
                .to_string()
                .contains("rank 1 sent 2 values"));
        }
        let out = run(2, |c| {
            let t = Tensor::zeros(1, DType::F32, &Device::Cpu)?;
            if c.rank() == 0 {
                c.all_reduce_sum(&t).map(|_| ())
            } else {
                c.broadcast(&t, 0).map(|_| ())
            }
        });
        for res in out {
            assert!(res.unwrap_err().to_string().contains("out of step"));
        }
    }

    #[test]
    fn check_agree_names_the_ranks() {
        let out = run(2, |c| {
            super::super::check_agree(&c, "the batch count", 5 + c.rank() as u64)
        });
        for res in out {
            let msg = res.unwrap_err().to_string();
            assert!(msg.contains("rank 0: 5, rank 1: 6"), "{msg}");
        }
    }
}
