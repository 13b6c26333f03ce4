//! The [`Seq2Seq`] model: parameters, encoder, bridge, attention, teacher-forced decoder, loss.

use std::sync::atomic::{AtomicU64, Ordering};

use candle_core::{DType, Result, Tensor, D};
use candle_nn::{Embedding, Module, VarBuilder};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rnn_core::activation::tanh;
use rnn_core::linear::{linear, linear_no_bias, Linear};
use rnn_core::{Implementation, Rnn, RnnState};

use super::{Attention, Seq2SeqConfig, MODEL};
use crate::common::{
    check_counters, check_ids, check_lengths, invalid, length_mask, splitmix64, value_checks_on,
    SeededDropout, Stochastic,
};
use crate::loss::linear_cross_entropy_sum_with;

/// What [`Seq2Seq::forward`] returns.
#[derive(Debug, Clone)]
pub struct Seq2SeqOutput {
    /// `(batch, tgt_len, tgt_vocab)` unnormalised scores of the next token at every step.
    pub logits: Tensor,
    /// `(batch, tgt_len, src_len)` attention weights (each row sums to 1 over the valid source
    /// positions, 0 at padding); `None` without attention.
    pub attention: Option<Tensor>,
}

/// The encoder outputs prepared for attention (computed once per source batch).
#[derive(Debug, Clone)]
pub(super) struct Memory {
    /// `(B, S, K)` encoder outputs (the attention values).
    values: Tensor,
    /// Dot / General: `(B, H, S)` keys, transposed for the score matmul; Additive: `(B, S, A)`
    /// projected keys; None: absent.
    keys: Option<Tensor>,
    /// `(B, 1, S)`: 0 at valid positions, -inf at padding.
    mask_bias: Tensor,
}

impl Memory {
    /// Rows `indices` of every tensor (e.g. each sentence repeated `beam` times).
    pub(super) fn index_rows(&self, indices: &Tensor) -> Result<Self> {
        Ok(Self {
            values: self.values.index_select(indices, 0)?,
            keys: self
                .keys
                .as_ref()
                .map(|k| k.index_select(indices, 0))
                .transpose()?,
            mask_bias: self.mask_bias.index_select(indices, 0)?,
        })
    }
}

/// An RNN encoder-decoder with attention; see the [module docs](super).
#[derive(Debug)]
pub struct Seq2Seq {
    pub(super) cfg: Seq2SeqConfig,
    src_embedding: Embedding,
    encoder: Rnn,
    bridge_h: Option<Linear>,
    bridge_c: Option<Linear>,
    tgt_embedding: Embedding,
    decoder: Rnn,
    att_query: Option<Linear>,
    att_key: Option<Linear>,
    att_v: Option<Linear>,
    combine: Option<Linear>,
    output: Linear,
    src_dropout: SeededDropout,
    tgt_dropout: SeededDropout,
    out_dropout: SeededDropout,
    tf_seed: u64,
    tf_calls: AtomicU64,
    loss_implementation: Implementation,
}

impl Clone for Seq2Seq {
    fn clone(&self) -> Self {
        Self {
            cfg: self.cfg.clone(),
            src_embedding: self.src_embedding.clone(),
            encoder: self.encoder.clone(),
            bridge_h: self.bridge_h.clone(),
            bridge_c: self.bridge_c.clone(),
            tgt_embedding: self.tgt_embedding.clone(),
            decoder: self.decoder.clone(),
            att_query: self.att_query.clone(),
            att_key: self.att_key.clone(),
            att_v: self.att_v.clone(),
            combine: self.combine.clone(),
            output: self.output.clone(),
            src_dropout: self.src_dropout.clone(),
            tgt_dropout: self.tgt_dropout.clone(),
            out_dropout: self.out_dropout.clone(),
            tf_seed: self.tf_seed,
            tf_calls: AtomicU64::new(self.tf_calls.load(Ordering::Relaxed)),
            loss_implementation: self.loss_implementation,
        }
    }
}

fn detach_embedding(e: &Embedding) -> Embedding {
    let dim = e.embeddings().dim(1).unwrap_or(0);
    Embedding::new(e.embeddings().detach(), dim)
}

