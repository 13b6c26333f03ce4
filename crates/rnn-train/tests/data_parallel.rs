//! Data-parallel training with the thread backend and gradient accumulation: two ranks with a
//! batch of b rows each equal one process with `grad_accum = 2` bit for bit (parameters and
//! metrics.jsonl, dropout included), one process with the 2b batch within 1e-5, the ranks hold
//! identical parameters, a data-parallel checkpoint resumes in a single process bit for bit, and
//! ranks that disagree or fail end the run with an error instead of a hang.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use candle_core::{DType, Device, Tensor};
use candle_nn::{Embedding, Linear, Module, VarBuilder, VarMap};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rnn_core::dropout::SeededDropout;
use rnn_core::init::seeded_var_builder;
use rnn_core::{Mode, Rnn, RnnConfig, RnnState};
use rnn_train::checkpoint;
use rnn_train::collective::{Collective, ThreadCollective};
use rnn_train::data::LmBatches;
use rnn_train::metrics::masked_cross_entropy;
use rnn_train::optim::{AdamWConfig, OptimizerConfig};
use rnn_train::trainer::{
    Evaluation, FitReport, Part, StepLoss, TrainTask, Trainer, TrainerConfig, METRICS_FILE,
};

const VOCAB: usize = 6;
const STREAMS: usize = 8;

/// A small LSTM language model with input dropout, carried state and stream-split parts.
struct LmTask {
    emb: Embedding,
    drop: SeededDropout,
    rnn: Rnn,
    out: Linear,
    train: LmBatches,
    valid: LmBatches,
    /// Batches reported per epoch (to make ranks disagree), `None` = all.
    batches: Option<usize>,
    /// Fail at this `train_part` call (to make a rank leave).
    fail_at: Option<u64>,
    calls: u64,
}

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
    fn new(varmap: &VarMap, seed: u64, dropout: f64) -> Self {
        let dev = Device::Cpu;
        let vb: VarBuilder = seeded_var_builder(varmap, seed, DType::F32, &dev);
        let emb = candle_nn::embedding(VOCAB, 8, vb.pp("embedding")).unwrap();
        let cfg = RnnConfig::new(Mode::Lstm, 8, 16);
        let rnn = Rnn::new(&cfg, vb.pp("rnn")).unwrap();
        let out = candle_nn::linear(16, VOCAB, vb.pp("decoder")).unwrap();
        Self {
            emb,
            drop: SeededDropout::new(dropout, 0).unwrap(),
            rnn,
            out,
            train: LmBatches::new(&stream(2000, 1), STREAMS, 10).unwrap(),
            valid: LmBatches::new(&stream(600, 2), 4, 10).unwrap(),
            batches: None,
            fail_at: None,
            calls: 0,
        }
    }

    fn loss(
        &self,
        inputs: &Tensor,
        targets: &Tensor,
        state: Option<&RnnState>,
        train: bool,
    ) -> candle_core::Result<(Tensor, RnnState)> {
        let x = self.drop.forward(&self.emb.forward(inputs)?, train)?;
        let (ys, s) = self.rnn.forward_t(&x, state, None, train)?;
        let logits = self.out.forward(&ys)?;
        let loss = masked_cross_entropy(&logits, targets, None)
            .map_err(|e| candle_core::Error::Msg(e.to_string()))?;
        Ok((loss, s))
    }
}

impl TrainTask for LmTask {
    type Batch = usize;

    fn train_batches(&mut self, _epoch: u64, _seed: u64) -> rnn_train::Result<Vec<usize>> {
        Ok((0..self.batches.unwrap_or(self.train.len())).collect())
    }

    fn train_step(
        &mut self,
        k: &usize,
        carry: &mut Option<RnnState>,
    ) -> rnn_train::Result<StepLoss> {
        self.train_part(k, Part::WHOLE, carry)
    }

    fn train_part(
        &mut self,
        k: &usize,
        part: Part,
        carry: &mut Option<RnnState>,
    ) -> rnn_train::Result<StepLoss> {
        self.calls += 1;
        if self.fail_at == Some(self.calls) {
            return Err(rnn_train::Error::Invalid(
                "this rank fails on purpose".into(),
            ));
        }
        let w = self.train.window(*k, &Device::Cpu)?;
        let inputs = part.narrow(&w.inputs, 0)?;
        let targets = part.narrow(&w.targets, 0)?;
        let (loss, s) = self.loss(&inputs, &targets, carry.as_ref(), true)?;
        *carry = Some(s);
        Ok(StepLoss {
            loss,
            units: targets.elem_count() as u64,
        })
    }

