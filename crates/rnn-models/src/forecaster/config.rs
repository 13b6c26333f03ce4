//! [`ForecasterConfig`] and the [`ForecastStrategy`] kinds.

use std::fmt;
use std::str::FromStr;

use candle_core::Result;
use rnn_core::{Mode, RnnConfig};
use serde::{Deserialize, Serialize};

use crate::common::{invalid, Activation};
use crate::config_checks::{check_dropout, check_positive};

/// How a [`Forecaster`](super::Forecaster) predicts the future.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ForecastStrategy {
    /// One step ahead at every step: output `(B, T, target)`, row `t` predicting step `t + 1`.
    /// [`Forecaster::predict`](super::Forecaster::predict) gives only `horizon = 1`. The default.
    #[default]
    NextStep,
    /// All `horizon` future steps at once from the last valid state: output `(B, horizon, target)`.
    Direct,
    /// Trained as [`ForecastStrategy::NextStep`]; [`Forecaster::predict`](super::Forecaster::predict) feeds its predictions
    /// back for any horizon (see the [module docs](super) for the inputs at future steps).
    Autoregressive,
}

impl ForecastStrategy {
    /// Every strategy, in a fixed order.
    pub const ALL: [ForecastStrategy; 3] = [
        ForecastStrategy::NextStep,
        ForecastStrategy::Direct,
        ForecastStrategy::Autoregressive,
    ];

    /// The config / command-line spelling: `next-step`, `direct`, `autoregressive`.
    pub fn as_str(self) -> &'static str {
        match self {
            ForecastStrategy::NextStep => "next-step",
            ForecastStrategy::Direct => "direct",
            ForecastStrategy::Autoregressive => "autoregressive",
        }
    }

    /// Whether the model output is aligned with the input steps (`(B, T, target)`).
    pub fn is_aligned(self) -> bool {
        self != ForecastStrategy::Direct
    }
}

impl fmt::Display for ForecastStrategy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for ForecastStrategy {
    type Err = candle_core::Error;

    /// Accepts `next-step` (or `next`), `direct`, `autoregressive` (or `ar`); any case, `-` or `_`.
    fn from_str(s: &str) -> Result<Self> {
        match s
            .trim()
            .to_ascii_lowercase()
            .replace(['_', ' '], "-")
            .as_str()
        {
            "next-step" | "next" => Ok(ForecastStrategy::NextStep),
            "direct" => Ok(ForecastStrategy::Direct),
            "autoregressive" | "ar" => Ok(ForecastStrategy::Autoregressive),
            _ => Err(candle_core::Error::Msg(format!(
                "unknown forecast strategy '{s}': expected one of next-step, direct, autoregressive"
            ))),
        }
    }
}

/// Configuration of a [`Forecaster`](super::Forecaster).
///
/// ```
/// use rnn_models::forecaster::{ForecastStrategy, ForecasterConfig};
/// // 3 input features, forecasting feature 0 for 12 steps by feeding predictions back.
/// let cfg = ForecasterConfig::new(3, 1, 32, ForecastStrategy::Autoregressive)
///     .with_horizon(12)
///     .with_target_columns(vec![0]);
/// cfg.validate()?;
/// # Ok::<(), candle_core::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ForecasterConfig {
    /// Features per input step `F`.
    pub input_size: usize,
    /// Values predicted per future step.
    pub target_size: usize,
    /// Hidden size of every recurrent layer.
    #[serde(alias = "hidden")]
    pub hidden_size: usize,
    /// Stacked recurrent layers. Default 1.
    #[serde(default = "crate::defaults::one", alias = "layers")]
    pub num_layers: usize,
    /// Cell kind. Default LSTM.
    #[serde(default = "crate::defaults::lstm")]
    pub mode: Mode,
    /// Dropout between recurrent layers and before the head, in training only. Default 0.
    #[serde(default)]
    pub dropout: f64,
    /// Steps predicted by [`ForecastStrategy::Direct`] (the head's output is `horizon *
    /// target_size`) and the default horizon of the other strategies. Default 1.
    #[serde(default = "crate::defaults::one")]
    pub horizon: usize,
    /// How the future is predicted. Default [`ForecastStrategy::NextStep`].
    #[serde(default)]
    pub strategy: ForecastStrategy,
    /// Input column of each target (`target_size` distinct indices `< input_size`); required by
    /// [`ForecastStrategy::Autoregressive`], optional (but checked) otherwise.
    #[serde(default)]
    pub target_columns: Vec<usize>,
    /// Hidden layer sizes of the regression head; empty (the default) = one Linear layer.
    #[serde(default)]
    pub head_hidden: Vec<usize>,
    /// Activation of the head's hidden layers. Default tanh.
    #[serde(default)]
    pub head_activation: Activation,
    /// Layer-normalised LSTM/GRU layers (`RnnConfig::layer_norm`, parameters `rnn.layernorm_*`).
    /// Default false, so configs saved without the field load unchanged.
    #[serde(default)]
    pub layer_norm: bool,
}

