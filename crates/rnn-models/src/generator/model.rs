//! The [`ConditionedGenerator`] model: context encoder, conditioned recurrence, heads, loss and
//! generation.

use candle_core::{DType, Device, Result, Tensor, D};
use candle_nn::{Embedding, Module, VarBuilder};
use rnn_core::activation::tanh;
use rnn_core::linear::{linear, Linear};
use rnn_core::{Implementation, Rnn, RnnState};

use super::{ContextKind, GeneratorConfig, StopStrategy, MODEL};
use crate::common::{
    check_ids, check_lengths, invalid, length_mask, value_checks_on, SeededDropout, Stochastic,
};
use crate::loss::{
    binary_cross_entropy_with_logits, linear_cross_entropy_sum_with, masked_cross_entropy,
};
use crate::sampling::{Sampler, SamplingConfig};
use crate::sources;

/// What [`ConditionedGenerator::forward`] returns.
#[derive(Debug, Clone)]
pub struct GeneratorOutput {
    /// Next-token logits `(B, T, V)`: row `t` predicts the token after input `t`.
    pub logits: Tensor,
    /// [`StopStrategy::Bernoulli`] only: `(B, T)` logits of P(the sequence ends after the token
    /// predicted at step `t`).
    pub stop_logits: Option<Tensor>,
    /// [`StopStrategy::PredictedLength`] only: `(B, max_len)` logits over lengths `1..=max_len`
    /// (class `k` = length `k + 1`).
    pub length_logits: Option<Tensor>,
}

#[derive(Debug, Clone)]
enum ContextEncoder {
    Class(Embedding),
    Features(Linear),
}

/// A context-conditioned token generator (one-to-many); see the [module docs](super).
///
/// ```
/// use candle_core::{DType, Device, Tensor};
/// use candle_nn::VarMap;
/// use rnn_core::init::seeded_var_builder;
/// use rnn_models::generator::{ConditionedGenerator, ContextKind, GeneratorConfig, StopStrategy};
/// use rnn_models::sampling::SamplingConfig;
///
/// let cfg = GeneratorConfig::new(10, ContextKind::Class { num_classes: 3 }, StopStrategy::EndToken)
///     .with_eos_id(1);
/// let varmap = VarMap::new();
/// let model = ConditionedGenerator::new(&cfg, seeded_var_builder(&varmap, 0, DType::F32, &Device::Cpu))?;
/// let classes = Tensor::new(&[0u32, 2], &Device::Cpu)?;
/// let targets = Tensor::new(&[[4u32, 5, 1], [6, 1, 0]], &Device::Cpu)?; // each ends with eos = 1
/// let loss = model.loss(&classes, &targets, Some(&[3, 2]), true)?;
/// assert_eq!(loss.rank(), 0);
/// let seqs = model.generate(&classes, &SamplingConfig::greedy(), 8, 0)?;
/// assert_eq!(seqs.len(), 2);
/// # Ok::<(), candle_core::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct ConditionedGenerator {
    cfg: GeneratorConfig,
    context: ContextEncoder,
    init_h: Option<Linear>,
    init_c: Option<Linear>,
    embedding: Embedding,
    rnn: Rnn,
    output: Linear,
    stop: Option<Linear>,
    length: Option<Linear>,
    dropout: SeededDropout,
    dtype: DType,
    device: Device,
    loss_implementation: Implementation,
}

