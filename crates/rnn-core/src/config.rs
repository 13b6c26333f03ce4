//! The recurrent layer's configuration: cell kind, sizes and options, as in `torch.nn.RNNBase`.

use candle_core::{bail, Result};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// The kind of recurrent cell, with PyTorch's gate order.
///
/// - `Lstm`: gates i, f, g, o (Hochreiter & Schmidhuber 1997, with forget gate).
/// - `Gru`: gates r, z, n with `n = tanh(W_in x + b_in + r * (W_hn h + b_hn))` (Cho et al. 2014).
/// - `RnnTanh` / `RnnRelu`: Elman network `h' = act(W_ih x + b_ih + W_hh h + b_hh)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    /// Long short-term memory.
    Lstm,
    /// Gated recurrent unit.
    Gru,
    /// Vanilla RNN with tanh.
    RnnTanh,
    /// Vanilla RNN with ReLU.
    RnnRelu,
}

impl Mode {
    /// Every mode, in a fixed order (for tests, benchmarks and help texts).
    pub const ALL: [Mode; 4] = [Mode::Lstm, Mode::Gru, Mode::RnnTanh, Mode::RnnRelu];

    /// Number of gate blocks stacked in `weight_ih` / `weight_hh` (4 for LSTM, 3 for GRU, 1 otherwise).
    pub fn gate_count(self) -> usize {
        match self {
            Mode::Lstm => 4,
            Mode::Gru => 3,
            Mode::RnnTanh | Mode::RnnRelu => 1,
        }
    }

    /// Whether the state carries a cell `c` besides `h` (LSTM only).
    pub fn has_cell_state(self) -> bool {
        self == Mode::Lstm
    }

    /// The command-line / config spelling: `lstm`, `gru`, `rnn-tanh`, `rnn-relu`.
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Lstm => "lstm",
            Mode::Gru => "gru",
            Mode::RnnTanh => "rnn-tanh",
            Mode::RnnRelu => "rnn-relu",
        }
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Mode {
    type Err = candle_core::Error;

    /// Accepts `lstm`, `gru`, `rnn-tanh`, `rnn-relu` (also with `_`, any case; `rnn` means tanh).
    fn from_str(s: &str) -> Result<Self> {
        match s.to_ascii_lowercase().replace('_', "-").as_str() {
            "lstm" => Ok(Mode::Lstm),
            "gru" => Ok(Mode::Gru),
            "rnn" | "rnn-tanh" | "tanh" => Ok(Mode::RnnTanh),
            "rnn-relu" | "relu" => Ok(Mode::RnnRelu),
            other => bail!("unknown cell '{other}': expected one of lstm, gru, rnn-tanh, rnn-relu"),
        }
    }
}

fn default_layers() -> usize {
    1
}
fn default_true() -> bool {
    true
}

