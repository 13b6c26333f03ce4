//! Regularisation by masks: variational ("locked") dropout on the layer input, the layer output
//! and the recurrent state (Gal & Ghahramani 2016, <https://arxiv.org/abs/1512.05287>; Keras'
//! `recurrent_dropout`), zoneout on `h` and `c` (Krueger et al. 2016,
//! <https://arxiv.org/abs/1606.01305>) and weight dropout on `W_hh` (Merity et al. 2017,
//! <https://arxiv.org/abs/1708.02182>).
//!
//! [`RnnMasks`] holds every mask of one forward. [`crate::Rnn::forward_t`] draws them from the
//! layer's dropout seed and call counter (one counter step per training forward with any mask
//! option on, so a resumed run draws the same masks); [`crate::Rnn::forward_with_masks`] takes them
//! from the caller (tests compare with references that use the same masks).
//!
//! What each mask does, per layer-direction, with `r` the recurrent-dropout mask and `m_h`, `m_c`
//! the zoneout masks (1 = keep the previous value):
//!
//! ```text
//! gates from x_t and (h_{t-1} * r)            (r only where h enters W_hh; GRU's update uses h)
//! c~_t, h~_t = the cell's usual new state     (h~_t = o * tanh(c~_t) for LSTM, from the un-zoned c~)
//! c_t = c~_t + m_c,t * (c_{t-1} - c~_t)
//! h_t = h~_t + m_h,t * (h_{t-1} - h~_t)       (the step's output is h_t)
//! ```
//!
//! Input and output masks multiply the layer's input and output (one mask shared by every step);
//! the weight mask multiplies `W_hh` once per forward. These are elementwise products outside the
//! recurrence (the sequence masks a fused parallel op on the CPU, `broadcast_mul` in the composed
//! twin); `r`, `m_h` and `m_c` run inside the fused CPU op.

use crate::cell::params::CellParams;
use crate::check::check_shape;
use crate::config::RnnConfig;
use crate::seed;
use candle_core::{DType, Device, Result, Shape, Tensor};
use rand::RngCore;
use rayon::prelude::*;

/// Mask kinds: the `kind` of [`seed::mask_seed`]. Fixed: saved runs replay masks drawn with them.
const KIND_INPUT: u64 = 1;
const KIND_OUTPUT: u64 = 2;
const KIND_RECURRENT: u64 = 3;
const KIND_ZONEOUT_H: u64 = 4;
const KIND_ZONEOUT_C: u64 = 5;
const KIND_WEIGHT_HH: u64 = 6;

/// Every mask of one forward of an [`crate::Rnn`]; `None` where an option is off.
///
/// Dropout masks hold 0 or `1 / (1 - p)` (inverted dropout); zoneout masks hold the weight of the
/// previous state: 0 or 1 in training, the rate itself in evaluation (the expectation).
///
/// # Shapes
/// - `input[k]`: `(batch, layer_input_size(k))`, one per layer, shared by the layer's directions
/// - `output`: `(batch, output_size)`
/// - `recurrent[i]`: `(batch, state_size)`, one per layer-direction `i = layer * dirs + direction`
/// - `zoneout_h[i]`: `(seq_len, batch, state_size)`, time-major whatever the layer's layout
/// - `zoneout_c[i]`: `(seq_len, batch, hidden_size)` (LSTM only)
/// - `weight_hh[i]`: the shape of `weight_hh` of layer-direction `i`
#[derive(Debug, Clone, Default)]
pub struct RnnMasks {
    /// Variational dropout on each layer's input.
    pub input: Vec<Option<Tensor>>,
    /// Variational dropout on the last layer's output.
    pub output: Option<Tensor>,
    /// Variational dropout on `h` where it enters `W_hh`.
    pub recurrent: Vec<Option<Tensor>>,
    /// Zoneout weights of `h`.
    pub zoneout_h: Vec<Option<Tensor>>,
    /// Zoneout weights of `c` (LSTM).
    pub zoneout_c: Vec<Option<Tensor>>,
    /// DropConnect masks of `W_hh`.
    pub weight_hh: Vec<Option<Tensor>>,
}

/// The masks the recurrence of one layer-direction applies inside its loop.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct StateMasks<'a> {
    /// `(batch, state)`.
    pub recurrent: Option<&'a Tensor>,
    /// `(seq_len, batch, state)`, time-major.
    pub zoneout_h: Option<&'a Tensor>,
    /// `(seq_len, batch, hidden)`, time-major.
    pub zoneout_c: Option<&'a Tensor>,
}

impl StateMasks<'_> {
    /// Whether no mask applies (the plain recurrence).
    pub fn is_empty(&self) -> bool {
        self.recurrent.is_none() && self.zoneout_h.is_none() && self.zoneout_c.is_none()
    }
}