impl Seq2Seq {
    /// Builds the model, loading every parameter from `vb` (or creating it when `vb` is backed
    /// by a `VarMap`). Fails on an invalid config and on a missing or misshapen tensor.
    pub fn new(cfg: &Seq2SeqConfig, vb: VarBuilder) -> Result<Self> {
        cfg.validate()?;
        let (e, h) = (cfg.embedding_dim, cfg.hidden_size);
        let k = cfg.memory_size();
        let enc_vb = vb.pp("encoder");
        let dec_vb = vb.pp("decoder");
        let src_embedding = candle_nn::embedding(cfg.src_vocab, e, enc_vb.pp("embedding"))?;
        let encoder = Rnn::new(&cfg.encoder_rnn_config(), enc_vb.pp("rnn"))?;
        let (bridge_h, bridge_c) = if cfg.bidirectional_encoder {
            let bh = linear(2 * h, h, vb.pp("bridge").pp("h"))?;
            let bc = if cfg.mode.has_cell_state() {
                Some(linear(2 * h, h, vb.pp("bridge").pp("c"))?)
            } else {
                None
            };
            (Some(bh), bc)
        } else {
            (None, None)
        };
        let tgt_embedding = candle_nn::embedding(cfg.tgt_vocab, e, dec_vb.pp("embedding"))?;
        let decoder = Rnn::new(&cfg.decoder_rnn_config(), dec_vb.pp("rnn"))?;
        let att_vb = vb.pp("attention");
        let (att_query, att_key, att_v) = match cfg.attention {
            Attention::None | Attention::Dot => (None, None, None),
            Attention::General => (None, Some(linear_no_bias(k, h, att_vb.pp("key"))?), None),
            Attention::Additive => (
                Some(linear_no_bias(h, h, att_vb.pp("query"))?),
                Some(linear(k, h, att_vb.pp("key"))?),
                Some(linear_no_bias(h, 1, att_vb.pp("v"))?),
            ),
        };
        let combine = if cfg.attention == Attention::None {
            None
        } else {
            Some(linear(k + h, h, dec_vb.pp("combine"))?)
        };
        let output = linear(h, cfg.tgt_vocab, dec_vb.pp("output"))?;
        Ok(Self {
            cfg: cfg.clone(),
            src_embedding,
            encoder,
            bridge_h,
            bridge_c,
            tgt_embedding,
            decoder,
            att_query,
            att_key,
            att_v,
            combine,
            output,
            src_dropout: SeededDropout::new(cfg.dropout, splitmix64(0))?,
            tgt_dropout: SeededDropout::new(cfg.dropout, splitmix64(1))?,
            out_dropout: SeededDropout::new(cfg.dropout, splitmix64(2))?,
            tf_seed: splitmix64(5),
            tf_calls: AtomicU64::new(0),
            loss_implementation: Implementation::Auto,
        })
    }

    /// The same model with [`Seq2Seq::loss`] computing the output layer and the cross-entropy
    /// as `implementation` says: `Auto` (default) one fused op on the CPU (`rnn_core::output`:
    /// no `(B, T, tgt_vocab)` logits tensor, a hand-written backward), `Composed` the plain
    /// Candle ops (its reference twin), `Fused` the op or an error.
    pub fn with_loss_implementation(mut self, implementation: Implementation) -> Self {
        self.loss_implementation = implementation;
        self
    }

    /// The configuration.
    pub fn config(&self) -> &Seq2SeqConfig {
        &self.cfg
    }

    /// The same model with every parameter cut from the autograd graph (for decoding).
    pub(super) fn detached(&self) -> Self {
        let mut out = self.clone();
        out.src_embedding = detach_embedding(&self.src_embedding);
        out.tgt_embedding = detach_embedding(&self.tgt_embedding);
        out.encoder = self.encoder.detached();
        out.decoder = self.decoder.detached();
        for l in [
            &mut out.bridge_h,
            &mut out.bridge_c,
            &mut out.att_query,
            &mut out.att_key,
            &mut out.att_v,
            &mut out.combine,
        ]
        .into_iter()
        .flatten()
        {
            *l = l.detach();
        }
        out.output = self.output.detach();
        out
    }

    pub(super) fn dtype(&self) -> DType {
        self.output.weight().dtype()
    }

    /// Fails unless every id of `ids` is below `vocab`.
    pub(super) fn check_vocab(&self, name: &str, ids: &Tensor, vocab: usize) -> Result<()> {
        if !value_checks_on(ids.device()) {
            return Ok(()); // reading the ids back would stall the device once per step
        }
        let max = ids.flatten_all()?.max(0)?.to_scalar::<u32>()?;
        if max as usize >= vocab {
            return Err(invalid(
                MODEL,
                format!("`{name}` holds token id {max}, outside the vocabulary of {vocab} ids"),
            ));
        }
        Ok(())
    }

