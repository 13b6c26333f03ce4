//! The Trainer end to end on small generated data: a language model with truncated BPTT learns,
//! resuming is bit-exact, non-finite values stop (or skip) at the right step without touching the
//! last good checkpoint, early stopping and schedules act on evaluations.

use std::cell::Cell;
use std::path::Path;

use candle_core::{DType, Device, Tensor};
use candle_nn::{Embedding, Linear, Module, VarBuilder, VarMap};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rnn_core::init::seeded_var_builder;
use rnn_core::{Mode, Rnn, RnnConfig, RnnState};
use rnn_train::checkpoint;
use rnn_train::data::LmBatches;
use rnn_train::metrics::masked_cross_entropy;
use rnn_train::optim::{AdamWConfig, LrScheduleConfig, OptimizerConfig, SgdConfig};
use rnn_train::trainer::{
    EarlyStopping, EvalRecord, Evaluation, MainMetric, NonFinitePolicy, StepLoss, TrainTask,
    Trainer, TrainerConfig, WeightAverage,
};
use rnn_train::Error;

const VOCAB: usize = 6;

/// A small LSTM language model trained on Zaremba-style windows with carried state.
struct LmTask {
    emb: Embedding,
    rnn: Rnn,
    out: Linear,
    train: LmBatches,
    valid: LmBatches,
    /// Step (1-based count of train_step calls) at which the loss is forced to NaN.
    nan_at: Option<u64>,
    /// Step at which the loss stays finite but the decoder weight's gradient is NaN.
    nan_grad_at: Option<u64>,
    calls: Cell<u64>,
}

/// Text from a noisy cyclic grammar: mostly 1 2 3 4 5 1 2 ..., with a random jump 10% of the
/// time, so the best perplexity is well above 1 but far below the vocabulary size.
fn stream(len: usize, seed: u64) -> Vec<u32> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut x = 1u32;
    (0..len)
        .map(|_| {
            x = if rng.random::<f64>() < 0.1 {
                rng.random_range(1..VOCAB as u32)
            } else {
                x % (VOCAB as u32 - 1) + 1
            };
            x
        })
        .collect()
}

impl LmTask {
    fn new(varmap: &VarMap, seed: u64) -> Self {
        let dev = Device::Cpu;
        let vb: VarBuilder = seeded_var_builder(varmap, seed, DType::F32, &dev);
        let emb = candle_nn::embedding(VOCAB, 8, vb.pp("embedding")).unwrap();
        let cfg = RnnConfig::new(Mode::Lstm, 8, 16).with_dropout(0.0);
        let rnn = Rnn::new(&cfg, vb.pp("rnn")).unwrap();
        let out = candle_nn::linear(16, VOCAB, vb.pp("decoder")).unwrap();
        Self {
            emb,
            rnn,
            out,
            train: LmBatches::new(&stream(4000, 1), 8, 10).unwrap(),
            valid: LmBatches::new(&stream(1000, 2), 4, 10).unwrap(),
            nan_at: None,
            nan_grad_at: None,
            calls: Cell::new(0),
        }
    }

    fn loss(
        &self,
        inputs: &Tensor,
        targets: &Tensor,
        state: Option<&RnnState>,
    ) -> candle_core::Result<(Tensor, RnnState)> {
        let x = self.emb.forward(inputs)?;
        let (ys, s) = self.rnn.forward_t(&x, state, None, true)?;
        let logits = self.out.forward(&ys)?;
        let loss = masked_cross_entropy(&logits, targets, None)
            .map_err(|e| candle_core::Error::Msg(e.to_string()))?;
        Ok((loss, s))
    }
}

impl TrainTask for LmTask {
    type Batch = usize;

    fn train_batches(&mut self, _epoch: u64, _seed: u64) -> rnn_train::Result<Vec<usize>> {
        Ok((0..self.train.len()).collect())
    }

    fn train_step(
        &mut self,
        k: &usize,
        carry: &mut Option<RnnState>,
    ) -> rnn_train::Result<StepLoss> {
        let w = self.train.window(*k, &Device::Cpu)?;
        let (mut loss, s) = self.loss(&w.inputs, &w.targets, carry.as_ref())?;
        *carry = Some(s);
        self.calls.set(self.calls.get() + 1);
        if self.nan_at == Some(self.calls.get()) {
            loss = (loss * f64::NAN)?;
        }
        if self.nan_grad_at == Some(self.calls.get()) {
            // sqrt(w - w) is 0 forward, but its gradient is inf - inf = NaN for every entry.
            let w = self.out.weight();
            loss = (loss + w.sub(w)?.sqrt()?.sum_all()?)?;
        }
        Ok(StepLoss {
            loss,
            units: w.targets.elem_count() as u64,
        })
    }

