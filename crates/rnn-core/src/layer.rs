//! `Rnn`: a stacked, optionally bidirectional recurrent layer with PyTorch's parameter names,
//! shapes and packed-sequence semantics.

use crate::cell::params::CellParams;
use crate::check::{check_lengths, check_same_dtype_device, check_shape};
use crate::config::{Mode, RnnConfig};
use crate::ops;
use crate::recurrence::{self, StepMasks};
use crate::regularize::{self, RnnMasks};
use crate::state::RnnState;
use crate::{dropout, seed};
use candle_core::{bail, Module, Result, Tensor, D};
use candle_nn::VarBuilder;
use serde::{Deserialize, Serialize};
use std::sync::atomic::{AtomicU64, Ordering};

/// Which implementation of the recurrence [`Rnn`] runs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Implementation {
    /// The fused CPU op where it applies (CPU tensors of f32 or f64), the composed ops elsewhere.
    #[default]
    Auto,
    /// The fused CPU op (one Candle `CustomOp` per layer-direction, hand-written BPTT backward);
    /// an error on other devices or dtypes.
    Fused,
    /// Plain Candle tensor ops step by step: runs on every device; the reference twin.
    Composed,
}

/// A multi-layer, optionally bidirectional RNN, LSTM or GRU, as `torch.nn.RNN/LSTM/GRU`.
///
/// Parameters are named as in PyTorch's `state_dict` (`weight_ih_l{k}`, `weight_hh_l{k}`,
/// `bias_ih_l{k}`, `bias_hh_l{k}`, `weight_hr_l{k}`, with `_reverse` for the backward direction), so
/// a PyTorch model saved with safetensors loads through `VarBuilder::from_mmaped_safetensors`.
///
/// ```
/// use candle_core::{DType, Device, Module, Tensor};
/// use candle_nn::VarMap;
/// use rnn_core::{init::seeded_var_builder, Mode, Rnn, RnnConfig};
///
/// let cfg = RnnConfig::new(Mode::Lstm, 8, 16).with_num_layers(2);
/// let varmap = VarMap::new();
/// let lstm = Rnn::new(&cfg, seeded_var_builder(&varmap, 0, DType::F32, &Device::Cpu))?;
/// let xs = Tensor::randn(0f32, 1.0, (4, 10, 8), &Device::Cpu)?; // (batch, seq_len, input)
/// let (ys, state) = lstm.forward_with_state(&xs, None)?; // PyTorch's `output, (h_n, c_n)`
/// assert_eq!(ys.dims(), &[4, 10, 16]);
/// assert_eq!(state.h.dims(), &[2, 4, 16]); // (layers * directions, batch, hidden)
/// // As a candle `Module`: the output from a zero state.
/// assert_eq!(lstm.forward(&xs)?.dims(), &[4, 10, 16]);
/// # Ok::<(), candle_core::Error>(())
/// ```
#[derive(Debug)]
pub struct Rnn {
    cfg: RnnConfig,
    /// One cell per layer-direction, index `layer * num_directions + direction`.
    cells: Vec<CellParams>,
    dropout_seed: u64,
    /// Counts training forwards with dropout, so each call draws fresh, reproducible masks.
    dropout_calls: AtomicU64,
    implementation: Implementation,
}

impl Clone for Rnn {
    fn clone(&self) -> Self {
        Self {
            cfg: self.cfg.clone(),
            cells: self.cells.clone(),
            dropout_seed: self.dropout_seed,
            dropout_calls: AtomicU64::new(self.dropout_calls.load(Ordering::Relaxed)),
            implementation: self.implementation,
        }
    }
}

/// The checked input: 3-D, in the layout the kernels see (`batch_first`; unbatched input becomes
/// a time-major batch of one).
struct Prepared {
    xs: Tensor,
    batch_first: bool,
    seq_len: usize,
    batch: usize,
    unbatched: bool,
}