impl ConditionedGenerator {
    /// Builds the model (validating `cfg`), creating or loading every parameter through `vb`.
    ///
    /// `cfg` is `&GeneratorConfig` as in every constructor of this workspace; the config by
    /// value, the form before 0.2, is still accepted.
    pub fn new(cfg: impl std::borrow::Borrow<GeneratorConfig>, vb: VarBuilder) -> Result<Self> {
        let cfg = cfg.borrow();
        cfg.validate()?;
        let vc = vb.pp("context");
        let context = match cfg.context {
            ContextKind::Class { num_classes } => ContextEncoder::Class(candle_nn::embedding(
                num_classes,
                cfg.context_dim,
                vc.pp("embedding"),
            )?),
            ContextKind::Features { size } => {
                ContextEncoder::Features(linear(size, cfg.context_dim, vc.pp("proj"))?)
            }
        };
        let state_size = cfg.num_layers * cfg.hidden_size;
        let (init_h, init_c) = if cfg.conditioning.initial_state() {
            let h = linear(cfg.context_dim, state_size, vc.pp("init_h"))?;
            let c = if cfg.mode.has_cell_state() {
                Some(linear(cfg.context_dim, state_size, vc.pp("init_c"))?)
            } else {
                None
            };
            (Some(h), c)
        } else {
            (None, None)
        };
        let embedding =
            candle_nn::embedding(cfg.vocab_size, cfg.embedding_dim, vb.pp("embedding"))?;
        let rnn = Rnn::new(&cfg.rnn_config(), vb.pp("rnn"))?;
        let output = linear(cfg.hidden_size, cfg.vocab_size, vb.pp("output"))?;
        let stop = match cfg.stop {
            StopStrategy::Bernoulli => Some(linear(cfg.hidden_size, 1, vb.pp("stop"))?),
            _ => None,
        };
        let length = match (cfg.stop, cfg.max_len) {
            (StopStrategy::PredictedLength, Some(max_len)) => {
                Some(linear(cfg.context_dim, max_len, vb.pp("length"))?)
            }
            _ => None,
        };
        let dropout = SeededDropout::new(cfg.dropout, 0)?;
        Ok(Self {
            context,
            init_h,
            init_c,
            embedding,
            rnn,
            output,
            stop,
            length,
            dropout,
            dtype: vb.dtype(),
            device: vb.device().clone(),
            cfg: cfg.clone(),
            loss_implementation: Implementation::Auto,
        })
    }

    /// The same model with [`ConditionedGenerator::loss`] computing the output layer and the
    /// token cross-entropy as `implementation` says: `Auto` (default) one fused op on the CPU
    /// (`rnn_core::output`: no `(B, T, vocab)` logits tensor, a hand-written backward),
    /// `Composed` the plain Candle ops (its reference twin), `Fused` the op or an error.
    pub fn with_loss_implementation(mut self, implementation: Implementation) -> Self {
        self.loss_implementation = implementation;
        self
    }

    /// The configuration.
    pub fn config(&self) -> &GeneratorConfig {
        &self.cfg
    }

    /// The recurrent layer.
    pub fn rnn(&self) -> &Rnn {
        &self.rnn
    }

    /// Checks `context` and encodes it to `c (B, context_dim)`; returns `c` and `B`.
    fn encode_context(&self, context: &Tensor) -> Result<(Tensor, usize)> {
        match (&self.context, self.cfg.context) {
            (ContextEncoder::Class(emb), ContextKind::Class { num_classes }) => {
                if context.dtype() != DType::U32 {
                    return Err(invalid(
                        MODEL,
                        format!(
                            "`context` must hold u32 class ids of shape (batch,), got dtype {:?} shape {:?}",
                            context.dtype(),
                            context.dims()
                        ),
                    ));
                }
                let batch = match context.dims() {
                    &[b] if b > 0 => b,
                    d => {
                        return Err(invalid(
                            MODEL,
                            format!("`context` must be class ids of shape (batch,) with batch > 0, got {d:?}"),
                        ))
                    }
                };
                let max = if value_checks_on(context.device()) {
                    context.max_all()?.to_scalar::<u32>()?
                } else {
                    0
                };
                if max as usize >= num_classes {
                    return Err(invalid(
                        MODEL,
                        format!("`context` holds class id {max}, but num_classes = {num_classes}"),
                    ));
                }
                Ok((emb.forward(context)?, batch))
            }
            (ContextEncoder::Features(proj), ContextKind::Features { size }) => {
                if !context.dtype().is_float() {
                    return Err(invalid(
                        MODEL,
                        format!(
                            "`context` must be float features of shape (batch, {size}), got dtype {:?}",
                            context.dtype()
                        ),
                    ));
                }
                let batch = match context.dims() {
                    &[b, f] if b > 0 && f == size => b,
                    d => {
                        return Err(invalid(
                            MODEL,
                            format!(
                            "`context` must have shape (batch, {size}) with batch > 0, got {d:?}"
                        ),
                        ))
                    }
                };
                let context = context.to_dtype(self.dtype)?;
                Ok((proj.forward(&context)?, batch))
            }
            _ => Err(invalid(MODEL, "context encoder does not match the config")),
        }
    }

