//! Many-to-many aligned sequence labelling: [`SequenceTagger`], one tag per step (POS tagging,
//! named entities, per-step events).
//!
//! `input -> embedding | projection -> Rnn (bidirectional by default) -> dropout -> Linear ->
//! logits (batch, seq, num_tags)`.
//!
//! [`SequenceTagger::predict`] takes the per-step argmax; [`SequenceTagger::predict_constrained`]
//! decodes with [`viterbi`] under a [`TransitionMask`], so that, e.g., no `I-PER` follows `O`.
//!
//! Parameter names: `embedding.weight` (or `input_projection.weight` / `.bias`, see
//! [`Input`]), `rnn.*` with PyTorch's `RNNBase` names (`rnn.weight_ih_l0_reverse`, ...) and
//! `output.weight` / `output.bias`.
//!
//! ```
//! use candle_core::{DType, Device, Tensor};
//! use candle_nn::VarMap;
//! use rnn_models::classifier::Input;
//! use rnn_models::tagger::{SequenceTagger, SequenceTaggerConfig};
//! use rnn_models::rnn_core::{init::seeded_var_builder, Mode};
//!
//! let cfg = SequenceTaggerConfig::new(Input::tokens(10, 8), Mode::Lstm, 16, 5);
//! let varmap = VarMap::new();
//! let tagger = SequenceTagger::new(&cfg, seeded_var_builder(&varmap, 0, DType::F32, &Device::Cpu))?;
//! let ids = Tensor::new(&[[1u32, 2, 3], [4, 5, 0]], &Device::Cpu)?;
//! assert_eq!(tagger.forward(&ids, Some(&[3, 2]), false)?.dims(), &[2, 3, 5]);
//! let tags = tagger.predict(&ids, Some(&[3, 2]))?;
//! assert_eq!((tags[0].len(), tags[1].len()), (3, 2));
//! # Ok::<(), candle_core::Error>(())
//! ```

use candle_core::{DType, Result, Tensor, D};
use candle_nn::{Module, VarBuilder};
use rnn_core::linear::Linear;
use rnn_core::{Implementation, Mode, Rnn, RnnConfig};
use serde::{Deserialize, Serialize};

use crate::common::{invalid, length_mask, value_checks_on, Stochastic};
use crate::config_checks::check_dropout;
use crate::encoder::{Input, SequenceEncoder};
use crate::loss::linear_cross_entropy_sum_with;

mod viterbi;
pub use viterbi::{viterbi, TransitionMask};

const MODEL: &str = "SequenceTagger";
const CONFIG: &str = "SequenceTaggerConfig";

/// Configuration of a [`SequenceTagger`]; serde-serialisable, with `with_*` setters.
///
/// Fields with a serde default may be left out of a config file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SequenceTaggerConfig {
    /// Token or feature input.
    pub input: Input,
    /// Recurrent cell.
    pub mode: Mode,
    /// Hidden size of the recurrence (per direction).
    pub hidden_size: usize,
    /// Stacked recurrent layers (default 1).
    #[serde(default = "crate::defaults::one")]
    pub num_layers: usize,
    /// Whether the recurrence also runs backwards, so each tag sees the whole sentence
    /// (default true).
    #[serde(default = "crate::defaults::yes")]
    pub bidirectional: bool,
    /// Dropout between recurrent layers, training only (default 0).
    #[serde(default)]
    pub rnn_dropout: f64,
    /// LSTM output projection size, 0 = none (default 0; see [`RnnConfig::proj_size`]).
    #[serde(default)]
    pub proj_size: usize,
    /// Number of tags (>= 2).
    pub num_tags: usize,
    /// Dropout on the step features (after the embedding / projection), training only.
    #[serde(default)]
    pub embedding_dropout: f64,
    /// Dropout on the recurrent outputs before the output layer, training only.
    #[serde(default)]
    pub output_dropout: f64,
    /// Mask regularisers of the recurrent layer (variational, recurrent and weight dropout,
    /// zoneout; docs/REGULARIZATION.md), off by default and left out of the JSON while off.
    /// Nested under `masks`: `embedding_dropout` above is this model's element-wise one.
    #[serde(default, skip_serializing_if = "crate::masks::MaskOptions::is_off")]
    pub masks: crate::masks::MaskOptions,
    /// Layer-normalised LSTM/GRU layers (`RnnConfig::layer_norm`: LN of the gate
    /// pre-activations' input and recurrent parts and of the LSTM cell state, with parameters
    /// `rnn.layernorm_*`). Default false, left out of the JSON while off, so configs saved
    /// without the field load unchanged.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub layer_norm: bool,
}

impl SequenceTaggerConfig {
    /// A one-layer bidirectional tagger without dropout.
    pub fn new(input: Input, mode: Mode, hidden_size: usize, num_tags: usize) -> Self {
        Self {
            input,
            mode,
            hidden_size,
            num_layers: 1,
            bidirectional: true,
            rnn_dropout: 0.0,
            proj_size: 0,
            num_tags,
            embedding_dropout: 0.0,
            output_dropout: 0.0,
            masks: crate::masks::MaskOptions::default(),
            layer_norm: false,
        }
    }

