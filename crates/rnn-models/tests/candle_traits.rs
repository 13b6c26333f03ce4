//! The models through candle-nn's `ModuleT` alone: `forward_t(xs, false)` is the model's
//! inference forward, `forward_t(xs, true)` turns dropout on, and a user-written candle-nn
//! training loop (`candle_nn::AdamW`, `candle_nn::loss::cross_entropy`) trains a model through it.

use candle_core::{DType, Device, Result, Tensor};
use candle_nn::{AdamW, ModuleT, Optimizer, ParamsAdamW, VarMap};
use rnn_core::dropout::SeededDropout;
use rnn_core::init::seeded_var_builder;
use rnn_core::Mode;
use rnn_models::classifier::{Input, SequenceClassifier, SequenceClassifierConfig};
use rnn_models::forecaster::{ForecastStrategy, Forecaster, ForecasterConfig};
use rnn_models::lm::{LanguageModel, LanguageModelConfig};
use rnn_models::tagger::{SequenceTagger, SequenceTaggerConfig};

/// Token ids `(batch, seq)` below `vocab`.
fn ids(b: usize, t: usize, vocab: u32) -> Result<Tensor> {
    let v: Vec<u32> = (0..(b * t) as u32).map(|k| (k * 7 + 3) % vocab).collect();
    Tensor::from_vec(v, (b, t), &Device::Cpu)
}

/// Through the trait only.
fn eval<M: ModuleT>(m: &M, xs: &Tensor) -> Result<Tensor> {
    m.forward_t(xs, false)
}

fn same(a: &Tensor, b: &Tensor) -> bool {
    a.dims() == b.dims()
        && a.flatten_all().unwrap().to_vec1::<f32>().unwrap()
            == b.flatten_all().unwrap().to_vec1::<f32>().unwrap()
}

#[test]
fn models_through_module_t_equal_their_own_forward() -> Result<()> {
    let varmap = VarMap::new();
    let vb = seeded_var_builder(&varmap, 1, DType::F32, &Device::Cpu);
    let xs = ids(3, 5, 11)?;
    let cfg = SequenceClassifierConfig::new(Input::tokens(11, 6), Mode::Lstm, 8, 4)
        .with_embedding_dropout(0.5);
    let classifier = SequenceClassifier::new(&cfg, vb.pp("c"))?;
    assert!(same(
        &eval(&classifier, &xs)?,
        &classifier.forward(&xs, None, false)?
    ));
    // Training mode draws a dropout mask: different logits.
    assert!(!same(
        &classifier.forward_t(&xs, true)?,
        &eval(&classifier, &xs)?
    ));

    let cfg = SequenceTaggerConfig::new(Input::tokens(11, 6), Mode::Gru, 8, 5);
    let tagger = SequenceTagger::new(&cfg, vb.pp("t"))?;
    let out = eval(&tagger, &xs)?;
    assert_eq!(out.dims(), &[3, 5, 5]);
    assert!(same(&out, &tagger.forward(&xs, None, false)?));

    let cfg = LanguageModelConfig::new(Mode::Lstm, 11, 6, 8);
    let lm = LanguageModel::new(&cfg, vb.pp("l"))?;
    let out = eval(&lm, &xs)?;
    assert_eq!(out.dims(), &[3, 5, 11]);
    assert!(same(&out, &lm.forward(&xs, None, None, false)?.0));

    let cfg = ForecasterConfig::new(2, 1, 8, ForecastStrategy::NextStep);
    let forecaster = Forecaster::new(&cfg, vb.pp("f"))?;
    let series = Tensor::rand(0f32, 1f32, (3, 5, 2), &Device::Cpu)?;
    assert!(same(
        &eval(&forecaster, &series)?,
        &forecaster.forward(&series, None, false)?
    ));
    Ok(())
}

#[test]
fn seeded_dropout_through_module_t() -> Result<()> {
    let d = SeededDropout::new(0.5, 7)?;
    let xs = Tensor::ones((4, 64), DType::F32, &Device::Cpu)?;
    assert!(same(&eval(&d, &xs)?, &xs));
    let kept = d.forward_t(&xs, true)?;
    let v = kept.flatten_all()?.to_vec1::<f32>()?;
    assert!(v.iter().all(|&x| x == 0.0 || x == 2.0));
    let zeros = v.iter().filter(|&&x| x == 0.0).count();
    assert!(
        (64..192).contains(&zeros),
        "{zeros} of 256 dropped at p = 0.5"
    );
    Ok(())
}

/// A candle-nn style training loop on a classifier, through `ModuleT` with dropout on: the class
/// is whether the first token is below 5, so the loss must fall.
#[test]
fn a_user_training_loop_with_candle_nn_adamw_learns() -> Result<()> {
    let varmap = VarMap::new();
    let vb = seeded_var_builder(&varmap, 3, DType::F32, &Device::Cpu);
    let cfg = SequenceClassifierConfig::new(Input::tokens(10, 8), Mode::Gru, 16, 2)
        .with_embedding_dropout(0.1);
    let model = SequenceClassifier::new(&cfg, vb)?;
    let xs = ids(32, 4, 10)?;
    let small_first: Vec<u32> = xs
        .to_vec2::<u32>()?
        .iter()
        .map(|row| u32::from(row[0] < 5))
        .collect();
    let ys = Tensor::new(small_first, &Device::Cpu)?;
    let mut opt = AdamW::new(
        varmap.all_vars(),
        ParamsAdamW {
            lr: 0.02,
            ..Default::default()
        },
    )?;
    let loss = |train: bool| candle_nn::loss::cross_entropy(&model.forward_t(&xs, train)?, &ys);
    let before = loss(false)?.to_scalar::<f32>()?;
    for _ in 0..80 {
        opt.backward_step(&loss(true)?)?;
    }
    let after = loss(false)?.to_scalar::<f32>()?;
    assert!(after < 0.3 * before, "loss {before} -> {after}");
    Ok(())
}
