//! The [`LanguageModel`]: embedding -> stacked RNN -> decoder; loss, scoring, stateful
//! evaluation and generation.

use candle_core::{DType, Result, Tensor, D};
use candle_nn::{Init, Module, VarBuilder};
use rnn_core::linear::Linear;
use rnn_core::{Implementation, Mode, Rnn, RnnState};

use super::{GenerateConfig, LanguageModelConfig, MODEL};
use crate::common::{
    check_ids, check_lengths, invalid, length_mask, value_checks_on, SeededDropout, Stochastic,
};
use crate::loss::{linear_cross_entropy_sum_with, NllSum};
use crate::masks::EmbeddingDropout;
use crate::sampling::Sampler;
use crate::sources;

/// An embedding -> stacked unidirectional RNN -> linear decoder language model; see the
/// [module docs](super).
#[derive(Debug, Clone)]
pub struct LanguageModel {
    cfg: LanguageModelConfig,
    /// `(V, E)`.
    embedding: Tensor,
    rnn: Rnn,
    /// Weight `(V, H)` (the embedding tensor itself when tied) and bias `(V,)`.
    decoder: Linear,
    dropout: SeededDropout,
    /// Whole-word dropout on the embedding matrix (`masks.embedding_dropout`).
    embedding_dropout: EmbeddingDropout,
    /// How [`LanguageModel::loss`] computes the decoder and its cross-entropy.
    loss_implementation: Implementation,
}

impl LanguageModel {
    /// Builds the model, loading or creating every parameter through `vb` (see the module docs
    /// for names and [`LanguageModelConfig::init_range`] for the init). Fails on an invalid
    /// config (e.g. tying with `embedding_dim != hidden_size`) or a missing/misshapen tensor.
    pub fn new(cfg: &LanguageModelConfig, vb: VarBuilder) -> Result<Self> {
        cfg.validate()?;
        let (v, e, h) = (cfg.vocab_size, cfg.embedding_dim, cfg.hidden_size);
        let emb_init = match cfg.init_range {
            Some(r) => Init::Uniform { lo: -r, up: r },
            None => Init::Randn {
                mean: 0.0,
                stdev: 1.0,
            },
        };
        let embedding = vb
            .pp("embedding")
            .get_with_hints((v, e), "weight", emb_init)?;
        let rnn = Rnn::new(&cfg.rnn_config(), vb.pp("rnn"))?;
        let dvb = vb.pp("decoder");
        let bound = 1.0 / (h as f64).sqrt();
        let (w_init, b_init) = match cfg.init_range {
            Some(r) => (Init::Uniform { lo: -r, up: r }, Init::Const(0.0)),
            None => (
                Init::Uniform {
                    lo: -bound,
                    up: bound,
                },
                Init::Uniform {
                    lo: -bound,
                    up: bound,
                },
            ),
        };
        let weight = if cfg.tie_weights {
            embedding.clone()
        } else {
            dvb.get_with_hints((v, h), "weight", w_init)?
        };
        let bias = dvb.get_with_hints(v, "bias", b_init)?;
        Ok(Self {
            cfg: cfg.clone(),
            embedding,
            rnn,
            decoder: Linear::new(weight, Some(bias)),
            dropout: SeededDropout::new(cfg.dropout, 0)?,
            embedding_dropout: EmbeddingDropout::new(cfg.masks.embedding_dropout, 0)?,
            loss_implementation: Implementation::Auto,
        })
    }

    /// The same model with [`LanguageModel::loss`] computing the decoder and the cross-entropy
    /// as `implementation` says: `Auto` (default) the fused CPU op where it applies
    /// (`rnn_core::output`), `Composed` the plain Candle ops (the reference twin), `Fused` the op
    /// or an error. The recurrent layer's own choice is [`Rnn::with_implementation`].
    pub fn with_loss_implementation(mut self, implementation: Implementation) -> Self {
        self.loss_implementation = implementation;
        self
    }

    /// The configuration.
    pub fn config(&self) -> &LanguageModelConfig {
        &self.cfg
    }

    /// The recurrent layer.
    pub fn rnn(&self) -> &Rnn {
        &self.rnn
    }

