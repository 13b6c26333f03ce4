//! `rnn train forecast`: time-series forecasting from a CSV file with a header, with a
//! [`Forecaster`] scored against the persistence and seasonal-naive baselines.
//!
//! # Data and options
//!
//! - `--data FILE.csv`: a header, then one row per time step (oldest first). Missing cells (empty,
//!   `NA`, `NaN`, `null`) are filled with the column's previous value (the count is printed); a
//!   ragged row or a non-numeric value is an error naming the file and line.
//! - `--target COLUMN`: the column to forecast (default: the **last** column of the header).
//! - `--features A,B`: further input columns (default: none, the target only). The target's own
//!   past is always an input (column 0).
//! - `--lookback N` (default 12) past steps per input window; `--horizon H` (default 1) steps
//!   forecast from each origin.
//! - `--strategy next-step|direct|autoregressive`: default `next-step` for `--horizon 1`, else
//!   `direct`. `next-step` only forecasts one step.
//! - `--split F` (default 1/3): the **last** `round(F * rows)` rows are the **test** part,
//!   chronologically (the usual airline-passengers protocol scores the last third).
//! - `--valid-split F` (default 0.2): the last `round(F * rows before the test part)` rows before
//!   the test part are the **validation** part. Training windows end before it; the validation
//!   RMSE is the per-epoch metric, picks `best/` and stops training early after `--patience`
//!   (default 10) epochs without improvement. Model selection never sees the test part.
//! - `--season N`: the seasonal-naive period (default: detected, and printed).
//!
//! The summary ends with the **test** scores of the best checkpoint (`test at best (step S): rmse
//! ...`), the headline; `rnn eval --checkpoint DIR` prints the same numbers.
//!
//! # Model input
//!
//! The target enters as its **first difference** `y[t] - y[t-1]` (feature columns at their
//! level), z-scored with a [`Normalizer`] fitted on the training rows only; the model predicts the
//! next differences and forecasts are integrated back from the last observed value. Differencing
//! lets a trending series leave the range seen in training (airline passengers grow from at most
//! 413 in the training part to 622 in the held-out part).
//!
//! # Metrics (held-out part, original units)
//!
//! For every origin `t0` in the held-out part (`t0 + H <= rows`), all `H` steps are scored: RMSE
//! (the main metric, lower is better), MAE, MAPE, and the RMSE of two baselines on the same
//! points: **persistence** (`y[t0-1]` for every step) and **seasonal naive** (the value one season
//! earlier than the step, within the last observed season). Without `--season` the season is
//! detected from the rows before the test part: the lag in `2..=min(train/3, 400)` with the highest autocorrelation of the
//! differenced target (12 for monthly airline passengers, reproducing the reference persistence
//! RMSE 48.0 and seasonal-naive 41.9).
//!
//! `rnn eval --checkpoint DIR` rescores the test part of the training file; with `--data FILE`
//! every origin of FILE that has a full look-back is scored. `rnn predict --checkpoint DIR --input
//! FILE.csv [--horizon H]` forecasts the `H` steps after the file's last row, one line per step.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::parts::{empty_part, part_rows};
use anyhow::{bail, Context, Result};
use candle_core::{Device, Tensor};
use candle_nn::VarMap;
use rnn_core::{Mode, RnnState};
use rnn_models::forecaster::{ForecastStrategy, Forecaster, ForecasterConfig};
use rnn_train::data::{seeded_shuffle, MissingPolicy, Normalizer, Series};
use rnn_train::metrics::{Metric, RegressionMetrics};
use rnn_train::trainer::{EarlyStopping, Evaluation, MainMetric, Part, StepLoss, TrainTask};
use serde::{Deserialize, Serialize};

use crate::run::{
    fit, invalid, load_best, stochastic_model, task_from_functions, trainer_config, CheckpointRun,
    EvalRequest, PredictRequest, RunContext, TaskName, TaskOptions, TrainDefaults, TrainOutcome,
};
use crate::run::{EvalReport, Prediction, Predictions, Split};

/// Default `--lookback`.
pub const DEFAULT_LOOKBACK: usize = 12;
/// Default `--split`: the last third is the test part.
pub const DEFAULT_SPLIT: f64 = 1.0 / 3.0;
/// Default `--valid-split`: a fifth of the rows before the test part validate.
pub const DEFAULT_VALID_SPLIT: f64 = 0.2;
/// Default `--patience`: epochs without a better validation RMSE before training stops.
pub const DEFAULT_PATIENCE: u64 = 10;
/// The training defaults.
const TRAIN_DEFAULTS: TrainDefaults = TrainDefaults {
    epochs: 60,
    lr: 3e-3,
    clip: Some(1.0),
    eval_every: None,
    optimizer: "adamw",
};

