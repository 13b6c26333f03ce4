//! Timing of recurrent layers: ours (fused or composed) and candle-nn's LSTM/GRU, in one process,
//! so ratios need no other program. Used by `rnn bench` and the criterion benches.
//!
//! A train iteration is forward + mean-square loss + backward; an infer iteration is the forward
//! and reading the output's sum (as `torch_rnn_bench.py` does).

use anyhow::{bail, Context, Result};
use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap, RNN};

use rnn_core::init::seeded_var_builder;
use rnn_core::{Implementation, Mode, Rnn, RnnConfig};
use serde::Serialize;
use std::time::Instant;

/// Which implementation a benchmark times.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum BenchImpl {
    /// This project's fused CPU op.
    Fused,
    /// This project's composed Candle ops.
    Composed,
    /// candle-nn's own `LSTM` / `GRU`, stacked and reversed by hand for layers and directions.
    CandleNn,
}

impl std::str::FromStr for BenchImpl {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "fused" => Ok(Self::Fused),
            "composed" => Ok(Self::Composed),
            "candle-nn" | "candle_nn" => Ok(Self::CandleNn),
            other => bail!("unknown --impl '{other}': expected fused, composed or candle-nn"),
        }
    }
}

/// The mask options a benchmark turns on (issue 29; `rnn_core::RnnConfig`): each rate 0 = off.
/// They act in training only, except zoneout (its expectation in inference).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct BenchMasks {
    /// Zoneout rate of `h` and, for an LSTM, of `c`.
    pub zoneout: f64,
    /// Variational dropout on `h` where it enters `W_hh`.
    pub recurrent_dropout: f64,
    /// DropConnect on `W_hh`.
    pub weight_drop: f64,
    /// Variational dropout on each layer's input and the last layer's output.
    pub variational_dropout: f64,
}

impl BenchMasks {
    /// Whether every rate is 0.
    pub fn is_off(&self) -> bool {
        *self == Self::default()
    }

    /// `cfg` with these options.
    pub fn apply(&self, cfg: RnnConfig) -> RnnConfig {
        let zoneout_c = if cfg.mode == Mode::Lstm {
            self.zoneout
        } else {
            0.0
        };
        cfg.with_zoneout_h(self.zoneout)
            .with_zoneout_c(zoneout_c)
            .with_recurrent_dropout(self.recurrent_dropout)
            .with_weight_drop(self.weight_drop)
            .with_input_dropout(self.variational_dropout)
            .with_output_dropout(self.variational_dropout)
    }
}

/// What to time.
#[derive(Debug, Clone, Serialize)]
pub struct BenchSpec {
    /// Cell kind.
    pub cell: Mode,
    /// Sequences per batch.
    pub batch: usize,
    /// Steps per sequence.
    pub seq_len: usize,
    /// Input features.
    pub input: usize,
    /// Hidden size.
    pub hidden: usize,
    /// Stacked layers.
    pub layers: usize,
    /// Two directions per layer.
    pub bidirectional: bool,
    /// `true`: forward + loss + backward; `false`: forward only.
    pub train: bool,
    /// Implementation timed.
    pub implementation: BenchImpl,
    /// Timed iterations (after the warm-up: at least 2 iterations and [`WARMUP_MIN_S`]).
    pub iters: usize,
    /// Seconds the timed iterations take at least: more than `iters` of them where these take
    /// less (at most [`TIMED_MAX_ITERS`]); 0: exactly `iters`.
    #[serde(skip_serializing_if = "is_zero")]
    pub min_time_s: f64,
    /// Element type.
    #[serde(skip)]
    pub dtype: DType,
    /// Mask options (ours only; all off by default).
    #[serde(skip_serializing_if = "BenchMasks::is_off")]
    pub masks: BenchMasks,
    /// Layer-normalised LSTM/GRU (`RnnConfig::layer_norm`; fused or composed only).
    pub layer_norm: bool,
}

