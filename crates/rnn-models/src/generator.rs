//! One-to-many generation: a context (a class id or a feature vector) conditions a token
//! generator, [`ConditionedGenerator`], with three ways to decide where a sequence ends
//! ([`StopStrategy`]).
//!
//! ```text
//! context ──► context encoder ──► c (B, context_dim)
//!                                  │ InitialState: h0 (and c0) = tanh(Linear(c)) per layer
//!                                  │ EveryStep:    [embedding(y_{t-1}) ; c] is the step input
//! bos, y_0, y_1, ... ──► embedding ──► stacked Rnn ──► output head ──► logits over the vocabulary
//!                                                  └─► stop head (Bernoulli): P(stop after y_t)
//!                     c ──► length head (PredictedLength): length class 1..=max_len
//! ```
//!
//! Training uses teacher forcing over whole sequences ([`ConditionedGenerator::loss`]);
//! generation ([`ConditionedGenerator::generate`]) runs one step per token, carrying the
//! recurrent state (the prefix is never recomputed), for the whole batch at once.
//!
//! Parameter names: `context.embedding.weight` (class context) or `context.proj.{weight,bias}`
//! (feature context), `context.init_h.*` / `context.init_c.*` (initial-state conditioning; `init_c`
//! for LSTM), `embedding.weight`, `rnn.*` (PyTorch names, see [`rnn_core::Rnn`]), `output.*`,
//! `stop.*` (Bernoulli) and `length.*` (PredictedLength).

use std::fmt;
use std::str::FromStr;

use candle_core::{DType, Device, Result, Tensor, D};
use candle_nn::{Embedding, Linear, Module, VarBuilder};
use rnn_core::{Mode, Rnn, RnnConfig, RnnState};
use serde::{Deserialize, Serialize};

use crate::common::{
    check_counters, check_ids, check_lengths, invalid, length_mask, value_checks_on, SeededDropout,
    Stochastic,
};
use crate::loss::{binary_cross_entropy_with_logits, masked_cross_entropy};
use crate::sampling::{Sampler, SamplingConfig};

const MODEL: &str = "ConditionedGenerator";

/// Normalises a choice spelling for `FromStr`: lower case, `_` and spaces as `-`.
fn normalise(s: &str) -> String {
    s.trim().to_ascii_lowercase().replace(['_', ' '], "-")
}

/// How a generated sequence ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum StopStrategy {
    /// The vocabulary has an end-of-sequence id ([`GeneratorConfig::eos_id`]); generation stops
    /// when it is produced (it is not part of the returned sequence). Trained with cross-entropy
    /// whose targets end with eos.
    EndToken,
    /// An extra output unit per step: `sigmoid(stop_logit_t)` = P(the sequence ends after token
    /// `t`). Trained with binary cross-entropy against 1 at the last valid token and 0 before.
    Bernoulli,
    /// A head on the context predicts the length as a class in `1..=max_len`
    /// ([`GeneratorConfig::max_len`]); generation emits exactly that many tokens.
    PredictedLength,
}

impl StopStrategy {
    /// Every strategy, in a fixed order.
    pub const ALL: [StopStrategy; 3] = [
        StopStrategy::EndToken,
        StopStrategy::Bernoulli,
        StopStrategy::PredictedLength,
    ];

    /// The config / command-line spelling: `end-token`, `bernoulli`, `predicted-length`.
    pub fn as_str(self) -> &'static str {
        match self {
            StopStrategy::EndToken => "end-token",
            StopStrategy::Bernoulli => "bernoulli",
            StopStrategy::PredictedLength => "predicted-length",
        }
    }
}

impl fmt::Display for StopStrategy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for StopStrategy {
    type Err = candle_core::Error;

    /// Accepts `end-token` (or `eos`), `bernoulli`, `predicted-length` (or `length`), any case,
    /// with `-` or `_`.
    fn from_str(s: &str) -> Result<Self> {
        match normalise(s).as_str() {
            "end-token" | "eos" => Ok(StopStrategy::EndToken),
            "bernoulli" => Ok(StopStrategy::Bernoulli),
            "predicted-length" | "length" => Ok(StopStrategy::PredictedLength),
            _ => Err(candle_core::Error::Msg(format!(
                "unknown stop strategy '{s}': expected one of end-token, bernoulli, predicted-length"
            ))),
        }
    }
}

/// Where the context enters the recurrent network.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Conditioning {
    /// `tanh(Linear(c))` is the initial `h` (and `c` for LSTM) of every layer.
    InitialState,
    /// `c` is concatenated to the token embedding at every step.
    EveryStep,
    /// Both of the above (the default).
    #[default]
    Both,
}

impl Conditioning {
    /// Every choice, in a fixed order.
    pub const ALL: [Conditioning; 3] = [
        Conditioning::InitialState,
        Conditioning::EveryStep,
        Conditioning::Both,
    ];

