//! Diagnostics for the vanishing/exploding-gradient story: how large is `d loss / d h_t` at every
//! step `t` of a sequence? For a loss on the last step only, a vanilla RNN's norms shrink (or blow
//! up) geometrically going back in time, while gated cells (LSTM, GRU) keep them
//! (Bengio et al. 1994, <https://doi.org/10.1109/72.279181>; Pascanu et al. 2013,
//! <https://arxiv.org/abs/1211.5063>).

use crate::{Error, Result};
use candle_core::{Tensor, Var};
use rnn_core::{Rnn, RnnState};

/// `||d loss / d h_t||_2` for every step `t` of `xs`, for the top layer of a unidirectional `rnn`.
///
/// The sequence is run step by step and a zero "probe" is added to each step's state, so the
/// gradient of the loss with respect to the probe is the total derivative with respect to `h_t`
/// (through the output at `t` and through every later step). `loss` receives the outputs stacked
/// in the layer's layout, `(batch, seq_len, state_size)` when batch-first.
///
/// # Shapes
/// - `xs`: `(batch, seq_len, input_size)` (batch-first) or `(seq_len, batch, input_size)`
/// - returns `seq_len` norms, each over the whole `(batch, state_size)` gradient
pub fn hidden_state_gradient_norms(
    rnn: &Rnn,
    xs: &Tensor,
    loss: impl Fn(&Tensor) -> candle_core::Result<Tensor>,
) -> Result<Vec<f64>> {
    let cfg = rnn.config();
    if cfg.bidirectional {
        return Err(Error::Invalid(
            "gradient norms per step need a unidirectional layer (a bidirectional one has two states per step)".into(),
        ));
    }
    if xs.rank() != 3 {
        return Err(Error::Invalid(format!(
            "xs must be 3-D (batch, seq_len, input) or (seq_len, batch, input), got shape {:?}",
            xs.dims()
        )));
    }
    let time_axis = if cfg.batch_first { 1 } else { 0 };
    let seq_len = xs.dim(time_axis)?;
    let top = cfg.num_layers - 1;
    let mut state: Option<RnnState> = None;
    let mut probes = Vec::with_capacity(seq_len);
    let mut outputs = Vec::with_capacity(seq_len);
    for t in 0..seq_len {
        let x_t = xs.narrow(time_axis, t, 1)?.squeeze(time_axis)?;
        let (_, s) = rnn.step(&x_t, state.as_ref())?;
        let probe = Var::zeros(s.h.shape(), s.h.dtype(), s.h.device())?;
        let h = (&s.h + probe.as_tensor())?;
        outputs.push(h.get(top)?);
        probes.push(probe);
        state = Some(RnnState::new(h, s.c));
    }
    let ys = Tensor::stack(&outputs, time_axis)?;
    let grads = loss(&ys)?.backward()?;
    probes
        .iter()
        .map(|p| match grads.get(p) {
            Some(g) => Ok(g
                .get(top)?
                .sqr()?
                .sum_all()?
                .to_dtype(candle_core::DType::F64)?
                .to_scalar::<f64>()?
                .sqrt()),
            // No path from this step to the loss: its gradient is zero.
            None => Ok(0.0),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device, IndexOp};
    use candle_nn::{VarBuilder, VarMap};
    use rnn_core::init::seeded_var_builder;
    use rnn_core::{Implementation, Mode, RnnConfig};
    use std::collections::HashMap;

    fn xs(seq_len: usize) -> Tensor {
        let vm = VarMap::new();
        seeded_var_builder(&vm, 1, DType::F64, &Device::Cpu)
            .get_with_hints(
                (2, seq_len, 3),
                "xs",
                candle_nn::Init::Randn {
                    mean: 0.0,
                    stdev: 1.0,
                },
            )
            .unwrap()
            .detach()
    }

    /// A vanilla RNN whose recurrent weights are `scale` times the identity.
    fn scaled_rnn(mode: Mode, scale: f64) -> Rnn {
        let cfg = RnnConfig::new(mode, 3, 4);
        let dev = Device::Cpu;
        let mut t: HashMap<String, Tensor> = HashMap::new();
        t.insert(
            "weight_ih_l0".into(),
            (Tensor::ones((4, 3), DType::F64, &dev).unwrap() * 0.1).unwrap(),
        );
        t.insert(
            "weight_hh_l0".into(),
            (Tensor::eye(4, DType::F64, &dev).unwrap() * scale).unwrap(),
        );
        t.insert(
            "bias_ih_l0".into(),
            Tensor::zeros(4, DType::F64, &dev).unwrap(),
        );
        t.insert(
            "bias_hh_l0".into(),
            Tensor::zeros(4, DType::F64, &dev).unwrap(),
        );
        Rnn::new(&cfg, VarBuilder::from_tensors(t, DType::F64, &dev)).unwrap()
    }

    #[test]
    fn last_step_gradient_is_the_loss_weight() {
        let cfg = RnnConfig::new(Mode::Lstm, 3, 5).with_num_layers(2);
        let vm = VarMap::new();
        let rnn = Rnn::new(&cfg, seeded_var_builder(&vm, 0, DType::F64, &Device::Cpu)).unwrap();
        // loss = sum(y_{T-1} * 2): d loss / d h_{T-1} = 2 everywhere, norm = 2 * sqrt(2 * 5).
        let norms =
            hidden_state_gradient_norms(&rnn, &xs(6), |ys| (ys.i((.., 5, ..))? * 2.0)?.sum_all())
                .unwrap();
        assert_eq!(norms.len(), 6);
        assert!((norms[5] - 2.0 * 10f64.sqrt()).abs() < 1e-12, "{norms:?}");
        assert!(
            norms[..5].iter().all(|n| *n > 0.0),
            "earlier steps reach the loss through the state"
        );
    }

    #[test]
    fn vanishing_and_exploding_in_a_vanilla_rnn() {
        let last = |ys: &Tensor| ys.i((.., 19, ..))?.sum_all();
        let vanish =
            hidden_state_gradient_norms(&scaled_rnn(Mode::RnnTanh, 0.5), &xs(20), last).unwrap();
        assert!(
            vanish.windows(2).all(|w| w[0] < w[1]),
            "shrinks going back: {vanish:?}"
        );
        assert!(vanish[0] < 1e-4 * vanish[19], "{vanish:?}");
        // ReLU with positive inputs stays linear: each step back multiplies the gradient by the
        // recurrent gain exactly, 1.5^19 over the sequence.
        let positive = xs(20).abs().unwrap();
        let explode =
            hidden_state_gradient_norms(&scaled_rnn(Mode::RnnRelu, 1.5), &positive, last).unwrap();
        let ratio = explode[0] / explode[19];
        assert!((ratio / 1.5f64.powi(19) - 1.0).abs() < 1e-9, "{explode:?}");
    }

    #[test]
    fn same_norms_with_fused_and_composed_and_bidirectional_refused() {
        let cfg = RnnConfig::new(Mode::Gru, 3, 4);
        let vm = VarMap::new();
        let rnn = Rnn::new(&cfg, seeded_var_builder(&vm, 2, DType::F64, &Device::Cpu)).unwrap();
        let loss = |ys: &Tensor| ys.sqr()?.sum_all();
        let a = hidden_state_gradient_norms(
            &rnn.clone().with_implementation(Implementation::Fused),
            &xs(7),
            loss,
        )
        .unwrap();
        let b = hidden_state_gradient_norms(
            &rnn.with_implementation(Implementation::Composed),
            &xs(7),
            loss,
        )
        .unwrap();
        for (x, y) in a.iter().zip(&b) {
            assert!((x - y).abs() < 1e-10);
        }
        let bi = Rnn::new(
            &cfg.with_bidirectional(true),
            seeded_var_builder(&vm, 2, DType::F64, &Device::Cpu),
        )
        .unwrap();
        assert!(hidden_state_gradient_norms(&bi, &xs(3), loss).is_err());
    }
}
