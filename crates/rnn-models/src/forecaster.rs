//! Numeric time-series forecasting: [`Forecaster`] reads a multivariate series `(B, T, F)` with a
//! stacked [`Rnn`] and predicts `target_size` values per future step with a regression head
//! ([`Mlp`]; a single Linear layer when `head_hidden` is empty), in one of three ways
//! ([`ForecastStrategy`]):
//!
//! - **next-step**: at every step `t`, predict the target at `t + 1` (aligned, `(B, T, target)`);
//! - **direct**: from the last valid state, predict all `horizon` future steps at once
//!   (`(B, horizon, target)`);
//! - **autoregressive**: trained as next-step; predicts `H` steps by feeding its own predictions
//!   back as the next input.
//!
//! Autoregressive feedback needs the targets to be features of the input:
//! [`ForecasterConfig::target_columns`]`[j]` is the input column holding target `j`. At a future
//! step the input is the last observed input row with the target columns replaced by the
//! previous prediction; **every other feature is held at its last observed value** (covariates
//! that are known in advance cannot be given; a model whose inputs are all targets,
//! `input_size == target_size`, is unaffected).
//!
//! Parameter names: `rnn.*` (PyTorch names, see [`rnn_core::Rnn`]) and `head.layers.{i}.*`.

use std::fmt;
use std::str::FromStr;

use candle_core::{DType, Device, Result, Tensor};
use candle_nn::VarBuilder;
use rnn_core::{Mode, Rnn, RnnConfig};
use serde::{Deserialize, Serialize};

use crate::common::{
    check_counters, check_lengths, invalid, length_mask, Activation, Mlp, SeededDropout, Stochastic,
};
use crate::loss::mse;

const MODEL: &str = "Forecaster";

/// How a [`Forecaster`] predicts the future.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ForecastStrategy {
    /// One step ahead at every step: output `(B, T, target)`, row `t` predicting step `t + 1`.
    /// [`Forecaster::predict`] gives only `horizon = 1`. The default.
    #[default]
    NextStep,
    /// All `horizon` future steps at once from the last valid state: output `(B, horizon, target)`.
    Direct,
    /// Trained as [`ForecastStrategy::NextStep`]; [`Forecaster::predict`] feeds its predictions
    /// back for any horizon (see the [module docs](self) for the inputs at future steps).
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

fn default_one() -> usize {
    1
}
fn default_mode() -> Mode {
    Mode::Lstm
}

/// Configuration of a [`Forecaster`].
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
    #[serde(default = "default_one", alias = "layers")]
    pub num_layers: usize,
    /// Cell kind. Default LSTM.
    #[serde(default = "default_mode")]
    pub mode: Mode,
    /// Dropout between recurrent layers and before the head, in training only. Default 0.
    #[serde(default)]
    pub dropout: f64,
    /// Steps predicted by [`ForecastStrategy::Direct`] (the head's output is `horizon *
    /// target_size`) and the default horizon of the other strategies. Default 1.
    #[serde(default = "default_one")]
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
        }
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

    /// The recurrent layer's configuration.
    pub fn rnn_config(&self) -> RnnConfig {
        RnnConfig::new(self.mode, self.input_size, self.hidden_size)
            .with_num_layers(self.num_layers)
            .with_dropout(self.dropout)
    }

    /// Checks every field; the error names the field and the value at fault.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(invalid("ForecasterConfig", m));
        for (name, v) in [
            ("input_size", self.input_size),
            ("target_size", self.target_size),
            ("hidden_size", self.hidden_size),
            ("num_layers", self.num_layers),
            ("horizon", self.horizon),
        ] {
            if v == 0 {
                return bad(format!("{name} must be > 0, got 0"));
            }
        }
        if !(0.0..1.0).contains(&self.dropout) {
            return bad(format!("dropout must be in [0, 1), got {}", self.dropout));
        }
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