impl Rnn {
    /// Builds the layer, loading every parameter from `vb` (or creating it with PyTorch's default
    /// init U(-1/sqrt(hidden), 1/sqrt(hidden)) when `vb` is backed by a `VarMap`).
    /// Fails on an invalid config and on a missing or misshapen tensor (the error names it).
    pub fn new(cfg: &RnnConfig, vb: VarBuilder) -> Result<Self> {
        cfg.validate()?;
        let mut cells = Vec::with_capacity(cfg.num_layers * cfg.num_directions());
        for layer in 0..cfg.num_layers {
            for direction in 0..cfg.num_directions() {
                let suffix = if direction == 0 {
                    format!("_l{layer}")
                } else {
                    format!("_l{layer}_reverse")
                };
                let mut cell = CellParams::load(
                    cfg.mode,
                    cfg.layer_input_size(layer),
                    cfg.hidden_size,
                    cfg.proj_size,
                    cfg.bias,
                    &suffix,
                    &vb,
                )?;
                if cfg.layer_norm {
                    cell = cell.with_layer_norm(&suffix, &vb)?;
                }
                cells.push(cell);
            }
        }
        Ok(Self {
            cfg: cfg.clone(),
            cells,
            dropout_seed: 0,
            dropout_calls: AtomicU64::new(0),
            implementation: Implementation::Auto,
        })
    }

    /// The same layer (sharing its parameters) running `implementation`.
    pub fn with_implementation(mut self, implementation: Implementation) -> Self {
        self.implementation = implementation;
        self
    }

    /// The same layer with its parameters cut from the autograd graph: for inference, where no
    /// gradient is wanted (the fused op then saves no activations). Shares the parameters' storage.
    pub fn detached(&self) -> Self {
        let mut out = self.clone();
        for cell in &mut out.cells {
            *cell = cell.detached();
        }
        out
    }

    /// The implementation this layer runs (see [`Implementation`]).
    pub fn implementation(&self) -> Implementation {
        self.implementation
    }

    /// The configuration.
    pub fn config(&self) -> &RnnConfig {
        &self.cfg
    }

    /// Seeds the inter-layer dropout masks (default seed 0) and restarts their sequence.
    pub fn set_dropout_seed(&self, seed: u64) -> Self {
        let mut out = self.clone();
        out.dropout_seed = seed;
        out.dropout_calls = AtomicU64::new(0);
        out
    }

    /// How many training forwards have drawn dropout masks (saved in checkpoints so a resumed run
    /// draws the same masks as an uninterrupted one).
    pub fn dropout_calls(&self) -> u64 {
        self.dropout_calls.load(Ordering::Relaxed)
    }

    /// Restores the dropout call counter (see [`Rnn::dropout_calls`]).
    pub fn set_dropout_calls(&self, calls: u64) {
        self.dropout_calls.store(calls, Ordering::Relaxed)
    }

    /// Every parameter with its PyTorch `state_dict` name, layer by layer, forward direction first.
    pub fn named_parameters(&self) -> Vec<(String, Tensor)> {
        let dirs = self.cfg.num_directions();
        let mut out = Vec::new();
        for (idx, cell) in self.cells.iter().enumerate() {
            let (layer, direction) = (idx / dirs, idx % dirs);
            let suffix = if direction == 0 { "" } else { "_reverse" };
            for (name, t) in cell.named() {
                out.push((format!("{name}_l{layer}{suffix}"), t.clone()));
            }
        }
        out
    }

    /// A zero state for `batch` sequences, with the layer's dtype and device.
    ///
    /// # Shapes
    /// `h: (num_layers * num_directions, batch, state_size)`, `c: (.., batch, hidden_size)` (LSTM).
    pub fn zero_state(&self, batch: usize) -> Result<RnnState> {
        let w = &self.cells[0].weight_ih;
        let ld = self.cfg.num_layers * self.cfg.num_directions();
        let h = Tensor::zeros((ld, batch, self.cfg.state_size()), w.dtype(), w.device())?;
        let c = if self.cfg.mode.has_cell_state() {
            Some(Tensor::zeros(
                (ld, batch, self.cfg.hidden_size),
                w.dtype(),
                w.device(),
            )?)
        } else {
            None
        };
        Ok(RnnState::new(h, c))
    }

