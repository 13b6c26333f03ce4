//! The generated long-memory benchmarks of `rnn train adding` and `rnn train copy`: no data files,
//! every sequence comes from a seeded generator, so a run is reproducible and a checkpoint can be
//! evaluated on fresh sequences of the same kind.
//!
//! - **Adding problem** (Hochreiter & Schmidhuber 1997, <https://doi.org/10.1162/neco.1997.9.8.1735>;
//!   set up as in Le et al. 2015, <https://arxiv.org/abs/1504.00941>, and Arjovsky et al. 2016,
//!   <https://arxiv.org/abs/1511.06464>): each of the `T = --seq-len` steps carries two features,
//!   a number drawn uniformly from `[0, 1]` and a marker (0 or 1). Exactly two steps are marked,
//!   one in each half of the sequence; the target is the sum of the two marked numbers. The model
//!   ([`Forecaster`] with the direct strategy, horizon 1: a recurrent layer and a linear head on
//!   its last state) is trained on the mean squared error. Always answering 1 scores
//!   `Var(U + V) = 1/6 ≈ 0.167` ([`ADDING_BASELINE_MSE`]): a model below it has learnt to carry the
//!   marked numbers across the sequence.
//! - **Copy memory** (Arjovsky et al. 2016, section 4.1): the input is [`COPY_RECALL`] symbols
//!   drawn from an alphabet of [`COPY_SYMBOLS`] (ids `1..=8`), then `T = --seq-len` blanks (id 0),
//!   a delimiter (id 9) and [`COPY_RECALL`] more blanks: `T + 21` steps in all. The target is blank
//!   at every step except the last [`COPY_RECALL`], which must repeat the symbols in order. The
//!   model ([`SequenceTagger`], unidirectional) is trained with the cross-entropy over all steps;
//!   the headline metric is the accuracy on the recalled symbols (guessing: 1/8 = 0.125).
//!
//! Training, validation and `rnn eval` sets come from fixed seeds (independent of `--seed`, which
//! seeds the initialisation and the batch order).
//!
//! At long gaps (`--seq-len 200`) a plain LSTM and a vanilla RNN stay at the adding baseline,
//! while a GRU, or an LSTM with `--chrono-init` set to the sequence length, learn the task.

use super::parts::{empty_part, part_rows};
use anyhow::{bail, Context, Result};
use candle_core::{DType, Device, Tensor, D};
use candle_nn::VarMap;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rnn_core::{Mode, RnnState};
use rnn_models::classifier::Input;
use rnn_models::forecaster::{ForecastStrategy, Forecaster, ForecasterConfig};
use rnn_models::loss::masked_cross_entropy;
use rnn_models::tagger::{SequenceTagger, SequenceTaggerConfig};
use rnn_train::trainer::{Evaluation, MainMetric, Part, StepLoss, TrainTask};
use serde::{Deserialize, Serialize};

use crate::run::{
    fit, invalid, stochastic_model, task_from_functions, trainer_config, CheckpointRun,
    EvalRequest, PredictRequest, RunContext, TaskName, TaskOptions, TrainDefaults, TrainOutcome,
};
use crate::run::{EvalReport, Predictions, Split};

/// MSE of always predicting 1 on the adding problem: the variance of the sum of two U(0, 1)
/// numbers, 1/6.
pub const ADDING_BASELINE_MSE: f64 = 1.0 / 6.0;
/// Symbols to remember in the copy-memory task.
pub const COPY_RECALL: usize = 10;
/// Alphabet size of the copy-memory task (symbol ids `1..=COPY_SYMBOLS`).
pub const COPY_SYMBOLS: u32 = 8;
/// Id of the blank in the copy-memory task.
pub const COPY_BLANK: u32 = 0;
/// Id of the delimiter that asks for the recall.
pub const COPY_DELIMITER: u32 = COPY_SYMBOLS + 1;
/// Accuracy of guessing a recalled symbol.
pub const COPY_BASELINE_ACCURACY: f64 = 1.0 / COPY_SYMBOLS as f64;

/// Default `--seq-len` of the adding problem.
pub const ADDING_DEFAULT_SEQ_LEN: usize = 50;
/// Default `--seq-len` (the blank gap) of the copy-memory task.
pub const COPY_DEFAULT_SEQ_LEN: usize = 20;
/// Default number of training sequences (`--samples`).
pub const DEFAULT_SAMPLES: usize = 10_000;
/// Sequences in the validation set and in the fresh set of `rnn eval`.
pub const EVAL_SAMPLES: usize = 1_000;

/// Seeds of the generated sets (fixed, so every run sees the same data).
const TRAIN_SEED: u64 = 0x5EED_0001;
const VALID_SEED: u64 = 0x5EED_0002;
const EVAL_SEED: u64 = 0x5EED_0003;

/// Sequences per forward pass during evaluation.
const EVAL_CHUNK: usize = 500;

// ---------------------------------------------------------------------------------------------
// Data
// ---------------------------------------------------------------------------------------------