/// Configuration of a (possibly stacked, bidirectional) recurrent layer; field names and meaning
/// follow `torch.nn.RNNBase`, except that `batch_first` defaults to `true`.
///
/// ```
/// use rnn_core::{Mode, RnnConfig};
/// let cfg = RnnConfig::new(Mode::Lstm, 16, 32).with_num_layers(2).with_bidirectional(true);
/// assert_eq!(cfg.output_size(), 64);
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RnnConfig {
    /// Cell kind.
    pub mode: Mode,
    /// Features per input step.
    pub input_size: usize,
    /// Features of the hidden state `h` (and of `c` for LSTM).
    pub hidden_size: usize,
    /// Stacked layers; layer k > 0 reads layer k-1's output. Default 1.
    #[serde(default = "default_layers")]
    pub num_layers: usize,
    /// Whether the cells have `bias_ih` / `bias_hh`. Default true.
    #[serde(default = "default_true")]
    pub bias: bool,
    /// `true`: inputs and outputs are `(batch, seq_len, feature)`; `false`: `(seq_len, batch, feature)`.
    /// Default true. States are always `(layers * directions, batch, feature)`.
    #[serde(default = "default_true")]
    pub batch_first: bool,
    /// Dropout probability on the outputs of every layer but the last, in training only. Default 0.
    #[serde(default)]
    pub dropout: f64,
    /// Run a second, reversed direction per layer; outputs are `[forward ; backward]` on the
    /// feature axis. Default false.
    #[serde(default)]
    pub bidirectional: bool,
    /// LSTM only: project `h` to this size with `weight_hr_l{k}` (Sak et al. 2014). 0 = none.
    #[serde(default)]
    pub proj_size: usize,

    // Regularisation by masks (docs/REGULARIZATION.md). Every rate defaults to 0 (off), is left
    // out of the serialised config while 0, and leaves the layer exactly as without it when 0.
    /// Variational ("locked") dropout on the input of every layer: one mask per sequence and layer,
    /// shared by all steps (Gal & Ghahramani 2016). Training only. Default 0.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub input_dropout: f64,
    /// Variational dropout on the last layer's output: one mask per sequence, shared by all steps.
    /// Training only. Default 0.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub output_dropout: f64,
    /// Variational dropout on the recurrent state where it enters `W_hh` (Keras'
    /// `recurrent_dropout`): one mask per sequence and layer-direction; the carried state itself
    /// is not masked. Training only. Default 0.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub recurrent_dropout: f64,
    /// Zoneout on `h` (Krueger et al. 2016): in training each unit keeps its previous value with
    /// this probability at each step; in evaluation `h_t = z h_{t-1} + (1 - z) h~_t`. Default 0.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub zoneout_h: f64,
    /// Zoneout on the LSTM cell `c`, with a rate of its own (LSTM only). Default 0.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub zoneout_c: f64,
    /// Weight dropout (DropConnect) on `W_hh` (Merity et al. 2017's WeightDrop): one mask per
    /// training forward, scaled by `1 / (1 - p)`. Default 0.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub weight_drop: f64,
    /// LSTM and GRU only: layer normalisation ([Ba et al. 2016](https://arxiv.org/abs/1607.06450),
    /// as haste's `LayerNormLSTM` and TF-Addons' `LayerNormLSTMCell`). With
    /// `LN(v) = (v - mean(v)) / sqrt(var(v) + 1e-5) * w + b` over the feature axis (biased
    /// variance, as `torch.nn.functional.layer_norm`), one step is
    /// - LSTM: `a = LN_x(W_ih x) + LN_h(W_hh h) + b_ih + b_hh` split into i, f, g, o as usual,
    ///   `c' = f * c + i * g`, `h' = o * tanh(LN_c(c'))` (the carried state is the
    ///   un-normalised `c'`);
    /// - GRU: `gx = LN_x(W_ih x) + b_ih`, `gh = LN_h(W_hh h) + b_hh` over all 3 gate blocks, then
    ///   PyTorch's `r = σ(gx_r + gh_r)`, `z = σ(gx_z + gh_z)`, `n = tanh(gx_n + r * gh_n)`,
    ///   `h' = (1 - z) * n + z * h`.
    ///
    /// Each LN has a gain (init 1) and a bias (init 0) of its own, named
    /// `layernorm_x_weight_l{k}`, `layernorm_x_bias_l{k}`, `layernorm_h_weight_l{k}`,
    /// `layernorm_h_bias_l{k}` (`G * hidden_size` each) and, LSTM only, `layernorm_c_weight_l{k}`,
    /// `layernorm_c_bias_l{k}` (`hidden_size`), with `_reverse` for the backward direction.
    /// (haste's input and recurrent norms have a gain only; the biases here are redundant with
    /// `b_ih + b_hh` but keep every norm a plain `torch.nn.LayerNorm`.) The fused CPU op
    /// normalises the input part of all steps before the recurrence, and the recurrent part and
    /// the cell state inside each step; for the backward it keeps about twice the plain cell's
    /// activations per step (LSTM: 16 values per hidden unit against 7; GRU: 11 against 5).
    /// Not with `proj_size`. Default false: PyTorch's cells,
    /// weight names and behaviour; configs and checkpoints written without the field load with
    /// it off.
    #[serde(default)]
    pub layer_norm: bool,
}

fn is_zero(x: &f64) -> bool {
    *x == 0.0
}

impl RnnConfig {
    /// A single-layer, unidirectional, batch-first configuration with bias and no dropout.
    pub fn new(mode: Mode, input_size: usize, hidden_size: usize) -> Self {
        Self {
            mode,
            input_size,
            hidden_size,
            num_layers: 1,
            bias: true,
            batch_first: true,
            dropout: 0.0,
            bidirectional: false,
            proj_size: 0,
            input_dropout: 0.0,
            output_dropout: 0.0,
            recurrent_dropout: 0.0,
            zoneout_h: 0.0,
            zoneout_c: 0.0,
            weight_drop: 0.0,
            layer_norm: false,
        }
    }

    /// Sets `num_layers`.
    pub fn with_num_layers(mut self, num_layers: usize) -> Self {
        self.num_layers = num_layers;
        self
    }

    /// Sets `bias`.
    pub fn with_bias(mut self, bias: bool) -> Self {
        self.bias = bias;
        self
    }

    /// Sets `batch_first`.
    pub fn with_batch_first(mut self, batch_first: bool) -> Self {
        self.batch_first = batch_first;
        self
    }