    /// The embedding matrix `(V, E)` (also the decoder weight when tied).
    pub fn embedding_weight(&self) -> &Tensor {
        &self.embedding
    }

    /// The decoder weight `(V, H)`: the embedding tensor itself when tied.
    pub fn decoder_weight(&self) -> &Tensor {
        self.decoder.weight()
    }

    /// A zero state for `batch` sequences (`h (num_layers, batch, hidden)`, `c` for LSTM).
    pub fn zero_state(&self, batch: usize) -> Result<RnnState> {
        self.rnn.zero_state(batch)
    }

    /// The same model with every parameter cut from the autograd graph (sharing storage): for
    /// inference, where no gradient is wanted. Used by the evaluation and sampling methods.
    pub fn detached(&self) -> Self {
        let bias = self.decoder.bias().map(|b| b.detach());
        Self {
            cfg: self.cfg.clone(),
            embedding: self.embedding.detach(),
            rnn: self.rnn.detached(),
            decoder: Linear::new(self.decoder.weight().detach(), bias),
            dropout: self.dropout.clone(),
            embedding_dropout: self.embedding_dropout.clone(),
            loss_implementation: self.loss_implementation,
        }
    }

    /// Checks that every id is in the vocabulary (on the host); the error names the argument,
    /// the position (row and column when `width` gives the row length) and the id.
    fn check_vocab(&self, name: &str, ids: &[u32], width: Option<usize>) -> Result<()> {
        if let Some(pos) = ids
            .iter()
            .position(|&id| id as usize >= self.cfg.vocab_size)
        {
            let at = match width {
                Some(w) => format!("[{}, {}]", pos / w, pos % w),
                None => format!("[{pos}]"),
            };
            return Err(invalid(
                MODEL,
                format!(
                    "`{name}{at}` = {} is outside the vocabulary (vocab_size = {})",
                    ids[pos], self.cfg.vocab_size
                ),
            ));
        }
        Ok(())
    }

    /// Checks a `(B, T)` u32 id tensor, including every id against the vocabulary.
    fn check_id_tensor(&self, name: &str, ids: &Tensor) -> Result<(usize, usize)> {
        let (b, t) = check_ids(MODEL, name, ids)?;
        if value_checks_on(ids.device()) {
            let host = ids.flatten_all()?.to_vec1::<u32>()?;
            self.check_vocab(name, &host, Some(t))?;
        }
        Ok((b, t))
    }

    /// Checks a given state against batch size `batch`; the error names `state`.
    fn check_state(&self, state: &RnnState, batch: usize) -> Result<()> {
        let expected = [self.cfg.num_layers, batch, self.cfg.hidden_size];
        if state.h.dims() != expected {
            return Err(invalid(
                MODEL,
                format!(
                    "`state.h` must be (num_layers, batch, hidden_size) = {expected:?}, got {:?}",
                    state.h.dims()
                ),
            ));
        }
        match (&state.c, self.cfg.mode) {
            (Some(c), Mode::Lstm) if c.dims() != expected => Err(invalid(
                MODEL,
                format!(
                    "`state.c` must be (num_layers, batch, hidden_size) = {expected:?}, got {:?}",
                    c.dims()
                ),
            )),
            (Some(_), Mode::Lstm) => Ok(()),
            (None, Mode::Lstm) => Err(invalid(MODEL, "`state.c` is required for an LSTM")),
            (Some(_), mode) => Err(invalid(
                MODEL,
                format!("`state.c` is only for LSTM, got Some for {mode}"),
            )),
            (None, _) => Ok(()),
        }
    }

    /// Next-token logits for every position.
    ///
    /// # Shapes
    /// - `ids`: `(B, T)` u32, every id `< vocab_size` (checked on the host)
    /// - `state`: the state to start from (`None` = zeros), `h (num_layers, B, hidden_size)`;
    ///   pass the returned state (detached, for training) to continue a stream across windows
    /// - `lengths`: valid steps per row of a right-padded batch (each in `1..=T`); logits past a
    ///   row's length are meaningless and its returned state is taken at its last valid step
    /// - `train`: dropout on (seeded, see [`Stochastic`])
    /// - returns logits `(B, T, V)` and the final state
    pub fn forward(
        &self,
        ids: &Tensor,
        state: Option<&RnnState>,
        lengths: Option<&[usize]>,
        train: bool,
    ) -> Result<(Tensor, RnnState)> {
        self.forward_named("ids", ids, state, lengths, train)
    }