/// A generated set of adding-problem sequences.
#[derive(Debug, Clone, PartialEq)]
pub struct AddingData {
    /// Steps per sequence `T`.
    pub seq_len: usize,
    /// Inputs, row-major `(n, T, 2)`: `[value, marker]` per step.
    pub xs: Vec<f32>,
    /// Targets, one sum per sequence.
    pub ys: Vec<f32>,
}

impl AddingData {
    /// `n` sequences of `seq_len >= 2` steps from the generator seeded with `seed`: values
    /// uniform in `[0, 1)`, one marked step uniform in `[0, T/2)` and one in `[T/2, T)`.
    pub fn generate(n: usize, seq_len: usize, seed: u64) -> Result<Self> {
        if seq_len < 2 {
            bail!("--seq-len must be at least 2 for the adding problem (one marked number in each half), got {seq_len}");
        }
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let half = seq_len / 2;
        let mut xs = vec![0f32; n * seq_len * 2];
        let mut ys = Vec::with_capacity(n);
        for i in 0..n {
            let row = &mut xs[i * seq_len * 2..(i + 1) * seq_len * 2];
            for t in 0..seq_len {
                row[2 * t] = rng.random::<f32>();
            }
            let a = rng.random_range(0..half);
            let b = rng.random_range(half..seq_len);
            row[2 * a + 1] = 1.0;
            row[2 * b + 1] = 1.0;
            ys.push(row[2 * a] + row[2 * b]);
        }
        Ok(Self { seq_len, xs, ys })
    }

    /// Number of sequences.
    pub fn len(&self) -> usize {
        self.ys.len()
    }

    /// Whether the set is empty.
    pub fn is_empty(&self) -> bool {
        self.ys.is_empty()
    }

    /// The sequences at `index` as tensors: inputs `(b, T, 2)` and targets `(b, 1, 1)` of `dtype`.
    pub fn batch(
        &self,
        index: &[usize],
        device: &Device,
        dtype: DType,
    ) -> Result<(Tensor, Tensor)> {
        let step = self.seq_len * 2;
        let mut xs = Vec::with_capacity(index.len() * step);
        let mut ys = Vec::with_capacity(index.len());
        for &i in index {
            xs.extend_from_slice(&self.xs[i * step..(i + 1) * step]);
            ys.push(self.ys[i]);
        }
        let b = index.len();
        Ok((
            Tensor::from_vec(xs, (b, self.seq_len, 2), device)?.to_dtype(dtype)?,
            Tensor::from_vec(ys, (b, 1, 1), device)?.to_dtype(dtype)?,
        ))
    }
}

/// A generated set of copy-memory sequences.
#[derive(Debug, Clone, PartialEq)]
pub struct CopyData {
    /// The blank gap `T` between the symbols and the delimiter.
    pub gap: usize,
    /// Input ids, row-major `(n, T + 21)`.
    pub xs: Vec<u32>,
    /// Target ids, row-major `(n, T + 21)`.
    pub ys: Vec<u32>,
}

/// Steps of a copy-memory sequence with a gap of `gap` blanks.
pub fn copy_seq_len(gap: usize) -> usize {
    gap + 2 * COPY_RECALL + 1
}

/// The input and target ids of one copy-memory sequence recalling `symbols` after `gap` blanks.
pub fn copy_sequence(symbols: &[u32], gap: usize) -> (Vec<u32>, Vec<u32>) {
    let len = copy_seq_len(gap);
    let mut x = vec![COPY_BLANK; len];
    let mut y = vec![COPY_BLANK; len];
    x[..symbols.len()].copy_from_slice(symbols);
    x[COPY_RECALL + gap] = COPY_DELIMITER;
    y[len - COPY_RECALL..].copy_from_slice(symbols);
    (x, y)
}

impl CopyData {
    /// `n` sequences with a blank gap of `gap >= 1` steps from the generator seeded with `seed`.
    pub fn generate(n: usize, gap: usize, seed: u64) -> Result<Self> {
        if gap == 0 {
            bail!("--seq-len must be at least 1, got 0");
        }
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let len = copy_seq_len(gap);
        let mut xs = Vec::with_capacity(n * len);
        let mut ys = Vec::with_capacity(n * len);
        for _ in 0..n {
            let symbols: Vec<u32> = (0..COPY_RECALL)
                .map(|_| rng.random_range(1..=COPY_SYMBOLS))
                .collect();
            let (x, y) = copy_sequence(&symbols, gap);
            xs.extend(x);
            ys.extend(y);
        }
        Ok(Self { gap, xs, ys })
    }

    /// Steps per sequence.
    pub fn seq_len(&self) -> usize {
        copy_seq_len(self.gap)
    }

    /// Number of sequences.
    pub fn len(&self) -> usize {
        self.xs.len() / self.seq_len()
    }

    /// Whether the set is empty.
    pub fn is_empty(&self) -> bool {
        self.xs.is_empty()
    }