impl RnnMasks {
    /// No masks, sized for `cfg` (every entry `None`).
    pub fn none(cfg: &RnnConfig) -> Self {
        let ld = cfg.num_layers * cfg.num_directions();
        Self {
            input: vec![None; cfg.num_layers],
            output: None,
            recurrent: vec![None; ld],
            zoneout_h: vec![None; ld],
            zoneout_c: vec![None; ld],
            weight_hh: vec![None; ld],
        }
    }

    /// Whether no mask is set.
    pub fn is_empty(&self) -> bool {
        self.output.is_none()
            && [
                &self.input,
                &self.recurrent,
                &self.zoneout_h,
                &self.zoneout_c,
                &self.weight_hh,
            ]
            .iter()
            .all(|v| v.iter().all(Option::is_none))
    }

    /// The masks `cfg` asks for in one forward over `(seq_len, batch)`: in training drawn from
    /// `seed` on stream `call` (one stream per forward), in evaluation only the zoneout
    /// expectations. `None` when no mask applies.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn draw(
        cfg: &RnnConfig,
        seed: u64,
        call: u64,
        seq_len: usize,
        batch: usize,
        train: bool,
        dtype: DType,
        device: &Device,
    ) -> Result<Self> {
        let mut masks = Self::none(cfg);
        let ld = cfg.num_layers * cfg.num_directions();
        let drop = |p: f64, kind: u64, index: usize, shape: Shape| -> Result<Option<Tensor>> {
            if !train || p == 0.0 {
                return Ok(None);
            }
            let s = seed::mask_seed(seed, kind, index);
            bernoulli(p, (0.0, 1.0 / (1.0 - p)), s, call, shape, dtype, device).map(Some)
        };
        let zone = |rate: f64, kind: u64, index: usize, shape: Shape| -> Result<Option<Tensor>> {
            if rate == 0.0 {
                return Ok(None);
            }
            if !train {
                // The expectation: one value broadcast (a view, nothing allocated per element).
                let one = Tensor::new(&[rate], device)?.to_dtype(dtype)?;
                return one.reshape((1, 1, 1))?.broadcast_as(shape).map(Some);
            }
            let s = seed::mask_seed(seed, kind, index);
            bernoulli(rate, (1.0, 0.0), s, call, shape, dtype, device).map(Some)
        };
        for layer in 0..cfg.num_layers {
            let shape = Shape::from((batch, cfg.layer_input_size(layer)));
            masks.input[layer] = drop(cfg.input_dropout, KIND_INPUT, layer, shape)?;
        }
        masks.output = drop(
            cfg.output_dropout,
            KIND_OUTPUT,
            0,
            Shape::from((batch, cfg.output_size())),
        )?;
        let (state, hidden) = (cfg.state_size(), cfg.hidden_size);
        for i in 0..ld {
            let rec = Shape::from((batch, state));
            masks.recurrent[i] = drop(cfg.recurrent_dropout, KIND_RECURRENT, i, rec)?;
            let zh = Shape::from((seq_len, batch, state));
            masks.zoneout_h[i] = zone(cfg.zoneout_h, KIND_ZONEOUT_H, i, zh)?;
            let zc = Shape::from((seq_len, batch, hidden));
            masks.zoneout_c[i] = zone(cfg.zoneout_c, KIND_ZONEOUT_C, i, zc)?;
            let w = Shape::from((cfg.mode.gate_count() * hidden, state));
            masks.weight_hh[i] = drop(cfg.weight_drop, KIND_WEIGHT_HH, i, w)?;
        }
        Ok(masks)
    }

    /// Checks the number and shape of every mask for `cfg` and `(seq_len, batch)`; the error names
    /// the mask and the expected and actual shapes.
    pub(crate) fn check(
        &self,
        cfg: &RnnConfig,
        seq_len: usize,
        batch: usize,
        like: &Tensor,
    ) -> Result<()> {
        let ld = cfg.num_layers * cfg.num_directions();
        let count = |name: &str, len: usize, expected: usize| -> Result<()> {
            if len != expected {
                candle_core::bail!(
                    "Rnn::forward_with_masks: masks.{name} has {len} entries, expected {expected}"
                );
            }
            Ok(())
        };
        count("input", self.input.len(), cfg.num_layers)?;
        for (name, v) in [
            ("recurrent", &self.recurrent),
            ("zoneout_h", &self.zoneout_h),
            ("zoneout_c", &self.zoneout_c),
            ("weight_hh", &self.weight_hh),
        ] {
            count(name, v.len(), ld)?;
        }
        let shape = |name: String, t: &Option<Tensor>, dims: &[usize]| -> Result<()> {
            match t {
                Some(t) => {
                    check_shape(&format!("Rnn::forward_with_masks {name}"), t, dims)?;
                    crate::check::check_same_dtype_device(
                        &format!("Rnn::forward_with_masks {name}"),
                        t,
                        "xs",
                        like,
                    )
                }
                None => Ok(()),
            }
        };
        for (k, m) in self.input.iter().enumerate() {
            shape(
                format!("masks.input[{k}]"),
                m,
                &[batch, cfg.layer_input_size(k)],
            )?;
        }
        shape(
            "masks.output".into(),
            &self.output,
            &[batch, cfg.output_size()],
        )?;
        let (state, hidden) = (cfg.state_size(), cfg.hidden_size);
        for i in 0..ld {
            shape(
                format!("masks.recurrent[{i}]"),
                &self.recurrent[i],
                &[batch, state],
            )?;
            shape(
                format!("masks.zoneout_h[{i}]"),
                &self.zoneout_h[i],
                &[seq_len, batch, state],
            )?;
            if self.zoneout_c[i].is_some() && !cfg.mode.has_cell_state() {
                candle_core::bail!(
                    "Rnn::forward_with_masks: masks.zoneout_c[{i}] is for LSTM only, got one for {}",
                    cfg.mode
                );
            }
            shape(
                format!("masks.zoneout_c[{i}]"),
                &self.zoneout_c[i],
                &[seq_len, batch, hidden],
            )?;
            shape(
                format!("masks.weight_hh[{i}]"),
                &self.weight_hh[i],
                &[cfg.mode.gate_count() * hidden, state],
            )?;
        }
        Ok(())
    }

    /// The in-loop masks of layer-direction `idx`.
    pub(crate) fn state(&self, idx: usize) -> StateMasks<'_> {
        StateMasks {
            recurrent: self.recurrent[idx].as_ref(),
            zoneout_h: self.zoneout_h[idx].as_ref(),
            zoneout_c: self.zoneout_c[idx].as_ref(),
        }
    }

    /// Whether any layer-direction has a mask inside its recurrence.
    pub(crate) fn has_state_masks(&self) -> bool {
        (0..self.recurrent.len()).any(|i| !self.state(i).is_empty())
    }
}