/// The options `forecast` reads, with its defaults.
pub fn options(_task: TaskName) -> TaskOptions {
    let files = "forecast splits its one --data series by time; size the test part with --split and the validation part with --valid-split";
    TaskOptions::new()
        .read("data")
        .read("target")
        .read("features")
        .with("lookback", DEFAULT_LOOKBACK)
        .with("horizon", 1)
        .read("strategy")
        .with("split", format!("{DEFAULT_SPLIT:.3}"))
        .with("valid-split", DEFAULT_VALID_SPLIT)
        .read("season")
        .with("cell", "lstm")
        .with("hidden", DEFAULT_HIDDEN)
        .with("layers", 1)
        .with("dropout", 0)
        .with("layer-norm", false)
        .with("batch-size", DEFAULT_BATCH)
        .with("patience", DEFAULT_PATIENCE)
        .training(&TRAIN_DEFAULTS)
        .refuse("valid", files)
        .refuse("test", files)
}
/// Default `--hidden`.
pub const DEFAULT_HIDDEN: usize = 32;
/// Default `--batch-size`.
pub const DEFAULT_BATCH: usize = 8;
/// Largest season the detection considers.
pub const MAX_SEASON: usize = 400;

/// Everything besides the model's weights needed to rebuild the inputs of a forecast run; saved
/// in the checkpoint's `config.json` as `model.spec`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ForecastSpec {
    /// The training CSV file (absolute when it could be resolved).
    pub data: PathBuf,
    /// The target column.
    pub target: String,
    /// Further input columns.
    pub features: Vec<String>,
    /// Past steps per input window.
    pub lookback: usize,
    /// Steps forecast from each origin.
    pub horizon: usize,
    /// Fraction of rows held out at the end: the test part.
    pub split: f64,
    /// Fraction of the rows before the test part that validate (0 in checkpoints written before
    /// the validation part existed, whose held-out part was both).
    #[serde(default)]
    pub valid_split: f64,
    /// Seasonal period of the seasonal-naive baseline.
    pub season: usize,
    /// Normaliser of the model's input columns (target difference first), fitted on training rows.
    pub normalizer: Normalizer,
}

/// A loaded series: the target in original units and the model's input rows.
#[derive(Debug, Clone)]
pub struct SeriesData {
    /// The target column, one value per CSV row.
    pub target: Vec<f64>,
    /// Model input rows, one per time step `t >= 1` (index `t - 1`): the target's difference
    /// `y[t] - y[t-1]` then the feature columns, not normalised.
    pub work: Vec<Vec<f64>>,
}

impl SeriesData {
    /// Reads `target` and `features` from `path` (missing values forward-filled); returns the
    /// data and how many missing values were filled.
    pub fn from_csv(path: &Path, target: &str, features: &[String]) -> Result<(Self, usize)> {
        let features: Vec<&str> = features.iter().map(String::as_str).collect();
        let series = Series::from_csv(path, target, &features, MissingPolicy::ForwardFill)?;
        let filled = series.missing_handled;
        Ok((Self::from_rows(&series.values), filled))
    }

    /// From rows `[target, features...]`, oldest first.
    pub fn from_rows(rows: &[Vec<f64>]) -> Self {
        let target: Vec<f64> = rows.iter().map(|r| r[0]).collect();
        let work = rows
            .windows(2)
            .map(|w| {
                let mut row = w[1].clone();
                row[0] = w[1][0] - w[0][0];
                row
            })
            .collect();
        Self { target, work }
    }

    /// Number of time steps.
    pub fn len(&self) -> usize {
        self.target.len()
    }

    /// Whether there are no time steps.
    pub fn is_empty(&self) -> bool {
        self.target.is_empty()
    }

    /// Input columns of the model.
    pub fn columns(&self) -> usize {
        self.work.first().map_or(1, Vec::len)
    }

    /// The first time step of the held-out part for hold-out fraction `split`.
    pub fn split_index(&self, split: f64) -> usize {
        self.len() - (self.len() as f64 * split).round() as usize
    }

    /// The first time step of the validation part: the last `valid_split` of the `test_at` rows
    /// before the test part.
    pub fn valid_index(test_at: usize, valid_split: f64) -> usize {
        test_at - (test_at as f64 * valid_split).round() as usize
    }

    /// Forecast origins (the first forecast step) whose `horizon` steps all lie in
    /// `from..self.len()` and that have a full look-back.
    pub fn origins(&self, from: usize, lookback: usize, horizon: usize) -> Vec<usize> {
        let first = from.max(lookback + 1);
        (first..(self.len() + 1).saturating_sub(horizon)).collect()
    }