/// A recurrent forecaster for numeric multivariate series; see the [module docs](self).
///
/// ```
/// use candle_core::{DType, Device, Tensor};
/// use candle_nn::VarMap;
/// use rnn_core::init::seeded_var_builder;
/// use rnn_models::forecaster::{ForecastStrategy, Forecaster, ForecasterConfig};
///
/// let cfg = ForecasterConfig::new(2, 1, 16, ForecastStrategy::Autoregressive).with_target_columns(vec![0]);
/// let varmap = VarMap::new();
/// let model = Forecaster::new(cfg, seeded_var_builder(&varmap, 0, DType::F32, &Device::Cpu))?;
/// let xs = Tensor::randn(0f32, 1.0, (4, 10, 2), &Device::Cpu)?;
/// assert_eq!(model.forward(&xs, None, false)?.dims(), &[4, 10, 1]);
/// assert_eq!(model.predict(&xs, Some(&[10, 7, 9, 10]), 5)?.dims(), &[4, 5, 1]);
/// # Ok::<(), candle_core::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct Forecaster {
    cfg: ForecasterConfig,
    rnn: Rnn,
    head: Mlp,
    dropout: SeededDropout,
    dtype: DType,
    device: Device,
}

impl Forecaster {
    /// Builds the model (validating `cfg`), creating or loading every parameter through `vb`.
    pub fn new(cfg: ForecasterConfig, vb: VarBuilder) -> Result<Self> {
        cfg.validate()?;
        let rnn = Rnn::new(&cfg.rnn_config(), vb.pp("rnn"))?;
        let out = match cfg.strategy {
            ForecastStrategy::Direct => cfg.horizon * cfg.target_size,
            _ => cfg.target_size,
        };
        let head = Mlp::new(
            cfg.hidden_size,
            &cfg.head_hidden,
            out,
            cfg.head_activation,
            vb.pp("head"),
        )?;
        let dropout = SeededDropout::new(cfg.dropout, 0)?;
        Ok(Self {
            rnn,
            head,
            dropout,
            dtype: vb.dtype(),
            device: vb.device().clone(),
            cfg,
        })
    }

    /// The configuration.
    pub fn config(&self) -> &ForecasterConfig {
        &self.cfg
    }

    /// The recurrent layer.
    pub fn rnn(&self) -> &Rnn {
        &self.rnn
    }

    /// Checks `xs` (float `(B, T, input_size)`) and `lengths`; returns `xs` in the model dtype.
    fn check_inputs(
        &self,
        xs: &Tensor,
        lengths: Option<&[usize]>,
    ) -> Result<(Tensor, usize, usize)> {
        if !xs.dtype().is_float() {
            return Err(invalid(
                MODEL,
                format!("`xs` must be a float tensor, got dtype {:?}", xs.dtype()),
            ));
        }
        let (b, t) = match xs.dims() {
            &[b, t, f] if b > 0 && t > 0 && f == self.cfg.input_size => (b, t),
            d => {
                return Err(invalid(
                    MODEL,
                    format!(
                        "`xs` must have shape (batch, seq, input_size = {}) with batch, seq > 0, got {d:?}",
                        self.cfg.input_size
                    ),
                ))
            }
        };
        if let Some(lengths) = lengths {
            check_lengths(MODEL, lengths, b, t)?;
        }
        Ok((xs.to_dtype(self.dtype)?, b, t))
    }

    /// Row `lengths[b] - 1` (or `T - 1`) of each sequence of `ys (B, T, F)`: `(B, F)`.
    fn last_valid(ys: &Tensor, lengths: Option<&[usize]>) -> Result<Tensor> {
        let (b, t, f) = ys.dims3()?;
        let index: Vec<u32> = (0..b)
            .map(|i| (i * t + lengths.map_or(t, |l| l[i]) - 1) as u32)
            .collect();
        let index = Tensor::from_vec(index, b, ys.device())?;
        ys.reshape((b * t, f))?.index_select(&index, 0)
    }