    /// The initial recurrent state from `c`, or `None` (zeros) without initial-state conditioning.
    fn initial_state(&self, c: &Tensor) -> Result<Option<RnnState>> {
        let Some(init_h) = &self.init_h else {
            return Ok(None);
        };
        let batch = c.dim(0)?;
        let (layers, hidden) = (self.cfg.num_layers, self.cfg.hidden_size);
        // (B, L*H) -> (B, L, H) -> (L, B, H)
        let lift = |lin: &Linear| -> Result<Tensor> {
            tanh(&lin.forward(c)?)?
                .reshape((batch, layers, hidden))?
                .transpose(0, 1)?
                .contiguous()
        };
        let h = lift(init_h)?;
        let cell = self.init_c.as_ref().map(lift).transpose()?;
        Ok(Some(RnnState::new(h, cell)))
    }

    /// Step inputs: embeddings of `ids` (any shape `S`) with `c` appended under every-step
    /// conditioning: `(S.., input)`.
    fn step_inputs(&self, ids: &Tensor, c: &Tensor, train: bool) -> Result<Tensor> {
        let emb = self.dropout.forward(&self.embedding.forward(ids)?, train)?;
        if !self.cfg.conditioning.every_step() {
            return Ok(emb);
        }
        let c = match emb.rank() {
            2 => c.clone(),
            3 => c
                .unsqueeze(1)?
                .broadcast_as((c.dim(0)?, emb.dim(1)?, c.dim(1)?))?
                .contiguous()?,
            r => return Err(invalid(MODEL, format!("internal: inputs of rank {r}"))),
        };
        Tensor::cat(&[&emb, &c], D::Minus1)
    }

    /// Checks token ids: shape, batch, range at valid positions. Returns `(B, T)` and the ids with
    /// padded positions replaced by 0, so padding may hold any value.
    fn check_tokens(
        &self,
        name: &str,
        ids: &Tensor,
        batch: usize,
        lengths: Option<&[usize]>,
    ) -> Result<(Tensor, usize)> {
        let (b, t) = check_ids(MODEL, name, ids)?;
        if b != batch {
            return Err(invalid(
                MODEL,
                format!(
                    "`{name}` has batch {b} (shape {:?}) but `context` has batch {batch}",
                    ids.dims()
                ),
            ));
        }
        if let Some(lengths) = lengths {
            check_lengths(MODEL, lengths, b, t)?;
        }
        let ids = match lengths {
            Some(lengths) => {
                let mask = length_mask(Some(lengths), b, t, DType::U8, ids.device())?;
                mask.where_cond(ids, &ids.zeros_like()?)?
            }
            None => ids.clone(),
        };
        let max = if value_checks_on(ids.device()) {
            ids.max_all()?.to_scalar::<u32>()?
        } else {
            0
        };
        if max as usize >= self.cfg.vocab_size {
            return Err(invalid(
                MODEL,
                format!(
                    "`{name}` holds token id {max} at a valid position, but vocab_size = {}",
                    self.cfg.vocab_size
                ),
            ));
        }
        Ok((ids, t))
    }

