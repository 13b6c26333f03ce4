//! Many-to-one sequence classification: [`SequenceClassifier`].
//!
//! `input -> embedding | projection -> Rnn -> pooling over valid steps -> MLP head -> logits`.
//!
//! - Input: token ids (`u32 (batch, seq)`, through an embedding) or numeric features
//!   (`(batch, seq, features)` of the model's float dtype, optionally through a linear projection),
//!   see [`Input`].
//! - Recurrence: any [`Mode`], stacked, optionally bidirectional, with inter-layer dropout.
//! - Pooling ([`Pooling`]) only ever looks at the valid steps of each sequence: the last state
//!   (PyTorch's `h_n` of the top layer, both directions), the mean, the element-wise max, or learned
//!   attention weights.
//!
//! Parameter names: `embedding.weight` (or `input_projection.weight` / `.bias`), `rnn.*` with
//! PyTorch's `RNNBase` names (`rnn.weight_ih_l0`, `rnn.weight_hh_l1_reverse`, ...),
//! `attention.w.weight`, `attention.w.bias`, `attention.v.weight` (attention pooling only) and
//! `head.layers.{i}.weight` / `.bias`.
//!
//! [`Input`] and [`InputEncoder`] are shared with [`crate::tagger`].
//!
//! ```
//! use candle_core::{DType, Device, Tensor};
//! use candle_nn::VarMap;
//! use rnn_models::classifier::{Input, Pooling, SequenceClassifier, SequenceClassifierConfig};
//! use rnn_models::rnn_core::{init::seeded_var_builder, Mode};
//!
//! let cfg = SequenceClassifierConfig::new(Input::tokens(10, 8), Mode::Gru, 16, 3)
//!     .with_pooling(Pooling::Attention)
//!     .with_bidirectional(true);
//! let varmap = VarMap::new();
//! let model = SequenceClassifier::new(&cfg, seeded_var_builder(&varmap, 0, DType::F32, &Device::Cpu))?;
//! let ids = Tensor::new(&[[1u32, 2, 3, 0], [4, 5, 0, 0]], &Device::Cpu)?;
//! let (logits, weights) = model.forward_with_weights(&ids, Some(&[4, 2]), false)?;
//! assert_eq!(logits.dims(), &[2, 3]);
//! assert_eq!(weights.unwrap().dims(), &[2, 4]); // attention weights, 0 at padding
//! # Ok::<(), candle_core::Error>(())
//! ```

use std::fmt;
use std::str::FromStr;

use candle_core::{DType, Device, Result, Tensor, D};
use candle_nn::{Embedding, Linear, Module, VarBuilder};
use rnn_core::{Mode, Rnn, RnnConfig, RnnState};
use serde::{Deserialize, Serialize};

use crate::common::{
    check_counters, check_ids, check_lengths, invalid, length_mask, value_checks_on, Activation,
    Mlp, SeededDropout, Stochastic,
};
use crate::loss::masked_cross_entropy;

const MODEL: &str = "SequenceClassifier";
const CONFIG: &str = "SequenceClassifierConfig";

/// What a sequence model reads at each step.
///
/// Serialised with a `kind` tag: `{"kind": "tokens", "vocab_size": 100, "embedding_dim": 32}` or
/// `{"kind": "features", "size": 6, "projection_dim": 16}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Input {
    /// Token ids `u32 (batch, seq)` looked up in an embedding table `embedding.weight
    /// (vocab_size, embedding_dim)` (initialised N(0, 1), as `torch.nn.Embedding`).
    Tokens {
        /// Number of distinct ids; every id at a valid step must be `< vocab_size`.
        vocab_size: usize,
        /// Features per token.
        embedding_dim: usize,
        /// An id whose embedding is forced to zeros (and so gets no gradient), as PyTorch's
        /// `padding_idx`. The stored row itself is left as initialised (PyTorch stores zeros), so
        /// the outputs equal PyTorch's whatever that row holds.
        #[serde(default)]
        padding_idx: Option<u32>,
    },
    /// Numeric features `(batch, seq, size)` of the model's float dtype.
    Features {
        /// Features per step.
        size: usize,
        /// With `Some(d)`, a linear layer `input_projection` maps the `size` features to `d`
        /// before the recurrence; with `None` the features go into the recurrence as they are.
        #[serde(default)]
        projection_dim: Option<usize>,
    },
}

impl Input {
    /// Token input without a padding id.
    pub fn tokens(vocab_size: usize, embedding_dim: usize) -> Self {
        Input::Tokens {
            vocab_size,
            embedding_dim,
            padding_idx: None,
        }
    }

    /// Token input whose id `padding_idx` embeds to zeros.
    pub fn tokens_with_padding(vocab_size: usize, embedding_dim: usize, padding_idx: u32) -> Self {
        Input::Tokens {
            vocab_size,
            embedding_dim,
            padding_idx: Some(padding_idx),
        }
    }

    /// Numeric input of `size` features per step, fed to the recurrence directly.
    pub fn features(size: usize) -> Self {
        Input::Features {
            size,
            projection_dim: None,
        }
    }

    /// Numeric input of `size` features per step, projected to `projection_dim` by a linear layer.
    pub fn projected_features(size: usize, projection_dim: usize) -> Self {
        Input::Features {
            size,
            projection_dim: Some(projection_dim),
        }
    }

    /// Features per step that reach the recurrence (its `input_size`).
    pub fn output_size(&self) -> usize {
        match *self {
            Input::Tokens { embedding_dim, .. } => embedding_dim,
            Input::Features {
                size,
                projection_dim,
            } => projection_dim.unwrap_or(size),
        }
    }

    /// Checks the sizes; errors start with `owner` (the config's name).
    pub fn validate(&self, owner: &str) -> Result<()> {
        match *self {
            Input::Tokens {
                vocab_size,
                embedding_dim,
                padding_idx,
            } => {
                if vocab_size == 0 {
                    return Err(invalid(owner, "input.vocab_size must be > 0"));
                }
                if embedding_dim == 0 {
                    return Err(invalid(owner, "input.embedding_dim must be > 0"));
                }
                if let Some(p) = padding_idx {
                    if p as usize >= vocab_size {
                        return Err(invalid(
                            owner,
                            format!(
                                "input.padding_idx = {p} must be < input.vocab_size = {vocab_size}"
                            ),
                        ));
                    }
                }
            }
            Input::Features {
                size,
                projection_dim,
            } => {
                if size == 0 {
                    return Err(invalid(owner, "input.size must be > 0"));
                }
                if projection_dim == Some(0) {
                    return Err(invalid(
                        owner,
                        "input.projection_dim must be > 0 (or absent for no projection)",
                    ));
                }
            }
        }
        Ok(())
    }
}