    /// Checks `src` and `src_lengths`; returns `(batch, src_len)`.
    pub(super) fn check_src(&self, src: &Tensor, src_lengths: &[usize]) -> Result<(usize, usize)> {
        let (b, s) = check_ids(MODEL, "src", src)?;
        check_lengths(&format!("{MODEL} (src_lengths)"), src_lengths, b, s)?;
        if !src.device().same_device(self.output.weight().device()) {
            return Err(invalid(
                MODEL,
                format!(
                    "`src` is on {:?} but the model is on {:?}",
                    src.device().location(),
                    self.output.weight().device().location()
                ),
            ));
        }
        self.check_vocab("src", src, self.cfg.src_vocab)?;
        Ok((b, s))
    }

    /// Encoder: memory for attention and the bridged decoder initial state.
    pub(super) fn encode(
        &self,
        src: &Tensor,
        src_lengths: &[usize],
        train: bool,
    ) -> Result<(Memory, RnnState)> {
        let (b, s) = src.dims2()?;
        let emb = self
            .src_dropout
            .forward(&self.src_embedding.forward(src)?, train)?;
        let (values, state) = self
            .encoder
            .forward_t(&emb, None, Some(src_lengths), train)?;
        let init = RnnState::new(
            self.bridge(&state.h, self.bridge_h.as_ref(), b)?,
            match &state.c {
                Some(c) => Some(self.bridge(c, self.bridge_c.as_ref(), b)?),
                None => None,
            },
        );
        let dev = src.device();
        let valid = length_mask(Some(src_lengths), b, s, DType::U8, dev)?;
        let zeros = Tensor::zeros((b, s), self.dtype(), dev)?;
        let neg_inf = Tensor::full(f32::NEG_INFINITY, (b, s), dev)?.to_dtype(self.dtype())?;
        let mask_bias = valid.where_cond(&zeros, &neg_inf)?.unsqueeze(1)?;
        let keys = match self.cfg.attention {
            Attention::None => None,
            Attention::Dot => Some(values.transpose(1, 2)?.contiguous()?),
            Attention::General => Some(
                self.linear(&self.att_key, &values)?
                    .transpose(1, 2)?
                    .contiguous()?,
            ),
            Attention::Additive => Some(self.linear(&self.att_key, &values)?),
        };
        Ok((
            Memory {
                values,
                keys,
                mask_bias,
            },
            init,
        ))
    }

    pub(super) fn linear(&self, layer: &Option<Linear>, xs: &Tensor) -> Result<Tensor> {
        match layer {
            Some(l) => l.forward(xs),
            None => Err(invalid(
                MODEL,
                "internal error: a layer of this attention kind is missing",
            )),
        }
    }

    /// Maps one encoder state tensor `(enc_layers * dirs, B, H)` to the decoder's
    /// `(dec_layers, B, H)` (see the module docs).
    pub(super) fn bridge(&self, t: &Tensor, lin: Option<&Linear>, batch: usize) -> Result<Tensor> {
        let (el, dl, h) = (
            self.cfg.encoder_layers,
            self.cfg.decoder_layers,
            self.cfg.hidden_size,
        );
        let t = match lin {
            Some(lin) if self.cfg.bidirectional_encoder => {
                let joined =
                    t.reshape((el, 2, batch, h))?
                        .transpose(1, 2)?
                        .reshape((el, batch, 2 * h))?;
                tanh(&lin.forward(&joined)?)?
            }
            _ => t.clone(),
        };
        if el == dl {
            Ok(t)
        } else {
            t.get(el - 1)?
                .unsqueeze(0)?
                .broadcast_as((dl, batch, h))?
                .contiguous()
        }
    }