    /// Normalised input windows `(origins, lookback, columns)` f32: time steps `t0 - lookback ..
    /// t0` for each origin `t0`.
    pub fn inputs(
        &self,
        origins: &[usize],
        lookback: usize,
        norm: &Normalizer,
        device: &Device,
    ) -> Result<Tensor> {
        let cols = self.columns();
        let mut v = Vec::with_capacity(origins.len() * lookback * cols);
        for &t0 in origins {
            for row in &self.work[t0 - lookback - 1..t0 - 1] {
                v.extend(
                    row.iter()
                        .enumerate()
                        .map(|(c, x)| norm.apply(c, *x) as f32),
                );
            }
        }
        Ok(Tensor::from_vec(
            v,
            (origins.len(), lookback, cols),
            device,
        )?)
    }

    /// Normalised target differences `(origins, steps, 1)` f32 at steps `t0 + offset ..
    /// t0 + offset + steps` for each origin.
    fn diffs(
        &self,
        origins: &[usize],
        offset: isize,
        steps: usize,
        norm: &Normalizer,
        device: &Device,
    ) -> Result<Tensor> {
        let mut v = Vec::with_capacity(origins.len() * steps);
        for &t0 in origins {
            let start = (t0 as isize + offset) as usize;
            for t in start..start + steps {
                v.push(norm.apply(0, self.work[t - 1][0]) as f32);
            }
        }
        Ok(Tensor::from_vec(v, (origins.len(), steps, 1), device)?)
    }

    /// Persistence and seasonal-naive forecasts for each origin and step (seasonal `None` when
    /// an origin is less than one season into the series).
    pub fn baselines(
        &self,
        origins: &[usize],
        horizon: usize,
        season: usize,
    ) -> (Vec<f64>, Option<Vec<f64>>) {
        let mut persistence = Vec::new();
        let mut seasonal = Some(Vec::new());
        for &t0 in origins {
            for k in 0..horizon {
                persistence.push(self.target[t0 - 1]);
                let back = season * (1 + k / season);
                match (&mut seasonal, (t0 + k).checked_sub(back)) {
                    (Some(s), Some(i)) => s.push(self.target[i]),
                    _ => seasonal = None,
                }
            }
        }
        (persistence, seasonal)
    }

    /// The actual values for each origin and step.
    pub fn actuals(&self, origins: &[usize], horizon: usize) -> Vec<f64> {
        origins
            .iter()
            .flat_map(|&t0| self.target[t0..t0 + horizon].iter().copied())
            .collect()
    }

    /// Integrates normalised difference forecasts `(origins, horizon, 1)` back to original units,
    /// starting from the value before each origin; row-major `origins x horizon`.
    pub fn integrate(
        &self,
        origins: &[usize],
        diffs: &Tensor,
        norm: &Normalizer,
    ) -> Result<Vec<f64>> {
        let d = diffs
            .to_dtype(candle_core::DType::F64)?
            .squeeze(2)?
            .to_vec2::<f64>()?;
        let mut out = Vec::new();
        for (&t0, row) in origins.iter().zip(&d) {
            let mut level = self.target[t0 - 1];
            for z in row {
                level += norm.invert(0, *z);
                out.push(level);
            }
        }
        Ok(out)
    }
}

/// The seasonal period of `values`: the lag in `2..=min(len / 3, MAX_SEASON)` with the highest
/// autocorrelation of the first differences (1 if the series is too short).
pub fn detect_season(values: &[f64]) -> usize {
    let d: Vec<f64> = values.windows(2).map(|w| w[1] - w[0]).collect();
    let max_lag = (values.len() / 3).min(MAX_SEASON);
    if max_lag < 2 || d.len() < 3 {
        return 1;
    }
    let mean = d.iter().sum::<f64>() / d.len() as f64;
    let var: f64 = d.iter().map(|x| (x - mean).powi(2)).sum();
    if var <= 0.0 {
        return 1;
    }
    let acf = |lag: usize| -> f64 {
        (lag..d.len())
            .map(|i| (d[i] - mean) * (d[i - lag] - mean))
            .sum::<f64>()
            / var
    };
    (2..=max_lag)
        .map(|lag| (lag, acf(lag)))
        .fold((1, f64::NEG_INFINITY), |best, (lag, r)| {
            if r > best.1 {
                (lag, r)
            } else {
                best
            }
        })
        .0
}

/// Scores of forecasts on a set of points, in original units.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ForecastReport {
    /// Root mean squared error of the model.
    pub rmse: f64,
    /// Mean absolute error of the model.
    pub mae: f64,
    /// Mean absolute percentage error of the model (fraction), over non-zero actuals.
    pub mape: Option<f64>,
    /// RMSE of the persistence baseline.
    pub persistence_rmse: f64,
    /// MAE of the persistence baseline.
    pub persistence_mae: f64,
    /// RMSE of the seasonal-naive baseline, when every origin is a season into the series.
    pub seasonal_rmse: Option<f64>,
    /// MAE of the seasonal-naive baseline.
    pub seasonal_mae: Option<f64>,
    /// The season used.
    pub season: usize,
    /// Points scored (origins x horizon).
    pub points: usize,
    /// Mean squared error in normalised difference units (the training loss's units).
    pub loss: f64,
    /// `(time step, actual, forecast)` of every scored point.
    pub forecasts: Vec<(usize, f64, f64)>,
}