#[derive(Debug, Clone)]
enum EncoderKind {
    Tokens {
        embedding: Embedding,
        vocab_size: usize,
        padding_idx: Option<u32>,
    },
    Features {
        size: usize,
        projection: Option<Linear>,
    },
}

/// The input stage of a sequence model: embedding lookup for [`Input::Tokens`], optional
/// linear projection for [`Input::Features`], with argument checks.
///
/// Parameters: `embedding.weight`, or `input_projection.weight` / `input_projection.bias`.
#[derive(Debug, Clone)]
pub struct InputEncoder {
    kind: EncoderKind,
    dtype: DType,
    device: Device,
}

impl InputEncoder {
    /// Builds the stage for `input` (already validated) under `vb` (the model's root).
    pub fn new(input: &Input, vb: &VarBuilder) -> Result<Self> {
        let kind = match *input {
            Input::Tokens {
                vocab_size,
                embedding_dim,
                padding_idx,
            } => EncoderKind::Tokens {
                embedding: candle_nn::embedding(vocab_size, embedding_dim, vb.pp("embedding"))?,
                vocab_size,
                padding_idx,
            },
            Input::Features {
                size,
                projection_dim,
            } => EncoderKind::Features {
                size,
                projection: projection_dim
                    .map(|d| candle_nn::linear(size, d, vb.pp("input_projection")))
                    .transpose()?,
            },
        };
        Ok(Self {
            kind,
            dtype: vb.dtype(),
            device: vb.device().clone(),
        })
    }

    /// Checks the dtype, rank, feature size and device of `input`; returns `(batch, seq_len)`.
    /// Errors start with `model` and name the argument `input`.
    pub fn check(&self, model: &str, input: &Tensor) -> Result<(usize, usize)> {
        let (b, t) = match &self.kind {
            EncoderKind::Tokens { .. } => check_ids(model, "input", input)?,
            EncoderKind::Features { size, .. } => {
                if input.dtype() != self.dtype {
                    return Err(invalid(
                        model,
                        format!(
                            "`input` must hold features of the model's dtype {:?}, got dtype {:?} (shape {:?})",
                            self.dtype,
                            input.dtype(),
                            input.dims()
                        ),
                    ));
                }
                match *input.dims() {
                    [b, t, f] if b > 0 && t > 0 && f == *size => (b, t),
                    _ => {
                        return Err(invalid(
                            model,
                            format!(
                                "`input` must have shape (batch, seq, {size}) with batch, seq > 0, got {:?}",
                                input.dims()
                            ),
                        ))
                    }
                }
            }
        };
        if !input.device().same_device(&self.device) {
            return Err(invalid(
                model,
                format!(
                    "`input` is on {:?} but the model is on {:?}",
                    input.device().location(),
                    self.device.location()
                ),
            ));
        }
        Ok((b, t))
    }

    /// `(batch, seq_len, output_size)` step features of an `input` that passed
    /// [`InputEncoder::check`], with `lengths` already checked.
    ///
    /// Padded steps (`t >= lengths[b]`) never influence the result: their ids are replaced by the
    /// padding id (or 0) before the lookup, so they need not be valid ids, and their features are
    /// replaced by zeros before the projection, so they may even be NaN.
    ///
    /// Token ids at valid steps are checked against the vocabulary: one scalar reduction copied
    /// to the host per call (on every device); an id `>= vocab_size` is an error naming its
    /// position.
    pub fn forward(
        &self,
        model: &str,
        input: &Tensor,
        lengths: Option<&[usize]>,
    ) -> Result<Tensor> {
        match &self.kind {
            EncoderKind::Tokens {
                embedding,
                vocab_size,
                padding_idx,
            } => {
                let (b, t) = input.dims2()?;
                let ids = match lengths {
                    Some(lengths) => {
                        let valid = length_mask(Some(lengths), b, t, DType::U8, input.device())?;
                        let fill = Tensor::full(padding_idx.unwrap_or(0), (b, t), input.device())?;
                        valid.where_cond(input, &fill)?
                    }
                    None => input.clone(),
                };
                if value_checks_on(input.device()) {
                    let max = ids.max_all()?.to_scalar::<u32>()?;
                    if max as usize >= *vocab_size {
                        let rows = ids.to_vec2::<u32>()?;
                        let (bi, ti) = rows
                            .iter()
                            .enumerate()
                            .find_map(|(bi, row)| {
                                row.iter().position(|&v| v == max).map(|ti| (bi, ti))
                            })
                            .unwrap_or((0, 0));
                        return Err(invalid(
                            model,
                            format!(
                                "`input` holds token id {max} at [{bi}, {ti}] (shape {:?}), outside the vocabulary 0..{vocab_size}",
                                input.dims()
                            ),
                        ));
                    }
                }
                let xs = embedding.forward(&ids)?;
                match padding_idx {
                    Some(p) => {
                        let keep = ids.ne(*p)?.to_dtype(xs.dtype())?.unsqueeze(2)?;
                        xs.broadcast_mul(&keep)
                    }
                    None => Ok(xs),
                }
            }
            EncoderKind::Features { projection, .. } => {
                let xs = match lengths {
                    Some(lengths) => {
                        let (b, t, _) = input.dims3()?;
                        let valid = length_mask(Some(lengths), b, t, DType::U8, input.device())?
                            .unsqueeze(2)?
                            .broadcast_as(input.shape())?;
                        valid.where_cond(input, &input.zeros_like()?)?
                    }
                    None => input.clone(),
                };
                match projection {
                    Some(p) => p.forward(&xs),
                    None => Ok(xs),
                }
            }
        }
    }
}

/// How the classifier summarises the recurrent outputs of the valid steps into one vector.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Pooling {
    /// The top layer's final hidden state, PyTorch's `h_n`: the forward direction at the last
    /// valid step, concatenated with the backward direction at step 0 when bidirectional.
    #[default]
    Last,
    /// The mean of the outputs over the valid steps.
    Mean,
    /// The element-wise maximum of the outputs over the valid steps.
    Max,
    /// Learned attention: `alpha = softmax_t(v^T tanh(W h_t + b))` over the valid steps (exactly
    /// 0 at padding), pooled `sum_t alpha_t h_t`.
    Attention,
}

impl Pooling {
    /// Every pooling, in a fixed order.
    pub const ALL: [Pooling; 4] = [
        Pooling::Last,
        Pooling::Mean,
        Pooling::Max,
        Pooling::Attention,
    ];

    /// The config / command-line spelling: `last`, `mean`, `max`, `attention`.
    pub fn as_str(self) -> &'static str {
        match self {
            Pooling::Last => "last",
            Pooling::Mean => "mean",
            Pooling::Max => "max",
            Pooling::Attention => "attention",
        }
    }
}

impl fmt::Display for Pooling {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Pooling {
    type Err = candle_core::Error;

