//! SGD with momentum, as `torch.optim.SGD` with `dampening=0`.

use std::collections::{BTreeMap, HashSet};

use candle_core::backprop::GradStore;
use candle_core::{Tensor, Var};
use serde::{Deserialize, Serialize};

use super::inplace::{par_zip, Elem, InPlace, Update2};
use super::{
    check_grads, check_no_extra_tensors, check_non_negative, check_params, current_value,
    exact_f64, master_copies, restore_masters, restore_param_steps, restore_tensor, state_dtype,
    write_param, OptimizerConfig, OptimizerMeta, OptimizerState, StatefulOptimizer, MASTER_PREFIX,
    MOMENTUM_PREFIX,
};
use crate::{Error, Result};

const WHO: &str = "Sgd";

/// SGD's hyper-parameters; the defaults are PyTorch's (plain SGD with lr 1e-3).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SgdConfig {
    /// Learning rate (default 1e-3).
    #[serde(with = "exact_f64", default = "default_lr")]
    pub lr: f64,
    /// Momentum factor; 0 (the default) keeps no buffers.
    #[serde(with = "exact_f64", default)]
    pub momentum: f64,
    /// L2 penalty added to the gradient: `g + weight_decay * p` (default 0).
    #[serde(with = "exact_f64", default)]
    pub weight_decay: f64,
    /// Nesterov momentum (needs `momentum > 0`; default false).
    #[serde(default)]
    pub nesterov: bool,
}

fn default_lr() -> f64 {
    1e-3
}

impl Default for SgdConfig {
    fn default() -> Self {
        Self {
            lr: default_lr(),
            momentum: 0.0,
            weight_decay: 0.0,
            nesterov: false,
        }
    }
}

impl SgdConfig {
    /// Plain SGD with learning rate `lr`.
    pub fn with_lr(lr: f64) -> Self {
        Self {
            lr,
            ..Self::default()
        }
    }

    /// Checks the ranges PyTorch checks: `lr`, `momentum`, `weight_decay` finite and `>= 0`, and
    /// Nesterov only with momentum.
    pub fn validate(&self) -> Result<()> {
        check_non_negative(WHO, "lr", self.lr)?;
        check_non_negative(WHO, "momentum", self.momentum)?;
        check_non_negative(WHO, "weight_decay", self.weight_decay)?;
        if self.nesterov && self.momentum <= 0.0 {
            return Err(Error::Invalid(format!(
                "{WHO}: nesterov needs momentum > 0, got momentum {}",
                self.momentum
            )));
        }
        Ok(())
    }
}

/// SGD with exactly `torch.optim.SGD`'s update (`dampening=0`, `maximize=False`). For each
/// parameter `p` with gradient `g`:
///
/// ```text
/// d = g + weight_decay * p
/// if momentum != 0:
///     buf = d                     on the parameter's first update
///     buf = momentum * buf + d    afterwards
///     d   = d + momentum * buf    if nesterov, else buf
/// p += -lr * d
/// ```
///
/// Each step reads no value back to the host. Without momentum, an f32/f64 parameter on the CPU
/// is updated in one pass over its own storage (as PyTorch's in-place `add_`), with the same
/// roundings as the composed ops, which every other case runs. For bf16/f16 parameters the
/// momentum buffer and an f32 master copy of the parameter are kept in f32: the update runs in
/// f32 and the parameter receives the rounded result.
#[derive(Debug)]
pub struct TorchSgd {
    params: Vec<(String, Var)>,
    /// `None` until the parameter's first update, as PyTorch's lazily created buffer.
    momentum_buf: Vec<Option<Tensor>>,
    /// f32 master copies of bf16/f16 parameters (see [`state_dtype`]).
    master: Vec<Option<Tensor>>,
    param_steps: Vec<u64>,
    step: u64,
    config: SgdConfig,
    /// Whether updates may run in place (see [`Self::set_in_place`]).
    in_place: bool,
    /// Parameter updates done in place so far.
    in_place_updates: u64,
}