/// Result of one benchmark, in milliseconds per iteration.
#[derive(Debug, Clone, Serialize)]
pub struct BenchResult {
    /// `rnn-fused`, `rnn-composed` or `candle-nn`.
    #[serde(rename = "impl")]
    pub implementation: String,
    /// Rayon threads (the CPU threads GEMMs may use).
    pub threads: usize,
    /// `lstm`, `gru`, `rnn-tanh`, `rnn-relu`.
    pub cell: String,
    /// `train` or `infer`.
    pub mode: String,
    /// Device name.
    pub device: String,
    /// Batch size.
    pub batch: usize,
    /// Sequence length.
    pub seq_len: usize,
    /// Input size.
    pub input: usize,
    /// Hidden size.
    pub hidden: usize,
    /// Layers.
    pub layers: usize,
    /// Bidirectional.
    pub bidirectional: bool,
    /// Layer-normalised cells.
    pub layer_norm: bool,
    /// Timed iterations.
    pub iters: usize,
    /// Median ms per iteration.
    pub median_ms: f64,
    /// Fastest iteration, ms.
    pub min_ms: f64,
    /// The matrix kernels the run's products used (`avx512`, `avx2`, `portable`, several
    /// joined by `+`), or `none` when no product went through them (composed, candle-nn,
    /// another device): see [`rnn_core::kernels`].
    pub kernel: String,
    /// Each shape class the run used, with its kernel.
    pub kernels: Vec<KernelUse>,
    /// Mask options timed (left out of the JSON when all are off).
    #[serde(skip_serializing_if = "BenchMasks::is_off")]
    pub masks: BenchMasks,
}

/// One shape class of matrix products a benchmark used, and its kernel.
#[derive(Debug, Clone, Serialize)]
pub struct KernelUse {
    /// E.g. `rows 9-32, k 129-256, n 513-1024`.
    pub class: String,
    /// `avx512`, `avx2` or `portable`.
    pub kernel: String,
}

/// The classes whose use count grew between `before` and now, with their kernels.
pub fn kernels_used_since(before: &[rnn_core::kernels::KernelChoice]) -> Vec<KernelUse> {
    rnn_core::kernels::choices()
        .into_iter()
        .filter(|c| {
            let old = before
                .iter()
                .find(|b| b.class == c.class)
                .map_or(0, |b| b.uses);
            c.uses > old
        })
        .map(|c| KernelUse {
            class: c.class,
            kernel: c.kernel.name().into(),
        })
        .collect()
}

/// The distinct kernels of `uses`, joined by `+` (`none` for no use).
pub fn kernel_summary(uses: &[KernelUse]) -> String {
    let mut names: Vec<&str> = uses.iter().map(|u| u.kernel.as_str()).collect();
    names.sort();
    names.dedup();
    if names.is_empty() {
        "none".into()
    } else {
        names.join("+")
    }
}

/// A model's forward pass over a batch.
type ForwardFn = Box<dyn Fn(&Tensor) -> Result<Tensor>>;

/// Seconds of warm-up before the timed iterations, on both sides of a comparison (PyTorch's
/// script gets the same): small workloads on a 2-core VM ran up to 1.8x slower over about their
/// first hundred iterations (or after a pause) than later, so a count of two warm-ups timed that
/// transient instead of the steady state (benches/README.md).
pub const WARMUP_MIN_S: f64 = 0.25;

/// The most warm-up iterations, whatever their time.
pub const WARMUP_MAX_ITERS: usize = 10_000;

/// The most timed iterations that [`BenchSpec::min_time_s`] adds, whatever their time.
pub const TIMED_MAX_ITERS: usize = 100_000;

fn is_zero(x: &f64) -> bool {
    *x == 0.0
}

/// A prepared workload: model, input, and one iteration to run repeatedly.
pub struct Workload {
    run: Box<dyn FnMut() -> Result<()>>,
    spec: BenchSpec,
    device: Device,
}