    /// The sequences at `index`: input ids and target ids, both `u32 (b, T + 21)`.
    pub fn batch(&self, index: &[usize], device: &Device) -> Result<(Tensor, Tensor)> {
        let len = self.seq_len();
        let mut xs = Vec::with_capacity(index.len() * len);
        let mut ys = Vec::with_capacity(index.len() * len);
        for &i in index {
            xs.extend_from_slice(&self.xs[i * len..(i + 1) * len]);
            ys.extend_from_slice(&self.ys[i * len..(i + 1) * len]);
        }
        let b = index.len();
        Ok((
            Tensor::from_vec(xs, (b, len), device)?,
            Tensor::from_vec(ys, (b, len), device)?,
        ))
    }
}

/// The batches of one epoch: indices `0..n` shuffled by a generator seeded from `(epoch, seed)`,
/// cut into batches of `batch_size` (the last one may be smaller).
pub fn epoch_batches(n: usize, batch_size: usize, epoch: u64, seed: u64) -> Vec<Vec<usize>> {
    let mut order: Vec<usize> = (0..n).collect();
    let mix = rnn_core::seed::epoch_seed(seed, epoch, 0xD1B5_4A32_D192_ED03);
    order.shuffle(&mut ChaCha8Rng::seed_from_u64(mix));
    order
        .chunks(batch_size.max(1))
        .map(<[usize]>::to_vec)
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Metrics
// ---------------------------------------------------------------------------------------------

/// Mean squared error of `model` on `data`, and the MSE of always answering 1 on the same data.
pub fn adding_mse(
    model: &Forecaster,
    data: &AddingData,
    device: &Device,
    dtype: DType,
) -> Result<(f64, f64)> {
    let all: Vec<usize> = (0..data.len()).collect();
    let mut sq = 0f64;
    for chunk in all.chunks(EVAL_CHUNK) {
        let (xs, ys) = data.batch(chunk, device, dtype)?;
        let pred = model.forward(&xs, None, false)?;
        sq += (pred - ys)?
            .sqr()?
            .sum_all()?
            .to_dtype(DType::F64)?
            .to_scalar::<f64>()?;
    }
    let n = data.len().max(1) as f64;
    let baseline = data
        .ys
        .iter()
        .map(|&y| (y as f64 - 1.0).powi(2))
        .sum::<f64>()
        / n;
    Ok((sq / n, baseline))
}

/// Copy-memory scores of a model on a data set.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CopyScores {
    /// Mean cross-entropy over all steps (nats).
    pub loss: f64,
    /// Fraction of recalled symbols right.
    pub accuracy: f64,
    /// Fraction of sequences with all recalled symbols right.
    pub sequence_accuracy: f64,
    /// Fraction of the other steps predicted blank.
    pub blank_accuracy: f64,
}

/// Scores `model` on `data` (eval mode).
pub fn copy_scores(model: &SequenceTagger, data: &CopyData, device: &Device) -> Result<CopyScores> {
    let len = data.seq_len();
    let all: Vec<usize> = (0..data.len()).collect();
    let (mut loss, mut right, mut whole, mut blanks) = (0f64, 0usize, 0usize, 0usize);
    for chunk in all.chunks(EVAL_CHUNK) {
        let (xs, ys) = data.batch(chunk, device)?;
        let logits = model.forward(&xs, None, false)?;
        loss += masked_cross_entropy(&logits, &ys, None)?
            .to_dtype(DType::F64)?
            .to_scalar::<f64>()?
            * chunk.len() as f64;
        let pred = logits.argmax(D::Minus1)?.to_vec2::<u32>()?;
        let truth = ys.to_vec2::<u32>()?;
        for (p, y) in pred.iter().zip(&truth) {
            let r = (len - COPY_RECALL..len).filter(|&t| p[t] == y[t]).count();
            right += r;
            whole += usize::from(r == COPY_RECALL);
            blanks += (0..len - COPY_RECALL)
                .filter(|&t| p[t] == COPY_BLANK)
                .count();
        }
    }
    let n = data.len().max(1) as f64;
    Ok(CopyScores {
        loss: loss / n,
        accuracy: right as f64 / (n * COPY_RECALL as f64),
        sequence_accuracy: whole as f64 / n,
        blank_accuracy: blanks as f64 / (n * (len - COPY_RECALL) as f64),
    })
}

// ---------------------------------------------------------------------------------------------
// Training tasks
// ---------------------------------------------------------------------------------------------

/// What the checkpoint's `config.json` holds besides the model configuration.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Meta {
    /// `--seq-len`: steps of an adding sequence, or the blank gap of a copy sequence.
    seq_len: usize,
    /// Training sequences.
    samples: usize,
}

/// The adding problem as a [`TrainTask`].
struct AddingTask {
    model: Forecaster,
    train: AddingData,
    valid: AddingData,
    batch_size: usize,
    device: Device,
    dtype: DType,
    meta: Meta,
}

impl TrainTask for AddingTask {
    type Batch = (Tensor, Tensor);

