//! The layer-normalisation parameters of one cell and their composed math (Ba et al. 2016):
//! `LN(v) = (v - mean(v)) / sqrt(var(v) + eps) * weight + bias` over the feature axis, with the
//! biased variance and `eps = 1e-5`, as `torch.nn.functional.layer_norm`. See
//! [`crate::RnnConfig::layer_norm`] for where a cell applies it.

use crate::config::Mode;
use candle_core::{Result, Tensor, D};
use candle_nn::{Init, VarBuilder};

/// The epsilon added to the variance, as `torch.nn.LayerNorm`'s default.
pub(crate) const LAYER_NORM_EPS: f64 = 1e-5;

/// Gain and bias of one normalisation.
#[derive(Debug, Clone)]
pub(crate) struct Affine {
    pub weight: Tensor,
    pub bias: Tensor,
}

impl Affine {
    fn load(size: usize, which: &str, suffix: &str, vb: &VarBuilder) -> Result<Self> {
        let weight = vb.get_with_hints(
            size,
            &format!("layernorm_{which}_weight{suffix}"),
            Init::Const(1.0),
        )?;
        let bias = vb.get_with_hints(
            size,
            &format!("layernorm_{which}_bias{suffix}"),
            Init::Const(0.0),
        )?;
        Ok(Self { weight, bias })
    }

    fn detached(&self) -> Self {
        Self {
            weight: self.weight.detach(),
            bias: self.bias.detach(),
        }
    }

    /// `LN(v)` over the last axis of `v`, in composed ops (autograd through Candle).
    pub fn apply(&self, v: &Tensor) -> Result<Tensor> {
        layer_norm(v, &self.weight, &self.bias)
    }
}

/// `(v - mean) / sqrt(var + eps) * weight + bias` over the last axis, biased variance.
pub(crate) fn layer_norm(v: &Tensor, weight: &Tensor, bias: &Tensor) -> Result<Tensor> {
    let centred = v.broadcast_sub(&v.mean_keepdim(D::Minus1)?)?;
    let var = centred.sqr()?.mean_keepdim(D::Minus1)?;
    let normed = centred.broadcast_div(&(var + LAYER_NORM_EPS)?.sqrt()?)?;
    normed.broadcast_mul(weight)?.broadcast_add(bias)
}

/// The normalisations of one layer-direction: of the input part `W_ih x` and the recurrent part
/// `W_hh h` of the gate pre-activations (`G * hidden` features each) and, for LSTM, of the cell
/// state (`hidden` features).
#[derive(Debug, Clone)]
pub(crate) struct LayerNormParams {
    pub x: Affine,
    pub h: Affine,
    pub c: Option<Affine>,
}

impl LayerNormParams {
    /// Loads (or creates: gains 1, biases 0) `layernorm_{x,h}_{weight,bias}{suffix}` and, for LSTM,
    /// `layernorm_c_{weight,bias}{suffix}`.
    pub fn load(mode: Mode, hidden_size: usize, suffix: &str, vb: &VarBuilder) -> Result<Self> {
        let gates = mode.gate_count() * hidden_size;
        Ok(Self {
            x: Affine::load(gates, "x", suffix, vb)?,
            h: Affine::load(gates, "h", suffix, vb)?,
            c: if mode.has_cell_state() {
                Some(Affine::load(hidden_size, "c", suffix, vb)?)
            } else {
                None
            },
        })
    }

    /// The same parameters cut from the autograd graph.
    pub fn detached(&self) -> Self {
        Self {
            x: self.x.detached(),
            h: self.h.detached(),
            c: self.c.as_ref().map(Affine::detached),
        }
    }

    /// Every parameter with its base name (no layer suffix), in packing order.
    pub fn named(&self) -> Vec<(&'static str, &Tensor)> {
        let mut out = vec![
            ("layernorm_x_weight", &self.x.weight),
            ("layernorm_x_bias", &self.x.bias),
            ("layernorm_h_weight", &self.h.weight),
            ("layernorm_h_bias", &self.h.bias),
        ];
        if let Some(c) = &self.c {
            out.push(("layernorm_c_weight", &c.weight));
            out.push(("layernorm_c_bias", &c.bias));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn normalises_to_zero_mean_unit_variance_then_scales() -> Result<()> {
        let dev = Device::Cpu;
        let v = Tensor::new(&[[1f64, 2.0, 3.0, 6.0], [-1.0, -1.0, 1.0, 1.0]], &dev)?;
        let w = Tensor::new(&[2f64, 2.0, 2.0, 2.0], &dev)?;
        let b = Tensor::new(&[1f64, 1.0, 1.0, 1.0], &dev)?;
        let y = layer_norm(&v, &w, &b)?.to_vec2::<f64>()?;
        // Row 2: mean 0, biased variance 1 -> x / sqrt(1 + eps) * 2 + 1.
        let s = 2.0 / (1.0 + LAYER_NORM_EPS).sqrt();
        for (got, want) in y[1].iter().zip([1.0 - s, 1.0 - s, 1.0 + s, 1.0 + s]) {
            assert!((got - want).abs() < 1e-12, "{got} vs {want}");
        }
        // Row 1: mean 3, biased variance 3.5.
        let sd = (3.5 + LAYER_NORM_EPS).sqrt();
        for (got, x) in y[0].iter().zip([1.0, 2.0, 3.0, 6.0]) {
            let want = (x - 3.0) / sd * 2.0 + 1.0;
            assert!((got - want).abs() < 1e-12, "{got} vs {want}");
        }
        Ok(())
    }
}
