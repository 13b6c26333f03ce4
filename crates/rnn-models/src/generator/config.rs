//! [`GeneratorConfig`]: the context, where it enters ([`Conditioning`]) and how sequences end
//! ([`StopStrategy`]).

use std::fmt;
use std::str::FromStr;

use candle_core::Result;
use rnn_core::{Mode, RnnConfig};
use serde::{Deserialize, Serialize};

use crate::common::invalid;
use crate::config_checks::{check_dropout, check_positive};

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

/// Configuration of a [`ConditionedGenerator`](super::ConditionedGenerator).
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
    #[serde(default = "crate::defaults::one")]
    pub num_layers: usize,
    /// Cell kind. Default LSTM.
    #[serde(default = "crate::defaults::lstm")]
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
        check_positive(
            "GeneratorConfig",
            &[
                ("vocab_size", self.vocab_size),
                ("embedding_dim", self.embedding_dim),
                ("hidden_size", self.hidden_size),
                ("num_layers", self.num_layers),
                ("context_dim", self.context_dim),
            ],
        )?;
        check_dropout("GeneratorConfig", "dropout", self.dropout)?;
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