    /// Eval-mode forward over full-length sequences; a zero initial state when `state` is `None`.
    ///
    /// # Shapes
    /// - `xs`: `(batch, seq_len, input_size)` if `batch_first`, else `(seq_len, batch, input_size)`;
    ///   or unbatched `(seq_len, input_size)`
    /// - `state`: see [`RnnState`]; `h (num_layers * num_directions, batch, state_size)`
    /// - returns the output `(batch, seq_len, num_directions * state_size)` (same layout as `xs`) and
    ///   the final state, shaped as `state`
    pub fn forward_with_state(
        &self,
        xs: &Tensor,
        state: Option<&RnnState>,
    ) -> Result<(Tensor, RnnState)> {
        self.forward_t(xs, state, None, false)
    }

    /// Forward with variable lengths and a training flag.
    ///
    /// `lengths[b]` is the number of valid steps of sequence `b` of a right-padded batch; PyTorch's
    /// packed-sequence semantics apply: outputs past a sequence's length are zero, its final state is
    /// taken at its last valid step, and the reverse direction starts at that step. Lengths may be
    /// in any order. `train` turns inter-layer dropout on.
    ///
    /// # Shapes
    /// As [`Rnn::forward_with_state`]; `lengths` has one entry per batch row (one entry for unbatched input).
    pub fn forward_t(
        &self,
        xs: &Tensor,
        state: Option<&RnnState>,
        lengths: Option<&[usize]>,
        train: bool,
    ) -> Result<(Tensor, RnnState)> {
        self.forward_checked(xs, state, lengths, train, None)
    }

    /// [`Rnn::forward_t`] with the caller's masks for the mask options (see [`RnnMasks`]) instead
    /// of masks drawn from the layer's seed: for tests against references that use the same
    /// masks, and for callers that share masks between layers. `train` still turns inter-layer
    /// `dropout` on; the mask rates of the config are not used (a `None` mask is off).
    ///
    /// # Shapes
    /// As [`Rnn::forward_t`]; the masks as documented on [`RnnMasks`] (zoneout masks time-major).
    pub fn forward_with_masks(
        &self,
        xs: &Tensor,
        state: Option<&RnnState>,
        lengths: Option<&[usize]>,
        train: bool,
        masks: &RnnMasks,
    ) -> Result<(Tensor, RnnState)> {
        self.forward_checked(xs, state, lengths, train, Some(masks))
    }

    /// The masks [`Rnn::forward_t`] uses for a forward over `seq_len` steps of `batch` sequences:
    /// in training drawn from the dropout seed on the next call of the counter (which this
    /// advances), in evaluation the zoneout expectations. `None` when no mask option applies.
    pub fn draw_masks(
        &self,
        seq_len: usize,
        batch: usize,
        train: bool,
    ) -> Result<Option<RnnMasks>> {
        let cfg = &self.cfg;
        let applies = if train {
            cfg.has_masks()
        } else {
            cfg.zoneout_h > 0.0 || cfg.zoneout_c > 0.0
        };
        if !applies {
            return Ok(None);
        }
        // One counter step per training forward; evaluation draws nothing random.
        let call = if train {
            self.dropout_calls.fetch_add(1, Ordering::Relaxed)
        } else {
            0
        };
        let w = &self.cells[0].weight_ih;
        RnnMasks::draw(
            cfg,
            self.dropout_seed,
            call,
            seq_len,
            batch,
            train,
            w.dtype(),
            w.device(),
        )
        .map(Some)
    }