    /// The decoder's input `(B, T, hidden)` (after dropout) and the final state.
    fn hidden_named(
        &self,
        name: &str,
        ids: &Tensor,
        state: Option<&RnnState>,
        lengths: Option<&[usize]>,
        train: bool,
    ) -> Result<(Tensor, RnnState)> {
        let (b, t) = self.check_id_tensor(name, ids)?;
        if let Some(lengths) = lengths {
            check_lengths(MODEL, lengths, b, t)?;
        }
        if let Some(state) = state {
            self.check_state(state, b)?;
        }
        let emb = self
            .embedding_dropout
            .forward(&self.embedding, train)?
            .index_select(&ids.flatten_all()?, 0)?
            .reshape((b, t, self.cfg.embedding_dim))?;
        let emb = self.dropout.forward(&emb, train)?;
        let (out, state) = self.rnn.forward_t(&emb, state, lengths, train)?;
        Ok((self.dropout.forward(&out, train)?, state))
    }

    /// [`LanguageModel::forward`], with errors naming the id tensor `name`.
    fn forward_named(
        &self,
        name: &str,
        ids: &Tensor,
        state: Option<&RnnState>,
        lengths: Option<&[usize]>,
        train: bool,
    ) -> Result<(Tensor, RnnState)> {
        let (out, state) = self.hidden_named(name, ids, state, lengths, train)?;
        let (b, t, h) = out.dims3()?;
        // Flattened to (B * T, H): one GEMM, where a (B, T, H) input would make Candle's Linear
        // broadcast the weight into B products (and a (B, V, H) weight gradient).
        let logits = self.decoder.forward(&out.reshape((b * t, h))?)?;
        Ok((logits.reshape((b, t, self.cfg.vocab_size))?, state))
    }

    /// One step for a batch of tokens: logits `(B, V)` for the next token and the new state.
    ///
    /// # Shapes
    /// - `tokens`: `(B,)` u32; `state` as in [`LanguageModel::forward`] (`None` = zeros)
    /// - returns logits `(B, V)` and the new state. Eval mode (no dropout).
    ///
    /// In a hand-written inference loop that carries the state, call it on
    /// [`LanguageModel::detached`] (as `generate` does), the equivalent of `torch.no_grad()`:
    /// on a model whose parameters are trainable every step's graph stays reachable from the
    /// carried state (measured: about 0.5 MB per token at H = 128; `docs/MEMORY.md`).
    pub fn step(&self, tokens: &Tensor, state: Option<&RnnState>) -> Result<(Tensor, RnnState)> {
        if tokens.dtype() != DType::U32 || tokens.rank() != 1 || tokens.dim(0)? == 0 {
            return Err(invalid(
                MODEL,
                format!(
                    "`tokens` must be a non-empty (batch,) u32 tensor, got {:?} {:?}",
                    tokens.dtype(),
                    tokens.dims()
                ),
            ));
        }
        let b = tokens.dim(0)?;
        self.check_vocab("tokens", &tokens.to_vec1::<u32>()?, None)?;
        if let Some(state) = state {
            self.check_state(state, b)?;
        }
        let x = self.embedding.index_select(tokens, 0)?;
        let (y, state) = self.rnn.step(&x, state)?;
        Ok((self.decoder.forward(&y)?, state))
    }