    /// The model output.
    ///
    /// - `xs`: float `(B, T, input_size)` (converted to the model's dtype)
    /// - `lengths`: valid steps per row of a right-padded batch, each in `1..=T`; `None` = all `T`
    /// - returns, for [`ForecastStrategy::NextStep`] and [`ForecastStrategy::Autoregressive`],
    ///   `(B, T, target_size)` where row `t` predicts the target at step `t + 1` (rows past a
    ///   sequence's length are the head applied to the RNN's zero output: meaningless, masked in
    ///   the loss); for [`ForecastStrategy::Direct`], `(B, horizon, target_size)`, the steps after
    ///   each row's last valid step.
    pub fn forward(&self, xs: &Tensor, lengths: Option<&[usize]>, train: bool) -> Result<Tensor> {
        let (xs, b, _) = self.check_inputs(xs, lengths)?;
        let (ys, _) = self.rnn.forward_t(&xs, None, lengths, train)?;
        match self.cfg.strategy {
            ForecastStrategy::Direct => {
                let last = self
                    .dropout
                    .forward(&Self::last_valid(&ys, lengths)?, train)?;
                self.head
                    .forward(&last)?
                    .reshape((b, self.cfg.horizon, self.cfg.target_size))
            }
            _ => self.head.forward(&self.dropout.forward(&ys, train)?),
        }
    }

    /// Mean squared error (rank 0).
    ///
    /// - [`ForecastStrategy::NextStep`] / [`ForecastStrategy::Autoregressive`]: `targets` is
    ///   `(B, T, target_size)`, `targets[:, t]` = the target at step `t + 1`; the mean runs over
    ///   valid steps only (padding may hold any value, even NaN).
    /// - [`ForecastStrategy::Direct`]: `targets` is `(B, horizon, target_size)`, the `horizon` steps
    ///   after each row's last valid input step.
    pub fn loss(
        &self,
        xs: &Tensor,
        lengths: Option<&[usize]>,
        targets: &Tensor,
        train: bool,
    ) -> Result<Tensor> {
        let (_, b, t) = self.check_inputs(xs, lengths)?;
        let steps = if self.cfg.strategy.is_aligned() {
            t
        } else {
            self.cfg.horizon
        };
        let expected = [b, steps, self.cfg.target_size];
        if targets.dims() != expected || !targets.dtype().is_float() {
            let what = if self.cfg.strategy.is_aligned() {
                "(batch, seq, target_size)"
            } else {
                "(batch, horizon, target_size)"
            };
            return Err(invalid(
                MODEL,
                format!(
                    "`targets` must be a float tensor of shape {what} = {expected:?} for strategy {}, got {:?} {:?}",
                    self.cfg.strategy,
                    targets.dtype(),
                    targets.dims()
                ),
            ));
        }
        let targets = targets.to_dtype(self.dtype)?;
        let pred = self.forward(xs, lengths, train)?;
        match (self.cfg.strategy.is_aligned(), lengths) {
            (true, Some(lengths)) => {
                let keep = length_mask(Some(lengths), b, t, DType::U8, &self.device)?
                    .unsqueeze(2)?
                    .broadcast_as(pred.shape())?;
                // `where_cond`, not a product: padding may hold NaN or inf.
                let diff = keep.where_cond(&(&pred - &targets)?, &pred.zeros_like()?)?;
                let count = lengths.iter().sum::<usize>() * self.cfg.target_size;
                diff.sqr()?.sum_all()? / count as f64
            }
            _ => mse(&pred, &targets),
        }
    }

