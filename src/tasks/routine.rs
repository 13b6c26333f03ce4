//! The weekly routine, the seed material's first recurrent example and the default task of
//! `rnn train`.
//!
//! # The world
//!
//! A person runs, bikes and swims in turn, one activity a day: run -> bike -> swim -> run ...
//! On a rainy day they sleep instead, and the next dry day resumes the cycle where it left off
//! (with the activity that was due). Every generated sequence starts on a dry day with a random
//! activity; after that each day is rainy with probability [`RAIN_PROBABILITY`].
//!
//! # The learning problem
//!
//! At day `t` the model sees tomorrow's weather (the forecast) and today's activity, and
//! predicts tomorrow's activity: inputs `(batch, days, 6)` = `[sun, rain]` of day `t + 1` and a
//! one-hot of `[run, bike, swim, sleep]` on day `t`; targets `u32 (batch, days)` = the activity of
//! day `t + 1`. After a run of rainy days the model must remember which activity was pending, so
//! a model without memory cannot solve it: with only today's activity and the forecast, the best
//! possible accuracy is about 0.86 ([`memoryless_baseline`] computes it exactly on any data),
//! and on the "resume after rain" days it is about 1/3. A small unidirectional RNN with a
//! per-step classifier ([`SequenceTagger`] on [`Input::Features`]) reaches 100%.
//!
//! # Options (`rnn train routine`, or plain `rnn train`)
//!
//! | flag | default | meaning |
//! |---|---|---|
//! | `--cell` | gru | recurrent cell |
//! | `--hidden` | 32 | hidden units |
//! | `--layers` | 1 | stacked layers |
//! | `--dropout` | 0 | on the recurrent outputs (and between layers) |
//! | `--seq-len` | 64 | days per training sequence |
//! | `--samples` | 1024 | training sequences (the validation set has 256, the test set 512) |
//! | `--batch-size` | 32 | sequences per batch |
//! | `--epochs` | 4 | passes over the training sequences |
//! | `--lr` | 0.01 | AdamW learning rate (gradient norm clipped at 5) |
//! | `--eval-every` | 8 | steps between evaluations (besides epoch ends) |
//!
//! `--bidirectional` is refused: a backward pass would read tomorrow's activity from the next
//! step's input.
//!
//! # Checkpoints
//!
//! `rnn predict --checkpoint DIR --input "[START:] W1 W2 ..."`: `START` is today's activity
//! (`run`, `bike` or `swim`; default `run`; today is dry), `W1 W2 ...` the weather of the
//! following days (`sun`/`sunny`/`dry`/`s` or `rain`/`rainy`/`wet`/`r`, separated by spaces or
//! commas). The model runs autoregressively (its own prediction for a day is the next step's
//! "today") and prints `START: W1->A1 W2->A2 ...  [k/n as the rule]`. `--input FILE` takes
//! one such line per input.
//!
//! `rnn sample --checkpoint DIR [--seed S] [--max-len DAYS] [--num N]` draws random weather
//! (rain with the trained probability) and a start activity, and prints a week-by-week table of
//! weather and predicted activities. Activities are always the model's argmax: the randomness is
//! the weather (`--temperature`, `--top-k`, `--top-p` and `--prompt` do not apply).
//!
//! `rnn eval --checkpoint DIR` scores 512 freshly generated sequences (seeded from the training
//! seed, so repeatable); `--data FILE` scores the lines of FILE in the predict syntax instead,
//! against the rule, with the true activities as inputs (as in training).

use std::collections::BTreeMap;

use super::parts::{empty_part, part_rows};
use anyhow::{bail, Context, Result};
use candle_core::{DType, Device, Tensor, D};
use candle_nn::VarMap;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rnn_core::Mode;
use rnn_models::classifier::Input;
use rnn_models::tagger::{SequenceTagger, SequenceTaggerConfig};
use rnn_train::trainer::{Evaluation, MainMetric, Part, StepLoss, TrainTask};
use serde::{Deserialize, Serialize};

use crate::run::{
    fit, invalid, stochastic_model, task_from_functions, trainer_config, CheckpointRun,
    EvalRequest, PredictRequest, RunContext, SampleRequest, TaskName, TaskOptions, TrainDefaults,
    TrainOutcome,
};