    /// Sets `dropout` (probability in [0, 1)).
    pub fn with_dropout(mut self, dropout: f64) -> Self {
        self.dropout = dropout;
        self
    }

    /// Sets `bidirectional`.
    pub fn with_bidirectional(mut self, bidirectional: bool) -> Self {
        self.bidirectional = bidirectional;
        self
    }

    /// Sets `proj_size` (LSTM only; 0 = no projection).
    pub fn with_proj_size(mut self, proj_size: usize) -> Self {
        self.proj_size = proj_size;
        self
    }

    /// Sets `input_dropout` (variational dropout on every layer's input, probability in [0, 1)).
    pub fn with_input_dropout(mut self, p: f64) -> Self {
        self.input_dropout = p;
        self
    }

    /// Sets `output_dropout` (variational dropout on the last layer's output, in [0, 1)).
    pub fn with_output_dropout(mut self, p: f64) -> Self {
        self.output_dropout = p;
        self
    }

    /// Sets `recurrent_dropout` (variational dropout on `h` before `W_hh`, in [0, 1)).
    pub fn with_recurrent_dropout(mut self, p: f64) -> Self {
        self.recurrent_dropout = p;
        self
    }

    /// Sets `zoneout_h` (zoneout rate of `h`, in [0, 1)).
    pub fn with_zoneout_h(mut self, rate: f64) -> Self {
        self.zoneout_h = rate;
        self
    }

    /// Sets `zoneout_c` (zoneout rate of the LSTM cell `c`, in [0, 1)).
    pub fn with_zoneout_c(mut self, rate: f64) -> Self {
        self.zoneout_c = rate;
        self
    }

    /// Sets `weight_drop` (DropConnect on `W_hh`, in [0, 1)).
    pub fn with_weight_drop(mut self, p: f64) -> Self {
        self.weight_drop = p;
        self
    }

    /// Whether any mask option (input, output or recurrent dropout, zoneout, weight drop) is on.
    pub fn has_masks(&self) -> bool {
        self.input_dropout > 0.0
            || self.output_dropout > 0.0
            || self.recurrent_dropout > 0.0
            || self.zoneout_h > 0.0
            || self.zoneout_c > 0.0
            || self.weight_drop > 0.0
    }

    /// Sets `layer_norm` (LSTM and GRU only; see [`RnnConfig::layer_norm`]).
    pub fn with_layer_norm(mut self, layer_norm: bool) -> Self {
        self.layer_norm = layer_norm;
        self
    }

    /// 2 when bidirectional, else 1.
    pub fn num_directions(&self) -> usize {
        if self.bidirectional {
            2
        } else {
            1
        }
    }

    /// Size of `h` per layer-direction: `proj_size` when set, else `hidden_size`.
    pub fn state_size(&self) -> usize {
        if self.proj_size > 0 {
            self.proj_size
        } else {
            self.hidden_size
        }
    }

    /// Features per output step: `num_directions() * state_size()`.
    pub fn output_size(&self) -> usize {
        self.num_directions() * self.state_size()
    }

    /// Input features of layer `layer` (the model input for layer 0, the previous layer's output after).
    pub fn layer_input_size(&self, layer: usize) -> usize {
        if layer == 0 {
            self.input_size
        } else {
            self.output_size()
        }
    }