    fn evaluate(&mut self) -> rnn_train::Result<Evaluation> {
        let mut state: Option<RnnState> = None;
        let (mut sum, mut n) = (0.0, 0.0);
        for w in self.valid.iter(&Device::Cpu) {
            let w = w?;
            let (loss, s) = self.loss(&w.inputs, &w.targets, state.as_ref())?;
            state = Some(s.detach());
            let count = w.targets.elem_count() as f64;
            sum += loss.to_scalar::<f32>()? as f64 * count;
            n += count;
        }
        let loss = sum / n;
        let mut ev = Evaluation::from_loss(loss);
        ev.metrics.insert("perplexity".into(), loss.exp());
        ev.main = Some(MainMetric {
            name: "perplexity".into(),
            value: loss.exp(),
            higher_is_better: false,
        });
        Ok(ev)
    }

    fn unit(&self) -> &'static str {
        "tokens"
    }

    fn checkpoint_config(&self) -> serde_json::Value {
        serde_json::json!({"vocab": VOCAB, "hidden": 16})
    }
}

fn config(steps: u64) -> TrainerConfig {
    TrainerConfig {
        optimizer: OptimizerConfig::AdamW(AdamWConfig::with_lr(0.02)),
        clip_grad_norm: Some(1.0),
        epochs: None,
        max_steps: Some(steps),
        eval_every: Some(10),
        seed: 3,
        progress: false,
        ..Default::default()
    }
}

/// Named tensors as (name, values), sorted by name.
fn sorted_values<'a>(
    tensors: impl Iterator<Item = (String, &'a Tensor)>,
) -> Vec<(String, Vec<f32>)> {
    let mut v: Vec<_> = tensors
        .map(|(k, t)| (k, t.flatten_all().unwrap().to_vec1::<f32>().unwrap()))
        .collect();
    v.sort_by(|a, b| a.0.cmp(&b.0));
    v
}

fn params(varmap: &VarMap) -> Vec<(String, Vec<f32>)> {
    let data = varmap.data().lock().unwrap();
    sorted_values(data.iter().map(|(k, v)| (k.clone(), v.as_tensor())))
}