    /// Teacher-forced forward.
    ///
    /// - `context`: `u32 (B,)` class ids or float `(B, F)` features, per [`GeneratorConfig::context`]
    /// - `tgt_in`: `u32 (B, T)` step inputs, `bos` first (`[bos, y_0, .., y_{T-2}]`)
    /// - `lengths`: valid steps per row (right-padded batch), each in `1..=T`; `None` = all `T`.
    ///   Padded positions of `tgt_in` may hold any value (they are never read).
    /// - `train`: turns dropout on.
    ///
    /// Logits (and stop logits) at padded positions are the heads applied to the RNN's zero
    /// output there: meaningless, and excluded from [`ConditionedGenerator::loss`].
    pub fn forward(
        &self,
        context: &Tensor,
        tgt_in: &Tensor,
        lengths: Option<&[usize]>,
        train: bool,
    ) -> Result<GeneratorOutput> {
        let (c, batch) = self.encode_context(context)?;
        let (ids, _) = self.check_tokens("tgt_in", tgt_in, batch, lengths)?;
        self.run(&c, &ids, lengths, train)
    }

    /// The teacher-forced pass on an encoded context and checked step inputs.
    fn run(
        &self,
        c: &Tensor,
        ids: &Tensor,
        lengths: Option<&[usize]>,
        train: bool,
    ) -> Result<GeneratorOutput> {
        let (ys, stop_logits, length_logits) = self.run_features(c, ids, lengths, train)?;
        Ok(GeneratorOutput {
            logits: self.output.forward(&ys)?,
            stop_logits,
            length_logits,
        })
    }

    /// [`ConditionedGenerator::run`] without the token output layer: its input `(B, T, H)`
    /// (after dropout), the stop logits and the length logits.
    #[allow(clippy::type_complexity)]
    fn run_features(
        &self,
        c: &Tensor,
        ids: &Tensor,
        lengths: Option<&[usize]>,
        train: bool,
    ) -> Result<(Tensor, Option<Tensor>, Option<Tensor>)> {
        let xs = self.step_inputs(ids, c, train)?;
        let state = self.initial_state(c)?;
        let (ys, _) = self.rnn.forward_t(&xs, state.as_ref(), lengths, train)?;
        let ys = self.dropout.forward(&ys, train)?;
        let stop_logits = self
            .stop
            .as_ref()
            .map(|s| s.forward(&ys)?.squeeze(D::Minus1))
            .transpose()?;
        let length_logits = self.length.as_ref().map(|l| l.forward(c)).transpose()?;
        Ok((ys, stop_logits, length_logits))
    }