    /// The shared body of [`Rnn::forward_t`] (`masks` = `None`: drawn) and
    /// [`Rnn::forward_with_masks`].
    fn forward_checked(
        &self,
        xs: &Tensor,
        state: Option<&RnnState>,
        lengths: Option<&[usize]>,
        train: bool,
        masks: Option<&RnnMasks>,
    ) -> Result<(Tensor, RnnState)> {
        let prepared = self.prepare_input(xs)?;
        let (batch, seq_len) = (prepared.batch, prepared.seq_len);
        let state = match state {
            Some(s) => Some(self.check_state(s, batch, prepared.unbatched, &prepared.xs)?),
            None => None,
        };
        if let Some(lengths) = lengths {
            check_lengths(lengths, batch, seq_len)?;
        }
        let drawn;
        let masks = match masks {
            Some(m) => {
                m.check(&self.cfg, seq_len, batch, &prepared.xs)?;
                Some(m).filter(|m| !m.is_empty())
            }
            None => {
                drawn = self.draw_masks(seq_len, batch, train)?;
                drawn.as_ref()
            }
        };
        let state_masks = masks.is_some_and(RnnMasks::has_state_masks);
        // Recurrent dropout and zoneout run inside the fused op on the CPU only (the CUDA kernels
        // have no masks yet): elsewhere the composed twin runs them.
        // The fused layer-normalised op has no recurrent dropout or zoneout: the composed twin
        // runs those together.
        let supported = if self.cfg.layer_norm {
            ops::layer_norm_recurrence_supported(&prepared.xs) && !state_masks
        } else {
            ops::recurrence_supported(&prepared.xs)
                && (!state_masks || prepared.xs.device().is_cpu())
        };
        let fused = match self.implementation {
            Implementation::Auto => supported,
            Implementation::Composed => false,
            Implementation::Fused => {
                if self.cfg.layer_norm && !supported {
                    bail!(
                        "Rnn: the fused layer-normalised recurrence runs in f32 or f64 on the CPU, without recurrent dropout or zoneout, got {:?} on {:?}; use Implementation::Auto or Composed",
                        prepared.xs.dtype(),
                        prepared.xs.device().location()
                    );
                }
                if !supported {
                    bail!(
                        "Rnn: the fused implementation runs in f32 or f64 on the CPU (and on CUDA in a build with the `cuda` feature, without recurrent dropout or zoneout), got {:?} on {:?}; use Implementation::Auto or Composed",
                        prepared.xs.dtype(),
                        prepared.xs.device().location()
                    );
                }
                true
            }
        };
        let (ys, final_state) = if fused {
            self.run_fused(&prepared, state.as_ref(), lengths, train, masks)?
        } else {
            self.run_composed(&prepared, state.as_ref(), lengths, train, masks)?
        };
        if prepared.unbatched {
            let state = RnnState::new(
                final_state.h.squeeze(1)?,
                final_state.c.map(|c| c.squeeze(1)).transpose()?,
            );
            return Ok((ys.squeeze(1)?, state));
        }
        Ok((ys, final_state))
    }

    /// One time step through every layer (unidirectional layers only), e.g. for generation.
    ///
    /// # Shapes
    /// - `x_t`: `(batch, input_size)`; `state` as in [`Rnn::forward_with_state`] (`None` = zeros)
    /// - returns `y_t (batch, state_size)` and the new state
    pub fn step(&self, x_t: &Tensor, state: Option<&RnnState>) -> Result<(Tensor, RnnState)> {
        if self.cfg.bidirectional {
            bail!("Rnn::step: a bidirectional layer needs the whole sequence; use forward");
        }
        if x_t.rank() != 2 {
            bail!(
                "Rnn::step: x_t must be (batch, input_size), got shape {:?}",
                x_t.dims()
            );
        }
        let time_axis = if self.cfg.batch_first { 1 } else { 0 };
        let (ys, state) = self.forward_with_state(&x_t.unsqueeze(time_axis)?, state)?;
        Ok((ys.squeeze(time_axis)?, state))
    }