    /// Attention over `mem` for decoder outputs `ys (B, T, H)`: the attentional hidden
    /// `(B, T, H)` and the weights `(B, T, S)` (`ys` itself and `None` without attention).
    pub(super) fn attend(&self, mem: &Memory, ys: &Tensor) -> Result<(Tensor, Option<Tensor>)> {
        let keys = match (&mem.keys, self.cfg.attention) {
            (_, Attention::None) | (None, _) => return Ok((ys.clone(), None)),
            (Some(k), _) => k,
        };
        let scores = match self.cfg.attention {
            Attention::Additive => {
                let (b, t, _) = ys.dims3()?;
                let (_, s, a) = keys.dims3()?;
                let q = self.linear(&self.att_query, ys)?; // (B, T, A)
                let e = tanh(&q.unsqueeze(2)?.broadcast_add(&keys.unsqueeze(1)?)?)?; // (B, T, S, A)
                self.linear(&self.att_v, &e.reshape((b * t * s, a))?)?
                    .reshape((b, t, s))?
            }
            _ => ys.contiguous()?.matmul(keys)?, // (B, T, H) x (B, H, S)
        };
        let scores = scores.broadcast_add(&mem.mask_bias)?;
        let weights = candle_nn::ops::softmax(&scores, D::Minus1)?;
        let context = weights.matmul(&mem.values)?; // (B, T, K)
        let joined = Tensor::cat(&[&context, ys], 2)?;
        let hidden = tanh(&self.linear(&self.combine, &joined)?)?;
        Ok((hidden, Some(weights)))
    }

    /// One decoder step for tokens `(B)`: attentional hidden `(B, 1, H)`, weights `(B, 1, S)`,
    /// new state.
    pub(super) fn decode_step(
        &self,
        mem: &Memory,
        tokens: &Tensor,
        prev_hidden: Option<&Tensor>,
        state: &RnnState,
        train: bool,
    ) -> Result<(Tensor, Option<Tensor>, RnnState)> {
        let emb = self
            .tgt_dropout
            .forward(&self.tgt_embedding.forward(tokens)?, train)?;
        let x = match prev_hidden {
            Some(p) if self.cfg.input_feeding => Tensor::cat(&[&emb, p], 1)?,
            _ => emb,
        };
        let (y, state) = self
            .decoder
            .forward_t(&x.unsqueeze(1)?, Some(state), None, train)?;
        let (hidden, weights) = self.attend(mem, &y)?;
        Ok((hidden, weights, state))
    }

    pub(super) fn logits(&self, hidden: &Tensor, train: bool) -> Result<Tensor> {
        self.output.forward(&self.features(hidden, train)?)
    }

    /// The output layer's input: `hidden` after the output dropout.
    fn features(&self, hidden: &Tensor, train: bool) -> Result<Tensor> {
        self.out_dropout.forward(hidden, train)
    }

    /// Teacher-forced (or partly free-running) forward pass.
    ///
    /// - `src`: `(B, S)` u32 source ids, right-padded; `src_lengths[b]` in `1..=S`
    /// - `tgt_in`: `(B, T)` u32 decoder input, `[bos, y_1, .., y_{T-1}]` (see [`Seq2Seq::loss`],
    ///   which builds it from the gold target)
    /// - `train`: dropout on
    /// - `teacher_forcing_ratio` in `[0, 1]`, `seed`: see the [module docs](super)
    ///
    /// Returns logits `(B, T, tgt_vocab)` and the attention weights `(B, T, S)`.
    pub fn forward(
        &self,
        src: &Tensor,
        src_lengths: &[usize],
        tgt_in: &Tensor,
        train: bool,
        teacher_forcing_ratio: f64,
        seed: u64,
    ) -> Result<Seq2SeqOutput> {
        self.forward_impl(
            src,
            src_lengths,
            tgt_in,
            train,
            teacher_forcing_ratio,
            seed,
            false,
        )
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) fn forward_impl(
        &self,
        src: &Tensor,
        src_lengths: &[usize],
        tgt_in: &Tensor,
        train: bool,
        ratio: f64,
        seed: u64,
        force_steps: bool,
    ) -> Result<Seq2SeqOutput> {
        let (features, attention) =
            self.decode_features(src, src_lengths, tgt_in, train, ratio, seed, force_steps)?;
        let logits = self.output.forward(&features)?;
        Ok(Seq2SeqOutput { logits, attention })
    }