fn read_log(dir: &Path) -> Vec<EvalRecord> {
    std::fs::read_to_string(dir.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn language_model_learns_with_truncated_bptt() {
    let out = tempfile::tempdir().unwrap();
    let varmap = VarMap::new();
    let mut task = LmTask::new(&varmap, 11);
    let untrained = task.evaluate().unwrap().main.unwrap().value;
    // An untrained model is near uniform over the vocabulary.
    assert!(untrained > 4.0, "untrained perplexity {untrained}");
    // 50 windows per epoch; 2 epochs.
    let mut cfg = config(1000);
    cfg.max_steps = None;
    cfg.epochs = Some(2);
    cfg.eval_every = Some(25);
    let mut trainer = Trainer::new(cfg, varmap.clone())
        .unwrap()
        .with_out_dir(out.path())
        .unwrap();
    let report = trainer.fit(&mut task).unwrap();
    let best = report.best.as_ref().unwrap().value;
    // The source's conditional entropy bounds the best perplexity from below (about 1.5);
    // untrained is about 6.
    assert!(best < 2.2, "trained perplexity {best}");
    assert_eq!(report.steps, 100);
    assert_eq!(report.epochs, 2);
    // Evaluations at steps 25, 50 (epoch end), 75, 100 (epoch end).
    let log = read_log(out.path());
    let steps: Vec<u64> = log.iter().map(|r| r.step).collect();
    assert_eq!(steps, vec![25, 50, 75, 100]);
    assert!(log
        .iter()
        .all(|r| r.train_loss.is_some() && r.grad_norm.is_some()));
    assert!(log[3].train_loss.unwrap() < log[0].train_loss.unwrap());
    for f in ["learning_curves.png", "learning_curves.svg"] {
        // Plots are written only with the `plot` feature.
        let written = out.path().join(f).metadata().is_ok_and(|m| m.len() > 0);
        assert_eq!(written, cfg!(feature = "plot"), "{f}");
    }
    let ck = checkpoint::load(&out.path().join("checkpoint"), &Device::Cpu).unwrap();
    assert_eq!(ck.state.step, 100);
    assert_eq!(ck.config["model"]["hidden"], 16);
    assert!(out.path().join("best/model.safetensors").exists());
    assert!(
        report.summary().contains("perplexity"),
        "{}",
        report.summary()
    );
}

/// A run of `cfg` straight through, and the same run stopped after `stop` steps and resumed from
/// its checkpoint by a fresh trainer over a model of another init (everything must come from
/// the checkpoint).
struct ResumePair {
    straight: Trainer,
    straight_map: VarMap,
    straight_dir: tempfile::TempDir,
    resumed: Trainer,
    resumed_map: VarMap,
    resumed_dir: tempfile::TempDir,
    /// The checkpoint the resumed run started from.
    stopped: checkpoint::LoadedCheckpoint,
    /// The resumed run's report.
    report: rnn_train::trainer::FitReport,
}

fn straight_and_resumed(cfg: &TrainerConfig, stop: u64) -> ResumePair {
    let straight_dir = tempfile::tempdir().unwrap();
    let straight_map = VarMap::new();
    let mut task = LmTask::new(&straight_map, 5);
    let mut straight = Trainer::new(cfg.clone(), straight_map.clone())
        .unwrap()
        .with_out_dir(straight_dir.path())
        .unwrap();
    straight.fit(&mut task).unwrap();

    let resumed_dir = tempfile::tempdir().unwrap();
    let first_map = VarMap::new();
    let mut first_task = LmTask::new(&first_map, 5);
    let mut first_cfg = cfg.clone();
    first_cfg.max_steps = Some(stop);
    Trainer::new(first_cfg, first_map)
        .unwrap()
        .with_out_dir(resumed_dir.path())
        .unwrap()
        .fit(&mut first_task)
        .unwrap();
    let stopped = checkpoint::load(&resumed_dir.path().join("checkpoint"), &Device::Cpu).unwrap();

    let resumed_map = VarMap::new();
    let mut second_task = LmTask::new(&resumed_map, 99);
    let mut resumed = Trainer::new(cfg.clone(), resumed_map.clone())
        .unwrap()
        .with_out_dir(resumed_dir.path())
        .unwrap();
    resumed
        .resume(&resumed_dir.path().join("checkpoint"))
        .unwrap();
    assert_eq!(resumed.step(), stop);
    let report = resumed.fit(&mut second_task).unwrap();
    ResumePair {
        straight,
        straight_map,
        straight_dir,
        resumed,
        resumed_map,
        resumed_dir,
        stopped,
        report,
    }
}

impl ResumePair {
    /// The two runs' weights and logs are the same bit for bit.
    fn assert_identical(&self) {
        assert_eq!(params(&self.straight_map), params(&self.resumed_map));
        assert_eq!(
            std::fs::read_to_string(self.straight_dir.path().join("metrics.jsonl")).unwrap(),
            std::fs::read_to_string(self.resumed_dir.path().join("metrics.jsonl")).unwrap()
        );
    }
}

#[test]
fn resume_is_bit_identical_including_the_log() {
    // 30 steps; one epoch is 50 windows, so the checkpoint at 20 is mid-epoch and carries the
    // recurrent state.
    let mut cfg = config(30);
    cfg.optimizer = OptimizerConfig::Sgd(SgdConfig {
        lr: 0.5,
        momentum: 0.9,
        ..Default::default()
    });
    cfg.schedule = LrScheduleConfig::CosineWarmup {
        warmup_steps: 5,
        total_steps: 30,
        min_lr: 0.01,
    };
    let pair = straight_and_resumed(&cfg, 20);
    let extra = pair.stopped.extra_tensors.as_ref().unwrap();
    assert!(extra.contains_key("trainer.carry.h"));
    assert_eq!(pair.report.steps, 30);
    assert_eq!(pair.report.history.len(), 3);
    // The training time covers the steps of this call only (10 after resuming at 20).
    assert_eq!(pair.report.train_steps, 10);
    assert!(pair.report.train_seconds > 0.0);
    let ms = pair.report.ms_per_step().unwrap();
    assert!(
        (ms - pair.report.train_seconds * 100.0).abs() < 1e-9,
        "{ms}"
    );
    pair.assert_identical();
}

#[test]
fn resume_cuts_log_records_written_after_the_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let map = VarMap::new();
    let mut task = LmTask::new(&map, 5);
    let mut cfg = config(20);
    cfg.checkpoint_every = Some(5);
    Trainer::new(cfg.clone(), map.clone())
        .unwrap()
        .with_out_dir(dir.path())
        .unwrap()
        .fit(&mut task)
        .unwrap();
    // Simulate a kill after a log line for step 30 and half of another line.
    let log = dir.path().join("metrics.jsonl");
    let mut text = std::fs::read_to_string(&log).unwrap();
    let last = text
        .lines()
        .last()
        .unwrap()
        .replace("\"step\":20", "\"step\":30");
    text.push_str(&last);
    text.push_str("\n{\"step\":4");
    std::fs::write(&log, text).unwrap();
    let map2 = VarMap::new();
    let _task2 = LmTask::new(&map2, 5);
    let mut trainer = Trainer::new(cfg, map2)
        .unwrap()
        .with_out_dir(dir.path())
        .unwrap();
    trainer.resume(&dir.path().join("checkpoint")).unwrap();
    let steps: Vec<u64> = read_log(dir.path()).iter().map(|r| r.step).collect();
    assert_eq!(steps, vec![10, 20]);
}

#[test]
fn nan_loss_stops_at_its_step_and_keeps_the_last_good_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let map = VarMap::new();
    let mut task = LmTask::new(&map, 5);
    task.nan_at = Some(14);
    let mut trainer = Trainer::new(config(30), map.clone())
        .unwrap()
        .with_out_dir(dir.path())
        .unwrap();
    let err = trainer.fit(&mut task).unwrap_err();
    match &err {
        Error::NonFinite { step, what, .. } => {
            assert_eq!(*step, 14);
            assert!(what.contains("loss"), "{what}");
        }
        e => panic!("expected NonFinite, got {e}"),
    }
    assert!(err.to_string().contains("step 14"), "{err}");
    // The checkpoint from the evaluation at step 10 is intact and finite.
    let ck = checkpoint::load(&dir.path().join("checkpoint"), &Device::Cpu).unwrap();
    assert_eq!(ck.state.step, 10);
    for (name, t) in &ck.params {
        let v = t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        assert!(v.iter().all(|x| x.is_finite()), "{name}");
    }
    // The parameters in memory were not updated by the bad step either.
    for (name, v) in params(&map) {
        assert!(v.iter().all(|x| x.is_finite()), "{name}");
    }
}