impl ForecastReport {
    /// `rmse 23.1, mae 17.0, mape 4.1%, persistence rmse 48.0, seasonal-naive(12) rmse 41.9 over 48 points`.
    pub fn line(&self) -> String {
        let mut s = format!("rmse {:.3}, mae {:.3}", self.rmse, self.mae);
        if let Some(m) = self.mape {
            s.push_str(&format!(", mape {:.2}%", 100.0 * m));
        }
        s.push_str(&format!(", persistence rmse {:.3}", self.persistence_rmse));
        if let Some(r) = self.seasonal_rmse {
            s.push_str(&format!(", seasonal-naive({}) rmse {:.3}", self.season, r));
        }
        s.push_str(&format!(" over {} points", self.points));
        s
    }
}

fn regression(pred: &[f64], actual: &[f64]) -> Result<(f64, f64, Option<f64>)> {
    let mut m = RegressionMetrics::new();
    m.update(pred, actual)?;
    let r = m.compute().context("no points to score")?;
    Ok((r.rmse, r.mae, r.mape))
}

/// Forecasts `spec.horizon` steps from each origin with `model` and scores them.
pub fn score(
    model: &Forecaster,
    data: &SeriesData,
    spec: &ForecastSpec,
    origins: &[usize],
    device: &Device,
) -> Result<ForecastReport> {
    if origins.is_empty() {
        bail!(
            "no forecast origin to score: need more than lookback + horizon = {} rows after the split",
            spec.lookback + spec.horizon
        );
    }
    let h = spec.horizon;
    let mut diffs = Vec::new();
    for chunk in origins.chunks(256) {
        let xs = data.inputs(chunk, spec.lookback, &spec.normalizer, device)?;
        diffs.push(model.predict(&xs, None, h)?);
    }
    let diffs = Tensor::cat(&diffs, 0)?;
    let truth = data.diffs(origins, 0, h, &spec.normalizer, device)?;
    let loss = (diffs.to_dtype(candle_core::DType::F32)? - &truth)?
        .sqr()?
        .mean_all()?
        .to_scalar::<f32>()? as f64;
    let pred = data.integrate(origins, &diffs, &spec.normalizer)?;
    let actual = data.actuals(origins, h);
    let (rmse, mae, mape) = regression(&pred, &actual)?;
    let (persistence, seasonal) = data.baselines(origins, h, spec.season);
    let (persistence_rmse, persistence_mae, _) = regression(&persistence, &actual)?;
    let (seasonal_rmse, seasonal_mae) = match seasonal {
        Some(s) => {
            let (r, m, _) = regression(&s, &actual)?;
            (Some(r), Some(m))
        }
        None => (None, None),
    };
    let times = origins.iter().flat_map(|&t0| t0..t0 + h);
    Ok(ForecastReport {
        rmse,
        mae,
        mape,
        persistence_rmse,
        persistence_mae,
        seasonal_rmse,
        seasonal_mae,
        season: spec.season,
        points: actual.len(),
        loss,
        forecasts: times
            .zip(actual.iter().zip(&pred))
            .map(|(t, (a, p))| (t, *a, *p))
            .collect(),
    })
}

/// The header's column names of a CSV file (quotes removed), for the default target.
fn header_columns(path: &Path) -> Result<Vec<String>> {
    use std::io::BufRead;
    let file = std::fs::File::open(path)
        .with_context(|| format!("--data {}: cannot open the file", path.display()))?;
    let mut line = String::new();
    std::io::BufReader::new(file)
        .read_line(&mut line)
        .with_context(|| format!("--data {}: cannot read the header", path.display()))?;
    let cols: Vec<String> = line
        .trim_end_matches(['\r', '\n'])
        .split(',')
        .map(|c| c.trim().trim_matches('"').to_string())
        .collect();
    if cols.iter().all(String::is_empty) {
        bail!("{}: the file is empty (no header)", path.display());
    }
    Ok(cols)
}

/// The strategy for `--strategy` and `--horizon`.
fn strategy(opt: Option<&str>, horizon: usize) -> Result<ForecastStrategy> {
    let s = match opt {
        Some(s) => s
            .parse::<ForecastStrategy>()
            .map_err(|e| anyhow::anyhow!("--strategy: {e}"))?,
        None if horizon == 1 => ForecastStrategy::NextStep,
        None => ForecastStrategy::Direct,
    };
    if s == ForecastStrategy::NextStep && horizon > 1 {
        bail!("--strategy next-step forecasts one step; --horizon {horizon} needs --strategy direct or autoregressive");
    }
    Ok(s)
}

