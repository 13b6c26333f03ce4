//! [`Seq2SeqConfig`] and the [`Attention`] kinds.

use std::fmt;
use std::str::FromStr;

use candle_core::Result;
use rnn_core::{Mode, RnnConfig};
use serde::{Deserialize, Serialize};

use super::MODEL;
use crate::common::invalid;
use crate::config_checks::{check_dropout, check_positive};

/// The attention of the decoder over the encoder outputs (see the [module docs](super)).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Attention {
    /// No attention: the decoder sees the source only through the bridged state.
    None,
    /// Bahdanau (additive): `v^T tanh(W_q q + W_k k + b)`.
    Additive,
    /// Luong dot: `q . k`.
    Dot,
    /// Luong general: `q^T W k`.
    #[default]
    General,
}

impl Attention {
    /// Every kind, in a fixed order.
    pub const ALL: [Attention; 4] = [
        Attention::None,
        Attention::Additive,
        Attention::Dot,
        Attention::General,
    ];

    /// The config / command-line spelling: `none`, `additive`, `dot`, `general`.
    pub fn as_str(self) -> &'static str {
        match self {
            Attention::None => "none",
            Attention::Additive => "additive",
            Attention::Dot => "dot",
            Attention::General => "general",
        }
    }
}

impl fmt::Display for Attention {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Attention {
    type Err = candle_core::Error;

    /// Accepts `none`, `additive` (or `bahdanau`), `dot`, `general` (or `luong`), any case.
    fn from_str(s: &str) -> Result<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "none" => Ok(Attention::None),
            "additive" | "bahdanau" => Ok(Attention::Additive),
            "dot" => Ok(Attention::Dot),
            "general" | "luong" => Ok(Attention::General),
            other => Err(invalid(
                MODEL,
                format!("unknown attention '{other}': expected one of none|additive|dot|general"),
            )),
        }
    }
}

fn default_embedding_dim() -> usize {
    64
}
fn default_hidden_size() -> usize {
    128
}
fn default_bos() -> u32 {
    1
}
fn default_eos() -> u32 {
    2
}

/// Configuration of a [`Seq2Seq`](super::Seq2Seq). Every field but the vocabulary sizes has a serde default
/// (the values of [`Seq2SeqConfig::new`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Seq2SeqConfig {
    /// Source vocabulary size (ids `0..src_vocab`).
    pub src_vocab: usize,
    /// Target vocabulary size (ids `0..tgt_vocab`), the number of logits.
    pub tgt_vocab: usize,
    /// Embedding size of source and target tokens. Default 64.
    #[serde(default = "default_embedding_dim")]
    pub embedding_dim: usize,
    /// Hidden size of the decoder and of each encoder direction. Default 128.
    #[serde(default = "default_hidden_size")]
    pub hidden_size: usize,
    /// Stacked encoder layers. Default 1.
    #[serde(default = "crate::defaults::one")]
    pub encoder_layers: usize,
    /// Stacked decoder layers. Default 1.
    #[serde(default = "crate::defaults::one")]
    pub decoder_layers: usize,
    /// Cell of encoder and decoder. Default LSTM.
    #[serde(default = "crate::defaults::lstm")]
    pub mode: Mode,
    /// Bidirectional encoder (its final states go through the learned bridge). Default false.
    #[serde(default)]
    pub bidirectional_encoder: bool,
    /// Attention kind. Default `general`.
    #[serde(default)]
    pub attention: Attention,
    /// Dropout on embeddings, between stacked RNN layers and before the output layer, in
    /// training only; in `[0, 1)`. Default 0.
    #[serde(default)]
    pub dropout: f64,
    /// Start-of-sequence id (target vocabulary). Default 1.
    #[serde(default = "default_bos")]
    pub bos_id: u32,
    /// End-of-sequence id (target vocabulary). Default 2.
    #[serde(default = "default_eos")]
    pub eos_id: u32,
    /// Padding id (both vocabularies). Default 0.
    #[serde(default)]
    pub pad_id: u32,
    /// Feed the previous attentional hidden into the decoder RNN (Luong input feeding; needs
    /// attention). Default false.
    #[serde(default)]
    pub input_feeding: bool,
    /// Layer-normalised encoder and decoder layers (`RnnConfig::layer_norm`: LN of the gate
    /// pre-activations' input and recurrent parts and of the LSTM cell state, with parameters
    /// `encoder.rnn.layernorm_*` and `decoder.rnn.layernorm_*`); LSTM and GRU only. Default
    /// false, left out of the JSON while off, so configs saved without the field load unchanged.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub layer_norm: bool,
}