    /// Checks `xs` and lifts unbatched input to a time-major batch of one.
    fn prepare_input(&self, xs: &Tensor) -> Result<Prepared> {
        let weight = &self.cells[0].weight_ih;
        let (xs3, unbatched) = match xs.rank() {
            3 => (xs.clone(), false),
            2 => (xs.unsqueeze(1)?, true),
            r => {
                let layout = if self.cfg.batch_first {
                    "(batch, seq_len, input_size)"
                } else {
                    "(seq_len, batch, input_size)"
                };
                bail!(
                    "Rnn::forward: xs must be {layout} or unbatched (seq_len, input_size), got rank {r} shape {:?}",
                    xs.dims()
                )
            }
        };
        let batch_first = self.cfg.batch_first && !unbatched;
        let (d0, d1, features) = xs3.dims3()?;
        let (seq_len, batch) = if batch_first { (d1, d0) } else { (d0, d1) };
        if features != self.cfg.input_size {
            bail!(
                "Rnn::forward: xs has {features} features per step, expected input_size = {} (xs shape {:?})",
                self.cfg.input_size,
                xs.dims()
            );
        }
        if seq_len == 0 || batch == 0 {
            bail!(
                "Rnn::forward: xs must have at least one step and one sequence, got shape {:?}",
                xs.dims()
            );
        }
        check_same_dtype_device("Rnn::forward xs", xs, "the weights", weight)?;
        Ok(Prepared {
            xs: xs3,
            batch_first,
            seq_len,
            batch,
            unbatched,
        })
    }

    /// Checks a given initial state and lifts unbatched states to batch 1.
    fn check_state(
        &self,
        state: &RnnState,
        batch: usize,
        unbatched: bool,
        x0: &Tensor,
    ) -> Result<RnnState> {
        let ld = self.cfg.num_layers * self.cfg.num_directions();
        let lift = |t: &Tensor| -> Result<Tensor> {
            if unbatched {
                if t.rank() != 2 {
                    bail!("for unbatched input the state is (layers * directions, feature), got shape {:?}", t.dims());
                }
                t.unsqueeze(1)
            } else {
                Ok(t.clone())
            }
        };
        let h = lift(&state.h).map_err(|e| e.context("state.h"))?;
        check_shape(
            "Rnn::forward state.h",
            &h,
            &[ld, batch, self.cfg.state_size()],
        )?;
        check_same_dtype_device("Rnn::forward state.h", &h, "xs", x0)?;
        let c = match (&state.c, self.cfg.mode) {
            (Some(c), Mode::Lstm) => {
                let c = lift(c).map_err(|e| e.context("state.c"))?;
                check_shape(
                    "Rnn::forward state.c",
                    &c,
                    &[ld, batch, self.cfg.hidden_size],
                )?;
                check_same_dtype_device("Rnn::forward state.c", &c, "xs", x0)?;
                Some(c)
            }
            (None, Mode::Lstm) => bail!("Rnn::forward: an LSTM state needs c, got None"),
            (Some(_), mode) => bail!("Rnn::forward: state.c is only for LSTM, got Some for {mode}"),
            (None, _) => None,
        };
        Ok(RnnState::new(h, c))
    }

    /// The initial state of layer-direction `idx`: the given one or zeros.
    fn initial_state(
        &self,
        state: Option<&RnnState>,
        idx: usize,
        batch: usize,
        like: &Tensor,
    ) -> Result<RnnState> {
        match state {
            Some(s) => s.layer(idx),
            None => recurrence::zero_cell_state(&self.cells[idx], batch, like),
        }
    }