/// A finite loss whose gradient is NaN is caught at its step too, named by the parameter, and
/// no checkpoint takes the bad update (nor, when reading every step, the parameters in memory).
#[test]
fn nan_gradient_with_a_finite_loss_stops_at_its_step() {
    for sync in [Some(1), Some(6)] {
        let dir = tempfile::tempdir().unwrap();
        let map = VarMap::new();
        let mut task = LmTask::new(&map, 5);
        task.nan_grad_at = Some(14);
        let mut cfg = config(30);
        cfg.host_sync_every = sync;
        let mut trainer = Trainer::new(cfg, map.clone())
            .unwrap()
            .with_out_dir(dir.path())
            .unwrap();
        let err = trainer.fit(&mut task).unwrap_err();
        match &err {
            Error::NonFinite { step, what, .. } => {
                assert_eq!(*step, 14, "sync {sync:?}");
                assert!(what.contains("gradient"), "sync {sync:?}: {what}");
                assert!(what.contains("decoder.weight"), "sync {sync:?}: {what}");
            }
            e => panic!("expected NonFinite, got {e}"),
        }
        let ck = checkpoint::load(&dir.path().join("checkpoint"), &Device::Cpu).unwrap();
        assert_eq!(ck.state.step, 10);
        for (name, t) in &ck.params {
            let v = t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
            assert!(v.iter().all(|x| x.is_finite()), "{name}");
        }
        if sync == Some(1) {
            // Read before the update: the bad gradient was never applied. (With deferred
            // reads the parameters in memory may have taken it; only checkpoints are safe.)
            for (name, v) in params(&map) {
                assert!(v.iter().all(|x| x.is_finite()), "{name}");
            }
        }
    }
}