/// Activity names by id: 0 run, 1 bike, 2 swim, 3 sleep.
pub const ACTIVITIES: [&str; 4] = ["run", "bike", "swim", "sleep"];
/// The id of `sleep` (what happens on rainy days).
pub const SLEEP: u32 = 3;
/// Features per step: `[sun, rain]` of tomorrow and the one-hot of today's activity.
pub const FEATURES: usize = 6;
/// Probability that a day (after the first) is rainy.
pub const RAIN_PROBABILITY: f64 = 0.3;
/// Sequences in the validation set.
pub const VALID_SEQUENCES: usize = 256;
/// Sequences in the test set (final numbers of `train`, and `rnn eval`).
pub const TEST_SEQUENCES: usize = 512;

const WEEKDAYS: [&str; 7] = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"];

/// The activity after `activity` in the cycle run -> bike -> swim -> run.
pub fn next_in_cycle(activity: u32) -> u32 {
    (activity + 1) % 3
}

/// The rule of the world: the activities of days `1..=rain.len()` when day 0 is a dry day
/// with `start` (run, bike or swim) and `rain[i]` says whether day `i + 1` is rainy.
pub fn activities_by_rule(start: u32, rain: &[bool]) -> Vec<u32> {
    let mut pending = next_in_cycle(start);
    rain.iter()
        .map(|&wet| {
            if wet {
                SLEEP
            } else {
                let a = pending;
                pending = next_in_cycle(a);
                a
            }
        })
        .collect()
}

/// A stretch of days: day 0 is dry with activity `start`; `rain[i]` is the weather of day
/// `i + 1` and `activities[i]` its activity (by the rule, or as predicted).
#[derive(Debug, Clone, PartialEq)]
pub struct Days {
    /// Activity of day 0 (run, bike or swim).
    pub start: u32,
    /// Whether days `1..=n` are rainy.
    pub rain: Vec<bool>,
    /// Activities of days `1..=n`.
    pub activities: Vec<u32>,
}

impl Days {
    /// Days following the rule.
    pub fn by_rule(start: u32, rain: Vec<bool>) -> Self {
        let activities = activities_by_rule(start, &rain);
        Self {
            start,
            rain,
            activities,
        }
    }

    /// Number of predicted days (`rain.len()`).
    pub fn len(&self) -> usize {
        self.rain.len()
    }

    /// Whether there are no predicted days.
    pub fn is_empty(&self) -> bool {
        self.rain.is_empty()
    }

    /// Today's activity before each predicted day: `[start, activities[..n-1]]`.
    pub fn todays(&self) -> Vec<u32> {
        std::iter::once(self.start)
            .chain(self.activities.iter().copied())
            .take(self.len())
            .collect()
    }

    /// Whether predicted day `i` is a "resume after rain" day: dry, after a rainy day.
    pub fn is_resume(&self, i: usize) -> bool {
        !self.rain[i] && i > 0 && self.rain[i - 1]
    }
}

/// `count` sequences of `days` predicted days each, from the seeded generator: a random start
/// activity, then rain with probability `rain_probability` each day.
pub fn generate(count: usize, days: usize, rain_probability: f64, seed: u64) -> Vec<Days> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    (0..count)
        .map(|_| {
            let start = rng.random_range(0..3u32);
            let rain = (0..days)
                .map(|_| rng.random::<f64>() < rain_probability)
                .collect();
            Days::by_rule(start, rain)
        })
        .collect()
}

/// The model input of one step: tomorrow's weather and today's activity.
fn step_features(rain_tomorrow: bool, today: u32) -> [f32; FEATURES] {
    let mut f = [0f32; FEATURES];
    f[usize::from(rain_tomorrow)] = 1.0;
    f[2 + today as usize] = 1.0;
    f
}

/// Inputs `(batch, n, 6)` and targets `u32 (batch, n)` for sequences of equal length `n`, with
/// the true activities as "today" (teacher forcing).
pub fn encode(days: &[&Days], dtype: DType, device: &Device) -> Result<(Tensor, Tensor)> {
    let n = days.first().map(|d| d.len()).unwrap_or(0);
    if n == 0 || days.iter().any(|d| d.len() != n) {
        bail!("routine: encode needs a non-empty batch of sequences of one length");
    }
    let mut xs = Vec::with_capacity(days.len() * n * FEATURES);
    let mut ys = Vec::with_capacity(days.len() * n);
    for d in days {
        for (i, today) in d.todays().into_iter().enumerate() {
            xs.extend_from_slice(&step_features(d.rain[i], today));
        }
        ys.extend_from_slice(&d.activities);
    }
    let xs = Tensor::from_vec(xs, (days.len(), n, FEATURES), device)?.to_dtype(dtype)?;
    let ys = Tensor::from_vec(ys, (days.len(), n), device)?;
    Ok((xs, ys))
}

