//! The weights of one cell (one layer-direction of a layer) and its one-step math in composed
//! Candle ops. Cells and the layer's composed recurrence both step through [`CellParams::step`], so
//! the gate equations exist once.

use super::layer_norm::LayerNormParams;
use crate::config::Mode;
use candle_core::{Result, Tensor, D};
use candle_nn::{ops::sigmoid, Init, VarBuilder};

/// Weights of one cell, in PyTorch layout: `weight_ih (G*hidden, input)`, `weight_hh (G*hidden,
/// state)`, `bias_* (G*hidden)`, `weight_hr (proj, hidden)`, with G = [`Mode::gate_count`].
#[derive(Debug, Clone)]
pub(crate) struct CellParams {
    pub mode: Mode,
    pub weight_ih: Tensor,
    pub weight_hh: Tensor,
    pub bias_ih: Option<Tensor>,
    pub bias_hh: Option<Tensor>,
    pub weight_hr: Option<Tensor>,
    pub input_size: usize,
    pub hidden_size: usize,
    /// The `layernorm_*` parameters when the cell is layer-normalised.
    pub layer_norm: Option<LayerNormParams>,
}

/// PyTorch's default for every recurrent parameter: U(-1/sqrt(hidden), 1/sqrt(hidden)).
pub(crate) fn default_init(hidden_size: usize) -> Init {
    let k = 1.0 / (hidden_size as f64).sqrt();
    Init::Uniform { lo: -k, up: k }
}

impl CellParams {
    /// Loads (or creates, with PyTorch's default init) the tensors named `weight_ih{suffix}`,
    /// `weight_hh{suffix}`, `bias_ih{suffix}`, `bias_hh{suffix}` and, when `proj_size > 0`,
    /// `weight_hr{suffix}`.
    pub fn load(
        mode: Mode,
        input_size: usize,
        hidden_size: usize,
        proj_size: usize,
        bias: bool,
        suffix: &str,
        vb: &VarBuilder,
    ) -> Result<Self> {
        let gates = mode.gate_count() * hidden_size;
        let state_size = if proj_size > 0 {
            proj_size
        } else {
            hidden_size
        };
        let init = default_init(hidden_size);
        let get = |shape: (usize, usize), name: &str| {
            vb.get_with_hints(shape, &format!("{name}{suffix}"), init)
        };
        let get1 =
            |size: usize, name: &str| vb.get_with_hints(size, &format!("{name}{suffix}"), init);
        let weight_ih = get((gates, input_size), "weight_ih")?;
        let weight_hh = get((gates, state_size), "weight_hh")?;
        let (bias_ih, bias_hh) = if bias {
            (Some(get1(gates, "bias_ih")?), Some(get1(gates, "bias_hh")?))
        } else {
            (None, None)
        };
        let weight_hr = if proj_size > 0 {
            Some(get((proj_size, hidden_size), "weight_hr")?)
        } else {
            None
        };
        Ok(Self {
            mode,
            weight_ih,
            weight_hh,
            bias_ih,
            bias_hh,
            weight_hr,
            input_size,
            hidden_size,
            layer_norm: None,
        })
    }

    /// The same cell, layer-normalised: loads (or creates) its `layernorm_*{suffix}` parameters
    /// (see [`crate::RnnConfig::layer_norm`]).
    pub fn with_layer_norm(mut self, suffix: &str, vb: &VarBuilder) -> Result<Self> {
        self.layer_norm = Some(LayerNormParams::load(
            self.mode,
            self.hidden_size,
            suffix,
            vb,
        )?);
        Ok(self)
    }

    /// The same weights cut from the autograd graph.
    pub fn detached(&self) -> Self {
        Self {
            weight_ih: self.weight_ih.detach(),
            weight_hh: self.weight_hh.detach(),
            bias_ih: self.bias_ih.as_ref().map(Tensor::detach),
            bias_hh: self.bias_hh.as_ref().map(Tensor::detach),
            weight_hr: self.weight_hr.as_ref().map(Tensor::detach),
            layer_norm: self.layer_norm.as_ref().map(LayerNormParams::detached),
            ..self.clone()
        }
    }

    /// Whether any weight is in an autograd graph (a `Var` or computed from one).
    pub fn tracked(&self) -> bool {
        self.named().into_iter().any(|(_, w)| w.track_op())
    }

    /// Size of `h`: the projection size when projecting, else `hidden_size`.
    pub fn state_size(&self) -> usize {
        match &self.weight_hr {
            Some(w) => w.dims()[0],
            None => self.hidden_size,
        }
    }

    /// Every parameter with its PyTorch base name (no layer suffix), for optimisers and tests.
    pub fn named(&self) -> Vec<(&'static str, &Tensor)> {
        let mut out = vec![
            ("weight_ih", &self.weight_ih),
            ("weight_hh", &self.weight_hh),
        ];
        if let Some(b) = &self.bias_ih {
            out.push(("bias_ih", b));
        }
        if let Some(b) = &self.bias_hh {
            out.push(("bias_hh", b));
        }
        if let Some(w) = &self.weight_hr {
            out.push(("weight_hr", w));
        }
        if let Some(ln) = &self.layer_norm {
            out.extend(ln.named());
        }
        out
    }

