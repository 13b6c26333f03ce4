//! End to end through the facade: a seeded LSTM + linear head trained by Candle's AdamW on a
//! generated task lowers its loss, and the same seed gives the same run.

use candle_core::{DType, Device, Module, Result, Tensor};
use candle_nn::{linear, AdamW, Optimizer, ParamsAdamW, VarMap};
use rnn::prelude::*;

/// Trains for `steps` on "output the running sum of the inputs so far, scaled" and returns the
/// loss of the first and the last step.
fn train(mode: Mode, steps: usize, seed: u64) -> Result<(f32, f32)> {
    let dev = Device::Cpu;
    let vm = VarMap::new();
    let vb = seeded_var_builder(&vm, seed, DType::F32, &dev);
    let rnn = Rnn::new(&RnnConfig::new(mode, 1, 12), vb.pp("rnn"))?;
    let head = linear(12, 1, vb.pp("head"))?;
    let mut opt = AdamW::new(
        vm.all_vars(),
        ParamsAdamW {
            lr: 2e-2,
            weight_decay: 0.0,
            ..Default::default()
        },
    )?;
    // Fixed data: 16 sequences of 8 steps of values in [-1, 1].
    let xs: Vec<f32> = (0..16 * 8)
        .map(|i| ((i * 37 % 17) as f32 / 8.0) - 1.0)
        .collect();
    let ys: Vec<f32> = xs
        .chunks(8)
        .flat_map(|row| {
            row.iter()
                .scan(0.0, |acc, v| {
                    *acc += v / 4.0;
                    Some(*acc)
                })
                .collect::<Vec<_>>()
        })
        .collect();
    let xs = Tensor::from_vec(xs, (16, 8, 1), &dev)?;
    let ys = Tensor::from_vec(ys, (16, 8, 1), &dev)?;
    let (mut first, mut last) = (0.0, 0.0);
    for step in 0..steps {
        let (hs, _) = rnn.forward_with_state(&xs, None)?;
        let loss = (head.forward(&hs)? - &ys)?.sqr()?.mean_all()?;
        opt.backward_step(&loss)?;
        let v = loss.to_scalar::<f32>()?;
        if step == 0 {
            first = v;
        }
        last = v;
    }
    Ok((first, last))
}

#[test]
fn every_mode_learns_and_runs_are_reproducible() -> Result<()> {
    for mode in Mode::ALL {
        let (first, last) = train(mode, 60, 3)?;
        assert!(last < first * 0.3, "{mode}: loss {first} -> {last}");
        assert_eq!(
            train(mode, 5, 3)?,
            train(mode, 5, 3)?,
            "{mode}: same seed, same run"
        );
    }
    Ok(())
}