/// Accuracy counts of next-day predictions.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Score {
    /// Mean cross-entropy (nats per day); 0 where not computed.
    pub loss: f64,
    /// Correct predictions.
    pub correct: usize,
    /// Predictions.
    pub total: usize,
    /// Correct predictions on resume-after-rain days.
    pub resume_correct: usize,
    /// Resume-after-rain days.
    pub resume_total: usize,
}

impl Score {
    /// Accuracy over all days.
    pub fn accuracy(&self) -> f64 {
        self.correct as f64 / self.total.max(1) as f64
    }

    /// Accuracy on the resume-after-rain days (the ones that need memory).
    pub fn resume_accuracy(&self) -> f64 {
        self.resume_correct as f64 / self.resume_total.max(1) as f64
    }

    fn add(&mut self, d: &Days, predicted: &[u32]) {
        for (i, (&p, &t)) in predicted.iter().zip(&d.activities).enumerate() {
            self.total += 1;
            self.correct += usize::from(p == t);
            if d.is_resume(i) {
                self.resume_total += 1;
                self.resume_correct += usize::from(p == t);
            }
        }
    }
}

/// Scores `model` on `days` with the true activities as inputs (as in training), in batches of
/// `batch` sequences of equal length.
pub fn score(
    model: &SequenceTagger,
    days: &[Days],
    batch: usize,
    dtype: DType,
    device: &Device,
) -> Result<Score> {
    let mut s = Score::default();
    let mut loss_sum = 0.0;
    // Group by length so files with lines of different lengths batch too.
    let mut by_len: BTreeMap<usize, Vec<&Days>> = BTreeMap::new();
    for d in days {
        by_len.entry(d.len()).or_default().push(d);
    }
    for group in by_len.values() {
        for chunk in group.chunks(batch.max(1)) {
            let (xs, ys) = encode(chunk, dtype, device)?;
            let loss = model.loss(&xs, None, &ys, false)?;
            let loss = loss.to_dtype(DType::F64)?.to_scalar::<f64>()?;
            loss_sum += loss * (chunk.len() * chunk[0].len()) as f64;
            let predicted = model.predict(&xs, None)?;
            for (d, p) in chunk.iter().zip(&predicted) {
                s.add(d, p);
            }
        }
    }
    s.loss = loss_sum / s.total.max(1) as f64;
    Ok(s)
}

/// The best accuracy any predictor without memory can reach on `days`: for each input it sees
/// (today's activity and tomorrow's weather) it predicts the most frequent next activity, counted
/// on `days` itself (so this is an upper bound for such a model on that data).
pub fn memoryless_baseline(days: &[Days]) -> Score {
    // counts[today][rain][next]
    let mut counts = [[[0usize; 4]; 2]; 4];
    for d in days {
        for (i, today) in d.todays().into_iter().enumerate() {
            counts[today as usize][usize::from(d.rain[i])][d.activities[i] as usize] += 1;
        }
    }
    let best = |today: u32, wet: bool| -> u32 {
        let c = &counts[today as usize][usize::from(wet)];
        (0..4u32)
            .max_by_key(|&a| (c[a as usize], 4 - a))
            .unwrap_or(0)
    };
    let mut s = Score::default();
    for d in days {
        let predicted: Vec<u32> = d
            .todays()
            .into_iter()
            .zip(&d.rain)
            .map(|(today, &wet)| best(today, wet))
            .collect();
        s.add(d, &predicted);
    }
    s
}