    fn evaluate(&mut self) -> rnn_train::Result<Evaluation> {
        let mut state: Option<RnnState> = None;
        let (mut sum, mut n) = (0.0, 0.0);
        for w in self.valid.iter(&Device::Cpu) {
            let w = w?;
            let (loss, s) = self.loss(&w.inputs, &w.targets, state.as_ref(), false)?;
            state = Some(s.detach());
            let count = w.targets.elem_count() as f64;
            sum += loss.to_scalar::<f32>()? as f64 * count;
            n += count;
        }
        Ok(Evaluation::from_loss(sum / n))
    }

    fn set_seed(&mut self, seed: u64) {
        self.drop.set_seed(seed);
    }

    fn rng_counters(&self) -> Vec<u64> {
        vec![self.drop.calls()]
    }

    fn set_rng_counters(&mut self, counters: &[u64]) -> rnn_train::Result<()> {
        self.drop.set_calls(counters[0]);
        Ok(())
    }
}

fn config(max_steps: u64, grad_accum: u64) -> TrainerConfig {
    TrainerConfig {
        optimizer: OptimizerConfig::AdamW(AdamWConfig {
            lr: 0.01,
            ..Default::default()
        }),
        clip_grad_norm: Some(0.5),
        epochs: Some(3),
        max_steps: Some(max_steps),
        eval_every: Some(5),
        seed: 5,
        progress: false,
        plot: false,
        grad_accum,
        ..Default::default()
    }
}

/// Every parameter's values by name.
fn params(varmap: &VarMap) -> Vec<(String, Vec<f32>)> {
    let mut all: Vec<(String, Vec<f32>)> = varmap
        .data()
        .lock()
        .unwrap()
        .iter()
        .map(|(k, v)| {
            (
                k.clone(),
                v.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
            )
        })
        .collect();
    all.sort_by(|a, b| a.0.cmp(&b.0));
    all
}

struct Run {
    params: Vec<(String, Vec<f32>)>,
    report: FitReport,
}

/// One process: `grad_accum` micro-batches, optionally resuming from `resume`.
fn single(
    out: &Path,
    max_steps: u64,
    grad_accum: u64,
    dropout: f64,
    resume: Option<&Path>,
) -> rnn_train::Result<Run> {
    let varmap = VarMap::new();
    let mut task = LmTask::new(&varmap, 3, dropout);
    let mut trainer =
        Trainer::new(config(max_steps, grad_accum), varmap.clone())?.with_out_dir(out)?;
    if let Some(dir) = resume {
        trainer.resume(dir)?;
    }
    let report = trainer.fit(&mut task)?;
    Ok(Run {
        params: params(&varmap),
        report,
    })
}

/// `world` ranks as threads; rank r's model is initialised with seed `3 + r` (rank 0's
/// parameters must win the start-up broadcast). `tweak` adjusts each rank's task.
fn ranks(
    world: usize,
    out: &Path,
    max_steps: u64,
    dropout: f64,
    resume: Option<PathBuf>,
    tweak: fn(usize, &mut LmTask),
) -> Vec<rnn_train::Result<Run>> {
    let handles: Vec<_> = ThreadCollective::group(world)
        .unwrap()
        .into_iter()
        .map(|c| {
            let out = out.to_path_buf();
            let resume = resume.clone();
            std::thread::spawn(move || -> rnn_train::Result<Run> {
                let rank = c.rank();
                let varmap = VarMap::new();
                let mut task = LmTask::new(&varmap, 3 + rank as u64, dropout);
                tweak(rank, &mut task);
                let mut trainer = Trainer::new(config(max_steps, 1), varmap.clone())?
                    .with_collective(Arc::new(c))
                    .with_out_dir(&out)?;
                if let Some(dir) = &resume {
                    trainer.resume(dir)?;
                }
                let report = trainer.fit(&mut task)?;
                Ok(Run {
                    params: params(&varmap),
                    report,
                })
            })
        })
        .collect();
    handles.into_iter().map(|h| h.join().unwrap()).collect()
}