struct ForecastTask {
    model: Forecaster,
    data: SeriesData,
    spec: ForecastSpec,
    cfg: ForecasterConfig,
    train_origins: Vec<usize>,
    valid: Vec<usize>,
    batch_size: usize,
    device: Device,
    task: &'static str,
}

impl TrainTask for ForecastTask {
    type Batch = (Tensor, Tensor);

    fn train_batches(&mut self, epoch: u64, seed: u64) -> rnn_train::Result<Vec<Self::Batch>> {
        let mut order = self.train_origins.clone();
        seeded_shuffle(
            &mut order,
            rnn_core::seed::epoch_seed(seed, epoch, rnn_core::seed::EPOCH_SPREAD),
        );
        let (l, h, norm) = (self.spec.lookback, self.spec.horizon, &self.spec.normalizer);
        order
            .chunks(self.batch_size)
            .map(|chunk| {
                let xs = self.data.inputs(chunk, l, norm, &self.device);
                let ys = if self.cfg.strategy.is_aligned() {
                    // Row t of the window predicts the difference at the next step.
                    self.data
                        .diffs(chunk, 1 - l as isize, l, norm, &self.device)
                } else {
                    self.data.diffs(chunk, 0, h, norm, &self.device)
                };
                match (xs, ys) {
                    (Ok(xs), Ok(ys)) => Ok((xs, ys)),
                    (Err(e), _) | (_, Err(e)) => Err(invalid(e)),
                }
            })
            .collect()
    }

    fn train_step(
        &mut self,
        batch: &Self::Batch,
        carry: &mut Option<RnnState>,
    ) -> rnn_train::Result<StepLoss> {
        self.train_part(batch, Part::WHOLE, carry)
    }

    /// Rows of the batch: the loss is the mean over the part's rows, which all count the same
    /// (fixed-length windows without padding), so the units-weighted mean of the parts is the
    /// batch's loss.
    fn train_part(
        &mut self,
        (xs, ys): &Self::Batch,
        part: Part,
        _carry: &mut Option<RnnState>,
    ) -> rnn_train::Result<StepLoss> {
        let Some((xs, ys)) = part_rows(part, xs, ys)? else {
            return empty_part(xs.device());
        };
        let loss = self.model.loss(&xs, None, &ys, true)?;
        Ok(StepLoss {
            loss,
            units: xs.dim(0)? as u64,
        })
    }

    fn evaluate(&mut self) -> rnn_train::Result<Evaluation> {
        let r = score(
            &self.model,
            &self.data,
            &self.spec,
            &self.valid,
            &self.device,
        )
        .map_err(invalid)?;
        let mut metrics = BTreeMap::new();
        metrics.insert("rmse".to_string(), r.rmse);
        metrics.insert("mae".to_string(), r.mae);
        if let Some(m) = r.mape {
            metrics.insert("mape".to_string(), m);
        }
        metrics.insert("persistence_rmse".to_string(), r.persistence_rmse);
        if let Some(s) = r.seasonal_rmse {
            metrics.insert("seasonal_naive_rmse".to_string(), s);
        }
        Ok(Evaluation {
            loss: r.loss,
            metrics,
            main: Some(MainMetric {
                name: "rmse".to_string(),
                value: r.rmse,
                higher_is_better: false,
            }),
        })
    }

    stochastic_model!(model);

    fn checkpoint_config(&self) -> serde_json::Value {
        serde_json::json!({"task": self.task, "model": self.cfg, "spec": self.spec})
    }
}

task_from_functions!(
    /// The `forecast` task (see the [module docs](self)).
    Forecast
);