impl Workload {
    /// Builds the model and the input of `spec` on `device` (seeded, so runs are comparable).
    pub fn new(spec: &BenchSpec, device: &Device) -> Result<Self> {
        if spec.batch == 0
            || spec.seq_len == 0
            || spec.input == 0
            || spec.hidden == 0
            || spec.layers == 0
        {
            bail!("bench: batch, seq-len, input-size, hidden-size and layers must all be > 0");
        }
        if spec.implementation == BenchImpl::Fused && !matches!(spec.dtype, DType::F32 | DType::F64)
        {
            bail!(
                "--impl fused runs f32 or f64 (the fused CPU op), got --dtype {:?}; use --impl composed (or candle-nn) for bf16/f16",
                spec.dtype
            );
        }
        if spec.implementation == BenchImpl::CandleNn && !spec.masks.is_off() {
            bail!("bench: the mask options (--zoneout, --recurrent-dropout, --weight-drop, --variational-dropout) are this project's; use --impl fused or composed");
        }
        if spec.layer_norm && spec.implementation == BenchImpl::CandleNn {
            bail!("--layer-norm times this project's layer-normalised cells: use --impl fused or composed, not candle-nn");
        }
        let xs = Tensor::randn(0f32, 1.0, (spec.batch, spec.seq_len, spec.input), device)?
            .to_dtype(spec.dtype)?;
        let varmap = VarMap::new();
        let vb = seeded_var_builder(&varmap, 0, spec.dtype, device);
        let train = spec.train;
        let forward: ForwardFn = match spec.implementation {
            BenchImpl::Fused | BenchImpl::Composed => {
                let imp = if spec.implementation == BenchImpl::Fused {
                    Implementation::Fused
                } else {
                    Implementation::Composed
                };
                let cfg = spec.masks.apply(
                    RnnConfig::new(spec.cell, spec.input, spec.hidden)
                        .with_num_layers(spec.layers)
                        .with_bidirectional(spec.bidirectional)
                        .with_layer_norm(spec.layer_norm),
                );
                cfg.validate().context("bench")?;
                let rnn = Rnn::new(&cfg, vb)?.with_implementation(imp);
                // Inference keeps no autograd graph, as PyTorch's `inference_mode`.
                let rnn = if train { rnn } else { rnn.detached() };
                // In training the mask options draw their masks (none drawn when all are off).
                Box::new(move |xs| Ok(rnn.forward_t(xs, None, None, train)?.0))
            }
            BenchImpl::CandleNn => candle_nn_forward(spec, vb)?,
        };
        let run = move || -> Result<()> {
            let ys = forward(&xs)?;
            if train {
                let loss = ys.sqr()?.mean_all()?;
                let grads = loss.backward()?;
                drop(grads);
            } else {
                ys.sum_all()?.to_dtype(DType::F64)?.to_scalar::<f64>()?;
            }
            Ok(())
        };
        Ok(Self {
            run: Box::new(run),
            spec: spec.clone(),
            device: device.clone(),
        })
    }

    /// One iteration.
    pub fn iterate(&mut self) -> Result<()> {
        (self.run)()
    }