impl TorchSgd {
    /// SGD over the named parameters. Names must be unique; they key the saved state.
    pub fn new(params: Vec<(String, Var)>, config: SgdConfig) -> Result<Self> {
        config.validate()?;
        check_params(WHO, &params)?;
        let master = master_copies(&params)?;
        Ok(Self {
            master,
            momentum_buf: vec![None; params.len()],
            param_steps: vec![0; params.len()],
            params,
            step: 0,
            config,
            in_place: true,
            in_place_updates: 0,
        })
    }

    /// The hyper-parameters.
    pub fn config(&self) -> &SgdConfig {
        &self.config
    }

    /// Whether CPU updates of plain SGD (no momentum) run in place, in one parallel pass over
    /// the parameter's storage (the default, as PyTorch's `foreach`/`fused` implementations), or
    /// always as composed Candle tensor ops (the reference path the in-place one is tested
    /// against; the two agree bitwise).
    pub fn set_in_place(&mut self, in_place: bool) {
        self.in_place = in_place;
    }

    /// Number of calls to [`StatefulOptimizer::step`] so far (restored by `load_state`).
    pub fn steps(&self) -> u64 {
        self.step
    }
}

/// `p += -lr * (g + weight_decay * p)` in the storage of `var`, with the composed path's
/// arithmetic (the same roundings in the same order, so the two agree bitwise). Returns false,
/// changing nothing, where it does not apply: a master copy, a device other than the CPU, a
/// dtype other than f32/f64, non-contiguous layouts, or a gradient sharing the parameter's
/// storage (Candle refuses the aliased in-place op before it writes anything).
fn update_in_place(
    var: &Var,
    master: &Option<Tensor>,
    grad: &Tensor,
    lr: f64,
    weight_decay: f64,
) -> Result<bool> {
    let p = var.as_tensor();
    if master.is_some()
        || !p.device().is_cpu()
        || grad.dtype() != p.dtype()
        || grad.dims() != p.dims()
        || !p.is_contiguous()
        || !grad.is_contiguous()
    {
        return Ok(false);
    }
    let op = SgdStep { lr, weight_decay };
    Ok(p.inplace_op2(grad, &InPlace(op)).is_ok())
}

/// The in-place update of [`update_in_place`].
struct SgdStep {
    lr: f64,
    weight_decay: f64,
}

impl Update2 for SgdStep {
    const NAME: &'static str = "sgd-step";

    fn run<T: Elem>(&self, p: &mut [T], g: &[T]) {
        let (lr, weight_decay, zero) = (T::of(-self.lr), T::of(self.weight_decay), T::of(0.0));
        let decay = self.weight_decay != 0.0;
        par_zip(p, g, |p, g| {
            // The composed path: d = g + affine(p, wd, 0); p = p + affine(d, -lr, 0).
            // The `+ zero`s keep the signs of zeros equal to Candle's affine.
            let d = if decay {
                g + (*p * weight_decay + zero)
            } else {
                g
            };
            *p = *p + (d * lr + zero);
        });
    }
}

impl StatefulOptimizer for TorchSgd {
    fn step(&mut self, grads: &GradStore) -> Result<()> {
        // Re-checked here because set_lr cannot return an error.
        self.config.validate()?;
        check_grads(WHO, &self.params, grads)?;
        let SgdConfig {
            lr,
            momentum,
            weight_decay,
            nesterov,
        } = self.config;
        for (i, (_, var)) in self.params.iter().enumerate() {
            let Some(grad) = grads.get(var) else {
                continue;
            };
            if var.elem_count() == 0 {
                // Nothing to update, and Var::set refuses the empty tensor Candle's ops return
                // unchanged (it would share the parameter's storage).
                self.param_steps[i] += 1;
                continue;
            }
            if momentum == 0.0 && self.in_place {
                // One pass over the parameter's own storage, as PyTorch's in-place `add_`.
                if update_in_place(var, &self.master[i], grad, lr, weight_decay)? {
                    self.in_place_updates += 1;
                    self.param_steps[i] += 1;
                    continue;
                }
            }
            // Detached so that no momentum buffer keeps an autograd graph alive across steps.
            let p = current_value(var, &self.master[i]);
            let mut d = grad.detach().to_dtype(state_dtype(var.dtype()))?;
            if weight_decay != 0.0 {
                d = (d + p.affine(weight_decay, 0.0)?)?;
            }
            if momentum != 0.0 {
                let buf = match &self.momentum_buf[i] {
                    // A copy, as PyTorch's `grad.detach().clone()`: the buffer must not share
                    // storage with a gradient the caller may still modify.
                    None => d.copy()?,
                    Some(buf) => (buf.affine(momentum, 0.0)? + &d)?,
                };
                d = if nesterov {
                    (&d + buf.affine(momentum, 0.0)?)?
                } else {
                    buf.clone()
                };
                self.momentum_buf[i] = Some(buf);
            }
            let p = (p + d.affine(-lr, 0.0)?)?;
            write_param(var, &mut self.master[i], p)?;
            self.param_steps[i] += 1;
        }
        self.step += 1;
        Ok(())
    }