    /// Accepts `last`, `mean`, `max`, `attention` in any case (also `attn`, `avg`, `average`).
    fn from_str(s: &str) -> Result<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "last" => Ok(Pooling::Last),
            "mean" | "avg" | "average" => Ok(Pooling::Mean),
            "max" => Ok(Pooling::Max),
            "attention" | "attn" => Ok(Pooling::Attention),
            _ => Err(candle_core::Error::Msg(format!(
                "unknown pooling '{s}': expected one of last, mean, max, attention"
            ))),
        }
    }
}

fn one() -> usize {
    1
}

/// Configuration of a [`SequenceClassifier`]; serde-serialisable, with `with_*` setters.
///
/// Fields with a serde default may be left out of a config file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SequenceClassifierConfig {
    /// Token or feature input.
    pub input: Input,
    /// Recurrent cell.
    pub mode: Mode,
    /// Hidden size of the recurrence.
    pub hidden_size: usize,
    /// Stacked recurrent layers (default 1).
    #[serde(default = "one")]
    pub num_layers: usize,
    /// Whether the recurrence also runs backwards (default false).
    #[serde(default)]
    pub bidirectional: bool,
    /// Dropout between recurrent layers, training only (default 0).
    #[serde(default)]
    pub rnn_dropout: f64,
    /// LSTM output projection size, 0 = none (default 0; see [`RnnConfig::proj_size`]).
    #[serde(default)]
    pub proj_size: usize,
    /// Pooling over the valid steps (default [`Pooling::Last`]).
    #[serde(default)]
    pub pooling: Pooling,
    /// Hidden size of the attention scorer `W` (default: the recurrent output size).
    #[serde(default)]
    pub attention_size: Option<usize>,
    /// Hidden layer sizes of the MLP head (default none: one linear layer).
    #[serde(default)]
    pub head_hidden: Vec<usize>,
    /// Activation of the head's hidden layers (default tanh).
    #[serde(default)]
    pub head_activation: Activation,
    /// Number of classes (>= 2).
    pub num_classes: usize,
    /// Dropout on the step features (after the embedding / projection), training only.
    #[serde(default)]
    pub embedding_dropout: f64,
    /// Dropout on the pooled vector before the head, training only.
    #[serde(default)]
    pub output_dropout: f64,
}

impl SequenceClassifierConfig {
    /// A one-layer unidirectional classifier with last-state pooling, a linear head and no dropout.
    pub fn new(input: Input, mode: Mode, hidden_size: usize, num_classes: usize) -> Self {
        Self {
            input,
            mode,
            hidden_size,
            num_layers: 1,
            bidirectional: false,
            rnn_dropout: 0.0,
            proj_size: 0,
            pooling: Pooling::Last,
            attention_size: None,
            head_hidden: Vec::new(),
            head_activation: Activation::Tanh,
            num_classes,
            embedding_dropout: 0.0,
            output_dropout: 0.0,
        }
    }

    /// Sets `num_layers`.
    pub fn with_num_layers(mut self, num_layers: usize) -> Self {
        self.num_layers = num_layers;
        self
    }

    /// Sets `bidirectional`.
    pub fn with_bidirectional(mut self, bidirectional: bool) -> Self {
        self.bidirectional = bidirectional;
        self
    }

    /// Sets `rnn_dropout`.
    pub fn with_rnn_dropout(mut self, p: f64) -> Self {
        self.rnn_dropout = p;
        self
    }

    /// Sets `proj_size` (LSTM only).
    pub fn with_proj_size(mut self, proj_size: usize) -> Self {
        self.proj_size = proj_size;
        self
    }

    /// Sets `pooling`.
    pub fn with_pooling(mut self, pooling: Pooling) -> Self {
        self.pooling = pooling;
        self
    }

    /// Sets `attention_size`.
    pub fn with_attention_size(mut self, size: usize) -> Self {
        self.attention_size = Some(size);
        self
    }

    /// Sets the head's hidden layer sizes and activation.
    pub fn with_head(mut self, hidden: Vec<usize>, activation: Activation) -> Self {
        self.head_hidden = hidden;
        self.head_activation = activation;
        self
    }

    /// Sets `embedding_dropout`.
    pub fn with_embedding_dropout(mut self, p: f64) -> Self {
        self.embedding_dropout = p;
        self
    }

    /// Sets `output_dropout`.
    pub fn with_output_dropout(mut self, p: f64) -> Self {
        self.output_dropout = p;
        self
    }

    /// The recurrent layer's configuration (batch-first, `input_size` from [`Input::output_size`]).
    pub fn rnn_config(&self) -> RnnConfig {
        RnnConfig::new(self.mode, self.input.output_size(), self.hidden_size)
            .with_num_layers(self.num_layers)
            .with_bidirectional(self.bidirectional)
            .with_dropout(self.rnn_dropout)
            .with_proj_size(self.proj_size)
    }

    /// Size of the pooled vector the head reads: the recurrent output size.
    pub fn pooled_size(&self) -> usize {
        self.rnn_config().output_size()
    }

    /// Checks every field; the error names the field and the value at fault.
    pub fn validate(&self) -> Result<()> {
        self.input.validate(CONFIG)?;
        self.rnn_config()
            .validate()
            .map_err(|e| invalid(CONFIG, format!("recurrent layer: {e}")))?;
        if self.num_classes < 2 {
            return Err(invalid(
                CONFIG,
                format!("num_classes must be >= 2, got {}", self.num_classes),
            ));
        }
        if let Some(i) = self.head_hidden.iter().position(|&h| h == 0) {
            return Err(invalid(CONFIG, format!("head_hidden[{i}] must be > 0")));
        }
        if self.attention_size == Some(0) {
            return Err(invalid(CONFIG, "attention_size must be > 0 (or absent)"));
        }
        check_dropout(CONFIG, "embedding_dropout", self.embedding_dropout)?;
        check_dropout(CONFIG, "output_dropout", self.output_dropout)?;
        Ok(())
    }
}

/// Checks a dropout probability field.
pub(crate) fn check_dropout(owner: &str, field: &str, p: f64) -> Result<()> {
    if !(0.0..1.0).contains(&p) {
        return Err(invalid(
            owner,
            format!("{field} must be in [0, 1), got {p}"),
        ));
    }
    Ok(())
}