    /// Checks every field; the error names the field and the value at fault.
    pub fn validate(&self) -> Result<()> {
        if self.input_size == 0 {
            bail!("RnnConfig: input_size must be > 0");
        }
        if self.hidden_size == 0 {
            bail!("RnnConfig: hidden_size must be > 0");
        }
        if self.num_layers == 0 {
            bail!("RnnConfig: num_layers must be >= 1, got 0");
        }
        if !(0.0..1.0).contains(&self.dropout) {
            bail!("RnnConfig: dropout must be in [0, 1), got {}", self.dropout);
        }
        for (name, rate) in [
            ("input_dropout", self.input_dropout),
            ("output_dropout", self.output_dropout),
            ("recurrent_dropout", self.recurrent_dropout),
            ("zoneout_h", self.zoneout_h),
            ("zoneout_c", self.zoneout_c),
            ("weight_drop", self.weight_drop),
        ] {
            if !(0.0..1.0).contains(&rate) {
                bail!("RnnConfig: {name} must be in [0, 1), got {rate}");
            }
        }
        if self.zoneout_c > 0.0 && self.mode != Mode::Lstm {
            bail!(
                "RnnConfig: zoneout_c is for the LSTM cell state only, got zoneout_c={} with mode {}; use zoneout_h",
                self.zoneout_c,
                self.mode
            );
        }
        if self.proj_size > 0 {
            if self.mode != Mode::Lstm {
                bail!(
                    "RnnConfig: proj_size is supported for LSTM only, got proj_size={} with mode {}",
                    self.proj_size,
                    self.mode
                );
            }
            if self.proj_size >= self.hidden_size {
                bail!(
                    "RnnConfig: proj_size must be smaller than hidden_size, got proj_size={} >= hidden_size={}",
                    self.proj_size,
                    self.hidden_size
                );
            }
        }
        if self.layer_norm {
            if !matches!(self.mode, Mode::Lstm | Mode::Gru) {
                bail!(
                    "RnnConfig: layer_norm is supported for LSTM and GRU only, got mode {}",
                    self.mode
                );
            }
            if self.proj_size > 0 {
                bail!(
                    "RnnConfig: layer_norm with proj_size is not supported, got proj_size={}",
                    self.proj_size
                );
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mode_parses_and_prints() {
        for m in Mode::ALL {
            assert_eq!(m.as_str().parse::<Mode>().unwrap(), m);
        }
        assert_eq!("RNN_RELU".parse::<Mode>().unwrap(), Mode::RnnRelu);
        let err = "transformer".parse::<Mode>().unwrap_err().to_string();
        assert!(err.contains("transformer") && err.contains("lstm"), "{err}");
    }

    #[test]
    fn validate_rejects_each_bad_field() {
        let ok = RnnConfig::new(Mode::Lstm, 3, 4);
        ok.validate().unwrap();
        let cases = [
            (ok.clone().with_num_layers(0), "num_layers"),
            (ok.clone().with_dropout(1.0), "dropout"),
            (ok.clone().with_dropout(-0.1), "dropout"),
            (ok.clone().with_dropout(f64::NAN), "dropout"),
            (ok.clone().with_proj_size(4), "proj_size"),
            (
                RnnConfig::new(Mode::Gru, 3, 4).with_proj_size(2),
                "LSTM only",
            ),
            (RnnConfig::new(Mode::Gru, 0, 4), "input_size"),
            (RnnConfig::new(Mode::Gru, 3, 0), "hidden_size"),
            (ok.clone().with_input_dropout(1.0), "input_dropout"),
            (ok.clone().with_output_dropout(-0.5), "output_dropout"),
            (
                ok.clone().with_recurrent_dropout(f64::NAN),
                "recurrent_dropout",
            ),
            (ok.clone().with_zoneout_h(1.0), "zoneout_h"),
            (ok.clone().with_zoneout_c(2.0), "zoneout_c"),
            (ok.clone().with_weight_drop(1.0), "weight_drop"),
            (
                RnnConfig::new(Mode::Gru, 3, 4).with_zoneout_c(0.1),
                "LSTM cell state only",
            ),
            (
                RnnConfig::new(Mode::RnnTanh, 3, 4).with_layer_norm(true),
                "layer_norm is supported for LSTM and GRU only",
            ),
            (
                ok.clone().with_proj_size(2).with_layer_norm(true),
                "layer_norm with proj_size",
            ),
        ];
        RnnConfig::new(Mode::Gru, 3, 4)
            .with_layer_norm(true)
            .validate()
            .unwrap();
        ok.clone().with_layer_norm(true).validate().unwrap();
        for (cfg, needle) in cases {
            let err = cfg.validate().unwrap_err().to_string();
            assert!(err.contains(needle), "{needle}: {err}");
        }
    }

    #[test]
    fn serde_defaults_match_new() {
        let cfg: RnnConfig =
            serde_json::from_str(r#"{"mode":"gru","input_size":3,"hidden_size":5}"#).unwrap();
        assert_eq!(cfg, RnnConfig::new(Mode::Gru, 3, 5));
        let back: RnnConfig = serde_json::from_str(&serde_json::to_string(&cfg).unwrap()).unwrap();
        assert_eq!(back, cfg);
        // Mask options left at 0 are not written, so configs without them read and write as before.
        assert!(!serde_json::to_string(&cfg).unwrap().contains("zoneout"));
        let masked = cfg.with_zoneout_h(0.1).with_weight_drop(0.5);
        let text = serde_json::to_string(&masked).unwrap();
        assert!(
            text.contains("\"zoneout_h\":0.1") && text.contains("weight_drop"),
            "{text}"
        );
        assert_eq!(serde_json::from_str::<RnnConfig>(&text).unwrap(), masked);
    }

    #[test]
    fn sizes() {
        let cfg = RnnConfig::new(Mode::Lstm, 3, 8)
            .with_proj_size(5)
            .with_bidirectional(true)
            .with_num_layers(2);
        assert_eq!(cfg.state_size(), 5);
        assert_eq!(cfg.output_size(), 10);
        assert_eq!(cfg.layer_input_size(0), 3);
        assert_eq!(cfg.layer_input_size(1), 10);
    }
}