    fn lr(&self) -> f64 {
        self.config.lr
    }

    fn set_lr(&mut self, lr: f64) {
        self.config.lr = lr;
    }

    fn state(&self) -> Result<OptimizerState> {
        let mut tensors = BTreeMap::new();
        let mut param_steps = BTreeMap::new();
        for (i, (name, _)) in self.params.iter().enumerate() {
            if let Some(buf) = &self.momentum_buf[i] {
                tensors.insert(format!("{MOMENTUM_PREFIX}{name}"), buf.clone());
            }
            if let Some(master) = &self.master[i] {
                tensors.insert(format!("{MASTER_PREFIX}{name}"), master.clone());
            }
            param_steps.insert(name.clone(), self.param_steps[i]);
        }
        Ok(OptimizerState {
            meta: OptimizerMeta {
                config: OptimizerConfig::Sgd(self.config.clone()),
                step: self.step,
                param_steps,
            },
            tensors,
        })
    }

    fn load_state(&mut self, state: &OptimizerState) -> Result<()> {
        let OptimizerConfig::Sgd(config) = &state.meta.config else {
            return Err(Error::Invalid(format!(
                "{WHO}: the optimizer state is for {:?}, expected \"sgd\"",
                state.meta.config.kind()
            )));
        };
        config.validate()?;
        let param_steps = restore_param_steps(WHO, &state.meta, &self.params)?;
        let mut expected = HashSet::new();
        let mut bufs = Vec::with_capacity(self.params.len());
        for ((name, var), steps) in self.params.iter().zip(&param_steps) {
            // A buffer exists exactly when momentum is on and the parameter was updated.
            if config.momentum != 0.0 && *steps > 0 {
                let key = format!("{MOMENTUM_PREFIX}{name}");
                bufs.push(Some(restore_tensor(WHO, state, &key, name, var)?));
                expected.insert(key);
            } else {
                bufs.push(None);
            }
        }
        let master = restore_masters(WHO, state, &self.params, &mut expected)?;
        check_no_extra_tensors(WHO, state, &expected)?;
        self.master = master;
        self.config = config.clone();
        self.step = state.meta.step;
        self.param_steps = param_steps;
        self.momentum_buf = bufs;
        Ok(())
    }

    fn params(&self) -> &[(String, Var)] {
        &self.params
    }
}

#[cfg(test)]
mod tests {
    use super::super::testutil::{assert_close, bits, Problem, Twin};
    use super::*;
    use candle_core::{DType, Device};

    fn momentum(nesterov: bool) -> SgdConfig {
        SgdConfig {
            lr: 0.05,
            momentum: 0.9,
            weight_decay: 0.01,
            nesterov,
        }
    }