    crate::encoder::sequence_encoder_config_methods!();

    /// Checks every field; the error names the field and the value at fault.
    pub fn validate(&self) -> Result<()> {
        self.input.validate(CONFIG)?;
        self.rnn_config()
            .validate()
            .map_err(|e| invalid(CONFIG, format!("recurrent layer: {e}")))?;
        if self.num_tags < 2 {
            return Err(invalid(
                CONFIG,
                format!("num_tags must be >= 2, got {}", self.num_tags),
            ));
        }
        check_dropout(CONFIG, "embedding_dropout", self.embedding_dropout)?;
        check_dropout(CONFIG, "output_dropout", self.output_dropout)?;
        self.masks
            .validate_recurrent(CONFIG, self.mode, self.input.is_tokens())?;
        Ok(())
    }
}

/// A many-to-many aligned tagger (see the [module docs](self)).
#[derive(Debug, Clone)]
pub struct SequenceTagger {
    cfg: SequenceTaggerConfig,
    encoder: SequenceEncoder,
    output: Linear,
    loss_implementation: Implementation,
}

impl SequenceTagger {
    /// Builds the model, loading or creating every parameter under `vb` (names in the
    /// [module docs](self)). Fails on an invalid config or a missing / misshapen tensor.
    /// Random sources start as after [`Stochastic::set_seed`] with seed 0.
    pub fn new(cfg: &SequenceTaggerConfig, vb: VarBuilder) -> Result<Self> {
        cfg.validate()?;
        let rnn_cfg = cfg.rnn_config();
        let encoder = SequenceEncoder::new(
            MODEL,
            &cfg.input,
            &rnn_cfg,
            cfg.embedding_dropout,
            cfg.output_dropout,
            cfg.masks.embedding_dropout,
            &vb,
        )?;
        let output =
            rnn_core::linear::linear(rnn_cfg.output_size(), cfg.num_tags, vb.pp("output"))?;
        Ok(Self {
            cfg: cfg.clone(),
            encoder,
            output,
            loss_implementation: Implementation::Auto,
        })
    }

    /// The same model with [`SequenceTagger::loss`] computing the output layer and the
    /// cross-entropy as `implementation` says: `Auto` (default) one fused op on the CPU
    /// (`rnn_core::output`: no `(batch, seq, num_tags)` logits tensor, a hand-written backward),
    /// `Composed` the plain Candle ops (its reference twin), `Fused` the op or an error.
    pub fn with_loss_implementation(mut self, implementation: Implementation) -> Self {
        self.loss_implementation = implementation;
        self
    }

    /// The configuration.
    pub fn config(&self) -> &SequenceTaggerConfig {
        &self.cfg
    }

    /// The recurrent layer.
    pub fn rnn(&self) -> &Rnn {
        self.encoder.rnn()
    }

    /// Per-step tag logits `(batch, seq, num_tags)`.
    ///
    /// # Arguments
    /// - `input`: token ids `u32 (batch, seq)` or features `(batch, seq, size)` (see [`Input`]),
    ///   right-padded.
    /// - `lengths`: valid steps per sequence, each in `1..=seq`; `None` = all `seq` steps valid.
    ///   Values at padded steps never influence the logits of valid steps; the logits at padded
    ///   steps are meaningless (the output bias) and are ignored by [`SequenceTagger::loss`] and
    ///   [`SequenceTagger::predict`].
    /// - `train`: turns dropout on.
    ///
    /// # Errors
    /// A [`candle_core::Error::Msg`] starting with `SequenceTagger:` and naming the argument and its
    /// shape for: a wrong dtype, rank or feature size of `input`, an input on another device,
    /// `lengths` of the wrong count or outside `1..=seq`, a token id `>= vocab_size` at a valid
    /// step (checked with one scalar reduction copied to the host, on every device).
    pub fn forward(
        &self,
        input: &Tensor,
        lengths: Option<&[usize]>,
        train: bool,
    ) -> Result<Tensor> {
        let (ys, _) = self.encoder.forward(input, lengths, train)?;
        let ys = self.encoder.output_dropout(&ys, train)?;
        self.output.forward(&ys)
    }

    /// Mean cross-entropy (nats, rank 0) over the valid steps of every sequence against `tags`,
    /// `u32 (batch, seq)` tag ids `< num_tags`; ids at padded steps are ignored (any value,
    /// e.g. `u32::MAX`). Other arguments as [`SequenceTagger::forward`].
    pub fn loss(
        &self,
        input: &Tensor,
        lengths: Option<&[usize]>,
        tags: &Tensor,
        train: bool,
    ) -> Result<Tensor> {
        let (b, t) = self.encoder.check(input, lengths)?;
        self.check_tags(tags, lengths, b, t)?;
        let (ys, _) = self.encoder.forward(input, lengths, train)?;
        let ys = self.encoder.output_dropout(&ys, train)?;
        let mask = length_mask(lengths, b, t, DType::U8, input.device())?;
        linear_cross_entropy_sum_with(
            &ys,
            self.output.weight(),
            self.output.bias(),
            tags,
            Some(&mask),
            self.loss_implementation,
        )?
        .mean()
    }

