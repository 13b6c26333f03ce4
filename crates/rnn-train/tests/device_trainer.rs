//! The Trainer on the device named by `RNN_TEST_DEVICE` (default cpu; see `rnn_core::testing`):
//! a small LSTM language model with truncated BPTT learns there, its evaluations come from
//! device tensors, and its checkpoint loads back onto the device with the trained parameters.

use candle_core::{DType, Device, Tensor};
use candle_nn::{Embedding, Linear, Module, VarMap};
use rnn_core::init::seeded_var_builder;
use rnn_core::{Mode, Rnn, RnnConfig, RnnState};
use rnn_train::checkpoint;
use rnn_train::data::LmBatches;
use rnn_train::metrics::masked_cross_entropy;
use rnn_train::optim::{AdamWConfig, OptimizerConfig};
use rnn_train::trainer::{Evaluation, StepLoss, TrainTask, Trainer, TrainerConfig};

const VOCAB: usize = 5;

struct LmTask {
    device: Device,
    emb: Embedding,
    rnn: Rnn,
    out: Linear,
    train: LmBatches,
    valid: LmBatches,
}

/// 1 2 3 4 1 2 3 4 ...: perfectly predictable after one token.
fn stream(len: usize) -> Vec<u32> {
    (0..len).map(|i| (i % (VOCAB - 1)) as u32 + 1).collect()
}

impl LmTask {
    fn new(varmap: &VarMap, device: &Device) -> Self {
        let vb = seeded_var_builder(varmap, 7, DType::F32, device);
        Self {
            device: device.clone(),
            emb: candle_nn::embedding(VOCAB, 8, vb.pp("embedding")).unwrap(),
            rnn: Rnn::new(&RnnConfig::new(Mode::Lstm, 8, 16), vb.pp("rnn")).unwrap(),
            out: candle_nn::linear(16, VOCAB, vb.pp("decoder")).unwrap(),
            train: LmBatches::new(&stream(2000), 4, 10).unwrap(),
            valid: LmBatches::new(&stream(400), 2, 10).unwrap(),
        }
    }

    fn loss(
        &self,
        inputs: &Tensor,
        targets: &Tensor,
        state: Option<&RnnState>,
    ) -> candle_core::Result<(Tensor, RnnState)> {
        let (ys, s) = self
            .rnn
            .forward_t(&self.emb.forward(inputs)?, state, None, true)?;
        let loss = masked_cross_entropy(&self.out.forward(&ys)?, targets, None)
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
        let w = self.train.window(*k, &self.device)?;
        assert!(
            w.inputs.device().same_device(&self.device),
            "batch not on the device"
        );
        let (loss, s) = self.loss(&w.inputs, &w.targets, carry.as_ref())?;
        *carry = Some(s);
        Ok(StepLoss {
            loss,
            units: w.targets.elem_count() as u64,
        })
    }

    fn evaluate(&mut self) -> rnn_train::Result<Evaluation> {
        let mut state: Option<RnnState> = None;
        let (mut sum, mut n) = (0.0, 0.0);
        for w in self.valid.iter(&self.device) {
            let w = w?;
            let (loss, s) = self.loss(&w.inputs, &w.targets, state.as_ref())?;
            state = Some(s.detach());
            let count = w.targets.elem_count() as f64;
            sum += loss.to_scalar::<f32>()? as f64 * count;
            n += count;
        }
        Ok(Evaluation::from_loss(sum / n))
    }

    fn unit(&self) -> &'static str {
        "tokens"
    }

    fn checkpoint_config(&self) -> serde_json::Value {
        serde_json::json!({"vocab": VOCAB, "hidden": 16})
    }
}

#[test]
fn the_trainer_learns_and_checkpoints_on_the_test_device() {
    let Some(device) = rnn_core::testing::device() else {
        return;
    };
    let out = tempfile::tempdir().unwrap();
    let varmap = VarMap::new();
    let mut task = LmTask::new(&varmap, &device);
    let untrained = task.evaluate().unwrap().loss;
    let cfg = TrainerConfig {
        optimizer: OptimizerConfig::AdamW(AdamWConfig::with_lr(0.02)),
        clip_grad_norm: Some(1.0),
        epochs: None,
        max_steps: Some(60),
        eval_every: Some(20),
        seed: 3,
        progress: false,
        ..Default::default()
    };
    let report = Trainer::new(cfg, varmap.clone())
        .unwrap()
        .with_out_dir(out.path())
        .unwrap()
        .fit(&mut task)
        .unwrap();
    assert_eq!(report.steps, 60);
    let trained = task.evaluate().unwrap().loss;
    // Uniform guessing is ln 5 = 1.61 nats; the sequence is deterministic after one token.
    assert!(
        untrained > 1.2 && trained < 0.5 * untrained,
        "validation loss {untrained} -> {trained} on {:?}",
        device.location()
    );
    let ck = checkpoint::load(&out.path().join("checkpoint"), &device).unwrap();
    assert_eq!(ck.state.step, 60);
    let data = varmap.data().lock().unwrap();
    assert_eq!(ck.params.len(), data.len());
    for (name, var) in data.iter() {
        let saved = &ck.params[name];
        assert!(
            saved.device().same_device(&device),
            "{name} not loaded onto the device"
        );
        let same = saved
            .to_device(&Device::Cpu)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap()
            == var
                .as_tensor()
                .to_device(&Device::Cpu)
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap();
        assert!(
            same,
            "{name}: checkpoint differs from the trained parameters"
        );
    }
}
