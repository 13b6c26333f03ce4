//! The front shared by [`crate::classifier`] and [`crate::tagger`]: what a sequence model reads
//! ([`Input`]), the input stage ([`InputEncoder`]: embedding or projection), and
//! [`SequenceEncoder`] (input stage -> embedding dropout -> [`Rnn`], plus the output dropout the
//! model applies to what it reads from the recurrence) with the models' one [`Stochastic`] path.
//!
//! Parameter names (under the model's root): `embedding.weight` (or `input_projection.weight` /
//! `.bias`) and `rnn.*` with PyTorch's `RNNBase` names.

use candle_core::{DType, Device, Result, Tensor};
use candle_nn::{Embedding, Module, VarBuilder};
use rnn_core::linear::{linear, Linear};
use rnn_core::{Rnn, RnnConfig, RnnState};
use serde::{Deserialize, Serialize};

use crate::masks::EmbeddingDropout;

use crate::common::{
    check_counters, check_ids, check_lengths, derive_seed, invalid, length_mask, value_checks_on,
    SeededDropout, Stochastic,
};

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
    /// Whether the input is token ids (looked up in an embedding table).
    pub fn is_tokens(&self) -> bool {
        matches!(self, Input::Tokens { .. })
    }

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
    ///
    /// `vb` by value, as in every constructor of this workspace; `&VarBuilder`, the form before
    /// 0.2, is still accepted.
    pub fn new<'a>(input: &Input, vb: impl std::borrow::Borrow<VarBuilder<'a>>) -> Result<Self> {
        let vb = vb.borrow();
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
                    .map(|d| linear(size, d, vb.pp("input_projection")))
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

/// The `with_*` setters of the [`SequenceEncoder`] fields and `rnn_config`, for a config struct
/// with the fields `input`, `mode`, `hidden_size`, `num_layers`, `bidirectional`, `rnn_dropout`,
/// `proj_size`, `embedding_dropout`, `output_dropout` and `masks` (the classifier's and the
/// tagger's).
macro_rules! sequence_encoder_config_methods {
    () => {
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

        /// Sets the recurrent layer's mask regularisers (`masks`; no embedding dropout here).
        pub fn with_masks(mut self, masks: $crate::masks::MaskOptions) -> Self {
            self.masks = masks;
            self
        }

        /// Sets `layer_norm` (layer-normalised LSTM/GRU layers).
        pub fn with_layer_norm(mut self, layer_norm: bool) -> Self {
            self.layer_norm = layer_norm;
            self
        }

        /// The recurrent layer's configuration (batch-first, `input_size` from
        /// [`Input::output_size`], the mask options of `masks`, `layer_norm`).
        pub fn rnn_config(&self) -> RnnConfig {
            self.masks.apply(
                RnnConfig::new(self.mode, self.input.output_size(), self.hidden_size)
                    .with_num_layers(self.num_layers)
                    .with_bidirectional(self.bidirectional)
                    .with_dropout(self.rnn_dropout)
                    .with_proj_size(self.proj_size)
                    .with_layer_norm(self.layer_norm),
            )
        }
    };
}
pub(crate) use sequence_encoder_config_methods;

/// Input stage -> embedding dropout -> recurrence, and the dropout on what the model reads from
/// the recurrence: the scaffolding of [`crate::classifier::SequenceClassifier`] and
/// [`crate::tagger::SequenceTagger`].
#[derive(Debug, Clone)]
pub struct SequenceEncoder {
    /// The owning model's name, the start of every error message.
    model: &'static str,
    /// The vocabulary size of a token input.
    vocab: Option<usize>,
    pub(crate) input: InputEncoder,
    embedding_dropout: SeededDropout,
    /// Whole-word dropout of token inputs (`masks.embedding_dropout`).
    word_dropout: EmbeddingDropout,
    pub(crate) rnn: Rnn,
    output_dropout: SeededDropout,
}

impl SequenceEncoder {
    /// Builds the input stage and the recurrence under `vb` (the model's root) for `input` and
    /// `rnn` (both already validated). Random sources start as after
    /// [`Stochastic::set_seed`] with seed 0.
    pub fn new(
        model: &'static str,
        input: &Input,
        rnn: &RnnConfig,
        embedding_dropout: f64,
        output_dropout: f64,
        word_dropout: f64,
        vb: &VarBuilder,
    ) -> Result<Self> {
        let vocab = match input {
            Input::Tokens { vocab_size, .. } => Some(*vocab_size),
            Input::Features { .. } => None,
        };
        if word_dropout > 0.0 && vocab.is_none() {
            candle_core::bail!("{model}: whole-word dropout needs a token input");
        }
        let input = InputEncoder::new(input, vb)?;
        let rnn = Rnn::new(rnn, vb.pp("rnn"))?;
        let mut encoder = Self {
            model,
            vocab,
            input,
            embedding_dropout: SeededDropout::new(embedding_dropout, 0)?,
            word_dropout: EmbeddingDropout::new(word_dropout, 0)?,
            rnn,
            output_dropout: SeededDropout::new(output_dropout, 0)?,
        };
        encoder.set_seed(0);
        Ok(encoder)
    }

    /// The recurrent layer.
    pub fn rnn(&self) -> &Rnn {
        &self.rnn
    }

    /// Checks `input` ([`InputEncoder::check`]); returns `(batch, seq_len)`.
    pub fn check_input(&self, input: &Tensor) -> Result<(usize, usize)> {
        self.input.check(self.model, input)
    }

    /// Checks `input` and `lengths`; returns `(batch, seq_len)`.
    pub fn check(&self, input: &Tensor, lengths: Option<&[usize]>) -> Result<(usize, usize)> {
        let (b, t) = self.check_input(input)?;
        if let Some(lengths) = lengths {
            check_lengths(self.model, lengths, b, t)?;
        }
        Ok((b, t))
    }

    /// Checks the arguments, then runs input stage, embedding dropout and recurrence: the
    /// outputs `(batch, seq_len, rnn output size)` (zeros at padding) and the final state.
    pub fn forward(
        &self,
        input: &Tensor,
        lengths: Option<&[usize]>,
        train: bool,
    ) -> Result<(Tensor, RnnState)> {
        let (b, t) = self.check(input, lengths)?;
        let mut xs = self.input.forward(self.model, input, lengths)?;
        if let Some(vocab) = self.vocab {
            if let Some(scale) =
                self.word_dropout
                    .word_scale(vocab, xs.dtype(), xs.device(), train)?
            {
                // Each id's row of the scale: whole words dropped, the same in every position.
                let ids = input.flatten_all()?;
                xs = xs.broadcast_mul(&scale.index_select(&ids, 0)?.reshape((b, t, 1))?)?;
            }
        }
        let xs = self.embedding_dropout.forward(&xs, train)?;
        self.rnn.forward_t(&xs, None, lengths, train)
    }

    /// The output dropout (training only) on what the model reads from the recurrence.
    pub fn output_dropout(&self, xs: &Tensor, train: bool) -> Result<Tensor> {
        self.output_dropout.forward(xs, train)
    }
}

impl Stochastic for SequenceEncoder {
    /// Seeds, in this order: the recurrent layer's inter-layer dropout, the embedding dropout,
    /// the output dropout, the whole-word dropout (each from its own derived seed).
    fn set_seed(&mut self, seed: u64) {
        self.rnn = self.rnn.set_dropout_seed(derive_seed(seed, 0));
        self.embedding_dropout.set_seed(derive_seed(seed, 1));
        self.output_dropout.set_seed(derive_seed(seed, 2));
        self.word_dropout.set_seed(derive_seed(seed, 3));
    }

    /// `[rnn, embedding dropout, output dropout]`, then the whole-word dropout's when it is on
    /// (so checkpoints without it keep their three counters).
    fn rng_counters(&self) -> Vec<u64> {
        let mut counters = vec![
            self.rnn.dropout_calls(),
            self.embedding_dropout.calls(),
            self.output_dropout.calls(),
        ];
        if self.word_dropout.p() > 0.0 {
            counters.push(self.word_dropout.calls());
        }
        counters
    }

    /// Three counters (the whole-word dropout's then restarts at 0) or four.
    fn set_rng_counters(&self, counters: &[u64]) -> Result<()> {
        if counters.len() != 4 {
            check_counters(self.model, counters, 3)?;
        }
        self.rnn.set_dropout_calls(counters[0]);
        self.embedding_dropout.set_calls(counters[1]);
        self.output_dropout.set_calls(counters[2]);
        self.word_dropout
            .set_calls(counters.get(3).copied().unwrap_or(0));
        Ok(())
    }
}