/// Deferred host reads (as on an accelerator) change nothing in the arithmetic: the same
/// parameters bit for bit and the same log as reading every step.
#[test]
fn deferred_host_reads_give_the_same_run() {
    let run = |sync: Option<u64>| {
        let dir = tempfile::tempdir().unwrap();
        let map = VarMap::new();
        let mut task = LmTask::new(&map, 5);
        let mut cfg = config(23);
        cfg.host_sync_every = sync;
        cfg.checkpoint_every = Some(4);
        let report = Trainer::new(cfg, map.clone())
            .unwrap()
            .with_out_dir(dir.path())
            .unwrap()
            .fit(&mut task)
            .unwrap();
        assert_eq!(report.steps, 23);
        let log = std::fs::read_to_string(dir.path().join("metrics.jsonl")).unwrap();
        (params(&map), log)
    };
    let every = run(Some(1));
    assert_eq!(run(None), every, "the CPU default reads every step");
    let deferred = run(Some(7));
    assert_eq!(deferred.0, every.0);
    assert_eq!(deferred.1, every.1);
    assert!(every.1.contains("\"grad_norm\""));
}

/// With deferred reads a NaN is still reported at its own step, no checkpoint is written after
/// it, and the trainer refuses to write one by hand.
#[test]
fn deferred_reads_name_the_nan_step_and_write_nothing_after_it() {
    let dir = tempfile::tempdir().unwrap();
    let map = VarMap::new();
    let mut task = LmTask::new(&map, 5);
    task.nan_at = Some(14);
    let mut cfg = config(30);
    cfg.host_sync_every = Some(6);
    let mut trainer = Trainer::new(cfg, map.clone())
        .unwrap()
        .with_out_dir(dir.path())
        .unwrap();
    let err = trainer.fit(&mut task).unwrap_err();
    match &err {
        Error::NonFinite { step, what, .. } => {
            assert_eq!(*step, 14, "{err}");
            assert!(what.contains("loss"), "{what}");
        }
        e => panic!("expected NonFinite, got {e}"),
    }
    let ck = checkpoint::load(&dir.path().join("checkpoint"), &Device::Cpu).unwrap();
    assert_eq!(ck.state.step, 10);
    for (name, t) in &ck.params {
        let v = t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        assert!(v.iter().all(|x| x.is_finite()), "{name}");
    }
    let e = trainer
        .checkpoint(&task, &dir.path().join("by-hand"))
        .unwrap_err();
    assert!(e.to_string().contains("non-finite step 14"), "{e}");
    assert!(!dir.path().join("by-hand").exists());
}

#[test]
fn nan_loss_can_be_skipped_and_is_counted() {
    let map = VarMap::new();
    let mut task = LmTask::new(&map, 5);
    task.nan_at = Some(4);
    let mut cfg = config(20);
    cfg.on_non_finite = NonFinitePolicy::Skip;
    let report = Trainer::new(cfg, map.clone())
        .unwrap()
        .fit(&mut task)
        .unwrap();
    assert_eq!(report.steps, 20);
    assert_eq!(report.skipped_steps, 1);
    assert_eq!(report.history[0].skipped_steps, 1);
    for (name, v) in params(&map) {
        assert!(v.iter().all(|x| x.is_finite()), "{name}");
    }
}

/// A task whose validation loss follows a script, to test early stopping and the plateau
/// schedule without training anything real.
struct Scripted {
    w: candle_core::Var,
    losses: Vec<f64>,
    evals: usize,
}

impl TrainTask for Scripted {
    type Batch = ();
    fn train_batches(&mut self, _e: u64, _s: u64) -> rnn_train::Result<Vec<()>> {
        Ok(vec![(); 4])
    }
    fn train_step(&mut self, _b: &(), _c: &mut Option<RnnState>) -> rnn_train::Result<StepLoss> {
        Ok(StepLoss {
            loss: self.w.as_tensor().sqr()?.sum_all()?,
            units: 1,
        })
    }
    fn evaluate(&mut self) -> rnn_train::Result<Evaluation> {
        let l = self.losses[self.evals.min(self.losses.len() - 1)];
        self.evals += 1;
        Ok(Evaluation::from_loss(l))
    }
}

fn scripted(losses: &[f64]) -> (VarMap, Scripted) {
    let map = VarMap::new();
    let w = map
        .get(
            1,
            "w",
            candle_nn::Init::Const(1.0),
            DType::F32,
            &Device::Cpu,
        )
        .unwrap();
    let var = map.data().lock().unwrap().get("w").unwrap().clone();
    drop(w);
    (
        map,
        Scripted {
            w: var,
            losses: losses.to_vec(),
            evals: 0,
        },
    )
}

