//! Every model on the device named by `RNN_TEST_DEVICE` (default cpu; see `rnn_core::testing`)
//! computes the CPU's loss and gradients from the same parameters and batch, and its loss falls
//! over a few Adam steps there.
//!
//! On the CPU this checks training end to end; on a GPU it holds the device's path (Candle's
//! kernels, the composed recurrence) to the CPU's (the fused ops), model by model. Tolerances:
//! f64 1e-9 and f32 1e-4, relative to max(1, |value|) (f32 products on CUDA run with TF32 off).

use candle_core::{DType, Device, Result, Tensor};
use candle_nn::{AdamW, Optimizer, ParamsAdamW, VarMap};
use rnn_core::init::seeded_var_builder;
use rnn_core::Mode;
use rnn_models::classifier::{Input, Pooling, SequenceClassifier, SequenceClassifierConfig};
use rnn_models::forecaster::{ForecastStrategy, Forecaster, ForecasterConfig};
use rnn_models::generator::{ConditionedGenerator, ContextKind, GeneratorConfig, StopStrategy};
use rnn_models::lm::{LanguageModel, LanguageModelConfig};
use rnn_models::seq2seq::{Seq2Seq, Seq2SeqConfig};
use rnn_models::tagger::{SequenceTagger, SequenceTaggerConfig};

const BATCH: usize = 3;
const STEPS: usize = 7;
const LENGTHS: [usize; BATCH] = [7, 4, 2];

/// A model's loss on a fixed batch, built on `device` from parameters in `vm`.
type Build = fn(&VarMap, DType, &Device) -> Result<Box<dyn Fn() -> Result<Tensor>>>;

/// Deterministic ids in `0..vocab`, `(BATCH, STEPS)` or `(BATCH,)`.
fn ids(vocab: u32, dims: &[usize], salt: u32, device: &Device) -> Result<Tensor> {
    let n: usize = dims.iter().product();
    let v: Vec<u32> = (0..n as u32)
        .map(|i| (i.wrapping_mul(7919) + salt * 31 + 3) % vocab)
        .collect();
    Tensor::from_vec(v, dims, device)
}

/// Deterministic features in [-1, 1].
fn features(dims: &[usize], salt: usize, dtype: DType, device: &Device) -> Result<Tensor> {
    let n: usize = dims.iter().product();
    let v: Vec<f64> = (0..n)
        .map(|i| (((i * 37 + salt * 11) % 101) as f64 / 50.0) - 1.0)
        .collect();
    Tensor::from_vec(v, dims, &Device::Cpu)?
        .to_dtype(dtype)?
        .to_device(device)
}

fn classifier(vm: &VarMap, dtype: DType, dev: &Device) -> Result<Box<dyn Fn() -> Result<Tensor>>> {
    let input = Input::Tokens {
        vocab_size: 11,
        embedding_dim: 5,
        padding_idx: None,
    };
    let mut cfg = SequenceClassifierConfig::new(input, Mode::Gru, 6, 3);
    cfg.bidirectional = true;
    cfg.num_layers = 2;
    cfg.pooling = Pooling::Attention;
    let model = SequenceClassifier::new(&cfg, seeded_var_builder(vm, 1, dtype, dev))?;
    let x = ids(11, &[BATCH, STEPS], 1, dev)?;
    let y = ids(3, &[BATCH], 2, dev)?;
    Ok(Box::new(move || model.loss(&x, Some(&LENGTHS), &y, false)))
}

fn tagger(vm: &VarMap, dtype: DType, dev: &Device) -> Result<Box<dyn Fn() -> Result<Tensor>>> {
    let input = Input::Tokens {
        vocab_size: 13,
        embedding_dim: 4,
        padding_idx: None,
    };
    let cfg = SequenceTaggerConfig::new(input, Mode::Lstm, 5, 4);
    let model = SequenceTagger::new(&cfg, seeded_var_builder(vm, 2, dtype, dev))?;
    let x = ids(13, &[BATCH, STEPS], 3, dev)?;
    let y = ids(4, &[BATCH, STEPS], 4, dev)?;
    Ok(Box::new(move || model.loss(&x, Some(&LENGTHS), &y, false)))
}

fn language_model(
    vm: &VarMap,
    dtype: DType,
    dev: &Device,
) -> Result<Box<dyn Fn() -> Result<Tensor>>> {
    let cfg = LanguageModelConfig::new(Mode::Lstm, 17, 6, 6).with_num_layers(2);
    let model = LanguageModel::new(&cfg, seeded_var_builder(vm, 3, dtype, dev))?;
    let x = ids(17, &[BATCH, STEPS], 5, dev)?;
    let y = ids(17, &[BATCH, STEPS], 6, dev)?;
    Ok(Box::new(move || {
        model.loss(&x, &y, None, Some(&LENGTHS), false)?.0.mean()
    }))
}

fn seq2seq(vm: &VarMap, dtype: DType, dev: &Device) -> Result<Box<dyn Fn() -> Result<Tensor>>> {
    let mut cfg = Seq2SeqConfig::new(9, 10);
    cfg.embedding_dim = 4;
    cfg.hidden_size = 6;
    cfg.bidirectional_encoder = true;
    let model = Seq2Seq::new(&cfg, seeded_var_builder(vm, 4, dtype, dev))?;
    // Ids 3.. so that no token is pad (0), bos (1) or eos (2).
    let src = (ids(6, &[BATCH, STEPS], 7, dev)? + 3.0)?;
    let tgt = (ids(7, &[BATCH, 5], 8, dev)? + 3.0)?;
    let tgt_lengths = [5, 3, 1];
    Ok(Box::new(move || {
        model.loss(&src, &LENGTHS, &tgt, &tgt_lengths, false, 1.0)
    }))
}