    /// Forecasts `horizon` steps after each row's last valid step: `(B, horizon, target_size)`,
    /// in eval mode (no dropout).
    ///
    /// - [`ForecastStrategy::NextStep`]: `horizon` must be 1 (the output at the last valid step);
    ///   use `Autoregressive` to roll further.
    /// - [`ForecastStrategy::Direct`]: `horizon` in `1..=config.horizon` (the first steps of the
    ///   head's output).
    /// - [`ForecastStrategy::Autoregressive`]: any `horizon >= 1`. The first step is the output at
    ///   the last valid step; each next input is the last observed row with the
    ///   `target_columns` set to the previous prediction (other features held), stepped through
    ///   the recurrent layer from the carried state.
    pub fn predict(
        &self,
        xs: &Tensor,
        lengths: Option<&[usize]>,
        horizon: usize,
    ) -> Result<Tensor> {
        if horizon == 0 {
            return Err(invalid(MODEL, "predict: `horizon` must be >= 1, got 0"));
        }
        match self.cfg.strategy {
            ForecastStrategy::NextStep if horizon > 1 => {
                return Err(invalid(
                    MODEL,
                    format!("predict: strategy next-step predicts one step ahead, got `horizon` = {horizon}; use strategy autoregressive (feeds predictions back) or direct"),
                ))
            }
            ForecastStrategy::Direct if horizon > self.cfg.horizon => {
                return Err(invalid(
                    MODEL,
                    format!(
                        "predict: strategy direct was built for horizon {}, got `horizon` = {horizon}",
                        self.cfg.horizon
                    ),
                ))
            }
            _ => {}
        }
        let (xs, b, _) = self.check_inputs(xs, lengths)?;
        // Inference only: a detached layer saves no activations for a backward pass.
        let rnn = self.rnn.detached();
        let (ys, mut state) = rnn.forward_t(&xs, None, lengths, false)?;
        let mut pred = self.head.forward(&Self::last_valid(&ys, lengths)?)?;
        match self.cfg.strategy {
            ForecastStrategy::Direct => {
                return pred
                    .reshape((b, self.cfg.horizon, self.cfg.target_size))?
                    .narrow(1, 0, horizon)
            }
            ForecastStrategy::NextStep => return pred.unsqueeze(1),
            ForecastStrategy::Autoregressive => {}
        }
        let mut preds = vec![pred.clone()];
        if horizon > 1 {
            let (f, k) = (self.cfg.input_size, self.cfg.target_size);
            // x_next = last_x * keep + pred @ place: keep zeroes the target columns, place (k, F)
            // puts target j in column target_columns[j].
            let mut keep = vec![1f32; f];
            let mut place = vec![0f32; k * f];
            for (j, &col) in self.cfg.target_columns.iter().enumerate() {
                keep[col] = 0.0;
                place[j * f + col] = 1.0;
            }
            let keep = Tensor::from_vec(keep, (1, f), &self.device)?.to_dtype(self.dtype)?;
            let place = Tensor::from_vec(place, (k, f), &self.device)?.to_dtype(self.dtype)?;
            let held = Self::last_valid(&xs, lengths)?.broadcast_mul(&keep)?;
            for _ in 1..horizon {
                let x = (&held + pred.matmul(&place)?)?;
                let (y, next) = rnn.step(&x, Some(&state))?;
                state = next;
                pred = self.head.forward(&y)?;
                preds.push(pred.clone());
            }
        }
        Tensor::stack(&preds, 1)
    }
}

impl Stochastic for Forecaster {
    /// Seeds the head dropout with `seed` and the recurrent layer's with `seed + 1`.
    fn set_seed(&mut self, seed: u64) {
        self.dropout.set_seed(seed);
        self.rnn = self.rnn.set_dropout_seed(seed.wrapping_add(1));
    }

    /// `[head dropout calls, recurrent-layer dropout calls]`.
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

    fn build(cfg: ForecasterConfig, seed: u64) -> (VarMap, Forecaster) {
        let varmap = VarMap::new();
        let vb = seeded_var_builder(&varmap, seed, DType::F32, &Device::Cpu);
        let model = Forecaster::new(cfg, vb).unwrap();
        (varmap, model)
    }

