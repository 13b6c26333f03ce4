//! [`SequenceClassifierConfig`].

use candle_core::Result;
use rnn_core::{Mode, RnnConfig};
use serde::{Deserialize, Serialize};

use super::{Input, Pooling, CONFIG};
use crate::common::{invalid, Activation};
use crate::config_checks::check_dropout;

/// Configuration of a [`SequenceClassifier`](super::SequenceClassifier); serde-serialisable, with `with_*` setters.
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
    #[serde(default = "crate::defaults::one")]
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
            masks: crate::masks::MaskOptions::default(),
            layer_norm: false,
        }
    }

    crate::encoder::sequence_encoder_config_methods!();

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
        self.masks
            .validate_recurrent(CONFIG, self.mode, self.input.is_tokens())?;
        Ok(())
    }
}