/// Trains the task.
pub fn train(ctx: &RunContext) -> Result<TrainOutcome> {
    let o = &ctx.opts;
    let Some(path) = &o.data else {
        bail!("forecast needs --data FILE.csv (a header, one row per time step)");
    };
    let target = match &o.target {
        Some(t) => t.clone(),
        None => header_columns(path)?
            .pop()
            .context("--data: the header has no column")?,
    };
    let features: Vec<String> = o
        .features
        .clone()
        .unwrap_or_default()
        .into_iter()
        .map(|f| f.trim().to_string())
        .filter(|f| !f.is_empty() && *f != target)
        .collect();
    let lookback = o.lookback.unwrap_or(DEFAULT_LOOKBACK);
    let horizon = o.horizon.unwrap_or(1);
    let split = o.split.unwrap_or(DEFAULT_SPLIT);
    let valid_split = o.valid_split.unwrap_or(DEFAULT_VALID_SPLIT);
    let strategy = strategy(o.strategy.as_deref(), horizon)?;
    let (data, filled) = SeriesData::from_csv(path, &target, &features)?;
    if filled > 0 {
        ctx.say(&format!(
            "{}: {filled} missing values filled with the previous value",
            path.display()
        ));
    }
    let n = data.len();
    let test_at = data.split_index(split);
    let valid_at = SeriesData::valid_index(test_at, valid_split);
    let train_origins: Vec<usize> = data
        .origins(0, lookback, horizon)
        .into_iter()
        .filter(|&t0| t0 + horizon <= valid_at)
        .collect();
    if train_origins.is_empty() {
        bail!(
            "{}: {n} rows, {valid_at} before the validation part (--split {split:.3}, --valid-split {valid_split:.3}): too few for one training window of --lookback {lookback} + --horizon {horizon} (+1 for differencing)",
            path.display()
        );
    }
    let valid: Vec<usize> = data
        .origins(valid_at, lookback, horizon)
        .into_iter()
        .filter(|&t0| t0 + horizon <= test_at)
        .collect();
    if valid.is_empty() {
        bail!(
            "{}: the validation part ({} rows, --valid-split {valid_split:.3}) is shorter than --horizon {horizon}",
            path.display(),
            test_at - valid_at
        );
    }
    let test = data.origins(test_at, lookback, horizon);
    if test.is_empty() {
        bail!(
            "{}: the test part ({} rows, --split {split:.3}) is shorter than --horizon {horizon}",
            path.display(),
            n - test_at
        );
    }
    let normalizer = Normalizer::fit(&data.work[..valid_at - 1])?;
    let season = match o.season {
        Some(s) => s,
        None => detect_season(&data.target[..test_at]),
    };
    ctx.say(&format!(
        "forecast: {n} rows of '{target}'{}: {} training windows, {} validation origins (rows {}..{test_at}), {} test origins (rows {}..{n}); season {season} ({}), strategy {strategy}",
        if features.is_empty() { String::new() } else { format!(" with {}", features.join(", ")) },
        train_origins.len(),
        valid.len(),
        valid_at + 1,
        test.len(),
        test_at + 1,
        if o.season.is_some() { "--season" } else { "detected; set with --season" },
    ));
    let spec = ForecastSpec {
        data: std::fs::canonicalize(path).unwrap_or_else(|_| path.clone()),
        target,
        features,
        lookback,
        horizon,
        split,
        valid_split,
        season,
        normalizer,
    };
    let mut cfg = ForecasterConfig::new(
        data.columns(),
        1,
        o.hidden.unwrap_or(DEFAULT_HIDDEN),
        strategy,
    )
    .with_mode(ctx.cell(Mode::Lstm)?)
    .with_num_layers(o.layers.unwrap_or(1))
    .with_dropout(o.dropout.unwrap_or(0.0))
    .with_layer_norm(o.layer_norm.unwrap_or(false))
    .with_horizon(horizon);
    if strategy == ForecastStrategy::Autoregressive {
        cfg = cfg.with_target_columns(vec![0]);
    }
    let varmap = VarMap::new();
    let model = Forecaster::new(cfg.clone(), ctx.var_builder(&varmap))?;
    let mut task = ForecastTask {
        model,
        data,
        spec,
        cfg,
        train_origins,
        valid,
        batch_size: o.batch_size.unwrap_or(DEFAULT_BATCH),
        device: ctx.device.clone(),
        task: ctx.task.as_str(),
    };
    let mut tcfg = trainer_config(ctx, &TRAIN_DEFAULTS)?;
    if o.patience.is_none() {
        tcfg.early_stopping = Some(EarlyStopping {
            patience: DEFAULT_PATIENCE,
            min_delta: 0.0,
        });
    }
    let report = fit(ctx, tcfg, varmap.clone(), &mut task)?;
    // The headline: the test part scored with the weights that validation picked.
    let at = match load_best(ctx, &varmap)? {
        Some(step) => format!("best (step {step})"),
        None => "last".to_string(),
    };
    let r = score(&task.model, &task.data, &task.spec, &test, &task.device)?;
    Ok(TrainOutcome {
        report,
        extra: vec![format!("test at {at}: {}", r.line())],
    })
}

/// A checkpoint's model and spec.
pub fn load_model(run: &CheckpointRun) -> Result<(Forecaster, ForecastSpec)> {
    let cfg: ForecasterConfig = run.model_entry("model")?;
    let spec: ForecastSpec = run.model_entry("spec")?;
    let varmap = VarMap::new();
    let model = Forecaster::new(cfg, run.var_builder(&varmap))?;
    run.fill(&varmap)?;
    Ok((model, spec))
}