    /// The config / command-line spelling: `initial-state`, `every-step`, `both`.
    pub fn as_str(self) -> &'static str {
        match self {
            Conditioning::InitialState => "initial-state",
            Conditioning::EveryStep => "every-step",
            Conditioning::Both => "both",
        }
    }

    /// Whether the context sets the initial state.
    pub fn initial_state(self) -> bool {
        matches!(self, Conditioning::InitialState | Conditioning::Both)
    }

    /// Whether the context is part of every step's input.
    pub fn every_step(self) -> bool {
        matches!(self, Conditioning::EveryStep | Conditioning::Both)
    }
}

impl fmt::Display for Conditioning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Conditioning {
    type Err = candle_core::Error;

    /// Accepts `initial-state` (or `init`), `every-step` (or `input`), `both`; any case, `-` or `_`.
    fn from_str(s: &str) -> Result<Self> {
        match normalise(s).as_str() {
            "initial-state" | "init" => Ok(Conditioning::InitialState),
            "every-step" | "input" => Ok(Conditioning::EveryStep),
            "both" => Ok(Conditioning::Both),
            _ => Err(candle_core::Error::Msg(format!(
                "unknown conditioning '{s}': expected one of initial-state, every-step, both"
            ))),
        }
    }
}

/// What the context given to the model is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ContextKind {
    /// A class id per sequence: `u32 (B,)` in `0..num_classes`, looked up in a learned embedding
    /// (`context.embedding.weight`, `(num_classes, context_dim)`).
    Class {
        /// Number of classes.
        num_classes: usize,
    },
    /// A feature vector per sequence: float `(B, size)`, projected to `context_dim` by
    /// `context.proj` (Linear).
    Features {
        /// Features per context vector.
        size: usize,
    },
}

fn default_layers() -> usize {
    1
}
fn default_mode() -> Mode {
    Mode::Lstm
}

/// Configuration of a [`ConditionedGenerator`].
///
/// ```
/// use rnn_models::generator::{ContextKind, GeneratorConfig, StopStrategy};
/// let cfg = GeneratorConfig::new(12, ContextKind::Class { num_classes: 3 }, StopStrategy::EndToken)
///     .with_eos_id(1);
/// cfg.validate()?;
/// # Ok::<(), candle_core::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GeneratorConfig {
    /// Vocabulary size `V` (including bos and, for [`StopStrategy::EndToken`], eos).
    pub vocab_size: usize,
    /// Token embedding size.
    pub embedding_dim: usize,
    /// Hidden size of every recurrent layer.
    pub hidden_size: usize,
    /// Stacked recurrent layers. Default 1.
    #[serde(default = "default_layers")]
    pub num_layers: usize,
    /// Cell kind. Default LSTM.
    #[serde(default = "default_mode")]
    pub mode: Mode,
    /// Dropout on the token embeddings, between recurrent layers and before the heads, in
    /// training only. Default 0.
    #[serde(default)]
    pub dropout: f64,
    /// What the context is (class id or feature vector).
    pub context: ContextKind,
    /// Size of the encoded context vector `c`.
    pub context_dim: usize,
    /// Where the context enters. Default [`Conditioning::Both`].
    #[serde(default)]
    pub conditioning: Conditioning,
    /// How sequences end.
    pub stop: StopStrategy,
    /// The start token fed at the first step (its embedding is learned like any token's).
    #[serde(default)]
    pub bos_id: u32,
    /// End-of-sequence id; required by [`StopStrategy::EndToken`], ignored otherwise.
    #[serde(default)]
    pub eos_id: Option<u32>,
    /// Longest sequence (in tokens) the length head can predict; required by
    /// [`StopStrategy::PredictedLength`] (the head has `max_len` classes: lengths `1..=max_len`),
    /// ignored otherwise.
    #[serde(default)]
    pub max_len: Option<usize>,
}

impl GeneratorConfig {
    /// A configuration with embedding 32, hidden 64, 1 LSTM layer, no dropout, context size 16,
    /// [`Conditioning::Both`], bos id 0, and no eos / max_len (set them with the `with_*`
    /// setters when `stop` needs them).
    pub fn new(vocab_size: usize, context: ContextKind, stop: StopStrategy) -> Self {
        Self {
            vocab_size,
            embedding_dim: 32,
            hidden_size: 64,
            num_layers: 1,
            mode: Mode::Lstm,
            dropout: 0.0,
            context,
            context_dim: 16,
            conditioning: Conditioning::Both,
            stop,
            bos_id: 0,
            eos_id: None,
            max_len: None,
        }
    }

    /// Sets `embedding_dim`.
    pub fn with_embedding_dim(mut self, embedding_dim: usize) -> Self {
        self.embedding_dim = embedding_dim;
        self
    }

    /// Sets `hidden_size`.
    pub fn with_hidden_size(mut self, hidden_size: usize) -> Self {
        self.hidden_size = hidden_size;
        self
    }

    /// Sets `num_layers`.
    pub fn with_num_layers(mut self, num_layers: usize) -> Self {
        self.num_layers = num_layers;
        self
    }

    /// Sets `mode`.
    pub fn with_mode(mut self, mode: Mode) -> Self {
        self.mode = mode;
        self
    }

    /// Sets `dropout`.
    pub fn with_dropout(mut self, dropout: f64) -> Self {
        self.dropout = dropout;
        self
    }

