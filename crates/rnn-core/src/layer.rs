//! `Rnn`: a stacked, optionally bidirectional recurrent layer with PyTorch's parameter names,
//! shapes and packed-sequence semantics.

use crate::cell::params::CellParams;
use crate::check::{check_lengths, check_same_dtype_device, check_shape};
use crate::recurrence::{self, StepMasks};
use crate::{Mode, RnnConfig, RnnState};
use candle_core::{bail, Module, Result, Tensor};
use candle_nn::VarBuilder;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::sync::atomic::{AtomicU64, Ordering};

/// A multi-layer, optionally bidirectional RNN, LSTM or GRU, as `torch.nn.RNN/LSTM/GRU`.
///
/// Parameters are named as in PyTorch's `state_dict` (`weight_ih_l{k}`, `weight_hh_l{k}`,
/// `bias_ih_l{k}`, `bias_hh_l{k}`, `weight_hr_l{k}`, with `_reverse` for the backward direction), so
/// a PyTorch model saved with safetensors loads through `VarBuilder::from_mmaped_safetensors`.
///
/// ```
/// use candle_core::{DType, Device, Tensor};
/// use candle_nn::VarMap;
/// use rnn_core::{init::seeded_var_builder, Mode, Rnn, RnnConfig};
///
/// let cfg = RnnConfig::new(Mode::Lstm, 8, 16).with_num_layers(2);
/// let varmap = VarMap::new();
/// let lstm = Rnn::new(&cfg, seeded_var_builder(&varmap, 0, DType::F32, &Device::Cpu))?;
/// let xs = Tensor::randn(0f32, 1.0, (4, 10, 8), &Device::Cpu)?; // (batch, seq_len, input)
/// let (ys, state) = lstm.forward(&xs, None)?;
/// assert_eq!(ys.dims(), &[4, 10, 16]);
/// assert_eq!(state.h.dims(), &[2, 4, 16]); // (layers * directions, batch, hidden)
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
}

impl Clone for Rnn {
    fn clone(&self) -> Self {
        Self {
            cfg: self.cfg.clone(),
            cells: self.cells.clone(),
            dropout_seed: self.dropout_seed,
            dropout_calls: AtomicU64::new(self.dropout_calls.load(Ordering::Relaxed)),
        }
    }
}