    /// Summed next-token cross-entropy of `targets` given `inputs` over the valid positions
    /// (`t < lengths[b]`, every position when `None`), with the count; and the final state.
    /// [`NllSum::mean`] is the usual training loss, `exp(sum / count)` the perplexity.
    ///
    /// # Shapes
    /// - `inputs`, `targets`: `(B, T)` u32; targets at valid positions must be `< vocab_size`
    ///   (padded positions may hold anything)
    /// - `state`, `lengths`, `train`: as in [`LanguageModel::forward`]
    pub fn loss(
        &self,
        inputs: &Tensor,
        targets: &Tensor,
        state: Option<&RnnState>,
        lengths: Option<&[usize]>,
        train: bool,
    ) -> Result<(NllSum, RnnState)> {
        let (b, t) = check_ids(MODEL, "inputs", inputs)?;
        check_ids(MODEL, "targets", targets)?;
        if targets.dims() != inputs.dims() {
            return Err(invalid(
                MODEL,
                format!(
                    "`targets` has shape {:?} but `inputs` has shape {:?}; they must be equal",
                    targets.dims(),
                    inputs.dims()
                ),
            ));
        }
        if let Some(lengths) = lengths {
            check_lengths(MODEL, lengths, b, t)?;
        }
        // Read to the host only where that is free (the CPU): no round trip per step on GPUs.
        let host = if value_checks_on(targets.device()) {
            targets.to_vec2::<u32>()?
        } else {
            Vec::new()
        };
        for (row, ids) in host.iter().enumerate() {
            let len = lengths.map_or(t, |l| l[row]);
            if let Some(col) = ids[..len]
                .iter()
                .position(|&id| id as usize >= self.cfg.vocab_size)
            {
                return Err(invalid(
                    MODEL,
                    format!(
                        "`targets[{row}, {col}]` = {} is outside the vocabulary (vocab_size = {})",
                        ids[col], self.cfg.vocab_size
                    ),
                ));
            }
        }
        let (out, state) = self.hidden_named("inputs", inputs, state, lengths, train)?;
        let mask = match lengths {
            Some(l) => Some(length_mask(Some(l), b, t, out.dtype(), out.device())?),
            None => None,
        };
        // The decoder and the loss in one op on the CPU (no (B, T, V) logits tensor).
        let nll = linear_cross_entropy_sum_with(
            &out,
            self.decoder.weight(),
            self.decoder.bias(),
            targets,
            mask.as_ref(),
            self.loss_implementation,
        )?;
        Ok((nll, state))
    }

    /// `ln p(sequence)` in nats by the chain rule, in eval mode from a zero state.
    ///
    /// What is scored: with `bos_id` set, every token, `sum_t ln p(s_t | bos, s_0 .. s_{t-1})`;
    /// without it, every token but the first, which is only conditioned on:
    /// `sum_{t>=1} ln p(s_t | s_0 .. s_{t-1})` (so a one-token sequence scores 0). No `eos` is
    /// appended: include it in `sequence` to score the end of the sentence. An empty sequence
    /// is an error.
    pub fn log_prob(&self, sequence: &[u32]) -> Result<f64> {
        Ok(self.log_prob_batch(&[sequence])?[0])
    }

