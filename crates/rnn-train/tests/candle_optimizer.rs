//! The optimisers through `candle_nn::Optimizer`: a candle-nn style loop (`backward_step`) takes
//! the same steps, bit for bit, as the same optimiser driven through `StatefulOptimizer`, and the
//! deprecated names still work.

use candle_core::{DType, Device, Tensor, Var};
use candle_nn::Optimizer as CandleOptimizer;
use rnn_train::optim::{AdamWConfig, SgdConfig, StatefulOptimizer, TorchAdamW, TorchSgd};

fn problem() -> (Tensor, Tensor) {
    let dev = Device::Cpu;
    let x = Tensor::arange(0f32, 12.0, &dev)
        .unwrap()
        .reshape((4, 3))
        .unwrap();
    let y = Tensor::new(&[[1f32, 0.], [0., 1.], [1., 1.], [0.5, -1.]], &dev).unwrap();
    ((x / 10.0).unwrap(), y)
}

fn vars() -> (Var, Var) {
    let dev = Device::Cpu;
    let w =
        Var::from_tensor(&Tensor::new(&[[0.1f32, -0.2], [0.3, 0.05], [-0.1, 0.2]], &dev).unwrap())
            .unwrap();
    (w, Var::zeros(2, DType::F32, &dev).unwrap())
}

fn loss(w: &Var, b: &Var) -> Tensor {
    let (x, y) = problem();
    let pred = x
        .matmul(w.as_tensor())
        .unwrap()
        .broadcast_add(b.as_tensor())
        .unwrap();
    (pred - y).unwrap().sqr().unwrap().mean_all().unwrap()
}

fn bits(v: &Var) -> Vec<u32> {
    v.flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap()
        .iter()
        .map(|f| f.to_bits())
        .collect()
}

fn same_steps<O: CandleOptimizer + StatefulOptimizer>(
    config: O::Config,
    named: impl Fn(Vec<(String, Var)>) -> O,
) where
    O::Config: Clone,
{
    let (w1, b1) = vars();
    let mut candle_way = <O as CandleOptimizer>::new(vec![w1.clone(), b1.clone()], config).unwrap();
    let (w2, b2) = vars();
    let mut ours = named(vec![
        ("param.0".into(), w2.clone()),
        ("param.1".into(), b2.clone()),
    ]);
    for step in 0..6 {
        if step == 3 {
            candle_way.set_learning_rate(0.05);
            StatefulOptimizer::set_lr(&mut ours, 0.05);
        }
        candle_way.backward_step(&loss(&w1, &b1)).unwrap();
        let grads = loss(&w2, &b2).backward().unwrap();
        StatefulOptimizer::step(&mut ours, &grads).unwrap();
    }
    assert_eq!(candle_way.learning_rate(), 0.05);
    assert_eq!(bits(&w1), bits(&w2));
    assert_eq!(bits(&b1), bits(&b2));
    assert_ne!(bits(&w1), bits(&vars().0), "the steps changed nothing");
    // The state is keyed by the generated names.
    let state = StatefulOptimizer::state(&candle_way).unwrap();
    assert!(state.to_tensors().keys().any(|k| k.ends_with("param.1")));
}

#[test]
fn adamw_through_candle_nn_takes_the_same_steps() {
    let cfg = AdamWConfig {
        lr: 0.1,
        weight_decay: 0.01,
        ..Default::default()
    };
    same_steps::<TorchAdamW>(cfg.clone(), |p| TorchAdamW::new(p, cfg.clone()).unwrap());
}

#[test]
fn sgd_through_candle_nn_takes_the_same_steps() {
    let cfg = SgdConfig {
        lr: 0.1,
        momentum: 0.9,
        ..Default::default()
    };
    same_steps::<TorchSgd>(cfg.clone(), |p| TorchSgd::new(p, cfg.clone()).unwrap());
}

#[test]
#[allow(deprecated)]
fn the_former_names_still_work() {
    use rnn_train::optim::{AdamW, Optimizer};
    let (w, _) = vars();
    let mut opt: Box<dyn Optimizer> =
        Box::new(AdamW::new(vec![("w".into(), w.clone())], AdamWConfig::default()).unwrap());
    let grads = w
        .as_tensor()
        .sqr()
        .unwrap()
        .sum_all()
        .unwrap()
        .backward()
        .unwrap();
    opt.step(&grads).unwrap();
    assert_eq!(opt.lr(), AdamWConfig::default().lr);
}
