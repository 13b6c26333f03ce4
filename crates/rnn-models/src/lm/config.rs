//! [`LanguageModelConfig`] and the generation options [`GenerateConfig`].

use candle_core::Result;
use rnn_core::{Mode, RnnConfig};
use serde::{Deserialize, Serialize};

use crate::common::invalid;
use crate::config_checks::check_dropout;
use crate::masks::MaskOptions;
use crate::sampling::SamplingConfig;

/// Configuration of a [`LanguageModel`](super::LanguageModel). Serde defaults: `mode` LSTM, `num_layers` 1, `dropout`
/// 0, no tying, no `init_range`, no special ids.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LanguageModelConfig {
    /// Number of token ids; ids are `0..vocab_size`.
    pub vocab_size: usize,
    /// Size of the token embeddings (the recurrent layer's input size).
    pub embedding_dim: usize,
    /// Hidden size of every recurrent layer.
    pub hidden_size: usize,
    /// Stacked recurrent layers. Default 1.
    #[serde(default = "crate::defaults::one")]
    pub num_layers: usize,
    /// Recurrent cell. Default LSTM.
    #[serde(default = "crate::defaults::lstm")]
    pub mode: Mode,
    /// Dropout probability in `[0, 1)` on the embeddings, between recurrent layers and on the
    /// last layer's output (the non-recurrent connections, as in Zaremba et al.), in training
    /// only. Default 0.
    #[serde(default)]
    pub dropout: f64,
    /// Share the embedding matrix with the decoder (`decoder.weight` = `embedding.weight`);
    /// requires `embedding_dim == hidden_size`. Default false.
    #[serde(default)]
    pub tie_weights: bool,
    /// `Some(r)`: `embedding.weight` and `decoder.weight` start U(-r, r) and `decoder.bias` at 0
    /// (Zaremba et al. use r = 0.1 for the small model, PyTorch's example too). `None`: PyTorch's
    /// defaults, N(0, 1) for the embedding and U(-1/sqrt(H), 1/sqrt(H)) for the decoder. The
    /// recurrent layer always keeps PyTorch's default init.
    #[serde(default)]
    pub init_range: Option<f64>,
    /// Padding id: fills the padded tail of batches built by [`LanguageModel::log_prob_batch`](super::LanguageModel::log_prob_batch)
    /// (0 when `None`). Padded positions are never scored, whatever id they hold.
    #[serde(default)]
    pub pad_id: Option<u32>,
    /// Beginning-of-sequence id: when set, [`LanguageModel::log_prob`](super::LanguageModel::log_prob) scores the first token
    /// given `bos`, and [`LanguageModel::generate`](super::LanguageModel::generate) starts from it when the prompt is empty.
    #[serde(default)]
    pub bos_id: Option<u32>,
    /// End-of-sequence id: [`LanguageModel::generate`](super::LanguageModel::generate) can stop when it draws it.
    #[serde(default)]
    pub eos_id: Option<u32>,
    /// Mask regularisers: variational, recurrent and weight dropout and zoneout in the recurrent
    /// layer, embedding dropout on the words (AWD-LSTM's set). All off by default; flattened
    /// into this config's JSON and left out while off.
    #[serde(flatten)]
    pub masks: MaskOptions,
    /// Layer-normalised LSTM/GRU layers (`RnnConfig::layer_norm`: LN of the gate
    /// pre-activations' input and recurrent parts and of the LSTM cell state, with parameters
    /// `rnn.layernorm_*`). Default false, so configs saved without the field load unchanged.
    #[serde(default)]
    pub layer_norm: bool,
}

impl LanguageModelConfig {
    /// One layer of `mode`, no dropout, no tying, default init, no special ids.
    pub fn new(mode: Mode, vocab_size: usize, embedding_dim: usize, hidden_size: usize) -> Self {
        Self {
            vocab_size,
            embedding_dim,
            hidden_size,
            num_layers: 1,
            mode,
            dropout: 0.0,
            tie_weights: false,
            init_range: None,
            pad_id: None,
            bos_id: None,
            eos_id: None,
            masks: MaskOptions::default(),
            layer_norm: false,
        }
    }

    /// Sets the mask regularisers.
    pub fn with_masks(mut self, masks: MaskOptions) -> Self {
        self.masks = masks;
        self
    }