    /// Sets `context_dim`.
    pub fn with_context_dim(mut self, context_dim: usize) -> Self {
        self.context_dim = context_dim;
        self
    }

    /// Sets `conditioning`.
    pub fn with_conditioning(mut self, conditioning: Conditioning) -> Self {
        self.conditioning = conditioning;
        self
    }

    /// Sets `bos_id`.
    pub fn with_bos_id(mut self, bos_id: u32) -> Self {
        self.bos_id = bos_id;
        self
    }

    /// Sets `eos_id`.
    pub fn with_eos_id(mut self, eos_id: u32) -> Self {
        self.eos_id = Some(eos_id);
        self
    }

    /// Sets `max_len`.
    pub fn with_max_len(mut self, max_len: usize) -> Self {
        self.max_len = Some(max_len);
        self
    }

    /// Input features of the first recurrent layer.
    pub fn rnn_input_size(&self) -> usize {
        if self.conditioning.every_step() {
            self.embedding_dim + self.context_dim
        } else {
            self.embedding_dim
        }
    }

    /// The recurrent layer's configuration.
    pub fn rnn_config(&self) -> RnnConfig {
        RnnConfig::new(self.mode, self.rnn_input_size(), self.hidden_size)
            .with_num_layers(self.num_layers)
            .with_dropout(self.dropout)
    }

    /// Checks every field; the error names the field and the value at fault.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(invalid("GeneratorConfig", m));
        for (name, v) in [
            ("vocab_size", self.vocab_size),
            ("embedding_dim", self.embedding_dim),
            ("hidden_size", self.hidden_size),
            ("num_layers", self.num_layers),
            ("context_dim", self.context_dim),
        ] {
            if v == 0 {
                return bad(format!("{name} must be > 0, got 0"));
            }
        }
        if !(0.0..1.0).contains(&self.dropout) {
            return bad(format!("dropout must be in [0, 1), got {}", self.dropout));
        }
        match self.context {
            ContextKind::Class { num_classes: 0 } => {
                return bad("context.num_classes must be > 0, got 0".into())
            }
            ContextKind::Features { size: 0 } => {
                return bad("context.size must be > 0, got 0".into())
            }
            _ => {}
        }
        if self.bos_id as usize >= self.vocab_size {
            return bad(format!(
                "bos_id = {} must be < vocab_size = {}",
                self.bos_id, self.vocab_size
            ));
        }
        match self.stop {
            StopStrategy::EndToken => match self.eos_id {
                None => {
                    return bad("stop = end-token needs eos_id (the end-of-sequence token)".into())
                }
                Some(eos) if eos as usize >= self.vocab_size => {
                    return bad(format!(
                        "eos_id = {eos} must be < vocab_size = {}",
                        self.vocab_size
                    ))
                }
                Some(_) => {}
            },
            StopStrategy::PredictedLength => match self.max_len {
                None | Some(0) => {
                    return bad(format!(
                    "stop = predicted-length needs max_len >= 1 (the longest sequence), got {:?}",
                    self.max_len
                ))
                }
                Some(_) => {}
            },
            StopStrategy::Bernoulli => {}
        }
        Ok(())
    }
}

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

/// A context-conditioned token generator (one-to-many); see the [module docs](self).
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
/// let model = ConditionedGenerator::new(cfg, seeded_var_builder(&varmap, 0, DType::F32, &Device::Cpu))?;
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
}

