//! Where a training step of RESULTS.md's translation model goes, phase by phase: forward (the
//! loss), backward, gradient clipping and the AdamW step, in ms per step, with and without the
//! attention. `cargo bench --bench seq2seq_phases`; the shapes are those of `rnn train seq2seq
//! --level tutorial --target 0` (vocabularies 4271 and 2797, embedding and hidden 256,
//! bidirectional GRU encoder, GRU decoder, Luong "general" attention, dropout 0.1, batches of
//! 64) with 8 source and 9 target tokens per pair. Results in `benches/README.md`.

mod common;

use std::time::Instant;

use candle_core::{DType, Device, Tensor, Var};
use candle_nn::VarMap;
use rnn::models::seq2seq::{Attention, Seq2Seq, Seq2SeqConfig};
use rnn::rnn_core::{init::seeded_var_builder, Mode};
use rnn::train::optim::{clip_grad_norm, AdamWConfig, StatefulOptimizer, TorchAdamW};

const STEPS: usize = 40;
const WARMUP: usize = 10;

fn phases(attention: Attention) -> [f64; 4] {
    let cfg = Seq2SeqConfig {
        embedding_dim: 256,
        hidden_size: 256,
        mode: Mode::Gru,
        attention,
        bidirectional_encoder: true,
        dropout: 0.1,
        ..Seq2SeqConfig::new(4271, 2797)
    };
    let varmap = VarMap::new();
    let dev = Device::Cpu;
    let model = Seq2Seq::new(&cfg, seeded_var_builder(&varmap, 0, DType::F32, &dev)).unwrap();
    let (b, s, t) = (64, 8, 9);
    let ids =
        |n: usize, v: usize| -> Vec<u32> { (0..n).map(|i| (i * 7 % (v - 3) + 3) as u32).collect() };
    let src = Tensor::from_vec(ids(b * s, 4271), (b, s), &dev).unwrap();
    let tgt = Tensor::from_vec(ids(b * t, 2797), (b, t), &dev).unwrap();
    let (sl, tl) = (vec![s; b], vec![t; b]);
    let named: Vec<(String, Var)> = varmap
        .data()
        .lock()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let vars: Vec<Var> = named.iter().map(|(_, v)| v.clone()).collect();
    let cfg = AdamWConfig {
        lr: 2e-3,
        ..AdamWConfig::default()
    };
    let mut opt = TorchAdamW::new(named, cfg).unwrap();
    let mut total = [0.0; 4];
    for step in 0..WARMUP + STEPS {
        let t0 = Instant::now();
        let loss = model.loss(&src, &sl, &tgt, &tl, true, 1.0).unwrap();
        let t1 = Instant::now();
        let mut grads = loss.backward().unwrap();
        let t2 = Instant::now();
        clip_grad_norm(&mut grads, &vars, 5.0).unwrap();
        let t3 = Instant::now();
        opt.step(&grads).unwrap();
        loss.to_scalar::<f32>().unwrap();
        let t4 = Instant::now();
        if step >= WARMUP {
            for (sum, (a, z)) in total
                .iter_mut()
                .zip([(t0, t1), (t1, t2), (t2, t3), (t3, t4)])
            {
                *sum += (z - a).as_secs_f64() * 1e3 / STEPS as f64;
            }
        }
    }
    total
}

fn main() {
    common::as_the_binary();
    for attention in [Attention::General, Attention::None] {
        let [f, b, c, o] = phases(attention);
        println!(
            "attention {attention:?}: forward {f:.1} ms, backward {b:.1} ms, clip {c:.1} ms, AdamW {o:.1} ms"
        );
    }
}