    /// Sets `layer_norm`.
    pub fn with_layer_norm(mut self, layer_norm: bool) -> Self {
        self.layer_norm = layer_norm;
        self
    }

    /// Sets `num_layers`.
    pub fn with_num_layers(mut self, num_layers: usize) -> Self {
        self.num_layers = num_layers;
        self
    }

    /// Sets `dropout`.
    pub fn with_dropout(mut self, dropout: f64) -> Self {
        self.dropout = dropout;
        self
    }

    /// Sets `tie_weights`.
    pub fn with_tie_weights(mut self, tie_weights: bool) -> Self {
        self.tie_weights = tie_weights;
        self
    }

    /// Sets `init_range`.
    pub fn with_init_range(mut self, init_range: Option<f64>) -> Self {
        self.init_range = init_range;
        self
    }

    /// Sets `pad_id`.
    pub fn with_pad_id(mut self, pad_id: Option<u32>) -> Self {
        self.pad_id = pad_id;
        self
    }

    /// Sets `bos_id`.
    pub fn with_bos_id(mut self, bos_id: Option<u32>) -> Self {
        self.bos_id = bos_id;
        self
    }

    /// Sets `eos_id`.
    pub fn with_eos_id(mut self, eos_id: Option<u32>) -> Self {
        self.eos_id = eos_id;
        self
    }

    /// The recurrent layer's configuration: unidirectional, batch-first, `dropout` between
    /// layers, the recurrent-layer options of `masks`.
    pub fn rnn_config(&self) -> RnnConfig {
        self.masks.apply(
            RnnConfig::new(self.mode, self.embedding_dim, self.hidden_size)
                .with_num_layers(self.num_layers)
                .with_dropout(self.dropout)
                .with_layer_norm(self.layer_norm),
        )
    }

    /// Checks every field; the error names the field and the value at fault.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(invalid("LanguageModelConfig", m));
        if self.vocab_size == 0 {
            return bad("vocab_size must be > 0".into());
        }
        if self.embedding_dim == 0 {
            return bad("embedding_dim must be > 0".into());
        }
        if self.hidden_size == 0 {
            return bad("hidden_size must be > 0".into());
        }
        if self.num_layers == 0 {
            return bad("num_layers must be >= 1, got 0".into());
        }
        check_dropout("LanguageModelConfig", "dropout", self.dropout)?;
        self.masks.validate("LanguageModelConfig", self.mode)?;
        let out = self.rnn_config().output_size();
        if self.tie_weights && self.embedding_dim != out {
            return bad(format!(
                "tie_weights needs embedding_dim == the recurrent output size (hidden_size), got embedding_dim={} and hidden_size={out}",
                self.embedding_dim
            ));
        }
        if let Some(r) = self.init_range {
            if !(r.is_finite() && r > 0.0) {
                return bad(format!("init_range must be finite and > 0, got {r}"));
            }
        }
        for (name, id) in [
            ("pad_id", self.pad_id),
            ("bos_id", self.bos_id),
            ("eos_id", self.eos_id),
        ] {
            if let Some(id) = id {
                if id as usize >= self.vocab_size {
                    return bad(format!(
                        "{name} = {id} is outside the vocabulary (vocab_size = {})",
                        self.vocab_size
                    ));
                }
            }
        }
        self.rnn_config()
            .validate()
            .map_err(|e| invalid("LanguageModelConfig", e))
    }
}

fn default_max_len() -> usize {
    100
}

/// Options of [`LanguageModel::generate`](super::LanguageModel::generate). Serde defaults: sampling at temperature 1,
/// `max_len` 100, `stop_at_eos` true.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct GenerateConfig {
    /// How each token is chosen.
    #[serde(default)]
    pub sampling: SamplingConfig,
    /// Most tokens to generate (the prompt not counted, an `eos` counted).
    #[serde(default = "default_max_len")]
    pub max_len: usize,
    /// Stop after drawing the model's `eos_id` (which must then be configured).
    #[serde(default = "crate::defaults::yes")]
    pub stop_at_eos: bool,
}

impl Default for GenerateConfig {
    fn default() -> Self {
        Self {
            sampling: SamplingConfig::default(),
            max_len: default_max_len(),
            stop_at_eos: true,
        }
    }
}

impl GenerateConfig {
    /// Checks the sampling options (the error names the field).
    pub fn validate(&self) -> Result<()> {
        self.sampling.validate()
    }
}