/// Runs the model autoregressively: day 0 is dry with `starts[b]`, `rain[b]` the weather of the
/// following days (all rows of one length); each predicted activity is the next step's "today".
/// Returns the predicted activities of days `1..=n` per row.
pub fn rollout(
    model: &SequenceTagger,
    starts: &[u32],
    rain: &[Vec<bool>],
    dtype: DType,
    device: &Device,
) -> Result<Vec<Vec<u32>>> {
    let n = rain.first().map(Vec::len).unwrap_or(0);
    if starts.len() != rain.len() || rain.iter().any(|r| r.len() != n) {
        bail!("routine: rollout needs one start and one weather row of one length per sequence");
    }
    let mut predicted: Vec<Vec<u32>> = vec![Vec::with_capacity(n); starts.len()];
    // The tagger only runs whole sequences, so each day re-reads the prefix: O(n^2) steps,
    // negligible for the weeks and months this is used for.
    for k in 1..=n {
        let mut xs = Vec::with_capacity(starts.len() * k * FEATURES);
        for (b, &start) in starts.iter().enumerate() {
            for i in 0..k {
                let today = if i == 0 { start } else { predicted[b][i - 1] };
                xs.extend_from_slice(&step_features(rain[b][i], today));
            }
        }
        let xs = Tensor::from_vec(xs, (starts.len(), k, FEATURES), device)?.to_dtype(dtype)?;
        let last = model
            .forward(&xs, None, false)?
            .narrow(1, k - 1, 1)?
            .squeeze(1)?
            .argmax(D::Minus1)?
            .to_vec1::<u32>()?;
        for (row, a) in predicted.iter_mut().zip(last) {
            row.push(a);
        }
    }
    Ok(predicted)
}

/// Parses one input line of `rnn predict` / `rnn eval --data`: `[START:] W1 W2 ...` (see the
/// module docs). Errors say what was wrong and where (word number).
pub fn parse_line(line: &str) -> Result<(u32, Vec<bool>)> {
    let (start, weather) = match line.split_once(':') {
        Some((s, w)) => {
            let s = s.trim().to_ascii_lowercase();
            let start = match s.as_str() {
                "run" => 0,
                "bike" => 1,
                "swim" => 2,
                other => bail!(
                    "'{other}' is not a start activity: expected run, bike or swim before ':' (today is dry, so not sleep)"
                ),
            };
            (start, w)
        }
        None => (0, line),
    };
    let rain = weather
        .split(|c: char| c.is_whitespace() || c == ',')
        .filter(|w| !w.is_empty())
        .enumerate()
        .map(|(i, w)| match w.to_ascii_lowercase().as_str() {
            "sun" | "sunny" | "dry" | "s" => Ok(false),
            "rain" | "rainy" | "wet" | "r" => Ok(true),
            other => bail!(
                "word {} '{other}' is not a weather: expected sun or rain",
                i + 1
            ),
        })
        .collect::<Result<Vec<bool>>>()?;
    if rain.is_empty() {
        bail!("no weather given: expected e.g. \"run: sun rain rain sun\"");
    }
    Ok((start, rain))
}

/// The weather word of a day.
fn weather_word(wet: bool) -> &'static str {
    if wet {
        "rain"
    } else {
        "sun"
    }
}

/// A week-by-week table (day 0 is a Monday): rows `day`, `weather`, `activity` and, where the
/// prediction differs from the rule, `rule`.
pub fn table(days: &Days, predicted: &[u32]) -> Vec<String> {
    let mut lines = Vec::new();
    let cell = |s: &str| format!("{s:<6}");
    let mut columns: Vec<(String, &str, &str, &str)> = vec![(
        WEEKDAYS[0].to_string(),
        "sun",
        ACTIVITIES[days.start as usize],
        ACTIVITIES[days.start as usize],
    )];
    for i in 0..days.len() {
        columns.push((
            WEEKDAYS[(i + 1) % 7].to_string(),
            weather_word(days.rain[i]),
            ACTIVITIES[predicted[i] as usize],
            ACTIVITIES[days.activities[i] as usize],
        ));
    }
    for week in columns.chunks(7) {
        let mut day = String::from("  day      ");
        let mut weather = String::from("  weather  ");
        let mut activity = String::from("  activity ");
        let mut rule = String::from("  rule     ");
        let mut differs = false;
        for (d, w, p, r) in week {
            day.push_str(&cell(d));
            weather.push_str(&cell(w));
            activity.push_str(&cell(p));
            rule.push_str(&cell(if p == r { "" } else { r }));
            differs |= p != r;
        }
        lines.push(day.trim_end().to_string());
        lines.push(weather.trim_end().to_string());
        lines.push(activity.trim_end().to_string());
        if differs {
            lines.push(rule.trim_end().to_string());
        }
    }
    lines
}