impl Seq2SeqConfig {
    /// Defaults: embedding 64, hidden 128, one LSTM layer each side, unidirectional, `general`
    /// attention, no dropout, `pad = 0`, `bos = 1`, `eos = 2`, no input feeding.
    pub fn new(src_vocab: usize, tgt_vocab: usize) -> Self {
        Self {
            src_vocab,
            tgt_vocab,
            embedding_dim: default_embedding_dim(),
            hidden_size: default_hidden_size(),
            encoder_layers: 1,
            decoder_layers: 1,
            mode: crate::defaults::lstm(),
            bidirectional_encoder: false,
            attention: Attention::default(),
            dropout: 0.0,
            bos_id: default_bos(),
            eos_id: default_eos(),
            pad_id: 0,
            input_feeding: false,
            layer_norm: false,
        }
    }

    /// Features per encoder output step: `hidden_size`, doubled when bidirectional.
    pub fn memory_size(&self) -> usize {
        if self.bidirectional_encoder {
            2 * self.hidden_size
        } else {
            self.hidden_size
        }
    }

    /// Checks every field; the error names the field and the value at fault.
    pub fn validate(&self) -> Result<()> {
        let what = "Seq2SeqConfig";
        let positive = [
            ("src_vocab", self.src_vocab),
            ("tgt_vocab", self.tgt_vocab),
            ("embedding_dim", self.embedding_dim),
            ("hidden_size", self.hidden_size),
            ("encoder_layers", self.encoder_layers),
            ("decoder_layers", self.decoder_layers),
        ];
        check_positive(what, &positive)?;
        check_dropout(what, "dropout", self.dropout)?;
        for (name, id) in [("bos_id", self.bos_id), ("eos_id", self.eos_id)] {
            if id as usize >= self.tgt_vocab {
                return Err(invalid(
                    what,
                    format!(
                        "{name} = {id} is outside the target vocabulary (tgt_vocab = {})",
                        self.tgt_vocab
                    ),
                ));
            }
        }
        let pad = self.pad_id as usize;
        if pad >= self.tgt_vocab || pad >= self.src_vocab {
            return Err(invalid(
                what,
                format!(
                    "pad_id = {pad} must be a valid id of both vocabularies (src_vocab = {}, tgt_vocab = {})",
                    self.src_vocab, self.tgt_vocab
                ),
            ));
        }
        if self.bos_id == self.eos_id {
            return Err(invalid(
                what,
                format!("bos_id and eos_id must differ, both are {}", self.bos_id),
            ));
        }
        if self.attention == Attention::Dot && self.bidirectional_encoder {
            return Err(invalid(
                what,
                format!(
                    "attention 'dot' needs queries (hidden_size = {}) and keys of the same size, but a bidirectional encoder gives keys of size {}; use 'general' or 'additive'",
                    self.hidden_size,
                    self.memory_size()
                ),
            ));
        }
        if self.input_feeding && self.attention == Attention::None {
            return Err(invalid(
                what,
                "input_feeding feeds the previous attentional hidden and needs attention; attention is 'none'",
            ));
        }
        self.encoder_rnn_config()
            .validate()
            .and_then(|()| self.decoder_rnn_config().validate())
            .map_err(|e| invalid(what, e))
    }

    /// The encoder's recurrent layers: embeddings in, `hidden_size` per direction.
    pub fn encoder_rnn_config(&self) -> RnnConfig {
        RnnConfig::new(self.mode, self.embedding_dim, self.hidden_size)
            .with_num_layers(self.encoder_layers)
            .with_bidirectional(self.bidirectional_encoder)
            .with_dropout(self.dropout)
            .with_layer_norm(self.layer_norm)
    }

    /// The decoder's recurrent layers: embeddings (and, with input feeding, the previous
    /// attentional hidden) in, `hidden_size` out.
    pub fn decoder_rnn_config(&self) -> RnnConfig {
        let input = if self.input_feeding {
            self.embedding_dim + self.hidden_size
        } else {
            self.embedding_dim
        };
        RnnConfig::new(self.mode, input, self.hidden_size)
            .with_num_layers(self.decoder_layers)
            .with_dropout(self.dropout)
            .with_layer_norm(self.layer_norm)
    }
}