impl ConditionedGenerator {
    /// Builds the model (validating `cfg`), creating or loading every parameter through `vb`.
    pub fn new(cfg: GeneratorConfig, vb: VarBuilder) -> Result<Self> {
        cfg.validate()?;
        let vc = vb.pp("context");
        let context = match cfg.context {
            ContextKind::Class { num_classes } => ContextEncoder::Class(candle_nn::embedding(
                num_classes,
                cfg.context_dim,
                vc.pp("embedding"),
            )?),
            ContextKind::Features { size } => {
                ContextEncoder::Features(candle_nn::linear(size, cfg.context_dim, vc.pp("proj"))?)
            }
        };
        let state_size = cfg.num_layers * cfg.hidden_size;
        let (init_h, init_c) = if cfg.conditioning.initial_state() {
            let h = candle_nn::linear(cfg.context_dim, state_size, vc.pp("init_h"))?;
            let c = if cfg.mode.has_cell_state() {
                Some(candle_nn::linear(
                    cfg.context_dim,
                    state_size,
                    vc.pp("init_c"),
                )?)
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
        let output = candle_nn::linear(cfg.hidden_size, cfg.vocab_size, vb.pp("output"))?;
        let stop = match cfg.stop {
            StopStrategy::Bernoulli => Some(candle_nn::linear(cfg.hidden_size, 1, vb.pp("stop"))?),
            _ => None,
        };
        let length = match (cfg.stop, cfg.max_len) {
            (StopStrategy::PredictedLength, Some(max_len)) => Some(candle_nn::linear(
                cfg.context_dim,
                max_len,
                vb.pp("length"),
            )?),
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
            cfg,
        })
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
            lin.forward(c)?
                .tanh()?
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
        let xs = self.step_inputs(ids, c, train)?;
        let state = self.initial_state(c)?;
        let (ys, _) = self.rnn.forward_t(&xs, state.as_ref(), lengths, train)?;
        let ys = self.dropout.forward(&ys, train)?;
        let logits = self.output.forward(&ys)?;
        let stop_logits = self
            .stop
            .as_ref()
            .map(|s| s.forward(&ys)?.squeeze(D::Minus1))
            .transpose()?;
        let length_logits = self.length.as_ref().map(|l| l.forward(c)).transpose()?;
        Ok(GeneratorOutput {
            logits,
            stop_logits,
            length_logits,
        })
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
        let out = self.run(&c, &tgt_in, lengths, train)?;
        let mask = length_mask(lengths, batch, t, self.dtype, &self.device)?;
        let token_loss = masked_cross_entropy(&out.logits, &targets, Some(&mask))?;
        match self.cfg.stop {
            StopStrategy::EndToken => Ok(token_loss),
            StopStrategy::Bernoulli => {
                let stop_logits = out
                    .stop_logits
                    .ok_or_else(|| invalid(MODEL, "internal: no stop head"))?;
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
                let length_logits = out
                    .length_logits
                    .ok_or_else(|| invalid(MODEL, "internal: no length head"))?;
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
        vec![self.dropout.calls(), self.rnn.dropout_calls()]
    }

    fn set_rng_counters(&self, counters: &[u64]) -> Result<()> {
        check_counters(MODEL, counters, 2)?;
        self.dropout.set_calls(counters[0]);
        self.rnn.set_dropout_calls(counters[1]);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_nn::{AdamW, Optimizer, ParamsAdamW, VarMap};
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;
    use rnn_core::init::seeded_var_builder;

    const BOS: u32 = 0;
    const EOS: u32 = 1;
    const VOCAB: usize = 8;
    const MAX_LEN: usize = 8;
    const CLASS: ContextKind = ContextKind::Class { num_classes: 3 };
    const FEATURES: ContextKind = ContextKind::Features { size: 3 };

    fn config(
        stop: StopStrategy,
        context: ContextKind,
        conditioning: Conditioning,
        mode: Mode,
    ) -> GeneratorConfig {
        GeneratorConfig::new(VOCAB, context, stop)
            .with_bos_id(BOS)
            .with_eos_id(EOS)
            .with_max_len(MAX_LEN)
            .with_embedding_dim(8)
            .with_hidden_size(16)
            .with_context_dim(6)
            .with_conditioning(conditioning)
            .with_mode(mode)
    }

    fn build(cfg: GeneratorConfig, seed: u64) -> (VarMap, ConditionedGenerator) {
        let varmap = VarMap::new();
        let vb = seeded_var_builder(&varmap, seed, DType::F32, &Device::Cpu);
        let model = ConditionedGenerator::new(cfg, vb).unwrap();
        (varmap, model)
    }

    /// Class ids, or (for a feature context) one-hot class vectors plus N(0, 0.1)-ish noise.
    fn context_for(kind: ContextKind, classes: &[u32], rng: &mut ChaCha8Rng) -> Tensor {
        match kind {
            ContextKind::Class { .. } => Tensor::new(classes, &Device::Cpu).unwrap(),
            ContextKind::Features { size } => {
                let mut v = vec![0f32; classes.len() * size];
                for (b, &c) in classes.iter().enumerate() {
                    for f in 0..size {
                        let noise = (rng.random::<f32>() - 0.5) * 0.3;
                        v[b * size + f] = if f == c as usize { 1.0 } else { 0.0 } + noise;
                    }
                }
                Tensor::from_vec(v, (classes.len(), size), &Device::Cpu).unwrap()
            }
        }
    }

    /// The task: class c has 3 + 2c tokens, alternating 2 + 2c and 3 + 2c.
    fn expected(class: u32) -> Vec<u32> {
        (0..3 + 2 * class).map(|t| 2 + 2 * class + t % 2).collect()
    }

    /// Targets (eos appended for end-token), right-padded with 0, and their lengths.
    fn task_batch(stop: StopStrategy, classes: &[u32]) -> (Tensor, Vec<usize>) {
        let mut rows: Vec<Vec<u32>> = classes.iter().map(|&c| expected(c)).collect();
        if stop == StopStrategy::EndToken {
            for r in &mut rows {
                r.push(EOS);
            }
        }
        let lengths: Vec<usize> = rows.iter().map(|r| r.len()).collect();
        let t = *lengths.iter().max().unwrap();
        let flat: Vec<u32> = rows
            .iter()
            .flat_map(|r| r.iter().copied().chain(std::iter::repeat(0)).take(t))
            .collect();
        let targets = Tensor::from_vec(flat, (classes.len(), t), &Device::Cpu).unwrap();
        (targets, lengths)
    }

    /// (fraction of greedy generations with the class's length, fraction exactly right).
    fn accuracy(model: &ConditionedGenerator, kind: ContextKind, seed: u64) -> (f64, f64) {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let classes: Vec<u32> = (0..60).map(|i| i % 3).collect();
        let ctx = context_for(kind, &classes, &mut rng);
        let seqs = model
            .generate(&ctx, &SamplingConfig::greedy(), 12, 0)
            .unwrap();
        let n = classes.len() as f64;
        let len_ok = seqs
            .iter()
            .zip(&classes)
            .filter(|(s, &c)| s.len() == expected(c).len())
            .count() as f64;
        let exact = seqs
            .iter()
            .zip(&classes)
            .filter(|(s, &c)| **s == expected(c))
            .count() as f64;
        (len_ok / n, exact / n)
    }

    fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
        (a - b)
            .unwrap()
            .abs()
            .unwrap()
            .flatten_all()
            .unwrap()
            .max(0)
            .unwrap()
            .to_scalar::<f32>()
            .unwrap()
    }

    #[test]
    fn shapes_gradients_and_generation_for_every_option() {
        let mut rng = ChaCha8Rng::seed_from_u64(0);
        let mut n = 0;
        for mode in Mode::ALL {
            for conditioning in Conditioning::ALL {
                for stop in StopStrategy::ALL {
                    n += 1;
                    let kind = if n % 2 == 0 { CLASS } else { FEATURES };
                    let cfg = config(stop, kind, conditioning, mode).with_num_layers(1 + n % 2);
                    let (varmap, model) = build(cfg, n as u64);
                    let classes = [0u32, 2, 1];
                    let ctx = context_for(kind, &classes, &mut rng);
                    let (targets, lengths) = task_batch(stop, &classes);
                    let t = targets.dim(1).unwrap();
                    let out = model.forward(&ctx, &targets, Some(&lengths), true).unwrap();
                    let what = format!("{mode} {conditioning} {stop}");
                    assert_eq!(out.logits.dims(), &[3, t, VOCAB], "{what}");
                    assert_eq!(
                        out.stop_logits.as_ref().map(|s| s.dims().to_vec()),
                        (stop == StopStrategy::Bernoulli).then(|| vec![3, t]),
                        "{what}"
                    );
                    assert_eq!(
                        out.length_logits.as_ref().map(|s| s.dims().to_vec()),
                        (stop == StopStrategy::PredictedLength).then(|| vec![3, MAX_LEN]),
                        "{what}"
                    );
                    let loss = model.loss(&ctx, &targets, Some(&lengths), true).unwrap();
                    assert_eq!(loss.rank(), 0);
                    assert!(loss.to_scalar::<f32>().unwrap().is_finite(), "{what}");
                    let grads = loss.backward().unwrap();
                    for (name, var) in varmap.data().lock().unwrap().iter() {
                        assert!(grads.get(var.as_tensor()).is_some(), "{what}: {name}");
                    }
                    let seqs = model
                        .generate(&ctx, &SamplingConfig::greedy(), 6, 0)
                        .unwrap();
                    assert_eq!(seqs.len(), 3);
                    assert!(seqs.iter().all(|s| s.len() <= 6), "{what}");
                    assert!(seqs.iter().flatten().all(|&tok| (tok as usize) < VOCAB));
                    // Sampling is reproducible from its seed.
                    let sampling = SamplingConfig::with_temperature(1.0);
                    let a = model.generate(&ctx, &sampling, 6, 9).unwrap();
                    let b = model.generate(&ctx, &sampling, 6, 9).unwrap();
                    assert_eq!(a, b, "{what}");
                    if stop == StopStrategy::EndToken {
                        assert!(a.iter().flatten().all(|&tok| tok != EOS));
                    }
                }
            }
        }
        // Parameter names.
        let (varmap, _) = build(
            config(
                StopStrategy::Bernoulli,
                FEATURES,
                Conditioning::Both,
                Mode::Lstm,
            ),
            0,
        );
        let mut names: Vec<String> = varmap.data().lock().unwrap().keys().cloned().collect();
        names.sort();
        assert_eq!(
            names,
            [
                "context.init_c.bias",
                "context.init_c.weight",
                "context.init_h.bias",
                "context.init_h.weight",
                "context.proj.bias",
                "context.proj.weight",
                "embedding.weight",
                "output.bias",
                "output.weight",
                "rnn.bias_hh_l0",
                "rnn.bias_ih_l0",
                "rnn.weight_hh_l0",
                "rnn.weight_ih_l0",
                "stop.bias",
                "stop.weight",
            ]
        );
        let (varmap, _) = build(
            config(
                StopStrategy::PredictedLength,
                CLASS,
                Conditioning::EveryStep,
                Mode::Gru,
            ),
            0,
        );
        let names = varmap
            .data()
            .lock()
            .unwrap()
            .keys()
            .cloned()
            .collect::<Vec<_>>();
        assert!(names.contains(&"context.embedding.weight".to_string()));
        assert!(names.contains(&"length.weight".to_string()));
        assert!(!names.iter().any(|n| n.starts_with("context.init")));
    }

    #[test]
    fn generation_agrees_with_teacher_forcing() {
        // Greedy generation step by step, fed back through the teacher-forced forward, gives the
        // same choices: the carried state and the conditioning match the training path.
        let mut rng = ChaCha8Rng::seed_from_u64(2);
        for stop in StopStrategy::ALL {
            for conditioning in Conditioning::ALL {
                let what = format!("{stop} {conditioning}");
                let cfg = config(stop, FEATURES, conditioning, Mode::Lstm).with_num_layers(2);
                let (_, model) = build(cfg, 8);
                let ctx = context_for(FEATURES, &[0, 1, 2, 0, 1, 2], &mut rng);
                let max_len = 6;
                let seqs = model
                    .generate(&ctx, &SamplingConfig::greedy(), max_len, 0)
                    .unwrap();
                let out = model
                    .forward(
                        &ctx,
                        &Tensor::full(BOS, (6, 1), &Device::Cpu).unwrap(),
                        None,
                        false,
                    )
                    .unwrap();
                if let Some(ll) = &out.length_logits {
                    let predicted = crate::sampling::argmax_rows(ll).unwrap();
                    for (s, k) in seqs.iter().zip(predicted) {
                        assert_eq!(s.len(), (k as usize + 1).min(max_len), "{what}");
                    }
                }
                // Inputs: bos then the generated tokens (eos included for end-token).
                let mut rows = Vec::new();
                let mut lengths = Vec::new();
                for s in &seqs {
                    let mut row = vec![BOS];
                    row.extend_from_slice(s);
                    lengths.push(row.len().min(max_len));
                    row.resize(max_len + 1, 0);
                    rows.push(row[..max_len].to_vec());
                }
                let tgt_in = Tensor::new(rows, &Device::Cpu).unwrap();
                let out = model.forward(&ctx, &tgt_in, Some(&lengths), false).unwrap();
                let logits = out.logits.to_vec3::<f32>().unwrap();
                for (b, s) in seqs.iter().enumerate() {
                    let mut expect = s.clone();
                    if stop == StopStrategy::EndToken && s.len() < max_len {
                        expect.push(EOS);
                    }
                    for (t, &tok) in expect.iter().enumerate().take(max_len) {
                        let row = Tensor::new(logits[b][t].as_slice(), &Device::Cpu).unwrap();
                        let arg = crate::sampling::argmax_rows(&row).unwrap()[0];
                        assert_eq!(arg, tok, "{what}: row {b} step {t}");
                    }
                    if let Some(sl) = &out.stop_logits {
                        let sl = sl.to_vec2::<f32>().unwrap();
                        for (t, &v) in sl[b].iter().enumerate().take(s.len().min(max_len - 1)) {
                            let last = t + 1 == s.len() && s.len() < max_len;
                            assert_eq!(v > 0.0, last, "{what}: row {b} step {t} stop logit {v}");
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn padding_changes_nothing() {
        for stop in StopStrategy::ALL {
            for conditioning in Conditioning::ALL {
                let cfg = config(stop, CLASS, conditioning, Mode::Lstm);
                let (_, model) = build(cfg, 3);
                let ctx = Tensor::new(&[0u32, 2], &Device::Cpu).unwrap();
                let (targets, lengths) = task_batch(stop, &[0, 2]);
                let t = targets.dim(1).unwrap();
                // Junk (even out-of-vocabulary ids) after row 0's length.
                let mut rows = targets.to_vec2::<u32>().unwrap();
                for (i, v) in rows[0].iter_mut().enumerate().skip(lengths[0]) {
                    *v = if i % 2 == 0 { 7 } else { 999 };
                }
                let junk = Tensor::new(rows, &Device::Cpu).unwrap();
                let a = model.loss(&ctx, &targets, Some(&lengths), false).unwrap();
                let b = model.loss(&ctx, &junk, Some(&lengths), false).unwrap();
                assert_eq!(
                    a.to_scalar::<f32>().unwrap(),
                    b.to_scalar::<f32>().unwrap(),
                    "{stop} {conditioning}"
                );
                let oa = model
                    .forward(&ctx, &targets, Some(&lengths), false)
                    .unwrap();
                let ob = model.forward(&ctx, &junk, Some(&lengths), false).unwrap();
                for (b, &l) in lengths.iter().enumerate() {
                    let va = oa.logits.get(b).unwrap().narrow(0, 0, l).unwrap();
                    let vb = ob.logits.get(b).unwrap().narrow(0, 0, l).unwrap();
                    assert_eq!(max_abs_diff(&va, &vb), 0.0);
                    if let (Some(sa), Some(sb)) = (&oa.stop_logits, &ob.stop_logits) {
                        let sa = sa.get(b).unwrap().narrow(0, 0, l).unwrap();
                        let sb = sb.get(b).unwrap().narrow(0, 0, l).unwrap();
                        assert_eq!(max_abs_diff(&sa, &sb), 0.0);
                    }
                }
                if let (Some(la), Some(lb)) = (&oa.length_logits, &ob.length_logits) {
                    assert_eq!(max_abs_diff(la, lb), 0.0);
                }
                assert!(t > lengths[0]);
            }
        }
    }

    /// Trains on the class/length task; returns the accuracy before and after.
    fn learn(
        stop: StopStrategy,
        kind: ContextKind,
        conditioning: Conditioning,
        mode: Mode,
        steps: usize,
    ) -> ((f64, f64), (f64, f64)) {
        let cfg = config(stop, kind, conditioning, mode)
            .with_hidden_size(32)
            .with_embedding_dim(8);
        let (varmap, model) = build(cfg, 11);
        let before = accuracy(&model, kind, 100);
        let mut opt = AdamW::new(
            varmap.all_vars(),
            ParamsAdamW {
                lr: 0.02,
                weight_decay: 0.0,
                ..Default::default()
            },
        )
        .unwrap();
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let classes: Vec<u32> = (0..12).map(|i| i % 3).collect();
        let (targets, lengths) = task_batch(stop, &classes);
        for _ in 0..steps {
            let ctx = context_for(kind, &classes, &mut rng);
            let loss = model.loss(&ctx, &targets, Some(&lengths), true).unwrap();
            opt.backward_step(&loss).unwrap();
        }
        let after = accuracy(&model, kind, 200);
        (before, after)
    }

    fn assert_learns(
        stop: StopStrategy,
        kind: ContextKind,
        conditioning: Conditioning,
        mode: Mode,
    ) {
        let (before, after) = learn(stop, kind, conditioning, mode, 150);
        eprintln!("{stop}: before {before:?}, after {after:?}");
        assert!(
            before.0 < 0.95,
            "{stop}: untrained model already right: {before:?}"
        );
        assert!(
            after.0 >= 0.95,
            "{stop}: lengths right in {:.0}%",
            after.0 * 100.0
        );
        assert!(
            after.1 >= 0.95,
            "{stop}: sequences right in {:.0}%",
            after.1 * 100.0
        );
    }

    #[test]
    fn learns_class_lengths_with_end_token() {
        assert_learns(
            StopStrategy::EndToken,
            CLASS,
            Conditioning::InitialState,
            Mode::Lstm,
        );
    }

    #[test]
    fn learns_class_lengths_with_bernoulli_stop() {
        assert_learns(
            StopStrategy::Bernoulli,
            FEATURES,
            Conditioning::EveryStep,
            Mode::Gru,
        );
    }

    #[test]
    fn learns_class_lengths_with_predicted_length() {
        assert_learns(
            StopStrategy::PredictedLength,
            FEATURES,
            Conditioning::Both,
            Mode::Lstm,
        );
    }

    #[test]
    fn save_load_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("generator.safetensors");
        for stop in StopStrategy::ALL {
            let cfg = config(stop, FEATURES, Conditioning::Both, Mode::Gru);
            let (varmap, a) = build(cfg.clone(), 1);
            varmap.save(&path).unwrap();
            let (mut varmap_b, b) = build(cfg, 2);
            let mut rng = ChaCha8Rng::seed_from_u64(4);
            let ctx = context_for(FEATURES, &[0, 1, 2], &mut rng);
            let (targets, lengths) = task_batch(stop, &[0, 1, 2]);
            let before = b.loss(&ctx, &targets, Some(&lengths), false).unwrap();
            varmap_b.load(&path).unwrap();
            let la = a.loss(&ctx, &targets, Some(&lengths), false).unwrap();
            let lb = b.loss(&ctx, &targets, Some(&lengths), false).unwrap();
            assert_ne!(
                before.to_scalar::<f32>().unwrap(),
                la.to_scalar::<f32>().unwrap()
            );
            assert_eq!(
                la.to_scalar::<f32>().unwrap(),
                lb.to_scalar::<f32>().unwrap()
            );
            let oa = a.forward(&ctx, &targets, None, false).unwrap();
            let ob = b.forward(&ctx, &targets, None, false).unwrap();
            assert_eq!(max_abs_diff(&oa.logits, &ob.logits), 0.0);
            let s = SamplingConfig::with_temperature(0.8);
            assert_eq!(
                a.generate(&ctx, &s, MAX_LEN, 3).unwrap(),
                b.generate(&ctx, &s, MAX_LEN, 3).unwrap()
            );
        }
    }

    #[test]
    fn dropout_is_seeded_and_resumable() {
        let cfg = config(
            StopStrategy::Bernoulli,
            CLASS,
            Conditioning::Both,
            Mode::Lstm,
        )
        .with_dropout(0.3)
        .with_num_layers(2);
        let (_, mut model) = build(cfg, 5);
        model.set_seed(42);
        let ctx = Tensor::new(&[0u32, 1, 2], &Device::Cpu).unwrap();
        let (targets, lengths) = task_batch(StopStrategy::Bernoulli, &[0, 1, 2]);
        let loss = |m: &ConditionedGenerator, train| {
            m.loss(&ctx, &targets, Some(&lengths), train)
                .unwrap()
                .to_scalar::<f32>()
                .unwrap()
        };
        let first = loss(&model, true);
        let counters = model.rng_counters();
        assert_eq!(counters.len(), 2);
        assert!(counters.iter().all(|&c| c > 0), "{counters:?}");
        let second = loss(&model, true);
        assert_ne!(first, second);
        model.set_rng_counters(&counters).unwrap();
        assert_eq!(loss(&model, true), second);
        // Eval draws nothing and is deterministic.
        assert_eq!(loss(&model, false), loss(&model, false));
        let err = model.set_rng_counters(&[1]).unwrap_err().to_string();
        assert!(
            err.contains("ConditionedGenerator") && err.contains("2"),
            "{err}"
        );
    }

    #[test]
    fn errors_name_the_argument() {
        let check = |r: Result<()>, needles: &[&str]| {
            let e = r.unwrap_err().to_string();
            for n in needles {
                assert!(e.contains(n), "expected {n:?} in: {e}");
            }
        };
        let base = config(
            StopStrategy::EndToken,
            CLASS,
            Conditioning::Both,
            Mode::Lstm,
        );
        let mut no_eos = base.clone();
        no_eos.eos_id = None;
        check(no_eos.validate(), &["eos_id"]);
        check(base.clone().with_eos_id(99).validate(), &["eos_id", "99"]);
        check(base.clone().with_bos_id(8).validate(), &["bos_id"]);
        check(base.clone().with_dropout(1.5).validate(), &["dropout"]);
        check(
            base.clone().with_hidden_size(0).validate(),
            &["hidden_size"],
        );
        let mut no_len = config(
            StopStrategy::PredictedLength,
            CLASS,
            Conditioning::Both,
            Mode::Lstm,
        );
        no_len.max_len = None;
        check(no_len.validate(), &["max_len"]);
        check(
            "maybe".parse::<StopStrategy>().map(|_| ()),
            &["maybe", "end-token", "bernoulli", "predicted-length"],
        );
        check(
            "x".parse::<Conditioning>().map(|_| ()),
            &["initial-state", "every-step", "both"],
        );
        assert_eq!(
            "END_TOKEN".parse::<StopStrategy>().unwrap(),
            StopStrategy::EndToken
        );
        for s in StopStrategy::ALL {
            assert_eq!(s.to_string().parse::<StopStrategy>().unwrap(), s);
            let json = serde_json::to_string(&s).unwrap();
            assert_eq!(json, format!("\"{s}\""));
        }
        let json = serde_json::to_string(&base).unwrap();
        assert_eq!(
            serde_json::from_str::<GeneratorConfig>(&json).unwrap(),
            base
        );

        let (_, model) = build(base, 0);
        let dev = Device::Cpu;
        let ctx = Tensor::new(&[0u32, 1], &dev).unwrap();
        let (targets, lengths) = task_batch(StopStrategy::EndToken, &[0, 1]);
        let fctx = Tensor::zeros((2, 3), DType::F32, &dev).unwrap();
        check(
            model.loss(&fctx, &targets, None, false).map(|_| ()),
            &["ConditionedGenerator", "`context`", "u32"],
        );
        let bad_class = Tensor::new(&[0u32, 3], &dev).unwrap();
        check(
            model.loss(&bad_class, &targets, None, false).map(|_| ()),
            &["`context`", "3", "num_classes"],
        );
        let one = Tensor::new(&[0u32], &dev).unwrap();
        check(
            model
                .loss(&one, &targets, Some(&lengths), false)
                .map(|_| ()),
            &["`targets`", "batch"],
        );
        check(
            model.loss(&ctx, &targets, Some(&[4]), false).map(|_| ()),
            &["lengths"],
        );
        check(
            model.loss(&ctx, &targets, Some(&[4, 9]), false).map(|_| ()),
            &["lengths[1]"],
        );
        // Row 0 has length 4 = 3 tokens + eos; claiming 3 cuts the eos off.
        check(
            model.loss(&ctx, &targets, Some(&[3, 6]), false).map(|_| ()),
            &["eos_id", "row 0"],
        );
        let f_targets = targets.to_dtype(DType::F32).unwrap();
        check(
            model.forward(&ctx, &f_targets, None, false).map(|_| ()),
            &["`tgt_in`", "u32"],
        );
        let big = Tensor::new(&[[2u32, 50]], &dev).unwrap();
        check(
            model.forward(&one, &big, None, false).map(|_| ()),
            &["`tgt_in`", "50", "vocab_size"],
        );
        check(
            model
                .generate(&ctx, &SamplingConfig::greedy(), 0, 0)
                .map(|_| ()),
            &["max_len"],
        );
        let bad_sampling = SamplingConfig::with_temperature(-1.0);
        check(
            model.generate(&ctx, &bad_sampling, 3, 0).map(|_| ()),
            &["temperature"],
        );

        let (_, fmodel) = build(
            config(
                StopStrategy::PredictedLength,
                FEATURES,
                Conditioning::Both,
                Mode::Gru,
            ),
            0,
        );
        check(
            fmodel.loss(&ctx, &targets, None, false).map(|_| ()),
            &["`context`", "(batch, 3)"],
        );
        let wide = Tensor::zeros((2, 4), DType::F32, &dev).unwrap();
        check(
            fmodel.loss(&wide, &targets, None, false).map(|_| ()),
            &["`context`", "[2, 4]"],
        );
        let long = Tensor::zeros((2, 9), DType::U32, &dev).unwrap();
        check(
            fmodel.loss(&fctx, &long, None, false).map(|_| ()),
            &["lengths[0]", "max_len"],
        );
    }
}