/// The model's configuration from the options (defaults in the module docs).
pub fn model_config(ctx: &RunContext) -> Result<SequenceTaggerConfig> {
    let o = &ctx.opts;
    if o.bidirectional == Some(true) {
        bail!("--bidirectional: the routine task predicts tomorrow, and a backward pass would read tomorrow's activity from the next step's input; leave it off");
    }
    let dropout = o.dropout.unwrap_or(0.0);
    let layers = o.layers.unwrap_or(1);
    Ok(SequenceTaggerConfig::new(
        Input::features(FEATURES),
        ctx.cell(Mode::Gru)?,
        o.hidden.unwrap_or(DEFAULT_HIDDEN),
        ACTIVITIES.len(),
    )
    .with_bidirectional(false)
    .with_num_layers(layers)
    .with_rnn_dropout(if layers > 1 { dropout } else { 0.0 })
    .with_output_dropout(dropout))
}

/// What the checkpoint records besides the model: how data were generated.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorldConfig {
    /// Probability of rain on a day.
    pub rain_probability: f64,
    /// Predicted days per training sequence.
    pub days: usize,
    /// Seed the data were derived from (the test set of `rnn eval` too).
    pub seed: u64,
}

/// The seed of one data split: `0` train, `1` validation, `2` test.
pub fn split_seed(seed: u64, split: u64) -> u64 {
    // Mix so neighbouring run seeds give unrelated data.
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    rng.set_stream(split + 1);
    rng.random()
}

struct RoutineTask {
    model: SequenceTagger,
    train: Vec<Days>,
    valid: Vec<Days>,
    batch_size: usize,
    dtype: DType,
    device: Device,
    config: serde_json::Value,
}

impl TrainTask for RoutineTask {
    type Batch = (Tensor, Tensor);

    fn train_batches(&mut self, epoch: u64, seed: u64) -> rnn_train::Result<Vec<Self::Batch>> {
        let mut order: Vec<usize> = (0..self.train.len()).collect();
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        rng.set_stream(epoch);
        order.shuffle(&mut rng);
        order
            .chunks(self.batch_size)
            .map(|idx| {
                let rows: Vec<&Days> = idx.iter().map(|&i| &self.train[i]).collect();
                encode(&rows, self.dtype, &self.device).map_err(invalid)
            })
            .collect()
    }

    fn train_step(
        &mut self,
        batch: &Self::Batch,
        carry: &mut Option<rnn_core::RnnState>,
    ) -> rnn_train::Result<StepLoss> {
        self.train_part(batch, Part::WHOLE, carry)
    }

    /// Rows (days) of the batch: the loss is the mean over the part's tagged steps, all days
    /// having the same number, so the units-weighted mean of the parts is the batch's loss.
    fn train_part(
        &mut self,
        (xs, ys): &Self::Batch,
        part: Part,
        _carry: &mut Option<rnn_core::RnnState>,
    ) -> rnn_train::Result<StepLoss> {
        let Some((xs, ys)) = part_rows(part, xs, ys)? else {
            return empty_part(xs.device());
        };
        let loss = self.model.loss(&xs, None, &ys, true)?;
        Ok(StepLoss {
            loss,
            units: ys.elem_count() as u64,
        })
    }

    fn evaluate(&mut self) -> rnn_train::Result<Evaluation> {
        let s = score(&self.model, &self.valid, 128, self.dtype, &self.device).map_err(invalid)?;
        let mut metrics = BTreeMap::new();
        metrics.insert("accuracy".to_string(), s.accuracy());
        metrics.insert("resume_accuracy".to_string(), s.resume_accuracy());
        Ok(Evaluation {
            loss: s.loss,
            metrics,
            main: Some(MainMetric {
                name: "accuracy".to_string(),
                value: s.accuracy(),
                higher_is_better: true,
            }),
        })
    }

    fn unit(&self) -> &'static str {
        "days"
    }

    stochastic_model!(model);

    fn checkpoint_config(&self) -> serde_json::Value {
        self.config.clone()
    }
}