/// The input as a time-major list of steps plus what is needed to shape the output back.
struct Prepared {
    steps: Vec<Tensor>,
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
                cells.push(CellParams::load(
                    cfg.mode,
                    cfg.layer_input_size(layer),
                    cfg.hidden_size,
                    cfg.proj_size,
                    cfg.bias,
                    &suffix,
                    &vb,
                )?);
            }
        }
        Ok(Self {
            cfg: cfg.clone(),
            cells,
            dropout_seed: 0,
            dropout_calls: AtomicU64::new(0),
        })
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
    pub fn forward(&self, xs: &Tensor, state: Option<&RnnState>) -> Result<(Tensor, RnnState)> {
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
    /// As [`Rnn::forward`]; `lengths` has one entry per batch row (one entry for unbatched input).
    pub fn forward_t(
        &self,
        xs: &Tensor,
        state: Option<&RnnState>,
        lengths: Option<&[usize]>,
        train: bool,
    ) -> Result<(Tensor, RnnState)> {
        let prepared = self.prepare_input(xs)?;
        let (batch, seq_len) = (prepared.batch, prepared.steps.len());
        let state = match state {
            Some(s) => Some(self.check_state(s, batch, prepared.unbatched, &prepared.steps[0])?),
            None => None,
        };
        let masks = match lengths {
            Some(lengths) => {
                check_lengths(lengths, batch, seq_len)?;
                StepMasks::new(lengths, seq_len, prepared.steps[0].device())?
            }
            None => StepMasks::full(seq_len),
        };
        let (steps, final_state) =
            self.run_layers(prepared.steps, state.as_ref(), &masks, train)?;
        self.finish_output(steps, final_state, prepared.unbatched)
    }

    /// One time step through every layer (unidirectional layers only), e.g. for generation.
    ///
    /// # Shapes
    /// - `x_t`: `(batch, input_size)`; `state` as in [`Rnn::forward`] (`None` = zeros)
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
        let (ys, state) = self.forward(&x_t.unsqueeze(time_axis)?, state)?;
        Ok((ys.squeeze(time_axis)?, state))
    }

    /// Checks `xs` and cuts it into time-major steps `(batch, feature)`.
    fn prepare_input(&self, xs: &Tensor) -> Result<Prepared> {
        let weight = &self.cells[0].weight_ih;
        let (xs_tm, unbatched) = match xs.rank() {
            3 if self.cfg.batch_first => (xs.transpose(0, 1)?.contiguous()?, false),
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
        let (seq_len, batch, features) = xs_tm.dims3()?;
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
        let steps = (0..seq_len)
            .map(|t| xs_tm.get(t))
            .collect::<Result<Vec<_>>>()?;
        Ok(Prepared {
            steps,
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

    /// Runs every layer and direction over time-major steps; returns the last layer's output steps
    /// `(batch, output_size)` and the final state `(layers * directions, batch, ..)`.
    fn run_layers(
        &self,
        mut inputs: Vec<Tensor>,
        state: Option<&RnnState>,
        masks: &StepMasks,
        train: bool,
    ) -> Result<(Vec<Tensor>, RnnState)> {
        let dirs = self.cfg.num_directions();
        let batch = inputs[0].dim(0)?;
        let mut finals = Vec::with_capacity(self.cells.len());
        for layer in 0..self.cfg.num_layers {
            let mut outputs: Vec<Vec<Tensor>> = Vec::with_capacity(dirs);
            for direction in 0..dirs {
                let idx = layer * dirs + direction;
                let cell = &self.cells[idx];
                let init = match state {
                    Some(s) => s.layer(idx)?,
                    None => recurrence::zero_cell_state(cell, batch, &inputs[0])?,
                };
                let (outs, fin) =
                    recurrence::run_direction(cell, &inputs, &init, masks, direction == 1)?;
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
                layer_out = self.dropout(layer_out, layer)?;
            }
            inputs = layer_out;
        }
        Ok((inputs, RnnState::stack(&finals)?))
    }

    /// Inverted dropout on every step of a layer's output, with masks from a seeded generator.
    fn dropout(&self, steps: Vec<Tensor>, layer: usize) -> Result<Vec<Tensor>> {
        let p = self.cfg.dropout;
        let call = self.dropout_calls.fetch_add(1, Ordering::Relaxed);
        let mut rng = ChaCha8Rng::seed_from_u64(self.dropout_seed ^ (layer as u64).rotate_left(32));
        rng.set_stream(call);
        let (batch, features) = steps[0].dims2()?;
        let keep = 1.0 / (1.0 - p);
        let values: Vec<f32> = (0..steps.len() * batch * features)
            .map(|_| {
                if rng.random::<f64>() < p {
                    0.0
                } else {
                    keep as f32
                }
            })
            .collect();
        let masks = Tensor::from_vec(values, (steps.len(), batch, features), steps[0].device())?
            .to_dtype(steps[0].dtype())?;
        steps
            .iter()
            .enumerate()
            .map(|(t, x)| x * masks.get(t)?)
            .collect()
    }

    /// Stacks output steps in the caller's layout and drops the batch axis for unbatched input.
    fn finish_output(
        &self,
        steps: Vec<Tensor>,
        state: RnnState,
        unbatched: bool,
    ) -> Result<(Tensor, RnnState)> {
        if unbatched {
            let ys = Tensor::stack(&steps, 0)?.squeeze(1)?;
            let state = RnnState::new(
                state.h.squeeze(1)?,
                state.c.map(|c| c.squeeze(1)).transpose()?,
            );
            return Ok((ys, state));
        }
        let time_axis = if self.cfg.batch_first { 1 } else { 0 };
        Ok((Tensor::stack(&steps, time_axis)?, state))
    }
}

impl Module for Rnn {
    /// The output of [`Rnn::forward`] with a zero initial state.
    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        Rnn::forward(self, xs, None).map(|(ys, _)| ys)
    }
}