/// Derives the seed of random source `stream` from a model seed (SplitMix64 finaliser), so the
/// sources of one model draw unrelated masks.
pub(crate) fn derive_seed(seed: u64, stream: u64) -> u64 {
    let mut z = seed ^ stream.wrapping_add(1).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Checks `u32 (batch,)` class targets with every id `< classes` (one scalar copied to the host).
pub(crate) fn check_class_targets(
    model: &str,
    targets: &Tensor,
    batch: usize,
    classes: usize,
) -> Result<()> {
    if targets.dtype() != DType::U32 {
        return Err(invalid(
            model,
            format!(
                "`targets` must hold u32 class ids, got dtype {:?}",
                targets.dtype()
            ),
        ));
    }
    if targets.dims() != [batch] {
        return Err(invalid(
            model,
            format!(
                "`targets` must have shape ({batch},) (one class per sequence), got {:?}",
                targets.dims()
            ),
        ));
    }
    if !value_checks_on(targets.device()) {
        return Ok(());
    }
    let max = targets.max_all()?.to_scalar::<u32>()?;
    if max as usize >= classes {
        return Err(invalid(
            model,
            format!("`targets` holds class {max}, but there are {classes} classes"),
        ));
    }
    Ok(())
}

/// The attention scorer `score_t = v^T tanh(W h_t + b)`.
#[derive(Debug, Clone)]
struct AttentionScorer {
    w: Linear,
    v: Linear,
}

/// A many-to-one sequence classifier (see the [module docs](self)).
#[derive(Debug, Clone)]
pub struct SequenceClassifier {
    cfg: SequenceClassifierConfig,
    encoder: InputEncoder,
    embedding_dropout: SeededDropout,
    rnn: Rnn,
    attention: Option<AttentionScorer>,
    output_dropout: SeededDropout,
    head: Mlp,
}

impl SequenceClassifier {
    /// Builds the model, loading or creating every parameter under `vb` (names in the
    /// [module docs](self)). Fails on an invalid config or a missing / misshapen tensor.
    /// Random sources start as after [`Stochastic::set_seed`] with seed 0.
    pub fn new(cfg: &SequenceClassifierConfig, vb: VarBuilder) -> Result<Self> {
        cfg.validate()?;
        let encoder = InputEncoder::new(&cfg.input, &vb)?;
        let rnn_cfg = cfg.rnn_config();
        let rnn = Rnn::new(&rnn_cfg, vb.pp("rnn"))?;
        let pooled = rnn_cfg.output_size();
        let attention = if cfg.pooling == Pooling::Attention {
            let a = cfg.attention_size.unwrap_or(pooled);
            let vb = vb.pp("attention");
            Some(AttentionScorer {
                w: candle_nn::linear(pooled, a, vb.pp("w"))?,
                v: candle_nn::linear_no_bias(a, 1, vb.pp("v"))?,
            })
        } else {
            None
        };
        let head = Mlp::new(
            pooled,
            &cfg.head_hidden,
            cfg.num_classes,
            cfg.head_activation,
            vb.pp("head"),
        )?;
        let mut model = Self {
            cfg: cfg.clone(),
            encoder,
            embedding_dropout: SeededDropout::new(cfg.embedding_dropout, 0)?,
            rnn,
            attention,
            output_dropout: SeededDropout::new(cfg.output_dropout, 0)?,
            head,
        };
        model.set_seed(0);
        Ok(model)
    }

    /// The configuration.
    pub fn config(&self) -> &SequenceClassifierConfig {
        &self.cfg
    }

    /// The recurrent layer.
    pub fn rnn(&self) -> &Rnn {
        &self.rnn
    }

    /// Class logits `(batch, num_classes)`.
    ///
    /// # Arguments
    /// - `input`: token ids `u32 (batch, seq)` or features `(batch, seq, size)` (see [`Input`]),
    ///   right-padded.
    /// - `lengths`: valid steps per sequence, each in `1..=seq`; `None` = all `seq` steps valid.
    ///   Values at padded steps never influence the result.
    /// - `train`: turns dropout on.
    ///
    /// # Errors
    /// A [`candle_core::Error::Msg`] starting with `SequenceClassifier:` and naming the argument and its
    /// shape for: a wrong dtype, rank or feature size of `input`, an input on another device,
    /// `lengths` of the wrong count or outside `1..=seq`, a token id `>= vocab_size` at a valid
    /// step (checked with one scalar reduction copied to the host, on every device).
    pub fn forward(
        &self,
        input: &Tensor,
        lengths: Option<&[usize]>,
        train: bool,
    ) -> Result<Tensor> {
        self.forward_with_weights(input, lengths, train)
            .map(|(logits, _)| logits)
    }

    /// Logits `(batch, num_classes)` and the pooling weights `(batch, seq)` over the steps:
    /// the attention weights for [`Pooling::Attention`], the uniform `1 / length` for
    /// [`Pooling::Mean`] (both sum to 1 over the valid steps and are exactly 0 at padding),
    /// `None` for [`Pooling::Last`] and [`Pooling::Max`]. Arguments as [`SequenceClassifier::forward`].
    pub fn forward_with_weights(
        &self,
        input: &Tensor,
        lengths: Option<&[usize]>,
        train: bool,
    ) -> Result<(Tensor, Option<Tensor>)> {
        let (pooled, weights) = self.pooled(input, lengths, train)?;
        let pooled = self.output_dropout.forward(&pooled, train)?;
        Ok((self.head.forward(&pooled)?, weights))
    }

    /// The pooled sequence representation `(batch, pooled_size)` the head reads, and the pooling
    /// weights as in [`SequenceClassifier::forward_with_weights`]. Arguments as
    /// [`SequenceClassifier::forward`].
    pub fn pooled(
        &self,
        input: &Tensor,
        lengths: Option<&[usize]>,
        train: bool,
    ) -> Result<(Tensor, Option<Tensor>)> {
        let (b, t) = self.encoder.check(MODEL, input)?;
        if let Some(lengths) = lengths {
            check_lengths(MODEL, lengths, b, t)?;
        }
        let xs = self.encoder.forward(MODEL, input, lengths)?;
        let xs = self.embedding_dropout.forward(&xs, train)?;
        let (ys, state) = self.rnn.forward_t(&xs, None, lengths, train)?;
        self.pool(&ys, &state, lengths)
    }

    /// Pools `ys (batch, seq, out)` (zeros at padding, as the Rnn returns them).
    fn pool(
        &self,
        ys: &Tensor,
        state: &RnnState,
        lengths: Option<&[usize]>,
    ) -> Result<(Tensor, Option<Tensor>)> {
        let (b, t, _) = ys.dims3()?;
        let device = ys.device();
        match self.cfg.pooling {
            Pooling::Last => {
                // h_n of the top layer, forward direction first: exactly PyTorch's h_n[-dirs:].
                let dirs = self.rnn.config().num_directions();
                let top = (self.cfg.num_layers - 1) * dirs;
                let parts = (top..top + dirs)
                    .map(|i| state.h.get(i))
                    .collect::<Result<Vec<_>>>()?;
                Ok((Tensor::cat(&parts, 1)?, None))
            }
            Pooling::Mean => {
                let mask = length_mask(lengths, b, t, ys.dtype(), device)?;
                let weights = mask.broadcast_div(&mask.sum_keepdim(1)?)?;
                let pooled = weights.unsqueeze(1)?.matmul(ys)?.squeeze(1)?;
                Ok((pooled, Some(weights)))
            }
            Pooling::Max => {
                let pooled = match lengths {
                    None => ys.max(1)?,
                    Some(lengths) => {
                        let valid = length_mask(Some(lengths), b, t, DType::U8, device)?
                            .unsqueeze(2)?
                            .broadcast_as(ys.shape())?;
                        let neg = Tensor::full(f32::NEG_INFINITY, ys.shape(), device)?
                            .to_dtype(ys.dtype())?;
                        valid.where_cond(ys, &neg)?.max(1)?
                    }
                };
                Ok((pooled, None))
            }
            Pooling::Attention => {
                let att = self
                    .attention
                    .as_ref()
                    .ok_or_else(|| invalid(MODEL, "attention pooling without its parameters"))?;
                let scores = att.v.forward(&att.w.forward(ys)?.tanh()?)?.squeeze(2)?;
                let weights = match lengths {
                    None => candle_nn::ops::softmax(&scores, 1)?,
                    Some(lengths) => {
                        // -inf at padding: exp gives exactly 0 there, and 0 gradient.
                        let valid = length_mask(Some(lengths), b, t, DType::U8, device)?;
                        let neg = Tensor::full(f32::NEG_INFINITY, (b, t), device)?
                            .to_dtype(scores.dtype())?;
                        candle_nn::ops::softmax(&valid.where_cond(&scores, &neg)?, 1)?
                    }
                };
                let pooled = weights.unsqueeze(1)?.matmul(ys)?.squeeze(1)?;
                Ok((pooled, Some(weights)))
            }
        }
    }

    /// Mean cross-entropy (nats, rank 0) of the logits against `targets`, `u32 (batch,)` class
    /// ids `< num_classes`. Other arguments as [`SequenceClassifier::forward`].
    pub fn loss(
        &self,
        input: &Tensor,
        lengths: Option<&[usize]>,
        targets: &Tensor,
        train: bool,
    ) -> Result<Tensor> {
        let (b, _) = self.encoder.check(MODEL, input)?;
        check_class_targets(MODEL, targets, b, self.cfg.num_classes)?;
        let logits = self.forward(input, lengths, train)?;
        masked_cross_entropy(&logits, targets, None)
    }

    /// The most likely class of each sequence (eval mode).
    pub fn predict(&self, input: &Tensor, lengths: Option<&[usize]>) -> Result<Vec<u32>> {
        self.forward(input, lengths, false)?
            .argmax(D::Minus1)?
            .to_vec1::<u32>()
    }
}

impl Stochastic for SequenceClassifier {
    /// Seeds, in this order: the recurrent layer's inter-layer dropout, the embedding dropout,
    /// the output dropout (each from its own derived seed).
    fn set_seed(&mut self, seed: u64) {
        self.rnn = self.rnn.set_dropout_seed(derive_seed(seed, 0));
        self.embedding_dropout.set_seed(derive_seed(seed, 1));
        self.output_dropout.set_seed(derive_seed(seed, 2));
    }

    /// `[rnn, embedding dropout, output dropout]`.
    fn rng_counters(&self) -> Vec<u64> {
        vec![
            self.rnn.dropout_calls(),
            self.embedding_dropout.calls(),
            self.output_dropout.calls(),
        ]
    }

    fn set_rng_counters(&self, counters: &[u64]) -> Result<()> {
        check_counters(MODEL, counters, 3)?;
        self.rnn.set_dropout_calls(counters[0]);
        self.embedding_dropout.set_calls(counters[1]);
        self.output_dropout.set_calls(counters[2]);
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

    fn build(cfg: &SequenceClassifierConfig, seed: u64) -> (VarMap, SequenceClassifier) {
        let varmap = VarMap::new();
        let vb = seeded_var_builder(&varmap, seed, DType::F32, &Device::Cpu);
        let model = SequenceClassifier::new(cfg, vb).unwrap();
        (varmap, model)
    }

    fn token_input(vocab: u32, b: usize, t: usize, seed: u64) -> Tensor {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let ids: Vec<u32> = (0..b * t).map(|_| rng.random_range(0..vocab)).collect();
        Tensor::from_vec(ids, (b, t), &Device::Cpu).unwrap()
    }

    fn feature_input(b: usize, t: usize, f: usize, seed: u64) -> Tensor {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let xs: Vec<f32> = (0..b * t * f)
            .map(|_| rng.random_range(-1.0..1.0))
            .collect();
        Tensor::from_vec(xs, (b, t, f), &Device::Cpu).unwrap()
    }

    fn inputs() -> [Input; 3] {
        [
            Input::tokens_with_padding(7, 5, 0),
            Input::features(4),
            Input::projected_features(4, 6),
        ]
    }

    fn make_input(input: &Input, b: usize, t: usize, seed: u64) -> Tensor {
        match *input {
            Input::Tokens { vocab_size, .. } => token_input(vocab_size as u32, b, t, seed),
            Input::Features { size, .. } => feature_input(b, t, size, seed),
        }
    }

    fn vec2(t: &Tensor) -> Vec<Vec<f32>> {
        t.to_vec2::<f32>().unwrap()
    }

    #[test]
    fn shapes_for_every_pooling_mode_direction_and_input() {
        let (b, t) = (3, 5);
        let lengths = [5, 2, 4];
        for input in inputs() {
            for mode in Mode::ALL {
                for bidirectional in [false, true] {
                    for pooling in Pooling::ALL {
                        let cfg = SequenceClassifierConfig::new(input.clone(), mode, 6, 4)
                            .with_num_layers(2)
                            .with_bidirectional(bidirectional)
                            .with_pooling(pooling)
                            .with_head(vec![5], Activation::Relu);
                        let (_, model) = build(&cfg, 1);
                        let xs = make_input(&input, b, t, 2);
                        for lengths in [None, Some(&lengths[..])] {
                            let (logits, weights) =
                                model.forward_with_weights(&xs, lengths, false).unwrap();
                            assert_eq!(logits.dims(), &[b, 4], "{cfg:?}");
                            match pooling {
                                Pooling::Mean | Pooling::Attention => {
                                    assert_eq!(weights.unwrap().dims(), &[b, t])
                                }
                                Pooling::Last | Pooling::Max => assert!(weights.is_none()),
                            }
                            let (pooled, _) = model.pooled(&xs, lengths, false).unwrap();
                            let dirs = if bidirectional { 2 } else { 1 };
                            assert_eq!(pooled.dims(), &[b, 6 * dirs]);
                            assert_eq!(model.predict(&xs, lengths).unwrap().len(), b);
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn lstm_projection_shapes() {
        let cfg = SequenceClassifierConfig::new(Input::tokens(5, 4), Mode::Lstm, 8, 3)
            .with_proj_size(3)
            .with_bidirectional(true)
            .with_pooling(Pooling::Attention);
        let (_, model) = build(&cfg, 0);
        let (pooled, _) = model
            .pooled(&token_input(5, 2, 4, 0), Some(&[4, 1]), false)
            .unwrap();
        assert_eq!(pooled.dims(), &[2, 6]);
    }

    /// Changes every padded position of `xs` (beyond each length) to other values.
    fn scramble_padding(xs: &Tensor, lengths: &[usize], wild: bool) -> Tensor {
        match xs.rank() {
            2 => {
                let mut rows = xs.to_vec2::<u32>().unwrap();
                for (row, &l) in rows.iter_mut().zip(lengths) {
                    for (i, v) in row.iter_mut().enumerate().skip(l) {
                        // Far out of the vocabulary or another valid id.
                        *v = if wild { 1000 + i as u32 } else { (*v + 1) % 7 };
                    }
                }
                Tensor::new(rows, &Device::Cpu).unwrap()
            }
            _ => {
                let mut rows = xs.to_vec3::<f32>().unwrap();
                for (row, &l) in rows.iter_mut().zip(lengths) {
                    for step in row.iter_mut().skip(l) {
                        for v in step.iter_mut() {
                            *v = if wild { f32::NAN } else { *v * -37.0 + 5.0 };
                        }
                    }
                }
                Tensor::new(rows, &Device::Cpu).unwrap()
            }
        }
    }

    #[test]
    fn padded_positions_change_nothing() {
        let (b, t) = (4, 6);
        let lengths = [6, 1, 3, 5];
        let targets = Tensor::new(&[0u32, 2, 1, 2], &Device::Cpu).unwrap();
        for input in inputs() {
            for mode in [Mode::Lstm, Mode::Gru] {
                for bidirectional in [false, true] {
                    for pooling in Pooling::ALL {
                        let cfg = SequenceClassifierConfig::new(input.clone(), mode, 5, 3)
                            .with_num_layers(2)
                            .with_bidirectional(bidirectional)
                            .with_pooling(pooling);
                        let (_, model) = build(&cfg, 3);
                        let xs = make_input(&input, b, t, 4);
                        let logits = vec2(&model.forward(&xs, Some(&lengths), false).unwrap());
                        let loss = model
                            .loss(&xs, Some(&lengths), &targets, false)
                            .unwrap()
                            .to_scalar::<f32>()
                            .unwrap();
                        assert!(logits.iter().flatten().all(|v| v.is_finite()));
                        for wild in [false, true] {
                            let other = scramble_padding(&xs, &lengths, wild);
                            let logits2 =
                                vec2(&model.forward(&other, Some(&lengths), false).unwrap());
                            let loss2 = model
                                .loss(&other, Some(&lengths), &targets, false)
                                .unwrap()
                                .to_scalar::<f32>()
                                .unwrap();
                            assert_eq!(logits, logits2, "{cfg:?} wild={wild}");
                            assert_eq!(loss, loss2, "{cfg:?} wild={wild}");
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn pooling_weights_are_normalised_over_valid_steps() {
        let lengths = [5, 2, 4];
        for pooling in [Pooling::Mean, Pooling::Attention] {
            let cfg = SequenceClassifierConfig::new(Input::tokens(9, 4), Mode::Gru, 6, 2)
                .with_bidirectional(true)
                .with_pooling(pooling);
            let (_, model) = build(&cfg, 5);
            let xs = token_input(9, 3, 5, 6);
            let (_, w) = model
                .forward_with_weights(&xs, Some(&lengths), false)
                .unwrap();
            for (row, &l) in vec2(&w.unwrap()).iter().zip(&lengths) {
                let sum: f32 = row[..l].iter().sum();
                assert!((sum - 1.0).abs() < 1e-6, "{pooling}: {row:?}");
                assert!(row[..l].iter().all(|&v| v > 0.0), "{row:?}");
                assert!(row[l..].iter().all(|&v| v == 0.0), "{row:?}");
                if pooling == Pooling::Mean {
                    assert!(row[..l].iter().all(|&v| (v - 1.0 / l as f32).abs() < 1e-7));
                }
            }
        }
    }

    /// Last pooling is PyTorch's h_n: forward direction at the last valid step, backward
    /// direction at step 0; max pooling is the max over the valid steps.
    #[test]
    fn last_and_max_pooling_read_the_right_steps() {
        let lengths = [4, 2, 3];
        let xs = token_input(6, 3, 4, 8);
        let h = 5;
        for mode in Mode::ALL {
            for pooling in [Pooling::Last, Pooling::Max] {
                let cfg = SequenceClassifierConfig::new(Input::tokens(6, 3), mode, h, 2)
                    .with_num_layers(2)
                    .with_bidirectional(true)
                    .with_pooling(pooling);
                let (_, model) = build(&cfg, 9);
                let enc = model.encoder.forward(MODEL, &xs, Some(&lengths)).unwrap();
                let (ys, _) = model
                    .rnn
                    .forward_t(&enc, None, Some(&lengths), false)
                    .unwrap();
                let ys = ys.to_vec3::<f32>().unwrap();
                let pooled = vec2(&model.pooled(&xs, Some(&lengths), false).unwrap().0);
                for (bi, &l) in lengths.iter().enumerate() {
                    let expected: Vec<f32> = match pooling {
                        Pooling::Last => ys[bi][l - 1][..h]
                            .iter()
                            .chain(&ys[bi][0][h..])
                            .copied()
                            .collect(),
                        _ => (0..2 * h)
                            .map(|j| {
                                ys[bi][..l]
                                    .iter()
                                    .map(|s| s[j])
                                    .fold(f32::NEG_INFINITY, f32::max)
                            })
                            .collect(),
                    };
                    for (a, e) in pooled[bi].iter().zip(&expected) {
                        assert!((a - e).abs() < 1e-6, "{mode} {pooling}: {a} vs {e}");
                    }
                }
            }
        }
    }

    #[test]
    fn every_parameter_is_named_and_gets_a_gradient() {
        for pooling in Pooling::ALL {
            let cfg = SequenceClassifierConfig::new(Input::tokens(6, 3), Mode::Lstm, 4, 3)
                .with_num_layers(2)
                .with_bidirectional(true)
                .with_pooling(pooling)
                .with_head(vec![5], Activation::Tanh);
            let (varmap, model) = build(&cfg, 2);
            let mut names: Vec<String> = varmap.data().lock().unwrap().keys().cloned().collect();
            names.sort();
            for expected in [
                "embedding.weight",
                "rnn.weight_ih_l0",
                "rnn.bias_hh_l1_reverse",
                "head.layers.0.weight",
                "head.layers.1.bias",
            ] {
                assert!(
                    names.iter().any(|n| n == expected),
                    "{expected} in {names:?}"
                );
            }
            let has_attention = names.iter().any(|n| n.starts_with("attention."));
            assert_eq!(has_attention, pooling == Pooling::Attention, "{names:?}");
            if pooling == Pooling::Attention {
                for n in [
                    "attention.w.weight",
                    "attention.w.bias",
                    "attention.v.weight",
                ] {
                    assert!(names.iter().any(|x| x == n), "{n} in {names:?}");
                }
            }
            let xs = token_input(6, 3, 5, 1);
            let targets = Tensor::new(&[0u32, 1, 2], &Device::Cpu).unwrap();
            let loss = model.loss(&xs, Some(&[5, 3, 1]), &targets, true).unwrap();
            let grads = loss.backward().unwrap();
            for (name, var) in varmap.data().lock().unwrap().iter() {
                let g = grads.get(var.as_tensor());
                assert!(g.is_some(), "{pooling}: no gradient for {name}");
            }
        }
        let cfg = SequenceClassifierConfig::new(Input::projected_features(3, 4), Mode::Gru, 4, 2);
        let (varmap, _) = build(&cfg, 0);
        let data = varmap.data().lock().unwrap();
        assert!(
            data.contains_key("input_projection.weight")
                && data.contains_key("input_projection.bias")
        );
    }

    /// Sequences over symbols 0..3 (3 = padding) with a clear majority symbol, the class.
    fn majority_batch(rng: &mut ChaCha8Rng, batch: usize) -> (Tensor, Vec<usize>, Tensor) {
        let t_max = 12;
        let mut ids = Vec::with_capacity(batch * t_max);
        let mut lengths = Vec::with_capacity(batch);
        let mut classes = Vec::with_capacity(batch);
        for _ in 0..batch {
            let (seq, class) = loop {
                let len = rng.random_range(5..=12);
                let class = rng.random_range(0..3u32);
                let seq: Vec<u32> = (0..len)
                    .map(|_| {
                        if rng.random::<f64>() < 0.55 {
                            class
                        } else {
                            rng.random_range(0..3u32)
                        }
                    })
                    .collect();
                let count = |s: u32| seq.iter().filter(|&&v| v == s).count();
                if (0..3).all(|s| s == class || count(class) >= count(s) + 2) {
                    break (seq, class);
                }
            };
            lengths.push(seq.len());
            classes.push(class);
            ids.extend_from_slice(&seq);
            ids.extend(std::iter::repeat_n(3u32, t_max - seq.len()));
        }
        (
            Tensor::from_vec(ids, (batch, t_max), &Device::Cpu).unwrap(),
            lengths,
            Tensor::new(classes, &Device::Cpu).unwrap(),
        )
    }

    fn accuracy(model: &SequenceClassifier, data: &(Tensor, Vec<usize>, Tensor)) -> f64 {
        let pred = model.predict(&data.0, Some(&data.1)).unwrap();
        let truth = data.2.to_vec1::<u32>().unwrap();
        pred.iter().zip(&truth).filter(|(p, t)| p == t).count() as f64 / truth.len() as f64
    }

    #[test]
    fn learns_the_majority_symbol() {
        for (mode, pooling) in [(Mode::Gru, Pooling::Attention), (Mode::Lstm, Pooling::Last)] {
            let cfg =
                SequenceClassifierConfig::new(Input::tokens_with_padding(4, 8, 3), mode, 16, 3)
                    .with_pooling(pooling)
                    .with_output_dropout(0.1);
            let (varmap, mut model) = build(&cfg, 11);
            model.set_seed(3);
            let mut rng = ChaCha8Rng::seed_from_u64(42);
            let held_out = majority_batch(&mut rng, 300);
            let untrained = accuracy(&model, &held_out);
            let mut opt = AdamW::new(
                varmap.all_vars(),
                ParamsAdamW {
                    lr: 0.02,
                    weight_decay: 0.0,
                    ..Default::default()
                },
            )
            .unwrap();
            for _ in 0..250 {
                let (ids, lengths, targets) = majority_batch(&mut rng, 32);
                let loss = model.loss(&ids, Some(&lengths), &targets, true).unwrap();
                opt.backward_step(&loss).unwrap();
            }
            let trained = accuracy(&model, &held_out);
            eprintln!("{mode} {pooling}: untrained {untrained:.3}, trained {trained:.3}");
            assert!(
                untrained < 0.6,
                "{mode} {pooling}: untrained accuracy {untrained}"
            );
            assert!(
                trained >= 0.9,
                "{mode} {pooling}: trained accuracy {trained}"
            );
        }
    }

    #[test]
    fn save_load_round_trip_is_exact() {
        let cfg = SequenceClassifierConfig::new(Input::tokens(8, 4), Mode::Lstm, 6, 3)
            .with_num_layers(2)
            .with_bidirectional(true)
            .with_pooling(Pooling::Attention)
            .with_head(vec![5], Activation::Relu);
        let (varmap, model) = build(&cfg, 21);
        let xs = token_input(8, 3, 5, 22);
        let lengths = [5, 3, 2];
        let logits = vec2(&model.forward(&xs, Some(&lengths), false).unwrap());
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("model.safetensors");
        varmap.save(&path).unwrap();

        let mut fresh = VarMap::new();
        let loaded = SequenceClassifier::new(
            &cfg,
            VarBuilder::from_varmap(&fresh, DType::F32, &Device::Cpu),
        )
        .unwrap();
        let before = vec2(&loaded.forward(&xs, Some(&lengths), false).unwrap());
        assert_ne!(before, logits);
        fresh.load(&path).unwrap();
        let after = vec2(&loaded.forward(&xs, Some(&lengths), false).unwrap());
        assert_eq!(after, logits);
    }

    #[test]
    fn dropout_is_seeded_and_resumable() {
        let cfg = SequenceClassifierConfig::new(Input::tokens(8, 4), Mode::Gru, 6, 3)
            .with_num_layers(2)
            .with_rnn_dropout(0.3)
            .with_embedding_dropout(0.2)
            .with_output_dropout(0.4)
            .with_pooling(Pooling::Mean);
        let (_, mut model) = build(&cfg, 1);
        let xs = token_input(8, 2, 6, 2);
        let eval = vec2(&model.forward(&xs, None, false).unwrap());
        assert_eq!(model.rng_counters(), vec![0, 0, 0]);
        model.set_seed(9);
        let a1 = vec2(&model.forward(&xs, None, true).unwrap());
        let counters = model.rng_counters();
        assert_eq!(counters, vec![1, 1, 1]);
        let a2 = vec2(&model.forward(&xs, None, true).unwrap());
        assert_ne!(a1, eval);
        assert_ne!(a1, a2);
        model.set_seed(9);
        assert_eq!(vec2(&model.forward(&xs, None, true).unwrap()), a1);
        model.set_rng_counters(&counters).unwrap();
        assert_eq!(vec2(&model.forward(&xs, None, true).unwrap()), a2);
        assert_eq!(vec2(&model.forward(&xs, None, false).unwrap()), eval);
        let err = model.set_rng_counters(&[1]).unwrap_err().to_string();
        assert!(
            err.contains("SequenceClassifier") && err.contains("3"),
            "{err}"
        );
    }

    #[test]
    fn argument_errors_name_the_argument() {
        let cfg =
            SequenceClassifierConfig::new(Input::tokens_with_padding(5, 3, 0), Mode::Gru, 4, 3);
        let (_, model) = build(&cfg, 0);
        let dev = Device::Cpu;
        let xs = token_input(5, 2, 4, 0);
        let err = |r: Result<Tensor>| r.unwrap_err().to_string();
        let check = |msg: String, needles: &[&str]| {
            assert!(msg.contains("SequenceClassifier"), "{msg}");
            for n in needles {
                assert!(msg.contains(n), "{n} not in: {msg}");
            }
        };
        check(
            err(model.forward(&xs, Some(&[4]), false)),
            &["lengths", "1 entries"],
        );
        check(
            err(model.forward(&xs, Some(&[4, 0]), false)),
            &["lengths[1]", "1..=4"],
        );
        check(
            err(model.forward(&xs, Some(&[5, 2]), false)),
            &["lengths[0]"],
        );
        let float_ids = xs.to_dtype(DType::F32).unwrap();
        check(
            err(model.forward(&float_ids, None, false)),
            &["input", "u32", "F32"],
        );
        let rank3 = xs.unsqueeze(2).unwrap();
        check(
            err(model.forward(&rank3, None, false)),
            &["input", "[2, 4, 1]"],
        );
        let oov = Tensor::new(&[[1u32, 2, 7, 0], [1, 1, 1, 1]], &dev).unwrap();
        check(
            err(model.forward(&oov, None, false)),
            &["input", "token id 7", "[0, 2]", "0..5"],
        );
        // The out-of-vocabulary id is fine at a padded position.
        model.forward(&oov, Some(&[2, 4]), false).unwrap();
        let bad_targets = Tensor::new(&[0u32, 1, 2], &dev).unwrap();
        check(
            err(model.loss(&xs, None, &bad_targets, false)),
            &["targets", "[3]"],
        );
        let bad_targets = Tensor::new(&[0f32, 1.0], &dev).unwrap();
        check(
            err(model.loss(&xs, None, &bad_targets, false)),
            &["targets", "u32"],
        );
        let bad_targets = Tensor::new(&[0u32, 3], &dev).unwrap();
        check(
            err(model.loss(&xs, None, &bad_targets, false)),
            &["targets", "class 3"],
        );

        let cfg = SequenceClassifierConfig::new(Input::features(3), Mode::Lstm, 4, 2);
        let (_, model) = build(&cfg, 0);
        let wrong_size = feature_input(2, 4, 5, 0);
        check(
            err(model.forward(&wrong_size, None, false)),
            &["input", "(batch, seq, 3)", "[2, 4, 5]"],
        );
        let f64_input = feature_input(2, 4, 3, 0).to_dtype(DType::F64).unwrap();
        check(
            err(model.forward(&f64_input, None, false)),
            &["input", "F64", "F32"],
        );
        let rank2 = Tensor::zeros((2, 3), DType::F32, &dev).unwrap();
        check(
            err(model.forward(&rank2, None, false)),
            &["input", "[2, 3]"],
        );
        let ids = token_input(3, 2, 4, 0);
        check(err(model.forward(&ids, None, false)), &["input", "U32"]);
    }

    #[test]
    fn config_validation_serde_and_pooling_parse() {
        let ok = SequenceClassifierConfig::new(Input::tokens(5, 3), Mode::Gru, 4, 3);
        ok.validate().unwrap();
        let cases = [
            (ok.clone().with_num_layers(0), "num_layers"),
            (ok.clone().with_rnn_dropout(1.0), "dropout"),
            (ok.clone().with_embedding_dropout(-0.1), "embedding_dropout"),
            (ok.clone().with_output_dropout(1.5), "output_dropout"),
            (ok.clone().with_proj_size(2), "proj_size"),
            (
                ok.clone().with_head(vec![4, 0], Activation::Tanh),
                "head_hidden[1]",
            ),
            (ok.clone().with_attention_size(0), "attention_size"),
            (
                SequenceClassifierConfig::new(Input::tokens(5, 3), Mode::Gru, 4, 1),
                "num_classes",
            ),
            (
                SequenceClassifierConfig::new(Input::tokens(0, 3), Mode::Gru, 4, 3),
                "vocab_size",
            ),
            (
                SequenceClassifierConfig::new(Input::tokens(5, 0), Mode::Gru, 4, 3),
                "embedding_dim",
            ),
            (
                SequenceClassifierConfig::new(Input::tokens_with_padding(5, 3, 5), Mode::Gru, 4, 3),
                "padding_idx",
            ),
            (
                SequenceClassifierConfig::new(Input::features(0), Mode::Gru, 4, 3),
                "input.size",
            ),
            (
                SequenceClassifierConfig::new(Input::projected_features(2, 0), Mode::Gru, 4, 3),
                "projection_dim",
            ),
            (
                SequenceClassifierConfig::new(Input::features(2), Mode::Gru, 0, 3),
                "hidden_size",
            ),
        ];
        for (cfg, needle) in cases {
            let err = cfg.validate().unwrap_err().to_string();
            assert!(
                err.contains(needle) && err.contains(CONFIG),
                "{needle}: {err}"
            );
            let vm = VarMap::new();
            let vb = VarBuilder::from_varmap(&vm, DType::F32, &Device::Cpu);
            assert!(SequenceClassifier::new(&cfg, vb).is_err());
        }

        let full = ok
            .clone()
            .with_pooling(Pooling::Max)
            .with_bidirectional(true)
            .with_head(vec![7], Activation::Relu)
            .with_output_dropout(0.25);
        let json = serde_json::to_string(&full).unwrap();
        assert!(
            json.contains(r#""pooling":"max""#) && json.contains(r#""kind":"tokens""#),
            "{json}"
        );
        let back: SequenceClassifierConfig = serde_json::from_str(&json).unwrap();
        assert_eq!(back, full);
        let minimal: SequenceClassifierConfig = serde_json::from_str(
            r#"{"input":{"kind":"features","size":3},"mode":"lstm","hidden_size":8,"num_classes":2}"#,
        )
        .unwrap();
        assert_eq!(
            minimal,
            SequenceClassifierConfig::new(Input::features(3), Mode::Lstm, 8, 2)
        );

        for p in Pooling::ALL {
            assert_eq!(p.as_str().parse::<Pooling>().unwrap(), p);
            assert_eq!(p.to_string().to_uppercase().parse::<Pooling>().unwrap(), p);
        }
        let err = "sum".parse::<Pooling>().unwrap_err().to_string();
        assert!(
            err.contains("'sum'") && err.contains("last, mean, max, attention"),
            "{err}"
        );
    }
}