/// Default `--seq-len`: days per sequence.
const DEFAULT_DAYS: usize = 64;
/// Default `--samples`: training sequences.
const DEFAULT_SAMPLES: usize = 1024;
/// Default `--batch-size`.
const DEFAULT_BATCH: usize = 32;
/// Default `--hidden`.
const DEFAULT_HIDDEN: usize = 32;

/// The training defaults.
fn train_defaults() -> TrainDefaults {
    TrainDefaults {
        epochs: 4,
        lr: 1e-2,
        // Evaluate often so the climb from chance to 100% shows in the log and the plot.
        eval_every: Some(8),
        ..Default::default()
    }
}

/// The options `routine` reads, with its defaults.
pub fn options(_task: TaskName) -> TaskOptions {
    let files = "the routine task generates its data and reads no file; set its size with --seq-len and --samples";
    TaskOptions::new()
        .with("seq-len", DEFAULT_DAYS)
        .with("samples", DEFAULT_SAMPLES)
        .with("bidirectional", false)
        .with("cell", "gru")
        .with("hidden", DEFAULT_HIDDEN)
        .with("layers", 1)
        .with("dropout", 0)
        .with("batch-size", DEFAULT_BATCH)
        .training(&train_defaults())
        .refuse("data", files)
        .refuse("valid", files)
        .refuse("test", files)
}

task_from_functions!(
    /// The `routine` task (see the [module docs](self)).
    Routine, sample
);

/// Trains the task.
pub fn train(ctx: &RunContext) -> Result<TrainOutcome> {
    let cfg = model_config(ctx)?;
    let days = ctx.opts.seq_len.unwrap_or(DEFAULT_DAYS);
    if days < 2 {
        bail!("--seq-len must be at least 2 days for the routine task, got {days}");
    }
    let samples = ctx.opts.samples.unwrap_or(DEFAULT_SAMPLES);
    let batch_size = ctx.opts.batch_size.unwrap_or(DEFAULT_BATCH);
    let world = WorldConfig {
        rain_probability: RAIN_PROBABILITY,
        days,
        seed: ctx.seed,
    };
    let varmap = VarMap::new();
    let model = SequenceTagger::new(&cfg, ctx.var_builder(&varmap))?;
    let train = generate(samples, days, RAIN_PROBABILITY, split_seed(ctx.seed, 0));
    let valid = generate(
        VALID_SEQUENCES,
        days,
        RAIN_PROBABILITY,
        split_seed(ctx.seed, 1),
    );
    let config = serde_json::json!({
        "task": ctx.task.as_str(),
        "model": cfg,
        "world": world,
    });
    ctx.say(&format!(
        "routine: {samples} sequences of {days} days; {}-layer {} with {} hidden units; batch {batch_size}",
        cfg.num_layers, cfg.mode, cfg.hidden_size
    ));
    let mut task = RoutineTask {
        model,
        train,
        valid,
        batch_size,
        dtype: ctx.dtype,
        device: ctx.device.clone(),
        config,
    };
    let report = fit(
        ctx,
        trainer_config(ctx, &train_defaults())?,
        varmap,
        &mut task,
    )?;

    let test = generate(
        TEST_SEQUENCES,
        days,
        RAIN_PROBABILITY,
        split_seed(ctx.seed, 2),
    );
    let s = score(&task.model, &test, 128, ctx.dtype, &ctx.device)?;
    let base = memoryless_baseline(&test);
    let mut rng = ChaCha8Rng::seed_from_u64(split_seed(ctx.seed, 3));
    let demo = generate(1, 13, RAIN_PROBABILITY, rng.random()).remove(0);
    let predicted = rollout(
        &task.model,
        &[demo.start],
        std::slice::from_ref(&demo.rain),
        ctx.dtype,
        &ctx.device,
    )?
    .remove(0);
    ctx.say("a two-week forecast and the activities the model predicts from it:");
    for line in table(&demo, &predicted) {
        ctx.say(&line);
    }
    Ok(TrainOutcome {
        report,
        extra: vec![
            format!(
                "test accuracy {:.4}, after rain {:.4} (a model without memory: at most {:.4} and {:.4})",
                s.accuracy(),
                s.resume_accuracy(),
                base.accuracy(),
                base.resume_accuracy()
            ),
        ],
    })
}