    /// Warm-up iterations (at least two, and at least [`WARMUP_MIN_S`] of them), then
    /// `spec.iters` timed ones, more while they took less than `spec.min_time_s` in all.
    pub fn measure(&mut self) -> Result<BenchResult> {
        let before = rnn_core::kernels::choices();
        let warm = Instant::now();
        let mut n = 0;
        while n < 2 || (warm.elapsed().as_secs_f64() < WARMUP_MIN_S && n < WARMUP_MAX_ITERS) {
            self.iterate()?;
            self.device.synchronize()?;
            n += 1;
        }
        let mut times = Vec::with_capacity(self.spec.iters);
        let timed = Instant::now();
        while times.len() < self.spec.iters.max(1)
            || (timed.elapsed().as_secs_f64() < self.spec.min_time_s
                && times.len() < TIMED_MAX_ITERS)
        {
            let t0 = Instant::now();
            self.iterate()?;
            self.device.synchronize()?;
            times.push(t0.elapsed().as_secs_f64() * 1e3);
        }
        times.sort_by(f64::total_cmp);
        let n = times.len();
        let median = if n % 2 == 1 {
            times[n / 2]
        } else {
            (times[n / 2 - 1] + times[n / 2]) / 2.0
        };
        let kernels = kernels_used_since(&before);
        let s = &self.spec;
        Ok(BenchResult {
            implementation: match s.implementation {
                BenchImpl::Fused => "rnn-fused".into(),
                BenchImpl::Composed => "rnn-composed".into(),
                BenchImpl::CandleNn => "candle-nn".into(),
            },
            threads: rayon::current_num_threads(),
            cell: s.cell.as_str().into(),
            mode: if s.train { "train" } else { "infer" }.into(),
            device: rnn_core::device::name(&self.device),
            batch: s.batch,
            seq_len: s.seq_len,
            input: s.input,
            hidden: s.hidden,
            layers: s.layers,
            bidirectional: s.bidirectional,
            layer_norm: s.layer_norm,
            iters: n,
            median_ms: median,
            min_ms: times[0],
            kernel: kernel_summary(&kernels),
            kernels,
            masks: s.masks,
        })
    }
}

/// candle-nn's LSTM or GRU (batch-first), one module per layer-direction, with PyTorch's names.
fn candle_nn_forward(spec: &BenchSpec, vb: VarBuilder<'static>) -> Result<ForwardFn> {
    use candle_nn::rnn::Direction;
    enum Layer {
        Lstm(candle_nn::LSTM),
        Gru(candle_nn::GRU),
    }
    let dirs = if spec.bidirectional { 2 } else { 1 };
    let mut layers = Vec::new();
    for layer in 0..spec.layers {
        let input = if layer == 0 {
            spec.input
        } else {
            dirs * spec.hidden
        };
        for d in 0..dirs {
            let direction = if d == 0 {
                Direction::Forward
            } else {
                Direction::Backward
            };
            let l = match spec.cell {
                Mode::Lstm => Layer::Lstm(candle_nn::lstm(
                    input,
                    spec.hidden,
                    candle_nn::LSTMConfig {
                        layer_idx: layer,
                        direction,
                        ..Default::default()
                    },
                    vb.clone(),
                )?),
                Mode::Gru => Layer::Gru(candle_nn::gru(
                    input,
                    spec.hidden,
                    candle_nn::GRUConfig::default(),
                    // candle-nn's GRU always names its tensors `*_l0`: one prefix per layer-direction.
                    vb.pp(format!("layer{layer}_dir{d}")),
                )?),
                other => bail!("candle-nn has no {other} layer (only lstm and gru)"),
            };
            layers.push(l);
        }
    }
    let seq_len = spec.seq_len;
    Ok(Box::new(move |xs: &Tensor| -> Result<Tensor> {
        let rev: Vec<u32> = (0..seq_len as u32).rev().collect();
        let rev = Tensor::new(rev.as_slice(), xs.device())?;
        let mut input = xs.clone();
        for chunk in layers.chunks(dirs) {
            let mut outs = Vec::with_capacity(dirs);
            for (d, l) in chunk.iter().enumerate() {
                let x = if d == 0 {
                    input.clone()
                } else {
                    input.index_select(&rev, 1)?
                };
                // Stacked by hand: candle-nn's GRU `states_to_tensor` flattens the time axis.
                let hs: Vec<Tensor> = match l {
                    Layer::Lstm(m) => m.seq(&x)?.into_iter().map(|s| s.h).collect(),
                    Layer::Gru(m) => m.seq(&x)?.into_iter().map(|s| s.h).collect(),
                };
                let y = Tensor::stack(&hs, 1)?;
                outs.push(if d == 0 { y } else { y.index_select(&rev, 1)? });
            }
            input = Tensor::cat(&outs, 2).context("concatenating directions")?;
        }
        Ok(input)
    }))
}