    /// [`Seq2Seq::forward_impl`] up to the output layer: its input `(B, T, H')` (after the output
    /// dropout) and the attention weights.
    #[allow(clippy::too_many_arguments)]
    fn decode_features(
        &self,
        src: &Tensor,
        src_lengths: &[usize],
        tgt_in: &Tensor,
        train: bool,
        ratio: f64,
        seed: u64,
        force_steps: bool,
    ) -> Result<(Tensor, Option<Tensor>)> {
        let (b, _) = self.check_src(src, src_lengths)?;
        let (bt, t) = check_ids(MODEL, "tgt_in", tgt_in)?;
        if bt != b {
            return Err(invalid(
                MODEL,
                format!(
                    "`tgt_in` has shape {:?} but `src` has shape {:?}: the batch sizes differ",
                    tgt_in.dims(),
                    src.dims()
                ),
            ));
        }
        self.check_vocab("tgt_in", tgt_in, self.cfg.tgt_vocab)?;
        if !(0.0..=1.0).contains(&ratio) {
            return Err(invalid(
                MODEL,
                format!("`teacher_forcing_ratio` must be in [0, 1], got {ratio}"),
            ));
        }
        let (mem, init) = self.encode(src, src_lengths, train)?;
        if ratio >= 1.0 && !self.cfg.input_feeding && !force_steps {
            // The whole target at once: one decoder RNN call, one batched attention.
            let emb = self
                .tgt_dropout
                .forward(&self.tgt_embedding.forward(tgt_in)?, train)?;
            let (ys, _) = self.decoder.forward_t(&emb, Some(&init), None, train)?;
            let (hidden, attention) = self.attend(&mem, &ys)?;
            return Ok((self.features(&hidden, train)?, attention));
        }
        let dev = src.device();
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut state = init;
        let mut prev_hidden = if self.cfg.input_feeding {
            Some(Tensor::zeros((b, self.cfg.hidden_size), self.dtype(), dev)?)
        } else {
            None
        };
        // The model's own predictions stay on the device (no host round trip per step); which
        // rows take the gold token is drawn on the host and uploaded.
        let mut predicted: Option<Tensor> = None;
        let mut all_features = Vec::with_capacity(t);
        let mut all_weights = Vec::with_capacity(t);
        for step in 0..t {
            let gold_t = tgt_in.narrow(1, step, 1)?.squeeze(1)?.contiguous()?;
            let tokens = match &predicted {
                Some(pred) if step > 0 && ratio < 1.0 => {
                    let take_gold: Vec<u8> = (0..b)
                        .map(|_| u8::from(rng.random::<f64>() < ratio))
                        .collect();
                    Tensor::from_vec(take_gold, b, dev)?.where_cond(&gold_t, pred)?
                }
                _ => gold_t,
            };
            let (hidden, weights, new_state) =
                self.decode_step(&mem, &tokens, prev_hidden.as_ref(), &state, train)?;
            let features = self.features(&hidden, train)?; // (B, 1, H')
            if ratio < 1.0 && step + 1 < t {
                let logits = self.output.forward(&features.detach())?; // (B, 1, V)
                predicted = Some(logits.squeeze(1)?.argmax(D::Minus1)?);
            }
            if self.cfg.input_feeding {
                prev_hidden = Some(hidden.squeeze(1)?);
            }
            state = new_state;
            all_features.push(features);
            if let Some(w) = weights {
                all_weights.push(w);
            }
        }
        let features = Tensor::cat(&all_features, 1)?;
        let attention = if all_weights.is_empty() {
            None
        } else {
            Some(Tensor::cat(&all_weights, 1)?)
        };
        Ok((features, attention))
    }

    /// Checks the gold target and its lengths; returns `(B, T)`.
    pub(super) fn check_tgt(
        &self,
        tgt: &Tensor,
        tgt_lengths: &[usize],
        batch: usize,
    ) -> Result<(usize, usize)> {
        let (b, t) = check_ids(MODEL, "tgt", tgt)?;
        if b != batch {
            return Err(invalid(
                MODEL,
                format!(
                    "`tgt` has shape {:?} but the source batch has {batch} sentences",
                    tgt.dims()
                ),
            ));
        }
        check_lengths(&format!("{MODEL} (tgt_lengths)"), tgt_lengths, b, t)?;
        self.check_vocab("tgt", tgt, self.cfg.tgt_vocab)?;
        Ok((b, t))
    }

    /// `[bos, tgt[.., ..T-1]]`: the decoder input for the gold target `tgt (B, T)`.
    pub(super) fn shift_right(&self, tgt: &Tensor) -> Result<Tensor> {
        let (b, t) = tgt.dims2()?;
        let bos = Tensor::full(self.cfg.bos_id, (b, 1), tgt.device())?;
        if t == 1 {
            Ok(bos)
        } else {
            Tensor::cat(&[&bos, &tgt.narrow(1, 0, t - 1)?], 1)
        }
    }