#[test]
fn early_stopping_and_plateau_decay_follow_the_validation_loss() {
    let (map, mut task) = scripted(&[1.0, 0.9, 0.95, 0.94, 0.93, 0.5]);
    let cfg = TrainerConfig {
        optimizer: OptimizerConfig::Sgd(SgdConfig::with_lr(0.1)),
        schedule: LrScheduleConfig::PlateauDecay {
            factor: 0.5,
            patience: 1,
            threshold: 0.0,
            min_lr: 0.0,
        },
        epochs: Some(10),
        early_stopping: Some(EarlyStopping {
            patience: 3,
            min_delta: 0.0,
        }),
        progress: false,
        ..Default::default()
    };
    let report = Trainer::new(cfg, map).unwrap().fit(&mut task).unwrap();
    // 0.9 is the best (epoch 2); 0.95, 0.94, 0.93 are three evaluations without improvement.
    assert!(report.stopped_early);
    assert_eq!(report.epochs, 5);
    assert_eq!(report.best.as_ref().unwrap().value, 0.9);
    let lrs: Vec<f64> = report.history.iter().map(|r| r.lr).collect();
    // Plateau (patience 1): the second bad epoch (0.94) halves the rate.
    assert_eq!(lrs, vec![0.1, 0.1, 0.1, 0.05, 0.05]);
    let best: Vec<bool> = report.history.iter().map(|r| r.best).collect();
    assert_eq!(best, vec![true, true, false, false, false]);
}

/// The weights after `steps` steps of `cfg` from the init of seed 4 (runs are deterministic).
fn weights_after(cfg: &TrainerConfig, steps: u64) -> Vec<(String, Vec<f32>)> {
    let map = VarMap::new();
    let mut task = LmTask::new(&map, 4);
    let mut cfg = cfg.clone();
    cfg.max_steps = Some(steps);
    cfg.average = None;
    Trainer::new(cfg, map.clone())
        .unwrap()
        .fit(&mut task)
        .unwrap();
    params(&map)
}

/// A trainer's weight average, sorted by name like [`params`].
fn average_of(trainer: &Trainer) -> Vec<(String, Vec<f32>)> {
    let avg = trainer.weight_average().unwrap().unwrap();
    sorted_values(avg.iter().map(|(k, t)| (k.clone(), t)))
}

fn assert_close(a: &[(String, Vec<f32>)], b: &[(String, Vec<f64>)], tol: f64) {
    assert_eq!(a.len(), b.len());
    for ((na, va), (nb, vb)) in a.iter().zip(b) {
        assert_eq!(na, nb);
        for (x, y) in va.iter().zip(vb) {
            assert!((*x as f64 - y).abs() <= tol, "{na}: {x} vs {y}");
        }
    }
}

#[test]
fn weight_average_is_the_mean_or_ema_of_every_steps_weights_and_is_what_is_evaluated() {
    let steps = 6;
    let mut cfg = config(steps);
    cfg.eval_every = None;
    let after: Vec<_> = (1..=steps).map(|k| weights_after(&cfg, k)).collect();
    for ema_decay in [None, Some(0.7)] {
        let out = tempfile::tempdir().unwrap();
        let map = VarMap::new();
        let mut task = LmTask::new(&map, 4);
        let mut avg_cfg = cfg.clone();
        avg_cfg.average = Some(WeightAverage {
            start_epoch: 0,
            ema_decay,
        });
        let mut trainer = Trainer::new(avg_cfg, map.clone())
            .unwrap()
            .with_out_dir(out.path())
            .unwrap();
        let report = trainer.fit(&mut task).unwrap();
        // Training ran on the last weights, which are back in place after the evaluations.
        assert_eq!(params(&map), after[steps as usize - 1]);
        // The reference, in f64 on the host: the mean of the six steps' weights, or the EMA
        // started at the first step's weights.
        let want: Vec<(String, Vec<f64>)> = (0..after[0].len())
            .map(|i| {
                let name = after[0][i].0.clone();
                let n = after[0][i].1.len();
                let mut acc: Vec<f64> = after[0][i].1.iter().map(|&x| x as f64).collect();
                for (k, w) in after.iter().enumerate().skip(1) {
                    for (j, a) in acc.iter_mut().enumerate().take(n) {
                        let x = w[i].1[j] as f64;
                        *a = match ema_decay {
                            None => *a + (x - *a) / (k + 1) as f64,
                            Some(d) => d * *a + (1.0 - d) * x,
                        };
                    }
                }
                (name, acc)
            })
            .collect();
        let avg = average_of(&trainer);
        assert_close(&avg, &want, 1e-5);
        // It differs from the last weights (or the test would show nothing).
        assert_ne!(avg, params(&map));
        // The evaluation at the last step scored the average, and `best/` holds it.
        let mut scored = VarMap::new();
        let mut scored_task = LmTask::new(&scored, 4);
        for (name, t) in trainer.weight_average().unwrap().unwrap() {
            scored.set_one(&name, t).unwrap();
        }
        let want_loss = scored_task.evaluate().unwrap().loss;
        assert_eq!(report.last.as_ref().unwrap().valid_loss, want_loss);
        scored = VarMap::new();
        let _ = LmTask::new(&scored, 9);
        scored
            .load(out.path().join("best/model.safetensors"))
            .unwrap();
        assert_eq!(params(&scored), avg);
    }
}

