//! Long inputs run in bounded memory (issue 8, part 5), measured on the process's resident set
//! (`VmRSS`, and `VmHWM` reset through `/proc/self/clear_refs`): streamed inference keeps no
//! autograd graph and does not grow with the sequence length, a final state does not keep the
//! whole output of a long forward alive, and truncated-BPTT training stays flat from window to
//! window. One `#[test]` runs the phases in turn, so no other test thread shares the process.
//!
//! Each bound sits well under what the leak it guards against would cost (computed next to it).
//! To see the test fail, set `RNN_MEMORY_LEAK` to `outputs` (streamed outputs kept), `graph`
//! (streaming with attached parameters and a carried, undetached state) or `losses` (every
//! training step's loss, hence its graph, kept).
#![cfg(target_os = "linux")]

use candle_core::{DType, Device, Tensor};
use candle_nn::VarMap;
use rnn::models::lm::{LanguageModel, LanguageModelConfig};
use rnn::rnn_core::init::seeded_var_builder;
use rnn::rnn_core::{Mode, Rnn, RnnConfig, RnnState};
use rnn::train::data::LmBatches;
use rnn::train::optim::{AdamWConfig, OptimizerConfig};
use rnn::train::trainer::{Evaluation, StepLoss, TrainTask, Trainer, TrainerConfig};

const MB: i64 = 1024; // in kB
const HIDDEN: usize = 128;
const CHUNK: usize = 500;

/// A field of `/proc/self/status` in kB.
fn status_kb(field: &str) -> i64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status
        .lines()
        .find_map(|l| l.strip_prefix(field).and_then(|r| r.strip_prefix(':')))
        .unwrap_or_else(|| panic!("{field} missing from /proc/self/status"));
    line.trim().trim_end_matches("kB").trim().parse().unwrap()
}

/// Peak resident-set growth (kB) while `work` runs.
fn peak_growth(work: impl FnOnce()) -> i64 {
    std::fs::write("/proc/self/clear_refs", "5").expect("resetting VmHWM (Linux >= 4.0)");
    let base = status_kb("VmRSS");
    work();
    status_kb("VmHWM") - base
}

fn leak(kind: &str) -> bool {
    std::env::var("RNN_MEMORY_LEAK").is_ok_and(|v| v == kind)
}

fn inputs(start: usize, len: usize) -> Tensor {
    let data: Vec<f32> = (start * HIDDEN..(start + len) * HIDDEN)
        .map(|i| ((i as f32) * 0.618_034).sin() * 0.5)
        .collect();
    Tensor::from_vec(data, (1, len, HIDDEN), &Device::Cpu).unwrap()
}

/// Streams `t` steps through `rnn` in chunks, carrying the state; returns the peak growth.
fn stream(rnn: &Rnn, t: usize) -> i64 {
    let mut kept = Vec::new();
    let growth = peak_growth(|| {
        let mut state: Option<RnnState> = None;
        for start in (0..t).step_by(CHUNK) {
            let (ys, next) = rnn
                .forward_with_state(&inputs(start, CHUNK), state.as_ref())
                .unwrap();
            if leak("outputs") {
                kept.push(ys);
            }
            state = Some(next);
        }
    });
    drop(kept);
    growth
}

/// Streamed inference: peak growth at T = 20,000 vs T = 1,000 (LSTM, H = 128, batch 1).
fn streamed_inference_does_not_grow() {
    let varmap = VarMap::new();
    let cfg = RnnConfig::new(Mode::Lstm, HIDDEN, HIDDEN).with_batch_first(true);
    let rnn = Rnn::new(
        &cfg,
        seeded_var_builder(&varmap, 0, DType::F32, &Device::Cpu),
    )
    .unwrap();
    let rnn = if leak("graph") { rnn } else { rnn.detached() };
    stream(&rnn, 1_000); // warm-up: allocator arenas, thread pools
    let short = stream(&rnn, 1_000);
    let long = stream(&rnn, 20_000);
    // 19,000 extra steps: kept outputs cost 19,000 x 128 x 4 B = 9.7 MB; a kept graph (the fused
    // LSTM saves gates, h, c and tanh(c), 7 x 128 x 4 B per step, plus each chunk's input,
    // output and packed parameters) about 100 MB.
    eprintln!("streamed inference peak growth: {short} kB at T=1000, {long} kB at T=20000");
    let bound = 4 * MB;
    assert!(
        long - short < bound,
        "streamed inference grew with the length: peak growth {short} kB at T=1000, {long} kB at T=20000 (bound {bound} kB more)"
    );
}