    /// [`LanguageModel::log_prob`] for several sequences of any lengths, in one padded batch.
    pub fn log_prob_batch<S: AsRef<[u32]>>(&self, sequences: &[S]) -> Result<Vec<f64>> {
        let mut pairs = Vec::with_capacity(sequences.len());
        for (i, seq) in sequences.iter().enumerate() {
            let seq = seq.as_ref();
            if seq.is_empty() {
                return Err(invalid(MODEL, format!("`sequences[{i}]` is empty")));
            }
            self.check_vocab(&format!("sequences[{i}]"), seq, None)?;
            let (inputs, targets) = match self.cfg.bos_id {
                Some(bos) => {
                    let mut inputs = vec![bos];
                    inputs.extend_from_slice(&seq[..seq.len() - 1]);
                    (inputs, seq.to_vec())
                }
                None => (seq[..seq.len() - 1].to_vec(), seq[1..].to_vec()),
            };
            pairs.push((inputs, targets));
        }
        let scored: Vec<usize> = (0..pairs.len())
            .filter(|&i| !pairs[i].0.is_empty())
            .collect();
        let mut out = vec![0.0; sequences.len()];
        if scored.is_empty() {
            return Ok(out);
        }
        let lengths: Vec<usize> = scored.iter().map(|&i| pairs[i].0.len()).collect();
        let t = *lengths.iter().max().unwrap_or(&1);
        let pad = self.cfg.pad_id.unwrap_or(0);
        let (mut inputs, mut targets) = (Vec::new(), Vec::new());
        for &i in &scored {
            let (x, y) = &pairs[i];
            inputs.extend(
                x.iter()
                    .copied()
                    .chain(std::iter::repeat_n(pad, t - x.len())),
            );
            targets.extend(
                y.iter()
                    .copied()
                    .chain(std::iter::repeat_n(pad, t - y.len())),
            );
        }
        let device = self.embedding.device();
        let b = scored.len();
        let inputs = Tensor::from_vec(inputs, (b, t), device)?;
        let targets = Tensor::from_vec(targets, (b, t, 1), device)?;
        let model = self.detached();
        let (logits, _) = model.forward(&inputs, None, Some(&lengths), false)?;
        // Half-precision models are scored in f32; f32 and f64 as they are.
        let logits = match logits.dtype() {
            DType::F32 | DType::F64 => logits,
            _ => logits.to_dtype(DType::F32)?,
        };
        let logp = candle_nn::ops::log_softmax(&logits, D::Minus1)?
            .gather(&targets, 2)?
            .squeeze(2)?
            .to_dtype(DType::F64)?
            .to_vec2::<f64>()?;
        for ((&i, row), &len) in scored.iter().zip(&logp).zip(&lengths) {
            out[i] = row[..len].iter().sum();
        }
        Ok(out)
    }

    /// Summed NLL (nats) and number of predicted tokens of a token stream, evaluated statefully
    /// as in Zaremba et al.: the stream is cut into `batch` parallel rows of `len / batch` tokens
    /// (the tail that does not divide is dropped), each row is read in windows of `window`
    /// steps, and the state is carried from one window to the next. Every token of a row but its
    /// first is predicted: `count = batch * (len / batch - 1)`. Eval mode.
    pub fn stream_nll(
        &self,
        token_stream: &[u32],
        batch: usize,
        window: usize,
    ) -> Result<(f64, usize)> {
        if batch == 0 || window == 0 {
            return Err(invalid(
                MODEL,
                format!("`batch` and `window` must be > 0, got batch={batch}, window={window}"),
            ));
        }
        let per_row = token_stream.len() / batch;
        if per_row < 2 {
            return Err(invalid(
                MODEL,
                format!(
                    "`token_stream` has {} tokens: too few for batch={batch} rows of at least 2 tokens",
                    token_stream.len()
                ),
            ));
        }
        self.check_vocab("token_stream", token_stream, None)?;
        let rows: Vec<&[u32]> = token_stream.chunks_exact(per_row).take(batch).collect();
        let device = self.embedding.device();
        let model = self.detached();
        let n = per_row - 1;
        let (mut total, mut state) = (0f64, None);
        for start in (0..n).step_by(window) {
            let len = window.min(n - start);
            let mut inputs = Vec::with_capacity(batch * len);
            let mut targets = Vec::with_capacity(batch * len);
            for row in &rows {
                inputs.extend_from_slice(&row[start..start + len]);
                targets.extend_from_slice(&row[start + 1..start + len + 1]);
            }
            let inputs = Tensor::from_vec(inputs, (batch, len), device)?;
            let targets = Tensor::from_vec(targets, (batch, len), device)?;
            let (nll, next) = model.loss(&inputs, &targets, state.as_ref(), None, false)?;
            total += nll.sum.to_dtype(DType::F64)?.to_scalar::<f64>()?;
            state = Some(next);
        }
        Ok((total, batch * n))
    }

    /// `exp(total NLL / count)` of a token stream under stateful windowed evaluation (see
    /// [`LanguageModel::stream_nll`] for the batching and what is counted).
    pub fn perplexity(&self, token_stream: &[u32], batch: usize, window: usize) -> Result<f64> {
        let (nll, count) = self.stream_nll(token_stream, batch, window)?;
        Ok((nll / count as f64).exp())
    }