    fn randn(shape: &[usize], seed: u64) -> Tensor {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let n = shape.iter().product();
        let v: Vec<f32> = (0..n).map(|_| rng.random::<f32>() * 2.0 - 1.0).collect();
        Tensor::from_vec(v, shape, &Device::Cpu).unwrap()
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

    fn scalar(t: &Tensor) -> f32 {
        t.to_scalar::<f32>().unwrap()
    }

    fn multivariate(strategy: ForecastStrategy, mode: Mode) -> ForecasterConfig {
        ForecasterConfig::new(3, 2, 12, strategy)
            .with_mode(mode)
            .with_horizon(4)
            .with_target_columns(vec![2, 0])
    }

    #[test]
    fn shapes_and_gradients_for_every_option() {
        let (b, t) = (3, 7);
        let lengths = [7, 4, 1];
        for mode in Mode::ALL {
            for strategy in ForecastStrategy::ALL {
                for layers in [1, 2] {
                    let head = if layers == 2 { vec![8] } else { vec![] };
                    let cfg = multivariate(strategy, mode)
                        .with_num_layers(layers)
                        .with_head(head, Activation::Relu);
                    let (varmap, model) = build(cfg, layers as u64);
                    let xs = randn(&[b, t, 3], 1);
                    let out = model.forward(&xs, Some(&lengths), true).unwrap();
                    let what = format!("{mode} {strategy} {layers}");
                    let steps = if strategy.is_aligned() { t } else { 4 };
                    assert_eq!(out.dims(), &[b, steps, 2], "{what}");
                    let targets = randn(&[b, steps, 2], 2);
                    let loss = model.loss(&xs, Some(&lengths), &targets, true).unwrap();
                    assert_eq!(loss.rank(), 0);
                    assert!(scalar(&loss).is_finite());
                    let grads = loss.backward().unwrap();
                    for (name, var) in varmap.data().lock().unwrap().iter() {
                        assert!(grads.get(var.as_tensor()).is_some(), "{what}: {name}");
                    }
                    let h = match strategy {
                        ForecastStrategy::NextStep => 1,
                        ForecastStrategy::Direct => 4,
                        ForecastStrategy::Autoregressive => 6,
                    };
                    let pred = model.predict(&xs, Some(&lengths), h).unwrap();
                    assert_eq!(pred.dims(), &[b, h, 2], "{what}");
                    let pred = model.predict(&xs, None, 1).unwrap();
                    assert_eq!(pred.dims(), &[b, 1, 2], "{what}");
                }
            }
        }
        let (varmap, _) = build(
            multivariate(ForecastStrategy::Direct, Mode::Gru).with_head(vec![5], Activation::Tanh),
            0,
        );
        let mut names: Vec<String> = varmap.data().lock().unwrap().keys().cloned().collect();
        names.sort();
        assert_eq!(
            names,
            [
                "head.layers.0.bias",
                "head.layers.0.weight",
                "head.layers.1.bias",
                "head.layers.1.weight",
                "rnn.bias_hh_l0",
                "rnn.bias_ih_l0",
                "rnn.weight_hh_l0",
                "rnn.weight_ih_l0",
            ]
        );
    }

    #[test]
    fn padding_changes_nothing() {
        let lengths = [6, 3];
        for strategy in ForecastStrategy::ALL {
            let (_, model) = build(multivariate(strategy, Mode::Lstm), 3);
            let xs = randn(&[2, 6, 3], 5);
            let steps = if strategy.is_aligned() { 6 } else { 4 };
            let targets = randn(&[2, steps, 2], 6);
            // Junk after row 1's length, in the inputs and (aligned) NaN in the targets.
            let mut x = xs.to_vec3::<f32>().unwrap();
            let mut y = targets.to_vec3::<f32>().unwrap();
            for s in 3..6 {
                x[1][s] = vec![100.0, -7.0, 3.0];
                if strategy.is_aligned() {
                    y[1][s] = vec![f32::NAN, 1e30];
                }
            }
            let xj = Tensor::new(x, &Device::Cpu).unwrap();
            let yj = Tensor::new(y, &Device::Cpu).unwrap();
            let la = model.loss(&xs, Some(&lengths), &targets, false).unwrap();
            let lb = model.loss(&xj, Some(&lengths), &yj, false).unwrap();
            assert_eq!(scalar(&la), scalar(&lb), "{strategy}");
            let oa = model.forward(&xs, Some(&lengths), false).unwrap();
            let ob = model.forward(&xj, Some(&lengths), false).unwrap();
            if strategy.is_aligned() {
                for (b, &l) in lengths.iter().enumerate() {
                    let va = oa.get(b).unwrap().narrow(0, 0, l).unwrap();
                    let vb = ob.get(b).unwrap().narrow(0, 0, l).unwrap();
                    assert_eq!(max_abs_diff(&va, &vb), 0.0, "{strategy}");
                }
            } else {
                assert_eq!(max_abs_diff(&oa, &ob), 0.0, "{strategy}");
            }
            let h = if strategy == ForecastStrategy::NextStep {
                1
            } else {
                3
            };
            let pa = model.predict(&xs, Some(&lengths), h).unwrap();
            let pb = model.predict(&xj, Some(&lengths), h).unwrap();
            assert_eq!(max_abs_diff(&pa, &pb), 0.0, "{strategy}");
            // A padded row predicts what the same row alone, unpadded, predicts.
            let alone = model
                .predict(
                    &xs.narrow(0, 1, 1).unwrap().narrow(1, 0, 3).unwrap(),
                    None,
                    h,
                )
                .unwrap();
            assert!(
                max_abs_diff(&pa.narrow(0, 1, 1).unwrap(), &alone) < 1e-5,
                "{strategy}"
            );
        }
    }

    #[test]
    fn autoregressive_rollout_matches_next_step_outputs() {
        let lengths = [5, 2, 4];
        let (_, model) = build(multivariate(ForecastStrategy::Autoregressive, Mode::Gru), 7);
        let xs = randn(&[3, 5, 3], 8);
        // H = 1 is the next-step output at the last valid step.
        let out = model.forward(&xs, Some(&lengths), false).unwrap();
        let one = model.predict(&xs, Some(&lengths), 1).unwrap();
        for (b, &l) in lengths.iter().enumerate() {
            let next = out.get(b).unwrap().get(l - 1).unwrap();
            let pred = one.get(b).unwrap().get(0).unwrap();
            // Same values; a head on one row vs on all rows may round differently in theory.
            assert!(max_abs_diff(&next, &pred) <= 1e-6);
        }
        // Step 2 is the next-step output after appending the fed-back row: the last input with
        // columns [2, 0] set to the first prediction and column 1 held.
        let two = model
            .predict(&xs, None, 2)
            .unwrap()
            .to_vec3::<f32>()
            .unwrap();
        let mut x = xs.to_vec3::<f32>().unwrap();
        for (b, row) in x.iter_mut().enumerate() {
            let mut next = row[4].clone();
            next[2] = two[b][0][0];
            next[0] = two[b][0][1];
            row.push(next);
        }
        let extended = Tensor::new(x, &Device::Cpu).unwrap();
        let out = model
            .forward(&extended, None, false)
            .unwrap()
            .to_vec3::<f32>()
            .unwrap();
        for b in 0..3 {
            for j in 0..2 {
                assert!(
                    (out[b][5][j] - two[b][1][j]).abs() < 1e-5,
                    "{out:?} {two:?}"
                );
            }
        }
    }

    /// `n` noisy sine windows of `len` steps with random phases: (n, len) row-major.
    fn sine(n: usize, len: usize, seed: u64) -> Vec<Vec<f32>> {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let omega = std::f32::consts::TAU / 16.0;
        (0..n)
            .map(|_| {
                let phase = rng.random::<f32>() * std::f32::consts::TAU;
                (0..len)
                    .map(|t| {
                        let noise = (rng.random::<f32>() + rng.random::<f32>() - 1.0) * 0.17;
                        (omega * t as f32 + phase).sin() + noise
                    })
                    .collect()
            })
            .collect()
    }

    /// (n, len, 1) from rows[.., from..from + len].
    fn window(rows: &[Vec<f32>], from: usize, len: usize) -> Tensor {
        let v: Vec<f32> = rows
            .iter()
            .flat_map(|r| r[from..from + len].to_vec())
            .collect();
        Tensor::from_vec(v, (rows.len(), len, 1), &Device::Cpu).unwrap()
    }

    fn rmse(a: &Tensor, b: &Tensor) -> f32 {
        scalar(&mse(a, b).unwrap()).sqrt()
    }

    const T_IN: usize = 24;
    const H: usize = 6;

    fn train(strategy: ForecastStrategy, steps: usize) -> Forecaster {
        let cfg = ForecasterConfig::new(1, 1, 24, strategy)
            .with_mode(Mode::Gru)
            .with_horizon(H)
            .with_target_columns(vec![0]);
        let (varmap, model) = build(cfg, 21);
        let mut opt = AdamW::new(
            varmap.all_vars(),
            ParamsAdamW {
                lr: 0.01,
                weight_decay: 0.0,
                ..Default::default()
            },
        )
        .unwrap();
        for step in 0..steps {
            let rows = sine(32, T_IN + H, 1000 + step as u64);
            let xs = window(&rows, 0, T_IN);
            let targets = if strategy.is_aligned() {
                window(&rows, 1, T_IN)
            } else {
                window(&rows, T_IN, H)
            };
            let loss = model.loss(&xs, None, &targets, true).unwrap();
            opt.backward_step(&loss).unwrap();
        }
        model
    }

    #[test]
    fn learns_noisy_sine_next_step() {
        let model = train(ForecastStrategy::NextStep, 150);
        let rows = sine(128, T_IN + 1, 7);
        let xs = window(&rows, 0, T_IN);
        let next = window(&rows, 1, T_IN);
        // Skip the first steps (no context yet) for both.
        let pred = model
            .forward(&xs, None, false)
            .unwrap()
            .narrow(1, 4, T_IN - 4)
            .unwrap();
        let truth = next.narrow(1, 4, T_IN - 4).unwrap();
        let persistence = xs.narrow(1, 4, T_IN - 4).unwrap();
        let (ours, base) = (rmse(&pred, &truth), rmse(&persistence, &truth));
        eprintln!("next-step RMSE {ours:.3} vs persistence {base:.3}");
        assert!(ours < 0.7 * base, "{ours} vs {base}");
    }

    fn multi_step(strategy: ForecastStrategy) {
        let model = train(strategy, 150);
        let rows = sine(128, T_IN + H, 7);
        let xs = window(&rows, 0, T_IN);
        let future = window(&rows, T_IN, H);
        let pred = model.predict(&xs, None, H).unwrap();
        let persistence = xs
            .narrow(1, T_IN - 1, 1)
            .unwrap()
            .repeat((1, H, 1))
            .unwrap();
        let (ours, base) = (rmse(&pred, &future), rmse(&persistence, &future));
        eprintln!("{strategy} {H}-step RMSE {ours:.3} vs persistence {base:.3}");
        assert!(ours < 0.5 * base, "{ours} vs {base}");
    }

    #[test]
    fn learns_noisy_sine_direct() {
        multi_step(ForecastStrategy::Direct);
    }

    #[test]
    fn learns_noisy_sine_autoregressive() {
        multi_step(ForecastStrategy::Autoregressive);
    }

    #[test]
    fn save_load_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("forecaster.safetensors");
        for strategy in ForecastStrategy::ALL {
            let cfg = multivariate(strategy, Mode::Lstm).with_head(vec![6], Activation::Tanh);
            let (varmap, a) = build(cfg.clone(), 1);
            varmap.save(&path).unwrap();
            let (mut varmap_b, b) = build(cfg, 2);
            let xs = randn(&[2, 5, 3], 3);
            let before = b.forward(&xs, None, false).unwrap();
            varmap_b.load(&path).unwrap();
            let oa = a.forward(&xs, Some(&[5, 3]), false).unwrap();
            let ob = b.forward(&xs, Some(&[5, 3]), false).unwrap();
            assert!(max_abs_diff(&before, &a.forward(&xs, None, false).unwrap()) > 0.0);
            assert_eq!(max_abs_diff(&oa, &ob), 0.0, "{strategy}");
            let h = if strategy == ForecastStrategy::NextStep {
                1
            } else {
                4
            };
            let pa = a.predict(&xs, Some(&[5, 3]), h).unwrap();
            let pb = b.predict(&xs, Some(&[5, 3]), h).unwrap();
            assert_eq!(max_abs_diff(&pa, &pb), 0.0, "{strategy}");
        }
    }