    /// Every layer and direction with the fused op, on whole sequences in the caller's layout.
    fn run_fused(
        &self,
        prepared: &Prepared,
        state: Option<&RnnState>,
        lengths: Option<&[usize]>,
        train: bool,
        masks: Option<&RnnMasks>,
    ) -> Result<(Tensor, RnnState)> {
        let dirs = self.cfg.num_directions();
        // With a graph the kernels run time-major: each step's rows of the activations they save
        // are then one contiguous block (batch-first rows of one step lie a whole sequence apart,
        // which costs cache and TLB misses), for the price of transposing the input and the
        // output. With nothing to differentiate nothing is saved, so they run in the caller's
        // layout, reading and writing each step's rows in place (no transposes).
        let tracked = prepared.xs.track_op()
            || state.is_some_and(|s| s.h.track_op() || s.c.as_ref().is_some_and(Tensor::track_op))
            || self.cells.iter().any(CellParams::tracked);
        let transpose = prepared.batch_first && tracked;
        let mut input = if transpose {
            prepared.xs.transpose(0, 1)?.contiguous()?
        } else {
            prepared.xs.clone()
        };
        let layout_batch_first = prepared.batch_first && !transpose;
        let mut finals = Vec::with_capacity(self.cells.len());
        for layer in 0..self.cfg.num_layers {
            if let Some(m) = masks.and_then(|m| m.input[layer].as_ref()) {
                input = ops::sequence_mask::mask_sequence(&input, m, layout_batch_first)?;
            }
            let mut outputs = Vec::with_capacity(dirs);
            let mut inits = Vec::with_capacity(dirs);
            let mut cells = Vec::with_capacity(dirs);
            let mut regs = Vec::with_capacity(dirs);
            for direction in 0..dirs {
                let idx = layer * dirs + direction;
                inits.push(self.initial_state(state, idx, prepared.batch, &input)?);
                cells.push(regularize::drop_weights(
                    &self.cells[idx],
                    masks.and_then(|m| m.weight_hh[idx].as_ref()),
                )?);
                regs.push(masks.map(|m| m.state(idx)).unwrap_or_default());
            }
            let both = if dirs == 2 {
                ops::fused_directions(
                    [&cells[0], &cells[1]],
                    &input,
                    layout_batch_first,
                    [&inits[0], &inits[1]],
                    lengths,
                    [&regs[0], &regs[1]],
                )?
            } else {
                None
            };
            if let Some(both) = both {
                for (ys, fin) in both {
                    outputs.push(ys);
                    finals.push(fin);
                }
            } else {
                for direction in 0..dirs {
                    let (ys, fin) = ops::fused_direction(
                        &cells[direction],
                        &input,
                        layout_batch_first,
                        &inits[direction],
                        lengths,
                        direction == 1,
                        &regs[direction],
                    )?;
                    outputs.push(ys);
                    finals.push(fin);
                }
            }
            let mut layer_out = if dirs == 1 {
                outputs.remove(0)
            } else {
                Tensor::cat(&outputs, 2)?
            };
            if train && self.cfg.dropout > 0.0 && layer + 1 < self.cfg.num_layers {
                // Drawn time-major, as the composed twin draws it.
                let mut mask =
                    self.dropout_mask(layer, prepared.seq_len, prepared.batch, &layer_out)?;
                if prepared.batch_first && !transpose {
                    mask = mask.transpose(0, 1)?;
                }
                layer_out = (layer_out * mask)?;
            }
            input = layer_out;
        }
        if let Some(m) = masks.and_then(|m| m.output.as_ref()) {
            input = ops::sequence_mask::mask_sequence(&input, m, layout_batch_first)?;
        }
        // Contiguous, so downstream ops (reductions, heads) do not walk a strided view.
        let ys = if transpose {
            input.transpose(0, 1)?.contiguous()?
        } else {
            input
        };
        Ok((ys, RnnState::stack(&finals)?))
    }

