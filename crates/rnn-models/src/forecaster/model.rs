//! The [`Forecaster`] model: recurrence, output head, loss and multi-step prediction.

use candle_core::{DType, Device, Result, Tensor};
use candle_nn::VarBuilder;
use rnn_core::Rnn;

use crate::common::{check_lengths, invalid, length_mask, Mlp, SeededDropout, Stochastic};
use crate::loss::mse;
use crate::sources;

use super::{ForecastStrategy, ForecasterConfig, MODEL};

/// A recurrent forecaster for numeric multivariate series; see the [module docs](super).
///
/// ```
/// use candle_core::{DType, Device, Tensor};
/// use candle_nn::VarMap;
/// use rnn_core::init::seeded_var_builder;
/// use rnn_models::forecaster::{ForecastStrategy, Forecaster, ForecasterConfig};
///
/// let cfg = ForecasterConfig::new(2, 1, 16, ForecastStrategy::Autoregressive).with_target_columns(vec![0]);
/// let varmap = VarMap::new();
/// let model = Forecaster::new(&cfg, seeded_var_builder(&varmap, 0, DType::F32, &Device::Cpu))?;
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
    ///
    /// `cfg` is `&ForecasterConfig` as in every constructor of this workspace; the config by
    /// value, the form before 0.2, is still accepted.
    pub fn new(cfg: impl std::borrow::Borrow<ForecasterConfig>, vb: VarBuilder) -> Result<Self> {
        let cfg = cfg.borrow();
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
            cfg: cfg.clone(),
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
        sources::counters(&self.dropout, &self.rnn)
    }

    fn set_rng_counters(&self, counters: &[u64]) -> Result<()> {
        sources::set_counters(MODEL, &self.dropout, &self.rnn, counters)
    }
}

/// `forward_t(xs, train)` = [`Forecaster::forward`] on unpadded input (no lengths).
impl candle_nn::ModuleT for Forecaster {
    fn forward_t(&self, xs: &Tensor, train: bool) -> Result<Tensor> {
        self.forward(xs, None, train)
    }
}