    /// Mean cross-entropy (nats per target token) of the gold target.
    ///
    /// - `tgt`: `(B, T)` u32 gold target **including** the end token, right-padded;
    ///   `tgt_lengths[b]` in `1..=T` counts the end token; padded steps are ignored
    /// - the decoder input is `[bos, tgt[.., ..T-1]]`; `teacher_forcing_ratio` as in
    ///   [`Seq2Seq::forward`], with the seed drawn from the model's own counter
    ///   ([`Stochastic`]) when the ratio is below 1
    #[allow(clippy::too_many_arguments)]
    pub fn loss(
        &self,
        src: &Tensor,
        src_lengths: &[usize],
        tgt: &Tensor,
        tgt_lengths: &[usize],
        train: bool,
        teacher_forcing_ratio: f64,
    ) -> Result<Tensor> {
        let (b, _) = self.check_src(src, src_lengths)?;
        let (_, t) = self.check_tgt(tgt, tgt_lengths, b)?;
        let tgt_in = self.shift_right(tgt)?;
        let seed = if teacher_forcing_ratio < 1.0 {
            splitmix64(self.tf_seed ^ splitmix64(self.tf_calls.fetch_add(1, Ordering::Relaxed)))
        } else {
            0
        };
        let (features, _) = self.decode_features(
            src,
            src_lengths,
            &tgt_in,
            train,
            teacher_forcing_ratio,
            seed,
            false,
        )?;
        let mask = length_mask(Some(tgt_lengths), b, t, self.dtype(), src.device())?;
        // The output layer and the loss in one op on the CPU (no (B, T, V) logits tensor).
        linear_cross_entropy_sum_with(
            &features,
            self.output.weight(),
            self.output.bias(),
            tgt,
            Some(&mask),
            self.loss_implementation,
        )?
        .mean()
    }

    /// The model's log-probability (natural log) of each gold target sentence: the sum over
    /// its valid steps of `log p(tgt_t | src, tgt_<t)`, in eval mode with full teacher forcing.
    /// Shapes as in [`Seq2Seq::loss`]; for a hypothesis that ended with the end token, pass
    /// its tokens followed by `eos_id`.
    pub fn sequence_log_probs(
        &self,
        src: &Tensor,
        src_lengths: &[usize],
        tgt: &Tensor,
        tgt_lengths: &[usize],
    ) -> Result<Vec<f64>> {
        let (b, _) = self.check_src(src, src_lengths)?;
        let (_, t) = self.check_tgt(tgt, tgt_lengths, b)?;
        let out = self.forward(src, src_lengths, &self.shift_right(tgt)?, false, 1.0, 0)?;
        let log_probs = candle_nn::ops::log_softmax(&out.logits.to_dtype(DType::F32)?, D::Minus1)?
            .gather(&tgt.unsqueeze(2)?, 2)?
            .squeeze(2)?
            .to_vec2::<f32>()?;
        Ok(log_probs
            .iter()
            .zip(tgt_lengths)
            .map(|(row, &len)| row[..len.min(t)].iter().map(|&v| v as f64).sum())
            .collect())
    }
}

impl Stochastic for Seq2Seq {
    /// Reseeds the embedding / output dropouts, both RNNs' inter-layer dropout and the
    /// teacher-forcing draws of [`Seq2Seq::loss`].
    fn set_seed(&mut self, seed: u64) {
        let derive = |i: u64| splitmix64(seed ^ splitmix64(i));
        self.src_dropout.set_seed(derive(0));
        self.tgt_dropout.set_seed(derive(1));
        self.out_dropout.set_seed(derive(2));
        self.encoder = self.encoder.set_dropout_seed(derive(3));
        self.decoder = self.decoder.set_dropout_seed(derive(4));
        self.tf_seed = derive(5);
        self.tf_calls.store(0, Ordering::Relaxed);
    }

    /// `[src dropout, tgt dropout, output dropout, encoder RNN, decoder RNN, teacher forcing]`.
    fn rng_counters(&self) -> Vec<u64> {
        vec![
            self.src_dropout.calls(),
            self.tgt_dropout.calls(),
            self.out_dropout.calls(),
            self.encoder.dropout_calls(),
            self.decoder.dropout_calls(),
            self.tf_calls.load(Ordering::Relaxed),
        ]
    }

    fn set_rng_counters(&self, counters: &[u64]) -> Result<()> {
        check_counters(MODEL, counters, 6)?;
        self.src_dropout.set_calls(counters[0]);
        self.tgt_dropout.set_calls(counters[1]);
        self.out_dropout.set_calls(counters[2]);
        self.encoder.set_dropout_calls(counters[3]);
        self.decoder.set_dropout_calls(counters[4]);
        self.tf_calls.store(counters[5], Ordering::Relaxed);
        Ok(())
    }
}