/// Scores a checkpoint on the held-out part of its training file (`data = None`) or on every
/// origin of `data`.
pub fn evaluate_checkpoint(run: &CheckpointRun, data: Option<&Path>) -> Result<ForecastReport> {
    let (model, spec) = load_model(run)?;
    let path = data.unwrap_or(&spec.data);
    let (series, _) = SeriesData::from_csv(path, &spec.target, &spec.features)?;
    let from = match data {
        Some(_) => 0,
        None => series.split_index(spec.split),
    };
    let origins = series.origins(from, spec.lookback, spec.horizon);
    if origins.is_empty() {
        bail!(
            "{}: {} rows are too few to score a forecast with look-back {} and horizon {} (+1 for differencing)",
            path.display(),
            series.len(),
            spec.lookback,
            spec.horizon
        );
    }
    score(&model, &series, &spec, &origins, &run.device)
}

/// Evaluates a checkpoint. The metrics are those of `metrics.jsonl` (`mape` a fraction, not
/// a percentage) and `loss` in normalised difference units.
pub fn eval(run: &CheckpointRun, req: impl Into<EvalRequest>) -> Result<EvalReport> {
    let req = req.into();
    let r = evaluate_checkpoint(run, req.data.as_deref())?;
    let (summary, split, path) = match req.data {
        Some(p) => (format!("forecast: {}", r.line()), Split::Data, p),
        None => {
            let spec: ForecastSpec = run.model_entry("spec")?;
            (
                format!("forecast: test: {}", r.line()),
                Split::Test,
                spec.data,
            )
        }
    };
    let mut report = EvalReport::new(summary, split, Some(&path), r.points as u64, "points")
        .metric("rmse", r.rmse)
        .metric("mae", r.mae)
        .metric("persistence_rmse", r.persistence_rmse)
        .metric("loss", r.loss);
    if let Some(m) = r.mape {
        report = report.metric("mape", m);
    }
    if let Some(s) = r.seasonal_rmse {
        report = report.metric("seasonal_naive_rmse", s);
    }
    Ok(report)
}