    #[test]
    fn dropout_is_seeded_and_resumable() {
        let cfg = multivariate(ForecastStrategy::NextStep, Mode::Lstm)
            .with_dropout(0.3)
            .with_num_layers(2);
        let (_, mut model) = build(cfg, 5);
        model.set_seed(42);
        let xs = randn(&[2, 5, 3], 3);
        let targets = randn(&[2, 5, 2], 4);
        let loss = |m: &Forecaster, train| scalar(&m.loss(&xs, None, &targets, train).unwrap());
        let first = loss(&model, true);
        let counters = model.rng_counters();
        assert!(counters.iter().all(|&c| c > 0), "{counters:?}");
        let second = loss(&model, true);
        assert_ne!(first, second);
        model.set_rng_counters(&counters).unwrap();
        assert_eq!(loss(&model, true), second);
        assert_eq!(loss(&model, false), loss(&model, false));
        assert!(model.set_rng_counters(&[]).is_err());
    }

    #[test]
    fn errors_name_the_argument() {
        let check = |r: Result<()>, needles: &[&str]| {
            let e = r.unwrap_err().to_string();
            for n in needles {
                assert!(e.contains(n), "expected {n:?} in: {e}");
            }
        };
        let base = multivariate(ForecastStrategy::Autoregressive, Mode::Gru);
        check(
            base.clone().with_target_columns(vec![]).validate(),
            &["target_columns", "autoregressive"],
        );
        check(
            base.clone().with_target_columns(vec![0]).validate(),
            &["target_columns", "target_size = 2"],
        );
        check(
            base.clone().with_target_columns(vec![0, 3]).validate(),
            &["target_columns[1]", "input_size"],
        );
        check(
            base.clone().with_target_columns(vec![1, 1]).validate(),
            &["target_columns[1]", "repeated"],
        );
        check(base.clone().with_horizon(0).validate(), &["horizon"]);
        check(base.clone().with_dropout(-0.5).validate(), &["dropout"]);
        check(
            base.clone().with_head(vec![0], Activation::Tanh).validate(),
            &["head_hidden[0]"],
        );
        check(
            "soon".parse::<ForecastStrategy>().map(|_| ()),
            &["soon", "next-step", "direct", "autoregressive"],
        );
        for s in ForecastStrategy::ALL {
            assert_eq!(s.to_string().parse::<ForecastStrategy>().unwrap(), s);
            assert_eq!(serde_json::to_string(&s).unwrap(), format!("\"{s}\""));
        }
        let json = r#"{"input_size":3,"target_size":2,"hidden":12,"layers":2,"strategy":"direct","horizon":4}"#;
        let cfg: ForecasterConfig = serde_json::from_str(json).unwrap();
        assert_eq!(
            (cfg.hidden_size, cfg.num_layers, cfg.strategy),
            (12, 2, ForecastStrategy::Direct)
        );
        let back: ForecasterConfig =
            serde_json::from_str(&serde_json::to_string(&cfg).unwrap()).unwrap();
        assert_eq!(back, cfg);

        let (_, model) = build(base, 0);
        let xs = randn(&[2, 5, 3], 1);
        let targets = randn(&[2, 5, 2], 2);
        check(
            model
                .forward(&randn(&[2, 5, 4], 1), None, false)
                .map(|_| ()),
            &["Forecaster", "`xs`", "input_size = 3", "[2, 5, 4]"],
        );
        check(
            model.forward(&randn(&[5, 3], 1), None, false).map(|_| ()),
            &["`xs`", "[5, 3]"],
        );
        let ids = Tensor::zeros((2, 5, 3), DType::U32, &Device::Cpu).unwrap();
        check(
            model.forward(&ids, None, false).map(|_| ()),
            &["`xs`", "float"],
        );
        check(
            model.forward(&xs, Some(&[5]), false).map(|_| ()),
            &["lengths", "1 entries"],
        );
        check(
            model.forward(&xs, Some(&[5, 0]), false).map(|_| ()),
            &["lengths[1]"],
        );
        check(
            model
                .loss(&xs, None, &randn(&[2, 4, 2], 1), false)
                .map(|_| ()),
            &["`targets`", "[2, 5, 2]", "[2, 4, 2]"],
        );
        check(
            model
                .loss(&xs, None, &targets.to_dtype(DType::U32).unwrap(), false)
                .map(|_| ()),
            &["`targets`", "U32"],
        );
        check(model.predict(&xs, None, 0).map(|_| ()), &["`horizon`"]);
        let (_, next) = build(multivariate(ForecastStrategy::NextStep, Mode::Gru), 0);
        check(
            next.predict(&xs, None, 3).map(|_| ()),
            &["`horizon` = 3", "next-step"],
        );
        let (_, direct) = build(multivariate(ForecastStrategy::Direct, Mode::Gru), 0);
        check(
            direct.predict(&xs, None, 5).map(|_| ()),
            &["`horizon` = 5", "horizon 4"],
        );
        check(
            direct.loss(&xs, None, &targets, false).map(|_| ()),
            &["`targets`", "(batch, horizon, target_size)"],
        );
    }
}