    fn train_batches(&mut self, epoch: u64, seed: u64) -> rnn_train::Result<Vec<Self::Batch>> {
        epoch_batches(self.train.len(), self.batch_size, epoch, seed)
            .iter()
            .map(|index| {
                self.train
                    .batch(index, &self.device, self.dtype)
                    .map_err(invalid)
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

    /// Rows of the batch: every sequence has the same length and the loss is the mean over the
    /// part's rows (and their steps), so the units-weighted mean of the parts is the batch's.
    fn train_part(
        &mut self,
        (xs, ys): &Self::Batch,
        part: Part,
        _carry: &mut Option<RnnState>,
    ) -> rnn_train::Result<StepLoss> {
        let Some((xs, ys)) = part_rows(part, xs, ys)? else {
            return empty_part(xs.device());
        };
        Ok(StepLoss {
            loss: self.model.loss(&xs, None, &ys, true)?,
            units: xs.dim(0)? as u64,
        })
    }

    fn evaluate(&mut self) -> rnn_train::Result<Evaluation> {
        let (mse, baseline) =
            adding_mse(&self.model, &self.valid, &self.device, self.dtype).map_err(invalid)?;
        let mut eval = Evaluation::from_loss(mse);
        eval.metrics.insert("mse".into(), mse);
        eval.metrics.insert("baseline_mse".into(), baseline);
        eval.main = Some(MainMetric {
            name: "mse".into(),
            value: mse,
            higher_is_better: false,
        });
        Ok(eval)
    }

    stochastic_model!(model);

    fn checkpoint_config(&self) -> serde_json::Value {
        serde_json::json!({
            "task": TaskName::Adding.as_str(),
            "model": self.model.config(),
            "seq_len": self.meta.seq_len,
            "samples": self.meta.samples,
        })
    }
}

/// The copy-memory task as a [`TrainTask`].
struct CopyTask {
    model: SequenceTagger,
    train: CopyData,
    valid: CopyData,
    batch_size: usize,
    device: Device,
    meta: Meta,
}

impl TrainTask for CopyTask {
    type Batch = (Tensor, Tensor);

    fn train_batches(&mut self, epoch: u64, seed: u64) -> rnn_train::Result<Vec<Self::Batch>> {
        epoch_batches(self.train.len(), self.batch_size, epoch, seed)
            .iter()
            .map(|index| self.train.batch(index, &self.device).map_err(invalid))
            .collect()
    }

    fn train_step(
        &mut self,
        batch: &Self::Batch,
        carry: &mut Option<RnnState>,
    ) -> rnn_train::Result<StepLoss> {
        self.train_part(batch, Part::WHOLE, carry)
    }

    /// Rows of the batch: every sequence has the same length and the loss is the mean over the
    /// part's rows (and their steps), so the units-weighted mean of the parts is the batch's.
    fn train_part(
        &mut self,
        (xs, ys): &Self::Batch,
        part: Part,
        _carry: &mut Option<RnnState>,
    ) -> rnn_train::Result<StepLoss> {
        let Some((xs, ys)) = part_rows(part, xs, ys)? else {
            return empty_part(xs.device());
        };
        Ok(StepLoss {
            loss: self.model.loss(&xs, None, &ys, true)?,
            units: xs.dim(0)? as u64,
        })
    }

    fn evaluate(&mut self) -> rnn_train::Result<Evaluation> {
        let s = copy_scores(&self.model, &self.valid, &self.device).map_err(invalid)?;
        let mut eval = Evaluation::from_loss(s.loss);
        eval.metrics.insert("accuracy".into(), s.accuracy);
        eval.metrics
            .insert("sequence_accuracy".into(), s.sequence_accuracy);
        eval.metrics
            .insert("blank_accuracy".into(), s.blank_accuracy);
        eval.metrics
            .insert("baseline_accuracy".into(), COPY_BASELINE_ACCURACY);
        eval.main = Some(MainMetric {
            name: "accuracy".into(),
            value: s.accuracy,
            higher_is_better: true,
        });
        Ok(eval)
    }

    stochastic_model!(model);

    fn checkpoint_config(&self) -> serde_json::Value {
        serde_json::json!({
            "task": TaskName::Copy.as_str(),
            "model": self.model.config(),
            "seq_len": self.meta.seq_len,
            "samples": self.meta.samples,
        })
    }
}

/// Refuses the file options: these tasks generate their data.
fn refuse_files(ctx: &RunContext) -> Result<()> {
    let o = &ctx.opts;
    for (flag, given) in [
        ("--data", o.data.is_some()),
        ("--valid", o.valid.is_some()),
        ("--test", o.test.is_some()),
    ] {
        if given {
            bail!(
                "{flag}: the {} task generates its data and reads no file; set its size with --seq-len and --samples",
                ctx.task.as_str()
            );
        }
    }
    if o.bidirectional == Some(true) {
        bail!(
            "--bidirectional: the {} task needs a unidirectional model (the answer must be carried forward in time)",
            ctx.task.as_str()
        );
    }
    Ok(())
}

/// Default `--hidden` of `adding` (else `copy`).
fn default_hidden(adding: bool) -> usize {
    if adding {
        64
    } else {
        128
    }
}

/// The training defaults of `adding` (else `copy`).
fn train_defaults(adding: bool) -> TrainDefaults {
    TrainDefaults {
        epochs: 10,
        lr: if adding { 3e-3 } else { 1e-2 },
        clip: Some(1.0),
        eval_every: None,
        optimizer: "adamw",
    }
}

/// The options `adding` and `copy` read, with their defaults.
pub fn options(task: TaskName) -> TaskOptions {
    let adding = task == TaskName::Adding;
    let files = format!(
        "the {} task generates its data and reads no file; set its size with --seq-len and --samples",
        task.as_str()
    );
    let o = TaskOptions::new()
        .with(
            "seq-len",
            if adding {
                ADDING_DEFAULT_SEQ_LEN
            } else {
                COPY_DEFAULT_SEQ_LEN
            },
        )
        .with("samples", DEFAULT_SAMPLES)
        .with("bidirectional", false);
    let o = if adding {
        o.with("layer-norm", false)
    } else {
        o.with("embedding", 16)
    };
    o.with("cell", "lstm")
        .with("hidden", default_hidden(adding))
        .with("layers", 1)
        .with("dropout", 0)
        .with("batch-size", 64)
        .training(&train_defaults(adding))
        .refuse("data", files.clone())
        .refuse("valid", files.clone())
        .refuse("test", files)
}

task_from_functions!(
    /// The generated tasks `adding` and `copy` (see the [module docs](self)).
    Synthetic
);

/// Trains `ctx.task` (adding or copy).
///
/// Defaults: LSTM, `--hidden 64` (adding) / `128` (copy), one layer, `--batch-size 64`,
/// `--samples 10000`, `--seq-len 50` (adding) / `20` (copy), AdamW `--lr 3e-3` (adding) /
/// `1e-2` (copy), `--clip 1.0`, `--epochs 10`, evaluation at every epoch end.
pub fn train(ctx: &RunContext) -> Result<TrainOutcome> {
    refuse_files(ctx)?;
    let o = &ctx.opts;
    let adding = match ctx.task {
        TaskName::Adding => true,
        TaskName::Copy => false,
        other => bail!(
            "synthetic::train: `{}` is not a generated task",
            other.as_str()
        ),
    };
    let mode = ctx.cell(Mode::Lstm)?;
    let seq_len = o.seq_len.unwrap_or(if adding {
        ADDING_DEFAULT_SEQ_LEN
    } else {
        COPY_DEFAULT_SEQ_LEN
    });
    let samples = o.samples.unwrap_or(DEFAULT_SAMPLES);
    let hidden = o.hidden.unwrap_or(default_hidden(adding));
    let layers = o.layers.unwrap_or(1);
    let dropout = o.dropout.unwrap_or(0.0);
    let batch_size = o.batch_size.unwrap_or(64);
    let cfg = trainer_config(ctx, &train_defaults(adding))?;
    let meta = Meta { seq_len, samples };
    let varmap = VarMap::new();
    let vb = ctx.var_builder(&varmap);
    ctx.say(&format!(
        "{}: {} sequences of {} steps, {mode} hidden {hidden} x {layers} layer(s)",
        ctx.task.as_str(),
        samples,
        if adding {
            seq_len
        } else {
            copy_seq_len(seq_len)
        },
    ));
    let (report, extra) = if adding {
        let train = AddingData::generate(samples, seq_len, TRAIN_SEED)?;
        let valid = AddingData::generate(EVAL_SAMPLES, seq_len, VALID_SEED)?;
        let model_cfg = ForecasterConfig::new(2, 1, hidden, ForecastStrategy::Direct)
            .with_mode(mode)
            .with_num_layers(layers)
            .with_dropout(dropout)
            .with_layer_norm(o.layer_norm.unwrap_or(false));
        let model = Forecaster::new(model_cfg, vb).context("building the adding model")?;
        let mut task = AddingTask {
            model,
            train,
            valid,
            batch_size,
            device: ctx.device.clone(),
            dtype: ctx.dtype,
            meta,
        };
        let report = fit(ctx, cfg, varmap, &mut task)?;
        let extra = vec![format!(
            "baseline MSE {ADDING_BASELINE_MSE:.3} (always predicting 1)"
        )];
        (report, extra)
    } else {
        let train = CopyData::generate(samples, seq_len, TRAIN_SEED)?;
        let valid = CopyData::generate(EVAL_SAMPLES, seq_len, VALID_SEED)?;
        let embedding = o.embedding.unwrap_or(16);
        let model_cfg = SequenceTaggerConfig::new(
            Input::tokens(COPY_DELIMITER as usize + 1, embedding),
            mode,
            hidden,
            COPY_SYMBOLS as usize + 1,
        )
        .with_bidirectional(false)
        .with_num_layers(layers)
        .with_rnn_dropout(if layers > 1 { dropout } else { 0.0 });
        let model = SequenceTagger::new(&model_cfg, vb).context("building the copy model")?;
        let mut task = CopyTask {
            model,
            train,
            valid,
            batch_size,
            device: ctx.device.clone(),
            meta,
        };
        let report = fit(ctx, cfg, varmap, &mut task)?;
        let extra = vec![format!(
            "baseline accuracy {COPY_BASELINE_ACCURACY:.3} (guessing)"
        )];
        (report, extra)
    };
    // The headline: fresh test sequences, which model selection never saw, with the best
    // weights (the line `rnn eval --checkpoint OUT` prints).
    let run = CheckpointRun::load(&ctx.out, &ctx.device)?;
    let req = EvalRequest {
        data: None,
        labels: None,
        batch_size: crate::run::DEFAULT_EVAL_BATCH,
    };
    let mut extra = extra;
    extra.push(format!("test (best checkpoint): {}", eval(&run, req)?));
    Ok(TrainOutcome { report, extra })
}

// ---------------------------------------------------------------------------------------------
// Checkpoints: eval and predict
// ---------------------------------------------------------------------------------------------

/// The adding model of a checkpoint and its `--seq-len`.
fn load_adding(run: &CheckpointRun) -> Result<(Forecaster, usize)> {
    let cfg: ForecasterConfig = run.model_entry("model")?;
    let seq_len: usize = run.model_entry("seq_len")?;
    let varmap = VarMap::new();
    let model = Forecaster::new(cfg, run.var_builder(&varmap))
        .with_context(|| format!("{}: rebuilding the model", run.dir.display()))?;
    run.fill(&varmap)?;
    Ok((model, seq_len))
}

/// The copy model of a checkpoint and its blank gap.
fn load_copy(run: &CheckpointRun) -> Result<(SequenceTagger, usize)> {
    let cfg: SequenceTaggerConfig = run.model_entry("model")?;
    let gap: usize = run.model_entry("seq_len")?;
    let varmap = VarMap::new();
    let model = SequenceTagger::new(&cfg, run.var_builder(&varmap))
        .with_context(|| format!("{}: rebuilding the model", run.dir.display()))?;
    run.fill(&varmap)?;
    Ok((model, gap))
}

/// The report of an evaluation on [`EVAL_SAMPLES`] fresh sequences, printed as `summary`.
fn fresh(summary: String) -> EvalReport {
    EvalReport::new(summary, Split::Test, None, EVAL_SAMPLES as u64, "sequences")
}

/// Evaluates a checkpoint on [`EVAL_SAMPLES`] freshly generated sequences (a seed that neither
/// training nor validation used).
pub fn eval(run: &CheckpointRun, req: impl Into<EvalRequest>) -> Result<EvalReport> {
    let req = req.into();
    if let Some(p) = &req.data {
        bail!(
            "--data {}: the {} task generates its evaluation data; no file is read",
            p.display(),
            run.task.as_str()
        );
    }
    match run.task {
        TaskName::Adding => {
            let (model, seq_len) = load_adding(run)?;
            let data = AddingData::generate(EVAL_SAMPLES, seq_len, EVAL_SEED)?;
            let (mse, baseline) = adding_mse(&model, &data, &run.device, run.dtype())?;
            let summary = format!(
                "adding (T = {seq_len}, {}): MSE {mse:.4} on {EVAL_SAMPLES} fresh sequences; baseline (always 1) {baseline:.4}",
                model.config().mode
            );
            Ok(fresh(summary)
                .metric("mse", mse)
                .metric("baseline_mse", baseline))
        }
        TaskName::Copy => {
            let (model, gap) = load_copy(run)?;
            let data = CopyData::generate(EVAL_SAMPLES, gap, EVAL_SEED)?;
            let s = copy_scores(&model, &data, &run.device)?;
            let summary = format!(
                "copy (gap T = {gap}, {}): recall accuracy {:.4} (guessing {COPY_BASELINE_ACCURACY:.3}), whole sequences {:.4}, blank steps {:.4}, loss {:.4} on {EVAL_SAMPLES} fresh sequences",
                model.config().mode,
                s.accuracy,
                s.sequence_accuracy,
                s.blank_accuracy,
                s.loss
            );
            Ok(fresh(summary)
                .metric("accuracy", s.accuracy)
                .metric("baseline_accuracy", COPY_BASELINE_ACCURACY)
                .metric("sequence_accuracy", s.sequence_accuracy)
                .metric("blank_accuracy", s.blank_accuracy)
                .metric("loss", s.loss))
        }
        other => bail!(
            "synthetic::eval: `{}` is not a generated task",
            other.as_str()
        ),
    }
}

/// Parses an adding-problem input `"0.3:1 0.5:0 0.2:1 ..."` (`value:marker` per step, marker 0
/// or 1): the `(T, 2)` rows and the sum of the marked values.
pub fn parse_adding_input(line: &str) -> Result<(Vec<f32>, f32)> {
    let mut xs = Vec::new();
    let mut sum = 0f32;
    for (i, tok) in line.split_whitespace().enumerate() {
        let bad = |what: &str| {
            anyhow::anyhow!(
                "--input: step {} '{tok}': {what}; expected value:marker pairs such as \"0.3:1 0.5:0 0.2:1\"",
                i + 1
            )
        };
        let (v, m) = tok.split_once(':').ok_or_else(|| bad("no ':'"))?;
        let v: f32 = v
            .trim()
            .parse()
            .map_err(|_| bad("the value is not a number"))?;
        if !v.is_finite() {
            return Err(bad("the value is not finite"));
        }
        let m: f32 = match m.trim() {
            "0" => 0.0,
            "1" => 1.0,
            _ => return Err(bad("the marker must be 0 or 1")),
        };
        if m == 1.0 {
            sum += v;
        }
        xs.extend([v, m]);
    }
    if xs.is_empty() {
        bail!("--input: empty; expected value:marker pairs such as \"0.3:1 0.5:0 0.2:1\"");
    }
    Ok((xs, sum))
}

/// Parses a copy-memory input: exactly [`COPY_RECALL`] symbols in `1..=COPY_SYMBOLS`.
pub fn parse_copy_input(line: &str) -> Result<Vec<u32>> {
    let symbols = line
        .split_whitespace()
        .enumerate()
        .map(|(i, tok)| match tok.parse::<u32>() {
            Ok(s) if (1..=COPY_SYMBOLS).contains(&s) => Ok(s),
            _ => bail!(
                "--input: symbol {} '{tok}' must be a whole number from 1 to {COPY_SYMBOLS}",
                i + 1
            ),
        })
        .collect::<Result<Vec<u32>>>()?;
    if symbols.len() != COPY_RECALL {
        bail!(
            "--input: expected {COPY_RECALL} symbols (1 to {COPY_SYMBOLS}) separated by spaces, got {}",
            symbols.len()
        );
    }
    Ok(symbols)
}

/// Runs a checkpoint on `--input`: adding `value:marker` pairs give the predicted sum (as
/// values `{"sum": predicted, "marked_sum": true sum, "steps", "marked"}`); copy symbols give
/// the recalled symbols after the checkpoint's blank gap (`{"recalled": [...], "right"}`).
pub fn predict(run: &CheckpointRun, req: impl Into<PredictRequest>) -> Result<Predictions> {
    let req = req.into();
    let inputs = req.inputs()?;
    let mut out = Predictions::default();
    match run.task {
        TaskName::Adding => {
            let (model, seq_len) = load_adding(run)?;
            for line in &inputs {
                let (xs, sum) = parse_adding_input(line)?;
                let t = xs.len() / 2;
                let marked = xs.iter().skip(1).step_by(2).filter(|&&m| m == 1.0).count();
                let input = Tensor::from_vec(xs, (1, t, 2), &run.device)?.to_dtype(run.dtype())?;
                let pred = model
                    .predict(&input, None, 1)?
                    .flatten_all()?
                    .to_dtype(DType::F64)?
                    .to_vec1::<f64>()?[0];
                let mut text = format!("{pred:.4} (sum of the {marked} marked values: {sum:.4})");
                if t != seq_len || marked != 2 {
                    text.push_str(&format!(
                        "; note: trained on {seq_len} steps with exactly 2 marked, this input has {t} steps with {marked} marked"
                    ));
                }
                let value = serde_json::json!({
                    "sum": pred,
                    "marked_sum": sum,
                    "steps": t,
                    "marked": marked,
                });
                out.push(text, line.as_str(), value);
            }
            Ok(out)
        }
        TaskName::Copy => {
            let (model, gap) = load_copy(run)?;
            for line in &inputs {
                let symbols = parse_copy_input(line)?;
                let (x, _) = copy_sequence(&symbols, gap);
                let len = x.len();
                let input = Tensor::from_vec(x, (1, len), &run.device)?;
                let pred = &model.predict(&input, None)?[0];
                let recalled = &pred[len - COPY_RECALL..];
                let right = recalled
                    .iter()
                    .zip(&symbols)
                    .filter(|(a, b)| a == b)
                    .count();
                let text: Vec<String> = recalled.iter().map(u32::to_string).collect();
                out.push(
                    format!(
                        "{} ({right}/{COPY_RECALL} right after a gap of {gap})",
                        text.join(" ")
                    ),
                    line.as_str(),
                    serde_json::json!({"recalled": recalled, "right": right}),
                );
            }
            Ok(out)
        }
        other => bail!(
            "synthetic::predict: `{}` is not a generated task",
            other.as_str()
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn adding_data_has_two_markers_one_per_half_and_the_sum_as_target() {
        let d = AddingData::generate(200, 9, 1).unwrap();
        assert_eq!(d.len(), 200);
        for i in 0..d.len() {
            let row = &d.xs[i * 18..(i + 1) * 18];
            let marked: Vec<usize> = (0..9).filter(|&t| row[2 * t + 1] == 1.0).collect();
            assert_eq!(marked.len(), 2);
            assert!(marked[0] < 4 && marked[1] >= 4, "{marked:?}");
            let sum = row[2 * marked[0]] + row[2 * marked[1]];
            assert!((sum - d.ys[i]).abs() < 1e-6);
            assert!(row.iter().step_by(2).all(|v| (0.0..1.0).contains(v)));
        }
        assert_eq!(d, AddingData::generate(200, 9, 1).unwrap());
        assert_ne!(d, AddingData::generate(200, 9, 2).unwrap());
        let e = AddingData::generate(5, 1, 0).unwrap_err().to_string();
        assert!(e.contains("--seq-len"), "{e}");
    }

    #[test]
    fn adding_baseline_is_about_one_sixth() {
        let d = AddingData::generate(20_000, 10, 3).unwrap();
        let mse = d.ys.iter().map(|&y| (y as f64 - 1.0).powi(2)).sum::<f64>() / 20_000.0;
        assert!((mse - ADDING_BASELINE_MSE).abs() < 0.01, "{mse}");
    }

    #[test]
    fn copy_sequences_recall_the_symbols_after_the_delimiter() {
        let (x, y) = copy_sequence(&[3, 1, 4, 1, 5, 2, 6, 5, 3, 5], 4);
        assert_eq!(x.len(), 25);
        assert_eq!(&x[..10], &[3, 1, 4, 1, 5, 2, 6, 5, 3, 5]);
        assert_eq!(&x[10..14], &[0; 4]);
        assert_eq!(x[14], COPY_DELIMITER);
        assert_eq!(&x[15..], &[0; 10]);
        assert_eq!(&y[..15], &[0; 15]);
        assert_eq!(&y[15..], &x[..10]);
        let d = CopyData::generate(50, 3, 7).unwrap();
        assert_eq!(d.len(), 50);
        assert!(d.xs.iter().all(|&s| s <= COPY_DELIMITER));
        assert!(d.ys.iter().all(|&s| s <= COPY_SYMBOLS));
    }

    #[test]
    fn epochs_are_deterministic_permutations() {
        let a = epoch_batches(103, 10, 2, 5);
        assert_eq!(a, epoch_batches(103, 10, 2, 5));
        assert_ne!(a, epoch_batches(103, 10, 3, 5));
        assert_ne!(a, epoch_batches(103, 10, 2, 6));
        assert_eq!(a.len(), 11);
        let mut all: Vec<usize> = a.concat();
        all.sort_unstable();
        assert_eq!(all, (0..103).collect::<Vec<_>>());
    }

    #[test]
    fn inputs_are_parsed_with_errors_naming_the_flag() {
        let (xs, sum) = parse_adding_input("0.3:1 0.5:0 0.2:1").unwrap();
        assert_eq!(xs, vec![0.3, 1.0, 0.5, 0.0, 0.2, 1.0]);
        assert!((sum - 0.5).abs() < 1e-6);
        for bad in ["0.3", "x:1", "0.3:2", "", "inf:1"] {
            let e = parse_adding_input(bad).unwrap_err().to_string();
            assert!(e.contains("--input"), "{bad}: {e}");
        }
        assert_eq!(
            parse_copy_input("3 1 4 1 5 2 6 5 3 5").unwrap(),
            vec![3, 1, 4, 1, 5, 2, 6, 5, 3, 5]
        );
        for bad in ["3 1 4", "3 1 4 1 5 2 6 5 3 9", "a 1 4 1 5 2 6 5 3 5"] {
            let e = parse_copy_input(bad).unwrap_err().to_string();
            assert!(e.contains("--input"), "{bad}: {e}");
        }
    }

    use crate::tasks::parts::checks::assert_parts_sum_to_whole;

    #[test]
    fn parts_of_an_adding_batch_sum_to_the_whole_batch() {
        let varmap = VarMap::new();
        let vb = rnn_core::init::seeded_var_builder(&varmap, 3, DType::F32, &Device::Cpu);
        let cfg = ForecasterConfig::new(2, 1, 6, ForecastStrategy::Direct);
        let mut task = AddingTask {
            model: Forecaster::new(cfg, vb).unwrap(),
            train: AddingData::generate(20, 9, 1).unwrap(),
            valid: AddingData::generate(4, 9, 2).unwrap(),
            batch_size: 7,
            device: Device::Cpu,
            dtype: DType::F32,
            meta: Meta {
                seq_len: 9,
                samples: 20,
            },
        };
        let batch = task.train_batches(0, 1).unwrap().remove(0);
        assert_parts_sum_to_whole(&mut task, &batch, 7, &varmap.all_vars(), &[2, 3, 9]);
    }

    #[test]
    fn parts_of_a_copy_batch_sum_to_the_whole_batch() {
        let varmap = VarMap::new();
        let vb = rnn_core::init::seeded_var_builder(&varmap, 3, DType::F32, &Device::Cpu);
        let cfg = SequenceTaggerConfig::new(
            Input::tokens(COPY_DELIMITER as usize + 1, 4),
            rnn_core::Mode::Lstm,
            6,
            COPY_SYMBOLS as usize + 1,
        );
        let mut task = CopyTask {
            model: SequenceTagger::new(&cfg, vb).unwrap(),
            train: CopyData::generate(20, 3, 1).unwrap(),
            valid: CopyData::generate(4, 3, 2).unwrap(),
            batch_size: 7,
            device: Device::Cpu,
            meta: Meta {
                seq_len: 3,
                samples: 20,
            },
        };
        let batch = task.train_batches(0, 1).unwrap().remove(0);
        assert_parts_sum_to_whole(&mut task, &batch, 7, &varmap.all_vars(), &[2, 3, 9]);
    }
}