    // Python (with `run` from optim/testutil.rs), each for float64 then float32:
    // momentum:  fn = lambda p: torch.optim.SGD(p, lr=0.05, momentum=0.9, weight_decay=0.01, foreach=False)
    // nesterov:  fn = lambda p: torch.optim.SGD(p, lr=0.05, momentum=0.9, weight_decay=0.01, nesterov=True, foreach=False)
    // plain:     fn = lambda p: torch.optim.SGD(p, lr=0.05, foreach=False)
    // print(run(fn, torch.float64)); print(run(fn, torch.float32))
    #[allow(clippy::type_complexity)]
    const TORCH: [(&str, [f64; 6], [f64; 3], [f64; 6], [f64; 3]); 3] = [
        (
            "momentum",
            [
                0.32616913799109404,
                0.3750576873389282,
                0.1014757199174199,
                -0.3360568356029978,
                0.009428921063957568,
                0.43963391695401755,
            ],
            [0.2601087516249952, 0.6398947497868056, -0.22013962131154113],
            [
                0.32616913318634033,
                0.3750576376914978,
                0.10147570818662643,
                -0.33605673909187317,
                0.009428870864212513,
                0.43963396549224854,
            ],
            [
                0.26010873913764954,
                0.6398948431015015,
                -0.22013960778713226,
            ],
        ),
        (
            "nesterov",
            [
                0.3231055566651346,
                0.09408156583718913,
                0.2191993321966589,
                -0.5569808268554247,
                0.1458590471625521,
                0.6336123999209268,
            ],
            [
                0.21833873309377072,
                0.5969842588116012,
                -0.09530295912967808,
            ],
            [
                0.3231055438518524,
                0.09408152848482132,
                0.2191992849111557,
                -0.5569807887077332,
                0.1458590179681778,
                0.6336123943328857,
            ],
            [0.2183387279510498, 0.596984326839447, -0.09530288726091385],
        ),
        (
            "plain",
            [
                0.3574560188264847,
                0.24862387900352476,
                0.12816559229755403,
                -0.3988227488708496,
                0.22592940351963042,
                0.48555356687545775,
            ],
            [
                0.06864852845382692,
                0.34445864236831664,
                0.05480000576400754,
            ],
            [
                0.3574560284614563,
                0.24862386286258698,
                0.1281655877828598,
                -0.39882275462150574,
                0.225929394364357,
                0.4855535626411438,
            ],
            [
                0.06864852458238602,
                0.3444586396217346,
                0.054800018668174744,
            ],
        ),
    ];

    fn config_of(name: &str) -> SgdConfig {
        match name {
            "momentum" => momentum(false),
            "nesterov" => momentum(true),
            _ => SgdConfig::with_lr(0.05),
        }
    }

    #[test]
    fn matches_pytorch_sgd_including_a_skipped_parameter() {
        for (name, w64, b64, w32, b32) in TORCH {
            for (dtype, tol, w, b) in [(DType::F64, 1e-12, w64, b64), (DType::F32, 1e-6, w32, b32)]
            {
                let pb = Problem::new(dtype);
                let mut opt = TorchSgd::new(pb.params(), config_of(name)).unwrap();
                pb.run(&mut opt, 0..5);
                let (got_w, got_b) = pb.values();
                assert_close(&got_w, &w, tol, &format!("{name} w {dtype:?}"));
                assert_close(&got_b, &b, tol, &format!("{name} b {dtype:?}"));
            }
        }
    }

    #[test]
    fn resume_is_bit_identical() {
        for name in ["momentum", "nesterov", "plain"] {
            let cfg = config_of(name);
            let straight = Problem::new(DType::F32);
            let mut opt = TorchSgd::new(straight.params(), cfg.clone()).unwrap();
            straight.run(&mut opt, 0..6);

            let first = Problem::new(DType::F32);
            let mut opt = TorchSgd::new(first.params(), cfg.clone()).unwrap();
            first.run(&mut opt, 0..3);
            let state = opt.state().unwrap();
            let has_bufs = cfg.momentum != 0.0;
            assert_eq!(state.tensors.contains_key("momentum.w"), has_bufs, "{name}");
            let json = state.to_json().unwrap();
            let loaded = OptimizerState::from_json(&json, state.to_tensors()).unwrap();
            let second = first.restored();
            let mut opt = TorchSgd::new(second.params(), SgdConfig::default()).unwrap();
            opt.load_state(&loaded).unwrap();
            second.run(&mut opt, 3..6);
            assert_eq!(bits(&second.w), bits(&straight.w), "{name}");
            assert_eq!(bits(&second.b), bits(&straight.b), "{name}");
        }
    }

