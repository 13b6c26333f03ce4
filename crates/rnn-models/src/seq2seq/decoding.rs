//! Decoding: greedy and batched beam search (see the [module docs](super)).

use std::cmp::Ordering as CmpOrdering;

use candle_core::{DType, Result, Tensor, D};

use super::{Seq2Seq, MODEL};
use crate::common::invalid;

/// One decoded sequence.
#[derive(Debug, Clone, PartialEq)]
pub struct Hypothesis {
    /// Generated tokens, without the start token and without the end token.
    pub tokens: Vec<u32>,
    /// Sum of the log-softmax of every generated token, the end token included if produced
    /// (natural log).
    pub log_prob: f64,
    /// `log_prob / length_penalty(steps, alpha)` (equals `log_prob` for greedy decoding).
    pub score: f64,
    /// Whether decoding stopped at the end token (false: stopped at `max_len`).
    pub finished: bool,
    /// Attention weights per decoding step over the sentence's valid source positions
    /// (`steps x src_len`, the end-token step included); empty without attention.
    pub attention: Vec<Vec<f32>>,
}

/// The GNMT length penalty `((5 + len) / 6)^alpha` (Wu et al. 2016); `alpha = 0` gives 1.
pub fn length_penalty(len: usize, alpha: f64) -> f64 {
    ((5.0 + len as f64) / 6.0).powf(alpha)
}

/// A live beam-search hypothesis.
#[derive(Debug, Clone)]
struct Live {
    tokens: Vec<u32>,
    log_prob: f64,
    attention: Vec<Vec<f32>>,
}

impl Seq2Seq {
    fn check_decode_args(
        &self,
        what: &str,
        src: &Tensor,
        src_lengths: &[usize],
        max_len: usize,
    ) -> Result<usize> {
        let (b, _) = self.check_src(src, src_lengths)?;
        if max_len == 0 {
            return Err(invalid(
                MODEL,
                format!("{what}: `max_len` must be >= 1, got 0"),
            ));
        }
        Ok(b)
    }

    /// Greedy decoding: at every step the most likely token (ties towards the lower id), until
    /// the end token or `max_len` steps. One [`Hypothesis`] per sentence (`score == log_prob`).
    pub fn greedy(
        &self,
        src: &Tensor,
        src_lengths: &[usize],
        max_len: usize,
    ) -> Result<Vec<Hypothesis>> {
        let b = self.check_decode_args("greedy", src, src_lengths, max_len)?;
        let model = self.detached();
        let (mem, mut state) = model.encode(src, src_lengths, false)?;
        let dev = src.device();
        let mut hyps: Vec<Hypothesis> = (0..b)
            .map(|_| Hypothesis {
                tokens: Vec::new(),
                log_prob: 0.0,
                score: 0.0,
                finished: false,
                attention: Vec::new(),
            })
            .collect();
        let mut tokens = vec![self.cfg.bos_id; b];
        let mut prev_hidden = if self.cfg.input_feeding {
            Some(Tensor::zeros((b, self.cfg.hidden_size), self.dtype(), dev)?)
        } else {
            None
        };
        for _ in 0..max_len {
            let input = Tensor::from_vec(tokens.clone(), b, dev)?;
            let (hidden, weights, new_state) =
                model.decode_step(&mem, &input, prev_hidden.as_ref(), &state, false)?;
            let log_probs = host_log_probs(&model.logits(&hidden, false)?)?;
            let weights = weights.map(|w| host_rows(&w)).transpose()?;
            for (row, hyp) in hyps.iter_mut().enumerate() {
                if hyp.finished {
                    continue;
                }
                let (best, lp) = argmax(&log_probs[row]);
                hyp.log_prob += lp as f64;
                if let Some(w) = &weights {
                    hyp.attention.push(w[row][..src_lengths[row]].to_vec());
                }
                if best == self.cfg.eos_id {
                    hyp.finished = true;
                } else {
                    hyp.tokens.push(best);
                }
                tokens[row] = best;
            }
            if hyps.iter().all(|h| h.finished) {
                break;
            }
            state = new_state;
            if self.cfg.input_feeding {
                prev_hidden = Some(hidden.squeeze(1)?);
            }
        }
        for h in &mut hyps {
            h.score = h.log_prob;
        }
        Ok(hyps)
    }