fn generator(vm: &VarMap, dtype: DType, dev: &Device) -> Result<Box<dyn Fn() -> Result<Tensor>>> {
    let mut cfg = GeneratorConfig::new(
        8,
        ContextKind::Class { num_classes: 3 },
        StopStrategy::Bernoulli,
    );
    cfg.embedding_dim = 4;
    cfg.hidden_size = 5;
    cfg.context_dim = 3;
    cfg.mode = Mode::Gru;
    let model = ConditionedGenerator::new(&cfg, seeded_var_builder(vm, 5, dtype, dev))?;
    let context = ids(3, &[BATCH], 9, dev)?;
    let y = (ids(7, &[BATCH, STEPS], 10, dev)? + 1.0)?;
    Ok(Box::new(move || {
        model.loss(&context, &y, Some(&LENGTHS), false)
    }))
}

fn forecaster(vm: &VarMap, dtype: DType, dev: &Device) -> Result<Box<dyn Fn() -> Result<Tensor>>> {
    let cfg = ForecasterConfig::new(3, 2, 6, ForecastStrategy::NextStep);
    let model = Forecaster::new(&cfg, seeded_var_builder(vm, 6, dtype, dev))?;
    let x = features(&[BATCH, STEPS, 3], 1, dtype, dev)?;
    let y = features(&[BATCH, STEPS, 2], 2, dtype, dev)?;
    Ok(Box::new(move || model.loss(&x, Some(&LENGTHS), &y, false)))
}

const MODELS: [(&str, Build); 6] = [
    ("classifier", classifier),
    ("tagger", tagger),
    ("language model", language_model),
    ("seq2seq", seq2seq),
    ("generator", generator),
    ("forecaster", forecaster),
];

/// Every parameter's gradient, by name, flattened to f64.
type NamedGrads = Vec<(String, Vec<f64>)>;

/// Loss and the gradient of every parameter, by name, copied to the CPU.
fn loss_and_grads(build: Build, dtype: DType, device: &Device) -> Result<(f64, NamedGrads)> {
    let vm = VarMap::new();
    let loss = build(&vm, dtype, device)?()?;
    let grads = loss.backward()?;
    let mut out = Vec::new();
    let data = vm.data().lock().unwrap();
    let mut names: Vec<&String> = data.keys().collect();
    names.sort();
    for name in names {
        let g = grads
            .get(data[name].as_tensor())
            .ok_or_else(|| candle_core::Error::Msg(format!("no gradient for {name}")))?;
        let g = g.to_device(&Device::Cpu)?.to_dtype(DType::F64)?;
        out.push((name.clone(), g.flatten_all()?.to_vec1::<f64>()?));
    }
    let loss = loss
        .to_device(&Device::Cpu)?
        .to_dtype(DType::F64)?
        .to_scalar::<f64>()?;
    Ok((loss, out))
}

fn close(a: f64, b: f64, tol: f64) -> bool {
    (a - b).abs() <= tol * a.abs().max(b.abs()).max(1.0)
}

#[test]
fn every_model_computes_the_cpu_loss_and_gradients_on_the_test_device() -> Result<()> {
    let Some(device) = rnn_core::testing::device() else {
        return Ok(());
    };
    let mut failures = Vec::new();
    for (name, build) in MODELS {
        for (dtype, tol) in [(DType::F64, 1e-9), (DType::F32, 1e-4)] {
            if dtype == DType::F64 && device.is_metal() {
                continue; // Metal has no f64
            }
            let (cpu_loss, cpu_grads) = loss_and_grads(build, dtype, &Device::Cpu)?;
            let (dev_loss, dev_grads) = loss_and_grads(build, dtype, &device)?;
            assert!(cpu_loss.is_finite() && cpu_loss > 0.0, "{name}: {cpu_loss}");
            if !close(cpu_loss, dev_loss, tol) {
                failures.push(format!(
                    "{name} {dtype:?}: loss {dev_loss} vs CPU {cpu_loss}"
                ));
            }
            assert_eq!(cpu_grads.len(), dev_grads.len(), "{name}: parameters");
            for ((pname, c), (_, d)) in cpu_grads.iter().zip(&dev_grads) {
                let worst = c
                    .iter()
                    .zip(d)
                    .map(|(a, b)| (a - b).abs() / a.abs().max(b.abs()).max(1.0))
                    .fold(0.0, f64::max);
                if worst.is_nan() || worst > tol {
                    failures.push(format!(
                        "{name} {dtype:?}: grad {pname} differs by {worst:e} (> {tol:e})"
                    ));
                }
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    Ok(())
}

#[test]
fn every_model_learns_its_batch_on_the_test_device() -> Result<()> {
    const STEPS: usize = 40;
    let Some(device) = rnn_core::testing::device() else {
        return Ok(());
    };
    for (name, build) in MODELS {
        let vm = VarMap::new();
        let loss_fn = build(&vm, DType::F32, &device)?;
        let params = ParamsAdamW {
            lr: 0.02,
            weight_decay: 0.0,
            ..Default::default()
        };
        let mut opt = AdamW::new(vm.all_vars(), params)?;
        let first = loss_fn()?.to_scalar::<f32>()?;
        for _ in 0..STEPS {
            opt.backward_step(&loss_fn()?)?;
        }
        let last = loss_fn()?.to_scalar::<f32>()?;
        eprintln!("{name}: loss {first} -> {last}");
        assert!(
            last.is_finite() && last < 0.8 * first,
            "{name} on {:?}: loss {first} -> {last} after {STEPS} Adam steps",
            device.location()
        );
    }
    Ok(())
}