    /// Continues `prompt` with up to `cfg.max_len` tokens drawn with `cfg.sampling`, seeded by
    /// `seed`, and returns only the new tokens (ending with `eos` when it stopped there).
    ///
    /// The prompt is read once (one forward); then each new token is one [`LanguageModel::step`]
    /// carrying the state, without recomputing the prefix. An empty prompt starts from `bos_id`
    /// (an error when none is configured). `stop_at_eos` needs `eos_id`. Eval mode.
    pub fn generate(&self, prompt: &[u32], cfg: &GenerateConfig, seed: u64) -> Result<Vec<u32>> {
        cfg.validate()?;
        let eos = match (cfg.stop_at_eos, self.cfg.eos_id) {
            (true, None) => {
                return Err(invalid(
                    MODEL,
                    "generate: stop_at_eos needs the model's eos_id to be configured",
                ))
            }
            (true, Some(eos)) => Some(eos),
            (false, _) => None,
        };
        let prompt: Vec<u32> =
            if prompt.is_empty() {
                match self.cfg.bos_id {
                    Some(bos) => vec![bos],
                    None => return Err(invalid(
                        MODEL,
                        "generate: the prompt is empty and no bos_id is configured to start from",
                    )),
                }
            } else {
                prompt.to_vec()
            };
        self.check_vocab("prompt", &prompt, None)?;
        let mut sampler = Sampler::new(cfg.sampling, seed)?;
        let mut out = Vec::with_capacity(cfg.max_len);
        if cfg.max_len == 0 {
            return Ok(out);
        }
        let model = self.detached();
        let device = self.embedding.device();
        let p = prompt.len();
        let ids = Tensor::from_vec(prompt, (1, p), device)?;
        let (logits, mut state) = model.forward(&ids, None, None, false)?;
        let mut logits = logits.get(0)?.get(p - 1)?;
        loop {
            let token = sampler.sample(&logits)?[0];
            out.push(token);
            if out.len() >= cfg.max_len || eos == Some(token) {
                return Ok(out);
            }
            let (next, next_state) = model.step(&Tensor::new(&[token], device)?, Some(&state))?;
            logits = next.get(0)?;
            state = next_state;
        }
    }
}

/// The stream of [`rnn_core::seed::derive_seed`] that seeds the embedding dropout.
const EMBEDDING_DROPOUT_STREAM: u64 = 7;

impl Stochastic for LanguageModel {
    /// Seeds the embedding/output dropout with `seed` and the inter-layer dropout with a seed
    /// derived from it.
    fn set_seed(&mut self, seed: u64) {
        self.dropout.set_seed(seed);
        self.rnn = self
            .rnn
            .set_dropout_seed(seed ^ rnn_core::seed::GOLDEN_GAMMA);
        self.embedding_dropout
            .set_seed(rnn_core::seed::derive_seed(seed, EMBEDDING_DROPOUT_STREAM));
    }

    /// `[embedding/output dropout calls, recurrent-layer dropout and mask calls]`, then the
    /// embedding-dropout calls when `embedding_dropout > 0` (so checkpoints of models without it
    /// keep two counters).
    fn rng_counters(&self) -> Vec<u64> {
        let mut out = sources::counters(&self.dropout, &self.rnn);
        if self.embedding_dropout.p() > 0.0 {
            out.push(self.embedding_dropout.calls());
        }
        out
    }

    fn set_rng_counters(&self, counters: &[u64]) -> Result<()> {
        if self.embedding_dropout.p() > 0.0 {
            rnn_core::seed::check_counters(MODEL, counters, 3)?;
            self.embedding_dropout.set_calls(counters[2]);
            return sources::set_counters(MODEL, &self.dropout, &self.rnn, &counters[..2]);
        }
        sources::set_counters(MODEL, &self.dropout, &self.rnn, counters)
    }
}

/// `forward_t(ids, train)`: the logits `(B, T, V)` of [`LanguageModel::forward`] from a zero
/// state on unpadded ids (the final state is dropped), dropout on when `train`.
impl candle_nn::ModuleT for LanguageModel {
    fn forward_t(&self, ids: &Tensor, train: bool) -> Result<Tensor> {
        Ok(self.forward(ids, None, None, train)?.0)
    }
}