    /// Training loss (rank 0): the mean token cross-entropy over valid positions **plus**, with
    /// [`StopStrategy::Bernoulli`], the mean binary cross-entropy of the stop unit over valid
    /// positions (target 1 at each row's last valid token, 0 before), or, with
    /// [`StopStrategy::PredictedLength`], the mean cross-entropy of the length head against each
    /// row's length (class `length - 1`). The two terms are summed with weight 1.
    ///
    /// - `targets`: `u32 (B, T)`, the tokens to generate; the step inputs are `targets` shifted
    ///   right behind `bos`. With [`StopStrategy::EndToken`] every row must end with `eos_id` at
    ///   its last valid position (an error otherwise); with the other strategies there is no eos
    ///   and the length is the number of content tokens.
    /// - `lengths`: valid tokens per row (`None` = all `T`); padding may hold any value.
    ///   With [`StopStrategy::PredictedLength`] each length must be `<= max_len`.
    pub fn loss(
        &self,
        context: &Tensor,
        targets: &Tensor,
        lengths: Option<&[usize]>,
        train: bool,
    ) -> Result<Tensor> {
        let (c, batch) = self.encode_context(context)?;
        let (targets, t) = self.check_tokens("targets", targets, batch, lengths)?;
        let all: Vec<usize>;
        let lens: &[usize] = match lengths {
            Some(l) => l,
            None => {
                all = vec![t; batch];
                &all
            }
        };
        if self.cfg.stop == StopStrategy::EndToken && value_checks_on(targets.device()) {
            let eos = self.cfg.eos_id.unwrap_or(0);
            let rows = targets.to_vec2::<u32>()?;
            if let Some((b, row)) = rows
                .iter()
                .enumerate()
                .find(|(b, row)| row[lens[*b] - 1] != eos)
            {
                return Err(invalid(
                    MODEL,
                    format!(
                        "with stop = end-token every row of `targets` must end with eos_id = {eos} at its last valid position; row {b} has {} at position {}",
                        row[lens[b] - 1],
                        lens[b] - 1
                    ),
                ));
            }
        }
        if let (StopStrategy::PredictedLength, Some(max_len)) = (self.cfg.stop, self.cfg.max_len) {
            if let Some((b, &l)) = lens.iter().enumerate().find(|(_, &l)| l > max_len) {
                return Err(invalid(
                    MODEL,
                    format!("`lengths[{b}]` = {l} exceeds max_len = {max_len}, the longest length the length head can predict"),
                ));
            }
        }
        let bos = Tensor::full(self.cfg.bos_id, (batch, 1), targets.device())?;
        let tgt_in = if t > 1 {
            Tensor::cat(&[&bos, &targets.narrow(1, 0, t - 1)?], 1)?
        } else {
            bos
        };
        let (ys, stop_logits, length_logits) = self.run_features(&c, &tgt_in, lengths, train)?;
        let mask = length_mask(lengths, batch, t, self.dtype, &self.device)?;
        // The output layer and the token loss in one op on the CPU (no (B, T, V) logits tensor).
        let token_loss = linear_cross_entropy_sum_with(
            &ys,
            self.output.weight(),
            self.output.bias(),
            &targets,
            Some(&mask),
            self.loss_implementation,
        )?
        .mean()?;
        match self.cfg.stop {
            StopStrategy::EndToken => Ok(token_loss),
            StopStrategy::Bernoulli => {
                let stop_logits =
                    stop_logits.ok_or_else(|| invalid(MODEL, "internal: no stop head"))?;
                // Only valid positions: gather them from the flattened (B*T,) logits.
                let mut index = Vec::new();
                let mut target = Vec::new();
                for (b, &l) in lens.iter().enumerate() {
                    for s in 0..l {
                        index.push((b * t + s) as u32);
                        target.push(if s + 1 == l { 1f32 } else { 0.0 });
                    }
                }
                let n = index.len();
                let index = Tensor::from_vec(index, n, &self.device)?;
                let target = Tensor::from_vec(target, n, &self.device)?.to_dtype(self.dtype)?;
                let valid = stop_logits.flatten_all()?.index_select(&index, 0)?;
                token_loss + binary_cross_entropy_with_logits(&valid, &target)?
            }
            StopStrategy::PredictedLength => {
                let length_logits =
                    length_logits.ok_or_else(|| invalid(MODEL, "internal: no length head"))?;
                let classes: Vec<u32> = lens.iter().map(|&l| (l - 1) as u32).collect();
                let classes = Tensor::from_vec(classes, batch, &self.device)?;
                token_loss + masked_cross_entropy(&length_logits, &classes, None)?
            }
        }
    }