#[test]
fn resume_with_a_weight_average_is_bit_identical() {
    let mut cfg = config(30);
    cfg.average = Some(WeightAverage {
        start_epoch: 0,
        ema_decay: None,
    });
    let pair = straight_and_resumed(&cfg, 20);
    let extra = pair.stopped.extra_tensors.as_ref().unwrap();
    assert!(
        extra.keys().any(|k| k.starts_with("trainer.average.")),
        "{:?}",
        extra.keys()
    );
    assert_eq!(pair.stopped.state.trainer["average_count"], 20);
    pair.assert_identical();
    assert_eq!(average_of(&pair.straight), average_of(&pair.resumed));

    // Resumed without averaging, the checkpoint's average is dropped: evaluations score the
    // weights again.
    let third_map = VarMap::new();
    let _ = LmTask::new(&third_map, 99);
    let mut plain = config(30);
    plain.max_steps = Some(20);
    let mut trainer = Trainer::new(plain, third_map.clone()).unwrap();
    trainer
        .resume(&pair.resumed_dir.path().join("checkpoint"))
        .unwrap();
    assert!(trainer.weight_average().unwrap().is_none());
}

#[test]
fn config_errors_name_the_key() {
    let (map, _) = scripted(&[1.0]);
    for (cfg, key) in [
        (
            TrainerConfig {
                epochs: None,
                max_steps: None,
                ..Default::default()
            },
            "epochs",
        ),
        (
            TrainerConfig {
                clip_grad_norm: Some(-1.0),
                ..Default::default()
            },
            "clip_grad_norm",
        ),
        (
            TrainerConfig {
                eval_every: Some(0),
                ..Default::default()
            },
            "eval_every",
        ),
        (
            TrainerConfig {
                average: Some(WeightAverage {
                    start_epoch: 0,
                    ema_decay: Some(1.0),
                }),
                ..Default::default()
            },
            "average.ema_decay",
        ),
        (
            TrainerConfig {
                epochs: Some(3),
                average: Some(WeightAverage {
                    start_epoch: 3,
                    ema_decay: None,
                }),
                ..Default::default()
            },
            "average.start_epoch",
        ),
    ] {
        let err = Trainer::new(cfg, map.clone()).err().unwrap().to_string();
        assert!(err.contains(key), "{err}");
    }
    let err = serde_json::from_str::<TrainerConfig>(r#"{"epoch": 3}"#)
        .unwrap_err()
        .to_string();
    assert!(err.contains("epoch"), "{err}");
    let cfg: TrainerConfig = serde_json::from_str(
        r#"{"epochs": 3, "optimizer": {"kind": "sgd", "lr": 0.5, "momentum": 0.9}, "clip_grad_norm": 5.0}"#,
    )
    .unwrap();
    assert_eq!(cfg.epochs, Some(3));
}

#[test]
fn resume_refuses_a_checkpoint_of_another_model() {
    let dir = tempfile::tempdir().unwrap();
    let map = VarMap::new();
    let mut task = LmTask::new(&map, 5);
    Trainer::new(config(10), map)
        .unwrap()
        .with_out_dir(dir.path())
        .unwrap()
        .fit(&mut task)
        .unwrap();
    let (other, _) = scripted(&[1.0]);
    let mut trainer = Trainer::new(config(10), other).unwrap();
    let err = trainer
        .resume(&dir.path().join("checkpoint"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("w") || err.contains("embedding"), "{err}");
}