    #[test]
    fn buffers_are_checked_on_load() {
        let pb = Problem::new(DType::F64);
        let mut opt = TorchSgd::new(pb.params(), momentum(false)).unwrap();
        // Step 2 alone: w gets a buffer, b (no gradient) does not.
        pb.run(&mut opt, 2..3);
        let good = opt.state().unwrap();
        assert_eq!(good.tensors.keys().collect::<Vec<_>>(), ["momentum.w"]);
        assert_eq!(good.meta.param_steps["b"], 0);
        let mut fresh = TorchSgd::new(pb.params(), SgdConfig::default()).unwrap();

        let mut s = good.clone();
        s.tensors.insert(
            "momentum.b".into(),
            Tensor::zeros(3, DType::F64, &Device::Cpu).unwrap(),
        );
        let e = fresh.load_state(&s).unwrap_err().to_string();
        assert!(e.contains("\"momentum.b\""), "{e}");

        let mut s = good.clone();
        s.tensors.insert(
            "momentum.w".into(),
            Tensor::zeros((3, 2), DType::F64, &Device::Cpu).unwrap(),
        );
        let e = fresh.load_state(&s).unwrap_err().to_string();
        assert!(
            e.contains("\"momentum.w\" has shape [3, 2], expected parameter \"w\"'s shape [2, 3]"),
            "{e}"
        );

        let mut s = good.clone();
        s.meta.param_steps.insert("b".into(), 1);
        let e = fresh.load_state(&s).unwrap_err().to_string();
        assert!(
            e.contains("no tensor \"momentum.b\" for parameter \"b\""),
            "{e}"
        );

        fresh.load_state(&good).unwrap();
        assert_eq!(fresh.config(), &momentum(false));
        // f32 tensors load into f64 parameters converted, as PyTorch casts state on load.
        let mut s = good.clone();
        let w32 = good.tensors["momentum.w"].to_dtype(DType::F32).unwrap();
        s.tensors.insert("momentum.w".into(), w32);
        fresh.load_state(&s).unwrap();
        assert_eq!(
            fresh.state().unwrap().tensors["momentum.w"].dtype(),
            DType::F64
        );
    }

    /// The in-place update (plain SGD, with and without weight decay) equals the composed one
    /// bitwise, over several parallel chunks and on zeros of both signs.
    #[test]
    fn in_place_update_equals_the_composed_twin() {
        for dtype in [DType::F32, DType::F64] {
            for weight_decay in [0.0, 0.01] {
                let twin = Twin::new(dtype);
                let cfg = SgdConfig {
                    lr: 0.3,
                    weight_decay,
                    ..SgdConfig::default()
                };
                let [pa, pb] = twin.params();
                let mut composed = TorchSgd::new(pa, cfg.clone()).unwrap();
                composed.set_in_place(false);
                let mut in_place = TorchSgd::new(pb, cfg).unwrap();
                twin.run(&mut composed, &mut in_place, 3);
                assert_eq!(
                    (composed.in_place_updates, in_place.in_place_updates),
                    (0, 3)
                );
                twin.assert_equal_and_moved(&format!("{dtype:?} weight decay {weight_decay}"));
            }
        }
    }

    #[test]
    fn config_is_checked() {
        let e = SgdConfig {
            nesterov: true,
            ..Default::default()
        }
        .validate()
        .unwrap_err();
        assert!(
            e.to_string()
                .contains("nesterov needs momentum > 0, got momentum 0"),
            "{e}"
        );
        let e = SgdConfig {
            momentum: -0.5,
            ..Default::default()
        }
        .validate()
        .unwrap_err();
        assert!(
            e.to_string()
                .contains("momentum must be finite and >= 0, got -0.5"),
            "{e}"
        );
        let c: SgdConfig =
            serde_json::from_str(r#"{"lr": 0.1, "momentum": 0.9, "nesterov": true}"#).unwrap();
        assert_eq!(
            c,
            SgdConfig {
                lr: 0.1,
                momentum: 0.9,
                weight_decay: 0.0,
                nesterov: true
            }
        );
    }
}