    /// Checks `u32 (batch, seq)` tags with ids `< num_tags` at valid steps (one scalar copied to
    /// the host).
    fn check_tags(
        &self,
        tags: &Tensor,
        lengths: Option<&[usize]>,
        b: usize,
        t: usize,
    ) -> Result<()> {
        if tags.dtype() != DType::U32 {
            return Err(invalid(
                MODEL,
                format!("`tags` must hold u32 tag ids, got dtype {:?}", tags.dtype()),
            ));
        }
        if tags.dims() != [b, t] {
            return Err(invalid(
                MODEL,
                format!(
                    "`tags` must have the input's shape (batch, seq) = ({b}, {t}), got {:?}",
                    tags.dims()
                ),
            ));
        }
        if !value_checks_on(tags.device()) {
            return Ok(()); // reading the tags back would stall the device once per step
        }
        let valid = match lengths {
            Some(lengths) => {
                let mask = length_mask(Some(lengths), b, t, DType::U8, tags.device())?;
                mask.where_cond(tags, &tags.zeros_like()?)?
            }
            None => tags.clone(),
        };
        let max = valid.max_all()?.to_scalar::<u32>()?;
        if max as usize >= self.cfg.num_tags {
            return Err(invalid(
                MODEL,
                format!(
                    "`tags` holds tag {max} at a valid step, but there are {} tags",
                    self.cfg.num_tags
                ),
            ));
        }
        Ok(())
    }

    /// The most likely tag at each valid step (eval mode): one vector per sequence, of length
    /// `lengths[b]` (or `seq` without lengths).
    pub fn predict(&self, input: &Tensor, lengths: Option<&[usize]>) -> Result<Vec<Vec<u32>>> {
        let rows = self
            .forward(input, lengths, false)?
            .argmax(D::Minus1)?
            .to_vec2::<u32>()?;
        Ok(match lengths {
            Some(lengths) => rows
                .into_iter()
                .zip(lengths)
                .map(|(mut row, &l)| {
                    row.truncate(l);
                    row
                })
                .collect(),
            None => rows,
        })
    }

    /// The tag sequence with the largest summed log-probability among those `mask` allows, for
    /// each sequence (eval mode; [`viterbi`] over the log-softmax of the logits). Lengths as
    /// [`SequenceTagger::predict`]; with [`TransitionMask::unconstrained`] the result equals it.
    ///
    /// # Errors
    /// Those of [`SequenceTagger::forward`]; a mask over another number of tags than
    /// `num_tags`; a mask that allows no sequence of some length.
    pub fn predict_constrained(
        &self,
        input: &Tensor,
        lengths: Option<&[usize]>,
        mask: &TransitionMask,
    ) -> Result<Vec<Vec<u32>>> {
        if mask.num_tags() != self.cfg.num_tags {
            return Err(invalid(
                MODEL,
                format!(
                    "`mask` is over {} tags, but the model has {}",
                    mask.num_tags(),
                    self.cfg.num_tags
                ),
            ));
        }
        let logits = self.forward(input, lengths, false)?;
        let scores = candle_nn::ops::log_softmax(&logits.to_dtype(DType::F32)?, D::Minus1)?
            .to_vec3::<f32>()?;
        scores
            .iter()
            .enumerate()
            .map(|(b, rows)| {
                let len = lengths.map_or(rows.len(), |l| l[b]);
                viterbi(&rows[..len].concat(), mask)
            })
            .collect()
    }
}

impl Stochastic for SequenceTagger {
    /// Seeds the shared encoder's random sources ([`SequenceEncoder`]'s `set_seed`).
    fn set_seed(&mut self, seed: u64) {
        self.encoder.set_seed(seed);
    }

    /// `[rnn, embedding dropout, output dropout]`, then the word dropout's with
    /// `masks.embedding_dropout` on.
    fn rng_counters(&self) -> Vec<u64> {
        self.encoder.rng_counters()
    }

    fn set_rng_counters(&self, counters: &[u64]) -> Result<()> {
        self.encoder.set_rng_counters(counters)
    }
}

/// `forward_t(input, train)` = [`SequenceTagger::forward`] on unpadded input (no lengths):
/// logits `(batch, seq, num_tags)`, dropout on when `train`.
impl candle_nn::ModuleT for SequenceTagger {
    fn forward_t(&self, input: &Tensor, train: bool) -> Result<Tensor> {
        self.forward(input, None, train)
    }
}

#[cfg(test)]
mod tests;