impl ForecasterConfig {
    /// One LSTM layer, no dropout, horizon 1, a linear head, no target columns.
    pub fn new(
        input_size: usize,
        target_size: usize,
        hidden_size: usize,
        strategy: ForecastStrategy,
    ) -> Self {
        Self {
            input_size,
            target_size,
            hidden_size,
            num_layers: 1,
            mode: Mode::Lstm,
            dropout: 0.0,
            horizon: 1,
            strategy,
            target_columns: Vec::new(),
            head_hidden: Vec::new(),
            head_activation: Activation::Tanh,
            layer_norm: false,
        }
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

    /// Sets `horizon`.
    pub fn with_horizon(mut self, horizon: usize) -> Self {
        self.horizon = horizon;
        self
    }

    /// Sets `target_columns`.
    pub fn with_target_columns(mut self, target_columns: Vec<usize>) -> Self {
        self.target_columns = target_columns;
        self
    }

    /// Sets `head_hidden` and `head_activation`.
    pub fn with_head(mut self, head_hidden: Vec<usize>, activation: Activation) -> Self {
        self.head_hidden = head_hidden;
        self.head_activation = activation;
        self
    }

    /// The recurrent layer's configuration (layer-normalised when `layer_norm`).
    pub fn rnn_config(&self) -> RnnConfig {
        RnnConfig::new(self.mode, self.input_size, self.hidden_size)
            .with_num_layers(self.num_layers)
            .with_dropout(self.dropout)
            .with_layer_norm(self.layer_norm)
    }

    /// Checks every field; the error names the field and the value at fault.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(invalid("ForecasterConfig", m));
        check_positive(
            "ForecasterConfig",
            &[
                ("input_size", self.input_size),
                ("target_size", self.target_size),
                ("hidden_size", self.hidden_size),
                ("num_layers", self.num_layers),
                ("horizon", self.horizon),
            ],
        )?;
        check_dropout("ForecasterConfig", "dropout", self.dropout)?;
        if let Some(i) = self.head_hidden.iter().position(|&h| h == 0) {
            return bad(format!("head_hidden[{i}] must be > 0, got 0"));
        }
        if self.strategy == ForecastStrategy::Autoregressive && self.target_columns.is_empty() {
            return bad(format!(
                "strategy = autoregressive feeds predictions back as inputs and needs target_columns (the input column of each of the {} targets)",
                self.target_size
            ));
        }
        if !self.target_columns.is_empty() {
            if self.target_columns.len() != self.target_size {
                return bad(format!(
                    "target_columns has {} entries, expected target_size = {}",
                    self.target_columns.len(),
                    self.target_size
                ));
            }
            for (j, &col) in self.target_columns.iter().enumerate() {
                if col >= self.input_size {
                    return bad(format!(
                        "target_columns[{j}] = {col} must be < input_size = {}",
                        self.input_size
                    ));
                }
                if self.target_columns[..j].contains(&col) {
                    return bad(format!("target_columns[{j}] = {col} is repeated"));
                }
            }
        }
        Ok(())
    }
}