fn read(path: &Path) -> Vec<u8> {
    std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Every file of two checkpoint directories is byte-identical (parameters, optimiser state,
/// carried state, configuration, loop state).
fn assert_same_checkpoint(a: &Path, b: &Path) {
    let mut names: Vec<String> = std::fs::read_dir(b)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert!(names.len() >= 3, "{names:?}");
    for f in names {
        assert_eq!(
            read(&a.join(&f)),
            read(&b.join(&f)),
            "checkpoint file {f} differs"
        );
    }
}

fn no_tweak(_: usize, _: &mut LmTask) {}

#[test]
fn two_ranks_equal_two_micro_batches_bit_for_bit_with_dropout() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (dir.path().join("ranks"), dir.path().join("accum"));
    let runs = ranks(2, &a, 20, 0.3, None, no_tweak);
    let runs: Vec<Run> = runs.into_iter().map(|r| r.unwrap()).collect();
    let accum = single(&b, 20, 2, 0.3, None).unwrap();
    assert_eq!(
        runs[0].params, runs[1].params,
        "the ranks' parameters differ"
    );
    assert_eq!(runs[0].params, accum.params, "ranks and grad_accum differ");
    assert_eq!(runs[0].report.steps, 20);
    assert_eq!(read(&a.join(METRICS_FILE)), read(&b.join(METRICS_FILE)));
    assert_same_checkpoint(&a.join("checkpoint"), &b.join("checkpoint"));
    // Rank 1 wrote nothing of its own: one metrics file, one line per evaluation.
    let lines = String::from_utf8(read(&a.join(METRICS_FILE))).unwrap();
    assert_eq!(lines.lines().count(), runs[0].report.history.len());
}

#[test]
fn micro_batches_equal_the_whole_batch_within_f32_rounding() {
    let dir = tempfile::tempdir().unwrap();
    let whole = single(&dir.path().join("whole"), 12, 1, 0.0, None).unwrap();
    let split = single(&dir.path().join("split"), 12, 2, 0.0, None).unwrap();
    let three = single(&dir.path().join("three"), 12, 3, 0.0, None).unwrap();
    for other in [&split, &three] {
        let mut worst = 0.0f32;
        for ((n1, v1), (n2, v2)) in whole.params.iter().zip(&other.params) {
            assert_eq!(n1, n2);
            for (x, y) in v1.iter().zip(v2) {
                worst = worst.max((x - y).abs());
            }
        }
        assert!(worst < 1e-5, "largest parameter difference {worst}");
        let (l1, l2) = (
            whole.report.last.as_ref().unwrap().train_loss.unwrap(),
            other.report.last.as_ref().unwrap().train_loss.unwrap(),
        );
        assert!((l1 - l2).abs() < 1e-5, "train loss {l1} vs {l2}");
    }
    assert_ne!(
        whole.params, split.params,
        "accumulation changed nothing at all?"
    );
}

#[test]
fn a_data_parallel_checkpoint_resumes_in_one_process_bit_for_bit() {
    let dir = tempfile::tempdir().unwrap();
    let full = dir.path().join("full");
    let runs = ranks(2, &full, 20, 0.3, None, no_tweak);
    let full_params = runs.into_iter().next().unwrap().unwrap().params;
    // Stop the ranks at step 10, then go on in one process with two micro-batches.
    let half = dir.path().join("half");
    for r in ranks(2, &half, 10, 0.3, None, no_tweak) {
        r.unwrap();
    }
    let resumed = single(&half, 20, 2, 0.3, Some(&half.join("checkpoint"))).unwrap();
    assert_eq!(resumed.params, full_params);
    assert_eq!(
        read(&half.join(METRICS_FILE)),
        read(&full.join(METRICS_FILE))
    );
    // And the other way round: a single-process checkpoint resumes on two ranks.
    let back = dir.path().join("back");
    single(&back, 10, 2, 0.3, None).unwrap();
    let runs = ranks(2, &back, 20, 0.3, Some(back.join("checkpoint")), no_tweak);
    assert_eq!(
        runs.into_iter().next().unwrap().unwrap().params,
        full_params
    );
    // A plain single process (no accumulation) accepts it too.
    single(&half, 25, 1, 0.3, Some(&half.join("checkpoint"))).unwrap();
}

#[test]
fn ranks_with_different_batch_counts_stop_with_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let runs = ranks(2, dir.path(), 20, 0.0, None, |rank, task| {
        if rank == 1 {
            task.batches = Some(5);
        }
    });
    for r in runs {
        let msg = r.err().expect("the run must fail").to_string();
        assert!(msg.contains("number of training batches"), "{msg}");
    }
}

#[test]
fn a_failing_rank_ends_the_others_with_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let runs = ranks(3, dir.path(), 20, 0.0, None, |rank, task| {
        if rank == 2 {
            task.fail_at = Some(7);
        }
    });
    let msgs: Vec<String> = runs
        .into_iter()
        .map(|r| r.err().expect("every rank must fail").to_string())
        .collect();
    assert!(msgs[2].contains("fails on purpose"), "{}", msgs[2]);
    for m in &msgs[..2] {
        assert!(m.contains("rank 2 left the group"), "{m}");
    }
    // The checkpoint rank 0 wrote at the evaluation of step 5 is intact and loads.
    let loaded = checkpoint::load(&dir.path().join("checkpoint"), &Device::Cpu).unwrap();
    assert_eq!(loaded.state.step, 5);
    let resumed = single(dir.path(), 20, 3, 0.0, Some(&dir.path().join("checkpoint"))).unwrap();
    assert_eq!(resumed.report.steps, 20);
}