    /// Generates one sequence per context row, batched: one recurrent step per token, carrying
    /// the state (the prefix is never recomputed). Tokens are chosen by a [`Sampler`] built from
    /// `sampling` and `seed` (greedy with [`SamplingConfig::greedy`]).
    ///
    /// Stopping, at most `max_len` tokens per sequence in every case:
    /// - [`StopStrategy::EndToken`]: a row ends when it produces `eos_id`; eos is not returned.
    /// - [`StopStrategy::Bernoulli`]: after each token the stop unit decides. Greedy configs stop
    ///   when `sigmoid(stop_logit) > 0.5`; otherwise the same seeded sampler draws from the two
    ///   outcomes `[continue, stop]` with logits `[0, stop_logit]`, i.e. stop with probability
    ///   `sigmoid(stop_logit / temperature)` (top-k / top-p apply to these two outcomes too, so
    ///   `temperature = 1` without filters samples the Bernoulli exactly).
    /// - [`StopStrategy::PredictedLength`]: the length is chosen once per row from the length
    ///   head by the same sampler (the argmax when greedy), then exactly that many tokens are
    ///   emitted (capped at `max_len`).
    ///
    /// Returns the token ids per row (bos and eos excluded). Runs without autograd tracking.
    pub fn generate(
        &self,
        context: &Tensor,
        sampling: &SamplingConfig,
        max_len: usize,
        seed: u64,
    ) -> Result<Vec<Vec<u32>>> {
        if max_len == 0 {
            return Err(invalid(MODEL, "generate: `max_len` must be >= 1, got 0"));
        }
        let mut sampler = Sampler::new(*sampling, seed)?;
        let (c, batch) = self.encode_context(context)?;
        let c = c.detach();
        let rnn = self.rnn.detached();
        let mut state = match self.initial_state(&c)? {
            Some(s) => s.detach(),
            None => rnn.zero_state(batch)?,
        };
        let target_len: Vec<usize> = match &self.length {
            Some(head) => sampler
                .sample(&head.forward(&c)?.detach())?
                .into_iter()
                .map(|k| (k as usize + 1).min(max_len))
                .collect(),
            None => vec![max_len; batch],
        };
        let eos = match self.cfg.stop {
            StopStrategy::EndToken => self.cfg.eos_id,
            _ => None,
        };
        let mut out: Vec<Vec<u32>> = vec![Vec::new(); batch];
        let mut done: Vec<bool> = target_len.iter().map(|&l| l == 0).collect();
        let mut tokens = vec![self.cfg.bos_id; batch];
        for _ in 0..max_len {
            if done.iter().all(|&d| d) {
                break;
            }
            let ids = Tensor::from_vec(tokens.clone(), batch, &self.device)?;
            let x = self.step_inputs(&ids, &c, false)?.detach();
            let (y, next) = rnn.step(&x, Some(&state))?;
            state = next;
            let logits = self.output.forward(&y)?.detach();
            tokens = sampler.sample(&logits)?;
            let stop_logits = match &self.stop {
                Some(head) => Some(
                    head.forward(&y)?
                        .detach()
                        .flatten_all()?
                        .to_dtype(DType::F64)?
                        .to_vec1::<f64>()?,
                ),
                None => None,
            };
            for b in 0..batch {
                if done[b] {
                    continue;
                }
                if Some(tokens[b]) == eos {
                    done[b] = true;
                    continue;
                }
                out[b].push(tokens[b]);
                if out[b].len() >= target_len[b] {
                    done[b] = true;
                } else if let Some(stop) = &stop_logits {
                    if sampler.sample_row(&[0.0, stop[b]])? == 1 {
                        done[b] = true;
                    }
                }
            }
        }
        Ok(out)
    }
}

impl Stochastic for ConditionedGenerator {
    /// Seeds the model's dropout with `seed` and the recurrent layer's with `seed + 1`.
    fn set_seed(&mut self, seed: u64) {
        self.dropout.set_seed(seed);
        self.rnn = self.rnn.set_dropout_seed(seed.wrapping_add(1));
    }

    /// `[model dropout calls, recurrent-layer dropout calls]`.
    fn rng_counters(&self) -> Vec<u64> {
        sources::counters(&self.dropout, &self.rnn)
    }

    fn set_rng_counters(&self, counters: &[u64]) -> Result<()> {
        sources::set_counters(MODEL, &self.dropout, &self.rnn, counters)
    }
}