/// Elements per chunk of [`bernoulli`]'s parallel draw (even: two elements per word).
const DRAW_CHUNK: usize = 1 << 14;

/// The threshold of probability `p` for 16 random bits: `round(p * 2^16)`, so rates are exact to
/// 2^-17 (each drawn mask element costs half a ChaCha8 word, which is most of a mask's cost).
fn threshold16(p: f64) -> u32 {
    (p * 65_536.0).round().min(65_536.0) as u32
}

/// A mask of `shape` whose element `i` is `hit` with probability `p` (to 2^-17), else `miss`:
/// the low (even `i`) or high (odd `i`) 16 bits of word `i / 2` of [`seed::rng`]`(seed, call)`
/// (ChaCha8) below [`threshold16`]`(p)`. Each chunk of elements seeks to its own words, so the
/// draw runs in parallel and does not depend on how it is split.
fn bernoulli(
    p: f64,
    (hit, miss): (f64, f64),
    seed: u64,
    call: u64,
    shape: Shape,
    dtype: DType,
    device: &Device,
) -> Result<Tensor> {
    let threshold = threshold16(p);
    let (hit, miss) = (hit as f32, miss as f32);
    let pick = |bits: u32| if bits < threshold { hit } else { miss };
    let mut values = vec![0f32; shape.elem_count()];
    values
        .par_chunks_mut(DRAW_CHUNK)
        .enumerate()
        .for_each(|(chunk, out)| {
            let mut rng = seed::rng(seed, call);
            rng.set_word_pos((chunk * DRAW_CHUNK / 2) as u128);
            let mut pairs = out.chunks_exact_mut(2);
            for pair in &mut pairs {
                let word = rng.next_u32();
                pair[0] = pick(word & 0xFFFF);
                pair[1] = pick(word >> 16);
            }
            if let [last] = pairs.into_remainder() {
                *last = pick(rng.next_u32() & 0xFFFF);
            }
        });
    Tensor::from_vec(values, shape, device)?.to_dtype(dtype)
}

/// The cell with `W_hh` multiplied by its weight-drop mask (the gradient reaches `W_hh` through
/// the product), or the cell itself.
pub(crate) fn drop_weights(cell: &CellParams, mask: Option<&Tensor>) -> Result<CellParams> {
    let mut out = cell.clone();
    if let Some(mask) = mask {
        out.weight_hh = (&cell.weight_hh * mask)?;
    }
    Ok(out)
}