/// Rebuilds the model of a checkpoint.
fn load(run: &CheckpointRun) -> Result<(SequenceTagger, WorldConfig, DType)> {
    let cfg: SequenceTaggerConfig = run.model_entry("model")?;
    let world: WorldConfig = run.model_entry("world")?;
    let varmap = VarMap::new();
    let model = SequenceTagger::new(&cfg, run.var_builder(&varmap))
        .with_context(|| format!("{}: model.model is not a valid model", run.dir.display()))?;
    run.fill(&varmap)?;
    Ok((model, world, run.dtype()))
}

/// Evaluates a checkpoint: on 512 generated sequences, or on the lines of `--data`.
pub fn eval(run: &CheckpointRun, req: impl Into<EvalRequest>) -> Result<String> {
    let req = req.into();
    let (model, world, dtype) = load(run)?;
    let (days, what) = match &req.data {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("--data {}: cannot read as UTF-8 text", path.display()))?;
            let mut days = Vec::new();
            for (i, line) in text.lines().enumerate() {
                if line.trim().is_empty() || line.trim_start().starts_with('#') {
                    continue;
                }
                let (start, rain) = parse_line(line)
                    .with_context(|| format!("--data {}:{}", path.display(), i + 1))?;
                days.push(Days::by_rule(start, rain));
            }
            if days.is_empty() {
                bail!(
                    "--data {}: no input lines (expected lines like \"run: sun rain sun\")",
                    path.display()
                );
            }
            let what = format!("{} lines of {}", days.len(), path.display());
            (days, what)
        }
        None => (
            generate(
                TEST_SEQUENCES,
                world.days,
                world.rain_probability,
                split_seed(world.seed, 2),
            ),
            format!(
                "{TEST_SEQUENCES} generated sequences of {} days",
                world.days
            ),
        ),
    };
    let s = score(&model, &days, req.batch_size, dtype, &run.device)?;
    let base = memoryless_baseline(&days);
    Ok(format!(
        "routine: accuracy {:.4} ({}/{} days), after rain {:.4} ({}/{}), loss {:.4} on {what}; a model without memory: at most {:.4} and {:.4}",
        s.accuracy(),
        s.correct,
        s.total,
        s.resume_accuracy(),
        s.resume_correct,
        s.resume_total,
        s.loss,
        base.accuracy(),
        base.resume_accuracy()
    ))
}

/// Predicts the activities for each `--input` line (`[START:] W1 W2 ...`).
pub fn predict(run: &CheckpointRun, req: impl Into<PredictRequest>) -> Result<Vec<String>> {
    let req = req.into();
    let inputs = req.inputs()?;
    let parsed = inputs
        .iter()
        .enumerate()
        .map(|(i, line)| {
            parse_line(line).with_context(|| {
                if inputs.len() > 1 {
                    format!("--input line {}", i + 1)
                } else {
                    format!("--input {line:?}")
                }
            })
        })
        .collect::<Result<Vec<_>>>()?;
    let (model, _, dtype) = load(run)?;
    let mut out = Vec::with_capacity(parsed.len());
    for (start, rain) in parsed {
        let predicted = rollout(
            &model,
            &[start],
            std::slice::from_ref(&rain),
            dtype,
            &run.device,
        )?
        .remove(0);
        let truth = activities_by_rule(start, &rain);
        let agree = predicted.iter().zip(&truth).filter(|(p, t)| p == t).count();
        let days: Vec<String> = rain
            .iter()
            .zip(&predicted)
            .map(|(&w, &a)| format!("{}->{}", weather_word(w), ACTIVITIES[a as usize]))
            .collect();
        out.push(format!(
            "{}: {}  [{agree}/{} as the rule]",
            ACTIVITIES[start as usize],
            days.join(" "),
            truth.len()
        ));
    }
    Ok(out)
}