    /// Beam search with `beam` hypotheses per sentence, batched over the batch, GNMT length
    /// penalty `alpha = length_penalty` (0 = none), at most `max_len` steps (see the
    /// [module docs](super) for the exact rules). One [`Hypothesis`] per sentence: the
    /// best-scoring one. `beam == 1` equals [`Seq2Seq::greedy`].
    pub fn beam_search(
        &self,
        src: &Tensor,
        src_lengths: &[usize],
        beam: usize,
        length_penalty: f64,
        max_len: usize,
    ) -> Result<Vec<Hypothesis>> {
        let b = self.check_decode_args("beam_search", src, src_lengths, max_len)?;
        if beam == 0 {
            return Err(invalid(MODEL, "beam_search: `beam` must be >= 1, got 0"));
        }
        if !length_penalty.is_finite() {
            return Err(invalid(
                MODEL,
                format!("beam_search: `length_penalty` must be finite, got {length_penalty}"),
            ));
        }
        let alpha = length_penalty;
        let k = beam;
        let rows = b * k;
        let dev = src.device();
        let model = self.detached();
        let (mem, state) = model.encode(src, src_lengths, false)?;
        let repeat: Vec<u32> = (0..rows).map(|r| (r / k) as u32).collect();
        let repeat = Tensor::from_vec(repeat, rows, dev)?;
        let mem = mem.index_rows(&repeat)?;
        let mut state = state.index_select(&repeat, 1)?;
        let mut prev_hidden = if self.cfg.input_feeding {
            Some(Tensor::zeros(
                (rows, self.cfg.hidden_size),
                self.dtype(),
                dev,
            )?)
        } else {
            None
        };
        // Row r = sentence r / k, beam r % k; only beam 0 of each sentence is live at first.
        let mut live: Vec<Option<Live>> = (0..rows)
            .map(|r| {
                (r % k == 0).then(|| Live {
                    tokens: Vec::new(),
                    log_prob: 0.0,
                    attention: Vec::new(),
                })
            })
            .collect();
        let mut tokens = vec![self.cfg.bos_id; rows];
        let mut finished: Vec<Vec<Hypothesis>> = vec![Vec::new(); b];
        let mut done = vec![false; b];
        let eos = self.cfg.eos_id;
        let finish = |l: &Live, extra_lp: f64, with_eos: bool, extra_att: Option<Vec<f32>>| {
            let mut attention = l.attention.clone();
            attention.extend(extra_att);
            let log_prob = l.log_prob + extra_lp;
            let steps = l.tokens.len() + usize::from(with_eos);
            Hypothesis {
                tokens: l.tokens.clone(),
                log_prob,
                score: log_prob / self::length_penalty(steps, alpha),
                finished: with_eos,
                attention,
            }
        };
        for step in 0..max_len {
            let input = Tensor::from_vec(tokens.clone(), rows, dev)?;
            let (hidden, weights, new_state) =
                model.decode_step(&mem, &input, prev_hidden.as_ref(), &state, false)?;
            let log_probs = host_log_probs(&model.logits(&hidden, false)?)?;
            let weights = weights.map(|w| host_rows(&w)).transpose()?;
            let last_step = step + 1 == max_len;
            let mut sources: Vec<u32> = (0..rows as u32).collect();
            let mut next_live: Vec<Option<Live>> = vec![None; rows];
            for s in 0..b {
                if done[s] {
                    continue;
                }
                let att_of =
                    |row: usize| weights.as_ref().map(|w| w[row][..src_lengths[s]].to_vec());
                // (score, beam, token) of every continuation of every live beam.
                let mut cands: Vec<(f64, usize, usize)> = Vec::new();
                for j in 0..k {
                    if let Some(l) = &live[s * k + j] {
                        for (v, &lp) in log_probs[s * k + j].iter().enumerate() {
                            let score = l.log_prob + lp as f64;
                            if score.is_finite() {
                                cands.push((score, j, v));
                            }
                        }
                    }
                }
                let by_rank = |a: &(f64, usize, usize), c: &(f64, usize, usize)| -> CmpOrdering {
                    c.0.total_cmp(&a.0).then(a.1.cmp(&c.1)).then(a.2.cmp(&c.2))
                };
                let top = (2 * k).min(cands.len());
                if top < cands.len() {
                    cands.select_nth_unstable_by(top, by_rank);
                    cands.truncate(top);
                }
                cands.sort_by(by_rank);
                let mut kept: Vec<(usize, u32, f64)> = Vec::with_capacity(k);
                for (rank, &(score, j, v)) in cands.iter().enumerate() {
                    let row = s * k + j;
                    let Some(l) = &live[row] else { continue };
                    if v as u32 == eos {
                        if rank < k {
                            finished[s].push(finish(l, score - l.log_prob, true, att_of(row)));
                        }
                    } else if kept.len() < k {
                        kept.push((j, v as u32, score));
                    }
                }
                if finished[s].len() >= k || kept.is_empty() {
                    done[s] = true;
                    continue;
                }
                for (slot, &(j, v, score)) in kept.iter().enumerate() {
                    let row = s * k + j;
                    let Some(l) = &live[row] else { continue };
                    let mut next = l.clone();
                    next.tokens.push(v);
                    next.log_prob = score;
                    next.attention.extend(att_of(row));
                    let new_row = s * k + slot;
                    sources[new_row] = row as u32;
                    tokens[new_row] = v;
                    if last_step {
                        finished[s].push(finish(&next, 0.0, false, None));
                    } else {
                        next_live[new_row] = Some(next);
                    }
                }
                if last_step {
                    done[s] = true;
                }
            }
            live = next_live;
            if done.iter().all(|&d| d) {
                break;
            }
            let sources = Tensor::from_vec(sources, rows, dev)?;
            state = new_state.index_select(&sources, 1)?;
            if self.cfg.input_feeding {
                prev_hidden = Some(hidden.squeeze(1)?.index_select(&sources, 0)?);
            }
        }
        finished
            .into_iter()
            .enumerate()
            .map(|(s, hyps)| {
                let mut best: Option<Hypothesis> = None;
                for h in hyps {
                    if best.as_ref().is_none_or(|b| h.score > b.score) {
                        best = Some(h);
                    }
                }
                best.ok_or_else(|| {
                    invalid(MODEL, format!("beam_search: no hypothesis for sentence {s} (all continuations had probability 0)"))
                })
            })
            .collect()
    }
}

/// `(rows, 1, V)` logits -> per-row log-softmax on the host, f32.
fn host_log_probs(logits: &Tensor) -> Result<Vec<Vec<f32>>> {
    candle_nn::ops::log_softmax(&logits.squeeze(1)?.to_dtype(DType::F32)?, D::Minus1)?
        .to_vec2::<f32>()
}

/// `(rows, 1, S)` -> host rows, f32.
fn host_rows(t: &Tensor) -> Result<Vec<Vec<f32>>> {
    t.squeeze(1)?.to_dtype(DType::F32)?.to_vec2::<f32>()
}

/// Index and value of the largest entry (the first one on ties; NaN never wins).
fn argmax(row: &[f32]) -> (u32, f32) {
    let mut best = (0usize, f32::NEG_INFINITY);
    for (i, &v) in row.iter().enumerate() {
        if v > best.1 {
            best = (i, v);
        }
    }
    (best.0 as u32, best.1)
}