/// A state kept after a long forward must not hold the forward's whole output buffer.
fn final_state_does_not_hold_the_output() {
    // 128 sequences of 10,000 steps of a small LSTM (input 1, hidden 8): the output is
    // 128 x 10,000 x 8 x 4 B = 41 MB, above glibc's largest mmap threshold (32 MB), so freeing
    // it returns it to the system; the small sizes keep the arithmetic cheap.
    let (batch, t, hidden) = (128, 10_000, 8);
    let varmap = VarMap::new();
    let cfg = RnnConfig::new(Mode::Lstm, 1, hidden).with_batch_first(true);
    let rnn = Rnn::new(
        &cfg,
        seeded_var_builder(&varmap, 0, DType::F32, &Device::Cpu),
    )
    .unwrap()
    .detached();
    rnn::rnn_core::release_cached_buffers();
    let base = status_kb("VmRSS");
    let xs = Tensor::ones((batch, t, 1), DType::F32, &Device::Cpu).unwrap();
    let (ys, state) = rnn.forward_with_state(&xs, None).unwrap();
    drop((xs, ys));
    // The fused op hands its gate buffer (4x the output here) to the recycled-buffer cache,
    // which keeps it for the next forward until it is released; what is left after the release
    // is what the state itself keeps alive.
    let cached = status_kb("VmRSS") - base;
    rnn::rnn_core::release_cached_buffers();
    let held = status_kb("VmRSS") - base;
    eprintln!(
        "kept final state holds {held} kB ({cached} kB before the buffer cache was released)"
    );
    assert!(state.h.dims() == [1, batch, hidden]);
    assert!(
        held < 10 * MB,
        "the final state of a {t}-step forward keeps {held} kB alive after the output was dropped (the output alone is 40000 kB)"
    );
}

/// LM training over one stream with truncated BPTT, recording VmRSS before every step.
struct StreamTask {
    lm: LanguageModel,
    train: LmBatches,
    rss_kb: Vec<i64>,
    kept: Vec<Tensor>,
}

impl TrainTask for StreamTask {
    type Batch = usize;

    fn train_batches(&mut self, _epoch: u64, _seed: u64) -> rnn::train::Result<Vec<usize>> {
        Ok((0..self.train.len()).collect())
    }

    fn train_step(
        &mut self,
        k: &usize,
        carry: &mut Option<RnnState>,
    ) -> rnn::train::Result<StepLoss> {
        self.rss_kb.push(status_kb("VmRSS"));
        let w = self.train.window(*k, &Device::Cpu)?;
        let (nll, state) = self
            .lm
            .loss(&w.inputs, &w.targets, carry.as_ref(), None, true)?;
        *carry = Some(state);
        let loss = nll.mean()?;
        if leak("losses") {
            self.kept.push(loss.clone());
        }
        Ok(StepLoss {
            loss,
            units: w.len as u64,
        })
    }

    fn evaluate(&mut self) -> rnn::train::Result<Evaluation> {
        Ok(Evaluation::from_loss(0.0))
    }
}

/// TBPTT over a 20,000-token stream in 400 windows of 50: VmRSS after the last window is within
/// a few MB of VmRSS after the 20th.
fn tbptt_training_stays_flat() {
    let vocab = 64;
    let stream: Vec<u32> = (0..20_001u32).map(|i| (i * 7 + i / 13) % 64).collect();
    let varmap = VarMap::new();
    let cfg = LanguageModelConfig::new(Mode::Lstm, vocab, 64, 64);
    let lm = LanguageModel::new(
        &cfg,
        seeded_var_builder(&varmap, 0, DType::F32, &Device::Cpu),
    )
    .unwrap();
    let mut task = StreamTask {
        lm,
        train: LmBatches::new(&stream, 1, 50).unwrap(),
        rss_kb: Vec::with_capacity(1_000),
        kept: Vec::new(),
    };
    let config = TrainerConfig {
        optimizer: OptimizerConfig::AdamW(AdamWConfig::with_lr(1e-3)),
        clip_grad_norm: Some(1.0),
        epochs: Some(1),
        progress: false,
        plot: false,
        save_best: false,
        ..Default::default()
    };
    let mut trainer = Trainer::new(config, varmap).unwrap();
    let report = trainer.fit(&mut task).unwrap();
    assert_eq!(report.steps, 400);
    let rss = &task.rss_kb;
    let (early, last) = (rss[20], rss[rss.len() - 1]);
    // A graph kept per window (the fused LSTM's saved activations and packed parameters, the
    // logits and their softmax, the embeddings...) costs about 330 kB: keeping every step's loss
    // made the last 380 windows add 125 MB.
    eprintln!(
        "TBPTT VmRSS: {} kB after window 1, {early} kB after 20, {last} kB after {}",
        rss[1],
        rss.len() - 1
    );
    let bound = 6 * MB;
    assert!(
        last - early < bound,
        "TBPTT training grew: VmRSS {early} kB after window 20, {last} kB after window {} (bound {bound} kB more)",
        rss.len() - 1
    );
}

#[test]
fn long_inputs_run_in_bounded_memory() {
    streamed_inference_does_not_grow();
    final_state_does_not_hold_the_output();
    tbptt_training_stays_flat();
}