/// One composed step of `cell` at time `t` with the in-loop masks: recurrent dropout on the `h`
/// that enters `W_hh`, then zoneout of the new `h` and `c` towards the previous ones.
pub(crate) fn masked_step(
    cell: &CellParams,
    masks: &StateMasks,
    t: usize,
    x_t: &Tensor,
    h: &Tensor,
    c: Option<&Tensor>,
) -> Result<(Tensor, Option<Tensor>)> {
    let h_rec = match masks.recurrent {
        Some(r) => (h * r)?,
        None => h.clone(),
    };
    let (h_new, c_new) = cell.step_from(x_t, &h_rec, h, c)?;
    let zone = |new: Tensor, old: &Tensor, m: Option<&Tensor>| -> Result<Tensor> {
        match m {
            // new + m * (old - new)
            Some(m) => &new + (m.get(t)? * (old - &new)?)?,
            None => Ok(new),
        }
    };
    let h_new = zone(h_new, h, masks.zoneout_h)?;
    let c_new = match (c_new, c) {
        (Some(c_new), Some(c)) => Some(zone(c_new, c, masks.zoneout_c)?),
        (c_new, _) => c_new,
    };
    Ok((h_new, c_new))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Mode;

    #[test]
    fn draw_is_seeded_and_sized() {
        let cfg = RnnConfig::new(Mode::Lstm, 3, 4)
            .with_num_layers(2)
            .with_bidirectional(true)
            .with_input_dropout(0.5)
            .with_output_dropout(0.5)
            .with_recurrent_dropout(0.5)
            .with_zoneout_h(0.5)
            .with_zoneout_c(0.25)
            .with_weight_drop(0.5);
        let dev = Device::Cpu;
        let a = RnnMasks::draw(&cfg, 7, 0, 5, 2, true, DType::F32, &dev).unwrap();
        let x = Tensor::zeros((5, 2, 3), DType::F32, &dev).unwrap();
        a.check(&cfg, 5, 2, &x).unwrap();
        let b = RnnMasks::draw(&cfg, 7, 0, 5, 2, true, DType::F32, &dev).unwrap();
        let c = RnnMasks::draw(&cfg, 7, 1, 5, 2, true, DType::F32, &dev).unwrap();
        let flat = |m: &Option<Tensor>| {
            m.as_ref()
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap()
        };
        assert_eq!(flat(&a.zoneout_h[3]), flat(&b.zoneout_h[3]));
        assert_ne!(flat(&a.zoneout_h[3]), flat(&c.zoneout_h[3]));
        // Different sources of one call draw different masks.
        assert_ne!(flat(&a.zoneout_h[0]), flat(&a.zoneout_h[1]));
        assert!(flat(&a.zoneout_c[0]).iter().all(|&v| v == 0.0 || v == 1.0));
        assert!(flat(&a.weight_hh[0]).iter().all(|&v| v == 0.0 || v == 2.0));
        // Evaluation: only the zoneout expectations.
        let e = RnnMasks::draw(&cfg, 7, 0, 5, 2, false, DType::F32, &dev).unwrap();
        assert!(e.input.iter().all(Option::is_none) && e.output.is_none());
        assert!(flat(&e.zoneout_c[2]).iter().all(|&v| v == 0.25));
        // The draw does not depend on how it is chunked: element i is word i of the stream.
        let big = bernoulli(
            0.3,
            (1.0, 0.0),
            5,
            2,
            Shape::from(3 * DRAW_CHUNK + 7),
            DType::F32,
            &dev,
        )
        .unwrap()
        .to_vec1::<f32>()
        .unwrap();
        let mut rng = seed::rng(5, 2);
        let threshold = threshold16(0.3);
        let mut serial = Vec::new();
        while serial.len() < big.len() {
            let word = rng.next_u32();
            for bits in [word & 0xFFFF, word >> 16] {
                serial.push(if bits < threshold { 1.0 } else { 0.0 });
            }
        }
        serial.truncate(big.len());
        assert_eq!(big, serial);
        let ones = serial.iter().filter(|&&v| v == 1.0).count() as f64 / serial.len() as f64;
        assert!((ones - 0.3).abs() < 0.01, "{ones}");
        // A wrong shape is named.
        let mut bad = a.clone();
        bad.recurrent[1] = Some(Tensor::zeros((2, 5), DType::F32, &dev).unwrap());
        let err = bad.check(&cfg, 5, 2, &x).unwrap_err().to_string();
        assert!(err.contains("masks.recurrent[1]"), "{err}");
        let mut short = a;
        short.weight_hh.pop();
        let err = short.check(&cfg, 5, 2, &x).unwrap_err().to_string();
        assert!(
            err.contains("masks.weight_hh has 3 entries, expected 4"),
            "{err}"
        );
    }
}