    /// Every layer and direction with composed Candle ops, step by step.
    fn run_composed(
        &self,
        prepared: &Prepared,
        state: Option<&RnnState>,
        lengths: Option<&[usize]>,
        train: bool,
        masks: Option<&RnnMasks>,
    ) -> Result<(Tensor, RnnState)> {
        let xs_tm = if prepared.batch_first {
            prepared.xs.transpose(0, 1)?.contiguous()?
        } else {
            prepared.xs.clone()
        };
        let mut inputs = (0..prepared.seq_len)
            .map(|t| xs_tm.get(t))
            .collect::<Result<Vec<_>>>()?;
        let reg = masks;
        let masks = match lengths {
            Some(lengths) => StepMasks::new(lengths, prepared.seq_len, xs_tm.device())?,
            None => StepMasks::full(prepared.seq_len),
        };
        let dirs = self.cfg.num_directions();
        let mut finals = Vec::with_capacity(self.cells.len());
        for layer in 0..self.cfg.num_layers {
            if let Some(m) = reg.and_then(|m| m.input[layer].as_ref()) {
                inputs = inputs.iter().map(|x| x * m).collect::<Result<Vec<_>>>()?;
            }
            let mut outputs: Vec<Vec<Tensor>> = Vec::with_capacity(dirs);
            for direction in 0..dirs {
                let idx = layer * dirs + direction;
                let init = self.initial_state(state, idx, prepared.batch, &inputs[0])?;
                let cell = regularize::drop_weights(
                    &self.cells[idx],
                    reg.and_then(|m| m.weight_hh[idx].as_ref()),
                )?;
                let (outs, fin) = recurrence::run_direction(
                    &cell,
                    &inputs,
                    &init,
                    &masks,
                    direction == 1,
                    &reg.map(|m| m.state(idx)).unwrap_or_default(),
                )?;
                outputs.push(outs);
                finals.push(fin);
            }
            let mut layer_out = if dirs == 1 {
                outputs.pop().unwrap_or_default()
            } else {
                let (fwd, bwd) = (&outputs[0], &outputs[1]);
                fwd.iter()
                    .zip(bwd)
                    .map(|(f, b)| Tensor::cat(&[f, b], 1))
                    .collect::<Result<Vec<_>>>()?
            };
            if train && self.cfg.dropout > 0.0 && layer + 1 < self.cfg.num_layers {
                let mask =
                    self.dropout_mask(layer, prepared.seq_len, prepared.batch, &layer_out[0])?;
                layer_out = layer_out
                    .iter()
                    .enumerate()
                    .map(|(t, x)| x * mask.get(t)?)
                    .collect::<Result<Vec<_>>>()?;
            }
            inputs = layer_out;
        }
        if let Some(m) = reg.and_then(|m| m.output.as_ref()) {
            inputs = inputs.iter().map(|y| y * m).collect::<Result<Vec<_>>>()?;
        }
        let time_axis = if prepared.batch_first { 1 } else { 0 };
        Ok((
            Tensor::stack(&inputs, time_axis)?,
            RnnState::stack(&finals)?,
        ))
    }

    /// An inverted-dropout mask `(seq_len, batch, features)` (values 0 or 1/(1-p)) from a seeded
    /// generator, time-major whatever the layout, so both implementations draw the same masks.
    fn dropout_mask(
        &self,
        layer: usize,
        seq_len: usize,
        batch: usize,
        like: &Tensor,
    ) -> Result<Tensor> {
        let features = like.dim(D::Minus1)?;
        let call = self.dropout_calls.fetch_add(1, Ordering::Relaxed);
        dropout::mask(
            self.cfg.dropout,
            seed::layer_seed(self.dropout_seed, layer),
            call,
            (seq_len, batch, features),
            like.dtype(),
            like.device(),
        )
    }
}

/// `rnn.forward(&xs)`: the output of [`Rnn::forward_with_state`] from a zero state (eval mode).
///
/// Through candle's blanket `impl<M: Module> ModuleT for M`, `Rnn` is also a `ModuleT`, whose
/// `train` flag that blanket impl ignores: inter-layer dropout in training mode needs
/// [`Rnn::forward_t`] (candle 0.11 allows no train-aware `ModuleT` beside `Module`).
impl Module for Rnn {
    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        self.forward_with_state(xs, None).map(|(ys, _)| ys)
    }
}