/// Draws random weather and prints the model's week-by-week plan (`--max-len` days after a dry
/// Monday, `--num` samples, `--seed`).
pub fn sample(run: &CheckpointRun, req: impl Into<SampleRequest>) -> Result<Vec<String>> {
    let req = req.into();
    if req.max_len == 0 {
        bail!("--max-len must be at least 1 day");
    }
    if req.num == 0 {
        bail!("--num must be at least 1");
    }
    let (model, world, dtype) = load(run)?;
    let samples = generate(req.num, req.max_len, world.rain_probability, req.seed);
    let starts: Vec<u32> = samples.iter().map(|d| d.start).collect();
    let rain: Vec<Vec<bool>> = samples.iter().map(|d| d.rain.clone()).collect();
    let predicted = rollout(&model, &starts, &rain, dtype, &run.device)?;
    let mut out = Vec::new();
    for (i, (d, p)) in samples.iter().zip(&predicted).enumerate() {
        let agree = p.iter().zip(&d.activities).filter(|(p, t)| p == t).count();
        out.push(format!(
            "sample {}: {} days after a dry Monday with {}; {agree}/{} days as the rule",
            i + 1,
            d.len(),
            ACTIVITIES[d.start as usize],
            d.len()
        ));
        out.extend(table(d, p));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rule_resumes_the_cycle_after_rain() {
        let rain = [false, true, true, false, false, true, false];
        let a: Vec<&str> = activities_by_rule(0, &rain)
            .into_iter()
            .map(|a| ACTIVITIES[a as usize])
            .collect();
        assert_eq!(
            a,
            ["bike", "sleep", "sleep", "swim", "run", "sleep", "bike"]
        );
        let d = Days::by_rule(0, rain.to_vec());
        assert_eq!(d.todays(), vec![0, 1, 3, 3, 2, 0, 3]);
        let resumes: Vec<usize> = (0..d.len()).filter(|&i| d.is_resume(i)).collect();
        assert_eq!(resumes, vec![3, 6]);
    }

    #[test]
    fn parsing_accepts_the_documented_syntax_and_names_errors() {
        assert_eq!(
            parse_line("swim: sun, rain  r Sunny").unwrap(),
            (2, vec![false, true, true, false])
        );
        assert_eq!(parse_line("sun sun").unwrap(), (0, vec![false, false]));
        let e = format!("{:#}", parse_line("run: sun snow").unwrap_err());
        assert!(e.contains("word 2") && e.contains("snow"), "{e}");
        let e = format!("{:#}", parse_line("sleep: sun").unwrap_err());
        assert!(e.contains("start activity"), "{e}");
        let e = format!("{:#}", parse_line("bike:").unwrap_err());
        assert!(e.contains("no weather"), "{e}");
    }

    #[test]
    fn a_memoryless_predictor_fails_exactly_where_memory_is_needed() {
        let days = generate(200, 64, RAIN_PROBABILITY, 1);
        let base = memoryless_baseline(&days);
        // Everything but resume days is predictable from today and the forecast.
        let easy = base.correct - base.resume_correct;
        assert_eq!(easy, base.total - base.resume_total);
        assert!((0.25..0.45).contains(&base.resume_accuracy()), "{base:?}");
        assert!((0.8..0.92).contains(&base.accuracy()), "{base:?}");
        // Generation is seeded.
        assert_eq!(days, generate(200, 64, RAIN_PROBABILITY, 1));
        assert_ne!(days, generate(200, 64, RAIN_PROBABILITY, 2));
    }

    #[test]
    fn encoding_matches_the_days() {
        let d = Days::by_rule(1, vec![true, false]);
        let (xs, ys) = encode(&[&d], DType::F32, &Device::Cpu).unwrap();
        assert_eq!(
            xs.to_vec3::<f32>().unwrap()[0],
            vec![vec![0., 1., 0., 1., 0., 0.], vec![1., 0., 0., 0., 0., 1.]]
        );
        assert_eq!(ys.to_vec2::<u32>().unwrap()[0], vec![SLEEP, 2]);
    }

    #[test]
    fn parts_of_a_batch_sum_to_the_whole_batch() {
        let varmap = VarMap::new();
        let vb = rnn_core::init::seeded_var_builder(&varmap, 3, DType::F32, &Device::Cpu);
        let cfg =
            SequenceTaggerConfig::new(Input::features(FEATURES), Mode::Gru, 6, ACTIVITIES.len());
        let mut task = RoutineTask {
            model: SequenceTagger::new(&cfg, vb).unwrap(),
            train: generate(20, 3, RAIN_PROBABILITY, 1),
            valid: generate(4, 3, RAIN_PROBABILITY, 2),
            batch_size: 7,
            dtype: DType::F32,
            device: Device::Cpu,
            config: serde_json::Value::Null,
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