    /// `x_t W_ih^T + b_ih` (`LN_x(x_t W_ih^T) + b_ih` when layer-normalised):
    /// `(batch, input)` -> `(batch, G*hidden)`.
    pub fn input_gates(&self, x_t: &Tensor) -> Result<Tensor> {
        match &self.layer_norm {
            None => affine(x_t, &self.weight_ih, self.bias_ih.as_ref()),
            Some(ln) => add_bias(
                ln.x.apply(&x_t.matmul(&self.weight_ih.t()?)?)?,
                self.bias_ih.as_ref(),
            ),
        }
    }

    /// `h W_hh^T + b_hh` (`LN_h(h W_hh^T) + b_hh` when layer-normalised).
    fn hidden_gates(&self, h: &Tensor) -> Result<Tensor> {
        match &self.layer_norm {
            None => affine(h, &self.weight_hh, self.bias_hh.as_ref()),
            Some(ln) => add_bias(
                ln.h.apply(&h.matmul(&self.weight_hh.t()?)?)?,
                self.bias_hh.as_ref(),
            ),
        }
    }

    /// `tanh(c)` of the LSTM output (`tanh(LN_c(c))` when layer-normalised).
    fn cell_output(&self, c: &Tensor) -> Result<Tensor> {
        match self.layer_norm.as_ref().and_then(|ln| ln.c.as_ref()) {
            None => c.tanh(),
            Some(ln_c) => ln_c.apply(c)?.tanh(),
        }
    }

    /// One step from `x_t (batch, input)`, `h (batch, state)` and, for LSTM, `c (batch, hidden)`;
    /// returns the new `h` and `c`.
    pub fn step(
        &self,
        x_t: &Tensor,
        h: &Tensor,
        c: Option<&Tensor>,
    ) -> Result<(Tensor, Option<Tensor>)> {
        self.step_from(x_t, h, h, c)
    }

    /// [`CellParams::step`] with `h_rec` as the state that enters `W_hh` (recurrent dropout masks
    /// it) and `h` as the state the GRU update interpolates from.
    pub fn step_from(
        &self,
        x_t: &Tensor,
        h_rec: &Tensor,
        h: &Tensor,
        c: Option<&Tensor>,
    ) -> Result<(Tensor, Option<Tensor>)> {
        let gi = self.input_gates(x_t)?;
        let gh = self.hidden_gates(h_rec)?;
        let hidden = self.hidden_size;
        match self.mode {
            Mode::Lstm => {
                let gates = (gi + gh)?;
                let i = sigmoid(&gates.narrow(D::Minus1, 0, hidden)?)?;
                let f = sigmoid(&gates.narrow(D::Minus1, hidden, hidden)?)?;
                let g = gates.narrow(D::Minus1, 2 * hidden, hidden)?.tanh()?;
                let o = sigmoid(&gates.narrow(D::Minus1, 3 * hidden, hidden)?)?;
                let c = match c {
                    Some(c) => c,
                    None => candle_core::bail!("LSTM step needs a cell state c"),
                };
                let c_new = ((f * c)? + (i * g)?)?;
                let h_full = (o * self.cell_output(&c_new)?)?;
                let h_new = match &self.weight_hr {
                    Some(w_hr) => h_full.matmul(&w_hr.t()?)?,
                    None => h_full,
                };
                Ok((h_new, Some(c_new)))
            }
            Mode::Gru => {
                let r = sigmoid(
                    &(gi.narrow(D::Minus1, 0, hidden)? + gh.narrow(D::Minus1, 0, hidden)?)?,
                )?;
                let z = sigmoid(
                    &(gi.narrow(D::Minus1, hidden, hidden)?
                        + gh.narrow(D::Minus1, hidden, hidden)?)?,
                )?;
                let n = (gi.narrow(D::Minus1, 2 * hidden, hidden)?
                    + (r * gh.narrow(D::Minus1, 2 * hidden, hidden)?)?)?
                .tanh()?;
                // h' = (1 - z) * n + z * h = n + z * (h - n)
                let h_new = (&n + (z * (h - &n)?)?)?;
                Ok((h_new, None))
            }
            Mode::RnnTanh => Ok(((gi + gh)?.tanh()?, None)),
            Mode::RnnRelu => Ok(((gi + gh)?.relu()?, None)),
        }
    }
}

/// `xs W^T + b` for a 2-D `xs`.
fn affine(xs: &Tensor, w: &Tensor, b: Option<&Tensor>) -> Result<Tensor> {
    add_bias(xs.matmul(&w.t()?)?, b)
}

/// `ys + b`, broadcast over rows.
fn add_bias(ys: Tensor, b: Option<&Tensor>) -> Result<Tensor> {
    match b {
        Some(b) => ys.broadcast_add(b),
        None => Ok(ys),
    }
}