/// Predicts with a checkpoint: the `--horizon` (default: the trained horizon) steps after the
/// last row of the `--input` CSV file, one `+k<TAB>value` line per step; as values, one
/// prediction whose input is the file and whose output is the array of the forecasts (element
/// k: k + 1 steps ahead).
pub fn predict(run: &CheckpointRun, req: impl Into<PredictRequest>) -> Result<Predictions> {
    let req = req.into();
    let (model, spec) = load_model(run)?;
    let Some(input) = &req.input else {
        bail!(
            "--input FILE.csv is required: the recent history (same columns as the training file)"
        );
    };
    let horizon = req.horizon.unwrap_or(spec.horizon);
    if horizon == 0 {
        bail!("--horizon must be at least 1, got 0");
    }
    let strategy = model.config().strategy;
    if strategy == ForecastStrategy::NextStep && horizon > 1 {
        bail!("--horizon {horizon}: this checkpoint was trained with strategy next-step and forecasts one step");
    }
    if strategy == ForecastStrategy::Direct && horizon > spec.horizon {
        bail!(
            "--horizon {horizon}: this checkpoint was trained with strategy direct for horizon {}",
            spec.horizon
        );
    }
    let path = Path::new(input);
    let (series, _) = SeriesData::from_csv(path, &spec.target, &spec.features)?;
    let n = series.len();
    if n < spec.lookback + 1 {
        bail!(
            "--input {input}: {n} rows, the model needs the last {} (look-back {} + 1 for differencing)",
            spec.lookback + 1,
            spec.lookback
        );
    }
    let xs = series.inputs(&[n], spec.lookback, &spec.normalizer, &run.device)?;
    let diffs = model.predict(&xs, None, horizon)?;
    let values = series.integrate(&[n], &diffs, &spec.normalizer)?;
    Ok(Predictions {
        lines: values
            .iter()
            .enumerate()
            .map(|(k, v)| format!("+{}\t{v:.4}", k + 1))
            .collect(),
        predictions: vec![Prediction {
            input: input.as_str().into(),
            output: values.into(),
        }],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn airline_like() -> Vec<f64> {
        (0..144)
            .map(|t| {
                let t = t as f64;
                (100.0 + 2.0 * t) * (1.0 + 0.2 * (t * std::f64::consts::TAU / 12.0).sin())
            })
            .collect()
    }

    #[test]
    fn season_is_detected_and_baselines_line_up() {
        let v = airline_like();
        assert_eq!(detect_season(&v[..96]), 12);
        let rows: Vec<Vec<f64>> = v.iter().map(|x| vec![*x]).collect();
        let d = SeriesData::from_rows(&rows);
        assert_eq!(d.split_index(DEFAULT_SPLIT), 96);
        let origins = d.origins(96, 12, 1);
        assert_eq!(origins, (96..144).collect::<Vec<_>>());
        let (p, s) = d.baselines(&origins, 1, 12);
        assert_eq!(p[0], v[95]);
        assert_eq!(s.unwrap()[0], v[84]);
        // Two steps: both from origin t0; the seasonal value stays within the last season.
        let (p, s) = d.baselines(&[100], 13, 12);
        assert_eq!(p, vec![v[99]; 13]);
        let s = s.unwrap();
        assert_eq!((s[0], s[11], s[12]), (v[88], v[99], v[88]));
        assert_eq!(d.actuals(&[100], 2), vec![v[100], v[101]]);
    }

    #[test]
    fn windows_and_integration_round_trip() {
        let v = airline_like();
        let rows: Vec<Vec<f64>> = v.iter().map(|x| vec![*x, 2.0 * x]).collect();
        let d = SeriesData::from_rows(&rows);
        let norm = Normalizer::fit(&d.work[..95]).unwrap();
        let xs = d.inputs(&[20, 30], 5, &norm, &Device::Cpu).unwrap();
        assert_eq!(xs.dims(), &[2, 5, 2]);
        let first = xs.to_vec3::<f32>().unwrap()[0][4].clone();
        // The last input step of origin 20 is time 19: the difference v[19] - v[18].
        assert!((first[0] as f64 - norm.apply(0, v[19] - v[18])).abs() < 1e-5);
        assert!((first[1] as f64 - norm.apply(1, 2.0 * v[19])).abs() < 1e-4);
        // Aligned targets are the inputs shifted by one step.
        let aligned = d.diffs(&[20], -4, 5, &norm, &Device::Cpu).unwrap();
        let a = aligned.to_vec3::<f32>().unwrap()[0].clone();
        let x = xs.to_vec3::<f32>().unwrap()[0].clone();
        assert_eq!(a[0][0], x[1][0]);
        // Integrating the true differences gives back the actual values.
        let truth = d.diffs(&[20, 30], 0, 3, &norm, &Device::Cpu).unwrap();
        let back = d.integrate(&[20, 30], &truth, &norm).unwrap();
        let actual = d.actuals(&[20, 30], 3);
        for (b, a) in back.iter().zip(&actual) {
            assert!((b - a).abs() < 1e-3, "{b} vs {a}");
        }
    }

    #[test]
    fn strategy_defaults_and_conflicts() {
        assert_eq!(strategy(None, 1).unwrap(), ForecastStrategy::NextStep);
        assert_eq!(strategy(None, 3).unwrap(), ForecastStrategy::Direct);
        let e = strategy(Some("next-step"), 3).unwrap_err().to_string();
        assert!(e.contains("--horizon 3"), "{e}");
        let e = strategy(Some("sideways"), 1).unwrap_err().to_string();
        assert!(e.contains("--strategy"), "{e}");
    }

    /// Both strategies' targets (direct: the horizon; next step: aligned with the window).
    #[test]
    fn parts_of_a_batch_sum_to_the_whole_batch() {
        let rows: Vec<Vec<f64>> = (0..60)
            .map(|t| {
                let t = t as f64;
                vec![10.0 + (t / 3.0).sin() * 4.0 + 0.1 * t, (t / 5.0).cos()]
            })
            .collect();
        let data = SeriesData::from_rows(&rows);
        for strategy in [ForecastStrategy::Direct, ForecastStrategy::NextStep] {
            let cfg = ForecasterConfig::new(data.columns(), 1, 6, strategy).with_horizon(3);
            let varmap = VarMap::new();
            let vb = rnn_core::init::seeded_var_builder(
                &varmap,
                3,
                candle_core::DType::F32,
                &Device::Cpu,
            );
            let mut task = ForecastTask {
                model: Forecaster::new(cfg.clone(), vb).unwrap(),
                spec: ForecastSpec {
                    data: PathBuf::new(),
                    target: "y".into(),
                    features: vec!["x".into()],
                    lookback: 8,
                    horizon: 3,
                    split: 0.1,
                    valid_split: 0.1,
                    season: 1,
                    normalizer: Normalizer::fit(&data.work).unwrap(),
                },
                train_origins: data.origins(40, 8, 3),
                valid: Vec::new(),
                data: data.clone(),
                cfg,
                batch_size: 7,
                device: Device::Cpu,
                task: "forecast",
            };
            let batch = task.train_batches(0, 1).unwrap().remove(0);
            crate::tasks::parts::checks::assert_parts_sum_to_whole(
                &mut task,
                &batch,
                7,
                &varmap.all_vars(),
                &[2, 3, 9],
            );
        }
    }
}
